//! The binaries as operators and scripts run them: exit codes, one-line
//! errors, `--json` output.

use std::process::{Command, Output};

use rollcall_proto::model::{Node, NodeDetail, Report, Role};
use rollcall_tests::{Pki, TempDir, TestAgent, TestServer, bin, init};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run binary")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stderr: {}",
        stderr(out)
    );
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{err}"
    );
}

#[tokio::test]
async fn nodes_list_and_show_print_json_for_scripts() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let agent = TestAgent::start(&server, &pki, "cmp1", Role::Compute);
    server.wait_online("cmp1").await;
    let op = &server.operator;
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(bin("rollcall-server"));
        cmd.args(args)
            .env("ROLLCALL_SERVER", server.url())
            .env("ROLLCALL_CA", pki.ca_cert())
            .env("ROLLCALL_CERT", &op.cert)
            .env("ROLLCALL_KEY", &op.key);
        cmd
    };

    let out = tokio::task::spawn_blocking({
        let mut cmd = cli(&["nodes", "list", "--json"]);
        move || run(&mut cmd)
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    let nodes: Vec<Node> =
        serde_json::from_slice(&out.stdout).expect("nodes list --json is a JSON array of nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (nodes[0].name.as_str(), nodes[0].role, nodes[0].online),
        ("cmp1", Role::Compute, true)
    );

    let out = tokio::task::spawn_blocking({
        let mut cmd = cli(&["nodes", "show", "cmp1", "--json"]);
        move || run(&mut cmd)
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    let detail: NodeDetail = serde_json::from_slice(&out.stdout).expect("nodes show --json");
    assert!(
        detail
            .report
            .is_some_and(|r| r.metrics.is_some_and(|m| m.memory_total_bytes > 0))
    );

    let out = tokio::task::spawn_blocking({
        let mut cmd = cli(&["nodes", "list"]);
        move || run(&mut cmd)
    })
    .await
    .expect("join");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("NAME") && table.contains("cmp1") && table.contains("1 nodes, 1 online"),
        "{table}"
    );

    let out = tokio::task::spawn_blocking({
        let mut cmd = cli(&["nodes", "show", "nope"]);
        move || run(&mut cmd)
    })
    .await
    .expect("join");
    assert_one_line_error(&out, 1, "not found");
    agent.stop().await;
}

#[test]
fn a_malformed_server_config_exits_2_with_one_line() {
    let dir = TempDir::new("badcfg");
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\n[agents]\nreport_interval = 5\n",
    )
    .expect("write");
    let out = run(Command::new(bin("rollcall-server"))
        .args(["serve", "--config"])
        .arg(&cfg));
    assert_one_line_error(&out, 2, "report_interval");

    std::fs::write(&cfg, "listen = 7443\n").expect("write");
    let out = run(Command::new(bin("rollcall-server"))
        .args(["serve", "--config"])
        .arg(&cfg));
    assert_one_line_error(&out, 2, "listen");

    std::fs::write(&cfg, "[agents]\nreport_interval_secs = 0\n").expect("write");
    let out = run(Command::new(bin("rollcall-server"))
        .args(["serve", "--config"])
        .arg(&cfg));
    assert_one_line_error(&out, 2, "report_interval_secs");

    let out = run(Command::new(bin("rollcall-server")).args([
        "serve",
        "--config",
        "/nonexistent/server.toml",
    ]));
    assert_one_line_error(&out, 2, "/nonexistent/server.toml");
}

#[test]
fn a_malformed_agent_config_exits_2_with_one_line() {
    let dir = TempDir::new("badagent");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "role = \"kitchen\"\n").expect("write");
    let out = run(Command::new(bin("rollcall-agent"))
        .args(["run", "--config"])
        .arg(&cfg));
    assert_one_line_error(&out, 2, "kitchen");

    std::fs::write(
        &cfg,
        "role = \"compute\"\n[tls]\nca = \"/nonexistent/ca.crt\"\n",
    )
    .expect("write");
    let out = run(Command::new(bin("rollcall-agent"))
        .args(["run", "--config"])
        .arg(&cfg));
    assert_one_line_error(&out, 2, "/nonexistent/ca.crt");
}

