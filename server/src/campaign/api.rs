//! What the scheduler offers operators: the handle they call, the commands
//! it sends, the views and events they get back, and why a call is refused.
//! The scheduler task (`runner`) answers every command.

use std::collections::BTreeMap;

use rollcall_proto::model::Role;
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::blast::{Blast, Impact};
use super::control;
use super::drive::NoHookRunner;
use super::lifecycle::Step;
use super::record::{AuditEntry, Campaign, NodeRun, Phase};
use super::runner::ForgetError;
use super::spec::CampaignSpec;
use crate::audit::AuditRecord;
use crate::fleet::{FleetStopped, Page};
use crate::store::NotStored;

/// Why an operator's request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("{0}")]
    Invalid(String),
    #[error("no campaign with id {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Conflict(#[from] Refused),
    #[error("the campaign change could not be stored, so nothing was done: {0}")]
    Store(#[from] NotStored),
    #[error(transparent)]
    Stopped(#[from] FleetStopped),
}

/// What the campaign's state does not allow now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("campaign {id} is {phase}; cancel it (or let it finish) before starting another")]
    OneOpen { id: String, phase: Phase },
    #[error("campaign {id} is {phase}: cannot {what}")]
    Phase {
        id: String,
        phase: Phase,
        /// What was asked: `pause it`, `resume it`, `cancel it`.
        what: &'static str,
    },
    #[error("{node} is not a node of campaign {id}")]
    NotMember { id: String, node: String },
    #[error(
        "{node} is {step} in campaign {id}, not failed: only a failed node that stays drained is undrained this way"
    )]
    NotFailed {
        id: String,
        node: String,
        step: Step,
    },
    #[error("{node} failed in campaign {id} but is not left drained: there is nothing to undo")]
    NotLeftDrained { id: String, node: String },
    #[error("an undrain of {node} is already running ({action_id} on {on}); wait for it to end")]
    UndrainRunning {
        node: String,
        action_id: String,
        on: String,
    },
    #[error("{0} now; try again later")]
    NoHookRunner(#[from] NoHookRunner),
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
    /// The blast-radius guard's impacts (see `blast.rs`), in listings too.
    pub impacts: Vec<Impact>,
    /// What holds new starts from the spec's `[alerts]` (`alerts::Hold`),
    /// in listings too; empty when nothing does.
    pub alert_hold: String,
}

impl CampaignView {
    /// The whole campaign, every node's run with it.
    pub fn full(campaign: &Campaign, runs: &BTreeMap<String, NodeRun>, waiting: &str) -> Self {
        CampaignView {
            campaign: Campaign {
                blast: Blast::default(),
                ..campaign.clone()
            },
            nodes: runs.values().cloned().collect(),
            ..CampaignView::summary(campaign, runs, waiting)
        }
    }

    /// The view without node rows and without the spec, for listings.
    pub fn summary(campaign: &Campaign, runs: &BTreeMap<String, NodeRun>, waiting: &str) -> Self {
        let mut nodes_by_step = BTreeMap::new();
        for run in runs.values() {
            *nodes_by_step
                .entry(run.step.as_str().to_owned())
                .or_default() += 1;
        }
        CampaignView {
            // The guard's record is the server's: operators see its
            // impacts (below), never the baseline.
            campaign: Campaign {
                spec_toml: String::new(),
                blast: Blast::default(),
                ..campaign.clone()
            },
            nodes: Vec::new(),
            nodes_by_step,
            waiting: waiting.to_owned(),
            ended: control::ended(campaign, runs.values()),
            left_drained: runs
                .values()
                .filter(|r| r.left_drained.is_some())
                .map(|r| r.node.clone())
                .collect(),
            impacts: campaign.blast.impacts.clone(),
            alert_hold: String::new(),
        }
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

impl Control {
    /// Its audit event: `paused`, `resumed`, `cancelled`.
    pub fn event(self) -> &'static str {
        match self {
            Control::Pause => "paused",
            Control::Resume { .. } => "resumed",
            Control::Cancel => "cancelled",
        }
    }
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, CampaignError>>;

/// What the handle asks of the scheduler task.
pub(super) enum Command {
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
    /// `nodes forget`: here because the scheduler knows which campaigns
    /// hold a node (`runner/forget.rs`).
    Forget {
        node: String,
        audit: Box<AuditRecord>,
        reply: oneshot::Sender<Result<AuditRecord, ForgetError>>,
    },
    /// A `/metrics` scrape's look at every campaign (`metrics::snapshot`).
    Metrics {
        reply: Reply<crate::metrics::CampaignSnapshot>,
    },
}

/// A cheap handle on the scheduler.
#[derive(Clone)]
pub struct CampaignHandle {
    tx: mpsc::Sender<Command>,
}

impl CampaignHandle {
    pub(super) fn new(tx: mpsc::Sender<Command>) -> Self {
        CampaignHandle { tx }
    }

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

    /// Forgets a node that is offline and held by no campaign, with
    /// `audit` (who asked, and why); answers with the line as stored.
    pub async fn forget_node(
        &self,
        node: &str,
        audit: AuditRecord,
    ) -> Result<AuditRecord, ForgetError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Forget {
            node: node.to_owned(),
            audit: Box::new(audit),
            reply,
        };
        self.tx.send(cmd).await.map_err(|_| FleetStopped)?;
        rx.await.map_err(|_| FleetStopped)?
    }

    /// Every campaign by phase, and the steps of those that have not
    /// ended: for a `/metrics` scrape.
    pub async fn metrics(&self) -> Result<crate::metrics::CampaignSnapshot, CampaignError> {
        self.call(|reply| Command::Metrics { reply }).await
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
