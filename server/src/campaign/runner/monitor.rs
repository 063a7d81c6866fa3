//! The monitoring APIs in the scheduler: a poller task per campaign with
//! `[alerts]` asks Prometheus and/or Alertmanager every `check_secs` and
//! keeps the latest answers (`alerts::Observation`) on a watch the
//! scheduler reads at each pass, so a pass never waits on the network. The
//! same task owns the campaign's silences (`silence.rs`): it makes, renews
//! and expires them as the nodes the scheduler says want one change, and
//! tells the scheduler each outcome, which stores the lease with the
//! node's run (with an audit line naming the silence id) so a restarted
//! server renews or expires it. Nothing the APIs do fails or blocks a
//! campaign: a failed request holds new starts (alerts) or is audited and
//! tried again at the next check (silences).
//!
//! The poller runs while the campaign is open, and after that while a node
//! still holds a silence. The side effects sit behind [`Monitor`]: the
//! real one is the server's HTTP client (`HttpMonitor`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use rollcall_proto::text::Untrusted;
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{CampaignError, Scheduler};
use crate::campaign::alerts::{self, AlertsSpec, Answer, Hold, Observation, Source, SourceKind};
use crate::campaign::control;
use crate::campaign::record::{AuditEntry, CampaignWrite, Phase};
use crate::campaign::silence::{self, Act, Lease};
use crate::http::{HttpClient, HttpError, HttpOptions};

/// The most an answer of a monitoring API may weigh.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// Outcomes waiting for the scheduler, across campaigns.
pub(super) const REPORT_BUFFER: usize = 1_024;

/// Why a silence post failed.
#[derive(Debug, PartialEq, Eq)]
pub enum PostError {
    /// Alertmanager no longer knows the silence renewed: make a new one.
    Gone,
    Failed(String),
}

/// What a campaign asks of the monitoring APIs.
pub trait Monitor: Send + Sync + 'static {
    /// The source's active alerts, or why it could not say.
    fn alerts(
        &self,
        source: &Source,
    ) -> impl Future<Output = Result<Vec<alerts::Alert>, String>> + Send;
    /// Posts a silence (`silence::post`); the id Alertmanager gave it.
    fn post_silence(
        &self,
        base: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<String, PostError>> + Send;
    /// Expires silence `id` (one already gone is expired too).
    fn expire_silence(
        &self,
        base: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// The real monitoring APIs, through the server's HTTP client; or, when
/// the client cannot be made (an unreadable `ca`), that reason for every
/// request, so the campaign holds saying why.
pub struct HttpMonitor(Result<HttpClient, String>);

impl HttpMonitor {
    pub fn new(spec: &AlertsSpec) -> Self {
        HttpMonitor(
            HttpClient::new(HttpOptions {
                timeout: spec.timeout(),
                max_body_bytes: MAX_ANSWER_BYTES,
                ca_file: spec.ca.clone(),
            })
            .map_err(|e| e.to_string()),
        )
    }

    fn client(&self) -> Result<&HttpClient, String> {
        self.0.as_ref().map_err(Clone::clone)
    }
}

fn unreachable(e: HttpError) -> String {
    format!("unreachable: {e}")
}

impl Monitor for HttpMonitor {
    async fn alerts(&self, source: &Source) -> Result<Vec<alerts::Alert>, String> {
        let answer = self
            .client()?
            .get(&source.alerts_url())
            .await
            .map_err(unreachable)?;
        if !answer.is_success() {
            return Err(format!(
                "answered HTTP {}: {}",
                answer.status,
                answer.body_line(200)
            ));
        }
        match source.kind {
            SourceKind::Prometheus => alerts::answer::prometheus(&answer.body),
            SourceKind::Alertmanager => alerts::answer::alertmanager(&answer.body),
        }
    }

    async fn post_silence(&self, base: &str, body: Vec<u8>) -> Result<String, PostError> {
        let client = self.client().map_err(PostError::Failed)?;
        let answer = client
            .post_json(&silence::post_url(base), body)
            .await
            .map_err(|e| PostError::Failed(unreachable(e)))?;
        match answer.status {
            200..=299 => silence::posted_id(&answer.body).map_err(PostError::Failed),
            status if silence::not_found(status, &answer.body) => Err(PostError::Gone),
            status => Err(PostError::Failed(format!(
                "answered HTTP {status}: {}",
                answer.body_line(200)
            ))),
        }
    }

    async fn expire_silence(&self, base: &str, id: &str) -> Result<(), String> {
        let answer = self
            .client()?
            .delete(&silence::expire_url(base, id))
            .await
            .map_err(unreachable)?;
        match answer.status {
            200..=299 => Ok(()),
            status if silence::not_found(status, &answer.body) => Ok(()),
            status => Err(format!("answered HTTP {status}: {}", answer.body_line(200))),
        }
    }
}

/// What the scheduler tells a campaign's poller: the nodes that want a
/// silence now, and the leases the store holds (the poller starts from
/// them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Wanted {
    pub nodes: BTreeSet<String>,
    pub stored: BTreeMap<String, Lease>,
}

/// What became of one node's silence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Created(Lease),
    Renewed {
        lease: Lease,
        old_id: String,
    },
    Expired(Lease),
    /// It ended by itself before an expiry got through.
    Lapsed(Lease),
    /// Alertmanager no longer knew it at a renewal; a new one follows.
    Gone(Lease),
    Failed {
        what: &'static str,
        error: String,
    },
}

