//! Batch schedulers: runtimes started as the tasks of a batch job.
//!
//! A scheduler process of a descriptor (`slurmProcess`, `pbsProcess`,
//! `bsubProcess`/`lsfProcess`, `oarProcess`, `gridEngineProcess`) becomes a
//! [`Scheduler`]. Given the [`RuntimeCommand`] that starts one runtime, it
//! writes a job script — the scheduler's directives taken from every field of
//! the process, then one copy of the runtime per allocated slot, started with
//! the scheduler's own launcher so that the scheduler tracks, accounts and
//! kills them — and [`submit`] sends it from a [`Shell`] (this machine, or a
//! login node reached over ssh). The returned [`BatchJob`] is queried with
//! [`BatchJob::state`], stopped with [`BatchJob::cancel`], and the tail of its
//! error file is read with [`BatchJob::stderr_tail`] to explain a failure.
//!
//! | scheduler | submit | launcher in the job | state | cancel |
//! |---|---|---|---|---|
//! | SLURM | `sbatch --parsable` | one `srun` step, one task per slot | `squeue`, then `scontrol show job`, then `sacct` | `scancel` |
//! | PBS / Torque | `qsub` | `pbsdsh` (one task per slot of `$PBS_NODEFILE`) | `qstat -f` | `qdel` |
//! | LSF | `bsub < script` | `blaunch` (one task per slot) | `bjobs -o` | `bkill` |
//! | OAR | `oarsub -S` | `oarsh` per line of `$OAR_NODEFILE` | `oarstat -s`, `oarstat -f` | `oardel` |
//! | Grid Engine | `qsub` | `qrsh -inherit` per slot of `$PE_HOSTFILE` | `qstat`, then `qacct` | `qdel` |
//!
//! Each scheduler module explains its launcher choice.
//!
//! **How far each scheduler is tested.** SLURM support is tested against a
//! real SLURM cluster. PBS, LSF, OAR and Grid Engine support is generated
//! from their documentation and tested with golden files and a fake
//! scheduler command that imitates their output; it has not run against a
//! real scheduler.
//!
//! Files of a job live in a working directory chosen by the caller: the
//! script (`NAME.sh`), its standard output (`NAME.out`) and standard error
//! (`NAME.err`), unless the descriptor names them (`scriptPath`,
//! `outputFile`, `errorFile`). Paths starting with `~/` are resolved on the
//! submitting host. Submission runs in the working directory, so relative
//! paths of the descriptor are relative to it.
//!
//! The `interactive` flag of the descriptor is not honoured: runtimes are
//! always started by a batch job, which is what lets the deployer track and
//! cancel them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actogrid_descriptor::model::{
    GridEngineProcess, Link, LsfProcess, OarProcess, PbsProcess, ProcessKind, SlurmProcess,
};

use crate::exec::{ExecError, Output, RuntimeCommand, Shell, quote};

pub mod gridengine;
pub mod lsf;
pub mod oar;
pub mod pbs;
pub mod slurm;

/// How many bytes [`BatchJob::stderr_tail`] reads from the end of the error file.
pub const ERROR_TAIL: usize = 4096;

/// Which batch scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// SLURM (`sbatch`).
    Slurm,
    /// PBS Pro or Torque (`qsub`).
    Pbs,
    /// IBM Spectrum LSF (`bsub`).
    Lsf,
    /// OAR (`oarsub`).
    Oar,
    /// Sun/Son of/Univa Grid Engine (`qsub`).
    GridEngine,
}

impl SchedulerKind {
    /// The name used in messages: `slurm`, `pbs`, `lsf`, `oar`, `grid engine`.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Slurm => "slurm",
            SchedulerKind::Pbs => "pbs",
            SchedulerKind::Lsf => "lsf",
            SchedulerKind::Oar => "oar",
            SchedulerKind::GridEngine => "grid engine",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The state of a batch job, as its scheduler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting in the queue, held or suspended; `reason` is the scheduler's
    /// word for why (`Priority`, `Resources`, `qw`, …), possibly empty.
    Pending {
        /// Why it is not running.
        reason: String,
    },
    /// Running (or starting, or finishing its tasks).
    Running,
    /// Ended with exit code 0.
    Completed,
    /// Ended with an error: non-zero exit, time limit, node failure, …
    Failed {
        /// The scheduler's state and reason, and the exit code when known.
        reason: String,
    },
    /// Cancelled by [`BatchJob::cancel`] or by someone else.
    Cancelled,
    /// The scheduler no longer knows the job: it ended long enough ago to be
    /// forgotten (or accounting is off), and how it ended is unknown.
    Gone,
    /// A state this module does not know, as the scheduler wrote it.
    Unknown(String),
}

