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
use crate::campaign::spec::CampaignSpec;
use crate::fleet::Digest;

/// `rollcall_nodes_silent`: nodes whose last report is older than each of
/// these, in seconds (a minute, five, fifteen, an hour, a day).
pub const SILENT_LONGER_THAN: [u64; 5] = [60, 300, 900, 3_600, 86_400];

/// `rollcall_nodes_reboot_required_longer_than`: nodes that have asked for
/// a reboot for longer than each of these, in seconds (a day, three, seven).
pub const REBOOT_LONGER_THAN: [u64; 3] = [86_400, 259_200, 604_800];

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
    pub reboot_required_since: Option<Timestamp>,
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
    /// The agent certificate that expires first, over the online nodes
    /// (a node gone for good, never forgotten, would keep its old
    /// certificate here for ever and hide the expiries that matter).
    pub nearest_cert_expiry: Option<Timestamp>,
    /// The oldest last report among online nodes, and among offline ones.
    pub report_age_max: [Option<Duration>; 2],
    /// Nodes silent longer than each of [`SILENT_LONGER_THAN`].
    pub silent: [u64; SILENT_LONGER_THAN.len()],
    /// Nodes that have asked for a reboot longer than each of
    /// [`REBOOT_LONGER_THAN`].
    pub reboot_required_longer: [u64; REBOOT_LONGER_THAN.len()],
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

/// A role's place in `Role::ALL` (a test holds the two in step; a new
/// role fails to compile here rather than land on another's index).
pub fn role_index(role: Role) -> usize {
    match role {
        Role::Controller => 0,
        Role::Compute => 1,
        Role::Storage => 2,
    }
}

/// Whether per-node series are written for a fleet of `count` nodes,
/// given whether they were at the last scrape: on up to `max` nodes, and
/// once on, kept up to a tenth more, so a fleet that hovers at the limit
/// does not make every per-node series come and go. 0 turns them off.
pub fn per_node_on(was_on: bool, count: usize, max: usize) -> bool {
    let limit = if was_on {
        max.saturating_add(max.div_ceil(10))
    } else {
        max
    };
    max > 0 && count > 0 && count <= limit
}

