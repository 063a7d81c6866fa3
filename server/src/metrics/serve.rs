//! The `/metrics` listener: HTTP/1.1 (hyper), plain on loopback by
//! default or TLS with the server's own certificate (`[metrics] tls`).
//!
//! `GET /metrics` answers in the OpenMetrics text format when the client
//! accepts it (Prometheus does), else in the Prometheus text format 0.0.4
//! (curl, `promtool check metrics`). Any other path is a 404, another
//! method a 405.
//!
//! Whoever can reach the port must not be able to shut Prometheus out:
//! - at most [`MAX_CONNECTIONS`] connections at once, [`MAX_PER_SOURCE`]
//!   of them from one address; a socket beyond either is closed at once,
//!   counted (`rollcall_metrics_connections_dropped_total`) and warned
//!   about, rate-limited;
//! - one request per connection (no keep-alive, so no pipelining): a
//!   client cannot queue scrapes on a socket it never reads;
//! - the TLS handshake and the request's headers within
//!   [`HEADER_TIMEOUT`], and the whole connection (headers, scrape,
//!   answer written) within [`CONNECTION_DEADLINE`]: an idle socket, a
//!   slowloris or a client that does not read gives its slot back soon;
//! - concurrent scrapes share one look at the fleet and the scheduler,
//!   reused for [`REUSE_FOR`], so a burst of scrapes costs the actors one.
//!
//! A part slower than [`PART_TIMEOUT`] (a scheduler stuck behind a stalled
//! store writer, say) does not fail the scrape: the others are served and
//! `rollcall_scrape_part_ok` says which did not answer. The store's own
//! state is read without asking anyone (its health watch, and the start of
//! the commit in progress kept by the writer in [`Events`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use rollcall_proto::timestamp::Timestamp;

use super::encode::{self, Scrape};
use super::snapshot::{CampaignSnapshot, FleetSnapshot};
use super::{Events, MetricsDrop};
use crate::campaign::CampaignHandle;
use crate::config::MetricsConfig;
use crate::fleet::FleetHandle;
use crate::grpc::tls::Sources as SourceSlots;
use crate::store::StoreHealth;
use crate::throttle::{SharedThrottle, WARN_EVERY};

/// Connections served at once (Prometheus keeps one per scraper).
pub const MAX_CONNECTIONS: usize = 8;
/// Connections served at once from one address: half, so that one
/// address alone cannot take every slot.
pub const MAX_PER_SOURCE: usize = MAX_CONNECTIONS / 2;
/// How long a scrape waits for each part's answer (the fleet's, the
/// scheduler's).
pub const PART_TIMEOUT: Duration = Duration::from_secs(3);
/// A client must finish its TLS handshake, and send its request's
/// headers, within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection ends within this of its accept, whatever it is doing:
/// headers, the scrape's [`PART_TIMEOUT`], and time to read the answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
/// A look at the fleet and the scheduler younger than this is reused.
pub const REUSE_FOR: Duration = Duration::from_secs(1);

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

    /// Serves until `shutdown`, then waits for the connections in
    /// progress (each ends within [`CONNECTION_DEADLINE`]). A failed
    /// accept is logged and retried.
    pub async fn serve(self, sources: Sources, shutdown: CancellationToken) {
        let MetricsServer { listener, tls, .. } = self;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let per_source = SourceSlots::default();
        let looks = Arc::new(Looks::new(sources));
        let warnings = Warnings::default();
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
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
            let events = &looks.sources.events;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                events.metrics_dropped(MetricsDrop::ConnectionLimit);
                if let Some(refused) = warnings.connection_limit.hit() {
                    tracing::warn!(%peer, refused, max = MAX_CONNECTIONS, "Metrics listener busy; closing new connections at once (count since the last such line).");
                }
                continue;
            };
            let Some(source_slot) = per_source.try_take(peer.ip(), MAX_PER_SOURCE) else {
                events.metrics_dropped(MetricsDrop::SourceLimit);
                if let Some(refused) = warnings.source_limit.hit() {
                    tracing::warn!(%peer, refused, max = MAX_PER_SOURCE, "Metrics listener: one address holds its share of connections; closing its new ones at once (count since the last such line).");
                }
                continue;
            };
            let (tls, looks, shutdown) = (tls.clone(), looks.clone(), shutdown.clone());
            tracker.spawn(async move {
                let served = tokio::time::timeout(
                    CONNECTION_DEADLINE,
                    connection(tcp, tls, &looks, &shutdown),
                )
                .await;
                if !matches!(served, Ok(Served::Answered)) {
                    looks.sources.events.metrics_dropped(MetricsDrop::Deadline);
                    tracing::debug!(%peer, "Metrics connection cut: too slow.");
                }
                drop((slot, source_slot));
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// A follower's whole scrape: it holds no fleet, and says only that it
/// follows, so that Prometheus sees it up (the leader exports the rest).
pub const FOLLOWER_SCRAPE: &str = "# HELP rollcall_replica_leading Whether this replica leads (1) or follows (0); only the leader exports the other rollcall_ series.\n# TYPE rollcall_replica_leading gauge\nrollcall_replica_leading 0\n";

impl MetricsServer {
    /// Serves [`FOLLOWER_SCRAPE`] until `shutdown`, on the same listener and
    /// TLS as a leader's, one request per connection under the same
    /// deadline and connection cap.
    pub async fn serve_follower(self, shutdown: CancellationToken) {
        let MetricsServer { listener, tls, .. } = self;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let tracker = TaskTracker::new();
        loop {
            let (tcp, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let (tls, shutdown) = (tls.clone(), shutdown.clone());
            tracker.spawn(async move {
                let _ = tokio::time::timeout(CONNECTION_DEADLINE, async {
                    match tls {
                        None => follower_http(TokioIo::new(tcp), &shutdown).await,
                        Some(tls) => match tls.accept(tcp).await {
                            Ok(stream) => follower_http(TokioIo::new(stream), &shutdown).await,
                            Err(_) => Ok(()),
                        },
                    }
                })
                .await;
                drop(slot);
            });
        }
        drop(listener);
        tracker.close();
        tracker.wait().await;
    }
}

async fn follower_http<I>(io: I, shutdown: &CancellationToken) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
        Ok::<_, Infallible>(if req.uri().path() != "/metrics" {
            plain(
                StatusCode::NOT_FOUND,
                "Not found: rollcall serves /metrics only.\n",
            )
        } else {
            let mut r = plain(StatusCode::OK, FOLLOWER_SCRAPE);
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_0_0_4));
            r
        })
    });
    one_request(io, service, shutdown).await
}

