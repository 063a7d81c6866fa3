//! The poller against a fake `Monitor` (the real one is tested against
//! Debian's Prometheus and Alertmanager in tests/tests/alerts.rs).

use std::sync::Mutex;
use std::time::Duration;

use super::*;

#[derive(Default)]
struct Fake {
    /// What `alerts` answers; `None`: unreachable.
    alerts: Mutex<Option<Vec<alerts::Alert>>>,
    posts: Mutex<Vec<serde_json::Value>>,
    expired: Mutex<Vec<String>>,
    /// Posts fail while set.
    refuse: Mutex<bool>,
    /// How long a post takes.
    post_delay: Mutex<Duration>,
}

impl Monitor for Arc<Fake> {
    async fn alerts(&self, _: &Source) -> Result<Vec<alerts::Alert>, String> {
        self.alerts
            .lock()
            .expect("fake")
            .clone()
            .ok_or_else(|| "unreachable: refused".to_owned())
    }

    async fn post_silence(&self, _: &str, body: Vec<u8>) -> Result<String, PostError> {
        let delay = *self.post_delay.lock().expect("fake");
        tokio::time::sleep(delay).await;
        if *self.refuse.lock().expect("fake") {
            return Err(PostError::Failed("answered HTTP 500: boom".into()));
        }
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let mut posts = self.posts.lock().expect("fake");
        posts.push(body.clone());
        // As Alertmanager does: a renewal of an active silence keeps its id.
        Ok(match body["id"].as_str() {
            Some(id) => id.to_owned(),
            None => format!("s{}", posts.len()),
        })
    }

    async fn expire_silence(&self, _: &str, id: &str) -> Result<(), String> {
        self.expired.lock().expect("fake").push(id.to_owned());
        Ok(())
    }
}

fn spec_with(check_secs: u64) -> AlertsSpec {
    let spec: AlertsSpec = rollcall_proto::diag::parse_toml(&format!(
        "alertmanager_url = \"http://am:9093\"\nalertname = \"X\"\ncheck_secs = {check_secs}\n[silence]\nlease_secs = {}\n",
        (check_secs * 4).max(60)
    ))
    .expect("spec");
    spec.validate().expect("valid");
    spec
}

fn spec() -> AlertsSpec {
    spec_with(1)
}

fn start(
    fake: &Arc<Fake>,
    spec: &AlertsSpec,
    wanted: Wanted,
) -> (MonitorLink, mpsc::Receiver<Report>) {
    let (tx, rx) = mpsc::channel(16);
    let fake = fake.clone();
    let link = spawn(
        move |_| fake,
        "c1",
        spec,
        wanted,
        tx,
        Arc::new(Notify::new()),
        &CancellationToken::new(),
    );
    (link, rx)
}

fn wants(nodes: &[&str]) -> Wanted {
    Wanted {
        nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
        ..Wanted::default()
    }
}

async fn next(rx: &mut mpsc::Receiver<Report>) -> Report {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a report within 5 s")
        .expect("the poller runs")
}

/// Waits until the observation says `done`.
async fn seen_until(link: &mut MonitorLink, done: impl Fn(&Observation) -> bool) -> Observation {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if done(&link.seen.borrow_and_update()) {
                return link.seen.borrow().clone();
            }
            link.seen.changed().await.expect("the poller runs");
        }
    })
    .await
    .expect("the observation within 5 s")
}

fn am_alert(name: &str, silenced_by: &[&str]) -> alerts::Alert {
    alerts::Alert {
        source: SourceKind::Alertmanager,
        labels: [("alertname".to_owned(), name.to_owned())].into(),
        state: alerts::AlertState::Firing,
        since: None,
        silenced_by: silenced_by.iter().map(|s| (*s).to_owned()).collect(),
        inhibited: false,
    }
}

