//! `fleet status` and `containers list`.

use clap::Subcommand;
use rollcall_proto::model::{ContainerHealth, ContainerState, FleetSummary, NodeContainer};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;

use super::client::{ConnectArgs, all_pages};
use super::render::{render_containers, render_summary};
use super::{CliError, status_error};

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// The fleet at a glance: offline nodes, reboots needed, unhealthy containers, full disks.
    Status {
        /// List filesystems used above this percentage.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=100))]
        fs_threshold: u32,
        /// Show at most this many entries in each list (the totals count all).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Count and list agent certificates that expire within this many days.
        #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=3650))]
        cert_days: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ContainersCommand {
    /// Containers across the fleet, sorted by node then name.
    List {
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// Only this state (created, running, paused, restarting, removing, exited, dead).
        #[arg(long)]
        state: Option<ContainerState>,
        /// Only this health (none, starting, healthy, unhealthy).
        #[arg(long)]
        health: Option<ContainerHealth>,
        /// Only names matching this glob, e.g. 'nova_*'.
        #[arg(long)]
        name: Option<String>,
        /// Print JSON (an array of {node, container}) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

fn invalid(e: impl std::fmt::Display) -> CliError {
    CliError::Runtime(format!("server sent invalid data: {e}"))
}

pub async fn run_fleet(cmd: FleetCommand) -> Result<(), CliError> {
    let FleetCommand::Status {
        fs_threshold,
        limit,
        cert_days,
        json,
        connect,
    } = cmd;
    let mut client = connect.operator().await?;
    let resp = client
        .fleet_summary(v1::FleetSummaryRequest {
            fs_usage_threshold_percent: fs_threshold,
            list_limit: limit,
            cert_expiry_within_days: cert_days,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let summary = FleetSummary::try_from(resp).map_err(invalid)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("summary serializes")
        );
    } else {
        print!("{}", render_summary(&summary, Timestamp::now()));
        print!("{}", super::campaign::left_drained_line(&connect).await);
    }
    Ok(())
}

pub async fn run_containers(cmd: ContainersCommand) -> Result<(), CliError> {
    let ContainersCommand::List {
        node,
        state,
        health,
        name,
        json,
        connect,
    } = cmd;
    let client = connect.operator().await?;
    let req = v1::ListContainersRequest {
        node: node.unwrap_or_default(),
        state: state
            .map_or(
                v1::ContainerState::Unspecified,
                rollcall_proto::convert::container_state_to_wire,
            )
            .into(),
        health: health
            .map_or(
                v1::ContainerHealth::Unspecified,
                rollcall_proto::convert::container_health_to_wire,
            )
            .into(),
        name_pattern: name.unwrap_or_default(),
        page_size: 0,
        page_token: String::new(),
    };
    let containers = all_pages(|page_token| {
        let (mut client, req) = (client.clone(), req.clone());
        async move {
            let resp = client
                .list_containers(v1::ListContainersRequest { page_token, ..req })
                .await?
                .into_inner();
            Ok((resp.containers, resp.next_page_token))
        }
    })
    .await?;
    let containers = containers
        .into_iter()
        .map(NodeContainer::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&containers).expect("containers serialize")
        );
    } else {
        print!("{}", render_containers(&containers, Timestamp::now(), true));
        println!("{} containers", containers.len());
    }
    Ok(())
}
