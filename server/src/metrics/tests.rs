//! FAMILIES against the README, the events' arithmetic, and the shipped
//! alert rules against what the server writes.

use std::path::Path;
use std::process::Command;

use super::*;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The rows of the README's metrics table: (name, type, labels).
fn readme_rows() -> Vec<(String, String, Vec<String>)> {
    let readme = std::fs::read_to_string(repo("README.md")).expect("README.md");
    let section = readme
        .split("\n### Metrics\n")
        .nth(1)
        .expect("README.md has a \"### Metrics\" section");
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            let cells: Vec<String> = row
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect();
            let labels = cells[2]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_owned())
                .filter(|l| !l.is_empty() && l != "—")
                .collect();
            (cells[0].clone(), cells[1].clone(), labels)
        })
        .collect()
}

fn failures(events: &Events, step: Step) -> u64 {
    events
        .failures
        .iter()
        .find(|(s, _)| *s == step)
        .map_or(0, |(_, c)| c.get())
}

fn timed(events: &Events, step: Step) -> (u64, f64) {
    let h = &events
        .step_durations
        .iter()
        .find(|(s, _)| *s == step)
        .expect("step")
        .1;
    count_sum(h)
}

/// A histogram's count and sum, as it encodes them.
fn count_sum(h: &Histogram) -> (u64, f64) {
    let mut text = String::new();
    let mut r = Registry::default();
    r.register("h", "h", h.clone());
    prometheus_client::encoding::text::encode(&mut text, &r).expect("encode");
    let value = |series: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    (value("h_count") as u64, value("h_sum"))
}

/// With `undrain_on_failure` a node goes Patch → Undrain → Failed: the
/// failure is the patch's, counted once.
#[test]
fn a_failure_is_counted_once_against_the_step_it_happened_in() {
    let events = Events::new();
    let at = |s: i64| Timestamp::from_unix_millis(s * 1_000);
    let mut patch = NodeRun::new("cmp01".into(), rollcall_proto::model::Role::Compute, at(0));
    patch.step = Step::Patch;
    let undrain = NodeRun {
        step: Step::Undrain,
        since: at(60),
        failure: Some("patch failed: exit 100".into()),
        ..patch.clone()
    };
    events.run_changed(&patch, &undrain, at(60));
    let failed = NodeRun {
        step: Step::Failed,
        since: at(90),
        ..undrain.clone()
    };
    events.run_changed(&undrain, &failed, at(90));
    assert_eq!(failures(&events, Step::Patch), 1);
    assert_eq!(
        failures(&events, Step::Undrain),
        0,
        "the undrain did not fail"
    );
    assert_eq!(timed(&events, Step::Patch), (1, 60.0));
    assert_eq!(timed(&events, Step::Undrain), (1, 30.0));

    // Retried, it fails again without an undrain: a second failure.
    let retried = NodeRun {
        step: Step::Patch,
        since: at(100),
        failure: None,
        ..failed.clone()
    };
    events.run_changed(&failed, &retried, at(100));
    assert_eq!(failures(&events, Step::Patch), 1, "a retry is no failure");
    let again = NodeRun {
        step: Step::Failed,
        ..retried.clone()
    };
    events.run_changed(&retried, &again, at(110));
    assert_eq!(failures(&events, Step::Patch), 2);
    // A change that does not move the step observes nothing.
    events.run_changed(&again, &again.clone(), at(120));
    assert_eq!(failures(&events, Step::Patch), 2);
    assert_eq!(timed(&events, Step::Patch), (2, 70.0), "two patches left");
}

#[test]
fn a_commit_in_progress_shows_until_it_ends() {
    let events = Events::new();
    let at = Timestamp::from_unix_millis;
    assert_eq!(events.commit_running(at(5_000)), None);
    events.commit_began(at(1_000));
    assert_eq!(
        events.commit_running(at(5_000)),
        Some(Duration::from_secs(4))
    );
    events.commit_ended(Duration::from_secs(4), false);
    assert_eq!(events.commit_running(at(6_000)), None);
    assert_eq!(
        count_sum(&events.store_commit),
        (0, 0.0),
        "a failed commit is not timed"
    );
    events.commit_began(at(7_000));
    events.commit_ended(Duration::from_millis(2), true);
    assert_eq!(count_sum(&events.store_commit), (1, 0.002));
}

#[test]
fn the_readme_documents_exactly_the_families_the_server_exposes() {
    let documented = readme_rows();
    let exposed: Vec<(String, String, Vec<String>)> = FAMILIES
        .iter()
        .map(|f| {
            (
                f.name.to_owned(),
                f.kind.as_str().to_owned(),
                f.labels.iter().map(|l| (*l).to_owned()).collect(),
            )
        })
        .collect();
    assert_eq!(
        documented, exposed,
        "README.md's metrics table (name | type | labels | meaning) must list FAMILIES, in order"
    );
}

/// The family a series name belongs to (a histogram's `_bucket`,
/// `_sum` and `_count` are its own).
fn family_of(name: &str) -> Option<&'static FamilyDoc> {
    FAMILIES.iter().find(|f| {
        name == f.name
            || (f.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f.name)))
    })
}

