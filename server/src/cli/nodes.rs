//! `nodes list`, `nodes show`, `nodes watch`.

use clap::{Args, Subcommand};
use rollcall_proto::model::{self, Node, NodeDetail, NodeEvent, Role};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;

use super::client::ConnectArgs;
use super::{CliError, status_error};

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// List nodes, sorted by name.
    List {
        /// Only nodes of this role (controller, compute, storage).
        #[arg(long)]
        role: Option<Role>,
        /// Only online nodes.
        #[arg(long, conflicts_with = "offline")]
        online: bool,
        /// Only offline nodes.
        #[arg(long)]
        offline: bool,
        /// Print JSON (an array of nodes) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show one node with its latest report.
    Show {
        /// The node's name (the name in its agent certificate).
        node: String,
        /// Print JSON ({"node": ..., "report": ...}) instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Print node changes as they happen (Ctrl-C to stop).
    Watch {
        /// Only nodes of this role.
        #[arg(long)]
        role: Option<Role>,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    #[command(subcommand)]
    pub command: NodesCommand,
}

fn wire_role(role: Option<Role>) -> i32 {
    role.map_or(v1::Role::Unspecified, v1::Role::from) as i32
}

pub async fn run(cmd: NodesCommand) -> Result<(), CliError> {
    match cmd {
        NodesCommand::List {
            role,
            online,
            offline,
            json,
            connect,
        } => {
            let filter = if online {
                v1::OnlineFilter::Online
            } else if offline {
                v1::OnlineFilter::Offline
            } else {
                v1::OnlineFilter::Any
            };
            let mut client = connect.operator().await?;
            let resp = client
                .list_nodes(v1::ListNodesRequest {
                    role: wire_role(role),
                    online: filter as i32,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let nodes = resp
                .nodes
                .into_iter()
                .map(Node::try_from)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CliError::Runtime(format!("server sent an invalid node: {e}")))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&nodes).expect("nodes serialize")
                );
            } else {
                print!("{}", render_table(&nodes, Timestamp::now()));
            }
        }
        NodesCommand::Show {
            node,
            json,
            connect,
        } => {
            let mut client = connect.operator().await?;
            let resp = client
                .get_node(v1::GetNodeRequest { name: node })
                .await
                .map_err(status_error)?
                .into_inner();
            let invalid = |e| CliError::Runtime(format!("server sent an invalid node: {e}"));
            let detail = NodeDetail {
                node: resp
                    .node
                    .ok_or_else(|| CliError::Runtime("server sent no node".into()))?
                    .try_into()
                    .map_err(invalid)?,
                report: resp
                    .report
                    .map(model::Report::try_from)
                    .transpose()
                    .map_err(invalid)?,
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&detail).expect("detail serializes")
                );
            } else {
                print!("{}", render_detail(&detail, Timestamp::now()));
            }
        }
        NodesCommand::Watch {
            role,
            json,
            connect,
        } => {
            let mut client = connect.operator().await?;
            let mut stream = client
                .watch_nodes(v1::WatchNodesRequest {
                    role: wire_role(role),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            while let Some(event) = stream.message().await.map_err(status_error)? {
                let event = NodeEvent::try_from(event)
                    .map_err(|e| CliError::Runtime(format!("server sent an invalid event: {e}")))?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&event).expect("event serializes")
                    );
                } else {
                    let n = &event.node;
                    println!(
                        "{}  {:<8} {:<24} {:<10} {}",
                        Timestamp::now(),
                        format!("{:?}", event.kind).to_lowercase(),
                        n.name,
                        n.role,
                        if n.online {
                            "online".to_owned()
                        } else {
                            format!("offline ({})", n.offline_reason)
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

/// "3s", "5m", "2h", "4d": how long ago, for people.
pub fn ago(now: Timestamp, then: Timestamp) -> String {
    human_secs(now.since(then).as_secs())
}

/// "3s", "5m", "2h", "4d".
pub fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn render_table(nodes: &[Node], now: Timestamp) -> String {
    let mut rows = vec![
        [
            "NAME",
            "ROLE",
            "STATE",
            "LAST SEEN",
            "OS",
            "KERNEL",
            "AGENT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for n in nodes {
        rows.push(vec![
            n.name.clone(),
            n.role.to_string(),
            if n.online {
                "online".into()
            } else {
                "offline".into()
            },
            format!("{} ago", ago(now, n.last_seen)),
            n.os_pretty_name.clone(),
            n.kernel.clone(),
            n.agent_version.clone(),
        ]);
    }
    let online = nodes.iter().filter(|n| n.online).count();
    format!(
        "{}{} nodes, {} online, {} offline\n",
        table(&rows),
        nodes.len(),
        online,
        nodes.len() - online
    )
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn render_detail(d: &NodeDetail, now: Timestamp) -> String {
    let n = &d.node;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut kv = |k: &str, v: String| rows.push(vec![format!("{k}:"), v]);
    kv("Node", n.name.clone());
    kv("Role", n.role.to_string());
    kv(
        "State",
        if n.online {
            "online".into()
        } else {
            format!("offline ({})", n.offline_reason)
        },
    );
    kv(
        "Labels",
        n.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    kv("First seen", n.first_seen.to_string());
    kv(
        "Last seen",
        format!("{} ({} ago)", n.last_seen, ago(now, n.last_seen)),
    );
    kv("Agent", n.agent_version.clone());
    if let Some(r) = &d.report {
        let (h, m) = (&r.host, &r.metrics);
        kv(
            "Report",
            format!(
                "#{} collected {} ({} ago)",
                r.seq,
                r.collected_at,
                ago(now, r.collected_at)
            ),
        );
        kv("Hostname", h.hostname.clone());
        kv("OS", h.os_pretty_name.clone());
        kv("Kernel", format!("{} ({})", h.kernel, h.arch));
        kv("Boot", format!("{} (id {})", h.boot_time, h.boot_id));
        kv("Uptime", human_secs(m.uptime_secs));
        kv(
            "CPU",
            format!(
                "{} CPUs, {:.1}% used, load {:.2} {:.2} {:.2}",
                h.cpu_count, m.cpu_usage_percent, m.load1, m.load5, m.load15
            ),
        );
        kv(
            "Memory",
            format!(
                "{} used of {}, {} available",
                bytes(m.memory_used_bytes),
                bytes(m.memory_total_bytes),
                bytes(m.memory_available_bytes)
            ),
        );
        kv(
            "Swap",
            format!(
                "{} used of {}",
                bytes(m.swap_used_bytes),
                bytes(m.swap_total_bytes)
            ),
        );
    } else {
        kv("Report", "none yet".into());
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes_read_well() {
        let now = Timestamp::from_unix_millis(10_000_000);
        assert_eq!(ago(now, Timestamp::from_unix_millis(9_997_000)), "3s");
        assert_eq!(
            ago(now, Timestamp::from_unix_millis(10_000_000 - 7_200_000)),
            "2h"
        );
        assert_eq!(ago(now, Timestamp::from_unix_millis(20_000_000)), "0s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }
}
