//! `rollcall-server store migrate`, the real binary (`cargo build --bins`
//! builds it), moving what a real server on SQLite kept, with real agents
//! and a campaign run to its end, into PostgreSQL, where a server started
//! on it shows the same fleet; a second migration into the database now in
//! use, and a URL that is none, are refused.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use rollcall_proto::model::Role;
use rollcall_proto::v1;
use rollcall_proto::v1::campaign_service_client::CampaignServiceClient;
use rollcall_proto::v1::revocation_service_client::RevocationServiceClient;
use rollcall_server::campaign::record::Phase;
use rollcall_server::campaign::wire::{audit_from_wire, view_from_wire};
use rollcall_server::replica::Fence;
use rollcall_server::revoke::Serial;
use rollcall_server::store::Store;
use rollcall_server::store::pg::PgStore;
use rollcall_tests::fleet::Fleet;
use rollcall_tests::postgres::{self, Postgres};
use rollcall_tests::{TestServer, bin, init, use_postgres};

use super::{Loaded, load_everything, tables, target};

const LONG: Duration = Duration::from_secs(90);

/// Runs `rollcall-server ARGS` to its end, off the runtime's threads.
async fn rollcall_server(args: Vec<String>) -> Output {
    let binary = bin("rollcall-server");
    tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(args)
            .env_remove("ROLLCALL_STORE_URL")
            .output()
            .expect("run rollcall-server")
    })
    .await
    .expect("join")
}

fn migrate_args(pg: &Postgres, from: &Path, to: &str) -> Vec<String> {
    vec![
        "store".into(),
        "migrate".into(),
        "--from".into(),
        from.display().to_string(),
        "--to".into(),
        to.into(),
        "--pg-ca".into(),
        pg.ca_file().display().to_string(),
    ]
}

/// One line on stderr, and the exit code.
fn failed_with(out: &Output) -> (Option<i32>, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    (out.status.code(), stderr)
}

