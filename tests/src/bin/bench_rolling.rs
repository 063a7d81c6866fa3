//! rollcall-bench-rolling: the classic Ansible rolling playbook against a
//! rollcall campaign doing the same work, on the same kind of nodes.
//!
//! Each run gets a fresh set of Debian bookworm node containers (systemd as
//! PID 1, `--restart always`; scripts/build-node-image.sh), so every run
//! starts from rollcall-demo-kernel 1.0 with 1.1 pending in the image's
//! local repository. Every run installs rollcall the same way (the .deb
//! packages of scripts/package.sh, the server on the first controller, an
//! agent on every node) and waits until every agent reports its pending
//! update; then it times one of:
//!
//! - `ansible`: `ansible-playbook ansible/bench/rolling-upgrade.yml`
//!   (`serial: 1`, apt upgrade, reboot when /var/run/reboot-required
//!   exists). The agents are installed and running there too, idle, so the
//!   nodes carry the same load and boot the same units in every run.
//! - `rollcall-serial`: a campaign with concurrency 1 in every role.
//! - `rollcall-per-role`: a campaign with every compute node at once,
//!   storage one at a time, controllers one at a time.
//!
//! The campaigns reboot `if-required`, with no hooks (the playbook has
//! none either). A reboot is `systemctl reboot` in the container: its
//! systemd ends, the engine starts it again, /run is a tmpfs so the reboot
//! flag is gone, and rollcall-boot-id.service writes a new boot id. The
//! controller's reboot restarts the server in the middle of the campaigns.
//!
//! After each run it checks that the work was the same: every node has
//! rollcall-demo-kernel 1.1, no /var/run/reboot-required, a new boot id,
//! and its container restarted exactly once.
//!
//! Run it with scripts/bench-rolling.sh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use rollcall_proto::model::{Node, Role};
use rollcall_proto::timestamp::Timestamp;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::Phase;
use rollcall_server::campaign::record::{AuditEntry, Campaign, NodeRun};
use rollcall_tests::TempDir;
use rollcall_tests::nodes::{self, NodeLab, text};
use serde_json::Value;

const SERVER: &str = "ctl1";
const OPERATOR: &str = "bench-operator";
const RUNS: [&str; 3] = ["ansible", "rollcall-serial", "rollcall-per-role"];

#[derive(Parser, Debug)]
#[command(about = "Ansible serial-1 rolling upgrade against rollcall campaigns")]
struct Args {
    /// Controller nodes (ctl1 runs the server).
    #[arg(long, default_value_t = 1)]
    controllers: usize,
    /// Compute nodes.
    #[arg(long, default_value_t = 3)]
    computes: usize,
    /// Storage nodes.
    #[arg(long, default_value_t = 2)]
    storage: usize,
    /// Which runs, in order (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = RUNS.map(String::from))]
    runs: Vec<String>,
    /// The server's agents.report_interval_secs (the shipped default is 10).
    #[arg(long, default_value_t = 10)]
    report_interval: u32,
    /// The server's campaigns.tick_ms (the shipped default is 500).
    #[arg(long, default_value_t = 500)]
    tick_ms: u64,
    /// ANSIBLE_PIPELINING for the playbook (fewer `docker exec` per task;
    /// operators commonly turn it on).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ansible_pipelining: bool,
    /// Seconds to let the nodes settle after every agent reported its
    /// pending update, before the clock starts.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Where the playbook output, campaign audits and the summary go.
    #[arg(long, default_value = "target/bench-rolling")]
    out: PathBuf,
}

/// The cloud: node names and roles, the controller ctl1 first.
fn cloud_nodes(args: &Args) -> Vec<(String, Role)> {
    let mut all = Vec::new();
    for i in 1..=args.controllers {
        all.push((format!("ctl{i}"), Role::Controller));
    }
    for i in 1..=args.computes {
        all.push((format!("cmp{i}"), Role::Compute));
    }
    for i in 1..=args.storage {
        all.push((format!("sto{i}"), Role::Storage));
    }
    all
}

fn kolla_group(role: Role) -> &'static str {
    match role {
        Role::Controller => "control",
        Role::Compute => "compute",
        Role::Storage => "storage",
    }
}

