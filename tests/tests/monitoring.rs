//! The monitoring stack operators already run, for real (Debian's
//! Prometheus and Alertmanager on loopback): the harness that the alert
//! gating, silence and metrics suites stand on does what they assume.

use std::time::Duration;

use rollcall_tests::monitoring::{Alertmanager, Prometheus, PrometheusSetup, Switch, switch_rule};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_over_the_switch_fires_reaches_alertmanager_and_resolves() {
    let Some(alertmanager) = Alertmanager::start().await else {
        return;
    };
    let switch = Switch::start().await;
    switch.set("cmp-01", false);
    let Some(prometheus) = Prometheus::start(PrometheusSetup {
        scrape: vec![switch.target()],
        rules_yaml: switch_rule("TestSwitchOn", 2),
        alertmanager: Some(alertmanager.url().to_owned()),
    })
    .await
    else {
        return;
    };
    prometheus.wait_targets_up(Duration::from_secs(30)).await;
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
