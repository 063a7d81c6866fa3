//! The role matrix: every method of every service the server serves,
//! enumerated from the descriptor sets it serves (so a new method cannot be
//! left out), called over real mTLS with an agent, a viewer, an operator
//! and an admin certificate. An allowed call gets anything but
//! PERMISSION_DENIED or UNAUTHENTICATED (the empty request it sends is
//! usually refused as invalid, which changes nothing); a refused call gets
//! PERMISSION_DENIED.

use std::str::FromStr;

use rollcall_tests::{ClientCert, Pki, TestServer, init};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

/// Who may call what, written out here apart from the server's own table
/// (`grpc::authz::RPCS`) so that a change to either shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Holder {
    Agent,
    Viewer,
    Operator,
    Admin,
}

const EXPECTED: &[(&str, Holder)] = &[
    ("/rollcall.v1.AgentService/Session", Holder::Agent),
    ("/rollcall.v1.OperatorService/ListNodes", Holder::Viewer),
    ("/rollcall.v1.OperatorService/GetNode", Holder::Viewer),
    ("/rollcall.v1.OperatorService/WatchNodes", Holder::Viewer),
    (
        "/rollcall.v1.OperatorService/ListContainers",
        Holder::Viewer,
    ),
    ("/rollcall.v1.OperatorService/FleetSummary", Holder::Viewer),
    (
        "/rollcall.v1.CampaignService/PlanCampaign",
        Holder::Operator,
    ),
    (
        "/rollcall.v1.CampaignService/StartCampaign",
        Holder::Operator,
    ),
    ("/rollcall.v1.CampaignService/GetCampaign", Holder::Viewer),
    ("/rollcall.v1.CampaignService/ListCampaigns", Holder::Viewer),
    ("/rollcall.v1.CampaignService/WatchCampaign", Holder::Viewer),
    (
        "/rollcall.v1.CampaignService/PauseCampaign",
        Holder::Operator,
    ),
    (
        "/rollcall.v1.CampaignService/ResumeCampaign",
        Holder::Operator,
    ),
    (
        "/rollcall.v1.CampaignService/CancelCampaign",
        Holder::Operator,
    ),
    ("/rollcall.v1.CampaignService/CampaignAudit", Holder::Viewer),
    ("/rollcall.v1.CampaignService/Undrain", Holder::Operator),
    ("/rollcall.v1.AdminService/ForgetNode", Holder::Admin),
    ("/rollcall.v1.AdminService/ListAudit", Holder::Viewer),
    ("/rollcall.v1.RevocationService/Revoke", Holder::Admin),
    ("/grpc.health.v1.Health/Check", Holder::Viewer),
    ("/grpc.health.v1.Health/Watch", Holder::Viewer),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Holder::Viewer,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Holder::Viewer,
    ),
];

/// Whether `holder` may call a method that needs `need`: an agent only its
/// session, a person anything up to their role.
fn allowed(holder: Holder, need: Holder) -> bool {
    match (holder, need) {
        (Holder::Agent, need) => need == Holder::Agent,
        (_, Holder::Agent) => false,
        (holder, need) => holder >= need,
    }
}

/// Calls `path` with one empty message, as a stream (the wire is the same
/// for every kind of method), and returns the code of the answer's head:
/// `Ok` once the server answered with headers (a stream that goes on, or a
/// unary answer on its way).
async fn call(server: &TestServer, cert: &ClientCert, path: &str) -> Code {
    let channel = server.channel(cert).await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let request = tonic::Request::new(tokio_stream::iter([()]));
    let path = PathAndQuery::from_str(path).expect("a path");
    match grpc.streaming(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_against_every_kind_of_certificate() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let certs = [
        (Holder::Agent, pki.agent("cmp1")),
        (Holder::Viewer, pki.viewer("vera")),
        (Holder::Operator, pki.operator("olga")),
        (Holder::Admin, pki.admin("adam")),
    ];

    let served = rollcall_server::grpc::authz::served_methods();
    let mut expected: Vec<&str> = EXPECTED.iter().map(|(p, _)| *p).collect();
    expected.sort_unstable();
    assert_eq!(
        served, expected,
        "every served method needs a line in EXPECTED (and no line may name a method that is not served)"
    );

    let mut wrong = Vec::new();
    for (path, need) in EXPECTED {
        for (holder, cert) in &certs {
            let code = call(&server, cert, path).await;
            let ok = if allowed(*holder, *need) {
                !matches!(code, Code::PermissionDenied | Code::Unauthenticated)
            } else {
                code == Code::PermissionDenied
            };
            if !ok {
                wrong.push(format!("{path} with {holder:?}: {code:?} (needs {need:?})"));
            }
        }
    }
    assert!(wrong.is_empty(), "the matrix is off:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_the_role_needed_and_the_role_held() {
    init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, |_| {}).await;
    let channel = server.channel(&pki.viewer("alice")).await.expect("connect");
    let mut campaigns =
        rollcall_proto::v1::campaign_service_client::CampaignServiceClient::new(channel.clone());
    let status = campaigns
        .pause_campaign(rollcall_proto::v1::ControlRequest {
            id: "20261123-113000-1".into(),
            reason: String::new(),
        })
        .await
        .expect_err("a viewer cannot pause");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "campaign pause needs role operator; viewer alice holds viewer"
    );
    // A viewer still reads.
    let mut operator =
        rollcall_proto::v1::operator_service_client::OperatorServiceClient::new(channel);
    operator
        .list_nodes(rollcall_proto::v1::ListNodesRequest::default())
        .await
        .expect("a viewer lists nodes");
}
