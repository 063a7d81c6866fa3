//! What a scrape asks the fleet actor and the scheduler for: small
//! snapshots of their state, computed by pure functions over what they
//! hold (a node's record and `Digest`, a campaign's runs), never by
//! unpacking a report. A snapshot's size does not grow with the fleet,
//! except the per-node samples, taken only while the fleet has at most
//! `[metrics] per_node_max_nodes` nodes.

use std::time::Duration;

use rollcall_proto::model::{Node, Role};
use rollcall_proto::timestamp::Timestamp;

use crate::campaign::Phase;
use crate::campaign::lifecycle::Step;
use crate::campaign::record::NodeRun;
use crate::fleet::Digest;

/// `rollcall_nodes_silent`: nodes whose last report is older than each of
/// these, in seconds (a minute, five, fifteen, an hour, a day).
pub const SILENT_LONGER_THAN: [u64; 5] = [60, 300, 900, 3_600, 86_400];

/// Totals of the nodes of one role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleTotals {
    pub online: u64,
    pub offline: u64,
    pub reboot_required: u64,
    pub pending_updates: u64,
    pub pending_security_updates: u64,
    pub containers_unhealthy: u64,
    pub containers_stopped: u64,
}

/// One node's series, while per-node series are on.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSample {
    pub name: String,
    pub role: Role,
    pub online: bool,
    pub report_age: Duration,
    pub reboot_required: bool,
    pub pending_updates: u32,
    pub pending_security_updates: u32,
    pub containers_unhealthy: u32,
}

/// The fleet, as a scrape shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetSnapshot {
    /// In the order of `Role::ALL`.
    pub by_role: [RoleTotals; Role::ALL.len()],
    /// Agent sessions open now.
    pub sessions: u64,
    /// Operators watching nodes (`nodes watch`, the watch RPC).
    pub watchers: u64,
    /// The agent certificate that expires first, over every node that
    /// connected with one.
    pub nearest_cert_expiry: Option<Timestamp>,
    /// The oldest last report among online nodes, and among offline ones.
    pub report_age_max: [Option<Duration>; 2],
    /// Nodes silent longer than each of [`SILENT_LONGER_THAN`].
    pub silent: [u64; SILENT_LONGER_THAN.len()],
    /// Per-node samples, in name order; `None` when per-node series are
    /// off (the fleet is larger than the limit, or the limit is 0).
    pub per_node: Option<Vec<NodeSample>>,
}

/// What the fleet knows of one node, as [`fleet_snapshot`] reads it.
pub struct NodeFacts<'a> {
    pub node: &'a Node,
    pub digest: Option<&'a Digest>,
    pub in_session: bool,
}

pub fn role_index(role: Role) -> usize {
    Role::ALL.iter().position(|r| *r == role).unwrap_or(0)
}

/// The fleet's snapshot at `now`. `count` is how many nodes `nodes` yields
/// (the per-node samples are taken only if it is at most `per_node_max`,
/// and are then allocated once, at their size).
pub fn fleet_snapshot<'a>(
    nodes: impl Iterator<Item = NodeFacts<'a>>,
    count: usize,
    per_node_max: usize,
    watchers: u64,
    now: Timestamp,
) -> FleetSnapshot {
    let mut s = FleetSnapshot {
        watchers,
        per_node: (count > 0 && count <= per_node_max).then(|| Vec::with_capacity(count)),
        ..FleetSnapshot::default()
    };
    for NodeFacts {
        node,
        digest,
        in_session,
    } in nodes
    {
        let totals = &mut s.by_role[role_index(node.role)];
        if node.online {
            totals.online += 1;
        } else {
            totals.offline += 1;
        }
        let d = digest.cloned().unwrap_or_default();
        totals.reboot_required += u64::from(d.reboot_required);
        totals.pending_updates += u64::from(d.pending_updates);
        totals.pending_security_updates += u64::from(d.pending_security_updates);
        totals.containers_unhealthy += u64::from(d.containers_unhealthy);
        totals.containers_stopped += u64::from(d.containers_down);
        s.sessions += u64::from(in_session);
        if let Some(at) = node.cert_not_after {
            s.nearest_cert_expiry = Some(s.nearest_cert_expiry.map_or(at, |n| n.min(at)));
        }
        let age = now.since(node.last_seen);
        let oldest = &mut s.report_age_max[usize::from(!node.online)];
        *oldest = Some(oldest.map_or(age, |o| o.max(age)));
        for (n, longer_than) in s.silent.iter_mut().zip(SILENT_LONGER_THAN) {
            *n += u64::from(age > Duration::from_secs(longer_than));
        }
        if let Some(samples) = &mut s.per_node {
            samples.push(NodeSample {
                name: node.name.clone(),
                role: node.role,
                online: node.online,
                report_age: age,
                reboot_required: d.reboot_required,
                pending_updates: d.pending_updates,
                pending_security_updates: d.pending_security_updates,
                containers_unhealthy: d.containers_unhealthy,
            });
        }
    }
    s
}

