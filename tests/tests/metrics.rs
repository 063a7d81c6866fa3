//! `/metrics` of a real server with real agents over mTLS (the fleet
//! harness), scraped over HTTP as Prometheus does: the fleet by role and
//! state, a container made unhealthy, a refused request, a campaign held
//! at its gate and then completed, and the whole scrape checked by the real
//! `promtool check metrics`. And the listener under abuse: idle sockets,
//! a slowloris, a client that pipelines and never reads, and a store
//! stalled under the scheduler.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use rollcall_proto::model::{ContainerHealth, Role};
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::Phase;
use rollcall_tests::fleet::Fleet;
use rollcall_tests::scrape::{self, Answer, PROMETHEUS_ACCEPT};
use rollcall_tests::{eventually, init};

const LONG: Duration = Duration::from_secs(90);

const CONTROLLERS: &str = r#"
name = "metrics"
role_order = ["controller"]
reboot = "never"
skip_up_to_date = false
[gates.controller]
before = ["cluster-whole"]
run_on = "self"
interval_secs = 1
"#;

/// Scrapes until `series` has `value`.
async fn until(fleet: &Fleet, series: &str, value: f64) -> Answer {
    let addr = fleet.server.metrics_addr();
    eventually(LONG, &format!("{series} to be {value}"), || async {
        let a = scrape::metrics(addr).await;
        (a.value(series) == Some(value)).then_some(a)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_fleet_a_refusal_and_a_campaign() {
    init();
    let fleet = Fleet::start(&[(Role::Controller, 3), (Role::Compute, 2)]).await;
    let addr = fleet.server.metrics_addr();

    // The fleet, by role and state; every session; per-node series (five
    // nodes, under the default 500).
    until(
        &fleet,
        r#"rollcall_nodes{role="controller",state="online"}"#,
        3.0,
    )
    .await;
    let a = until(
        &fleet,
        r#"rollcall_nodes{role="compute",state="online"}"#,
        2.0,
    )
    .await;
    assert_eq!(a.value("rollcall_sessions"), Some(5.0), "{}", a.body);
    assert!(a.value("rollcall_sessions_opened_total") >= Some(5.0));
    assert!(a.value("rollcall_reports_total") >= Some(5.0));
    assert_eq!(a.value("rollcall_per_node_series"), Some(1.0));
    assert_eq!(
        a.value(r#"rollcall_node_online{node="cmp02",role="compute"}"#),
        Some(1.0),
        "{}",
        a.body
    );
    assert!(
        a.value("rollcall_agent_certificate_nearest_expiry_timestamp_seconds")
            .is_some_and(|t| t > 1e9),
        "every agent connected with a certificate: {}",
        a.body
    );
    assert_eq!(a.value("rollcall_store_healthy"), Some(1.0));

    // A container turns unhealthy on one compute node.
    assert_eq!(
        a.value(r#"rollcall_containers_unhealthy{role="compute"}"#),
        Some(0.0)
    );
    fleet
        .node("cmp01")
        .set_container_health("nova_compute", ContainerHealth::Unhealthy);
    let a = until(
        &fleet,
        r#"rollcall_containers_unhealthy{role="compute"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        a.value(r#"rollcall_node_containers_unhealthy{node="cmp01",role="compute"}"#),
        Some(1.0)
    );
    assert_eq!(
        a.value(r#"rollcall_node_containers_unhealthy{node="cmp02",role="compute"}"#),
        Some(0.0)
    );

    // An agent's certificate asking the operator API is refused, and counted.
    let wrong = "rollcall_requests_refused_total";
    assert_eq!(a.value(wrong), Some(0.0));
    let channel = fleet
        .server
        .channel(&fleet.pki.agent("cmp01"))
        .await
        .expect("an agent certificate connects");
    let refused = rollcall_proto::v1::operator_service_client::OperatorServiceClient::new(channel)
        .list_nodes(rollcall_proto::v1::ListNodesRequest::default())
        .await;
    assert!(refused.is_err(), "an agent may not list nodes");
    until(&fleet, wrong, 1.0).await;

    // A campaign whose first controller waits at its before gate.
    fleet.degrade_cluster(true);
    let c = fleet.start_campaign(CONTROLLERS).await;
    let id = c.campaign.id.clone();
    fleet
        .wait_for(&id, "ctl01 at its before gate", LONG, |v| {
            v.nodes
                .iter()
                .any(|n| n.node == "ctl01" && n.step == Step::GateBefore)
        })
        .await;
    let at_gate = format!(r#"rollcall_campaign_nodes{{campaign="{id}",step="gate-before"}}"#);
    let a = until(&fleet, &at_gate, 1.0).await;
    let series = |name: &str, label: &str| format!(r#"{name}{{campaign="{id}",{label}}}"#);
    assert_eq!(
        a.value(&series("rollcall_campaign_nodes", r#"step="pending""#)),
        Some(2.0),
        "{}",
        a.body
    );
    assert_eq!(
        a.value(&series("rollcall_campaign_phase", r#"phase="running""#)),
        Some(1.0)
    );
    assert_eq!(a.value(r#"rollcall_campaigns{phase="running"}"#), Some(1.0));
    let waited = series(
        "rollcall_campaign_gate_wait_max_seconds",
        r#"gate="before",role="controller""#,
    );
    assert_eq!(
        a.value(&series(
            "rollcall_campaign_gate_timeout_seconds",
            r#"gate="before",role="controller""#
        )),
        Some(1800.0),
        "timeouts.gate_secs by default: {}",
        a.body
    );
    eventually(LONG, "ctl01's gate wait to show", || async {
        let a = scrape::metrics(addr).await;
        a.value(&waited).filter(|w| *w >= 1.0)
    })
    .await;

    // Everything the server exposes is there now; promtool finds it clean.
    let a = scrape::metrics(addr).await;
    assert_eq!(a.content_type, "text/plain; version=0.0.4; charset=utf-8");
    for family in rollcall_server::metrics::FAMILIES {
        assert!(
            a.body.contains(&format!("# TYPE {} ", family.name)),
            "{} missing from:\n{}",
            family.name,
            a.body
        );
    }
    if let Some(said) = scrape::promtool_check(&a.body) {
        assert_eq!(said, "", "promtool check metrics:\n{}", a.body);
    }

    // Prometheus asks for OpenMetrics, and gets it.
    let om = scrape::get(addr, "GET", "/metrics", PROMETHEUS_ACCEPT).await;
    assert_eq!(om.status, 200);
    assert_eq!(
        om.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(om.body.contains("# TYPE rollcall_reports counter\n"));

    // The cluster is whole again: the campaign completes, its nodes' steps
    // were timed, and its id leaves the labels.
    fleet.degrade_cluster(false);
    let done = fleet.wait_ended(&id, LONG).await;
    assert_eq!(done.campaign.phase, Phase::Completed);
    let a = until(&fleet, r#"rollcall_campaigns{phase="completed"}"#, 1.0).await;
    assert!(
        !a.body.contains(&format!(r#"campaign="{id}""#)),
        "{}",
        a.body
    );
    assert_eq!(
        a.value(r#"rollcall_campaign_step_duration_seconds_count{step="patch"}"#),
        Some(3.0),
        "three controllers patched: {}",
        a.body
    );
    assert!(
        a.value(r#"rollcall_campaign_step_duration_seconds_sum{step="gate-before"}"#)
            .is_some_and(|s| s >= 1.0),
        "ctl01 waited at its gate: {}",
        a.body
    );
    assert_eq!(
        a.value(r#"rollcall_campaign_node_failures_total{step="patch"}"#),
        Some(0.0)
    );
    assert!(
        a.value("rollcall_store_commit_duration_seconds_count")
            .is_some_and(|n| n >= 1.0),
        "the campaign's changes were committed: {}",
        a.body
    );

    // Only GET /metrics.
    let other = scrape::get(addr, "GET", "/", "*/*").await;
    assert_eq!(other.status, 404);
    let post = scrape::get(addr, "POST", "/metrics", "*/*").await;
    assert_eq!(post.status, 405);
    fleet.stop().await;
}

#[tokio::test]
async fn per_node_series_stop_past_the_limit_and_tls_serves_the_same() {
    init();
    let fleet = Fleet::start_with(&[(Role::Compute, 2)], |c| {
        c.metrics.per_node_max_nodes = 1;
        c.metrics.tls = true;
    })
    .await;
    let addr = fleet.server.metrics_addr();
    let ca = fleet.pki.ca_pem();
    let a = eventually(LONG, "two compute nodes online, over TLS", || async {
        let a = scrape::metrics_tls(addr, &ca, "localhost").await;
        (a.value(r#"rollcall_nodes{role="compute",state="online"}"#) == Some(2.0)).then_some(a)
    })
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.value("rollcall_per_node_series"), Some(0.0), "{}", a.body);
    assert!(
        !a.has("rollcall_node_"),
        "two nodes, a limit of one: {}",
        a.body
    );
    assert!(!a.body.contains("node=\""), "{}", a.body);
    fleet.stop().await;
}

/// `n` connections to `addr` from the loopback address `from` (all of
/// 127.0.0.0/8 is the loopback on Linux), sending nothing.
async fn idle_from(from: &str, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{from}:0").parse().expect("addr"))
            .expect("bind a loopback address");
        held.push(socket.connect(addr).await.expect("connect"));
    }
    // The server accepts (and counts, and maybe closes) them in its own time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    held
}

fn dropped(a: &Answer, reason: &str) -> f64 {
    a.value(&format!(
        r#"rollcall_metrics_connections_dropped_total{{reason="{reason}"}}"#
    ))
    .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_a_slowloris_and_pipelining_cannot_shut_scrapes_out() {
    use rollcall_server::metrics::serve::{HEADER_TIMEOUT, MAX_PER_SOURCE};
    init();
    let fleet = Fleet::start(&[(Role::Compute, 1)]).await;
    let addr = fleet.server.metrics_addr();
    let slack = Duration::from_secs(3);

    // Ten idle sockets from one address hold its share only: a scrape from
    // another is served at once.
    let idle = idle_from("127.0.0.2", addr, 10).await;
    let started = Instant::now();
    let a = scrape::metrics(addr).await;
    assert!(started.elapsed() < slack, "{:?}", started.elapsed());
    assert_eq!(
        dropped(&a, "source_limit"),
        (10 - MAX_PER_SOURCE) as f64,
        "{}",
        a.body
    );

    // Two addresses take every slot: a scrape is refused until the idle
    // sockets are cut, within the header timeout.
    let more = idle_from("127.0.0.3", addr, MAX_PER_SOURCE).await;
    let started = Instant::now();
    let mut refused = 0;
    let a = loop {
        if let Some(a) = scrape::try_metrics(addr).await {
            break a;
        }
        refused += 1;
        assert!(
            started.elapsed() < HEADER_TIMEOUT + slack,
            "idle sockets kept scrapes out for {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(a.status, 200);
    assert!(refused > 0, "every slot was taken at first");
    assert!(dropped(&a, "connection_limit") >= 1.0, "{}", a.body);
    assert!(
        dropped(&a, "deadline") >= MAX_PER_SOURCE as f64,
        "the first idle sockets were cut: {}",
        a.body
    );
    drop((idle, more));

    // A slowloris, one header byte a second, is cut within the header timeout.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let mut cut = false;
    for byte in b"GET /metrics HTTP/1.1\r\nHost: rollcall\r\nX-Slow: "
        .iter()
        .cycle()
    {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(read) = tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
            cut = matches!(read, Ok(0) | Err(_));
            if cut {
                break;
            }
        }
        if started.elapsed() > HEADER_TIMEOUT + slack {
            break;
        }
    }
    assert!(
        cut,
        "a slowloris still held its socket after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < HEADER_TIMEOUT + slack);

    // Twenty requests pipelined on one connection: one answer, then the
    // server closes it, having built one scrape.
    let mut piped = TcpStream::connect(addr).await.expect("connect");
    let one = "GET /metrics HTTP/1.1\r\nHost: rollcall\r\nAccept: */*\r\n\r\n";
    piped
        .write_all(one.repeat(20).as_bytes())
        .await
        .expect("send the requests");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match piped.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server closed the connection");
    let answers = String::from_utf8_lossy(&raw)
        .matches("HTTP/1.1 200")
        .count();
    assert_eq!(answers, 1, "one request per connection");

    // The listener is whole again.
    scrape::metrics(addr).await;
    fleet.stop().await;
}

/// A stalled disk blocks the store writer, so the scheduler blocks in a
/// campaign write: scrapes go on, without the campaigns, and show the
/// stuck commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_leaves_the_campaigns_out_and_shows_the_stuck_commit() {
    init();
    let fleet = Fleet::start(&[(Role::Controller, 2)]).await;
    let addr = fleet.server.metrics_addr();
    until(
        &fleet,
        r#"rollcall_nodes{role="controller",state="online"}"#,
        2.0,
    )
    .await;
    fleet.server.faults.stall();
    let checks = async {
        let a = eventually(LONG, "the scheduler to miss a scrape", || async {
            let a = scrape::metrics(addr).await;
            (a.value(r#"rollcall_scrape_part_ok{part="campaigns"}"#) == Some(0.0)).then_some(a)
        })
        .await;
        assert_eq!(
            a.value(r#"rollcall_scrape_part_ok{part="fleet"}"#),
            Some(1.0),
            "{}",
            a.body
        );
        assert_eq!(
            a.value(r#"rollcall_nodes{role="controller",state="online"}"#),
            Some(2.0),
            "the fleet is still served: {}",
            a.body
        );
        assert!(!a.has("rollcall_campaigns{"), "{}", a.body);
        eventually(LONG, "the stuck commit to show", || async {
            let a = scrape::metrics(addr).await;
            a.value("rollcall_store_commit_running_seconds")
                .filter(|s| *s >= 2.0)
        })
        .await;
        fleet.server.faults.heal();
    };
    let (started, ()) = tokio::join!(fleet.start_campaign(CONTROLLERS), checks);
    let a = until(&fleet, r#"rollcall_scrape_part_ok{part="campaigns"}"#, 1.0).await;
    assert_eq!(
        a.value("rollcall_store_commit_running_seconds"),
        Some(0.0),
        "{}",
        a.body
    );
    let kept: f64 = ["running", "completed"]
        .iter()
        .filter_map(|p| a.value(&format!(r#"rollcall_campaigns{{phase="{p}"}}"#)))
        .sum();
    assert_eq!(
        kept, 1.0,
        "the campaign started once the store woke: {}",
        a.body
    );
    assert!(!started.campaign.id.is_empty());
    fleet.stop().await;
}
