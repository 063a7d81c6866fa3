//! Installing a fleet as operators do: the real ansible-playbook (PyPI
//! `ansible`, the community.docker connection) installs the .deb packages
//! built by scripts/package.sh on Debian bookworm nodes running systemd as
//! PID 1 in containers (scripts/build-node-image.sh; no registry), on a
//! Docker network made by the test. The agent role re-issues a node's
//! certificate when it has expired, and leaves a valid one alone. Replicas:
//! two controllers on one real PostgreSQL (a cluster of the test's own on
//! the network's gateway), installed from one inventory.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rollcall_proto::model::{Node, NodeDetail, Role};
use rollcall_proto::timestamp::Timestamp;
use rollcall_tests::nodes::{self, NodeLab, docker, text, workspace};
use rollcall_tests::postgres::{self, CERT_ROLE, Postgres, Reachable};
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

    /// Starts the nodes `names`, each with this machine's engine socket
    /// (each agent sees real containers).
    fn start(tag: &str, names: &[&str]) -> Self {
        let mut lab = NodeLab::new(tag);
        for name in names {
            lab.start(name, &["-v", "/var/run/docker.sock:/var/run/docker.sock"]);
        }
        for name in names {
            lab.wait_systemd(name);
        }
        Lab {
            lab,
            dir: TempDir::new(tag),
        }
    }

    /// `[group]` with `names`, each reached through its container.
    fn group(&self, group: &str, names: &[&str]) -> String {
        let mut text = format!("\n[{group}]\n");
        for name in names {
            text.push_str(&format!("{name} ansible_host={}\n", self.container(name)));
        }
        text
    }

    /// Writes the inventory: `groups`, then `[all:vars]` with the Docker
    /// connection, the packages, and `vars` (`key=value` lines).
    fn write_inventory(&self, groups: &str, vars: &str) {
        let inv = format!(
            "{groups}\n[all:vars]\nansible_connection=community.docker.docker\n\
             ansible_python_interpreter=/usr/bin/python3\nrollcall_package_dir={}\n{vars}",
            workspace().join("target/debian").display()
        );
        std::fs::write(self.inventory(), inv).expect("write inventory");
    }

    fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.ini")
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

    /// `rollcall-server` CLI on node `on` against its own server
    /// (`https://localhost:7443`), as the operator "ansible".
    fn cli_on(&self, on: &str, args: &[&str]) -> Output {
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
        let server = self.container(on);
        all.push(&server);
        all.push("rollcall-server");
        all.extend_from_slice(args);
        docker(&all)
    }

    /// The CLI on the server node.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_on(SERVER, args)
    }

    /// `nodes list --json` through the CLI on node `on`; empty if it fails.
    fn nodes_on(&self, on: &str) -> Vec<Node> {
        let out = self.cli_on(on, &["nodes", "list", "--json"]);
        if !ok(&out) {
            return Vec::new();
        }
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn nodes(&self) -> Vec<Node> {
        self.nodes_on(SERVER)
    }
}

/// The inventory of the fleet test: the server on [`SERVER`], an agent on
/// every node of [`NODES`] in its kolla group.
fn fleet_inventory(lab: &Lab) {
    let mut groups = lab.group("rollcall_server", &[SERVER]);
    for group in ["control", "compute", "storage"] {
        let names: Vec<&str> = NODES.iter().filter(|n| n.1 == group).map(|n| n.0).collect();
        groups.push_str(&lab.group(group, &names));
    }
    lab.write_inventory(
        &groups,
        &format!(
            "rollcall_server_url=https://{SERVER}:7443\nrollcall_server_sans=[\"{SERVER}\"]\n"
        ),
    );
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
    let names: Vec<&str> = NODES.iter().map(|n| n.0).collect();
    let lab = Lab::start("ansible", &names);
    fleet_inventory(&lab);

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

/// The replicas test's controllers: each a rollcall-server replica and an
/// agent node.
const REPLICAS: [&str; 2] = ["ctl1", "ctl2"];
/// A password in the store URL: PostgreSQL does not ask for it (the role
/// logs in with its certificate), and no output of the playbook may show it.
const STORE_PASSWORD: &str = "never-in-the-output-7f3a";

/// The lab network's gateway (this machine, as its containers reach it)
/// and its subnet.
fn gateway_and_subnet(lab: &Lab) -> (IpAddr, String) {
    let out = docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}",
        lab.lab.network(),
    ]);
    assert!(ok(&out), "network inspect: {}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (gateway, subnet) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("gateway and subnet of the lab network: {line:?}"));
    let gateway = gateway
        .parse()
        .unwrap_or_else(|e| panic!("gateway {gateway:?}: {e}"));
    (gateway, subnet.to_owned())
}

