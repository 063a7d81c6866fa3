//! Domain types. Both binaries think in these; the generated [`crate::v1`]
//! types stay at the gRPC edge. Their serde form is the stable `--json`
//! output and the store's encoding, so renaming a field is a breaking change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::timestamp::Timestamp;

/// What a node is in the cloud; campaigns treat each role differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Controller,
    Compute,
    Storage,
}

crate::names!(Role, "role" {
    Controller => "controller", Compute => "compute", Storage => "storage",
});

/// One report from a node's agent. A full report has every section; a
/// partial one only the sections that changed ([`Report::merge`] applies
/// it). What the server keeps and shows is the merge of all of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub seq: u64,
    pub collected_at: Timestamp,
    #[serde(default)]
    pub full: bool,
    pub host: Option<HostFacts>,
    pub metrics: Option<HostMetrics>,
    #[serde(default)]
    pub containers: Option<ContainersSection>,
    #[serde(default)]
    pub disks: Option<DisksSection>,
    #[serde(default)]
    pub reboot: Option<RebootSection>,
    #[serde(default)]
    pub updates: Option<UpdatesSection>,
    #[serde(default)]
    pub network: Option<NetworkSection>,
}

impl Report {
    /// Applies a newer report: a full one replaces everything, a partial
    /// one replaces only the sections it carries.
    pub fn merge(&mut self, update: Report) {
        if update.full {
            *self = update;
            return;
        }
        self.seq = update.seq;
        self.collected_at = update.collected_at;
        fn take<T>(slot: &mut Option<T>, new: Option<T>) {
            if new.is_some() {
                *slot = new;
            }
        }
        take(&mut self.host, update.host);
        take(&mut self.metrics, update.metrics);
        take(&mut self.containers, update.containers);
        take(&mut self.disks, update.disks);
        take(&mut self.reboot, update.reboot);
        take(&mut self.updates, update.updates);
        take(&mut self.network, update.network);
    }

    pub fn reboot_required(&self) -> bool {
        self.reboot.as_ref().is_some_and(|r| r.required)
    }

