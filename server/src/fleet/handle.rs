//! `FleetHandle`: how sessions, operator calls and the scheduler reach the
//! fleet's task, each call one command on its queue.

use rollcall_proto::model::{
    ActionRequest, ActionResult, ContainerFilter, FleetSummary, Node, NodeContainer, NodeDetail,
    NodeEvent, NodeFilter, Report,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::bad::{BadContainers, ByNode};
use super::forget::{ForgetRefused, Removal};
use super::ledger::{LedgerCommand, NotSent, UpdateVerdict};
use super::{Hello, SessionId, SessionLink, Update};
use crate::audit::AuditRecord;

/// One page of a listing, and whether more follow it.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

impl<T> Page<T> {
    /// The first `size` items, and whether there is another after them.
    pub fn take(items: impl Iterator<Item = T>, size: usize) -> Self {
        let mut items = items.peekable();
        let page = items.by_ref().take(size).collect();
        Page {
            items: page,
            more: items.peek().is_some(),
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            more: self.more,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the fleet service has stopped")]
pub struct FleetStopped;

/// What the fleet's task is asked; answered by `Fleet::handle`.
pub(super) enum Command {
    Connect {
        hello: Hello,
        link: SessionLink,
        reply: oneshot::Sender<SessionId>,
    },
    Ledger(LedgerCommand),
    Report {
        node: String,
        session: SessionId,
        update: Box<Update>,
    },
    Disconnect {
        node: String,
        session: SessionId,
        reason: String,
    },
    List {
        filter: NodeFilter,
        after: Option<String>,
        size: usize,
        reply: oneshot::Sender<Page<Node>>,
    },
    Get {
        name: String,
        reply: oneshot::Sender<Option<NodeDetail>>,
    },
    Watch {
        reply: oneshot::Sender<(Vec<Node>, broadcast::Receiver<NodeEvent>)>,
    },
    Containers {
        filter: ContainerFilter,
        after: Option<(String, String)>,
        size: usize,
        reply: oneshot::Sender<Page<NodeContainer>>,
    },
    Summary {
        fs_threshold_percent: u32,
        list_limit: u32,
        cert_within_days: u32,
        reply: oneshot::Sender<FleetSummary>,
    },
    Forget {
        name: String,
        audit: Box<AuditRecord>,
        reply: oneshot::Sender<Result<Removal, ForgetRefused>>,
    },
    BadContainers {
        cap: usize,
        baseline: ByNode,
        reply: oneshot::Sender<BadContainers>,
    },
    /// A `/metrics` scrape's look at the fleet (`metrics::snapshot`).
    Metrics {
        per_node_max: usize,
        reply: oneshot::Sender<crate::metrics::FleetSnapshot>,
    },
}

#[derive(Clone)]
pub struct FleetHandle {
    pub(super) tx: mpsc::Sender<Command>,
}

impl FleetHandle {
    /// Registers a new session; an older session of the same node is ended.
    pub async fn connect(
        &self,
        hello: Hello,
        link: SessionLink,
    ) -> Result<SessionId, FleetStopped> {
        self.call(|reply| Command::Connect { hello, link, reply })
            .await
    }

    /// Hands an action request to the node's current session. An error
    /// names why it could not (offline, session busy). The caller stores
    /// the request first (a campaign does, with its run); the fleet's
    /// ledger only takes note of it.
    pub async fn send_action(
        &self,
        node: &str,
        request: ActionRequest,
    ) -> Result<Result<(), NotSent>, FleetStopped> {
        let node = node.to_owned();
        self.call(|reply| {
            Command::Ledger(LedgerCommand::Send {
                node,
                request,
                reply,
            })
        })
        .await
    }

    /// Whether `node` may report on action `id`: only a node asked for an
    /// action may, and a final result is never replaced. Not public: an
    /// update is taken through [`super::ActionResults`], which stores it
    /// between this verdict and `FleetHandle::stored`.
    pub(super) async fn verdict(
        &self,
        node: &str,
        id: &str,
    ) -> Result<UpdateVerdict, FleetStopped> {
        let (node, id) = (node.to_owned(), id.to_owned());
        self.call(|reply| Command::Ledger(LedgerCommand::Verdict { node, id, reply }))
            .await
    }

    /// The store holds `result` now: the ledger takes it (see
    /// [`super::ActionResults`]).
    pub(super) async fn stored(&self, result: ActionResult) -> Result<(), FleetStopped> {
        let result = Box::new(result);
        self.tx
            .send(Command::Ledger(LedgerCommand::Stored { result }))
            .await
            .map_err(|_| FleetStopped)
    }

    /// The latest result of an action, by id; `None` if it was never asked,
    /// or its request never reached the agent (ask again).
    pub async fn action(&self, id: &str) -> Result<Option<ActionResult>, FleetStopped> {
        let id = id.to_owned();
        self.call(|reply| Command::Ledger(LedgerCommand::Current { id, reply }))
            .await
    }

    pub async fn report(
        &self,
        node: &str,
        session: SessionId,
        report: Report,
    ) -> Result<(), FleetStopped> {
        // Packed here, in the caller's task: the fleet's queue then holds
        // a few kilobytes per report, and the fleet's one task does less.
        let cmd = Command::Report {
            node: node.to_owned(),
            session,
            update: Box::new(Update::from(report)),
        };
        self.tx.send(cmd).await.map_err(|_| FleetStopped)
    }

    pub async fn disconnect(&self, node: &str, session: SessionId, reason: String) {
        let cmd = Command::Disconnect {
            node: node.to_owned(),
            session,
            reason,
        };
        let _ = self.tx.send(cmd).await;
    }

    /// Every node that matches, sorted by name (for the server's own use;
    /// operators page through [`FleetHandle::list_page`]).
    pub async fn list(&self, filter: NodeFilter) -> Result<Vec<Node>, FleetStopped> {
        Ok(self.list_page(filter, None, usize::MAX).await?.items)
    }

    /// Up to `size` nodes that match, sorted by name, after `after`.
    pub async fn list_page(
        &self,
        filter: NodeFilter,
        after: Option<String>,
        size: usize,
    ) -> Result<Page<Node>, FleetStopped> {
        self.call(|reply| Command::List {
            filter,
            after,
            size,
            reply,
        })
        .await
    }

    pub async fn get(&self, name: &str) -> Result<Option<NodeDetail>, FleetStopped> {
        let name = name.to_owned();
        self.call(|reply| Command::Get { name, reply }).await
    }

    /// Every node as it is now, and every event after that moment.
    pub async fn watch(&self) -> Result<(Vec<Node>, broadcast::Receiver<NodeEvent>), FleetStopped> {
        self.call(|reply| Command::Watch { reply }).await
    }

    /// Up to `size` containers that match, sorted by node then name, after
    /// the container `after` names (node, container).
    pub async fn containers(
        &self,
        filter: ContainerFilter,
        after: Option<(String, String)>,
        size: usize,
    ) -> Result<Page<NodeContainer>, FleetStopped> {
        self.call(|reply| Command::Containers {
            filter,
            after,
            size,
            reply,
        })
        .await
    }

    /// What needs attention, with filesystems above `fs_threshold_percent`
    /// and certificates that expire within `cert_within_days`, each list cut
    /// to `list_limit`.
    pub async fn summary(
        &self,
        fs_threshold_percent: u32,
        list_limit: u32,
        cert_within_days: u32,
    ) -> Result<FleetSummary, FleetStopped> {
        self.call(|reply| Command::Summary {
            fs_threshold_percent,
            list_limit,
            cert_within_days,
            reply,
        })
        .await
    }

    /// Removes an offline node from the fleet at once (it no longer counts
    /// anywhere) and from the store with `audit`, its line; the
    /// [`Removal`] says when the store is done. The caller checks first
    /// that no open campaign holds the node.
    pub async fn forget(
        &self,
        name: &str,
        audit: AuditRecord,
    ) -> Result<Result<Removal, ForgetRefused>, FleetStopped> {
        let name = name.to_owned();
        let audit = Box::new(audit);
        self.call(|reply| Command::Forget { name, audit, reply })
            .await
    }

    /// Every container that is unhealthy or stopped on a node whose
    /// containers are known now, at most `cap` of those not in `baseline`
    /// (see `bad.rs`): for the campaigns' blast-radius guard.
    pub async fn bad_containers(
        &self,
        cap: usize,
        baseline: ByNode,
    ) -> Result<BadContainers, FleetStopped> {
        self.call(|reply| Command::BadContainers {
            cap,
            baseline,
            reply,
        })
        .await
    }

    /// The fleet's totals for a `/metrics` scrape, with per-node samples
    /// while it has at most `per_node_max` nodes.
    pub async fn metrics(
        &self,
        per_node_max: usize,
    ) -> Result<crate::metrics::FleetSnapshot, FleetStopped> {
        self.call(|reply| Command::Metrics {
            per_node_max,
            reply,
        })
        .await
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, FleetStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| FleetStopped)?;
        rx.await.map_err(|_| FleetStopped)
    }
}
