//! Debian's real PostgreSQL server for the tests: one cluster per test
//! process, started on first use in a temporary directory, listening on a
//! loopback port of its own with TLS (a CA of its own, client-certificate
//! authentication for one role), and stopped and removed when the process
//! ends, however it ends.
//!
//! ```ignore
//! let Some(pg) = postgres::or_skip() else { return };
//! let url = pg.database("leases")?;         // postgres://postgres@127.0.0.1:PORT/leases_1
//! pg.terminate(&url, "rollcall-server-a")?; // that replica's sessions end
//! ```
//!
//! Outside CI a missing PostgreSQL skips the test that asks ([`or_skip`]
//! returns `None` and says so); with CI=true it fails the test.
//!
//! Every helper runs `psql` from the cluster's own bin dir and blocks for
//! it (tens of milliseconds); an async test that must not stall its
//! runtime meanwhile calls them in `spawn_blocking`.

mod cluster;
mod procfs;
mod tls;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, anyhow, bail};

use crate::{ClientCert, in_ci};
pub use cluster::FIRST_PORT_ENV;
use cluster::RunAs;

/// Where a cluster of its own ([`Postgres::start_reachable`]) listens
/// besides loopback, and whom it lets in there: servers in containers,
/// which reach this machine at their Docker network's gateway.
#[derive(Clone, Debug)]
pub struct Reachable {
    /// An address of this machine to listen on too (the gateway); the
    /// server's certificate names it, so `verify-full` works there.
    pub address: IpAddr,
    /// The clients' network, as pg_hba.conf takes it (`172.18.0.0/16`):
    /// let in as loopback is, [`CERT_ROLE`] only with its certificate.
    pub clients: String,
}

/// The superuser every URL without a role of its own logs in as.
pub const SUPERUSER: &str = "postgres";

/// The one role that logs in with a client certificate (`pg_hba.conf`
/// method `cert`), and only over TLS.
pub const CERT_ROLE: &str = "rollcall_cert";

/// One running cluster; see the module's doc.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    ca: tls::TestCa,
    /// `getconf CLK_TCK`: the unit of /proc's CPU times.
    ticks_per_second: u64,
    next_database: AtomicU64,
    next_client: AtomicU64,
    /// Held open for as long as the process lives: its closing is what
    /// tells the watchdog to stop the cluster (a static is never dropped).
    _watchdog: ChildStdin,
}

static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();

/// The shared cluster, or `None` outside CI with one line saying why the
/// test skips. In CI a missing PostgreSQL is a failure (scripts/test.sh
/// installs Debian's `postgresql`); a PostgreSQL that is there and does not
/// start is a failure everywhere.
pub fn or_skip() -> Option<&'static Postgres> {
    if !installed_or_skip() {
        return None;
    }
    match Postgres::shared() {
        Ok(pg) => Some(pg),
        Err(e) => panic!("PostgreSQL is installed but did not start: {e:#}"),
    }
}

/// Whether PostgreSQL's server binaries are there, without starting
/// anything: false outside CI with one line saying why the test skips, a
/// failure in CI. For a test that starts clusters in processes of its own.
pub fn installed_or_skip() -> bool {
    if cluster::bin_dir().is_some() {
        return true;
    }
    let why = "PostgreSQL's server binaries are missing (no $PG_BIN/initdb, no \
               /usr/lib/postgresql/*/bin/initdb)";
    assert!(
        !in_ci(),
        "{why}: install Debian's postgresql (scripts/test.sh does)"
    );
    eprintln!("SKIP: {why}; apt-get install postgresql");
    false
}

/// Set to `postgres`, every [`crate::TestServer`] of the process keeps its
/// fleet in PostgreSQL: any suite runs on it without a `_pg` twin.
pub const STORE_ENV: &str = "ROLLCALL_TEST_STORE";

