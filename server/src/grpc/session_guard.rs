//! What one agent session may cost: a rate limit on its messages, and one
//! complaint per interval about what it sent wrong.
//!
//! A session that sends faster than its bucket refills has the excess
//! counted: reports over the limit are merged and applied at the next
//! token (the fleet sees one report per token, and the newest state of
//! every section), action updates are dropped (the agent sends them again
//! until acknowledged). What [`rollcall_proto::admit`] cut or refused, and
//! what was dropped, is gathered and told once per [`NOTICE_EVERY`]: one
//! log line for the operator and one `Notice` for the agent, however many
//! messages it was about.

use std::time::{Duration, Instant};

use rollcall_proto::text::Untrusted;

/// How often a misbehaving session is logged and told.
pub const NOTICE_EVERY: Duration = Duration::from_secs(60);
/// Problem lines kept between two notices (the first ones: later ones are
/// almost always the same again).
const MAX_LINES: usize = 8;

/// A token bucket: `burst` messages at once, `rate` a second sustained.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// How long until the next token (zero if there is one).
    pub fn wait(&self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        Duration::from_secs_f64(((1.0 - tokens) / self.rate).max(0.0))
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a session did wrong since the last notice.
#[derive(Debug, Default)]
pub struct Complaints {
    lines: Vec<String>,
    /// Messages that had problems.
    messages: u64,
    /// Messages dropped over the rate limit.
    dropped: u64,
    report_seq: u64,
    last: Option<Instant>,
}

/// One notice, ready to log and to send.
#[derive(Debug, PartialEq)]
pub struct Notice {
    pub report_seq: u64,
    pub problems: Vec<String>,
    pub messages: u64,
    pub dropped: u64,
}

impl Complaints {
    pub fn problems(&mut self, report_seq: u64, lines: Vec<String>) {
        self.messages += 1;
        self.report_seq = report_seq;
        for line in lines {
            if self.lines.len() < MAX_LINES && !self.lines.contains(&line) {
                self.lines.push(line);
            }
        }
    }

    pub fn dropped(&mut self) {
        self.dropped += 1;
    }

    pub fn pending(&self) -> bool {
        self.messages > 0 || self.dropped > 0
    }

    /// When the next notice may go out.
    pub fn due(&self) -> Option<Instant> {
        self.last.map(|last| last + NOTICE_EVERY)
    }

    /// The notice to give now, if anything is pending and the last notice
    /// is at least [`NOTICE_EVERY`] old. The first complaint of a session
    /// goes out at once.
    pub fn take(&mut self, now: Instant) -> Option<Notice> {
        if !self.pending() || self.due().is_some_and(|due| now < due) {
            return None;
        }
        self.last = Some(now);
        let mut problems = std::mem::take(&mut self.lines);
        if self.dropped > 0 {
            problems.push(format!(
                "{} messages over the session rate limit: reports merged into the next one \
                 applied, action updates dropped (sent again until acknowledged)",
                self.dropped
            ));
        }
        let notice = Notice {
            report_seq: self.report_seq,
            problems,
            messages: std::mem::take(&mut self.messages),
            dropped: std::mem::take(&mut self.dropped),
        };
        Some(notice)
    }
}

impl Notice {
    pub fn log(&self, node: &str) {
        let problems = self.problems.join("; ");
        tracing::warn!(
            node = %node,
            messages = self.messages,
            dropped = self.dropped,
            problems = %Untrusted(&problems),
            "Agent sent what the server cuts or refuses; told the agent (at most once a minute per node)."
        );
    }

    pub fn to_wire(&self) -> rollcall_proto::v1::Notice {
        rollcall_proto::v1::Notice {
            report_seq: self.report_seq,
            problems: self.problems.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, 10, t0);
        assert_eq!((0..100).filter(|_| b.take(t0)).count(), 10);
        assert_eq!(b.wait(t0), Duration::from_millis(200));
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), 10);
        let t2 = t1 + Duration::from_millis(200);
        assert_eq!((0..100).filter(|_| b.take(t2)).count(), 1);
        // Idle time never banks more than the burst.
        let t3 = t2 + Duration::from_secs(3_600);
        assert_eq!((0..100).filter(|_| b.take(t3)).count(), 10);
    }

    #[test]
    fn complaints_go_out_at_once_then_once_per_interval() {
        let t0 = Instant::now();
        let mut c = Complaints::default();
        assert_eq!(c.take(t0), None);
        c.problems(1, vec!["metrics section refused: load1 is NaN".into()]);
        let first = c.take(t0).unwrap();
        assert_eq!((first.messages, first.dropped), (1, 0));
        for seq in 2..1_000 {
            c.problems(seq, vec!["metrics section refused: load1 is NaN".into()]);
            c.dropped();
        }
        assert_eq!(c.take(t0 + Duration::from_secs(59)), None);
        let second = c.take(t0 + NOTICE_EVERY).unwrap();
        assert_eq!((second.messages, second.dropped), (998, 998));
        assert_eq!(second.report_seq, 999);
        assert_eq!(
            second.problems,
            [
                "metrics section refused: load1 is NaN",
                "998 messages over the session rate limit: reports merged into the next one \
                 applied, action updates dropped (sent again until acknowledged)"
            ]
        );
        assert_eq!(c.take(t0 + 3 * NOTICE_EVERY), None);
    }

    #[test]
    fn problem_lines_are_bounded() {
        let mut c = Complaints::default();
        for i in 0..100 {
            c.problems(i, vec![format!("problem {i}")]);
        }
        assert_eq!(c.take(Instant::now()).unwrap().problems.len(), MAX_LINES);
    }
}
