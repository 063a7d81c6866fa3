//! `rollcall-agent once`: one full local report, every source read once
//! (the pending-updates check included, which may take a while); no server.

use std::time::Duration;

use rollcall_proto::model::Report;
use rollcall_proto::timestamp::Timestamp;

use crate::collect::boot_id::BootId;
use crate::collect::{Collector, SystemCollector, containers, disks, updates};
use crate::config::AgentConfig;

/// The report, for a configuration that passed
/// [`AgentConfig::validate_sources`].
pub async fn report(cfg: &AgentConfig) -> Report {
    let boot = BootId::read(&cfg.host.boot_id_path);
    let mut collector = SystemCollector::with_boot_id(cfg.host.clone(), &boot);
    // CPU usage is a difference between two samples.
    tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(200))).await;
    let (host, metrics) = collector.host();
    let containers = match cfg.containers.enabled {
        true => Some(containers::snapshot(&cfg.containers.socket, &cfg.containers.labels).await),
        false => None,
    };
    let updates = match cfg.updates.enabled {
        true => Some(updates::snapshot(&cfg.updates.checks()).await),
        false => None,
    };
    let mut reboot = cfg.reboot.checks().check(&host.kernel).await;
    // As the running agent reports it: the boot id's error first.
    reboot
        .errors
        .splice(0..0, boot.error().map(ToString::to_string));
    Report {
        seq: 1,
        collected_at: Timestamp::now(),
        full: true,
        reboot: Some(reboot),
        network: collector.network(),
        disks: Some(disks::collect(&cfg.disks.mountinfo_path)),
        host: Some(host),
        metrics: Some(metrics),
        containers,
        updates,
    }
}
