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

use std::collections::{BTreeSet, HashMap};

use rollcall_proto::model::{ActionResult, ActionState};

/// What to do with an agent's update about an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateVerdict {
    /// Asked of this node and not finished: store it.
    Store,
    /// Already final here, and so in the store: the agent may forget it.
    AlreadyFinal,
    /// Never asked of this node: ignore it (and log why).
    Foreign(String),
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
    pub fn may_ask(&self, node: &str, id: &str) -> Result<(), String> {
        match self.actions.get(id) {
            Some(e) if e.result.node != node => Err(format!(
                "action id {id} belongs to {}, not {node}",
                e.result.node
            )),
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
            None => UpdateVerdict::Foreign(format!("action {id} was never asked of {node}")),
            Some(e) if e.result.node != node => UpdateVerdict::Foreign(format!(
                "action {id} was asked of {}, not {node}",
                e.result.node
            )),
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
}
