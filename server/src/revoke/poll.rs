//! The running server's view of revocations written by other processes
//! (`certs revoke` offline, `certs issue --force`): a read of the new rows
//! every [`POLL_EVERY`], through the store writer (the one thread that
//! touches SQLite). One indexed range query; nothing when nothing is new.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Revocations;
use crate::store::{Backend, StoreError, WriterHandle};

/// How soon an offline revocation takes effect on a running server.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// Loads every stored revocation into `revocations`, at startup, before
/// the writer thread owns the store. An error stops the server: one that
/// started without its revocations would let revoked certificates in.
/// Returns the last `seq` loaded, where the poll begins.
pub fn load(store: &mut dyn Backend, revocations: &Revocations) -> Result<i64, StoreError> {
    let rows = store.revocations_since(0)?;
    let last = rows.last().map_or(0, |(seq, _)| *seq);
    revocations.apply(rows.into_iter().map(|(_, r)| r));
    tracing::info!(
        revoked = revocations.len(),
        "Certificate revocations loaded."
    );
    Ok(last)
}

/// Polls for revocations stored after `last` (see [`load`]) until
/// `shutdown`.
pub fn spawn_poller(
    store: WriterHandle,
    revocations: Revocations,
    mut last: i64,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => last = poll(&store, &revocations, last).await,
            }
        }
    })
}

/// Applies what was stored after `seq`; returns the last `seq` seen.
async fn poll(store: &WriterHandle, revocations: &Revocations, seq: i64) -> i64 {
    match store.revocations_since(seq).await {
        Ok(rows) => {
            let last = rows.last().map_or(seq, |(s, _)| *s);
            revocations.apply(rows.into_iter().map(|(_, r)| r));
            last
        }
        Err(e) => {
            // Tried again at the next tick; the revocations already held
            // keep being enforced.
            tracing::warn!(error = %e, "Cannot read certificate revocations from the store.");
            seq
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::tests::temp_data_dir;

    #[test]
    fn revocations_that_cannot_be_read_at_startup_are_an_error_not_an_empty_set() {
        let dir = temp_data_dir("revocations-load");
        let store = Store::open(&dir).expect("open");
        let path = store.path().to_owned();
        drop(store);
        rusqlite::Connection::open(&path)
            .and_then(|c| c.execute_batch("DROP TABLE revocations"))
            .expect("damage");
        let mut store = Store::open(&dir).expect("opens: the damage is in one table");
        let revocations = Revocations::default();
        let err = load(&mut store, &revocations).expect_err("refused");
        assert!(err.to_string().contains("revocations"), "{err}");
    }
}
