//! Failover and fencing (issue 16) with real replicas on a real PostgreSQL:
//! three `rollcall-server` processes on one database of the test's cluster
//! (`rollcall_tests::postgres`), each under a supervisor that restarts it
//! when it exits, the eight real agents of the chaos cloud given every
//! replica's URL, one rolling campaign with drain hooks, a patch and a
//! reboot on every node, and one fault to the leader mid-campaign: kill -9,
//! its PostgreSQL traffic blackholed (anywhere, or while its store is inside
//! a write transaction holding the lease row), its PostgreSQL sessions
//! terminated.
//!
//! What is judged comes from the processes' own records: the nodes' scripts
//! (what ran, with the epoch of the leader that asked), the agents' logs
//! (what they received, with its epoch; whom they connected to) and the
//! replicas' logs (what each sent, with its epoch; when each won the lease).
//!
//! PostgreSQL missing skips outside CI and fails with CI=true. The cases run
//! one at a time (a file lock), also under nextest: their timings are what
//! they assert. Run `cargo build --bins` first.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_tests::chaos;
use rollcall_tests::chaos::cloud::{Cloud, NODES, Session};
use rollcall_tests::chaos::faults::{Faults, Kind, Plan};
use rollcall_tests::chaos::record::{self, Act};
use rollcall_tests::chaos::replicas::ReplicaSetup;
use rollcall_tests::chaos::verdict::{self, Outcome, RunResult};
use rollcall_tests::{TempDir, bin, init, postgres};
use tokio_util::sync::CancellationToken;

/// Long enough that a kill lands in the middle of a patch now and then.
const PATCH_SECS: f64 = 2.0;
/// Step timeouts four times the chaos runs': an outage of up to a lease
/// and a poll, then the agents' reconnection, must not time a node out.
const PATIENCE: u32 = 4;
/// The server's default `[replica] lease_ms`, which these cases keep.
const LEASE_SECS: f64 = 10.0;

