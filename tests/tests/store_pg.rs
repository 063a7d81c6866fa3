//! The store on a real PostgreSQL (Debian's, one cluster per test process,
//! `rollcall_tests::postgres`), through the server's public API: every
//! write and read of the `Backend` interface gives what SQLite gives for
//! the same writes; a deposed leader's writes fail and land nothing; TLS is
//! verified and a client certificate logs in as its role; a database that
//! is not rollcall's, or is newer, is refused; and `store migrate`, run as
//! the real binary, moves a real server's fleet from SQLite to PostgreSQL.
//!
//! Each test has databases of its own. The server's PostgreSQL client is
//! blocking (it runs on the store's writer thread), so these tests are
//! plain `#[test]`s that drive the async lease through a runtime of their
//! own, except the migration, which runs real servers and agents.

use std::time::{Duration, Instant};

use rollcall_proto::identity::{Identity, Role as OperatorRole};
use rollcall_proto::model::{
    ActionResult, ActionState, ContainersSection, DisksSection, HostFacts, Node, RebootSection,
    Role, UpdatesSection,
};
use rollcall_proto::pack::Pack;
use rollcall_proto::timestamp::Timestamp;
use rollcall_server::audit::{AuditAction, AuditRecord};
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::{AuditEntry, Campaign, CampaignWrite, NodeRun, Phase};
use rollcall_server::config::StoreConfig;
use rollcall_server::replica::{Attempt, Fence, Lease};
use rollcall_server::revoke::{Revocation, Serial};
use rollcall_server::store::pg::{PgStore, Target};
use rollcall_server::store::{
    Backend, NodeWrite, Section, SignedCertificate, Store, StoreError, StoredCampaign, StoredNode,
};
use rollcall_tests::postgres::{self, CERT_ROLE, Postgres};
use rollcall_tests::{Pki, TempDir, TestServer, init, use_postgres};

/// `store migrate` through the real binary, between real servers.
#[path = "store_pg/migrate.rs"]
mod migrate;

/// `[store]` for `url` (a harness URL) over TLS verified against the
/// cluster's CA, as the harness's servers use it.
fn store_config(pg: &Postgres, url: &str) -> StoreConfig {
    StoreConfig {
        url: Some(format!("{url}?sslmode=require")),
        ca: Some(pg.ca_file()),
        ..StoreConfig::default()
    }
}

fn target(pg: &Postgres, url: &str) -> Target {
    Target::new(&store_config(pg, url)).expect("a target")
}

/// A runtime for the lease, which is async (the server runs it on tokio).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

/// Every row of every table, as one line per table (`table: count md5`):
/// what "nothing changed" is checked against.
pub fn tables(pg: &Postgres, url: &str) -> String {
    const TABLES: &[&str] = &[
        "nodes",
        "node_sections",
        "actions",
        "campaigns",
        "campaign_nodes",
        "audit",
        "probe",
        "operator_audit",
        "revocations",
        "certificates",
        "leader",
        "rollcall_schema",
    ];
    let sql: String = TABLES
        .iter()
        .map(|table| {
            format!(
                "SELECT '{table}', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t;\n"
            )
        })
        .collect();
    pg.psql(url, &sql).expect("read every table")
}

// ---------------------------------------------------------------------------
// The same writes on SQLite and on PostgreSQL.

fn node(name: &str, role: Role) -> Node {
    let mut n = Node::new(name, role, t(1_000));
    n.labels = [("az".to_owned(), "one".to_owned())].into();
    n.online = true;
    n.last_seen = t(2_000);
    n.agent_version = "0.1.0".into();
    n.hostname = name.into();
    n.boot_id = format!("{name}-boot-1");
    n.last_report_seq = 3;
    n.last_report_at = Some(t(2_000));
    n
}

fn host(name: &str) -> HostFacts {
    HostFacts {
        hostname: name.into(),
        kernel: "6.1.0-28-amd64".into(),
        boot_id: format!("{name}-boot-1"),
        boot_time: t(500),
        cpu_count: 8,
        ..HostFacts::default()
    }
}

fn updates(count: u32) -> UpdatesSection {
    UpdatesSection {
        manager: "apt".into(),
        checked: true,
        count,
        packages: vec!["linux-image-amd64".into()],
        last_check: Some(t(1_500)),
        ..UpdatesSection::default()
    }
}

