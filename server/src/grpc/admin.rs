//! `rollcall.v1.AdminService`: forget a node (admin), read the audit of
//! operator actions (any role). `authz` checked the role before a handler
//! runs; the caller's certificate is what the audit records.

use rollcall_proto::identity::validate_name;
use rollcall_proto::v1;
use tonic::{Request, Response, Status};

use super::authz::caller;
use super::page::{self, PageRequest};
use crate::audit::{AuditAction, AuditRecord};
use crate::campaign::{CampaignHandle, ForgetError};
use crate::fleet::ForgetRefused;
use crate::store::{NotRead, WriterHandle};

/// The longest reason an admin may give, in bytes.
const MAX_REASON: usize = 1_024;

pub struct AdminApi {
    pub campaigns: CampaignHandle,
    pub store: WriterHandle,
}

impl From<ForgetError> for Status {
    fn from(e: ForgetError) -> Self {
        match e {
            ForgetError::Refused(ForgetRefused::Unknown(_)) => Status::not_found(e.to_string()),
            ForgetError::Refused(ForgetRefused::Online(_)) | ForgetError::InCampaign { .. } => {
                Status::failed_precondition(e.to_string())
            }
            ForgetError::Store { .. } => Status::unavailable(e.to_string()),
            ForgetError::Stopped(s) => s.into(),
        }
    }
}

impl From<NotRead> for Status {
    fn from(e: NotRead) -> Self {
        Status::unavailable(e.to_string())
    }
}

#[tonic::async_trait]
impl v1::admin_service_server::AdminService for AdminApi {
    async fn forget_node(
        &self,
        request: Request<v1::ForgetNodeRequest>,
    ) -> Result<Response<v1::ForgetNodeResponse>, Status> {
        let who = caller(&request)?.clone();
        let req = request.into_inner();
        validate_name(&req.node).map_err(|e| Status::invalid_argument(format!("node: {e}")))?;
        if req.reason.len() > MAX_REASON {
            return Err(Status::invalid_argument(format!(
                "reason longer than {MAX_REASON} bytes"
            )));
        }
        let line = AuditRecord::new(&who, AuditAction::ForgetNode, &req.node, &req.reason);
        let stored = self.campaigns.forget_node(&req.node, line).await?;
        Ok(Response::new(v1::ForgetNodeResponse {
            audit: Some(stored.into()),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        caller(&request)?;
        let req = request.into_inner();
        let page = PageRequest::parse(req.page_size, &req.page_token, page::AUDIT)?;
        let after = page::seq_after(page.after)?;
        // One more than the page, to learn whether another follows.
        let mut lines = self.store.read_audit(after, page.size + 1).await?;
        let more = lines.len() > page.size;
        lines.truncate(page.size);
        let records = lines.into_iter().map(v1::AuditRecord::from).collect();
        let (records, next_page_token) = page::finish(records, more, |r| page::seq_key(r.seq));
        Ok(Response::new(v1::ListAuditResponse {
            records,
            next_page_token,
        }))
    }
}