impl JobState {
    /// `true` once the job can no longer run: completed, failed, cancelled or gone.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed { .. } | JobState::Cancelled | JobState::Gone
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobState::Pending { reason } if reason.is_empty() => f.write_str("pending"),
            JobState::Pending { reason } => write!(f, "pending ({reason})"),
            JobState::Running => f.write_str("running"),
            JobState::Completed => f.write_str("completed"),
            JobState::Failed { reason } if reason.is_empty() => f.write_str("failed"),
            JobState::Failed { reason } => write!(f, "failed ({reason})"),
            JobState::Cancelled => f.write_str("cancelled"),
            JobState::Gone => f.write_str("gone from the scheduler"),
            JobState::Unknown(s) => write!(f, "unknown state `{s}`"),
        }
    }
}

/// Output of a scheduler command that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {what} in {}", show_output(.output))]
pub struct ParseError {
    /// What was looked for (`a job id`, `the job state`).
    pub what: String,
    /// The output, as the command printed it.
    pub output: String,
}

impl ParseError {
    pub(crate) fn new(what: &str, output: &str) -> ParseError {
        ParseError {
            what: what.to_owned(),
            output: output.to_owned(),
        }
    }
}

fn show_output(output: &str) -> String {
    let t = output.trim();
    if t.is_empty() {
        return "an empty output".to_owned();
    }
    let mut s: String = t.chars().take(400).collect();
    if s.len() < t.len() {
        s.push('…');
    }
    format!("`{s}`")
}

/// What went wrong with a batch job.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The process is not a batch scheduler.
    #[error("`{element}` is not a batch scheduler process")]
    NotAScheduler {
        /// The element name of the process.
        element: &'static str,
    },
    /// The descriptor asks for something the scheduler cannot do.
    #[error("{scheduler}: {detail}")]
    Unsupported {
        /// Which scheduler.
        scheduler: SchedulerKind,
        /// What, and what to write instead.
        detail: String,
    },
    /// A value of the process cannot go into a job script: a line break or
    /// another control character would end a directive line and run the
    /// rest as a command.
    #[error("{scheduler}: {field} {value:?} holds a control character: write it on one line")]
    BadValue {
        /// Which scheduler.
        scheduler: SchedulerKind,
        /// The field (`partition`, `queue`, the output file…).
        field: &'static str,
        /// The value as given.
        value: String,
    },
    /// A command could not be run on the host at all (host unreachable, …).
    #[error("{scheduler} on {host}: cannot run {what}: {}", exec_detail(.source))]
    Exec {
        /// Which scheduler.
        scheduler: SchedulerKind,
        /// The host the command was to run on.
        host: String,
        /// The program (`sbatch`, `qstat`, …) or step.
        what: String,
        /// The full command line.
        command: String,
        /// Why.
        source: Box<ExecError>,
    },
    /// A command ran and failed; `stderr` is what it said.
    #[error("{scheduler} on {host}: {what}: {}", show_stderr(.stderr, .code))]
    Refused {
        /// Which scheduler.
        scheduler: SchedulerKind,
        /// The host the command ran on.
        host: String,
        /// What failed, in words (`sbatch refused the job`).
        what: String,
        /// The full command line.
        command: String,
        /// Its exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// Its standard error (or standard output when stderr was empty), trimmed.
        stderr: String,
    },
    /// A command succeeded but its output was not understood.
    #[error("{scheduler} on {host}: {command}: {source}")]
    Unparsed {
        /// Which scheduler.
        scheduler: SchedulerKind,
        /// The host the command ran on.
        host: String,
        /// The full command line.
        command: String,
        /// What was not understood.
        source: ParseError,
    },
}

fn exec_detail(e: &ExecError) -> String {
    match e {
        ExecError::Unreachable { detail, .. } => format!("unreachable: {detail}"),
        ExecError::AuthRefused { detail, .. } => format!("authentication refused: {detail}"),
        ExecError::Command { detail, .. } => detail.clone(),
    }
}

fn show_stderr(stderr: &str, code: &Option<i32>) -> String {
    if !stderr.is_empty() {
        return stderr.to_owned();
    }
    match code {
        Some(c) => format!("exit code {c}, nothing on stderr"),
        None => "killed by a signal, nothing on stderr".to_owned(),
    }
}

/// One scheduler process of a descriptor.
#[derive(Debug, Clone)]
pub enum Scheduler {
    /// `slurmProcess`.
    Slurm(SlurmProcess),
    /// `pbsProcess`.
    Pbs(PbsProcess),
    /// `bsubProcess` / `lsfProcess`.
    Lsf(LsfProcess),
    /// `oarProcess`.
    Oar(OarProcess),
    /// `gridEngineProcess`.
    GridEngine(GridEngineProcess),
}

impl TryFrom<&ProcessKind> for Scheduler {
    type Error = BatchError;

    fn try_from(kind: &ProcessKind) -> Result<Self, Self::Error> {
        Scheduler::from_process(kind)
    }
}

