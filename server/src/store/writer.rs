//! The store's write path: one thread owns the SQLite connection, collects
//! node changes from a channel, keeps only the newest record and the newest
//! of each report section per node, and commits them together once per
//! flush interval.
//!
//! Every write's outcome goes to the store's health ([`StoreHealth`]): the
//! first failure says the store is failing, the next success that it is
//! not. While it fails, queued node changes are kept and tried again each
//! interval, and with nothing queued a probe write finds out when the disk
//! takes writes again; errors are logged once per [`WARN_EVERY`] with a
//! count, not once per write.

use std::collections::HashMap;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use rollcall_proto::model::ActionResult;
use rollcall_proto::timestamp::Timestamp;

use crate::audit::AuditRecord;
use crate::campaign::record::CampaignWrite;
use crate::metrics::Events;
use crate::revoke::{Revocation, Serial};
use crate::throttle::{Throttle, WARN_EVERY};

use super::backend::Backend;
use super::health::{Reporter, StoreHealth};
use super::{NodeWrite, SignedCertificate, StoreError};

enum Op {
    Put(Box<NodeWrite>),
    Flush(oneshot::Sender<()>),
    /// Committed at once; the answer says whether it is on disk.
    Action(Box<ActionResult>, oneshot::Sender<Result<(), NotStored>>),
    /// Committed at once, in one transaction.
    Campaign(Box<CampaignWrite>, oneshot::Sender<Result<(), NotStored>>),
    /// Committed at once; the answer is the serial's stored revocation.
    Revoke(
        Box<Revocation>,
        oneshot::Sender<Result<Revocation, NotStored>>,
    ),
    /// A read of the revocations after a `seq`, for the running server's poll.
    Revocations(
        i64,
        oneshot::Sender<Result<Vec<(i64, Revocation)>, NotStored>>,
    ),
    /// A certificate the server signed, committed at once.
    Certificate(Box<SignedCertificate>, Reply<()>),
    /// A read of the serials signed for an identity URI.
    SignedFor(String, oneshot::Sender<Result<Vec<Serial>, NotRead>>),
    /// A node's rows removed with its audit line, at once; a change of
    /// that node still queued is dropped first (it came before the forget).
    Forget(String, Box<AuditRecord>, Reply<u64>),
    /// One operator audit line, committed at once.
    Audit(Box<AuditRecord>, Reply<u64>),
    /// A page of the operator audit.
    ReadAudit {
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<AuditRecord>, NotRead>>,
    },
}

type Reply<T> = oneshot::Sender<Result<T, NotStored>>;

/// Why a read through the writer did not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotRead {
    #[error("the store cannot be read: {0}")]
    Failed(String),
    #[error("the store writer has stopped")]
    WriterStopped,
}

/// Why a write the caller waits for is not on disk.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotStored {
    #[error("the store refused it: {0}")]
    Refused(String),
    #[error("the store writer has stopped")]
    WriterStopped,
}

/// The writer thread panicked (its message); what it had queued is lost.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the store writer panicked: {0}")]
pub struct WriterPanicked(pub String);

/// Sends changes to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Op>,
    health: watch::Receiver<StoreHealth>,
}

impl WriterHandle {
    /// Queues a node change; it is committed within one flush interval.
    pub fn put(&self, node: NodeWrite) {
        if self.tx.send(Op::Put(Box::new(node))).is_err() {
            tracing::error!("Store writer has stopped; a node change was not saved.");
        }
    }

    /// Stores an action result durably before returning `Ok`; an error
    /// means it is not stored (the agent keeps it and sends it again).
    pub async fn put_action(&self, result: ActionResult) -> Result<(), NotStored> {
        self.ask(|reply| Op::Action(Box::new(result), reply)).await
    }

    /// Stores a campaign change durably before returning `Ok`; an error
    /// means it is not stored and must not be acted on.
    pub async fn put_campaign(&self, write: CampaignWrite) -> Result<(), NotStored> {
        self.ask(|reply| Op::Campaign(Box::new(write), reply)).await
    }

