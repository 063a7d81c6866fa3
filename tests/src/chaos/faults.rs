//! What a run injects, decided from its seed: the fault kind, the faults at
//! fixed moments, and the odds of the faults that wait for a moment (a
//! request on its way to an agent, an action that just started).
//!
//! A run's plan is a pure function of its seed, so `--seed N` with one run
//! plans the same faults again; when they hit still depends on how the
//! processes are scheduled, as it would on a real cloud.

use std::sync::Mutex;
use std::time::Duration;

/// One kind of fault per run, so the table can say which kind did what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// kill -9 of the server, at random moments and right after it sent an
    /// agent something; its supervisor starts it again on the same data.
    KillServer,
    /// kill -9 of agents, at random moments and while their action runs;
    /// their supervisors start them again.
    KillAgent,
    /// SIGSTOP of an agent, at random moments and just as a request
    /// reaches it; later SIGCONT, or kill -9 while stopped.
    Sigstop,
    /// A proxy between agents and server drops what the server sends (a
    /// request, an acknowledgement) and cuts the connection.
    LostRequests,
    /// A compute node whose reboot never comes back.
    NeverReturnCompute,
    /// A controller whose reboot never comes back.
    NeverReturnController,
    /// The server's data directory (a small tmpfs) filled for a while.
    FullDisk,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::KillServer,
        Kind::KillAgent,
        Kind::Sigstop,
        Kind::LostRequests,
        Kind::NeverReturnCompute,
        Kind::NeverReturnController,
        Kind::FullDisk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KillServer => "kill-server",
            Kind::KillAgent => "kill-agent",
            Kind::Sigstop => "sigstop",
            Kind::LostRequests => "lost-requests",
            Kind::NeverReturnCompute => "never-return-compute",
            Kind::NeverReturnController => "never-return-controller",
            Kind::FullDisk => "full-disk",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown fault kind {s:?}: use one of {}", names.join(", "))
            })
    }
}

/// A fault at a fixed moment after the campaign started.
#[derive(Clone, Debug, PartialEq)]
pub enum Timed {
    KillServer,
    KillAgent(String),
    /// SIGSTOP for this long, then SIGCONT.
    Stop(String, Duration),
    /// Cut every connection of the node at the proxy.
    Cut(String),
    /// Fill the server's data directory for this long.
    FillDisk(Duration),
}

/// What a run injects.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kind: Kind,
    pub timed: Vec<(Duration, Timed)>,
    /// Odds that a message from the server to an agent triggers the kind's
    /// fault (see [`Faults::on_downstream`]).
    pub p_downstream: f64,
    /// Odds that an action starting on a node gets its agent killed.
    pub p_action: f64,
    /// The node whose reboot never returns.
    pub never_returns: Option<String>,
    /// Seconds each node's patch takes.
    pub patch_secs: Vec<(String, f64)>,
}

fn secs(rng: &mut fastrand::Rng, from: f64, to: f64) -> Duration {
    Duration::from_secs_f64(from + rng.f64() * (to - from))
}

