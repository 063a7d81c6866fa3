//! rollcall-bench-memory: what holding one node's latest report costs the
//! server, measured as the growth of this process's RSS (allocator overhead
//! included, as the server pays it) while it holds `--nodes` copies of a
//! report template, each made unique as a real node's would be (hostname,
//! boot id, container ids, container start times, health-check timings,
//! metrics and network counters).
//!
//! Run each form in its own process, so one form's freed memory cannot
//! hide another's cost:
//!
//! ```sh
//! for form in report wire held; do
//!     target/release/rollcall-bench-memory --form $form --nodes 10000
//! done
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use prost::Message;
use rollcall_proto::model::Report;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use rollcall_server::fleet::Held;
use rollcall_tests::sim::template::{NodeKey, Template};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Form {
    /// The decoded domain type (`model::Report`), as the fleet held it before.
    Report,
    /// The decoded wire type (`v1::Report`).
    Wire,
    /// The fleet's compact form (`fleet::Held`: packed sections and a digest).
    Held,
}

#[derive(Parser, Debug)]
#[command(about = "RSS cost of holding N nodes' latest reports in one form")]
struct Args {
    #[arg(long, value_enum)]
    form: Form,
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// A report as `rollcall-agent once --json` prints it.
    #[arg(long, default_value = "tests/data/report-kolla-node.json")]
    report_template: PathBuf,
}

fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

/// The template as node `i` sends it: the load generator's own node (its
/// hostname, boot id, container ids, metrics and network counters), and
/// beyond that what differs between real nodes running the same images:
/// when each container started, and the timings in health-check output.
fn node_report(template: &Template, i: usize) -> Report {
    let node = NodeKey::new(i, &format!("cmp-{i:05}"));
    let mut r = template.full_report(&node, &[], 1, 600);
    for c in r.containers.iter_mut().flat_map(|s| &mut s.containers) {
        if let Some(at) = &mut c.started_at {
            *at = Timestamp::from_unix_millis(at.unix_millis() - fastrand::i64(0..30 * 86_400_000));
        }
        // "200 10.0.0.11:9292 0.01234 seconds": a timing of this node's own.
        c.last_health_output = c
            .last_health_output
            .replace("0.0", &format!("0.0{}", fastrand::u32(0..10)));
    }
    r
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = std::fs::read_to_string(&args.report_template)
        .with_context(|| format!("read {}", args.report_template.display()))?;
    let template = Template::from_json(&json).context("parse the template")?;
    let encoded = v1::Report::from(template.report().clone()).encoded_len();
    let before = rss_kib()?;
    let mut reports = Vec::new();
    let mut wires = Vec::new();
    let mut helds = Vec::new();
    for i in 0..args.nodes {
        let r = node_report(&template, i);
        match args.form {
            Form::Report => reports.push(r),
            Form::Wire => wires.push(v1::Report::from(r)),
            Form::Held => {
                let mut h = Held::default();
                h.merge(r);
                helds.push(h);
            }
        }
    }
    let after = rss_kib()?;
    let per_node = (after.saturating_sub(before)) as f64 * 1024.0 / args.nodes as f64;
    // The first node's sections are the dictionaries; show a later one.
    let packed = helds.last().map_or(0, Held::packed_bytes);
    println!(
        "form={:?} nodes={} rss_growth={:.1} MiB per_node={:.1} KiB (report encoded {:.1} KiB{})",
        args.form,
        args.nodes,
        (after.saturating_sub(before)) as f64 / 1024.0,
        per_node / 1024.0,
        encoded as f64 / 1024.0,
        if packed > 0 {
            format!(", packed sections {:.1} KiB", packed as f64 / 1024.0)
        } else {
            String::new()
        }
    );
    std::hint::black_box((reports, wires, helds));
    Ok(())
}
