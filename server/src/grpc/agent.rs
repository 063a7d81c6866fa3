//! `rollcall.v1.AgentService`: one session per agent.
//!
//! The handler checks the Hello against the certificate (`authz` let only
//! an agent certificate through), registers the session
//! with the fleet, and hands the rest of the inbound stream to a task of its
//! own; that task ends the session (and marks the node offline) when the
//! agent goes away, sends something invalid, or a newer session replaces it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_proto::admit;
use rollcall_proto::convert::role_from_wire;
use rollcall_proto::identity::Identity;
use rollcall_proto::model::Report;
use rollcall_proto::text::Untrusted;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1::{self, agent_message, server_message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::NamedService;

use super::authz::caller_of;
use super::session_guard::{Complaints, TokenBucket};
use super::session_stream::{self, Assembly, Inbound};
use crate::fleet::{ActionResults, FleetHandle, Hello, SessionId, SessionLink};
use crate::renewal::{CsrError, RENEWAL_EVERY, Signer};
use crate::revoke::Serial;
use crate::store::{SignedCertificate, WriterHandle};

/// Labels an agent may send: enough for any inventory, small enough that a
/// hostile agent cannot bloat the store.
const MAX_LABELS: usize = 64;
const MAX_LABEL_LEN: usize = 256;
/// Action ids a Hello may list; an agent keeps a record per action until
/// the server stored its result, a handful at a time. A longer list is
/// not read (and nothing concluded from it).
const MAX_HELD_ACTIONS: usize = 1_024;

pub struct AgentApi {
    pub fleet: FleetHandle,
    pub store: WriterHandle,
    pub report_interval: Duration,
    pub hello_timeout: Duration,
    pub max_message_bytes: usize,
    /// The session rate limit: messages a second, and at once.
    pub messages_per_sec: u32,
    pub message_burst: u32,
    pub assembly: Arc<Assembly>,
    /// Signs the certificates agents ask for when they renew their own.
    pub renewal: Arc<Signer>,
    pub shutdown: CancellationToken,
    /// Sessions opened and reports received are counted here.
    pub metrics: Arc<crate::metrics::Events>,
    /// Whether this server may still act (it leads), and its epoch.
    pub fence: crate::replica::Fence,
}

/// Boxed: a channel allocates room for 32 items up front, for every
/// session, and the channel is empty most of the time.
type Outbound = Result<Box<v1::ServerMessage>, Status>;

/// `rollcall.v1.AgentService` as a service of the gRPC server. Its one
/// method is framed by hand ([`session_stream`]) to keep a session's
/// memory small; everything else about it is ordinary gRPC.
#[derive(Clone)]
pub struct AgentService(pub Arc<AgentApi>);

impl NamedService for AgentService {
    const NAME: &'static str = "rollcall.v1.AgentService";
}

const SESSION_PATH: &str = "/rollcall.v1.AgentService/Session";

impl Service<http::Request<tonic::body::Body>> for AgentService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != SESSION_PATH {
                return Ok(Status::unimplemented(format!(
                    "no method {} in rollcall.v1.AgentService",
                    req.uri().path()
                ))
                .into_http());
            }
            let identity = match caller_of(req.extensions()) {
                Ok(who) => who.clone(),
                Err(status) => return Ok(status.into_http()),
            };
            let cert_not_after = req
                .extensions()
                .get::<super::tls::Peer>()
                .and_then(|p| p.cert_not_after);
            let inbound =
                Inbound::new(req.into_body(), api.max_message_bytes, api.assembly.clone());
            Ok(match api.session(identity, cert_not_after, inbound).await {
                Ok(rx) => session_stream::Outbound::response(rx),
                Err(status) => status.into_http(),
            })
        })
    }
}

