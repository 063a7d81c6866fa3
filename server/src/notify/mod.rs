//! Webhooks (`[[notify]]` in server.toml): who is told when a campaign
//! starts, pauses, resumes, ends, or a node fails or waits out its gate.
//!
//! What to tell is decided from what the scheduler commits (`derive`,
//! pure: the campaign and its runs before a change and the change), so
//! nothing is told that the store does not hold, and every way a campaign
//! moves is covered without a call at each place that moves it. Delivery
//! (`deliver.rs`) is one task per webhook with a bounded queue: the
//! scheduler only offers (never waits), events reach each webhook in the
//! order they happened, a failed delivery is tried again with backoff, and
//! a full queue drops its oldest event, counted in the next body.

use std::collections::BTreeMap;

use rollcall_proto::timestamp::Timestamp;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::campaign::lifecycle::Step;
use crate::campaign::record::{Campaign, CampaignWrite, NodeRun, Phase};
use crate::campaign::spec::CampaignSpec;
use crate::config::NotifyConfig;

mod deliver;

pub use deliver::Webhook;

/// What a webhook can be told of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    CampaignStarted,
    CampaignPaused,
    CampaignResumed,
    /// Every node finished and none failed.
    CampaignCompleted,
    /// Every node finished, and some failed (within the error budget).
    CampaignFailed,
    /// An operator cancelled it.
    CampaignCancelled,
    NodeFailed,
    /// A node's before gate did not pass within its timeout (the campaign
    /// pauses), or its after gate (the node fails, still drained).
    GateTimedOut,
    /// New starts are held by a firing alert or a monitoring API that
    /// cannot be asked (`[alerts]`; audited `alert-hold`).
    AlertHold,
    /// The hold ended (audited `alert-clear`).
    AlertClear,
}

rollcall_proto::names!(Kind, "event" {
    CampaignStarted => "campaign_started",
    CampaignPaused => "campaign_paused",
    CampaignResumed => "campaign_resumed",
    CampaignCompleted => "campaign_completed",
    CampaignFailed => "campaign_failed",
    CampaignCancelled => "campaign_cancelled",
    NodeFailed => "node_failed",
    GateTimedOut => "gate_timed_out",
    AlertHold => "alert_hold",
    AlertClear => "alert_clear",
});

/// One event to tell: what a webhook's body is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: Kind,
    pub at: Timestamp,
    pub campaign: String,
    pub name: String,
    /// Empty for an event of the whole campaign.
    pub node: String,
    /// Why it paused, why the node failed, what its gate said last.
    pub reason: String,
}

/// The longest reason a body carries; the rest is cut (with `…`).
const MAX_REASON_CHARS: usize = 1_000;

/// The events a committed change makes: `campaign` and `runs` are the
/// campaign before it (`None` for a campaign the change starts).
pub fn derive(
    before: Option<(&Campaign, &BTreeMap<String, NodeRun>)>,
    spec: &CampaignSpec,
    write: &CampaignWrite,
    now: Timestamp,
) -> Vec<Notice> {
    let mut notices = Vec::new();
    let after = write
        .campaign
        .as_ref()
        .or(before.map(|(c, _)| c))
        .expect("a change of a campaign the scheduler holds, or one that starts it whole");
    let notice = |kind: Kind, node: &str, reason: &str| Notice {
        kind,
        at: now,
        campaign: after.id.clone(),
        name: after.name.clone(),
        node: node.to_owned(),
        reason: rollcall_proto::text::cut(reason, MAX_REASON_CHARS).into_owned(),
    };
    let runs_before = before.map(|(_, r)| r);
    for (_, run) in &write.nodes {
        let was = runs_before.and_then(|r| r.get(&run.node));
        let Some(was) = was else { continue };
        if let Some(reason) = gate_timed_out(was, run, spec, now) {
            notices.push(notice(Kind::GateTimedOut, &run.node, &reason));
        }
        if run.step == Step::Failed && was.step != Step::Failed {
            notices.push(notice(Kind::NodeFailed, &run.node, &run.note));
        }
    }
    // The alert gate's hold and its end are audit lines of their own,
    // written once each (not at every check).
    for entry in &write.audit {
        let kind = match entry.event.as_str() {
            "alert-hold" => Kind::AlertHold,
            "alert-clear" => Kind::AlertClear,
            _ => continue,
        };
        notices.push(notice(kind, "", &entry.detail));
    }
    let phase_before = before.map(|(c, _)| c.phase);
    if let Some(c) = &write.campaign
        && phase_before != Some(c.phase)
    {
        let kind = match (phase_before, c.phase) {
            (None, _) => Some(Kind::CampaignStarted),
            (_, Phase::Paused) => Some(Kind::CampaignPaused),
            (Some(Phase::Paused), Phase::Running) => Some(Kind::CampaignResumed),
            (_, Phase::Cancelled) => Some(Kind::CampaignCancelled),
            (_, Phase::Completed) => {
                let failed = runs_before
                    .into_iter()
                    .flat_map(|r| r.values())
                    .map(|r| {
                        write
                            .nodes
                            .iter()
                            .find(|(_, w)| w.node == r.node)
                            .map_or(r, |(_, w)| w)
                    })
                    .any(|r| r.step == Step::Failed);
                Some(if failed {
                    Kind::CampaignFailed
                } else {
                    Kind::CampaignCompleted
                })
            }
            (_, Phase::Running) => None,
        };
        if let Some(kind) = kind {
            notices.push(notice(kind, "", &c.reason));
        }
    }
    notices
}

