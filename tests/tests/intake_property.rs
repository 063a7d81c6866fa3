//! Property: whatever reports an agent sends, the server's intake never
//! panics, admits only what keeps its limits, and stores only what reads
//! back, so the server starts again on its database.
//!
//! Each case is a few reports made by `rollcall_tests::intake::wire_report`
//! from random bytes, run through `rollcall_tests::intake::run` (decode,
//! admit, merge, a real SQLite file, reopen, load). Reproduce a failure
//! with the seed it prints: `ROLLCALL_INTAKE_SEED=N cargo nextest run -p
//! rollcall-tests --test intake_property`. `ROLLCALL_INTAKE_CASES` sets how
//! many cases run (default 400). The same path runs under cargo-fuzz:
//! `fuzz/fuzz_targets/intake.rs`.

use arbitrary::Unstructured;
use rollcall_tests::TempDir;
use rollcall_tests::intake::{run, wire_report};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn arbitrary_reports_never_panic_and_always_load_again() {
    let seed = env("ROLLCALL_INTAKE_SEED").unwrap_or_else(|| fastrand::u64(..));
    let cases = env("ROLLCALL_INTAKE_CASES").unwrap_or(400);
    eprintln!("ROLLCALL_INTAKE_SEED={seed} ROLLCALL_INTAKE_CASES={cases}");
    let mut rng = fastrand::Rng::with_seed(seed);
    for case in 0..cases {
        let mut bytes = vec![0u8; rng.usize(0..16_384)];
        rng.fill(&mut bytes);
        let mut u = Unstructured::new(&bytes);
        let reports: Vec<_> = (0..rng.usize(1..=4))
            .map_while(|_| wire_report(&mut u).ok())
            .collect();
        let dir = TempDir::new("intake");
        eprintln!("case {case}: {} reports", reports.len());
        run(reports, dir.path());
    }
}
