//! Who asked for what, and when, read back from the processes' own logs
//! and the nodes' scripts, for the failover suite and benchmark: every
//! action a replica SENT (its "Asking the agent for an action." lines, with
//! `leader_epoch`), every request an agent RECEIVED ("Action requested.",
//! with `leader_epoch`), every action a node's script RAN (its
//! `epochs.log`, from `ROLLCALL_LEADER_EPOCH`), when each replica won the
//! lease and when each agent connected to which server.
//!
//! Times are Unix seconds (f64) from the wall clock every process shares on
//! one machine: the logs' RFC 3339 stamps and the scripts' `date +%s.%N`.
//!
//! The checks are pure functions over these records, tested below.

use std::collections::BTreeMap;
use std::path::Path;

/// One line of a rollcall binary's log (tracing's default format:
/// `2025-01-02T03:04:05.678901Z  INFO Message. key=value …`).
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub at: f64,
    pub level: String,
    /// Everything after the level: the message, then the fields.
    pub text: String,
}

impl LogLine {
    pub fn parse(line: &str) -> Option<LogLine> {
        let mut parts = line.split_whitespace();
        let stamp = parts.next()?;
        let level = parts.next()?;
        let at = unix_secs(stamp)?;
        let rest = line.split_once(level)?.1.trim_start();
        Some(LogLine {
            at,
            level: level.to_owned(),
            text: rest.to_owned(),
        })
    }

    /// Whether the message is `message` (spans may come before it).
    pub fn says(&self, message: &str) -> bool {
        self.text.contains(message)
    }

    /// A field's value (`key=value`, unquoted; values with spaces are not
    /// read, and none of the fields read here has any).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.text.split_whitespace().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.trim_matches('"'))
        })
    }
}

/// An RFC 3339 stamp as Unix seconds.
pub fn unix_secs(stamp: &str) -> Option<f64> {
    let ts: jiff::Timestamp = stamp.parse().ok()?;
    Some(ts.as_second() as f64 + f64::from(ts.subsec_nanosecond()) / 1e9)
}

/// Now, as Unix seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Every line of a log that parses (a log appended across restarts).
pub fn read_log(path: &Path) -> Vec<LogLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(LogLine::parse)
        .collect()
}

/// One action on the wire or run: who (a replica index for a send, else
/// none), to which node, its id, the epoch it carried and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Act {
    pub at: f64,
    /// The replica that sent it (sends only).
    pub replica: Option<usize>,
    pub node: String,
    pub action_id: String,
    pub epoch: u64,
}

/// The actions replica `index` sent, from its log.
pub fn sends(index: usize, log: &[LogLine]) -> Vec<Act> {
    log.iter()
        .filter(|l| l.says("Asking the agent for an action."))
        .filter_map(|l| {
            Some(Act {
                at: l.at,
                replica: Some(index),
                node: l.field("node")?.to_owned(),
                action_id: l.field("action_id")?.to_owned(),
                epoch: l.field("leader_epoch")?.parse().ok()?,
            })
        })
        .collect()
}

/// The requests `node`'s agent received, from its log.
pub fn received(node: &str, log: &[LogLine]) -> Vec<Act> {
    log.iter()
        .filter(|l| l.says("Action requested."))
        .filter_map(|l| {
            Some(Act {
                at: l.at,
                replica: None,
                node: node.to_owned(),
                action_id: l.field("action_id")?.to_owned(),
                epoch: l.field("leader_epoch")?.parse().ok()?,
            })
        })
        .collect()
}

/// The actions that ran on `node` (its scripts' `epochs.log`: `TIME EPOCH
/// ID WHAT`, written by the patch, the reboot and the hooks it ran).
pub fn ran(node: &str, node_dir: &Path) -> Vec<Act> {
    std::fs::read_to_string(node_dir.join("epochs.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [at, epoch, id, _what] => Some(Act {
                at: at.parse().ok()?,
                replica: None,
                node: node.to_owned(),
                action_id: id.to_owned(),
                epoch: epoch.parse().ok()?,
            }),
            _ => None,
        })
        .collect()
}

/// When the replica won the lease, and with which epoch, from its log.
pub fn leases_won(log: &[LogLine]) -> Vec<(f64, u64)> {
    log.iter()
        .filter(|l| l.says("Won the leadership lease"))
        .filter_map(|l| Some((l.at, l.field("epoch")?.parse().ok()?)))
        .collect()
}

/// When the agent's session was welcomed, and by which server URL.
pub fn connected(log: &[LogLine]) -> Vec<(f64, String)> {
    log.iter()
        .filter(|l| l.says("Connected."))
        .filter_map(|l| Some((l.at, l.field("server")?.to_owned())))
        .collect()
}

