//! Campaign types ↔ `rollcall.v1` campaign messages: the only place they
//! meet. Steps and phases travel as their kebab-case names, the same words
//! `--json` and the audit log use.

use rollcall_proto::convert::{timestamp_from_wire, timestamp_to_wire};
use rollcall_proto::v1;
use serde::de::DeserializeOwned;

use super::record::{AuditEntry, Campaign, ManualUndrain, NodeRun};
use super::runner::{CampaignEvent, CampaignView, Plan};

/// A kebab-case name back into its enum (`"wait-return"` → `Step::WaitReturn`).
fn from_name<T: DeserializeOwned>(field: &str, name: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| format!("field {field} has unknown value {name:?}"))
}

impl From<CampaignView> for v1::CampaignStatus {
    fn from(v: CampaignView) -> Self {
        let ended = v.ended;
        let c = v.campaign;
        v1::CampaignStatus {
            id: c.id,
            name: c.name,
            phase: c.phase.as_str().to_owned(),
            reason: c.reason,
            waiting: v.waiting,
            started_by: c.started_by,
            created_at: Some(timestamp_to_wire(c.created_at)),
            updated_at: Some(timestamp_to_wire(c.updated_at)),
            finished_at: c.finished_at.map(timestamp_to_wire),
            spec_toml: c.spec_toml,
            held: c.held,
            ended,
            nodes: v.nodes.into_iter().map(Into::into).collect(),
            nodes_by_step: v.nodes_by_step.into_iter().collect(),
            left_drained: v.left_drained,
        }
    }
}

impl From<NodeRun> for v1::NodeRun {
    fn from(r: NodeRun) -> Self {
        v1::NodeRun {
            node: r.node,
            role: r.role.as_str().to_owned(),
            step: r.step.as_str().to_owned(),
            since: Some(timestamp_to_wire(r.since)),
            started_at: r.started_at.map(timestamp_to_wire),
            finished_at: r.finished_at.map(timestamp_to_wire),
            attempt: r.attempt,
            note: r.note,
            action_id: r.action_id,
            action_node: r.action_node,
            failure_accepted: r.failure_accepted,
            left_drained: r.left_drained.unwrap_or_default(),
            undrain_action_id: r
                .undrain
                .as_ref()
                .map(|u| u.action_id.clone())
                .unwrap_or_default(),
            undrain_node: r
                .undrain
                .as_ref()
                .map(|u| u.action_node.clone())
                .unwrap_or_default(),
            undrain_by: r.undrain.as_ref().map(|u| u.by.clone()).unwrap_or_default(),
            undrain_asked_at: r.undrain.as_ref().map(|u| timestamp_to_wire(u.asked_at)),
            failure: r.failure.unwrap_or_default(),
        }
    }
}

/// What a client reads back: the status with its node rows.
pub fn view_from_wire(s: v1::CampaignStatus) -> Result<CampaignView, String> {
    let ts = |t: Option<prost_types::Timestamp>| t.as_ref().map(timestamp_from_wire);
    let mut nodes = Vec::new();
    for n in s.nodes {
        nodes.push(NodeRun {
            role: n.role.parse()?,
            step: from_name("step", &n.step)?,
            since: ts(n.since).unwrap_or_default(),
            started_at: ts(n.started_at),
            finished_at: ts(n.finished_at),
            attempt: n.attempt,
            note: n.note,
            boot_id_before: String::new(),
            containers: Vec::new(),
            action_node: n.action_node,
            action_id: n.action_id,
            asked_at: None,
            patched_at: None,
            failure_accepted: n.failure_accepted,
            left_drained: Some(n.left_drained).filter(|h| !h.is_empty()),
            failure: Some(n.failure).filter(|f| !f.is_empty()),
            undrain: (!n.undrain_action_id.is_empty()).then(|| ManualUndrain {
                action_id: n.undrain_action_id,
                action_node: n.undrain_node,
                by: n.undrain_by,
                asked_at: ts(n.undrain_asked_at).unwrap_or_default(),
                sent_at: None,
            }),
            // Internal: how many ids were used.
            manual_undrains: 0,
            node: n.node,
        });
    }
    Ok(CampaignView {
        campaign: Campaign {
            id: s.id,
            name: s.name,
            spec_toml: s.spec_toml,
            phase: from_name("phase", &s.phase)?,
            reason: s.reason,
            started_by: s.started_by,
            created_at: ts(s.created_at).unwrap_or_default(),
            updated_at: ts(s.updated_at).unwrap_or_default(),
            finished_at: ts(s.finished_at),
            held: s.held,
        },
        nodes,
        nodes_by_step: s.nodes_by_step.into_iter().collect(),
        waiting: s.waiting,
        ended: s.ended,
        left_drained: s.left_drained,
    })
}

