//! The fleet harness: one real server and N real agents in one process,
//! each agent with its own certificate, session and action store. What a
//! real node does to itself is played by named fakes:
//!
//! - `FakePatch` (a shell one-liner) records each run in `patch-runs`,
//!   fails when the node is told to, and otherwise writes
//!   `var/run/reboot-required` under the node's root, like a kernel
//!   package's postinst (unless the node is told its patch needs none);
//! - `FakeReboot` records the request in `fake-reboots`; the harness then
//!   "boots" the node: it stops the agent, clears the tmpfs-like
//!   reboot-required file and starts the agent again under a new boot id
//!   (or never does, for a node told to stay down);
//! - hooks record their argv in `hooks`;
//! - `FakeGate` (hook `cluster-whole`) stands in for a cluster check such
//!   as galera-synced: it records its argv in `hooks` too, and fails with
//!   "cluster: 2 of 3 members" while the fleet's cluster is degraded
//!   (`Fleet::degrade_cluster`);
//! - a FakeDocker section (`nova_compute`, `openvswitch_vswitchd`) whose
//!   containers' health a test sets (`set_container_health`).
//!
//! ```ignore
//! let fleet = Fleet::start(&[(Role::Compute, 12), (Role::Storage, 5), (Role::Controller, 3)]).await;
//! let c = fleet.start_campaign(SPEC).await;
//! let done = fleet.wait_ended(&c.campaign.id).await;
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_agent::actions::{Actions, Definitions};
use rollcall_agent::collect::reboot::RebootChecks;
use rollcall_agent::collect::{Sources, SystemCollector, spawn_reboot};
use rollcall_agent::config::HostConfig;
use rollcall_proto::model::{ActionKind, ActionRequest, ContainersSection, Role, UpdatesSection};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use rollcall_proto::v1::campaign_service_client::CampaignServiceClient;
use rollcall_server::campaign::CampaignView;
use rollcall_server::campaign::record::{AuditEntry, NodeRun};
use rollcall_server::campaign::wire::{audit_from_wire, view_from_wire};
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;

use crate::{Pki, TempDir, TestAgent, TestServer, eventually};

/// One simulated node: its files and its (restartable) agent.
pub struct FakeNode {
    pub name: String,
    pub role: Role,
    pub work: PathBuf,
    agent: Mutex<Option<TestAgent>>,
    boots: Mutex<u32>,
    /// What the node's FakeDocker reports: `nova_compute` and
    /// `openvswitch_vswitchd`, running and healthy, until a test says
    /// otherwise (`set_container_health`). Outlives the agent's reboots.
    containers: watch::Sender<ContainersSection>,
}

impl FakeNode {
    fn root(&self) -> PathBuf {
        self.work.join("root")
    }

