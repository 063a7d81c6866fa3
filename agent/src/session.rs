//! The agent's side of the session: connect, Hello, Welcome, then a report
//! every interval until the stream breaks; then back off and reconnect.
//! Nothing here panics on a broken stream: every failure ends the session,
//! and the loop starts another.

use std::collections::BTreeMap;
use std::time::Duration;

use rollcall_proto::model::{Report, Role};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1::{self, agent_message, server_message};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::backoff::Backoff;
use crate::collect::Collector;

/// Everything a session needs, resolved from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub server: String,
    /// The name in the agent certificate.
    pub node: String,
    pub role: Role,
    pub labels: BTreeMap<String, String>,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub report_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub boot_id: String,
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
}

enum End {
    Shutdown,
}

pub struct Session<C> {
    settings: Settings,
    endpoint: Endpoint,
    collector: C,
    seq: u64,
}

impl<C: Collector> Session<C> {
    pub fn new(settings: Settings, collector: C) -> Result<Self, String> {
        let endpoint = rollcall_proto::connect::endpoint(
            &settings.server,
            &settings.ca_pem,
            &settings.cert_pem,
            &settings.key_pem,
        )?;
        Ok(Self {
            settings,
            endpoint,
            collector,
            seq: 0,
        })
    }

    /// Runs sessions until `shutdown`, reconnecting with backoff.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.backoff_initial, self.settings.backoff_max);
        loop {
            match self.once(&shutdown, &mut backoff).await {
                Ok(End::Shutdown) => return,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(server = %self.settings.server, error = %e, retry_in_ms = delay.as_millis() as u64, "Session ended; will reconnect.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
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
                actions: Vec::new(),
                pending_action_ids: Vec::new(),
            })),
        }
    }

    fn report(&mut self) -> v1::AgentMessage {
        self.seq += 1;
        let (host, metrics) = self.collector.host();
        let report = Report {
            seq: self.seq,
            collected_at: Timestamp::now(),
            host,
            metrics,
        };
        v1::AgentMessage {
            msg: Some(agent_message::Msg::Report(report.into())),
        }
    }

    async fn once(
        &mut self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<End, SessionError> {
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return Ok(End::Shutdown),
            c = self.endpoint.connect() => c.map_err(|e| SessionError::Connect(chain(&e)))?,
        };
        let mut client = v1::agent_service_client::AgentServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(self.hello())
            .expect("a new channel has room for Hello");
        let response = client
            .session(ReceiverStream::new(rx))
            .await
            .map_err(|s| SessionError::Refused(format!("{:?}: {}", s.code(), s.message())))?;
        let mut inbound = response.into_inner();
        let first = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message())
            .await
            .map_err(|_| SessionError::NoWelcome(WELCOME_TIMEOUT))?
            .map_err(|s| SessionError::Refused(format!("{:?}: {}", s.code(), s.message())))?;
        let Some(v1::ServerMessage {
            msg: Some(server_message::Msg::Welcome(welcome)),
        }) = first
        else {
            return Err(SessionError::Refused(
                "server did not answer Hello with Welcome".into(),
            ));
        };
        backoff.reset();
        let mut interval = self.interval_from(&welcome);
        tracing::info!(server = %self.settings.server, node = %welcome.node, interval_secs = interval.as_secs(), "Connected.");

        // The first tick fires at once: a full report on connect.
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(End::Shutdown),
                _ = ticker.tick() => {
                    match tx.try_send(self.report()) {
                        Ok(()) => {}
                        // The server or the network is slow; the next report
                        // replaces this one, so dropping it loses nothing.
                        Err(TrySendError::Full(_)) => tracing::warn!("Server is not taking reports fast enough; skipped one."),
                        Err(TrySendError::Closed(_)) => return Err(SessionError::Closed),
                    }
                }
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
                    Err(s) => return Err(SessionError::Stream(format!("{:?}: {}", s.code(), s.message()))),
                },
            }
        }
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
        &self,
        msg: v1::ServerMessage,
        tx: &mpsc::Sender<v1::AgentMessage>,
    ) -> Option<Duration> {
        match msg.msg {
            Some(server_message::Msg::Welcome(w)) => Some(self.interval_from(&w)),
            Some(server_message::Msg::ActionRequest(req)) => {
                // This agent defines no actions yet: it refuses every request
                // rather than guess (the server only names actions; the agent
                // runs only what its own configuration defines).
                tracing::warn!(action_id = %req.action_id, name = %req.name, "Refused an action this agent does not define.");
                let update = v1::ActionUpdate {
                    action_id: req.action_id,
                    state: v1::ActionState::Rejected.into(),
                    error: "this agent's configuration defines no such action".into(),
                    boot_id: self.settings.boot_id.clone(),
                    ..Default::default()
                };
                let _ = tx.try_send(v1::AgentMessage {
                    msg: Some(agent_message::Msg::ActionUpdate(update)),
                });
                None
            }
            Some(server_message::Msg::Ack(_)) | None => None,
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
