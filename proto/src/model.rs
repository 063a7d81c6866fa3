//! Domain types. Both binaries think in these; the generated [`crate::v1`]
//! types stay at the gRPC edge. Their serde form is the stable `--json`
//! output and the store's encoding, so renaming a field is a breaking change.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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

impl Role {
    pub const ALL: [Role; 3] = [Role::Controller, Role::Compute, Role::Storage];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Compute => "compute",
            Role::Storage => "storage",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: use controller, compute or storage"))
    }
}

/// One report from a node's agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub seq: u64,
    pub collected_at: Timestamp,
    pub host: HostFacts,
    pub metrics: HostMetrics,
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
}

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
    fn role_round_trips_through_text() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("Compute".parse::<Role>().is_err());
    }
}

#[cfg(test)]
mod json_shape {
    //! The `--json` shape is an interface for scripts: this golden file
    //! catches a renamed or retyped field. UPDATE_SNAPSHOTS=1 accepts a
    //! deliberate change.
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
            },
            report: Some(Report {
                seq: 42,
                collected_at: Timestamp::from_unix_millis(1_795_421_138_000),
                host: HostFacts {
                    hostname: "cmp-01".into(),
                    os_pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
                    os_id: "debian".into(),
                    os_version_id: "12".into(),
                    kernel: "6.1.0-28-amd64".into(),
                    arch: "x86_64".into(),
                    boot_id: "6f1c".into(),
                    boot_time: Timestamp::from_unix_millis(1_795_000_000_000),
                    cpu_count: 64,
                },
                metrics: HostMetrics {
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
                },
            }),
        }
    }

    #[test]
    fn node_detail_json_matches_the_golden_file() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/node_detail.json");
        let text = serde_json::to_string_pretty(&sample()).expect("serializes") + "\n";
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(path, &text).expect("write golden file");
        }
        let golden = std::fs::read_to_string(path)
            .expect("golden file exists (UPDATE_SNAPSHOTS=1 makes it)");
        assert_eq!(text, golden, "the --json shape changed");
        let back: NodeDetail = serde_json::from_str(&golden).expect("golden file parses");
        assert_eq!(back, sample());
    }
}
