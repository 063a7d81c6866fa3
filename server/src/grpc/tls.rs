//! Mutual TLS in front of tonic.
//!
//! We accept and handshake ourselves instead of using tonic's TLS so that
//! (a) each handshake runs in its own task under a deadline, so a slow or
//! silent client never delays anyone else's connection, and (b) the peer's
//! rollcall identity is read once per connection and handed to every
//! request on it as a [`Peer`] extension, and (c) sockets still in their
//! handshake are bounded apart from established connections, so silent
//! sockets cannot lock agents out (see [`spawn_acceptor`]), and (d) a
//! revoked certificate is refused at connect and its open connections are
//! cut the moment it is revoked (see [`PeerConn`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rollcall_proto::expiry;
use rollcall_proto::identity::{self, Identity, IdentityError};
use rollcall_proto::timestamp::Timestamp;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::metrics::{ConnectionRefusal, Events};
use crate::revoke::{Revocations, Seat, Serial};
use crate::throttle::{SharedThrottle, WARN_EVERY};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
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
    #[error(transparent)]
    KeyMode(#[from] rollcall_proto::files::KeyModeError),
}

/// Who is on the other end of a connection. Every request carries one.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The identity the CA signed into the client certificate, or why there
    /// is none usable.
    pub identity: Result<Identity, IdentityError>,
    /// When the client certificate expires (its `not_after`), kept on the
    /// node so operators see expiries coming.
    pub cert_not_after: Option<Timestamp>,
    /// Where refusals of this peer's requests are counted and logged.
    warnings: Arc<Warnings>,
}

impl Peer {
    /// Logs a refused request, rate-limited: a certificate of the wrong
    /// kind or role. (Certificates without a usable identity are logged
    /// once per connection, when it is made.)
    pub(super) fn refused(&self, refusal: &super::authz::Refusal) {
        use super::authz::Refusal;
        let (who, needed) = match refusal {
            Refusal::NotAnAgent { who, .. } => (who, "agent"),
            Refusal::Role { who, need, .. } => (who, need.as_str()),
            Refusal::NoIdentity(_) | Refusal::Unknown(_) => return,
        };
        self.warnings.metrics.request_refused();
        if let Some(refused) = self.warnings.wrong_kind.hit() {
            let peer = self.addr.map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(%peer, identity = %who, needed = %needed, refused, "Request refused: certificate of the wrong kind or role (count since the last such line).");
        }
    }
}

/// A TLS connection with its peer, handed to tonic.
///
/// A connection whose certificate is revoked while it is open fails its
/// next read and write: hyper then closes it with every stream on it (an
/// agent's session, an operator's watch), so one token cuts them all
/// without any handler knowing about revocation.
pub struct PeerConn {
    stream: TlsStream<TcpStream>,
    peer: Peer,
    /// Resolves when the certificate is revoked; polled with every read
    /// and write, so the waiting read wakes up for it.
    revoked: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    _seat: Option<Seat>,
    _permit: OwnedSemaphorePermit,
}

