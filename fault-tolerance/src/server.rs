//! The FT server's recovery side, with the runtime's hooks driving it:
//! pessimistic message logging of protected objects into the durable
//! [`Store`], the location service callers ask when an object's runtime
//! failed, and the recovery of a failed runtime's objects on another node.
//!
//! [`FtServer`] holds the store and knows where each protected object
//! lives. [`Protection`] is the interceptor installed on each protected
//! node; it reaches the server directly when both are in one process
//! ([`FtServer::protection`]) and over the wire otherwise
//! ([`FtServer::serve`] on the server's side, [`Protection::remote`] on
//! the protected runtimes'). [`FtServer::locator`] and [`remote_locator`]
//! are the [`Locator`] every runtime that calls protected objects installs;
//! [`FtServer::runtime_failed`] is what the failure detector calls.
//!
//! What each piece does:
//!
//! * **Log while delivering, answer once logged.** A protected object is
//!   handed a request while the request ([`Logged`]) is appended to the
//!   object's log in the store; nothing of the service leaves — its reply,
//!   the requests it sends, its journaled effects — before the entry is
//!   durable ([`Verdict::DeliverHeld`]), and the object's next request
//!   waits for it too. A request the store refuses (written by an
//!   incarnation the recovery fenced) is never answered: the instance
//!   serves nothing more, and its callers send their requests again where
//!   the object is recovered.
//! * **Checkpoints at request boundaries**: before the first request a
//!   protected object serves, then at the first boundary after `ttc` once
//!   something was delivered since (also for an idle object). A checkpoint
//!   truncates the log the checkpoint before it covers, once durable: the
//!   replies recorded for the requests in between stay, for a caller whose
//!   reply was lost with the runtime that served it.
//! * **Replies are recorded**, so that a request sent again after its
//!   entry was truncated is answered with the reply it got
//!   ([`Interceptor::duplicate`]). They are kept in memory and written with
//!   the object's next checkpoint (or every [`REPLIES_BUFFERED`] replies):
//!   a reply lost with its runtime belongs to a request still in the log,
//!   which the recovery serves again, giving the same reply.
//! * **Recovery** of the objects a failed runtime hosted: each one's
//!   incarnation is bumped and the store fenced (the old incarnation can
//!   write nothing more); then the object is restored from its newest
//!   checkpoint on the node given, and serves its log first
//!   ([`Node::recover`]).
//! * **Location.** A caller whose call to a protected object failed asks
//!   where the object is; the answer waits for the recovery and names the
//!   runtime that hosts it now. The caller sends its call again, as it was
//!   ([`actogrid_runtime::Runtime::set_locator`]).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actogrid_runtime::Node;
use actogrid_runtime::intercept::{
    BodyAccess, Delivery, Hold, Interceptor, Locator, Logged, Reply, ServeOutcome, Verdict,
};
use futures::future::BoxFuture;
use tokio::sync::watch;

pub use crate::journal::EffectId;
use crate::store::{
    CheckpointIndex, Incarnation, LogPosition, ObjectKey, ReplyId, Store, StoreConfig, StoreError,
};

/// What went wrong protecting or recovering an object.
#[derive(Debug, thiserror::Error)]
pub enum FtError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored checkpoint or log entry does not decode: written by another
    /// build, or damaged.
    #[error("object {object:#x}: {what} in {path} does not decode: {reason}")]
    Decode {
        /// The object.
        object: u64,
        /// Which record.
        what: String,
        /// The store's file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The object has no checkpoint to recover from.
    #[error("object {object:#x} has no checkpoint in {path}: it cannot be recovered")]
    NoCheckpoint {
        /// The object.
        object: u64,
        /// The store's file.
        path: String,
    },
    /// The store failed while an object was recovered.
    #[error("object {object:#x}: {source}")]
    Recovering {
        /// The object.
        object: u64,
        /// What the store said.
        source: StoreError,
    },
    /// Restoring it failed.
    #[error("object {object:#x} could not be restored on {node}: {reason}")]
    Restore {
        /// The object.
        object: u64,
        /// The node it was to be restored on.
        node: String,
        /// Why.
        reason: String,
    },
}

impl FtError {
    /// The object the error is about, when it is about one.
    pub fn object(&self) -> Option<u64> {
        match self {
            FtError::Store(_) => None,
            FtError::Decode { object, .. }
            | FtError::NoCheckpoint { object, .. }
            | FtError::Recovering { object, .. }
            | FtError::Restore { object, .. } => Some(*object),
        }
    }
}

/// What the server knows of one protected object.
#[derive(Debug)]
struct Entry {
    /// Its current incarnation (1 at creation, one more per recovery).
    incarnation: Incarnation,
    /// The runtime hosting it (`host:port`).
    address: String,
    /// The index its next checkpoint gets, and the position its next log
    /// entry gets, as of its last recovery (the protecting agent counts on
    /// from there).
    next_index: u64,
    next: LogPosition,
    /// Where its next checkpoint may truncate its log, as of its last
    /// recovery.
    covered: LogPosition,
    /// Being recovered: callers wait.
    recovering: bool,
    /// Recovered, and serving its log (or just served it) while the
    /// replies it gives are compared and recorded: its next checkpoint,
    /// which counts those requests as served, waits.
    unchecked: bool,
}

/// Where a protected object's protocol stands, for the agent that starts
/// protecting it on a runtime.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ObjectState {
    /// Its incarnation.
    pub incarnation: u64,
    /// The index of its next checkpoint.
    pub next_index: u64,
    /// The position of its next log entry.
    pub next: u64,
    /// Where its next checkpoint may truncate its log (what the
    /// checkpoint before covered).
    pub covered: u64,
}

/// A checkpoint's place, decided by the agent when it takes it.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Reserved {
    /// The incarnation taking it.
    pub incarnation: u64,
    /// Its index.
    pub index: u64,
    /// The log entries before this position are in its state.
    pub covers: u64,
    /// What the checkpoint before it covered: the log is truncated up to
    /// there.
    pub truncate: u64,
}

/// The FT server of a deployment (see the [module documentation](self)).
#[derive(Debug)]
pub struct FtServer {
    store: Store,
    ttc: Duration,
    objects: Mutex<HashMap<u64, Entry>>,
    /// Bumped whenever an object's location or recovery state changes.
    changed: watch::Sender<u64>,
    /// The runtimes reported dead (`host:port`).
    dead: Mutex<std::collections::HashSet<String>>,
    /// Runtimes whose failure a detector reported, their recovery not
    /// begun or not done (see [`FtServer::recover_runtime`]).
    failing: Mutex<std::collections::HashSet<String>>,
    /// Runtimes probed because a caller failed to reach a CIC member
    /// there (see [`FtServer::located`]).
    probes: Arc<Mutex<HashMap<String, Probe>>>,
    /// The same, in the order they were reported (see
    /// [`FtServer::dead_after`]).
    dead_order: Mutex<Vec<String>>,
    /// The id of the runtime declared dead at an address, when known.
    dead_ids: Mutex<HashMap<String, u64>>,
    /// Why each object that could not be recovered was given up (the
    /// newest [`LOST_KEPT`]).
    lost: Mutex<std::collections::VecDeque<(u64, String)>>,
    /// Its own failure detector, when it is stand-alone.
    watch: std::sync::OnceLock<Arc<crate::watch::Watch>>,
    /// Checkpoints stored since [`FtServer::take_checkpoints`] was last
    /// called: by object, the runtime that sent the last one
    /// (`host:port`), how many, and their bytes.
    stored: Mutex<HashMap<u64, CheckpointsStored>>,
    /// The deployment's CIC group.
    cic: crate::cic_group::CicGroup,
}

/// Objects whose checkpoints are counted between two
/// [`FtServer::take_checkpoints`], at most.
const MAX_TALLIED: usize = 100_000;

/// The checkpoints of one object stored lately (see
/// [`FtServer::take_checkpoints`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointsStored {
    /// The runtime that sent the latest (`host:port`).
    pub address: String,
    /// How many.
    pub checkpoints: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// How one object of a failed runtime was recovered.
#[derive(Debug)]
pub struct Recovery {
    /// The object.
    pub object: u64,
    /// Its new incarnation.
    pub incarnation: Incarnation,
    /// Requests served again from its log.
    pub replayed: usize,
    /// How long restoring it and replaying its log took.
    pub took: Duration,
}

/// How long the answer of a probe of a runtime is taken for the truth.
const PROBE_KEPT: Duration = Duration::from_millis(300);

/// How long a probe waits for its connection.
const PROBE_WITHIN: Duration = Duration::from_millis(300);

/// A runtime probed (see [`FtServer::located`]).
#[derive(Debug)]
struct Probe {
    /// When a caller last asked about it.
    asked: Instant,
    /// Whether it answered, and when that was found.
    alive: Option<(bool, Instant)>,
    /// A probe is under way.
    running: bool,
}

/// How many times the objects of a dead runtime are tried on another node
/// when the one taken dies too (see [`FtServer::recover_runtime`]).
pub const MAX_ATTEMPTS: usize = 20;

/// How many given-up objects a server remembers the reason of.
const LOST_KEPT: usize = 4096;

