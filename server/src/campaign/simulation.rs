//! Random campaigns run end to end through the real decisions: the pure
//! functions the scheduler calls (`control`, `drive::advance`,
//! `schedule::next_steps`), in the order its pass calls them, against
//! simulated agents that answer late, fail, lose requests, drop their
//! connection and reboot. What is checked holds for every fleet, every
//! spec and every outcome; the counts at the end prove the runs went
//! through every part of the step graph.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rollcall_proto::model::{
    ActionKind, ActionRequest, ActionResult, ActionState, Container, ContainerHealth,
    ContainerState, ContainersSection, Node, RebootSection, Report, Role,
};
use rollcall_proto::timestamp::Timestamp;

use super::api::Control;
use super::control::{self, Change, Selection};
use super::drive::{self, Advance, Ctx, View};
use super::fixtures::t;
use super::gate;
use super::lifecycle::{Event, Facts, Step};
use super::record::{Campaign, NodeRun, Phase};
use super::runner::fleet_health;
use super::schedule::{self, Decision};
use super::spec::{Amount, CampaignSpec, RebootPolicy, RoleGates, RoleHooks, RunOn, Timeouts};

/// A node and its simulated agent.
struct Agent {
    node: Node,
    report: Report,
    /// Actions it holds: running until they end.
    running: BTreeMap<String, ActionRequest>,
    /// Every action id it ever got (an agent never runs one twice).
    known: BTreeSet<String>,
    /// Offline until then; rebooting for this action, if it is.
    away: Option<(Timestamp, Option<String>)>,
}

impl Agent {
    fn new(name: &str, role: Role) -> Self {
        let mut node = Node::new(name, role, t(0));
        node.online = true;
        node.boot_id = format!("{name}-boot-0");
        let mut agent = Agent {
            node,
            report: Report::default(),
            running: BTreeMap::new(),
            known: BTreeSet::new(),
            away: None,
        };
        agent.set_health(true, t(0));
        agent
    }

    fn set_health(&mut self, healthy: bool, now: Timestamp) {
        self.node.containers_unhealthy = u32::from(!healthy);
        let health = if healthy {
            ContainerHealth::Healthy
        } else {
            ContainerHealth::Unhealthy
        };
        self.report.collected_at = now;
        self.report.containers = Some(ContainersSection {
            available: true,
            containers: vec![Container {
                name: "service".into(),
                state: ContainerState::Running,
                health,
                ..Default::default()
            }],
            ..Default::default()
        });
    }

    /// A reboot check that ran now.
    fn checked(&mut self, required: bool, now: Timestamp) {
        self.report.collected_at = now;
        self.report.reboot = Some(RebootSection {
            required,
            checked_at: Some(now),
            ..Default::default()
        });
    }
}

/// Out of 100: a gate hook's try fails (the cluster is not whole yet).
const GATE_FLAKE: u32 = 25;

/// One seed in four runs in a world where nothing goes wrong.
fn calm(seed: u64) -> bool {
    seed.is_multiple_of(4)
}

/// How rough the world is for one seed.
struct Weather {
    /// Out of 100: an action fails (a third of that: is refused); a
    /// request is lost on its way; a node drops its connection; a node's
    /// health flips, per round.
    fail: u32,
    lose: u32,
    drop: u32,
    flap: u32,
}

