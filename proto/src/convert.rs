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

pub fn timestamp_from_wire(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_unix_millis(
        t.seconds
            .saturating_mul(1_000)
            .saturating_add(i64::from(t.nanos / 1_000_000)),
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
            host: Some(r.host.into()),
            metrics: Some(r.metrics.into()),
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
            host: r.host.ok_or(ConvertError::Missing("report.host"))?.into(),
            metrics: r
                .metrics
                .ok_or(ConvertError::Missing("report.metrics"))?
                .into(),
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
        }
    }
}

impl TryFrom<v1::Node> for model::Node {
    type Error = ConvertError;
    fn try_from(n: v1::Node) -> Result<Self, Self::Error> {
        Ok(Self {
            role: role_from_wire(n.role).ok_or(ConvertError::Invalid {
                field: "node.role",
                value: n.role,
            })?,
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
            host: model::HostFacts {
                hostname: "cmp1".into(),
                kernel: "6.1.0".into(),
                boot_time: Timestamp::from_unix_millis(1_795_000_000_000),
                cpu_count: 4,
                ..Default::default()
            },
            metrics: model::HostMetrics {
                load1: 0.5,
                memory_total_bytes: 1 << 30,
                ..Default::default()
            },
        };
        let wire = v1::Report::from(report.clone());
        assert_eq!(model::Report::try_from(wire), Ok(report));
    }

    #[test]
    fn report_without_sections_is_an_error() {
        let err = model::Report::try_from(v1::Report::default()).unwrap_err();
        assert_eq!(err, ConvertError::Missing("report.collected_at"));
    }

    #[test]
    fn negative_timestamps_survive() {
        let t = Timestamp::from_unix_millis(-1_500);
        assert_eq!(timestamp_from_wire(&timestamp_to_wire(t)), t);
    }
}
