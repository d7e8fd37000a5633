//! The FT server's recovery side, with the runtime's hooks driving it:
//! pessimistic message logging of protected objects into the durable
//! [`Store`], the location service callers ask when an object's runtime
//! failed, and the recovery of a failed runtime's objects on another node.
//!
//! This version runs the server in the process of the runtimes it
//! protects (the deployer's, or a test's): [`Protection`] is the
//! interceptor installed on each protected node of those runtimes,
//! [`FtServer::locator`] the [`Locator`] installed on every runtime that
//! calls protected objects, and [`FtServer::runtime_failed`] what the
//! failure detector calls.
//!
//! What each piece does:
//!
//! * **Log, then deliver.** Before a protected object is handed a
//!   request, the request ([`Logged`]) is appended to the object's log in
//!   the store and made durable; a request the store refuses (written by an
//!   incarnation the recovery fenced) is not served.
//! * **Checkpoints at request boundaries**: before the first request a
//!   protected object serves, then at the first boundary after `ttc` once
//!   something was delivered since (also for an idle object). A checkpoint
//!   truncates the log it covers once durable.
//! * **Replies are recorded**, so that a request sent again after its
//!   entry was truncated is answered with the reply it got
//!   ([`Interceptor::duplicate`]).
//! * **Recovery** of the objects a failed runtime hosted: each one's
//!   incarnation is bumped and the store fenced (the old incarnation can
//!   write nothing more); then the object is restored from its newest
//!   checkpoint on the node given, and serves its log first
//!   ([`Node::recover`]).
//! * **Location.** A caller whose call to a protected object failed asks
//!   where the object is; the answer waits for the recovery and names the
//!   runtime that hosts it now. The caller sends its call again, as it was
//!   ([`actogrid_runtime::Runtime::set_locator`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actogrid_runtime::Node;
use actogrid_runtime::intercept::{
    BodyAccess, Delivery, Interceptor, Locator, Logged, Reply, ServeOutcome, Verdict,
};
use futures::future::BoxFuture;
use tokio::sync::watch;

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

/// What the server knows of one protected object.
#[derive(Debug)]
struct Entry {
    /// Its current incarnation (1 at creation, one more per recovery).
    incarnation: Incarnation,
    /// The runtime hosting it (`host:port`).
    address: String,
    /// When this incarnation last checkpointed it (`None`: not yet).
    checkpointed: Option<Instant>,
    /// The index of its next checkpoint.
    next_index: u64,
    /// The position its next log entry gets.
    next: LogPosition,
    /// Whether it served a request since its last checkpoint.
    dirty: bool,
    /// The position of the request it serves now, when that one was
    /// logged by this incarnation (its reply is recorded against it).
    serving: Option<(u64, u64, LogPosition)>,
    /// Being recovered: callers wait.
    recovering: bool,
}

/// A checkpoint's place, decided when it is taken.
#[derive(Debug, Clone, Copy)]
struct Reserved {
    incarnation: Incarnation,
    index: CheckpointIndex,
    /// The log entries before this position are in its state.
    covers: LogPosition,
}

