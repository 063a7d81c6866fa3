//! rollcall-agent: reports its node's state to rollcall-server over one
//! mutual-TLS gRPC session, and (in later versions) runs the actions its own
//! configuration defines when the server asks.

#![forbid(unsafe_code)]

pub mod actions;
pub mod backoff;
pub mod collect;
pub mod config;
pub mod session;

use rollcall_proto::identity::{self, Kind};

use crate::config::{AgentConfig, ConfigError};
use crate::session::Settings;

/// Resolves a validated configuration into session settings: reads the
/// certificate files and takes the node's name from the certificate.
pub fn settings(cfg: &AgentConfig) -> Result<Settings, ConfigError> {
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
    rollcall_proto::connect::endpoint(&cfg.server, &ca_pem, &cert_pem, &key_pem)
        .map_err(ConfigError::Invalid)?;
    let boot_id = std::fs::read_to_string(&cfg.host.boot_id_path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Ok(Settings {
        server: cfg.server.clone(),
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
        backoff_initial: std::time::Duration::from_millis(cfg.reconnect.initial_backoff_ms),
        backoff_max: std::time::Duration::from_secs(cfg.reconnect.max_backoff_secs),
        boot_id,
    })
}
