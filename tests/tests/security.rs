//! Who may do what: every refusal the issue names, over real TLS.

use std::error::Error as _;
use std::time::Duration;

use rollcall_proto::model::Role;
use rollcall_proto::v1;
use rollcall_proto::v1::operator_service_client::OperatorServiceClient;
use rollcall_tests::{
    ClientCert, Pki, RawSession, TempDir, TestAgent, TestServer, causes, hello, init, report,
};
use tonic::transport::Endpoint;

/// A call with `endpoint`; Ok only if the server answered the call. The
/// error names the stage that failed and every cause in its chain: a TLS
/// alert sits a few sources down.
async fn list_with(endpoint: Endpoint) -> Result<(), String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {}", causes(&e)))?;
    OperatorServiceClient::new(channel)
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| refusal(&s))
}

fn refusal(status: &tonic::Status) -> String {
    let source = status.source().map(causes).unwrap_or_default();
    format!("{:?}: {}: {source}", status.code(), status.message())
}

/// The server's TLS layer ended the handshake with one of `alerts`: the
/// refusal came before any handler ran, for the reason the test means.
fn assert_tls_alert(err: &str, alerts: &[&str]) {
    assert!(
        alerts
            .iter()
            .any(|a| err.contains(&format!("received fatal alert: {a}"))),
        "expected the TLS alert {alerts:?}, got: {err}"
    );
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
    // TLS 1.3: the server asked for a certificate and got none.
    assert_tls_alert(&err, &["CertificateRequired"]);
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
    let err = list_with(endpoint(&server, &stranger))
        .await
        .expect_err("foreign CA must be refused");
    // Both CAs carry the same name, so the signature is what fails
    // (DecryptError); a CA of another name would be unknown (UnknownCA).
    let not_ours = ["DecryptError", "UnknownCA"];
    assert_tls_alert(&err, &not_ours);
    let agent = other.agent("cmp1");
    match RawSession::open(&server, &agent, hello("cmp1", Role::Compute)).await {
        Ok(_) => panic!("an agent certificate from a foreign CA opened a session"),
        Err(status) => assert_tls_alert(&refusal(&status), &not_ours),
    }
    assert!(server.node("cmp1").await.is_none(), "no node was created");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let who = rollcall_proto::identity::Identity::operator(
        "old",
        rollcall_proto::identity::Role::Operator,
    );
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
    assert_tls_alert(&err, &["CertificateExpired"]);
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
            .contains("nodes list needs role viewer; agent cmp1 holds no operator role"),
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
    let err = list_with(endpoint(&server, &server_cert))
        .await
        .expect_err("serverAuth-only cert must not act as a client");
    // Its extended key usage allows serverAuth only.
    assert_tls_alert(&err, &["UnsupportedCertificate"]);
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

#[tokio::test]
async fn a_certificate_with_any_uri_besides_its_identity_is_refused() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    for (i, extra) in [
        "urn:rollcall:operator:x",
        "urn:rollcall:whatever",
        "https://example",
    ]
    .into_iter()
    .enumerate()
    {
        let node = format!("cmp{i}");
        let cert = pki.agent_with_extra_uri(&node, extra);
        let status = match RawSession::open(&server, &cert, hello(&node, Role::Compute)).await {
            Err(s) => s,
            Ok(mut s) => loop {
                match s.next().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("{extra}: session ended without a refusal"),
                    Err(s) => break s,
                }
            },
        };
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{extra}: {status:?}"
        );
        assert!(
            status.message().contains(&format!("\"{extra}\"")),
            "the refusal names the extra URI: {}",
            status.message()
        );
        assert!(server.node(&node).await.is_none(), "{extra}: no node");
    }
    // The same node with a proper certificate is served.
    let agent = TestAgent::start(&server, &pki, "cmp0", Role::Compute);
    server.wait_online("cmp0").await;
    agent.stop().await;
}

/// Runs a workspace binary; returns (exit code, stderr). One that is still
/// running after 10 s (a server that started despite its configuration) is
/// killed and reported with no exit code.
fn run_bin(
    name: &str,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &std::path::Path)],
) -> (Option<i32>, String) {
    use std::io::Read;
    let mut cmd = std::process::Command::new(rollcall_tests::bin(name));
    cmd.args(args)
        .env_remove("ROLLCALL_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run binary");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (code, stderr)
}

/// Exit 2 and exactly one line, `error: ...` containing every needle.
fn assert_config_error(what: &str, (code, stderr): (Option<i32>, String), needles: &[&str]) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(code, Some(2), "{what}: exit code; stderr: {stderr}");
    assert_eq!(lines.len(), 1, "{what}: one line expected, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{what}: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{what}: no {needle:?} in {stderr}"
        );
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The arguments of `serve` with the pki's files and `data_dir`.
fn serve_args(
    pki: &Pki,
    config: &std::path::Path,
    data_dir: &std::path::Path,
) -> Vec<std::ffi::OsString> {
    let p = |s: &str| pki.path().join(s).into_os_string();
    vec![
        "serve".into(),
        "--config".into(),
        config.into(),
        // Never the shipped 9743: tests run side by side.
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data_dir.into(),
        "--ca".into(),
        p("ca.crt"),
        "--cert".into(),
        p("server.crt"),
        "--key".into(),
        p("server.key"),
    ]
}

