//! What the fleet holds of one node's reports: the merge of every report
//! the node sent ([`Report::merge`]'s rule), kept compact. The sections
//! that are large and rarely read (containers, disks, updates, network,
//! reboot) stay packed ([`rollcall_proto::pack`]); what listings and the
//! fleet summary need from them is kept beside them as a [`Digest`].
//!
//! Merging also says which sections changed and which of those must be
//! durable ([`Merged`]): the store writes a section only when it changed,
//! and never writes metrics or network counters (see ARCHITECTURE.md,
//! "what is durable").

use std::hash::{DefaultHasher, Hash, Hasher};

use rollcall_proto::model::{
    ContainerHealth, ContainersSection, DisksSection, HostFacts, HostMetrics, NetworkSection,
    RebootSection, Report, UpdatesSection,
};
use rollcall_proto::pack::{Pack, Packed, UnpackError};
use rollcall_proto::timestamp::Timestamp;

use crate::store::Section;

/// What listings and the summary need from the packed sections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Digest {
    pub reboot_required: bool,
    /// Since when the node has asked for a reboot without a break: the
    /// collection time (agent clock) of the first report this server took
    /// that asked for it. The reboot section carries no such time of its
    /// own, and a restarted server starts again from the stored report.
    pub reboot_required_since: Option<Timestamp>,
    /// The report has a containers section saying the engine is unreachable.
    pub engine_unavailable: bool,
    pub containers_total: u32,
    pub containers_unhealthy: u32,
    /// Should run but do not (exited, dead, restarting).
    pub containers_down: u32,
    /// The fullest filesystem, in percent (0 without disks).
    pub max_fs_used_percent: f64,
    pub pending_updates: u32,
    pub pending_security_updates: u32,
}

impl Digest {
    /// Some container is unhealthy or should run and does not: the node's
    /// containers are worth unpacking for the blast-radius guard (`bad.rs`).
    pub fn has_bad_containers(&self) -> bool {
        self.containers_unhealthy > 0 || self.containers_down > 0
    }
}

/// One node's merged report, compact.
#[derive(Clone, Debug, Default)]
pub struct Held {
    pub seq: u64,
    pub collected_at: Timestamp,
    pub host: Option<HostFacts>,
    pub metrics: Option<HostMetrics>,
    containers: Option<Packed<ContainersSection>>,
    disks: Option<Packed<DisksSection>>,
    /// What identifies the disks section apart from its usage figures: a
    /// new or removed filesystem, a remount read-only, an error.
    disks_shape: Option<u64>,
    reboot: Option<Packed<RebootSection>>,
    updates: Option<Packed<UpdatesSection>>,
    network: Option<Packed<NetworkSection>>,
    pub digest: Digest,
}

/// What a merge changed.
#[derive(Debug, Default)]
pub struct Merged {
    /// Sections to write to the store now: new content of host, containers,
    /// reboot or updates, or disks whose shape changed.
    pub durable: Vec<Section>,
    /// Disk usage changed without a change of shape: written at the next
    /// checkpoint, not at once.
    pub disks_usage_changed: bool,
    /// The reboot state or the containers changed: what campaign gates wait for.
    pub gate_news: bool,
}

