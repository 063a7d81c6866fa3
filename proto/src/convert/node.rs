//! The fleet as operators see it: nodes, their events and the summary.

use super::{ConvertError, opt_ts, required_role, timestamp_to_wire};
use crate::model;
use crate::v1;

impl From<model::NodeContainer> for v1::NodeContainer {
    fn from(c: model::NodeContainer) -> Self {
        Self {
            node: c.node,
            container: Some(c.container.into()),
        }
    }
}

impl TryFrom<v1::NodeContainer> for model::NodeContainer {
    type Error = ConvertError;
    fn try_from(c: v1::NodeContainer) -> Result<Self, Self::Error> {
        Ok(Self {
            node: c.node,
            container: c
                .container
                .ok_or(ConvertError::Missing("container"))?
                .try_into()?,
        })
    }
}

same_fields!(
    model::FullFilesystem,
    v1::FullFilesystem {
        node,
        mount_point,
        used_percent,
        available_bytes
    }
);

impl From<model::FleetSummary> for v1::FleetSummaryResponse {
    fn from(s: model::FleetSummary) -> Self {
        Self {
            nodes_total: s.nodes_total,
            nodes_online: s.nodes_online,
            nodes_offline: s.nodes_offline,
            offline_nodes: s.offline_nodes,
            reboot_required_nodes: s.reboot_required_nodes,
            containers_total: s.containers_total,
            unhealthy_containers: s.unhealthy_containers.into_iter().map(Into::into).collect(),
            stopped_containers: s.stopped_containers.into_iter().map(Into::into).collect(),
            full_filesystems: s.full_filesystems.into_iter().map(Into::into).collect(),
            engine_unavailable_nodes: s.engine_unavailable_nodes,
            pending_updates: s.pending_updates,
            pending_security_updates: s.pending_security_updates,
            fs_usage_threshold_percent: s.fs_usage_threshold_percent,
            reboot_required_total: s.reboot_required_total,
            unhealthy_containers_total: s.unhealthy_containers_total,
            stopped_containers_total: s.stopped_containers_total,
            full_filesystems_total: s.full_filesystems_total,
            engine_unavailable_total: s.engine_unavailable_total,
            list_limit: s.list_limit,
            store_failing: s.store_failing,
            cert_expiry_within_days: s.cert_expiry_within_days,
            certs_expiring_total: s.certs_expiring_total,
            certs_expired_total: s.certs_expired_total,
            certs_expiring: s.certs_expiring.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<v1::FleetSummaryResponse> for model::FleetSummary {
    type Error = ConvertError;
    fn try_from(s: v1::FleetSummaryResponse) -> Result<Self, Self::Error> {
        let containers = |v: Vec<v1::NodeContainer>| {
            v.into_iter()
                .map(TryInto::try_into)
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            nodes_total: s.nodes_total,
            nodes_online: s.nodes_online,
            nodes_offline: s.nodes_offline,
            offline_nodes: s.offline_nodes,
            reboot_required_nodes: s.reboot_required_nodes,
            containers_total: s.containers_total,
            unhealthy_containers: containers(s.unhealthy_containers)?,
            stopped_containers: containers(s.stopped_containers)?,
            full_filesystems: s.full_filesystems.into_iter().map(Into::into).collect(),
            engine_unavailable_nodes: s.engine_unavailable_nodes,
            pending_updates: s.pending_updates,
            pending_security_updates: s.pending_security_updates,
            fs_usage_threshold_percent: s.fs_usage_threshold_percent,
            reboot_required_total: s.reboot_required_total,
            unhealthy_containers_total: s.unhealthy_containers_total,
            stopped_containers_total: s.stopped_containers_total,
            full_filesystems_total: s.full_filesystems_total,
            engine_unavailable_total: s.engine_unavailable_total,
            list_limit: s.list_limit,
            store_failing: s.store_failing,
            cert_expiry_within_days: s.cert_expiry_within_days,
            certs_expiring_total: s.certs_expiring_total,
            certs_expired_total: s.certs_expired_total,
            certs_expiring: s
                .certs_expiring
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<Vec<_>, _>>()?,
        })
    }
}

impl From<model::CertExpiry> for v1::CertExpiry {
    fn from(c: model::CertExpiry) -> Self {
        Self {
            node: c.node,
            not_after: Some(timestamp_to_wire(c.not_after)),
        }
    }
}

impl TryFrom<v1::CertExpiry> for model::CertExpiry {
    type Error = ConvertError;
    fn try_from(c: v1::CertExpiry) -> Result<Self, Self::Error> {
        Ok(Self {
            not_after: opt_ts(&c.not_after)
                .ok_or(ConvertError::Missing("cert_expiry.not_after"))?,
            node: c.node,
        })
    }
}

impl From<model::Node> for v1::Node {
    fn from(n: model::Node) -> Self {
        Self {
            name: n.name,
            role: v1::Role::from(n.role).into(),
            labels: n.labels.into_iter().collect(),
            online: n.online,
            offline_reason: n.offline_reason,
            first_seen: Some(timestamp_to_wire(n.first_seen)),
            last_seen: Some(timestamp_to_wire(n.last_seen)),
            agent_version: n.agent_version,
            hostname: n.hostname,
            boot_id: n.boot_id,
            last_report_at: n.last_report_at.map(timestamp_to_wire),
            last_report_seq: n.last_report_seq,
            os_pretty_name: n.os_pretty_name,
            kernel: n.kernel,
            reboot_required: n.reboot_required,
            containers_total: n.containers_total,
            containers_unhealthy: n.containers_unhealthy,
            pending_updates: n.pending_updates,
            cert_not_after: n.cert_not_after.map(timestamp_to_wire),
        }
    }
}

impl TryFrom<v1::Node> for model::Node {
    type Error = ConvertError;
    fn try_from(n: v1::Node) -> Result<Self, Self::Error> {
        Ok(Self {
            role: required_role("node.role", n.role)?,
            first_seen: opt_ts(&n.first_seen).unwrap_or_default(),
            last_seen: opt_ts(&n.last_seen).unwrap_or_default(),
            last_report_at: opt_ts(&n.last_report_at),
            name: n.name,
            labels: n.labels.into_iter().collect(),
            online: n.online,
            offline_reason: n.offline_reason,
            agent_version: n.agent_version,
            hostname: n.hostname,
            boot_id: n.boot_id,
            last_report_seq: n.last_report_seq,
            os_pretty_name: n.os_pretty_name,
            kernel: n.kernel,
            reboot_required: n.reboot_required,
            containers_total: n.containers_total,
            containers_unhealthy: n.containers_unhealthy,
            pending_updates: n.pending_updates,
            cert_not_after: opt_ts(&n.cert_not_after),
        })
    }
}

impl From<model::NodeEventKind> for v1::NodeEventKind {
    fn from(k: model::NodeEventKind) -> Self {
        match k {
            model::NodeEventKind::Snapshot => v1::NodeEventKind::Snapshot,
            model::NodeEventKind::Online => v1::NodeEventKind::Online,
            model::NodeEventKind::Report => v1::NodeEventKind::Report,
            model::NodeEventKind::Offline => v1::NodeEventKind::Offline,
            model::NodeEventKind::Forgotten => v1::NodeEventKind::Forgotten,
        }
    }
}

impl From<model::NodeEvent> for v1::NodeEvent {
    fn from(e: model::NodeEvent) -> Self {
        Self {
            kind: v1::NodeEventKind::from(e.kind).into(),
            node: Some(e.node.into()),
        }
    }
}

impl TryFrom<v1::NodeEvent> for model::NodeEvent {
    type Error = ConvertError;
    fn try_from(e: v1::NodeEvent) -> Result<Self, Self::Error> {
        let kind = match v1::NodeEventKind::try_from(e.kind) {
            Ok(v1::NodeEventKind::Snapshot) => model::NodeEventKind::Snapshot,
            Ok(v1::NodeEventKind::Online) => model::NodeEventKind::Online,
            Ok(v1::NodeEventKind::Report) => model::NodeEventKind::Report,
            Ok(v1::NodeEventKind::Offline) => model::NodeEventKind::Offline,
            Ok(v1::NodeEventKind::Forgotten) => model::NodeEventKind::Forgotten,
            _ => {
                return Err(ConvertError::Invalid {
                    field: "event.kind",
                    value: e.kind,
                });
            }
        };
        Ok(Self {
            kind,
            node: e
                .node
                .ok_or(ConvertError::Missing("event.node"))?
                .try_into()?,
        })
    }
}
