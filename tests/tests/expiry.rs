//! Certificate expiry in sight (issue 13, item 4), through the real CLI
//! binary against a real server: an agent whose certificate expires in two
//! days shows in `nodes list --json` and at the head of `fleet status`, and
//! an operator whose own certificate expires in three days is warned on
//! stderr while the command still succeeds.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use rollcall_proto::expiry;
use rollcall_proto::identity::{Identity, Kind};
use rollcall_proto::model::{FleetSummary, Node, Role};
use rollcall_proto::timestamp::Timestamp;
use rollcall_tests::{
    ClientCert, Pki, RawSession, TempDir, TestAgent, TestServer, bin, hello, init, report,
};

const DAY: Duration = Duration::from_secs(86_400);

/// A certificate from the test CA valid from now for `life`: what `certs
/// issue` makes, with a shorter life. Written to `dir` (key 0600) for the CLI.
fn short_lived(pki: &Pki, kind: Kind, name: &str, life: Duration, dir: &Path) -> ClientCert {
    let who = match kind {
        Kind::Agent => Identity::agent(name),
        Kind::Operator => Identity::operator(name, rollcall_proto::identity::Role::Operator),
    };
    let issued = pki
        .ca()
        .issue_client_valid(&who, time::OffsetDateTime::now_utc(), life)
        .expect("issue");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &issued.cert_pem).expect("write cert");
    std::fs::write(&key, &issued.key_pem).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    ClientCert {
        cert,
        key,
        cert_pem: issued.cert_pem.into_bytes(),
        key_pem: issued.key_pem.into_bytes(),
    }
}

async fn cli(server: &TestServer, pki: &Pki, op: &ClientCert, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("rollcall-server"));
    cmd.args(args)
        .env("ROLLCALL_SERVER", server.url())
        .env("ROLLCALL_CA", pki.ca_cert())
        .env("ROLLCALL_CERT", &op.cert)
        .env("ROLLCALL_KEY", &op.key);
    tokio::task::spawn_blocking(move || cmd.output().expect("run rollcall-server"))
        .await
        .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn agent_expiry_shows_in_nodes_list_and_fleet_status_and_the_operator_is_warned() {
    init();
    let pki = Pki::new();
    let mut server = TestServer::start(&pki, |_| {}).await;
    let dir = TempDir::new("expiry");

    // cmp07's certificate expires in two days, cmp01's in an agent's usual 30.
    let soon = short_lived(&pki, Kind::Agent, "cmp07", 2 * DAY, dir.path());
    let soon_not_after = expiry::not_after_pem(&soon.cert_pem).expect("not_after");
    let session = RawSession::open(&server, &soon, hello("cmp07", Role::Compute))
        .await
        .expect("session");
    session.tx.send(report(1, "cmp07")).await.expect("report");
    let agent = TestAgent::start(&server, &pki, "cmp01", Role::Compute);
    server.wait_online("cmp07").await;
    server.wait_online("cmp01").await;

    // The usual operator certificate: no warning at all.
    let out = cli(
        &server,
        &pki,
        &server.operator,
        &["nodes", "list", "--json"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "",
        "no warning for a certificate far from expiry"
    );
    let nodes: Vec<Node> = serde_json::from_slice(&out.stdout).expect("nodes list --json");
    let by_name = |name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("{name} listed"))
            .cert_not_after
    };
    assert_eq!(by_name("cmp07"), Some(soon_not_after));
    let far = by_name("cmp01").expect("cmp01's expiry recorded");
    assert!(far.since(Timestamp::now()) > 20 * DAY, "{far}");
    // The absolute time, in the RFC 3339 form of every time in --json.
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        raw[1]["cert_not_after"].as_str(),
        Some(soon_not_after.to_string().as_str()),
        "{raw}"
    );

    // An operator whose own certificate expires in three days.
    let op = short_lived(&pki, Kind::Operator, "alice", 3 * DAY, dir.path());
    let out = cli(&server, &pki, &op, &["fleet", "status"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let date = {
        let c = expiry::not_after_pem(&op.cert_pem)
            .expect("not_after")
            .civil();
        format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
    };
    assert_eq!(
        text(&out.stderr),
        format!(
            "warning: your certificate {} expires in 3 days ({date}); ask an admin for a new one\n",
            op.cert.display()
        )
    );
    let status = text(&out.stdout);
    let line = status
        .lines()
        .find(|l| l.starts_with("Certificates:"))
        .unwrap_or_else(|| panic!("a Certificates line:\n{status}"));
    // Two days less the seconds since issue: "in 1d".
    assert_eq!(
        line, "Certificates: 1 expires within 14 days: cmp07 in 1d",
        "{status}"
    );

    let out = cli(&server, &pki, &op, &["fleet", "status", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("warning: your certificate "));
    let summary: FleetSummary = serde_json::from_slice(&out.stdout).expect("summary json");
    assert_eq!(
        (summary.certs_expiring_total, summary.certs_expired_total),
        (1, 0)
    );
    assert_eq!(summary.certs_expiring.len(), 1);
    assert_eq!(summary.certs_expiring[0].node, "cmp07");
    assert_eq!(summary.certs_expiring[0].not_after, soon_not_after);
    // A window wide enough takes in cmp01 too, still nearest first.
    let out = cli(
        &server,
        &pki,
        &op,
        &["fleet", "status", "--json", "--cert-days", "3650"],
    )
    .await;
    let summary: FleetSummary = serde_json::from_slice(&out.stdout).expect("summary json");
    let order: Vec<&str> = summary
        .certs_expiring
        .iter()
        .map(|c| c.node.as_str())
        .collect();
    assert_eq!(order, ["cmp07", "cmp01"]);

    let out = cli(
        &server,
        &pki,
        &op,
        &["nodes", "list", "--sort", "cert-expiry"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let rows: Vec<&str> = table.lines().skip(1).take(2).collect();
    assert!(
        rows[0].starts_with("cmp07 ") && rows[0].contains(" in 1d"),
        "{table}"
    );
    assert!(rows[1].starts_with("cmp01 "), "{table}");

    // The expiry is part of the node's stored record: a restarted server
    // still knows it while the node is away.
    agent.stop().await;
    drop(session);
    server.restart().await;
    let node = server.node("cmp07").await.expect("cmp07 kept");
    assert_eq!(node.node.cert_not_after, Some(soon_not_after));
}