/// At no moment did two leaders send: sorted by time, every send of an
/// epoch precedes every send of a higher one, and each epoch was sent by
/// one replica only. The first violation, in words.
pub fn no_overlap(sends: &[Act]) -> Result<(), String> {
    /// When an epoch's sends began and ended, and who sent them.
    struct Span {
        first: f64,
        last: f64,
        replica: Option<usize>,
    }
    let mut by_epoch: BTreeMap<u64, Span> = BTreeMap::new();
    for s in sends {
        let e = by_epoch.entry(s.epoch).or_insert(Span {
            first: s.at,
            last: s.at,
            replica: s.replica,
        });
        if e.replica != s.replica {
            return Err(format!(
                "epoch {} was sent by replica {:?} and replica {:?}",
                s.epoch, e.replica, s.replica
            ));
        }
        e.first = e.first.min(s.at);
        e.last = e.last.max(s.at);
    }
    let epochs: Vec<(&u64, &Span)> = by_epoch.iter().collect();
    for (i, (epoch, early)) in epochs.iter().enumerate() {
        for (later, late) in &epochs[i + 1..] {
            if late.first <= early.last {
                return Err(format!(
                    "replica {:?} sent with epoch {epoch} until {:.3}, after replica {:?} first \
                     sent with epoch {later} at {:.3}",
                    early.replica, early.last, late.replica, late.first
                ));
            }
        }
    }
    Ok(())
}

/// Per node, in the order they ran, no action ran with a lower epoch than
/// one that ran before it (the agent's fence). The first violation.
pub fn fenced(ran: &[Act]) -> Result<(), String> {
    let mut by_node: BTreeMap<&str, Vec<&Act>> = BTreeMap::new();
    for a in ran {
        by_node.entry(&a.node).or_default().push(a);
    }
    for (node, mut acts) in by_node {
        acts.sort_by(|a, b| a.at.total_cmp(&b.at));
        for pair in acts.windows(2) {
            if pair[1].epoch < pair[0].epoch {
                return Err(format!(
                    "{node} ran {} with epoch {} at {:.3}, after {} with epoch {} at {:.3}",
                    pair[1].action_id,
                    pair[1].epoch,
                    pair[1].at,
                    pair[0].action_id,
                    pair[0].epoch,
                    pair[0].at
                ));
            }
        }
    }
    Ok(())
}

/// The `q` quantile (0..=1) of `v`, by nearest rank; 0 for none.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n => s[((q * n as f64).ceil() as usize).clamp(1, n) - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(at: f64, replica: usize, epoch: u64) -> Act {
        Act {
            at,
            replica: Some(replica),
            node: "cmp01".into(),
            action_id: format!("a{at}"),
            epoch,
        }
    }

    #[test]
    fn a_log_line_reads_its_time_message_and_fields() {
        let l = LogLine::parse(
            "2025-01-02T03:04:05.250000Z  INFO Asking the agent for an action. node=cmp01 \
             action_id=c1.cmp01.patch kind=Patch leader_epoch=3",
        )
        .expect("parses");
        assert_eq!(l.level, "INFO");
        assert!((l.at - 1_735_787_045.25).abs() < 1e-6, "{}", l.at);
        assert!(l.says("Asking the agent for an action."));
        assert_eq!(l.field("leader_epoch"), Some("3"));
        assert_eq!(l.field("node"), Some("cmp01"));
        assert_eq!(l.field("missing"), None);
        assert_eq!(sends(2, std::slice::from_ref(&l))[0].epoch, 3);
        assert_eq!(sends(2, &[l])[0].replica, Some(2));
        assert!(LogLine::parse("error: not a log line").is_none());
    }

    #[test]
    fn sends_of_two_leaders_that_interleave_are_an_overlap() {
        let clean = [
            send(1.0, 0, 1),
            send(2.0, 0, 1),
            send(5.0, 1, 2),
            send(6.0, 1, 2),
        ];
        assert_eq!(no_overlap(&clean), Ok(()));
        // The old leader sends once more after the new one began.
        let late = [send(1.0, 0, 1), send(5.0, 1, 2), send(5.5, 0, 1)];
        let err = no_overlap(&late).expect_err("an overlap");
        assert!(err.contains("epoch 1 until 5.500"), "{err}");
        // One epoch from two replicas is two leaders too.
        let twice = [send(1.0, 0, 1), send(2.0, 1, 1)];
        assert!(no_overlap(&twice).is_err());
        // Out of order in the input, in order in time: fine.
        let shuffled = [send(6.0, 2, 3), send(1.0, 0, 1), send(4.0, 1, 2)];
        assert_eq!(no_overlap(&shuffled), Ok(()));
        let skipped = [send(6.0, 2, 3), send(1.0, 0, 1), send(7.0, 0, 1)];
        assert!(no_overlap(&skipped).is_err(), "epoch 1 after epoch 3");
    }

    #[test]
    fn a_node_that_ran_a_lower_epoch_after_a_higher_one_was_not_fenced() {
        let mut a = send(1.0, 0, 2);
        a.replica = None;
        let mut b = a.clone();
        b.at = 2.0;
        b.epoch = 3;
        assert_eq!(fenced(&[b.clone(), a.clone()]), Ok(()));
        let mut c = a.clone();
        c.at = 3.0;
        assert!(fenced(&[a, b, c]).is_err());
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
