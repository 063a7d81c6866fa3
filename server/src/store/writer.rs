//! The store's write path: one thread owns the SQLite connection, collects
//! node changes from a channel, keeps only the newest record and the newest
//! of each report section per node, and commits them together once per
//! flush interval.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use rollcall_proto::model::ActionResult;

use crate::campaign::record::CampaignWrite;

use super::{NodeWrite, Store};

enum Op {
    Put(Box<NodeWrite>),
    Flush(oneshot::Sender<()>),
    /// Committed at once; the answer says whether it is on disk.
    Action(Box<ActionResult>, oneshot::Sender<bool>),
    /// Committed at once, in one transaction.
    Campaign(Box<CampaignWrite>, oneshot::Sender<bool>),
}

/// Sends changes to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Op>,
}

impl WriterHandle {
    /// Queues a node change; it is committed within one flush interval.
    pub fn put(&self, node: NodeWrite) {
        if self.tx.send(Op::Put(Box::new(node))).is_err() {
            tracing::error!("Store writer has stopped; a node change was not saved.");
        }
    }

    /// Stores an action result durably before returning true; false means
    /// it is not stored (the agent keeps it and sends it again).
    pub async fn put_action(&self, result: ActionResult) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Action(Box::new(result), tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Stores an action record without waiting; it is committed before
    /// anything queued after it.
    pub fn queue_action(&self, result: ActionResult) {
        let (tx, _) = oneshot::channel();
        let _ = self.tx.send(Op::Action(Box::new(result), tx));
    }

    /// Stores a campaign change durably before returning true; false means
    /// it is not stored and must not be acted on.
    pub async fn put_campaign(&self, write: CampaignWrite) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Campaign(Box::new(write), tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
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
/// is left and stop; [`Writer::join`] waits for that.
pub struct Writer {
    thread: thread::JoinHandle<()>,
}

impl Writer {
    pub fn spawn(store: Store, interval: Duration) -> (Writer, WriterHandle) {
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("rollcall-store".into())
            .spawn(move || run(store, rx, interval))
            .expect("spawning a thread only fails when the OS is out of resources");
        (Writer { thread }, WriterHandle { tx })
    }

    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("Store writer thread panicked.");
        }
    }
}

fn run(mut store: Store, rx: mpsc::Receiver<Op>, interval: Duration) {
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
                            let stored = match store.put_action(&result) {
                                Ok(()) => true,
                                Err(e) => {
                                    tracing::error!(action_id = %result.id, error = %e, "Cannot store an action result.");
                                    false
                                }
                            };
                            let _ = reply.send(stored);
                        }
                        Op::Campaign(write, reply) => {
                            let stored = match store.write_campaign(&write) {
                                Ok(()) => true,
                                Err(e) => {
                                    tracing::error!(error = %e, "Cannot store a campaign change.");
                                    false
                                }
                            };
                            let _ = reply.send(stored);
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
            commit(&mut store, &mut pending);
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
        Op::Action(..) | Op::Campaign(..) => {
            unreachable!("actions and campaigns are handled by the loop")
        }
    }
}

fn commit(store: &mut Store, pending: &mut HashMap<String, NodeWrite>) {
    if pending.is_empty() {
        return;
    }
    let started = Instant::now();
    match store.write_nodes(pending.values()) {
        Ok(n) => {
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
        // Keep the changes and try again at the next interval: a full disk
        // or a locked file must not lose the fleet's state.
        Err(e) => {
            tracing::error!(error = %e, pending = pending.len(), "Store commit failed; will retry.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Section;
    use crate::store::tests::{node, temp_data_dir};
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
        writer.join();
        std::fs::remove_dir_all(&dir).ok();
    }
}
