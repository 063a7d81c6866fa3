//! The operator CLI's channel to the leader among the servers it is given
//! (`--server URL,URL` or repeated, or ROLLCALL_SERVER with commas).
//!
//! It connects to the URLs in turn until one takes the connection. A call
//! that a server answers with UNAVAILABLE (a follower, or a replica while
//! no one leads) goes again, unchanged, to the next server: the leader the
//! follower names in `rollcall-leader` first (one such hint per command,
//! and with the same CA and operator certificate as every connection), then
//! the URLs not tried yet, in their order. When none is left, the call ends
//! in one line naming every server tried and what it said; with one server
//! given, its own answer comes back as it always did.
//!
//! Every operator call sends one message (unary or server-streaming), so
//! the request is kept whole to be sent again. A follower refuses before
//! it answers anything, in the response's headers (a trailers-only
//! response), which is where this looks; a stream that a server cuts later
//! is not sent again: part of it has been answered.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rollcall_proto::connect::{endpoint, error_chain};
use rollcall_proto::servers::{leader_hint, normalize};
use rollcall_proto::text::for_terminal;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{self, HeaderMap};
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The CA and the operator's certificate and key: the same for every server.
pub struct Tls {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// What one server did when the CLI tried it.
#[derive(Clone, Debug)]
enum Said {
    /// No connection: why.
    Unreachable(String),
    /// It refused the call with UNAVAILABLE: its message.
    Answered(String),
}

/// No server given answered as the leader: every one tried, and what it
/// said. The one line the operator reads (see [`super::status_error`]).
#[derive(Clone, Debug)]
pub struct NoLeader(Vec<(String, Said)>);

impl std::fmt::Display for NoLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no rollcall-server answered as the leader: ")?;
        for (i, (url, said)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            match said {
                Said::Unreachable(why) => write!(f, "{url} cannot be reached ({why})")?,
                Said::Answered(message) => {
                    write!(f, "{url} answered \"{}\"", for_terminal(message))?
                }
            }
        }
        f.write_str("; try again in a few seconds, or check --server (ROLLCALL_SERVER)")
    }
}

impl std::error::Error for NoLeader {}

/// A channel that finds the leader: see the module's documentation.
#[derive(Clone)]
pub struct LeaderChannel {
    shared: Arc<Shared>,
}

struct Shared {
    tls: Tls,
    route: tokio::sync::Mutex<Route>,
}

struct Route {
    /// The server calls go to, and the channel to it.
    current: String,
    channel: Channel,
    /// Counts the moves: a call that met a refusal moves on only if no
    /// other call moved meanwhile.
    generation: u64,
    /// Given URLs not tried yet, in their order.
    untried: VecDeque<String>,
    /// The one leader hint a command follows has been followed.
    hint_followed: bool,
    /// Every server tried, in order, and what it said.
    tried: Vec<(String, Said)>,
}

/// Where a call goes after a refusal.
enum Moved {
    /// To the route's new server (or to the one another call moved to).
    Again,
    /// Nowhere: this one line says why.
    NoLeader(NoLeader),
    /// Nowhere, and only one server was ever tried: its answer is the
    /// answer, as with a single server.
    Answer,
}

/// A TLS channel to `url`, or why not (in one line).
async fn connect(tls: &Tls, url: &str) -> Result<Channel, String> {
    let endpoint = endpoint(url, &tls.ca, &tls.cert, &tls.key)?;
    endpoint.connect().await.map_err(|e| error_chain(&e))
}

/// A refusal with UNAVAILABLE before any answer: its status. Other answers
/// (an error or a stream) are the caller's.
fn unavailable(headers: &HeaderMap) -> Option<tonic::Status> {
    let code = headers.get("grpc-status")?;
    if tonic::Code::from_bytes(code.as_bytes()) != tonic::Code::Unavailable {
        return None;
    }
    // tonic panics on details that are not base64; a refusal needs none.
    let mut headers = headers.clone();
    headers.remove("grpc-status-details-bin");
    tonic::Status::from_header_map(&headers)
}

