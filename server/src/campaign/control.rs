//! The operator's rules for a campaign, as pure functions over plain data:
//! who a spec covers and who is skipped, the plan's waves, the start,
//! pause, resume and cancel, when a campaign ends, and which of its nodes
//! count against the error budget. Each returns the change to store; the
//! scheduler stores it before it acts on it.

use std::collections::{BTreeMap, BTreeSet};

use rollcall_proto::model::{Node, Report, Role};
use rollcall_proto::timestamp::Timestamp;

use super::api::{Control, Refused, Skip, Wave};
use super::lifecycle::{Event, Facts, Step};
use super::record::{AuditEntry, Campaign, CampaignWrite, NodeRun, Phase};
use super::schedule::Member;
use super::spec::{CampaignSpec, RebootPolicy};

/// One change to a campaign: written in one transaction, then told to
/// watchers.
#[derive(Clone, Debug)]
pub struct Change {
    pub write: CampaignWrite,
    /// What watchers are told once it is stored.
    pub message: String,
}

/// Finished: nothing will happen any more. A cancelled campaign ends when
/// its last node in flight does.
pub fn ended<'a>(c: &Campaign, runs: impl IntoIterator<Item = &'a NodeRun>) -> bool {
    match c.phase {
        Phase::Completed => true,
        Phase::Cancelled => runs.into_iter().all(|r| !r.step.is_active()),
        Phase::Running | Phase::Paused => false,
    }
}

/// Whether a pass looks at the campaign. Nodes in flight finish after a
/// cancel or a budget pause; an operator's pause holds everything.
pub fn moves(c: &Campaign, runs: &BTreeMap<String, NodeRun>) -> bool {
    match c.phase {
        Phase::Running => true,
        Phase::Cancelled | Phase::Paused => !c.held && runs.values().any(|r| r.step.is_active()),
        Phase::Completed => false,
    }
}

/// One campaign at a time: a new one starts only when every other ended.
pub fn one_open<'a>(
    campaigns: impl IntoIterator<Item = (&'a Campaign, &'a BTreeMap<String, NodeRun>)>,
) -> Result<(), Refused> {
    match campaigns
        .into_iter()
        .find(|(c, runs)| !ended(c, runs.values()))
    {
        Some((c, _)) => Err(Refused::OneOpen {
            id: c.id.clone(),
            phase: c.phase,
        }),
        None => Ok(()),
    }
}

/// The nodes as the schedule counts them: a failure an operator accepted
/// no longer counts against the budget, so it counts as skipped.
pub fn members(runs: &BTreeMap<String, NodeRun>) -> Vec<Member> {
    runs.values()
        .map(|r| Member {
            name: r.node.clone(),
            role: r.role,
            step: if r.step == Step::Failed && r.failure_accepted {
                Step::Skipped
            } else {
                r.step
            },
        })
        .collect()
}

/// The nodes that failed here and whose failure no operator accepted: a
/// guard that waits on one of them waits for nothing.
pub fn failed(runs: &BTreeMap<String, NodeRun>) -> BTreeSet<String> {
    runs.values()
        .filter(|r| r.step == Step::Failed && !r.failure_accepted)
        .map(|r| r.node.clone())
        .collect()
}

/// Whether [`skip_reason`] wants the node's report: only to see if an
/// online node is up to date.
pub fn wants_report(spec: &CampaignSpec, node: &Node) -> bool {
    spec.skip_up_to_date && node.online && spec.role_order.contains(&node.role)
}

/// Why a node the selector matched is left out, or `None` to patch it.
/// `report` is the node's latest (see [`wants_report`]).
pub fn skip_reason(spec: &CampaignSpec, node: &Node, report: Option<&Report>) -> Option<String> {
    if !spec.role_order.contains(&node.role) {
        return Some(format!("role {} is not in role_order", node.role));
    }
    if !node.online {
        return Some(format!("offline ({})", node.offline_reason));
    }
    let up_to_date = report
        .and_then(|r| r.updates.as_ref())
        .is_some_and(|u| u.checked && u.last_error.is_empty() && u.count == 0);
    (spec.skip_up_to_date
        && up_to_date
        && !node.reboot_required
        && spec.reboot != RebootPolicy::Always)
        .then(|| "up to date: no pending updates, no reboot required".to_owned())
}

