//! How long a report takes to reach operators: an operator's WatchNodes
//! stream sees each node's new `last_report_at` (the report's
//! `collected_at`, stamped by the sending agent on this host's clock), and
//! the delay is the time of that event minus `last_report_at`.
//!
//! The watcher attaches again whenever its stream ends (a restarted server,
//! or a watcher that fell behind and was cut off), so it also tells when
//! every node has reported to a new server.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_proto::convert::timestamp_from_wire;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use rollcall_proto::v1::operator_service_client::OperatorServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

#[derive(Default)]
struct State {
    measuring: AtomicBool,
    /// Report → visible delays (ms) seen while measuring.
    delays: Mutex<Vec<u64>>,
    /// Nodes seen with a report collected at or after this instant.
    since: Mutex<Option<(Timestamp, HashSet<String>)>>,
    attaches: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A WatchNodes stream that keeps itself attached until dropped.
pub struct Visibility {
    state: Arc<State>,
    stop: CancellationToken,
}

impl Visibility {
    /// Starts watching with an operator certificate; returns once the first
    /// stream is attached.
    pub async fn start(endpoint: Endpoint) -> anyhow::Result<Self> {
        let state = Arc::new(State::default());
        let stop = CancellationToken::new();
        let first = attach(&endpoint).await?;
        state.attaches.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(watch(endpoint, first, state.clone(), stop.clone()));
        Ok(Self { state, stop })
    }

    /// Collect delays from now on (true) or no longer (false).
    pub fn set_measuring(&self, on: bool) {
        self.state.measuring.store(on, Ordering::Relaxed);
    }

    /// The delays (ms) collected so far, sorted; clears them.
    pub fn take_delays(&self) -> Vec<u64> {
        let mut d =
            std::mem::take(&mut *self.state.delays.lock().expect("no panic holds this lock"));
        d.sort_unstable();
        d
    }

    /// From now on, note every node whose report was collected at or
    /// after `since`.
    pub fn track_reports_since(&self, since: Timestamp) {
        *self.state.since.lock().expect("no panic holds this lock") = Some((since, HashSet::new()));
    }

    /// How many nodes reported since [`Self::track_reports_since`].
    pub fn reported_since(&self) -> usize {
        self.state
            .since
            .lock()
            .expect("no panic holds this lock")
            .as_ref()
            .map_or(0, |(_, seen)| seen.len())
    }

    /// Streams attached so far (1 if the stream never broke).
    pub fn attaches(&self) -> u64 {
        self.state.attaches.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.state
            .last_error
            .lock()
            .expect("no panic holds this lock")
            .clone()
    }
}

impl Drop for Visibility {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn attach(endpoint: &Endpoint) -> anyhow::Result<tonic::Streaming<v1::NodeEvent>> {
    let channel = endpoint.connect().await?;
    let mut op = OperatorServiceClient::new(channel).max_decoding_message_size(64 << 20);
    Ok(op
        .watch_nodes(v1::WatchNodesRequest::default())
        .await?
        .into_inner())
}

async fn watch(
    endpoint: Endpoint,
    mut stream: tonic::Streaming<v1::NodeEvent>,
    state: Arc<State>,
    stop: CancellationToken,
) {
    loop {
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            ended = follow(&mut stream, &state) => ended,
        };
        *state.last_error.lock().expect("no panic holds this lock") = Some(ended);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            match attach(&endpoint).await {
                Ok(s) => {
                    stream = s;
                    state.attaches.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    *state.last_error.lock().expect("no panic holds this lock") =
                        Some(format!("cannot watch: {e}"));
                }
            }
        }
    }
}

/// Follows one stream until it ends; returns why.
async fn follow(stream: &mut tonic::Streaming<v1::NodeEvent>, state: &State) -> String {
    loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => return "watch stream ended".to_owned(),
            Err(s) => return format!("watch stream failed: {:?}: {}", s.code(), s.message()),
        };
        let Some(node) = event.node else { continue };
        let Some(at) = node.last_report_at.as_ref().map(timestamp_from_wire) else {
            continue;
        };
        if event.kind == v1::NodeEventKind::Report as i32 && state.measuring.load(Ordering::Relaxed)
        {
            let now = Timestamp::now().unix_millis();
            let delay = u64::try_from(now - at.unix_millis()).unwrap_or(0);
            state
                .delays
                .lock()
                .expect("no panic holds this lock")
                .push(delay);
        }
        if let Some((since, seen)) = &mut *state.since.lock().expect("no panic holds this lock")
            && at >= *since
            && !seen.contains(&node.name)
        {
            seen.insert(node.name);
        }
    }
}
