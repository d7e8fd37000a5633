//! What a deployment knows while it runs: its launches (one per process
//! started or job submitted), the tickets they were given, the runtimes
//! that registered, and for each virtual node its nodes and counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actogrid_runtime::{CallError, Node, NodeUrl, Runtime};
use actogrid_technical_services::{
    ApplyFailure, Origin, ServiceHostProxy, ServiceSpec, VnDirectoryProxy, apply_all,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot, watch};

use actogrid_acquisition::mpi::MpiOutcome;

use super::agent::RuntimeAgentProxy;
use super::registrar::{Admission, Refusal, Registration};

/// Something that happened to a virtual node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum VnEvent {
    /// A node registered and is usable.
    Joined(Node),
    /// A node went away (its runtime exited, was killed, or stopped
    /// renewing its lease).
    Left {
        /// The node.
        node: Node,
        /// Why.
        reason: String,
    },
    /// A runtime (or a whole host, or a job) could not be started.
    Failed {
        /// Host the failure is about.
        host: String,
        /// What failed, in words.
        error: String,
    },
    /// A protected active object whose runtime died serves again on
    /// another node (fault tolerance).
    Recovered {
        /// The object's id.
        object: u64,
        /// The node it lives on now.
        node: Node,
        /// Why its runtime was counted dead.
        cause: String,
        /// Requests it served again from its log.
        replayed: usize,
        /// From the failure's detection to the object serving again.
        took: Duration,
    },
    /// A protected active object could not be recovered: its callers get
    /// `NodeDied`.
    RecoveryFailed {
        /// The object's id (0 when no object could be recovered at all,
        /// for want of a node to recover them on).
        object: u64,
        /// Why, in words.
        error: String,
    },
    /// An active object moved from a node of the virtual node (a
    /// migration the program asked for, a load-balancing service's move,
    /// or one asked from the dashboard).
    Migrated {
        /// The object's id.
        object: u64,
        /// Its type.
        type_name: String,
        /// The node it left.
        from: String,
        /// The node it lives on now.
        to: String,
        /// Bytes of its state as it travelled.
        state_bytes: u64,
    },
    /// Checkpoints of protected objects were stored (fault tolerance): a
    /// summary of the last few seconds.
    Checkpointed {
        /// Checkpoints stored.
        checkpoints: u64,
        /// Of how many objects.
        objects: u64,
        /// Their bytes.
        bytes: u64,
        /// Over how long.
        over: Duration,
    },
    /// An MPI run of the virtual node (a `dependentProcessSequence` ending
    /// in an `mpiProcess`) ended, successfully or not. A failed one is
    /// also a [`VnEvent::Failed`].
    MpiEnded(Box<MpiOutcome>),
}

/// Moves one runtime reports at once, at most.
pub(crate) const MAX_MOVES: usize = 256;

/// An object that moved, as a runtime reports it to its deployer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Moved {
    /// The object's id.
    pub object: u64,
    /// Its type.
    pub type_name: String,
    /// The node it left.
    pub from: String,
    /// The node it lives on now.
    pub to: String,
    /// Bytes of its state as it travelled.
    pub state_bytes: u64,
}

impl From<actogrid_runtime::ObjectMoved> for Moved {
    fn from(m: actogrid_runtime::ObjectMoved) -> Moved {
        Moved {
            object: m.object,
            type_name: m.type_name.to_owned(),
            from: m.from,
            to: m.to,
            state_bytes: m.state_bytes as u64,
        }
    }
}

impl Moved {
    fn into_event(self) -> VnEvent {
        VnEvent::Migrated {
            object: self.object,
            type_name: self.type_name,
            from: self.from,
            to: self.to,
            state_bytes: self.state_bytes,
        }
    }
}

/// Counters of one virtual node, for progress display.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) asked: AtomicU64,
    pub(crate) started: AtomicU64,
    /// Runtimes of batch jobs still waiting in their queue.
    pub(crate) pending: AtomicU64,
    pub(crate) registered: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// One virtual node's live state.
