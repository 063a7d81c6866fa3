//! The path a report takes into the server, end to end and without a
//! network: wire bytes → decode → [`admit`] → [`Held::merge`] → the store
//! (a real SQLite file) → reopen → load, as at the next start.
//!
//! Shared by the property test (`tests/tests/intake_property.rs`) and the
//! cargo-fuzz target (`fuzz/fuzz_targets/intake.rs`): both hand it reports
//! made by [`wire_report`] from arbitrary bytes, and it panics on anything
//! the server must never do with them.

use std::path::Path;

use arbitrary::{Result, Unstructured};
use prost::Message;
use rollcall_proto::admit;
use rollcall_proto::model::{self, Node, Role};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use rollcall_server::fleet::Held;
use rollcall_server::store::{NodeWrite, Section, Store};

/// Text an attacker would send: terminal escapes, a forged row, bidi
/// overrides, invalid-looking JSON, and ordinary names.
const PIECES: &[&str] = &[
    "nova_compute",
    "\u{1b}[2J",
    "\u{1b}]0;pwned\u{7}",
    "\u{1b}]52;c;cm0gLXJmIC8=\u{7}",
    "\n",
    "\r\n",
    "\t",
    "\u{7f}",
    "\u{9b}31m",
    "\u{202e}",
    "\u{2066}",
    "\\",
    "\"",
    "null",
    "NaN",
    "é",
    "日本",
    "\u{0}",
    "%s%n",
];

fn text(u: &mut Unstructured<'_>, max_pieces: usize) -> Result<String> {
    let mut s = String::new();
    let n = u.int_in_range(0..=max_pieces)?;
    for _ in 0..n {
        match u.int_in_range(0..=9)? {
            0..=5 => s.push_str(u.choose(PIECES)?),
            6..=7 => s.push_str(u.arbitrary::<&str>()?),
            8 => s.push(u.arbitrary::<char>()?),
            _ => {
                // Long: past every limit of `admit`.
                let piece = u.choose(PIECES)?;
                let times = u.int_in_range(1..=40_000)? / piece.len().max(1);
                s.push_str(&piece.repeat(times.max(1)));
            }
        }
    }
    Ok(s)
}

fn time(u: &mut Unstructured<'_>) -> Result<Option<prost_types::Timestamp>> {
    Ok(if u.ratio(1, 8)? {
        None
    } else if u.ratio(1, 4)? {
        Some(prost_types::Timestamp {
            seconds: u.arbitrary()?,
            nanos: u.arbitrary()?,
        })
    } else {
        let now = Timestamp::now().unix_millis() / 1_000;
        Some(prost_types::Timestamp {
            seconds: now + i64::from(u.int_in_range(-100_000..=1_000)?),
            nanos: 0,
        })
    })
}

fn float(u: &mut Unstructured<'_>) -> Result<f64> {
    Ok(match u.int_in_range(0..=5)? {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => 1e39,
        3 => u.arbitrary()?,
        _ => f64::from(u.int_in_range(0..=400u32)?) / 10.0,
    })
}

fn len(u: &mut Unstructured<'_>, usual: usize, over: usize) -> Result<usize> {
    if u.ratio(1, 50)? {
        Ok(over)
    } else {
        u.int_in_range(0..=usual)
    }
}

fn container(u: &mut Unstructured<'_>) -> Result<v1::Container> {
    let labels = len(u, 12, admit::MAX_LABELS + 5)?;
    Ok(v1::Container {
        id: if u.arbitrary()? {
            format!("{:064x}", u.arbitrary::<u128>()?)
        } else {
            text(u, 3)?
        },
        name: text(u, 3)?,
        image: text(u, 3)?,
        image_id: text(u, 2)?,
        state: u.int_in_range(-1..=9)?,
        health: u.int_in_range(-1..=6)?,
        failing_streak: u.arbitrary()?,
        last_health_output: text(u, 6)?,
        restart_count: u.arbitrary()?,
        exit_code: u.arbitrary()?,
        started_at: time(u)?,
        finished_at: time(u)?,
        labels: (0..labels)
            .map(|_| Ok((text(u, 2)?, text(u, 2)?)))
            .collect::<Result<_>>()?,
        oom_killed: u.arbitrary()?,
    })
}