impl PeerConn {
    fn check_revoked(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(cut) = &mut self.revoked else {
            return Ok(());
        };
        if cut.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client certificate was revoked",
            ));
        }
        Ok(())
    }
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
        self.check_revoked(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_revoked(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    // A revoked peer that stops reading would park a flush (and the
    // shutdown after it) until keepalive gave up: the cut must not wait
    // for the peer.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_revoked(cx)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.check_revoked(cx).is_err() {
            // Nothing more is owed to it; dropping the socket closes it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_revoked(cx)?;
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

/// The server's certificate chain and private key (the key's mode checked).
pub(crate) fn identity_of(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let show = |p: &Path| p.display().to_string();
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
    rollcall_proto::files::check_private_key(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::Invalid {
        path: show(key),
        message: format!("no usable private key: {e}"),
    })?;
    Ok((chain, key_der))
}

/// TLS for the metrics listener (`[metrics] tls`): the server's own
/// certificate and key, HTTP/1.1, and no client certificate asked for
/// (a scraper has none from our CA).
pub fn metrics_server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let (chain, key_der) = identity_of(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
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
    let (chain, key_der) = identity_of(cert, key)?;
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

/// What the accept loop admits (see `[limits]` in server.toml).
#[derive(Clone, Copy, Debug)]
pub struct AcceptLimits {
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
    /// Handshakes in progress at once from one source (see [`source_key`]).
    pub max_handshakes_per_source: usize,
    /// Established connections at once.
    pub max_connections: usize,
}

impl From<&crate::config::LimitsConfig> for AcceptLimits {
    fn from(limits: &crate::config::LimitsConfig) -> Self {
        AcceptLimits {
            handshake_timeout: Duration::from_secs(limits.handshake_timeout_secs.into()),
            max_handshakes: limits.max_handshakes,
            max_handshakes_per_source: limits.max_handshakes_per_source,
            max_connections: limits.max_connections,
        }
    }
}

/// The warnings of the accept loop and of the requests refused on its
/// connections (a certificate of the wrong kind or role, in [`Peer::refused`]),
/// each rate-limited on its own: a flood of one kind of refusal gives one
/// line per [`WARN_EVERY`] with a count, and does not hide the other kinds.
#[derive(Debug)]
struct Warnings {
    connection_limit: SharedThrottle,
    handshake_limit: SharedThrottle,
    source_limit: SharedThrottle,
    handshake_failed: SharedThrottle,
    no_identity: SharedThrottle,
    wrong_kind: SharedThrottle,
    revoked: SharedThrottle,
    /// Every refusal is also counted (`rollcall_connections_refused_total`;
    /// a refused request in `rollcall_requests_refused_total`).
    metrics: Arc<Events>,
}

impl Warnings {
    fn new(metrics: Arc<Events>) -> Self {
        let t = || SharedThrottle::new(WARN_EVERY);
        Self {
            metrics,
            connection_limit: t(),
            handshake_limit: t(),
            source_limit: t(),
            handshake_failed: t(),
            no_identity: t(),
            wrong_kind: t(),
            revoked: t(),
        }
    }
}

/// What the per-source handshake cap counts by: an IPv4 address, or the /64
/// of an IPv6 address (one host usually holds a whole /64, so counting
/// single v6 addresses would be no cap at all).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Handshakes in progress per source; a [`SourceSlot`] gives its place
/// back when dropped.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sources(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Sources {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map only holds counts that guards give back; a panic while it
        // was held loses nothing worth refusing service for.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn try_take(&self, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut map = self.lock();
        let n = map.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().values().sum()
    }
}

pub(crate) struct SourceSlot {
    sources: Sources,
    key: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.sources.lock();
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Accepts TCP connections and handshakes each in its own task, sending
/// the finished ones to tonic.
///
/// Handshakes in progress are bounded apart from established connections:
/// at most `max_handshakes` at once, `max_handshakes_per_source` from one
/// source, each under `handshake_timeout`; `max_connections` counts only
/// connections whose handshake finished. A socket over any cap is closed at
/// once, never queued: a queue would put a real agent behind every silent
/// socket ahead of it, while a closed agent retries within its backoff. (One
/// whose handshake ends when every established slot is taken is closed then.)
pub fn spawn_acceptor(
    listener: TcpListener,
    config: rustls::ServerConfig,
    limits: AcceptLimits,
    revocations: Revocations,
    metrics: Arc<Events>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Result<PeerConn, io::Error>> {
    let (tx, rx) = mpsc::channel(1_024);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let established = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let sources = Sources::default();
    let warnings = Arc::new(Warnings::new(metrics));
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
            // No TLS work for a connection that could not be kept.
            if established.available_permits() == 0 {
                warnings.metrics.refused(ConnectionRefusal::ConnectionLimit);
                if let Some(refused) = warnings.connection_limit.hit() {
                    tracing::warn!(peer = %addr, refused, max_connections = limits.max_connections, "Connection limit reached; refusing connections (count since the last such line).");
                }
                continue;
            }
            let Ok(handshaking) = handshakes.clone().try_acquire_owned() else {
                warnings.metrics.refused(ConnectionRefusal::HandshakeLimit);
                if let Some(refused) = warnings.handshake_limit.hit() {
                    tracing::warn!(peer = %addr, refused, max_handshakes = limits.max_handshakes, "Handshake limit reached; closing new connections at once (count since the last such line).");
                }
                continue;
            };
            let Some(source_slot) = sources.try_take(addr.ip(), limits.max_handshakes_per_source)
            else {
                warnings.metrics.refused(ConnectionRefusal::SourceLimit);
                if let Some(refused) = warnings.source_limit.hit() {
                    tracing::warn!(peer = %addr, refused, max_handshakes_per_source = limits.max_handshakes_per_source, "Handshake limit of one source address reached; closing its new connections at once (count since the last such line).");
                }
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, established, warnings, revocations) = (
                acceptor.clone(),
                tx.clone(),
                established.clone(),
                warnings.clone(),
                revocations.clone(),
            );
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await;
                // The handshake is over either way: its slots go back now,
                // not when the connection closes.
                drop(handshaking);
                drop(source_slot);
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %addr, error = %e, "TLS handshake refused.");
                        warnings.metrics.refused(ConnectionRefusal::HandshakeFailed);
                        if let Some(failed) = warnings.handshake_failed.hit() {
                            tracing::warn!(peer = %addr, error = %e, failed, "TLS handshake failed (count since the last such line).");
                        }
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %addr, "TLS handshake timed out.");
                        warnings
                            .metrics
                            .refused(ConnectionRefusal::HandshakeTimeout);
                        if let Some(failed) = warnings.handshake_failed.hit() {
                            tracing::warn!(peer = %addr, error = "timed out", failed, "TLS handshake failed (count since the last such line).");
                        }
                        return;
                    }
                };
                let Ok(permit) = established.try_acquire_owned() else {
                    warnings.metrics.refused(ConnectionRefusal::ConnectionLimit);
                    if let Some(refused) = warnings.connection_limit.hit() {
                        tracing::warn!(peer = %addr, refused, max_connections = limits.max_connections, "Connection limit reached; refusing connections (count since the last such line).");
                    }
                    return;
                };
                let leaf = match stream.get_ref().1.peer_certificates() {
                    Some([leaf, ..]) => Some(leaf),
                    _ => None,
                };
                let identity = leaf.map_or(Err(IdentityError::Missing), |l| identity::from_der(l));
                let cert_not_after = leaf.and_then(|l| expiry::not_after_der(l).ok());
                let (identity, seat) =
                    admit(&revocations, leaf.and_then(|l| Serial::of_der(l)), identity);
                match &identity {
                    Err(IdentityError::Revoked(_)) => {
                        warnings.metrics.refused(ConnectionRefusal::Revoked)
                    }
                    Err(_) => warnings.metrics.refused(ConnectionRefusal::NoIdentity),
                    Ok(_) => {}
                }
                if let Err(IdentityError::Revoked(why)) = &identity
                    && let Some(refused) = warnings.revoked.hit()
                {
                    tracing::warn!(peer = %addr, revoked = %rollcall_proto::text::Untrusted(why), refused, "Connection refused: its client certificate is revoked (count since the last such line).");
                }
                // Kept open so that its requests are refused with the
                // reason (a client sees why), but logged here, once per
                // connection and rate-limited.
                if let Err(reason) = &identity
                    && !matches!(reason, IdentityError::Revoked(_))
                    && let Some(refused) = warnings.no_identity.hit()
                {
                    tracing::warn!(peer = %addr, %reason, refused, "Client certificate refused: no usable rollcall identity (count since the last such line).");
                }
                let peer = Peer {
                    addr: Some(addr),
                    identity,
                    cert_not_after,
                    warnings,
                };
                let _ = tx
                    .send(Ok(PeerConn {
                        stream,
                        peer,
                        revoked: seat.as_ref().map(|s| Box::pin(s.cut().cancelled_owned())),
                        _seat: seat,
                        _permit: permit,
                    }))
                    .await;
            });
        }
    });
    rx
}

