//! `server.toml`: every key, its default and its check. The shipped example
//! (packaging/server.toml) is kept in step with this file by a test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where `serve` looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/rollcall/server.toml";

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Directory of the SQLite database (`rollcall.db`).
    pub data_dir: PathBuf,
    pub tls: TlsConfig,
    pub agents: AgentsConfig,
    pub limits: LimitsConfig,
    pub store: StoreConfig,
    pub replica: ReplicaConfig,
    pub campaigns: CampaignsConfig,
    pub metrics: MetricsConfig,
    /// Webhooks told of campaign events (`[[notify]]`, any number).
    #[serde(rename = "notify")]
    pub notify: Vec<NotifyConfig>,
}

/// One webhook (`[[notify]]`): a JSON body POSTed for each event it takes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Where to POST (http or https). Never logged beyond its host: a
    /// Slack-style URL carries its secret in the path.
    pub url: String,
    /// The events it takes (`campaign_started`, …); every event when empty.
    #[serde(default)]
    pub events: Vec<String>,
    /// Adds a Slack-compatible `text` field (one line for people).
    #[serde(default)]
    pub slack: bool,
    /// One delivery try, from connect to the answer.
    #[serde(default = "NotifyConfig::default_timeout_secs")]
    pub timeout_secs: u32,
    /// How long an event is tried again (backoff from 1 s to 60 s) before
    /// it is given up, with a warning.
    #[serde(default = "NotifyConfig::default_retry_secs")]
    pub retry_secs: u32,
    /// Events waiting for delivery; past it the oldest is dropped (counted
    /// in the next body's `dropped`).
    #[serde(default = "NotifyConfig::default_queue")]
    pub queue: usize,
    /// Trust roots for an https URL (PEM); the system's when unset.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

impl NotifyConfig {
    fn default_timeout_secs() -> u32 {
        5
    }
    fn default_retry_secs() -> u32 {
        600
    }
    fn default_queue() -> usize {
        1_000
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignsConfig {
    /// The scheduler looks at every running campaign this often; an action
    /// result or a node coming back starts a look at once.
    pub tick_ms: u64,
}

impl Default for CampaignsConfig {
    fn default() -> Self {
        Self { tick_ms: 500 }
    }
}

/// `[metrics]`: the Prometheus `/metrics` listener (see `metrics/`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Address of the metrics listener: plain HTTP, loopback by default.
    pub listen: SocketAddr,
    /// Serve HTTPS with the server's own certificate and key (`[tls]`),
    /// without asking the scraper for a certificate.
    pub tls: bool,
    /// Per-node series are written only while the fleet has at most this
    /// many nodes (0: never): past it a scrape would grow with the fleet.
    pub per_node_max_nodes: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9743)),
            tls: false,
            per_node_max_nodes: 500,
        }
    }
}

