//! MPI runs: a `dependentProcessSequence` whose first process books hosts
//! and whose second, an `mpiProcess`, runs an MPI program over them with
//! `mpirun`.
//!
//! **What books the hosts.**
//!
//! - A host list (`processListbyHost`, `processList`) or an `sshProcess`:
//!   the hosts it names. `mpirun` runs where the sequence is (this
//!   machine, or the host an ssh chain reached) with a host file of those
//!   hosts (`host slots=n`, `n` the times the host is listed), and Open
//!   MPI's ssh launcher reaches them. On this machine the launcher is
//!   given the deployment's ssh configuration and the list's login
//!   (`--mca plm_rsh_agent "ssh -F … -l … -p … -i …"`), unless
//!   `mpiCommandOptions` names a `plm_rsh_agent` itself. The process the
//!   list would start on each host (its `processReference`) is not
//!   started: the list only books.
//! - A `slurmProcess`: a batch job of that request, whose script writes
//!   the host file of the allocation (`scontrol show hostnames`, with
//!   `tasksPerNode` slots each) and runs `mpirun` on the first node of the
//!   job; Open MPI starts the ranks on the job's nodes through SLURM. The
//!   job's output files hold what `mpirun` printed.
//!
//! **The command.** `commandPath` is the `mpirun`, then come the words of
//! `mpiCommandOptions`, `--hostfile`, `-np processNumber` (absent: one
//! process per booked slot) and the program ([`MpiProcess::program`]).
//! `mpirun` is started in the home directory where it runs, so relative
//! paths are relative to it; Open MPI starts each rank in the same
//! directory on its host. The program must already be there on every
//! booked host (nothing is copied).
//!
//! **The result.** An [`MpiOutcome`]: the exit status of `mpirun`, the
//! last [`OUTPUT_TAIL`] bytes of its standard output and of its standard
//! error (with their full sizes), and why the run did not end normally
//! when it did not (it could not start, its job failed, or it outlived
//! its time bound and was stopped).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actogrid_descriptor::model::{MpiProcess, SlurmProcess, SshLogin};

use crate::batch::{BatchJob, JobFiles, JobState, Scheduler};
use crate::exec::{Running, Shell, quote};

/// How many bytes of `mpirun`'s standard output, and of its standard
/// error, an [`MpiOutcome`] keeps (the last ones).
pub const OUTPUT_TAIL: usize = 64 * 1024;

/// How one MPI run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiOutcome {
    /// The `mpiProcess` id.
    pub process: String,
    /// The `dependentProcessSequence` id.
    pub sequence: String,
    /// Where `mpirun` was started, or its batch job submitted.
    pub place: String,
    /// The booked hosts, one entry per slot, when known (a host list says
    /// them; a batch job's are read back from the host file it wrote).
    pub hosts: Vec<String>,
    /// The batch job that ran `mpirun`, when a scheduler booked the hosts.
    pub job: Option<String>,
    /// The `mpirun` command line.
    pub command: String,
    /// `mpirun`'s exit status; `None` when it did not exit by itself
    /// (killed, never started, or unknown).
    pub code: Option<i32>,
    /// The end of its standard output (the last [`OUTPUT_TAIL`] bytes).
    pub stdout: String,
    /// The end of its standard error (the last [`OUTPUT_TAIL`] bytes).
    pub stderr: String,
    /// The full size of its standard output, in bytes.
    pub stdout_bytes: u64,
    /// The full size of its standard error, in bytes.
    pub stderr_bytes: u64,
    /// Why the run did not end normally, when it did not (besides a
    /// non-zero exit status).
    pub error: Option<String>,
}

impl MpiOutcome {
    fn new(process: &str, sequence: &str, place: &str) -> MpiOutcome {
        MpiOutcome {
            process: process.to_owned(),
            sequence: sequence.to_owned(),
            place: place.to_owned(),
            hosts: Vec::new(),
            job: None,
            command: String::new(),
            code: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            error: None,
        }
    }

    /// `true` when `mpirun` exited with status 0.
    pub fn success(&self) -> bool {
        self.error.is_none() && self.code == Some(0)
    }

