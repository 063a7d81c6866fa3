//! A seeded handful of the fault-injection runs of `scripts/chaos.sh`
//! (issue 11), against the binaries `cargo build --workspace --bins` made:
//! the real server and eight real agents as processes under supervisors,
//! real mTLS on loopback through a TCP proxy, a real SQLite file, scripts
//! for the patch, the reboot and the hooks. Nothing here skips: the runner
//! needs no tool the build does not make.

use std::time::Duration;

use rollcall_tests::chaos::{self, Options, faults::Kind, verdict::Outcome};
use rollcall_tests::{TempDir, bin, init};
use tokio_util::sync::CancellationToken;

/// The seed of the first run; run i is seed + i, and its kind is
/// `KINDS[(seed + i) % KINDS.len()]`: one run of each kind.
const SEED: u64 = 11_000;
const KINDS: [Kind; 4] = [
    Kind::KillServer,
    Kind::KillAgent,
    Kind::LostRequests,
    Kind::NeverReturnController,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_never_patch_or_reboot_a_node_twice_and_every_campaign_ends() {
    init();
    let out = TempDir::new("chaos");
    let bin_dir = bin("rollcall-server")
        .parent()
        .expect("a binary is in a directory")
        .to_owned();
    bin("rollcall-agent");
    let mut opts = Options::new(bin_dir, out.path().to_owned());
    opts.runs = KINDS.len();
    opts.seed = SEED;
    opts.kinds = KINDS.to_vec();
    opts.deadline = Duration::from_secs(120);
    let summary = chaos::run(&opts, CancellationToken::new(), |r| {
        eprintln!("{}", r.line());
        for e in &r.events {
            eprintln!("        {e}");
        }
    })
    .await
    .expect("the runs are made");
    let table = summary.table();
    eprintln!("{table}");

    assert_eq!(summary.runs.len(), KINDS.len(), "{table}");
    for r in &summary.runs {
        // The barrier: faults were injected and the nodes' logs were read,
        // so the zeros below count something.
        assert!(
            r.injected.describe() != "nothing",
            "seed {} ({}) injected nothing: {}",
            r.seed,
            r.kind,
            r.line()
        );
        assert!(r.patches > 0, "seed {}: no patch ran: {}", r.seed, r.line());
        assert!(r.anomalies.is_empty(), "{}", r.line());
        assert!(
            !matches!(r.outcome, Outcome::NotRun(_)),
            "seed {}: {}",
            r.seed,
            r.line()
        );
    }
    assert_eq!(
        summary.patched_twice(),
        0,
        "a node was patched twice:\n{table}"
    );
    assert_eq!(
        summary.rebooted_twice(),
        0,
        "a node was rebooted twice:\n{table}"
    );
    assert_eq!(summary.not_ended(), 0, "a campaign did not end:\n{table}");
}
