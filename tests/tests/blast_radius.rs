//! The fleet-wide blast-radius guard across one real server and real
//! agents in one process: while a controller is in maintenance, a compute
//! node the campaign never touches has its `nova_compute` container turn
//! unhealthy (what kolla's health check does when nova-compute lost
//! RabbitMQ after a controller reboot). The container's health is the
//! harness's FakeDocker section (`FakeNode::set_container_health`), sent by
//! the real agent as its Docker watcher would; patch is FakePatch, made
//! slow so the controller stays in maintenance.

use std::time::Duration;

use rollcall_proto::model::{ContainerHealth, Role};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use rollcall_server::campaign::CampaignView;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::Phase;
use rollcall_tests::fleet::Fleet;
use rollcall_tests::init;

const FLEET: &[(Role, usize)] = &[(Role::Controller, 2), (Role::Compute, 2)];
const LONG: Duration = Duration::from_secs(60);
/// The spec's blast_radius_secs.
const SECS: u64 = 1;

/// The blast_radius_secs of the tests that hold the campaign while a
/// container is bad: time to pause it (or fail the store) before the
/// container's clock runs out.
const HELD_SECS: u64 = 3;

/// A campaign over the controllers only: the computes are the rest of
/// the fleet, which the guard watches.
fn spec(extra: &str) -> String {
    spec_secs(SECS, extra)
}

fn spec_secs(secs: u64, extra: &str) -> String {
    format!(
        r#"
name = "blast"
role_order = ["controller"]
reboot = "never"
blast_radius_secs = {secs}
{extra}
[select]
roles = ["controller"]
"#
    )
}

/// Waits until the campaign ends, or pauses: a test that expects it to
/// complete then fails at once, with the pause's reason.
async fn ended_or_paused(fleet: &Fleet, id: &str) -> CampaignView {
    fleet
        .wait_for(id, "the campaign to end (or pause)", LONG, |v| {
            v.ended || v.campaign.phase == Phase::Paused
        })
        .await
}

fn step_of(v: &CampaignView, node: &str) -> Step {
    v.nodes
        .iter()
        .find(|n| n.node == node)
        .map(|n| n.step)
        .unwrap_or_else(|| panic!("{node} is not in the campaign"))
}

async fn impact_lines(fleet: &Fleet, id: &str) -> Vec<(String, String)> {
    fleet
        .audit(id)
        .await
        .into_iter()
        .filter(|e| e.event == "impact")
        .map(|e| (e.node, e.detail))
        .collect()
}

