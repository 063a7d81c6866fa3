//! What an operator asks a campaign to do: which nodes, in which order, how
//! many at a time, how many failures to bear, when to reboot, when it may
//! run, and how long each step may take. Parsed from TOML (or built from
//! CLI flags and gRPC), checked once, then only read.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rollcall_proto::model::{Node, Role, glob_match};
use serde::{Deserialize, Deserializer};

pub use super::alerts::AlertsSpec;
use super::lifecycle::{Facts, Step};
pub use super::window::Window;

/// A number of nodes, absolute or as a share of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl Amount {
    /// For concurrency: at least one node may always move.
    pub fn at_least_one_of(self, total: usize) -> usize {
        self.of(total).max(1)
    }

    /// The amount of `total` nodes, rounded down.
    pub fn of(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => n as usize,
            Amount::Percent(p) => total * p as usize / 100,
        }
    }
}

impl FromStr for Amount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("invalid amount {s:?}: use a number (3) or a percentage (25%)");
        match s.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.trim().parse().map_err(|_| bad())?;
                if p > 100 {
                    return Err(format!(
                        "invalid amount {s:?}: a percentage is at most 100%"
                    ));
                }
                Ok(Amount::Percent(p))
            }
            None => s.parse().map(Amount::Count).map_err(|_| bad()),
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Amount::Count(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// When a node is rebooted after its patch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootPolicy {
    /// Only when the node reports that it needs one.
    #[default]
    IfRequired,
    Always,
    Never,
}

/// What the fleet-wide blast-radius guard does with an impact: a
/// container that turned unhealthy or stopped on a node the campaign is
/// not working on, and stayed so `blast_radius_secs` (see `blast.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlastRadius {
    /// The campaign pauses, naming the container, its node and the nodes
    /// being worked on when it turned bad.
    #[default]
    Pause,
    /// The impact counts as one failure against the error budget (once per
    /// node and container), which pauses the campaign once exceeded.
    Budget,
}

rollcall_proto::names!(BlastRadius, "blast_radius" {
    Pause => "pause", Budget => "budget",
});

/// Which nodes a campaign covers. Empty lists select everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selector {
    pub roles: Vec<Role>,
    /// Node names or globs (`cmp-*`).
    pub nodes: Vec<String>,
    /// Every label must match.
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn matches(&self, node: &Node) -> bool {
        (self.roles.is_empty() || self.roles.contains(&node.role))
            && (self.nodes.is_empty() || self.nodes.iter().any(|p| glob_match(p, &node.name)))
            && self
                .labels
                .iter()
                .all(|(k, v)| node.labels.get(k) == Some(v))
    }
}

/// How long each step may take before the node fails.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub precheck_secs: u64,
    pub drain_secs: u64,
    pub patch_secs: u64,
    pub reboot_secs: u64,
    /// From the reboot command to the agent's return with a new boot id.
    pub return_secs: u64,
    pub postcheck_secs: u64,
    pub undrain_secs: u64,
    /// How long a gate may keep failing (every role's, unless its
    /// `[gates.ROLE] timeout_secs` says otherwise).
    pub gate_secs: u64,
    /// The longest the campaign waits on the controller quorum guard (a
    /// controller outside the campaign, or one whose failure an operator
    /// accepted, offline or unhealthy) before it pauses with the reason.
    pub guard_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            precheck_secs: 120,
            drain_secs: 1_800,
            patch_secs: 3_600,
            reboot_secs: 120,
            return_secs: 900,
            postcheck_secs: 600,
            undrain_secs: 600,
            gate_secs: 1_800,
            guard_secs: 1_800,
        }
    }
}

impl Timeouts {
    pub fn get(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }
}

/// Where a role's drain and undrain hooks run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunOn {
    /// On the node being patched.
    #[default]
    Target,
    /// On an online, healthy node of this role, with the target's name as
    /// the last argument (a controller drains a compute node).
    Role(Role),
}

