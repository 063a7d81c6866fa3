//! What the server keeps about a campaign: the campaign itself, one run
//! per node, and the audit log. These are written to the store before the
//! scheduler acts on them, and read back whole after a restart.

use rollcall_proto::model::Role;
use rollcall_proto::timestamp::{Civil, Timestamp};
use serde::{Deserialize, Serialize};

use super::blast::Blast;
use super::lifecycle::{Event, Facts, Step};
use super::silence::Lease;

/// A campaign as started. The spec is kept as the TOML it was given in, so
/// what the operator wrote is what `status` shows and what a restarted
/// server parses again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub spec_toml: String,
    pub phase: Phase,
    /// Why it is paused, cancelled or waiting; empty while it just runs.
    pub reason: String,
    /// The operator (certificate name) who started it.
    pub started_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// An operator paused it: no step moves anywhere. (A pause for the
    /// error budget only stops new nodes; nodes in flight finish.)
    #[serde(default)]
    pub held: bool,
    /// The blast-radius guard's record (`blast.rs`): what was bad at
    /// start, and the impacts found. Left out of JSON while empty, so
    /// older stored campaigns read as before.
    #[serde(default, skip_serializing_if = "Blast::is_empty")]
    pub blast: Blast,
}

impl Campaign {
    /// Running or paused: it still holds its nodes.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::Paused)
    }
}

/// `20261123-113000-3`: when it started (UTC, to the second) and its
/// number on this server. Sorts as text in the order campaigns started.
pub fn campaign_id(started: Timestamp, n: usize) -> String {
    let Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        ..
    } = started.civil();
    format!("{year:04}{month:02}{day:02}-{hour:02}{minute:02}{second:02}-{n}")
}

/// Where a campaign stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Running,
    Paused,
    /// No new node starts; nodes in flight finish their way.
    Cancelled,
    Completed,
}

rollcall_proto::names!(Phase, "phase" {
    Running => "running", Paused => "paused", Cancelled => "cancelled", Completed => "completed",
});

/// One node's way through one campaign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRun {
    pub node: String,
    pub role: Role,
    pub step: Step,
    /// When the node entered `step` (timeouts count from here).
    pub since: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// Bumped when a failed node is retried, so its actions get new ids.
    pub attempt: u32,
    /// Why it is skipped, failed, or what it waits for.
    pub note: String,
    /// The node's boot id at precheck; a different one means it rebooted.
    pub boot_id_before: String,
    /// Containers that ran at precheck: postcheck wants them back, healthy.
    pub containers: Vec<String>,
    /// The node that runs the current step's action (itself, or the node a
    /// drain hook is delegated to).
    pub action_node: String,
    /// The action of the current step, once it was asked for.
    pub action_id: String,
    /// When `action_id` was last asked for: a request the agent never
    /// answered is asked again a while after (see `drive::RESEND_AFTER`).
    #[serde(default)]
    pub asked_at: Option<Timestamp>,
    /// When the patch finished (agent clock): later reports tell whether
    /// it asks for a reboot.
    pub patched_at: Option<Timestamp>,
    /// An operator resumed the campaign past this failure: the error budget
    /// no longer counts it.
    #[serde(default)]
    pub failure_accepted: bool,
    /// The node failed after its drain hook was asked, and stays drained:
    /// the name of the undrain hook that would undo it. Cleared when that
    /// hook succeeds (by itself with `undrain_on_failure`, or through
    /// `campaign undrain`).
    #[serde(default)]
    pub left_drained: Option<String>,
    /// Why the node failed, while its undrain hook runs before it ends
    /// failed (`undrain_on_failure`): kept apart from `note`, which says
    /// what the undrain waits for.
    #[serde(default)]
    pub failure: Option<String>,
    /// The undrain an operator asked for, while it runs.
    #[serde(default)]
    pub undrain: Option<ManualUndrain>,
    /// How many undrains operators asked for: each gets its own action id
    /// (`…ATTEMPT.undrain-N`), as an agent never runs an id twice.
    #[serde(default)]
    pub manual_undrains: u32,
    /// Where the current gate step stands (`gate-before`, `gate-after`).
    #[serde(default)]
    pub gate: Option<GateProgress>,
    /// Gate tries asked in this attempt, of every gate step and every time
    /// the node entered one: try `n` asks under `…STEP-n`, so no try reuses
    /// an id an agent already ran (a before gate that held the campaign is
    /// entered again after the resume).
    #[serde(default)]
    pub gate_tries: u32,
    /// The Alertmanager silence made for the node while it is under
    /// maintenance (`silence.rs`); left out of JSON while none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<Lease>,
}

