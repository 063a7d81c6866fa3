//! A scrape's text: the event families of [`Events`] and the state of a
//! [`Scrape`] encoded by prometheus-client in the OpenMetrics text format
//! ([`classic`](super::classic) turns it into the Prometheus text format
//! 0.0.4). Pure: no clock, no I/O.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use rollcall_proto::model::Role;

use super::Events;
use super::snapshot::{
    CampaignSnapshot, FleetSnapshot, NodeSample, REBOOT_LONGER_THAN, RoleTotals, SILENT_LONGER_THAN,
};
use crate::campaign::Phase;
use crate::campaign::lifecycle::Step;

/// What a scrape found: the state of the fleet, the campaigns and the
/// store. A part that did not answer in time is `None`: its families are
/// written without samples and `rollcall_scrape_part_ok` says which.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub fleet: Option<FleetSnapshot>,
    pub campaigns: Option<CampaignSnapshot>,
    /// The store's last write succeeded (`StoreHealth`).
    pub store_healthy: bool,
    /// How long the store commit in progress has run; `None` while none is.
    pub commit_running: Option<Duration>,
}

/// The parts a scrape asks, as `rollcall_scrape_part_ok` names them.
pub const PARTS: [&str; 2] = ["fleet", "campaigns"];

/// The scrape in the OpenMetrics text format (ends with `# EOF`).
pub fn openmetrics(events: &Events, scrape: Arc<Scrape>) -> String {
    let mut state = Registry::with_prefix("rollcall");
    state.register_collector(Box::new(Shared(scrape)));
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail; a collector's own error is ours.
    let encoded = prometheus_client::encoding::text::encode_registry(&mut out, events.registry())
        .and_then(|()| prometheus_client::encoding::text::encode(&mut out, &state));
    debug_assert!(encoded.is_ok(), "encoding to a String");
    out
}

/// A scrape that concurrent scrapes share (`serve`), as a collector.
#[derive(Debug)]
struct Shared(Arc<Scrape>);

/// A label value as the text formats need it: `\`, `"` and newlines
/// escaped (prometheus-client writes values as they are). Node names
/// cannot hold any of them; the escape is for what a future label might.
fn label(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One gauge family: its descriptor, then one sample per label set.
fn gauges<'l, V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Vec<(&'static str, Cow<'l, str>)>, V)>,
) -> Result<(), std::fmt::Error> {
    let kind = MetricType::Gauge;
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        let mut sample = family.encode_family(&labels)?;
        sample.encode_gauge(&value)?;
    }
    Ok(())
}

/// A gauge without labels; without a value, its descriptor alone.
fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl Into<Option<V>>,
) -> Result<(), std::fmt::Error> {
    let kind = MetricType::Gauge;
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    match value.into() {
        Some(v) => family.encode_gauge(&v),
        None => Ok(()),
    }
}

impl Collector for Shared {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let scrape = &*self.0;
        server(&mut e, scrape)?;
        fleet(&mut e, scrape.fleet.as_ref())?;
        campaigns(&mut e, scrape.campaigns.as_ref())?;
        match scrape.fleet.as_ref().and_then(|f| f.per_node.as_ref()) {
            Some(nodes) => per_node(&mut e, nodes),
            None => Ok(()),
        }
    }
}

fn server(e: &mut DescriptorEncoder<'_>, scrape: &Scrape) -> Result<(), std::fmt::Error> {
    let (fleet, campaigns) = (scrape.fleet.as_ref(), scrape.campaigns.as_ref());
    gauges(
        e,
        "build_info",
        "The rollcall-server version, as a label; the value is 1.",
        None,
        [(
            vec![("version", Cow::Borrowed(env!("CARGO_PKG_VERSION")))],
            1_i64,
        )],
    )?;
    gauges(
        e,
        "scrape_part_ok",
        "1 when the part answered this scrape in time, 0 when it did not (its families have no samples then).",
        None,
        PARTS
            .into_iter()
            .zip([fleet.is_some(), campaigns.is_some()])
            .map(|(part, ok)| (vec![("part", Cow::Borrowed(part))], i64::from(ok))),
    )?;
    gauge::<u64>(
        e,
        "sessions",
        "Agent sessions open now.",
        None,
        fleet.map(|f| f.sessions),
    )?;
    gauges(
        e,
        "watchers",
        "Operators watching, by what they watch (nodes or campaigns).",
        None,
        [
            ("nodes", fleet.map(|f| f.watchers)),
            ("campaigns", campaigns.map(|c| c.watchers)),
        ]
        .into_iter()
        .filter_map(|(kind, n)| Some((vec![("kind", Cow::Borrowed(kind))], n?))),
    )?;
    gauge(
        e,
        "store_healthy",
        "1 while the store takes writes, 0 while they fail (nothing moves then).",
        None,
        i64::from(scrape.store_healthy),
    )?;
    gauge(
        e,
        "store_commit_running",
        "How long the store commit in progress has run (0: none is); a stalled disk shows here while the commit is stuck.",
        Some(&Unit::Seconds),
        scrape.commit_running.map_or(0.0, secs),
    )?;
    // Whoever serves this scrape leads (or is the one server on SQLite);
    // a follower serves only this gauge, at 0 (`serve::FOLLOWER_SCRAPE`).
    gauge(
        e,
        "replica_leading",
        "Whether this replica leads (1) or follows (0); only the leader exports the other rollcall_ series.",
        None,
        1i64,
    )?;
    gauge::<i64>(
        e,
        "per_node_series",
        "1 while the per-node series (rollcall_node_*) are written, 0 while the fleet is larger than [metrics] per_node_max_nodes.",
        None,
        fleet.map(|f| i64::from(f.per_node.is_some())),
    )
}

