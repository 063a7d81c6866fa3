//! Gates on the fleet harness: one real server and real agents over mTLS,
//! whose gate hook is the harness's named fake `FakeGate` (`cluster-whole`,
//! failing while the fleet's "cluster" is degraded). The real Galera and
//! RabbitMQ gate scripts are tested against real clusters in
//! `gates_real.rs`; here the scheduler's side is: a role waits at its gate,
//! every try is in the audit, status says what the role waits for, and a
//! gate that never passes holds the campaign (before) or fails the node
//! (after).

use std::time::Duration;

use rollcall_proto::model::Role;
use rollcall_server::campaign::CampaignView;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::{AuditEntry, Phase};
use rollcall_server::config::NotifyConfig;
use rollcall_tests::fleet::Fleet;
use rollcall_tests::init;
use rollcall_tests::monitoring::Receiver;

const LONG: Duration = Duration::from_secs(90);

const CONTROLLERS: &str = r#"
name = "gated controllers"
role_order = ["controller"]
reboot = "never"
skip_up_to_date = false
[gates.controller]
before = ["cluster-whole"]
after = ["cluster-whole"]
run_on = "self"
interval_secs = 1
"#;

/// Starts a campaign over the computes (no reboot) with `gates`, and
/// waits until it pauses.
async fn paused_computes(fleet: &Fleet, gates: &str) -> CampaignView {
    let spec =
        format!("role_order = [\"compute\"]\nreboot = \"never\"\nskip_up_to_date = false\n{gates}");
    let c = fleet.start_campaign(&spec).await;
    fleet
        .wait_for(&c.campaign.id, "the campaign to pause", LONG, |v| {
            v.campaign.phase == Phase::Paused
        })
        .await
}

fn gate_lines<'a>(audit: &'a [AuditEntry], node: &str) -> Vec<&'a AuditEntry> {
    audit
        .iter()
        .filter(|e| e.event == "gate" && e.node == node)
        .collect()
}

