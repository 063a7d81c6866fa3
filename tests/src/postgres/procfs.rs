//! CPU times from /proc, for [`super::Postgres::cpu_seconds`].

use anyhow::Context;

/// Clock ticks (`getconf CLK_TCK`) that `postmaster` and its children
/// used: user + system of the postmaster and of its live children, plus
/// what its exited children used (the postmaster reaps every backend, so a
/// connection that came and went counts too).
pub(super) fn cpu_ticks_of_tree(postmaster: u32) -> anyhow::Result<u64> {
    let own = proc_stat(postmaster).context("read the postmaster's /proc stat")?;
    let mut ticks = own.utime + own.stime + own.cutime + own.cstime;
    for entry in std::fs::read_dir("/proc").context("read /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        // A backend may exit between the listing and the read.
        if let Some(stat) = proc_stat(pid)
            && stat.ppid == postmaster
        {
            ticks += stat.utime + stat.stime;
        }
    }
    Ok(ticks)
}

pub(super) struct ProcStat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

/// Fields of /proc/PID/stat (proc(5)), counted after the command name,
/// which sits in parentheses and may hold spaces.
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    // rest: " S ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime stime cutime cstime …"
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(ProcStat {
        ppid: u32::try_from(number(1)?).ok()?,
        utime: number(11)?,
        stime: number(12)?,
        cutime: number(13)?,
        cstime: number(14)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_its_own_cpu_times() {
        let stat = proc_stat(std::process::id()).expect("own stat");
        assert!(stat.ppid > 0);
        assert!(cpu_ticks_of_tree(std::process::id()).is_ok());
    }
}
