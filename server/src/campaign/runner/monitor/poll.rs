//! A campaign's poller: one task, two loops that never wait on each
//! other. The look loop asks the monitoring APIs every `check_secs` (and
//! at once when a node left flight), works out which alerts hold
//! (`alerts::blocking`, once per look) and publishes the result on a watch
//! the scheduler reads at each pass. The silence loop makes, renews and
//! expires the campaign's silences as the scheduler's `Wanted` says, and
//! reports each outcome; it tells the look loop the ids of the campaign's
//! own silences, which hide nothing from the campaign. A slow Alertmanager
//! therefore delays neither looks nor passes.
//!
//! The HTTP client (which reads the CA file) is made in the task, never on
//! the scheduler's.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rollcall_proto::text::Untrusted;
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::campaign::alerts::{self, AlertsSpec, Answer, Observation, Source, SourceKind};
use crate::campaign::silence::{self, Act, Lease};
use crate::http::{HttpClient, HttpError, HttpOptions};

/// The most an answer of a monitoring API may weigh.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

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
    /// Reads the trust roots: call it in the poller's task.
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

/// What the scheduler tells a campaign's poller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// The nodes that want a silence now.
    pub nodes: BTreeSet<String>,
    /// The leases the store holds: the poller starts from them, and
    /// reports again what the store did not take.
    pub stored: BTreeMap<String, Lease>,
    /// The last report the scheduler took (stored or refused).
    pub taken: u64,
    /// When a node last left flight: the poller looks at once, since the
    /// scheduler starts nothing on an answer asked before.
    pub left_flight: Option<Timestamp>,
}

/// What became of one node's silence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
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
pub struct Report {
    pub campaign: String,
    pub node: String,
    pub outcome: Outcome,
    /// Counts the poller's reports: `Wanted::taken` says which it saw.
    pub seq: u64,
}

/// The scheduler's end of a campaign's poller; dropping it stops the task.
pub struct MonitorLink {
    pub seen: watch::Receiver<Observation>,
    pub wanted: watch::Sender<Wanted>,
    _stop: DropGuard,
}

/// Starts the poller of campaign `id`; `make` makes its monitor in the
/// poller's task (it may read files).
pub fn spawn<M, F>(
    make: F,
    id: &str,
    spec: &AlertsSpec,
    wanted: Wanted,
    reports: mpsc::Sender<Report>,
    wake: Arc<Notify>,
    shutdown: &CancellationToken,
) -> MonitorLink
where
    M: Monitor,
    F: FnOnce(&AlertsSpec) -> M + Send + 'static,
{
    let first = Observation {
        answers: spec
            .sources()
            .iter()
            .map(|s| Answer::none(s.kind))
            .collect(),
        ..Observation::default()
    };
    let (seen_tx, seen) = watch::channel(first);
    let (wanted_tx, wanted_rx) = watch::channel(wanted);
    let stop = shutdown.child_token();
    let (campaign, spec, task_stop) = (id.to_owned(), spec.clone(), stop.clone());
    tokio::spawn(async move {
        let made = {
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || make(&spec)).await
        };
        let Ok(monitor) = made else {
            tracing::error!(campaign = %campaign, "The monitoring poller could not start.");
            return;
        };
        let (own_tx, own_rx) = watch::channel(HashSet::new());
        let looker = Looker {
            monitor: &monitor,
            campaign: &campaign,
            spec: &spec,
            seen: seen_tx,
            wake,
            own: own_rx,
            last: BTreeMap::new(),
            left_flight: None,
        };
        let tender = Tender {
            monitor: &monitor,
            campaign: &campaign,
            spec: &spec,
            reports,
            own: own_tx,
            held: BTreeMap::new(),
            sent: 0,
        };
        let silences = async {
            if spec.silences() {
                tender.run(wanted_rx.clone()).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = task_stop.cancelled() => {}
            () = looker.run(wanted_rx.clone()) => {}
            () = silences => {}
        }
    });
    MonitorLink {
        seen,
        wanted: wanted_tx,
        _stop: stop.drop_guard(),
    }
}

/// The look loop.
struct Looker<'a, M> {
    monitor: &'a M,
    campaign: &'a str,
    spec: &'a AlertsSpec,
    seen: watch::Sender<Observation>,
    wake: Arc<Notify>,
    /// The ids of the campaign's own silences (from the silence loop).
    own: watch::Receiver<HashSet<String>>,
    /// The alerts of each source's last good answer.
    last: BTreeMap<SourceKind, Vec<alerts::Alert>>,
    left_flight: Option<Timestamp>,
}

