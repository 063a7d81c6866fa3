//! The reports of a simulated node, made from one report a real agent sent
//! (`rollcall-agent once --json`). What differs between the nodes of a real
//! cloud differs here too: hostname, boot id, container ids and the
//! counters that move; images, labels, disks and packages stay shared.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use anyhow::{Context, bail};
use prost::Message as _;
use rollcall_proto::model::{
    Container, ContainerHealth, ContainersSection, HostMetrics, NetworkSection, Report,
};
use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1;

/// The shipped template: a kolla controller+compute node with 46 service
/// containers, captured by scripts/capture-report-template.sh (see
/// tests/data/README.md).
pub const KOLLA_NODE_JSON: &str = include_str!("../../data/report-kolla-node.json");

/// A report as a real agent printed it, ready to be made into many nodes.
#[derive(Clone, Debug)]
pub struct Template {
    report: Report,
    json_bytes: usize,
}

/// What a template holds, for the benchmark's description of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TemplateFacts {
    pub containers: usize,
    /// Containers with a Docker health check (health other than none).
    pub health_checked: usize,
    pub unhealthy: usize,
    /// Containers with at least one label.
    pub labelled: usize,
    pub interfaces: usize,
    pub filesystems: usize,
    /// The template file as given.
    pub json_bytes: usize,
    /// One full report of one simulated node, encoded as the agent sends it
    /// (an `AgentMessage`).
    pub full_report_bytes: usize,
    /// One interval report between full ones (metrics and network).
    pub partial_report_bytes: usize,
    /// One change-driven report (the whole containers section).
    pub change_report_bytes: usize,
}

impl Template {
    /// The shipped kolla node template.
    pub fn kolla_node() -> Self {
        Self::from_json(KOLLA_NODE_JSON).expect("the shipped template parses (a unit test checks)")
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read report template {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("report template {}", path.display()))
    }

    /// Parses what `rollcall-agent once --json` prints.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let mut report: Report = serde_json::from_str(text)
            .context("not a report as `rollcall-agent once --json` prints it")?;
        if report.host.is_none() || report.metrics.is_none() {
            bail!("the report has no host or metrics section: capture a full report");
        }
        report.full = true;
        Ok(Self {
            report,
            json_bytes: text.len(),
        })
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    pub fn containers(&self) -> &[Container] {
        self.report.containers()
    }

    pub fn facts(&self) -> TemplateFacts {
        let containers = self.report.containers();
        let node = NodeKey::new(0, "sim-00000");
        let encoded = |r: Report| wire(r).encoded_len();
        let full = self.full_report(&node, &[], 1, 0);
        let change = Report {
            containers: full.containers.clone(),
            ..Default::default()
        };
        TemplateFacts {
            containers: containers.len(),
            health_checked: containers
                .iter()
                .filter(|c| c.health != ContainerHealth::None)
                .count(),
            unhealthy: containers
                .iter()
                .filter(|c| c.health == ContainerHealth::Unhealthy)
                .count(),
            labelled: containers.iter().filter(|c| !c.labels.is_empty()).count(),
            interfaces: self
                .report
                .network
                .as_ref()
                .map_or(0, |n| n.interfaces.len()),
            filesystems: self
                .report
                .disks
                .as_ref()
                .map_or(0, |d| d.filesystems.len()),
            json_bytes: self.json_bytes,
            full_report_bytes: encoded(full),
            partial_report_bytes: encoded(self.partial_report(&node, 2, 10)),
            change_report_bytes: encoded(change),
        }
    }

    /// Every section, as after connecting and every `full_every` intervals.
    /// `changed` holds this node's containers that differ from the template
    /// (by index), `elapsed_secs` the time since the simulation started.
    pub fn full_report(
        &self,
        node: &NodeKey,
        changed: &[(usize, Container)],
        seq: u64,
        elapsed_secs: u64,
    ) -> Report {
        let mut report = self.report.clone();
        report.seq = seq;
        report.collected_at = Timestamp::now();
        report.full = true;
        if let Some(host) = &mut report.host {
            host.hostname.clone_from(&node.name);
            host.boot_id.clone_from(&node.boot_id);
        }
        report.metrics = Some(self.metrics(node, elapsed_secs));
        report.network = self.network(node, elapsed_secs);
        report.containers = self.containers_section(node, changed);
        report
    }

    /// What the agent sends at the interval between full reports when
    /// nothing else changed: metrics and network counters.
    pub fn partial_report(&self, node: &NodeKey, seq: u64, elapsed_secs: u64) -> Report {
        Report {
            seq,
            collected_at: Timestamp::now(),
            full: false,
            metrics: Some(self.metrics(node, elapsed_secs)),
            network: self.network(node, elapsed_secs),
            ..Default::default()
        }
    }

    /// The containers section of this node: the template's containers under
    /// this node's ids, with its own changes applied.
    pub fn containers_section(
        &self,
        node: &NodeKey,
        changed: &[(usize, Container)],
    ) -> Option<ContainersSection> {
        let mut section = self.report.containers.clone()?;
        for (i, c) in section.containers.iter_mut().enumerate() {
            c.id = node.container_id(i);
        }
        for (i, c) in changed {
            if let Some(slot) = section.containers.get_mut(*i) {
                slot.clone_from(c);
            }
        }
        Some(section)
    }