fn key(object: u64) -> ObjectKey {
    ObjectKey::new(object.to_be_bytes().to_vec())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FtServer {
    /// A server keeping its store at `path` (created if need be),
    /// checkpointing each protected object every `ttc`.
    pub fn open(path: impl AsRef<Path>, ttc: Duration) -> Result<Arc<FtServer>, FtError> {
        let store = Store::open(path, StoreConfig::default())?;
        Ok(Arc::new(FtServer {
            cic: crate::cic_group::CicGroup::new(store.clone()),
            store,
            ttc,
            objects: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
            dead: Mutex::new(std::collections::HashSet::new()),
            failing: Mutex::new(std::collections::HashSet::new()),
            probes: Arc::new(Mutex::new(HashMap::new())),
            dead_order: Mutex::new(Vec::new()),
            dead_ids: Mutex::new(HashMap::new()),
            lost: Mutex::new(std::collections::VecDeque::new()),
            watch: std::sync::OnceLock::new(),
            stored: Mutex::new(HashMap::new()),
        }))
    }

    /// How often each protected object is checkpointed.
    pub fn ttc(&self) -> Duration {
        self.ttc
    }

    /// The checkpoints stored since the last call, by object (what a
    /// deployment's timeline summarises).
    pub fn take_checkpoints(&self) -> HashMap<u64, CheckpointsStored> {
        std::mem::take(&mut *lock(&self.stored))
    }

    /// The interceptor to install on every protected node of this
    /// process's runtimes.
    pub fn protection(self: &Arc<Self>) -> Arc<Protection> {
        Protection::new(Arc::new(Direct(self.clone())), self.ttc)
    }

    /// The locator to install on every runtime that calls protected
    /// objects (see [`actogrid_runtime::Runtime::set_locator`]).
    pub fn locator(self: &Arc<Self>) -> Arc<dyn Locator> {
        Arc::new(ServerLocator {
            server: self.clone(),
        })
    }

    /// The deployment's CIC group.
    pub fn cic(&self) -> &crate::cic_group::CicGroup {
        &self.cic
    }

    /// The interceptor to install on every CIC node of this process's
    /// runtimes.
    pub fn cic_protection(
        self: &Arc<Self>,
        config: crate::cic::Config,
    ) -> Arc<crate::cic_node::CicProtection> {
        crate::cic_node::CicProtection::new(Arc::new(Direct(self.clone())), config)
    }

    /// The store it keeps.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where protected object `object` lives now, if it is protected.
    pub fn location(&self, object: u64) -> Option<String> {
        lock(&self.objects).get(&object).map(|e| e.address.clone())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn path(&self) -> String {
        self.store.path().display().to_string()
    }

    /// The runtime at `address` failed: every protected object it hosted
    /// is recovered on `to`, all at once. Callers waiting to know
    /// where an object is learn it once that object is recovered.
    ///
    /// Returns how each recovery ended, except those that failed to reach
    /// `to` (it died as well, say): they are [`FtServer::stranded`], to be
    /// recovered on another node.
    pub async fn runtime_failed(&self, address: &str, to: &Node) -> Vec<Result<Recovery, FtError>> {
        self.declare_dead(address);
        // The calls this process's runtime has waiting on the dead one
        // (a hung runtime's connection stays open) go where their objects
        // are recovered, without waiting for the connection's timeout.
        to.runtime()
            .peer_failed(address, "the FT server counted it dead");
        let objects: Vec<u64> = {
            let mut all = lock(&self.objects);
            all.iter_mut()
                .filter(|(_, e)| e.address == address && !e.recovering)
                .map(|(id, e)| {
                    e.recovering = true;
                    *id
                })
                .collect()
        };
        self.bump();
        // All at once: replaying one object's log may call another of
        // them, which must be serving by then.
        let recoveries = objects.into_iter().map(|object| async move {
            let result = self.recover(object, to).await.map_err(|e| match e {
                FtError::Store(source) => FtError::Recovering { object, source },
                e => e,
            });
            let kept = match &result {
                Err(e @ FtError::Restore { .. }) => {
                    // The node taken is gone too, most likely: the object
                    // waits for another one (see `stranded`).
                    tracing::warn!("recovery of object {object:#x} to be tried again: {e}");
                    if let Some(e) = lock(&self.objects).get_mut(&object) {
                        e.recovering = false;
                    }
                    false
                }
                Err(e) => {
                    tracing::error!("recovery of object {object:#x} failed: {e}");
                    // Callers are told it is gone rather than left waiting.
                    lock(&self.objects).remove(&object);
                    self.record_lost(object, &e.to_string());
                    true
                }
                Ok(_) => true,
            };
            self.bump();
            kept.then_some(result)
        });
        futures::future::join_all(recoveries)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The runtime at `address` failed while it hosted members of the CIC
    /// group: the whole group rolls back to its recovery line, the
    /// members of `address` restored on `to`, the others in place (see
    /// [`CicGroup::recover`](crate::cic_group::CicGroup::recover)).
    /// Callers waiting to know where a member is learn it once it is
    /// restored.
    pub async fn cic_runtime_failed(
        &self,
        address: &str,
        to: &Node,
    ) -> Result<crate::cic_group::GroupRecovery, String> {
        self.declare_dead(address);
        to.runtime()
            .peer_failed(address, "the FT server counted it dead");
        let gone = |a: &str| a == address || self.is_dead(a) || lock(&self.failing).contains(a);
        let result = self.cic.recover(address, to, &gone, &|| self.bump()).await;
        self.bump();
        result
    }

    /// Recovers the objects of the runtime at `address`, which failed,
    /// for a failure detector: all at once on the node `place` gives
    /// (`place(attempt, address)`; `Err(why)`: there is none, and the
    /// objects waiting are given up with `why`), then again on another
    /// node for those whose node died under them ([`FtServer::stranded`]),
    /// up to [`MAX_ATTEMPTS`] times. `each` sees how each recovery ended
    /// and the node it took. Returns the objects given up, with why.
    pub async fn recover_runtime<P>(
        &self,
        mut address: String,
        mut place: P,
        mut each: impl FnMut(&Node, Result<Recovery, FtError>),
    ) -> Vec<(u64, String)>
    where
        P: FnMut(usize, String) -> BoxFuture<'static, Result<Node, String>>,
    {
        let lost = |address: &str, why: String| -> Vec<(u64, String)> {
            self.give_up(address, &why)
                .into_iter()
                .map(|object| (object, why.clone()))
                .collect()
        };
        lock(&self.failing).insert(address.clone());
        self.bump();
        let failing = address.clone();
        let lost = |address: &str, why: String| {
            lock(&self.failing).remove(&failing);
            lost(address, why)
        };
        for attempt in 0..MAX_ATTEMPTS {
            let to = match place(attempt, address.clone()).await {
                Ok(to) => to,
                Err(why) => return lost(&address, why),
            };
            tracing::info!("recovering the objects of {address} on {}", to.url());
            for result in self.runtime_failed(&address, &to).await {
                each(&to, result);
            }
            // The CIC group rolls back as a whole, its members of `address`
            // restored on `to`; tried again on another node if it fails.
            let mut group_failed = false;
            if self.cic.hosts_members(&address) {
                match self.cic_runtime_failed(&address, &to).await {
                    Ok(r) => {
                        for m in r.restored.iter().filter(|m| m.moved) {
                            each(
                                &to,
                                Ok(Recovery {
                                    object: m.object,
                                    incarnation: Incarnation(r.epoch),
                                    replayed: m.served,
                                    took: r.took,
                                }),
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            "the CIC group's recovery from the failure of {address} is tried again: {e}"
                        );
                        group_failed = true;
                    }
                }
            }
            match self.stranded().into_iter().next() {
                None if group_failed => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => {
                    lock(&self.failing).remove(&failing);
                    return Vec::new();
                }
                Some(next) => {
                    address = next;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let why = format!("no recovery succeeded in {MAX_ATTEMPTS} attempts");
        self.stranded()
            .iter()
            .flat_map(|address| lost(address, why.clone()))
            .collect()
    }

    /// Runtimes known dead that still host protected objects not being
    /// recovered: those whose recovery failed to reach the node it took,
    /// and those recovered to a runtime that died meanwhile. Each wants
    /// [`FtServer::runtime_failed`] again, with another node.
    pub fn stranded(&self) -> Vec<String> {
        let dead = lock(&self.dead);
        let mut stranded: Vec<String> = lock(&self.objects)
            .values()
            .filter(|e| !e.recovering && dead.contains(&e.address))
            .map(|e| e.address.clone())
            .collect();
        stranded.sort_unstable();
        stranded.dedup();
        stranded
    }

    /// The runtime at `address` is dead, before its objects are
    /// recovered: whatever it still says is refused.
    pub(crate) fn declare_dead(&self, address: &str) {
        if lock(&self.dead).insert(address.to_owned()) {
            lock(&self.dead_order).push(address.to_owned());
        }
    }

    /// The runtime `runtime` (its id; 0 if unknown) at `address` is dead.
    pub(crate) fn declare_dead_runtime(&self, address: &str, runtime: u64) {
        let mut ids = lock(&self.dead_ids);
        if runtime == 0 {
            ids.remove(address);
        } else {
            ids.insert(address.to_owned(), runtime);
        }
        self.declare_dead(address);
    }

    /// Whether runtime `runtime` at `address` was declared dead. Another
    /// runtime at the address of a dead one (a port handed out again)
    /// is not: the address is taken back for it.
    pub fn dead_for(&self, address: &str, runtime: u64) -> bool {
        if !self.is_dead(address) {
            return false;
        }
        let mut ids = lock(&self.dead_ids);
        match ids.get(address) {
            Some(&dead) if runtime != 0 && dead != runtime => {
                ids.remove(address);
                lock(&self.dead).remove(address);
                tracing::info!(
                    "a new runtime ({runtime:#x}) serves at {address}, where {dead:#x} was declared dead"
                );
                false
            }
            _ => true,
        }
    }

    /// The runtimes reported dead after the first `seen`, and how many
    /// were reported in all: what a runtime polls to fail its connections
    /// to them at once (see [`crate::watch`]).
    pub fn dead_after(&self, seen: usize) -> (usize, Vec<String>) {
        let order = lock(&self.dead_order);
        (order.len(), order.get(seen..).unwrap_or_default().to_vec())
    }

    pub(crate) fn set_watch(
        &self,
        watch: Arc<crate::watch::Watch>,
    ) -> Result<(), Arc<crate::watch::Watch>> {
        self.watch.set(watch)
    }

    pub(crate) fn watching(&self) -> Option<&crate::watch::Watch> {
        self.watch.get().map(|w| &**w)
    }

    /// Whether the runtime at `address` was reported dead.
    pub fn is_dead(&self, address: &str) -> bool {
        lock(&self.dead).contains(address)
    }

    fn record_lost(&self, object: u64, why: &str) {
        let mut lost = lock(&self.lost);
        lost.push_back((
            object,
            format!("protected object {object:#x} could not be recovered: {why}"),
        ));
        if lost.len() > LOST_KEPT {
            lost.pop_front();
        }
    }

    /// Why `object` could not be recovered, if it was given up.
    pub fn lost(&self, object: u64) -> Option<String> {
        lock(&self.lost)
            .iter()
            .rev()
            .find(|(o, _)| *o == object)
            .map(|(_, why)| why.clone())
    }

    /// The protected objects the runtime at `address` hosted cannot be
    /// recovered (`why`: no node to recover them on, say): callers waiting
    /// to know where they are learn they are gone, and why. Returns them.
    pub fn give_up(&self, address: &str, why: &str) -> Vec<u64> {
        let gone: Vec<u64> = {
            let mut all = lock(&self.objects);
            let ids: Vec<u64> = all
                .iter()
                .filter(|(_, e)| e.address == address && !e.recovering)
                .map(|(id, _)| *id)
                .collect();
            for id in &ids {
                all.remove(id);
            }
            ids
        };
        for object in &gone {
            self.record_lost(*object, why);
        }
        self.bump();
        gone
    }

    async fn recover(&self, object: u64, to: &Node) -> Result<Recovery, FtError> {
        let started = Instant::now();
        let dead_seen = lock(&self.dead_order).len();
        let key = key(object);
        let incarnation = {
            let objects = lock(&self.objects);
            let e = objects.get(&object).expect("listed above");
            Incarnation(e.incarnation.0 + 1)
        };
        // Fence first: from now on the store refuses the old incarnation's
        // writes, so the checkpoint and log read below are final.
        self.store.fence(&key, incarnation).await?;
        let stored = self
            .store
            .latest_checkpoint(&key)?
            .ok_or_else(|| FtError::NoCheckpoint {
                object,
                path: self.path(),
            })?;
        let bad = |reason: String| FtError::Decode {
            object,
            what: format!("checkpoint {}", stored.index.0),
            path: self.path(),
            reason,
        };
        let (covers, state) = stored
            .state
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("it is shorter than its header".into()))?;
        let covers = LogPosition(u64::from_be_bytes(*covers));
        let checkpoint: actogrid_runtime::intercept::Checkpoint =
            postcard::from_bytes(state).map_err(|e| bad(e.to_string()))?;
        let bounds = self.store.log_bounds(&key)?;
        let from = covers.max(bounds.first);
        let count = usize::try_from(bounds.next.0.saturating_sub(from.0)).unwrap_or(usize::MAX);
        let entries = self.store.read_log(&key, from, count)?;
        let mut log = Vec::with_capacity(entries.len());
        for entry in entries {
            let logged: Logged =
                postcard::from_bytes(&entry.bytes).map_err(|e| FtError::Decode {
                    object,
                    what: format!("log entry {}", entry.position.0),
                    path: self.path(),
                    reason: e.to_string(),
                })?;
            log.push(logged);
        }
        let replayed = log.len();
        // Known under its new incarnation before it serves anything: its
        // first requests are logged with it.
        // The runtime of `to` (which may be a handle on a remote node).
        let address = format!("{}:{}", to.url().host(), to.url().port());
        {
            let mut objects = lock(&self.objects);
            let e = objects.get_mut(&object).expect("listed above");
            e.incarnation = incarnation;
            e.next_index = stored.index.0 + 1;
            e.next = bounds.next;
            // Its first checkpoint there truncates nothing: the replies
            // between its last two checkpoints stay for callers that lost
            // them.
            e.covered = bounds.first;
        }
        // The replies of requests the checkpoint counts, for callers that
        // lost them with the runtime and send them again.
        let mut replies = Vec::new();
        for (id, bytes) in self.store.replies(&key)? {
            // Journaled effects are read while the log is served again.
            if crate::journal::is_effect_key(&id.sender) {
                continue;
            }
            let (Ok(sender), Ok(reply)) = (
                <[u8; 8]>::try_from(id.sender.as_bytes()),
                postcard::from_bytes::<Reply>(&bytes),
            ) else {
                return Err(FtError::Decode {
                    object,
                    what: format!("the reply to {id}"),
                    path: self.path(),
                    reason: "it was not recorded by this server".into(),
                });
            };
            replies.push(actogrid_runtime::intercept::Replayed {
                sender: u64::from_be_bytes(sender),
                seq: id.sequence,
                reply,
            });
        }
        restore_on(to, checkpoint, log, replies)
            .await
            .map_err(|reason| FtError::Restore {
                object,
                node: to.url().to_string(),
                reason,
            })?;
        // Found there while it replays: a logged request's caller sends it
        // again, bringing the values of the futures it passed, and objects
        // recovered with it may call it from their own replays.
        // A runtime serves there now: if an earlier one at the same address
        // (a port a lent slot hands to each of its runtimes in turn) was
        // declared dead before this recovery began, this one is not, and
        // what it hosts is not stranded. (Declared since, it died meanwhile.)
        let declared_before = lock(&self.dead_order)
            .iter()
            .rposition(|a| *a == address)
            .is_some_and(|i| i < dead_seen);
        if declared_before {
            lock(&self.dead).remove(&address);
        }
        {
            let mut objects = lock(&self.objects);
            let e = objects.get_mut(&object).expect("listed above");
            e.address = address;
            e.recovering = false;
            e.unchecked = true;
        }
        self.bump();
        match to.replayed(object).await {
            Ok(replies) => self.check_replay(object, &replies).await,
            // Its new runtime failed during the replay: a recovery of that
            // runtime's objects takes it up from here.
            Err(e) => tracing::warn!(
                object = format_args!("{object:#x}"),
                node = %to.url(),
                "the recovered object did not finish serving its log: {e}"
            ),
        }
        if let Some(e) = lock(&self.objects).get_mut(&object) {
            e.unchecked = false;
        }
        self.bump();
        tracing::info!(
            object = format_args!("{object:#x}"),
            incarnation = incarnation.0,
            replayed,
            node = %to.url(),
            "recovered"
        );
        Ok(Recovery {
            object,
            incarnation,
            replayed,
            took: started.elapsed(),
        })
    }

    /// Compares how a recovery answered the logged requests of `object`
    /// with how they were answered the first time, where that was
    /// recorded: a request that ended otherwise (a value then, an error
    /// now) means the object did not do the same thing again — it is not
    /// piecewise deterministic, or observed something the log does not
    /// hold — and its state may differ from a failure-free run's. Said
    /// loudly; the recovery stands.
    ///
    /// A reply the store lacks (its recording was lost with the runtime
    /// that served the request first) is recorded now: once the object's
    /// log is truncated past the request, a caller sending it again — a
    /// protected caller recovered from an older checkpoint, say — gets it
    /// from there.
    async fn check_replay(&self, object: u64, replayed: &[actogrid_runtime::intercept::Replayed]) {
        let mut missing = Vec::new();
        // Read once: replies recorded together are found by reading them all.
        let recorded: HashMap<ReplyId, Vec<u8>> = self
            .store
            .replies(&key(object))
            .map(|all| all.into_iter().collect())
            .unwrap_or_default();
        for r in replayed {
            let id = ReplyId {
                sender: key(r.sender),
                sequence: r.seq,
            };
            let Some(bytes) = recorded.get(&id) else {
                if let Ok(reply) = postcard::to_allocvec(&r.reply) {
                    missing.push((r.sender, r.seq, 0, reply));
                }
                continue;
            };
            let Ok(first) = postcard::from_bytes::<Reply>(bytes) else {
                continue;
            };
            if first.outcome != r.reply.outcome {
                tracing::error!(
                    object = format_args!("{object:#x}"),
                    sender = format_args!("{:#x}", r.sender),
                    seq = r.seq,
                    "the recovery diverged: request #{} of {:#x} ended {:?} when first served and {:?} when served again; the object's state may differ from a run without failure",
                    r.seq,
                    r.sender,
                    first.outcome,
                    r.reply.outcome
                );
            }
        }
        if let Err(e) = self.record_replies(object, missing).await {
            tracing::warn!(
                object = format_args!("{object:#x}"),
                "the replies given again by the recovery were not recorded: {e}"
            );
        }
    }

    /// Where `object`, which failed at `failed`, lives once recovered;
    /// `None` if it is not protected (or its recovery failed).
    async fn locate(&self, object: u64, failed: &str) -> Option<String> {
        let mut changed = self.changed.subscribe();
        loop {
            match self.located(object, failed) {
                Located::At(address) => return Some(address),
                Located::Unknown => return None,
                // Woken by a change, or to probe again.
                Located::Recovering => {
                    let _ = tokio::time::timeout(PROBE_KEPT, changed.changed()).await;
                }
            }
        }
    }

    /// Where `object`, which failed at `failed`, is now, without waiting.
    pub fn located(&self, object: u64, failed: &str) -> Located {
        let entry = (lock(&self.objects).get(&object)).map(|e| (e.recovering, e.address.clone()));
        match entry {
            None => self.cic_located(object, failed),
            Some((false, address)) if address != failed => Located::At(address),
            // Where the caller failed to reach it, and that runtime is not
            // known to have failed: sent there again if it answers (an
            // instance there refused the call — fenced, or discarded by a
            // recovery that restored the object there anew).
            Some((false, address)) if !self.is_dead(&address) => self.probed(address),
            Some(_) => Located::Recovering,
        }
    }

    /// [`FtServer::located`] for a member of the CIC group: where it is
    /// once restored — maybe where it was, since members of live runtimes
    /// roll back in place. A caller that failed to reach it where the
    /// group places it waits while that runtime's failure is being
    /// recovered; if none is known, the runtime is probed (a connection
    /// attempt, its answer kept for [`PROBE_KEPT`]): the caller is sent
    /// there again if it answers (it reached an instance a rollback
    /// discarded), and waits otherwise, for the failure detector.
    fn cic_located(&self, object: u64, failed: &str) -> Located {
        let address = match self.cic.located(object) {
            None => return Located::Unknown,
            Some(crate::cic_group::Where::Recovering) => return Located::Recovering,
            Some(crate::cic_group::Where::At { address, .. }) => address,
        };
        if self.is_dead(&address) || lock(&self.failing).contains(&address) {
            return Located::Recovering;
        }
        if address != failed {
            return Located::At(address);
        }
        self.probed(address)
    }

    /// A caller failed to reach the runtime at `address`, which is not
    /// known to have failed: [`Located::At`] it if it answers a connection
    /// (the answer kept for [`PROBE_KEPT`]), [`Located::Recovering`]
    /// otherwise, until the failure detector says.
    fn probed(&self, address: String) -> Located {
        if lock(&self.failing).contains(&address) {
            return Located::Recovering;
        }
        let mut probes = lock(&self.probes);
        probes.retain(|_, p| p.asked.elapsed() < PROBE_KEPT * 4);
        let probe = probes.entry(address.clone()).or_insert_with(|| Probe {
            asked: Instant::now(),
            alive: None,
            running: false,
        });
        probe.asked = Instant::now();
        match probe.alive {
            Some((true, at)) if at.elapsed() < PROBE_KEPT => return Located::At(address),
            Some((false, at)) if at.elapsed() < PROBE_KEPT => return Located::Recovering,
            _ => {}
        }
        if !probe.running {
            probe.running = true;
            let (changed, target) = (self.changed.clone(), address.clone());
            let probes = Arc::downgrade(&self.probes);
            tokio::spawn(async move {
                let alive = matches!(
                    tokio::time::timeout(PROBE_WITHIN, tokio::net::TcpStream::connect(&target))
                        .await,
                    Ok(Ok(_))
                );
                if let Some(probes) = probes.upgrade() {
                    if let Some(p) = lock(&probes).get_mut(&target) {
                        p.alive = Some((alive, Instant::now()));
                        p.running = false;
                    }
                }
                changed.send_modify(|v| *v += 1);
            });
        }
        Located::Recovering
    }

    /// Where `object`'s protocol stands, for the agent of the runtime at
    /// `address` that starts protecting it; an object seen for the first
    /// time starts at incarnation 1.
    pub fn open_object(&self, object: u64, address: String) -> ObjectState {
        let mut objects = lock(&self.objects);
        let e = objects.entry(object).or_insert_with(|| Entry {
            incarnation: Incarnation(1),
            address: address.clone(),
            next_index: 1,
            next: LogPosition(0),
            covered: LogPosition(0),
            recovering: false,
            unchecked: false,
        });
        if !e.recovering {
            // Known already: it moved (load balancing, a migration, maybe
            // between two nodes of one runtime), and the agent there
            // counts on from what the store holds now.
            let key = key(object);
            if let Ok(Some(latest)) = self.store.latest_checkpoint(&key)
                && latest.incarnation == e.incarnation
            {
                e.next_index = latest.index.0 + 1;
                if let Some(covers) = latest.state.first_chunk::<8>() {
                    e.covered = LogPosition(u64::from_be_bytes(*covers));
                }
            }
            if let Ok(bounds) = self.store.log_bounds(&key) {
                e.next = bounds.next;
            }
            e.address = address;
        }
        ObjectState {
            incarnation: e.incarnation.0,
            next_index: e.next_index,
            next: e.next.0,
            covered: e.covered.0,
        }
    }

    /// Stores checkpoint `state` of `object` (a postcard-encoded
    /// [`actogrid_runtime::intercept::Checkpoint`]) durably, and truncates
    /// the log it covers.
    pub async fn checkpoint(
        &self,
        object: u64,
        reserved: Reserved,
        state: Vec<u8>,
    ) -> Result<(), FtError> {
        // What it covers goes with it: a recovery replays the log from
        // there.
        let mut with_covers = reserved.covers.to_be_bytes().to_vec();
        with_covers.extend_from_slice(&state);
        let stored = crate::store::Checkpoint {
            index: CheckpointIndex(reserved.index),
            incarnation: Incarnation(reserved.incarnation),
            state: with_covers,
        };
        let truncate = LogPosition(reserved.truncate.min(reserved.covers));
        // After a recovery, not before the replies of the log served again
        // are recorded: this checkpoint counts those requests as served.
        let mut changed = self.changed.subscribe();
        while lock(&self.objects)
            .get(&object)
            .is_some_and(|e| e.unchecked)
        {
            if changed.changed().await.is_err() {
                break;
            }
        }
        let bytes = stored.state.len() as u64;
        self.store
            .put_checkpoint(&key(object), stored, Some(truncate))
            .await?;
        let address = lock(&self.objects)
            .get(&object)
            .map(|e| e.address.clone())
            .unwrap_or_default();
        {
            let mut tally = lock(&self.stored);
            // Bounded by the objects protected; a server nobody asks keeps
            // one entry per object.
            if tally.len() < MAX_TALLIED || tally.contains_key(&object) {
                let t = tally.entry(object).or_default();
                t.address = address;
                t.checkpoints += 1;
                t.bytes += bytes;
            }
        }
        // The requests it sent before this checkpoint will not be sent
        // again: the objects it sent them to forget their replies.
        if let Ok(checkpoint) =
            postcard::from_bytes::<actogrid_runtime::intercept::Checkpoint>(&state)
        {
            let sent: Vec<(u64, u64)> = {
                let objects = lock(&self.objects);
                checkpoint
                    .sent_seq
                    .into_iter()
                    .filter(|(to, _)| objects.contains_key(to))
                    .collect()
            };
            for (to, next) in sent {
                self.store
                    .forget_replies(&key(to), &key(object), next)
                    .await?;
            }
        }
        Ok(())
    }

    /// Carries out `write` durably: a log entry's position, or 0 for a
    /// reply recorded.
    pub async fn write(&self, write: Write) -> Result<u64, FtError> {
        match write {
            // Written by `incarnation`.
            Write::Log {
                object,
                incarnation,
                entry,
            } => Ok(self
                .store
                .append(&key(object), Incarnation(incarnation), entry)
                .await?
                .0),
            Write::Effect { effect, at, value } => {
                let id = crate::journal::effect_reply_id(&effect);
                self.store
                    .record_reply(&key(effect.object), &id, LogPosition(at), value)
                    .await?;
                Ok(0)
            }
            Write::Replies { object, replies } => self.record_replies(object, replies).await,
        }
    }

    /// Records replies of `object`: (sender, sequence, log position,
    /// reply) of each.
    async fn record_replies(
        &self,
        object: u64,
        replies: Vec<(u64, u64, u64, Vec<u8>)>,
    ) -> Result<u64, FtError> {
        let replies = {
            let objects = lock(&self.objects);
            replies
                .into_iter()
                .map(|(sender, seq, at, reply)| {
                    let id = ReplyId {
                        sender: key(sender),
                        sequence: seq,
                    };
                    // A protected sender recovered from a checkpoint
                    // sends again the requests it made since: their
                    // replies stay until its checkpoint counts them
                    // (see `checkpoint`), whatever this object's log
                    // truncation.
                    let at = if objects.contains_key(&sender) {
                        u64::MAX
                    } else {
                        at
                    };
                    (id, LogPosition(at), reply)
                })
                .collect()
        };
        self.store.record_replies(&key(object), replies).await?;
        Ok(0)
    }

    /// The result journaled for `effect`, if it is recorded.
    pub fn effect(&self, effect: EffectId) -> Option<Vec<u8>> {
        let id = crate::journal::effect_reply_id(&effect);
        self.store.reply(&key(effect.object), &id).ok().flatten()
    }

    /// The reply recorded for request `seq` of `sender` to `object`.
    pub fn reply(&self, object: u64, sender: u64, seq: u64) -> Option<Vec<u8>> {
        let id = ReplyId {
            sender: key(sender),
            sequence: seq,
        };
        self.store.reply(&key(object), &id).ok().flatten()
    }
}

/// How a [`Protection`] reaches its server: directly in one process, or
/// over the wire.
pub trait FtLink: Send + Sync + std::fmt::Debug + 'static {
    /// [`FtServer::open_object`].
    fn open_object(
        &self,
        object: u64,
        address: String,
    ) -> BoxFuture<'_, Result<ObjectState, String>>;
    /// [`FtServer::checkpoint`].
    fn checkpoint(
        &self,
        object: u64,
        reserved: Reserved,
        state: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), String>>;
    /// [`FtServer::write`].
    fn write(&self, write: Write) -> BoxFuture<'_, Result<u64, String>>;
    /// [`FtServer::reply`].
    fn reply(&self, object: u64, sender: u64, seq: u64) -> BoxFuture<'_, Option<Vec<u8>>>;
    /// [`FtServer::effect`].
    fn effect(&self, effect: EffectId) -> BoxFuture<'_, Option<Vec<u8>>>;
    /// [`CicGroup::join`](crate::cic_group::CicGroup::join); a link
    /// that reaches no CIC group says so.
    fn cic_join(
        &self,
        object: u64,
        state: Vec<u8>,
        node: String,
    ) -> BoxFuture<'_, Result<crate::cic_group::Committed, String>> {
        let _ = (object, state, node);
        Box::pin(async { Err("this FT server link reaches no CIC group".to_owned()) })
    }
    /// [`CicGroup::store`](crate::cic_group::CicGroup::store); a link
    /// that reaches no CIC group says so.
    fn cic_store(
        &self,
        object: u64,
        writes: Vec<crate::cic_group::CicWrite>,
        seen: u64,
    ) -> BoxFuture<'_, Result<crate::cic_group::Committed, String>> {
        let _ = (object, writes, seen);
        Box::pin(async { Err("this FT server link reaches no CIC group".to_owned()) })
    }
}

/// The server in this process.
#[derive(Debug)]
struct Direct(Arc<FtServer>);

impl FtLink for Direct {
    fn open_object(
        &self,
        object: u64,
        address: String,
    ) -> BoxFuture<'_, Result<ObjectState, String>> {
        let state = self.0.open_object(object, address);
        Box::pin(async move { Ok(state) })
    }

    fn checkpoint(
        &self,
        object: u64,
        reserved: Reserved,
        state: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.0
                .checkpoint(object, reserved, state)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move { self.0.write(write).await.map_err(|e| e.to_string()) })
    }

    fn reply(&self, object: u64, sender: u64, seq: u64) -> BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.0.reply(object, sender, seq)))
    }

    fn effect(&self, effect: EffectId) -> BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.0.effect(effect)))
    }

    fn cic_join(
        &self,
        object: u64,
        state: Vec<u8>,
        node: String,
    ) -> BoxFuture<'_, Result<crate::cic_group::Committed, String>> {
        Box::pin(self.0.cic.join(object, state, node))
    }

    fn cic_store(
        &self,
        object: u64,
        writes: Vec<crate::cic_group::CicWrite>,
        seen: u64,
    ) -> BoxFuture<'_, Result<crate::cic_group::Committed, String>> {
        Box::pin(self.0.cic.store(object, writes, seen))
    }
}

