//! The gRPC edge: mutual TLS, the agent session, the operator API, health
//! and reflection. `authz` decides who may call what, for every request,
//! before a handler runs; handlers translate wire types to domain types,
//! ask the fleet, and translate the answer back.

mod admin;
mod agent;
pub mod authz;
mod campaign;
mod operator;
pub mod page;
mod revoke;
mod session_guard;
mod session_stream;
mod status;
pub mod tls;

use std::time::Duration;

use rollcall_proto::v1::admin_service_server::AdminServiceServer;
use rollcall_proto::v1::campaign_service_server::CampaignServiceServer;
use rollcall_proto::v1::operator_service_server::OperatorServiceServer;
use rollcall_proto::v1::revocation_service_server::RevocationServiceServer;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::campaign::CampaignHandle;
use crate::config::ServerConfig;
use crate::fleet::FleetHandle;

pub use admin::AdminApi;
pub use agent::{AgentApi, AgentService};
pub use campaign::CampaignApi;
pub use operator::OperatorApi;
pub use revoke::RevocationApi;

/// HTTP/2 flow-control windows: how much a client may send before the
/// server has read it.
const STREAM_WINDOW: u32 = 7 * 1024;
const CONNECTION_WINDOW: u32 = 128 * 1024;
/// Sessions that may assemble a message that came in pieces at once, and
/// how long one may take (see `session_stream::Assembly`).
const ASSEMBLING_SESSIONS: usize = 64;
const ASSEMBLY_DEADLINE: Duration = Duration::from_secs(30);

/// What the handlers ask: the handles of the server's other parts.
pub struct Backends {
    pub fleet: FleetHandle,
    pub campaigns: CampaignHandle,
    pub store: crate::store::WriterHandle,
    pub revocations: crate::revoke::Revocations,
    /// Signs agents' own certificate requests (or refuses them all).
    pub renewal: std::sync::Arc<crate::renewal::Signer>,
    /// The event counters of `/metrics`.
    pub metrics: std::sync::Arc<crate::metrics::Events>,
    /// Whether this server may act (it leads), and its epoch.
    pub fence: crate::replica::Fence,
}

/// Serves every service on an already bound listener until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    config: &ServerConfig,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let Backends {
        fleet,
        campaigns,
        store,
        revocations,
        renewal,
        metrics,
        fence,
    } = backends;
    let limits = &config.limits;
    let incoming = tls::spawn_acceptor(
        listener,
        tls,
        tls::AcceptLimits::from(limits),
        revocations.clone(),
        metrics.clone(),
        shutdown.clone(),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentService>().await;
    health
        .set_serving::<OperatorServiceServer<OperatorApi>>()
        .await;
    health
        .set_serving::<CampaignServiceServer<CampaignApi>>()
        .await;
    health
        .set_serving::<RevocationServiceServer<RevocationApi>>()
        .await;
    health.set_serving::<AdminServiceServer<AdminApi>>().await;

    // grpcurl 1.8 speaks v1alpha; newer clients speak v1.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(rollcall_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid (checked by tests)");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid (checked by tests)");

    let max = limits.max_message_bytes;
    let store_health = store.health();
    let revoke = RevocationApi {
        store: store.clone(),
        revocations,
        pki: config
            .tls
            .ca
            .as_deref()
            .and_then(std::path::Path::parent)
            .map(std::path::Path::to_owned),
    };
    let admin = AdminApi {
        campaigns: campaigns.clone(),
        store: store.clone(),
    };
    let agent = AgentService(std::sync::Arc::new(AgentApi {
        fleet: fleet.clone(),
        store,
        report_interval: config.report_interval(),
        hello_timeout: Duration::from_secs(config.agents.hello_timeout_secs.into()),
        max_message_bytes: max,
        messages_per_sec: config.agents.messages_per_sec,
        message_burst: config.agents.message_burst,
        assembly: session_stream::Assembly::new(ASSEMBLING_SESSIONS, ASSEMBLY_DEADLINE),
        renewal,
        shutdown: shutdown.clone(),
        metrics,
        fence,
    }));
    let operator = OperatorApi {
        fleet,
        store: store_health.clone(),
    };
    tokio::spawn(report_store_health(
        health.clone(),
        store_health,
        shutdown.clone(),
    ));
    let campaign = CampaignApi { campaigns };

    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(
            limits.keepalive_interval_secs.into(),
        )))
        .http2_keepalive_timeout(Some(Duration::from_secs(
            limits.keepalive_timeout_secs.into(),
        )))
        .max_concurrent_streams(Some(128))
        // What one connection may have in flight, unread: a full report
        // and then some. hyper's default (1 MiB each) would let 10,000
        // agents park 10 GiB in the server's buffers if it fell behind.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        // Before routing: every request, to any service or to none, is
        // checked against the one table of who may call what.
        .layer(authz::AuthorizeLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(agent)
        .add_service(
            OperatorServiceServer::new(operator)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            CampaignServiceServer::new(campaign)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            RevocationServiceServer::new(revoke)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            AdminServiceServer::new(admin)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown.cancelled_owned())
        .await
}

/// Keeps `grpc.health.v1` true to the store: while it cannot write, the
/// server as a whole (service "") and the campaign service are NOT_SERVING
/// (monitoring sees it; the reason is in `fleet status` and campaign
/// status); agents and operator reads go on being served.
async fn report_store_health(
    health: tonic_health::server::HealthReporter,
    mut store: tokio::sync::watch::Receiver<crate::store::StoreHealth>,
    shutdown: CancellationToken,
) {
    use tonic_health::ServingStatus;
    loop {
        let status = if store.borrow_and_update().failing.is_some() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        health.set_service_status("", status).await;
        health
            .set_service_status(
                <CampaignServiceServer<CampaignApi> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = store.changed() => if changed.is_err() { return },
        }
    }
}
