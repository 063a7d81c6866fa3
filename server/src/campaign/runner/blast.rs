//! The blast-radius guard in the scheduler (its rules, and why, are in
//! `campaign/blast.rs`): the baseline taken with a campaign's start, one
//! look at the fleet's bad containers for every running campaign per pass
//! (at most one a second), and each verdict stored (impacts with their
//! audit lines, and the pause in the same transaction) before it is told
//! to anyone.

use std::time::Duration;

use rollcall_proto::text::Untrusted;
use rollcall_proto::timestamp::Timestamp;
use tokio::time::Instant;

use super::{CampaignError, Scheduler};
use crate::campaign::blast::{self, Blast, Impact};
use crate::campaign::control::{self, Change};
use crate::campaign::record::{AuditEntry, CampaignWrite, Phase};
use crate::campaign::spec::BlastRadius;
use crate::fleet::{BadContainers, ByNode, MAX_BAD_CONTAINERS};

/// The shortest time between two looks. A look walks every node's digest
/// and unpacks the containers of each node with a bad one, and passes run
/// up to 50 times a second while results arrive; a clock of
/// `blast_radius_secs` (two minutes by default) loses at most this much.
pub(super) const LOOK_GAP: Duration = Duration::from_secs(1);

/// Whether a look is due at `now`, the last one taken at `last`.
fn look_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= LOOK_GAP)
}

impl Scheduler {
    /// Records with a new campaign what is bad across the fleet as it
    /// starts, and says so in its audit. This look is not cut: it is taken
    /// once per campaign, and a baseline with holes would make impacts of
    /// what was already broken.
    pub(super) async fn take_baseline(
        &self,
        change: &mut Change,
        now: Timestamp,
    ) -> Result<(), CampaignError> {
        let look = self.fleet.bad_containers(usize::MAX, ByNode::new()).await?;
        let baseline = Blast::at_start(&look);
        let Some(c) = change.write.campaign.as_mut() else {
            return Ok(());
        };
        if let Some(line) = baseline.baseline_line() {
            let entry = AuditEntry::new(&c.id, now, "scheduler", "", "baseline", line);
            change.write.audit.push(entry);
        }
        c.blast = baseline;
        Ok(())
    }

    /// One look at the fleet's bad containers for every campaign of the
    /// pass, if one of them runs and the last look is [`LOOK_GAP`] old;
    /// `None` also when the fleet does not answer (the clocks then wait
    /// for the next look). The running campaigns' baselines are listed
    /// but left out of the cap.
    pub(super) async fn blast_look(&mut self, ids: &[String]) -> Option<BadContainers> {
        let now = Instant::now();
        if !look_due(self.blast_looked, now) {
            return None;
        }
        let mut baseline = ByNode::new();
        let mut running = false;
        for live in ids.iter().map(|id| &self.campaigns[id]) {
            if live.campaign.phase != Phase::Running {
                continue;
            }
            running = true;
            for (node, containers) in &live.campaign.blast.baseline {
                baseline
                    .entry(node.clone())
                    .or_default()
                    .extend(containers.iter().cloned());
            }
        }
        if !running {
            return None;
        }
        self.blast_looked = Some(now);
        self.fleet
            .bad_containers(MAX_BAD_CONTAINERS, baseline)
            .await
            .ok()
    }

    /// Judges campaign `id` on this pass's look, and stores what it
    /// decides: a changed baseline, impacts (an `impact` audit line each),
    /// a pause.
    pub(super) async fn judge_blast(
        &mut self,
        id: &str,
        look: Option<&BadContainers>,
    ) -> Result<(), CampaignError> {
        let live = self.campaigns.get_mut(id).expect("the campaign exists");
        if live.campaign.phase != Phase::Running {
            // Only a running campaign is judged; its clocks were dropped
            // when it stopped running (`Live::take`).
            return Ok(());
        }
        let Some(look) = look else {
            return Ok(());
        };
        let now = Timestamp::now();
        let verdict = blast::judge(
            &live.spec,
            &live.campaign.blast,
            &live.runs,
            look,
            &live.blast_clocks,
            now,
        );
        live.blast_clocks = verdict.clocks;
        if verdict.blast.is_none() && verdict.pause.is_none() {
            return Ok(());
        }
        let mode = live.spec.blast_radius;
        let mut campaign = live.campaign.clone();
        if let Some(record) = verdict.blast {
            campaign.blast = record;
        }
        let counted = campaign.blast.counted();
        let mut audit = Vec::new();
        for i in &verdict.impacts {
            tracing::warn!(campaign = %id, node = %Untrusted(&i.node), container = %Untrusted(&i.container), what = %i.what, during = %i.during, mode = %mode, "A container the campaign does not work on stayed bad: blast-radius impact.");
            let detail = impact_detail(i, mode, counted);
            audit.push(AuditEntry::new(
                id,
                now,
                "scheduler",
                &i.node,
                "impact",
                detail,
            ));
        }
        let (write, message) = match &verdict.pause {
            Some(reason) => {
                tracing::info!(campaign = %id, reason = %Untrusted(reason), "Campaign paused.");
                let change = control::conclude(&campaign, Phase::Paused, reason, now);
                let mut write = change.write;
                write.audit.splice(0..0, audit);
                (write, change.message)
            }
            None => {
                let message = verdict
                    .impacts
                    .iter()
                    .map(|i| format!("impact: {}", impact_detail(i, mode, counted)))
                    .collect::<Vec<_>>()
                    .join("; ");
                let write = CampaignWrite {
                    campaign: Some(campaign),
                    nodes: Vec::new(),
                    actions: Vec::new(),
                    audit,
                };
                (write, message)
            }
        };
        if message.is_empty() {
            // Only the baseline changed (a container seen well): stored,
            // but nothing to tell watchers.
            self.writer.put_campaign(write.clone()).await?;
            self.take(id, write);
            return Ok(());
        }
        self.commit(id, write, "", None, message).await
    }
}

/// An impact's audit line: what happened, and what it does.
fn impact_detail(i: &Impact, mode: BlastRadius, counted: usize) -> String {
    match mode {
        BlastRadius::Pause => format!("{}; the campaign pauses", i.describe()),
        BlastRadius::Budget => format!(
            "{}; counted against the error budget ({counted} impact(s) counted)",
            i.describe()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_is_due_once_a_second_at_most() {
        let start = Instant::now();
        assert!(look_due(None, start), "the first look");
        assert!(!look_due(Some(start), start + Duration::from_millis(999)));
        assert!(look_due(Some(start), start + LOOK_GAP));
        assert!(
            !look_due(Some(start + LOOK_GAP), start),
            "a clock gone back"
        );
    }
}
