//! How a client (agent, operator CLI, test) reaches the server: HTTPS with
//! the rollcall CA as the only trust root and a client certificate.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A TLS endpoint for `url` (`https://host:port`, or `host:port`) that
/// trusts only `ca_pem` and presents `cert_pem`/`key_pem`.
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

/// "transport error" tells nobody anything; the chain of sources usually
/// does ("... tls handshake eof: unknown CA").
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
