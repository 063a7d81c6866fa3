//! `nodes forget`: an offline node held by no campaign is removed from the
//! fleet (lists, the summary, a role's concurrency) and from the store,
//! with an audit line; an online node, or one a campaign holds, is refused
//! with the reason. One real server, real agents, real mTLS, a real SQLite
//! file.

use std::time::Duration;

use rollcall_proto::model::Role;
use rollcall_proto::v1;
use rollcall_proto::v1::admin_service_client::AdminServiceClient;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::Phase;
use rollcall_tests::fleet::Fleet;
use rollcall_tests::init;
use tonic::Code;
use tonic::transport::Channel;

const LONG: Duration = Duration::from_secs(120);

async fn admin(fleet: &Fleet) -> AdminServiceClient<Channel> {
    let cert = fleet.pki.admin("root");
    AdminServiceClient::new(fleet.server.channel(&cert).await.expect("admin connects"))
}

async fn forget(fleet: &Fleet, node: &str) -> Result<v1::AuditRecord, tonic::Status> {
    admin(fleet)
        .await
        .forget_node(v1::ForgetNodeRequest {
            node: node.into(),
            reason: "left the cloud".into(),
        })
        .await
        .map(|r| r.into_inner().audit.expect("an audit line"))
}

async fn audit(fleet: &Fleet) -> Vec<v1::AuditRecord> {
    fleet.server.operator_audit(&fleet.pki.admin("root")).await
}

fn count(db: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_node_is_forgotten_everywhere_and_for_good_and_an_online_one_is_refused() {
    init();
    let mut fleet = Fleet::start(&[(Role::Compute, 3)]).await;

    let online = forget(&fleet, "cmp01").await.expect_err("online");
    assert_eq!(online.code(), Code::FailedPrecondition, "{online:?}");
    assert!(
        online.message().contains("cmp01 is online"),
        "{}",
        online.message()
    );
    let unknown = forget(&fleet, "cmp99").await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    fleet.power_off("cmp03").await;
    let before = fleet.server.summary().await;
    assert_eq!((before.nodes_total, before.nodes_offline), (3, 1));
    let line = forget(&fleet, "cmp03").await.expect("forgotten");
    assert_eq!(
        (
            line.seq,
            line.who.as_str(),
            line.role.as_str(),
            line.action.as_str(),
            line.target.as_str(),
            line.detail.as_str()
        ),
        (1, "root", "admin", "forget-node", "cmp03", "left the cloud")
    );

    // Answered from memory: gone at once from lists and the summary.
    let names: Vec<String> = fleet
        .server
        .list()
        .await
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["cmp01", "cmp02"]);
    let after = fleet.server.summary().await;
    assert_eq!(
        (
            after.nodes_total,
            after.nodes_offline,
            after.offline_nodes.len()
        ),
        (2, 0, 0)
    );
    let again = forget(&fleet, "cmp03").await.expect_err("already gone");
    assert_eq!(again.code(), Code::NotFound);

    // And from the store: nothing of it is read back after a restart.
    fleet.server.stop().await;
    let db = fleet.server.data.path().join("rollcall.db");
    assert_eq!(
        count(&db, "SELECT count(*) FROM nodes WHERE name = 'cmp03'"),
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM node_sections WHERE node = 'cmp03'"
        ),
        0
    );
    assert!(
        count(
            &db,
            "SELECT count(*) FROM node_sections WHERE node = 'cmp01'"
        ) > 0,
        "the other nodes keep their reports"
    );
    fleet.server.restart().await;
    fleet.server.wait_online("cmp01").await;
    let names: Vec<String> = fleet
        .server
        .list()
        .await
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["cmp01", "cmp02"]);
    let lines = audit(&fleet).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].target, "cmp03");

    // A node that was forgotten and connects again comes back as new.
    fleet
        .node("cmp03")
        .start_agent(&fleet.server.url(), &fleet.pki);
    fleet.server.wait_online("cmp03").await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_a_campaign_holds_is_refused_and_a_forgotten_one_frees_its_roles_slot() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 3)]).await;
    // cmp03 is outside the campaign and offline: it takes compute's one
    // slot, so the campaign waits.
    fleet.power_off("cmp03").await;
    let spec = r#"
