//! Hosts reached over ssh.
//!
//! An [`SshShell`] is one remote host: it opens a multiplexed master
//! connection (`ssh -M`, a control socket) and runs every command of the
//! deployment through it as a channel, so that a host costs one login (one
//! more per [`SshTarget::channels_per_connection`] commands running at
//! once). It implements [`Shell`], so process chains compose:
//! `ssh → runtime`, `ssh → slurm → runtime`.
//!
//! Closing an ssh channel does not signal the remote process (there is no
//! terminal), so a command started with [`Shell::spawn`] first reports its
//! pid and process group, and [`Running::kill`] sends `kill -9` to them over
//! the connection.
//!
//! What the system `ssh` does is kept: the ssh configuration (`-F`), keys,
//! agents and known-hosts files are the user's. On top of it the master is
//! started with `BatchMode` (never prompt), strict host-key checking unless
//! told otherwise, a connect timeout, and server keep-alives so that a host
//! that disappears is noticed within about `3 × ServerAliveInterval` instead
//! of hanging forever.
//!
//! Failures are sorted into [`ExecError`]s that name the host and quote
//! ssh's own words: [`ExecError::Unreachable`] (no route, timeout, refused,
//! unknown name, connection lost), [`ExecError::AuthRefused`] (`Permission
//! denied`, host key verification failed), [`ExecError::Command`] (the rest).
//!
//! The remote login shell must be a POSIX shell (sh, bash, dash, ksh, zsh):
//! scripts are passed to it as `sh -c '<script>'`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use openssh::{ControlPersist, Session, SessionBuilder, Stdio};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::exec::{BoxFuture, ExecError, Exit, Output, Running, Shell, StderrTail, quote};

pub use openssh::KnownHosts;

/// Environment variable naming the ssh configuration file used when an
/// [`SshTarget`] names none (`ssh -F`).
pub const SSH_CONFIG_ENV: &str = "ACTOGRID_SSH_CONFIG";

/// Default [`SshTarget::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`SshTarget::server_alive_interval`]: with ssh's default
/// `ServerAliveCountMax` of 3, a dead host is noticed after 9 to 12 seconds.
pub const DEFAULT_SERVER_ALIVE_INTERVAL: Duration = Duration::from_secs(3);

/// Default [`SshTarget::channels_per_connection`]: sshd's default
/// `MaxSessions`.
pub const DEFAULT_CHANNELS_PER_CONNECTION: usize = 10;

/// How long an idle master (no command, no runtime) stays up before it exits
/// by itself; the next command then logs in again. Bounds what is left
/// behind when this process dies without closing its connections.
const MASTER_IDLE_LIMIT: usize = 60;

/// How long [`Running::wait`] waits for the channel of a killed command to
/// close before it disconnects it.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// The host, as written in the descriptor (a name the ssh configuration
    /// may map to another address).
    pub host: String,
    /// Login name; `None` uses the ssh configuration (or the local user).
    pub username: Option<String>,
    /// Port; `None` uses the ssh configuration (22 by default).
    pub port: Option<u16>,
    /// Private key to use, and only that one; `None` uses the ssh
    /// configuration and agent.
    pub identity_file: Option<PathBuf>,
    /// ssh configuration file (`ssh -F`); `None` takes the file named by
    /// `ACTOGRID_SSH_CONFIG` ([`SSH_CONFIG_ENV`]) when set, else ssh's
    /// defaults (`~/.ssh/config`, `/etc/ssh/ssh_config`).
    pub config_file: Option<PathBuf>,
    /// How long establishing the connection may take (`ConnectTimeout`;
    /// whole seconds, at least one).
    pub connect_timeout: Duration,
    /// Keep-alive period of the master (`ServerAliveInterval`; whole
    /// seconds, at least one).
    pub server_alive_interval: Duration,
    /// Host-key policy; [`KnownHosts::Strict`] by default: an unknown or
    /// changed host key is refused.
    pub known_hosts: KnownHosts,
    /// Channels (commands, runtimes) one master connection carries at once
    /// before another is opened; keep it at or below the server's
    /// `MaxSessions` ([`DEFAULT_CHANNELS_PER_CONNECTION`] by default).
    pub channels_per_connection: usize,
    /// Where the masters' control directories (`.ssh-connection…`, holding
    /// the control socket and the master's log) are made; `None`: the
    /// system's temporary directory. A deployer puts them where the
    /// cleanup that outlives it finds them.
    pub control_directory: Option<PathBuf>,
    /// Hosts to go through, in order, before this one (`ProxyJump`:
    /// `[user@]host[:port]` each, logged in to with the configuration file
    /// and agent, not with this target's key).
    pub jump_hosts: Vec<String>,
}