/// Rate-limited warnings of the accept loop.
struct Warnings {
    connection_limit: SharedThrottle,
    source_limit: SharedThrottle,
}

impl Default for Warnings {
    fn default() -> Self {
        Warnings {
            connection_limit: SharedThrottle::new(WARN_EVERY),
            source_limit: SharedThrottle::new(WARN_EVERY),
        }
    }
}

/// How a connection ended, short of its deadline.
enum Served {
    /// Its request was answered, or it closed without one.
    Answered,
    /// The handshake or the headers took longer than [`HEADER_TIMEOUT`].
    TooSlow,
}

async fn connection(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    looks: &Arc<Looks>,
    shutdown: &CancellationToken,
) -> Served {
    let served = match tls {
        None => http(TokioIo::new(tcp), looks.clone(), shutdown).await,
        Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(tcp)).await {
            Ok(Ok(stream)) => http(TokioIo::new(stream), looks.clone(), shutdown).await,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Metrics connection: TLS handshake failed.");
                return Served::Answered;
            }
            Err(_) => return Served::TooSlow,
        },
    };
    match served {
        Ok(()) => Served::Answered,
        Err(e) if e.is_timeout() => Served::TooSlow,
        Err(e) => {
            tracing::debug!(error = %e, "Metrics connection ended with an error.");
            Served::Answered
        }
    }
}

/// Serves one request on one connection (no keep-alive); on shutdown,
/// lets the request in progress finish.
async fn http<I>(io: I, looks: Arc<Looks>, shutdown: &CancellationToken) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    let service = hyper::service::service_fn(move |req| {
        let looks = looks.clone();
        async move { Ok::<_, Infallible>(answer(req, &looks).await) }
    });
    one_request(io, service, shutdown).await
}

/// Serves one request (no keep-alive, headers within [`HEADER_TIMEOUT`]);
/// on shutdown, lets the request in progress finish.
async fn one_request<I, S>(io: I, service: S, shutdown: &CancellationToken) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false);
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

