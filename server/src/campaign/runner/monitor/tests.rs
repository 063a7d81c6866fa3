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
        if *self.refuse.lock().expect("fake") {
            return Err(PostError::Failed("answered HTTP 500: boom".into()));
        }
        let mut posts = self.posts.lock().expect("fake");
        posts.push(serde_json::from_slice(&body).expect("json"));
        Ok(format!("s{}", posts.len()))
    }

    async fn expire_silence(&self, _: &str, id: &str) -> Result<(), String> {
        self.expired.lock().expect("fake").push(id.to_owned());
        Ok(())
    }
}

fn spec() -> AlertsSpec {
    let spec: AlertsSpec = rollcall_proto::diag::parse_toml(
        "alertmanager_url = \"http://am:9093\"\nalertname = \"X\"\ncheck_secs = 1\n[silence]\nlease_secs = 60\n",
    )
    .expect("spec");
    spec.validate().expect("valid");
    spec
}

async fn next(rx: &mut mpsc::Receiver<Report>) -> Report {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a report within 5 s")
        .expect("the poller runs")
}

#[tokio::test]
async fn the_poller_makes_and_expires_silences_as_nodes_want_and_publishes_answers() {
    let fake = Arc::new(Fake::default());
    let (tx, mut rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let wanted = Wanted {
        nodes: ["cmp1".to_owned()].into(),
        stored: BTreeMap::new(),
    };
    let mut link = spawn(
        fake.clone(),
        "c1",
        &spec(),
        wanted,
        tx,
        Arc::new(Notify::new()),
        &shutdown,
    );
    let made = next(&mut rx).await;
    assert_eq!(made.node, "cmp1");
    let Outcome::Created(lease) = made.outcome else {
        panic!("{made:?}");
    };
    assert_eq!(lease.id, "s1");
    assert_eq!(lease.until.since(lease.from), Duration::from_secs(60));
    let posted = fake.posts.lock().expect("fake")[0].clone();
    assert_eq!(posted["matchers"][0]["value"], "cmp1([.:].*)?");
    assert!(posted.get("id").is_none(), "a new silence has no id");

    // The source was unreachable: the observation says so.
    link.seen.changed().await.expect("an answer");
    let seen = link.seen.borrow().clone();
    assert_eq!(
        seen.answers[0].failure.as_deref(),
        Some("unreachable: refused")
    );

    // The node finished: its silence is expired at once, not at the next check.
    link.wanted.send_modify(|w| w.nodes.clear());
    let gone = next(&mut rx).await;
    assert_eq!(gone.outcome, Outcome::Expired(lease));
    assert_eq!(*fake.expired.lock().expect("fake"), ["s1"]);

    // A failing Alertmanager: reported, and tried again at the next check.
    *fake.refuse.lock().expect("fake") = true;
    link.wanted
        .send_modify(|w| w.nodes = ["cmp2".to_owned()].into());
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
async fn a_restarted_poller_starts_from_the_stored_leases() {
    let fake = Arc::new(Fake::default());
    *fake.alerts.lock().expect("fake") = Some(Vec::new());
    let (tx, mut rx) = mpsc::channel(16);
    let now = Timestamp::now();
    let stored = Lease {
        id: "kept".into(),
        from: now,
        until: now.saturating_add(Duration::from_secs(10)),
    };
    let wanted = Wanted {
        nodes: ["cmp1".to_owned()].into(),
        stored: [("cmp1".to_owned(), stored.clone())].into(),
    };
    let _link = spawn(
        fake.clone(),
        "c1",
        &spec(),
        wanted,
        tx,
        Arc::new(Notify::new()),
        &CancellationToken::new(),
    );
    // Less than half of its 60 s left: renewed under its id and start.
    let renewed = next(&mut rx).await;
    let Outcome::Renewed { lease, old_id } = renewed.outcome else {
        panic!("{renewed:?}");
    };
    assert_eq!(old_id, "kept");
    let posted = fake.posts.lock().expect("fake")[0].clone();
    assert_eq!(posted["id"], "kept");
    assert_eq!(posted["startsAt"], stored.from.to_string());
    assert_eq!(lease.from, stored.from);
}