struct Sim {
    rng: fastrand::Rng,
    weather: Weather,
    spec: CampaignSpec,
    campaign: Campaign,
    runs: BTreeMap<String, NodeRun>,
    agents: BTreeMap<String, Agent>,
    /// The server's latest stored word on each action.
    ledger: BTreeMap<String, ActionResult>,
    /// Requests on their way, delivered next round.
    wire: Vec<(String, ActionRequest)>,
    /// Every request ever sent by id: asking again never asks otherwise.
    asked: BTreeMap<String, (String, ActionRequest)>,
    /// Nodes whose drain hook was sent and no undrain of which succeeded.
    drained: BTreeSet<String>,
    guard_since: Option<Timestamp>,
    now: Timestamp,
    /// Every step change seen, and how often.
    moves: HashMap<(Step, Step), usize>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let calm = calm(seed);
        let weather = if calm {
            Weather {
                fail: 0,
                lose: 0,
                drop: 0,
                flap: 0,
            }
        } else {
            Weather {
                fail: rng.u32(0..12),
                lose: rng.u32(0..20),
                drop: rng.u32(0..4),
                flap: rng.u32(0..3),
            }
        };
        let mut spec = CampaignSpec::default();
        spec.concurrency
            .insert(Role::Compute, Amount::Count(rng.u32(1..4)));
        spec.concurrency
            .insert(Role::Storage, Amount::Percent(rng.u32(20..80)));
        spec.error_budget = Amount::Count(rng.u32(0..4));
        spec.reboot = [
            RebootPolicy::IfRequired,
            RebootPolicy::Always,
            RebootPolicy::Never,
        ][rng.usize(0..3)];
        spec.undrain_on_failure = rng.bool();
        spec.skip_up_to_date = false;
        if !calm {
            let mut secs = || rng.u64(60..400);
            spec.timeouts = Timeouts {
                precheck_secs: secs(),
                drain_secs: secs(),
                patch_secs: secs(),
                reboot_secs: secs(),
                return_secs: secs(),
                postcheck_secs: secs(),
                undrain_secs: secs(),
                gate_secs: secs(),
                guard_secs: secs(),
            };
        }
        // Gates: hooks that fail now and then as a cluster that is not yet
        // whole does (`GATE_FLAKE`), in every weather.
        for (role, run_on) in [
            (Role::Compute, RunOn::Role(Role::Controller)),
            (Role::Storage, RunOn::Target),
            (Role::Controller, RunOn::Target),
        ] {
            if rng.bool() {
                let mut gates = RoleGates {
                    run_on,
                    interval_secs: rng.u64(5..30),
                    ..RoleGates::default()
                };
                if rng.bool() {
                    gates.before = vec![format!("{role}-spare"), format!("{role}-quorum")];
                    // As `CampaignSpec::validate` asks of a role with a
                    // before gate.
                    spec.concurrency.insert(role, Amount::Count(1));
                }
                if rng.bool() {
                    gates.after = vec![format!("{role}-whole")];
                }
                spec.gates.insert(role, gates);
            }
        }
        for (role, run_on) in [
            (Role::Compute, RunOn::Role(Role::Controller)),
            (Role::Storage, RunOn::Target),
        ] {
            if rng.bool() {
                spec.hooks.insert(
                    role,
                    RoleHooks {
                        drain: Some(format!("{role}-drain")),
                        undrain: Some(format!("{role}-undrain")),
                        run_on,
                    },
                );
            }
        }
        let mut agents = BTreeMap::new();
        let mut selection = Selection::default();
        for (role, prefix, n) in [
            (Role::Compute, "cmp", rng.usize(0..8)),
            (Role::Storage, "sto", rng.usize(0..4)),
            (Role::Controller, "ctl", rng.usize(1..4)),
        ] {
            for i in 0..n {
                let name = format!("{prefix}{i}");
                let agent = Agent::new(&name, role);
                // Some nodes of the fleet are not in the campaign.
                if calm || rng.u8(0..10) < 8 {
                    selection.add(&spec, &agent.node, Some(&agent.report));
                }
                agents.insert(name, agent);
            }
        }
        let now = t(0);
        let Change { write, .. } =
            control::open("c1", &spec, String::new(), "sim", &selection, now);
        Sim {
            rng,
            weather,
            spec,
            campaign: write.campaign.expect("a new campaign is written whole"),
            runs: write
                .nodes
                .into_iter()
                .map(|(_, r)| (r.node.clone(), r))
                .collect(),
            agents,
            ledger: BTreeMap::new(),
            wire: Vec::new(),
            asked: BTreeMap::new(),
            drained: BTreeSet::new(),
            guard_since: None,
            now,
            moves: HashMap::new(),
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.u32(0..100) < percent
    }

    fn take(&mut self, change: Change) {
        if let Some(c) = change.write.campaign {
            self.campaign = c;
        }
        for (_, run) in change.write.nodes {
            self.store(run);
        }
    }

    fn store(&mut self, run: NodeRun) {
        let before = self.runs[&run.node].step;
        if before != run.step {
            *self.moves.entry((before, run.step)).or_default() += 1;
        }
        self.runs.insert(run.node.clone(), run);
    }

    fn result(&mut self, id: &str, on: &str, state: ActionState) {
        let mut r = ActionResult::issued(id, on);
        r.state = state;
        if state.is_final() {
            r.finished_at = Some(self.now);
            r.exit_code = Some(i32::from(state != ActionState::Succeeded));
            "E: broken".clone_into(&mut r.output_tail);
        }
        self.ledger.insert(id.to_owned(), r);
    }