/// What the agent of one runtime knows of one object it protects.
#[derive(Debug)]
pub(crate) struct Local {
    incarnation: u64,
    next_index: u64,
    /// What its last checkpoint covered.
    covered: u64,
    /// The position its next log entry gets.
    next: u64,
    /// When this runtime last checkpointed it (`None`: not yet).
    checkpointed: Option<Instant>,
    /// Whether it served a request since its last checkpoint.
    dirty: bool,
    /// The request it serves now, and that request's log position.
    pub(crate) serving: Option<(u64, u64, u64)>,
    /// A request could not be made durable: this instance serves nothing
    /// more and takes no checkpoint (its order table counts the request
    /// it dropped), and waits to be replaced by a recovery.
    failed: bool,
}

/// The interceptor of protected nodes (see the [module documentation](self)).
#[derive(Debug)]
pub struct Protection {
    shared: Arc<Shared>,
}

/// What a [`Protection`] shares with the checkpoints it stores in the
/// background.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) link: Arc<dyn FtLink>,
    ttc: Duration,
    pub(crate) objects: Mutex<HashMap<u64, Local>>,
    /// The replies not yet in the store, by object, in the order they
    /// were given, with the log position of their request: a duplicate
    /// that comes meanwhile gets its reply from here. An object's are
    /// written before its checkpoint (a request the checkpoint counts as
    /// served is then answered from the store if it comes again), when it
    /// leaves, and every [`REPLIES_BUFFERED`].
    unrecorded: Mutex<HashMap<u64, Kept>>,
}