/// A URL where nothing listens: a replica that is down.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    format!("https://127.0.0.1:{port}")
}

#[tokio::test]
async fn with_several_servers_the_cli_and_the_agent_go_on_to_one_that_answers() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let down = dead_url();
    // The agent's list starts with a server that is down.
    let agent = TestAgent::start_listed(
        &[down.clone(), server.url()],
        &pki,
        "cmp1",
        Role::Compute,
        "boot-cmp1",
        |_| {
            rollcall_agent::collect::Sources::host_only(
                rollcall_agent::collect::SystemCollector::new(Default::default()),
            )
        },
        None,
    );
    server.wait_online("cmp1").await;
    let op = &server.operator;
    let cli = |servers: &str, args: &[&str]| {
        let mut cmd = Command::new(bin("rollcall-server"));
        cmd.args(args)
            .env("ROLLCALL_SERVER", servers)
            .env("ROLLCALL_CA", pki.ca_cert())
            .env("ROLLCALL_CERT", &op.cert)
            .env("ROLLCALL_KEY", &op.key);
        cmd
    };
    let blocking = |mut cmd: Command| async move {
        tokio::task::spawn_blocking(move || run(&mut cmd))
            .await
            .expect("join")
    };
    // Comma-separated in ROLLCALL_SERVER: the first is down, the second answers.
    let out = blocking(cli(
        &format!("{down},{}", server.url()),
        &["nodes", "list", "--json"],
    ))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let nodes: Vec<Node> = serde_json::from_slice(&out.stdout).expect("JSON nodes");
    assert_eq!(nodes.len(), 1);
    // --server repeated overrides the variable; none answers: one line
    // naming each, exit 1.
    let other = dead_url();
    let mut cmd = cli(&server.url(), &["nodes", "list"]);
    cmd.args(["--server", &down, "--server", &other]);
    let out = blocking(cmd).await;
    assert_one_line_error(
        &out,
        1,
        &format!("no rollcall-server answered as the leader: {down} cannot be reached ("),
    );
    assert!(
        stderr(&out).contains(&format!(" | {other} cannot be reached (")),
        "{}",
        stderr(&out)
    );
    // A list that names a server twice is a usage error, before any connection.
    let out = blocking(cli(
        &format!("{},{}/", server.url(), server.url()),
        &["nodes", "list"],
    ))
    .await;
    assert_one_line_error(&out, 2, "is given twice");
    agent.stop().await;
}

#[test]
fn an_agent_refuses_a_server_list_with_a_bad_entry() {
    let pki = Pki::new();
    let agent = pki.agent("cmp1");
    let out = run(Command::new(bin("rollcall-agent"))
        .args([
            "run",
            "--role",
            "compute",
            "--server",
            "https://localhost:1,http://localhost:2",
        ])
        .arg("--ca")
        .arg(pki.ca_cert())
        .arg("--cert")
        .arg(&agent.cert)
        .arg("--key")
        .arg(&agent.key));
    assert_one_line_error(
        &out,
        2,
        "server: server URL \"http://localhost:2\": rollcall-server speaks only https",
    );
}

#[test]
fn an_agent_refuses_to_start_with_an_operator_certificate() {
    let pki = Pki::new();
    let op = pki.operator("alice");
    let out = run(Command::new(bin("rollcall-agent"))
        .args([
            "run",
            "--role",
            "compute",
            "--server",
            "https://localhost:1",
        ])
        .arg("--ca")
        .arg(pki.ca_cert())
        .arg("--cert")
        .arg(&op.cert)
        .arg("--key")
        .arg(&op.key));
    assert_one_line_error(&out, 2, "needs an agent certificate");
}

