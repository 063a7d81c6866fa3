//! Real Galera and RabbitMQ clusters on Debian node containers, for the
//! gates that judge a controller's clusters (packaging/gates/).
//!
//! The nodes run the cluster image (scripts/build-cluster-image.sh, FROM the
//! node image): Debian bookworm's mariadb-server + galera-4 + rsync and
//! rabbitmq-server, installed but neither enabled nor started. This module
//! configures and forms the clusters the way an operator does by hand:
//! Galera bootstrapped with `galera_new_cluster` on the first member and
//! joined by `systemctl start mariadb` on the others (a full rsync state
//! transfer each); RabbitMQ with one Erlang cookie everywhere before the
//! first start, then `join_cluster` on the others.
//!
//! Three of each fit this 2-core, 24 GiB machine, so RabbitMQ is a real
//! three-node cluster too (no fallback to one node). Measured with both
//! clusters formed and idle (`docker stats`): 250-350 MiB and under 1% of a
//! core per node (RabbitMQ's schedulers cut to one, busy-waiting off).
//! Forming them: Galera 33 s and RabbitMQ 43 s one after the other on a
//! quiet machine; 52 s and 68-78 s side by side while other builds loaded
//! the two cores (load average 6).
//!
//! ```ignore
//! let mut lab = NodeLab::new("gates");
//! clusters::start_nodes(&mut lab, &["ctl1", "ctl2", "ctl3"], &[]);
//! // The agent too, for its gates and hooks:
//! // lab.install_agent("ctl1", &agent_deb, pki.path(), AGENT_TOML);
//! let galera = Galera::start(&lab, &["ctl1", "ctl2", "ctl3"]);
//! let rabbit = Rabbit::start(&lab, &["ctl1", "ctl2", "ctl3"]);
//! galera.stop_member("ctl3");
//! let run = clusters::run_gate(&lab, "ctl1", "galera-synced", &["after", "ctl3"]);
//! assert_eq!(run.code, 1, "{run}");
//! galera.start_member("ctl3");
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::nodes::{self, NodeLab, text};

/// The cluster node image, built by scripts/build-cluster-image.sh.
pub const CLUSTER_IMAGE: &str = "rollcall-test/bookworm-cluster-node:1";

/// Where the agent package installs the gate scripts, and where
/// [`Gates::install`] puts them whatever their source.
pub const GATES_DIR: &str = "/usr/share/rollcall/gates";

/// How long one member may take to join or rejoin a cluster: a Galera
/// joiner's full rsync state transfer takes 15 s on an idle machine, a
/// RabbitMQ node boots in 10-25 s; a loaded CI machine gets room.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(240);

/// Whether the engine holds the cluster image.
pub fn cluster_image_available() -> bool {
    nodes::docker(&["image", "inspect", CLUSTER_IMAGE])
        .status
        .success()
}

/// Starts nodes `names` of the cluster image on `lab` (`extra` goes to
/// `docker run`, as for [`NodeLab::start`]), and waits until systemd has
/// booted on each.
pub fn start_nodes(lab: &mut NodeLab, names: &[&str], extra: &[&str]) {
    for name in names {
        lab.start_image(name, CLUSTER_IMAGE, extra);
    }
    for name in names {
        lab.wait_systemd(name);
    }
}

/// A cluster member: its node name (hostname and network alias) and the
/// container behind it. Kept by value, so that a cluster can live beside
/// the [`NodeLab`] that owns the containers.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    container: String,
}

impl Member {
    fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.container.as_str()];
        all.extend_from_slice(args);
        nodes::docker(&all)
    }

    /// A shell command that must succeed; its stdout.
    fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "{}: `{script}` failed: {}",
            self.name,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last lines of a unit's journal, for a failure message.
    fn journal(&self, unit: &str) -> String {
        let out = self.exec(&["journalctl", "--no-pager", "-n", "30", "-u", unit]);
        format!("--- {} {unit} journal ---\n{}", self.name, text(&out))
    }
}

fn members(lab: &NodeLab, names: &[&str]) -> Vec<Member> {
    assert!(!names.is_empty(), "a cluster needs members");
    names
        .iter()
        .map(|name| Member {
            name: (*name).to_owned(),
            container: lab.container(name),
        })
        .collect()
}