/// The lease row: (address of the replica holding it, epoch), if its lease
/// has not ended (by PostgreSQL's clock).
fn lease(pg: &Postgres, db: &str) -> Option<(String, i64)> {
    let row = pg
        .psql(
            &pg.url(db),
            "SELECT address, epoch FROM leader WHERE id = 1 AND expires_at > now();",
        )
        .ok()?;
    let (address, epoch) = row.split_once('|')?;
    Some((address.to_owned(), epoch.parse().ok()?))
}

/// Waits up to 90 s for `what` to return something.
fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// grpcurl from this machine to replica `node`'s own address, as the
/// operator "ansible" with the CA and certificate in `pki`, verifying the
/// server certificate for the replica's name: ListNodes.
fn grpcurl_list_nodes(lab: &Lab, pki: &TempDir, node: &str) -> Output {
    let ip = lab.lab.inspect(
        node,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    Command::new(workspace().join(".venv/bin/grpcurl"))
        .arg("-cacert")
        .arg(pki.path().join("ca.crt"))
        .arg("-cert")
        .arg(pki.path().join("ansible.crt"))
        .arg("-key")
        .arg(pki.path().join("ansible.key"))
        .args(["-servername", node, "-d", "{}"])
        .arg(format!("{ip}:7443"))
        .arg("rollcall.v1.OperatorService/ListNodes")
        .output()
        .expect("run grpcurl")
}

/// Asserts that replica `follower` refuses an operator call with
/// UNAVAILABLE, naming `leader_url`; retried for a server still starting.
fn assert_follower(lab: &Lab, pki: &TempDir, follower: &str, leader_url: &str) {
    let out = wait_until(&format!("{follower} to answer as a follower"), || {
        let out = grpcurl_list_nodes(lab, pki, follower);
        (!text(&out).contains("connection refused")).then_some(out)
    });
    let said = text(&out);
    assert!(!ok(&out), "{follower} answered as a leader: {said}");
    assert!(
        said.contains("Code: Unavailable")
            && said.contains(&format!("the leader is at {leader_url}")),
        "{follower} did not refuse naming {leader_url}: {said}"
    );
}

/// Waits until every replica's agent is online on the leader `leader`,
/// with a report received after `since`.
fn wait_agents_online(lab: &Lab, leader: &str, since: Timestamp) {
    wait_until(
        &format!("every agent online on {leader}, reporting since {since:?}"),
        || {
            let nodes = lab.nodes_on(leader);
            REPLICAS
                .iter()
                .all(|name| {
                    nodes.iter().any(|n| {
                        n.name == *name && n.online && n.last_report_at.is_some_and(|at| at > since)
                    })
                })
                .then_some(())
        },
    );
}

fn assert_unchanged(out: &Output, what: &str) {
    assert!(ok(out), "{what} failed:\n{}", text(out));
    let changed = recap_changed(&text(out));
    assert_eq!(changed.len(), REPLICAS.len(), "{}", text(out));
    assert!(
        changed.iter().all(|(_, n)| *n == 0),
        "{what} changed something: {changed:?}\n{}",
        text(out)
    );
}

#[test]
fn ansible_installs_replicas_on_postgresql_and_agents_follow_the_leader() {
    if !ready() || !postgres::installed_or_skip() {
        return;
    }
    let lab = Lab::start("ansible-replicas", &REPLICAS);
    let (gateway, subnet) = gateway_and_subnet(&lab);
    let pg = Postgres::start_reachable(&Reachable {
        address: gateway,
        clients: subnet,
    })
    .expect("a PostgreSQL the lab's containers reach");
    // The replicas log in as the certificate role, which owns the database
    // (PostgreSQL 15 lets only the owner create tables in public).
    let owned = pg
        .database_owned_by("ansible_replicas", CERT_ROLE)
        .expect("create the database");
    let db = owned
        .rsplit('/')
        .next()
        .expect("a database name")
        .to_owned();
    let client = pg.client_cert(CERT_ROLE).expect("a client certificate");
    let store_url = format!(
        "postgres://{CERT_ROLE}:{STORE_PASSWORD}@{gateway}:{}/{db}?sslmode=require",
        pg.port()
    );
    // No rollcall_server_url(s) and no SANs: agents get every replica's
    // advertised URL, and the server certificate names every replica.
    lab.write_inventory(
        &(lab.group("rollcall_server", &REPLICAS)
            + &lab.group("control", &REPLICAS)
            + &lab.group("compute", &[])
            + &lab.group("storage", &[])),
        &format!(
            "rollcall_server_store_url={store_url}\nrollcall_server_store_ca={}\n\
             rollcall_server_store_cert={}\nrollcall_server_store_key={}\n\
             rollcall_server_lease_ms=4000\nrollcall_server_poll_ms=500\n",
            pg.ca_file().display(),
            client.cert.display(),
            client.key.display()
        ),
    );

    // --diff shows every file the play writes, as operators often run it:
    // neither the store URL's password nor any private key may be in it.
    let first = lab.playbook(&["--diff"]);
    assert!(ok(&first), "first run failed:\n{}", text(&first));
    for secret in [STORE_PASSWORD, "PRIVATE KEY"] {
        assert!(
            !text(&first).contains(secret),
            "{secret} is in the play's output:\n{}",
            text(&first)
        );
    }
    let changed = recap_changed(&text(&first));
    assert_eq!(changed.len(), REPLICAS.len(), "{}", text(&first));
    assert!(changed.iter().all(|(_, n)| *n > 0), "{changed:?}");

    // One CA and one server certificate on both; private files private.
    for file in ["ca.crt", "server.crt"] {
        let sums: Vec<String> = REPLICAS
            .iter()
            .map(|n| {
                lab.lab
                    .sh(n, &format!("sha256sum < /etc/rollcall/pki/{file}"))
            })
            .collect();
        assert_eq!(sums[0], sums[1], "{file} differs between the replicas");
    }
    for name in REPLICAS {
        for (path, expected) in [
            ("/etc/rollcall/server.toml", "640 root rollcall"),
            ("/etc/rollcall/postgres-client.key", "600 rollcall rollcall"),
            ("/etc/rollcall/pki/server.key", "600 rollcall rollcall"),
            ("/etc/rollcall/pki/ca.key", "600 rollcall rollcall"),
            ("/etc/rollcall/pki/operators/ansible.key", "600 root root"),
        ] {
            let got = lab.lab.sh(name, &format!("stat -c '%a %U %G' {path}"));
            assert_eq!(got.trim(), expected, "{name}: {path}");
        }
        let server_line = lab.lab.sh(name, "grep '^server' /etc/rollcall/agent.toml");
        assert_eq!(
            server_line.trim(),
            r#"server = ["https://ctl1:7443", "https://ctl2:7443"]"#,
            "{name}'s agent.toml"
        );
    }

    // Exactly one leads: the lease row names it, the other refuses an
    // operator call with UNAVAILABLE and the leader's URL.
    let (leader_url, epoch) = wait_until("a replica to hold the lease", || lease(&pg, &db));
    let leader = REPLICAS
        .into_iter()
        .find(|n| leader_url == format!("https://{n}:7443"))
        .unwrap_or_else(|| panic!("the lease names no replica: {leader_url}"));
    let follower = REPLICAS
        .into_iter()
        .find(|n| *n != leader)
        .expect("two replicas");
    let pki = TempDir::new("ansible-replicas-operator");
    for (from, to) in [
        ("ca.crt", "ca.crt"),
        ("operators/ansible.crt", "ansible.crt"),
        ("operators/ansible.key", "ansible.key"),
    ] {
        // From the follower: the operator's files reached every replica.
        let pem = lab
            .lab
            .sh(follower, &format!("cat /etc/rollcall/pki/{from}"));
        std::fs::write(pki.path().join(to), pem).expect("write");
    }
    assert_follower(&lab, &pki, follower, &leader_url);
    let out = grpcurl_list_nodes(&lab, &pki, leader);
    assert!(ok(&out), "the leader {leader} refused: {}", text(&out));

    // Agents online through the list of URLs, and the CLI on the follower,
    // given only its own server, is sent on to the leader.
    let installed = Timestamp::now();
    wait_agents_online(&lab, leader, installed);
    let via_follower = lab.nodes_on(follower);
    assert_eq!(
        via_follower.iter().filter(|n| n.online).count(),
        REPLICAS.len(),
        "the CLI on {follower} did not reach the leader: {via_follower:?}"
    );

    // Failover: the leader stops; the follower takes the lease with the
    // higher epoch, and both agents (the stopped leader's own among
    // them) report to it, from the URLs in their agent.toml.
    let stopped = Timestamp::now();
    lab.lab.sh(leader, "systemctl stop rollcall-server");
    let follower_url = format!("https://{follower}:7443");
    let (_, new_epoch) = wait_until(&format!("{follower} to take the lease"), || {
        lease(&pg, &db).filter(|(address, _)| *address == follower_url)
    });
    assert!(
        new_epoch > epoch,
        "the epoch after the failover: {new_epoch} after {epoch}"
    );
    wait_agents_online(&lab, follower, stopped);
    lab.lab.sh(leader, "systemctl start rollcall-server");
    assert_follower(&lab, &pki, leader, &follower_url);

    // A second run changes nothing, and check mode agrees.
    assert_unchanged(&lab.playbook(&[]), "the second run");
    assert_unchanged(&lab.playbook(&["--check"]), "check mode");
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
