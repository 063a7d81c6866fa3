//! One run's cloud: the real `rollcall-server` and one real
//! `rollcall-agent` per node, each a process of its own under a supervisor
//! that starts it again when it dies (the agent like systemd's
//! Restart=always, the server like Restart=on-failure, both after a short
//! random delay), and a proxy per agent.
//!
//! What a node does to itself is played by scripts (see [`write_scripts`]):
//! the patch and the hooks append to per-node logs that the verdict reads,
//! never what the server says. A reboot asks the node's supervisor for one
//! (a `reboot-request` file): the supervisor kills the agent (a machine
//! going down does not ask), clears the reboot-required file (/run is a
//! tmpfs), writes a new boot id and starts the agent again, or never does
//! for a node that never returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rustix::process::{Pid, Signal};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::faults::{Faults, Timed};
use super::proxy::Proxy;
use super::record::{self, Act};
use super::replicas::{ReplicaSetup, Replicas};

/// The nodes of every run: name and role.
pub const NODES: [(&str, &str); 8] = [
    ("ctl01", "controller"),
    ("ctl02", "controller"),
    ("ctl03", "controller"),
    ("cmp01", "compute"),
    ("cmp02", "compute"),
    ("cmp03", "compute"),
    ("cmp04", "compute"),
    ("sto01", "storage"),
];

pub const OPERATOR: &str = "chaos-operator";

/// What every run shares: the binaries, the PKI, the scripts.
pub struct Session {
    pub bin_dir: PathBuf,
    pub pki: PathBuf,
    pub scripts: PathBuf,
}

