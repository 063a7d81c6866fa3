//! One action as the agent keeps it: `ID.json` in the state directory.
//!
//! A record is the request (kind, hook name, arguments), what the server is
//! told (the model's [`ActionResult`], its keys flattened into the record's
//! own) and what finds the action's process again after a restart. An
//! upgraded agent loads what the one before it wrote, so keys are never
//! renamed; the tests hold a record in every earlier format.

use rollcall_proto::model::{ActionKind, ActionRequest, ActionResult, ActionState};
use rollcall_proto::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

use crate::collect::command::ActionProcess;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub kind: ActionKind,
    /// The hook's name; empty for patch and reboot.
    pub name: String,
    pub args: Vec<String>,
    /// What the server is told: id, state, exit code, output's tail, error,
    /// times and the boot id when it started (a reboot ends under another).
    /// `node` stays empty: the server knows whose it is.
    #[serde(flatten)]
    pub result: ActionResult,
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

impl Record {
    /// A request, running from now in the boot `boot_id` (empty: unknown).
    pub(super) fn started(req: &ActionRequest, boot_id: &str) -> Self {
        Self {
            kind: req.kind,
            name: req.name.clone(),
            args: req.args.clone(),
            result: ActionResult {
                id: req.id.clone(),
                node: String::new(),
                state: ActionState::Running,
                exit_code: None,
                output_tail: String::new(),
                error: String::new(),
                started_at: Some(Timestamp::now()),
                finished_at: None,
                boot_id: boot_id.to_owned(),
            },
            process: None,
            deadline: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.result.id
    }

    pub fn state(&self) -> ActionState {
        self.result.state
    }

    /// When it started. Every record has a start: the request sets it, and
    /// records of older agents held it as a required key.
    pub fn started_at(&self) -> Timestamp {
        self.result.started_at.unwrap_or_default()
    }

    /// Ends it now, as `state` for `error` (empty when it succeeded).
    pub(super) fn end(&mut self, state: ActionState, error: String) {
        self.result.state = state;
        self.result.error = error;
        self.result.finished_at = Some(Timestamp::now());
    }

    pub(super) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a record serializes")
    }

    pub(super) fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{Actions, Outcome};
    use super::*;

    /// A record exactly as agents before the model's types wrote it: an
    /// agent upgraded while it holds records must still load them.
    const TODAY: &str = r#"{
  "id": "c1.cmp1.1.patch",
  "kind": "patch",
  "name": "",
  "args": [],
  "state": "failed",
  "exit_code": 100,
  "output_tail": "E: broken\n",
  "error": "apt-get exited with 100",
  "started_at": "2026-11-23T08:05:38.123Z",
  "finished_at": "2026-11-23T08:06:01.000Z",
  "boot_id": "6f1c0a9e",
  "process": {
    "pid": 4242,
    "start_ticks": 123456
  },
  "deadline": "2026-11-23T09:05:38.123Z"
}"#;

    /// And as agents before they recorded the process wrote it.
    const OLDER: &str = r#"{
  "id": "c1.cmp1.1.drain-1",
  "kind": "hook",
  "name": "nova-drain",
  "args": ["cmp1"],
  "state": "succeeded",
  "exit_code": 0,
  "output_tail": "drained\n",
  "error": "",
  "started_at": "2026-11-23T08:00:00.000Z",
  "finished_at": "2026-11-23T08:00:05.000Z",
  "boot_id": "6f1c0a9e"
}"#;

    fn at(text: &str) -> Option<Timestamp> {
        Timestamp::parse_rfc3339(text)
    }

    #[test]
    fn records_in_every_earlier_format_read_as_they_were_written() {
        let today = Record::from_json(TODAY).expect("today's format");
        let expected = Record {
            kind: ActionKind::Patch,
            name: String::new(),
            args: vec![],
            result: ActionResult {
                id: "c1.cmp1.1.patch".into(),
                node: String::new(),
                state: ActionState::Failed,
                exit_code: Some(100),
                output_tail: "E: broken\n".into(),
                error: "apt-get exited with 100".into(),
                started_at: at("2026-11-23T08:05:38.123Z"),
                finished_at: at("2026-11-23T08:06:01.000Z"),
                boot_id: "6f1c0a9e".into(),
            },
            process: Some(ActionProcess {
                pid: 4242,
                start_ticks: 123_456,
            }),
            deadline: at("2026-11-23T09:05:38.123Z"),
        };
        assert_eq!(today, expected);
        let older = Record::from_json(OLDER).expect("older format");
        assert_eq!(
            (
                older.kind,
                older.name.as_str(),
                older.state(),
                older.process
            ),
            (ActionKind::Hook, "nova-drain", ActionState::Succeeded, None)
        );
        assert_eq!(older.args, ["cmp1"]);
    }

    #[test]
    fn what_is_written_keeps_every_key_an_earlier_agent_requires() {
        let record = Record::from_json(TODAY).expect("parse");
        let written: serde_json::Value =
            serde_json::from_str(&record.to_json()).expect("written JSON");
        let old: serde_json::Value = serde_json::from_str(TODAY).expect("JSON");
        for (key, value) in old.as_object().expect("object") {
            assert_eq!(written.get(key), Some(value), "{key}");
        }
        assert_eq!(Record::from_json(&record.to_json()).expect("back"), record);
    }

    #[test]
    fn an_agent_upgraded_while_it_holds_records_loads_and_answers_from_them() {
        let dir = Dir::new("upgrade");
        let store = dir.0.join("store");
        std::fs::create_dir_all(&store).expect("dir");
        std::fs::write(store.join("c1.cmp1.1.patch.json"), TODAY).expect("write");
        std::fs::write(store.join("c1.cmp1.1.drain-1.json"), OLDER).expect("write");
        let counter = dir.0.join("count");
        let mut actions = Actions::load(defs(&counter), &store, "6f1c0a9e").expect("load");
        assert_eq!(
            actions.pending_ids(),
            ["c1.cmp1.1.drain-1", "c1.cmp1.1.patch"]
        );
        assert_eq!(actions.unacknowledged().len(), 2, "both to report");
        let Outcome::Known(known) = ask(&mut actions, "c1.cmp1.1.patch", ActionKind::Patch) else {
            panic!("asked again: not answered from the record")
        };
        assert_eq!(known, Record::from_json(TODAY).expect("parse"));
        assert_eq!(lines(&counter), 0, "nothing ran again");
    }
}
