//! A scrape's text: the event families of [`Events`] and the state of a
//! [`Scrape`] encoded by prometheus-client in the OpenMetrics text format,
//! and [`classic`], the same in the Prometheus text format 0.0.4 for
//! clients that do not ask for OpenMetrics (curl, `promtool check
//! metrics`). Pure: no clock, no I/O.

use std::borrow::Cow;
use std::fmt::Write;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use rollcall_proto::model::Role;

use super::Events;
use super::snapshot::{CampaignSnapshot, FleetSnapshot, SILENT_LONGER_THAN};
use crate::campaign::Phase;
use crate::campaign::lifecycle::Step;

/// What a scrape found: the state of the fleet, the campaigns and the
/// store. Encoded by its `Collector`, once per scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub fleet: FleetSnapshot,
    pub campaigns: CampaignSnapshot,
    pub store_healthy: bool,
}

/// The scrape in the OpenMetrics text format (ends with `# EOF`).
pub fn openmetrics(events: &Events, scrape: Scrape) -> String {
    let mut state = Registry::with_prefix("rollcall");
    state.register_collector(Box::new(scrape));
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail; a collector's own error is ours.
    let encoded = prometheus_client::encoding::text::encode_registry(&mut out, events.registry())
        .and_then(|()| prometheus_client::encoding::text::encode(&mut out, &state));
    debug_assert!(encoded.is_ok(), "encoding to a String");
    out
}

/// The OpenMetrics text `om` in the Prometheus text format 0.0.4: a
/// counter's `# HELP` and `# TYPE` name its samples (`x_total`, where
/// OpenMetrics names the family `x`), and there is no `# UNIT` or `# EOF`.
/// The only differences for what prometheus-client writes here (counters,
/// gauges, histograms; no exemplars, no `_created`).
pub fn classic(om: &str) -> String {
    let mut out = String::with_capacity(om.len() + 1024);
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line.starts_with("# HELP ") {
            if let Some(previous) = help.replace(line) {
                push_line(&mut out, previous);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if kind == "counter" {
                if let Some(h) = help.take() {
                    let text = h
                        .strip_prefix("# HELP ")
                        .and_then(|h| h.strip_prefix(name))
                        .unwrap_or(" ");
                    let _ = writeln!(out, "# HELP {name}_total{text}");
                }
                let _ = writeln!(out, "# TYPE {name}_total counter");
                continue;
            }
        }
        if let Some(h) = help.take() {
            push_line(&mut out, h);
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        push_line(&mut out, line);
    }
    if let Some(h) = help {
        push_line(&mut out, h);
    }
    out
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
}

/// A label value as the text formats need it: `\`, `"` and newlines
/// escaped (prometheus-client writes values as they are). Node names
/// cannot hold any of them; the escape is for what a future label might.
fn label(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One gauge family: its descriptor, then one sample per label set.
fn gauges<'l, V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Vec<(&'static str, Cow<'l, str>)>, V)>,
) -> Result<(), std::fmt::Error> {
    let kind = MetricType::Gauge;
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        let mut sample = family.encode_family(&labels)?;
        sample.encode_gauge(&value)?;
    }
    Ok(())
}

/// A gauge without labels; without a value, its descriptor alone.
fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl Into<Option<V>>,
) -> Result<(), std::fmt::Error> {
    let kind = MetricType::Gauge;
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    match value.into() {
        Some(v) => family.encode_gauge(&v),
        None => Ok(()),
    }
}