#[tokio::test]
async fn the_poller_makes_and_expires_silences_as_nodes_want_and_publishes_answers() {
    let fake = Arc::new(Fake::default());
    let (mut link, mut rx) = start(&fake, &spec(), wants(&["cmp1"]));
    let made = next(&mut rx).await;
    assert_eq!((made.node.as_str(), made.seq), ("cmp1", 1));
    let Outcome::Created(lease) = made.outcome else {
        panic!("{made:?}");
    };
    assert_eq!(lease.id, "s1");
    assert_eq!(lease.until.since(lease.from), Duration::from_secs(60));
    let posted = fake.posts.lock().expect("fake")[0].clone();
    assert_eq!(posted["matchers"][0]["value"], "cmp1([.:].*)?");
    assert!(posted.get("id").is_none(), "a new silence has no id");

    // The source was unreachable: the observation says so.
    let seen = seen_until(&mut link, |s| s.looks > 0).await;
    assert_eq!(
        seen.answers[0].failure.as_deref(),
        Some("unreachable: refused")
    );

    // The node finished: its silence is expired at once, not at the next check.
    link.wanted.send_modify(|w| {
        w.nodes.clear();
        w.taken = 1;
        w.stored = [("cmp1".to_owned(), lease.clone())].into();
    });
    let gone = next(&mut rx).await;
    assert_eq!(gone.outcome, Outcome::Expired(lease));
    assert_eq!(*fake.expired.lock().expect("fake"), ["s1"]);

    // A failing Alertmanager: reported, and tried again at the next check.
    *fake.refuse.lock().expect("fake") = true;
    link.wanted.send_modify(|w| {
        w.nodes = ["cmp2".to_owned()].into();
        w.stored.clear();
        w.taken = 2;
    });
    let failed = next(&mut rx).await;
    assert!(
        matches!(&failed.outcome, Outcome::Failed { what: "create", error } if error.contains("500")),
        "{failed:?}"
    );
    *fake.refuse.lock().expect("fake") = false;
    let again = next(&mut rx).await;
    assert!(
        matches!(&again.outcome, Outcome::Created(l) if l.id == "s2"),
        "{again:?}"
    );
    drop(link);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .expect("the poller stops with its link")
            .is_none(),
        "a dropped link stops the poller"
    );
}

#[tokio::test]
async fn a_restarted_poller_renews_the_stored_lease_in_place() {
    let fake = Arc::new(Fake::default());
    *fake.alerts.lock().expect("fake") = Some(Vec::new());
    let now = Timestamp::now();
    let stored = Lease {
        id: "kept".into(),
        from: now,
        until: now.saturating_add(Duration::from_secs(10)),
    };
    let wanted = Wanted {
        stored: [("cmp1".to_owned(), stored.clone())].into(),
        ..wants(&["cmp1"])
    };
    let (_link, mut rx) = start(&fake, &spec(), wanted);
    // Less than half of its 60 s left: renewed under its id and start.
    let renewed = next(&mut rx).await;
    let Outcome::Renewed { lease, old_id } = renewed.outcome else {
        panic!("{renewed:?}");
    };
    assert_eq!(old_id, "kept");
    assert_eq!(lease.id, "kept", "renewed in place, not replaced");
    assert!(lease.until > stored.until, "its end moved on");
    let posted = fake.posts.lock().expect("fake")[0].clone();
    assert_eq!(posted["id"], "kept");
    assert_eq!(posted["startsAt"], stored.from.to_string());
    assert_eq!(lease.from, stored.from);
    assert_eq!(fake.posts.lock().expect("fake").len(), 1, "no new silence");
}

#[tokio::test]
async fn the_campaigns_own_silences_hide_nothing_from_it() {
    let fake = Arc::new(Fake::default());
    *fake.alerts.lock().expect("fake") = Some(vec![
        am_alert("X", &["s1"]),
        am_alert("X", &["s1", "someone-elses"]),
    ]);
    let (mut link, mut rx) = start(&fake, &spec(), wants(&["cmp1"]));
    let made = next(&mut rx).await;
    assert!(
        matches!(&made.outcome, Outcome::Created(l) if l.id == "s1"),
        "{made:?}"
    );
    // A look after the silence was made knows s1 as the campaign's own.
    let seen = seen_until(&mut link, |s| !s.blocking.is_empty()).await;
    assert_eq!(
        seen.blocking
            .iter()
            .map(|a| a.silenced_by.clone())
            .collect::<Vec<_>>(),
        [vec!["s1".to_owned()]],
        "silenced by the campaign alone holds; by another's silence too is left out"
    );
}