fn reboot_required() -> RebootSection {
    RebootSection {
        required: true,
        checked_at: Some(t(1_800)),
        ..RebootSection::default()
    }
}

const CAMPAIGN: &str = "20261130-120000-1";

fn campaign(phase: Phase, finished: Option<Timestamp>) -> Campaign {
    Campaign {
        id: CAMPAIGN.into(),
        name: "monthly".into(),
        spec_toml: "name = \"monthly\"\n".into(),
        phase,
        reason: String::new(),
        started_by: "alice".into(),
        created_at: t(10_000),
        updated_at: finished.unwrap_or(t(10_000)),
        finished_at: finished,
        held: false,
        blast: Default::default(),
    }
}

fn run(node: &str, step: Step) -> NodeRun {
    let mut run = NodeRun::new(node.into(), Role::Compute, t(10_000));
    run.step = step;
    run.action_node = node.into();
    run.action_id = run.action_id_for(CAMPAIGN, Step::Patch);
    run
}

fn revocation(serial: &str, reason: &str, at: i64) -> Revocation {
    Revocation {
        serial: Serial::parse(serial).expect("a serial"),
        identity: Some("urn:rollcall:agent:b".into()),
        reason: reason.into(),
        at: t(at),
        by: "urn:rollcall:operator:carol".into(),
    }
}

fn certificate(serial: &str, identity: &str, issued: i64) -> SignedCertificate {
    SignedCertificate {
        serial: Serial::parse(serial).expect("a serial"),
        identity: identity.into(),
        issued: t(issued),
        not_after: t(issued + 86_400_000),
    }
}

/// What the writes answered.
#[derive(Debug, PartialEq)]
struct Answers {
    nodes_written: Vec<usize>,
    revoked: Vec<Revocation>,
    audit_seqs: Vec<u64>,
}