/// The replies of one object not yet in the store, in the order they were
/// given: (sender, sequence, log position of the request, encoded
/// [`Reply`]).
#[derive(Debug)]
struct Kept {
    /// Tells this list from one made after it was dropped (a write of
    /// replies ending late forgets nothing of a newer list).
    list: u64,
    /// How many replies were given before the first one here (written
    /// and forgotten).
    written: u64,
    replies: VecDeque<(u64, u64, u64, Vec<u8>)>,
}

impl Kept {
    fn new() -> Kept {
        static LISTS: AtomicU64 = AtomicU64::new(0);
        Kept {
            list: LISTS.fetch_add(1, AtomicOrdering::Relaxed),
            written: 0,
            replies: VecDeque::new(),
        }
    }

    /// Forgets the `count` replies that were here from the `from`th on,
    /// now written (those a concurrent write forgot are gone already).
    fn written(&mut self, from: u64, count: u64) {
        let done = (from + count)
            .saturating_sub(self.written)
            .min(self.replies.len() as u64);
        self.replies.drain(..done as usize);
        self.written += done;
    }
}

/// Replies of one object kept in memory at most: beyond, they are
/// written in the background, in one batch.
pub const REPLIES_BUFFERED: usize = 4096;

impl Protection {
    /// Protection reaching its server through `link`, checkpointing every
    /// `ttc`.
    pub fn new(link: Arc<dyn FtLink>, ttc: Duration) -> Arc<Protection> {
        Arc::new(Protection {
            shared: Arc::new(Shared {
                link,
                ttc,
                objects: Mutex::new(HashMap::new()),
                unrecorded: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Protection reaching a server over the wire, at the endpoint
    /// [`FtServer::serve`] registered.
    pub fn remote(server: FtEndpointProxy, ttc: Duration) -> Arc<Protection> {
        Protection::new(Arc::new(Remote::new(server)), ttc)
    }
}

impl Shared {
    /// Whether `object` is due a checkpoint: before its first request on
    /// this runtime, and at the first boundary after `ttc` once it served
    /// something since.
    fn due(&self, object: u64) -> bool {
        lock(&self.objects).get(&object).is_none_or(|e| {
            !e.failed
                && match e.checkpointed {
                    None => true,
                    Some(at) => e.dirty && at.elapsed() >= self.ttc,
                }
        })
    }

    /// The place of a checkpoint of `object` taken now (which must be
    /// known here).
    fn reserve(&self, object: u64) -> Option<Reserved> {
        let mut objects = lock(&self.objects);
        let e = objects.get_mut(&object)?;
        let index = e.next_index;
        e.next_index += 1;
        let reserved = Reserved {
            incarnation: e.incarnation,
            index,
            covers: e.next,
            truncate: e.covered,
        };
        e.covered = e.next;
        Some(reserved)
    }

    /// Stores a checkpoint taken at `reserved`.
    async fn store(
        &self,
        object: u64,
        checkpoint: actogrid_runtime::intercept::Checkpoint,
        reserved: Reserved,
    ) -> Result<(), String> {
        let state = postcard::to_allocvec(&checkpoint).map_err(|e| e.to_string())?;
        self.record_replies(object).await?;
        self.link.checkpoint(object, reserved, state).await?;
        if let Some(e) = lock(&self.objects).get_mut(&object) {
            e.checkpointed = Some(Instant::now());
            if e.next == reserved.covers {
                // Nothing was logged since it was taken.
                e.dirty = false;
            }
        }
        Ok(())
    }

    /// Writes the replies of `object` kept in memory, in one batch, then
    /// forgets them (those given meanwhile stay).
    async fn record_replies(&self, object: u64) -> Result<(), String> {
        let (list, from, replies) = match lock(&self.unrecorded).get(&object) {
            Some(kept) => (
                kept.list,
                kept.written,
                kept.replies.iter().cloned().collect::<Vec<_>>(),
            ),
            None => return Ok(()),
        };
        if replies.is_empty() {
            return Ok(());
        }
        let count = replies.len() as u64;
        self.link
            .write(Write::Replies { object, replies })
            .await
            .map_err(|e| format!("its replies were not recorded: {e}"))?;
        let mut unrecorded = lock(&self.unrecorded);
        if let Some(kept) = unrecorded.get_mut(&object)
            && kept.list == list
        {
            kept.written(from, count);
            if kept.replies.is_empty() {
                unrecorded.remove(&object);
            }
        }
        Ok(())
    }

    /// Writes the replies of `object` kept in memory, in the background.
    fn record_replies_later(self: &Arc<Self>, object: u64) {
        let shared = self.clone();
        tokio::spawn(async move {
            if let Err(e) = shared.record_replies(object).await {
                tracing::warn!("object {object:#x}: {e}");
            }
        });
    }

    /// Before `delivery`: the object known here, checkpointed if due
    /// (`checkpoint`, taken at the boundary), the request's log entry on
    /// its way. The request is served meanwhile; the hold is done once
    /// the entry is durable, and nothing of the service leaves before.
    async fn protect(
        self: &Arc<Self>,
        delivery: &Delivery<'_>,
        address: String,
        checkpoint: Option<actogrid_runtime::intercept::Checkpoint>,
    ) -> Result<Hold, String> {
        let object = delivery.object;
        let known = lock(&self.objects).get(&object).map(|e| e.failed);
        if known == Some(true) {
            return Err(
                "an earlier request could not be made durable: this instance waits to be recovered"
                    .into(),
            );
        }
        if known.is_none() {
            let state = self.link.open_object(object, address).await?;
            crate::journal::protect(object, self);
            lock(&self.objects).entry(object).or_insert(Local {
                incarnation: state.incarnation,
                next_index: state.next_index,
                covered: state.covered,
                next: state.next,
                checkpointed: None,
                dirty: false,
                serving: None,
                failed: false,
            });
        }
        if let Some(checkpoint) = checkpoint {
            let reserved = self.reserve(object).ok_or("the object is not known here")?;
            self.store(object, checkpoint, reserved).await?;
        }
        self.log(delivery)
    }

    /// The request's log entry on its way, for an object known here; the
    /// hold is done once it is durable.
    fn log(self: &Arc<Self>, delivery: &Delivery<'_>) -> Result<Hold, String> {
        let object = delivery.object;
        let incarnation = match lock(&self.objects).get(&object) {
            Some(e) if e.failed => {
                return Err(
                    "an earlier request could not be made durable: this instance waits to be recovered"
                        .into(),
                );
            }
            Some(e) => e.incarnation,
            None => return Err("the object is not known here".into()),
        };
        let entry = postcard::to_allocvec(&Logged::of(delivery)).map_err(|e| e.to_string())?;
        // Written while the request is served: the body waits for the hold
        // before its next request, so entries are written in serving order
        // and the next boundary knows where this one went. Polled once
        // here, so the write is queued now (a spawned task would wait for
        // a worker, which the method may keep busy).
        let shared = self.clone();
        let mut write: BoxFuture<'static, Result<u64, String>> = Box::pin(async move {
            let write = Write::Log {
                object,
                incarnation,
                entry,
            };
            shared.link.write(write).await
        });
        let queued = write
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        let shared = self.clone();
        let (sender, seq, method) = (delivery.sender, delivery.seq, delivery.method);
        Ok(Hold::new(async move {
            let logged = match queued {
                std::task::Poll::Ready(logged) => logged,
                std::task::Poll::Pending => write.await,
            };
            let mut objects = lock(&shared.objects);
            let e = objects.get_mut(&object);
            match (logged, e) {
                (Ok(position), Some(e)) => {
                    e.next = position + 1;
                    e.dirty = true;
                    e.serving = Some((sender, seq, position));
                    Ok(())
                }
                (Ok(_), None) => Ok(()),
                (Err(why), e) => {
                    if let Some(e) = e {
                        e.failed = true;
                    }
                    // Not durable: nothing of it leaves, and its caller
                    // sends it again where the object is recovered.
                    tracing::error!(
                        object = format_args!("{object:#x}"),
                        method,
                        "a request to a protected object was not logged, so not answered: {why}"
                    );
                    Err(format!("it could not be logged: {why}"))
                }
            }
        }))
    }
}

impl Protection {
    /// A request that could not be logged: not durable, not served; its
    /// caller keeps it and sends it again where the object is recovered.
    fn not_logged(&self, delivery: &Delivery<'_>, why: &str) -> Verdict {
        let object = delivery.object;
        if let Some(e) = lock(&self.shared.objects).get_mut(&object) {
            e.failed = true;
        }
        tracing::error!(
            object = format_args!("{object:#x}"),
            method = delivery.method,
            "a request to a protected object was not logged, so not served: {why}"
        );
        Verdict::Drop
    }
}

impl Interceptor for Protection {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        let shared = &self.shared;
        // Served again by a recovery: in the log already. Services' own
        // objects (a balancer, say) are not the application's state.
        if delivery.replayed || actogrid_technical_services::is_machinery(delivery.type_name) {
            if delivery.replayed {
                crate::journal::protect(delivery.object, shared);
            }
            return Box::pin(async { Verdict::Deliver });
        }
        let object = delivery.object;
        let due = shared.due(object);
        // Needed to open an object not known here yet (which is due).
        let address = if due {
            body.runtime().address().unwrap_or_default().to_owned()
        } else {
            String::new()
        };
        if !due {
            // Known here, no checkpoint due: logged without waiting.
            let verdict = match shared.log(delivery) {
                Ok(hold) => Verdict::DeliverHeld(hold),
                Err(e) => self.not_logged(delivery, &e),
            };
            return Box::pin(std::future::ready(verdict));
        }
        // The state at this boundary, taken here (the body is not shared
        // with the hook's future), stored before the request is logged.
        let checkpoint = Some(body.checkpoint());
        Box::pin(async move {
            let checkpoint = match checkpoint.transpose() {
                Ok(checkpoint) => checkpoint,
                // Never protected, so never served: its caller is told why.
                Err(e) => {
                    tracing::error!(
                        object = format_args!("{object:#x}"),
                        "an object on a protected node cannot be protected: {e}"
                    );
                    return Verdict::Refuse(format!(
                        "it is on a fault-tolerant node but cannot be protected: {e}"
                    ));
                }
            };
            match shared.protect(delivery, address, checkpoint).await {
                Ok(hold) => Verdict::DeliverHeld(hold),
                Err(e) => self.not_logged(delivery, &e),
            }
        })
    }

    fn replied(&self, delivery: &Delivery<'_>, outcome: ServeOutcome, payload: &[u8]) {
        let object = delivery.object;
        crate::journal::served(object, delivery.sender, delivery.seq);
        let at = {
            let mut objects = lock(&self.shared.objects);
            let Some(e) = objects.get_mut(&object) else {
                return;
            };
            match e.serving.take() {
                Some((sender, seq, at)) if sender == delivery.sender && seq == delivery.seq => at,
                _ => return,
            }
        };
        let Ok(reply) = postcard::to_allocvec(&Reply {
            outcome,
            payload: payload.to_vec(),
        }) else {
            return;
        };

        // Recorded later: a reply is needed from the store only for a
        // request sent again once a checkpoint counts it as served, and
        // checkpoints record them first.
        let kept = {
            let mut unrecorded = lock(&self.shared.unrecorded);
            let kept = unrecorded.entry(object).or_insert_with(Kept::new);
            kept.replies
                .push_back((delivery.sender, delivery.seq, at, reply));
            kept.replies.len()
        };
        if kept % REPLIES_BUFFERED == 0 {
            self.shared.record_replies_later(object);
        }
    }

    fn duplicate<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Option<Reply>> {
        Box::pin(async move {
            let id = (delivery.object, delivery.sender, delivery.seq);
            let pending = lock(&self.shared.unrecorded).get(&id.0).and_then(|kept| {
                kept.replies
                    .iter()
                    .rev()
                    .find(|(sender, seq, _, _)| (*sender, *seq) == (id.1, id.2))
                    .map(|(_, _, _, reply)| reply.clone())
            });
            let bytes = match pending {
                Some(bytes) => bytes,
                None => self.shared.link.reply(id.0, id.1, id.2).await?,
            };
            postcard::from_bytes(&bytes).ok()
        })
    }

    fn before_send(&self, outgoing: &mut actogrid_runtime::intercept::Outgoing<'_>) {
        // The object called keeps its reply for a replay of this one, even
        // when it is not protected itself.
        if outgoing.header.is_empty() {
            outgoing
                .header
                .extend_from_slice(crate::keeper::PROTECTED_SENDER);
        }
    }

    fn idle_after(&self) -> Option<Duration> {
        Some(self.shared.ttc)
    }

    fn left(&self, object: u64) {
        lock(&self.shared.objects).remove(&object);
        // Its new home answers duplicates from the store.
        self.shared.record_replies_later(object);
        crate::journal::unprotect(object, &self.shared);
    }

    fn idle(&self, body: &BodyAccess<'_>) {
        let object = body.object();
        let dirty = lock(&self.shared.objects)
            .get(&object)
            .is_some_and(|e| e.dirty && !e.failed);
        if !dirty {
            return;
        }
        // The state now, stored in the background.
        let Ok(checkpoint) = body.checkpoint() else {
            return;
        };
        let Some(reserved) = self.shared.reserve(object) else {
            return;
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(e) = shared.store(object, checkpoint, reserved).await {
                // Tried again once it served more, not every period (an
                // instance a recovery replaced would try forever).
                if let Some(e) = lock(&shared.objects).get_mut(&object) {
                    e.dirty = false;
                }
                tracing::warn!(
                    "object {object:#x}: an idle checkpoint failed (tried again once it serves more): {e}"
                );
            }
        });
    }
}

/// The location service of a server in this process, as a [`Locator`].
#[derive(Debug)]
struct ServerLocator {
    server: Arc<FtServer>,
}

impl Locator for ServerLocator {
    fn locate<'a>(&'a self, object: u64, address: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(self.server.locate(object, address))
    }

