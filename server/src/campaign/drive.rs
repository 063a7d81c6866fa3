//! How one node moves through its steps: pure decisions over what the fleet
//! knows about the node now and what its agent said about the current
//! step's action. The scheduler persists every change this makes before it
//! sends anything, so a restart repeats no finished step. A node changes
//! step only through the step graph (`NodeRun::on`): this module decides
//! which event happened, never the step it leads to.

use std::collections::{BTreeMap, BTreeSet};

use rollcall_proto::model::{
    ActionKind, ActionRequest, ActionResult, ActionState, Node, Report, Role,
};
use rollcall_proto::timestamp::Timestamp;

use super::checks::{postcheck, precheck, reboot_required_after};
use super::gate;
use super::lifecycle::{Event, Facts, Step};
use super::record::NodeRun;
use super::schedule::Health;
use super::spec::{CampaignSpec, GatePhase, RoleGates, RunOn};

/// How long a request may go unanswered (the server handed it to the
/// node's session, and the agent said nothing of it since) before it is
/// asked again under the same id. A request queued in a session that ended,
/// or in a server that restarted, is lost without a word, and the agent,
/// which never heard of it, cannot say so. Asking again is harmless: an
/// agent that has it answers with its state and never runs it twice.
pub const RESEND_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// What the fleet knows about a node right now.
#[derive(Clone, Copy, Debug, Default)]
pub struct View<'a> {
    pub node: Option<&'a Node>,
    pub report: Option<&'a Report>,
}

pub struct Ctx<'a> {
    pub campaign: &'a str,
    pub spec: &'a CampaignSpec,
    /// Every node of the fleet, to guard quorum and pick hook delegates.
    pub fleet: &'a BTreeMap<String, Health>,
    pub view: View<'a>,
    /// The agent's latest word on `run.action_id`.
    pub action: Option<&'a ActionResult>,
    /// The nodes of this campaign that failed, unless an operator accepted
    /// the failure: a guard that waits on one of them waits for nothing.
    pub failed: &'a BTreeSet<String>,
    /// What holds drains now (`[alerts]`, with the alerts about the nodes
    /// in flight, this one included, left out): while it does, a node goes
    /// no further than its precheck and before gate.
    pub hold: Option<&'a str>,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advance {
    /// Nothing to do yet; the reason is shown in status.
    Wait(String),
    /// Ask `node` for this action. `run.action_id` and `run.action_node`
    /// are already set: persist the run, then send.
    Send {
        node: String,
        request: ActionRequest,
    },
    /// The step is done; `run` is already in its next step.
    Moved,
    /// A gate's try ended (passed, with more hooks to go or the gate now
    /// passed, or failed, to be tried again after the interval): record it
    /// with the action's outcome, then look again. `repeated`: it failed
    /// with the exit code and output of the try before, which the audit
    /// already holds in full (the detail says so): record it without its
    /// output.
    Tried { detail: String, repeated: bool },
    /// The node failed; `run` is already `failed` with the reason in
    /// `note` (and `left_drained` set if it stays drained), or, with
    /// `undrain_on_failure`, in `undrain` with the reason in `failure`.
    Failed,
    /// A guard cannot be met because a node failed in this campaign, or a
    /// before gate did not pass in time: nothing was done to the node,
    /// `run` is back in `pending`; pause the campaign with this reason
    /// instead of waiting for nothing.
    Pause(String),
    /// The node waited on an alert hold (`Ctx::hold`) until its precheck
    /// or before gate timed out: nothing was done to it, `run` is back in
    /// `pending` with this reason, and starts again once nothing holds.
    /// Nothing fails and the campaign does not pause.
    Held(String),
}