pub(crate) struct VnState {
    pub(crate) name: String,
    pub(crate) timeout: Duration,
    pub(crate) wait_for_timeout: bool,
    pub(crate) min_nodes: Option<u64>,
    /// Nodes the descriptor promises, when it says exactly.
    pub(crate) expected: Option<u64>,
    /// Lookups of this virtual node, and how many have not yet read the
    /// directory they look up.
    pub(crate) lookups: AtomicU64,
    pub(crate) lookups_pending: AtomicU64,
    /// Nodes the looked-up directories listed.
    pub(crate) looked_up: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) activated: Mutex<Option<Instant>>,
    pub(crate) nodes: Mutex<Vec<Node>>,
    /// Nodes that can no longer come (failed launches, departures).
    pub(crate) lost: AtomicU64,
    /// Some launch failed in a way whose node count is unknown.
    pub(crate) lost_unknown: AtomicBool,
    pub(crate) failures: Mutex<Vec<String>>,
    /// What pending launches are waiting for (job states).
    pub(crate) waiting_on: Mutex<HashMap<u64, String>>,
    /// Why each pending job waits, by launch, as its scheduler says.
    pub(crate) pending_reasons: Mutex<HashMap<u64, String>>,
    pub(crate) cursor: AtomicU64,
    /// The technical services applied to each node, in order.
    pub(crate) services: Vec<ServiceSpec>,
    /// Environment the services ask created runtimes to start with.
    pub(crate) launch_env: Vec<(String, String)>,
    /// Node properties the services set, by node URL.
    pub(crate) properties: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// A service failed in a way that fails the whole virtual node.
    pub(crate) fatal: Mutex<Option<String>>,
    /// The directory of its nodes, once activated.
    pub(crate) directory: Mutex<Option<(VnDirectoryProxy, String)>>,
    /// Bumped on every change, so waiters re-check.
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) events: broadcast::Sender<VnEvent>,
}

