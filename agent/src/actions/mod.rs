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
//!   when the boot id changed (or failed when it did not);
//! - any other action runs under a wrapper that leaves its exit status in
//!   `ID.exit`, and its record names its process (pid and start time) and
//!   its deadline. An agent that finds it running at start (it was killed or
//!   restarted under it) re-adopts it: watches it to its end, or kills it at
//!   its deadline, and reports its real outcome. One that ended meanwhile is
//!   settled from `ID.exit`; without one it failed, its output's tail in
//!   the result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_proto::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

use crate::collect::command::{self, ActionProcess, Exit, Waited, Watched};

/// Output kept per action: the end of it, where the errors are.
pub const OUTPUT_TAIL_BYTES: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Patch,
    Reboot,
    Hook,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Succeeded,
    Failed,
    Rejected,
}

impl State {
    pub fn is_final(self) -> bool {
        self != State::Running
    }
}

/// One action as the agent keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub kind: Kind,
    /// The hook's name; empty for patch and reboot.
    pub name: String,
    pub args: Vec<String>,
    pub state: State,
    pub exit_code: Option<i32>,
    pub output_tail: String,
    pub error: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// The boot id when the action started; a reboot ends under another.
    pub boot_id: String,
    /// The process running the action, once it started: what an agent that
    /// restarted finds it again by (within the same boot only). Absent in
    /// records of older agents.
    #[serde(default)]
    pub process: Option<ActionProcess>,
    /// When the action must have ended (its start plus its timeout): it
    /// still holds after an agent restart.
    #[serde(default)]
    pub deadline: Option<Timestamp>,
}

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
    /// Recorded as running; run it with [`run`].
    Start(Record, Vec<String>),
}

#[derive(Debug, thiserror::Error)]
#[error("action store {path}: {message}")]
pub struct StoreError {
    path: PathBuf,
    message: String,
}

/// The records on disk, one JSON file per action id.
pub struct Actions {
    defs: Definitions,
    dir: PathBuf,
    boot_id: String,
    records: BTreeMap<String, Record>,
    /// Ids whose results the server acknowledged, oldest first: never run again.
    acknowledged: std::collections::VecDeque<String>,
    /// Actions `load` found still running, until the session takes them to
    /// watch.
    adopted: Vec<Running>,
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

impl Actions {
    /// Loads the records in `dir` and settles those that were running when
    /// the agent stopped.
    pub fn load(defs: Definitions, dir: &Path, boot_id: &str) -> Result<Self, StoreError> {
        let err = |message: String| StoreError {
            path: dir.to_owned(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        // A list that cannot be read is an error, not an empty list: an
        // empty one would let acknowledged actions run again.
        let acknowledged = match std::fs::read_to_string(dir.join(ACKNOWLEDGED_FILE)) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(err(format!("{ACKNOWLEDGED_FILE}: {e}"))),
        };
        let mut actions = Self {
            defs,
            dir: dir.to_owned(),
            boot_id: boot_id.to_owned(),
            records: BTreeMap::new(),
            acknowledged,
            adopted: Vec::new(),
        };
        for entry in std::fs::read_dir(dir).map_err(|e| err(e.to_string()))? {
            let path = entry.map_err(|e| err(e.to_string()))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
            let mut record: Record = match serde_json::from_str(&text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "Unreadable action record; ignored.");
                    continue;
                }
            };
            if record.state == State::Running {
                match actions.settle(record) {
                    Found::Running(running) => {
                        tracing::info!(action_id = %running.record.id, pid = ?running.record.process.map(|p| p.pid), "Re-adopted an action that was running when the agent stopped.");
                        actions
                            .records
                            .insert(running.record.id.clone(), running.record.clone());
                        actions.adopted.push(running);
                        continue;
                    }
                    Found::Ended(ended) => {
                        tracing::info!(action_id = %ended.id, state = ?ended.state, error = %ended.error, "Settled an action that was running when the agent stopped.");
                        actions.save(&ended)?;
                        record = ended;
                    }
                }
            }
            actions.records.insert(record.id.clone(), record);
        }
        Ok(actions)
    }

