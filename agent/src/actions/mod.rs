//! The actions the server may ask for, and only those the agent's own
//! configuration defines: patch, reboot and named hooks. The server sends
//! a name and an id, never a command line.
//!
//! Every action is written to disk before it runs and kept until the server
//! acknowledges its result, so nothing is lost and nothing runs twice:
//! - a request whose id is already known is answered from the record, never
//!   run again (a request re-sent after a reconnect, say);
//! - a reboot is recorded as running, with the boot id, before the reboot
//!   command runs; after the restart the agent finds it and reports it done
//!   when the boot id changed (or failed when it did not, or when either
//!   boot id is unknown: then a reboot cannot be told from a restart);
//! - any other action runs under a wrapper that leaves its exit status in
//!   `ID.exit`, and its record names its process (pid and start time) and
//!   its deadline. An agent that finds it running at start (it was killed or
//!   restarted under it) re-adopts it: watches it to its end, or kills it at
//!   its deadline, and reports its real outcome. One that ended meanwhile is
//!   settled from `ID.exit`; without one it failed, its output's tail in
//!   the result.
//!
//! - a request from a deposed leader (an epoch lower than one already seen)
//!   is refused before anything else is looked at (`epoch.rs`).
//!
//! `record.rs` is the on-disk record, `run.rs` starts an action and waits
//! for its end, `adopt.rs` settles what an earlier agent left running.

mod adopt;
mod epoch;
mod record;
mod run;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use rollcall_proto::model::{ActionKind, ActionRequest, ActionState};

use crate::collect::boot_id::BootId;
pub use epoch::Deposed;
pub use record::Record;
pub use run::{Launched, Running};

/// Output kept per action: the end of it, where the errors are.
pub const OUTPUT_TAIL_BYTES: usize = 4_096;

/// What the configuration defines. Each command is argv, never a shell line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Definitions {
    pub patch: Vec<String>,
    pub reboot: Vec<String>,
    /// Hook name → argv; the request's arguments are appended.
    pub hooks: BTreeMap<String, Vec<String>>,
    /// Extra environment for the patch command (DEBIAN_FRONTEND=noninteractive).
    pub patch_env: Vec<(String, String)>,
}

impl Definitions {
    /// The names the agent announces in its Hello.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if !self.patch.is_empty() {
            names.push("patch".to_owned());
        }
        if !self.reboot.is_empty() {
            names.push("reboot".to_owned());
        }
        names.extend(self.hooks.keys().map(|h| format!("hook:{h}")));
        names
    }

    /// The command a request runs; empty when this agent defines none.
    fn argv(&self, kind: ActionKind, name: &str, args: &[String]) -> Vec<String> {
        match kind {
            ActionKind::Patch => self.patch.clone(),
            ActionKind::Reboot => self.reboot.clone(),
            ActionKind::Hook => match self.hooks.get(name) {
                Some(cmd) => cmd.iter().chain(args).cloned().collect(),
                None => Vec::new(),
            },
        }
    }
}

/// What became of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Known id: here is what the agent knows; nothing runs again.
    Known(Record),
    /// Done long ago and acknowledged by the server: nothing runs again and
    /// there is nothing to say.
    Acknowledged,
    /// Not defined here (or malformed): refused, recorded, not run.
    Rejected(Record),
    /// Recorded as running; start it with [`Actions::launch`].
    Start(Record, Vec<String>),
    /// Sent by a leader that a later one replaced: refused, not recorded
    /// (the new leader may ask for the same id), not run.
    Deposed(Deposed),
}

#[derive(Debug, thiserror::Error)]
#[error("action store {}: {message}", path.display())]
pub struct StoreError {
    path: PathBuf,
    message: String,
}

/// The records on disk, one JSON file per action id.
pub struct Actions {
    defs: Definitions,
    dir: PathBuf,
    /// The boot the agent runs in; records are stamped with it.
    boot: BootId,
    records: BTreeMap<String, Record>,
    /// Ids whose results the server acknowledged, oldest first: never run again.
    acknowledged: VecDeque<String>,
    /// Actions `load` found still running, until the session takes them to
    /// watch.
    adopted: Vec<Running>,
    /// The highest leader epoch a request carried (0: none yet).
    leader_epoch: u64,
}

