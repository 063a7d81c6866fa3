//! Who may do what: every refusal the issue names, over real TLS.

use std::time::Duration;

use rollcall_proto::model::Role;
use rollcall_proto::v1;
use rollcall_proto::v1::operator_service_client::OperatorServiceClient;
use rollcall_tests::{ClientCert, Pki, RawSession, TestAgent, TestServer, hello, init, report};
use tonic::transport::Endpoint;

/// A call with `endpoint`; Ok only if the server answered the call.
async fn list_with(endpoint: Endpoint) -> Result<(), String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    OperatorServiceClient::new(channel)
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn endpoint(server: &TestServer, cert: &ClientCert) -> Endpoint {
    rollcall_proto::connect::endpoint(&server.url(), &server.ca_pem, &cert.cert_pem, &cert.key_pem)
        .expect("endpoint")
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&server.ca_pem))
        .domain_name("localhost");
    let endpoint = Endpoint::from_shared(server.url())
        .expect("url")
        .tls_config(tls)
        .expect("tls");
    let err = list_with(endpoint)
        .await
        .expect_err("no client cert must be refused");
    assert!(
        !err.contains("PermissionDenied"),
        "refused at the TLS layer, not by a handler: {err}"
    );
    // The operator with a proper certificate is unaffected.
    list_with(endpoint_for_operator(&server))
        .await
        .expect("operator still served");
}

fn endpoint_for_operator(server: &TestServer) -> Endpoint {
    endpoint(server, &server.operator)
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let other = Pki::new();
    let stranger = other.operator("mallory");
    list_with(endpoint(&server, &stranger))
        .await
        .expect_err("foreign CA must be refused");
    let agent = other.agent("cmp1");
    assert!(
        RawSession::open(&server, &agent, hello("cmp1", Role::Compute))
            .await
            .is_err()
    );
    assert!(server.node("cmp1").await.is_none(), "no node was created");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let who = rollcall_proto::identity::Identity {
        kind: rollcall_proto::identity::Kind::Operator,
        name: "old".into(),
    };
    let month_ago = time::OffsetDateTime::now_utc() - Duration::from_secs(30 * 86_400);
    let issued = pki
        .ca()
        .issue_client_valid(&who, month_ago, Duration::from_secs(86_400))
        .expect("issue");
    let expired = ClientCert {
        cert: Default::default(),
        key: Default::default(),
        cert_pem: issued.cert_pem.into_bytes(),
        key_pem: issued.key_pem.into_bytes(),
    };
    let err = list_with(endpoint(&server, &expired))
        .await
        .expect_err("expired cert must be refused");
    assert!(!err.contains("PermissionDenied"), "{err}");
}

#[tokio::test]
async fn an_agent_certificate_cannot_use_the_operator_api() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let agent = pki.agent("cmp1");
    let channel = server.channel(&agent).await.expect("connect");
    let mut client = OperatorServiceClient::new(channel);
    let status = client
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("operator certificate is required"),
        "{}",
        status.message()
    );
    let status = client
        .get_node(v1::GetNodeRequest {
            name: "cmp1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let status = client
        .watch_nodes(v1::WatchNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn an_agent_cannot_claim_another_nodes_name() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let cert_a = pki.agent("cmp-a");
    let status = match RawSession::open(&server, &cert_a, hello("cmp-b", Role::Compute)).await {
        Err(s) => s,
        Ok(mut s) => s.next().await.expect_err("session must fail"),
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("cmp-a") && status.message().contains("cmp-b"),
        "{}",
        status.message()
    );
    assert!(server.list().await.is_empty(), "neither node was recorded");
}

#[tokio::test]
async fn an_operator_certificate_cannot_open_an_agent_session() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let op = pki.operator("alice");
    let status = match RawSession::open(&server, &op, hello("alice", Role::Compute)).await {
        Err(s) => s,
        Ok(mut s) => s.next().await.expect_err("session must fail"),
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(server.list().await.is_empty());
}

#[tokio::test]
async fn the_server_certificate_is_no_client_certificate() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let server_cert = ClientCert {
        cert: Default::default(),
        key: Default::default(),
        cert_pem: std::fs::read(pki.path().join("server.crt")).expect("crt"),
        key_pem: std::fs::read(pki.path().join("server.key")).expect("key"),
    };
    list_with(endpoint(&server, &server_cert))
        .await
        .expect_err("serverAuth-only cert must not act as a client");
}

#[tokio::test]
async fn the_first_message_must_be_hello_and_a_role_is_required() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let cert = pki.agent("cmp1");
    let status = match RawSession::open(&server, &cert, report(1, "cmp1")).await {
        Err(s) => s,
        Ok(mut s) => s.next().await.expect_err("must fail"),
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let mut no_role = hello("cmp1", Role::Compute);
    if let Some(v1::agent_message::Msg::Hello(h)) = &mut no_role.msg {
        h.role = v1::Role::Unspecified.into();
    }
    let status = match RawSession::open(&server, &cert, no_role).await {
        Err(s) => s,
        Ok(mut s) => s.next().await.expect_err("must fail"),
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(server.list().await.is_empty());
}

#[tokio::test]
async fn an_oversized_message_ends_only_its_own_session() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |c| c.limits.max_message_bytes = 64 * 1024).await;
    let good = TestAgent::start(&server, &pki, "good1", Role::Compute);
    let before = server
        .wait_online("good1")
        .await
        .report
        .expect("report")
        .seq;

    let cert = pki.agent("big1");
    let mut session = RawSession::open(&server, &cert, hello("big1", Role::Compute))
        .await
        .expect("session");
    session.next().await.expect("welcome").expect("welcome");
    session
        .tx
        .send(report(1, &"x".repeat(200 * 1024)))
        .await
        .expect("queue");
    let status = loop {
        match session.next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream closed without an error"),
            Err(s) => break s,
        }
    };
    // tonic reports a message over the decoding limit as OutOfRange.
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ) && status.message().contains("too large"),
        "{status:?}"
    );
    let big = server.wait_offline("big1").await;
    assert!(big.report.is_none(), "the oversized report was not stored");

    // The other agent never noticed.
    let after = server
        .wait_node("good1", "still reporting", |d| {
            d.node.online && d.report.as_ref().is_some_and(|r| r.seq > before + 1)
        })
        .await;
    assert!(after.node.online);
    good.stop().await;
}