/// Where the files of one job are, on the submitting host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFiles {
    /// The name given to the scheduler (`-J`, `-N`, `--job-name`).
    pub job_name: String,
    /// The working directory: submission and the job's tasks run there.
    pub work_dir: String,
    /// The job script.
    pub script: String,
    /// The job's standard output (may hold a scheduler pattern such as `%j`).
    pub output: String,
    /// The job's standard error (may hold a scheduler pattern such as `%j`).
    pub error: String,
    /// The runtimes' credentials (`0600`, next to the script), when they
    /// have some.
    pub credentials: String,
    /// More files the job writes (absolute paths), removed with the others:
    /// an MPI job's status and host files.
    pub others: Vec<String>,
}

impl JobFiles {
    /// Replaces a leading `~` of every path with `home`.
    pub fn with_home(mut self, home: &str) -> JobFiles {
        for p in [
            &mut self.work_dir,
            &mut self.script,
            &mut self.output,
            &mut self.error,
            &mut self.credentials,
        ] {
            if p == "~" {
                *p = home.to_owned();
            } else if let Some(rest) = p.strip_prefix("~/") {
                *p = format!("{}/{rest}", home.trim_end_matches('/'));
            }
        }
        self
    }

    /// A shell script that removes the job's files and its working
    /// directory (when nothing else is left in it: the runtimes run there
    /// and what they wrote is kept). It always succeeds.
    pub fn removal_script(&self) -> String {
        let others: String = self
            .others
            .iter()
            .map(|f| format!(" {}", quote(f)))
            .collect();
        format!(
            "rm -f -- {} {} {} {}{others}; rmdir -- {} 2>/dev/null; true",
            quote(&self.script),
            quote(&self.credentials),
            quote(&self.output),
            quote(&self.error),
            quote(&self.work_dir)
        )
    }

    fn needs_home(&self) -> bool {
        [&self.work_dir, &self.script, &self.output, &self.error]
            .iter()
            .any(|p| *p == "~" || p.starts_with("~/"))
    }
}

impl Scheduler {
    /// The scheduler of a descriptor process; an error for other process
    /// kinds and for requests the scheduler cannot express.
    pub fn from_process(kind: &ProcessKind) -> Result<Scheduler, BatchError> {
        let scheduler = match kind {
            ProcessKind::Slurm(p) => Scheduler::Slurm(p.clone()),
            ProcessKind::Pbs(p) => Scheduler::Pbs(p.clone()),
            ProcessKind::Lsf(p) => Scheduler::Lsf(p.clone()),
            ProcessKind::Oar(p) => Scheduler::Oar(p.clone()),
            ProcessKind::GridEngine(p) => Scheduler::GridEngine(p.clone()),
            other => {
                return Err(BatchError::NotAScheduler {
                    element: other.element_name(),
                });
            }
        };
        if let Scheduler::GridEngine(p) = &scheduler {
            gridengine::check(p)?;
        }
        scheduler.check_values()?;
        Ok(scheduler)
    }

