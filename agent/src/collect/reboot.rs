//! Does the node need a reboot, and why. Each check reports a reason or an
//! error; an error (a missing or failing command) never counts as "reboot
//! required".

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_proto::model::{RebootReason, RebootSection};
use rollcall_proto::timestamp::Timestamp;

use super::command;

#[derive(Clone, Debug)]
pub struct RebootChecks {
    /// Prefix of every path read (`/` on a real node, a fixture tree in tests).
    pub root: PathBuf,
    /// Run `needs-restarting -r` where it is installed (RHEL family).
    pub needs_restarting: bool,
    /// An extra command; exit 0 means "reboot required".
    pub sentinel: Vec<String>,
    pub timeout: Duration,
}

impl RebootChecks {
    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// Runs every check. `running_kernel` is `uname -r`.
    pub async fn check(&self, running_kernel: &str) -> RebootSection {
        let mut section = RebootSection {
            checked_at: Some(Timestamp::now()),
            ..Default::default()
        };
        let mut add = |r: Result<Option<RebootReason>, String>| match r {
            Ok(Some(reason)) => section.reasons.push(reason),
            Ok(None) => {}
            Err(e) => section.errors.push(e),
        };
        add(Ok(self.reboot_required_file()));
        add(Ok(self.kernel(running_kernel)));
        if self.needs_restarting {
            add(self.needs_restarting().await);
        }
        if !self.sentinel.is_empty() {
            add(self.sentinel().await);
        }
        section.required = !section.reasons.is_empty();
        section
    }

    /// Debian and Ubuntu: /var/run/reboot-required, with the packages that
    /// asked for it in reboot-required.pkgs.
    fn reboot_required_file(&self) -> Option<RebootReason> {
        let file = ["/var/run/reboot-required", "/run/reboot-required"]
            .into_iter()
            .map(|p| (p, self.path(p)))
            .find(|(_, p)| p.exists())?;
        let pkgs_path = PathBuf::from(format!("{}.pkgs", file.1.display()));
        let mut packages: Vec<String> = std::fs::read_to_string(pkgs_path)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        packages.sort();
        packages.dedup();
        Some(RebootReason {
            source: "reboot-required-file".into(),
            detail: file.0.into(),
            packages,
        })
    }

    /// A kernel newer than the running one is installed.
    fn kernel(&self, running: &str) -> Option<RebootReason> {
        if running.is_empty() {
            return None;
        }
        let newest = installed_kernels(&self.path("/lib/modules"))
            .into_iter()
            .max_by(|a, b| version_cmp(a, b))?;
        (version_cmp(&newest, running) == Ordering::Greater).then(|| RebootReason {
            source: "kernel".into(),
            detail: format!("running {running}, newest installed {newest}"),
            packages: Vec::new(),
        })
    }

    /// RHEL family: `needs-restarting -r` exits 1 when a reboot is needed,
    /// 0 when not. Absent means not that family: no reason, no error.
    async fn needs_restarting(&self) -> Result<Option<RebootReason>, String> {
        let Some(bin) = [
            "/usr/bin/needs-restarting",
            "/bin/needs-restarting",
            "/usr/sbin/needs-restarting",
        ]
        .into_iter()
        .map(|p| self.path(p))
        .find(|p| p.exists()) else {
            return Ok(None);
        };
        let argv = [bin.display().to_string(), "-r".to_owned()];
        let out = command::run(&argv, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        match out.code {
            Some(0) => Ok(None),
            Some(1) => Ok(Some(RebootReason {
                source: "needs-restarting".into(),
                // "Reboot is required to fully utilize these updates."
                detail: out
                    .stdout
                    .lines()
                    .map(str::trim)
                    .find(|l| l.to_ascii_lowercase().contains("reboot"))
                    .or_else(|| out.stdout.lines().map(str::trim).find(|l| !l.is_empty()))
                    .unwrap_or("needs-restarting -r exited 1")
                    .to_owned(),
                packages: out
                    .stdout
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("* "))
                    .map(|p| p.split_whitespace().next().unwrap_or(p).to_owned())
                    .collect(),
            })),
            code => Err(format!(
                "needs-restarting -r exited with {}: {}",
                code.map_or("a signal".to_owned(), |c| c.to_string()),
                command::last_line(&out.stderr)
            )),
        }
    }

