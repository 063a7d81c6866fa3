//! How the CLI shows things to people. `--json` output does not come
//! through here: it is the serde form of the domain types.

use std::fmt::Write as _;

use rollcall_proto::model::{
    ContainerHealth, FleetSummary, Node, NodeContainer, NodeDetail, Report,
};
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

/// Left-aligned columns separated by two spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
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
    let Some(r) = &d.report else {
        kv("Report", "none yet".into());
        return table(&rows);
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
    let mut out = table(&rows);
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
            let _ = writeln!(out, "  (error: {})", disks.error);
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
            "engine"
        } else {
            &section.engine
        }
    );
    if !section.available {
        let _ = writeln!(out, "  engine unavailable: {}", section.error);
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
            c.name,
            c.failing_streak,
            c.last_health_output.trim()
        );
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

pub fn render_summary(s: &FleetSummary, now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Nodes:       {} total, {} online, {} offline",
        s.nodes_total, s.nodes_online, s.nodes_offline
    );
    // The server cuts every list to `list_limit`; say so where it did.
    let list = |v: &[String], total: u32| {
        let total = total.max(u32::try_from(v.len()).unwrap_or(u32::MAX));
        if v.is_empty() {
            "none".to_owned()
        } else if total as usize > v.len() {
            format!("{} (first {} of {total})", v.join(", "), v.len())
        } else {
            v.join(", ")
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

    #[test]
    fn tables_align_columns() {
        let t = table(&[header(&["A", "BB"]), vec!["ccc".into(), "d".into()]]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}