fn role_label(role: Role) -> (&'static str, Cow<'static, str>) {
    ("role", Cow::Borrowed(role.as_str()))
}

fn fleet(
    e: &mut DescriptorEncoder<'_>,
    fleet: Option<&FleetSnapshot>,
) -> Result<(), std::fmt::Error> {
    let seconds = Some(&Unit::Seconds);
    let by_role = || {
        fleet
            .into_iter()
            .flat_map(|f| Role::ALL.into_iter().zip(f.by_role.iter()))
    };
    gauges(
        e,
        "nodes",
        "Nodes by role and state (online: its agent reports; offline: it stopped).",
        None,
        by_role().flat_map(|(role, t)| {
            [("online", t.online), ("offline", t.offline)]
                .map(|(state, n)| (vec![role_label(role), ("state", Cow::Borrowed(state))], n))
        }),
    )?;
    let per_role = |pick: fn(&RoleTotals) -> u64| {
        by_role().map(move |(role, t)| (vec![role_label(role)], pick(t)))
    };
    gauges(
        e,
        "nodes_reboot_required",
        "Nodes whose latest report asks for a reboot, by role.",
        None,
        per_role(|t| t.reboot_required),
    )?;
    gauges(
        e,
        "nodes_reboot_required_longer_than",
        "Nodes that have asked for a reboot, without a break, for longer than the label's number of seconds (counted from the first report this server took that asked).",
        None,
        fleet.into_iter().flat_map(|f| {
            REBOOT_LONGER_THAN
                .iter()
                .zip(f.reboot_required_longer)
                .map(|(s, n)| (vec![("longer_than_seconds", Cow::Owned(s.to_string()))], n))
        }),
    )?;
    gauges(
        e,
        "pending_updates",
        "Package updates pending, summed over the nodes of each role.",
        None,
        per_role(|t| t.pending_updates),
    )?;
    gauges(
        e,
        "pending_security_updates",
        "Security updates pending, summed over the nodes of each role.",
        None,
        per_role(|t| t.pending_security_updates),
    )?;
    gauges(
        e,
        "containers_unhealthy",
        "Containers whose health check fails, summed over the nodes of each role.",
        None,
        per_role(|t| t.containers_unhealthy),
    )?;
    gauges(
        e,
        "containers_stopped",
        "Containers that should run and do not (exited, dead, restarting), summed over the nodes of each role.",
        None,
        per_role(|t| t.containers_stopped),
    )?;
    gauge::<f64>(
        e,
        "agent_certificate_nearest_expiry_timestamp",
        "When the agent certificate that expires first, among online nodes, expires (Unix time); no sample while no online node connected with one.",
        seconds,
        fleet
            .and_then(|f| f.nearest_cert_expiry)
            .map(|t| t.unix_millis() as f64 / 1_000.0),
    )?;
    gauges(
        e,
        "nodes_report_age_max",
        "The oldest last report among the nodes of each state; no sample for a state without nodes.",
        seconds,
        fleet.into_iter().flat_map(|f| {
            [("online", 0), ("offline", 1)]
                .into_iter()
                .filter_map(|(state, i)| {
                    let age = f.report_age_max[i]?;
                    Some((vec![("state", Cow::Borrowed(state))], secs(age)))
                })
        }),
    )?;
    gauges(
        e,
        "nodes_silent",
        "Nodes whose last report is older than the label's number of seconds, online or not.",
        None,
        fleet.into_iter().flat_map(|f| {
            SILENT_LONGER_THAN
                .iter()
                .zip(f.silent)
                .map(|(s, n)| (vec![("longer_than_seconds", Cow::Owned(s.to_string()))], n))
        }),
    )
}

