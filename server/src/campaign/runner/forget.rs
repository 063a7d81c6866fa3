//! `nodes forget`, the scheduler's half. The scheduler owns every campaign,
//! so it checks here that no open campaign holds the node and asks the
//! fleet to forget it in the same command: no campaign can start with the
//! node between the check and the removal.

use std::collections::BTreeMap;

use super::Scheduler;
use crate::audit::AuditRecord;
use crate::campaign::lifecycle::Step;
use crate::campaign::record::{Campaign, NodeRun, Phase};
use crate::fleet::{FleetStopped, ForgetRefused};
use crate::store::NotStored;

/// Why a node was not forgotten.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error(transparent)]
    Refused(#[from] ForgetRefused),
    #[error(
        "{node} is {step} in campaign {campaign}, which is {phase}: cancel the campaign, or let the node finish, first"
    )]
    InCampaign {
        node: String,
        campaign: String,
        step: Step,
        phase: Phase,
    },
    #[error(
        "{node} is gone from the fleet, but the store could not remove its record yet ({source}); the server tries again until the store writes (a restart before then brings the node back)"
    )]
    Store { node: String, source: NotStored },
    #[error(transparent)]
    Stopped(#[from] FleetStopped),
}

/// The campaign that holds `node`, with its run: an open one (running or
/// paused) in which the node has not finished, or a cancelled one in which
/// it is still in flight (cancelling lets a node in flight finish, and an
/// offline node in flight is usually one rebooting). Pure.
pub fn holder<'a>(
    campaigns: impl IntoIterator<Item = (&'a Campaign, &'a BTreeMap<String, NodeRun>)>,
    node: &str,
) -> Option<(&'a Campaign, &'a NodeRun)> {
    campaigns.into_iter().find_map(|(c, runs)| {
        let run = runs.get(node)?;
        let holds = match c.phase {
            Phase::Running | Phase::Paused => !run.step.is_terminal(),
            Phase::Cancelled => run.step.is_active(),
            Phase::Completed => false,
        };
        holds.then_some((c, run))
    })
}

impl Scheduler {
    /// Forgets `node` on behalf of the admin `audit` names: gone from the
    /// fleet, then from the store with its audit line (which it returns,
    /// as stored).
    pub(super) async fn forget(
        &mut self,
        node: &str,
        mut audit: AuditRecord,
    ) -> Result<AuditRecord, ForgetError> {
        let open = self.campaigns.values().map(|l| (&l.campaign, &l.runs));
        if let Some((campaign, run)) = holder(open, node) {
            return Err(ForgetError::InCampaign {
                node: node.to_owned(),
                campaign: campaign.id.clone(),
                step: run.step,
                phase: campaign.phase,
            });
        }
        let removal = self.fleet.forget(node, audit.clone()).await??;
        audit.seq = removal.await.map_err(|source| ForgetError::Store {
            node: node.to_owned(),
            source,
        })?;
        Ok(audit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::fixtures;
    use rollcall_proto::model::Role;

    #[test]
    fn an_unfinished_run_of_an_open_campaign_or_one_in_flight_holds_a_node() {
        let mut runs = BTreeMap::new();
        for (node, step) in [("a", Step::Patch), ("b", Step::Done), ("c", Step::Pending)] {
            let run = fixtures::run_in(step, Role::Compute, 0);
            runs.insert(
                node.to_owned(),
                NodeRun {
                    node: node.into(),
                    ..run
                },
            );
        }
        let mut campaign = Campaign {
            id: "c1".into(),
            name: "c1".into(),
            spec_toml: String::new(),
            phase: Phase::Running,
            reason: String::new(),
            started_by: "alice".into(),
            created_at: fixtures::t(0),
            updated_at: fixtures::t(0),
            finished_at: None,
            held: false,
            blast: Default::default(),
        };
        for phase in [Phase::Running, Phase::Paused] {
            campaign.phase = phase;
            let found = holder([(&campaign, &runs)], "a").map(|(c, r)| (c.id.as_str(), r.step));
            assert_eq!(found, Some(("c1", Step::Patch)), "{phase}");
            assert!(holder([(&campaign, &runs)], "c").is_some(), "pending holds");
            assert!(holder([(&campaign, &runs)], "b").is_none(), "done does not");
            assert!(holder([(&campaign, &runs)], "z").is_none(), "not a member");
        }
        campaign.phase = Phase::Cancelled;
        assert!(holder([(&campaign, &runs)], "a").is_some(), "in flight");
        assert!(holder([(&campaign, &runs)], "c").is_none(), "never started");
        campaign.phase = Phase::Completed;
        assert!(holder([(&campaign, &runs)], "a").is_none());
    }
}
