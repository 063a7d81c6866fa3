//! The operator's gRPC connection: `--server URL --ca F --cert F --key F`
//! or the ROLLCALL_* environment variables.

use std::path::PathBuf;

use clap::Args;
use rollcall_proto::connect::endpoint;
use rollcall_proto::v1::admin_service_client::AdminServiceClient;
use rollcall_proto::v1::campaign_service_client::CampaignServiceClient;
use rollcall_proto::v1::operator_service_client::OperatorServiceClient;
use tonic::transport::Channel;

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

impl ConnectArgs {
    pub async fn operator(&self) -> Result<OperatorServiceClient<Channel>, CliError> {
        Ok(OperatorServiceClient::new(self.channel().await?))
    }

    pub async fn campaigns(&self) -> Result<CampaignServiceClient<Channel>, CliError> {
        Ok(CampaignServiceClient::new(self.channel().await?))
    }

    pub async fn admin(&self) -> Result<AdminServiceClient<Channel>, CliError> {
        Ok(AdminServiceClient::new(self.channel().await?))
    }

    async fn channel(&self) -> Result<Channel, CliError> {
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
        rollcall_proto::files::check_private_key(key)
            .map_err(|e| CliError::Usage(e.to_string()))?;
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
                rollcall_proto::connect::error_chain(&e)
            ))
        })?;
        Ok(channel)
    }
}

/// Fetches every page of a paginated list: `fetch` gets the page token
/// (empty first) and returns one page's items and the next token.
pub async fn all_pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, CliError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = fetch(token.clone()).await.map_err(super::status_error)?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        if next == token {
            return Err(CliError::Runtime(
                "the server sent the same page token twice; stopping".into(),
            ));
        }
        token = next;
    }
}