    /// `true` when the output kept is only the end of what was printed.
    pub fn truncated(&self) -> bool {
        self.stdout_bytes > self.stdout.len() as u64 || self.stderr_bytes > self.stderr.len() as u64
    }
}

impl fmt::Display for MpiOutcome {
    /// One line: which run, where, and how it ended.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mpiProcess `{}` (sequence `{}`) on {}",
            self.process, self.sequence, self.place
        )?;
        if let Some(job) = &self.job {
            write!(f, " (job {job})")?;
        }
        if !self.hosts.is_empty() {
            let mut hosts = self.hosts.clone();
            hosts.dedup();
            write!(f, " over {}", hosts.join(" "))?;
        }
        match (&self.error, self.code) {
            (Some(e), _) => write!(f, ": {e}")?,
            (None, Some(c)) => write!(f, ": mpirun exited with status {c}")?,
            (None, None) => f.write_str(": mpirun was killed")?,
        }
        if !self.success() {
            let tail = last_lines(&self.stderr, 5);
            if !tail.is_empty() {
                write!(f, "; its error output ends with: {tail}")?;
            }
        }
        Ok(())
    }
}

/// The last `n` non-empty lines of `text`, joined with ` | `.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A host file: `host slots=n` per host, in the order first listed, `n`
/// the times it is listed.
pub fn host_file(hosts: &[String]) -> String {
    let mut order: Vec<(&str, usize)> = Vec::new();
    for h in hosts {
        match order.iter_mut().find(|(name, _)| name == h) {
            Some((_, n)) => *n += 1,
            None => order.push((h, 1)),
        }
    }
    order
        .iter()
        .map(|(h, n)| format!("{h} slots={n}\n"))
        .collect()
}

/// The ssh command Open MPI's launcher should use on this machine to reach
/// hosts booked with `login`, when it differs from a plain `ssh`.
pub fn ssh_agent(config: Option<&Path>, login: &SshLogin) -> Option<String> {
    let mut words = vec!["ssh".to_owned()];
    if let Some(c) = config {
        words.extend(["-F".to_owned(), c.display().to_string()]);
    }
    if let Some(u) = &login.username {
        words.extend(["-l".to_owned(), u.clone()]);
    }
    if let Some(p) = login.port {
        words.extend(["-p".to_owned(), p.to_string()]);
    }
    if let Some(i) = &login.identity_file {
        words.extend(["-i".to_owned(), i.clone()]);
    }
    (words.len() > 1).then(|| words.join(" "))
}

/// The `mpirun` words: `commandPath`, `mpiCommandOptions`, the launcher
/// (`agent`, unless the options name one), `--hostfile`, `-np` and the
/// program (a leading `~/` dropped: `mpirun` runs in the home directory).
pub fn mpirun_words(mpi: &MpiProcess, host_file: &str, agent: Option<&str>) -> Vec<String> {
    let mut words = vec![mpi.command_path.clone()];
    words.extend(mpi.command_options.iter().cloned());
    let own_agent = mpi
        .command_options
        .iter()
        .any(|o| o.contains("plm_rsh_agent") || o == "--launch-agent");
    if let (Some(agent), false) = (agent, own_agent) {
        words.extend([
            "--mca".to_owned(),
            "plm_rsh_agent".to_owned(),
            agent.to_owned(),
        ]);
    }
    words.extend(["--hostfile".to_owned(), host_file.to_owned()]);
    if let Some(n) = mpi.process_number {
        words.extend(["-np".to_owned(), n.to_string()]);
    }
    let program = mpi.program();
    let program = program.strip_prefix("~/").unwrap_or(&program).to_owned();
    words.push(program);
    words
}

fn shell_line(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// A path written in the descriptor, for a script started in the home
/// directory: `~/x` becomes `x`.
fn from_home(path: &str) -> String {
    path.strip_prefix("~/").unwrap_or(path).to_owned()
}

/// Stops a started `mpirun` when the run is given up (its task aborted at
/// the deployment's end) before it ended.
struct KillOnDrop(Option<Box<dyn Running>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(running) = self.0.as_mut() {
            running.kill();
        }
    }
}