    /// One of this node's containers as the template has it.
    pub fn container(&self, node: &NodeKey, index: usize) -> Option<Container> {
        let mut c = self.report.containers().get(index)?.clone();
        c.id = node.container_id(index);
        Some(c)
    }

    /// Load, CPU and memory move every interval, as on a busy node.
    fn metrics(&self, node: &NodeKey, elapsed_secs: u64) -> HostMetrics {
        let mut m = self.report.metrics.clone().unwrap_or_default();
        let jitter = fastrand::f64();
        m.uptime_secs += elapsed_secs + node.salt % 86_400;
        m.cpu_usage_percent = (10.0 + 30.0 * jitter) as f32;
        m.load1 = 2.0 + 6.0 * jitter;
        m.load5 = 2.5 + 4.0 * fastrand::f64();
        m.load15 = 3.0 + 2.0 * fastrand::f64();
        let used = m.memory_total_bytes / 2 + fastrand::u64(0..=m.memory_total_bytes / 8);
        m.memory_used_bytes = used.min(m.memory_total_bytes);
        m.memory_available_bytes = m.memory_total_bytes - m.memory_used_bytes;
        m
    }

    /// Counters grow at a rate of their own per node and interface, and
    /// never go back: at `t` seconds they are `base + rate·t + noise` with
    /// `noise < rate`, and reports are at least a second apart.
    fn network(&self, node: &NodeKey, elapsed_secs: u64) -> Option<NetworkSection> {
        let mut net = self.report.network.clone()?;
        for (i, iface) in net.interfaces.iter_mut().enumerate() {
            let rate = 1_000 + mix(node.salt, i as u64) % 2_000_000;
            let bytes = rate * elapsed_secs + fastrand::u64(0..rate);
            let packets = bytes / 700;
            iface.rx_bytes += bytes;
            iface.tx_bytes += bytes / 2;
            iface.rx_packets += packets;
            iface.tx_packets += packets / 2;
        }
        Some(net)
    }
}

/// What makes one simulated node itself: its name and what follows from
/// it, the same in every session.
#[derive(Clone, Debug)]
pub struct NodeKey {
    pub name: String,
    pub boot_id: String,
    salt: u64,
}

impl NodeKey {
    pub fn new(index: usize, name: &str) -> Self {
        let salt = mix(0x5eed, index as u64) ^ hash_str(name);
        let (a, b) = (mix(salt, 1), mix(salt, 2));
        // A UUID as /proc/sys/kernel/random/boot_id shows one.
        let boot_id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        );
        Self {
            name: name.to_owned(),
            boot_id,
            salt,
        }
    }

    /// A Docker container id (64 hex digits) unique to this node.
    pub fn container_id(&self, index: usize) -> String {
        (0..4)
            .map(|k| format!("{:016x}", mix(self.salt, ((index as u64) << 8) | k)))
            .collect()
    }
}

/// The message the agent sends for a report.
pub fn wire(report: Report) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Report(report.into())),
    }
}

fn mix(a: u64, b: u64) -> u64 {
    let mut h = DefaultHasher::new();
    (a, b).hash(&mut h);
    h.finish()
}

fn hash_str(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_template_is_a_real_size_kolla_node() {
        let t = Template::kolla_node();
        let f = t.facts();
        assert!(f.containers >= 40 && f.health_checked >= 40, "{f:?}");
        assert_eq!(f.labelled, f.containers, "{f:?}");
        assert!(f.interfaces >= 40, "{f:?}");
        assert!(f.full_report_bytes > 10 * f.partial_report_bytes, "{f:?}");
    }

    #[test]
    fn nodes_differ_where_real_nodes_differ() {
        let t = Template::kolla_node();
        let (a, b) = (NodeKey::new(0, "sim-00000"), NodeKey::new(1, "sim-00001"));
        let (ra, rb) = (t.full_report(&a, &[], 1, 0), t.full_report(&b, &[], 1, 0));
        let host = |r: &Report| r.host.clone().expect("host");
        assert_eq!(host(&ra).hostname, "sim-00000");
        assert_ne!(host(&ra).boot_id, host(&rb).boot_id);
        assert_eq!(host(&ra).boot_id.len(), 36);
        let (ca, cb) = (ra.containers(), rb.containers());
        assert_ne!(ca[0].id, cb[0].id);
        assert_eq!(ca[0].id.len(), 64);
        assert_eq!((&ca[0].image, &ca[0].labels), (&cb[0].image, &cb[0].labels));
        // The same node is the same in every session.
        assert_eq!(
            a.container_id(3),
            NodeKey::new(0, "sim-00000").container_id(3)
        );
    }

    #[test]
    fn counters_move_forward_every_interval() {
        let t = Template::kolla_node();
        let node = NodeKey::new(7, "sim-00007");
        let net = |secs| {
            t.partial_report(&node, 1, secs)
                .network
                .expect("network")
                .interfaces
        };
        let (before, after) = (net(10), net(11));
        for (x, y) in before.iter().zip(&after) {
            assert!(
                y.rx_bytes > x.rx_bytes && y.tx_bytes > x.tx_bytes,
                "{x:?} {y:?}"
            );
        }
    }
}