    fn lines(&self, file: &str) -> Vec<String> {
        std::fs::read_to_string(self.work.join(file))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many times FakePatch ran here.
    pub fn patch_runs(&self) -> usize {
        self.lines("patch-runs").len()
    }

    /// How many reboots were asked of this node.
    pub fn reboots(&self) -> usize {
        self.lines("fake-reboots").len()
    }

    /// The argv of every hook this node ran, one line each.
    pub fn hooks(&self) -> Vec<String> {
        self.lines("hooks")
    }

    /// FakePatch fails here from now on (or not).
    pub fn fail_patch(&self, fail: bool) {
        let marker = self.work.join("fail-patch");
        if fail {
            std::fs::write(marker, "").expect("write marker");
        } else {
            let _ = std::fs::remove_file(marker);
        }
    }

    /// FakePatch fails here from now on, printing `output` first (what a
    /// broken package's maintainer script might print).
    pub fn fail_patch_saying(&self, output: &str) {
        std::fs::write(self.work.join("fail-patch"), output).expect("write marker");
    }

    /// FakePatch takes this long here from now on.
    pub fn slow_patch(&self, secs: f32) {
        std::fs::write(self.work.join("patch-delay"), secs.to_string()).expect("write delay");
    }

    /// FakePatch here upgrades nothing that needs a reboot (a patch of
    /// userland packages only): it leaves the reboot-required file as it was.
    pub fn patch_needs_no_reboot(&self) {
        std::fs::write(self.work.join("no-reboot-needed"), "").expect("write marker");
    }

    /// The node asks for a reboot before any patch (an unattended upgrade
    /// left the file), as Debian's postinst scripts do.
    pub fn ask_for_reboot(&self) {
        let run = self.root().join("var/run");
        std::fs::create_dir_all(&run).expect("run dir");
        std::fs::write(
            run.join("reboot-required"),
            "*** System restart required ***\n",
        )
        .expect("write reboot-required");
    }

    /// From its next boot on, this node's reboot check takes `secs` (a
    /// sentinel command that sleeps, then says "no reboot"): its agent's
    /// first report goes out before its first check has run.
    pub fn slow_reboot_check(&self, secs: f32) {
        std::fs::write(self.work.join("reboot-check-delay"), secs.to_string())
            .expect("write delay");
    }

    /// One of this node's containers turns `health` (an unhealthy kolla
    /// health check, or healthy again); the agent reports the change at
    /// once, as its Docker events watcher would.
    pub fn set_container_health(&self, name: &str, health: rollcall_proto::model::ContainerHealth) {
        self.containers.send_modify(|section| {
            let c = section
                .containers
                .iter_mut()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("{} has no container {name}", self.name));
            c.health = health;
        });
    }

    /// Stops this node's agent (as kill -9 would: its records stay).
    pub async fn stop_agent(&self) {
        let agent = self.agent.lock().expect("lock").take();
        if let Some(agent) = agent {
            agent.stop().await;
        }
    }

    /// Starts this node's agent again, same boot, same state dir.
    pub fn start_agent(&self, url: &str, pki: &Pki) {
        self.boot(url, pki);
    }

    /// Forgets every action record the agent keeps (a new state dir).
    pub fn wipe_actions(&self) {
        let _ = std::fs::remove_dir_all(self.work.join("actions"));
    }

    /// The agent's record of action `id`, as it keeps it on disk.
    pub fn action_record(&self, id: &str) -> Option<String> {
        std::fs::read_to_string(self.work.join("actions").join(format!("{id}.json"))).ok()
    }

    /// After its next FakeReboot this node stays down.
    pub fn never_return(&self) {
        std::fs::write(self.work.join("stay-down"), "").expect("write marker");
    }

    fn boot_id(&self) -> String {
        format!("{}-boot-{}", self.name, self.boots.lock().expect("lock"))
    }

