//! Debian bookworm node containers for the suites that install the real
//! packages: systemd as PID 1 in each (scripts/build-node-image.sh), on a
//! Docker network of the test's own, removed however the test ends.
//!
//! ```ignore
//! let mut lab = NodeLab::new("campaign");
//! lab.start("ctl1", &["--restart", "always"]);
//! lab.wait_systemd("ctl1");
//! lab.install_server("ctl1", &server_deb, pki.path(), "alice", SERVER_TOML);
//! lab.install_agent("ctl1", &agent_deb, pki.path(), AGENT_TOML);
//! let version = lab.sh("ctl1", "dpkg-query -W -f '${Version}' rollcall-demo-kernel");
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The node image, built by scripts/build-node-image.sh.
pub const NODE_IMAGE: &str = "rollcall-test/bookworm-node:2";

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace")
}

/// Runs the docker CLI.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

/// Stdout and stderr of a command, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether a Docker engine answers.
pub fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the engine holds the node image.
pub fn node_image_available() -> bool {
    docker(&["image", "inspect", NODE_IMAGE]).status.success()
}

/// The newest `target/debian/PACKAGE_*.deb` that scripts/package.sh built.
pub fn deb(package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(workspace().join("target/debian"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// Makes the pki directory `dir` with the real `rollcall-server` binary
/// (`server_bin`), as an operator would: `certs init` with the server's
/// name `server` as a SAN, an agent certificate for each of `agents`, and
/// one for `operator`.
pub fn make_pki<'a>(
    server_bin: &Path,
    dir: &Path,
    server: &str,
    agents: impl IntoIterator<Item = &'a str>,
    operator: &str,
) {
    let run = |args: &[&str]| {
        let out = Command::new(server_bin)
            .args(args)
            .output()
            .expect("run rollcall-server");
        assert!(
            out.status.success(),
            "rollcall-server {args:?}: {}",
            text(&out)
        );
    };
    let pki = dir.to_str().expect("a UTF-8 pki path");
    run(&["certs", "init", "--pki", pki, "--san", server]);
    for agent in agents {
        run(&["certs", "issue", "--pki", pki, "--agent", agent]);
    }
    run(&["certs", "issue", "--pki", pki, "--operator", operator]);
}

/// Node containers and their network, removed on drop (a failed test
/// included).
pub struct NodeLab {
    prefix: String,
    network: String,
    containers: Vec<String>,
}

impl NodeLab {
    /// Creates the network `rc-TAG-PID`.
    pub fn new(tag: &str) -> Self {
        let prefix = format!("rc-{tag}-{}", std::process::id());
        let out = docker(&["network", "create", &prefix]);
        assert!(out.status.success(), "network: {}", text(&out));
        Self {
            network: prefix.clone(),
            prefix,
            containers: Vec::new(),
        }
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    /// The container behind node `name`.
    pub fn container(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Starts node `name` (its hostname, and its name on the network) with
    /// systemd as PID 1; `extra` goes to `docker run` before the image.
    pub fn start(&mut self, name: &str, extra: &[&str]) {
        self.start_image(name, NODE_IMAGE, extra);
    }

    /// [`NodeLab::start`] with another image built FROM the node image
    /// (systemd as PID 1 too), such as the cluster image of
    /// [`crate::clusters`].
    pub fn start_image(&mut self, name: &str, image: &str, extra: &[&str]) {
        let container = self.container(name);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &container,
            "--hostname",
            name,
            "--network",
            &self.network,
            "--network-alias",
            name,
            // systemd as PID 1: the cgroup tree read-only, /run on tmpfs.
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--stop-signal",
            "SIGRTMIN+3",
            "--label",
            "rollcall.test=nodes",
        ];
        args.extend_from_slice(extra);
        args.push(image);
        // Recorded first: a container that half started is removed too.
        self.containers.push(container.clone());
        let out = docker(&args);
        assert!(out.status.success(), "start {name}: {}", text(&out));
    }

    /// Starts, beside node `name` on this machine's engine, a service
    /// container standing in for one of the node's kolla services: health
    /// checked, labelled `rollcall.test.node=CONTAINER` so that the node's
    /// agent (the engine socket mounted, `containers.labels` set to that
    /// label) reports it and no other container. Returns its name.
    pub fn start_service(&mut self, name: &str, image: &str) -> String {
        let container = format!("{}-svc", self.container(name));
        let label = format!("rollcall.test.node={}", self.container(name));
        self.containers.push(container.clone());
        let out = docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--label",
            "rollcall.test=nodes",
            "--label",
            &label,
            "--health-cmd",
            "test -f /tmp/healthy",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            image,
            "sh",
            "-c",
            "touch /tmp/healthy; exec sleep 3600",
        ]);
        assert!(
            out.status.success(),
            "service beside {name}: {}",
            text(&out)
        );
        container
    }

    /// Installs rollcall-agent on node `name` as the campaign suites need
    /// it: the package, the local repository's package lists (so the update
    /// check sees the newer package and the shipped patch command, which
    /// has no `apt-get update`, installs it), the node's certificate and
    /// key from the pki directory `pki` (key 0600), and `agent_toml`.
    pub fn install_agent(&self, name: &str, agent_deb: &Path, pki: &Path, agent_toml: &str) {
        self.wait_systemd(name);
        self.copy_in(name, agent_deb, "/tmp/rollcall-agent.deb");
        self.sh(name, "dpkg -i /tmp/rollcall-agent.deb");
        self.sh(name, "apt-get update -q");
        for (rel, path, mode) in [
            ("ca.crt".to_owned(), "ca.crt", "0644"),
            (format!("agents/{name}.crt"), "agent.crt", "0644"),
            (format!("agents/{name}.key"), "agent.key", "0600"),
        ] {
            let contents = std::fs::read(pki.join(&rel)).expect("pki file");
            let path = format!("/etc/rollcall/agent/{path}");
            self.write(name, &path, mode, "root:root", &contents);
        }
        self.write(
            name,
            "/etc/rollcall/agent.toml",
            "0644",
            "root:root",
            agent_toml.as_bytes(),
        );
    }

    /// Installs rollcall-server on node `name` and starts it, as the
    /// campaign suites need it: the package, the CA, the server's
    /// certificate and key (0600, owned by the package's `rollcall` user)
    /// and operator `operator`'s certificate and key, from the pki
    /// directory `pki` (the CA key stays on the host), under
    /// /etc/rollcall/pki, and `server_toml` as /etc/rollcall/server.toml.
    pub fn install_server(
        &self,
        name: &str,
        server_deb: &Path,
        pki: &Path,
        operator: &str,
        server_toml: &str,
    ) {
        self.wait_systemd(name);
        self.copy_in(name, server_deb, "/tmp/rollcall-server.deb");
        self.sh(name, "dpkg -i /tmp/rollcall-server.deb");
        for (rel, mode, owner) in [
            ("ca.crt".to_owned(), "0644", "root:root"),
            ("server.crt".to_owned(), "0644", "root:root"),
            // The service runs as the package's user `rollcall`.
            ("server.key".to_owned(), "0600", "rollcall:rollcall"),
            (format!("operators/{operator}.crt"), "0644", "root:root"),
            (format!("operators/{operator}.key"), "0600", "root:root"),
        ] {
            let contents = std::fs::read(pki.join(&rel)).expect("pki file");
            let path = format!("/etc/rollcall/pki/{rel}");
            self.write(name, &path, mode, owner, &contents);
        }
        self.write(
            name,
            "/etc/rollcall/server.toml",
            "0644",
            "root:root",
            server_toml.as_bytes(),
        );
        self.sh(name, "systemctl enable --now rollcall-server");
    }

    /// Waits until systemd on `name` has finished booting.
    pub fn wait_systemd(&self, name: &str) {
        let started = Instant::now();
        loop {
            let out = self.exec(name, &["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "systemd on {name} stuck in {state:?}: {}",
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `docker exec` on node `name`.
    pub fn exec(&self, name: &str, args: &[&str]) -> Output {
        let container = self.container(name);
        let mut all = vec!["exec", container.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// A shell command on node `name` that must succeed; its stdout.
    pub fn sh(&self, name: &str, script: &str) -> String {
        let out = self.exec(name, &["sh", "-c", script]);
        assert!(
            out.status.success(),
            "{name}: `{script}` failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `contents` to `path` on node `name` (parent directories
    /// made), with the given mode and owner.
    pub fn write(&self, name: &str, path: &str, mode: &str, owner: &str, contents: &[u8]) {
        let container = self.container(name);
        let mut child = Command::new("docker")
            .args(["exec", "-i", &container, "sh", "-c"])
            .arg(r#"mkdir -p "$(dirname "$1")" && (umask 077 && cat > "$1") && chown "$3" "$1" && chmod "$2" "$1""#)
            .args(["sh", path, mode, owner])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker exec");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(contents)
            .expect("write to docker exec");
        let out = child.wait_with_output().expect("docker exec");
        assert!(out.status.success(), "{name}: write {path}: {}", text(&out));
    }

    /// Copies a host file to `path` on node `name`.
    pub fn copy_in(&self, name: &str, host: &Path, path: &str) {
        let target = format!("{}:{path}", self.container(name));
        let source = host.to_string_lossy();
        let out = docker(&["cp", &source, &target]);
        assert!(out.status.success(), "copy to {target}: {}", text(&out));
    }

    /// `docker inspect -f FORMAT` of node `name`'s container.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        let out = docker(&["inspect", "-f", format, &self.container(name)]);
        assert!(out.status.success(), "inspect {name}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        // By exact name: a `name=` filter matches substrings, and so other
        // labs whose process id starts with ours.
        for container in &self.containers {
            let _ = docker(&["rm", "-f", "-v", container]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// Containers and networks of the benches' labs, removed if a bench is
/// interrupted: `NodeLab`'s Drop does not run on a signal.
static INTERRUPTIBLE: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());

/// Removes `lab`'s network and the containers `names` if the process is
/// interrupted (after [`clean_up_on_signal`]).
pub fn remove_on_interrupt<'a>(lab: &NodeLab, names: impl IntoIterator<Item = &'a str>) {
    let mut live = INTERRUPTIBLE.lock().expect("lock");
    live.push((lab.network().to_owned(), true));
    live.extend(names.into_iter().map(|n| (lab.container(n), false)));
}

/// The labs remembered so far are gone (their Drop ran).
pub fn forget_interruptible() {
    INTERRUPTIBLE.lock().expect("lock").clear();
}

/// On SIGINT or SIGTERM, removes every container and network remembered by
/// [`remove_on_interrupt`], then exits 130.
pub fn clean_up_on_signal() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        if !rt.block_on(crate::interrupted()) {
            return;
        }
        eprintln!("interrupted: removing this bench's containers and networks");
        let live = INTERRUPTIBLE.lock().map(|l| l.clone()).unwrap_or_default();
        for (name, _) in live.iter().filter(|(_, net)| !net) {
            let _ = docker(&["rm", "-f", "-v", name]);
        }
        for (name, _) in live.iter().filter(|(_, net)| *net) {
            let _ = docker(&["network", "rm", name]);
        }
        std::process::exit(130);
    });
}