/// A gate step's progress: its hooks run in order, each tried until it
/// passes; a failed try is tried again after the role's `interval_secs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateProgress {
    /// The hook being tried (an index into the role's gate); the gate
    /// passed when it reaches their number.
    pub hook: usize,
    /// Tries started in this step, of every hook.
    pub tries: u32,
    /// No new try before then (a try failed at that time less the interval).
    pub next_at: Option<Timestamp>,
    /// Why the last failed try failed.
    pub last: String,
    /// The last failed try's exit code and output print: a try that fails
    /// the same way is audited without its output again.
    #[serde(default)]
    pub last_output: Option<(Option<i32>, u64)>,
}

/// An undrain an operator asked for (`campaign undrain ID NODE`) of a node
/// that failed and stays drained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualUndrain {
    pub action_id: String,
    /// The node that runs the hook (the failed node, or its delegate).
    pub action_node: String,
    /// Who asked (`operator:NAME`).
    pub by: String,
    /// When it was asked for: `undrain_secs` counts from here.
    pub asked_at: Timestamp,
    /// When the request was last sent: one the agent never answered is
    /// sent again (see `drive::RESEND_AFTER`).
    pub sent_at: Option<Timestamp>,
}

impl NodeRun {
    pub fn new(node: String, role: Role, now: Timestamp) -> Self {
        NodeRun {
            node,
            role,
            step: Step::Pending,
            since: now,
            started_at: None,
            finished_at: None,
            attempt: 1,
            note: String::new(),
            boot_id_before: String::new(),
            containers: Vec::new(),
            action_node: String::new(),
            action_id: String::new(),
            asked_at: None,
            patched_at: None,
            failure_accepted: false,
            left_drained: None,
            failure: None,
            undrain: None,
            manual_undrains: 0,
            gate: None,
            gate_tries: 0,
            silence: None,
        }
    }

    /// Moves the run along the step graph on `event` (see `Step::on`) and
    /// enters the step it lands in; returns that step. Every move a campaign
    /// makes goes through here. An event that does not apply changes nothing.
    pub fn on(&mut self, event: Event, facts: Facts, now: Timestamp) -> Step {
        let next = self.step.on(event, facts);
        if next == self.step {
            return next;
        }
        match event {
            // Nothing was done to the node: it waits as if never started.
            Event::GuardBlocked => self.started_at = None,
            // A new attempt: its actions get new ids.
            Event::Retry => {
                self.attempt += 1;
                self.finished_at = None;
                self.note.clear();
            }
            _ => {}
        }
        self.enter(next, now);
        next
    }

    /// Enters `step` now, forgetting the previous step's action. A run in
    /// a campaign moves with [`NodeRun::on`]; this builds a run that stands
    /// in a given step (as stored, or in tests).
    pub fn enter(&mut self, step: Step, now: Timestamp) {
        self.step = step;
        self.since = now;
        self.action_id.clear();
        self.action_node.clear();
        self.asked_at = None;
        self.gate = None;
        if step == Step::Precheck {
            self.started_at = Some(now);
        }
        if step.is_terminal() {
            self.finished_at = Some(now);
        }
    }

    /// The id of this node's action for `step`: stable, so a request sent
    /// again after any restart is recognised by the agent and never rerun.
    pub fn action_id_for(&self, campaign: &str, step: Step) -> String {
        format!("{campaign}.{}.{}.{step}", self.node, self.attempt)
    }

