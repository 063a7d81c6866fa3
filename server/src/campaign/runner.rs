//! The scheduler: one task owns every campaign and drives it. Operator
//! calls arrive on a command channel; a ticker and a wake-up from the fleet
//! (an action result, a node coming or going) start a pass.
//!
//! A pass looks at the fleet as it is now, moves each node in flight on
//! through `drive::advance`, then asks `schedule::next_steps` which nodes
//! start. Every change is committed to the store (one transaction with its
//! audit lines) before anything is sent to an agent, and the state a pass
//! works from is exactly what the store holds, so a restarted server picks
//! every campaign up where it stood and never repeats a finished step.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use rollcall_proto::model::{ActionResult, Node, NodeFilter, Role};
use rollcall_proto::text::Untrusted;
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::drive::{self, Advance, Ctx, Undrain, View};
use super::lifecycle::Step;
use super::record::{AuditEntry, Campaign, CampaignWrite, NodeRun, campaign_id};
use super::schedule::{self, Decision, Health, Member, Phase};
use super::spec::{CampaignSpec, RebootPolicy};
use crate::fleet::{FleetHandle, FleetStopped, Page};
use crate::store::{StoreHealth, StoredCampaign, WriterHandle};

/// Why an operator's request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("{0}")]
    Invalid(String),
    #[error("no campaign with id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the campaign change could not be stored; nothing was done")]
    Store,
    #[error(transparent)]
    Stopped(#[from] FleetStopped),
}

/// A campaign as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CampaignView {
    pub campaign: Campaign,
    /// Every node's run; empty in a listing (see `nodes_by_step`).
    pub nodes: Vec<NodeRun>,
    /// How many nodes are at each step.
    pub nodes_by_step: BTreeMap<String, u32>,
    /// Why no more nodes start right now (empty while none waits).
    pub waiting: String,
    /// Finished: nothing will happen any more.
    pub ended: bool,
    /// The nodes that failed and stay drained (see `NodeRun::left_drained`),
    /// in listings too, so `fleet status` can name them.
    pub left_drained: Vec<String>,
}

fn ended<'a>(c: &Campaign, runs: impl IntoIterator<Item = &'a NodeRun>) -> bool {
    match c.phase {
        Phase::Completed => true,
        Phase::Cancelled => runs.into_iter().all(|r| !r.step.is_active()),
        Phase::Running | Phase::Paused => false,
    }
}

/// A dry run: the order nodes would go in, and who would be skipped.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub name: String,
    /// Nodes per role, in role order, in groups of the role's concurrency.
    pub waves: Vec<Wave>,
    pub skipped: Vec<Skip>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Wave {
    pub role: Role,
    pub nodes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skip {
    pub node: String,
    pub reason: String,
}

/// Something that happened in a campaign, for watchers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CampaignEvent {
    pub campaign: String,
    pub at: Timestamp,
    pub node: String,
    pub step: Option<Step>,
    pub phase: Phase,
    pub message: String,
    pub ended: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Pause,
    /// Go on; failed nodes stay failed (and no longer count against the
    /// budget) unless `retry_failed`, which starts them again.
    Resume {
        retry_failed: bool,
    },
    Cancel,
}

type Reply<T> = oneshot::Sender<Result<T, CampaignError>>;

enum Command {
    Plan {
        spec: Box<CampaignSpec>,
        reply: Reply<Plan>,
    },
    Start {
        spec: Box<CampaignSpec>,
        spec_toml: String,
        operator: String,
        reply: Reply<CampaignView>,
    },
    Get {
        id: String,
        reply: Reply<CampaignView>,
    },
    List {
        after: Option<String>,
        size: usize,
        reply: Reply<Page<CampaignView>>,
    },
    Control {
        id: String,
        control: Control,
        operator: String,
        reason: String,
        reply: Reply<CampaignView>,
    },
    Watch {
        id: String,
        reply: Reply<(CampaignView, broadcast::Receiver<CampaignEvent>)>,
    },
    Audit {
        id: String,
        reply: Reply<Vec<AuditEntry>>,
    },
    Undrain {
        id: String,
        node: String,
        operator: String,
        reason: String,
        reply: Reply<CampaignView>,
    },
}