/// Writes of every kind, in one order: nodes whose sections are added,
/// replaced and removed, an action whose final result a late "running"
/// must not replace, a campaign and its change, revocations of which the
/// first of a serial stands, certificates, a forgotten node and operator
/// audit lines.
fn write_everything(store: &mut dyn Backend, admin: &Identity) -> Answers {
    let mut nodes_written = Vec::new();
    let mut a = node("a", Role::Compute);
    let first = [
        NodeWrite {
            node: a.clone(),
            sections: vec![
                Section::Host(Some(host("a"))),
                Section::Updates(Some(updates(4).pack())),
                Section::Reboot(Some(reboot_required().pack())),
            ],
        },
        NodeWrite {
            node: node("b", Role::Storage),
            sections: vec![Section::Host(Some(host("b")))],
        },
        NodeWrite {
            node: node("c", Role::Controller),
            sections: vec![
                Section::Containers(Some(ContainersSection::default().pack())),
                Section::Disks(Some(DisksSection::default().pack())),
            ],
        },
        NodeWrite {
            node: node("d", Role::Compute),
            sections: vec![],
        },
    ];
    nodes_written.push(store.write_nodes(&mut first.iter()).expect("write nodes"));
    // a: its reboot section goes, its updates are replaced, it goes offline.
    a.online = false;
    a.last_report_seq = 4;
    let second = [NodeWrite {
        node: a,
        sections: vec![
            Section::Reboot(None),
            Section::Updates(Some(updates(7).pack())),
        ],
    }];
    nodes_written.push(store.write_nodes(&mut second.iter()).expect("write nodes"));

    // The campaign asks for a's patch; the agent runs it, it succeeds, and
    // a replaced session's late "running" must not undo that.
    let patch = run("a", Step::Patch);
    let mut issued = ActionResult::issued(&patch.action_id, "a");
    store
        .write_campaign(&CampaignWrite {
            campaign: Some(campaign(Phase::Running, None)),
            nodes: vec![
                (CAMPAIGN.into(), patch.clone()),
                (CAMPAIGN.into(), run("d", Step::Pending)),
            ],
            actions: vec![issued.clone()],
            audit: vec![AuditEntry::new(
                CAMPAIGN,
                t(10_000),
                "operator:alice",
                "",
                "started",
                "2 nodes".into(),
            )],
        })
        .expect("write a campaign");
    issued.state = ActionState::Running;
    issued.started_at = Some(t(10_100));
    store.put_action(&issued).expect("running");
    let mut done = issued.clone();
    done.state = ActionState::Succeeded;
    done.exit_code = Some(0);
    done.output_tail = "Setting up linux-image-amd64".into();
    done.finished_at = Some(t(10_200));
    store.put_action(&done).expect("succeeded");
    store
        .put_action(&issued)
        .expect("a late running is no error");
    // Another action still under way, and the campaign's last change: the
    // issued record of the action already answered changes nothing.
    let mut other = ActionResult::issued(&format!("{CAMPAIGN}.d.1.patch"), "d");
    other.state = ActionState::Running;
    store.put_action(&other).expect("running");
    let mut finished = run("a", Step::Done);
    finished.finished_at = Some(t(11_000));
    store
        .write_campaign(&CampaignWrite {
            campaign: Some(campaign(Phase::Completed, Some(t(11_000)))),
            nodes: vec![(CAMPAIGN.into(), finished)],
            actions: vec![ActionResult::issued(&patch.action_id, "a")],
            audit: vec![
                AuditEntry::new(CAMPAIGN, t(11_000), "scheduler", "a", "step", "done".into()),
                AuditEntry::new(CAMPAIGN, t(11_001), "scheduler", "", "completed", "".into()),
            ],
        })
        .expect("write the campaign's end");

    let revoked = vec![
        store
            .revoke(&revocation("0a1b", "key lost", 20_000))
            .expect("revoke"),
        store
            .revoke(&revocation("0A:1B", "again, later", 21_000))
            .expect("revoke again"),
        store
            .revoke(&revocation("ff00", "left the company", 22_000))
            .expect("revoke another"),
    ];
    for cert in [
        certificate("02", "urn:rollcall:agent:a", 30_000),
        certificate("01", "urn:rollcall:agent:a", 31_000),
        certificate("03", "urn:rollcall:agent:b", 32_000),
        // The same serial again: the first record stands.
        certificate("01", "urn:rollcall:agent:b", 33_000),
    ] {
        store
            .record_certificate(&cert)
            .expect("record a certificate");
    }
    store.probe().expect("probe");

    let mut audit_seqs = vec![
        store
            .forget_node(
                "b",
                &AuditRecord {
                    at: t(50_000),
                    ..AuditRecord::new(admin, AuditAction::ForgetNode, "b", "decommissioned")
                },
            )
            .expect("forget b"),
    ];
    for (at, action, target) in [
        (
            50_001,
            AuditAction::RevokeCertificate,
            "urn:rollcall:agent:b",
        ),
        (50_002, AuditAction::IssueCertificate, "dave"),
        (
            50_003,
            AuditAction::RenewCertificate,
            "urn:rollcall:agent:a",
        ),
        (50_004, AuditAction::IssueCertificate, "erin"),
    ] {
        // Its time given: the same line goes to both stores.
        let line = AuditRecord {
            at: t(at),
            ..AuditRecord::new(admin, action, target, "")
        };
        audit_seqs.push(store.record_audit(&line).expect("audit"));
    }
    Answers {
        nodes_written,
        revoked,
        audit_seqs,
    }
}

/// What a store gives back: everything a starting server reads, and the
/// reads the running one makes.
#[derive(Debug, PartialEq)]
struct Loaded {
    nodes: Vec<StoredNode>,
    actions: Vec<ActionResult>,
    campaigns: Vec<StoredCampaign>,
    revocations: Vec<(i64, Revocation)>,
    revocations_after_first: Vec<(i64, Revocation)>,
    serials_of_a: Vec<Serial>,
    serials_of_b: Vec<Serial>,
    audit_pages: Vec<Vec<AuditRecord>>,
}

fn load_everything(store: &mut dyn Backend) -> Loaded {
    let mut nodes = Vec::new();
    store.each_node(&mut |n| nodes.push(n)).expect("read nodes");
    let mut audit_pages = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_audit(after, 2).expect("read the audit");
        let Some(last) = page.last() else { break };
        after = last.seq;
        audit_pages.push(page);
    }
    Loaded {
        nodes,
        actions: store.load_actions().expect("read actions"),
        campaigns: store.load_campaigns().expect("read campaigns"),
        revocations: store.revocations_since(0).expect("read revocations"),
        revocations_after_first: store.revocations_since(1).expect("read revocations"),
        serials_of_a: store
            .serials_signed_for("urn:rollcall:agent:a")
            .expect("serials"),
        serials_of_b: store
            .serials_signed_for("urn:rollcall:agent:b")
            .expect("serials"),
        audit_pages,
    }
}

