//! Activation: walking a virtual node's mapping and starting its runtimes
//! through the providers, with the deployer's side of each launch (its
//! ticket, its process watcher, its job poller).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actogrid_acquisition::chain::{self, ChainContext, LaunchId, Launches, Relay, Started};
use actogrid_acquisition::exec::{Running, RuntimeCommand, Shell};
use actogrid_descriptor::model::{FileTransfer, ProcessFileTransfer, RuntimeSource, ServiceKind};
use actogrid_runtime::NodeUrl;
use tokio::sync::{Semaphore, oneshot};

use super::agent::{DEPLOYER_ENV, NODE_PREFIX_ENV, NODES_ENV, ROUTES_ENV, host_port};
use actogrid_acquisition::batch::{JobFiles, JobState};

use actogrid_technical_services::Origin;

use super::state::{Job, Shared, VnEvent, VnState, lock};
use super::{DeployError, Inner};

/// Starts everything virtual node `vn` is mapped to (in the background).
pub(super) async fn activate(inner: &Arc<Inner>, vn: &Arc<VnState>) -> Result<(), DeployError> {
    let d = inner.descriptor.clone();
    let name = vn.name.clone();
    let vn_model = d.virtual_node(&name);
    if let Some(mapping) = d.mapping(&name) {
        if mapping.current_jvm.is_some() {
            let node = inner.shared.runtime.local_node(&name);
            vn.counters.asked.fetch_add(1, Ordering::Relaxed);
            vn.counters.started.fetch_add(1, Ordering::Relaxed);
            vn.counters.registered.fetch_add(1, Ordering::Relaxed);
            let origin = Origin::Created {
                provider: "currentJVM".to_owned(),
            };
            vn.clone().admit_node(node, origin).await;
        }
        let limit = Arc::new(Semaphore::new(inner.options.parallelism.max(1)));
        // ssh masters keep their control directories where the reaper
        // finds them (started now, before anything is made elsewhere).
        let control_dir = if super::reaper::needed_by(&d) {
            inner.reaper.dir()
        } else {
            None
        };
        for jvm_name in &mapping.jvms {
            let Some(jvm) = d.jvm(&jvm_name.value) else {
                continue;
            };
            match &jvm.source {
                RuntimeSource::Creation(process) => {
                    let ctx = ChainContext {
                        descriptor: d.clone(),
                        program: inner.program.clone(),
                        nodes_per_runtime: jvm.asked_nodes.max(1),
                        limit: limit.clone(),
                        ssh_config: inner.options.ssh_config.clone(),
                        connect_timeout: inner.options.connect_timeout,
                        run_timeout: vn.timeout,
                        job_name: format!("actogrid-{name}"),
                        jvm: jvm.name.value.clone(),
                        work_dir: inner.options.work_dir.clone(),
                        vn_deploy: vn_model
                            .and_then(|v| v.file_transfer_deploy.as_ref())
                            .map(|r| r.value.clone()),
                        vn_retrieve: vn_model
                            .and_then(|v| v.file_transfer_retrieve.as_ref())
                            .map(|r| r.value.clone()),
                        control_dir: control_dir.clone(),
                        relay: None,
                    };
                    let sink = Sink {
                        inner: inner.clone(),
                        vn: vn.clone(),
                        nodes_per_runtime: u64::from(jvm.asked_nodes.max(1)),
                    };
                    let process = process.value.clone();
                    let copies = jvm.runtimes.max(1);
                    let walking = Walking::new(&inner.walks);
                    let task = tokio::spawn(async move {
                        let _walking = walking;
                        let starts = (0..copies).map(|_| chain::start(&ctx, &process, &sink));
                        futures::future::join_all(starts).await;
                    });
                    lock(&inner.tasks).push(task);
                }
                RuntimeSource::Acquisition(service) => {
                    let kind = d.service(&service.value).map(|s| s.kind.clone());
                    acquire(inner, vn, &service.value, kind, jvm.asked_nodes.max(1));
                }
            }
        }
    }
    // Every lookup is counted before the first one runs, so that the
    // virtual node knows all its lookups have read their directory only
    // when they all have (`nodes()` then waits for what they listed only).
    let mut lookups = Vec::new();
    for lookup in d.lookups.iter().filter(|l| l.virtual_node.value == name) {
        let (Some(host), Some(port)) = (lookup.host.clone(), lookup.port) else {
            let missing = match (&lookup.host, lookup.port) {
                (None, None) => "host and port",
                (None, Some(_)) => "host",
                _ => "port",
            };
            vn.fail(
                "?",
                format!(
                    "lookup of `{name}` (line {}): the descriptor leaves the {missing} to the program (`*` or absent); look the virtual node up with lookup_vn and its URL",
                    lookup.virtual_node.span.line
                ),
            );
            continue;
        };
        lookups.push((host, port));
    }
    vn.lookups.fetch_add(lookups.len() as u64, Ordering::AcqRel);
    vn.lookups_pending
        .fetch_add(lookups.len() as u64, Ordering::AcqRel);
    for (host, port) in lookups {
        let url = NodeUrl::new(host.clone(), port, name.clone());
        let rt = inner.shared.runtime.clone();
        let vn = vn.clone();
        lock(&inner.tasks).push(tokio::spawn(async move {
            match super::lookup_vn(&rt, &url).await {
                Ok(nodes) => {
                    vn.looked_up.fetch_add(nodes.len() as u64, Ordering::AcqRel);
                    vn.lookups_pending.fetch_sub(1, Ordering::AcqRel);
                    vn.bump();
                    for n in nodes {
                        let origin = Origin::Acquired {
                            service: format!("lookup of {url}"),
                        };
                        vn.clone().admit_node(n, origin).await;
                    }
                }
                Err(e) => {
                    vn.lookups_pending.fetch_sub(1, Ordering::AcqRel);
                    vn.fail(&host, e.to_string());
                }
            }
        }));
    }
    Ok(())
}

