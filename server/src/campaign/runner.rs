//! The scheduler: one task owns every campaign and drives it. Operator
//! calls arrive on a command channel (`api`); a ticker and a wake-up from
//! the fleet (an action result, a node coming or going) start a pass.
//!
//! The task only gathers facts, asks the pure decisions and carries them
//! out: `control` for what operators ask, `drive::advance` for each node in
//! flight, `schedule::next_steps` for which nodes start, `undrain` for an
//! operator's undrain, `outage` for a store that failed. Every change is
//! committed to the store (one transaction with its audit lines) before
//! anything is sent to an agent, and the state a pass works from is exactly
//! what the store holds, so a restarted server picks every campaign up
//! where it stood and never repeats a finished step.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use rollcall_proto::model::{ActionKind, ActionRequest, ActionResult, Node, NodeFilter};
use rollcall_proto::text::Untrusted;
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::api::{Command, Refused};
use super::control::{self, Selection, with_reason};
use super::drive::{self, Advance, Ctx, View};
use super::lifecycle::{Event, Facts, Step};
use super::outage;
use super::record::{AuditEntry, Campaign, CampaignWrite, NodeRun, Phase, campaign_id};
use super::schedule::{self, Decision, Health};
use super::spec::CampaignSpec;
use super::undrain::{self, Undrain};
use crate::fleet::{FleetHandle, Page};
use crate::store::{StoreHealth, StoredCampaign, WriterHandle};

// Where `wire` and older callers name the API types.
pub use super::api::{
    CampaignError, CampaignEvent, CampaignHandle, CampaignView, Control, Plan, Skip, Wave,
};

/// A campaign as the scheduler holds it: exactly what the store holds, and
/// what it waits for.
struct Live {
    campaign: Campaign,
    spec: CampaignSpec,
    runs: BTreeMap<String, NodeRun>,
    audit: Vec<AuditEntry>,
    waiting: String,
    /// When the quorum guard wait that goes on now began. Memory only: a
    /// restarted server starts the wait's clock again, which at worst
    /// waits `guard_secs` once more before it pauses.
    guard_since: Option<Timestamp>,
}

impl Live {
    fn view(&self) -> CampaignView {
        CampaignView::full(&self.campaign, &self.runs, &self.waiting)
    }

    fn summary(&self) -> CampaignView {
        CampaignView::summary(&self.campaign, &self.runs, &self.waiting)
    }

    fn ended(&self) -> bool {
        control::ended(&self.campaign, self.runs.values())
    }

    /// Takes a change the store holds now.
    fn take(&mut self, write: CampaignWrite) {
        if let Some(c) = write.campaign {
            self.campaign = c;
        }
        for (_, run) in write.nodes {
            self.runs.insert(run.node.clone(), run);
        }
        self.audit.extend(write.audit);
    }
}

pub struct Scheduler {
    campaigns: BTreeMap<String, Live>,
    fleet: FleetHandle,
    writer: WriterHandle,
    events: broadcast::Sender<CampaignEvent>,
    /// Whether the store takes writes: nothing moves while it does not.
    store: watch::Receiver<StoreHealth>,
    /// Since when campaigns are held for a failing store: the step clocks
    /// stopped then, and get that time back when it writes again.
    held_since: Option<Timestamp>,
}

const EVENT_BUFFER: usize = 4_096;
/// How many steps one node may take in one pass (a node with no hooks goes
/// from precheck to its patch request at once).
const STEPS_PER_PASS: usize = 8;
/// The shortest time between two passes started by wake-ups.
const MIN_PASS_GAP: Duration = Duration::from_millis(20);

