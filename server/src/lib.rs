//! rollcall-server: the fleet's state, the agent sessions, the operator API
//! and the operator CLI.

#![forbid(unsafe_code)]

pub mod campaign;
pub mod cli;
pub mod config;
pub mod fleet;
pub mod grpc;
pub mod pki;
pub mod store;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::campaign::{CampaignHandle, Scheduler};
use crate::config::ServerConfig;
use crate::fleet::{Fleet, FleetHandle};
use crate::store::{Store, Writer};

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
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Campaigns(String),
    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
}

/// A server that is running; [`RunningServer::stop`] shuts it down cleanly.
pub struct RunningServer {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    pub fleet: FleetHandle,
    pub campaigns: CampaignHandle,
    shutdown: CancellationToken,
    serve: JoinHandle<Result<(), tonic::transport::Error>>,
    fleet_task: JoinHandle<()>,
    scheduler_task: JoinHandle<()>,
    writer: Writer,
}

/// How a server is started beyond its configuration: what tests inject.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Put the store behind a [`store::Faulty`] adapter that fails every
    /// write while this switch says so (a full disk, without one).
    pub store_faults: Option<store::FaultSwitch>,
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
    let store = Store::open(&config.data_dir)?;
    let mut stored = Vec::new();
    store.each_node(|node| stored.push(fleet::Loaded::from(node)))?;
    let actions = store.load_actions()?;
    let campaigns = store.load_campaigns()?;
    tracing::info!(db = %store.path().display(), nodes = stored.len(), "Store opened.");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;

    let shutdown = CancellationToken::new();
    let flush = Duration::from_millis(config.store.flush_interval_ms);
    let (writer, writer_handle) = match options.store_faults {
        Some(switch) => Writer::spawn(store::Faulty::new(store, switch), flush),
        None => Writer::spawn(store, flush),
    };
    let wake = Arc::new(Notify::new());
    let (fleet, fleet_task) = Fleet::spawn(
        stored,
        actions,
        writer_handle.clone(),
        config.offline_after(),
        wake.clone(),
        shutdown.clone(),
    );
    let (campaigns, scheduler_task) = Scheduler::spawn(
        campaigns,
        fleet.clone(),
        writer_handle.clone(),
        wake,
        Duration::from_millis(config.campaigns.tick_ms),
        shutdown.clone(),
    )
    .map_err(ServeError::Campaigns)?;
    let serve = tokio::spawn({
        let (config, fleet, campaigns, shutdown) = (
            config.clone(),
            fleet.clone(),
            campaigns.clone(),
            shutdown.clone(),
        );
        async move {
            grpc::serve(
                listener,
                tls,
                &config,
                fleet,
                campaigns,
                writer_handle,
                shutdown,
            )
            .await
        }
    });
    tracing::info!(%addr, "rollcall-server listening.");
    Ok(RunningServer {
        addr,
        fleet,
        campaigns,
        shutdown,
        serve,
        fleet_task,
        scheduler_task,
        writer,
    })
}

impl RunningServer {
    /// Cancel this to begin a shutdown (what SIGTERM does).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves when the gRPC server stops on its own (an error) or after
    /// the shutdown token is cancelled.
    pub async fn stopped(&mut self) {
        let _ = (&mut self.serve).await;
    }

    /// Stops accepting, ends every session, commits the store and returns.
    pub async fn stop(self, deadline: Duration) -> Result<(), ServeError> {
        self.shutdown.cancel();
        let RunningServer {
            fleet,
            campaigns,
            serve,
            fleet_task,
            scheduler_task,
            writer,
            ..
        } = self;
        let finish = async move {
            let served = serve.await;
            let _ = scheduler_task.await;
            let _ = fleet_task.await;
            drop(campaigns);
            drop(fleet);
            // The writer commits what is left once the last handle is gone.
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
            match served {
                Ok(result) => result.map_err(ServeError::from),
                Err(_) => Ok(()),
            }
        };
        tokio::time::timeout(deadline, finish)
            .await
            .map_err(|_| ServeError::ShutdownTimeout(deadline))?
    }
}
