//! The end-to-end harness: a CA made on the spot, a real server on
//! 127.0.0.1:0 with real mutual TLS and a real SQLite file, real agents in
//! the same process, and raw clients for poking at the edges.
//!
//! ```ignore
//! let pki = Pki::new();
//! let server = TestServer::start(&pki, |_| {}).await;
//! let agent = TestAgent::start(&server, "cmp1", Role::Compute);
//! let node = server.wait_online("cmp1").await;
//! ```

#![forbid(unsafe_code)]

pub mod chaos;
pub mod clusters;
pub mod fleet;
pub mod intake;
pub mod monitoring;
pub mod nodes;
pub mod ops;
pub mod postgres;
pub mod scrape;
pub mod sim;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_agent::collect::{Sources, SystemCollector};
use rollcall_agent::config::HostConfig;
use rollcall_agent::session::{Session, Settings};
use rollcall_proto::identity::{Identity, Role as OperatorRole};
use rollcall_proto::model::{self, Role};
use rollcall_proto::v1;
use rollcall_proto::v1::operator_service_client::OperatorServiceClient;
use rollcall_server::RunningServer;
use rollcall_server::config::ServerConfig;
use rollcall_server::pki::{self, Ca};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Installs the crypto provider and a test log writer; call at the top of
/// every test (repeated calls are harmless). What is logged is also kept
/// for [`logs`].
pub fn init() {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = std::env::var("ROLLCALL_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(tracing_subscriber::fmt::TestWriter::new.and(|| LogCapture))
        .with_ansi(false)
        .with_target(false)
        .with_max_level(
            filter
                .parse::<tracing::Level>()
                .unwrap_or(tracing::Level::WARN),
        )
        .try_init();
}

/// Everything this process logged (at `ROLLCALL_LOG`'s level, warn by
/// default) since it started, up to 64 MiB. nextest runs each test in a
/// process of its own, so this is one test's log.
pub fn logs() -> String {
    let log = LOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    String::from_utf8_lossy(&log).into_owned()
}

static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogCapture;

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut log = LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() + buf.len() <= 64 << 20 {
            log.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A directory of its own under the system's temp dir (`tempfile`: a
/// unique name, made with mode 0700), removed with what it holds when
/// dropped.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// `rollcall-test-TAG-XXXXXX`: the tag says which test left it, should
    /// the process be killed before the drop.
    pub fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rollcall-test-{tag}-"))
            .tempdir()
            .expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A client certificate and key, as files and as PEM.
#[derive(Clone)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// A pki directory made by `certs init`, exactly as operators make one.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = TempDir::new("pki");
        pki::init(dir.path(), &[]).expect("certs init");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.path().join("ca.crt")
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_cert()).expect("ca.crt")
    }

    fn issue(&self, who: Identity) -> ClientCert {
        let (cert, key) = pki::issue(self.path(), &who, true).expect("certs issue");
        ClientCert {
            cert_pem: std::fs::read(&cert).expect("cert"),
            key_pem: std::fs::read(&key).expect("key"),
            cert,
            key,
        }
    }

    pub fn agent(&self, node: &str) -> ClientCert {
        self.issue(Identity::agent(node))
    }

    /// An operator certificate of role operator (what `certs issue
    /// --operator NAME` makes).
    pub fn operator(&self, name: &str) -> ClientCert {
        self.with_role(name, OperatorRole::Operator)
    }

    pub fn viewer(&self, name: &str) -> ClientCert {
        self.with_role(name, OperatorRole::Viewer)
    }

    pub fn admin(&self, name: &str) -> ClientCert {
        self.with_role(name, OperatorRole::Admin)
    }

    pub fn with_role(&self, name: &str, role: OperatorRole) -> ClientCert {
        self.issue(Identity::operator(name, role))
    }

    /// The loaded CA, for certificates `certs issue` would never make
    /// (expired ones, say).
    pub fn ca(&self) -> Ca {
        Ca::load(self.path()).expect("load CA")
    }

    /// An agent certificate signed by the test CA that carries `extra` as a
    /// second URI next to its agent identity: what `certs issue` never makes,
    /// made with rcgen from the pki's own CA key.
    pub fn agent_with_extra_uri(&self, node: &str, extra: &str) -> ClientCert {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
        let ca_key = std::fs::read_to_string(self.path().join("ca.key")).expect("ca.key");
        let ca_pem = String::from_utf8(self.ca_pem()).expect("pem");
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key).expect("ca key"))
            .expect("issuer");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node);
        params.subject_alt_names = vec![
            SanType::URI(
                format!("urn:rollcall:agent:{node}")
                    .try_into()
                    .expect("uri"),
            ),
            SanType::URI(extra.try_into().expect("uri")),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        ClientCert {
            cert: Default::default(),
            key: Default::default(),
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A real server on 127.0.0.1 with a real SQLite file, or a database of
/// its own in the shared PostgreSQL cluster when [`postgres::wanted`].
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub config: ServerConfig,
    pub data: TempDir,
    /// The PostgreSQL database the fleet is kept in (a superuser URL
    /// without TLS, for `psql`), `None` on SQLite. Kept across restarts.
    pub postgres: Option<String>,
    pub ca_pem: Vec<u8>,
    pub operator: ClientCert,
    /// Fails every store write while set (`faults.fail("disk full")`), as
    /// a full disk would; the server's store sits behind it.
    pub faults: rollcall_server::store::FaultSwitch,
    /// What the server was started with beyond its config, for restarts.
    options: rollcall_server::Options,
}

/// A free loopback port below Linux's ephemeral range (32768–60999 by
/// default). A server the test restarts on its own port must get it back:
/// a port the kernel handed out as ephemeral can meanwhile be taken as the
/// source port of an agent's reconnect to it (a TCP self-connect), and the
/// restart fails with "address in use".
pub fn port_outside_ephemeral_range() -> u16 {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000..32000");
}

/// A fresh database of the shared cluster for a server of a process whose
/// servers keep their fleet in PostgreSQL ([`postgres::wanted`]), named
/// after the test (its thread's name) for whoever reads the cluster's log. Outside CI a missing PostgreSQL leaves the server on
/// SQLite, saying so; in CI it fails the test.
fn wanted_database(config: &mut ServerConfig) {
    let Some(pg) = postgres::or_skip() else {
        eprintln!("PostgreSQL is missing: this server keeps its fleet in SQLite instead.");
        return;
    };
    let hint = std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .map_or_else(
            || "server".to_owned(),
            |name| name.rsplit("::").next().unwrap_or(name).to_owned(),
        );
    let url = pg.database(&hint).expect("a database for the server");
    use_postgres(config, pg, &url);
}

/// Points `config` at `url`, a database of the harness's cluster as
/// [`postgres::Postgres::database`] names it, the way every harness server
/// reaches PostgreSQL: over TLS, the server verified against the cluster's
/// CA (`[store] ca`; tokio-postgres itself knows no `verify-full`).
pub fn use_postgres(config: &mut ServerConfig, pg: &postgres::Postgres, url: &str) {
    config.store.url = Some(format!("{url}?sslmode=require"));
    config.store.ca = Some(pg.ca_file());
}

impl TestServer {
    /// Starts a server on a free port with a 1 s report interval (tests
    /// should not wait ten seconds for anything); `tweak` adjusts the rest.
    pub async fn start(pki: &Pki, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_with_options(pki, tweak, rollcall_server::Options::default()).await
    }

    /// [`Self::start`] with what a test injects beyond the config (kept
    /// for restarts); the store's fault switch is the harness's own.
    pub async fn start_with_options(
        pki: &Pki,
        tweak: impl FnOnce(&mut ServerConfig),
        options: rollcall_server::Options,
    ) -> Self {
        Self::launch(pki, tweak, options, postgres::wanted()).await
    }

    /// [`Self::start`] on SQLite, whatever [`postgres::wanted`] says: for a
    /// test of what moves a fleet from SQLite to PostgreSQL.
    pub async fn start_on_sqlite(pki: &Pki, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::launch(pki, tweak, rollcall_server::Options::default(), false).await
    }

    /// Starts the server; on PostgreSQL when `tweak` points it there (see
    /// [`use_postgres`]), or in a database of its own when `own_database`
    /// and the tweak chose none.
    async fn launch(
        pki: &Pki,
        tweak: impl FnOnce(&mut ServerConfig),
        mut options: rollcall_server::Options,
        own_database: bool,
    ) -> Self {
        let data = TempDir::new("data");
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: data.path().to_owned(),
            ..Default::default()
        };
        config.tls.ca = Some(pki.ca_cert());
        config.tls.cert = Some(pki.path().join("server.crt"));
        config.tls.key = Some(pki.path().join("server.key"));
        config.agents.report_interval_secs = 1;
        config.agents.offline_after_missed_reports = 3;
        config.store.flush_interval_ms = 100;
        // Every test client dials from 127.0.0.1, as if a whole fleet sat
        // behind one NAT address: twenty agents reconnecting after a restart
        // would otherwise fill the per-source handshake cap and have the
        // operator's connection closed. Tests of that cap set it back.
        config.limits.max_handshakes_per_source = config.limits.max_handshakes;
        tweak(&mut config);
        if own_database && config.store.url.is_none() {
            wanted_database(&mut config);
        }
        // On PostgreSQL, a lease short enough that a restart after a crash
        // waits two seconds for it, not the shipped ten (unless the test
        // chose its own), and the URL the replica is reached by: the port
        // the harness picks below, unless the test set its own.
        let on_postgres = config.store.url.is_some();
        let defaults = rollcall_server::config::ReplicaConfig::default();
        if on_postgres && config.replica.lease_ms == defaults.lease_ms {
            config.replica.lease_ms = 2_000;
        }
        if on_postgres && config.replica.poll_ms == defaults.poll_ms {
            config.replica.poll_ms = 200;
        }
        let advertise = on_postgres && config.replica.advertise.is_none();
        let postgres = config
            .store
            .url
            .as_deref()
            .map(|url| url.split_once('?').map_or(url, |(url, _)| url).to_owned());
        // Never the shipped 9743: tests run side by side.
        if config.metrics.listen.port() == ServerConfig::default().metrics.listen.port() {
            config.metrics.listen = "127.0.0.1:0".parse().expect("addr");
        }
        let faults = rollcall_server::store::FaultSwitch::default();
        options.store_faults = Some(faults.clone());
        // Ports the harness picks are free when picked, and may be taken by
        // another test before the server binds them: pick again then.
        let (pick_listen, pick_metrics) =
            (config.listen.port() == 0, config.metrics.listen.port() == 0);
        let mut tries = 0;
        let server = loop {
            tries += 1;
            if pick_listen {
                config.listen.set_port(port_outside_ephemeral_range());
            }
            if advertise {
                config.replica.advertise =
                    Some(format!("https://localhost:{}", config.listen.port()));
            }
            while pick_metrics
                && (config.metrics.listen.port() == 0
                    || config.metrics.listen.port() == config.listen.port())
            {
                config
                    .metrics
                    .listen
                    .set_port(port_outside_ephemeral_range());
            }
            match rollcall_server::start_with(&config, options.clone()).await {
                Ok(server) => break server,
                Err(
                    rollcall_server::ServeError::Listen { addr, source }
                    | rollcall_server::ServeError::Metrics(
                        rollcall_server::metrics::MetricsError::Listen { addr, source },
                    ),
                ) if (pick_listen || pick_metrics) && tries < 5 => {
                    eprintln!(
                        "Port {addr} was taken before the server bound it ({source}); picking again."
                    );
                    if pick_metrics {
                        config.metrics.listen.set_port(0);
                    }
                }
                Err(e) => panic!("server starts: {e}"),
            }
        };
        config.listen = server.addr;
        if let Some(addr) = server.metrics_addr {
            config.metrics.listen = addr;
        }
        Self {
            server: Some(server),
            config,
            data,
            postgres,
            ca_pem: pki.ca_pem(),
            operator: pki.operator("test-operator"),
            faults,
            options,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.config.listen
    }

    /// Where the server serves `/metrics` (the same across restarts).
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.config.metrics.listen
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr().port())
    }

    /// Stops the server, keeping its data dir.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server
                .stop(Duration::from_secs(10))
                .await
                .expect("clean stop");
        }
    }

    /// Starts the server again on the same address and data dir.
    pub async fn restart(&mut self) {
        self.stop().await;
        let server = rollcall_server::start_with(&self.config, self.options.clone())
            .await
            .expect("server restarts");
        self.server = Some(server);
    }

    /// A channel with the given client certificate.
    pub async fn channel(&self, cert: &ClientCert) -> Result<Channel, tonic::transport::Error> {
        let endpoint = rollcall_proto::connect::endpoint(
            &self.url(),
            &self.ca_pem,
            &cert.cert_pem,
            &cert.key_pem,
        )
        .expect("endpoint");
        endpoint.connect().await
    }

    /// The operator audit (`audit list`), read with `cert`.
    pub async fn operator_audit(&self, cert: &ClientCert) -> Vec<rollcall_proto::v1::AuditRecord> {
        let channel = self.channel(cert).await.expect("connect");
        rollcall_proto::v1::admin_service_client::AdminServiceClient::new(channel)
            .list_audit(rollcall_proto::v1::ListAuditRequest::default())
            .await
            .expect("audit")
            .into_inner()
            .records
    }

    pub async fn operator_client(&self) -> OperatorServiceClient<Channel> {
        OperatorServiceClient::new(
            self.channel(&self.operator)
                .await
                .expect("operator connects"),
        )
    }

    /// `FleetSummary` with the server's defaults.
    pub async fn summary(&self) -> model::FleetSummary {
        self.operator_client()
            .await
            .fleet_summary(v1::FleetSummaryRequest::default())
            .await
            .expect("summary")
            .into_inner()
            .try_into()
            .expect("valid summary")
    }

    pub async fn list(&self) -> Vec<model::Node> {
        let resp = self
            .operator_client()
            .await
            .list_nodes(v1::ListNodesRequest::default())
            .await
            .expect("list nodes");
        resp.into_inner()
            .nodes
            .into_iter()
            .map(|n| n.try_into().expect("valid node"))
            .collect()
    }

    pub async fn node(&self, name: &str) -> Option<model::NodeDetail> {
        let resp = self
            .operator_client()
            .await
            .get_node(v1::GetNodeRequest {
                name: name.to_owned(),
            })
            .await;
        match resp {
            Ok(r) => {
                let r = r.into_inner();
                Some(model::NodeDetail {
                    node: r.node.expect("node").try_into().expect("valid node"),
                    report: r.report.map(|r| r.try_into().expect("valid report")),
                })
            }
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => panic!("get node {name}: {s}"),
        }
    }

    /// Waits until `check` holds for the node, and returns it.
    pub async fn wait_node(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&model::NodeDetail) -> bool,
    ) -> model::NodeDetail {
        eventually(
            Duration::from_secs(15),
            &format!("node {name} {what}"),
            || async { self.node(name).await.filter(|d| check(d)) },
        )
        .await
    }

    pub async fn wait_online(&self, name: &str) -> model::NodeDetail {
        self.wait_node(name, "online", |d| d.node.online && d.report.is_some())
            .await
    }

    pub async fn wait_offline(&self, name: &str) -> model::NodeDetail {
        self.wait_node(name, "offline", |d| !d.node.online).await
    }
}

