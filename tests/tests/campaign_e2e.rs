//! A rolling patch campaign end to end, on four Debian bookworm node
//! containers running systemd as PID 1 (scripts/build-node-image.sh): the
//! .deb packages of scripts/package.sh installed with dpkg, the server on
//! the controller ctl1, an agent on every node, and the operator's
//! `rollcall-server campaign ...` CLI run on ctl1 as an operator would.
//!
//! What is real: the patch is the agent's shipped default, a real
//! `apt-get upgrade` from the image's local repository, whose newer
//! `rollcall-demo-kernel` asks for a reboot the way a kernel package does;
//! the reboot is the agent's shipped default, `systemctl reboot`, which ends
//! the container's systemd, and the engine starts the container again
//! (`--restart always`): /run is a tmpfs, so reboot-required is gone, and
//! rollcall-boot-id.service writes a new boot id. ctl1's reboot restarts the
//! server in the middle of the campaign, which resumes from its SQLite file.
//! Each node's "kolla service" is a health-checked container beside it on
//! this machine's engine, which the node's agent reads through the mounted
//! socket and its `containers.labels` filter: the health gates judge it.
//! What is fake, and named so: the nova drain and undrain CLI calls
//! (`fake-nova-recording`: there is no OpenStack here).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rollcall_proto::model::{Node, Role};
use rollcall_proto::timestamp::Timestamp;
use rollcall_server::campaign::lifecycle::Step;
use rollcall_server::campaign::record::Phase;
use rollcall_server::campaign::record::{AuditEntry, NodeRun};
use rollcall_tests::fleet::max_unavailable;
use rollcall_tests::nodes::{self, NodeLab, text};
use rollcall_tests::ops::{self, Status};
use rollcall_tests::{TempDir, in_ci};
use serde_json::Value;

/// The cloud: (node, role). The server runs on the controller.
const NODES: &[(&str, Role)] = &[
    ("ctl1", Role::Controller),
    ("cmp1", Role::Compute),
    ("cmp2", Role::Compute),
    ("sto1", Role::Storage),
];
const SERVER: &str = "ctl1";
const OPERATOR: &str = "e2e-operator";
/// Where the recording fake of the nova CLI writes one line per call.
const HOOK_LOG: &str = "/var/log/fake-hooks.log";
const SPEC_PATH: &str = "/root/campaign.toml";
/// The whole campaign, ctl1's reboot and the server's restart included.
const CAMPAIGN_DEADLINE: Duration = Duration::from_secs(240);

const SPEC: &str = r#"
name = "e2e-bookworm"
reboot = "if-required"

[concurrency]
compute = 2

[hooks.compute]
drain = "nova-drain"
undrain = "nova-undrain"
run_on = "controller"

# Generous, so a slow machine fails on a real problem rather than on time.
[timeouts]
precheck_secs = 120
drain_secs = 60
patch_secs = 180
reboot_secs = 60
return_secs = 180
postcheck_secs = 120
undrain_secs = 60
"#;

/// A recording fake of the nova CLI calls a drain hook would make.
const FAKE_NOVA: &str = r#"#!/bin/sh
# fake-nova-recording: stands in for the nova CLI (there is no OpenStack in
# this test). Records each call: the hook, then the node it is about.
echo "$*" >> /var/log/fake-hooks.log
"#;

fn agent_toml(role: Role, container: &str) -> String {
    let hooks = if role == Role::Controller {
        "\n[actions.hooks]\n\
         nova-drain = [\"/usr/local/bin/fake-nova-recording\", \"nova-drain\"]\n\
         nova-undrain = [\"/usr/local/bin/fake-nova-recording\", \"nova-undrain\"]\n"
    } else {
        ""
    };
    format!(
        r#"# Written by tests/tests/campaign_e2e.rs.
server = "https://{SERVER}:7443"
role = "{role}"

[reconnect]
# ctl1's reboot restarts the server: come back within seconds, not a minute.
max_backoff_secs = 5

[host]
# A container shares the machine's kernel boot id, which a container restart
# keeps; rollcall-boot-id.service writes one of the container's own at each start.
boot_id_path = "/run/rollcall/boot_id"

[containers]
# This machine's engine socket is mounted into every node, so each agent
# sees every container of the engine; the label filter keeps it to the
# service container the test started for this node (as a real node keeps
# to kolla's containers with labels = ["kolla_version"]).
enabled = true
labels = ["rollcall.test.node={container}"]

[updates]
# The shortest allowed; the first check runs within 30 s of the start.
interval_secs = 60

[actions]
# patch_command and reboot_command: the shipped defaults, a real
# `apt-get upgrade` and `systemctl reboot`.
{hooks}"#
    )
}