impl From<Plan> for v1::PlanCampaignResponse {
    fn from(p: Plan) -> Self {
        v1::PlanCampaignResponse {
            name: p.name,
            waves: p
                .waves
                .into_iter()
                .map(|w| v1::Wave {
                    role: w.role.as_str().to_owned(),
                    nodes: w.nodes,
                })
                .collect(),
            skipped: p
                .skipped
                .into_iter()
                .map(|s| v1::SkippedNode {
                    node: s.node,
                    reason: s.reason,
                })
                .collect(),
        }
    }
}

pub fn event_to_wire(e: CampaignEvent) -> v1::CampaignEvent {
    v1::CampaignEvent {
        kind: "event".into(),
        campaign: e.campaign,
        at: Some(timestamp_to_wire(e.at)),
        node: e.node,
        step: e.step.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        phase: e.phase.as_str().to_owned(),
        message: e.message,
        ended: e.ended,
        status: None,
    }
}

impl From<AuditEntry> for v1::AuditEntry {
    fn from(a: AuditEntry) -> Self {
        v1::AuditEntry {
            at: Some(timestamp_to_wire(a.at)),
            campaign: a.campaign,
            actor: a.actor,
            node: a.node,
            event: a.event,
            detail: a.detail,
            exit_code: a.exit_code,
            output_tail: a.output_tail,
        }
    }
}

pub fn audit_from_wire(a: v1::AuditEntry) -> AuditEntry {
    AuditEntry {
        at: a.at.as_ref().map(timestamp_from_wire).unwrap_or_default(),
        campaign: a.campaign,
        actor: a.actor,
        node: a.node,
        event: a.event,
        detail: a.detail,
        exit_code: a.exit_code,
        output_tail: a.output_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::lifecycle::Step;
    use crate::campaign::schedule::Phase;
    use rollcall_proto::model::Role;
    use rollcall_proto::timestamp::Timestamp;

    #[test]
    fn a_status_survives_the_wire() {
        let now = Timestamp::from_unix_millis(1_795_000_000_000);
        let mut run = NodeRun::new("cmp1".into(), Role::Compute, now);
        run.enter(Step::WaitReturn, now);
        run.note = "waiting".into();
        let mut failed = NodeRun::new("cmp2".into(), Role::Compute, now);
        failed.enter(Step::Failed, now);
        failed.left_drained = Some("nova-undrain".into());
        failed.undrain = Some(ManualUndrain {
            action_id: "20261123-113000-1.cmp2.1.undrain-1".into(),
            action_node: "ctl1".into(),
            by: "operator:alice".into(),
            asked_at: now,
            sent_at: None,
        });
        let view = CampaignView {
            campaign: Campaign {
                id: "20261123-113000-1".into(),
                name: "november".into(),
                spec_toml: "name = \"november\"".into(),
                phase: Phase::Paused,
                reason: "paused by alice".into(),
                started_by: "alice".into(),
                created_at: now,
                updated_at: now,
                finished_at: None,
                held: true,
            },
            nodes: vec![run, failed],
            nodes_by_step: [("wait-return".to_owned(), 1)].into(),
            waiting: "campaign is paused".into(),
            ended: false,
            left_drained: vec!["cmp2".into()],
        };
        let back = view_from_wire(view.clone().into()).expect("back");
        assert_eq!(back, view);
        assert!(from_name::<Step>("step", "sideways").is_err());
    }
}