impl Plan {
    /// The plan of the run with this seed, over these nodes (name, is it a
    /// compute node, is it a controller).
    pub fn new(kind: Kind, seed: u64, nodes: &[(String, &'static str)]) -> Plan {
        let mut rng = fastrand::Rng::with_seed(seed);
        let names: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
        let of_role = |role: &str| -> Vec<String> {
            nodes
                .iter()
                .filter(|(_, r)| *r == role)
                .map(|(n, _)| n.clone())
                .collect()
        };
        let pick = |rng: &mut fastrand::Rng, from: &[String]| -> String {
            from.get(rng.usize(..from.len().max(1)))
                .cloned()
                .unwrap_or_default()
        };
        let patch_secs = names
            .iter()
            .map(|n| (n.clone(), 0.2 + rng.f64() * 1.3))
            .collect();
        let mut plan = Plan {
            kind,
            timed: Vec::new(),
            p_downstream: 0.0,
            p_action: 0.0,
            never_returns: None,
            patch_secs,
        };
        // A run of 8 nodes takes about 20 s; faults land over its first 25.
        let at = |rng: &mut fastrand::Rng| secs(rng, 0.5, 25.0);
        match kind {
            Kind::KillServer => {
                for _ in 0..rng.usize(1..=3) {
                    plan.timed.push((at(&mut rng), Timed::KillServer));
                }
                plan.p_downstream = 0.02 + rng.f64() * 0.04;
            }
            Kind::KillAgent => {
                for _ in 0..rng.usize(1..=3) {
                    let node = pick(&mut rng, &names);
                    plan.timed.push((at(&mut rng), Timed::KillAgent(node)));
                }
                plan.p_action = 0.2 + rng.f64() * 0.4;
            }
            Kind::Sigstop => {
                for _ in 0..rng.usize(1..=2) {
                    let node = pick(&mut rng, &names);
                    let held = secs(&mut rng, 1.0, 5.0);
                    plan.timed.push((at(&mut rng), Timed::Stop(node, held)));
                }
                plan.p_downstream = 0.02 + rng.f64() * 0.04;
            }
            Kind::LostRequests => {
                for _ in 0..rng.usize(1..=2) {
                    let node = pick(&mut rng, &names);
                    plan.timed.push((at(&mut rng), Timed::Cut(node)));
                }
                plan.p_downstream = 0.03 + rng.f64() * 0.05;
            }
            Kind::NeverReturnCompute => {
                plan.never_returns = Some(pick(&mut rng, &of_role("compute")));
            }
            Kind::NeverReturnController => {
                plan.never_returns = Some(pick(&mut rng, &of_role("controller")));
            }
            Kind::FullDisk => {
                let held = secs(&mut rng, 3.0, 10.0);
                let from = secs(&mut rng, 2.0, 12.0);
                plan.timed.push((from, Timed::FillDisk(held)));
                // Half the runs restart the server once space is back: what
                // it acknowledged during the outage must be in its store.
                if rng.bool() {
                    let after = from + held + secs(&mut rng, 1.0, 4.0);
                    plan.timed.push((after, Timed::KillServer));
                }
            }
        }
        plan.timed.sort_by_key(|(t, _)| *t);
        plan
    }
}

impl Plan {
    /// A plan that injects nothing (`kind` is unused: nothing is timed and
    /// nothing triggers), every node's patch taking `patch_secs`: for runs
    /// whose faults the caller plays itself, as the failover suite does.
    pub fn quiet(nodes: &[(String, &'static str)], patch_secs: f64) -> Plan {
        Plan {
            kind: Kind::KillServer,
            timed: Vec::new(),
            p_downstream: 0.0,
            p_action: 0.0,
            never_returns: None,
            patch_secs: nodes.iter().map(|(n, _)| (n.clone(), patch_secs)).collect(),
        }
    }
}

/// What the proxy does with one message from the server to an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Drop it and cut the connection: the message is lost on the way.
    Drop,
    /// SIGSTOP the agent, then forward it (it waits unread in the socket);
    /// later SIGCONT, or kill -9 if `kill` (then it is lost).
    StopAgent {
        held: Duration,
        kill: bool,
    },
    /// Forward it, then kill -9 the server.
    KillServerAfter,
}

/// Counts of what was injected in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    pub server_kills: u32,
    pub agent_kills: u32,
    pub stops: u32,
    pub drops: u32,
    pub cuts: u32,
    pub disk_full_ms: u64,
    pub never_returned: u32,
}

impl Injected {
    pub fn add(&mut self, o: &Injected) {
        self.server_kills += o.server_kills;
        self.agent_kills += o.agent_kills;
        self.stops += o.stops;
        self.drops += o.drops;
        self.cuts += o.cuts;
        self.disk_full_ms += o.disk_full_ms;
        self.never_returned += o.never_returned;
    }

    /// "2 server kills, 1 SIGSTOP" (only what happened).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |n: u64, one: &str, many: &str| match n {
            0 => {}
            1 => parts.push(format!("1 {one}")),
            n => parts.push(format!("{n} {many}")),
        };
        add(self.server_kills.into(), "server kill", "server kills");
        add(self.agent_kills.into(), "agent kill", "agent kills");
        add(self.stops.into(), "SIGSTOP", "SIGSTOPs");
        add(self.drops.into(), "lost message", "lost messages");
        add(self.cuts.into(), "cut connection", "cut connections");
        add(
            self.never_returned.into(),
            "node that never returned",
            "nodes that never returned",
        );
        if self.disk_full_ms > 0 {
            parts.push(format!(
                "disk full {:.1}s",
                Duration::from_millis(self.disk_full_ms).as_secs_f64()
            ));
        }
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Most faults of one sort a run injects on a trigger, so that a run
/// still has a chance to end within its timeouts.
const MAX_TRIGGERED: u32 = 4;

/// The faults of one run, asked by the proxy and the action watcher.
pub struct Faults {
    plan: Plan,
    state: Mutex<State>,
}

struct State {
    rng: fastrand::Rng,
    injected: Injected,
    armed: bool,
}

impl Faults {
    pub fn new(plan: Plan, seed: u64) -> Self {
        Faults {
            plan,
            state: Mutex::new(State {
                // Triggered faults draw from their own sequence: the plan
                // stays the same whatever the timing.
                rng: fastrand::Rng::with_seed(seed ^ 0x5eed_fa17),
                injected: Injected::default(),
                armed: false,
            }),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Triggered faults fire only between `arm(true)` (the campaign started)
    /// and `arm(false)` (the run ends).
    pub fn arm(&self, armed: bool) {
        self.state().armed = armed;
    }

    pub fn count(&self, f: impl FnOnce(&mut Injected)) {
        f(&mut self.state().injected);
    }

    pub fn injected(&self) -> Injected {
        self.state().injected.clone()
    }

    /// A message of `len` bytes (a TLS record or more) from the server to
    /// `node`. Only messages that carry data count: HTTP/2 window updates
    /// and pings (under 64 bytes with TLS's overhead) pass untouched, so
    /// what is dropped or stopped is a Welcome, a request, an
    /// acknowledgement or a notice.
    pub fn on_downstream(&self, _node: &str, len: usize) -> Verdict {
        if len < 64 || self.plan.p_downstream <= 0.0 {
            return Verdict::Forward;
        }
        let mut s = self.state();
        if !s.armed || s.rng.f64() >= self.plan.p_downstream {
            return Verdict::Forward;
        }
        match self.plan.kind {
            Kind::LostRequests if s.injected.drops < MAX_TRIGGERED + 2 => {
                s.injected.drops += 1;
                Verdict::Drop
            }
            Kind::Sigstop if s.injected.stops < MAX_TRIGGERED => {
                s.injected.stops += 1;
                let held = Duration::from_millis(500 + s.rng.u64(..3_000));
                let kill = s.rng.bool();
                if kill {
                    s.injected.agent_kills += 1;
                }
                Verdict::StopAgent { held, kill }
            }
            Kind::KillServer if s.injected.server_kills < MAX_TRIGGERED => {
                s.injected.server_kills += 1;
                Verdict::KillServerAfter
            }
            _ => Verdict::Forward,
        }
    }

    /// An action (`patch`, `reboot` or a hook's name) started on `node`:
    /// whether to kill that node's agent now, while the action runs.
    pub fn on_action_start(&self, _node: &str, what: &str) -> bool {
        if self.plan.p_action <= 0.0 || what == "reboot" {
            return false;
        }
        let mut s = self.state();
        if !s.armed || s.injected.agent_kills >= MAX_TRIGGERED || s.rng.f64() >= self.plan.p_action
        {
            return false;
        }
        s.injected.agent_kills += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<(String, &'static str)> {
        vec![
            ("ctl01".into(), "controller"),
            ("cmp01".into(), "compute"),
            ("cmp02".into(), "compute"),
            ("sto01".into(), "storage"),
        ]
    }

    #[test]
    fn a_seed_plans_the_same_faults_again() {
        for kind in Kind::ALL {
            let a = Plan::new(kind, 42, &nodes());
            let b = Plan::new(kind, 42, &nodes());
            assert_eq!(a.timed, b.timed, "{kind}");
            assert_eq!(a.never_returns, b.never_returns, "{kind}");
            assert_eq!(a.patch_secs, b.patch_secs, "{kind}");
        }
    }

    #[test]
    fn a_never_returning_node_has_the_role_its_kind_names() {
        for seed in 0..50 {
            let c = Plan::new(Kind::NeverReturnController, seed, &nodes());
            assert_eq!(c.never_returns.as_deref(), Some("ctl01"));
            let m = Plan::new(Kind::NeverReturnCompute, seed, &nodes());
            assert!(m.never_returns.is_some_and(|n| n.starts_with("cmp")));
        }
    }

    #[test]
    fn kinds_read_back_from_their_names() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
        assert!("kill-everything".parse::<Kind>().is_err());
    }

    #[test]
    fn nothing_fires_before_the_campaign_or_on_window_updates() {
        let mut plan = Plan::new(Kind::LostRequests, 1, &nodes());
        plan.p_downstream = 1.0;
        let faults = Faults::new(plan, 1);
        assert_eq!(faults.on_downstream("cmp01", 500), Verdict::Forward);
        faults.arm(true);
        assert_eq!(faults.on_downstream("cmp01", 40), Verdict::Forward);
        assert_eq!(faults.on_downstream("cmp01", 500), Verdict::Drop);
        assert_eq!(faults.injected().drops, 1);
    }
}