impl VnState {
    pub(crate) fn new(
        vn: &actogrid_descriptor::model::VirtualNode,
        expected: Option<u64>,
        services: Vec<ServiceSpec>,
        launch_env: Vec<(String, String)>,
    ) -> VnState {
        VnState {
            name: vn.name.value.clone(),
            timeout: vn.timeout,
            wait_for_timeout: vn.wait_for_timeout,
            min_nodes: vn.min_node_number.map(u64::from),
            expected,
            lookups: AtomicU64::new(0),
            lookups_pending: AtomicU64::new(0),
            looked_up: AtomicU64::new(0),
            counters: Counters::default(),
            activated: Mutex::new(None),
            nodes: Mutex::new(Vec::new()),
            lost: AtomicU64::new(0),
            lost_unknown: AtomicBool::new(false),
            failures: Mutex::new(Vec::new()),
            waiting_on: Mutex::new(HashMap::new()),
            pending_reasons: Mutex::new(HashMap::new()),
            cursor: AtomicU64::new(0),
            services,
            launch_env,
            properties: Mutex::new(HashMap::new()),
            fatal: Mutex::new(None),
            directory: Mutex::new(None),
            changed: watch::channel(0).0,
            events: broadcast::channel(1024).0,
        }
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    pub(crate) fn fail(&self, host: &str, error: String) {
        tracing::warn!(vn = %self.name, "{error}");
        lock(&self.failures).push(error.clone());
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(VnEvent::Failed {
            host: host.to_owned(),
            error,
        });
        self.bump();
    }

    /// How many nodes the lookups of this virtual node found, once every
    /// one has read its directory (`None` before, or without lookups).
    pub(crate) fn looked_up(&self) -> Option<u64> {
        let started = self.lookups.load(Ordering::Acquire);
        let pending = self.lookups_pending.load(Ordering::Acquire);
        (started > 0 && pending == 0).then(|| self.looked_up.load(Ordering::Acquire))
    }

    pub(crate) fn node_count(&self) -> usize {
        lock(&self.nodes).len()
    }

    /// A node is ready: visible to the program, listed in the directory.
    pub(crate) fn join(&self, node: Node, properties: BTreeMap<String, String>) {
        let url = node.url().to_string();
        lock(&self.properties).insert(url.clone(), properties);
        lock(&self.nodes).push(node.clone());
        if let Some((dir, _)) = &*lock(&self.directory) {
            drop(dir.add(url));
        }
        tracing::info!(vn = %self.name, "node {} joined", node.url());
        let _ = self.events.send(VnEvent::Joined(node));
        self.bump();
    }

    /// Applies the virtual node's services to `node` (in the node's own
    /// runtime), then lets it join; a refusal drops it or, when the
    /// service says so, fails the virtual node.
    pub(crate) async fn admit_node(self: Arc<Self>, node: Node, origin: Origin) {
        if self.services.is_empty() {
            return self.join(node, BTreeMap::new());
        }
        let directory = lock(&self.directory).as_ref().map(|(_, url)| url.clone());
        let result = if node.is_local() {
            apply_all(
                &node,
                &self.name,
                &origin,
                directory.as_deref(),
                &self.services,
            )
        } else {
            match ServiceHostProxy::new(&node).await {
                Ok(host) => match host
                    .apply(
                        node.url().name().to_owned(),
                        self.name.clone(),
                        origin,
                        directory,
                        self.services.clone(),
                    )
                    .await
                {
                    Ok(props) => Ok(props),
                    Err(CallError::Method(f)) => Err(f),
                    Err(e) => Err(ApplyFailure {
                        id: String::new(),
                        class: String::new(),
                        node: node.url().to_string(),
                        message: format!("cannot apply the technical services: {e}"),
                        fatal: false,
                    }),
                },
                Err(e) => Err(ApplyFailure {
                    id: String::new(),
                    class: String::new(),
                    node: node.url().to_string(),
                    message: format!("cannot reach it to apply the technical services: {e}"),
                    fatal: false,
                }),
            }
        };
        match result {
            Ok(props) => self.join(node, props),
            Err(failure) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                if failure.fatal {
                    *lock(&self.fatal) = Some(failure.to_string());
                }
                self.fail(node.url().host(), failure.to_string());
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One process started or job submitted.
pub(crate) struct LaunchRecord {
    pub(crate) vn: Arc<VnState>,
    pub(crate) label: String,
    pub(crate) host: String,
    /// Runtimes it will register, when known.
    pub(crate) expected: Option<u64>,
    pub(crate) nodes_per_runtime: u64,
    pub(crate) uses_left: u64,
    pub(crate) registered: u64,
    pub(crate) ended: bool,
    pub(crate) runtimes: Vec<u64>,
    /// Stops a started process.
    pub(crate) kill: Option<oneshot::Sender<()>>,
    /// The launch's ticket.
    pub(crate) token: String,
    /// A submitted batch job, to cancel.
    pub(crate) job: Option<Job>,
    /// Its runtime was acquired (lent by a peer), not created: its nodes
    /// reach the services as acquired ones.
    pub(crate) acquired: bool,
    /// Its runtimes reach this deployer through a relay on a front-end:
    /// their connections come from the relay's address, not theirs.
    pub(crate) relayed: bool,
}

/// A batch job and where to cancel it.
pub(crate) struct Job {
    pub(crate) shell: Arc<dyn actogrid_acquisition::exec::Shell>,
    pub(crate) job: actogrid_acquisition::batch::BatchJob,
}

/// What an ended launch leaves behind.
struct ClosedLaunch {
    vn: Arc<VnState>,
    label: String,
    host: String,
    /// Nodes it will never register (`None`: unknown how many).
    lost_nodes: Option<u64>,
    runtimes: Vec<u64>,
}

impl ClosedLaunch {
    /// Counts the nodes that will never come against the virtual node.
    fn count_lost(&self) {
        match self.lost_nodes {
            Some(n) => {
                self.vn.lost.fetch_add(n, Ordering::Relaxed);
            }
            None => self.vn.lost_unknown.store(true, Ordering::Relaxed),
        }
    }
}

/// One registered runtime.
pub(crate) struct RuntimeRecord {
    /// Its id, as its certificate says.
    pub(crate) id: u64,
    pub(crate) launch: u64,
    pub(crate) agent: RuntimeAgentProxy,
    pub(crate) nodes: Vec<Node>,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) last_renewal: Instant,
    pub(crate) gone: bool,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) tickets: HashMap<String, u64>,
    /// Runtimes that enrolled with a ticket and have not registered yet:
    /// their launch, by runtime id.
    pub(crate) enrolled: HashMap<u64, u64>,
    pub(crate) launches: Vec<LaunchRecord>,
    pub(crate) runtimes: HashMap<u64, RuntimeRecord>,
    pub(crate) next_runtime: u64,
    /// The MPI runs that ended, in that order.
    pub(crate) mpi: Vec<MpiOutcome>,
}

/// The state of one deployment, shared by its handle, its registrar and
/// its background tasks.
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) lease: Duration,
    pub(crate) runtime: Runtime,
    pub(crate) ended: AtomicBool,
    pub(crate) state: Mutex<State>,
    pub(crate) vns: HashMap<String, Arc<VnState>>,
    /// What the runtimes printed.
    pub(crate) outputs: super::output::Outputs,
    /// Where runtimes send it (given at admission).
    pub(crate) log_sink: std::sync::OnceLock<super::output::LogSinkProxy>,
    /// Its FT server, when a virtual node asks for fault tolerance.
    pub(crate) ft: Option<Arc<super::ft::FtDeployment>>,
}