/// One campaign that has not ended (its id is a label only while it has
/// not: ended campaigns are only counted by phase).
#[derive(Clone, Debug, PartialEq)]
pub struct OpenCampaign {
    pub id: String,
    pub phase: Phase,
    /// In the order of `Step::ALL`.
    pub nodes_by_step: [u64; Step::ALL.len()],
    /// The longest a node of it has waited at its before gate, and at its
    /// after gate, now; `None` while no node is at that gate.
    pub gate_wait_max: [Option<Duration>; 2],
}

/// The campaigns, as a scrape shows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CampaignSnapshot {
    /// Every campaign the server keeps, by phase (in the order of `Phase::ALL`).
    pub by_phase: [u64; Phase::ALL.len()],
    pub open: Vec<OpenCampaign>,
    /// Operators watching a campaign.
    pub watchers: u64,
}

/// What the scheduler knows of one campaign, as [`campaign_snapshot`] reads it.
pub struct CampaignFacts<'a, R> {
    pub id: &'a str,
    pub phase: Phase,
    pub ended: bool,
    pub runs: R,
}

pub fn step_index(step: Step) -> usize {
    Step::ALL.iter().position(|s| *s == step).unwrap_or(0)
}

fn phase_index(phase: Phase) -> usize {
    Phase::ALL.iter().position(|p| *p == phase).unwrap_or(0)
}