/// The values a label can take in a family, where they are a closed set.
fn closed_values(family: &str, label: &str) -> Option<Vec<String>> {
    use crate::campaign::Phase;
    use rollcall_proto::model::Role;
    use snapshot::{REBOOT_LONGER_THAN, SILENT_LONGER_THAN};
    let own = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect());
    let numbers = |v: &[u64]| Some(v.iter().map(u64::to_string).collect());
    match (family, label) {
        (_, "role") => own(&Role::ALL.map(Role::as_str)),
        (_, "step") => own(&Step::ALL.map(Step::as_str)),
        (_, "phase") => own(&Phase::ALL.map(Phase::as_str)),
        (_, "state") => own(&["online", "offline"]),
        (_, "gate") => own(&["before", "after"]),
        (_, "kind") => own(&["nodes", "campaigns"]),
        (_, "part") => own(&encode::PARTS),
        ("rollcall_connections_refused_total", "reason") => {
            own(&ConnectionRefusal::ALL.map(ConnectionRefusal::as_str))
        }
        ("rollcall_metrics_connections_dropped_total", "reason") => {
            own(&MetricsDrop::ALL.map(MetricsDrop::as_str))
        }
        ("rollcall_nodes_silent", "longer_than_seconds") => numbers(&SILENT_LONGER_THAN),
        ("rollcall_nodes_reboot_required_longer_than", "longer_than_seconds") => {
            numbers(&REBOOT_LONGER_THAN)
        }
        _ => None,
    }
}

/// A selector's label, with the value an `=` matcher wants.
type Matcher = (String, Option<String>);

/// Every `rollcall_*` name in `text`, with the `label="value"` pairs
/// of its selector (`=~` and `!=` matchers keep their label, without a
/// value to check).
fn selectors(text: &str) -> Vec<(String, Vec<Matcher>)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("rollcall_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut labels = Vec::new();
        if let Some(inner) = tail[end..].strip_prefix('{') {
            let close = inner.find('}').expect("a selector closes");
            for matcher in inner[..close].split(',').filter(|m| !m.trim().is_empty()) {
                let key_end = matcher.find(['=', '!']).expect("a matcher has an operator");
                let key = matcher[..key_end].trim().to_owned();
                let op = &matcher[key_end..];
                let value = op
                    .strip_prefix('=')
                    .filter(|v| !v.starts_with('~'))
                    .map(|v| v.trim().trim_matches('"').to_owned());
                labels.push((key, value));
            }
        }
        found.push((name, labels));
        rest = &tail[end..];
    }
    found
}

fn check_selectors(file: &str, whole: bool) {
    let text = std::fs::read_to_string(repo(file)).expect("rules");
    let found = selectors(&text);
    assert!(found.len() > 5, "{file}: {found:?}");
    for (name, labels) in found {
        let Some(f) = family_of(&name) else {
            panic!("{file} names {name}, which the server does not expose");
        };
        let bucket = name.ends_with("_bucket");
        for (label, value) in &labels {
            assert!(
                f.labels.contains(&label.as_str()) || (bucket && label == "le"),
                "{file}: {name} has no label {label} (it has {:?})",
                f.labels
            );
            if let (Some(value), Some(allowed)) = (value, closed_values(f.name, label)) {
                assert!(
                    allowed.contains(value),
                    "{file}: {name}{{{label}=\"{value}\"}}: the server writes {label} as one of {allowed:?}"
                );
            }
        }
        // An input series of the tests is written as the server writes it: every label.
        if whole && !labels.is_empty() {
            let mut have: Vec<&str> = labels.iter().map(|(l, _)| l.as_str()).collect();
            have.retain(|l| *l != "le");
            have.sort_unstable();
            let mut want = f.labels.to_vec();
            want.sort_unstable();
            assert_eq!(have, want, "{file}: the labels of {name}");
        }
    }
}

#[test]
fn the_shipped_rules_name_metrics_and_labels_the_server_exposes() {
    check_selectors("packaging/prometheus/rollcall.rules.yml", false);
    check_selectors("packaging/prometheus/rollcall.rules.test.yml", true);
}

#[test]
fn a_label_typo_in_a_selector_is_caught() {
    let found = selectors(
        r#"rollcall_nodes_silent{longer_than_seconds="900"} > 0 and rollcall_campaign_phase{phase=~"p.*",campaign!="x"}"#,
    );
    assert_eq!(found.len(), 2);
    assert_eq!(
        found[0].1,
        [("longer_than_seconds".to_owned(), Some("900".to_owned()))]
    );
    assert_eq!(
        found[1].1,
        [("phase".to_owned(), None), ("campaign".to_owned(), None)]
    );
    let silent = closed_values("rollcall_nodes_silent", "longer_than_seconds").expect("closed");
    assert!(
        !silent.contains(&"1800".to_owned()),
        "not a value the server writes"
    );
    assert_eq!(closed_values("rollcall_campaign_phase", "campaign"), None);
}

/// `promtool check rules` and `promtool test rules` (Debian's
/// prometheus package) on the shipped rules and their unit tests.
#[test]
fn promtool_checks_and_tests_the_shipped_rules() {
    let Some(promtool) = promtool() else { return };
    let dir = repo("packaging/prometheus");
    for args in [
        ["check", "rules", "rollcall.rules.yml"],
        ["test", "rules", "rollcall.rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
