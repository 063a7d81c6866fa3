//! rollcall-bench-intake: what one agent report costs the server's session
//! task before the fleet sees it, step by step: decoding the protobuf,
//! `admit` (the limits: convert, cut, refuse; beside it the plain
//! conversion it replaced), and packing it for the
//! fleet (`fleet::Update`). Input: `--nodes` reports made from a report
//! captured from a real agent (as the load generator makes them), full
//! reports or interval reports (metrics and network).
//!
//! ```sh
//! target/release/rollcall-bench-intake --kind full
//! target/release/rollcall-bench-intake --kind interval
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use prost::Message;
use rollcall_proto::admit;
use rollcall_proto::model::Report;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use rollcall_server::fleet::Update;
use rollcall_tests::sim::template::{NodeKey, Template};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    /// Every section: 46 containers, 51 interfaces, 137 pending updates.
    Full,
    /// What an agent sends between full reports: metrics and network.
    Interval,
}

#[derive(Parser, Debug)]
#[command(about = "CPU cost of one agent report in the session task, step by step")]
struct Args {
    #[arg(long, value_enum, default_value = "full")]
    kind: Kind,
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
    /// Passes over the reports; the fastest pass is reported.
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// A report as `rollcall-agent once --json` prints it.
    #[arg(long, default_value = "tests/data/report-kolla-node.json")]
    report_template: PathBuf,
}

fn per_report(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = std::fs::read_to_string(&args.report_template)
        .with_context(|| format!("read {}", args.report_template.display()))?;
    let template = Template::from_json(&json).context("parse the template")?;
    let encoded: Vec<Vec<u8>> = (0..args.nodes)
        .map(|i| {
            let node = NodeKey::new(i, &format!("cmp-{i:05}"));
            let mut r = template.full_report(&node, &[], 1, 600);
            if let Kind::Interval = args.kind {
                r.full = false;
                (r.host, r.containers, r.disks, r.reboot, r.updates) =
                    (None, None, None, None, None);
            }
            v1::Report::from(r).encode_to_vec()
        })
        .collect();
    let bytes = encoded.iter().map(Vec::len).sum::<usize>() / encoded.len();
    let (mut decode, mut convert, mut admit_t, mut pack) =
        (Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..args.passes {
        let t = Instant::now();
        let wires: Vec<v1::Report> = encoded
            .iter()
            .map(|b| v1::Report::decode(b.as_slice()))
            .collect::<Result<_, _>>()?;
        decode = decode.min(t.elapsed());
        // The plain conversion `admit` replaced, for comparison.
        let copies = wires.clone();
        let t = Instant::now();
        let converted: Vec<Report> = copies
            .into_iter()
            .map(Report::try_from)
            .collect::<Result<_, _>>()?;
        convert = convert.min(t.elapsed());
        std::hint::black_box(converted);
        let now = Timestamp::now();
        let t = Instant::now();
        let admitted: Vec<_> = wires
            .into_iter()
            .map(|w| admit::report(w, now).map(|a| a.value))
            .collect::<Result<_, _>>()?;
        admit_t = admit_t.min(t.elapsed());
        let t = Instant::now();
        let updates: Vec<Update> = admitted.into_iter().map(Update::from).collect();
        pack = pack.min(t.elapsed());
        std::hint::black_box(updates);
    }
    let n = args.nodes;
    println!(
        "kind={:?} reports={n} encoded={:.1} KiB decode={:.1} µs admit={:.1} µs (plain conversion {:.1} µs) pack={:.1} µs total={:.1} µs per report (fastest of {} passes)",
        args.kind,
        bytes as f64 / 1024.0,
        per_report(decode, n),
        per_report(admit_t, n),
        per_report(convert, n),
        per_report(pack, n),
        per_report(decode + admit_t + pack, n),
        args.passes
    );
    Ok(())
}
