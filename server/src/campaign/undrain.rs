//! An operator's undrain of a node that failed and stays drained
//! (`campaign undrain ID NODE`): whether it is allowed, and how it goes.
//! Pure, like `drive`: the scheduler stores what these return before it
//! sends anything.

use std::collections::BTreeMap;

use rollcall_proto::model::{ActionKind, ActionRequest, ActionResult, ActionState};
use rollcall_proto::timestamp::Timestamp;

use super::api::Refused;
use super::drive::{RESEND_AFTER, action_failure, hook_runner};
use super::lifecycle::Step;
use super::record::{ManualUndrain, NodeRun};
use super::schedule::Health;
use super::spec::CampaignSpec;

/// An operator asks for the undrain of a node that failed and stays
/// drained (`campaign undrain ID NODE`): under a new action id, on the
/// node the role's hooks run on. `run` is ready to be stored; send the
/// request once it is. Refused, with why, for any other node.
pub fn ask_undrain(
    run: &mut NodeRun,
    campaign: &str,
    spec: &CampaignSpec,
    fleet: &BTreeMap<String, Health>,
    by: &str,
    now: Timestamp,
) -> Result<(String, ActionRequest), Refused> {
    let node = &run.node;
    if run.step != Step::Failed {
        return Err(Refused::NotFailed {
            id: campaign.to_owned(),
            node: node.clone(),
            step: run.step,
        });
    }
    let Some(hook) = run.left_drained.clone() else {
        return Err(Refused::NotLeftDrained {
            id: campaign.to_owned(),
            node: node.clone(),
        });
    };
    if let Some(u) = &run.undrain {
        return Err(Refused::UndrainRunning {
            node: node.clone(),
            action_id: u.action_id.clone(),
            on: u.action_node.clone(),
        });
    }
    let on = hook_runner(spec, run, fleet, &hook)?;
    run.manual_undrains += 1;
    let id = run.manual_undrain_id(campaign, run.manual_undrains);
    run.undrain = Some(ManualUndrain {
        action_id: id.clone(),
        action_node: on.clone(),
        by: by.to_owned(),
        asked_at: now,
        sent_at: Some(now),
    });
    Ok((on, undrain_request(id, &hook, node, spec)))
}

fn undrain_request(id: String, hook: &str, target: &str, spec: &CampaignSpec) -> ActionRequest {
    ActionRequest {
        id,
        kind: ActionKind::Hook,
        name: hook.to_owned(),
        args: vec![target.to_owned()],
        timeout_secs: u32::try_from(spec.timeouts.undrain_secs).unwrap_or(u32::MAX),
        leader_epoch: 0,
    }
}

/// Where an operator's undrain stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undrain {
    /// Running, or asked and waiting for a word; nothing to store.
    Wait,
    /// Ask `node` again under the same id (the request was lost, or the
    /// agent never answered). Store `run` first if it changed.
    Send {
        node: String,
        request: ActionRequest,
    },
    /// The hook succeeded: `run` is no longer left drained.
    Done,
    /// The hook failed or did not finish in time: `run` stays left
    /// drained, with no undrain running, and an operator may ask again.
    Failed(String),
}

