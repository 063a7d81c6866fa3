//! Conversions between the generated wire types and the domain types.
//!
//! Wire → domain is fallible: a message from the network may lack a section
//! or carry an unknown enum value, and that is an error for the caller to
//! report, never a panic.

use crate::model;
use crate::timestamp::Timestamp;
use crate::v1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {field} has invalid value {value}")]
    Invalid { field: &'static str, value: i32 },
}

pub fn timestamp_to_wire(t: Timestamp) -> prost_types::Timestamp {
    let ms = t.unix_millis();
    prost_types::Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: i32::try_from(ms.rem_euclid(1_000) * 1_000_000).unwrap_or(0),
    }
}

/// Years 0000 to 9999, the range RFC 3339 (and so the store) can hold.
const MIN_MILLIS: i64 = -62_167_219_200_000;
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// A wire time, clamped to years 0000..=9999: a peer's absurd clock must
/// not write a time the store cannot read back.
pub fn timestamp_from_wire(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_unix_millis(
        t.seconds
            .saturating_mul(1_000)
            .saturating_add(i64::from(t.nanos / 1_000_000))
            .clamp(MIN_MILLIS, MAX_MILLIS),
    )
}

fn opt_ts(t: &Option<prost_types::Timestamp>) -> Option<Timestamp> {
    t.as_ref().map(timestamp_from_wire)
}

impl From<model::Role> for v1::Role {
    fn from(r: model::Role) -> Self {
        match r {
            model::Role::Controller => v1::Role::Controller,
            model::Role::Compute => v1::Role::Compute,
            model::Role::Storage => v1::Role::Storage,
        }
    }
}

/// `ROLE_UNSPECIFIED` (or an unknown value) is `None`.
pub fn role_from_wire(raw: i32) -> Option<model::Role> {
    match v1::Role::try_from(raw).ok()? {
        v1::Role::Unspecified => None,
        v1::Role::Controller => Some(model::Role::Controller),
        v1::Role::Compute => Some(model::Role::Compute),
        v1::Role::Storage => Some(model::Role::Storage),
    }
}

/// A role where one is required: `ROLE_UNSPECIFIED` is an error too.
pub fn required_role(field: &'static str, raw: i32) -> Result<model::Role, ConvertError> {
    role_from_wire(raw).ok_or(ConvertError::Invalid { field, value: raw })
}

impl From<model::HostFacts> for v1::HostFacts {
    fn from(h: model::HostFacts) -> Self {
        Self {
            hostname: h.hostname,
            os_pretty_name: h.os_pretty_name,
            os_id: h.os_id,
            os_version_id: h.os_version_id,
            kernel: h.kernel,
            arch: h.arch,
            boot_id: h.boot_id,
            boot_time: Some(timestamp_to_wire(h.boot_time)),
            cpu_count: h.cpu_count,
        }
    }
}

impl From<v1::HostFacts> for model::HostFacts {
    fn from(h: v1::HostFacts) -> Self {
        Self {
            boot_time: opt_ts(&h.boot_time).unwrap_or_default(),
            hostname: h.hostname,
            os_pretty_name: h.os_pretty_name,
            os_id: h.os_id,
            os_version_id: h.os_version_id,
            kernel: h.kernel,
            arch: h.arch,
            boot_id: h.boot_id,
            cpu_count: h.cpu_count,
        }
    }
}

impl From<model::HostMetrics> for v1::HostMetrics {
    fn from(m: model::HostMetrics) -> Self {
        Self {
            uptime_secs: m.uptime_secs,
            cpu_usage_percent: m.cpu_usage_percent,
            load1: m.load1,
            load5: m.load5,
            load15: m.load15,
            memory_total_bytes: m.memory_total_bytes,
            memory_used_bytes: m.memory_used_bytes,
            memory_available_bytes: m.memory_available_bytes,
            swap_total_bytes: m.swap_total_bytes,
            swap_used_bytes: m.swap_used_bytes,
        }
    }
}

impl From<v1::HostMetrics> for model::HostMetrics {
    fn from(m: v1::HostMetrics) -> Self {
        Self {
            uptime_secs: m.uptime_secs,
            cpu_usage_percent: m.cpu_usage_percent,
            load1: m.load1,
            load5: m.load5,
            load15: m.load15,
            memory_total_bytes: m.memory_total_bytes,
            memory_used_bytes: m.memory_used_bytes,
            memory_available_bytes: m.memory_available_bytes,
            swap_total_bytes: m.swap_total_bytes,
            swap_used_bytes: m.swap_used_bytes,
        }
    }
}