    /// What became of an action found running at start.
    fn settle(&self, record: Record) -> Found {
        let program = self.program(&record);
        let log = self.log_path(&record.id);
        let exit = command::read_exit(&self.exit_path(&record.id));
        let same_boot = record.boot_id == self.boot_id;
        if record.kind == Kind::Reboot {
            let mut record = record;
            (record.state, record.error) = if same_boot {
                (
                    State::Failed,
                    "the agent restarted without a reboot".to_owned(),
                )
            } else {
                (State::Succeeded, String::new())
            };
            record.finished_at = Some(Timestamp::now());
            return Found::Ended(record);
        }
        if !same_boot {
            // Nothing of the last boot runs any more, and its pids mean
            // nothing now.
            let ending = exit.map_or_else(
                || Ending::Lost("the machine restarted while the action ran".into()),
                Ending::Exit,
            );
            return Found::Ended(conclude(record, ending, &program, &log));
        }
        match (record.process, record.deadline) {
            (Some(process), Some(deadline)) if process.is_running() => {
                if Timestamp::now() >= deadline {
                    process.kill_group();
                    Found::Ended(conclude(record, Ending::TimedOut, &program, &log))
                } else {
                    Found::Running(Running {
                        exit_file: self.exit_path(&record.id),
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
            Kind::Patch => Some(&self.defs.patch),
            Kind::Reboot => Some(&self.defs.reboot),
            Kind::Hook => self.defs.hooks.get(&record.name),
        };
        argv.and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| format!("the {:?} command", record.kind).to_lowercase())
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
            .filter(|r| r.state.is_final())
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
        let text = serde_json::to_string_pretty(record).expect("a record serializes");
        self.write_durably(&format!("{}.json", record.id), &text)
            .map_err(|e| StoreError {
                path: self.dir.join(format!("{}.json", record.id)),
                message: e.to_string(),
            })
    }

    /// Records a request and says what to do with it. Durable before it
    /// returns: a `Start` is on disk as running.
    pub fn request(
        &mut self,
        id: &str,
        kind: Kind,
        name: &str,
        args: &[String],
    ) -> Result<Outcome, StoreError> {
        if let Some(known) = self.records.get(id) {
            return Ok(Outcome::Known(known.clone()));
        }
        if self.acknowledged.iter().any(|a| a == id) {
            return Ok(Outcome::Acknowledged);
        }
        let mut record = Record {
            id: id.to_owned(),
            kind,
            name: name.to_owned(),
            args: args.to_vec(),
            state: State::Running,
            exit_code: None,
            output_tail: String::new(),
            error: String::new(),
            started_at: Timestamp::now(),
            finished_at: None,
            boot_id: self.boot_id.clone(),
            process: None,
            deadline: None,
        };
        let argv = match kind {
            Kind::Patch => self.defs.patch.clone(),
            Kind::Reboot => self.defs.reboot.clone(),
            Kind::Hook => match self.defs.hooks.get(name) {
                Some(cmd) => cmd.iter().cloned().chain(args.iter().cloned()).collect(),
                None => Vec::new(),
            },
        };
        let rejection = if !valid_id(id) {
            Some("invalid action id".to_owned())
        } else if argv.is_empty() {
            Some(match kind {
                Kind::Hook => format!("this agent's configuration defines no hook {name:?}"),
                other => format!("this agent's configuration defines no {other:?} command")
                    .to_lowercase(),
            })
        } else if kind != Kind::Hook && !args.is_empty() {
            Some("patch and reboot take no arguments".to_owned())
        } else if args.iter().any(|a| a.len() > 256 || a.contains('\0')) || args.len() > 16 {
            Some("at most 16 arguments of at most 256 bytes".to_owned())
        } else {
            None
        };
        if let Some(reason) = rejection {
            record.state = State::Rejected;
            record.error = reason;
            record.finished_at = Some(Timestamp::now());
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

    /// Starts a recorded action (a [`Outcome::Start`]) and records its
    /// process and deadline before it returns, so that an agent that
    /// restarts finds it again.
    pub fn launch(
        &mut self,
        mut record: Record,
        argv: &[String],
        env: &[(String, String)],
        timeout: Duration,
    ) -> Launched {
        let deadline = record.started_at.saturating_add(timeout);
        record.deadline = Some(deadline);
        let (log, exit_file) = (self.log_path(&record.id), self.exit_path(&record.id));
        let spawned = match command::spawn_action(argv, env, &log, &exit_file) {
            Ok(s) => s,
            Err(e) => {
                record.state = State::Failed;
                record.error = e.to_string();
                record.finished_at = Some(Timestamp::now());
                return Launched::Failed(record);
            }
        };
        record.process = Some(spawned.process);
        if let Err(e) = self.save(&record) {
            // It runs and is watched; only a restart of the agent would not
            // find it again (and would report it failed).
            tracing::error!(action_id = %record.id, error = %e, "Cannot record the action's process.");
        }
        self.records.insert(record.id.clone(), record.clone());
        Launched::Running(Running {
            record,
            watched: spawned.into(),
            deadline,
            program: argv.first().cloned().unwrap_or_default(),
            log,
            exit_file,
        })
    }

    /// Stores a finished action's result.
    pub fn finish(&mut self, record: Record) -> Result<(), StoreError> {
        self.save(&record)?;
        self.records.insert(record.id.clone(), record);
        Ok(())
    }

    /// The server stored these results: forget them.
    pub fn acknowledge(&mut self, ids: &[String]) {
        let fresh: Vec<&String> = ids
            .iter()
            .filter(|id| self.records.get(*id).is_some_and(|r| r.state.is_final()))
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

/// What [`Actions::launch`] made of a started action.
pub enum Launched {
    Running(Running),
    /// It could not be started: its result.
    Failed(Record),
}

/// An action under way, started by this agent or re-adopted at its start.
pub struct Running {
    record: Record,
    watched: Watched,
    deadline: Timestamp,
    /// The command's first word, to name it in an error.
    program: String,
    log: PathBuf,
    exit_file: PathBuf,
}

enum Found {
    Running(Running),
    Ended(Record),
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
                None => match status.and_then(command::Exit::from_status) {
                    Some(exit) => Ending::Exit(exit),
                    None => Ending::Lost("the action ended and left no exit status".into()),
                },
            },
        };
        conclude(self.record, ending, &self.program, &self.log)
    }
}

/// How an action's process ended, as far as the agent can tell.
enum Ending {
    Exit(Exit),
    TimedOut,
    /// Its status is lost: why.
    Lost(String),
}

/// The result of an action that ended: its state, exit code, error, and
/// its output's tail (read now, while the log is certainly still there).
fn conclude(mut record: Record, ending: Ending, program: &str, log: &Path) -> Record {
    record.finished_at = Some(Timestamp::now());
    record.output_tail = command::read_tail(log, OUTPUT_TAIL_BYTES);
    (record.state, record.exit_code, record.error) = match ending {
        // The reboot is under way, not done: it is done when the agent
        // comes back under a new boot id (see `load`).
        Ending::Exit(Exit::Code(0)) if record.kind == Kind::Reboot => {
            record.finished_at = None;
            (State::Running, Some(0), String::new())
        }
        Ending::Exit(Exit::Code(0)) => (State::Succeeded, Some(0), String::new()),
        Ending::Exit(Exit::Code(c)) => {
            (State::Failed, Some(c), format!("{program} exited with {c}"))
        }
        Ending::Exit(Exit::Signal(n)) => (
            State::Failed,
            None,
            format!("{program} was killed by signal {n}"),
        ),
        Ending::TimedOut => {
            let secs = record
                .deadline
                .map_or(0, |d| d.since(record.started_at).as_secs());
            (
                State::Failed,
                None,
                format!("{program} did not finish within {secs}s and was killed"),
            )
        }
        Ending::Lost(why) => (State::Failed, None, why),
    };
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
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

    /// Starts a recorded action and waits for its end, as the session does.
    async fn run(
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

    fn defs(counter: &Path) -> Definitions {
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

    #[tokio::test]
    async fn a_patch_runs_once_however_often_it_is_asked_for() {
        let dir = Dir::new("once");
        let counter = dir.0.join("count");
        std::fs::create_dir_all(&dir.0).expect("dir");
        let mut actions =
            Actions::load(defs(&counter), &dir.0.join("store"), "boot-1").expect("load");
        let Outcome::Start(record, argv) = actions
            .request("c1-cmp1-patch", Kind::Patch, "", &[])
            .expect("request")
        else {
            panic!("not started")
        };
        assert!(
            dir.0.join("store/c1-cmp1-patch.json").exists(),
            "on disk before it runs"
        );
        let done = run(&mut actions, record, argv, Duration::from_secs(10)).await;
        assert_eq!((done.state, done.exit_code), (State::Succeeded, Some(0)));
        assert_eq!(done.output_tail.trim(), "done");
        actions.finish(done.clone()).expect("finish");
        // Asked again (a reconnect, a restarted server): the record answers.
        assert_eq!(
            actions
                .request("c1-cmp1-patch", Kind::Patch, "", &[])
                .expect("again"),
            Outcome::Known(done.clone())
        );
        // Even after an agent restart.
        let mut reloaded =
            Actions::load(defs(&counter), &dir.0.join("store"), "boot-1").expect("reload");
        assert_eq!(
            reloaded
                .request("c1-cmp1-patch", Kind::Patch, "", &[])
                .expect("again"),
            Outcome::Known(done)
        );
        assert_eq!(
            std::fs::read_to_string(&counter)
                .expect("count")
                .lines()
                .count(),
            1,
            "ran exactly once"
        );
        reloaded.acknowledge(&["c1-cmp1-patch".to_owned()]);
        assert!(
            reloaded.pending_ids().is_empty() && !dir.0.join("store/c1-cmp1-patch.json").exists()
        );
        // Acknowledged and forgotten, yet never run again, even after a restart.
        let mut again =
            Actions::load(defs(&counter), &dir.0.join("store"), "boot-1").expect("reload");
        assert_eq!(
            again
                .request("c1-cmp1-patch", Kind::Patch, "", &[])
                .expect("again"),
            Outcome::Acknowledged
        );
        assert_eq!(
            std::fs::read_to_string(&counter)
                .expect("count")
                .lines()
                .count(),
            1,
            "still ran exactly once"
        );
    }

    #[tokio::test]
    async fn undefined_or_malformed_requests_are_rejected_and_nothing_runs() {
        let dir = Dir::new("reject");
        let mut actions =
            Actions::load(defs(&dir.0.join("c")), &dir.0.join("store"), "b").expect("load");
        for (id, kind, name, args, needle) in [
            ("a1", Kind::Hook, "rm-rf", vec![], "no hook \"rm-rf\""),
            (
                "a2",
                Kind::Patch,
                "",
                vec!["--force".to_owned()],
                "take no arguments",
            ),
            ("../../etc/x", Kind::Patch, "", vec![], "invalid action id"),
        ] {
            match actions.request(id, kind, name, &args).expect("request") {
                Outcome::Rejected(r) => assert!(r.error.contains(needle), "{}", r.error),
                other => panic!("{id}: {other:?}"),
            }
        }
        assert!(!dir.0.join("c").exists(), "nothing ran");
        assert!(!dir.0.join("etc").exists());
        let mut no_reboot = defs(&dir.0.join("c"));
        no_reboot.reboot.clear();
        let mut actions = Actions::load(no_reboot, &dir.0.join("store2"), "b").expect("load");
        assert!(matches!(
            actions
                .request("r1", Kind::Reboot, "", &[])
                .expect("request"),
            Outcome::Rejected(_)
        ));
    }

    #[tokio::test]
    async fn a_hook_gets_the_requested_arguments_as_argv() {
        let dir = Dir::new("hook");
        let mut actions =
            Actions::load(defs(&dir.0.join("c")), &dir.0.join("store"), "b").expect("load");
        let Outcome::Start(r, argv) = actions
            .request("h1", Kind::Hook, "drain", &["cmp1; rm -rf /".to_owned()])
            .expect("request")
        else {
            panic!("not started")
        };
        assert_eq!(argv, ["echo", "draining", "cmp1; rm -rf /"]);
        let done = run(&mut actions, r, argv, Duration::from_secs(5)).await;
        assert_eq!(
            done.output_tail.trim(),
            "draining cmp1; rm -rf /",
            "one argument, no shell"
        );
    }

    #[tokio::test]
    async fn a_reboot_is_done_when_the_agent_comes_back_under_a_new_boot_id() {
        let dir = Dir::new("reboot");
        let store = dir.0.join("store");
        let mut actions = Actions::load(defs(&dir.0.join("c")), &store, "boot-1").expect("load");
        let Outcome::Start(r, argv) = actions
            .request("r1", Kind::Reboot, "", &[])
            .expect("request")
        else {
            panic!()
        };
        let initiated = run(&mut actions, r, argv, Duration::from_secs(5)).await;
        assert_eq!(
            initiated.state,
            State::Running,
            "a reboot is not done when its command returns"
        );
        actions.finish(initiated).expect("finish");
        // The machine goes down here. It comes back with a new boot id:
        let after = Actions::load(defs(&dir.0.join("c")), &store, "boot-2").expect("reload");
        let r = after.get("r1").expect("kept");
        assert_eq!(r.state, State::Succeeded);
        assert_eq!(after.unacknowledged().len(), 1);

        let mut actions =
            Actions::load(defs(&dir.0.join("c")), &dir.0.join("store2"), "boot-1").expect("load");
        let Outcome::Start(..) = actions
            .request("r2", Kind::Reboot, "", &[])
            .expect("request")
        else {
            panic!()
        };
        let Outcome::Start(..) = actions
            .request("p2", Kind::Patch, "", &[])
            .expect("request")
        else {
            panic!()
        };
        // The agent restarts but the machine did not reboot.
        let same =
            Actions::load(defs(&dir.0.join("c")), &dir.0.join("store2"), "boot-1").expect("reload");
        assert_eq!(
            same.get("r2").map(|r| (r.state, r.error.as_str())),
            Some((State::Failed, "the agent restarted without a reboot"))
        );
        assert_eq!(same.get("p2").map(|r| r.state), Some(State::Failed));
    }

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
        let Outcome::Start(r, argv) = actions
            .request("p1", Kind::Patch, "", &[])
            .expect("request")
        else {
            panic!()
        };
        let done = run(&mut actions, r, argv, Duration::from_secs(10)).await;
        assert_eq!((done.state, done.exit_code), (State::Failed, Some(100)));
        assert!(
            done.output_tail.len() <= OUTPUT_TAIL_BYTES
                && done.output_tail.ends_with("E: broken\n"),
            "{:?}",
            &done.output_tail[done.output_tail.len().saturating_sub(40)..]
        );
        assert!(done.error.contains("exited with 100"));
        let Outcome::Start(r, _) = actions
            .request("p2", Kind::Patch, "", &[])
            .expect("request")
        else {
            panic!()
        };
        let argv = vec!["sleep".into(), "5".into()];
        let timeout = run(&mut actions, r, argv, Duration::from_millis(100)).await;
        assert!(
            timeout.state == State::Failed && timeout.error.contains("did not finish"),
            "{}",
            timeout.error
        );
        // Killed by a signal is not an exit code, whether the command or
        // its wrapper (which then writes no status file) was killed.
        for (id, script) in [("p3", "kill -TERM $$"), ("p4", "kill -TERM $PPID")] {
            let Outcome::Start(r, _) = actions.request(id, Kind::Patch, "", &[]).expect("request")
            else {
                panic!()
            };
            let argv = ["sh", "-c", script].map(String::from).to_vec();
            let killed = run(&mut actions, r, argv, Duration::from_secs(10)).await;
            assert_eq!(
                (killed.state, killed.exit_code, killed.error.as_str()),
                (State::Failed, None, "sh was killed by signal 15"),
                "{script}"
            );
        }
    }

    /// Starts patch `id` running `script` and lets go of it as an agent
    /// that is killed does: the process runs on and nobody waits for it.
    fn start_and_abandon(
        actions: &mut Actions,
        id: &str,
        script: &str,
        timeout: Duration,
    ) -> ActionProcess {
        let Outcome::Start(r, _) = actions.request(id, Kind::Patch, "", &[]).expect("request")
        else {
            panic!("not started")
        };
        let argv = ["sh", "-c", script].map(String::from);
        let Launched::Running(running) = actions.launch(r, &argv, &[], timeout) else {
            panic!("not launched")
        };
        let process = running.record().process.expect("process recorded");
        let on_disk: Record = serde_json::from_str(
            &std::fs::read_to_string(actions.dir.join(format!("{id}.json"))).expect("record"),
        )
        .expect("parse");
        assert_eq!(on_disk.process, Some(process), "the process is on disk");
        assert!(on_disk.deadline.is_some());
        drop(running);
        process
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..100 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
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
        assert_eq!(again.get("p1").map(|r| r.state), Some(State::Running));
        assert_eq!(again.pending_ids(), ["p1"], "announced in Hello");
        assert!(again.unacknowledged().is_empty(), "nothing final to send");
        let Outcome::Known(known) = again.request("p1", Kind::Patch, "", &[]).expect("again")
        else {
            panic!("asked again: not answered from the record")
        };
        assert_eq!(
            (known.state, known.process),
            (State::Running, Some(process))
        );
        let mut adopted = again.take_adopted();
        assert_eq!(adopted.len(), 1);
        let running = adopted.pop().expect("one");
        assert_eq!(running.record().id, "p1");

        let done = running.wait().await;
        assert_eq!(
            (done.state, done.exit_code, done.output_tail.as_str()),
            (State::Succeeded, Some(0), "done\n")
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
        let p1 = again.get("p1").expect("p1");
        assert_eq!(
            (
                p1.state,
                p1.exit_code,
                p1.error.as_str(),
                p1.output_tail.as_str()
            ),
            (State::Failed, Some(3), "sh exited with 3", "out\n")
        );
        let p2 = again.get("p2").expect("p2");
        assert_eq!(
            (p2.state, p2.exit_code, p2.output_tail.as_str()),
            (State::Succeeded, Some(0), "fine\n")
        );
        assert!(p2.finished_at.is_some());
        assert_eq!(again.unacknowledged().len(), 3);
        // Settled once, on disk: the next start reads the same.
        drop(again);
        let third = Actions::load(d.clone(), &store, "boot-1").expect("reload");
        assert_eq!(third.get("p1").map(|r| r.exit_code), Some(Some(3)));

        // A record from an older agent (no process, no deadline) still
        // loads; the machine rebooted under p3 (it started under another
        // boot id), whose status is in its exit file.
        let mut old: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(store.join("p1.json")).expect("read"))
                .expect("json");
        let fields = old.as_object_mut().expect("object");
        fields.remove("process");
        fields.remove("deadline");
        fields.insert("state".into(), "running".into());
        fields.insert("id".into(), "old1".into());
        fields.insert("boot_id".into(), "boot-2".into());
        std::fs::write(store.join("old1.json"), old.to_string()).expect("write");
        let mut p3: Record =
            serde_json::from_str(&std::fs::read_to_string(store.join("p3.json")).expect("read"))
                .expect("json");
        p3.state = State::Running;
        std::fs::write(
            store.join("p3.json"),
            serde_json::to_string(&p3).expect("json"),
        )
        .expect("write");
        let rebooted = Actions::load(d, &store, "boot-2").expect("reload");
        let old1 = rebooted.get("old1").expect("old record loads");
        assert_eq!(old1.state, State::Failed);
        assert!(
            old1.error
                .contains("before it recorded the action's process"),
            "{}",
            old1.error
        );
        let p3 = rebooted.get("p3").expect("p3");
        assert_eq!(
            (p3.state, p3.exit_code, p3.output_tail.as_str()),
            (State::Succeeded, Some(0), "before the crash\n")
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
        let p1 = again.get("p1").expect("p1");
        assert_eq!((p1.state, p1.exit_code), (State::Failed, None));
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
        let p1 = again.get("p1").expect("p1");
        assert_eq!(p1.state, State::Failed);
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
            (done.state, done.error.as_str()),
            (State::Failed, "sh did not finish within 1s and was killed")
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
        let mut record: Record =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        record.process = Some(ActionProcess {
            start_ticks: process.start_ticks + 1,
            ..process
        });
        std::fs::write(&path, serde_json::to_string(&record).expect("json")).expect("write");
        let mut again = Actions::load(d, &store, "boot-1").expect("reload");
        assert!(again.take_adopted().is_empty(), "adopted a stranger");
        assert_eq!(again.get("p1").map(|r| r.state), Some(State::Failed));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(process.is_running(), "a stranger was killed");
        process.kill_group();
    }
}