/// A report such as a broken or hostile agent might send: every field
/// arbitrary, strings and counts sometimes past the server's limits,
/// floats sometimes not finite, enums sometimes unknown.
pub fn wire_report(u: &mut Unstructured<'_>) -> Result<v1::Report> {
    let containers = len(u, 8, admit::MAX_CONTAINERS + 1)?;
    let filesystems = len(u, 6, admit::MAX_FILESYSTEMS + 1)?;
    let interfaces = len(u, 8, admit::MAX_INTERFACES + 1)?;
    Ok(v1::Report {
        seq: u.arbitrary()?,
        collected_at: time(u)?,
        full: u.arbitrary()?,
        host: u
            .arbitrary::<bool>()?
            .then(|| {
                Ok(v1::HostFacts {
                    hostname: text(u, 3)?,
                    os_pretty_name: text(u, 3)?,
                    os_id: text(u, 1)?,
                    os_version_id: text(u, 1)?,
                    kernel: text(u, 3)?,
                    arch: text(u, 1)?,
                    boot_id: text(u, 1)?,
                    boot_time: time(u)?,
                    cpu_count: u.arbitrary()?,
                })
            })
            .transpose()?,
        metrics: u
            .arbitrary::<bool>()?
            .then(|| {
                Ok(v1::HostMetrics {
                    uptime_secs: u.arbitrary()?,
                    cpu_usage_percent: float(u)? as f32,
                    load1: float(u)?,
                    load5: float(u)?,
                    load15: float(u)?,
                    memory_total_bytes: u.arbitrary()?,
                    memory_used_bytes: u.arbitrary()?,
                    memory_available_bytes: u.arbitrary()?,
                    swap_total_bytes: u.arbitrary()?,
                    swap_used_bytes: u.arbitrary()?,
                })
            })
            .transpose()?,
        containers: u
            .arbitrary::<bool>()?
            .then(|| {
                Ok(v1::ContainersSection {
                    available: u.arbitrary()?,
                    error: text(u, 2)?,
                    engine: text(u, 1)?,
                    containers: (0..containers)
                        .map(|_| container(u))
                        .collect::<Result<_>>()?,
                })
            })
            .transpose()?,
        disks: u
            .arbitrary::<bool>()?
            .then(|| {
                Ok(v1::DisksSection {
                    filesystems: (0..filesystems)
                        .map(|_| {
                            Ok(v1::Filesystem {
                                mount_point: text(u, 2)?,
                                device: text(u, 2)?,
                                fs_type: text(u, 1)?,
                                total_bytes: u.arbitrary()?,
                                used_bytes: u.arbitrary()?,
                                available_bytes: u.arbitrary()?,
                                inodes_total: u.arbitrary()?,
                                inodes_used: u.arbitrary()?,
                                read_only: u.arbitrary()?,
                            })
                        })
                        .collect::<Result<_>>()?,
                    error: text(u, 2)?,
                })
            })
            .transpose()?,
        reboot: u
            .arbitrary::<bool>()?
            .then(|| {
                let reasons = len(u, 3, admit::MAX_REASONS + 1)?;
                Ok(v1::RebootSection {
                    required: u.arbitrary()?,
                    reasons: (0..reasons)
                        .map(|_| {
                            Ok(v1::RebootReason {
                                source: text(u, 1)?,
                                detail: text(u, 3)?,
                                packages: (0..len(u, 3, 20)?)
                                    .map(|_| text(u, 1))
                                    .collect::<Result<_>>()?,
                            })
                        })
                        .collect::<Result<_>>()?,
                    errors: (0..len(u, 2, admit::MAX_ERRORS + 1)?)
                        .map(|_| text(u, 2))
                        .collect::<Result<_>>()?,
                    checked_at: time(u)?,
                })
            })
            .transpose()?,
        updates: u
            .arbitrary::<bool>()?
            .then(|| {
                Ok(v1::UpdatesSection {
                    manager: text(u, 1)?,
                    checked: u.arbitrary()?,
                    count: u.arbitrary()?,
                    security_count: u.arbitrary()?,
                    last_check: time(u)?,
                    last_error: text(u, 2)?,
                    packages: (0..len(u, 10, 50)?)
                        .map(|_| text(u, 1))
                        .collect::<Result<_>>()?,
                })
            })
            .transpose()?,
        network: u
            .arbitrary::<bool>()?
            .then(|| {
                Ok(v1::NetworkSection {
                    interfaces: (0..interfaces)
                        .map(|_| {
                            Ok(v1::NetInterface {
                                name: text(u, 2)?,
                                rx_bytes: u.arbitrary()?,
                                tx_bytes: u.arbitrary()?,
                                rx_packets: u.arbitrary()?,
                                tx_packets: u.arbitrary()?,
                                rx_errors: u.arbitrary()?,
                                tx_errors: u.arbitrary()?,
                            })
                        })
                        .collect::<Result<_>>()?,
                })
            })
            .transpose()?,
    })
}

