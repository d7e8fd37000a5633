//! Where commands run: this machine, or a host reached over ssh.
//!
//! A process chain (`ssh → slurm → runtime`) is a series of places: each
//! decorating process reaches the next place, and the last one starts
//! runtimes there. A [`Shell`] is one such place: it runs short commands
//! (`sbatch`, `mkdir`, `sha256sum`) to completion and starts long-running
//! ones (runtimes) whose end can be awaited and which can be killed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// A boxed, sendable future (the traits here are object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How many bytes of a command's standard error are kept for messages.
pub const STDERR_TAIL: usize = 4096;

/// What went wrong running something somewhere.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    /// The host could not be reached (no route, refused, timed out, name unknown).
    #[error("{host}: unreachable: {detail}")]
    Unreachable {
        /// The host, as written in the descriptor.
        host: String,
        /// What ssh or the system said.
        detail: String,
    },
    /// The host refused our credentials.
    #[error("{host}: authentication refused: {detail}")]
    AuthRefused {
        /// The host, as written in the descriptor.
        host: String,
        /// What ssh said.
        detail: String,
    },
    /// The command could not be started or failed.
    #[error("{host}: {detail}")]
    Command {
        /// The host, as written in the descriptor (`localhost` for this machine).
        host: String,
        /// What failed, with the command's own words.
        detail: String,
    },
}

impl ExecError {
    /// The host the error is about.
    pub fn host(&self) -> &str {
        match self {
            ExecError::Unreachable { host, .. }
            | ExecError::AuthRefused { host, .. }
            | ExecError::Command { host, .. } => host,
        }
    }
}

/// The result of a command run to completion.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Everything it wrote on standard output.
    pub stdout: Vec<u8>,
    /// Everything it wrote on standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// `true` when the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output as text, trimmed.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }

    /// Standard error as text, trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }

    /// Turns a non-zero exit into an error naming `what` and quoting stderr.
    pub fn check(self, host: &str, what: &str) -> Result<Output, ExecError> {
        if self.success() {
            return Ok(self);
        }
        let status = match self.code {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".to_owned(),
        };
        let stderr = self.stderr_text();
        let detail = if stderr.is_empty() {
            format!("{what} failed ({status})")
        } else {
            format!("{what} failed ({status}): {stderr}")
        };
        Err(ExecError::Command {
            host: host.to_owned(),
            detail,
        })
    }
}

/// How a long-running command ended.
#[derive(Debug, Clone, Default)]
pub struct Exit {
    /// Exit code; `None` when killed by a signal or when the channel broke.
    pub code: Option<i32>,
    /// The last [`STDERR_TAIL`] bytes of its standard error.
    pub stderr_tail: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(c) => write!(f, "exited with code {c}")?,
            None => f.write_str("was killed")?,
        }
        let tail = self.stderr_tail.trim();
        if !tail.is_empty() {
            write!(f, ": {tail}")?;
        }
        Ok(())
    }
}

/// A long-running command started by a [`Shell`].
pub trait Running: Send {
    /// Waits until it ends.
    fn wait(&mut self) -> BoxFuture<'_, Exit>;
    /// Stops it (SIGKILL where the place allows it); does not wait.
    fn kill(&mut self);
}