#[test]
fn every_write_reads_back_from_postgresql_as_from_sqlite() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    let admin = Identity::operator("carol", OperatorRole::Admin);
    let dir = TempDir::new("store-pg-sqlite");
    let mut sqlite = Store::open(dir.path()).expect("open SQLite");
    let from_sqlite = (
        write_everything(&mut sqlite, &admin),
        load_everything(&mut sqlite),
    );

    let url = pg.database("round_trip").expect("a database");
    let target = target(pg, &url);
    // Fenced by a lease it won, as a leader's store is.
    let rt = runtime();
    let lease = Lease::new(
        target.clone(),
        "https://a.example:7443",
        Duration::from_secs(60),
    );
    rollcall_server::store::pg::prepare(&target).expect("prepare");
    let fence = rt.block_on(async {
        let client = lease.connect("rollcall-test").await.expect("connect");
        match lease.try_acquire(&client).await.expect("try the lease") {
            Attempt::Won(fence) => fence,
            Attempt::Held { address } => panic!("a new database's lease is held by {address}"),
        }
    });
    let mut store = PgStore::open(&target, fence).expect("open PostgreSQL");
    let answers = write_everything(&mut store, &admin);
    drop(store);
    // Read by a store opened afresh: nothing came from a cache.
    let mut reader = PgStore::open(&target, Fence::unfenced()).expect("open again");
    let from_pg = (answers, load_everything(&mut reader));
    assert_eq!(
        from_pg, from_sqlite,
        "PostgreSQL gives back what SQLite does"
    );

    // And both give back what was written (the same mistake in both would
    // pass the comparison).
    let (answers, loaded) = from_pg;
    assert_eq!(answers.nodes_written, [4, 1]);
    let names: Vec<&str> = loaded.nodes.iter().map(|n| n.node.name.as_str()).collect();
    assert_eq!(names, ["a", "c", "d"], "b was forgotten");
    let a = loaded.nodes[0].report.as_ref().expect("a's report");
    assert!(!loaded.nodes[0].node.online);
    assert_eq!(a.seq, 4);
    assert_eq!(a.host, Some(host("a")));
    assert_eq!(a.updates, Some(updates(7)), "replaced");
    assert_eq!(a.reboot, None, "removed");
    assert!(
        loaded.nodes[1]
            .report
            .as_ref()
            .is_some_and(|r| r.containers.is_some() && r.disks.is_some())
    );
    assert_eq!(loaded.nodes[2].report, None);
    let states: Vec<(&str, ActionState)> = loaded
        .actions
        .iter()
        .map(|a| (a.node.as_str(), a.state))
        .collect();
    assert_eq!(
        states,
        [("a", ActionState::Succeeded), ("d", ActionState::Running)],
        "the final result stands"
    );
    assert_eq!(loaded.actions[0].exit_code, Some(0));
    let stored = &loaded.campaigns[0];
    assert_eq!(stored.campaign.phase, Phase::Completed);
    let steps: Vec<(&str, Step)> = stored
        .runs
        .iter()
        .map(|r| (r.node.as_str(), r.step))
        .collect();
    assert_eq!(steps, [("a", Step::Done), ("d", Step::Pending)]);
    let events: Vec<&str> = stored.audit.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["started", "step", "completed"]);
    assert_eq!(
        answers.revoked[1].reason, "key lost",
        "the first revocation stands"
    );
    let revoked: Vec<(&str, &str)> = loaded
        .revocations
        .iter()
        .map(|(_, r)| (r.serial.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        revoked,
        [("0a1b", "key lost"), ("ff00", "left the company")]
    );
    assert_eq!(loaded.revocations_after_first, loaded.revocations[1..]);
    assert_eq!(
        loaded.serials_of_a,
        [
            Serial::parse("01").expect("serial"),
            Serial::parse("02").expect("serial")
        ]
    );
    assert_eq!(loaded.serials_of_b, [Serial::parse("03").expect("serial")]);
    assert_eq!(answers.audit_seqs, [1, 2, 3, 4, 5]);
    let pages: Vec<Vec<u64>> = loaded
        .audit_pages
        .iter()
        .map(|p| p.iter().map(|l| l.seq).collect())
        .collect();
    assert_eq!(pages, [vec![1, 2], vec![3, 4], vec![5]]);
    assert_eq!(loaded.audit_pages[0][0].action, AuditAction::ForgetNode);
    assert_eq!(loaded.audit_pages[0][0].who, "carol");
    assert_eq!(loaded.audit_pages[0][0].at, t(50_000));
}