impl From<model::Report> for v1::Report {
    fn from(r: model::Report) -> Self {
        Self {
            seq: r.seq,
            collected_at: Some(timestamp_to_wire(r.collected_at)),
            full: r.full,
            host: r.host.map(Into::into),
            metrics: r.metrics.map(Into::into),
            containers: r.containers.map(Into::into),
            disks: r.disks.map(Into::into),
            reboot: r.reboot.map(Into::into),
            updates: r.updates.map(Into::into),
            network: r.network.map(Into::into),
        }
    }
}

impl TryFrom<v1::Report> for model::Report {
    type Error = ConvertError;
    fn try_from(r: v1::Report) -> Result<Self, Self::Error> {
        Ok(Self {
            seq: r.seq,
            collected_at: opt_ts(&r.collected_at)
                .ok_or(ConvertError::Missing("report.collected_at"))?,
            full: r.full,
            host: r.host.map(Into::into),
            metrics: r.metrics.map(Into::into),
            containers: r.containers.map(TryInto::try_into).transpose()?,
            disks: r.disks.map(Into::into),
            reboot: r.reboot.map(Into::into),
            updates: r.updates.map(Into::into),
            network: r.network.map(Into::into),
        })
    }
}

pub fn container_state_to_wire(s: model::ContainerState) -> v1::ContainerState {
    use model::ContainerState as M;
    use v1::ContainerState as W;
    match s {
        M::Unknown => W::Unspecified,
        M::Created => W::Created,
        M::Running => W::Running,
        M::Paused => W::Paused,
        M::Restarting => W::Restarting,
        M::Removing => W::Removing,
        M::Exited => W::Exited,
        M::Dead => W::Dead,
    }
}

/// `UNSPECIFIED` is `None` (no filter, or a state the engine did not name).
pub fn container_state_from_wire(raw: i32) -> Result<Option<model::ContainerState>, ConvertError> {
    use model::ContainerState as M;
    use v1::ContainerState as W;
    let invalid = ConvertError::Invalid {
        field: "container.state",
        value: raw,
    };
    Ok(match W::try_from(raw).map_err(|_| invalid)? {
        W::Unspecified => None,
        W::Created => Some(M::Created),
        W::Running => Some(M::Running),
        W::Paused => Some(M::Paused),
        W::Restarting => Some(M::Restarting),
        W::Removing => Some(M::Removing),
        W::Exited => Some(M::Exited),
        W::Dead => Some(M::Dead),
    })
}

pub fn container_health_to_wire(h: model::ContainerHealth) -> v1::ContainerHealth {
    use model::ContainerHealth as M;
    use v1::ContainerHealth as W;
    match h {
        M::None => W::None,
        M::Starting => W::Starting,
        M::Healthy => W::Healthy,
        M::Unhealthy => W::Unhealthy,
    }
}

/// `UNSPECIFIED` is `None`.
pub fn container_health_from_wire(
    raw: i32,
) -> Result<Option<model::ContainerHealth>, ConvertError> {
    use model::ContainerHealth as M;
    use v1::ContainerHealth as W;
    let invalid = ConvertError::Invalid {
        field: "container.health",
        value: raw,
    };
    Ok(match W::try_from(raw).map_err(|_| invalid)? {
        W::Unspecified => None,
        W::None => Some(M::None),
        W::Starting => Some(M::Starting),
        W::Healthy => Some(M::Healthy),
        W::Unhealthy => Some(M::Unhealthy),
    })
}

impl From<model::Container> for v1::Container {
    fn from(c: model::Container) -> Self {
        Self {
            id: c.id,
            name: c.name,
            image: c.image,
            image_id: c.image_id,
            state: container_state_to_wire(c.state).into(),
            health: container_health_to_wire(c.health).into(),
            failing_streak: c.failing_streak,
            last_health_output: c.last_health_output,
            restart_count: c.restart_count,
            exit_code: c.exit_code,
            started_at: c.started_at.map(timestamp_to_wire),
            finished_at: c.finished_at.map(timestamp_to_wire),
            labels: c.labels.into_iter().collect(),
            oom_killed: c.oom_killed,
        }
    }
}