fn server_toml(args: &Args) -> String {
    format!(
        r#"# Written by rollcall-bench-rolling.
listen = "0.0.0.0:7443"
data_dir = "/var/lib/rollcall"

[tls]
ca = "/etc/rollcall/pki/ca.crt"
cert = "/etc/rollcall/pki/server.crt"
key = "/etc/rollcall/pki/server.key"

[agents]
report_interval_secs = {}

[campaigns]
tick_ms = {}
"#,
        args.report_interval, args.tick_ms
    )
}

/// The shipped defaults, except what a node container needs.
fn agent_toml(role: Role) -> String {
    format!(
        r#"# Written by rollcall-bench-rolling: the shipped defaults, except
# what a node container needs.
server = "https://{SERVER}:7443"
role = "{role}"

[host]
# A container shares the machine's kernel boot id, which a container restart
# keeps; rollcall-boot-id.service writes one of the container's own at each start.
boot_id_path = "/run/rollcall/boot_id"

[containers]
# Off: no node has an engine of its own (the machine's engine would show
# every node's container to every agent; see tests/tests/campaign_e2e.rs).
enabled = false
"#
    )
}

fn campaign_spec(run: &str, args: &Args) -> String {
    let compute = if run == "rollcall-per-role" {
        args.computes.max(1)
    } else {
        1
    };
    format!(
        r#"name = "{run}"
reboot = "if-required"
role_order = ["compute", "storage", "controller"]

[concurrency]
compute = {compute}
storage = 1
"#
    )
}

struct Kit {
    agent_deb: PathBuf,
    server_deb: PathBuf,
    server_bin: PathBuf,
    playbook: PathBuf,
    venv_bin: PathBuf,
}

fn kit() -> anyhow::Result<Kit> {
    let ws = nodes::workspace();
    ensure!(nodes::docker_available(), "no Docker engine answers");
    ensure!(
        nodes::node_image_available(),
        "image {} missing: scripts/build-node-image.sh",
        nodes::NODE_IMAGE
    );
    let agent_deb =
        nodes::deb("rollcall-agent").context("rollcall-agent .deb: scripts/package.sh")?;
    let server_deb =
        nodes::deb("rollcall-server").context("rollcall-server .deb: scripts/package.sh")?;
    let exe = std::env::current_exe()?;
    let server_bin = exe
        .parent()
        .map(|d| d.join("rollcall-server"))
        .filter(|p| p.exists())
        .or_else(|| Some(ws.join("target/debug/rollcall-server")).filter(|p| p.exists()))
        .context("rollcall-server binary: cargo build --bin rollcall-server")?;
    let venv_bin = ws.join(".venv/bin");
    ensure!(
        venv_bin.join("ansible-playbook").exists(),
        "ansible-playbook missing in .venv: .venv/bin/pip install 'ansible>=10,<13'"
    );
    Ok(Kit {
        agent_deb,
        server_deb,
        server_bin,
        playbook: ws.join("ansible/bench/rolling-upgrade.yml"),
        venv_bin,
    })
}

/// One fresh cloud: containers, packages, certificates, server and agents.
struct Cloud {
    lab: NodeLab,
    nodes: Vec<(String, Role)>,
    pki: TempDir,
    t0: Instant,
}

impl Cloud {
    fn start(kit: &Kit, args: &Args, tag: &str) -> anyhow::Result<Self> {
        let t0 = Instant::now();
        let mut lab = NodeLab::new(&format!("bench-{tag}"));
        let nodes = cloud_nodes(args);
        nodes::remove_on_interrupt(&lab, nodes.iter().map(|(n, _)| n.as_str()));
        for (name, _) in &nodes {
            // The engine starts a node again when its systemd ends: the reboot.
            lab.start(name, &["--restart", "always"]);
        }
        let pki = TempDir::new("bench-rolling-pki");
        let cloud = Cloud {
            lab,
            nodes,
            pki,
            t0,
        };
        cloud.make_pki(kit);
        cloud.install(kit, args);
        Ok(cloud)
    }

