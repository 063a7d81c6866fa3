//! rollcall-bench-memory: what holding one node's latest report costs the
//! server, measured as the growth of this process's RSS (allocator overhead
//! included, as the server pays it) while it holds `--nodes` copies of a
//! report template, each made unique as a real node's would be (hostname,
//! boot id, container ids).
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
use rollcall_proto::v1;
use rollcall_server::fleet::Held;

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

/// The template as node `i` would send it.
fn node_report(template: &Report, i: usize) -> Report {
    let mut r = template.clone();
    if let Some(h) = &mut r.host {
        h.hostname = format!("cmp-{i:05}");
        h.boot_id = format!("{i:08x}-{}", &h.boot_id.get(9..).unwrap_or_default());
    }
    for c in r.containers.iter_mut().flat_map(|s| &mut s.containers) {
        c.id = format!("{i:08x}{}", c.id.get(8..).unwrap_or_default());
    }
    r
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = std::fs::read_to_string(&args.report_template)
        .with_context(|| format!("read {}", args.report_template.display()))?;
    let template: Report = serde_json::from_str(&json).context("parse the template")?;
    let encoded = v1::Report::from(template.clone()).encoded_len();
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
    let packed = helds.first().map_or(0, Held::packed_bytes);
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