impl<'de> Deserialize<'de> for RunOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "self" {
            return Ok(RunOn::Target);
        }
        s.parse::<Role>().map(RunOn::Role).map_err(|_| {
            serde::de::Error::custom(format!(
                "run_on {s:?}: use \"self\" or a role (controller, compute, storage)"
            ))
        })
    }
}

/// The hooks a role's nodes run around their patch: names of hooks defined
/// in the agents' own configuration, never commands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleHooks {
    pub drain: Option<String>,
    pub undrain: Option<String>,
    pub run_on: RunOn,
}

/// A role's gates: hooks the agents define that must pass before a node of
/// the role starts ("the cluster can spare one") and after a node's patch,
/// before its undrain and before the next node ("the cluster is whole
/// again"). Each hook gets `before|after` and the target's name as its last
/// two arguments; a failing hook is tried again every `interval_secs`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleGates {
    /// Hook names, run in order; all must pass.
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// Where the hooks run: the node itself, or a healthy node of a role.
    pub run_on: RunOn,
    /// Seconds between a failed try and the next.
    pub interval_secs: u64,
    /// How long one try may run before the agent kills it.
    pub try_secs: u64,
    /// How long the gate may keep failing; `timeouts.gate_secs` if unset.
    pub timeout_secs: Option<u64>,
}

impl Default for RoleGates {
    fn default() -> Self {
        Self {
            before: Vec::new(),
            after: Vec::new(),
            run_on: RunOn::Target,
            interval_secs: 10,
            try_secs: 120,
            timeout_secs: None,
        }
    }
}

/// Which of a role's gates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatePhase {
    Before,
    After,
}

rollcall_proto::names!(GatePhase, "gate phase" {
    Before => "before", After => "after",
});

impl RoleGates {
    pub fn hooks(&self, phase: GatePhase) -> &[String] {
        match phase {
            GatePhase::Before => &self.before,
            GatePhase::After => &self.after,
        }
    }
}

/// A campaign as asked for.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignSpec {
    pub name: String,
    pub select: Selector,
    /// Roles in the order they are patched; a role finishes before the next starts.
    pub role_order: Vec<Role>,
    /// Nodes of a role that may be unavailable at once. Controllers: always 1.
    pub concurrency: BTreeMap<Role, Amount>,
    /// Failed nodes the campaign bears before it pauses; 0 pauses at the first.
    pub error_budget: Amount,
    pub reboot: RebootPolicy,
    /// When new nodes may start; `None`: at any time.
    pub window: Option<Window>,
    pub timeouts: Timeouts,
    /// Precheck: at least this share of / and /var must be free.
    pub min_free_percent: u32,
    /// Drain and undrain hooks per role.
    pub hooks: BTreeMap<Role, RoleHooks>,
    /// Gates per role: cluster checks before and after each node.
    pub gates: BTreeMap<Role, RoleGates>,
    /// Skip a node whose last update check found nothing to install and
    /// that needs no reboot (saves a drain of a node with nothing to do).
    pub skip_up_to_date: bool,
    /// A node that fails after its drain runs its undrain hook at once and
    /// then ends failed. Off by default: a node that failed its patch is not
    /// handed back to tenants without a person deciding (`campaign undrain`).
    pub undrain_on_failure: bool,
    /// How long a container on a node the campaign is not working on may
    /// stay unhealthy or stopped before it is an impact (see `blast.rs`).
    pub blast_radius_secs: u64,
    /// What an impact does: pause the campaign, or count against the budget.
    pub blast_radius: BlastRadius,
    /// Alerts that hold new starts, and silences for nodes in flight
    /// (`alerts.rs`, `silence.rs`); `None`: no monitoring is asked.
    pub alerts: Option<AlertsSpec>,
}