/// Runtimes acquired from a service rather than created.
fn acquire(
    inner: &Arc<Inner>,
    vn: &Arc<VnState>,
    service: &str,
    kind: Option<ServiceKind>,
    nodes_per_runtime: u32,
) {
    match kind {
        Some(ServiceKind::RegistryLookup(lookup)) => match lookup.url.parse::<NodeUrl>() {
            Ok(url) => {
                let node = inner.shared.runtime.node(&url);
                let origin = Origin::Acquired {
                    service: format!("RMIRegistryLookup `{service}`"),
                };
                lock(&inner.tasks).push(tokio::spawn(vn.clone().admit_node(node, origin)));
            }
            Err(e) => vn.fail("?", format!("service `{service}`: bad URL: {e}")),
        },
        Some(ServiceKind::P2p(p2p)) => {
            // A lost acquired node is replaced while the request still asks:
            // losses never make the count unreachable before the timeout.
            vn.lost_unknown.store(true, Ordering::Relaxed);
            let (inner2, vn, service) = (inner.clone(), vn.clone(), service.to_owned());
            let task = tokio::spawn(async move {
                let started = super::p2p::Acquisition::start(
                    &inner2,
                    &vn,
                    &service,
                    &p2p,
                    u64::from(nodes_per_runtime),
                )
                .await;
                match started {
                    Ok(acquisition) => {
                        if inner2.killed.load(Ordering::Acquire) {
                            acquisition.end().await;
                        } else {
                            lock(&inner2.overlays).push(acquisition);
                        }
                    }
                    Err(e) => {
                        vn.lost_unknown.store(true, Ordering::Relaxed);
                        vn.fail("overlay", e.to_string());
                    }
                }
            });
            lock(&inner.tasks).push(task);
        }
        _ => vn.fail(
            "?",
            format!("service `{service}` does not provide runtimes"),
        ),
    }
}

/// Files to bring back from a host at the end.
pub(super) struct Retrieval {
    shell: Arc<dyn Shell>,
    what: FileTransfer,
    how: ProcessFileTransfer,
}

impl Retrieval {
    pub(super) async fn run(&self) {
        match actogrid_acquisition::transfer::retrieve(self.shell.as_ref(), &self.what, &self.how)
            .await
        {
            Ok(report) => tracing::info!(
                "retrieved {} file(s), {} bytes, from {}",
                report.files(),
                report.bytes(),
                report.host
            ),
            Err(e) => tracing::warn!("file transfer `{}`: {e}", self.what.id.value),
        }
    }
}

/// The deployer's side of the launches of one `jvm` of one VN.
struct Sink {
    inner: Arc<Inner>,
    vn: Arc<VnState>,
    nodes_per_runtime: u64,
}

