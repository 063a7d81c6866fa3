//! Simulated agents: many nodes in one process, each with its own
//! certificate and mutual-TLS session, sending what a real agent sends
//! (see [`agent`]) made from a report a real agent captured (see
//! [`template`]). rollcall-loadgen drives thousands of them against a
//! server process; a test can run a few hundred against a [`crate::TestServer`]:
//!
//! ```ignore
//! let agents = sim::issue_agents(&pki.ca(), "sim", 500)?;
//! let fleet = SimFleet::start(SimConfig::new(&server.url(), pki.ca_pem()), agents);
//! fleet.wait_connected(500, Duration::from_secs(60)).await?;
//! assert!(fleet.totals().reports >= 500);
//! fleet.stop().await;
//! ```

mod agent;
pub mod procfs;
pub mod template;
pub mod visibility;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_proto::identity::Identity;
use rollcall_proto::model::Role;
use rollcall_server::pki::Ca;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use template::{Template, TemplateFacts};
pub use visibility::Visibility;

/// How the simulated agents behave; [`SimConfig::new`] gives the agent's
/// defaults (agent/src/config.rs).
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub url: String,
    pub ca_pem: Vec<u8>,
    pub template: Arc<Template>,
    pub role: Role,
    /// The labels of every Hello, as in the agent's `[labels]`.
    pub labels: BTreeMap<String, String>,
    /// The report interval until the server's Welcome sets one.
    pub interval: Duration,
    /// Every this many intervals a report carries every section.
    pub full_every: u32,
    /// Percent of the agents that see a container restart or change health
    /// per minute (each agent independently, at random times).
    pub container_changes_per_min: f64,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// TLS handshakes in flight at once for the first connect of each
    /// agent; reconnects are paced by the backoff alone, as real agents are.
    pub connect_concurrency: usize,
}

impl SimConfig {
    pub fn new(url: &str, ca_pem: Vec<u8>) -> Self {
        Self {
            url: url.to_owned(),
            ca_pem,
            template: Arc::new(Template::kolla_node()),
            role: Role::Compute,
            labels: [("az".to_owned(), "nova".to_owned())].into(),
            interval: Duration::from_secs(10),
            full_every: 30,
            container_changes_per_min: 2.0,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            connect_concurrency: 64,
        }
    }
}

/// One simulated agent's name and certificate (PEM).
#[derive(Clone)]
pub struct SimAgent {
    pub node: String,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Issues `n` agent certificates named `PREFIX-00000`, `PREFIX-00001`, ...
pub fn issue_agents(ca: &Ca, prefix: &str, n: usize) -> anyhow::Result<Vec<SimAgent>> {
    (0..n)
        .map(|i| {
            let node = format!("{prefix}-{i:05}");
            let issued = ca.issue_client(&Identity::agent(&node))?;
            Ok(SimAgent {
                node,
                cert_pem: issued.cert_pem.into_bytes(),
                key_pem: issued.key_pem.into_bytes(),
            })
        })
        .collect()
}

#[derive(Default)]
struct Count(AtomicU64);

impl Count {
    fn inc(&self) {
        self.add(1);
    }
    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Counters {
    connected: AtomicBool,
    sessions: Count,
    sessions_reported: Count,
    reports: Count,
    full_reports: Count,
    change_reports: Count,
    bytes: Count,
    dropped: Count,
    connect_failures: Count,
    sessions_ended: Count,
}

impl Counters {
    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

/// What one agent has done so far. Reports are counted when queued on the
/// session, as the agent counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    pub connected: bool,
    /// Sessions the server welcomed.
    pub sessions: u64,
    /// Sessions in which the first (full) report went out.
    pub sessions_reported: u64,
    pub reports: u64,
    pub full_reports: u64,
    pub change_reports: u64,
    /// Encoded size of every report sent.
    pub bytes: u64,
    /// Reports dropped because the session's queue was full.
    pub dropped: u64,
    /// Attempts that ended before the server's Welcome (refused, or no
    /// server to connect to).
    pub connect_failures: u64,
    /// Welcomed sessions that ended (server gone, stream broken).
    pub sessions_ended: u64,
}

impl AgentStats {
    fn add(mut self, o: &AgentStats) -> Self {
        self.connected &= o.connected;
        self.sessions += o.sessions;
        self.sessions_reported += o.sessions_reported;
        self.reports += o.reports;
        self.full_reports += o.full_reports;
        self.change_reports += o.change_reports;
        self.bytes += o.bytes;
        self.dropped += o.dropped;
        self.connect_failures += o.connect_failures;
        self.sessions_ended += o.sessions_ended;
        self
    }
}

struct Shared {
    config: SimConfig,
    counters: Box<[Counters]>,
    handshakes: Arc<Semaphore>,
    stop: CancellationToken,
    started: Instant,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn failed(&self, index: usize, welcomed: bool, error: &str) {
        let c = &self.counters[index];
        match welcomed {
            true => c.sessions_ended.inc(),
            false => c.connect_failures.inc(),
        }
        *self.last_error.lock().expect("no panic holds this lock") = Some(error.to_owned());
    }

    /// The next tick of agent `index`: its own phase within the interval.
    fn next_slot(&self, index: usize, interval: Duration) -> Instant {
        let n = self.counters.len().max(1) as u128;
        let period = interval.as_millis().max(1);
        let slot = period * index as u128 / n;
        let now = self.started.elapsed().as_millis() % period;
        let mut wait = (slot + period - now) % period;
        // Not right after the full report that opened the session.
        if wait < period / 10 {
            wait += period;
        }
        Instant::now() + Duration::from_millis(u64::try_from(wait).unwrap_or(u64::MAX))
    }