    /// The id of the attempt's `n`th gate try (`gate_tries`), in the
    /// current gate step: never the same as another try's, another step's
    /// or another attempt's.
    pub fn gate_try_id(&self, campaign: &str, n: u32) -> String {
        format!("{}-{n}", self.action_id_for(campaign, self.step))
    }

    /// The id of the `n`th undrain an operator asked for: never the
    /// undrain step's own id (`…undrain`), never an earlier one's.
    pub fn manual_undrain_id(&self, campaign: &str, n: u32) -> String {
        format!("{campaign}.{}.{}.undrain-{n}", self.node, self.attempt)
    }
}

/// One line of a campaign's audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub campaign: String,
    /// `operator:NAME` for what an operator did, `scheduler` otherwise.
    pub actor: String,
    /// Empty for campaign-wide entries.
    pub node: String,
    /// What happened, e.g. `started`, `step`, `action`, `paused`.
    pub event: String,
    pub detail: String,
    pub exit_code: Option<i32>,
    pub output_tail: String,
}

impl AuditEntry {
    /// A line without an action's outcome.
    pub fn new(
        campaign: &str,
        at: Timestamp,
        actor: &str,
        node: &str,
        event: &str,
        detail: String,
    ) -> Self {
        AuditEntry {
            at,
            campaign: campaign.to_owned(),
            actor: actor.to_owned(),
            node: node.to_owned(),
            event: event.to_owned(),
            detail,
            exit_code: None,
            output_tail: String::new(),
        }
    }
}

/// One atomic change: written in one transaction, before it is acted on.
#[derive(Clone, Debug, Default)]
pub struct CampaignWrite {
    pub campaign: Option<Campaign>,
    pub nodes: Vec<(String, NodeRun)>,
    /// Actions this change asks for, as issued (`accepted`): stored with
    /// the run that names them, so a request is on record before it is
    /// sent, and only its node may answer it, across restarts too.
    pub actions: Vec<rollcall_proto::model::ActionResult>,
    pub audit: Vec<AuditEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_campaign_id_is_its_start_to_the_second_and_its_number() {
        let at = Timestamp::parse_rfc3339("2026-11-23T08:05:38.999Z").expect("time");
        assert_eq!(campaign_id(at, 3), "20261123-080538-3");
        let at = Timestamp::parse_rfc3339("2027-01-02T00:00:00Z").expect("time");
        assert_eq!(campaign_id(at, 12), "20270102-000000-12");
    }

    #[test]
    fn phase_names_read_back_and_are_the_stored_names() {
        let names = ["running", "paused", "cancelled", "completed"];
        for (phase, name) in Phase::ALL.into_iter().zip(names) {
            assert_eq!(phase.as_str(), name);
            assert_eq!(name.parse::<Phase>(), Ok(phase));
            assert_eq!(
                serde_json::to_value(phase).expect("json"),
                serde_json::Value::String(phase.as_str().to_owned()),
                "the store and --json keep today's word for {phase:?}"
            );
        }
        let e = "Running".parse::<Phase>().expect_err("exact");
        assert_eq!(
            e.to_string(),
            r#"unknown phase "Running": use running, paused, cancelled or completed"#
        );
    }

    #[test]
    fn a_campaign_stored_before_the_blast_radius_guard_reads_back() {
        let old = r#"{"id":"c1","name":"n","spec_toml":"","phase":"running","reason":"",
            "started_by":"alice","created_at":"2026-11-23T08:05:38Z",
            "updated_at":"2026-11-23T08:05:38Z","finished_at":null,"held":false}"#;
        let c: Campaign = serde_json::from_str(old).expect("reads");
        assert!(c.blast.is_empty());
        let again = serde_json::to_string(&c).expect("json");
        assert!(
            !again.contains("blast"),
            "an empty record adds nothing: {again}"
        );
    }

    #[test]
    fn an_action_id_names_campaign_node_attempt_and_step() {
        let mut run = NodeRun::new("cmp1".into(), Role::Compute, Timestamp::default());
        run.attempt = 2;
        assert_eq!(
            run.action_id_for("20261123-080538-1", Step::WaitReturn),
            "20261123-080538-1.cmp1.2.wait-return"
        );
    }
}