#[derive(Debug)]
pub(super) struct Report {
    pub campaign: String,
    pub node: String,
    pub outcome: Outcome,
}

/// The scheduler's end of a campaign's poller; dropping it stops the task.
pub(super) struct MonitorLink {
    pub seen: watch::Receiver<Observation>,
    pub wanted: watch::Sender<Wanted>,
    _stop: DropGuard,
}

/// Starts the poller of campaign `id`.
pub(super) fn spawn<M: Monitor>(
    monitor: M,
    id: &str,
    spec: &AlertsSpec,
    wanted: Wanted,
    reports: mpsc::Sender<Report>,
    wake: Arc<Notify>,
    shutdown: &CancellationToken,
) -> MonitorLink {
    let first = Observation {
        answers: spec
            .sources()
            .iter()
            .map(|s| Answer::none(s.kind))
            .collect(),
    };
    let (seen_tx, seen) = watch::channel(first);
    let (wanted_tx, wanted_rx) = watch::channel(wanted);
    let stop = shutdown.child_token();
    let poller = Poller {
        monitor,
        campaign: id.to_owned(),
        spec: spec.clone(),
        seen: seen_tx,
        reports,
        wake,
        held: BTreeMap::new(),
    };
    tokio::spawn(poller.run(wanted_rx, stop.clone()));
    MonitorLink {
        seen,
        wanted: wanted_tx,
        _stop: stop.drop_guard(),
    }
}

struct Poller<M> {
    monitor: M,
    campaign: String,
    spec: AlertsSpec,
    seen: watch::Sender<Observation>,
    reports: mpsc::Sender<Report>,
    wake: Arc<Notify>,
    /// The leases this task knows: it is their one owner while it runs.
    held: BTreeMap<String, Lease>,
}

