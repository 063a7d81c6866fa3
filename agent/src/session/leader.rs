//! Which rollcall-server the agent's next session goes to, when it is
//! given several (replicas sharing one store, one of them leading).
//!
//! The rule, [`next_server`]:
//! - The agent starts at the first URL of its list.
//! - A follower refuses the session and names the leader: the agent goes
//!   there next, at once the first time since its last welcomed session (a
//!   follower answered at once, so nothing is down), after the backoff delay
//!   every further time (two followers that name each other while a
//!   failover settles must not make it spin).
//! - The named leader is in the list: it is followed as any listed server.
//!   It is not (an operator added a replica and not yet to agent.toml): it
//!   is followed too, with the same CA and the same agent certificate as
//!   every connection (a server the CA did not sign cannot take the
//!   session), but only from a listed server or from a session that was
//!   welcomed: a server off the list that refuses the agent and names yet
//!   another leader is not followed, the agent goes back to its list. So a
//!   hostile hint can take the agent off its list at most once in a row
//!   without a welcomed session, and every other attempt goes to the list.
//! - Anything else (no connection, a failed handshake, "no leader at the
//!   moment", a session that broke, a hint naming the server itself or
//!   not a valid URL): the next URL of the list (after the listed server
//!   that led off it), after the backoff delay. With one URL that is the
//!   same one, as it always was.

use rollcall_proto::servers::normalize;

/// Where the next session goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The server's URL as [`normalize`] writes it.
    pub url: String,
    /// The index in the list of `url`, or, off the list, of the listed
    /// server whose follower named it: the list goes on after it.
    pub index: usize,
    /// `url` is not in the list: a follower named it as the leader.
    pub off_list: bool,
    /// Follower answers since the last session the server welcomed.
    pub hops: u32,
}

impl Target {
    /// The first server of a (non-empty, normalized) list.
    pub fn first(list: &[String]) -> Self {
        Self {
            url: list.first().cloned().unwrap_or_default(),
            index: 0,
            off_list: false,
            hops: 0,
        }
    }
}

/// How a session ended, as far as the choice of the next server goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ended<'a> {
    /// The server welcomed the agent: it led when the session began.
    pub welcomed: bool,
    /// A follower refused the agent (or cut its session) and named this
    /// leader, as it wrote it: not checked yet.
    pub leader: Option<&'a str>,
}

/// The next session's server, and whether to wait the backoff delay first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Next {
    pub target: Target,
    pub wait: bool,
}

