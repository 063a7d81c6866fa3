//! What an agent sends reaches an operator's terminal only as inert text:
//! a hand-driven agent session (real server, real mTLS) reports terminal
//! escapes, newlines, C1 and bidi controls in every string it can, and the
//! real `rollcall-server` CLI must print them escaped, one row per thing,
//! byte for byte as expected; `--json` must give back the exact strings.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use rollcall_proto::model::{
    Container, ContainerHealth, ContainerState, ContainersSection, HostFacts, Node, NodeContainer,
    NodeDetail, RebootReason, RebootSection, Report, Role,
};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_tests::fleet::Fleet;
use rollcall_tests::{Pki, RawSession, TestServer, hello, init};

// Each under 200 bytes: the gRPC edge bounds string lengths.
const FORGED_ROW: &str = "nova_api\ncmp9  forged  running";
const TITLE_IMAGE: &str = "\x1b]0;pwned\x07kolla/nova-api:2024.1";
const CLEAR: &str = "\x1b[2Jclear";
const RLO_IMAGE: &str = "kolla/mariadb\u{202e}gpj.exe";
const HEALTH_OUTPUT: &str = "curl: (7) refused\n\x1b[31mred\u{9b}2J\u{202e}txt\n";
const CLIPBOARD_LABEL: &str = "\x1b]52;c;cm0gLXJmIH4K\x07";
const HOSTNAME: &str = "cmp1\r\nRole:        admin";
const OS: &str = "Debian \x1b]0;owned\x07GNU/Linux";
const KERNEL: &str = "6.1.0-28\x7f\u{2066}amd64";
const REBOOT_DETAIL: &str = "new kernel\n\x1b[2J";
const LABEL: &str = "nova\x1b[8m";
const AGENT_VERSION: &str = "1.0\u{9b}";
const ENGINE: &str = "Docker\u{85}24";