    fn lost<'a>(&'a self, object: u64) -> BoxFuture<'a, Option<String>> {
        let why = self.server.lost(object);
        Box::pin(async move { why })
    }
}

/// Servers of this process that runtimes reach over the wire, by name.
fn served() -> &'static Mutex<HashMap<String, Arc<FtServer>>> {
    static SERVED: std::sync::OnceLock<Mutex<HashMap<String, Arc<FtServer>>>> =
        std::sync::OnceLock::new();
    SERVED.get_or_init(Default::default)
}

/// A server's endpoints over the wire (see [`FtServer::serve`]).
#[derive(Debug, Clone)]
pub struct Served {
    /// What protected runtimes log and checkpoint through
    /// ([`Protection::remote`]).
    pub endpoint: FtEndpointProxy,
    /// The location service ([`remote_locator`]): apart, so that callers
    /// waiting for a recovery hold no logging back.
    pub location: FtLocationProxy,
}

impl FtServer {
    /// Serves this server to the runtimes of the deployment from `node`,
    /// registered there under `name` (the endpoint), `name-location` and
    /// `name-watch` (where protected nodes beat, see [`crate::watch`]).
    pub async fn serve(
        self: &Arc<Self>,
        node: &Node,
        name: &str,
    ) -> Result<Served, actogrid_runtime::CallError> {
        let key = format!("{:016x}/{name}", node.runtime().id());
        lock(served()).insert(key.clone(), self.clone());
        let endpoint = FtEndpointProxy::new(node, key.clone()).await?;
        node.register(name, &endpoint).await?;
        let location = FtLocationProxy::new(node, key.clone()).await?;
        node.register(&format!("{name}-location"), &location)
            .await?;
        let watch = FtWatchProxy::new(node, key).await?;
        node.register(&format!("{name}-watch"), &watch).await?;
        Ok(Served { endpoint, location })
    }
}

