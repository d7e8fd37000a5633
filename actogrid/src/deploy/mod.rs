//! Deployments: a descriptor turned into running nodes, and taken down
//! again.
//!
//! ```no_run
//! # async fn run() -> Result<(), actogrid::DeployError> {
//! let deployment = actogrid::Deployment::load("cluster.xml").await?;
//! deployment.activate().await?;
//! let workers = deployment.virtual_node("workers")?;
//! for node in workers.nodes().await? {
//!     println!("{}", node.url());
//! }
//! deployment.kill().await; // or drop it
//! # Ok(()) }
//! ```
//!
//! Every runtime a deployment starts runs this very binary in node mode,
//! connects back to the deployment's registrar with a one-time ticket and
//! renews a lease; when the deployer ends, is interrupted or is killed,
//! its runtimes exit on their own within the lease (10 s by default), and
//! a reaper removes what is not a runtime (batch jobs, job files, ssh
//! connections: `reaper.rs`). What the runtimes print comes back to the
//! deployment ([`Deployment::logs`]; `output.rs`, `capture.rs`).

pub(crate) mod agent;
pub(crate) mod capture;
pub(crate) mod dashboard;
mod ft;
mod launch;
pub(crate) mod live;
mod output;
mod p2p;
pub(crate) mod program;
mod progress;
mod reach;
mod reaper;
pub(crate) mod registrar;
pub(crate) mod relay;
mod services;
mod state;
mod vn;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actogrid_descriptor::{Descriptor, LoadOptions};
use actogrid_runtime::{Node, NodeUrl, Runtime};

pub use actogrid_acquisition::mpi::MpiOutcome;
pub use actogrid_technical_services::{VnDirectory, VnDirectoryProxy};
pub use agent::{
    ADVERTISE_ENV, DEPLOYER_ENV, LISTEN_ENV, NODE_PREFIX_ENV, NODES_ENV, RuntimeAgent,
    RuntimeAgentProxy, RuntimeInfo,
};
pub use ft::{STATE_DIR_ENV, state_dir};
pub use output::{LogSink, LogSinkProxy, MAX_LINE, OutputLine, OutputOptions, PrintedLine, Stream};
pub use registrar::{Admission, Refusal, Registrar, RegistrarProxy, Registration};
pub use state::VnEvent;
pub use vn::VirtualNode;

use state::{Shared, VnState, lock};

/// Default lease: a runtime whose deployer is gone exits within this time.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Environment variable overriding the lease, in milliseconds.
pub const LEASE_ENV: &str = "ACTOGRID_LEASE_MS";

/// What can go wrong deploying.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The descriptor could not be read or is invalid (diagnostics included).
    #[error(transparent)]
    Descriptor(#[from] actogrid_descriptor::Error),
    /// No runtime to deploy from.
    #[error(
        "no actogrid runtime in this process: use #[actogrid::main], or give one with DeployOptions::runtime"
    )]
    NoRuntime,
    /// The program asked for a virtual node the descriptor does not define.
    #[error("no virtual node `{name}` in the descriptor (it defines: {known})")]
    NoSuchVirtualNode {
        /// The name asked for.
        name: String,
        /// The names defined.
        known: String,
    },
    /// A virtual node was used before it was activated.
    #[error("virtual node `{0}` is not activated: call activate() or activate_vn() first")]
    NotActivated(String),
    /// Not enough nodes arrived.
    #[error("{}", not_enough(self))]
    NotEnoughNodes {
        /// The virtual node.
        vn: String,
        /// Nodes it has.
        have: u64,
        /// Nodes it needed (`minNodeNumber`, else every expected node).
        needed: u64,
        /// Nodes the descriptor maps to it, when it says exactly.
        expected: Option<u64>,
        /// Nodes that failed or left (they will not come).
        failed: u64,
        /// How long it waited.
        waited: Duration,
        /// Failures made the count unreachable before the timeout.
        impossible: bool,
        /// Every failure, one line per host or job.
        failures: Box<[String]>,
        /// What is still pending (job states).
        waiting_on: Box<[String]>,
    },
    /// A technical service failed a node and asked for the whole virtual
    /// node to fail.
    #[error("virtual node `{vn}`: {error}")]
    ServiceFailed {
        /// The virtual node.
        vn: String,
        /// The service's failure.
        error: String,
    },
    /// The deployment was killed.
    #[error("the deployment has ended")]
    Ended,
    /// Something needed to deploy could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// `1 node`, `2 nodes`.
fn count_nodes(n: u64) -> String {
    if n == 1 {
        "1 node".to_owned()
    } else {
        format!("{n} nodes")
    }
}