impl Scheduler {
    /// Starts the scheduler from the stored campaigns. `wake` starts a pass
    /// early (the fleet pokes it when an action result arrives or a node
    /// comes or goes); otherwise a pass runs every `tick`.
    pub fn spawn(
        stored: Vec<StoredCampaign>,
        fleet: FleetHandle,
        writer: WriterHandle,
        wake: Arc<Notify>,
        tick: Duration,
        shutdown: CancellationToken,
    ) -> Result<(CampaignHandle, tokio::task::JoinHandle<()>), String> {
        let mut campaigns = BTreeMap::new();
        for s in stored {
            // Like an unreadable campaign row (see store/load.rs): not
            // resumed, named at every start, and the server still starts.
            let spec = match CampaignSpec::parse(&s.campaign.spec_toml) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::error!(campaign = %s.campaign.id.escape_debug(), error = %e, "A stored campaign's spec cannot be read; it is not resumed.");
                    continue;
                }
            };
            let runs = s.runs.into_iter().map(|r| (r.node.clone(), r)).collect();
            campaigns.insert(
                s.campaign.id.clone(),
                Live {
                    campaign: s.campaign,
                    spec,
                    runs,
                    audit: s.audit,
                    waiting: String::new(),
                    guard_since: None,
                },
            );
        }
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let store = writer.health();
        let scheduler = Scheduler {
            campaigns,
            fleet,
            writer,
            events,
            store,
            held_since: None,
        };
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(scheduler.run(rx, wake, tick, shutdown));
        Ok((CampaignHandle::new(tx), task))
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        wake: Arc<Notify>,
        tick: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(tick);
        let mut last_pass = tokio::time::Instant::now();
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for live in self.campaigns.values().filter(|l| !l.ended()) {
            tracing::info!(campaign = %live.campaign.id, phase = %live.campaign.phase, "Campaign resumed from the store.");
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                _ = ticker.tick() => {
                    self.pass().await;
                    self.follow_undrains().await;
                }
                Ok(()) = self.store.changed() => self.pass().await,
                _ = wake.notified() => {
                    // Many wake-ups in a burst (a fleet reconnecting) make
                    // one pass, at most one per MIN_PASS_GAP.
                    tokio::time::sleep_until(last_pass + MIN_PASS_GAP).await;
                    last_pass = tokio::time::Instant::now();
                    self.pass().await;
                    self.follow_undrains().await;
                }
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Plan { spec, reply } => {
                let _ = reply.send(self.plan(&spec).await);
            }
            Command::Start {
                spec,
                spec_toml,
                operator,
                reply,
            } => {
                let started = self.start(*spec, spec_toml, &operator).await;
                let _ = reply.send(started);
                self.pass().await;
            }
            Command::Get { id, reply } => {
                let _ = reply.send(self.live(&id).map(Live::view));
            }
            Command::List { after, size, reply } => {
                let from = after.map_or(Bound::Unbounded, Bound::Excluded);
                let rest = self
                    .campaigns
                    .range::<String, _>((from, Bound::Unbounded))
                    .map(|(_, live)| live);
                let _ = reply.send(Ok(Page::take(rest, size).map(Live::summary)));
            }
            Command::Control {
                id,
                control,
                operator,
                reason,
                reply,
            } => {
                let done = self.control(&id, control, &operator, &reason).await;
                let _ = reply.send(done);
                self.pass().await;
            }
            Command::Watch { id, reply } => {
                let rx = self.events.subscribe();
                let _ = reply.send(self.live(&id).map(|l| (l.view(), rx)));
            }
            Command::Audit { id, reply } => {
                let _ = reply.send(self.live(&id).map(|l| l.audit.clone()));
            }
            Command::Undrain {
                id,
                node,
                operator,
                reason,
                reply,
            } => {
                let _ = reply.send(self.undrain(&id, &node, &operator, &reason).await);
            }
        }
    }

    fn live(&self, id: &str) -> Result<&Live, CampaignError> {
        self.campaigns
            .get(id)
            .ok_or_else(|| CampaignError::NotFound(id.to_owned()))
    }

    /// Who a spec covers and who of them is skipped, and why.
    async fn select(&self, spec: &CampaignSpec) -> Result<Selection, CampaignError> {
        let nodes = self.fleet.list(NodeFilter::default()).await?;
        let mut selection = Selection::default();
        for node in nodes.iter().filter(|n| spec.select.matches(n)) {
            let details = if control::wants_report(spec, node) {
                self.fleet.get(&node.name).await?
            } else {
                None
            };
            selection.add(spec, node, details.as_ref().and_then(|d| d.report.as_ref()));
        }
        if selection.is_empty() {
            return Err(CampaignError::Invalid(
                "the selector matches no known node".into(),
            ));
        }
        Ok(selection)
    }

    async fn plan(&self, spec: &CampaignSpec) -> Result<Plan, CampaignError> {
        let selection = self.select(spec).await?;
        Ok(Plan {
            name: spec.name.clone(),
            waves: selection.waves(spec),
            skipped: selection.skips(),
        })
    }

    async fn start(
        &mut self,
        spec: CampaignSpec,
        spec_toml: String,
        operator: &str,
    ) -> Result<CampaignView, CampaignError> {
        control::one_open(self.campaigns.values().map(|l| (&l.campaign, &l.runs)))?;
        let selection = self.select(&spec).await?;
        let now = Timestamp::now();
        let id = campaign_id(now, self.campaigns.len() + 1);
        let change = control::open(&id, &spec, spec_toml, operator, &selection, now);
        if !self.writer.put_campaign(change.write.clone()).await {
            return Err(CampaignError::Store);
        }
        tracing::info!(campaign = %id, operator = %Untrusted(operator), nodes = selection.members.len(), skipped = selection.skipped.len(), "Campaign started.");
        let write = change.write;
        let live = Live {
            campaign: write.campaign.expect("a new campaign is written whole"),
            spec,
            runs: write
                .nodes
                .into_iter()
                .map(|(_, r)| (r.node.clone(), r))
                .collect(),
            audit: write.audit,
            waiting: String::new(),
            guard_since: None,
        };
        let view = live.view();
        self.campaigns.insert(id.clone(), live);
        self.emit(&id, "", None, change.message);
        Ok(view)
    }

    async fn control(
        &mut self,
        id: &str,
        control: Control,
        operator: &str,
        reason: &str,
    ) -> Result<CampaignView, CampaignError> {
        let live = self.live(id)?;
        let change = control::steer(
            &live.campaign,
            &live.runs,
            control,
            operator,
            reason,
            Timestamp::now(),
        )?;
        self.commit(id, change.write, "", None, change.message)
            .await?;
        let event = control.event();
        tracing::info!(campaign = %id, operator = %Untrusted(operator), event, "Campaign {event}.");
        Ok(self.live(id)?.view())
    }

    /// An operator's undrain of a node that failed and stays drained:
    /// stored with its audit line, then sent. Any phase: undoing a drain
    /// never starts anything new.
    async fn undrain(
        &mut self,
        id: &str,
        node: &str,
        operator: &str,
        reason: &str,
    ) -> Result<CampaignView, CampaignError> {
        let live = self.live(id)?;
        let Some(run) = live.runs.get(node) else {
            return Err(Refused::NotMember {
                id: id.to_owned(),
                node: node.to_owned(),
            }
            .into());
        };
        let mut run = run.clone();
        let nodes = self.fleet.list(NodeFilter::default()).await?;
        let fleet = fleet_health(&nodes);
        let now = Timestamp::now();
        let actor = format!("operator:{operator}");
        let (on, request) = undrain::ask_undrain(&mut run, id, &live.spec, &fleet, &actor, now)?;
        let hook = request.name.clone();
        let detail = with_reason(
            &format!("hook {hook} asked of {on} ({}) by {operator}", request.id),
            reason,
        );
        let step = run.step;
        let write = CampaignWrite {
            campaign: None,
            audit: vec![AuditEntry::new(
                id,
                now,
                &actor,
                node,
                "undrain",
                detail.clone(),
            )],
            nodes: vec![(id.to_owned(), run)],
            actions: vec![ActionResult::issued(&request.id, &on)],
        };
        self.commit(id, write, node, Some(step), detail).await?;
        tracing::info!(campaign = %id, node = %Untrusted(node), operator = %Untrusted(operator), hook = %hook, on = %on, "Undrain asked for.");
        let view = self.live(id)?.view();
        if let Err(e) = self.fleet.send_action(&on, request).await? {
            // Stored: it is asked again at the next pass.
            tracing::info!(campaign = %id, node = %Untrusted(node), on = %on, error = %e, "The undrain cannot be asked yet.");
        }
        Ok(view)
    }

    /// Follows every undrain an operator asked for, in any campaign: asks
    /// again what was lost, and records how each ended.
    async fn follow_undrains(&mut self) {
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

    /// One look at every campaign that can move.
    async fn pass(&mut self) {
        if !self.store_writes().await {
            return;
        }
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
        for id in ids {
            if let Err(e) = self.pass_one(&id, &fleet).await {
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
    ) -> Result<(), CampaignError> {
        let active: Vec<String> = self.campaigns[id]
            .runs
            .values()
            .filter(|r| r.step.is_active())
            .map(|r| r.node.clone())
            .collect();
        for node in active {
            self.drive_node(id, &node, fleet).await?;
        }
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
        );
        live.waiting = pass.waiting.clone().unwrap_or_default();
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
                    self.drive_node(id, &node, fleet).await?;
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
    ) -> Result<(), CampaignError> {
        for _ in 0..STEPS_PER_PASS {
            let live = &self.campaigns[id];
            let mut run = live.runs[node].clone();
            if !run.step.is_active() {
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
                now: Timestamp::now(),
            };
            match drive::advance(&mut run, &ctx) {
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
                    let note = match self.fleet.send_action(&on, request).await? {
                        Ok(()) => format!("{} asked of {on}", before.step),
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
                Advance::Pause(reason) => {
                    let phase = self.campaigns[id].campaign.phase;
                    let pause = control::guard_blocked(&mut run, phase, &reason, Timestamp::now());
                    let detail = format!("{} stopped, now {}: {reason}", before.step, run.step);
                    self.record(id, run, "step", detail, None, Vec::new())
                        .await?;
                    if pause {
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

    /// Stores a node's new state with its audit line (and the outcome of
    /// `action`, if it ended) and the actions it asks for (as issued), then
    /// takes it.
    async fn record(
        &mut self,
        id: &str,
        run: NodeRun,
        event: &str,
        detail: String,
        action: Option<&ActionResult>,
        actions: Vec<ActionResult>,
    ) -> Result<(), CampaignError> {
        let mut entry = AuditEntry::new(
            id,
            Timestamp::now(),
            "scheduler",
            &run.node,
            event,
            detail.clone(),
        );
        if let Some(a) = action.filter(|a| a.state.is_final()) {
            entry.exit_code = a.exit_code;
            entry.output_tail.clone_from(&a.output_tail);
        }
        let (node, step) = (run.node.clone(), run.step);
        let write = CampaignWrite {
            campaign: None,
            nodes: vec![(id.to_owned(), run)],
            actions,
            audit: vec![entry],
        };
        self.commit(id, write, &node, Some(step), detail.clone())
            .await?;
        // The detail may quote an agent's error, so it is a field, not the message.
        tracing::info!(campaign = %id, node = %node, step = %step, detail = %Untrusted(&detail), "Node step recorded.");
        Ok(())
    }

    async fn finish(
        &mut self,
        id: &str,
        phase: Phase,
        reason: String,
    ) -> Result<(), CampaignError> {
        let c = &self.campaigns[id].campaign;
        let change = control::conclude(c, phase, &reason, Timestamp::now());
        self.commit(id, change.write, "", None, change.message)
            .await?;
        let event = control::phase_event(phase);
        tracing::info!(campaign = %id, phase = %phase, reason = %Untrusted(&reason), "Campaign {event}.");
        Ok(())
    }

    /// Stores one change (one transaction, with its audit lines), then
    /// takes it and tells watchers `message`. Nothing of it is taken when
    /// the store refuses it.
    async fn commit(
        &mut self,
        id: &str,
        write: CampaignWrite,
        node: &str,
        step: Option<Step>,
        message: String,
    ) -> Result<(), CampaignError> {
        if !self.writer.put_campaign(write.clone()).await {
            return Err(CampaignError::Store);
        }
        let live = self.campaigns.get_mut(id).expect("the campaign exists");
        live.take(write);
        self.emit(id, node, step, message);
        Ok(())
    }

    fn emit(&self, id: &str, node: &str, step: Option<Step>, message: String) {
        let Some(live) = self.campaigns.get(id) else {
            return;
        };
        let _ = self.events.send(CampaignEvent {
            campaign: id.to_owned(),
            at: Timestamp::now(),
            node: node.to_owned(),
            step,
            phase: live.campaign.phase,
            message,
            ended: live.ended(),
        });
    }
}

/// What the scheduler needs to know of every node: its role, and whether
/// it is online and healthy.
fn fleet_health(nodes: &[Node]) -> BTreeMap<String, Health> {
    nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                Health {
                    role: n.role,
                    online: n.online,
                    healthy: n.containers_unhealthy == 0,
                },
            )
        })
        .collect()
}

fn request_name(r: &ActionRequest) -> String {
    match r.kind {
        ActionKind::Patch => "patch".into(),
        ActionKind::Reboot => "reboot".into(),
        ActionKind::Hook => format!("hook {}", r.name),
    }
}