impl FtServer {
    /// Stops serving the server [`FtServer::serve`]d from `node` under
    /// `name` (its names are unregistered by the caller).
    pub fn withdraw(&self, node: &Node, name: &str) {
        let key = format!("{:016x}/{name}", node.runtime().id());
        lock(served()).remove(&key);
    }
}

fn served_server(key: &str) -> Result<Arc<FtServer>, String> {
    lock(served())
        .get(key)
        .cloned()
        .ok_or_else(|| format!("no FT server `{key}` in this process"))
}

/// A server over the wire (see [`FtServer::serve`]).
#[derive(Debug)]
pub struct FtEndpoint {
    key: String,
}

impl FtEndpoint {
    fn server(&self) -> Result<Arc<FtServer>, String> {
        served_server(&self.key)
    }
}

#[actogrid_runtime::active(crate = actogrid_runtime, internal)]
impl FtEndpoint {
    /// The endpoint of the server registered under `key`.
    pub fn new(key: String) -> Self {
        FtEndpoint { key }
    }

    /// [`FtServer::open_object`].
    pub fn open_object(&self, object: u64, address: String) -> Result<ObjectState, String> {
        Ok(self.server()?.open_object(object, address))
    }

    /// [`FtServer::checkpoint`].
    pub async fn checkpoint(
        &self,
        object: u64,
        reserved: Reserved,
        state: Vec<u8>,
    ) -> Result<(), String> {
        self.server()?
            .checkpoint(object, reserved, state)
            .await
            .map_err(|e| e.to_string())
    }

