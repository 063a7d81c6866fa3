//! Revocation end to end, over real mutual TLS and a real SQLite file: a
//! revoked certificate's open session or watch is cut within a second, it
//! is refused at its next connection (and after a restart), the rest of the
//! fleet is untouched; offline revocations (`certs revoke` without a server,
//! `certs issue --force`) reach a running server; only an admin may revoke;
//! `certs crl` writes a CRL openssl reads.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rollcall_proto::model::Role;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use rollcall_proto::v1::revocation_service_client::RevocationServiceClient;
use rollcall_proto::v1::revoke_request::Target;
use rollcall_tests::{
    ClientCert, Pki, RawSession, TestAgent, TestServer, bin, eventually, hello, init, logs,
};

const CUT_WITHIN: Duration = Duration::from_secs(1);

async fn revoke(
    server: &TestServer,
    cert: &ClientCert,
    target: Target,
) -> Result<v1::RevokeResponse, tonic::Status> {
    let channel = server.channel(cert).await.expect("connect");
    RevocationServiceClient::new(channel)
        .revoke(v1::RevokeRequest {
            target: Some(target),
            reason: "test".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A hand-driven session of `node` that got its Welcome: open and live.
async fn open_session(server: &TestServer, cert: &ClientCert, node: &str) -> RawSession {
    let mut session = RawSession::open(server, cert, hello(node, Role::Compute))
        .await
        .expect("session opens");
    let first = session.next().await.expect("welcome").expect("a message");
    assert!(
        matches!(first.msg, Some(v1::server_message::Msg::Welcome(_))),
        "{first:?}"
    );
    session
}

/// How long until the session's stream ends (any error or end counts),
/// failing after `limit`.
async fn cut_after(session: &mut RawSession, since: Instant, limit: Duration) -> Duration {
    loop {
        match tokio::time::timeout_at((since + limit).into(), session.inbound.message()).await {
            Err(_) => panic!("the session was not cut within {limit:?}"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None) | Err(_)) => return since.elapsed(),
        }
    }
}

fn assert_refused_as_revoked(refused: Result<RawSession, tonic::Status>) {
    let status = refused.err().expect("a revoked certificate is refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("certificate revoked: serial"),
        "{status:?}"
    );
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run rollcall-server");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn a_revoked_agent_is_cut_within_a_second_refused_on_reconnect_and_others_keep_reporting() {
    init();
    let pki = Pki::new();
    let mut server = TestServer::start(&pki, |_| {}).await;
    let other = TestAgent::start(&server, &pki, "cmp2", Role::Compute);
    server.wait_online("cmp2").await;
    let cert = pki.agent("cmp1");
    let mut session = open_session(&server, &cert, "cmp1").await;

    let asked = Instant::now();
    let answer = revoke(&server, &pki.admin("root"), Target::Agent("cmp1".into()))
        .await
        .expect("an admin revokes");
    let cut = cut_after(&mut session, asked, CUT_WITHIN).await;
    eprintln!("session cut {cut:?} after the revocation was asked");
    assert_eq!(answer.revoked.len(), 1, "{answer:?}");
    assert_eq!(answer.revoked[0].identity, "urn:rollcall:agent:cmp1");
    // The operator audit names who revoked what.
    let audit = server.operator_audit(&pki.viewer("vera")).await;
    assert!(
        audit.iter().any(|r| r.action == "revoke-certificate"
            && r.who == "root"
            && r.role == "admin"
            && r.target == "urn:rollcall:agent:cmp1"
            && r.detail.contains(&answer.revoked[0].serial)),
        "{audit:?}"
    );

    assert_refused_as_revoked(RawSession::open(&server, &cert, hello("cmp1", Role::Compute)).await);
    assert!(
        logs().contains("Connection refused: its client certificate is revoked"),
        "{}",
        logs()
    );
    assert!(logs().contains("Certificate revoked: cutting its open connections."));

    // The rest of the fleet is untouched: cmp2 reports after the cut.
    let after = Timestamp::now();
    server
        .wait_node("cmp2", "reporting after the revocation", |d| {
            d.node.online && d.report.as_ref().is_some_and(|r| r.collected_at > after)
        })
        .await;

    // Stored, not remembered: a restarted server refuses it too.
    server.restart().await;
    assert_refused_as_revoked(RawSession::open(&server, &cert, hello("cmp1", Role::Compute)).await);
    other.stop().await;
}

#[tokio::test]
async fn a_revoked_operators_watch_is_cut_and_their_next_call_refused() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let agent = TestAgent::start(&server, &pki, "cmp1", Role::Compute);
    server.wait_online("cmp1").await;
    let watcher = pki.operator("watcher");
    let mut client = v1::operator_service_client::OperatorServiceClient::new(
        server.channel(&watcher).await.expect("connect"),
    );
    let mut stream = client
        .watch_nodes(v1::WatchNodesRequest::default())
        .await
        .expect("watch")
        .into_inner();
    // The snapshot of cmp1: the stream is open and serving.
    stream.message().await.expect("snapshot").expect("an event");

    let asked = Instant::now();
    revoke(
        &server,
        &pki.admin("root"),
        Target::Operator("watcher".into()),
    )
    .await
    .expect("an admin revokes");
    loop {
        match tokio::time::timeout_at((asked + CUT_WITHIN).into(), stream.message()).await {
            Err(_) => panic!("the watch was not cut within {CUT_WITHIN:?}"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None) | Err(_)) => break,
        }
    }
    eprintln!(
        "watch cut {:?} after the revocation was asked",
        asked.elapsed()
    );

    let mut again = v1::operator_service_client::OperatorServiceClient::new(
        server.channel(&watcher).await.expect("connect"),
    );
    let status = again
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    // The admin's own connection is another certificate: still served.
    assert_eq!(server.list().await.len(), 1);
    agent.stop().await;
}