fn not_enough(e: &DeployError) -> String {
    let DeployError::NotEnoughNodes {
        vn,
        have,
        needed,
        expected,
        failed,
        waited,
        impossible,
        failures,
        waiting_on,
    } = e
    else {
        return String::new();
    };
    let waited = waited.as_secs_f64();
    // "1 of its 3 nodes failed", "all 4 of its nodes failed", "2 nodes failed".
    let failed_words = match expected {
        Some(1) if *failed >= 1 => "its only node failed".to_owned(),
        Some(2) if *failed >= 2 => "both its nodes failed".to_owned(),
        Some(e) if failed >= e => format!("all {e} of its nodes failed"),
        Some(e) => format!("{failed} of its {e} nodes failed"),
        None => format!("{} failed", count_nodes(*failed)),
    };
    let mut out = if *impossible {
        let most = match expected {
            Some(e) if failed < e => format!(", so at most {} can come", e - failed),
            _ => String::new(),
        };
        format!(
            "virtual node `{vn}` needs {}, but {failed_words}{most} ({have} usable after {waited:.1} s)",
            count_nodes(*needed)
        )
    } else {
        let mut s = format!(
            "virtual node `{vn}` needs {} and has {have} after {waited:.1} s (its timeout)",
            count_nodes(*needed)
        );
        if *failed > 0 {
            s.push_str("; ");
            s.push_str(&failed_words);
        }
        s
    };
    for f in failures {
        out.push_str("\n  failed: ");
        out.push_str(f);
    }
    for w in waiting_on {
        out.push_str("\n  still waiting: ");
        out.push_str(w);
    }
    out
}

/// A registered runtime, as [`Deployment::runtimes`] lists it. Displays
/// as one line: its host, its pid, what started it, then its nodes
/// (`node-3 pid 4242 (runtime `jvm` of `workers` on node-3):
/// actogrid://10.0.0.3:7000/w-0, actogrid://10.0.0.3:7000/w-1`).
#[derive(Debug, Clone)]
pub struct RuntimeSummary {
    /// Its number in the deployment (what [`Deployment::runtime_logs`]
    /// and [`OutputLine::runtime`] name it by).
    pub id: u64,
    /// The host name it reported.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// Its nodes.
    pub nodes: Vec<NodeUrl>,
    /// What started it.
    pub launch: String,
}

impl std::fmt::Display for RuntimeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} pid {} ({}):", self.host, self.pid, self.launch)?;
        if self.nodes.is_empty() {
            return f.write_str(" no node");
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let separator = if i == 0 { " " } else { ", " };
            write!(f, "{separator}{node}")?;
        }
        Ok(())
    }
}

/// How a deployment behaves.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Runtimes exit when no lease renewal succeeded for this long.
    pub lease: Duration,
    /// The binary started as runtime (default: this process's own). When
    /// it is another binary (what `actogrid deploy --program ./my-app`
    /// does), that program is asked, when the deployment loads, which
    /// technical services it has and what its runtime settings are: it is
    /// started with `ACTOGRID_DESCRIBE_SERVICES` set, answers and exits
    /// before its `main` (an application made with `#[actogrid::main]`, or
    /// calling [`serve_if_deployed`](crate::serve_if_deployed) first, does).
    pub program: Option<PathBuf>,
    /// How many starts (connections, spawns, submissions) run at once.
    pub parallelism: usize,
    /// ssh client configuration (`ssh -F`); default `ACTOGRID_SSH_CONFIG`,
    /// else the user's own.
    pub ssh_config: Option<PathBuf>,
    /// How long an ssh connection may take.
    pub connect_timeout: Duration,
    /// The address remote runtimes reach this process at (default: found
    /// from the route to the first remote host).
    pub advertise: Option<String>,
    /// The runtime to deploy from (default: the process's, see
    /// [`crate::current`]).
    pub runtime: Option<Runtime>,
    /// Show progress bars on a terminal (default: when stderr is one).
    pub progress: bool,
    /// Where batch job scripts and job output go on the submitting host
    /// (`~/` is that host's home; default `~/.cache/actogrid/jobs`). Each
    /// job's files are removed when the deployment ends.
    pub work_dir: String,
    /// The pool of the peer-to-peer overlay nodes are acquired from
    /// (`P2PService`); default: from the environment (the passphrase in
    /// `ACTOGRID_OVERLAY_PASSPHRASE`, or a file named by
    /// `ACTOGRID_OVERLAY_PASSPHRASE_FILE`).
    pub pool: Option<crate::peer::Pool>,
    /// Runtime settings given by the code (`("heartbeat_timeout", "30s")`),
    /// applied last: over the program's settings (`#[actogrid::main(...)]`,
    /// then the environment) and the descriptor's `<runtimeSettings>`.
    /// Every runtime the deployment starts, created or acquired, gets the
    /// result; see [`Deployment::settings`].
    pub settings: Vec<(String, String)>,
    /// What to do with what the runtimes print (default: print it here,
    /// prefixed with the runtime's virtual node, host and pid, and keep
    /// the latest lines of each runtime for [`Deployment::logs`]).
    pub output: OutputOptions,
    /// Where the deployment serves its state, its runtimes' output and its
    /// metrics over HTTP (`actogrid status`, `actogrid logs`, `/metrics`);
    /// `None`: nowhere. Default: a port of loopback, or
    /// `ACTOGRID_DASHBOARD` (an address, or `off`). The URL, with the
    /// token every request needs, is [`Deployment::dashboard_url`].
    pub dashboard: Option<std::net::SocketAddr>,
}