/// Who a spec covers: the nodes to patch, and those left out with why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub members: Vec<(String, Role)>,
    pub skipped: Vec<(Skip, Role)>,
}

impl Selection {
    /// Takes a node the selector matched; `report` as [`skip_reason`] wants.
    pub fn add(&mut self, spec: &CampaignSpec, node: &Node, report: Option<&Report>) {
        match skip_reason(spec, node, report) {
            Some(reason) => self.skipped.push((
                Skip {
                    node: node.name.clone(),
                    reason,
                },
                node.role,
            )),
            None => self.members.push((node.name.clone(), node.role)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.skipped.is_empty()
    }

    /// The plan: nodes per role, in role order, in groups of the role's
    /// concurrency.
    pub fn waves(&self, spec: &CampaignSpec) -> Vec<Wave> {
        let mut waves = Vec::new();
        for role in &spec.role_order {
            let names: Vec<String> = self
                .members
                .iter()
                .filter(|(_, r)| r == role)
                .map(|(n, _)| n.clone())
                .collect();
            let size = spec.concurrency_for(*role, names.len());
            for chunk in names.chunks(size.max(1)) {
                waves.push(Wave {
                    role: *role,
                    nodes: chunk.to_vec(),
                });
            }
        }
        waves
    }

    pub fn skips(&self) -> Vec<Skip> {
        self.skipped.iter().map(|(s, _)| s.clone()).collect()
    }
}

/// A new campaign `id` over `selection`: the campaign, a pending run per
/// member, a skipped run per node left out, and their audit lines.
pub fn open(
    id: &str,
    spec: &CampaignSpec,
    spec_toml: String,
    operator: &str,
    selection: &Selection,
    now: Timestamp,
) -> Change {
    let campaign = Campaign {
        id: id.to_owned(),
        name: spec.name.clone(),
        spec_toml,
        phase: Phase::Running,
        reason: String::new(),
        started_by: operator.to_owned(),
        created_at: now,
        updated_at: now,
        finished_at: None,
        held: false,
        blast: Default::default(),
    };
    let mut runs = BTreeMap::new();
    for (name, role) in &selection.members {
        runs.insert(name.clone(), NodeRun::new(name.clone(), *role, now));
    }
    for (s, role) in &selection.skipped {
        let mut run = NodeRun::new(s.node.clone(), *role, now);
        run.on(Event::Skip, Facts::default(), now);
        run.note.clone_from(&s.reason);
        runs.insert(s.node.clone(), run);
    }
    let mut audit = vec![AuditEntry::new(
        id,
        now,
        &format!("operator:{operator}"),
        "",
        "started",
        format!(
            "campaign {:?}: {} node(s), {} skipped",
            spec.name,
            selection.members.len(),
            selection.skipped.len()
        ),
    )];
    for (s, _) in &selection.skipped {
        audit.push(AuditEntry::new(
            id,
            now,
            "scheduler",
            &s.node,
            "skipped",
            s.reason.clone(),
        ));
    }
    Change {
        write: CampaignWrite {
            campaign: Some(campaign),
            nodes: runs.into_values().map(|r| (id.to_owned(), r)).collect(),
            actions: Vec::new(),
            audit,
        },
        message: format!("started by {operator}"),
    }
}

/// An operator's pause, resume or cancel of `c`, on behalf of `operator`:
/// the campaign, the runs it changes and its audit line.
pub fn steer(
    c: &Campaign,
    runs: &BTreeMap<String, NodeRun>,
    control: Control,
    operator: &str,
    reason: &str,
    now: Timestamp,
) -> Result<Change, Refused> {
    let mut c = c.clone();
    let mut changed = Vec::new();
    let detail = match (control, c.phase) {
        (Control::Pause, Phase::Running) => {
            c.phase = Phase::Paused;
            c.held = true;
            c.reason = with_reason(&format!("paused by {operator}"), reason);
            c.reason.clone()
        }
        (Control::Resume { retry_failed }, Phase::Paused) => {
            c.phase = Phase::Running;
            c.held = false;
            c.reason.clear();
            let mut failed = Vec::new();
            for run in runs.values() {
                let mut run = run.clone();
                if run.step.is_active() {
                    // The pause stopped the clock: each step in flight
                    // gets its full time again.
                    run.since = now;
                } else if run.step == Step::Failed && !run.failure_accepted {
                    failed.push(run.node.clone());
                    if retry_failed {
                        run.on(Event::Retry, Facts::default(), now);
                    } else {
                        run.failure_accepted = true;
                    }
                } else {
                    continue;
                }
                changed.push(run);
            }
            let what = match (failed.is_empty(), retry_failed) {
                (true, _) => String::new(),
                (false, true) => format!("; retrying {}", failed.join(", ")),
                (false, false) => format!("; failures accepted: {}", failed.join(", ")),
            };
            // Blast-radius impacts cannot be retried: they are accepted.
            let impacts = match c.blast.accept() {
                accepted if accepted.is_empty() => String::new(),
                accepted => format!("; impacts accepted: {}", accepted.join(", ")),
            };
            with_reason(&format!("resumed by {operator}{what}{impacts}"), reason)
        }
        (Control::Cancel, Phase::Running | Phase::Paused) => {
            c.phase = Phase::Cancelled;
            c.held = false;
            c.reason = with_reason(&format!("cancelled by {operator}"), reason);
            for run in runs.values().filter(|r| r.step == Step::Pending) {
                let mut run = run.clone();
                run.on(Event::Skip, Facts::default(), now);
                run.note = "campaign cancelled".into();
                changed.push(run);
            }
            if !runs.values().any(|r| r.step.is_active()) {
                c.finished_at = Some(now);
            }
            c.reason.clone()
        }
        (control, phase) => {
            return Err(Refused::Phase {
                id: c.id.clone(),
                phase,
                what: match control {
                    Control::Pause => "pause it",
                    Control::Resume { .. } => "resume it",
                    Control::Cancel => "cancel it",
                },
            });
        }
    };
    c.updated_at = now;
    let actor = format!("operator:{operator}");
    let entry = AuditEntry::new(&c.id, now, &actor, "", control.event(), detail.clone());
    Ok(Change {
        write: CampaignWrite {
            nodes: changed.into_iter().map(|r| (c.id.clone(), r)).collect(),
            campaign: Some(c),
            actions: Vec::new(),
            audit: vec![entry],
        },
        message: detail,
    })
}

/// The scheduler moves `c` to `phase` (a budget or guard pause, the end of
/// a completed or cancelled campaign), for `reason`.
pub fn conclude(c: &Campaign, phase: Phase, reason: &str, now: Timestamp) -> Change {
    let mut c = c.clone();
    c.phase = phase;
    reason.clone_into(&mut c.reason);
    c.updated_at = now;
    if phase != Phase::Paused {
        c.finished_at = Some(now);
    }
    let event = phase_event(phase);
    let entry = AuditEntry::new(&c.id, now, "scheduler", "", event, reason.to_owned());
    Change {
        write: CampaignWrite {
            campaign: Some(c),
            nodes: Vec::new(),
            actions: Vec::new(),
            audit: vec![entry],
        },
        message: format!("{event}: {reason}"),
    }
}

/// The audit event of a move to `phase`.
pub fn phase_event(phase: Phase) -> &'static str {
    match phase {
        Phase::Paused => "paused",
        Phase::Completed => "completed",
        Phase::Cancelled => "cancelled",
        Phase::Running => "running",
    }
}

/// A node a guard sent back to pending (`Advance::Pause`): nothing new
/// starts in a cancelled campaign, so there it is skipped. Returns whether
/// the campaign pauses for `reason` (only a running one does).
pub fn guard_blocked(run: &mut NodeRun, phase: Phase, reason: &str, now: Timestamp) -> bool {
    if phase == Phase::Cancelled {
        run.on(Event::Skip, Facts::default(), now);
        run.note = format!("campaign cancelled; {reason}");
    }
    phase == Phase::Running
}

/// `what`, and the operator's reason after a colon if they gave one.
pub fn with_reason(what: &str, reason: &str) -> String {
    if reason.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::fixtures::t;
    use crate::campaign::spec::Amount;
    use rollcall_proto::model::UpdatesSection;

    fn campaign(phase: Phase) -> Campaign {
        Campaign {
            id: "c1".into(),
            name: "monthly".into(),
            spec_toml: String::new(),
            phase,
            reason: String::new(),
            started_by: "alice".into(),
            created_at: t(0),
            updated_at: t(0),
            finished_at: None,
            held: false,
            blast: Default::default(),
        }
    }

    fn runs(steps: &[(&str, Step)]) -> BTreeMap<String, NodeRun> {
        steps
            .iter()
            .map(|(name, step)| {
                let mut r = NodeRun::new((*name).into(), Role::Compute, t(0));
                r.enter(*step, t(1));
                ((*name).to_owned(), r)
            })
            .collect()
    }

    fn changed(write: &CampaignWrite) -> BTreeMap<&str, &NodeRun> {
        write
            .nodes
            .iter()
            .map(|(_, r)| (r.node.as_str(), r))
            .collect()
    }

    #[test]
    fn an_operators_pause_holds_everything_and_a_budget_pause_lets_nodes_finish() {
        let runs = runs(&[("cmp1", Step::Patch), ("cmp2", Step::Pending)]);
        let w = steer(
            &campaign(Phase::Running),
            &runs,
            Control::Pause,
            "alice",
            "change freeze",
            t(5),
        )
        .expect("a running campaign pauses")
        .write;
        let paused = w.campaign.clone().expect("the campaign changes");
        assert_eq!(
            (paused.phase, paused.held, paused.reason.as_str()),
            (Phase::Paused, true, "paused by alice: change freeze")
        );
        assert_eq!(w.audit[0].actor, "operator:alice");
        assert!(w.nodes.is_empty());
        assert!(!moves(&paused, &runs), "held: nothing moves");
        let budget = conclude(&campaign(Phase::Running), Phase::Paused, "budget", t(5));
        assert_eq!(budget.message, "paused: budget");
        let budget = budget.write.campaign.expect("the campaign changes");
        assert!(moves(&budget, &runs), "cmp1 finishes its way");
        assert_eq!(budget.finished_at, None);
        assert_eq!(
            steer(&paused, &runs, Control::Pause, "bob", "", t(6))
                .expect_err("already paused")
                .to_string(),
            "campaign c1 is paused: cannot pause it"
        );
    }

    #[test]
    fn resume_gives_steps_in_flight_their_time_and_accepts_or_retries_failures() {
        let mut paused = campaign(Phase::Paused);
        paused.held = true;
        let runs = runs(&[
            ("cmp1", Step::Patch),
            ("cmp2", Step::Failed),
            ("cmp3", Step::Done),
        ]);
        let w = steer(
            &paused,
            &runs,
            Control::Resume {
                retry_failed: false,
            },
            "alice",
            "",
            t(50),
        )
        .expect("resumes")
        .write;
        assert_eq!(
            w.audit[0].detail,
            "resumed by alice; failures accepted: cmp2"
        );
        let ch = changed(&w);
        assert_eq!(ch["cmp1"].since, t(50));
        assert!(ch["cmp2"].failure_accepted && ch["cmp2"].step == Step::Failed);
        assert!(!ch.contains_key("cmp3"));
        // An accepted failure counts as skipped for the budget.
        let mut after = runs.clone();
        after.insert("cmp2".into(), ch["cmp2"].clone());
        assert_eq!(members(&after)[1].step, Step::Skipped);
        assert!(failed(&after).is_empty());
        assert_eq!(failed(&runs), BTreeSet::from(["cmp2".to_owned()]));
        // Retried: a new attempt from pending.
        let w = steer(
            &paused,
            &runs,
            Control::Resume { retry_failed: true },
            "alice",
            "fixed the mirror",
            t(50),
        )
        .expect("resumes")
        .write;
        assert_eq!(
            w.audit[0].detail,
            "resumed by alice; retrying cmp2: fixed the mirror"
        );
        let retried = changed(&w)["cmp2"];
        assert_eq!(
            (retried.step, retried.attempt, retried.finished_at),
            (Step::Pending, 2, None)
        );
        let c = w.campaign.expect("the campaign changes");
        assert_eq!((c.phase, c.held), (Phase::Running, false));
    }

    #[test]
    fn resume_accepts_blast_radius_impacts() {
        use crate::campaign::blast::Impact;
        let mut paused = campaign(Phase::Paused);
        paused.blast.impacts.push(Impact {
            node: "cmp9".into(),
            container: "nova_compute".into(),
            what: "unhealthy".into(),
            began_at: t(1),
            at: t(3),
            during: "while cmp1 was in patch".into(),
            accepted: false,
        });
        let runs = runs(&[("cmp1", Step::Patch)]);
        let resume = Control::Resume { retry_failed: true };
        let w = steer(&paused, &runs, resume, "alice", "", t(50))
            .expect("resumes")
            .write;
        assert_eq!(
            w.audit[0].detail,
            "resumed by alice; impacts accepted: cmp9/nova_compute"
        );
        let c = w.campaign.expect("the campaign changes");
        assert_eq!(c.blast.counted(), 0);
        assert!(c.blast.baseline["cmp9"].contains("nova_compute"));
    }

    #[test]
    fn cancel_skips_who_did_not_start_and_ends_once_nothing_is_in_flight() {
        let busy = runs(&[("cmp1", Step::Reboot), ("cmp2", Step::Pending)]);
        let w = steer(
            &campaign(Phase::Running),
            &busy,
            Control::Cancel,
            "alice",
            "",
            t(9),
        )
        .expect("cancels")
        .write;
        let ch = changed(&w);
        assert_eq!(
            (ch["cmp2"].step, ch["cmp2"].note.as_str()),
            (Step::Skipped, "campaign cancelled")
        );
        let c = w.campaign.expect("the campaign changes");
        assert_eq!((c.phase, c.finished_at), (Phase::Cancelled, None));
        assert!(!ended(&c, busy.values()) && moves(&c, &busy));
        let idle = runs(&[("cmp1", Step::Done), ("cmp2", Step::Pending)]);
        let c = steer(
            &campaign(Phase::Paused),
            &idle,
            Control::Cancel,
            "alice",
            "",
            t(9),
        )
        .expect("cancels")
        .write
        .campaign
        .expect("the campaign changes");
        assert_eq!(c.finished_at, Some(t(9)));
        assert!(ended(&c, idle.values()));
        assert_eq!(
            steer(
                &c,
                &idle,
                Control::Resume {
                    retry_failed: false
                },
                "alice",
                "",
                t(10)
            )
            .expect_err("cancelled")
            .to_string(),
            "campaign c1 is cancelled: cannot resume it"
        );
        // One open campaign at a time.
        let open = campaign(Phase::Paused);
        assert_eq!(
            one_open([(&open, &busy)]).expect_err("open").to_string(),
            "campaign c1 is paused; cancel it (or let it finish) before starting another"
        );
        assert_eq!(one_open([(&c, &idle)]), Ok(()));
    }

    #[test]
    fn a_guard_in_a_cancelled_campaign_skips_the_node_instead_of_a_pause() {
        let mut run = runs(&[("ctl2", Step::Pending)])
            .remove("ctl2")
            .expect("run");
        assert!(guard_blocked(&mut run, Phase::Running, "guard", t(3)));
        assert_eq!(run.step, Step::Pending);
        assert!(!guard_blocked(&mut run, Phase::Cancelled, "guard", t(3)));
        assert_eq!(
            (run.step, run.note.as_str()),
            (Step::Skipped, "campaign cancelled; guard")
        );
    }

    fn updates(count: u32, error: &str) -> Report {
        Report {
            updates: Some(UpdatesSection {
                checked: true,
                count,
                last_error: error.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_skip_rule_names_why_a_node_is_left_out() {
        let mut spec = CampaignSpec::default();
        let mut node = Node::new("cmp1", Role::Compute, t(0));
        node.online = true;
        assert!(wants_report(&spec, &node));
        let none = updates(0, "");
        assert_eq!(
            skip_reason(&spec, &node, Some(&none)).as_deref(),
            Some("up to date: no pending updates, no reboot required")
        );
        assert_eq!(skip_reason(&spec, &node, Some(&updates(3, ""))), None);
        assert_eq!(
            skip_reason(&spec, &node, Some(&updates(0, "apt: 503"))),
            None,
            "a failed check says nothing"
        );
        assert_eq!(skip_reason(&spec, &node, None), None, "never checked");
        node.reboot_required = true;
        assert_eq!(skip_reason(&spec, &node, Some(&none)), None);
        node.reboot_required = false;
        spec.reboot = RebootPolicy::Always;
        assert_eq!(skip_reason(&spec, &node, Some(&none)), None);
        spec.skip_up_to_date = false;
        assert!(!wants_report(&spec, &node));
        assert_eq!(skip_reason(&spec, &node, Some(&none)), None);
        node.online = false;
        node.offline_reason = "session ended".into();
        assert_eq!(
            skip_reason(&spec, &node, None).as_deref(),
            Some("offline (session ended)")
        );
        spec.role_order = vec![Role::Controller];
        assert_eq!(
            skip_reason(&spec, &node, None).as_deref(),
            Some("role compute is not in role_order")
        );
    }

    #[test]
    fn the_plan_goes_in_role_order_in_waves_of_each_roles_concurrency() {
        let mut spec = CampaignSpec::default();
        spec.concurrency.insert(Role::Compute, Amount::Count(2));
        spec.skip_up_to_date = false;
        let mut selection = Selection::default();
        for (name, role, online) in [
            ("cmp1", Role::Compute, true),
            ("cmp2", Role::Compute, true),
            ("cmp3", Role::Compute, true),
            ("cmp4", Role::Compute, false),
            ("ctl1", Role::Controller, true),
            ("ctl2", Role::Controller, true),
        ] {
            let mut n = Node::new(name, role, t(0));
            n.online = online;
            selection.add(&spec, &n, None);
        }
        let waves: Vec<(Role, Vec<String>)> = selection
            .waves(&spec)
            .into_iter()
            .map(|w| (w.role, w.nodes))
            .collect();
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            waves,
            [
                (Role::Compute, names(&["cmp1", "cmp2"])),
                (Role::Compute, names(&["cmp3"])),
                (Role::Controller, names(&["ctl1"])),
                (Role::Controller, names(&["ctl2"])),
            ]
        );
        assert_eq!(selection.skips()[0].node, "cmp4");
        // Started: members pending, the skipped one skipped with its reason.
        let started = open("c1", &spec, "toml".into(), "alice", &selection, t(7));
        assert_eq!(started.message, "started by alice");
        let w = started.write;
        let ch = changed(&w);
        assert_eq!(ch.len(), 6);
        assert_eq!(ch["cmp1"].step, Step::Pending);
        assert_eq!(
            (
                ch["cmp4"].step,
                ch["cmp4"].note.as_str(),
                ch["cmp4"].finished_at
            ),
            (Step::Skipped, "offline ()", Some(t(7)))
        );
        assert_eq!(
            w.audit
                .iter()
                .map(|a| (a.event.as_str(), a.node.as_str()))
                .collect::<Vec<_>>(),
            [("started", ""), ("skipped", "cmp4")]
        );
        assert_eq!(w.audit[0].detail, "campaign \"\": 5 node(s), 1 skipped");
    }
}
