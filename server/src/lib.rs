//! rollcall-server: the fleet's state, the agent sessions, the operator API
//! and the operator CLI.

#![forbid(unsafe_code)]

pub mod audit;
pub mod campaign;
pub mod cli;
pub mod config;
pub mod fleet;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod renewal;
pub mod replica;
pub mod revoke;
pub mod store;
pub mod supervise;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::campaign::{CampaignHandle, Scheduler};
use crate::config::ServerConfig;
use crate::fleet::{Fleet, FleetHandle};
use crate::replica::{Fence, Leadership};
use crate::store::{Backend, Store, Writer};
use crate::supervise::Parts;
pub use crate::supervise::{Ended, PanicSwitch, Part, PartEnded};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Tls(#[from] grpc::tls::TlsError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A part of the server ended while it ran, or failed while stopping.
    #[error(transparent)]
    Ended(#[from] PartEnded),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
}

/// A server that is running; [`RunningServer::stopped`] says when a part
/// of it ended, [`RunningServer::stop`] shuts it down cleanly.
pub struct RunningServer {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// Where `/metrics` is served (`None` with `[metrics] enabled = false`).
    pub metrics_addr: Option<SocketAddr>,
    pub fleet: FleetHandle,
    pub campaigns: CampaignHandle,
    shutdown: CancellationToken,
    /// Every part still running: the gRPC server, the fleet, the
    /// scheduler, the store writer.
    parts: Parts,
    /// Parts that ended badly, first first.
    failures: Vec<PartEnded>,
    /// The lease this replica leads by (on PostgreSQL): released when it
    /// stops cleanly, so that a follower takes over at once.
    leadership: Option<Leadership>,
    /// Its renewal, stopped once every other part has.
    keeper: Option<Keeper>,
}

/// The lease's renewal task (aborted if dropped) and what ends it.
struct Keeper {
    task: tokio_util::task::AbortOnDropHandle<()>,
    done: CancellationToken,
}

/// How a server is started beyond its configuration: what tests inject.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Put the store behind a [`store::Faulty`] adapter that fails every
    /// write while this switch says so (a full disk, without one).
    pub store_faults: Option<store::FaultSwitch>,
    /// Once tripped, the fleet actor panics at the next command it
    /// handles: a part of the server that dies, for the tests of
    /// [`RunningServer::stopped`].
    pub fleet_panic: Option<PanicSwitch>,
    /// How long a certificate signed for a renewing agent is valid,
    /// instead of `[tls] agent_cert_days`: the renewal tests need
    /// certificates that live minutes, not days.
    pub agent_cert_validity: Option<Duration>,
    /// On PostgreSQL: the lease a follower won ([`replica::follow`]); the
    /// server waits for one itself ([`replica::acquire`]) when `None`.
    pub leadership: Option<Leadership>,
}

/// Set (to anything) in `serve`'s environment, it arms
/// [`Options::fleet_panic`] from the start: the one way a test can make the
/// real binary lose a part. Read once, at startup.
pub const FLEET_PANIC_ENV: &str = "ROLLCALL_TEST_FLEET_PANIC";

impl Options {
    /// What `serve` takes from its environment: nothing unless
    /// [`FLEET_PANIC_ENV`] is set.
    pub fn from_env() -> Options {
        let fleet_panic = std::env::var_os(FLEET_PANIC_ENV).map(|_| {
            let switch = PanicSwitch::default();
            switch.trip();
            switch
        });
        Options {
            fleet_panic,
            ..Options::default()
        }
    }
}

/// The CA as renewals need it: loaded from `[tls] ca_key` if set (a key
/// that cannot be read, or that others may read, is a configuration
/// error), else a signer that refuses every renewal (said once the store
/// opened: a server that cannot start says only why).
fn renewal_signer(
    config: &ServerConfig,
    validity: Option<Duration>,
) -> Result<renewal::Signer, ServeError> {
    let Some(ca_key) = &config.tls.ca_key else {
        return Ok(renewal::Signer::off());
    };
    let validity = validity.unwrap_or_else(|| pki::days(config.tls.agent_cert_days));
    let ca = config.tls.ca.as_deref().expect("validated");
    renewal::Signer::load(ca, ca_key, validity)
        .map_err(|e| config::ConfigError::Invalid(format!("[tls] ca_key: {e}")).into())
}

/// Opens the store, starts the fleet and serves gRPC. Returns once the
/// listener is bound.
pub async fn start(config: &ServerConfig) -> Result<RunningServer, ServeError> {
    start_with(config, Options::default()).await
}

