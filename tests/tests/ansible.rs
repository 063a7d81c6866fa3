//! Installing a fleet as operators do: the real ansible-playbook (PyPI
//! `ansible`, the community.docker connection) installs the .deb packages
//! built by scripts/package.sh on Debian bookworm nodes running systemd as
//! PID 1 in containers (scripts/build-node-image.sh; no registry), on a
//! Docker network made by the test. The agent role re-issues a node's
//! certificate when it has expired, and leaves a valid one alone.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rollcall_proto::model::{Node, NodeDetail, Role};
use rollcall_tests::nodes::{self, NodeLab, docker, text, workspace};
use rollcall_tests::{TempDir, in_ci};

/// The inventory: (name, kolla group, expected rollcall role).
const NODES: &[(&str, &str, Role)] = &[
    ("ctl1", "control", Role::Controller),
    ("cmp1", "compute", Role::Compute),
    ("cmp2", "compute", Role::Compute),
    ("sto1", "storage", Role::Storage),
];
/// The server runs on the first controller, as in the inventory example:
/// its PKI and the agent's certificate share /etc/rollcall.
const SERVER: &str = "ctl1";

fn ok(out: &Output) -> bool {
    out.status.success()
}

/// Everything the suite needs, or a loud skip outside CI (a failure in CI).
fn ready() -> bool {
    let ws = workspace();
    let mut missing = Vec::new();
    if !nodes::docker_available() {
        missing.push("a Docker engine".to_owned());
    } else if !nodes::node_image_available() {
        missing.push(format!(
            "image {} (scripts/build-node-image.sh)",
            nodes::NODE_IMAGE
        ));
    }
    if !ws.join(".venv/bin/ansible-playbook").exists() {
        missing.push("ansible-playbook in .venv (scripts/test.sh installs it)".into());
    }
    let debs = std::fs::read_dir(ws.join("target/debian"))
        .map(|d| d.count())
        .unwrap_or(0);
    if debs < 2 {
        missing.push("target/debian/*.deb (scripts/package.sh)".into());
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !in_ci(),
        "CI is set but the Ansible suite cannot run; missing: {}",
        missing.join(", ")
    );
    eprintln!("SKIPPED: missing {}", missing.join(", "));
    false
}

/// The node containers (removed however the test ends) and the
/// inventory's directory.
struct Lab {
    lab: NodeLab,
    dir: TempDir,
}

impl Lab {
    fn container(&self, name: &str) -> String {
        self.lab.container(name)
    }

    fn start() -> Self {
        let mut lab = NodeLab::new("ansible");
        for name in NODES.iter().map(|n| n.0) {
            // The nodes share this machine's engine: each agent sees real containers.
            lab.start(name, &["-v", "/var/run/docker.sock:/var/run/docker.sock"]);
        }
        for name in NODES.iter().map(|n| n.0) {
            lab.wait_systemd(name);
        }
        Lab {
            lab,
            dir: TempDir::new("ansible"),
        }
    }

    fn inventory(&self) -> PathBuf {
        let mut inv = format!(
            "[rollcall_server]\n{SERVER} ansible_host={}\n",
            self.container(SERVER)
        );
        for group in ["control", "compute", "storage"] {
            inv.push_str(&format!("\n[{group}]\n"));
            for (name, _, _) in NODES.iter().filter(|n| n.1 == group) {
                inv.push_str(&format!("{name} ansible_host={}\n", self.container(name)));
            }
        }
        inv.push_str(&format!(
            "\n[all:vars]\nansible_connection=community.docker.docker\nansible_python_interpreter=/usr/bin/python3\n\
             rollcall_server_url=https://{SERVER}:7443\nrollcall_server_sans=[\"{SERVER}\"]\n\
             rollcall_package_dir={}\n",
            workspace().join("target/debian").display()
        ));
        let path = self.dir.path().join("inventory.ini");
        std::fs::write(&path, inv).expect("write inventory");
        path
    }