fn campaigns(
    e: &mut DescriptorEncoder<'_>,
    campaigns: Option<&CampaignSnapshot>,
) -> Result<(), std::fmt::Error> {
    let seconds = Some(&Unit::Seconds);
    let open = || campaigns.into_iter().flat_map(|c| c.open.iter());
    gauges(
        e,
        "campaigns",
        "Campaigns the server keeps, by phase.",
        None,
        campaigns.into_iter().flat_map(|c| {
            Phase::ALL
                .into_iter()
                .zip(c.by_phase)
                .map(|(p, n)| (vec![("phase", Cow::Borrowed(p.as_str()))], n))
        }),
    )?;
    gauges(
        e,
        "campaign_phase",
        "The phase of each campaign that has not ended: 1 for its phase, 0 for the others.",
        None,
        open().flat_map(|c| {
            Phase::ALL.into_iter().map(|p| {
                (
                    vec![
                        ("campaign", label(&c.id)),
                        ("phase", Cow::Borrowed(p.as_str())),
                    ],
                    i64::from(c.phase == p),
                )
            })
        }),
    )?;
    gauges(
        e,
        "campaign_nodes",
        "The nodes of each campaign that has not ended, by the step they are in.",
        None,
        open().flat_map(|c| {
            Step::ALL.into_iter().zip(c.nodes_by_step).map(|(s, n)| {
                (
                    vec![
                        ("campaign", label(&c.id)),
                        ("step", Cow::Borrowed(s.as_str())),
                    ],
                    n,
                )
            })
        }),
    )?;
    let by_gate = |value: fn(&super::snapshot::RoleGates, usize) -> Option<f64>| {
        open().flat_map(move |c| {
            c.gates.iter().flat_map(move |g| {
                [("before", 0), ("after", 1)]
                    .into_iter()
                    .filter_map(move |(gate, i)| {
                        let labels = vec![
                            ("campaign", label(&c.id)),
                            ("gate", Cow::Borrowed(gate)),
                            role_label(g.role),
                        ];
                        Some((labels, value(g, i)?))
                    })
            })
        })
    };
    gauges(
        e,
        "campaign_gate_wait_max",
        "The longest a node of the role, in each campaign that has not ended, has waited at the gate now (0: none is at it).",
        seconds,
        by_gate(|g, i| Some(g.wait_max[i].map_or(0.0, secs))),
    )?;
    gauges(
        e,
        "campaign_gate_timeout",
        "How long a node of the role may wait at the gate before it fails ([gates.ROLE] timeout_secs, else timeouts.gate_secs).",
        seconds,
        by_gate(|g, i| g.timeout[i].map(secs)),
    )
}

fn per_node(e: &mut DescriptorEncoder<'_>, nodes: &[NodeSample]) -> Result<(), std::fmt::Error> {
    let each = |value: fn(&NodeSample) -> Option<f64>| {
        nodes.iter().filter_map(move |n| {
            Some((
                vec![("node", label(&n.name)), role_label(n.role)],
                value(n)?,
            ))
        })
    };
    gauges(
        e,
        "node_online",
        "1 while the node's agent reports, 0 once it is offline.",
        None,
        each(|n| Some(f64::from(u8::from(n.online)))),
    )?;
    gauges(
        e,
        "node_report_age",
        "Time since the node's last report (or its session's start).",
        Some(&Unit::Seconds),
        each(|n| Some(secs(n.report_age))),
    )?;
    gauges(
        e,
        "node_reboot_required",
        "1 while the node's latest report asks for a reboot.",
        None,
        each(|n| Some(f64::from(u8::from(n.reboot_required)))),
    )?;
    gauges(
        e,
        "node_reboot_required_since_timestamp",
        "Since when the node has asked for a reboot without a break (Unix time of the first report this server took that asked); no sample while it asks for none.",
        Some(&Unit::Seconds),
        each(|n| {
            n.reboot_required_since
                .map(|t| t.unix_millis() as f64 / 1_000.0)
        }),
    )?;
    gauges(
        e,
        "node_pending_updates",
        "Package updates pending on the node.",
        None,
        each(|n| Some(f64::from(n.pending_updates))),
    )?;
    gauges(
        e,
        "node_pending_security_updates",
        "Security updates pending on the node.",
        None,
        each(|n| Some(f64::from(n.pending_security_updates))),
    )?;
    gauges(
        e,
        "node_containers_unhealthy",
        "Containers on the node whose health check fails.",
        None,
        each(|n| Some(f64::from(n.containers_unhealthy))),
    )
}

#[cfg(test)]
mod tests;
