//! How the CLI shows things to people. `--json` output does not come
//! through here: it is the serde form of the domain types.

use std::borrow::Cow;
use std::fmt::Write as _;

use rollcall_proto::expiry;
use rollcall_proto::model::{
    ContainerHealth, FleetSummary, Node, NodeContainer, NodeDetail, Report,
};
use rollcall_proto::text::for_terminal;
use rollcall_proto::timestamp::Timestamp;

/// "3s", "5m", "2h", "4d": how long ago, for people.
pub fn ago(now: Timestamp, then: Timestamp) -> String {
    human_secs(now.since(then).as_secs())
}

/// "3s", "5m", "2h", "4d".
pub fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The widest a table cell is shown, in characters after escaping: a longer
/// value is cut to this width, its last character an ellipsis (`…`). Wide
/// enough for a kolla image reference; `nodes show` and `--json` show the
/// whole value.
pub const MAX_CELL_CHARS: usize = 80;

/// A value as a table cell shows it: escaped (see [`for_terminal`]), so that
/// it stays on its row, and at most [`MAX_CELL_CHARS`] characters.
pub fn cell(value: &str) -> Cow<'_, str> {
    let shown = for_terminal(value);
    match shown.char_indices().nth(MAX_CELL_CHARS) {
        None => shown,
        Some(_) => {
            let mut cut: String = shown.chars().take(MAX_CELL_CHARS - 1).collect();
            cut.push('…');
            Cow::Owned(cut)
        }
    }
}

/// Left-aligned columns separated by two spaces. Every cell is escaped and
/// cut to [`MAX_CELL_CHARS`], so no value can break a row or widen a column
/// beyond reason.
pub fn table(rows: &[Vec<String>]) -> String {
    layout(rows, true)
}

/// A table whose last column is shown whole (escaped, on its row): the
/// `Key:  value` lines of a detail view, where nothing follows the value.
fn detail_table(rows: &[Vec<String>]) -> String {
    layout(rows, false)
}

fn layout(rows: &[Vec<String>], bound_last: bool) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let cells: Vec<Vec<(Cow<'_, str>, usize)>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, value)| {
                    let shown = if bound_last || i + 1 < columns {
                        cell(value)
                    } else {
                        for_terminal(value)
                    };
                    let width = shown.chars().count();
                    (shown, width)
                })
                .collect()
        })
        .collect();
    let mut widths = vec![0; columns];
    for row in &cells {
        for (w, (_, width)) in widths.iter_mut().zip(row) {
            *w = (*w).max(*width);
        }
    }
    let mut out = String::new();
    for row in &cells {
        let start = out.len();
        for (i, ((shown, width), w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(shown);
            // Padded by hand: a `{:<w$}` width past u16::MAX panics, and
            // the last column needs no padding at all.
            if i + 1 < row.len() {
                out.extend(std::iter::repeat_n(' ', w - width));
            }
        }
        let end = out[start..].trim_end().len();
        out.truncate(start + end);
        out.push('\n');
    }
    out
}

fn header(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| (*c).to_owned()).collect()
}

pub fn render_table(nodes: &[Node], now: Timestamp) -> String {
    let mut rows = vec![header(&[
        "NAME",
        "ROLE",
        "STATE",
        "LAST SEEN",
        "REBOOT",
        "CONTAINERS",
        "UPDATES",
        "CERT EXPIRES",
        "OS",
        "KERNEL",
    ])];
    for n in nodes {
        rows.push(vec![
            n.name.clone(),
            n.role.to_string(),
            if n.online {
                "online".into()
            } else {
                "offline".into()
            },
            format!("{} ago", ago(now, n.last_seen)),
            if n.reboot_required {
                "required".into()
            } else {
                "-".into()
            },
            match n.containers_unhealthy {
                0 => n.containers_total.to_string(),
                bad => format!("{} ({bad} unhealthy)", n.containers_total),
            },
            n.pending_updates.to_string(),
            n.cert_not_after
                .map_or_else(|| "-".to_owned(), |at| expiry::relative(at, now)),
            n.os_pretty_name.clone(),
            n.kernel.clone(),
        ]);
    }
    let online = nodes.iter().filter(|n| n.online).count();
    format!(
        "{}{} nodes, {} online, {} offline\n",
        table(&rows),
        nodes.len(),
        online,
        nodes.len() - online
    )
}

