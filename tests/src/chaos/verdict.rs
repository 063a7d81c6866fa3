//! What a run did, judged from what the nodes wrote (their patch, reboot
//! and hook logs) and, for why nodes failed, from `campaign status --json`.
//! Double actions are counted from the nodes' own logs only, never from
//! what the server says.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::faults::{Injected, Kind};

/// How a run's campaign ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed (or cancelled by the runner's own deadline: see NotEnded).
    Completed,
    /// Paused with a reason and no node in flight: it waits for a person,
    /// who is told why.
    Paused(String),
    /// Still running (or paused with nodes in flight) at the deadline:
    /// the runner cancelled it. The reason is what it waited for.
    NotEnded(String),
    /// The run could not be made (a mount that failed, a cloud that did not
    /// start): said, never skipped silently.
    NotRun(String),
}

/// The verdict on one run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub index: usize,
    pub seed: u64,
    pub kind: Kind,
    pub injected: Injected,
    pub outcome: Outcome,
    pub secs: f64,
    /// "cmp01: 2 patches (ID, ID)".
    pub patched_twice: Vec<String>,
    pub rebooted_twice: Vec<String>,
    /// A hook action id that ran twice.
    pub hooks_twice: Vec<String>,
    /// (node, note) of failed nodes the plan expected to fail: the node
    /// that never came back.
    pub failed_expected: Vec<(String, String)>,
    pub failed_unexpected: Vec<(String, String)>,
    /// Nodes whose last drain hook was not followed by an undrain, and
    /// whether the campaign's status says so anywhere for that node.
    pub left_drained: Vec<(String, bool)>,
    /// Nodes the campaign calls done that were not patched exactly once
    /// and rebooted exactly once (every patch here asks for a reboot).
    pub done_without_work: Vec<String>,
    /// Patches and reboots the nodes' logs show, all nodes together.
    pub patches: usize,
    pub reboots: usize,
    /// What the runner itself could not make sense of (an action id in a
    /// node's log that is not that node's): the verdict may be wrong.
    pub anomalies: Vec<String>,
    /// What was injected and what the processes did.
    pub events: Vec<String>,
}

