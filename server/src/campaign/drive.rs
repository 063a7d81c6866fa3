//! How one node moves through its steps: pure decisions over what the fleet
//! knows about the node now and what its agent said about the current
//! step's action. The scheduler persists every change this makes before it
//! sends anything, so a restart repeats no finished step.

use std::collections::BTreeMap;

use rollcall_proto::model::{
    ActionKind, ActionRequest, ActionResult, ActionState, ContainerHealth, ContainerState, Node,
    Report, Role,
};
use rollcall_proto::timestamp::Timestamp;

use super::lifecycle::{Facts, Step};
use super::record::NodeRun;
use super::schedule::Health;
use super::spec::{CampaignSpec, RebootPolicy, RunOn};

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
    /// The node failed; `run` is already `failed` with the reason in `note`.
    Failed,
}

/// Moves `run` (an active node) on as far as one look at the facts allows.
pub fn advance(run: &mut NodeRun, ctx: &Ctx<'_>) -> Advance {
    let elapsed = ctx.now.since(run.since);
    if run.step.timed_out(&ctx.spec.timeouts, elapsed) {
        let limit = run.step.timeout(&ctx.spec.timeouts).unwrap_or_default();
        let last = if run.note.is_empty() {
            String::new()
        } else {
            format!(": {}", run.note)
        };
        return fail(
            run,
            ctx.now,
            format!(
                "{} did not finish within {}s{last}",
                run.step,
                limit.as_secs()
            ),
        );
    }
    match run.step {
        Step::Precheck => match precheck(ctx.spec, run, ctx.view, ctx.fleet) {
            Ok(containers) => {
                run.containers = containers;
                run.boot_id_before = ctx.view.node.map(|n| n.boot_id.clone()).unwrap_or_default();
                move_to(run, Step::Drain, ctx.now)
            }
            Err(why) => Advance::Wait(why),
        },
        Step::Drain | Step::Undrain => hook_step(run, ctx),
        Step::Patch => match action_state(run, ctx, ActionKind::Patch, "") {
            Err(advance) => advance,
            Ok(done) => {
                let finished = done.finished_at.unwrap_or(ctx.now);
                run.patched_at = Some(finished);
                match reboot_required_after(ctx.view.report, finished) {
                    None => Advance::Wait("waiting for a reboot check after the patch".into()),
                    Some(reboot_required) => {
                        let next = Step::Patch.next(ctx.spec.reboot, Facts { reboot_required });
                        move_to(run, next, ctx.now)
                    }
                }
            }
        },
        Step::Reboot => {
            let gone = ctx
                .view
                .node
                .is_none_or(|n| !n.online || n.boot_id != run.boot_id_before);
            if run.action_id.is_empty() || (ctx.action.is_none() && !gone) {
                let target = run.node.clone();
                return send(run, ctx, ActionKind::Reboot, "", Vec::new(), &target);
            }
            match ctx.action.map(|a| a.state) {
                Some(ActionState::Failed | ActionState::Rejected) => {
                    let a = ctx.action.expect("matched Some");
                    fail(run, ctx.now, action_failure("reboot", a))
                }
                Some(ActionState::Running | ActionState::Succeeded) => {
                    move_to(run, Step::WaitReturn, ctx.now)
                }
                _ if gone => move_to(run, Step::WaitReturn, ctx.now),
                _ => Advance::Wait("reboot asked for".into()),
            }
        }
        Step::WaitReturn => {
            if let Some(a) = ctx.action
                && matches!(a.state, ActionState::Failed | ActionState::Rejected)
            {
                return fail(run, ctx.now, action_failure("reboot", a));
            }
            match ctx.view.node {
                Some(n) if n.online && !n.boot_id.is_empty() && n.boot_id != run.boot_id_before => {
                    // Keep the reboot's action id: its result arrives after
                    // the return and belongs in the audit log.
                    let (id, node) = (run.action_id.clone(), run.action_node.clone());
                    let moved = move_to(run, Step::Postcheck, ctx.now);
                    run.action_id = id;
                    run.action_node = node;
                    moved
                }
                _ => Advance::Wait(format!(
                    "waiting for {} to come back with a new boot id",
                    run.node
                )),
            }
        }
        Step::Postcheck => match postcheck(ctx.spec.reboot, run, ctx.view) {
            Ok(()) => move_to(run, Step::Undrain, ctx.now),
            Err(why) => Advance::Wait(why),
        },
        Step::Pending | Step::Done | Step::Failed | Step::Skipped => Advance::Wait(String::new()),
    }
}