impl Shared {
    /// Opens a launch of `expected` runtimes (unknown: `None`) for `vn`.
    pub(crate) fn open_launch(
        &self,
        vn: &Arc<VnState>,
        label: String,
        host: String,
        expected: Option<u64>,
        nodes_per_runtime: u64,
    ) -> u64 {
        let token = new_token();
        let mut st = lock(&self.state);
        let id = st.launches.len() as u64;
        st.launches.push(LaunchRecord {
            vn: vn.clone(),
            label,
            host,
            expected,
            nodes_per_runtime,
            uses_left: expected.unwrap_or(u64::MAX),
            registered: 0,
            ended: false,
            runtimes: Vec::new(),
            kill: None,
            job: None,
            acquired: false,
            relayed: false,
            token: token.clone(),
        });
        st.tickets.insert(token, id);
        id
    }

    /// What a runtime of launch `launch` is given to enroll with: its
    /// ticket, and the authorities it must trust to reach this deployer
    /// (none without TLS), as one line of JSON and the end line.
    pub(crate) fn enrollment(&self, launch: u64) -> String {
        let ticket = lock(&self.state).launches[launch as usize].token.clone();
        let identity = self.runtime.identity();
        let enrollment = crate::credentials::Enrollment {
            ticket,
            roots: identity.roots_pem().map(str::to_owned),
        };
        crate::credentials::framed(&serde_json::to_string(&enrollment).unwrap_or_default())
    }

    /// Runtime `caller` (its id, bound to its certificate) registers:
    /// admitted if it enrolled with a ticket of this deployment.
    pub(crate) fn admit(&self, caller: u64, who: Registration) -> Result<Admission, Refusal> {
        if self.ended.load(Ordering::Acquire) {
            return Err(Refusal::Ended);
        }
        let mut nodes = Vec::with_capacity(who.nodes.len());
        for url in &who.nodes {
            match url.parse::<NodeUrl>() {
                Ok(url) => nodes.push(self.runtime.node(&url)),
                Err(e) => {
                    tracing::warn!("a runtime registered a bad node URL `{url}`: {e}");
                    return Err(Refusal::BadToken);
                }
            }
        }
        let mut st = lock(&self.state);
        let Some(launch_id) = st.enrolled.remove(&caller) else {
            tracing::warn!(
                "refused to register runtime {caller:#x} on {} (pid {}): it did not enroll with a \
                 ticket of this deployment",
                who.hostname,
                who.pid
            );
            return Err(Refusal::BadToken);
        };
        let runtime = st.next_runtime;
        st.next_runtime += 1;
        let launch = &mut st.launches[launch_id as usize];
        let provider = launch.label.clone();
        let acquired = launch.acquired;
        launch.registered += 1;
        launch.runtimes.push(runtime);
        let vn = launch.vn.clone();
        st.runtimes.insert(
            runtime,
            RuntimeRecord {
                id: caller,
                launch: launch_id,
                agent: who.agent,
                nodes: nodes.clone(),
                host: who.hostname,
                pid: who.pid,
                last_renewal: Instant::now(),
                gone: false,
            },
        );
        drop(st);
        vn.counters.registered.fetch_add(1, Ordering::Relaxed);
        for node in nodes {
            let origin = if acquired {
                Origin::Acquired {
                    service: provider.clone(),
                }
            } else {
                Origin::Created {
                    provider: provider.clone(),
                }
            };
            tokio::spawn(vn.clone().admit_node(node, origin));
        }
        Ok(Admission {
            runtime,
            lease_ms: self.lease.as_millis() as u64,
            logs: self.log_sink.get().cloned(),
        })
    }