/// The arguments of `rollcall-agent run` with `cert`.
fn agent_args(pki: &Pki, config: &std::path::Path, cert: &ClientCert) -> Vec<std::ffi::OsString> {
    vec![
        "run".into(),
        "--config".into(),
        config.into(),
        "--server".into(),
        "https://localhost:1".into(),
        "--role".into(),
        "compute".into(),
        "--ca".into(),
        pki.ca_cert().into(),
        "--cert".into(),
        cert.cert.clone().into(),
        "--key".into(),
        cert.key.clone().into(),
    ]
}

fn os(args: &[std::ffi::OsString]) -> Vec<&std::ffi::OsStr> {
    args.iter().map(|a| a.as_os_str()).collect()
}

#[test]
fn private_keys_open_to_others_are_refused_with_the_chmod_that_fixes_them() {
    init();
    let pki = Pki::new();
    let tmp = TempDir::new("keymode");
    let server_toml = tmp.path().join("server.toml");
    std::fs::write(&server_toml, "listen = \"127.0.0.1:0\"\n").expect("server.toml");
    let agent_toml = tmp.path().join("agent.toml");
    let state = tmp.path().join("state");
    std::fs::write(&agent_toml, format!("[actions]\nstate_dir = {:?}\n", state))
        .expect("agent.toml");

    // rollcall-server serve, its --key.
    let server_key = pki.path().join("server.key");
    chmod(&server_key, 0o640);
    let args = serve_args(&pki, &server_toml, &tmp.path().join("data"));
    let expected = format!("chmod 600 {}", server_key.display());
    assert_config_error(
        "serve",
        run_bin("rollcall-server", &os(&args), &[]),
        &["0640", &expected],
    );
    assert!(
        !tmp.path().join("data").exists(),
        "nothing was started or created"
    );
    chmod(&server_key, 0o600);

    // The operator CLI, its ROLLCALL_KEY.
    let op = pki.operator("alice");
    chmod(&op.key, 0o604);
    let ca = pki.ca_cert();
    let out = run_bin(
        "rollcall-server",
        &os(&["nodes".into(), "list".into()]),
        &[
            (
                "ROLLCALL_SERVER",
                std::path::Path::new("https://localhost:1"),
            ),
            ("ROLLCALL_CA", &ca),
            ("ROLLCALL_CERT", &op.cert),
            ("ROLLCALL_KEY", &op.key),
        ],
    );
    let expected = format!("chmod 600 {}", op.key.display());
    assert_config_error("operator CLI", out, &["0604", &expected]);

    // rollcall-agent run, its key.
    let agent = pki.agent("cmp1");
    chmod(&agent.key, 0o640);
    let args = agent_args(&pki, &agent_toml, &agent);
    let expected = format!("chmod 600 {}", agent.key.display());
    assert_config_error(
        "agent run",
        run_bin("rollcall-agent", &os(&args), &[]),
        &["0640", &expected],
    );
    assert!(!state.exists(), "the agent did not start");

    // certs issue, the CA key.
    let ca_key = pki.path().join("ca.key");
    chmod(&ca_key, 0o640);
    let out = run_bin(
        "rollcall-server",
        &os(&[
            "certs".into(),
            "issue".into(),
            "--pki".into(),
            pki.path().into(),
            "--agent".into(),
            "cmp2".into(),
        ]),
        &[],
    );
    let expected = format!("chmod 600 {}", ca_key.display());
    assert_config_error("certs issue", out, &["0640", &expected]);
    assert!(
        !pki.path().join("agents/cmp2.crt").exists(),
        "nothing was signed"
    );
}

#[test]
fn a_data_or_state_dir_that_is_a_file_is_a_configuration_error() {
    init();
    let pki = Pki::new();
    let tmp = TempDir::new("dirfile");
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, "").expect("file");
    let server_toml = tmp.path().join("server.toml");
    std::fs::write(&server_toml, "listen = \"127.0.0.1:0\"\n").expect("server.toml");
    let args = serve_args(&pki, &server_toml, &file);
    let expected = format!("data_dir {} is a file", file.display());
    assert_config_error(
        "serve",
        run_bin("rollcall-server", &os(&args), &[]),
        &[&expected],
    );

    let agent_toml = tmp.path().join("agent.toml");
    std::fs::write(&agent_toml, format!("[actions]\nstate_dir = {:?}\n", file))
        .expect("agent.toml");
    let agent = pki.agent("cmp1");
    let args = agent_args(&pki, &agent_toml, &agent);
    let expected = format!("actions.state_dir {} is a file", file.display());
    assert_config_error(
        "agent run",
        run_bin("rollcall-agent", &os(&args), &[]),
        &[&expected],
    );
}
