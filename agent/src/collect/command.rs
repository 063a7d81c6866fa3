//! Runs a local command (argv, never a shell line) with a deadline, and an
//! action's command so that it outlives the agent and can be found again.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rollcall_proto::timestamp::Timestamp;

/// Why a command could not be run or waited for; one line that names the
/// command or the file.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {}s", timeout.as_secs())]
    TimedOut { program: String, timeout: Duration },
    /// The process ended before its pid could be read.
    #[error("{program} ended before it could be watched")]
    Vanished { program: String },
    #[error("cannot create {}: {source}", path.display())]
    CreateLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot use {}: {source}", path.display())]
    UseLog {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A status left by an earlier run that cannot be cleared (it would be
    /// read as this run's).
    #[error("cannot remove {}: {source}", path.display())]
    StaleExit {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Output {
    /// None when a signal ended the command.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `argv` and waits at most `timeout`; the error is one line naming the command.
pub async fn run(argv: &[String], timeout: Duration) -> Result<Output, CommandError> {
    run_with_env(argv, &[], timeout).await
}

/// [`run`] with extra environment variables.
pub async fn run_with_env(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Output, CommandError> {
    let (program, args) = argv.split_first().ok_or(CommandError::Empty)?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
        Ok(Err(source)) => Err(CommandError::Wait {
            program: program.clone(),
            source,
        }),
        Err(_) => Err(CommandError::TimedOut {
            program: program.clone(),
            timeout,
        }),
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

/// The fixed script every action runs under. It runs its arguments as argv
/// (`"$@"`: the configured command and the request's arguments are never
/// part of a shell line) and then writes the command's exit status to the
/// file named by its first argument, through a temporary file and a rename,
/// so a reader sees a whole status or none. The agent reads the status from
/// that file because an agent that restarted is no longer the command's
/// parent and cannot wait for it.
const WRAPPER: &str =
    r#"f=$1; shift; "$@"; s=$?; printf '%s\n' "$s" > "$f.tmp" && mv -f "$f.tmp" "$f"; exit "$s""#;
/// `$0` of the wrapper: what `ps` shows for it.
const WRAPPER_NAME: &str = "rollcall-action";

/// What tells an action's process apart from any later one under the same
/// pid: its start time (`/proc/PID/stat` field 22, clock ticks since boot).
/// Only meaningful within one boot; the record's boot id says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActionProcess {
    /// The wrapper's pid, which is also its process group's id: it leads
    /// the group.
    pub pid: i32,
    pub start_ticks: u64,
}

impl ActionProcess {
    /// The process as `/proc` shows it now; `None` when it is gone or a
    /// zombie (it ended; only its parent's wait is missing).
    pub fn read(pid: i32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Field 2, the command name, may hold spaces and parentheses: count
        // fields from the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?;
        // Fields 4 to 21 lie between the state (3) and the start time (22).
        let start_ticks = fields.nth(18)?.parse().ok()?;
        (state != "Z").then_some(Self { pid, start_ticks })
    }

    /// The same process still runs (not a later one that got its pid).
    pub fn is_running(self) -> bool {
        Self::read(self.pid) == Some(self)
    }

    /// Kills the process and every process of its group.
    pub fn kill_group(self) {
        kill_group(self.pid);
    }
}

fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// How an action's command ended, as the wrapper recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// The shell reports a command killed by signal N as status 128 + N; a
    /// command that itself exits with 129 to 192 reads the same, and the
    /// wrapper cannot tell them apart.
    Signal(i32),
}

impl Exit {
    /// The wrapper's own exit status: its command's, passed on, or the
    /// signal that killed the wrapper itself.
    pub fn from_status(status: std::process::ExitStatus) -> Option<Self> {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.signal(), status.code()) {
            (Some(signal), _) => Some(Exit::Signal(signal)),
            (None, Some(code)) => Some(Self::from_shell_status(code)),
            (None, None) => None,
        }
    }

    fn from_shell_status(status: i32) -> Self {
        match status {
            129..=192 => Exit::Signal(status - 128),
            code => Exit::Code(code),
        }
    }
}

/// The status an action's wrapper wrote to `path`; `None` if it wrote none
/// (it was killed, or the command still runs).
pub fn read_exit(path: &std::path::Path) -> Option<Exit> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().map(Exit::from_shell_status)
}

/// An action's command under way, started by this agent.
pub struct Spawned {
    pub process: ActionProcess,
    child: tokio::process::Child,
}

/// What an action's process is to the agent watching it.
pub enum Watched {
    /// Its child: waited for (and so reaped). Boxed: the handle is large.
    Child(Box<tokio::process::Child>),
    /// Started by an earlier agent process: watched through `/proc`.
    Adopted(ActionProcess),
}

impl From<Spawned> for Watched {
    fn from(s: Spawned) -> Self {
        Watched::Child(Box::new(s.child))
    }
}

/// How often a re-adopted action is looked at (it cannot be waited for).
pub const ADOPTED_POLL: Duration = Duration::from_millis(300);

/// Starts an action's command so that it outlives the agent: its own
/// process group (a restart of the agent's unit, with KillMode=process,
/// leaves it alone), output to `log` rather than to pipes (which would
/// break, and kill it, when the agent exits), under the wrapper that leaves
/// its exit status in `exit_file`.
pub fn spawn_action(
    argv: &[String],
    env: &[(String, String)],
    log: &std::path::Path,
    exit_file: &std::path::Path,
) -> Result<Spawned, CommandError> {
    let program = argv.first().ok_or(CommandError::Empty)?;
    let file = std::fs::File::create(log).map_err(|source| CommandError::CreateLog {
        path: log.to_owned(),
        source,
    })?;
    let err_file = file.try_clone().map_err(|source| CommandError::UseLog {
        path: log.to_owned(),
        source,
    })?;
    // A status left by anything before this run must not be read as its own.
    match std::fs::remove_file(exit_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CommandError::StaleExit {
                path: exit_file.to_owned(),
                source,
            });
        }
    }
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(WRAPPER)
        .arg(WRAPPER_NAME)
        .arg(exit_file)
        .args(argv)
        .env("LC_ALL", "C")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err_file))
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| CommandError::Vanished {
            program: program.clone(),
        })?;
    // The child cannot be reaped before we wait for it, so /proc still has
    // it (running, or a zombie whose start time still reads).
    let start_ticks = read_start_ticks(pid).unwrap_or(0);
    Ok(Spawned {
        process: ActionProcess { pid, start_ticks },
        child,
    })
}

