//! Connections that never finish a TLS handshake cannot lock agents out,
//! and refusals do not flood the log. A real server with real mTLS; the
//! idle sockets are plain TCP from other loopback addresses (all of
//! 127.0.0.0/8 is loopback on Linux), so each test's log lines can be told
//! apart by the peer's address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rollcall_proto::model::Role;
use rollcall_proto::v1;
use rollcall_proto::v1::operator_service_client::OperatorServiceClient;
use rollcall_server::config::ServerConfig;
use rollcall_tests::{Pki, TestAgent, TestServer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Every warning the process logged, as `message field=value ...`.
fn warnings() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LINES.get_or_init(Default::default)
}

struct Capture;

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?} "));
        } else {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            let mut line = Line(String::new());
            event.record(&mut line);
            warnings().lock().expect("lock").push(line.0);
        }
    }
}

/// The harness's `init`, with the log captured as well as printed.
fn init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::registry()
            .with(Capture)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_target(false)
                    .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
            )
            .try_init();
    });
}

/// Warnings about a limit that name a peer within `ips`.
fn limit_lines(ips: &[IpAddr]) -> Vec<String> {
    warnings()
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| l.contains("limit"))
        .filter(|l| ips.iter().any(|ip| l.contains(&format!("peer={ip}:"))))
        .cloned()
        .collect()
}

/// `n` TCP connections to `server` that never send a byte, spread evenly
/// over `sources`.
async fn idle_sockets(server: SocketAddr, sources: &[IpAddr], n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(sources[i % sources.len()], 0))
            .expect("bind a loopback source address");
        out.push(socket.connect(server).await.expect("connect"));
    }
    out
}

/// How many of `sockets` the server closes within `within` (a read sees
/// the end of the stream); the rest stay open and are returned.
async fn closed_within(sockets: Vec<TcpStream>, within: Duration) -> (usize, Vec<TcpStream>) {
    let mut tasks = tokio::task::JoinSet::new();
    for mut s in sockets {
        tasks.spawn(async move {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(within, s.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => None,
                Ok(Ok(_)) => panic!("the server sent bytes to a client that never said hello"),
                Err(_) => Some(s),
            }
        });
    }
    let mut open = Vec::new();
    let mut closed = 0;
    while let Some(r) = tasks.join_next().await {
        match r.expect("join") {
            Some(s) => open.push(s),
            None => closed += 1,
        }
    }
    (closed, open)
}

/// Waits up to `timeout` for the node to appear, asking as an operator;
/// a refused operator connection is retried like any client would.
async fn node_appears(server: &TestServer, name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(channel) = server.channel(&server.operator).await {
            let found = OperatorServiceClient::new(channel)
                .get_node(v1::GetNodeRequest {
                    name: name.to_owned(),
                })
                .await;
            if found.is_ok() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_one_host_do_not_lock_a_real_agent_out() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |c| {
        c.limits.max_connections = 300;
        c.limits.max_handshakes_per_source =
            ServerConfig::default().limits.max_handshakes_per_source;
    })
    .await;
    assert_eq!(
        server.config.limits.max_handshakes_per_source, 16,
        "default"
    );
    let flooder = [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))];
    let idle = idle_sockets(server.addr(), &flooder, 400).await;

    // Everything over the per-source cap is closed at once, not held until
    // the handshake deadline (5 s).
    let (closed, idle) = closed_within(idle, Duration::from_secs(2)).await;
    assert_eq!(
        closed,
        400 - 16,
        "all but max_handshakes_per_source closed at once"
    );

    let started = Instant::now();
    let agent = TestAgent::start(&server, &pki, "cmp1", Role::Compute);
    assert!(
        node_appears(&server, "cmp1", Duration::from_secs(5)).await,
        "the agent got in within 5 s while {} idle sockets are open",
        idle.len()
    );
    let took = started.elapsed();

    let lines = limit_lines(&flooder);
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "384 refusals give one rate-limited line with a count, got {}: {lines:#?}",
        lines.len()
    );
    assert!(
        lines[0].contains("max_handshakes_per_source=16"),
        "{lines:#?}"
    );
    eprintln!("agent in after {took:?}; log lines: {lines:#?}");
    drop(idle);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_many_hosts_hold_handshake_slots_only_until_the_deadline() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |c| {
        c.limits.max_connections = 300;
        c.limits.handshake_timeout_secs = 3;
    })
    .await;
    let max_handshakes = server.config.limits.max_handshakes;
    assert_eq!(max_handshakes, 128, "default");
    // 100 source addresses, four sockets each: the per-source cap never
    // bites, the cap on handshakes in progress does.
    let flooders: Vec<IpAddr> = (1..=100)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 1, i)))
        .collect();
    let idle = idle_sockets(server.addr(), &flooders, 400).await;
    // Well before the 3 s deadline, every socket over the handshake cap is
    // closed already (not queued, not holding a connection slot).
    let (closed, idle) = closed_within(idle, Duration::from_millis(1_500)).await;
    assert_eq!(closed, 400 - max_handshakes, "closed at once");

    let started = Instant::now();
    let agent = TestAgent::start(&server, &pki, "cmp2", Role::Compute);
    assert!(
        node_appears(&server, "cmp2", Duration::from_secs(5)).await,
        "the agent got in within 5 s"
    );
    eprintln!("agent in after {:?}", started.elapsed());

    let lines = limit_lines(&flooders);
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "272 refusals give one rate-limited line, got {}: {lines:#?}",
        lines.len()
    );
    drop(idle);
    agent.stop().await;
}

/// Warnings whose text contains every one of `needles`.
fn lines_with(needles: &[&str]) -> Vec<String> {
    warnings()
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .cloned()
        .collect()
}

/// Opens an agent session with `cert` and returns the status that refused it.
async fn refused(
    server: &TestServer,
    cert: &rollcall_tests::ClientCert,
    node: &str,
) -> tonic::Status {
    match rollcall_tests::RawSession::open(server, cert, rollcall_tests::hello(node, Role::Compute))
        .await
    {
        Err(s) => s,
        Ok(mut s) => loop {
            match s.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("session ended without a refusal"),
                Err(s) => break s,
            }
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_refusals_are_logged_with_the_peer_and_the_reason_rate_limited() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;

    // No usable identity, found when the connection is made. Each refusal
    // the client sees is the barrier: the line is logged before any
    // request on the connection is answered.
    let cert = pki.agent_with_extra_uri("cmp9", "urn:rollcall:whatever");
    for _ in 0..5 {
        let status = refused(&server, &cert, "cmp9").await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    let lines = lines_with(&["Client certificate refused", "peer=127.0.0.1:"]);
    assert_eq!(lines.len(), 1, "five refusals, one line: {lines:#?}");
    assert!(
        lines[0].contains("urn:rollcall:whatever") && lines[0].contains("reason="),
        "the reason names the extra URI: {}",
        lines[0]
    );

    // A certificate of the wrong kind, found at request time.
    let op = pki.operator("alice");
    for _ in 0..5 {
        let status = refused(&server, &op, "alice").await;
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    let lines = lines_with(&["certificate of the wrong kind", "peer=127.0.0.1:"]);
    assert_eq!(lines.len(), 1, "five refusals, one line: {lines:#?}");
    assert!(
        lines[0].contains("identity=operator alice") && lines[0].contains("needed=agent"),
        "{}",
        lines[0]
    );
}