/// The fleet's snapshot at `now`. `count` is how many nodes `nodes` yields;
/// per-node samples are taken when `per_node` (see [`per_node_on`]), and
/// are then allocated once, at their size.
pub fn fleet_snapshot<'a>(
    nodes: impl Iterator<Item = NodeFacts<'a>>,
    count: usize,
    per_node: bool,
    watchers: u64,
    now: Timestamp,
) -> FleetSnapshot {
    let mut s = FleetSnapshot {
        watchers,
        per_node: per_node.then(|| Vec::with_capacity(count)),
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
        if let Some(at) = node.cert_not_after.filter(|_| node.online) {
            s.nearest_cert_expiry = Some(s.nearest_cert_expiry.map_or(at, |n| n.min(at)));
        }
        let age = now.since(node.last_seen);
        let oldest = &mut s.report_age_max[usize::from(!node.online)];
        *oldest = Some(oldest.map_or(age, |o| o.max(age)));
        for (n, longer_than) in s.silent.iter_mut().zip(SILENT_LONGER_THAN) {
            *n += u64::from(age > Duration::from_secs(longer_than));
        }
        if let Some(since) = d.reboot_required_since.filter(|_| d.reboot_required) {
            let asked = now.since(since);
            for (n, longer_than) in s.reboot_required_longer.iter_mut().zip(REBOOT_LONGER_THAN) {
                *n += u64::from(asked > Duration::from_secs(longer_than));
            }
        }
        if let Some(samples) = &mut s.per_node {
            samples.push(NodeSample {
                name: node.name.clone(),
                role: node.role,
                online: node.online,
                report_age: age,
                reboot_required: d.reboot_required,
                reboot_required_since: d.reboot_required_since.filter(|_| d.reboot_required),
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
    /// The gates of each role it has nodes of, in the order of `Role::ALL`.
    pub gates: Vec<RoleGates>,
}

/// The before and after gates of one role in one campaign.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleGates {
    pub role: Role,
    /// The longest a node of the role has waited at its before gate, and
    /// at its after gate, now; `None` while no node is at that gate.
    pub wait_max: [Option<Duration>; 2],
    /// How long a node may wait at each gate before it fails.
    pub timeout: [Option<Duration>; 2],
}

/// The gate timeouts a spec gives each role: `[gates.ROLE] timeout_secs`,
/// else `timeouts.gate_secs`; in the order of `Role::ALL`, then
/// before and after.
pub fn gate_timeouts(spec: &CampaignSpec) -> [[Option<Duration>; 2]; Role::ALL.len()] {
    Role::ALL
        .map(|role| [Step::GateBefore, Step::GateAfter].map(|gate| spec.step_timeout(role, gate)))
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
    /// Its spec, for the gate timeouts (looked at only while it is open).
    pub spec: &'a CampaignSpec,
}

/// A step's place in `Step::ALL` (a test holds the two in step).
pub fn step_index(step: Step) -> usize {
    match step {
        Step::Pending => 0,
        Step::Precheck => 1,
        Step::GateBefore => 2,
        Step::Drain => 3,
        Step::Patch => 4,
        Step::Reboot => 5,
        Step::WaitReturn => 6,
        Step::Postcheck => 7,
        Step::GateAfter => 8,
        Step::Undrain => 9,
        Step::Done => 10,
        Step::Failed => 11,
        Step::Skipped => 12,
    }
}

/// A phase's place in `Phase::ALL` (a test holds the two in step).
pub fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::Running => 0,
        Phase::Paused => 1,
        Phase::Cancelled => 2,
        Phase::Completed => 3,
    }
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
        let mut nodes_by_step = [0; Step::ALL.len()];
        let timeouts = gate_timeouts(c.spec);
        let mut gates: [Option<RoleGates>; Role::ALL.len()] = Role::ALL.map(|_| None);
        for run in c.runs {
            nodes_by_step[step_index(run.step)] += 1;
            let role = role_index(run.role);
            let g = gates[role].get_or_insert_with(|| RoleGates {
                role: run.role,
                wait_max: [None; 2],
                timeout: timeouts[role],
            });
            let gate = match run.step {
                Step::GateBefore => 0,
                Step::GateAfter => 1,
                _ => continue,
            };
            let waited = now.since(run.since);
            let max = &mut g.wait_max[gate];
            *max = Some(max.map_or(waited, |m| m.max(waited)));
        }
        s.open.push(OpenCampaign {
            id: c.id.to_owned(),
            phase: c.phase,
            nodes_by_step,
            gates: gates.into_iter().flatten().collect(),
        });
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
        let s = fleet_snapshot(facts.into_iter(), 3, false, 4, now);
        let c = s.by_role[role_index(Role::Compute)];
        assert_eq!((c.online, c.offline), (1, 1));
        assert_eq!(c.reboot_required, 1);
        assert_eq!((c.pending_updates, c.pending_security_updates), (7, 3));
        assert_eq!((c.containers_unhealthy, c.containers_stopped), (2, 1));
        let k = s.by_role[role_index(Role::Controller)];
        assert_eq!((k.online, k.offline, k.reboot_required), (1, 0, 1));
        assert_eq!(s.by_role[role_index(Role::Storage)], RoleTotals::default());
        assert_eq!((s.sessions, s.watchers), (2, 4));
        assert_eq!(
            s.nearest_cert_expiry,
            Some(at(200_000)),
            "cmp01's certificate expires first, but cmp01 is offline"
        );
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
        let on = fleet_snapshot(facts(), 2, per_node_on(false, 2, 2), 0, now);
        let names: Vec<&str> = on
            .per_node
            .as_ref()
            .expect("two nodes, limit two")
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            fleet_snapshot(facts(), 2, per_node_on(false, 2, 0), 0, now).per_node,
            None,
            "0 is off"
        );
        let empty = fleet_snapshot(std::iter::empty(), 0, per_node_on(true, 0, 500), 0, now);
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
        let mut e = run("e", Step::GateAfter, 9_990);
        e.role = Role::Compute;
        let open_runs = [
            run("a", Step::Done, 0),
            run("b", Step::GateBefore, 9_000),
            run("c", Step::GateBefore, 9_900),
            run("d", Step::Pending, 0),
            e,
        ];
        let ended_runs = [run("a", Step::Done, 0)];
        let spec = CampaignSpec::parse(
            "name = \"t\"\n[timeouts]\ngate_secs = 1800\n[gates.compute]\nbefore = [\"x\"]\nrun_on = \"self\"\ntimeout_secs = 600\n",
        )
        .expect("spec");
        let campaigns = vec![
            CampaignFacts {
                id: "c1",
                phase: Phase::Completed,
                ended: true,
                runs: ended_runs.iter(),
                spec: &spec,
            },
            CampaignFacts {
                id: "c2",
                phase: Phase::Paused,
                ended: false,
                runs: open_runs.iter(),
                spec: &spec,
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
        assert_eq!(c2.nodes_by_step[step_index(Step::GateAfter)], 1);
        let [ctl, cmp] = &c2.gates[..] else {
            panic!("a row for each role with nodes: {:?}", c2.gates)
        };
        assert_eq!(ctl.role, Role::Controller);
        assert_eq!(
            ctl.wait_max,
            [Some(Duration::from_secs(1_000)), None],
            "b waits longest at the controllers' before gate"
        );
        let half_an_hour = Some(Duration::from_secs(1_800));
        assert_eq!(ctl.timeout, [half_an_hour; 2], "timeouts.gate_secs");
        assert_eq!(cmp.role, Role::Compute);
        assert_eq!(cmp.wait_max, [None, Some(Duration::from_secs(10))]);
        let ten_minutes = Some(Duration::from_secs(600));
        assert_eq!(
            cmp.timeout, [ten_minutes; 2],
            "[gates.compute] timeout_secs"
        );
    }

    #[test]
    fn indexes_follow_the_order_of_all() {
        for (i, r) in Role::ALL.into_iter().enumerate() {
            assert_eq!(role_index(r), i, "{r}");
        }
        for (i, s) in Step::ALL.into_iter().enumerate() {
            assert_eq!(step_index(s), i, "{s}");
        }
        for (i, p) in Phase::ALL.into_iter().enumerate() {
            assert_eq!(phase_index(p), i, "{p}");
        }
    }

    #[test]
    fn per_node_series_stay_on_a_tenth_past_the_limit_once_on() {
        assert!(per_node_on(false, 500, 500));
        assert!(
            !per_node_on(false, 501, 500),
            "off stays off past the limit"
        );
        assert!(
            per_node_on(true, 550, 500),
            "on stays on up to a tenth more"
        );
        assert!(!per_node_on(true, 551, 500));
        assert!(per_node_on(true, 2, 1), "a tenth of 1 rounds up");
        assert!(!per_node_on(true, 3, 1));
        assert!(!per_node_on(true, 1, 0), "0 is off");
        assert!(!per_node_on(true, 0, 500), "no node, no per-node family");
    }

    #[test]
    fn reboots_are_counted_by_how_long_they_have_been_asked_for() {
        let now = at(10 * 86_400);
        let nodes: Vec<Node> = ["a", "b", "c"].into_iter().map(node).collect();
        let asked = |days: i64| Digest {
            reboot_required: true,
            reboot_required_since: Some(at(10 * 86_400 - days * 86_400 - 1)),
            ..Digest::default()
        };
        let stale = Digest {
            reboot_required: false,
            reboot_required_since: Some(at(0)),
            ..Digest::default()
        };
        let digests = [asked(4), asked(1), stale];
        let facts = nodes.iter().zip(&digests).map(|(n, d)| NodeFacts {
            node: n,
            digest: Some(d),
            in_session: true,
        });
        let s = fleet_snapshot(facts, 3, true, 0, now);
        assert_eq!(s.reboot_required_longer, [2, 1, 0], "{s:?}");
        let samples = s.per_node.expect("per-node on");
        assert_eq!(
            samples[0].reboot_required_since,
            Some(at(10 * 86_400 - 4 * 86_400 - 1))
        );
        assert_eq!(samples[2].reboot_required_since, None, "c needs no reboot");
    }
}
