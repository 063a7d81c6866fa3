//! A role's gates: cluster checks that the agents define as hooks, tried
//! before a node of the role is drained ("the cluster can spare one") and
//! after its postcheck, before its undrain ("the cluster is whole again").
//! Pure, like `drive`, which hands a node in a gate step to [`step`].

use std::time::Duration;

use rollcall_proto::model::{ActionKind, ActionState};
use rollcall_proto::timestamp::Timestamp;

use super::checks::precheck;
use super::control;
use super::drive::{
    Advance, Ctx, RESEND_AFTER, action_state, failure, hook_args, runner, send, succeeded,
};
use super::lifecycle::{Event, Facts, Step};
use super::record::{GateProgress, NodeRun, Phase};
use super::spec::GatePhase;

/// A gate step: the role's gate hooks, in order, each tried until it passes
/// or the step's timeout ends (`advance` decides what that means). A failed
/// try is tried again after `interval_secs`, under a new id. A hook the agent
/// does not define, or one that exits 2 (the gates' usage or configuration
/// error), is never tried again. A before gate that passed runs the precheck
/// again: it may have waited long, and the drain goes by what the node is
/// now (its boot id, its containers).
pub(super) fn step(run: &mut NodeRun, ctx: &Ctx<'_>, phase: GatePhase) -> Advance {
    let gates = ctx.spec.gates.get(&run.role);
    let hooks = ctx.spec.gate(run.role, phase);
    let progress = run.gate.get_or_insert_with(GateProgress::default);
    let Some(name) = hooks.get(progress.hook).cloned() else {
        return passed(run, ctx, phase);
    };
    if run.action_id.is_empty() {
        if let Some(at) = progress.next_at
            && ctx.now < at
        {
            let left = at.since(ctx.now).as_secs().max(1);
            return Advance::Wait(format!(
                "{phase} gate: {} (try {}); next try in {left}s",
                progress.last, progress.tries
            ));
        }
        let run_on = gates.map(|g| g.run_on).unwrap_or_default();
        let on = match runner(run_on, run, ctx.fleet, &name) {
            Ok(on) => on,
            Err(why) => return Advance::Wait(format!("{phase} gate: {why}")),
        };
        run.gate
            .as_mut()
            .expect("a gate step has its progress")
            .tries += 1;
        run.gate_tries += 1;
        let args = hook_args(run, &name);
        return send(run, ctx, ActionKind::Hook, &name, args, &on);
    }
    let tries = run.gate.as_ref().map_or(0, |g| g.tries);
    let outcome = match runner_lost(run, ctx) {
        Some(why) => Err((why, None)),
        None => match action_state(run, ctx, ActionKind::Hook, &name) {
            Ok(done) => Ok(done.node.clone()),
            // A failure is the try's, not the node's.
            Err(Advance::Failed) => match ctx.action {
                Some(a) if a.state == ActionState::Rejected || a.exit_code == Some(2) => {
                    let why = format!("{phase} gate: {}", cut(std::mem::take(&mut run.note)));
                    return refused(run, ctx, phase, why);
                }
                Some(a) => Err((cut(std::mem::take(&mut run.note)), Some(a))),
                None => return Advance::Wait(String::new()),
            },
            Err(Advance::Wait(_)) => {
                let last = run.gate.as_ref().map_or("", |g| g.last.as_str());
                let last = if last.is_empty() {
                    String::new()
                } else {
                    format!("; the last try: {last}")
                };
                return Advance::Wait(format!(
                    "{phase} gate: {name} running on {} (try {tries}){last}",
                    run.action_node
                ));
            }
            Err(other) => return other,
        },
    };
    let interval = gates.map_or(10, |g| g.interval_secs);
    run.action_id.clear();
    run.action_node.clear();
    run.asked_at = None;
    let progress = run.gate.as_mut().expect("a gate step has its progress");
    match outcome {
        Ok(on) => {
            progress.hook += 1;
            progress.next_at = None;
            progress.last.clear();
            progress.last_output = None;
            Advance::Tried {
                detail: format!("{phase} gate: {name} on {on} passed (try {tries})"),
                repeated: false,
            }
        }
        Err((why, action)) => {
            progress.next_at = Some(ctx.now.saturating_add(Duration::from_secs(interval)));
            let detail = format!("{phase} gate: {why} (try {tries}); next try in {interval}s");
            progress.last = why;
            // A gate that keeps failing the same way says so once in full:
            // the tries after it are audited with their exit code only.
            let output = action.map(|a| (a.exit_code, fingerprint(&a.output_tail)));
            let repeated = output.is_some() && output == progress.last_output;
            progress.last_output = output;
            let detail = if repeated {
                format!("{detail} (the same output as the try before)")
            } else {
                detail
            };
            Advance::Tried { detail, repeated }
        }
    }
}