fn member<'a>(members: &'a [Member], name: &str) -> &'a Member {
    members
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} is not a member"))
}

/// Polls `probe` every 500 ms until it returns `Ok`, or panics after
/// `timeout` with what it last said. Returns how long it took.
fn poll<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Duration {
    let started = Instant::now();
    loop {
        match probe() {
            Ok(_) => return started.elapsed(),
            Err(last) => assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What a Galera member says of itself in `SHOW GLOBAL STATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsrepStatus {
    /// `wsrep_cluster_status`: Primary when its component has quorum.
    pub cluster_status: String,
    /// `wsrep_local_state_comment`: Synced, or Joining, Donor/Desynced...
    pub local_state: String,
    /// `wsrep_ready`: ON when it accepts queries.
    pub ready: String,
    /// `wsrep_cluster_size`.
    pub cluster_size: u32,
}

impl WsrepStatus {
    /// Primary, Synced, ready, and of `size` members.
    pub fn whole(&self, size: u32) -> bool {
        self.cluster_status == "Primary"
            && self.local_state == "Synced"
            && self.ready == "ON"
            && self.cluster_size == size
    }
}

/// A Galera cluster of MariaDB members (Debian's mariadb-server and
/// galera-4), formed by [`Galera::start`].
#[derive(Debug, Clone)]
pub struct Galera {
    members: Vec<Member>,
    started_in: Duration,
}

impl Galera {
    /// The configuration [`Galera::start`] writes on each member.
    pub const CONFIG_PATH: &str = "/etc/mysql/mariadb.conf.d/60-galera.cnf";

    /// The Galera configuration of a cluster of `names`.
    pub fn config(names: &[&str]) -> String {
        format!(
            "# Written by tests/src/clusters.rs.\n\
             [galera]\n\
             wsrep_on = ON\n\
             wsrep_provider = /usr/lib/galera/libgalera_smm.so\n\
             wsrep_cluster_name = rollcall-test\n\
             wsrep_cluster_address = gcomm://{}\n\
             wsrep_sst_method = rsync\n\
             # The default 128 MiB ring buffer is written out in full at each start:\n\
             # three of them cost time and disk this test has no use for.\n\
             wsrep_provider_options = \"gcache.size=32M\"\n\
             binlog_format = ROW\n\
             default_storage_engine = InnoDB\n\
             innodb_autoinc_lock_mode = 2\n\
             # Debian's 50-server.cnf binds to 127.0.0.1; the members reach each other.\n\
             bind-address = 0.0.0.0\n\
             # Three members share a 2-core machine, with small data.\n\
             innodb_buffer_pool_size = 64M\n",
            names.join(",")
        )
    }

    /// Writes [`Galera::config`] on every member of `names` (nodes of
    /// `lab` started with [`start_nodes`]), bootstraps the cluster with
    /// `galera_new_cluster` on the first, starts MariaDB on the others one
    /// at a time (the first is the only donor), and waits until every
    /// member is Primary, Synced and sees them all.
    pub fn start(lab: &NodeLab, names: &[&str]) -> Self {
        let started = Instant::now();
        let members = members(lab, names);
        let config = Self::config(names);
        for m in &members {
            lab.write(
                &m.name,
                Self::CONFIG_PATH,
                "0644",
                "root:root",
                config.as_bytes(),
            );
        }
        let galera = Self {
            members,
            started_in: Duration::ZERO,
        };
        let first = &galera.members[0];
        let out = first.exec(&["galera_new_cluster"]);
        assert!(
            out.status.success(),
            "galera_new_cluster on {}: {}\n{}",
            first.name,
            text(&out),
            first.journal("mariadb")
        );
        eprintln!(
            "[clusters] Galera bootstrapped on {} in {:.1}s",
            first.name,
            started.elapsed().as_secs_f32()
        );
        for m in &galera.members[1..] {
            let joining = Instant::now();
            galera.systemctl(m, "start");
            eprintln!(
                "[clusters] Galera member {} joined in {:.1}s",
                m.name,
                joining.elapsed().as_secs_f32()
            );
        }
        galera.wait_whole(&galera.names(), galera.size(), JOIN_TIMEOUT);
        let started_in = started.elapsed();
        eprintln!(
            "[clusters] Galera cluster of {} whole in {:.1}s",
            galera.size(),
            started_in.as_secs_f32()
        );
        Self {
            started_in,
            ..galera
        }
    }

    /// How long [`Galera::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The members' node names.
    pub fn names(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.name.as_str()).collect()
    }

    /// The full cluster size.
    pub fn size(&self) -> u32 {
        u32::try_from(self.members.len()).expect("a few members")
    }

    /// What member `name` says of itself, or why it cannot say.
    pub fn status(&self, name: &str) -> Result<WsrepStatus, String> {
        let out = member(&self.members, name).exec(&[
            "mysql",
            "-N",
            "-B",
            "--connect-timeout=5",
            "-e",
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_status', \
             'wsrep_local_state_comment', 'wsrep_ready', 'wsrep_cluster_size')",
        ]);
        if !out.status.success() {
            return Err(format!("{name}: {}", text(&out).trim()));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |variable: &str| {
            stdout
                .lines()
                .filter_map(|line| line.split_once('\t'))
                .find(|(name, _)| *name == variable)
                .map(|(_, value)| value.trim().to_owned())
                .ok_or_else(|| format!("{name}: no {variable} in {stdout:?}"))
        };
        let size = value("wsrep_cluster_size")?;
        Ok(WsrepStatus {
            cluster_status: value("wsrep_cluster_status")?,
            local_state: value("wsrep_local_state_comment")?,
            ready: value("wsrep_ready")?,
            cluster_size: size
                .parse()
                .map_err(|e| format!("{name}: wsrep_cluster_size {size:?}: {e}"))?,
        })
    }

    /// Waits until every member of `on` is Primary, Synced, ready and sees
    /// `size` members; how long that took.
    pub fn wait_whole(&self, on: &[&str], size: u32, timeout: Duration) -> Duration {
        poll(
            &format!("Galera members {on:?} Primary, Synced, of size {size}"),
            timeout,
            || {
                for name in on {
                    let status = self.status(name)?;
                    if !status.whole(size) {
                        return Err(format!("{name}: {status:?}"));
                    }
                }
                Ok(())
            },
        )
    }

    /// Stops MariaDB on member `name` (`systemctl stop mariadb`) and waits
    /// until the others are a whole cluster without it; how long that took.
    pub fn stop_member(&self, name: &str) -> Duration {
        let started = Instant::now();
        self.systemctl(member(&self.members, name), "stop");
        let others: Vec<&str> = self.names().into_iter().filter(|n| *n != name).collect();
        self.wait_whole(&others, self.size() - 1, JOIN_TIMEOUT);
        started.elapsed()
    }

    /// Starts MariaDB on member `name` again (`systemctl start mariadb`,
    /// which returns once its state transfer is done) and waits until the
    /// cluster is whole; how long that took.
    pub fn start_member(&self, name: &str) -> Duration {
        let started = Instant::now();
        self.systemctl(member(&self.members, name), "start");
        self.wait_whole(&self.names(), self.size(), JOIN_TIMEOUT);
        started.elapsed()
    }

    /// Asks systemd to start MariaDB on member `name` and returns at once,
    /// so that a test can watch a gate while the member rejoins.
    pub fn start_member_no_wait(&self, name: &str) {
        member(&self.members, name).sh("systemctl start --no-block mariadb");
    }

    fn systemctl(&self, m: &Member, verb: &str) {
        let out = m.exec(&["systemctl", verb, "mariadb"]);
        assert!(
            out.status.success(),
            "systemctl {verb} mariadb on {}: {}\n{}",
            m.name,
            text(&out),
            m.journal("mariadb")
        );
    }
}

/// A RabbitMQ cluster (Debian's rabbitmq-server), formed by
/// [`Rabbit::start`]. Its nodes are `rabbit@NAME`.
#[derive(Debug, Clone)]
pub struct Rabbit {
    members: Vec<Member>,
    started_in: Duration,
}

impl Rabbit {
    /// The Erlang cookie every member shares: nodes with different cookies
    /// cannot cluster.
    pub const COOKIE: &str = "ROLLCALLTESTCOOKIEGATESREAL";
    /// Read by Debian's rabbitmq-server and its CLI tools.
    pub const ENV_PATH: &str = "/etc/rabbitmq/rabbitmq-env.conf";
    /// One scheduler and no busy-waiting: three brokers and three
    /// databases share 2 cores. Measured idle with it, a broker holds about
    /// 120 MiB and under 1% of a core.
    pub const ENV: &str = "# Written by tests/src/clusters.rs.\n\
        SERVER_ADDITIONAL_ERL_ARGS=\"+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none\"\n";

    /// The Erlang node name of member `name`.
    pub fn node(name: &str) -> String {
        format!("rabbit@{name}")
    }

    /// Writes the cookie (owner rabbitmq, mode 0400) and [`Rabbit::ENV`] on
    /// every member of `names` (nodes of `lab` started with
    /// [`start_nodes`]) before RabbitMQ's first start, starts it on all of
    /// them at once, joins the others to the first (`stop_app`,
    /// `join_cluster`, `start_app`), and waits until every member sees them
    /// all running.
    pub fn start(lab: &NodeLab, names: &[&str]) -> Self {
        let started = Instant::now();
        let members = members(lab, names);
        for m in &members {
            lab.write(
                &m.name,
                "/var/lib/rabbitmq/.erlang.cookie",
                "0400",
                "rabbitmq:rabbitmq",
                Self::COOKIE.as_bytes(),
            );
            lab.write(
                &m.name,
                Self::ENV_PATH,
                "0644",
                "root:root",
                Self::ENV.as_bytes(),
            );
        }
        std::thread::scope(|s| {
            for m in &members {
                s.spawn(move || {
                    let out = m.exec(&["systemctl", "start", "rabbitmq-server"]);
                    assert!(
                        out.status.success(),
                        "systemctl start rabbitmq-server on {}: {}\n{}",
                        m.name,
                        text(&out),
                        m.journal("rabbitmq-server")
                    );
                });
            }
        });
        eprintln!(
            "[clusters] RabbitMQ started on {} nodes in {:.1}s",
            members.len(),
            started.elapsed().as_secs_f32()
        );
        let seed = Self::node(&members[0].name);
        for m in &members[1..] {
            let joining = Instant::now();
            for args in [
                &["stop_app"][..],
                &["join_cluster", seed.as_str()][..],
                &["start_app"][..],
            ] {
                let mut all = vec!["rabbitmqctl", "-q"];
                all.extend_from_slice(args);
                let out = m.exec(&all);
                assert!(
                    out.status.success(),
                    "{}: rabbitmqctl {args:?}: {}",
                    m.name,
                    text(&out)
                );
            }
            eprintln!(
                "[clusters] RabbitMQ node {} joined {seed} in {:.1}s",
                m.name,
                joining.elapsed().as_secs_f32()
            );
        }
        let rabbit = Self {
            members,
            started_in: Duration::ZERO,
        };
        rabbit.wait_running(&rabbit.names(), &rabbit.names(), JOIN_TIMEOUT);
        let started_in = started.elapsed();
        eprintln!(
            "[clusters] RabbitMQ cluster of {} running in {:.1}s",
            rabbit.members.len(),
            started_in.as_secs_f32()
        );
        Self {
            started_in,
            ..rabbit
        }
    }

    /// How long [`Rabbit::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The members' node names (not Erlang node names).
    pub fn names(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.name.as_str()).collect()
    }

    /// The running nodes member `name` sees (`rabbitmqctl cluster_status`),
    /// sorted, or why it cannot say.
    pub fn running_nodes(&self, name: &str) -> Result<Vec<String>, String> {
        let out = member(&self.members, name).exec(&[
            "rabbitmqctl",
            "-q",
            "cluster_status",
            "--formatter",
            "json",
        ]);
        if !out.status.success() {
            return Err(format!("{name}: {}", text(&out).trim()));
        }
        let status: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{name}: cluster_status: {e}: {}", text(&out)))?;
        let mut running: Vec<String> = status["running_nodes"]
            .as_array()
            .ok_or_else(|| format!("{name}: no running_nodes in {status}"))?
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        running.sort();
        Ok(running)
    }

    /// Waits until every member of `on` sees exactly the members `running`
    /// running; how long that took.
    pub fn wait_running(&self, on: &[&str], running: &[&str], timeout: Duration) -> Duration {
        let mut want: Vec<String> = running.iter().map(|n| Self::node(n)).collect();
        want.sort();
        poll(
            &format!("RabbitMQ members {on:?} seeing {want:?} running"),
            timeout,
            || {
                for name in on {
                    let seen = self.running_nodes(name)?;
                    if seen != want {
                        return Err(format!("{name} sees {seen:?} running"));
                    }
                }
                Ok(())
            },
        )
    }

    /// Stops RabbitMQ on member `name` (`systemctl stop rabbitmq-server`)
    /// and waits until the others see it gone; how long that took.
    pub fn stop_member(&self, name: &str) -> Duration {
        let started = Instant::now();
        self.systemctl(member(&self.members, name), "stop");
        let others: Vec<&str> = self.names().into_iter().filter(|n| *n != name).collect();
        self.wait_running(&others, &others, JOIN_TIMEOUT);
        started.elapsed()
    }

    /// Starts RabbitMQ on member `name` again and waits until every member
    /// sees them all running; how long that took.
    pub fn start_member(&self, name: &str) -> Duration {
        let started = Instant::now();
        self.systemctl(member(&self.members, name), "start");
        self.wait_running(&self.names(), &self.names(), JOIN_TIMEOUT);
        started.elapsed()
    }

    /// Asks systemd to start RabbitMQ on member `name` and returns at once,
    /// so that a test can watch a gate while the node rejoins.
    pub fn start_member_no_wait(&self, name: &str) {
        member(&self.members, name).sh("systemctl start --no-block rabbitmq-server");
    }

    /// Declares the durable quorum queue `queue` in vhost `/` through
    /// member `on` (`rabbitmqctl eval`: no AMQP client or management plugin
    /// needed), with a replica on every member; returns its members.
    pub fn declare_quorum_queue(&self, on: &str, queue: &str) -> Vec<String> {
        assert!(
            !queue.is_empty()
                && queue
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "a plain queue name, it goes into an Erlang expression: {queue:?}"
        );
        let m = member(&self.members, on);
        // rabbit_amqqueue:declare(Name, Durable, AutoDelete, Args, Owner,
        // ActingUser) of RabbitMQ 3.10: the call behind an AMQP queue.declare.
        let expression = format!(
            "rabbit_amqqueue:declare(rabbit_misc:r(<<\"/\">>, queue, <<\"{queue}\">>), \
             true, false, [{{<<\"x-queue-type\">>, longstr, <<\"quorum\">>}}], none, \
             <<\"rollcall-test\">>)."
        );
        let said = m.exec(&["rabbitmqctl", "-q", "eval", &expression]);
        assert!(
            said.status.success() && String::from_utf8_lossy(&said.stdout).contains("{new,"),
            "{on}: declaring quorum queue {queue}: {}",
            text(&said)
        );
        let listed = m.sh("rabbitmqctl -q list_queues name type members --formatter json");
        let queues: Value = serde_json::from_str(&listed).expect("list_queues JSON");
        let entry = queues
            .as_array()
            .and_then(|qs| qs.iter().find(|q| q["name"] == queue))
            .unwrap_or_else(|| panic!("{queue} not listed: {listed}"));
        assert_eq!(entry["type"], "quorum", "{listed}");
        let mut replicas: Vec<String> = entry["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        replicas.sort();
        replicas
    }

    fn systemctl(&self, m: &Member, verb: &str) {
        let out = m.exec(&["systemctl", verb, "rabbitmq-server"]);
        assert!(
            out.status.success(),
            "systemctl {verb} rabbitmq-server on {}: {}\n{}",
            m.name,
            text(&out),
            m.journal("rabbitmq-server")
        );
    }
}

/// Where the gate scripts come from.
#[derive(Debug, Clone)]
pub enum Gates {
    /// The agent package (scripts/package.sh), which installs them under
    /// [`GATES_DIR`].
    Deb(PathBuf),
    /// A directory of the scripts (the workspace's packaging/gates), copied
    /// to [`GATES_DIR`].
    Tree(PathBuf),
}

impl Gates {
    /// The agent .deb when it ships every one of `scripts`; else the
    /// workspace's packaging/gates when it holds them; else none.
    pub fn find(scripts: &[&str]) -> Option<Self> {
        if let Some(deb) = nodes::deb("rollcall-agent") {
            let listed = Command::new("dpkg-deb").arg("-c").arg(&deb).output();
            if let Ok(out) = listed {
                let contents = String::from_utf8_lossy(&out.stdout);
                let ships = |script: &&str| {
                    let path = format!(".{GATES_DIR}/{script}");
                    contents.lines().any(|l| l.ends_with(&path))
                };
                if out.status.success() && scripts.iter().all(ships) {
                    return Some(Self::Deb(deb));
                }
            }
        }
        let tree = nodes::workspace().join("packaging/gates");
        scripts
            .iter()
            .all(|s| tree.join(s).is_file())
            .then_some(Self::Tree(tree))
    }

    /// Puts the scripts under [`GATES_DIR`] on node `name`: the package
    /// installed with dpkg, or the directory's files copied in (mode 0755).
    pub fn install(&self, lab: &NodeLab, name: &str) {
        match self {
            Self::Deb(deb) => {
                lab.copy_in(name, deb, "/tmp/rollcall-agent.deb");
                lab.sh(name, "dpkg -i /tmp/rollcall-agent.deb");
            }
            Self::Tree(dir) => {
                lab.sh(name, &format!("mkdir -p {GATES_DIR}"));
                let entries = std::fs::read_dir(dir).expect("read the gates directory");
                for entry in entries.filter_map(Result::ok) {
                    let path = entry.path();
                    if path.is_file() {
                        let file = entry.file_name();
                        let target = format!("{GATES_DIR}/{}", file.to_string_lossy());
                        lab.copy_in(name, &path, &target);
                        lab.sh(name, &format!("chmod 0755 '{target}'"));
                    }
                }
            }
        }
    }

    /// Which copy runs, for the test's log and report.
    pub fn describe(&self) -> String {
        match self {
            Self::Deb(deb) => format!("the agent package {}", deb.display()),
            Self::Tree(dir) => format!("the scripts in {}", dir.display()),
        }
    }

    /// The source's path.
    pub fn path(&self) -> &Path {
        match self {
            Self::Deb(path) | Self::Tree(path) => path,
        }
    }
}

/// One try of a gate script.
#[derive(Debug, Clone)]
pub struct GateRun {
    /// The script's exit code (-1 if a signal ended it).
    pub code: i32,
    /// Its stdout and stderr, interleaved as it wrote them.
    pub output: String,
    /// Wall time, `docker exec` included.
    pub took: Duration,
}

impl GateRun {
    /// The last line with words in it: the gate's reason.
    pub fn last_line(&self) -> &str {
        self.output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

impl fmt::Display for GateRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {} in {:.2}s:\n{}",
            self.code,
            self.took.as_secs_f32(),
            self.output.trim_end()
        )
    }
}

/// Runs gate `script` (under [`GATES_DIR`]) on node `name` with `args`, as
/// the agent runs a hook: argv, no shell line; stderr merged into stdout in
/// order, so that the last line is the reason whichever stream it is on.
pub fn run_gate(lab: &NodeLab, name: &str, script: &str, args: &[&str]) -> GateRun {
    let path = format!("{GATES_DIR}/{script}");
    let mut all = vec!["sh", "-c", "exec \"$0\" \"$@\" 2>&1", path.as_str()];
    all.extend_from_slice(args);
    let started = Instant::now();
    let out = lab.exec(name, &all);
    GateRun {
        code: out.status.code().unwrap_or(-1),
        output: text(&out),
        took: started.elapsed(),
    }
}