impl AgentApi {
    async fn session(
        &self,
        identity: Identity,
        cert_not_after: Option<rollcall_proto::timestamp::Timestamp>,
        mut inbound: Inbound,
    ) -> Result<mpsc::Receiver<Outbound>, Status> {
        let first = tokio::time::timeout(self.hello_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within the hello timeout"))??;
        let Some(v1::AgentMessage {
            msg: Some(agent_message::Msg::Hello(hello)),
        }) = first.map(|m| *m)
        else {
            return Err(Status::invalid_argument(
                "the first message of a session must be Hello",
            ));
        };
        if hello.node != identity.name {
            tracing::warn!(certificate = %identity.name, claimed = %Untrusted(&hello.node), "Agent claimed another node's name; refused.");
            return Err(Status::permission_denied(format!(
                "this certificate is for node {:?}, but Hello claims {:?}",
                identity.name, hello.node
            )));
        }
        let hello = check_hello(hello, cert_not_after)?;
        let node = hello.node.clone();

        let kick = CancellationToken::new();
        // A few requests may wait for the session; a campaign asks one at a time.
        let (actions_tx, actions_rx) = mpsc::channel(8);
        let link = SessionLink {
            kick: kick.clone(),
            actions: actions_tx,
        };
        let session = self.fleet.connect(hello, link).await?;
        self.metrics.session_opened();
        let (tx, rx) = mpsc::channel(16);
        let welcome = v1::ServerMessage {
            msg: Some(server_message::Msg::Welcome(v1::Welcome {
                report_interval_secs: self.report_interval.as_secs() as u32,
                server_version: env!("CARGO_PKG_VERSION").to_owned(),
                node: node.clone(),
            })),
        };
        tx.try_send(Ok(Box::new(welcome)))
            .expect("a new channel has room for one message");
        let task = SessionTask {
            fleet: self.fleet.clone(),
            results: ActionResults::new(self.fleet.clone(), self.store.clone()),
            node,
            session,
            tx,
            bucket: TokenBucket::new(self.messages_per_sec, self.message_burst, Instant::now()),
            complaints: Complaints::default(),
            held_back: None,
            renewal: self.renewal.clone(),
            last_renewal: None,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            fence: self.fence.clone(),
        };
        tokio::spawn(task.run(inbound, kick, actions_rx, self.shutdown.clone()));
        Ok(rx)
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn check_hello(h: v1::Hello, cert_not_after: Option<Timestamp>) -> Result<Hello, Status> {
    let role = role_from_wire(h.role).ok_or_else(|| {
        Status::invalid_argument("Hello has no role: configure controller, compute or storage")
    })?;
    if h.labels.len() > MAX_LABELS {
        return Err(Status::invalid_argument(format!(
            "more than {MAX_LABELS} labels"
        )));
    }
    if let Some((k, _)) = h
        .labels
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
    {
        return Err(Status::invalid_argument(format!(
            "label {k:?}: keys must be 1 to {MAX_LABEL_LEN} bytes and values at most {MAX_LABEL_LEN}"
        )));
    }
    Ok(Hello {
        cert_not_after,
        node: h.node,
        role,
        labels: h.labels.into_iter().collect::<BTreeMap<_, _>>(),
        agent_version: truncate(h.agent_version, 64),
        boot_id: truncate(h.boot_id, 64),
        hostname: truncate(h.hostname, 253),
        held_actions: (h.pending_action_ids.len() <= MAX_HELD_ACTIONS).then(|| {
            // An id no action of ours can have is no action of ours.
            h.pending_action_ids
                .into_iter()
                .filter(|id| admit::is_action_id(id))
                .collect()
        }),
    })
}

fn truncate(mut s: String, max: usize) -> String {
    admit::cut_head(&mut s, max);
    s
}

struct SessionTask {
    metrics: Arc<crate::metrics::Events>,
    fleet: FleetHandle,
    results: ActionResults,
    node: String,
    session: SessionId,
    tx: mpsc::Sender<Outbound>,
    bucket: TokenBucket,
    complaints: Complaints,
    /// Reports that came over the rate limit, merged: applied at the next
    /// token, so a flood costs the fleet one report per token and the
    /// latest state of every section still arrives.
    held_back: Option<Box<Report>>,
    renewal: Arc<Signer>,
    /// When this session last asked for a certificate: one request per
    /// [`RENEWAL_EVERY`], so a session cannot keep the CA signing.
    last_renewal: Option<Instant>,
    /// Where a renewal's audit line goes.
    store: WriterHandle,
    fence: crate::replica::Fence,
}

impl SessionTask {
    async fn run(
        mut self,
        mut inbound: Inbound,
        kick: CancellationToken,
        mut actions: mpsc::Receiver<Box<rollcall_proto::model::ActionRequest>>,
        shutdown: CancellationToken,
    ) {
        let reason = loop {
            let msg = tokio::select! {
                _ = kick.cancelled() => break "replaced by a newer session".to_owned(),
                Some(mut request) = actions.recv() => {
                    // Room first, then the fence, then the send with no
                    // wait between: a session that reads slowly cannot
                    // hold a request until after the lease has ended. A
                    // replica whose lease may have ended sends nothing, and
                    // ends the session so the agent finds the new leader.
                    let Ok(permit) = self.tx.reserve().await else {
                        break "agent stopped reading".to_owned();
                    };
                    if !self.fence.valid() {
                        tracing::warn!(node = %self.node, action_id = %request.id, epoch = self.fence.epoch(), "Not sending an action: this replica no longer leads.");
                        break "this rollcall-server no longer leads".to_owned();
                    }
                    // A server on SQLite (epoch 0) leaves what the asker
                    // set (0 from the scheduler; tests play leaders).
                    if self.fence.epoch() != 0 {
                        request.leader_epoch = self.fence.epoch();
                    }
                    tracing::info!(node = %self.node, action_id = %request.id, kind = ?request.kind, leader_epoch = request.leader_epoch, "Asking the agent for an action.");
                    let msg = v1::ServerMessage {
                        msg: Some(server_message::Msg::ActionRequest((*request).into())),
                    };
                    permit.send(Ok(Box::new(msg)));
                    continue;
                }
                _ = shutdown.cancelled() => break "server shutting down".to_owned(),
                _ = sleep_until(self.complaints.due()), if self.complaints.pending() => {
                    self.complain(Instant::now());
                    continue;
                }
                _ = sleep_until(self.held_back_due()), if self.held_back.is_some() => {
                    if let Err(status) = Box::pin(self.release_held_back()).await {
                        break status.message().to_owned();
                    }
                    continue;
                }
                msg = inbound.message() => msg,
            };
            match msg {
                Ok(Some(msg)) => {
                    // Boxed: the task lives as long as the session and
                    // would otherwise carry this future's room all along.
                    if let Err(status) = Box::pin(self.handle(msg)).await {
                        let reason = status.message().to_owned();
                        let _ = self.tx.send(Err(status)).await;
                        break reason;
                    }
                }
                Ok(None) => break "agent closed the session".to_owned(),
                Err(status) => {
                    tracing::warn!(node = %self.node, code = ?status.code(), error = %Untrusted(status.message()), "Session stream failed.");
                    let reason = format!("stream error: {}", status.message());
                    // Tell the agent why (an oversized message, say), if it still listens.
                    let _ = self.tx.try_send(Err(status));
                    break reason;
                }
            }
        };
        self.fleet
            .disconnect(&self.node, self.session, reason)
            .await;
    }

    /// The operator audit's line for a certificate the server signed and
    /// recorded. A store that cannot take it does not keep the node from
    /// its certificate: the log says so instead.
    async fn audit_renewal(&self, not_after: Timestamp) {
        let who = Identity::agent(self.node.clone());
        if let Err(e) = crate::audit::record(
            &self.store,
            &who,
            crate::audit::AuditAction::RenewCertificate,
            &self.node,
            &format!("valid until {not_after}"),
        )
        .await
        {
            tracing::warn!(node = %self.node, error = %e, "A renewed certificate is not in the operator audit.");
        }
    }

    /// Records a certificate the server signed for this node, so that
    /// revoking the node by name finds it; said as the refusal the agent
    /// reads when the store cannot take it. Returns the certificate's end.
    async fn record_signed(&self, certificate_pem: &str) -> Result<Timestamp, String> {
        let unreadable = |e: String| format!("the signed certificate cannot be read back: {e}");
        let serial = Serial::of_pem(certificate_pem.as_bytes())
            .ok_or_else(|| unreadable("no serial".into()))?;
        let not_after = rollcall_proto::expiry::not_after_pem(certificate_pem.as_bytes())
            .map_err(|e| unreadable(e.to_string()))?;
        let cert = SignedCertificate {
            serial,
            identity: Identity::agent(self.node.clone()).uri(),
            issued: Timestamp::now(),
            not_after,
        };
        self.store.record_certificate(cert).await.map_err(|e| {
            format!("the server cannot record the certificate it would sign ({e}); ask again later")
        })?;
        Ok(not_after)
    }

    /// Signs the session's own certificate request and records it, or says
    /// why not: nothing leaves the server signed that is not on record.
    async fn renew(&mut self, csr_pem: &str, now: Instant) -> v1::CertificateIssued {
        if self
            .last_renewal
            .is_some_and(|at| now.duration_since(at) < RENEWAL_EVERY)
        {
            return v1::CertificateIssued {
                refused: format!(
                    "one certificate request per {}s per session; ask again later",
                    RENEWAL_EVERY.as_secs()
                ),
                ..Default::default()
            };
        }
        self.last_renewal = Some(now);
        match self.renewal.sign_at(&self.node, csr_pem, now) {
            Ok(certificate_pem) => match self.record_signed(&certificate_pem).await {
                Ok(not_after) => {
                    tracing::info!(node = %self.node, "Signed the agent's renewed certificate.");
                    self.audit_renewal(not_after).await;
                    v1::CertificateIssued {
                        certificate_pem,
                        ..Default::default()
                    }
                }
                Err(refused) => {
                    tracing::warn!(node = %self.node, reason = %refused, "Refused an agent's certificate request.");
                    v1::CertificateIssued {
                        refused,
                        ..Default::default()
                    }
                }
            },
            Err(refused @ CsrError::NoCaKey) => {
                // Said once at startup; every agent asks again and again.
                tracing::debug!(node = %self.node, reason = %refused, "Refused an agent's certificate request.");
                v1::CertificateIssued {
                    refused: refused.to_string(),
                    ..Default::default()
                }
            }
            Err(refused) => {
                tracing::warn!(node = %self.node, reason = %refused, "Refused an agent's certificate request.");
                v1::CertificateIssued {
                    refused: refused.to_string(),
                    ..Default::default()
                }
            }
        }
    }

    fn held_back_due(&self) -> Option<Instant> {
        let now = Instant::now();
        Some(now + self.bucket.wait(now))
    }

    /// Applies the reports held back over the rate limit, if a token is there.
    async fn release_held_back(&mut self) -> Result<(), Status> {
        if !self.bucket.take(Instant::now()) {
            return Ok(());
        }
        if let Some(report) = self.held_back.take() {
            self.fleet.report(&self.node, self.session, *report).await?;
        }
        Ok(())
    }

    /// Logs and tells the agent what it did wrong, if a notice is due.
    fn complain(&mut self, now: Instant) {
        if let Some(notice) = self.complaints.take(now) {
            notice.log(&self.node);
            let msg = v1::ServerMessage {
                msg: Some(server_message::Msg::Notice(notice.to_wire())),
            };
            // Never waits: an agent that does not read its notices loses them.
            let _ = self.tx.try_send(Ok(Box::new(msg)));
        }
    }

    /// Content the server cannot hold is cut or refused by the rules of
    /// [`admit`] and complained about; only a broken protocol (a second
    /// Hello, an empty message) ends the session.
    async fn handle(&mut self, msg: Box<v1::AgentMessage>) -> Result<(), Status> {
        match msg.msg {
            Some(agent_message::Msg::Report(report)) => {
                let seq = report.seq;
                let admitted = match admit::report(report, Timestamp::now()) {
                    Ok(admitted) => admitted,
                    Err(refused) => {
                        self.complaints.problems(seq, vec![refused.to_string()]);
                        self.complain(Instant::now());
                        return Ok(());
                    }
                };
                self.metrics.report();
                if !admitted.notes.is_empty() {
                    self.complaints.problems(seq, admitted.notes);
                    self.complain(Instant::now());
                }
                let report = match self.held_back.take() {
                    Some(mut older) => {
                        older.merge(admitted.value);
                        older
                    }
                    None => Box::new(admitted.value),
                };
                if self.bucket.take(Instant::now()) {
                    self.fleet.report(&self.node, self.session, *report).await?;
                } else {
                    self.held_back = Some(report);
                    self.complaints.dropped();
                    self.complain(Instant::now());
                }
            }
            Some(agent_message::Msg::ActionUpdate(_)) if !self.bucket.take(Instant::now()) => {
                // Not acknowledged, so the agent keeps it and sends it
                // again; a campaign asks again for what it waits on.
                self.complaints.dropped();
                self.complain(Instant::now());
            }
            Some(agent_message::Msg::ActionUpdate(update)) => {
                let result = match admit::action_update(&self.node, update) {
                    Ok(admitted) => {
                        if !admitted.notes.is_empty() {
                            self.complaints.problems(0, admitted.notes);
                            self.complain(Instant::now());
                        }
                        admitted.value
                    }
                    Err(refused) => {
                        self.complaints.problems(0, vec![refused.to_string()]);
                        self.complain(Instant::now());
                        return Ok(());
                    }
                };
                let id = result.id.clone();
                if self.results.take(&self.node, result).await?.ack() {
                    let ack = v1::ServerMessage {
                        msg: Some(server_message::Msg::Ack(v1::Ack {
                            report_seq: 0,
                            action_ids: vec![id],
                        })),
                    };
                    let _ = self.tx.send(Ok(Box::new(ack))).await;
                }
            }
            Some(agent_message::Msg::CertificateRequest(request)) => {
                let answer = self.renew(&request.csr_pem, Instant::now()).await;
                let msg = v1::ServerMessage {
                    msg: Some(server_message::Msg::CertificateIssued(answer)),
                };
                let _ = self.tx.send(Ok(Box::new(msg))).await;
            }
            Some(agent_message::Msg::Hello(_)) => {
                return Err(Status::invalid_argument(
                    "Hello may only be the first message of a session",
                ));
            }
            None => return Err(Status::invalid_argument("empty AgentMessage")),
        }
        Ok(())
    }
}
