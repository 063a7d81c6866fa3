//! `nodes list`, `nodes show`, `nodes watch`, `nodes forget`.

use clap::{Args, Subcommand};
use rollcall_proto::model::{self, Node, NodeDetail, NodeEvent, Role};
use rollcall_proto::text::for_terminal;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;

use super::certs;
use super::client::{ConnectArgs, all_pages};
use super::render::{render_detail, render_table};
use super::{CliError, status_error};
use crate::audit::AuditRecord;

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// List nodes, sorted by name (or --sort cert-expiry).
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
        /// Order of the list: by name, or by certificate expiry (nearest
        /// first, unknown last).
        #[arg(long, value_enum, default_value_t = SortBy::Name)]
        sort: SortBy,
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
    /// Remove a node that left the cloud: offline, and held by no running or paused campaign.
    ///
    /// Its stored report goes with it and it no longer counts anywhere (lists, fleet status, a
    /// role's concurrency). Needs role admin; recorded in `audit list`. An agent that still holds
    /// a valid certificate and connects again comes back as a new node.
    Forget {
        /// The node's name.
        node: String,
        /// Why, for the audit.
        #[arg(long, default_value = "")]
        reason: String,
        /// Then revoke every certificate of its agent the server knows, so it cannot come back
        /// (like `certs revoke --agent NODE`).
        #[arg(long)]
        revoke: bool,
        /// Print the audit line as JSON instead of a sentence (then one JSON line per
        /// revoked certificate).
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Name,
    CertExpiry,
}

/// The server pages in name order and the CLI fetches every page, so any
/// other order is a sort of what it fetched; stable, so equal expiries stay
/// in name order.
fn sort_nodes(nodes: &mut [Node], by: SortBy) {
    match by {
        SortBy::Name => {}
        SortBy::CertExpiry => nodes.sort_by_key(|n| (n.cert_not_after.is_none(), n.cert_not_after)),
    }
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
            sort,
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
            let client = connect.operator().await?;
            let nodes = all_pages(|page_token| {
                let mut client = client.clone();
                async move {
                    let resp = client
                        .list_nodes(v1::ListNodesRequest {
                            role: wire_role(role),
                            online: filter as i32,
                            page_size: 0,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((resp.nodes, resp.next_page_token))
                }
            })
            .await?;
            let mut nodes = nodes
                .into_iter()
                .map(Node::try_from)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CliError::Runtime(format!("server sent an invalid node: {e}")))?;
            sort_nodes(&mut nodes, sort);
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
        NodesCommand::Forget {
            node,
            reason,
            revoke,
            json,
            connect,
        } => {
            let mut client = connect.admin().await?;
            let resp = client
                .forget_node(v1::ForgetNodeRequest {
                    node: node.clone(),
                    reason: reason.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let line = resp
                .audit
                .ok_or_else(|| CliError::Runtime("server sent no audit line".into()))
                .and_then(|a| {
                    AuditRecord::try_from(a).map_err(|e| {
                        CliError::Runtime(format!("server sent an invalid audit line: {e}"))
                    })
                })?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&line).expect("audit line serializes")
                );
            } else {
                println!(
                    "Forgot {} (audit line {}).",
                    for_terminal(&line.target),
                    line.seq
                );
            }
            if revoke {
                let target = certs::Target {
                    agent: Some(node.clone()),
                    operator: None,
                    serial: None,
                };
                let why = if reason.is_empty() {
                    "forgotten".to_owned()
                } else {
                    format!("forgotten: {reason}")
                };
                let revoked = certs::revoke_online(&connect, target, why)
                    .await
                    .map_err(|e| {
                        CliError::Runtime(format!(
                            "{node} is forgotten but not revoked ({e}); run `certs revoke --agent {node}`"
                        ))
                    })?;
                certs::print_revoked(&revoked, json);
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
                        event.kind,
                        for_terminal(&n.name),
                        n.role,
                        if n.online {
                            "online".to_owned()
                        } else {
                            format!("offline ({})", for_terminal(&n.offline_reason))
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_expiry_order_is_nearest_first_unknown_last_ties_by_name() {
        let at = |ms| Some(Timestamp::from_unix_millis(ms));
        let mut nodes: Vec<Node> = [("a", None), ("b", at(30)), ("c", at(10)), ("d", at(30))]
            .into_iter()
            .map(|(name, not_after)| Node {
                cert_not_after: not_after,
                ..Node::new(name, Role::Compute, Timestamp::from_unix_millis(0))
            })
            .collect();
        let names = |nodes: &[Node]| nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        sort_nodes(&mut nodes, SortBy::Name);
        assert_eq!(names(&nodes), ["a", "b", "c", "d"]);
        sort_nodes(&mut nodes, SortBy::CertExpiry);
        assert_eq!(names(&nodes), ["c", "b", "d", "a"]);
    }
}
