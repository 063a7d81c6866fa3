//! The rollout decisions, as a pure function over a snapshot: which nodes
//! start now, or why none can, or that the campaign must pause or is done.
//! The scheduler rebuilds the snapshot from the store on every pass, so a
//! restart changes nothing about what is decided.
//!
//! The rules, in order:
//! 1. Only a running campaign moves.
//! 2. More failed nodes than the error budget: pause.
//! 3. Every node finished: complete.
//! 4. Outside the maintenance window no node starts (nodes in flight finish).
//!    Nor while an alert of the spec's `[alerts]` holds (or its monitoring
//!    API cannot be asked: `alerts::verdict`); nothing fails. (The same
//!    hold keeps nodes in flight from their drain: `drive::towards_drain`.)
//! 5. Roles go one after another in `role_order`; a role starts only when
//!    every node of the roles before it has finished.
//! 6. Within a role, the nodes unavailable to the cloud (this campaign's
//!    nodes in flight, plus any other node of the role that is offline or
//!    unhealthy) never exceed the role's concurrency.
//! 7. Controllers go strictly one at a time, and only while every other
//!    controller is online and healthy (quorum guard).
//! 8. No endless waits: a quorum guard that waits on a controller that
//!    failed in this campaign pauses the campaign at once; any other guard
//!    wait pauses it after `timeouts.guard_secs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rollcall_proto::model::Role;
use rollcall_proto::timestamp::Timestamp;

use super::lifecycle::Step;
// Re-exported: `next_steps` takes it, and callers still name it here.
use super::record::Phase;
use super::spec::CampaignSpec;

/// A node of the campaign and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub role: Role,
    pub step: Step,
}

/// What the fleet says about a node right now (any node, in the campaign
/// or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub role: Role,
    pub online: bool,
    /// Every container that should run is running and healthy.
    pub healthy: bool,
}

impl Health {
    pub fn available(&self) -> bool {
        self.online && self.healthy
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Move the node from pending to precheck.
    Start(String),
    Pause(String),
    Complete,
}

/// The decisions of one pass, and why nothing (more) starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub decisions: Vec<Decision>,
    pub waiting: Option<String>,
    /// The wait is the quorum guard's: the caller keeps the time such
    /// waits began, without a break, and passes it back as `guard_since`.
    pub guard: bool,
}

impl Pass {
    fn wait(reason: String) -> Self {
        Pass {
            waiting: Some(reason),
            ..Pass::default()
        }
    }

    fn pause(reason: String) -> Self {
        Pass {
            decisions: vec![Decision::Pause(reason)],
            ..Pass::default()
        }
    }
}

