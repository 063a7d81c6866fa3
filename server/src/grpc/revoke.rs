//! `rollcall.v1.RevocationService`: revoke certificates. Admins only.
//!
//! A revocation is stored before it is enforced: the answer comes once the
//! store holds it, and the same moment the revoked set cuts the
//! certificate's open connections.

use std::path::PathBuf;

use rollcall_proto::convert::timestamp_to_wire;
use rollcall_proto::identity::{Identity, Role, validate_name};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;
use rollcall_proto::v1::revoke_request::Target;
use tonic::{Request, Response, Status};

use super::authz::caller;
use crate::audit::{self, AuditAction};
use crate::revoke::{MAX_REASON_BYTES, Revocation, Revocations, Serial, serials_of, uris_of};
use crate::store::WriterHandle;

pub struct RevocationApi {
    pub store: WriterHandle,
    pub revocations: Revocations,
    /// The server's pki directory (where its CA certificate is): "revoke by
    /// name" also revokes the certificate it holds for that name.
    pub pki: Option<PathBuf>,
}

fn to_wire(r: Revocation) -> v1::Revocation {
    v1::Revocation {
        serial: r.serial.to_string(),
        identity: r.identity.unwrap_or_default(),
        reason: r.reason,
        revoked_at: Some(timestamp_to_wire(r.at)),
        revoked_by: r.by,
    }
}

impl RevocationApi {
    /// The serials a request names, and the identity URI they carry.
    async fn targets(&self, target: Target) -> Result<(Vec<Serial>, Option<String>), Status> {
        let who = match target {
            Target::Serial(text) => {
                let serial =
                    Serial::parse(&text).map_err(|e| Status::invalid_argument(e.to_string()))?;
                return Ok((vec![serial], None));
            }
            Target::Agent(name) => {
                validate_name(&name).map_err(Status::invalid_argument)?;
                Identity::agent(name)
            }
            Target::Operator(name) => {
                validate_name(&name).map_err(Status::invalid_argument)?;
                Identity::operator(name, Role::Operator)
            }
        };
        // An operator's certificate URI names its role: look under each.
        let mut known = Vec::new();
        for uri in uris_of(&who) {
            known.extend(self.revocations.seen(&uri));
            let signed = self.store.serials_signed_for(&uri).await.map_err(|e| {
                Status::unavailable(format!(
                    "cannot read the certificates the server signed for {uri}, so nothing is revoked: {e}"
                ))
            })?;
            known.extend(signed);
        }
        let serials = serials_of(&who, self.pki.as_deref(), known);
        if serials.is_empty() {
            return Err(Status::not_found(format!(
                "no certificate of {who} is known to the server: none connected since it started, none was signed by it and none is in its pki directory; revoke it by its serial"
            )));
        }
        Ok((serials, Some(who.uri())))
    }
}

#[tonic::async_trait]
impl v1::revocation_service_server::RevocationService for RevocationApi {
    async fn revoke(
        &self,
        request: Request<v1::RevokeRequest>,
    ) -> Result<Response<v1::RevokeResponse>, Status> {
        // Only an admin gets here (`authz::RPCS`).
        let caller = caller(&request)?.clone();
        let admin = caller.uri();
        let req = request.into_inner();
        if req.reason.len() > MAX_REASON_BYTES {
            return Err(Status::invalid_argument(format!(
                "the reason is {} bytes long; at most {MAX_REASON_BYTES} are kept",
                req.reason.len()
            )));
        }
        let target = req.target.ok_or_else(|| {
            Status::invalid_argument("name what to revoke: an agent, an operator or a serial")
        })?;
        let (serials, identity) = self.targets(target).await?;
        let at = Timestamp::now();
        let mut revoked = Vec::with_capacity(serials.len());
        for serial in serials {
            let stored = self
                .store
                .revoke(Revocation {
                    serial,
                    identity: identity.clone(),
                    reason: req.reason.clone(),
                    at,
                    by: admin.clone(),
                })
                .await
                .map_err(|e| Status::unavailable(format!("the revocation is not stored: {e}")))?;
            tracing::info!(serial = %stored.serial, identity = stored.identity.as_deref().unwrap_or(""), by = %admin, reason = %rollcall_proto::text::Untrusted(&stored.reason), "Certificate revoked.");
            self.revocations.apply([stored.clone()]);
            let target = stored.identity.clone().unwrap_or_default();
            let detail = format!("serial {}: {}", stored.serial, stored.reason);
            if let Err(e) = audit::record(
                &self.store,
                &caller,
                AuditAction::RevokeCertificate,
                &target,
                &detail,
            )
            .await
            {
                tracing::warn!(serial = %stored.serial, error = %e, "A revocation is not in the operator audit.");
            }
            revoked.push(to_wire(stored));
        }
        Ok(Response::new(v1::RevokeResponse { revoked }))
    }
}
