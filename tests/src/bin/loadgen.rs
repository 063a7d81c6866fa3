//! rollcall-loadgen: simulates N agents against a real rollcall-server, each
//! with its own certificate and its own mutual-TLS connection, and measures
//! what BENCHMARKS.md reports:
//!
//! - server RSS (current and peak) and CPU seconds per 1,000 reports, read
//!   from /proc/PID of the server process;
//! - the delay from an agent's report to its visibility in the operator API
//!   (an operator WatchNodes stream sees the node's new last_report_at),
//!   as p50 / p99 / max.
//!
//! Run it through scripts/bench-fleet.sh, which builds release binaries,
//! makes a CA and starts the server.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rollcall_proto::identity::{Identity, Kind};
use rollcall_proto::model;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use rollcall_server::pki::Ca;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser, Debug)]
#[command(about = "Simulate N rollcall agents against a running server and measure it")]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "https://localhost:7443")]
    server: String,
    /// The server's pki directory (its CA signs the simulated agents).
    #[arg(long)]
    pki: PathBuf,
    /// Number of simulated agents, one connection each.
    #[arg(long, default_value_t = 1_000)]
    agents: usize,
    /// Seconds between reports of one agent.
    #[arg(long, default_value_t = 10)]
    interval_secs: u64,
    /// Seconds of steady state measured after every agent is connected.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Seconds of steady state before measuring starts.
    #[arg(long, default_value_t = 15)]
    warmup_secs: u64,
    /// PID of the server process, for RSS and CPU.
    #[arg(long)]
    server_pid: u32,
    /// TLS handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Print the result as one JSON object too.
    #[arg(long)]
    json: bool,
}

/// An agent certificate and key, PEM.
type CertPair = (Vec<u8>, Vec<u8>);

struct Counters {
    connected: AtomicU64,
    reports: AtomicU64,
    failures: AtomicU64,
    measuring: AtomicBool,
}

fn proc_cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).context("read /proc/PID/stat")?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn proc_status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .context("status key")?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

fn report(node: &str, seq: u64) -> v1::AgentMessage {
    let report = model::Report {
        seq,
        collected_at: Timestamp::now(),
        full: true,
        host: Some(model::HostFacts {
            hostname: node.to_owned(),
            os_pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
            os_id: "debian".into(),
            os_version_id: "12".into(),
            kernel: "6.1.0-28-amd64".into(),
            arch: "x86_64".into(),
            boot_id: format!("boot-{node}"),
            boot_time: Timestamp::from_unix_millis(1_790_000_000_000),
            cpu_count: 64,
        }),
        metrics: Some(model::HostMetrics {
            uptime_secs: 86_400 + seq,
            cpu_usage_percent: (seq % 100) as f32,
            load1: 1.5,
            load5: 1.2,
            load15: 1.0,
            memory_total_bytes: 512 << 30,
            memory_used_bytes: 200 << 30,
            memory_available_bytes: 312 << 30,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
        }),
        ..Default::default()
    };
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Report(report.into())),
    }
}

