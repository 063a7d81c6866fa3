//! The action ledger: every action the server asked of a node, and the
//! latest word of that node about it, as stored.
//!
//! The rules it keeps:
//! - only the node an action was asked of may report on it, and a final
//!   result is never replaced ([`Ledger::verdict`]);
//! - what it holds is what the store holds: a result enters only after it
//!   was stored ([`Ledger::stored`]), so "already final" is a durable fact
//!   and acknowledging from it never acknowledges what was not stored;
//! - a request the node says it does not hold (its Hello lists every action
//!   it keeps) was lost on the way: [`Ledger::reconcile`] marks it, and
//!   [`Ledger::current`] then reports no word of it, which makes the
//!   campaign ask again at once, under the same id.
//!
//! The fleet actor hands every command about actions to
//! [`Ledger::handle`]; an agent's update goes through
//! [`super::ActionResults`], which stores it between the ledger's verdict
//! and the ledger taking it.

use std::collections::{BTreeSet, HashMap};

use rollcall_proto::model::{ActionRequest, ActionResult, ActionState};
use rollcall_proto::text::Untrusted;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;

use super::SessionLink;

/// What to do with an agent's update about an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateVerdict {
    /// Asked of this node and not finished: store it.
    Store,
    /// Already final here, and so in the store: the agent may forget it.
    AlreadyFinal,
    /// Never asked of this node: ignore it (and log why).
    Foreign(Foreign),
}

/// Why an update is not the sender's to give.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Foreign {
    #[error("action {id} was never asked of {node}")]
    NeverAsked { id: String, node: String },
    #[error("action {id} was asked of {owner}, not {node}")]
    AskedOfAnother {
        id: String,
        owner: String,
        node: String,
    },
}

/// Why a request was not handed to a node's session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    #[error("node {node} has no session (offline)")]
    Offline { node: String },
    #[error("action id {id} belongs to {owner}, not {node}")]
    OthersId {
        id: String,
        owner: String,
        node: String,
    },
    #[error("node {node}'s session cannot take the request: no available capacity")]
    SessionFull { node: String },
    #[error("node {node}'s session cannot take the request: channel closed")]
    SessionClosed { node: String },
}

#[derive(Clone, Debug)]
struct Entry {
    result: ActionResult,
    /// The node's Hello did not list it: the request never reached it.
    lost: bool,
}

#[derive(Debug, Default)]
pub struct Ledger {
    actions: HashMap<String, Entry>,
    /// Per node, the ids not final yet: what a Hello is held against.
    open: HashMap<String, BTreeSet<String>>,
}

/// What [`Ledger::reconcile`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Asked, never answered, and not held by the agent: to ask again.
    pub lost: Vec<String>,
    /// Running by the agent's last word, yet no longer held by it (its
    /// state directory was lost?): left to the step's timeout.
    pub vanished: Vec<String>,
}

impl Ledger {
    /// The ledger as the store holds it.
    pub fn new(stored: Vec<ActionResult>) -> Self {
        let mut ledger = Ledger::default();
        for result in stored {
            ledger.put(result);
        }
        ledger
    }

    fn put(&mut self, result: ActionResult) {
        let open = self.open.entry(result.node.clone()).or_default();
        if result.state.is_final() {
            open.remove(&result.id);
        } else {
            open.insert(result.id.clone());
        }
        if open.is_empty() {
            self.open.remove(&result.node);
        }
        self.actions.insert(
            result.id.clone(),
            Entry {
                result,
                lost: false,
            },
        );
    }

    /// The node's latest word on `id`; `None` if it was never asked or its
    /// request was lost (ask again).
    pub fn current(&self, id: &str) -> Option<&ActionResult> {
        self.actions.get(id).filter(|e| !e.lost).map(|e| &e.result)
    }

