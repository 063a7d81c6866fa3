//! The fleet: what the server knows about every node, now.
//!
//! One task owns the node table and loops over a command channel and a
//! ticker; sessions and operator calls hold a cheap [`FleetHandle`]. Every
//! event goes to watchers through a broadcast channel; what must be durable
//! goes to the store writer (committed within one flush interval), the rest
//! at a checkpoint ([`CHECKPOINT`]). Reads are answered from memory, so
//! operators never wait on the disk. Each node's merged report is held
//! compact ([`held`]); listings page through the table in name order.
//! The actions asked of nodes are the ledger's (`ledger.rs`); an agent's
//! word on one is taken through [`ActionResults`].

mod bad;
mod expiring;
mod forget;
mod handle;
mod held;
mod ledger;
mod results;
mod summary;

pub use bad::{BadContainer, BadContainers, ByNode, MAX_BAD_CONTAINERS, is_bad};
pub use forget::{ForgetRefused, Removal};
pub use handle::{FleetHandle, FleetStopped, Page};
pub use held::{Digest, Held, Merged, Update};
pub use ledger::{Foreign, Ledger, NotSent, Reconciled, UpdateVerdict};
pub use results::{ActionResults, Taken};
pub use summary::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, summarize};

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use rollcall_proto::model::{
    ActionRequest, ActionResult, ContainerFilter, Node, NodeContainer, NodeDetail, NodeEvent,
    NodeEventKind, Role, glob_match,
};
use rollcall_proto::text::Untrusted;
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use self::handle::Command;
use crate::metrics::snapshot::{NodeFacts, fleet_snapshot, per_node_on};
use crate::store::{NodeWrite, Section, StoredNode, WriterHandle};
use crate::supervise::PanicSwitch;

/// How stale the durable copy of what changes all the time (a node's last
/// sign of life, its disk usage) may get: each node's is written again at
/// most this long after it changed.
pub const CHECKPOINT: Duration = Duration::from_secs(300);

/// A stored node as the fleet starts with it: its report already compact.
pub struct Loaded {
    node: Node,
    held: Option<Held>,
}

impl From<StoredNode> for Loaded {
    fn from(s: StoredNode) -> Self {
        Loaded {
            held: s.report.map(|r| {
                let mut held = Held::default();
                held.merge(r);
                held
            }),
            node: s.node,
        }
    }
}

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
    /// Every action the agent keeps a record of; `None` when it sent more
    /// than the server reads (nothing can be concluded from a cut list).
    pub held_actions: Option<Vec<String>>,
    /// When the session's agent certificate expires (from the TLS
    /// handshake, not from anything the agent says).
    pub cert_not_after: Option<Timestamp>,
}

/// How the fleet reaches a session: end it, or hand it action requests.
#[derive(Clone, Debug)]
pub struct SessionLink {
    pub kick: CancellationToken,
    /// Boxed: a channel allocates room for 32 items up front, for every
    /// session, and requests are rare.
    pub actions: mpsc::Sender<Box<ActionRequest>>,
}

struct Entry {
    node: Node,
    held: Option<Held>,
    session: Option<(SessionId, SessionLink)>,
    /// When the node's record was last given to the store.
    written_at: Timestamp,
    /// Changed since then, but not worth a write of its own: its last sign
    /// of life, its disk usage. Written at the next checkpoint.
    seen_dirty: bool,
    disks_dirty: bool,
}

impl Entry {
    fn new(node: Node, now: Timestamp) -> Self {
        Entry {
            node,
            held: None,
            session: None,
            written_at: now,
            seen_dirty: false,
            disks_dirty: false,
        }
    }
}

pub struct Fleet {
    nodes: BTreeMap<String, Entry>,
    actions: Ledger,
    writer: WriterHandle,
    events: broadcast::Sender<NodeEvent>,
    offline_after: Duration,
    next_session: SessionId,
    /// Pokes the campaign scheduler when something it waits for happens.
    wake: Arc<Notify>,
    /// Tests only (`Options::fleet_panic`): panic at the next command.
    panic: Option<PanicSwitch>,
    /// Whether the last `/metrics` scrape had per-node series
    /// (`metrics::snapshot::per_node_on` keeps them a while past the limit).
    per_node_series: bool,
}

