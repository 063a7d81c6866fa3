//! rollcall-bench-gates: what the controller gates (`galera-synced`,
//! `rabbitmq-healthy`) add to a campaign's wall time, per node.
//!
//! One fresh lab: three Debian bookworm node containers of the cluster
//! image (scripts/build-cluster-image.sh) with a real three-node Galera
//! cluster and a real three-node RabbitMQ cluster (tests/src/clusters.rs),
//! and a fourth node `ops1` of the plain node image running the server
//! (.deb); the agent .deb on each controller, its gates as hooks. Once the
//! clusters are formed, MariaDB and RabbitMQ are enabled at boot, so that a
//! reboot brings them back and they rejoin.
//!
//! Then, on the same lab, campaigns over the three controllers with
//! `reboot = "always"` (the agent's shipped `systemctl reboot`: the
//! container's systemd stops MariaDB and RabbitMQ cleanly, the engine starts
//! the container again, `--restart always`):
//!
//! - `no-gates`: no gates; the next controller goes as soon as the previous
//!   one's agent is back and its postcheck passes.
//! - `gates`: galera-synced and rabbitmq-healthy before and after each
//!   controller.
//!
//! For each run and node: the node's wall time (started_at → finished_at),
//! its time in gate-before and gate-after (the audit's step lines) and the
//! gate tries; from systemd on the node, when MariaDB and RabbitMQ were
//! active again after its boot, and how that compares with the moment the
//! campaign took the next controller down. Before the campaigns, each
//! script's per-try wall time, measured directly (`clusters::run_gate`). It
//! checks the work was real: each node rebooted once per run (a new boot
//! id, one more container restart), every node done.
//!
//! Run it with scripts/bench-gates.sh.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use rollcall_proto::timestamp::Timestamp;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::Phase;
use rollcall_tests::TempDir;
use rollcall_tests::clusters::{self, Galera, Gates, JOIN_TIMEOUT, Rabbit};
use rollcall_tests::nodes::{self, NodeLab};
use rollcall_tests::ops::{self, Kit, Ops, Status};

const MEMBERS: [&str; 3] = ["ctl1", "ctl2", "ctl3"];
const OPS: &str = "ops1";
const GALERA: &str = "galera-synced";
const RABBIT: &str = "rabbitmq-healthy";
const RUNS: [&str; 2] = ["no-gates", "gates"];

#[derive(Parser, Debug)]
#[command(about = "What the Galera and RabbitMQ gates add to a controller campaign's wall time")]
struct Args {
    /// Which campaigns, in order (comma-separated), on the same lab.
    #[arg(long, value_delimiter = ',', default_values_t = RUNS.map(String::from))]
    runs: Vec<String>,
    /// Tries per gate script and phase for the per-try timings.
    #[arg(long, default_value_t = 10)]
    tries: usize,
    /// The gates' interval_secs: seconds between a failed try and the next
    /// (packaging/campaign.example.toml has 10).
    #[arg(long, default_value_t = 10)]
    interval_secs: u64,
    /// The longest one campaign may take.
    #[arg(long, default_value_t = 1_200)]
    deadline_secs: u64,
    /// Where the audits and the summary go.
    #[arg(long, default_value = "target/bench-gates")]
    out: PathBuf,
}

fn spec(run: &str, interval_secs: u64) -> String {
    let gates = if run == "gates" {
        format!(
            "\n[gates.controller]\n\
             before = [\"{GALERA}\", \"{RABBIT}\"]\n\
             after = [\"{GALERA}\", \"{RABBIT}\"]\n\
             run_on = \"self\"\n\
             interval_secs = {interval_secs}\n"
        )
    } else {
        String::new()
    };
    format!(
        "name = \"bench-gates {run}\"\n\
         role_order = [\"controller\"]\n\
         reboot = \"always\"\n\
         skip_up_to_date = false\n\
         \n[select]\nroles = [\"controller\"]\n{gates}"
    )
}

