//! Prometheus metrics: what the server counts as it happens ([`Events`])
//! and what it looks up at each scrape ([`snapshot`]), encoded by the
//! prometheus-client crate ([`encode`]) and served on a listener of its own
//! ([`serve`]).
//!
//! Events (reports received, refused connections, store commits, campaign
//! steps left) are atomics behind one cheap `Arc<Events>` handed to the
//! parts where they happen. State (nodes by role and state, updates,
//! containers, certificates, sessions, campaigns) is never kept twice: a
//! scrape asks the fleet actor and the scheduler for one small snapshot
//! each, computed from what they hold (every node's `Digest`, every
//! campaign's runs), and encodes it. [`FAMILIES`] names every family the
//! server exposes; a test holds it equal to the README's table.

pub mod encode;
pub mod serve;
pub mod snapshot;

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::campaign::lifecycle::Step;

pub use serve::{MetricsError, MetricsServer, Sources};
pub use snapshot::{CampaignSnapshot, FleetSnapshot};

/// Why a connection was refused (`rollcall_connections_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` established connections already.
    ConnectionLimit,
    /// `limits.max_handshakes` handshakes in progress already.
    HandshakeLimit,
    /// `limits.max_handshakes_per_source` from this source already.
    SourceLimit,
    /// The TLS handshake failed (no client certificate, an unknown CA…).
    HandshakeFailed,
    /// The handshake took longer than `limits.handshake_timeout_secs`.
    HandshakeTimeout,
    /// The certificate names no usable rollcall identity.
    NoIdentity,
    /// The certificate is revoked.
    Revoked,
    /// A request needed another kind of certificate, or a higher role.
    WrongKind,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::ConnectionLimit,
        Refusal::HandshakeLimit,
        Refusal::SourceLimit,
        Refusal::HandshakeFailed,
        Refusal::HandshakeTimeout,
        Refusal::NoIdentity,
        Refusal::Revoked,
        Refusal::WrongKind,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::HandshakeLimit => "handshake_limit",
            Refusal::SourceLimit => "source_limit",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::NoIdentity => "no_identity",
            Refusal::Revoked => "revoked",
            Refusal::WrongKind => "wrong_kind",
        }
    }
}

/// The steps a node can leave: every step but the terminal ones. Each has
/// its series of step durations and failures from the start, at zero.
pub fn steps_left() -> impl Iterator<Item = Step> {
    Step::ALL.into_iter().filter(|s| !s.is_terminal())
}

/// Buckets of `rollcall_campaign_step_duration_seconds`: a precheck takes
/// a second, a patch minutes, a gate or a reboot up to an hour.
const STEP_BUCKETS: [f64; 13] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
];
/// Buckets of `rollcall_store_commit_duration_seconds`: a commit on a good
/// disk takes a millisecond or two, `synchronous=FULL` on a busy one more.
const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

type Labels = [(&'static str, &'static str); 1];

