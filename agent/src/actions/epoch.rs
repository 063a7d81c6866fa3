//! Fencing on the leader's epoch. With replicas, one server leads at a
//! time, and each new leader holds a higher epoch, which it sends in every
//! action request. A leader that lost its lease may not know it yet and
//! still send requests: the agent remembers the highest epoch it has seen
//! (in `leader-epoch` next to the action records, written before the
//! request is acted on) and refuses a request with a lower one, so a
//! deposed leader cannot start an action the new one does not know of.
//! Epoch 0 is a server without replicas (SQLite), which has no epochs: it
//! is heard until the agent has seen a leader with replicas, and refused
//! after (a server left running on the SQLite file a fleet was migrated
//! from must not act beside the replicas); it is never recorded.

/// The file in the state directory that holds the highest epoch seen.
pub(super) const FILE: &str = "leader-epoch";

/// A request from a leader that a later one has replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(*.epoch, *.seen))]
pub struct Deposed {
    /// The request's epoch.
    pub epoch: u64,
    /// The highest this agent has seen.
    pub seen: u64,
}

fn describe(epoch: u64, seen: u64) -> String {
    if epoch == 0 {
        format!(
            "sent by a server without replicas (epoch 0) after this agent took requests from replicas (epoch {seen}); if the fleet went back to one server, remove {FILE} from the agent's state directory"
        )
    } else {
        format!("sent by a deposed leader (epoch {epoch}; this agent has seen epoch {seen})")
    }
}

/// Whether a request with `epoch` may be acted on, given the highest epoch
/// `seen`: `Ok(Some(e))` when `e` is a new highest to record first.
pub(super) fn fence(seen: u64, epoch: u64) -> Result<Option<u64>, Deposed> {
    match epoch {
        0 if seen == 0 => Ok(None),
        e if e < seen => Err(Deposed { epoch: e, seen }),
        e if e > seen => Ok(Some(e)),
        _ => Ok(None),
    }
}

/// The file's text for the highest epoch.
pub(super) fn to_text(epoch: u64) -> String {
    format!("{epoch}\n")
}

/// The file's text: a number. Anything else is an error, not 0: 0 would let
/// a deposed leader in.
pub(super) fn parse(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{FILE} holds {:?}, not an epoch; remove the file if no leader with replicas has sent this agent anything it must refuse",
            rollcall_proto::text::cut(text.trim(), 40)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_epoch_is_refused_and_zero_only_before_replicas() {
        assert_eq!(fence(0, 0), Ok(None), "one server on SQLite, as ever");
        assert_eq!(fence(0, 3), Ok(Some(3)), "a first epoch is recorded");
        assert_eq!(fence(3, 3), Ok(None), "the same leader again");
        assert_eq!(fence(3, 4), Ok(Some(4)), "a new leader");
        assert_eq!(fence(4, 3), Err(Deposed { epoch: 3, seen: 4 }));
        assert_eq!(
            fence(4, 0),
            Err(Deposed { epoch: 0, seen: 4 }),
            "a server left on the SQLite file the fleet moved from"
        );
        assert!(
            Deposed { epoch: 0, seen: 4 }
                .to_string()
                .contains("remove leader-epoch"),
            "says how to go back"
        );
        assert_eq!(
            Deposed { epoch: 3, seen: 4 }.to_string(),
            "sent by a deposed leader (epoch 3; this agent has seen epoch 4)"
        );
    }

    #[test]
    fn the_file_round_trips_and_garbage_is_an_error() {
        assert_eq!(parse(&to_text(u64::MAX)), Ok(u64::MAX));
        assert_eq!(parse("7"), Ok(7));
        for bad in ["", "-1", "seven", "18446744073709551616"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("leader-epoch holds"), "{err}");
        }
    }
}