    fn definitions(&self) -> Definitions {
        let work = self.work.display().to_string();
        let sh = |name: &str, script: &str| {
            vec![
                "sh".to_owned(),
                "-c".to_owned(),
                script.to_owned(),
                name.to_owned(),
                work.clone(),
            ]
        };
        Definitions {
            patch: sh(
                "FakePatch",
                r#"echo "$(date +%s%N)" >> "$1/patch-runs"
if [ -e "$1/patch-delay" ]; then sleep "$(cat "$1/patch-delay")"; fi
if [ -e "$1/fail-patch" ]; then cat "$1/fail-patch"; echo "E: FakePatch was told to fail"; exit 100; fi
if [ ! -e "$1/no-reboot-needed" ]; then
  mkdir -p "$1/root/var/run" && echo "*** System restart required ***" > "$1/root/var/run/reboot-required"
fi
echo "FakePatch: 1 upgraded""#,
            ),
            reboot: sh("FakeReboot", r#"echo "$(date +%s%N)" >> "$1/fake-reboots""#),
            hooks: [
                "nova-drain",
                "nova-undrain",
                "ceph-noout-set",
                "ceph-noout-unset",
            ]
            .into_iter()
            .map(|h| {
                let script = format!(r#"echo "{h} $*" >> "$0/hooks""#);
                let argv = vec!["sh".to_owned(), "-c".to_owned(), script, work.clone()];
                (h.to_owned(), argv)
            })
            .chain(std::iter::once((
                // FakeGate: $0 is the node's directory, $* what the server
                // appended (before|after TARGET).
                "cluster-whole".to_owned(),
                vec![
                    "sh".to_owned(),
                    "-c".to_owned(),
                    r#"echo "cluster-whole $*" >> "$0/hooks"
if [ -e "$0/../cluster-degraded" ]; then echo "checking members"; echo "cluster: 2 of 3 members"; exit 1; fi
echo "cluster: 3 of 3 members""#
                        .to_owned(),
                    work.clone(),
                ],
            )))
            .collect(),
            patch_env: vec![],
        }
    }

    /// Starts (or starts again, after a FakeReboot) this node's agent.
    fn boot(&self, url: &str, pki: &Pki) {
        let boot_id = self.boot_id();
        let boot_file = self.work.join("boot_id");
        std::fs::write(&boot_file, &boot_id).expect("write boot id");
        let host = HostConfig {
            boot_id_path: boot_file,
            ..HostConfig::default()
        };
        let actions = Actions::load(self.definitions(), &self.work.join("actions"), &boot_id)
            .expect("load actions");
        let root = self.root();
        let sentinel = std::fs::read_to_string(self.work.join("reboot-check-delay"))
            .map(|secs| vec!["sh".into(), "-c".into(), format!("sleep {secs}; exit 1")])
            .unwrap_or_default();
        let containers = self.containers.subscribe();
        let agent = TestAgent::start_full(
            url,
            pki,
            &self.name,
            self.role,
            &boot_id,
            move |shutdown| {
                let recheck = Arc::new(Notify::new());
                let checks = RebootChecks {
                    root,
                    needs_restarting: false,
                    sentinel,
                    timeout: Duration::from_secs(5),
                };
                let reboot = spawn_reboot(
                    checks,
                    Duration::from_secs(5),
                    recheck.clone(),
                    shutdown.clone(),
                );
                let (_, updates) = watch::channel(UpdatesSection {
                    manager: "fake".into(),
                    checked: true,
                    count: 1,
                    last_check: Some(Timestamp::now()),
                    packages: vec!["rollcall-demo-kernel".into()],
                    ..Default::default()
                });
                let mut sources = Sources::host_only(SystemCollector::new(host));
                sources.reboot = Some(reboot);
                sources.reboot_recheck = Some(recheck);
                sources.containers = Some(containers);
                sources.updates = Some(updates);
                sources
            },
            Some(actions),
        );
        *self.agent.lock().expect("lock") = Some(agent);
    }
}

fn healthy_containers() -> ContainersSection {
    use rollcall_proto::model::{Container, ContainerHealth, ContainerState};
    ContainersSection {
        available: true,
        error: String::new(),
        engine: "fake".into(),
        containers: ["nova_compute", "openvswitch_vswitchd"]
            .into_iter()
            .map(|name| Container {
                id: format!("{name}-id"),
                name: name.into(),
                image: format!("kolla/{name}:2024.1"),
                state: ContainerState::Running,
                health: ContainerHealth::Healthy,
                ..Default::default()
            })
            .collect(),
    }
}

/// A server and its simulated nodes.
pub struct Fleet {
    pub pki: Arc<Pki>,
    pub server: TestServer,
    pub nodes: BTreeMap<String, Arc<FakeNode>>,
    _dir: TempDir,
    boots: tokio::task::JoinHandle<()>,
}

impl Fleet {
    /// A server (campaign tick 100 ms) and the given number of nodes per
    /// role, named cmp01…, sto01…, ctl01…, all online.
    pub async fn start(roles: &[(Role, usize)]) -> Fleet {
        Self::start_with(roles, |c| c.campaigns.tick_ms = 100).await
    }

    /// Like [`Fleet::start`], with the server's configuration adjusted.
    pub async fn start_with(
        roles: &[(Role, usize)],
        tweak: impl FnOnce(&mut rollcall_server::config::ServerConfig),
    ) -> Fleet {
        let pki = Arc::new(Pki::new());
        let server = TestServer::start(&pki, tweak).await;
        Self::around(server, pki, roles).await
    }

    /// [`Fleet::start`] with the server on SQLite whatever
    /// [`crate::postgres::wanted`] says: a fleet to migrate to PostgreSQL.
    pub async fn start_on_sqlite(roles: &[(Role, usize)]) -> Fleet {
        let pki = Arc::new(Pki::new());
        let server = TestServer::start_on_sqlite(&pki, |c| c.campaigns.tick_ms = 100).await;
        Self::around(server, pki, roles).await
    }

    /// The nodes around a started server.
    async fn around(server: TestServer, pki: Arc<Pki>, roles: &[(Role, usize)]) -> Fleet {
        let dir = TempDir::new("fleet");
        let mut nodes = BTreeMap::new();
        for (role, count) in roles {
            let prefix = match role {
                Role::Compute => "cmp",
                Role::Storage => "sto",
                Role::Controller => "ctl",
            };
            for i in 1..=*count {
                let name = format!("{prefix}{i:02}");
                let work = dir.path().join(&name);
                std::fs::create_dir_all(work.join("root/var/run")).expect("node dir");
                let node = Arc::new(FakeNode {
                    name: name.clone(),
                    role: *role,
                    work,
                    agent: Mutex::new(None),
                    boots: Mutex::new(1),
                    containers: watch::Sender::new(healthy_containers()),
                });
                node.boot(&server.url(), &pki);
                nodes.insert(name, node);
            }
        }
        for name in nodes.keys() {
            server.wait_online(name).await;
        }
        let boots = tokio::spawn(play_reboots(
            nodes.values().cloned().collect(),
            server.url(),
            pki.clone(),
        ));
        Fleet {
            pki,
            server,
            nodes,
            _dir: dir,
            boots,
        }
    }

    /// Makes every node's `FakeGate` fail (a cluster member down), or pass.
    pub fn degrade_cluster(&self, degraded: bool) {
        let flag = self._dir.path().join("cluster-degraded");
        if degraded {
            std::fs::write(&flag, "").expect("flag");
        } else {
            let _ = std::fs::remove_file(&flag);
        }
    }

    pub fn node(&self, name: &str) -> &FakeNode {
        &self.nodes[name]
    }

    /// The campaign API, as the test operator.
    pub async fn campaigns(&self) -> CampaignServiceClient<Channel> {
        CampaignServiceClient::new(
            self.server
                .channel(&self.server.operator)
                .await
                .expect("operator connects"),
        )
    }

    pub async fn start_campaign(&self, spec_toml: &str) -> CampaignView {
        let status = self
            .campaigns()
            .await
            .start_campaign(v1::StartCampaignRequest {
                spec_toml: spec_toml.to_owned(),
            })
            .await
            .expect("campaign starts")
            .into_inner();
        view_from_wire(status).expect("status")
    }

    pub async fn status(&self, id: &str) -> CampaignView {
        let status = self
            .campaigns()
            .await
            .get_campaign(v1::CampaignRef { id: id.to_owned() })
            .await
            .expect("status")
            .into_inner();
        view_from_wire(status).expect("status")
    }

    /// Waits until `done` holds for the campaign's status.
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&CampaignView) -> bool,
    ) -> CampaignView {
        eventually(timeout, what, || async {
            let v = self.status(id).await;
            done(&v).then_some(v)
        })
        .await
    }