impl LeaderChannel {
    /// Connects to the first of `servers` (normalized, not empty) that
    /// takes the connection. None does: with one server the error is as it
    /// always was (`cannot connect to URL: why`), else [`NoLeader`].
    pub async fn connect(servers: Vec<String>, tls: Tls) -> Result<Self, String> {
        let single = servers.len() == 1;
        let mut untried = VecDeque::from(servers);
        let mut tried = Vec::new();
        while let Some(url) = untried.pop_front() {
            match connect(&tls, &url).await {
                Ok(channel) => {
                    let route = Route {
                        current: url,
                        channel,
                        generation: 0,
                        untried,
                        hint_followed: false,
                        tried,
                    };
                    return Ok(Self {
                        shared: Arc::new(Shared {
                            tls,
                            route: tokio::sync::Mutex::new(route),
                        }),
                    });
                }
                Err(why) if single => return Err(format!("cannot connect to {url}: {why}")),
                Err(why) => tried.push((url, Said::Unreachable(why))),
            }
        }
        Err(NoLeader(tried).to_string())
    }
}

impl Shared {
    async fn call(&self, request: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        loop {
            let (generation, mut channel) = {
                let route = self.route.lock().await;
                (route.generation, route.channel.clone())
            };
            let request = http::Request::from_parts(
                parts.clone(),
                Body::new(Full::<Bytes>::new(body.clone())),
            );
            std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
            let response = channel.call(request).await?;
            let Some(refusal) = unavailable(response.headers()) else {
                return Ok(response);
            };
            match self.move_on(generation, &refusal).await {
                Moved::Again => continue,
                Moved::Answer => return Ok(response),
                Moved::NoLeader(e) => return Err(Box::new(e)),
            }
        }
    }

    /// The current server refused a call: the next one to try, connected.
    async fn move_on(&self, generation: u64, refusal: &tonic::Status) -> Moved {
        let mut route = self.route.lock().await;
        if route.generation != generation {
            return Moved::Again;
        }
        let current = route.current.clone();
        route
            .tried
            .push((current, Said::Answered(refusal.message().to_owned())));
        let hint = leader_hint(refusal)
            .and_then(|h| normalize(h).ok())
            .filter(|h| !route.hint_followed && !route.tried.iter().any(|(url, _)| url == h));
        if let Some(leader) = hint {
            route.hint_followed = true;
            route.untried.retain(|url| *url != leader);
            route.untried.push_front(leader);
        }
        while let Some(url) = route.untried.pop_front() {
            match connect(&self.tls, &url).await {
                Ok(channel) => {
                    route.current = url;
                    route.channel = channel;
                    route.generation += 1;
                    return Moved::Again;
                }
                Err(why) => route.tried.push((url, Said::Unreachable(why))),
            }
        }
        if route.tried.len() == 1 {
            Moved::Answer
        } else {
            Moved::NoLeader(NoLeader(route.tried.clone()))
        }
    }
}

impl Service<http::Request<Body>> for LeaderChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    /// Always ready: each call waits for its channel's readiness itself,
    /// since the channel may change between calls.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { shared.call(request).await })
    }
}

#[cfg(test)]
mod tests {
    //! Replicas stand in for the real server's followers (which come with
    //! the server's side of replication): real gRPC servers on loopback
    //! with real mutual TLS that answer the one-method RevocationService as
    //! the contract says a leader, a follower or a replica without leader
    //! answers. They test the client; the server's own answers are tested
    //! where they are made.

    use std::sync::Mutex;

    use rollcall_proto::identity::{Identity, Kind, Role};
    use rollcall_proto::servers::LEADER_METADATA;
    use rollcall_proto::v1;
    use rollcall_proto::v1::revocation_service_client::RevocationServiceClient;
    use rollcall_proto::v1::revocation_service_server::{
        RevocationService, RevocationServiceServer,
    };
    use tokio_util::sync::CancellationToken;
    use tonic::transport::{Certificate, Identity as TlsIdentity, Server, ServerTlsConfig};

