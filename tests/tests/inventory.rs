//! The inventory path end to end: real agents, a real server on loopback
//! with real mutual TLS, a real SQLite file.

use std::time::Duration;

use rollcall_proto::model::{NodeEvent, NodeEventKind, Role};
use rollcall_proto::v1;
use rollcall_tests::{Pki, RawSession, TestAgent, TestServer, hello, init};

#[tokio::test]
async fn nodes_appear_with_their_roles_and_reports_keep_updating() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let agents = [
        TestAgent::start(&server, &pki, "ctl1", Role::Controller),
        TestAgent::start(&server, &pki, "cmp1", Role::Compute),
        TestAgent::start(&server, &pki, "sto1", Role::Storage),
    ];
    for name in ["ctl1", "cmp1", "sto1"] {
        server.wait_online(name).await;
    }
    let nodes = server.list().await;
    let roles: Vec<(&str, Role, bool)> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.role, n.online))
        .collect();
    assert_eq!(
        roles,
        [
            ("cmp1", Role::Compute, true),
            ("ctl1", Role::Controller, true),
            ("sto1", Role::Storage, true)
        ]
    );

    let first = server
        .node("cmp1")
        .await
        .expect("cmp1")
        .report
        .expect("report");
    assert!(
        first.metrics.as_ref().expect("metrics").memory_total_bytes > 0,
        "report carries host metrics"
    );
    assert!(
        !first.host.as_ref().expect("host").kernel.is_empty(),
        "report carries host facts"
    );
    let later = server
        .wait_node("cmp1", "with a newer report", |d| {
            d.report.as_ref().is_some_and(|r| r.seq > first.seq)
        })
        .await;
    let later = later.report.expect("report");
    assert!(later.collected_at > first.collected_at);

    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test]
async fn a_node_goes_offline_when_its_agent_stops_and_online_when_it_returns() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |c| c.agents.report_interval_secs = 5).await;
    let agent = TestAgent::start(&server, &pki, "cmp1", Role::Compute);
    server.wait_online("cmp1").await;

    let started = tokio::time::Instant::now();
    agent.stop().await;
    let offline = server.wait_offline("cmp1").await;
    // At once, not after missed reports (3 × 5 s here).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "offline took {:?}",
        started.elapsed()
    );
    assert!(
        offline.node.offline_reason.contains("session ended"),
        "{}",
        offline.node.offline_reason
    );

    let agent = TestAgent::start(&server, &pki, "cmp1", Role::Compute);
    let back = server.wait_online("cmp1").await;
    assert_eq!(back.node.offline_reason, "");
    agent.stop().await;
}

#[tokio::test]
async fn a_silent_agent_turns_offline_after_missed_reports_while_its_stream_stays_open() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |c| c.agents.offline_after_missed_reports = 2).await;
    let cert = pki.agent("quiet1");
    let mut session = RawSession::open(&server, &cert, hello("quiet1", Role::Compute))
        .await
        .expect("session");
    session.next().await.expect("welcome").expect("welcome");
    server
        .wait_node("quiet1", "online", |d| d.node.online)
        .await;
    let offline = server.wait_offline("quiet1").await;
    assert!(
        offline.node.offline_reason.contains("missed reports"),
        "{}",
        offline.node.offline_reason
    );
    // The stream is still open: a report brings the node straight back.
    session
        .tx
        .send(rollcall_tests::report(1, "quiet1"))
        .await
        .expect("send");
    server
        .wait_node("quiet1", "back online", |d| d.node.online)
        .await;
}

#[tokio::test]
async fn state_survives_a_server_restart_on_the_same_data_dir() {
    init();
    let pki = Pki::new();
    let mut server = TestServer::start(&pki, |_| {}).await;
    let agent = TestAgent::start(&server, &pki, "cmp1", Role::Compute);
    let before = server.wait_online("cmp1").await;

    server.stop().await;
    let db = server.data.path().join("rollcall.db");
    assert!(db.exists(), "SQLite file at {}", db.display());
    server.restart().await;

    // Straight after the restart the node is known, with its last report,
    // but offline until its agent reconnects...
    let known = server
        .node("cmp1")
        .await
        .expect("cmp1 survived the restart");
    assert_eq!(known.node.role, Role::Compute);
    assert_eq!(known.node.first_seen, before.node.first_seen);
    assert!(known.report.is_some(), "last report survived");
    // ...which it does by itself, through its backoff loop.
    let back = server.wait_online("cmp1").await;
    assert_eq!(back.node.first_seen, before.node.first_seen);
    agent.stop().await;
}

#[tokio::test]
async fn list_filters_by_role_and_online_state() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let ctl = TestAgent::start(&server, &pki, "ctl1", Role::Controller);
    let cmp = TestAgent::start(&server, &pki, "cmp1", Role::Compute);
    server.wait_online("ctl1").await;
    server.wait_online("cmp1").await;
    cmp.stop().await;
    server.wait_offline("cmp1").await;

    let mut client = server.operator_client().await;
    let names = |resp: tonic::Response<v1::ListNodesResponse>| {
        resp.into_inner()
            .nodes
            .into_iter()
            .map(|n| n.name)
            .collect::<Vec<_>>()
    };
    let by_role = client
        .list_nodes(v1::ListNodesRequest {
            role: v1::Role::Controller.into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(names(by_role), ["ctl1"]);
    let offline = client
        .list_nodes(v1::ListNodesRequest {
            role: 0,
            online: v1::OnlineFilter::Offline.into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(names(offline), ["cmp1"]);
    let online = client
        .list_nodes(v1::ListNodesRequest {
            role: 0,
            online: v1::OnlineFilter::Online.into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(names(online), ["ctl1"]);

    let missing = client
        .get_node(v1::GetNodeRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let invalid = client
        .get_node(v1::GetNodeRequest {
            name: "../x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    ctl.stop().await;
}

#[tokio::test]
async fn watch_sends_a_snapshot_then_changes_as_they_happen() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let ctl = TestAgent::start(&server, &pki, "ctl1", Role::Controller);
    server.wait_online("ctl1").await;

    let mut stream = server
        .operator_client()
        .await
        .watch_nodes(v1::WatchNodesRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let snapshot = next_event(&mut stream).await;
    assert_eq!(
        (snapshot.kind, snapshot.node.name.as_str()),
        (NodeEventKind::Snapshot, "ctl1")
    );

    let cmp = TestAgent::start(&server, &pki, "cmp1", Role::Compute);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut kinds = Vec::new();
    loop {
        let event = next_event(&mut stream).await;
        if event.node.name == "cmp1" {
            kinds.push(event.kind);
        }
        if kinds.contains(&NodeEventKind::Report) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cmp1 report event; saw {kinds:?}"
        );
    }
    assert_eq!(
        kinds[0],
        NodeEventKind::Online,
        "a new node is announced online before its report: {kinds:?}"
    );
    cmp.stop().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = next_event(&mut stream).await;
        if event.node.name == "cmp1" && event.kind == NodeEventKind::Offline {
            assert!(!event.node.online);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cmp1 offline event"
        );
    }
    ctl.stop().await;
}

async fn next_event(stream: &mut tonic::Streaming<v1::NodeEvent>) -> NodeEvent {
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("event within 10s")
        .expect("stream ok")
        .expect("stream open");
    NodeEvent::try_from(event).expect("valid event")
}

#[tokio::test]
async fn reflection_v1_lists_the_rollcall_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let channel = server.channel(&server.operator).await.expect("connect");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let resp = stream.message().await.expect("ok").expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "rollcall.v1.AgentService",
        "rollcall.v1.OperatorService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}