#[tokio::test]
async fn controllers_wait_at_their_before_gate_while_the_cluster_is_degraded_and_go_on_once_it_is_whole()
 {
    init();
    let fleet = Fleet::start(&[(Role::Controller, 3)]).await;
    fleet.degrade_cluster(true);
    let c = fleet.start_campaign(CONTROLLERS).await;
    let id = c.campaign.id.clone();

    // The first controller tries its gate, again and again; nothing is done.
    let held = fleet
        .wait_for(
            &id,
            "a third try of ctl01's before gate (two failed)",
            LONG,
            |v| {
                v.nodes.iter().any(|n| {
                    n.node == "ctl01" && n.step == Step::GateBefore && n.note.contains("(try 3)")
                })
            },
        )
        .await;
    assert!(
        held.waiting
            .contains("ctl01 at its before gate: cluster-whole")
            && held
                .waiting
                .contains("cluster-whole on ctl01 failed (exit code 1): cluster: 2 of 3 members"),
        "status says what the role waits for: {}",
        held.waiting
    );
    let audit = fleet.audit(&id).await;
    let tries = gate_lines(&audit, "ctl01");
    assert!(tries.len() >= 2, "{tries:?}");
    // The first failure in full; the tries that fail the same way after it
    // with their exit code, and say so.
    assert!(
        tries[0]
            .output_tail
            .contains("checking members\ncluster: 2 of 3 members"),
        "{:?}",
        tries[0]
    );
    for t in &tries[1..] {
        assert!(
            t.output_tail.is_empty() && t.detail.ends_with("(the same output as the try before)"),
            "{t:?}"
        );
    }
    for t in &tries {
        assert_eq!(t.exit_code, Some(1), "{t:?}");
        assert!(
            t.detail
                .starts_with("before gate: cluster-whole on ctl01 failed"),
            "{t:?}"
        );
    }
    for name in ["ctl01", "ctl02", "ctl03"] {
        assert_eq!(
            fleet.node(name).patch_runs(),
            0,
            "{name} was patched behind a failing gate"
        );
    }
    let text = fleet.cli(&["campaign", "status", &id]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(
            "waiting: controller: one at a time; ctl01 at its before gate: cluster-whole"
        ),
        "{text}"
    );
    assert!(text.contains("gate-before"), "{text}");

    // The member is back: each controller passes before, is patched, passes after.
    fleet.degrade_cluster(false);
    let done = fleet.wait_ended(&id, LONG).await;
    assert_eq!(done.campaign.phase, Phase::Completed, "{:?}", done.nodes);
    for name in ["ctl01", "ctl02", "ctl03"] {
        let node = fleet.node(name);
        assert_eq!(node.patch_runs(), 1, "{name}");
        let hooks = node.hooks();
        let before = format!("cluster-whole before {name}");
        let after = format!("cluster-whole after {name}");
        assert!(
            hooks.contains(&before) && hooks.contains(&after),
            "{name}: {hooks:?}"
        );
        assert_eq!(
            hooks.last(),
            Some(&after),
            "{name}: the after gate runs last: {hooks:?}"
        );
    }
    let audit = fleet.audit(&id).await;
    let passed: Vec<&AuditEntry> = audit
        .iter()
        .filter(|e| e.event == "gate" && e.exit_code == Some(0))
        .collect();
    assert_eq!(
        passed.len(),
        6,
        "one passing try per gate per controller: {passed:?}"
    );
    assert!(
        passed
            .iter()
            .all(|e| e.output_tail.contains("cluster: 3 of 3 members"))
    );
    // No controller left before the previous one's after gate passed.
    let order: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e.event == "gate" && e.exit_code == Some(0))
        .map(|e| (e.node.as_str(), e.detail.split(' ').next().unwrap_or("")))
        .collect();
    assert_eq!(
        order,
        [
            ("ctl01", "before"),
            ("ctl01", "after"),
            ("ctl02", "before"),
            ("ctl02", "after"),
            ("ctl03", "before"),
            ("ctl03", "after")
        ]
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_before_gate_that_never_passes_pauses_and_an_after_gate_that_never_passes_fails_the_node()
{
    init();
    // A webhook hears of both timeouts (`notify` derives them).
    let receiver = Receiver::start(Vec::new()).await;
    let url = receiver.url().to_owned();
    let fleet = Fleet::start_with(&[(Role::Compute, 2), (Role::Controller, 1)], move |c| {
        c.campaigns.tick_ms = 100;
        c.notify = vec![NotifyConfig {
            url,
            events: Vec::new(),
            slack: false,
            timeout_secs: 5,
            retry_secs: 60,
            queue: 100,
            ca: None,
        }];
    })
    .await;
    fleet.degrade_cluster(true);
    let paused = paused_computes(
        &fleet,
        r#"
        [gates.compute]
        before = ["cluster-whole"]
        run_on = "controller"
        interval_secs = 1
        try_secs = 2
        timeout_secs = 3
        "#,
    )
    .await;
    assert!(
        paused.campaign.reason.starts_with("before gate of cmp01 did not pass within 3s: cluster-whole on ctl01 failed (exit code 1): cluster: 2 of 3 members"),
        "{}",
        paused.campaign.reason
    );
    assert!(
        paused
            .nodes
            .iter()
            .filter(|n| n.role == Role::Compute)
            .all(|n| n.step == Step::Pending),
        "{:?}",
        paused.nodes
    );
    assert_eq!(fleet.node("cmp01").patch_runs(), 0);
    assert!(
        fleet
            .node("ctl01")
            .hooks()
            .contains(&"cluster-whole before cmp01".to_owned()),
        "run_on = controller: ctl01 ran the gate for cmp01"
    );
    let id = &paused.campaign.id;
    let cancel = fleet.cli(&["campaign", "cancel", id]).await;
    assert!(cancel.status.success(), "{cancel:?}");
    fleet.wait_ended(id, LONG).await;

    // An after gate that never passes: the node fails where it stands,
    // still drained, and the error budget (0) pauses the campaign.
    let paused = paused_computes(
        &fleet,
        r#"
        [hooks.compute]
        drain = "nova-drain"
        undrain = "nova-undrain"
        run_on = "controller"
        [gates.compute]
        after = ["cluster-whole"]
        run_on = "controller"
        interval_secs = 1
        try_secs = 2
        timeout_secs = 3
        "#,
    )
    .await;
    let failed = paused
        .nodes
        .iter()
        .find(|n| n.step == Step::Failed)
        .expect("a failed node");
    assert!(
        failed
            .note
            .starts_with("gate-after did not finish within 3s: cluster-whole on ctl01 failed"),
        "{}",
        failed.note
    );
    assert_eq!(failed.left_drained.as_deref(), Some("nova-undrain"));
    assert!(
        paused.campaign.reason.contains("error budget"),
        "{}",
        paused.campaign.reason
    );
    assert_eq!(
        fleet.node(&failed.node).patch_runs(),
        1,
        "patched, then the cluster did not come back"
    );
    let want = [
        "campaign_started",
        "gate_timed_out",
        "campaign_paused",
        "campaign_cancelled",
        "campaign_started",
        "gate_timed_out",
        "node_failed",
        "campaign_paused",
    ];
    assert_eq!(
        receiver.wait_events(want.len()).await,
        want,
        "{:?}",
        receiver.taken()
    );
    let taken = receiver.taken();
    assert_eq!(taken[1]["node"], "cmp01");
    assert!(
        taken[1]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("before gate of cmp01 did not pass within 3s")),
        "{:?}",
        taken[1]
    );
    assert!(
        taken[5]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("gate-after did not finish within 3s")),
        "{:?}",
        taken[5]
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_node_at_its_before_gate_when_the_campaign_is_cancelled_is_never_drained() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 2), (Role::Controller, 1)]).await;
    fleet.degrade_cluster(true);
    let c = fleet
        .start_campaign(
            r#"
            role_order = ["compute"]
            reboot = "never"
            skip_up_to_date = false
            [hooks.compute]
            drain = "nova-drain"
            undrain = "nova-undrain"
            run_on = "controller"
            [gates.compute]
            before = ["cluster-whole"]
            run_on = "controller"
            interval_secs = 1
            "#,
        )
        .await;
    let id = c.campaign.id;
    fleet
        .wait_for(&id, "cmp01 to fail a try at its before gate", LONG, |v| {
            v.nodes.iter().any(|n| {
                n.node == "cmp01" && n.step == Step::GateBefore && n.note.contains("failed")
            })
        })
        .await;
    let cancel = fleet.cli(&["campaign", "cancel", &id]).await;
    assert!(cancel.status.success(), "{cancel:?}");
    // The cancelled campaign ends: nothing of it moves any more.
    let ended = fleet.wait_ended(&id, LONG).await;
    let cmp01 = ended
        .nodes
        .iter()
        .find(|n| n.node == "cmp01")
        .expect("cmp01");
    assert_eq!(cmp01.step, Step::Skipped, "{cmp01:?}");
    // Skipped in an ended campaign, which no pass drives any more: the
    // drain can never be asked, whatever a gate try still under way says.
    fleet.degrade_cluster(false);
    assert_eq!(fleet.node("cmp01").patch_runs(), 0);
    assert!(
        !fleet
            .node("ctl01")
            .hooks()
            .iter()
            .any(|h| h.starts_with("nova-drain")),
        "{:?}",
        fleet.node("ctl01").hooks()
    );
    fleet.stop().await;
}
