//! Report sections: host facts, metrics, containers, disks, reboot,
//! updates and network, and the report that carries them.

use super::{ConvertError, opt_ts, timestamp_to_wire};
use crate::model;
use crate::v1;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Timestamp;

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
}
