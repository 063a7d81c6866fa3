//! The agent's side of the session: connect, Hello, Welcome, then a report
//! every interval until the stream breaks; then back off and reconnect,
//! to the server `leader.rs` chooses among the configured ones. Nothing
//! here panics on a broken stream: every failure ends the session, and the
//! loop starts another. `actions.rs` serves the server's action requests.

mod actions;
pub mod leader;
mod renewal;

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message as _;
use rollcall_proto::model::{
    ContainersSection, DisksSection, HostFacts, RebootSection, Report, Role, UpdatesSection,
};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1::{self, agent_message, server_message};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use self::actions::update_message;
use self::leader::{Ended, Target, next_server};
use crate::actions::{Actions, Record};
use crate::backoff::Backoff;
use crate::collect::{Sources, same_outcome};
use crate::config::ConfigError;
use crate::renew::{CertFiles, Renewal};

/// Everything a session needs, resolved from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The servers' URLs: one, or every replica's (checked and normalized
    /// by [`Session::new`]).
    pub servers: Vec<String>,
    /// The name in the agent certificate.
    pub node: String,
    pub role: Role,
    pub labels: BTreeMap<String, String>,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub report_interval: Duration,
    /// Every this many intervals a report carries every section.
    pub full_every: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// This boot's id as Hello carries it: empty when the agent could not
    /// read it (see [`crate::collect::boot_id`]).
    pub boot_id: String,
    /// Where the certificate and key live, when the agent renews its own:
    /// every connection then reads them afresh (`cert_pem` and `key_pem`
    /// only check them at start). `None`: the PEM above, for good.
    pub renew: Option<CertFiles>,
}

/// How long the server may take to answer Hello with Welcome.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest message the agent accepts from the server.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("server refused the session: {0}")]
    Refused(String),
    #[error("no Welcome from the server within {0:?}")]
    NoWelcome(Duration),
    #[error("stream failed: {0}")]
    Stream(String),
    #[error("server closed the session")]
    Closed,
    #[error("this server is a follower; it names the leader {}", rollcall_proto::text::Untrusted(.0))]
    Follower(String),
}

impl SessionError {
    /// A refusal or a broken stream, told apart from a follower's answer,
    /// which names the leader.
    fn from_status(s: &tonic::Status, make: fn(String) -> Self) -> Self {
        match rollcall_proto::servers::leader_hint(s) {
            Some(leader) => Self::Follower(leader.to_owned()),
            None => make(format!("{:?}: {}", s.code(), s.message())),
        }
    }

    fn leader(&self) -> Option<&str> {
        match self {
            Self::Follower(leader) => Some(leader),
            _ => None,
        }
    }
}

enum End {
    Shutdown,
}

/// The sections as last sent in this session; a partial report carries
/// only what differs from them.
#[derive(Default)]
struct Sent {
    host: Option<HostFacts>,
    containers: Option<ContainersSection>,
    disks: Option<DisksSection>,
    reboot: Option<RebootSection>,
    updates: Option<UpdatesSection>,
}

/// What this agent process has sent, over all its sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub reports: u64,
    pub full_reports: u64,
    /// Encoded size of every report sent, and of the full ones among them.
    pub bytes: u64,
    pub full_bytes: u64,
}

pub struct Session {
    settings: Settings,
    /// The server of the current (or next) session.
    target: Target,
    /// The current session got its Welcome.
    welcomed: bool,
    /// Renews the certificate over the session, if `settings.renew` says where.
    renewal: Option<Renewal>,
    sources: Sources,
    /// The actions this agent may run; `None`: it refuses every request.
    actions: Option<Actions>,
    /// Finished actions come back here from the tasks that ran them.
    done_tx: mpsc::UnboundedSender<Record>,
    done_rx: mpsc::UnboundedReceiver<Record>,
    /// The tasks that watch running actions. Dropped with the session (the
    /// agent stops): the actions run on, and the next agent re-adopts them.
    watchers: tokio::task::JoinSet<()>,
    /// How long an action may run when the request names no timeout.
    action_timeout: Duration,
    seq: u64,
    sent: Sent,
    /// The select loop took a new reboot check off the watch (`changed`
    /// marks it seen, so `has_changed` no longer tells): it is news.
    reboot_news: bool,
    /// When the last patch or hook finished, until a report at the interval
    /// has carried a reboot check that ran after it (see [`reboot_due`]).
    reboot_owed: Option<Timestamp>,
    stats: Stats,
}