fn move_to(run: &mut NodeRun, step: Step, now: Timestamp) -> Advance {
    run.enter(step, now);
    run.note.clear();
    Advance::Moved
}

fn fail(run: &mut NodeRun, now: Timestamp, why: String) -> Advance {
    run.enter(Step::Failed, now);
    run.note = why;
    Advance::Failed
}

fn action_failure(what: &str, a: &ActionResult) -> String {
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

fn send(
    run: &mut NodeRun,
    ctx: &Ctx<'_>,
    kind: ActionKind,
    name: &str,
    args: Vec<String>,
    on: &str,
) -> Advance {
    run.action_id = run.action_id_for(ctx.campaign, run.step);
    run.action_node = on.to_owned();
    let timeout = run.step.timeout(&ctx.spec.timeouts).unwrap_or_default();
    Advance::Send {
        node: on.to_owned(),
        request: ActionRequest {
            id: run.action_id.clone(),
            kind,
            name: name.to_owned(),
            args,
            timeout_secs: u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX),
        },
    }
}

/// The current step's action: not asked yet (ask), still running (wait),
/// failed (fail the node) or succeeded (`Ok`).
fn action_state<'a>(
    run: &mut NodeRun,
    ctx: &Ctx<'a>,
    kind: ActionKind,
    name: &str,
) -> Result<&'a ActionResult, Advance> {
    if run.action_id.is_empty() {
        let target = run.node.clone();
        return Err(send(run, ctx, kind, name, Vec::new(), &target));
    }
    match ctx.action {
        Some(a) if a.state == ActionState::Succeeded => Ok(a),
        Some(a) if a.state.is_final() => {
            let what = if name.is_empty() {
                run.step.as_str()
            } else {
                name
            };
            Err(fail(run, ctx.now, action_failure(what, a)))
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
            let (on, args) = (run.action_node.clone(), resend_args(run, name));
            Err(send(run, ctx, kind, name, args, &on))
        }
    }
}

fn resend_args(run: &NodeRun, name: &str) -> Vec<String> {
    if name.is_empty() {
        Vec::new()
    } else {
        vec![run.node.clone()]
    }
}

fn hook_step(run: &mut NodeRun, ctx: &Ctx<'_>) -> Advance {
    let hooks = ctx.spec.hooks.get(&run.role);
    let name = match run.step {
        Step::Drain => hooks.and_then(|h| h.drain.clone()),
        _ => hooks.and_then(|h| h.undrain.clone()),
    };
    let after = if run.step == Step::Drain {
        Step::Patch
    } else {
        Step::Done
    };
    let Some(name) = name else {
        return move_to(run, after, ctx.now);
    };
    if run.action_id.is_empty() {
        let run_on = hooks.map(|h| h.run_on).unwrap_or_default();
        let on = match run_on {
            RunOn::Target => run.node.clone(),
            RunOn::Role(role) => match delegate(ctx.fleet, role, &run.node) {
                Some(n) => n,
                None => {
                    return Advance::Wait(format!(
                        "no online, healthy {role} node to run hook {name}"
                    ));
                }
            },
        };
        let target = run.node.clone();
        return send(run, ctx, ActionKind::Hook, &name, vec![target], &on);
    }
    match action_state(run, ctx, ActionKind::Hook, &name) {
        Ok(_) => move_to(run, after, ctx.now),
        Err(advance) => advance,
    }
}

