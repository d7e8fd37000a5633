//! Nodes: the places active objects live, addressed by
//! `actogrid://host:port/name`.

use std::sync::{Arc, RwLock};

use crate::NodeUrl;
use crate::active::{Active, Proxy};
use crate::codec;
use crate::future::Future;
use crate::intercept::{Checkpoint, Interceptor};
use crate::proxy::ActiveRef;
use crate::runtime::{Control, Runtime};

/// What a runtime keeps about one of its own nodes.
pub(crate) struct NodeInner {
    pub(crate) name: String,
    interceptors: RwLock<Vec<Arc<dyn Interceptor>>>,
    /// Set once an interceptor is installed, so bodies of nodes without
    /// any skip the lock on every request.
    intercepted: std::sync::atomic::AtomicBool,
}

impl NodeInner {
    pub(crate) fn new(name: &str) -> Arc<NodeInner> {
        Arc::new(NodeInner {
            name: name.to_owned(),
            interceptors: RwLock::default(),
            intercepted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn interceptors(&self) -> Vec<Arc<dyn Interceptor>> {
        if !self.intercepted.load(std::sync::atomic::Ordering::Acquire) {
            return Vec::new();
        }
        let list = self.interceptors.read().unwrap_or_else(|p| p.into_inner());
        if list.is_empty() {
            Vec::new()
        } else {
            list.clone()
        }
    }
}

/// A node, local or remote, as seen from this runtime: where active
/// objects are created.
#[derive(Clone)]
pub struct Node {
    runtime: Runtime,
    url: NodeUrl,
    /// Set when the node lives in this runtime.
    local: Option<Arc<NodeInner>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("url", &self.url.to_string())
            .finish()
    }
}

impl Node {
    pub(crate) fn new(runtime: Runtime, url: NodeUrl, local: Option<Arc<NodeInner>>) -> Node {
        Node {
            runtime,
            url,
            local,
        }
    }

    /// The node's URL.
    pub fn url(&self) -> &NodeUrl {
        &self.url
    }

    /// The runtime this handle belongs to (not necessarily the node's).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Whether the node lives in this process.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    pub(crate) fn inner(&self) -> &Arc<NodeInner> {
        self.local
            .as_ref()
            .expect("inner() is only called on local nodes")
    }

    /// Installs an interceptor on every active object of this node
    /// (present and future). Only possible on a local node: services are
    /// applied by the runtime that hosts the node.
    pub fn add_interceptor(&self, interceptor: Arc<dyn Interceptor>) -> crate::Result<()> {
        let Some(local) = &self.local else {
            return Err(crate::Error::Address(format!(
                "{} is not a node of this runtime; interceptors are installed where the node runs",
                self.url
            )));
        };
        local
            .interceptors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(interceptor);
        local
            .intercepted
            .store(true, std::sync::atomic::Ordering::Release);
        self.runtime.note_interceptors();
        Ok(())
    }

    /// Creates an active object from encoded constructor arguments.
    pub(crate) fn create<T: Active>(&self, ctor: T::Ctor) -> Future<T::Proxy> {
        let ctor = match codec::encode_in(&ctor) {
            Ok((bytes, _)) => bytes,
            Err(e) => {
                return Future::failed(
                    crate::future::Status::BadRequest,
                    format!(
                        "constructor arguments of `{}` do not encode: {e}",
                        T::TYPE_NAME
                    ),
                );
            }
        };
        self.runtime.control(
            &self.url,
            Control::Create {
                type_name: T::TYPE_NAME.to_owned(),
                node: self.url.name().to_owned(),
                ctor,
            },
            "create",
        )
    }

    /// Restores an object from a checkpoint on this node, under the id it
    /// had, so existing proxies reach it (recovery, migration).
    pub fn restore(&self, checkpoint: Checkpoint) -> Future<ActiveRef> {
        self.runtime.control(
            &self.url,
            Control::Restore {
                node: self.url.name().to_owned(),
                checkpoint,
                answers: Vec::new(),
            },
            "restore",
        )
    }

    /// Discards object `object` from this node's runtime at once, even in
    /// the middle of a request — what a rollback in place needs before it
    /// restores an earlier checkpoint of the object where it lives, while
    /// the runtime's other objects go on. Resolves `true` if the object
    /// lived there (on whichever of its nodes), `false` if not (nothing to
    /// do). Authorised as [`Node::restore`] is.
    ///
    /// The object's body stops where it stands. The requests it had not
    /// answered — queued, held back, the one it was serving — and those
    /// that come for it until an instance is hosted there again (for the
    /// last 1,024 objects discarded there) are answered as by a dead
    /// runtime (`CallError::NodeDied`, naming that runtime), so callers
    /// that follow recoveries ask where it lives now and send them there.
    /// (A reply that only waited for its request's hold, the service
    /// done, leaves once the hold is: the hold said nothing undoes it.)
    /// It leaves the runtime's tables as on termination (its registered
    /// names, its sequence counters), and the interceptors of its node are
    /// told ([`Interceptor::left`](crate::intercept::Interceptor::left)).
    /// Its id is free again: [`Node::restore`] or [`Node::recover`] of
    /// one of its checkpoints there starts a new instance, which nothing
    /// of the old one touches.
    ///
    /// A method the object was running is stopped where it next waits
    /// (an `async` method's `.await`). One that computes without waiting
    /// (a synchronous method, on its executor thread or handed to another
    /// one) cannot be stopped: it runs to its end, on that thread, but
    /// nothing of it leaves — its calls and one-way sends fail (they are
    /// not sent), its reply is not given, its caller gets `NodeDied`
    /// once it ends. Requests it sent before the discard may still arrive
    /// at their objects afterwards, as any request in flight; what it
    /// does besides sending requests (objects it creates, files, outside
    /// services, tasks it spawned) is not undone. One blocked in a send
    /// that waits for its request's hold
    /// ([`Verdict::DeliverHeld`](crate::intercept::Verdict::DeliverHeld))
    /// waits for that hold.
    pub fn discard(&self, object: u64) -> Future<bool> {
        self.runtime.control(
            &self.url,
            Control::Discard {
                node: self.url.name().to_owned(),
                object,
            },
            "discard",
        )
    }

    /// Restores `checkpoint` on this node, like [`Node::restore`], and has
    /// the object serve `log` — the requests it was sent after the
    /// checkpoint, in the order it served them — before anything else:
    /// requests that arrive meanwhile wait. Resolves once the log was
    /// served, with how each of its requests was answered; a request of
    /// the log sent again later by its caller gets that same answer, and
    /// is not served twice. For fault-tolerance services, which log
    /// requests with an [`Interceptor`](crate::intercept::Interceptor)
    /// ([`Logged::of`](crate::intercept::Logged::of)).
    pub fn recover(
        &self,
        checkpoint: Checkpoint,
        log: Vec<crate::intercept::Logged>,
    ) -> Future<crate::intercept::Recovered> {
        self.recover_answering(checkpoint, log, Vec::new())
    }

    /// [`Node::recover`], with the replies of requests the checkpoint
    /// counts as served (a fault-tolerance service's reply log): a late
    /// copy of one of them — its caller sending it again because the
    /// reply was lost with the object's runtime — gets that reply.
    pub fn recover_answering(
        &self,
        checkpoint: Checkpoint,
        log: Vec<crate::intercept::Logged>,
        replies: Vec<crate::intercept::Replayed>,
    ) -> Future<crate::intercept::Recovered> {
        self.recover_with(checkpoint, log, replies, false)
    }

    /// [`Node::recover_answering`], answered as soon as the object is
    /// restored and serves its log (its `replies` then empty), instead of
    /// once it served it: callers may be told where it lives while it
    /// replays — a logged request's caller sends it again, and with it the
    /// values of the futures it passed. [`Node::replayed`] then tells how
    /// the log was answered.
    pub fn recover_serving(
        &self,
        checkpoint: Checkpoint,
        log: Vec<crate::intercept::Logged>,
        replies: Vec<crate::intercept::Replayed>,
    ) -> Future<crate::intercept::Recovered> {
        self.recover_with(checkpoint, log, replies, true)
    }

    fn recover_with(
        &self,
        checkpoint: Checkpoint,
        log: Vec<crate::intercept::Logged>,
        replies: Vec<crate::intercept::Replayed>,
        serving: bool,
    ) -> Future<crate::intercept::Recovered> {
        self.runtime.control(
            &self.url,
            Control::Recover {
                node: self.url.name().to_owned(),
                checkpoint,
                log,
                replies,
                serving,
            },
            "recover",
        )
    }

    /// How the log of `object`, recovered on this node's runtime with
    /// [`Node::recover_serving`], was answered: once every logged request
    /// was. Asked once.
    pub fn replayed(&self, object: u64) -> Future<Vec<crate::intercept::Replayed>> {
        self.runtime
            .control(&self.url, Control::Replayed { object }, "replayed")
    }

    /// Registers `proxy` under `name` on this node's runtime, so any
    /// process can look it up at `actogrid://host:port/name`:
    /// [`Node::url_of`] gives that URL.
    ///
    /// ```ignore
    /// node.register("journal", &journal).await?;
    /// let url = node.url_of("journal"); // hand it to other programs
    /// ```
    pub fn register<P: Proxy>(&self, name: &str, proxy: &P) -> Future<()> {
        self.runtime.control(
            &self.url,
            Control::Register {
                name: name.to_owned(),
                object: proxy.active_ref().to_wire(),
            },
            "register",
        )
    }

    /// The URL under which `name` is (or would be) registered on this
    /// node's runtime by [`Node::register`]: `actogrid://host:port/name`,
    /// with the runtime's address. Names belong to the runtime, so the
    /// node's own name plays no part.
    pub fn url_of(&self, name: &str) -> NodeUrl {
        NodeUrl::new(self.url.host(), self.url.port(), name)
    }

    /// Removes a name registered on this node's runtime.
    pub fn unregister(&self, name: &str) -> Future<()> {
        self.runtime.control(
            &self.url,
            Control::Unregister {
                name: name.to_owned(),
            },
            "unregister",
        )
    }
}