/// Acknowledged ids remembered (a campaign's worth and more).
const ACKNOWLEDGED_KEPT: usize = 10_000;
const ACKNOWLEDGED_FILE: &str = "acknowledged.txt";

/// Action ids become file names: keep them to a safe alphabet.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && !id.starts_with('.')
}

/// An action kind as messages name it.
fn kind_name(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Patch => "patch",
        ActionKind::Reboot => "reboot",
        ActionKind::Hook => "hook",
    }
}

impl Actions {
    /// Loads the records in `dir` and settles those that were running when
    /// the agent stopped, in the boot `boot` (see [`BootId`]).
    pub fn load(
        defs: Definitions,
        dir: &Path,
        boot: impl Into<BootId>,
    ) -> Result<Self, StoreError> {
        let err = |message: String| StoreError {
            path: dir.to_owned(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        // A list that cannot be read is an error, not an empty list: an
        // empty one would let acknowledged actions run again.
        let acknowledged = match std::fs::read_to_string(dir.join(ACKNOWLEDGED_FILE)) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(e) => return Err(err(format!("{ACKNOWLEDGED_FILE}: {e}"))),
        };
        // Likewise a lost epoch would let a deposed leader in.
        let leader_epoch = match std::fs::read_to_string(dir.join(epoch::FILE)) {
            Ok(text) => epoch::parse(&text).map_err(err)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(err(format!("{}: {e}", epoch::FILE))),
        };
        let mut actions = Self {
            defs,
            dir: dir.to_owned(),
            boot: boot.into(),
            records: BTreeMap::new(),
            acknowledged,
            adopted: Vec::new(),
            leader_epoch,
        };
        for entry in std::fs::read_dir(dir).map_err(|e| err(e.to_string()))? {
            let path = entry.map_err(|e| err(e.to_string()))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
            let record = match Record::from_json(&text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "Unreadable action record; ignored.");
                    continue;
                }
            };
            if record.state() == ActionState::Running {
                actions.adopt_or_settle(record)?;
            } else {
                actions.records.insert(record.id().to_owned(), record);
            }
        }
        Ok(actions)
    }

    /// The actions `load` found still running and re-adopted: the caller
    /// watches each to its end ([`Running::wait`]) and reports it.
    pub fn take_adopted(&mut self) -> Vec<Running> {
        std::mem::take(&mut self.adopted)
    }

    pub fn definitions(&self) -> &Definitions {
        &self.defs
    }

    /// Ids whose results the server has not acknowledged.
    pub fn pending_ids(&self) -> Vec<String> {
        self.records.keys().cloned().collect()
    }

    /// Finished records to send (again) to the server.
    pub fn unacknowledged(&self) -> Vec<Record> {
        self.records
            .values()
            .filter(|r| r.state().is_final())
            .cloned()
            .collect()
    }

    /// Where an action's output goes (kept until the server acknowledged it).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Where an action's wrapper leaves its exit status.
    fn exit_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.exit"))
    }

    pub fn get(&self, id: &str) -> Option<&Record> {
        self.records.get(id)
    }

    fn save(&self, record: &Record) -> Result<(), StoreError> {
        let name = format!("{}.json", record.id());
        self.write_durably(&name, &record.to_json())
            .map_err(|e| StoreError {
                path: self.dir.join(&name),
                message: e.to_string(),
            })
    }

    /// Records a request and says what to do with it. Durable before it
    /// returns: a `Start` is on disk as running.
    pub fn request(&mut self, req: &ActionRequest) -> Result<Outcome, StoreError> {
        match epoch::fence(self.leader_epoch, req.leader_epoch) {
            Err(deposed) => return Ok(Outcome::Deposed(deposed)),
            Ok(Some(higher)) => {
                // On disk before anything is acted on: after a crash the
                // agent still knows the deposed leader for what it is.
                self.write_durably(epoch::FILE, &epoch::to_text(higher))
                    .map_err(|e| StoreError {
                        path: self.dir.join(epoch::FILE),
                        message: e.to_string(),
                    })?;
                self.leader_epoch = higher;
            }
            Ok(None) => {}
        }
        let id = req.id.as_str();
        if let Some(known) = self.records.get(id) {
            return Ok(Outcome::Known(known.clone()));
        }
        if self.acknowledged.iter().any(|a| a == id) {
            return Ok(Outcome::Acknowledged);
        }
        let mut record = Record::started(req, self.boot.wire());
        let argv = self.defs.argv(req.kind, &req.name, &req.args);
        let rejection = if !valid_id(id) {
            Some("invalid action id".to_owned())
        } else if argv.is_empty() {
            Some(match req.kind {
                ActionKind::Hook => {
                    format!("this agent's configuration defines no hook {:?}", req.name)
                }
                other => format!(
                    "this agent's configuration defines no {} command",
                    kind_name(other)
                ),
            })
        } else if req.kind != ActionKind::Hook && !req.args.is_empty() {
            Some("patch and reboot take no arguments".to_owned())
        } else if req.args.iter().any(|a| a.len() > 256 || a.contains('\0')) || req.args.len() > 16
        {
            Some("at most 16 arguments of at most 256 bytes".to_owned())
        } else if let (ActionKind::Reboot, Err(e)) = (req.kind, self.boot.known()) {
            Some(format!(
                "{e}: the end of a reboot could not be told, so none is started"
            ))
        } else {
            None
        };
        if let Some(reason) = rejection {
            record.end(ActionState::Rejected, reason);
            if valid_id(id) {
                self.save(&record)?;
                self.records.insert(id.to_owned(), record.clone());
            }
            return Ok(Outcome::Rejected(record));
        }
        self.save(&record)?;
        self.records.insert(id.to_owned(), record.clone());
        Ok(Outcome::Start(record, argv))
    }

    /// Stores a finished action's result.
    pub fn finish(&mut self, record: Record) -> Result<(), StoreError> {
        self.save(&record)?;
        self.records.insert(record.id().to_owned(), record);
        Ok(())
    }

    /// The server stored these results: forget them.
    pub fn acknowledge(&mut self, ids: &[String]) {
        let fresh: Vec<&String> = ids
            .iter()
            .filter(|id| self.records.get(*id).is_some_and(|r| r.state().is_final()))
            .filter(|id| !self.acknowledged.contains(id))
            .collect();
        if fresh.is_empty() {
            return;
        }
        // Remember the ids durably before forgetting the records: a crash in
        // between leaves a record, which is answered, never run again.
        self.acknowledged
            .extend(fresh.iter().map(|id| (*id).clone()));
        while self.acknowledged.len() > ACKNOWLEDGED_KEPT {
            self.acknowledged.pop_front();
        }
        let list: String = self
            .acknowledged
            .iter()
            .map(|id| format!("{id}\n"))
            .collect();
        if let Err(e) = self.write_durably(ACKNOWLEDGED_FILE, &list) {
            tracing::error!(error = %e, "Cannot record acknowledged actions; keeping their records.");
            return;
        }
        for id in ids {
            if self.acknowledged.contains(id) && self.records.remove(id).is_some() {
                // The result (its output's tail with it) is stored by the
                // server: only now may its files go.
                let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
                let _ = std::fs::remove_file(self.log_path(id));
                let _ = std::fs::remove_file(self.exit_path(id));
                let _ = std::fs::remove_file(self.dir.join(format!("{id}.exit.tmp")));
            }
        }
    }

    /// Writes a file through a temporary one, with the file and the
    /// directory synced: it survives a power cut (or a reboot) intact.
    fn write_durably(&self, name: &str, text: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod testing {
    //! What the tests of every part of the action store share.
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use rollcall_proto::model::{ActionKind, ActionRequest};

    use super::{Actions, Definitions, Launched, Outcome, Record};
    use crate::collect::command::ActionProcess;

    pub struct Dir(pub PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Self {
            let d =
                std::env::temp_dir().join(format!("rollcall-actions-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            Self(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A request as the server sends one.
    pub fn req(id: &str, kind: ActionKind, name: &str, args: &[&str]) -> ActionRequest {
        ActionRequest {
            id: id.to_owned(),
            kind,
            name: name.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            timeout_secs: 0,
            leader_epoch: 0,
        }
    }

    /// The same, sent by the leader of `epoch`.
    pub fn from_leader(mut req: ActionRequest, epoch: u64) -> ActionRequest {
        req.leader_epoch = epoch;
        req
    }

    /// Asks for a patch or a reboot.
    pub fn ask(actions: &mut Actions, id: &str, kind: ActionKind) -> Outcome {
        actions.request(&req(id, kind, "", &[])).expect("request")
    }

    /// Starts a recorded action and waits for its end, as the session does.
    pub async fn run(
        actions: &mut Actions,
        record: Record,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Record {
        match actions.launch(record, &argv, &[], timeout) {
            Launched::Running(running) => running.wait().await,
            Launched::Failed(record) => record,
        }
    }

    pub fn defs(counter: &Path) -> Definitions {
        let sh = |script: String| vec!["sh".to_owned(), "-c".to_owned(), script];
        Definitions {
            patch: sh(format!("echo patched >> {}; echo done", counter.display())),
            reboot: sh("exit 0".into()),
            hooks: [(
                "drain".to_owned(),
                vec!["echo".to_owned(), "draining".to_owned()],
            )]
            .into(),
            patch_env: vec![],
        }
    }

    /// Starts patch `id` running `script` and lets go of it as an agent
    /// that is killed does: the process runs on and nobody waits for it.
    pub fn start_and_abandon(
        actions: &mut Actions,
        id: &str,
        script: &str,
        timeout: Duration,
    ) -> ActionProcess {
        let Outcome::Start(r, _) = ask(actions, id, ActionKind::Patch) else {
            panic!("not started")
        };
        let argv = ["sh", "-c", script].map(String::from);
        let Launched::Running(running) = actions.launch(r, &argv, &[], timeout) else {
            panic!("not launched")
        };
        let process = running.record().process.expect("process recorded");
        let on_disk = Record::from_json(
            &std::fs::read_to_string(actions.dir.join(format!("{id}.json"))).expect("record"),
        )
        .expect("parse");
        assert_eq!(on_disk.process, Some(process), "the process is on disk");
        assert!(on_disk.deadline.is_some());
        drop(running);
        process
    }

    pub async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..100 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    pub fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_patch_runs_once_however_often_it_is_asked_for() {
        let dir = Dir::new("once");
        let counter = dir.0.join("count");
        std::fs::create_dir_all(&dir.0).expect("dir");
        let mut actions =
            Actions::load(defs(&counter), &dir.0.join("store"), "boot-1").expect("load");
        let Outcome::Start(record, argv) = ask(&mut actions, "c1-cmp1-patch", ActionKind::Patch)
        else {
            panic!("not started")
        };
        assert!(
            dir.0.join("store/c1-cmp1-patch.json").exists(),
            "on disk before it runs"
        );
        let done = run(&mut actions, record, argv, Duration::from_secs(10)).await;
        assert_eq!(
            (done.state(), done.result.exit_code),
            (ActionState::Succeeded, Some(0))
        );
        assert_eq!(done.result.output_tail.trim(), "done");
        actions.finish(done.clone()).expect("finish");
        // Asked again (a reconnect, a restarted server): the record answers.
        assert_eq!(
            ask(&mut actions, "c1-cmp1-patch", ActionKind::Patch),
            Outcome::Known(done.clone())
        );
        // Even after an agent restart.
        let mut reloaded =
            Actions::load(defs(&counter), &dir.0.join("store"), "boot-1").expect("reload");
        assert_eq!(
            ask(&mut reloaded, "c1-cmp1-patch", ActionKind::Patch),
            Outcome::Known(done)
        );
        assert_eq!(lines(&counter), 1, "ran exactly once");
        reloaded.acknowledge(&["c1-cmp1-patch".to_owned()]);
        assert!(
            reloaded.pending_ids().is_empty() && !dir.0.join("store/c1-cmp1-patch.json").exists()
        );
        // Acknowledged and forgotten, yet never run again, even after a restart.
        let mut again =
            Actions::load(defs(&counter), &dir.0.join("store"), "boot-1").expect("reload");
        assert_eq!(
            ask(&mut again, "c1-cmp1-patch", ActionKind::Patch),
            Outcome::Acknowledged
        );
        assert_eq!(lines(&counter), 1, "still ran exactly once");
    }

    #[tokio::test]
    async fn undefined_or_malformed_requests_are_rejected_and_nothing_runs() {
        let dir = Dir::new("reject");
        let mut actions =
            Actions::load(defs(&dir.0.join("c")), &dir.0.join("store"), "b").expect("load");
        for (id, kind, name, args, needle) in [
            (
                "a1",
                ActionKind::Hook,
                "rm-rf",
                &[][..],
                "no hook \"rm-rf\"",
            ),
            (
                "a2",
                ActionKind::Patch,
                "",
                &["--force"][..],
                "take no arguments",
            ),
            (
                "../../etc/x",
                ActionKind::Patch,
                "",
                &[][..],
                "invalid action id",
            ),
        ] {
            match actions
                .request(&req(id, kind, name, args))
                .expect("request")
            {
                Outcome::Rejected(r) => {
                    assert!(r.result.error.contains(needle), "{}", r.result.error)
                }
                other => panic!("{id}: {other:?}"),
            }
        }
        assert!(!dir.0.join("c").exists(), "nothing ran");
        assert!(!dir.0.join("etc").exists());
        let mut no_reboot = defs(&dir.0.join("c"));
        no_reboot.reboot.clear();
        let mut actions = Actions::load(no_reboot, &dir.0.join("store2"), "b").expect("load");
        match ask(&mut actions, "r1", ActionKind::Reboot) {
            Outcome::Rejected(r) => assert_eq!(
                r.result.error,
                "this agent's configuration defines no reboot command"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_deposed_leader_is_refused_even_after_a_restart_and_nothing_runs() {
        let dir = Dir::new("epoch");
        let counter = dir.0.join("count");
        let store = dir.0.join("store");
        let mut actions = Actions::load(defs(&counter), &store, "b").expect("load");
        let patch = |id: &str, epoch| from_leader(req(id, ActionKind::Patch, "", &[]), epoch);
        // The leader of epoch 4 asks: it runs, and 4 is on disk first.
        let Outcome::Start(record, argv) = actions.request(&patch("p4", 4)).expect("request")
        else {
            panic!("epoch 4 not started")
        };
        assert_eq!(
            std::fs::read_to_string(store.join("leader-epoch")).expect("epoch file"),
            "4\n"
        );
        let done = run(&mut actions, record, argv, Duration::from_secs(10)).await;
        actions.finish(done).expect("finish");
        // The agent restarts; the leader of epoch 3 did not learn it lost.
        let mut actions = Actions::load(defs(&counter), &store, "b").expect("reload");
        assert_eq!(
            actions.request(&patch("p3", 3)).expect("request"),
            Outcome::Deposed(Deposed { epoch: 3, seen: 4 })
        );
        // Nothing of it is kept: the new leader may use the same id.
        assert!(actions.get("p3").is_none() && !store.join("p3.json").exists());
        // Even a known id is not answered to a deposed leader.
        assert!(matches!(
            actions.request(&patch("p4", 3)).expect("request"),
            Outcome::Deposed(_)
        ));
        // A server without replicas (epoch 0) is refused once replicas
        // were seen (one left on the file the fleet moved from); the
        // leader of epoch 5 is heard, and 5 is now the highest.
        assert_eq!(
            actions.request(&patch("p0", 0)).expect("request"),
            Outcome::Deposed(Deposed { epoch: 0, seen: 4 })
        );
        assert!(matches!(
            actions.request(&patch("p5", 5)).expect("request"),
            Outcome::Start(..)
        ));
        assert_eq!(
            actions.request(&patch("p4b", 4)).expect("request"),
            Outcome::Deposed(Deposed { epoch: 4, seen: 5 })
        );
        assert_eq!(lines(&counter), 1, "only the request of epoch 4 ran");
        // An epoch file that is not a number stops the agent: it cannot
        // tell a deposed leader any more.
        std::fs::write(store.join("leader-epoch"), "five").expect("write");
        let err = Actions::load(defs(&counter), &store, "b")
            .err()
            .expect("garbage epoch refused")
            .to_string();
        assert!(err.contains("leader-epoch holds \"five\""), "{err}");
    }

    #[tokio::test]
    async fn a_hook_gets_the_requested_arguments_as_argv() {
        let dir = Dir::new("hook");
        let mut actions =
            Actions::load(defs(&dir.0.join("c")), &dir.0.join("store"), "b").expect("load");
        let Outcome::Start(r, argv) = actions
            .request(&req("h1", ActionKind::Hook, "drain", &["cmp1; rm -rf /"]))
            .expect("request")
        else {
            panic!("not started")
        };
        assert_eq!(argv, ["echo", "draining", "cmp1; rm -rf /"]);
        let done = run(&mut actions, r, argv, Duration::from_secs(5)).await;
        assert_eq!(
            done.result.output_tail.trim(),
            "draining cmp1; rm -rf /",
            "one argument, no shell"
        );
    }
}