    /// Refuses the values with a control character: every string of the
    /// process that becomes a directive, a path or a client command. The
    /// descriptor reader refuses them already; a process built by hand
    /// meets the same rule here.
    fn check_values(&self) -> Result<(), BatchError> {
        fn opt<'a>(name: &'static str, v: &'a Option<String>) -> Option<(&'static str, &'a str)> {
            v.as_deref().map(|v| (name, v))
        }
        let mut fields: Vec<(&'static str, &str)> = Vec::new();

        let mut lists: Vec<(&'static str, &Vec<String>)> = Vec::new();
        let singles: Vec<Option<(&'static str, &str)>> = match self {
            Scheduler::Slurm(p) => {
                lists.push(("extraOptions", &p.extra_options));
                vec![
                    opt("jobname", &p.job_name),
                    opt("partition", &p.partition),
                    opt("account", &p.account),
                    opt("memory", &p.memory),
                    opt("outputFile", &p.output_file),
                    opt("errorFile", &p.error_file),
                    opt("scriptPath", &p.script_path),
                ]
            }
            Scheduler::Pbs(p) => {
                lists.push(("hostlist", &p.hostlist));
                vec![
                    opt("queue", &p.queue),
                    opt("jobname", &p.job_name),
                    opt("outputFile", &p.output_file),
                    opt("scriptPath", &p.script_path),
                ]
            }
            Scheduler::Lsf(p) => {
                lists.push(("hostlist", &p.hostlist));
                vec![
                    opt("jobname", &p.job_name),
                    opt("queue", &p.queue),
                    opt("resourceRequirement", &p.resource_requirement),
                    opt("scriptPath", &p.script_path),
                ]
            }
            Scheduler::Oar(p) => vec![
                opt("queue", &p.queue),
                opt("resources", &p.resources),
                opt("scriptPath", &p.script_path),
            ],
            Scheduler::GridEngine(p) => {
                lists.push(("hostlist", &p.hostlist));
                vec![
                    opt("queue", &p.queue),
                    opt("parallelEnvironment", &p.parallel_environment),
                    opt("scriptPath", &p.script_path),
                ]
            }
        };
        let link = self.link();
        fields.extend(singles.into_iter().flatten());
        fields.extend(opt("commandPath", &link.command_path));
        for (name, list) in lists {
            fields.extend(list.iter().map(|v| (name, v.as_str())));
        }
        fields.extend(
            link.environment
                .iter()
                .map(|v| ("environment name", v.name.as_str())),
        );
        for (field, value) in fields {
            self.refuse_control(field, value)?;
        }
        Ok(())
    }

    fn refuse_control(&self, field: &'static str, value: &str) -> Result<(), BatchError> {
        if value.chars().any(char::is_control) {
            return Err(BatchError::BadValue {
                scheduler: self.kind(),
                field,
                value: value.to_owned(),
            });
        }
        Ok(())
    }

    /// Which scheduler this is.
    pub fn kind(&self) -> SchedulerKind {
        match self {
            Scheduler::Slurm(_) => SchedulerKind::Slurm,
            Scheduler::Pbs(_) => SchedulerKind::Pbs,
            Scheduler::Lsf(_) => SchedulerKind::Lsf,
            Scheduler::Oar(_) => SchedulerKind::Oar,
            Scheduler::GridEngine(_) => SchedulerKind::GridEngine,
        }
    }

    /// The link to the runtime process: its environment and the client
    /// command path.
    pub fn link(&self) -> &Link {
        match self {
            Scheduler::Slurm(p) => &p.link,
            Scheduler::Pbs(p) => &p.link,
            Scheduler::Lsf(p) => &p.link,
            Scheduler::Oar(p) => &p.link,
            Scheduler::GridEngine(p) => &p.link,
        }
    }

    /// How many runtimes one job starts, when the request says it (OAR: only
    /// the allocation knows).
    pub fn runtimes_per_job(&self) -> Option<u64> {
        match self {
            Scheduler::Slurm(p) => Some(u64::from(p.nodes) * u64::from(p.tasks_per_node)),
            Scheduler::Pbs(p) => Some(pbs::slots(p)),
            Scheduler::Lsf(p) => Some(u64::from(p.processor.unwrap_or(1))),
            Scheduler::Oar(_) => None,
            Scheduler::GridEngine(p) => Some(u64::from(gridengine::slots(p))),
        }
    }

    /// The scheduler job name: the descriptor's, else `default`; characters
    /// schedulers reject are replaced with `_`.
    pub fn job_name(&self, default: &str) -> String {
        let given = match self {
            Scheduler::Slurm(p) => p.job_name.as_deref(),
            Scheduler::Pbs(p) => p.job_name.as_deref(),
            Scheduler::Lsf(p) => p.job_name.as_deref(),
            Scheduler::Oar(_) | Scheduler::GridEngine(_) => None,
        };
        sanitize_name(given.unwrap_or(default))
    }

    /// The files of a job submitted from `work_dir`: `stem.sh`, `stem.out`
    /// and `stem.err` there unless the descriptor names them. `stem` is also
    /// the default job name.
    pub fn files(&self, work_dir: &str, stem: &str) -> JobFiles {
        let (script, output, error) = match self {
            Scheduler::Slurm(p) => (&p.script_path, &p.output_file, &p.error_file),
            Scheduler::Pbs(p) => (&p.script_path, &p.output_file, &None),
            Scheduler::Lsf(p) => (&p.script_path, &None, &None),
            Scheduler::Oar(p) => (&p.script_path, &None, &None),
            Scheduler::GridEngine(p) => (&p.script_path, &None, &None),
        };
        let dir = work_dir.trim_end_matches('/');
        let dir = if dir.is_empty() { "/" } else { dir };
        let stem = sanitize_name(stem);
        let in_dir = |given: &Option<String>, ext: &str| match given {
            Some(p) if p.starts_with('/') || p.starts_with('~') => p.clone(),
            Some(p) => format!("{dir}/{p}"),
            None => format!("{dir}/{stem}.{ext}"),
        };
        let script = in_dir(script, "sh");
        JobFiles {
            job_name: self.job_name(&stem),
            work_dir: dir.to_owned(),
            credentials: format!("{script}.credentials"),
            script,
            output: in_dir(output, "out"),
            error: in_dir(error, "err"),
            others: Vec::new(),
        }
    }

    /// The job script that starts the runtimes: directives, then one
    /// `runtime` per allocated slot through the scheduler's launcher, then a
    /// `wait` for all of them (the job lives as long as its runtimes, and
    /// fails when one of them fails).
    ///
    /// The environment of the descriptor's link is added to the runtime's
    /// (the runtime's own values come last and win).
    pub fn script(&self, runtime: &RuntimeCommand, files: &JobFiles) -> String {
        let task = task_command(self.link(), runtime);
        let tools = Tools::of(self.link());
        let mut s = String::from("#!/bin/sh\n");
        match self {
            Scheduler::Slurm(p) => slurm::script(&mut s, p, files, &task, &tools),
            Scheduler::Pbs(p) => pbs::script(&mut s, p, files, &task, &tools),
            Scheduler::Lsf(p) => lsf::script(&mut s, p, files, &task, &tools),
            Scheduler::Oar(p) => oar::script(&mut s, p, files, &task, &tools),
            Scheduler::GridEngine(p) => gridengine::script(&mut s, p, files, &task, &tools),
        }
        s
    }

    /// The command line that submits the script of `files`, run from the
    /// working directory.
    pub fn submit_command(&self, files: &JobFiles) -> String {
        let tools = Tools::of(self.link());
        let script = quote(&files.script);
        let program = tools.submit(self.kind().submit_program());
        let submit = match self {
            Scheduler::Slurm(_) => format!("{program} --parsable {script}"),
            Scheduler::Pbs(_) | Scheduler::GridEngine(_) => format!("{program} {script}"),
            Scheduler::Lsf(_) => format!("{program} < {script}"),
            Scheduler::Oar(_) => format!("{program} -S {script}"),
        };
        format!("cd {} && {submit}", quote(&files.work_dir))
    }

    /// The job id in what the submit command printed on standard output.
    pub fn parse_job_id(&self, stdout: &str) -> Result<String, ParseError> {
        match self.kind() {
            SchedulerKind::Slurm => slurm::parse_job_id(stdout),
            SchedulerKind::Pbs => pbs::parse_job_id(stdout),
            SchedulerKind::Lsf => lsf::parse_job_id(stdout),
            SchedulerKind::Oar => oar::parse_job_id(stdout),
            SchedulerKind::GridEngine => gridengine::parse_job_id(stdout),
        }
    }

    /// The command line that cancels job `id`.
    pub fn cancel_command(&self, id: &str) -> String {
        cancel_command(self.kind(), &Tools::of(self.link()), id)
    }
}

fn cancel_command(kind: SchedulerKind, tools: &Tools, id: &str) -> String {
    format!("{} {}", tools.tool(kind.cancel_program()), quote(id))
}

/// The scheduler's client commands: next to the descriptor's `commandPath`
/// when it names one, else found on the `PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tools {
    submit: Option<String>,
    dir: Option<String>,
}

