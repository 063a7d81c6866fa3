//! Containers through the Docker Engine API (or Podman's Docker-compatible
//! socket): what `docker ps -a` and `docker inspect` show, kept current by
//! the engine's event stream.
//!
//! A watcher task owns the connection. It lists and inspects every
//! container at start and at every poll, follows the event stream and
//! re-inspects a container as soon as it starts, dies, restarts or changes
//! health, and publishes the whole section on a `watch` channel whenever it
//! changes. If the event stream breaks, it polls every couple of seconds
//! until the stream is back. If the engine is unreachable, the section says
//! so and the watcher keeps retrying.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use rollcall_proto::model::{Container, ContainerHealth, ContainerState, ContainersSection};
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// Health-check output kept per container.
const HEALTH_OUTPUT_MAX: usize = 512;
/// Labels kept per container.
const LABELS_MAX: usize = 32;
/// Events that change what we report about a container.
const INTERESTING: &[&str] = &[
    "create", "start", "restart", "die", "stop", "kill", "oom", "pause", "unpause", "destroy",
    "rename", "update",
];

#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Path of the engine's API socket.
    pub socket: String,
    /// Full re-list and re-inspect, even while events flow.
    pub poll_interval: Duration,
    /// Poll interval while the event stream is broken.
    pub fallback_poll_interval: Duration,
    /// Per-request timeout towards the engine.
    pub request_timeout: Duration,
    /// Only containers carrying every one of these labels (`key` or
    /// `key=value`, the engine's own label filter); empty: every container.
    pub labels: Vec<String>,
}

/// Starts the watcher; the receiver always holds the latest section.
pub fn spawn(
    config: WatcherConfig,
    shutdown: CancellationToken,
) -> watch::Receiver<ContainersSection> {
    let initial = ContainersSection {
        available: false,
        error: "not checked yet".into(),
        ..Default::default()
    };
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(run(config, tx, shutdown));
    rx
}

async fn run(
    config: WatcherConfig,
    tx: watch::Sender<ContainersSection>,
    shutdown: CancellationToken,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let ended = tokio::select! {
            _ = shutdown.cancelled() => return,
            ended = watch_engine(&config, &tx) => ended,
        };
        // The engine went away or never answered: say so, keep trying.
        tracing::warn!(socket = %config.socket, error = %ended, retry_secs = retry.as_secs(), "Container engine unavailable.");
        publish(
            &tx,
            ContainersSection {
                available: false,
                error: ended,
                ..Default::default()
            },
        );
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(30));
    }
}

/// One look at the engine (for `rollcall-agent once`).
pub async fn snapshot(socket: &str, labels: &[String]) -> ContainersSection {
    let config = WatcherConfig {
        socket: socket.to_owned(),
        poll_interval: Duration::from_secs(3_600),
        fallback_poll_interval: Duration::from_secs(3_600),
        request_timeout: Duration::from_secs(10),
        labels: labels.to_vec(),
    };
    let (tx, mut rx) = watch::channel(ContainersSection::default());
    tokio::select! {
        ended = watch_engine(&config, &tx) => ContainersSection { available: false, error: ended, ..Default::default() },
        _ = rx.changed() => rx.borrow().clone(),
    }
}

fn publish(tx: &watch::Sender<ContainersSection>, section: ContainersSection) {
    tx.send_if_modified(|current| {
        if *current == section {
            false
        } else {
            *current = section;
            true
        }
    });
}

