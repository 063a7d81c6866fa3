//! Agents renew their own certificates over their sessions (issue 13,
//! item 3), end to end: a real server with the CA key, a real agent
//! session reading its certificate from files, certificates that live a
//! minute so that renewal (two thirds into the life) and expiry both come
//! within the test.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use rollcall_agent::collect::{Sources, SystemCollector};
use rollcall_agent::config::HostConfig;
use rollcall_agent::renew::CertFiles;
use rollcall_agent::session::{Session, Settings};
use rollcall_proto::certinfo::CertInfo;
use rollcall_proto::identity::{Identity, Kind};
use rollcall_proto::model::Role;
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1::{self, agent_message, server_message};
use rollcall_tests::{ClientCert, Pki, RawSession, TempDir, TestServer, eventually, hello, init};
use tokio_util::sync::CancellationToken;

/// The life of every agent certificate in this test. With the CA's minute
/// of slack before `now`, a certificate's whole life is two minutes and
/// the agent renews it 20 s (± 6 s) after it was issued.
const LIFE: Duration = Duration::from_secs(60);

fn agent(node: &str) -> Identity {
    Identity {
        kind: Kind::Agent,
        name: node.to_owned(),
        role: None,
    }
}

/// A certificate of `LIFE` for `node`, written where an agent reads it.
fn short_lived(pki: &Pki, node: &str, dir: &TempDir) -> (CertFiles, ClientCert) {
    let issued = pki
        .ca()
        .issue_client_valid(&agent(node), time::OffsetDateTime::now_utc(), LIFE)
        .expect("issue");
    let files = CertFiles {
        cert: dir.path().join("agent.crt"),
        key: dir.path().join("agent.key"),
    };
    std::fs::write(&files.cert, &issued.cert_pem).expect("write cert");
    std::fs::write(&files.key, &issued.key_pem).expect("write key");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let cert = ClientCert {
        cert: files.cert.clone(),
        key: files.key.clone(),
        cert_pem: issued.cert_pem.into_bytes(),
        key_pem: issued.key_pem.into_bytes(),
    };
    (files, cert)
}