/// Moves `run` (an active node) on as far as one look at the facts allows.
/// A node that fails after its drain hook was asked stays drained: it is
/// marked `left_drained`, or undrained first with `undrain_on_failure`.
/// Every move goes through the step graph (`NodeRun::on`).
pub fn advance(run: &mut NodeRun, ctx: &Ctx<'_>) -> Advance {
    // What the node was before this look decides what a failure leaves.
    let drained = run.step.may_be_drained(!run.action_id.is_empty());
    // An undrain after a failure is under way: its end is the node's end.
    let undraining = run.failure.is_some();
    let limit = ctx.spec.step_timeout(run.role, run.step);
    let event = if let Some(limit) = limit.filter(|l| ctx.now.since(run.since) > *l) {
        if let Some(hold) = ctx.hold
            && matches!(run.step, Step::Precheck | Step::GateBefore)
        {
            let why = format!(
                "{} waited {}s, the drain {hold}; back to pending until nothing holds",
                run.step,
                limit.as_secs()
            );
            run.on(Event::GuardBlocked, Facts::default(), ctx.now);
            run.note.clone_from(&why);
            return Advance::Held(why);
        }
        let last = run
            .gate
            .as_ref()
            .map(|g| g.last.as_str())
            .filter(|l| !l.is_empty())
            .unwrap_or(&run.note);
        let last = if last.is_empty() {
            String::new()
        } else {
            format!(": {last}")
        };
        if run.step == Step::GateBefore {
            // Nothing was done to the node: it waits in pending, and the
            // campaign holds until an operator says the cluster can spare one.
            let why = format!(
                "before gate of {} did not pass within {}s{last}; resume to try again",
                run.node,
                limit.as_secs()
            );
            run.on(Event::GuardBlocked, Facts::default(), ctx.now);
            run.note.clone_from(&why);
            return Advance::Pause(why);
        }
        run.note = format!(
            "{} did not finish within {}s{last}",
            run.step,
            limit.as_secs()
        );
        Event::TimedOut
    } else {
        match step_on(run, ctx) {
            Advance::Failed => Event::Failed,
            out => return out,
        }
    };
    let none = Facts::default();
    let hook = undrain_hook(ctx.spec, run.role);
    match hook {
        Some(hook) if undraining => {
            // The hook succeeded (`hook_step` took the reason back) or it
            // did not, and the node stays drained.
            if let Some(first) = run.failure.take() {
                run.note = format!("{first}; then its undrain failed: {}", run.note);
                run.left_drained = Some(hook);
            }
            run.on(event, none, ctx.now);
        }
        Some(hook) if drained => {
            let event = if ctx.spec.undrain_on_failure {
                Event::UndrainOnFailure
            } else {
                event
            };
            let why = std::mem::take(&mut run.note);
            if run.on(event, none, ctx.now) == Step::Undrain {
                run.failure = Some(why);
                run.note = format!("running hook {hook} before the node ends failed");
            } else {
                run.note = why;
                run.left_drained = Some(hook);
            }
        }
        _ => {
            run.on(event, none, ctx.now);
        }
    }
    Advance::Failed
}

/// The undrain hook of `role`'s nodes, if the spec names one.
fn undrain_hook(spec: &CampaignSpec, role: Role) -> Option<String> {
    spec.hooks.get(&role).and_then(|h| h.undrain.clone())
}

/// The audit line (and watch event) of a failure: why, and what the node
/// is left as. `before` is the run as it was before `advance` failed it.
pub fn failure_detail(campaign: &str, before: &NodeRun, run: &NodeRun) -> String {
    if run.step == Step::Undrain {
        let why = run.failure.as_deref().unwrap_or_default();
        return format!(
            "{why}; undrain_on_failure: {} before the node ends failed",
            run.note
        );
    }
    match &run.left_drained {
        Some(hook) => format!(
            "{}; left drained: run hook {hook} to undo, or `campaign undrain {campaign} {}`",
            run.note, run.node
        ),
        None if before.failure.is_some() => {
            format!("undrain done, the node ends failed: {}", run.note)
        }
        None => run.note.clone(),
    }
}

/// A controller that failed in this campaign and is offline or unhealthy
/// keeps the quorum guard from ever being met for another controller.
fn failed_controller(run: &NodeRun, ctx: &Ctx<'_>) -> Option<String> {
    if run.role != Role::Controller {
        return None;
    }
    ctx.fleet
        .iter()
        .find(|(name, h)| {
            h.role == Role::Controller
                && !h.available()
                && **name != run.node
                && ctx.failed.contains(*name)
        })
        .map(|(name, _)| {
            format!(
                "controller quorum guard cannot be met: {name} failed in this campaign and is offline or unhealthy"
            )
        })
}