impl Tools {
    fn of(link: &Link) -> Tools {
        let submit = link.command_path.clone().filter(|p| !p.trim().is_empty());
        let dir = submit
            .as_deref()
            .and_then(|p| p.rsplit_once('/'))
            .map(|(d, _)| if d.is_empty() { "/" } else { d }.to_owned());
        Tools { submit, dir }
    }

    /// The submit command: the descriptor's `commandPath`, else `name`.
    fn submit(&self, name: &str) -> String {
        match &self.submit {
            Some(p) => quote(p),
            None => name.to_owned(),
        }
    }

    /// Another client command (`squeue`, `qstat`, `pbsdsh`…), quoted.
    pub(crate) fn tool(&self, name: &str) -> String {
        match &self.dir {
            Some(d) if d == "/" => quote(&format!("/{name}")),
            Some(d) => quote(&format!("{d}/{name}")),
            None => name.to_owned(),
        }
    }
}

/// Client command `name` of `scheduler` (`scontrol`, `qstat`…), next to
/// its `commandPath` when the descriptor gives one, quoted.
pub(crate) fn tool_of(scheduler: &Scheduler, name: &str) -> String {
    Tools::of(scheduler.link()).tool(name)
}

/// The runtime command with the link's environment in front of its own.
fn task_command(link: &Link, runtime: &RuntimeCommand) -> RuntimeCommand {
    let mut task = runtime.clone();
    let mut env: Vec<(String, String)> = link
        .environment
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    env.append(&mut task.env);
    task.env = env;
    task
}

/// Keeps letters, digits, `-`, `_` and `.`; a name starting with a digit
/// gets a `j` in front (PBS and Grid Engine want a letter first).
fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push_str("actogrid");
    }
    if out.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-') {
        out.insert(0, 'j');
    }
    out
}

/// A directive value: as is when it has no blank or quote, else in double
/// quotes (every scheduler reads its directive lines with shell-like quoting).
/// A directive must stay one line whatever the value: control characters
/// (refused before a script is written) would come out as blanks.
pub(crate) fn directive_value(v: &str) -> String {
    let v: &str = &one_line(v);
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || "\"'\\$`".contains(c))
    {
        return v.to_owned();
    }
    let escaped = v
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "\\$")
        .replace('`', "\\`");
    format!("\"{escaped}\"")
}

/// `v` with every control character made a blank: what goes after `#SBATCH`
/// (or `#PBS`, `#BSUB`…) as written must not end the line.
pub(crate) fn one_line(v: &str) -> std::borrow::Cow<'_, str> {
    if v.chars().any(char::is_control) {
        v.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        v.into()
    }
}

