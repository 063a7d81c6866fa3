//! The session's half that serves the server's action requests: each is
//! recorded by [`crate::actions::Actions`] before it runs, watched to its
//! end in a task of its own, and its result sent until the server
//! acknowledges it.

use std::time::Duration;

use rollcall_proto::model::{ActionKind, ActionRequest, ActionResult, ActionState};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1::{self, agent_message};
use tokio::sync::mpsc;

use super::Session;
use crate::actions::{Launched, Outcome, Record, Running};

impl Session {
    pub(super) fn action_request(
        &mut self,
        wire: v1::ActionRequest,
        tx: &mpsc::Sender<v1::AgentMessage>,
    ) {
        let id = wire.action_id.clone();
        let leader_epoch = wire.leader_epoch;
        // Every request, with the epoch of the leader that sent it: after a
        // failover the log tells who asked for what.
        tracing::info!(action_id = %rollcall_proto::text::Untrusted(&id), leader_epoch, "Action requested.");
        let boot_id = self.settings.boot_id.clone();
        let refuse = |error: String| {
            tracing::warn!(action_id = %rollcall_proto::text::Untrusted(&id), leader_epoch, error = %error, "Refused an action request.");
            let refused = unrecorded(&id, ActionState::Rejected, error, &boot_id);
            let _ = tx.try_send(update_message(refused));
        };
        let (Some(actions), Ok(req)) = (self.actions.as_mut(), ActionRequest::try_from(wire))
        else {
            return refuse("this agent's configuration defines no such action".into());
        };
        let outcome = match actions.request(&req) {
            Ok(o) => o,
            // Not on disk means not safe to run: refuse rather than risk a
            // second run after a crash.
            Err(e) => return refuse(format!("cannot record the action: {e}")),
        };
        match outcome {
            Outcome::Deposed(deposed) => refuse(deposed.to_string()),
            Outcome::Acknowledged => {
                tracing::warn!(action_id = %id, "Asked again for an action whose result the server acknowledged; not run again.");
                // Say so: a server that lost the result must not wait forever.
                let error = "this action already ran here and its result was acknowledged; it is not run again";
                let _ = tx.try_send(update_message(unrecorded(
                    &id,
                    ActionState::Failed,
                    error.into(),
                    &boot_id,
                )));
            }
            Outcome::Known(record) | Outcome::Rejected(record) => {
                let _ = tx.try_send(update_message(record.result));
            }
            Outcome::Start(record, argv) => {
                tracing::info!(action_id = %record.id(), kind = ?record.kind, name = %record.name, "Running action.");
                // Who asked, for the action's own scripts (and tests) to
                // record; nothing else of the request reaches the process.
                let mut env = vec![
                    ("ROLLCALL_ACTION_ID".to_owned(), record.id().to_owned()),
                    (
                        "ROLLCALL_LEADER_EPOCH".to_owned(),
                        req.leader_epoch.to_string(),
                    ),
                ];
                if record.kind == ActionKind::Patch {
                    env.extend(actions.definitions().patch_env.iter().cloned());
                }
                let timeout = match req.timeout_secs {
                    0 => self.action_timeout,
                    n => Duration::from_secs(n.into()),
                };
                match actions.launch(record, &argv, &env, timeout) {
                    Launched::Running(running) => {
                        let _ = tx.try_send(update_message(running.record().result.clone()));
                        self.watch(running);
                    }
                    Launched::Failed(record) => self.finished(record, tx),
                }
            }
        }
    }

    /// Watches a running action to its end; its result comes back through
    /// `done_rx` to [`Self::finished`].
    pub(super) fn watch(&mut self, running: Running) {
        // Watchers that ended are done with: keep the set small.
        while self.watchers.try_join_next().is_some() {}
        let done = self.done_tx.clone();
        self.watchers.spawn(async move {
            let _ = done.send(running.wait().await);
        });
    }

    /// Results the server has not acknowledged 30 s after they were sent
    /// (lost in a full queue, or not stored): send them again, a few per
    /// interval.
    pub(super) fn resend_unacknowledged(&self, tx: &mpsc::Sender<v1::AgentMessage>) {
        let Some(actions) = &self.actions else { return };
        let now = Timestamp::now();
        let stale = actions
            .unacknowledged()
            .into_iter()
            .filter(|r| {
                r.result
                    .finished_at
                    .is_some_and(|t| now.since(t) > Duration::from_secs(30))
            })
            .take(4);
        for record in stale {
            if tx.try_send(update_message(record.result)).is_err() {
                break;
            }
        }
    }

    /// An action ended: keep its result on disk, then tell the server.
    pub(super) fn finished(&mut self, record: Record, tx: &mpsc::Sender<v1::AgentMessage>) {
        tracing::info!(action_id = %record.id(), state = ?record.state(), exit_code = ?record.result.exit_code, "Action finished.");
        // A patch (or a hook) may have asked for a reboot: look now, not in
        // a minute, and owe the server that check whatever it finds: a
        // campaign waits for a check newer than the action.
        if matches!(record.kind, ActionKind::Patch | ActionKind::Hook)
            && let Some(recheck) = &self.sources.reboot_recheck
        {
            self.reboot_owed = Some(record.result.finished_at.unwrap_or_else(Timestamp::now));
            recheck.notify_one();
        }
        if let Some(actions) = &mut self.actions
            && let Err(e) = actions.finish(record.clone())
        {
            tracing::error!(action_id = %record.id(), error = %e, "Cannot store an action result.");
        }
        let _ = tx.try_send(update_message(record.result));
    }
}

/// What the agent says about an action: the one place an update is made.
pub(super) fn update_message(result: ActionResult) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(agent_message::Msg::ActionUpdate(result.into())),
    }
}

/// The answer to a request the agent keeps no record of (it refused it
/// before recording it, or forgot it once acknowledged).
fn unrecorded(id: &str, state: ActionState, error: String, boot_id: &str) -> ActionResult {
    ActionResult {
        id: id.to_owned(),
        node: String::new(),
        state,
        exit_code: None,
        output_tail: String::new(),
        error,
        started_at: None,
        finished_at: None,
        boot_id: boot_id.to_owned(),
    }
}