fn agent_toml() -> String {
    let galera = format!("{}/{GALERA}", clusters::GATES_DIR);
    let rabbit = format!("{}/{RABBIT}", clusters::GATES_DIR);
    ops::controller_agent_toml(
        OPS,
        &[
            (GALERA, &[galera.as_str(), "--min-size", "3"]),
            (RABBIT, &[rabbit.as_str(), "--nodes", "3"]),
        ],
    )
}

struct Lab {
    lab: NodeLab,
    t0: Instant,
}

impl Lab {
    fn log(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.t0.elapsed().as_secs_f32());
    }

    /// A shell command's stdout on node `name`, or why it failed.
    fn sh(&self, name: &str, script: &str) -> anyhow::Result<String> {
        let out = self.lab.exec(name, &["sh", "-c", script]);
        ensure!(
            out.status.success(),
            "{name}: `{script}`: {}",
            nodes::text(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Per member: its boot id and its container's restart count.
    fn boots(&self) -> anyhow::Result<BTreeMap<String, (String, u32)>> {
        MEMBERS
            .iter()
            .map(|name| {
                let boot = self
                    .sh(name, "cat /run/rollcall/boot_id")?
                    .trim()
                    .to_owned();
                let restarts = self.lab.inspect(name, "{{.RestartCount}}").parse()?;
                Ok(((*name).to_owned(), (boot, restarts)))
            })
            .collect()
    }

    /// When systemd on `name` last saw `unit` become active (for a
    /// Type=notify unit such as MariaDB's and RabbitMQ's: when it said it
    /// was ready), if it is active.
    fn active_since(&self, name: &str, unit: &str) -> Option<Timestamp> {
        let out = self
            .sh(
                name,
                &format!(
                    "systemctl show --timestamp=us+utc -p ActiveEnterTimestamp -p ActiveState {unit}"
                ),
            )
            .ok()?;
        let props: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
        if props.get("ActiveState") != Some(&"active") {
            return None;
        }
        // "Mon 2026-11-30 06:50:01.123456 UTC"
        let mut words = props.get("ActiveEnterTimestamp")?.split_whitespace();
        let (_, date, time) = (words.next()?, words.next()?, words.next()?);
        (words.next() == Some("UTC")).then_some(())?;
        Timestamp::parse_rfc3339(&format!("{date}T{time}Z"))
    }
}

/// One node's way through one campaign.
#[derive(Debug, Clone, Default)]
struct NodeResult {
    node: String,
    wall: f64,
    gate_before: f64,
    gate_after: f64,
    tries_before: usize,
    failed_before: usize,
    tries_after: usize,
    failed_after: usize,
    /// From the reboot request to the agent back under a new boot id.
    reboot: f64,
    /// From the container's start until MariaDB and RabbitMQ were both
    /// active again.
    clusters_back: Option<f64>,
    /// The next controller's reboot request (or the campaign's end) less
    /// the moment this one's clusters were back: negative when the
    /// campaign took the next one down first.
    margin: Option<f64>,
}

struct RunResult {
    run: String,
    id: String,
    wall: f64,
    nodes: Vec<NodeResult>,
    /// Whether both clusters were whole when the campaign ended.
    whole: String,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn run_campaign(
    lab: &Lab,
    ops: &mut Ops,
    galera: &Galera,
    rabbit: &Rabbit,
    run: &str,
    args: &Args,
    out_dir: &std::path::Path,
) -> anyhow::Result<RunResult> {
    // The clusters whole and every agent back before the clock starts.
    galera.wait_whole(&MEMBERS, 3, JOIN_TIMEOUT);
    rabbit.wait_running(&MEMBERS, &MEMBERS, JOIN_TIMEOUT);
    ops.wait_online(&MEMBERS, Duration::from_secs(120))
        .map_err(anyhow::Error::msg)?;
    let before = lab.boots()?;
    let id = ops
        .start_campaign(&lab.lab, &spec(run, args.interval_secs))
        .map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    lab.log(&format!("{run}: campaign {id} started"));
    let deadline = Duration::from_secs(args.deadline_secs);
    let mut last = String::new();
    let done: Status = loop {
        match ops.status(&id) {
            Ok(s) => {
                let line = s.summary();
                if line != last {
                    lab.log(&line);
                    last = line;
                }
                if s.any_failed() {
                    bail!("a node failed: {s:#?}\n{}", ops.journal(&lab.lab, 40));
                }
                if s.campaign.phase != Phase::Running {
                    break s;
                }
            }
            Err(e) => lab.log(&format!("status unavailable: {e}")),
        }
        ensure!(
            started.elapsed() < deadline,
            "campaign not ended after {deadline:?}: {last}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    ensure!(
        done.campaign.phase == Phase::Completed && done.nodes.iter().all(|n| n.step == Step::Done),
        "campaign {id} ended {}: {}",
        done.campaign.phase,
        done.campaign.reason
    );
    let ended = done.campaign.finished_at.context("no finished_at")?;
    let wall = secs(ended.since(done.campaign.created_at));

    // Whether both clusters were whole when the campaign ended (what the
    // after gates wait for), else how long after its end they were.
    let looked = secs(Timestamp::now().since(ended));
    let want: Vec<String> = MEMBERS.iter().map(|n| Rabbit::node(n)).collect();
    let whole_now = MEMBERS
        .iter()
        .all(|n| galera.status(n).is_ok_and(|s| s.whole(3)))
        && MEMBERS
            .iter()
            .all(|n| rabbit.running_nodes(n).is_ok_and(|r| r == want));
    let whole = if whole_now {
        format!("whole at the first look, {looked:.1} s after its end")
    } else {
        galera.wait_whole(&MEMBERS, 3, JOIN_TIMEOUT);
        rabbit.wait_running(&MEMBERS, &MEMBERS, JOIN_TIMEOUT);
        format!(
            "whole {:.1} s after its end",
            secs(Timestamp::now().since(ended))
        )
    };
    lab.log(&format!("{run}: clusters {whole}"));

    // The work was real: each node rebooted exactly once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let after = lab.boots()?;
        let rebooted = before.iter().all(|(name, (boot, restarts))| {
            after
                .get(name)
                .is_some_and(|(b, r)| b != boot && *r == restarts + 1)
        });
        if rebooted {
            break after;
        }
        ensure!(
            Instant::now() < deadline,
            "not every node rebooted exactly once: before {before:?}, after {after:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    lab.log(&format!(
        "{run}: every controller rebooted once (new boot ids: {:?})",
        after.values().map(|(b, _)| b.as_str()).collect::<Vec<_>>()
    ));

    let audit = ops.audit(&id).map_err(anyhow::Error::msg)?;
    std::fs::write(
        out_dir.join(format!("{run}.audit.json")),
        serde_json::to_string_pretty(&audit)?,
    )?;
    let tries = ops::gate_tries(&audit);
    let reboot_asked = |node: &str| -> Option<Timestamp> {
        audit
            .iter()
            .find(|e| e.node == node && e.event == "action" && e.detail.starts_with("reboot asked"))
            .map(|e| e.at)
    };
    let mut results = Vec::new();
    for (i, node) in MEMBERS.iter().enumerate() {
        let r = done.run(node).context("a member")?;
        let (Some(s), Some(f)) = (r.started_at, r.finished_at) else {
            bail!("{node} has no start or finish: {r:#?}");
        };
        let steps = ops::step_times(&audit, node);
        let step = |name: &str| steps.get(name).copied().map_or(0.0, secs);
        let count = |phase: &str, failed: bool| {
            tries
                .iter()
                .filter(|t| t.node == *node && t.phase == phase && (!failed || !t.passed))
                .count()
        };
        // Both services active after the boot, by systemd's clock on the node.
        let boot = lab.lab.inspect(node, "{{.State.StartedAt}}");
        let boot = Timestamp::parse_rfc3339(&boot);
        let mariadb = lab.active_since(node, "mariadb");
        let rabbitmq = lab.active_since(node, "rabbitmq-server");
        let back = mariadb.zip(rabbitmq).map(|(a, b)| a.max(b));
        let next = MEMBERS
            .get(i + 1)
            .and_then(|n| reboot_asked(n))
            .unwrap_or(ended);
        let signed = |later: Timestamp, earlier: Timestamp| {
            (later.unix_millis() - earlier.unix_millis()) as f64 / 1_000.0
        };
        results.push(NodeResult {
            node: (*node).to_owned(),
            wall: secs(f.since(s)),
            gate_before: step("gate-before"),
            gate_after: step("gate-after"),
            tries_before: count("before", false),
            failed_before: count("before", true),
            tries_after: count("after", false),
            failed_after: count("after", true),
            reboot: step("reboot") + step("wait-return"),
            clusters_back: back.zip(boot).map(|(b, s)| signed(b, s)),
            margin: back.map(|b| signed(next, b)),
        });
    }
    Ok(RunResult {
        run: run.to_owned(),
        id,
        wall,
        nodes: results,
        whole,
    })
}

/// `TRIES` passing tries of `script` on ctl1; their sorted wall times.
fn time_script(lab: &Lab, script: &str, args: &[&str], tries: usize) -> anyhow::Result<Vec<f64>> {
    let mut took = Vec::with_capacity(tries);
    for _ in 0..tries {
        let run = clusters::run_gate(&lab.lab, "ctl1", script, args);
        ensure!(run.code == 0, "{script} {args:?} on ctl1: {run}");
        took.push(secs(run.took));
    }
    took.sort_by(f64::total_cmp);
    Ok(took)
}

/// A scoped thread's result, its panic passed on.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

fn table(runs: &[RunResult]) -> String {
    let mut out = String::from(
        "| run | node | node wall s | gate-before s (tries, failed) | gate-after s (tries, failed) \
         | reboot + return s | MariaDB and RabbitMQ active, s after boot | next controller down (last: campaign end), s after that |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        for n in &r.nodes {
            out.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} ({}, {}) | {:.1} ({}, {}) | {:.1} | {} | {} |\n",
                r.run,
                n.node,
                n.wall,
                n.gate_before,
                n.tries_before,
                n.failed_before,
                n.gate_after,
                n.tries_after,
                n.failed_after,
                n.reboot,
                opt(n.clusters_back),
                opt(n.margin),
            ));
        }
        let sum = |f: fn(&NodeResult) -> f64| r.nodes.iter().map(f).sum::<f64>();
        let count = |f: fn(&NodeResult) -> usize| r.nodes.iter().map(f).sum::<usize>();
        out.push_str(&format!(
            "| **{}** | campaign {:.1} s (clusters {}) | {:.1} | {:.1} ({}, {}) | {:.1} ({}, {}) | {:.1} | | |\n",
            r.run,
            r.wall,
            r.whole,
            sum(|n| n.wall),
            sum(|n| n.gate_before),
            count(|n| n.tries_before),
            count(|n| n.failed_before),
            sum(|n| n.gate_after),
            count(|n| n.tries_after),
            count(|n| n.failed_after),
            sum(|n| n.reboot),
        ));
    }
    out
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
    ensure!(args.tries > 0, "--tries must be at least 1");
    ensure!(nodes::docker_available(), "no Docker engine answers");
    ensure!(
        nodes::node_image_available() && clusters::cluster_image_available(),
        "images {} and {} are needed: scripts/build-node-image.sh, scripts/build-cluster-image.sh",
        nodes::NODE_IMAGE,
        clusters::CLUSTER_IMAGE
    );
    let kit = Kit::find().map_err(|m| anyhow::anyhow!("missing: {}", m.join(", ")))?;
    ensure!(
        matches!(Gates::find(&[GALERA, RABBIT]), Some(Gates::Deb(_))),
        "{} does not ship {GALERA} and {RABBIT}: scripts/package.sh",
        kit.agent_deb.display()
    );
    nodes::clean_up_on_signal();
    let stamp = Timestamp::now().to_string().replace([':', '.'], "-");
    let out_dir = args.out.join(&stamp);
    std::fs::create_dir_all(&out_dir)?;
    let mut summary = vec![format!(
        "# {} {} cores; load before: {}; gates interval_secs={}, server report_interval_secs=2 \
         tick_ms=200, agents' shipped defaults otherwise",
        Timestamp::now(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load(),
        args.interval_secs
    )];
    eprintln!("{}", summary[0]);

    let t0 = Instant::now();
    let mut lab = NodeLab::new("bench-gates");
    nodes::remove_on_interrupt(&lab, MEMBERS.iter().copied().chain([OPS]));
    // The engine starts a node again when its systemd ends: the reboot.
    clusters::start_nodes(&mut lab, &MEMBERS, &["--restart", "always"]);
    lab.start(OPS, &[]);
    lab.wait_systemd(OPS);
    let lab = Lab { lab, t0 };
    lab.log("three cluster nodes and the ops node booted");
    let pki = TempDir::new("bench-gates-pki");
    nodes::make_pki(&kit.server_bin, pki.path(), OPS, MEMBERS, ops::OPERATOR);
    let (galera, rabbit, mut ops) = std::thread::scope(|s| {
        let galera = s.spawn(|| Galera::start(&lab.lab, &MEMBERS));
        let rabbit = s.spawn(|| Rabbit::start(&lab.lab, &MEMBERS));
        let ops = s.spawn(|| {
            let ops = Ops::install(&lab.lab, OPS, &kit, pki.path());
            for node in MEMBERS {
                lab.lab
                    .install_agent(node, &kit.agent_deb, pki.path(), &agent_toml());
                lab.lab.sh(node, "systemctl enable --now rollcall-agent");
            }
            ops
        });
        (join(galera), join(rabbit), join(ops))
    });
    lab.log(&format!(
        "clusters formed: Galera in {:.1}s, RabbitMQ in {:.1}s; rollcall installed",
        secs(galera.started_in()),
        secs(rabbit.started_in())
    ));
    // From now on a reboot brings both back, and they rejoin.
    for node in MEMBERS {
        lab.sh(node, "systemctl enable mariadb rabbitmq-server")?;
    }

    // Each script's cost per try, on a whole, idle cluster.
    let mut per_try = String::from(
        "| script | phase | tries | min s | median s | mean s | max s |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for (script, opts) in [
        (GALERA, &["--min-size", "3"][..]),
        (RABBIT, &["--nodes", "3"][..]),
    ] {
        for phase in ["before", "after"] {
            let mut all = opts.to_vec();
            all.extend([phase, "ctl1"]);
            let took = time_script(&lab, script, &all, args.tries)?;
            let mean = took.iter().sum::<f64>() / took.len() as f64;
            per_try.push_str(&format!(
                "| {script} | {phase} | {} | {:.2} | {:.2} | {mean:.2} | {:.2} |\n",
                took.len(),
                took[0],
                took[took.len() / 2],
                took[took.len() - 1]
            ));
        }
    }
    lab.log(&format!("per-try wall times:\n{per_try}"));

    let mut results = Vec::new();
    for run in &args.runs {
        let load_at_start = load();
        lab.log(&format!("{run}: starting (load {load_at_start})"));
        let result = run_campaign(&lab, &mut ops, &galera, &rabbit, run, &args, &out_dir)
            .with_context(|| format!("run {run}"))?;
        lab.log(&format!(
            "{run}: campaign {} took {:.1}s (load at start {load_at_start})",
            result.id, result.wall
        ));
        summary.push(format!(
            "# {run}: campaign {} load at start {load_at_start}",
            result.id
        ));
        results.push(result);
    }
    summary.push(format!("# load after: {}", load()));
    summary.push(String::new());
    summary.push(per_try);
    summary.push(table(&results));
    let text = summary.join("\n");
    println!("{text}");
    std::fs::write(out_dir.join("summary.md"), text + "\n")?;
    eprintln!("audits and summary: {}", out_dir.display());
    Ok(())
}
