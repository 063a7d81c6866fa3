//! Reconnect delays: exponential, capped, with full jitter (a random delay
//! between zero and the current cap), so a thousand agents that lost the
//! server at the same moment do not come back at the same moment.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The cap for the next delay: initial × 2^attempt, at most `max`.
    pub fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay, drawn uniformly from [0, cap].
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=millis))
    }

    /// After a session that worked, start again from the smallest cap.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_doubles_up_to_the_maximum_and_delays_stay_below_it() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let mut caps = Vec::new();
        for _ in 0..12 {
            let cap = b.cap();
            let delay = b.next_delay();
            assert!(delay <= cap, "{delay:?} > {cap:?}");
            caps.push(cap.as_millis());
        }
        assert_eq!(
            &caps[..8],
            &[500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000]
        );
        assert!(caps[8..].iter().all(|&c| c == 60_000));
        b.reset();
        assert_eq!(b.cap(), Duration::from_millis(500));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        b.attempt = u32::MAX;
        assert_eq!(b.cap(), Duration::from_secs(60));
        let _ = b.next_delay();
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
            seen.insert(b.next_delay().as_millis() / 1_000);
        }
        assert!(seen.len() >= 5, "delays not spread: {seen:?}");
    }
}