fn removal(dir: &str) -> String {
    format!("rm -rf -- {}", quote(dir))
}

/// Removes the run's directory at its place when the run is given up
/// before it could (its task aborted at the deployment's end).
struct RemoveOnDrop(Option<(Arc<dyn Shell>, String)>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some((place, dir)) = self.0.take() else {
            return;
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = place.run(&removal(&dir), None).await {
                    tracing::warn!("removing {dir}: {e}");
                }
            });
        }
    }
}

/// What to run and where, for [`run_on_hosts`] and [`run_in_slurm_job`].
pub struct MpiRequest<'a> {
    /// The `mpiProcess`.
    pub mpi: &'a MpiProcess,
    /// Its id.
    pub process: &'a str,
    /// The sequence's id.
    pub sequence: &'a str,
    /// How long the run may take, from its start (a batch job's time in
    /// the queue included); it is stopped after that.
    pub timeout: Duration,
}

/// Runs `mpirun` at `place` over `hosts`; `agent` is the launcher's ssh
/// command ([`ssh_agent`]).
pub async fn run_on_hosts(
    run: &MpiRequest<'_>,
    place: &Arc<dyn Shell>,
    hosts: &[String],
    agent: Option<&str>,
) -> MpiOutcome {
    let mut outcome = MpiOutcome::new(run.process, run.sequence, place.host());
    outcome.hosts = hosts.to_vec();
    let fail = |mut outcome: MpiOutcome, e: String| {
        outcome.error = Some(e);
        outcome
    };
    // A private directory for the output files (and the host file).
    let made = place
        .run(
            "umask 077 && mktemp -d \"${TMPDIR:-/tmp}/actogrid-mpi.XXXXXX\"",
            None,
        )
        .await
        .and_then(|o| o.check(place.host(), "mktemp"));
    let dir = match made {
        Ok(out) => out.stdout_text(),
        Err(e) => return fail(outcome, format!("cannot make a directory for mpirun: {e}")),
    };
    let mut guard = RemoveOnDrop(Some((place.clone(), dir.clone())));
    let result = run_in_dir(run, place.as_ref(), hosts, agent, &dir, &mut outcome).await;
    guard.0 = None;
    if let Err(e) = place
        .run(&removal(&dir), None)
        .await
        .and_then(|o| o.check(place.host(), "rm"))
    {
        tracing::warn!("removing {dir}: {e}");
    }
    match result {
        Ok(()) => outcome,
        Err(e) => fail(outcome, e),
    }
}

async fn run_in_dir(
    run: &MpiRequest<'_>,
    place: &dyn Shell,
    hosts: &[String],
    agent: Option<&str>,
    dir: &str,
    outcome: &mut MpiOutcome,
) -> Result<(), String> {
    let host_file = match &run.mpi.hosts_file_name {
        Some(name) => from_home(name),
        None => format!("{dir}/hosts"),
    };
    let write = format!("cd && cat > {}", quote(&host_file));
    let contents = self::host_file(hosts);
    place
        .run(&write, Some(contents.as_bytes()))
        .await
        .and_then(|o| o.check(place.host(), "writing the host file"))
        .map_err(|e| format!("cannot write the host file {host_file}: {e}"))?;
    let words = mpirun_words(run.mpi, &host_file, agent);
    outcome.command = shell_line(&words);
    let (out, err) = (format!("{dir}/stdout"), format!("{dir}/stderr"));
    let script = format!(
        "cd && exec {} > {} 2> {} < /dev/null",
        outcome.command,
        quote(&out),
        quote(&err)
    );
    tracing::info!(
        host = place.host(),
        "mpiProcess `{}`: {}",
        run.process,
        outcome.command
    );
    let running = place
        .spawn(&script, None)
        .await
        .map_err(|e| format!("cannot start mpirun: {e}"))?;
    let mut guard = KillOnDrop(Some(running));
    let ended = match guard.0.as_mut() {
        Some(running) => tokio::time::timeout(run.timeout, running.wait()).await,
        None => return Err("mpirun was lost".to_owned()),
    };
    let mut running = guard.0.take();
    match ended {
        Ok(exit) => outcome.code = exit.code,
        Err(_) => {
            if let Some(r) = running.as_mut() {
                r.kill();
                let _ = tokio::time::timeout(Duration::from_secs(10), r.wait()).await;
            }
            outcome.error = Some(format!(
                "mpirun did not end within {} s: stopped",
                run.timeout.as_secs()
            ));
        }
    }
    read_outputs(place, &out, &err, outcome).await;
    Ok(())
}

