//! Campaign types ↔ `rollcall.v1` campaign messages: the only place they
//! meet. Roles, steps and phases travel as proto enums (grpcurl shows their
//! names); wire → domain is fallible, as an unknown value is an error.

use rollcall_proto::convert::{
    ConvertError, required_role, timestamp_from_wire, timestamp_to_wire,
};
use rollcall_proto::model::Role;
use rollcall_proto::v1;

use super::api::{CampaignEvent, CampaignView, Plan, Skip, Wave};
use super::blast::Impact;
use super::lifecycle::Step;
use super::record::Phase;
use super::record::{AuditEntry, Campaign, ManualUndrain, NodeRun};
use super::silence::Lease;

impl From<Step> for v1::Step {
    fn from(s: Step) -> Self {
        match s {
            Step::Pending => v1::Step::Pending,
            Step::Precheck => v1::Step::Precheck,
            Step::Drain => v1::Step::Drain,
            Step::Patch => v1::Step::Patch,
            Step::Reboot => v1::Step::Reboot,
            Step::WaitReturn => v1::Step::WaitReturn,
            Step::Postcheck => v1::Step::Postcheck,
            Step::Undrain => v1::Step::Undrain,
            Step::Done => v1::Step::Done,
            Step::Failed => v1::Step::Failed,
            Step::Skipped => v1::Step::Skipped,
            Step::GateBefore => v1::Step::GateBefore,
            Step::GateAfter => v1::Step::GateAfter,
        }
    }
}

/// `STEP_UNSPECIFIED` is `None`; a value this build does not know is an error.
fn step_from_wire(field: &'static str, raw: i32) -> Result<Option<Step>, ConvertError> {
    let step = match v1::Step::try_from(raw) {
        Ok(v1::Step::Unspecified) => None,
        Ok(v1::Step::Pending) => Some(Step::Pending),
        Ok(v1::Step::Precheck) => Some(Step::Precheck),
        Ok(v1::Step::Drain) => Some(Step::Drain),
        Ok(v1::Step::Patch) => Some(Step::Patch),
        Ok(v1::Step::Reboot) => Some(Step::Reboot),
        Ok(v1::Step::WaitReturn) => Some(Step::WaitReturn),
        Ok(v1::Step::Postcheck) => Some(Step::Postcheck),
        Ok(v1::Step::Undrain) => Some(Step::Undrain),
        Ok(v1::Step::Done) => Some(Step::Done),
        Ok(v1::Step::Failed) => Some(Step::Failed),
        Ok(v1::Step::Skipped) => Some(Step::Skipped),
        Ok(v1::Step::GateBefore) => Some(Step::GateBefore),
        Ok(v1::Step::GateAfter) => Some(Step::GateAfter),
        Err(_) => return Err(ConvertError::Invalid { field, value: raw }),
    };
    Ok(step)
}

impl From<Phase> for v1::Phase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Running => v1::Phase::Running,
            Phase::Paused => v1::Phase::Paused,
            Phase::Cancelled => v1::Phase::Cancelled,
            Phase::Completed => v1::Phase::Completed,
        }
    }
}

/// Every message that carries a phase has one: `PHASE_UNSPECIFIED` is an error.
fn phase_from_wire(field: &'static str, raw: i32) -> Result<Phase, ConvertError> {
    match v1::Phase::try_from(raw) {
        Ok(v1::Phase::Running) => Ok(Phase::Running),
        Ok(v1::Phase::Paused) => Ok(Phase::Paused),
        Ok(v1::Phase::Cancelled) => Ok(Phase::Cancelled),
        Ok(v1::Phase::Completed) => Ok(Phase::Completed),
        Ok(v1::Phase::Unspecified) | Err(_) => Err(ConvertError::Invalid { field, value: raw }),
    }
}

fn role_to_wire(r: Role) -> i32 {
    v1::Role::from(r).into()
}

impl From<CampaignView> for v1::CampaignStatus {
    fn from(v: CampaignView) -> Self {
        let ended = v.ended;
        let c = v.campaign;
        v1::CampaignStatus {
            id: c.id,
            name: c.name,
            phase: v1::Phase::from(c.phase).into(),
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
            impacts: v.impacts.into_iter().map(Into::into).collect(),
            alert_hold: v.alert_hold,
        }
    }
}

impl From<Impact> for v1::BlastImpact {
    fn from(i: Impact) -> Self {
        v1::BlastImpact {
            node: i.node,
            container: i.container,
            what: i.what,
            began_at: Some(timestamp_to_wire(i.began_at)),
            at: Some(timestamp_to_wire(i.at)),
            during: i.during,
            accepted: i.accepted,
        }
    }
}