    /// Stores a revocation durably (unless its serial is revoked already)
    /// and returns the serial's stored revocation.
    pub async fn revoke(&self, revocation: Revocation) -> Result<Revocation, NotStored> {
        self.ask(|reply| Op::Revoke(Box::new(revocation), reply))
            .await
    }

    /// The revocations stored after `seq`, each with its own `seq`.
    pub async fn revocations_since(&self, seq: i64) -> Result<Vec<(i64, Revocation)>, NotStored> {
        self.ask(|reply| Op::Revocations(seq, reply)).await
    }

    /// Records a certificate the server signed, durably, before it is
    /// handed out: nothing signed is left off the record.
    pub async fn record_certificate(&self, cert: SignedCertificate) -> Result<(), NotStored> {
        self.ask(|reply| Op::Certificate(Box::new(cert), reply))
            .await
    }

    /// The serials of the certificates signed for `identity` (a URI).
    pub async fn serials_signed_for(&self, identity: &str) -> Result<Vec<Serial>, NotRead> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Op::SignedFor(identity.to_owned(), reply))
            .map_err(|_| NotRead::WriterStopped)?;
        answer.await.map_err(|_| NotRead::WriterStopped)?
    }

    /// Stores one operator audit line durably; `Ok` holds its `seq`.
    pub async fn record_audit(&self, line: AuditRecord) -> Result<u64, NotStored> {
        self.ask(|reply| Op::Audit(Box::new(line), reply)).await
    }

    /// Removes a node's stored record and report with its audit line (one
    /// transaction). Queued now, in the caller's order (the fleet's task
    /// calls it, so no change of the node it sent earlier is written after
    /// it); the future says when it is on disk, with the line's `seq`.
    pub fn forget(
        &self,
        node: &str,
        line: AuditRecord,
    ) -> impl Future<Output = Result<u64, NotStored>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .tx
            .send(Op::Forget(node.to_owned(), Box::new(line), tx))
            .is_ok();
        async move {
            if !sent {
                return Err(NotStored::WriterStopped);
            }
            rx.await.unwrap_or(Err(NotStored::WriterStopped))
        }
    }

    /// Up to `limit` operator audit lines after `seq` `after`, oldest first.
    pub async fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, NotRead> {
        let (reply, rx) = oneshot::channel();
        let op = Op::ReadAudit {
            after,
            limit,
            reply,
        };
        if self.tx.send(op).is_err() {
            return Err(NotRead::WriterStopped);
        }
        rx.await.unwrap_or(Err(NotRead::WriterStopped))
    }

    async fn ask<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, NotStored> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(op(tx)).is_err() {
            return Err(NotStored::WriterStopped);
        }
        rx.await.unwrap_or(Err(NotStored::WriterStopped))
    }

    /// Whether the store takes writes, now and from now on.
    pub fn health(&self) -> watch::Receiver<StoreHealth> {
        self.health.clone()
    }

    /// Commits everything queued so far, and waits for it.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The writer thread. Dropping every [`WriterHandle`] makes it commit what
/// is left and stop; [`Writer::finished`] (or, blocking, [`Writer::join`])
/// waits for that.
pub struct Writer {
    thread: thread::JoinHandle<()>,
    done: oneshot::Receiver<Result<(), WriterPanicked>>,
}

impl Writer {
    pub fn spawn(store: impl Backend, interval: Duration) -> (Writer, WriterHandle) {
        Self::spawn_with_metrics(store, interval, None)
    }