async fn renewing_server(pki: &Pki) -> TestServer {
    TestServer::start_with_options(
        pki,
        |c| c.tls.ca_key = Some(pki.path().join("ca.key")),
        rollcall_server::Options {
            agent_cert_validity: Some(LIFE),
            ..Default::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_renews_keeps_reporting_and_reconnects_after_its_first_certificate_expired() {
    init();
    let pki = Pki::new();
    let mut server = renewing_server(&pki).await;
    let dir = TempDir::new("renew");
    let (files, first) = short_lived(&pki, "cmp1", &dir);
    let first_info = CertInfo::from_pem(&String::from_utf8_lossy(&first.cert_pem)).expect("info");

    let settings = Settings {
        servers: vec![server.url()],
        node: "cmp1".into(),
        role: Role::Compute,
        labels: Default::default(),
        ca_pem: pki.ca_pem(),
        cert_pem: first.cert_pem.clone(),
        key_pem: first.key_pem.clone(),
        report_interval: Duration::from_secs(1),
        full_every: 30,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        boot_id: "boot-cmp1".into(),
        renew: Some(files.clone()),
    };
    let shutdown = CancellationToken::new();
    let sources = Sources::host_only(SystemCollector::new(HostConfig::default()));
    let session = tokio::spawn(
        Session::new(settings, sources)
            .expect("session")
            .run(shutdown.clone()),
    );
    server.wait_online("cmp1").await;

    // The agent asks about 20 s in; its new certificate is on disk, for a
    // key it made, and the key is private.
    let renewed = eventually(Duration::from_secs(45), "a renewed certificate", || async {
        let pem = std::fs::read_to_string(&files.cert).ok()?;
        CertInfo::from_pem(&pem)
            .ok()
            .filter(|info| info.not_after > first_info.not_after)
    })
    .await;
    assert_eq!(renewed.identity, agent("cmp1"));
    assert_ne!(renewed.public_key, first_info.public_key, "a new key");
    let key_pem = std::fs::read(&files.key).expect("key");
    assert_ne!(key_pem, first.key_pem);
    let mode = std::fs::metadata(&files.key)
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let renewed_at = Timestamp::now();
    // The operator audit has the renewal, by the node's own certificate.
    let audit = server.operator_audit(&pki.viewer("vera")).await;
    assert!(
        audit.iter().any(|r| r.action == "renew-certificate"
            && r.who == "cmp1"
            && r.target == "cmp1"
            && r.detail.starts_with("valid until ")),
        "{audit:?}"
    );

    // The session goes on over its connection: reports keep coming.
    server
        .wait_node("cmp1", "reporting after the renewal", |d| {
            d.node.online
                && d.report
                    .as_ref()
                    .is_some_and(|r| r.collected_at > renewed_at)
        })
        .await;

    // Until the first certificate has expired, and is refused.
    tokio::time::sleep(first_info.not_after.since(Timestamp::now()) + Duration::from_secs(2)).await;
    let refused = RawSession::open(&server, &first, hello("cmp1", Role::Compute)).await;
    assert!(
        refused.is_err(),
        "the expired first certificate still connects"
    );

    // A forced reconnect: the agent comes back with what it renewed.
    server.restart().await;
    let back = server.wait_online("cmp1").await;
    assert!(back.node.online);
    let after = Timestamp::now();
    server
        .wait_node("cmp1", "reporting after the reconnect", |d| {
            d.node.online && d.report.as_ref().is_some_and(|r| r.collected_at > after)
        })
        .await;

    shutdown.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(5), session)
        .await
        .expect("agent stops")
        .expect("no panic");
    assert!(stats.reports > 0);
}

/// A request sent by hand over a session of a node's own certificate.
async fn ask(
    server: &TestServer,
    cert: &ClientCert,
    node: &str,
    csr_for: &str,
) -> v1::CertificateIssued {
    let (_, csr_pem) = rollcall_agent::renew::request(csr_for, Timestamp::now()).expect("request");
    ask_with(server, cert, node, csr_pem).await
}

/// `node` renews by hand over a session of `cert`; the certificate it gets,
/// with the key it asked for, written into `dir`.
async fn renew_by_hand(
    server: &TestServer,
    cert: &ClientCert,
    node: &str,
    dir: &TempDir,
) -> ClientCert {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node);
    params.subject_alt_names = vec![rcgen::SanType::URI(
        agent(node).uri().try_into().expect("uri"),
    )];
    let csr_pem = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let answer = ask_with(server, cert, node, csr_pem).await;
    assert!(answer.refused.is_empty(), "{}", answer.refused);
    let renewed = ClientCert {
        cert: dir.path().join("renewed.crt"),
        key: dir.path().join("renewed.key"),
        cert_pem: answer.certificate_pem.into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
    };
    std::fs::write(&renewed.cert, &renewed.cert_pem).expect("write cert");
    std::fs::write(&renewed.key, &renewed.key_pem).expect("write key");
    renewed
}

async fn ask_with(
    server: &TestServer,
    cert: &ClientCert,
    node: &str,
    csr_pem: String,
) -> v1::CertificateIssued {
    let mut session = RawSession::open(server, cert, hello(node, Role::Compute))
        .await
        .expect("session");
    let welcome = session.next().await.expect("welcome");
    assert!(matches!(
        welcome.and_then(|m| m.msg),
        Some(server_message::Msg::Welcome(_))
    ));
    session
        .tx
        .send(v1::AgentMessage {
            msg: Some(agent_message::Msg::CertificateRequest(
                v1::CertificateRequest { csr_pem },
            )),
        })
        .await
        .expect("send");
    loop {
        match session.next().await.expect("answer").and_then(|m| m.msg) {
            Some(server_message::Msg::CertificateIssued(answer)) => return answer,
            Some(_) => continue,
            None => panic!("session ended without an answer"),
        }
    }
}

#[tokio::test]
async fn a_request_for_another_node_or_to_a_server_without_the_ca_key_is_refused() {
    init();
    let pki = Pki::new();
    let server = renewing_server(&pki).await;
    let cert = pki.agent("cmp1");
    let answer = ask(&server, &cert, "cmp1", "cmp2").await;
    assert!(answer.certificate_pem.is_empty());
    assert!(answer.refused.contains("CN=cmp1"), "{}", answer.refused);
    let answer = ask(&server, &cert, "cmp1", "cmp1").await;
    let info = CertInfo::from_pem(&answer.certificate_pem).expect("signed");
    assert_eq!(info.identity, agent("cmp1"));

    let plain = TestServer::start(&pki, |_| {}).await;
    let answer = ask(&plain, &cert, "cmp1", "cmp1").await;
    assert!(answer.certificate_pem.is_empty());
    assert!(
        answer.refused.contains("[tls] ca_key"),
        "{}",
        answer.refused
    );
}

#[tokio::test]
async fn revoking_an_agent_by_name_revokes_the_certificates_it_renewed() {
    init();
    let pki = Pki::new();
    let server = renewing_server(&pki).await;
    let dir = TempDir::new("renewed");
    let first = pki.agent("cmp1");
    let renewed = renew_by_hand(&server, &first, "cmp1", &dir).await;
    let serial = |pem: &[u8]| {
        rollcall_server::revoke::Serial::of_pem(pem)
            .expect("serial")
            .to_string()
    };
    let mut want = vec![serial(&first.cert_pem), serial(&renewed.cert_pem)];
    want.sort();
    // The renewed certificate works until it is revoked.
    drop(
        RawSession::open(&server, &renewed, hello("cmp1", Role::Compute))
            .await
            .expect("the renewed certificate connects"),
    );
    // A second signature for the node this soon is refused, whatever session asks.
    let again = ask(&server, &renewed, "cmp1", "cmp1").await;
    assert!(again.certificate_pem.is_empty());
    assert!(again.refused.contains("per 10s"), "{}", again.refused);

    let channel = server.channel(&pki.admin("root")).await.expect("connect");
    let answer = v1::revocation_service_client::RevocationServiceClient::new(channel)
        .revoke(v1::RevokeRequest {
            target: Some(v1::revoke_request::Target::Agent("cmp1".into())),
            reason: "lost".into(),
        })
        .await
        .expect("an admin revokes")
        .into_inner();
    let mut revoked: Vec<String> = answer.revoked.iter().map(|r| r.serial.clone()).collect();
    revoked.sort();
    assert_eq!(revoked, want, "both the first and the renewed certificate");
    for cert in [&renewed, &first] {
        let refused = RawSession::open(&server, cert, hello("cmp1", Role::Compute))
            .await
            .err()
            .expect("a revoked certificate is refused");
        assert!(
            refused.message().contains("certificate revoked: serial"),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn a_renewal_the_store_cannot_record_is_refused() {
    init();
    let pki = Pki::new();
    let server = renewing_server(&pki).await;
    server.faults.fail("disk full");
    let answer = ask(&server, &pki.agent("cmp1"), "cmp1", "cmp1").await;
    assert!(
        answer.certificate_pem.is_empty(),
        "nothing unrecorded is sent"
    );
    assert!(
        answer.refused.contains("cannot record the certificate")
            && answer.refused.contains("disk full"),
        "{}",
        answer.refused
    );
}