/// A place where commands run.
pub trait Shell: Send + Sync + 'static {
    /// The host, as written in the descriptor (`localhost` for this machine).
    fn host(&self) -> &str;
    /// Runs `script` with `sh -c` to completion, feeding `stdin` if given.
    fn run<'a>(
        &'a self,
        script: &'a str,
        stdin: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Output, ExecError>>;
    /// Starts `script` with `sh -c`; its standard output is discarded and
    /// the tail of its standard error kept for [`Running::wait`]. `input`,
    /// when given, is written on its standard input, which then stays open
    /// as long as it runs (credentials travel that way: never in a command
    /// line or a file others can read).
    fn spawn<'a>(
        &'a self,
        script: &'a str,
        input: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Box<dyn Running>, ExecError>>;
    /// A command line for `/bin/sh` on this machine that runs `script` at
    /// this place without this process: what a cleanup that outlives this
    /// process (it was killed) runs. `None` when the place cannot be
    /// reached without this process.
    fn standalone_command(&self, _script: &str) -> Option<String> {
        None
    }
    /// How this place is logged in to, when it is an ssh host (an ssh
    /// process further down a chain goes through it).
    fn ssh_target(&self) -> Option<&crate::ssh::SshTarget> {
        None
    }
    /// Makes connections to a port on this place's loopback arrive at
    /// `to` (`host:port`, as this process reaches it), and returns that
    /// port: how processes there reach this one when nothing else can
    /// (an ssh remote forward). Only ssh hosts can.
    fn forward_here<'a>(&'a self, to: &'a str) -> BoxFuture<'a, Result<u16, ExecError>> {
        let _ = to;
        Box::pin(async move {
            Err(ExecError::Command {
                host: self.host().to_owned(),
                detail: "connections can be forwarded from ssh hosts only".into(),
            })
        })
    }
}

/// Quotes `s` for a POSIX shell (single quotes; safe for any byte string).
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Set on a runtime to say where its credentials come from: `stdin`, or
/// `file:<path>` (a `0600` file in a `0700` directory).
pub const CREDENTIALS_ENV: &str = "ACTOGRID_CREDENTIALS";

/// The command that starts one runtime: a program, its arguments, the
/// environment it needs (deployer address, node names) and its
/// credentials, which travel apart from the rest (see [`CREDENTIALS_ENV`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RuntimeCommand {
    /// Path of the program where it runs.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables set for it, in order.
    pub env: Vec<(String, String)>,
    /// Its credentials: given on its standard input when it is started
    /// directly, in a private file when a scheduler starts it. Never in
    /// its environment or command line.
    pub credentials: Option<String>,
}

impl std::fmt::Debug for RuntimeCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeCommand")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "(hidden)"),
            )
            .finish()
    }
}

impl RuntimeCommand {
    /// `env K=V … program args…`, quoted for a POSIX shell: what a
    /// scheduler's launcher (`srun`, `blaunch`, …) is given.
    pub fn argv_line(&self) -> String {
        let mut out = String::new();
        if !self.env.is_empty() {
            out.push_str("env");
            for (k, v) in &self.env {
                out.push(' ');
                out.push_str(&quote(&format!("{k}={v}")));
            }
            out.push(' ');
        }
        out.push_str(&quote(&self.program));
        for a in &self.args {
            out.push(' ');
            out.push_str(&quote(a));
        }
        out
    }

    /// `exec env K=V … program args…`: a shell that becomes the runtime.
    pub fn exec_line(&self) -> String {
        format!("exec {}", self.argv_line())
    }
}

/// This machine.
#[derive(Debug, Clone, Default)]
pub struct LocalShell;

impl LocalShell {
    fn command(script: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(script).kill_on_drop(true);
        cmd
    }
}

fn local_error(detail: impl fmt::Display) -> ExecError {
    ExecError::Command {
        host: "localhost".to_owned(),
        detail: detail.to_string(),
    }
}

impl Shell for LocalShell {
    fn host(&self) -> &str {
        "localhost"
    }