    /// [`Writer::spawn`], timing every commit into `metrics`.
    pub fn spawn_with_metrics(
        store: impl Backend,
        interval: Duration,
        metrics: Option<Arc<Events>>,
    ) -> (Writer, WriterHandle) {
        let (tx, rx) = mpsc::channel();
        let (reporter, health) = Reporter::new();
        let (done_tx, done) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("rollcall-store".into())
            .spawn(move || {
                // Caught so that the server learns why its writer ended
                // (a thread has no join handle the runtime can await).
                // The state is dropped inside, so "done" means the store
                // is closed.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let mut state = State {
                        store: Box::new(store),
                        health: reporter,
                        errors: Throttle::new(WARN_EVERY),
                        forgets: Vec::new(),
                        metrics,
                    };
                    run(&mut state, rx, interval);
                }));
                let _ =
                    done_tx.send(ran.map_err(|payload| {
                        WriterPanicked(crate::supervise::panic_message(&*payload))
                    }));
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        (Writer { thread, done }, WriterHandle { tx, health })
    }

    /// Resolves once the thread has ended and closed the store: at once
    /// when it panicked, else after the last [`WriterHandle`] is gone and
    /// what was queued is committed.
    pub async fn finished(self) -> Result<(), WriterPanicked> {
        // The thread always sends before it ends; a dropped sender would
        // mean it ended some other way, which only a panic does.
        self.done
            .await
            .unwrap_or_else(|_| Err(WriterPanicked("ended without a word".into())))
    }

    /// [`Writer::finished`], blocking the calling thread.
    pub fn join(self) -> Result<(), WriterPanicked> {
        let _ = self.thread.join();
        let mut done = self.done;
        done.try_recv()
            .unwrap_or_else(|_| Err(WriterPanicked("ended without a word".into())))
    }
}

/// The writer thread's own state.
struct State {
    store: Box<dyn Backend>,
    health: Reporter,
    /// Write errors, logged once per [`WARN_EVERY`] with a count.
    errors: Throttle,
    /// Forgotten nodes the store refused to remove (the fleet no longer
    /// has them): tried again before every commit of node changes, so
    /// that a change of a node that came back after it is written after
    /// the removal.
    forgets: Vec<(String, Box<AuditRecord>)>,
    /// Where commits are timed (`rollcall_store_commit_duration_seconds`).
    metrics: Option<Arc<Events>>,
}

impl State {
    /// A commit begins: shown while it runs (a stuck one must show while
    /// it is stuck, not only once it ends).
    fn begin(&self) -> Instant {
        if let Some(m) = &self.metrics {
            m.commit_began(Timestamp::now());
        }
        Instant::now()
    }

    /// A commit that [`State::begin`] began ended; one that succeeded is
    /// timed (a failed one says nothing of the disk's pace).
    fn timed<T>(&self, started: Instant, result: &Result<T, StoreError>) {
        if let Some(m) = &self.metrics {
            m.commit_ended(started.elapsed(), result.is_ok());
        }
    }

    /// Notes a write's outcome in the store's health (and the log).
    fn outcome<T>(&mut self, what: &str, result: Result<T, StoreError>) -> Result<T, NotStored> {
        match result {
            Ok(v) => {
                self.health.succeeded();
                Ok(v)
            }
            Err(e) => {
                let reason = e.to_string();
                if let Some(count) = self.errors.hit(Instant::now()) {
                    tracing::error!(error = %reason, count, "Cannot store {what} (count since the last such line).");
                }
                self.health.failed(reason.clone());
                Err(NotStored::Refused(reason))
            }
        }
    }
}