// ---------------------------------------------------------------------------
// Fencing: a leader that lost its lease writes nothing.

/// One write, which fails or lands whole.
type Write = Box<dyn Fn(&mut dyn Backend) -> Result<(), StoreError>>;

/// One write of every kind, each named; each must fail for a deposed
/// leader.
fn one_write_of_each_kind() -> Vec<(&'static str, Write)> {
    let admin = Identity::operator("carol", OperatorRole::Admin);
    let admin2 = admin.clone();
    vec![
        (
            "put_action",
            Box::new(|s| s.put_action(&ActionResult::issued("late.x.1.patch", "x"))),
        ),
        (
            "write_campaign",
            Box::new(|s| {
                s.write_campaign(&CampaignWrite {
                    campaign: Some(campaign(Phase::Cancelled, None)),
                    ..CampaignWrite::default()
                })
            }),
        ),
        (
            "write_nodes",
            Box::new(|s| {
                let write = [NodeWrite {
                    node: node("late", Role::Compute),
                    sections: vec![Section::Host(Some(host("late")))],
                }];
                s.write_nodes(&mut write.iter()).map(|_| ())
            }),
        ),
        ("probe", Box::new(|s| s.probe())),
        (
            "revoke",
            Box::new(|s| s.revoke(&revocation("0bad", "late", 40_000)).map(|_| ())),
        ),
        (
            "record_certificate",
            Box::new(|s| {
                s.record_certificate(&certificate("0bad", "urn:rollcall:agent:x", 40_000))
            }),
        ),
        (
            "forget_node",
            Box::new(move |s| {
                s.forget_node(
                    "a",
                    &AuditRecord::new(&admin, AuditAction::ForgetNode, "a", ""),
                )
                .map(|_| ())
            }),
        ),
        (
            "record_audit",
            Box::new(move |s| {
                s.record_audit(&AuditRecord::new(
                    &admin2,
                    AuditAction::IssueCertificate,
                    "late",
                    "",
                ))
                .map(|_| ())
            }),
        ),
    ]
}

/// Takes the lease, which `holder` holds, for `lease` as PostgreSQL's
/// clock says it has ended (what a leader that stopped renewing leaves).
fn take_over(pg: &Postgres, url: &str, rt: &tokio::runtime::Runtime, lease: &Lease) -> Fence {
    pg.psql(url, "UPDATE leader SET expires_at = now();")
        .expect("end the lease");
    rt.block_on(async {
        let client = lease.connect("rollcall-test").await.expect("connect");
        match lease.try_acquire(&client).await.expect("try the lease") {
            Attempt::Won(fence) => fence,
            Attempt::Held { address } => panic!("an ended lease is still held by {address}"),
        }
    })
}

fn acquire(rt: &tokio::runtime::Runtime, lease: &Lease) -> Attempt {
    rt.block_on(async {
        let client = lease.connect("rollcall-test").await.expect("connect");
        lease.try_acquire(&client).await.expect("try the lease")
    })
}

fn won(attempt: Attempt) -> Fence {
    match attempt {
        Attempt::Won(fence) => fence,
        Attempt::Held { address } => panic!("the lease is held by {address}"),
    }
}

