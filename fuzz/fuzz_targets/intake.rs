//! The agent-report intake under libFuzzer: bytes → a few hostile wire
//! reports (`rollcall_tests::intake::wire_report`) → decode, admit, merge,
//! a real SQLite file, reopen and load (`rollcall_tests::intake::run`),
//! the same path the property test `tests/tests/intake_property.rs` runs.
//!
//! `cargo +nightly fuzz run intake -- -max_total_time=3600`
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use rollcall_tests::intake::{run, wire_report};

static CASE: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(count) = u.int_in_range(1..=4u8) else {
        return;
    };
    let reports: Vec<_> = (0..count)
        .map_while(|_| wire_report(&mut u).ok())
        .collect();
    let dir = std::env::temp_dir().join(format!(
        "rollcall-fuzz-{}-{}",
        std::process::id(),
        CASE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    run(reports, &dir);
    let _ = std::fs::remove_dir_all(&dir);
});
