//! The `/metrics` listener: HTTP/1.1 (hyper), plain on loopback by
//! default or TLS with the server's own certificate (`[metrics] tls`).
//!
//! `GET /metrics` asks the fleet and the scheduler for their snapshots
//! (each under [`SNAPSHOT_TIMEOUT`]) and answers in the OpenMetrics text
//! format when the client accepts it (Prometheus does), else in the
//! Prometheus text format 0.0.4 (curl, `promtool check metrics`). Any
//! other path is a 404, another method a 405. At most
//! [`MAX_CONNECTIONS`] connections are served at once: a socket beyond
//! them is closed at once, as the gRPC listener does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::Events;
use super::encode::{self, Scrape};
use crate::campaign::CampaignHandle;
use crate::config::MetricsConfig;
use crate::fleet::FleetHandle;
use crate::store::StoreHealth;

/// Connections served at once (Prometheus keeps one per scraper).
pub const MAX_CONNECTIONS: usize = 8;
/// How long a scrape waits for the fleet's and the scheduler's answers.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);
/// A client must send a request's headers within this (also while a
/// kept-alive connection is idle between scrapes), and finish its TLS
/// handshake within it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("[metrics] tls: {0}")]
    Tls(#[from] crate::grpc::tls::TlsError),
}

/// What a scrape reads: the parts' handles and the event counters.
#[derive(Clone)]
pub struct Sources {
    pub events: Arc<Events>,
    pub fleet: FleetHandle,
    pub campaigns: CampaignHandle,
    pub store: watch::Receiver<StoreHealth>,
    pub per_node_max: usize,
}

/// A bound metrics listener, not yet serving.
pub struct MetricsServer {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `[metrics] listen` (with TLS from `cert` and `key` when
    /// `[metrics] tls` is set).
    pub async fn bind(
        config: &MetricsConfig,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, MetricsError> {
        let tls = if config.tls {
            let tls = crate::grpc::tls::metrics_server_config(cert, key)?;
            Some(TlsAcceptor::from(Arc::new(tls)))
        } else {
            None
        };
        let listen = |source| MetricsError::Listen {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(listen)?;
        let addr = listener.local_addr().map_err(listen)?;
        Ok(MetricsServer {
            listener,
            tls,
            addr,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`. Returns only then: a failed accept is
    /// logged and retried.
    pub async fn serve(self, sources: Sources, shutdown: CancellationToken) {
        let MetricsServer { listener, tls, .. } = self;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "Metrics listener: accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "Metrics listener busy; connection closed.");
                continue;
            };
            let (tls, sources, shutdown) = (tls.clone(), sources.clone(), shutdown.clone());
            tokio::spawn(async move {
                connection(tcp, tls, sources, shutdown).await;
                drop(slot);
            });
        }
    }
}

async fn connection(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    sources: Sources,
    shutdown: CancellationToken,
) {
    let served = match tls {
        None => http(TokioIo::new(tcp), sources, &shutdown).await,
        Some(tls) => {
            let Ok(Ok(stream)) = tokio::time::timeout(HEADER_TIMEOUT, tls.accept(tcp)).await else {
                return;
            };
            http(TokioIo::new(stream), sources, &shutdown).await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "Metrics connection ended with an error.");
    }
}

/// Serves HTTP/1.1 on one connection; on shutdown, lets the request in
/// progress finish.
async fn http<I>(io: I, sources: Sources, shutdown: &CancellationToken) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    let service = hyper::service::service_fn(move |req| {
        let sources = sources.clone();
        async move { Ok::<_, Infallible>(answer(req, &sources).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let mut conn = std::pin::pin!(builder.serve_connection(io, service));
    tokio::select! {
        done = conn.as_mut() => done,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether the client asked for OpenMetrics (Prometheus lists it first in
/// its `Accept`; curl sends `*/*`).
pub fn wants_openmetrics(accept: Option<&HeaderValue>) -> bool {
    accept
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"))
}

async fn answer(req: Request<Incoming>, sources: &Sources) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "Not found: rollcall serves /metrics only.\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "Use GET.\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(scrape) = scrape(sources).await else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "The fleet or the campaign scheduler did not answer in time.\n",
        );
    };
    let om = encode::openmetrics(&sources.events, scrape);
    let (body, kind) = if wants_openmetrics(req.headers().get(ACCEPT)) {
        (om, OPENMETRICS)
    } else {
        (encode::classic(&om), TEXT_0_0_4)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

/// The snapshots, both asked at once; `None` if either part is gone or
/// slower than [`SNAPSHOT_TIMEOUT`].
async fn scrape(s: &Sources) -> Option<Scrape> {
    let both = async { tokio::join!(s.fleet.metrics(s.per_node_max), s.campaigns.metrics()) };
    match tokio::time::timeout(SNAPSHOT_TIMEOUT, both).await {
        Ok((Ok(fleet), Ok(campaigns))) => Some(Scrape {
            fleet,
            campaigns,
            store_healthy: s.store.borrow().failing.is_none(),
        }),
        Ok(_) => None,
        Err(_) => {
            tracing::warn!(timeout = ?SNAPSHOT_TIMEOUT, "A metrics scrape timed out waiting for the fleet or the scheduler.");
            None
        }
    }
}