/// [`start`], with what tests inject.
pub async fn start_with(
    config: &ServerConfig,
    options: Options,
) -> Result<RunningServer, ServeError> {
    config.validate()?;
    let tls = grpc::tls::server_config(
        config.tls.ca.as_deref().expect("validated"),
        config.tls.cert.as_deref().expect("validated"),
        config.tls.key.as_deref().expect("validated"),
    )?;
    let renewal = Arc::new(renewal_signer(config, options.agent_cert_validity)?);
    let leadership = match (config.replicated(), options.leadership) {
        (false, _) => None,
        (true, Some(won)) => Some(won),
        (true, None) => Some(replica::acquire(config).await?),
    };
    let fence = leadership
        .as_ref()
        .map_or_else(Fence::unfenced, |l| l.fence.clone());
    let shutdown = CancellationToken::new();
    // Renewed from the moment it is won: opening the store and reading a
    // large fleet can take longer than the lease, and a fence that lapsed
    // meanwhile would depose the new leader before it served anything. A
    // task of its own, as a watched future runs only while someone awaits
    // `stopped` (an in-process server may not); aborted when the server is
    // dropped without `stop` or fails to start, as a crash would end it, so
    // that the lease runs out and another replica takes it. It renews until
    // `stop` has stopped every other part (their last writes still need the
    // lease), then the lease is released.
    let keeper = leadership.as_ref().map(|won| {
        let (lease, fence) = (won.lease.clone(), won.fence.clone());
        let done = CancellationToken::new();
        let (lost_tx, lost) = tokio::sync::oneshot::channel();
        let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn({
            let done = done.clone();
            async move {
                if let Err(reason) = lease.keep(fence, done).await {
                    let _ = lost_tx.send(reason);
                }
            }
        }));
        (Keeper { task, done }, lost)
    });
    // Both listeners are bound before the store is opened: a failure to
    // bind is one line, and nothing is accepted before the fleet is loaded.
    let listen = leadership
        .as_ref()
        .and_then(|l| l.listen)
        .unwrap_or(config.listen);
    let listener = bind(listen).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: listen,
        source,
    })?;

    let metrics_server = if config.metrics.enabled {
        let (cert, key) = (config.tls.cert.as_deref(), config.tls.key.as_deref());
        let (cert, key) = (cert.expect("validated"), key.expect("validated"));
        // A follower that just became the leader may still be closing its
        // own metrics listener on this address.
        let mut tries = 0;
        loop {
            match metrics::MetricsServer::bind(&config.metrics, cert, key).await {
                Err(metrics::MetricsError::Listen { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse
                        && leadership.is_some()
                        && tries < 50 =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                bound => break Some(bound?),
            }
        }
    } else {
        None
    };
    // Loaded before the first connection is accepted: a revoked
    // certificate is never let in by a server that just started.
    let revocations = revoke::Revocations::default();
    let Opened {
        store,
        nodes: stored,
        actions,
        campaigns,
        revoked_upto,
    } = tokio::task::spawn_blocking({
        let (config, fence, revocations) = (config.clone(), fence.clone(), revocations.clone());
        move || open_store(&config, fence, &revocations)
    })
    .await
    .map_err(|e| store::StoreError::Config(format!("opening the store failed: {e}")))??;
    tracing::info!(store = %store.describe(), nodes = stored.len(), epoch = fence.epoch(), "Store opened.");
    if config.tls.ca_key.is_none() {
        tracing::info!(
            "No [tls] ca_key: agents cannot renew their certificates through this server."
        );
    }
    let events = Arc::new(metrics::Events::new());

    let mut parts = Parts::default();
    let flush = Duration::from_millis(config.store.flush_interval_ms);
    let timed = Some(events.clone());
    let (writer, writer_handle) = match options.store_faults {
        Some(switch) => Writer::spawn_with_metrics(store::Faulty::new(store, switch), flush, timed),
        None => Writer::spawn_with_metrics(store, flush, timed),
    };
    let keeper = keeper.map(|(keeper, lost)| {
        let shutdown = shutdown.clone();
        parts.watch(Part::Lease, async move {
            tokio::select! {
                lost = lost => match lost {
                    Ok(reason) => Ended::Failed(reason),
                    Err(_) => Ended::Failed("the lease renewal ended".into()),
                },
                // Renewal goes on past the other parts' stop (see above).
                _ = shutdown.cancelled() => Ended::Returned,
            }
        });
        keeper
    });
    parts.watch(Part::StoreWriter, async move {
        match writer.finished().await {
            Ok(()) => Ended::Returned,
            Err(panicked) => Ended::Panicked(panicked.0),
        }
    });
    let wake = Arc::new(Notify::new());
    let (fleet, fleet_task) = Fleet::spawn(
        stored,
        actions,
        writer_handle.clone(),
        config.offline_after(),
        wake.clone(),
        shutdown.clone(),
        options.fleet_panic,
    );
    parts.task(Part::Fleet, fleet_task);
    let (campaigns, scheduler_task) = Scheduler::spawn(
        campaigns,
        fleet.clone(),
        writer_handle.clone(),
        wake,
        Duration::from_millis(config.campaigns.tick_ms),
        campaign::runner::Outlets {
            notifier: notify::Notifier::start(&config.notify, &shutdown)
                .map_err(config::ConfigError::Invalid)?,
            metrics: events.clone(),
        },
        shutdown.clone(),
    );
    parts.task(Part::Scheduler, scheduler_task);
    revoke::spawn_poller(
        writer_handle.clone(),
        revocations.clone(),
        revoked_upto,
        shutdown.clone(),
    );
    let metrics_addr = metrics_server.as_ref().map(metrics::MetricsServer::addr);
    if let Some(server) = metrics_server {
        let sources = metrics::Sources {
            events: events.clone(),
            fleet: fleet.clone(),
            campaigns: campaigns.clone(),
            store: writer_handle.health(),
            per_node_max: config.metrics.per_node_max_nodes,
        };
        let task = tokio::spawn(server.serve(sources, shutdown.clone()));
        parts.task(Part::Metrics, task);
    }
    let serve = tokio::spawn({
        let (config, fleet, campaigns, shutdown) = (
            config.clone(),
            fleet.clone(),
            campaigns.clone(),
            shutdown.clone(),
        );
        async move {
            let backends = grpc::Backends {
                fleet,
                campaigns,
                store: writer_handle,
                revocations,
                renewal,
                metrics: events,
                fence,
            };
            grpc::serve(listener, tls, &config, backends, shutdown).await
        }
    });
    parts.watch(Part::Grpc, async move {
        match serve.await {
            Ok(Ok(())) => Ended::Returned,
            Ok(Err(e)) => Ended::Failed(e.to_string()),
            Err(e) => Ended::of_join(Err(e)),
        }
    });
    tracing::info!(%addr, "rollcall-server listening.");
    if let Some(addr) = metrics_addr {
        tracing::info!(%addr, tls = config.metrics.tls, "Serving /metrics.");
    }
    Ok(RunningServer {
        addr,
        metrics_addr,
        fleet,
        campaigns,
        shutdown,
        parts,
        failures: Vec::new(),
        leadership,
        keeper,
    })
}

/// What a starting server reads from its store, and the store itself.
struct Opened {
    store: Box<dyn Backend>,
    nodes: Vec<fleet::Loaded>,
    actions: Vec<rollcall_proto::model::ActionResult>,
    campaigns: Vec<store::StoredCampaign>,
    revoked_upto: i64,
}

/// Opens SQLite in `data_dir`, or PostgreSQL at `[store] url` with writes
/// fenced by `fence`, and reads what the server starts from. Blocking.
fn open_store(
    config: &ServerConfig,
    fence: Fence,
    revocations: &revoke::Revocations,
) -> Result<Opened, ServeError> {
    let mut store: Box<dyn Backend> = match &config.store.url {
        None => Box::new(Store::open(&config.data_dir)?),
        Some(_) => {
            // Half a lease: a write never idles that long inside its
            // transaction, and a dead leader's lock on the lease row is
            // gone before (or soon after) its lease ends.
            let target = store::pg::Target::new(&config.store)?.ending_idle_transactions_after(
                std::time::Duration::from_millis(config.replica.lease_ms / 2),
            );
            Box::new(store::pg::PgStore::open(&target, fence)?)
        }
    };
    let mut nodes = Vec::new();
    store.each_node(&mut |node| nodes.push(fleet::Loaded::from(node)))?;
    let actions = store.load_actions()?;
    let campaigns = store.load_campaigns()?;
    let revoked_upto = revoke::load(store.as_mut(), revocations)?;
    Ok(Opened {
        store,
        nodes,
        actions,
        campaigns,
        revoked_upto,
    })
}

/// Binds the gRPC listener; a follower that just became the leader may
/// still be closing its own on the same address, so that is waited for.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    let mut tries = 0;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(source) => return Err(ServeError::Listen { addr, source }),
        }
    }
}