    /// When this agent's next container change comes: changes arrive at
    /// random (a Poisson process) at the configured rate.
    fn next_change(&self) -> Option<Instant> {
        let per_min = self.config.container_changes_per_min / 100.0;
        if !per_min.is_finite() || per_min <= 0.0 {
            return None;
        }
        let mean_secs = 60.0 / per_min;
        let secs = -(1.0 - fastrand::f64()).ln() * mean_secs;
        Some(Instant::now() + Duration::from_secs_f64(secs.min(86_400.0 * 365.0)))
    }
}

/// Running simulated agents. Dropping it leaves them running until the
/// runtime ends; [`SimFleet::stop`] ends them.
pub struct SimFleet {
    shared: Arc<Shared>,
    names: Vec<String>,
    tasks: TaskTracker,
}

impl SimFleet {
    /// Starts one task per agent on the current tokio runtime.
    pub fn start(config: SimConfig, agents: Vec<SimAgent>) -> Self {
        let shared = Arc::new(Shared {
            handshakes: Arc::new(Semaphore::new(config.connect_concurrency.max(1))),
            config,
            counters: agents.iter().map(|_| Counters::default()).collect(),
            stop: CancellationToken::new(),
            started: Instant::now(),
            last_error: Mutex::new(None),
        });
        let names = agents.iter().map(|a| a.node.clone()).collect();
        let tasks = TaskTracker::new();
        for (i, a) in agents.into_iter().enumerate() {
            tasks.spawn(agent::run(shared.clone(), i, a));
        }
        tasks.close();
        Self {
            shared,
            names,
            tasks,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The node names, in the order of [`SimFleet::stats`].
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Agents with a welcomed session right now.
    pub fn connected(&self) -> usize {
        self.shared
            .counters
            .iter()
            .filter(|c| c.connected.load(Ordering::Relaxed))
            .count()
    }

    /// Every agent's counters, in the order of [`SimFleet::names`].
    pub fn stats(&self) -> Vec<AgentStats> {
        self.shared
            .counters
            .iter()
            .map(|c| AgentStats {
                connected: c.connected.load(Ordering::Relaxed),
                sessions: c.sessions.get(),
                sessions_reported: c.sessions_reported.get(),
                reports: c.reports.get(),
                full_reports: c.full_reports.get(),
                change_reports: c.change_reports.get(),
                bytes: c.bytes.get(),
                dropped: c.dropped.get(),
                connect_failures: c.connect_failures.get(),
                sessions_ended: c.sessions_ended.get(),
            })
            .collect()
    }

    /// The sum over every agent (`connected`: all of them are).
    pub fn totals(&self) -> AgentStats {
        let start = AgentStats {
            connected: true,
            ..Default::default()
        };
        self.stats().iter().fold(start, AgentStats::add)
    }

    /// The last failure any agent saw, naming the agent.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .expect("no panic holds this lock")
            .clone()
    }

    /// Waits until at least `n` agents are connected.
    pub async fn wait_connected(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.connected() < n {
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} of {n} agents connected after {timeout:?}; last error: {}",
                    self.connected(),
                    self.last_error().unwrap_or_else(|| "none".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Ends every session and waits (up to 10 s) for the agents to stop.
    pub async fn stop(self) {
        self.shared.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Pki, TestServer, eventually};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simulated_agents_report_like_agents_and_come_back_after_a_restart() {
        crate::init();
        let pki = Pki::new();
        let mut server = TestServer::start(&pki, |_| {}).await;
        let n = 20;
        let config = SimConfig {
            // About one container change per agent and second.
            container_changes_per_min: 6_000.0,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            ..SimConfig::new(&server.url(), pki.ca_pem())
        };
        let fleet = SimFleet::start(config, issue_agents(&pki.ca(), "sim", n).expect("issue"));
        fleet
            .wait_connected(n, Duration::from_secs(30))
            .await
            .expect("all connect");
        eventually(
            Duration::from_secs(15),
            "three reports and a change each",
            || async {
                let s = fleet.stats();
                s.iter()
                    .all(|a| a.reports >= 3 && a.change_reports >= 1)
                    .then_some(())
            },
        )
        .await;
        let t = fleet.totals();
        assert!(
            t.full_reports >= n as u64,
            "a full report opens every session: {t:?}"
        );
        let nodes = server.list().await;
        assert_eq!(nodes.len(), n);
        let containers = Template::kolla_node().facts().containers as u32;
        assert!(
            nodes
                .iter()
                .all(|x| x.online && x.containers_total == containers)
        );
        let detail = server.node("sim-00003").await.expect("node");
        let host = detail.report.expect("report").host.expect("host");
        assert_eq!(host.hostname, "sim-00003");

        let before: Vec<u64> = fleet.stats().iter().map(|a| a.sessions_reported).collect();
        server.restart().await;
        eventually(
            Duration::from_secs(30),
            "every agent back with a report",
            || async {
                fleet
                    .stats()
                    .iter()
                    .zip(&before)
                    .all(|(a, b)| a.connected && a.sessions_reported > *b)
                    .then_some(())
            },
        )
        .await;
        assert!(fleet.totals().sessions_ended >= n as u64);
        fleet.stop().await;
    }
}