    pub async fn wait_ended(&self, id: &str, timeout: Duration) -> CampaignView {
        self.wait_for(id, "the campaign to end", timeout, |v| v.ended)
            .await
    }

    pub async fn audit(&self, id: &str) -> Vec<AuditEntry> {
        self.campaigns()
            .await
            .campaign_audit(v1::CampaignRef { id: id.to_owned() })
            .await
            .expect("audit")
            .into_inner()
            .entries
            .into_iter()
            .map(audit_from_wire)
            .collect()
    }

    /// Stops a node's agent for good (a node powered off): the server
    /// sees it offline.
    pub async fn power_off(&self, name: &str) {
        let agent = self.node(name).agent.lock().expect("lock").take();
        if let Some(agent) = agent {
            agent.stop().await;
        }
        self.server.wait_offline(name).await;
    }

    /// A barrier on `node`'s session: asks its agent for a hook it does not
    /// define, and waits until the agent has recorded the refusal. The
    /// server's session task sends acknowledgements and requests down one
    /// ordered stream, and forwards a request only between the messages it
    /// handles; the agent reads its stream in order. So once this returns,
    /// the agent has read whatever the session sent while handling what
    /// reached it before the call (an acknowledgement, say): call it once
    /// the session has at least begun to handle the message in question.
    pub async fn agent_caught_up(&self, node: &str) {
        static N: AtomicU64 = AtomicU64::new(0);
        let id = format!("barrier.{node}.{}", N.fetch_add(1, Ordering::Relaxed));
        let request = ActionRequest {
            id: id.clone(),
            kind: ActionKind::Hook,
            name: "barrier".into(),
            args: Vec::new(),
            timeout_secs: 10,
            leader_epoch: 0,
        };
        self.server
            .server
            .as_ref()
            .expect("running")
            .fleet
            .send_action(node, request)
            .await
            .expect("fleet")
            .expect("the barrier request is sent");
        eventually(
            Duration::from_secs(30),
            &format!("{node}'s agent to record the barrier request {id}"),
            || async { self.node(node).action_record(&id).map(|_| ()) },
        )
        .await;
    }

