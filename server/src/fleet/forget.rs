//! Forgetting a node: the fleet's half of `nodes forget`. The scheduler
//! checks first that no open campaign holds the node (`campaign::runner`);
//! the fleet then removes it from the table, unless it is online, in the
//! same step, so a node cannot come online between the check and the
//! removal, and queues its removal from the store behind every change of
//! it the fleet queued before.

use std::future::Future;
use std::pin::Pin;

use rollcall_proto::model::{NodeEvent, NodeEventKind};

use super::Fleet;
use crate::audit::AuditRecord;
use crate::store::NotStored;

/// Why the fleet did not forget a node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForgetRefused {
    #[error("no node named {0}")]
    Unknown(String),
    #[error(
        "{0} is online: only an offline node is forgotten (stop its agent, or remove it from the cloud, first)"
    )]
    Online(String),
}

/// Resolves once the store no longer holds the node (with its audit
/// line's `seq`).
pub type Removal = Pin<Box<dyn Future<Output = Result<u64, NotStored>> + Send>>;

impl Fleet {
    pub(super) fn forget(
        &mut self,
        name: &str,
        audit: AuditRecord,
    ) -> Result<Removal, ForgetRefused> {
        let entry = self
            .nodes
            .get(name)
            .ok_or_else(|| ForgetRefused::Unknown(name.to_owned()))?;
        if entry.node.online {
            return Err(ForgetRefused::Online(name.to_owned()));
        }
        let entry = self
            .nodes
            .remove(name)
            .expect("the entry was there a moment ago, in this same task");
        // A session still open but silent (offline for missed reports):
        // end it, so that if the agent speaks again it connects anew and
        // comes back as a new node, not as reports for a node not there.
        if let Some((_, link)) = entry.session {
            link.kick.cancel();
        }
        let removal = self.writer.forget(name, audit);
        tracing::info!(node = %name, "Node forgotten.");
        let _ = self.events.send(NodeEvent {
            kind: NodeEventKind::Forgotten,
            node: entry.node,
        });
        // A node that no longer counts may free a role's concurrency.
        self.wake.notify_one();
        Ok(Box::pin(removal))
    }
}
