//! The monitoring APIs in the scheduler. A poller per campaign with
//! `[alerts]` (`monitor/poll.rs`) asks Prometheus and/or Alertmanager and
//! works out which alerts hold, so a pass never waits on the network and
//! only leaves out the alerts about the nodes in flight (`alerts::verdict`).
//! The same poller owns the campaign's silences (`silence.rs`): it makes,
//! renews and expires them as the nodes the scheduler says want one
//! change, and tells the scheduler each outcome, which stores the lease
//! with the node's run (with an audit line naming the silence id) so a
//! restarted server renews or expires it. Nothing the APIs do fails a
//! campaign: a failed request holds new starts and drains (alerts) or is
//! audited and tried again at the next check (silences).
//!
//! A pass works the hold out twice: before it drives the nodes in flight
//! (a node enters its drain only while nothing holds), and after, for new
//! starts, status and the audit. A node that left flight makes the poller
//! look at once, and nothing starts on an answer asked before that.
//!
//! The poller runs while the campaign is open, and after that while a node
//! still holds a silence.

use std::collections::{BTreeMap, BTreeSet};

use rollcall_proto::text::Untrusted;
use rollcall_proto::timestamp::Timestamp;

use super::{CampaignError, Scheduler};
use crate::campaign::alerts::{self, Hold, Source, SourceKind};
use crate::campaign::control;
use crate::campaign::record::{AuditEntry, CampaignWrite, Phase};
use crate::campaign::silence;

mod poll;

pub(super) use poll::Report;
use poll::{HttpMonitor, MonitorLink, Outcome, Wanted};

/// Outcomes waiting for the scheduler, across campaigns.
pub(super) const REPORT_BUFFER: usize = 1_024;
/// Looks in a row that find a hold over before its end is audited: an API
/// or an alert that flaps writes one hold line, not one per check.
const CLEAR_LOOKS: u64 = 3;

/// What the scheduler keeps of a campaign's `[alerts]`. Memory only: a
/// restarted server audits a hold that goes on once more.
#[derive(Default)]
pub(super) struct Alerting {
    /// The poller, while the campaign is open or a node holds a silence.
    link: Option<MonitorLink>,
    /// What holds new starts now (status and `waiting`).
    hold: Option<Hold>,
    /// The hold the audit named last (key, text), until its end is.
    audited: Option<(String, String)>,
    /// The holds audited since the last end audited: one that comes back
    /// before the end is audited is not audited again.
    episode: BTreeSet<String>,
    /// The look that first found the audited hold over.
    clear_since: Option<u64>,
    /// The nodes in flight at the last pass, and when one last left.
    flying: BTreeSet<String>,
    left_flight: Option<Timestamp>,
    /// Nodes whose last silence request failed: only the first failure of
    /// a streak is audited.
    silence_failing: BTreeSet<String>,
    /// The last silence report taken (stored or refused).
    taken: u64,
}

impl Alerting {
    /// What holds new starts now, for status.
    pub(super) fn hold_text(&self) -> String {
        self.hold.as_ref().map(Hold::describe).unwrap_or_default()
    }

    /// The campaign paused, resumed or was cancelled: that is its own
    /// audit line, and a pass looks again before anything starts.
    pub(super) fn phase_changed(&mut self) {
        self.hold = None;
        self.audited = None;
        self.episode.clear();
        self.clear_since = None;
    }

    /// Takes the hold of this pass (`looks`: the poller's look count);
    /// the audit line it is worth (event, detail), if any. A new hold is
    /// audited once per episode; its end once `CLEAR_LOOKS` looks in a row
    /// found nothing holding.
    fn take_hold(&mut self, hold: Option<Hold>, looks: u64) -> Option<(&'static str, String)> {
        let line = match hold.as_ref() {
            Some(h) if h.audited() => {
                self.clear_since = None;
                let key = h.key();
                let same = self.audited.as_ref().is_some_and(|(k, _)| *k == key);
                let text = h.describe();
                let fresh = !same && self.episode.insert(key.clone());
                if !same {
                    self.audited = Some((key, text.clone()));
                }
                fresh.then(|| ("alert-hold", format!("new starts {text}")))
            }
            // A first look, or the look after a node finished: neither a
            // hold worth a line nor a look that found nothing holding.
            Some(_) => None,
            None if self.audited.is_none() => None,
            None => {
                let since = *self.clear_since.get_or_insert(looks);
                if looks.saturating_sub(since) + 1 >= CLEAR_LOOKS {
                    self.episode.clear();
                    self.clear_since = None;
                    self.audited.take().map(|(_, text)| {
                        ("alert-clear", format!("new starts go on: no longer {text}"))
                    })
                } else {
                    None
                }
            }
        };
        self.hold = hold;
        line
    }
}