/// A node as the store keeps it across servers: not whether it is online
/// now, nor why not.
fn kept(n: &rollcall_proto::model::Node) -> impl std::fmt::Debug + PartialEq + use<> {
    (
        n.name.clone(),
        n.role,
        n.labels.clone(),
        n.first_seen,
        n.hostname.clone(),
        n.boot_id.clone(),
        n.agent_version.clone(),
        n.last_report_seq,
        n.last_report_at,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_moves_a_real_fleet_to_postgresql_once_and_only_into_an_empty_database() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    // A real server on SQLite with real agents; a campaign patches and
    // reboots the computes to its end.
    let mut fleet = Fleet::start_on_sqlite(&[(Role::Compute, 2), (Role::Controller, 1)]).await;
    assert_eq!(
        fleet.server.postgres, None,
        "the fleet to move is on SQLite"
    );
    let spec = "name = \"before the move\"\nselect = { roles = [\"compute\"] }\n";
    let id = fleet.start_campaign(spec).await.campaign.id;
    let done = fleet.wait_ended(&id, LONG).await;
    assert_eq!(done.campaign.phase, Phase::Completed, "{done:#?}");
    // An admin revokes an operator's certificate: a revocation, and the
    // operator audit's line for it.
    let mallory = fleet.pki.operator("mallory");
    let serial = Serial::of_pem(&mallory.cert_pem).expect("a serial");
    let admin = fleet.pki.admin("root");
    RevocationServiceClient::new(fleet.server.channel(&admin).await.expect("connect"))
        .revoke(v1::RevokeRequest {
            target: Some(v1::revoke_request::Target::Serial(serial.as_str().into())),
            reason: "left the team".into(),
        })
        .await
        .expect("an admin revokes");
    let viewer = fleet.pki.viewer("vera");
    let operator_audit = fleet.server.operator_audit(&viewer).await;
    assert!(
        operator_audit
            .iter()
            .any(|r| r.action == "revoke-certificate" && r.detail.contains(serial.as_str())),
        "{operator_audit:?}"
    );
    let campaign_audit = fleet.audit(&id).await;
    fleet.stop_agents().await;
    for node in fleet.nodes.keys() {
        fleet.server.wait_offline(node).await;
    }
    let view = fleet.status(&id).await;
    let nodes: Vec<_> = fleet.server.list().await.iter().map(kept).collect();
    assert_eq!(nodes.len(), 3);
    fleet.server.stop().await;
    let data = fleet.server.data.path().to_owned();
    let in_sqlite: Loaded = {
        let mut sqlite = Store::open(&data).expect("open SQLite");
        load_everything(&mut sqlite)
    };
    assert!(!in_sqlite.revocations.is_empty() && !in_sqlite.audit_pages.is_empty());

    let url = pg.database("migrated").expect("a database");
    let to = format!("{url}?sslmode=require");
    let out = rollcall_server(migrate_args(pg, &data, &to)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    assert!(stdout.contains("Migrated"), "{stdout}");
    assert!(stdout.contains("campaign_nodes"), "{stdout}");

    // What a starting leader reads is what SQLite held.
    let in_postgres = tokio::task::spawn_blocking({
        let target = target(pg, &url);
        move || load_everything(&mut PgStore::open(&target, Fence::unfenced()).expect("open"))
    })
    .await
    .expect("join");
    assert_eq!(in_postgres, in_sqlite, "every row came over");

    // A server on the PostgreSQL database shows the same fleet.
    let mut server = TestServer::start(&fleet.pki, |c| use_postgres(c, pg, &url)).await;
    let moved: Vec<_> = server.list().await.iter().map(kept).collect();
    assert_eq!(moved, nodes, "the same nodes");
    let mut campaigns =
        CampaignServiceClient::new(server.channel(&server.operator).await.expect("connect"));
    let status = campaigns
        .get_campaign(v1::CampaignRef { id: id.clone() })
        .await
        .expect("the campaign is there")
        .into_inner();
    let moved_view = view_from_wire(status).expect("a view");
    assert_eq!(moved_view.campaign, view.campaign, "the same campaign");
    assert_eq!(moved_view.nodes, view.nodes, "the same runs");
    let moved_audit: Vec<_> = campaigns
        .campaign_audit(v1::CampaignRef { id: id.clone() })
        .await
        .expect("its audit")
        .into_inner()
        .entries
        .into_iter()
        .map(audit_from_wire)
        .collect();
    assert_eq!(moved_audit, campaign_audit, "the same campaign audit");
    assert_eq!(
        server.operator_audit(&viewer).await,
        operator_audit,
        "the same operator audit"
    );
    // The revocation came over: the revoked certificate is refused.
    let refused = v1::operator_service_client::OperatorServiceClient::new(
        server.channel(&mallory).await.expect("connect"),
    )
    .list_nodes(v1::ListNodesRequest::default())
    .await
    .expect_err("a revoked certificate is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("revoked"), "{refused:?}");
    server.stop().await;

    // The SQLite file is marked: no server (nor migration) opens it again.
    let before = tables(pg, &url);
    let out = rollcall_server(migrate_args(pg, &data, &to)).await;
    let (code, line) = failed_with(&out);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("was migrated to PostgreSQL"), "{line}");
    assert!(!line.contains('\n'), "one line: {line}");

    // Without the mark, into the database now in use: refused, nothing
    // changed.
    std::fs::remove_file(data.join(rollcall_server::store::MIGRATED_FILE)).expect("the mark");
    let out = rollcall_server(migrate_args(pg, &data, &to)).await;
    let (code, line) = failed_with(&out);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("is not empty"), "{line}");
    assert_eq!(
        tables(pg, &url),
        before,
        "a refused migration changes nothing"
    );

    // A URL that is none is a usage error, and a password is never shown.
    let out = rollcall_server(migrate_args(pg, &data, "mysql://root@db/rollcall")).await;
    let (code, line) = failed_with(&out);
    assert_eq!(code, Some(2), "{line}");
    assert!(line.contains("--to"), "{line}");
    let no_database = format!("postgres://postgres:hunter2-Secret@127.0.0.1:{}", pg.port());
    let out = rollcall_server(migrate_args(pg, &data, &no_database)).await;
    let (code, line) = failed_with(&out);
    assert_eq!(code, Some(2), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}