/// Every hook of the gate passed. After a before gate, the precheck again.
fn passed(run: &mut NodeRun, ctx: &Ctx<'_>, phase: GatePhase) -> Advance {
    if phase == GatePhase::Before {
        match precheck(ctx.spec, run, ctx.view, ctx.fleet) {
            Ok(containers) => {
                run.containers = containers;
                run.boot_id_before = ctx.view.node.map(|n| n.boot_id.clone()).unwrap_or_default();
            }
            Err(why) => {
                return Advance::Wait(format!("before gate passed; the precheck again: {why}"));
            }
        }
        return super::drive::towards_drain(run, ctx);
    }
    succeeded(run, ctx)
}

/// The node a try was delegated to went away with it: the try failed, and
/// the next one picks a runner again. (The target itself is waited for:
/// nothing else can run its own gate.)
fn runner_lost(run: &NodeRun, ctx: &Ctx<'_>) -> Option<String> {
    let on = &run.action_node;
    let gone = on != &run.node && !ctx.fleet.get(on).is_some_and(|h| h.online);
    let long = run
        .asked_at
        .is_none_or(|t| ctx.now.since(t) >= RESEND_AFTER);
    (gone && long).then(|| format!("{on} went offline during the try"))
}

/// A gate hook that cannot pass by being tried again: a before gate holds
/// the campaign; an after gate fails the node.
fn refused(run: &mut NodeRun, ctx: &Ctx<'_>, phase: GatePhase, why: String) -> Advance {
    match phase {
        GatePhase::Before => {
            run.on(Event::GuardBlocked, Facts::default(), ctx.now);
            run.note.clone_from(&why);
            Advance::Pause(why)
        }
        GatePhase::After => failure(run, why),
    }
}

/// A node at its before gate when its campaign stops running (paused by
/// its own rules, or cancelled) had nothing done to it: it goes back to
/// pending (skipped, if cancelled) instead of being drained once the gate
/// passes. Returns the audit detail if it moved. (An operator's own pause
/// holds every step where it stands: the gate is asked again on resume.)
pub fn stand_down(run: &mut NodeRun, phase: Phase, now: Timestamp) -> Option<String> {
    if run.step != Step::GateBefore || phase == Phase::Running {
        return None;
    }
    run.on(Event::GuardBlocked, Facts::default(), now);
    let why = format!("the campaign is {phase}: nothing was done to the node");
    // Cancelled: skipped, with the note `guard_blocked` gives a skip.
    control::guard_blocked(run, phase, &why, now);
    if run.step != Step::Skipped {
        run.note.clone_from(&why);
    }
    Some(format!("gate-before stopped, now {}: {why}", run.step))
}

/// The longest reason a gate keeps (an agent's last output line can be
/// 4 KiB): notes, the `waiting` line and pause reasons carry it.
const REASON_CHARS: usize = 240;

fn cut(mut why: String) -> String {
    if let Some((at, _)) = why.char_indices().nth(REASON_CHARS) {
        why.truncate(at);
        why.push('…');
    }
    why
}

