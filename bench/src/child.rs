//! Server processes and CPU placement.
//!
//! Every server a benchmark talks to is this binary again, started with a
//! hidden `serve-*` subcommand (see `serve.rs`). The child prints one line
//! `LISTENING <host:port>` on stdout once it accepts connections, and
//! serves until its stdin reaches end of file: a [`Child`] holds the other
//! end of that pipe, so the server goes away with the benchmark, even when
//! the benchmark fails or is killed.
//!
//! On two shared vCPUs a wake-up across CPUs costs tens of microseconds,
//! so latency and throughput are measured in two [`Mode`]s: unpinned,
//! and with the benchmark and its servers all on CPU 0.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};

/// How long a child may take to print its `LISTENING` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the benchmark and its servers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Wherever the scheduler puts them.
    Unpinned,
    /// Everything on CPU 0: no wake-up crosses CPUs.
    Pinned,
}

impl Mode {
    /// The mode's name, as printed.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Unpinned => "unpinned",
            Mode::Pinned => "pinned",
        }
    }

    /// Pins this process (every thread) to CPU 0 in [`Mode::Pinned`]; the
    /// returned guard restores the previous placement. Call it after the
    /// tokio runtime started, so its workers are pinned too, and after the
    /// children of an unpinned mode were spawned (they would inherit the
    /// placement).
    pub(crate) fn place_self(self) -> anyhow::Result<Option<PinnedSelf>> {
        match self {
            Mode::Unpinned => Ok(None),
            Mode::Pinned => PinnedSelf::pin().map(Some),
        }
    }
}

/// This process pinned to CPU 0; unpinned again on drop.
#[derive(Debug)]
pub(crate) struct PinnedSelf {
    /// The CPU list before pinning (`0-1`).
    previous: String,
}

impl PinnedSelf {
    fn pin() -> anyhow::Result<PinnedSelf> {
        let status = std::fs::read_to_string("/proc/self/status")
            .context("cannot read /proc/self/status")?;
        let previous = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .context("no Cpus_allowed_list in /proc/self/status")?
            .trim()
            .to_owned();
        set_own_affinity("0")?;
        Ok(PinnedSelf { previous })
    }
}

impl Drop for PinnedSelf {
    fn drop(&mut self) {
        if let Err(e) = set_own_affinity(&self.previous) {
            eprintln!("warning: cannot unpin the benchmark: {e:#}");
        }
    }
}

/// `taskset -a -p -c <cpus> <own pid>`: every thread of this process.
fn set_own_affinity(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("cannot run taskset (util-linux)")?;
    ensure!(status.success(), "taskset -a -p -c {cpus} failed: {status}");
    Ok(())
}

/// A server process; killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct Child {
    process: std::process::Child,
    /// Closed on drop: the child's signal to exit.
    stdin: Option<ChildStdin>,
    address: String,
    what: String,
}

impl Child {
    /// Starts this binary with `args` (`["serve-node", "--listen", …]`),
    /// under `taskset -c 0` in [`Mode::Pinned`], and waits for its address.
    pub(crate) fn spawn(args: &[&str], mode: Mode) -> anyhow::Result<Child> {
        Child::spawn_with(args, mode, &[], None)
    }

    /// A `serve-node` child of `rt`'s trust domain: it gets credentials of
    /// `rt`'s authority on its standard input, or runs without TLS when
    /// `rt` does.
    pub(crate) fn node(mode: Mode, rt: &actogrid_runtime::Runtime) -> anyhow::Result<Child> {
        if rt.identity().is_plaintext() {
            return Child::spawn_with(
                &["serve-node"],
                mode,
                &[(actogrid_runtime::tls::PLAINTEXT_ENV, "1")],
                None,
            );
        }
        let credentials = actogrid::node_credentials(rt)?;
        Child::spawn_with(
            &["serve-node"],
            mode,
            &[(actogrid::CREDENTIALS_ENV, "stdin")],
            Some(&credentials),
        )
    }

    /// [`Child::spawn`], with `env` added to its environment and `input`
    /// written first on its standard input.
    pub(crate) fn spawn_with(
        args: &[&str],
        mode: Mode,
        env: &[(&str, &str)],
        input: Option<&str>,
    ) -> anyhow::Result<Child> {
        use std::io::Write as _;
        let exe = std::env::current_exe().context("cannot find the benchmark's executable")?;
        let mut command = match mode {
            Mode::Unpinned => Command::new(&exe),
            Mode::Pinned => {
                let mut c = Command::new("taskset");
                c.args(["-c", "0"]).arg(&exe);
                c
            }
        };
        let what = format!("`{}` ({})", args.join(" "), mode.name());
        let mut process = command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let mut stdin = process.stdin.take();
        if let (Some(text), Some(pipe)) = (input, stdin.as_mut()) {
            pipe.write_all(text.as_bytes())
                .and_then(|()| pipe.flush())
                .with_context(|| format!("cannot write to {what}"))?;
        }
        let stdout = process.stdout.take().context("no stdout pipe")?;
        let mut child = Child {
            process,
            stdin,
            address: String::new(),
            what,
        };

        // Read the first line on a thread, so that a child that never
        // prints cannot hang the benchmark; the thread then drains the
        // pipe until the child exits.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(first);
            let _ = reader.read_to_end(&mut Vec::new());
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => bail!("cannot read from {}: {e}", child.what),
            Err(_) => bail!(
                "{} did not print its address within {START_TIMEOUT:?}",
                child.what
            ),
        };
        let Some(address) = line.trim().strip_prefix("LISTENING ") else {
            bail!(
                "{} printed {:?} instead of `LISTENING <address>` (did it fail?)",
                child.what,
                line.trim()
            );
        };
        child.address = address.to_owned();
        Ok(child)
    }

    /// `host:port` the child serves on.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Creates an `Echo` object on this `serve-node` child, from a runtime
    /// worker task.
    pub(crate) async fn echo_object(
        &self,
        rt: &actogrid_runtime::Runtime,
    ) -> anyhow::Result<actogrid_builtin::EchoProxy> {
        let url: actogrid_runtime::NodeUrl =
            format!("actogrid://{}/bench", self.address).parse()?;
        let node = rt.node(&url);
        tokio::spawn(async move { actogrid_builtin::EchoProxy::new(&node).await })
            .await?
            .context("cannot create the Echo object")
    }

    /// The child's process id (that of the server itself: `taskset`
    /// executes the program in place).
    pub(crate) fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Resident set size of process `pid`, in KiB (`VmRSS` in `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .with_context(|| format!("no VmRSS in {path}"))?;
    let kib = line
        .trim()
        .strip_suffix("kB")
        .with_context(|| format!("unexpected VmRSS line {line:?}"))?
        .trim()
        .parse()
        .with_context(|| format!("unexpected VmRSS line {line:?}"))?;
    Ok(kib)
}