/// One step's look at the facts. A failure leaves `run` in its step with
/// the reason in `note`: `advance` decides where the node goes.
fn step_on(run: &mut NodeRun, ctx: &Ctx<'_>) -> Advance {
    match run.step {
        Step::Precheck => {
            if let Some(why) = failed_controller(run, ctx) {
                // Nothing was done to the node yet: it waits in pending.
                run.on(Event::GuardBlocked, Facts::default(), ctx.now);
                run.note.clone_from(&why);
                return Advance::Pause(why);
            }
            match precheck(ctx.spec, run, ctx.view, ctx.fleet) {
                Ok(containers) => {
                    run.containers = containers;
                    run.boot_id_before =
                        ctx.view.node.map(|n| n.boot_id.clone()).unwrap_or_default();
                    towards_drain(run, ctx)
                }
                Err(why) => Advance::Wait(why),
            }
        }
        Step::Drain | Step::Undrain => hook_step(run, ctx),
        Step::GateBefore => gate::step(run, ctx, GatePhase::Before),
        Step::GateAfter => gate::step(run, ctx, GatePhase::After),
        Step::Patch => match action_state(run, ctx, ActionKind::Patch, "") {
            Err(advance) => advance,
            Ok(done) => {
                let finished = done.finished_at.unwrap_or(ctx.now);
                run.patched_at = Some(finished);
                match reboot_required_after(ctx.view.report, finished) {
                    None => Advance::Wait("waiting for a reboot check after the patch".into()),
                    Some(reboot_required) => {
                        let facts = Facts {
                            reboot_required,
                            ..ctx.spec.facts(run.role)
                        };
                        move_on(run, Event::Succeeded, facts, ctx.now)
                    }
                }
            }
        },
        Step::Reboot => {
            let gone = ctx
                .view
                .node
                .is_none_or(|n| !n.online || n.boot_id != run.boot_id_before);
            let silent = ctx.action.is_none() || unanswered(run, ctx);
            if run.action_id.is_empty() || (silent && !gone) {
                let target = run.node.clone();
                return send(run, ctx, ActionKind::Reboot, "", Vec::new(), &target);
            }
            match ctx.action.map(|a| a.state) {
                Some(ActionState::Failed | ActionState::Rejected) => {
                    let a = ctx.action.expect("matched Some");
                    failure(run, action_failure("reboot", a))
                }
                Some(ActionState::Running | ActionState::Succeeded) => wait_for_return(run, ctx),
                _ if gone => wait_for_return(run, ctx),
                _ => Advance::Wait("reboot asked for".into()),
            }
        }
        Step::WaitReturn => {
            if let Some(a) = ctx.action
                && matches!(a.state, ActionState::Failed | ActionState::Rejected)
            {
                return failure(run, action_failure("reboot", a));
            }
            let lost = !run.action_id.is_empty() && (ctx.action.is_none() || unanswered(run, ctx));
            match ctx.view.node {
                // Back under the boot it had, and its agent never got the
                // request (lost with the connection that dropped it): the
                // node did not reboot. Ask again, under the same id.
                Some(n) if n.online && n.boot_id == run.boot_id_before && lost => {
                    move_on(run, Event::Lost, ctx.spec.facts(run.role), ctx.now)
                }
                Some(n) if n.online && !n.boot_id.is_empty() && n.boot_id != run.boot_id_before => {
                    // The reboot's result arrives after the return and
                    // belongs in the audit log.
                    succeeded_keeping_request(run, ctx)
                }
                _ => Advance::Wait(format!(
                    "waiting for {} to come back with a new boot id",
                    run.node
                )),
            }
        }
        Step::Postcheck => match postcheck(ctx.spec.reboot, run, ctx.view) {
            Ok(()) => succeeded(run, ctx),
            Err(why) => Advance::Wait(why),
        },
        Step::Pending | Step::Done | Step::Failed | Step::Skipped => Advance::Wait(String::new()),
    }
}

/// Reboot → wait-return, keeping the reboot's request: its result (or
/// word that it was lost) still decides whether the node rebooted.
/// The wait for an answer goes on too.
fn wait_for_return(run: &mut NodeRun, ctx: &Ctx<'_>) -> Advance {
    let asked = run.asked_at;
    let moved = succeeded_keeping_request(run, ctx);
    run.asked_at = asked;
    moved
}

/// The precheck or the before gate passed: on to the next step, unless
/// that is the drain and an alert holds (`Ctx::hold`); then the node waits
/// where it is, nothing done to it.
pub(super) fn towards_drain(run: &mut NodeRun, ctx: &Ctx<'_>) -> Advance {
    if let Some(hold) = ctx.hold
        && run.step.on(Event::Succeeded, ctx.spec.facts(run.role)) == Step::Drain
    {
        return Advance::Wait(format!("the drain {hold}"));
    }
    succeeded(run, ctx)
}

/// On to the next step with the current step's request still named, so its
/// result is still looked up.
fn succeeded_keeping_request(run: &mut NodeRun, ctx: &Ctx<'_>) -> Advance {
    let (id, node) = (
        std::mem::take(&mut run.action_id),
        std::mem::take(&mut run.action_node),
    );
    let moved = succeeded(run, ctx);
    (run.action_id, run.action_node) = (id, node);
    moved
}

/// The step's work is done: on to the next one (the role's gates, if it
/// has any, are on the way).
pub(super) fn succeeded(run: &mut NodeRun, ctx: &Ctx<'_>) -> Advance {
    move_on(run, Event::Succeeded, ctx.spec.facts(run.role), ctx.now)
}

fn move_on(run: &mut NodeRun, event: Event, facts: Facts, now: Timestamp) -> Advance {
    run.on(event, facts, now);
    run.note.clear();
    Advance::Moved
}

/// The step failed, for `why`: `advance` takes it from here.
pub(super) fn failure(run: &mut NodeRun, why: String) -> Advance {
    run.note = why;
    Advance::Failed
}

pub(super) fn action_failure(what: &str, a: &ActionResult) -> String {
    let code = a
        .exit_code
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default();
    // The command's own last words say more than "exited with 100".
    let why = match a.output_tail.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => line.trim().to_owned(),
        None => a.error.clone(),
    };
    format!("{what} on {} failed{code}: {why}", a.node)
}

pub(super) fn send(
    run: &mut NodeRun,
    ctx: &Ctx<'_>,
    kind: ActionKind,
    name: &str,
    args: Vec<String>,
    on: &str,
) -> Advance {
    // A request the server holds no record of (the node had no session to
    // take it) is tried at every pass and changes nothing to store; only a
    // first request, or one handed to a session, starts the wait for an
    // answer.
    if run.action_id.is_empty() || ctx.action.is_some() {
        run.asked_at = Some(ctx.now);
    }
    let (id, timeout) = match run.step.gate() {
        Some(_) => (
            run.gate_try_id(ctx.campaign, run.gate_tries),
            std::time::Duration::from_secs(
                ctx.spec
                    .gates
                    .get(&run.role)
                    .map_or_else(|| RoleGates::default().try_secs, |g| g.try_secs),
            ),
        ),
        _ => (
            run.action_id_for(ctx.campaign, run.step),
            ctx.spec
                .step_timeout(run.role, run.step)
                .unwrap_or_default(),
        ),
    };
    run.action_id = id;
    run.action_node = on.to_owned();
    Advance::Send {
        node: on.to_owned(),
        request: ActionRequest {
            id: run.action_id.clone(),
            kind,
            name: name.to_owned(),
            args,
            timeout_secs: u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX),
            leader_epoch: 0,
        },
    }
}

