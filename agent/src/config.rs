//! `agent.toml`: every key, its default and its check. The shipped example
//! (packaging/agent.toml) is kept in step with this file by a test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_proto::model::Role;
use serde::{Deserialize, Deserializer};

/// Where `run` looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/rollcall/agent.toml";

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// URLs of rollcall-server: one, or each replica's (the agent finds
    /// the leader among them). TOML takes a string or a list of strings.
    #[serde(deserialize_with = "one_or_many")]
    pub server: Vec<String>,
    /// This node's role; campaigns treat each role differently.
    pub role: Option<Role>,
    /// Free-form labels campaigns can select on (e.g. availability zone).
    pub labels: BTreeMap<String, String>,
    pub tls: TlsConfig,
    pub report: ReportConfig,
    pub reconnect: ReconnectConfig,
    pub host: HostConfig,
    pub containers: ContainersConfig,
    pub disks: DisksConfig,
    pub reboot: RebootConfig,
    pub updates: UpdatesConfig,
    pub actions: ActionsConfig,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The rollcall CA certificate.
    pub ca: PathBuf,
    /// This node's agent certificate; the node's name is the name in it.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Report interval until the server says otherwise in its Welcome.
    pub interval_secs: u32,
    /// Every this many intervals the report carries every section, changed
    /// or not; in between only what changed.
    pub full_every: u32,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ContainersConfig {
    pub enabled: bool,
    /// The engine's API socket (Docker, or Podman's Docker-compatible one).
    pub socket: String,
    /// Full re-list even while the event stream works.
    pub poll_secs: u32,
    /// Only containers with every one of these labels (`key` or
    /// `key=value`); empty: every container of the engine.
    pub labels: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DisksConfig {
    /// Where the mount table is read.
    pub mountinfo_path: PathBuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RebootConfig {
    /// Prefix of the files the checks read (/var/run/reboot-required, /lib/modules).
    pub root: PathBuf,
    /// Run `needs-restarting -r` where it is installed.
    pub needs_restarting: bool,
    /// A command (argv, no shell) whose exit status 0 means "reboot required"; empty: none.
    pub sentinel_command: Vec<String>,
    pub check_interval_secs: u32,
    pub command_timeout_secs: u32,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsConfig {
    /// Where actions are kept until the server acknowledged their results.
    pub state_dir: PathBuf,
    /// The patch command (argv, no shell). Empty: the default for the node's
    /// package manager (apt-get -y --with-new-pkgs upgrade keeping local
    /// config files, or dnf -y upgrade).
    pub patch_command: Vec<String>,
    /// The reboot command (argv). Empty: the agent refuses reboots.
    pub reboot_command: Vec<String>,
    /// Seconds an action may run when the server names no timeout.
    pub default_timeout_secs: u32,
    /// Named hooks: name → argv; the server's arguments are appended.
    pub hooks: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpdatesConfig {
    pub enabled: bool,
    /// Prefix of the paths where apt-get or dnf are looked for.
    pub root: PathBuf,
    pub interval_secs: u32,
    pub timeout_secs: u32,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// First retry delay cap; each failure doubles it up to the maximum.
    pub initial_backoff_ms: u64,
    pub max_backoff_secs: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Changes at every boot; the server tells reboots apart by it. Read
    /// once at start (see `collect::boot_id`).
    pub boot_id_path: PathBuf,
    /// OS name and version.
    pub os_release_path: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            server: vec!["https://localhost:7443".into()],
            role: None,
            labels: BTreeMap::new(),
            tls: TlsConfig::default(),
            report: ReportConfig::default(),
            reconnect: ReconnectConfig::default(),
            host: HostConfig::default(),
            containers: ContainersConfig::default(),
            disks: DisksConfig::default(),
            reboot: RebootConfig::default(),
            updates: UpdatesConfig::default(),
            actions: ActionsConfig::default(),
        }
    }
}

impl Default for ActionsConfig {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/rollcall-agent/actions".into(),
            patch_command: Vec::new(),
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            default_timeout_secs: 3_600,
            hooks: BTreeMap::new(),
        }
    }
}

impl ActionsConfig {
    /// The definitions the agent runs from: the configured commands, with
    /// the package manager's default patch command filled in.
    pub fn definitions(&self, updates_root: &Path) -> crate::actions::Definitions {
        let mut patch = self.patch_command.clone();
        let mut patch_env = Vec::new();
        if patch.is_empty() {
            if updates_root.join("usr/bin/apt-get").exists() {
                patch = [
                    "apt-get",
                    "-y",
                    "-o",
                    "Dpkg::Options::=--force-confdef",
                    "-o",
                    "Dpkg::Options::=--force-confold",
                    "upgrade",
                ]
                .map(String::from)
                .to_vec();
                patch_env.push(("DEBIAN_FRONTEND".to_owned(), "noninteractive".to_owned()));
            } else if updates_root.join("usr/bin/dnf").exists() {
                patch = ["dnf", "-y", "upgrade"].map(String::from).to_vec();
            }
        }
        crate::actions::Definitions {
            patch,
            reboot: self.reboot_command.clone(),
            hooks: self.hooks.clone(),
            patch_env,
        }
    }
}

