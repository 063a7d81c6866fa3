//! Actions: what the server asks of an agent and what the agent answers.

use super::{ConvertError, opt_ts, timestamp_to_wire};
use crate::model;
use crate::v1;

pub fn action_kind_to_wire(k: model::ActionKind) -> v1::ActionKind {
    match k {
        model::ActionKind::Patch => v1::ActionKind::Patch,
        model::ActionKind::Reboot => v1::ActionKind::Reboot,
        model::ActionKind::Hook => v1::ActionKind::Hook,
    }
}

/// `UNSPECIFIED` (or an unknown value) names no action: an error.
pub fn action_kind_from_wire(raw: i32) -> Result<model::ActionKind, ConvertError> {
    match v1::ActionKind::try_from(raw) {
        Ok(v1::ActionKind::Patch) => Ok(model::ActionKind::Patch),
        Ok(v1::ActionKind::Reboot) => Ok(model::ActionKind::Reboot),
        Ok(v1::ActionKind::Hook) => Ok(model::ActionKind::Hook),
        Ok(v1::ActionKind::Unspecified) | Err(_) => Err(ConvertError::Invalid {
            field: "action_request.kind",
            value: raw,
        }),
    }
}

pub fn action_state_to_wire(s: model::ActionState) -> v1::ActionState {
    match s {
        model::ActionState::Accepted => v1::ActionState::Accepted,
        model::ActionState::Running => v1::ActionState::Running,
        model::ActionState::Succeeded => v1::ActionState::Succeeded,
        model::ActionState::Failed => v1::ActionState::Failed,
        model::ActionState::Rejected => v1::ActionState::Rejected,
    }
}

/// `UNSPECIFIED` (or an unknown value) is no state: an error.
pub fn action_state_from_wire(raw: i32) -> Result<model::ActionState, ConvertError> {
    match v1::ActionState::try_from(raw) {
        Ok(v1::ActionState::Accepted) => Ok(model::ActionState::Accepted),
        Ok(v1::ActionState::Running) => Ok(model::ActionState::Running),
        Ok(v1::ActionState::Succeeded) => Ok(model::ActionState::Succeeded),
        Ok(v1::ActionState::Failed) => Ok(model::ActionState::Failed),
        Ok(v1::ActionState::Rejected) => Ok(model::ActionState::Rejected),
        Ok(v1::ActionState::Unspecified) | Err(_) => Err(ConvertError::Invalid {
            field: "action_update.state",
            value: raw,
        }),
    }
}

impl From<model::ActionRequest> for v1::ActionRequest {
    fn from(r: model::ActionRequest) -> Self {
        Self {
            action_id: r.id,
            kind: action_kind_to_wire(r.kind).into(),
            name: r.name,
            args: r.args,
            timeout_secs: r.timeout_secs,
            leader_epoch: r.leader_epoch,
        }
    }
}

/// A request as the agent reads it. The id is checked by whoever keeps it
/// (the agent, which makes file names of ids).
impl TryFrom<v1::ActionRequest> for model::ActionRequest {
    type Error = ConvertError;
    fn try_from(r: v1::ActionRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            kind: action_kind_from_wire(r.kind)?,
            id: r.action_id,
            name: r.name,
            args: r.args,
            timeout_secs: r.timeout_secs,
            leader_epoch: r.leader_epoch,
        })
    }
}

/// What an agent says about an action. The node is not on the wire: the
/// server knows it from the certificate.
impl From<model::ActionResult> for v1::ActionUpdate {
    fn from(r: model::ActionResult) -> Self {
        Self {
            action_id: r.id,
            state: action_state_to_wire(r.state).into(),
            exit_code: r.exit_code,
            output_tail: r.output_tail,
            error: r.error,
            started_at: r.started_at.map(timestamp_to_wire),
            finished_at: r.finished_at.map(timestamp_to_wire),
            boot_id: r.boot_id,
        }
    }
}

/// An agent's update about an action, as the server keeps it.
pub fn action_result_from_wire(
    node: &str,
    u: v1::ActionUpdate,
) -> Result<model::ActionResult, ConvertError> {
    let state = action_state_from_wire(u.state)?;
    if u.action_id.is_empty() {
        return Err(ConvertError::Missing("action_update.action_id"));
    }
    Ok(model::ActionResult {
        id: u.action_id,
        node: node.to_owned(),
        state,
        exit_code: u.exit_code,
        output_tail: u.output_tail,
        error: u.error,
        started_at: opt_ts(&u.started_at),
        finished_at: opt_ts(&u.finished_at),
        boot_id: u.boot_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Timestamp;

    #[test]
    fn actions_round_trip_through_the_wire() {
        let request = model::ActionRequest {
            id: "c1.cmp1.1.patch".into(),
            kind: model::ActionKind::Hook,
            name: "drain".into(),
            args: vec!["cmp1".into()],
            timeout_secs: 60,
            leader_epoch: 7,
        };
        let wire = v1::ActionRequest::from(request.clone());
        assert_eq!(wire.kind, v1::ActionKind::Hook as i32);
        assert_eq!(model::ActionRequest::try_from(wire), Ok(request));
        let result = model::ActionResult {
            id: "c1.cmp1.1.patch".into(),
            node: "cmp1".into(),
            state: model::ActionState::Failed,
            exit_code: Some(100),
            output_tail: "E: broken\n".into(),
            error: "apt-get exited with 100".into(),
            started_at: Some(Timestamp::from_unix_millis(1_795_000_000_000)),
            finished_at: Some(Timestamp::from_unix_millis(1_795_000_060_000)),
            boot_id: "6f1c".into(),
        };
        let wire = v1::ActionUpdate::from(result.clone());
        assert_eq!(action_result_from_wire("cmp1", wire), Ok(result));
        for state in [
            model::ActionState::Accepted,
            model::ActionState::Running,
            model::ActionState::Succeeded,
            model::ActionState::Failed,
            model::ActionState::Rejected,
        ] {
            let raw = action_state_to_wire(state) as i32;
            assert_eq!(action_state_from_wire(raw), Ok(state));
        }
    }

    #[test]
    fn an_action_without_a_kind_or_state_is_an_error() {
        let request = v1::ActionRequest {
            action_id: "a".into(),
            ..Default::default()
        };
        assert_eq!(
            model::ActionRequest::try_from(request),
            Err(ConvertError::Invalid {
                field: "action_request.kind",
                value: 0
            })
        );
        assert!(action_kind_from_wire(99).is_err());
        let update = v1::ActionUpdate {
            action_id: "a".into(),
            state: 42,
            ..Default::default()
        };
        assert_eq!(
            action_result_from_wire("n", update),
            Err(ConvertError::Invalid {
                field: "action_update.state",
                value: 42
            })
        );
    }
}
