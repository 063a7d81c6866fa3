//! The server's HTTP client: how it asks Prometheus and Alertmanager and
//! delivers webhooks. One request per connection (HTTP/1.1 over TCP, or
//! TLS through rustls with the ring provider), every request under one
//! deadline from connect to the last byte, every answer's body capped.
//! Monitoring APIs and webhook receivers are few and asked every few
//! seconds at most, so a pool would buy nothing and cost state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::http::uri::{Scheme, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Where Debian, Red Hat and others keep the system's trust roots, for an
/// `https` URL without a CA file of its own.
const SYSTEM_ROOTS: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// What every request of one client keeps to.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// From the start of the connect to the last byte of the answer.
    pub timeout: Duration,
    /// A larger answer is an error, and no more of it is read.
    pub max_body_bytes: usize,
    /// Trust roots for `https` URLs (PEM); the system's when `None`.
    pub ca_file: Option<PathBuf>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_body_bytes: 4 * 1024 * 1024,
            ca_file: None,
        }
    }
}

/// A request that did not get an answer, in one line that names the host.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Names the URL by its origin only: a webhook's path may be its secret.
    #[error("invalid URL {}: {reason}", origin(url))]
    Url { url: String, reason: String },
    #[error("cannot read trust roots from {path}: {reason}")]
    Roots { path: PathBuf, reason: String },
    #[error("{host}: cannot connect: {source}")]
    Connect {
        host: String,
        source: std::io::Error,
    },
    #[error("{host}: TLS handshake failed: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("{host}: no answer within {timeout:?}")]
    Timeout { host: String, timeout: Duration },
    #[error("{host}: answer larger than {limit} bytes")]
    TooLarge { host: String, limit: usize },
    #[error("{host}: {reason}")]
    Protocol { host: String, reason: String },
}

/// An answer: its status and its whole body (at most `max_body_bytes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body's start as one line for an error message: control
    /// characters replaced, cut at `max` characters.
    pub fn body_line(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let line: String = text
            .chars()
            .take(max + 1)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        rollcall_proto::text::cut(&line, max).trim().to_owned()
    }
}

/// A cheap handle; clones share the TLS configuration.
#[derive(Clone)]
pub struct HttpClient {
    options: HttpOptions,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Reads the trust roots once: a CA file that cannot be read is an
    /// error now, not at the first request.
    pub fn new(options: HttpOptions) -> Result<Self, HttpError> {
        let roots = match &options.ca_file {
            Some(path) => roots_from(path)?,
            None => system_roots(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Roots {
            path: options.ca_file.clone().unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            options,
            tls: Arc::new(tls),
        })
    }

    pub async fn get(&self, url: &str) -> Result<HttpResponse, HttpError> {
        self.send(hyper::Method::GET, url, None).await
    }

    pub async fn post_json(&self, url: &str, body: Vec<u8>) -> Result<HttpResponse, HttpError> {
        self.send(hyper::Method::POST, url, Some(body)).await
    }

    pub async fn delete(&self, url: &str) -> Result<HttpResponse, HttpError> {
        self.send(hyper::Method::DELETE, url, None).await
    }

    async fn send(
        &self,
        method: hyper::Method,
        url: &str,
        json: Option<Vec<u8>>,
    ) -> Result<HttpResponse, HttpError> {
        let target = Target::parse(url)?;
        let timeout = self.options.timeout;
        tokio::time::timeout(timeout, self.exchange(&target, method, json))
            .await
            .unwrap_or_else(|_| {
                Err(HttpError::Timeout {
                    host: target.authority.clone(),
                    timeout,
                })
            })
    }

    async fn exchange(
        &self,
        target: &Target,
        method: hyper::Method,
        json: Option<Vec<u8>>,
    ) -> Result<HttpResponse, HttpError> {
        let host = &target.authority;
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|source| HttpError::Connect {
                host: host.clone(),
                source,
            })?;
        // Small requests: Nagle would only add a round trip's delay.
        let _ = tcp.set_nodelay(true);
        if !target.tls {
            return self.request(TokioIo::new(tcp), target, method, json).await;
        }
        let name = ServerName::try_from(target.host.clone()).map_err(|e| HttpError::Url {
            url: target.url.clone(),
            reason: e.to_string(),
        })?;
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| HttpError::Tls {
                host: host.clone(),
                source,
            })?;
        self.request(TokioIo::new(stream), target, method, json)
            .await
    }

    async fn request<S>(
        &self,
        io: TokioIo<S>,
        target: &Target,
        method: hyper::Method,
        json: Option<Vec<u8>>,
    ) -> Result<HttpResponse, HttpError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let host = &target.authority;
        let protocol = |reason: String| HttpError::Protocol {
            host: host.clone(),
            reason,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        // The connection ends with the request (or with `send`'s timeout,
        // which drops the sender and so ends it).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(target.path_and_query.as_str())
            .header(hyper::header::HOST, host.as_str())
            .header(
                hyper::header::USER_AGENT,
                concat!("rollcall-server/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::ACCEPT, "application/json");
        if json.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(json.unwrap_or_default())))
            .map_err(|e| protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| protocol(proto_error_chain(&e)))?;
        let status = response.status().as_u16();
        let limit = self.options.max_body_bytes;
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    HttpError::TooLarge {
                        host: host.clone(),
                        limit,
                    }
                } else {
                    protocol(e.to_string())
                }
            })?
            .to_bytes();
        Ok(HttpResponse {
            status,
            body: body.to_vec(),
        })
    }
}