    /// Runtime `caller` spends one use of `ticket` to enroll as itself:
    /// `false` if the ticket is not one of this deployment's (unknown,
    /// used up, or of a launch that ended).
    pub(crate) fn enroll(&self, ticket: &str, caller: u64) -> bool {
        if self.ended.load(Ordering::Acquire) {
            return false;
        }
        let mut st = lock(&self.state);
        let Some(&launch_id) = st.tickets.get(ticket) else {
            return false;
        };
        let launch = &mut st.launches[launch_id as usize];
        let relayed = launch.relayed;
        launch.uses_left = launch.uses_left.saturating_sub(1);
        if launch.uses_left == 0 {
            st.tickets.remove(ticket);
        }
        st.enrolled.insert(caller, launch_id);
        drop(st);
        if relayed {
            self.runtime.trust_relayed(caller);
        }
        true
    }

    /// The runtimes of `launch` come through a relay.
    pub(crate) fn relayed_launch(&self, launch: u64) {
        if let Some(l) = lock(&self.state).launches.get_mut(launch as usize) {
            l.relayed = true;
        }
    }

    /// Renews the lease of runtime number `runtime`, when `caller` is it.
    pub(crate) fn renew(&self, caller: Option<u64>, runtime: u64) -> bool {
        if self.ended.load(Ordering::Acquire) {
            return false;
        }
        let mut st = lock(&self.state);
        match st.runtimes.get_mut(&runtime) {
            Some(r) if !r.gone && caller.is_none_or(|c| c == r.id) => {
                r.last_renewal = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Objects moved from the nodes of runtime `runtime`, as it says
    /// (only that runtime itself says so, and only of its own nodes):
    /// each is a [`VnEvent::Migrated`] of its virtual node.
    pub(crate) fn moved_from(&self, caller: Option<u64>, runtime: u64, moves: Vec<Moved>) {
        let (vn, nodes) = {
            let st = lock(&self.state);
            match st.runtimes.get(&runtime) {
                Some(r) if !r.gone && caller.is_none_or(|c| c == r.id) => (
                    st.launches[r.launch as usize].vn.clone(),
                    r.nodes
                        .iter()
                        .map(|n| n.url().to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => return,
            }
        };
        for m in moves.into_iter().take(MAX_MOVES) {
            if nodes.contains(&m.from) {
                let _ = vn.events.send(m.into_event());
            }
        }
    }

    /// An object moved from a node of this process's runtime: a
    /// [`VnEvent::Migrated`] of the virtual node that node belongs to.
    pub(crate) fn moved_here(&self, m: Moved) {
        let url = m.from.clone();
        let vn = self
            .vns
            .values()
            .find(|vn| lock(&vn.nodes).iter().any(|n| n.url().to_string() == url));
        if let Some(vn) = vn {
            let _ = vn.events.send(m.into_event());
        }
    }

    /// Runtime `runtime` is gone: its nodes leave their VN.
    pub(crate) fn runtime_gone(&self, runtime: u64, reason: &str) {
        let mut st = lock(&self.state);
        let Some(record) = st.runtimes.get_mut(&runtime) else {
            return;
        };
        if record.gone {
            return;
        }
        record.gone = true;
        let nodes = record.nodes.clone();
        let launch = record.launch as usize;
        let vn = st.launches[launch].vn.clone();
        drop(st);
        if let Some(ft) = self
            .ft
            .as_ref()
            .filter(|_| !self.ended.load(Ordering::Acquire))
        {
            ft.runtime_died(&vn, &self.vns, &nodes, reason);
        }
        self.nodes_left(&vn, nodes, reason);
    }

    fn nodes_left(&self, vn: &VnState, nodes: Vec<Node>, reason: &str) {
        if nodes.is_empty() {
            return;
        }
        {
            let mut list = lock(&vn.nodes);
            list.retain(|n| !nodes.iter().any(|g| g.url() == n.url()));
        }
        if let Some((dir, _)) = &*lock(&vn.directory) {
            for n in &nodes {
                drop(dir.remove(n.url().to_string()));
            }
        }
        if !self.ended.load(Ordering::Acquire) {
            vn.lost.fetch_add(nodes.len() as u64, Ordering::Relaxed);
            for node in nodes {
                tracing::warn!(vn = %vn.name, "node {} left: {reason}", node.url());
                let _ = vn.events.send(VnEvent::Left {
                    node,
                    reason: reason.to_owned(),
                });
            }
        }
        vn.bump();
    }

    /// A launch ended (its process exited, or its job finished): runtimes it
    /// still had leave, and the ones it never registered are lost.
    pub(crate) fn launch_ended(&self, launch: u64, how: &str) {
        let Some(closed) = self.close_launch(launch) else {
            return;
        };
        for r in &closed.runtimes {
            self.runtime_gone(*r, &format!("{} {how}", closed.label));
        }
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        let message = match closed.lost_nodes {
            Some(0) => return closed.vn.bump(),
            Some(_) => format!("{} {how} before its runtimes registered", closed.label),
            None => format!("{} {how}", closed.label),
        };
        closed.count_lost();
        closed.vn.fail(&closed.host, message);
    }

    /// A launch could not even start.
    pub(crate) fn launch_failed(&self, launch: u64, error: String) {
        if let Some(closed) = self.close_launch(launch) {
            closed.count_lost();
            closed.vn.fail(&closed.host, error);
        }
    }

    /// Marks a launch ended (once) and voids its ticket; what it leaves.
    fn close_launch(&self, launch: u64) -> Option<ClosedLaunch> {
        let mut st = lock(&self.state);
        let record = &mut st.launches[launch as usize];
        if record.ended {
            return None;
        }
        record.ended = true;
        let closed = ClosedLaunch {
            vn: record.vn.clone(),
            label: record.label.clone(),
            host: record.host.clone(),
            lost_nodes: (record.expected)
                .map(|e| e.saturating_sub(record.registered) * record.nodes_per_runtime),
            runtimes: record.runtimes.clone(),
        };
        st.tickets.retain(|_, l| *l != launch);
        drop(st);
        lock(&closed.vn.waiting_on).remove(&launch);
        Some(closed)
    }

    /// Marks runtimes that stopped renewing their lease as gone. A runtime
    /// hosting protected objects (fault tolerance) is gone sooner: after
    /// [`super::ft::missed_heartbeats`] of its renewals, its heartbeats.
    pub(crate) fn sweep_leases(&self) {
        let protected = |launch: u64, st: &State| {
            self.ft.as_ref().is_some_and(|ft| {
                st.launches
                    .get(launch as usize)
                    .is_some_and(|l| ft.protected.contains_key(&l.vn.name))
            })
        };
        let heartbeats = super::ft::missed_heartbeats(self.lease);
        let stale: Vec<(u64, String)> = {
            let st = lock(&self.state);
            st.runtimes
                .iter()
                .filter(|(_, r)| !r.gone)
                .filter_map(|(id, r)| {
                    let silent = r.last_renewal.elapsed();
                    if silent > self.lease {
                        Some((*id, "it stopped renewing its lease".to_owned()))
                    } else if silent > heartbeats && protected(r.launch, &st) {
                        Some((
                            *id,
                            format!(
                                "it missed its heartbeats (none for {} ms)",
                                silent.as_millis()
                            ),
                        ))
                    } else {
                        None
                    }
                })
                .collect()
        };
        for (r, why) in stale {
            self.runtime_gone(r, &why);
        }
    }
}

/// A fresh unguessable token (128 bits from the system's generator).
fn new_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !filled {
        for b in &mut bytes {
            *b = fastrand::u8(..);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