/// What the suite needs from the build.
struct Kit {
    agent_deb: PathBuf,
    server_deb: PathBuf,
    /// The host's `rollcall-server`, for the PKI.
    server_bin: PathBuf,
}

/// Everything the suite needs, or a loud skip outside CI (a failure in CI).
/// The stand-in for a node's kolla service (scripts/build-test-images.sh).
const SERVICE_IMAGE: &str = "rollcall-test/busybox:1";

fn ready() -> Option<Kit> {
    let mut missing = Vec::new();
    if !nodes::docker_available() {
        missing.push("a Docker engine".to_owned());
    } else if !nodes::node_image_available() {
        missing.push(format!(
            "image {} (scripts/build-node-image.sh)",
            nodes::NODE_IMAGE
        ));
    } else if !nodes::docker(&["image", "inspect", SERVICE_IMAGE])
        .status
        .success()
    {
        missing.push(format!(
            "image {SERVICE_IMAGE} (scripts/build-test-images.sh)"
        ));
    }
    let agent_deb = nodes::deb("rollcall-agent");
    let server_deb = nodes::deb("rollcall-server");
    if agent_deb.is_none() || server_deb.is_none() {
        missing.push("target/debian/rollcall-{agent,server}_*.deb (scripts/package.sh)".into());
    }
    // Where rollcall_tests::bin looks, without its panic.
    let server_bin = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("rollcall-server")));
    let server_bin = server_bin.filter(|p| p.exists());
    if server_bin.is_none() {
        missing.push("target/debug/rollcall-server (cargo build --workspace --bins)".into());
    }
    match (agent_deb, server_deb, server_bin) {
        (Some(agent_deb), Some(server_deb), Some(server_bin)) if missing.is_empty() => Some(Kit {
            agent_deb,
            server_deb,
            server_bin,
        }),
        _ => {
            assert!(
                !in_ci(),
                "CI is set but the campaign end-to-end suite cannot run; missing: {}",
                missing.join(", ")
            );
            eprintln!("SKIPPED: missing {}", missing.join(", "));
            None
        }
    }
}

/// The four nodes, installed and configured, the server on ctl1.
struct Cloud {
    lab: NodeLab,
    _pki: TempDir,
    t0: Instant,
}

impl Cloud {
    fn start(kit: &Kit) -> Self {
        let t0 = Instant::now();
        let mut lab = NodeLab::new("campaign");
        for (name, _) in NODES {
            // The engine starts a node again when its systemd ends: the reboot.
            lab.start(
                name,
                &[
                    "--restart",
                    "always",
                    "-v",
                    "/var/run/docker.sock:/var/run/docker.sock",
                ],
            );
            lab.start_service(name, SERVICE_IMAGE);
        }
        // The certificates, made on the host as an operator makes them (the
        // CA key stays there).
        let pki = TempDir::new("campaign-e2e-pki");
        let names = NODES.iter().map(|(name, _)| *name);
        nodes::make_pki(&kit.server_bin, pki.path(), SERVER, names, OPERATOR);

        std::thread::scope(|s| {
            for (name, role) in NODES {
                let lab = &lab;
                let pki = pki.path();
                s.spawn(move || {
                    let toml = agent_toml(*role, &lab.container(name));
                    lab.install_agent(name, &kit.agent_deb, pki, &toml);
                });
            }
        });
        lab.install_server(
            SERVER,
            &kit.server_deb,
            pki.path(),
            OPERATOR,
            ops::SERVER_TOML,
        );
        lab.write(
            SERVER,
            "/usr/local/bin/fake-nova-recording",
            "0755",
            "root:root",
            FAKE_NOVA.as_bytes(),
        );
        lab.write(SERVER, SPEC_PATH, "0644", "root:root", SPEC.as_bytes());
        for (name, _) in NODES {
            lab.sh(name, "systemctl enable --now rollcall-agent");
        }
        let cloud = Cloud { lab, _pki: pki, t0 };
        cloud.log("four nodes installed, server and agents started");
        cloud
    }

