//! One agent certificate in an attacker's hands: a hand-driven session
//! (real server, real mTLS) sends what no real agent would, and the server
//! cuts or refuses it by the rules of `rollcall_proto::admit`, tells the
//! agent, keeps serving, and starts again on what it stored.

use std::time::{Duration, Instant};

use rollcall_proto::admit;
use rollcall_proto::convert::timestamp_to_wire;
use rollcall_proto::model::Role;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1::{self, agent_message, server_message};
use rollcall_tests::{Pki, RawSession, TestServer, hello, init, logs};

fn msg(report: v1::Report) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(agent_message::Msg::Report(report)),
    }
}

fn full(seq: u64, hostname: &str) -> v1::Report {
    v1::Report {
        seq,
        collected_at: Some(timestamp_to_wire(Timestamp::now())),
        full: true,
        host: Some(v1::HostFacts {
            hostname: hostname.into(),
            kernel: "6.1.0-28-amd64".into(),
            ..Default::default()
        }),
        metrics: Some(v1::HostMetrics {
            load1: 0.25,
            ..Default::default()
        }),
        containers: Some(v1::ContainersSection {
            available: true,
            containers: vec![v1::Container {
                id: "a".repeat(64),
                name: "nova_compute".into(),
                state: v1::ContainerState::Running.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Opens a session for `node` and reads its Welcome.
async fn session(server: &TestServer, pki: &Pki, node: &str) -> RawSession {
    let cert = pki.agent(node);
    let mut s = RawSession::open(server, &cert, hello(node, Role::Compute))
        .await
        .expect("session opens");
    let welcome = s.next().await.expect("welcome").expect("welcome");
    assert!(matches!(welcome.msg, Some(server_message::Msg::Welcome(_))));
    s
}

/// The next Notice on the session, skipping anything else.
async fn notice(s: &mut RawSession) -> v1::Notice {
    loop {
        match s.next().await.expect("session still open") {
            Some(v1::ServerMessage {
                msg: Some(server_message::Msg::Notice(n)),
            }) => return n,
            Some(_) => continue,
            None => panic!("session ended without a notice"),
        }
    }
}

#[tokio::test]
async fn metrics_that_are_not_finite_are_refused_and_the_server_starts_again() {
    init();
    let pki = Pki::new();
    let mut server = TestServer::start(&pki, |_| {}).await;
    let mut s = session(&server, &pki, "nan1").await;
    s.tx.send(msg(full(1, "good"))).await.expect("send");
    server
        .wait_node("nan1", "reporting", |d| d.node.hostname == "good")
        .await;

    for (seq, bad) in [(2, f64::NAN), (3, f64::INFINITY), (4, f64::NEG_INFINITY)] {
        let mut r = full(seq, &format!("after-{seq}"));
        r.metrics = Some(v1::HostMetrics {
            load1: bad,
            cpu_usage_percent: f32::NAN,
            ..Default::default()
        });
        s.tx.send(msg(r)).await.expect("send");
    }
    let n = notice(&mut s).await;
    assert_eq!(n.report_seq, 2);
    assert!(
        n.problems[0].starts_with("metrics section refused: cpu_usage_percent is NaN"),
        "{:?}",
        n.problems
    );
    // The rest of each report was applied; the metrics kept are the last sane ones.
    let d = server
        .wait_node("nan1", "after the bad reports", |d| {
            d.node.hostname == "after-4"
        })
        .await;
    assert_eq!(
        d.report.expect("report").metrics.expect("metrics").load1,
        0.25
    );

    // Whatever was stored reads back: the server starts again (it used to
    // exit 1 on a JSON null where a float belongs).
    drop(s);
    server.restart().await;
    let d = server.node("nan1").await.expect("node kept");
    assert_eq!(d.node.hostname, "after-4");
}

#[tokio::test]
async fn long_strings_are_cut_and_huge_sections_refused_without_ending_the_session() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let mut s = session(&server, &pki, "big1").await;
    s.tx.send(msg(full(1, "big1"))).await.expect("send");
    server
        .wait_node("big1", "reporting", |d| d.node.hostname == "big1")
        .await;

    // A 500,000-character kernel string, and a health output whose tail matters.
    let mut r = full(2, "big1-long");
    r.host.as_mut().expect("host").kernel = "k".repeat(500_000);
    r.containers.as_mut().expect("containers").containers[0].last_health_output =
        format!("{}\nconnection refused\n", "x".repeat(100_000));
    s.tx.send(msg(r)).await.expect("send");
    let n = notice(&mut s).await;
    assert!(n.problems[0].contains("host.kernel ×1"), "{:?}", n.problems);
    let d = server
        .wait_node("big1", "long report", |d| d.node.hostname == "big1-long")
        .await;
    assert_eq!(d.node.kernel.len(), admit::NAME_BYTES);
    let report = d.report.expect("report");
    let output = &report.containers()[0].last_health_output;
    assert!(output.len() <= admit::TAIL_BYTES, "{}", output.len());
    assert!(output.ends_with("connection refused\n"));

    // 100,000 containers (3.5 MB, under the message limit): the section is
    // refused, the node keeps the containers it had, the session lives on.
    let mut r = full(3, "big1-many");
    r.containers.as_mut().expect("containers").containers = (0..100_000)
        .map(|i| v1::Container {
            name: format!("c{i}"),
            state: v1::ContainerState::Running.into(),
            ..Default::default()
        })
        .collect();
    s.tx.send(msg(r)).await.expect("send");
    s.tx.send(msg(full(4, "big1-after"))).await.expect("send");
    let d = server
        .wait_node("big1", "after the huge report", |d| {
            d.node.hostname == "big1-after"
        })
        .await;
    assert_eq!(d.node.containers_total, 1);
    let report = d.report.expect("report");
    assert_eq!(report.containers()[0].name, "nova_compute");
}

#[tokio::test]
async fn a_report_without_a_time_and_a_forged_action_id_are_refused_not_fatal() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let mut s = session(&server, &pki, "odd1").await;
    let mut r = full(1, "timeless");
    r.collected_at = None;
    s.tx.send(msg(r)).await.expect("send");
    let n = notice(&mut s).await;
    assert!(
        n.problems[0].contains("missing field report.collected_at"),
        "{:?}",
        n.problems
    );
    // A newline in an action id would forge a line in the server's log.
    // (Another node: a session's second complaint waits a minute.)
    let mut s = session(&server, &pki, "odd2").await;
    s.tx.send(v1::AgentMessage {
        msg: Some(agent_message::Msg::ActionUpdate(v1::ActionUpdate {
            action_id: "x\n2026-11-29T00:00:00Z INFO forged line".into(),
            state: v1::ActionState::Succeeded.into(),
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    s.tx.send(msg(full(2, "still-here"))).await.expect("send");
    let d = server
        .wait_node("odd2", "still reporting", |d| {
            d.node.hostname == "still-here"
        })
        .await;
    assert!(d.node.online);
    let n = notice(&mut s).await;
    assert!(
        n.problems
            .iter()
            .any(|p| p.starts_with("action update refused: action_id must be")),
        "{:?}",
        n.problems
    );
    let log = logs();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-11-29T00:00:00Z")),
        "a forged line reached the log:\n{log}"
    );
    assert!(log.contains("missing field report.collected_at"), "{log}");
}

#[tokio::test]
async fn a_flooding_session_is_held_to_its_rate_and_told() {
    init();
    let pki = Pki::new();
    let (rate, burst) = (5.0, 50.0);
    let server = TestServer::start(&pki, |c| {
        c.agents.messages_per_sec = rate as u32;
        c.agents.message_burst = burst as u32;
    })
    .await;
    let mut watch = server
        .operator_client()
        .await
        .watch_nodes(v1::WatchNodesRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let mut s = session(&server, &pki, "flood1").await;

    let started = Instant::now();
    for seq in 1..=3_000 {
        let mut r = full(seq, &format!("flood-{seq}"));
        r.full = false;
        r.containers = None;
        s.tx.send(msg(r)).await.expect("send");
    }
    // Reports over the limit are merged, not lost: the last one's state
    // arrives at the next token, with nothing sent after it.
    let mut reports = 0u32;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(15), watch.message())
            .await
            .expect("an event within 15 s")
            .expect("watch stream")
            .expect("watch open");
        let node = event.node.expect("node");
        if node.name != "flood1" || event.kind != v1::NodeEventKind::Report as i32 {
            continue;
        }
        reports += 1;
        if node.hostname == "flood-3000" {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = burst + rate * elapsed + 1.0;
    assert!(
        f64::from(reports) <= allowed,
        "{reports} reports applied in {elapsed:.1} s; the limit allows {allowed:.0}"
    );
    assert!(reports >= burst as u32, "the burst passes: {reports}");
    let n = notice(&mut s).await;
    assert!(
        n.problems
            .iter()
            .any(|p| p.contains("messages over the session rate limit: reports merged")),
        "{:?}",
        n.problems
    );
    // Thousands of drops, one log line (the next is due in a minute).
    let complaints = logs()
        .lines()
        .filter(|l| l.contains("Agent sent what the server cuts or refuses"))
        .count();
    assert_eq!(complaints, 1, "{}", logs());
}