    fn run<'a>(
        &'a self,
        script: &'a str,
        stdin: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            let mut cmd = Self::command(script);
            cmd.stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .map_err(|e| local_error(format!("cannot start /bin/sh: {e}")))?;
            if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
                // A command that does not read its input closes the pipe: not an error.
                let _ = pipe.write_all(bytes).await;
                drop(pipe);
            }
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| local_error(format!("waiting for `{script}`: {e}")))?;
            Ok(Output {
                code: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        })
    }

    fn spawn<'a>(
        &'a self,
        script: &'a str,
        input: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Box<dyn Running>, ExecError>> {
        Box::pin(async move {
            let mut cmd = Self::command(script);
            cmd.stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .map_err(|e| local_error(format!("cannot start /bin/sh: {e}")))?;
            let mut stdin = child.stdin.take();
            if let (Some(bytes), Some(pipe)) = (input, stdin.as_mut()) {
                // A command that exits before reading closes the pipe: its
                // exit says why, not this write.
                let _ = pipe.write_all(bytes).await;
                let _ = pipe.flush().await;
            }
            let tail = StderrTail::collect(child.stderr.take());
            Ok(Box::new(LocalRunning {
                child,
                tail,
                _stdin: stdin,
            }) as Box<dyn Running>)
        })
    }

    fn standalone_command(&self, script: &str) -> Option<String> {
        Some(format!("/bin/sh -c {}", quote(script)))
    }
}

/// Keeps the last [`STDERR_TAIL`] bytes a process writes on a pipe.
#[derive(Debug, Clone, Default)]
pub struct StderrTail {
    buf: Arc<Mutex<Vec<u8>>>,
    done: Arc<tokio::sync::Notify>,
    finished: Arc<std::sync::atomic::AtomicBool>,
}

impl StderrTail {
    /// Starts draining `pipe` in a task (nothing to drain when `None`).
    pub fn collect<R: AsyncRead + Send + Unpin + 'static>(pipe: Option<R>) -> StderrTail {
        let tail = StderrTail::default();
        let Some(mut pipe) = pipe else {
            tail.finished
                .store(true, std::sync::atomic::Ordering::Release);
            return tail;
        };
        let writer = tail.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            loop {
                match pipe.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut buf = writer.buf.lock().unwrap_or_else(|p| p.into_inner());
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.len() > 2 * STDERR_TAIL {
                            let cut = buf.len() - STDERR_TAIL;
                            buf.drain(..cut);
                        }
                    }
                }
            }
            writer
                .finished
                .store(true, std::sync::atomic::Ordering::Release);
            writer.done.notify_waiters();
        });
        tail
    }

    /// Waits (up to one second) for the pipe to close, then returns the tail.
    pub async fn text(&self) -> String {
        let wait = async {
            loop {
                let notified = self.done.notified();
                if self.finished.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wait).await;
        let buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let start = buf.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&buf[start..]).into_owned()
    }
}

struct LocalRunning {
    child: tokio::process::Child,
    tail: StderrTail,
    /// Kept open while it runs.
    _stdin: Option<tokio::process::ChildStdin>,
}

impl Running for LocalRunning {
    fn wait(&mut self) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            let code = self.child.wait().await.ok().and_then(|s| s.code());
            Exit {
                code,
                stderr_tail: self.tail.text().await,
            }
        })
    }

    fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(quote("plain/path-1.2"), "plain/path-1.2");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), r"'it'\''s'");
        let cmd = RuntimeCommand {
            program: "/opt/my app/bin".into(),
            args: vec!["a b".into()],
            env: vec![("K".into(), "v w".into())],
            credentials: None,
        };
        assert_eq!(cmd.argv_line(), "env 'K=v w' '/opt/my app/bin' 'a b'");
    }

    #[tokio::test]
    async fn local_shell_runs_feeds_and_reports() {
        let sh = LocalShell;
        let out = sh.run("cat; echo err >&2", Some(b"in")).await.unwrap();
        assert_eq!(out.stdout, b"in");
        assert_eq!(out.stderr_text(), "err");
        let failed = sh.run("exit 3", None).await.unwrap();
        let err = failed.check("localhost", "the probe").unwrap_err();
        assert_eq!(err.to_string(), "localhost: the probe failed (exit code 3)");
        let mut running = sh.spawn("echo boom >&2; exit 7", None).await.unwrap();
        let exit = running.wait().await;
        assert_eq!(exit.code, Some(7));
        assert_eq!(exit.stderr_tail.trim(), "boom");
        let mut long = sh.spawn("exec sleep 30", None).await.unwrap();
        long.kill();
        assert_eq!(long.wait().await.code, None);
    }
}