/// The dashboard address `ACTOGRID_DASHBOARD` asks for: `off` (or `none`)
/// for none; unset or unreadable: a port of loopback (a warning says so
/// when unreadable).
fn dashboard_from_env() -> Option<std::net::SocketAddr> {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    match std::env::var(dashboard::DASHBOARD_ENV) {
        Err(_) => Some(loopback),
        Ok(v) if matches!(v.trim(), "off" | "none" | "") => None,
        Ok(v) => match v.trim().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                tracing::warn!(
                    "{}=`{v}` is not an address (host:port) nor `off`: the dashboard listens on loopback",
                    dashboard::DASHBOARD_ENV
                );
                Some(loopback)
            }
        },
    }
}

impl Default for DeployOptions {
    fn default() -> Self {
        let lease = std::env::var(LEASE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_LEASE, Duration::from_millis);
        DeployOptions {
            lease,
            program: None,
            parallelism: 32,
            ssh_config: std::env::var_os("ACTOGRID_SSH_CONFIG").map(PathBuf::from),
            connect_timeout: Duration::from_secs(10),
            advertise: std::env::var("ACTOGRID_DEPLOYER_ADVERTISE").ok(),
            runtime: None,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            work_dir: "~/.cache/actogrid/jobs".to_owned(),
            pool: crate::peer::Pool::from_env().ok().flatten(),
            settings: Vec::new(),
            output: OutputOptions::default(),
            dashboard: dashboard_from_env(),
        }
    }
}

static NEXT_DEPLOYMENT: AtomicU64 = AtomicU64::new(1);

/// A loaded descriptor and everything it started. Dropping it tears down
/// what it started (like [`Deployment::kill`]).
pub struct Deployment {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("path", &self.inner.path)
            .field("id", &self.inner.shared.id)
            .finish()
    }
}

pub(crate) struct Inner {
    path: PathBuf,
    descriptor: Arc<Descriptor>,
    shared: Arc<Shared>,
    options: DeployOptions,
    program: PathBuf,
    registrar_name: String,
    registrar_urls: Mutex<Vec<String>>,
    shells: Mutex<Vec<Arc<dyn actogrid_acquisition::exec::Shell>>>,
    /// Relays started on front-ends, stopped at the end.
    relays: Mutex<Vec<Box<dyn actogrid_acquisition::exec::Running>>>,
    retrievals: Mutex<Vec<launch::Retrieval>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Process chains being walked (see [`Deployment::wait_mpi_runs`]).
    walks: tokio::sync::watch::Sender<u64>,
    /// Requests to the peer-to-peer overlay, one per virtual node and
    /// `P2PService`.
    overlays: Mutex<Vec<p2p::Acquisition>>,
    watchers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    killed: AtomicBool,
    /// Set once the teardown is complete.
    torn_down: tokio::sync::watch::Sender<bool>,
    progress: progress::Progress,
    /// The runtime was started for this deployment (remote hosts).
    own_runtime: bool,
    /// The descriptor's `<runtimeSettings>`, checked (see
    /// [`Deployment::runtime_settings`]).
    runtime_settings: Vec<(String, String)>,
    /// The settings of the runtimes it starts (see [`Deployment::settings`]).
    pub(crate) settings: actogrid_runtime::Config,
    /// Cleans up what the deployment made elsewhere if this process dies.
    reaper: reaper::Reaper,
    /// When it was loaded.
    loaded: std::time::Instant,
    /// Its dashboard, while it runs.
    dashboard: Mutex<Option<crate::web::Dashboard>>,
    /// What happened to its virtual nodes, latest events.
    timeline: Arc<dashboard::Timeline>,
    /// The samples behind the rates its dashboard shows.
    rates: dashboard::Rates,
}

impl Deployment {
    /// Reads and validates the descriptor at `path` (nothing starts on an
    /// invalid file), with default options.
    pub async fn load(path: impl AsRef<Path>) -> Result<Deployment, DeployError> {
        Deployment::load_with(path, LoadOptions::default(), DeployOptions::default()).await
    }

