//! Walking a process chain: each decorating process (ssh, a scheduler)
//! reaches a new place, and the runtime process at the end starts runtimes
//! there. Every step reports to a [`Launches`] sink: which launches it
//! opens (and how many runtimes each will register), what it started, and
//! what failed, host by host.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actogrid_descriptor::Descriptor;
use actogrid_descriptor::model::{
    FileTransfer, JvmProcess, Link, ProcessDefinition, ProcessFileTransfer, ProcessFileTransfers,
    ProcessKind, SshLogin,
};
use actogrid_descriptor::plan::{Count, process_runtime_count};
use tokio::sync::Semaphore;

use crate::batch::{JobFiles, Scheduler};
use crate::exec::{
    BoxFuture, CREDENTIALS_ENV, ExecError, LocalShell, Running, RuntimeCommand, Shell,
};
use crate::mpi::MpiOutcome;
use crate::ssh::{SshShell, SshTarget};

/// The identity of an opened launch, given back by [`Launches::open`].
pub type LaunchId = u64;

/// What was started for a launch.
pub enum Started {
    /// One runtime process, running until it exits or is killed.
    Process(Box<dyn Running>),
    /// A batch job whose tasks are the runtimes.
    Job {
        /// Where the job was submitted (to cancel it there).
        shell: Arc<dyn Shell>,
        /// The job.
        job: Box<crate::batch::BatchJob>,
    },
}

/// Where a chain reports what it does. Implemented by the deployer.
pub trait Launches: Send + Sync {
    /// Opens a launch that will register `runtimes` runtimes (`None` when
    /// only a scheduler knows), described by `label`, on `host`.
    fn open(&self, label: &str, host: &str, runtimes: Option<u64>) -> LaunchId;
    /// The command that starts one runtime of `launch` with `program`
    /// (a path where the runtime runs).
    fn command(&self, launch: LaunchId, program: &str) -> RuntimeCommand;
    /// The launch's process or job started.
    fn started(&self, launch: LaunchId, what: Started);
    /// The launch could not start.
    fn failed(&self, launch: LaunchId, error: String);
    /// A connection to a host was made (kept for the deployment's lifetime).
    fn connected(&self, _shell: Arc<dyn Shell>) {}
    /// A batch job's files are about to be written at `place` (before the
    /// job is submitted): whoever must be able to remove them, whatever
    /// happens to this process, learns where they are.
    fn job_files(&self, _launch: LaunchId, _place: &Arc<dyn Shell>, _files: &JobFiles) {}
    /// Files to bring back from a host when the deployment ends.
    fn retrieve_at_end(
        &self,
        _shell: Arc<dyn Shell>,
        _what: FileTransfer,
        _how: ProcessFileTransfer,
    ) {
    }
    /// The batch job that runs `mpirun` for `launch` was submitted at
    /// `place` (cancel it if the deployment ends first).
    fn mpi_job(&self, _launch: LaunchId, _place: &Arc<dyn Shell>, _job: &crate::batch::BatchJob) {}
    /// The MPI run of `launch` ended (successfully or not): the launch is
    /// over. The default only logs it.
    fn mpi_ended(&self, _launch: LaunchId, outcome: MpiOutcome) {
        if outcome.success() {
            tracing::info!("{outcome}");
        } else {
            tracing::warn!("{outcome}");
        }
    }
}

/// What every chain of one deployment shares.
#[derive(Clone)]
pub struct ChainContext {
    /// The descriptor.
    pub descriptor: Arc<Descriptor>,
    /// The application binary on this machine (shipped to remote hosts).
    pub program: PathBuf,
    /// Nodes each runtime hosts (`askedNodes` of the `jvm`).
    pub nodes_per_runtime: u32,
    /// Bounds concurrent starts (connections, spawns, submissions).
    pub limit: Arc<Semaphore>,
    /// ssh client configuration file (`ssh -F`), if any.
    pub ssh_config: Option<PathBuf>,
    /// How long an ssh connection may take.
    pub connect_timeout: Duration,
    /// How long an MPI run may take (`mpirun`, or its batch job from
    /// submission); it is stopped after that.
    pub run_timeout: Duration,
    /// Name used for batch jobs and their working directories.
    pub job_name: String,
    /// Label prefix (`jvm` name), for messages.
    pub jvm: String,
    /// Directory where job scripts and job output go, on the submitting
    /// host (`~/` is that host's home).
    pub work_dir: String,
    /// The virtual node's own `fileTransferDeploy` (what a process's
    /// `refid="implicit"` stands for).
    pub vn_deploy: Option<String>,
    /// The virtual node's own `fileTransferRetrieve`.
    pub vn_retrieve: Option<String>,
    /// Where ssh masters keep their control directories
    /// ([`SshTarget::control_directory`]); `None`: the temporary directory.
    pub control_dir: Option<PathBuf>,
}