/// Connects and keeps the section current until the engine fails; returns
/// why it stopped.
async fn watch_engine(config: &WatcherConfig, tx: &watch::Sender<ContainersSection>) -> String {
    let docker = match Docker::connect_with_unix(
        &config.socket,
        config.request_timeout.as_secs().max(1),
        bollard::API_DEFAULT_VERSION,
    ) {
        Ok(d) => d,
        Err(e) => return format!("cannot use socket {}: {e}", config.socket),
    };
    // Older engines (Docker 20.10 speaks API 1.41) refuse newer API paths.
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(e) => return format!("engine at {} does not answer: {e}", config.socket),
    };
    let engine = match docker.version().await {
        Ok(v) => format!(
            "{} {} (API {})",
            if v.components
                .iter()
                .flatten()
                .any(|c| c.name.to_lowercase().contains("podman"))
            {
                "Podman"
            } else {
                "Docker"
            },
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ),
        Err(e) => return format!("engine at {} does not answer: {e}", config.socket),
    };
    let mut cache = Cache {
        labels: config.labels.clone(),
        ..Cache::default()
    };
    if let Err(e) = cache.refresh_all(&docker).await {
        return e;
    }
    publish(tx, cache.section(&engine));

    // Ask only for what changes the report: a busy node runs a health
    // check every few seconds per container, each one three exec events.
    let mut wanted = INTERESTING.to_vec();
    wanted.push("health_status");
    let mut filters: HashMap<&str, Vec<&str>> =
        [("type", vec!["container"]), ("event", wanted)].into();
    if !config.labels.is_empty() {
        filters.insert("label", config.labels.iter().map(String::as_str).collect());
    }
    let mut events = Box::pin(docker.events(Some(
        EventsOptionsBuilder::default().filters(&filters).build(),
    )));
    let mut events_ok = true;
    let mut poll = tokio::time::interval(config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    let mut fallback = tokio::time::interval(config.fallback_poll_interval);
    fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next(), if events_ok => match event {
                Some(Ok(event)) => {
                    let action = event.action.unwrap_or_default();
                    // health_status events read "health_status: unhealthy".
                    let relevant = action.starts_with("health_status") || INTERESTING.contains(&action.as_str());
                    let id = event.actor.and_then(|a| a.id).unwrap_or_default();
                    if relevant && !id.is_empty() {
                        if let Err(e) = cache.refresh_one(&docker, &id).await {
                            return e;
                        }
                        publish(tx, cache.section(&engine));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Container event stream broke; polling until it is back.");
                    events_ok = false;
                }
                None => {
                    tracing::warn!("Container event stream ended; polling until it is back.");
                    events_ok = false;
                }
            },
            _ = poll.tick() => {
                if let Err(e) = cache.refresh_all(&docker).await {
                    return e;
                }
                publish(tx, cache.section(&engine));
                if !events_ok {
                    events = Box::pin(docker.events(Some(EventsOptionsBuilder::default().filters(&filters).build())));
                    events_ok = true;
                }
            }
            _ = fallback.tick(), if !events_ok => {
                if let Err(e) = cache.refresh_all(&docker).await {
                    return e;
                }
                publish(tx, cache.section(&engine));
            }
        }
    }
}

/// What the last list said about a container; a change means re-inspect.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ListKey {
    state: String,
    health: &'static str,
}

fn list_key(state: Option<String>, status: &str) -> ListKey {
    let health = if status.contains("(unhealthy)") {
        "unhealthy"
    } else if status.contains("(healthy)") {
        "healthy"
    } else if status.contains("health: starting") {
        "starting"
    } else {
        ""
    };
    ListKey {
        state: state.unwrap_or_default(),
        health,
    }
}

#[derive(Default)]
struct Cache {
    containers: HashMap<String, (ListKey, Container)>,
    polls: u64,
    labels: Vec<String>,
}

/// Every this many polls, every container is inspected again even if the
/// list shows no change (failing streaks and health output move on).
const FULL_INSPECT_EVERY: u64 = 6;

impl Cache {
    async fn refresh_all(&mut self, docker: &Docker) -> Result<(), String> {
        let mut builder = ListContainersOptionsBuilder::default().all(true);
        if !self.labels.is_empty() {
            let filters: HashMap<&str, Vec<&str>> =
                [("label", self.labels.iter().map(String::as_str).collect())].into();
            builder = builder.filters(&filters);
        }
        let options = builder.build();
        let list = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("listing containers failed: {e}"))?;
        self.polls += 1;
        let force = self.polls.is_multiple_of(FULL_INSPECT_EVERY);
        let mut seen = HashMap::with_capacity(list.len());
        for summary in list {
            let Some(id) = summary.id else { continue };
            let key = list_key(
                summary.state.map(|s| s.to_string()),
                summary.status.as_deref().unwrap_or(""),
            );
            let cached = self
                .containers
                .remove(&id)
                .filter(|(k, _)| !force && *k == key);
            let entry = match cached {
                Some(entry) => entry,
                None => match inspect(docker, &id).await? {
                    Some(c) => (key, c),
                    None => continue, // removed between list and inspect
                },
            };
            seen.insert(id, entry);
        }
        self.containers = seen;
        Ok(())
    }

    async fn refresh_one(&mut self, docker: &Docker, id: &str) -> Result<(), String> {
        match inspect(docker, id).await? {
            Some(c) => {
                // The list key is unknown here; the next poll re-inspects if
                // the list disagrees.
                let key = ListKey {
                    state: c.state.to_string(),
                    health: match c.health {
                        ContainerHealth::Healthy => "healthy",
                        ContainerHealth::Unhealthy => "unhealthy",
                        ContainerHealth::Starting => "starting",
                        ContainerHealth::None => "",
                    },
                };
                self.containers.insert(id.to_owned(), (key, c));
            }
            None => {
                self.containers.remove(id);
            }
        }
        Ok(())
    }

    fn section(&self, engine: &str) -> ContainersSection {
        let mut containers: Vec<Container> =
            self.containers.values().map(|(_, c)| c.clone()).collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        ContainersSection {
            available: true,
            error: String::new(),
            engine: engine.to_owned(),
            containers,
        }
    }
}