#[test]
fn a_deposed_leader_writes_nothing_of_any_kind() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    let url = pg.database("deposed").expect("a database");
    let target = target(pg, &url);
    rollcall_server::store::pg::prepare(&target).expect("prepare");
    let rt = runtime();
    let long = Duration::from_secs(60);
    let a = Lease::new(target.clone(), "https://a.example:7443", long);
    let b = Lease::new(target.clone(), "https://b.example:7443", long);
    let fence_a = won(acquire(&rt, &a));
    match acquire(&rt, &b) {
        Attempt::Held { address } => assert_eq!(address, "https://a.example:7443"),
        Attempt::Won(_) => panic!("B took a lease A holds"),
    }
    let mut store = PgStore::open(&target, fence_a.clone()).expect("open");
    for (kind, write) in one_write_of_each_kind() {
        // The leader's writes land (forget_node and record_audit land too:
        // the late ones below would add lines).
        write(&mut store).unwrap_or_else(|e| panic!("A's {kind} while it leads: {e}"));
    }
    drop(store);

    let fence_b = take_over(pg, &url, &rt, &b);
    assert_eq!(fence_b.epoch(), fence_a.epoch() + 1);
    assert!(
        fence_a.valid(),
        "A has not learned yet: its fence runs on its own clock"
    );
    let before = tables(pg, &url);
    for (kind, write) in one_write_of_each_kind() {
        // A's replica as it was before it learned: a fence of A's epoch
        // that its own clock still holds valid, on a connection of its own.
        let stale = Fence::leading(fence_a.epoch(), a.holder(), Instant::now(), long);
        let mut store = PgStore::open(&target, stale.clone()).expect("open");
        match write(&mut store) {
            Err(StoreError::Deposed { epoch }) => assert_eq!(epoch, fence_a.epoch(), "{kind}"),
            other => panic!("A's {kind} after the takeover: {other:?}"),
        }
        assert!(!stale.valid(), "{kind}: a deposed fence is revoked at once");
    }
    assert_eq!(tables(pg, &url), before, "nothing of A's writes landed");
    // B's own writes go through.
    let mut store = PgStore::open(&target, fence_b).expect("open");
    store.probe().expect("B leads");
}

#[test]
fn a_write_under_a_fence_past_its_deadline_never_reaches_postgresql() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    let url = pg.database("past_deadline").expect("a database");
    let target = target(pg, &url);
    rollcall_server::store::pg::prepare(&target).expect("prepare");
    let rt = runtime();
    let lease_for = Duration::from_secs(60);
    let lease = Lease::new(target.clone(), "https://a.example:7443", lease_for);
    let fence = won(acquire(&rt, &lease));
    // The lease row is this replica's and runs for a minute, so PostgreSQL
    // would take the write; only the fence's own clock says no: its
    // renewal was sent longer ago than the lease lasts.
    let sent = Instant::now()
        .checked_sub(lease_for * 2)
        .expect("the clock runs past two minutes");
    let lapsed = Fence::leading(fence.epoch(), lease.holder(), sent, lease_for);
    assert!(!lapsed.valid());
    let mut store = PgStore::open(&target, lapsed).expect("open");
    let session = |pg: &Postgres| {
        pg.psql_with(
            &pg.url("postgres"),
            "SELECT query_start, state_change, xact_start IS NULL FROM pg_stat_activity
             WHERE datname = :'db' AND application_name = 'rollcall-store';",
            &[("db", url.rsplit_once('/').expect("a URL").1)],
        )
        .expect("look at the store's session")
    };
    let before = (tables(pg, &url), session(pg));
    assert!(!before.1.is_empty(), "the store's session is there");
    for (kind, write) in one_write_of_each_kind() {
        match write(&mut store) {
            Err(StoreError::Deposed { epoch }) => assert_eq!(epoch, fence.epoch(), "{kind}"),
            other => panic!("{kind} under a lapsed fence: {other:?}"),
        }
    }
    assert_eq!(
        (tables(pg, &url), session(pg)),
        before,
        "no statement reached PostgreSQL (its session's last query is the one before)"
    );
    // The same write under the fence the lease row names lands.
    let mut store = PgStore::open(&target, fence).expect("open");
    store.probe().expect("the valid fence writes");
    assert_ne!(tables(pg, &url), before.0);
}

