//! The operator's gRPC connection: `--server URL --ca F --cert F --key F`
//! or the ROLLCALL_* environment variables.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rollcall_proto::v1::operator_service_client::OperatorServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::CliError;

#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    /// Server URL.
    #[arg(
        long,
        env = "ROLLCALL_SERVER",
        default_value = "https://localhost:7443"
    )]
    pub server: String,
    /// CA certificate that signed the server's certificate.
    #[arg(long, env = "ROLLCALL_CA")]
    pub ca: Option<PathBuf>,
    /// Operator certificate (rollcall-server certs issue --operator NAME).
    #[arg(long, env = "ROLLCALL_CERT")]
    pub cert: Option<PathBuf>,
    /// Operator private key.
    #[arg(long, env = "ROLLCALL_KEY")]
    pub key: Option<PathBuf>,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read {what} {}: {e}", path.display())))
}

/// Builds a TLS endpoint for `url` with a client certificate. Shared by the
/// operator CLI, the agent and the tests.
pub fn endpoint(
    url: &str,
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Endpoint, String> {
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    };
    let uri: tonic::transport::Uri = url
        .parse()
        .map_err(|e| format!("invalid server URL {url:?}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("server URL {url:?} has no host"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name(host.trim_start_matches('[').trim_end_matches(']'));
    Endpoint::from_shared(url.clone())
        .map_err(|e| format!("invalid server URL {url:?}: {e}"))?
        .tls_config(tls)
        .map_err(|e| format!("TLS configuration failed: {e}"))
        .map(|e| {
            e.connect_timeout(Duration::from_secs(10))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20))
        })
}

impl ConnectArgs {
    pub async fn operator(&self) -> Result<OperatorServiceClient<Channel>, CliError> {
        let missing = |flag: &str, env: &str| {
            CliError::Usage(format!("no {flag} given: pass {flag} or set {env}"))
        };
        let ca = self
            .ca
            .as_ref()
            .ok_or_else(|| missing("--ca", "ROLLCALL_CA"))?;
        let cert = self
            .cert
            .as_ref()
            .ok_or_else(|| missing("--cert", "ROLLCALL_CERT"))?;
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| missing("--key", "ROLLCALL_KEY"))?;
        let endpoint = endpoint(
            &self.server,
            &read(ca, "CA certificate")?,
            &read(cert, "certificate")?,
            &read(key, "key")?,
        )
        .map_err(CliError::Usage)?;
        let channel = endpoint.connect().await.map_err(|e| {
            CliError::Runtime(format!(
                "cannot connect to {}: {}",
                self.server,
                error_chain(&e)
            ))
        })?;
        Ok(OperatorServiceClient::new(channel))
    }
}

/// "transport error: tls handshake eof" tells nobody anything; the chain
/// of sources usually does.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