impl ChainContext {
    /// The `fileTransfer` named `refid`; `implicit` stands for the virtual
    /// node's own (`implicit_id`).
    fn file_transfer(&self, refid: &str, implicit_id: Option<&str>) -> Option<&FileTransfer> {
        let id = if refid == "implicit" {
            implicit_id?
        } else {
            refid
        };
        self.descriptor
            .file_transfers
            .iter()
            .find(|f| f.id.value == id)
    }
}

/// Starts the chain of process `process_id` on this machine.
pub async fn start(ctx: &ChainContext, process_id: &str, sink: &dyn Launches) {
    let local: Arc<dyn Shell> = Arc::new(LocalShell);
    walk(ctx, process_id, local, sink, 0).await;
}

fn runtimes_of(ctx: &ChainContext, process: &ProcessDefinition) -> Option<u64> {
    match process_runtime_count(&ctx.descriptor, process) {
        Count::Exact(n) => Some(n),
        Count::Unknown | Count::Unbounded => None,
    }
}

/// `depth` is how many sequences lead here: validation refuses chains
/// longer than [`MAX_CHAIN_DEPTH`](actogrid_descriptor::plan::MAX_CHAIN_DEPTH),
/// and a model built otherwise meets the same bound here (each step nests
/// the next one's future).
fn walk<'a>(
    ctx: &'a ChainContext,
    process_id: &'a str,
    place: Arc<dyn Shell>,
    sink: &'a dyn Launches,
    depth: usize,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        if depth > actogrid_descriptor::plan::MAX_CHAIN_DEPTH {
            let id = sink.open(&format!("process `{process_id}`"), place.host(), None);
            sink.failed(
                id,
                format!(
                    "process `{process_id}` is more than {} steps down its chain: not started",
                    actogrid_descriptor::plan::MAX_CHAIN_DEPTH
                ),
            );
            return;
        }
        let Some(process) = ctx.descriptor.process(process_id) else {
            let id = sink.open(&format!("process `{process_id}`"), place.host(), Some(1));
            sink.failed(id, format!("no process is defined with id `{process_id}`"));
            return;
        };
        match &process.kind {
            ProcessKind::Jvm(jvm) => {
                start_runtime(ctx, process, jvm, &[], place, sink).await;
            }
            ProcessKind::Ssh(ssh) => {
                let hosts = std::slice::from_ref(&ssh.hostname);
                reach_hosts(
                    ctx,
                    process,
                    hosts,
                    &ssh.login,
                    &ssh.link,
                    &ssh.file_transfers,
                    place,
                    sink,
                    depth,
                )
                .await;
            }
            ProcessKind::ProcessList(list) | ProcessKind::ProcessListByHost(list) => {
                reach_hosts(
                    ctx,
                    process,
                    &list.hosts,
                    &list.login,
                    &list.link,
                    &list.file_transfers,
                    place,
                    sink,
                    depth,
                )
                .await;
            }
            ProcessKind::IndependentSequence(seq) => {
                let steps = seq
                    .processes
                    .iter()
                    .map(|p| walk(ctx, &p.value, place.clone(), sink, depth + 1));
                futures::future::join_all(steps).await;
            }
            ProcessKind::Slurm(_)
            | ProcessKind::Pbs(_)
            | ProcessKind::Lsf(_)
            | ProcessKind::Oar(_)
            | ProcessKind::GridEngine(_) => {
                submit_job(ctx, process, place, sink).await;
            }
            ProcessKind::DependentSequence(seq) => {
                run_mpi_sequence(ctx, process, seq, place, sink).await;
            }
            other => {
                let label = format!("{} `{}`", other.element_name(), process.id.value);
                let id = sink.open(&label, place.host(), runtimes_of(ctx, process));
                sink.failed(
                    id,
                    format!(
                        "{label}: {} is not supported by this deployer yet",
                        other.element_name()
                    ),
                );
            }
        }
    })
}

