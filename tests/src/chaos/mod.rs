//! The fault-injection runner behind `scripts/chaos.sh RUNS` (issue 11,
//! "faults as a benchmark"): each run starts a real `rollcall-server` and
//! eight real `rollcall-agent`s as processes of their own (3 controllers, 4
//! computes, 1 storage node) under supervisors, runs one rolling campaign
//! with a patch and a reboot on every node, injects one kind of fault (see
//! [`faults::Kind`]), and judges what happened from the nodes' own logs:
//! nodes patched or rebooted twice, nodes failed and why, nodes left
//! drained, campaigns that did not end.
//!
//! ```ignore
//! let summary = chaos::run(&Options { runs: 3, ..Options::new(bin_dir, out) }, stop, |r| println!("{}", r.line())).await?;
//! assert_eq!(summary.patched_twice(), 0);
//! ```

pub mod cloud;
pub mod faults;
pub mod proxy;
pub mod record;
pub mod relay;
pub mod replicas;
pub mod verdict;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use cloud::{Cloud, NODES, Session, Tmpfs};
use faults::{Faults, Kind, Plan};
use verdict::{Outcome, RunResult, Summary};

/// How a session of runs goes.
#[derive(Clone, Debug)]
pub struct Options {
    pub runs: usize,
    /// Run `i` uses seed `seed + i`; its fault kind is `kinds[(seed + i) %
    /// kinds.len()]`, so one run is reproduced with `1 --seed SEED+i`.
    pub seed: u64,
    pub kinds: Vec<Kind>,
    /// Where `rollcall-server` and `rollcall-agent` are.
    pub bin_dir: PathBuf,
    /// Where the PKI, the scripts and the runs' files go.
    pub out: PathBuf,
    /// Keep every run's files (otherwise only those of runs with a finding).
    pub keep: bool,
    /// A campaign not ended this long after its start did not end.
    pub deadline: Duration,
}

impl Options {
    pub fn new(bin_dir: PathBuf, out: PathBuf) -> Options {
        Options {
            runs: 1,
            seed: 1,
            kinds: Kind::ALL.to_vec(),
            bin_dir,
            out,
            keep: false,
            deadline: Duration::from_secs(120),
        }
    }
}

/// Runs `opts.runs` runs one after the other; `progress` sees each verdict
/// as it comes. Stops early (cleaning up) when `stop` is cancelled.
pub async fn run(
    opts: &Options,
    stop: CancellationToken,
    mut progress: impl FnMut(&RunResult),
) -> anyhow::Result<Summary> {
    anyhow::ensure!(!opts.kinds.is_empty(), "no fault kinds to run");
    std::fs::create_dir_all(&opts.out)?;
    let session = Session::prepare(&opts.bin_dir, &opts.out)?;
    let mut summary = Summary {
        seed: opts.seed,
        ..Summary::default()
    };
    for index in 0..opts.runs {
        if stop.is_cancelled() {
            break;
        }
        let seed = opts.seed.wrapping_add(index as u64);
        let kind = opts.kinds[usize::try_from(seed % opts.kinds.len() as u64).unwrap_or(0)];
        let result = run_one(&session, opts, index, seed, kind, &stop).await;
        if stop.is_cancelled() {
            // Cut short: its verdict would count the interruption.
            break;
        }
        progress(&result);
        summary.add(result);
    }
    Ok(summary)
}

fn spec(seed: u64) -> String {
    campaign_spec(&format!("chaos {seed}"), 1)
}

/// The campaign of every run: every node drained, patched, rebooted and
/// undrained, computes two at a time, then storage, then controllers one
/// at a time. Its step timeouts are short (a patch's is 30 s), times
/// `patience`: a failover run's outage must not time a node out.
pub fn campaign_spec(name: &str, patience: u32) -> String {
    let t = |secs: u32| secs * patience;
    format!(
        r#"# Written by rollcall-chaos: every node patched and rebooted.
name = "{name}"
reboot = "if-required"
# Failures are what the runner counts: they never pause the campaign.
error_budget = "100%"
min_free_percent = 0
skip_up_to_date = false
role_order = ["compute", "storage", "controller"]

[concurrency]
compute = 2
storage = 1

[timeouts]
precheck_secs = {precheck}
drain_secs = {drain}
# Above the server's 10 s re-send of an unanswered request.
patch_secs = {patch}
reboot_secs = {reboot}
return_secs = {ret}
postcheck_secs = {postcheck}
undrain_secs = {undrain}

[hooks.compute]
drain = "nova-drain"
undrain = "nova-undrain"
run_on = "controller"

[hooks.storage]
drain = "ceph-noout-set"
undrain = "ceph-noout-unset"
run_on = "self"
"#,
        precheck = t(30),
        drain = t(30),
        patch = t(30),
        reboot = t(20),
        ret = t(15),
        postcheck = t(30),
        undrain = t(30),
    )
}