impl Default for CampaignSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            select: Selector::default(),
            role_order: vec![Role::Compute, Role::Storage, Role::Controller],
            concurrency: BTreeMap::new(),
            error_budget: Amount::Count(0),
            reboot: RebootPolicy::IfRequired,
            window: None,
            timeouts: Timeouts::default(),
            min_free_percent: 10,
            hooks: BTreeMap::new(),
            gates: BTreeMap::new(),
            skip_up_to_date: true,
            undrain_on_failure: false,
            blast_radius_secs: 120,
            blast_radius: BlastRadius::Pause,
            alerts: None,
        }
    }
}

impl CampaignSpec {
    pub fn parse(text: &str) -> Result<Self, String> {
        let spec: Self = rollcall_proto::diag::parse_toml(text)?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut seen = Vec::new();
        for r in &self.role_order {
            if seen.contains(r) {
                return Err(format!("role_order names {r} twice"));
            }
            seen.push(*r);
        }
        if self.role_order.is_empty() {
            return Err("role_order is empty: name at least one role".into());
        }
        for (role, amount) in &self.concurrency {
            if matches!(amount, Amount::Count(0) | Amount::Percent(0)) {
                return Err(format!(
                    "concurrency of {role} is zero: nothing could ever start"
                ));
            }
        }
        if self.min_free_percent > 99 {
            return Err("min_free_percent must be below 100".into());
        }
        for (role, hooks) in &self.hooks {
            for name in [&hooks.drain, &hooks.undrain].into_iter().flatten() {
                rollcall_proto::identity::validate_name(name)
                    .map_err(|e| format!("hooks.{role}: hook name {name:?}: {e}"))?;
            }
            if hooks.run_on == RunOn::Role(*role) {
                return Err(format!(
                    "hooks.{role}.run_on is {role}: a node of the role being patched cannot be relied on; use \"self\" or another role"
                ));
            }
        }
        for (role, gates) in &self.gates {
            for name in gates.before.iter().chain(&gates.after) {
                rollcall_proto::identity::validate_name(name)
                    .map_err(|e| format!("gates.{role}: hook name {name:?}: {e}"))?;
            }
            if gates.run_on == RunOn::Role(*role) {
                return Err(format!(
                    "gates.{role}.run_on is {role}: a node of the role being patched cannot be relied on; use \"self\" or another role"
                ));
            }
            if gates.interval_secs == 0 || gates.try_secs == 0 || gates.timeout_secs == Some(0) {
                return Err(format!(
                    "gates.{role}: interval_secs, try_secs and timeout_secs must be at least 1 second"
                ));
            }
            let timeout = gates.timeout_secs.unwrap_or(self.timeouts.gate_secs);
            if gates.try_secs > timeout {
                return Err(format!(
                    "gates.{role}: try_secs ({}) is longer than the gate's timeout ({timeout}s)",
                    gates.try_secs
                ));
            }
            // A before gate asks whether the cluster can spare one node: two
            // nodes passing it in the same look would both go.
            if let Some(amount) = self.concurrency.get(role)
                && !gates.before.is_empty()
                && *role != Role::Controller
                && *amount != Amount::Count(1)
            {
                return Err(format!(
                    "gates.{role}.before asks whether the cluster can spare one node: set concurrency.{role} = 1 (it is {amount})"
                ));
            }
        }
        let t = &self.timeouts;
        if [
            t.precheck_secs,
            t.drain_secs,
            t.patch_secs,
            t.reboot_secs,
            t.return_secs,
            t.postcheck_secs,
            t.undrain_secs,
            t.gate_secs,
            t.guard_secs,
        ]
        .contains(&0)
        {
            return Err("every timeout must be at least 1 second".into());
        }
        if self.blast_radius_secs == 0 {
            return Err(
                "blast_radius_secs must be at least 1 second: a container that blinks is no impact"
                    .into(),
            );
        }
        if let Some(alerts) = &self.alerts {
            alerts.validate()?;
        }
        Ok(())
    }

