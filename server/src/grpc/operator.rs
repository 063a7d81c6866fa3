//! `rollcall.v1.OperatorService`: read the fleet. Any role may (`authz`).

use std::pin::Pin;

use rollcall_proto::convert::{
    container_health_from_wire, container_state_from_wire, role_from_wire,
};
use rollcall_proto::identity::validate_name;
use rollcall_proto::model::{ContainerFilter, NodeEvent, NodeEventKind, NodeFilter, OnlineFilter};
use rollcall_proto::v1;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::authz::caller;
use super::page::{self, PageRequest};
use crate::fleet::FleetHandle;

pub struct OperatorApi {
    pub fleet: FleetHandle,
    /// Whether the store takes writes, for the fleet summary.
    pub store: tokio::sync::watch::Receiver<crate::store::StoreHealth>,
}

fn role_filter(raw: i32) -> Result<Option<rollcall_proto::model::Role>, Status> {
    if raw == v1::Role::Unspecified as i32 {
        return Ok(None);
    }
    role_from_wire(raw)
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("unknown role {raw}")))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::NodeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl v1::operator_service_server::OperatorService for OperatorApi {
    async fn list_nodes(
        &self,
        request: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        caller(&request)?;
        let req = request.into_inner();
        let online = match v1::OnlineFilter::try_from(req.online) {
            Ok(v1::OnlineFilter::Any) => OnlineFilter::Any,
            Ok(v1::OnlineFilter::Online) => OnlineFilter::Online,
            Ok(v1::OnlineFilter::Offline) => OnlineFilter::Offline,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown online filter {}",
                    req.online
                )));
            }
        };
        let filter = NodeFilter {
            role: role_filter(req.role)?,
            online,
        };
        let page = PageRequest::parse(req.page_size, &req.page_token, page::NODES)?;
        let found = self.fleet.list_page(filter, page.after, page.size).await?;
        let nodes = found.items.into_iter().map(v1::Node::from).collect();
        let (nodes, next_page_token) = page::finish(nodes, found.more, |n| n.name.clone());
        Ok(Response::new(v1::ListNodesResponse {
            nodes,
            next_page_token,
        }))
    }

    async fn get_node(
        &self,
        request: Request<v1::GetNodeRequest>,
    ) -> Result<Response<v1::GetNodeResponse>, Status> {
        caller(&request)?;
        let name = request.into_inner().name;
        validate_name(&name).map_err(Status::invalid_argument)?;
        let detail = self
            .fleet
            .get(&name)
            .await?
            .ok_or_else(|| Status::not_found(format!("no node named {name:?}")))?;
        Ok(Response::new(v1::GetNodeResponse {
            node: Some(detail.node.into()),
            report: detail.report.map(Into::into),
        }))
    }

    async fn list_containers(
        &self,
        request: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        caller(&request)?;
        let req = request.into_inner();
        let invalid =
            |e: rollcall_proto::convert::ConvertError| Status::invalid_argument(e.to_string());
        let node = (!req.node.is_empty()).then_some(req.node);
        if let Some(n) = &node {
            validate_name(n).map_err(Status::invalid_argument)?;
        }
        if req.name_pattern.len() > 256 {
            return Err(Status::invalid_argument(
                "name_pattern longer than 256 bytes",
            ));
        }
        let filter = ContainerFilter {
            node,
            state: container_state_from_wire(req.state).map_err(invalid)?,
            health: container_health_from_wire(req.health).map_err(invalid)?,
            name_pattern: (!req.name_pattern.is_empty()).then_some(req.name_pattern),
        };
        let page = PageRequest::parse(req.page_size, &req.page_token, page::CONTAINERS)?;
        let after = page::container_after(page.after)?;
        let found = self.fleet.containers(filter, after, page.size).await?;
        let containers = found
            .items
            .into_iter()
            .map(v1::NodeContainer::from)
            .collect();
        let (containers, next_page_token) = page::finish(containers, found.more, |c| {
            let name = c.container.as_ref().map_or("", |c| c.name.as_str());
            page::container_key(&c.node, name)
        });
        Ok(Response::new(v1::ListContainersResponse {
            containers,
            next_page_token,
        }))
    }

    async fn fleet_summary(
        &self,
        request: Request<v1::FleetSummaryRequest>,
    ) -> Result<Response<v1::FleetSummaryResponse>, Status> {
        caller(&request)?;
        let req = request.into_inner();
        let threshold = req.fs_usage_threshold_percent;
        if threshold > 100 {
            return Err(Status::invalid_argument(
                "fs_usage_threshold_percent must be 0..=100",
            ));
        }
        let mut summary = self
            .fleet
            .summary(threshold, req.list_limit, req.cert_expiry_within_days)
            .await?;
        summary.store_failing = self.store.borrow().describe();
        Ok(Response::new(summary.into()))
    }

    type WatchNodesStream = EventStream;

    async fn watch_nodes(
        &self,
        request: Request<v1::WatchNodesRequest>,
    ) -> Result<Response<Self::WatchNodesStream>, Status> {
        caller(&request)?;
        let role = role_filter(request.into_inner().role)?;
        let (snapshot, mut events) = self.fleet.watch().await?;
        let stream = async_stream(move |tx| async move {
            for node in snapshot
                .into_iter()
                .filter(|n| role.is_none_or(|r| r == n.role))
            {
                let event = NodeEvent {
                    kind: NodeEventKind::Snapshot,
                    node,
                };
                if tx.send(Ok(event.into())).await.is_err() {
                    return;
                }
            }
            loop {
                match events.recv().await {
                    Ok(event) if role.is_none_or(|r| r == event.node.role) => {
                        if tx.send(Ok(event.into())).await.is_err() {
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
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task; the task stops when the client goes away.
fn async_stream<F, Fut>(body: F) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<v1::NodeEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