    /// Runs the real `rollcall-server` binary with `args` as the test
    /// operator against this fleet's server.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let op = &self.server.operator;
        let mut cmd = std::process::Command::new(crate::bin("rollcall-server"));
        cmd.args(args)
            .env("ROLLCALL_SERVER", self.server.url())
            .env("ROLLCALL_CA", self.pki.ca_cert())
            .env("ROLLCALL_CERT", &op.cert)
            .env("ROLLCALL_KEY", &op.key);
        tokio::task::spawn_blocking(move || cmd.output().expect("the CLI runs"))
            .await
            .expect("join")
    }

    /// Stops every agent and the server.
    pub async fn stop(mut self) {
        self.stop_agents().await;
        self.server.stop().await;
    }

    /// Stops every agent for good (no node boots again); the server runs on.
    pub async fn stop_agents(&self) {
        self.boots.abort();
        for node in self.nodes.values() {
            let agent = node.agent.lock().expect("lock").take();
            if let Some(agent) = agent {
                agent.stop().await;
            }
        }
    }
}

/// The most nodes of `role` that were out of service at the same moment,
/// from each run's start (precheck) and finish times.
pub fn max_unavailable(runs: &[NodeRun], role: Role) -> usize {
    let mut edges: Vec<(Timestamp, i32)> = Vec::new();
    for r in runs.iter().filter(|r| r.role == role) {
        if let (Some(s), Some(f)) = (r.started_at, r.finished_at) {
            edges.push((s, 1));
            edges.push((f, -1));
        }
    }
    // At equal times, a finish comes before a start.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    usize::try_from(max).unwrap_or(0)
}

/// Plays each node's reboots: a new FakeReboot line stops the agent, and
/// (unless the node stays down) clears reboot-required and boots it again
/// under a new boot id.
async fn play_reboots(nodes: Vec<Arc<FakeNode>>, url: String, pki: Arc<Pki>) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for node in &nodes {
            let asked = node.reboots();
            let handled = seen.entry(node.name.clone()).or_insert(0);
            if asked <= *handled {
                continue;
            }
            *handled = asked;
            let agent = node.agent.lock().expect("lock").take();
            if let Some(agent) = agent {
                agent.stop().await;
            }
            if node.work.join("stay-down").exists() {
                continue;
            }
            let _ = std::fs::remove_file(node.root().join("var/run/reboot-required"));
            *node.boots.lock().expect("lock") += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            node.boot(&url, &pki);
        }
    }
}
