//! Rate-limited warnings: one log line per interval for a kind of event,
//! carrying how many events it stands for.
//!
//! A flood (thousands of refused sockets, one agent sending bad reports
//! many times a second) must not turn into a flood of log lines: 86,855
//! "Connection limit reached" lines in 40 s hide everything else and cost
//! the disk more than the refusals cost the server. A [`Throttle`] lets the
//! first event of a quiet period through at once, then stays silent for
//! `every`, counting; the next event after that logs with the count of all
//! events since the last line. Events at the tail of a burst are counted
//! into the next line, whenever that comes.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use rollcall_server::throttle::Throttle;
//! let mut t = Throttle::new(Duration::from_secs(10));
//! let start = Instant::now();
//! assert_eq!(t.hit(start), Some(1));
//! assert_eq!(t.hit(start + Duration::from_secs(1)), None);
//! assert_eq!(t.hit(start + Duration::from_secs(11)), Some(2));
//! ```
//!
//! `Throttle` takes the time as an argument so that callers (the fleet
//! actor, say, with one per node) and tests control the clock; a
//! [`SharedThrottle`] is the same behind a mutex for tasks that share one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the server's rate-limited warnings may repeat, per kind.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Decides when a repeated warning may be logged again. See the module
/// documentation.
#[derive(Debug, Clone)]
pub struct Throttle {
    every: Duration,
    last_line: Option<Instant>,
    /// Events since the last line that was let through.
    pending: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last_line: None,
            pending: 0,
        }
    }

    /// Counts one event at `now`. Returns `Some(n)` when a line is due,
    /// where `n` is the number of events it stands for (this one and those
    /// suppressed since the last line); `None` when the caller stays silent.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending = self.pending.saturating_add(1);
        let due = self
            .last_line
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if !due {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.pending))
    }

    /// Events counted but not yet reported in a line.
    pub fn pending(&self) -> u64 {
        self.pending
    }
}

/// A [`Throttle`] that tasks share (the accept loop and the handshake tasks
/// it spawns, say).
#[derive(Debug)]
pub struct SharedThrottle(Mutex<Throttle>);

impl SharedThrottle {
    pub fn new(every: Duration) -> Self {
        Self(Mutex::new(Throttle::new(every)))
    }

    /// [`Throttle::hit`] at `now`.
    pub fn hit_at(&self, now: Instant) -> Option<u64> {
        // A panic while holding this lock cannot leave the counter in a
        // state worse than a lost count, so a poisoned lock is used as is.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hit(now)
    }

    /// [`Throttle::hit`] now.
    pub fn hit(&self) -> Option<u64> {
        self.hit_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_logs_then_one_line_per_interval_with_the_count() {
        let every = Duration::from_secs(10);
        let mut t = Throttle::new(every);
        let t0 = Instant::now();
        assert_eq!(t.hit(t0), Some(1), "a quiet period's first event logs");
        let lines: Vec<u64> = (1..=999)
            .filter_map(|i| t.hit(t0 + Duration::from_millis(i)))
            .collect();
        assert!(lines.is_empty(), "silent within the interval: {lines:?}");
        assert_eq!(t.pending(), 999);
        assert_eq!(t.hit(t0 + every), Some(1_000), "the count covers the burst");
        assert_eq!(t.pending(), 0);
        assert_eq!(t.hit(t0 + every + Duration::from_secs(9)), None);
        assert_eq!(t.hit(t0 + every * 5), Some(2));
    }

    #[test]
    fn a_burst_over_time_gives_one_line_per_interval() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        // 100 events a second for a minute: 6 lines, and every event counted.
        let lines: Vec<u64> = (0..6_000)
            .filter_map(|i| t.hit(t0 + Duration::from_millis(i * 10)))
            .collect();
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert_eq!(lines.iter().sum::<u64>() + t.pending(), 6_000);
    }

    #[test]
    fn a_clock_that_goes_backwards_does_not_unlock_the_line() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now() + Duration::from_secs(60);
        assert_eq!(t.hit(t0), Some(1));
        assert_eq!(t.hit(t0 - Duration::from_secs(30)), None);
    }

    #[test]
    fn shared_throttle_counts_across_threads() {
        let t = std::sync::Arc::new(SharedThrottle::new(Duration::from_secs(3_600)));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..250).filter_map(|_| t.hit_at(t0)).count())
            })
            .collect();
        let lines: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(lines, 1, "one line for 1,000 events in one interval");
        assert_eq!(t.hit_at(t0 + Duration::from_secs(3_600)), Some(1_000));
    }
}