impl Launches for Sink {
    fn open(&self, label: &str, host: &str, runtimes: Option<u64>) -> LaunchId {
        self.vn
            .counters
            .asked
            .fetch_add(runtimes.unwrap_or(1), Ordering::Relaxed);
        self.inner.shared.open_launch(
            &self.vn,
            label.to_owned(),
            host.to_owned(),
            runtimes,
            self.nodes_per_runtime,
        )
    }

    fn command(&self, launch: LaunchId, program: &str, relay: Option<&Relay>) -> RuntimeCommand {
        let urls = lock(&self.inner.registrar_urls).clone();
        let mut routes = Vec::new();
        let deployers = match relay {
            None => urls.join(","),
            Some(relay) => {
                // The runtime reaches the deployer at the relay only; calls
                // to the deployer's own address take the relay too.
                self.inner.shared.relayed_launch(launch);
                let mut through = Vec::new();
                for url in &urls {
                    let Ok(parsed) = url.parse::<NodeUrl>() else {
                        continue;
                    };
                    let at = host_port(parsed.host(), parsed.port());
                    routes.push(format!("{at}={}", relay.address));
                    through.push(format!("actogrid://{}/{}", relay.address, parsed.name()));
                }
                through.join(",")
            }
        };
        RuntimeCommand {
            program: program.to_owned(),
            args: Vec::new(),
            env: vec![
                (DEPLOYER_ENV.to_owned(), deployers),
                (NODES_ENV.to_owned(), self.nodes_per_runtime.to_string()),
                (NODE_PREFIX_ENV.to_owned(), self.vn.name.clone()),
            ]
            .into_iter()
            .chain(self.inner.settings.to_env())
            .chain(self.vn.launch_env.iter().cloned())
            .chain((!routes.is_empty()).then(|| (ROUTES_ENV.to_owned(), routes.join(","))))
            .collect(),
            credentials: Some(self.inner.shared.enrollment(launch)),
        }
    }

    fn deployer_address(&self) -> Option<String> {
        let urls = lock(&self.inner.registrar_urls);
        let url = urls.first()?.parse::<NodeUrl>().ok()?;
        Some(host_port(url.host(), url.port()))
    }

    fn relay_started(&self, relay: Box<dyn Running>) {
        lock(&self.inner.relays).push(relay);
    }

    fn started(&self, launch: LaunchId, what: Started) {
        let shared = self.inner.shared.clone();
        match what {
            Started::Process(mut running) => {
                self.vn.counters.started.fetch_add(1, Ordering::Relaxed);
                let (kill, killed) = oneshot::channel::<()>();
                lock(&shared.state).launches[launch as usize].kill = Some(kill);
                if shared.ended.load(Ordering::Acquire) {
                    running.kill();
                }
                let watcher = tokio::spawn(async move {
                    let exit = tokio::select! {
                        exit = running.wait() => exit,
                        _ = killed => {
                            running.kill();
                            running.wait().await
                        }
                    };
                    shared.launch_ended(launch, &exit.to_string());
                });
                lock(&self.inner.watchers).push(watcher);
            }
            Started::Job { shell, job } => {
                self.inner.reaper.job_submitted(shell.as_ref(), &job);
                // Its runtimes count as started once the job runs.
                self.vn
                    .counters
                    .pending
                    .fetch_add(job.runtimes.unwrap_or(1), Ordering::Relaxed);
                let job = *job;
                let poller = Job {
                    shell: shell.clone(),
                    job: job.clone(),
                };
                lock(&shared.state).launches[launch as usize].job = Some(Job { shell, job });
                let label = lock(&shared.state).launches[launch as usize].label.clone();
                let vn = self.vn.clone();
                let task = tokio::spawn(watch_job(shared, vn, launch, label, poller));
                lock(&self.inner.tasks).push(task);
            }
        }
        self.vn.bump();
    }

    fn failed(&self, launch: LaunchId, error: String) {
        self.inner.shared.launch_failed(launch, error);
    }

    fn job_files(&self, _launch: LaunchId, place: &Arc<dyn Shell>, files: &JobFiles) {
        self.inner.reaper.job_files(place.as_ref(), files);
    }

    fn connected(&self, shell: Arc<dyn Shell>) {
        lock(&self.inner.shells).push(shell);
    }

