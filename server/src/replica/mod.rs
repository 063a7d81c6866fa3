//! Replicas on one PostgreSQL, one of which leads.
//!
//! A replica starts as a follower ([`follow`]): it serves the follower's
//! face ([`follower`]) and looks at the lease row every `[replica] poll_ms`.
//! When the lease has ended it takes it, with a higher epoch, stops
//! its follower face and starts as the leader: it loads the fleet and the
//! campaigns from PostgreSQL and runs them, while [`Lease::keep`] renews
//! the lease. A leader that cannot renew stops acting before its lease ends
//! (the [`Fence`]) and exits, to come back as a follower (systemd restarts
//! it); every write it makes checks the lease row in its transaction, and
//! every action it sends carries its epoch, which agents check too.

pub mod fence;
pub mod follower;
pub mod lease;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use fence::Fence;
pub use lease::{Attempt, Lease};

use crate::ServeError;
use crate::config::ServerConfig;
use crate::store::pg::Target;

/// A won lease, handed from the follower to the leader it becomes.
#[derive(Clone, Debug)]
pub struct Leadership {
    pub lease: Lease,
    pub fence: Fence,
    /// Where the follower listened: the leader listens there too (the
    /// same port when `listen` asked for port 0).
    pub listen: Option<SocketAddr>,
}

fn lease_of(config: &ServerConfig) -> Result<Lease, ServeError> {
    let target = Target::new(&config.store)?;
    let advertise = config.replica.advertise.as_deref().unwrap_or_default();
    Ok(Lease::new(
        target,
        advertise,
        Duration::from_millis(config.replica.lease_ms),
    ))
}

/// Waits for the lease without serving (an in-process server, a test):
/// takes it when it is free or has ended.
pub async fn acquire(config: &ServerConfig) -> Result<Leadership, ServeError> {
    let lease = lease_of(config)?;
    let poll = Duration::from_millis(config.replica.poll_ms);
    // The schema (with its lease row table) is made before anyone leads.
    prepare(config).await?;
    let mut client = None;
    loop {
        if let Some(won) = attempt(&lease, &mut client).await {
            return Ok(Leadership {
                lease,
                fence: won,
                listen: None,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Makes or updates the schema (with the lease row's table) before anyone
/// looks at the lease.
async fn prepare(config: &ServerConfig) -> Result<(), ServeError> {
    let target = Target::new(&config.store)?;
    tokio::task::spawn_blocking(move || crate::store::pg::prepare(&target))
        .await
        .map_err(|e| {
            crate::store::StoreError::Config(format!("preparing the store failed: {e}"))
        })??;
    Ok(())
}

/// One look at the lease: the fence when it was won.
async fn attempt(lease: &Lease, client: &mut Option<tokio_postgres::Client>) -> Option<Fence> {
    attempt_or_leader(lease, client).await.0
}

/// One look at the lease: the fence when it was won, else who leads
/// (`None`: could not tell).
async fn attempt_or_leader(
    lease: &Lease,
    client: &mut Option<tokio_postgres::Client>,
) -> (Option<Fence>, Option<String>) {
    let mut c = match client.take().filter(|c| !c.is_closed()) {
        Some(c) => c,
        None => match lease.connect("rollcall-replica").await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot reach PostgreSQL to look at the leadership lease; trying again.");
                return (None, None);
            }
        },
    };
    let found = lease.try_acquire(&mut c).await;
    *client = Some(c);
    match found {
        Ok(Attempt::Won(fence)) => (Some(fence), None),
        Ok(Attempt::Held { address }) => (None, Some(address)),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot look at the leadership lease; trying again.");
            (None, None)
        }
    }
}

/// Serves as a follower until this replica wins the lease (then returns
/// it) or `shutdown` (then `None`).
pub async fn follow(
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> Result<Option<Leadership>, ServeError> {
    config.validate()?;
    let lease = lease_of(config)?;
    prepare(config).await?;
    let tls = crate::grpc::tls::server_config(
        config.tls.ca.as_deref().expect("validated"),
        config.tls.cert.as_deref().expect("validated"),
        config.tls.key.as_deref().expect("validated"),
    )?;
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
    let (leader_tx, leader_rx) = watch::channel(String::new());
    let stop = shutdown.child_token();
    // Prometheus scrapes every replica: a follower answers that it follows.
    let metrics = if config.metrics.enabled {
        let (cert, key) = (config.tls.cert.as_deref(), config.tls.key.as_deref());
        let server = crate::metrics::MetricsServer::bind(
            &config.metrics,
            cert.expect("validated"),
            key.expect("validated"),
        )
        .await?;
        Some(tokio::spawn(server.serve_follower(stop.clone())))
    } else {
        None
    };
    let face = tokio::spawn({
        let (config, stop) = (config.clone(), stop.clone());
        async move { follower::serve(listener, tls, &config, leader_rx, stop).await }
    });
    tracing::info!(%addr, holder = lease.holder(), "rollcall-server following: waiting for the leadership lease.");
    let poll = Duration::from_millis(config.replica.poll_ms);
    let mut client = None;
    let won = loop {
        let (won, leader) = attempt_or_leader(&lease, &mut client).await;
        if let Some(fence) = won {
            break Some(fence);
        }
        if let Some(leader) = leader {
            leader_tx.send_if_modified(|current| {
                let changed = *current != leader;
                if changed {
                    tracing::info!(leader = %leader, "Following the leader.");
                    *current = leader;
                }
                changed
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            _ = tokio::time::sleep(poll) => {}
        }
    };
    stop.cancel();
    // The leader binds the same address: the follower's listener must be
    // closed first. A client that keeps its connection open past the
    // GOAWAY does not hold the leader back (the lease runs meanwhile).
    // Each wait is short against the lease, which runs from the moment it
    // was won (the leader's first renewal comes right after).
    let drain = (Duration::from_millis(config.replica.lease_ms) / 8).min(Duration::from_secs(1));
    let abort = face.abort_handle();
    match tokio::time::timeout(drain, face).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "The follower's gRPC server ended with an error.")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "The follower's gRPC server task failed."),
        Err(_) => abort.abort(),
    }
    if let Some(metrics) = metrics {
        let abort = metrics.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), metrics)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    Ok(won.map(|fence| {
        tracing::info!(
            epoch = fence.epoch(),
            "Won the leadership lease; starting as the leader."
        );
        Leadership {
            lease,
            fence,
            listen: Some(addr),
        }
    }))
}