/// Waits until ctl01 is in its (slow) patch, then turns cmp02's
/// nova_compute unhealthy; returns when it did.
async fn hurt_cmp02_while_ctl01_patches(fleet: &Fleet, id: &str) -> Timestamp {
    fleet
        .wait_for(id, "ctl01 in its patch", LONG, |v| {
            step_of(v, "ctl01") == Step::Patch
        })
        .await;
    let turned = Timestamp::now();
    fleet
        .node("cmp02")
        .set_container_health("nova_compute", ContainerHealth::Unhealthy);
    turned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_hurt_elsewhere_during_maintenance_pauses_the_campaign_and_says_who() {
    init();
    let fleet = Fleet::start(FLEET).await;
    fleet.node("ctl01").slow_patch(8.0);
    fleet.node("ctl02").slow_patch(2.0);
    let id = fleet.start_campaign(&spec("")).await.campaign.id;
    let turned = hurt_cmp02_while_ctl01_patches(&fleet, &id).await;

    let paused = fleet
        .wait_for(&id, "the blast-radius pause", LONG, |v| {
            v.campaign.phase == Phase::Paused
        })
        .await;
    let reason = &paused.campaign.reason;
    assert!(
        reason.starts_with("blast radius: container nova_compute on cmp02 unhealthy for ")
            && reason
                .ends_with("s (began while ctl01 was in patch); resume when the cloud is whole"),
        "{reason}"
    );
    assert!(
        paused.campaign.updated_at.since(turned) >= Duration::from_secs(SECS),
        "not before the container was bad for blast_radius_secs"
    );
    assert!(!paused.campaign.held, "a scheduler's pause: ctl01 finishes");
    assert_eq!(step_of(&paused, "ctl01"), Step::Patch);
    let [impact] = paused.impacts.as_slice() else {
        panic!("one impact: {:?}", paused.impacts);
    };
    assert_eq!(
        (
            impact.node.as_str(),
            impact.container.as_str(),
            impact.what.as_str(),
            impact.during.as_str(),
            impact.accepted
        ),
        (
            "cmp02",
            "nova_compute",
            "unhealthy",
            "while ctl01 was in patch",
            false
        )
    );
    let lines = impact_lines(&fleet, &id).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, "cmp02");
    assert!(lines[0].1.ends_with("; the campaign pauses"), "{lines:?}");
    // `--json` carries the impact (an added key; the rest as it was).
    let out = fleet.cli(&["campaign", "status", &id, "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["impacts"][0]["node"], "cmp02", "{json}");
    assert_eq!(json["campaign"]["reason"], reason.as_str());

    // ctl01 finishes its way; nothing new starts while paused (ctl01's
    // last step and the schedule's refusal are one pass).
    let ctl01_done = fleet
        .wait_for(&id, "ctl01 to finish", LONG, |v| {
            step_of(v, "ctl01") == Step::Done
        })
        .await;
    assert_eq!(step_of(&ctl01_done, "ctl02"), Step::Pending);

    // Resumed while cmp02 is still unhealthy: the impact is accepted, and
    // ctl02's patch, longer than blast_radius_secs, pauses nothing.
    fleet
        .campaigns()
        .await
        .resume_campaign(v1::ResumeRequest {
            id: id.clone(),
            reason: "nova_compute on cmp02 is known".into(),
            retry_failed: false,
        })
        .await
        .expect("resume");
    let done = ended_or_paused(&fleet, &id).await;
    assert_eq!(done.campaign.phase, Phase::Completed, "{done:#?}");
    assert!(done.impacts[0].accepted);
    assert_eq!(impact_lines(&fleet, &id).await.len(), 1);
    let audit = fleet.audit(&id).await;
    assert!(
        audit
            .iter()
            .any(|e| e.event == "resumed"
                && e.detail.contains("impacts accepted: cmp02/nova_compute")),
        "{audit:#?}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_already_unhealthy_at_start_is_no_impact_across_a_server_restart() {
    init();
    let mut fleet = Fleet::start(FLEET).await;
    fleet
        .node("cmp02")
        .set_container_health("nova_compute", ContainerHealth::Unhealthy);
    fleet
        .server
        .wait_node("cmp02", "with nova_compute unhealthy", |d| {
            d.node.containers_unhealthy == 1
        })
        .await;
    fleet.node("ctl01").slow_patch(4.0);
    fleet.node("ctl02").slow_patch(2.0);
    let id = fleet.start_campaign(&spec("")).await.campaign.id;
    let audit = fleet.audit(&id).await;
    assert!(
        audit
            .iter()
            .any(|e| e.event == "baseline" && e.detail.contains("cmp02/nova_compute")),
        "{audit:#?}"
    );
    fleet
        .wait_for(&id, "ctl01 in its patch", LONG, |v| {
            step_of(v, "ctl01") == Step::Patch
        })
        .await;
    // The baseline is stored with the campaign: a restarted server keeps it.
    fleet.server.restart().await;
    let restarted = Timestamp::now();

    // The barrier: the campaign ends. It pauses for nothing on its way,
    // and cmp02 stayed unhealthy longer than blast_radius_secs after the
    // restart while it ran.
    let done = ended_or_paused(&fleet, &id).await;
    assert_eq!(done.campaign.phase, Phase::Completed, "{done:#?}");
    let finished = done.campaign.finished_at.expect("finished");
    assert!(
        finished.since(restarted) > Duration::from_secs(SECS + 1),
        "the guard had time to judge cmp02"
    );
    assert!(done.impacts.is_empty(), "{:?}", done.impacts);
    assert_eq!(impact_lines(&fleet, &id).await, Vec::new());
    let cmp02 = fleet.server.node("cmp02").await.expect("cmp02");
    assert_eq!(cmp02.node.containers_unhealthy, 1, "still unhealthy");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_budget_of_none_an_impact_pauses_the_campaign_for_its_budget() {
    init();
    let fleet = Fleet::start(FLEET).await;
    fleet.node("ctl01").slow_patch(8.0);
    let id = fleet
        .start_campaign(&spec("blast_radius = \"budget\"\nerror_budget = 0"))
        .await
        .campaign
        .id;
    hurt_cmp02_while_ctl01_patches(&fleet, &id).await;
    let paused = fleet
        .wait_for(&id, "the budget pause", LONG, |v| {
            v.campaign.phase == Phase::Paused
        })
        .await;
    assert_eq!(
        paused.campaign.reason,
        "error budget exhausted: 0 node(s) failed and 1 blast-radius impact(s) counted, the budget allows 0"
    );
    let lines = impact_lines(&fleet, &id).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]
            .1
            .starts_with("container nova_compute on cmp02 unhealthy for ")
            && lines[0]
                .1
                .ends_with("; counted against the error budget (1 impact(s) counted)"),
        "{lines:?}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_budget_of_one_an_impact_counts_once_and_the_campaign_completes() {
    init();
    let fleet = Fleet::start(FLEET).await;
    fleet.node("ctl01").slow_patch(4.0);
    fleet.node("ctl02").slow_patch(2.0);
    let id = fleet
        .start_campaign(&spec("blast_radius = \"budget\"\nerror_budget = 1"))
        .await
        .campaign
        .id;
    hurt_cmp02_while_ctl01_patches(&fleet, &id).await;
    let counted = fleet
        .wait_for(&id, "the impact counted", LONG, |v| !v.impacts.is_empty())
        .await;
    assert_eq!(counted.campaign.phase, Phase::Running, "within the budget");
    let out = fleet.cli(&["campaign", "status", &id]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("impact: container nova_compute on cmp02 unhealthy for "),
        "{text}"
    );

    // cmp02 stays unhealthy through ctl02's patch: still one impact.
    let done = ended_or_paused(&fleet, &id).await;
    assert_eq!(done.campaign.phase, Phase::Completed, "{done:#?}");
    assert_eq!(done.impacts.len(), 1, "{:?}", done.impacts);
    assert_eq!(impact_lines(&fleet, &id).await.len(), 1);
    assert!(done.nodes.iter().all(|n| n.step == Step::Done));
    fleet.stop().await;
}

/// Turns cmp02's nova_compute unhealthy while ctl01 patches (slowly, as
/// ctl02 does after it: the campaign outlasts the test) and returns once
/// the server's passes have seen it bad for a while: its clock runs, short
/// of HELD_SECS.
async fn a_clock_runs_on_cmp02(fleet: &Fleet) -> String {
    fleet.node("ctl01").slow_patch(12.0);
    fleet.node("ctl02").slow_patch(12.0);
    let id = fleet
        .start_campaign(&spec_secs(HELD_SECS, ""))
        .await
        .campaign
        .id;
    hurt_cmp02_while_ctl01_patches(fleet, &id).await;
    fleet
        .server
        .wait_node("cmp02", "with nova_compute unhealthy", |d| {
            d.node.containers_unhealthy == 1
        })
        .await;
    // More than the one look per second the guard takes.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    id
}

/// Waits for the impact that follows `from` and checks its clock started
/// then, not before the campaign was held.
async fn the_impact_began_after(fleet: &Fleet, id: &str, from: Timestamp) {
    let paused = fleet
        .wait_for(id, "the blast-radius pause", LONG, |v| {
            v.campaign.phase == Phase::Paused && !v.impacts.is_empty()
        })
        .await;
    let [impact] = paused.impacts.as_slice() else {
        panic!("one impact: {:?}", paused.impacts);
    };
    assert_eq!(impact.node, "cmp02");
    assert!(
        impact.began_at >= from,
        "the clock started again at {from:?}, not at {:?}",
        impact.began_at
    );
    assert!(
        paused.campaign.updated_at.since(from) >= Duration::from_secs(HELD_SECS),
        "a full blast_radius_secs after {from:?}: {:?}",
        paused.campaign.updated_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_pause_starts_the_clocks_again_at_the_resume() {
    init();
    let fleet = Fleet::start(FLEET).await;
    let id = a_clock_runs_on_cmp02(&fleet).await;
    let mut client = fleet.campaigns().await;
    client
        .pause_campaign(v1::ControlRequest {
            id: id.clone(),
            reason: "looking at cmp02".into(),
        })
        .await
        .expect("pause");
    // Held (no pass looks at it) for longer than blast_radius_secs.
    tokio::time::sleep(Duration::from_secs(HELD_SECS + 1)).await;
    let resumed = Timestamp::now();
    client
        .resume_campaign(v1::ResumeRequest {
            id: id.clone(),
            reason: String::new(),
            retry_failed: false,
        })
        .await
        .expect("resume");
    the_impact_began_after(&fleet, &id, resumed).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_starts_the_clocks_again_when_the_store_writes_again() {
    init();
    let fleet = Fleet::start(FLEET).await;
    let id = a_clock_runs_on_cmp02(&fleet).await;
    fleet
        .server
        .faults
        .fail("database or disk is full (injected)");
    fleet
        .wait_for(&id, "the campaign to say it is held", LONG, |v| {
            v.waiting.contains("store failing")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(HELD_SECS + 1)).await;
    let healed = Timestamp::now();
    fleet.server.faults.heal();
    the_impact_began_after(&fleet, &id, healed).await;
    fleet.stop().await;
}
