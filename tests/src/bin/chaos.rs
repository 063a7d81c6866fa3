//! rollcall-chaos: the fault-injection runner (issue 11). Each run starts
//! the real server and eight real agents as processes under supervisors,
//! runs one rolling campaign and injects one kind of fault; at the end a
//! markdown table per fault kind says what went wrong. See
//! `rollcall_tests::chaos` and BENCHMARKS.md.
//!
//! Run it with scripts/chaos.sh RUNS [--seed N] [--kind KIND]...

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rollcall_tests::chaos::{self, Options, faults::Kind};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Fault-injection runs against the real rollcall binaries")]
struct Args {
    /// How many runs.
    runs: usize,
    /// The first run's seed (run i uses SEED+i; its fault kind follows from
    /// it). Default: from the clock, printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Only these fault kinds (repeatable): kill-server, kill-agent,
    /// sigstop, lost-requests, never-return-compute,
    /// never-return-controller, full-disk.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<Kind>,
    /// Where rollcall-server and rollcall-agent are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where the runs' files go (those of runs with a finding are kept).
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Keep every run's files.
    #[arg(long)]
    keep: bool,
    /// Seconds a campaign may take before it counts as not ended (one in
    /// which no node moved for 45 s counts as not ended at once).
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let out = std::path::absolute(&args.out).unwrap_or(args.out.clone());
    let bin_dir = std::path::absolute(&args.bin_dir).unwrap_or(args.bin_dir.clone());
    let mut opts = Options::new(bin_dir, out.clone());
    opts.runs = args.runs;
    opts.seed = seed;
    opts.keep = args.keep;
    opts.deadline = Duration::from_secs(args.deadline_secs);
    if !args.kinds.is_empty() {
        opts.kinds = args.kinds;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "rollcall-chaos: {} runs, seed {seed}, files in {}",
        opts.runs,
        out.display()
    );
    let stop = CancellationToken::new();
    let summary = runtime.block_on(async {
        let on_signal = stop.clone();
        tokio::spawn(async move {
            if !rollcall_tests::interrupted().await {
                return;
            }
            eprintln!("interrupted: stopping this run's processes and unmounting");
            on_signal.cancel();
        });
        chaos::run(&opts, stop.clone(), |r| {
            println!("{}", r.line());
            if r.is_bad() {
                println!("        kept: {}/run-{}/verdict.txt", out.display(), r.seed);
            }
        })
        .await
    });
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let table = summary.table();
    println!("\n{table}");
    let _ = std::fs::write(out.join("summary.md"), &table);
    if stop.is_cancelled() {
        return ExitCode::from(130);
    }
    let bad = summary.patched_twice() + summary.rebooted_twice() + summary.not_ended();
    if bad > 0 || summary.not_run() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