/// A cheap handle on the scheduler.
#[derive(Clone)]
pub struct CampaignHandle {
    tx: mpsc::Sender<Command>,
}

impl CampaignHandle {
    pub async fn plan(&self, spec: CampaignSpec) -> Result<Plan, CampaignError> {
        self.call(|reply| Command::Plan {
            spec: Box::new(spec),
            reply,
        })
        .await
    }

    /// Starts a campaign from its TOML spec; `operator` is who asked.
    pub async fn start(
        &self,
        spec_toml: &str,
        operator: &str,
    ) -> Result<CampaignView, CampaignError> {
        let spec = CampaignSpec::parse(spec_toml).map_err(CampaignError::Invalid)?;
        self.call(|reply| Command::Start {
            spec: Box::new(spec),
            spec_toml: spec_toml.to_owned(),
            operator: operator.to_owned(),
            reply,
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<CampaignView, CampaignError> {
        let id = id.to_owned();
        self.call(|reply| Command::Get { id, reply }).await
    }

    /// Up to `size` campaigns after the one with id `after`, oldest first,
    /// as summaries (no node rows, no spec).
    pub async fn list(
        &self,
        after: Option<String>,
        size: usize,
    ) -> Result<Page<CampaignView>, CampaignError> {
        self.call(|reply| Command::List { after, size, reply })
            .await
    }

    pub async fn control(
        &self,
        id: &str,
        control: Control,
        operator: &str,
        reason: &str,
    ) -> Result<CampaignView, CampaignError> {
        let (id, operator, reason) = (id.to_owned(), operator.to_owned(), reason.to_owned());
        self.call(|reply| Command::Control {
            id,
            control,
            operator,
            reason,
            reply,
        })
        .await
    }

    /// The campaign now, and every event after that moment.
    pub async fn watch(
        &self,
        id: &str,
    ) -> Result<(CampaignView, broadcast::Receiver<CampaignEvent>), CampaignError> {
        let id = id.to_owned();
        self.call(|reply| Command::Watch { id, reply }).await
    }

    pub async fn audit(&self, id: &str) -> Result<Vec<AuditEntry>, CampaignError> {
        let id = id.to_owned();
        self.call(|reply| Command::Audit { id, reply }).await
    }

    /// Runs the undrain hook of a node that failed and stays drained, on
    /// behalf of `operator`. Answers once the request is stored and sent;
    /// the hook's outcome follows in status, watch and the audit log.
    pub async fn undrain(
        &self,
        id: &str,
        node: &str,
        operator: &str,
        reason: &str,
    ) -> Result<CampaignView, CampaignError> {
        let (id, node) = (id.to_owned(), node.to_owned());
        let (operator, reason) = (operator.to_owned(), reason.to_owned());
        self.call(|reply| Command::Undrain {
            id,
            node,
            operator,
            reason,
            reply,
        })
        .await
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, CampaignError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| CampaignError::Stopped(FleetStopped))?;
        rx.await.map_err(|_| CampaignError::Stopped(FleetStopped))?
    }
}

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
        CampaignView {
            campaign: self.campaign.clone(),
            nodes: self.runs.values().cloned().collect(),
            ..self.summary()
        }
    }