/// What the server counts as it happens. Every labelled series is made at
/// start (so each shows from the first scrape, at zero) and kept, so an
/// update is one atomic add, never a lookup.
#[derive(Debug)]
pub struct Events {
    registry: Registry,
    reports: Counter,
    sessions_opened: Counter,
    refused: Vec<(Refusal, Counter)>,
    store_commit: Histogram,
    step_durations: Vec<(Step, Histogram)>,
    failures: Vec<(Step, Counter)>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rollcall");
        let reports = Counter::default();
        registry.register(
            "reports",
            "Reports received from agents (rate() gives reports per second)",
            reports.clone(),
        );
        let sessions_opened = Counter::default();
        registry.register(
            "sessions_opened",
            "Agent sessions opened (a session replaced by a reconnect counts again)",
            sessions_opened.clone(),
        );
        let refused_family = Family::<Labels, Counter>::default();
        let refused = Refusal::ALL
            .into_iter()
            .map(|r| {
                (
                    r,
                    refused_family.get_or_create_owned(&[("reason", r.as_str())]),
                )
            })
            .collect();
        registry.register(
            "connections_refused",
            "Connections and requests refused, by reason",
            refused_family,
        );
        let store_commit = Histogram::new(COMMIT_BUCKETS);
        registry.register_with_unit(
            "store_commit_duration",
            "Time to commit one store transaction (a batch of node changes, a campaign change, an action result)",
            Unit::Seconds,
            store_commit.clone(),
        );
        let durations = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(STEP_BUCKETS)) as fn() -> Histogram,
        );
        let step_durations = steps_left()
            .map(|s| (s, durations.get_or_create_owned(&[("step", s.as_str())])))
            .collect();
        registry.register_with_unit(
            "campaign_step_duration",
            "Time a node spent in a campaign step, observed when it leaves the step",
            Unit::Seconds,
            durations,
        );
        let failures_family = Family::<Labels, Counter>::default();
        let failures = steps_left()
            .map(|s| {
                (
                    s,
                    failures_family.get_or_create_owned(&[("step", s.as_str())]),
                )
            })
            .collect();
        registry.register(
            "campaign_node_failures",
            "Nodes that failed in a campaign, by the step they failed in",
            failures_family,
        );
        Events {
            registry,
            reports,
            sessions_opened,
            refused,
            store_commit,
            step_durations,
            failures,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn report(&self) {
        self.reports.inc();
    }

    pub fn session_opened(&self) {
        self.sessions_opened.inc();
    }

    pub fn refused(&self, why: Refusal) {
        if let Some((_, c)) = self.refused.iter().find(|(r, _)| *r == why) {
            c.inc();
        }
    }

    pub fn store_commit(&self, took: Duration) {
        self.store_commit.observe(took.as_secs_f64());
    }

    /// A node of a campaign left `from` for `to` after `spent` in it.
    pub fn step_left(&self, from: Step, to: Step, spent: Duration) {
        if let Some((_, h)) = self.step_durations.iter().find(|(s, _)| *s == from) {
            h.observe(spent.as_secs_f64());
        }
        if to == Step::Failed
            && let Some((_, c)) = self.failures.iter().find(|(s, _)| *s == from)
        {
            c.inc();
        }
    }
}

/// A metric's type as the README's table and `# TYPE` lines name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One family the server exposes: its name as scraped (a counter's
/// samples end in `_total`), its type and its labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FamilyDoc {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
}