impl SshTarget {
    /// A target with ssh's defaults for everything but the host.
    pub fn new(host: impl Into<String>) -> SshTarget {
        SshTarget {
            host: host.into(),
            username: None,
            port: None,
            identity_file: None,
            config_file: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            server_alive_interval: DEFAULT_SERVER_ALIVE_INTERVAL,
            known_hosts: KnownHosts::Strict,
            channels_per_connection: DEFAULT_CHANNELS_PER_CONNECTION,
            control_directory: None,
            jump_hosts: Vec::new(),
        }
    }

    /// The target reached through `via` (an ssh chain: this host is
    /// logged in to from `via`'s, through the hosts `via` goes through).
    pub fn through(mut self, via: &SshTarget) -> SshTarget {
        self.jump_hosts = via.jump_hosts.clone();
        self.jump_hosts.push(via.destination());
        self
    }

    /// `[user@]host[:port]`, as `ProxyJump` names a host.
    pub fn destination(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let user = self
            .username
            .as_ref()
            .map_or_else(String::new, |u| format!("{u}@"));
        let port = self.port.map_or_else(String::new, |p| format!(":{p}"));
        format!("{user}{host}{port}")
    }

    /// The target of a descriptor's `sshProcess` (or one host of a
    /// `processList`): `host` with the login options of `login`.
    pub fn from_login(
        host: impl Into<String>,
        login: &actogrid_descriptor::model::SshLogin,
    ) -> Self {
        SshTarget {
            username: login.username.clone(),
            port: login.port,
            identity_file: login.identity_file.as_ref().map(PathBuf::from),
            ..SshTarget::new(host)
        }
    }

