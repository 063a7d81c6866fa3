//! `/metrics` of a real server with real agents over mTLS (the fleet
//! harness), scraped over HTTP as Prometheus does: the fleet by role and
//! state, a container made unhealthy, a refused request, a campaign held
//! at its gate and then completed, and the whole scrape checked by the real
//! `promtool check metrics`.

use std::time::Duration;

use rollcall_proto::model::{ContainerHealth, Role};
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::Phase;
use rollcall_tests::fleet::Fleet;
use rollcall_tests::scrape::{self, Answer, PROMETHEUS_ACCEPT};
use rollcall_tests::{eventually, init};

const LONG: Duration = Duration::from_secs(90);

const CONTROLLERS: &str = r#"
name = "metrics"
role_order = ["controller"]
reboot = "never"
skip_up_to_date = false
[gates.controller]
before = ["cluster-whole"]
run_on = "self"
interval_secs = 1
"#;

/// Scrapes until `series` has `value`.
async fn until(fleet: &Fleet, series: &str, value: f64) -> Answer {
    let addr = fleet.server.metrics_addr();
    eventually(LONG, &format!("{series} to be {value}"), || async {
        let a = scrape::metrics(addr).await;
        (a.value(series) == Some(value)).then_some(a)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_fleet_a_refusal_and_a_campaign() {
    init();
    let fleet = Fleet::start(&[(Role::Controller, 3), (Role::Compute, 2)]).await;
    let addr = fleet.server.metrics_addr();

    // The fleet, by role and state; every session; per-node series (five
    // nodes, under the default 500).
    until(
        &fleet,
        r#"rollcall_nodes{role="controller",state="online"}"#,
        3.0,
    )
    .await;
    let a = until(
        &fleet,
        r#"rollcall_nodes{role="compute",state="online"}"#,
        2.0,
    )
    .await;
    assert_eq!(a.value("rollcall_sessions"), Some(5.0), "{}", a.body);
    assert!(a.value("rollcall_sessions_opened_total") >= Some(5.0));
    assert!(a.value("rollcall_reports_total") >= Some(5.0));
    assert_eq!(a.value("rollcall_per_node_series"), Some(1.0));
    assert_eq!(
        a.value(r#"rollcall_node_online{node="cmp02",role="compute"}"#),
        Some(1.0),
        "{}",
        a.body
    );
    assert!(
        a.value("rollcall_agent_certificate_nearest_expiry_timestamp_seconds")
            .is_some_and(|t| t > 1e9),
        "every agent connected with a certificate: {}",
        a.body
    );
    assert_eq!(a.value("rollcall_store_healthy"), Some(1.0));

    // A container turns unhealthy on one compute node.
    assert_eq!(
        a.value(r#"rollcall_containers_unhealthy{role="compute"}"#),
        Some(0.0)
    );
    fleet
        .node("cmp01")
        .set_container_health("nova_compute", ContainerHealth::Unhealthy);
    let a = until(
        &fleet,
        r#"rollcall_containers_unhealthy{role="compute"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        a.value(r#"rollcall_node_containers_unhealthy{node="cmp01",role="compute"}"#),
        Some(1.0)
    );
    assert_eq!(
        a.value(r#"rollcall_node_containers_unhealthy{node="cmp02",role="compute"}"#),
        Some(0.0)
    );

    // An agent's certificate asking the operator API is refused, and counted.
    let wrong = r#"rollcall_connections_refused_total{reason="wrong_kind"}"#;
    assert_eq!(a.value(wrong), Some(0.0));
    let channel = fleet
        .server
        .channel(&fleet.pki.agent("cmp01"))
        .await
        .expect("an agent certificate connects");
    let refused = rollcall_proto::v1::operator_service_client::OperatorServiceClient::new(channel)
        .list_nodes(rollcall_proto::v1::ListNodesRequest::default())
        .await;
    assert!(refused.is_err(), "an agent may not list nodes");
    until(&fleet, wrong, 1.0).await;

    // A campaign whose first controller waits at its before gate.
    fleet.degrade_cluster(true);
    let c = fleet.start_campaign(CONTROLLERS).await;
    let id = c.campaign.id.clone();
    fleet
        .wait_for(&id, "ctl01 at its before gate", LONG, |v| {
            v.nodes
                .iter()
                .any(|n| n.node == "ctl01" && n.step == Step::GateBefore)
        })
        .await;
    let at_gate = format!(r#"rollcall_campaign_nodes{{campaign="{id}",step="gate-before"}}"#);
    let a = until(&fleet, &at_gate, 1.0).await;
    let series = |name: &str, label: &str| format!(r#"{name}{{campaign="{id}",{label}}}"#);
    assert_eq!(
        a.value(&series("rollcall_campaign_nodes", r#"step="pending""#)),
        Some(2.0),
        "{}",
        a.body
    );
    assert_eq!(
        a.value(&series("rollcall_campaign_phase", r#"phase="running""#)),
        Some(1.0)
    );
    assert_eq!(a.value(r#"rollcall_campaigns{phase="running"}"#), Some(1.0));
    let waited = series(
        "rollcall_campaign_gate_wait_max_seconds",
        r#"gate="before""#,
    );
    eventually(LONG, "ctl01's gate wait to show", || async {
        let a = scrape::metrics(addr).await;
        a.value(&waited).filter(|w| *w >= 1.0)
    })
    .await;

    // Everything the server exposes is there now; promtool finds it clean.
    let a = scrape::metrics(addr).await;
    assert_eq!(a.content_type, "text/plain; version=0.0.4; charset=utf-8");
    for family in rollcall_server::metrics::FAMILIES {
        assert!(
            a.body.contains(&format!("# TYPE {} ", family.name)),
            "{} missing from:\n{}",
            family.name,
            a.body
        );
    }
    if let Some(said) = scrape::promtool_check(&a.body) {
        assert_eq!(said, "", "promtool check metrics:\n{}", a.body);
    }

    // Prometheus asks for OpenMetrics, and gets it.
    let om = scrape::get(addr, "GET", "/metrics", PROMETHEUS_ACCEPT).await;
    assert_eq!(om.status, 200);
    assert_eq!(
        om.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(om.body.contains("# TYPE rollcall_reports counter\n"));

    // The cluster is whole again: the campaign completes, its nodes' steps
    // were timed, and its id leaves the labels.
    fleet.degrade_cluster(false);
    let done = fleet.wait_ended(&id, LONG).await;
    assert_eq!(done.campaign.phase, Phase::Completed);
    let a = until(&fleet, r#"rollcall_campaigns{phase="completed"}"#, 1.0).await;
    assert!(
        !a.body.contains(&format!(r#"campaign="{id}""#)),
        "{}",
        a.body
    );
    assert_eq!(
        a.value(r#"rollcall_campaign_step_duration_seconds_count{step="patch"}"#),
        Some(3.0),
        "three controllers patched: {}",
        a.body
    );
    assert!(
        a.value(r#"rollcall_campaign_step_duration_seconds_sum{step="gate-before"}"#)
            .is_some_and(|s| s >= 1.0),
        "ctl01 waited at its gate: {}",
        a.body
    );
    assert_eq!(
        a.value(r#"rollcall_campaign_node_failures_total{step="patch"}"#),
        Some(0.0)
    );
    assert!(
        a.value("rollcall_store_commit_duration_seconds_count")
            .is_some_and(|n| n >= 1.0),
        "the campaign's changes were committed: {}",
        a.body
    );

    // Only GET /metrics.
    let other = scrape::get(addr, "GET", "/", "*/*").await;
    assert_eq!(other.status, 404);
    let post = scrape::get(addr, "POST", "/metrics", "*/*").await;
    assert_eq!(post.status, 405);
    fleet.stop().await;
}

#[tokio::test]
async fn per_node_series_stop_past_the_limit_and_tls_serves_the_same() {
    init();
    let fleet = Fleet::start_with(&[(Role::Compute, 2)], |c| {
        c.metrics.per_node_max_nodes = 1;
        c.metrics.tls = true;
    })
    .await;
    let addr = fleet.server.metrics_addr();
    let ca = fleet.pki.ca_pem();
    let a = eventually(LONG, "two compute nodes online, over TLS", || async {
        let a = scrape::metrics_tls(addr, &ca, "localhost").await;
        (a.value(r#"rollcall_nodes{role="compute",state="online"}"#) == Some(2.0)).then_some(a)
    })
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.value("rollcall_per_node_series"), Some(0.0), "{}", a.body);
    assert!(
        !a.has("rollcall_node_"),
        "two nodes, a limit of one: {}",
        a.body
    );
    assert!(!a.body.contains("node=\""), "{}", a.body);
    fleet.stop().await;
}
