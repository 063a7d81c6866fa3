//! Alert gating and silences against the real monitoring stack: Debian's
//! Prometheus scraping the test's `Switch` with a rule that fires while a
//! switch is on and sends to a real Alertmanager, and a campaign over the
//! fleet harness with `[alerts]`. The campaign holds new starts while the
//! alert fires (status names it), goes on once it resolves, and each node
//! in flight has an Alertmanager silence, audited with its id and expired
//! after its undrain. A monitoring API that cannot be asked holds too.
//! The campaign's own silences hide nothing from it: an alert about the
//! node that just finished holds the next start; and a hold keeps a node
//! waiting at its before gate from draining.

use std::time::Duration;

use rollcall_proto::model::Role;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::AuditEntry;
use rollcall_tests::fleet::Fleet;
use rollcall_tests::init;
use rollcall_tests::monitoring::{Alertmanager, Stack};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);
const ALERT: &str = "RollcallTestSwitch";

fn spec(prometheus: &str, alertmanager: &str) -> String {
    format!(
        r#"
name = "held by alerts"
role_order = ["compute"]
reboot = "never"
skip_up_to_date = false
[hooks.compute]
drain = "nova-drain"
undrain = "nova-undrain"
[alerts]
prometheus_url = "{prometheus}"
alertmanager_url = "{alertmanager}"
matchers = ['{{severity="critical"}}']
check_secs = 1
[alerts.silence]
lease_secs = 60
"#
    )
}

fn lines<'a>(audit: &'a [AuditEntry], event: &str) -> Vec<&'a AuditEntry> {
    audit.iter().filter(|e| e.event == event).collect()
}

