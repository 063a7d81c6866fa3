//! The action-result protocol, in one place: an agent's word on an action
//! is checked against the ledger, stored, and only then taken by the
//! ledger and acknowledged.
//!
//! "Stored before acknowledged" holds because nothing else reaches the
//! ledger's verdict or its `stored`: the session handler makes one call,
//! [`ActionResults::take`], and acknowledges when the answer says so. The
//! store write is awaited here, in the caller's task, never in the fleet's:
//! a slow disk holds up the one session that waits on it, not the fleet.

use rollcall_proto::model::ActionResult;
use rollcall_proto::text::Untrusted;

use super::{FleetHandle, FleetStopped, Foreign, UpdateVerdict};
use crate::store::{NotStored, WriterHandle};

/// What became of an agent's update about an action, and whether the agent
/// may now forget it (`ack`: only a final result is ever acknowledged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    /// Stored, then taken by the ledger.
    Stored { ack: bool },
    /// The ledger holds a final result already, so the store does: nothing
    /// is written, and a final update may be forgotten.
    AlreadyFinal { ack: bool },
    /// Not the sender's to give: ignored. A final one is acknowledged
    /// anyway so the agent stops sending it: every request is on record
    /// before it is sent, so one the ledger does not know was never asked
    /// of this node.
    Foreign { why: Foreign, ack: bool },
    /// The store refused it: neither taken nor acknowledged, so the agent
    /// keeps it and sends it again.
    NotStored(NotStored),
}

impl Taken {
    /// Whether the agent is told it may forget the result.
    pub fn ack(&self) -> bool {
        match self {
            Taken::Stored { ack } | Taken::AlreadyFinal { ack } | Taken::Foreign { ack, .. } => {
                *ack
            }
            Taken::NotStored(_) => false,
        }
    }
}

/// What the ledger's verdict leaves to do.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Store,
    Answer(Taken),
}

/// Pure: what to do with an update (`is_final`: the update's state) given
/// the ledger's verdict.
fn decide(verdict: UpdateVerdict, is_final: bool) -> Next {
    match verdict {
        UpdateVerdict::Store => Next::Store,
        UpdateVerdict::AlreadyFinal => Next::Answer(Taken::AlreadyFinal { ack: is_final }),
        UpdateVerdict::Foreign(why) => Next::Answer(Taken::Foreign { why, ack: is_final }),
    }
}

/// Pure: what an update became once the store answered.
fn after_store(stored: Result<(), NotStored>, is_final: bool) -> Taken {
    match stored {
        Ok(()) => Taken::Stored { ack: is_final },
        Err(e) => Taken::NotStored(e),
    }
}

/// The one owner of the protocol: the fleet's ledger and the store, as a
/// session handler holds them. Cheap to clone.
#[derive(Clone)]
pub struct ActionResults {
    fleet: FleetHandle,
    store: WriterHandle,
}

impl ActionResults {
    pub fn new(fleet: FleetHandle, store: WriterHandle) -> Self {
        ActionResults { fleet, store }
    }

