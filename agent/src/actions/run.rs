//! Starting a recorded action and waiting for its end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_proto::model::{ActionKind, ActionState};
use rollcall_proto::timestamp::Timestamp;

use super::{Actions, OUTPUT_TAIL_BYTES, Record};
use crate::collect::command::{self, Exit, Waited, Watched};

/// What [`Actions::launch`] made of a started action.
pub enum Launched {
    Running(Running),
    /// It could not be started: its result.
    Failed(Record),
}

/// An action under way, started by this agent or re-adopted at its start.
pub struct Running {
    pub(super) record: Record,
    pub(super) watched: Watched,
    pub(super) deadline: Timestamp,
    /// The command's first word, to name it in an error.
    pub(super) program: String,
    pub(super) log: PathBuf,
    pub(super) exit_file: PathBuf,
}

impl Actions {
    /// Starts a recorded action (a [`super::Outcome::Start`]) and records
    /// its process and deadline before it returns, so that an agent that
    /// restarts finds it again.
    pub fn launch(
        &mut self,
        mut record: Record,
        argv: &[String],
        env: &[(String, String)],
        timeout: Duration,
    ) -> Launched {
        let deadline = record.started_at().saturating_add(timeout);
        record.deadline = Some(deadline);
        let (log, exit_file) = (self.log_path(record.id()), self.exit_path(record.id()));
        let spawned = match command::spawn_action(argv, env, &log, &exit_file) {
            Ok(s) => s,
            Err(e) => {
                record.end(ActionState::Failed, e.to_string());
                return Launched::Failed(record);
            }
        };
        record.process = Some(spawned.process);
        if let Err(e) = self.save(&record) {
            // It runs and is watched; only a restart of the agent would not
            // find it again (and would report it failed).
            tracing::error!(action_id = %record.id(), error = %e, "Cannot record the action's process.");
        }
        self.records.insert(record.id().to_owned(), record.clone());
        Launched::Running(Running {
            record,
            watched: spawned.into(),
            deadline,
            program: argv.first().cloned().unwrap_or_default(),
            log,
            exit_file,
        })
    }
}

impl Running {
    /// The record as it is while the action runs.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Waits for the action's end (killing it at its deadline) and returns
    /// its result: the wrapper's exit status and the end of its output. A
    /// reboot command that succeeds leaves the action running: the machine
    /// is going down.
    pub async fn wait(self) -> Record {
        let ending = match command::wait_action(self.watched, self.deadline).await {
            Waited::TimedOut => Ending::TimedOut,
            Waited::Ended(status) => match command::read_exit(&self.exit_file) {
                Some(exit) => Ending::Exit(exit),
                // No file: the wrapper was killed before it could write it
                // (or the disk is full). Its own status, when it is our
                // child, still tells.
                None => match status.and_then(Exit::from_status) {
                    Some(exit) => Ending::Exit(exit),
                    None => Ending::Lost("the action ended and left no exit status".into()),
                },
            },
        };
        conclude(self.record, ending, &self.program, &self.log)
    }
}

/// How an action's process ended, as far as the agent can tell.
pub(super) enum Ending {
    Exit(Exit),
    TimedOut,
    /// Its status is lost: why.
    Lost(String),
}

