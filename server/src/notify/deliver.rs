//! One webhook's delivery: a bounded queue the scheduler pushes to without
//! waiting, and a task that POSTs its events in order, each tried again
//! with backoff until it is taken or `retry_secs` ran out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Kind, Notice, body};
use crate::config::NotifyConfig;
use crate::http::{HttpClient, HttpOptions, HttpResponse, origin};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LONGEST_RETRY: Duration = Duration::from_secs(60);

/// The queue both sides share.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Notice>,
    /// Dropped from the full queue since the last delivery.
    dropped: u64,
}

/// A handle on one webhook's queue (cheap to clone).
#[derive(Clone)]
pub struct Webhook {
    events: Option<Vec<Kind>>,
    capacity: usize,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
}

impl Webhook {
    pub fn start(
        index: usize,
        config: &NotifyConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, String> {
        let client = HttpClient::new(HttpOptions {
            timeout: Duration::from_secs(config.timeout_secs.into()),
            // A receiver's answer is read only for its status and a line.
            max_body_bytes: 64 * 1024,
            ca_file: config.ca.clone(),
        })
        .map_err(|e| e.to_string())?;
        let events = if config.events.is_empty() {
            None
        } else {
            let kinds = config
                .events
                .iter()
                .map(|e| e.parse::<Kind>())
                .collect::<Result<_, _>>();
            Some(kinds.map_err(|e| e.to_string())?)
        };
        let webhook = Self::new(events, config.queue);
        let delivery = Delivery {
            index,
            url: config.url.clone(),
            host: origin(&config.url),
            slack: config.slack,
            retry_for: Duration::from_secs(config.retry_secs.into()),
            client,
        };
        tokio::spawn(delivery.run(webhook.clone(), shutdown));
        Ok(webhook)
    }

    fn new(events: Option<Vec<Kind>>, capacity: usize) -> Self {
        Self {
            events,
            capacity,
            queue: Arc::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Queues `notice` if this webhook takes its kind; a full queue drops
    /// its oldest event. Never waits.
    pub fn offer(&self, notice: &Notice) {
        if self
            .events
            .as_ref()
            .is_some_and(|e| !e.contains(&notice.kind))
        {
            return;
        }
        let mut queue = self
            .queue
            .lock()
            .expect("the notify queue's lock is never poisoned");
        if queue.waiting.len() >= self.capacity {
            queue.waiting.pop_front();
            queue.dropped += 1;
        }
        queue.waiting.push_back(notice.clone());
        drop(queue);
        self.wake.notify_one();
    }

    fn front(&self) -> Option<(Notice, u64)> {
        let queue = self
            .queue
            .lock()
            .expect("the notify queue's lock is never poisoned");
        queue.waiting.front().map(|n| (n.clone(), queue.dropped))
    }

    /// Removes the front event if it is still `notice` (a full queue may
    /// have dropped it meanwhile); `delivered` clears the dropped count it
    /// reported.
    fn done(&self, notice: &Notice, reported: u64, delivered: bool) {
        let mut queue = self
            .queue
            .lock()
            .expect("the notify queue's lock is never poisoned");
        // A full queue may have dropped this very event while it was being
        // delivered: then it was counted as dropped, and it was not.
        let still_queued = queue.waiting.front() == Some(notice);
        if still_queued {
            queue.waiting.pop_front();
        }
        if delivered {
            let arrived_though_dropped = u64::from(!still_queued);
            queue.dropped = queue
                .dropped
                .saturating_sub(reported + arrived_though_dropped);
        }
    }
}

/// What the delivery task knows; `url` is never logged (a Slack-style URL
/// carries its secret), `host` is.
struct Delivery {
    index: usize,
    url: String,
    host: String,
    slack: bool,
    retry_for: Duration,
    client: HttpClient,
}

/// How one try ended.
enum Outcome {
    Delivered,
    /// Worth another try (no answer, 408, 429, 5xx).
    Retry(String),
    /// The receiver refuses this body: another try would be refused too.
    Refused(String),
}

impl Delivery {
    async fn run(self, webhook: Webhook, shutdown: CancellationToken) {
        loop {
            let Some((notice, dropped)) = webhook.front() else {
                tokio::select! {
                    () = webhook.wake.notified() => continue,
                    () = shutdown.cancelled() => return,
                }
            };
            tokio::select! {
                delivered = self.deliver(&notice, dropped) => webhook.done(&notice, dropped, delivered),
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Tries until delivered, refused or out of time; whether delivered.
    async fn deliver(&self, notice: &Notice, dropped: u64) -> bool {
        let body = body(notice, dropped, self.slack);
        let started = tokio::time::Instant::now();
        let mut wait = FIRST_RETRY;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let why = match self.try_once(body.clone()).await {
                Outcome::Delivered => {
                    tracing::debug!(webhook = self.index, host = %self.host, event = %notice.kind, tries, "Webhook told.");
                    return true;
                }
                Outcome::Refused(why) => {
                    tracing::warn!(webhook = self.index, host = %self.host, event = %notice.kind, campaign = %notice.campaign, error = %why, "The webhook refused an event; it is given up.");
                    return false;
                }
                Outcome::Retry(why) => why,
            };
            if started.elapsed() + wait > self.retry_for {
                tracing::warn!(webhook = self.index, host = %self.host, event = %notice.kind, campaign = %notice.campaign, tries, error = %why, "An event could not be delivered to a webhook in time; it is given up.");
                return false;
            }
            if tries == 1 {
                tracing::warn!(webhook = self.index, host = %self.host, event = %notice.kind, error = %why, "A webhook delivery failed; trying again with backoff.");
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LONGEST_RETRY);
        }
    }

    async fn try_once(&self, body: Vec<u8>) -> Outcome {
        match self.client.post_json(&self.url, body).await {
            Ok(answer) => judge(&answer),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

fn judge(answer: &HttpResponse) -> Outcome {
    match answer.status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry(format!(
            "status {}: {}",
            answer.status,
            answer.body_line(200)
        )),
        status => Outcome::Refused(format!("status {status}: {}", answer.body_line(200))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_origin_of_a_webhook_is_ever_logged() {
        assert_eq!(
            origin("https://hooks.slack.com/services/T000/B000/SECRET?x=1"),
            "https://hooks.slack.com/…"
        );
    }

    fn notice(kind: Kind, node: &str) -> Notice {
        Notice {
            kind,
            at: rollcall_proto::timestamp::Timestamp::now(),
            campaign: "c1".into(),
            name: "n".into(),
            node: node.into(),
            reason: String::new(),
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_the_next_delivery_counts_them() {
        let webhook = Webhook::new(Some(vec![Kind::NodeFailed]), 2);
        webhook.offer(&notice(Kind::CampaignStarted, ""));
        assert!(webhook.front().is_none(), "a kind it did not ask for");
        for node in ["a", "b", "c", "d"] {
            webhook.offer(&notice(Kind::NodeFailed, node));
        }
        let (first, dropped) = webhook.front().expect("queued");
        assert_eq!((first.node.as_str(), dropped), ("c", 2));
        webhook.done(&first, dropped, true);
        // One more dropped while "c" was being delivered: still counted.
        webhook.offer(&notice(Kind::NodeFailed, "e"));
        webhook.offer(&notice(Kind::NodeFailed, "f"));
        let (next, dropped) = webhook.front().expect("queued");
        assert_eq!((next.node.as_str(), dropped), ("e", 1));
        // Dropped from the full queue while it was being delivered, then
        // delivered after all: not counted as dropped.
        let full = Webhook::new(None, 1);
        full.offer(&notice(Kind::NodeFailed, "x"));
        let (in_flight, reported) = full.front().expect("queued");
        full.offer(&notice(Kind::NodeFailed, "y"));
        full.done(&in_flight, reported, true);
        let (after, dropped) = full.front().expect("queued");
        assert_eq!((after.node.as_str(), dropped), ("y", 0));
        // A delivery given up leaves the count for the next one.
        webhook.done(&next, dropped, false);
        let (last, dropped) = webhook.front().expect("queued");
        assert_eq!((last.node.as_str(), dropped), ("f", 1));
    }

    #[test]
    fn server_errors_and_throttling_are_tried_again_other_refusals_are_not() {
        let answer = |status| HttpResponse {
            status,
            body: b"nope".to_vec(),
        };
        assert!(matches!(judge(&answer(204)), Outcome::Delivered));
        for status in [408, 429, 500, 503] {
            assert!(
                matches!(judge(&answer(status)), Outcome::Retry(_)),
                "{status}"
            );
        }
        for status in [400, 403, 404] {
            assert!(
                matches!(judge(&answer(status)), Outcome::Refused(_)),
                "{status}"
            );
        }
    }
}
