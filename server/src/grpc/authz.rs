//! Who may call what. [`RPCS`] names every method the server serves (ours,
//! health, reflection) and the certificate it needs; [`decide`] is the one
//! decision; [`AuthorizeLayer`] makes it for every request, before any
//! service sees it, and hands the service the caller it authorized
//! ([`caller`]). A path the table does not name is refused, so a method
//! added without a line here is refused to everyone (and a unit test
//! fails) rather than open to anyone.

use std::convert::Infallible;

use rollcall_proto::identity::{Identity, IdentityError, Kind, Role};
use tonic::Status;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};

use super::tls::Peer;

/// What a method needs of its caller's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// An agent certificate (a node's own session).
    Agent,
    /// An operator certificate whose role is at least this one.
    Role(Role),
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Agent => "agent",
            Need::Role(role) => role.as_str(),
        }
    }
}

/// One method: its gRPC path, what it needs, and what people call it (the
/// CLI's words where there are some) for the refusal.
#[derive(Clone, Copy, Debug)]
pub struct Rpc {
    pub path: &'static str,
    pub need: Need,
    pub what: &'static str,
}

const fn rpc(path: &'static str, need: Need, what: &'static str) -> Rpc {
    Rpc { path, need, what }
}

const VIEWER: Need = Need::Role(Role::Viewer);
const OPERATOR: Need = Need::Role(Role::Operator);
const ADMIN: Need = Need::Role(Role::Admin);

/// Every method the server serves. Reading is a viewer's; changing what a
/// campaign does is an operator's; removing nodes and managing
/// certificates is an admin's; an agent opens its own session and nothing
/// else.
pub const RPCS: &[Rpc] = &[
    rpc(
        "/rollcall.v1.AgentService/Session",
        Need::Agent,
        "an agent session",
    ),
    rpc(
        "/rollcall.v1.OperatorService/ListNodes",
        VIEWER,
        "nodes list",
    ),
    rpc("/rollcall.v1.OperatorService/GetNode", VIEWER, "nodes show"),
    rpc(
        "/rollcall.v1.OperatorService/WatchNodes",
        VIEWER,
        "nodes watch",
    ),
    rpc(
        "/rollcall.v1.OperatorService/ListContainers",
        VIEWER,
        "containers list",
    ),
    rpc(
        "/rollcall.v1.OperatorService/FleetSummary",
        VIEWER,
        "fleet status",
    ),
    rpc(
        "/rollcall.v1.CampaignService/PlanCampaign",
        OPERATOR,
        "campaign plan",
    ),
    rpc(
        "/rollcall.v1.CampaignService/StartCampaign",
        OPERATOR,
        "campaign start",
    ),
    rpc(
        "/rollcall.v1.CampaignService/GetCampaign",
        VIEWER,
        "campaign status",
    ),
    rpc(
        "/rollcall.v1.CampaignService/ListCampaigns",
        VIEWER,
        "campaign list",
    ),
    rpc(
        "/rollcall.v1.CampaignService/WatchCampaign",
        VIEWER,
        "campaign watch",
    ),
    rpc(
        "/rollcall.v1.CampaignService/PauseCampaign",
        OPERATOR,
        "campaign pause",
    ),
    rpc(
        "/rollcall.v1.CampaignService/ResumeCampaign",
        OPERATOR,
        "campaign resume",
    ),
    rpc(
        "/rollcall.v1.CampaignService/CancelCampaign",
        OPERATOR,
        "campaign cancel",
    ),
    rpc(
        "/rollcall.v1.CampaignService/CampaignAudit",
        VIEWER,
        "campaign audit",
    ),
    rpc(
        "/rollcall.v1.CampaignService/Undrain",
        OPERATOR,
        "campaign undrain",
    ),
    rpc(
        "/rollcall.v1.AdminService/ForgetNode",
        ADMIN,
        "nodes forget",
    ),
    rpc("/rollcall.v1.AdminService/ListAudit", VIEWER, "audit list"),
    rpc(
        "/rollcall.v1.RevocationService/Revoke",
        ADMIN,
        "certs revoke",
    ),
    rpc("/grpc.health.v1.Health/Check", VIEWER, "a health check"),
    rpc("/grpc.health.v1.Health/Watch", VIEWER, "a health watch"),
    rpc(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        VIEWER,
        "reflection",
    ),
    rpc(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        VIEWER,
        "reflection",
    ),
];

/// The method at `path`, if the server serves it.
pub fn rpc_at(path: &str) -> Option<&'static Rpc> {
    RPCS.iter().find(|r| r.path == path)
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The certificate names no usable identity: UNAUTHENTICATED.
    #[error("client certificate not usable: {0}")]
    NoIdentity(IdentityError),
    /// A path no line of [`RPCS`] names.
    #[error("no method {0} on this server")]
    Unknown(String),
    /// An agent session asked with a person's certificate.
    #[error("{what} needs an agent certificate; {who} holds an operator certificate")]
    NotAnAgent { what: &'static str, who: Identity },
    /// An operator method asked with an agent certificate or too small a
    /// role.
    #[error("{what} needs role {need}; {who} holds {}", held(.who))]
    Role {
        what: &'static str,
        need: Role,
        who: Identity,
    },
}

