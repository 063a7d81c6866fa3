//! The fence: whether this replica may act now, and with which epoch.
//!
//! A leader may act (send an action, commit a campaign step) only while
//! its lease is certainly still its own: until the instant its last
//! renewal was *sent* plus the lease, less a margin. PostgreSQL set the
//! lease's end from its own clock when the renewal arrived, later than
//! that, so a follower can only take over after this replica stopped.
//! Nothing extends the fence but a renewal that PostgreSQL confirmed: a
//! stalled lease task cannot keep a replica acting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Kept back from the lease's end for the time between reading the clock
/// and acting on it (a scheduling hiccup, a slow send).
pub const MARGIN: Duration = Duration::from_millis(1_500);

/// The margin kept back from a lease: [`MARGIN`], but never more than a
/// quarter of it. The lease is renewed every quarter (`Lease::keep`), so
/// a fence always outlives the next renewal or two; a fixed 1.5 s would
/// leave a 2 s lease (the shortest `[replica] lease_ms` allows) valid for
/// 0.5 s, ended before its first renewal.
pub fn margin(lease: Duration) -> Duration {
    MARGIN.min(lease / 4)
}

/// Cheap to clone; every clone sees the same lease.
#[derive(Clone, Debug)]
pub struct Fence(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// 0: a server on SQLite, which has no replicas and is never fenced.
    epoch: u64,
    /// This process's name in the lease row.
    holder: String,
    base: Instant,
    /// Milliseconds after `base` until which it may act; 0 once deposed.
    until_ms: AtomicU64,
}

impl Fence {
    /// The one server on SQLite: always may act, with epoch 0.
    pub fn unfenced() -> Fence {
        Fence(Arc::new(Inner {
            epoch: 0,
            holder: String::new(),
            base: Instant::now(),
            until_ms: AtomicU64::new(u64::MAX),
        }))
    }

    /// A leader of `epoch` whose lease was won (or renewed) by a request
    /// sent at `sent`, for `lease`.
    pub fn leading(epoch: u64, holder: &str, sent: Instant, lease: Duration) -> Fence {
        Fence(Arc::new(Inner {
            epoch,
            holder: holder.to_owned(),
            base: sent,
            until_ms: AtomicU64::new(lease.saturating_sub(margin(lease)).as_millis() as u64),
        }))
    }

    pub fn epoch(&self) -> u64 {
        self.0.epoch
    }

    pub fn holder(&self) -> &str {
        &self.0.holder
    }

    /// Whether this replica may act now.
    pub fn valid(&self) -> bool {
        let until = self.0.until_ms.load(Ordering::SeqCst);
        until == u64::MAX || self.elapsed_ms(Instant::now()) < until
    }

    /// When it stops being valid unless renewed (`None`: never, or already).
    pub fn deadline(&self) -> Option<Instant> {
        match self.0.until_ms.load(Ordering::SeqCst) {
            u64::MAX | 0 => None,
            ms => Some(self.0.base + Duration::from_millis(ms)),
        }
    }

    /// A renewal sent at `sent` was confirmed: valid until `sent + lease -
    /// margin` (never shortened by a late confirmation of an older one).
    pub fn renewed(&self, sent: Instant, lease: Duration) {
        let until = self.elapsed_ms(sent) + lease.saturating_sub(margin(lease)).as_millis() as u64;
        let _ = self
            .0
            .until_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                (now != 0 && now != u64::MAX && until > now).then_some(until)
            });
    }

    /// Deposed: never valid again.
    pub fn revoke(&self) {
        self.0.until_ms.store(0, Ordering::SeqCst);
    }

    /// The lease row this replica must still hold for a write to land:
    /// `None` for a server on SQLite.
    pub fn lease_row(&self) -> Option<(&str, i64)> {
        (self.0.epoch != 0).then(|| (self.0.holder.as_str(), self.0.epoch as i64))
    }

    fn elapsed_ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.0.base).as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_ends_a_margin_before_the_lease_and_only_a_renewal_extends_it() {
        let sent = Instant::now();
        let lease = Duration::from_secs(10);
        let fence = Fence::leading(3, "r1", sent, lease);
        assert!(fence.valid());
        assert_eq!(fence.epoch(), 3);
        assert_eq!(fence.deadline(), Some(sent + lease - MARGIN));
        // An older renewal confirmed late never shortens it.
        fence.renewed(sent - Duration::from_secs(5), lease);
        assert_eq!(fence.deadline(), Some(sent + lease - MARGIN));
        fence.renewed(sent + Duration::from_secs(2), lease);
        assert_eq!(
            fence.deadline(),
            Some(sent + Duration::from_secs(2) + lease - MARGIN)
        );
        fence.revoke();
        assert!(!fence.valid());
        fence.renewed(sent + Duration::from_secs(3), lease);
        assert!(!fence.valid(), "a revoked fence stays revoked");
        assert_eq!(fence.deadline(), None);
    }

    #[test]
    fn a_short_lease_keeps_back_a_quarter_and_outlives_its_first_renewal() {
        let sent = Instant::now();
        let lease = Duration::from_secs(2);
        let fence = Fence::leading(1, "r1", sent, lease);
        assert_eq!(fence.deadline(), Some(sent + Duration::from_millis(1_500)));
        // `Lease::keep` renews every quarter of the lease.
        assert!(fence.deadline() > Some(sent + lease / 4));
        assert_eq!(margin(Duration::from_secs(10)), MARGIN);
    }

    #[test]
    fn sqlite_is_never_fenced() {
        let one = Fence::unfenced();
        assert!(one.valid());
        assert_eq!(one.lease_row(), None);
        assert_eq!(one.epoch(), 0);
    }
}
