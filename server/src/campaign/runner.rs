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

use rollcall_proto::model::{ActionResult, Node, NodeFilter};
use rollcall_proto::text::Untrusted;
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::api::{Command, Refused};
use super::blast::Clocks as BlastClocks;
use super::control::{self, Selection, with_reason};
use super::lifecycle::Step;
use super::record::{AuditEntry, Campaign, CampaignWrite, NodeRun, Phase, campaign_id};
use super::schedule::Health;
use super::spec::CampaignSpec;
use super::undrain;
use crate::fleet::{FleetHandle, Page};
use crate::metrics::Events;
use crate::metrics::snapshot::{CampaignFacts, campaign_snapshot};
use crate::notify::{self, Notifier};
use crate::store::{StoreHealth, StoredCampaign, WriterHandle};

mod blast;
mod forget;
mod monitor;
mod pass;

pub use forget::{ForgetError, holder};

use super::api::{CampaignError, CampaignEvent, CampaignHandle, CampaignView, Control, Plan};

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
    /// Since when each container the blast-radius guard judges is bad
    /// (`runner/blast.rs`). Memory only, like `guard_since`.
    blast_clocks: BlastClocks,
    /// The spec's `[alerts]`: its poller, what holds, what was audited
    /// (`runner/monitor.rs`).
    alerting: monitor::Alerting,
    /// `control::ended`, kept by `take`: a scrape or a pass asks without
    /// walking the runs of every campaign ever kept.
    ended: bool,
}

impl Live {
    fn new(
        campaign: Campaign,
        spec: CampaignSpec,
        runs: BTreeMap<String, NodeRun>,
        audit: Vec<AuditEntry>,
    ) -> Self {
        Live {
            ended: control::ended(&campaign, runs.values()),
            campaign,
            spec,
            runs,
            audit,
            waiting: String::new(),
            guard_since: None,
            blast_clocks: BlastClocks::new(),
            alerting: monitor::Alerting::default(),
        }
    }

    fn view(&self) -> CampaignView {
        let mut view = CampaignView::full(&self.campaign, &self.runs, &self.waiting);
        view.alert_hold = self.hold_text();
        view
    }

    fn summary(&self) -> CampaignView {
        let mut view = CampaignView::summary(&self.campaign, &self.runs, &self.waiting);
        view.alert_hold = self.hold_text();
        view
    }

    fn hold_text(&self) -> String {
        self.alerting.hold_text()
    }

    fn ended(&self) -> bool {
        self.ended
    }

    /// Takes a change the store holds now.
    fn take(&mut self, write: CampaignWrite) {
        if let Some(c) = write.campaign {
            if c.phase != self.campaign.phase {
                // Every pause, resume or cancel, an operator's or the
                // runner's own: no pass may look at a held campaign, so
                // clocks kept across it would make an impact of the hold.
                self.blast_clocks.clear();
                // Nor show a hold from before it.
                self.alerting.phase_changed();
            }
            self.campaign = c;
        }
        for (_, run) in write.nodes {
            self.runs.insert(run.node.clone(), run);
        }
        self.audit.extend(write.audit);
        self.ended = control::ended(&self.campaign, self.runs.values());
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
    /// When the blast-radius guard last looked at the fleet: at most once
    /// per `runner::blast::LOOK_GAP`, however often passes run.
    blast_looked: Option<tokio::time::Instant>,
    /// What the campaigns' monitoring pollers did with silences
    /// (`runner/monitor.rs`); they also poke `wake` with each new answer.
    monitor_reports: mpsc::Sender<monitor::Report>,
    wake: Arc<Notify>,
    /// The pollers stop with the scheduler.
    shutdown: CancellationToken,
    /// The webhooks told of what changes are committed (never waited on).
    notifier: Notifier,
    /// Where the steps nodes leave are counted (`metrics`).
    metrics: Arc<Events>,
}

/// Where the scheduler tells what it committed, beyond the store and its
/// watchers: the webhooks and the metrics. Neither is ever waited on.
pub struct Outlets {
    pub notifier: Notifier,
    pub metrics: Arc<Events>,
}

const EVENT_BUFFER: usize = 4_096;
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
        outlets: Outlets,
        shutdown: CancellationToken,
    ) -> (CampaignHandle, tokio::task::JoinHandle<()>) {
        let Outlets { notifier, metrics } = outlets;
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
                Live::new(s.campaign, spec, runs, s.audit),
            );
        }
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let store = writer.health();
        let (monitor_reports, reports) = mpsc::channel(monitor::REPORT_BUFFER);
        let scheduler = Scheduler {
            campaigns,
            fleet,
            writer,
            events,
            store,
            held_since: None,
            blast_looked: None,
            monitor_reports,
            wake: wake.clone(),
            shutdown: shutdown.child_token(),
            notifier,
            metrics,
        };
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(scheduler.run(rx, reports, wake, tick, shutdown));
        (CampaignHandle::new(tx), task)
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut reports: mpsc::Receiver<monitor::Report>,
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
                Some(report) = reports.recv() => self.take_silence(report).await,
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
            Command::Forget { node, audit, reply } => {
                let _ = reply.send(self.forget(&node, *audit).await);
            }
            Command::Metrics { reply } => {
                let campaigns = self.campaigns.values().map(|l| CampaignFacts {
                    id: &l.campaign.id,
                    phase: l.campaign.phase,
                    ended: l.ended(),
                    runs: l.runs.values(),
                    spec: &l.spec,
                });
                let watchers = self.events.receiver_count() as u64;
                let _ = reply.send(Ok(campaign_snapshot(campaigns, watchers, Timestamp::now())));
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
        let mut change = control::open(&id, &spec, spec_toml, operator, &selection, now);
        self.take_baseline(&mut change, now).await?;
        self.writer.put_campaign(change.write.clone()).await?;
        self.notifier
            .offer(&notify::derive(None, &spec, &change.write, now));
        tracing::info!(campaign = %id, operator = %Untrusted(operator), nodes = selection.members.len(), skipped = selection.skipped.len(), "Campaign started.");
        let write = change.write;
        let live = Live::new(
            write.campaign.expect("a new campaign is written whole"),
            spec,
            write
                .nodes
                .into_iter()
                .map(|(_, r)| (r.node.clone(), r))
                .collect(),
            write.audit,
        );
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
        self.writer.put_campaign(write.clone()).await?;
        self.take(id, write);
        self.emit(id, node, step, message);
        Ok(())
    }

    /// Takes a change the store now holds, and offers the webhooks what
    /// it means (`notify::derive`).
    fn take(&mut self, id: &str, write: CampaignWrite) {
        let live = self.campaigns.get_mut(id).expect("the campaign exists");
        let notices = notify::derive(
            Some((&live.campaign, &live.runs)),
            &live.spec,
            &write,
            Timestamp::now(),
        );
        self.notifier.offer(&notices);
        // Metrics: the steps nodes leave now, and their failures.
        let now = Timestamp::now();
        for (_, run) in &write.nodes {
            if let Some(old) = live.runs.get(&run.node) {
                self.metrics.run_changed(old, run, now);
            }
        }
        live.take(write);
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
pub(super) fn fleet_health(nodes: &[Node]) -> BTreeMap<String, Health> {
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