/// The `jvmProcess` at the end of a chain: one runtime at `place`.
async fn start_runtime(
    ctx: &ChainContext,
    process: &ProcessDefinition,
    jvm: &JvmProcess,
    links: &[&Link],
    place: Arc<dyn Shell>,
    sink: &dyn Launches,
) {
    let label = format!(
        "runtime `{}` of `{}` on {}",
        process.id.value,
        ctx.jvm,
        place.host()
    );
    let id = sink.open(&label, place.host(), Some(1));
    let _permit = ctx.limit.acquire().await;
    let program = match program_at(ctx, jvm, &place).await {
        Ok(p) => p,
        Err(e) => return sink.failed(id, format!("{label}: {e}")),
    };
    let mut cmd = sink.command(id, &program);
    add_environment(&mut cmd, jvm, links);
    let input = cmd.credentials.take();
    if input.is_some() {
        cmd.env
            .push((CREDENTIALS_ENV.to_owned(), "stdin".to_owned()));
    }
    match place
        .spawn(&cmd.exec_line(), input.as_deref().map(str::as_bytes))
        .await
    {
        Ok(running) => sink.started(id, Started::Process(running)),
        Err(e) => sink.failed(id, format!("{label}: {e}")),
    }
}

/// An ssh process: every host at once (bounded by the context's limit),
/// each continuing the chain there. One host failing fails only the
/// runtimes below it.
#[allow(clippy::too_many_arguments)]
async fn reach_hosts(
    ctx: &ChainContext,
    process: &ProcessDefinition,
    hosts: &[String],
    login: &SshLogin,
    link: &Link,
    transfers: &ProcessFileTransfers,
    place: Arc<dyn Shell>,
    sink: &dyn Launches,
    depth: usize,
) {
    let below = ctx
        .descriptor
        .process(&link.next.value)
        .and_then(|p| match process_runtime_count(&ctx.descriptor, p) {
            Count::Exact(n) => Some(n),
            _ => None,
        });
    let each = hosts.iter().map(|host| {
        let place = place.clone();
        async move {
            let label = format!(
                "{} `{}` to {host}",
                process.kind.element_name(),
                process.id.value
            );
            let fail = |error: String| {
                let id = sink.open(&label, host, below);
                sink.failed(id, error);
            };
            let mut target = SshTarget::from_login(host.clone(), login);
            if place.host() != "localhost" {
                // An ssh chain: this host is reached through the previous
                // one (ProxyJump), whose master stays for the deployment.
                match place.ssh_target() {
                    Some(via) => target = target.through(via),
                    None => {
                        return fail(format!(
                            "{label}: ssh from {} onwards is not supported: it is not an ssh host",
                            place.host()
                        ));
                    }
                }
            }
            target.connect_timeout = ctx.connect_timeout;
            if ctx.ssh_config.is_some() {
                target.config_file = ctx.ssh_config.clone();
            }
            target.control_directory = ctx.control_dir.clone();
            let shell = {
                let _permit = ctx.limit.acquire().await;
                match SshShell::connect(&target).await {
                    Ok(s) => Arc::new(s) as Arc<dyn Shell>,
                    Err(e) => return fail(e.to_string()),
                }
            };
            sink.connected(shell.clone());
            if let Some(refs) = &transfers.deploy {
                let Some(ft) = ctx.file_transfer(&refs.refid.value, ctx.vn_deploy.as_deref())
                else {
                    return fail(format!("{label}: no fileTransfer `{}`", refs.refid.value));
                };
                if let Err(e) = crate::transfer::deploy(shell.as_ref(), ft, refs).await {
                    return fail(format!("{label}: file transfer `{}`: {e}", ft.id.value));
                }
            }
            if let Some(refs) = &transfers.retrieve {
                match ctx.file_transfer(&refs.refid.value, ctx.vn_retrieve.as_deref()) {
                    Some(ft) => sink.retrieve_at_end(shell.clone(), ft.clone(), refs.clone()),
                    None => tracing::warn!(
                        "{label}: no fileTransfer `{}` to retrieve",
                        refs.refid.value
                    ),
                }
            }
            walk(ctx, &link.next.value, shell, sink, depth + 1).await;
        }
    });
    futures::future::join_all(each).await;
}

