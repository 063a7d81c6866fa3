//! Bringing one cluster up: which binaries, as whom, `initdb`, the config
//! files, `pg_ctl start` on a free port, and the watchdog that takes it all
//! down again once the test process is gone.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};

use anyhow::{Context, bail};

use super::{CERT_ROLE, Reachable, SUPERUSER};
use crate::port_outside_ephemeral_range;

/// Where Debian puts each major version's server binaries (off PATH).
const DEBIAN_LIB: &str = "/usr/lib/postgresql";

/// `$PG_BIN` if set, else the highest `/usr/lib/postgresql/N/bin` that
/// holds an `initdb`; `None` when there is neither.
pub(super) fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let entries = std::fs::read_dir(DEBIAN_LIB).ok()?;
    entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            // "15" and "9.6" alike, compared as numbers: 10 sorts after 9.6.
            let version = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let bin = Path::new(DEBIAN_LIB).join(&name).join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// initdb, pg_ctl and postgres refuse to run as root: as root they run as
/// Debian's `postgres` system user, otherwise as whoever runs the tests.
#[derive(Clone, Copy, Debug)]
pub(super) enum RunAs {
    Me,
    PostgresUser,
}

impl RunAs {
    pub(super) fn detect() -> Self {
        if rustix::process::geteuid().is_root() {
            Self::PostgresUser
        } else {
            Self::Me
        }
    }

    /// What goes before the program's path. setpriv rather than runuser:
    /// no PAM session, so nothing is written to the system's logs per run.
    fn prefix(self) -> &'static [&'static str] {
        match self {
            Self::Me => &[],
            Self::PostgresUser => &[
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ],
        }
    }

    /// `program` as the cluster's owner, in `cwd` (the owner must be able
    /// to enter it, or initdb warns), with no PG* variables from the
    /// caller's environment steering it elsewhere.
    pub(super) fn command(self, program: &Path, cwd: &Path) -> Command {
        let mut command = match self.prefix().split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.current_dir(cwd);
        without_pg_env(&mut command);
        // Messages in English, whatever the caller's locale: the retry on a
        // taken port reads them.
        command.env("LC_ALL", "C");
        command
    }

    /// Makes everything under `dir` the cluster owner's.
    pub(super) fn own(self, dir: &Path) -> anyhow::Result<()> {
        if let Self::PostgresUser = self {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:postgres").arg(dir);
            run(&mut chown).context(
                "give the cluster's directory to the postgres user: \
                 does it exist? (Debian's postgresql package creates it)",
            )?;
        }
        Ok(())
    }
}

/// Drops PGDATA, PGHOST, PGSSLMODE and the like: the harness says where
/// and how to connect on every command line.
pub(super) fn without_pg_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
}

/// Runs `command` to its end; its stdout, or an error with its stderr.
pub(super) fn run(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Waits on its stdin until EOF, which comes when the last process holding
/// the pipe's other end is gone: the test process, however it ended (a
/// panic, exit, SIGKILL). Then stops the cluster at once and removes its
/// directory. Rust opens the pipe close-on-exec, so no child the tests start
/// holds it open.
const WATCHDOG: &str = r#"
dir=$1 pg_ctl=$2
shift 2
while read -r _; do :; done
"$@" "$pg_ctl" stop -D "$dir/data" -m immediate -w -t 30 >/dev/null 2>&1
rm -rf "$dir"
"#;

/// Starts the watchdog for `dir`; the test process keeps the returned pipe
/// open for as long as it lives. In a process group of its own, so the
/// Ctrl-C that stops a test run does not stop it first.
pub(super) fn watchdog(dir: &Path, bin: &Path, run_as: RunAs) -> anyhow::Result<ChildStdin> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("rollcall-postgres-watchdog")
        .arg(dir)
        .arg(bin.join("pg_ctl"))
        .args(run_as.prefix())
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("start the PostgreSQL watchdog (sh)")?;
    child.stdin.take().context("the watchdog's stdin is piped")
}

/// `initdb` into `dir/data`: superuser `postgres`, trust until the
/// pg_hba.conf below replaces it, no fsync (a test cluster dies with its
/// test).
pub(super) fn initdb(dir: &Path, bin: &Path, run_as: RunAs) -> anyhow::Result<()> {
    let mut initdb = run_as.command(&bin.join("initdb"), dir);
    initdb.arg("--pgdata").arg(dir.join("data")).args([
        &format!("--username={SUPERUSER}"),
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]);
    run(&mut initdb).context("initdb")?;
    Ok(())
}