impl<M: Monitor> Poller<M> {
    async fn run(mut self, mut wanted: watch::Receiver<Wanted>, stop: CancellationToken) {
        self.held = wanted.borrow_and_update().stored.clone();
        let mut ticker = tokio::time::interval(self.spec.check_every());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {
                    self.look().await;
                }
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let nodes = wanted.borrow_and_update().nodes.clone();
            if self.spec.silences() && !self.tend(&nodes).await {
                return;
            }
        }
    }

    /// Asks every source once (together: each under the request timeout)
    /// and publishes what they said.
    async fn look(&mut self) {
        let sources = self.spec.sources();
        let monitor = &self.monitor;
        // At most two sources, asked together: each under the timeout.
        let (first, second) =
            tokio::join!(ask(monitor, sources.first()), ask(monitor, sources.get(1)));
        let asked = first.into_iter().chain(second);
        let now = Timestamp::now();
        self.seen.send_modify(|seen| {
            for (source, result) in sources.iter().zip(asked) {
                let Some(answer) = seen.answers.iter_mut().find(|a| a.kind == source.kind) else {
                    continue;
                };
                match result {
                    Ok(alerts) => {
                        answer.answered_at = Some(now);
                        answer.alerts = alerts;
                        answer.failure = None;
                    }
                    Err(why) => {
                        if answer.failure.is_none() {
                            tracing::warn!(campaign = %self.campaign, source = %source, error = %Untrusted(&why), "A monitoring API cannot be asked; the campaign holds new starts.");
                        }
                        answer.failure = Some(why);
                    }
                }
            }
        });
        self.wake.notify_one();
    }

    /// Makes, renews and expires silences until they are as `nodes` want;
    /// false once the scheduler is gone.
    async fn tend(&mut self, nodes: &BTreeSet<String>) -> bool {
        let Some(base) = self.spec.alertmanager_url.clone() else {
            return true;
        };
        let lease = std::time::Duration::from_secs(self.spec.silence.lease_secs);
        for act in silence::acts(nodes, &self.held, lease, Timestamp::now()) {
            let (node, outcome) = self.act(&base, act).await;
            let report = Report {
                campaign: self.campaign.clone(),
                node,
                outcome,
            };
            if self.reports.send(report).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn act(&mut self, base: &str, act: Act) -> (String, Outcome) {
        let now = Timestamp::now();
        match act {
            Act::Create { node } => {
                let outcome = match self.post(base, &node, None, now).await {
                    Ok(lease) => {
                        self.held.insert(node.clone(), lease.clone());
                        Outcome::Created(lease)
                    }
                    Err(PostError::Gone) => Outcome::Failed {
                        what: "create",
                        error: "answered HTTP 404".into(),
                    },
                    Err(PostError::Failed(error)) => Outcome::Failed {
                        what: "create",
                        error,
                    },
                };
                (node, outcome)
            }
            Act::Renew { node, lease: old } => {
                let outcome = match self.post(base, &node, Some(&old), now).await {
                    Ok(lease) => {
                        self.held.insert(node.clone(), lease.clone());
                        Outcome::Renewed {
                            lease,
                            old_id: old.id,
                        }
                    }
                    Err(PostError::Gone) => {
                        self.held.remove(&node);
                        Outcome::Gone(old)
                    }
                    Err(PostError::Failed(error)) => Outcome::Failed {
                        what: "renew",
                        error,
                    },
                };
                (node, outcome)
            }
            Act::Expire { node, lease } => {
                let outcome = match self.monitor.expire_silence(base, &lease.id).await {
                    Ok(()) => {
                        self.held.remove(&node);
                        Outcome::Expired(lease)
                    }
                    Err(error) => Outcome::Failed {
                        what: "expire",
                        error,
                    },
                };
                (node, outcome)
            }
            Act::Lapsed { node, lease } => {
                self.held.remove(&node);
                (node, Outcome::Lapsed(lease))
            }
        }
    }

    async fn post(
        &self,
        base: &str,
        node: &str,
        renewing: Option<&Lease>,
        now: Timestamp,
    ) -> Result<Lease, PostError> {
        let post = silence::post(&self.spec, &self.campaign, node, renewing, now)
            .map_err(PostError::Failed)?;
        let id = self.monitor.post_silence(base, post.body).await?;
        Ok(Lease {
            id,
            from: post.from,
            until: post.until,
        })
    }
}

async fn ask<M: Monitor>(
    monitor: &M,
    source: Option<&Source>,
) -> Option<Result<Vec<alerts::Alert>, String>> {
    match source {
        Some(s) => Some(monitor.alerts(s).await),
        None => None,
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
            let wanted = Wanted {
                nodes: live
                    .runs
                    .values()
                    .filter(|r| silence::wanted(r.step))
                    .map(|r| r.node.clone())
                    .collect(),
                stored: live
                    .runs
                    .values()
                    .filter_map(|r| Some((r.node.clone(), r.silence.clone()?)))
                    .collect(),
            };
            let needed =
                !control::ended(&live.campaign, live.runs.values()) || !wanted.stored.is_empty();
            match (&live.monitor, needed) {
                (None, true) => {
                    live.monitor = Some(spawn(
                        HttpMonitor::new(spec),
                        id,
                        spec,
                        wanted,
                        self.monitor_reports.clone(),
                        self.wake.clone(),
                        &self.shutdown,
                    ));
                }
                (Some(_), false) => {
                    live.monitor = None;
                    live.hold = None;
                }
                (Some(link), true) => {
                    link.wanted.send_if_modified(|w| {
                        let changed = w.nodes != wanted.nodes;
                        w.nodes = wanted.nodes;
                        changed
                    });
                }
                (None, false) => {}
            }
        }
    }

    /// What holds campaign `id`'s new starts now, from its poller's latest
    /// observation and the nodes in flight; audited when it changes.
    pub(super) async fn alert_hold(&mut self, id: &str) -> Result<Option<String>, CampaignError> {
        let live = self.campaigns.get_mut(id).expect("the campaign exists");
        let (Some(spec), Some(link)) = (live.spec.alerts.as_ref(), live.monitor.as_ref()) else {
            return Ok(None);
        };
        let hold = if live.campaign.phase == Phase::Running {
            let in_flight: Vec<&str> = live
                .runs
                .values()
                .filter(|r| r.step.is_active())
                .map(|r| r.node.as_str())
                .collect();
            alerts::verdict(spec, &link.seen.borrow(), &in_flight, Timestamp::now())
        } else {
            None
        };
        let text = hold.as_ref().map(Hold::describe);
        let before = live.hold.as_ref().map(Hold::key);
        if before == hold.as_ref().map(Hold::key) {
            live.hold = hold;
            return Ok(text);
        }
        let ended = live.hold.take().filter(Hold::audited);
        let audited = hold.as_ref().filter(|h| h.audited()).map(Hold::describe);
        live.hold = hold;
        if live.campaign.phase != Phase::Running && text.is_none() {
            // A pause or a cancel is its own audit line.
            return Ok(None);
        }
        let now = Timestamp::now();
        let (event, detail) = match (audited, ended) {
            (Some(t), _) => ("alert-hold", format!("new starts {t}")),
            (None, Some(was)) => (
                "alert-clear",
                format!("new starts go on: no longer {}", was.describe()),
            ),
            (None, None) => return Ok(text),
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
        } = report;
        let Some(live) = self.campaigns.get_mut(&id) else {
            return;
        };
        let Some(run) = live.runs.get(&node) else {
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
        let first_failure =
            matches!(outcome, Outcome::Failed { .. }) && live.silence_failing.insert(node.clone());
        if !matches!(outcome, Outcome::Failed { .. }) {
            live.silence_failing.remove(&node);
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
            // The poller holds the lease; its next renewal reports again.
            tracing::error!(campaign = %id, node = %node, error = %e, "A silence could not be stored.");
        }
        self.tend_monitors();
    }
}

#[cfg(test)]
mod tests;