/// A scheduler process: one job whose tasks start the runtimes.
async fn submit_job(
    ctx: &ChainContext,
    process: &ProcessDefinition,
    place: Arc<dyn Shell>,
    sink: &dyn Launches,
) {
    let element = process.kind.element_name();
    let label = format!("{element} `{}` on {}", process.id.value, place.host());
    let scheduler = match Scheduler::from_process(&process.kind) {
        Ok(s) => s,
        Err(e) => {
            let id = sink.open(&label, place.host(), None);
            return sink.failed(id, format!("{label}: {e}"));
        }
    };
    let id = sink.open(&label, place.host(), scheduler.runtimes_per_job());
    let next = &scheduler.link().next.value;
    let jvm = match ctx.descriptor.process(next).map(|p| &p.kind) {
        Some(ProcessKind::Jvm(jvm)) => jvm,
        Some(other) => {
            return sink.failed(
                id,
                format!(
                    "{label}: the tasks of a job start the runtime itself, so the next process must be a jvmProcess, not {} `{next}`",
                    other.element_name()
                ),
            );
        }
        None => return sink.failed(id, format!("{label}: no process `{next}`")),
    };
    let _permit = ctx.limit.acquire().await;
    let program = match program_at(ctx, jvm, &place).await {
        Ok(p) => p,
        Err(e) => return sink.failed(id, format!("{label}: {e}")),
    };
    let mut cmd = sink.command(id, &program);
    add_environment(&mut cmd, jvm, &[]);
    let job_name = format!("{}-{}", ctx.job_name, process.id.value);
    let work_dir = format!("{}/{job_name}-{}", ctx.work_dir, std::process::id());
    let files =
        match crate::batch::job_files(place.as_ref(), &scheduler, &work_dir, &job_name).await {
            Ok(files) => files,
            Err(e) => return sink.failed(id, e.to_string()),
        };
    sink.job_files(id, &place, &files);
    match crate::batch::submit_files(place.as_ref(), &scheduler, &cmd, files).await {
        Ok(job) => {
            tracing::info!("{label}: submitted job {}", job.id);
            sink.started(
                id,
                Started::Job {
                    shell: place,
                    job: Box::new(job),
                },
            );
        }
        Err(e) => sink.failed(id, e.to_string()),
    }
}

/// Environment of the descriptor (links first, the runtime's own last).
fn add_environment(cmd: &mut RuntimeCommand, jvm: &JvmProcess, links: &[&Link]) {
    for link in links {
        for var in &link.environment {
            cmd.env.push((var.name.clone(), var.value.clone()));
        }
    }
    for var in &jvm.environment {
        cmd.env.push((var.name.clone(), var.value.clone()));
    }
}

/// The program to run at `place`: `commandPath` when the descriptor names
/// one, else the application binary (shipped when `place` is remote).
async fn program_at(
    ctx: &ChainContext,
    jvm: &JvmProcess,
    place: &Arc<dyn Shell>,
) -> Result<String, ExecError> {
    if let Some(path) = &jvm.command_path {
        return Ok(path.clone());
    }
    ship(place.as_ref(), &ctx.program).await
}

async fn ship(place: &dyn Shell, program: &Path) -> Result<String, ExecError> {
    if place.host() == "localhost" {
        return Ok(program.display().to_string());
    }
    let shipped = crate::transfer::ship_binary(place, program).await?;
    tracing::debug!(
        host = place.host(),
        "binary {:?} at {}",
        shipped.action,
        shipped.path
    );
    Ok(shipped.path)
}