    /// Reads the descriptor with program variables and options.
    pub async fn load_with(
        path: impl AsRef<Path>,
        load: LoadOptions,
        options: DeployOptions,
    ) -> Result<Deployment, DeployError> {
        let path = path.as_ref().to_path_buf();
        let (loaded, checked, program_settings) = {
            let (path, program) = (path.clone(), options.program.clone());
            tokio::task::spawn_blocking(move || load_checked(&path, load, program.as_deref()))
                .await
                .map_err(|e| DeployError::Setup(format!("cannot read the descriptor: {e}")))??
        };
        let mut services = checked.vns;
        let descriptor = loaded.into_valid()?;
        let mut settings = deployment_settings(
            program_settings,
            &checked.runtime_settings,
            &options.settings,
        )?;
        // A dashboard shows what each object serves, and for whom.
        if options.dashboard.is_some() {
            settings.object_stats = true;
        }
        let base = match &options.runtime {
            Some(rt) => rt.clone(),
            None => crate::current().ok_or(DeployError::NoRuntime)?,
        };
        let own_runtime = !reach::remote_hosts(&descriptor).is_empty()
            && (reach::is_loopback(&base) || options.advertise.is_some());
        if settings.object_stats {
            base.set_object_stats(true);
        }
        let runtime = if own_runtime {
            reach::remote_reachable_runtime(&descriptor, &options).await?
        } else {
            base
        };
        if settings.object_stats {
            runtime.set_object_stats(true);
        }
        let program = match &options.program {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| {
                DeployError::Setup(format!("cannot find this program's own binary: {e}"))
            })?,
        };
        let id = NEXT_DEPLOYMENT.fetch_add(1, Ordering::Relaxed);
        let ft = ft::prepare(&mut services, &descriptor, runtime.address(), id)?.map(Arc::new);
        let mut vns = HashMap::new();
        for vn in &descriptor.virtual_nodes {
            let expected = descriptor
                .mapping(&vn.name.value)
                .and_then(|m| actogrid_descriptor::plan::mapping_node_count(&descriptor, m));
            let s = services.remove(&vn.name.value).unwrap_or_default();
            vns.insert(
                vn.name.value.clone(),
                Arc::new(VnState::new(vn, expected, s.specs, s.launch_env)),
            );
        }
        for vn in &descriptor.acquired_virtual_nodes {
            let model = actogrid_descriptor::model::VirtualNode {
                name: vn.name.clone(),
                property: actogrid_descriptor::model::VnProperty::Multiple,
                timeout: vn.timeout,
                wait_for_timeout: false,
                min_node_number: vn.min_node_number,
                technical_services: Vec::new(),
                ft_service: None,
                file_transfer_deploy: None,
                file_transfer_retrieve: None,
                information: vn.information.clone(),
            };
            vns.entry(vn.name.value.clone())
                .or_insert_with(|| Arc::new(VnState::new(&model, None, Vec::new(), Vec::new())));
        }
        let shared = Arc::new(Shared {
            id,
            lease: options.lease,
            runtime: runtime.clone(),
            ended: AtomicBool::new(false),
            state: Mutex::new(state::State::default()),
            vns,
            outputs: output::Outputs::new(options.output.clone()),
            log_sink: std::sync::OnceLock::new(),
            ft,
        });
        registrar::publish(&shared);
        runtime.set_enroller(Arc::new(registrar::Enrollments));
        let registrar_name = format!("actogrid-deployment-{}-{id}", std::process::id());
        let node = runtime.local_node("deployer");
        let registrar = RegistrarProxy::new(&node, id)
            .await
            .map_err(|e| DeployError::Setup(format!("cannot start the registrar: {e}")))?;
        node.register(&registrar_name, &registrar)
            .await
            .map_err(|e| DeployError::Setup(format!("cannot register the registrar: {e}")))?;
        let sink = LogSinkProxy::new(&node, id).await.map_err(|e| {
            DeployError::Setup(format!(
                "cannot start the sink of the runtimes' output: {e}"
            ))
        })?;
        let _ = shared.log_sink.set(sink);
        if let Some(ft) = &shared.ft {
            ft.start(&node, &runtime, &shared.vns).await?;
        }
        let address = runtime
            .address()
            .ok_or_else(|| DeployError::Setup("the runtime has no address".into()))?
            .to_owned();
        let registrar_urls = vec![format!("actogrid://{address}/{registrar_name}")];
        let progress = progress::Progress::new(options.progress);
        shared.outputs.show_around(progress.bars());
        let lease = options.lease;
        let inner = Arc::new(Inner {
            path,
            descriptor: Arc::new(descriptor),
            shared,
            options,
            program,
            registrar_name,
            registrar_urls: Mutex::new(registrar_urls),
            shells: Mutex::new(Vec::new()),
            relays: Mutex::new(Vec::new()),
            retrievals: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            walks: tokio::sync::watch::channel(0).0,
            overlays: Mutex::new(Vec::new()),
            watchers: Mutex::new(Vec::new()),
            killed: AtomicBool::new(false),
            torn_down: tokio::sync::watch::channel(false).0,
            progress,
            own_runtime,
            runtime_settings: checked.runtime_settings,
            settings,
            reaper: reaper::Reaper::new(id, lease),
            loaded: std::time::Instant::now(),
            dashboard: Mutex::new(None),
            timeline: Arc::new(dashboard::Timeline::default()),
            rates: dashboard::Rates::default(),
        });
        live::add(&inner);
        for vn in inner.shared.vns.values() {
            let follower = inner.timeline.follow(vn);
            lock(&inner.tasks).push(follower);
        }
        // Objects moving from the nodes this process hosts.
        let mut moves = inner.shared.runtime.moves();
        let shared = Arc::downgrade(&inner.shared);
        lock(&inner.tasks).push(tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match moves.recv().await {
                    Ok(m) => match shared.upgrade() {
                        Some(s) => s.moved_here(m.into()),
                        None => return,
                    },
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
        }));
        if let Some(addr) = inner.options.dashboard {
            match dashboard::start(addr, &inner).await {
                Ok(d) => {
                    tracing::info!("dashboard: {}", d.url());
                    *lock(&inner.dashboard) = Some(d.record("deployment"));
                }
                Err(e) => tracing::warn!("no dashboard: cannot listen on {addr}: {e}"),
            }
        }
        let sweeper = Arc::downgrade(&inner.shared);
        // With fault tolerance, often enough to see missed heartbeats.
        let every = if inner.shared.ft.is_some() {
            ft::heartbeat_period(inner.options.lease) / 8
        } else {
            (inner.options.lease / 2).max(Duration::from_millis(100))
        };
        lock(&inner.tasks).push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(shared) = sweeper.upgrade() else {
                    return;
                };
                if shared.ended.load(Ordering::Acquire) {
                    return;
                }
                shared.sweep_leases();
            }
        }));
        Ok(Deployment { inner })
    }

    /// The descriptor, as read.
    pub fn descriptor(&self) -> &Descriptor {
        &self.inner.descriptor
    }

    /// The runtime settings of the descriptor's `<runtimeSettings>`,
    /// checked when it loaded: `(name, value)` pairs with the settings'
    /// own names (`heartbeat_timeout`, `30s`), in an order in which
    /// [`Config::set`](actogrid_runtime::Config::set) takes them one after
    /// the other from the defaults. Every runtime the deployment starts is
    /// given them.
    pub fn runtime_settings(&self) -> &[(String, String)] {
        &self.inner.runtime_settings
    }

    /// The settings of every runtime this deployment starts, created or
    /// acquired: the defaults, then the program's `#[actogrid::main(...)]`,
    /// then the descriptor's `<runtimeSettings>`, then the `ACTOGRID_*`
    /// environment of this process, then [`DeployOptions::settings`]. They
    /// reach the runtimes through their environment.
    pub fn settings(&self) -> &actogrid_runtime::Config {
        &self.inner.settings
    }

    /// The descriptor's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The runtime this deployment deploys from.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.shared.runtime
    }

    /// The URLs started runtimes register at.
    pub fn registrar_urls(&self) -> Vec<String> {
        lock(&self.inner.registrar_urls).clone()
    }

    /// The virtual node `name`.
    pub fn virtual_node(&self, name: &str) -> Result<VirtualNode, DeployError> {
        match self.inner.shared.vns.get(name) {
            Some(state) => Ok(VirtualNode {
                state: state.clone(),
            }),
            None => {
                let mut known: Vec<&str> =
                    self.inner.shared.vns.keys().map(String::as_str).collect();
                known.sort_unstable();
                Err(DeployError::NoSuchVirtualNode {
                    name: name.to_owned(),
                    known: known.join(", "),
                })
            }
        }
    }

    /// Every virtual node, by name.
    pub fn virtual_nodes(&self) -> BTreeMap<String, VirtualNode> {
        self.inner
            .shared
            .vns
            .iter()
            .map(|(k, v)| (k.clone(), VirtualNode { state: v.clone() }))
            .collect()
    }

    /// Activates every virtual node that has a mapping or a lookup.
    /// Returns once every start is under way; nodes arrive afterwards
    /// ([`VirtualNode::nodes`] waits for them).
    pub async fn activate(&self) -> Result<(), DeployError> {
        let d = &self.inner.descriptor;
        let mut names: Vec<String> = d
            .mappings
            .iter()
            .map(|m| m.virtual_node.value.clone())
            .chain(d.lookups.iter().map(|l| l.virtual_node.value.clone()))
            .collect();
        names.dedup();
        for name in names {
            self.activate_vn(&name).await?;
        }
        Ok(())
    }

    /// Activates one virtual node (again: does nothing).
    pub async fn activate_vn(&self, name: &str) -> Result<VirtualNode, DeployError> {
        let vn = self.virtual_node(name)?;
        if self.inner.killed.load(Ordering::Acquire) {
            return Err(DeployError::Ended);
        }
        let first = {
            let mut activated = lock(&vn.state.activated);
            let first = activated.is_none();
            activated.get_or_insert_with(std::time::Instant::now);
            first
        };
        if !first {
            return Ok(vn);
        }
        self.open_directory(&vn.state).await?;
        self.inner.progress.add(&vn.state);
        launch::activate(&self.inner, &vn.state).await?;
        if self
            .inner
            .descriptor
            .registers
            .iter()
            .any(|r| r.virtual_node.value == name)
        {
            self.register_vn(name).await?;
        }
        Ok(vn)
    }

    /// The directory of a virtual node's nodes, on the deploying runtime,
    /// that services and other programs read.
    async fn open_directory(&self, vn: &Arc<VnState>) -> Result<(), DeployError> {
        let node = self.inner.shared.runtime.local_node("deployer");
        let name = &vn.name;
        let dir = VnDirectoryProxy::new(&node, name.clone())
            .await
            .map_err(|e| {
                DeployError::Setup(format!("cannot open the directory of `{name}`: {e}"))
            })?;
        let registered = format!("vn-{}-{}-{name}", std::process::id(), self.inner.shared.id);
        node.register(&registered, &dir).await.map_err(|e| {
            DeployError::Setup(format!("cannot register the directory of `{name}`: {e}"))
        })?;
        let url = node.url_of(&registered);
        // Nodes already there (currentJVM) are listed too.
        for n in lock(&vn.nodes).iter() {
            drop(dir.add(n.url().to_string()));
        }
        *lock(&vn.directory) = Some((dir, url.to_string()));
        Ok(())
    }

    /// Registers virtual node `name` on this process's runtime, so that
    /// other programs find its nodes at `actogrid://host:port/name`
    /// (with [`lookup_vn`]).
    pub async fn register_vn(&self, name: &str) -> Result<NodeUrl, DeployError> {
        let vn = self.virtual_node(name)?;
        if lock(&vn.state.directory).is_none() {
            self.open_directory(&vn.state).await?;
        }
        let dir = lock(&vn.state.directory)
            .as_ref()
            .map(|(d, _)| d.clone())
            .ok_or_else(|| DeployError::Setup(format!("`{name}` has no directory")))?;
        let node = self.inner.shared.runtime.local_node("deployer");
        node.register(name, &dir)
            .await
            .map_err(|e| DeployError::Setup(format!("cannot register `{name}`: {e}")))?;
        let url = node.url_of(name);
        tracing::info!("virtual node `{name}` registered at {url}");
        Ok(url)
    }

    /// Where the deployment's dashboard is (`http://host:port/?token=…`:
    /// `actogrid status URL`, `actogrid logs URL`, `/metrics`), while it
    /// runs; `None` when [`DeployOptions::dashboard`] asked for none or it
    /// could not listen.
    pub fn dashboard_url(&self) -> Option<String> {
        lock(&self.inner.dashboard)
            .as_ref()
            .map(|d| d.url().to_owned())
    }

    /// Completes once the deployment has been torn down (by
    /// [`Deployment::kill`], a signal, or `POST /api/end` on its
    /// dashboard).
    pub async fn ended(&self) {
        let mut done = self.inner.torn_down.subscribe();
        let _ = done.wait_for(|down| *down).await;
    }

    /// The deployment's state, as its dashboard gives it (each runtime is
    /// asked which objects it hosts, for a second at most).
    pub async fn status(&self) -> dashboard::DeploymentStatus {
        dashboard::status(&self.inner).await
    }

    /// Every runtime registered so far and still there.
    pub fn runtimes(&self) -> Vec<RuntimeSummary> {
        let st = lock(&self.inner.shared.state);
        let mut list: Vec<RuntimeSummary> = st
            .runtimes
            .iter()
            .filter(|(_, r)| !r.gone)
            .map(|(id, r)| RuntimeSummary {
                id: *id,
                host: r.host.clone(),
                pid: r.pid,
                nodes: r.nodes.iter().map(|n| n.url().clone()).collect(),
                launch: st.launches[r.launch as usize].label.clone(),
            })
            .collect();
        list.sort_by(|a, b| (&a.host, a.pid).cmp(&(&b.host, b.pid)));
        list
    }

    /// What the runtimes printed (the latest lines each runtime keeps,
    /// [`OutputOptions`]), oldest first: stdout and stderr, their log lines
    /// and panics, each with the runtime it came from.
    pub fn logs(&self) -> Vec<OutputLine> {
        self.inner.shared.outputs.all()
    }

    /// What runtime `runtime` ([`RuntimeSummary::id`]) printed, oldest
    /// first; kept after it is gone (for the latest 256 gone runtimes).
    pub fn runtime_logs(&self, runtime: u64) -> Vec<OutputLine> {
        self.inner.shared.outputs.of(runtime)
    }

    /// Every line the runtimes print from now on, as it arrives (a slow
    /// reader misses lines: [`tokio::sync::broadcast`] semantics).
    pub fn follow_logs(&self) -> tokio::sync::broadcast::Receiver<OutputLine> {
        self.inner.shared.outputs.follow()
    }

    /// The batch jobs submitted so far and not yet cancelled: `(what
    /// submitted it, job id)`.
    pub fn jobs(&self) -> Vec<(String, String)> {
        lock(&self.inner.shared.state)
            .launches
            .iter()
            .filter_map(|l| l.job.as_ref().map(|j| (l.label.clone(), j.job.id.clone())))
            .collect()
    }

    /// The MPI runs (`dependentProcessSequence` + `mpiProcess`) that ended
    /// so far, in the order they ended: exit status and output of each
    /// `mpirun`.
    pub fn mpi_runs(&self) -> Vec<MpiOutcome> {
        lock(&self.inner.shared.state).mpi.clone()
    }

    /// Waits until every process chain started so far has done its work
    /// (runtimes started, jobs submitted, and MPI runs ended: each is
    /// bounded by its virtual node's timeout), then returns
    /// [`Deployment::mpi_runs`].
    pub async fn wait_mpi_runs(&self) -> Vec<MpiOutcome> {
        let mut walks = self.inner.walks.subscribe();
        let _ = walks.wait_for(|n| *n == 0).await;
        self.mpi_runs()
    }

    /// Stops every runtime this deployment started (asking them first,
    /// then killing what is left), cancels its batch jobs and closes its
    /// connections. Nodes acquired from elsewhere are let go.
    pub async fn kill(&self) {
        kill(&self.inner).await;
    }
}