#[tokio::test]
async fn a_slow_alertmanager_delays_silences_but_never_looks() {
    let fake = Arc::new(Fake::default());
    *fake.alerts.lock().expect("fake") = Some(Vec::new());
    *fake.post_delay.lock().expect("fake") = Duration::from_secs(30);
    let (mut link, _rx) = start(&fake, &spec(), wants(&["cmp1", "cmp2", "cmp3"]));
    let started = tokio::time::Instant::now();
    seen_until(&mut link, |s| s.looks >= 3).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "three looks at check_secs = 1 while a post hangs: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_node_leaving_flight_makes_the_poller_look_at_once() {
    let fake = Arc::new(Fake::default());
    *fake.alerts.lock().expect("fake") = Some(Vec::new());
    let (mut link, _rx) = start(&fake, &spec_with(60), Wanted::default());
    let first = seen_until(&mut link, |s| s.looks == 1).await;
    let asked = first.answers[0].answered_at.expect("answered");
    let left = Timestamp::now();
    link.wanted.send_modify(|w| w.left_flight = Some(left));
    let second = tokio::time::timeout(
        Duration::from_secs(2),
        seen_until(&mut link, |s| s.looks == 2),
    )
    .await
    .expect("a look long before check_secs = 60");
    let at = second.answers[0].answered_at.expect("answered");
    assert!(
        at > asked && at >= left,
        "asked after the node left: {at} {left}"
    );
}

#[tokio::test]
async fn an_outcome_the_store_refused_is_reported_again() {
    let fake = Arc::new(Fake::default());
    *fake.alerts.lock().expect("fake") = Some(Vec::new());
    let (link, mut rx) = start(&fake, &spec(), wants(&["cmp1"]));
    let made = next(&mut rx).await;
    let Outcome::Created(lease) = made.outcome.clone() else {
        panic!("{made:?}");
    };
    // The scheduler took it, but the store refused it: stored is empty.
    link.wanted.send_modify(|w| w.taken = made.seq);
    let again = next(&mut rx).await;
    assert_eq!(again.outcome, Outcome::Created(lease.clone()));
    assert!(again.seq > made.seq);
    // Stored now: nothing more to say.
    link.wanted.send_modify(|w| {
        w.taken = again.seq;
        w.stored = [("cmp1".to_owned(), lease.clone())].into();
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(2_500), rx.recv())
            .await
            .is_err(),
        "nothing to report once the store holds the lease"
    );
    assert_eq!(
        fake.posts.lock().expect("fake").len(),
        1,
        "no second silence"
    );
}

#[test]
fn unstored_outcomes_make_the_store_hold_what_the_poller_holds() {
    let now = Timestamp::now();
    let lease = |id: &str| Lease {
        id: id.into(),
        from: now,
        until: now,
    };
    let held: BTreeMap<String, Lease> = [("a", lease("1")), ("b", lease("2")), ("c", lease("3"))]
        .map(|(n, l)| (n.to_owned(), l))
        .into();
    let stored: BTreeMap<String, Lease> = [("b", lease("0")), ("c", lease("3")), ("d", lease("4"))]
        .map(|(n, l)| (n.to_owned(), l))
        .into();
    assert_eq!(
        unstored(&held, &stored),
        [
            ("a".to_owned(), Outcome::Created(lease("1"))),
            (
                "b".to_owned(),
                Outcome::Renewed {
                    lease: lease("2"),
                    old_id: "0".into()
                }
            ),
            ("d".to_owned(), Outcome::Expired(lease("4"))),
        ]
    );
}