/// `guard_since`: when the quorum guard wait that goes on now began (the
/// last passes all said `guard`), or `None`. `alert_hold`: what holds new
/// starts from the spec's `[alerts]` (`alerts::Hold::describe`), if anything.
pub fn next_steps(
    spec: &CampaignSpec,
    phase: Phase,
    members: &[Member],
    fleet: &BTreeMap<String, Health>,
    now: Timestamp,
    guard_since: Option<Timestamp>,
    alert_hold: Option<&str>,
) -> Pass {
    if phase != Phase::Running {
        return Pass::wait(format!("campaign is {phase}"));
    }
    let failed = members.iter().filter(|m| m.step == Step::Failed).count();
    let budget = spec.error_budget.of(members.len());
    if failed > budget {
        return Pass::pause(format!(
            "error budget exhausted: {failed} node(s) failed, the budget allows {budget}"
        ));
    }
    if members.iter().all(|m| m.step.is_terminal()) {
        return Pass {
            decisions: vec![Decision::Complete],
            ..Pass::default()
        };
    }
    if let Some(reason) = spec.window.as_ref().and_then(|w| w.wait_reason(now)) {
        return Pass::wait(reason);
    }
    if let Some(hold) = alert_hold {
        return Pass::wait(hold.to_owned());
    }
    let Some(role) = spec.role_order.iter().copied().find(|r| {
        members
            .iter()
            .any(|m| m.role == *r && !m.step.is_terminal())
    }) else {
        return Pass::wait("no node of a role in role_order is left".into());
    };

    let of_role: Vec<&Member> = members.iter().filter(|m| m.role == role).collect();
    let limit = spec.concurrency_for(role, of_role.len());
    let in_flight = of_role.iter().filter(|m| m.step.is_active()).count();
    // A set, not a scan of `of_role` per node: at 10,000 nodes, each with
    // an unhealthy container, the scan made every pass 10^8 comparisons.
    let members_of_role: BTreeSet<&str> = of_role.iter().map(|m| m.name.as_str()).collect();
    let unavailable_elsewhere = fleet
        .iter()
        .filter(|(_, h)| h.role == role && !h.available())
        .filter(|(name, _)| !members_of_role.contains(name.as_str()))
        .count();
    let unavailable = in_flight + unavailable_elsewhere;
    if role == Role::Controller {
        let degraded: Vec<&String> = fleet
            .iter()
            .filter(|(_, h)| h.role == Role::Controller && !h.available())
            .map(|(name, _)| name)
            .collect();
        if in_flight > 0 {
            return Pass::wait("controller: one at a time".into());
        }
        // A controller that failed here stays down until a person acts:
        // waiting for it would wait for ever.
        if let Some(name) = degraded.iter().find(|name| {
            members
                .iter()
                .any(|m| m.step == Step::Failed && m.name.as_str() == name.as_str())
        }) {
            return Pass::pause(format!(
                "controller quorum guard cannot be met: {name} failed in this campaign and is offline or unhealthy"
            ));
        }
        if let Some(name) = degraded.first() {
            // Any other controller down means no quorum margin: wait, but
            // not for ever. (A pending controller that is itself down would
            // fail precheck; it cannot be started without touching quorum
            // either.)
            let why = format!("controller quorum guard: {name} is offline or unhealthy");
            let limit = spec.timeouts.guard_secs;
            if guard_since.is_some_and(|t| now.since(t) > Duration::from_secs(limit)) {
                return Pass::pause(format!("{why}, for more than guard_secs ({limit}s)"));
            }
            return Pass {
                guard: true,
                ..Pass::wait(why)
            };
        }
    }
    if unavailable >= limit {
        return Pass::wait(format!(
            "{role}: {unavailable} of at most {limit} node(s) unavailable ({in_flight} in this campaign)"
        ));
    }
    let slots = limit - unavailable;
    let mut pending: Vec<&Member> = of_role
        .into_iter()
        .filter(|m| m.step == Step::Pending)
        .collect();
    pending.sort_by(|a, b| a.name.cmp(&b.name));
    let decisions: Vec<Decision> = pending
        .iter()
        .take(slots)
        .map(|m| Decision::Start(m.name.clone()))
        .collect();
    let waiting = decisions
        .is_empty()
        .then(|| format!("{role}: nodes in flight must finish first"));
    Pass {
        decisions,
        waiting,
        guard: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::lifecycle::{Event, Facts};
    use crate::campaign::spec::{Amount, RebootPolicy};

    fn member(name: &str, role: Role) -> Member {
        Member {
            name: name.into(),
            role,
            step: Step::Pending,
        }
    }

    fn healthy(role: Role) -> Health {
        Health {
            role,
            online: true,
            healthy: true,
        }
    }

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-21T23:00:00Z").expect("time")
    }

    fn starts(pass: &Pass) -> Vec<&str> {
        pass.decisions
            .iter()
            .filter_map(|d| {
                if let Decision::Start(n) = d {
                    Some(n.as_str())
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn computes_go_first_up_to_their_concurrency() {
        let mut spec = CampaignSpec::default();
        spec.concurrency.insert(Role::Compute, Amount::Count(2));
        let members = vec![
            member("cmp3", Role::Compute),
            member("cmp1", Role::Compute),
            member("cmp2", Role::Compute),
            member("ctl1", Role::Controller),
        ];
        let fleet = members
            .iter()
            .map(|m| (m.name.clone(), healthy(m.role)))
            .collect();
        let pass = next_steps(&spec, Phase::Running, &members, &fleet, now(), None, None);
        assert_eq!(starts(&pass), ["cmp1", "cmp2"]);
    }

    #[test]
    fn an_unhealthy_node_outside_the_campaign_takes_a_slot() {
        let mut spec = CampaignSpec::default();
        spec.concurrency.insert(Role::Compute, Amount::Count(2));
        let members = vec![member("cmp1", Role::Compute), member("cmp2", Role::Compute)];
        let mut fleet: BTreeMap<String, Health> = members
            .iter()
            .map(|m| (m.name.clone(), healthy(m.role)))
            .collect();
        fleet.insert(
            "cmp9".into(),
            Health {
                role: Role::Compute,
                online: false,
                healthy: false,
            },
        );
        assert_eq!(
            starts(&next_steps(
                &spec,
                Phase::Running,
                &members,
                &fleet,
                now(),
                None,
                None
            )),
            ["cmp1"]
        );
    }

    #[test]
    fn controllers_wait_for_quorum_and_go_one_at_a_time() {
        let spec = CampaignSpec::default();
        let members = vec![
            member("ctl1", Role::Controller),
            member("ctl2", Role::Controller),
        ];
        let mut fleet: BTreeMap<String, Health> = members
            .iter()
            .map(|m| (m.name.clone(), healthy(m.role)))
            .collect();
        fleet.insert(
            "ctl3".into(),
            Health {
                role: Role::Controller,
                online: true,
                healthy: false,
            },
        );
        let pass = next_steps(&spec, Phase::Running, &members, &fleet, now(), None, None);
        assert!(starts(&pass).is_empty());
        assert!(
            pass.waiting.as_deref().is_some_and(|w| w.contains("ctl3")),
            "{pass:?}"
        );
        fleet.insert("ctl3".into(), healthy(Role::Controller));
        assert_eq!(
            starts(&next_steps(
                &spec,
                Phase::Running,
                &members,
                &fleet,
                now(),
                None,
                None
            )),
            ["ctl1"]
        );
    }

    fn pause_reason(pass: &Pass) -> Option<&str> {
        match &pass.decisions[..] {
            [Decision::Pause(r)] => Some(r),
            _ => None,
        }
    }

    #[test]
    fn a_controller_that_failed_here_pauses_the_campaign_instead_of_a_wait() {
        // ctl1 never came back and failed at its return timeout; the budget
        // bears it, but ctl2 could only wait for ever on the quorum guard.
        let spec = CampaignSpec {
            error_budget: Amount::Count(1),
            ..CampaignSpec::default()
        };
        let mut members = vec![
            member("ctl1", Role::Controller),
            member("ctl2", Role::Controller),
        ];
        members[0].step = Step::Failed;
        let mut fleet: BTreeMap<String, Health> = members
            .iter()
            .map(|m| (m.name.clone(), healthy(m.role)))
            .collect();
        fleet.insert(
            "ctl1".into(),
            Health {
                role: Role::Controller,
                online: false,
                healthy: true,
            },
        );
        let pass = next_steps(&spec, Phase::Running, &members, &fleet, now(), None, None);
        assert_eq!(
            pause_reason(&pass),
            Some(
                "controller quorum guard cannot be met: ctl1 failed in this campaign and is offline or unhealthy"
            ),
            "{pass:?}"
        );
        assert!(starts(&pass).is_empty());
        // Once an operator accepts the failure (the runner then shows it as
        // skipped), the guard waits again, with its clock.
        members[0].step = Step::Skipped;
        let pass = next_steps(&spec, Phase::Running, &members, &fleet, now(), None, None);
        assert!(pass.guard && pass.decisions.is_empty(), "{pass:?}");
        // A failed controller that is back and healthy blocks nothing.
        members[0].step = Step::Failed;
        fleet.insert("ctl1".into(), healthy(Role::Controller));
        assert_eq!(
            starts(&next_steps(
                &spec,
                Phase::Running,
                &members,
                &fleet,
                now(),
                None,
                None
            )),
            ["ctl2"]
        );
    }

    #[test]
    fn a_guard_wait_longer_than_guard_secs_pauses() {
        let mut spec = CampaignSpec::default();
        spec.timeouts.guard_secs = 600;
        let members = vec![member("ctl1", Role::Controller)];
        let mut fleet: BTreeMap<String, Health> = members
            .iter()
            .map(|m| (m.name.clone(), healthy(m.role)))
            .collect();
        // ctl9 is not in the campaign and is unhealthy.
        fleet.insert(
            "ctl9".into(),
            Health {
                role: Role::Controller,
                online: true,
                healthy: false,
            },
        );
        let at = |secs: i64| Timestamp::from_unix_millis(now().unix_millis() + secs * 1_000);
        let pass = next_steps(&spec, Phase::Running, &members, &fleet, at(0), None, None);
        assert!(pass.guard && pass.decisions.is_empty(), "{pass:?}");
        assert_eq!(
            pass.waiting.as_deref(),
            Some("controller quorum guard: ctl9 is offline or unhealthy")
        );
        let waited = |secs| {
            next_steps(
                &spec,
                Phase::Running,
                &members,
                &fleet,
                at(secs),
                Some(at(0)),
                None,
            )
        };
        assert!(
            waited(600).decisions.is_empty(),
            "at the limit it still waits"
        );
        assert_eq!(
            pause_reason(&waited(601)),
            Some(
                "controller quorum guard: ctl9 is offline or unhealthy, for more than guard_secs (600s)"
            )
        );
        // Any other wait is not the guard's: the caller's clock stops.
        fleet.insert("ctl9".into(), healthy(Role::Controller));
        let pass = next_steps(
            &spec,
            Phase::Running,
            &members,
            &fleet,
            at(601),
            Some(at(0)),
            None,
        );
        assert!(!pass.guard && starts(&pass) == ["ctl1"], "{pass:?}");
    }

    #[test]
    fn an_alert_holds_new_starts_but_never_the_budget_or_the_end() {
        let spec = CampaignSpec::default();
        let mut members = vec![member("cmp1", Role::Compute), member("cmp2", Role::Compute)];
        let fleet = members
            .iter()
            .map(|m| (m.name.clone(), healthy(m.role)))
            .collect();
        let hold = Some("held by alert NodeDown{} firing");
        let pass = next_steps(&spec, Phase::Running, &members, &fleet, now(), None, hold);
        assert!(starts(&pass).is_empty(), "{pass:?}");
        assert_eq!(pass.waiting.as_deref(), hold);
        let free = next_steps(&spec, Phase::Running, &members, &fleet, now(), None, None);
        assert_eq!(starts(&free), ["cmp1"], "the same pass without the hold");
        members[0].step = Step::Failed;
        let pass = next_steps(&spec, Phase::Running, &members, &fleet, now(), None, hold);
        assert!(
            matches!(&pass.decisions[..], [Decision::Pause(r)] if r.contains("budget")),
            "an exhausted budget still pauses: {pass:?}"
        );
        members[0].step = Step::Done;
        members[1].step = Step::Done;
        let pass = next_steps(&spec, Phase::Running, &members, &fleet, now(), None, hold);
        assert_eq!(pass.decisions, [Decision::Complete], "nothing left to hold");
    }

    #[test]
    fn the_error_budget_pauses_and_a_window_holds_new_starts() {
        let mut spec = CampaignSpec::default();
        let mut members = vec![member("cmp1", Role::Compute), member("cmp2", Role::Compute)];
        let fleet = members
            .iter()
            .map(|m| (m.name.clone(), healthy(m.role)))
            .collect();
        members[0].step = Step::Failed;
        let pass = next_steps(&spec, Phase::Running, &members, &fleet, now(), None, None);
        assert!(
            matches!(&pass.decisions[..], [Decision::Pause(r)] if r.contains("budget")),
            "{pass:?}"
        );
        spec.error_budget = Amount::Percent(50);
        assert_eq!(
            starts(&next_steps(
                &spec,
                Phase::Running,
                &members,
                &fleet,
                now(),
                None,
                None
            )),
            ["cmp2"]
        );
        spec.window = CampaignSpec::parse("[window]\nstart = \"01:00\"\nend = \"02:00\"")
            .expect("window")
            .window;
        let pass = next_steps(&spec, Phase::Running, &members, &fleet, now(), None, None);
        assert!(
            starts(&pass).is_empty()
                && pass.waiting.as_deref()
                    == Some("outside the maintenance window; it opens Sun 2026-11-22 01:00 UTC")
        );
        assert!(
            next_steps(&spec, Phase::Paused, &members, &fleet, now(), None, None)
                .decisions
                .is_empty()
        );
    }

    /// Random fleets and random outcomes, checked against the rules at
    /// every pass: never more of a role unavailable than its concurrency
    /// because of a start; controllers strictly one at a time and only with
    /// quorum; roles in order; nothing starts past the error budget; no
    /// guard wait lasts longer than `guard_secs`, and none waits on a
    /// controller that failed in the campaign.
    #[test]
    fn property_the_rules_hold_on_random_fleets() {
        let (mut total_starts, mut controller_starts, mut pauses) = (0, 0, 0);
        let (mut failed_guard_pauses, mut long_guard_pauses) = (0, 0);
        for seed in 0..300u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut spec = CampaignSpec::default();
            spec.concurrency
                .insert(Role::Compute, Amount::Count(rng.u32(1..5)));
            spec.concurrency
                .insert(Role::Storage, Amount::Percent(rng.u32(1..60)));
            spec.concurrency
                .insert(Role::Controller, Amount::Count(rng.u32(1..4)));
            spec.error_budget = Amount::Count(rng.u32(0..3));
            spec.reboot = [
                RebootPolicy::IfRequired,
                RebootPolicy::Always,
                RebootPolicy::Never,
            ][rng.usize(0..3)];
            let mut members = Vec::new();
            let mut fleet = BTreeMap::new();
            for (role, prefix, n) in [
                (Role::Compute, "cmp", rng.usize(0..12)),
                (Role::Storage, "sto", rng.usize(0..6)),
                (Role::Controller, "ctl", rng.usize(0..4)),
            ] {
                for i in 0..n {
                    let name = format!("{prefix}{i}");
                    fleet.insert(name.clone(), healthy(role));
                    // Some nodes of the fleet are not in the campaign.
                    if rng.u8(0..10) < 8 {
                        members.push(member(&name, role));
                    }
                }
            }
            spec.timeouts.guard_secs = rng.u64(60..600);
            let mut paused = false;
            let mut clock = now();
            // As the runner keeps it: when the current guard wait began.
            let mut guard_since: Option<Timestamp> = None;
            for _round in 0..200 {
                clock = Timestamp::from_unix_millis(clock.unix_millis() + rng.i64(0..30_000));
                // Now and then an operator resumes, accepting the failures
                // (which the runner then shows as skipped).
                if paused && rng.u8(0..8) == 0 {
                    paused = false;
                    guard_since = None;
                    for m in members.iter_mut().filter(|m| m.step == Step::Failed) {
                        m.step = Step::Skipped;
                    }
                }
                // The world moves: non-members flap, in-flight nodes move on.
                for (name, h) in fleet.iter_mut() {
                    if !members.iter().any(|m| &m.name == name) && rng.u8(0..10) == 0 {
                        h.online = !h.online;
                    }
                    if h.role == Role::Controller && rng.u8(0..20) == 0 {
                        h.healthy = !h.healthy;
                    }
                }
                for m in members.iter_mut().filter(|m| m.step.is_active()) {
                    // Through the step graph production moves nodes by.
                    let event = match rng.u8(0..20) {
                        0 => Event::Failed,
                        1 => Event::TimedOut,
                        2 => Event::Lost,
                        3 => Event::GuardBlocked,
                        4 => Event::UndrainOnFailure,
                        5..=12 => Event::Succeeded,
                        _ => continue,
                    };
                    let facts = Facts {
                        reboot: spec.reboot,
                        reboot_required: rng.bool(),
                        gate_before: rng.bool(),
                        gate_after: rng.bool(),
                    };
                    m.step = m.step.on(event, facts);
                }
                let before = members.clone();
                let pass = next_steps(
                    &spec,
                    if paused {
                        Phase::Paused
                    } else {
                        Phase::Running
                    },
                    &members,
                    &fleet,
                    clock,
                    guard_since,
                    None,
                );
                if pass.guard {
                    let since = *guard_since.get_or_insert(clock);
                    assert!(
                        clock.since(since) <= Duration::from_secs(spec.timeouts.guard_secs),
                        "seed {seed}: a guard wait outlasted guard_secs"
                    );
                    let failed_down = fleet.iter().any(|(n, h)| {
                        h.role == Role::Controller
                            && !h.available()
                            && members
                                .iter()
                                .any(|m| &m.name == n && m.step == Step::Failed)
                    });
                    assert!(
                        !failed_down,
                        "seed {seed}: the guard waits on a controller that failed here"
                    );
                } else {
                    guard_since = None;
                }
                let started = starts(&pass)
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>();
                for name in &started {
                    let m = members
                        .iter_mut()
                        .find(|m| &m.name == name)
                        .expect("member");
                    assert_eq!(
                        m.step,
                        Step::Pending,
                        "seed {seed}: started a node that was not pending"
                    );
                    m.step = Step::Precheck;
                }
                if pass
                    .decisions
                    .iter()
                    .any(|d| matches!(d, Decision::Pause(_)))
                {
                    paused = true;
                    pauses += 1;
                    let reason = pause_reason(&pass).unwrap_or_default();
                    failed_guard_pauses += usize::from(reason.contains("failed in this campaign"));
                    long_guard_pauses += usize::from(reason.contains("guard_secs"));
                }
                total_starts += started.len();
                if started.is_empty() {
                    continue;
                }
                let failed = before.iter().filter(|m| m.step == Step::Failed).count();
                assert!(
                    failed <= spec.error_budget.of(members.len()),
                    "seed {seed}: started past the budget"
                );
                for name in &started {
                    let role = members
                        .iter()
                        .find(|m| &m.name == name)
                        .expect("member")
                        .role;
                    // Roles in order: every earlier role finished.
                    let pos = spec
                        .role_order
                        .iter()
                        .position(|r| *r == role)
                        .expect("role in order");
                    for earlier in &spec.role_order[..pos] {
                        assert!(
                            before
                                .iter()
                                .filter(|m| m.role == *earlier)
                                .all(|m| m.step.is_terminal()),
                            "seed {seed}: {role} started before {earlier} finished"
                        );
                    }
                    let of_role = members.iter().filter(|m| m.role == role).count();
                    let limit = spec.concurrency_for(role, of_role);
                    let in_flight = members
                        .iter()
                        .filter(|m| m.role == role && m.step.is_active())
                        .count();
                    let elsewhere = fleet
                        .iter()
                        .filter(|(n, h)| {
                            h.role == role
                                && !h.available()
                                && !members.iter().any(|m| &m.name == *n)
                        })
                        .count();
                    assert!(
                        in_flight + elsewhere <= limit,
                        "seed {seed}: {role} over its concurrency {limit}"
                    );
                    if role == Role::Controller {
                        controller_starts += 1;
                        assert_eq!(in_flight, 1, "seed {seed}: controllers one at a time");
                        assert!(
                            fleet
                                .values()
                                .filter(|h| h.role == Role::Controller)
                                .all(Health::available),
                            "seed {seed}: controller started without quorum"
                        );
                    }
                }
            }
        }
        // The property is not vacuous: the runs started nodes of every
        // kind, hit the budget and both guard rules.
        assert!(
            total_starts > 1_000 && controller_starts > 50 && pauses > 10,
            "{total_starts} {controller_starts} {pauses}"
        );
        assert!(
            failed_guard_pauses > 5 && long_guard_pauses > 5,
            "{failed_guard_pauses} {long_guard_pauses}"
        );
    }
}
