//! Pending package updates, by simulation only: `apt-get -s upgrade` or
//! `dnf check-update`. Nothing is installed, locked or downloaded. Runs on a
//! slow schedule in its own task so it never holds up a report.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use rollcall_proto::model::UpdatesSection;
use rollcall_proto::timestamp::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::command;

/// Package names kept in the section.
const PACKAGES_MAX: usize = 100;

#[derive(Clone, Debug)]
pub struct UpdatesConfig {
    /// Prefix of the paths where apt-get or dnf are looked for.
    pub root: PathBuf,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Apt,
    Dnf,
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub packages: BTreeSet<String>,
    pub security: BTreeSet<String>,
}

/// `Inst NAME [OLD] (NEW ORIGINS [ARCH])` lines of `apt-get -s upgrade`;
/// an origin naming a security suite makes it a security update.
pub fn parse_apt(text: &str) -> Pending {
    let mut p = Pending::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let Some(name) = rest.split_whitespace().next() else {
            continue;
        };
        p.packages.insert(name.to_owned());
        let origins = rest.split_once('(').map_or("", |(_, o)| o);
        if origins.to_ascii_lowercase().contains("-security") {
            p.security.insert(name.to_owned());
        }
    }
    p
}

/// `dnf check-update` lines: `NAME.ARCH  VERSION  REPO`, after a blank
/// line; "Obsoleting Packages" and what follows are not updates.
pub fn parse_dnf_check_update(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("Obsoleting") {
            break;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() != 3 || line.starts_with(' ') || line.starts_with("Last metadata") {
            continue;
        }
        if let Some((name, _arch)) = cols[0].rsplit_once('.') {
            names.insert(name.to_owned());
        }
    }
    names
}

/// `dnf updateinfo list --security` lines: `ADVISORY  SEVERITY/Sec.  NEVRA`.
pub fn parse_dnf_security(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() == 3 && cols[1].ends_with("Sec.")).then(|| nevra_name(cols[2]))
        })
        .collect()
}

/// `openssl-libs-1:3.0.7-27.el9.x86_64` → `openssl-libs`.
fn nevra_name(nevra: &str) -> String {
    let without_arch = nevra.rsplit_once('.').map_or(nevra, |(n, _)| n);
    let mut parts = without_arch.rsplitn(3, '-');
    let _release = parts.next();
    let _version = parts.next();
    parts.next().unwrap_or(without_arch).to_owned()
}

impl UpdatesConfig {
    pub fn manager(&self) -> Option<Manager> {
        let has = |p: &str| self.root.join(p).exists();
        if has("usr/bin/apt-get") {
            Some(Manager::Apt)
        } else if has("usr/bin/dnf") {
            Some(Manager::Dnf)
        } else {
            None
        }
    }

    fn bin(&self, name: &str) -> String {
        self.root.join("usr/bin").join(name).display().to_string()
    }