/// Whether this test process's servers keep their fleet in PostgreSQL:
/// [`STORE_ENV`] says so, or the test binary is a `_pg` twin of a suite
/// (`tests/campaign_pg.rs` builds `campaign_pg-HASH`), which is how plain
/// `cargo nextest run` runs a whole suite on PostgreSQL too.
pub fn wanted() -> bool {
    if std::env::var(STORE_ENV).is_ok_and(|v| v == "postgres") {
        return true;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.file_stem()?.to_str()?.to_owned()))
        .is_some_and(|stem| is_pg_twin(&stem))
}

/// `campaign_pg-1a2b3c…` (cargo's name for `tests/campaign_pg.rs`) or
/// `campaign_pg` (run by hand from elsewhere): the suite's name ends in `_pg`.
fn is_pg_twin(stem: &str) -> bool {
    let suite = match stem.rsplit_once('-') {
        Some((suite, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => suite,
        _ => stem,
    };
    suite.ends_with("_pg")
}

impl Postgres {
    /// The test process's cluster, started by the first caller (the others
    /// wait for it). A start that failed fails every later call the same way.
    pub fn shared() -> anyhow::Result<&'static Postgres> {
        SHARED
            .get_or_init(|| Self::start(None).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// A cluster of its own, not the shared one, that also listens where
    /// `reach` says (see [`Reachable`]); stopped and removed when it is
    /// dropped or the test process ends. Everything else is as in the
    /// shared one: loopback, TLS, the certificate role.
    pub fn start_reachable(reach: &Reachable) -> anyhow::Result<Self> {
        Self::start(Some(reach))
    }

    fn start(reach: Option<&Reachable>) -> anyhow::Result<Self> {
        let bin = cluster::bin_dir().context(
            "PostgreSQL's server binaries are missing: install Debian's postgresql or set PG_BIN",
        )?;
        let run_as = RunAs::detect();
        let dir = tempfile::Builder::new()
            .prefix("rollcall-test-postgres-")
            .tempdir()
            .context("create the cluster's temp dir")?
            // The watchdog removes it, also after a SIGKILL of this process.
            .keep();
        // First of all, so that whatever fails below is cleaned up too: an
        // error drops the pipe and the watchdog removes the directory.
        let watchdog = cluster::watchdog(&dir, &bin, run_as)?;
        let ca = tls::TestCa::new()?;
        let server = ca.server(reach.map(|r| r.address))?;
        let tls_dir = dir.join("tls");
        std::fs::create_dir(&tls_dir).context("create the tls dir")?;
        std::fs::write(tls_dir.join("ca.crt"), &ca.cert_pem).context("write ca.crt")?;
        std::fs::write(tls_dir.join("server.crt"), &server.cert_pem).context("write server.crt")?;
        tls::write_private(&tls_dir.join("server.key"), &server.key_pem)?;
        run_as.own(&dir)?;
        cluster::initdb(&dir, &bin, run_as)?;
        cluster::configure(&dir, reach)?;
        let port = cluster::start(&dir, &bin, run_as)?;
        let clients = dir.join("clients");
        std::fs::create_dir(&clients).context("create the clients dir")?;
        let ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100);
        let pg = Self {
            dir,
            bin,
            port,
            ca,
            ticks_per_second: ticks,
            next_database: AtomicU64::new(1),
            next_client: AtomicU64::new(1),
            _watchdog: watchdog,
        };
        pg.psql_with(
            &pg.url("postgres"),
            "CREATE ROLE :\"role\" LOGIN;",
            &[("role", CERT_ROLE)],
        )
        .context("create the certificate role")?;
        Ok(pg)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its server binaries (psql, pg_dump, … sit there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Its temporary directory (data/, tls/, clients/, the log, the
    /// sockets), removed with the cluster.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its server log (stderr of the postmaster and every backend).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The CA that signed the server's certificate and verifies clients'.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.crt")
    }

    /// The CA as PEM, for a client that takes bytes rather than a path.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`, without TLS.
    pub fn url(&self, db: &str) -> String {
        self.url_as(SUPERUSER, db)
    }

    /// `postgres://ROLE@127.0.0.1:PORT/DB`, without TLS.
    pub fn url_as(&self, role: &str, db: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{db}", self.port)
    }

    /// [`Self::url`] over TLS, the server verified against [`Self::ca_file`]
    /// for the name it was dialled by (libpq's `verify-full`).
    pub fn tls_url(&self, db: &str) -> String {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            self.url(db),
            self.ca_file().display()
        )
    }

    /// A `verify-full` URL that logs in as the certificate's role with it.
    pub fn cert_url(&self, db: &str, role: &str, cert: &ClientCert) -> String {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            self.url_as(role, db),
            self.ca_file().display(),
            cert.cert.display(),
            cert.key.display()
        )
    }

    /// A client certificate for `role`, signed by the cluster's CA, written
    /// to files of its own (the key 0600, this process's: libpq refuses a
    /// key others can read). Only [`CERT_ROLE`] logs in with one; for any
    /// other name it makes a certificate that the server refuses for
    /// [`CERT_ROLE`].
    pub fn client_cert(&self, role: &str) -> anyhow::Result<ClientCert> {
        let issued = self.ca.client(role)?;
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        let stem = self.dir.join("clients").join(format!("{}-{n}", safe(role)));
        let (cert, key) = (stem.with_extension("crt"), stem.with_extension("key"));
        std::fs::write(&cert, &issued.cert_pem)
            .with_context(|| format!("write {}", cert.display()))?;
        tls::write_private(&key, &issued.key_pem)?;
        Ok(ClientCert {
            cert,
            key,
            cert_pem: issued.cert_pem.into_bytes(),
            key_pem: issued.key_pem.into_bytes(),
        })
    }

    /// A new, empty database of its own (`HINT_N`), owned by the superuser;
    /// its URL.
    pub fn database(&self, name_hint: &str) -> anyhow::Result<String> {
        self.database_owned_by(name_hint, SUPERUSER)
    }

    /// [`Self::database`] owned by `role`, which may then create tables in
    /// its `public` schema (PostgreSQL 15 lets only the owner); a URL that
    /// logs in as `role`.
    pub fn database_owned_by(&self, name_hint: &str, role: &str) -> anyhow::Result<String> {
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        let mut hint = safe(name_hint);
        hint.truncate(40);
        let name = format!("{hint}_{n}");
        self.psql_with(
            &self.url("postgres"),
            "CREATE DATABASE :\"name\" OWNER :\"owner\";",
            &[("name", &name), ("owner", role)],
        )
        .with_context(|| format!("create database {name}"))?;
        Ok(self.url_as(role, &name))
    }

    /// Runs `sql` with psql on `conninfo` (a URL or `key=value` pairs), as
    /// a script that stops at the first error; rows one a line, columns
    /// split by `|`, no headers.
    pub fn psql(&self, conninfo: &str, sql: &str) -> anyhow::Result<String> {
        self.psql_with(conninfo, sql, &[])
    }

    /// [`Self::psql`] with psql variables: `:'name'` in `sql` is `value`
    /// quoted as a literal, `:"name"` as an identifier.
    pub fn psql_with(
        &self,
        conninfo: &str,
        sql: &str,
        vars: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        use std::io::Write;
        let mut psql = Command::new(self.bin.join("psql"));
        cluster::without_pg_env(&mut psql);
        psql.args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only"])
            .args([
                "--set",
                "ON_ERROR_STOP=1",
                "--file",
                "-",
                "--dbname",
                conninfo,
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "rollcall-test-harness");
        for (name, value) in vars {
            psql.arg("--set").arg(format!("{name}={value}"));
        }
        let mut child = psql
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run psql")?;
        let mut stdin = child.stdin.take().context("psql's stdin is piped")?;
        stdin
            .write_all(sql.as_bytes())
            .context("send psql the SQL")?;
        drop(stdin);
        let output = child.wait_with_output().context("wait for psql")?;
        if !output.status.success() {
            bail!(
                "psql {conninfo}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The server processes serving `db` (a name or a URL) to sessions of
    /// `application_name`, in pid order.
    pub fn backend_pids_of(&self, db: &str, application_name: &str) -> anyhow::Result<Vec<u32>> {
        let out = self.psql_with(
            &self.url("postgres"),
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = :'db' AND application_name = :'app' ORDER BY pid;",
            &[("db", database_name(db)), ("app", application_name)],
        )?;
        out.lines()
            .map(|pid| {
                pid.parse()
                    .with_context(|| format!("a pid from psql: {pid}"))
            })
            .collect()
    }

    /// Ends every session of `application_name` on `db` (a name or a URL)
    /// with `pg_terminate_backend`, waiting up to 5 s for each to be gone:
    /// what a replica sees when its connections drop. How many ended.
    pub fn terminate(&self, db: &str, application_name: &str) -> anyhow::Result<usize> {
        let out = self.psql_with(
            &self.url("postgres"),
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
             FROM pg_stat_activity \
             WHERE datname = :'db' AND application_name = :'app' \
               AND pid <> pg_backend_pid();",
            &[("db", database_name(db)), ("app", application_name)],
        )?;
        out.parse()
            .with_context(|| format!("a count from psql: {out}"))
    }

    /// The postmaster's pid (from `postmaster.pid`).
    pub fn pid(&self) -> anyhow::Result<u32> {
        let path = self.dir.join("data/postmaster.pid");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let first = text.lines().next().unwrap_or_default();
        first
            .parse()
            .with_context(|| format!("a pid in {}: {first}", path.display()))
    }

    /// CPU time the cluster has used so far, in seconds: user + system of
    /// the postmaster and of its live children, plus what its exited
    /// children used (the postmaster reaps every backend, so a connection
    /// that came and went is counted too). For benchmarks: take it before
    /// and after.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let ticks = procfs::cpu_ticks_of_tree(self.pid()?)?;
        Ok(ticks as f64 / self.ticks_per_second as f64)
    }
}

/// The database's name in a URL (`…/NAME?…`), or `db` itself.
fn database_name(db: &str) -> &str {
    if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
        return db;
    }
    // The query may hold paths (sslrootcert=/…): cut it off first.
    let before_query = db.split_once('?').map_or(db, |(url, _)| url);
    before_query
        .rsplit_once('/')
        .map_or(before_query, |(_, name)| name)
}

/// `hint` in lower case with anything but letters, digits and `_` made
/// `_`: a name that needs no quoting anywhere.
fn safe(hint: &str) -> String {
    let safe: String = hint
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    if safe.is_empty() { "db".into() } else { safe }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_name_is_read_from_a_url_or_taken_as_given() {
        assert_eq!(
            database_name("postgres://postgres@127.0.0.1:5/leases_1"),
            "leases_1"
        );
        assert_eq!(
            database_name("postgresql://u@h:5/db_2?sslmode=verify-full&sslrootcert=/t/ca.crt"),
            "db_2"
        );
        assert_eq!(database_name("plain"), "plain");
    }

    #[test]
    fn a_pg_twin_is_told_by_its_suite_name_not_its_hash() {
        assert!(is_pg_twin("campaign_pg-1a2b3c4d5e6f7a8b"));
        assert!(is_pg_twin("campaign_pg"));
        assert!(!is_pg_twin("campaign-1a2b3c4d5e6f7a8b"));
        assert!(!is_pg_twin("postgres_harness-0f0f"));
        assert!(!is_pg_twin("store_pg_extra-0f0f"));
        // A hash is hex; "-pg" after a dash is part of no hash.
        assert!(!is_pg_twin("campaign-x_pg-zz"));
    }

    #[test]
    fn a_hint_becomes_a_name_that_needs_no_quoting() {
        assert_eq!(safe("Store failover/A"), "store_failover_a");
        assert_eq!(safe(""), "db");
    }
}