impl RebootConfig {
    /// The checks this section configures.
    pub fn checks(&self) -> crate::collect::reboot::RebootChecks {
        crate::collect::reboot::RebootChecks {
            root: self.root.clone(),
            needs_restarting: self.needs_restarting,
            sentinel: self.sentinel_command.clone(),
            timeout: Duration::from_secs(self.command_timeout_secs.into()),
        }
    }
}

impl UpdatesConfig {
    /// The pending-updates check this section configures.
    pub fn checks(&self) -> crate::collect::updates::UpdatesConfig {
        crate::collect::updates::UpdatesConfig {
            root: self.root.clone(),
            interval: Duration::from_secs(self.interval_secs.into()),
            timeout: Duration::from_secs(self.timeout_secs.into()),
        }
    }
}

impl Default for ContainersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: "/var/run/docker.sock".into(),
            poll_secs: 30,
            labels: Vec::new(),
        }
    }
}

impl Default for DisksConfig {
    fn default() -> Self {
        Self {
            mountinfo_path: "/proc/self/mountinfo".into(),
        }
    }
}

impl Default for RebootConfig {
    fn default() -> Self {
        Self {
            root: "/".into(),
            needs_restarting: true,
            sentinel_command: Vec::new(),
            check_interval_secs: 60,
            command_timeout_secs: 60,
        }
    }
}

impl Default for UpdatesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            root: "/".into(),
            interval_secs: 3_600,
            timeout_secs: 300,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca: "/etc/rollcall/agent/ca.crt".into(),
            cert: "/etc/rollcall/agent/agent.crt".into(),
            key: "/etc/rollcall/agent/agent.key".into(),
        }
    }
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            interval_secs: 10,
            full_every: 30,
        }
    }
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 500,
            max_backoff_secs: 60,
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            boot_id_path: "/proc/sys/kernel/random/boot_id".into(),
            os_release_path: "/etc/os-release".into(),
        }
    }
}

pub use rollcall_proto::diag::ConfigError;

impl AgentConfig {
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
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.role.is_none() {
            return bad(
                "no role: set role = \"controller\", \"compute\" or \"storage\" or pass --role"
                    .into(),
            );
        }
        rollcall_proto::servers::normalize_list(&self.server)
            .map_err(|e| ConfigError::Invalid(format!("server: {e}")))?;
        if self.reconnect.initial_backoff_ms == 0 || self.reconnect.max_backoff_secs == 0 {
            return bad(
                "reconnect.initial_backoff_ms and max_backoff_secs must be at least 1".into(),
            );
        }
        if self.reconnect.initial_backoff_ms > self.reconnect.max_backoff_secs * 1_000 {
            return bad("reconnect.initial_backoff_ms must not exceed max_backoff_secs".into());
        }
        if let Some((k, _)) = self
            .labels
            .iter()
            .find(|(k, v)| k.is_empty() || k.len() > 256 || v.len() > 256)
        {
            return bad(format!(
                "label {k:?}: keys must be 1 to 256 bytes and values at most 256"
            ));
        }
        self.validate_sources()?;
        if self.report.interval_secs == 0 || self.report.interval_secs > 3_600 {
            return bad("report.interval_secs must be between 1 and 3600".into());
        }
        if self.report.full_every == 0 {
            return bad("report.full_every must be at least 1".into());
        }
        // What the files named here must be; checked here so that both are
        // configuration errors (exit 2), not failures once running.
        rollcall_proto::files::check_private_key(&self.tls.key)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        rollcall_proto::files::check_dir("actions.state_dir", &self.actions.state_dir)
            .map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The checks of what the collectors need (all `once` needs).
    pub fn validate_sources(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.containers.enabled && self.containers.socket.is_empty() {
            return bad(
                "containers.socket is empty: set the engine socket or containers.enabled = false"
                    .into(),
            );
        }
        if self.containers.poll_secs == 0
            || self.reboot.check_interval_secs == 0
            || self.reboot.command_timeout_secs == 0
        {
            return bad("containers.poll_secs, reboot.check_interval_secs and reboot.command_timeout_secs must be at least 1".into());
        }
        if self.updates.interval_secs < 60 || self.updates.timeout_secs == 0 {
            return bad(
                "updates.interval_secs must be at least 60 and updates.timeout_secs at least 1"
                    .into(),
            );
        }
        if self
            .reboot
            .sentinel_command
            .first()
            .is_some_and(|p| p.is_empty())
        {
            return bad("reboot.sentinel_command: the program name is empty".into());
        }
        Ok(())
    }

    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.report.interval_secs.into())
    }
}