async fn answer(req: Request<Incoming>, looks: &Looks) -> Response<Full<Bytes>> {
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
    let scrape = looks.latest().await;
    let om = encode::openmetrics(&looks.sources.events, scrape);
    let (body, kind) = if wants_openmetrics(req.headers().get(ACCEPT)) {
        (om, OPENMETRICS)
    } else {
        (super::classic::classic(&om), TEXT_0_0_4)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

/// The looks at the parts, shared by concurrent scrapes: one asks, the
/// others wait for its answer and take it while it is younger than
/// [`REUSE_FOR`].
struct Looks {
    sources: Sources,
    latest: Mutex<Option<(Instant, Arc<Scrape>)>>,
    /// Parts that did not answer in time, warned about rate-limited.
    late: SharedThrottle,
}

impl Looks {
    fn new(sources: Sources) -> Self {
        Looks {
            sources,
            latest: Mutex::new(None),
            late: SharedThrottle::new(WARN_EVERY),
        }
    }

    async fn latest(&self) -> Arc<Scrape> {
        let mut latest = self.latest.lock().await;
        if let Some((taken, scrape)) = &*latest
            && taken.elapsed() < REUSE_FOR
        {
            return scrape.clone();
        }
        let s = &self.sources;
        let fleet = async { s.fleet.metrics(s.per_node_max).await.ok() };
        let campaigns = async { s.campaigns.metrics().await.ok() };
        let mut scrape = gather(fleet, campaigns, PART_TIMEOUT).await;
        scrape.store_healthy = s.store.borrow().failing.is_none();
        scrape.commit_running = s.events.commit_running(Timestamp::now());
        if (scrape.fleet.is_none() || scrape.campaigns.is_none())
            && let Some(late) = self.late.hit()
        {
            tracing::warn!(
                fleet = scrape.fleet.is_some(),
                campaigns = scrape.campaigns.is_some(),
                timeout = ?PART_TIMEOUT,
                late,
                "A metrics scrape went without a part that did not answer in time (count since the last such line)."
            );
        }
        let scrape = Arc::new(scrape);
        *latest = Some((Instant::now(), scrape.clone()));
        scrape
    }
}

/// Asks both parts at once, each for at most `timeout`; a part that is
/// gone or late is left out (`None`).
pub async fn gather(
    fleet: impl Future<Output = Option<FleetSnapshot>>,
    campaigns: impl Future<Output = Option<CampaignSnapshot>>,
    timeout: Duration,
) -> Scrape {
    let (fleet, campaigns) = tokio::join!(
        tokio::time::timeout(timeout, fleet),
        tokio::time::timeout(timeout, campaigns)
    );
    Scrape {
        fleet: fleet.ok().flatten(),
        campaigns: campaigns.ok().flatten(),
        ..Scrape::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_part_that_does_not_answer_is_left_out_and_the_others_served() {
        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        let fleet = async { Some(FleetSnapshot::default()) };
        let stuck = std::future::pending::<Option<CampaignSnapshot>>();
        let s = gather(fleet, stuck, timeout).await;
        assert!(s.fleet.is_some(), "the fleet answered");
        assert!(s.campaigns.is_none(), "the scheduler did not");
        let waited = started.elapsed();
        assert!(
            waited >= timeout && waited < timeout * 5,
            "waited for it {waited:?}, no longer than its timeout"
        );

        let gone = async { None::<FleetSnapshot> };
        let campaigns = async { Some(CampaignSnapshot::default()) };
        let s = gather(gone, campaigns, timeout).await;
        assert!(s.fleet.is_none() && s.campaigns.is_some());
    }

    #[tokio::test]
    async fn a_follower_answers_that_it_follows_and_stops_on_its_token() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let config = MetricsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls: false,
            ..MetricsConfig::default()
        };
        let path = std::path::Path::new("/unused");
        let server = MetricsServer::bind(&config, path, path)
            .await
            .expect("binds");
        let addr = server.addr();
        let stop = CancellationToken::new();
        let serving = tokio::spawn(server.serve_follower(stop.clone()));
        let mut tcp = TcpStream::connect(addr).await.expect("connects");
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("asks");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("reads");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(FOLLOWER_SCRAPE), "{answer}");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("ends on its token")
            .expect("no panic");
        assert!(
            TcpListener::bind(addr).await.is_ok(),
            "the address is free again for the leader"
        );
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        const { assert!(MAX_PER_SOURCE < MAX_CONNECTIONS) };
        const {
            assert!(
                HEADER_TIMEOUT.as_secs() + PART_TIMEOUT.as_secs() < CONNECTION_DEADLINE.as_secs()
            )
        };
    }
}