impl From<NodeRun> for v1::NodeRun {
    fn from(r: NodeRun) -> Self {
        v1::NodeRun {
            node: r.node,
            role: role_to_wire(r.role),
            step: v1::Step::from(r.step).into(),
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
            silence_id: r.silence.as_ref().map(|l| l.id.clone()).unwrap_or_default(),
            silence_until: r.silence.as_ref().map(|l| timestamp_to_wire(l.until)),
        }
    }
}

/// What a client reads back: the status with its node rows.
pub fn view_from_wire(s: v1::CampaignStatus) -> Result<CampaignView, ConvertError> {
    let ts = |t: Option<prost_types::Timestamp>| t.as_ref().map(timestamp_from_wire);
    let mut nodes = Vec::new();
    for n in s.nodes {
        nodes.push(NodeRun {
            role: required_role("node_run.role", n.role)?,
            step: step_from_wire("node_run.step", n.step)?
                .ok_or(ConvertError::Missing("node_run.step"))?,
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
            // Internal: the gate's progress is in `note`.
            gate: None,
            gate_tries: 0,
            silence: (!n.silence_id.is_empty()).then(|| Lease {
                id: n.silence_id,
                // Internal: only its id and end are shown.
                from: rollcall_proto::timestamp::Timestamp::default(),
                until: ts(n.silence_until).unwrap_or_default(),
            }),
            node: n.node,
        });
    }
    Ok(CampaignView {
        campaign: Campaign {
            id: s.id,
            name: s.name,
            spec_toml: s.spec_toml,
            phase: phase_from_wire("campaign_status.phase", s.phase)?,
            reason: s.reason,
            started_by: s.started_by,
            created_at: ts(s.created_at).unwrap_or_default(),
            updated_at: ts(s.updated_at).unwrap_or_default(),
            finished_at: ts(s.finished_at),
            held: s.held,
            blast: Default::default(),
        },
        nodes,
        nodes_by_step: s.nodes_by_step.into_iter().collect(),
        waiting: s.waiting,
        ended: s.ended,
        left_drained: s.left_drained,
        alert_hold: s.alert_hold,
        impacts: s
            .impacts
            .into_iter()
            .map(|i| Impact {
                began_at: ts(i.began_at).unwrap_or_default(),
                at: ts(i.at).unwrap_or_default(),
                node: i.node,
                container: i.container,
                what: i.what,
                during: i.during,
                accepted: i.accepted,
            })
            .collect(),
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
                    role: role_to_wire(w.role),
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

/// What a client reads back: the plan.
pub fn plan_from_wire(p: v1::PlanCampaignResponse) -> Result<Plan, ConvertError> {
    let mut waves = Vec::with_capacity(p.waves.len());
    for w in p.waves {
        waves.push(Wave {
            role: required_role("wave.role", w.role)?,
            nodes: w.nodes,
        });
    }
    Ok(Plan {
        name: p.name,
        waves,
        skipped: p
            .skipped
            .into_iter()
            .map(|s| Skip {
                node: s.node,
                reason: s.reason,
            })
            .collect(),
    })
}

/// The first message of a watch: the campaign as it is.
pub fn snapshot_to_wire(view: CampaignView) -> v1::CampaignEvent {
    v1::CampaignEvent {
        kind: v1::CampaignEventKind::Snapshot.into(),
        campaign: view.campaign.id.clone(),
        phase: v1::Phase::from(view.campaign.phase).into(),
        ended: view.ended,
        status: Some(view.into()),
        ..Default::default()
    }
}

pub fn event_to_wire(e: CampaignEvent) -> v1::CampaignEvent {
    v1::CampaignEvent {
        kind: v1::CampaignEventKind::Event.into(),
        campaign: e.campaign,
        at: Some(timestamp_to_wire(e.at)),
        node: e.node,
        step: e.step.map_or(v1::Step::Unspecified, v1::Step::from).into(),
        phase: v1::Phase::from(e.phase).into(),
        message: e.message,
        ended: e.ended,
        status: None,
    }
}

/// One message of a campaign watch, as a client reads it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    /// The campaign as it was when the watch began.
    Snapshot(Box<CampaignView>),
    Event(CampaignEvent),
}

pub fn watched_from_wire(e: v1::CampaignEvent) -> Result<Watched, ConvertError> {
    let kind = v1::CampaignEventKind::try_from(e.kind);
    match kind {
        Ok(v1::CampaignEventKind::Snapshot) => {
            let status = e
                .status
                .ok_or(ConvertError::Missing("campaign_event.status"))?;
            Ok(Watched::Snapshot(Box::new(view_from_wire(status)?)))
        }
        Ok(v1::CampaignEventKind::Event) => Ok(Watched::Event(CampaignEvent {
            at: e
                .at
                .as_ref()
                .map(timestamp_from_wire)
                .ok_or(ConvertError::Missing("campaign_event.at"))?,
            step: step_from_wire("campaign_event.step", e.step)?,
            phase: phase_from_wire("campaign_event.phase", e.phase)?,
            campaign: e.campaign,
            node: e.node,
            message: e.message,
            ended: e.ended,
        })),
        Ok(v1::CampaignEventKind::Unspecified) | Err(_) => Err(ConvertError::Invalid {
            field: "campaign_event.kind",
            value: e.kind,
        }),
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
    use rollcall_proto::timestamp::Timestamp;

    #[test]
    fn a_status_survives_the_wire() {
        let now = Timestamp::from_unix_millis(1_795_000_000_000);
        let mut run = NodeRun::new("cmp1".into(), Role::Compute, now);
        run.enter(Step::WaitReturn, now);
        run.note = "waiting".into();
        run.silence = Some(Lease {
            id: "7d5f1d4e-0a6b-4c3e-9f5e-2b1f0e8c9a11".into(),
            from: Timestamp::default(), // The server's own: not on the wire.
            until: now,
        });
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
                blast: Default::default(),
            },
            nodes: vec![run, failed],
            nodes_by_step: [("wait-return".to_owned(), 1)].into(),
            waiting: "campaign is paused".into(),
            ended: false,
            alert_hold: "held by alert NodeDown{instance=\"cmp9:9100\"} firing since 11:20:00"
                .into(),
            left_drained: vec!["cmp2".into()],
            impacts: vec![Impact {
                node: "cmp9".into(),
                container: "nova_compute".into(),
                what: "unhealthy".into(),
                began_at: now,
                at: now,
                during: "while cmp1 was in wait-return".into(),
                accepted: true,
            }],
        };
        let back = view_from_wire(view.clone().into()).expect("back");
        assert_eq!(back, view);

        let mut status = v1::CampaignStatus::from(view.clone());
        status.nodes[0].step = 99;
        assert_eq!(
            view_from_wire(status),
            Err(ConvertError::Invalid {
                field: "node_run.step",
                value: 99
            })
        );
        let mut status = v1::CampaignStatus::from(view.clone());
        status.phase = v1::Phase::Unspecified.into();
        assert!(view_from_wire(status).is_err(), "a status has a phase");

        let snapshot = watched_from_wire(snapshot_to_wire(view.clone())).expect("snapshot");
        assert_eq!(snapshot, Watched::Snapshot(Box::new(view)));
    }

    #[test]
    fn every_step_and_phase_survives_the_wire() {
        for step in Step::ALL {
            let raw = i32::from(v1::Step::from(step));
            assert_eq!(step_from_wire("step", raw), Ok(Some(step)));
        }
        for phase in Phase::ALL {
            let raw = i32::from(v1::Phase::from(phase));
            assert_eq!(phase_from_wire("phase", raw), Ok(phase));
        }
        assert_eq!(step_from_wire("step", 0), Ok(None));
    }

    #[test]
    fn events_and_plans_survive_the_wire() {
        let at = Timestamp::from_unix_millis(1_795_000_000_000);
        for step in [Some(Step::Reboot), None] {
            let event = CampaignEvent {
                campaign: "c1".into(),
                at,
                node: "cmp1".into(),
                step,
                phase: Phase::Running,
                message: "cmp1: reboot".into(),
                ended: false,
            };
            assert_eq!(
                watched_from_wire(event_to_wire(event.clone())),
                Ok(Watched::Event(event))
            );
        }
        let plan = Plan {
            name: "november".into(),
            waves: vec![Wave {
                role: Role::Storage,
                nodes: vec!["st1".into(), "st2".into()],
            }],
            skipped: vec![Skip {
                node: "st3".into(),
                reason: "offline".into(),
            }],
        };
        assert_eq!(plan_from_wire(plan.clone().into()), Ok(plan));
        let mut wire = v1::PlanCampaignResponse::from(Plan {
            name: String::new(),
            waves: vec![Wave {
                role: Role::Compute,
                nodes: vec![],
            }],
            skipped: vec![],
        });
        wire.waves[0].role = v1::Role::Unspecified.into();
        assert!(plan_from_wire(wire).is_err(), "a wave has a role");
    }
}
