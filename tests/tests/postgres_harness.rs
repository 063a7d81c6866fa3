//! The PostgreSQL harness the store suites stand on does what they assume:
//! Debian's real server, one cluster per test process, databases that do
//! not share data, TLS that libpq verifies against the harness's CA, a role
//! that logs in only with a client certificate, `terminate` that ends the
//! named sessions and no others, and nothing left running or on disk once
//! the process that started it is gone, however it went.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollcall_tests::postgres::{self, CERT_ROLE, Postgres};

/// The shared cluster (or a skip outside CI); says how long the call took,
/// which for the first caller is the whole start.
fn pg() -> Option<&'static Postgres> {
    let asked = Instant::now();
    let pg = postgres::or_skip()?;
    eprintln!("Postgres::shared() answered in {:?}.", asked.elapsed());
    Some(pg)
}

#[test]
fn two_databases_do_not_share_data() {
    let Some(pg) = pg() else { return };
    let first = pg.database("separate").expect("first database");
    let second = pg.database("separate").expect("second database");
    assert_ne!(first, second);

    pg.psql(
        &first,
        "CREATE TABLE marks (n int); INSERT INTO marks VALUES (7);",
    )
    .expect("write the first");
    assert_eq!(pg.psql(&first, "SELECT n FROM marks;").expect("read"), "7");
    assert_eq!(
        pg.psql(&second, "SELECT to_regclass('marks') IS NULL;")
            .expect("look in the second"),
        "t",
        "the second database sees the first's table"
    );
    let error = pg
        .psql(&second, "SELECT n FROM marks;")
        .expect_err("no such table in the second");
    assert!(error.to_string().contains("does not exist"), "{error:#}");
}

#[test]
fn tls_is_verified_against_the_harness_ca_for_both_loopback_names() {
    let Some(pg) = pg() else { return };
    let db = pg.database("tls").expect("database");
    let name = db.rsplit_once('/').expect("a URL").1;
    let ssl_of_this_session = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();";

    assert_eq!(
        pg.psql(&pg.tls_url(name), ssl_of_this_session)
            .expect("verify-full for 127.0.0.1"),
        "t"
    );
    let by_name = format!(
        "host=localhost port={} user=postgres dbname={name} sslmode=verify-full sslrootcert={}",
        pg.port(),
        pg.ca_file().display()
    );
    assert_eq!(
        pg.psql(&by_name, ssl_of_this_session)
            .expect("verify-full for localhost"),
        "t"
    );
    assert_eq!(
        pg.psql(&format!("{db}?sslmode=disable"), ssl_of_this_session)
            .expect("plain TCP"),
        "f",
        "pg_stat_ssl tells a plain session from a TLS one"
    );

    // A CA that did not sign the server's certificate: libpq must refuse.
    let stranger = rollcall_tests::Pki::new();
    let error = pg
        .psql(
            &format!(
                "{db}?sslmode=verify-full&sslrootcert={}",
                stranger.ca_cert().display()
            ),
            "SELECT 1;",
        )
        .expect_err("another CA does not verify the server");
    assert!(
        error.to_string().contains("certificate verify failed"),
        "{error:#}"
    );
}

#[test]
fn the_certificate_role_logs_in_with_its_certificate_and_only_with_it() {
    let Some(pg) = pg() else { return };
    let db = pg.database("cert").expect("database");
    let name = db.rsplit_once('/').expect("a URL").1;
    let cert = pg.client_cert(CERT_ROLE).expect("client cert");
    let mode = std::fs::metadata(&cert.key)
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", cert.key.display());

    let who = pg
        .psql(
            &pg.cert_url(name, CERT_ROLE, &cert),
            "SELECT current_user, s.ssl, s.client_dn FROM pg_stat_ssl s \
             WHERE s.pid = pg_backend_pid();",
        )
        .expect("the cert role logs in with its certificate");
    assert_eq!(who, format!("{CERT_ROLE}|t|/CN={CERT_ROLE}"));

    let without_cert = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url_as(CERT_ROLE, name),
        pg.ca_file().display()
    );
    let error = pg
        .psql(&without_cert, "SELECT 1;")
        .expect_err("TLS without a client certificate");
    assert!(error.to_string().contains("certificate"), "{error:#}");

    let other = pg.client_cert("someone_else").expect("client cert");
    let error = pg
        .psql(&pg.cert_url(name, CERT_ROLE, &other), "SELECT 1;")
        .expect_err("another name's certificate");
    assert!(
        error
            .to_string()
            .contains("certificate authentication failed"),
        "{error:#}"
    );

    let error = pg
        .psql(
            &format!("{}?sslmode=disable", pg.url_as(CERT_ROLE, name)),
            "SELECT 1;",
        )
        .expect_err("the cert role without TLS");
    assert!(
        error.to_string().contains("rejects connection"),
        "{error:#}"
    );
}

