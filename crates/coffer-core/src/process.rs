//! Child processes: the environment they get, how their output is kept, how long they may run,
//! and how an interrupted coffer takes them down with it.
//!
//! - **Environment.** A child gets [`INHERITED_ENV`] of coffer's own variables and nothing else
//!   (no `AWS_SECRET_ACCESS_KEY`, no `COFFER_*_PASSWORD`): client tools take their credentials
//!   from a 0600 option file, hooks and app checks need none of coffer's secrets.
//! - **Process groups.** Every child leads a process group of its own, so a timeout or an
//!   interruption kills it and whatever it started (`sh -c` and its pipeline) together.
//! - **Cancellation.** Every child is [`Registered`] with its job's [`Cancel`]: cancelling the job
//!   (SIGINT/SIGTERM in the binary, a shutdown in the daemon) kills every live child group of it,
//!   and [`Cancel::check`] refuses to start new ones, so the job unwinds through its normal error
//!   path (temp files dropped, no manifest written, `after` hooks run under a handle of their
//!   own).
//! - **Bounded output.** What a child prints is kept as a tail of at most [`TAIL_BYTES`], read
//!   concurrently with its run, so a chatty child can neither fill its pipe and hang nor grow
//!   coffer's memory.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::cancel::Cancel;
use crate::error::{Error, ErrorKind, Result};

/// The variables of coffer's own environment a child may see.
pub const INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR", "TERM",
];

/// How much of a child's output is kept for messages.
pub const TAIL_BYTES: usize = 16 * 1024;

/// `INHERITED_ENV` as it is in this process: the whole environment of a child, before what the
/// caller adds.
pub fn scrubbed_env() -> Vec<(String, String)> {
    INHERITED_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// Gives a client-tool command coffer's child policy: the scrubbed environment and a process
/// group of its own. Register the spawned child with [`Registered::new`].
pub fn tool_command(program: &std::path::Path) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(program);
    command.env_clear().envs(scrubbed_env()).process_group(0);
    command
}

/// The async twin of [`tool_command`]. With `dies_with_parent`, the child is started through
/// util-linux's `setpriv --pdeathsig KILL` so the kernel kills it when coffer dies, even by
/// `kill -9` (a long-lived replication client must never outlive its supervisor). Spawn such a
/// child from an async task: the death signal follows the thread that started it, and the
/// runtime's worker threads live as long as coffer.
pub fn async_tool_command(
    program: &std::path::Path,
    dies_with_parent: bool,
) -> tokio::process::Command {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.is_file());
    let mut command = match setpriv {
        Some(setpriv) if dies_with_parent => {
            let mut command = tokio::process::Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--"]).arg(program);
            command
        }
        _ => tokio::process::Command::new(program),
    };
    command
        .env_clear()
        .envs(scrubbed_env())
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// Logs (at debug) a child about to start: its program and arguments, which never hold a secret
/// (credentials travel in the option file `--defaults-file` names). Chain it before `spawn()`.
pub trait Logged {
    /// Logs the command and returns it.
    fn logged(&mut self) -> &mut Self;
}

fn log_spawn(command: &std::process::Command) {
    tracing::debug!(
        program = %command.get_program().to_string_lossy(),
        args = ?command.get_args().collect::<Vec<_>>(),
        "starting child"
    );
}

impl Logged for std::process::Command {
    fn logged(&mut self) -> &mut Self {
        log_spawn(self);
        self
    }
}

impl Logged for tokio::process::Command {
    fn logged(&mut self) -> &mut Self {
        log_spawn(self.as_std());
        self
    }
}