fn role_label(role: Role) -> (&'static str, Cow<'static, str>) {
    ("role", Cow::Borrowed(role.as_str()))
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (fleet, campaigns) = (&self.fleet, &self.campaigns);
        let seconds = Some(&Unit::Seconds);

        // The server.
        gauges(
            &mut e,
            "build_info",
            "The rollcall-server version, as a label; the value is 1.",
            None,
            [(
                vec![("version", Cow::Borrowed(env!("CARGO_PKG_VERSION")))],
                1_i64,
            )],
        )?;
        gauge(
            &mut e,
            "sessions",
            "Agent sessions open now.",
            None,
            fleet.sessions,
        )?;
        gauges(
            &mut e,
            "watchers",
            "Operators watching, by what they watch (nodes or campaigns).",
            None,
            [
                (vec![("kind", Cow::Borrowed("nodes"))], fleet.watchers),
                (
                    vec![("kind", Cow::Borrowed("campaigns"))],
                    campaigns.watchers,
                ),
            ],
        )?;
        gauge(
            &mut e,
            "store_healthy",
            "1 while the store takes writes, 0 while they fail (nothing moves then).",
            None,
            i64::from(self.store_healthy),
        )?;
        gauge(
            &mut e,
            "per_node_series",
            "1 while the per-node series (rollcall_node_*) are written, 0 while the fleet is larger than [metrics] per_node_max_nodes.",
            None,
            i64::from(fleet.per_node.is_some()),
        )?;

        // The fleet.
        let by_role = || Role::ALL.into_iter().zip(fleet.by_role.iter());
        gauges(
            &mut e,
            "nodes",
            "Nodes by role and state (online: its agent reports; offline: it stopped).",
            None,
            by_role().flat_map(|(role, t)| {
                [("online", t.online), ("offline", t.offline)]
                    .map(|(state, n)| (vec![role_label(role), ("state", Cow::Borrowed(state))], n))
            }),
        )?;
        let per_role = |pick: fn(&super::snapshot::RoleTotals) -> u64| {
            by_role().map(move |(role, t)| (vec![role_label(role)], pick(t)))
        };
        gauges(
            &mut e,
            "nodes_reboot_required",
            "Nodes whose latest report asks for a reboot, by role.",
            None,
            per_role(|t| t.reboot_required),
        )?;
        gauges(
            &mut e,
            "pending_updates",
            "Package updates pending, summed over the nodes of each role.",
            None,
            per_role(|t| t.pending_updates),
        )?;
        gauges(
            &mut e,
            "pending_security_updates",
            "Security updates pending, summed over the nodes of each role.",
            None,
            per_role(|t| t.pending_security_updates),
        )?;
        gauges(
            &mut e,
            "containers_unhealthy",
            "Containers whose health check fails, summed over the nodes of each role.",
            None,
            per_role(|t| t.containers_unhealthy),
        )?;
        gauges(
            &mut e,
            "containers_stopped",
            "Containers that should run and do not (exited, dead, restarting), summed over the nodes of each role.",
            None,
            per_role(|t| t.containers_stopped),
        )?;
        gauge::<f64>(
            &mut e,
            "agent_certificate_nearest_expiry_timestamp",
            "When the agent certificate that expires first expires (Unix time); no sample while no node connected with one.",
            seconds,
            fleet
                .nearest_cert_expiry
                .map(|t| t.unix_millis() as f64 / 1_000.0),
        )?;
        gauges(
            &mut e,
            "nodes_report_age_max",
            "The oldest last report among the nodes of each state; no sample for a state without nodes.",
            seconds,
            [("online", 0), ("offline", 1)]
                .into_iter()
                .filter_map(|(state, i)| {
                    let age = fleet.report_age_max[i]?;
                    Some((vec![("state", Cow::Borrowed(state))], secs(age)))
                }),
        )?;
        gauges(
            &mut e,
            "nodes_silent",
            "Nodes whose last report is older than the label's number of seconds, online or not.",
            None,
            SILENT_LONGER_THAN
                .iter()
                .zip(fleet.silent)
                .map(|(s, n)| (vec![("longer_than_seconds", Cow::Owned(s.to_string()))], n)),
        )?;

        // Campaigns.
        gauges(
            &mut e,
            "campaigns",
            "Campaigns the server keeps, by phase.",
            None,
            Phase::ALL
                .into_iter()
                .zip(campaigns.by_phase)
                .map(|(p, n)| (vec![("phase", Cow::Borrowed(p.as_str()))], n)),
        )?;
        gauges(
            &mut e,
            "campaign_phase",
            "The phase of each campaign that has not ended: 1 for its phase, 0 for the others.",
            None,
            campaigns.open.iter().flat_map(|c| {
                Phase::ALL.into_iter().map(|p| {
                    (
                        vec![
                            ("campaign", label(&c.id)),
                            ("phase", Cow::Borrowed(p.as_str())),
                        ],
                        i64::from(c.phase == p),
                    )
                })
            }),
        )?;
        gauges(
            &mut e,
            "campaign_nodes",
            "The nodes of each campaign that has not ended, by the step they are in.",
            None,
            campaigns.open.iter().flat_map(|c| {
                Step::ALL.into_iter().zip(c.nodes_by_step).map(|(s, n)| {
                    (
                        vec![
                            ("campaign", label(&c.id)),
                            ("step", Cow::Borrowed(s.as_str())),
                        ],
                        n,
                    )
                })
            }),
        )?;
        gauges(
            &mut e,
            "campaign_gate_wait_max",
            "The longest a node of each campaign that has not ended has waited at its gate now (0: none is at it).",
            seconds,
            campaigns.open.iter().flat_map(|c| {
                [("before", 0), ("after", 1)].map(|(gate, i)| {
                    (
                        vec![("campaign", label(&c.id)), ("gate", Cow::Borrowed(gate))],
                        c.gate_wait_max[i].map_or(0.0, secs),
                    )
                })
            }),
        )?;

        // Per node.
        let Some(nodes) = &fleet.per_node else {
            return Ok(());
        };
        let each = |value: fn(&super::snapshot::NodeSample) -> f64| {
            nodes
                .iter()
                .map(move |n| (vec![("node", label(&n.name)), role_label(n.role)], value(n)))
        };
        gauges(
            &mut e,
            "node_online",
            "1 while the node's agent reports, 0 once it is offline.",
            None,
            each(|n| f64::from(u8::from(n.online))),
        )?;
        gauges(
            &mut e,
            "node_report_age",
            "Time since the node's last report (or its session's start).",
            seconds,
            each(|n| secs(n.report_age)),
        )?;
        gauges(
            &mut e,
            "node_reboot_required",
            "1 while the node's latest report asks for a reboot.",
            None,
            each(|n| f64::from(u8::from(n.reboot_required))),
        )?;
        gauges(
            &mut e,
            "node_pending_updates",
            "Package updates pending on the node.",
            None,
            each(|n| f64::from(n.pending_updates)),
        )?;
        gauges(
            &mut e,
            "node_pending_security_updates",
            "Security updates pending on the node.",
            None,
            each(|n| f64::from(n.pending_security_updates)),
        )?;
        gauges(
            &mut e,
            "node_containers_unhealthy",
            "Containers on the node whose health check fails.",
            None,
            each(|n| f64::from(n.containers_unhealthy)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::metrics::snapshot::{NodeSample, OpenCampaign, RoleTotals, step_index};
    use crate::metrics::{FAMILIES, Refusal};
    use rollcall_proto::timestamp::Timestamp;

    /// A scrape with something in every family, per-node series on.
    pub(crate) fn full() -> (Events, Scrape) {
        let events = Events::new();
        events.report();
        events.session_opened();
        events.refused(Refusal::Revoked);
        events.store_commit(Duration::from_millis(3));
        events.step_left(Step::Patch, Step::Failed, Duration::from_secs(42));
        let mut fleet = FleetSnapshot {
            sessions: 2,
            watchers: 1,
            nearest_cert_expiry: Some(Timestamp::from_unix_millis(1_900_000_000_500)),
            report_age_max: [Some(Duration::from_secs(3)), Some(Duration::from_secs(900))],
            silent: [1, 1, 0, 0, 0],
            ..FleetSnapshot::default()
        };
        fleet.by_role[0] = RoleTotals {
            online: 1,
            offline: 1,
            reboot_required: 1,
            pending_updates: 12,
            pending_security_updates: 3,
            containers_unhealthy: 1,
            containers_stopped: 2,
        };
        fleet.per_node = Some(vec![NodeSample {
            name: "ctl01".into(),
            role: Role::Controller,
            online: true,
            report_age: Duration::from_millis(1_500),
            reboot_required: true,
            pending_updates: 12,
            pending_security_updates: 3,
            containers_unhealthy: 1,
        }]);
        let mut nodes_by_step = [0; Step::ALL.len()];
        nodes_by_step[step_index(Step::GateBefore)] = 1;
        nodes_by_step[step_index(Step::Done)] = 4;
        let campaigns = CampaignSnapshot {
            by_phase: [1, 0, 0, 2],
            open: vec![OpenCampaign {
                id: "20261130-090000-3".into(),
                phase: Phase::Running,
                nodes_by_step,
                gate_wait_max: [Some(Duration::from_secs(30)), None],
            }],
            watchers: 0,
        };
        let scrape = Scrape {
            fleet,
            campaigns,
            store_healthy: true,
        };
        (events, scrape)
    }

    /// The `# TYPE` lines of a classic text: (name, type).
    fn types(text: &str) -> BTreeSet<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_owned(), t.to_owned()))
            .collect()
    }

    fn sample<'t>(text: &'t str, series: &str) -> Option<&'t str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn a_full_scrape_shows_exactly_the_documented_families() {
        let (events, scrape) = full();
        let text = classic(&openmetrics(&events, scrape));
        let expected: BTreeSet<(String, String)> = FAMILIES
            .iter()
            .map(|f| (f.name.to_owned(), f.kind.as_str().to_owned()))
            .collect();
        assert_eq!(types(&text), expected, "{text}");
    }

    #[test]
    fn values_reach_their_series() {
        let (events, scrape) = full();
        let text = classic(&openmetrics(&events, scrape));
        let cases = [
            ("rollcall_reports_total", "1"),
            (
                "rollcall_connections_refused_total{reason=\"revoked\"}",
                "1",
            ),
            (
                "rollcall_connections_refused_total{reason=\"source_limit\"}",
                "0",
            ),
            ("rollcall_campaign_node_failures_total{step=\"patch\"}", "1"),
            (
                "rollcall_campaign_step_duration_seconds_sum{step=\"patch\"}",
                "42.0",
            ),
            (
                "rollcall_campaign_step_duration_seconds_bucket{le=\"60.0\",step=\"patch\"}",
                "1",
            ),
            ("rollcall_nodes{role=\"controller\",state=\"offline\"}", "1"),
            ("rollcall_pending_updates{role=\"controller\"}", "12"),
            ("rollcall_containers_stopped{role=\"controller\"}", "2"),
            ("rollcall_containers_stopped{role=\"compute\"}", "0"),
            (
                "rollcall_agent_certificate_nearest_expiry_timestamp_seconds",
                "1900000000.5",
            ),
            ("rollcall_nodes_silent{longer_than_seconds=\"300\"}", "1"),
            ("rollcall_campaigns{phase=\"completed\"}", "2"),
            (
                "rollcall_campaign_phase{campaign=\"20261130-090000-3\",phase=\"running\"}",
                "1",
            ),
            (
                "rollcall_campaign_phase{campaign=\"20261130-090000-3\",phase=\"paused\"}",
                "0",
            ),
            (
                "rollcall_campaign_nodes{campaign=\"20261130-090000-3\",step=\"done\"}",
                "4",
            ),
            (
                "rollcall_campaign_gate_wait_max_seconds{campaign=\"20261130-090000-3\",gate=\"before\"}",
                "30.0",
            ),
            (
                "rollcall_node_report_age_seconds{node=\"ctl01\",role=\"controller\"}",
                "1.5",
            ),
            (
                "rollcall_node_reboot_required{node=\"ctl01\",role=\"controller\"}",
                "1.0",
            ),
            ("rollcall_store_healthy", "1"),
            ("rollcall_per_node_series", "1"),
        ];
        for (series, value) in cases {
            assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
        }
    }

    #[test]
    fn without_per_node_series_no_node_label_appears() {
        let (events, mut scrape) = full();
        scrape.fleet.per_node = None;
        let text = classic(&openmetrics(&events, scrape));
        assert!(!text.contains("node=\""), "{text}");
        assert_eq!(sample(&text, "rollcall_per_node_series"), Some("0"));
        assert!(!text.contains("rollcall_node_online"), "{text}");
    }

    #[test]
    fn openmetrics_names_counters_without_total_and_ends_with_eof() {
        let (events, scrape) = full();
        let om = openmetrics(&events, scrape);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE rollcall_reports counter\n"), "{om}");
        assert!(
            om.contains("# UNIT rollcall_store_commit_duration_seconds seconds\n"),
            "{om}"
        );
        let text = classic(&om);
        assert!(text.contains("# HELP rollcall_reports_total Reports received"));
        assert!(text.contains("# TYPE rollcall_reports_total counter\n"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Everything else is the same, line for line.
        let kept = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(&om), kept(&text));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("cmp01"), "cmp01");
        assert!(matches!(label("cmp01"), Cow::Borrowed(_)));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    /// `promtool check metrics` (Debian's prometheus package) finds nothing
    /// to say about a full scrape in the classic format.
    #[test]
    fn promtool_finds_a_full_scrape_clean() {
        let Some(promtool) = super::super::promtool() else {
            return;
        };
        let (events, scrape) = full();
        let text = classic(&openmetrics(&events, scrape));
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool runs");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
            .expect("write to promtool");
        let out = child.wait_with_output().expect("promtool ends");
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
