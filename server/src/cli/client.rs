//! The operator's gRPC connection: `--server URL --ca F --cert F --key F`
//! or the ROLLCALL_* environment variables. Several URLs (replicas): the
//! calls go to the leader among them ([`super::leader`]).

use std::path::{Path, PathBuf};
use std::sync::Once;

use clap::Args;
use rollcall_proto::connect::endpoint;
use rollcall_proto::expiry;
use rollcall_proto::servers::normalize_list;
use rollcall_proto::text::for_terminal;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1::admin_service_client::AdminServiceClient;
use rollcall_proto::v1::campaign_service_client::CampaignServiceClient;
use rollcall_proto::v1::operator_service_client::OperatorServiceClient;
use rollcall_proto::v1::revocation_service_client::RevocationServiceClient;

use super::CliError;
use super::leader::{LeaderChannel, Tls};

#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    /// Server URL; for replicas, each one's (comma-separated, or --server repeated): calls go to the leader.
    #[arg(
        long,
        env = "ROLLCALL_SERVER",
        default_value = "https://localhost:7443",
        value_delimiter = ','
    )]
    pub server: Vec<String>,
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
    pub async fn operator(&self) -> Result<OperatorServiceClient<LeaderChannel>, CliError> {
        Ok(OperatorServiceClient::new(self.channel().await?))
    }

    pub async fn campaigns(&self) -> Result<CampaignServiceClient<LeaderChannel>, CliError> {
        Ok(CampaignServiceClient::new(self.channel().await?))
    }

    pub async fn revocations(&self) -> Result<RevocationServiceClient<LeaderChannel>, CliError> {
        Ok(RevocationServiceClient::new(self.channel().await?))
    }

    pub async fn admin(&self) -> Result<AdminServiceClient<LeaderChannel>, CliError> {
        Ok(AdminServiceClient::new(self.channel().await?))
    }

    async fn channel(&self) -> Result<LeaderChannel, CliError> {
        let servers = normalize_list(&self.server).map_err(CliError::Usage)?;
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
        let cert_pem = read(cert, "certificate")?;
        warn_if_expiring(cert, &cert_pem, Timestamp::now());
        let tls = Tls {
            ca: read(ca, "CA certificate")?,
            cert: cert_pem,
            key: read(key, "key")?,
        };
        // Bad TLS material is a usage error before any connection.
        for url in &servers {
            endpoint(url, &tls.ca, &tls.cert, &tls.key).map_err(CliError::Usage)?;
        }
        LeaderChannel::connect(servers, tls)
            .await
            .map_err(CliError::Runtime)
    }
}

/// Warns on stderr when the operator's own certificate expires within
/// [`expiry::WARN_WITHIN`] (or has expired): one line, never an error, so
/// the command still does its work and exits as it would. Once per process:
/// a command may open more than one channel (`fleet status` asks two
/// services). A file that cannot be parsed is left to the TLS setup to
/// refuse.
fn warn_if_expiring(path: &Path, pem: &[u8], now: Timestamp) {
    static WARNED: Once = Once::new();
    let Ok(not_after) = expiry::not_after_pem(pem) else {
        return;
    };
    let shown = for_terminal(&path.to_string_lossy()).into_owned();
    if let Some(warning) = expiry::operator_warning(&shown, not_after, now) {
        WARNED.call_once(|| eprintln!("{warning}"));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rollcall_proto::identity::{Identity, Kind};

    use super::*;
    use crate::pki::Ca;

    #[test]
    fn the_expiry_is_read_from_a_certificate_the_ca_issued() {
        let ca = Ca::generate("t").expect("ca");
        let who = Identity {
            kind: Kind::Operator,
            name: "alice".into(),
            role: Some(rollcall_proto::identity::Role::Operator),
        };
        let from = time::OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("time");
        let issued = ca
            .issue_client_valid(&who, from, Duration::from_secs(3 * 86_400))
            .expect("issue");
        let not_after = expiry::not_after_pem(issued.cert_pem.as_bytes()).expect("not_after");
        assert_eq!(
            not_after,
            Timestamp::from_unix_millis((1_795_000_000 + 3 * 86_400) * 1_000)
        );
        let now = Timestamp::from_unix_millis(1_795_000_000_000);
        let warning = expiry::operator_warning("alice.crt", not_after, now).expect("a warning");
        assert!(warning.contains("expires in 3 days"), "{warning}");
    }
}