/// The silence rollcall made for `node`, as Alertmanager lists it.
fn silence_of<'a>(silences: &'a [Value], node: &str) -> Vec<&'a Value> {
    silences
        .iter()
        .filter(|s| {
            s["createdBy"] == "rollcall"
                && s["matchers"].as_array().is_some_and(|m| {
                    m.iter().any(|m| {
                        m["name"] == "instance"
                            && m["isRegex"] == true
                            && m["value"] == format!("{node}([.:].*)?")
                    })
                })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_holds_while_a_real_alert_fires_and_silences_each_node_in_flight() {
    init();
    let Some(Stack {
        alertmanager,
        switch,
        prometheus,
    }) = Stack::start(ALERT, 1).await
    else {
        return;
    };
    switch.set("db-01", true);
    prometheus
        .wait_alert(ALERT, Some("firing"), Duration::from_secs(30))
        .await;

    let fleet = Fleet::start(&[(Role::Compute, 3)]).await;
    for node in fleet.nodes.values() {
        node.slow_patch(2.0);
    }
    let c = fleet
        .start_campaign(&spec(prometheus.url(), alertmanager.url()))
        .await;
    let id = c.campaign.id.clone();

    // Held by the firing alert, which status names; nothing starts.
    let held = fleet
        .wait_for(&id, "the campaign held by the alert", LONG, |v| {
            v.alert_hold.contains(ALERT)
        })
        .await;
    assert!(
        held.alert_hold.starts_with(&format!(
            r#"held by alert {ALERT}{{instance="db-01:9100", job="rollcall", node="db-01", severity="critical"}} firing since "#
        )),
        "{}",
        held.alert_hold
    );
    assert_eq!(held.waiting, held.alert_hold, "waiting says why");
    // Three more checks: still held, still nothing asked of any node.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = fleet.status(&id).await;
    assert!(still.alert_hold.contains(ALERT), "{still:?}");
    assert!(
        still.nodes.iter().all(|n| n.step == Step::Pending),
        "no new start while the alert fires: {:?}",
        still.nodes
    );
    for node in fleet.nodes.values() {
        assert_eq!(node.patch_runs(), 0, "{}", node.name);
    }

    // The alert resolves: the campaign goes on, one node at a time, each
    // silenced while in flight.
    switch.set("db-01", false);
    prometheus
        .wait_alert(ALERT, None, Duration::from_secs(30))
        .await;
    let in_flight = fleet
        .wait_for(&id, "cmp01 in flight with its silence", LONG, |v| {
            v.nodes
                .iter()
                .any(|n| n.node == "cmp01" && n.step == Step::Patch && n.silence.is_some())
        })
        .await;
    assert_eq!(in_flight.alert_hold, "", "nothing holds any more");
    let lease = in_flight
        .nodes
        .iter()
        .find(|n| n.node == "cmp01")
        .and_then(|n| n.silence.clone())
        .expect("cmp01's silence");
    let silences = alertmanager.silences().await;
    let cmp01 = silence_of(&silences, "cmp01");
    assert_eq!(cmp01.len(), 1, "{silences:?}");
    assert_eq!(cmp01[0]["id"], lease.id.as_str(), "the id status shows");
    assert_eq!(cmp01[0]["status"]["state"], "active", "{:?}", cmp01[0]);
    assert!(
        cmp01[0]["comment"]
            .as_str()
            .is_some_and(|c| c.contains(&id) && c.contains("cmp01")),
        "{:?}",
        cmp01[0]
    );

    // The last silence is expired right after the last undrain, which
    // may be a moment after the campaign ended.
    let done = fleet
        .wait_for(&id, "the end, every silence expired", LONG, |v| {
            v.ended && v.nodes.iter().all(|n| n.silence.is_none())
        })
        .await;
    assert!(
        done.nodes.iter().all(|n| n.step == Step::Done),
        "{:?}",
        done.nodes
    );
    // Every node's silence expired after its undrain, and the audit has
    // each id made and expired, once.
    let audit = fleet.audit(&id).await;
    let silences = alertmanager.silences().await;
    for node in ["cmp01", "cmp02", "cmp03"] {
        let made = silence_of(&silences, node);
        assert_eq!(made.len(), 1, "one silence for {node}: {silences:?}");
        let sid = made[0]["id"].as_str().expect("an id");
        assert_eq!(made[0]["status"]["state"], "expired", "{:?}", made[0]);
        let about: Vec<&str> = audit
            .iter()
            .filter(|e| e.event == "silence" && e.node == node)
            .map(|e| e.detail.as_str())
            .collect();
        assert_eq!(about.len(), 2, "{node}: {about:?}");
        assert!(
            about[0].starts_with(&format!("silence {sid} created in alertmanager at "))
                && about[0].contains(&format!(r#"{{instance=~"{node}([.:].*)?"}}"#)),
            "{about:?}"
        );
        assert!(
            about[1].starts_with(&format!("silence {sid} expired in alertmanager at ")),
            "{about:?}"
        );
        // Expired after the undrain hook ran, not before.
        let undrained = audit
            .iter()
            .position(|e| e.node == node && e.detail.starts_with("undrain done"))
            .expect("undrain done");
        let expired = audit
            .iter()
            .position(|e| e.node == node && e.detail.contains(" expired in "))
            .expect("expired");
        assert!(undrained < expired, "{node}: expired before its undrain");
    }
    assert_eq!(
        cmp01_id(&audit),
        lease.id,
        "the audited id is the one status showed"
    );
    let holds = lines(&audit, "alert-hold");
    assert_eq!(holds.len(), 1, "one hold, audited once: {holds:?}");
    assert!(holds[0].detail.contains(ALERT), "{:?}", holds[0]);
    let clears = lines(&audit, "alert-clear");
    assert_eq!(clears.len(), 1, "{clears:?}");
    fleet.stop().await;
}

fn cmp01_id(audit: &[AuditEntry]) -> String {
    audit
        .iter()
        .find(|e| e.event == "silence" && e.node == "cmp01")
        .and_then(|e| e.detail.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_monitoring_api_that_cannot_be_asked_holds_with_that_reason() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 1)]).await;
    // Port 1 on loopback: nothing listens, the connection is refused.
    let c = fleet
        .start_campaign(
            "role_order = [\"compute\"]\nreboot = \"never\"\nskip_up_to_date = false\n\
             [alerts]\nprometheus_url = \"http://127.0.0.1:1\"\nalertname = \".*\"\ncheck_secs = 1\n",
        )
        .await;
    let id = c.campaign.id.clone();
    let held = fleet
        .wait_for(&id, "the campaign held, blind", LONG, |v| {
            v.alert_hold.contains("unreachable")
        })
        .await;
    assert!(
        held.alert_hold
            .starts_with("held: prometheus at 127.0.0.1:1 unreachable: "),
        "{}",
        held.alert_hold
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = fleet.status(&id).await;
    assert_eq!(still.nodes[0].step, Step::Pending, "fail closed");
    assert_eq!(fleet.node("cmp01").patch_runs(), 0);
    let audit = fleet.audit(&id).await;
    let holds = lines(&audit, "alert-hold");
    assert_eq!(
        holds.len(),
        1,
        "audited once, not at every check: {holds:?}"
    );
    assert!(holds[0].detail.contains("127.0.0.1:1"), "{:?}", holds[0]);
    fleet.stop().await;
}

/// `endsAt` of a silence as Alertmanager lists it, as a timestamp.
fn ends_at(silence: &Value) -> rollcall_proto::timestamp::Timestamp {
    silence["endsAt"]
        .as_str()
        .and_then(rollcall_proto::timestamp::Timestamp::parse_rfc3339)
        .unwrap_or_else(|| panic!("endsAt of {silence}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_is_a_lease_renewed_in_place_while_its_node_is_in_flight() {
    init();
    let Some(alertmanager) = Alertmanager::start().await else {
        return;
    };
    let fleet = Fleet::start(&[(Role::Compute, 1)]).await;
    // In flight for 40 s: past half of the 60 s lease, so it is renewed once.
    fleet.node("cmp01").slow_patch(40.0);
    let c = fleet
        .start_campaign(&format!(
            "name = \"lease\"\nrole_order = [\"compute\"]\nreboot = \"never\"\nskip_up_to_date = false\n\
             [alerts]\nalertmanager_url = \"{}\"\nalertname = \"NeverFires\"\ncheck_secs = 1\n\
             [alerts.silence]\nlease_secs = 60\n",
            alertmanager.url()
        ))
        .await;
    let id = c.campaign.id.clone();
    fleet
        .wait_for(&id, "cmp01 in its patch, silenced", LONG, |v| {
            v.nodes
                .iter()
                .any(|n| n.step == Step::Patch && n.silence.is_some())
        })
        .await;
    let first = silence_of(&alertmanager.silences().await, "cmp01")
        .first()
        .map(|s| (*s).clone())
        .expect("a silence");
    let made = rollcall_proto::timestamp::Timestamp::now();
    // A lease, not a silence until further notice: it lapses by itself
    // within lease_secs should the server die now.
    assert!(
        ends_at(&first).since(made) <= Duration::from_secs(61),
        "{first}"
    );
    let renewed = rollcall_tests::eventually(
        Duration::from_secs(60),
        "the lease renewed (its end moved on)",
        || async {
            let now = silence_of(&alertmanager.silences().await, "cmp01")
                .into_iter()
                .filter(|s| s["status"]["state"] == "active")
                .map(|s| (*s).clone())
                .collect::<Vec<_>>();
            (now.len() == 1 && ends_at(&now[0]).since(ends_at(&first)) >= Duration::from_secs(20))
                .then(|| now[0].clone())
        },
    )
    .await;
    assert_eq!(renewed["id"], first["id"], "renewed in place, same id");
    let silences = alertmanager.silences().await;
    assert_eq!(silence_of(&silences, "cmp01").len(), 1, "{silences:?}");

    let done = fleet
        .wait_for(&id, "the end, the silence expired", LONG, |v| {
            v.ended && v.nodes.iter().all(|n| n.silence.is_none())
        })
        .await;
    assert_eq!(done.nodes[0].step, Step::Done);
    let silences = alertmanager.silences().await;
    let last = silence_of(&silences, "cmp01");
    assert_eq!(last.len(), 1, "{silences:?}");
    assert_eq!(last[0]["status"]["state"], "expired");
    let audit = fleet.audit(&id).await;
    let about: Vec<&str> = lines(&audit, "silence")
        .iter()
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(about.len(), 2, "made and expired, no new id: {about:?}");
    fleet.stop().await;
}

/// Review finding 1: cmp01's alert fires while cmp01 is in flight (left
/// out, and silenced by the campaign's own silence). The moment cmp01 is
/// done, that alert is about a node no longer in flight: it must hold
/// cmp02's start, although the last look saw it silenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_about_the_node_that_just_finished_holds_the_next_start() {
    init();
    let Some(Stack {
        alertmanager,
        switch,
        prometheus,
    }) = Stack::start(ALERT, 1).await
    else {
        return;
    };
    let fleet = Fleet::start(&[(Role::Compute, 2)]).await;
    fleet.node("cmp01").slow_patch(10.0);
    let c = fleet
        .start_campaign(&spec(prometheus.url(), alertmanager.url()))
        .await;
    let id = c.campaign.id.clone();
    fleet
        .wait_for(&id, "cmp01 in its patch, silenced", LONG, |v| {
            v.nodes
                .iter()
                .any(|n| n.node == "cmp01" && n.step == Step::Patch && n.silence.is_some())
        })
        .await;
    // cmp01's own alert fires while it is in flight: left out, nothing held.
    switch.set("cmp01", true);
    prometheus
        .wait_alert(ALERT, Some("firing"), Duration::from_secs(30))
        .await;
    rollcall_tests::eventually(
        Duration::from_secs(30),
        "Alertmanager has the alert, silenced by rollcall's silence",
        || async {
            alertmanager
                .alerts()
                .await
                .iter()
                .any(|a| {
                    a["labels"]["node"] == "cmp01"
                        && a["status"]["silencedBy"]
                            .as_array()
                            .is_some_and(|s| !s.is_empty())
                })
                .then_some(())
        },
    )
    .await;
    let during = fleet.status(&id).await;
    assert_eq!(
        during.alert_hold, "",
        "an alert about a node in flight holds nothing"
    );

    // cmp01 finishes; its alert still fires: cmp02 must not start.
    let after = fleet
        .wait_for(&id, "cmp01 done", LONG, |v| {
            v.nodes
                .iter()
                .any(|n| n.node == "cmp01" && n.step == Step::Done)
        })
        .await;
    let cmp02 = |v: &rollcall_server::campaign::CampaignView| {
        v.nodes
            .iter()
            .find(|n| n.node == "cmp02")
            .map(|n| n.step)
            .expect("cmp02")
    };
    assert_eq!(
        cmp02(&after),
        Step::Pending,
        "not started in cmp01's last pass"
    );
    let held = fleet
        .wait_for(&id, "held by cmp01's alert", LONG, |v| {
            v.alert_hold.contains(r#"node="cmp01""#)
        })
        .await;
    assert_eq!(cmp02(&held), Step::Pending);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = fleet.status(&id).await;
    assert_eq!(cmp02(&still), Step::Pending, "{still:?}");
    assert_eq!(fleet.node("cmp02").patch_runs(), 0);
    assert!(
        !fleet
            .node("cmp02")
            .hooks()
            .iter()
            .any(|h| h.starts_with("nova-drain")),
        "cmp02 was never drained"
    );

    // It resolves: cmp02 goes on and the campaign ends.
    switch.set("cmp01", false);
    let done = fleet.wait_ended(&id, LONG).await;
    assert!(
        done.nodes.iter().all(|n| n.step == Step::Done),
        "{:?}",
        done.nodes
    );
    fleet.stop().await;
}

/// Review finding 2: a node waiting at its before gate when an alert
/// fires must not drain once its gate passes; it drains once the alert
/// resolves. Nothing fails and the campaign does not pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waiting_at_its_before_gate_does_not_drain_while_an_alert_fires() {
    init();
    let Some(Stack {
        switch, prometheus, ..
    }) = Stack::start(ALERT, 1).await
    else {
        return;
    };
    let fleet = Fleet::start(&[(Role::Compute, 1)]).await;
    fleet.degrade_cluster(true);
    let c = fleet
        .start_campaign(&format!(
            r#"
name = "gated and held"
role_order = ["compute"]
reboot = "never"
skip_up_to_date = false
[hooks.compute]
drain = "nova-drain"
undrain = "nova-undrain"
[gates.compute]
before = ["cluster-whole"]
run_on = "self"
interval_secs = 1
[alerts]
prometheus_url = "{}"
matchers = ['{{severity="critical"}}']
check_secs = 1
"#,
            prometheus.url()
        ))
        .await;
    let id = c.campaign.id.clone();
    fleet
        .wait_for(&id, "cmp01 waiting at its before gate", LONG, |v| {
            v.nodes[0].step == Step::GateBefore
        })
        .await;
    // An alert about another host fires while cmp01 waits at its gate.
    switch.set("db-01", true);
    prometheus
        .wait_alert(ALERT, Some("firing"), Duration::from_secs(30))
        .await;
    fleet
        .wait_for(&id, "the campaign held by the alert", LONG, |v| {
            v.alert_hold.contains(ALERT)
        })
        .await;
    // The gate passes now: cmp01 waits for the hold, undrained.
    fleet.degrade_cluster(false);
    let waiting = fleet
        .wait_for(&id, "cmp01's drain held", LONG, |v| {
            v.nodes[0].note.starts_with("the drain held by alert")
        })
        .await;
    assert_eq!(
        waiting.nodes[0].step,
        Step::GateBefore,
        "{:?}",
        waiting.nodes
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = fleet.status(&id).await;
    assert_eq!(still.nodes[0].step, Step::GateBefore, "{:?}", still.nodes);
    assert_eq!(
        still.campaign.phase,
        rollcall_server::campaign::record::Phase::Running
    );
    let node = fleet.node("cmp01");
    assert!(
        !node.hooks().iter().any(|h| h.starts_with("nova-drain")),
        "not drained while the alert fires: {:?}",
        node.hooks()
    );
    assert_eq!(node.patch_runs(), 0);

    switch.set("db-01", false);
    let done = fleet.wait_ended(&id, LONG).await;
    assert_eq!(done.nodes[0].step, Step::Done, "{:?}", done.nodes);
    assert!(node.hooks().iter().any(|h| h.starts_with("nova-drain")));
    fleet.stop().await;
}