fn health(h: ContainerHealth) -> String {
    match h {
        ContainerHealth::None => "-".into(),
        other => other.to_string(),
    }
}

pub fn render_containers(containers: &[NodeContainer], now: Timestamp, with_node: bool) -> String {
    let mut rows = vec![header(&[
        "NODE", "NAME", "STATE", "HEALTH", "RESTARTS", "SINCE", "IMAGE",
    ])];
    for nc in containers {
        let c = &nc.container;
        let since = match (c.state, c.started_at, c.finished_at) {
            (rollcall_proto::model::ContainerState::Running, Some(t), _) => ago(now, t),
            (_, _, Some(t)) => format!("{} (exit {})", ago(now, t), c.exit_code),
            _ => "-".into(),
        };
        rows.push(vec![
            nc.node.clone(),
            c.name.clone(),
            c.state.to_string(),
            health(c.health),
            c.restart_count.to_string(),
            since,
            c.image.clone(),
        ]);
    }
    if !with_node {
        for r in &mut rows {
            r.remove(0);
        }
    }
    table(&rows)
}

pub fn render_detail(d: &NodeDetail, now: Timestamp) -> String {
    let n = &d.node;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut kv = |k: &str, v: String| rows.push(vec![format!("{k}:"), v]);
    kv("Node", n.name.clone());
    kv("Role", n.role.to_string());
    kv(
        "State",
        if n.online {
            "online".into()
        } else {
            format!("offline ({})", n.offline_reason)
        },
    );
    kv(
        "Labels",
        n.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    kv("First seen", n.first_seen.to_string());
    kv(
        "Last seen",
        format!("{} ({} ago)", n.last_seen, ago(now, n.last_seen)),
    );
    kv("Agent", n.agent_version.clone());
    kv(
        "Cert",
        n.cert_not_after.map_or_else(
            || "expiry unknown (not seen since the server began recording it)".to_owned(),
            |at| format!("expires {at} ({})", expiry::relative(at, now)),
        ),
    );
    let Some(r) = &d.report else {
        kv("Report", "none yet".into());
        return detail_table(&rows);
    };
    kv(
        "Report",
        format!(
            "#{} collected {} ({} ago)",
            r.seq,
            r.collected_at,
            ago(now, r.collected_at)
        ),
    );
    if let Some(h) = &r.host {
        kv("Hostname", h.hostname.clone());
        kv("OS", h.os_pretty_name.clone());
        kv("Kernel", format!("{} ({})", h.kernel, h.arch));
        kv("Boot", format!("{} (id {})", h.boot_time, h.boot_id));
    }
    if let Some(m) = &r.metrics {
        kv("Uptime", human_secs(m.uptime_secs));
        let cpus = r.host.as_ref().map_or(0, |h| h.cpu_count);
        kv(
            "CPU",
            format!(
                "{cpus} CPUs, {:.1}% used, load {:.2} {:.2} {:.2}",
                m.cpu_usage_percent, m.load1, m.load5, m.load15
            ),
        );
        kv(
            "Memory",
            format!(
                "{} used of {}, {} available",
                bytes(m.memory_used_bytes),
                bytes(m.memory_total_bytes),
                bytes(m.memory_available_bytes)
            ),
        );
        kv(
            "Swap",
            format!(
                "{} used of {}",
                bytes(m.swap_used_bytes),
                bytes(m.swap_total_bytes)
            ),
        );
    }
    if let Some(reboot) = &r.reboot {
        let mut text = if reboot.required {
            "required".to_owned()
        } else {
            "not required".to_owned()
        };
        for reason in &reboot.reasons {
            let _ = write!(text, "; {}: {}", reason.source, reason.detail);
            if !reason.packages.is_empty() {
                let _ = write!(text, " ({})", reason.packages.join(", "));
            }
        }
        for e in &reboot.errors {
            let _ = write!(text, "; check failed: {e}");
        }
        kv("Reboot", text);
    }
    if let Some(u) = &r.updates {
        let text = if !u.checked {
            if u.last_error.is_empty() {
                "not checked yet".to_owned()
            } else {
                format!("check failed: {}", u.last_error)
            }
        } else {
            let mut t = format!(
                "{} pending ({} security) via {}",
                u.count, u.security_count, u.manager
            );
            if let Some(at) = u.last_check {
                let _ = write!(t, ", checked {} ago", ago(now, at));
            }
            if !u.last_error.is_empty() {
                let _ = write!(t, "; last check failed: {}", u.last_error);
            }
            t
        };
        kv("Updates", text);
    }
    let mut out = detail_table(&rows);
    if let Some(disks) = &r.disks {
        out.push_str("\nFilesystems:\n");
        let mut rows = vec![header(&[
            "MOUNT", "DEVICE", "TYPE", "SIZE", "USED", "AVAIL", "USE%", "INODES", "RO",
        ])];
        for fs in &disks.filesystems {
            let inodes = if fs.inodes_total == 0 {
                "-".into()
            } else {
                format!(
                    "{:.0}%",
                    fs.inodes_used as f64 * 100.0 / fs.inodes_total as f64
                )
            };
            rows.push(vec![
                fs.mount_point.clone(),
                fs.device.clone(),
                fs.fs_type.clone(),
                bytes(fs.total_bytes),
                bytes(fs.used_bytes),
                bytes(fs.available_bytes),
                format!("{:.0}%", fs.used_percent()),
                inodes,
                if fs.read_only {
                    "ro".into()
                } else {
                    "-".into()
                },
            ]);
        }
        out.push_str(&indent(&table(&rows)));
        if !disks.error.is_empty() {
            let _ = writeln!(out, "  (error: {})", for_terminal(&disks.error));
        }
    }
    out.push_str(&render_node_containers(&d.node.name, r, now));
    out
}

fn render_node_containers(node: &str, r: &Report, now: Timestamp) -> String {
    let Some(section) = &r.containers else {
        return String::new();
    };
    let mut out = format!(
        "\nContainers ({}):\n",
        if section.engine.is_empty() {
            "engine".into()
        } else {
            for_terminal(&section.engine)
        }
    );
    if !section.available {
        let _ = writeln!(
            out,
            "  engine unavailable: {}",
            for_terminal(&section.error)
        );
        return out;
    }
    let list: Vec<NodeContainer> = section
        .containers
        .iter()
        .map(|c| NodeContainer {
            node: node.to_owned(),
            container: c.clone(),
        })
        .collect();
    out.push_str(&indent(&render_containers(&list, now, false)));
    for c in section
        .containers
        .iter()
        .filter(|c| c.health == ContainerHealth::Unhealthy)
    {
        let _ = writeln!(
            out,
            "  {} unhealthy ({} failed checks): {}",
            for_terminal(&c.name),
            c.failing_streak,
            for_terminal(c.last_health_output.trim())
        );
    }
    out
}

/// The agent certificates shown on the `Certificates:` line of `fleet
/// status`, nearest first; the rest are counted.
const CERTS_SHOWN: usize = 5;

/// `Certificates: 3 expire within 14 days (1 expired): cmp07 EXPIRED 1d ago, ctl01 in 2d, …`
fn certs_line(s: &FleetSummary, now: Timestamp) -> String {
    let days = s.cert_expiry_within_days;
    if days == 0 {
        return String::new(); // a server from before certificate expiry was recorded
    }
    let total = (s.certs_expiring_total as usize).max(s.certs_expiring.len());
    if total == 0 {
        return format!("Certificates: none expire within {days} days\n");
    }
    let verb = if total == 1 { "expires" } else { "expire" };
    let expired = match s.certs_expired_total {
        0 => String::new(),
        n => format!(" ({n} expired)"),
    };
    let shown: Vec<String> = s
        .certs_expiring
        .iter()
        .take(CERTS_SHOWN)
        .map(|c| format!("{} {}", cell(&c.node), expiry::relative(c.not_after, now)))
        .collect();
    let more = match total - shown.len() {
        0 => String::new(),
        n => format!(", and {n} more (nodes list --sort cert-expiry)"),
    };
    format!(
        "Certificates: {total} {verb} within {days} days{expired}: {}{more}\n",
        shown.join(", ")
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

pub fn render_summary(s: &FleetSummary, now: Timestamp) -> String {
    let mut out = String::new();
    if !s.store_failing.is_empty() {
        let _ = writeln!(
            out,
            "SERVER:      {} (campaigns held)",
            cell(&s.store_failing)
        );
    }
    let _ = writeln!(
        out,
        "Nodes:       {} total, {} online, {} offline",
        s.nodes_total, s.nodes_online, s.nodes_offline
    );
    // The server cuts every list to `list_limit`; say so where it did.
    let list = |v: &[String], total: u32| {
        let total = total.max(u32::try_from(v.len()).unwrap_or(u32::MAX));
        let names = v
            .iter()
            .map(|name| cell(name))
            .collect::<Vec<_>>()
            .join(", ");
        if v.is_empty() {
            "none".to_owned()
        } else if total as usize > v.len() {
            format!("{names} (first {} of {total})", v.len())
        } else {
            names
        }
    };
    let _ = writeln!(
        out,
        "Offline:     {}",
        list(&s.offline_nodes, s.nodes_offline)
    );
    let _ = writeln!(
        out,
        "Reboot:      {}",
        list(&s.reboot_required_nodes, s.reboot_required_total)
    );
    let _ = writeln!(
        out,
        "Engine down: {}",
        list(&s.engine_unavailable_nodes, s.engine_unavailable_total)
    );
    let _ = writeln!(
        out,
        "Updates:     {} pending, {} security",
        s.pending_updates, s.pending_security_updates
    );
    let count = |v: usize, total: u32| total.max(u32::try_from(v).unwrap_or(u32::MAX));
    let unhealthy = count(s.unhealthy_containers.len(), s.unhealthy_containers_total);
    let down = count(s.stopped_containers.len(), s.stopped_containers_total);
    let _ = writeln!(
        out,
        "Containers:  {} total, {unhealthy} unhealthy, {down} down",
        s.containers_total,
    );
    if !s.unhealthy_containers.is_empty() || !s.stopped_containers.is_empty() {
        let mut attention = s.unhealthy_containers.clone();
        attention.extend(
            s.stopped_containers
                .iter()
                .filter(|c| c.container.health != ContainerHealth::Unhealthy)
                .cloned(),
        );
        out.push_str(&indent(&render_containers(&attention, now, true)));
        let shown = s.unhealthy_containers.len() + s.stopped_containers.len();
        if (unhealthy + down) as usize > shown {
            let _ = writeln!(
                out,
                "  (the first {} of each list; `containers list --health unhealthy` or `--state exited` shows all)",
                s.list_limit
            );
        }
    }
    out.push_str(&certs_line(s, now));
    let full = count(s.full_filesystems.len(), s.full_filesystems_total);
    let _ = writeln!(
        out,
        "Filesystems above {}%: {full}",
        s.fs_usage_threshold_percent,
    );
    if !s.full_filesystems.is_empty() {
        let mut rows = vec![header(&["NODE", "MOUNT", "USE%", "AVAIL"])];
        for f in &s.full_filesystems {
            rows.push(vec![
                f.node.clone(),
                f.mount_point.clone(),
                format!("{:.1}%", f.used_percent),
                bytes(f.available_bytes),
            ]);
        }
        out.push_str(&indent(&table(&rows)));
        if full as usize > s.full_filesystems.len() {
            let _ = writeln!(out, "  (the first {})", s.full_filesystems.len());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes_read_well() {
        let now = Timestamp::from_unix_millis(10_000_000);
        assert_eq!(ago(now, Timestamp::from_unix_millis(9_997_000)), "3s");
        assert_eq!(
            ago(now, Timestamp::from_unix_millis(10_000_000 - 7_200_000)),
            "2h"
        );
        assert_eq!(ago(now, Timestamp::from_unix_millis(20_000_000)), "0s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }

    #[test]
    fn node_detail_shows_containers_disks_reboot_and_updates() {
        use rollcall_proto::model::*;
        let now = Timestamp::from_unix_millis(1_795_421_138_000);
        let mut node = Node::new("ctl1", Role::Controller, now);
        node.online = true;
        let report = Report {
            seq: 9,
            collected_at: now,
            full: true,
            containers: Some(ContainersSection {
                available: true,
                engine: "Docker 24.0.7 (API 1.43)".into(),
                containers: vec![Container {
                    name: "nova_api".into(),
                    state: ContainerState::Running,
                    health: ContainerHealth::Unhealthy,
                    failing_streak: 3,
                    last_health_output: "curl: (7) refused".into(),
                    started_at: Some(Timestamp::from_unix_millis(1_795_421_000_000)),
                    image: "kolla/nova-api:2024.1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            disks: Some(DisksSection {
                filesystems: vec![Filesystem {
                    mount_point: "/var/lib/docker".into(),
                    device: "/dev/sdb1".into(),
                    fs_type: "xfs".into(),
                    total_bytes: 100 << 30,
                    used_bytes: 91 << 30,
                    available_bytes: 9 << 30,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            reboot: Some(RebootSection {
                required: true,
                reasons: vec![RebootReason {
                    source: "kernel".into(),
                    detail: "running 6.1.0-28, newest installed 6.1.0-29".into(),
                    packages: vec![],
                }],
                ..Default::default()
            }),
            updates: Some(UpdatesSection {
                manager: "apt".into(),
                checked: true,
                count: 4,
                security_count: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render_detail(
            &NodeDetail {
                node,
                report: Some(report),
            },
            now,
        );
        for needle in [
            "Reboot:      required; kernel: running 6.1.0-28, newest installed 6.1.0-29",
            "Updates:     4 pending (2 security) via apt",
            "/var/lib/docker  /dev/sdb1  xfs",
            "91%",
            "Containers (Docker 24.0.7 (API 1.43)):",
            "nova_api  running  unhealthy",
            "nova_api unhealthy (3 failed checks): curl: (7) refused",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    /// Every byte a terminal might obey: C0 other than the newline that
    /// ends each line, ESC, DEL, C1, and the bidi controls.
    fn assert_inert(text: &str) {
        for c in text.chars() {
            let raw = matches!(
                c,
                '\0'..='\x09' | '\x0b'..='\x1f' | '\x7f'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            );
            assert!(!raw, "raw {c:?} in:\n{text}");
        }
    }

    fn hostile_container(name: &str, image: &str) -> NodeContainer {
        use rollcall_proto::model::*;
        NodeContainer {
            node: "cmp1".into(),
            container: Container {
                name: name.into(),
                image: image.into(),
                state: ContainerState::Running,
                ..Default::default()
            },
        }
    }

    #[test]
    fn hostile_cells_are_escaped_and_keep_to_their_row() {
        let now = Timestamp::from_unix_millis(1_795_421_138_000);
        let containers = [
            hostile_container("nova_api\ncmp9  evil  running", "\x1b]0;pwned\x07kolla/x"),
            hostile_container("\x1b[2Jclear", "\u{9b}31m\u{202e}gpj.exe"),
            hostile_container("tab\there", "a\\x1b"),
        ];
        let text = render_containers(&containers, now, true);
        assert_eq!(
            text,
            concat!(
                "NODE  NAME                           STATE    HEALTH  RESTARTS  SINCE  IMAGE\n",
                r"cmp1  nova_api\ncmp9  evil  running  running  -       0         -      \x1b]0;pwned\x07kolla/x",
                "\n",
                r"cmp1  \x1b[2Jclear                   running  -       0         -      \u{9b}31m\u{202e}gpj.exe",
                "\n",
                r"cmp1  tab\there                      running  -       0         -      a\\x1b",
                "\n",
            )
        );
        assert_eq!(text.lines().count(), 1 + containers.len());
        assert_inert(&text);
    }

    #[test]
    fn a_long_cell_is_cut_with_an_ellipsis_at_the_bound() {
        let long = format!("{}tail", "x".repeat(MAX_CELL_CHARS));
        let t = table(&[header(&["A", "B"]), vec![long.clone(), "b".into()]]);
        let cut = format!("{}…", "x".repeat(MAX_CELL_CHARS - 1));
        assert_eq!(
            t,
            format!("A{}  B\n{cut}  b\n", " ".repeat(MAX_CELL_CHARS - 1))
        );
        // Exactly the bound is shown whole.
        let exact = "y".repeat(MAX_CELL_CHARS);
        assert_eq!(cell(&exact), exact.as_str());
    }

    #[test]
    fn node_detail_shows_hostile_text_whole_but_escaped() {
        use rollcall_proto::model::*;
        let now = Timestamp::from_unix_millis(1_795_421_138_000);
        let mut node = Node::new("ctl1", Role::Controller, now);
        node.online = true;
        node.labels = [("rack".to_owned(), "r1\x1b]52;c;cm0gLXJm\x07".to_owned())].into();
        let report = Report {
            seq: 1,
            collected_at: now,
            host: Some(HostFacts {
                hostname: "ctl1\r\nRole:        admin".into(),
                os_pretty_name: format!("Debian {}", "\u{202e}".repeat(40)),
                kernel: "6.1\x7f".into(),
                arch: "x86_64".into(),
                ..Default::default()
            }),
            containers: Some(ContainersSection {
                available: true,
                engine: "Docker\x1b[2J".into(),
                containers: vec![Container {
                    name: "mariadb\nfake".into(),
                    state: ContainerState::Running,
                    health: ContainerHealth::Unhealthy,
                    failing_streak: 2,
                    last_health_output: "line one\n\x1b[31mline two\n".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render_detail(
            &NodeDetail {
                node,
                report: Some(report),
            },
            now,
        );
        assert_inert(&text);
        for line in [
            r"Labels:      rack=r1\x1b]52;c;cm0gLXJm\x07",
            r"Hostname:    ctl1\r\nRole:        admin",
            &format!(r"OS:          Debian {}", r"\u{202e}".repeat(40)),
            r"Kernel:      6.1\x7f (x86_64)",
            r"Containers (Docker\x1b[2J):",
            r"  mariadb\nfake unhealthy (2 failed checks): line one\n\x1b[31mline two",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
        // The forged "Role:" stayed inside the hostname's line.
        assert_eq!(text.lines().filter(|l| l.contains("Role:")).count(), 2);
    }

    #[test]
    fn huge_strings_never_panic_and_stay_on_their_line() {
        use rollcall_proto::model::*;
        let now = Timestamp::from_unix_millis(1_795_421_138_000);
        for len in [65_536, 500_000] {
            let huge = "k\n".repeat(len / 2);
            let mut node = Node::new("cmp1", Role::Compute, now);
            node.kernel = huge.clone();
            node.os_pretty_name = huge.clone();
            let list = render_table(std::slice::from_ref(&node), now);
            assert_eq!(list.lines().count(), 3, "header, row, total");
            assert!(
                list.lines().all(|l| l.chars().count() < 400),
                "cells are bounded"
            );

            let containers = [hostile_container(&huge, &huge)];
            let text = render_containers(&containers, now, true);
            assert_eq!(text.lines().count(), 2);

            let report = Report {
                host: Some(HostFacts {
                    hostname: huge.clone(),
                    ..Default::default()
                }),
                containers: Some(ContainersSection {
                    available: true,
                    containers: vec![Container {
                        name: huge.clone(),
                        health: ContainerHealth::Unhealthy,
                        last_health_output: huge.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            };
            let detail = render_detail(
                &NodeDetail {
                    node,
                    report: Some(report),
                },
                now,
            );
            let escaped = r"k\n".repeat(len / 2);
            assert!(
                detail
                    .lines()
                    .any(|l| l == format!("Hostname:    {escaped}"))
            );
            assert_inert(&detail);

            let summary = FleetSummary {
                offline_nodes: vec![huge.clone()],
                nodes_offline: 1,
                unhealthy_containers: containers.to_vec(),
                ..Default::default()
            };
            let text = render_summary(&summary, now);
            assert_inert(&text);
            assert!(
                text.lines().all(|l| l.chars().count() < 400),
                "{}",
                text.len()
            );
        }
    }

    #[test]
    fn certificate_expiry_shows_relative_in_tables_and_nearest_first_in_the_summary() {
        use rollcall_proto::model::{CertExpiry, Role};
        let now = Timestamp::from_unix_millis(1_795_000_000_000);
        let day = |n: i64| Timestamp::from_unix_millis(now.unix_millis() + n * 86_400_000);
        let mut soon = Node::new("cmp07", Role::Compute, now);
        soon.cert_not_after = Some(day(12));
        let unknown = Node::new("old", Role::Compute, now);
        let list = render_table(&[soon.clone(), unknown], now);
        let mut lines = list.lines();
        let head = lines.next().expect("header");
        let col = head.find("CERT EXPIRES").expect("the column");
        let cell = |line: Option<&str>| {
            line.expect("a row")[col..]
                .split("  ")
                .next()
                .map(str::to_owned)
        };
        assert_eq!(cell(lines.next()).as_deref(), Some("in 12d"), "{list}");
        assert_eq!(cell(lines.next()).as_deref(), Some("-"), "{list}");

        let detail = render_detail(
            &NodeDetail {
                node: soon,
                report: None,
            },
            now,
        );
        assert!(
            detail.contains("Cert:        expires 2026-11-30T11:06:40.000Z (in 12d)\n"),
            "{detail}"
        );

        let line = |s: &FleetSummary| {
            render_summary(s, now)
                .lines()
                .find(|l| l.starts_with("Certificates:"))
                .map(str::to_owned)
        };
        let mut s = FleetSummary {
            cert_expiry_within_days: 14,
            ..Default::default()
        };
        assert_eq!(
            line(&s).as_deref(),
            Some("Certificates: none expire within 14 days")
        );
        s.certs_expiring_total = 8;
        s.certs_expired_total = 1;
        s.certs_expiring = [
            ("ctl01", -3),
            ("cmp07", 2),
            ("cmp02", 3),
            ("a", 4),
            ("b", 5),
            ("c", 6),
        ]
        .into_iter()
        .map(|(node, d)| CertExpiry {
            node: node.into(),
            not_after: day(d),
        })
        .collect();
        assert_eq!(
            line(&s).as_deref(),
            Some(
                "Certificates: 8 expire within 14 days (1 expired): ctl01 EXPIRED 3d ago, cmp07 in 2d, cmp02 in 3d, a in 4d, b in 5d, and 3 more (nodes list --sort cert-expiry)"
            )
        );
        // A server from before expiry was recorded says nothing of it.
        assert_eq!(line(&FleetSummary::default()), None);
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&[header(&["A", "BB"]), vec!["ccc".into(), "d".into()]]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}