/// A real agent session in this process (the same code `rollcall-agent
/// run` runs), reading this host through sysinfo.
pub struct TestAgent {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<rollcall_agent::session::Stats>,
}

impl TestAgent {
    pub fn start(server: &TestServer, pki: &Pki, node: &str, role: Role) -> Self {
        Self::start_at(&server.url(), pki, node, role)
    }

    pub fn start_at(url: &str, pki: &Pki, node: &str, role: Role) -> Self {
        let sources = Sources::host_only(SystemCollector::new(HostConfig::default()));
        Self::start_with(url, pki, node, role, |_| sources)
    }

    /// An agent whose sources `make` builds (it gets the agent's shutdown
    /// token, for background collectors).
    pub fn start_with(
        url: &str,
        pki: &Pki,
        node: &str,
        role: Role,
        make: impl FnOnce(&CancellationToken) -> Sources,
    ) -> Self {
        Self::start_full(url, pki, node, role, &format!("boot-{node}"), make, None)
    }

    /// An agent that also runs actions, under the given boot id.
    pub fn start_full(
        url: &str,
        pki: &Pki,
        node: &str,
        role: Role,
        boot_id: &str,
        make: impl FnOnce(&CancellationToken) -> Sources,
        actions: Option<rollcall_agent::actions::Actions>,
    ) -> Self {
        Self::start_listed(&[url.to_owned()], pki, node, role, boot_id, make, actions)
    }

