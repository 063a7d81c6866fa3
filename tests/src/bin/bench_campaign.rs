//! rollcall-bench-campaign: what the campaign scheduler costs beyond the
//! actions it runs. One real server and N real agents in this process
//! (the fleet harness: real mTLS, real SQLite with synchronous=FULL, the
//! real agent action store), with near-instant `FakePatch` actions and no
//! reboot, so nearly all the time measured is the scheduler's: its passes,
//! its durable writes before each step, the round trips to the agents and
//! the health gates waiting for the reports that prove each step.
//!
//! Prints, for one campaign over every node at the given concurrency:
//! - wall time from start to completion;
//! - the overhead per node, amortised: (wall − action time ÷ concurrency) ÷ N,
//!   i.e. what each node adds to the campaign's length beyond its actions;
//! - each node's own way from precheck to done minus its action's run time
//!   (p50 / p95 / max): the latency the scheduler adds to one node.
//!
//! Run it with scripts/bench-campaign.sh (release build).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rollcall_proto::model::Role;
use rollcall_tests::fleet::Fleet;

#[derive(Parser, Debug)]
#[command(about = "Measure the campaign scheduler's overhead per node")]
struct Args {
    /// Simulated compute nodes.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Nodes patched at once.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
    /// The server's campaign tick (the shipped default is 500).
    #[arg(long, default_value_t = 500)]
    tick_ms: u64,
    /// The agents' report interval in seconds (the shipped default is 10).
    #[arg(long, default_value_t = 10)]
    report_interval: u32,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rollcall_tests::init();
    let args = Args::parse();
    let (tick, interval) = (args.tick_ms, args.report_interval);
    eprintln!("starting a server and {} agents...", args.nodes);
    let fleet = Fleet::start_with(&[(Role::Compute, args.nodes)], move |c| {
        c.campaigns.tick_ms = tick;
        c.agents.report_interval_secs = interval;
    })
    .await;
    let spec = format!(
        "name = \"bench\"\nreboot = \"never\"\nconcurrency = {{ compute = {} }}\n",
        args.concurrency
    );
    let started = Instant::now();
    let c = fleet.start_campaign(&spec).await;
    let done = fleet
        .wait_ended(&c.campaign.id, Duration::from_secs(3_600))
        .await;
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        done.nodes.iter().all(|n| n.step.as_str() == "done"),
        "not every node finished: {done:#?}"
    );

    // Each node's patch run time, from the agent's own result.
    let mut action_total = 0.0;
    let mut per_node = Vec::new();
    for n in &done.nodes {
        let id = format!("{}.{}.{}.patch", c.campaign.id, n.node, n.attempt);
        let fleet_handle = &fleet.server.server.as_ref().context("server")?.fleet;
        let result = fleet_handle
            .action(&id)
            .await
            .ok()
            .flatten()
            .with_context(|| format!("no result for {id}"))?;
        let ran = match (result.started_at, result.finished_at) {
            (Some(s), Some(f)) => f.since(s).as_secs_f64(),
            _ => 0.0,
        };
        action_total += ran;
        let life = match (n.started_at, n.finished_at) {
            (Some(s), Some(f)) => f.since(s).as_secs_f64(),
            _ => 0.0,
        };
        per_node.push((life - ran).max(0.0) * 1_000.0);
    }
    per_node.sort_by(f64::total_cmp);
    let n = args.nodes as f64;
    let amortised = (wall - action_total / args.concurrency as f64) / n * 1_000.0;
    println!(
        "nodes={} concurrency={} tick_ms={} report_interval_s={} wall={:.2}s action_time_total={:.2}s \
         overhead_per_node_amortised={:.1}ms node_latency_overhead_ms p50={:.0} p95={:.0} max={:.0}",
        args.nodes,
        args.concurrency,
        args.tick_ms,
        args.report_interval,
        wall,
        action_total,
        amortised,
        percentile(&per_node, 0.5),
        percentile(&per_node, 0.95),
        per_node.last().copied().unwrap_or(0.0),
    );
    fleet.stop().await;
    Ok(())
}