/// Reads the ends of the output files into `outcome`.
async fn read_outputs(place: &dyn Shell, out: &str, err: &str, outcome: &mut MpiOutcome) {
    let (stdout, stdout_bytes) = tail_of(place, out).await;
    let (stderr, stderr_bytes) = tail_of(place, err).await;
    outcome.stdout = stdout;
    outcome.stdout_bytes = stdout_bytes;
    outcome.stderr = stderr;
    outcome.stderr_bytes = stderr_bytes;
}

/// The last [`OUTPUT_TAIL`] bytes of `file` and its size; empty when it
/// cannot be read (what could not be read is logged).
async fn tail_of(place: &dyn Shell, file: &str) -> (String, u64) {
    let f = quote(file);
    let script = format!("if [ -f {f} ]; then wc -c < {f}; tail -c {OUTPUT_TAIL} {f}; fi");
    match place.run(&script, None).await {
        Ok(out) if out.success() => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            match text.split_once('\n') {
                Some((size, rest)) => (rest.to_owned(), size.trim().parse().unwrap_or(0)),
                None => (String::new(), 0),
            }
        }
        Ok(out) => {
            tracing::warn!("reading {file} on {}: {}", place.host(), out.stderr_text());
            (String::new(), 0)
        }
        Err(e) => {
            tracing::warn!("reading {file}: {e}");
            (String::new(), 0)
        }
    }
}

/// What the deployer learns while an MPI job is under way.
pub trait JobWatch: Send + Sync {
    /// The job's files are about to be written at the place.
    fn files(&self, files: &JobFiles);
    /// The job was submitted.
    fn submitted(&self, job: &BatchJob);
}