/// The start time of `pid`, zombie or not.
fn read_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// How the wait for an action ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// The process ended. For a child, the wrapper's own exit status (what
    /// tells a wrapper killed by a signal, which wrote no status file).
    Ended(Option<std::process::ExitStatus>),
    /// The deadline passed; its whole process group was killed.
    TimedOut,
}

/// Waits until the action's process ends or `deadline` passes; at the
/// deadline its whole process group is killed.
pub async fn wait_action(watched: Watched, deadline: Timestamp) -> Waited {
    let left = || deadline.since(Timestamp::now());
    match watched {
        Watched::Child(mut child) => {
            let pid = child.id().and_then(|p| i32::try_from(p).ok());
            match tokio::time::timeout(left(), child.wait()).await {
                Ok(status) => Waited::Ended(status.ok()),
                Err(_) => {
                    if let Some(pid) = pid {
                        kill_group(pid);
                    }
                    let _ = child.wait().await;
                    Waited::TimedOut
                }
            }
        }
        Watched::Adopted(process) => loop {
            if !process.is_running() {
                return Waited::Ended(None);
            }
            let left = left();
            if left.is_zero() {
                process.kill_group();
                return Waited::TimedOut;
            }
            tokio::time::sleep(left.min(ADOPTED_POLL)).await;
        },
    }
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

    struct Dir(std::path::PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("rollcall-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("dir");
            Self(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sh(script: &str) -> Vec<String> {
        ["sh", "-c", script].map(String::from).to_vec()
    }

    fn in_secs(secs: f64) -> Timestamp {
        Timestamp::now().saturating_add(Duration::from_secs_f64(secs))
    }

    #[tokio::test]
    async fn an_action_outlives_the_agent_that_started_it_and_leaves_its_status() {
        let dir = Dir::new("detach");
        let marker = dir.0.join("finished");
        let argv = sh(&format!(
            "echo started; sleep 1; echo yes > {}; exit 7",
            marker.display()
        ));
        // The agent goes away (the child handle is dropped, nobody waits)
        // while the command runs: like apt-get when a patch upgrades the
        // agent and its unit restarts.
        let (log, exit) = (dir.0.join("out.log"), dir.0.join("a.exit"));
        let spawned = spawn_action(&argv, &[], &log, &exit).expect("spawn");
        let process = spawned.process;
        assert!(process.is_running() && process.start_ticks > 0);
        drop(spawned);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(read_exit(&exit), None, "no status while it runs");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            std::fs::read_to_string(&marker).ok().as_deref(),
            Some("yes\n"),
            "the command was killed with the agent"
        );
        assert_eq!(read_tail(&log, 4096), "started\n");
        assert_eq!(read_exit(&exit), Some(Exit::Code(7)));
        assert!(!process.is_running());
        assert!(!dir.0.join("a.exit.tmp").exists(), "renamed into place");
    }

    #[tokio::test]
    async fn the_wrapper_keeps_argv_as_argv_and_tells_a_signal_from_an_exit_code() {
        let dir = Dir::new("wrapper");
        let (log, exit) = (dir.0.join("out.log"), dir.0.join("a.exit"));
        let hostile = format!("$(touch {}/pwned); `id`", dir.0.display());
        let argv = vec![
            "printf".into(),
            "%s|%s\n".into(),
            hostile.clone(),
            "b c".into(),
        ];
        let spawned = spawn_action(&argv, &[], &log, &exit).expect("spawn");
        let waited = wait_action(spawned.into(), in_secs(10.0)).await;
        assert!(
            matches!(waited, Waited::Ended(Some(s)) if s.success()),
            "{waited:?}"
        );
        assert_eq!(read_tail(&log, 4096), format!("{hostile}|b c\n"));
        assert!(
            !dir.0.join("pwned").exists(),
            "an argument was run by a shell"
        );
        assert_eq!(read_exit(&exit), Some(Exit::Code(0)));

        for (script, expected) in [
            ("exit 3", Exit::Code(3)),
            ("kill -KILL $$", Exit::Signal(9)),
            ("kill -TERM $$", Exit::Signal(15)),
        ] {
            let spawned = spawn_action(&sh(script), &[], &log, &exit).expect("spawn");
            wait_action(spawned.into(), in_secs(10.0)).await;
            assert_eq!(read_exit(&exit), Some(expected), "{script}");
        }
        // A command that cannot be run is the shell's 127, with its words in the log.
        let spawned =
            spawn_action(&["/nonexistent/cmd".to_owned()], &[], &log, &exit).expect("spawn");
        wait_action(spawned.into(), in_secs(10.0)).await;
        assert_eq!(read_exit(&exit), Some(Exit::Code(127)));
        assert!(read_tail(&log, 4096).contains("/nonexistent/cmd"));
    }

    #[tokio::test]
    async fn a_timed_out_action_is_killed_with_its_children() {
        let dir = Dir::new("kill");
        let marker = dir.0.join("child-survived");
        let argv = sh(&format!("(sleep 1; touch {}) & wait", marker.display()));
        let exit = dir.0.join("a.exit");
        let spawned = spawn_action(&argv, &[], &dir.0.join("out.log"), &exit).expect("spawn");
        assert_eq!(
            wait_action(spawned.into(), in_secs(0.2)).await,
            Waited::TimedOut
        );
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert!(
            !marker.exists(),
            "a child of the timed-out action kept running"
        );
        assert_eq!(read_exit(&exit), None, "a killed wrapper writes nothing");
    }

    #[tokio::test]
    async fn an_adopted_action_is_watched_to_its_end_or_killed_at_its_deadline() {
        let dir = Dir::new("adopt");
        let (log, exit) = (dir.0.join("out.log"), dir.0.join("a.exit"));
        let spawned = spawn_action(&sh("sleep 0.5"), &[], &log, &exit).expect("spawn");
        let process = spawned.process;
        drop(spawned);
        let started = std::time::Instant::now();
        assert_eq!(
            wait_action(Watched::Adopted(process), in_secs(10.0)).await,
            Waited::Ended(None)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(read_exit(&exit), Some(Exit::Code(0)));

        let marker = dir.0.join("survived");
        let argv = sh(&format!("sleep 1; touch {}", marker.display()));
        let spawned = spawn_action(&argv, &[], &log, &exit).expect("spawn");
        let process = spawned.process;
        drop(spawned);
        assert_eq!(
            wait_action(Watched::Adopted(process), in_secs(0.3)).await,
            Waited::TimedOut
        );
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert!(!marker.exists(), "the adopted action outlived its deadline");
        assert_eq!(read_exit(&exit), None);
    }

    #[tokio::test]
    async fn errors_name_the_command_in_one_line() {
        let err = run(&["/nonexistent/cmd".to_owned()], Duration::from_secs(5))
            .await
            .err()
            .expect("cannot run");
        assert!(matches!(err, CommandError::Spawn { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("cannot run /nonexistent/cmd: "),
            "{err}"
        );
        let err = run(&sh("sleep 5"), Duration::from_secs(1))
            .await
            .err()
            .expect("too slow");
        assert_eq!(err.to_string(), "sh did not finish within 1s");
        assert!(matches!(
            run(&[], Duration::from_secs(1)).await,
            Err(CommandError::Empty)
        ));
        let dir = Dir::new("errors");
        let err = spawn_action(
            &sh("true"),
            &[],
            &dir.0.join("no/such/dir.log"),
            &dir.0.join("x"),
        )
        .err()
        .expect("no log");
        assert!(matches!(err, CommandError::CreateLog { .. }), "{err:?}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn a_process_is_known_by_its_pid_and_start_time() {
        let me = ActionProcess::read(std::process::id() as i32).expect("this process");
        assert!(me.is_running());
        // The same pid with another start time is another process (a pid
        // the kernel handed out again).
        let reused = ActionProcess {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.is_running());
        assert_eq!(ActionProcess::read(i32::MAX), None);
    }
}
