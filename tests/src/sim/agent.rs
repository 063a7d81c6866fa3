//! One simulated agent: the session the real agent runs (agent/src/session.rs),
//! with the template's reports instead of collectors. Connect, Hello, wait
//! for Welcome, a full report at once, then a report every interval (full
//! every `full_every`, otherwise metrics and network), and a change-driven
//! report with the whole containers section when one of its containers
//! restarts or flips health. A broken session ends in the agent's own
//! backoff and a new session, which starts again with a full report.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rollcall_agent::backoff::Backoff;
use rollcall_proto::model::{Container, ContainerHealth, ContainerState, Report};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1::{self, agent_message, server_message};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::template::{NodeKey, wire};
use super::{Shared, SimAgent};

/// As in the real agent.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// What ended a session.
enum End {
    Stopped,
    /// Before the server's Welcome.
    Failed(String),
    /// After it.
    Broken(String),
}

/// One node: its identity and how its containers differ from the template.
struct Node {
    index: usize,
    key: NodeKey,
    changed: Vec<(usize, Container)>,
    seq: u64,
    /// A report was dropped on a full queue: the next one carries every
    /// section, as the agent's does.
    resend_all: bool,
}

pub(super) async fn run(shared: Arc<Shared>, index: usize, agent: SimAgent) {
    let counters = &shared.counters[index];
    let endpoint = match rollcall_proto::connect::endpoint(
        &shared.config.url,
        &shared.config.ca_pem,
        &agent.cert_pem,
        &agent.key_pem,
    ) {
        Ok(e) => e,
        Err(e) => return shared.failed(index, false, &format!("{}: {e}", agent.node)),
    };
    let mut node = Node {
        index,
        key: NodeKey::new(index, &agent.node),
        changed: Vec::new(),
        seq: 0,
        resend_all: false,
    };
    let mut backoff = Backoff::new(shared.config.backoff_initial, shared.config.backoff_max);
    let mut first = true;
    loop {
        let end = session(&shared, &endpoint, &mut node, &mut backoff, first).await;
        counters.set_connected(false);
        match end {
            End::Stopped => return,
            End::Failed(e) => shared.failed(index, false, &format!("{}: {e}", agent.node)),
            End::Broken(e) => shared.failed(index, true, &format!("{}: {e}", agent.node)),
        }
        first = false;
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn hello(shared: &Shared, node: &Node) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(agent_message::Msg::Hello(v1::Hello {
            node: node.key.name.clone(),
            role: v1::Role::from(shared.config.role).into(),
            labels: shared.config.labels.clone().into_iter().collect(),
            agent_version: concat!(env!("CARGO_PKG_VERSION"), "-sim").to_owned(),
            boot_id: node.key.boot_id.clone(),
            hostname: node.key.name.clone(),
            ..Default::default()
        })),
    }
}

async fn session(
    shared: &Shared,
    endpoint: &Endpoint,
    node: &mut Node,
    backoff: &mut Backoff,
    first: bool,
) -> End {
    let counters = &shared.counters[node.index];
    let stop = &shared.stop;
    // Only the first connect is paced: a fleet does not boot all at once,
    // but after a server restart every agent is on its own backoff.
    let permit = match first {
        true => tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            p = shared.handshakes.clone().acquire_owned() => Some(p.expect("the semaphore is never closed")),
        },
        false => None,
    };
    let channel = tokio::select! {
        _ = stop.cancelled() => return End::Stopped,
        c = endpoint.connect() => match c {
            Ok(c) => c,
            Err(e) => return End::Failed(format!("cannot connect: {}", rollcall_proto::connect::error_chain(&e))),
        },
    };
    let mut client = v1::agent_service_client::AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(8);
    tx.try_send(hello(shared, node))
        .expect("a new channel has room for Hello");
    let welcome = async {
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("refused: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(v1::ServerMessage {
                msg: Some(server_message::Msg::Welcome(w)),
            }))) => Ok((inbound, w)),
            Ok(Ok(_)) => Err("server did not answer Hello with Welcome".to_owned()),
            Ok(Err(s)) => Err(format!("refused: {:?}: {}", s.code(), s.message())),
            Err(_) => Err(format!("no Welcome within {WELCOME_TIMEOUT:?}")),
        }
    };
    let (mut inbound, welcome) = tokio::select! {
        _ = stop.cancelled() => return End::Stopped,
        w = welcome => match w {
            Ok(w) => w,
            Err(e) => return End::Failed(e),
        },
    };
    drop(permit);
    let interval = match welcome.report_interval_secs {
        0 => shared.config.interval,
        n => Duration::from_secs(n.min(3_600).into()),
    };
    counters.set_connected(true);
    counters.sessions.inc();
    let proven_at = Instant::now() + interval;
    let mut proven = false;

    // As the agent: a new session starts with a full report, at once.
    node.resend_all = false;
    if let Err(e) = send(shared, node, &tx, Kind::Full) {
        return End::Broken(e);
    }
    counters.sessions_reported.inc();
    // The first session joins a fleet in steady state: its full reports
    // fall on a tick of its own within `full_every`, and its interval on a
    // phase of its own, so that reports spread evenly as they do when
    // agents started at different times. A reconnect starts counting from
    // zero, as the agent does.
    let full_every = u64::from(shared.config.full_every.max(1));
    let mut ticks = 1 + if first {
        node.index as u64 % full_every
    } else {
        0
    };
    let mut ticker = tokio::time::interval_at(shared.next_slot(node.index, interval), interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_change = shared.next_change();
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            _ = ticker.tick() => {
                if !proven && Instant::now() >= proven_at {
                    proven = true;
                    backoff.reset();
                }
                let kind = if ticks.is_multiple_of(full_every) { Kind::Full } else { Kind::Interval };
                ticks += 1;
                send(shared, node, &tx, kind)
            }
            _ = sleep_until(next_change) => {
                next_change = shared.next_change();
                change_a_container(shared, node);
                send(shared, node, &tx, Kind::Change)
            }
            msg = inbound.message() => match msg {
                Ok(Some(msg)) => {
                    answer(node, msg, &tx);
                    Ok(())
                }
                Ok(None) => Err("server closed the session".to_owned()),
                Err(s) => Err(format!("stream failed: {:?}: {}", s.code(), s.message())),
            },
        };
        if let Err(e) = result {
            return End::Broken(e);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Full,
    Interval,
    Change,
}