/// FNV-1a of a try's output: equal outputs, equal prints (stored, so the
/// hash must not change between builds, as `DefaultHasher` may).
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the nodes in a gate step wait for, for the campaign's `waiting`
/// line: `ctl1 at its before gate: galera-synced on ctl1 failed …`.
/// At most [`WAITS_SHOWN`] nodes are named, then how many more wait.
pub fn waits<'a>(runs: impl IntoIterator<Item = &'a NodeRun>) -> Option<String> {
    let at_gate: Vec<&NodeRun> = runs
        .into_iter()
        .filter(|r| r.step.gate().is_some())
        .collect();
    let mut waits: Vec<String> = at_gate
        .iter()
        .take(WAITS_SHOWN)
        .filter_map(|r| {
            let phase = r.step.gate()?;
            let what = r
                .note
                .strip_prefix(&format!("{phase} gate: "))
                .unwrap_or(&r.note);
            Some(format!("{} at its {phase} gate: {what}", r.node))
        })
        .collect();
    if at_gate.len() > WAITS_SHOWN {
        waits.push(format!(
            "{} more node(s) at a gate",
            at_gate.len() - WAITS_SHOWN
        ));
    }
    (!waits.is_empty()).then(|| waits.join("; "))
}

/// How many nodes at a gate the `waiting` line names: a role of computes
/// at their after gate would otherwise make it as long as the role.
pub const WAITS_SHOWN: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::fixtures::*;
    use crate::campaign::spec::RunOn;
    use rollcall_proto::model::{ActionResult, Role};

    fn with_compute_gates(w: &mut World) {
        w.spec.gates.insert(
            Role::Compute,
            crate::campaign::spec::RoleGates {
                before: vec!["cells-spare".into(), "rabbit-spare".into()],
                after: vec!["nova-up".into()],
                run_on: RunOn::Role(Role::Controller),
                interval_secs: 10,
                try_secs: 30,
                timeout_secs: Some(300),
            },
        );
    }

    /// The agent's word on `run`'s current request.
    fn answer(run: &NodeRun, state: ActionState, exit: i32, tail: &str, at: i64) -> ActionResult {
        let mut a = result(state, Some(exit), tail, at);
        a.id.clone_from(&run.action_id);
        a.node.clone_from(&run.action_node);
        a
    }

    #[test]
    fn a_before_gate_tries_its_hooks_in_order_until_each_passes_and_only_then_drains() {
        let mut w = World::new();
        with_compute_gates(&mut w);
        let mut run = run_in(Step::Precheck, Role::Compute, 15);
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(
            run.step,
            Step::GateBefore,
            "precheck passed, on to the gate"
        );
        let Advance::Send { node, request } = w.advance(&mut run) else {
            panic!("the first hook is asked")
        };
        assert_eq!(
            node, "ctl1",
            "run_on = controller: a healthy controller runs it"
        );
        assert_eq!(request.name, "cells-spare");
        assert_eq!(request.args, ["before", "cmp1"]);
        assert_eq!(request.id, "c1.cmp1.1.gate-before-1");
        assert_eq!(request.timeout_secs, 30, "one try is bounded by try_secs");
        // The try fails: the node is not failed, the try is recorded and
        // the next one waits for the interval.
        w.action = Some(answer(
            &run,
            ActionState::Failed,
            1,
            "checking\ncells: 2 of 3 up\n",
            20,
        ));
        let Advance::Tried {
            detail,
            repeated: false,
        } = w.advance(&mut run)
        else {
            panic!("a failed try is recorded")
        };
        assert_eq!(
            detail,
            "before gate: cells-spare on ctl1 failed (exit code 1): cells: 2 of 3 up (try 1); next try in 10s"
        );
        assert_eq!(run.step, Step::GateBefore);
        w.action = None;
        let Advance::Wait(note) = w.advance(&mut run) else {
            panic!("waits for the interval")
        };
        assert_eq!(
            note,
            "before gate: cells-spare on ctl1 failed (exit code 1): cells: 2 of 3 up (try 1); next try in 10s"
        );
        w.now = t(31);
        let Advance::Send { request, .. } = w.advance(&mut run) else {
            panic!("tried again after the interval")
        };
        assert_eq!(
            (request.name.as_str(), request.id.as_str()),
            ("cells-spare", "c1.cmp1.1.gate-before-2")
        );
        w.action = Some(answer(
            &run,
            ActionState::Succeeded,
            0,
            "cells: 3 of 3 up\n",
            32,
        ));
        assert!(
            matches!(w.advance(&mut run), Advance::Tried { detail, .. } if detail == "before gate: cells-spare on ctl1 passed (try 2)")
        );
        w.action = None;
        let Advance::Send { request, .. } = w.advance(&mut run) else {
            panic!("the second hook is asked at once")
        };
        assert_eq!(
            (request.name.as_str(), request.id.as_str()),
            ("rabbit-spare", "c1.cmp1.1.gate-before-3")
        );
        w.action = Some(answer(&run, ActionState::Succeeded, 0, "", 33));
        assert!(matches!(w.advance(&mut run), Advance::Tried { .. }));
        w.action = None;
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::Drain, "every hook passed: the node may go");
        assert_eq!(run.gate, None, "the step's progress is gone with the step");
    }

    #[test]
    fn a_before_gate_that_never_passes_holds_the_campaign_with_the_last_reason() {
        let mut w = World::new();
        with_compute_gates(&mut w);
        let mut run = run_in(Step::GateBefore, Role::Compute, 15);
        assert!(matches!(w.advance(&mut run), Advance::Send { .. }));
        w.action = Some(answer(&run, ActionState::Failed, 1, "cells: 1 of 3 up", 20));
        assert!(matches!(w.advance(&mut run), Advance::Tried { .. }));
        w.action = None;
        w.now = t(15 + 301);
        let out = w.advance(&mut run);
        assert_eq!(
            out,
            Advance::Pause(
                "before gate of cmp1 did not pass within 300s: cells-spare on ctl1 failed (exit code 1): cells: 1 of 3 up; resume to try again".into()
            )
        );
        assert_eq!(run.step, Step::Pending, "nothing was done to the node");
        assert_eq!(run.left_drained, None);
        // After a resume its tries get new ids: the agent never runs one twice.
        run.on(Event::Start, Facts::default(), w.now);
        run.on(Event::Succeeded, w.spec.facts(Role::Compute), w.now);
        let Advance::Send { request, .. } = w.advance(&mut run) else {
            panic!("asked again")
        };
        assert_eq!(request.id, "c1.cmp1.1.gate-before-2");
    }

    #[test]
    fn a_gate_hook_the_agent_does_not_define_holds_before_and_fails_after() {
        let mut w = World::new();
        with_compute_gates(&mut w);
        with_compute_hooks(&mut w);
        let mut run = run_in(Step::GateBefore, Role::Compute, 15);
        assert!(matches!(w.advance(&mut run), Advance::Send { .. }));
        let mut refused = answer(&run, ActionState::Rejected, 0, "", 20);
        refused.exit_code = None;
        "hook cells-spare is not defined in this agent's configuration"
            .clone_into(&mut refused.error);
        w.action = Some(refused.clone());
        let Advance::Pause(why) = w.advance(&mut run) else {
            panic!("trying again cannot help")
        };
        assert!(why.contains("is not defined"), "{why}");
        assert_eq!(run.step, Step::Pending);

        let mut run = run_in(Step::GateAfter, Role::Compute, 15);
        w.action = None;
        assert!(
            matches!(w.advance(&mut run), Advance::Send { request, .. } if request.args == ["after", "cmp1"])
        );
        refused.id.clone_from(&run.action_id);
        w.action = Some(refused);
        assert_eq!(w.advance(&mut run), Advance::Failed);
        assert_eq!(run.step, Step::Failed);
        assert_eq!(
            run.left_drained.as_deref(),
            Some("nova-undrain"),
            "a node whose cluster is not whole again stays out of service"
        );
    }

    #[test]
    fn an_after_gate_past_its_timeout_fails_the_node_and_the_budget_decides() {
        let mut w = World::new();
        with_compute_gates(&mut w);
        let mut run = run_in(Step::Postcheck, Role::Compute, 15);
        run.containers = vec!["nova_compute".into()];
        run.boot_id_before = "boot-0".into();
        w.spec.reboot = crate::campaign::spec::RebootPolicy::Never;
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::GateAfter);
        assert!(matches!(w.advance(&mut run), Advance::Send { .. }));
        w.action = Some(answer(
            &run,
            ActionState::Failed,
            1,
            "nova-compute on cmp1 is down",
            21,
        ));
        assert!(matches!(w.advance(&mut run), Advance::Tried { .. }));
        w.action = None;
        w.now = t(20 + 301);
        assert_eq!(w.advance(&mut run), Advance::Failed);
        assert_eq!(run.step, Step::Failed);
        assert_eq!(
            run.note,
            "gate-after did not finish within 300s: nova-up on ctl1 failed (exit code 1): nova-compute on cmp1 is down"
        );
    }

    #[test]
    fn waiting_names_each_node_at_a_gate_and_what_it_waits_for() {
        let mut a = run_in(Step::GateBefore, Role::Controller, 1);
        a.node = "ctl1".into();
        a.note = "before gate: galera-synced on ctl1 failed (exit code 1): wsrep_cluster_size is 2, want at least 3 (try 4); next try in 6s".into();
        let b = run_in(Step::Patch, Role::Controller, 1);
        assert_eq!(
            waits([&a, &b]).as_deref(),
            Some(
                "ctl1 at its before gate: galera-synced on ctl1 failed (exit code 1): wsrep_cluster_size is 2, want at least 3 (try 4); next try in 6s"
            )
        );
        assert_eq!(waits([&b]), None);
        let many: Vec<NodeRun> = (0..5)
            .map(|i| {
                let mut r = a.clone();
                r.node = format!("cmp{i}");
                r
            })
            .collect();
        let line = waits(&many).expect("waits");
        assert!(line.starts_with("cmp0 at its before gate"), "{line}");
        assert!(line.ends_with("; cmp2 at its before gate: galera-synced on ctl1 failed (exit code 1): wsrep_cluster_size is 2, want at least 3 (try 4); next try in 6s; 2 more node(s) at a gate"), "{line}");
    }

    #[test]
    fn a_gate_that_exits_2_cannot_pass_by_trying_again() {
        let mut w = World::new();
        with_compute_gates(&mut w);
        let mut run = run_in(Step::GateBefore, Role::Compute, 15);
        assert!(matches!(w.advance(&mut run), Advance::Send { .. }));
        w.action = Some(answer(
            &run,
            ActionState::Failed,
            2,
            "cells-spare: python3 is not installed",
            20,
        ));
        let Advance::Pause(why) = w.advance(&mut run) else {
            panic!("a configuration error holds the campaign at once")
        };
        assert_eq!(
            why,
            "before gate: cells-spare on ctl1 failed (exit code 2): cells-spare: python3 is not installed"
        );
        assert_eq!(run.step, Step::Pending);
    }

    #[test]
    fn a_try_whose_delegate_went_offline_fails_and_the_next_picks_another() {
        let mut w = World::new();
        with_compute_gates(&mut w);
        let mut run = run_in(Step::GateBefore, Role::Compute, 15);
        let Advance::Send { node, .. } = w.advance(&mut run) else {
            panic!("asked")
        };
        assert_eq!(node, "ctl1");
        w.fleet.get_mut("ctl1").expect("ctl1").online = false;
        w.now = t(20 + 10);
        let Advance::Tried { detail, .. } = w.advance(&mut run) else {
            panic!("the try is over")
        };
        assert_eq!(
            detail,
            "before gate: ctl1 went offline during the try (try 1); next try in 10s"
        );
        w.now = t(20 + 21);
        let Advance::Send { node, request } = w.advance(&mut run) else {
            panic!("tried again")
        };
        assert_eq!(
            (node.as_str(), request.id.as_str()),
            ("ctl2", "c1.cmp1.1.gate-before-2")
        );
    }

    #[test]
    fn a_try_that_fails_like_the_one_before_is_marked_repeated_and_long_reasons_are_cut() {
        let mut w = World::new();
        with_compute_gates(&mut w);
        let mut run = run_in(Step::GateAfter, Role::Compute, 15);
        let long = format!("down: {}", "x".repeat(4000));
        let mut repeats = Vec::new();
        for i in 0..3 {
            w.action = None;
            w.now = t(20 + i * 20);
            assert!(matches!(w.advance(&mut run), Advance::Send { .. }));
            w.action = Some(answer(&run, ActionState::Failed, 1, &long, 21 + i * 20));
            let Advance::Tried { detail, repeated } = w.advance(&mut run) else {
                panic!("a failed try")
            };
            assert!(detail.chars().count() < 400, "{detail}");
            repeats.push(repeated);
        }
        assert_eq!(repeats, [false, true, true]);
        assert!(run.gate.as_ref().expect("progress").last.ends_with('…'));
    }

    #[test]
    fn a_before_gate_that_passed_looks_at_the_node_again_before_the_drain() {
        let mut w = World::new();
        w.spec.gates.insert(
            Role::Compute,
            crate::campaign::spec::RoleGates {
                before: vec!["cells-spare".into()],
                ..Default::default()
            },
        );
        let mut run = run_in(Step::GateBefore, Role::Compute, 15);
        run.boot_id_before = "boot-0".into();
        assert!(matches!(w.advance(&mut run), Advance::Send { .. }));
        w.action = Some(answer(&run, ActionState::Succeeded, 0, "", 20));
        assert!(matches!(w.advance(&mut run), Advance::Tried { .. }));
        w.action = None;
        // The node went offline meanwhile: it waits at the gate.
        w.node.online = false;
        let Advance::Wait(note) = w.advance(&mut run) else {
            panic!("waits")
        };
        assert_eq!(
            note,
            "before gate passed; the precheck again: the node is offline"
        );
        w.node.online = true;
        // An alert holds: the gate passed, but the node does not drain.
        w.hold = Some("held by alert GaleraDown{} firing".into());
        assert_eq!(
            w.advance(&mut run),
            Advance::Wait("the drain held by alert GaleraDown{} firing".into())
        );
        assert_eq!(run.step, Step::GateBefore);
        // Past the gate's timeout under the hold: back to pending, nothing
        // failed and nothing paused.
        w.now = t(15 + 1_801);
        let Advance::Held(why) = w.advance(&mut run) else {
            panic!("held")
        };
        assert!(
            why.starts_with("gate-before waited 1800s, the drain held by alert"),
            "{why}"
        );
        assert_eq!((run.step, run.note.as_str()), (Step::Pending, why.as_str()));
        let mut run = run_in(Step::GateBefore, Role::Compute, 15);
        w.now = t(20);
        assert!(matches!(w.advance(&mut run), Advance::Send { .. }));
        w.action = Some(answer(&run, ActionState::Succeeded, 0, "", 20));
        assert!(matches!(w.advance(&mut run), Advance::Tried { .. }));
        w.action = None;
        w.hold = None;
        w.now = t(25);
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::Drain);
        assert_eq!(
            run.boot_id_before, "boot-1",
            "taken again: the drain goes by the node as it is now"
        );
        assert_eq!(run.containers, ["nova_compute", "cron"]);
    }

    #[test]
    fn a_node_at_its_before_gate_stands_down_when_its_campaign_stops_running() {
        let mut run = run_in(Step::GateBefore, Role::Compute, 15);
        assert_eq!(stand_down(&mut run, Phase::Running, t(20)), None);
        assert_eq!(run.step, Step::GateBefore);
        let detail = stand_down(&mut run, Phase::Paused, t(20)).expect("moved");
        assert_eq!(
            detail,
            "gate-before stopped, now pending: the campaign is paused: nothing was done to the node"
        );
        assert_eq!(run.step, Step::Pending);
        let mut run = run_in(Step::GateBefore, Role::Compute, 15);
        stand_down(&mut run, Phase::Cancelled, t(20)).expect("moved");
        assert_eq!(run.step, Step::Skipped);
        let mut run = run_in(Step::GateAfter, Role::Compute, 15);
        assert_eq!(
            stand_down(&mut run, Phase::Cancelled, t(20)),
            None,
            "a drained node finishes its way"
        );
    }
}
