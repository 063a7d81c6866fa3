//! Fencing: a leader that lost its lease writes nothing, through the
//! store and through a whole server.

use super::*;

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
        let mut client = lease.connect("rollcall-test").await.expect("connect");
        match lease.try_acquire(&mut client).await.expect("try the lease") {
            Attempt::Won(fence) => fence,
            Attempt::Held { address } => panic!("an ended lease is still held by {address}"),
        }
    })
}

fn acquire(rt: &tokio::runtime::Runtime, lease: &Lease) -> Attempt {
    rt.block_on(async {
        let mut client = lease.connect("rollcall-test").await.expect("connect");
        lease.try_acquire(&mut client).await.expect("try the lease")
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
    assert!(
        fence_b.epoch() > fence_a.epoch(),
        "a takeover raises the epoch"
    );
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
    assert!(
        fence_b.epoch() > fence.epoch(),
        "a takeover raises the epoch"
    );
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
    assert!(
        fence_b.epoch() > fence_a.epoch(),
        "a takeover raises the epoch"
    );
    let mut store = PgStore::open(&target, fence_a).expect("open");
    assert!(matches!(store.probe(), Err(StoreError::Deposed { .. })));
}

/// A leader that ends without `stop` (a crash; here its `RunningServer`
/// dropped) releases nothing: its lease runs out by itself, about 2 s
/// after its last renewal, and the next server on the database waits for
/// that, then leads with a higher epoch.
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
    let leading = lease(pg);
    assert!(
        leading.starts_with(&format!("{}|", first.url())),
        "{leading}"
    );
    // Renewed for a while (three leases), then gone without a word.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(lease(pg), leading, "still leading, same epoch");
    let first_epoch: u64 = leading
        .rsplit('|')
        .next()
        .and_then(|e| e.parse().ok())
        .expect("an epoch");
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
    let next = lease(pg);
    let (address, epoch) = next.rsplit_once('|').expect("address|epoch");
    assert_eq!(address, second.url());
    assert!(
        epoch.parse::<u64>().expect("an epoch") > first_epoch,
        "{next} after {leading}"
    );
    assert!(
        waited >= Duration::from_millis(1_000),
        "the dropped leader's lease ran on until it ended, not released: {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}