impl<M: Monitor> Looker<'_, M> {
    /// Returns once the scheduler is gone.
    async fn run(mut self, mut wanted: watch::Receiver<Wanted>) {
        self.left_flight = wanted.borrow_and_update().left_flight;
        let mut ticker = tokio::time::interval(self.spec.check_every());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let left = wanted.borrow_and_update().left_flight;
                    if left == self.left_flight {
                        continue;
                    }
                    self.left_flight = left;
                }
            }
            self.look().await;
        }
    }

    /// Asks every source once (together: each under the request timeout),
    /// works out what holds, and publishes it.
    async fn look(&mut self) {
        let sources = self.spec.sources();
        let mut asked_at = Timestamp::now();
        if let Some(left) = self.left_flight.filter(|left| asked_at <= *left) {
            // Asked after this loop heard of the node leaving: newer than
            // that, whatever the clock's grain.
            asked_at = left.saturating_add(Duration::from_millis(1));
        }
        // At most two sources, asked together.
        let (first, second) = tokio::join!(
            ask(self.monitor, sources.first()),
            ask(self.monitor, sources.get(1))
        );
        let mut failures = BTreeMap::new();
        for (source, result) in sources.iter().zip(first.into_iter().chain(second)) {
            match result {
                Ok(alerts) => {
                    self.last.insert(source.kind, alerts);
                }
                Err(why) => {
                    failures.insert(source.kind, why);
                }
            }
        }
        let own = self.own.borrow().clone();
        let all: Vec<&alerts::Alert> = self.last.values().flatten().collect();
        let blocking = alerts::blocking(self.spec, &all, &own);
        self.seen.send_modify(|seen| {
            for (source, answer) in sources.iter().zip(&mut seen.answers) {
                match failures.remove(&source.kind) {
                    None => {
                        answer.answered_at = Some(asked_at);
                        answer.failure = None;
                    }
                    Some(why) => {
                        if answer.failure.is_none() {
                            tracing::warn!(campaign = %self.campaign, source = %source, error = %Untrusted(&why), "A monitoring API cannot be asked; the campaign holds new starts.");
                        }
                        answer.failure = Some(why);
                    }
                }
            }
            seen.blocking = blocking;
            seen.looks += 1;
        });
        self.wake.notify_one();
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

/// The silence loop.
struct Tender<'a, M> {
    monitor: &'a M,
    campaign: &'a str,
    spec: &'a AlertsSpec,
    reports: mpsc::Sender<Report>,
    own: watch::Sender<HashSet<String>>,
    /// The leases this loop knows: it is their one owner while it runs.
    held: BTreeMap<String, Lease>,
    /// Reports sent so far.
    sent: u64,
}

impl<M: Monitor> Tender<'_, M> {
    /// Returns once the scheduler is gone.
    async fn run(mut self, mut wanted: watch::Receiver<Wanted>) {
        self.held = wanted.borrow_and_update().stored.clone();
        self.own
            .send_modify(|own| own.extend(self.held.values().map(|l| l.id.clone())));
        let mut ticker = tokio::time::interval(self.spec.check_every());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let now = wanted.borrow_and_update().clone();
            if !self.tend(&now).await {
                return;
            }
        }
    }

    /// Reports again what the store did not take, then makes, renews and
    /// expires silences until they are as `wanted` says; false once the
    /// scheduler is gone.
    async fn tend(&mut self, wanted: &Wanted) -> bool {
        let Some(base) = self.spec.alertmanager_url.as_deref() else {
            return true;
        };
        if wanted.taken >= self.sent {
            // Every report was taken, so the store should hold what this
            // loop holds: a difference is an outcome it refused.
            for (node, outcome) in unstored(&self.held, &wanted.stored) {
                tracing::info!(campaign = %self.campaign, node = %node, "A silence outcome the store did not take is reported again.");
                if !self.report(node, outcome).await {
                    return false;
                }
            }
        }
        let lease = Duration::from_secs(self.spec.silence.lease_secs);
        for act in silence::acts(&wanted.nodes, &self.held, lease, Timestamp::now()) {
            let (node, outcome) = self.act(base, act).await;
            if !self.report(node, outcome).await {
                return false;
            }
        }
        true
    }

    async fn report(&mut self, node: String, outcome: Outcome) -> bool {
        self.sent += 1;
        let report = Report {
            campaign: self.campaign.to_owned(),
            node,
            outcome,
            seq: self.sent,
        };
        self.reports.send(report).await.is_ok()
    }

    /// Keeps `lease` as `node`'s, its id as one of the campaign's own.
    fn hold(&mut self, node: &str, lease: &Lease) {
        self.own
            .send_if_modified(|own| own.insert(lease.id.clone()));
        self.held.insert(node.to_owned(), lease.clone());
    }

    async fn act(&mut self, base: &str, act: Act) -> (String, Outcome) {
        let now = Timestamp::now();
        match act {
            Act::Create { node } => {
                let outcome = match self.post(base, &node, None, now).await {
                    Ok(lease) => {
                        self.hold(&node, &lease);
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
                        self.hold(&node, &lease);
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
        let post = silence::post(self.spec, self.campaign, node, renewing, now)
            .map_err(PostError::Failed)?;
        let id = self.monitor.post_silence(base, post.body).await?;
        Ok(Lease {
            id,
            from: post.from,
            until: post.until,
        })
    }
}

/// Where the store's leases (`stored`) differ from those the silence loop
/// holds: the outcomes that, taken, make them the same.
pub(super) fn unstored(
    held: &BTreeMap<String, Lease>,
    stored: &BTreeMap<String, Lease>,
) -> Vec<(String, Outcome)> {
    let nodes: BTreeSet<&String> = held.keys().chain(stored.keys()).collect();
    nodes
        .into_iter()
        .filter_map(|node| {
            let outcome = match (held.get(node), stored.get(node)) {
                (Some(h), Some(s)) if h == s => return None,
                (None, None) => return None,
                (Some(h), None) => Outcome::Created(h.clone()),
                (Some(h), Some(s)) => Outcome::Renewed {
                    lease: h.clone(),
                    old_id: s.id.clone(),
                },
                (None, Some(s)) => Outcome::Expired(s.clone()),
            };
            Some((node.clone(), outcome))
        })
        .collect()
}

#[cfg(test)]
mod tests;
