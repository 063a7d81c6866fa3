//! The fleet-wide blast-radius guard, as a pure decision over one look at
//! the fleet's bad containers (`fleet::BadContainers`).
//!
//! A campaign judges each node it patches by that node's own containers.
//! What that misses is the harm one node's maintenance does to another:
//! after a controller reboots, nova-compute on computes the campaign never
//! touched may not reconnect to RabbitMQ, and kolla's `nova_compute` health
//! check turns unhealthy. While a campaign runs, a container that is
//! unhealthy or stopped on a node the campaign is not working on, that was
//! not already so when the campaign started, and that stays so for
//! `blast_radius_secs`, is an *impact*: with `blast_radius = "pause"` the
//! campaign pauses, naming the container, its node and what the campaign
//! was doing when it turned bad; with `"budget"` it counts as one failure
//! against the error budget, once per node and container.
//!
//! The rules:
//! 1. Only a running campaign is judged: a paused one already holds, and a
//!    cancelled one starts nothing more (the runner forgets the clocks).
//! 2. A node the campaign works on is not judged: one in an active step,
//!    one whose undrain an operator asked for, and one that failed here
//!    (its failure already counts against the budget).
//! 3. The baseline: what was bad at start is not judged, until it is seen
//!    well; then it leaves the baseline, and a later fall counts.
//! 4. A node whose containers are unknown now (offline, its engine
//!    unreachable, past the look's cut) is not judged, and its clocks are
//!    dropped (what an offline node last said may be stale): a container
//!    still bad when it is known again starts its clock from zero.
//! 5. A node that was unknown at start: what is bad on it when it is first
//!    seen joins the baseline (it was not seen going bad).
//! 6. A clock per node and container starts at the first look that sees it
//!    bad and stops when it is seen well. The clocks live in the runner's
//!    memory only: a restarted server starts them again, which at worst
//!    waits `blast_radius_secs` once more. The runner drops a campaign's
//!    clocks whenever its phase changes (pause, resume, cancel) and when
//!    the store writes again after an outage: no look ran in between, so a
//!    clock kept across would count the hold as time seen bad.
//! 7. Resuming a campaign accepts every impact so far: it stops counting
//!    against the budget, and its container joins the baseline (judged
//!    again once seen well).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rollcall_proto::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

use super::lifecycle::Step;
use super::record::NodeRun;
use super::spec::{BlastRadius, CampaignSpec};
use crate::fleet::BadContainers;

/// What the guard keeps with the campaign, in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blast {
    /// Containers bad when the campaign started (or when their node was
    /// first seen), by node: not judged until seen well.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baseline: BTreeMap<String, BTreeSet<String>>,
    /// Nodes whose containers were unknown at start (offline, engine
    /// unreachable) and have not been seen since.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unseen: BTreeSet<String>,
    /// Every impact found, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub impacts: Vec<Impact>,
}

/// A container hurt while the campaign worked elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impact {
    pub node: String,
    pub container: String,
    /// `unhealthy`, or the state it stopped in (`exited`, `dead`,
    /// `restarting`), when it became an impact.
    pub what: String,
    /// When the server first saw it bad.
    pub began_at: Timestamp,
    /// When it had been bad for `blast_radius_secs`.
    pub at: Timestamp,
    /// What the campaign was doing when it began: `while ctl1 was in patch`.
    pub during: String,
    /// An operator resumed the campaign past it: it no longer counts
    /// against the error budget.
    #[serde(default)]
    pub accepted: bool,
}

impl Impact {
    /// `container nova_compute on cmp3 unhealthy for 120s (began while ctl1 was in patch)`.
    pub fn describe(&self) -> String {
        format!(
            "container {} on {} {} for {}s (began {})",
            self.container,
            self.node,
            self.what,
            self.at.since(self.began_at).as_secs(),
            self.during
        )
    }
}

/// How many names a line of the audit lists before `and N more`.
const NAMES_IN_A_LINE: usize = 10;

impl Blast {
    pub fn is_empty(&self) -> bool {
        self.baseline.is_empty() && self.unseen.is_empty() && self.impacts.is_empty()
    }

    /// What a campaign that starts now takes as it is: every container bad
    /// in `look`, and every node `look` knows nothing about. The runner
    /// asks for this look uncut.
    pub fn at_start(look: &BadContainers) -> Blast {
        let mut baseline: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for b in &look.items {
            baseline
                .entry(b.node.clone())
                .or_default()
                .insert(b.name.clone());
        }
        Blast {
            baseline,
            unseen: look.unknown.clone(),
            impacts: Vec::new(),
        }
    }

