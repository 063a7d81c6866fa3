//! The fleet: what the server knows about every node, now.
//!
//! One task owns the node table and loops over a command channel and a
//! ticker; sessions and operator calls hold a cheap [`FleetHandle`]. Every
//! change goes to the store writer (committed within one flush interval)
//! and to watchers through a broadcast channel. Reads are answered from
//! memory, so operators never wait on the disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rollcall_proto::model::{
    ActionRequest, ActionResult, ContainerFilter, ContainerHealth, FleetSummary, FullFilesystem,
    Node, NodeContainer, NodeDetail, NodeEvent, NodeEventKind, NodeFilter, Report, Role,
};
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
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

/// What to do with an agent's update about an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateVerdict {
    /// Asked of this node and not finished: store it.
    Store,
    /// Already final here: nothing to store; the agent may forget it.
    AlreadyFinal,
    /// Never asked of this node: ignore it (and log why).
    Foreign(String),
}

/// How the fleet reaches a session: end it, or hand it action requests.
#[derive(Clone, Debug)]
pub struct SessionLink {
    pub kick: CancellationToken,
    pub actions: mpsc::Sender<ActionRequest>,
}

enum Command {
    Connect {
        hello: Hello,
        link: SessionLink,
        reply: oneshot::Sender<SessionId>,
    },
    SendAction {
        node: String,
        request: ActionRequest,
        reply: oneshot::Sender<Result<(), String>>,
    },
    ActionResult {
        result: Box<ActionResult>,
    },
    Action {
        id: String,
        reply: oneshot::Sender<Option<ActionResult>>,
    },
    CheckUpdate {
        node: String,
        id: String,
        reply: oneshot::Sender<UpdateVerdict>,
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
    Containers {
        filter: ContainerFilter,
        reply: oneshot::Sender<Vec<NodeContainer>>,
    },
    Summary {
        fs_threshold_percent: u32,
        reply: oneshot::Sender<FleetSummary>,
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
        link: SessionLink,
    ) -> Result<SessionId, FleetStopped> {
        self.call(|reply| Command::Connect { hello, link, reply })
            .await
    }

    /// Hands an action request to the node's current session. An error
    /// names why it could not (offline, session busy).
    pub async fn send_action(
        &self,
        node: &str,
        request: ActionRequest,
    ) -> Result<Result<(), String>, FleetStopped> {
        let node = node.to_owned();
        self.call(|reply| Command::SendAction {
            node,
            request,
            reply,
        })
        .await
    }

    /// Whether `node` may report on action `id`: only a node asked for an
    /// action may, and a final result is never replaced.
    pub async fn check_update(&self, node: &str, id: &str) -> Result<UpdateVerdict, FleetStopped> {
        let (node, id) = (node.to_owned(), id.to_owned());
        self.call(|reply| Command::CheckUpdate { node, id, reply })
            .await
    }

    /// Records an agent's (already stored) word about an action.
    pub async fn action_result(&self, result: ActionResult) {
        let _ = self
            .tx
            .send(Command::ActionResult {
                result: Box::new(result),
            })
            .await;
    }

    /// The latest result of an action, by id.
    pub async fn action(&self, id: &str) -> Result<Option<ActionResult>, FleetStopped> {
        let id = id.to_owned();
        self.call(|reply| Command::Action { id, reply }).await
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

    /// Containers across the fleet, sorted by node then name.
    pub async fn containers(
        &self,
        filter: ContainerFilter,
    ) -> Result<Vec<NodeContainer>, FleetStopped> {
        self.call(|reply| Command::Containers { filter, reply })
            .await
    }

    /// What needs attention, with filesystems above `fs_threshold_percent`.
    pub async fn summary(&self, fs_threshold_percent: u32) -> Result<FleetSummary, FleetStopped> {
        self.call(|reply| Command::Summary {
            fs_threshold_percent,
            reply,
        })
        .await
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
    session: Option<(SessionId, SessionLink)>,
}

pub struct Fleet {
    nodes: HashMap<String, Entry>,
    actions: HashMap<String, ActionResult>,
    writer: WriterHandle,
    events: broadcast::Sender<NodeEvent>,
    offline_after: Duration,
    next_session: SessionId,
    /// Pokes the campaign scheduler when something it waits for happens.
    wake: Arc<Notify>,
}

/// Events a slow watcher may fall behind by before it is told it lagged.
const EVENT_BUFFER: usize = 16_384;

impl Fleet {
    /// Starts the fleet task from the stored nodes. Every node starts
    /// offline: none has a session with this process yet.
    pub fn spawn(
        stored: Vec<StoredNode>,
        actions: Vec<ActionResult>,
        writer: WriterHandle,
        offline_after: Duration,
        wake: Arc<Notify>,
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
            actions: actions.into_iter().map(|a| (a.id.clone(), a)).collect(),
            writer,
            events,
            offline_after,
            next_session: 1,
            wake,
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
            Command::Connect { hello, link, reply } => {
                let id = self.next_session;
                self.next_session += 1;
                self.connect(hello, id, link);
                let _ = reply.send(id);
                self.wake.notify_one();
            }
            Command::SendAction {
                node,
                request,
                reply,
            } => {
                let issued = ActionResult {
                    id: request.id.clone(),
                    node: node.clone(),
                    state: rollcall_proto::model::ActionState::Accepted,
                    exit_code: None,
                    output_tail: String::new(),
                    error: String::new(),
                    started_at: None,
                    finished_at: None,
                    boot_id: String::new(),
                };
                let sent = match self.nodes.get(&node).and_then(|e| e.session.as_ref()) {
                    None => Err(format!("node {node} has no session (offline)")),
                    Some(_)
                        if self
                            .actions
                            .get(&request.id)
                            .is_some_and(|a| a.node != node) =>
                    {
                        Err(format!("action id {} belongs to another node", request.id))
                    }
                    Some((_, link)) => link
                        .actions
                        .try_send(request)
                        .map_err(|e| format!("node {node}'s session cannot take the request: {e}")),
                };
                if sent.is_ok() && !self.actions.contains_key(&issued.id) {
                    // Remember whom it was asked of, so only that node may
                    // answer, across restarts too.
                    self.writer.queue_action(issued.clone());
                    self.actions.insert(issued.id.clone(), issued);
                }
                let _ = reply.send(sent);
            }
            Command::CheckUpdate { node, id, reply } => {
                let verdict = match self.actions.get(&id) {
                    None => {
                        UpdateVerdict::Foreign(format!("action {id} was never asked of {node}"))
                    }
                    Some(a) if a.node != node => UpdateVerdict::Foreign(format!(
                        "action {id} was asked of {}, not {node}",
                        a.node
                    )),
                    Some(a) if a.state.is_final() => UpdateVerdict::AlreadyFinal,
                    Some(_) => UpdateVerdict::Store,
                };
                let _ = reply.send(verdict);
            }
            Command::ActionResult { result } => {
                tracing::info!(node = %result.node, action_id = %result.id, state = ?result.state, "Action update.");
                self.actions.insert(result.id.clone(), *result);
                self.wake.notify_one();
            }
            Command::Action { id, reply } => {
                let _ = reply.send(self.actions.get(&id).cloned());
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
            Command::Containers { filter, reply } => {
                let mut out: Vec<NodeContainer> = self
                    .nodes
                    .values()
                    .flat_map(|e| {
                        let name = &e.node.name;
                        e.report
                            .iter()
                            .flat_map(|r| r.containers())
                            .filter(|c| filter.matches(name, c))
                            .map(|c| NodeContainer {
                                node: name.clone(),
                                container: c.clone(),
                            })
                    })
                    .collect();
                out.sort_by(|a, b| (&a.node, &a.container.name).cmp(&(&b.node, &b.container.name)));
                let _ = reply.send(out);
            }
            Command::Summary {
                fs_threshold_percent,
                reply,
            } => {
                let _ = reply.send(summarize(
                    self.nodes.values().map(|e| (&e.node, e.report.as_ref())),
                    fs_threshold_percent,
                ));
            }
            Command::Watch { reply } => {
                let mut nodes: Vec<Node> = self.nodes.values().map(|e| e.node.clone()).collect();
                nodes.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send((nodes, self.events.subscribe()));
            }
        }
    }

    fn connect(&mut self, hello: Hello, id: SessionId, link: SessionLink) {
        let now = Timestamp::now();
        let entry = self
            .nodes
            .entry(hello.node.clone())
            .or_insert_with(|| Entry {
                node: Node::new(&hello.node, hello.role, now),
                report: None,
                session: None,
            });
        if let Some((old, old_kick)) = entry.session.take() {
            tracing::info!(node = %hello.node, old_session = old, session = id, "Node opened a new session; ending the old one.");
            old_kick.kick.cancel();
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
        entry.session = Some((id, link));
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
        // A change-driven report (reboot state, containers) is what a
        // campaign's gates wait for: let the scheduler look at once. Routine
        // interval reports carry neither section and wake nobody.
        let gate_news = !report.full && (report.reboot.is_some() || report.containers.is_some());
        let merged = match &mut entry.report {
            Some(stored) => {
                stored.merge(report);
                stored
            }
            None => entry.report.insert(report),
        };
        let n = &mut entry.node;
        let came_back = !n.online;
        n.online = true;
        n.offline_reason.clear();
        n.last_seen = Timestamp::now();
        apply_report(n, merged);
        if came_back {
            tracing::info!(node = %name, "Node reporting again; online.");
            self.publish(name, NodeEventKind::Online, false);
        }
        self.publish(name, NodeEventKind::Report, true);
        if gate_news || came_back {
            self.wake.notify_one();
        }
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

/// Copies what a listing shows from the node's merged report.
fn apply_report(n: &mut Node, r: &Report) {
    n.last_report_at = Some(r.collected_at);
    n.last_report_seq = r.seq;
    if let Some(h) = &r.host {
        n.hostname.clone_from(&h.hostname);
        n.boot_id.clone_from(&h.boot_id);
        n.os_pretty_name.clone_from(&h.os_pretty_name);
        n.kernel.clone_from(&h.kernel);
    }
    n.reboot_required = r.reboot_required();
    n.containers_total = u32::try_from(r.containers().len()).unwrap_or(u32::MAX);
    n.containers_unhealthy = u32::try_from(
        r.containers()
            .iter()
            .filter(|c| c.health == ContainerHealth::Unhealthy)
            .count(),
    )
    .unwrap_or(u32::MAX);
    n.pending_updates = r.updates.as_ref().map_or(0, |u| u.count);
}

/// The fleet at a glance, from every node and its merged report.
pub fn summarize<'a>(
    nodes: impl Iterator<Item = (&'a Node, Option<&'a Report>)>,
    fs_threshold_percent: u32,
) -> FleetSummary {
    let threshold = if fs_threshold_percent == 0 {
        90
    } else {
        fs_threshold_percent.min(100)
    };
    let mut s = FleetSummary {
        fs_usage_threshold_percent: threshold,
        ..Default::default()
    };
    for (node, report) in nodes {
        s.nodes_total += 1;
        if node.online {
            s.nodes_online += 1;
        } else {
            s.nodes_offline += 1;
            s.offline_nodes.push(node.name.clone());
        }
        let Some(r) = report else { continue };
        if r.reboot_required() {
            s.reboot_required_nodes.push(node.name.clone());
        }
        if let Some(section) = &r.containers {
            if !section.available {
                s.engine_unavailable_nodes.push(node.name.clone());
            }
            for c in &section.containers {
                s.containers_total += 1;
                let entry = || NodeContainer {
                    node: node.name.clone(),
                    container: c.clone(),
                };
                if c.health == ContainerHealth::Unhealthy {
                    s.unhealthy_containers.push(entry());
                }
                if c.is_down() {
                    s.stopped_containers.push(entry());
                }
            }
        }
        for fs in r.disks.iter().flat_map(|d| &d.filesystems) {
            let used = fs.used_percent();
            if used >= f64::from(threshold) {
                s.full_filesystems.push(FullFilesystem {
                    node: node.name.clone(),
                    mount_point: fs.mount_point.clone(),
                    used_percent: (used * 10.0).round() / 10.0,
                    available_bytes: fs.available_bytes,
                });
            }
        }
        if let Some(u) = &r.updates {
            s.pending_updates += u.count;
            s.pending_security_updates += u.security_count;
        }
    }
    s.offline_nodes.sort();
    s.reboot_required_nodes.sort();
    s.engine_unavailable_nodes.sort();
    let by_node_name = |a: &NodeContainer, b: &NodeContainer| {
        (&a.node, &a.container.name).cmp(&(&b.node, &b.container.name))
    };
    s.unhealthy_containers.sort_by(by_node_name);
    s.stopped_containers.sort_by(by_node_name);
    s.full_filesystems
        .sort_by(|a, b| (&a.node, &a.mount_point).cmp(&(&b.node, &b.mount_point)));
    s
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
    fn summary_lists_what_needs_attention() {
        use rollcall_proto::model::{
            Container, ContainerState, ContainersSection, DisksSection, Filesystem, RebootSection,
        };
        let mut a = node("a");
        a.online = false;
        let b = node("b");
        let report = Report {
            reboot: Some(RebootSection {
                required: true,
                ..Default::default()
            }),
            containers: Some(ContainersSection {
                available: true,
                containers: vec![
                    Container {
                        name: "ok".into(),
                        state: ContainerState::Running,
                        health: ContainerHealth::Healthy,
                        ..Default::default()
                    },
                    Container {
                        name: "sick".into(),
                        state: ContainerState::Running,
                        health: ContainerHealth::Unhealthy,
                        ..Default::default()
                    },
                    Container {
                        name: "dead".into(),
                        state: ContainerState::Exited,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            disks: Some(DisksSection {
                filesystems: vec![
                    Filesystem {
                        mount_point: "/".into(),
                        used_bytes: 95,
                        available_bytes: 5,
                        ..Default::default()
                    },
                    Filesystem {
                        mount_point: "/var".into(),
                        used_bytes: 50,
                        available_bytes: 50,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let down = Report {
            containers: Some(ContainersSection {
                available: false,
                error: "no socket".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = summarize([(&a, Some(&down)), (&b, Some(&report))].into_iter(), 0);
        assert_eq!((s.nodes_total, s.nodes_online, s.nodes_offline), (2, 1, 1));
        assert_eq!(s.offline_nodes, ["a"]);
        assert_eq!(s.reboot_required_nodes, ["b"]);
        assert_eq!(s.engine_unavailable_nodes, ["a"]);
        assert_eq!(s.containers_total, 3);
        assert_eq!(
            s.unhealthy_containers
                .iter()
                .map(|c| c.container.name.as_str())
                .collect::<Vec<_>>(),
            ["sick"]
        );
        assert_eq!(
            s.stopped_containers
                .iter()
                .map(|c| c.container.name.as_str())
                .collect::<Vec<_>>(),
            ["dead"]
        );
        assert_eq!(s.fs_usage_threshold_percent, 90);
        assert_eq!(s.full_filesystems.len(), 1);
        assert_eq!(s.full_filesystems[0].mount_point, "/");
        assert_eq!(s.full_filesystems[0].used_percent, 95.0);
    }

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
