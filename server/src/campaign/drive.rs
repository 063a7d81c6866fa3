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
            let silent = ctx.action.is_none() || unanswered(run, ctx);
            if run.action_id.is_empty() || (silent && !gone) {
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
    // A request the server holds no record of (the node had no session to
    // take it) is tried at every pass and changes nothing to store; only a
    // first request, or one handed to a session, starts the wait for an
    // answer.
    if run.action_id.is_empty() || ctx.action.is_some() {
        run.asked_at = Some(ctx.now);
    }
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
    if unanswered(run, ctx) {
        let (on, args) = (run.action_node.clone(), resend_args(run, name));
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
    // A new session's first report carries the agent's reboot state before
    // its first check ran (never checked): wait for a real check, one that
    // ran after the patch.
    if let Some(reboot) = &report.reboot {
        let fresh = match (reboot.checked_at, run.patched_at) {
            (Some(checked), Some(patched)) => checked >= patched,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !fresh {
            return Err("waiting for a reboot check since the patch and boot".into());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::spec::RoleHooks;
    use rollcall_proto::model::{
        Container, ContainersSection, DisksSection, Filesystem, RebootReason, RebootSection,
    };

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_795_000_000_000 + secs * 1_000)
    }

    fn node(name: &str, role: Role, boot: &str) -> Node {
        let mut n = Node::new(name, role, t(0));
        n.online = true;
        n.boot_id = boot.into();
        n
    }

    fn container(name: &str, state: ContainerState, health: ContainerHealth) -> Container {
        Container {
            name: name.into(),
            state,
            health,
            ..Default::default()
        }
    }

    fn report(at: i64, reboot: Option<(bool, i64)>, containers: Vec<Container>) -> Report {
        Report {
            collected_at: t(at),
            containers: Some(ContainersSection {
                available: true,
                containers,
                ..Default::default()
            }),
            reboot: reboot.map(|(required, checked)| RebootSection {
                required,
                reasons: if required {
                    vec![RebootReason {
                        source: "file".into(),
                        detail: "/var/run/reboot-required".into(),
                        packages: vec![],
                    }]
                } else {
                    vec![]
                },
                checked_at: Some(t(checked)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn healthy() -> Vec<Container> {
        vec![
            container(
                "nova_compute",
                ContainerState::Running,
                ContainerHealth::Healthy,
            ),
            container("cron", ContainerState::Running, ContainerHealth::None),
        ]
    }

    fn fleet(entries: &[(&str, Role, bool)]) -> BTreeMap<String, Health> {
        entries
            .iter()
            .map(|(n, role, ok)| {
                (
                    (*n).to_owned(),
                    Health {
                        role: *role,
                        online: true,
                        healthy: *ok,
                    },
                )
            })
            .collect()
    }

    fn run_in(step: Step, role: Role, since: i64) -> NodeRun {
        let mut r = NodeRun::new("cmp1".into(), role, t(0));
        r.enter(step, t(since));
        r.boot_id_before = "boot-1".into();
        r
    }

    struct World {
        spec: CampaignSpec,
        fleet: BTreeMap<String, Health>,
        node: Node,
        report: Report,
        action: Option<ActionResult>,
        now: Timestamp,
    }

    impl World {
        fn new() -> Self {
            World {
                spec: CampaignSpec::default(),
                fleet: fleet(&[
                    ("ctl1", Role::Controller, true),
                    ("ctl2", Role::Controller, true),
                ]),
                node: node("cmp1", Role::Compute, "boot-1"),
                report: report(10, Some((false, 10)), healthy()),
                action: None,
                now: t(20),
            }
        }

        fn advance(&self, run: &mut NodeRun) -> Advance {
            advance(
                run,
                &Ctx {
                    campaign: "c1",
                    spec: &self.spec,
                    fleet: &self.fleet,
                    view: View {
                        node: Some(&self.node),
                        report: Some(&self.report),
                    },
                    action: self.action.as_ref(),
                    now: self.now,
                },
            )
        }
    }

    fn result(state: ActionState, exit: Option<i32>, tail: &str, finished: i64) -> ActionResult {
        ActionResult {
            id: "c1.cmp1.1.patch".into(),
            node: "cmp1".into(),
            state,
            exit_code: exit,
            output_tail: tail.into(),
            error: String::new(),
            started_at: Some(t(finished - 1)),
            finished_at: Some(t(finished)),
            boot_id: "boot-1".into(),
        }
    }

    #[test]
    fn precheck_names_what_blocks_it() {
        let spec = CampaignSpec::default();
        let run = run_in(Step::Precheck, Role::Compute, 0);
        let n = node("cmp1", Role::Compute, "b");
        let ok = fleet(&[]);
        let check = |r: &Report, n: &Node, f: &BTreeMap<String, Health>| {
            precheck(
                &spec,
                &run,
                View {
                    node: Some(n),
                    report: Some(r),
                },
                f,
            )
        };
        assert_eq!(
            check(&report(0, None, healthy()), &n, &ok),
            Ok(vec!["nova_compute".to_owned(), "cron".to_owned()])
        );
        let mut sick = healthy();
        sick[0].health = ContainerHealth::Unhealthy;
        assert_eq!(
            check(&report(0, None, sick), &n, &ok),
            Err("container nova_compute is unhealthy".into())
        );
        let mut full = report(0, None, healthy());
        full.disks = Some(DisksSection {
            filesystems: vec![Filesystem {
                mount_point: "/var".into(),
                used_bytes: 95,
                available_bytes: 5,
                ..Default::default()
            }],
            error: String::new(),
        });
        assert_eq!(
            check(&full, &n, &ok),
            Err("/var has 5% free, below min_free_percent 10".into())
        );
        let mut off = n.clone();
        off.online = false;
        assert_eq!(
            check(&report(0, None, healthy()), &off, &ok),
            Err("the node is offline".into())
        );
        // A controller goes only while every other controller is healthy.
        let ctl = node("ctl1", Role::Controller, "b");
        let mut ctl_run = run.clone();
        ctl_run.node = "ctl1".into();
        let degraded = fleet(&[
            ("ctl1", Role::Controller, true),
            ("ctl2", Role::Controller, false),
        ]);
        assert_eq!(
            precheck(
                &spec,
                &ctl_run,
                View {
                    node: Some(&ctl),
                    report: Some(&report(0, None, vec![]))
                },
                &degraded
            ),
            Err("controller quorum guard: ctl2 is offline or unhealthy".into())
        );
    }

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
}
