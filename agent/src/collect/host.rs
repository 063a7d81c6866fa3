//! Host facts and metrics through sysinfo and a few files.

use std::path::Path;

use rollcall_proto::model::{HostFacts, HostMetrics, NetInterface, NetworkSection};
use rollcall_proto::timestamp::Timestamp;
use sysinfo::{CpuRefreshKind, Networks, System};

use super::boot_id::BootId;
use super::{Collector, os_release};
use crate::config::HostConfig;

/// The real host, read through sysinfo and `/proc`.
pub struct SystemCollector {
    sys: Option<System>,
    networks: Option<Networks>,
    paths: HostConfig,
    /// Read once: it cannot change while the agent runs. Empty when it
    /// could not be read (the reboot section says why).
    boot_id: String,
    warned: bool,
}

impl SystemCollector {
    /// Reads the boot id from `paths.boot_id_path` itself.
    pub fn new(paths: HostConfig) -> Self {
        let boot = BootId::read(&paths.boot_id_path);
        Self::with_boot_id(paths, &boot)
    }

    /// With the boot id the agent already read.
    pub fn with_boot_id(paths: HostConfig, boot: &BootId) -> Self {
        let sys = match System::new() {
            Ok(mut sys) => {
                sys.refresh_cpu_list(CpuRefreshKind::nothing());
                // The first usage sample needs a baseline.
                sys.refresh_cpu_usage();
                Some(sys)
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read system metrics; reporting facts only.");
                None
            }
        };
        Self {
            sys,
            networks: Networks::new_with_refreshed_list().ok(),
            paths,
            boot_id: boot.wire().to_owned(),
            warned: false,
        }
    }

    fn read_trimmed(&mut self, path: &Path) -> String {
        match std::fs::read_to_string(path) {
            Ok(text) => text.trim().to_owned(),
            Err(e) => {
                if !self.warned {
                    tracing::warn!(path = %path.display(), error = %e, "Cannot read host file.");
                    self.warned = true;
                }
                String::new()
            }
        }
    }
}

impl Collector for SystemCollector {
    fn host(&mut self) -> (HostFacts, HostMetrics) {
        let os = os_release::parse(&self.read_trimmed(&self.paths.os_release_path.clone()));
        let field = |k: &str| os.get(k).cloned().unwrap_or_default();
        let boot_time = System::boot_time().unwrap_or(0);
        let mut facts = HostFacts {
            hostname: System::host_name().unwrap_or_default(),
            os_pretty_name: field("PRETTY_NAME"),
            os_id: field("ID"),
            os_version_id: field("VERSION_ID"),
            kernel: System::kernel_version().unwrap_or_default(),
            arch: System::cpu_arch(),
            boot_id: self.boot_id.clone(),
            boot_time: Timestamp::from_unix_millis(i64::try_from(boot_time).unwrap_or(0) * 1_000),
            cpu_count: 0,
        };
        let load = System::load_average().ok();
        let mut metrics = HostMetrics {
            uptime_secs: System::uptime().unwrap_or(0),
            load1: load.as_ref().map_or(0.0, |l| l.one),
            load5: load.as_ref().map_or(0.0, |l| l.five),
            load15: load.as_ref().map_or(0.0, |l| l.fifteen),
            ..Default::default()
        };
        if let Some(sys) = &mut self.sys {
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            facts.cpu_count = u32::try_from(sys.cpus().len()).unwrap_or(u32::MAX);
            metrics.cpu_usage_percent = sys.global_cpu_usage();
            metrics.memory_total_bytes = sys.total_memory();
            metrics.memory_used_bytes = sys.used_memory();
            metrics.memory_available_bytes = sys.available_memory();
            metrics.swap_total_bytes = sys.total_swap();
            metrics.swap_used_bytes = sys.used_swap();
        }
        (facts, metrics)
    }

    fn network(&mut self) -> Option<NetworkSection> {
        let networks = self.networks.as_mut()?;
        networks.refresh(true);
        let mut interfaces: Vec<NetInterface> = networks
            .iter()
            .filter(|(name, _)| name.as_os_str() != "lo")
            .map(|(name, data)| NetInterface {
                name: name.to_string_lossy().into_owned(),
                rx_bytes: data.total_received(),
                tx_bytes: data.total_transmitted(),
                rx_packets: data.total_packets_received(),
                tx_packets: data.total_packets_transmitted(),
                rx_errors: data.total_errors_on_received(),
                tx_errors: data.total_errors_on_transmitted(),
            })
            .collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        Some(NetworkSection { interfaces })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_host_and_fixture_files() {
        let dir = std::env::temp_dir().join(format!("rollcall-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("os-release"),
            "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        )
        .expect("write");
        std::fs::write(dir.join("boot_id"), "0a1b2c3d-fixture\n").expect("write");
        let mut c = SystemCollector::new(HostConfig {
            boot_id_path: dir.join("boot_id"),
            os_release_path: dir.join("os-release"),
        });
        let (facts, metrics) = c.host();
        assert_eq!(facts.boot_id, "0a1b2c3d-fixture");
        assert_eq!(facts.os_id, "debian");
        assert_eq!(facts.os_pretty_name, "Debian GNU/Linux 12 (bookworm)");
        assert!(facts.cpu_count >= 1);
        assert!(!facts.kernel.is_empty());
        assert!(metrics.memory_total_bytes > 0);
        assert!(metrics.memory_used_bytes <= metrics.memory_total_bytes);
        assert!(metrics.uptime_secs > 0);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_files_leave_fields_empty_instead_of_failing() {
        let mut c = SystemCollector::new(HostConfig {
            boot_id_path: "/nonexistent/boot_id".into(),
            os_release_path: "/nonexistent/os-release".into(),
        });
        let (facts, _) = c.host();
        assert_eq!(facts.boot_id, "");
        assert_eq!(facts.os_id, "");
    }
}
