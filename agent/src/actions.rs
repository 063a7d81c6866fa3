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
//! - any other action found running at start failed: the agent stopped
//!   under it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_proto::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

use crate::collect::command;

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
                let rebooted = record.boot_id != boot_id;
                (record.state, record.error) = match (record.kind, rebooted) {
                    (Kind::Reboot, true) => (State::Succeeded, String::new()),
                    (Kind::Reboot, false) => (
                        State::Failed,
                        "the agent restarted without a reboot".to_owned(),
                    ),
                    (_, _) => (
                        State::Failed,
                        format!(
                            "the agent stopped while the action ran; it may still be running (output: {})",
                            dir.join(format!("{}.log", record.id)).display()
                        ),
                    ),
                };
                record.finished_at = Some(Timestamp::now());
                actions.save(&record)?;
            }
            actions.records.insert(record.id.clone(), record);
        }
        Ok(actions)
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
                let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
                let _ = std::fs::remove_file(self.log_path(id));
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

/// Runs a started action to its end, its output going to `log`. A reboot
/// command that succeeds leaves the action running: the machine is going
/// down.
pub async fn run(
    mut record: Record,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
    log: PathBuf,
) -> Record {
    let result = command::run_action(&argv, &env, timeout, &log, OUTPUT_TAIL_BYTES).await;
    record.finished_at = Some(Timestamp::now());
    match result {
        Ok(out) => {
            record.exit_code = out.code;
            record.output_tail = out.stdout;
            record.state = match (record.kind, out.code) {
                // The reboot is under way, not done: it is done when the
                // agent comes back under a new boot id (see `load`).
                (Kind::Reboot, Some(0)) => {
                    record.finished_at = None;
                    State::Running
                }
                (_, Some(0)) => State::Succeeded,
                _ => State::Failed,
            };
            if record.state == State::Failed {
                record.error = match out.code {
                    Some(c) => format!("{} exited with {c}", argv[0]),
                    None => format!("{} was killed by a signal", argv[0]),
                };
            }
        }
        Err(e) => {
            record.state = State::Failed;
            record.error = e;
        }
    }
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
        let done = run(
            record,
            argv,
            vec![],
            Duration::from_secs(10),
            dir.0.join("out.log"),
        )
        .await;
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
        let done = run(
            r,
            argv,
            vec![],
            Duration::from_secs(5),
            dir.0.join("out.log"),
        )
        .await;
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
        let initiated = run(
            r,
            argv,
            vec![],
            Duration::from_secs(5),
            dir.0.join("out.log"),
        )
        .await;
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
        let done = run(
            r,
            argv,
            vec![],
            Duration::from_secs(10),
            dir.0.join("out.log"),
        )
        .await;
        assert_eq!((done.state, done.exit_code), (State::Failed, Some(100)));
        assert!(
            done.output_tail.len() <= OUTPUT_TAIL_BYTES
                && done.output_tail.ends_with("E: broken\n"),
            "{:?}",
            &done.output_tail[done.output_tail.len().saturating_sub(40)..]
        );
        assert!(done.error.contains("exited with 100"));
        let timeout = run(
            done.clone(),
            vec!["sleep".into(), "5".into()],
            vec![],
            Duration::from_millis(100),
            dir.0.join("sleep.log"),
        )
        .await;
        assert!(
            timeout.state == State::Failed && timeout.error.contains("did not finish"),
            "{}",
            timeout.error
        );
    }
}