/// Kills the process group `group` (`kill -KILL -- -PGID`, without unsafe code in coffer).
pub(crate) fn kill_group(group: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A child's process group, killed when its job is cancelled while this guard lives.
#[derive(Debug)]
pub struct Registered {
    group: Option<u32>,
    cancel: Cancel,
}

impl Registered {
    /// Registers the group led by `pid` (a child started by [`tool_command`] or [`run_shell`])
    /// with the job's `cancel`. If the job was cancelled meanwhile, the group is killed at once.
    pub fn new(pid: Option<u32>, cancel: &Cancel) -> Self {
        if let Some(pid) = pid {
            cancel.add_group(pid);
        }
        let registered = Self {
            group: pid,
            cancel: cancel.clone(),
        };
        if cancel.is_cancelled() {
            // Started in the moment between the cancellation and the check before it.
            registered.kill();
        }
        registered
    }

    /// Kills the group now (a timeout).
    pub fn kill(&self) {
        if let Some(pid) = self.group {
            kill_group(pid);
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(pid) = self.group {
            self.cancel.remove_group(pid);
        }
    }
}

/// Kills a child's process group when it makes no progress for a while: a frozen source (or a
/// network that silently drops packets) must fail a backup, not hang it for hours. The caller
/// reports progress with [`Watchdog::tick`] and asks [`Watchdog::stalled`] when the child ends.
#[derive(Debug)]
pub struct Watchdog {
    state: std::sync::Arc<WatchdogState>,
    limit: Duration,
}

#[derive(Debug)]
struct WatchdogState {
    started: Instant,
    /// Milliseconds since `started` of the last progress.
    last: std::sync::atomic::AtomicU64,
    stalled: std::sync::atomic::AtomicBool,
    done: std::sync::atomic::AtomicBool,
}

impl Watchdog {
    /// Watches the group led by `pid`, killing it after `limit` without a tick.
    pub fn start(pid: Option<u32>, limit: Duration) -> Self {
        let state = std::sync::Arc::new(WatchdogState {
            started: Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
            stalled: std::sync::atomic::AtomicBool::new(false),
            done: std::sync::atomic::AtomicBool::new(false),
        });
        if let Some(pid) = pid {
            let watched = state.clone();
            let poll = (limit / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
            std::thread::spawn(move || {
                while !watched.done.load(Ordering::SeqCst) {
                    std::thread::sleep(poll);
                    let now = watched.started.elapsed().as_millis() as u64;
                    let last = watched.last.load(Ordering::SeqCst);
                    if now.saturating_sub(last) > limit.as_millis() as u64 {
                        watched.stalled.store(true, Ordering::SeqCst);
                        kill_group(pid);
                        return;
                    }
                }
            });
        }
        Self { state, limit }
    }

    /// Records progress.
    pub fn tick(&self) {
        self.ticker().tick();
    }

    /// A handle another task or thread records progress through (the watchdog itself stays
    /// with the code that waits for the child).
    pub fn ticker(&self) -> Ticker {
        Ticker(self.state.clone())
    }

    /// Whether the child was killed for making no progress.
    pub fn stalled(&self) -> bool {
        self.state.stalled.load(Ordering::SeqCst)
    }

    /// The error to report for a stalled child: `what` made no progress for the limit.
    pub fn error(&self, kind: ErrorKind, what: &str) -> Error {
        Error::new(
            kind,
            format!(
                "{what} made no progress for {} s (stall_timeout_seconds) and was stopped",
                self.limit.as_secs()
            ),
        )
    }
}

/// Records progress for a [`Watchdog`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ticker(std::sync::Arc<WatchdogState>);

impl Ticker {
    /// Records progress.
    pub fn tick(&self) {
        let now = self.0.started.elapsed().as_millis() as u64;
        self.0.last.store(now, Ordering::SeqCst);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.done.store(true, Ordering::SeqCst);
    }
}

/// Keeps the last [`TAIL_BYTES`] of what `reader` yields, reading it to its end.
pub async fn read_tail(mut reader: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * TAIL_BYTES {
            tail.drain(..tail.len() - TAIL_BYTES);
        }
    }
    if tail.len() > TAIL_BYTES {
        tail.drain(..tail.len() - TAIL_BYTES);
    }
    tail
}

/// Drains a blocking child pipe on a thread of its own as the child runs, keeping the last
/// [`TAIL_BYTES`]: a child that writes a lot to stderr never blocks on a full pipe.
pub fn drain_tail(
    mut reader: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * TAIL_BYTES {
                tail.drain(..tail.len() - TAIL_BYTES);
            }
        }
        tail
    })
}