/// `H:MM:SS` (hours may exceed 24), rounded up to the second.
pub(crate) fn hms(d: Duration) -> String {
    let mut secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs += 1;
    }
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The lines after the directives: go to the working directory.
pub(crate) fn enter_work_dir(s: &mut String, files: &JobFiles) {
    s.push_str(&format!("cd {} || exit 1\n", quote(&files.work_dir)));
}

/// Runs `launch` in the background and waits for it, the job ending with
/// its exit status.
pub(crate) fn launch_and_wait(s: &mut String, launch: &str) {
    s.push_str(launch);
    s.push_str(" &\nwait $!\n");
}

/// Waits for every task started in `$pids`; the job ends with the last
/// non-zero exit status, so it fails when one of its runtimes fails.
pub(crate) fn wait_all_footer(s: &mut String) {
    s.push_str(
        "status=0\nfor pid in $pids; do\n  wait \"$pid\" || status=$?\ndone\nexit \"$status\"\n",
    );
}

/// A job submitted to a scheduler.
#[derive(Debug, Clone)]
pub struct BatchJob {
    /// The scheduler's id of the job (`123`, `123.server`).
    pub id: String,
    /// Which scheduler runs it.
    pub kind: SchedulerKind,
    /// Its files, with scheduler patterns (`%j`) replaced where known.
    pub files: JobFiles,
    /// How many runtimes it starts, when known before it runs.
    pub runtimes: Option<u64>,
    tools: Tools,
    cancelled: Arc<AtomicBool>,
}

impl BatchJob {
    /// The command line that queries the first source of the job's state.
    pub fn state_command(&self) -> String {
        match self.kind {
            SchedulerKind::Slurm => slurm::squeue_command(&self.tools, &self.id),
            SchedulerKind::Pbs => pbs::qstat_command(&self.tools, &self.id, false),
            SchedulerKind::Lsf => lsf::bjobs_command(&self.tools, &self.id),
            SchedulerKind::Oar => oar::oarstat_command(&self.tools, &self.id),
            SchedulerKind::GridEngine => gridengine::qstat_command(&self.tools),
        }
    }

    /// The job's state, asking the scheduler on `shell`. After
    /// [`BatchJob::cancel`], a job that ended (in whatever way the scheduler
    /// reports a killed job) is [`JobState::Cancelled`].
    pub async fn state(&self, shell: &dyn Shell) -> Result<JobState, BatchError> {
        let q = Query {
            shell,
            kind: self.kind,
            tools: &self.tools,
        };
        let state = match self.kind {
            SchedulerKind::Slurm => slurm::state(&q, &self.id).await?,
            SchedulerKind::Pbs => pbs::state(&q, &self.id).await?,
            SchedulerKind::Lsf => lsf::state(&q, &self.id).await?,
            SchedulerKind::Oar => oar::state(&q, &self.id).await?,
            SchedulerKind::GridEngine => gridengine::state(&q, &self.id).await?,
        };
        if self.cancelled.load(Ordering::Acquire)
            && matches!(state, JobState::Failed { .. } | JobState::Gone)
        {
            return Ok(JobState::Cancelled);
        }
        Ok(state)
    }

    /// The command line that cancels the job.
    pub fn cancel_command(&self) -> String {
        cancel_command(self.kind, &self.tools, &self.id)
    }

    /// Cancels the job. Cancelling a job that already ended succeeds.
    pub async fn cancel(&self, shell: &dyn Shell) -> Result<(), BatchError> {
        self.cancelled.store(true, Ordering::Release);
        let command = cancel_command(self.kind, &self.tools, &self.id);
        let program = self.kind.cancel_program();
        let q = Query {
            shell,
            kind: self.kind,
            tools: &self.tools,
        };
        let out = q.run(&command, program, None).await?;
        if out.success() {
            return Ok(());
        }
        // Already finished? Then there is nothing left to cancel.
        if let Ok(state) = self.state(shell).await
            && state.is_finished()
        {
            return Ok(());
        }
        Err(q.refused(
            &format!("{program} did not cancel job {}", self.id),
            &command,
            &out,
        ))
    }