#[test]
fn keep_renews_the_lease_and_fails_once_another_replica_took_it() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    let url = pg.database("keep").expect("a database");
    let target = target(pg, &url);
    rollcall_server::store::pg::prepare(&target).expect("prepare");
    let rt = runtime();
    // The shortest lease the config allows: renewed every 0.5 s, its fence
    // lasts 1.5 s past each renewal.
    let short = Duration::from_secs(2);
    let a = Lease::new(target.clone(), "https://a.example:7443", short);
    let b = Lease::new(target.clone(), "https://b.example:7443", short);
    let fence = won(acquire(&rt, &a));
    let stop = tokio_util::sync::CancellationToken::new();
    let kept = rt.spawn({
        let (a, fence, stop) = (a.clone(), fence.clone(), stop.clone());
        async move { a.keep(fence, stop).await }
    });
    // Past one lease: only renewals keep the fence valid this long.
    std::thread::sleep(short + Duration::from_millis(500));
    assert!(fence.valid(), "the fence is renewed");
    assert!(!kept.is_finished());
    match acquire(&rt, &b) {
        Attempt::Held { address } => assert_eq!(address, "https://a.example:7443"),
        Attempt::Won(_) => panic!("B took a lease A keeps"),
    }

    let fence_b = take_over(pg, &url, &rt, &b);
    assert_eq!(fence_b.epoch(), fence.epoch() + 1);
    let ended = rt
        .block_on(async { tokio::time::timeout(short, kept).await })
        .expect("keep returns within a lease")
        .expect("keep did not panic");
    let why = ended.expect_err("keep fails once the lease was taken over");
    assert!(why.contains(&format!("epoch {}", fence.epoch())), "{why}");
    assert!(!fence.valid(), "the fence is revoked with it");
    let holder = pg
        .psql(&url, "SELECT address, epoch FROM leader;")
        .expect("read the lease");
    assert_eq!(
        holder,
        format!("https://b.example:7443|{}", fence_b.epoch())
    );
}

#[test]
fn a_released_lease_is_taken_at_once_with_the_next_epoch() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    let url = pg.database("release").expect("a database");
    let target = target(pg, &url);
    rollcall_server::store::pg::prepare(&target).expect("prepare");
    let rt = runtime();
    let long = Duration::from_secs(60);
    let a = Lease::new(target.clone(), "https://a.example:7443", long);
    let b = Lease::new(target.clone(), "https://b.example:7443", long);
    let fence_a = won(acquire(&rt, &a));
    assert!(matches!(acquire(&rt, &b), Attempt::Held { .. }));
    let released = Instant::now();
    rt.block_on(a.release(&fence_a));
    assert!(!fence_a.valid(), "a released lease is no longer acted on");
    let fence_b = won(acquire(&rt, &b));
    assert!(
        released.elapsed() < Duration::from_secs(5),
        "at once, not after a minute"
    );
    assert_eq!(fence_b.epoch(), fence_a.epoch() + 1);
    let mut store = PgStore::open(&target, fence_a).expect("open");
    assert!(matches!(store.probe(), Err(StoreError::Deposed { .. })));
}

// ---------------------------------------------------------------------------
// TLS, and databases that are not rollcall's.

/// The store's session on `db`: `user|ssl|client_dn`.
fn store_session(pg: &Postgres, url: &str) -> String {
    pg.psql_with(
        &pg.url("postgres"),
        "SELECT a.usename, s.ssl, coalesce(s.client_dn, '') FROM pg_stat_activity a
         JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = :'db' AND a.application_name = 'rollcall-store';",
        &[("db", url.rsplit_once('/').expect("a URL").1)],
    )
    .expect("look at the store's session")
}

#[test]
fn the_store_talks_tls_verified_against_its_ca_and_logs_in_with_a_client_certificate() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    let url = pg.database("tls").expect("a database");
    let store = PgStore::open(&target(pg, &url), Fence::unfenced()).expect("open over TLS");
    assert_eq!(store_session(pg, &url), "postgres|t|");
    drop(store);

    // A CA that did not sign PostgreSQL's certificate: refused, in one line
    // that names the store without the URL's password.
    let stranger = Pki::new();
    let with_password = url.replacen("postgres@", "postgres:hunter2-Secret@", 1);
    let wrong_ca = StoreConfig {
        ca: Some(stranger.ca_cert()),
        ..store_config(pg, &with_password)
    };
    let err = PgStore::open(
        &Target::new(&wrong_ca).expect("a target"),
        Fence::unfenced(),
    )
    .err()
    .expect("a server the CA did not sign is refused");
    let line = err.to_string();
    eprintln!("wrong CA: {line}");
    assert!(matches!(err, StoreError::Postgres { .. }), "{err:?}");
    assert!(!line.contains("hunter2"), "{line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("certificate"), "{line}");
    assert!(
        line.contains(&format!("postgres://postgres@127.0.0.1:{}/", pg.port())),
        "{line}"
    );

    // The certificate role logs in with its certificate, only with it.
    let owned = pg
        .database_owned_by("tls_cert", CERT_ROLE)
        .expect("a database of the role");
    let cert = pg.client_cert(CERT_ROLE).expect("a client certificate");
    let with_cert = StoreConfig {
        cert: Some(cert.cert.clone()),
        key: Some(cert.key.clone()),
        ..store_config(pg, &owned)
    };
    let store = PgStore::open(
        &Target::new(&with_cert).expect("a target"),
        Fence::unfenced(),
    )
    .expect("open with a client certificate");
    assert_eq!(
        store_session(pg, &owned),
        format!("{CERT_ROLE}|t|/CN={CERT_ROLE}")
    );
    drop(store);
    let err = PgStore::open(&target(pg, &owned), Fence::unfenced())
        .err()
        .expect("the role without its certificate is refused");
    let line = err.to_string();
    assert!(
        line.contains("certificate") && line.contains(CERT_ROLE),
        "{line}"
    );
}

