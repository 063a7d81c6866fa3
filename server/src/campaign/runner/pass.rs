//! A pass: one look at every campaign that can move. Each node in flight
//! moves on as far as `drive::advance` lets it, the blast-radius guard
//! judges the fleet's containers (`runner/blast.rs`), then
//! `schedule::next_steps` says which nodes start; operators' undrains are
//! followed; a store that cannot write holds everything (`outage`). Each
//! change is committed before anything is sent.

use std::collections::BTreeMap;

use rollcall_proto::model::{ActionKind, ActionRequest, ActionResult, NodeFilter};
use rollcall_proto::text::Untrusted;
use rollcall_proto::timestamp::Timestamp;

use super::{CampaignError, Scheduler, fleet_health};
use crate::campaign::control;
use crate::campaign::drive::{self, Advance, Ctx, View};
use crate::campaign::gate;
use crate::campaign::lifecycle::{Event, Facts};
use crate::campaign::outage;
use crate::campaign::record::Phase;
use crate::campaign::schedule::{self, Decision, Health};
use crate::campaign::undrain::{self, Undrain};
use crate::fleet::BadContainers;

/// How many steps one node may take in one pass (a node with no hooks goes
/// from precheck to its patch request at once).
const STEPS_PER_PASS: usize = 8;

impl Scheduler {
    /// One look at every campaign that can move.
    pub(super) async fn pass(&mut self) {
        if !self.store_writes().await {
            return;
        }
        self.tend_monitors();
        let ids: Vec<String> = self
            .campaigns
            .iter()
            .filter(|(_, l)| control::moves(&l.campaign, &l.runs))
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        let Ok(nodes) = self.fleet.list(NodeFilter::default()).await else {
            return;
        };
        let fleet = fleet_health(&nodes);
        let look = self.blast_look(&ids).await;
        for id in ids {
            if let Err(e) = self.pass_one(&id, &fleet, look.as_ref()).await {
                tracing::error!(campaign = %id, error = %e, "Campaign pass stopped.");
            }
        }
    }

    /// Whether campaigns may move: not while the store fails (nothing could
    /// be recorded before it is acted on). The hold is shown as every open
    /// campaign's `waiting`; when the store writes again, `outage` gives
    /// every step in flight the time back.
    async fn store_writes(&mut self) -> bool {
        let health = self.store.borrow_and_update().clone();
        if let Some(failure) = &health.failing {
            let why = health.describe();
            let newly = self.held_since.is_none();
            self.held_since.get_or_insert(failure.since);
            let open: Vec<String> = self
                .campaigns
                .iter_mut()
                .filter(|(_, l)| !l.ended())
                .map(|(id, l)| {
                    l.waiting.clone_from(&why);
                    id.clone()
                })
                .collect();
            if newly {
                for id in &open {
                    tracing::warn!(campaign = %id, reason = %failure.reason, "Campaign held: the store cannot write.");
                    self.emit(id, "", None, format!("held: {why}"));
                }
            }
            return false;
        }
        let Some(since) = self.held_since else {
            return true;
        };
        let now = Timestamp::now();
        let lost = now.since(since);
        let open: Vec<String> = self
            .campaigns
            .iter()
            .filter(|(_, l)| !l.ended())
            .map(|(id, _)| id.clone())
            .collect();
        for id in open {
            let change = outage::recovered(&id, &self.campaigns[&id].runs, lost, now);
            if self
                .commit(&id, change.write, "", None, change.message)
                .await
                .is_err()
            {
                // Failing again: stay held, from the same moment.
                return false;
            }
            let live = self.campaigns.get_mut(&id).expect("the campaign exists");
            live.guard_since = live.guard_since.map(|t| t.saturating_add(lost));
            live.blast_clocks.clear(); // No look saw the fleet meanwhile.
            live.waiting.clear();
            tracing::info!(campaign = %id, held_secs = lost.as_secs(), "Campaign goes on: the store writes again.");
        }
        self.held_since = None;
        true
    }