/// The rule in the module's documentation. `list` is the agent's
/// normalized, non-empty list of URLs.
pub fn next_server(list: &[String], current: &Target, ended: Ended<'_>) -> Next {
    let hops = if ended.welcomed { 0 } else { current.hops };
    let hint = ended
        .leader
        .and_then(|h| normalize(h).ok())
        .filter(|h| *h != current.url);
    if let Some(leader) = hint {
        let wait = hops > 0;
        let hops = hops.saturating_add(1);
        if let Some(index) = list.iter().position(|u| *u == leader) {
            return Next {
                target: Target {
                    url: leader,
                    index,
                    off_list: false,
                    hops,
                },
                wait,
            };
        }
        if !current.off_list || ended.welcomed {
            return Next {
                target: Target {
                    url: leader,
                    index: current.index,
                    off_list: true,
                    hops,
                },
                wait,
            };
        }
    }
    let index = (current.index + 1) % list.len().max(1);
    Next {
        target: Target {
            url: list.get(index).cloned().unwrap_or_default(),
            index,
            off_list: false,
            hops,
        },
        wait: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "https://ctl1:7443";
    const B: &str = "https://ctl2:7443";
    const C: &str = "https://ctl3:7443";
    const X: &str = "https://ctl9:7443";
    const Y: &str = "https://evil:7443";

    fn list() -> Vec<String> {
        [A, B, C].map(String::from).to_vec()
    }

    fn failed() -> Ended<'static> {
        Ended::default()
    }

    fn follower(leader: &'static str) -> Ended<'static> {
        Ended {
            welcomed: false,
            leader: Some(leader),
        }
    }

    /// Follows `answers` from the first server: the URLs gone to and
    /// whether the agent waited before each.
    fn walk(list: &[String], answers: &[Ended<'static>]) -> Vec<(String, bool)> {
        let mut at = Target::first(list);
        answers
            .iter()
            .map(|ended| {
                let next = next_server(list, &at, *ended);
                at = next.target;
                (at.url.clone(), next.wait)
            })
            .collect()
    }

    fn steps(s: &[(&str, bool)]) -> Vec<(String, bool)> {
        s.iter().map(|(u, w)| ((*u).to_owned(), *w)).collect()
    }

    #[test]
    fn failures_go_round_the_list_with_the_backoff() {
        assert_eq!(
            walk(&list(), &[failed(), failed(), failed()]),
            steps(&[(B, true), (C, true), (A, true)])
        );
        // One URL: the same one again, as before replicas.
        let one = vec![A.to_owned()];
        assert_eq!(
            walk(&one, &[failed(), failed()]),
            steps(&[(A, true), (A, true)])
        );
    }

    #[test]
    fn a_named_leader_is_followed_at_once_the_first_time_only() {
        // A follower names C: straight there. C is starting (refused): on
        // round the list from C, with the backoff; A names C again: the
        // agent follows, but waits first.
        assert_eq!(
            walk(&list(), &[follower(C), failed(), follower(C)]),
            steps(&[(C, false), (A, true), (C, true)])
        );
        // Two followers naming each other while a failover settles: only
        // the first hop is free.
        assert_eq!(
            walk(&list(), &[follower(B), follower(A), follower(B)]),
            steps(&[(B, false), (A, true), (B, true)])
        );
        // A welcomed session makes the next hint free again.
        let mut at = Target::first(&list());
        at = next_server(&list(), &at, follower(B)).target;
        at = next_server(&list(), &at, follower(C)).target;
        let deposed = Ended {
            welcomed: true,
            leader: Some(A),
        };
        assert_eq!(
            next_server(&list(), &at, deposed),
            Next {
                target: Target {
                    url: A.into(),
                    index: 0,
                    off_list: false,
                    hops: 1
                },
                wait: false
            }
        );
    }

    #[test]
    fn hints_are_compared_as_urls_and_bad_ones_count_as_failures() {
        // Another spelling of a listed server is that server.
        let next = next_server(
            &list(),
            &Target::first(&list()),
            follower("HTTPS://CTL3:7443/"),
        );
        assert_eq!((next.target.index, next.target.off_list), (2, false));
        // A follower naming itself, or something that is no https URL:
        // on round the list, with the backoff.
        for bad in [A, "http://ctl2:7443", "", "ctl 2"] {
            assert_eq!(
                walk(&list(), &[follower(bad)]),
                steps(&[(B, true)]),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_leader_off_the_list_is_followed_once_in_a_row_without_a_welcome() {
        // B names X, a replica the list does not know: followed. X names Y:
        // not followed, back to the list after B.
        let mut at = Target::first(&list());
        at = next_server(&list(), &at, failed()).target;
        let next = next_server(&list(), &at, follower(X));
        assert_eq!(
            (next.target.url.as_str(), next.target.off_list, next.wait),
            (X, true, false)
        );
        at = next.target;
        assert_eq!(
            next_server(&list(), &at, follower(Y)),
            Next {
                target: Target {
                    url: C.into(),
                    index: 2,
                    off_list: false,
                    hops: 1
                },
                wait: true
            }
        );
        // X is down: the list goes on after B too.
        assert_eq!(next_server(&list(), &at, failed()).target.url, C);
        // X naming a listed server is followed: that is the list.
        assert_eq!(next_server(&list(), &at, follower(A)).target.url, A);
        // X welcomed the agent, and then a failover moved the leader to Y
        // (also new): a session that was welcomed may lead off the list.
        let moved = Ended {
            welcomed: true,
            leader: Some(Y),
        };
        let next = next_server(&list(), &at, moved);
        assert_eq!(
            (next.target.url.as_str(), next.target.off_list, next.wait),
            (Y, true, false)
        );
    }

    #[test]
    fn a_hostile_hint_cannot_keep_the_agent_off_its_list() {
        // Every listed server names Y, and Y names itself away again: the
        // agent alternates and reaches every listed server, waiting before
        // every hop but the first.
        let answers = [
            follower(Y),
            follower(X),
            follower(Y),
            follower(X),
            follower(Y),
            follower(X),
        ];
        assert_eq!(
            walk(&list(), &answers),
            steps(&[
                (Y, false),
                (B, true),
                (Y, true),
                (C, true),
                (Y, true),
                (A, true)
            ])
        );
    }
}