#[tokio::test]
async fn an_offline_revocation_reaches_a_running_server_and_the_crl_lists_it() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let cert = pki.agent("cmp3");
    let mut session = open_session(&server, &cert, "cmp3").await;

    let out = tokio::task::spawn_blocking({
        let mut cmd = Command::new(bin("rollcall-server"));
        cmd.args([
            "certs",
            "revoke",
            "--agent",
            "cmp3",
            "--reason",
            "stolen laptop",
        ])
        .arg("--pki")
        .arg(pki.path())
        .arg("--data-dir")
        .arg(server.data.path())
        .arg("--json")
        .env_remove("ROLLCALL_SERVER");
        move || run(&mut cmd)
    })
    .await
    .expect("join");
    // Stored once the command returned: from here the running server has
    // its poll interval to read it, and then the cut.
    let asked = Instant::now();
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(line["identity"], "urn:rollcall:agent:cmp3");
    assert_eq!(line["revoked_by"], "certs revoke (offline)");
    let serial = line["serial"].as_str().expect("serial").to_owned();

    let limit = rollcall_server::revoke::POLL_EVERY + CUT_WITHIN;
    let cut = cut_after(&mut session, asked, limit).await;
    eprintln!("session cut {cut:?} after the offline revocation");
    assert_refused_as_revoked(RawSession::open(&server, &cert, hello("cmp3", Role::Compute)).await);

    let crl = server.data.path().join("crl.pem");
    tokio::task::spawn_blocking({
        let mut cmd = Command::new(bin("rollcall-server"));
        cmd.args(["certs", "crl", "--pki"])
            .arg(pki.path())
            .arg("--data-dir")
            .arg(server.data.path())
            .arg("--out")
            .arg(&crl);
        move || run(&mut cmd)
    })
    .await
    .expect("join");
    let openssl = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&crl)
        .arg("-CAfile")
        .arg(pki.ca_cert())
        .output();
    match openssl {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{err}");
            assert!(err.contains("verify OK"), "signed by the CA: {err}");
            assert!(
                text.to_lowercase().contains(&serial),
                "serial {serial} in:\n{text}"
            );
        }
        Err(e) if !rollcall_tests::in_ci() => eprintln!("openssl not run ({e}); CRL unchecked"),
        Err(e) => panic!("openssl: {e}"),
    }
}