    /// The same, given several servers' URLs (replicas), as
    /// `server = [...]` in agent.toml.
    pub fn start_listed(
        servers: &[String],
        pki: &Pki,
        node: &str,
        role: Role,
        boot_id: &str,
        make: impl FnOnce(&CancellationToken) -> Sources,
        actions: Option<rollcall_agent::actions::Actions>,
    ) -> Self {
        let cert = pki.agent(node);
        let settings = Settings {
            servers: servers.to_vec(),
            node: node.to_owned(),
            role,
            labels: [("test".to_owned(), "yes".to_owned())].into(),
            ca_pem: pki.ca_pem(),
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
            report_interval: Duration::from_secs(1),
            full_every: 30,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            boot_id: boot_id.to_owned(),
            renew: None,
        };
        let shutdown = CancellationToken::new();
        let mut session = Session::new(settings, make(&shutdown)).expect("session");
        if let Some(actions) = actions {
            session = session.with_actions(actions, Duration::from_secs(60));
        }
        let task = tokio::spawn(session.run(shutdown.clone()));
        Self { shutdown, task }
    }

    /// Stops the agent; returns what it sent.
    pub async fn stop(self) -> rollcall_agent::session::Stats {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("agent stops within 5s")
            .expect("agent task did not panic")
    }
}

