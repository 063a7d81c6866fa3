//! Mutual TLS in front of tonic.
//!
//! We accept and handshake ourselves instead of using tonic's TLS so that
//! (a) each handshake runs in its own task under a deadline, so a slow or
//! silent client never delays anyone else's connection, and (b) the peer's
//! rollcall identity is read once per connection and handed to every
//! request on it as a [`Peer`] extension.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rollcall_proto::identity::{self, Identity, IdentityError, Kind};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} holds no {what} in PEM form")]
    Empty { path: String, what: &'static str },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Who is on the other end of a connection. Every request carries one.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The identity the CA signed into the client certificate, or why there
    /// is none usable.
    pub identity: Result<Identity, IdentityError>,
}

impl Peer {
    pub fn require(&self, kind: Kind) -> Result<&Identity, tonic::Status> {
        let id = self.identity.as_ref().map_err(|e| {
            tonic::Status::unauthenticated(format!("client certificate not usable: {e}"))
        })?;
        if id.kind != kind {
            let msg = match kind {
                Kind::Agent => {
                    format!("{id} cannot open an agent session: an agent certificate is required")
                }
                Kind::Operator => {
                    format!("{id} cannot use the operator API: an operator certificate is required")
                }
            };
            return Err(tonic::Status::permission_denied(msg));
        }
        Ok(id)
    }
}

/// Reads the peer from a request's extensions (set for every request).
pub fn peer<T>(req: &tonic::Request<T>) -> Result<&Peer, tonic::Status> {
    req.extensions()
        .get::<Peer>()
        .ok_or_else(|| tonic::Status::unauthenticated("no TLS peer information"))
}

/// A TLS connection with its peer, handed to tonic.
pub struct PeerConn {
    stream: TlsStream<TcpStream>,
    peer: Peer,
    _permit: OwnedSemaphorePermit,
}

impl Connected for PeerConn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The server's rustls configuration: our certificate, and client
/// certificates required and verified against the rollcall CA.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let show = |p: &Path| p.display().to_string();
    let ca_pem = read(ca)?;
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&ca_pem) {
        let der = der.map_err(|e| TlsError::Invalid {
            path: show(ca),
            message: e.to_string(),
        })?;
        roots.add(der).map_err(|e| TlsError::Invalid {
            path: show(ca),
            message: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty {
            path: show(ca),
            what: "CA certificate",
        });
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            path: show(cert),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Empty {
            path: show(cert),
            what: "certificate",
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::Invalid {
        path: show(key),
        message: format!("no usable private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Invalid {
            path: show(ca),
            message: e.to_string(),
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// TLS handshakes in progress at once. When every agent of a large fleet
/// reconnects at the same moment (a server restart), the others wait their
/// turn instead of all holding handshake state together; a handshake takes
/// about a millisecond of CPU, so the queue moves at thousands a second.
const MAX_HANDSHAKES: usize = 128;

/// Accepts TCP connections, handshakes each in its own task under
/// `handshake_timeout`, at most [`MAX_HANDSHAKES`] at once, and sends the
/// finished ones to tonic.
pub fn spawn_acceptor(
    listener: TcpListener,
    config: rustls::ServerConfig,
    handshake_timeout: Duration,
    max_connections: usize,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Result<PeerConn, io::Error>> {
    let (tx, rx) = mpsc::channel(1_024);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let slots = Arc::new(Semaphore::new(max_connections));
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, addr) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin, and keep serving the connections we have.
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(peer = %addr, max_connections, "Connection limit reached; refusing connection.");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, handshakes) = (acceptor.clone(), tx.clone(), handshakes.clone());
            tokio::spawn(async move {
                // A socket waiting here costs a descriptor and a small task;
                // a handshake in progress costs tens of kilobytes.
                let Ok(_handshaking) = handshakes.acquire_owned().await else {
                    return;
                };
                let stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::warn!(peer = %addr, error = %e, "TLS handshake refused.");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(peer = %addr, "TLS handshake timed out.");
                            return;
                        }
                    };
                let identity = match stream.get_ref().1.peer_certificates() {
                    Some([leaf, ..]) => identity::from_der(leaf),
                    _ => Err(IdentityError::Missing),
                };
                let peer = Peer {
                    addr: Some(addr),
                    identity,
                };
                let _ = tx
                    .send(Ok(PeerConn {
                        stream,
                        peer,
                        _permit: permit,
                    }))
                    .await;
            });
        }
    });
    rx
}