    /// [`FtServer::reply`].
    pub fn reply(&self, object: u64, sender: u64, seq: u64) -> Option<Vec<u8>> {
        self.server().ok()?.reply(object, sender, seq)
    }

    /// [`FtServer::effect`].
    pub fn effect(&self, effect: EffectId) -> Option<Vec<u8>> {
        self.server().ok()?.effect(effect)
    }

    /// [`CicGroup::join`](crate::cic_group::CicGroup::join).
    pub async fn cic_join(
        &self,
        object: u64,
        state: Vec<u8>,
        node: String,
    ) -> Result<crate::cic_group::Committed, String> {
        self.server()?.cic.join(object, state, node).await
    }

    /// [`CicGroup::store`](crate::cic_group::CicGroup::store).
    pub async fn cic_store(
        &self,
        object: u64,
        writes: Vec<crate::cic_group::CicWrite>,
        seen: u64,
    ) -> Result<crate::cic_group::Committed, String> {
        self.server()?.cic.store(object, writes, seen).await
    }

    /// Each of `writes` at once, so that the store commits them together:
    /// for each, a log entry's position, or 0 for a reply recorded.
    pub async fn write_batch(&self, writes: Vec<Write>) -> Vec<Result<u64, String>> {
        let server = match self.server() {
            Ok(server) => server,
            Err(e) => return writes.iter().map(|_| Err(e.clone())).collect(),
        };
        futures::future::join_all(writes.into_iter().map(|write| {
            let server = server.clone();
            async move { server.write(write).await.map_err(|e| e.to_string()) }
        }))
        .await
    }
}

/// A server's location service over the wire (see [`FtServer::serve`]).
#[derive(Debug)]
pub struct FtLocation {
    key: String,
}

#[actogrid_runtime::active(crate = actogrid_runtime, internal)]
impl FtLocation {
    /// The location service of the server registered under `key`.
    pub fn new(key: String) -> Self {
        FtLocation { key }
    }

    /// Where `object`, which failed at `failed`, is now. Answered at
    /// once: callers ask again while it is recovering (a recovery may need
    /// another object located, so no caller may hold this one).
    pub fn locate(&self, object: u64, failed: String) -> Located {
        match served_server(&self.key) {
            Ok(server) => server.located(object, &failed),
            Err(_) => Located::Unknown,
        }
    }

    /// [`FtServer::lost`].
    pub fn lost(&self, object: u64) -> Option<String> {
        served_server(&self.key).ok()?.lost(object)
    }
}

/// Where protected nodes beat (see [`crate::watch`]), apart from the
/// endpoint so that no beat waits behind the logging.
#[derive(Debug)]
pub struct FtWatch {
    key: String,
}

#[actogrid_runtime::active(crate = actogrid_runtime, internal)]
impl FtWatch {
    /// Where protected nodes beat to the server registered under `key`.
    pub fn new(key: String) -> Self {
        FtWatch { key }
    }

    /// [`FtServer::events_after`].
    pub fn events_after(&self, seen: u64) -> Result<(u64, Vec<crate::watch::WatchEvent>), String> {
        Ok(served_server(&self.key)?.events_after(seen))
    }

    /// [`FtServer::dead_after`].
    pub fn dead_after(&self, seen: u64) -> Result<(u64, Vec<String>), String> {
        let server = served_server(&self.key)?;
        let (all, new) = server.dead_after(usize::try_from(seen).unwrap_or(usize::MAX));
        Ok((all as u64, new))
    }

    /// [`FtServer::beat`]: milliseconds until the next beat, `None` when
    /// the server takes no beats.
    pub fn beat(&self, beat: crate::watch::Beat) -> Result<Option<u64>, String> {
        let period = served_server(&self.key)?.beat(beat)?;
        Ok(period.map(|p| u64::try_from(p.as_millis()).unwrap_or(u64::MAX)))
    }
}

/// Where a protected object is, as the location service says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Located {
    /// Serving at this runtime (`host:port`).
    At(String),
    /// Being recovered: ask again.
    Recovering,
    /// Not protected here, or lost.
    Unknown,
}

/// A server reached over the wire.
#[derive(Debug)]
pub(crate) struct Remote {
    endpoint: FtEndpointProxy,
    /// The log requests of this runtime's protected objects, sent in
    /// batches (see [`batch_logs`]).
    logs: tokio::sync::mpsc::UnboundedSender<PendingLog>,
}

