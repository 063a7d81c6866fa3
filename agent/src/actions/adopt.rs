//! What became of the actions an earlier agent left running: re-adopted
//! when still running in this boot, settled from `ID.exit` (or failed with
//! why) when they ended, and a reboot judged by the boot id.

use rollcall_proto::model::{ActionKind, ActionState};
use rollcall_proto::timestamp::Timestamp;

use super::run::{Ending, Running, conclude};
use super::{Actions, Record, StoreError, kind_name};
use crate::collect::command::{self, Watched};

/// What an action found running at start turned out to be.
enum Found {
    Running(Running),
    Ended(Record),
}

impl Actions {
    /// Settles an action found running at start, or re-adopts it (the
    /// session takes it with [`Actions::take_adopted`]).
    pub(super) fn adopt_or_settle(&mut self, record: Record) -> Result<(), StoreError> {
        match self.settle(record) {
            Found::Running(running) => {
                tracing::info!(action_id = %running.record.id(), pid = ?running.record.process.map(|p| p.pid), "Re-adopted an action that was running when the agent stopped.");
                self.records
                    .insert(running.record.id().to_owned(), running.record.clone());
                self.adopted.push(running);
            }
            Found::Ended(ended) => {
                tracing::info!(action_id = %ended.id(), state = ?ended.state(), error = %ended.result.error, "Settled an action that was running when the agent stopped.");
                self.save(&ended)?;
                self.records.insert(ended.id().to_owned(), ended);
            }
        }
        Ok(())
    }

    /// Whether the machine restarted since `record` started; `None` when
    /// either boot id is unknown, and then nobody can tell.
    fn rebooted_since(&self, record: &Record) -> Option<bool> {
        match (record.result.boot_id.as_str(), self.boot.known()) {
            ("", _) | (_, Err(_)) => None,
            (then, Ok(now)) => Some(then != now),
        }
    }

    fn settle(&self, mut record: Record) -> Found {
        let program = self.program(&record);
        let log = self.log_path(record.id());
        let exit = command::read_exit(&self.exit_path(record.id()));
        let rebooted = self.rebooted_since(&record);
        if record.kind == ActionKind::Reboot {
            let (state, error) = match rebooted {
                Some(true) => (ActionState::Succeeded, String::new()),
                Some(false) => (
                    ActionState::Failed,
                    "the agent restarted without a reboot".to_owned(),
                ),
                None => (
                    ActionState::Failed,
                    match self.boot.error() {
                        Some(e) => format!("cannot tell whether the machine rebooted: {e}"),
                        None => "cannot tell whether the machine rebooted: the reboot was recorded without a boot id".to_owned(),
                    },
                ),
            };
            record.end(state, error);
            return Found::Ended(record);
        }
        if rebooted == Some(true) {
            // Nothing of the last boot runs any more, and its pids mean
            // nothing now.
            let ending = exit.map_or_else(
                || Ending::Lost("the machine restarted while the action ran".into()),
                Ending::Exit,
            );
            return Found::Ended(conclude(record, ending, &program, &log));
        }
        // The same boot, or one nobody can tell: the pid and its start time
        // still tell the action's process from any other.
        match (record.process, record.deadline) {
            (Some(process), Some(deadline)) if process.is_running() => {
                if Timestamp::now() >= deadline {
                    process.kill_group();
                    Found::Ended(conclude(record, Ending::TimedOut, &program, &log))
                } else {
                    Found::Running(Running {
                        exit_file: self.exit_path(record.id()),
                        record,
                        watched: Watched::Adopted(process),
                        deadline,
                        program,
                        log,
                    })
                }
            }
            (process, _) => {
                let ending = match (exit, process) {
                    (Some(exit), _) => Ending::Exit(exit),
                    (None, Some(_)) => Ending::Lost(
                        "the action ended while the agent was stopped and left no exit status (was it killed?)".into(),
                    ),
                    (None, None) => Ending::Lost(
                        "the agent stopped before it recorded the action's process; it may still be running".into(),
                    ),
                };
                Found::Ended(conclude(record, ending, &program, &log))
            }
        }
    }

