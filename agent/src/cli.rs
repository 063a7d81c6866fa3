//! The `rollcall-agent` command line: `run`, `once` and `cert-status`.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
//! Every error is one line naming what is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use rollcall_proto::model::Role;
use rollcall_proto::timestamp::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::config::{self, AgentConfig, ConfigError};
use crate::{StartError, once};

#[derive(Parser, Debug)]
#[command(
    name = "rollcall-agent",
    version,
    about = "rollcall node agent: reports this node to rollcall-server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Connect to the server and report until stopped.
    Run {
        /// Configuration file [default: /etc/rollcall/agent.toml if it exists].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Server URL (overrides `server`); repeat it, or separate URLs with commas, for replicas.
        #[arg(long, value_delimiter = ',')]
        server: Vec<String>,
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
    /// Show the agent certificate's life: node, expiry, when it renews.
    ///
    /// Exits 0 also when the certificate is missing, unusable or expired: that is what it reports.
    CertStatus {
        /// Print JSON (present, usable, node, not_before, not_after, expires_in_secs, renew_at, error).
        #[arg(long)]
        json: bool,
        /// Configuration file, for tls.cert [default: /etc/rollcall/agent.toml if it exists].
        #[arg(long)]
        config: Option<PathBuf>,
        /// The certificate file (overrides tls.cert).
        #[arg(long)]
        cert: Option<PathBuf>,
    },
}

/// How long the session may take to end after SIGTERM or SIGINT.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot install the SIGTERM handler: {0}")]
    Signal(std::io::Error),
    #[error("the session ended unexpectedly: {0}")]
    Session(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Start(StartError::Config(_)) => 2,
            _ => 1,
        }
    }
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Once { json: _, config } => {
            let cfg = load(config.as_deref())?;
            cfg.validate_sources()?;
            let report = once::report(&cfg).await;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("a report serializes")
            );
            Ok(())
        }
        Command::CertStatus { json, config, cert } => {
            let cert = match cert {
                Some(path) => path,
                None => load(config.as_deref())?.tls.cert,
            };
            let status = crate::cert_status::status(&cert, Timestamp::now());
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).expect("a status serializes")
                );
            } else {
                println!("{}", status.line());
            }
            Ok(())
        }
        Command::Run {
            config,
            server,
            role,
            ca,
            cert,
            key,
        } => {
            let mut cfg = load(config.as_deref())?;
            if !server.is_empty() {
                cfg.server = server;
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
            cfg.validate()?;
            run_until_signal(&cfg).await
        }
    }
}

/// The configuration file: the one named, else the default path if it
/// exists, else the defaults.
fn load(path: Option<&Path>) -> Result<AgentConfig, ConfigError> {
    match path {
        Some(p) => AgentConfig::load(p),
        None if Path::new(config::DEFAULT_PATH).exists() => {
            AgentConfig::load(config::DEFAULT_PATH.as_ref())
        }
        None => Ok(AgentConfig::default()),
    }
}

/// Runs the agent until SIGTERM or SIGINT, then gives the session
/// [`SHUTDOWN_DEADLINE`] to end.
async fn run_until_signal(cfg: &AgentConfig) -> Result<(), CliError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(CliError::Signal)?;
    let shutdown = CancellationToken::new();
    let mut session = crate::start(cfg, &shutdown)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        // It ends only when told to; a panic must not leave the process
        // up and silent.
        ended = &mut session => {
            shutdown.cancel();
            return Err(CliError::Session(match ended {
                Err(e) => e.to_string(),
                Ok(_) => "it returned before it was told to stop".into(),
            }));
        }
    }
    tracing::info!("Shutting down.");
    shutdown.cancel();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, session)
        .await
        .is_err()
    {
        tracing::warn!(
            deadline_secs = SHUTDOWN_DEADLINE.as_secs(),
            "Session did not end within its deadline; exiting anyway."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_may_be_repeated_or_comma_separated() {
        let cli = Cli::try_parse_from([
            "rollcall-agent",
            "run",
            "--server",
            "https://ctl1:7443,https://ctl2:7443",
            "--server",
            "https://ctl3:7443",
        ])
        .expect("parses");
        let Command::Run { server, .. } = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            server,
            [
                "https://ctl1:7443",
                "https://ctl2:7443",
                "https://ctl3:7443"
            ]
        );
    }

    #[test]
    fn configuration_errors_exit_2_and_runtime_failures_1() {
        let config = || ConfigError::Invalid("no role".into());
        assert_eq!(CliError::from(config()).exit_code(), 2);
        assert_eq!(
            CliError::from(StartError::from(config())).exit_code(),
            2,
            "a certificate that cannot be read is configuration"
        );
        let dir = std::env::temp_dir().join(format!("rollcall-cli-{}", std::process::id()));
        std::fs::write(&dir, "a file, not a directory").expect("write");
        let store = crate::actions::Actions::load(Default::default(), &dir, "b")
            .err()
            .expect("a file is no store");
        std::fs::remove_file(&dir).ok();
        assert_eq!(CliError::from(StartError::from(store)).exit_code(), 1);
        assert_eq!(CliError::Session("panicked".into()).exit_code(), 1);
    }
}