fn proto_error_chain(e: &hyper::Error) -> String {
    rollcall_proto::connect::error_chain(e)
}

/// A URL taken apart: what to connect to and what to ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    url: String,
    tls: bool,
    host: String,
    port: u16,
    /// `host[:port]` as the URL spells it: the Host header and the name
    /// errors give.
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = |reason: &str| HttpError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information in a URL is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        Ok(Self {
            url: url.to_owned(),
            tls,
            host,
            port,
            authority: authority.as_str().to_owned(),
            path_and_query,
        })
    }
}

/// `scheme://host[:port]` of a URL, with `/…` when more followed: what
/// logs and errors may say of a URL whose path or query may be a secret
/// (a Slack-style webhook).
/// User information (`user:password@`) is left out: it is a secret too.
pub fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let more = if rest.len() > authority.len() && rest != format!("{authority}/") {
        "/…"
    } else {
        ""
    };
    let host = host_of(authority);
    if scheme.is_empty() {
        format!("{host}{more}")
    } else {
        format!("{scheme}://{host}{more}")
    }
}

/// `host[:port]` of a URL's authority: any `user:password@` left out.
pub fn host_of(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// `base` (a configured API address, with or without a path prefix and a
/// trailing slash) joined with `path` (which starts with '/').
pub fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// Percent-encodes a query parameter's value (RFC 3986 unreserved kept).
pub fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Checks a configured base URL once, when the config or spec is read:
/// the error names the key.
pub fn check_url(key: &str, url: &str) -> Result<(), String> {
    Target::parse(url)
        .map(|_| ())
        .map_err(|e| format!("{key}: {e}"))
}

pub(crate) fn roots_from(path: &Path) -> Result<rustls::RootCertStore, HttpError> {
    let error = |reason: String| HttpError::Roots {
        path: path.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| error(e.to_string()))? {
        let cert = cert.map_err(|e| error(e.to_string()))?;
        roots.add(cert).map_err(|e| error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(error("no certificate in the file".to_owned()));
    }
    Ok(roots)
}

/// The first system bundle that reads; none (an `https` URL then fails at
/// its handshake, saying the issuer is unknown).
pub(crate) fn system_roots() -> rustls::RootCertStore {
    SYSTEM_ROOTS
        .iter()
        .find_map(|path| roots_from(Path::new(path)).ok())
        .unwrap_or_else(rustls::RootCertStore::empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn urls_are_taken_apart_or_refused_in_one_line() {
        let t = Target::parse("http://127.0.0.1:9090/api/v1/alerts?x=1").expect("valid");
        assert_eq!((t.host.as_str(), t.port, t.tls), ("127.0.0.1", 9090, false));
        assert_eq!(t.path_and_query, "/api/v1/alerts?x=1");
        assert_eq!(t.authority, "127.0.0.1:9090");
        let t = Target::parse("https://am.example.org").expect("valid");
        assert_eq!((t.port, t.tls, t.path_and_query.as_str()), (443, true, "/"));
        let t = Target::parse("http://[::1]:9093/").expect("valid");
        assert_eq!(t.host, "::1");
        for bad in ["ftp://x/", "localhost:9090", "http://", "http://u:p@h/"] {
            let e = Target::parse(bad).expect_err(bad).to_string();
            assert!(e.starts_with("invalid URL"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_escape("a-b_c.d~"), "a-b_c.d~");
        assert_eq!(
            query_escape("alertname=~\"x|y\""),
            "alertname%3D~%22x%7Cy%22"
        );
        assert_eq!(join("http://h:1/prefix/", "/api"), "http://h:1/prefix/api");
        assert_eq!(
            origin("https://hooks.slack.com/services/T0/B0/SECRET"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(origin("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(origin("https://user:pw@prom:9090"), "https://prom:9090");
        assert_eq!(origin("https://u:p@w@prom/x"), "https://prom/…");
        let e = check_url("url", "https://user:hunter2@prom:9090/").expect_err("user info");
        assert!(
            e.contains("user information")
                && e.contains("https://prom:9090")
                && !e.contains("hunter2"),
            "{e}"
        );
        let e = Target::parse("ftp://h/secret")
            .expect_err("scheme")
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    /// One canned answer on a loopback socket; returns what was asked.
    async fn answer_once(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut asked = vec![0u8; 4096];
            let n = socket.read(&mut asked).await.expect("read");
            asked.truncate(n);
            socket.write_all(answer).await.expect("write");
            let _ = socket.shutdown().await;
            asked
        });
        (url, task)
    }

    fn client(max_body_bytes: usize) -> HttpClient {
        HttpClient::new(HttpOptions {
            timeout: Duration::from_secs(2),
            max_body_bytes,
            ca_file: None,
        })
        .expect("client")
    }

    #[tokio::test]
    async fn a_json_post_gets_its_answer() {
        let (url, task) = answer_once(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n",
        )
        .await;
        let answer = client(1024)
            .post_json(&join(&url, "/api/v2/silences"), b"{}".to_vec())
            .await
            .expect("answer");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"{\"a\":1}");
        let asked = String::from_utf8(task.await.expect("server")).expect("utf-8");
        assert!(
            asked.starts_with("POST /api/v2/silences HTTP/1.1\r\n"),
            "{asked}"
        );
        assert!(asked.contains("content-type: application/json"), "{asked}");
        assert!(asked.ends_with("{}"), "{asked}");
    }

    #[tokio::test]
    async fn a_large_answer_is_cut_off_with_an_error() {
        let (url, _task) = answer_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n0123456789012345678901234567890123456789",
        )
        .await;
        let error = client(16).get(&url).await.expect_err("too large");
        assert!(
            matches!(error, HttpError::TooLarge { limit: 16, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_a_closed_port_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = HttpClient::new(HttpOptions {
            timeout: Duration::from_millis(300),
            ..HttpOptions::default()
        })
        .expect("client");
        let error = client
            .get(&format!("http://{addr}/"))
            .await
            .expect_err("silent");
        assert!(matches!(error, HttpError::Timeout { .. }), "{error}");
        drop(listener);
        let error = client
            .get(&format!("http://{addr}/"))
            .await
            .expect_err("closed");
        assert!(matches!(error, HttpError::Connect { .. }), "{error}");
        assert!(error.to_string().starts_with(&addr.to_string()), "{error}");
    }

    /// An https server on loopback with a certificate of a CA made here
    /// (`certs init`'s own); answers every request with 200 "ok".
    async fn https_server(dir: &Path) -> String {
        crate::pki::init(dir, &[]).expect("certs init");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("server.crt"))
                .expect("cert")
                .collect::<Result<_, _>>()
                .expect("cert");
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let mut asked = vec![0u8; 4096];
                    let _ = tls.read(&mut asked).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        format!("https://localhost:{port}/api/v1/alerts")
    }

    #[tokio::test]
    async fn https_trusts_the_configured_ca_and_refuses_an_unknown_issuer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = https_server(dir.path()).await;
        let trusting = HttpClient::new(HttpOptions {
            ca_file: Some(dir.path().join("ca.crt")),
            ..HttpOptions::default()
        })
        .expect("client");
        let answer = trusting.get(&url).await.expect("https answer");
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (200, b"ok".as_slice())
        );
        let error = client(1024).get(&url).await.expect_err("unknown issuer");
        assert!(matches!(error, HttpError::Tls { .. }), "{error}");
        assert!(error.to_string().contains("localhost"), "{error}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let error = HttpClient::new(HttpOptions {
            ca_file: Some(path),
            ..HttpOptions::default()
        })
        .expect_err("no roots");
        assert!(error.to_string().contains("no certificate"), "{error}");
    }
}
