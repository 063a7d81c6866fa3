use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rollcall_agent::collect::{Collector, SystemCollector};
use rollcall_agent::config::{self, AgentConfig};
use rollcall_agent::session::Session;
use rollcall_proto::model::{Report, Role};
use rollcall_proto::timestamp::Timestamp;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "rollcall-agent",
    version,
    about = "rollcall node agent: reports this node to rollcall-server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connect to the server and report until stopped.
    Run {
        /// Configuration file [default: /etc/rollcall/agent.toml if it exists].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Server URL (overrides `server`).
        #[arg(long)]
        server: Option<String>,
        /// This node's role (overrides `role`).
        #[arg(long)]
        role: Option<Role>,
        /// CA certificate (overrides tls.ca).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Agent certificate (overrides tls.cert).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Agent key (overrides tls.key).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Print one local report and exit; needs no server.
    Once {
        /// Print JSON (the only format for now; kept for scripts that pass it).
        #[arg(long)]
        json: bool,
        /// Configuration file, for its [host] paths.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<PathBuf>) -> Result<AgentConfig, String> {
    match path {
        Some(p) => AgentConfig::load(&p).map_err(|e| e.to_string()),
        None if std::path::Path::new(config::DEFAULT_PATH).exists() => {
            AgentConfig::load(config::DEFAULT_PATH.as_ref()).map_err(|e| e.to_string())
        }
        None => Ok(AgentConfig::default()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("no other crypto provider is installed before main");
    // One thread: the agent is light, and one report every few seconds
    // needs no more.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Once { json: _, config } => {
            let cfg = match load(config) {
                Ok(cfg) => cfg,
                Err(e) => return usage(&e),
            };
            let mut collector = SystemCollector::new(cfg.host.clone());
            // CPU usage is a difference between two samples.
            std::thread::sleep(
                sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(std::time::Duration::from_millis(200)),
            );
            let (host, metrics) = collector.host();
            let report = Report {
                seq: 1,
                collected_at: Timestamp::now(),
                host,
                metrics,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("a report serializes")
            );
            ExitCode::SUCCESS
        }
        Command::Run {
            config,
            server,
            role,
            ca,
            cert,
            key,
        } => {
            let mut cfg = match load(config) {
                Ok(cfg) => cfg,
                Err(e) => return usage(&e),
            };
            if let Some(s) = server {
                cfg.server = s;
            }
            if role.is_some() {
                cfg.role = role;
            }
            for (flag, slot) in [
                (ca, &mut cfg.tls.ca),
                (cert, &mut cfg.tls.cert),
                (key, &mut cfg.tls.key),
            ] {
                if let Some(path) = flag {
                    *slot = path;
                }
            }
            let settings = match cfg.validate().and_then(|()| rollcall_agent::settings(&cfg)) {
                Ok(s) => s,
                Err(e) => return usage(&e.to_string()),
            };
            let collector = SystemCollector::new(cfg.host.clone());
            runtime.block_on(run(settings, collector))
        }
    }
}

async fn run(
    settings: rollcall_agent::session::Settings,
    collector: impl Collector + 'static,
) -> ExitCode {
    tracing::info!(node = %settings.node, role = %settings.role, server = %settings.server, "rollcall-agent starting.");
    let session = match Session::new(settings, collector) {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(session.run(shutdown.clone()));
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install the SIGTERM handler: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("Shutting down.");
    shutdown.cancel();
    if tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .is_err()
    {
        tracing::warn!("Session did not end within 5s; exiting anyway.");
    }
    ExitCode::SUCCESS
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn init_tracing() {
    let spec = std::env::var("ROLLCALL_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter: tracing_subscriber::filter::Targets = spec
        .parse()
        .unwrap_or_else(|_| "info".parse().expect("a level name parses"));
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .with(filter)
        .init();
}