/// A `dependentProcessSequence`: its first process books hosts, its
/// second, an `mpiProcess`, runs `mpirun` over them (see [`crate::mpi`]).
/// The launch registers no runtime; it ends with the run, reported to
/// [`Launches::mpi_ended`].
async fn run_mpi_sequence(
    ctx: &ChainContext,
    process: &ProcessDefinition,
    seq: &actogrid_descriptor::model::Sequence,
    place: Arc<dyn Shell>,
    sink: &dyn Launches,
) {
    let id_of = |i: usize| seq.processes.get(i).map(|r| r.value.as_str());
    let booking = id_of(0).and_then(|id| ctx.descriptor.process(id));
    let mpi = id_of(1).and_then(|id| ctx.descriptor.process(id));
    let sequence = process.id.value.as_str();
    let shape = match (seq.service.as_ref(), booking, mpi, seq.processes.len()) {
        (None, Some(booking), Some(mpi), 2) => match &mpi.kind {
            ProcessKind::Mpi(m) => Ok((booking, mpi, m)),
            other => Err(format!(
                "its second process `{}` is a {}, not an mpiProcess",
                mpi.id.value,
                other.element_name()
            )),
        },
        (Some(service), ..) => Err(format!(
            "it starts with service `{}`: hosts are booked by a process",
            service.value
        )),
        (None, _, _, n) if n != 2 => Err(format!(
            "it has {n} processes: a booking, then an mpiProcess"
        )),
        _ => Err("a process it names is not defined".to_owned()),
    };
    let (booking, mpi_process, mpi) = match shape {
        Ok(parts) => parts,
        Err(why) => {
            let label = format!("dependentProcessSequence `{sequence}` on {}", place.host());
            let id = sink.open(&label, place.host(), Some(0));
            return sink.failed(id, format!("{label}: {why}"));
        }
    };
    let run = crate::mpi::MpiRequest {
        mpi,
        process: &mpi_process.id.value,
        sequence,
        timeout: ctx.run_timeout,
    };
    match &booking.kind {
        ProcessKind::ProcessList(list) | ProcessKind::ProcessListByHost(list) => {
            run_mpi_on_hosts(ctx, &run, &list.hosts, &list.login, place, sink).await;
        }
        ProcessKind::Ssh(ssh) => {
            let hosts = std::slice::from_ref(&ssh.hostname);
            run_mpi_on_hosts(ctx, &run, hosts, &ssh.login, place, sink).await;
        }
        ProcessKind::Slurm(slurm) => {
            let label = format!(
                "mpiProcess `{}` in slurmProcess `{}` job from {}",
                run.process,
                booking.id.value,
                place.host()
            );
            // No start permit is held: the run lasts as long as its job.
            let id = sink.open(&label, place.host(), Some(0));
            let job_name = format!("{}-{}", ctx.job_name, mpi_process.id.value);
            let work_dir = format!("{}/{job_name}-{}", ctx.work_dir, std::process::id());
            let watch = JobReport {
                sink,
                launch: id,
                place: &place,
            };
            let outcome = crate::mpi::run_in_slurm_job(
                &run,
                place.as_ref(),
                slurm,
                &work_dir,
                &job_name,
                &watch,
            )
            .await;
            sink.mpi_ended(id, outcome);
        }
        other => {
            let label = format!("dependentProcessSequence `{sequence}` on {}", place.host());
            let id = sink.open(&label, place.host(), Some(0));
            sink.failed(
                id,
                format!(
                    "{label}: its first process `{}` is a {}, which cannot book hosts for mpirun here: use a processListbyHost, processList, sshProcess or slurmProcess",
                    booking.id.value,
                    other.element_name()
                ),
            );
        }
    }
}

/// `mpirun` at `place` over the hosts of a host list.
async fn run_mpi_on_hosts(
    ctx: &ChainContext,
    run: &crate::mpi::MpiRequest<'_>,
    hosts: &[String],
    login: &SshLogin,
    place: Arc<dyn Shell>,
    sink: &dyn Launches,
) {
    let label = format!(
        "mpiProcess `{}` over {} host(s) from {}",
        run.process,
        hosts.len(),
        place.host()
    );
    let id = sink.open(&label, place.host(), Some(0));
    // This machine's ssh configuration is only good here.
    let config = if place.host() == "localhost" {
        ctx.ssh_config.as_deref()
    } else {
        None
    };
    let agent = crate::mpi::ssh_agent(config, login);
    // No start permit is held: the run lasts as long as mpirun.
    let outcome = crate::mpi::run_on_hosts(run, &place, hosts, agent.as_deref()).await;
    sink.mpi_ended(id, outcome);
}

/// Passes what an MPI job does on to the sink.
struct JobReport<'a> {
    sink: &'a dyn Launches,
    launch: LaunchId,
    place: &'a Arc<dyn Shell>,
}

impl crate::mpi::JobWatch for JobReport<'_> {
    fn files(&self, files: &JobFiles) {
        self.sink.job_files(self.launch, self.place, files);
    }

    fn submitted(&self, job: &crate::batch::BatchJob) {
        self.sink.mpi_job(self.launch, self.place, job);
    }
}
