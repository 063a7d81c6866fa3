//! What the load generator reads about a process from /proc/PID: CPU time,
//! memory, and bytes written to disk.

use anyhow::Context;

/// One look at a process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time since the process started.
    pub cpu_secs: f64,
    /// Resident memory now (VmRSS) and its peak (VmHWM), in KiB.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// Bytes the process caused to be written to storage (`write_bytes` of
    /// /proc/PID/io: counted when a page is dirtied, so page cache the
    /// kernel writes back later is included, and a file deleted before
    /// writeback is too).
    pub write_bytes: u64,
}

impl ProcSample {
    pub fn read(pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            cpu_secs: cpu_secs(pid)?,
            rss_kib: status_kib(pid, "VmRSS:")?,
            peak_rss_kib: status_kib(pid, "VmHWM:")?,
            write_bytes: io_field(pid, "write_bytes:")?,
        })
    }
}

/// True while a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn field(path: &str, key: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("{path} has no {key}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("{path}: {key} has no value"))?
        .parse()?)
}

pub fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    field(&format!("/proc/{pid}/status"), key)
}

pub fn io_field(pid: u32, key: &str) -> anyhow::Result<u64> {
    field(&format!("/proc/{pid}/io"), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = ProcSample::read(std::process::id()).expect("read /proc/self");
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib, "{s:?}");
        assert!(alive(std::process::id()));
    }
}