/// Queues a report; as in the agent, a full queue drops it and the next
/// report carries every section.
fn send(
    shared: &Shared,
    node: &mut Node,
    tx: &mpsc::Sender<v1::AgentMessage>,
    kind: Kind,
) -> Result<(), String> {
    node.seq += 1;
    let elapsed = shared.started.elapsed().as_secs();
    let template = &shared.config.template;
    let report = match kind {
        Kind::Full => template.full_report(&node.key, &node.changed, node.seq, elapsed),
        Kind::Interval if node.resend_all => Report {
            full: false,
            ..template.full_report(&node.key, &node.changed, node.seq, elapsed)
        },
        Kind::Interval => template.partial_report(&node.key, node.seq, elapsed),
        Kind::Change => Report {
            seq: node.seq,
            collected_at: Timestamp::now(),
            containers: template.containers_section(&node.key, &node.changed),
            ..Default::default()
        },
    };
    let msg = wire(report);
    let len = msg.encoded_len() as u64;
    let counters = &shared.counters[node.index];
    match tx.try_send(msg) {
        Ok(()) => {
            node.resend_all = false;
            counters.reports.inc();
            counters.bytes.add(len);
            match kind {
                Kind::Full => counters.full_reports.inc(),
                Kind::Change => counters.change_reports.inc(),
                Kind::Interval => {}
            }
            Ok(())
        }
        Err(TrySendError::Full(_)) => {
            node.resend_all = true;
            counters.dropped.inc();
            Ok(())
        }
        Err(TrySendError::Closed(_)) => Err("server closed the session".to_owned()),
    }
}

/// One container restarts, or its health check starts or stops failing.
fn change_a_container(shared: &Shared, node: &mut Node) {
    let template = &shared.config.template;
    let count = template.containers().len();
    if count == 0 {
        return;
    }
    let i = fastrand::usize(0..count);
    let pos = node.changed.iter().position(|(j, _)| *j == i);
    let current = match pos {
        Some(p) => node.changed[p].1.clone(),
        None => match template.container(&node.key, i) {
            Some(c) => c,
            None => return,
        },
    };
    let mut c = current;
    let checked = c.health != ContainerHealth::None;
    if checked && fastrand::bool() {
        if c.health == ContainerHealth::Unhealthy {
            c.health = ContainerHealth::Healthy;
            c.failing_streak = 0;
            c.last_health_output = String::new();
        } else {
            c.health = ContainerHealth::Unhealthy;
            c.failing_streak = 3;
            c.last_health_output = format!(
                "There is no {} process with opened RabbitMQ ports (5671,5672) running in the container\n",
                c.name.replace('_', "-")
            );
        }
    } else {
        c.restart_count += 1;
        c.state = ContainerState::Running;
        c.exit_code = 0;
        c.finished_at = Some(Timestamp::now());
        c.started_at = Some(Timestamp::now());
    }
    match pos {
        Some(p) => node.changed[p].1 = c,
        None => node.changed.push((i, c)),
    }
}

/// The agent without actions refuses every request, and says so.
fn answer(node: &Node, msg: v1::ServerMessage, tx: &mpsc::Sender<v1::AgentMessage>) {
    if let Some(server_message::Msg::ActionRequest(req)) = msg.msg {
        let update = v1::ActionUpdate {
            action_id: req.action_id,
            state: v1::ActionState::Rejected.into(),
            error: "this agent's configuration defines no such action".into(),
            boot_id: node.key.boot_id.clone(),
            ..Default::default()
        };
        let _ = tx.try_send(v1::AgentMessage {
            msg: Some(agent_message::Msg::ActionUpdate(update)),
        });
    }
}