/// The first online, healthy node of `role` by name, never the target.
fn delegate(fleet: &BTreeMap<String, Health>, role: Role, target: &str) -> Option<String> {
    fleet
        .iter()
        .find(|(name, h)| h.role == role && h.available() && name.as_str() != target)
        .map(|(name, _)| name.clone())
}

/// Whether the node asks for a reboot, judged by a check that ran after
/// `since`; `None` while no such check has been reported. A node that
/// reports no reboot section does not check: it never asks.
fn reboot_required_after(report: Option<&Report>, since: Timestamp) -> Option<bool> {
    let report = report?;
    match &report.reboot {
        None => Some(false),
        Some(r) if r.checked_at.is_some_and(|t| t >= since) => Some(r.required),
        Some(_) => None,
    }
}

/// Precheck: the node may be taken out now. Returns the containers running.
pub fn precheck(
    spec: &CampaignSpec,
    run: &NodeRun,
    view: View<'_>,
    fleet: &BTreeMap<String, Health>,
) -> Result<Vec<String>, String> {
    let node = view
        .node
        .filter(|n| n.online)
        .ok_or("the node is offline")?;
    let report = view.report.ok_or("no report from the node yet")?;
    if let Some(disks) = &report.disks {
        for mount in ["/", "/var"] {
            if let Some(fs) = disks.filesystems.iter().find(|f| f.mount_point == mount) {
                let free = 100.0 - fs.used_percent();
                if free < f64::from(spec.min_free_percent) {
                    return Err(format!(
                        "{mount} has {free:.0}% free, below min_free_percent {}",
                        spec.min_free_percent
                    ));
                }
            }
        }
    }
    let running = containers_ready(report, None)?;
    if node.role == Role::Controller
        && let Some((name, _)) = fleet
            .iter()
            .find(|(name, h)| h.role == Role::Controller && !h.available() && **name != run.node)
    {
        return Err(format!(
            "controller quorum guard: {name} is offline or unhealthy"
        ));
    }
    Ok(running)
}

/// Every container (or every one of `wanted`) runs, and none is unhealthy
/// or still starting. Returns the names of those running.
fn containers_ready(report: &Report, wanted: Option<&[String]>) -> Result<Vec<String>, String> {
    let Some(section) = &report.containers else {
        return Ok(Vec::new());
    };
    if !section.available {
        return Err(format!("container engine unavailable: {}", section.error));
    }
    let mut running = Vec::new();
    for c in &section.containers {
        if wanted.is_some_and(|w| !w.contains(&c.name)) {
            continue;
        }
        if c.is_down() {
            return Err(format!("container {} is {}", c.name, c.state));
        }
        if matches!(
            c.health,
            ContainerHealth::Unhealthy | ContainerHealth::Starting
        ) {
            return Err(format!("container {} is {}", c.name, c.health));
        }
        if c.state == ContainerState::Running {
            running.push(c.name.clone());
        }
    }
    if let Some(wanted) = wanted
        && let Some(missing) = wanted.iter().find(|w| !running.contains(w))
    {
        return Err(format!("container {missing} is not running again yet"));
    }
    Ok(running)
}

/// Postcheck: the node came back as it was. Containers that ran at
/// precheck run and are healthy, the reboot-required flag is cleared (unless
/// the policy never reboots), and the report is newer than the patch.
pub fn postcheck(policy: RebootPolicy, run: &NodeRun, view: View<'_>) -> Result<(), String> {
    view.node
        .filter(|n| n.online)
        .ok_or("the node is offline")?;
    let report = view.report.ok_or("no report from the node yet")?;
    if let Some(patched) = run.patched_at
        && report.collected_at < patched
    {
        return Err("waiting for a report newer than the patch".into());
    }
    containers_ready(report, Some(&run.containers))?;
    if policy != RebootPolicy::Never && report.reboot_required() {
        let why = report
            .reboot
            .as_ref()
            .and_then(|r| r.reasons.first())
            .map(|r| format!(": {}", r.detail))
            .unwrap_or_default();
        return Err(format!("the node still asks for a reboot{why}"));
    }
    Ok(())
}