/// Changes that arrive within this window go out in one report.
const DEBOUNCE: Duration = Duration::from_millis(100);

async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Sleeps until the wall-clock time `at`, or forever without one.
async fn sleep_until(at: Option<Timestamp>) {
    match at {
        Some(at) => tokio::time::sleep(at.since(Timestamp::now())).await,
        None => std::future::pending().await,
    }
}

fn differs<T: PartialEq>(sent: &Option<T>, now: &T) -> bool {
    sent.as_ref() != Some(now)
}

impl Session {
    pub fn new(mut settings: Settings, sources: Sources) -> Result<Self, ConfigError> {
        // One spelling of each URL: a follower's hint is compared with them.
        settings.servers = rollcall_proto::servers::normalize_list(&settings.servers)
            .map_err(|e| ConfigError::Invalid(format!("server: {e}")))?;
        for url in &settings.servers {
            rollcall_proto::connect::endpoint(
                url,
                &settings.ca_pem,
                &settings.cert_pem,
                &settings.key_pem,
            )
            .map_err(ConfigError::Invalid)?;
        }
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let renewal = settings
            .renew
            .clone()
            .map(|files| Renewal::new(files, settings.node.clone()));
        Ok(Self {
            target: Target::first(&settings.servers),
            welcomed: false,
            settings,
            renewal,
            sources,
            actions: None,
            done_tx,
            done_rx,
            watchers: tokio::task::JoinSet::new(),
            action_timeout: Duration::from_secs(3_600),
            seq: 0,
            sent: Sent::default(),
            reboot_news: false,
            reboot_owed: None,
            stats: Stats::default(),
        })
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Lets the server ask for the actions `actions` defines; without them
    /// the agent refuses every request.
    pub fn with_actions(mut self, actions: Actions, default_timeout: Duration) -> Self {
        self.actions = Some(actions);
        self.action_timeout = default_timeout;
        self
    }

    /// Runs sessions until `shutdown`, reconnecting with backoff; returns
    /// what it sent.
    pub async fn run(mut self, shutdown: CancellationToken) -> Stats {
        // Actions that ran when the last agent stopped: watch them to their
        // end, which is reported like that of any action.
        for running in self
            .actions
            .as_mut()
            .map(Actions::take_adopted)
            .unwrap_or_default()
        {
            self.watch(running);
        }
        let mut backoff = Backoff::new(self.settings.backoff_initial, self.settings.backoff_max);
        loop {
            match self.once(&shutdown, &mut backoff).await {
                Ok(End::Shutdown) => {
                    tracing::info!(
                        reports = self.stats.reports,
                        full_reports = self.stats.full_reports,
                        bytes = self.stats.bytes,
                        full_bytes = self.stats.full_bytes,
                        "Session statistics."
                    );
                    return self.stats;
                }
                Err(e) => {
                    self.renewal_session_ended();
                    let ended = Ended {
                        welcomed: self.welcomed,
                        leader: e.leader(),
                    };
                    let next = next_server(&self.settings.servers, &self.target, ended);
                    let delay = if next.wait {
                        backoff.next_delay()
                    } else {
                        Duration::ZERO
                    };
                    if ended.leader.is_some() {
                        tracing::info!(server = %self.target.url, error = %e, retry_in_ms = delay.as_millis() as u64, "A follower refused the session.");
                    } else {
                        tracing::warn!(server = %self.target.url, error = %e, retry_in_ms = delay.as_millis() as u64, "Session ended; will reconnect.");
                    }
                    if next.target.url != self.target.url {
                        tracing::info!(server = %next.target.url, previous = %self.target.url, off_list = next.target.off_list, "Talking to another rollcall-server from now on.");
                    }
                    self.target = next.target;
                    tokio::select! {
                        _ = shutdown.cancelled() => return self.stats,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn hello(&self) -> v1::AgentMessage {
        v1::AgentMessage {
            msg: Some(agent_message::Msg::Hello(v1::Hello {
                node: self.settings.node.clone(),
                role: v1::Role::from(self.settings.role).into(),
                labels: self.settings.labels.clone().into_iter().collect(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                boot_id: self.settings.boot_id.clone(),
                hostname: sysinfo::System::host_name().unwrap_or_default(),
                actions: self
                    .actions
                    .as_ref()
                    .map(|a| a.definitions().names())
                    .unwrap_or_default(),
                pending_action_ids: self
                    .actions
                    .as_ref()
                    .map(Actions::pending_ids)
                    .unwrap_or_default(),
            })),
        }
    }

    /// A report at the interval: metrics always, every other section if
    /// `full` or if it changed since it was last sent.
    fn interval_report(&mut self, full: bool) -> Report {
        let (host, metrics) = self.sources.host.host();
        let network = self.sources.host.network();
        let disks = self.sources.disks();
        let mut report = self.changes(full);
        // The check owed since a patch went out in a report at the interval,
        // which no burst of change-driven reports can crowd out: settled.
        if let (Some(owed), Some(r)) = (self.reboot_owed, &report.reboot)
            && checked_since(r, owed)
        {
            self.reboot_owed = None;
        }
        if full || differs(&self.sent.host, &host) {
            self.sent.host = Some(host.clone());
            report.host = Some(host);
        }
        if let Some(d) = disks
            && (full || differs(&self.sent.disks, &d))
        {
            self.sent.disks = Some(d.clone());
            report.disks = Some(d);
        }
        report.metrics = Some(metrics);
        report.network = network;
        report.full = full;
        report
    }

    /// The event-driven sections that changed since they were last sent
    /// (all of them if `full`).
    fn changes(&mut self, full: bool) -> Report {
        self.seq += 1;
        let mut report = Report {
            seq: self.seq,
            collected_at: Timestamp::now(),
            ..Default::default()
        };
        if let Some(rx) = &mut self.sources.containers {
            let now = rx.borrow_and_update().clone();
            if full || differs(&self.sent.containers, &now) {
                self.sent.containers = Some(now.clone());
                report.containers = Some(now);
            }
        }
        if let Some(rx) = &mut self.sources.reboot {
            // The watch only announces news (see `spawn_reboot`): a first
            // check, a check after a patch, or a changed outcome.
            let news = std::mem::take(&mut self.reboot_news) | rx.has_changed().unwrap_or(false);
            let now = rx.borrow_and_update().clone();
            if full || reboot_due(news, self.reboot_owed, self.sent.reboot.as_ref(), &now) {
                self.sent.reboot = Some(now.clone());
                report.reboot = Some(now);
            }
        }
        if let Some(rx) = &mut self.sources.updates {
            let now = rx.borrow_and_update().clone();
            if full || differs(&self.sent.updates, &now) {
                self.sent.updates = Some(now.clone());
                report.updates = Some(now);
            }
        }
        report
    }

    /// Queues a report; a full queue drops it (the next one supersedes it).
    fn send(
        &mut self,
        tx: &mpsc::Sender<v1::AgentMessage>,
        report: Report,
    ) -> Result<(), SessionError> {
        let full = report.full;
        let msg = v1::AgentMessage {
            msg: Some(agent_message::Msg::Report(report.into())),
        };
        let len = msg.encoded_len() as u64;
        match tx.try_send(msg) {
            Ok(()) => {
                self.stats.reports += 1;
                self.stats.full_reports += u64::from(full);
                self.stats.bytes += len;
                self.stats.full_bytes += if full { len } else { 0 };
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                // What was not sent must go in the next report.
                self.sent = Sent::default();
                tracing::warn!("Server is not taking reports fast enough; skipped one.");
                Ok(())
            }
            Err(TrySendError::Closed(_)) => Err(SessionError::Closed),
        }
    }

    async fn once(
        &mut self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<End, SessionError> {
        self.welcomed = false;
        let endpoint = self.connector()?;
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return Ok(End::Shutdown),
            c = endpoint.connect() => c.map_err(|e| SessionError::Connect(rollcall_proto::connect::error_chain(&e)))?,
        };
        let mut client = v1::agent_service_client::AgentServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(self.hello())
            .expect("a new channel has room for Hello");
        let response = client
            .session(ReceiverStream::new(rx))
            .await
            .map_err(|s| SessionError::from_status(&s, SessionError::Refused))?;
        let mut inbound = response.into_inner();
        let first = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message())
            .await
            .map_err(|_| SessionError::NoWelcome(WELCOME_TIMEOUT))?
            .map_err(|s| SessionError::from_status(&s, SessionError::Refused))?;
        let Some(v1::ServerMessage {
            msg: Some(server_message::Msg::Welcome(welcome)),
        }) = first
        else {
            return Err(SessionError::Refused(
                "server did not answer Hello with Welcome".into(),
            ));
        };
        self.welcomed = true;
        let mut interval = self.interval_from(&welcome);
        // The backoff starts over only once the session has proved itself
        // for an interval: a failure right after Welcome (a report the
        // server refuses, say) must not turn into a reconnect storm.
        let proven_at = tokio::time::Instant::now() + interval;
        let mut proven = false;
        tracing::info!(server = %self.target.url, node = %welcome.node, interval_secs = interval.as_secs(), "Connected.");

        // Results the server has not acknowledged go again.
        for record in self
            .actions
            .as_ref()
            .map(Actions::unacknowledged)
            .unwrap_or_default()
        {
            let _ = tx.try_send(update_message(record.result));
        }
        // A new session starts from nothing: the first report is full and
        // goes at once (the first tick fires immediately).
        self.sent = Sent::default();
        let mut ticks: u64 = 0;
        let full_every = u64::from(self.settings.full_every.max(1));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let renew_due = self.renewal_due();
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(End::Shutdown),
                _ = ticker.tick() => {
                    if !proven && tokio::time::Instant::now() >= proven_at {
                        proven = true;
                        backoff.reset();
                    }
                    let full = ticks.is_multiple_of(full_every);
                    ticks += 1;
                    let report = self.interval_report(full);
                    self.send(&tx, report)?;
                    self.resend_unacknowledged(&tx);
                }
                () = changed(&mut self.sources.containers) => self.send_changes(&tx).await?,
                () = changed(&mut self.sources.reboot) => {
                    self.reboot_news = true;
                    self.send_changes(&tx).await?;
                }
                () = changed(&mut self.sources.updates) => self.send_changes(&tx).await?,
                Some(record) = self.done_rx.recv() => self.finished(record, &tx),
                () = sleep_until(renew_due) => self.renew_now(&tx),
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => {
                        if let Some(new_interval) = self.handle(msg, &tx)
                            && new_interval != interval
                        {
                            interval = new_interval;
                            ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        }
                    }
                    Ok(None) => return Err(SessionError::Closed),
                    Err(s) => return Err(SessionError::from_status(&s, SessionError::Stream)),
                },
            }
        }
    }

    /// Something changed between intervals: wait a moment for the rest of
    /// a burst (a container restart is several events), then send it.
    async fn send_changes(
        &mut self,
        tx: &mpsc::Sender<v1::AgentMessage>,
    ) -> Result<(), SessionError> {
        tokio::time::sleep(DEBOUNCE).await;
        let report = self.changes(false);
        if report.containers.is_some() || report.reboot.is_some() || report.updates.is_some() {
            self.send(tx, report)?;
        } else {
            self.seq -= 1;
        }
        Ok(())
    }

    fn interval_from(&self, welcome: &v1::Welcome) -> Duration {
        match welcome.report_interval_secs {
            0 => self.settings.report_interval,
            n => Duration::from_secs(n.min(3_600).into()),
        }
    }

    /// Handles one server message; returns a new report interval if the
    /// server set one.
    fn handle(
        &mut self,
        msg: v1::ServerMessage,
        tx: &mpsc::Sender<v1::AgentMessage>,
    ) -> Option<Duration> {
        match msg.msg {
            Some(server_message::Msg::Welcome(w)) => Some(self.interval_from(&w)),
            Some(server_message::Msg::ActionRequest(req)) => {
                self.action_request(req, tx);
                None
            }
            Some(server_message::Msg::Ack(ack)) => {
                if let Some(actions) = &mut self.actions {
                    actions.acknowledge(&ack.action_ids);
                }
                None
            }
            Some(server_message::Msg::CertificateIssued(answer)) => {
                self.certificate_issued(answer);
                None
            }
            Some(server_message::Msg::Notice(notice)) => {
                // The server sends at most one a minute; its text is the
                // server's, about what this agent sent.
                tracing::warn!(
                    report_seq = notice.report_seq,
                    problems = ?notice.problems,
                    "The server cut or refused part of what this agent sent."
                );
                None
            }
            None => None,
        }
    }
}

/// Whether a partial report carries the reboot section `now`: when it is
/// news (a first check, a check asked for after an action, a changed
/// outcome), when its outcome differs from what this session sent, and when
/// it is the first check since a patch or hook finished (`owed`), whatever
/// it found. The last is the one a campaign waits for; it goes with the
/// change-driven report and again with the next report at the interval, so
/// one report lost on the way cannot hold a node until the next full report.
fn reboot_due(
    news: bool,
    owed: Option<Timestamp>,
    sent: Option<&RebootSection>,
    now: &RebootSection,
) -> bool {
    news || owed.is_some_and(|t| checked_since(now, t))
        || sent.is_none_or(|s| !same_outcome(s, now))
}

/// The check ran at or after `t`.
fn checked_since(r: &RebootSection, t: Timestamp) -> bool {
    r.checked_at.is_some_and(|c| c >= t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::model::RebootReason;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_795_000_000_000 + secs * 1_000)
    }

    fn check(at: i64, required: bool) -> RebootSection {
        RebootSection {
            required,
            reasons: if required {
                vec![RebootReason {
                    source: "reboot-required-file".into(),
                    detail: "/var/run/reboot-required".into(),
                    packages: vec![],
                }]
            } else {
                vec![]
            },
            checked_at: Some(t(at)),
            ..Default::default()
        }
    }

    #[test]
    fn a_check_after_a_patch_is_due_whatever_it_found() {
        let sent = check(10, false);
        // A routine re-check that found the same is not worth a report.
        assert!(!reboot_due(false, None, Some(&sent), &check(20, false)));
        // A changed outcome, or news from the watch, is.
        assert!(reboot_due(false, None, Some(&sent), &check(20, true)));
        assert!(reboot_due(true, None, Some(&sent), &check(20, false)));
        // A patch finished at 15: the check from 20 is owed although it
        // found what the server already has; the one from 12 is not.
        assert!(reboot_due(
            false,
            Some(t(15)),
            Some(&sent),
            &check(20, false)
        ));
        assert!(!reboot_due(
            false,
            Some(t(15)),
            Some(&sent),
            &check(12, false)
        ));
        // Nothing sent yet in this session: anything goes.
        assert!(reboot_due(false, None, None, &check(20, false)));
    }
}
