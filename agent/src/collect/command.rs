//! Runs a local command (argv, never a shell) with a deadline.

use std::process::Stdio;
use std::time::Duration;

pub struct Output {
    /// None when a signal ended the command.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `argv` and waits at most `timeout`; the error is one line naming the command.
pub async fn run(argv: &[String], timeout: Duration) -> Result<Output, String> {
    run_with_env(argv, &[], timeout).await
}

/// [`run`] with extra environment variables.
pub async fn run_with_env(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Output, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
        Ok(Err(e)) => Err(format!("{program} failed: {e}")),
        Err(_) => Err(format!(
            "{program} did not finish within {}s",
            timeout.as_secs()
        )),
    }
}

/// The last line of a command's stderr, for an error message.
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Runs an action's command so that it outlives the agent: its own process
/// group (a restart of the agent's unit, with KillMode=process, leaves it
/// alone), output to `log` rather than to pipes (which would break, and kill
/// it, when the agent exits). At `timeout` the whole group is killed. The
/// output returned is the end of the log.
pub async fn run_action(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
    log: &std::path::Path,
    tail_bytes: usize,
) -> Result<Output, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let file =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err_file = file
        .try_clone()
        .map_err(|e| format!("cannot use {}: {e}", log.display()))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err_file))
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("{program} failed: {e}")),
        Err(_) => {
            if let Some(pid) = child
                .id()
                .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.wait().await;
            return Err(format!(
                "{program} did not finish within {}s and was killed",
                timeout.as_secs()
            ));
        }
    };
    Ok(Output {
        code: status.code(),
        stdout: read_tail(log, tail_bytes),
        stderr: String::new(),
    })
}

/// The last `max` bytes of a file (from a character boundary).
pub fn read_tail(path: &std::path::Path, max: usize) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    // Drop a partial first character left by the cut.
    text.trim_start_matches('\u{fffd}').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_action_outlives_the_agent_that_started_it() {
        let dir = std::env::temp_dir().join(format!("rollcall-detach-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let marker = dir.join("finished");
        let argv: Vec<String> = [
            "sh",
            "-c",
            &format!("echo started; sleep 1; echo yes > {}", marker.display()),
        ]
        .map(String::from)
        .to_vec();
        // The agent goes away (its future is dropped) while the command runs:
        // like apt-get when a patch upgrades the agent and its unit restarts.
        let log = dir.join("out.log");
        let run = run_action(&argv, &[], Duration::from_secs(30), &log, 4096);
        let _ = tokio::time::timeout(Duration::from_millis(300), run).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            std::fs::read_to_string(&marker).ok().as_deref(),
            Some("yes\n"),
            "the command was killed with the agent"
        );
        assert_eq!(read_tail(&dir.join("out.log"), 4096), "started\n");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_timed_out_action_is_killed_with_its_children() {
        let dir = std::env::temp_dir().join(format!("rollcall-kill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let marker = dir.join("child-survived");
        let argv: Vec<String> = [
            "sh",
            "-c",
            &format!("(sleep 1; touch {}) & wait", marker.display()),
        ]
        .map(String::from)
        .to_vec();
        let err = run_action(
            &argv,
            &[],
            Duration::from_millis(200),
            &dir.join("out.log"),
            4096,
        )
        .await
        .err();
        assert!(err.is_some_and(|e| e.contains("was killed")));
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert!(
            !marker.exists(),
            "a child of the timed-out action kept running"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