async fn run_one(
    session: &Session,
    opts: &Options,
    index: usize,
    seed: u64,
    kind: Kind,
    stop: &CancellationToken,
) -> RunResult {
    let dir = opts.out.join(format!("run-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return RunResult::not_run(index, seed, kind, format!("{}: {e}", dir.display()));
    }
    let data = dir.join("data");
    // The full-disk run's data directory is a 64 MiB tmpfs it can fill.
    let mount = if kind == Kind::FullDisk {
        match Tmpfs::mount(&data, "64m") {
            Ok(m) => Some(m),
            Err(e) => return RunResult::not_run(index, seed, kind, e),
        }
    } else {
        None
    };
    let nodes: Vec<(String, &'static str)> =
        NODES.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect();
    let plan = Plan::new(kind, seed, &nodes);
    let never_returns = plan.never_returns.clone();
    let faults = Arc::new(Faults::new(plan, seed));
    let cloud = match Cloud::start(session, &dir, &data, faults.clone(), seed).await {
        Ok(c) => c,
        Err(e) => {
            drop(mount);
            return RunResult::not_run(
                index,
                seed,
                kind,
                format!("the cloud did not start: {e:#}"),
            );
        }
    };
    let started = Instant::now();
    let driven = drive(&cloud, &dir, &data, seed, opts.deadline, stop).await;
    let secs = started.elapsed().as_secs_f64();
    let procs = cloud.procs.clone();
    cloud.stop().await;
    drop(mount);

    let mut result = RunResult::not_run(index, seed, kind, String::new());
    result.injected = faults.injected();
    if never_returns.is_some() {
        result.injected.never_returned = 1;
    }
    result.secs = secs;
    let status = match driven {
        Ok((outcome, status)) => {
            result.outcome = outcome;
            status
        }
        Err(why) => {
            result.outcome = Outcome::NotRun(why);
            None
        }
    };
    let names: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
    let (logs, hooks_twice) = verdict::read_logs(&dir, &names);
    result.hooks_twice = hooks_twice;
    verdict::judge(
        &mut result,
        &logs,
        status.as_ref(),
        never_returns.as_deref(),
    );
    result.events = procs.events();
    let mut record = format!("{}\n\nevents:\n", result.line());
    for e in &result.events {
        record.push_str(e);
        record.push('\n');
    }
    if let Some(s) = &status {
        record.push_str("\nlast campaign status:\n");
        record.push_str(&serde_json::to_string_pretty(s).unwrap_or_default());
        record.push('\n');
    }
    let _ = std::fs::write(dir.join("verdict.txt"), record);
    if !opts.keep && !result.is_bad() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Whether a node's step means it is in flight.
fn in_flight(step: &str) -> bool {
    !matches!(step, "pending" | "done" | "failed" | "skipped")
}

fn nodes_in_flight(status: &Value) -> Vec<String> {
    status["nodes"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter(|r| in_flight(r["step"].as_str().unwrap_or("")))
                .map(|r| {
                    format!(
                        "{} at {}: {}",
                        r["node"].as_str().unwrap_or("?"),
                        r["step"].as_str().unwrap_or("?"),
                        r["note"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What a campaign that has not ended waits for, in words.
fn waiting(status: &Value) -> String {
    let id = status["campaign"]["id"].as_str().unwrap_or("");
    let mut parts = Vec::new();
    for field in [&status["waiting"], &status["campaign"]["reason"]] {
        if let Some(w) = field.as_str().filter(|w| !w.is_empty()) {
            parts.push(w.to_owned());
        }
    }
    parts.extend(nodes_in_flight(status));
    if parts.is_empty() {
        parts.push(format!(
            "phase {}",
            status["campaign"]["phase"].as_str().unwrap_or("?")
        ));
    }
    verdict::reason(&parts.join("; "), id)
}

/// Starts the campaign, plays the faults and watches it to its end or its
/// deadline; the outcome and the campaign's last status.
async fn drive(
    cloud: &Cloud,
    dir: &Path,
    data: &Path,
    seed: u64,
    deadline: Duration,
    stop: &CancellationToken,
) -> Result<(Outcome, Option<Value>), String> {
    cloud
        .wait_online(Duration::from_secs(30))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let spec_file = dir.join("campaign.toml");
    std::fs::write(&spec_file, spec(seed)).map_err(|e| e.to_string())?;
    let spec_arg = spec_file.display().to_string();
    let started = cloud
        .cli_json(&["campaign", "start", "--spec", &spec_arg, "--json"])
        .await?;
    let id = started["campaign"]["id"]
        .as_str()
        .ok_or("campaign start --json has no campaign.id")?
        .to_owned();
    cloud.event(format_args!("campaign {id} started"));

    cloud.faults.arm(true);
    let until = CancellationToken::new();
    let watched = watch(cloud, &id, deadline, stop);
    tokio::pin!(watched);
    let (outcome, mut last) = tokio::select! {
        w = &mut watched => w,
        () = cloud.play_timed(data, until.clone()) => watched.await,
    };
    until.cancel();
    cloud.faults.arm(false);
    // Whatever a fault still holds is released before the verdict.
    let _ = std::fs::remove_file(data.join("ballast"));
    cloud.procs.continue_all();

    if stop.is_cancelled() {
        return Ok((Outcome::NotEnded("interrupted".into()), last));
    }
    if let Outcome::NotEnded(_) = outcome {
        cloud.event("deadline: cancelling the campaign");
        let mut cancelled = false;
        for _ in 0..20 {
            if cloud
                .cli(&[
                    "campaign",
                    "cancel",
                    &id,
                    "--reason",
                    "rollcall-chaos deadline",
                ])
                .await
                .is_ok()
            {
                cancelled = true;
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if !cancelled {
            cloud.event("the campaign could not be cancelled");
        }
        // Nodes in flight finish their way after a cancel.
        let (_, after) = watch(cloud, &id, Duration::from_secs(30), stop).await;
        last = after.or(last);
    }
    Ok((outcome, last))
}

/// No node's run changed for this long: the campaign is stuck.
const STALLED: Duration = Duration::from_secs(45);

/// Polls `campaign status --json` until the campaign ended, paused with
/// nothing in flight, stalled (no node moved for [`STALLED`]), or the
/// deadline passed.
pub async fn watch(
    cloud: &Cloud,
    id: &str,
    deadline: Duration,
    stop: &CancellationToken,
) -> (Outcome, Option<Value>) {
    let until = Instant::now() + deadline;
    let mut last: Option<Value> = None;
    // Every step has a timeout of at most 30 s: a campaign in which no
    // node moved for longer waits for something no timeout ends.
    let (mut steps, mut moved) = (String::new(), Instant::now());
    loop {
        // An error is a server that is down (killed, restarting): ask again.
        if let Ok(v) = cloud.cli_json(&["campaign", "status", id, "--json"]).await {
            if v["ended"].as_bool() == Some(true) {
                return (Outcome::Completed, Some(v));
            }
            if v["campaign"]["phase"].as_str() == Some("paused") && nodes_in_flight(&v).is_empty() {
                return (Outcome::Paused(waiting(&v)), Some(v));
            }
            let now_steps: String = v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{} {}\n", r["node"], r["step"]))
                .collect();
            if now_steps != steps {
                (steps, moved) = (now_steps, Instant::now());
            }
            last = Some(v);
        }
        let stalled = moved.elapsed() >= STALLED;
        if Instant::now() >= until || stalled || stop.is_cancelled() {
            let mut why = last.as_ref().map_or("no status".to_owned(), waiting);
            if stalled {
                why = format!("nothing moved for {}s: {why}", STALLED.as_secs());
            }
            return (Outcome::NotEnded(why), last);
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
