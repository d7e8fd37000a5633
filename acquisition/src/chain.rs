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
    FileTransfer, HierarchicalProcess, JvmProcess, Link, ProcessDefinition, ProcessFileTransfer,
    ProcessFileTransfers, ProcessKind, SshLogin,
};
use actogrid_descriptor::plan::{Count, process_runtime_count};
use tokio::sync::Semaphore;

use crate::batch::{JobFiles, Scheduler};
use crate::exec::{
    BoxFuture, CREDENTIALS_ENV, ExecError, LocalShell, Running, RuntimeCommand, Shell, quote,
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
    /// (a path where the runtime runs); `relay`: the runtime reaches the
    /// deployer through that relay only.
    fn command(&self, launch: LaunchId, program: &str, relay: Option<&Relay>) -> RuntimeCommand;
    /// Where this process serves the runtimes it starts (`host:port`, as
    /// this process reaches it): what a front-end's relay forwards to.
    fn deployer_address(&self) -> Option<String> {
        None
    }
    /// A relay started on a front-end: it runs until the deployment ends.
    fn relay_started(&self, _relay: Box<dyn Running>) {}
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
    /// The relay runtimes reach the deployer through, below a
    /// `hierarchicalProcess`; `None` elsewhere.
    pub relay: Option<Relay>,
}

/// A relay on a cluster's front-end: runtimes behind it, which cannot reach
/// the deployer, connect to it instead, and it forwards their connections
/// to the deployer over the deployer's ssh connection to the front-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// `host:port` of the relay, as the hosts behind the front-end reach it.
    pub address: String,
    /// The front-end it runs on, as the descriptor names it.
    pub front_end: String,
}

/// Set on a program started as a relay: the `host:port` (on the
/// front-end's loopback) its connections are forwarded to.
pub const RELAY_TO_ENV: &str = "ACTOGRID_RELAY_TO";
/// The address a relay listens on (`host:0` picks the port).
pub const RELAY_LISTEN_ENV: &str = "ACTOGRID_RELAY_LISTEN";
/// The file a relay writes the `host:port` it is reached at into, once it
/// listens.
pub const RELAY_ADDRESS_FILE_ENV: &str = "ACTOGRID_RELAY_ADDRESS_FILE";

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
            ProcessKind::Hierarchical(h) => {
                reach_front_end(ctx, process, h, place, sink, depth).await;
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
    let mut cmd = sink.command(id, &program, ctx.relay.as_ref());
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
        .and_then(|p| runtimes_of(ctx, p));
    let each = hosts.iter().map(|host| {
        let place = place.clone();
        async move {
            let label = format!(
                "{} `{}` to {host}",
                process.kind.element_name(),
                process.id.value
            );
            let shell = match connect(ctx, host, login, transfers, place, sink, &label).await {
                Ok(shell) => shell,
                Err(error) => {
                    let id = sink.open(&label, host, below);
                    return sink.failed(id, error);
                }
            };
            walk(ctx, &link.next.value, shell, sink, depth + 1).await;
        }
    });
    futures::future::join_all(each).await;
}

/// A `hierarchicalProcess`: logs in to the front-end, starts the relay
/// there, and runs the inner process from the front-end with the relay as
/// the way to the deployer.
async fn reach_front_end(
    ctx: &ChainContext,
    process: &ProcessDefinition,
    h: &HierarchicalProcess,
    place: Arc<dyn Shell>,
    sink: &dyn Launches,
    depth: usize,
) {
    let label = format!(
        "hierarchicalProcess `{}` to {}",
        process.id.value, h.hostname
    );
    let fail = |error: String| {
        let below = ctx
            .descriptor
            .process(&h.link.next.value)
            .and_then(|p| runtimes_of(ctx, p));
        let id = sink.open(&label, &h.hostname, below);
        sink.failed(id, error);
    };
    let shell = match connect(
        ctx,
        &h.hostname,
        &h.login,
        &h.file_transfers,
        place,
        sink,
        &label,
    )
    .await
    {
        Ok(shell) => shell,
        Err(e) => return fail(e),
    };
    let relay = match start_relay(ctx, h, &shell, sink).await {
        Ok(relay) => relay,
        Err(e) => return fail(format!("{label}: {e}")),
    };
    tracing::info!(
        "{label}: relay at {} for the hosts behind it",
        relay.address
    );
    let inner = ChainContext {
        relay: Some(relay),
        ..ctx.clone()
    };
    walk(&inner, &h.link.next.value, shell, sink, depth + 1).await;
}

/// How long a relay may take to say where it listens.
const RELAY_START: Duration = Duration::from_secs(20);

