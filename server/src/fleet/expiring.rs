//! The agent certificates that expire soonest, for the fleet summary:
//! counted over every node, the nearest kept in a heap bounded by the
//! summary's list limit, so building the summary of a large fleet holds at
//! most that many entries and the answer stays the same size.

use std::collections::BinaryHeap;
use std::time::Duration;

use rollcall_proto::model::{CertExpiry, FleetSummary};
use rollcall_proto::timestamp::Timestamp;

/// The window by default (`0` asks for it), and the widest one may ask for.
pub const DEFAULT_WITHIN_DAYS: u32 = 14;
pub const MAX_WITHIN_DAYS: u32 = 3_650;

pub struct Expiring {
    now: Timestamp,
    within_days: u32,
    /// Expiries at or before this are listed.
    until: Timestamp,
    limit: usize,
    /// The nearest `limit` so far; the top is the furthest of them, the one
    /// a nearer expiry replaces. Ties go by name, as every summary list.
    nearest: BinaryHeap<(Timestamp, String)>,
    total: u32,
    expired: u32,
}

impl Expiring {
    pub fn new(now: Timestamp, within_days: u32, limit: usize) -> Self {
        let within_days = match within_days {
            0 => DEFAULT_WITHIN_DAYS,
            n => n.min(MAX_WITHIN_DAYS),
        };
        Self {
            now,
            within_days,
            until: now.saturating_add(Duration::from_secs(u64::from(within_days) * 86_400)),
            limit,
            nearest: BinaryHeap::with_capacity(limit.min(64) + 1),
            total: 0,
            expired: 0,
        }
    }

    /// One node and its certificate's expiry, if the server knows it.
    pub fn see(&mut self, node: &str, not_after: Option<Timestamp>) {
        let Some(at) = not_after.filter(|at| *at <= self.until) else {
            return;
        };
        self.total += 1;
        if at <= self.now {
            self.expired += 1;
        }
        if self.nearest.len() < self.limit {
            self.nearest.push((at, node.to_owned()));
        } else if let Some(mut furthest) = self.nearest.peek_mut()
            && (at, node) < (furthest.0, furthest.1.as_str())
        {
            *furthest = (at, node.to_owned());
        }
    }

    pub fn finish(self, s: &mut FleetSummary) {
        s.cert_expiry_within_days = self.within_days;
        s.certs_expiring_total = self.total;
        s.certs_expired_total = self.expired;
        s.certs_expiring = self
            .nearest
            .into_sorted_vec()
            .into_iter()
            .map(|(not_after, node)| CertExpiry { node, not_after })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn summary(e: Expiring) -> FleetSummary {
        let mut s = FleetSummary::default();
        e.finish(&mut s);
        s
    }

    fn listed(s: &FleetSummary) -> Vec<(&str, i64)> {
        s.certs_expiring
            .iter()
            .map(|c| (c.node.as_str(), c.not_after.unix_millis() / DAY))
            .collect()
    }

    #[test]
    fn the_nearest_expiries_come_first_and_the_totals_count_all() {
        let now = Timestamp::from_unix_millis(100 * DAY);
        let mut e = Expiring::new(now, 0, 3);
        for (node, day) in [
            ("a", Some(130)), // outside the 14 days
            ("b", Some(110)),
            ("c", None), // never recorded
            ("d", Some(98)),
            ("e", Some(105)),
            ("f", Some(103)),
            ("g", Some(99)),
            ("h", Some(114)), // the window's last day is in it
        ] {
            e.see(node, day.map(|d| Timestamp::from_unix_millis(d * DAY)));
        }
        let s = summary(e);
        assert_eq!(s.cert_expiry_within_days, 14);
        assert_eq!((s.certs_expiring_total, s.certs_expired_total), (6, 2));
        assert_eq!(listed(&s), [("d", 98), ("g", 99), ("f", 103)]);
    }

    #[test]
    fn equal_expiries_go_by_name_and_the_window_is_bounded() {
        let now = Timestamp::from_unix_millis(0);
        let mut e = Expiring::new(now, u32::MAX, 2);
        for node in ["n3", "n1", "n2"] {
            e.see(node, Some(Timestamp::from_unix_millis(5 * DAY)));
        }
        let s = summary(e);
        assert_eq!(s.cert_expiry_within_days, MAX_WITHIN_DAYS);
        assert_eq!(s.certs_expiring_total, 3);
        assert_eq!(listed(&s), [("n1", 5), ("n2", 5)]);
    }

    #[test]
    fn a_limit_of_zero_lists_nothing_but_counts() {
        let mut e = Expiring::new(Timestamp::from_unix_millis(0), 1, 0);
        e.see("a", Some(Timestamp::from_unix_millis(1)));
        let s = summary(e);
        assert_eq!(s.certs_expiring_total, 1);
        assert!(s.certs_expiring.is_empty());
    }
}