    use super::*;
    use crate::cli::{CliError, status_error};
    use crate::pki::Ca;

    #[derive(Clone)]
    enum Acts {
        Leader,
        Follower(String),
        NoLeader,
    }

    struct Replica {
        role: Acts,
        /// The reasons of the requests this replica served as leader.
        served: Arc<Mutex<Vec<String>>>,
    }

    #[tonic::async_trait]
    impl RevocationService for Replica {
        async fn revoke(
            &self,
            request: tonic::Request<v1::RevokeRequest>,
        ) -> Result<tonic::Response<v1::RevokeResponse>, tonic::Status> {
            match &self.role {
                Acts::Leader => {
                    let reason = request.into_inner().reason;
                    self.served.lock().expect("lock").push(reason);
                    Ok(tonic::Response::new(v1::RevokeResponse { revoked: vec![] }))
                }
                Acts::Follower(leader) => {
                    let mut s = tonic::Status::unavailable(format!(
                        "this rollcall-server is a follower; the leader is at {leader}"
                    ));
                    s.metadata_mut()
                        .insert(LEADER_METADATA, leader.parse().expect("ascii"));
                    Err(s)
                }
                Acts::NoLeader => Err(tonic::Status::unavailable(
                    "no rollcall-server leads at the moment (a failover is under way); try again in a few seconds",
                )),
            }
        }
    }

    struct Lab {
        ca: Ca,
        stop: CancellationToken,
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    impl Lab {
        fn new() -> Self {
            let _ = rustls::crypto::ring::default_provider().install_default();
            Self {
                ca: Ca::generate("test").expect("ca"),
                stop: CancellationToken::new(),
            }
        }

        /// A replica on loopback; its URL and what it served as leader.
        async fn replica(&self, role: Acts) -> (String, Arc<Mutex<Vec<String>>>) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!(
                "https://localhost:{}",
                listener.local_addr().expect("addr").port()
            );
            let cert = self.ca.issue_server(&[]).expect("server cert");
            let tls = ServerTlsConfig::new()
                .identity(TlsIdentity::from_pem(cert.cert_pem, cert.key_pem))
                .client_ca_root(Certificate::from_pem(self.ca.cert_pem()));
            let served = Arc::new(Mutex::new(Vec::new()));
            let service = RevocationServiceServer::new(Replica {
                role,
                served: served.clone(),
            });
            let stop = self.stop.clone();
            let server = Server::builder()
                .tls_config(tls)
                .expect("tls")
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move { stop.cancelled().await },
                );
            tokio::spawn(server);
            (url, served)
        }

