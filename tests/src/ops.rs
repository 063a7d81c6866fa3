//! An operations node for the suites and benches that run real campaigns
//! on [`NodeLab`] nodes: the real `rollcall-server` from its .deb on a node
//! of its own, the real agent .deb on the nodes it patches, and the
//! operator's `rollcall-server campaign ...` CLI run inside the server's
//! node, as an operator would run it there.
//!
//! ```ignore
//! let kit = Kit::find()?;
//! let pki = TempDir::new("pki");
//! nodes::make_pki(&kit.server_bin, pki.path(), "ops1", ["ctl1"], ops::OPERATOR);
//! lab.start("ops1", &[]);
//! let ops = Ops::install(&lab, "ops1", &kit, pki.path());
//! lab.install_agent("ctl1", &kit.agent_deb, pki.path(), &controller_agent_toml("ops1", &[]));
//! lab.sh("ctl1", "systemctl enable --now rollcall-agent");
//! let id = ops.start_campaign(SPEC)?;
//! let status = ops.status(&id)?;
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rollcall_proto::model::Node;
use rollcall_proto::timestamp::Timestamp;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::{AuditEntry, Campaign, NodeRun};
use serde_json::Value;

use crate::nodes::{self, NodeLab, text};

/// The operator whose certificate the CLI uses.
pub const OPERATOR: &str = "ops-operator";

/// Where [`Ops::start_campaign`] writes a spec on the server's node.
const SPEC_DIR: &str = "/root/specs";

/// The server's configuration: agents report every 2 s and the scheduler
/// ticks every 200 ms, so that a campaign follows a node within seconds
/// (the shipped defaults are 10 s and 500 ms).
pub const SERVER_TOML: &str = r#"# Written by tests/src/ops.rs.
listen = "0.0.0.0:7443"
data_dir = "/var/lib/rollcall"

[tls]
ca = "/etc/rollcall/pki/ca.crt"
cert = "/etc/rollcall/pki/server.crt"
key = "/etc/rollcall/pki/server.key"

[agents]
report_interval_secs = 2

[campaigns]
tick_ms = 200
"#;

/// What a real campaign needs from the build.
#[derive(Debug, Clone)]
pub struct Kit {
    /// target/debian/rollcall-agent_*.deb (scripts/package.sh).
    pub agent_deb: PathBuf,
    /// target/debian/rollcall-server_*.deb.
    pub server_deb: PathBuf,
    /// The host's `rollcall-server`, for the PKI (`certs init`/`issue`).
    pub server_bin: PathBuf,
}

impl Kit {
    /// The packages and the host binary, or what is missing, each with the
    /// command that makes it.
    pub fn find() -> Result<Self, Vec<String>> {
        let mut missing = Vec::new();
        let agent_deb = nodes::deb("rollcall-agent");
        let server_deb = nodes::deb("rollcall-server");
        if agent_deb.is_none() || server_deb.is_none() {
            missing.push("target/debian/rollcall-{agent,server}_*.deb (scripts/package.sh)".into());
        }
        // A test runs from target/debug/deps, a bench from target/debug.
        let server_bin = std::env::current_exe().ok().and_then(|exe| {
            exe.ancestors()
                .skip(1)
                .take(2)
                .map(|dir| dir.join("rollcall-server"))
                .find(|p| p.is_file())
        });
        if server_bin.is_none() {
            missing.push("target/debug/rollcall-server (cargo build --bins)".into());
        }
        match (agent_deb, server_deb, server_bin) {
            (Some(agent_deb), Some(server_deb), Some(server_bin)) => Ok(Self {
                agent_deb,
                server_deb,
                server_bin,
            }),
            _ => Err(missing),
        }
    }
}

/// A controller's agent.toml for a server on node `server`: role
/// controller, no container engine (a cluster node has none: its MariaDB
/// and RabbitMQ are systemd units), a boot id of the container's own, and
/// the hooks `hooks` (name, argv) under `[actions.hooks]`. Patch and reboot
/// are the shipped defaults: a real `apt-get upgrade` from the image's local
/// repository and `systemctl reboot`.
pub fn controller_agent_toml(server: &str, hooks: &[(&str, &[&str])]) -> String {
    let hooks: String = hooks
        .iter()
        .map(|(name, argv)| {
            let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
            format!("{name} = [{}]\n", argv.join(", "))
        })
        .collect();
    format!(
        r#"# Written by tests/src/ops.rs.
server = "https://{server}:7443"
role = "controller"

[reconnect]
# A reboot cuts the session: come back within seconds, not a minute.
max_backoff_secs = 5

[host]
# A container shares the machine's kernel boot id, which a container restart
# keeps; rollcall-boot-id.service writes one of the container's own at each start.
boot_id_path = "/run/rollcall/boot_id"

[containers]
# Off: the node has no engine of its own (its clusters are systemd units).
enabled = false

[actions]
# patch_command and reboot_command: the shipped defaults.

[actions.hooks]
{hooks}"#
    )
}