name = "forget"
select = { nodes = ["cmp01", "cmp02"] }
concurrency = { compute = 1 }
"#;
    let c = fleet.start_campaign(spec).await;
    let id = c.campaign.id.clone();
    let waiting = fleet
        .wait_for(&id, "the campaign to wait for compute's slot", LONG, |v| {
            v.waiting
                .contains("compute: 1 of at most 1 node(s) unavailable (0 in this campaign)")
        })
        .await;
    assert!(
        waiting.nodes.iter().all(|n| n.step == Step::Pending),
        "{waiting:#?}"
    );

    // A pending member that goes offline is still the campaign's.
    fleet.power_off("cmp02").await;
    let held = forget(&fleet, "cmp02").await.expect_err("held");
    assert_eq!(held.code(), Code::FailedPrecondition, "{held:?}");
    assert_eq!(
        held.message(),
        format!(
            "cmp02 is pending in campaign {id}, which is running: cancel the campaign, or let the node finish, first"
        )
    );
    assert!(fleet.server.list().await.iter().any(|n| n.name == "cmp02"));
    fleet
        .node("cmp02")
        .start_agent(&fleet.server.url(), &fleet.pki);
    fleet.server.wait_online("cmp02").await;

    // Forgetting cmp03 frees the slot: the campaign goes on and completes.
    forget(&fleet, "cmp03").await.expect("forgotten");
    let done = fleet.wait_ended(&id, LONG).await;
    assert_eq!(done.campaign.phase, Phase::Completed, "{done:#?}");
    assert!(done.nodes.iter().all(|n| n.step == Step::Done), "{done:#?}");
    let lines = audit(&fleet).await;
    assert_eq!(lines.len(), 1, "a refusal is not an action: {lines:?}");
    fleet.stop().await;
}

/// The real CLI as the holder of `cert`.
async fn cli(
    fleet: &Fleet,
    cert: &rollcall_tests::ClientCert,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(rollcall_tests::bin("rollcall-server"));
    cmd.args(args)
        .env("ROLLCALL_SERVER", fleet.server.url())
        .env("ROLLCALL_CA", fleet.pki.ca_cert())
        .env("ROLLCALL_CERT", &cert.cert)
        .env("ROLLCALL_KEY", &cert.key);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("the CLI runs"))
        .await
        .expect("join");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_forgets_as_an_admin_only_and_lists_the_audit_escaped() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 2)]).await;
    fleet.power_off("cmp02").await;
    let reason = "decommissioned\n2  forged\u{1b}[2J";

    let operator = fleet.pki.operator("olga");
    let (code, _, err) = cli(
        &fleet,
        &operator,
        &["nodes", "forget", "cmp02", "--reason", reason],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim_end(),
        "error: server said permission denied: nodes forget needs role admin; operator olga holds operator"
    );
    assert!(fleet.server.list().await.iter().any(|n| n.name == "cmp02"));

    let root = fleet.pki.admin("root");
    let (code, out, err) = cli(
        &fleet,
        &root,
        &["nodes", "forget", "cmp02", "--reason", reason],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "Forgot cmp02 (audit line 1).\n");

    let viewer = fleet.pki.viewer("vera");
    let (code, out, err) = cli(&fleet, &viewer, &["audit", "list"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows.len(),
        2,
        "one line per row, whatever the reason held: {out}"
    );
    assert!(rows[0].starts_with("SEQ  AT"), "{out}");
    assert!(
        rows[1].contains("root")
            && rows[1].contains("admin")
            && rows[1].contains("forget-node")
            && rows[1].ends_with(r"cmp02   decommissioned\n2  forged\x1b[2J"),
        "{out}"
    );
    let (code, out, err) = cli(&fleet, &viewer, &["audit", "list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json[0]["detail"], reason, "--json is exact");
    assert_eq!(json[0]["action"], "forget-node");
    assert_eq!(json[0]["who"], "root");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_with_revoke_also_revokes_the_nodes_certificate() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 2)]).await;
    fleet.power_off("cmp01").await;
    let root = fleet.pki.admin("root");
    let (code, out, err) = cli(
        &fleet,
        &root,
        &["nodes", "forget", "cmp01", "--revoke", "--reason", "sold"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("Forgot cmp01 (audit line 1)."), "{out}");
    let revoked = lines.next().unwrap_or_default();
    assert!(
        revoked.contains("urn:rollcall:agent:cmp01") && revoked.contains("forgotten: sold"),
        "{out}"
    );
    assert!(!fleet.server.list().await.iter().any(|n| n.name == "cmp01"));
    // Both are in the operator audit, in that order.
    let actions: Vec<(String, String)> = audit(&fleet)
        .await
        .into_iter()
        .map(|r| (r.action, r.target))
        .collect();
    assert_eq!(
        actions,
        [
            ("forget-node".to_owned(), "cmp01".to_owned()),
            (
                "revoke-certificate".to_owned(),
                "urn:rollcall:agent:cmp01".to_owned()
            ),
        ]
    );
    fleet.stop().await;
}