/// The last `n` lines of `bytes`, joined by ` | `, at most 400 characters: what an error line
/// quotes of a child's words (a client may echo whole rows back; they do not belong in logs).
pub fn tail_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim().lines().collect();
    let joined = redact_values(&lines[lines.len().saturating_sub(n)..].join(" | "));
    // The end is what explains the failure: keep it.
    let count = joined.chars().count();
    if count <= 400 {
        return joined;
    }
    let mut out = String::from("…");
    out.extend(joined.chars().skip(count - 400));
    out
}

/// Replaces every quoted value longer than 40 characters by its size: the client quotes the
/// statement it failed on (`near 'INSERT INTO … VALUES (…)'`), and rows of the backup do not
/// belong in an error line or a log. Short values (`Duplicate entry '42' for key 'PRIMARY'`,
/// names) stay, since they say what went wrong.
pub fn redact_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('\'') {
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        // A doubled quote or a backslash escapes a quote inside the value.
        let mut end = None;
        let bytes = after.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                b'\'' => {
                    end = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        let Some(end) = end else {
            // Unterminated (cut by the tail): judge what is there.
            if after.chars().count() > 40 {
                out.push_str(&format!("…({} bytes)", after.len()));
            } else {
                out.push_str(after);
            }
            return out;
        };
        let value = &after[..end];
        if value.chars().count() > 40 {
            out.push_str(&format!("…({} bytes)", value.len()));
        } else {
            out.push_str(value);
        }
        out.push('\'');
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `text` cut to at most `max` characters, with `…` where it was cut.
pub fn cap(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

/// How a shell command ended.
#[derive(Debug, Clone)]
pub struct CommandRun {
    /// Its exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Set when it was killed for running longer than this.
    pub timed_out: Option<Duration>,
    /// The last lines of its stdout and stderr.
    pub output: String,
    /// How long it ran.
    pub seconds: f64,
}

impl CommandRun {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// `exit 0 in 0.1 s: ok`, `timed out after 10 s in 10.0 s`, …
    pub fn describe(&self) -> String {
        let how = match (self.timed_out, self.code) {
            (Some(limit), _) => format!("timed out after {} s", limit.as_secs()),
            (None, Some(code)) => format!("exit {code}"),
            (None, None) => "killed by a signal".to_string(),
        };
        if self.output.is_empty() {
            format!("{how} in {:.1} s", self.seconds)
        } else {
            format!("{how} in {:.1} s: {}", self.seconds, self.output)
        }
    }
}

/// Runs `sh -c command` with exactly `env`, stdin closed, in its own process group; the group is
/// killed when `timeout` passes or `cancel` fires (an `after` hook, which runs because its job
/// was cancelled, gets a handle of its own). Output is read as it comes and its tail kept.
pub async fn run_shell(
    command: &str,
    env: &[(String, String)],
    timeout: Duration,
    cancel: &Cancel,
) -> Result<CommandRun> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::other(format!("cannot start `{command}`: {e}")))?;
    let group = Registered::new(child.id(), cancel);
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let collect = tokio::spawn(async move {
        let (mut out, err) = tokio::join!(read_tail(stdout), read_tail(stderr));
        out.extend_from_slice(&err);
        out
    });
    let (code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (
            status
                .map_err(|e| Error::other(format!("waiting for `{command}`: {e}")))?
                .code(),
            None,
        ),
        Err(_) => {
            // The whole group: `sh -c` and whatever it started.
            group.kill();
            let _ = child.wait().await;
            (None, Some(timeout))
        }
    };
    // A grandchild that kept the pipes open is in the group: killed above or still running
    // detached; either way the tail is whatever arrived within a moment.
    let output = tokio::time::timeout(Duration::from_secs(2), collect)
        .await
        .ok()
        .and_then(std::result::Result::ok)
        .unwrap_or_default();
    drop(group);
    Ok(CommandRun {
        code,
        timed_out,
        output: tail_lines(&output, 5),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_sees_none_of_coffers_secrets() {
        let env = scrubbed_env();
        assert!(env.iter().all(|(k, _)| INHERITED_ENV.contains(&k.as_str())));
        let run = run_shell(
            "test -z \"$AWS_SECRET_ACCESS_KEY\" && echo clean",
            &env,
            Duration::from_secs(5),
            &Cancel::new(),
        )
        .await
        .unwrap();
        assert!(run.success() && run.output == "clean", "{run:?}");
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed_with_everything_it_started() {
        let run = run_shell(
            "sleep 30 & sleep 30; echo never",
            &scrubbed_env(),
            Duration::from_millis(300),
            &Cancel::new(),
        )
        .await
        .unwrap();
        assert_eq!(run.timed_out, Some(Duration::from_millis(300)));
        assert!(run.seconds < 10.0, "{run:?}");
        assert!(!run.output.contains("never"));
    }

    #[test]
    fn a_child_that_makes_no_progress_is_stopped_and_one_that_does_is_not() {
        let spawn = || {
            tool_command(std::path::Path::new("/bin/sleep"))
                .arg("30")
                .spawn()
                .unwrap()
        };
        let mut frozen = spawn();
        let watchdog = Watchdog::start(Some(frozen.id()), Duration::from_millis(300));
        let started = Instant::now();
        let status = frozen.wait().unwrap();
        assert!(!status.success() && watchdog.stalled());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            watchdog
                .error(ErrorKind::Backup, "sleep")
                .to_string()
                .contains("no progress")
        );

        let mut busy = spawn();
        let watchdog = Watchdog::start(Some(busy.id()), Duration::from_millis(300));
        let ticker = watchdog.ticker();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(100));
            ticker.tick();
        }
        assert!(
            !watchdog.stalled(),
            "a child that made progress was stopped"
        );
        let _ = busy.kill();
        let _ = busy.wait();
    }

    #[tokio::test]
    async fn a_cancelled_job_kills_its_running_hook() {
        let cancel = Cancel::new();
        let run = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                run_shell(
                    "sleep 30; echo never",
                    &scrubbed_env(),
                    Duration::from_secs(60),
                    &cancel,
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel(crate::cancel::Reason::Signal(15));
        let run = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the hook died with its job")
            .unwrap()
            .unwrap();
        assert!(!run.success() && run.timed_out.is_none(), "{run:?}");
    }

    #[test]
    fn rows_the_client_echoes_are_redacted_and_short_values_kept() {
        let line = "ERROR 1064 (42000) at line 7: You have an error in your SQL syntax near 'INSERT INTO `invoices` VALUES (1,''ACME GmbH'',''IBAN DE89 3704 0044 0532 0130 00'',9000.00)' at line 1";
        let redacted = redact_values(line);
        assert!(!redacted.contains("IBAN"), "{redacted}");
        assert!(
            redacted.contains("near '…(") && redacted.ends_with("' at line 1"),
            "{redacted}"
        );
        let short = "ERROR 1062 (23000) at line 9: Duplicate entry '42' for key 'PRIMARY'";
        assert_eq!(redact_values(short), short);
        assert_eq!(
            redact_values("it's cut 'unterminated"),
            "it's cut 'unterminated"
        );
    }

    #[tokio::test]
    async fn output_is_kept_as_a_bounded_tail() {
        let run = run_shell(
            "head -c 5000000 /dev/zero | tr '\\0' 'x'; echo; echo last line",
            &scrubbed_env(),
            Duration::from_secs(20),
            &Cancel::new(),
        )
        .await
        .unwrap();
        assert!(run.success());
        assert!(run.output.ends_with("last line"), "{}", run.output);
        assert!(run.output.chars().count() <= 401);
    }
}