/// The most nodes `[metrics] per_node_max_nodes` may allow: six series a
/// node past that is a scrape of megabytes.
pub const MAX_PER_NODE_NODES: usize = 100_000;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The CA that signs agent and operator certificates.
    pub ca: Option<PathBuf>,
    /// The server's certificate and key.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The CA's private key. Only with it does the server sign the
    /// certificates agents ask for when they renew their own; without it
    /// every renewal is refused (and agents say so in their logs).
    pub ca_key: Option<PathBuf>,
    /// How long a certificate the server signs for a renewing agent is
    /// valid, in days.
    pub agent_cert_days: u32,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca: None,
            cert: None,
            key: None,
            ca_key: None,
            agent_cert_days: crate::pki::AGENT_DAYS,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// How often agents send a full report; sent to each agent on connect.
    pub report_interval_secs: u32,
    /// A node whose agent missed this many report intervals is offline even
    /// if its connection is still open.
    pub offline_after_missed_reports: u32,
    /// How long a new session may take to send its Hello.
    pub hello_timeout_secs: u32,
    /// A session's rate limit: messages (reports and action updates) a
    /// second, sustained. An agent sends one report an interval plus one
    /// per change; what goes over is dropped and counted.
    pub messages_per_sec: u32,
    /// Messages a session may send at once above the sustained rate.
    pub message_burst: u32,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest gRPC message the server accepts; a larger one ends only the
    /// stream that sent it.
    pub max_message_bytes: usize,
    /// A client that has not finished its TLS handshake by then is dropped.
    /// Short, because a socket in its handshake holds a slot of
    /// `max_handshakes` and of `max_handshakes_per_source`.
    pub handshake_timeout_secs: u32,
    /// TLS handshakes in progress at once; a socket beyond it is closed at
    /// once (its client retries) rather than queued behind silent ones.
    pub max_handshakes: usize,
    /// Handshakes in progress at once from one source address (an IPv6
    /// /64 counts as one), so one host's idle sockets cannot take every
    /// handshake slot.
    pub max_handshakes_per_source: usize,
    /// HTTP/2 pings find dead peers whose TCP connection never closed.
    pub keepalive_interval_secs: u32,
    pub keepalive_timeout_secs: u32,
    /// Established connections (TLS handshake finished) beyond this many
    /// are refused until others close. Handshakes in progress do not count.
    pub max_connections: usize,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Node changes are written in one transaction per interval, so the
    /// database sees a few commits a second however many agents report.
    pub flush_interval_ms: u64,
    /// `postgres://USER[:PASSWORD]@HOST[:PORT][,HOST2…]/DB[?sslmode=…]`:
    /// the fleet's state in PostgreSQL, shared by every replica, one of
    /// which leads. Unset: SQLite in `data_dir`, one server.
    pub url: Option<String>,
    /// PostgreSQL's CA (PEM): its certificate is verified against this
    /// (the system's roots when unset) whenever TLS is used.
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for PostgreSQL's `cert`
    /// authentication; optional, both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[replica]`: how replicas on one PostgreSQL agree on their leader.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaConfig {
    /// The URL agents and operators reach this replica by
    /// (`https://ctl1.example.org:7443`); followers name the leader's in
    /// their answers. Required with `[store] url`.
    pub advertise: Option<String>,
    /// How long a leader's lease lasts without renewal: a leader that
    /// cannot renew stops acting before it ends, and a follower takes over
    /// after it. Failover takes about this long.
    pub lease_ms: u64,
    /// How often a follower looks whether the lease has ended.
    pub poll_ms: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            advertise: None,
            lease_ms: 10_000,
            poll_ms: 1_000,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            data_dir: PathBuf::from("/var/lib/rollcall"),
            tls: TlsConfig::default(),
            agents: AgentsConfig::default(),
            limits: LimitsConfig::default(),
            store: StoreConfig::default(),
            replica: ReplicaConfig::default(),
            campaigns: CampaignsConfig::default(),
            metrics: MetricsConfig::default(),
            notify: Vec::new(),
        }
    }
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            report_interval_secs: 10,
            offline_after_missed_reports: 3,
            hello_timeout_secs: 10,
            messages_per_sec: 5,
            message_burst: 50,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            handshake_timeout_secs: 5,
            max_handshakes: 128,
            max_handshakes_per_source: 16,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 20,
            max_connections: 20_000,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: 1_000,
            url: None,
            ca: None,
            cert: None,
            key: None,
        }
    }
}

pub use rollcall_proto::diag::ConfigError;

impl ServerConfig {
    /// `[store] url` and `[replica]`: a PostgreSQL URL that parses (never
    /// echoed: it may hold a password), TLS files in pairs, an advertised
    /// URL for followers to name, and a lease a follower can wait out.
    fn check_replica(&self) -> Result<(), String> {
        if self.store.cert.is_some() != self.store.key.is_some() {
            return Err("store.cert and store.key go together: set both or neither".into());
        }
        if !(2_000..=120_000).contains(&self.replica.lease_ms) {
            return Err("replica.lease_ms must be between 2000 and 120000".into());
        }
        if !(100..=self.replica.lease_ms / 2).contains(&self.replica.poll_ms) {
            return Err("replica.poll_ms must be between 100 and half of replica.lease_ms".into());
        }
        let Some(url) = &self.store.url else {
            return Ok(());
        };
        crate::store::pg::check_url(url).map_err(|e| format!("store.url: {e}"))?;
        let Some(advertise) = &self.replica.advertise else {
            return Err("replica.advertise is missing: with [store] url, set the URL agents and operators reach this replica by, e.g. https://ctl1.example.org:7443".into());
        };
        if !advertise.starts_with("https://") || advertise.len() <= "https://".len() {
            return Err(format!(
                "replica.advertise must be an https URL, e.g. https://ctl1.example.org:7443 (got {})",
                rollcall_proto::text::for_terminal(advertise)
            ));
        }
        Ok(())
    }

