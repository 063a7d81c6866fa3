use std::collections::BTreeSet;

use super::*;
use crate::campaign::record::NodeRun;
use crate::metrics::classic::classic;
use crate::metrics::snapshot::{OpenCampaign, RoleGates, step_index};
use crate::metrics::{ConnectionRefusal, FAMILIES, MetricsDrop};
use rollcall_proto::timestamp::Timestamp;

/// A scrape with something in every family, per-node series on.
pub(crate) fn full() -> (Events, Scrape) {
    let events = Events::new();
    events.report();
    events.session_opened();
    events.refused(ConnectionRefusal::Revoked);
    events.request_refused();
    events.metrics_dropped(MetricsDrop::Deadline);
    events.commit_ended(Duration::from_millis(3), true);
    let mut patching = NodeRun::new(
        "ctl01".into(),
        Role::Controller,
        Timestamp::from_unix_millis(0),
    );
    patching.step = Step::Patch;
    let failed = NodeRun {
        step: Step::Failed,
        ..patching.clone()
    };
    events.run_changed(&patching, &failed, Timestamp::from_unix_millis(42_000));
    let mut fleet = FleetSnapshot {
        sessions: 2,
        watchers: 1,
        nearest_cert_expiry: Some(Timestamp::from_unix_millis(1_900_000_000_500)),
        report_age_max: [Some(Duration::from_secs(3)), Some(Duration::from_secs(900))],
        silent: [1, 1, 0, 0, 0],
        reboot_required_longer: [1, 1, 0],
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
        reboot_required_since: Some(Timestamp::from_unix_millis(1_700_000_000_000)),
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
            gates: vec![RoleGates {
                role: Role::Controller,
                wait_max: [Some(Duration::from_secs(30)), None],
                timeout: [Some(Duration::from_secs(1_800)); 2],
            }],
        }],
        watchers: 0,
    };
    let scrape = Scrape {
        fleet: Some(fleet),
        campaigns: Some(campaigns),
        store_healthy: true,
        commit_running: Some(Duration::from_millis(2_500)),
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
    let text = classic(&openmetrics(&events, scrape.into()));
    let expected: BTreeSet<(String, String)> = FAMILIES
        .iter()
        .map(|f| (f.name.to_owned(), f.kind.as_str().to_owned()))
        .collect();
    assert_eq!(types(&text), expected, "{text}");
}

#[test]
fn values_reach_their_series() {
    let (events, scrape) = full();
    let text = classic(&openmetrics(&events, scrape.into()));
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
            "rollcall_campaign_gate_wait_max_seconds{campaign=\"20261130-090000-3\",gate=\"before\",role=\"controller\"}",
            "30.0",
        ),
        (
            "rollcall_campaign_gate_wait_max_seconds{campaign=\"20261130-090000-3\",gate=\"after\",role=\"controller\"}",
            "0.0",
        ),
        (
            "rollcall_campaign_gate_timeout_seconds{campaign=\"20261130-090000-3\",gate=\"after\",role=\"controller\"}",
            "1800.0",
        ),
        ("rollcall_requests_refused_total", "1"),
        (
            "rollcall_metrics_connections_dropped_total{reason=\"deadline\"}",
            "1",
        ),
        ("rollcall_store_commit_running_seconds", "2.5"),
        ("rollcall_scrape_part_ok{part=\"fleet\"}", "1"),
        ("rollcall_scrape_part_ok{part=\"campaigns\"}", "1"),
        (
            "rollcall_nodes_reboot_required_longer_than{longer_than_seconds=\"259200\"}",
            "1",
        ),
        (
            "rollcall_node_reboot_required_since_timestamp_seconds{node=\"ctl01\",role=\"controller\"}",
            "1700000000.0",
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
fn a_part_that_did_not_answer_is_marked_and_the_rest_served() {
    let (events, mut scrape) = full();
    scrape.campaigns = None;
    let text = classic(&openmetrics(&events, scrape.into()));
    assert_eq!(
        sample(&text, "rollcall_scrape_part_ok{part=\"campaigns\"}"),
        Some("0")
    );
    assert_eq!(
        sample(&text, "rollcall_scrape_part_ok{part=\"fleet\"}"),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            "rollcall_nodes{role=\"controller\",state=\"online\"}"
        ),
        Some("1")
    );
    assert_eq!(
        sample(&text, "rollcall_store_commit_running_seconds"),
        Some("2.5")
    );
    assert!(text.contains("# TYPE rollcall_campaigns gauge\n"), "{text}");
    assert!(
        !text.contains("rollcall_campaigns{"),
        "no sample of a part that did not answer: {text}"
    );
    assert!(!text.contains("kind=\"campaigns\""), "{text}");

    let (events, mut scrape) = full();
    scrape.fleet = None;
    scrape.commit_running = None;
    let text = classic(&openmetrics(&events, scrape.into()));
    assert_eq!(
        sample(&text, "rollcall_scrape_part_ok{part=\"fleet\"}"),
        Some("0")
    );
    assert!(!text.contains("rollcall_nodes{"), "{text}");
    assert!(
        !text.contains("node=\""),
        "no per-node series without the fleet: {text}"
    );
    assert_eq!(sample(&text, "rollcall_sessions"), None);
    assert_eq!(
        sample(&text, "rollcall_store_commit_running_seconds"),
        Some("0.0")
    );
    assert_eq!(
        sample(&text, "rollcall_campaigns{phase=\"completed\"}"),
        Some("2")
    );
}

#[test]
fn without_per_node_series_no_node_label_appears() {
    let (events, mut scrape) = full();
    scrape.fleet.as_mut().expect("fleet").per_node = None;
    let text = classic(&openmetrics(&events, scrape.into()));
    assert!(!text.contains("node=\""), "{text}");
    assert_eq!(sample(&text, "rollcall_per_node_series"), Some("0"));
    assert!(!text.contains("rollcall_node_online"), "{text}");
}

#[test]
fn openmetrics_names_counters_without_total_and_ends_with_eof() {
    let (events, scrape) = full();
    let om = openmetrics(&events, scrape.into());
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE rollcall_reports counter\n"), "{om}");
    assert!(
        om.contains("# UNIT rollcall_store_commit_duration_seconds seconds\n"),
        "{om}"
    );
    let text = classic(&om);
    assert!(text.contains("# HELP rollcall_reports_total Reports taken"));
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
    let text = classic(&openmetrics(&events, scrape.into()));
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