    fn retrieve_at_end(&self, shell: Arc<dyn Shell>, what: FileTransfer, how: ProcessFileTransfer) {
        lock(&self.inner.retrievals).push(Retrieval { shell, what, how });
    }

    fn mpi_job(
        &self,
        launch: LaunchId,
        place: &Arc<dyn Shell>,
        job: &actogrid_acquisition::batch::BatchJob,
    ) {
        self.inner.reaper.job_submitted(place.as_ref(), job);
        // Listed by `Deployment::jobs`, cancelled if the deployment ends first.
        lock(&self.inner.shared.state).launches[launch as usize].job = Some(Job {
            shell: place.clone(),
            job: job.clone(),
        });
    }

    fn mpi_ended(&self, launch: LaunchId, outcome: actogrid_acquisition::mpi::MpiOutcome) {
        let shared = &self.inner.shared;
        {
            let mut st = lock(&shared.state);
            // Its job, if any, is over: nothing to cancel.
            st.launches[launch as usize].job = None;
            st.mpi.push(outcome.clone());
        }
        let _ = self
            .vn
            .events
            .send(VnEvent::MpiEnded(Box::new(outcome.clone())));
        if outcome.success() {
            tracing::info!(vn = %self.vn.name, "{outcome}");
            shared.launch_ended(launch, "ended");
        } else {
            shared.launch_failed(launch, outcome.to_string());
        }
    }
}

/// Counts a process chain being walked (see [`super::Deployment::wait_mpi_runs`]),
/// until dropped: when its task ends or is aborted.
pub(super) struct Walking(tokio::sync::watch::Sender<u64>);

impl Walking {
    pub(super) fn new(walks: &tokio::sync::watch::Sender<u64>) -> Walking {
        walks.send_modify(|n| *n += 1);
        Walking(walks.clone())
    }
}

impl Drop for Walking {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Follows a batch job until it ends: while pending, its state and reason
/// show in the progress bar and in timeout messages; once it runs its
/// runtimes count as started; its end (with the tail of its error file)
/// ends the launch.
async fn watch_job(
    shared: Arc<Shared>,
    vn: Arc<VnState>,
    launch: LaunchId,
    label: String,
    job: Job,
) {
    let started = std::time::Instant::now();
    let runtimes = job.job.runtimes.unwrap_or(1);
    let mut pending = true;
    // The job left its queue: its runtimes are started (`running`) or
    // will never be.
    let settle = |pending: &mut bool, running: bool| {
        if std::mem::take(pending) {
            vn.counters.pending.fetch_sub(runtimes, Ordering::Relaxed);
            if running {
                vn.counters.started.fetch_add(runtimes, Ordering::Relaxed);
            }
            lock(&vn.pending_reasons).remove(&launch);
            vn.bump();
        }
    };
    let mut first = true;
    loop {
        // The first look is at once: the bar says why a job waits as soon
        // as the scheduler does.
        let every = if first {
            Duration::ZERO
        } else if started.elapsed() < Duration::from_secs(30) {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(3)
        };
        first = false;
        tokio::time::sleep(every).await;
        if shared.ended.load(Ordering::Acquire) {
            return;
        }
        let state = match job.job.state(job.shell.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                lock(&vn.waiting_on).insert(launch, format!("{label}: {e}"));
                continue;
            }
        };
        if state.is_finished() {
            settle(&mut pending, false);
            let tail = job
                .job
                .stderr_tail(job.shell.as_ref())
                .await
                .unwrap_or_default();
            let tail = tail.trim();
            let how = if tail.is_empty() {
                format!("(job {}) ended: {state}", job.job.id)
            } else {
                format!(
                    "(job {}) ended: {state}; its error output: {tail}",
                    job.job.id
                )
            };
            shared.launch_ended(launch, &how);
            return;
        }
        match &state {
            JobState::Running => settle(&mut pending, true),
            JobState::Pending { reason } if pending => {
                lock(&vn.pending_reasons).insert(launch, reason.clone());
            }
            _ => {}
        }
        let mut waiting = lock(&vn.waiting_on);
        match &state {
            JobState::Running => {
                waiting.insert(launch, format!("{label} (job {}): running", job.job.id));
            }
            other => {
                waiting.insert(launch, format!("{label} (job {}): {other}", job.job.id));
            }
        }
    }
}
