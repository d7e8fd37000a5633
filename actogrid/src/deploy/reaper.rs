//! What a deployment leaves outside its own process tree — ssh masters
//! and their control directories, batch jobs (pending ones included), job
//! files — is removed even when the deployer is killed with SIGKILL.
//!
//! A deployment that reaches hosts over ssh or submits batch jobs starts a
//! *reaper* first: a small `sh` process in a process group of its own
//! (Ctrl-C on a terminal does not reach it), deaf to HUP, INT and TERM,
//! whose standard input is a pipe from the deployer. It has a directory,
//! `$TMPDIR/actogrid-<pid>.<deployment>`, private to the user:
//!
//! * the ssh masters of the deployment make their control directories
//!   there (`.ssh-connection…/master`);
//! * for each thing made elsewhere the deployer writes a cleanup script
//!   there (`<n>.cleanup`) *before* making it when it can (job files), or
//!   right after it learns its name (a job id): a command line that needs
//!   nothing of the deployer (`scancel 42`, `rm` of the job files, the same
//!   over a fresh `ssh` for a remote submit host).
//!
//! At a normal teardown the deployer cleans up by itself (with its own
//! error messages), removes the directory and writes `clean`: the reaper
//! exits. When the pipe closes without it — the deployer died, however —
//! the reaper waits for the lease (the runtimes exit on their own
//! meanwhile), runs the cleanup scripts newest first (a job is cancelled
//! before its files are removed), stops every ssh master whose socket is in
//! the directory and removes the directory. Nothing is left after
//! `lease + ` the time the cleanup commands take.
//!
//! A job submitted in the instant between its submission and the moment the
//! deployer writes its cleanup script (a few milliseconds) is the one thing
//! a SIGKILL can still leave; its runtimes are refused (their ticket dies
//! with the deployer) and exit at once.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use actogrid_acquisition::batch::{BatchJob, JobFiles};
use actogrid_acquisition::exec::Shell;
use actogrid_descriptor::Descriptor;
use actogrid_descriptor::model::ProcessKind;

use super::state::lock;

/// The reaper itself: waits for `clean` or the end of its input; on the
/// end, waits for the lease and cleans up.
const SCRIPT: &str = r#"trap '' HUP INT TERM
dir=$1 lease=$2
while IFS= read -r line; do
  if [ "$line" = clean ]; then exit 0; fi
done
sleep "$lease"
set --
for f in "$dir"/*.cleanup; do
  if [ -f "$f" ]; then set -- "$f" "$@"; fi
done
for f in "$@"; do
  sh "$f" </dev/null >/dev/null 2>&1
done
for s in "$dir"/.ssh-connection*/master; do
  if [ -S "$s" ]; then ssh -S "$s" -O exit none </dev/null >/dev/null 2>&1; fi
done
rm -rf "$dir"
"#;

/// Whether a descriptor makes things a reaper must know: ssh masters or
/// batch jobs.
pub(super) fn needed_by(d: &Descriptor) -> bool {
    d.processes.iter().any(|p| {
        matches!(
            p.kind,
            ProcessKind::Ssh(_)
                | ProcessKind::Hierarchical(_)
                | ProcessKind::ProcessList(_)
                | ProcessKind::ProcessListByHost(_)
                | ProcessKind::Slurm(_)
                | ProcessKind::Pbs(_)
                | ProcessKind::Lsf(_)
                | ProcessKind::Oar(_)
                | ProcessKind::GridEngine(_)
        )
    })
}

/// A deployment's reaper, started on first use.
pub(crate) struct Reaper {
    /// Its directory's name in the temporary directory.
    name: String,
    lease: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
enum State {
    #[default]
    NotStarted,
    Running {
        dir: PathBuf,
        child: Child,
        next: u64,
    },
    /// It could not start (said once), or the deployment ended.
    Off,
}

impl Reaper {
    pub(crate) fn new(deployment: u64, lease: Duration) -> Reaper {
        Reaper {
            name: format!("actogrid-{}.{deployment}", std::process::id()),
            lease,
            state: Mutex::new(State::NotStarted),
        }
    }

    /// The reaper's directory, starting it first if needed; `None` when it
    /// cannot run (said once, in the log).
    pub(crate) fn dir(&self) -> Option<PathBuf> {
        let mut state = lock(&self.state);
        if let State::NotStarted = *state {
            *state = match self.start() {
                Ok(running) => running,
                Err(e) => {
                    tracing::warn!(
                        "cannot start the cleanup process of this deployment ({e}): if this process is killed, what it made on other hosts and its batch jobs stay until their own limits"
                    );
                    State::Off
                }
            };
        }
        match &*state {
            State::Running { dir, .. } => Some(dir.clone()),
            _ => None,
        }
    }

