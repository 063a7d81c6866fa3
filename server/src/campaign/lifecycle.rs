//! One node's way through a campaign: a state machine with a timeout per
//! state. The scheduler persists the state before it acts on it, so a
//! restarted server picks each node up where it was.
//!
//! Every move goes through [`Step::on`] (by way of `NodeRun::on`): the
//! scheduler starting a node, `drive` moving it on, an operator's retry or
//! cancel. Nothing else changes a node's step, so the graph below, which
//! the property tests walk, is the one production follows.
//!
//! ```text
//! pending ─start→ precheck ─→ [gate-before] → drain → patch ─(reboot)→ reboot → wait-return → postcheck → [gate-after] → undrain → done
//!   │  ▲             │              │                    │                ▲           │            ▲
//!   │  └guard blocked┴──────────────┘                    │                └reboot lost┘            │
//!   └─skip→ skipped                                      └───────────────(no reboot)───────────────┘
//! any active step ─(failed, timed out)→ failed ─retry→ pending
//! drain … gate-after ─(failed, with undrain_on_failure)→ undrain ─(failed)→ failed
//! ```
//! Unlabelled arrows are `succeeded`. The gate steps are taken only when the
//! node's role has such a gate (`Facts::gate_before`, `Facts::gate_after`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::{RebootPolicy, Timeouts};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Pending,
    Precheck,
    Drain,
    Patch,
    Reboot,
    WaitReturn,
    Postcheck,
    Undrain,
    Done,
    Failed,
    Skipped,
    /// The role's before gate: the cluster can spare this node.
    GateBefore,
    /// The role's after gate: the cluster is whole again.
    GateAfter,
}

/// What happened to a node in its step: with [`Facts`], all that decides
/// where it goes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The scheduler starts a pending node.
    Start,
    /// The step's work is done.
    Succeeded,
    /// The step's action failed, or what it checks cannot be met.
    Failed,
    /// The step ran past its timeout.
    TimedOut,
    /// The node came back under the boot it had, and its agent never got
    /// the reboot (lost with the connection that dropped): ask again.
    Lost,
    /// A guard cannot be met (a controller failed in this campaign, or the
    /// before gate did not pass in time): nothing was done to the node yet,
    /// so it waits in pending.
    GuardBlocked,
    /// The node failed while drained, and the spec says
    /// `undrain_on_failure`: it is undrained before it ends failed.
    UndrainOnFailure,
    /// An operator resumes the campaign with `retry_failed`.
    Retry,
    /// The node is not to be patched: left out at the start, or its
    /// campaign was cancelled before it started.
    Skip,
}

impl Event {
    pub const ALL: [Event; 9] = [
        Event::Start,
        Event::Succeeded,
        Event::Failed,
        Event::TimedOut,
        Event::Lost,
        Event::GuardBlocked,
        Event::UndrainOnFailure,
        Event::Retry,
        Event::Skip,
    ];
}

/// What the last step found out, and the rule that reads it, to pick the
/// step after a patch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub reboot: RebootPolicy,
    /// The node reported reboot-required after its patch.
    pub reboot_required: bool,
    /// The node's role has a before gate.
    pub gate_before: bool,
    /// The node's role has an after gate.
    pub gate_after: bool,
}

impl Facts {
    fn reboots(self) -> bool {
        match self.reboot {
            RebootPolicy::Always => true,
            RebootPolicy::Never => false,
            RebootPolicy::IfRequired => self.reboot_required,
        }
    }
}