/// A write of a protected runtime to its server, batched with the others
/// (see [`FtEndpoint::write_batch`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Write {
    /// An entry appended to an object's log.
    Log {
        /// The object.
        object: u64,
        /// Its incarnation.
        incarnation: u64,
        /// The encoded [`Logged`].
        entry: Vec<u8>,
    },
    /// The result of a journaled effect, recorded against the request
    /// whose service produced it (see [`crate::journal`]).
    Effect {
        /// Which effect.
        effect: EffectId,
        /// The request's log position (0 for a request served again by a
        /// recovery: the next checkpoint covers it).
        at: u64,
        /// The encoded result.
        value: Vec<u8>,
    },
    /// Replies of one object, recorded together: each with its request's
    /// sender, sequence number and log position, and the encoded
    /// [`Reply`].
    Replies {
        /// The object.
        object: u64,
        /// (sender, sequence, log position, reply) of each.
        replies: Vec<(u64, u64, u64, Vec<u8>)>,
    },
}

/// A write waiting for its batch, and who waits for its result.
type PendingLog = (Write, tokio::sync::oneshot::Sender<Result<u64, String>>);

/// The most entries one batch carries.
const MAX_BATCH: usize = 1024;

/// Sends the log requests of the protected objects of one runtime to the
/// endpoint: whatever queued while a batch was on its way goes in the next
/// one, so that one commit of the store serves many objects.
async fn batch_logs(
    endpoint: FtEndpointProxy,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<PendingLog>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let (writes, waiting): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match endpoint.write_batch(writes).await {
            Ok(results) if results.len() == waiting.len() => {
                for (tx, result) in waiting.into_iter().zip(results) {
                    let _ = tx.send(result.map_err(|e| format!("the FT server: {e}")));
                }
            }
            Ok(_) => {
                for tx in waiting {
                    let _ = tx.send(Err("the FT server answered a batch of another size".into()));
                }
            }
            Err(e) => {
                let e = format!("the FT server: {e}");
                for tx in waiting {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }
}

impl Remote {
    /// Queues `write` for the next batch; its result.
    async fn queue(&self, write: Write) -> Result<u64, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.logs
            .send((write, tx))
            .map_err(|_| "the FT server's link stopped".to_owned())?;
        rx.await
            .map_err(|_| "the FT server's link stopped".to_owned())?
    }

    /// A link to `endpoint`; its batching task runs on the current tokio
    /// runtime.
    pub(crate) fn new(endpoint: FtEndpointProxy) -> Remote {
        let (logs, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch_logs(endpoint.clone(), queue));
        Remote { endpoint, logs }
    }
}

fn remote_error(e: actogrid_runtime::CallError<String>) -> String {
    format!("the FT server: {e}")
}

impl FtLink for Remote {
    fn open_object(
        &self,
        object: u64,
        address: String,
    ) -> BoxFuture<'_, Result<ObjectState, String>> {
        Box::pin(async move {
            self.endpoint
                .open_object(object, address)
                .await
                .map_err(remote_error)
        })
    }

    fn checkpoint(
        &self,
        object: u64,
        reserved: Reserved,
        state: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.endpoint
                .checkpoint(object, reserved, state)
                .await
                .map_err(remote_error)
        })
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(self.queue(write))
    }

    fn effect(&self, effect: EffectId) -> BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(self.remote_effect(effect))
    }

    fn cic_join(
        &self,
        object: u64,
        state: Vec<u8>,
        node: String,
    ) -> BoxFuture<'_, Result<crate::cic_group::Committed, String>> {
        Box::pin(async move {
            self.endpoint
                .cic_join(object, state, node)
                .await
                .map_err(remote_error)
        })
    }

    fn cic_store(
        &self,
        object: u64,
        writes: Vec<crate::cic_group::CicWrite>,
        seen: u64,
    ) -> BoxFuture<'_, Result<crate::cic_group::Committed, String>> {
        Box::pin(async move {
            self.endpoint
                .cic_store(object, writes, seen)
                .await
                .map_err(remote_error)
        })
    }

    fn reply(&self, object: u64, sender: u64, seq: u64) -> BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            match self.endpoint.reply(object, sender, seq).await {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::warn!(
                        "the FT server could not give the reply of object {object:#x} to request #{seq} of {sender:#x}: {e}"
                    );
                    None
                }
            }
        })
    }
}

impl Remote {
    /// [`FtLink::effect`] over the wire.
    pub(crate) async fn remote_effect(&self, effect: EffectId) -> Option<Vec<u8>> {
        match self.endpoint.effect(effect).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("the FT server could not give a journaled result: {e}");
                None
            }
        }
    }
}

/// The location service of the server `server` over the wire, as a
/// [`Locator`] for the runtimes that call protected objects.
pub fn remote_locator(server: FtLocationProxy) -> Arc<dyn Locator> {
    Arc::new(RemoteLocator(server))
}

#[derive(Debug)]
struct RemoteLocator(FtLocationProxy);

impl Locator for RemoteLocator {
    fn locate<'a>(&'a self, object: u64, address: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(ask_location(&self.0, object, address))
    }

    fn lost<'a>(&'a self, object: u64) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move { self.0.lost(object).await.ok().flatten() })
    }
}

/// Asks the location service `server` where `object`, which failed at
/// `address`, lives now, again and again while it recovers.
pub(crate) async fn ask_location(
    server: &FtLocationProxy,
    object: u64,
    address: &str,
) -> Option<String> {
    let mut pause = Duration::from_millis(2);
    loop {
        match server.locate(object, address.to_owned()).await {
            Ok(Located::At(found)) => return Some(found),
            Ok(Located::Unknown) => return None,
            Ok(Located::Recovering) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!("the FT server could not say where object {object:#x} is: {e}");
                return None;
            }
        }
    }
}

/// How long a recovery waits for a node to discard an instance of an
/// object (a rollback in place, or one it may hold of the object being
/// restored).
const DISCARD_WITHIN: Duration = Duration::from_secs(5);

/// Discards `object` on `node` ([`Node::discard`]), given up after
/// [`DISCARD_WITHIN`].
pub(crate) async fn discard_within(node: &Node, object: u64) -> Result<(), String> {
    match tokio::time::timeout(DISCARD_WITHIN, node.discard(object)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {DISCARD_WITHIN:?}")),
    }
}

/// Restores `checkpoint` on `to` serving `log` ([`Node::recover_serving`]),
/// leaving no instance there that the FT server does not know of: one
/// already there (an earlier attempt whose answer was lost, as when the
/// connection to `to` failed under it) is discarded and the restore made
/// again; a restore that fails is followed by a discard on `to`, since it
/// may have taken place there all the same. A later attempt, on `to` or
/// elsewhere, then meets no older instance serving.
pub(crate) async fn restore_on(
    to: &Node,
    checkpoint: actogrid_runtime::intercept::Checkpoint,
    log: Vec<actogrid_runtime::intercept::Logged>,
    replies: Vec<actogrid_runtime::intercept::Replayed>,
) -> Result<(), String> {
    let object = checkpoint.object;
    let discard = || discard_within(to, object);
    let first = to
        .recover_serving(checkpoint.clone(), log.clone(), replies.clone())
        .await
        .map_err(|e| e.to_string());
    let result = match first {
        Err(e) if e.contains("is already hosted here") => {
            tracing::warn!(
                object = format_args!("{object:#x}"),
                node = %to.url(),
                "an instance of the object being recovered serves there already (an earlier attempt's): it is discarded first"
            );
            discard().await?;
            to.recover_serving(checkpoint, log, replies)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        r => r.map(|_| ()),
    };
    if let Err(e) = &result
        && let Err(d) = discard().await
    {
        tracing::debug!(
            object = format_args!("{object:#x}"),
            node = %to.url(),
            "after a failed restore ({e}), no discard there either: {d}"
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::Kept;

    fn kept(given: u64) -> Kept {
        let mut kept = Kept::new();
        for seq in 1..=given {
            kept.replies.push_back((7, seq, seq, Vec::new()));
        }
        kept
    }

    fn seqs(kept: &Kept) -> Vec<u64> {
        kept.replies.iter().map(|r| r.1).collect()
    }

    #[test]
    fn replies_written_by_overlapping_writes_are_each_forgotten_once() {
        // Two writes of the first 3 and the first 5, ending in either order.
        for first_ends in [true, false] {
            let mut k = kept(5);
            k.replies.push_back((7, 6, 6, Vec::new()));
            let (a, b) = ((0, 3), (0, 5));
            let (x, y) = if first_ends { (a, b) } else { (b, a) };
            k.written(x.0, x.1);
            k.written(y.0, y.1);
            assert_eq!(seqs(&k), [6], "first ends first: {first_ends}");
            assert_eq!(k.written, 5);
        }
        // A write of what came after an earlier one.
        let mut k = kept(4);
        k.written(0, 2);
        k.written(2, 2);
        assert!(k.replies.is_empty());
        // A write that ends after the list was emptied and refilled by
        // pushes (still one list): only what it wrote goes.
        let mut k = kept(2);
        k.written(0, 2);
        k.replies.push_back((7, 3, 3, Vec::new()));
        k.written(0, 2);
        assert_eq!(seqs(&k), [3]);
    }

    #[test]
    fn lists_made_one_after_the_other_are_told_apart() {
        assert_ne!(Kept::new().list, Kept::new().list);
    }
}