#[tokio::test]
async fn certs_issue_force_revokes_the_certificate_it_replaces() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let old = pki.agent("cmp4");
    drop(open_session(&server, &old, "cmp4").await);

    tokio::task::spawn_blocking({
        let mut cmd = Command::new(bin("rollcall-server"));
        cmd.args(["certs", "issue", "--agent", "cmp4", "--force", "--pki"])
            .arg(pki.path())
            .arg("--data-dir")
            .arg(server.data.path());
        move || run(&mut cmd)
    })
    .await
    .expect("join");
    let new = ClientCert {
        cert_pem: std::fs::read(pki.path().join("agents/cmp4.crt")).expect("crt"),
        key_pem: std::fs::read(pki.path().join("agents/cmp4.key")).expect("key"),
        cert: pki.path().join("agents/cmp4.crt"),
        key: pki.path().join("agents/cmp4.key"),
    };
    assert_ne!(new.cert_pem, old.cert_pem);

    // Another refusal on the way (a connection the loaded machine was slow
    // to take) is not the one this waits for.
    let refused = eventually(
        Duration::from_secs(10),
        "the replaced certificate refused as revoked",
        || async {
            RawSession::open(&server, &old, hello("cmp4", Role::Compute))
                .await
                .err()
                .filter(|s| s.message().contains("certificate revoked"))
        },
    )
    .await;
    assert_refused_as_revoked(Err(refused));
    drop(open_session(&server, &new, "cmp4").await);
}

#[tokio::test]
async fn only_an_admin_may_revoke() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let agent = pki.agent("cmp5");
    let status = revoke(&server, &agent, Target::Agent("cmp5".into()))
        .await
        .expect_err("an agent may not revoke");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    // Nor may an operator: revocation is an admin's.
    let status = revoke(&server, &server.operator, Target::Agent("cmp5".into()))
        .await
        .expect_err("an operator may not revoke");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("needs role admin"), "{status:?}");
    // Nothing was revoked: the agent still gets its session.
    drop(open_session(&server, &agent, "cmp5").await);

    let unknown = revoke(&server, &pki.admin("root"), Target::Agent("nowhere".into()))
        .await
        .expect_err("no certificate known");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let bad = revoke(&server, &pki.admin("root"), Target::Serial("xyz".into()))
        .await
        .expect_err("not a serial");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
}

#[tokio::test]
async fn the_cli_revokes_through_the_server_and_says_what_it_needs_offline() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let target = pki.agent("cmp6");
    let serial = rollcall_server::revoke::Serial::of_pem(&target.cert_pem).expect("serial");
    let cli = |cert: &ClientCert, args: &[&str]| {
        let mut cmd = Command::new(bin("rollcall-server"));
        cmd.args(args)
            .env("ROLLCALL_SERVER", server.url())
            .env("ROLLCALL_CA", pki.ca_cert())
            .env("ROLLCALL_CERT", &cert.cert)
            .env("ROLLCALL_KEY", &cert.key);
        cmd
    };
    // Upper case with colons, as openssl prints it.
    let typed: String = serial
        .as_str()
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");

    let agent = pki.agent("cmp7");
    let mut cmd = cli(&agent, &["certs", "revoke", "--serial", &typed]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run"))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");

    let mut cmd = cli(&pki.admin("root"), &["certs", "revoke", "--serial", &typed]);
    let out = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("serial {serial} revoked at ")),
        "{text}"
    );
    assert_refused_as_revoked(
        RawSession::open(&server, &target, hello("cmp6", Role::Compute)).await,
    );

    // Offline without a data directory, and --force without one: exit 2,
    // one line, nothing changed. (A host with a server config has one.)
    if std::path::Path::new("/etc/rollcall/server.toml").exists() {
        return;
    }
    let before = std::fs::read(pki.path().join("agents/cmp7.crt")).expect("crt");
    for args in [
        vec!["certs", "revoke", "--agent", "cmp7"],
        vec!["certs", "issue", "--agent", "cmp7", "--force", "--pki"],
    ] {
        let mut cmd = Command::new(bin("rollcall-server"));
        cmd.args(&args).env_remove("ROLLCALL_SERVER");
        if args.contains(&"--pki") {
            cmd.arg(pki.path());
        }
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run"))
            .await
            .expect("join");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("--data-dir"), "{err}");
    }
    assert_eq!(
        std::fs::read(pki.path().join("agents/cmp7.crt")).expect("crt"),
        before
    );
}