fn run(state: &mut State, rx: mpsc::Receiver<Op>, interval: Duration) {
    let mut pending: HashMap<String, NodeWrite> = HashMap::new();
    let mut waiters = Vec::new();
    let mut deadline = Instant::now() + interval;
    loop {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let closed = match rx.recv_timeout(timeout) {
            Ok(op) => {
                let mut next = Some(op);
                // Drain what is already queued without waiting.
                while let Some(op) = next.take().or_else(|| rx.try_recv().ok()) {
                    match op {
                        Op::Action(result, reply) => {
                            let started = state.begin();
                            let put = state.store.put_action(&result);
                            state.timed(started, &put);
                            let _ = reply.send(state.outcome("an action result", put));
                        }
                        Op::Campaign(write, reply) => {
                            let started = state.begin();
                            let put = state.store.write_campaign(&write);
                            state.timed(started, &put);
                            let _ = reply.send(state.outcome("a campaign change", put));
                        }
                        Op::Revoke(revocation, reply) => {
                            let put = state.store.revoke(&revocation);
                            let _ = reply.send(state.outcome("a revocation", put));
                        }
                        Op::Revocations(seq, reply) => {
                            // A read: it says nothing of whether writes work.
                            let read = state
                                .store
                                .revocations_since(seq)
                                .map_err(|e| NotStored::Refused(e.to_string()));
                            let _ = reply.send(read);
                        }
                        Op::Certificate(cert, reply) => {
                            let put = state.store.record_certificate(&cert);
                            let _ = reply.send(state.outcome("a signed certificate", put));
                        }
                        Op::SignedFor(identity, reply) => {
                            let read = state.store.serials_signed_for(&identity);
                            let _ = reply.send(read.map_err(|e| NotRead::Failed(e.to_string())));
                        }
                        Op::Forget(node, line, reply) => {
                            pending.remove(&node);
                            let done = state.store.forget_node(&node, &line);
                            let done = state.outcome("a forgotten node", done);
                            if done.is_err() {
                                state.forgets.push((node, line));
                            }
                            let _ = reply.send(done);
                        }
                        Op::Audit(line, reply) => {
                            let done = state.store.record_audit(&line);
                            let _ = reply.send(state.outcome("an audit line", done));
                        }
                        Op::ReadAudit {
                            after,
                            limit,
                            reply,
                        } => {
                            let read = state.store.read_audit(after, limit);
                            let _ = reply.send(read.map_err(|e| NotRead::Failed(e.to_string())));
                        }
                        other => absorb(&mut pending, &mut waiters, other),
                    }
                }
                false
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };
        if closed || !waiters.is_empty() || Instant::now() >= deadline {
            commit(state, &mut pending);
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
            deadline = Instant::now() + interval;
        }
        if closed {
            return;
        }
    }
}

fn absorb(
    pending: &mut HashMap<String, NodeWrite>,
    waiters: &mut Vec<oneshot::Sender<()>>,
    op: Op,
) {
    match op {
        Op::Put(change) => match pending.get_mut(&change.node.name) {
            // The newer record wins; a section not in the newer change stays
            // queued as it was.
            Some(queued) => {
                let NodeWrite { node, sections } = *change;
                queued.node = node;
                for section in sections {
                    queued.sections.retain(|s| s.name() != section.name());
                    queued.sections.push(section);
                }
            }
            None => {
                pending.insert(change.node.name.clone(), *change);
            }
        },
        Op::Flush(w) => waiters.push(w),
        Op::Action(..)
        | Op::Campaign(..)
        | Op::Revoke(..)
        | Op::Revocations(..)
        | Op::Certificate(..)
        | Op::SignedFor(..)
        | Op::Forget(..)
        | Op::Audit(..)
        | Op::ReadAudit { .. } => {
            unreachable!("everything but node changes and flushes is handled by the loop")
        }
    }
}

fn commit(state: &mut State, pending: &mut HashMap<String, NodeWrite>) {
    for (node, line) in std::mem::take(&mut state.forgets) {
        let done = state.store.forget_node(&node, &line);
        if state.outcome("a forgotten node", done).is_err() {
            state.forgets.push((node, line));
        } else {
            tracing::info!(node = %node, "Forgotten node removed from the store after all.");
        }
    }
    if pending.is_empty() {
        // Nothing to write, but a failing store must learn when it can
        // write again: the scheduler holds every campaign until then.
        if state.health.is_failing() && state.forgets.is_empty() {
            let probe = state.store.probe();
            let _ = state.outcome("the probe row", probe);
        }
        return;
    }
    let started = state.begin();
    let written = state.store.write_nodes(&mut pending.values());
    state.timed(started, &written);
    // Kept on failure and tried again at the next interval: a full disk or
    // a locked file must not lose the fleet's state.
    if let Ok(n) = state.outcome("node changes", written) {
        pending.clear();
        // A checkpoint or a reconnect storm queues every node at once;
        // do not keep room for that between bursts.
        if pending.capacity() > 4_096 {
            pending.shrink_to(1_024);
        }
        tracing::debug!(
            nodes = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Store committed."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{node, temp_data_dir};
    use crate::store::{FaultSwitch, Faulty, Section, Store};
    use rollcall_proto::model::{RebootSection, UpdatesSection};
    use rollcall_proto::pack::Pack;

    #[tokio::test]
    async fn coalesces_changes_per_node_and_keeps_the_last_of_each_section() {
        let dir = temp_data_dir("writer");
        let store = Store::open(&dir).expect("open");
        let (writer, handle) = Writer::spawn(store, Duration::from_secs(3600));
        let updates = |count| {
            Section::Updates(Some(
                UpdatesSection {
                    count,
                    ..Default::default()
                }
                .pack(),
            ))
        };
        for seq in 1..=100 {
            let mut n = node("a");
            n.last_report_seq = seq;
            handle.put(NodeWrite {
                node: n,
                sections: vec![updates(seq as u32)],
            });
        }
        let mut offline = node("a");
        offline.online = false;
        offline.last_report_seq = 100;
        handle.put(NodeWrite {
            node: offline,
            sections: vec![Section::Reboot(Some(RebootSection::default().pack()))],
        });
        handle.flush().await;
        let stored = Store::open(&dir)
            .expect("open")
            .load_node("a")
            .expect("load")
            .expect("a");
        assert!(!stored.node.online);
        let report = stored.report.expect("report");
        assert_eq!(report.seq, 100);
        assert_eq!(report.updates.map(|u| u.count), Some(100));
        assert!(report.reboot.is_some());
        drop(handle);
        writer.join().expect("a clean end");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_failing_store_says_so_keeps_node_changes_and_recovers_by_itself() {
        let dir = temp_data_dir("writer-faults");
        let store = Store::open(&dir).expect("open");
        let switch = FaultSwitch::default();
        let (writer, handle) = Writer::spawn(
            Faulty::new(store, switch.clone()),
            Duration::from_millis(50),
        );
        let mut health = handle.health();
        assert!(health.borrow().failing.is_none());
        switch.fail("disk full");
        let result = rollcall_proto::model::ActionResult::issued("a1", "a");
        assert_eq!(
            handle.put_action(result.clone()).await,
            Err(NotStored::Refused("disk full".into())),
            "not stored, and why"
        );
        assert_eq!(
            health.borrow_and_update().describe(),
            "store failing: disk full"
        );
        handle.put(NodeWrite {
            node: node("a"),
            sections: vec![],
        });
        handle.flush().await;
        let stored = || {
            Store::open(&dir)
                .expect("open")
                .load_node("a")
                .expect("load")
                .is_some()
        };
        assert!(!stored(), "nothing written while failing");
        // Space returns: the probe (or the kept node change) finds out
        // without anyone writing anything new.
        switch.heal();
        tokio::time::timeout(Duration::from_secs(5), health.changed())
            .await
            .expect("recovers within a few intervals")
            .expect("writer alive");
        assert!(health.borrow().failing.is_none());
        handle.flush().await;
        assert!(
            stored(),
            "the kept node change is written once the store recovers"
        );
        drop(handle);
        writer.join().expect("a clean end");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_forget_the_store_refused_is_tried_again_before_later_changes() {
        use crate::audit::{AuditAction, AuditRecord};
        use rollcall_proto::identity::{Identity, Role};
        let dir = temp_data_dir("writer-forget");
        let store = Store::open(&dir).expect("open");
        let switch = FaultSwitch::default();
        let (writer, handle) = Writer::spawn(
            Faulty::new(store, switch.clone()),
            Duration::from_millis(50),
        );
        for name in ["a", "b"] {
            handle.put(NodeWrite {
                node: node(name),
                sections: vec![],
            });
        }
        handle.flush().await;
        let admin = Identity::operator("root", Role::Admin);
        let line = |n: &str| AuditRecord::new(&admin, AuditAction::ForgetNode, n, "");
        let mut health = handle.health();
        switch.fail("disk full");
        for name in ["a", "b"] {
            assert_eq!(
                handle.forget(name, line(name)).await,
                Err(NotStored::Refused("disk full".into()))
            );
        }
        // "a" comes back as a new node while the store still fails.
        let mut back = node("a");
        back.agent_version = "new life".into();
        handle.put(NodeWrite {
            node: back,
            sections: vec![],
        });
        switch.heal();
        tokio::time::timeout(Duration::from_secs(5), async {
            while health.borrow_and_update().failing.is_some() {
                health.changed().await.expect("writer alive");
            }
        })
        .await
        .expect("recovers within a few intervals");
        handle.flush().await;
        let mut stored = Store::open(&dir).expect("open");
        assert!(
            stored.load_node("b").expect("load").is_none(),
            "b removed after all"
        );
        let a = stored.load_node("a").expect("load").expect("a is back");
        assert_eq!(
            a.node.agent_version, "new life",
            "its new life, written after the removal"
        );
        assert_eq!(stored.read_audit(0, 10).expect("audit").len(), 2);
        drop(handle);
        writer.join().expect("a clean end");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A backend whose first action write panics: a bug in the store.
    struct Panicky;

    impl Backend for Panicky {
        fn put_action(&mut self, _: &ActionResult) -> Result<(), StoreError> {
            panic!("the backend lost its mind")
        }
        fn write_campaign(&mut self, _: &CampaignWrite) -> Result<(), StoreError> {
            Ok(())
        }
        fn write_nodes(
            &mut self,
            batch: &mut dyn Iterator<Item = &NodeWrite>,
        ) -> Result<usize, StoreError> {
            Ok(batch.count())
        }
        fn probe(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn revoke(&mut self, r: &Revocation) -> Result<Revocation, StoreError> {
            Ok(r.clone())
        }
        fn revocations_since(&mut self, _: i64) -> Result<Vec<(i64, Revocation)>, StoreError> {
            Ok(Vec::new())
        }
        fn record_certificate(&mut self, _: &SignedCertificate) -> Result<(), StoreError> {
            Ok(())
        }
        fn serials_signed_for(&mut self, _: &str) -> Result<Vec<Serial>, StoreError> {
            Ok(Vec::new())
        }
        fn forget_node(&mut self, _: &str, _: &AuditRecord) -> Result<u64, StoreError> {
            Ok(1)
        }
        fn record_audit(&mut self, _: &AuditRecord) -> Result<u64, StoreError> {
            Ok(1)
        }
        fn read_audit(&mut self, _: u64, _: usize) -> Result<Vec<AuditRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn each_node(
            &mut self,
            _: &mut dyn FnMut(crate::store::StoredNode),
        ) -> Result<(), StoreError> {
            Ok(())
        }
        fn load_actions(&mut self) -> Result<Vec<ActionResult>, StoreError> {
            Ok(Vec::new())
        }
        fn load_campaigns(&mut self) -> Result<Vec<crate::store::StoredCampaign>, StoreError> {
            Ok(Vec::new())
        }
        fn describe(&self) -> String {
            "panicky".into()
        }
    }

    #[tokio::test]
    async fn a_writer_that_panics_says_why_and_stores_nothing_more() {
        let (writer, handle) = Writer::spawn(Panicky, Duration::from_secs(3600));
        let result = rollcall_proto::model::ActionResult::issued("a1", "a");
        assert_eq!(
            handle.put_action(result).await,
            Err(NotStored::WriterStopped)
        );
        // The handle is still held: only the panic can have ended it.
        let ended = tokio::time::timeout(Duration::from_secs(5), writer.finished())
            .await
            .expect("the writer ended");
        assert_eq!(
            ended,
            Err(WriterPanicked("the backend lost its mind".into()))
        );
        assert_eq!(
            handle.put_campaign(CampaignWrite::default()).await,
            Err(NotStored::WriterStopped),
            "nothing is stored after it"
        );
    }
}