fn held(who: &Identity) -> &'static str {
    match who.role {
        Some(role) => role.as_str(),
        None => "no operator role (an agent certificate opens only its own session)",
    }
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NoIdentity(_) => Status::unauthenticated(r.to_string()),
            Refusal::Unknown(_) | Refusal::NotAnAgent { .. } | Refusal::Role { .. } => {
                Status::permission_denied(r.to_string())
            }
        }
    }
}

/// The one decision: may the holder of `identity` call `path`?
pub fn decide(identity: &Result<Identity, IdentityError>, path: &str) -> Result<Identity, Refusal> {
    let who = identity
        .as_ref()
        .map_err(|e| Refusal::NoIdentity(e.clone()))?;
    let rpc = rpc_at(path).ok_or_else(|| Refusal::Unknown(path.to_owned()))?;
    let allowed = match rpc.need {
        Need::Agent => who.kind == Kind::Agent,
        Need::Role(need) => who.kind == Kind::Operator && who.role.is_some_and(|r| r >= need),
    };
    if allowed {
        return Ok(who.clone());
    }
    Err(match rpc.need {
        Need::Agent => Refusal::NotAnAgent {
            what: rpc.what,
            who: who.clone(),
        },
        Need::Role(need) => Refusal::Role {
            what: rpc.what,
            need,
            who: who.clone(),
        },
    })
}

/// Who made a request, as [`AuthorizeLayer`] authorized it for the
/// request's method. Every request a service sees carries one.
#[derive(Clone, Debug)]
pub struct Caller(pub Identity);

/// The caller of a request that reached a service.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Identity, Status> {
    caller_of(request.extensions())
}

/// [`caller`] from a request's extensions (the agent service reads the
/// HTTP request itself).
pub fn caller_of(extensions: &http::Extensions) -> Result<&Identity, Status> {
    extensions
        .get::<Caller>()
        .map(|c| &c.0)
        // Only a server built without the layer gets here: refuse.
        .ok_or_else(|| Status::permission_denied("request was not authorized"))
}

/// Checks every request against [`RPCS`] before it is routed.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuthorizeLayer;

impl<S> tower_layer::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Authorize<S>
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(peer) = req.extensions().get::<Peer>() else {
            let refused = Status::unauthenticated("no TLS peer information");
            return Box::pin(async move { Ok(refused.into_http()) });
        };
        match decide(&peer.identity, req.uri().path()) {
            Ok(who) => {
                req.extensions_mut().insert(Caller(who));
                Box::pin(self.inner.call(req))
            }
            Err(refusal) => {
                peer.refused(&refusal);
                let refused = Status::from(refusal);
                Box::pin(async move { Ok(refused.into_http()) })
            }
        }
    }
}

/// Every method of every service in the descriptor sets the server
/// serves, as `/package.Service/Method`.
pub fn served_methods() -> Vec<String> {
    let sets = [
        rollcall_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut paths = Vec::new();
    for set in sets {
        let set = <prost_types::FileDescriptorSet as prost::Message>::decode(set)
            .expect("a valid descriptor set");
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_served_method_and_nothing_else() {
        let served = served_methods();
        let mut table: Vec<String> = RPCS.iter().map(|r| r.path.to_owned()).collect();
        table.sort();
        assert_eq!(
            table, served,
            "authz::RPCS must list exactly the served methods"
        );
    }

    fn agent() -> Result<Identity, IdentityError> {
        Ok(Identity::agent("cmp1"))
    }

    fn person(role: Role) -> Result<Identity, IdentityError> {
        Ok(Identity::operator("alice", role))
    }

    #[test]
    fn roles_are_ordered_and_an_agent_opens_only_its_session() {
        let pause = "/rollcall.v1.CampaignService/PauseCampaign";
        assert_eq!(
            decide(&person(Role::Viewer), pause)
                .expect_err("refused")
                .to_string(),
            "campaign pause needs role operator; viewer alice holds viewer"
        );
        assert!(decide(&person(Role::Operator), pause).is_ok());
        assert!(decide(&person(Role::Admin), pause).is_ok());
        let forget = "/rollcall.v1.AdminService/ForgetNode";
        assert!(decide(&person(Role::Operator), forget).is_err());
        assert!(decide(&person(Role::Admin), forget).is_ok());
        let list = "/rollcall.v1.OperatorService/ListNodes";
        assert_eq!(
            decide(&agent(), list).expect_err("refused").to_string(),
            "nodes list needs role viewer; agent cmp1 holds no operator role (an agent certificate opens only its own session)"
        );
        let session = "/rollcall.v1.AgentService/Session";
        assert!(decide(&agent(), session).is_ok());
        assert_eq!(
            decide(&person(Role::Admin), session)
                .expect_err("refused")
                .to_string(),
            "an agent session needs an agent certificate; admin alice holds an operator certificate"
        );
        assert!(decide(&agent(), "/grpc.health.v1.Health/Check").is_err());
    }

    #[test]
    fn unknown_paths_and_unusable_certificates_are_refused() {
        let unknown = decide(&person(Role::Admin), "/rollcall.v1.AdminService/Shutdown");
        assert!(matches!(unknown, Err(Refusal::Unknown(_))));
        assert_eq!(
            Status::from(unknown.expect_err("refused")).code(),
            tonic::Code::PermissionDenied
        );
        let missing = decide(
            &Err(IdentityError::Missing),
            "/rollcall.v1.OperatorService/ListNodes",
        );
        assert_eq!(
            Status::from(missing.expect_err("refused")).code(),
            tonic::Code::Unauthenticated
        );
    }
}