impl Scheduler {
    /// Starts the poller of every campaign that needs one, stops those no
    /// longer needed, and tells each what its nodes want.
    pub(super) fn tend_monitors(&mut self) {
        for (id, live) in &mut self.campaigns {
            let Some(spec) = live.spec.alerts.as_ref() else {
                continue;
            };
            let alerting = &mut live.alerting;
            let stored: BTreeMap<String, silence::Lease> = live
                .runs
                .values()
                .filter_map(|r| Some((r.node.clone(), r.silence.clone()?)))
                .collect();
            let needed = !control::ended(&live.campaign, live.runs.values()) || !stored.is_empty();
            if alerting.link.is_none() && needed {
                // A new poller counts its reports from 0.
                alerting.taken = 0;
            }
            let wanted = Wanted {
                nodes: live
                    .runs
                    .values()
                    .filter(|r| silence::wanted(r.step))
                    .map(|r| r.node.clone())
                    .collect(),
                stored,
                taken: alerting.taken,
                left_flight: alerting.left_flight,
            };
            match (&alerting.link, needed) {
                (None, true) => {
                    alerting.link = Some(poll::spawn(
                        HttpMonitor::new,
                        id,
                        spec,
                        wanted,
                        self.monitor_reports.clone(),
                        self.wake.clone(),
                        &self.shutdown,
                    ));
                }
                (Some(_), false) => {
                    alerting.link = None;
                    alerting.hold = None;
                }
                (Some(link), true) => {
                    link.wanted.send_if_modified(|w| {
                        let changed = *w != wanted;
                        *w = wanted;
                        changed
                    });
                }
                (None, false) => {}
            }
        }
    }

    /// What holds a drain in campaign `id` now (the nodes in flight, the
    /// one about to drain too, left out), before the pass drives them.
    pub(super) fn drain_hold(&self, id: &str) -> Option<String> {
        let live = &self.campaigns[id];
        let (Some(spec), Some(link)) = (live.spec.alerts.as_ref(), live.alerting.link.as_ref())
        else {
            return None;
        };
        let in_flight: Vec<&str> = live
            .runs
            .values()
            .filter(|r| r.step.is_active())
            .map(|r| r.node.as_str())
            .collect();
        let seen = link.seen.borrow();
        alerts::verdict(
            spec,
            &seen,
            &in_flight,
            live.alerting.left_flight,
            Timestamp::now(),
        )
        .map(|h| h.describe())
    }

    /// What holds campaign `id`'s new starts now, from its poller's latest
    /// observation and the nodes in flight; audited as `take_hold` says.
    pub(super) async fn alert_hold(&mut self, id: &str) -> Result<Option<String>, CampaignError> {
        let live = self.campaigns.get_mut(id).expect("the campaign exists");
        let alerting = &mut live.alerting;
        let (Some(spec), Some(link)) = (live.spec.alerts.as_ref(), alerting.link.as_ref()) else {
            return Ok(None);
        };
        let now = Timestamp::now();
        let flying: BTreeSet<String> = live
            .runs
            .values()
            .filter(|r| r.step.is_active())
            .map(|r| r.node.clone())
            .collect();
        if alerting.flying.iter().any(|n| !flying.contains(n)) {
            // Its alerts count again: the poller looks at once, and
            // nothing starts on what it said before.
            alerting.left_flight = Some(now);
            link.wanted
                .send_modify(|w| w.left_flight = alerting.left_flight);
        }
        alerting.flying = flying;
        if live.campaign.phase != Phase::Running {
            // A pause or a cancel is its own audit line.
            alerting.phase_changed();
            return Ok(None);
        }
        let (hold, looks) = {
            let seen = link.seen.borrow();
            let in_flight: Vec<&str> = alerting.flying.iter().map(String::as_str).collect();
            let hold = alerts::verdict(spec, &seen, &in_flight, alerting.left_flight, now);
            (hold, seen.looks)
        };
        let text = hold.as_ref().map(Hold::describe);
        let Some((event, detail)) = alerting.take_hold(hold, looks) else {
            return Ok(text);
        };
        tracing::info!(campaign = %id, detail = %Untrusted(&detail), "Campaign alert hold changed.");
        let write = CampaignWrite {
            campaign: None,
            nodes: Vec::new(),
            actions: Vec::new(),
            audit: vec![AuditEntry::new(
                id,
                now,
                "scheduler",
                "",
                event,
                detail.clone(),
            )],
        };
        self.commit(id, write, "", None, detail).await?;
        Ok(text)
    }

