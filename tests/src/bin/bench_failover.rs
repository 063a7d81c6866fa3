//! rollcall-bench-failover: how long a failover takes. Two or three real
//! `rollcall-server` replicas on one database of a PostgreSQL cluster made
//! for the run (`rollcall_tests::postgres`), the eight real agents of the
//! chaos cloud given every replica's URL, and N times: SIGKILL of the
//! leader (its host stays down until another replica leads), then
//!
//! - **won**: until another replica won the lease (its "Won the leadership
//!   lease" line), bounded below by what was left of the killed leader's
//!   lease (read from the lease row just before the kill) and above by that
//!   plus a follower's poll;
//! - **serving**: until that replica serves as the leader ("rollcall-server
//!   listening.", after loading the fleet and the campaigns);
//! - **agents**: until every agent has a session with it again ("Connected."
//!   in each agent's log, after their backoff and a follower's redirect);
//!
//! then the killed replica is started again and must come back as a
//! follower before the next kill, which waits a random part of a renewal
//! interval so that kills land anywhere in the lease's cycle. With
//! `--campaign`, a rolling campaign runs meanwhile and is judged at the end
//! (no node patched or rebooted twice).
//!
//! Prints a line per kill, p50 and max of each, and one JSON line.
//! Run it with scripts/bench-failover.sh (release build).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use rollcall_tests::chaos;
use rollcall_tests::chaos::cloud::{Cloud, NODES, Session};
use rollcall_tests::chaos::faults::{Faults, Kind, Plan};
use rollcall_tests::chaos::record::{self, quantile};
use rollcall_tests::chaos::replicas::ReplicaSetup;
use rollcall_tests::chaos::verdict::{self, Outcome, RunResult};
use rollcall_tests::postgres::Postgres;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Measure rollcall-server failover: kill -9 of the leader, N times")]
struct Args {
    /// How many times the leader is killed.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Replicas (2 or more).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// `[replica] lease_ms` (the server's default: 10000).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// `[replica] poll_ms` (the server's default: 1000).
    #[arg(long)]
    poll_ms: Option<u64>,
    /// Keep a rolling campaign (patch + reboot on every node, 5 s patches)
    /// running while the kills go on; judged at the end.
    #[arg(long)]
    campaign: bool,
    /// Where rollcall-server and rollcall-agent are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where the PKI, the scripts and the run's files go (replaced).
    #[arg(long, default_value = "target/bench-failover")]
    out: PathBuf,
}

