//! The lease row: how replicas on one PostgreSQL agree on one leader.
//!
//! Chosen over a session advisory lock: a lock lives as long as PostgreSQL
//! believes the connection does, and a connection that silently died (a
//! cut network) can keep it for minutes while the leader, unable to tell,
//! goes on acting; a replica that cannot renew a lease knows when it must
//! stop. The row holds the holder (one process), the URL its followers
//! name, the fencing epoch, raised at every change of holder, and the
//! lease's end by PostgreSQL's own clock, so replicas' clocks never have
//! to agree. See [`super::Fence`] for when a leader stops acting.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Fence;
use crate::store::StoreError;
use crate::store::pg::Target;

/// What one look at the lease found.
#[derive(Debug)]
pub enum Attempt {
    /// This replica leads now, with this fence.
    Won(Fence),
    /// Another replica leads, reachable at this URL.
    Held { address: String },
}

/// One replica's side of the lease.
#[derive(Clone, Debug)]
pub struct Lease {
    target: Target,
    /// This process: host, pid and a random part, so that a restarted
    /// replica never mistakes its predecessor's lease for its own.
    holder: String,
    address: String,
    lease: Duration,
}

impl Lease {
    pub fn new(target: Target, address: &str, lease: Duration) -> Lease {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        // A random part: std's hasher keys are random per process.
        let random = {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish() as u32
        };
        let holder = format!("{host}/{}/{random:08x}", std::process::id());
        Lease {
            target,
            holder,
            address: address.to_owned(),
            lease,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn duration(&self) -> Duration {
        self.lease
    }

    /// How long one request to PostgreSQL may take before the lease loop
    /// gives up on it and tries again on a new connection.
    fn patience(&self) -> Duration {
        self.lease / 4
    }

    pub async fn connect(&self, role: &str) -> Result<tokio_postgres::Client, StoreError> {
        tokio::time::timeout(
            self.patience(),
            self.target.connect_async(role, self.patience()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Postgres {
                target: self.target.shown().to_owned(),
                message: format!("no answer within {:?}", self.patience()),
            })
        })
    }

    /// Takes the lease if it is free or has ended; otherwise says who holds it.
    ///
    /// The row is locked `FOR UPDATE` first, which waits for every write
    /// under way (each holds it `FOR KEY SHARE`): a leader's write either
    /// commits before the takeover, and the new leader loads it, or sees the
    /// takeover and fails. Renewals (which change no key) never wait.
    pub async fn try_acquire(
        &self,
        client: &mut tokio_postgres::Client,
    ) -> Result<Attempt, StoreError> {
        // A look without a lock while the lease runs: followers poll every
        // second and must not queue behind (or block) the leader's writes.
        let row = self
            .timed(client.query_opt(
                "SELECT address, expires_at <= now() FROM leader WHERE id = 1",
                &[],
            ))
            .await?;
        if let Some(row) = &row
            && !row.get::<_, bool>(1)
        {
            return Ok(Attempt::Held {
                address: row.get(0),
            });
        }
        let sent = Instant::now();
        let tx = self.timed(client.transaction()).await?;
        self.timed(tx.query_opt("SELECT 1 FROM leader WHERE id = 1 FOR UPDATE", &[]))
            .await?;
        // The epoch is at least the time in milliseconds, so that it never
        // goes back below what agents have seen: not with a new database
        // (`store migrate` into another), nor a restored backup.
        let won = self
            .timed(tx.query_opt(
                "INSERT INTO leader (id, holder, address, epoch, expires_at)
                 VALUES (1, $1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
                   now() + $3 * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,
                   address = excluded.address,
                   epoch = GREATEST(leader.epoch + 1, excluded.epoch),
                   expires_at = excluded.expires_at
                 WHERE leader.expires_at <= now()
                 RETURNING epoch",
                &[&self.holder, &self.address, &self.lease_ms()],
            ))
            .await?;
        let held = match won {
            Some(_) => None,
            None => {
                self.timed(tx.query_opt("SELECT address FROM leader WHERE id = 1", &[]))
                    .await?
            }
        };
        self.timed(tx.commit()).await?;
        if let Some(row) = won {
            let epoch: i64 = row.get(0);
            return Ok(Attempt::Won(Fence::leading(
                u64::try_from(epoch).unwrap_or(0),
                &self.holder,
                sent,
                self.lease,
            )));
        }
        Ok(Attempt::Held {
            address: held.map(|r| r.get(0)).unwrap_or_default(),
        })
    }

    /// Renews the lease until `shutdown`, or until it cannot: then the
    /// fence is revoked and the reason returned. A renewal that fails is
    /// tried again on a new connection while the fence is still valid.
    pub async fn keep(&self, fence: Fence, shutdown: CancellationToken) -> Result<(), String> {
        let mut client: Option<tokio_postgres::Client> = None;
        let every = self.lease / 4;
        // The first renewal at once: the lease was won a moment ago, but
        // handing over from the follower may have taken part of it.
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(every) => {}
                }
            }
            if !fence.valid() {
                fence.revoke();
                return Err(format!(
                    "the leadership lease (epoch {}) could not be renewed before it ended",
                    fence.epoch()
                ));
            }
            let c = match client.take().filter(|c| !c.is_closed()) {
                Some(c) => c,
                None => match self.connect("rollcall-lease").await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, epoch = fence.epoch(), "Cannot reach PostgreSQL to renew the leadership lease; trying again.");
                        continue;
                    }
                },
            };
            match self.renew(&c, &fence).await {
                Ok(true) => client = Some(c),
                Ok(false) => {
                    fence.revoke();
                    return Err(format!(
                        "the leadership lease (epoch {}) ended or was taken over by another replica",
                        fence.epoch()
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, epoch = fence.epoch(), "The leadership lease could not be renewed; trying again.");
                }
            }
        }
    }

    /// One renewal: `Ok(false)` when the row is no longer this replica's.
    async fn renew(
        &self,
        client: &tokio_postgres::Client,
        fence: &Fence,
    ) -> Result<bool, StoreError> {
        let Some((holder, epoch)) = fence.lease_row() else {
            return Ok(true);
        };
        let sent = Instant::now();
        let renewed = self
            .timed(client.execute(
                "UPDATE leader SET expires_at = now() + $3 * interval '1 millisecond'
                 WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > now()",
                &[&holder, &epoch, &self.lease_ms()],
            ))
            .await?;
        if renewed == 1 {
            fence.renewed(sent, self.lease);
        }
        Ok(renewed == 1)
    }

    /// Ends the lease at once (a clean stop, after the server stopped
    /// acting), so that a follower takes over without waiting it out.
    pub async fn release(&self, fence: &Fence) {
        let Some((holder, epoch)) = fence.lease_row() else {
            return;
        };
        fence.revoke();
        let released = async {
            let client = self.connect("rollcall-lease").await?;
            self.timed(client.execute(
                "UPDATE leader SET expires_at = now() WHERE id = 1 AND holder = $1 AND epoch = $2",
                &[&holder, &epoch],
            ))
            .await
        };
        match released.await {
            Ok(_) => tracing::info!(epoch, "Leadership lease released."),
            Err(e) => {
                tracing::warn!(epoch, error = %e, "Cannot release the leadership lease; a follower takes over when it ends.")
            }
        }
    }

    fn lease_ms(&self) -> f64 {
        self.lease.as_millis() as f64
    }

    async fn timed<T>(
        &self,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.patience(), query).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(crate::store::pg::pg_error(&self.target, e)),
            Err(_) => Err(StoreError::Postgres {
                target: self.target.shown().to_owned(),
                message: format!("no answer within {:?}", self.patience()),
            }),
        }
    }
}
