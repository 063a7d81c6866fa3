//! The `rollcall-server` command line: `certs` (in `certs.rs`), `serve`,
//! `nodes`, `fleet`, `containers`, `campaign`, `audit`.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
//! Every error is one line naming what is wrong and what to do.

pub mod audit;
pub mod campaign;
pub mod certs;
pub mod client;
pub mod fleet;
pub mod leader;
pub mod nodes;
pub mod render;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

use crate::ServeError;
use crate::config::{self, ServerConfig};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "rollcall-server",
    version,
    about = "rollcall's central server: fleet state, operator API and CLI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make the CA and the server, agent and operator certificates; revoke them.
    Certs(certs::CertsArgs),
    /// Run the server.
    Serve(ServeArgs),
    /// Look at the fleet's nodes (talks to a running server).
    Nodes(nodes::NodesArgs),
    /// The fleet at a glance (talks to a running server).
    Fleet {
        #[command(subcommand)]
        command: fleet::FleetCommand,
    },
    /// Containers across the fleet (talks to a running server).
    Containers {
        #[command(subcommand)]
        command: fleet::ContainersCommand,
    },
    /// Rolling patch campaigns: plan, start, watch, pause, resume, cancel.
    Campaign {
        #[command(subcommand)]
        command: campaign::CampaignCommand,
    },
    /// The audit of operator actions beyond campaigns (talks to a running server).
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// The store: move a server's SQLite database to PostgreSQL.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Configuration file [default: /etc/rollcall/server.toml if it exists].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:7443 (overrides `listen`).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// /metrics address, e.g. 127.0.0.1:9743 (overrides `[metrics] listen`).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Data directory for rollcall.db (overrides `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// CA certificate (overrides tls.ca).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Server certificate (overrides tls.cert).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Server key (overrides tls.key).
    #[arg(long)]
    pub key: Option<PathBuf>,
}

#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or configuration: exit 2.
    Usage(String),
    /// Something failed while doing the work: exit 1.
    Runtime(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Runtime(_) => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Runtime(m) => f.write_str(m),
        }
    }
}

/// A failed call, in one line: "permission denied: ..." rather than a dump.
pub fn status_error(s: tonic::Status) -> CliError {
    // Not the server's answer but the CLI's, about every server it tried.
    if let Some(no_leader) =
        std::error::Error::source(&s).and_then(|e| e.downcast_ref::<leader::NoLeader>())
    {
        return CliError::Runtime(no_leader.to_string());
    }
    let code = format!("{:?}", s.code());
    let mut words = String::new();
    for (i, c) in code.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    CliError::Runtime(format!("server said {words}: {}", s.message()))
}

impl ServeArgs {
    /// The configuration `serve` runs with: file, then flags on top.
    pub fn load(&self) -> Result<ServerConfig, CliError> {
        let usage = |e: config::ConfigError| CliError::Usage(e.to_string());
        let mut cfg = match &self.config {
            Some(path) => ServerConfig::load(path).map_err(usage)?,
            None if std::path::Path::new(config::DEFAULT_PATH).exists() => {
                ServerConfig::load(config::DEFAULT_PATH.as_ref()).map_err(usage)?
            }
            None => ServerConfig::default(),
        };
        if let Some(listen) = self.listen {
            cfg.listen = listen;
        }
        if let Some(listen) = self.metrics_listen {
            cfg.metrics.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            cfg.data_dir = dir.clone();
        }
        for (flag, slot) in [
            (&self.ca, &mut cfg.tls.ca),
            (&self.cert, &mut cfg.tls.cert),
            (&self.key, &mut cfg.tls.key),
        ] {
            if let Some(path) = flag {
                *slot = Some(path.clone());
            }
        }
        cfg.validate().map_err(usage)?;
        Ok(cfg)
    }
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Certs(args) => certs::run(args.command).await,
        Command::Serve(args) => serve(args).await,
        Command::Nodes(args) => nodes::run(args.command).await,
        Command::Fleet { command } => fleet::run_fleet(command).await,
        Command::Containers { command } => fleet::run_containers(command).await,
        Command::Campaign { command } => campaign::run(command).await,
        Command::Audit { command } => audit::run(command).await,
        Command::Store { command } => store::run(command).await,
    }
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let config = args.load()?;
    let mut options = crate::Options::from_env();
    if config.replicated() {
        // A replica follows (answering with the leader's address) until it
        // wins the lease, then starts as the leader.
        let following = CancellationToken::new();
        let follow = crate::replica::follow(&config, following.clone());
        tokio::pin!(follow);
        let won = tokio::select! {
            won = &mut follow => won,
            _ = shutdown_signal() => {
                following.cancel();
                follow.await
            }
        }
        .map_err(start_error)?;
        let Some(won) = won else {
            tracing::info!("Stopped.");
            return Ok(());
        };
        options.leadership = Some(won);
    }
    let mut server = crate::start_with(&config, options)
        .await
        .map_err(start_error)?;
    // A part that ends while the server runs (a panic in the fleet, say)
    // stops the process with exit 1, so that systemd restarts it rather
    // than keep a server that answers nothing.
    let ended = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("Shutting down.");
            Ok(())
        }
        ended = server.stopped() => ended,
    };
    let stopped = server.stop(Duration::from_secs(15)).await;
    ended
        .and(stopped)
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    tracing::info!("Stopped.");
    Ok(())
}

/// A server that cannot start: exit 2 for what an operator must fix.
fn start_error(e: ServeError) -> CliError {
    match e {
        ServeError::Config(_) | ServeError::Tls(_) => CliError::Usage(e.to_string()),
        // A database this binary must not open: a restart cannot fix it.
        ServeError::Store(ref s) if s.is_refusal() => CliError::Usage(e.to_string()),
        _ => CliError::Runtime(e.to_string()),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler only fails outside a Tokio runtime");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
