//! The real `rollcall-server serve` binary on a damaged data dir, as
//! systemd would start it: a database it must not open is refused with
//! exit 2 (which the shipped unit does not restart) and one line, and one
//! unreadable row is set aside while the server starts and serves the rest.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rollcall_proto::model::{HostFacts, Node, NodeDetail, Role, UpdatesSection};
use rollcall_proto::pack::Pack;
use rollcall_proto::timestamp::Timestamp;
use rollcall_server::store::{DB_FILE, NodeWrite, Section, Store};
use rollcall_tests::{Pki, TempDir, bin};

/// Kills the server when a test fails half way.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn serve_cmd(pki: &Pki, data: &Path) -> Command {
    let mut cmd = Command::new(bin("rollcall-server"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(data)
    .arg("--ca")
    .arg(pki.ca_cert())
    .arg("--cert")
    .arg(pki.path().join("server.crt"))
    .arg("--key")
    .arg(pki.path().join("server.key"))
    .env_remove("ROLLCALL_LOG")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Runs `serve` on `data` and expects it to stop by itself within 10 s
/// (today's code would start and serve an empty fleet: that fails here).
fn serve_refused(pki: &Pki, data: &Path) -> Output {
    let child = serve_cmd(pki, data).spawn().expect("spawn rollcall-server");
    let mut server = Server(Some(child));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let child = server.0.as_mut().expect("running");
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollcall-server started on a database it must refuse"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let child = server.0.take().expect("exited");
    child.wait_with_output().expect("output")
}

fn assert_refused(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{err}");
    assert!(lines[0].starts_with("error: database "), "{err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} not in: {err}");
    }
}

fn sql(data: &Path, batch: &str) {
    rusqlite::Connection::open(data.join(DB_FILE))
        .expect("open")
        .execute_batch(batch)
        .expect("sql");
}

/// A rollcall database as the server leaves it.
fn rollcall_db(data: &Path) {
    drop(Store::open(data).expect("a new store"));
}

#[test]
fn an_existing_empty_database_exits_2_with_one_line() {
    let pki = Pki::new();
    let data = TempDir::new("empty-db");
    std::fs::write(data.path().join(DB_FILE), b"").expect("0-byte file");
    let out = serve_refused(&pki, data.path());
    assert_refused(&out, &["rollcall.db", "empty (0 bytes)", "backup"]);
    assert_eq!(
        std::fs::metadata(data.path().join(DB_FILE))
            .expect("db")
            .len(),
        0,
        "left as it was"
    );
}

#[test]
fn an_empty_database_with_a_stale_wal_exits_2_with_one_line() {
    let pki = Pki::new();
    let data = TempDir::new("empty-wal");
    // A real WAL of another rollcall database, left behind.
    let other = TempDir::new("wal-source");
    {
        let store = Store::open(other.path()).expect("store");
        std::fs::copy(
            other.path().join("rollcall.db-wal"),
            data.path().join("rollcall.db-wal"),
        )
        .expect("copy wal");
        drop(store);
    }
    std::fs::write(data.path().join(DB_FILE), b"").expect("0-byte file");
    let out = serve_refused(&pki, data.path());
    assert_refused(&out, &["empty (0 bytes", "stale -wal"]);
}

#[test]
fn a_negative_schema_version_exits_2_naming_the_versions() {
    let pki = Pki::new();
    let data = TempDir::new("version-neg");
    rollcall_db(data.path());
    sql(data.path(), "PRAGMA user_version = -1;");
    let out = serve_refused(&pki, data.path());
    assert_refused(&out, &["schema version -1", "supports versions 0 to"]);
}

#[test]
fn a_schema_version_far_in_the_future_exits_2_naming_the_versions() {
    let pki = Pki::new();
    let data = TempDir::new("version-future");
    rollcall_db(data.path());
    sql(data.path(), "PRAGMA user_version = 100000;");
    let out = serve_refused(&pki, data.path());
    assert_refused(
        &out,
        &[
            "schema version 100000",
            "supports versions 0 to",
            "newer rollcall-server",
        ],
    );
}

#[test]
fn a_foreign_sqlite_database_exits_2_and_is_left_untouched() {
    let pki = Pki::new();
    let data = TempDir::new("foreign");
    sql(
        data.path(),
        "CREATE TABLE dashboards (id INTEGER PRIMARY KEY, title TEXT);
         INSERT INTO dashboards (title) VALUES ('fleet');",
    );
    let before = std::fs::read(data.path().join(DB_FILE)).expect("db");
    let out = serve_refused(&pki, data.path());
    assert_refused(&out, &["not rollcall's", "dashboards"]);
    assert_eq!(
        std::fs::read(data.path().join(DB_FILE)).expect("db"),
        before,
        "not one byte changed"
    );
}

#[test]
fn a_file_that_is_not_sqlite_exits_2_with_one_line() {
    let pki = Pki::new();
    let data = TempDir::new("not-sqlite");
    std::fs::write(data.path().join(DB_FILE), "{\"nodes\": []}\n").expect("write");
    let out = serve_refused(&pki, data.path());
    assert_refused(&out, &["not an SQLite database"]);
}

/// Three nodes with reports, then cmp2's updates section damaged the way a
/// NaN once was written (a `null` where a number is read) and cmp3's host
/// section replaced by bytes that are not JSON.
fn fleet_with_bad_rows(data: &Path) {
    let mut store = Store::open(data).expect("store");
    let writes: Vec<NodeWrite> = ["cmp1", "cmp2", "cmp3"]
        .into_iter()
        .map(|name| {
            let mut node = Node::new(name, Role::Compute, Timestamp::from_unix_millis(1_000));
            node.last_report_seq = 5;
            NodeWrite {
                node,
                sections: vec![
                    Section::Host(Some(HostFacts {
                        hostname: name.into(),
                        ..Default::default()
                    })),
                    Section::Updates(Some(
                        UpdatesSection {
                            count: 3,
                            ..Default::default()
                        }
                        .pack(),
                    )),
                ],
            }
        })
        .collect();
    store.write_nodes(&writes).expect("write");
    drop(store);
    sql(
        data,
        "UPDATE node_sections SET data = json_set(data, '$.count', json('null'))
           WHERE node = 'cmp2' AND section = 'updates';
         UPDATE node_sections SET data = 'not json at all'
           WHERE node = 'cmp3' AND section = 'host';",
    );
}

#[test]
fn one_unreadable_row_is_set_aside_and_the_server_serves_the_rest() {
    let pki = Pki::new();
    let data = TempDir::new("bad-rows");
    fleet_with_bad_rows(data.path());

    let mut child = serve_cmd(&pki, data.path())
        .spawn()
        .expect("spawn rollcall-server");
    let stderr = child.stderr.take().expect("stderr");
    let server = Server(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let port = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the server did not start; stderr:\n{}", log.join("\n")));
        let port = line
            .contains("rollcall-server listening.")
            .then(|| {
                line.rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse::<u16>().ok())
            })
            .flatten();
        log.push(line);
        if let Some(port) = port {
            break port;
        }
    };
    let warnings: Vec<&String> = log.iter().filter(|l| l.contains("WARN")).collect();
    let named = |node: &str, section: &str| {
        warnings
            .iter()
            .filter(|l| {
                l.contains(&format!("node={node}")) && l.contains(&format!("section={section}"))
            })
            .count()
    };
    assert_eq!(named("cmp2", "updates"), 1, "log:\n{}", log.join("\n"));
    assert_eq!(named("cmp3", "host"), 1, "log:\n{}", log.join("\n"));
    assert_eq!(
        warnings.len(),
        2,
        "one warning per bad row:\n{}",
        log.join("\n")
    );

    let op = pki.operator("alice");
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(bin("rollcall-server"));
        cmd.args(args)
            .env("ROLLCALL_SERVER", format!("https://localhost:{port}"))
            .env("ROLLCALL_CA", pki.ca_cert())
            .env("ROLLCALL_CERT", &op.cert)
            .env("ROLLCALL_KEY", &op.key);
        let out = cmd.output().expect("run cli");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let nodes: Vec<Node> =
        serde_json::from_slice(&cli(&["nodes", "list", "--json"])).expect("nodes json");
    let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["cmp1", "cmp2", "cmp3"], "every node is kept");
    let show = |name: &str| -> NodeDetail {
        serde_json::from_slice(&cli(&["nodes", "show", name, "--json"])).expect("node json")
    };
    let report = |name: &str| show(name).report.expect("a report");
    assert_eq!(report("cmp1").updates.map(|u| u.count), Some(3));
    let cmp2 = report("cmp2");
    assert_eq!(cmp2.updates, None, "the bad section is dropped");
    assert_eq!(cmp2.host.map(|h| h.hostname), Some("cmp2".into()));
    let cmp3 = report("cmp3");
    assert_eq!(cmp3.host, None, "the bad section is dropped");
    assert_eq!(cmp3.updates.map(|u| u.count), Some(3));
    drop(server);

    // Set aside, not lost: the raw rows are in the quarantine table.
    let conn = rusqlite::Connection::open(data.path().join(DB_FILE)).expect("open");
    let aside: Vec<(String, String)> = conn
        .prepare("SELECT key, section FROM quarantine ORDER BY key")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .expect("quarantine");
    assert_eq!(
        aside,
        [
            ("cmp2".to_owned(), "updates".to_owned()),
            ("cmp3".to_owned(), "host".to_owned())
        ]
    );
}

