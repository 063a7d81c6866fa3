//! The fleet: what the server knows about every node, now.
//!
//! One task owns the node table and loops over a command channel and a
//! ticker; sessions and operator calls hold a cheap [`FleetHandle`]. Every
//! change goes to the store writer (committed within one flush interval)
//! and to watchers through a broadcast channel. Reads are answered from
//! memory, so operators never wait on the disk.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rollcall_proto::model::{Node, NodeDetail, NodeEvent, NodeEventKind, NodeFilter, Report, Role};
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::{StoredNode, WriterHandle};

/// Identifies one session of a node; a newer session replaces an older one.
pub type SessionId = u64;

/// What an agent says about itself when its session opens (already checked
/// against its certificate).
#[derive(Clone, Debug)]
pub struct Hello {
    pub node: String,
    pub role: Role,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub boot_id: String,
    pub hostname: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the fleet service has stopped")]
pub struct FleetStopped;

enum Command {
    Connect {
        hello: Hello,
        kick: CancellationToken,
        reply: oneshot::Sender<SessionId>,
    },
    Report {
        node: String,
        session: SessionId,
        report: Box<Report>,
    },
    Disconnect {
        node: String,
        session: SessionId,
        reason: String,
    },
    List {
        filter: NodeFilter,
        reply: oneshot::Sender<Vec<Node>>,
    },
    Get {
        name: String,
        reply: oneshot::Sender<Option<NodeDetail>>,
    },
    Watch {
        reply: oneshot::Sender<(Vec<Node>, broadcast::Receiver<NodeEvent>)>,
    },
}

#[derive(Clone)]
pub struct FleetHandle {
    tx: mpsc::Sender<Command>,
}

impl FleetHandle {
    /// Registers a new session; an older session of the same node is ended.
    pub async fn connect(
        &self,
        hello: Hello,
        kick: CancellationToken,
    ) -> Result<SessionId, FleetStopped> {
        self.call(|reply| Command::Connect { hello, kick, reply })
            .await
    }

    pub async fn report(
        &self,
        node: &str,
        session: SessionId,
        report: Report,
    ) -> Result<(), FleetStopped> {
        let cmd = Command::Report {
            node: node.to_owned(),
            session,
            report: Box::new(report),
        };
        self.tx.send(cmd).await.map_err(|_| FleetStopped)
    }

    pub async fn disconnect(&self, node: &str, session: SessionId, reason: String) {
        let cmd = Command::Disconnect {
            node: node.to_owned(),
            session,
            reason,
        };
        let _ = self.tx.send(cmd).await;
    }

    pub async fn list(&self, filter: NodeFilter) -> Result<Vec<Node>, FleetStopped> {
        self.call(|reply| Command::List { filter, reply }).await
    }

    pub async fn get(&self, name: &str) -> Result<Option<NodeDetail>, FleetStopped> {
        let name = name.to_owned();
        self.call(|reply| Command::Get { name, reply }).await
    }

    /// Every node as it is now, and every event after that moment.
    pub async fn watch(&self) -> Result<(Vec<Node>, broadcast::Receiver<NodeEvent>), FleetStopped> {
        self.call(|reply| Command::Watch { reply }).await
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, FleetStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| FleetStopped)?;
        rx.await.map_err(|_| FleetStopped)
    }
}

struct Entry {
    node: Node,
    report: Option<Report>,
    session: Option<(SessionId, CancellationToken)>,
}

pub struct Fleet {
    nodes: HashMap<String, Entry>,
    writer: WriterHandle,
    events: broadcast::Sender<NodeEvent>,
    offline_after: Duration,
    next_session: SessionId,
}

/// Events a slow watcher may fall behind by before it is told it lagged.
const EVENT_BUFFER: usize = 16_384;