impl TryFrom<v1::Container> for model::Container {
    type Error = ConvertError;
    fn try_from(c: v1::Container) -> Result<Self, Self::Error> {
        Ok(Self {
            state: container_state_from_wire(c.state)?.unwrap_or_default(),
            health: container_health_from_wire(c.health)?.unwrap_or_default(),
            started_at: opt_ts(&c.started_at),
            finished_at: opt_ts(&c.finished_at),
            id: c.id,
            name: c.name,
            image: c.image,
            image_id: c.image_id,
            failing_streak: c.failing_streak,
            last_health_output: c.last_health_output,
            restart_count: c.restart_count,
            exit_code: c.exit_code,
            labels: c.labels.into_iter().collect(),
            oom_killed: c.oom_killed,
        })
    }
}

impl From<model::ContainersSection> for v1::ContainersSection {
    fn from(s: model::ContainersSection) -> Self {
        Self {
            available: s.available,
            error: s.error,
            engine: s.engine,
            containers: s.containers.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<v1::ContainersSection> for model::ContainersSection {
    type Error = ConvertError;
    fn try_from(s: v1::ContainersSection) -> Result<Self, Self::Error> {
        Ok(Self {
            available: s.available,
            error: s.error,
            engine: s.engine,
            containers: s
                .containers
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Field-for-field conversions between structs whose fields have the same
/// names and types on both sides.
macro_rules! same_fields {
    ($model:ty, $wire:ty { $($field:ident),* $(,)? }) => {
        impl From<$model> for $wire {
            fn from(m: $model) -> Self {
                Self { $($field: m.$field),* }
            }
        }
        impl From<$wire> for $model {
            fn from(w: $wire) -> Self {
                Self { $($field: w.$field),* }
            }
        }
    };
}

same_fields!(
    model::Filesystem,
    v1::Filesystem {
        mount_point,
        device,
        fs_type,
        total_bytes,
        used_bytes,
        available_bytes,
        inodes_total,
        inodes_used,
        read_only,
    }
);
same_fields!(
    model::RebootReason,
    v1::RebootReason {
        source,
        detail,
        packages
    }
);
same_fields!(
    model::NetInterface,
    v1::NetInterface {
        name,
        rx_bytes,
        tx_bytes,
        rx_packets,
        tx_packets,
        rx_errors,
        tx_errors,
    }
);

impl From<model::DisksSection> for v1::DisksSection {
    fn from(s: model::DisksSection) -> Self {
        Self {
            filesystems: s.filesystems.into_iter().map(Into::into).collect(),
            error: s.error,
        }
    }
}

impl From<v1::DisksSection> for model::DisksSection {
    fn from(s: v1::DisksSection) -> Self {
        Self {
            filesystems: s.filesystems.into_iter().map(Into::into).collect(),
            error: s.error,
        }
    }
}

impl From<model::RebootSection> for v1::RebootSection {
    fn from(s: model::RebootSection) -> Self {
        Self {
            required: s.required,
            reasons: s.reasons.into_iter().map(Into::into).collect(),
            errors: s.errors,
            checked_at: s.checked_at.map(timestamp_to_wire),
        }
    }
}

impl From<v1::RebootSection> for model::RebootSection {
    fn from(s: v1::RebootSection) -> Self {
        Self {
            required: s.required,
            reasons: s.reasons.into_iter().map(Into::into).collect(),
            errors: s.errors,
            checked_at: opt_ts(&s.checked_at),
        }
    }
}

impl From<model::UpdatesSection> for v1::UpdatesSection {
    fn from(s: model::UpdatesSection) -> Self {
        Self {
            manager: s.manager,
            checked: s.checked,
            count: s.count,
            security_count: s.security_count,
            last_check: s.last_check.map(timestamp_to_wire),
            last_error: s.last_error,
            packages: s.packages,
        }
    }
}

impl From<v1::UpdatesSection> for model::UpdatesSection {
    fn from(s: v1::UpdatesSection) -> Self {
        Self {
            last_check: opt_ts(&s.last_check),
            manager: s.manager,
            checked: s.checked,
            count: s.count,
            security_count: s.security_count,
            last_error: s.last_error,
            packages: s.packages,
        }
    }
}

impl From<model::NetworkSection> for v1::NetworkSection {
    fn from(s: model::NetworkSection) -> Self {
        Self {
            interfaces: s.interfaces.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<v1::NetworkSection> for model::NetworkSection {
    fn from(s: v1::NetworkSection) -> Self {
        Self {
            interfaces: s.interfaces.into_iter().map(Into::into).collect(),
        }
    }
}

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
        })
    }
}

pub fn action_kind_to_wire(k: model::ActionKind) -> v1::ActionKind {
    match k {
        model::ActionKind::Patch => v1::ActionKind::Patch,
        model::ActionKind::Reboot => v1::ActionKind::Reboot,
        model::ActionKind::Hook => v1::ActionKind::Hook,
    }
}

/// `UNSPECIFIED` (or an unknown value) names no action: an error.
pub fn action_kind_from_wire(raw: i32) -> Result<model::ActionKind, ConvertError> {
    match v1::ActionKind::try_from(raw) {
        Ok(v1::ActionKind::Patch) => Ok(model::ActionKind::Patch),
        Ok(v1::ActionKind::Reboot) => Ok(model::ActionKind::Reboot),
        Ok(v1::ActionKind::Hook) => Ok(model::ActionKind::Hook),
        Ok(v1::ActionKind::Unspecified) | Err(_) => Err(ConvertError::Invalid {
            field: "action_request.kind",
            value: raw,
        }),
    }
}

pub fn action_state_to_wire(s: model::ActionState) -> v1::ActionState {
    match s {
        model::ActionState::Accepted => v1::ActionState::Accepted,
        model::ActionState::Running => v1::ActionState::Running,
        model::ActionState::Succeeded => v1::ActionState::Succeeded,
        model::ActionState::Failed => v1::ActionState::Failed,
        model::ActionState::Rejected => v1::ActionState::Rejected,
    }
}

/// `UNSPECIFIED` (or an unknown value) is no state: an error.
pub fn action_state_from_wire(raw: i32) -> Result<model::ActionState, ConvertError> {
    match v1::ActionState::try_from(raw) {
        Ok(v1::ActionState::Accepted) => Ok(model::ActionState::Accepted),
        Ok(v1::ActionState::Running) => Ok(model::ActionState::Running),
        Ok(v1::ActionState::Succeeded) => Ok(model::ActionState::Succeeded),
        Ok(v1::ActionState::Failed) => Ok(model::ActionState::Failed),
        Ok(v1::ActionState::Rejected) => Ok(model::ActionState::Rejected),
        Ok(v1::ActionState::Unspecified) | Err(_) => Err(ConvertError::Invalid {
            field: "action_update.state",
            value: raw,
        }),
    }
}

impl From<model::ActionRequest> for v1::ActionRequest {
    fn from(r: model::ActionRequest) -> Self {
        Self {
            action_id: r.id,
            kind: action_kind_to_wire(r.kind).into(),
            name: r.name,
            args: r.args,
            timeout_secs: r.timeout_secs,
        }
    }
}

/// A request as the agent reads it. The id is checked by whoever keeps it
/// (the agent, which makes file names of ids).
impl TryFrom<v1::ActionRequest> for model::ActionRequest {
    type Error = ConvertError;
    fn try_from(r: v1::ActionRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            kind: action_kind_from_wire(r.kind)?,
            id: r.action_id,
            name: r.name,
            args: r.args,
            timeout_secs: r.timeout_secs,
        })
    }
}

/// What an agent says about an action. The node is not on the wire: the
/// server knows it from the certificate.
impl From<model::ActionResult> for v1::ActionUpdate {
    fn from(r: model::ActionResult) -> Self {
        Self {
            action_id: r.id,
            state: action_state_to_wire(r.state).into(),
            exit_code: r.exit_code,
            output_tail: r.output_tail,
            error: r.error,
            started_at: r.started_at.map(timestamp_to_wire),
            finished_at: r.finished_at.map(timestamp_to_wire),
            boot_id: r.boot_id,
        }
    }
}

/// An agent's update about an action, as the server keeps it.
pub fn action_result_from_wire(
    node: &str,
    u: v1::ActionUpdate,
) -> Result<model::ActionResult, ConvertError> {
    let state = action_state_from_wire(u.state)?;
    if u.action_id.is_empty() {
        return Err(ConvertError::Missing("action_update.action_id"));
    }
    Ok(model::ActionResult {
        id: u.action_id,
        node: node.to_owned(),
        state,
        exit_code: u.exit_code,
        output_tail: u.output_tail,
        error: u.error,
        started_at: opt_ts(&u.started_at),
        finished_at: opt_ts(&u.finished_at),
        boot_id: u.boot_id,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_through_the_wire() {
        let report = model::Report {
            seq: 7,
            collected_at: Timestamp::from_unix_millis(1_795_421_138_123),
            full: true,
            host: Some(model::HostFacts {
                hostname: "cmp1".into(),
                kernel: "6.1.0".into(),
                boot_time: Timestamp::from_unix_millis(1_795_000_000_000),
                cpu_count: 4,
                ..Default::default()
            }),
            metrics: Some(model::HostMetrics {
                load1: 0.5,
                memory_total_bytes: 1 << 30,
                ..Default::default()
            }),
            containers: Some(model::ContainersSection {
                available: true,
                containers: vec![model::Container {
                    name: "nova_api".into(),
                    state: model::ContainerState::Exited,
                    health: model::ContainerHealth::Unhealthy,
                    exit_code: 137,
                    started_at: Some(Timestamp::from_unix_millis(5)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            disks: Some(model::DisksSection {
                filesystems: vec![model::Filesystem {
                    mount_point: "/".into(),
                    total_bytes: 10,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            reboot: Some(model::RebootSection {
                required: true,
                ..Default::default()
            }),
            updates: Some(model::UpdatesSection {
                count: 3,
                ..Default::default()
            }),
            network: Some(model::NetworkSection::default()),
        };
        let wire = v1::Report::from(report.clone());
        assert_eq!(model::Report::try_from(wire), Ok(report));
    }

    #[test]
    fn unknown_enum_values_are_errors_not_panics() {
        let c = v1::Container {
            state: 99,
            ..Default::default()
        };
        assert!(model::Container::try_from(c).is_err());
    }

    #[test]
    fn report_without_a_time_is_an_error() {
        let err = model::Report::try_from(v1::Report::default()).unwrap_err();
        assert_eq!(err, ConvertError::Missing("report.collected_at"));
    }

    #[test]
    fn absurd_wire_times_are_clamped_to_what_rfc3339_holds() {
        for seconds in [i64::MAX, 1_000_000_000_000, i64::MIN, -100_000_000_000] {
            let t = timestamp_from_wire(&prost_types::Timestamp { seconds, nanos: 0 });
            assert_eq!(
                Timestamp::parse_rfc3339(&t.to_string()),
                Some(t),
                "{seconds}"
            );
        }
    }

    #[test]
    fn actions_round_trip_through_the_wire() {
        let request = model::ActionRequest {
            id: "c1.cmp1.1.patch".into(),
            kind: model::ActionKind::Hook,
            name: "drain".into(),
            args: vec!["cmp1".into()],
            timeout_secs: 60,
        };
        let wire = v1::ActionRequest::from(request.clone());
        assert_eq!(wire.kind, v1::ActionKind::Hook as i32);
        assert_eq!(model::ActionRequest::try_from(wire), Ok(request));
        let result = model::ActionResult {
            id: "c1.cmp1.1.patch".into(),
            node: "cmp1".into(),
            state: model::ActionState::Failed,
            exit_code: Some(100),
            output_tail: "E: broken\n".into(),
            error: "apt-get exited with 100".into(),
            started_at: Some(Timestamp::from_unix_millis(1_795_000_000_000)),
            finished_at: Some(Timestamp::from_unix_millis(1_795_000_060_000)),
            boot_id: "6f1c".into(),
        };
        let wire = v1::ActionUpdate::from(result.clone());
        assert_eq!(action_result_from_wire("cmp1", wire), Ok(result));
        for state in [
            model::ActionState::Accepted,
            model::ActionState::Running,
            model::ActionState::Succeeded,
            model::ActionState::Failed,
            model::ActionState::Rejected,
        ] {
            let raw = action_state_to_wire(state) as i32;
            assert_eq!(action_state_from_wire(raw), Ok(state));
        }
    }

    #[test]
    fn an_action_without_a_kind_or_state_is_an_error() {
        let request = v1::ActionRequest {
            action_id: "a".into(),
            ..Default::default()
        };
        assert_eq!(
            model::ActionRequest::try_from(request),
            Err(ConvertError::Invalid {
                field: "action_request.kind",
                value: 0
            })
        );
        assert!(action_kind_from_wire(99).is_err());
        let update = v1::ActionUpdate {
            action_id: "a".into(),
            state: 42,
            ..Default::default()
        };
        assert_eq!(
            action_result_from_wire("n", update),
            Err(ConvertError::Invalid {
                field: "action_update.state",
                value: 42
            })
        );
    }

    #[test]
    fn negative_timestamps_survive() {
        let t = Timestamp::from_unix_millis(-1_500);
        assert_eq!(timestamp_from_wire(&timestamp_to_wire(t)), t);
    }
}