fn hostile_report(boot_time: Timestamp) -> Report {
    Report {
        seq: 1,
        collected_at: Timestamp::now(),
        full: true,
        host: Some(HostFacts {
            hostname: HOSTNAME.into(),
            os_pretty_name: OS.into(),
            kernel: KERNEL.into(),
            arch: "x86_64".into(),
            boot_id: "raw-boot".into(),
            boot_time,
            cpu_count: 4,
            ..Default::default()
        }),
        containers: Some(ContainersSection {
            available: true,
            engine: ENGINE.into(),
            containers: vec![
                Container {
                    id: "a1".into(),
                    name: FORGED_ROW.into(),
                    image: TITLE_IMAGE.into(),
                    state: ContainerState::Running,
                    health: ContainerHealth::Healthy,
                    labels: [(CLIPBOARD_LABEL.to_owned(), CLIPBOARD_LABEL.to_owned())].into(),
                    ..Default::default()
                },
                Container {
                    id: "b2".into(),
                    name: CLEAR.into(),
                    image: RLO_IMAGE.into(),
                    state: ContainerState::Running,
                    health: ContainerHealth::Unhealthy,
                    failing_streak: 3,
                    last_health_output: HEALTH_OUTPUT.into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        reboot: Some(RebootSection {
            required: true,
            reasons: vec![RebootReason {
                source: "kernel".into(),
                detail: REBOOT_DETAIL.into(),
                packages: vec![],
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs the real CLI against `server` as its operator.
async fn cli(server: &TestServer, pki: &Pki, args: &[&str]) -> Output {
    let mut cmd = Command::new(rollcall_tests::bin("rollcall-server"));
    cmd.args(args)
        .env("ROLLCALL_SERVER", server.url())
        .env("ROLLCALL_CA", pki.ca_cert())
        .env("ROLLCALL_CERT", &server.operator.cert)
        .env("ROLLCALL_KEY", &server.operator.key);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the CLI"))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The CLI's text: valid UTF-8 in which a terminal finds nothing to obey.
fn inert(out: &Output) -> String {
    let text = String::from_utf8(out.stdout.clone()).expect("the CLI prints UTF-8");
    for c in text.chars() {
        let obeyed = matches!(c,
            '\0'..='\x09' | '\x0b'..='\x1f' | '\x7f'..='\u{9f}'
            | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        assert!(!obeyed, "raw {c:?} reached the terminal:\n{text}");
    }
    text
}

/// Replaces the value of each `Key:` line whose value depends on the clock.
fn without_clock(text: &str, keys: &[&str]) -> String {
    text.lines()
        .map(|l| match keys.iter().find(|k| l.starts_with(*k)) {
            Some(k) => format!("{k} <clock>\n"),
            None => format!("{l}\n"),
        })
        .collect()
}

#[tokio::test]
async fn hostile_report_strings_reach_the_terminal_escaped_and_json_exact() {
    init();
    let pki = Pki::new();
    // The hand-driven session sends one report: it must stay online while
    // the CLI runs.
    let server = TestServer::start(&pki, |c| c.agents.offline_after_missed_reports = 120).await;
    let mut hello = hello("cmp1", Role::Compute);
    if let Some(v1::agent_message::Msg::Hello(h)) = &mut hello.msg {
        h.labels = [("az".to_owned(), LABEL.to_owned())].into();
        h.agent_version = AGENT_VERSION.into();
        h.hostname = HOSTNAME.into();
    }
    let mut session = RawSession::open(&server, &pki.agent("cmp1"), hello)
        .await
        .expect("session");
    session.next().await.expect("welcome").expect("welcome");
    let boot_time = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - 3_600_000);
    let report = hostile_report(boot_time);
    session
        .tx
        .send(v1::AgentMessage {
            msg: Some(v1::agent_message::Msg::Report(report.clone().into())),
        })
        .await
        .expect("queue report");
    server
        .wait_node("cmp1", "holding the hostile report", |d| {
            d.report.as_ref().is_some_and(|r| r.containers().len() == 2)
        })
        .await;

    // A table, byte for byte: one row per container, the forged row and
    // every escape shown as text.
    let out = cli(&server, &pki, &["containers", "list"]).await;
    assert_eq!(
        inert(&out),
        concat!(
            "NODE  NAME                             STATE    HEALTH     RESTARTS  SINCE  IMAGE\n",
            r"cmp1  \x1b[2Jclear                     running  unhealthy  0         -      kolla/mariadb\u{202e}gpj.exe",
            "\n",
            r"cmp1  nova_api\ncmp9  forged  running  running  healthy    0         -      \x1b]0;pwned\x07kolla/nova-api:2024.1",
            "\n",
            "2 containers\n",
        )
    );

    // The detail view, byte for byte but for the clock.
    let out = cli(&server, &pki, &["nodes", "show", "cmp1"]).await;
    let text = inert(&out);
    let expected = format!(
        concat!(
            "Node:        cmp1\n",
            "Role:        compute\n",
            "State:       online\n",
            r"Labels:      az=nova\x1b[8m",
            "\n",
            "First seen: <clock>\n",
            "Last seen: <clock>\n",
            r"Agent:       1.0\u{{9b}}",
            "\n",
            "Cert: <clock>\n",
            "Report: <clock>\n",
            r"Hostname:    cmp1\r\nRole:        admin",
            "\n",
            r"OS:          Debian \x1b]0;owned\x07GNU/Linux",
            "\n",
            r"Kernel:      6.1.0-28\x7f\u{{2066}}amd64 (x86_64)",
            "\n",
            "Boot:        {boot} (id raw-boot)\n",
            r"Reboot:      required; kernel: new kernel\n\x1b[2J",
            "\n",
            "\n",
            r"Containers (Docker\u{{85}}24):",
            "\n",
            "  NAME                             STATE    HEALTH     RESTARTS  SINCE  IMAGE\n",
            // In the order the agent reported them.
            r"  nova_api\ncmp9  forged  running  running  healthy    0         -      \x1b]0;pwned\x07kolla/nova-api:2024.1",
            "\n",
            r"  \x1b[2Jclear                     running  unhealthy  0         -      kolla/mariadb\u{{202e}}gpj.exe",
            "\n",
            r"  \x1b[2Jclear unhealthy (3 failed checks): curl: (7) refused\n\x1b[31mred\u{{9b}}2J\u{{202e}}txt",
            "\n",
        ),
        boot = boot_time
    );
    assert_eq!(
        without_clock(&text, &["First seen:", "Last seen:", "Cert:", "Report:"]),
        expected
    );

    // The fleet at a glance, byte for byte.
    let out = cli(&server, &pki, &["fleet", "status"]).await;
    assert_eq!(
        inert(&out),
        concat!(
            "Nodes:       1 total, 1 online, 0 offline\n",
            "Offline:     none\n",
            "Reboot:      cmp1\n",
            "Engine down: none\n",
            "Updates:     0 pending, 0 security\n",
            "Containers:  2 total, 1 unhealthy, 0 down\n",
            "  NODE  NAME          STATE    HEALTH     RESTARTS  SINCE  IMAGE\n",
            r"  cmp1  \x1b[2Jclear  running  unhealthy  0         -      kolla/mariadb\u{202e}gpj.exe",
            "\n",
            "Certificates: none expire within 14 days\n",
            "Filesystems above 90%: 0\n",
        )
    );

    // The node table: one row for the one node, the OS and kernel escaped.
    let out = cli(&server, &pki, &["nodes", "list"]).await;
    let text = inert(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "header, one node, totals:\n{text}");
    assert!(
        lines[1].starts_with("cmp1  compute  online")
            && lines[1].ends_with(r"  Debian \x1b]0;owned\x07GNU/Linux  6.1.0-28\x7f\u{2066}amd64"),
        "{text}"
    );
    assert_eq!(lines[2], "1 nodes, 1 online, 0 offline");

    // Scripts get the exact strings back.
    let out = cli(&server, &pki, &["containers", "list", "--json"]).await;
    let containers: Vec<NodeContainer> = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c.container.name.as_str())
        .collect();
    assert_eq!(names, [CLEAR, FORGED_ROW]);
    assert_eq!(containers[0].container.image, RLO_IMAGE);
    assert_eq!(containers[1].container.image, TITLE_IMAGE);
    assert_eq!(
        containers[1].container.labels,
        BTreeMap::from([(CLIPBOARD_LABEL.to_owned(), CLIPBOARD_LABEL.to_owned())])
    );
    let out = cli(&server, &pki, &["nodes", "show", "cmp1", "--json"]).await;
    let detail: NodeDetail = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(detail.node.labels["az"], LABEL);
    assert_eq!(detail.node.agent_version, AGENT_VERSION);
    let stored = detail.report.expect("report");
    assert_eq!(stored.host, report.host);
    assert_eq!(stored.containers, report.containers);
    assert_eq!(stored.reboot, report.reboot);
    let out = cli(&server, &pki, &["nodes", "list", "--json"]).await;
    let nodes: Vec<Node> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (nodes[0].os_pretty_name.as_str(), nodes[0].kernel.as_str()),
        (OS, KERNEL)
    );
    drop(session);
}

#[tokio::test]
async fn an_actions_hostile_output_is_escaped_in_the_campaign_audit() {
    init();
    let fleet = Fleet::start(&[(Role::Compute, 1)]).await;
    let node = fleet.node("cmp01");
    node.fail_patch_saying("E: broken\x1b]0;pwned\x07\n\x1b[2J\u{202e}do\rne\n");
    let c = fleet
        .start_campaign("name = \"hostile\"\n[select]\nroles = [\"compute\"]\n")
        .await;
    let id = c.campaign.id.clone();
    fleet
        .wait_for(&id, "the node failed", Duration::from_secs(15), |v| {
            v.nodes.iter().any(|n| n.step == Step::Failed)
        })
        .await;
    let out = cli(&fleet.server, &fleet.pki, &["campaign", "audit", &id]).await;
    let text = inert(&out);
    for line in [
        r"    | E: broken\x1b]0;pwned\x07",
        r"    | \x1b[2J\u{202e}do\rne",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    let out = cli(
        &fleet.server,
        &fleet.pki,
        &["campaign", "audit", &id, "--json"],
    )
    .await;
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        entries
            .as_array()
            .expect("an array")
            .iter()
            .any(|e| e["output_tail"]
                .as_str()
                .is_some_and(|t| t.contains("E: broken\x1b]0;pwned\x07\n\x1b[2J\u{202e}do\rne\n"))),
        "{entries:#}"
    );
    fleet.stop().await;
}