fn stored_campaign(id: &str, spec_toml: &str) -> rollcall_server::campaign::record::CampaignWrite {
    use rollcall_server::campaign::record::{Campaign, CampaignWrite};
    let now = Timestamp::from_unix_millis(1_000);
    CampaignWrite {
        campaign: Some(Campaign {
            id: id.into(),
            name: id.into(),
            spec_toml: spec_toml.into(),
            phase: rollcall_server::campaign::record::Phase::Completed,
            reason: String::new(),
            started_by: "alice".into(),
            created_at: now,
            updated_at: now,
            finished_at: Some(now),
            held: false,
            blast: Default::default(),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_campaigns_are_not_resumed_and_the_server_starts() {
    rollcall_tests::init();
    let pki = Pki::new();
    let data = TempDir::new("bad-campaigns");
    {
        let mut store = Store::open(data.path()).expect("store");
        store
            .write_campaign(&stored_campaign("c-ok", "name = \"ok\"\n"))
            .expect("write");
        // A spec this binary no longer accepts, and a row that is not JSON.
        store
            .write_campaign(&stored_campaign("c-spec", "no_such_key = 1\n"))
            .expect("write");
        store
            .write_campaign(&stored_campaign("c-row", "name = \"row\"\n"))
            .expect("write");
    }
    sql(
        data.path(),
        "UPDATE campaigns SET campaign = 'null' WHERE id = 'c-row';",
    );
    let dir = data.path().to_owned();
    let mut server = rollcall_tests::TestServer::start(&pki, move |c| c.data_dir = dir).await;
    let running = server.server.as_ref().expect("running");
    let page = running.campaigns.list(None, 10).await.expect("list");
    let ids: Vec<_> = page.items.iter().map(|c| c.campaign.id.as_str()).collect();
    assert_eq!(ids, ["c-ok"], "only what can be read whole is resumed");
    server.stop().await;
    // An operator's campaign is never moved away: it can be repaired.
    let conn = rusqlite::Connection::open(data.path().join(DB_FILE)).expect("open");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM campaigns", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 3);
}