impl RunningServer {
    /// Cancel this to begin a shutdown (what SIGTERM does).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves when a part of the server ends: `Ok` once the shutdown
    /// token is cancelled and a part ended as asked, an error naming the
    /// part and why (its panic message, say) when one ended while the
    /// server was not stopping, or failed. Cancel safe. Call
    /// [`RunningServer::stop`] after it either way.
    pub async fn stopped(&mut self) -> Result<(), ServeError> {
        while let Some((part, how)) = self.parts.next().await {
            if let Some(failure) = self.note(part, how) {
                return Err(failure.into());
            }
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Keeps a part's end if it is a failure, and returns it.
    fn note(&mut self, part: Part, how: Ended) -> Option<PartEnded> {
        let failure = PartEnded::judge(part, how, self.shutdown.is_cancelled())?;
        self.failures.push(failure.clone());
        Some(failure)
    }

    /// Stops accepting, ends every session, commits the store and returns.
    /// An error names the first part that ended badly (before the stop or
    /// during it); the others are logged.
    pub async fn stop(self, deadline: Duration) -> Result<(), ServeError> {
        self.shutdown.cancel();
        let RunningServer {
            fleet,
            campaigns,
            mut parts,
            mut failures,
            leadership,
            keeper,
            ..
        } = self;
        drop((fleet, campaigns));
        let finish = async {
            // The fleet and the scheduler end on the token, the writer
            // once the last of its handles is gone (it commits what is
            // left first).
            while let Some((part, how)) = parts.next().await {
                failures.extend(PartEnded::judge(part, how, true));
            }
        };
        let timed_out = tokio::time::timeout(deadline, finish).await.is_err();
        if let Some(keeper) = keeper {
            keeper.done.cancel();
            let _ = keeper.task.await;
        }
        // Every part has stopped acting: a follower may take over now.
        if let Some(won) = leadership.filter(|_| !timed_out) {
            won.lease.release(&won.fence).await;
        }
        let mut failures = failures.into_iter();
        match failures.next() {
            Some(first) => {
                for other in failures {
                    tracing::error!(error = %other, "A part of the server also ended badly.");
                }
                if timed_out {
                    tracing::error!(deadline = ?deadline, "Shutdown did not finish in time.");
                }
                Err(first.into())
            }
            None if timed_out => Err(ServeError::ShutdownTimeout(deadline)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use rollcall_proto::model::NodeFilter;

    use super::*;
    use crate::store::tests::{TempDataDir, temp_data_dir};

    /// A real server on 127.0.0.1:0 with its own CA, whose fleet actor
    /// panics once `fleet_panic` is tripped.
    async fn server(tag: &str, options: Options) -> (RunningServer, TempDataDir) {
        let dir = temp_data_dir(tag);
        let pki = dir.join("pki");
        pki::init(&pki, &[]).expect("certs");
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.join("data"),
            ..Default::default()
        };
        config.metrics.listen = "127.0.0.1:0".parse().expect("addr");
        config.tls.ca = Some(pki.join("ca.crt"));
        config.tls.cert = Some(pki.join("server.crt"));
        config.tls.key = Some(pki.join("server.key"));
        let server = start_with(&config, options).await.expect("starts");
        (server, dir)
    }

    #[tokio::test]
    async fn a_part_that_panics_stops_the_server_with_an_error_naming_it() {
        let switch = PanicSwitch::default();
        let options = Options {
            fleet_panic: Some(switch.clone()),
            ..Options::default()
        };
        let (mut server, dir) = server("supervise-panic", options).await;
        assert!(
            server.fleet.list(NodeFilter::default()).await.is_ok(),
            "the fleet answers before the fault"
        );
        switch.trip();
        assert!(
            server.fleet.list(NodeFilter::default()).await.is_err(),
            "the fleet panicked on this command"
        );
        let ended = tokio::time::timeout(Duration::from_secs(10), server.stopped())
            .await
            .expect("stopped() resolves once a part ended");
        let expected = PartEnded {
            part: Part::Fleet,
            how: Ended::Panicked("injected fault: the fleet actor was told to panic".into()),
        };
        match ended {
            Err(ServeError::Ended(e)) => assert_eq!(e, expected),
            other => panic!("expected the fleet's panic, got {other:?}"),
        }
        assert!(
            !server.shutdown_token().is_cancelled(),
            "nobody asked it to stop"
        );
        // Stopping still stops the rest, and reports the panic too.
        match server.stop(Duration::from_secs(10)).await {
            Err(ServeError::Ended(e)) => assert_eq!(e, expected),
            other => panic!("stop() reports the panic, got {other:?}"),
        }
        drop(dir);
    }

    #[tokio::test]
    async fn a_server_asked_to_stop_stops_cleanly() {
        let (mut server, dir) = server("supervise-clean", Options::default()).await;
        server.shutdown_token().cancel();
        tokio::time::timeout(Duration::from_secs(10), server.stopped())
            .await
            .expect("stopped() resolves after the token")
            .expect("a part that ends as asked is no failure");
        server
            .stop(Duration::from_secs(10))
            .await
            .expect("a clean stop");
        drop(dir);
    }
}