    pub fn containers(&self) -> &[Container] {
        self.containers.as_ref().map_or(&[], |c| &c.containers)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    #[default]
    Unknown,
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerHealth {
    /// No health check configured.
    #[default]
    None,
    Starting,
    Healthy,
    Unhealthy,
}

crate::names!(ContainerState, "container state" {
    Unknown => "unknown", Created => "created", Running => "running", Paused => "paused",
    Restarting => "restarting", Removing => "removing", Exited => "exited", Dead => "dead",
});
crate::names!(ContainerHealth, "container health" {
    None => "none", Starting => "starting", Healthy => "healthy", Unhealthy => "unhealthy",
});

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainersSection {
    /// False when the container engine cannot be reached; `error` says why.
    pub available: bool,
    pub error: String,
    pub engine: String,
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: ContainerState,
    pub health: ContainerHealth,
    pub failing_streak: u32,
    pub last_health_output: String,
    pub restart_count: u32,
    pub exit_code: i64,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub labels: BTreeMap<String, String>,
    pub oom_killed: bool,
}

impl Container {
    /// Should be running but is not: exited, dead or restart-looping.
    pub fn is_down(&self) -> bool {
        matches!(
            self.state,
            ContainerState::Exited | ContainerState::Dead | ContainerState::Restarting
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DisksSection {
    pub filesystems: Vec<Filesystem>,
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filesystem {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub inodes_total: u64,
    pub inodes_used: u64,
    pub read_only: bool,
}

impl Filesystem {
    /// Used space as `df` shows it: used / (used + available), in percent.
    pub fn used_percent(&self) -> f64 {
        // In floats: an agent's u64 figures may add up past u64::MAX.
        let denominator = self.used_bytes as f64 + self.available_bytes as f64;
        if denominator == 0.0 {
            0.0
        } else {
            self.used_bytes as f64 * 100.0 / denominator
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RebootSection {
    pub required: bool,
    pub reasons: Vec<RebootReason>,
    pub errors: Vec<String>,
    pub checked_at: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RebootReason {
    pub source: String,
    pub detail: String,
    pub packages: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdatesSection {
    pub manager: String,
    pub checked: bool,
    pub count: u32,
    pub security_count: u32,
    pub last_check: Option<Timestamp>,
    pub last_error: String,
    pub packages: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkSection {
    pub interfaces: Vec<NetInterface>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetInterface {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}

/// One container and the node it runs on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeContainer {
    pub node: String,
    pub container: Container,
}

/// A container listing filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    pub node: Option<String>,
    pub state: Option<ContainerState>,
    pub health: Option<ContainerHealth>,
    pub name_pattern: Option<String>,
}

impl ContainerFilter {
    pub fn matches(&self, node: &str, c: &Container) -> bool {
        self.node.as_deref().is_none_or(|n| n == node)
            && self.state.is_none_or(|s| s == c.state)
            && self.health.is_none_or(|h| h == c.health)
            && self
                .name_pattern
                .as_deref()
                .is_none_or(|p| glob_match(p, &c.name))
    }
}

/// `*` matches any run of characters, `?` any one; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A filesystem above the usage threshold, for the fleet summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FullFilesystem {
    pub node: String,
    pub mount_point: String,
    pub used_percent: f64,
    pub available_bytes: u64,
}

/// The fleet at a glance: what needs attention.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetSummary {
    pub nodes_total: u32,
    pub nodes_online: u32,
    pub nodes_offline: u32,
    pub offline_nodes: Vec<String>,
    pub reboot_required_nodes: Vec<String>,
    pub containers_total: u32,
    pub unhealthy_containers: Vec<NodeContainer>,
    pub stopped_containers: Vec<NodeContainer>,
    pub full_filesystems: Vec<FullFilesystem>,
    pub engine_unavailable_nodes: Vec<String>,
    pub pending_updates: u64,
    pub pending_security_updates: u64,
    pub fs_usage_threshold_percent: u32,
    /// How long each list would be without `list_limit`; the lists hold
    /// the first `list_limit` entries (sorted by node).
    #[serde(default)]
    pub reboot_required_total: u32,
    #[serde(default)]
    pub unhealthy_containers_total: u32,
    #[serde(default)]
    pub stopped_containers_total: u32,
    #[serde(default)]
    pub full_filesystems_total: u32,
    #[serde(default)]
    pub engine_unavailable_total: u32,
    #[serde(default)]
    pub list_limit: u32,
    /// "store failing: REASON" while the server cannot write its store;
    /// empty otherwise.
    #[serde(default)]
    pub store_failing: String,
    /// Agent certificates that expire within `cert_expiry_within_days`
    /// (expired ones included): how many, how many of those expired, and the
    /// nearest first, at most `list_limit` of them.
    #[serde(default)]
    pub cert_expiry_within_days: u32,
    #[serde(default)]
    pub certs_expiring_total: u32,
    #[serde(default)]
    pub certs_expired_total: u32,
    #[serde(default)]
    pub certs_expiring: Vec<CertExpiry>,
}

/// When a node's agent certificate expires, for the fleet summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertExpiry {
    pub node: String,
    pub not_after: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    pub os_pretty_name: String,
    pub os_id: String,
    pub os_version_id: String,
    pub kernel: String,
    pub arch: String,
    pub boot_id: String,
    pub boot_time: Timestamp,
    pub cpu_count: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    pub uptime_secs: u64,
    pub cpu_usage_percent: f32,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
}

/// What the server knows about a node, without its full report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub role: Role,
    pub labels: BTreeMap<String, String>,
    pub online: bool,
    /// Why the node is offline; empty while online.
    pub offline_reason: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub agent_version: String,
    pub hostname: String,
    pub boot_id: String,
    pub last_report_at: Option<Timestamp>,
    pub last_report_seq: u64,
    pub os_pretty_name: String,
    pub kernel: String,
    #[serde(default)]
    pub reboot_required: bool,
    #[serde(default)]
    pub containers_total: u32,
    #[serde(default)]
    pub containers_unhealthy: u32,
    #[serde(default)]
    pub pending_updates: u32,
    /// When the agent certificate of the node's latest session expires;
    /// `None` for a node stored before the server recorded it.
    #[serde(default)]
    pub cert_not_after: Option<Timestamp>,
}

impl Node {
    /// A node seen for the first time, offline until its session says otherwise.
    pub fn new(name: &str, role: Role, now: Timestamp) -> Self {
        Self {
            name: name.to_owned(),
            role,
            labels: BTreeMap::new(),
            online: false,
            offline_reason: String::new(),
            first_seen: now,
            last_seen: now,
            agent_version: String::new(),
            hostname: String::new(),
            boot_id: String::new(),
            last_report_at: None,
            last_report_seq: 0,
            os_pretty_name: String::new(),
            kernel: String::new(),
            reboot_required: false,
            containers_total: 0,
            containers_unhealthy: 0,
            pending_updates: 0,
            cert_not_after: None,
        }
    }
}

/// A node with its latest report, as `nodes show` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeDetail {
    pub node: Node,
    pub report: Option<Report>,
}

/// What a [`crate::v1::NodeEvent`] says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeEventKind {
    Snapshot,
    Online,
    Report,
    Offline,
    /// An admin forgot the node: it is gone from the fleet.
    Forgotten,
}

crate::names!(NodeEventKind, "node event kind" {
    Snapshot => "snapshot", Online => "online", Report => "report", Offline => "offline",
    Forgotten => "forgotten",
});

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeEvent {
    pub kind: NodeEventKind,
    pub node: Node,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnlineFilter {
    #[default]
    Any,
    Online,
    Offline,
}

impl OnlineFilter {
    pub fn matches(self, online: bool) -> bool {
        match self {
            OnlineFilter::Any => true,
            OnlineFilter::Online => online,
            OnlineFilter::Offline => !online,
        }
    }
}

/// What the server may ask an agent to run: only a name, never a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Patch,
    Reboot,
    Hook,
}

crate::names!(ActionKind, "action kind" {
    Patch => "patch", Reboot => "reboot", Hook => "hook",
});

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionState {
    Accepted,
    Running,
    Succeeded,
    Failed,
    Rejected,
}

crate::names!(ActionState, "action state" {
    Accepted => "accepted", Running => "running", Succeeded => "succeeded", Failed => "failed",
    Rejected => "rejected",
});

impl ActionState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ActionState::Succeeded | ActionState::Failed | ActionState::Rejected
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// Unique and stable: re-sending it never runs the action twice.
    pub id: String,
    pub kind: ActionKind,
    /// The hook's name (empty for patch and reboot).
    pub name: String,
    pub args: Vec<String>,
    pub timeout_secs: u32,
    /// The fencing epoch of the leader that sent it (0: a server without
    /// replicas). Stamped by the leader as it sends, not stored.
    #[serde(default)]
    pub leader_epoch: u64,
}

/// What an agent says about an action it was asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub id: String,
    /// The server's: it knows the node from the certificate. The agent
    /// leaves it empty, and its records from before it had one read as
    /// empty.
    #[serde(default)]
    pub node: String,
    pub state: ActionState,
    pub exit_code: Option<i32>,
    pub output_tail: String,
    pub error: String,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub boot_id: String,
}

impl ActionResult {
    /// An action as the server issues it: asked of `node`, no word yet.
    pub fn issued(id: &str, node: &str) -> Self {
        ActionResult {
            id: id.to_owned(),
            node: node.to_owned(),
            state: ActionState::Accepted,
            exit_code: None,
            output_tail: String::new(),
            error: String::new(),
            started_at: None,
            finished_at: None,
            boot_id: String::new(),
        }
    }
}

/// A node listing filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFilter {
    pub role: Option<Role>,
    pub online: OnlineFilter,
}

impl NodeFilter {
    pub fn matches(&self, node: &Node) -> bool {
        self.role.is_none_or(|r| r == node.role) && self.online.matches(node.online)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        for (p, t, want) in [
            ("nova_*", "nova_compute", true),
            ("nova_*", "neutron_server", false),
            ("*", "", true),
            ("?ova*", "nova_api", true),
            ("*_api", "nova_api", true),
            ("*a*b*c", "xaybzc", true),
            ("*a*b*c", "xaybz", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn a_partial_report_replaces_only_its_sections() {
        let mut stored = Report {
            seq: 1,
            full: true,
            host: Some(HostFacts {
                hostname: "a".into(),
                ..Default::default()
            }),
            disks: Some(DisksSection {
                error: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let containers = ContainersSection {
            available: true,
            ..Default::default()
        };
        stored.merge(Report {
            seq: 2,
            containers: Some(containers.clone()),
            ..Default::default()
        });
        assert_eq!(stored.seq, 2);
        assert_eq!(stored.containers, Some(containers));
        assert_eq!(stored.host.as_ref().map(|h| h.hostname.as_str()), Some("a"));
        assert!(stored.disks.is_some());
        stored.merge(Report {
            seq: 3,
            full: true,
            ..Default::default()
        });
        assert_eq!(stored.host, None, "a full report replaces everything");
    }

    #[test]
    fn every_name_reads_back_and_is_the_serde_name() {
        use crate::names::assert_names_match_serde as check;
        check(&Role::ALL);
        check(&ContainerState::ALL);
        check(&ContainerHealth::ALL);
        check(&NodeEventKind::ALL);
        check(&ActionKind::ALL);
        check(&ActionState::ALL);
    }

    #[test]
    fn a_name_is_exact() {
        let e = "Compute".parse::<Role>().expect_err("names are lowercase");
        assert_eq!(
            e.to_string(),
            r#"unknown role "Compute": use controller, compute or storage"#
        );
        assert_eq!((e.field, e.value.as_str()), ("role", "Compute"));
        assert!("wait_return".parse::<ActionState>().is_err());
    }
}

#[cfg(test)]
mod json_shape {
    //! The `--json` shape is an interface for scripts: this snapshot
    //! (insta's, proto/testdata/node_detail.snap) catches a renamed or
    //! retyped field. `cargo insta review` (or INSTA_UPDATE=always) accepts
    //! a deliberate change; with CI=true a change fails and nothing is
    //! written.
    use super::*;

    fn sample() -> NodeDetail {
        NodeDetail {
            node: Node {
                name: "cmp-01".into(),
                role: Role::Compute,
                labels: [("az".to_owned(), "nova".to_owned())].into(),
                online: false,
                offline_reason: "session ended: agent closed the session".into(),
                first_seen: Timestamp::from_unix_millis(1_795_000_000_000),
                last_seen: Timestamp::from_unix_millis(1_795_421_138_123),
                agent_version: "0.1.0".into(),
                hostname: "cmp-01".into(),
                boot_id: "6f1c".into(),
                last_report_at: Some(Timestamp::from_unix_millis(1_795_421_138_000)),
                last_report_seq: 42,
                os_pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
                kernel: "6.1.0-28-amd64".into(),
                reboot_required: true,
                containers_total: 1,
                containers_unhealthy: 1,
                pending_updates: 12,
                cert_not_after: Some(Timestamp::from_unix_millis(1_797_000_000_000)),
            },
            report: Some(Report {
                seq: 42,
                collected_at: Timestamp::from_unix_millis(1_795_421_138_000),
                full: true,
                host: Some(HostFacts {
                    hostname: "cmp-01".into(),
                    os_pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
                    os_id: "debian".into(),
                    os_version_id: "12".into(),
                    kernel: "6.1.0-28-amd64".into(),
                    arch: "x86_64".into(),
                    boot_id: "6f1c".into(),
                    boot_time: Timestamp::from_unix_millis(1_795_000_000_000),
                    cpu_count: 64,
                }),
                metrics: Some(HostMetrics {
                    uptime_secs: 421_138,
                    cpu_usage_percent: 12.5,
                    load1: 1.5,
                    load5: 1.25,
                    load15: 1.0,
                    memory_total_bytes: 549_755_813_888,
                    memory_used_bytes: 214_748_364_800,
                    memory_available_bytes: 335_007_449_088,
                    swap_total_bytes: 0,
                    swap_used_bytes: 0,
                }),
                containers: Some(ContainersSection {
                    available: true,
                    error: String::new(),
                    engine: "Docker 24.0.7 (API 1.43)".into(),
                    containers: vec![Container {
                        id: "4f2a".into(),
                        name: "nova_compute".into(),
                        image: "kolla/nova-compute:2024.1".into(),
                        image_id: "sha256:9c1e".into(),
                        state: ContainerState::Running,
                        health: ContainerHealth::Unhealthy,
                        failing_streak: 3,
                        last_health_output: "connection refused".into(),
                        restart_count: 1,
                        exit_code: 0,
                        started_at: Some(Timestamp::from_unix_millis(1_795_000_100_000)),
                        finished_at: None,
                        labels: [("kolla_version".to_owned(), "18.1.0".to_owned())].into(),
                        oom_killed: false,
                    }],
                }),
                disks: Some(DisksSection {
                    filesystems: vec![Filesystem {
                        mount_point: "/".into(),
                        device: "/dev/sda1".into(),
                        fs_type: "ext4".into(),
                        total_bytes: 100 << 30,
                        used_bytes: 60 << 30,
                        available_bytes: 35 << 30,
                        inodes_total: 6_553_600,
                        inodes_used: 300_000,
                        read_only: false,
                    }],
                    error: String::new(),
                }),
                reboot: Some(RebootSection {
                    required: true,
                    reasons: vec![RebootReason {
                        source: "reboot-required-file".into(),
                        detail: "/var/run/reboot-required".into(),
                        packages: vec!["linux-image-6.1.0-29-amd64".into()],
                    }],
                    errors: vec![],
                    checked_at: Some(Timestamp::from_unix_millis(1_795_421_130_000)),
                }),
                updates: Some(UpdatesSection {
                    manager: "apt".into(),
                    checked: true,
                    count: 12,
                    security_count: 3,
                    last_check: Some(Timestamp::from_unix_millis(1_795_420_000_000)),
                    last_error: String::new(),
                    packages: vec!["openssl".into()],
                }),
                network: Some(NetworkSection {
                    interfaces: vec![NetInterface {
                        name: "eth0".into(),
                        rx_bytes: 1_000_000,
                        tx_bytes: 2_000_000,
                        rx_packets: 1_000,
                        tx_packets: 2_000,
                        rx_errors: 0,
                        tx_errors: 0,
                    }],
                }),
            }),
        }
    }

    #[test]
    fn node_detail_json_matches_its_snapshot() {
        let text = serde_json::to_string_pretty(&sample()).expect("serializes");
        // What the snapshot shows, scripts read back as it was.
        let back: NodeDetail = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, sample());
        insta::with_settings!({
            snapshot_path => "../testdata",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!("node_detail", text);
        });
    }

    #[test]
    fn a_node_stored_before_cert_expiry_was_recorded_still_loads() {
        let mut value = serde_json::to_value(sample().node).expect("serializes");
        let object = value.as_object_mut().expect("an object");
        assert!(object.remove("cert_not_after").is_some());
        let node: Node = serde_json::from_value(value).expect("an older row loads");
        assert_eq!(node.cert_not_after, None);
        assert_eq!(node.name, "cmp-01");
    }
}