/// Starts the relay on `front_end`: a port of its loopback forwarded to the
/// deployer over the ssh connection, and the program of the forwarder
/// listening on the inner network and passing connections to that port.
async fn start_relay(
    ctx: &ChainContext,
    h: &HierarchicalProcess,
    front_end: &Arc<dyn Shell>,
    sink: &dyn Launches,
) -> Result<Relay, String> {
    let deployer = sink
        .deployer_address()
        .ok_or("this deployment serves no address a relay could forward to")?;
    let port = front_end
        .forward_here(&deployer)
        .await
        .map_err(|e| e.to_string())?;
    let jvm = match ctx.descriptor.process(&h.forwarder.value).map(|p| &p.kind) {
        Some(ProcessKind::Jvm(jvm)) => jvm,
        Some(other) => {
            return Err(format!(
                "the forwarder `{}` is {}, not a jvmProcess",
                h.forwarder.value,
                other.element_name()
            ));
        }
        None => return Err(format!("no process `{}`", h.forwarder.value)),
    };
    let program = program_at(ctx, jvm, front_end)
        .await
        .map_err(|e| e.to_string())?;
    let made = front_end
        .run(
            "umask 077 && mktemp -d \"${TMPDIR:-/tmp}/actogrid-relay.XXXXXX\"",
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    let dir = made.stdout_text();
    if !made.success() || dir.is_empty() {
        return Err(format!(
            "cannot make a private directory: {}",
            made.stderr_text()
        ));
    }
    let listen = match h.internal_ip.as_deref() {
        Some(ip) if ip.contains(':') => format!("[{ip}]:0"),
        Some(ip) => format!("{ip}:0"),
        None => "0.0.0.0:0".to_owned(),
    };
    let file = format!("{dir}/address");
    // The forwarder's environment, then what makes it a relay.
    let mut script = String::new();
    for var in &jvm.environment {
        script.push_str(&quote(&format!("{}={}", var.name, var.value)));
        script.push(' ');
    }
    script.push_str(&format!(
        "{RELAY_TO_ENV}={} {RELAY_LISTEN_ENV}={} {RELAY_ADDRESS_FILE_ENV}={} exec {}",
        quote(&format!("127.0.0.1:{port}")),
        quote(&listen),
        quote(&file),
        quote(&program)
    ));
    let mut running = front_end
        .spawn(&script, Some(b""))
        .await
        .map_err(|e| e.to_string())?;
    // One command waits for the file, prints it and removes the directory.
    let wait = format!(
        "d={dir}; i=0; while [ ! -s \"$d/address\" ] && [ $i -lt {} ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done; cat \"$d/address\" 2>/dev/null; rm -rf \"$d\"",
        RELAY_START.as_millis() / 100,
        dir = quote(&dir)
    );
    // (Not raced with the relay's end: waiting for it owns its channel.)
    let said = front_end
        .run(&wait, None)
        .await
        .map_err(|e| e.to_string())?;
    let address = said.stdout_text();
    if address.is_empty() {
        running.kill();
        let exit = tokio::time::timeout(Duration::from_secs(5), running.wait()).await;
        return Err(match exit {
            Ok(exit) => format!("the relay ({program}) did not start: {exit}"),
            Err(_) => {
                format!("the relay ({program}) did not say where it listens within {RELAY_START:?}")
            }
        });
    }
    sink.relay_started(running);
    Ok(Relay {
        address,
        front_end: h.hostname.clone(),
    })
}

/// Logs in to `host` from `place` (through it when it is an ssh host
/// itself), keeps the connection for the deployment, and pushes the
/// process's files there: the shell the chain continues in.
async fn connect(
    ctx: &ChainContext,
    host: &str,
    login: &SshLogin,
    transfers: &ProcessFileTransfers,
    place: Arc<dyn Shell>,
    sink: &dyn Launches,
    label: &str,
) -> Result<Arc<dyn Shell>, String> {
    let mut target = SshTarget::from_login(host.to_owned(), login);
    if place.host() != "localhost" {
        // An ssh chain: this host is reached through the previous
        // one (ProxyJump), whose master stays for the deployment.
        match place.ssh_target() {
            Some(via) => target = target.through(via),
            None => {
                return Err(format!(
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
            Err(e) => return Err(e.to_string()),
        }
    };
    sink.connected(shell.clone());
    if let Some(refs) = &transfers.deploy {
        let Some(ft) = ctx.file_transfer(&refs.refid.value, ctx.vn_deploy.as_deref()) else {
            return Err(format!("{label}: no fileTransfer `{}`", refs.refid.value));
        };
        if let Err(e) = crate::transfer::deploy(shell.as_ref(), ft, refs).await {
            return Err(format!("{label}: file transfer `{}`: {e}", ft.id.value));
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
    Ok(shell)
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
    let mut cmd = sink.command(id, &program, ctx.relay.as_ref());
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