/// The FT server of a deployment (see the [module documentation](self)).
#[derive(Debug)]
pub struct FtServer {
    store: Store,
    ttc: Duration,
    objects: Mutex<HashMap<u64, Entry>>,
    /// Bumped whenever an object's location or recovery state changes.
    changed: watch::Sender<u64>,
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
            store,
            ttc,
            objects: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
        }))
    }

    /// The interceptor to install on every protected node.
    pub fn protection(self: &Arc<Self>) -> Arc<Protection> {
        Arc::new(Protection {
            server: self.clone(),
        })
    }

    /// The locator to install on every runtime that calls protected
    /// objects (see [`actogrid_runtime::Runtime::set_locator`]).
    pub fn locator(self: &Arc<Self>) -> Arc<dyn Locator> {
        Arc::new(ServerLocator {
            server: self.clone(),
        })
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
    /// is recovered on `to`, one after the other. Callers waiting to know
    /// where an object is learn it once that object is recovered.
    pub async fn runtime_failed(&self, address: &str, to: &Node) -> Vec<Result<Recovery, FtError>> {
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
        let mut done = Vec::with_capacity(objects.len());
        for object in objects {
            let result = self.recover(object, to).await;
            if let Err(e) = &result {
                tracing::error!("recovery of object {object:#x} failed: {e}");
                // Callers are told it is gone rather than left waiting.
                lock(&self.objects).remove(&object);
            }
            self.bump();
            done.push(result);
        }
        done
    }

    async fn recover(&self, object: u64, to: &Node) -> Result<Recovery, FtError> {
        let started = Instant::now();
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
        let checkpoint: actogrid_runtime::intercept::Checkpoint =
            postcard::from_bytes(&stored.state).map_err(|e| FtError::Decode {
                object,
                what: format!("checkpoint {}", stored.index.0),
                path: self.path(),
                reason: e.to_string(),
            })?;
        let bounds = self.store.log_bounds(&key)?;
        let count = usize::try_from(bounds.next.0 - bounds.first.0).unwrap_or(usize::MAX);
        let entries = self.store.read_log(&key, bounds.first, count)?;
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
        let address = to.runtime().address().unwrap_or_default().to_owned();
        {
            let mut objects = lock(&self.objects);
            let e = objects.get_mut(&object).expect("listed above");
            e.incarnation = incarnation;
            // Its first boundary there checkpoints it (the log replayed is
            // not in the stored checkpoint).
            e.checkpointed = None;
            e.next_index = stored.index.0 + 1;
            e.next = bounds.next;
            e.dirty = replayed > 0;
            e.serving = None;
        }
        to.recover(checkpoint, log)
            .await
            .map_err(|e| FtError::Restore {
                object,
                node: to.url().to_string(),
                reason: e.to_string(),
            })?;
        {
            let mut objects = lock(&self.objects);
            let e = objects.get_mut(&object).expect("listed above");
            e.address = address;
            e.recovering = false;
        }
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

    /// Where `object`, which failed at `failed`, lives once recovered;
    /// `None` if it is not protected (or its recovery failed).
    async fn locate(&self, object: u64, failed: &str) -> Option<String> {
        let mut changed = self.changed.subscribe();
        loop {
            {
                let objects = lock(&self.objects);
                let e = objects.get(&object)?;
                if !e.recovering && e.address != failed {
                    return Some(e.address.clone());
                }
            }
            changed.changed().await.ok()?;
        }
    }

    /// Whether `object` is due a checkpoint: before its first request,
    /// and at the first boundary after `ttc` once it served something
    /// since.
    fn checkpoint_due(&self, object: u64) -> bool {
        lock(&self.objects)
            .get(&object)
            .is_none_or(|e| match e.checkpointed {
                None => true,
                Some(at) => e.dirty && at.elapsed() >= self.ttc,
            })
    }

    /// What a checkpoint of `object` (hosted at `address`) taken now is:
    /// its incarnation, its index, and the log position it covers up to.
    /// Decided when the state is taken, on the body's task, so that a
    /// checkpoint stored later still truncates only what it covers.
    fn reserve_checkpoint(&self, object: u64, address: String) -> Reserved {
        let mut objects = lock(&self.objects);
        let e = objects.entry(object).or_insert_with(|| Entry {
            incarnation: Incarnation(1),
            address,
            checkpointed: None,
            next_index: 1,
            next: LogPosition(0),
            dirty: false,
            serving: None,
            recovering: false,
        });
        let index = e.next_index;
        e.next_index += 1;
        Reserved {
            incarnation: e.incarnation,
            index: CheckpointIndex(index),
            covers: e.next,
        }
    }

    /// Stores `checkpoint` of `object` durably, and truncates the log it
    /// covers.
    async fn store_checkpoint(
        &self,
        object: u64,
        checkpoint: actogrid_runtime::intercept::Checkpoint,
        reserved: Reserved,
    ) -> Result<(), FtError> {
        let state = postcard::to_allocvec(&checkpoint).map_err(|e| FtError::Decode {
            object,
            what: "its checkpoint".into(),
            path: self.path(),
            reason: e.to_string(),
        })?;
        let stored = crate::store::Checkpoint {
            index: reserved.index,
            incarnation: reserved.incarnation,
            state,
        };
        self.store
            .put_checkpoint(&key(object), stored, Some(reserved.covers))
            .await?;
        if let Some(e) = lock(&self.objects).get_mut(&object)
            && e.next == reserved.covers
        {
            // Nothing was logged since it was taken.
            e.dirty = false;
        }
        if let Some(e) = lock(&self.objects).get_mut(&object) {
            e.checkpointed = Some(Instant::now());
        }
        self.bump();
        Ok(())
    }

    /// Logs `delivery` durably; its position.
    async fn log(&self, delivery: &Delivery<'_>) -> Result<(), FtError> {
        let object = delivery.object;
        let bytes = postcard::to_allocvec(&Logged::of(delivery)).map_err(|e| FtError::Decode {
            object,
            what: "a request".into(),
            path: self.path(),
            reason: e.to_string(),
        })?;
        let incarnation = lock(&self.objects)
            .get(&object)
            .map_or(Incarnation(1), |e| e.incarnation);
        let position = self.store.append(&key(object), incarnation, bytes).await?;
        if let Some(e) = lock(&self.objects).get_mut(&object) {
            e.next = LogPosition(position.0 + 1);
            e.dirty = true;
            e.serving = Some((delivery.sender, delivery.seq, position));
        }
        Ok(())
    }
}

/// The interceptor of protected nodes (see the [module documentation](self)).
#[derive(Debug)]
pub struct Protection {
    server: Arc<FtServer>,
}

impl Interceptor for Protection {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        // Served again by a recovery: in the log already.
        if delivery.replayed {
            return Box::pin(async { Verdict::Deliver });
        }
        let server = &self.server;
        let object = delivery.object;
        // The state at this boundary, taken here (the body is not shared
        // with the hook's future), stored below before the request is
        // logged.
        let address = body.runtime().address().unwrap_or_default().to_owned();
        let checkpoint = server.checkpoint_due(object).then(|| {
            (
                body.checkpoint(),
                server.reserve_checkpoint(object, address),
            )
        });
        Box::pin(async move {
            let logged = async {
                if let Some((checkpoint, reserved)) = checkpoint {
                    let checkpoint = checkpoint.map_err(|e| FtError::Decode {
                        object,
                        what: "its state".into(),
                        path: server.path(),
                        reason: e.to_string(),
                    })?;
                    server
                        .store_checkpoint(object, checkpoint, reserved)
                        .await?;
                }
                server.log(delivery).await
            };
            match logged.await {
                Ok(()) => Verdict::Deliver,
                Err(e) => {
                    // Not durable, not served: its caller keeps it and
                    // sends it again where the object is recovered.
                    tracing::error!(
                        object = format_args!("{object:#x}"),
                        method = delivery.method,
                        "a request to a protected object was not logged, so not served: {e}"
                    );
                    Verdict::Drop
                }
            }
        })
    }

    fn replied(&self, delivery: &Delivery<'_>, outcome: ServeOutcome, payload: &[u8]) {
        let object = delivery.object;
        let at = {
            let mut objects = lock(&self.server.objects);
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
        let id = ReplyId {
            sender: key(delivery.sender),
            sequence: delivery.seq,
        };
        let server = self.server.clone();
        // Recorded in the background: a reply is needed from the store only
        // for a request sent again after a checkpoint truncated its entry.
        tokio::spawn(async move {
            if let Err(e) = server
                .store
                .record_reply(&key(object), &id, at, reply)
                .await
            {
                tracing::warn!("the reply of object {object:#x} was not recorded: {e}");
            }
        });
    }

    fn duplicate(&self, delivery: &Delivery<'_>) -> Option<Reply> {
        let id = ReplyId {
            sender: key(delivery.sender),
            sequence: delivery.seq,
        };
        let bytes = self.server.store.reply(&key(delivery.object), &id).ok()??;
        postcard::from_bytes(&bytes).ok()
    }

    fn idle_after(&self) -> Option<Duration> {
        Some(self.server.ttc)
    }

    fn idle(&self, body: &BodyAccess<'_>) {
        let object = body.object();
        let due = lock(&self.server.objects)
            .get(&object)
            .is_some_and(|e| e.dirty && !e.recovering);
        if !due {
            return;
        }
        // The state now, stored in the background.
        let Ok(checkpoint) = body.checkpoint() else {
            return;
        };
        let address = body.runtime().address().unwrap_or_default().to_owned();
        let reserved = self.server.reserve_checkpoint(object, address);
        let server = self.server.clone();
        tokio::spawn(async move {
            if let Err(e) = server.store_checkpoint(object, checkpoint, reserved).await {
                tracing::warn!("object {object:#x}: an idle checkpoint failed: {e}");
            }
        });
    }
}

/// The location service as a [`Locator`].
#[derive(Debug)]
struct ServerLocator {
    server: Arc<FtServer>,
}

impl Locator for ServerLocator {
    fn locate<'a>(&'a self, object: u64, address: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(self.server.locate(object, address))
    }
}