impl RunResult {
    pub fn not_run(index: usize, seed: u64, kind: Kind, why: String) -> RunResult {
        RunResult {
            index,
            seed,
            kind,
            injected: Injected::default(),
            outcome: Outcome::NotRun(why),
            secs: 0.0,
            patched_twice: Vec::new(),
            rebooted_twice: Vec::new(),
            hooks_twice: Vec::new(),
            failed_expected: Vec::new(),
            failed_unexpected: Vec::new(),
            left_drained: Vec::new(),
            done_without_work: Vec::new(),
            patches: 0,
            reboots: 0,
            anomalies: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Something a person must look at: a double action, an unexpected
    /// failure, work claimed and not done, a campaign that did not end.
    pub fn is_bad(&self) -> bool {
        !self.patched_twice.is_empty()
            || !self.rebooted_twice.is_empty()
            || !self.hooks_twice.is_empty()
            || !self.failed_unexpected.is_empty()
            || !self.done_without_work.is_empty()
            || !self.anomalies.is_empty()
            || self.left_drained.iter().any(|(_, said)| !said)
            || matches!(self.outcome, Outcome::NotEnded(_) | Outcome::NotRun(_))
    }

    /// The run's line while the runner goes.
    pub fn line(&self) -> String {
        let outcome = match &self.outcome {
            Outcome::Completed => "completed".to_owned(),
            Outcome::Paused(why) => format!("paused: {why}"),
            Outcome::NotEnded(why) => format!("DID NOT END: {why}"),
            Outcome::NotRun(why) => format!("NOT RUN: {why}"),
        };
        let mut line = format!(
            "run {:>3} seed {:<20} {:<24} {:>5.1}s {outcome}; injected {}",
            self.index,
            self.seed,
            self.kind.as_str(),
            self.secs,
            self.injected.describe()
        );
        let mut add = |what: &str, items: &[String]| {
            if !items.is_empty() {
                let _ = write!(line, "; {what}: {}", items.join(", "));
            }
        };
        add("PATCHED TWICE", &self.patched_twice);
        add("REBOOTED TWICE", &self.rebooted_twice);
        add("HOOK TWICE", &self.hooks_twice);
        let failed = |v: &[(String, String)]| -> Vec<String> {
            v.iter().map(|(n, why)| format!("{n} ({why})")).collect()
        };
        add("failed as expected", &failed(&self.failed_expected));
        add("FAILED", &failed(&self.failed_unexpected));
        let drained: Vec<String> = self
            .left_drained
            .iter()
            .map(|(n, said)| {
                if *said {
                    n.clone()
                } else {
                    format!("{n} (status does not say)")
                }
            })
            .collect();
        add("left drained", &drained);
        add("DONE WITHOUT ITS WORK", &self.done_without_work);
        add("RUNNER ANOMALY", &self.anomalies);
        line
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Action ids that started more than once in `starts`.
fn repeated(starts: &[String]) -> Vec<String> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for id in starts {
        *seen.entry(id).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, n)| format!("{id} ran {n} times"))
        .collect()
}

/// What the node logs of a run say, per node.
#[derive(Debug, Default, PartialEq)]
pub struct NodeLogs {
    /// Action ids of the patches that started, in order.
    pub patches: Vec<String>,
    pub reboots: Vec<String>,
    /// Drain hooks started for this node (as their target), and undrain
    /// hooks finished, as (time, drain?) in time order.
    pub drains: Vec<(f64, bool)>,
}

impl NodeLogs {
    /// The node's last drain was not undone.
    pub fn left_drained(&self) -> bool {
        self.drains.last().is_some_and(|(_, drain)| *drain)
    }
}

const DRAINS: [&str; 2] = ["nova-drain", "ceph-noout-set"];
const UNDRAINS: [&str; 2] = ["nova-undrain", "ceph-noout-unset"];

/// Reads a run's node logs: `NODE/patched.log`, `NODE/rebooted.log` and the
/// run's `hooks.log`. Returns them per node and the hook ids run twice.
pub fn read_logs(run: &Path, nodes: &[&str]) -> (BTreeMap<String, NodeLogs>, Vec<String>) {
    let mut out = BTreeMap::new();
    for node in nodes {
        let dir = run.join(node);
        let patches = lines(&dir.join("patched.log"))
            .iter()
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [_, id, "start"] => Some(id.to_owned()),
                _ => None,
            })
            .collect();
        let reboots = lines(&dir.join("rebooted.log"))
            .iter()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect();
        out.insert(
            (*node).to_owned(),
            NodeLogs {
                patches,
                reboots,
                drains: Vec::new(),
            },
        );
    }
    let mut hook_starts = Vec::new();
    for line in lines(&run.join("hooks.log")) {
        // TIME HOOK TARGET RUNNER ID start|end
        let f: Vec<&str> = line.split_whitespace().collect();
        let [time, hook, target, _, id, edge] = f[..] else {
            continue;
        };
        let time: f64 = time.parse().unwrap_or(0.0);
        if edge == "start" {
            hook_starts.push(id.to_owned());
        }
        let Some(logs) = out.get_mut(target) else {
            continue;
        };
        // A drain counts from its start (it may have half-run); an undrain
        // only once it finished.
        if DRAINS.contains(&hook) && edge == "start" {
            logs.drains.push((time, true));
        } else if UNDRAINS.contains(&hook) && edge == "end" {
            logs.drains.push((time, false));
        }
    }
    for logs in out.values_mut() {
        logs.drains.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    (out, repeated(&hook_starts))
}

/// A failure note made general enough to group runs by: node names,
/// the campaign id and action ids replaced, the text cut.
pub fn reason(note: &str, campaign: &str) -> String {
    let mut text = if campaign.is_empty() {
        note.to_owned()
    } else {
        note.replace(campaign, "ID")
    };
    for prefix in ["ctl", "cmp", "sto"] {
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(i) = rest.find(prefix) {
            let after = &rest[i + prefix.len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            out.push_str(&rest[..i]);
            if digits == 2 {
                out.push_str("NODE");
            } else {
                out.push_str(&rest[i..i + prefix.len() + digits]);
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        text = out;
    }
    // Paths of a run's files differ from run to run.
    if let Some(i) = text.find("(output: /") {
        text.truncate(i);
        text.push_str("(output: STATE_DIR/…)");
    }
    let text = rollcall_proto::text::for_terminal(&text).into_owned();
    match text.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Judges a run from its node logs and the campaign's last status.
pub fn judge(
    result: &mut RunResult,
    logs: &BTreeMap<String, NodeLogs>,
    status: Option<&Value>,
    never_returns: Option<&str>,
) {
    let campaign = status
        .and_then(|s| s["campaign"]["id"].as_str())
        .unwrap_or("");
    let empty = Vec::new();
    let runs = status.and_then(|s| s["nodes"].as_array()).unwrap_or(&empty);
    for (node, log) in logs {
        result.patches += log.patches.len();
        result.reboots += log.reboots.len();
        let mine = format!(".{node}.");
        for id in log.patches.iter().chain(&log.reboots) {
            if !id.contains(&mine) {
                result.anomalies.push(format!(
                    "{node} logged action id {id:?}, not one of its own"
                ));
            }
        }
        if log.patches.len() > 1 {
            result.patched_twice.push(format!(
                "{node}: {} patches ({})",
                log.patches.len(),
                log.patches.join(", ")
            ));
        }
        if log.reboots.len() > 1 {
            result.rebooted_twice.push(format!(
                "{node}: {} reboots ({})",
                log.reboots.len(),
                log.reboots.join(", ")
            ));
        }
        let run = runs.iter().find(|r| r["node"].as_str() == Some(node));
        let step = run.and_then(|r| r["step"].as_str()).unwrap_or("");
        let note = run.and_then(|r| r["note"].as_str()).unwrap_or("");
        if step == "failed" {
            let entry = (node.clone(), reason(note, campaign));
            if never_returns == Some(node.as_str()) {
                result.failed_expected.push(entry);
            } else {
                result.failed_unexpected.push(entry);
            }
        }
        if step == "done" && (log.patches.len() != 1 || log.reboots.len() != 1) {
            result.done_without_work.push(format!(
                "{node}: done after {} patches and {} reboots",
                log.patches.len(),
                log.reboots.len()
            ));
        }
        if log.left_drained() {
            let said = run.is_some_and(says_drained);
            result.left_drained.push((node.clone(), said));
        }
    }
}

/// Whether a node's status row says it was left drained: a text that
/// speaks of it ("left drained"), or a field named for it that is true or
/// names the hook that would undo it (`"left_drained": "nova-undrain"`).
fn says_drained(row: &Value) -> bool {
    match row {
        Value::String(s) => s.to_lowercase().contains("drained"),
        Value::Array(items) => items.iter().any(says_drained),
        Value::Object(fields) => fields
            .iter()
            .any(|(k, v)| (k.contains("drained") && flag_set(v)) || says_drained(v)),
        _ => false,
    }
}

fn flag_set(v: &Value) -> bool {
    v.as_bool() == Some(true) || v.as_str().is_some_and(|s| !s.is_empty())
}

/// The totals of one fault kind.
#[derive(Debug, Default)]
pub struct KindTotals {
    pub runs: usize,
    pub not_run: Vec<String>,
    pub injected: Injected,
    pub patched_twice: usize,
    pub rebooted_twice: usize,
    pub hooks_twice: usize,
    pub failed_expected: usize,
    pub failed_unexpected: usize,
    pub left_drained: usize,
    pub left_drained_unsaid: usize,
    pub done_without_work: usize,
    pub paused: usize,
    pub not_ended: usize,
    pub secs: Vec<f64>,
    /// Reason → (count, seeds).
    pub reasons: BTreeMap<String, (usize, Vec<u64>)>,
    pub expected_reasons: BTreeMap<String, usize>,
    /// What campaigns that did not end waited for → seeds.
    pub waits: BTreeMap<String, Vec<u64>>,
    pub pauses: BTreeMap<String, Vec<u64>>,
}

/// Every run's verdict, summed per fault kind.
#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub kinds: BTreeMap<Kind, KindTotals>,
    pub runs: Vec<RunResult>,
}

impl Summary {
    pub fn add(&mut self, r: RunResult) {
        let t = self.kinds.entry(r.kind).or_default();
        t.runs += 1;
        t.injected.add(&r.injected);
        t.patched_twice += r.patched_twice.len();
        t.rebooted_twice += r.rebooted_twice.len();
        t.hooks_twice += r.hooks_twice.len();
        t.failed_expected += r.failed_expected.len();
        t.failed_unexpected += r.failed_unexpected.len();
        t.left_drained += r.left_drained.len();
        t.left_drained_unsaid += r.left_drained.iter().filter(|(_, s)| !s).count();
        t.done_without_work += r.done_without_work.len();
        for (_, why) in &r.failed_unexpected {
            let e = t.reasons.entry(why.clone()).or_default();
            e.0 += 1;
            if !e.1.contains(&r.seed) {
                e.1.push(r.seed);
            }
        }
        for (_, why) in &r.failed_expected {
            *t.expected_reasons.entry(why.clone()).or_default() += 1;
        }
        match &r.outcome {
            Outcome::Completed => t.secs.push(r.secs),
            Outcome::Paused(why) => {
                t.paused += 1;
                t.secs.push(r.secs);
                t.pauses.entry(why.clone()).or_default().push(r.seed);
            }
            Outcome::NotEnded(why) => {
                t.not_ended += 1;
                t.waits.entry(why.clone()).or_default().push(r.seed);
            }
            Outcome::NotRun(why) => t.not_run.push(why.clone()),
        }
        self.runs.push(r);
    }

    pub fn patched_twice(&self) -> usize {
        self.kinds.values().map(|t| t.patched_twice).sum()
    }

    pub fn rebooted_twice(&self) -> usize {
        self.kinds.values().map(|t| t.rebooted_twice).sum()
    }

    pub fn not_ended(&self) -> usize {
        self.kinds.values().map(|t| t.not_ended).sum()
    }

    pub fn not_run(&self) -> usize {
        self.kinds.values().map(|t| t.not_run.len()).sum()
    }

    /// The markdown table per fault kind, and the reasons under it.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let runs = self.runs.len();
        let _ = writeln!(
            s,
            "{runs} runs, seed {} (one run again: scripts/chaos.sh 1 --seed SEED_OF_THAT_RUN, with the same --kind flags if any)\n",
            self.seed
        );
        s.push_str(
            "| fault | runs | injected | patched twice | rebooted twice | hook run twice | failed (expected) | failed (unexpected) | left drained (unsaid) | done without its work | paused | did not end | median s (ended runs) |\n",
        );
        s.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (kind, t) in &self.kinds {
            let mut secs = t.secs.clone();
            secs.sort_by(f64::total_cmp);
            let median = secs
                .get(secs.len() / 2)
                .map_or("–".to_owned(), |m| format!("{m:.1}"));
            let runs = if t.not_run.is_empty() {
                t.runs.to_string()
            } else {
                format!("{} ({} not run)", t.runs, t.not_run.len())
            };
            let _ = writeln!(
                s,
                "| {kind} | {runs} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {median} |",
                t.injected.describe(),
                t.patched_twice,
                t.rebooted_twice,
                t.hooks_twice,
                t.failed_expected,
                t.failed_unexpected,
                t.left_drained,
                t.left_drained_unsaid,
                t.done_without_work,
                t.paused,
                t.not_ended,
            );
        }
        let mut notes = String::new();
        for (kind, t) in &self.kinds {
            for why in t.not_run.iter().collect::<std::collections::BTreeSet<_>>() {
                let _ = writeln!(notes, "- {kind}: NOT RUN: {why}");
            }
            for (why, (n, seeds)) in &t.reasons {
                let _ = writeln!(
                    notes,
                    "- {kind}: {n} failed unexpectedly: \"{why}\" (seeds {})",
                    seeds_list(seeds)
                );
            }
            for (why, n) in &t.expected_reasons {
                let _ = writeln!(notes, "- {kind}: {n} failed as expected: \"{why}\"");
            }
            for (why, seeds) in &t.waits {
                let _ = writeln!(
                    notes,
                    "- {kind}: {} did not end, waiting: \"{why}\" (seeds {})",
                    seeds.len(),
                    seeds_list(seeds)
                );
            }
            for (why, seeds) in &t.pauses {
                let _ = writeln!(
                    notes,
                    "- {kind}: {} paused: \"{why}\" (seeds {})",
                    seeds.len(),
                    seeds_list(seeds)
                );
            }
        }
        if !notes.is_empty() {
            s.push_str("\nWhy:\n");
            s.push_str(&notes);
        }
        let doubles: Vec<&RunResult> = self
            .runs
            .iter()
            .filter(|r| {
                !r.patched_twice.is_empty()
                    || !r.rebooted_twice.is_empty()
                    || !r.hooks_twice.is_empty()
                    || !r.done_without_work.is_empty()
            })
            .collect();
        if !doubles.is_empty() {
            s.push_str("\nDouble actions and work claimed but not done:\n");
            for r in doubles {
                let all: Vec<&String> = r
                    .patched_twice
                    .iter()
                    .chain(&r.rebooted_twice)
                    .chain(&r.hooks_twice)
                    .chain(&r.done_without_work)
                    .collect();
                for what in all {
                    let _ = writeln!(s, "- seed {} ({}): {what}", r.seed, r.kind);
                }
            }
        }
        s
    }
}

fn seeds_list(seeds: &[u64]) -> String {
    let shown: Vec<String> = seeds.iter().take(5).map(u64::to_string).collect();
    if seeds.len() > 5 {
        format!("{}, …", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_across_nodes_and_campaigns() {
        let a = reason(
            "patch did not finish within 30s: patch accepted on cmp03 (c-7f.cmp03.1.patch)",
            "c-7f",
        );
        assert_eq!(
            a,
            "patch did not finish within 30s: patch accepted on NODE (ID.NODE.1.patch)"
        );
        assert_eq!(
            reason(
                "the agent stopped while the action ran; it may still be running (output: /tmp/x/ctl01/actions/a.log)",
                ""
            ),
            "the agent stopped while the action ran; it may still be running (output: STATE_DIR/…)"
        );
        assert_eq!(reason("cmpx ctl1 sto001", ""), "cmpx ctl1 sto001");
    }

    #[test]
    fn a_node_drained_and_never_undrained_is_left_drained() {
        let dir = std::env::temp_dir().join(format!("chaos-verdict-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cmp01")).expect("dir");
        std::fs::create_dir_all(dir.join("cmp02")).expect("dir");
        std::fs::write(
            dir.join("hooks.log"),
            "1.0 nova-drain cmp01 ctl01 c.cmp01.1.drain start\n\
             1.2 nova-drain cmp01 ctl01 c.cmp01.1.drain end\n\
             1.5 nova-drain cmp02 ctl01 c.cmp02.1.drain start\n\
             3.0 nova-undrain cmp02 ctl02 c.cmp02.1.undrain start\n\
             3.2 nova-undrain cmp02 ctl02 c.cmp02.1.undrain end\n\
             4.0 nova-drain cmp02 ctl01 c.cmp02.1.drain start\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("cmp01/patched.log"),
            "1.3 c.cmp01.1.patch start\n2.0 c.cmp01.1.patch end\n1.9 c.cmp01.1.patch start\n",
        )
        .expect("write");
        let (logs, twice) = read_logs(&dir, &["cmp01", "cmp02"]);
        assert!(logs["cmp01"].left_drained());
        assert!(
            logs["cmp02"].left_drained(),
            "drained again after its undrain"
        );
        assert_eq!(twice, ["c.cmp02.1.drain ran 2 times"]);
        assert_eq!(logs["cmp01"].patches.len(), 2);
        let mut r = RunResult::not_run(0, 1, Kind::KillAgent, String::new());
        let status = serde_json::json!({
            // A real campaign id: a date, a time and a counter.
            "campaign": {"id": "20261130-020439-1"},
            "nodes": [
                {"node": "cmp01", "step": "failed", "note": "patch on cmp01 failed"},
                {"node": "cmp02", "step": "done", "note": ""},
            ]
        });
        judge(&mut r, &logs, Some(&status), None);
        assert_eq!(r.patched_twice.len(), 1);
        assert_eq!(
            r.failed_unexpected,
            [("cmp01".to_owned(), "patch on NODE failed".to_owned())]
        );
        assert_eq!(r.done_without_work.len(), 1, "cmp02 done, never patched");
        assert_eq!(r.left_drained.len(), 2);
        assert!(r.left_drained.iter().all(|(_, said)| !said));
        // A flag that is false says nothing; a note or a true flag does.
        assert!(!says_drained(&serde_json::json!({"left_drained": false})));
        assert!(says_drained(&serde_json::json!({"left_drained": true})));
        assert!(!says_drained(&serde_json::json!({"left_drained": null})));
        assert!(!says_drained(&serde_json::json!({"left_drained": ""})));
        // Seed 1005: the server names the hook that undoes it.
        assert!(says_drained(
            &serde_json::json!({"left_drained": "nova-undrain", "note": "wait-return did not finish"})
        ));
        assert!(says_drained(
            &serde_json::json!({"note": "failed at patch; left drained (nova-undrain undoes it)"})
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
