//! Watching the parts of a running server: the gRPC server, the fleet
//! actor, the campaign scheduler and the store writer thread.
//!
//! Each part is one task (or thread) that the others reach through a
//! handle. A part that ends while the server runs leaves every call to it
//! answering "the server is shutting down" while the process stays up, so
//! nothing would restart it: [`Parts`] notices the first part to end and
//! names it and why, and the server stops with an error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use tokio::task::{JoinError, JoinHandle};

/// A part of the running server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Grpc,
    Fleet,
    Scheduler,
    StoreWriter,
    /// The `/metrics` listener.
    Metrics,
    /// The leadership lease's renewal (replicas on PostgreSQL).
    Lease,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Grpc => "the gRPC server",
            Part::Fleet => "the fleet actor",
            Part::Scheduler => "the campaign scheduler",
            Part::StoreWriter => "the store writer",
            Part::Metrics => "the metrics listener",
            Part::Lease => "the leadership lease",
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a part ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// It returned: right when the server stops, a failure before.
    #[error("stopped on its own")]
    Returned,
    #[error("failed: {0}")]
    Failed(String),
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("was cancelled")]
    Cancelled,
}

impl Ended {
    /// What a task's join result says about how it ended.
    pub fn of_join(joined: Result<(), JoinError>) -> Ended {
        match joined {
            Ok(()) => Ended::Returned,
            Err(e) if e.is_panic() => Ended::Panicked(panic_message(&*e.into_panic())),
            Err(_) => Ended::Cancelled,
        }
    }
}

/// A part that ended when it should not have, or failed while stopping.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{part} {how}")]
pub struct PartEnded {
    pub part: Part,
    pub how: Ended,
}

impl PartEnded {
    /// Whether `how` is a failure: any panic or error, and returning at all
    /// while the server is not stopping.
    pub fn judge(part: Part, how: Ended, stopping: bool) -> Option<PartEnded> {
        match how {
            Ended::Returned if stopping => None,
            how => Some(PartEnded { part, how }),
        }
    }
}

/// The text a panic was raised with (`panic!("...")` gives a `&str` or a
/// `String`; anything else has none).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

type Watched = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// The parts still running, each a future that resolves once it ended.
#[derive(Default)]
pub struct Parts {
    running: Vec<(Part, Watched)>,
}

impl Parts {
    /// Watches a task that returns nothing.
    pub fn task(&mut self, part: Part, handle: JoinHandle<()>) {
        self.watch(part, async move { Ended::of_join(handle.await) });
    }

    /// Watches anything that says how its part ended.
    pub fn watch(&mut self, part: Part, ended: impl Future<Output = Ended> + Send + 'static) {
        self.running.push((part, Box::pin(ended)));
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The next part to end, and how; `None` once none is left. Cancel
    /// safe: a part that has not ended stays watched.
    pub async fn next(&mut self) -> Option<(Part, Ended)> {
        if self.running.is_empty() {
            return None;
        }
        std::future::poll_fn(|cx| {
            for i in 0..self.running.len() {
                if let Poll::Ready(how) = self.running[i].1.as_mut().poll(cx) {
                    let (part, _) = self.running.swap_remove(i);
                    return Poll::Ready(Some((part, how)));
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// A test's switch that makes a part panic (see `Options::fleet_panic`):
/// a part that ends is what supervision is for, and no real input may
/// make one panic.
#[derive(Clone, Debug, Default)]
pub struct PanicSwitch(Arc<AtomicBool>);

impl PanicSwitch {
    /// From now on, the part panics at its next chance.
    pub fn trip(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_tripped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_the_part_that_ended_first_and_why() {
        let mut parts = Parts::default();
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        parts.task(
            Part::Scheduler,
            tokio::spawn(async move {
                let _ = wait.await;
            }),
        );
        parts.task(
            Part::Fleet,
            tokio::spawn(async { panic!("the node table is gone") }),
        );
        let (part, how) = parts.next().await.expect("a part ended");
        assert_eq!(part, Part::Fleet);
        assert_eq!(how, Ended::Panicked("the node table is gone".into()));
        let failure = PartEnded::judge(part, how, false).expect("a failure");
        assert_eq!(
            failure.to_string(),
            "the fleet actor panicked: the node table is gone"
        );
        release.send(()).expect("the scheduler waits");
        assert_eq!(parts.next().await, Some((Part::Scheduler, Ended::Returned)));
        assert!(parts.next().await.is_none(), "none left");
    }

    #[test]
    fn returning_is_a_failure_only_while_the_server_is_not_stopping() {
        assert_eq!(PartEnded::judge(Part::Grpc, Ended::Returned, true), None);
        assert_eq!(
            PartEnded::judge(Part::Grpc, Ended::Returned, false).map(|e| e.to_string()),
            Some("the gRPC server stopped on its own".into())
        );
        assert!(PartEnded::judge(Part::StoreWriter, Ended::Panicked("x".into()), true).is_some());
        assert!(PartEnded::judge(Part::Grpc, Ended::Failed("x".into()), true).is_some());
    }

    #[test]
    fn a_panic_message_is_read_from_either_kind_of_payload() {
        let text: Box<dyn std::any::Any + Send> = Box::new("static");
        assert_eq!(panic_message(&*text), "static");
        let owned: Box<dyn std::any::Any + Send> = Box::new(format!("owned {}", 1));
        assert_eq!(panic_message(&*owned), "owned 1");
        let other: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(&*other), "a panic without a message");
    }
}