pub fn campaign_snapshot<'a, R: Iterator<Item = &'a NodeRun>>(
    campaigns: impl Iterator<Item = CampaignFacts<'a, R>>,
    watchers: u64,
    now: Timestamp,
) -> CampaignSnapshot {
    let mut s = CampaignSnapshot {
        watchers,
        ..CampaignSnapshot::default()
    };
    for c in campaigns {
        s.by_phase[phase_index(c.phase)] += 1;
        if c.ended {
            continue;
        }
        let mut open = OpenCampaign {
            id: c.id.to_owned(),
            phase: c.phase,
            nodes_by_step: [0; Step::ALL.len()],
            gate_wait_max: [None; 2],
        };
        for run in c.runs {
            open.nodes_by_step[step_index(run.step)] += 1;
            let gate = match run.step {
                Step::GateBefore => 0,
                Step::GateAfter => 1,
                _ => continue,
            };
            let waited = now.since(run.since);
            let max = &mut open.gate_wait_max[gate];
            *max = Some(max.map_or(waited, |m| m.max(waited)));
        }
        s.open.push(open);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::node;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1_000)
    }

    #[test]
    fn the_fleet_is_totalled_by_role_and_state() {
        let now = at(100_000);
        let mut ctl = node("ctl01");
        ctl.role = Role::Controller;
        ctl.last_seen = at(99_990);
        ctl.cert_not_after = Some(at(200_000));
        let mut cmp = node("cmp01");
        cmp.role = Role::Compute;
        cmp.online = false;
        cmp.last_seen = at(100_000 - 4_000);
        cmp.cert_not_after = Some(at(150_000));
        let mut cmp2 = node("cmp02");
        cmp2.role = Role::Compute;
        cmp2.last_seen = at(99_999);
        let digest = Digest {
            reboot_required: true,
            containers_unhealthy: 2,
            containers_down: 1,
            pending_updates: 7,
            pending_security_updates: 3,
            ..Digest::default()
        };
        let facts = vec![
            NodeFacts {
                node: &ctl,
                digest: Some(&digest),
                in_session: true,
            },
            NodeFacts {
                node: &cmp,
                digest: None,
                in_session: false,
            },
            NodeFacts {
                node: &cmp2,
                digest: Some(&digest),
                in_session: true,
            },
        ];
        let s = fleet_snapshot(facts.into_iter(), 3, 2, 4, now);
        let c = s.by_role[role_index(Role::Compute)];
        assert_eq!((c.online, c.offline), (1, 1));
        assert_eq!(c.reboot_required, 1);
        assert_eq!((c.pending_updates, c.pending_security_updates), (7, 3));
        assert_eq!((c.containers_unhealthy, c.containers_stopped), (2, 1));
        let k = s.by_role[role_index(Role::Controller)];
        assert_eq!((k.online, k.offline, k.reboot_required), (1, 0, 1));
        assert_eq!(s.by_role[role_index(Role::Storage)], RoleTotals::default());
        assert_eq!((s.sessions, s.watchers), (2, 4));
        assert_eq!(s.nearest_cert_expiry, Some(at(150_000)));
        assert_eq!(
            s.report_age_max,
            [
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(4_000))
            ]
        );
        assert_eq!(s.silent, [1, 1, 1, 1, 0], "only cmp01 is silent, 4000 s");
        assert_eq!(s.per_node, None, "three nodes, per-node series up to two");
    }

    #[test]
    fn per_node_samples_are_taken_up_to_the_limit_only() {
        let now = at(1_000);
        let nodes: Vec<Node> = ["a", "b"].into_iter().map(node).collect();
        let facts = || {
            nodes.iter().map(|n| NodeFacts {
                node: n,
                digest: None,
                in_session: false,
            })
        };
        let on = fleet_snapshot(facts(), 2, 2, 0, now);
        let names: Vec<&str> = on
            .per_node
            .as_ref()
            .expect("two nodes, limit two")
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            fleet_snapshot(facts(), 2, 0, 0, now).per_node,
            None,
            "0 is off"
        );
        let empty = fleet_snapshot(std::iter::empty(), 0, 500, 0, now);
        assert_eq!(empty.per_node, None, "no node, no per-node family");
        assert_eq!(empty.report_age_max, [None, None]);
    }

    #[test]
    fn open_campaigns_count_their_nodes_by_step_and_their_gate_waits() {
        let now = at(10_000);
        let run = |node: &str, step: Step, since: i64| {
            let mut r = NodeRun::new(node.into(), Role::Controller, at(since));
            r.step = step;
            r
        };
        let open_runs = [
            run("a", Step::Done, 0),
            run("b", Step::GateBefore, 9_000),
            run("c", Step::GateBefore, 9_900),
            run("d", Step::Pending, 0),
        ];
        let ended_runs = [run("a", Step::Done, 0)];
        let campaigns = vec![
            CampaignFacts {
                id: "c1",
                phase: Phase::Completed,
                ended: true,
                runs: ended_runs.iter(),
            },
            CampaignFacts {
                id: "c2",
                phase: Phase::Paused,
                ended: false,
                runs: open_runs.iter(),
            },
        ];
        let s = campaign_snapshot(campaigns.into_iter(), 1, now);
        assert_eq!(s.by_phase[phase_index(Phase::Completed)], 1);
        assert_eq!(s.by_phase[phase_index(Phase::Paused)], 1);
        assert_eq!(s.by_phase[phase_index(Phase::Running)], 0);
        assert_eq!(s.open.len(), 1, "only c2 has not ended");
        let c2 = &s.open[0];
        assert_eq!(c2.id, "c2");
        assert_eq!(c2.nodes_by_step[step_index(Step::GateBefore)], 2);
        assert_eq!(c2.nodes_by_step[step_index(Step::Done)], 1);
        assert_eq!(c2.nodes_by_step[step_index(Step::Pending)], 1);
        assert_eq!(
            c2.gate_wait_max,
            [Some(Duration::from_secs(1_000)), None],
            "b waits longest at the before gate"
        );
    }
}