impl Step {
    /// In the order a node goes through them (the graph's tests rely on it).
    pub const ALL: [Step; 13] = [
        Step::Pending,
        Step::Precheck,
        Step::GateBefore,
        Step::Drain,
        Step::Patch,
        Step::Reboot,
        Step::WaitReturn,
        Step::Postcheck,
        Step::GateAfter,
        Step::Undrain,
        Step::Done,
        Step::Failed,
        Step::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Pending => "pending",
            Step::Precheck => "precheck",
            Step::Drain => "drain",
            Step::Patch => "patch",
            Step::Reboot => "reboot",
            Step::WaitReturn => "wait-return",
            Step::Postcheck => "postcheck",
            Step::Undrain => "undrain",
            Step::Done => "done",
            Step::Failed => "failed",
            Step::Skipped => "skipped",
            Step::GateBefore => "gate-before",
            Step::GateAfter => "gate-after",
        }
    }

    /// The gate this step runs, if it is a gate step.
    pub fn gate(self) -> Option<super::spec::GatePhase> {
        match self {
            Step::GateBefore => Some(super::spec::GatePhase::Before),
            Step::GateAfter => Some(super::spec::GatePhase::After),
            _ => None,
        }
    }

    /// A node in one of these steps is (or may be) unavailable to the cloud.
    pub fn is_active(self) -> bool {
        !matches!(
            self,
            Step::Pending | Step::Done | Step::Failed | Step::Skipped
        )
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Step::Done | Step::Failed | Step::Skipped)
    }

    /// Whether a node in this step may be drained: its drain hook was
    /// asked (`drain_asked`, in the drain step) or it is past its drain.
    pub fn may_be_drained(self, drain_asked: bool) -> bool {
        match self {
            Step::Drain => drain_asked,
            Step::Patch
            | Step::Reboot
            | Step::WaitReturn
            | Step::Postcheck
            | Step::GateAfter
            | Step::Undrain => true,
            Step::Pending
            | Step::Precheck
            | Step::GateBefore
            | Step::Done
            | Step::Failed
            | Step::Skipped => false,
        }
    }

    /// The step graph: where a node in this step goes on `event`. An event
    /// that does not apply to the step leaves the node where it is.
    pub fn on(self, event: Event, facts: Facts) -> Step {
        use Step::*;
        match (self, event) {
            (Pending, Event::Start) => Precheck,
            (Pending, Event::Skip) => Skipped,
            (Precheck | GateBefore, Event::GuardBlocked) => Pending,
            (Failed, Event::Retry) => Pending,
            (Precheck, Event::Succeeded) if facts.gate_before => GateBefore,
            (Precheck | GateBefore, Event::Succeeded) => Drain,
            (Drain, Event::Succeeded) => Patch,
            (Patch, Event::Succeeded) if facts.reboots() => Reboot,
            (Patch, Event::Succeeded) => Postcheck,
            (Reboot, Event::Succeeded) => WaitReturn,
            (WaitReturn, Event::Succeeded) => Postcheck,
            (WaitReturn, Event::Lost) => Reboot,
            (Postcheck, Event::Succeeded) if facts.gate_after => GateAfter,
            (Postcheck | GateAfter, Event::Succeeded) => Undrain,
            (Undrain, Event::Succeeded) => Done,
            (
                Drain | Patch | Reboot | WaitReturn | Postcheck | GateAfter,
                Event::UndrainOnFailure,
            ) => Undrain,
            // Its own undrain failed: nothing is left to undo the drain with.
            (Undrain, Event::UndrainOnFailure) => Failed,
            (step, Event::Failed | Event::TimedOut) if step.is_active() => Failed,
            (step, _) => step,
        }
    }

    /// How long a node may stay in this step before it fails.
    pub fn timeout(self, t: &Timeouts) -> Option<Duration> {
        let secs = match self {
            Step::Precheck => t.precheck_secs,
            Step::Drain => t.drain_secs,
            Step::Patch => t.patch_secs,
            Step::Reboot => t.reboot_secs,
            Step::WaitReturn => t.return_secs,
            Step::Postcheck => t.postcheck_secs,
            Step::Undrain => t.undrain_secs,
            Step::GateBefore | Step::GateAfter => t.gate_secs,
            Step::Pending | Step::Done | Step::Failed | Step::Skipped => return None,
        };
        Some(Duration::from_secs(secs))
    }

    /// Whether `elapsed` in this step is past its timeout.
    pub fn timed_out(self, t: &Timeouts, elapsed: Duration) -> bool {
        self.timeout(t).is_some_and(|limit| elapsed > limit)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Step {
    type Err = rollcall_proto::names::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        rollcall_proto::names::parse("step", s, &Step::ALL, Step::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_facts() -> Vec<Facts> {
        let mut all = Vec::new();
        for reboot in [
            RebootPolicy::IfRequired,
            RebootPolicy::Always,
            RebootPolicy::Never,
        ] {
            for reboot_required in [false, true] {
                for (gate_before, gate_after) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    all.push(Facts {
                        reboot,
                        reboot_required,
                        gate_before,
                        gate_after,
                    });
                }
            }
        }
        all
    }

    fn walk(reboot: RebootPolicy, reboot_required: bool) -> Vec<Step> {
        walk_with(Facts {
            reboot,
            reboot_required,
            ..Facts::default()
        })
    }

    fn walk_with(facts: Facts) -> Vec<Step> {
        let mut steps = vec![Step::Pending];
        let mut s = Step::Pending.on(Event::Start, facts);
        while !s.is_terminal() {
            steps.push(s);
            s = s.on(Event::Succeeded, facts);
        }
        steps.push(s);
        steps
    }

    #[test]
    fn the_path_follows_the_reboot_policy() {
        use Step::*;
        let full = [
            Pending, Precheck, Drain, Patch, Reboot, WaitReturn, Postcheck, Undrain, Done,
        ];
        let no_reboot = [Pending, Precheck, Drain, Patch, Postcheck, Undrain, Done];
        assert_eq!(walk(RebootPolicy::IfRequired, true), full);
        assert_eq!(walk(RebootPolicy::IfRequired, false), no_reboot);
        assert_eq!(walk(RebootPolicy::Always, false), full);
        assert_eq!(walk(RebootPolicy::Never, true), no_reboot);
    }

    #[test]
    fn gate_steps_are_taken_only_where_the_role_has_a_gate() {
        use Step::*;
        let gated = walk_with(Facts {
            reboot: RebootPolicy::Never,
            gate_before: true,
            gate_after: true,
            ..Facts::default()
        });
        assert_eq!(
            gated,
            [
                Pending, Precheck, GateBefore, Drain, Patch, Postcheck, GateAfter, Undrain, Done
            ]
        );
        let after_only = walk_with(Facts {
            reboot: RebootPolicy::Always,
            gate_after: true,
            ..Facts::default()
        });
        assert!(!after_only.contains(&GateBefore) && after_only.contains(&GateAfter));
        let f = Facts::default();
        // A before gate that never passed: nothing was done, back to pending.
        assert_eq!(GateBefore.on(Event::GuardBlocked, f), Pending);
        // An after gate that fails leaves a drained node: it may be undrained.
        assert_eq!(GateAfter.on(Event::UndrainOnFailure, f), Undrain);
        assert_eq!(GateBefore.on(Event::UndrainOnFailure, f), GateBefore);
        assert!(GateAfter.may_be_drained(false) && !GateBefore.may_be_drained(true));
    }

    #[test]
    fn the_ways_off_the_path() {
        let f = Facts::default();
        assert_eq!(Step::WaitReturn.on(Event::Lost, f), Step::Reboot);
        assert_eq!(Step::Precheck.on(Event::GuardBlocked, f), Step::Pending);
        assert_eq!(Step::Pending.on(Event::Skip, f), Step::Skipped);
        assert_eq!(Step::Failed.on(Event::Retry, f), Step::Pending);
        assert_eq!(Step::Patch.on(Event::UndrainOnFailure, f), Step::Undrain);
        assert_eq!(Step::Undrain.on(Event::UndrainOnFailure, f), Step::Failed);
        // Not drained yet: nothing to undo.
        assert_eq!(
            Step::Precheck.on(Event::UndrainOnFailure, f),
            Step::Precheck
        );
    }

    /// Every step, every event, every fact: the graph's rules hold.
    #[test]
    fn property_the_graph_keeps_its_rules() {
        let rank = |s: Step| Step::ALL.iter().position(|x| *x == s).expect("a step");
        for facts in every_facts() {
            for from in Step::ALL {
                for event in Event::ALL {
                    let to = from.on(event, facts);
                    let moved = to != from;
                    // Ended is ended, but for a retry of a failed node.
                    if from.is_terminal() {
                        assert!(
                            !moved
                                || (from, event, to) == (Step::Failed, Event::Retry, Step::Pending),
                            "{from} moved on {event:?} to {to}"
                        );
                    }
                    // Every active step can fail, whatever failed.
                    if from.is_active() && matches!(event, Event::Failed | Event::TimedOut) {
                        assert_eq!(to, Step::Failed, "{from} on {event:?}");
                    }
                    // Only a pending node starts or is skipped.
                    if matches!(event, Event::Start | Event::Skip) {
                        assert_eq!(moved, from == Step::Pending, "{from} on {event:?}");
                    }
                    // Success always goes forward along the path.
                    if event == Event::Succeeded && moved {
                        assert!(rank(to) > rank(from), "{from} → {to} goes back");
                    }
                    // Back to pending only from what did nothing (precheck,
                    // the before gate) or what an operator retries.
                    if to == Step::Pending && moved {
                        assert!(
                            matches!(from, Step::Precheck | Step::GateBefore | Step::Failed),
                            "{from}"
                        );
                    }
                }
            }
        }
        // Every step is reached from pending, and every step can still end.
        let mut reached = vec![Step::Pending];
        let mut i = 0;
        while i < reached.len() {
            let from = reached[i];
            for facts in every_facts() {
                for event in Event::ALL {
                    let to = from.on(event, facts);
                    if !reached.contains(&to) {
                        reached.push(to);
                    }
                }
            }
            i += 1;
        }
        assert_eq!(reached.len(), Step::ALL.len(), "{reached:?}");
        for from in Step::ALL.iter().filter(|s| !s.is_terminal()) {
            assert!(
                from.on(Event::Failed, Facts::default()).is_terminal()
                    || from.on(Event::Skip, Facts::default()).is_terminal(),
                "{from} cannot end"
            );
        }
    }

    #[test]
    fn a_node_may_be_drained_from_its_drain_request_to_its_end() {
        assert!(!Step::Drain.may_be_drained(false));
        assert!(Step::Drain.may_be_drained(true));
        let every = walk_with(Facts {
            reboot: RebootPolicy::Always,
            gate_before: true,
            gate_after: true,
            ..Facts::default()
        });
        for s in every {
            let drained = s.may_be_drained(true);
            let between = s.is_active() && !matches!(s, Step::Precheck | Step::GateBefore);
            assert_eq!(drained, between, "{s}");
        }
    }

    #[test]
    fn every_active_step_has_a_timeout_and_terminal_ones_none() {
        let t = Timeouts::default();
        for s in Step::ALL {
            assert_eq!(s.timeout(&t).is_some(), s.is_active(), "{s:?}");
        }
        assert!(Step::Patch.timed_out(&t, Duration::from_secs(t.patch_secs + 1)));
        assert!(!Step::Patch.timed_out(&t, Duration::from_secs(t.patch_secs)));
        assert!(!Step::Failed.timed_out(&t, Duration::from_secs(u64::MAX / 2)));
    }

    #[test]
    fn names_read_back_and_are_the_stored_names() {
        // Today's words: in stores, action ids and scripts' --json.
        let names = [
            "pending",
            "precheck",
            "gate-before",
            "drain",
            "patch",
            "reboot",
            "wait-return",
            "postcheck",
            "gate-after",
            "undrain",
            "done",
            "failed",
            "skipped",
        ];
        for (step, name) in Step::ALL.into_iter().zip(names) {
            assert_eq!(step.as_str(), name);
            assert_eq!(name.parse::<Step>(), Ok(step));
            assert_eq!(
                serde_json::to_value(step).expect("json"),
                serde_json::Value::String(name.to_owned()),
            );
        }
        let e = "wait_return".parse::<Step>().expect_err("kebab-case only");
        assert_eq!((e.field, e.value.as_str()), ("step", "wait_return"));
        assert!(e.to_string().contains("wait-return"), "{e}");
    }
}