impl Fleet {
    /// Starts the fleet task from the stored nodes. Every node starts
    /// offline: none has a session with this process yet.
    pub fn spawn(
        stored: Vec<StoredNode>,
        writer: WriterHandle,
        offline_after: Duration,
        shutdown: CancellationToken,
    ) -> (FleetHandle, tokio::task::JoinHandle<()>) {
        let nodes = stored
            .into_iter()
            .map(|s| {
                let mut node = s.node;
                if node.online {
                    node.online = false;
                    node.offline_reason = "server restarted".into();
                }
                let entry = Entry {
                    node,
                    report: s.report,
                    session: None,
                };
                (entry.node.name.clone(), entry)
            })
            .collect();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let fleet = Fleet {
            nodes,
            writer,
            events,
            offline_after,
            next_session: 1,
        };
        let (tx, rx) = mpsc::channel(4_096);
        let task = tokio::spawn(fleet.run(rx, shutdown));
        (FleetHandle { tx }, task)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1).min(self.offline_after / 2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                _ = tick.tick() => self.expire(Timestamp::now()),
            }
        }
        self.writer.flush().await;
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Connect { hello, kick, reply } => {
                let id = self.next_session;
                self.next_session += 1;
                self.connect(hello, id, kick);
                let _ = reply.send(id);
            }
            Command::Report {
                node,
                session,
                report,
            } => self.report(&node, session, *report),
            Command::Disconnect {
                node,
                session,
                reason,
            } => self.disconnect(&node, session, reason),
            Command::List { filter, reply } => {
                let mut nodes: Vec<Node> = self
                    .nodes
                    .values()
                    .filter(|e| filter.matches(&e.node))
                    .map(|e| e.node.clone())
                    .collect();
                nodes.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send(nodes);
            }
            Command::Get { name, reply } => {
                let detail = self.nodes.get(&name).map(|e| NodeDetail {
                    node: e.node.clone(),
                    report: e.report.clone(),
                });
                let _ = reply.send(detail);
            }
            Command::Watch { reply } => {
                let mut nodes: Vec<Node> = self.nodes.values().map(|e| e.node.clone()).collect();
                nodes.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send((nodes, self.events.subscribe()));
            }
        }
    }

    fn connect(&mut self, hello: Hello, id: SessionId, kick: CancellationToken) {
        let now = Timestamp::now();
        let entry = self
            .nodes
            .entry(hello.node.clone())
            .or_insert_with(|| Entry {
                node: Node {
                    name: hello.node.clone(),
                    role: hello.role,
                    labels: BTreeMap::new(),
                    online: false,
                    offline_reason: String::new(),
                    first_seen: now,
                    last_seen: now,
                    agent_version: String::new(),
                    hostname: String::new(),
                    boot_id: String::new(),
                    last_report_at: None,
                    last_report_seq: 0,
                    os_pretty_name: String::new(),
                    kernel: String::new(),
                },
                report: None,
                session: None,
            });
        if let Some((old, old_kick)) = entry.session.take() {
            tracing::info!(node = %hello.node, old_session = old, session = id, "Node opened a new session; ending the old one.");
            old_kick.cancel();
        }
        let n = &mut entry.node;
        n.role = hello.role;
        n.labels = hello.labels;
        n.agent_version = hello.agent_version;
        n.boot_id = hello.boot_id;
        n.hostname = hello.hostname;
        n.online = true;
        n.offline_reason.clear();
        n.last_seen = now;
        entry.session = Some((id, kick));
        tracing::info!(node = %n.name, role = %n.role, session = id, "Node online.");
        self.publish(&hello.node, NodeEventKind::Online, false);
    }

    fn report(&mut self, name: &str, session: SessionId, report: Report) {
        let Some(entry) = self.nodes.get_mut(name) else {
            return;
        };
        if entry.session.as_ref().map(|s| s.0) != Some(session) {
            return; // a replaced session's last words
        }
        let n = &mut entry.node;
        let came_back = !n.online;
        n.online = true;
        n.offline_reason.clear();
        n.last_seen = Timestamp::now();
        n.last_report_at = Some(report.collected_at);
        n.last_report_seq = report.seq;
        n.hostname.clone_from(&report.host.hostname);
        n.boot_id.clone_from(&report.host.boot_id);
        n.os_pretty_name.clone_from(&report.host.os_pretty_name);
        n.kernel.clone_from(&report.host.kernel);
        entry.report = Some(report);
        if came_back {
            tracing::info!(node = %name, "Node reporting again; online.");
            self.publish(name, NodeEventKind::Online, false);
        }
        self.publish(name, NodeEventKind::Report, true);
    }

    fn disconnect(&mut self, name: &str, session: SessionId, reason: String) {
        let Some(entry) = self.nodes.get_mut(name) else {
            return;
        };
        if entry.session.as_ref().map(|s| s.0) != Some(session) {
            return;
        }
        entry.session = None;
        if entry.node.online {
            entry.node.online = false;
            entry.node.offline_reason = format!("session ended: {reason}");
            tracing::info!(node = %name, session, reason = %reason, "Node offline.");
            self.publish(name, NodeEventKind::Offline, false);
        }
    }

    /// Online nodes that stayed silent too long turn offline.
    fn expire(&mut self, now: Timestamp) {
        let stale = stale_nodes(
            self.nodes.values().map(|e| &e.node),
            now,
            self.offline_after,
        );
        for name in stale {
            if let Some(entry) = self.nodes.get_mut(&name) {
                entry.node.online = false;
                entry.node.offline_reason = format!(
                    "no report for {}s (missed reports)",
                    now.since(entry.node.last_seen).as_secs()
                );
                tracing::warn!(node = %name, "Node missed its reports; offline.");
                self.publish(&name, NodeEventKind::Offline, false);
            }
        }
    }

    fn publish(&mut self, name: &str, kind: NodeEventKind, with_report: bool) {
        let Some(entry) = self.nodes.get(name) else {
            return;
        };
        self.writer.put(StoredNode {
            node: entry.node.clone(),
            report: if with_report {
                entry.report.clone()
            } else {
                None
            },
        });
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(NodeEvent {
            kind,
            node: entry.node.clone(),
        });
    }
}

/// The online nodes whose last sign of life is older than `offline_after`.
pub fn stale_nodes<'a>(
    nodes: impl Iterator<Item = &'a Node>,
    now: Timestamp,
    offline_after: Duration,
) -> Vec<String> {
    nodes
        .filter(|n| n.online && now.since(n.last_seen) > offline_after)
        .map(|n| n.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::node;

    #[test]
    fn only_online_nodes_past_the_deadline_are_stale() {
        let mut fresh = node("fresh");
        fresh.last_seen = Timestamp::from_unix_millis(95_000);
        let mut old = node("old");
        old.last_seen = Timestamp::from_unix_millis(60_000);
        let mut old_offline = node("old-offline");
        old_offline.last_seen = Timestamp::from_unix_millis(10_000);
        old_offline.online = false;
        let nodes = [fresh, old, old_offline];
        let stale = stale_nodes(
            nodes.iter(),
            Timestamp::from_unix_millis(100_000),
            Duration::from_secs(30),
        );
        assert_eq!(stale, vec!["old".to_owned()]);
    }
}