    /// Stores what a poller did with a node's silence: the lease with the
    /// node's run, and an audit line for each silence made, replaced or
    /// expired, and for the first failure of a streak.
    pub(super) async fn take_silence(&mut self, report: Report) {
        let Report {
            campaign: id,
            node,
            outcome,
            seq,
        } = report;
        let Some(live) = self.campaigns.get_mut(&id) else {
            return;
        };
        // Taken, whether stored or not: the poller reports again what the
        // store does not hold once it saw this.
        live.alerting.taken = live.alerting.taken.max(seq);
        let Some(run) = live.runs.get(&node) else {
            self.tend_monitors();
            return;
        };
        let host = live
            .spec
            .alerts
            .as_ref()
            .and_then(|a| a.alertmanager_url.as_deref())
            .map(|u| Source::new(SourceKind::Alertmanager, u).to_string())
            .unwrap_or_default();
        let mut run = run.clone();
        let first_failure = matches!(outcome, Outcome::Failed { .. })
            && live.alerting.silence_failing.insert(node.clone());
        if !matches!(outcome, Outcome::Failed { .. }) {
            live.alerting.silence_failing.remove(&node);
        }
        let detail = match &outcome {
            Outcome::Created(l) => {
                run.silence = Some(l.clone());
                let matchers = live
                    .spec
                    .alerts
                    .as_ref()
                    .and_then(|a| alerts::silence_matchers(&a.silence.matchers, &node).ok())
                    .map(|m| alerts::MatcherSet(m).to_string())
                    .unwrap_or_default();
                Some(format!(
                    "silence {} created in {host} for {node} until {} ({matchers})",
                    l.id, l.until
                ))
            }
            Outcome::Renewed { lease, old_id } => {
                run.silence = Some(lease.clone());
                (lease.id != *old_id).then(|| {
                    format!(
                        "silence {old_id} renewed as silence {} in {host} for {node} until {}",
                        lease.id, lease.until
                    )
                })
            }
            Outcome::Expired(l) => {
                run.silence = None;
                Some(format!("silence {} expired in {host} for {node}", l.id))
            }
            Outcome::Lapsed(l) => {
                run.silence = None;
                Some(format!(
                    "silence {} lapsed by itself at {} (its expiry did not get through)",
                    l.id, l.until
                ))
            }
            Outcome::Gone(l) => {
                run.silence = None;
                Some(format!(
                    "silence {} is gone from {host} (expired or deleted there); a new one follows",
                    l.id
                ))
            }
            Outcome::Failed { what, error } => {
                tracing::warn!(campaign = %id, node = %node, what, error = %Untrusted(error), "A silence request failed; it is tried again at the next check.");
                first_failure.then(|| {
                    format!(
                        "cannot {what} the silence of {node} in {host}: {}; tried again every check",
                        rollcall_proto::text::for_terminal(error)
                    )
                })
            }
        };
        if matches!(outcome, Outcome::Failed { .. }) && detail.is_none() {
            self.tend_monitors();
            return;
        }
        let now = Timestamp::now();
        let write = CampaignWrite {
            campaign: None,
            nodes: vec![(id.clone(), run)],
            actions: Vec::new(),
            audit: detail
                .iter()
                .map(|d| AuditEntry::new(&id, now, "scheduler", &node, "silence", d.clone()))
                .collect(),
        };
        let stored = match detail {
            Some(message) => self.commit(&id, write, &node, None, message).await,
            // A renewal under the same id: stored, nothing to tell.
            None => match self.writer.put_campaign(write.clone()).await {
                Ok(()) => {
                    self.take(&id, write);
                    Ok(())
                }
                Err(e) => Err(e.into()),
            },
        };
        if let Err(e) = stored {
            // The poller holds the lease and reports it again once it
            // sees the store without it.
            tracing::error!(campaign = %id, node = %node, error = %e, "A silence could not be stored.");
        }
        self.tend_monitors();
    }
}

#[cfg(test)]
mod tests;