/// Held for a case's whole run: the cases share the machine's two cores
/// with nothing else of their own kind.
async fn one_at_a_time() -> std::fs::File {
    tokio::task::spawn_blocking(|| {
        let path = std::env::temp_dir().join("rollcall-failover-suite.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .expect("the suite's lock file opens");
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .expect("the suite's lock is taken");
        file
    })
    .await
    .expect("the lock task ends")
}

struct Run {
    cloud: Cloud,
    campaign: String,
    pg: &'static postgres::Postgres,
    started: Instant,
    _out: TempDir,
    _serial: std::fs::File,
}

/// What a run left: the verdict from the nodes' logs, and the record.
struct Finished {
    result: RunResult,
    sends: Vec<Act>,
    received: Vec<Act>,
    ran: Vec<Act>,
}

/// Starts three replicas and the eight agents, waits for a leader and every
/// node online, and starts the campaign; `None` when PostgreSQL is missing
/// outside CI.
async fn start(tag: &str, seed: u64) -> Option<Run> {
    init();
    let pg = postgres::or_skip()?;
    let serial = one_at_a_time().await;
    let started = Instant::now();
    let out = TempDir::new(tag);
    let bin_dir = bin("rollcall-server")
        .parent()
        .expect("a binary is in a directory")
        .to_owned();
    bin("rollcall-agent");
    let session = Session::prepare(&bin_dir, out.path()).expect("the PKI and scripts are made");
    let dir = out.path().join("run");
    let nodes: Vec<(String, &'static str)> =
        NODES.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect();
    let faults = Arc::new(Faults::new(Plan::quiet(&nodes, PATCH_SECS), seed));
    let cloud = Cloud::start_replicated(&session, &dir, faults, seed, ReplicaSetup::new(pg, 3))
        .await
        .expect("the replicas and agents start");
    let (leader, epoch) = cloud
        .replicas()
        .wait_leader(Duration::from_secs(60), |_, _| true)
        .await
        .expect("a replica leads");
    eprintln!("replica {leader} leads with epoch {epoch}");
    cloud
        .wait_online(Duration::from_secs(60))
        .await
        .expect("every agent reaches the leader");
    let spec = dir.join("campaign.toml");
    std::fs::write(&spec, chaos::campaign_spec(tag, PATIENCE)).expect("the spec is written");
    let spec = spec.display().to_string();
    let answer = cloud
        .cli_json(&["campaign", "start", "--spec", &spec, "--json"])
        .await
        .expect("the campaign starts");
    let campaign = answer["campaign"]["id"]
        .as_str()
        .expect("campaign start --json names the campaign")
        .to_owned();
    cloud.event(format_args!("campaign {campaign} started"));
    Some(Run {
        cloud,
        campaign,
        pg,
        started,
        _out: out,
        _serial: serial,
    })
}

/// Polls `f` every 100 ms until it gives something or `within` passed.
async fn until<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Run {
    /// The campaign is under way: a node's patch has started (its log says).
    async fn wait_patch_started(&self) {
        until(Duration::from_secs(90), "a patch starts", || {
            (self.cloud.patches_started() > 0).then_some(())
        })
        .await;
    }

    /// Watches the campaign to its end, reads the record and stops the cloud.
    async fn finish(self) -> Finished {
        let (outcome, status) = chaos::watch(
            &self.cloud,
            &self.campaign,
            Duration::from_secs(150),
            &CancellationToken::new(),
        )
        .await;
        let sends = self.cloud.replicas().sends();
        let received = self.cloud.received();
        let ran = self.cloud.ran();
        let names: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
        let (logs, hooks_twice) = verdict::read_logs(&self.cloud.dir, &names);
        let mut result = RunResult::not_run(0, 0, Kind::KillServer, String::new());
        result.outcome = outcome;
        result.hooks_twice = hooks_twice;
        verdict::judge(&mut result, &logs, status.as_ref(), None);
        result.events = self.cloud.procs.events();
        result.secs = self.started.elapsed().as_secs_f64();
        self.cloud.stop().await;
        eprintln!("{} ({:.0} s in all)", result.line(), result.secs);
        let count = |acts: &[Act]| -> String {
            let mut per: std::collections::BTreeMap<u64, usize> = Default::default();
            for a in acts {
                *per.entry(a.epoch).or_default() += 1;
            }
            per.iter()
                .map(|(e, n)| format!("{n} of epoch {e}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "record: sent {}; received {}; ran {}",
            count(&sends),
            count(&received),
            count(&ran)
        );
        for e in &result.events {
            eprintln!("        {e}");
        }
        Finished {
            result,
            sends,
            received,
            ran,
        }
    }
}

/// The campaign completed with every node patched and rebooted exactly
/// once and undrained, no two leaders sent at once, and every node ran its
/// actions in epoch order, each one a leader sent with that epoch.
fn assert_clean(f: &Finished) {
    let r = &f.result;
    let line = r.line();
    assert_eq!(r.outcome, Outcome::Completed, "{line}");
    assert!(r.patched_twice.is_empty(), "{line}");
    assert!(r.rebooted_twice.is_empty(), "{line}");
    assert!(r.hooks_twice.is_empty(), "{line}");
    assert!(r.left_drained.is_empty(), "{line}");
    assert!(r.failed_unexpected.is_empty(), "{line}");
    assert!(r.done_without_work.is_empty(), "{line}");
    assert!(r.anomalies.is_empty(), "{line}");
    assert_eq!((r.patches, r.reboots), (NODES.len(), NODES.len()), "{line}");
    if let Err(e) = record::no_overlap(&f.sends) {
        panic!("two leaders sent at once: {e}");
    }
    if let Err(e) = record::fenced(&f.ran) {
        panic!("a node ran a deposed leader's action: {e}");
    }
    assert!(!f.ran.is_empty() && !f.received.is_empty() && !f.sends.is_empty());
    for a in &f.ran {
        assert!(a.epoch > 0, "{} ran without a leader's epoch", a.action_id);
        assert!(
            f.sends
                .iter()
                .any(|s| s.action_id == a.action_id && s.epoch == a.epoch && s.at <= a.at),
            "{} ran on {} with epoch {} that no replica sent it with",
            a.action_id,
            a.node,
            a.epoch
        );
    }
}

/// Holds `nodes` locked against writes for 5 s and returns once the
/// leader's writer waits on it (inside its transaction, the lease row
/// already held `FOR SHARE`); the returned task ends when the lock is let
/// go. Panics if the writer does not come to wait within 4 s (it writes
/// node batches every second).
async fn hold_a_write(pg: &'static postgres::Postgres, db: &str) -> tokio::task::JoinHandle<()> {
    let (url, name) = (
        db.to_owned(),
        db.rsplit('/').next().unwrap_or_default().to_owned(),
    );
    let holder = tokio::task::spawn_blocking(move || {
        pg.psql(
            &url,
            "BEGIN; LOCK TABLE nodes IN SHARE MODE; SELECT pg_sleep(5); COMMIT;",
        )
        .expect("psql holds the lock");
    });
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let name = name.clone();
        let waiting = tokio::task::spawn_blocking(move || {
            pg.psql_with(
                &pg.url("postgres"),
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :'db' \
                 AND application_name = 'rollcall-store' AND wait_event_type = 'Lock';",
                &[("db", &name)],
            )
            .map(|n| n == "1")
        })
        .await
        .expect("the psql task ends")
        .expect("psql answers");
        if waiting {
            return holder;
        }
        assert!(
            Instant::now() < deadline,
            "the leader's writer never waited on the lock of nodes within 4 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (30 s at most) until the database has a `rollcall-store` and a
/// `rollcall-lease` session, which only a leader holds; their pids.
async fn leader_sessions(pg: &'static postgres::Postgres, db: &str, what: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let db = db.to_owned();
        let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u32>> {
            let store = pg.backend_pids_of(&db, "rollcall-store")?;
            let lease = pg.backend_pids_of(&db, "rollcall-lease")?;
            if store.is_empty() || lease.is_empty() {
                return Ok(Vec::new());
            }
            Ok([store, lease].concat())
        })
        .await
        .expect("the psql task ends")
        .expect("psql answers");
        if !found.is_empty() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn epochs(acts: &[Act]) -> BTreeSet<u64> {
    acts.iter().map(|a| a.epoch).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_campaign_is_replaced_within_15_s_and_nothing_runs_twice() {
    let Some(run) = start("failover-kill", 16_001).await else {
        return;
    };
    run.wait_patch_started().await;
    let replicas = run.cloud.replicas();
    let (old, _) = replicas.leader().await.expect("a replica leads");
    // Its host stays down until another replica leads: restarted within
    // the lease, it would race the others for it.
    replicas.members[old].proc.hold(true);
    let killed = replicas.kill_leader().await.expect("the leader is killed");
    assert_eq!(killed.index, old);
    let (new, epoch, won_at) = replicas
        .wait_won(killed.epoch, Duration::from_secs(30))
        .await
        .expect("another replica takes the lease");
    let failover = won_at - killed.at;
    let new_url = replicas.members[new].url.clone();
    let all_back = run
        .cloud
        .wait_connected_to(&new_url, killed.at, Duration::from_secs(60))
        .await
        .expect("every agent reconnects to the new leader");
    println!(
        "FAILOVER kill -9: replica {old} (epoch {}) killed; replica {new} won the lease (epoch {epoch}) \
         {failover:.2} s later; every agent connected to it {:.2} s after the kill",
        killed.epoch,
        all_back - killed.at
    );
    assert_ne!(new, old, "another replica leads");
    assert!(epoch > killed.epoch);
    assert!(
        failover < 15.0,
        "the lease was won {failover:.2} s after the kill"
    );

    // Back up, it follows the new leader.
    replicas.members[old].proc.hold(false);
    let follows = until(
        Duration::from_secs(30),
        "the killed replica follows",
        || replicas.members[old].following_since(killed.at),
    )
    .await;
    assert_eq!(
        follows, new_url,
        "the restarted replica names the new leader"
    );
    assert!(replicas.members[old].proc.starts() >= 2);
    assert_eq!(
        replicas.leader().await.map(|(i, _)| i),
        Some(new),
        "the restarted replica did not take the lease back"
    );
    let (old_epoch, new_epoch) = (killed.epoch, epoch);

    let f = run.finish().await;
    assert_clean(&f);
    let sent = epochs(&f.sends);
    assert!(
        sent.contains(&old_epoch) && sent.contains(&new_epoch),
        "both leaders sent (epochs {sent:?}): the kill landed mid-campaign"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_postgresql_stops_acting_before_its_lease_ends_and_exits() {
    let Some(run) = start("failover-cut", 16_002).await else {
        return;
    };
    cut_off(run, Moment::Anywhere).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_inside_a_write_transaction_does_not_hold_the_takeover_off() {
    let Some(run) = start("failover-cut-write", 16_004).await else {
        return;
    };
    cut_off(run, Moment::InsideWrite).await;
}

/// When the leader's PostgreSQL traffic is blackholed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moment {
    /// Once a patch has started, wherever its connections are.
    Anywhere,
    /// While its store connection is inside a write transaction, which
    /// holds the lease row `FOR SHARE`: the test holds a lock on `nodes`
    /// so that the leader's next node batch waits inside its transaction,
    /// cuts the leader off, then lets the batch finish. PostgreSQL then
    /// holds that transaction open, idle, for as long as it believes the
    /// connection lives — on loopback behind the relay, forever.
    InsideWrite,
}

/// Case b: the leader's PostgreSQL traffic blackholed mid-campaign. It
/// stops sending before `cut + lease - 1 s`, exits 1 and comes back as a
/// follower; a follower leads with a higher epoch within 15 s of the cut;
/// the campaign completes with nothing done twice.
async fn cut_off(run: Run, moment: Moment) {
    run.wait_patch_started().await;
    let replicas = run.cloud.replicas();
    let (old, old_epoch) = replicas.leader().await.expect("a replica leads");
    let holder = match moment {
        Moment::Anywhere => None,
        Moment::InsideWrite => Some(hold_a_write(run.pg, &replicas.db).await),
    };
    let cut_at = record::now();
    replicas.members[old].relay.blackhole();
    run.cloud.event(format_args!(
        "blackholed the PostgreSQL connections of replica {old}, the leader (epoch {old_epoch}), {moment:?}"
    ));
    if let Some(holder) = holder {
        holder.await.expect("the lock holder ends");
        let (pg, db) = (run.pg, replicas.db.clone());
        let idle = tokio::task::spawn_blocking(move || {
            pg.psql_with(
                &pg.url("postgres"),
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :'db' \
                 AND application_name = 'rollcall-store' AND state = 'idle in transaction';",
                &[("db", db.rsplit('/').next().unwrap_or_default())],
            )
        })
        .await
        .expect("the psql task ends")
        .expect("psql answers");
        // The barrier: the cut left a transaction open, or the case
        // tests nothing more than `Anywhere`.
        assert_eq!(
            idle, "1",
            "the cut-off leader's store session is idle inside its transaction"
        );
    }
    let (new, epoch, won_at) = replicas
        .wait_won(old_epoch, Duration::from_secs(40))
        .await
        .expect("a follower takes the lease");
    let (exited_at, status) = until(Duration::from_secs(60), "the cut-off leader exits", || {
        replicas.members[old]
            .proc
            .exits()
            .into_iter()
            .find(|(at, _)| *at >= cut_at)
    })
    .await;
    for l in replicas.members[old].log() {
        if l.at >= cut_at && l.level != "INFO" {
            eprintln!(
                "replica {old} +{:.2} s: {} {}",
                l.at - cut_at,
                l.level,
                l.text
            );
        }
    }
    // Its restarts need PostgreSQL to follow: the network heals.
    replicas.members[old].relay.heal();
    let new_url = replicas.members[new].url.clone();
    println!(
        "FAILOVER blackhole: replica {old} (epoch {old_epoch}) cut off; it exited ({status}) {:.2} s \
         later; replica {new} won the lease (epoch {epoch}) {:.2} s after the cut",
        exited_at - cut_at,
        won_at - cut_at
    );
    assert_ne!(new, old);
    assert!(epoch > old_epoch);
    assert!(
        won_at - cut_at < 15.0,
        "the lease was won {:.2} s after the cut",
        won_at - cut_at
    );
    assert_eq!(status.code(), Some(1), "a leader that cannot renew exits 1");
    let follows = until(
        Duration::from_secs(60),
        "the cut-off replica follows",
        || replicas.members[old].following_since(exited_at),
    )
    .await;
    assert_eq!(follows, new_url, "restarted, it follows the new leader");
    let lease = replicas.lease.as_secs_f64();
    assert_eq!(lease, LEASE_SECS);

    let f = run.finish().await;
    assert_clean(&f);
    let bound = cut_at + lease - 1.0;
    let last_sent = f
        .sends
        .iter()
        .filter(|s| s.epoch == old_epoch)
        .map(|s| s.at)
        .fold(f64::NAN, f64::max);
    println!(
        "FAILOVER blackhole: the cut-off leader's last send was {:.2} s after the cut (bound {:.1} s)",
        last_sent - cut_at,
        lease - 1.0
    );
    // The barrier: the record holds the old leader's sends and the new
    // one's after the bound, so the emptiness below counts something.
    assert!(
        !last_sent.is_nan(),
        "the cut-off leader sent nothing at all"
    );
    assert!(
        f.sends.iter().any(|s| s.epoch == epoch && s.at > bound),
        "the new leader sent nothing after the bound"
    );
    let late = |acts: &[Act]| -> Vec<String> {
        acts.iter()
            .filter(|a| a.epoch == old_epoch && a.at > bound)
            .map(|a| format!("{} to {} at +{:.2} s", a.action_id, a.node, a.at - cut_at))
            .collect()
    };
    assert_eq!(late(&f.sends), Vec::<String>::new(), "sent after the bound");
    assert_eq!(
        late(&f.received),
        Vec::<String>::new(),
        "received after the bound"
    );
    assert_eq!(late(&f.ran), Vec::<String>::new(), "ran after the bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_postgresql_sessions_terminated_mid_campaign_come_back_or_depose_it_cleanly() {
    let Some(run) = start("failover-terminate", 16_003).await else {
        return;
    };
    run.wait_patch_started().await;
    let replicas = run.cloud.replicas();
    let (old, old_epoch) = replicas.leader().await.expect("a replica leads");
    let pg = run.pg;
    // The lease's connection is made at its first renewal, a quarter
    // lease after it was won.
    let before = leader_sessions(pg, &replicas.db, "the leader has both sessions").await;
    let db = replicas.db.clone();
    let at = record::now();
    let ended: Vec<usize> = tokio::task::spawn_blocking(move || {
        ["rollcall-store", "rollcall-lease"]
            .iter()
            .map(|app| pg.terminate(&db, app).expect("pg_terminate_backend"))
            .collect()
    })
    .await
    .expect("the psql task ends");
    run.cloud.event(format_args!(
        "terminated replica {old}'s PostgreSQL sessions: {} store, {} lease",
        ended[0], ended[1]
    ));
    assert!(
        ended[0] >= 1 && ended[1] >= 1,
        "the leader held a store and a lease session ({ended:?} ended)"
    );
    // A lease and a poll later, someone leads: the same replica with the
    // same epoch, or another with a higher one.
    tokio::time::sleep(Duration::from_secs_f64(LEASE_SECS + 1.0)).await;
    let (now, epoch) = replicas
        .wait_leader(Duration::from_secs(30), |i, e| {
            (i == old && e == old_epoch) || e > old_epoch
        })
        .await
        .expect("a replica leads");
    let after = leader_sessions(pg, &replicas.db, "the leader's sessions are back").await;
    for l in replicas.members[old].log() {
        if l.at >= at && l.level != "INFO" {
            eprintln!("replica {old} +{:.2} s: {} {}", l.at - at, l.level, l.text);
        }
    }
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "the sessions are new ones (before {before:?}, after {after:?})"
    );
    if now == old {
        println!(
            "FAILOVER terminate: replica {old} reconnected and still leads with epoch {epoch} a lease later"
        );
    } else {
        println!(
            "FAILOVER terminate: replica {old} (epoch {old_epoch}) was deposed; replica {now} leads with epoch {epoch}"
        );
    }

    let f = run.finish().await;
    assert_clean(&f);
    assert!(
        epochs(&f.sends).contains(&old_epoch),
        "the leader had sent before its sessions ended"
    );
    assert!(
        f.sends.iter().any(|s| s.at > at),
        "actions were sent after the sessions ended: the campaign went on"
    );
}
