//! The fleet at a glance, built from every node's [`Digest`]: totals count
//! everything, and each list holds at most `limit` entries, so the answer
//! stays small whatever the fleet's size. Only the nodes that end up in a
//! list have a section unpacked.

use rollcall_proto::model::{ContainerHealth, FleetSummary, FullFilesystem, Node, NodeContainer};

use rollcall_proto::timestamp::Timestamp;

use super::expiring::Expiring;
use super::held::Held;

/// The longest a summary list may be by default, and at most.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
pub const MAX_LIST_LIMIT: u32 = 1_000;

/// `nodes` must come sorted by name; so do the lists, except the expiring
/// certificates, nearest first. Certificates that expire within
/// `cert_within_days` of `now` are counted and listed.
pub fn summarize<'a>(
    nodes: impl Iterator<Item = (&'a Node, Option<&'a Held>)>,
    fs_threshold_percent: u32,
    list_limit: u32,
    cert_within_days: u32,
    now: Timestamp,
) -> FleetSummary {
    let threshold = if fs_threshold_percent == 0 {
        90
    } else {
        fs_threshold_percent.min(100)
    };
    let limit = match list_limit {
        0 => DEFAULT_LIST_LIMIT,
        n => n.min(MAX_LIST_LIMIT),
    };
    let room = |v: usize| v < limit as usize;
    let mut s = FleetSummary {
        fs_usage_threshold_percent: threshold,
        list_limit: limit,
        ..Default::default()
    };
    let mut certs = Expiring::new(now, cert_within_days, limit as usize);
    for (node, held) in nodes {
        let name = &node.name;
        s.nodes_total += 1;
        certs.see(name, node.cert_not_after);
        if node.online {
            s.nodes_online += 1;
        } else {
            s.nodes_offline += 1;
            if room(s.offline_nodes.len()) {
                s.offline_nodes.push(name.clone());
            }
        }
        let Some(h) = held else { continue };
        let d = &h.digest;
        if d.reboot_required {
            s.reboot_required_total += 1;
            if room(s.reboot_required_nodes.len()) {
                s.reboot_required_nodes.push(name.clone());
            }
        }
        if d.engine_unavailable {
            s.engine_unavailable_total += 1;
            if room(s.engine_unavailable_nodes.len()) {
                s.engine_unavailable_nodes.push(name.clone());
            }
        }
        s.containers_total += d.containers_total;
        s.unhealthy_containers_total += d.containers_unhealthy;
        s.stopped_containers_total += d.containers_down;
        s.pending_updates += u64::from(d.pending_updates);
        s.pending_security_updates += u64::from(d.pending_security_updates);
        let want_unhealthy = d.containers_unhealthy > 0 && room(s.unhealthy_containers.len());
        let want_down = d.containers_down > 0 && room(s.stopped_containers.len());
        if want_unhealthy || want_down {
            let mut section = h.containers(name).unwrap_or_default();
            section.containers.sort_by(|a, b| a.name.cmp(&b.name));
            for c in section.containers {
                let unhealthy = c.health == ContainerHealth::Unhealthy;
                let down = c.is_down();
                let entry = NodeContainer {
                    node: name.clone(),
                    container: c,
                };
                if unhealthy && room(s.unhealthy_containers.len()) {
                    if down && room(s.stopped_containers.len()) {
                        s.stopped_containers.push(entry.clone());
                    }
                    s.unhealthy_containers.push(entry);
                } else if down && room(s.stopped_containers.len()) {
                    s.stopped_containers.push(entry);
                }
            }
        }
        if d.max_fs_used_percent >= f64::from(threshold) {
            let mut disks = h.disks(name).unwrap_or_default();
            disks
                .filesystems
                .sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
            for fs in disks.filesystems {
                let used = fs.used_percent();
                if used < f64::from(threshold) {
                    continue;
                }
                s.full_filesystems_total += 1;
                if room(s.full_filesystems.len()) {
                    s.full_filesystems.push(FullFilesystem {
                        node: name.clone(),
                        mount_point: fs.mount_point,
                        used_percent: (used * 10.0).round() / 10.0,
                        available_bytes: fs.available_bytes,
                    });
                }
            }
        }
    }
    certs.finish(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::node;
    use rollcall_proto::model::{
        Container, ContainerState, ContainersSection, DisksSection, Filesystem, RebootSection,
        Report, UpdatesSection,
    };

    fn held(report: Report) -> Held {
        let mut h = Held::default();
        h.merge(Report {
            full: true,
            ..report
        });
        h
    }

    #[test]
    fn summary_lists_what_needs_attention() {
        let mut a = node("a");
        a.online = false;
        let b = node("b");
        let report = Report {
            reboot: Some(RebootSection {
                required: true,
                ..Default::default()
            }),
            containers: Some(ContainersSection {
                available: true,
                containers: vec![
                    Container {
                        name: "ok".into(),
                        state: ContainerState::Running,
                        health: ContainerHealth::Healthy,
                        ..Default::default()
                    },
                    Container {
                        name: "sick".into(),
                        state: ContainerState::Running,
                        health: ContainerHealth::Unhealthy,
                        ..Default::default()
                    },
                    Container {
                        name: "dead".into(),
                        state: ContainerState::Exited,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            disks: Some(DisksSection {
                filesystems: vec![
                    Filesystem {
                        mount_point: "/".into(),
                        used_bytes: 95,
                        available_bytes: 5,
                        ..Default::default()
                    },
                    Filesystem {
                        mount_point: "/var".into(),
                        used_bytes: 50,
                        available_bytes: 50,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let down = Report {
            containers: Some(ContainersSection {
                available: false,
                error: "no socket".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (ha, hb) = (held(down), held(report));
        let s = summarize(
            [(&a, Some(&ha)), (&b, Some(&hb))].into_iter(),
            0,
            0,
            0,
            Timestamp::now(),
        );
        assert_eq!((s.nodes_total, s.nodes_online, s.nodes_offline), (2, 1, 1));
        assert_eq!(s.offline_nodes, ["a"]);
        assert_eq!(s.reboot_required_nodes, ["b"]);
        assert_eq!(s.engine_unavailable_nodes, ["a"]);
        assert_eq!(s.containers_total, 3);
        let names = |v: &[NodeContainer]| {
            v.iter()
                .map(|c| c.container.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&s.unhealthy_containers), ["sick"]);
        assert_eq!(names(&s.stopped_containers), ["dead"]);
        assert_eq!(s.fs_usage_threshold_percent, 90);
        assert_eq!(s.list_limit, DEFAULT_LIST_LIMIT);
        assert_eq!(s.full_filesystems.len(), 1);
        assert_eq!(s.full_filesystems[0].mount_point, "/");
        assert_eq!(s.full_filesystems[0].used_percent, 95.0);
    }

    #[test]
    fn lists_are_cut_to_the_limit_but_totals_count_everything() {
        let nodes: Vec<_> = (0..50)
            .map(|i| {
                let mut n = node(&format!("n{i:02}"));
                n.online = i % 2 == 0;
                let h = held(Report {
                    reboot: Some(RebootSection {
                        required: true,
                        ..Default::default()
                    }),
                    updates: Some(UpdatesSection {
                        count: u32::MAX,
                        security_count: 1,
                        ..Default::default()
                    }),
                    containers: Some(ContainersSection {
                        available: true,
                        containers: (0..3)
                            .map(|c| Container {
                                name: format!("c{c}"),
                                state: ContainerState::Exited,
                                health: ContainerHealth::Unhealthy,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                (n, h)
            })
            .collect();
        let s = summarize(
            nodes.iter().map(|(n, h)| (n, Some(h))),
            90,
            7,
            0,
            Timestamp::now(),
        );
        assert_eq!(s.list_limit, 7);
        assert_eq!((s.offline_nodes.len(), s.nodes_offline), (7, 25));
        assert_eq!(
            (s.reboot_required_nodes.len(), s.reboot_required_total),
            (7, 50)
        );
        assert_eq!(
            (s.unhealthy_containers.len(), s.unhealthy_containers_total),
            (7, 150)
        );
        assert_eq!(
            (s.stopped_containers.len(), s.stopped_containers_total),
            (7, 150)
        );
        assert_eq!(s.reboot_required_nodes[0], "n00");
        assert_eq!(s.unhealthy_containers[6].node, "n02");
        // 50 × u32::MAX does not wrap.
        assert_eq!(s.pending_updates, 50 * u64::from(u32::MAX));
        assert_eq!(
            summarize(std::iter::empty(), 90, 1_000_000, 0, Timestamp::now()).list_limit,
            MAX_LIST_LIMIT
        );
    }
}