/// Follows an operator's undrain of `run` from the agent's word on it
/// (`action`): pure, like `advance`.
pub fn follow_undrain(
    run: &mut NodeRun,
    spec: &CampaignSpec,
    action: Option<&ActionResult>,
    now: Timestamp,
) -> Undrain {
    let Some(u) = run.undrain.clone() else {
        return Undrain::Wait;
    };
    let hook = run.left_drained.clone().unwrap_or_default();
    match action {
        Some(a) if a.state == ActionState::Succeeded => {
            run.undrain = None;
            run.left_drained = None;
            return Undrain::Done;
        }
        Some(a) if a.state.is_final() => {
            run.undrain = None;
            return Undrain::Failed(action_failure(&format!("hook {hook}"), a));
        }
        _ => {}
    }
    let limit = spec.timeouts.undrain_secs;
    if now.since(u.asked_at) > std::time::Duration::from_secs(limit) {
        run.undrain = None;
        return Undrain::Failed(format!(
            "hook {hook} on {} did not finish within {limit}s",
            u.action_node
        ));
    }
    let silent = match action {
        // No word of it: the request was lost on the way (or the node had
        // no session); ask again, which changes nothing to store.
        None => true,
        Some(a) => match a.state {
            ActionState::Accepted => u.sent_at.is_none_or(|t| now.since(t) >= RESEND_AFTER),
            // Cleared after a store outage: the agent may hold a result
            // the store refused; asking by the same id brings it.
            ActionState::Running => u.sent_at.is_none(),
            _ => false,
        },
    };
    if !silent {
        return Undrain::Wait;
    }
    if action.is_some()
        && let Some(u) = run.undrain.as_mut()
    {
        u.sent_at = Some(now);
    }
    Undrain::Send {
        node: u.action_node.clone(),
        request: undrain_request(u.action_id, &hook, &run.node, spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::fixtures::*;
    use rollcall_proto::model::Role;

    #[test]
    fn an_operators_undrain_gets_its_own_id_is_asked_again_when_lost_and_ends_the_left_drained_mark()
     {
        let mut w = World::new();
        with_compute_hooks(&mut w);
        let mut run = run_in(Step::Failed, Role::Compute, 15);
        // Not left drained: refused.
        let ask = |run: &mut NodeRun, w: &World| {
            ask_undrain(run, "c1", &w.spec, &w.fleet, "operator:alice", w.now)
        };
        let err = ask(&mut run, &w).expect_err("not left drained");
        assert!(matches!(err, Refused::NotLeftDrained { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "cmp1 failed in campaign c1 but is not left drained: there is nothing to undo"
        );
        run.left_drained = Some("nova-undrain".into());
        let (on, request) = ask(&mut run, &w).expect("asked");
        assert_eq!(
            (on.as_str(), request.id.as_str(), request.args.clone()),
            ("ctl1", "c1.cmp1.1.undrain-1", vec!["cmp1".to_owned()])
        );
        let err = ask(&mut run, &w).expect_err("one at a time");
        assert_eq!(
            err.to_string(),
            "an undrain of cmp1 is already running (c1.cmp1.1.undrain-1 on ctl1); wait for it to end"
        );
        // No word of it: asked again, same id, nothing to store.
        let before = run.clone();
        let again = follow_undrain(&mut run, &w.spec, None, t(21));
        assert_eq!(
            again,
            Undrain::Send {
                node: "ctl1".into(),
                request: request.clone()
            }
        );
        assert_eq!(run, before);
        let mut failed = result(ActionState::Failed, Some(1), "no\n", 22);
        failed.node = "ctl1".into();
        assert!(matches!(
            follow_undrain(&mut run, &w.spec, Some(&failed), t(22)),
            Undrain::Failed(_)
        ));
        assert_eq!(
            (run.undrain.is_none(), run.left_drained.as_deref()),
            (true, Some("nova-undrain"))
        );
        // A second undrain gets a new id; success ends the mark.
        let (_, second) = ask(&mut run, &w).expect("asked again");
        assert_eq!(second.id, "c1.cmp1.1.undrain-2");
        let ok = result(ActionState::Succeeded, Some(0), "", 23);
        assert_eq!(
            follow_undrain(&mut run, &w.spec, Some(&ok), t(23)),
            Undrain::Done
        );
        assert_eq!(
            (run.step, run.left_drained.clone(), run.undrain.clone()),
            (Step::Failed, None, None)
        );
        // Only a failed node.
        let mut patching = run_in(Step::Patch, Role::Compute, 15);
        patching.left_drained = Some("nova-undrain".into());
        assert!(matches!(
            ask(&mut patching, &w).expect_err("in flight"),
            Refused::NotFailed {
                step: Step::Patch,
                ..
            }
        ));
        // An undrain nobody answers fails at undrain_secs.
        let mut lost = run_in(Step::Failed, Role::Compute, 15);
        lost.left_drained = Some("nova-undrain".into());
        ask(&mut lost, &w).expect("asked");
        let late = Timestamp::from_unix_millis(w.now.unix_millis() + 601_000);
        assert!(matches!(
            follow_undrain(&mut lost, &w.spec, None, late),
            Undrain::Failed(why) if why.contains("did not finish within 600s")
        ));
    }
}
