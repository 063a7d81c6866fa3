use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rollcall_agent::actions::Actions;
use rollcall_agent::collect::{
    Collector, Sources, SystemCollector, containers, disks, reboot, updates,
};
use rollcall_agent::config::{self, AgentConfig};
use rollcall_agent::session::{Session, Settings};
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
    /// Print one full local report and exit; needs no server.
    Once {
        /// Print JSON (the only format for now; kept for scripts that pass it).
        #[arg(long)]
        json: bool,
        /// Configuration file, for its collector settings.
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
    // One thread: the agent is light, and a report every few seconds needs
    // no more.
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
            if let Err(e) = cfg.validate_sources() {
                return usage(&e.to_string());
            }
            let report = runtime.block_on(once(&cfg));
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
            runtime.block_on(run(settings, cfg))
        }
    }
}

async fn run(settings: Settings, cfg: AgentConfig) -> ExitCode {
    tracing::info!(node = %settings.node, role = %settings.role, server = %settings.server, "rollcall-agent starting.");
    let shutdown = CancellationToken::new();
    let sources = Sources::start(&cfg, &shutdown);
    let defs = cfg.actions.definitions(&cfg.updates.root);
    let actions = match Actions::load(defs, &cfg.actions.state_dir, &settings.boot_id) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let session = match Session::new(settings, sources) {
        Ok(s) => s.with_actions(
            actions,
            Duration::from_secs(cfg.actions.default_timeout_secs.into()),
        ),
        Err(e) => return usage(&e),
    };
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
    if tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .is_err()
    {
        tracing::warn!("Session did not end within 5s; exiting anyway.");
    }
    ExitCode::SUCCESS
}

/// One full report, every source read once (the pending-updates check
/// included, which may take a while).
async fn once(cfg: &AgentConfig) -> Report {
    let mut collector = SystemCollector::new(cfg.host.clone());
    // CPU usage is a difference between two samples.
    tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(200))).await;
    let (host, metrics) = collector.host();
    let checks = reboot::RebootChecks {
        root: cfg.reboot.root.clone(),
        needs_restarting: cfg.reboot.needs_restarting,
        sentinel: cfg.reboot.sentinel_command.clone(),
        timeout: Duration::from_secs(cfg.reboot.command_timeout_secs.into()),
    };
    let containers = match cfg.containers.enabled {
        true => Some(containers::snapshot(&cfg.containers.socket, &cfg.containers.labels).await),
        false => None,
    };
    let updates = match cfg.updates.enabled {
        true => Some(
            updates::snapshot(&updates::UpdatesConfig {
                root: cfg.updates.root.clone(),
                interval: Duration::from_secs(cfg.updates.interval_secs.into()),
                timeout: Duration::from_secs(cfg.updates.timeout_secs.into()),
            })
            .await,
        ),
        false => None,
    };
    Report {
        seq: 1,
        collected_at: Timestamp::now(),
        full: true,
        reboot: Some(checks.check(&host.kernel).await),
        network: collector.network(),
        disks: Some(disks::collect(&cfg.disks.mountinfo_path)),
        host: Some(host),
        metrics: Some(metrics),
        containers,
        updates,
    }
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