/// Events a slow watcher may fall behind by before it is told it lagged
/// (8 s of reports from 10,000 agents). The channel keeps this many events
/// at all times, so it is also memory: about 1 KiB each.
const EVENT_BUFFER: usize = 8_192;
/// Commands that may wait for the fleet. When 10,000 agents connect at
/// once, each waiting report is a packed full report (~10 KiB): a longer
/// queue only holds more of them, while a full one makes sessions wait.
const COMMAND_QUEUE: usize = 1_024;

impl Fleet {
    /// Starts the fleet task from the stored nodes. Every node starts
    /// offline: none has a session with this process yet. `panic` is a
    /// test's switch (`None` in production).
    pub fn spawn(
        stored: Vec<Loaded>,
        actions: Vec<ActionResult>,
        writer: WriterHandle,
        offline_after: Duration,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
        panic: Option<PanicSwitch>,
    ) -> (FleetHandle, tokio::task::JoinHandle<()>) {
        let now = Timestamp::now();
        let nodes = stored
            .into_iter()
            .map(|Loaded { mut node, held }| {
                if node.online {
                    node.online = false;
                    node.offline_reason = "server restarted".into();
                }
                let mut entry = Entry::new(node, now);
                entry.held = held;
                (entry.node.name.clone(), entry)
            })
            .collect();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let fleet = Fleet {
            nodes,
            actions: Ledger::new(actions),
            writer,
            events,
            offline_after,
            next_session: 1,
            wake,
            panic,
            per_node_series: false,
        };
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
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
                _ = tick.tick() => {
                    let now = Timestamp::now();
                    self.expire(now);
                    self.checkpoint(now, CHECKPOINT);
                }
            }
        }
        // A clean stop leaves every node's last sign of life on disk.
        self.checkpoint(Timestamp::now(), Duration::ZERO);
        self.writer.flush().await;
    }

    fn handle(&mut self, cmd: Command) {
        if self.panic.as_ref().is_some_and(PanicSwitch::is_tripped) {
            panic!("injected fault: the fleet actor was told to panic");
        }
        match cmd {
            Command::Connect { hello, link, reply } => {
                let id = self.next_session;
                self.next_session += 1;
                self.connect(hello, id, link);
                let _ = reply.send(id);
                self.wake.notify_one();
            }
            Command::Ledger(cmd) => {
                let nodes = &self.nodes;
                let session = |node: &str| nodes.get(node)?.session.as_ref().map(|(_, l)| l);
                if self.actions.handle(cmd, session) {
                    self.wake.notify_one();
                }
            }
            Command::Report {
                node,
                session,
                update,
            } => self.report(&node, session, *update),
            Command::Disconnect {
                node,
                session,
                reason,
            } => self.disconnect(&node, session, reason),
            Command::List {
                filter,
                after,
                size,
                reply,
            } => {
                let matching = self
                    .after(after.as_deref())
                    .map(|e| &e.node)
                    .filter(|n| filter.matches(n));
                let _ = reply.send(Page::take(matching, size).map(Node::clone));
            }
            Command::Get { name, reply } => {
                let detail = self.nodes.get(&name).map(|e| NodeDetail {
                    node: e.node.clone(),
                    report: e.held.as_ref().map(|h| h.report(&name)),
                });
                let _ = reply.send(detail);
            }
            Command::Containers {
                filter,
                after,
                size,
                reply,
            } => {
                let _ = reply.send(self.containers(&filter, after, size));
            }
            Command::Summary {
                fs_threshold_percent,
                list_limit,
                cert_within_days,
                reply,
            } => {
                let _ = reply.send(summarize(
                    self.nodes.values().map(|e| (&e.node, e.held.as_ref())),
                    fs_threshold_percent,
                    list_limit,
                    cert_within_days,
                    Timestamp::now(),
                ));
            }
            Command::Watch { reply } => {
                let nodes: Vec<Node> = self.nodes.values().map(|e| e.node.clone()).collect();
                let _ = reply.send((nodes, self.events.subscribe()));
            }
            Command::Forget { name, audit, reply } => {
                let _ = reply.send(self.forget(&name, *audit));
            }
            Command::BadContainers {
                cap,
                baseline,
                reply,
            } => {
                let nodes = self
                    .nodes
                    .iter()
                    .map(|(name, e)| (name.as_str(), e.node.online, e.held.as_ref()));
                let _ = reply.send(bad::collect(nodes, cap, &baseline));
            }
            Command::Metrics {
                per_node_max,
                reply,
            } => {
                let count = self.nodes.len();
                self.per_node_series = per_node_on(self.per_node_series, count, per_node_max);
                let nodes = self.nodes.values().map(|e| NodeFacts {
                    node: &e.node,
                    digest: e.held.as_ref().map(|h| &h.digest),
                    in_session: e.session.is_some(),
                });
                let watchers = self.events.receiver_count() as u64;
                let _ = reply.send(fleet_snapshot(
                    nodes,
                    count,
                    self.per_node_series,
                    watchers,
                    Timestamp::now(),
                ));
            }
        }
    }

    /// The entries after `after` (all of them without it), in name order.
    fn after(&self, after: Option<&str>) -> impl Iterator<Item = &Entry> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.nodes
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(_, e)| e)
    }

    /// One page of containers, in (node, name) order, after `after`.
    fn containers(
        &self,
        filter: &ContainerFilter,
        after: Option<(String, String)>,
        size: usize,
    ) -> Page<NodeContainer> {
        let (from, after_name) = match &after {
            Some((node, name)) => (Bound::Included(node.as_str()), Some((node, name))),
            None => (Bound::Unbounded, None),
        };
        let mut items = Vec::new();
        let entries = self
            .nodes
            .range::<str, _>((from, Bound::Unbounded))
            .filter(|(name, _)| filter.node.as_ref().is_none_or(|n| n == *name));
        for (name, entry) in entries {
            let section = entry
                .held
                .as_ref()
                .and_then(|h| match &filter.name_pattern {
                    Some(p) => h.containers_where(name, |n| glob_match(p, n)),
                    None => h.containers(name),
                });
            let Some(section) = section else {
                continue;
            };
            let mut matching: Vec<_> = section
                .containers
                .into_iter()
                .filter(|c| filter.matches(name, c))
                .filter(|c| {
                    after_name
                        .is_none_or(|(n, after)| n != name || c.name.as_str() > after.as_str())
                })
                .collect();
            matching.sort_by(|a, b| a.name.cmp(&b.name));
            for container in matching {
                if items.len() == size {
                    return Page { items, more: true };
                }
                items.push(NodeContainer {
                    node: name.clone(),
                    container,
                });
            }
        }
        Page { items, more: false }
    }

    /// Writes the records (and disk usage) of nodes whose durable copy is
    /// older than `max_age` and out of date.
    fn checkpoint(&mut self, now: Timestamp, max_age: Duration) {
        for e in self.nodes.values_mut() {
            if !(e.seen_dirty || e.disks_dirty) || now.since(e.written_at) < max_age {
                continue;
            }
            let mut sections = Vec::new();
            if e.disks_dirty {
                sections.push(Section::Disks(e.held.as_ref().and_then(Held::packed_disks)));
            }
            self.writer.put(NodeWrite {
                node: e.node.clone(),
                sections,
            });
            e.written_at = now;
            e.seen_dirty = false;
            e.disks_dirty = false;
        }
    }

    fn connect(&mut self, hello: Hello, id: SessionId, link: SessionLink) {
        let now = Timestamp::now();
        let entry = self
            .nodes
            .entry(hello.node.clone())
            .or_insert_with(|| Entry::new(Node::new(&hello.node, hello.role, now), now));
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
        n.cert_not_after = hello.cert_not_after;
        self.actions
            .hello(&hello.node, hello.held_actions.as_deref());
        let n = &mut entry.node;
        n.online = true;
        n.offline_reason.clear();
        n.last_seen = now;
        entry.session = Some((id, link));
        tracing::info!(node = %n.name, role = %n.role, session = id, "Node online.");
        self.publish(&hello.node, NodeEventKind::Online, Vec::new());
    }

    fn report(&mut self, name: &str, session: SessionId, update: Update) {
        let Some(entry) = self.nodes.get_mut(name) else {
            return;
        };
        if entry.session.as_ref().map(|s| s.0) != Some(session) {
            return; // a replaced session's last words
        }
        let held = entry.held.get_or_insert_default();
        let merged = held.apply(update);
        let n = &mut entry.node;
        let came_back = !n.online;
        n.online = true;
        n.offline_reason.clear();
        n.last_seen = Timestamp::now();
        let record_changed = apply_report(n, held);
        entry.disks_dirty |= merged.disks_usage_changed;
        entry.seen_dirty = true;
        // A change-driven report (reboot state, containers) is what a
        // campaign's gates wait for: let the scheduler look at once. Routine
        // interval reports carry neither change and wake nobody.
        let wake = merged.gate_news || came_back;
        // A node that came back is written by its Online event below.
        let durable = !merged.durable.is_empty() || record_changed;
        if came_back {
            tracing::info!(node = %name, "Node reporting again; online.");
            self.publish(name, NodeEventKind::Online, Vec::new());
        }
        if durable {
            self.publish(name, NodeEventKind::Report, merged.durable);
        } else {
            self.announce(name, NodeEventKind::Report);
        }
        if wake {
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
            tracing::info!(node = %name, session, reason = %Untrusted(&reason), "Node offline.");
            self.publish(name, NodeEventKind::Offline, Vec::new());
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
                self.publish(&name, NodeEventKind::Offline, Vec::new());
            }
        }
    }

    /// Announces an event and gives the store the node's record with the
    /// report sections that changed.
    fn publish(&mut self, name: &str, kind: NodeEventKind, sections: Vec<Section>) {
        let Some(entry) = self.nodes.get_mut(name) else {
            return;
        };
        self.writer.put(NodeWrite {
            node: entry.node.clone(),
            sections,
        });
        entry.written_at = Timestamp::now();
        entry.seen_dirty = false;
        self.announce(name, kind);
    }

    /// Tells watchers, without writing anything.
    fn announce(&self, name: &str, kind: NodeEventKind) {
        let Some(entry) = self.nodes.get(name) else {
            return;
        };
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(NodeEvent {
            kind,
            node: entry.node.clone(),
        });
    }
}

/// Copies what a listing shows from the node's merged report; says whether
/// the record changed in more than its liveness (last report), which
/// changes at every report and is written only at checkpoints.
fn apply_report(n: &mut Node, h: &Held) -> bool {
    n.last_report_at = Some(h.collected_at);
    n.last_report_seq = h.seq;
    let mut changed = false;
    let mut set = |field: &mut String, value: &str| {
        if field != value {
            value.clone_into(field);
            changed = true;
        }
    };
    if let Some(host) = &h.host {
        set(&mut n.hostname, &host.hostname);
        set(&mut n.boot_id, &host.boot_id);
        set(&mut n.os_pretty_name, &host.os_pretty_name);
        set(&mut n.kernel, &host.kernel);
    }
    let d = &h.digest;
    let digest = (
        d.reboot_required,
        d.containers_total,
        d.containers_unhealthy,
        d.pending_updates,
    );
    let listed = (
        n.reboot_required,
        n.containers_total,
        n.containers_unhealthy,
        n.pending_updates,
    );
    if digest != listed {
        (
            n.reboot_required,
            n.containers_total,
            n.containers_unhealthy,
            n.pending_updates,
        ) = digest;
        changed = true;
    }
    changed
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
