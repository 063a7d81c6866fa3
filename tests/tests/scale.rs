//! The fleet at a size CI can afford: 500 simulated agents sending what a
//! kolla node's agent sends (the captured template: 46 containers with
//! labels and health output, 51 interfaces; full reports, interval reports,
//! container changes) for 20 s against a real server over real mTLS.
//!
//! What it checks is correctness at size, not speed (the speed and memory
//! targets are the benchmark's, scripts/bench-fleet.sh):
//! - every report an agent sent is visible to an operator's watch soon
//!   after: none is lost;
//! - the paginated lists return every node and every container exactly
//!   once, in order, across many pages;
//! - the fleet summary counts the whole fleet while its lists stay cut.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_proto::v1;
use rollcall_tests::sim::{SimConfig, SimFleet, Template, issue_agents};
use rollcall_tests::{Pki, TestServer, eventually};

const AGENTS: usize = 500;
const RUN: Duration = Duration::from_secs(20);

/// Counts the report events an operator's watch sees, per node.
fn watch_reports(mut stream: tonic::Streaming<v1::NodeEvent>) -> Arc<Mutex<HashMap<String, u64>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(event)) = stream.message().await {
            if event.kind == v1::NodeEventKind::Report as i32
                && let Some(node) = event.node
            {
                *counts.lock().expect("lock").entry(node.name).or_insert(0) += 1;
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_real_size_agents_lose_no_report_and_every_list_pages_through_all_of_them() {
    rollcall_tests::init();
    let pki = Pki::new();
    // Agents report every 2 s: ten intervals in the run, with full reports
    // every fifth one and frequent container changes.
    let server = TestServer::start(&pki, |c| {
        c.agents.report_interval_secs = 2;
        c.agents.offline_after_missed_reports = 10;
        c.limits.max_connections = AGENTS + 50;
    })
    .await;
    let mut operator = server.operator_client().await;
    let events = operator
        .watch_nodes(v1::WatchNodesRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let seen = watch_reports(events);

    let config = SimConfig {
        full_every: 5,
        container_changes_per_min: 20.0,
        ..SimConfig::new(&server.url(), pki.ca_pem())
    };
    let agents = issue_agents(&pki.ca(), "scale", AGENTS).expect("issue agent certificates");
    let fleet = SimFleet::start(config, agents);
    fleet
        .wait_connected(AGENTS, Duration::from_secs(120))
        .await
        .expect("every agent connects");
    tokio::time::sleep(RUN).await;

    // No report lost: what every agent had sent is visible two seconds later.
    let sent: HashMap<String, u64> = fleet
        .names()
        .iter()
        .cloned()
        .zip(fleet.stats().iter().map(|s| s.reports))
        .collect();
    let totals = fleet.totals();
    assert!(
        totals.reports >= (AGENTS * 8) as u64,
        "agents sent {totals:?}"
    );
    assert!(totals.full_reports >= (AGENTS * 3 / 2) as u64, "{totals:?}");
    assert!(totals.change_reports > 0, "{totals:?}");
    assert_eq!(
        totals.dropped, 0,
        "no agent had to drop a report: {totals:?}"
    );
    eventually(
        Duration::from_secs(10),
        "every sent report seen by the watch",
        || async {
            let seen = seen.lock().expect("lock");
            sent.iter()
                .all(|(node, n)| seen.get(node).copied().unwrap_or(0) >= *n)
                .then_some(())
        },
    )
    .await;

    // Every node, once, in order, over pages of 37.
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = operator
            .list_nodes(v1::ListNodesRequest {
                page_size: 37,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list nodes")
            .into_inner();
        assert!(page.nodes.len() <= 37);
        names.extend(page.nodes.into_iter().map(|n| n.name));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = {
        let mut v = fleet.names().to_vec();
        v.sort();
        v
    };
    assert_eq!(names, expected);
    assert_eq!(pages, AGENTS.div_ceil(37));

    // Every container of every node, once, in (node, name) order; pages are
    // cut by size (1,000) and by bytes (1 MiB), whichever comes first.
    let per_node = Template::kolla_node().facts().containers;
    let mut containers = Vec::new();
    let mut token = String::new();
    loop {
        let page = operator
            .list_containers(v1::ListContainersRequest {
                page_size: 1_000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list containers")
            .into_inner();
        let bytes = prost::Message::encoded_len(&page);
        assert!(bytes <= 1_100_000, "one page is {bytes} bytes");
        containers.extend(page.containers.into_iter().map(|c| {
            let name = c.container.map(|c| c.name).unwrap_or_default();
            (c.node, name)
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(containers.len(), AGENTS * per_node);
    assert!(
        containers.windows(2).all(|w| w[0] < w[1]),
        "sorted, no repeats"
    );
    let nodes: BTreeSet<&str> = containers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(nodes.len(), AGENTS);

    // A name filter across the fleet: one nova_compute per node.
    let nova = operator
        .list_containers(v1::ListContainersRequest {
            name_pattern: "nova_compute".into(),
            ..Default::default()
        })
        .await
        .expect("list nova_compute")
        .into_inner();
    assert_eq!(nova.containers.len(), AGENTS);
    assert!(nova.next_page_token.is_empty());

    // The summary counts everything and lists at most its limit.
    let summary = operator
        .fleet_summary(v1::FleetSummaryRequest {
            list_limit: 10,
            ..Default::default()
        })
        .await
        .expect("summary")
        .into_inner();
    assert_eq!(summary.nodes_total as usize, AGENTS);
    assert_eq!(summary.nodes_online as usize, AGENTS);
    assert_eq!(summary.containers_total as usize, AGENTS * per_node);
    // The template has two unhealthy containers; a few changes flip one.
    assert!(summary.unhealthy_containers_total as usize >= AGENTS * 2 - 100);
    assert_eq!(summary.unhealthy_containers.len(), 10);
    assert_eq!(summary.list_limit, 10);
    assert!(summary.pending_updates >= AGENTS as u64 * 100);

    fleet.stop().await;
}