    /// The agents and the world move on by one round.
    fn world(&mut self) {
        self.now = self
            .now
            .saturating_add(Duration::from_secs(self.rng.u64(1..30)));
        let names: Vec<String> = self.agents.keys().cloned().collect();
        for name in &names {
            self.agent_round(name);
        }
        for (on, request) in std::mem::take(&mut self.wire) {
            let lost = self.chance(self.weather.lose);
            // An agent whose configuration lacks the action refuses it.
            let refused = self.chance(self.weather.fail / 3);
            let agent = self.agents.get_mut(&on).expect("an agent");
            if lost || !agent.node.online || !agent.known.insert(request.id.clone()) {
                continue;
            }
            let id = request.id.clone();
            if refused {
                self.result(&id, &on, ActionState::Rejected);
                continue;
            }
            agent.running.insert(id.clone(), request);
            self.result(&id, &on, ActionState::Running);
        }
    }

    fn agent_round(&mut self, name: &str) {
        let now = self.now;
        let (drop, flap) = (
            self.chance(self.weather.drop),
            self.chance(self.weather.flap),
        );
        let agent = self.agents.get_mut(name).expect("an agent");
        if let Some((back, reboot)) = agent.away.clone() {
            if now < back {
                return;
            }
            agent.away = None;
            agent.node.online = true;
            if let Some(id) = reboot {
                // Back under a new boot id; the reboot's result comes now.
                agent.node.boot_id = format!("{name}-boot-{}", now.unix_millis());
                agent.checked(false, now);
                agent.running.remove(&id);
                self.result(&id, name, ActionState::Succeeded);
            }
            let agent = &self.agents[name];
            // Its Hello: a request on record it never got was lost
            // (`Ledger::reconcile`): no word of it, so it is asked again.
            let lost: Vec<String> = self
                .ledger
                .iter()
                .filter(|(id, r)| {
                    r.node == name && r.state == ActionState::Accepted && !agent.known.contains(*id)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in lost {
                self.ledger.remove(&id);
            }
        }
        let agent = self.agents.get_mut(name).expect("an agent");
        if flap {
            let healthy = agent.node.containers_unhealthy == 0;
            agent.set_health(!healthy, now);
        }
        if drop && agent.node.online {
            agent.node.online = false;
            agent.away = Some((now.saturating_add(Duration::from_secs(20)), None));
            return;
        }
        if !agent.node.online {
            return;
        }
        let ids: Vec<String> = agent.running.keys().cloned().collect();
        for id in ids {
            if self.rng.u8(0..3) != 0 {
                continue;
            }
            let name_of = &self.agents[name].running[&id].name;
            let gate = self
                .spec
                .gates
                .values()
                .any(|g| g.before.contains(name_of) || g.after.contains(name_of));
            let failed = self.chance(self.weather.fail) || (gate && self.chance(GATE_FLAKE));
            let reboot_required = self.rng.bool();
            let away = Duration::from_secs(self.rng.u64(5..90));
            let agent = self.agents.get_mut(name).expect("an agent");
            let request = agent.running.remove(&id).expect("running");
            if failed {
                self.result(&id, name, ActionState::Failed);
                continue;
            }
            match request.kind {
                ActionKind::Patch => {
                    agent.checked(reboot_required, now);
                    self.result(&id, name, ActionState::Succeeded);
                }
                ActionKind::Reboot => {
                    // Gone now, back later under a new boot id; its
                    // result comes after the return.
                    agent.node.online = false;
                    agent.away = Some((now.saturating_add(away), Some(id.clone())));
                    agent.running.insert(id, request);
                    return;
                }
                ActionKind::Hook => {
                    let undrain = self
                        .spec
                        .hooks
                        .values()
                        .any(|h| h.undrain.as_deref() == Some(request.name.as_str()));
                    if undrain && let Some(target) = request.args.first() {
                        self.drained.remove(target);
                    }
                    self.result(&id, name, ActionState::Succeeded);
                }
            }
        }
    }

    /// One pass, in the order the scheduler's runs it.
    fn pass(&mut self) {
        if !control::moves(&self.campaign, &self.runs) {
            return;
        }
        let fleet = fleet_health(
            &self
                .agents
                .values()
                .map(|a| a.node.clone())
                .collect::<Vec<_>>(),
        );
        let active: Vec<String> = self
            .runs
            .values()
            .filter(|r| r.step.is_active())
            .map(|r| r.node.clone())
            .collect();
        for node in active {
            self.drive(&node, &fleet);
        }
        if self.campaign.phase != Phase::Running {
            self.guard_since = None;
        }
        match self.campaign.phase {
            Phase::Paused | Phase::Completed => return,
            Phase::Cancelled => {
                if control::ended(&self.campaign, self.runs.values()) {
                    self.conclude(Phase::Cancelled, "every node in flight finished");
                }
                return;
            }
            Phase::Running => {}
        }
        let members = control::members(&self.runs);
        let pass = schedule::next_steps(
            &self.spec,
            self.campaign.phase,
            &members,
            &fleet,
            self.now,
            self.guard_since,
            None,
        );
        self.guard_since = if pass.guard {
            self.guard_since.or(Some(self.now))
        } else {
            None
        };
        for decision in pass.decisions {
            match decision {
                Decision::Start(node) => {
                    let role = self.runs[&node].role;
                    let pos = self.spec.role_order.iter().position(|r| *r == role);
                    for earlier in &self.spec.role_order[..pos.expect("role in order")] {
                        assert!(
                            self.runs
                                .values()
                                .filter(|r| r.role == *earlier)
                                .all(|r| r.step.is_terminal()),
                            "{role} started before {earlier} finished"
                        );
                    }
                    let mut run = self.runs[&node].clone();
                    run.on(Event::Start, Facts::default(), self.now);
                    self.store(run);
                    self.drive(&node, &fleet);
                }
                Decision::Pause(reason) => self.conclude(Phase::Paused, &reason),
                Decision::Complete => self.conclude(Phase::Completed, "every node finished"),
            }
        }
    }

    fn conclude(&mut self, phase: Phase, reason: &str) {
        let change = control::conclude(&self.campaign, phase, reason, self.now);
        self.take(change);
    }

    /// A node moves on as far as it goes now, as `runner::pass` drives it.
    fn drive(&mut self, node: &str, fleet: &BTreeMap<String, schedule::Health>) {
        for _ in 0..8 {
            let mut run = self.runs[node].clone();
            if !run.step.is_active() {
                return;
            }
            if gate::stand_down(&mut run, self.campaign.phase, self.now).is_some() {
                self.store(run);
                return;
            }
            let failed = control::failed(&self.runs);
            let action = self.ledger.get(&run.action_id).cloned();
            let agent = &self.agents[node];
            let before = run.clone();
            let ctx = Ctx {
                campaign: "c1",
                spec: &self.spec,
                fleet,
                view: View {
                    node: Some(&agent.node),
                    report: Some(&agent.report),
                },
                action: action.as_ref(),
                failed: &failed,
                hold: None,
                now: self.now,
            };
            let out = drive::advance(&mut run, &ctx);
            let edge = (before.step, run.step);
            assert!(
                edge.0 == edge.1 || self.is_edge(run.role, edge.0, edge.1),
                "{} moved {} → {}, which the step graph has no way for",
                node,
                edge.0,
                edge.1
            );
            match out {
                Advance::Wait(_) => {
                    self.store(run);
                    return;
                }
                Advance::Send { node: on, request } => {
                    let first = self
                        .asked
                        .entry(request.id.clone())
                        .or_insert_with(|| (on.clone(), request.clone()));
                    assert_eq!(
                        *first,
                        (on.clone(), request.clone()),
                        "an id asked again asks the same"
                    );
                    // Handed to the node's session, if it has one
                    // (`Ledger::asked`).
                    if self.agents[&on].node.online {
                        self.ledger
                            .entry(request.id.clone())
                            .or_insert_with(|| ActionResult::issued(&request.id, &on));
                    }
                    if request.kind == ActionKind::Hook && run.step == Step::Drain {
                        self.drained.insert(node.to_owned());
                    }
                    self.store(run);
                    self.wire.push((on, request));
                    return;
                }
                Advance::Moved | Advance::Tried { .. } => self.store(run),
                Advance::Failed => {
                    let ended = !run.step.is_active();
                    self.store(run);
                    if ended {
                        return;
                    }
                }
                Advance::Pause(reason) => {
                    let pause =
                        control::guard_blocked(&mut run, self.campaign.phase, &reason, self.now);
                    self.store(run);
                    if pause {
                        self.conclude(Phase::Paused, &reason);
                    }
                    return;
                }
                Advance::Held(reason) => {
                    control::guard_blocked(&mut run, self.campaign.phase, &reason, self.now);
                    self.store(run);
                    return;
                }
            }
        }
    }

    fn is_edge(&self, role: Role, from: Step, to: Step) -> bool {
        Event::ALL.iter().any(|e| {
            [false, true].iter().any(|required| {
                let facts = Facts {
                    reboot_required: *required,
                    ..self.spec.facts(role)
                };
                from.on(*e, facts) == to
            })
        })
    }

    /// An operator who comes by now and then: resumes a paused campaign
    /// (accepting or retrying failures), pauses, rarely cancels.
    fn operator(&mut self) {
        let control = match (self.campaign.phase, self.rng.u8(0..40)) {
            (Phase::Paused, 0..=3) => Control::Resume {
                retry_failed: self.rng.bool(),
            },
            (Phase::Running, 0) => Control::Pause,
            (Phase::Running | Phase::Paused, 4) if self.rng.u8(0..8) == 0 => Control::Cancel,
            _ => return,
        };
        if let Ok(change) = control::steer(&self.campaign, &self.runs, control, "sim", "", self.now)
        {
            self.guard_since = None;
            self.take(change);
        }
    }

    /// What holds after every round, whatever happened.
    fn check(&self, seed: u64) {
        for role in [Role::Compute, Role::Storage, Role::Controller] {
            let of_role = self.runs.values().filter(|r| r.role == role).count();
            let in_flight = self
                .runs
                .values()
                .filter(|r| r.role == role && r.step.is_active())
                .count();
            let limit = self.spec.concurrency_for(role, of_role);
            assert!(
                in_flight <= limit,
                "seed {seed}: {in_flight} {role} node(s) in flight, at most {limit}"
            );
        }
        // No node is silently left drained.
        for run in self.runs.values().filter(|r| r.step == Step::Failed) {
            if self.drained.contains(&run.node) {
                assert!(
                    run.left_drained.is_some(),
                    "seed {seed}: {} failed drained and nothing says so: {run:?}",
                    run.node
                );
            }
        }
    }
}

#[test]
fn property_random_campaigns_through_the_real_decisions_keep_the_rules() {
    let mut moves: HashMap<(Step, Step), usize> = HashMap::new();
    let (mut completed, mut calm_done) = (0, 0);
    for seed in 0..300u64 {
        let mut sim = Sim::new(seed);
        for _round in 0..600 {
            sim.world();
            sim.operator();
            sim.pass();
            sim.check(seed);
            if control::ended(&sim.campaign, sim.runs.values()) {
                break;
            }
        }
        let ended = control::ended(&sim.campaign, sim.runs.values());
        completed += usize::from(sim.campaign.phase == Phase::Completed);
        if calm(seed) && sim.campaign.phase != Phase::Cancelled {
            // Nothing went wrong: every node got through, none failed.
            calm_done += 1;
            assert!(
                ended && sim.runs.values().all(|r| r.step == Step::Done),
                "seed {seed}: a calm campaign did not finish: {:?} {:#?}",
                sim.campaign.phase,
                sim.runs
                    .values()
                    .map(|r| (&r.node, r.step, &r.note))
                    .collect::<Vec<_>>()
            );
        }
        for (edge, n) in sim.moves {
            *moves.entry(edge).or_default() += n;
        }
    }
    // The runs went every way the graph has but the operator's retry and
    // skip (which `control`'s own tests cover) and back from a precheck
    // (which a failed controller going down in the middle of another's
    // precheck needs: `drive`'s own test covers it).
    use Step::*;
    let wanted = [
        (Pending, Precheck),
        (Precheck, Drain),
        (Precheck, GateBefore),
        (GateBefore, Drain),
        (GateBefore, Pending),
        (Postcheck, GateAfter),
        (GateAfter, Undrain),
        (GateAfter, Failed),
        (Drain, Patch),
        (Patch, Reboot),
        (Patch, Postcheck),
        (Reboot, WaitReturn),
        (WaitReturn, Reboot),
        (WaitReturn, Postcheck),
        (Postcheck, Undrain),
        (Undrain, Done),
        (Precheck, Failed),
        (Drain, Failed),
        (Patch, Failed),
        (Reboot, Failed),
        (WaitReturn, Failed),
        (Postcheck, Failed),
        (Undrain, Failed),
        (Patch, Undrain),
        (Failed, Pending),
        (Pending, Skipped),
    ];
    let missing: Vec<_> = wanted.iter().filter(|e| !moves.contains_key(e)).collect();
    assert!(
        missing.is_empty(),
        "never seen: {missing:?}; seen: {moves:?}"
    );
    assert!(calm_done > 40 && completed > 100, "{calm_done} {completed}");
}
