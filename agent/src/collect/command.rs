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