impl Session {
    /// Makes the PKI with the real `certs init` and `certs issue`, and
    /// writes the node scripts, under `out`.
    pub fn prepare(bin_dir: &Path, out: &Path) -> anyhow::Result<Session> {
        let server = bin_dir.join("rollcall-server");
        let agent = bin_dir.join("rollcall-agent");
        for bin in [&server, &agent] {
            if !bin.exists() {
                bail!(
                    "{} not found: build it first (scripts/chaos.sh does)",
                    bin.display()
                );
            }
        }
        let pki = out.join("pki");
        let _ = std::fs::remove_dir_all(&pki);
        let certs = |args: &[&str]| -> anyhow::Result<()> {
            let out = std::process::Command::new(&server)
                .arg("certs")
                .args(args)
                .arg("--pki")
                .arg(&pki)
                .output()
                .context("running rollcall-server certs")?;
            if !out.status.success() {
                bail!(
                    "rollcall-server certs {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        certs(&["init"])?;
        for (node, _) in NODES {
            certs(&["issue", "--agent", node])?;
        }
        certs(&["issue", "--operator", OPERATOR])?;
        let scripts = out.join("scripts");
        write_scripts(&scripts)?;
        Ok(Session {
            bin_dir: bin_dir.to_owned(),
            pki,
            scripts,
        })
    }

    pub(super) fn server_bin(&self) -> PathBuf {
        self.bin_dir.join("rollcall-server")
    }
}

/// The node's patch, reboot and hooks. The action id comes from the
/// agent's environment (`ROLLCALL_ACTION_ID`), else from the file its
/// output goes to (`STATE_DIR/ID.log`): each line names the action that
/// ran. Each also writes `epochs.log` in the directory of the node that
/// runs it: `TIME EPOCH ID WHAT`, the epoch of the leader that asked
/// (`ROLLCALL_LEADER_EPOCH`, 0 from a server on SQLite).
fn write_scripts(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let id = r#"id=${ROLLCALL_ACTION_ID:-$(basename "$(readlink /proc/$$/fd/1)" .log)}"#;
    let patch = format!(
        r#"#!/bin/sh
# rollcall-chaos: a node's patch. $1: the node's directory.
d=$1
{id}
echo "$$" >> "$d/action-pids"
echo "$(date +%s.%N) $id start" >> "$d/patched.log"
echo "$(date +%s.%N) ${{ROLLCALL_LEADER_EPOCH:-0}} $id patch" >> "$d/epochs.log"
sleep "$(cat "$d/patch-secs" 2>/dev/null || echo 0.5)"
mkdir -p "$d/root/var/run"
echo "*** System restart required ***" > "$d/root/var/run/reboot-required"
echo "$(date +%s.%N) $id end" >> "$d/patched.log"
echo "chaos patch: 1 upgraded, a reboot is required"
"#
    );
    let reboot = format!(
        r#"#!/bin/sh
# rollcall-chaos: a node's reboot: asks the node's supervisor for one.
d=$1
{id}
echo "$(date +%s.%N) $id" >> "$d/rebooted.log"
echo "$(date +%s.%N) ${{ROLLCALL_LEADER_EPOCH:-0}} $id reboot" >> "$d/epochs.log"
echo "$id" > "$d/.reboot-request.tmp" && mv "$d/.reboot-request.tmp" "$d/reboot-request"
"#
    );
    let hook = format!(
        r#"#!/bin/sh
# rollcall-chaos: a drain or undrain hook. $1: the run's directory,
# $2: the directory of the node that runs it, $3: the hook, $4: the target.
d=$2
{id}
echo "$$" >> "$d/action-pids"
echo "$(date +%s.%N) $3 ${{4:-}} $(basename "$d") $id start" >> "$1/hooks.log"
echo "$(date +%s.%N) ${{ROLLCALL_LEADER_EPOCH:-0}} $id $3" >> "$d/epochs.log"
sleep 0.2
echo "$(date +%s.%N) $3 ${{4:-}} $(basename "$d") $id end" >> "$1/hooks.log"
"#
    );
    for (name, text) in [
        ("patch.sh", patch),
        ("reboot.sh", reboot),
        ("hook.sh", hook),
    ] {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// A node of a run: its files and its agent's process.
pub struct Node {
    pub name: String,
    pub role: &'static str,
    pub dir: PathBuf,
    pub never_returns: bool,
    pid: AtomicU32,
    boots: AtomicU32,
}

impl Node {
    fn write_boot_id(&self) -> std::io::Result<()> {
        let boot = self.boots.load(Ordering::SeqCst);
        std::fs::write(
            self.dir.join("boot_id"),
            format!("{}-boot-{boot}\n", self.name),
        )
    }
}

/// A server process under its supervisor: the one server of a chaos run,
/// or one replica.
pub struct ServerProc {
    /// How events name it: "the server", "replica 1".
    pub name: String,
    pid: AtomicU32,
    /// Times it was started.
    starts: AtomicU32,
    /// When it exited (Unix seconds) and how, other than by the
    /// supervisor's own stop.
    exits: Mutex<Vec<(f64, std::process::ExitStatus)>>,
    /// While true, an exit is not followed by a restart: the host is down.
    held: tokio::sync::watch::Sender<bool>,
}

impl ServerProc {
    pub fn new(name: impl Into<String>) -> Arc<ServerProc> {
        Arc::new(ServerProc {
            name: name.into(),
            pid: AtomicU32::new(0),
            starts: AtomicU32::new(0),
            exits: Mutex::new(Vec::new()),
            held: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Holds its restarts (its host is down) until `hold(false)`: a replica
    /// killed with its host does not race the others for the lease.
    pub fn hold(&self, held: bool) {
        self.held.send_replace(held);
    }

    /// Its pid while it runs (0 between runs).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::SeqCst)
    }

    pub fn exits(&self) -> Vec<(f64, std::process::ExitStatus)> {
        self.exits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// SIGKILL; whether there was a process to signal.
    pub fn kill(&self) -> bool {
        signal(self.pid(), Signal::KILL)
    }
}

/// The processes of a run, for the faults to signal.
pub struct Procs {
    server: Arc<ServerProc>,
    pub nodes: BTreeMap<String, Arc<Node>>,
    /// What was injected and what the processes did, one line each, with
    /// the seconds since the cloud started.
    events: Mutex<Vec<String>>,
    started: Instant,
}

fn signal(pid: u32, sig: Signal) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|p| rustix::process::kill_process(p, sig).is_ok())
}

impl Procs {
    pub fn event(&self, what: impl std::fmt::Display) {
        let line = format!("{:6.1}s {what}", self.started.elapsed().as_secs_f64());
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }

    pub fn events(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn kill_server(&self) -> bool {
        self.server.kill()
    }

    pub fn kill_agent(&self, node: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| signal(n.pid.load(Ordering::SeqCst), Signal::KILL))
    }

    /// SIGSTOP now; after `held`, SIGCONT, or kill -9 if `kill`.
    pub fn stop_agent(&self, node: &str, held: Duration, kill: bool) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        let pid = n.pid.load(Ordering::SeqCst);
        if !signal(pid, Signal::STOP) {
            return;
        }
        let then = if kill { "kill -9" } else { "SIGCONT" };
        self.event(format_args!(
            "SIGSTOP the agent of {node}, {then} after {held:.1?}"
        ));
        tokio::spawn(async move {
            tokio::time::sleep(held).await;
            // Killed while stopped: whatever waited unread in its socket is lost.
            signal(pid, if kill { Signal::KILL } else { Signal::CONT });
        });
    }

    pub fn continue_all(&self) {
        for n in self.nodes.values() {
            signal(n.pid.load(Ordering::SeqCst), Signal::CONT);
        }
    }
}

/// A tmpfs mounted for the run's data directory, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a process still inside): detach it now, gone when free.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// A running cloud.
pub struct Cloud {
    pub dir: PathBuf,
    /// The one server's port (unused with replicas).
    pub port: u16,
    /// What the CLI gets as `--server`: the one server, or every replica.
    servers: String,
    replicas: Option<Replicas>,
    pub procs: Arc<Procs>,
    pub faults: Arc<Faults>,
    proxies: BTreeMap<String, Proxy>,
    session_server: PathBuf,
    pki: PathBuf,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

pub(super) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn log_file(path: &Path) -> std::io::Result<(Stdio, Stdio)> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok((Stdio::from(f.try_clone()?), Stdio::from(f)))
}

fn spawn(program: &Path, args: &[&std::ffi::OsStr], log: &Path) -> std::io::Result<Child> {
    let (out, err) = log_file(log)?;
    Command::new(program)
        .args(args)
        .env("ROLLCALL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own group: a Ctrl-C at the terminal reaches the runner only,
        // which then stops everything in order.
        .process_group(0)
        // The last resort if the runner itself goes away.
        .kill_on_drop(true)
        .spawn()
}

/// SIGTERM (and SIGCONT, in case it is stopped), then SIGKILL after 3 s.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        signal(pid, Signal::TERM);
        signal(pid, Signal::CONT);
    }
    if tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

impl Cloud {
    /// Writes the run's configuration under `dir` and starts the server, the
    /// proxies and the agents. `data` is the server's data directory (a
    /// tmpfs mount point for a full-disk run).
    pub async fn start(
        session: &Session,
        dir: &Path,
        data: &Path,
        faults: Arc<Faults>,
        seed: u64,
    ) -> anyhow::Result<Cloud> {
        Self::start_with(session, dir, data, faults, seed, None).await
    }

    /// [`Self::start`] with `replicas` servers on PostgreSQL instead of the
    /// one on SQLite: each under a supervisor of its own, its PostgreSQL
    /// traffic through a [`super::relay::Relay`]; the agents and the CLI
    /// are given every replica's URL and reach them directly (no agent
    /// proxies: a proxy would hide which replica an agent talks to).
    pub async fn start_replicated(
        session: &Session,
        dir: &Path,
        faults: Arc<Faults>,
        seed: u64,
        replicas: ReplicaSetup,
    ) -> anyhow::Result<Cloud> {
        let data = dir.join("data");
        Self::start_with(session, dir, &data, faults, seed, Some(replicas)).await
    }

    async fn start_with(
        session: &Session,
        dir: &Path,
        data: &Path,
        faults: Arc<Faults>,
        seed: u64,
        replicas: Option<ReplicaSetup>,
    ) -> anyhow::Result<Cloud> {
        let port = free_port()?;
        let plan = faults.plan().clone();
        let mut nodes = BTreeMap::new();
        for (name, role) in NODES {
            let ndir = dir.join(name);
            std::fs::create_dir_all(ndir.join("root/var/run"))?;
            std::fs::create_dir_all(ndir.join("actions"))?;
            let secs = plan
                .patch_secs
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0.5, |(_, s)| *s);
            std::fs::write(ndir.join("patch-secs"), format!("{secs:.2}\n"))?;
            let node = Arc::new(Node {
                name: name.to_owned(),
                role,
                dir: ndir,
                never_returns: plan.never_returns.as_deref() == Some(name),
                pid: AtomicU32::new(0),
                boots: AtomicU32::new(1),
            });
            node.write_boot_id()?;
            nodes.insert(name.to_owned(), node);
        }
        let procs = Arc::new(Procs {
            server: ServerProc::new("the server"),
            nodes,
            events: Mutex::new(Vec::new()),
            started: Instant::now(),
        });
        let stop = CancellationToken::new();
        let mut cloud = Cloud {
            dir: dir.to_owned(),
            port,
            servers: format!("https://127.0.0.1:{port}"),
            procs: procs.clone(),
            faults: faults.clone(),
            proxies: BTreeMap::new(),
            replicas: None,
            session_server: session.server_bin(),
            pki: session.pki.clone(),
            stop: stop.clone(),
            tasks: tokio::task::JoinSet::new(),
        };
        if let Some(setup) = replicas {
            let replicas =
                Replicas::start(session, dir, setup, &procs, &stop, &mut cloud.tasks, seed).await?;
            cloud.servers = replicas.urls().join(",");
            cloud.replicas = Some(replicas);
        } else {
            let server_toml = dir.join("server.toml");
            std::fs::write(&server_toml, server_toml_text(session, port, data, ""))?;
            cloud.tasks.spawn(supervise_server(
                session.server_bin(),
                server_toml,
                dir.join("server.log"),
                procs.server.clone(),
                procs.clone(),
                stop.clone(),
                fastrand::Rng::with_seed(seed ^ 0x5e5e),
            ));
        }
        for (i, node) in procs.nodes.values().enumerate() {
            let servers = match &cloud.replicas {
                Some(r) => r.urls(),
                None => {
                    let proxy = Proxy::start(
                        node.name.clone(),
                        port,
                        faults.clone(),
                        procs.clone(),
                        stop.clone(),
                    )
                    .await?;
                    let url = format!("https://127.0.0.1:{}", proxy.port);
                    cloud.proxies.insert(node.name.clone(), proxy);
                    vec![url]
                }
            };
            let config = node.dir.join("agent.toml");
            std::fs::write(&config, agent_toml(session, dir, node, &servers))?;
            cloud.tasks.spawn(supervise_agent(
                session.bin_dir.join("rollcall-agent"),
                config,
                node.clone(),
                stop.clone(),
                fastrand::Rng::with_seed(seed ^ (0xa9e7 + i as u64)),
            ));
        }
        cloud.tasks.spawn(watch_nodes(
            procs.clone(),
            dir.to_owned(),
            faults.clone(),
            stop.clone(),
        ));
        Ok(cloud)
    }

    /// Patches that started so far, all nodes together (from their logs).
    pub fn patches_started(&self) -> usize {
        self.procs
            .nodes
            .values()
            .map(|n| {
                std::fs::read_to_string(n.dir.join("patched.log"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.ends_with(" start"))
                    .count()
            })
            .sum()
    }

    /// Every action request the agents received (their "Action requested."
    /// lines), in time order.
    pub fn received(&self) -> Vec<Act> {
        let mut all: Vec<Act> = self
            .procs
            .nodes
            .values()
            .flat_map(|n| record::received(&n.name, &record::read_log(&n.dir.join("agent.log"))))
            .collect();
        all.sort_by(|a, b| a.at.total_cmp(&b.at));
        all
    }

    /// Every action that ran on a node (the scripts' `epochs.log`).
    pub fn ran(&self) -> Vec<Act> {
        let mut all: Vec<Act> = self
            .procs
            .nodes
            .values()
            .flat_map(|n| record::ran(&n.name, &n.dir))
            .collect();
        all.sort_by(|a, b| a.at.total_cmp(&b.at));
        all
    }

    /// Per node, when its agent was first welcomed by the server at `url`
    /// after `since` (`None`: not yet).
    pub fn connected_to(&self, url: &str, since: f64) -> Vec<(String, Option<f64>)> {
        let url = url.trim_end_matches('/');
        self.procs
            .nodes
            .values()
            .map(|n| {
                let at = record::connected(&record::read_log(&n.dir.join("agent.log")))
                    .into_iter()
                    .find(|(at, server)| *at >= since && server.trim_end_matches('/') == url)
                    .map(|(at, _)| at);
                (n.name.clone(), at)
            })
            .collect()
    }

    /// Waits until every agent was welcomed by `url` after `since`; when
    /// the last one was.
    pub async fn wait_connected_to(
        &self,
        url: &str,
        since: f64,
        within: Duration,
    ) -> anyhow::Result<f64> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.connected_to(url, since);
            if seen.iter().all(|(_, at)| at.is_some()) {
                return Ok(seen.iter().filter_map(|(_, at)| *at).fold(since, f64::max));
            }
            if Instant::now() >= deadline {
                let missing: Vec<&str> = seen
                    .iter()
                    .filter(|(_, at)| at.is_none())
                    .map(|(n, _)| n.as_str())
                    .collect();
                bail!(
                    "not every agent reconnected to {url} within {within:?}: {} did not",
                    missing.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The replicas, for a cloud started with [`Self::start_replicated`].
    pub fn replicas(&self) -> &Replicas {
        self.replicas
            .as_ref()
            .expect("a cloud started with start_replicated")
    }

    pub fn event(&self, what: impl std::fmt::Display) {
        self.procs.event(what);
    }

    /// Runs an operator command of the CLI against the server (not through
    /// a proxy); its stdout, or one line saying why it failed.
    pub async fn cli(&self, args: &[&str]) -> Result<String, String> {
        let op = self.pki.join("operators");
        let mut cmd = Command::new(&self.session_server);
        cmd.args(args)
            .arg("--server")
            .arg(&self.servers)
            .arg("--ca")
            .arg(self.pki.join("ca.crt"))
            .arg("--cert")
            .arg(op.join(format!("{OPERATOR}.crt")))
            .arg("--key")
            .arg(op.join(format!("{OPERATOR}.key")))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
            .await
            .map_err(|_| format!("{} took over 10 s", args.join(" ")))?
            .map_err(|e| format!("cannot run rollcall-server: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// The CLI's `--json` answer, parsed.
    pub async fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let text = self.cli(args).await?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", args.join(" ")))
    }

    /// Waits until every node is online.
    pub async fn wait_online(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.cli_json(&["nodes", "list", "--json"]).await {
                Ok(Value::Array(nodes)) => {
                    let online = nodes
                        .iter()
                        .filter(|n| n["online"].as_bool() == Some(true))
                        .count();
                    if online == NODES.len() {
                        return Ok(());
                    }
                    last = format!("{online} of {} nodes online", NODES.len());
                }
                Ok(other) => last = format!("unexpected answer {other}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        bail!("the nodes did not all come online within {within:?}: {last}")
    }

    /// Plays the plan's faults at their moments, from now (the campaign's
    /// start) until `until` is cancelled.
    pub async fn play_timed(&self, data: &Path, until: CancellationToken) {
        let start = Instant::now();
        for (at, fault) in self.faults.plan().timed.clone() {
            tokio::select! {
                _ = until.cancelled() => return,
                _ = tokio::time::sleep_until((start + at).into()) => {}
            }
            match fault {
                Timed::KillServer => {
                    if self.procs.kill_server() {
                        self.faults.count(|i| i.server_kills += 1);
                        self.event("kill -9 the server");
                    }
                }
                Timed::KillAgent(node) => {
                    if self.procs.kill_agent(&node) {
                        self.faults.count(|i| i.agent_kills += 1);
                        self.event(format!("kill -9 the agent of {node}"));
                    }
                }
                Timed::Stop(node, held) => {
                    self.faults.count(|i| i.stops += 1);
                    self.procs.stop_agent(&node, held, false);
                }
                Timed::Cut(node) => {
                    if let Some(p) = self.proxies.get(&node) {
                        self.faults.count(|i| i.cuts += 1);
                        self.event(format!("cut the connections of {node}"));
                        p.cut();
                    }
                }
                Timed::FillDisk(held) => {
                    let filled = Instant::now();
                    match fill(&data.join("ballast")) {
                        Ok(bytes) => self.event(format!(
                            "filled the data directory ({} MiB) for {held:.1?}",
                            bytes >> 20
                        )),
                        Err(e) => self.event(format!("could not fill the data directory: {e}")),
                    }
                    tokio::select! {
                        _ = until.cancelled() => {}
                        _ = tokio::time::sleep(held) => {}
                    }
                    let _ = std::fs::remove_file(data.join("ballast"));
                    let ms = u64::try_from(filled.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.faults.count(|i| i.disk_full_ms += ms);
                    self.event("freed the data directory");
                }
            }
        }
    }

    /// Whether the server is up (its port answers).
    pub async fn server_up(&self) -> bool {
        tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
    }

    /// Stops every process of the run and waits for the supervisors; kills
    /// what the actions left behind (they run in their own groups).
    pub async fn stop(mut self) {
        self.procs.continue_all();
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        for node in self.procs.nodes.values() {
            kill_leftover_actions(&node.dir);
        }
    }
}

/// Fills the file's filesystem until it is full; the bytes written.
fn fill(path: &Path) -> std::io::Result<u64> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => break,
            Err(e) => return Err(e),
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

fn kill_leftover_actions(node_dir: &Path) {
    let pids = std::fs::read_to_string(node_dir.join("action-pids")).unwrap_or_default();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        // Only if that pid is still one of our scripts (pids are reused).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if (cmdline.contains("patch.sh") || cmdline.contains("hook.sh"))
            && let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(p, Signal::KILL);
        }
    }
}

/// A server's `server.toml`; `extra` is appended (a replica's `[store]`
/// and `[replica]`).
pub(super) fn server_toml_text(session: &Session, port: u16, data: &Path, extra: &str) -> String {
    format!(
        r#"# Written by rollcall-chaos.
listen = "127.0.0.1:{port}"
data_dir = "{data}"

[tls]
ca = "{pki}/ca.crt"
cert = "{pki}/server.crt"
key = "{pki}/server.key"

[agents]
report_interval_secs = 1
offline_after_missed_reports = 3

[campaigns]
tick_ms = 200

[metrics]
listen = "127.0.0.1:0"
{extra}"#,
        data = data.display(),
        pki = session.pki.display(),
    )
}

fn agent_toml(session: &Session, run: &Path, node: &Node, servers: &[String]) -> String {
    let d = node.dir.display();
    let pki = session.pki.display();
    let s = session.scripts.display();
    let run = run.display();
    let hook = |name: &str| format!(r#"{name} = ["sh", "{s}/hook.sh", "{run}", "{d}", "{name}"]"#);
    let hooks: Vec<String> = [
        "nova-drain",
        "nova-undrain",
        "ceph-noout-set",
        "ceph-noout-unset",
    ]
    .into_iter()
    .map(hook)
    .collect();
    format!(
        r#"# Written by rollcall-chaos.
server = [{servers}]
role = "{role}"

[tls]
ca = "{pki}/ca.crt"
cert = "{pki}/agents/{name}.crt"
key = "{pki}/agents/{name}.key"

[report]
interval_secs = 1

[reconnect]
initial_backoff_ms = 200
max_backoff_secs = 2

[host]
boot_id_path = "{d}/boot_id"

[containers]
enabled = false

[reboot]
root = "{d}/root"
needs_restarting = false
check_interval_secs = 5

[updates]
enabled = false

[actions]
state_dir = "{d}/actions"
patch_command = ["sh", "{s}/patch.sh", "{d}"]
reboot_command = ["sh", "{s}/reboot.sh", "{d}"]
default_timeout_secs = 120

[actions.hooks]
{hooks}
"#,
        role = node.role,
        name = node.name,
        hooks = hooks.join("\n"),
        servers = servers
            .iter()
            .map(|u| format!("{u:?}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Runs a server like systemd's Restart=on-failure (every exit of ours is
/// a failure: the supervisor alone stops it cleanly) with
/// RestartPreventExitStatus=2, after a short random delay.
pub(super) async fn supervise_server(
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    server: Arc<ServerProc>,
    procs: Arc<Procs>,
    stop: CancellationToken,
    mut rng: fastrand::Rng,
) {
    let name = server.name.clone();
    let note = |what: String| procs.event(what);
    while !stop.is_cancelled() {
        let args = ["serve".as_ref(), "--config".as_ref(), config.as_os_str()];
        let mut child = match spawn(&bin, &args, &log) {
            Ok(c) => c,
            Err(e) => {
                note(format!("cannot start {name}: {e}"));
                return;
            }
        };
        server.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        server.starts.fetch_add(1, Ordering::SeqCst);
        let status = tokio::select! {
            s = child.wait() => s.ok(),
            _ = stop.cancelled() => {
                terminate(&mut child).await;
                None
            }
        };
        server.pid.store(0, Ordering::SeqCst);
        let Some(status) = status else { break };
        server
            .exits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((super::record::now(), status));
        use std::os::unix::process::ExitStatusExt as _;
        if status.signal() != Some(9) {
            note(format!("{name} exited: {status}"));
        }
        // RestartPreventExitStatus=2: a configuration or store refusal.
        if status.code() == Some(2) {
            note(format!("{name} refused to start (exit 2): not restarted"));
            stop.cancelled().await;
            break;
        }
        let mut held = server.held.subscribe();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = held.wait_for(|h| !*h) => {}
        }
        let delay = Duration::from_millis(200 + rng.u64(..800));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn supervise_agent(
    bin: PathBuf,
    config: PathBuf,
    node: Arc<Node>,
    stop: CancellationToken,
    mut rng: fastrand::Rng,
) {
    let log = node.dir.join("agent.log");
    let request = node.dir.join("reboot-request");
    while !stop.is_cancelled() {
        let args = ["run".as_ref(), "--config".as_ref(), config.as_os_str()];
        let Ok(mut child) = spawn(&bin, &args, &log) else {
            return;
        };
        node.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        let exited = tokio::select! {
            _ = child.wait() => true,
            _ = stop.cancelled() => {
                terminate(&mut child).await;
                false
            }
        };
        node.pid.store(0, Ordering::SeqCst);
        if !exited {
            break;
        }
        let delay = if request.exists() {
            // The machine went down for its reboot: it boots under a new id,
            // with /run (and its reboot-required file) empty.
            let _ = std::fs::remove_file(&request);
            let _ = std::fs::remove_file(node.dir.join("root/var/run/reboot-required"));
            node.boots.fetch_add(1, Ordering::SeqCst);
            let _ = node.write_boot_id();
            if node.never_returns {
                stop.cancelled().await;
                break;
            }
            Duration::from_millis(500 + rng.u64(..1_000))
        } else {
            // Restart=always with a short RestartSec.
            Duration::from_millis(200 + rng.u64(..800))
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Every 50 ms: takes down the machines whose reboot was asked for, and
/// tells the faults about actions that just started.
async fn watch_nodes(
    procs: Arc<Procs>,
    run: PathBuf,
    faults: Arc<Faults>,
    stop: CancellationToken,
) {
    let mut seen: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut news = |path: PathBuf| -> Vec<String> {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let old = seen.insert(path, lines.len()).unwrap_or(0);
        lines.into_iter().skip(old).collect()
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        for node in procs.nodes.values() {
            if node.dir.join("reboot-request").exists() {
                procs.kill_agent(&node.name);
            }
            for line in news(node.dir.join("patched.log")) {
                if line.ends_with(" start")
                    && faults.on_action_start(&node.name, "patch")
                    && procs.kill_agent(&node.name)
                {
                    procs.event(format_args!(
                        "kill -9 the agent of {} while it patches",
                        node.name
                    ));
                }
            }
        }
        // "TIME HOOK TARGET RUNNER ID start"
        for line in news(run.join("hooks.log")) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [_, hook, _, runner, _, "start"] = f[..]
                && faults.on_action_start(runner, hook)
                && procs.kill_agent(runner)
            {
                procs.event(format_args!(
                    "kill -9 the agent of {runner} while it runs {hook}"
                ));
            }
        }
    }
}