    fn log(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.t0.elapsed().as_secs_f32());
    }

    /// `rollcall-server ARGS` on ctl1, as the operator.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run docker exec")
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        ops::operator_cli(&self.lab.container(SERVER), OPERATOR, args)
    }

    /// A `--json` command's answer, or why there is none (ctl1 may be
    /// rebooting).
    fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.cli(args);
        if !out.status.success() {
            return Err(text(&out).trim().to_owned());
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn nodes(&self) -> Vec<Node> {
        self.cli_json(&["nodes", "list", "--json"])
            .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
            .unwrap_or_default()
    }

    fn status(&self, id: &str) -> Result<Status, String> {
        Status::from_json(&self.cli_json(&["campaign", "status", id, "--json"])?)
    }

    /// Polls `nodes list` until `check` holds for every node of the cloud.
    fn wait_nodes(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Node) -> bool,
    ) -> Vec<Node> {
        let started = Instant::now();
        loop {
            let nodes = self.nodes();
            let ok = NODES
                .iter()
                .all(|(name, _)| nodes.iter().any(|n| n.name == *name && check(n)));
            if ok {
                self.log(what);
                return nodes;
            }
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}: {nodes:#?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The journals of the server and every agent, for a failure message.
    fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (name, _) in NODES {
            let units = if *name == SERVER {
                "-u rollcall-server -u rollcall-agent"
            } else {
                "-u rollcall-agent"
            };
            let journal = self.lab.exec(
                name,
                &[
                    "sh",
                    "-c",
                    &format!("journalctl --no-pager -o short-precise -n 40 {units}"),
                ],
            );
            out.push_str(&format!("\n--- {name} ---\n{}", text(&journal)));
        }
        out
    }
}

fn role_runs(s: &Status, role: Role) -> impl Iterator<Item = &NodeRun> {
    s.nodes.iter().filter(move |n| n.role == role)
}