/// A psql session that sleeps on `url` as `application_name` until it is
/// ended; killed on drop.
struct Session(Child);

impl Session {
    fn open(pg: &Postgres, url: &str, application_name: &str) -> Self {
        let child = Command::new(pg.bin_dir().join("psql"))
            .args([
                "--no-psqlrc",
                "--quiet",
                "--command",
                "SELECT pg_sleep(120);",
            ])
            .arg("--dbname")
            .arg(format!("{url}?application_name={application_name}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start psql");
        Self(child)
    }

    /// Its exit status, once it has ended by itself within `within`.
    fn ended(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_pids(pg: &Postgres, db: &str, app: &str, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = pg.backend_pids_of(db, app).expect("backend pids");
        if pids.len() == n {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "{app} has {} sessions on {db}, not {n}",
            pids.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn terminate_ends_the_named_sessions_and_no_others() {
    let Some(pg) = pg() else { return };
    let db = pg.database("terminate").expect("database");
    let mut victim = Session::open(pg, &db, "replica-a");
    let mut bystander = Session::open(pg, &db, "replica-b");
    let victim_pids = wait_for_pids(pg, &db, "replica-a", 1);
    let bystander_pids = wait_for_pids(pg, &db, "replica-b", 1);

    assert_eq!(pg.terminate(&db, "replica-a").expect("terminate"), 1);
    let status = victim
        .ended(Duration::from_secs(10))
        .expect("the terminated session's psql ends");
    assert!(!status.success(), "psql saw its session end: {status}");
    assert_eq!(
        pg.backend_pids_of(&db, "replica-a").expect("pids"),
        Vec::<u32>::new()
    );

    assert_eq!(
        pg.backend_pids_of(&db, "replica-b").expect("pids"),
        bystander_pids
    );
    assert!(bystander.ended(Duration::ZERO).is_none());
    assert_ne!(victim_pids, bystander_pids);
    assert!(
        std::fs::read_to_string(pg.log_path())
            .expect("log")
            .contains("terminating connection due to administrator command"),
        "the server logs the termination in {}",
        pg.log_path().display()
    );
}

#[test]
fn cpu_seconds_count_what_the_backends_spent() {
    let Some(pg) = pg() else { return };
    let db = pg.database("cpu").expect("database");
    let before = pg.cpu_seconds().expect("cpu before");
    // A backend that burns CPU and then exits: its time must still count.
    pg.psql(&db, "SELECT count(*) FROM generate_series(1, 5000000);")
        .expect("work");
    let after = pg.cpu_seconds().expect("cpu after");
    assert!(
        after - before >= 0.1,
        "5 million rows took {before} → {after} s of CPU"
    );
}

/// Runs rollcall-pg-hold with `how`; where its cluster is.
fn hold(how: &str) -> (Child, PathBuf, u32) {
    hold_with(how, &[])
}

fn hold_with(how: &str, env: &[(&str, String)]) -> (Child, PathBuf, u32) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall-pg-hold"))
        .arg(how)
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Its panic is on purpose: one line, no backtrace.
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rollcall-pg-hold");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read its line");
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_owned()
    };
    let dir = PathBuf::from(field("dir="));
    let pid = field("pid=").parse().expect("pid");
    assert!(dir.join("data").exists(), "{}", dir.display());
    assert!(is_postgres(pid), "pid {pid} is a running postgres");
    (child, dir, pid)
}

fn is_postgres(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("postgres"))
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
}

fn assert_gone(dir: &Path, pid: u32, how: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while (dir.exists() || is_postgres(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_postgres(pid), "postmaster {pid} still runs after {how}");
    assert!(
        !dir.exists(),
        "{} is still there after {how}",
        dir.display()
    );
}

#[test]
fn a_cluster_goes_when_its_process_is_killed_with_sigkill() {
    if !postgres::installed_or_skip() {
        return;
    }
    let (mut child, dir, pid) = hold("hold");
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert_gone(&dir, pid, "SIGKILL");
}

#[test]
fn a_cluster_goes_when_its_process_panics() {
    if !postgres::installed_or_skip() {
        return;
    }
    let (mut child, dir, pid) = hold("panic");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "it panicked: {status}");
    assert_gone(&dir, pid, "a panic");
}

#[test]
fn a_port_found_taken_at_start_is_given_up_for_another() {
    if !postgres::installed_or_skip() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (mut child, dir, pid) = hold_with("hold", &[(postgres::FIRST_PORT_ENV, port.to_string())]);
    let log = std::fs::read_to_string(dir.join("postgres.log")).expect("log");
    assert!(
        log.contains(&format!(
            "Is another postmaster already running on port {port}?"
        )),
        "the first start tried the taken port {port}: {log}"
    );
    assert!(
        log.contains("ready to accept connections"),
        "the second start came up: {log}"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert_gone(&dir, pid, "SIGKILL");
}

#[test]
fn databases_made_side_by_side_are_all_there_and_distinct() {
    let Some(pg) = pg() else { return };
    let urls: Vec<String> = std::thread::scope(|s| {
        let makers: Vec<_> = (0..8)
            .map(|_| s.spawn(|| pg.database("side_by_side").expect("database")))
            .collect();
        makers
            .into_iter()
            .map(|m| m.join().expect("maker"))
            .collect()
    });
    let mut names: Vec<&str> = urls
        .iter()
        .map(|u| u.rsplit_once('/').expect("URL").1)
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 8, "{urls:?}");
    let listed = pg
        .psql(
            &pg.url("postgres"),
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'side\\_by\\_side\\_%';",
        )
        .expect("list");
    assert_eq!(listed, "8");
}

/// What a Rust client of the store does: PostgreSQL's SSLRequest, then a
/// rustls handshake that verifies the server against the harness's CA for
/// `server_name`, presenting `client` if given. The error, if it fails.
async fn rustls_handshake(
    pg: &Postgres,
    server_name: &str,
    client: Option<&rollcall_tests::ClientCert>,
) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    rollcall_tests::init();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pg.ca_pem().as_bytes()).expect("CA PEM"))
        .expect("add CA");
    let config = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some(cert) => config
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(&cert.cert_pem).expect("cert PEM")],
                PrivateKeyDer::from_pem_slice(&cert.key_pem).expect("key PEM"),
            )
            .expect("client auth"),
        None => config.with_no_client_auth(),
    };
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", pg.port()))
        .await
        .expect("connect");
    // SSLRequest: length 8, code 80877103; the server answers 'S' or 'N'.
    let mut request = 8u32.to_be_bytes().to_vec();
    request.extend_from_slice(&80_877_103u32.to_be_bytes());
    tcp.write_all(&request).await.expect("SSLRequest");
    assert_eq!(
        tcp.read_u8().await.expect("answer"),
        b'S',
        "the server offers TLS"
    );
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map(drop)
        .map_err(|e| rollcall_tests::causes(&e))
}

#[tokio::test]
async fn a_rustls_client_verifies_the_server_for_both_loopback_names_and_no_other() {
    let Some(pg) = pg() else { return };
    rustls_handshake(pg, "127.0.0.1", None)
        .await
        .expect("verified as 127.0.0.1");
    rustls_handshake(pg, "localhost", None)
        .await
        .expect("verified as localhost");
    let cert = pg.client_cert(CERT_ROLE).expect("client cert");
    rustls_handshake(pg, "localhost", Some(&cert))
        .await
        .expect("with a client certificate");
    let error = rustls_handshake(pg, "db.example.com", None)
        .await
        .expect_err("a name the certificate does not hold");
    assert!(error.contains("not valid for name"), "{error}");
}