    fn playbook(&self, extra: &[&str]) -> Output {
        let ws = workspace();
        Command::new(ws.join(".venv/bin/ansible-playbook"))
            .arg("-i")
            .arg(self.inventory())
            .arg(ws.join("ansible/site.yml"))
            .args(extra)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_STDOUT_CALLBACK", "default")
            .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("tmp"))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    ws.join(".venv/bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .expect("run ansible-playbook")
    }

    /// `rollcall-server` CLI on the server node, as its operator "ansible".
    fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "exec",
            "-e",
            "ROLLCALL_SERVER=https://localhost:7443",
            "-e",
            "ROLLCALL_CA=/etc/rollcall/pki/ca.crt",
            "-e",
            "ROLLCALL_CERT=/etc/rollcall/pki/operators/ansible.crt",
            "-e",
            "ROLLCALL_KEY=/etc/rollcall/pki/operators/ansible.key",
        ];
        let server = self.container(SERVER);
        all.push(&server);
        all.push("rollcall-server");
        all.extend_from_slice(args);
        docker(&all)
    }

    fn nodes(&self) -> Vec<Node> {
        let out = self.cli(&["nodes", "list", "--json"]);
        if !ok(&out) {
            return Vec::new();
        }
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }
}

/// Waits up to a minute for the server's node list to satisfy `check`.
fn wait_for(lab: &Lab, what: &str, check: impl Fn(&[Node]) -> bool) {
    let started = Instant::now();
    while !check(&lab.nodes()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Replaces `node`'s agent certificate and key with a pair the lab's CA
/// signed a month ago for one day: expired, as on a node that was offline
/// longer than its certificate's life.
fn expire_certificate(lab: &Lab, node: &str) {
    let pki = TempDir::new("ansible-ca");
    for (file, mode) in [("ca.crt", 0o644), ("ca.key", 0o600)] {
        let pem = lab.lab.sh(SERVER, &format!("cat /etc/rollcall/pki/{file}"));
        let path = pki.path().join(file);
        std::fs::write(&path, pem).expect("write");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
    }
    let ca = rollcall_server::pki::Ca::load(pki.path()).expect("the lab's CA");
    let who = rollcall_proto::identity::Identity {
        kind: rollcall_proto::identity::Kind::Agent,
        name: node.to_owned(),
        role: None,
    };
    let month_ago = time::OffsetDateTime::now_utc() - Duration::from_secs(30 * 86_400);
    let issued = ca
        .issue_client_valid(&who, month_ago, Duration::from_secs(86_400))
        .expect("an expired certificate");
    let dir = "/etc/rollcall/agent";
    lab.lab.write(
        node,
        &format!("{dir}/agent.key"),
        "600",
        "root",
        issued.key_pem.as_bytes(),
    );
    lab.lab.write(
        node,
        &format!("{dir}/agent.crt"),
        "644",
        "root",
        issued.cert_pem.as_bytes(),
    );
}

/// "changed=N" of every host in the PLAY RECAP.
fn recap_changed(out: &str) -> Vec<(String, u32)> {
    let recap = out.split("PLAY RECAP").nth(1).unwrap_or("");
    recap
        .lines()
        .filter_map(|l| {
            let host = l.split_whitespace().next()?;
            let changed = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("changed="))?
                .parse()
                .ok()?;
            Some((host.to_owned(), changed))
        })
        .collect()
}

#[test]
fn ansible_installs_the_fleet_idempotently_and_removes_a_node_cleanly() {
    if !ready() {
        return;
    }
    let lab = Lab::start();

    let first = lab.playbook(&[]);
    assert!(ok(&first), "first run failed:\n{}", text(&first));
    let changed = recap_changed(&text(&first));
    assert_eq!(changed.len(), NODES.len(), "{}", text(&first));
    assert!(
        changed.iter().all(|(_, n)| *n > 0),
        "the first run installs everywhere: {changed:?}"
    );

    // Every node online with the role its kolla group gives it, reporting
    // the containers of its engine (this machine's, shared).
    let started = Instant::now();
    let nodes = loop {
        let nodes = lab.nodes();
        if nodes.len() == NODES.len() && nodes.iter().all(|n| n.online) {
            break nodes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nodes not all online: {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for (name, _, role) in NODES {
        let node = nodes.iter().find(|n| n.name == *name).expect("node listed");
        assert_eq!(node.role, *role, "{name}");
        let out = lab.cli(&["nodes", "show", name, "--json"]);
        assert!(ok(&out), "{}", text(&out));
        let detail: NodeDetail = serde_json::from_slice(&out.stdout).expect("nodes show --json");
        let containers = detail
            .report
            .and_then(|r| r.containers)
            .expect("containers section");
        assert!(containers.available, "{name}: {}", containers.error);
        let own = lab.container(name);
        assert!(
            containers.containers.iter().any(|c| c.name == own),
            "{name} does not list its own container {own}"
        );
    }
    // Keys are private on every node.
    for (name, _, _) in NODES {
        let out = docker(&[
            "exec",
            &lab.container(name),
            "stat",
            "-c",
            "%a %U",
            "/etc/rollcall/agent/agent.key",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "600 root",
            "{name}"
        );
    }

    // A second run changes nothing, and check mode agrees.
    let second = lab.playbook(&[]);
    assert!(ok(&second), "second run failed:\n{}", text(&second));
    let changed = recap_changed(&text(&second));
    assert!(
        changed.iter().all(|(_, n)| *n == 0),
        "second run changed something: {changed:?}\n{}",
        text(&second)
    );
    let check = lab.playbook(&["--check"]);
    assert!(ok(&check), "check mode failed:\n{}", text(&check));
    assert!(
        recap_changed(&text(&check)).iter().all(|(_, n)| *n == 0),
        "{}",
        text(&check)
    );

    // A node offline longer than its certificate's life: cmp2's certificate
    // expired (one the lab's CA signed a month ago, valid a day) and its
    // agent restarted, so it is refused. The next run re-issues cmp2's
    // certificate and only cmp2's: cmp1's valid one is left alone.
    expire_certificate(&lab, "cmp2");
    lab.lab.sh("cmp2", "systemctl restart rollcall-agent");
    wait_for(&lab, "cmp2 offline with its expired certificate", |n| {
        n.iter().any(|n| n.name == "cmp2" && !n.online)
    });
    let cmp1_cert = lab
        .lab
        .sh("cmp1", "sha256sum /etc/rollcall/agent/agent.crt");
    let reissue = lab.playbook(&[]);
    assert!(ok(&reissue), "re-issue run failed:\n{}", text(&reissue));
    let changed = recap_changed(&text(&reissue));
    for (host, n) in &changed {
        if host == "cmp2" {
            assert!(
                *n > 0,
                "cmp2's expired certificate was not re-issued: {changed:?}"
            );
        } else {
            assert_eq!(
                *n, 0,
                "{host} changed although its certificate is valid: {changed:?}"
            );
        }
    }
    assert_eq!(
        lab.lab
            .sh("cmp1", "sha256sum /etc/rollcall/agent/agent.crt"),
        cmp1_cert,
        "cmp1's valid certificate was replaced"
    );
    let status: serde_json::Value = serde_json::from_str(&lab.lab.sh(
        "cmp2",
        "rollcall-agent cert-status --json --cert /etc/rollcall/agent/agent.crt",
    ))
    .expect("cert-status --json");
    assert_eq!(status["usable"], true, "{status}");
    assert!(
        status["expires_in_secs"]
            .as_i64()
            .is_some_and(|s| s > 7 * 86_400),
        "{status}"
    );
    wait_for(&lab, "cmp2 back online with its new certificate", |n| {
        n.iter().any(|n| n.name == "cmp2" && n.online)
    });

    // state: absent removes one node cleanly; the server shows it offline.
    let removed = lab.playbook(&["--limit", "sto1", "-e", "rollcall_agent_state=absent"]);
    assert!(ok(&removed), "removal failed:\n{}", text(&removed));
    let sto1 = lab.container("sto1");
    assert!(
        !ok(&docker(&["exec", &sto1, "dpkg", "-s", "rollcall-agent"])),
        "package still installed"
    );
    assert!(
        !ok(&docker(&[
            "exec",
            &sto1,
            "test",
            "-e",
            "/etc/rollcall/agent"
        ])),
        "/etc/rollcall/agent still there"
    );
    let started = Instant::now();
    while lab.nodes().iter().any(|n| n.name == "sto1" && n.online) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sto1 still online after removal"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn ansible_lint_is_clean() {
    if !ready() {
        return;
    }
    let ws = workspace();
    let lint = ws.join(".venv/bin/ansible-lint");
    assert!(lint.exists() || !in_ci(), "ansible-lint missing in .venv");
    if !lint.exists() {
        eprintln!("SKIPPED: ansible-lint not installed");
        return;
    }
    let out = Command::new(lint)
        .current_dir(ws.join("ansible"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                ws.join(".venv/bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("ANSIBLE_NOCOLOR", "1")
        .arg("--offline")
        .arg("site.yml")
        .arg("roles")
        .output()
        .expect("run ansible-lint");
    assert!(ok(&out), "ansible-lint:\n{}", text(&out));
}

#[test]
fn packages_hold_the_expected_files() {
    let ws = workspace();
    let find = |dir: &str, prefix: &str| {
        std::fs::read_dir(ws.join(dir)).ok().and_then(|d| {
            d.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
        })
    };
    let (Some(agent_deb), Some(agent_rpm), Some(server_rpm)) = (
        find("target/debian", "rollcall-agent_"),
        find("target/generate-rpm", "rollcall-agent-"),
        find("target/generate-rpm", "rollcall-server-"),
    ) else {
        assert!(!in_ci(), "packages missing: scripts/package.sh builds them");
        eprintln!("SKIPPED: packages not built (scripts/package.sh)");
        return;
    };
    let deb = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&agent_deb)
        .output()
        .expect("dpkg-deb");
    let listing = text(&deb);
    for file in [
        "./usr/bin/rollcall-agent",
        "./etc/rollcall/agent.toml",
        "rollcall-agent.service",
        "./usr/share/rollcall/hooks/log-hook.sh",
        "./usr/share/rollcall/hooks/nova-compute-drain.sh",
        "./usr/share/rollcall/hooks/ceph-noout-unset.sh",
        "./usr/share/rollcall/gates/galera-synced",
        "./usr/share/rollcall/gates/rabbitmq-healthy",
        "./usr/share/rollcall/gates/ceph-healthy",
        "./usr/share/rollcall/gates/nova-compute-up",
    ] {
        assert!(
            listing.contains(file),
            "{file} missing from {}:\n{listing}",
            agent_deb.display()
        );
    }
    let conffiles = Command::new("dpkg-deb")
        .args(["-I"])
        .arg(&agent_deb)
        .arg("conffiles")
        .output()
        .expect("dpkg-deb");
    assert!(
        text(&conffiles).contains("/etc/rollcall/agent.toml"),
        "agent.toml is a conffile"
    );
    if Command::new("rpm").arg("--version").output().is_err() {
        assert!(!in_ci(), "rpm (Debian's package) missing");
        eprintln!("SKIPPED: no rpm tool");
        return;
    }
    for (rpm, files) in [
        (
            &agent_rpm,
            &[
                "/usr/bin/rollcall-agent",
                "/etc/rollcall/agent.toml",
                "/usr/lib/systemd/system/rollcall-agent.service",
            ][..],
        ),
        (
            &server_rpm,
            &[
                "/usr/bin/rollcall-server",
                "/etc/rollcall/server.toml",
                "/usr/lib/systemd/system/rollcall-server.service",
                "/usr/share/rollcall/prometheus/rollcall.rules.yml",
            ][..],
        ),
    ] {
        let out = Command::new("rpm")
            .args(["-qpl"])
            .arg(rpm)
            .output()
            .expect("rpm -qpl");
        let listing = text(&out);
        for file in files {
            assert!(
                listing.lines().any(|l| l == *file),
                "{file} missing from {}:\n{listing}",
                rpm.display()
            );
        }
        let config = text(
            &Command::new("rpm")
                .args(["-qpc"])
                .arg(rpm)
                .output()
                .expect("rpm -qpc"),
        );
        assert!(
            config.contains("/etc/rollcall/"),
            "config file not marked %config in {}: {config}",
            rpm.display()
        );
    }
}