    /// The view without node rows and without the spec, for listings.
    fn summary(&self) -> CampaignView {
        let mut nodes_by_step = BTreeMap::new();
        for run in self.runs.values() {
            *nodes_by_step
                .entry(run.step.as_str().to_owned())
                .or_default() += 1;
        }
        CampaignView {
            campaign: Campaign {
                spec_toml: String::new(),
                ..self.campaign.clone()
            },
            nodes: Vec::new(),
            nodes_by_step,
            waiting: self.waiting.clone(),
            ended: ended(&self.campaign, self.runs.values()),
            left_drained: self
                .runs
                .values()
                .filter(|r| r.left_drained.is_some())
                .map(|r| r.node.clone())
                .collect(),
        }
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
        Ok((CampaignHandle { tx }, task))
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
        for live in self
            .campaigns
            .values()
            .filter(|l| !ended(&l.campaign, l.runs.values()))
        {
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
    async fn members(&self, spec: &CampaignSpec) -> Result<(Vec<Node>, Vec<Skip>), CampaignError> {
        let nodes = self.fleet.list(NodeFilter::default()).await?;
        let mut members = Vec::new();
        let mut skipped = Vec::new();
        for node in nodes.into_iter().filter(|n| spec.select.matches(n)) {
            let reason = if !spec.role_order.contains(&node.role) {
                Some(format!("role {} is not in role_order", node.role))
            } else if !node.online {
                Some(format!("offline ({})", node.offline_reason))
            } else {
                let details = self.fleet.get(&node.name).await?;
                let up_to_date = details
                    .as_ref()
                    .and_then(|d| d.report.as_ref())
                    .and_then(|r| r.updates.as_ref())
                    .is_some_and(|u| u.checked && u.last_error.is_empty() && u.count == 0);
                (spec.skip_up_to_date
                    && up_to_date
                    && !node.reboot_required
                    && spec.reboot != RebootPolicy::Always)
                    .then(|| "up to date: no pending updates, no reboot required".to_owned())
            };
            match reason {
                Some(reason) => skipped.push(Skip {
                    node: node.name.clone(),
                    reason,
                }),
                None => members.push(node),
            }
        }
        Ok((members, skipped))
    }

    async fn plan(&self, spec: &CampaignSpec) -> Result<Plan, CampaignError> {
        let (members, skipped) = self.members(spec).await?;
        if members.is_empty() && skipped.is_empty() {
            return Err(CampaignError::Invalid(
                "the selector matches no known node".into(),
            ));
        }
        let mut waves = Vec::new();
        for role in &spec.role_order {
            let names: Vec<String> = members
                .iter()
                .filter(|n| n.role == *role)
                .map(|n| n.name.clone())
                .collect();
            let size = spec.concurrency_for(*role, names.len());
            for chunk in names.chunks(size.max(1)) {
                waves.push(Wave {
                    role: *role,
                    nodes: chunk.to_vec(),
                });
            }
        }
        Ok(Plan {
            name: spec.name.clone(),
            waves,
            skipped,
        })
    }

    async fn start(
        &mut self,
        spec: CampaignSpec,
        spec_toml: String,
        operator: &str,
    ) -> Result<CampaignView, CampaignError> {
        if let Some(open) = self
            .campaigns
            .values()
            .find(|l| !ended(&l.campaign, l.runs.values()))
        {
            return Err(CampaignError::Conflict(format!(
                "campaign {} is {}; cancel it (or let it finish) before starting another",
                open.campaign.id, open.campaign.phase
            )));
        }
        let (members, skipped) = self.members(&spec).await?;
        if members.is_empty() && skipped.is_empty() {
            return Err(CampaignError::Invalid(
                "the selector matches no known node".into(),
            ));
        }
        let now = Timestamp::now();
        let id = campaign_id(now, self.campaigns.len() + 1);
        let campaign = Campaign {
            id: id.clone(),
            name: spec.name.clone(),
            spec_toml,
            phase: Phase::Running,
            reason: String::new(),
            started_by: operator.to_owned(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            held: false,
        };
        let mut runs = BTreeMap::new();
        for n in &members {
            runs.insert(n.name.clone(), NodeRun::new(n.name.clone(), n.role, now));
        }
        let mut write = CampaignWrite {
            campaign: Some(campaign.clone()),
            ..Default::default()
        };
        for s in &skipped {
            let role = self
                .fleet
                .get(&s.node)
                .await?
                .map_or(Role::Compute, |d| d.node.role);
            let mut run = NodeRun::new(s.node.clone(), role, now);
            run.enter(Step::Skipped, now);
            run.note.clone_from(&s.reason);
            runs.insert(s.node.clone(), run);
        }
        write.nodes = runs.values().map(|r| (id.clone(), r.clone())).collect();
        write.audit.push(audit(
            &id,
            now,
            &format!("operator:{operator}"),
            "",
            "started",
            format!(
                "campaign {:?}: {} node(s), {} skipped",
                spec.name,
                members.len(),
                skipped.len()
            ),
        ));
        for s in &skipped {
            write.audit.push(audit(
                &id,
                now,
                "scheduler",
                &s.node,
                "skipped",
                s.reason.clone(),
            ));
        }
        if !self.writer.put_campaign(write.clone()).await {
            return Err(CampaignError::Store);
        }
        tracing::info!(campaign = %id, operator = %Untrusted(operator), nodes = members.len(), skipped = skipped.len(), "Campaign started.");
        let live = Live {
            campaign,
            spec,
            runs,
            audit: write.audit,
            waiting: String::new(),
            guard_since: None,
        };
        let view = live.view();
        self.campaigns.insert(id.clone(), live);
        self.emit(&id, "", None, format!("started by {operator}"));
        Ok(view)
    }

    async fn control(
        &mut self,
        id: &str,
        control: Control,
        operator: &str,
        reason: &str,
    ) -> Result<CampaignView, CampaignError> {
        let now = Timestamp::now();
        let live = self
            .campaigns
            .get_mut(id)
            .ok_or_else(|| CampaignError::NotFound(id.to_owned()))?;
        let actor = format!("operator:{operator}");
        let mut c = live.campaign.clone();
        let mut changed_runs = Vec::new();
        let (event, detail) = match (control, c.phase) {
            (Control::Pause, Phase::Running) => {
                c.phase = Phase::Paused;
                c.held = true;
                c.reason = with_reason(&format!("paused by {operator}"), reason);
                ("paused", c.reason.clone())
            }
            (Control::Resume { retry_failed }, Phase::Paused) => {
                c.phase = Phase::Running;
                c.held = false;
                c.reason.clear();
                let mut failed = Vec::new();
                for run in live.runs.values() {
                    let mut run = run.clone();
                    if run.step.is_active() {
                        // The pause stopped the clock: each step in flight
                        // gets its full time again.
                        run.since = now;
                    } else if run.step == Step::Failed && !run.failure_accepted {
                        failed.push(run.node.clone());
                        if retry_failed {
                            run.attempt += 1;
                            run.enter(Step::Pending, now);
                            run.finished_at = None;
                            run.note.clear();
                        } else {
                            run.failure_accepted = true;
                        }
                    } else {
                        continue;
                    }
                    changed_runs.push(run);
                }
                let what = match (failed.is_empty(), retry_failed) {
                    (true, _) => String::new(),
                    (false, true) => format!("; retrying {}", failed.join(", ")),
                    (false, false) => format!("; failures accepted: {}", failed.join(", ")),
                };
                (
                    "resumed",
                    with_reason(&format!("resumed by {operator}{what}"), reason),
                )
            }
            (Control::Cancel, Phase::Running | Phase::Paused) => {
                c.phase = Phase::Cancelled;
                c.held = false;
                c.reason = with_reason(&format!("cancelled by {operator}"), reason);
                for run in live.runs.values().filter(|r| r.step == Step::Pending) {
                    let mut run = run.clone();
                    run.enter(Step::Skipped, now);
                    run.note = "campaign cancelled".into();
                    changed_runs.push(run);
                }
                if !live.runs.values().any(|r| r.step.is_active()) {
                    c.finished_at = Some(now);
                }
                ("cancelled", c.reason.clone())
            }
            (control, phase) => {
                return Err(CampaignError::Conflict(format!(
                    "campaign {id} is {phase}: cannot {}",
                    match control {
                        Control::Pause => "pause it",
                        Control::Resume { .. } => "resume it",
                        Control::Cancel => "cancel it",
                    }
                )));
            }
        };
        c.updated_at = now;
        let entry = audit(id, now, &actor, "", event, detail.clone());
        let write = CampaignWrite {
            campaign: Some(c.clone()),
            nodes: changed_runs
                .iter()
                .map(|r| (id.to_owned(), r.clone()))
                .collect(),
            actions: Vec::new(),
            audit: vec![entry.clone()],
        };
        if !self.writer.put_campaign(write).await {
            return Err(CampaignError::Store);
        }
        tracing::info!(campaign = %id, operator = %Untrusted(operator), event, "Campaign {event}.");
        live.campaign = c;
        for run in changed_runs {
            live.runs.insert(run.node.clone(), run);
        }
        live.audit.push(entry);
        let view = live.view();
        self.emit(id, "", None, detail);
        Ok(view)
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
            return Err(CampaignError::Conflict(format!(
                "{node} is not a node of campaign {id}"
            )));
        };
        let mut run = run.clone();
        let nodes = self.fleet.list(NodeFilter::default()).await?;
        let fleet = fleet_health(&nodes);
        let now = Timestamp::now();
        let actor = format!("operator:{operator}");
        let (on, request) = drive::ask_undrain(&mut run, id, &live.spec, &fleet, &actor, now)
            .map_err(CampaignError::Conflict)?;
        let hook = request.name.clone();
        let detail = with_reason(
            &format!("hook {hook} asked of {on} ({}) by {operator}", request.id),
            reason,
        );
        let entry = audit(id, now, &actor, node, "undrain", detail.clone());
        let write = CampaignWrite {
            campaign: None,
            nodes: vec![(id.to_owned(), run.clone())],
            actions: vec![ActionResult::issued(&request.id, &on)],
            audit: vec![entry.clone()],
        };
        if !self.writer.put_campaign(write).await {
            return Err(CampaignError::Store);
        }
        tracing::info!(campaign = %id, node = %Untrusted(node), operator = %Untrusted(operator), hook = %hook, on = %on, "Undrain asked for.");
        let step = run.step;
        let live = self.campaigns.get_mut(id).expect("the campaign exists");
        live.runs.insert(node.to_owned(), run);
        live.audit.push(entry);
        let view = live.view();
        self.emit(id, node, Some(step), detail);
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
        let (event, detail) = match drive::follow_undrain(
            &mut run,
            &live.spec,
            action.as_ref(),
            now,
        ) {
            Undrain::Wait => return Ok(()),
            Undrain::Send { node: on, request } => {
                if run != before {
                    let detail = format!("hook {hook} asked of {on} again ({})", request.id);
                    self.commit_run(id, run, "undrain", detail, None, String::new())
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
        let (exit_code, tail) = action_outcome(action.as_ref());
        self.commit_run(id, run, event, detail, exit_code, tail)
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
            .filter(|(_, l)| match l.campaign.phase {
                Phase::Running => true,
                // Nodes in flight finish after a cancel or a budget pause;
                // an operator's pause holds everything.
                Phase::Cancelled | Phase::Paused => {
                    !l.campaign.held && l.runs.values().any(|r| r.step.is_active())
                }
                Phase::Completed => false,
            })
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
    /// campaign's `waiting`, and the step clocks stop: when the store writes
    /// again, every step in flight gets the time of the outage back, so no
    /// node fails because the disk was full.
    async fn store_writes(&mut self) -> bool {
        let health = self.store.borrow_and_update().clone();
        if let Some(failure) = &health.failing {
            let why = health.describe();
            let newly = self.held_since.is_none();
            self.held_since.get_or_insert(failure.since);
            let open: Vec<String> = self
                .campaigns
                .iter_mut()
                .filter(|(_, l)| !ended(&l.campaign, l.runs.values()))
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
        let ids: Vec<String> = self.campaigns.keys().cloned().collect();
        for id in ids {
            let live = &self.campaigns[&id];
            if ended(&live.campaign, live.runs.values()) {
                continue;
            }
            let shifted: Vec<NodeRun> = live
                .runs
                .values()
                .filter(|r| r.step.is_active() || r.undrain.is_some())
                .map(|r| {
                    let mut r = r.clone();
                    if r.step.is_active() {
                        r.since = r.since.saturating_add(lost);
                        // Results that came while the store failed are held
                        // by their agents (not acknowledged): ask at once.
                        r.asked_at = None;
                    }
                    if let Some(u) = &mut r.undrain {
                        u.asked_at = u.asked_at.saturating_add(lost);
                        u.sent_at = None;
                    }
                    r
                })
                .collect();
            let detail = format!(
                "the store failed for {}s; campaign held, and the {} step(s) in flight get that time back",
                lost.as_secs(),
                shifted.len()
            );
            let entry = audit(&id, now, "scheduler", "", "store-recovered", detail.clone());
            let write = CampaignWrite {
                campaign: None,
                nodes: shifted.iter().map(|r| (id.clone(), r.clone())).collect(),
                actions: Vec::new(),
                audit: vec![entry.clone()],
            };
            if !self.writer.put_campaign(write).await {
                // Failing again: stay held, from the same moment.
                return false;
            }
            let live = self.campaigns.get_mut(&id).expect("the campaign exists");
            for r in shifted {
                live.runs.insert(r.node.clone(), r);
            }
            live.guard_since = live.guard_since.map(|t| t.saturating_add(lost));
            live.audit.push(entry);
            live.waiting.clear();
            tracing::info!(campaign = %id, held_secs = lost.as_secs(), "Campaign goes on: the store writes again.");
            self.emit(&id, "", None, detail);
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
        let live = &self.campaigns[id];
        if live.campaign.phase == Phase::Paused {
            return Ok(());
        }
        if live.campaign.phase == Phase::Cancelled {
            if ended(&live.campaign, live.runs.values()) {
                self.finish(id, Phase::Cancelled, "every node in flight finished".into())
                    .await?;
            }
            return Ok(());
        }
        let members: Vec<Member> = live
            .runs
            .values()
            .map(|r| Member {
                name: r.node.clone(),
                role: r.role,
                // A failure an operator accepted no longer counts against
                // the budget.
                step: if r.step == Step::Failed && r.failure_accepted {
                    Step::Skipped
                } else {
                    r.step
                },
            })
            .collect();
        let pass = schedule::next_steps(
            &live.spec,
            live.campaign.phase,
            &members,
            fleet,
            Timestamp::now(),
            live.guard_since,
        );
        let live = self.campaigns.get_mut(id).expect("the campaign exists");
        live.waiting = pass.waiting.clone().unwrap_or_default();
        live.guard_since = if pass.guard {
            live.guard_since.or(Some(Timestamp::now()))
        } else {
            None
        };
        for decision in pass.decisions {
            match decision {
                Decision::Start(node) => {
                    let now = Timestamp::now();
                    let live = self.campaigns.get_mut(id).expect("the campaign exists");
                    let mut run = live.runs[&node].clone();
                    run.enter(Step::Precheck, now);
                    self.commit_run(id, run, "step", "precheck".into(), None, String::new())
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
            let failed: BTreeSet<String> = live
                .runs
                .values()
                .filter(|r| r.step == Step::Failed && !r.failure_accepted)
                .map(|r| r.node.clone())
                .collect();
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
                    let live = self.campaigns.get_mut(id).expect("the campaign exists");
                    if let Some(r) = live.runs.get_mut(node) {
                        r.note = why;
                    }
                    return Ok(());
                }
                Advance::Send { node: on, request } => {
                    if run != before {
                        let detail =
                            format!("{} asked of {on} ({})", request_name(&request), request.id);
                        let issued = ActionResult::issued(&request.id, &on);
                        self.commit(
                            id,
                            run,
                            "action",
                            detail,
                            (None, String::new()),
                            vec![issued],
                        )
                        .await?;
                    }
                    let note = match self.fleet.send_action(&on, request).await? {
                        Ok(()) => format!("{} asked of {on}", before.step),
                        Err(e) => format!("cannot ask yet: {e}"),
                    };
                    if let Some(r) = self
                        .campaigns
                        .get_mut(id)
                        .and_then(|l| l.runs.get_mut(node))
                    {
                        r.note = note;
                    }
                    return Ok(());
                }
                Advance::Moved => {
                    let (exit_code, tail) = action_outcome(action.as_ref());
                    let detail = format!("{} done, now {}", before.step, run.step);
                    self.commit_run(id, run, "step", detail, exit_code, tail)
                        .await?;
                }
                Advance::Failed => {
                    let (exit_code, tail) = action_outcome(action.as_ref());
                    let detail = drive::failure_detail(id, &before, &run);
                    tracing::warn!(campaign = %id, node, reason = %Untrusted(&detail), "Node failed.");
                    // With undrain_on_failure the node goes on to its
                    // undrain before it ends failed.
                    let active = run.step.is_active();
                    self.commit_run(id, run, "failed", detail, exit_code, tail)
                        .await?;
                    if !active {
                        return Ok(());
                    }
                }
                Advance::Pause(reason) => {
                    let phase = self.campaigns[id].campaign.phase;
                    if phase == Phase::Cancelled {
                        // Nothing new starts in a cancelled campaign.
                        run.enter(Step::Skipped, Timestamp::now());
                        run.note = format!("campaign cancelled; {reason}");
                    }
                    let detail = format!("{} stopped, now {}: {reason}", before.step, run.step);
                    self.commit_run(id, run, "step", detail, None, String::new())
                        .await?;
                    if phase == Phase::Running {
                        self.finish(id, Phase::Paused, reason).await?;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Stores a node's new state with its audit line, then takes it.
    async fn commit_run(
        &mut self,
        id: &str,
        run: NodeRun,
        event: &str,
        detail: String,
        exit_code: Option<i32>,
        output_tail: String,
    ) -> Result<(), CampaignError> {
        self.commit(id, run, event, detail, (exit_code, output_tail), Vec::new())
            .await
    }

    /// Stores a node's new state with its audit line and the actions it
    /// asks for (as issued), then takes it.
    async fn commit(
        &mut self,
        id: &str,
        run: NodeRun,
        event: &str,
        detail: String,
        (exit_code, output_tail): (Option<i32>, String),
        actions: Vec<ActionResult>,
    ) -> Result<(), CampaignError> {
        let now = Timestamp::now();
        let mut entry = audit(id, now, "scheduler", &run.node, event, detail.clone());
        entry.exit_code = exit_code;
        entry.output_tail = output_tail;
        let write = CampaignWrite {
            campaign: None,
            nodes: vec![(id.to_owned(), run.clone())],
            actions,
            audit: vec![entry.clone()],
        };
        if !self.writer.put_campaign(write).await {
            return Err(CampaignError::Store);
        }
        // The detail may quote an agent's error, so it is a field, not the message.
        tracing::info!(campaign = %id, node = %run.node, step = %run.step, detail = %Untrusted(&detail), "Node step recorded.");
        let (node, step) = (run.node.clone(), run.step);
        let live = self.campaigns.get_mut(id).expect("the campaign exists");
        live.runs.insert(node.clone(), run);
        live.audit.push(entry);
        self.emit(id, &node, Some(step), detail);
        Ok(())
    }

    async fn finish(
        &mut self,
        id: &str,
        phase: Phase,
        reason: String,
    ) -> Result<(), CampaignError> {
        let now = Timestamp::now();
        let live = self.campaigns.get_mut(id).expect("the campaign exists");
        let mut c = live.campaign.clone();
        c.phase = phase;
        c.reason.clone_from(&reason);
        c.updated_at = now;
        if phase != Phase::Paused {
            c.finished_at = Some(now);
        }
        let event = match phase {
            Phase::Paused => "paused",
            Phase::Completed => "completed",
            Phase::Cancelled => "cancelled",
            Phase::Running => "running",
        };
        let entry = audit(id, now, "scheduler", "", event, reason.clone());
        let write = CampaignWrite {
            campaign: Some(c.clone()),
            nodes: Vec::new(),
            actions: Vec::new(),
            audit: vec![entry.clone()],
        };
        if !self.writer.put_campaign(write).await {
            return Err(CampaignError::Store);
        }
        tracing::info!(campaign = %id, phase = %phase, reason = %Untrusted(&reason), "Campaign {event}.");
        live.campaign = c;
        live.audit.push(entry);
        self.emit(id, "", None, format!("{event}: {reason}"));
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
            ended: ended(&live.campaign, live.runs.values()),
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

fn request_name(r: &rollcall_proto::model::ActionRequest) -> String {
    match r.kind {
        rollcall_proto::model::ActionKind::Patch => "patch".into(),
        rollcall_proto::model::ActionKind::Reboot => "reboot".into(),
        rollcall_proto::model::ActionKind::Hook => format!("hook {}", r.name),
    }
}

fn action_outcome(action: Option<&rollcall_proto::model::ActionResult>) -> (Option<i32>, String) {
    action
        .filter(|a| a.state.is_final())
        .map(|a| (a.exit_code, a.output_tail.clone()))
        .unwrap_or_default()
}

fn with_reason(what: &str, reason: &str) -> String {
    if reason.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {reason}")
    }
}

fn audit(
    id: &str,
    at: Timestamp,
    actor: &str,
    node: &str,
    event: &str,
    detail: String,
) -> AuditEntry {
    AuditEntry {
        at,
        campaign: id.to_owned(),
        actor: actor.to_owned(),
        node: node.to_owned(),
        event: event.to_owned(),
        detail,
        exit_code: None,
        output_tail: String::new(),
    }
}