/// `campaign status --json`.
#[derive(Debug, Clone)]
pub struct Status {
    pub campaign: Campaign,
    pub nodes: Vec<NodeRun>,
    /// What the campaign waits for (empty when nothing).
    pub waiting: String,
}

impl Status {
    /// What `campaign status --json` printed.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let bad = |e: serde_json::Error| format!("campaign status --json: {e}: {v}");
        Ok(Status {
            campaign: serde_json::from_value(v["campaign"].clone()).map_err(bad)?,
            nodes: serde_json::from_value(v["nodes"].clone()).map_err(bad)?,
            waiting: v["waiting"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Node `name`'s run.
    pub fn run(&self, name: &str) -> Option<&NodeRun> {
        self.nodes.iter().find(|n| n.node == name)
    }

    /// One line: the phase, each node's step, and what it waits for.
    pub fn summary(&self) -> String {
        let steps: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{} {}", n.node, n.step))
            .collect();
        let waiting = if self.waiting.is_empty() {
            String::new()
        } else {
            format!(" (waiting: {})", self.waiting)
        };
        format!("{}: {}{waiting}", self.campaign.phase, steps.join(", "))
    }

    /// Whether a node failed.
    pub fn any_failed(&self) -> bool {
        self.nodes.iter().any(|n| n.step == Step::Failed)
    }
}

/// The server's node, with the operator's certificate on it.
#[derive(Debug, Clone)]
pub struct Ops {
    name: String,
    container: String,
    specs: u32,
}

impl Ops {
    /// Installs the server .deb on node `name` of `lab` (started and
    /// booted) with [`SERVER_TOML`] and the certificates of the pki
    /// directory `pki` (made with `nodes::make_pki` for server `name` and
    /// operator [`OPERATOR`]), and starts it.
    pub fn install(lab: &NodeLab, name: &str, kit: &Kit, pki: &Path) -> Self {
        lab.install_server(name, &kit.server_deb, pki, OPERATOR, SERVER_TOML);
        lab.sh(name, &format!("mkdir -p {SPEC_DIR}"));
        Self {
            name: name.to_owned(),
            container: lab.container(name),
            specs: 0,
        }
    }

    /// The server's node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `rollcall-server ARGS` on the server's node, as the operator.
    pub fn cli(&self, args: &[&str]) -> Output {
        operator_cli(&self.container, OPERATOR, args)
            .output()
            .expect("run docker exec")
    }

    /// A `--json` command's answer, or why there is none.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.cli(args);
        if !out.status.success() {
            return Err(format!("{args:?}: {}", text(&out).trim()));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// `nodes list --json`.
    pub fn nodes(&self) -> Result<Vec<Node>, String> {
        let v = self.cli_json(&["nodes", "list", "--json"])?;
        serde_json::from_value(v).map_err(|e| format!("nodes list --json: {e}"))
    }

    /// Waits until every node of `names` is online with a boot id; the
    /// nodes as listed then.
    pub fn wait_online(&self, names: &[&str], timeout: Duration) -> Result<Vec<Node>, String> {
        let started = std::time::Instant::now();
        loop {
            let listed = self.nodes();
            if let Ok(nodes) = &listed {
                let up = |name: &&str| {
                    nodes
                        .iter()
                        .any(|n| n.name == *name && n.online && !n.boot_id.is_empty())
                };
                if names.iter().all(up) {
                    return listed;
                }
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "nodes {names:?} not all online after {timeout:?}: {listed:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Writes `spec` on the server's node and starts it with
    /// `campaign start --spec FILE`; the campaign's id.
    pub fn start_campaign(&mut self, lab: &NodeLab, spec: &str) -> Result<String, String> {
        self.specs += 1;
        let path = format!("{SPEC_DIR}/campaign-{}.toml", self.specs);
        lab.write(&self.name, &path, "0644", "root:root", spec.as_bytes());
        let out = self.cli(&["campaign", "start", "--spec", &path]);
        if !out.status.success() {
            return Err(format!("campaign start: {}", text(&out).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `campaign status ID --json`.
    pub fn status(&self, id: &str) -> Result<Status, String> {
        Status::from_json(&self.cli_json(&["campaign", "status", id, "--json"])?)
    }

    /// `campaign audit ID --json`.
    pub fn audit(&self, id: &str) -> Result<Vec<AuditEntry>, String> {
        let v = self.cli_json(&["campaign", "audit", id, "--json"])?;
        serde_json::from_value(v).map_err(|e| format!("campaign audit --json: {e}"))
    }

    /// The server's journal (and the agent's, where one runs), for a
    /// failure message.
    pub fn journal(&self, lab: &NodeLab, lines: u32) -> String {
        unit_journal(lab, &self.name, "rollcall-server", lines)
    }
}

/// The agent's journal on node `name`, for a failure message.
pub fn agent_journal(lab: &NodeLab, name: &str, lines: u32) -> String {
    unit_journal(lab, name, "rollcall-agent", lines)
}

/// The last `lines` of `unit`'s journal on node `name`, headed by both.
fn unit_journal(lab: &NodeLab, name: &str, unit: &str, lines: u32) -> String {
    let lines = lines.to_string();
    let out = lab.exec(
        name,
        &[
            "journalctl",
            "--no-pager",
            "-o",
            "short-precise",
            "-n",
            &lines,
            "-u",
            unit,
        ],
    );
    format!("--- {name} {unit} ---\n{}", text(&out))
}

/// `rollcall-server ARGS` in `container`, as the operator `operator` whose
/// certificate the server's pki holds, as an operator on that node runs it.
pub fn operator_cli(container: &str, operator: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.arg("exec");
    for env in [
        "ROLLCALL_SERVER=https://localhost:7443".to_owned(),
        "ROLLCALL_CA=/etc/rollcall/pki/ca.crt".to_owned(),
        format!("ROLLCALL_CERT=/etc/rollcall/pki/operators/{operator}.crt"),
        format!("ROLLCALL_KEY=/etc/rollcall/pki/operators/{operator}.key"),
    ] {
        cmd.arg("-e").arg(env);
    }
    cmd.arg(container).arg("rollcall-server").args(args);
    cmd
}

/// One node's time in each step, from the audit's `step` lines: `precheck`
/// enters precheck, `X done, now Y` leaves X for Y, `X stopped, now Y`
/// (a guard) too. Seconds per step name, summed if it was entered twice.
pub fn step_times(audit: &[AuditEntry], node: &str) -> BTreeMap<String, Duration> {
    let mut times: BTreeMap<String, Duration> = BTreeMap::new();
    let mut current: Option<(String, Timestamp)> = None;
    for e in audit.iter().filter(|e| e.node == node && e.event == "step") {
        let next = if e.detail == "precheck" {
            Some("precheck")
        } else {
            e.detail
                .split_once(" done, now ")
                .or_else(|| e.detail.split_once(" stopped, now "))
                .map(|(_, next)| next.split(':').next().unwrap_or(next))
        };
        let Some(next) = next else { continue };
        if let Some((step, since)) = current.take() {
            *times.entry(step).or_default() += e.at.since(since);
        }
        current = Some((next.to_owned(), e.at));
    }
    times
}

/// One gate try, from an audit `gate` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateTry {
    pub node: String,
    /// `before` or `after`.
    pub phase: String,
    /// The hook tried.
    pub hook: String,
    pub passed: bool,
    pub exit_code: Option<i32>,
    pub at: Timestamp,
}

/// Every gate try of the audit, in order. A line reads `before gate:
/// galera-synced on ctl1 passed (try 3)` or `before gate: galera-synced on
/// ctl1 failed (exit code 1): REASON (try 1); next try in 2s`.
pub fn gate_tries(audit: &[AuditEntry]) -> Vec<GateTry> {
    audit
        .iter()
        .filter(|e| e.event == "gate")
        .filter_map(|e| {
            let (phase, rest) = e.detail.split_once(" gate: ")?;
            let hook = rest.split_once(' ')?.0;
            let passed = rest
                .split_once(" passed (try ")
                .is_some_and(|(head, _)| !head.contains(':'));
            Some(GateTry {
                node: e.node.clone(),
                phase: phase.to_owned(),
                hook: hook.to_owned(),
                passed,
                exit_code: e.exit_code,
                at: e.at,
            })
        })
        .collect()
}
