//! The container collector against the real Docker engine, with images
//! built here (scripts/build-test-images.sh; no registry). Changes made
//! with the real `docker` CLI must reach the operator API within 2 s.

use std::process::Command;
use std::time::{Duration, Instant};

use rollcall_agent::collect::{Sources, SystemCollector, containers};
use rollcall_agent::config::HostConfig;
use rollcall_proto::model::{Container, ContainerHealth, ContainerState, NodeContainer, Role};
use rollcall_proto::v1;
use rollcall_tests::{Pki, TestAgent, TestServer, in_ci, init};

const IMAGE: &str = "rollcall-test/busybox:1";
const SOCKET: &str = "/var/run/docker.sock";
/// How fast a change must show up in the operator API.
const PROMPT: Duration = Duration::from_secs(2);

/// Docker and the test image, or a loud skip outside CI (a failure in CI).
fn docker_ready() -> bool {
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    let engine_ok = engine.as_ref().is_ok_and(|o| o.status.success());
    let image_ok = engine_ok
        && Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .output()
            .is_ok_and(|o| o.status.success());
    if engine_ok && image_ok {
        return true;
    }
    let why = if engine_ok {
        format!("image {IMAGE} missing (scripts/build-test-images.sh builds it)")
    } else {
        "no Docker engine".into()
    };
    assert!(!in_ci(), "CI is set but the Docker suite cannot run: {why}");
    eprintln!("SKIPPED: {why}");
    false
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Containers made by one test, removed however the test ends.
struct Containers {
    prefix: String,
}

impl Containers {
    fn new(tag: &str) -> Self {
        Self {
            prefix: format!("rc-{tag}-{}", std::process::id()),
        }
    }

    fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// A service with a health check on /tmp/healthy, healthy from the start.
    fn run_service(&self, short: &str) -> String {
        self.run_labelled(short, &["kolla_version=18.1.0"])
    }

    /// Like `run_service`, with these labels (and the set's own).
    fn run_labelled(&self, short: &str, labels: &[&str]) -> String {
        let name = self.name(short);
        let set_label = format!("rollcall.test.set={}", self.prefix);
        let mut args = vec!["run", "-d", "--name", &name, "--label", "rollcall.test=yes"];
        args.extend(["--label", &set_label]);
        for l in labels {
            args.extend(["--label", l]);
        }
        args.extend([
            "--health-cmd",
            "test -f /tmp/healthy || (echo missing /tmp/healthy; exit 1)",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--health-timeout",
            "2s",
            IMAGE,
            "sh",
            "-c",
            "touch /tmp/healthy; exec sleep 3600",
        ]);
        docker(&args);
        name
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let list = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name={}", self.prefix)])
            .output();
        if let Ok(out) = list {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

async fn containers(server: &TestServer, pattern: &str) -> Vec<Container> {
    let resp = server
        .operator_client()
        .await
        .list_containers(v1::ListContainersRequest {
            name_pattern: pattern.to_owned(),
            ..Default::default()
        })
        .await
        .expect("list containers")
        .into_inner();
    resp.containers
        .into_iter()
        .map(|c| NodeContainer::try_from(c).expect("valid").container)
        .collect()
}

/// Polls the operator API until `check` holds for container `name`;
/// returns how long that took.
async fn until(
    server: &TestServer,
    name: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&Container) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let found = containers(server, name).await;
        if found.iter().any(|c| c.name == name && check(c)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{name} not {what} in the operator API after {limit:?}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the engine itself says `name` has `health`.
async fn engine_health(name: &str, health: &str) {
    let started = Instant::now();
    loop {
        let now = docker(&["inspect", "--format", "{{.State.Health.Status}}", name]);
        if now == health {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "engine never reported {name} {health} (last: {now})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn docker_sources(socket: &str) -> impl FnOnce(&tokio_util::sync::CancellationToken) -> Sources {
    labelled_sources(socket, Vec::new())
}

fn labelled_sources(
    socket: &str,
    labels: Vec<String>,
) -> impl FnOnce(&tokio_util::sync::CancellationToken) -> Sources {
    let socket = socket.to_owned();
    move |shutdown| {
        let mut sources = Sources::host_only(SystemCollector::new(HostConfig::default()));
        sources.containers = Some(containers::spawn(
            containers::WatcherConfig {
                socket,
                // Far longer than the test: only the event stream can be prompt.
                poll_interval: Duration::from_secs(300),
                fallback_poll_interval: Duration::from_secs(2),
                request_timeout: Duration::from_secs(10),
                labels,
            },
            shutdown.clone(),
        ));
        sources
    }
}

#[tokio::test]
async fn container_changes_reach_the_operator_api_within_two_seconds() {
    init();
    if !docker_ready() {
        return;
    }
    let set = Containers::new("chg");
    let (web1, web2, web3) = (
        set.run_service("web1"),
        set.run_service("web2"),
        set.run_service("web3"),
    );
    let pki = Pki::new();
    // A long report interval: changes must travel as change-driven reports.
    let server = TestServer::start(&pki, |c| c.agents.report_interval_secs = 60).await;
    let agent = TestAgent::start_with(
        &server.url(),
        &pki,
        "ctl1",
        Role::Controller,
        docker_sources(SOCKET),
    );
    server.wait_online("ctl1").await;
    for name in [&web1, &web2, &web3] {
        until(&server, name, "healthy", Duration::from_secs(20), |c| {
            c.health == ContainerHealth::Healthy
        })
        .await;
    }
    let listed = containers(&server, &format!("{}-*", set.prefix)).await;
    assert_eq!(listed.len(), 3);
    let c = &listed[0];
    assert_eq!(
        (c.image.as_str(), c.state),
        (IMAGE, ContainerState::Running)
    );
    assert!(
        c.image_id.starts_with("sha256:") && c.id.len() == 64,
        "{c:?}"
    );
    assert_eq!(
        c.labels.get("kolla_version").map(String::as_str),
        Some("18.1.0")
    );

    // Unhealthy: the clock starts when the engine itself says so.
    docker(&["exec", &web1, "rm", "/tmp/healthy"]);
    engine_health(&web1, "unhealthy").await;
    let took = until(&server, &web1, "unhealthy", PROMPT, |c| {
        c.health == ContainerHealth::Unhealthy
    })
    .await;
    eprintln!("unhealthy visible after {took:?}");
    let sick = containers(&server, &web1).await.remove(0);
    assert!(
        sick.failing_streak >= 1 && sick.last_health_output.contains("missing /tmp/healthy"),
        "{sick:?}"
    );

    // Stopped.
    docker(&["stop", "-t", "0", &web2]);
    let took = until(&server, &web2, "exited", PROMPT, |c| {
        c.state == ContainerState::Exited
    })
    .await;
    eprintln!("stop visible after {took:?}");
    let stopped = containers(&server, &web2).await.remove(0);
    assert!(
        stopped.finished_at.is_some() && stopped.exit_code == 137,
        "{stopped:?}"
    );

    // Restarted: a new start time.
    let before = containers(&server, &web3).await.remove(0).started_at;
    docker(&["restart", "-t", "0", &web3]);
    let took = until(&server, &web3, "restarted", PROMPT, |c| {
        c.state == ContainerState::Running && c.started_at > before
    })
    .await;
    eprintln!("restart visible after {took:?}");

    // The fleet summary names what needs attention.
    let summary = server.summary().await;
    assert!(
        summary
            .unhealthy_containers
            .iter()
            .any(|c| c.container.name == web1),
        "{summary:?}"
    );
    assert!(
        summary
            .stopped_containers
            .iter()
            .any(|c| c.container.name == web2),
        "{summary:?}"
    );
    assert!(summary.engine_unavailable_nodes.is_empty());

    // Removed containers disappear.
    docker(&["rm", "-f", &web2]);
    let started = Instant::now();
    while containers(&server, &web2)
        .await
        .iter()
        .any(|c| c.name == web2)
    {
        assert!(
            started.elapsed() < PROMPT,
            "{web2} still listed after removal"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stats = agent.stop().await;
    assert!(
        stats.reports > stats.full_reports,
        "changes went as partial reports: {stats:?}"
    );
}

#[tokio::test]
async fn an_absent_engine_is_reported_unavailable_and_the_agent_keeps_reporting() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let agent = TestAgent::start_with(
        &server.url(),
        &pki,
        "cmp1",
        Role::Compute,
        docker_sources("/nonexistent/docker.sock"),
    );
    let detail = server
        .wait_node("cmp1", "reporting the engine unavailable", |d| {
            d.report
                .as_ref()
                .and_then(|r| r.containers.as_ref())
                .is_some_and(|c| !c.available && !c.error.is_empty())
        })
        .await;
    let section = detail
        .report
        .as_ref()
        .and_then(|r| r.containers.clone())
        .expect("containers section");
    assert!(
        section.error.contains("/nonexistent/docker.sock"),
        "{}",
        section.error
    );
    // Still reporting: newer reports keep coming.
    let seq = detail.report.expect("report").seq;
    server
        .wait_node("cmp1", "still reporting", |d| {
            d.node.online && d.report.as_ref().is_some_and(|r| r.seq > seq + 1)
        })
        .await;
    let summary = server.summary().await;
    assert_eq!(summary.engine_unavailable_nodes, ["cmp1"]);
    agent.stop().await;
}

#[tokio::test]
async fn a_label_filter_reports_only_the_containers_that_carry_every_label() {
    init();
    if !docker_ready() {
        return;
    }
    let set = Containers::new("lbl");
    let kolla = set.run_labelled("kolla", &["kolla_version=18.1.0"]);
    let other = set.run_labelled("other", &[]);
    let pki = Pki::new();
    let server = TestServer::start(&pki, |c| c.agents.report_interval_secs = 60).await;
    let filter = vec![
        format!("rollcall.test.set={}", set.prefix),
        "kolla_version".to_owned(),
    ];
    let agent = TestAgent::start_with(
        &server.url(),
        &pki,
        "ctl1",
        Role::Controller,
        labelled_sources(SOCKET, filter),
    );
    server.wait_online("ctl1").await;
    until(&server, &kolla, "healthy", Duration::from_secs(20), |c| {
        c.health == ContainerHealth::Healthy
    })
    .await;
    // A container started later arrives through the (filtered) event stream.
    let late = set.run_labelled("late", &["kolla_version=18.1.0"]);
    until(&server, &late, "listed", Duration::from_secs(20), |_| true).await;
    docker(&["stop", "-t", "0", &other]);
    // Barrier: the engine sends its events in order and the agent handles
    // them in order, so once a container started after that stop is
    // listed, the stop (had the filter let it through) was handled too.
    let last = set.run_labelled("last", &["kolla_version=18.1.0"]);
    until(&server, &last, "listed", Duration::from_secs(20), |_| true).await;
    let names: Vec<String> = containers(&server, &format!("{}-*", set.prefix))
        .await
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        [kolla.clone(), last.clone(), late.clone()],
        "{other} has no kolla_version label"
    );
    agent.stop().await;
}
