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

#[path = "store_pg/fencing.rs"]
mod fencing;
/// `store migrate` through the real binary, between real servers.
#[path = "store_pg/migrate.rs"]
mod migrate;
#[path = "store_pg/tls.rs"]
mod tls;

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
        let mut client = lease.connect("rollcall-test").await.expect("connect");
        match lease.try_acquire(&mut client).await.expect("try the lease") {
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