    /// One check, by simulation.
    pub async fn check(&self, manager: Manager) -> Result<Pending, String> {
        match manager {
            Manager::Apt => {
                let argv = [
                    self.bin("apt-get"),
                    "-s".into(),
                    "-o".into(),
                    "Debug::NoLocking=1".into(),
                    "upgrade".into(),
                ];
                let out = command::run(&argv, self.timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                if out.code != Some(0) {
                    return Err(format!(
                        "apt-get -s upgrade failed: {}",
                        command::last_line(&out.stderr)
                    ));
                }
                Ok(parse_apt(&out.stdout))
            }
            Manager::Dnf => {
                let argv = [
                    self.bin("dnf"),
                    "-q".into(),
                    "--cacheonly".into(),
                    "check-update".into(),
                ];
                let out = command::run(&argv, self.timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                // 100: updates available; 0: none; anything else: failure.
                let packages = match out.code {
                    Some(0) => BTreeSet::new(),
                    Some(100) => parse_dnf_check_update(&out.stdout),
                    _ => {
                        return Err(format!(
                            "dnf check-update failed: {}",
                            command::last_line(&out.stderr)
                        ));
                    }
                };
                let argv = [
                    self.bin("dnf"),
                    "-q".into(),
                    "--cacheonly".into(),
                    "updateinfo".into(),
                    "list".into(),
                    "--security".into(),
                    "--available".into(),
                ];
                let out = command::run(&argv, self.timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                if out.code != Some(0) {
                    return Err(format!(
                        "dnf updateinfo failed: {}",
                        command::last_line(&out.stderr)
                    ));
                }
                let security = parse_dnf_security(&out.stdout)
                    .intersection(&packages)
                    .cloned()
                    .collect();
                Ok(Pending { packages, security })
            }
        }
    }
}

fn section(
    manager: &str,
    result: &Result<Pending, String>,
    previous: &UpdatesSection,
) -> UpdatesSection {
    match result {
        Ok(p) => UpdatesSection {
            manager: manager.to_owned(),
            checked: true,
            count: u32::try_from(p.packages.len()).unwrap_or(u32::MAX),
            security_count: u32::try_from(p.security.len()).unwrap_or(u32::MAX),
            last_check: Some(Timestamp::now()),
            last_error: String::new(),
            packages: p.packages.iter().take(PACKAGES_MAX).cloned().collect(),
        },
        // Keep the last good numbers; say that the newest check failed.
        Err(e) => UpdatesSection {
            manager: manager.to_owned(),
            last_check: Some(Timestamp::now()),
            last_error: e.clone(),
            ..previous.clone()
        },
    }
}

/// One check now (for `rollcall-agent once`).
pub async fn snapshot(config: &UpdatesConfig) -> UpdatesSection {
    match config.manager() {
        Some(m) => {
            let name = if m == Manager::Apt { "apt" } else { "dnf" };
            section(name, &config.check(m).await, &UpdatesSection::default())
        }
        None => UpdatesSection {
            last_error: "no apt-get or dnf found".into(),
            ..Default::default()
        },
    }
}

/// Starts the checker: the first check soon after start (with jitter, so a
/// fleet restarted at once does not check at once), then every interval
/// ± 10 %.
pub fn spawn(
    config: UpdatesConfig,
    shutdown: CancellationToken,
) -> watch::Receiver<UpdatesSection> {
    let manager = config.manager();
    let name = match manager {
        Some(Manager::Apt) => "apt",
        Some(Manager::Dnf) => "dnf",
        None => "",
    };
    let initial = UpdatesSection {
        manager: name.into(),
        last_error: if manager.is_none() {
            "no apt-get or dnf found".into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    let (tx, rx) = watch::channel(initial);
    let Some(manager) = manager else { return rx };
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(fastrand::u64(1_000..=30_000));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let result = config.check(manager).await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "Pending-updates check failed.");
            }
            let next = section(name, &result, &tx.borrow());
            tx.send_replace(next);
            let jitter = config.interval.as_millis() as u64 / 10;
            delay = config.interval + Duration::from_millis(fastrand::u64(0..=jitter * 2))
                - Duration::from_millis(jitter);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_simulation_on_a_real_bookworm_host() {
        // `LC_ALL=C apt-get -s -o Debug::NoLocking=1 upgrade` on this
        // project's CI machine (Debian 12), captured as is.
        let p = parse_apt(include_str!(
            "../../tests/fixtures/apt-get-s-upgrade-bookworm.txt"
        ));
        assert_eq!(p.packages.len(), 132);
        assert_eq!(p.security.len(), 81);
        assert!(p.packages.contains("bash") && !p.security.contains("bash"));
        assert!(p.security.contains("libgcrypt20-dev"));
    }

    #[test]
    fn dnf_check_update_and_security_advisories() {
        let names = parse_dnf_check_update(include_str!(
            "../../tests/fixtures/dnf-check-update-rocky9.txt"
        ));
        assert_eq!(names.len(), 6);
        assert!(
            names.contains("openssl-libs")
                && names.contains("kernel")
                && !names.contains("Obsoleting")
        );
        let sec = parse_dnf_security(include_str!(
            "../../tests/fixtures/dnf-updateinfo-security-rocky9.txt"
        ));
        assert_eq!(
            sec.into_iter().collect::<Vec<_>>(),
            ["kernel", "kernel-core", "openssl-libs"]
        );
        assert_eq!(
            nevra_name("openssl-libs-1:3.0.7-27.el9.x86_64"),
            "openssl-libs"
        );
    }

    #[test]
    fn a_failed_check_keeps_the_last_numbers_and_says_why() {
        let good = section(
            "apt",
            &Ok(Pending {
                packages: ["a".to_owned(), "b".to_owned()].into(),
                security: ["a".to_owned()].into(),
            }),
            &UpdatesSection::default(),
        );
        assert_eq!(
            (good.count, good.security_count, good.checked),
            (2, 1, true)
        );
        let bad = section(
            "apt",
            &Err("apt-get -s upgrade failed: E: lists broken".into()),
            &good,
        );
        assert_eq!((bad.count, bad.security_count, bad.checked), (2, 1, true));
        assert!(bad.last_error.contains("lists broken"));
    }

    #[tokio::test]
    async fn the_real_apt_get_runs_in_simulation_where_present() {
        let cfg = UpdatesConfig {
            root: "/".into(),
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(120),
        };
        if cfg.manager() != Some(Manager::Apt) {
            eprintln!("SKIPPED: no apt-get on this machine");
            return;
        }
        let p = cfg
            .check(Manager::Apt)
            .await
            .expect("apt-get -s upgrade runs");
        assert!(p.security.is_subset(&p.packages));
    }
}
