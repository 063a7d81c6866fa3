//! `rollcall.v1.CampaignService`: plan, start, follow and steer campaigns.
//! Reads are any role's, changes an operator's (`authz`); the operator's
//! certificate name is what the audit log records.

use std::pin::Pin;

use rollcall_proto::identity::validate_name;
use rollcall_proto::v1;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::authz::caller;
use super::page::{self, PageRequest};
use crate::campaign::spec::CampaignSpec;
use crate::campaign::wire::{event_to_wire, snapshot_to_wire};
use crate::campaign::{CampaignError, CampaignHandle, Control};

pub struct CampaignApi {
    pub campaigns: CampaignHandle,
}

impl From<CampaignError> for Status {
    fn from(e: CampaignError) -> Self {
        match e {
            CampaignError::Invalid(m) => Status::invalid_argument(m),
            CampaignError::NotFound(_) => Status::not_found(e.to_string()),
            CampaignError::Conflict(m) => Status::failed_precondition(m.to_string()),
            CampaignError::Store(_) => Status::unavailable(e.to_string()),
            CampaignError::Stopped(s) => s.into(),
        }
    }
}

/// The caller's certificate name (what the audit log records); `authz`
/// already checked their role for the method.
fn operator<T>(request: &Request<T>) -> Result<String, Status> {
    Ok(caller(request)?.name.clone())
}

fn campaign_id(id: &str) -> Result<(), Status> {
    validate_name(id).map_err(|e| Status::invalid_argument(format!("campaign id: {e}")))
}

impl CampaignApi {
    /// Pause, resume or cancel, on behalf of `who` (their certificate name).
    async fn steer(
        &self,
        who: &str,
        id: &str,
        control: Control,
        reason: &str,
    ) -> Result<Response<v1::CampaignStatus>, Status> {
        campaign_id(id)?;
        let view = self.campaigns.control(id, control, who, reason).await?;
        Ok(Response::new(view.into()))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::CampaignEvent, Status>> + Send>>;

#[tonic::async_trait]
impl v1::campaign_service_server::CampaignService for CampaignApi {
    async fn plan_campaign(
        &self,
        request: Request<v1::PlanCampaignRequest>,
    ) -> Result<Response<v1::PlanCampaignResponse>, Status> {
        operator(&request)?;
        let spec = CampaignSpec::parse(&request.into_inner().spec_toml)
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(self.campaigns.plan(spec).await?.into()))
    }

    async fn start_campaign(
        &self,
        request: Request<v1::StartCampaignRequest>,
    ) -> Result<Response<v1::CampaignStatus>, Status> {
        let who = operator(&request)?;
        let toml = request.into_inner().spec_toml;
        Ok(Response::new(
            self.campaigns.start(&toml, &who).await?.into(),
        ))
    }

    async fn get_campaign(
        &self,
        request: Request<v1::CampaignRef>,
    ) -> Result<Response<v1::CampaignStatus>, Status> {
        operator(&request)?;
        let id = request.into_inner().id;
        campaign_id(&id)?;
        Ok(Response::new(self.campaigns.get(&id).await?.into()))
    }

    async fn list_campaigns(
        &self,
        request: Request<v1::ListCampaignsRequest>,
    ) -> Result<Response<v1::ListCampaignsResponse>, Status> {
        operator(&request)?;
        let req = request.into_inner();
        let page = PageRequest::parse(req.page_size, &req.page_token, page::CAMPAIGNS)?;
        let found = self.campaigns.list(page.after, page.size).await?;
        let campaigns = found
            .items
            .into_iter()
            .map(v1::CampaignStatus::from)
            .collect();
        let (campaigns, next_page_token) = page::finish(campaigns, found.more, |c| c.id.clone());
        Ok(Response::new(v1::ListCampaignsResponse {
            campaigns,
            next_page_token,
        }))
    }

    type WatchCampaignStream = EventStream;

    async fn watch_campaign(
        &self,
        request: Request<v1::CampaignRef>,
    ) -> Result<Response<Self::WatchCampaignStream>, Status> {
        operator(&request)?;
        let id = request.into_inner().id;
        campaign_id(&id)?;
        let (view, mut events) = self.campaigns.watch(&id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let ended = view.ended;
            if tx.send(Ok(snapshot_to_wire(view))).await.is_err() || ended {
                return;
            }
            loop {
                match events.recv().await {
                    Ok(e) if e.campaign == id => {
                        let ended = e.ended;
                        if tx.send(Ok(event_to_wire(e))).await.is_err() || ended {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "watcher fell {n} events behind; watch again to resynchronise"
                            ))))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn pause_campaign(
        &self,
        request: Request<v1::ControlRequest>,
    ) -> Result<Response<v1::CampaignStatus>, Status> {
        let who = operator(&request)?;
        let req = request.into_inner();
        self.steer(&who, &req.id, Control::Pause, &req.reason).await
    }

    async fn resume_campaign(
        &self,
        request: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::CampaignStatus>, Status> {
        let who = operator(&request)?;
        let req = request.into_inner();
        let control = Control::Resume {
            retry_failed: req.retry_failed,
        };
        self.steer(&who, &req.id, control, &req.reason).await
    }

    async fn cancel_campaign(
        &self,
        request: Request<v1::ControlRequest>,
    ) -> Result<Response<v1::CampaignStatus>, Status> {
        let who = operator(&request)?;
        let req = request.into_inner();
        self.steer(&who, &req.id, Control::Cancel, &req.reason)
            .await
    }

    async fn undrain(
        &self,
        request: Request<v1::UndrainRequest>,
    ) -> Result<Response<v1::CampaignStatus>, Status> {
        let who = operator(&request)?;
        let req = request.into_inner();
        campaign_id(&req.campaign_id)?;
        validate_name(&req.node).map_err(|e| Status::invalid_argument(format!("node: {e}")))?;
        let view = self
            .campaigns
            .undrain(&req.campaign_id, &req.node, &who, &req.reason)
            .await?;
        Ok(Response::new(view.into()))
    }

    async fn campaign_audit(
        &self,
        request: Request<v1::CampaignRef>,
    ) -> Result<Response<v1::CampaignAuditResponse>, Status> {
        operator(&request)?;
        let id = request.into_inner().id;
        campaign_id(&id)?;
        let entries = self
            .campaigns
            .audit(&id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Response::new(v1::CampaignAuditResponse { entries }))
    }
}