    /// The configured sentinel: exit 0 means a reboot is required.
    async fn sentinel(&self) -> Result<Option<RebootReason>, String> {
        let out = command::run(&self.sentinel, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        match out.code {
            Some(0) => Ok(Some(RebootReason {
                source: "sentinel".into(),
                detail: self.sentinel.join(" "),
                packages: Vec::new(),
            })),
            Some(_) => Ok(None),
            None => Err(format!(
                "sentinel {} was killed by a signal",
                self.sentinel.join(" ")
            )),
        }
    }
}

fn installed_kernels(modules: &Path) -> Vec<String> {
    std::fs::read_dir(modules)
        .map(|dir| {
            dir.filter_map(Result::ok)
                // A module tree without a kernel image is a leftover of a
                // removed kernel: it does not count.
                .filter(|e| {
                    e.path().join("modules.dep").exists() || e.path().join("vmlinuz").exists()
                })
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Compares kernel release strings the way people read them: runs of
/// digits as numbers, everything else as text ("6.1.0-28" < "6.1.0-110").
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, xa), (db, xb)) in ca.iter().zip(&cb) {
        let ord = match (da, db) {
            (true, true) => {
                let (na, nb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
                na.len().cmp(&nb.len()).then_with(|| na.cmp(nb))
            }
            _ => xa.cmp(xb),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reboot")
            .join(name)
    }

    fn checks(root: &str) -> RebootChecks {
        RebootChecks {
            root: fixture(root),
            needs_restarting: true,
            sentinel: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn kernel_versions_compare_numerically() {
        assert_eq!(
            version_cmp("6.1.0-28-amd64", "6.1.0-110-amd64"),
            Ordering::Less
        );
        assert_eq!(
            version_cmp("6.1.0-29-amd64", "6.1.0-28-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            version_cmp(
                "5.14.0-427.13.1.el9_4.x86_64",
                "5.14.0-427.13.1.el9_4.x86_64"
            ),
            Ordering::Equal
        );
        assert_eq!(
            version_cmp("5.14.0-503.el9.x86_64", "5.14.0-427.13.1.el9_4.x86_64"),
            Ordering::Greater
        );
    }

    #[tokio::test]
    async fn debian_layout_reports_the_file_its_packages_and_a_newer_kernel() {
        let s = checks("debian").check("6.1.0-28-amd64").await;
        assert!(s.required);
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let sources: Vec<&str> = s.reasons.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(sources, ["reboot-required-file", "kernel"]);
        assert_eq!(
            s.reasons[0].packages,
            ["libc6", "linux-image-6.1.0-29-amd64"]
        );
        assert_eq!(
            s.reasons[1].detail,
            "running 6.1.0-28-amd64, newest installed 6.1.0-29-amd64"
        );
    }

    #[tokio::test]
    async fn a_clean_debian_node_needs_no_reboot() {
        let s = checks("debian-clean").check("6.1.0-29-amd64").await;
        assert!(!s.required, "{s:?}");
        assert!(s.errors.is_empty());
    }

    #[tokio::test]
    async fn rhel_layout_asks_needs_restarting() {
        let s = checks("rhel").check("5.14.0-427.13.1.el9_4.x86_64").await;
        assert!(s.required, "{s:?}");
        assert_eq!(s.reasons[0].source, "needs-restarting");
        assert!(
            s.reasons[0].detail.contains("Reboot is required"),
            "{}",
            s.reasons[0].detail
        );
        assert_eq!(s.reasons[0].packages, ["glibc", "kernel"]);
    }

    #[tokio::test]
    async fn a_failing_needs_restarting_is_an_error_not_a_reboot() {
        let s = checks("rhel-broken")
            .check("5.14.0-427.13.1.el9_4.x86_64")
            .await;
        assert!(!s.required, "{s:?}");
        assert_eq!(s.errors.len(), 1);
        assert!(s.errors[0].contains("exited with 2"), "{:?}", s.errors);
    }

    #[tokio::test]
    async fn sentinel_exit_zero_means_reboot_and_a_missing_sentinel_is_an_error() {
        let mut c = checks("debian-clean");
        c.sentinel = vec!["sh".into(), "-c".into(), "exit 0".into()];
        let s = c.check("6.1.0-29-amd64").await;
        assert!(s.required && s.reasons[0].source == "sentinel", "{s:?}");
        c.sentinel = vec!["sh".into(), "-c".into(), "exit 1".into()];
        assert!(!c.check("6.1.0-29-amd64").await.required);
        c.sentinel = vec!["/nonexistent/sentinel".into()];
        let s = c.check("6.1.0-29-amd64").await;
        assert!(!s.required);
        assert!(
            s.errors[0].contains("cannot run /nonexistent/sentinel"),
            "{:?}",
            s.errors
        );
    }
}