/// Inspects one container; `None` if it no longer exists.
async fn inspect(docker: &Docker, id: &str) -> Result<Option<Container>, String> {
    match docker.inspect_container(id, None).await {
        Ok(details) => Ok(Some(from_inspect(details))),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(format!("inspecting container {id} failed: {e}")),
    }
}

/// The engine's times: RFC 3339 with nanoseconds; year 1 means "never".
fn engine_time(s: Option<&str>) -> Option<Timestamp> {
    let t = Timestamp::parse_rfc3339(s?)?;
    (t.unix_millis() > 0).then_some(t)
}

fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub fn from_inspect(d: ContainerInspectResponse) -> Container {
    let state = d.state.unwrap_or_default();
    let health = state.health.unwrap_or_default();
    let config = d.config.unwrap_or_default();
    let last_output = health
        .log
        .as_ref()
        .and_then(|log| log.last())
        .and_then(|r| r.output.as_deref())
        .map(|o| truncate(o, HEALTH_OUTPUT_MAX))
        .unwrap_or_default();
    let labels: BTreeMap<String, String> = config
        .labels
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (truncate(&k, 256), truncate(&v, 256)))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .take(LABELS_MAX)
        .collect();
    Container {
        id: d.id.unwrap_or_default(),
        name: d
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config.image.unwrap_or_default(),
        image_id: d.image.unwrap_or_default(),
        state: match state.status {
            Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
            Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
            Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
            Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
            Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
            Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
            Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
            _ => ContainerState::Unknown,
        },
        health: match health.status {
            Some(HealthStatusEnum::STARTING) => ContainerHealth::Starting,
            Some(HealthStatusEnum::HEALTHY) => ContainerHealth::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => ContainerHealth::Unhealthy,
            _ => ContainerHealth::None,
        },
        failing_streak: u32::try_from(health.failing_streak.unwrap_or(0)).unwrap_or(0),
        last_health_output: last_output,
        restart_count: u32::try_from(d.restart_count.unwrap_or(0)).unwrap_or(0),
        exit_code: state.exit_code.unwrap_or(0),
        started_at: engine_time(state.started_at.as_deref()),
        finished_at: engine_time(state.finished_at.as_deref()),
        labels,
        oom_killed: state.oom_killed.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_status_text_gives_the_health() {
        assert_eq!(
            list_key(Some("running".into()), "Up 3 minutes (unhealthy)").health,
            "unhealthy"
        );
        assert_eq!(
            list_key(Some("running".into()), "Up 3 minutes (healthy)").health,
            "healthy"
        );
        assert_eq!(
            list_key(Some("running".into()), "Up 1 second (health: starting)").health,
            "starting"
        );
        assert_eq!(
            list_key(Some("exited".into()), "Exited (0) 5 seconds ago").health,
            ""
        );
    }

    #[test]
    fn engine_times_and_the_zero_time() {
        assert_eq!(engine_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(
            engine_time(Some("2026-11-23T08:05:38.123456789Z")),
            Some(Timestamp::from_unix_millis(1_795_421_138_123))
        );
        assert_eq!(engine_time(None), None);
    }

    #[test]
    fn inspect_output_of_a_real_engine_maps_to_a_container() {
        // Captured with `curl --unix-socket /var/run/docker.sock
        // http://localhost/v1.41/containers/ID/json` from Docker 20.10 and
        // cut to the fields we read.
        let json = include_str!("../../tests/fixtures/docker-inspect-unhealthy.json");
        let details: ContainerInspectResponse = serde_json::from_str(json).expect("fixture parses");
        let c = from_inspect(details);
        assert_eq!(c.name, "rollcall-fixture-web");
        assert_eq!(c.state, ContainerState::Running);
        assert_eq!(c.health, ContainerHealth::Unhealthy);
        assert_eq!(c.failing_streak, 5);
        assert_eq!(c.last_health_output, "missing /tmp/healthy");
        assert_eq!(c.restart_count, 2);
        // The previous run's end: the container restarted after it.
        assert!(c.started_at > c.finished_at && c.finished_at.is_some());
        assert_eq!(
            c.labels.get("kolla_version").map(String::as_str),
            Some("18.1.0")
        );
    }
}