const fn family(name: &'static str, kind: Kind, labels: &'static [&'static str]) -> FamilyDoc {
    FamilyDoc { name, kind, labels }
}

/// Every family the server exposes. The README's table must list exactly
/// these (a test), and a full scrape must show exactly these (another).
pub const FAMILIES: &[FamilyDoc] = &[
    // Events.
    family("rollcall_reports_total", Kind::Counter, &[]),
    family("rollcall_sessions_opened_total", Kind::Counter, &[]),
    family(
        "rollcall_connections_refused_total",
        Kind::Counter,
        &["reason"],
    ),
    family(
        "rollcall_store_commit_duration_seconds",
        Kind::Histogram,
        &[],
    ),
    family(
        "rollcall_campaign_step_duration_seconds",
        Kind::Histogram,
        &["step"],
    ),
    family(
        "rollcall_campaign_node_failures_total",
        Kind::Counter,
        &["step"],
    ),
    // The server.
    family("rollcall_build_info", Kind::Gauge, &["version"]),
    family("rollcall_sessions", Kind::Gauge, &[]),
    family("rollcall_watchers", Kind::Gauge, &["kind"]),
    family("rollcall_store_healthy", Kind::Gauge, &[]),
    family("rollcall_per_node_series", Kind::Gauge, &[]),
    // The fleet.
    family("rollcall_nodes", Kind::Gauge, &["role", "state"]),
    family("rollcall_nodes_reboot_required", Kind::Gauge, &["role"]),
    family("rollcall_pending_updates", Kind::Gauge, &["role"]),
    family("rollcall_pending_security_updates", Kind::Gauge, &["role"]),
    family("rollcall_containers_unhealthy", Kind::Gauge, &["role"]),
    family("rollcall_containers_stopped", Kind::Gauge, &["role"]),
    family(
        "rollcall_agent_certificate_nearest_expiry_timestamp_seconds",
        Kind::Gauge,
        &[],
    ),
    family(
        "rollcall_nodes_report_age_max_seconds",
        Kind::Gauge,
        &["state"],
    ),
    family(
        "rollcall_nodes_silent",
        Kind::Gauge,
        &["longer_than_seconds"],
    ),
    // Campaigns.
    family("rollcall_campaigns", Kind::Gauge, &["phase"]),
    family(
        "rollcall_campaign_phase",
        Kind::Gauge,
        &["campaign", "phase"],
    ),
    family(
        "rollcall_campaign_nodes",
        Kind::Gauge,
        &["campaign", "step"],
    ),
    family(
        "rollcall_campaign_gate_wait_max_seconds",
        Kind::Gauge,
        &["campaign", "gate"],
    ),
    // Per node, while the fleet has at most `per_node_max_nodes`.
    family("rollcall_node_online", Kind::Gauge, &["node", "role"]),
    family(
        "rollcall_node_report_age_seconds",
        Kind::Gauge,
        &["node", "role"],
    ),
    family(
        "rollcall_node_reboot_required",
        Kind::Gauge,
        &["node", "role"],
    ),
    family(
        "rollcall_node_pending_updates",
        Kind::Gauge,
        &["node", "role"],
    ),
    family(
        "rollcall_node_pending_security_updates",
        Kind::Gauge,
        &["node", "role"],
    ),
    family(
        "rollcall_node_containers_unhealthy",
        Kind::Gauge,
        &["node", "role"],
    ),
];

/// Debian's promtool, for the unit tests that check what we write with it;
/// `None` (said on stderr) when it is missing outside CI, a failure in CI.
#[cfg(test)]
pub(crate) fn promtool() -> Option<std::path::PathBuf> {
    let promtool = std::path::Path::new("/usr/bin/promtool");
    if promtool.exists() {
        return Some(promtool.to_owned());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have /usr/bin/promtool (Debian package prometheus)"
    );
    eprintln!("SKIP: /usr/bin/promtool is missing (apt-get install prometheus)");
    None
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;

    fn repo(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
    }

    /// The rows of the README's metrics table: (name, type, labels).
    fn readme_rows() -> Vec<(String, String, Vec<String>)> {
        let readme = std::fs::read_to_string(repo("README.md")).expect("README.md");
        let section = readme
            .split("\n### Metrics\n")
            .nth(1)
            .expect("README.md has a \"### Metrics\" section");
        section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|row| {
                let cells: Vec<String> = row
                    .trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().trim_matches('`').to_owned())
                    .collect();
                let labels = cells[2]
                    .split(',')
                    .map(|l| l.trim().trim_matches('`').to_owned())
                    .filter(|l| !l.is_empty() && l != "—")
                    .collect();
                (cells[0].clone(), cells[1].clone(), labels)
            })
            .collect()
    }

    #[test]
    fn the_readme_documents_exactly_the_families_the_server_exposes() {
        let documented = readme_rows();
        let exposed: Vec<(String, String, Vec<String>)> = FAMILIES
            .iter()
            .map(|f| {
                (
                    f.name.to_owned(),
                    f.kind.as_str().to_owned(),
                    f.labels.iter().map(|l| (*l).to_owned()).collect(),
                )
            })
            .collect();
        assert_eq!(
            documented, exposed,
            "README.md's metrics table (name | type | labels | meaning) must list FAMILIES, in order"
        );
    }

    #[test]
    fn the_shipped_rules_name_only_metrics_the_server_exposes() {
        let rules = std::fs::read_to_string(repo("packaging/prometheus/rollcall.rules.yml"))
            .expect("rules");
        let named: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("rollcall_"))
            .collect();
        assert!(named.len() > 5, "{named:?}");
        for name in named {
            let known = FAMILIES.iter().any(|f| {
                name == f.name
                    || (f.kind == Kind::Histogram
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(f.name)))
            });
            assert!(
                known,
                "the rules name {name}, which the server does not expose"
            );
        }
    }

    /// `promtool check rules` and `promtool test rules` (Debian's
    /// prometheus package) on the shipped rules and their unit tests.
    #[test]
    fn promtool_checks_and_tests_the_shipped_rules() {
        let Some(promtool) = promtool() else { return };
        let dir = repo("packaging/prometheus");
        for args in [
            ["check", "rules", "rollcall.rules.yml"],
            ["test", "rules", "rollcall.rules.test.yml"],
        ] {
            let out = Command::new(&promtool)
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("promtool runs");
            assert!(
                out.status.success(),
                "promtool {}: {}\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
