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

pub mod classic;
pub mod encode;
pub mod serve;
pub mod snapshot;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use rollcall_proto::timestamp::Timestamp;

use crate::campaign::lifecycle::Step;
use crate::campaign::record::NodeRun;

pub use serve::{MetricsError, MetricsServer, Sources};
pub use snapshot::{CampaignSnapshot, FleetSnapshot};

/// Why the gRPC listener refused a connection
/// (`rollcall_connections_refused_total`). A request refused on an
/// established connection is counted apart
/// (`rollcall_requests_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionRefusal {
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
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 7] = [
        ConnectionRefusal::ConnectionLimit,
        ConnectionRefusal::HandshakeLimit,
        ConnectionRefusal::SourceLimit,
        ConnectionRefusal::HandshakeFailed,
        ConnectionRefusal::HandshakeTimeout,
        ConnectionRefusal::NoIdentity,
        ConnectionRefusal::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionRefusal::ConnectionLimit => "connection_limit",
            ConnectionRefusal::HandshakeLimit => "handshake_limit",
            ConnectionRefusal::SourceLimit => "source_limit",
            ConnectionRefusal::HandshakeFailed => "handshake_failed",
            ConnectionRefusal::HandshakeTimeout => "handshake_timeout",
            ConnectionRefusal::NoIdentity => "no_identity",
            ConnectionRefusal::Revoked => "revoked",
        }
    }
}

/// Why the metrics listener dropped a connection
/// (`rollcall_metrics_connections_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsDrop {
    /// [`serve::MAX_CONNECTIONS`] connections open already.
    ConnectionLimit,
    /// [`serve::MAX_PER_SOURCE`] connections from this source already.
    SourceLimit,
    /// The client took longer than [`serve::CONNECTION_DEADLINE`] to send its
    /// request and read the answer (an idle socket, a slowloris, a
    /// client that does not read).
    Deadline,
}