/// `server = "https://ctl1:7443"` as configs have always written it, or
/// `server = ["https://ctl1:7443", "https://ctl2:7443"]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Urls;
    impl<'de> serde::de::Visitor<'de> for Urls {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a URL or a list of URLs")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut urls = Vec::new();
            while let Some(url) = seq.next_element()? {
                urls.push(url);
            }
            Ok(urls)
        }
    }
    d.deserialize_any(Urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_parses_and_matches_the_defaults() {
        let text = include_str!("../../packaging/agent.toml");
        let parsed = AgentConfig::parse(text).expect("packaging/agent.toml parses");
        let expected = AgentConfig {
            server: vec!["https://rollcall.example.org:7443".into()],
            role: Some(Role::Compute),
            labels: [("az".to_owned(), "nova".to_owned())].into(),
            actions: ActionsConfig {
                hooks: [(
                    "log".to_owned(),
                    vec![
                        "/usr/share/rollcall/hooks/log-hook.sh".to_owned(),
                        "log".to_owned(),
                    ],
                )]
                .into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            parsed, expected,
            "packaging/agent.toml drifted from the defaults in config.rs"
        );
        parsed.validate().expect("example validates");
    }

    #[test]
    fn every_key_of_the_example_is_documented() {
        let text = include_str!("../../packaging/agent.toml");
        assert_eq!(
            rollcall_proto::diag::undocumented_keys(text),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_key_open_to_others_and_a_state_dir_that_is_a_file_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rollcall-agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = dir.join("agent.key");
        std::fs::write(&key, "k").expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let mut cfg = AgentConfig {
            role: Some(Role::Compute),
            ..Default::default()
        };
        cfg.tls.key = key.clone();
        cfg.actions.state_dir = dir.clone();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains(&format!("chmod 600 {}", key.display())),
            "{err}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        cfg.validate().expect("0600 key and a directory pass");
        cfg.actions.state_dir = key.clone();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("actions.state_dir"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn server_is_one_url_or_a_list_and_each_entry_is_checked() {
        let parse = |text: &str| AgentConfig::parse(&format!("role = \"compute\"\n{text}\n"));
        let one = parse("server = \"https://ctl1:7443\"").expect("one");
        assert_eq!(one.server, ["https://ctl1:7443"]);
        let two = parse("server = [\"https://ctl1:7443\", \"https://ctl2:7443\"]").expect("two");
        assert_eq!(two.server, ["https://ctl1:7443", "https://ctl2:7443"]);
        let err = parse("server = 7443").expect_err("a number");
        assert!(err.contains("a URL or a list of URLs"), "{err}");
        let err = parse("server = [\"https://ctl1:7443\", 2]").expect_err("a number in the list");
        assert!(!err.contains('\n') && err.contains("server"), "{err}");
        for (text, needle) in [
            ("server = []", "server: no server URL given"),
            (
                "server = [\"https://ctl1:7443\", \"http://ctl2:7443\"]",
                "server: server URL \"http://ctl2:7443\": rollcall-server speaks only https",
            ),
            (
                "server = [\"https://ctl1:7443\", \"https://ctl1:7443\"]",
                "\"https://ctl1:7443\" is given twice",
            ),
            (
                "server = [\"https://ctl1:7443\", \"\"]",
                "a server URL is empty",
            ),
        ] {
            let cfg = parse(text).expect(text);
            let err = cfg.validate().expect_err(text).to_string();
            assert!(err.contains(needle) && !err.contains('\n'), "{text}: {err}");
        }
        let many = (0..17)
            .map(|i| format!("\"https://ctl{i}:7443\""))
            .collect::<Vec<_>>()
            .join(", ");
        let err = parse(&format!("server = [{many}]"))
            .expect("17 parse")
            .validate()
            .expect_err("17")
            .to_string();
        assert!(err.contains("at most 16"), "{err}");
    }

    #[test]
    fn errors_are_one_line_and_name_the_problem() {
        let err = AgentConfig::parse("role = \"kitchen\"\n").unwrap_err();
        assert!(!err.contains('\n') && err.contains("kitchen"), "{err}");
        let err = AgentConfig::parse("[report]\ninterval = 5\n").unwrap_err();
        assert!(!err.contains('\n') && err.contains("interval"), "{err}");
        let err = AgentConfig::default().validate().unwrap_err().to_string();
        assert!(err.contains("no role"), "{err}");
    }
}
