//! Whether the store takes writes: the writer thread says so after every
//! write, and whoever must not act on what cannot be stored (the campaign
//! scheduler) or must tell operators (status, the fleet summary, gRPC
//! health) watches it.

use rollcall_proto::timestamp::Timestamp;
use tokio::sync::watch;

/// The store's last word: `None` while writes succeed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreHealth {
    pub failing: Option<Failure>,
}

/// Writes have failed since `since`; the latest error is `reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub since: Timestamp,
}

impl StoreHealth {
    /// "store failing: REASON", or empty while the store is fine.
    pub fn describe(&self) -> String {
        self.failing
            .as_ref()
            .map(|f| format!("store failing: {}", f.reason))
            .unwrap_or_default()
    }
}

/// The writer's side: records each write's outcome, and wakes watchers only
/// when the store starts or stops failing (or the reason changes).
#[derive(Debug)]
pub(super) struct Reporter {
    tx: watch::Sender<StoreHealth>,
}

impl Reporter {
    pub(super) fn new() -> (Self, watch::Receiver<StoreHealth>) {
        let (tx, rx) = watch::channel(StoreHealth::default());
        (Self { tx }, rx)
    }

    pub(super) fn is_failing(&self) -> bool {
        self.tx.borrow().failing.is_some()
    }

    pub(super) fn succeeded(&self) {
        self.tx.send_if_modified(|h| {
            let Some(f) = h.failing.take() else {
                return false;
            };
            let secs = Timestamp::now().since(f.since).as_secs();
            tracing::warn!(failed_for_secs = secs, last_error = %f.reason, "The store takes writes again.");
            true
        });
    }

    pub(super) fn failed(&self, reason: String) {
        self.tx.send_if_modified(|h| match &mut h.failing {
            Some(f) if f.reason == reason => false,
            Some(f) => {
                f.reason = reason;
                true
            }
            None => {
                tracing::error!(error = %reason, "The store cannot write; campaigns hold until it can.");
                h.failing = Some(Failure {
                    reason,
                    since: Timestamp::now(),
                });
                true
            }
        });
    }
}