    fn log(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.t0.elapsed().as_secs_f32());
    }

    fn make_pki(&self, kit: &Kit) {
        let agents = self.nodes.iter().map(|(name, _)| name.as_str());
        nodes::make_pki(&kit.server_bin, self.pki.path(), SERVER, agents, OPERATOR);
    }

    fn install(&self, kit: &Kit, args: &Args) {
        let lab = &self.lab;
        let pki = self.pki.path();
        std::thread::scope(|s| {
            for (name, role) in &self.nodes {
                s.spawn(move || {
                    lab.install_agent(name, &kit.agent_deb, pki, &agent_toml(*role));
                });
            }
        });
        lab.install_server(SERVER, &kit.server_deb, pki, OPERATOR, &server_toml(args));
        for (name, _) in &self.nodes {
            lab.sh(name, "systemctl enable --now rollcall-agent");
        }
        self.log(&format!(
            "{} nodes installed, server and agents started",
            self.nodes.len()
        ));
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("exec");
        for env in [
            "ROLLCALL_SERVER=https://localhost:7443".to_owned(),
            "ROLLCALL_CA=/etc/rollcall/pki/ca.crt".to_owned(),
            format!("ROLLCALL_CERT=/etc/rollcall/pki/operators/{OPERATOR}.crt"),
            format!("ROLLCALL_KEY=/etc/rollcall/pki/operators/{OPERATOR}.key"),
        ] {
            cmd.arg("-e").arg(env);
        }
        cmd.arg(self.lab.container(SERVER))
            .arg("rollcall-server")
            .args(args);
        cmd
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.cli_command(args).output()?)
    }

    fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.cli(args).map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(text(&out).trim().to_owned());
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Every agent online and reporting its one pending update.
    fn wait_ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let listed: Vec<Node> = self
                .cli_json(&["nodes", "list", "--json"])
                .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
                .unwrap_or_default();
            let ready = self.nodes.iter().all(|(name, _)| {
                listed.iter().any(|n| {
                    n.name == *name
                        && n.online
                        && n.pending_updates == 1
                        && !n.reboot_required
                        && !n.boot_id.is_empty()
                })
            });
            if ready {
                self.log("every agent online, one pending update each");
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(180) {
                bail!("agents not ready after 180 s: {listed:#?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Per node: the boot id, the package version, and the restart count.
    fn snapshot(&self) -> BTreeMap<String, (String, String, String)> {
        self.nodes
            .iter()
            .map(|(name, _)| {
                let out = self.lab.exec(
                    name,
                    &[
                        "sh",
                        "-c",
                        "cat /run/rollcall/boot_id; dpkg-query -W -f '${Version}\\n' rollcall-demo-kernel; \
                         test -e /var/run/reboot-required && echo reboot-required || echo no-reboot",
                    ],
                );
                let s = String::from_utf8_lossy(&out.stdout).into_owned();
                let mut lines = s.lines();
                let boot = lines.next().unwrap_or_default().to_owned();
                let version = lines.next().unwrap_or_default().to_owned();
                let flag = lines.next().unwrap_or_default().to_owned();
                let restarts = self.lab.inspect(name, "{{.RestartCount}}");
                (name.clone(), (boot, format!("{version} {flag}"), restarts))
            })
            .collect()
    }

    /// The same work was done: 1.1 everywhere, no reboot flag, a new boot
    /// id, one container restart each.
    fn verify(&self, before: &BTreeMap<String, (String, String, String)>) -> anyhow::Result<()> {
        // A node may still be booting when the method says it is done.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let after = self.snapshot();
            let mut wrong = Vec::new();
            for (name, (boot, state, restarts)) in &after {
                let (boot0, _, _) = &before[name];
                if boot.is_empty() || boot == boot0 || state != "1.1 no-reboot" || restarts != "1" {
                    wrong.push(format!(
                        "{name}: boot id {boot:?} (before {boot0:?}), {state:?}, restarts {restarts}"
                    ));
                }
            }
            if wrong.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not the expected work:\n{}", wrong.join("\n"));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// When each container last started (the engine's clock).
    fn container_started(&self) -> BTreeMap<String, Timestamp> {
        self.nodes
            .iter()
            .filter_map(|(name, _)| {
                let at = self.lab.inspect(name, "{{.State.StartedAt}}");
                Some((name.clone(), Timestamp::parse_rfc3339(&at)?))
            })
            .collect()
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        // NodeLab's own Drop removes the containers and the network.
        nodes::forget_interruptible();
    }
}

struct Measured {
    wall: f64,
    detail: String,
}

fn run_ansible(kit: &Kit, args: &Args, cloud: &Cloud, out_dir: &Path) -> anyhow::Result<Measured> {
    let dir = TempDir::new("bench-rolling-ansible");
    let mut inv = String::new();
    for group in ["control", "compute", "storage"] {
        inv.push_str(&format!("[{group}]\n"));
        for (name, role) in &cloud.nodes {
            if kolla_group(*role) == group {
                inv.push_str(&format!(
                    "{name} ansible_host={}\n",
                    cloud.lab.container(name)
                ));
            }
        }
        inv.push('\n');
    }
    inv.push_str(
        "[all:vars]\nansible_connection=community.docker.docker\n\
         ansible_python_interpreter=/usr/bin/python3\n",
    );
    let inventory = dir.path().join("inventory.ini");
    std::fs::write(&inventory, inv)?;
    let extra = r#"{"rollcall_boot_id_command": "cat /run/rollcall/boot_id"}"#;
    let path = format!(
        "{}:{}",
        kit.venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = out_dir.join("ansible.log");
    let file = std::fs::File::create(&log)?;
    let started = Instant::now();
    let status = Command::new(kit.venv_bin.join("ansible-playbook"))
        .arg("-i")
        .arg(&inventory)
        .arg("-e")
        .arg(extra)
        .arg(&kit.playbook)
        .env("PATH", path)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_STDOUT_CALLBACK", "default")
        .env("ANSIBLE_CALLBACKS_ENABLED", "ansible.posix.profile_tasks")
        .env(
            "ANSIBLE_PIPELINING",
            if args.ansible_pipelining {
                "True"
            } else {
                "False"
            },
        )
        .env("ANSIBLE_LOCAL_TEMP", dir.path().join("tmp"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .status()?;
    let wall = started.elapsed().as_secs_f64();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    ensure!(
        status.success(),
        "ansible-playbook failed ({status}); see {}:\n{}",
        log.display(),
        output
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // profile_tasks' summary: "TASK NAME ---- 6.10s", summed over hosts.
    let tasks: Vec<String> = output
        .split("TASKS RECAP")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, secs) = l.rsplit_once(" -")?;
            let secs = secs.trim_start_matches('-').trim();
            secs.strip_suffix('s')?.parse::<f64>().ok()?;
            Some(format!("{} {secs}", name.trim()))
        })
        .collect();
    // Its last timestamp line ends with the time since the play started:
    // "... (0:00:00.689)       0:00:11.307 *****".
    let in_play = output
        .lines()
        .rev()
        .find_map(|l| {
            let t = l.trim_end_matches(['*', ' ']).rsplit(' ').next()?;
            let mut parts = t.split(':');
            let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
            let secs = h.parse::<f64>().ok()? * 3_600.0
                + m.parse::<f64>().ok()? * 60.0
                + s.parse::<f64>().ok()?;
            l.trim_end().ends_with('*').then_some(secs)
        })
        .unwrap_or_default();
    Ok(Measured {
        wall,
        detail: format!(
            "ansible-playbook process {wall:.1}s, of which the play {in_play:.1}s \
             (profile_tasks); task time summed over nodes: {}",
            tasks.join("; ")
        ),
    })
}

/// `campaign status --json`.
struct Status {
    campaign: Campaign,
    nodes: Vec<NodeRun>,
}

fn status(cloud: &Cloud, id: &str) -> Result<Status, String> {
    let v = cloud.cli_json(&["campaign", "status", id, "--json"])?;
    let bad = |e: serde_json::Error| format!("campaign status --json: {e}: {v}");
    Ok(Status {
        campaign: serde_json::from_value(v["campaign"].clone()).map_err(bad)?,
        nodes: serde_json::from_value(v["nodes"].clone()).map_err(bad)?,
    })
}

fn run_campaign(run: &str, args: &Args, cloud: &Cloud, out_dir: &Path) -> anyhow::Result<Measured> {
    let spec_path = format!("/root/{run}.toml");
    cloud.lab.write(
        SERVER,
        &spec_path,
        "0644",
        "root:root",
        campaign_spec(run, args).as_bytes(),
    );
    // The dry run (not timed): nobody skipped.
    let plan = cloud
        .cli_json(&["campaign", "plan", "--spec", &spec_path, "--json"])
        .map_err(anyhow::Error::msg)?;
    ensure!(
        plan["skipped"].as_array().is_some_and(Vec::is_empty),
        "the plan skips nodes: {plan:#}"
    );

    let started = Instant::now();
    let out = cloud.cli(&["campaign", "start", "--spec", &spec_path])?;
    ensure!(out.status.success(), "campaign start: {}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    cloud.log(&format!("campaign {id} started"));
    let deadline = Duration::from_secs(1_800);
    let mut last = String::new();
    let done = loop {
        if let Ok(s) = status(cloud, &id) {
            let line: Vec<String> = s
                .nodes
                .iter()
                .map(|n| format!("{} {}", n.node, n.step))
                .collect();
            let line = format!("{}: {}", s.campaign.phase, line.join(", "));
            if line != last {
                cloud.log(&line);
                last = line;
            }
            if s.nodes.iter().any(|n| n.step == Step::Failed) {
                bail!("a node failed: {last}");
            }
            if s.campaign.phase != Phase::Running {
                break s;
            }
        }
        ensure!(
            started.elapsed() < deadline,
            "campaign not ended after {deadline:?}: {last}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let wall = started.elapsed().as_secs_f64();
    ensure!(
        done.campaign.phase == Phase::Completed,
        "campaign {id} ended {}: {}",
        done.campaign.phase,
        done.campaign.reason
    );
    ensure!(
        done.nodes.len() == cloud.nodes.len() && done.nodes.iter().all(|n| n.step == Step::Done),
        "not every node done: {last}"
    );
    let server_secs = done
        .campaign
        .finished_at
        .map(|f| f.since(done.campaign.created_at).as_secs_f64())
        .unwrap_or_default();

    let audit_json = cloud
        .cli_json(&["campaign", "audit", &id, "--json"])
        .map_err(anyhow::Error::msg)?;
    std::fs::write(
        out_dir.join(format!("{run}.audit.json")),
        serde_json::to_string_pretty(&audit_json)?,
    )?;
    let audit: Vec<AuditEntry> = serde_json::from_value(audit_json)?;
    let breakdown = step_breakdown(&audit, &cloud.container_started());
    Ok(Measured {
        wall,
        detail: format!(
            "campaign {id}: server-side {server_secs:.1}s (created → finished); {breakdown}"
        ),
    })
}

/// Seconds spent in each step, summed over the nodes, from the audit log
/// ("precheck" enters precheck; "X done, now Y" leaves X for Y). The time
/// from the reboot request to the container's new start is split out of
/// reboot + wait-return with the engine's StartedAt.
fn step_breakdown(audit: &[AuditEntry], started: &BTreeMap<String, Timestamp>) -> String {
    let order = [
        "precheck",
        "drain",
        "patch",
        "reboot",
        "wait-return",
        "postcheck",
        "undrain",
    ];
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    let mut down = 0.0;
    let mut back = 0.0;
    let mut node_life = 0.0;
    let mut nodes: BTreeMap<&str, Vec<&AuditEntry>> = BTreeMap::new();
    for e in audit
        .iter()
        .filter(|e| !e.node.is_empty() && e.event == "step")
    {
        nodes.entry(e.node.as_str()).or_default().push(e);
    }
    for (node, entries) in &nodes {
        let mut current: Option<(String, Timestamp)> = None;
        let mut first = None;
        let mut reboot_asked = None;
        let mut returned = None;
        for e in entries {
            let next = if e.detail == "precheck" {
                first = Some(e.at);
                Some("precheck".to_owned())
            } else {
                e.detail
                    .split_once(" done, now ")
                    .map(|(_, n)| n.to_owned())
            };
            if let Some((step, since)) = current.take() {
                let secs = e.at.since(since).as_secs_f64();
                if let Some(k) = order.iter().find(|s| **s == step) {
                    *sums.entry(k).or_default() += secs;
                }
                if step == "wait-return" {
                    returned = Some(e.at);
                }
            }
            if let Some(next) = next {
                if next == "reboot" {
                    reboot_asked = Some(e.at);
                }
                if next == "done" {
                    if let Some(f) = first {
                        node_life += e.at.since(f).as_secs_f64();
                    }
                } else {
                    current = Some((next, e.at));
                }
            }
        }
        if let (Some(asked), Some(up), Some(ret)) = (reboot_asked, started.get(*node), returned) {
            down += up.since(asked).as_secs_f64();
            back += ret.since(*up).as_secs_f64();
        }
    }
    let steps: Vec<String> = order
        .iter()
        .filter_map(|s| sums.get(s).map(|v| format!("{s} {v:.1}")))
        .collect();
    format!(
        "step time summed over nodes (s): {}; of reboot + wait-return: request → container started {down:.1}, \
         container started → agent back under a new boot id {back:.1}; sum of node runs {node_life:.1}",
        steps.join(", ")
    )
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for run in &args.runs {
        ensure!(
            RUNS.contains(&run.as_str()),
            "unknown run {run:?}; one of {RUNS:?}"
        );
    }
    ensure!(
        args.controllers >= 1,
        "at least one controller (it runs the server)"
    );
    let kit = kit()?;
    nodes::clean_up_on_signal();
    let stamp = Timestamp::now().to_string().replace([':', '.'], "-");
    let out_dir = args.out.join(&stamp);
    std::fs::create_dir_all(&out_dir)?;

    let settings = format!(
        "nodes={} (controller {}, compute {}, storage {}); server report_interval_secs={} tick_ms={} \
         (other server and agent settings: shipped defaults); ansible pipelining={}",
        args.controllers + args.computes + args.storage,
        args.controllers,
        args.computes,
        args.storage,
        args.report_interval,
        args.tick_ms,
        args.ansible_pipelining
    );
    let mut summary = vec![
        format!(
            "# {} {} cores; load before: {}",
            Timestamp::now(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load()
        ),
        format!("# {settings}"),
    ];
    eprintln!("{}", summary.join("\n"));

    let mut ansible_wall = None;
    let mut lines = Vec::new();
    for run in &args.runs {
        eprintln!("\n== {run}: fresh node containers");
        let cloud = Cloud::start(&kit, &args, run)?;
        cloud.wait_ready()?;
        std::thread::sleep(Duration::from_secs(args.settle_secs));
        let before = cloud.snapshot();
        for (name, (_, state, restarts)) in &before {
            ensure!(
                state == "1.0 no-reboot" && restarts == "0",
                "{name} does not start from 1.0: {state}, restarts {restarts}"
            );
        }
        let load_at_start = load();
        cloud.log(&format!("{run}: clock starts (load {load_at_start})"));
        let measured = if run == "ansible" {
            run_ansible(&kit, &args, &cloud, &out_dir)?
        } else {
            run_campaign(run, &args, &cloud, &out_dir)?
        };
        cloud.log(&format!("{run}: {:.1}s", measured.wall));
        cloud
            .verify(&before)
            .with_context(|| format!("after {run}"))?;
        cloud.log("verified: every node on 1.1, no reboot flag, new boot id, one restart");
        if run == "ansible" {
            ansible_wall = Some(measured.wall);
        }
        let ratio = match ansible_wall {
            Some(a) if run != "ansible" => format!("{:.2}", measured.wall / a),
            Some(_) => "1.00".to_owned(),
            None => "n/a".to_owned(),
        };
        let line = format!(
            "run={run} wall={:.1}s ratio_to_ansible={ratio} load_at_start={load_at_start} | {}",
            measured.wall, measured.detail
        );
        println!("{line}");
        lines.push(line);
        drop(cloud);
    }
    summary.extend(lines);
    summary.push(format!("# load after: {}", load()));
    eprintln!("{}", summary.last().map(String::as_str).unwrap_or_default());
    std::fs::write(out_dir.join("summary.txt"), summary.join("\n") + "\n")?;
    eprintln!("logs and audits: {}", out_dir.display());
    Ok(())
}