/// Runs `mpirun` inside a batch job of `slurm`, submitted at `place` from
/// `work_dir` with files named `job_name`.
pub async fn run_in_slurm_job(
    run: &MpiRequest<'_>,
    place: &dyn Shell,
    slurm: &SlurmProcess,
    work_dir: &str,
    job_name: &str,
    watch: &dyn JobWatch,
) -> MpiOutcome {
    let started = Instant::now();
    let mut outcome = MpiOutcome::new(run.process, run.sequence, place.host());
    let scheduler = match Scheduler::from_process(&actogrid_descriptor::model::ProcessKind::Slurm(
        slurm.clone(),
    )) {
        Ok(s) => s,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    let mut files = match crate::batch::job_files(place, &scheduler, work_dir, job_name).await {
        Ok(f) => f,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    let status_file = format!("{}.status", files.script.trim_end_matches(".sh"));
    let own_host_file = run.mpi.hosts_file_name.is_none();
    let host_file = match &run.mpi.hosts_file_name {
        Some(name) => from_home(name),
        None => format!("{}.hosts", files.script.trim_end_matches(".sh")),
    };
    let words = mpirun_words(run.mpi, &host_file, None);
    outcome.command = shell_line(&words);
    // Removed with the job's files, whoever removes them (this run, the
    // deployment's end, or its reaper).
    files.others.push(status_file.clone());
    if own_host_file {
        files.others.push(host_file.clone());
    }
    let script = slurm_script(slurm, &files, &scheduler, &host_file, &status_file, &words);
    watch.files(&files);
    let removal = files.removal_script();
    let job = match crate::batch::submit_script(place, &scheduler, &script, files).await {
        Ok(job) => job,
        Err(e) => {
            let _ = place.run(&removal, None).await;
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    tracing::info!(
        host = place.host(),
        job = %job.id,
        "mpiProcess `{}`: {} in SLURM job {}",
        run.process,
        outcome.command,
        job.id
    );
    outcome.job = Some(job.id.clone());
    watch.submitted(&job);
    let state = wait_for_job(place, &job, started, run.timeout).await;
    match &state {
        Ok(state) => {
            let read = place
                .run(
                    &format!(
                        "cd && cat {} 2>/dev/null; echo; cat {} 2>/dev/null",
                        quote(&status_file),
                        quote(&host_file)
                    ),
                    None,
                )
                .await;
            let text = read
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let mut lines = text.lines();
            outcome.code = lines.next().and_then(|l| l.trim().parse().ok());
            outcome.hosts = hosts_of_file(lines);
            if outcome.code.is_none() {
                outcome.error = Some(format!(
                    "SLURM job {} ended ({state}) before mpirun did",
                    job.id
                ));
            }
        }
        Err(e) => outcome.error = Some(e.clone()),
    }
    read_outputs(place, &job.files.output, &job.files.error, &mut outcome).await;
    // The job's files as submitted (SLURM's `%j` patterns expanded).
    let _ = place.run(&job.files.removal_script(), None).await;
    outcome
}

/// The hosts of a host file (`host slots=n` lines), once per slot.
fn hosts_of_file<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut hosts = Vec::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(host) = words.next() else { continue };
        let slots = words
            .find_map(|w| w.strip_prefix("slots="))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(1);
        hosts.extend(std::iter::repeat_n(host.to_owned(), slots.min(4096)));
    }
    hosts
}

/// Polls the job until it ends; cancels it when `timeout` passes first.
async fn wait_for_job(
    place: &dyn Shell,
    job: &BatchJob,
    started: Instant,
    timeout: Duration,
) -> Result<JobState, String> {
    let mut every = Duration::from_millis(300);
    let mut failures = 0;
    loop {
        match job.state(place).await {
            Ok(state) if state.is_finished() => return Ok(state),
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= 10 {
                    let _ = job.cancel(place).await;
                    return Err(format!("cannot follow SLURM job {}: {e}", job.id));
                }
            }
        }
        if started.elapsed() >= timeout {
            let cancelled = job.cancel(place).await;
            return Err(format!(
                "SLURM job {} did not end within {} s: {}",
                job.id,
                timeout.as_secs(),
                match cancelled {
                    Ok(()) => "cancelled".to_owned(),
                    Err(e) => format!("cancelling it failed: {e}"),
                }
            ));
        }
        tokio::time::sleep(every).await;
        every = (every * 2).min(Duration::from_secs(3));
    }
}

/// The job script: SLURM's directives, then the host file of the
/// allocation, `mpirun`, and its exit status in `status_file`.
fn slurm_script(
    slurm: &SlurmProcess,
    files: &JobFiles,
    scheduler: &Scheduler,
    host_file: &str,
    status_file: &str,
    words: &[String],
) -> String {
    let mut s = String::from("#!/bin/sh\n");
    crate::batch::slurm::directives(&mut s, slurm, files);
    let scontrol = crate::batch::tool_of(scheduler, "scontrol");
    s.push_str("# mpirun runs in the home directory, over the job's nodes\n");
    s.push_str("cd || exit 1\n");
    s.push_str(&format!(
        "{scontrol} show hostnames \"$SLURM_JOB_NODELIST\" | while read -r host; do echo \"$host slots={}\"; done > {} || exit 1\n",
        slurm.tasks_per_node,
        quote(host_file)
    ));
    s.push_str(&format!("{} < /dev/null\n", shell_line(words)));
    s.push_str(&format!(
        "status=$?\necho \"$status\" > {}\nexit \"$status\"\n",
        quote(status_file)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mpi() -> MpiProcess {
        MpiProcess {
            file_name: "sum".into(),
            hosts_file_name: None,
            command_options: vec!["--allow-run-as-root".into()],
            command_path: "mpirun".into(),
            process_number: Some(3),
            local_relative_path: Some("~/bin".into()),
            remote_absolute_path: None,
        }
    }

    #[test]
    fn host_files_count_slots() {
        let hosts: Vec<String> = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(host_file(&hosts), "a slots=2\nb slots=1\n");
        assert_eq!(hosts_of_file("a slots=2\nb\n\n".lines()), ["a", "a", "b"]);
    }

    #[test]
    fn mpirun_words_follow_the_descriptor() {
        let words = mpirun_words(&mpi(), "/t/hosts", Some("ssh -F /c"));
        assert_eq!(
            words,
            [
                "mpirun",
                "--allow-run-as-root",
                "--mca",
                "plm_rsh_agent",
                "ssh -F /c",
                "--hostfile",
                "/t/hosts",
                "-np",
                "3",
                "bin/sum"
            ]
        );
        let mut own = mpi();
        own.command_options = vec!["--mca".into(), "plm_rsh_agent".into(), "rsh".into()];
        own.process_number = None;
        own.remote_absolute_path = Some("/opt/x".into());
        let words = mpirun_words(&own, "h", Some("ssh -F /c"));
        assert_eq!(
            words,
            [
                "mpirun",
                "--mca",
                "plm_rsh_agent",
                "rsh",
                "--hostfile",
                "h",
                "/opt/x/sum"
            ]
        );
        assert_eq!(shell_line(&words[..4]), "mpirun --mca plm_rsh_agent rsh");
    }

    #[test]
    fn the_slurm_job_writes_its_host_file_then_runs_mpirun() {
        use actogrid_descriptor::Spanned;
        use actogrid_descriptor::model::{Link, ProcessKind};
        let slurm = SlurmProcess {
            job_name: None,
            partition: Some("debug".into()),
            account: None,
            nodes: 2,
            tasks_per_node: 4,
            cpus_per_task: None,
            walltime: None,
            memory: None,
            extra_options: Vec::new(),
            output_file: None,
            error_file: None,
            script_path: None,
            link: Link {
                next: Spanned::new("rt".to_owned(), Default::default()),
                environment: Vec::new(),
                command_path: Some("/opt/slurm/bin/sbatch".into()),
            },
        };
        let scheduler = Scheduler::from_process(&ProcessKind::Slurm(slurm.clone())).unwrap();
        let files = scheduler.files("/w", "k");
        let words = mpirun_words(&mpi(), "/w/k.hosts", None);
        let script = slurm_script(
            &slurm,
            &files,
            &scheduler,
            "/w/k.hosts",
            "/w/k.status",
            &words,
        );
        assert!(
            script.starts_with("#!/bin/sh\n#SBATCH --job-name=k\n"),
            "{script}"
        );
        assert!(
            script.contains(
                "#SBATCH --partition=debug\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=4\n"
            ),
            "{script}"
        );
        assert!(
            script.ends_with(
                "cd || exit 1\n\
                 /opt/slurm/bin/scontrol show hostnames \"$SLURM_JOB_NODELIST\" | while read -r host; do echo \"$host slots=4\"; done > /w/k.hosts || exit 1\n\
                 mpirun --allow-run-as-root --hostfile /w/k.hosts -np 3 bin/sum < /dev/null\n\
                 status=$?\necho \"$status\" > /w/k.status\nexit \"$status\"\n"
            ),
            "{script}"
        );
    }

    #[test]
    fn the_agent_carries_the_login() {
        let login = SshLogin {
            username: Some("u".into()),
            port: Some(2222),
            identity_file: None,
        };
        assert_eq!(
            ssh_agent(Some(Path::new("/c")), &login).as_deref(),
            Some("ssh -F /c -l u -p 2222")
        );
        let plain = SshLogin {
            username: None,
            port: None,
            identity_file: None,
        };
        assert_eq!(ssh_agent(None, &plain), None);
    }

    #[test]
    fn outcomes_say_how_the_run_ended() {
        let mut o = MpiOutcome::new("k", "s", "localhost");
        o.code = Some(3);
        o.stderr = "line 1\nrank 1 failed\n".into();
        o.hosts = vec!["a".into(), "a".into(), "b".into()];
        assert!(!o.success());
        assert_eq!(
            o.to_string(),
            "mpiProcess `k` (sequence `s`) on localhost over a b: mpirun exited with status 3; its error output ends with: line 1 | rank 1 failed"
        );
    }
}