/// One simulated agent: connect, Hello, then a report every interval,
/// starting at `offset` so that reports spread evenly over the interval.
async fn agent(
    args: Arc<Args>,
    ca_pem: Arc<Vec<u8>>,
    node: String,
    cert: CertPair,
    offset: Duration,
    handshakes: Arc<Semaphore>,
    counters: Arc<Counters>,
) {
    let endpoint = match rollcall_proto::connect::endpoint(&args.server, &ca_pem, &cert.0, &cert.1)
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{node}: {e}");
            counters.failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let permit = handshakes.acquire().await.expect("semaphore open");
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{node}: connect: {e}");
            counters.failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut client = v1::agent_service_client::AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let hello = v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            node: node.clone(),
            role: v1::Role::Compute.into(),
            agent_version: "loadgen".into(),
            boot_id: format!("boot-{node}"),
            hostname: node.clone(),
            ..Default::default()
        })),
    };
    let _ = tx.send(hello).await;
    let mut inbound = match client.session(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprintln!("{node}: session: {s}");
            counters.failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    match inbound.message().await {
        Ok(Some(_welcome)) => {}
        other => {
            eprintln!("{node}: no welcome: {other:?}");
            counters.failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    drop(permit);
    counters.connected.fetch_add(1, Ordering::Relaxed);
    // Keep reading so server messages never back up.
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });

    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(Duration::from_secs(args.interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    loop {
        tick.tick().await;
        seq += 1;
        if tx.send(report(&node, seq)).await.is_err() {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("{node}: session closed");
            return;
        }
        if counters.measuring.load(Ordering::Relaxed) {
            counters.reports.fetch_add(1, Ordering::Relaxed);
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Arc::new(Args::parse());
    if args.interval_secs == 0 {
        bail!("--interval-secs must be at least 1");
    }
    let ca = Ca::load(&args.pki).context("load the CA from --pki")?;
    let ca_pem = Arc::new(std::fs::read(args.pki.join("ca.crt"))?);
    let operator = ca.issue_client(&Identity {
        kind: Kind::Operator,
        name: "loadgen".into(),
    })?;

    eprintln!("Issuing {} agent certificates...", args.agents);
    let started = Instant::now();
    let certs: Vec<(String, CertPair)> = (0..args.agents)
        .map(|i| {
            let node = format!("sim-{i:05}");
            let issued = ca
                .issue_client(&Identity {
                    kind: Kind::Agent,
                    name: node.clone(),
                })
                .expect("issue agent certificate");
            (
                node,
                (issued.cert_pem.into_bytes(), issued.key_pem.into_bytes()),
            )
        })
        .collect();
    eprintln!("Issued in {:.1}s.", started.elapsed().as_secs_f64());

    // The watcher measures report → operator API visibility.
    let endpoint = rollcall_proto::connect::endpoint(
        &args.server,
        &ca_pem,
        operator.cert_pem.as_bytes(),
        operator.key_pem.as_bytes(),
    )
    .map_err(anyhow::Error::msg)?;
    let mut op = v1::operator_service_client::OperatorServiceClient::new(endpoint.connect().await?)
        .max_decoding_message_size(64 << 20);
    let counters = Arc::new(Counters {
        connected: AtomicU64::new(0),
        reports: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
    });
    let delays = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let watch_events = Arc::new(AtomicU64::new(0));
    let mut stream = op
        .watch_nodes(v1::WatchNodesRequest::default())
        .await?
        .into_inner();
    let watcher = tokio::spawn({
        let (counters, delays, watch_events) =
            (counters.clone(), delays.clone(), watch_events.clone());
        async move {
            loop {
                match stream.message().await {
                    Ok(Some(event)) if event.kind == v1::NodeEventKind::Report as i32 => {
                        if !counters.measuring.load(Ordering::Relaxed) {
                            continue;
                        }
                        let now = Timestamp::now().unix_millis();
                        if let Some(at) = event.node.and_then(|n| n.last_report_at) {
                            let at =
                                rollcall_proto::convert::timestamp_from_wire(&at).unix_millis();
                            delays
                                .lock()
                                .expect("lock")
                                .push(u64::try_from(now - at).unwrap_or(0));
                            watch_events.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return "watch stream ended".to_owned(),
                    Err(s) => return format!("watch stream failed: {s}"),
                }
            }
        }
    });

    eprintln!("Connecting {} agents...", args.agents);
    let connect_started = Instant::now();
    let handshakes = Arc::new(Semaphore::new(args.connect_concurrency));
    let interval = Duration::from_secs(args.interval_secs);
    for (i, (node, cert)) in certs.into_iter().enumerate() {
        let offset = interval.mul_f64(i as f64 / args.agents as f64);
        tokio::spawn(agent(
            args.clone(),
            ca_pem.clone(),
            node,
            cert,
            offset,
            handshakes.clone(),
            counters.clone(),
        ));
    }
    let (mut last_done, mut last_progress) = (0, Instant::now());
    loop {
        let (c, f) = (
            counters.connected.load(Ordering::Relaxed),
            counters.failures.load(Ordering::Relaxed),
        );
        if c + f >= args.agents as u64 {
            break;
        }
        if c + f > last_done {
            (last_done, last_progress) = (c + f, Instant::now());
        }
        // Out of file descriptors (ulimit -n) shows up as a stall, not an error.
        if last_progress.elapsed() > Duration::from_secs(60) {
            bail!(
                "stalled at {c} connected, {f} failed of {} agents (check ulimit -n on both sides)",
                args.agents
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let connected = counters.connected.load(Ordering::Relaxed);
    eprintln!(
        "{connected} connected in {connect_secs:.1}s; warming up for {}s...",
        args.warmup_secs
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;

    let pid = args.server_pid;
    let cpu0 = proc_cpu_secs(pid)?;
    let self_cpu0 = proc_cpu_secs(std::process::id())?;
    counters.measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    eprintln!("Measuring for {}s...", args.duration_secs);
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let elapsed = window.elapsed().as_secs_f64();
    let cpu = proc_cpu_secs(pid)? - cpu0;
    let self_cpu = proc_cpu_secs(std::process::id())? - self_cpu0;
    let rss_mib = proc_status_kib(pid, "VmRSS:")? as f64 / 1024.0;
    let peak_mib = proc_status_kib(pid, "VmHWM:")? as f64 / 1024.0;
    let reports = counters.reports.load(Ordering::Relaxed);
    if watcher.is_finished() {
        bail!("{}", watcher.await?);
    }
    let mut d = delays.lock().expect("lock").clone();
    d.sort_unstable();

    let cpu_per_1000 = if reports > 0 {
        cpu / reports as f64 * 1_000.0
    } else {
        0.0
    };
    let result = serde_json::json!({
        "agents": args.agents,
        "connected": connected,
        "failures": counters.failures.load(Ordering::Relaxed),
        "interval_secs": args.interval_secs,
        "connect_secs": connect_secs,
        "window_secs": elapsed,
        "reports": reports,
        "reports_per_sec": reports as f64 / elapsed,
        "server_cpu_secs": cpu,
        "server_cores_used": cpu / elapsed,
        "server_cpu_secs_per_1000_reports": cpu_per_1000,
        "server_rss_mib": rss_mib,
        "server_peak_rss_mib": peak_mib,
        "visible_reports": d.len(),
        "visibility_p50_ms": percentile(&d, 0.50),
        "visibility_p99_ms": percentile(&d, 0.99),
        "visibility_max_ms": d.last().copied().unwrap_or(0),
        "loadgen_cores_used": self_cpu / elapsed,
    });
    println!(
        "agents={} connected={} reports/s={:.0} server: cpu={:.3} cores, {:.3} cpu-s/1000 reports, rss={:.0} MiB (peak {:.0}) | visibility p50={} ms p99={} ms max={} ms ({} seen) | loadgen {:.2} cores",
        args.agents,
        connected,
        reports as f64 / elapsed,
        cpu / elapsed,
        cpu_per_1000,
        rss_mib,
        peak_mib,
        percentile(&d, 0.50),
        percentile(&d, 0.99),
        d.last().copied().unwrap_or(0),
        d.len(),
        self_cpu / elapsed
    );
    if args.json {
        println!("{result}");
    }
    std::process::exit(0)
}