    /// The configuration file that will be given to `ssh -F`, if any.
    pub fn effective_config_file(&self) -> Option<PathBuf> {
        self.config_file.clone().or_else(|| {
            std::env::var_os(SSH_CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    fn builder(&self) -> SessionBuilder {
        let mut b = SessionBuilder::default();
        b.known_hosts_check(self.known_hosts.clone())
            .connect_timeout(self.connect_timeout.max(Duration::from_secs(1)))
            .server_alive_interval(self.server_alive_interval.max(Duration::from_secs(1)))
            .control_directory(
                self.control_directory
                    .clone()
                    .unwrap_or_else(std::env::temp_dir),
            )
            .control_persist(ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(MASTER_IDLE_LIMIT)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            ));
        if let Some(user) = &self.username {
            b.user(user.clone());
        }
        if let Some(port) = self.port {
            b.port(port);
        }
        if let Some(key) = &self.identity_file {
            b.keyfile(key);
        }
        if let Some(config) = self.effective_config_file() {
            b.config_file(config);
        }
        if !self.jump_hosts.is_empty() {
            b.jump_hosts(&self.jump_hosts);
        }
        b
    }
}

/// A host reached over ssh: one master connection, many commands.
///
/// Every command of every provider that targets the host should go through
/// the same `SshShell` (share it behind an `Arc`). Commands are channels of
/// the master connection; when more than
/// [`SshTarget::channels_per_connection`] are open at once (sshd refuses
/// more than its `MaxSessions`, 10 by default), a second master is opened,
/// and so on. When a master is lost (the host went away, or it was idle for
/// ten minutes) the commands in flight on it fail with
/// [`ExecError::Unreachable`] and the next command logs in again.
pub struct SshShell {
    inner: Arc<Inner>,
}

struct Inner {
    target: SshTarget,
    masters: tokio::sync::Mutex<Vec<Master>>,
    closed: AtomicBool,
}

/// One master connection and how many channels use it now.
#[derive(Clone)]
struct Master {
    session: Arc<Session>,
    busy: Arc<AtomicUsize>,
}

/// A channel's place on a master; freed when dropped.
struct Slot {
    session: Arc<Session>,
    busy: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for SshShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshShell")
            .field("target", &self.inner.target)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SshShell {
    /// Logs in to `target` and keeps the master connection open.
    ///
    /// Fails with [`ExecError::Unreachable`] or [`ExecError::AuthRefused`]
    /// (with ssh's words) within about the connect timeout.
    pub async fn connect(target: &SshTarget) -> Result<SshShell, ExecError> {
        let session = open_master(target).await?;
        Ok(SshShell {
            inner: Arc::new(Inner {
                target: target.clone(),
                masters: tokio::sync::Mutex::new(vec![Master {
                    session: Arc::new(session),
                    busy: Arc::new(AtomicUsize::new(0)),
                }]),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Where this shell logs in.
    pub fn target(&self) -> &SshTarget {
        &self.inner.target
    }

    /// How many master connections are open now (one, unless many
    /// commands run at once).
    pub async fn connections(&self) -> usize {
        self.inner.masters.lock().await.len()
    }

    /// Checks that the master connections are alive, forgetting those that
    /// are not, and logs in again when none is left.
    pub async fn check(&self) -> Result<(), ExecError> {
        let masters: Vec<Master> = self.inner.masters.lock().await.clone();
        for m in &masters {
            if let Err(e) = m.session.check().await {
                tracing::debug!(host = %self.inner.target.host, "ssh master lost: {}", error_words(&e));
                self.inner.forget(&m.session).await;
            }
        }
        self.inner.slot().await.map(drop)
    }

    /// Ends the master connections. Commands and runtimes still using them
    /// lose their channels; later commands fail.
    pub async fn close(&self) -> Result<(), ExecError> {
        self.inner.closed.store(true, Ordering::Release);
        let masters = std::mem::take(&mut *self.inner.masters.lock().await);
        let mut result = Ok(());
        for m in masters {
            let r = self.inner.close_master(m.session).await;
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Inner {
    fn host(&self) -> &str {
        &self.target.host
    }

    /// A channel on a master with room, logging in again when there is none.
    async fn slot(&self) -> Result<Slot, ExecError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.command_error("the ssh connection was closed"));
        }
        let limit = self.target.channels_per_connection.max(1);
        let mut masters = self.masters.lock().await;
        for m in masters.iter() {
            let taken = m
                .busy
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok();
            if taken {
                return Ok(Slot {
                    session: Arc::clone(&m.session),
                    busy: Arc::clone(&m.busy),
                });
            }
        }
        if !masters.is_empty() {
            tracing::debug!(
                host = %self.target.host,
                "{} channels busy on each of {} ssh connections: opening another",
                limit,
                masters.len()
            );
        }
        let master = Master {
            session: Arc::new(open_master(&self.target).await?),
            busy: Arc::new(AtomicUsize::new(1)),
        };
        masters.push(master.clone());
        Ok(Slot {
            session: master.session,
            busy: master.busy,
        })
    }

    /// Drops `session` from the masters (it is dead).
    async fn forget(&self, session: &Arc<Session>) {
        self.masters
            .lock()
            .await
            .retain(|m| !Arc::ptr_eq(&m.session, session));
    }

    async fn close_master(&self, session: Arc<Session>) -> Result<(), ExecError> {
        match Arc::try_unwrap(session) {
            Ok(session) => session.close().await.map_err(|e| {
                self.command_error(format!("closing the ssh connection: {}", error_words(&e)))
            }),
            Err(shared) => {
                // Running commands still hold the session: ask the master to
                // exit now; the control directory goes with the last holder.
                let out = tokio::process::Command::new("ssh")
                    .arg("-S")
                    .arg(shared.control_socket())
                    .args(["-o", "BatchMode=yes", "-O", "exit", "none"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .output()
                    .await;
                match out {
                    Ok(o) if o.status.success() => Ok(()),
                    Ok(o) => Err(self.command_error(format!(
                        "closing the ssh connection: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ))),
                    Err(e) => Err(self
                        .command_error(format!("closing the ssh connection: cannot run ssh: {e}"))),
                }
            }
        }
    }

    /// A remote forward on the first master: the host's loopback port it
    /// listens on (chosen by the host) leads to `to` here. It lasts as
    /// long as that master.
    async fn forward_here(&self, to: &str) -> Result<u16, ExecError> {
        let socket = {
            let masters = self.masters.lock().await;
            match masters.first() {
                Some(m) => m.session.control_socket().to_path_buf(),
                None => return Err(self.command_error("no ssh connection to forward over")),
            }
        };
        let out = tokio::process::Command::new("ssh")
            .arg("-S")
            .arg(&socket)
            .args(["-o", "BatchMode=yes", "-O", "forward", "-R"])
            .arg(format!("127.0.0.1:0:{to}"))
            .arg("none")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .map_err(|e| self.command_error(format!("cannot run ssh to forward a port: {e}")))?;
        let said = String::from_utf8_lossy(&out.stdout);
        match said.trim().parse::<u16>() {
            Ok(port) if out.status.success() && port != 0 => Ok(port),
            _ => Err(self.command_error(format!(
                "the ssh connection refused to forward a port to {to}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }

    fn unreachable(&self, detail: impl Into<String>) -> ExecError {
        ExecError::Unreachable {
            host: self.target.host.clone(),
            detail: detail.into(),
        }
    }

    fn command_error(&self, detail: impl Into<String>) -> ExecError {
        ExecError::Command {
            host: self.target.host.clone(),
            detail: detail.into(),
        }
    }

    /// After a channel ended without an exit status (ssh's 255): decides
    /// whether the connection was lost. Returns the error to report when it
    /// was, after forgetting the dead master.
    async fn lost_connection(&self, session: &Arc<Session>, stderr: &str) -> Option<ExecError> {
        let words = mux_failure(stderr);
        match session.check().await {
            Ok(()) => words.map(|w| self.command_error(format!("ssh channel refused: {w}"))),
            Err(e) => {
                self.forget(session).await;
                let fallback = words.unwrap_or_else(|| "the master connection ended".to_owned());
                Some(self.unreachable(format!(
                    "ssh connection lost: {}",
                    master_words(&e, &fallback)
                )))
            }
        }
    }

    async fn run(&self, script: &str, stdin: Option<&[u8]>) -> Result<Output, ExecError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let slot = self.slot().await?;
            match self.run_once(&slot.session, script, stdin).await {
                Ok(out) => return Ok(out),
                Err(Attempt::Retry(e)) if attempts == 1 => {
                    tracing::debug!(host = %self.target.host, "ssh master gone ({e}); logging in again");
                }
                Err(Attempt::Retry(e) | Attempt::Failed(e)) => return Err(e),
            }
        }
    }

    async fn run_once(
        &self,
        session: &Arc<Session>,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Output, Attempt> {
        let mut cmd = Session::to_raw_command(Arc::clone(session), "sh");
        cmd.raw_arg("-c").raw_arg(quote(script));
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().await.map_err(|e| {
            Attempt::Failed(self.command_error(format!("cannot run ssh: {}", error_words(&e))))
        })?;
        let input = child.stdin().take();
        let mut out_pipe = child.stdout().take();
        let mut err_pipe = child.stderr().take();
        let feed = async move {
            if let (Some(bytes), Some(mut pipe)) = (stdin, input) {
                // A command that does not read its input closes the pipe: not an error.
                let _ = pipe.write_all(bytes).await;
                let _ = pipe.shutdown().await;
            }
        };
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(p) = out_pipe.as_mut() {
                let _ = p.read_to_end(&mut buf).await;
            }
            buf
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(p) = err_pipe.as_mut() {
                let _ = p.read_to_end(&mut buf).await;
            }
            buf
        };
        let ((), stdout, stderr) = tokio::join!(feed, read_out, read_err);
        let code = match child.wait().await {
            Ok(st) => st.code(),
            Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => Some(127),
            Err(openssh::Error::RemoteProcessTerminated | openssh::Error::Disconnected) => {
                let text = String::from_utf8_lossy(&stderr).into_owned();
                if let Some(err) = self.lost_connection(session, &text).await {
                    return Err(if never_reached_master(&text) {
                        Attempt::Retry(err)
                    } else {
                        Attempt::Failed(err)
                    });
                }
                // Alive master: the command was killed by a signal (or
                // exited with 255, which ssh cannot tell apart).
                None
            }
            Err(e) => {
                return Err(Attempt::Failed(
                    self.command_error(format!("ssh: {}", error_words(&e))),
                ));
            }
        };
        Ok(Output {
            code,
            stdout,
            stderr,
        })
    }

    async fn spawn(
        self: &Arc<Self>,
        script: &str,
        input: Option<&[u8]>,
    ) -> Result<Box<dyn Running>, ExecError> {
        // The wrapper reports its pid and process group on the first line
        // of its standard output, then becomes the script; the script's own
        // standard output is discarded. Closing an ssh channel does not
        // signal the remote process, so `kill` uses these numbers.
        let wrapper = format!(
            "printf '%s %s\\n' \"$$\" \"$(ps -o pgid= -p $$ 2>/dev/null)\"; exec sh -c {} >/dev/null",
            quote(script)
        );
        let mut attempts = 0;
        loop {
            attempts += 1;
            let slot = self.slot().await?;
            let mut cmd = Session::to_raw_command(Arc::clone(&slot.session), "sh");
            cmd.raw_arg("-c").raw_arg(quote(&wrapper));
            cmd.stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .await
                .map_err(|e| self.command_error(format!("cannot run ssh: {}", error_words(&e))))?;
            let mut stdin = child.stdin().take();
            if let (Some(bytes), Some(pipe)) = (input, stdin.as_mut()) {
                let _ = pipe.write_all(bytes).await;
                let _ = pipe.flush().await;
            }
            let stdout = child.stdout().take();
            let tail = StderrTail::collect(child.stderr().take());
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = BufReader::new(out).read_line(&mut line).await;
            }
            let mut ids = line.split_whitespace().map(str::parse::<u32>);
            let pid = ids.next().and_then(Result::ok);
            let pgid = ids.next().and_then(Result::ok);
            if let Some(pid) = pid {
                return Ok(Box::new(SshRunning {
                    shell: Arc::clone(self),
                    slot: Some(slot),
                    _stdin: stdin,
                    child: Some(child),
                    tail,
                    pid,
                    pgid,
                    killer: None,
                    killed: false,
                    exit: None,
                }));
            }
            // No pid: the channel failed before the wrapper ran.
            let _ = child.wait().await;
            let stderr = tail.text().await;
            match self.lost_connection(&slot.session, &stderr).await {
                Some(err) if attempts == 1 && never_reached_master(&stderr) => {
                    tracing::debug!(host = %self.target.host, "ssh master gone ({err}); logging in again");
                }
                Some(err) => return Err(err),
                None => {
                    return Err(self
                        .command_error(format!("starting `{script}` failed: {}", stderr.trim())));
                }
            }
        }
    }
}

enum Attempt {
    /// Failed before the command ran: worth one more try with a new master.
    Retry(ExecError),
    Failed(ExecError),
}

/// Whether the multiplexing client says it never reached the master (the
/// command did not start, so it can be sent again).
fn never_reached_master(stderr: &str) -> bool {
    // Without a master, the client falls back to connecting by itself to
    // the placeholder destination `none` (on the discard port), and fails.
    // A `mux_client_…` complaint means the request reached the master,
    // which may have started the command before it died.
    !stderr.contains("mux_client_")
        && (stderr.contains("Control socket connect") || stderr.contains("hostname none:"))
}

impl Shell for SshShell {
    fn host(&self) -> &str {
        self.inner.host()
    }

    fn ssh_target(&self) -> Option<&SshTarget> {
        Some(&self.inner.target)
    }

    fn run<'a>(
        &'a self,
        script: &'a str,
        stdin: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(self.inner.run(script, stdin))
    }

    fn spawn<'a>(
        &'a self,
        script: &'a str,
        input: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Box<dyn Running>, ExecError>> {
        Box::pin(self.inner.spawn(script, input))
    }

    fn forward_here<'a>(&'a self, to: &'a str) -> BoxFuture<'a, Result<u16, ExecError>> {
        Box::pin(self.inner.forward_here(to))
    }

    /// `ssh … host 'sh -c …'` with this shell's login options, through a
    /// master of this shell while one is up (`ControlMaster=no` falls back
    /// to logging in by itself when the control socket is gone).
    fn standalone_command(&self, script: &str) -> Option<String> {
        let target = &self.inner.target;
        let socket = self
            .inner
            .masters
            .try_lock()
            .ok()
            .and_then(|m| m.first().map(|m| m.session.control_socket().to_path_buf()));
        let strict = match target.known_hosts {
            KnownHosts::Strict => "StrictHostKeyChecking=yes",
            KnownHosts::Add => "StrictHostKeyChecking=accept-new",
            KnownHosts::Accept => "StrictHostKeyChecking=no",
        };
        let mut argv: Vec<String> = vec![
            "ssh".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            strict.into(),
            "-o".into(),
            format!("ConnectTimeout={}", target.connect_timeout.as_secs().max(1)),
            "-o".into(),
            format!(
                "ServerAliveInterval={}",
                target.server_alive_interval.as_secs().max(1)
            ),
            "-o".into(),
            "ControlMaster=no".into(),
            "-o".into(),
            match &socket {
                Some(p) => format!("ControlPath={}", p.display()),
                None => "ControlPath=none".into(),
            },
        ];
        if let Some(port) = target.port {
            argv.extend(["-p".into(), port.to_string()]);
        }
        if let Some(user) = &target.username {
            argv.extend(["-l".into(), user.clone()]);
        }
        if let Some(key) = &target.identity_file {
            argv.extend([
                "-o".into(),
                "IdentitiesOnly=yes".into(),
                "-i".into(),
                key.display().to_string(),
            ]);
        }
        if let Some(config) = target.effective_config_file() {
            argv.extend(["-F".into(), config.display().to_string()]);
        }
        if !target.jump_hosts.is_empty() {
            argv.extend(["-J".into(), target.jump_hosts.join(",")]);
        }
        argv.extend([
            "--".into(),
            target.host.clone(),
            format!("sh -c {}", quote(script)),
        ]);
        Some(argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "))
    }
}

/// A command started over ssh, whose channel stays open until it ends.
struct SshRunning {
    shell: Arc<Inner>,
    /// Its place on the master; held until it ends.
    slot: Option<Slot>,
    /// Its standard input, kept open while it runs.
    _stdin: Option<openssh::ChildStdin>,
    child: Option<openssh::Child<Arc<Session>>>,
    tail: StderrTail,
    pid: u32,
    pgid: Option<u32>,
    killer: Option<tokio::task::JoinHandle<()>>,
    killed: bool,
    exit: Option<Exit>,
}

impl SshRunning {
    /// The remote command that kills the process group (all that the
    /// channel started) and the process itself.
    fn kill_script(&self) -> String {
        let mut s = String::new();
        if let Some(pg) = self.pgid.filter(|&pg| pg > 1) {
            s.push_str(&format!("kill -9 -{pg} 2>/dev/null; "));
        }
        s.push_str(&format!("kill -9 {} 2>/dev/null; true", self.pid));
        s
    }
}

impl Running for SshRunning {
    fn wait(&mut self) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            if let Some(exit) = &self.exit {
                return exit.clone();
            }
            if let Some(killer) = self.killer.take() {
                let _ = tokio::time::timeout(KILL_GRACE, killer).await;
            }
            let mut lost = None;
            let code = match self.child.take() {
                None => None,
                Some(child) => {
                    let status = if self.killed {
                        // The process did not go: give up the channel.
                        tokio::time::timeout(KILL_GRACE, child.wait()).await.ok()
                    } else {
                        Some(child.wait().await)
                    };
                    match status {
                        _ if self.killed => None,
                        Some(Ok(st)) => st.code(),
                        Some(Err(openssh::Error::Remote(e)))
                            if e.kind() == std::io::ErrorKind::NotFound =>
                        {
                            Some(127)
                        }
                        Some(Err(_)) | None => {
                            if let Some(slot) = &self.slot {
                                if let Err(e) = slot.session.check().await {
                                    self.shell.forget(&slot.session).await;
                                    lost = Some(master_words(&e, "the master connection ended"));
                                }
                            }
                            None
                        }
                    }
                }
            };
            self.slot = None;
            let mut stderr_tail = self.tail.text().await;
            if let Some(words) = lost {
                if !stderr_tail.is_empty() && !stderr_tail.ends_with('\n') {
                    stderr_tail.push('\n');
                }
                stderr_tail.push_str(&format!(
                    "ssh connection to {} lost: {words}",
                    self.shell.host()
                ));
            }
            let exit = Exit { code, stderr_tail };
            self.exit = Some(exit.clone());
            exit
        })
    }

    fn kill(&mut self) {
        if self.killed || self.exit.is_some() {
            return;
        }
        self.killed = true;
        let script = self.kill_script();
        let shell = Arc::clone(&self.shell);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                // Over any master of the host (the process's own may be full).
                self.killer = Some(handle.spawn(async move {
                    match shell.run(&script, None).await {
                        Ok(out) if out.success() => {}
                        Ok(out) => tracing::warn!(
                            host = shell.host(),
                            "killing a remote process: {}",
                            out.stderr_text()
                        ),
                        Err(e) => tracing::warn!("killing a remote process: {e}"),
                    }
                }));
            }
            Err(_) => {
                // Outside a runtime nothing can be sent: at least drop the channel.
                tracing::warn!(
                    host = self.shell.host(),
                    "kill outside a tokio runtime: the remote process {} is left running",
                    self.pid
                );
                self.child = None;
            }
        }
    }
}

impl Drop for SshRunning {
    fn drop(&mut self) {
        // As for local processes: a runtime nobody holds any more is killed.
        if self.exit.is_none() && !self.killed {
            self.kill();
        }
    }
}

/// Starts the master connection to `target`.
async fn open_master(target: &SshTarget) -> Result<Session, ExecError> {
    check_login(target)?;
    let builder = target.builder();
    // ssh's ConnectTimeout covers the TCP connect and banner; the outer
    // limit also bounds a server that stalls during key exchange or login.
    let limit = target.connect_timeout.max(Duration::from_secs(1)) * 2 + Duration::from_secs(5);
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(limit, builder.connect(&target.host)).await;
    tracing::debug!(host = %target.host, elapsed = ?started.elapsed(), "ssh master connect");
    match result {
        Err(_) => Err(ExecError::Unreachable {
            host: target.host.clone(),
            detail: format!("no ssh login within {} s", limit.as_secs()),
        }),
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(with_resolution_hint(
            classify_connect_error(&target.host, &e),
            target,
        )),
    }
}

/// A host name ssh cannot resolve is often an alias of an ssh
/// configuration this process was not given: say which file is read and
/// how to name another.
fn with_resolution_hint(error: ExecError, target: &SshTarget) -> ExecError {
    let ExecError::Unreachable { host, detail } = error else {
        return error;
    };
    if !detail.contains("Could not resolve hostname") {
        return ExecError::Unreachable { host, detail };
    }
    let hint = match target.effective_config_file() {
        Some(file) => format!(
            "it is not an alias of the ssh configuration {} either",
            file.display()
        ),
        None => format!(
            "if it is an alias of your ssh configuration, set {SSH_CONFIG_ENV} (or DeployOptions::ssh_config) to that file"
        ),
    };
    ExecError::Unreachable {
        detail: format!("`{host}` does not resolve ({detail}); {hint}"),
        host,
    }
}

/// Refuses a host or login name that ssh would read as something else: a
/// leading `-` is an option (`-oProxyCommand=…` runs a command here), and
/// blanks or control characters are not part of any name (and reach the
/// `%h` and `%r` of a `ProxyCommand` as they are).
fn check_login(target: &SshTarget) -> Result<(), ExecError> {
    let bad = |name: &str| {
        name.is_empty()
            || name.starts_with('-')
            || name.chars().any(|c| c.is_control() || c.is_whitespace())
    };
    let refuse = |what: &str, name: &str| ExecError::Command {
        host: target.host.clone(),
        detail: format!(
            "refusing to log in: the {what} {name:?} is empty, starts with `-` or holds a blank or a control character"
        ),
    };
    if bad(&target.host) {
        return Err(refuse("host name", &target.host));
    }
    if let Some(user) = &target.username
        && bad(user)
    {
        return Err(refuse("login name", user));
    }
    Ok(())
}

/// Sorts a failure to log in into unreachable / refused / other.
fn classify_connect_error(host: &str, e: &openssh::Error) -> ExecError {
    let words = error_words(e);
    match e {
        openssh::Error::Connect(_) => classify_words(host, words),
        _ => ExecError::Command {
            host: host.to_owned(),
            detail: format!("cannot start ssh: {words}"),
        },
    }
}

/// Sorts ssh's message about a failed login.
fn classify_words(host: &str, words: String) -> ExecError {
    const REFUSED: &[&str] = &[
        "Permission denied",
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "No matching host key",
        "Too many authentication failures",
    ];
    const UNREACHABLE: &[&str] = &[
        "timed out",
        "Connection refused",
        "No route to host",
        "Network is unreachable",
        "Could not resolve",
        "Name or service not known",
        "Temporary failure in name resolution",
        "Connection reset",
        "Connection closed",
        "closed by remote host",
        "Broken pipe",
        "not responding",
        "Host is down",
    ];
    if REFUSED.iter().any(|p| words.contains(p)) {
        ExecError::AuthRefused {
            host: host.to_owned(),
            detail: words,
        }
    } else if UNREACHABLE.iter().any(|p| words.contains(p)) {
        ExecError::Unreachable {
            host: host.to_owned(),
            detail: words,
        }
    } else {
        ExecError::Command {
            host: host.to_owned(),
            detail: format!("ssh login failed: {words}"),
        }
    }
}

/// ssh's own words in an `openssh` error (its source carries them).
fn error_words(e: &openssh::Error) -> String {
    let mut words = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        words = s.to_string();
        source = s.source();
    }
    let words = words.trim();
    let words = words.strip_prefix("ssh: ").unwrap_or(words);
    words
        .lines()
        .filter(|l| !l.starts_with("Warning: Permanently added"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the master said when it died, or `fallback`.
fn master_words(e: &openssh::Error, fallback: &str) -> String {
    match e {
        openssh::Error::Master(_) | openssh::Error::Connect(_) => {
            let w = error_words(e);
            if w.is_empty() { fallback.to_owned() } else { w }
        }
        _ => fallback.to_owned(),
    }
}

/// The lines in which the local multiplexing client reports that it could
/// not use the master (`Control socket connect(...)`, a refused session).
fn mux_failure(stderr: &str) -> Option<String> {
    const MARKS: &[&str] = &[
        "Control socket connect",
        "mux_client_",
        "Session open refused",
        "ControlSocket",
        "master hello",
        "hostname none:",
    ];
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(|l| {
            if l.contains("hostname none:") {
                "the master connection is gone"
            } else {
                l
            }
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn login_failures_are_sorted() {
        let refused = classify_words("h", "root@10.0.0.1: Permission denied (publickey).".into());
        assert!(matches!(refused, ExecError::AuthRefused { .. }));
        let timeout = classify_words(
            "h",
            "connect to host 10.0.0.1 port 22: Connection timed out".into(),
        );
        assert!(matches!(timeout, ExecError::Unreachable { .. }));
        let name = classify_words(
            "nowhere",
            "Could not resolve hostname nowhere: Name or service not known".into(),
        );
        assert!(matches!(name, ExecError::Unreachable { ref host, .. } if host == "nowhere"));
        let other = classify_words(
            "h",
            "/x/config line 3: Bad configuration option: foo".into(),
        );
        assert!(matches!(other, ExecError::Command { .. }));
    }

    #[test]
    fn a_name_that_does_not_resolve_points_at_the_ssh_configuration() {
        let words = "Could not resolve hostname agh1: Name or service not known".to_owned();
        let mut target = SshTarget::new("agh1");
        target.config_file = None;
        let plain = with_resolution_hint(classify_words("agh1", words.clone()), &target);
        if std::env::var_os(SSH_CONFIG_ENV).is_none() {
            let text = plain.to_string();
            assert!(
                text.starts_with("agh1: unreachable: `agh1` does not resolve ("),
                "{text}"
            );
            assert!(text.contains("set ACTOGRID_SSH_CONFIG"), "{text}");
        }
        target.config_file = Some("/etc/cluster/ssh_config".into());
        let text = with_resolution_hint(classify_words("agh1", words), &target).to_string();
        assert!(
            text.contains("not an alias of the ssh configuration /etc/cluster/ssh_config"),
            "{text}"
        );
        let refused = classify_words("h", "Permission denied (publickey).".into());
        assert!(matches!(
            with_resolution_hint(refused, &target),
            ExecError::AuthRefused { .. }
        ));
    }

    #[test]
    fn mux_client_failures_are_recognised() {
        assert!(mux_failure("hello\n").is_none());
        let w = mux_failure("Control socket connect(/tmp/x/master): No such file or directory\r\n");
        assert_eq!(
            w.as_deref(),
            Some("Control socket connect(/tmp/x/master): No such file or directory")
        );
        let stderr = "ssh: Could not resolve hostname none: Name or service not known\r\n";
        assert!(never_reached_master(stderr));
        assert!(!never_reached_master(&format!(
            "mux_client_request_session: read from master failed: Broken pipe\n{stderr}"
        )));
        assert_eq!(
            mux_failure(stderr).as_deref(),
            Some("the master connection is gone")
        );
    }

    #[test]
    fn targets_follow_the_descriptor() {
        let login = actogrid_descriptor::model::SshLogin {
            username: Some("bob".into()),
            port: Some(2222),
            identity_file: Some("/k".into()),
        };
        let t = SshTarget::from_login("n1", &login);
        assert_eq!(t.host, "n1");
        assert_eq!(t.username.as_deref(), Some("bob"));
        assert_eq!(t.port, Some(2222));
        assert_eq!(t.identity_file.as_deref(), Some(Path::new("/k")));
        assert!(matches!(t.known_hosts, KnownHosts::Strict));
    }

    #[tokio::test]
    async fn a_host_or_login_that_ssh_would_read_as_an_option_is_refused_before_ssh_runs() {
        for (host, user) in [
            ("-oProxyCommand=touch /tmp/x", None),
            ("front\nrm -rf ~", None),
            ("front end", None),
            ("front", Some("-oProxyCommand=id")),
            ("front", Some("bob\n")),
        ] {
            let mut target = SshTarget::new(host);
            target.username = user.map(str::to_owned);
            let err = SshShell::connect(&target)
                .await
                .expect_err("refused without running ssh");
            assert!(
                matches!(&err, ExecError::Command { detail, .. } if detail.starts_with("refusing to log in")),
                "{host:?} {user:?}: {err}"
            );
        }
    }
}