/// The current step's action: not asked yet (ask), still running (wait),
/// failed (fail the node) or succeeded (`Ok`).
pub(super) fn action_state<'a>(
    run: &mut NodeRun,
    ctx: &Ctx<'a>,
    kind: ActionKind,
    name: &str,
) -> Result<&'a ActionResult, Advance> {
    if run.action_id.is_empty() {
        let target = run.node.clone();
        return Err(send(run, ctx, kind, name, Vec::new(), &target));
    }
    if unanswered(run, ctx) {
        let (on, args) = (run.action_node.clone(), hook_args(run, name));
        return Err(send(run, ctx, kind, name, args, &on));
    }
    match ctx.action {
        Some(a) if a.state == ActionState::Succeeded => Ok(a),
        Some(a) if a.state.is_final() => {
            let what = if name.is_empty() {
                run.step.as_str()
            } else {
                name
            };
            Err(failure(run, action_failure(what, a)))
        }
        Some(a) => Err(Advance::Wait(format!(
            "{} {} on {}",
            run.step,
            a.state.as_str(),
            a.node
        ))),
        // Asked, but no word of it here (the node was offline, or this
        // server restarted before recording it): ask again under the same
        // id; an agent that already has it never runs it twice.
        None => {
            let (on, args) = (run.action_node.clone(), hook_args(run, name));
            Err(send(run, ctx, kind, name, args, &on))
        }
    }
}

/// Worth asking again: asked for at least [`RESEND_AFTER`] ago (or before
/// a restart that lost when) with no word from the agent since; or still
/// running when something cleared `asked_at` to ask at once (the store
/// failed meanwhile, and the agent's result may be waiting on the agent:
/// asking by the same id makes it answer with what it holds).
fn unanswered(run: &NodeRun, ctx: &Ctx<'_>) -> bool {
    match ctx.action.map(|a| a.state) {
        Some(ActionState::Accepted) => run
            .asked_at
            .is_none_or(|t| ctx.now.since(t) >= RESEND_AFTER),
        Some(ActionState::Running) => run.asked_at.is_none(),
        _ => false,
    }
}

/// The arguments the server appends to a hook's own argv: the target's
/// name, and for a gate first whether it runs before or after the node.
pub(super) fn hook_args(run: &NodeRun, name: &str) -> Vec<String> {
    match run.step.gate() {
        _ if name.is_empty() => Vec::new(),
        Some(phase) => vec![phase.as_str().to_owned(), run.node.clone()],
        None => vec![run.node.clone()],
    }
}

fn hook_step(run: &mut NodeRun, ctx: &Ctx<'_>) -> Advance {
    let hooks = ctx.spec.hooks.get(&run.role);
    let name = match run.step {
        Step::Drain => hooks.and_then(|h| h.drain.clone()),
        _ => hooks.and_then(|h| h.undrain.clone()),
    };
    let Some(name) = name else {
        return succeeded(run, ctx);
    };
    if run.action_id.is_empty() {
        let on = match hook_runner(ctx.spec, run, ctx.fleet, &name) {
            Ok(on) => on,
            Err(why) => return Advance::Wait(why.to_string()),
        };
        let args = hook_args(run, &name);
        return send(run, ctx, ActionKind::Hook, &name, args, &on);
    }
    match action_state(run, ctx, ActionKind::Hook, &name) {
        // Undrained after a failure (undrain_on_failure): the node ends
        // failed, with the failure's own reason. An undrain that succeeded
        // also undoes a drain an earlier attempt left behind.
        Ok(_) if run.step == Step::Undrain => {
            run.left_drained = None;
            match run.failure.take() {
                Some(why) => failure(run, why),
                None => succeeded(run, ctx),
            }
        }
        Ok(_) => succeeded(run, ctx),
        Err(advance) => advance,
    }
}

/// No node can run a hook now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no online, healthy {role} node to run hook {hook}")]
pub struct NoHookRunner {
    pub role: Role,
    pub hook: String,
}

/// Who runs a hook of `run`'s role: the node itself, or (`run_on` a role)
/// the first online, healthy node of that role.
pub(super) fn hook_runner(
    spec: &CampaignSpec,
    run: &NodeRun,
    fleet: &BTreeMap<String, Health>,
    name: &str,
) -> Result<String, NoHookRunner> {
    let run_on = spec
        .hooks
        .get(&run.role)
        .map(|h| h.run_on)
        .unwrap_or_default();
    runner(run_on, run, fleet, name)
}