/// The durable part of a report: what the store keeps.
fn durable(r: &model::Report) -> [String; 5] {
    let json = |v: &dyn erased::Json| v.json();
    [
        json(&r.host),
        json(&r.containers),
        json(&r.disks),
        json(&r.reboot),
        json(&r.updates),
    ]
}

mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("a report section serializes")
        }
    }
}

/// Every string and list of an admitted report is within the limits.
fn assert_within_limits(r: &model::Report) {
    let all_text = serde_json::to_value(r).expect("serializes");
    fn walk(v: &serde_json::Value) {
        match v {
            serde_json::Value::String(s) => assert!(
                s.len() <= admit::TAIL_BYTES,
                "a {}-byte string was admitted",
                s.len()
            ),
            serde_json::Value::Array(a) => {
                assert!(a.len() <= admit::MAX_PACKAGES, "a list of {}", a.len());
                a.iter().for_each(walk);
            }
            serde_json::Value::Object(o) => o.values().for_each(walk),
            serde_json::Value::Number(n) => {
                assert!(n.as_f64().is_some_and(f64::is_finite), "{n}")
            }
            _ => {}
        }
    }
    walk(&all_text);
    if let Some(m) = &r.metrics {
        for v in [f64::from(m.cpu_usage_percent), m.load1, m.load5, m.load15] {
            assert!(v.is_finite() && v >= 0.0, "metric {v} admitted");
        }
    }
    assert!(r.containers().len() <= admit::MAX_CONTAINERS);
}

/// Feeds `reports` from one node through the server's intake and store in
/// `data_dir` (each report followed by a checkpoint), then opens the store
/// again as the next start would and checks that what was stored reads
/// back as what the server held.
pub fn run(reports: Vec<v1::Report>, data_dir: &Path) {
    let name = "fuzz-node";
    let now = Timestamp::now();
    let mut held = Held::default();
    let mut store = Store::open(data_dir).expect("a new store opens");
    for wire in reports {
        // Through the codec too: what arrives is bytes.
        let bytes = wire.encode_to_vec();
        let wire = v1::Report::decode(bytes.as_slice()).expect("our own encoding decodes");
        let Ok(admitted) = admit::report(wire, now) else {
            continue;
        };
        assert_within_limits(&admitted.value);
        let merged = held.merge(admitted.value);
        let mut sections = merged.durable;
        // Disk usage alone is written at the fleet's next checkpoint, not
        // at once (ARCHITECTURE.md, "what is durable"): as if one ran now.
        if merged.disks_usage_changed {
            sections.push(Section::Disks(held.packed_disks()));
        }
        let write = NodeWrite {
            node: Node::new(name, Role::Compute, now),
            sections,
        };
        store
            .write_nodes([&write])
            .expect("an admitted report is stored");
        // What an operator's GetNode shows goes over the wire too.
        let shown = v1::Report::from(held.report(name));
        model::Report::try_from(shown).expect("what the server shows converts back");
    }
    drop(store);
    let store = Store::open(data_dir).expect("the store opens again");
    let mut loaded = Vec::new();
    store
        .each_node(|n| loaded.push(n))
        .expect("every stored node loads");
    let expected = held.report(name);
    match loaded.as_slice() {
        [] => assert_eq!(durable(&expected), durable(&model::Report::default())),
        [one] => {
            let report = one.report.clone().unwrap_or_default();
            assert_eq!(
                durable(&report),
                durable(&expected),
                "what was stored reads back as what the server held"
            );
        }
        more => panic!("{} nodes stored for one", more.len()),
    }
}