impl MetricsDrop {
    pub const ALL: [MetricsDrop; 3] = [
        MetricsDrop::ConnectionLimit,
        MetricsDrop::SourceLimit,
        MetricsDrop::Deadline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MetricsDrop::ConnectionLimit => "connection_limit",
            MetricsDrop::SourceLimit => "source_limit",
            MetricsDrop::Deadline => "deadline",
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
/// A node may wait pending for days, so the buckets go to a day.
const STEP_BUCKETS: [f64; 17] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    14400.0, 28800.0, 86400.0,
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
    refused: Vec<(ConnectionRefusal, Counter)>,
    requests_refused: Counter,
    metrics_dropped: Vec<(MetricsDrop, Counter)>,
    store_commit: Histogram,
    /// When the store commit in progress began (Unix milliseconds), 0
    /// while none is: read by a scrape without asking the writer, so a
    /// commit stuck on a stalled disk shows while it is stuck.
    commit_started: AtomicI64,
    step_durations: Vec<(Step, Histogram)>,
    failures: Vec<(Step, Counter)>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

/// One counter per value of a label, made at start.
fn labelled<T: Copy>(
    values: impl IntoIterator<Item = T>,
    name: fn(T) -> &'static str,
    label: &'static str,
) -> (Family<Labels, Counter>, Vec<(T, Counter)>) {
    let family = Family::<Labels, Counter>::default();
    let each = values
        .into_iter()
        .map(|v| (v, family.get_or_create_owned(&[(label, name(v))])))
        .collect();
    (family, each)
}

impl Events {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rollcall");
        let reports = Counter::default();
        registry.register(
            "reports",
            "Reports taken from agents (rate() gives reports per second); a refused report is not counted",
            reports.clone(),
        );
        let sessions_opened = Counter::default();
        registry.register(
            "sessions_opened",
            "Agent sessions opened (a session replaced by a reconnect counts again)",
            sessions_opened.clone(),
        );
        let (family, refused) =
            labelled(ConnectionRefusal::ALL, ConnectionRefusal::as_str, "reason");
        registry.register(
            "connections_refused",
            "Connections the gRPC listener refused, by reason",
            family,
        );
        let requests_refused = Counter::default();
        registry.register(
            "requests_refused",
            "gRPC requests refused on an established connection: a certificate of the wrong kind or role",
            requests_refused.clone(),
        );
        let (family, metrics_dropped) = labelled(MetricsDrop::ALL, MetricsDrop::as_str, "reason");
        registry.register(
            "metrics_connections_dropped",
            "Connections the /metrics listener closed unserved or cut, by reason",
            family,
        );
        let store_commit = Histogram::new(COMMIT_BUCKETS);
        registry.register_with_unit(
            "store_commit_duration",
            "Time to commit one store transaction (a batch of node changes, a campaign change, an action result) that succeeded",
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
        let (family, failures) = labelled(steps_left(), Step::as_str, "step");
        registry.register(
            "campaign_node_failures",
            "Nodes that failed in a campaign, by the step they failed in",
            family,
        );
        Events {
            registry,
            reports,
            sessions_opened,
            refused,
            requests_refused,
            metrics_dropped,
            store_commit,
            commit_started: AtomicI64::new(0),
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

    pub fn refused(&self, why: ConnectionRefusal) {
        if let Some((_, c)) = self.refused.iter().find(|(r, _)| *r == why) {
            c.inc();
        }
    }

    pub fn request_refused(&self) {
        self.requests_refused.inc();
    }

    pub fn metrics_dropped(&self, why: MetricsDrop) {
        if let Some((_, c)) = self.metrics_dropped.iter().find(|(r, _)| *r == why) {
            c.inc();
        }
    }

    /// A store commit begins now (the writer thread, before it commits).
    pub fn commit_began(&self, now: Timestamp) {
        // 0 means "none": a clock at the epoch is taken as 1 ms past it.
        self.commit_started
            .store(now.unix_millis().max(1), Ordering::Relaxed);
    }

    /// The store commit that began at [`Events::commit_began`] ended after
    /// `took`; a commit that succeeded is timed.
    pub fn commit_ended(&self, took: Duration, succeeded: bool) {
        self.commit_started.store(0, Ordering::Relaxed);
        if succeeded {
            self.store_commit.observe(took.as_secs_f64());
        }
    }

    /// How long the store commit in progress has run at `now`; `None`
    /// while none is.
    pub fn commit_running(&self, now: Timestamp) -> Option<Duration> {
        match self.commit_started.load(Ordering::Relaxed) {
            0 => None,
            began => Some(now.since(Timestamp::from_unix_millis(began))),
        }
    }

    /// A node's run changed from `old` to `new` at `now`: the time it
    /// spent in the step it leaves is observed, and a failure is counted
    /// once, when the run first carries one, against the step it failed
    /// in (with `undrain_on_failure` the run goes on to the undrain before
    /// it ends failed; the failure belongs to the step before).
    pub fn run_changed(&self, old: &NodeRun, new: &NodeRun, now: Timestamp) {
        if old.step != new.step
            && let Some((_, h)) = self.step_durations.iter().find(|(s, _)| *s == old.step)
        {
            h.observe(now.since(old.since).as_secs_f64());
        }
        let failed_now = new.step == Step::Failed || new.failure.is_some();
        let failed_before = old.step == Step::Failed || old.failure.is_some();
        if failed_now
            && !failed_before
            && let Some((_, c)) = self.failures.iter().find(|(s, _)| *s == old.step)
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
    family("rollcall_requests_refused_total", Kind::Counter, &[]),
    family(
        "rollcall_metrics_connections_dropped_total",
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
    family("rollcall_store_commit_running_seconds", Kind::Gauge, &[]),
    family("rollcall_replica_leading", Kind::Gauge, &[]),
    family("rollcall_scrape_part_ok", Kind::Gauge, &["part"]),
    family("rollcall_per_node_series", Kind::Gauge, &[]),
    // The fleet.
    family("rollcall_nodes", Kind::Gauge, &["role", "state"]),
    family("rollcall_nodes_reboot_required", Kind::Gauge, &["role"]),
    family(
        "rollcall_nodes_reboot_required_longer_than",
        Kind::Gauge,
        &["longer_than_seconds"],
    ),
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
        &["campaign", "gate", "role"],
    ),
    family(
        "rollcall_campaign_gate_timeout_seconds",
        Kind::Gauge,
        &["campaign", "gate", "role"],
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
        "rollcall_node_reboot_required_since_timestamp_seconds",
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
mod tests;
