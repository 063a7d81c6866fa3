//! The monitoring stack operators already run, for real (Debian's
//! Prometheus and Alertmanager on loopback): the harness that the alert
//! gating, silence and metrics suites stand on does what they assume, and
//! Prometheus scrapes a real server's /metrics, where the shipped alert
//! rules (their `for:` made 0 s) fire and resolve on what it reports.

use std::time::Duration;

use rollcall_tests::monitoring::{Prometheus, PrometheusSetup, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_over_the_switch_fires_reaches_alertmanager_and_resolves() {
    let Some(Stack {
        alertmanager,
        switch,
        prometheus,
    }) = Stack::start("TestSwitchOn", 2).await
    else {
        return;
    };
    switch.set("cmp-01", false);
    assert_eq!(prometheus.alert_state("TestSwitchOn").await, None);

    switch.set("cmp-01", true);
    prometheus
        .wait_alert("TestSwitchOn", Some("pending"), Duration::from_secs(20))
        .await;
    prometheus
        .wait_alert("TestSwitchOn", Some("firing"), Duration::from_secs(20))
        .await;
    let alerts = prometheus.alerts().await;
    assert_eq!(alerts[0]["labels"]["instance"], "cmp-01:9100", "{alerts:?}");
    rollcall_tests::eventually(
        Duration::from_secs(20),
        "the alert in Alertmanager",
        || async {
            let held = alertmanager.alerts().await;
            held.iter()
                .any(|a| {
                    a["labels"]["alertname"] == "TestSwitchOn" && a["status"]["state"] == "active"
                })
                .then_some(())
        },
    )
    .await;

    switch.set("cmp-01", false);
    prometheus
        .wait_alert("TestSwitchOn", None, Duration::from_secs(20))
        .await;
    assert!(alertmanager.silences().await.is_empty());
}

/// The shipped rules (packaging/prometheus/rollcall.rules.yml) with every
/// `for:` made 0 s, so a test need not wait minutes for a rule to fire.
fn shipped_rules_without_waits() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/prometheus/rollcall.rules.yml"
    ))
    .expect("the shipped rules");
    text.lines()
        .map(|l| match l.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 0s"),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_server_and_the_shipped_campaign_paused_rule_fires_and_resolves() {
    use rollcall_proto::model::Role;
    use rollcall_proto::v1;
    use rollcall_server::campaign::record::Phase;
    use rollcall_tests::fleet::Fleet;

    rollcall_tests::init();
    let fleet = Fleet::start(&[(Role::Compute, 2), (Role::Controller, 1)]).await;
    let Some(prometheus) = Prometheus::start(PrometheusSetup {
        scrape: vec![fleet.server.metrics_addr().to_string()],
        rules_yaml: shipped_rules_without_waits(),
        alertmanager: None,
    })
    .await
    else {
        return;
    };
    let targets = prometheus.wait_targets_up(Duration::from_secs(30)).await;
    assert_eq!(targets.len(), 1, "{targets:?}");

    // What the server told Prometheus: the fleet by role, as stored there.
    let online = |role: &'static str| {
        let prometheus = &prometheus;
        async move {
            let result = prometheus
                .query(&format!(
                    r#"sum(rollcall_nodes{{role="{role}", state="online"}})"#
                ))
                .await;
            result
                .first()
                .and_then(|r| r["value"][1].as_str())
                .map(str::to_owned)
        }
    };
    rollcall_tests::eventually(
        Duration::from_secs(30),
        "the fleet in Prometheus",
        || async {
            (online("compute").await.as_deref() == Some("2")
                && online("controller").await.as_deref() == Some("1"))
            .then_some(())
        },
    )
    .await;
    assert_eq!(prometheus.alert_state("RollcallCampaignPaused").await, None);

    // A paused campaign: the shipped rule fires, and resolves on resume.
    for node in fleet.nodes.values() {
        node.slow_patch(3.0);
    }
    let c = fleet
        .start_campaign("name = \"scraped\"\nrole_order = [\"compute\"]\nreboot = \"never\"\nskip_up_to_date = false\n")
        .await;
    let id = c.campaign.id.clone();
    let mut client = fleet.campaigns().await;
    client
        .pause_campaign(v1::ControlRequest {
            id: id.clone(),
            reason: "scrape test".into(),
        })
        .await
        .expect("pause");
    prometheus
        .wait_alert(
            "RollcallCampaignPaused",
            Some("firing"),
            Duration::from_secs(30),
        )
        .await;
    let alert = prometheus
        .alerts()
        .await
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "RollcallCampaignPaused")
        .expect("the alert");
    assert_eq!(alert["labels"]["campaign"], id.as_str(), "{alert}");
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    client
        .resume_campaign(v1::ResumeRequest {
            id: id.clone(),
            reason: String::new(),
            retry_failed: false,
        })
        .await
        .expect("resume");
    prometheus
        .wait_alert("RollcallCampaignPaused", None, Duration::from_secs(30))
        .await;
    let end = fleet.wait_ended(&id, Duration::from_secs(90)).await;
    assert_eq!(end.campaign.phase, Phase::Completed);
    // The step times the scheduler counted reached Prometheus too.
    rollcall_tests::eventually(
        Duration::from_secs(30),
        "patch step times in Prometheus",
        || async {
            let result = prometheus
                .query(r#"sum(rollcall_campaign_step_duration_seconds_count{step="patch"})"#)
                .await;
            (result.first().and_then(|r| r["value"][1].as_str()) == Some("2")).then_some(())
        },
    )
    .await;
    fleet.stop().await;
}
