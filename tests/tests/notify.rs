//! Webhooks (`[[notify]]`) on the fleet harness: a real server, real agents
//! over mTLS, and webhook receivers in the test that record what they take.

use std::time::Duration;

use rollcall_proto::model::Role;
use rollcall_proto::v1;
use rollcall_server::campaign::record::Phase;
use rollcall_server::config::NotifyConfig;
use rollcall_tests::fleet::Fleet;
use rollcall_tests::monitoring::{Answer, Receiver};
use rollcall_tests::{eventually, init};

const LONG: Duration = Duration::from_secs(90);

fn webhook(url: &str, slack: bool, timeout_secs: u32) -> NotifyConfig {
    NotifyConfig {
        url: url.to_owned(),
        events: Vec::new(),
        slack,
        timeout_secs,
        retry_secs: 120,
        queue: 100,
        ca: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_a_campaign_reaches_the_webhook_in_order_through_failed_deliveries() {
    init();
    // The first two deliveries fail (503): the first event is tried again,
    // and the ones after it wait their turn.
    let receiver = Receiver::start(vec![Answer::Unavailable, Answer::Unavailable]).await;
    let slack = Receiver::start(Vec::new()).await;
    let (a, b) = (receiver.url().to_owned(), slack.url().to_owned());
    let fleet = Fleet::start_with(&[(Role::Compute, 2)], move |c| {
        c.campaigns.tick_ms = 100;
        c.notify = vec![webhook(&a, false, 5), webhook(&b, true, 5)];
        c.notify[1].events = vec!["campaign_paused".into(), "node_failed".into()];
    })
    .await;
    fleet.node("cmp01").slow_patch(3.0);
    fleet
        .node("cmp02")
        .fail_patch_saying("E: Unable to fetch some archives");
    let spec = "name = \"notify\"\nrole_order = [\"compute\"]\nreboot = \"never\"\n\
                skip_up_to_date = false\nerror_budget = 1\nconcurrency = { compute = 1 }\n";
    let c = fleet.start_campaign(spec).await;
    let id = c.campaign.id.clone();
    let mut client = fleet.campaigns().await;
    fleet
        .wait_for(&id, "cmp01 in its patch", LONG, |v| {
            v.nodes
                .iter()
                .any(|n| n.node == "cmp01" && n.step.to_string() == "patch")
        })
        .await;
    client
        .pause_campaign(v1::ControlRequest {
            id: id.clone(),
            reason: "lunch".into(),
        })
        .await
        .expect("pause");
    fleet
        .wait_for(&id, "the pause", LONG, |v| {
            v.campaign.phase == Phase::Paused
        })
        .await;
    client
        .resume_campaign(v1::ResumeRequest {
            id: id.clone(),
            reason: "back".into(),
            retry_failed: false,
        })
        .await
        .expect("resume");
    let end = fleet.wait_ended(&id, LONG).await;
    assert_eq!(end.campaign.phase, Phase::Completed, "{end:?}");

    let want = [
        "campaign_started",
        "campaign_paused",
        "campaign_resumed",
        "node_failed",
        "campaign_failed",
    ];
    assert_eq!(
        receiver.wait_events(want.len()).await,
        want,
        "{:?}",
        receiver.taken()
    );
    assert_eq!(
        receiver.asked(),
        want.len() + 2,
        "two failed tries, then one each"
    );
    let taken = receiver.taken();
    assert!(
        taken
            .iter()
            .all(|b| b["campaign"] == id.as_str() && b["name"] == "notify")
    );
    assert_eq!(
        taken[1]["reason"], "paused by test-operator: lunch",
        "{:?}",
        taken[1]
    );
    assert_eq!(taken[3]["node"], "cmp02");
    assert!(
        taken[3]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("patch"),
        "{:?}",
        taken[3]
    );
    assert!(taken.iter().all(|b| b.get("text").is_none()));

    // The second webhook takes only what it asked for, with Slack's text.
    assert_eq!(
        slack.wait_events(2).await,
        ["campaign_paused", "node_failed"]
    );
    let text = slack.taken()[1]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.starts_with(&format!(
            "rollcall: campaign {id} (notify) node cmp02 failed"
        )),
        "{text}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_does_not_hold_the_campaign() {
    init();
    let receiver = Receiver::start(vec![Answer::Hang; 100]).await;
    let url = receiver.url().to_owned();
    let fleet = Fleet::start_with(&[(Role::Compute, 2)], move |c| {
        c.campaigns.tick_ms = 100;
        c.notify = vec![webhook(&url, true, 300)];
    })
    .await;
    let spec = "name = \"hung webhook\"\nrole_order = [\"compute\"]\nreboot = \"never\"\n\
                skip_up_to_date = false\n";
    let c = fleet.start_campaign(spec).await;
    // The first delivery is in flight (the receiver holds it, for up to
    // 300 s), and the campaign completes meanwhile.
    eventually(LONG, "the first delivery to reach the receiver", || async {
        (receiver.asked() >= 1).then_some(())
    })
    .await;
    let end = fleet.wait_ended(&c.campaign.id, LONG).await;
    assert_eq!(end.campaign.phase, Phase::Completed);
    assert_eq!(
        receiver.asked(),
        1,
        "deliveries wait their turn behind the one in flight"
    );
    assert!(receiver.taken().is_empty());
    fleet.stop().await;
}
