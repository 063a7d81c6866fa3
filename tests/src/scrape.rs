//! Scraping a server's `/metrics` as Prometheus would, over plain HTTP or
//! TLS, and checking the text with the real `promtool` (Debian's
//! `prometheus` package). A scrape is one HTTP/1.1 request on its own
//! connection, read to its end: all a test needs, without an HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What Prometheus sends as `Accept` (2.42): OpenMetrics first.
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    /// The value of the series written exactly as `series` (name and
    /// labels as the server writes them), if there is one.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.body.lines().find_map(|l| {
            let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
            rest.parse().ok()
        })
    }

    /// Whether any sample's line starts with `prefix`.
    pub fn has(&self, prefix: &str) -> bool {
        self.body
            .lines()
            .any(|l| !l.starts_with('#') && l.starts_with(prefix))
    }
}

/// `method path` on a new plain connection to `addr`, with `accept`.
pub async fn get(addr: SocketAddr, method: &str, path: &str, accept: &str) -> Answer {
    let tcp = TcpStream::connect(addr).await.expect("connect to /metrics");
    exchange(tcp, method, path, accept).await
}

/// `GET /metrics` on a new plain connection, or `None` when the server
/// closed the connection without an answer (a listener that is full).
pub async fn try_metrics(addr: SocketAddr) -> Option<Answer> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let request =
        "GET /metrics HTTP/1.1\r\nHost: rollcall\r\nAccept: */*\r\nConnection: close\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw).await;
    let raw = String::from_utf8(raw).ok()?;
    raw.contains("\r\n\r\n").then(|| parse(&raw))
}

/// `GET /metrics` in the classic text format, as curl would ask.
pub async fn metrics(addr: SocketAddr) -> Answer {
    let answer = get(addr, "GET", "/metrics", "*/*").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
}

/// `GET /metrics` over TLS, trusting `ca_pem` for the server's name `name`.
pub async fn metrics_tls(addr: SocketAddr, ca_pem: &[u8], name: &str) -> Answer {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(der.expect("CA pem")).expect("CA cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect to /metrics");
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("server name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the metrics listener");
    exchange(tls, "GET", "/metrics", "*/*").await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    accept: &str,
) -> Answer {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: rollcall\r\nAccept: {accept}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify once it answered.
    let _ = stream.read_to_end(&mut raw).await;
    parse(&String::from_utf8(raw).expect("UTF-8 answer"))
}

fn parse(raw: &str) -> Answer {
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_owned()
    };
    Answer {
        status,
        content_type,
        body,
    }
}

fn unchunk(mut chunked: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = chunked.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        chunked = &rest[size + 2..];
    }
    out
}

/// `promtool check metrics` on `text`: its complaints, or `None` when the
/// binary is missing outside CI (said on stderr). In CI a missing promtool
/// is a failure.
pub fn promtool_check(text: &str) -> Option<String> {
    let promtool = crate::monitoring::binary(crate::monitoring::PROMTOOL)?;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() {
        said
    } else {
        format!("{} {said}", out.status)
    })
}