/// Reads and validates the descriptor at `path`, then checks what it asks
/// of this program: each technical service's class, its arguments (an
/// unknown `<arg>` is a warning, a refused one an error at that `<arg>`),
/// requirements and conflicts, and each `<runtimeSettings>` entry against
/// the runtime's settings. [`Deployment::load`] runs the same checks (and
/// nothing starts on an error); `actogrid validate` uses this to check a
/// descriptor without deploying it. Classes this program lacks are notes
/// unless `options.validate.known_service_classes` lists what it has.
pub fn check_descriptor(
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> actogrid_descriptor::Loaded {
    let mut loaded = actogrid_descriptor::load(path, options);
    services::check(&mut loaded);
    loaded
}

/// Like [`check_descriptor`], for the application `program` (its binary):
/// the technical services are the ones it has, described by the program
/// itself, which is started for that and exits before its `main` (see
/// [`DeployOptions::program`]). Fails when the program does not answer.
pub fn check_descriptor_for(
    path: impl AsRef<Path>,
    options: &LoadOptions,
    program: &Path,
) -> Result<actogrid_descriptor::Loaded, DeployError> {
    load_checked(path.as_ref(), options.clone(), Some(program)).map(|(loaded, _, _)| loaded)
}

/// Reads and checks the descriptor for the program whose binary the
/// runtimes will run: this one (its own services), or `program` when it
/// is another binary (asked about its services and settings, returned
/// as the base of the deployment's settings).
fn load_checked(
    path: &Path,
    mut load: LoadOptions,
    program: Option<&Path>,
) -> Result<
    (
        actogrid_descriptor::Loaded,
        services::Checked,
        Option<actogrid_runtime::Config>,
    ),
    DeployError,
> {
    let other = program.filter(|p| !is_this_program(p));
    let Some(program) = other else {
        // This program is the application: it knows every class it has,
        // so a class it lacks is an error, not a note.
        if load.validate.known_service_classes.is_none() {
            load.validate.known_service_classes = Some(
                actogrid_technical_services::classes()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            );
        }
        let mut loaded = actogrid_descriptor::load(path, &load);
        let checked = services::check(&mut loaded);
        return Ok((loaded, checked, None));
    };
    // The definitions first (read without judging their classes), then
    // the program's answer about them, then the checks with it.
    let definitions: Vec<program::Definition> = {
        let mut first = load.clone();
        first.validate.known_service_classes = None;
        actogrid_descriptor::load(path, &first)
            .descriptor
            .technical_services
            .iter()
            .map(|def| program::Definition {
                id: def.id.value.clone(),
                class: def.class.value.clone(),
                args: def
                    .args
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
            })
            .collect()
    };
    let answer = program::ask(program, definitions.clone()).map_err(DeployError::Setup)?;
    let mut described: HashMap<(String, String), services::Described> = HashMap::new();
    for (def, about) in definitions.into_iter().zip(answer.described) {
        if let Some(about) = about {
            described.insert((def.id, def.class), about);
        }
    }
    if load.validate.known_service_classes.is_none() {
        load.validate.known_service_classes = Some(answer.classes);
    }
    let mut loaded = actogrid_descriptor::load(path, &load);
    let checked = services::check_with(&mut loaded, |def| {
        described
            .get(&(def.id.value.clone(), def.class.value.clone()))
            .cloned()
    });
    let mut settings = actogrid_runtime::Config::default();
    settings.apply_vars(answer.settings).map_err(|e| {
        DeployError::Setup(format!(
            "{} reports a runtime setting this one does not take: {e}",
            program.display()
        ))
    })?;
    Ok((loaded, checked, Some(settings)))
}

/// Whether `program` is this process's own binary.
fn is_this_program(program: &Path) -> bool {
    match (std::env::current_exe(), std::fs::canonicalize(program)) {
        (Ok(this), Ok(that)) => std::fs::canonicalize(this).is_ok_and(|this| this == that),
        _ => false,
    }
}

/// The settings of a deployment's runtimes: the program's (defaults, its
/// `#[actogrid::main(...)]`, the environment; as the deployed binary
/// reported them when it is not this one), the descriptor's over them,
/// the environment again over the descriptor, and the code's last.
fn deployment_settings(
    program: Option<actogrid_runtime::Config>,
    descriptor: &[(String, String)],
    code: &[(String, String)],
) -> Result<actogrid_runtime::Config, DeployError> {
    let bad = |e: actogrid_runtime::ConfigError| DeployError::Setup(e.to_string());
    let mut settings = match program {
        Some(settings) => settings,
        None => crate::settings().map_err(bad)?,
    };
    for (name, value) in descriptor {
        settings.set_value(name, value).map_err(bad)?;
    }
    settings.apply_env().map_err(bad)?;
    for (name, value) in code {
        settings
            .set_value(name, value)
            .map_err(|e| DeployError::Setup(format!("DeployOptions::settings: {e}")))?;
    }
    settings.validate().map_err(bad)?;
    Ok(settings)
}

/// Looks up the nodes of a virtual node registered by another program at
/// `url` (`actogrid://host:port/name`).
pub async fn lookup_vn(runtime: &Runtime, url: &NodeUrl) -> Result<Vec<Node>, DeployError> {
    let dir: VnDirectoryProxy = runtime
        .lookup(url)
        .await
        .map_err(|e| DeployError::Setup(format!("cannot look up {url}: {e}")))?;
    let urls = dir
        .nodes()
        .await
        .map_err(|e| DeployError::Setup(format!("cannot list the nodes of {url}: {e}")))?;
    urls.iter()
        .map(|u| {
            u.parse::<NodeUrl>()
                .map(|u| runtime.node(&u))
                .map_err(|e| DeployError::Setup(format!("{url} lists a bad node URL `{u}`: {e}")))
        })
        .collect()
}

async fn kill(inner: &Arc<Inner>) {
    if inner.killed.swap(true, Ordering::AcqRel) {
        // Torn down by another caller (a drop, a signal): wait for it.
        let mut done = inner.torn_down.subscribe();
        let _ = done.wait_for(|down| *down).await;
        return;
    }
    tear_down(inner).await;
    inner.torn_down.send_replace(true);
}

async fn tear_down(inner: &Arc<Inner>) {
    let shared = &inner.shared;
    shared.ended.store(true, Ordering::Release);
    // The objects created on this process's own nodes (`currentJVM`) end
    // with the deployment, like those of the runtimes it started.
    for mapping in inner
        .descriptor
        .mappings
        .iter()
        .filter(|m| m.current_jvm.is_some())
    {
        let ended = shared.runtime.terminate_node(&mapping.virtual_node.value);
        if ended > 0 {
            tracing::debug!(
                "terminated {ended} object(s) of node `{}` of this process",
                mapping.virtual_node.value
            );
        }
    }
    // Ask every live runtime to stop.
    let agents: Vec<RuntimeAgentProxy> = lock(&shared.state)
        .runtimes
        .values()
        .filter(|r| !r.gone)
        .map(|r| r.agent.clone())
        .collect();
    let asks = agents.iter().map(|a| {
        let a = a.clone();
        async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), a.shutdown()).await;
        }
    });
    futures::future::join_all(asks).await;
    // Give acquired nodes back: their peers stop what still runs.
    let overlays: Vec<p2p::Acquisition> = std::mem::take(&mut *lock(&inner.overlays));
    futures::future::join_all(overlays.iter().map(p2p::Acquisition::end)).await;
    // Bring files back (fileTransferRetrieve) once the runtimes stopped.
    let retrievals: Vec<_> = std::mem::take(&mut *lock(&inner.retrievals));
    let pulls = retrievals.iter().map(launch::Retrieval::run);
    futures::future::join_all(pulls).await;
    // Cancel batch jobs.
    let jobs: Vec<state::Job> = lock(&shared.state)
        .launches
        .iter_mut()
        .filter_map(|l| l.job.take())
        .collect();
    let cancels = jobs.iter().map(|j| async move {
        if let Err(e) = j.job.cancel(j.shell.as_ref()).await {
            tracing::warn!("{e}");
        }
        let _ = j.shell.run(&j.job.files.removal_script(), None).await;
    });
    futures::future::join_all(cancels).await;
    // Give processes a moment to exit on their own, then kill the rest.
    let watchers: Vec<_> = std::mem::take(&mut *lock(&inner.watchers));
    let all_done = futures::future::join_all(watchers);
    tokio::pin!(all_done);
    if tokio::time::timeout(Duration::from_secs(3), &mut all_done)
        .await
        .is_err()
    {
        for l in lock(&shared.state).launches.iter_mut() {
            if let Some(k) = l.kill.take() {
                let _ = k.send(());
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), all_done).await;
    }
    for task in lock(&inner.tasks).drain(..) {
        task.abort();
    }
    for mut relay in std::mem::take(&mut *lock(&inner.relays)) {
        relay.kill();
    }
    let shells: Vec<_> = std::mem::take(&mut *lock(&inner.shells));
    drop(shells);
    let node = shared.runtime.local_node("deployer");
    if let Some(ft) = &shared.ft {
        ft.stop(&node).await;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        node.unregister(&inner.registrar_name),
    )
    .await;
    registrar::withdraw(shared.id);
    // Everything is cleaned up: the reaper has nothing left to do.
    inner.reaper.dismiss().await;
    lock(&inner.dashboard).take();
    live::remove(inner);
    inner.progress.finish();
    if inner.own_runtime {
        shared.runtime.shutdown();
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if self.inner.killed.load(Ordering::Acquire) {
            return;
        }
        let inner = self.inner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(kill(&inner)));
            }
            Ok(h) => {
                // Runtimes see the deployment end at their next renewal;
                // local processes are killed now.
                inner.shared.ended.store(true, Ordering::Release);
                for l in lock(&inner.shared.state).launches.iter_mut() {
                    if let Some(k) = l.kill.take() {
                        let _ = k.send(());
                    }
                }
                h.spawn(async move { kill(&inner).await });
            }
            Err(_) => {
                inner.shared.ended.store(true, Ordering::Release);
                for l in lock(&inner.shared.state).launches.iter_mut() {
                    if let Some(k) = l.kill.take() {
                        let _ = k.send(());
                    }
                }
            }
        }
    }
}