/// One kill's measurements, in seconds after the kill.
struct Kill {
    remaining: f64,
    won: f64,
    serving: f64,
    agents: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.replicas >= 2, "--replicas must be 2 or more");
    anyhow::ensure!(args.kills >= 1, "--kills must be 1 or more");
    let bin_dir = std::path::absolute(&args.bin_dir)?;
    let out = std::path::absolute(&args.out)?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let pg = Postgres::shared().context("starting PostgreSQL for the run")?;
    let session = Session::prepare(&bin_dir, &out)?;
    let nodes: Vec<(String, &'static str)> =
        NODES.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect();
    let patch_secs = if args.campaign { 5.0 } else { 0.5 };
    let faults = Arc::new(Faults::new(Plan::quiet(&nodes, patch_secs), 1));
    let setup = ReplicaSetup {
        pg,
        count: args.replicas,
        lease_ms: args.lease_ms,
        poll_ms: args.poll_ms,
    };
    let dir = out.join("run");
    let cloud = Cloud::start_replicated(&session, &dir, faults, 1, setup).await?;
    let result = measure(&cloud, &args, &dir).await;
    cloud.stop().await;
    let (kills, campaign) = result?;

    let series = |f: fn(&Kill) -> f64| -> Vec<f64> { kills.iter().map(f).collect() };
    let (won, serving, agents, remaining) = (
        series(|k| k.won),
        series(|k| k.serving),
        series(|k| k.agents),
        series(|k| k.remaining),
    );
    let replicas = &args.replicas;
    let lease = args.lease_ms.unwrap_or(10_000);
    let poll = args.poll_ms.unwrap_or(1_000);
    println!(
        "\n{} kills of the leader, {replicas} replicas, {} agents, lease_ms {lease}, poll_ms {poll}:",
        kills.len(),
        NODES.len()
    );
    for (name, v) in [
        ("lease left at the kill", &remaining),
        ("another replica won the lease", &won),
        ("it serves as the leader", &serving),
        ("every agent connected to it", &agents),
    ] {
        println!(
            "  {name:<32} p50 {:>6.2} s   max {:>6.2} s",
            quantile(v, 0.5),
            quantile(v, 1.0)
        );
    }
    if let Some(c) = &campaign {
        println!("  campaign: {c}");
    }
    let line = json!({
        "bench": "failover",
        "kills": kills.len(),
        "replicas": replicas,
        "agents": NODES.len(),
        "lease_ms": lease,
        "poll_ms": poll,
        "lease_left_p50_s": round(quantile(&remaining, 0.5)),
        "won_p50_s": round(quantile(&won, 0.5)),
        "won_max_s": round(quantile(&won, 1.0)),
        "serving_p50_s": round(quantile(&serving, 0.5)),
        "serving_max_s": round(quantile(&serving, 1.0)),
        "agents_p50_s": round(quantile(&agents, 0.5)),
        "agents_max_s": round(quantile(&agents, 1.0)),
        "campaign": campaign,
    });
    println!("{line}");
    Ok(())
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The kills, and the campaign's verdict in words (with `--campaign`).
async fn measure(
    cloud: &Cloud,
    args: &Args,
    dir: &std::path::Path,
) -> anyhow::Result<(Vec<Kill>, Option<String>)> {
    let replicas = cloud.replicas();
    let (first, epoch) = replicas
        .wait_leader(Duration::from_secs(60), |_, _| true)
        .await?;
    cloud.wait_online(Duration::from_secs(60)).await?;
    eprintln!("replica {first} leads with epoch {epoch}; every agent is online");
    let campaign = if args.campaign {
        let spec = dir.join("campaign.toml");
        std::fs::write(&spec, chaos::campaign_spec("bench-failover", 8))?;
        let spec = spec.display().to_string();
        let started = cloud
            .cli_json(&["campaign", "start", "--spec", &spec, "--json"])
            .await
            .map_err(anyhow::Error::msg)?;
        let id = started["campaign"]["id"]
            .as_str()
            .context("campaign start --json names no campaign")?;
        Some(id.to_owned())
    } else {
        None
    };

    let mut rng = fastrand::Rng::with_seed(16);
    let renewal = replicas.lease / 4;
    let mut kills = Vec::new();
    for n in 1..=args.kills {
        // Anywhere in a renewal's cycle.
        tokio::time::sleep(renewal.mul_f64(rng.f64())).await;
        let (old, _) = replicas
            .wait_leader(Duration::from_secs(60), |_, _| true)
            .await?;
        replicas.members[old].proc.hold(true);
        let killed = replicas.kill_leader().await?;
        if killed.index != old {
            bail!("the leader changed between the look and the kill");
        }
        let (new, epoch, won_at) = replicas.wait_won(killed.epoch, replicas.lease * 3).await?;
        let member = &replicas.members[new];
        let serving_at = until(Duration::from_secs(60), "the new leader serves", || {
            member.serving_since(won_at)
        })
        .await?;
        let agents_at = cloud
            .wait_connected_to(&member.url, killed.at, Duration::from_secs(60))
            .await?;
        let kill = Kill {
            remaining: killed.remaining,
            won: won_at - killed.at,
            serving: serving_at - killed.at,
            agents: agents_at - killed.at,
        };
        eprintln!(
            "kill {n:>2}: replica {old} (epoch {}) with {:.2} s of lease left; replica {new} won epoch {epoch} \
             after {:.2} s, served after {:.2} s, had every agent after {:.2} s",
            killed.epoch, kill.remaining, kill.won, kill.serving, kill.agents
        );
        kills.push(kill);
        // Its host is back: it must come back as a follower of the new one.
        replicas.members[old].proc.hold(false);
        let follows = until(
            Duration::from_secs(60),
            "the killed replica follows",
            || replicas.members[old].following_since(killed.at),
        )
        .await?;
        if follows != member.url {
            bail!(
                "replica {old}, restarted, follows {follows}, not {}",
                member.url
            );
        }
    }

    let verdict = match &campaign {
        Some(id) => {
            let (outcome, status) = chaos::watch(
                cloud,
                id,
                Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await;
            let names: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
            let (logs, hooks_twice) = verdict::read_logs(&cloud.dir, &names);
            let mut r = RunResult::not_run(0, 0, Kind::KillServer, String::new());
            r.outcome = outcome;
            r.hooks_twice = hooks_twice;
            verdict::judge(&mut r, &logs, status.as_ref(), None);
            let overlap = match record::no_overlap(&replicas.sends()) {
                Ok(()) => "never two leaders sending".to_owned(),
                Err(e) => format!("TWO LEADERS SENT: {e}"),
            };
            let outcome = match &r.outcome {
                Outcome::Completed => "completed".to_owned(),
                other => format!("{other:?}"),
            };
            Some(format!(
                "{outcome}: {} patches and {} reboots on {} nodes, {} patched twice, {} rebooted \
                 twice, {} left drained, {} failed; {overlap}",
                r.patches,
                r.reboots,
                NODES.len(),
                r.patched_twice.len(),
                r.rebooted_twice.len(),
                r.left_drained.len(),
                r.failed_unexpected.len()
            ))
        }
        None => None,
    };
    Ok((kills, verdict))
}

async fn until<T>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if std::time::Instant::now() >= deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
