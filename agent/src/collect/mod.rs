//! What the agent knows about its node. Each source sits behind a small
//! seam: cheap ones (host, disks) are read at every report; slow or
//! event-driven ones (containers, reboot-required, pending updates) run in
//! tasks of their own and publish their latest section on a `watch`
//! channel, so nothing slow ever holds up a report.

pub mod boot_id;
pub mod command;
pub mod containers;
pub mod disks;
mod host;
pub mod os_release;
pub mod reboot;
pub mod updates;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use boot_id::{BootId, BootIdError};
pub use host::SystemCollector;
use rollcall_proto::model::{
    ContainersSection, DisksSection, HostFacts, HostMetrics, NetworkSection, RebootSection,
    UpdatesSection,
};
use tokio::sync::{Notify, watch};
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
    /// Wakes the reboot checks at once (after a patch, say).
    pub reboot_recheck: Option<Arc<Notify>>,
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
            reboot_recheck: None,
            updates: None,
        }
    }

    /// Every source the configuration enables, for the boot the agent runs
    /// in; background tasks stop with `shutdown`.
    pub fn start(cfg: &AgentConfig, boot: &BootId, shutdown: &CancellationToken) -> Self {
        let containers = cfg.containers.enabled.then(|| {
            containers::spawn(
                containers::WatcherConfig {
                    socket: cfg.containers.socket.clone(),
                    poll_interval: Duration::from_secs(cfg.containers.poll_secs.into()),
                    fallback_poll_interval: Duration::from_secs(2),
                    request_timeout: Duration::from_secs(10),
                    labels: cfg.containers.labels.clone(),
                },
                shutdown.clone(),
            )
        });
        let updates = cfg
            .updates
            .enabled
            .then(|| updates::spawn(cfg.updates.checks(), shutdown.clone()));
        let recheck = Arc::new(Notify::new());
        let reboot = Some(spawn_reboot_with(
            cfg.reboot.checks(),
            boot.error(),
            Duration::from_secs(cfg.reboot.check_interval_secs.into()),
            recheck.clone(),
            shutdown.clone(),
        ));
        Self {
            host: Box::new(SystemCollector::with_boot_id(cfg.host.clone(), boot)),
            mountinfo: Some(cfg.disks.mountinfo_path.clone()),
            containers,
            reboot,
            reboot_recheck: Some(recheck),
            updates,
        }
    }

    pub fn disks(&self) -> Option<DisksSection> {
        self.mountinfo.as_deref().map(disks::collect)
    }
}

/// Runs the reboot-required checks at once, then every `interval` and
/// whenever `recheck` is notified.
pub fn spawn_reboot(
    checks: reboot::RebootChecks,
    interval: Duration,
    recheck: Arc<Notify>,
    shutdown: CancellationToken,
) -> watch::Receiver<RebootSection> {
    spawn_reboot_with(checks, None, interval, recheck, shutdown)
}

/// [`spawn_reboot`] for an agent that may not know its boot id: then every
/// check carries that error first, since no reboot of this node can be told
/// apart from a restart of its agent.
pub fn spawn_reboot_with(
    checks: reboot::RebootChecks,
    boot_error: Option<&BootIdError>,
    interval: Duration,
    recheck: Arc<Notify>,
    shutdown: CancellationToken,
) -> watch::Receiver<RebootSection> {
    let boot_error = boot_error.map(ToString::to_string);
    let (tx, rx) = watch::channel(RebootSection::default());
    tokio::spawn(async move {
        let kernel = sysinfo::System::kernel_version().unwrap_or_default();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => false,
                () = recheck.notified() => true,
            };
            let mut section = checks.check(&kernel).await;
            section.errors.splice(0..0, boot_error.clone());
            // A changed outcome is news; so is the first check since the
            // agent started and a check asked for after a patch, even when
            // their outcome is the default: a campaign waits for a check
            // newer than its patch or boot. A routine re-check that found
            // the same is not.
            tx.send_if_modified(|current| {
                let news =
                    asked || current.checked_at.is_none() || !same_outcome(current, &section);
                *current = section;
                news
            });
        }
    });
    rx
}

/// Equal but for when they were checked.
pub fn same_outcome(a: &RebootSection, b: &RebootSection) -> bool {
    a.required == b.required && a.reasons == b.reasons && a.errors == b.errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_recheck_sees_a_new_reboot_required_file_at_once() {
        let root = std::env::temp_dir().join(format!("rollcall-recheck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("var/run")).expect("dir");
        let checks = reboot::RebootChecks {
            root: root.clone(),
            needs_restarting: false,
            sentinel: vec![],
            timeout: Duration::from_secs(5),
        };
        let recheck = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let mut rx = spawn_reboot(
            checks,
            Duration::from_secs(3_600),
            recheck.clone(),
            shutdown.clone(),
        );
        // The first check runs at once and finds nothing.
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .ok();
        assert!(!rx.borrow_and_update().required);
        // A patch ends and writes the file (as apt does); a recheck, not the hourly tick, sees it.
        std::fs::write(root.join("var/run/reboot-required"), "").expect("write");
        recheck.notify_one();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("a change within 5 s")
            .expect("open");
        assert!(rx.borrow().required);
        shutdown.cancel();
        std::fs::remove_dir_all(&root).ok();
    }

    #[tokio::test]
    async fn an_unknown_boot_id_is_an_error_in_every_reboot_check() {
        let root = std::env::temp_dir().join(format!("rollcall-noboot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("var/run")).expect("dir");
        let checks = reboot::RebootChecks {
            root: root.clone(),
            needs_restarting: false,
            sentinel: vec![],
            timeout: Duration::from_secs(5),
        };
        let boot = BootId::read(&root.join("proc/sys/kernel/random/boot_id"));
        let recheck = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let mut rx = spawn_reboot_with(
            checks,
            boot.error(),
            Duration::from_secs(3_600),
            recheck.clone(),
            shutdown.clone(),
        );
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("the first check within 5 s")
            .expect("open");
        let first = rx.borrow_and_update().clone();
        assert!(!first.required, "an error is never a reason");
        assert_eq!(first.errors.len(), 1, "{:?}", first.errors);
        assert!(
            first.errors[0].starts_with("cannot read the boot id from "),
            "{:?}",
            first.errors
        );
        // A reason found later comes with the error still first.
        std::fs::write(root.join("var/run/reboot-required"), "").expect("write");
        recheck.notify_one();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("a change within 5 s")
            .expect("open");
        let second = rx.borrow().clone();
        assert!(second.required);
        assert_eq!(second.errors, first.errors);
        shutdown.cancel();
        std::fs::remove_dir_all(&root).ok();
    }
}