#[test]
fn certs_init_refuses_to_overwrite_a_ca_and_changes_nothing() {
    let dir = TempDir::new("certs");
    let pki = dir.path().join("pki");
    let out = run(Command::new(bin("rollcall-server"))
        .args(["certs", "init", "--pki"])
        .arg(&pki)
        .args(["--san", "rollcall.example"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::read(pki.join("ca.key")).expect("ca.key");
    let out = run(Command::new(bin("rollcall-server"))
        .args(["certs", "init", "--pki"])
        .arg(&pki));
    assert_one_line_error(&out, 2, "already exists");
    assert_eq!(std::fs::read(pki.join("ca.key")).expect("ca.key"), before);

    let out = run(Command::new(bin("rollcall-server"))
        .args(["certs", "issue", "--pki"])
        .arg(&pki)
        .args(["--agent", "bad name"]));
    assert_one_line_error(&out, 2, "invalid name");
    let out = run(Command::new(bin("rollcall-server"))
        .args(["certs", "issue", "--pki"])
        .arg(&pki));
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --agent/--operator is a usage error"
    );
}

#[test]
fn agent_once_prints_one_json_report_without_a_server() {
    init();
    let out = run(Command::new(bin("rollcall-agent")).args(["once", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Report = serde_json::from_slice(&out.stdout).expect("once --json prints a report");
    let host = report.host.expect("host facts");
    assert!(!host.hostname.is_empty());
    assert!(host.cpu_count >= 1);
    assert!(report.metrics.expect("metrics").memory_total_bytes > 0);
    assert!(report.full && report.disks.is_some() && report.reboot.is_some());
}

/// Help text is an interface too: a change shows up in review. The
/// snapshots are insta's, in tests/snapshots/: `cargo insta review` (or
/// INSTA_UPDATE=always) accepts a deliberate change; with CI=true a change
/// fails and nothing is written.
#[test]
fn help_texts_match_their_snapshots() {
    let cases: &[(&str, &[&str])] = &[
        ("rollcall-server", &["--help"]),
        ("rollcall-server", &["certs", "init", "--help"]),
        ("rollcall-server", &["certs", "issue", "--help"]),
        ("rollcall-server", &["certs", "revoke", "--help"]),
        ("rollcall-server", &["certs", "crl", "--help"]),
        ("rollcall-server", &["serve", "--help"]),
        ("rollcall-server", &["nodes", "list", "--help"]),
        ("rollcall-server", &["nodes", "show", "--help"]),
        ("rollcall-server", &["nodes", "forget", "--help"]),
        ("rollcall-server", &["audit", "list", "--help"]),
        ("rollcall-server", &["store", "migrate", "--help"]),
        ("rollcall-server", &["fleet", "status", "--help"]),
        ("rollcall-server", &["containers", "list", "--help"]),
        ("rollcall-server", &["campaign", "--help"]),
        ("rollcall-server", &["campaign", "start", "--help"]),
        ("rollcall-server", &["campaign", "watch", "--help"]),
        ("rollcall-server", &["campaign", "resume", "--help"]),
        ("rollcall-agent", &["--help"]),
        ("rollcall-agent", &["run", "--help"]),
        ("rollcall-agent", &["once", "--help"]),
        ("rollcall-agent", &["cert-status", "--help"]),
    ];
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let _bound = settings.bind_to_scope();
    for (binary, args) in cases {
        let out = run(Command::new(bin(binary))
            .args(*args)
            .env_remove("ROLLCALL_SERVER")
            .env_remove("ROLLCALL_CA")
            .env_remove("ROLLCALL_CERT")
            .env_remove("ROLLCALL_KEY"));
        assert!(out.status.success(), "{binary} {args:?}: {}", stderr(&out));
        let name = format!("{binary} {}", args.join(" "))
            .replace(" --help", "")
            .replace(' ', "_");
        insta::assert_snapshot!(name, String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn a_bad_campaign_spec_exits_2_with_one_line_before_asking_the_server() {
    let dir = TempDir::new("spec");
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, "name = \"x\"\nconcurrency = { compute = 0 }\n").expect("write");
    // No server is listening there: the spec is refused before any connection.
    let cli = |args: &[&str]| {
        run(Command::new(bin("rollcall-server"))
            .args(args)
            .env("ROLLCALL_SERVER", "https://localhost:1"))
    };
    let out = cli(&["campaign", "start", "--spec", spec.to_str().expect("utf-8")]);
    assert_one_line_error(&out, 2, "concurrency of compute is zero");
    let out = cli(&["campaign", "plan", "--concurrency", "compute"]);
    assert_one_line_error(&out, 2, "use ROLE=N or ROLE=N%");
    let out = cli(&["campaign", "plan", "--reboot", "sometimes"]);
    assert_one_line_error(&out, 2, "sometimes");
    let out = cli(&["campaign", "plan", "--spec", "/nonexistent/spec.toml"]);
    assert_one_line_error(&out, 2, "/nonexistent/spec.toml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_start_watch_status_and_audit_from_the_cli() {
    init();
    let fleet =
        rollcall_tests::fleet::Fleet::start(&[(Role::Compute, 3), (Role::Controller, 1)]).await;
    let op = fleet.server.operator.clone();
    let (url, ca) = (fleet.server.url(), fleet.pki.ca_cert());
    let cli = move |args: Vec<String>| {
        let mut cmd = Command::new(bin("rollcall-server"));
        cmd.args(args)
            .env("ROLLCALL_SERVER", &url)
            .env("ROLLCALL_CA", &ca)
            .env("ROLLCALL_CERT", &op.cert)
            .env("ROLLCALL_KEY", &op.key);
        tokio::task::spawn_blocking(move || run(&mut cmd))
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let out = cli(args(&[
        "campaign",
        "plan",
        "--role",
        "compute",
        "--concurrency",
        "compute=2",
    ]))
    .await
    .expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("wave   1  compute     cmp01 cmp02"), "{plan}");
    assert!(plan.contains("wave   2  compute     cmp03"), "{plan}");
    let out = cli(args(&["campaign", "plan", "--role", "compute", "--json"]))
        .await
        .expect("join");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan --json");
    assert_eq!(
        plan["waves"][0],
        serde_json::json!({"nodes": ["cmp01"], "role": "compute"}),
        "{plan}"
    );

    let out = cli(args(&[
        "campaign",
        "start",
        "--name",
        "cli",
        "--role",
        "compute",
        "--concurrency",
        "compute=2",
    ]))
    .await
    .expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "start prints the id: {id:?}"
    );

    // A second campaign while one runs is refused, with the reason.
    let out = cli(args(&["campaign", "start", "--role", "compute"]))
        .await
        .expect("join");
    assert_one_line_error(&out, 1, "cancel it (or let it finish)");

    let out = cli(args(&["campaign", "watch", &id])).await.expect("join");
    assert!(
        out.status.success(),
        "watch exits 0 on a completed campaign: {}",
        stderr(&out)
    );
    let watched = String::from_utf8_lossy(&out.stdout);
    assert!(watched.contains("progress: compute 3/3 done"), "{watched}");
    assert!(
        watched.contains("completed: every node finished"),
        "{watched}"
    );

    // --json: one object per line, the snapshot first (no time, no step).
    let out = cli(args(&["campaign", "watch", &id, "--json"]))
        .await
        .expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(
        lines[0],
        serde_json::json!({"at": null, "campaign": id, "ended": true, "kind": "snapshot",
            "message": "", "node": "", "phase": "completed", "step": ""})
    );

    let out = cli(args(&["campaign", "status", &id, "--json"]))
        .await
        .expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(status["campaign"]["phase"], "completed");
    let steps: Vec<&str> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["step"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(steps, ["done", "done", "done"]);

    let out = cli(args(&["campaign", "audit", &id])).await.expect("join");
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(
        audit.contains("operator:test-operator") && audit.contains("[exit 0]"),
        "{audit}"
    );
    assert!(audit.contains("| FakePatch: 1 upgraded"), "{audit}");

    let out = cli(args(&["campaign", "list", "--json"]))
        .await
        .expect("join");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json");
    assert_eq!(list[0]["campaign"]["id"], id.as_str());
    let out = cli(args(&["campaign", "status", "nope"]))
        .await
        .expect("join");
    assert_one_line_error(&out, 1, "no campaign with id");
    fleet.stop().await;
}