/// A node that left a gate step after the gate's timeout ran out: a
/// before gate that sends it back to pending, an after gate that fails it.
fn gate_timed_out(
    was: &NodeRun,
    now_run: &NodeRun,
    spec: &CampaignSpec,
    now: Timestamp,
) -> Option<String> {
    if !matches!(was.step, Step::GateBefore | Step::GateAfter) || now_run.step == was.step {
        return None;
    }
    let limit = spec.step_timeout(was.role, was.step)?;
    let left_for_pending_or_failure =
        matches!(now_run.step, Step::Pending | Step::Failed) || now_run.failure.is_some();
    (left_for_pending_or_failure && now.since(was.since) > limit).then(|| {
        if now_run.note.is_empty() {
            format!("{} did not pass within {}s", was.step, limit.as_secs())
        } else {
            now_run.note.clone()
        }
    })
}

/// The JSON a webhook receives.
#[derive(Serialize)]
struct Body<'a> {
    event: &'static str,
    at: Timestamp,
    campaign: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    node: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    /// Events this webhook's full queue dropped since the last delivery.
    dropped: u64,
    /// Slack's incoming-webhook field, when the webhook asks for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// A notice as the body a webhook receives.
pub fn body(notice: &Notice, dropped: u64, slack: bool) -> Vec<u8> {
    let body = Body {
        event: notice.kind.as_str(),
        at: notice.at,
        campaign: &notice.campaign,
        name: &notice.name,
        node: &notice.node,
        reason: &notice.reason,
        dropped,
        text: slack.then(|| slack_text(notice, dropped)),
    };
    serde_json::to_vec(&body).expect("a body of strings and numbers serializes")
}

