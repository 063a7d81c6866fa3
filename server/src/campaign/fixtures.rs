//! What the campaign's unit tests build their worlds from: a clock, nodes,
//! reports, the fleet's health, runs in a given step, agents' answers.

use std::collections::{BTreeMap, BTreeSet};

use rollcall_proto::model::{
    ActionResult, ActionState, Container, ContainerHealth, ContainerState, ContainersSection, Node,
    RebootReason, RebootSection, Report, Role,
};
use rollcall_proto::timestamp::Timestamp;

use super::drive::{self, Advance, Ctx, View};
use super::lifecycle::Step;
use super::record::NodeRun;
use super::schedule::Health;
use super::spec::{CampaignSpec, RoleHooks, RunOn};

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_795_000_000_000 + secs * 1_000)
}

pub fn node(name: &str, role: Role, boot: &str) -> Node {
    let mut n = Node::new(name, role, t(0));
    n.online = true;
    n.boot_id = boot.into();
    n
}

pub fn container(name: &str, state: ContainerState, health: ContainerHealth) -> Container {
    Container {
        name: name.into(),
        state,
        health,
        ..Default::default()
    }
}

pub fn report(at: i64, reboot: Option<(bool, i64)>, containers: Vec<Container>) -> Report {
    Report {
        collected_at: t(at),
        containers: Some(ContainersSection {
            available: true,
            containers,
            ..Default::default()
        }),
        reboot: reboot.map(|(required, checked)| RebootSection {
            required,
            reasons: if required {
                vec![RebootReason {
                    source: "file".into(),
                    detail: "/var/run/reboot-required".into(),
                    packages: vec![],
                }]
            } else {
                vec![]
            },
            checked_at: Some(t(checked)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn healthy() -> Vec<Container> {
    vec![
        container(
            "nova_compute",
            ContainerState::Running,
            ContainerHealth::Healthy,
        ),
        container("cron", ContainerState::Running, ContainerHealth::None),
    ]
}

pub fn fleet(entries: &[(&str, Role, bool)]) -> BTreeMap<String, Health> {
    entries
        .iter()
        .map(|(n, role, ok)| {
            (
                (*n).to_owned(),
                Health {
                    role: *role,
                    online: true,
                    healthy: *ok,
                },
            )
        })
        .collect()
}

pub fn run_in(step: Step, role: Role, since: i64) -> NodeRun {
    let mut r = NodeRun::new("cmp1".into(), role, t(0));
    r.enter(step, t(since));
    r.boot_id_before = "boot-1".into();
    r
}

/// One node in a fleet, as `drive::advance` sees it.
pub struct World {
    pub spec: CampaignSpec,
    pub fleet: BTreeMap<String, Health>,
    pub node: Node,
    pub report: Report,
    pub action: Option<ActionResult>,
    pub failed: BTreeSet<String>,
    /// What holds drains (`Ctx::hold`).
    pub hold: Option<String>,
    pub now: Timestamp,
}

impl World {
    pub fn new() -> Self {
        World {
            spec: CampaignSpec::default(),
            fleet: fleet(&[
                ("ctl1", Role::Controller, true),
                ("ctl2", Role::Controller, true),
            ]),
            node: node("cmp1", Role::Compute, "boot-1"),
            report: report(10, Some((false, 10)), healthy()),
            action: None,
            failed: BTreeSet::new(),
            hold: None,
            now: t(20),
        }
    }

    pub fn advance(&self, run: &mut NodeRun) -> Advance {
        drive::advance(
            run,
            &Ctx {
                campaign: "c1",
                spec: &self.spec,
                fleet: &self.fleet,
                view: View {
                    node: Some(&self.node),
                    report: Some(&self.report),
                },
                action: self.action.as_ref(),
                failed: &self.failed,
                hold: self.hold.as_deref(),
                now: self.now,
            },
        )
    }
}

pub fn result(state: ActionState, exit: Option<i32>, tail: &str, finished: i64) -> ActionResult {
    ActionResult {
        id: "c1.cmp1.1.patch".into(),
        node: "cmp1".into(),
        state,
        exit_code: exit,
        output_tail: tail.into(),
        error: String::new(),
        started_at: Some(t(finished - 1)),
        finished_at: Some(t(finished)),
        boot_id: "boot-1".into(),
    }
}

pub fn with_compute_hooks(w: &mut World) {
    w.spec.hooks.insert(
        Role::Compute,
        RoleHooks {
            drain: Some("nova-drain".into()),
            undrain: Some("nova-undrain".into()),
            run_on: RunOn::Role(Role::Controller),
        },
    );
}