    /// The last [`ERROR_TAIL`] bytes of the job's error file; empty when
    /// the file does not exist (yet).
    pub async fn stderr_tail(&self, shell: &dyn Shell) -> Result<String, BatchError> {
        let file = quote(&self.files.error);
        let command = format!("if [ -f {file} ]; then tail -c {ERROR_TAIL} {file}; fi");
        let q = Query {
            shell,
            kind: self.kind,
            tools: &self.tools,
        };
        let out = q.run(&command, "tail", None).await?;
        if !out.success() {
            return Err(q.refused(&format!("cannot read {}", self.files.error), &command, &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Runs scheduler commands on a shell, turning failures into [`BatchError`]s.
pub(crate) struct Query<'a> {
    pub(crate) shell: &'a dyn Shell,
    pub(crate) kind: SchedulerKind,
    pub(crate) tools: &'a Tools,
}

impl Query<'_> {
    /// Runs `command`; only a failure to run it at all is an error.
    pub(crate) async fn run(
        &self,
        command: &str,
        what: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Output, BatchError> {
        self.shell
            .run(command, stdin)
            .await
            .map_err(|source| BatchError::Exec {
                scheduler: self.kind,
                host: self.shell.host().to_owned(),
                what: what.to_owned(),
                command: command.to_owned(),
                source: Box::new(source),
            })
    }

    pub(crate) fn refused(&self, what: &str, command: &str, out: &Output) -> BatchError {
        let mut stderr = out.stderr_text();
        if stderr.is_empty() {
            stderr = out.stdout_text();
        }
        BatchError::Refused {
            scheduler: self.kind,
            host: self.shell.host().to_owned(),
            what: what.to_owned(),
            command: command.to_owned(),
            code: out.code,
            stderr,
        }
    }

    pub(crate) fn unparsed(&self, command: &str, source: ParseError) -> BatchError {
        BatchError::Unparsed {
            scheduler: self.kind,
            host: self.shell.host().to_owned(),
            command: command.to_owned(),
            source,
        }
    }
}

impl SchedulerKind {
    /// The submit command's usual name.
    pub fn submit_program(self) -> &'static str {
        match self {
            SchedulerKind::Slurm => "sbatch",
            SchedulerKind::Pbs | SchedulerKind::GridEngine => "qsub",
            SchedulerKind::Lsf => "bsub",
            SchedulerKind::Oar => "oarsub",
        }
    }

    /// The cancel command's usual name.
    pub fn cancel_program(self) -> &'static str {
        match self {
            SchedulerKind::Slurm => "scancel",
            SchedulerKind::Pbs | SchedulerKind::GridEngine => "qdel",
            SchedulerKind::Lsf => "bkill",
            SchedulerKind::Oar => "oardel",
        }
    }
}

/// The directory part of `path` (`/` for `/x`, `.` for `x`).
fn parent_dir(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((d, _)) => d,
        None => ".",
    }
}

/// Writes the job script of `runtime` in `work_dir` on `shell`, submits it
/// and returns the job: [`job_files`] then [`submit_files`].
///
/// `job_name` names the files (`work_dir/job_name.sh`, `.out`, `.err`) and
/// is the scheduler job name when the descriptor gives none. `work_dir` is
/// created when missing; it should be an absolute path (or start with `~/`).
pub async fn submit(
    shell: &dyn Shell,
    scheduler: &Scheduler,
    runtime: &RuntimeCommand,
    work_dir: &str,
    job_name: &str,
) -> Result<BatchJob, BatchError> {
    let files = job_files(shell, scheduler, work_dir, job_name).await?;
    submit_files(shell, scheduler, runtime, files).await
}

/// Where the files of a job submitted from `work_dir` on `shell` will be
/// ([`Scheduler::files`]), with `~/` resolved on that host. Nothing is
/// written yet: a caller that must be able to remove them whatever
/// happens learns them first.
pub async fn job_files(
    shell: &dyn Shell,
    scheduler: &Scheduler,
    work_dir: &str,
    job_name: &str,
) -> Result<JobFiles, BatchError> {
    let tools = Tools::of(scheduler.link());
    let q = Query {
        shell,
        kind: scheduler.kind(),
        tools: &tools,
    };
    let files = scheduler.files(work_dir, job_name);
    for (field, value) in [
        ("working directory", &files.work_dir),
        ("job name", &files.job_name),
    ] {
        scheduler.refuse_control(field, value)?;
    }
    if !files.needs_home() {
        return Ok(files);
    }
    let command = "printf '%s' \"$HOME\"";
    let out = q.run(command, "printf", None).await?;
    let home = out.stdout_text();
    if !out.success() || home.is_empty() {
        return Err(q.refused("cannot find the home directory", command, &out));
    }
    Ok(files.with_home(&home))
}

/// Writes the job script of `runtime` to `files` on `shell` and submits
/// it. Directories are created `0700` and the script `0700` (it holds the
/// runtimes' one-time ticket; OAR runs it directly, so it stays
/// executable); the scheduler writes the job's output files `0600`. When
/// the scheduler refuses the job, its files are removed again.
pub async fn submit_files(
    shell: &dyn Shell,
    scheduler: &Scheduler,
    runtime: &RuntimeCommand,
    files: JobFiles,
) -> Result<BatchJob, BatchError> {
    let kind = scheduler.kind();
    let tools = Tools::of(scheduler.link());
    let q = Query {
        shell,
        kind,
        tools: &tools,
    };
    // The credentials go to a file of their own, private to the user,
    // which the runtimes read (`ACTOGRID_CREDENTIALS=file:…`): never into
    // the script, the environment or a command line.
    let mut runtime = runtime.clone();
    if let Some(credentials) = runtime.credentials.take() {
        let write = format!(
            "umask 077 && mkdir -p {} {} && cat > {}",
            quote(&files.work_dir),
            quote(parent_dir(&files.credentials)),
            quote(&files.credentials)
        );
        let out = q
            .run(
                &write,
                "the credentials writer",
                Some(credentials.as_bytes()),
            )
            .await?;
        if !out.success() {
            let _ = q.run(&files.removal_script(), "rm", None).await;
            return Err(q.refused(
                &format!(
                    "cannot write the runtimes' credentials {}",
                    files.credentials
                ),
                &write,
                &out,
            ));
        }
        runtime.env.push((
            crate::exec::CREDENTIALS_ENV.to_owned(),
            format!("file:{}", files.credentials),
        ));
    }
    let script = scheduler.script(&runtime, &files);
    submit_script(shell, scheduler, &script, files).await
}

/// Writes `script` (a whole job script, directives included) to `files`
/// on `shell` and submits it, as [`submit_files`] does with the script
/// it writes. When the scheduler refuses the job, its files are removed.
pub async fn submit_script(
    shell: &dyn Shell,
    scheduler: &Scheduler,
    script: &str,
    mut files: JobFiles,
) -> Result<BatchJob, BatchError> {
    let kind = scheduler.kind();
    let tools = Tools::of(scheduler.link());
    let q = Query {
        shell,
        kind,
        tools: &tools,
    };
    let write = format!(
        "umask 077 && mkdir -p {} {} {} {} && cat > {script_file} && chmod 700 {script_file} && rm -f {} {}",
        quote(&files.work_dir),
        quote(parent_dir(&files.script)),
        quote(parent_dir(&files.output)),
        quote(parent_dir(&files.error)),
        quote(&files.output),
        quote(&files.error),
        script_file = quote(&files.script),
    );
    let out = q
        .run(&write, "the job script writer", Some(script.as_bytes()))
        .await?;
    if !out.success() {
        let _ = q.run(&files.removal_script(), "rm", None).await;
        return Err(q.refused(
            &format!("cannot write the job script {}", files.script),
            &write,
            &out,
        ));
    }

    // The scheduler creates the output files with the submitter's umask
    // (SLURM and PBS pass it on to the job).
    let command = format!("umask 077 && {}", scheduler.submit_command(&files));
    let program = kind.submit_program();
    let submitted = match q.run(&command, program, None).await {
        Ok(out) if out.success() => scheduler
            .parse_job_id(&String::from_utf8_lossy(&out.stdout))
            .map_err(|e| q.unparsed(&command, e)),
        Ok(out) => Err(q.refused(&format!("{program} refused the job"), &command, &out)),
        Err(e) => Err(e),
    };
    let id = match submitted {
        Ok(id) => id,
        Err(e) => {
            // Nothing will run from these files: leave nothing behind.
            let _ = q.run(&files.removal_script(), "rm", None).await;
            return Err(e);
        }
    };
    tracing::info!(
        scheduler = %kind,
        host = shell.host(),
        job = %id,
        script = %files.script,
        "batch job submitted"
    );
    if kind == SchedulerKind::Slurm {
        files.output = slurm::expand_pattern(&files.output, &id, &files.job_name);
        files.error = slurm::expand_pattern(&files.error, &id, &files.job_name);
    }
    Ok(BatchJob {
        id,
        kind,
        files,
        runtimes: scheduler.runtimes_per_job(),
        tools,
        cancelled: Arc::new(AtomicBool::new(false)),
    })
}

/// The last non-empty line of `text`, trimmed.
pub(crate) fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_acceptable() {
        assert_eq!(sanitize_name("sweep pbs/1"), "sweep_pbs_1");
        assert_eq!(sanitize_name("42"), "j42");
        assert_eq!(sanitize_name(""), "actogrid");
        assert_eq!(sanitize_name("ok-name_1.x"), "ok-name_1.x");
    }

    #[test]
    fn durations_and_values() {
        assert_eq!(hms(Duration::from_secs(2 * 3600 + 61)), "02:01:01");
        assert_eq!(hms(Duration::from_secs(30 * 3600)), "30:00:00");
        assert_eq!(hms(Duration::from_millis(1500)), "00:00:02");
        assert_eq!(directive_value("plain"), "plain");
        assert_eq!(directive_value("a b"), "\"a b\"");
        assert_eq!(directive_value("x\"$y"), "\"x\\\"\\$y\"");
    }

    #[test]
    fn home_is_resolved() {
        let f = JobFiles {
            job_name: "j".into(),
            work_dir: "~/w".into(),
            script: "/abs/s.sh".into(),
            output: "~".into(),
            error: "~/e".into(),
            credentials: "~/s.sh.credentials".into(),
            others: Vec::new(),
        };
        assert!(f.needs_home());
        let f = f.with_home("/home/u/");
        assert_eq!(f.work_dir, "/home/u/w");
        assert_eq!(f.script, "/abs/s.sh");
        assert_eq!(f.output, "/home/u/");
        assert_eq!(f.error, "/home/u/e");
        assert!(!f.needs_home());
    }
}