#[test]
fn a_database_of_someone_else_or_of_a_newer_rollcall_is_refused() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    let url = pg.database("foreign").expect("a database");
    pg.psql(
        &url,
        "CREATE TABLE invoices (id int); INSERT INTO invoices VALUES (1);",
    )
    .expect("someone else's table");
    let public_tables =
        "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public';";
    let before = pg.psql(&url, public_tables).expect("list tables");
    assert_eq!(before, "invoices");
    match PgStore::open(&target(pg, &url), Fence::unfenced()) {
        Err(StoreError::Foreign { why, .. }) => assert!(why.contains("invoices"), "{why}"),
        Err(other) => panic!("expected Foreign, got {other:?}"),
        Ok(_) => panic!("a foreign database was opened"),
    }
    assert_eq!(
        pg.psql(&url, public_tables).expect("list tables"),
        before,
        "no table was made in it"
    );

    let url = pg.database("newer").expect("a database");
    let target = target(pg, &url);
    rollcall_server::store::pg::prepare(&target).expect("prepare");
    pg.psql(&url, "UPDATE rollcall_schema SET version = version + 1;")
        .expect("a newer schema");
    let known: i64 = pg
        .psql(&url, "SELECT version - 1 FROM rollcall_schema;")
        .expect("version")
        .parse()
        .expect("a number");
    let err = PgStore::open(&target, Fence::unfenced())
        .err()
        .expect("a newer schema is refused");
    assert!(
        matches!(err, StoreError::Version { found, known: k, .. } if found == known + 1 && k == known),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("run a newer rollcall-server"),
        "{err}"
    );
    assert!(err.is_refusal(), "an operator must act: {err}");
}

/// A leader that ends without `stop` (a crash; here its `RunningServer`
/// dropped) releases nothing: its lease runs out by itself, about 2 s
/// after its last renewal, and the next server on the database waits for
/// that, then leads with the next epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_dropped_without_stop_holds_its_lease_until_it_ends_and_the_next_waits() {
    init();
    let Some(pg) = postgres::or_skip() else {
        return;
    };
    let url = pg.database("dropped").expect("a database");
    let pki = Pki::new();
    let mut first = TestServer::start(&pki, |c| use_postgres(c, pg, &url)).await;
    let lease = |pg: &Postgres| {
        pg.psql(&url, "SELECT address, epoch FROM leader;")
            .expect("read the lease")
    };
    assert_eq!(lease(pg), format!("{}|1", first.url()));
    // Renewed for a while (three leases), then gone without a word.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(lease(pg), format!("{}|1", first.url()), "still leading");
    drop(first.server.take());
    let dropped = Instant::now();
    let second = tokio::time::timeout(
        Duration::from_secs(20),
        TestServer::start(&pki, |c| use_postgres(c, pg, &url)),
    )
    .await
    .expect("the dropped leader's lease ends: its keeper died with it");
    let waited = dropped.elapsed();
    eprintln!("the next server led {waited:?} after the first was dropped");
    assert_eq!(lease(pg), format!("{}|2", second.url()));
    assert!(
        waited >= Duration::from_millis(1_000),
        "the dropped leader's lease ran on until it ended, not released: {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}