/// A new connection against the revoked set: a revoked certificate's
/// identity becomes the refusal (its requests are refused with the reason,
/// so the client learns why); any other gets a seat that its revocation
/// will cut.
fn admit(
    revocations: &Revocations,
    serial: Option<Serial>,
    identity: Result<Identity, IdentityError>,
) -> (Result<Identity, IdentityError>, Option<Seat>) {
    let Some(serial) = serial else {
        return (identity, None);
    };
    let uri = identity.as_ref().ok().map(Identity::uri);
    match revocations.admit(&serial, uri.as_deref()) {
        Ok(seat) => (identity, Some(seat)),
        Err(revoked) => {
            let who = uri.map(|u| format!(" ({u})")).unwrap_or_default();
            (
                Err(IdentityError::Revoked(format!(
                    "{}{who}",
                    revoked.describe()
                ))),
                None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_counts_as_its_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(
            source_key(mapped),
            "10.0.0.1".parse::<IpAddr>().expect("ip")
        );
        let v4: IpAddr = "10.0.0.2".parse().expect("ip");
        assert_eq!(source_key(v4), v4);
    }

    #[test]
    fn a_source_holds_at_most_its_cap_and_gets_slots_back_on_drop() {
        let sources = Sources::default();
        let ip: IpAddr = "127.0.0.2".parse().expect("ip");
        let other: IpAddr = "127.0.0.3".parse().expect("ip");
        let held: Vec<SourceSlot> = (0..3).filter_map(|_| sources.try_take(ip, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(sources.try_take(ip, 3).is_none(), "over the cap");
        let o = sources
            .try_take(other, 3)
            .expect("another source is not affected");
        drop(held);
        drop(o);
        assert_eq!(sources.held(), 0);
        assert!(sources.lock().is_empty(), "no entry stays behind");
        assert!(sources.try_take(ip, 3).is_some());
    }
}