/// One line for people, escaped as Slack's message formatting asks
/// (`&`, `<` and `>`), so a node's output cannot make links or mentions.
fn slack_text(notice: &Notice, dropped: u64) -> String {
    let what = match notice.kind {
        Kind::CampaignStarted => "started".to_owned(),
        Kind::CampaignPaused => "paused".to_owned(),
        Kind::CampaignResumed => "resumed".to_owned(),
        Kind::CampaignCompleted => "completed".to_owned(),
        Kind::CampaignFailed => "completed with failed nodes".to_owned(),
        Kind::CampaignCancelled => "cancelled".to_owned(),
        Kind::NodeFailed => format!("node {} failed", notice.node),
        Kind::GateTimedOut => format!("gate of node {} timed out", notice.node),
        Kind::AlertHold => "holds new starts".to_owned(),
        Kind::AlertClear => "starts nodes again".to_owned(),
    };
    let mut text = format!(
        "rollcall: campaign {} ({}) {what}",
        notice.campaign, notice.name
    );
    if !notice.reason.is_empty() {
        text.push_str(": ");
        text.push_str(&notice.reason);
    }
    if dropped > 0 {
        text.push_str(&format!(" ({dropped} earlier events dropped)"));
    }
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Checks one `[[notify]]` once, when the config is read.
pub fn check(config: &NotifyConfig) -> Result<(), String> {
    crate::http::check_url("url", &config.url)?;
    for event in &config.events {
        event.parse::<Kind>().map_err(|e| format!("events: {e}"))?;
    }
    if config.timeout_secs == 0 || config.timeout_secs > 300 {
        return Err("timeout_secs must be between 1 and 300".into());
    }
    if config.retry_secs > 86_400 {
        return Err("retry_secs must be at most 86400".into());
    }
    if config.queue == 0 || config.queue > 100_000 {
        return Err("queue must be between 1 and 100000".into());
    }
    Ok(())
}

/// What the scheduler holds: every webhook's queue. Offering never waits.
#[derive(Clone, Default)]
pub struct Notifier {
    webhooks: Vec<Webhook>,
}

impl Notifier {
    /// Starts one delivery task per webhook; they end with `shutdown`.
    pub fn start(configs: &[NotifyConfig], shutdown: &CancellationToken) -> Result<Self, String> {
        let webhooks = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Webhook::start(i, c, shutdown.clone()).map_err(|e| format!("notify[{i}]: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { webhooks })
    }

    pub fn offer(&self, notices: &[Notice]) {
        for notice in notices {
            for webhook in &self.webhooks {
                webhook.offer(notice);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::api::Control;
    use crate::campaign::control::{self, Selection};
    use crate::campaign::fixtures::t;
    use crate::campaign::lifecycle::{Event, Facts};
    use rollcall_proto::model::Role;

    /// A running campaign over ctl1 and cmp1, as the scheduler holds it.
    fn world(spec: &CampaignSpec) -> (Campaign, BTreeMap<String, NodeRun>, CampaignWrite) {
        let selection = Selection {
            members: vec![
                ("ctl1".into(), Role::Controller),
                ("cmp1".into(), Role::Compute),
            ],
            skipped: Vec::new(),
        };
        let change = control::open("c1", spec, String::new(), "alice", &selection, t(0));
        let campaign = change.write.campaign.clone().expect("whole");
        let runs = change
            .write
            .nodes
            .iter()
            .map(|(_, r)| (r.node.clone(), r.clone()))
            .collect();
        (campaign, runs, change.write)
    }

    fn kinds(notices: &[Notice]) -> Vec<&'static str> {
        notices.iter().map(|n| n.kind.as_str()).collect()
    }

    #[test]
    fn a_start_a_pause_a_resume_and_a_cancel_are_each_told_once() {
        let spec = CampaignSpec::default();
        let (mut c, runs, start) = world(&spec);
        assert_eq!(
            kinds(&derive(None, &spec, &start, t(0))),
            ["campaign_started"]
        );
        let pause = control::steer(&c, &runs, Control::Pause, "bob", "night", t(5)).expect("pause");
        let told = derive(Some((&c, &runs)), &spec, &pause.write, t(5));
        assert_eq!(kinds(&told), ["campaign_paused"]);
        assert_eq!((told[0].campaign.as_str(), told[0].at), ("c1", t(5)));
        c = pause.write.campaign.clone().expect("campaign");
        let resume = control::steer(
            &c,
            &runs,
            Control::Resume {
                retry_failed: false,
            },
            "bob",
            "",
            t(6),
        )
        .expect("resume");
        assert_eq!(
            kinds(&derive(Some((&c, &runs)), &spec, &resume.write, t(6))),
            ["campaign_resumed"]
        );
        c = resume.write.campaign.clone().expect("campaign");
        let cancel = control::steer(&c, &runs, Control::Cancel, "bob", "", t(7)).expect("cancel");
        assert_eq!(
            kinds(&derive(Some((&c, &runs)), &spec, &cancel.write, t(7))),
            ["campaign_cancelled"]
        );
        // A change that moves no phase and fails no node tells nothing.
        let mut run = runs["cmp1"].clone();
        run.on(Event::Start, Facts::default(), t(8));
        let step = CampaignWrite {
            campaign: None,
            nodes: vec![("c1".into(), run)],
            actions: Vec::new(),
            audit: Vec::new(),
        };
        assert!(derive(Some((&c, &runs)), &spec, &step, t(8)).is_empty());
    }

    #[test]
    fn a_failed_node_is_told_with_its_reason_and_the_end_says_whether_any_failed() {
        let spec = CampaignSpec::default();
        let (c, mut runs, _) = world(&spec);
        let mut failed = runs["cmp1"].clone();
        failed.enter(Step::Patch, t(1));
        runs.insert("cmp1".into(), failed.clone());
        failed.on(Event::Failed, Facts::default(), t(2));
        failed.note = "patch failed (exit code 100)".into();
        let write = CampaignWrite {
            campaign: None,
            nodes: vec![("c1".into(), failed.clone())],
            actions: Vec::new(),
            audit: Vec::new(),
        };
        let told = derive(Some((&c, &runs)), &spec, &write, t(2));
        assert_eq!(kinds(&told), ["node_failed"]);
        assert_eq!(
            (told[0].node.as_str(), told[0].reason.as_str()),
            ("cmp1", "patch failed (exit code 100)")
        );
        runs.insert("cmp1".into(), failed);
        let end = control::conclude(&c, Phase::Completed, "every node finished", t(3));
        assert_eq!(
            kinds(&derive(Some((&c, &runs)), &spec, &end.write, t(3))),
            ["campaign_failed"]
        );
        runs.remove("cmp1");
        assert_eq!(
            kinds(&derive(Some((&c, &runs)), &spec, &end.write, t(3))),
            ["campaign_completed"]
        );
    }

    #[test]
    fn a_gate_left_after_its_timeout_is_told_and_one_left_in_time_is_not() {
        let spec = CampaignSpec::parse(
            "name = \"g\"\n[gates.controller]\nbefore = [\"galera-synced\"]\ntimeout_secs = 60\ntry_secs = 30\n",
        )
        .expect("spec");
        let (c, mut runs, _) = world(&spec);
        let mut at_gate = runs["ctl1"].clone();
        at_gate.enter(Step::GateBefore, t(10));
        runs.insert("ctl1".into(), at_gate.clone());
        let mut back = at_gate.clone();
        back.on(Event::GuardBlocked, Facts::default(), t(80));
        back.note = "before gate of ctl1 did not pass within 60s: wsrep_cluster_size is 2".into();
        let write = CampaignWrite {
            campaign: None,
            nodes: vec![("c1".into(), back.clone())],
            actions: Vec::new(),
            audit: Vec::new(),
        };
        let told = derive(Some((&c, &runs)), &spec, &write, t(80));
        assert_eq!(kinds(&told), ["gate_timed_out"]);
        assert!(
            told[0].reason.contains("wsrep_cluster_size is 2"),
            "{:?}",
            told[0]
        );
        // Sent back within its timeout (the campaign was paused): no word.
        assert!(derive(Some((&c, &runs)), &spec, &write, t(30)).is_empty());
    }

    #[test]
    fn an_alert_hold_and_its_end_are_told_from_their_audit_lines() {
        let spec = CampaignSpec::default();
        let (c, runs, _) = world(&spec);
        let line = |event: &str, detail: &str| {
            crate::campaign::record::AuditEntry::new(
                "c1",
                t(9),
                "scheduler",
                "",
                event,
                detail.into(),
            )
        };
        let write = CampaignWrite {
            campaign: None,
            nodes: Vec::new(),
            actions: Vec::new(),
            audit: vec![
                line(
                    "alert-hold",
                    "new starts held by alert GaleraDown{instance=\"ctl2\"} firing",
                ),
                line("step", "precheck"),
                line("alert-clear", "new starts go on"),
            ],
        };
        let told = derive(Some((&c, &runs)), &spec, &write, t(9));
        assert_eq!(kinds(&told), ["alert_hold", "alert_clear"]);
        assert!(told[0].reason.contains("GaleraDown"), "{:?}", told[0]);
    }

    #[test]
    fn bodies_are_json_with_a_slack_line_whose_markup_is_escaped() {
        let notice = Notice {
            kind: Kind::CampaignPaused,
            at: t(0),
            campaign: "c1".into(),
            name: "monthly".into(),
            node: String::new(),
            reason: "error budget: <@here> & more".into(),
        };
        let plain: serde_json::Value =
            serde_json::from_slice(&body(&notice, 0, false)).expect("json");
        assert_eq!(plain["event"], "campaign_paused");
        assert_eq!(plain["reason"], "error budget: <@here> & more");
        assert_eq!(plain["dropped"], 0);
        assert!(
            plain.get("text").is_none() && plain.get("node").is_none(),
            "{plain}"
        );
        let slack: serde_json::Value =
            serde_json::from_slice(&body(&notice, 3, true)).expect("json");
        assert_eq!(
            slack["text"],
            "rollcall: campaign c1 (monthly) paused: error budget: &lt;@here&gt; &amp; more (3 earlier events dropped)"
        );
        let long = Notice {
            reason: "x".repeat(5_000),
            ..notice
        };
        let cut: serde_json::Value = serde_json::from_slice(&body(
            &Notice {
                reason: rollcall_proto::text::cut(&long.reason, MAX_REASON_CHARS).into_owned(),
                ..long
            },
            0,
            false,
        ))
        .expect("json");
        assert_eq!(
            cut["reason"].as_str().expect("reason").chars().count(),
            MAX_REASON_CHARS + 1
        );
    }

    #[test]
    fn a_webhook_config_is_checked_in_one_line() {
        let mut config = NotifyConfig {
            url: "https://hooks.example.org/services/SECRET".into(),
            events: vec!["campaign_paused".into()],
            slack: true,
            timeout_secs: 5,
            retry_secs: 600,
            queue: 1000,
            ca: None,
        };
        check(&config).expect("valid");
        config.events.push("campaign_exploded".into());
        let e = check(&config).expect_err("unknown event");
        assert!(
            e.contains("campaign_exploded") && e.contains("campaign_started"),
            "{e}"
        );
        config.events.clear();
        config.url = "ftp://hooks.example.org/SECRET".into();
        let e = check(&config).expect_err("scheme");
        assert!(!e.contains("SECRET"), "{e}");
    }
}