    /// Whether `id` may be asked of `node`: an id belongs to one node.
    pub fn may_ask(&self, node: &str, id: &str) -> Result<(), NotSent> {
        match self.actions.get(id) {
            Some(e) if e.result.node != node => Err(NotSent::OthersId {
                id: id.to_owned(),
                owner: e.result.node.clone(),
                node: node.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// `id` was handed to `node`'s session. Returns whether the ledger did
    /// not know it yet. Memory only: whoever asks stored the request first
    /// (a campaign, with the run that names it).
    pub fn asked(&mut self, node: &str, id: &str) -> bool {
        if let Some(e) = self.actions.get_mut(id) {
            e.lost = false;
            return false;
        }
        self.put(ActionResult::issued(id, node));
        true
    }

    /// What to do with `node`'s update about `id`.
    pub fn verdict(&self, node: &str, id: &str) -> UpdateVerdict {
        match self.actions.get(id) {
            None => UpdateVerdict::Foreign(Foreign::NeverAsked {
                id: id.to_owned(),
                node: node.to_owned(),
            }),
            Some(e) if e.result.node != node => UpdateVerdict::Foreign(Foreign::AskedOfAnother {
                id: id.to_owned(),
                owner: e.result.node.clone(),
                node: node.to_owned(),
            }),
            Some(e) if e.result.state.is_final() => UpdateVerdict::AlreadyFinal,
            Some(_) => UpdateVerdict::Store,
        }
    }

    /// The store now holds `result`: take it (never over a final one).
    pub fn stored(&mut self, result: ActionResult) {
        if self
            .actions
            .get(&result.id)
            .is_some_and(|e| e.result.state.is_final())
        {
            return;
        }
        self.put(result);
    }

    /// Holds `node`'s open actions against what its agent says it keeps
    /// (`held`: every action id it has a record of, finished or not).
    pub fn reconcile(&mut self, node: &str, held: &[String]) -> Reconciled {
        let mut found = Reconciled::default();
        let Some(open) = self.open.get(node) else {
            return found;
        };
        for id in open {
            if held.iter().any(|h| h == id) {
                continue;
            }
            let Some(e) = self.actions.get_mut(id) else {
                continue;
            };
            match e.result.state {
                ActionState::Accepted => {
                    e.lost = true;
                    found.lost.push(id.clone());
                }
                _ => found.vanished.push(id.clone()),
            }
        }
        found
    }
}

/// The fleet's commands about actions (see `FleetHandle`), handled by
/// [`Ledger::handle`] in the fleet's task.
pub(super) enum LedgerCommand {
    Send {
        node: String,
        request: ActionRequest,
        reply: oneshot::Sender<Result<(), NotSent>>,
    },
    Verdict {
        node: String,
        id: String,
        reply: oneshot::Sender<UpdateVerdict>,
    },
    /// The store holds this result now.
    Stored { result: Box<ActionResult> },
    Current {
        id: String,
        reply: oneshot::Sender<Option<ActionResult>>,
    },
}

impl Ledger {
    /// Answers one command; `session` finds a node's current session.
    /// Returns whether the campaign scheduler has news to look at.
    pub(super) fn handle<'a>(
        &mut self,
        cmd: LedgerCommand,
        session: impl FnOnce(&str) -> Option<&'a SessionLink>,
    ) -> bool {
        match cmd {
            LedgerCommand::Send {
                node,
                request,
                reply,
            } => {
                let sent = self.send(&node, session(&node), request);
                let _ = reply.send(sent);
                false
            }
            LedgerCommand::Verdict { node, id, reply } => {
                let _ = reply.send(self.verdict(&node, &id));
                false
            }
            LedgerCommand::Stored { result } => {
                tracing::info!(node = %result.node, action_id = %Untrusted(&result.id), state = ?result.state, "Action update.");
                self.stored(*result);
                true
            }
            LedgerCommand::Current { id, reply } => {
                let _ = reply.send(self.current(&id).cloned());
                false
            }
        }
    }

    /// Hands `request` to `node`'s session, and takes note that it was
    /// asked. The asker stored the request before it asked (a campaign,
    /// with the run that names it): the ledger only takes note.
    fn send(
        &mut self,
        node: &str,
        session: Option<&SessionLink>,
        request: ActionRequest,
    ) -> Result<(), NotSent> {
        let Some(link) = session else {
            return Err(NotSent::Offline {
                node: node.to_owned(),
            });
        };
        self.may_ask(node, &request.id)?;
        let id = request.id.clone();
        link.actions
            .try_send(Box::new(request))
            .map_err(|e| match e {
                TrySendError::Full(_) => NotSent::SessionFull {
                    node: node.to_owned(),
                },
                TrySendError::Closed(_) => NotSent::SessionClosed {
                    node: node.to_owned(),
                },
            })?;
        self.asked(node, &id);
        Ok(())
    }

    /// A new session's Hello: holds the node's open requests against the
    /// actions its agent says it keeps (none are concluded from a list the
    /// server did not read whole).
    pub(super) fn hello(&mut self, node: &str, held: Option<&[String]>) {
        let Some(held) = held else {
            return;
        };
        let found = self.reconcile(node, held);
        if !found.lost.is_empty() {
            tracing::warn!(node = %node, actions = ?found.lost, "The agent does not hold requests it was sent; they were lost on the way and are asked again.");
        }
        if !found.vanished.is_empty() {
            tracing::warn!(node = %node, actions = ?found.vanished, "The agent no longer holds actions it said were running (was its state directory lost?); their steps time out.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, node: &str, state: ActionState) -> ActionResult {
        ActionResult {
            state,
            ..ActionResult::issued(id, node)
        }
    }

    #[test]
    fn only_the_node_asked_may_answer_and_a_final_result_stays() {
        let mut l = Ledger::default();
        assert!(l.asked("cmp1", "c.cmp1.1.patch"));
        assert!(!l.asked("cmp1", "c.cmp1.1.patch"), "known");
        assert!(l.may_ask("cmp2", "c.cmp1.1.patch").is_err());
        assert_eq!(l.verdict("cmp1", "c.cmp1.1.patch"), UpdateVerdict::Store);
        assert!(matches!(
            l.verdict("cmp2", "c.cmp1.1.patch"),
            UpdateVerdict::Foreign(_)
        ));
        assert!(matches!(l.verdict("cmp1", "x"), UpdateVerdict::Foreign(_)));
        l.stored(result("c.cmp1.1.patch", "cmp1", ActionState::Succeeded));
        assert_eq!(
            l.verdict("cmp1", "c.cmp1.1.patch"),
            UpdateVerdict::AlreadyFinal
        );
        l.stored(result("c.cmp1.1.patch", "cmp1", ActionState::Running));
        assert_eq!(
            l.current("c.cmp1.1.patch").map(|a| a.state),
            Some(ActionState::Succeeded),
            "a final result is never replaced"
        );
    }

    #[test]
    fn a_request_the_agent_does_not_hold_is_lost_and_asked_again() {
        let mut l = Ledger::new(vec![
            result("a", "cmp1", ActionState::Accepted),
            result("b", "cmp1", ActionState::Running),
            result("c", "cmp1", ActionState::Accepted),
            result("d", "cmp1", ActionState::Succeeded),
            result("e", "cmp2", ActionState::Accepted),
        ]);
        let found = l.reconcile("cmp1", &["c".to_owned()]);
        assert_eq!(found.lost, ["a"]);
        assert_eq!(found.vanished, ["b"]);
        assert!(l.current("a").is_none(), "lost: no word of it");
        assert!(l.current("c").is_some(), "held: still accepted");
        assert!(l.current("e").is_some(), "another node's is untouched");
        assert_eq!(
            l.verdict("cmp1", "a"),
            UpdateVerdict::Store,
            "still its node's"
        );
        assert!(!l.asked("cmp1", "a"), "asked again: known");
        assert_eq!(l.current("a").map(|a| a.state), Some(ActionState::Accepted));
        // Once final, it is no longer held against a Hello.
        l.stored(result("a", "cmp1", ActionState::Succeeded));
        assert!(l.reconcile("cmp1", &[]).lost.iter().all(|id| id != "a"));
    }

    fn request(id: &str) -> ActionRequest {
        ActionRequest {
            id: id.into(),
            kind: rollcall_proto::model::ActionKind::Patch,
            name: String::new(),
            args: Vec::new(),
            timeout_secs: 60,
            leader_epoch: 0,
        }
    }

    fn link(room: usize) -> (SessionLink, tokio::sync::mpsc::Receiver<Box<ActionRequest>>) {
        let (actions, rx) = tokio::sync::mpsc::channel(room);
        let kick = tokio_util::sync::CancellationToken::new();
        (SessionLink { kick, actions }, rx)
    }

    #[test]
    fn a_request_reaches_only_its_own_nodes_open_session_and_says_why_not() {
        let mut l = Ledger::default();
        let offline = l.send("cmp1", None, request("a"));
        assert_eq!(
            offline,
            Err(NotSent::Offline {
                node: "cmp1".into()
            })
        );
        assert!(l.current("a").is_none(), "not sent, not noted");

        let (session, mut asked) = link(1);
        assert_eq!(l.send("cmp1", Some(&session), request("a")), Ok(()));
        assert_eq!(asked.try_recv().map(|r| r.id).ok(), Some("a".to_owned()));
        assert_eq!(l.current("a").map(|a| a.state), Some(ActionState::Accepted));

        let (other, _rx) = link(1);
        assert_eq!(
            l.send("cmp2", Some(&other), request("a")),
            Err(NotSent::OthersId {
                id: "a".into(),
                owner: "cmp1".into(),
                node: "cmp2".into()
            })
        );

        assert_eq!(l.send("cmp1", Some(&session), request("b")), Ok(()));
        assert_eq!(
            l.send("cmp1", Some(&session), request("c")),
            Err(NotSent::SessionFull {
                node: "cmp1".into()
            }),
            "the session holds one request already"
        );
        assert!(l.current("c").is_none(), "not sent, not noted");
        drop(asked);
        assert_eq!(
            l.send("cmp1", Some(&session), request("c")),
            Err(NotSent::SessionClosed {
                node: "cmp1".into()
            })
        );
    }
}