/// A hand-driven agent session: sends exactly what a test tells it to.
pub struct RawSession {
    pub tx: mpsc::Sender<v1::AgentMessage>,
    pub inbound: tonic::Streaming<v1::ServerMessage>,
}

pub fn hello(node: &str, role: Role) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            node: node.to_owned(),
            role: v1::Role::from(role).into(),
            agent_version: "raw".into(),
            boot_id: "raw-boot".into(),
            ..Default::default()
        })),
    }
}

pub fn report(seq: u64, hostname: &str) -> v1::AgentMessage {
    let report = model::Report {
        seq,
        collected_at: rollcall_proto::timestamp::Timestamp::now(),
        full: true,
        host: Some(model::HostFacts {
            hostname: hostname.to_owned(),
            boot_id: "raw-boot".into(),
            ..Default::default()
        }),
        metrics: Some(Default::default()),
        ..Default::default()
    };
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Report(report.into())),
    }
}

impl RawSession {
    /// Opens a session with `cert` and sends `first`; returns the server's
    /// refusal if the call itself fails.
    pub async fn open(
        server: &TestServer,
        cert: &ClientCert,
        first: v1::AgentMessage,
    ) -> Result<Self, tonic::Status> {
        let channel = server
            .channel(cert)
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connect: {}", causes(&e))))?;
        let mut client = v1::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("queue first message");
        let inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self { tx, inbound })
    }

    /// The next message from the server, or the status that ended the stream.
    pub async fn next(&mut self) -> Result<Option<v1::ServerMessage>, tonic::Status> {
        tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("no server message within 10s"))?
    }
}

/// An error and every cause in its chain, one after the other: a TLS alert
/// behind a transport error sits a few sources down.
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Waits for Ctrl-C or SIGTERM, for tools that must clean up what they
/// started; false at once if SIGTERM cannot be watched.
pub async fn interrupted() -> bool {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return false;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    true
}

/// Polls `f` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The path of one of the workspace's binaries, built by `cargo build`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/this-test → target/debug/NAME
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// True when running in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}
