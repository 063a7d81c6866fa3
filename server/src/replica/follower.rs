//! A follower's gRPC face: the same listener, TLS and limits as a leader's,
//! health and reflection (so that grpcurl can describe the API), and for
//! every rollcall.v1 call an immediate UNAVAILABLE that names the leader,
//! in the message for people and in `rollcall-leader` metadata for
//! clients. A follower holds no fleet: it reads nothing it could serve
//! stale.

use std::convert::Infallible;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::transport::Server;

use crate::config::ServerConfig;
use crate::grpc::tls;

/// The metadata key that carries the leader's URL (one spelling, shared
/// with the clients that read it).
pub use rollcall_proto::servers::LEADER_METADATA as LEADER_KEY;

/// What a follower answers to a rollcall.v1 call while `leader` (a URL,
/// empty while none leads) is the leader.
pub fn not_leader(leader: &str) -> Status {
    if leader.is_empty() {
        return Status::unavailable(
            "no rollcall-server leads at the moment (a failover is under way); try again in a few seconds",
        );
    }
    let mut status = Status::unavailable(format!(
        "this rollcall-server is a follower; the leader is at {leader}"
    ));
    if let Ok(value) = leader.parse() {
        status.metadata_mut().insert(LEADER_KEY, value);
    }
    status
}

/// Serves as a follower on `listener` until `stop`; `leader` is the
/// current leader's URL.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls_config: rustls::ServerConfig,
    config: &ServerConfig,
    leader: watch::Receiver<String>,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = tls::spawn_acceptor(
        listener,
        tls_config,
        tls::AcceptLimits::from(&config.limits),
        // A follower hands out nothing but the leader's URL, which a
        // revoked client may as well learn.
        crate::revoke::Revocations::default(),
        Arc::new(crate::metrics::Events::new()),
        stop.clone(),
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    // The process is well ("" SERVING); the rollcall services are the
    // leader's.
    for service in [
        "rollcall.v1.AgentService",
        "rollcall.v1.OperatorService",
        "rollcall.v1.CampaignService",
        "rollcall.v1.RevocationService",
        "rollcall.v1.AdminService",
    ] {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(rollcall_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Server::builder()
        .layer(FollowerLayer { leader })
        .add_service(health_service)
        .add_service(
            reflection()
                .build_v1()
                .expect("the embedded descriptor sets are valid (checked by tests)"),
        )
        .add_service(
            reflection()
                .build_v1alpha()
                .expect("the embedded descriptor sets are valid (checked by tests)"),
        )
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), stop.cancelled_owned())
        .await
}

#[derive(Clone)]
struct FollowerLayer {
    leader: watch::Receiver<String>,
}

impl<S> tower_layer::Layer<S> for FollowerLayer {
    type Service = Follower<S>;
    fn layer(&self, inner: S) -> Follower<S> {
        Follower {
            inner,
            leader: self.leader.clone(),
        }
    }
}

#[derive(Clone)]
struct Follower<S> {
    inner: S,
    leader: watch::Receiver<String>,
}

impl<S, B> Service<http::Request<B>> for Follower<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
            return Box::pin(self.inner.call(req));
        }
        let answer = not_leader(&self.leader.borrow()).into_http();
        Box::pin(async move { Ok(answer) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_names_the_leader_in_its_message_and_metadata() {
        let status = not_leader("https://ctl2:7443");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "this rollcall-server is a follower; the leader is at https://ctl2:7443"
        );
        assert_eq!(
            status
                .metadata()
                .get(LEADER_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("https://ctl2:7443")
        );
        let none = not_leader("");
        assert_eq!(none.code(), tonic::Code::Unavailable);
        assert!(none.metadata().get(LEADER_KEY).is_none());
        assert!(none.message().contains("no rollcall-server leads"));
    }
}