/// A report made ready to hold: its sections packed and digested. Built
/// where the report arrives (the session's task), so the fleet's queue holds
/// a few kilobytes per report instead of the decoded report, and the work
/// of packing is spread over the runtime's threads.
#[derive(Debug)]
pub struct Update {
    seq: u64,
    collected_at: Timestamp,
    full: bool,
    host: Option<HostFacts>,
    metrics: Option<HostMetrics>,
    containers: Option<(Packed<ContainersSection>, ContainerCounts)>,
    disks: Option<(Packed<DisksSection>, DiskFacts)>,
    reboot: Option<(Packed<RebootSection>, bool)>,
    updates: Option<(Packed<UpdatesSection>, (u32, u32))>,
    network: Option<Packed<NetworkSection>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct ContainerCounts {
    engine_unavailable: bool,
    total: u32,
    unhealthy: u32,
    down: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct DiskFacts {
    shape: u64,
    max_used_percent: f64,
}

impl From<Report> for Update {
    fn from(r: Report) -> Self {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Update {
            seq: r.seq,
            collected_at: r.collected_at,
            full: r.full,
            containers: r.containers.map(|s| {
                let counts = ContainerCounts {
                    engine_unavailable: !s.available,
                    total: count(s.containers.len()),
                    unhealthy: count(
                        s.containers
                            .iter()
                            .filter(|c| c.health == ContainerHealth::Unhealthy)
                            .count(),
                    ),
                    down: count(s.containers.iter().filter(|c| c.is_down()).count()),
                };
                (s.pack_owned(), counts)
            }),
            disks: r.disks.map(|d| {
                let facts = DiskFacts {
                    shape: disks_shape(&d),
                    max_used_percent: d
                        .filesystems
                        .iter()
                        .map(|fs| fs.used_percent())
                        .fold(0.0, f64::max),
                };
                (d.pack(), facts)
            }),
            reboot: r.reboot.map(|s| (s.pack(), s.required)),
            updates: r.updates.map(|u| (u.pack(), (u.count, u.security_count))),
            network: r.network.as_ref().map(Pack::pack),
            host: r.host,
            metrics: r.metrics,
        }
    }
}

/// Replaces a packed section; returns the new one if it differs.
fn replace<T>(slot: &mut Option<Packed<T>>, new: Option<Packed<T>>) -> Option<Option<Packed<T>>> {
    if *slot == new {
        return None;
    }
    slot.clone_from(&new);
    Some(new)
}

fn disks_shape(d: &DisksSection) -> u64 {
    let mut h = DefaultHasher::new();
    d.error.hash(&mut h);
    for fs in &d.filesystems {
        (&fs.mount_point, &fs.device, &fs.fs_type, fs.read_only).hash(&mut h);
        fs.total_bytes.hash(&mut h);
    }
    h.finish()
}

impl Held {
    /// Applies a report: a full one replaces every section, a partial one
    /// only the sections it carries.
    pub fn merge(&mut self, r: Report) -> Merged {
        self.apply(Update::from(r))
    }

    /// [`Held::merge`] for a report already made ready.
    pub fn apply(&mut self, u: Update) -> Merged {
        let mut out = Merged::default();
        self.seq = u.seq;
        self.collected_at = u.collected_at;
        // A full report replaces a section it lacks with nothing.
        let full = u.full;
        let carried = |present: bool| full || present;

        if carried(u.host.is_some()) && self.host != u.host {
            self.host.clone_from(&u.host);
            out.durable.push(Section::Host(u.host));
        }
        if carried(u.metrics.is_some()) {
            self.metrics = u.metrics;
        }
        if carried(u.network.is_some()) {
            self.network = u.network;
        }
        if carried(u.containers.is_some()) {
            let (packed, counts) = u.containers.unzip();
            let counts = counts.unwrap_or_default();
            let d = &mut self.digest;
            d.engine_unavailable = counts.engine_unavailable;
            d.containers_total = counts.total;
            d.containers_unhealthy = counts.unhealthy;
            d.containers_down = counts.down;
            if let Some(new) = replace(&mut self.containers, packed) {
                out.gate_news = true;
                out.durable.push(Section::Containers(new));
            }
        }
        if carried(u.reboot.is_some()) {
            let (packed, required) = u.reboot.unzip();
            let required = required.unwrap_or(false);
            self.digest.reboot_required_since = match self.digest.reboot_required_since {
                Some(since) if required => Some(since),
                _ if required => Some(u.collected_at),
                _ => None,
            };
            self.digest.reboot_required = required;
            if let Some(new) = replace(&mut self.reboot, packed) {
                out.gate_news = true;
                out.durable.push(Section::Reboot(new));
            }
        }
        if carried(u.updates.is_some()) {
            let (packed, counts) = u.updates.unzip();
            (
                self.digest.pending_updates,
                self.digest.pending_security_updates,
            ) = counts.unwrap_or_default();
            if let Some(new) = replace(&mut self.updates, packed) {
                out.durable.push(Section::Updates(new));
            }
        }
        if carried(u.disks.is_some()) {
            let (packed, facts) = u.disks.unzip();
            let reshaped = facts.map(|f| f.shape) != self.disks_shape;
            self.disks_shape = facts.map(|f| f.shape);
            self.digest.max_fs_used_percent = facts.map_or(0.0, |f| f.max_used_percent);
            if let Some(new) = replace(&mut self.disks, packed) {
                if reshaped {
                    out.durable.push(Section::Disks(new));
                } else {
                    out.disks_usage_changed = true;
                }
            }
        }
        out
    }

    /// The disks section as the store keeps it (for checkpoints).
    pub fn packed_disks(&self) -> Option<Packed<DisksSection>> {
        self.disks.clone()
    }

    /// Unpacks a section.
    fn open<T: Pack>(node: &str, what: &str, p: &Option<Packed<T>>) -> Option<T> {
        p.as_ref().and_then(|p| readable(node, what, p.unpack()))
    }

    pub fn containers(&self, node: &str) -> Option<ContainersSection> {
        Self::open(node, "containers", &self.containers)
    }

    /// The containers section with only the containers whose name `keep`
    /// accepts.
    pub fn containers_where(
        &self,
        node: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Option<ContainersSection> {
        let unpacked = self.containers.as_ref()?.unpack_where(keep);
        readable(node, "containers", unpacked)
    }

    pub fn disks(&self, node: &str) -> Option<DisksSection> {
        Self::open(node, "disks", &self.disks)
    }

    /// The whole merged report, unpacked.
    pub fn report(&self, node: &str) -> Report {
        Report {
            seq: self.seq,
            collected_at: self.collected_at,
            full: true,
            host: self.host.clone(),
            metrics: self.metrics.clone(),
            containers: self.containers(node),
            disks: self.disks(node),
            reboot: Self::open(node, "reboot", &self.reboot),
            updates: Self::open(node, "updates", &self.updates),
            network: Self::open(node, "network", &self.network),
        }
    }

    /// Bytes held in packed form (for the memory figures in BENCHMARKS.md).
    pub fn packed_bytes(&self) -> usize {
        self.containers.as_ref().map_or(0, Packed::len)
            + self.disks.as_ref().map_or(0, Packed::len)
            + self.reboot.as_ref().map_or(0, Packed::len)
            + self.updates.as_ref().map_or(0, Packed::len)
            + self.network.as_ref().map_or(0, Packed::len)
    }
}

/// A section this process packed always unpacks; if one ever does not, it
/// is reported as absent and logged.
fn readable<T>(node: &str, what: &str, unpacked: Result<T, UnpackError>) -> Option<T> {
    unpacked
        .inspect_err(|e| tracing::error!(node = %node, section = what, error = %e, "A held report section cannot be read; showing it as absent."))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::model::{
        Container, ContainerState, Filesystem, NetInterface, NetworkSection,
    };

    fn container(name: &str, health: ContainerHealth, restarts: u32) -> Container {
        Container {
            name: name.into(),
            state: ContainerState::Running,
            health,
            restart_count: restarts,
            labels: [("kolla_version".to_owned(), "18.1.0".to_owned())].into(),
            ..Default::default()
        }
    }

    fn full() -> Report {
        Report {
            seq: 1,
            full: true,
            host: Some(HostFacts {
                hostname: "cmp-1".into(),
                ..Default::default()
            }),
            metrics: Some(HostMetrics::default()),
            containers: Some(ContainersSection {
                available: true,
                containers: vec![
                    container("nova_compute", ContainerHealth::Healthy, 0),
                    container("nova_libvirt", ContainerHealth::Unhealthy, 0),
                ],
                ..Default::default()
            }),
            disks: Some(DisksSection {
                filesystems: vec![Filesystem {
                    mount_point: "/".into(),
                    used_bytes: 50,
                    available_bytes: 50,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            reboot: Some(RebootSection::default()),
            updates: Some(UpdatesSection {
                count: 3,
                security_count: 1,
                ..Default::default()
            }),
            network: Some(NetworkSection {
                interfaces: vec![NetInterface {
                    name: "eth0".into(),
                    rx_bytes: 1,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }
    }

    fn names(m: &Merged) -> Vec<&'static str> {
        m.durable.iter().map(Section::name).collect()
    }

    #[test]
    fn the_first_full_report_is_durable_and_digested() {
        let mut h = Held::default();
        let m = h.merge(full());
        assert_eq!(
            names(&m),
            ["host", "containers", "reboot", "updates", "disks"]
        );
        assert_eq!(h.digest.containers_total, 2);
        assert_eq!(h.digest.containers_unhealthy, 1);
        assert_eq!(h.digest.pending_updates, 3);
        assert_eq!(h.digest.max_fs_used_percent, 50.0);
        assert_eq!(h.report("cmp-1"), Report { ..full() });
    }

    #[test]
    fn a_reboot_is_required_since_the_first_report_that_asked_for_it() {
        let at = Timestamp::from_unix_millis;
        let asking = |seq: u64, collected: i64, required: bool| Report {
            seq,
            collected_at: at(collected),
            reboot: Some(RebootSection {
                required,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut h = Held::default();
        h.merge(Report {
            collected_at: at(1_000),
            ..full()
        });
        assert_eq!(h.digest.reboot_required_since, None);
        h.merge(asking(2, 2_000, true));
        h.merge(asking(3, 3_000, true));
        h.merge(Report {
            seq: 4,
            collected_at: at(4_000),
            ..Default::default()
        });
        assert_eq!(
            h.digest.reboot_required_since,
            Some(at(2_000)),
            "later reports asking again, or saying nothing of it, keep the first time"
        );
        h.merge(asking(5, 5_000, false));
        assert_eq!(h.digest.reboot_required_since, None);
        h.merge(asking(6, 6_000, true));
        assert_eq!(
            h.digest.reboot_required_since,
            Some(at(6_000)),
            "a new streak"
        );
    }

    #[test]
    fn an_unchanged_full_report_and_routine_partials_write_nothing() {
        let mut h = Held::default();
        h.merge(full());
        let again = h.merge(Report { seq: 2, ..full() });
        assert!(again.durable.is_empty() && !again.gate_news);
        let mut partial = Report {
            seq: 3,
            metrics: Some(HostMetrics {
                load1: 2.0,
                ..Default::default()
            }),
            network: full().network,
            ..Default::default()
        };
        partial.network.as_mut().expect("network").interfaces[0].rx_bytes = 99;
        let m = h.merge(partial);
        assert!(m.durable.is_empty() && !m.disks_usage_changed && !m.gate_news);
        let r = h.report("cmp-1");
        assert_eq!(r.seq, 3);
        assert_eq!(r.network.expect("network").interfaces[0].rx_bytes, 99);
        assert_eq!(r.containers, full().containers, "untouched by a partial");
    }

    #[test]
    fn a_container_change_is_durable_gate_news_and_redigested() {
        let mut h = Held::default();
        h.merge(full());
        let mut containers = full().containers.expect("containers");
        containers.containers[1].health = ContainerHealth::Healthy;
        containers.containers[0].restart_count = 1;
        let m = h.merge(Report {
            seq: 2,
            containers: Some(containers),
            ..Default::default()
        });
        assert_eq!(names(&m), ["containers"]);
        assert!(m.gate_news);
        assert_eq!(h.digest.containers_unhealthy, 0);
    }

    #[test]
    fn disk_usage_waits_for_the_checkpoint_but_a_new_filesystem_does_not() {
        let mut h = Held::default();
        h.merge(full());
        let mut disks = full().disks.expect("disks");
        disks.filesystems[0].used_bytes = 60;
        disks.filesystems[0].available_bytes = 40;
        let m = h.merge(Report {
            seq: 2,
            disks: Some(disks.clone()),
            ..Default::default()
        });
        assert!(m.durable.is_empty() && m.disks_usage_changed);
        assert_eq!(h.digest.max_fs_used_percent, 60.0);
        disks.filesystems.push(Filesystem {
            mount_point: "/var/lib/docker".into(),
            ..Default::default()
        });
        let m = h.merge(Report {
            seq: 3,
            disks: Some(disks),
            ..Default::default()
        });
        assert_eq!(names(&m), ["disks"]);
    }

    #[test]
    fn a_full_report_without_a_section_removes_it() {
        let mut h = Held::default();
        h.merge(full());
        let m = h.merge(Report {
            seq: 2,
            containers: None,
            ..full()
        });
        assert_eq!(names(&m), ["containers"]);
        assert!(matches!(m.durable[0], Section::Containers(None)));
        assert_eq!(h.digest.containers_total, 0);
        assert!(h.report("cmp-1").containers.is_none());
    }
}