/// Appends the harness's settings to postgresql.conf (later lines win)
/// and replaces pg_hba.conf; with `reach`, the cluster listens and lets
/// clients in there too.
pub(super) fn configure(dir: &Path, reach: Option<&Reachable>) -> anyhow::Result<()> {
    let path = dir.to_str().context("the temp dir's path is UTF-8")?;
    anyhow::ensure!(
        !path.contains('\''),
        "the temp dir's path {path} holds a quote"
    );
    let data = dir.join("data");
    let listen = match reach {
        Some(reach) => format!("127.0.0.1, {}", reach.address),
        None => "127.0.0.1".to_owned(),
    };
    let settings = format!(
        "
# rollcall tests: one cluster per test process, on loopback (and, for a
# cluster of a test's own, where its containers reach it). The port is given
# on pg_ctl's command line, so a retry on another one rewrites nothing.
listen_addresses = '{listen}'
unix_socket_directories = '{path}'
# Several server replicas per test, each with a pool, tests side by side.
max_connections = 300
shared_buffers = 32MB
# Nothing here has to survive a crash of the machine; a crash of PostgreSQL
# itself loses nothing without fsync (the writes sit in the OS's cache).
fsync = off
full_page_writes = off
ssl = on
ssl_cert_file = '{path}/tls/server.crt'
ssl_key_file = '{path}/tls/server.key'
ssl_ca_file = '{path}/tls/ca.crt'
# pg_ctl -l sends stderr to {path}/postgres.log.
log_destination = 'stderr'
logging_collector = off
log_line_prefix = '%m [%p] %a %u@%d '
"
    );
    let conf = data.join("postgresql.conf");
    let mut text =
        std::fs::read_to_string(&conf).with_context(|| format!("read {}", conf.display()))?;
    text.push_str(&settings);
    std::fs::write(&conf, text).with_context(|| format!("write {}", conf.display()))?;

    // First match wins: the certificate role only over TLS with a client
    // certificate (and never without TLS), everyone else trusted on loopback
    // and, with `reach`, from the clients' network alike.
    let mut hba = "# TYPE   DATABASE USER         ADDRESS       METHOD
local     all      all                        trust
"
    .to_owned();
    let networks = std::iter::once("127.0.0.1/32").chain(reach.map(|r| r.clients.as_str()));
    for network in networks {
        anyhow::ensure!(
            !network.is_empty() && !network.contains(char::is_whitespace),
            "a client network for pg_hba.conf: {network:?}"
        );
        hba.push_str(&format!(
            "hostssl   all      {CERT_ROLE} {network}  cert
host      all      {CERT_ROLE} {network}  reject
host      all      all          {network}  trust
"
        ));
    }
    let path = data.join("pg_hba.conf");
    std::fs::write(&path, hba).with_context(|| format!("write {}", path.display()))
}

/// The port the first start tries, if set: how the harness's own suite
/// has it find a port taken.
pub const FIRST_PORT_ENV: &str = "ROLLCALL_TEST_PG_FIRST_PORT";

/// `pg_ctl start` on a free loopback port, another one if PostgreSQL finds
/// the port taken (another test may bind it between the pick and the
/// start); the port it listens on.
pub(super) fn start(dir: &Path, bin: &Path, run_as: RunAs) -> anyhow::Result<u16> {
    let log = dir.join("postgres.log");
    let first_port = std::env::var(FIRST_PORT_ENV)
        .ok()
        .and_then(|p| p.parse::<u16>().ok());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = match first_port {
            Some(port) if attempt == 1 => port,
            _ => port_outside_ephemeral_range(),
        };
        let logged_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut pg_ctl = run_as.command(&bin.join("pg_ctl"), dir);
        pg_ctl
            .arg("start")
            .arg("--pgdata")
            .arg(dir.join("data"))
            .arg("--log")
            .arg(&log)
            .args(["--wait", "--timeout=60", "--silent"])
            .arg(format!("--options=-p {port}"));
        let Err(error) = run(&mut pg_ctl) else {
            return Ok(port);
        };
        let text = std::fs::read(&log).unwrap_or_default();
        let this_start = String::from_utf8_lossy(
            text.get(usize::try_from(logged_before).unwrap_or(0)..)
                .unwrap_or_default(),
        )
        .into_owned();
        if this_start.contains("Address already in use") && attempt < 5 {
            eprintln!("PostgreSQL found port {port} taken; starting it on another one.");
            continue;
        }
        return Err(error.context(format!(
            "pg_ctl start on port {port}; its log {}:\n{}",
            log.display(),
            tail(&this_start, 20)
        )));
    }
}

/// The last `lines` lines of `text`.
pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
