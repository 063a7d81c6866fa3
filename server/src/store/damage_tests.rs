//! A damaged or foreign database file, and rows that cannot be read: what
//! the store refuses to open, and what it sets aside while the rest loads.

use super::tests::{node, temp_data_dir};
use super::*;
use crate::campaign::record::Phase;
use rollcall_proto::model::{ActionState, Role};
use rollcall_proto::timestamp::Timestamp;

fn pragma(dir: &Path, name: &str) -> i64 {
    Connection::open(dir.join(DB_FILE))
        .expect("open")
        .pragma_query_value(None, name, |row| row.get(0))
        .expect("pragma")
}

fn exec(dir: &Path, sql: &str) {
    Connection::open(dir.join(DB_FILE))
        .expect("open")
        .execute_batch(sql)
        .expect("sql");
}

fn count(dir: &Path, sql: &str) -> i64 {
    Connection::open(dir.join(DB_FILE))
        .expect("open")
        .query_row(sql, [], |row| row.get(0))
        .expect("count")
}

fn refused(dir: &Path) -> StoreError {
    match Store::open(dir) {
        Ok(_) => panic!("{} was opened", dir.display()),
        Err(e) => {
            assert!(e.is_refusal(), "not a refusal: {e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
            e
        }
    }
}

#[test]
fn a_missing_file_is_a_new_fleet_stamped_as_rollcalls() {
    let dir = temp_data_dir("new");
    drop(Store::open(&dir).expect("a new fleet"));
    assert_eq!(
        pragma(&dir, "application_id"),
        i64::from(migrations::APPLICATION_ID)
    );
    assert_eq!(pragma(&dir, "user_version"), migrations::known());
    // And it opens again.
    drop(Store::open(&dir).expect("reopens"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_existing_empty_file_is_refused_with_or_without_a_stale_wal() {
    let dir = temp_data_dir("empty");
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join(DB_FILE);
    std::fs::write(&db, b"").expect("empty file");
    match refused(&dir) {
        StoreError::Empty { wal: false, .. } => {}
        other => panic!("expected Empty, got {other}"),
    }
    std::fs::write(wal_path(&db), b"stale wal bytes").expect("wal");
    let e = refused(&dir);
    assert!(matches!(e, StoreError::Empty { wal: true, .. }), "{e}");
    assert!(e.to_string().contains("stale -wal"), "{e}");
    // Nothing was written to it.
    assert_eq!(std::fs::metadata(&db).expect("db").len(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_wal_without_its_database_is_refused() {
    let dir = temp_data_dir("walonly");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(wal_path(&dir.join(DB_FILE)), b"stale wal bytes").expect("wal");
    assert!(matches!(refused(&dir), StoreError::WalWithoutDb { .. }));
    assert!(!dir.join(DB_FILE).exists(), "no new database was made");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_file_that_is_not_sqlite_is_refused() {
    let dir = temp_data_dir("notsqlite");
    std::fs::create_dir_all(&dir).expect("dir");
    for content in [&b"hello, this is not a database at all"[..], b"SQLite"] {
        std::fs::write(dir.join(DB_FILE), content).expect("write");
        assert!(matches!(refused(&dir), StoreError::NotSqlite { .. }));
        assert_eq!(std::fs::read(dir.join(DB_FILE)).expect("read"), content);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_damaged_file_with_an_sqlite_header_is_refused() {
    let dir = temp_data_dir("damaged");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xA5u8, 600));
    std::fs::write(dir.join(DB_FILE), &bytes).expect("write");
    let e = refused(&dir);
    assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_foreign_sqlite_database_is_refused_and_left_untouched() {
    let dir = temp_data_dir("foreign");
    std::fs::create_dir_all(&dir).expect("dir");
    // Someone else's tables, no rollcall schema.
    exec(&dir, "CREATE TABLE grafana_users (id INTEGER PRIMARY KEY);");
    let e = refused(&dir);
    assert!(matches!(e, StoreError::Foreign { .. }), "{e}");
    assert!(e.to_string().contains("grafana_users"), "{e}");
    assert_eq!(pragma(&dir, "user_version"), 0, "not migrated");
    assert_eq!(pragma(&dir, "application_id"), 0, "not stamped");
    // The same with a schema version we know but no nodes table.
    exec(&dir, "PRAGMA user_version = 3;");
    assert!(matches!(refused(&dir), StoreError::Foreign { .. }));
    // Stamped by another application, even with our tables.
    let other = temp_data_dir("foreign-app");
    drop(Store::open(&other).expect("ours"));
    exec(&other, "PRAGMA application_id = 1234;");
    let e = refused(&other);
    assert!(e.to_string().contains("application_id"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&other).ok();
}

#[test]
fn a_negative_or_newer_schema_version_is_refused_naming_both_versions() {
    for found in [-1_i64, migrations::known() + 1, 999_999] {
        let dir = temp_data_dir(&format!("version{found}"));
        drop(Store::open(&dir).expect("open"));
        exec(&dir, &format!("PRAGMA user_version = {found};"));
        let e = refused(&dir);
        assert!(
            matches!(e, StoreError::Version { found: f, .. } if f == found),
            "{e}"
        );
        let line = e.to_string();
        assert!(line.contains(&format!("schema version {found}")), "{line}");
        assert!(
            line.contains(&format!("versions 0 to {}", migrations::known())),
            "{line}"
        );
        assert_eq!(pragma(&dir, "user_version"), found, "left as it was");
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn an_unstamped_rollcall_database_from_before_the_stamp_is_migrated_and_stamped() {
    let dir = temp_data_dir("unstamped");
    std::fs::create_dir_all(&dir).expect("dir");
    {
        let mut conn = Connection::open(dir.join(DB_FILE)).expect("open");
        migrations::apply_up_to(&mut conn, &dir, 4).expect("v4");
        conn.pragma_update(None, "application_id", 0)
            .expect("unstamp");
    }
    let mut store = Store::open(&dir).expect("ours, from before the stamp");
    store
        .write_nodes([&NodeWrite {
            node: node("a"),
            sections: vec![],
        }])
        .expect("write");
    drop(store);
    assert_eq!(
        pragma(&dir, "application_id"),
        i64::from(migrations::APPLICATION_ID)
    );
    assert_eq!(pragma(&dir, "user_version"), migrations::known());
    std::fs::remove_dir_all(&dir).ok();
}

/// Nodes a, b and c, each with a host and an updates section.
fn three_nodes(dir: &Path) {
    let mut store = Store::open(dir).expect("open");
    let writes: Vec<NodeWrite> = ["a", "b", "c"]
        .into_iter()
        .map(|name| NodeWrite {
            node: node(name),
            sections: vec![
                Section::Host(Some(HostFacts {
                    hostname: name.into(),
                    ..Default::default()
                })),
                Section::Updates(Some(
                    UpdatesSection {
                        count: 7,
                        ..Default::default()
                    }
                    .pack(),
                )),
            ],
        })
        .collect();
    store.write_nodes(&writes).expect("write");
}

#[test]
fn an_unreadable_section_is_set_aside_and_the_rest_loads() {
    let dir = temp_data_dir("badsection");
    three_nodes(&dir);
    // A count that is null (what a non-finite float was written as), JSON
    // that is not JSON, and a value that is not even text.
    exec(
        &dir,
        "UPDATE node_sections SET data = '{\"manager\":\"apt\",\"checked\":true,\"count\":null}'
           WHERE node = 'b' AND section = 'updates';
         UPDATE node_sections SET data = '{not json' WHERE node = 'c' AND section = 'host';",
    );
    let store = Store::open(&dir).expect("opens");
    let loaded = store
        .load_nodes()
        .expect("one bad row does not stop the load");
    let names: Vec<_> = loaded.iter().map(|n| n.node.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"], "every node is kept");
    let report = |i: usize| loaded[i].report.clone().expect("a report");
    assert_eq!(report(0).updates.map(|u| u.count), Some(7));
    assert_eq!(report(1).updates, None, "b's bad section is dropped");
    assert_eq!(report(1).host.map(|h| h.hostname), Some("b".into()));
    assert_eq!(report(2).host, None, "c's bad section is dropped");
    assert_eq!(report(2).updates.map(|u| u.count), Some(7));
    drop(store);
    // Moved, with the raw value, so the next start loads cleanly.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM quarantine WHERE source = 'node_sections'
               AND ((key = 'b' AND section = 'updates' AND data LIKE '%\"count\":null%')
                 OR (key = 'c' AND section = 'host' AND data = '{not json'))"
        ),
        2
    );
    assert_eq!(count(&dir, "SELECT count(*) FROM node_sections"), 4);
    let again = Store::open(&dir)
        .expect("opens")
        .load_nodes()
        .expect("load");
    assert_eq!(again, loaded);
    assert_eq!(
        count(&dir, "SELECT count(*) FROM quarantine"),
        2,
        "not again"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_section_that_is_not_text_is_set_aside() {
    let dir = temp_data_dir("blobsection");
    three_nodes(&dir);
    // STRICT refuses a BLOB in a TEXT column; bytes that are not UTF-8 get
    // in through a cast, as a damaged disk could leave them.
    exec(
        &dir,
        "UPDATE node_sections SET data = CAST(x'fffe0001' AS TEXT)
           WHERE node = 'a' AND section = 'host';",
    );
    let loaded = Store::open(&dir)
        .expect("opens")
        .load_nodes()
        .expect("loads");
    assert_eq!(loaded.len(), 3);
    let a = loaded[0].report.clone().expect("a report");
    assert_eq!(a.host, None);
    assert_eq!(a.updates.map(|u| u.count), Some(7));
    assert_eq!(count(&dir, "SELECT count(*) FROM quarantine"), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unreadable_node_record_is_rebuilt_from_its_columns() {
    let dir = temp_data_dir("badrecord");
    three_nodes(&dir);
    exec(
        &dir,
        "UPDATE nodes SET node = 'null', role = 'storage' WHERE name = 'b';
         UPDATE nodes SET node = '{', role = 'no such role' WHERE name = 'c';",
    );
    let loaded = Store::open(&dir)
        .expect("opens")
        .load_nodes()
        .expect("loads");
    let names: Vec<_> = loaded.iter().map(|n| n.node.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "c cannot be rebuilt without a role");
    let b = &loaded[1];
    assert_eq!(b.node.role, Role::Storage);
    assert!(!b.node.online);
    assert_eq!(b.node.last_seen, Timestamp::from_unix_millis(2_000));
    assert_eq!(
        b.report
            .as_ref()
            .and_then(|r| r.updates.as_ref())
            .map(|u| u.count),
        Some(7),
        "its readable sections are kept"
    );
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM quarantine WHERE source = 'nodes'"
        ),
        2
    );
    // The rebuilt record was written back: the next start reads it.
    let again = Store::open(&dir)
        .expect("opens")
        .load_nodes()
        .expect("loads");
    assert_eq!(again.len(), 2);
    assert_eq!(again[1].node, b.node);
    assert_eq!(
        count(&dir, "SELECT count(*) FROM quarantine"),
        2,
        "not again"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn action(id: &str) -> ActionResult {
    ActionResult {
        id: id.into(),
        node: "a".into(),
        state: ActionState::Succeeded,
        exit_code: Some(0),
        output_tail: String::new(),
        error: String::new(),
        started_at: None,
        finished_at: None,
        boot_id: String::new(),
    }
}

#[test]
fn an_unreadable_action_is_set_aside_and_the_others_load() {
    let dir = temp_data_dir("badaction");
    {
        let mut store = Store::open(&dir).expect("open");
        for id in ["x.a.1.patch", "x.a.1.reboot", "x.a.1.precheck"] {
            store.put_action(&action(id)).expect("put");
        }
    }
    exec(
        &dir,
        "UPDATE actions SET result = '{\"id\":null}' WHERE id = 'x.a.1.reboot';",
    );
    let store = Store::open(&dir).expect("opens");
    let ids: Vec<_> = store
        .load_actions()
        .expect("loads")
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, ["x.a.1.patch", "x.a.1.precheck"]);
    drop(store);
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM quarantine WHERE source = 'actions' AND key = 'x.a.1.reboot'"
        ),
        1
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn campaign(id: &str, at: i64) -> CampaignWrite {
    let now = Timestamp::from_unix_millis(at);
    CampaignWrite {
        campaign: Some(Campaign {
            id: id.into(),
            name: id.into(),
            spec_toml: String::new(),
            phase: Phase::Running,
            reason: String::new(),
            started_by: "alice".into(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            held: false,
            blast: Default::default(),
        }),
        nodes: vec![(id.into(), NodeRun::new("a".into(), Role::Compute, now))],
        actions: Vec::new(),
        audit: vec![AuditEntry {
            at: now,
            campaign: id.into(),
            actor: "operator:alice".into(),
            node: String::new(),
            event: "started".into(),
            detail: String::new(),
            exit_code: None,
            output_tail: String::new(),
        }],
    }
}

#[test]
fn an_unreadable_campaign_is_not_resumed_and_its_row_is_kept() {
    let dir = temp_data_dir("badcampaign");
    {
        let mut store = Store::open(&dir).expect("open");
        for (i, id) in ["c1", "c2", "c3", "c4"].into_iter().enumerate() {
            store
                .write_campaign(&campaign(id, 1_000 + i as i64))
                .expect("write");
            store
                .write_campaign(&CampaignWrite {
                    audit: campaign(id, 2_000).audit,
                    ..Default::default()
                })
                .expect("second audit line");
        }
    }
    exec(
        &dir,
        "UPDATE campaigns SET campaign = '{\"id\":\"c1\"}' WHERE id = 'c1';
         UPDATE campaign_nodes SET run = 'garbage' WHERE campaign = 'c2';
         UPDATE audit SET entry = '[]' WHERE seq = (SELECT min(seq) FROM audit WHERE campaign = 'c3');",
    );
    let loaded = Store::open(&dir)
        .expect("opens")
        .load_campaigns()
        .expect("loads");
    let ids: Vec<_> = loaded.iter().map(|c| c.campaign.id.as_str()).collect();
    assert_eq!(ids, ["c3", "c4"], "a campaign read in part is not resumed");
    assert_eq!(loaded[0].runs.len(), 1);
    assert_eq!(loaded[0].audit.len(), 1, "c3's bad audit line is skipped");
    assert_eq!(loaded[1].audit.len(), 2);
    // An operator's campaign is never moved: it can be repaired in place.
    assert_eq!(count(&dir, "SELECT count(*) FROM campaigns"), 4);
    assert_eq!(count(&dir, "SELECT count(*) FROM campaign_nodes"), 4);
    assert_eq!(count(&dir, "SELECT count(*) FROM quarantine"), 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_float_that_is_not_finite_is_never_written() {
    use rollcall_proto::model::HostMetrics;
    let bad = Report {
        metrics: Some(HostMetrics {
            cpu_usage_percent: f32::NAN,
            ..Default::default()
        }),
        ..Default::default()
    };
    // What serde_json alone would do: write what it cannot read back.
    let json = serde_json::to_string(&bad).expect("json");
    assert!(serde_json::from_str::<Report>(&json).is_err());
    // What the store does with every row it writes.
    let e = encode(|| "node n".into(), &bad).expect_err("refused");
    assert!(e.to_string().contains("cpu_usage_percent"), "{e}");
    let fine = Report {
        metrics: Some(HostMetrics {
            cpu_usage_percent: 12.5,
            ..Default::default()
        }),
        ..Default::default()
    };
    let json = encode(|| "node n".into(), &fine).expect("finite");
    assert_eq!(
        serde_json::from_str::<Report>(&json).expect("reads back"),
        fine
    );
}

#[test]
fn every_section_the_store_writes_reads_back() {
    // Each kind of section through write and load: what the store wrote it
    // can read (the property the NaN check protects).
    let dir = temp_data_dir("roundtrip");
    let mut store = Store::open(&dir).expect("open");
    let containers = ContainersSection {
        available: true,
        containers: vec![Default::default()],
        ..Default::default()
    };
    let disks = DisksSection {
        filesystems: vec![Default::default()],
        ..Default::default()
    };
    store
        .write_nodes([&NodeWrite {
            node: node("a"),
            sections: vec![
                Section::Host(Some(HostFacts::default())),
                Section::Containers(Some(containers.pack())),
                Section::Disks(Some(disks.pack())),
                Section::Reboot(Some(RebootSection::default().pack())),
                Section::Updates(Some(UpdatesSection::default().pack())),
            ],
        }])
        .expect("write");
    drop(store);
    let loaded = Store::open(&dir)
        .expect("open")
        .load_node("a")
        .expect("load")
        .expect("a");
    let report = loaded.report.expect("report");
    assert_eq!(report.containers, Some(containers));
    assert_eq!(report.disks, Some(disks));
    assert!(report.host.is_some() && report.reboot.is_some() && report.updates.is_some());
    assert_eq!(count(&dir, "SELECT count(*) FROM quarantine"), 0);
    std::fs::remove_dir_all(&dir).ok();
}