    async fn pass_one(
        &mut self,
        id: &str,
        fleet: &BTreeMap<String, Health>,
        look: Option<&BadContainers>,
    ) -> Result<(), CampaignError> {
        let active: Vec<String> = self.campaigns[id]
            .runs
            .values()
            .filter(|r| r.step.is_active())
            .map(|r| r.node.clone())
            .collect();
        // Worked out before any node moves: one may be about to drain.
        let drain_hold = self.drain_hold(id);
        for node in active {
            self.drive_node(id, &node, fleet, drain_hold.as_deref())
                .await?;
        }
        self.judge_blast(id, look).await?;
        let hold = self.alert_hold(id).await?;
        let live = self.campaigns.get_mut(id).expect("the campaign exists");
        if live.campaign.phase != Phase::Running {
            // A guard wait is a wait of a running campaign: a pause (and
            // the resume after it) starts its clock again.
            live.guard_since = None;
        }
        match live.campaign.phase {
            Phase::Paused => return Ok(()),
            Phase::Cancelled => {
                if live.ended() {
                    self.finish(id, Phase::Cancelled, "every node in flight finished".into())
                        .await?;
                }
                return Ok(());
            }
            Phase::Running | Phase::Completed => {}
        }
        let pass = schedule::next_steps(
            &live.spec,
            live.campaign.phase,
            &control::members(&live.runs),
            fleet,
            Timestamp::now(),
            live.guard_since,
            hold.as_deref(),
        );
        live.waiting = pass.waiting.clone().unwrap_or_default();
        if let Some(gates) = gate::waits(live.runs.values()) {
            // The role's slots are held by nodes at a gate: say what for.
            live.waiting = if live.waiting.is_empty() {
                gates
            } else {
                format!("{}; {gates}", live.waiting)
            };
        }
        live.guard_since = if pass.guard {
            live.guard_since.or(Some(Timestamp::now()))
        } else {
            None
        };
        for decision in pass.decisions {
            match decision {
                Decision::Start(node) => {
                    let mut run = self.campaigns[id].runs[&node].clone();
                    run.on(Event::Start, Facts::default(), Timestamp::now());
                    self.record(id, run, "step", "precheck".into(), None, Vec::new())
                        .await?;
                    self.drive_node(id, &node, fleet, hold.as_deref()).await?;
                }
                Decision::Pause(reason) => {
                    self.finish(id, Phase::Paused, reason).await?;
                }
                Decision::Complete => {
                    self.finish(id, Phase::Completed, "every node finished".into())
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Moves one node on as far as it goes now.
    async fn drive_node(
        &mut self,
        id: &str,
        node: &str,
        fleet: &BTreeMap<String, Health>,
        hold: Option<&str>,
    ) -> Result<(), CampaignError> {
        for _ in 0..STEPS_PER_PASS {
            let live = &self.campaigns[id];
            let mut run = live.runs[node].clone();
            if !run.step.is_active() {
                return Ok(());
            }
            if let Some(detail) = gate::stand_down(&mut run, live.campaign.phase, Timestamp::now())
            {
                self.record(id, run, "step", detail, None, Vec::new())
                    .await?;
                return Ok(());
            }
            let failed = control::failed(&live.runs);
            let detail = self.fleet.get(node).await?;
            let action = if run.action_id.is_empty() {
                None
            } else {
                self.fleet.action(&run.action_id).await?
            };
            let before = run.clone();
            let ctx = Ctx {
                campaign: id,
                spec: &live.spec,
                fleet,
                view: View {
                    node: detail.as_ref().map(|d| &d.node),
                    report: detail.as_ref().and_then(|d| d.report.as_ref()),
                },
                action: action.as_ref(),
                failed: &failed,
                hold,
                now: Timestamp::now(),
            };
            let advance = drive::advance(&mut run, &ctx);
            let pauses = matches!(advance, Advance::Pause(_));
            match advance {
                Advance::Wait(why) => {
                    self.note(id, node, why);
                    return Ok(());
                }
                Advance::Send { node: on, request } => {
                    if run != before {
                        let detail =
                            format!("{} asked of {on} ({})", request_name(&request), request.id);
                        let issued = ActionResult::issued(&request.id, &on);
                        self.record(id, run, "action", detail, None, vec![issued])
                            .await?;
                    }
                    // A gate's note says which hook, as its wait notes do.
                    let asked = match before.step.gate() {
                        Some(phase) => format!("{phase} gate: {}", request.name),
                        None => before.step.to_string(),
                    };
                    let note = match self.fleet.send_action(&on, request).await? {
                        Ok(()) => format!("{asked} asked of {on}"),
                        Err(e) => format!("cannot ask yet: {e}"),
                    };
                    self.note(id, node, note);
                    return Ok(());
                }
                Advance::Moved => {
                    let detail = format!("{} done, now {}", before.step, run.step);
                    self.record(id, run, "step", detail, action.as_ref(), Vec::new())
                        .await?;
                }
                Advance::Tried { detail, repeated } => {
                    // Every try is in the audit with its exit code, and its
                    // output unless the try before said the same.
                    let mut action = action;
                    if let Some(a) = action.as_mut().filter(|_| repeated) {
                        a.output_tail.clear();
                    }
                    self.record(id, run, "gate", detail, action.as_ref(), Vec::new())
                        .await?;
                }
                Advance::Failed => {
                    let detail = drive::failure_detail(id, &before, &run);
                    tracing::warn!(campaign = %id, node, reason = %Untrusted(&detail), "Node failed.");
                    // With undrain_on_failure the node goes on to its
                    // undrain before it ends failed.
                    let active = run.step.is_active();
                    self.record(id, run, "failed", detail, action.as_ref(), Vec::new())
                        .await?;
                    if !active {
                        return Ok(());
                    }
                }
                Advance::Pause(reason) | Advance::Held(reason) => {
                    let phase = self.campaigns[id].campaign.phase;
                    let blocked =
                        control::guard_blocked(&mut run, phase, &reason, Timestamp::now());
                    let detail = format!("{} stopped, now {}: {reason}", before.step, run.step);
                    self.record(id, run, "step", detail, None, Vec::new())
                        .await?;
                    // An alert hold pauses nothing: the node starts again
                    // once nothing holds.
                    if blocked && pauses {
                        self.finish(id, Phase::Paused, reason).await?;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// What a node waits for: shown in status, never stored (the next pass
    /// finds it again).
    fn note(&mut self, id: &str, node: &str, note: String) {
        if let Some(r) = self
            .campaigns
            .get_mut(id)
            .and_then(|l| l.runs.get_mut(node))
        {
            r.note = note;
        }
    }

    /// Follows every undrain an operator asked for, in any campaign: asks
    /// again what was lost, and records how each ended.
    pub(super) async fn follow_undrains(&mut self) {
        // Held like every pass while the store cannot record what is done.
        if self.store.borrow().failing.is_some() {
            return;
        }
        let open: Vec<(String, String, String)> = self
            .campaigns
            .iter()
            .flat_map(|(id, l)| {
                l.runs.values().filter_map(move |r| {
                    r.undrain
                        .as_ref()
                        .map(|u| (id.clone(), r.node.clone(), u.action_id.clone()))
                })
            })
            .collect();
        for (id, node, action_id) in open {
            if let Err(e) = self.follow_undrain(&id, &node, &action_id).await {
                tracing::error!(campaign = %id, node = %node, error = %e, "Cannot follow an undrain.");
            }
        }
    }

    async fn follow_undrain(
        &mut self,
        id: &str,
        node: &str,
        action_id: &str,
    ) -> Result<(), CampaignError> {
        let action = self.fleet.action(action_id).await?;
        let live = &self.campaigns[id];
        let before = live.runs[node].clone();
        let mut run = before.clone();
        let hook = run.left_drained.clone().unwrap_or_default();
        let now = Timestamp::now();
        let (event, detail) = match undrain::follow_undrain(
            &mut run,
            &live.spec,
            action.as_ref(),
            now,
        ) {
            Undrain::Wait => return Ok(()),
            Undrain::Send { node: on, request } => {
                if run != before {
                    let detail = format!("hook {hook} asked of {on} again ({})", request.id);
                    self.record(id, run, "undrain", detail, None, Vec::new())
                        .await?;
                }
                if let Err(e) = self.fleet.send_action(&on, request).await? {
                    tracing::debug!(campaign = %id, node, on = %on, error = %e, "The undrain cannot be asked yet.");
                }
                return Ok(());
            }
            Undrain::Done => (
                "undrained",
                format!(
                    "hook {hook} succeeded: {node} is no longer left drained (it stays failed)"
                ),
            ),
            Undrain::Failed(why) => (
                "undrain-failed",
                format!(
                    "{why}; {node} is still left drained: `campaign undrain {id} {node}` asks again"
                ),
            ),
        };
        self.record(id, run, event, detail, action.as_ref(), Vec::new())
            .await
    }
}

fn request_name(r: &ActionRequest) -> String {
    match r.kind {
        ActionKind::Patch => "patch".into(),
        ActionKind::Reboot => "reboot".into(),
        ActionKind::Hook => format!("hook {}", r.name),
    }
}