    fn start(&self) -> std::io::Result<State> {
        let dir = base_dir(&self.name).join(&self.name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let lease = self.lease.as_secs() + u64::from(self.lease.subsec_nanos() > 0);
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("actogrid-reaper")
            .arg(&dir)
            .arg(lease.max(1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        match child {
            Ok(child) => Ok(State::Running {
                dir,
                child,
                next: 1,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// Writes a cleanup script that runs `script` at `place` once the
    /// deployer is gone.
    fn add(&self, place: &dyn Shell, script: &str) {
        let Some(command) = place.standalone_command(script) else {
            return;
        };
        if self.dir().is_none() {
            return;
        }
        let mut state = lock(&self.state);
        let State::Running { dir, next, .. } = &mut *state else {
            return;
        };
        let n = *next;
        *next += 1;
        // Written aside, then renamed: the reaper never runs half a script.
        let part = dir.join(format!("{n:08}.part"));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)
            .and_then(|mut f| writeln!(f, "{command}"))
            .and_then(|()| std::fs::rename(&part, dir.join(format!("{n:08}.cleanup"))));
        if let Err(e) = written {
            tracing::warn!(
                "cannot record how to clean up `{script}` on {}: {e}",
                place.host()
            );
        }
    }

    /// A batch job's files are about to be written at `place`.
    pub(crate) fn job_files(&self, place: &dyn Shell, files: &JobFiles) {
        self.add(place, &files.removal_script());
    }

    /// A batch job was submitted at `place`.
    pub(crate) fn job_submitted(&self, place: &dyn Shell, job: &BatchJob) {
        self.add(place, &job.cancel_command());
    }

    /// The deployment ended normally and cleaned up after itself: stops the
    /// ssh masters still there, removes the directory and lets the reaper
    /// go.
    pub(crate) async fn dismiss(&self) {
        let running = std::mem::replace(&mut *lock(&self.state), State::Off);
        let State::Running { dir, mut child, .. } = running else {
            return;
        };
        for socket in master_sockets(&dir) {
            let _ = tokio::process::Command::new("ssh")
                .arg("-S")
                .arg(&socket)
                .args(["-O", "exit", "none"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"clean\n");
        }
        // It exits at once; do not leave a zombie behind.
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
}

/// What ssh appends to the directory of the masters' control directories
/// while it makes a control socket (`.ssh-connection` and six random
/// characters from the openssh crate, then `master` and ssh's own
/// temporary suffix).
const SOCKET_SUFFIX: usize = "/.ssh-connectionXXXXXX/master.0123456789abcdef".len();

/// The longest path a Unix socket may have.
const MAX_SOCKET_PATH: usize = 107;

/// Where the reaper's directory `name` goes: the temporary directory,
/// unless its path is too long for the masters' control sockets below it;
/// then the user's runtime directory, else `/tmp`.
fn base_dir(name: &str) -> PathBuf {
    let fits = |base: &Path| base.join(name).as_os_str().len() + SOCKET_SUFFIX <= MAX_SOCKET_PATH;
    let temp = std::env::temp_dir();
    if fits(&temp) {
        return temp;
    }
    let shorter = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/tmp")])
        .find(|base| base.is_dir() && fits(base));
    match shorter {
        Some(base) => {
            tracing::debug!(
                "{} is too long a path for ssh control sockets; the deployment's cleanup directory goes to {}",
                temp.display(),
                base.display()
            );
            base
        }
        None => temp,
    }
}

/// The control sockets of the ssh masters in `dir`.
fn master_sockets(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ssh-connection")
        })
        .map(|e| e.path().join("master"))
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actogrid_acquisition::exec::LocalShell;

    fn wait_until(limit: Duration, check: impl Fn() -> bool) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if check() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        check()
    }

    #[test]
    fn an_abandoned_reaper_cleans_up_after_the_lease_newest_first() {
        let scratch = std::env::temp_dir().join(format!(
            "actogrid-reaper-test-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&scratch).unwrap();
        let log = scratch.join("log");
        let reaper = Reaper::new(fastrand::u64(1_000_000..), Duration::from_millis(300));
        let dir = reaper.dir().expect("the reaper starts");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let first = format!("echo first >> {}", log.display());
        let second = format!("echo second >> {}", log.display());
        reaper.add(&LocalShell, &first);
        reaper.add(&LocalShell, &second);
        // The deployer "dies": its end of the pipe closes.
        let State::Running { child, .. } = std::mem::take(&mut *lock(&reaper.state)) else {
            panic!("not running");
        };
        drop(child);
        assert!(
            wait_until(Duration::from_secs(10), || !dir.exists()),
            "the reaper did not clean up"
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "second\nfirst\n",
            "newest first"
        );
        std::fs::remove_dir_all(&scratch).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dismissed_reaper_runs_nothing() {
        let scratch = std::env::temp_dir().join(format!(
            "actogrid-reaper-test-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&scratch).unwrap();
        let marker = scratch.join("ran");
        let reaper = Reaper::new(fastrand::u64(1_000_000..), Duration::from_millis(100));
        let dir = reaper.dir().unwrap();
        reaper.add(&LocalShell, &format!("touch {}", marker.display()));
        reaper.dismiss().await;
        assert!(!dir.exists());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "a dismissed reaper cleaned up");
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