    /// The store is PostgreSQL: replicas, one of which leads.
    pub fn replicated(&self) -> bool {
        self.store.url.is_some()
    }
}

impl ServerConfig {
    /// Reads and parses a config file (checked by [`Self::validate`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Ok(rollcall_proto::diag::load_toml(path)?)
    }

    /// Parses TOML text; the error is one line.
    pub fn parse(text: &str) -> Result<Self, String> {
        rollcall_proto::diag::parse_toml(text)
    }

    /// Checks what serde cannot; call after command-line overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.agents.report_interval_secs == 0 || self.agents.report_interval_secs > 3_600 {
            return bad("agents.report_interval_secs must be between 1 and 3600");
        }
        if self.agents.offline_after_missed_reports == 0 {
            return bad("agents.offline_after_missed_reports must be at least 1");
        }
        if self.agents.hello_timeout_secs == 0 {
            return bad("agents.hello_timeout_secs must be at least 1");
        }
        if self.agents.messages_per_sec == 0 || self.agents.message_burst == 0 {
            return bad("agents.messages_per_sec and agents.message_burst must be at least 1");
        }
        if self.limits.max_message_bytes < 16 * 1024 {
            return bad("limits.max_message_bytes must be at least 16384");
        }
        if self.limits.handshake_timeout_secs == 0 {
            return bad("limits.handshake_timeout_secs must be at least 1");
        }
        if self.limits.handshake_timeout_secs > 300 {
            return bad("limits.handshake_timeout_secs must be at most 300");
        }
        if self.limits.max_handshakes == 0 || self.limits.max_handshakes_per_source == 0 {
            return bad("limits.max_handshakes and max_handshakes_per_source must be at least 1");
        }
        if self.limits.max_handshakes_per_source > self.limits.max_handshakes {
            return bad("limits.max_handshakes_per_source must not exceed max_handshakes");
        }
        if self.limits.keepalive_interval_secs == 0 || self.limits.keepalive_timeout_secs == 0 {
            return bad(
                "limits.keepalive_interval_secs and keepalive_timeout_secs must be at least 1",
            );
        }
        if self.limits.max_connections == 0 {
            return bad("limits.max_connections must be at least 1");
        }
        // A data_dir that is a file would fail later as "File exists (os
        // error 17)", a runtime error; it is a configuration error.
        rollcall_proto::files::check_dir("data_dir", &self.data_dir)
            .map_err(ConfigError::Invalid)?;
        if !(10..=60_000).contains(&self.store.flush_interval_ms) {
            return bad("store.flush_interval_ms must be between 10 and 60000");
        }
        self.check_replica().map_err(ConfigError::Invalid)?;
        if !(1..=3_650).contains(&self.tls.agent_cert_days) {
            return bad("tls.agent_cert_days must be between 1 and 3650");
        }
        if !(10..=60_000).contains(&self.campaigns.tick_ms) {
            return bad("campaigns.tick_ms must be between 10 and 60000");
        }
        for (i, n) in self.notify.iter().enumerate() {
            crate::notify::check(n)
                .map_err(|e| ConfigError::Invalid(format!("notify[{i}]: {e}")))?;
        }
        if self.metrics.per_node_max_nodes > MAX_PER_NODE_NODES {
            return Err(ConfigError::Invalid(format!(
                "metrics.per_node_max_nodes must be at most {MAX_PER_NODE_NODES}"
            )));
        }
        // Port 0 is a free port each: two of them never collide.
        if self.metrics.enabled
            && self.metrics.listen.port() != 0
            && self.metrics.listen == self.listen
        {
            return bad("metrics.listen must differ from listen");
        }
        let missing: Vec<&str> = [
            ("ca", &self.tls.ca),
            ("cert", &self.tls.cert),
            ("key", &self.tls.key),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
        if !missing.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "missing TLS {}: set [tls] in the config or pass --ca, --cert and --key",
                missing.join(", ")
            )));
        }
        Ok(())
    }

    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.agents.report_interval_secs.into())
    }

    /// After this long without a report an online node turns offline.
    pub fn offline_after(&self) -> Duration {
        self.report_interval() * self.agents.offline_after_missed_reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_parses_and_matches_the_defaults() {
        let text = include_str!("../../packaging/server.toml");
        let parsed = ServerConfig::parse(text).expect("packaging/server.toml parses");
        let expected = ServerConfig {
            tls: TlsConfig {
                ca: Some("/etc/rollcall/pki/ca.crt".into()),
                cert: Some("/etc/rollcall/pki/server.crt".into()),
                key: Some("/etc/rollcall/pki/server.key".into()),
                ca_key: Some("/etc/rollcall/pki/ca.key".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            parsed, expected,
            "packaging/server.toml drifted from the defaults in config.rs"
        );
        parsed.validate().expect("example validates");
    }

    #[test]
    fn the_examples_commented_webhook_parses_as_documented() {
        let text = include_str!("../../packaging/server.toml");
        let block: String = text
            .lines()
            .skip_while(|l| *l != "# [[notify]]")
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed = ServerConfig::parse(&block).expect("the commented [[notify]] parses");
        let webhook = &parsed.notify[0];
        assert_eq!(webhook.events.len(), crate::notify::Kind::ALL.len());
        assert!(webhook.slack);
        let defaults = ServerConfig::parse(&format!("[[notify]]\nurl = {:?}\n", webhook.url))
            .expect("url alone");
        assert_eq!(
            (webhook.timeout_secs, webhook.retry_secs, webhook.queue),
            (
                defaults.notify[0].timeout_secs,
                defaults.notify[0].retry_secs,
                defaults.notify[0].queue
            ),
            "the example's values are the defaults"
        );
        crate::notify::check(webhook).expect("valid");
    }

    #[test]
    fn every_key_of_the_example_is_documented() {
        let text = include_str!("../../packaging/server.toml");
        assert_eq!(
            rollcall_proto::diag::undocumented_keys(text),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unknown_keys_are_one_clear_line() {
        let err = ServerConfig::parse("listen = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn handshake_limits_are_checked() {
        let mut c = ServerConfig::default();
        c.tls.ca = Some("ca".into());
        c.tls.cert = Some("c".into());
        c.tls.key = Some("k".into());
        c.data_dir = std::env::temp_dir();
        c.validate().expect("defaults validate");
        c.limits.max_handshakes_per_source = c.limits.max_handshakes + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("max_handshakes_per_source"), "{err}");
        c.limits.max_handshakes_per_source = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_a_config_error() {
        let file = std::env::temp_dir().join(format!("rollcall-cfg-file-{}", std::process::id()));
        std::fs::write(&file, "").expect("write");
        let mut c = ServerConfig {
            data_dir: file.clone(),
            ..Default::default()
        };
        c.tls.ca = Some("ca".into());
        c.tls.cert = Some("c".into());
        c.tls.key = Some("k".into());
        let err = c.validate().unwrap_err().to_string();
        std::fs::remove_file(&file).ok();
        assert!(
            err.contains(&format!("data_dir {} is a file", file.display())),
            "{err}"
        );
    }

    #[test]
    fn metrics_limits_are_checked() {
        let mut c = ServerConfig::default();
        c.tls.ca = Some("ca".into());
        c.tls.cert = Some("c".into());
        c.tls.key = Some("k".into());
        c.data_dir = std::env::temp_dir();
        c.metrics.per_node_max_nodes = MAX_PER_NODE_NODES + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("metrics.per_node_max_nodes"), "{err}");
        c.metrics.per_node_max_nodes = 0;
        c.metrics.listen = c.listen;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("metrics.listen"), "{err}");
        c.metrics.enabled = false;
        c.validate()
            .expect("a disabled listener may name any address");
        c.metrics.enabled = true;
        c.listen = "127.0.0.1:0".parse().expect("addr");
        c.metrics.listen = c.listen;
        c.validate().expect("port 0 twice is two free ports");
    }

    #[test]
    fn missing_tls_is_named() {
        let err = ServerConfig::default().validate().unwrap_err().to_string();
        assert!(err.contains("missing TLS ca, cert, key"), "{err}");
    }
}