        /// A URL where nothing listens: a replica that is down.
        async fn dead(&self) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            drop(listener);
            format!("https://localhost:{port}")
        }

        fn tls(&self) -> Tls {
            let who = Identity {
                kind: Kind::Operator,
                name: "alice".into(),
                role: Some(Role::Admin),
            };
            let op = self.ca.issue_client(&who).expect("operator cert");
            Tls {
                ca: self.ca.cert_pem().as_bytes().to_vec(),
                cert: op.cert_pem.into_bytes(),
                key: op.key_pem.into_bytes(),
            }
        }

        /// One Revoke call through the servers `urls`, as the CLI makes it.
        async fn revoke(&self, urls: &[&String], reason: &str) -> Result<(), String> {
            let urls = urls.iter().map(|u| (*u).clone()).collect();
            let channel = LeaderChannel::connect(urls, self.tls()).await?;
            RevocationServiceClient::new(channel)
                .revoke(v1::RevokeRequest {
                    target: Some(v1::revoke_request::Target::Agent("cmp1".into())),
                    reason: reason.into(),
                })
                .await
                .map(drop)
                .map_err(|s| match status_error(s) {
                    CliError::Runtime(m) | CliError::Usage(m) => m,
                })
        }
    }

    fn served(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        log.lock().expect("lock").clone()
    }

    #[tokio::test]
    async fn a_call_goes_on_to_the_leader_a_follower_names_even_off_the_list() {
        let lab = Lab::new();
        let (leader, at_leader) = lab.replica(Acts::Leader).await;
        let (follower, at_follower) = lab.replica(Acts::Follower(leader.clone())).await;
        let down = lab.dead().await;
        // The first is down, the second a follower naming a leader the
        // operator did not list: the call reaches it, whole.
        lab.revoke(&[&down, &follower], "disk sold")
            .await
            .expect("the leader answers");
        assert_eq!(served(&at_leader), ["disk sold"]);
        assert!(served(&at_follower).is_empty());
        // Listed after the follower, the leader is reached once (by the hint).
        lab.revoke(&[&follower, &leader], "again")
            .await
            .expect("leader");
        assert_eq!(served(&at_leader), ["disk sold", "again"]);
    }

    #[tokio::test]
    async fn a_hint_is_followed_once_then_the_list_goes_on() {
        let lab = Lab::new();
        let (leader, at_leader) = lab.replica(Acts::Leader).await;
        let (off_list, _) = lab.replica(Acts::Leader).await;
        // Two followers that each name another: the first hint is followed,
        // the second is not (the leader off the list is never reached);
        // the list goes on to the listed leader.
        let (second, _) = lab.replica(Acts::Follower(off_list.clone())).await;
        let (first, _) = lab.replica(Acts::Follower(second.clone())).await;
        lab.revoke(&[&first, &leader, &second], "once")
            .await
            .expect("listed leader");
        assert_eq!(served(&at_leader), ["once"]);
    }

    #[tokio::test]
    async fn without_a_leader_one_line_names_every_server_and_what_it_said() {
        let lab = Lab::new();
        let down = lab.dead().await;
        let (waiting, _) = lab.replica(Acts::NoLeader).await;
        let gone = lab.dead().await;
        let (follower, _) = lab.replica(Acts::Follower(gone.clone())).await;
        let err = lab
            .revoke(&[&down, &waiting, &follower], "x")
            .await
            .expect_err("no leader");
        assert!(!err.contains('\n'), "{err}");
        assert!(
            err.starts_with("no rollcall-server answered as the leader: "),
            "{err}"
        );
        let parts: Vec<&str> = err
            .trim_start_matches("no rollcall-server answered as the leader: ")
            .split(" | ")
            .collect();
        assert_eq!(parts.len(), 4, "{err}");
        assert!(
            parts[0].starts_with(&format!("{down} cannot be reached (")),
            "{err}"
        );
        assert!(
            parts[1].starts_with(&format!(
                "{waiting} answered \"no rollcall-server leads at the moment"
            )),
            "{err}"
        );
        assert!(
            parts[2].starts_with(&format!(
                "{follower} answered \"this rollcall-server is a follower; the leader is at {gone}\""
            )),
            "{err}"
        );
        assert!(
            parts[3].starts_with(&format!("{gone} cannot be reached (")),
            "{err}"
        );
        assert!(err.ends_with("; try again in a few seconds, or check --server (ROLLCALL_SERVER)"));
        // None takes a connection at all: the same line, before any call.
        let err = lab.revoke(&[&down, &gone], "x").await.expect_err("down");
        assert!(
            err.starts_with(&format!(
                "no rollcall-server answered as the leader: {down} cannot be reached ("
            )) && err.contains(&format!(" | {gone} cannot be reached (")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn one_server_says_what_it_always_said() {
        let lab = Lab::new();
        let (waiting, _) = lab.replica(Acts::NoLeader).await;
        assert_eq!(
            lab.revoke(&[&waiting], "x").await,
            Err("server said unavailable: no rollcall-server leads at the moment (a failover is under way); try again in a few seconds".into())
        );
        let down = lab.dead().await;
        let err = lab.revoke(&[&down], "x").await.expect_err("down");
        assert!(
            err.starts_with(&format!("cannot connect to {down}: ")),
            "{err}"
        );
    }
}
