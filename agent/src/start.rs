//! From a checked configuration to a running session: the certificates
//! read and the node's name taken from them, this boot's id read once, the
//! action records loaded, the collectors started.

use std::time::Duration;

use rollcall_proto::identity::{self, Kind};
use tokio_util::sync::CancellationToken;

use crate::actions::{Actions, StoreError};
use crate::collect::Sources;
use crate::collect::boot_id::BootId;
use crate::config::{AgentConfig, ConfigError};
use crate::renew::CertFiles;
use crate::session::{Session, Settings, Stats};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// What the configuration names is unusable: exit 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The action records cannot be read or written: exit 1.
    #[error(transparent)]
    Actions(#[from] StoreError),
}

/// Starts the agent for a configuration that passed
/// [`AgentConfig::validate`]. The session runs until `shutdown` and its
/// task returns what it sent.
pub fn start(
    cfg: &AgentConfig,
    shutdown: &CancellationToken,
) -> Result<tokio::task::JoinHandle<Stats>, StartError> {
    let boot = BootId::read(&cfg.host.boot_id_path);
    if let Err(e) = boot.known() {
        tracing::warn!(error = %e, "This boot's id is unknown: reboots are refused, and every reboot check says why.");
    }
    let settings = settings(cfg, &boot)?;
    let actions = Actions::load(
        cfg.actions.definitions(&cfg.updates.root),
        &cfg.actions.state_dir,
        boot.clone(),
    )?;
    tracing::info!(node = %settings.node, role = %settings.role, servers = ?settings.servers, "rollcall-agent starting.");
    let sources = Sources::start(cfg, &boot, shutdown);
    let session = Session::new(settings, sources)?.with_actions(
        actions,
        Duration::from_secs(cfg.actions.default_timeout_secs.into()),
    );
    Ok(tokio::spawn(session.run(shutdown.clone())))
}

/// Resolves a validated configuration into session settings: reads the
/// certificate files and takes the node's name from the certificate.
pub fn settings(cfg: &AgentConfig, boot: &BootId) -> Result<Settings, ConfigError> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            ConfigError::Invalid(format!("cannot read {what} {}: {e}", path.display()))
        })
    };
    let ca_pem = read(&cfg.tls.ca, "CA certificate")?;
    let cert_pem = read(&cfg.tls.cert, "agent certificate")?;
    let key_pem = read(&cfg.tls.key, "agent key")?;
    let text = String::from_utf8_lossy(&cert_pem);
    let who = identity::from_pem(&text)
        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", cfg.tls.cert.display())))?;
    if who.kind != Kind::Agent {
        return Err(ConfigError::Invalid(format!(
            "{} is a {} certificate; the agent needs an agent certificate (certs issue --agent NODE)",
            cfg.tls.cert.display(),
            who.kind
        )));
    }
    // The URLs and the TLS material are checked together by `Session::new`.
    Ok(Settings {
        servers: cfg.server.clone(),
        node: who.name,
        role: cfg
            .role
            .ok_or_else(|| ConfigError::Invalid("no role".into()))?,
        labels: cfg.labels.clone(),
        ca_pem,
        cert_pem,
        key_pem,
        report_interval: cfg.report_interval(),
        full_every: cfg.report.full_every,
        backoff_initial: Duration::from_millis(cfg.reconnect.initial_backoff_ms),
        backoff_max: Duration::from_secs(cfg.reconnect.max_backoff_secs),
        boot_id: boot.wire().to_owned(),
        renew: Some(CertFiles {
            cert: cfg.tls.cert.clone(),
            key: cfg.tls.key.clone(),
        }),
    })
}