/// The result of an action that ended: its state, exit code, error, and
/// its output's tail (read now, while the log is certainly still there).
pub(super) fn conclude(mut record: Record, ending: Ending, program: &str, log: &Path) -> Record {
    let r = &mut record.result;
    r.finished_at = Some(Timestamp::now());
    r.output_tail = command::read_tail(log, OUTPUT_TAIL_BYTES);
    (r.state, r.exit_code, r.error) = match ending {
        // The reboot is under way, not done: it is done when the agent
        // comes back under a new boot id (see `adopt.rs`).
        Ending::Exit(Exit::Code(0)) if record.kind == ActionKind::Reboot => {
            r.finished_at = None;
            (ActionState::Running, Some(0), String::new())
        }
        Ending::Exit(Exit::Code(0)) => (ActionState::Succeeded, Some(0), String::new()),
        Ending::Exit(Exit::Code(c)) => (
            ActionState::Failed,
            Some(c),
            format!("{program} exited with {c}"),
        ),
        Ending::Exit(Exit::Signal(n)) => (
            ActionState::Failed,
            None,
            format!("{program} was killed by signal {n}"),
        ),
        Ending::TimedOut => {
            let started = r.started_at.unwrap_or_default();
            let secs = record.deadline.map_or(0, |d| d.since(started).as_secs());
            (
                ActionState::Failed,
                None,
                format!("{program} did not finish within {secs}s and was killed"),
            )
        }
        Ending::Lost(why) => (ActionState::Failed, None, why),
    };
    record
}

#[cfg(test)]
mod tests {
    use super::super::Outcome;
    use super::super::testing::*;
    use super::*;

    #[tokio::test]
    async fn failures_keep_the_exit_code_and_the_end_of_the_output() {
        let dir = Dir::new("fail");
        let mut d = defs(&dir.0.join("c"));
        d.patch = vec![
            "sh".into(),
            "-c".into(),
            "head -c 10000 /dev/zero | tr '\\\\0' x; echo; echo 'E: broken' >&2; exit 100".into(),
        ];
        let mut actions = Actions::load(d, &dir.0.join("store"), "b").expect("load");
        let Outcome::Start(r, argv) = ask(&mut actions, "p1", ActionKind::Patch) else {
            panic!()
        };
        let done = run(&mut actions, r, argv, Duration::from_secs(10)).await;
        let tail = &done.result.output_tail;
        assert_eq!(
            (done.state(), done.result.exit_code),
            (ActionState::Failed, Some(100))
        );
        assert!(
            tail.len() <= OUTPUT_TAIL_BYTES && tail.ends_with("E: broken\n"),
            "{:?}",
            &tail[tail.len().saturating_sub(40)..]
        );
        assert!(done.result.error.contains("exited with 100"));
        let Outcome::Start(r, _) = ask(&mut actions, "p2", ActionKind::Patch) else {
            panic!()
        };
        let argv = vec!["sleep".into(), "5".into()];
        let timeout = run(&mut actions, r, argv, Duration::from_millis(100)).await;
        assert!(
            timeout.state() == ActionState::Failed
                && timeout.result.error.contains("did not finish"),
            "{}",
            timeout.result.error
        );
        // Killed by a signal is not an exit code, whether the command or
        // its wrapper (which then writes no status file) was killed.
        for (id, script) in [("p3", "kill -TERM $$"), ("p4", "kill -TERM $PPID")] {
            let Outcome::Start(r, _) = ask(&mut actions, id, ActionKind::Patch) else {
                panic!()
            };
            let argv = ["sh", "-c", script].map(String::from).to_vec();
            let killed = run(&mut actions, r, argv, Duration::from_secs(10)).await;
            assert_eq!(
                (
                    killed.state(),
                    killed.result.exit_code,
                    killed.result.error.as_str()
                ),
                (ActionState::Failed, None, "sh was killed by signal 15"),
                "{script}"
            );
        }
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_fails_with_why() {
        let dir = Dir::new("nostart");
        let mut actions =
            Actions::load(defs(&dir.0.join("c")), &dir.0.join("store"), "b").expect("load");
        let Outcome::Start(r, argv) = ask(&mut actions, "p1", ActionKind::Patch) else {
            panic!()
        };
        // The log cannot be created: the state directory went away.
        std::fs::remove_dir_all(dir.0.join("store")).expect("remove");
        let Launched::Failed(failed) = actions.launch(r, &argv, &[], Duration::from_secs(5)) else {
            panic!("launched without its log")
        };
        assert_eq!(failed.state(), ActionState::Failed);
        assert!(
            failed.result.error.starts_with("cannot create "),
            "{}",
            failed.result.error
        );
        assert!(failed.result.finished_at.is_some());
    }
}