    /// Takes `node`'s update about an action (already admitted): the
    /// ledger's verdict, then the store, then the ledger again.
    pub async fn take(&self, node: &str, result: ActionResult) -> Result<Taken, FleetStopped> {
        let is_final = result.state.is_final();
        let verdict = self.fleet.verdict(node, &result.id).await?;
        match decide(verdict, is_final) {
            Next::Answer(taken) => {
                if let Taken::Foreign { why, .. } = &taken {
                    tracing::warn!(node = %node, action_id = %Untrusted(&result.id), reason = %Untrusted(&why.to_string()), "Ignored an action update.");
                }
                Ok(taken)
            }
            Next::Store => {
                let stored = self.store.put_action(result.clone()).await;
                if stored.is_ok() {
                    self.fleet.stored(result).await?;
                }
                Ok(after_store(stored, is_final))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rollcall_proto::model::{ActionKind, ActionRequest, ActionState, Role};
    use tokio::sync::{Notify, mpsc};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::fleet::{Fleet, Hello, SessionLink};
    use crate::store::tests::temp_data_dir;
    use crate::store::{FaultSwitch, Faulty, Store, Writer};

    fn foreign() -> Foreign {
        Foreign::NeverAsked {
            id: "x".into(),
            node: "cmp1".into(),
        }
    }

    #[test]
    fn only_an_update_the_ledger_expects_is_stored() {
        assert_eq!(decide(UpdateVerdict::Store, true), Next::Store);
        assert_eq!(decide(UpdateVerdict::Store, false), Next::Store);
        assert_eq!(
            decide(UpdateVerdict::AlreadyFinal, true),
            Next::Answer(Taken::AlreadyFinal { ack: true })
        );
        assert_eq!(
            decide(UpdateVerdict::AlreadyFinal, false),
            Next::Answer(Taken::AlreadyFinal { ack: false }),
            "a late 'running' is not what the agent keeps"
        );
        assert_eq!(
            decide(UpdateVerdict::Foreign(foreign()), true),
            Next::Answer(Taken::Foreign {
                why: foreign(),
                ack: true
            })
        );
        assert!(!decide_ack(UpdateVerdict::Foreign(foreign()), false));
    }

    fn decide_ack(verdict: UpdateVerdict, is_final: bool) -> bool {
        match decide(verdict, is_final) {
            Next::Answer(taken) => taken.ack(),
            Next::Store => panic!("not an answer"),
        }
    }

    #[test]
    fn only_a_stored_final_result_is_acknowledged() {
        assert_eq!(after_store(Ok(()), true), Taken::Stored { ack: true });
        assert_eq!(after_store(Ok(()), false), Taken::Stored { ack: false });
        let refused = after_store(Err(NotStored::Refused("disk full".into())), true);
        assert!(
            !refused.ack(),
            "a result the store refused is not acknowledged"
        );
        assert!(!after_store(Err(NotStored::WriterStopped), true).ack());
    }

    fn hello(node: &str) -> Hello {
        Hello {
            node: node.into(),
            role: Role::Compute,
            labels: Default::default(),
            agent_version: "test".into(),
            boot_id: "boot-1".into(),
            hostname: node.into(),
            held_actions: None,
            cert_not_after: None,
        }
    }

    fn result(id: &str, node: &str, state: ActionState) -> ActionResult {
        ActionResult {
            state,
            ..ActionResult::issued(id, node)
        }
    }

    /// The whole protocol against a real fleet actor and a real SQLite
    /// store whose writes fail on demand.
    #[tokio::test]
    async fn a_result_is_taken_only_once_stored_and_never_from_another_node() {
        let dir = temp_data_dir("results");
        let switch = FaultSwitch::default();
        let store = Faulty::new(Store::open(&dir).expect("open"), switch.clone());
        let (writer, store) = Writer::spawn(store, Duration::from_millis(50));
        let shutdown = CancellationToken::new();
        let (fleet, task) = Fleet::spawn(
            Vec::new(),
            Vec::new(),
            store.clone(),
            Duration::from_secs(30),
            Arc::new(Notify::new()),
            shutdown.clone(),
            None,
        );
        let (actions, mut asked) = mpsc::channel(8);
        let link = SessionLink {
            kick: CancellationToken::new(),
            actions,
        };
        fleet.connect(hello("cmp1"), link).await.expect("fleet");
        let request = ActionRequest {
            id: "c.cmp1.1.patch".into(),
            kind: ActionKind::Patch,
            name: String::new(),
            args: Vec::new(),
            timeout_secs: 60,
            leader_epoch: 0,
        };
        fleet
            .send_action("cmp1", request)
            .await
            .expect("fleet")
            .expect("sent");
        assert_eq!(
            asked.recv().await.map(|r| r.id),
            Some("c.cmp1.1.patch".to_owned())
        );
        let results = ActionResults::new(fleet.clone(), store.clone());
        let done = || result("c.cmp1.1.patch", "cmp1", ActionState::Succeeded);

        switch.fail("disk full");
        let taken = results.take("cmp1", done()).await.expect("fleet");
        assert!(
            matches!(taken, Taken::NotStored(NotStored::Refused(_))),
            "{taken:?}"
        );
        assert_eq!(
            fleet
                .action("c.cmp1.1.patch")
                .await
                .expect("fleet")
                .map(|a| a.state),
            Some(ActionState::Accepted),
            "not taken: the ledger holds nothing the store does not"
        );

        switch.heal();
        let taken = results.take("cmp1", done()).await.expect("fleet");
        assert_eq!(taken, Taken::Stored { ack: true });
        assert_eq!(
            fleet
                .action("c.cmp1.1.patch")
                .await
                .expect("fleet")
                .map(|a| a.state),
            Some(ActionState::Succeeded)
        );
        let again = results.take("cmp1", done()).await.expect("fleet");
        assert_eq!(
            again,
            Taken::AlreadyFinal { ack: true },
            "sent again after a lost ack"
        );
        let late = result("c.cmp1.1.patch", "cmp1", ActionState::Running);
        assert_eq!(
            results.take("cmp1", late).await.expect("fleet"),
            Taken::AlreadyFinal { ack: false },
            "a late word never replaces a final one"
        );

        let stolen = result("c.cmp1.1.patch", "cmp2", ActionState::Failed);
        assert_eq!(
            results.take("cmp2", stolen).await.expect("fleet"),
            Taken::Foreign {
                why: Foreign::AskedOfAnother {
                    id: "c.cmp1.1.patch".into(),
                    owner: "cmp1".into(),
                    node: "cmp2".into()
                },
                ack: true
            }
        );
        assert_eq!(
            fleet
                .action("c.cmp1.1.patch")
                .await
                .expect("fleet")
                .map(|a| a.state),
            Some(ActionState::Succeeded),
            "another node's word changes nothing"
        );
        let stored = Store::open(&dir)
            .expect("open")
            .load_actions()
            .expect("load");
        assert_eq!(
            stored
                .iter()
                .map(|a| (a.id.as_str(), a.state))
                .collect::<Vec<_>>(),
            [("c.cmp1.1.patch", ActionState::Succeeded)],
            "the store holds what the ledger took"
        );

        shutdown.cancel();
        task.await.expect("the fleet stops cleanly");
        drop((results, fleet, store));
        writer.finished().await.expect("the writer stops cleanly");
        std::fs::remove_dir_all(&dir).ok();
    }
}