    /// The first word of an action's command, to name it in an error.
    fn program(&self, record: &Record) -> String {
        let argv = match record.kind {
            ActionKind::Patch => Some(&self.defs.patch),
            ActionKind::Reboot => Some(&self.defs.reboot),
            ActionKind::Hook => self.defs.hooks.get(&record.name),
        };
        argv.and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| format!("the {} command", kind_name(record.kind)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Outcome;
    use super::super::testing::*;
    use super::*;
    use crate::collect::boot_id::{BootId, BootIdError};
    use crate::collect::command::ActionProcess;

    #[tokio::test]
    async fn a_reboot_is_done_when_the_agent_comes_back_under_a_new_boot_id() {
        let dir = Dir::new("reboot");
        let store = dir.0.join("store");
        let mut actions = Actions::load(defs(&dir.0.join("c")), &store, "boot-1").expect("load");
        let Outcome::Start(r, argv) = ask(&mut actions, "r1", ActionKind::Reboot) else {
            panic!()
        };
        let initiated = run(&mut actions, r, argv, Duration::from_secs(5)).await;
        assert_eq!(
            initiated.state(),
            ActionState::Running,
            "a reboot is not done when its command returns"
        );
        actions.finish(initiated).expect("finish");
        // The machine goes down here. It comes back with a new boot id:
        let after = Actions::load(defs(&dir.0.join("c")), &store, "boot-2").expect("reload");
        let r = after.get("r1").expect("kept");
        assert_eq!(r.state(), ActionState::Succeeded);
        assert_eq!(after.unacknowledged().len(), 1);

        let mut actions =
            Actions::load(defs(&dir.0.join("c")), &dir.0.join("store2"), "boot-1").expect("load");
        let Outcome::Start(..) = ask(&mut actions, "r2", ActionKind::Reboot) else {
            panic!()
        };
        let Outcome::Start(..) = ask(&mut actions, "p2", ActionKind::Patch) else {
            panic!()
        };
        // The agent restarts but the machine did not reboot.
        let same =
            Actions::load(defs(&dir.0.join("c")), &dir.0.join("store2"), "boot-1").expect("reload");
        assert_eq!(
            same.get("r2").map(|r| (r.state(), r.result.error.as_str())),
            Some((ActionState::Failed, "the agent restarted without a reboot"))
        );
        assert_eq!(same.get("p2").map(Record::state), Some(ActionState::Failed));
    }

    fn unknown_boot() -> BootId {
        BootIdError::Empty {
            path: "/proc/sys/kernel/random/boot_id".into(),
        }
        .into()
    }

    #[tokio::test]
    async fn without_a_boot_id_no_reboot_starts_and_none_is_judged() {
        let dir = Dir::new("noboot");
        let store = dir.0.join("store");
        let d = defs(&dir.0.join("c"));
        // An agent that cannot read its boot id refuses reboots: their end
        // could not be told from a restart of the agent.
        let mut blind = Actions::load(d.clone(), &store, unknown_boot()).expect("load");
        let Outcome::Rejected(refused) = ask(&mut blind, "r1", ActionKind::Reboot) else {
            panic!("a reboot started without a boot id")
        };
        assert_eq!(
            refused.result.error,
            "/proc/sys/kernel/random/boot_id holds no boot id: the end of a reboot could not be told, so none is started"
        );
        assert_eq!(refused.result.boot_id, "", "no boot id is made up");
        let Outcome::Start(patch, argv) = ask(&mut blind, "p1", ActionKind::Patch) else {
            panic!("other actions still run")
        };
        let done = run(&mut blind, patch, argv, Duration::from_secs(10)).await;
        assert_eq!(done.state(), ActionState::Succeeded);
        drop(blind);

        // A reboot recorded under a known boot id, judged by an agent that
        // cannot read its own: failed, never "the boot id changed".
        let mut known = Actions::load(d.clone(), &dir.0.join("store2"), "boot-1").expect("load");
        let Outcome::Start(..) = ask(&mut known, "r2", ActionKind::Reboot) else {
            panic!()
        };
        drop(known);
        let after = Actions::load(d, &dir.0.join("store2"), unknown_boot()).expect("reload");
        let r2 = after.get("r2").expect("kept");
        assert_eq!(r2.state(), ActionState::Failed);
        assert_eq!(
            r2.result.error,
            "cannot tell whether the machine rebooted: /proc/sys/kernel/random/boot_id holds no boot id"
        );
    }

    #[tokio::test]
    async fn an_action_still_running_at_start_is_readopted_and_ends_with_its_real_outcome() {
        let dir = Dir::new("adopt");
        let (counter, store) = (dir.0.join("count"), dir.0.join("store"));
        std::fs::create_dir_all(&dir.0).expect("dir");
        let mut first = Actions::load(defs(&counter), &store, "boot-1").expect("load");
        let script = format!("sleep 1; echo patched >> {}; echo done", counter.display());
        let process = start_and_abandon(&mut first, "p1", &script, Duration::from_secs(30));
        drop(first);

        // The agent starts again while the patch runs.
        let mut again = Actions::load(defs(&counter), &store, "boot-1").expect("reload");
        assert_eq!(
            again.get("p1").map(Record::state),
            Some(ActionState::Running)
        );
        assert_eq!(again.pending_ids(), ["p1"], "announced in Hello");
        assert!(again.unacknowledged().is_empty(), "nothing final to send");
        let Outcome::Known(known) = ask(&mut again, "p1", ActionKind::Patch) else {
            panic!("asked again: not answered from the record")
        };
        assert_eq!(
            (known.state(), known.process),
            (ActionState::Running, Some(process))
        );
        let mut adopted = again.take_adopted();
        assert_eq!(adopted.len(), 1);
        let running = adopted.pop().expect("one");
        assert_eq!(running.record().id(), "p1");

        let done = running.wait().await;
        assert_eq!(
            (
                done.state(),
                done.result.exit_code,
                done.result.output_tail.as_str()
            ),
            (ActionState::Succeeded, Some(0), "done\n")
        );
        assert_eq!(lines(&counter), 1, "ran exactly once");
        again.finish(done).expect("finish");
        // The output went into the result; the files go only once the
        // server has it.
        assert!(store.join("p1.log").exists() && store.join("p1.exit").exists());
        again.acknowledge(&["p1".to_owned()]);
        for file in ["p1.json", "p1.log", "p1.exit"] {
            assert!(!store.join(file).exists(), "{file} kept");
        }
    }

    #[tokio::test]
    async fn an_action_that_ended_while_the_agent_was_away_is_settled_from_its_exit_status() {
        let dir = Dir::new("ended");
        let store = dir.0.join("store");
        let d = defs(&dir.0.join("c"));
        let mut first = Actions::load(d.clone(), &store, "boot-1").expect("load");
        start_and_abandon(
            &mut first,
            "p1",
            "echo out; exit 3",
            Duration::from_secs(30),
        );
        start_and_abandon(&mut first, "p2", "echo fine", Duration::from_secs(30));
        start_and_abandon(
            &mut first,
            "p3",
            "echo before the crash",
            Duration::from_secs(30),
        );
        drop(first);
        until("the exit files", || {
            ["p1", "p2", "p3"]
                .iter()
                .all(|id| store.join(format!("{id}.exit")).exists())
        })
        .await;
        let mut again = Actions::load(d.clone(), &store, "boot-1").expect("reload");
        assert!(again.take_adopted().is_empty());
        let p1 = &again.get("p1").expect("p1").result;
        assert_eq!(
            (
                p1.state,
                p1.exit_code,
                p1.error.as_str(),
                p1.output_tail.as_str()
            ),
            (ActionState::Failed, Some(3), "sh exited with 3", "out\n")
        );
        let p2 = &again.get("p2").expect("p2").result;
        assert_eq!(
            (p2.state, p2.exit_code, p2.output_tail.as_str()),
            (ActionState::Succeeded, Some(0), "fine\n")
        );
        assert!(p2.finished_at.is_some());
        assert_eq!(again.unacknowledged().len(), 3);
        // Settled once, on disk: the next start reads the same.
        drop(again);
        let third = Actions::load(d.clone(), &store, "boot-1").expect("reload");
        assert_eq!(third.get("p1").map(|r| r.result.exit_code), Some(Some(3)));

        // A record from an older agent (no process, no deadline) still
        // loads; the machine rebooted under p3 (it started under another
        // boot id), whose status is in its exit file.
        let mut old: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(store.join("p1.json")).expect("read"))
                .expect("json");
        let fields = old.as_object_mut().expect("object");
        fields.remove("process");
        fields.remove("deadline");
        fields.remove("node");
        fields.insert("state".into(), "running".into());
        fields.insert("id".into(), "old1".into());
        fields.insert("boot_id".into(), "boot-2".into());
        std::fs::write(store.join("old1.json"), old.to_string()).expect("write");
        let mut p3 =
            Record::from_json(&std::fs::read_to_string(store.join("p3.json")).expect("read"))
                .expect("json");
        p3.result.state = ActionState::Running;
        std::fs::write(store.join("p3.json"), p3.to_json()).expect("write");
        let rebooted = Actions::load(d, &store, "boot-2").expect("reload");
        let old1 = rebooted.get("old1").expect("old record loads");
        assert_eq!(old1.state(), ActionState::Failed);
        assert!(
            old1.result
                .error
                .contains("before it recorded the action's process"),
            "{}",
            old1.result.error
        );
        let p3 = &rebooted.get("p3").expect("p3").result;
        assert_eq!(
            (p3.state, p3.exit_code, p3.output_tail.as_str()),
            (ActionState::Succeeded, Some(0), "before the crash\n")
        );
    }

    #[tokio::test]
    async fn an_action_gone_without_an_exit_status_failed_with_its_output_in_the_result() {
        let dir = Dir::new("lost");
        let store = dir.0.join("store");
        let d = defs(&dir.0.join("c"));
        let mut first = Actions::load(d.clone(), &store, "boot-1").expect("load");
        // The command kills its wrapper: nothing is left to write a status.
        let process = start_and_abandon(
            &mut first,
            "p1",
            "echo last words; kill -KILL $PPID",
            Duration::from_secs(30),
        );
        drop(first);
        until("the wrapper to die", || !process.is_running()).await;
        let mut again = Actions::load(d, &store, "boot-1").expect("reload");
        assert!(again.take_adopted().is_empty());
        let p1 = &again.get("p1").expect("p1").result;
        assert_eq!((p1.state, p1.exit_code), (ActionState::Failed, None));
        assert!(p1.error.contains("left no exit status"), "{}", p1.error);
        assert_eq!(
            p1.output_tail, "last words\n",
            "the output is in the result"
        );
    }

    #[tokio::test]
    async fn an_action_past_its_deadline_is_killed_at_start_or_while_readopted() {
        let dir = Dir::new("deadline");
        let store = dir.0.join("store");
        let d = defs(&dir.0.join("c"));
        let mut first = Actions::load(d.clone(), &store, "boot-1").expect("load");
        let late = start_and_abandon(
            &mut first,
            "p1",
            "echo slow; sleep 30",
            Duration::from_secs(1),
        );
        drop(first);
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert!(late.is_running());
        let mut again = Actions::load(d.clone(), &store, "boot-1").expect("reload");
        assert!(again.take_adopted().is_empty());
        let p1 = &again.get("p1").expect("p1").result;
        assert_eq!(p1.state, ActionState::Failed);
        assert_eq!(p1.error, "sh did not finish within 1s and was killed");
        assert_eq!(p1.output_tail, "slow\n");
        until("the late action to be killed", || !late.is_running()).await;

        // Re-adopted in time, it still ends at its deadline.
        let process = start_and_abandon(&mut again, "p2", "sleep 30", Duration::from_secs(1));
        drop(again);
        let mut third = Actions::load(d, &store, "boot-1").expect("reload");
        let running = third.take_adopted().pop().expect("re-adopted");
        let started = std::time::Instant::now();
        let done = running.wait().await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            (done.state(), done.result.error.as_str()),
            (
                ActionState::Failed,
                "sh did not finish within 1s and was killed"
            )
        );
        until("the re-adopted action to be killed", || {
            !process.is_running()
        })
        .await;
    }

    #[tokio::test]
    async fn a_pid_taken_by_another_process_is_not_readopted_nor_killed() {
        let dir = Dir::new("reused");
        let store = dir.0.join("store");
        let d = defs(&dir.0.join("c"));
        let mut first = Actions::load(d.clone(), &store, "boot-1").expect("load");
        let process = start_and_abandon(&mut first, "p1", "sleep 30", Duration::from_secs(60));
        drop(first);
        // The record's process started at another time: whatever runs
        // under its pid now is someone else.
        let path = store.join("p1.json");
        let mut record =
            Record::from_json(&std::fs::read_to_string(&path).expect("read")).expect("json");
        record.process = Some(ActionProcess {
            start_ticks: process.start_ticks + 1,
            ..process
        });
        std::fs::write(&path, record.to_json()).expect("write");
        let mut again = Actions::load(d, &store, "boot-1").expect("reload");
        assert!(again.take_adopted().is_empty(), "adopted a stranger");
        let p1 = &again.get("p1").expect("p1").result;
        assert_eq!(p1.state, ActionState::Failed);
        assert!(p1.error.contains("left no exit status"), "{}", p1.error);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(process.is_running(), "a stranger was killed");
        process.kill_group();
    }
}