/// Who runs `name` for `run`: the node itself, or the first online,
/// healthy node of the role `run_on` names.
pub(super) fn runner(
    run_on: RunOn,
    run: &NodeRun,
    fleet: &BTreeMap<String, Health>,
    name: &str,
) -> Result<String, NoHookRunner> {
    match run_on {
        RunOn::Target => Ok(run.node.clone()),
        RunOn::Role(role) => delegate(fleet, role, &run.node).ok_or_else(|| NoHookRunner {
            role,
            hook: name.to_owned(),
        }),
    }
}

/// The first online, healthy node of `role` by name, never the target.
fn delegate(fleet: &BTreeMap<String, Health>, role: Role, target: &str) -> Option<String> {
    fleet
        .iter()
        .find(|(name, h)| h.role == role && h.available() && name.as_str() != target)
        .map(|(name, _)| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::fixtures::*;
    use crate::campaign::spec::RoleHooks;
    use rollcall_proto::model::{ContainerHealth, ContainerState};

    #[test]
    fn patch_is_asked_under_a_stable_id_asked_again_when_unknown_and_fails_with_its_words() {
        let mut w = World::new();
        let mut run = run_in(Step::Patch, Role::Compute, 15);
        let first = w.advance(&mut run);
        let Advance::Send { node, request } = first.clone() else {
            panic!("{first:?}")
        };
        assert_eq!(
            (node.as_str(), request.id.as_str()),
            ("cmp1", "c1.cmp1.1.patch")
        );
        assert_eq!(request.kind, ActionKind::Patch);
        // No word of it (a restart lost the record): the same request again.
        assert_eq!(w.advance(&mut run), first);
        w.action = Some(result(ActionState::Running, None, "", 16));
        assert!(matches!(w.advance(&mut run), Advance::Wait(_)));
        w.action = Some(result(
            ActionState::Failed,
            Some(100),
            "Reading lists\nE: dpkg was interrupted\n",
            16,
        ));
        assert_eq!(w.advance(&mut run), Advance::Failed);
        assert_eq!(
            run.note,
            "patch on cmp1 failed (exit code 100): E: dpkg was interrupted"
        );
    }

    #[test]
    fn a_request_the_agent_never_answered_is_asked_again_after_a_while() {
        // The server handed the drain to ctl1's session at 15, then
        // restarted: the request was lost and ctl1 never heard of it.
        let mut w = World::new();
        w.spec.hooks.insert(
            Role::Compute,
            RoleHooks {
                drain: Some("nova-drain".into()),
                undrain: None,
                run_on: RunOn::Role(Role::Controller),
            },
        );
        let mut run = run_in(Step::Drain, Role::Compute, 15);
        w.now = t(15);
        let Advance::Send { node, request } = w.advance(&mut run) else {
            panic!("a hook request")
        };
        assert_eq!(run.asked_at, Some(t(15)));
        // Not handed to a session yet (ctl1 had none): asked at every pass,
        // and nothing in the run changes, so nothing is written.
        w.now = t(16);
        let before = run.clone();
        assert!(matches!(w.advance(&mut run), Advance::Send { .. }));
        assert_eq!(run, before);
        let mut accepted = result(ActionState::Accepted, None, "", 15);
        accepted.id = request.id.clone();
        accepted.node = node.clone();
        (accepted.started_at, accepted.finished_at) = (None, None);
        w.action = Some(accepted);
        w.now = t(20);
        assert_eq!(
            w.advance(&mut run),
            Advance::Wait("drain accepted on ctl1".into())
        );
        // Silent for RESEND_AFTER: the same request again, to the same node.
        w.now = t(25);
        assert_eq!(
            w.advance(&mut run),
            Advance::Send {
                node: node.clone(),
                request: request.clone()
            }
        );
        assert_eq!(run.asked_at, Some(t(25)));
        // Once the agent speaks of it, nothing is asked again.
        w.action = w.action.take().map(|a| ActionResult {
            state: ActionState::Running,
            ..a
        });
        w.now = t(60);
        assert!(matches!(w.advance(&mut run), Advance::Wait(_)));
        // The same holds for the reboot, which the node would never do.
        let mut reboot = run_in(Step::Reboot, Role::Compute, 30);
        let Advance::Send { request, .. } = w.advance(&mut reboot) else {
            panic!("a reboot request")
        };
        let mut accepted = result(ActionState::Accepted, None, "", 30);
        accepted.id = request.id.clone();
        w.action = Some(accepted);
        w.now = t(65);
        assert_eq!(
            w.advance(&mut reboot),
            Advance::Wait("reboot asked for".into())
        );
        w.now = t(70);
        assert!(matches!(w.advance(&mut reboot), Advance::Send { .. }));
    }

    #[test]
    fn a_reboot_lost_with_its_connection_is_asked_again_when_the_node_returns_unrebooted() {
        // Chaos seed 2005: the connection dropped with the reboot request in
        // it. The node looked gone, so the run waited for its return; it came
        // back under the old boot id, and wait-return timed out on a node
        // that was never rebooted.
        let mut w = World::new();
        let mut run = run_in(Step::Reboot, Role::Compute, 30);
        w.now = t(30);
        let Advance::Send { request, .. } = w.advance(&mut run) else {
            panic!("a reboot request")
        };
        let issued = ActionResult::issued(&request.id, "cmp1");
        w.action = Some(issued);
        w.node.online = false;
        w.now = t(31);
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::WaitReturn);
        assert_eq!(run.action_id, request.id, "the reboot's id is kept");
        // Back under boot-1, and its Hello did not hold the request: lost.
        w.node.online = true;
        w.action = None;
        w.now = t(33);
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::Reboot);
        let Advance::Send { request: again, .. } = w.advance(&mut run) else {
            panic!("the reboot asked again")
        };
        assert_eq!(again.id, request.id, "same id: never run twice");
        // This time it runs; the node waits for a new boot id.
        let mut running = result(ActionState::Running, None, "", 34);
        running.id = again.id.clone();
        w.action = Some(running);
        w.now = t(34);
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::WaitReturn);
        assert!(
            matches!(w.advance(&mut run), Advance::Wait(_)),
            "running under the old boot: wait, do not ask again"
        );
        w.node.boot_id = "boot-2".into();
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::Postcheck);
    }

    #[test]
    fn after_the_patch_a_fresh_reboot_check_decides_the_reboot() {
        let mut w = World::new();
        let mut run = run_in(Step::Patch, Role::Compute, 15);
        run.action_id = "c1.cmp1.1.patch".into();
        w.action = Some(result(ActionState::Succeeded, Some(0), "ok", 18));
        // The last check ran before the patch finished: wait for a new one.
        w.report = report(19, Some((false, 10)), healthy());
        assert!(matches!(w.advance(&mut run), Advance::Wait(_)));
        w.report = report(19, Some((true, 19)), healthy());
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::Reboot);
        assert_eq!(run.patched_at, Some(t(18)));
    }

    #[test]
    fn a_running_action_is_asked_again_only_when_its_ask_time_was_cleared() {
        // After a store outage the runner clears `asked_at`: the agent may
        // hold a result the store refused, and a request by the same id
        // makes it answer with it.
        let mut w = World::new();
        let mut run = run_in(Step::Patch, Role::Compute, 15);
        run.action_id = "c1.cmp1.1.patch".into();
        run.action_node = "cmp1".into();
        run.asked_at = Some(t(15));
        w.action = Some(result(ActionState::Running, None, "", 16));
        w.now = t(100);
        assert!(
            matches!(w.advance(&mut run), Advance::Wait(_)),
            "running: wait"
        );
        run.asked_at = None;
        assert!(
            matches!(w.advance(&mut run), Advance::Send { .. }),
            "cleared: ask"
        );
        assert_eq!(run.asked_at, Some(t(100)), "and the wait starts again");
    }

    #[test]
    fn a_reboot_check_that_arrives_before_the_patch_result_still_counts() {
        // The order in which the check and the result reach the server does
        // not matter: the check's time against the patch's end decides.
        let mut w = World::new();
        let mut run = run_in(Step::Patch, Role::Compute, 15);
        run.action_id = "c1.cmp1.1.patch".into();
        run.asked_at = Some(t(15));
        w.report = report(19, Some((false, 19)), healthy());
        w.action = Some(result(ActionState::Running, None, "", 18));
        assert!(matches!(w.advance(&mut run), Advance::Wait(_)));
        w.action = Some(result(ActionState::Succeeded, Some(0), "ok", 18));
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::Postcheck);
        // No reboot: the same check lets postcheck pass.
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::Undrain);
    }

    #[test]
    fn return_is_a_new_boot_id_and_postcheck_wants_the_node_as_it_was() {
        let mut w = World::new();
        let mut run = run_in(Step::WaitReturn, Role::Compute, 15);
        run.patched_at = Some(t(14));
        run.containers = vec!["nova_compute".into()];
        assert!(
            matches!(w.advance(&mut run), Advance::Wait(_)),
            "same boot id"
        );
        w.node.boot_id = "boot-2".into();
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::Postcheck);
        // Back, but nova_compute still starting and reboot-required set.
        w.report = report(
            30,
            Some((true, 30)),
            vec![container(
                "nova_compute",
                ContainerState::Running,
                ContainerHealth::Starting,
            )],
        );
        assert_eq!(
            w.advance(&mut run),
            Advance::Wait("container nova_compute is starting".into())
        );
        w.report = report(31, Some((true, 31)), healthy());
        assert_eq!(
            w.advance(&mut run),
            Advance::Wait("the node still asks for a reboot: /var/run/reboot-required".into())
        );
        // A fresh session's first report: not required, but never checked.
        let mut unchecked = report(32, Some((false, 32)), healthy());
        if let Some(r) = unchecked.reboot.as_mut() {
            r.checked_at = None;
        }
        w.report = unchecked;
        assert_eq!(
            w.advance(&mut run),
            Advance::Wait("waiting for a reboot check since the patch and boot".into())
        );
        w.report = report(32, Some((false, 32)), healthy());
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::Undrain);
    }

    #[test]
    fn drain_is_delegated_to_a_healthy_node_of_the_named_role_with_the_target_as_argument() {
        let mut w = World::new();
        w.spec.hooks.insert(
            Role::Compute,
            RoleHooks {
                drain: Some("nova-drain".into()),
                undrain: None,
                run_on: RunOn::Role(Role::Controller),
            },
        );
        w.fleet = fleet(&[
            ("ctl1", Role::Controller, false),
            ("ctl2", Role::Controller, true),
        ]);
        let mut run = run_in(Step::Drain, Role::Compute, 15);
        let Advance::Send { node, request } = w.advance(&mut run) else {
            panic!("a hook request")
        };
        assert_eq!(node, "ctl2", "ctl1 is unhealthy");
        assert_eq!(
            (request.kind, request.name.as_str(), request.args.clone()),
            (ActionKind::Hook, "nova-drain", vec!["cmp1".to_owned()])
        );
        // No undrain hook for compute: undrain passes straight to done.
        let mut undrain = run_in(Step::Undrain, Role::Compute, 15);
        assert_eq!(w.advance(&mut undrain), Advance::Moved);
        assert_eq!(undrain.step, Step::Done);
        // Nobody to run it: wait (the step's timeout decides).
        w.fleet = fleet(&[("ctl1", Role::Controller, false)]);
        let mut run = run_in(Step::Drain, Role::Compute, 15);
        assert_eq!(
            w.advance(&mut run),
            Advance::Wait("no online, healthy controller node to run hook nova-drain".into())
        );
    }

    #[test]
    fn a_step_past_its_timeout_fails_with_what_it_waited_for() {
        let mut w = World::new();
        w.spec.timeouts.return_secs = 60;
        let mut run = run_in(Step::WaitReturn, Role::Compute, 0);
        run.note = "waiting for cmp1 to come back with a new boot id".into();
        w.now = t(61);
        assert_eq!(w.advance(&mut run), Advance::Failed);
        assert_eq!(
            run.note,
            "wait-return did not finish within 60s: waiting for cmp1 to come back with a new boot id"
        );
        assert_eq!(run.finished_at, Some(t(61)));
    }

    #[test]
    fn a_node_that_fails_after_its_drain_is_left_drained_with_the_hook_that_undoes_it() {
        let mut w = World::new();
        with_compute_hooks(&mut w);
        let mut run = run_in(Step::Patch, Role::Compute, 15);
        run.action_id = "c1.cmp1.1.patch".into();
        w.action = Some(result(ActionState::Failed, Some(100), "E: broken\n", 16));
        let before = run.clone();
        assert_eq!(w.advance(&mut run), Advance::Failed);
        assert_eq!(
            (run.step, run.left_drained.as_deref()),
            (Step::Failed, Some("nova-undrain"))
        );
        assert_eq!(
            failure_detail("c1", &before, &run),
            "patch on cmp1 failed (exit code 100): E: broken; left drained: run hook nova-undrain to undo, or `campaign undrain c1 cmp1`"
        );
        // A drain that timed out before it was ever asked drained nothing.
        w.fleet = fleet(&[]);
        w.action = None;
        let mut drain = run_in(Step::Drain, Role::Compute, 0);
        w.now = t(1_801);
        assert_eq!(w.advance(&mut drain), Advance::Failed);
        assert_eq!(drain.left_drained, None, "{}", drain.note);
        // Asked, then timed out: it may have drained.
        let mut drain = run_in(Step::Drain, Role::Compute, 0);
        drain.action_id = "c1.cmp1.1.drain".into();
        assert_eq!(w.advance(&mut drain), Advance::Failed);
        assert_eq!(drain.left_drained.as_deref(), Some("nova-undrain"));
        // No undrain hook for the role: nothing to undo, nothing said.
        w.spec.hooks.clear();
        let mut wait = run_in(Step::WaitReturn, Role::Compute, 0);
        assert_eq!(w.advance(&mut wait), Advance::Failed);
        assert_eq!(wait.left_drained, None);
    }

    #[test]
    fn undrain_on_failure_runs_the_undrain_then_ends_failed_with_the_first_reason() {
        let mut w = World::new();
        with_compute_hooks(&mut w);
        w.spec.undrain_on_failure = true;
        let mut run = run_in(Step::Patch, Role::Compute, 15);
        run.action_id = "c1.cmp1.1.patch".into();
        w.action = Some(result(ActionState::Failed, Some(100), "E: broken\n", 16));
        let before = run.clone();
        assert_eq!(w.advance(&mut run), Advance::Failed);
        assert_eq!(run.step, Step::Undrain, "it goes on to its undrain");
        assert_eq!(run.finished_at, None);
        let why = "patch on cmp1 failed (exit code 100): E: broken";
        assert_eq!(run.failure.as_deref(), Some(why));
        assert!(failure_detail("c1", &before, &run).contains("undrain_on_failure"));
        // The undrain hook is asked of a controller, under the step's id.
        w.action = None;
        let Advance::Send { node, request } = w.advance(&mut run) else {
            panic!("an undrain request")
        };
        assert_eq!(
            (node.as_str(), request.name.as_str(), request.id.as_str()),
            ("ctl1", "nova-undrain", "c1.cmp1.1.undrain")
        );
        let mut done = result(ActionState::Succeeded, Some(0), "", 21);
        done.id = request.id.clone();
        done.node = "ctl1".into();
        w.action = Some(done);
        let before = run.clone();
        assert_eq!(w.advance(&mut run), Advance::Failed);
        assert_eq!(
            (
                run.step,
                run.note.as_str(),
                run.left_drained.as_deref(),
                run.failure.as_deref()
            ),
            (Step::Failed, why, None, None)
        );
        assert_eq!(
            failure_detail("c1", &before, &run),
            format!("undrain done, the node ends failed: {why}")
        );
        // An undrain that fails too leaves it drained, with both reasons.
        let mut run = before;
        let mut bad = result(ActionState::Failed, Some(1), "openstack: 503\n", 21);
        bad.node = "ctl1".into();
        w.action = Some(bad);
        assert_eq!(w.advance(&mut run), Advance::Failed);
        assert_eq!(run.left_drained.as_deref(), Some("nova-undrain"));
        assert_eq!(
            run.note,
            format!(
                "{why}; then its undrain failed: nova-undrain on ctl1 failed (exit code 1): openstack: 503"
            )
        );
        assert_eq!(run.failure, None);
    }

    #[test]
    fn a_precheck_guard_on_a_controller_that_failed_here_pauses_and_the_node_goes_back() {
        let mut w = World::new();
        w.node = node("ctl2", Role::Controller, "boot-1");
        w.fleet = fleet(&[
            ("ctl1", Role::Controller, false),
            ("ctl2", Role::Controller, true),
        ]);
        let mut run = run_in(Step::Precheck, Role::Controller, 15);
        run.node = "ctl2".into();
        // ctl1 is down but did not fail here: the guard waits.
        assert_eq!(
            w.advance(&mut run),
            Advance::Wait("controller quorum guard: ctl1 is offline or unhealthy".into())
        );
        w.failed.insert("ctl1".into());
        let why = "controller quorum guard cannot be met: ctl1 failed in this campaign and is offline or unhealthy";
        assert_eq!(w.advance(&mut run), Advance::Pause(why.into()));
        assert_eq!((run.step, run.started_at), (Step::Pending, None));
    }

    #[test]
    fn an_alert_hold_keeps_a_prechecked_node_from_its_drain_and_fails_nothing() {
        let mut w = World::new();
        w.hold = Some("held: prometheus at prom:9090 unreachable: refused".into());
        let mut run = run_in(Step::Precheck, Role::Compute, 15);
        assert_eq!(
            w.advance(&mut run),
            Advance::Wait("the drain held: prometheus at prom:9090 unreachable: refused".into())
        );
        assert_eq!(run.step, Step::Precheck);
        // Held past the precheck's timeout: back to pending, not failed.
        w.now = t(15 + 121);
        let Advance::Held(why) = w.advance(&mut run) else {
            panic!("held")
        };
        assert_eq!(
            why,
            "precheck waited 120s, the drain held: prometheus at prom:9090 unreachable: refused; back to pending until nothing holds"
        );
        assert_eq!((run.step, run.started_at), (Step::Pending, None));
        // Without a hold the same precheck drains (no hooks: on to the patch).
        w.hold = None;
        w.now = t(20);
        let mut run = run_in(Step::Precheck, Role::Compute, 15);
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!(run.step, Step::Drain);
    }

    #[test]
    fn an_alert_hold_does_not_touch_a_node_already_draining_or_later() {
        let mut w = World::new();
        w.hold = Some("held by alert X{} firing".into());
        let mut run = run_in(Step::Patch, Role::Compute, 15);
        assert!(matches!(w.advance(&mut run), Advance::Send { .. }));
        let mut run = run_in(Step::Drain, Role::Compute, 15);
        assert_eq!(w.advance(&mut run), Advance::Moved, "its drain goes on");
    }

    #[test]
    fn a_retried_node_stays_left_drained_until_an_undrain_of_it_succeeds() {
        let mut w = World::new();
        with_compute_hooks(&mut w);
        // Attempt 1 failed after its drain; an operator retries it.
        let mut run = run_in(Step::Precheck, Role::Compute, 15);
        run.attempt = 2;
        run.left_drained = Some("nova-undrain".into());
        // Precheck fails (the disk filled up): it is still drained from
        // attempt 1, and says so.
        w.now = t(15 + 121);
        assert_eq!(w.advance(&mut run), Advance::Failed);
        assert_eq!(run.left_drained.as_deref(), Some("nova-undrain"));
        // Its undrain step succeeds on a later attempt: the mark goes.
        let mut run = run_in(Step::Undrain, Role::Compute, 15);
        run.left_drained = Some("nova-undrain".into());
        run.action_id = "c1.cmp1.2.undrain".into();
        w.now = t(20);
        w.action = Some(result(ActionState::Succeeded, Some(0), "", 19));
        assert_eq!(w.advance(&mut run), Advance::Moved);
        assert_eq!((run.step, run.left_drained.clone()), (Step::Done, None));
    }
}