#[test]
fn a_campaign_upgrades_reboots_and_brings_back_every_debian_node() {
    let Some(kit) = ready() else { return };
    let cloud = Cloud::start(&kit);

    // Every node online with its role, and its update check has seen the
    // newer package (else the campaign would skip it as up to date).
    let before = cloud.wait_nodes(
        "every node online, one pending update each",
        Duration::from_secs(90),
        |n| n.online && n.pending_updates == 1 && !n.reboot_required && !n.boot_id.is_empty(),
    );
    for (name, role) in NODES {
        let node = before.iter().find(|n| n.name == *name).expect("listed");
        assert_eq!(node.role, *role, "{name}");
        let boot_file = cloud.lab.sh(name, "cat /run/rollcall/boot_id");
        assert_eq!(
            node.boot_id,
            boot_file.trim(),
            "{name} reads its boot id file"
        );
    }
    let boot_before: BTreeMap<String, String> = before
        .iter()
        .map(|n| (n.name.clone(), n.boot_id.clone()))
        .collect();

    // The dry run: compute first, both at once, then storage, then the
    // controller; nobody skipped.
    let plan: Value = cloud
        .cli_json(&["campaign", "plan", "--spec", SPEC_PATH, "--json"])
        .expect("campaign plan");
    let waves: Vec<(String, Vec<String>)> = plan["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| {
            let nodes = w["nodes"].as_array().expect("nodes");
            let mut nodes: Vec<String> = nodes
                .iter()
                .map(|n| n.as_str().expect("name").to_owned())
                .collect();
            nodes.sort();
            (w["role"].as_str().expect("role").to_owned(), nodes)
        })
        .collect();
    let expected = [
        ("compute", vec!["cmp1", "cmp2"]),
        ("storage", vec!["sto1"]),
        ("controller", vec!["ctl1"]),
    ]
    .map(|(r, n)| {
        let nodes: Vec<String> = n.into_iter().map(str::to_owned).collect();
        (r.to_owned(), nodes)
    });
    assert_eq!(waves, expected, "{plan:#}");
    assert_eq!(plan["skipped"], Value::Array(vec![]), "{plan:#}");

    let out = cloud.cli(&["campaign", "start", "--spec", SPEC_PATH]);
    assert!(out.status.success(), "campaign start: {}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    cloud.log(&format!("campaign {id} started"));

    // An operator following it: `campaign watch` streams until ctl1 (and
    // the server with it) reboots, which ends its stream.
    let watch_dir = TempDir::new("campaign-e2e-watch");
    let watch_out = watch_dir.path().join("watch.out");
    let mut watch = {
        let file = std::fs::File::create(&watch_out).expect("watch output file");
        cloud
            .cli_command(&["campaign", "watch", &id])
            .stdout(Stdio::from(file.try_clone().expect("clone")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("run campaign watch")
    };

    // Poll through ctl1's reboot: the server is away for a while, then
    // resumes the campaign from its SQLite file.
    let started = Instant::now();
    let mut last = String::new();
    let mut away = false;
    let done = loop {
        match cloud.status(&id) {
            Ok(s) => {
                let line = s.summary();
                if line != last {
                    cloud.log(&line);
                    last = line;
                }
                away = false;
                let failed = s.nodes.iter().any(|n| n.step == Step::Failed);
                if s.campaign.phase != Phase::Running || failed {
                    break s;
                }
            }
            Err(e) if !away => {
                cloud.log(&format!("status unavailable: {e}"));
                away = true;
            }
            Err(_) => {}
        }
        assert!(
            started.elapsed() < CAMPAIGN_DEADLINE,
            "campaign not ended after {CAMPAIGN_DEADLINE:?}: {last}\n{}",
            cloud.diagnostics()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(
        done.campaign.phase,
        Phase::Completed,
        "{done:#?}\n{}",
        cloud.diagnostics()
    );
    for (name, _) in NODES {
        assert_eq!(
            done.run(name).map(|n| n.step),
            Some(Step::Done),
            "{done:#?}"
        );
    }

    // Roles in order, computes two at a time.
    let last_finish = |r| role_runs(&done, r).filter_map(|n| n.finished_at).max();
    let first_start = |r| role_runs(&done, r).filter_map(|n| n.started_at).min();
    assert!(
        last_finish(Role::Compute) <= first_start(Role::Storage),
        "{done:#?}"
    );
    assert!(
        last_finish(Role::Storage) <= first_start(Role::Controller),
        "{done:#?}"
    );
    assert_eq!(max_unavailable(&done.nodes, Role::Compute), 2, "{done:#?}");
    // ctl1's reboot restarted the server in the middle of the campaign:
    // ctl1's own run began before this boot of ctl1 (and of the server on
    // it) and ended after it, from what the server read back from SQLite.
    let boot = cloud.lab.inspect(SERVER, "{{.State.StartedAt}}");
    let boot = Timestamp::parse_rfc3339(&boot).expect("StartedAt is RFC 3339");
    let run = done
        .nodes
        .iter()
        .find(|n| n.node == SERVER)
        .expect("ctl1 run");
    assert!(
        run.started_at.is_some_and(|t| t < boot) && run.finished_at.is_some_and(|t| t > boot),
        "ctl1 booted at {boot:?}, outside its run: {run:#?}"
    );

    // The watch followed the computes and the storage node to the end
    // before ctl1's reboot cut its stream.
    let watch_deadline = Instant::now() + Duration::from_secs(30);
    while watch.try_wait().expect("watch status").is_none() && Instant::now() < watch_deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let watched = std::fs::read_to_string(&watch_out).unwrap_or_default();
    for expected in [
        format!("campaign {id} (e2e-bookworm) is running"),
        "compute 2/2 done".to_owned(),
        "storage 1/1 done".to_owned(),
    ] {
        assert!(
            watched.contains(&expected),
            "`campaign watch` did not show {expected:?}:\n{watched}"
        );
    }
    // On an ended campaign, watch prints it and exits 0 for "completed".
    let out = cloud.cli(&["campaign", "watch", &id]);
    assert!(out.status.success(), "campaign watch: {}", text(&out));
    assert!(
        text(&out).contains("is completed"),
        "campaign watch: {}",
        text(&out)
    );

    // Every node came back: online under a new boot id, no reboot asked for.
    // (Right after a boot the server's reboot section may still be the
    // agent's unchecked initial one, so the local check below is what
    // proves the flag cleared.)
    let after = cloud.wait_nodes(
        "every node back under a new boot id",
        Duration::from_secs(60),
        |n| {
            n.online
                && !n.reboot_required
                && !n.boot_id.is_empty()
                && n.boot_id != boot_before[&n.name]
        },
    );
    for (name, _) in NODES {
        let node = after.iter().find(|n| n.name == *name).expect("listed");
        let detail = cloud
            .cli_json(&["nodes", "show", name, "--json"])
            .unwrap_or_else(|e| panic!("nodes show {name}: {e}"));
        assert_eq!(detail["node"]["online"], true, "{name}: {detail:#}");
        assert_eq!(
            detail["node"]["reboot_required"], false,
            "{name}: {detail:#}"
        );
        assert_eq!(
            detail["report"]["reboot"]["required"], false,
            "{name}: {detail:#}"
        );
        // Its service container: the only one it reports, running and healthy.
        let containers = detail["report"]["containers"]["containers"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} reports containers: {detail:#}"));
        let seen: Vec<(&str, &str, &str)> = containers
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or(""),
                    c["state"].as_str().unwrap_or(""),
                    c["health"].as_str().unwrap_or(""),
                )
            })
            .collect();
        let service = format!("{}-svc", cloud.lab.container(name));
        assert_eq!(seen, [(service.as_str(), "running", "healthy")], "{name}");
        assert_eq!(
            cloud.lab.inspect(name, "{{.RestartCount}}"),
            "1",
            "{name} rebooted exactly once"
        );
        let boot_file = cloud.lab.sh(name, "cat /run/rollcall/boot_id");
        assert_eq!(node.boot_id, boot_file.trim(), "{name}: the new boot's id");
        let version = cloud
            .lab
            .sh(name, "dpkg-query -W -f '${Version}' rollcall-demo-kernel");
        assert_eq!(version, "1.1", "{name} upgraded");
        // A fresh local look by the agent's own checks: no reboot required,
        // nothing left to upgrade.
        let once = cloud.lab.sh(
            name,
            "rollcall-agent once --json --config /etc/rollcall/agent.toml",
        );
        let once: Value = serde_json::from_str(&once).expect("rollcall-agent once --json");
        let reboot = &once["reboot"];
        assert_eq!(reboot["required"], false, "{name}: {reboot:#}");
        assert!(reboot["checked_at"].is_string(), "{name}: {reboot:#}");
        let updates = &once["updates"];
        assert_eq!(updates["checked"], true, "{name}: {updates:#}");
        assert_eq!(updates["count"], 0, "{name}: {updates:#}");
    }

    // The controller drained and undrained each compute node exactly once,
    // and nothing else.
    let hooks = cloud.lab.sh(SERVER, &format!("cat {HOOK_LOG}"));
    let mut calls: Vec<&str> = hooks.lines().collect();
    calls.sort_unstable();
    assert_eq!(
        calls,
        [
            "nova-drain cmp1",
            "nova-drain cmp2",
            "nova-undrain cmp1",
            "nova-undrain cmp2"
        ],
        "{HOOK_LOG} on {SERVER}"
    );

    // The audit log: who started it, each node's real apt run, the end.
    let audit: Vec<AuditEntry> = cloud
        .cli_json(&["campaign", "audit", &id, "--json"])
        .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
        .expect("campaign audit --json");
    assert_eq!(audit[0].event, "started", "{audit:#?}");
    assert_eq!(audit[0].actor, format!("operator:{OPERATOR}"));
    assert_eq!(
        audit.last().map(|e| e.event.as_str()),
        Some("completed"),
        "{audit:#?}"
    );
    for (name, _) in NODES {
        let patches: Vec<&AuditEntry> = audit
            .iter()
            .filter(|e| e.node == *name && e.detail.starts_with("patch done"))
            .collect();
        assert_eq!(patches.len(), 1, "{name} patched once: {audit:#?}");
        let patch = patches[0];
        assert_eq!(patch.exit_code, Some(0), "{name}: {patch:#?}");
        assert_eq!(patch.detail, "patch done, now reboot", "{name}: {patch:#?}");
        assert!(
            patch.output_tail.contains("rollcall-demo-kernel"),
            "{name}: apt's output names the package: {patch:#?}"
        );
    }
    cloud.log("done");
}