    /// What the spec decides of a `role` node's way: its reboot policy and
    /// which gates it passes.
    pub fn facts(&self, role: Role) -> Facts {
        Facts {
            reboot: self.reboot,
            reboot_required: false,
            gate_before: !self.gate(role, GatePhase::Before).is_empty(),
            gate_after: !self.gate(role, GatePhase::After).is_empty(),
        }
    }

    /// The hooks of `role`'s gate, in the order they run (none: no gate).
    pub fn gate(&self, role: Role, phase: GatePhase) -> &[String] {
        self.gates.get(&role).map_or(&[], |g| g.hooks(phase))
    }

    /// How long a node of `role` may stay in `step` before it fails (or,
    /// in its before gate, before the campaign pauses).
    pub fn step_timeout(&self, role: Role, step: Step) -> Option<Duration> {
        let own = match step {
            Step::GateBefore | Step::GateAfter => {
                self.gates.get(&role).and_then(|g| g.timeout_secs)
            }
            _ => None,
        };
        own.map(Duration::from_secs)
            .or_else(|| step.timeout(&self.timeouts))
    }

    /// How many nodes of `role` (out of `role_size` in the campaign) may be
    /// unavailable at once. Controllers keep quorum: always one.
    pub fn concurrency_for(&self, role: Role, role_size: usize) -> usize {
        if role == Role::Controller {
            return 1;
        }
        self.concurrency
            .get(&role)
            .copied()
            .unwrap_or(Amount::Count(1))
            .at_least_one_of(role_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_and_resolve() {
        assert_eq!("3".parse(), Ok(Amount::Count(3)));
        assert_eq!(" 25% ".parse(), Ok(Amount::Percent(25)));
        assert!("101%".parse::<Amount>().is_err());
        assert!("lots".parse::<Amount>().is_err());
        assert_eq!(Amount::Percent(25).of(10), 2);
        assert_eq!(Amount::Percent(10).at_least_one_of(5), 1);
    }

    #[test]
    fn a_full_spec_parses_and_controllers_stay_at_one() {
        let spec = CampaignSpec::parse(
            r#"
            name = "2026-11 patch"
            role_order = ["compute", "storage", "controller"]
            error_budget = "10%"
            reboot = "if-required"
            [select]
            roles = ["compute", "controller", "storage"]
            nodes = ["cmp-*", "ctl-*", "sto-*"]
            [concurrency]
            compute = "20%"
            storage = 1
            controller = 3
            [window]
            days = ["sat", "sun"]
            start = "22:00"
            end = "06:00"
            utc_offset = "+01:00"
            [timeouts]
            patch_secs = 1200
            "#,
        )
        .expect("parses");
        assert_eq!(spec.concurrency_for(Role::Compute, 20), 4);
        assert_eq!(
            spec.concurrency_for(Role::Controller, 3),
            1,
            "controllers one at a time, whatever asked"
        );
        assert_eq!(spec.error_budget.of(30), 3);
        assert_eq!(spec.timeouts.patch_secs, 1200);
        assert_eq!(spec.timeouts.reboot_secs, 120);
    }

    #[test]
    fn gates_parse_with_their_defaults_and_bad_ones_are_refused() {
        let spec = CampaignSpec::parse(
            r#"
            [gates.storage]
            after = ["ceph-healthy"]
            [gates.compute]
            after = ["nova-compute-up"]
            run_on = "controller"
            timeout_secs = 600
            "#,
        )
        .expect("parses");
        let storage = &spec.gates[&Role::Storage];
        assert_eq!((storage.interval_secs, storage.try_secs), (10, 120));
        assert_eq!(storage.run_on, RunOn::Target);
        assert_eq!(
            spec.gate(Role::Storage, GatePhase::Before),
            [] as [String; 0]
        );
        assert_eq!(spec.gate(Role::Storage, GatePhase::After), ["ceph-healthy"]);
        assert_eq!(
            spec.step_timeout(Role::Storage, Step::GateAfter),
            Some(Duration::from_secs(1800)),
            "timeouts.gate_secs when the role says nothing"
        );
        assert_eq!(
            spec.step_timeout(Role::Compute, Step::GateAfter),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            spec.step_timeout(Role::Compute, Step::Patch),
            Some(Duration::from_secs(3600))
        );
        let facts = spec.facts(Role::Compute);
        assert!(facts.gate_after && !facts.gate_before);
        for (text, needle) in [
            (
                "[gates.compute]\nbefore = [\"a b\"]",
                "gates.compute: hook name \"a b\"",
            ),
            (
                "[gates.compute]\nrun_on = \"compute\"",
                "gates.compute.run_on is compute",
            ),
            ("[gates.compute]\ninterval_secs = 0", "at least 1 second"),
            (
                "[gates.compute]\ntry_secs = 90\ntimeout_secs = 60",
                "try_secs (90) is longer",
            ),
            (
                "[concurrency]\ncompute = \"10%\"\n[gates.compute]\nbefore = [\"x\"]",
                "set concurrency.compute = 1 (it is 10%)",
            ),
            ("[gates.compute]\nafter = \"x\"", "invalid type"),
            ("[gates.compute]\nbefor = []", "befor"),
            ("[gates.nova]\nafter = []", "nova"),
        ] {
            let err = CampaignSpec::parse(text).expect_err(text);
            assert!(err.contains(needle) && !err.contains('\n'), "{text}: {err}");
        }
    }

    /// The OpenStack profile parses, and names only hooks and gates whose
    /// shipped READMEs give them to the agents: one name, one script.
    #[test]
    fn the_openstack_profile_parses_and_names_shipped_hooks_and_gates() {
        let text = include_str!("../../../packaging/campaign.openstack.toml");
        let spec = CampaignSpec::parse(text).expect("the OpenStack profile parses");
        let packaging = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");
        let readmes: String = ["hooks/README.md", "gates/README.md"]
            .iter()
            .map(|f| std::fs::read_to_string(packaging.join(f)).expect("a shipped README"))
            .collect();
        let mut names: Vec<&String> = Vec::new();
        for hooks in spec.hooks.values() {
            names.extend(hooks.drain.iter().chain(&hooks.undrain));
        }
        for gates in spec.gates.values() {
            names.extend(gates.before.iter().chain(&gates.after));
        }
        assert!(names.len() >= 8, "{names:?}");
        for name in names {
            // `name = ["/usr/share/rollcall/{hooks,gates}/SCRIPT", ...]`.
            let line = readmes
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{name} = [")))
                .unwrap_or_else(|| panic!("no README wires hook {name} to a script"));
            let script = line
                .split('"')
                .find(|w| w.starts_with("/usr/share/rollcall/"))
                .unwrap_or_else(|| panic!("{line}"));
            let shipped = packaging.join(script.trim_start_matches("/usr/share/rollcall/"));
            assert!(
                shipped.is_file(),
                "{name}: {script} is not shipped ({shipped:?})"
            );
        }
        assert_eq!(
            spec.gate(Role::Controller, GatePhase::Before),
            ["galera-synced", "rabbitmq-healthy"]
        );
        assert_eq!(spec.gate(Role::Storage, GatePhase::After), ["ceph-healthy"]);
        assert_eq!(
            spec.gate(Role::Compute, GatePhase::After),
            ["nova-compute-up"]
        );
        assert_eq!(
            spec.hooks[&Role::Compute].run_on,
            RunOn::Role(Role::Controller)
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (text, needle) in [
            ("role_order = [\"compute\", \"compute\"]", "twice"),
            ("[concurrency]\ncompute = 0", "zero"),
            ("error_budget = \"x\"", "invalid amount"),
            (
                "[window]\nstart = \"25:00\"\nend = \"06:00\"",
                "window.start \"25:00\" is not a time",
            ),
            (
                "[window]\nstart = \"22:00\"\nend = \"06:00\"\ndays = [\"someday\"]",
                "window.days \"someday\" is not a day",
            ),
            (
                "[window]\nstart = \"22:00\"\nend = \"06:00\"\ntime_zone = \"Mars/Olympus\"",
                "window.time_zone \"Mars/Olympus\" is not a time zone",
            ),
            ("reboot = \"sometimes\"", "sometimes"),
            ("bogus = 1", "bogus"),
            (
                "blast_radius_secs = 0",
                "blast_radius_secs must be at least 1",
            ),
            ("blast_radius = \"halt\"", "halt"),
        ] {
            let err = CampaignSpec::parse(text).expect_err(text);
            assert!(err.contains(needle) && !err.contains('\n'), "{text}: {err}");
        }
    }

    #[test]
    fn the_shipped_example_parses_documents_every_key_and_keeps_the_defaults() {
        let text = include_str!("../../../packaging/campaign.example.toml");
        let spec = CampaignSpec::parse(text).expect("the example parses");
        assert_eq!(
            rollcall_proto::diag::undocumented_keys(text),
            Vec::<String>::new()
        );
        let defaults = CampaignSpec::default();
        assert_eq!(spec.role_order, defaults.role_order);
        assert_eq!(spec.error_budget, defaults.error_budget);
        assert_eq!(spec.reboot, defaults.reboot);
        assert_eq!(spec.timeouts, defaults.timeouts);
        assert_eq!(spec.min_free_percent, defaults.min_free_percent);
        assert_eq!(spec.skip_up_to_date, defaults.skip_up_to_date);
        assert_eq!(spec.undrain_on_failure, defaults.undrain_on_failure);
        assert_eq!(spec.blast_radius_secs, defaults.blast_radius_secs);
        assert_eq!(spec.blast_radius, defaults.blast_radius);
        assert_eq!(
            spec.hooks[&Role::Compute].run_on,
            RunOn::Role(Role::Controller)
        );
        // The commented window parses too, once uncommented, and documents
        // each of its keys.
        let window: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [window]"))
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            rollcall_proto::diag::undocumented_keys(&window),
            Vec::<String>::new()
        );
        let with_window = format!(
            "{}\n{window}\n",
            text.split("# A maintenance window").next().unwrap_or("")
        );
        let with_window = CampaignSpec::parse(&with_window).expect("window and alerts");
        let window = with_window.window.expect("a window");
        assert_eq!(window.zone().label(), "Europe/Berlin");
        // So does the commented [alerts], whose values are the defaults.
        let alerts = with_window.alerts.expect("alerts");
        let defaults = AlertsSpec::default();
        assert_eq!(alerts.check_secs, defaults.check_secs);
        assert_eq!(alerts.node_labels, defaults.node_labels);
        assert_eq!(
            (
                alerts.pending,
                alerts.ignore_nodes_in_flight,
                alerts.ignore_silenced
            ),
            (
                defaults.pending,
                defaults.ignore_nodes_in_flight,
                defaults.ignore_silenced
            )
        );
        assert_eq!(alerts.silence.matchers, defaults.silence.matchers);
        assert_eq!(alerts.silence.lease_secs, defaults.silence.lease_secs);
        assert!(alerts.silences() && alerts.matchers.len() == 2);
    }

    #[test]
    fn blast_radius_names_are_the_spec_words() {
        for mode in BlastRadius::ALL {
            let spec = CampaignSpec::parse(&format!("blast_radius = \"{mode}\"")).expect("parses");
            assert_eq!(spec.blast_radius, mode);
            assert_eq!(mode.as_str().parse::<BlastRadius>(), Ok(mode));
        }
        assert_eq!(
            "Budget"
                .parse::<BlastRadius>()
                .expect_err("exact")
                .to_string(),
            r#"unknown blast_radius "Budget": use pause or budget"#
        );
        let spec = CampaignSpec::parse("blast_radius_secs = 30").expect("parses");
        assert_eq!(
            (spec.blast_radius_secs, spec.blast_radius),
            (30, BlastRadius::Pause)
        );
    }
}
