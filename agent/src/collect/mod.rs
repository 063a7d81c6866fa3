//! What the agent knows about its node. Each source sits behind a small
//! seam: cheap ones (host, disks) are read at every report; slow or
//! event-driven ones (containers, reboot-required, pending updates) run in
//! tasks of their own and publish their latest section on a `watch`
//! channel, so nothing slow ever holds up a report.

pub mod command;
pub mod containers;
pub mod disks;
mod host;
pub mod os_release;
pub mod reboot;
pub mod updates;

use std::path::PathBuf;
use std::time::Duration;

pub use host::SystemCollector;
use rollcall_proto::model::{
    ContainersSection, DisksSection, HostFacts, HostMetrics, NetworkSection, RebootSection,
    UpdatesSection,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;

/// Reads the host's facts and metrics.
pub trait Collector: Send {
    fn host(&mut self) -> (HostFacts, HostMetrics);
    /// Per-interface network totals, where the collector knows them.
    fn network(&mut self) -> Option<NetworkSection> {
        None
    }
}

/// Every source of a report.
pub struct Sources {
    pub host: Box<dyn Collector>,
    /// The mount table to read at each report; `None` skips disks.
    pub mountinfo: Option<PathBuf>,
    pub containers: Option<watch::Receiver<ContainersSection>>,
    pub reboot: Option<watch::Receiver<RebootSection>>,
    pub updates: Option<watch::Receiver<UpdatesSection>>,
}

impl Sources {
    /// Only host facts and metrics (tests, and `once` without extras).
    pub fn host_only(host: impl Collector + 'static) -> Self {
        Self {
            host: Box::new(host),
            mountinfo: None,
            containers: None,
            reboot: None,
            updates: None,
        }
    }

    /// Every source the configuration enables; background tasks stop with
    /// `shutdown`.
    pub fn start(cfg: &AgentConfig, shutdown: &CancellationToken) -> Self {
        let containers = cfg.containers.enabled.then(|| {
            containers::spawn(
                containers::WatcherConfig {
                    socket: cfg.containers.socket.clone(),
                    poll_interval: Duration::from_secs(cfg.containers.poll_secs.into()),
                    fallback_poll_interval: Duration::from_secs(2),
                    request_timeout: Duration::from_secs(10),
                },
                shutdown.clone(),
            )
        });
        let updates = cfg.updates.enabled.then(|| {
            updates::spawn(
                updates::UpdatesConfig {
                    root: cfg.updates.root.clone(),
                    interval: Duration::from_secs(cfg.updates.interval_secs.into()),
                    timeout: Duration::from_secs(cfg.updates.timeout_secs.into()),
                },
                shutdown.clone(),
            )
        });
        let checks = reboot::RebootChecks {
            root: cfg.reboot.root.clone(),
            needs_restarting: cfg.reboot.needs_restarting,
            sentinel: cfg.reboot.sentinel_command.clone(),
            timeout: Duration::from_secs(cfg.reboot.command_timeout_secs.into()),
        };
        let reboot = Some(spawn_reboot(
            checks,
            Duration::from_secs(cfg.reboot.check_interval_secs.into()),
            shutdown.clone(),
        ));
        Self {
            host: Box::new(SystemCollector::new(cfg.host.clone())),
            mountinfo: Some(cfg.disks.mountinfo_path.clone()),
            containers,
            reboot,
            updates,
        }
    }

    pub fn disks(&self) -> Option<DisksSection> {
        self.mountinfo.as_deref().map(disks::collect)
    }
}

/// Runs the reboot-required checks at once and then every `interval`.
pub fn spawn_reboot(
    checks: reboot::RebootChecks,
    interval: Duration,
    shutdown: CancellationToken,
) -> watch::Receiver<RebootSection> {
    let (tx, rx) = watch::channel(RebootSection::default());
    tokio::spawn(async move {
        let kernel = sysinfo::System::kernel_version().unwrap_or_default();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let section = checks.check(&kernel).await;
            // Only a changed outcome is news; the check time alone is not.
            tx.send_if_modified(|current| {
                let changed = !same_outcome(current, &section);
                *current = section;
                changed
            });
        }
    });
    rx
}

/// Equal but for when they were checked.
pub fn same_outcome(a: &RebootSection, b: &RebootSection) -> bool {
    a.required == b.required && a.reasons == b.reasons && a.errors == b.errors
}