    /// The audit line of the start, when there is something to say.
    pub fn baseline_line(&self) -> Option<String> {
        let bad: Vec<String> = self
            .baseline
            .iter()
            .flat_map(|(node, cs)| cs.iter().map(move |c| format!("{node}/{c}")))
            .collect();
        let mut parts = Vec::new();
        if !bad.is_empty() {
            parts.push(format!(
                "{} container(s) already unhealthy or stopped are not watched until seen well: {}",
                bad.len(),
                some_of(&bad)
            ));
        }
        if !self.unseen.is_empty() {
            let unseen: Vec<String> = self.unseen.iter().cloned().collect();
            parts.push(format!(
                "{} node(s) whose containers are unknown (offline or engine unreachable), whose bad containers when first seen are taken as they are: {}",
                unseen.len(),
                some_of(&unseen)
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// An operator resumed the campaign: every impact so far is accepted
    /// and its container joins the baseline. Returns the `node/container`
    /// of the impacts accepted now.
    pub fn accept(&mut self) -> Vec<String> {
        let mut accepted = Vec::new();
        for i in self.impacts.iter_mut().filter(|i| !i.accepted) {
            i.accepted = true;
            self.baseline
                .entry(i.node.clone())
                .or_default()
                .insert(i.container.clone());
            accepted.push(format!("{}/{}", i.node, i.container));
        }
        accepted
    }

    /// The impacts that count against the error budget (with `"budget"`).
    pub fn counted(&self) -> usize {
        self.impacts.iter().filter(|i| !i.accepted).count()
    }

    fn in_baseline(&self, node: &str, container: &str) -> bool {
        self.baseline
            .get(node)
            .is_some_and(|cs| cs.contains(container))
    }
}

/// `a, b, c and 4 more`.
fn some_of(names: &[String]) -> String {
    let shown = names[..names.len().min(NAMES_IN_A_LINE)].join(", ");
    match names.len().saturating_sub(NAMES_IN_A_LINE) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// When a container was first seen bad, and what the campaign was doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clock {
    pub since: Timestamp,
    pub during: String,
}

/// One clock per (node, container) seen bad and judged.
pub type Clocks = BTreeMap<(String, String), Clock>;

/// What one look decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The clocks to keep until the next look.
    pub clocks: Clocks,
    /// The guard's record as it must be stored now, if it changed.
    pub blast: Option<Blast>,
    /// The impacts found by this look (in `blast` too): one audit line each.
    pub impacts: Vec<Impact>,
    /// Pause the campaign, for this reason.
    pub pause: Option<String>,
}

/// Judges one look at the fleet (`look`) for a running campaign: its
/// spec, its stored record `blast`, its runs, and the clocks of the last
/// look.
pub fn judge(
    spec: &CampaignSpec,
    blast: &Blast,
    runs: &BTreeMap<String, NodeRun>,
    look: &BadContainers,
    clocks: &Clocks,
    now: Timestamp,
) -> Verdict {
    let mut next = blast.clone();
    let bad_now: BTreeSet<(&str, &str)> = look
        .items
        .iter()
        .map(|b| (b.node.as_str(), b.name.as_str()))
        .collect();
    // Rule 3: seen well, it leaves the baseline.
    next.baseline.retain(|node, containers| {
        if look.knows(node) {
            containers.retain(|c| bad_now.contains(&(node.as_str(), c.as_str())));
        }
        !containers.is_empty()
    });
    // Rule 5: first seen now, taken as it is.
    let seen: Vec<String> = next
        .unseen
        .iter()
        .filter(|n| look.knows(n))
        .cloned()
        .collect();
    for node in seen {
        next.unseen.remove(&node);
        for b in look.items.iter().filter(|b| b.node == node) {
            next.baseline
                .entry(node.clone())
                .or_default()
                .insert(b.name.clone());
        }
    }
    let limit = Duration::from_secs(spec.blast_radius_secs);
    let mut during = None;
    let mut kept = Clocks::new();
    let mut found = Vec::new();
    for b in &look.items {
        // Counted once while it stays counted; an accepted impact is in
        // the baseline until seen well, and a fall after that is new.
        let counted_once = spec.blast_radius == BlastRadius::Budget
            && blast
                .impacts
                .iter()
                .any(|i| !i.accepted && i.node == b.node && i.container == b.name);
        if next.in_baseline(&b.node, &b.name) || worked_on(runs, &b.node) || counted_once {
            continue;
        }
        let key = (b.node.clone(), b.name.clone());
        let clock = clocks.get(&key).cloned().unwrap_or_else(|| Clock {
            since: now,
            during: during.get_or_insert_with(|| doing(runs, now)).clone(),
        });
        if now.since(clock.since) >= limit {
            found.push(Impact {
                node: b.node.clone(),
                container: b.name.clone(),
                what: b.what().to_owned(),
                began_at: clock.since,
                at: now,
                during: clock.during.clone(),
                accepted: false,
            });
        }
        // Kept past its impact too: should the impact not be stored, the
        // next look finds it again at once.
        kept.insert(key, clock);
    }
    next.impacts.extend(found.iter().cloned());
    let pause = match spec.blast_radius {
        BlastRadius::Pause => found.first().map(|first| {
            let more = match found.len() - 1 {
                0 => String::new(),
                n => format!(", and {n} more impact(s) (see the audit)"),
            };
            format!(
                "blast radius: {}{more}; resume when the cloud is whole",
                first.describe()
            )
        }),
        BlastRadius::Budget => over_budget(spec, runs, &next),
    };
    Verdict {
        clocks: kept,
        blast: (next != *blast).then_some(next),
        impacts: found,
        pause,
    }
}

/// Rule 2: the campaign works on this node, or failed it.
fn worked_on(runs: &BTreeMap<String, NodeRun>, node: &str) -> bool {
    runs.get(node)
        .is_some_and(|r| r.step.is_active() || r.step == Step::Failed || r.undrain.is_some())
}

/// With impacts counted, whether failed nodes and impacts together exceed
/// the error budget (the budget as `schedule::next_steps` counts it: a
/// share of every node of the campaign).
fn over_budget(
    spec: &CampaignSpec,
    runs: &BTreeMap<String, NodeRun>,
    blast: &Blast,
) -> Option<String> {
    let counted = blast.counted();
    if counted == 0 {
        // Failures alone are `next_steps`'s to judge.
        return None;
    }
    let failed = runs
        .values()
        .filter(|r| r.step == Step::Failed && !r.failure_accepted)
        .count();
    let budget = spec.error_budget.of(runs.len());
    (failed + counted > budget).then(|| {
        format!(
            "error budget exhausted: {failed} node(s) failed and {counted} blast-radius impact(s) counted, the budget allows {budget}"
        )
    })
}

/// What the campaign is doing now, said as when an impact began:
/// `while ctl1 was in patch`, `12s after ctl1 finished`.
fn doing(runs: &BTreeMap<String, NodeRun>, now: Timestamp) -> String {
    let active: Vec<&NodeRun> = runs.values().filter(|r| r.step.is_active()).collect();
    match active.as_slice() {
        [] => {
            let last = runs
                .values()
                .filter(|r| matches!(r.step, Step::Done | Step::Failed))
                .filter_map(|r| r.finished_at.map(|at| (at, r.node.as_str())))
                .max();
            match last {
                Some((at, node)) => format!("{}s after {node} finished", now.since(at).as_secs()),
                None => "before any node started".to_owned(),
            }
        }
        [one] => format!("while {} was in {}", one.node, one.step),
        many => {
            let named: Vec<String> = many
                .iter()
                .take(3)
                .map(|r| format!("{} ({})", r.node, r.step))
                .collect();
            let more = match many.len().saturating_sub(3) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            format!("while {}{more} were in maintenance", named.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::fixtures::t;
    use crate::campaign::spec::Amount;
    use crate::fleet::BadContainer;
    use rollcall_proto::model::{ContainerHealth, ContainerState, Role};

    fn spec(mode: BlastRadius, secs: u64) -> CampaignSpec {
        CampaignSpec {
            blast_radius: mode,
            blast_radius_secs: secs,
            ..CampaignSpec::default()
        }
    }

    fn runs(steps: &[(&str, Step)]) -> BTreeMap<String, NodeRun> {
        steps
            .iter()
            .map(|(name, step)| {
                let mut r = NodeRun::new((*name).into(), Role::Controller, t(0));
                r.enter(*step, t(1));
                ((*name).to_owned(), r)
            })
            .collect()
    }

    fn unhealthy(node: &str, name: &str) -> BadContainer {
        BadContainer {
            node: node.into(),
            name: name.into(),
            state: ContainerState::Running,
            health: ContainerHealth::Unhealthy,
        }
    }

    fn look(items: Vec<BadContainer>) -> BadContainers {
        BadContainers {
            items,
            ..BadContainers::default()
        }
    }

    /// Judges the same look every second from `from` to `to`, as passes
    /// would, carrying the clocks and storing what changes; returns the
    /// last verdict and the record.
    fn passes(
        spec: &CampaignSpec,
        blast: &Blast,
        runs: &BTreeMap<String, NodeRun>,
        look: &BadContainers,
        clocks: &mut Clocks,
        from: i64,
        to: i64,
    ) -> (Verdict, Blast) {
        let mut blast = blast.clone();
        let mut last = Verdict::default();
        for s in from..=to {
            last = judge(spec, &blast, runs, look, clocks, t(s));
            clocks.clone_from(&last.clocks);
            if let Some(b) = &last.blast {
                blast = b.clone();
            }
        }
        (last, blast)
    }

    #[test]
    fn a_container_bad_for_blast_radius_secs_elsewhere_pauses_with_who_and_during_what() {
        let spec = spec(BlastRadius::Pause, 120);
        let runs = runs(&[("ctl1", Step::Patch), ("ctl2", Step::Pending)]);
        let look = look(vec![unhealthy("cmp3", "nova_compute")]);
        let mut clocks = Clocks::new();
        let first = judge(&spec, &Blast::default(), &runs, &look, &clocks, t(10));
        assert_eq!((first.pause.as_ref(), first.blast.as_ref()), (None, None));
        clocks = first.clocks;
        let early = judge(&spec, &Blast::default(), &runs, &look, &clocks, t(129));
        assert_eq!(early.pause, None, "119 s is not yet 120 s");
        let v = judge(&spec, &Blast::default(), &runs, &look, &clocks, t(130));
        assert_eq!(
            v.pause.as_deref(),
            Some(
                "blast radius: container nova_compute on cmp3 unhealthy for 120s (began while ctl1 was in patch); resume when the cloud is whole"
            )
        );
        let stored = v.blast.expect("the impact is stored");
        assert_eq!(stored.impacts, v.impacts);
        assert_eq!(
            (
                v.impacts[0].began_at,
                v.impacts[0].at,
                v.impacts[0].accepted
            ),
            (t(10), t(130), false)
        );
    }

    #[test]
    fn what_was_bad_at_start_is_not_judged_until_seen_well() {
        let spec = spec(BlastRadius::Pause, 5);
        let runs = runs(&[("ctl1", Step::Patch)]);
        let start = Blast::at_start(&look(vec![unhealthy("cmp3", "nova_compute")]));
        assert_eq!(
            start.baseline_line().as_deref(),
            Some(
                "1 container(s) already unhealthy or stopped are not watched until seen well: cmp3/nova_compute"
            )
        );
        let still = look(vec![unhealthy("cmp3", "nova_compute")]);
        let mut clocks = Clocks::new();
        let (v, blast) = passes(&spec, &start, &runs, &still, &mut clocks, 0, 60);
        assert_eq!((v.pause, &blast), (None, &start));
        assert!(clocks.is_empty());
        // Seen well: it leaves the baseline, and falling again counts.
        let (v, blast) = passes(&spec, &blast, &runs, &look(vec![]), &mut clocks, 61, 61);
        assert!(v.blast.is_some() && blast.baseline.is_empty());
        let (v, _) = passes(&spec, &blast, &runs, &still, &mut clocks, 62, 67);
        assert!(v.pause.is_some(), "fell again after it was seen well");
    }

    #[test]
    fn nodes_the_campaign_works_on_or_failed_are_not_judged() {
        let spec = spec(BlastRadius::Pause, 5);
        let runs = runs(&[
            ("ctl1", Step::Reboot),
            ("ctl2", Step::Failed),
            ("ctl3", Step::Done),
        ]);
        let look = look(vec![
            unhealthy("ctl1", "mariadb"),
            unhealthy("ctl2", "rabbitmq"),
            unhealthy("ctl3", "keystone"),
        ]);
        let mut clocks = Clocks::new();
        let (v, blast) = passes(&spec, &Blast::default(), &runs, &look, &mut clocks, 0, 5);
        let hit: Vec<&str> = blast.impacts.iter().map(|i| i.node.as_str()).collect();
        assert_eq!(hit, ["ctl3"], "a node done is judged like any other");
        assert!(v.pause.is_some_and(|p| p.contains("keystone on ctl3")));
    }

    #[test]
    fn recovering_before_the_time_resets_the_clock() {
        let spec = spec(BlastRadius::Pause, 10);
        let runs = runs(&[("ctl1", Step::Patch)]);
        let bad = look(vec![unhealthy("cmp3", "nova_compute")]);
        let mut clocks = Clocks::new();
        let (v, _) = passes(&spec, &Blast::default(), &runs, &bad, &mut clocks, 0, 9);
        assert_eq!(v.pause, None);
        let (v, _) = passes(
            &spec,
            &Blast::default(),
            &runs,
            &look(vec![]),
            &mut clocks,
            10,
            10,
        );
        assert!(v.clocks.is_empty() && v.pause.is_none());
        let (v, _) = passes(&spec, &Blast::default(), &runs, &bad, &mut clocks, 11, 20);
        assert_eq!(v.pause, None, "9 s since it fell again");
        let (v, _) = passes(&spec, &Blast::default(), &runs, &bad, &mut clocks, 21, 21);
        assert_eq!(v.impacts[0].began_at, t(11));
    }

    #[test]
    fn an_unknown_node_drops_its_clocks_and_one_unseen_at_start_is_taken_as_it_is() {
        let spec = spec(BlastRadius::Pause, 10);
        let runs = runs(&[("ctl1", Step::Patch)]);
        let bad = look(vec![unhealthy("cmp3", "nova_compute")]);
        let mut offline = look(vec![]);
        offline.unknown.insert("cmp3".into());
        let mut clocks = Clocks::new();
        passes(&spec, &Blast::default(), &runs, &bad, &mut clocks, 0, 8);
        let (v, _) = passes(&spec, &Blast::default(), &runs, &offline, &mut clocks, 9, 9);
        assert!(v.clocks.is_empty(), "offline: its containers are unknown");
        let (v, _) = passes(&spec, &Blast::default(), &runs, &bad, &mut clocks, 10, 10);
        let key = ("cmp3".to_owned(), "nova_compute".to_owned());
        assert_eq!(
            v.clocks[&key].since,
            t(10),
            "back: its clock starts from zero"
        );
        clocks.clear();
        // Offline at start: what it shows when it comes back is taken as
        // it is, and is judged again once seen well.
        let start = Blast::at_start(&offline);
        assert!(
            start
                .baseline_line()
                .is_some_and(|l| l.contains("1 node(s)"))
        );
        let (v, blast) = passes(&spec, &start, &runs, &bad, &mut clocks, 10, 40);
        assert_eq!(v.pause, None);
        assert!(blast.unseen.is_empty() && blast.in_baseline("cmp3", "nova_compute"));
        // Past the cut of a look, nothing is known either.
        let mut cut = look(vec![]);
        cut.cut = Some("cmp3".into());
        let (_, after_cut) = passes(&spec, &blast, &runs, &cut, &mut clocks, 41, 41);
        assert!(after_cut.in_baseline("cmp3", "nova_compute"));
    }

    #[test]
    fn with_a_budget_an_impact_counts_once_and_pauses_only_past_the_budget() {
        let mut spec = spec(BlastRadius::Budget, 5);
        spec.error_budget = Amount::Count(1);
        let runs = runs(&[("ctl1", Step::Patch), ("ctl2", Step::Pending)]);
        let bad = look(vec![unhealthy("cmp3", "nova_compute")]);
        let mut clocks = Clocks::new();
        let (v, blast) = passes(&spec, &Blast::default(), &runs, &bad, &mut clocks, 0, 5);
        assert_eq!((v.impacts.len(), v.pause.as_ref()), (1, None));
        let (_, blast) = passes(&spec, &blast, &runs, &bad, &mut clocks, 6, 60);
        assert_eq!(blast.impacts.len(), 1, "once per node and container");
        // A second container, elsewhere: past the budget of one.
        let two = look(vec![
            unhealthy("cmp3", "nova_compute"),
            unhealthy("cmp4", "nova_compute"),
        ]);
        let (v, blast) = passes(&spec, &blast, &runs, &two, &mut clocks, 61, 66);
        assert_eq!(
            v.pause.as_deref(),
            Some(
                "error budget exhausted: 0 node(s) failed and 2 blast-radius impact(s) counted, the budget allows 1"
            )
        );
        // Resumed: accepted, no longer counted, and not judged while bad.
        let mut resumed = blast.clone();
        assert_eq!(resumed.accept(), ["cmp3/nova_compute", "cmp4/nova_compute"]);
        assert!(resumed.accept().is_empty(), "accepted once");
        let (v, after) = passes(&spec, &resumed, &runs, &two, &mut clocks, 67, 90);
        assert_eq!((v.pause, after.counted()), (None, 0));
        // A failed node and a counted impact add up.
        spec.error_budget = Amount::Count(0);
        let mut failed = runs.clone();
        failed
            .get_mut("ctl2")
            .expect("ctl2")
            .enter(Step::Failed, t(91));
        let (v, _) = passes(&spec, &blast, &failed, &two, &mut clocks, 91, 91);
        assert!(
            v.pause
                .is_some_and(|p| p.contains("1 node(s) failed and 2"))
        );
    }

    #[test]
    fn with_a_budget_an_accepted_impact_seen_well_then_bad_again_counts_again() {
        let mut spec = spec(BlastRadius::Budget, 5);
        spec.error_budget = Amount::Count(1);
        let runs = runs(&[("ctl1", Step::Patch), ("ctl2", Step::Pending)]);
        let bad = look(vec![unhealthy("cmp3", "nova_compute")]);
        let mut clocks = Clocks::new();
        let (_, mut blast) = passes(&spec, &Blast::default(), &runs, &bad, &mut clocks, 0, 5);
        assert_eq!(blast.accept(), ["cmp3/nova_compute"]);
        // Seen well after the resume: it leaves the baseline.
        let (_, blast) = passes(&spec, &blast, &runs, &look(vec![]), &mut clocks, 6, 6);
        assert!(blast.baseline.is_empty() && blast.counted() == 0);
        // Bad again for blast_radius_secs: judged again, and counted.
        let (v, blast) = passes(&spec, &blast, &runs, &bad, &mut clocks, 7, 12);
        assert_eq!(v.impacts.len(), 1, "a new fall is a new impact");
        assert_eq!((blast.impacts.len(), blast.counted()), (2, 1));
        assert_eq!(blast.impacts[1].began_at, t(7));
    }

    #[test]
    fn pause_mode_names_more_impacts_and_when_nothing_was_in_flight() {
        let spec = spec(BlastRadius::Pause, 5);
        let mut runs = runs(&[("ctl1", Step::Done), ("ctl2", Step::Pending)]);
        runs.get_mut("ctl1").expect("ctl1").finished_at = Some(t(0));
        let two = look(vec![
            unhealthy("cmp3", "nova_compute"),
            BadContainer {
                state: ContainerState::Exited,
                ..unhealthy("cmp4", "nova_compute")
            },
        ]);
        let mut clocks = Clocks::new();
        let (v, _) = passes(&spec, &Blast::default(), &runs, &two, &mut clocks, 30, 35);
        assert_eq!(
            v.pause.as_deref(),
            Some(
                "blast radius: container nova_compute on cmp3 unhealthy for 5s (began 30s after ctl1 finished), and 1 more impact(s) (see the audit); resume when the cloud is whole"
            )
        );
        assert_eq!(v.impacts[1].what, "exited");
        let fresh = self::runs(&[("ctl1", Step::Pending)]);
        assert_eq!(doing(&fresh, t(0)), "before any node started");
        let busy = self::runs(&[
            ("a", Step::Patch),
            ("b", Step::Drain),
            ("c", Step::Reboot),
            ("d", Step::Patch),
        ]);
        assert_eq!(
            doing(&busy, t(0)),
            "while a (patch), b (drain), c (reboot) and 1 more were in maintenance"
        );
    }

    #[test]
    fn the_record_reads_back_and_stays_out_of_json_when_empty() {
        let start = Blast::at_start(&look(vec![unhealthy("cmp3", "nova_compute")]));
        let json = serde_json::to_string(&start).expect("json");
        assert_eq!(json, r#"{"baseline":{"cmp3":["nova_compute"]}}"#);
        assert_eq!(serde_json::from_str::<Blast>(&json).expect("reads"), start);
        assert_eq!(
            serde_json::from_str::<Blast>("{}").expect("reads"),
            Blast::default()
        );
    }
}
