//! rollcall-loadgen: simulates N agents against a real rollcall-server, each
//! with its own certificate and its own mutual-TLS connection, sending what
//! the real agent sends (rollcall_tests::sim): a full report made from a
//! report template captured from a real agent on connect and every
//! `--full-every` intervals, metrics and network in between, and
//! change-driven container reports at `--container-changes-per-min`.
//! It measures what BENCHMARKS.md reports, over a window of steady state:
//!
//! - server RSS (now and peak), CPU cores and CPU seconds per 1,000
//!   reports, and bytes written to disk per second, from /proc/PID of the
//!   server process;
//! - the delay from an agent's report to its visibility in the operator API
//!   (an operator WatchNodes stream sees the node's new last_report_at),
//!   as p50 / p99 / max;
//! - with `--storm`, afterwards: SIGTERM to the server (whose supervisor
//!   starts it again) and the time until every agent, on its real backoff,
//!   is connected again and has reported.
//!
//! Run it through scripts/bench-fleet.sh, which builds release binaries,
//! makes a CA and starts the server. `--describe-template` only prints what
//! a template holds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rollcall_proto::identity::{Identity, Role};
use rollcall_proto::timestamp::Timestamp;
use rollcall_server::pki::Ca;
use rollcall_tests::sim::procfs::{self, ProcSample};
use rollcall_tests::sim::{self, SimConfig, SimFleet, Template, Visibility};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Simulate N rollcall agents against a running server and measure it")]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "https://localhost:7443")]
    server: String,
    /// The server's pki directory (its CA signs the simulated agents).
    #[arg(long, required_unless_present = "describe_template")]
    pki: Option<PathBuf>,
    /// Number of simulated agents, one connection each.
    #[arg(long, default_value_t = 1_000)]
    agents: usize,
    /// Report interval until the server's Welcome sets one (it always does).
    #[arg(long, default_value_t = 10)]
    interval_secs: u64,
    /// A report as `rollcall-agent once --json` prints it; every simulated
    /// node sends it under its own hostname, boot id and container ids.
    /// Default: the shipped tests/data/report-kolla-node.json.
    #[arg(long)]
    report_template: Option<PathBuf>,
    /// Every this many intervals a report carries every section (the
    /// agent's report.full_every).
    #[arg(long, default_value_t = 30)]
    full_every: u32,
    /// Percent of the agents per minute whose container restarts or flips
    /// health, each sending a change-driven report with its containers.
    #[arg(long, default_value_t = 2.0)]
    container_changes_per_min: f64,
    /// The agent's reconnect backoff: first cap in milliseconds...
    #[arg(long, default_value_t = 500)]
    backoff_initial_ms: u64,
    /// ...doubling up to this many seconds (full jitter below the cap).
    #[arg(long, default_value_t = 60)]
    backoff_max_secs: u64,
    /// Seconds of steady state measured after every agent is connected.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Seconds of steady state before measuring starts.
    #[arg(long, default_value_t = 15)]
    warmup_secs: u64,
    /// PID of the server process, for RSS, CPU and disk writes.
    #[arg(long, required_unless_present_any = ["server_pid_file", "describe_template"])]
    server_pid: Option<u32>,
    /// A file holding the server's PID, rewritten by a supervisor that
    /// restarts the server (needed for --storm).
    #[arg(long, conflicts_with = "server_pid")]
    server_pid_file: Option<PathBuf>,
    /// After the window, SIGTERM the server and measure the reconnect storm
    /// until every agent is connected again and has reported.
    #[arg(long, requires = "server_pid_file")]
    storm: bool,
    /// Give up on the storm after this many seconds.
    #[arg(long, default_value_t = 600)]
    storm_timeout_secs: u64,
    /// After the window, time the operator CLI (this rollcall-server binary)
    /// against the loaded server: `nodes list --json` (and check it returns
    /// every agent), `fleet status --json`, `containers list --name
    /// nova_compute --json`.
    #[arg(long)]
    time_cli: Option<PathBuf>,
    /// TLS handshakes in flight at once while first connecting.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Print what the report template holds and exit.
    #[arg(long)]
    describe_template: bool,
    /// With --describe-template: fail unless the template has at least this
    /// many health-checked containers.
    #[arg(long, default_value_t = 0)]
    min_health_checked: usize,
    /// Print the result as one JSON object too.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// The server's pid now (re-read from the pid file after a restart).
    fn server_pid(&self) -> anyhow::Result<u32> {
        match (&self.server_pid, &self.server_pid_file) {
            (Some(pid), _) => Ok(*pid),
            (None, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("read {}", file.display()))?
                .trim()
                .parse()
                .with_context(|| format!("{} holds no pid", file.display())),
            (None, None) => bail!("give --server-pid or --server-pid-file"),
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn describe(args: &Args, template: &Template) -> anyhow::Result<()> {
    let f = template.facts();
    println!(
        "{}: {} containers ({} health-checked, {} unhealthy, {} labelled), {} interfaces, {} filesystems; JSON {} bytes; encoded AgentMessage: full {} bytes, interval {} bytes, container change {} bytes",
        args.report_template
            .as_ref()
            .map_or("built-in kolla node template".into(), |p| p
                .display()
                .to_string()),
        f.containers,
        f.health_checked,
        f.unhealthy,
        f.labelled,
        f.interfaces,
        f.filesystems,
        f.json_bytes,
        f.full_report_bytes,
        f.partial_report_bytes,
        f.change_report_bytes
    );
    if args.json {
        println!("{}", serde_json::to_string(&f)?);
    }
    if f.health_checked < args.min_health_checked {
        bail!(
            "the template has {} health-checked containers, fewer than {}",
            f.health_checked,
            args.min_health_checked
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Arc::new(Args::parse());
    let template = match &args.report_template {
        Some(path) => Template::load(path)?,
        None => Template::kolla_node(),
    };
    if args.describe_template {
        return describe(&args, &template);
    }
    if args.interval_secs == 0 || args.full_every == 0 {
        bail!("--interval-secs and --full-every must be at least 1");
    }
    let facts = template.facts();
    let pki = args.pki.as_ref().context("--pki is required")?;
    let ca = Ca::load(pki).context("load the CA from --pki")?;
    let ca_pem = std::fs::read(pki.join("ca.crt")).context("read ca.crt in --pki")?;
    let operator = ca.issue_client(&Identity::operator("loadgen", Role::Viewer))?;

    eprintln!("Issuing {} agent certificates...", args.agents);
    let started = Instant::now();
    let agents = sim::issue_agents(&ca, "sim", args.agents)?;
    eprintln!("Issued in {:.1}s.", started.elapsed().as_secs_f64());

    let endpoint = rollcall_proto::connect::endpoint(
        &args.server,
        &ca_pem,
        operator.cert_pem.as_bytes(),
        operator.key_pem.as_bytes(),
    )
    .map_err(anyhow::Error::msg)?;
    let visibility = Visibility::start(endpoint).await?;

    eprintln!("Connecting {} agents...", args.agents);
    let connect_started = Instant::now();
    let config = SimConfig {
        template: Arc::new(template),
        interval: Duration::from_secs(args.interval_secs),
        full_every: args.full_every,
        container_changes_per_min: args.container_changes_per_min,
        backoff_initial: Duration::from_millis(args.backoff_initial_ms),
        backoff_max: Duration::from_secs(args.backoff_max_secs),
        connect_concurrency: args.connect_concurrency,
        ..SimConfig::new(&args.server, ca_pem.clone())
    };
    let fleet = SimFleet::start(config, agents);
    let (mut last, mut last_progress) = (0, Instant::now());
    while fleet.connected() < args.agents {
        let c = fleet.connected();
        if c > last {
            (last, last_progress) = (c, Instant::now());
        }
        // Out of file descriptors (ulimit -n) shows up as a stall.
        if last_progress.elapsed() > Duration::from_secs(60) {
            bail!(
                "stalled at {c} of {} agents connected (check ulimit -n on both sides); last error: {}",
                args.agents,
                fleet.last_error().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    eprintln!(
        "{} connected in {connect_secs:.1}s; warming up for {}s...",
        args.agents, args.warmup_secs
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;

    let pid = args.server_pid()?;
    let (s0, self0, t0) = (
        ProcSample::read(pid)?,
        procfs::cpu_secs(std::process::id())?,
        fleet.totals(),
    );
    let attaches0 = visibility.attaches();
    visibility.set_measuring(true);
    let window = Instant::now();
    eprintln!("Measuring for {}s...", args.duration_secs);
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    visibility.set_measuring(false);
    let elapsed = window.elapsed().as_secs_f64();
    let (s1, self1, t1) = (
        ProcSample::read(pid)?,
        procfs::cpu_secs(std::process::id())?,
        fleet.totals(),
    );
    let d = visibility.take_delays();

    let reports = t1.reports - t0.reports;
    let cpu = s1.cpu_secs - s0.cpu_secs;
    let written = s1.write_bytes.saturating_sub(s0.write_bytes);
    let cpu_per_1000 = if reports > 0 {
        cpu / reports as f64 * 1_000.0
    } else {
        0.0
    };
    let full = t1.full_reports - t0.full_reports;
    let changes = t1.change_reports - t0.change_reports;
    let mut result = json!({
        "agents": args.agents,
        "connected": fleet.connected(),
        "failures": t1.connect_failures + t1.sessions_ended,
        "connect_failures": t1.connect_failures,
        "sessions_ended": t1.sessions_ended,
        "interval_secs": args.interval_secs,
        "connect_secs": connect_secs,
        "window_secs": elapsed,
        "reports": reports,
        "reports_per_sec": reports as f64 / elapsed,
        "full_reports": full,
        "change_reports": changes,
        "interval_reports": reports - full - changes,
        "dropped_reports": t1.dropped - t0.dropped,
        "report_bytes_per_sec": (t1.bytes - t0.bytes) as f64 / elapsed,
        "server_cpu_secs": cpu,
        "server_cores_used": cpu / elapsed,
        "server_cpu_secs_per_1000_reports": cpu_per_1000,
        "server_rss_mib": mib(s1.rss_kib),
        "server_peak_rss_mib": mib(s1.peak_rss_kib),
        "server_write_bytes": written,
        "server_write_bytes_per_sec": written as f64 / elapsed,
        "visible_reports": d.len(),
        "visibility_p50_ms": percentile(&d, 0.50),
        "visibility_p99_ms": percentile(&d, 0.99),
        "visibility_max_ms": d.last().copied().unwrap_or(0),
        "watch_reattached": visibility.attaches() - attaches0,
        "loadgen_cores_used": (self1 - self0) / elapsed,
        "full_every": args.full_every,
        "container_changes_per_min_percent": args.container_changes_per_min,
        "template": {
            "path": args.report_template.as_ref().map_or("built-in".into(), |p| p.display().to_string()),
            "containers": facts.containers,
            "health_checked": facts.health_checked,
            "interfaces": facts.interfaces,
            "json_bytes": facts.json_bytes,
            "full_report_bytes": facts.full_report_bytes,
            "interval_report_bytes": facts.partial_report_bytes,
            "change_report_bytes": facts.change_report_bytes,
        },
    });
    println!(
        "agents={} connected={} reports/s={:.0} (full {full}, change {changes}) | server: cpu={:.3} cores, {:.3} cpu-s/1000 reports, rss={:.0} MiB (peak {:.0}), disk writes {:.2} MiB/s | visibility p50={} ms p99={} ms max={} ms ({} seen) | loadgen {:.2} cores",
        args.agents,
        fleet.connected(),
        reports as f64 / elapsed,
        cpu / elapsed,
        cpu_per_1000,
        mib(s1.rss_kib),
        mib(s1.peak_rss_kib),
        written as f64 / elapsed / 1_048_576.0,
        percentile(&d, 0.50),
        percentile(&d, 0.99),
        d.last().copied().unwrap_or(0),
        d.len(),
        (self1 - self0) / elapsed
    );
    let mut outcome = Ok(());
    if let Some(bin) = &args.time_cli {
        match time_cli(bin, &args.server, &ca_pem, &operator, args.agents).await {
            Ok(timed) => {
                println!("{}", timed.line);
                result["cli"] = timed.json;
            }
            Err(e) => outcome = Err(e.context("timing the operator CLI")),
        }
    }
    if args.storm {
        let storm = storm(&args, pid, &fleet, &visibility).await;
        println!("{}", storm.line());
        result["storm"] = storm.json();
        if !storm.complete {
            outcome = Err(anyhow::anyhow!(
                "storm incomplete after {}s; last agent error: {}",
                args.storm_timeout_secs,
                fleet.last_error().unwrap_or_default()
            ));
        }
    }
    if args.json {
        println!("{result}");
    }
    if let Err(e) = outcome {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    // The agents' tasks would keep the runtime busy; nothing is left to say.
    std::process::exit(0)
}

/// What the reconnect storm took; times are seconds from the SIGTERM.
#[derive(Default)]
struct Storm {
    complete: bool,
    agents: usize,
    /// The old server had exited.
    stopped_secs: f64,
    /// The supervisor had started a new server.
    restarted_secs: f64,
    /// Every agent was connected again and had sent its first report.
    reconnected_secs: f64,
    /// The watcher had seen a new report of every node.
    visible_secs: f64,
    failed_attempts: u64,
    server_rss_kib: u64,
    server_peak_rss_kib: u64,
    /// CPU time of the new server from its start to the end of the storm.
    server_cpu_secs: f64,
    /// CPU time of this load generator over the storm (every agent's
    /// reconnect and TLS handshake is on this side too).
    loadgen_cpu_secs: f64,
}

impl Storm {
    fn line(&self) -> String {
        format!(
            "storm: {} agents reconnected and reported {:.1}s after SIGTERM, all visible at {:.1}s (old server gone at {:.1}s, new one started at {:.1}s; {} failed attempts) | new server: rss={:.0} MiB (peak {:.0}), {:.1} cpu-s | loadgen {:.1} cpu-s{}",
            self.agents,
            self.reconnected_secs,
            self.visible_secs,
            self.stopped_secs,
            self.restarted_secs,
            self.failed_attempts,
            mib(self.server_rss_kib),
            mib(self.server_peak_rss_kib),
            self.server_cpu_secs,
            self.loadgen_cpu_secs,
            if self.complete { "" } else { " [INCOMPLETE]" }
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "complete": self.complete,
            "storm_secs": self.reconnected_secs,
            "visible_secs": self.visible_secs,
            "old_server_exited_secs": self.stopped_secs,
            "new_server_started_secs": self.restarted_secs,
            "failed_attempts": self.failed_attempts,
            "server_rss_mib": mib(self.server_rss_kib),
            "server_peak_rss_mib": mib(self.server_peak_rss_kib),
            "server_cpu_secs": self.server_cpu_secs,
            "loadgen_cpu_secs": self.loadgen_cpu_secs,
        })
    }
}

/// SIGTERM to the server; its supervisor starts a new one; every agent
/// comes back on its own backoff.
async fn storm(args: &Args, old_pid: u32, fleet: &SimFleet, visibility: &Visibility) -> Storm {
    let mut s = Storm {
        agents: fleet.len(),
        ..Default::default()
    };
    let before: Vec<u64> = fleet.stats().iter().map(|a| a.sessions_reported).collect();
    let failures0 = fleet.totals().connect_failures;
    eprintln!("Storm: SIGTERM to the server (pid {old_pid})...");
    let t0 = Instant::now();
    let self0 = procfs::cpu_secs(std::process::id()).unwrap_or(0.0);
    visibility.track_reports_since(Timestamp::now());
    let sent = rustix::process::Pid::from_raw(old_pid as i32)
        .context("not a pid")
        .and_then(|p| {
            rustix::process::kill_process(p, rustix::process::Signal::TERM).context("kill")
        });
    if let Err(e) = sent {
        eprintln!("error: cannot signal the server: {e:#}");
        return s;
    }
    let deadline = t0 + Duration::from_secs(args.storm_timeout_secs);
    let mut new_pid = None;
    let (mut stopped, mut reconnected, mut visible) = (None, None, None);
    while Instant::now() < deadline {
        let secs = t0.elapsed().as_secs_f64();
        if stopped.is_none() && !procfs::alive(old_pid) {
            stopped = Some(secs);
        }
        if new_pid.is_none()
            && let Ok(pid) = args.server_pid()
            && pid != old_pid
            && procfs::alive(pid)
        {
            new_pid = Some(pid);
            s.restarted_secs = secs;
        }
        if reconnected.is_none() {
            let stats = fleet.stats();
            if stats
                .iter()
                .zip(&before)
                .all(|(a, b)| a.connected && a.sessions_reported > *b)
            {
                reconnected = Some(secs);
            }
        }
        if visible.is_none() && visibility.reported_since() >= fleet.len() {
            visible = Some(secs);
        }
        if stopped.is_some() && reconnected.is_some() && visible.is_some() {
            s.complete = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stopped_secs = stopped.unwrap_or(f64::NAN);
    s.reconnected_secs = reconnected.unwrap_or(f64::NAN);
    s.visible_secs = visible.unwrap_or(f64::NAN);
    s.failed_attempts = fleet.totals().connect_failures - failures0;
    s.loadgen_cpu_secs = procfs::cpu_secs(std::process::id()).unwrap_or(0.0) - self0;
    if let Some(sample) = new_pid.and_then(|p| ProcSample::read(p).ok()) {
        s.server_rss_kib = sample.rss_kib;
        s.server_peak_rss_kib = sample.peak_rss_kib;
        s.server_cpu_secs = sample.cpu_secs;
    }
    s
}

struct TimedCli {
    line: String,
    json: serde_json::Value,
}

/// Runs the operator CLI's fleet-wide views against the loaded server and
/// times each (wall time of the whole command: connect, every page, print).
async fn time_cli(
    bin: &std::path::Path,
    server: &str,
    ca_pem: &[u8],
    operator: &rollcall_server::pki::Issued,
    agents: usize,
) -> anyhow::Result<TimedCli> {
    let dir = std::env::temp_dir().join(format!("rollcall-loadgen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (ca, cert, key) = (dir.join("ca.crt"), dir.join("op.crt"), dir.join("op.key"));
    std::fs::write(&ca, ca_pem)?;
    std::fs::write(&cert, &operator.cert_pem)?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)?;
        f.write_all(operator.key_pem.as_bytes())?;
    }
    let run = |args: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args)
            .env("ROLLCALL_SERVER", server)
            .env("ROLLCALL_CA", &ca)
            .env("ROLLCALL_CERT", &cert)
            .env("ROLLCALL_KEY", &key);
        async move {
            let started = Instant::now();
            let out = cmd.output().await?;
            let secs = started.elapsed().as_secs_f64();
            if !out.status.success() {
                bail!(
                    "{args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            anyhow::Ok((secs, json))
        }
    };
    let (nodes_secs, nodes) = run(&["nodes", "list", "--json"]).await?;
    let listed = nodes.as_array().map_or(0, Vec::len);
    if listed != agents {
        bail!("nodes list --json returned {listed} nodes, not {agents}");
    }
    let (status_secs, _) = run(&["fleet", "status", "--json"]).await?;
    let (containers_secs, nova) =
        run(&["containers", "list", "--name", "nova_compute", "--json"]).await?;
    let nova = nova.as_array().map_or(0, Vec::len);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(TimedCli {
        line: format!(
            "cli: nodes list --json {nodes_secs:.2}s ({listed} nodes) | fleet status --json {status_secs:.2}s | containers list --name nova_compute --json {containers_secs:.2}s ({nova} containers)"
        ),
        json: json!({
            "nodes_list_secs": nodes_secs,
            "nodes_listed": listed,
            "fleet_status_secs": status_secs,
            "containers_list_name_secs": containers_secs,
            "containers_listed": nova,
        }),
    })
}
