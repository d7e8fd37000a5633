//! The runtime: one per process (or per simulated host). It hosts nodes
//! and their active objects, serves the wire, keeps one connection per
//! remote runtime, and routes every call, reply and future value.

use std::collections::HashMap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::NodeUrl;
use crate::active::{self, Proxy};
use crate::body::{Body, Inbound, Mailbox, Order};
use crate::codec::{self, Encode};
use crate::connection::{Batched, Conn, Pending, ReplyTo, Retained};
use crate::error::{CallError, Error, Result};
use crate::future::{CallSite, Future, FutureId, FutureTable, Outcome, Slot, Status, serving};
use crate::ids::IdMap;
use crate::intercept::{Checkpoint, Outgoing};
use crate::node::{Node, NodeInner};
use crate::proxy::{ActiveRef, CallInfo, RefWire, RouteCache};
use crate::sender::Credentials;
use crate::wire::{
    self, FLAG_FORWARDED, FLAG_IMMEDIATE, FLAG_MIGRATE, FLAG_REPLAYED, FLAG_TERMINATE, RequestHead,
};

/// HTTP/2 flow-control window of the one stream between two runtimes:
/// every call between them shares it, so the 64 KiB default would stall a
/// pipelining caller long before the network does.
const STREAM_WINDOW: u32 = 8 << 20;

/// HTTP/2 flow-control window of a connection: room for both of its
/// streams (calls each way), so that one that is not read (a full queue)
/// never holds back the other.
const CONNECTION_WINDOW: u32 = 2 * STREAM_WINDOW;

/// Streams one connection may have open at once: the wire uses two (calls
/// from the runtime that opened it, and calls back to it).
const MAX_STREAMS: u32 = 16;

/// Largest block of HTTP/2 headers accepted: the wire sends a few.
const MAX_HEADERS: u32 = 16 << 10;

/// Control requests (creations, lookups…) of one connection served at
/// once; more are refused.
const MAX_CONTROLS: usize = 1024;

pub use crate::config::Config;

static GLOBAL: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();

/// Every runtime of the process, by index: decoded values name their
/// runtime by index, so plain values are decoded without touching a
/// runtime's reference count (a cache line shared by every thread).
static REGISTRY: RwLock<Vec<std::sync::Weak<Inner>>> = RwLock::new(Vec::new());

/// A runtime, named by its index in the process (see `REGISTRY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RtRef(u32);

impl RtRef {
    /// The runtime, while it lives.
    pub(crate) fn get(self) -> Option<Runtime> {
        REGISTRY
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(self.0 as usize)
            .and_then(std::sync::Weak::upgrade)
            .map(Runtime::from_inner)
    }
}

/// The runtime code is running in: the one serving the current request
/// inside an active object, else the process's global runtime (set by
/// `#[actogrid::main]` or [`Runtime::make_global`]).
pub fn current() -> Option<Runtime> {
    serving()
        .and_then(|s| s.runtime.get())
        .or_else(|| GLOBAL.get().cloned())
}

/// A byte stream to another runtime.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Opens byte streams to other runtimes. The default dials TCP; tests and
/// simulations inject their own.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `address` (`host:port`).
    fn connect(&self, address: &str) -> BoxFuture<'static, io::Result<Box<dyn Io>>>;
}

/// Dials TCP with `TCP_NODELAY`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, address: &str) -> BoxFuture<'static, io::Result<Box<dyn Io>>> {
        let address = address.to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&address).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}

/// Admits runtimes that enroll: a deployer checks their one-time
/// tickets (see `Runtime::set_enroller`).
pub trait Enroller: Send + Sync + 'static {
    /// A runtime that reached this one from `peer` presents `ticket` and
    /// asks for a certificate as runtime `id`: `Ok` admits it (and spends
    /// the ticket), `Err` says why not.
    fn admit(&self, ticket: &str, id: u64, peer: &str) -> std::result::Result<(), String>;
}

/// Builds a [`Runtime`].
pub struct Builder {
    config: Config,
    address: Option<String>,
    connector: Arc<dyn Connector>,
    identity: Option<crate::tls::Identity>,
    link: Option<crate::tls::Link>,
}

impl Builder {
    /// Sets timeouts and intervals.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The `host:port` other runtimes reach this one at. Without it the
    /// runtime can call others but its objects are reachable only from
    /// itself.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// How connections to other runtimes are opened.
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Arc::new(connector);
        self
    }

    /// Its credentials. Without, it gets a certificate of its process's
    /// authority (see [`crate::tls`]): it talks to the runtimes of this
    /// process and to those they start, and to no one else.
    pub fn identity(mut self, identity: crate::tls::Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The connection its identity was enrolled on (see
    /// [`Identity::enroll_linked`](crate::Identity::enroll_linked)): it
    /// becomes the runtime's connection to the runtime that enrolled it.
    pub fn link(mut self, link: crate::tls::Link) -> Self {
        self.link = Some(link);
        self
    }

    /// Builds the runtime. Must be called inside a tokio runtime.
    ///
    /// # Panics
    /// When no identity was given and this process cannot make a key
    /// (its random number generator fails).
    pub fn build(self) -> Runtime {
        let (identity, id, key) = match self.identity {
            Some(identity) => match identity.runtime_id() {
                Some(id) => (identity, id, None),
                // No certificate names its id (a pool's peer): the id is
                // its key's, and it proves it like an object (see `sender`).
                None if !identity.is_plaintext() => {
                    let key = crate::sender::SenderKey::generate(true)
                        .unwrap_or_else(|e| panic!("cannot make this runtime's key: {e}"));
                    (identity, key.id(), Some(Arc::new(key)))
                }
                None => (identity, crate::ids::runtime_id(), None),
            },
            None => {
                let id = crate::ids::runtime_id();
                let identity = crate::tls::Identity::default_for(id)
                    .unwrap_or_else(|e| panic!("cannot make this runtime's certificate: {e}"));
                (identity, id, None)
            }
        };
        let handle = tokio::runtime::Handle::current();
        let connections = Arc::new(crate::accept::Tracker::new(self.config.max_connections));
        let mut registry = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
        let index = RtRef(registry.len() as u32);
        let inner = Arc::new(Inner {
            index,
            id,
            address: self.address,
            object_stats: AtomicBool::new(self.config.object_stats),
            moves: tokio::sync::broadcast::channel(MOVES_KEPT).0,
            config: self.config,
            futures: FutureTable::new(id),
            replays: Mutex::default(),
            holds: Mutex::default(),
            objects: RwLock::default(),
            names: RwLock::default(),
            nodes: Mutex::default(),
            peers: Mutex::default(),
            locations: RwLock::default(),
            any_moved: AtomicBool::new(false),
            seqs: Mutex::default(),
            interceptors: AtomicBool::new(false),
            inline: crate::compute::Inline::for_executor(&handle),
            secured: !identity.is_plaintext(),
            identity,
            key,
            enroller: RwLock::new(None),
            relayed: Mutex::new(std::collections::HashSet::new()),
            connections,
            space: tokio::sync::Notify::new(),
            connector: self.connector,
            handle,
            shutdown: CancellationToken::new(),
            locator: OnceLock::new(),
            discarded: Mutex::default(),
            discarding: AtomicUsize::new(0),
            gone: Mutex::default(),
        });
        registry.push(Arc::downgrade(&inner));
        drop(registry);
        let rt = Runtime { inner };
        if let Some(link) = self.link {
            rt.adopt_link(link);
        }
        rt
    }
}

/// An actogrid runtime. Cheap to clone: clones share the runtime.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("id", &format_args!("{:#x}", self.inner.id))
            .field("address", &self.inner.address)
            .finish()
    }
}

pub(crate) struct Inner {
    index: RtRef,
    id: u64,
    address: Option<String>,
    config: Config,
    futures: Arc<FutureTable>,
    /// How the logs of objects recovered here with
    /// [`Node::recover_serving`](crate::Node::recover_serving) were
    /// answered, until asked for (`Node::replayed`).
    replays: Mutex<IdMap<u64, tokio::sync::oneshot::Receiver<Vec<crate::intercept::Replayed>>>>,
    /// The hold of each object serving a request speculatively
    /// ([`Verdict::DeliverHeld`](crate::intercept::Verdict::DeliverHeld)),
    /// and whether the object sent something while it was not done.
    holds: Mutex<IdMap<u64, (crate::intercept::Hold, bool)>>,
    objects: RwLock<IdMap<u64, Hosted>>,
    /// Registered names: the object, and who registered it (a runtime id).
    names: RwLock<HashMap<String, (RefWire, u64)>>,
    nodes: Mutex<HashMap<String, Arc<NodeInner>>>,
    peers: Mutex<HashMap<String, Arc<Conn>>>,
    /// Where objects that migrated away now live (the location cache).
    locations: RwLock<IdMap<u64, String>>,
    any_moved: AtomicBool,
    /// Next sequence number per (sender, target).
    seqs: Mutex<IdMap<(u64, u64), Arc<AtomicU64>>>,
    /// Whether any node has interceptors (skips a lookup per call if not).
    interceptors: AtomicBool,
    /// How synchronous user code runs (see `compute`).
    inline: crate::compute::Inline,
    /// Whether objects count what they serve (see `stats`).
    object_stats: AtomicBool,
    /// Objects that moved away from here (see [`Runtime::moves`]).
    moves: tokio::sync::broadcast::Sender<ObjectMoved>,
    /// Its credentials and whom it trusts.
    identity: crate::tls::Identity,
    /// Whether it speaks TLS: its objects then have keys (see `sender`).
    secured: bool,
    /// The key its id is derived from, when no certificate names its id.
    key: Option<Arc<crate::sender::SenderKey>>,
    /// Who admits runtimes that enroll here (a deployer).
    enroller: RwLock<Option<Arc<dyn Enroller>>>,
    /// Runtimes whose connections come through a relay (see
    /// [`Runtime::trust_relayed`]).
    relayed: Mutex<std::collections::HashSet<u64>>,
    /// Connections accepted and their limits.
    connections: Arc<crate::accept::Tracker>,
    /// Signalled when a queue that a paused connection waits on drains.
    space: tokio::sync::Notify,
    connector: Arc<dyn Connector>,
    handle: tokio::runtime::Handle,
    shutdown: CancellationToken,
    /// Where objects whose runtime failed live now (a fault-tolerance
    /// service's): with one, calls are kept until answered and sent again
    /// there instead of failing.
    locator: OnceLock<Arc<dyn crate::intercept::Locator>>,
    /// The instances (see `Mailbox::instance`) of objects discarded here
    /// whose bodies' tasks have not ended yet: a method of theirs that
    /// still runs sends nothing (see [`Runtime::discard_here`]).
    discarded: Mutex<Vec<u64>>,
    /// How many `discarded` holds: sends look there only when some are.
    discarding: AtomicUsize,
    /// Objects discarded here and not hosted here again since, most recent
    /// last (at most [`GONE_KEPT`]): requests that still come for them are
    /// answered as by a dead runtime, not as for an unknown object.
    gone: Mutex<std::collections::VecDeque<u64>>,
}

/// How many discarded objects a runtime remembers (see `Inner::gone`).
const GONE_KEPT: usize = 1024;

enum Hosted {
    Here {
        mailbox: Arc<Mailbox>,
        node: Arc<NodeInner>,
        type_name: &'static str,
        /// Peers of the overlay's pool may call it.
        pool: bool,
        credentials: Arc<Credentials>,
        /// Stops its body's task where it stands (see
        /// [`Runtime::discard_here`]).
        abort: futures::future::AbortHandle,
    },
    /// It moved there; this runtime forwards what still comes here.
    Moved {
        address: String,
        credentials: Arc<Credentials>,
    },
}

/// How a body starts: its ordering table, its sending counters (a
/// restored object's), its credentials and the log it serves first.
struct Start<'a> {
    order: Order,
    sent: Option<&'a [(u64, u64)]>,
    credentials: Credentials,
    replay: crate::body::Replay,
}

/// An active object living in this runtime, as [`Runtime::hosted_on`]
/// lists it.
#[derive(Debug, Clone)]
pub struct HostedObject {
    /// A reference to it (its proxy's core).
    pub reference: ActiveRef,
    /// Its registered type name.
    pub type_name: &'static str,
    /// Requests waiting in its queue.
    pub queued: usize,
}

/// Moves a subscriber of [`Runtime::moves`] may fall behind by before it
/// misses some.
const MOVES_KEPT: usize = 1024;

/// An active object that moved from a node of this runtime to another
/// node (see [`Runtime::moves`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMoved {
    /// Its id.
    pub object: u64,
    /// Its registered type name.
    pub type_name: &'static str,
    /// The node it left (`actogrid://host:port/name`).
    pub from: String,
    /// The node it lives on now.
    pub to: String,
    /// Bytes of its state as it travelled.
    pub state_bytes: usize,
}

/// What an active object counted about itself (see the `object_stats`
/// setting). Figures are published by the object between requests: at
/// most a few hundred requests behind, exact when it is idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStats {
    /// Requests it served here.
    pub served: u64,
    /// Who sent them: (sender id, requests), a sender being an active
    /// object's id or a runtime's ([`Runtime::id`]: calls made outside any
    /// object). The first 256 senders are counted apart.
    pub callers: Vec<(u64, u64)>,
    /// Requests from the senders beyond the first 256.
    pub other_callers: u64,
    /// Bytes of its state, encoded, when last measured (objects that
    /// serialize; measured while idle, at most every 2 s, when asked).
    pub state_bytes: Option<u64>,
}

/// An active object living in this runtime, as
/// [`Runtime::objects_here`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHere {
    /// Its id.
    pub id: u64,
    /// The name of its node.
    pub node: String,
    /// Its registered type name.
    pub type_name: &'static str,
    /// Requests waiting in its queue.
    pub queued: usize,
    /// What it counted since it came to this runtime, when the
    /// `object_stats` setting is on and it served a request since (or
    /// was asked for figures and idle).
    pub stats: Option<ObjectStats>,
}

/// Who made a control request.
pub(crate) enum Caller {
    /// This runtime itself.
    Local,
    /// The other end of a connection.
    Remote(crate::tls::Principal),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Local => f.write_str("this runtime"),
            Caller::Remote(p) => p.fmt(f),
        }
    }
}

impl Caller {
    fn is_member(&self) -> bool {
        match self {
            Caller::Local => true,
            Caller::Remote(p) => p.is_member(),
        }
    }

    fn runtime_id(&self) -> Option<u64> {
        match self {
            Caller::Remote(crate::tls::Principal::Runtime(id)) => Some(*id),
            _ => None,
        }
    }

    /// Whether it may make `control` on `rt`; why not otherwise.
    fn may(&self, control: &Control, rt: &Runtime) -> std::result::Result<(), String> {
        if let Caller::Local = self {
            return Ok(());
        }
        match control {
            Control::Lookup { .. } => Ok(()),
            _ if !self.is_member() => Err(format!(
                "only runtimes of this deployment may create, restore, discard or register here, \
                 not {self}"
            )),
            Control::Create { type_name, .. }
            | Control::Restore {
                checkpoint: crate::intercept::Checkpoint { type_name, .. },
                ..
            }
            | Control::Recover {
                checkpoint: crate::intercept::Checkpoint { type_name, .. },
                ..
            } if active::registered(type_name).is_some_and(|t| t.internal) => {
                Err(format!("`{type_name}` is created by its own runtime only"))
            }
            // As dangerous as a restore (it ends an object's life here):
            // the same rule.
            Control::Discard { object, .. } => match rt.type_of(*object) {
                Some(type_name) if active::registered(type_name).is_some_and(|t| t.internal) => {
                    Err(format!(
                        "`{type_name}` object {object:#x} is removed by its own runtime only"
                    ))
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// Requests to a runtime itself (target 0).
#[derive(Serialize, Deserialize)]
pub(crate) enum Control {
    Create {
        type_name: String,
        node: String,
        ctor: Vec<u8>,
    },
    Restore {
        node: String,
        checkpoint: Checkpoint,
        /// Replies to requests the object served since a recovery, for
        /// their late copies: they follow it when it moves.
        answers: Vec<crate::intercept::Replayed>,
    },
    /// A restore that serves a log first (see `Node::recover`).
    Recover {
        node: String,
        checkpoint: Checkpoint,
        log: Vec<crate::intercept::Logged>,
        /// Replies to requests the checkpoint counts, for their late copies.
        replies: Vec<crate::intercept::Replayed>,
        /// Answered once the object serves its log, not once it served it
        /// (`Node::recover_serving`).
        serving: bool,
    },
    /// How the log of an object recovered with `serving` was answered,
    /// once it was (`Node::replayed`).
    Replayed {
        object: u64,
    },
    Register {
        name: String,
        object: RefWire,
    },
    Unregister {
        name: String,
    },
    Lookup {
        name: String,
    },
    /// Removes an object from the runtime at once (`Node::discard`).
    /// Last, so the variants before keep their numbers on the wire.
    Discard {
        /// The node it was addressed to (it is discarded whichever node of
        /// the runtime hosts it).
        node: String,
        /// Its id.
        object: u64,
    },
}

impl Runtime {
    /// Makes this the process's global runtime (see [`current`]); returns
    /// `false` if one was already set.
    pub fn make_global(&self) -> bool {
        GLOBAL.set(self.clone()).is_ok()
    }

    /// Starts building a runtime.
    pub fn builder() -> Builder {
        Builder {
            config: Config::default(),
            address: None,
            connector: Arc::new(TcpConnector),
            identity: None,
            link: None,
        }
    }

    /// Binds `address`, and serves on it until [`Runtime::shutdown`]. The
    /// advertised address is the bound one (so bind a reachable address,
    /// not `0.0.0.0`, or use the builder).
    pub async fn bind(address: impl tokio::net::ToSocketAddrs, config: Config) -> Result<Runtime> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(Error::Listener)?;
        let local = listener.local_addr().map_err(Error::Listener)?;
        let rt = Runtime::builder()
            .config(config)
            .address(local.to_string())
            .build();
        let server = rt.clone();
        rt.spawn(async move {
            if let Err(e) = server.serve(listener, std::future::pending()).await {
                tracing::error!("runtime server stopped: {e}");
            }
        });
        Ok(rt)
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Runtime {
        Runtime { inner }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// This runtime's index, for values decoded in it.
    pub(crate) fn handle(&self) -> RtRef {
        self.inner.index
    }

    pub(crate) fn futures(&self) -> &Arc<FutureTable> {
        &self.inner.futures
    }

    /// Its settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn inline(&self) -> &crate::compute::Inline {
        &self.inner.inline
    }

    /// The address other runtimes reach this one at.
    pub fn address(&self) -> Option<&str> {
        self.inner.address.as_deref()
    }

    /// This runtime's id (also the sender id of calls made outside any
    /// active object).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Its credentials.
    pub fn identity(&self) -> &crate::tls::Identity {
        &self.inner.identity
    }

    /// Makes this runtime accept enrollments: runtimes with a one-time
    /// ticket and no certificate yet get one of its authority when
    /// `enroller` admits them. Needs an identity that can issue.
    pub fn set_enroller(&self, enroller: Arc<dyn Enroller>) {
        *self
            .inner
            .enroller
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(enroller);
    }

    /// Runtime `id` reaches this one through a relay (a forwarder on a
    /// cluster's front-end, an ssh tunnel): its connections come from the
    /// relay's address, not its own, so the address it says it serves at
    /// is believed without that check. Only for runtimes this one started
    /// behind such a relay itself; any other runtime's claim must come
    /// from the address it claims.
    pub fn trust_relayed(&self, id: u64) {
        self.inner
            .relayed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }

    /// Whether runtime `id` was said to come through a relay.
    fn is_relayed(&self, id: u64) -> bool {
        self.inner
            .relayed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// What this runtime says, when it opens a stream, of the address it
    /// serves at: only a runtime with a runtime's certificate says it (the
    /// other end believes no one else).
    fn reachable_at(&self) -> Option<tonic::metadata::AsciiMetadataValue> {
        if !matches!(
            self.inner.identity.principal(),
            crate::tls::Principal::Runtime(_)
        ) {
            return None;
        }
        self.address()?.parse().ok()
    }

    pub(crate) fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.handle.spawn(fut);
    }

    /// Serves the wire on `listener` until `shutdown` completes or
    /// [`Runtime::shutdown`] is called. Connections are accepted within
    /// the limits of [`Config`] (`max_connections`, `handshake_timeout`).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<()> {
        let stop = self.inner.shutdown.child_token();
        let (sink, incoming) = tokio::sync::mpsc::channel(64);
        let accepting = crate::accept::accept_loop(
            listener,
            self.inner.connections.clone(),
            sink,
            self.inner.config.handshake_timeout,
            self.inner.identity.server_config(),
            stop.clone().cancelled_owned(),
        );
        self.spawn(accepting);
        self.serve_until(incoming, stop, shutdown).await
    }

    /// Serves the wire on any stream of accepted connections (in-memory
    /// transports, simulations), within the same limits as
    /// [`Runtime::serve`].
    pub async fn serve_incoming<I, IO, IE>(
        &self,
        incoming: I,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<()>
    where
        I: futures::Stream<Item = std::result::Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        IE: std::fmt::Display,
    {
        let stop = self.inner.shutdown.child_token();
        let (sink, accepted) = tokio::sync::mpsc::channel(64);
        let tracker = self.inner.connections.clone();
        let handshake = self.inner.config.handshake_timeout;
        let tls = self.inner.identity.server_config();
        let until = stop.clone();
        self.spawn(async move {
            let mut incoming = std::pin::pin!(incoming.take_until(until.cancelled_owned()));
            while let Some(next) = incoming.next().await {
                match next {
                    Ok(io) => crate::accept::admit(
                        &tracker,
                        &sink,
                        Box::new(io),
                        "a client".to_owned(),
                        None,
                        handshake,
                        tls.clone(),
                    ),
                    Err(e) => tracing::debug!("accepting a connection failed: {e}"),
                }
            }
        });
        self.serve_until(accepted, stop, shutdown).await
    }

    /// Serves what `incoming` brings until `stop` is cancelled or `shutdown`
    /// completes (which cancels `stop`, ending the accepting side too).
    async fn serve_until(
        &self,
        incoming: tokio::sync::mpsc::Receiver<crate::accept::Accepted>,
        stop: CancellationToken,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<()> {
        let served = self.serve_accepted(incoming, stop.clone());
        tokio::pin!(served);
        let result = tokio::select! {
            r = &mut served => r,
            () = shutdown => {
                stop.cancel();
                served.await
            }
        };
        stop.cancel();
        result
    }

    /// The HTTP/2 server over admitted connections.
    async fn serve_accepted(
        &self,
        incoming: tokio::sync::mpsc::Receiver<crate::accept::Accepted>,
        stop: CancellationToken,
    ) -> Result<()> {
        let config = &self.inner.config;
        let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming)
            .map(Ok::<_, std::convert::Infallible>);
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(config.heartbeat_interval))
            .http2_keepalive_timeout(Some(config.heartbeat_timeout))
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
            // One stream carries everything between two runtimes; a few
            // more are tolerated, not thousands.
            .max_concurrent_streams(Some(MAX_STREAMS))
            .http2_max_header_list_size(Some(MAX_HEADERS))
            .http2_max_pending_accept_reset_streams(Some(MAX_STREAMS as usize))
            .add_service(
                wire::wire_server::WireServer::new(WireService { rt: self.clone() })
                    .max_decoding_message_size(config.max_message_size)
                    .max_encoding_message_size(config.max_message_size),
            )
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
            .map_err(|e| Error::Address(format!("the runtime's server failed: {e}")))
    }

    /// Resolves once [`Runtime::shutdown`] was called (at once if it was):
    /// for tasks that live as long as the runtime.
    pub fn shut_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inner.shutdown.clone().cancelled_owned()
    }

    /// Stops serving, stops every local object and drops every
    /// connection (their pending calls fail).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let objects = std::mem::take(
            &mut *self
                .inner
                .objects
                .write()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (_, hosted) in objects {
            if let Hosted::Here { mailbox, .. } = hosted {
                mailbox.stop();
            }
        }
        let peers: Vec<_> = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        for conn in peers {
            conn.fail("this runtime shut down".into());
        }
        self.inner.connections.kill_all();
    }

    /// The node `name` of this runtime, created on first use.
    pub fn local_node(&self, name: &str) -> Node {
        let inner = self
            .inner
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_insert_with(|| NodeInner::new(name))
            .clone();
        let (host, port) = split_address(self.address().unwrap_or("localhost:0"));
        Node::new(self.clone(), NodeUrl::new(host, port, name), Some(inner))
    }

    /// A node anywhere, by URL.
    pub fn node(&self, url: &NodeUrl) -> Node {
        if self.is_own(url) {
            return self.local_node(url.name());
        }
        Node::new(self.clone(), url.clone(), None)
    }

    fn is_own(&self, url: &NodeUrl) -> bool {
        self.address()
            .is_some_and(|a| split_address(a) == (url.host(), url.port()))
    }

    /// Binds a proxy decoded outside any runtime to this one.
    pub fn adopt<P: Proxy>(&self, proxy: &P) -> P {
        P::from_ref(ActiveRef::from_wire(
            proxy.active_ref().to_wire(),
            Some(self.clone()),
        ))
    }

    /// Looks up the object registered at `url` (`actogrid://host:port/name`).
    pub async fn lookup<P: Proxy>(&self, url: &NodeUrl) -> Result<P> {
        let found: Option<RefWire> = self
            .control(
                url,
                Control::Lookup {
                    name: url.name().to_owned(),
                },
                "lookup",
            )
            .await?;
        let Some(wire) = found else {
            return Err(Error::Address(format!("nothing is registered at {url}")));
        };
        let expected = P::TYPE_NAME;
        if wire.type_name != expected {
            return Err(Error::WrongType {
                url: url.to_string(),
                found: wire.type_name,
                expected,
            });
        }
        Ok(P::from_ref(ActiveRef::from_wire(wire, Some(self.clone()))))
    }

    pub(crate) fn note_interceptors(&self) {
        self.inner.interceptors.store(true, Ordering::Release);
    }

    /// Installs `locator`: from now on this runtime keeps every call it
    /// sends until its reply arrives, and when the connection it went on
    /// fails, asks the locator where the object lives now and sends the
    /// request there again, with its original sender and sequence number
    /// (the object's runtime answers a request it already served with the
    /// reply it gave). Calls whose object the locator does not know fail
    /// with `NodeDied` as before. For fault-tolerance services; one per
    /// runtime.
    pub fn set_locator(
        &self,
        locator: Arc<dyn crate::intercept::Locator>,
    ) -> std::result::Result<(), Error> {
        self.inner
            .locator
            .set(locator)
            .map_err(|_| Error::Address("this runtime has a locator already".into()))
    }

    /// The runtime at `address` (`host:port`) is dead, as a failure
    /// detector found (`reason`): this runtime's connection to it fails now
    /// instead of after its heartbeat timeout, so that the calls waiting on
    /// it end with `NodeDied`, or, kept for a [locator](Self::set_locator),
    /// are sent again where their objects live now. A later call to that
    /// address connects afresh.
    pub fn peer_failed(&self, address: &str, reason: &str) {
        let conn = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
            .cloned();
        if let Some(conn) = conn {
            conn.fail(reason.to_owned());
        }
    }

    /// Call `r`, whose connection to `address` failed (`reason`): sent
    /// again where the locator says its object is now, or failed.
    pub(crate) fn relocate(&self, r: Box<Retained>, address: &str, reason: String) {
        /// Beyond this many failures, a call fails. (A rollback of a
        /// group of objects turns back every call in flight to any of
        /// them: a call may meet several during a run of failures.)
        const MAX_RESENDS: u32 = 64;
        let Some(locator) = self.inner.locator.get().cloned() else {
            return r.slot.resolve(Outcome::failure(Status::NodeDied, reason));
        };
        if r.resent >= MAX_RESENDS || self.inner.shutdown.is_cancelled() {
            return r.slot.resolve(Outcome::failure(Status::NodeDied, reason));
        }
        let rt = self.clone();
        let address = address.to_owned();
        self.inner.handle.spawn(async move {
            // A call turned back again and again (its object between two
            // instances during a rollback, its runtime restarting) waits a
            // little longer each time: its resends span seconds, not the
            // few milliseconds of round trips they would take at once.
            if r.resent >= 2 {
                let wait = (1u64 << (r.resent - 2).min(7)).min(100);
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            let found = locator.locate(r.target, &address).await;
            match found {
                Some(to) if !rt.inner.shutdown.is_cancelled() => {
                    tracing::debug!(
                        object = format_args!("{:#x}", r.target),
                        method = r.method,
                        from = %address,
                        %to,
                        "a call whose runtime failed is sent again where its object lives now"
                    );
                    rt.moved(r.target, &to);
                    rt.resend(r, &to);
                }
                Some(_) => r.slot.resolve(Outcome::failure(Status::NodeDied, reason)),
                None => {
                    let reason = match locator.lost(r.target).await {
                        Some(why) => format!("{why} (its runtime at {address}: {reason})"),
                        None => reason,
                    };
                    r.slot.resolve(Outcome::failure(Status::NodeDied, reason));
                }
            }
        });
    }

    /// Sends retained call `r` again, to the runtime at `address`.
    fn resend(&self, mut r: Box<Retained>, address: &str) {
        r.resent += 1;
        let conn = self.conn_to(address);
        let (target, sender, seq, flags, method) = (r.target, r.sender, r.seq, r.flags, r.method);
        // Copies: the call keeps its own for a next failure.
        let (header, payload, held) = (r.header.clone(), r.payload.clone(), r.held.clone());
        let call_id = match conn.register(Pending::Retained(r)) {
            Ok(id) => id,
            Err(Pending::Retained(r)) => {
                // Dead already: asked about again.
                let reason = String::from_utf8_lossy(&dead(&conn).payload).into_owned();
                return self.relocate(r, address, reason);
            }
            Err(_) => return,
        };
        let head = RequestHead {
            call_id,
            target,
            sender,
            seq,
            flags,
            header: &header,
            futures: &held,
        };
        if let Err(failed) = self.put_request(&conn, &head, &payload, method)
            && let (failure, Some(Pending::Retained(r))) = *failed
        {
            r.slot.resolve(failure);
        }
    }

    /// Writes request `head` with `payload` on `conn`, after the claim its
    /// sender needs there; the futures it carries follow it. If it does
    /// not fit, its call is unregistered and handed back with the failure.
    fn put_request(
        &self,
        conn: &Arc<Conn>,
        head: &RequestHead<'_>,
        payload: &[u8],
        method: &str,
    ) -> std::result::Result<(), Box<(Outcome, Option<Pending>)>> {
        let claim = self.claim_for(conn, head.sender);
        if let Err(e) = conn.write_as(claim.as_deref(), |buf| {
            wire::put_request(buf, head, payload);
        }) {
            let pending = (head.call_id != 0)
                .then(|| conn.unregister(head.call_id))
                .flatten();
            let failure = Outcome::failure(
                Status::BadRequest,
                format!("the request `{method}` takes {e}"),
            );
            return Err(Box::new((failure, pending)));
        }
        for h in head.futures {
            h.continue_to(conn);
        }
        Ok(())
    }

    pub(crate) fn moved(&self, object: u64, address: &str) {
        if self
            .inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&object)
            && self.address() != Some(address)
        {
            // This runtime's own entry (a forwarder) already routes it.
            return;
        }
        self.inner.any_moved.store(true, Ordering::Release);
        self.inner
            .locations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(object, address.to_owned());
    }

    pub(crate) fn rehome(&self, object: u64, node: &Arc<NodeInner>) {
        if let Some(Hosted::Here { node: n, .. }) = self
            .inner
            .objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&object)
        {
            *n = node.clone();
        }
    }

    /// Slots for futures announced by a message, held while it is decoded.
    pub(crate) fn hold(&self, ids: &[FutureId]) -> Vec<Arc<Slot>> {
        ids.iter()
            .map(|&id| self.inner.futures.get_or_create(id))
            .collect()
    }

    // ----- calls -----

    /// The next sequence number of `sender` for `target`, through the
    /// reference's cache.
    fn next_seq(&self, cache: &mut RouteCache, sender: u64, target: u64) -> u64 {
        if let Some((s, counter)) = &cache.seq
            && *s == sender
        {
            return counter.fetch_add(1, Ordering::Relaxed);
        }
        let counter = self
            .inner
            .seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((sender, target))
            .or_insert_with(|| Arc::new(AtomicU64::new(1)))
            .clone();
        let seq = counter.fetch_add(1, Ordering::Relaxed);
        cache.seq = Some((sender, counter));
        seq
    }

    /// The next sequence numbers `sender` uses, per target.
    pub(crate) fn sent_by(&self, sender: u64) -> Vec<(u64, u64)> {
        self.inner
            .seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((s, _), _)| *s == sender)
            .map(|((_, target), next)| (*target, next.load(Ordering::Relaxed)))
            .collect()
    }

    /// Continues `sender`'s sequence numbers where a checkpoint left them,
    /// even below where this runtime had them (a restore here of an older
    /// checkpoint, a return after a migration): the object's requests after
    /// the checkpoint are sent again with the numbers they had. Targets the
    /// checkpoint does not know the object had not sent to: their numbering
    /// starts over. Counters are set in place, as references cache them.
    fn resume_sending(&self, sender: u64, table: &[(u64, u64)]) {
        let mut seqs = self.inner.seqs.lock().unwrap_or_else(|p| p.into_inner());
        for ((s, target), counter) in seqs.iter() {
            if *s == sender {
                let next = table
                    .iter()
                    .find(|(t, _)| t == target)
                    .map_or(1, |&(_, next)| next);
                counter.store(next, Ordering::Relaxed);
            }
        }
        for &(target, next) in table {
            seqs.entry((sender, target))
                .or_insert_with(|| Arc::new(AtomicU64::new(next)));
        }
    }

    pub(crate) fn call<U, E, R: Serialize>(
        &self,
        target: &ActiveRef,
        request: &R,
        info: CallInfo,
        flatten: bool,
    ) -> Future<U, E> {
        self.call_flags(target, request, info, flatten, 0)
    }

    fn call_flags<U, E>(
        &self,
        target: &ActiveRef,
        request: &(impl Encode + ?Sized),
        info: CallInfo,
        flatten: bool,
        flags: u32,
    ) -> Future<U, E> {
        let site = CallSite {
            target: target.id(),
            method: info.method,
        };
        let slot = self.inner.futures.new_slot(Some(site), flatten);
        if let Err(outcome) =
            self.dispatch(target, request, info, flags, ReplyTo::Slot(slot.clone()))
        {
            slot.resolve(outcome);
        }
        Future::from_slot(slot, self.inner.config.call_timeout)
    }

    pub(crate) fn send<R: Serialize>(
        &self,
        target: &ActiveRef,
        request: &R,
        info: CallInfo,
    ) -> std::result::Result<(), CallError> {
        self.dispatch(target, request, info, 0, ReplyTo::Nobody)
            .map_err(|o| {
                let reason = String::from_utf8_lossy(&o.payload).into_owned();
                match o.status {
                    Status::NodeDied => CallError::NodeDied {
                        method: info.method,
                        reason,
                    },
                    _ => CallError::Refused {
                        method: info.method,
                        reason,
                    },
                }
            })
    }

    pub(crate) fn migrate(
        &self,
        target: &ActiveRef,
        node: &NodeUrl,
        immediate: bool,
    ) -> Future<()> {
        let info = CallInfo {
            method: "migrate_to",
            immediate,
        };
        self.call_flags(target, &node.to_string(), info, false, FLAG_MIGRATE)
    }

    /// Encodes and routes one request.
    fn dispatch(
        &self,
        target: &ActiveRef,
        request: &(impl Encode + ?Sized),
        info: CallInfo,
        flags: u32,
        reply: ReplyTo,
    ) -> std::result::Result<(), Outcome> {
        let id = target.id();
        let serving = serving();
        if let Some(s) = serving
            && self.is_discarded(s.instance)
        {
            return Err(Outcome::failure(
                Status::Refused,
                format!(
                    "`{}` was not sent: object {:#x} was discarded from the runtime at {} while \
                     it served the request that sent it",
                    info.method,
                    s.object,
                    self.address().unwrap_or("(not serving)")
                ),
            ));
        }
        if let Some(s) = serving.filter(|s| s.held) {
            self.released(s.object).map_err(|why| {
                Outcome::failure(
                    Status::Refused,
                    format!(
                        "`{}` was not sent: the request {:#x} was serving when it sent it \
                         was dropped ({why})",
                        info.method, s.object
                    ),
                )
            })?;
        }
        let sender = serving.map_or(self.inner.id, |s| s.object);
        let flags = flags | if info.immediate { FLAG_IMMEDIATE } else { 0 };
        let moved = self.moved_to(target);
        let address = moved.as_deref().unwrap_or(&target.inner.address);
        // One look at the reference's cache: the sequence counter and, when
        // the last call went out on a live connection to the same address,
        // that connection (the object is not local then).
        let (seq, cached) = {
            let mut cache = target.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
            let seq = if info.immediate {
                0
            } else {
                self.next_seq(&mut cache, sender, id)
            };
            let cached = cache
                .conn
                .as_ref()
                .filter(|(a, c)| a == address && !c.is_closed())
                .map(|(_, c)| c.clone());
            (seq, cached)
        };
        let unsent = match self.route(
            target,
            request,
            info,
            flags,
            reply,
            (sender, seq),
            address,
            cached,
        ) {
            Ok(()) => return Ok(()),
            Err(unsent) => unsent,
        };
        // The request never left: its number goes to the next request,
        // which would otherwise be held back for it (the reorder timeout).
        self.give_back(sender, id, seq);
        match unsent {
            Unsent::Failed(outcome) => Err(outcome),
            // As if the arguments had been encoded in the caller's frame.
            Unsent::Panicked(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Encodes a numbered request and hands it to its object's body or to
    /// the connection to its runtime; `before_send` runs once nothing but
    /// the connection's size limit can stop the request.
    #[allow(clippy::too_many_arguments)]
    fn route(
        &self,
        target: &ActiveRef,
        request: &(impl Encode + ?Sized),
        info: CallInfo,
        flags: u32,
        reply: ReplyTo,
        (sender, seq): (u64, u64),
        address: &str,
        cached: Option<Arc<Conn>>,
    ) -> std::result::Result<(), Unsent> {
        let id = target.id();
        let encode_failure = |e: codec::EncodeFailure| match e {
            codec::EncodeFailure::Error(e) => Unsent::Failed(Outcome::failure(
                Status::BadRequest,
                format!("the arguments of `{}` do not encode: {e}", info.method),
            )),
            codec::EncodeFailure::Panic(panic) => Unsent::Panicked(panic),
        };
        let one_way = !reply.expects_reply();
        let header = |header: &mut Vec<u8>, payload: &[u8]| {
            if self.inner.interceptors.load(Ordering::Acquire) && sender != self.inner.id {
                let outgoing = Outgoing {
                    sender,
                    target: id,
                    seq,
                    one_way,
                    header,
                    payload,
                };
                self.before_send(outgoing, info.method)
                    .map_err(Unsent::Failed)
            } else {
                Ok(())
            }
        };
        let local = cached.is_none()
            && self
                .inner
                .objects
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id);
        if local {
            let mut payload = Vec::new();
            let held = codec::encode_into(request, &mut payload).map_err(encode_failure)?;
            let mut head = Vec::new();
            header(&mut head, &payload)?;
            self.deliver(Box::new(Inbound {
                target: id,
                sender,
                seq,
                flags,
                header: head.into(),
                payload: payload.into(),
                held,
                reply,
            }));
            return Ok(());
        }
        if address.is_empty() {
            return Err(Unsent::Failed(Outcome::failure(
                Status::NoSuchObject,
                format!(
                    "{target:?} lives in a runtime that does not serve, so it is reachable only there"
                ),
            )));
        }
        let conn = match cached {
            Some(conn) => conn,
            None => {
                let conn = self.conn_to(address);
                target
                    .inner
                    .cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .conn = Some((address.to_owned(), conn.clone()));
                conn
            }
        };
        // The arguments are encoded into this thread's scratch vector,
        // then copied into the connection's batch with the envelope.
        codec::with_scratch(|payload| {
            let held = codec::encode_into(request, payload).map_err(encode_failure)?;
            let died = |conn: &Conn| Unsent::Failed(dead(conn));
            let retained = matches!(reply, ReplyTo::Slot(_)) && self.inner.locator.get().is_some();
            let call_id = match reply {
                ReplyTo::Nobody => 0,
                ReplyTo::Slot(slot) if retained => {
                    let kept = Box::new(Retained {
                        slot,
                        method: info.method,
                        target: id,
                        sender,
                        seq,
                        flags,
                        header: Vec::new(),
                        payload: payload.clone(),
                        held: held.clone(),
                        resent: 0,
                    });
                    match conn.register(Pending::Retained(kept)) {
                        Ok(call_id) => call_id,
                        Err(Pending::Retained(mut kept)) => {
                            // The runtime is known dead already: where the
                            // object lives now is asked at once.
                            let mut header_bytes = Vec::new();
                            header(&mut header_bytes, &kept.payload)?;
                            kept.header = header_bytes;
                            let reason = String::from_utf8_lossy(&dead(&conn).payload).into_owned();
                            self.relocate(kept, address, reason);
                            return Ok(());
                        }
                        Err(_) => return Err(died(&conn)),
                    }
                }
                ReplyTo::Slot(slot) => {
                    let pending = if self.inner.interceptors.load(Ordering::Acquire)
                        && sender != self.inner.id
                    {
                        Pending::Call(Box::new(crate::connection::Call {
                            slot,
                            caller: sender,
                            target: id,
                            seq,
                        }))
                    } else {
                        Pending::Slot(slot)
                    };
                    conn.register(pending).map_err(|_| died(&conn))?
                }
                to @ ReplyTo::Remote { .. } => conn
                    .register(Pending::Relay {
                        to,
                        object: id,
                        moved_to: address.to_owned(),
                    })
                    .map_err(|_| died(&conn))?,
            };
            if conn.is_closed() && call_id == 0 {
                return Err(died(&conn));
            }
            let mut header_bytes = Vec::new();
            if let Err(unsent) = header(&mut header_bytes, payload) {
                if call_id != 0 {
                    conn.unregister(call_id);
                }
                return Err(unsent);
            }
            if retained && !header_bytes.is_empty() {
                conn.retained_header(call_id, &header_bytes);
            }
            let head = RequestHead {
                call_id,
                target: id,
                sender,
                seq,
                flags,
                header: &header_bytes,
                futures: &held,
            };
            self.put_request(&conn, &head, payload, info.method)
                .map_err(|failed| Unsent::Failed(failed.0))
        })
    }

    /// Returns the number a request drew and did not send, unless a later
    /// request drew the next one meanwhile (that one then waits out the
    /// reorder timeout). Only failed requests come here.
    fn give_back(&self, sender: u64, target: u64, seq: u64) {
        if seq == 0 {
            return;
        }
        if let Some(counter) = self
            .inner
            .seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(sender, target))
        {
            let _ = counter.compare_exchange(seq + 1, seq, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Runs the `reply_received` hooks of the node of `caller`, for the
    /// reply to its request `seq` to `target`. A hook that panics is
    /// logged; the reply resolves its future all the same.
    pub(crate) fn reply_arrived(&self, caller: u64, target: u64, seq: u64, header: &[u8]) {
        if caller == self.inner.id || !self.inner.interceptors.load(Ordering::Acquire) {
            return;
        }
        let node = match self
            .inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&caller)
        {
            Some(Hosted::Here { node, .. }) => node.clone(),
            _ => return,
        };
        for i in node.interceptors() {
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
                i.reply_received(&crate::intercept::Returned {
                    caller,
                    target,
                    seq,
                    header,
                });
            }));
            if let Err(panic) = ran {
                tracing::error!(
                    object = format_args!("{caller:#x}"),
                    target = format_args!("{target:#x}"),
                    "an interceptor panicked reading a reply's header: {}",
                    crate::panics::describe(&*panic)
                );
            }
        }
    }

    /// Runs the `before_send` hooks of the sending object's node. A hook
    /// that panics stops the request (it is not sent) rather than the code
    /// that called.
    fn before_send(
        &self,
        mut outgoing: Outgoing<'_>,
        method: &str,
    ) -> std::result::Result<(), Outcome> {
        let (sender, target) = (outgoing.sender, outgoing.target);
        let node = match self
            .inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sender)
        {
            Some(Hosted::Here { node, .. }) => node.clone(),
            _ => return Ok(()),
        };
        for i in node.interceptors() {
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
                i.before_send(&mut outgoing);
            }));
            if let Err(panic) = ran {
                let why = crate::panics::describe(&*panic);
                tracing::error!(
                    object = format_args!("{sender:#x}"),
                    target = format_args!("{target:#x}"),
                    method,
                    "an interceptor panicked before sending; the request was not sent: {why}"
                );
                return Err(Outcome::failure(
                    Status::Refused,
                    format!(
                        "`{method}` was not sent: an interceptor of node `{}` panicked before \
                         {sender:#x} sent it: {why}",
                        node.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Where `target` went, if it migrated away from its address.
    fn moved_to(&self, target: &ActiveRef) -> Option<String> {
        if !self.inner.any_moved.load(Ordering::Acquire) {
            return None;
        }
        self.inner
            .locations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target.id())
            .cloned()
    }

    /// Hands a request to a local body, or on to where its object went.
    pub(crate) fn deliver(&self, inbound: Box<Inbound>) {
        let _ = self.deliver_bounded(inbound);
    }

    /// [`Runtime::deliver`]; returns the object's mailbox when its queue is
    /// over its bounds now (a connection then pauses, see `read_frames`).
    fn deliver_bounded(&self, mut inbound: Box<Inbound>) -> Option<Arc<Mailbox>> {
        for _ in 0..8 {
            let route = match self
                .inner
                .objects
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&inbound.target)
            {
                Some(Hosted::Here { mailbox, .. }) => Ok(mailbox.clone()),
                Some(Hosted::Moved { address, .. }) => Err(Some(address.clone())),
                None => Err(None),
            };
            match route {
                Ok(mailbox) => match mailbox.push(inbound, self.bounds()) {
                    Ok(full) => return full.then_some(mailbox),
                    // The body closed between lookup and push (it is
                    // migrating): look again.
                    Err(back) => {
                        inbound = back;
                        std::thread::yield_now();
                    }
                },
                Err(Some(address)) => {
                    self.forward(*inbound, &address);
                    return None;
                }
                Err(None) => break,
            }
        }
        let here = self.address().unwrap_or("(not serving)");
        if self.inner.shutdown.is_cancelled() {
            // Its objects went with the shutdown, its connections are about
            // to: what still arrives meets a dying runtime, as it would a
            // crashed one. A call its caller retains (a protected object's)
            // is asked about where the object lives now, not failed.
            let message = format!("the runtime at {here} shut down");
            let moved = Some((inbound.target, here));
            inbound
                .reply
                .send(self, Outcome::failure(Status::NodeDied, message), moved);
            return None;
        }
        if self.was_discarded(inbound.target) {
            // Discarded here (a rollback, say), and not back yet: answered
            // as its runtime's death would be, so that a caller that
            // follows recoveries asks where it lives now.
            let message = format!(
                "active object {:#x} was discarded from the runtime at {here}",
                inbound.target
            );
            let moved = Some((inbound.target, here));
            inbound
                .reply
                .send(self, Outcome::failure(Status::NodeDied, message), moved);
            return None;
        }
        let message = format!(
            "no active object {:#x} on the runtime at {here}",
            inbound.target
        );
        inbound
            .reply
            .send(self, Outcome::failure(Status::NoSuchObject, message), None);
        None
    }

    /// The bounds of every object's queue.
    pub(crate) fn bounds(&self) -> crate::body::Bounds {
        crate::body::Bounds {
            requests: self.inner.config.max_queued_requests,
            bytes: self.inner.config.max_queued_bytes,
        }
    }

    /// A queue drained that a paused connection waited on.
    pub(crate) fn space_freed(&self) {
        self.inner.space.notify_waiters();
    }

    /// Waits until `mailbox` is back under half its bounds (or closed).
    pub(crate) async fn wait_for_space(&self, mailbox: &Mailbox) {
        loop {
            let freed = self.inner.space.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !mailbox.is_full(self.bounds()) {
                return;
            }
            freed.await;
        }
    }

    /// Sends a request on to the runtime its object moved to; the reply
    /// comes back through here and is relayed with the new address.
    fn forward(&self, inbound: Inbound, address: &str) {
        let conn = self.conn_to(address);
        let call_id = if inbound.reply.expects_reply() {
            match conn.register(Pending::Relay {
                to: inbound.reply,
                object: inbound.target,
                moved_to: address.to_owned(),
            }) {
                Ok(id) => id,
                Err(Pending::Relay { to, .. }) => {
                    return to.send(self, dead(&conn), None);
                }
                Err(_) => return,
            }
        } else {
            0
        };
        let head = RequestHead {
            call_id,
            target: inbound.target,
            sender: inbound.sender,
            seq: inbound.seq,
            flags: inbound.flags | FLAG_FORWARDED,
            header: &inbound.header,
            futures: &inbound.held,
        };
        if let Err(e) = conn.write(|buf| wire::put_request(buf, &head, &inbound.payload)) {
            if let Some(Pending::Relay { to, .. }) = conn.unregister(call_id) {
                let failure = Outcome::failure(
                    Status::BadRequest,
                    format!("the request cannot be forwarded to {address}: it takes {e}"),
                );
                to.send(self, failure, None);
            }
            return;
        }
        for h in &inbound.held {
            h.continue_to(&conn);
        }
    }

    /// Marks `object` as moved to `address` and sends every request queued
    /// for it there.
    #[allow(clippy::vec_box)] // the queue's boxed requests, as they are
    pub(crate) fn forward_all(
        &self,
        object: u64,
        address: &str,
        mailbox: &Mailbox,
        held_back: Vec<Box<Inbound>>,
    ) {
        {
            let mut objects = self
                .inner
                .objects
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let credentials = match objects.get(&object) {
                // Another instance, restored here after this one was
                // discarded: it stays.
                Some(Hosted::Here { mailbox: m, .. }) if !std::ptr::eq(Arc::as_ptr(m), mailbox) => {
                    None
                }
                Some(Hosted::Here { credentials, .. } | Hosted::Moved { credentials, .. }) => {
                    Some(credentials.clone())
                }
                None => Some(Arc::default()),
            };
            if let Some(credentials) = credentials {
                objects.insert(
                    object,
                    Hosted::Moved {
                        address: address.to_owned(),
                        credentials,
                    },
                );
            }
        }
        for inbound in mailbox.close().into_iter().chain(held_back) {
            self.forward(*inbound, address);
        }
    }

    /// Requests arrived on a connection, in a row, all to one target
    /// (empties `requests`).
    pub(crate) fn receive_requests(
        &self,
        conn: &Arc<Conn>,
        requests: &mut Vec<wire::Request>,
        full: &mut Vec<Arc<Mailbox>>,
    ) {
        let Some(target) = requests.first().map(|r| r.target) else {
            return;
        };
        let principal = conn.principal();
        // Control requests (target 0) are checked one by one when served.
        let open = principal.is_member() || target == 0 || self.is_open_to_pool(target);
        // The last sender found proved: requests in a row mostly share one.
        let mut proved = None;
        let inbound: Vec<Box<Inbound>> = requests
            .drain(..)
            .filter_map(|r| {
                let refusal = if !open {
                    Some(format!(
                        "{principal} may not call object {:#x} ({})",
                        r.target,
                        self.type_of(r.target).unwrap_or("no such object here")
                    ))
                } else if let Some(why) = self.sender_refused(conn, &principal, &r, &mut proved) {
                    Some(why)
                } else if !principal.is_member() && r.flags & (FLAG_MIGRATE | FLAG_TERMINATE) != 0 {
                    Some(format!("{principal} may not migrate or terminate objects"))
                } else {
                    None
                };
                if let Some(why) = refusal {
                    self.refuse(conn, r.call_id, &why);
                    return None;
                }
                Some(r)
            })
            .map(|r| {
                let held = conn.hold(self, &r.futures);
                let reply = if r.call_id == 0 {
                    ReplyTo::Nobody
                } else {
                    ReplyTo::Remote {
                        conn: conn.clone(),
                        call_id: r.call_id,
                    }
                };
                Box::new(Inbound {
                    target: r.target,
                    sender: r.sender,
                    seq: r.seq,
                    flags: r.flags,
                    header: r.header,
                    payload: r.payload,
                    held,
                    reply,
                })
            })
            .collect();
        if target == 0 {
            for inbound in inbound {
                if conn.controls.fetch_add(1, Ordering::AcqRel) >= MAX_CONTROLS {
                    conn.controls.fetch_sub(1, Ordering::AcqRel);
                    let refusal = Outcome::failure(
                        Status::Refused,
                        format!(
                            "{MAX_CONTROLS} control requests from this runtime are being served already"
                        ),
                    );
                    inbound.reply.send(self, refusal, None);
                    continue;
                }
                let rt = self.clone();
                let conn = conn.clone();
                let caller = Caller::Remote(principal.clone());
                self.spawn(crate::compute::InBody(Box::pin(async move {
                    rt.serve_control(*inbound, &caller);
                    conn.controls.fetch_sub(1, Ordering::AcqRel);
                })));
            }
        } else if let Some(mailbox) = self.deliver_all(target, inbound) {
            full.push(mailbox);
        }
    }

    /// Why a request may not claim the sender it claims, if it may not: a
    /// runtime sends as itself, or as an object (or id) it proved with a
    /// claim on this connection; a request passed on by a forwarder comes
    /// from a runtime that hosted its target before. Nothing is checked on
    /// plaintext, where nothing can be.
    fn sender_refused(
        &self,
        conn: &Conn,
        principal: &crate::tls::Principal,
        r: &wire::Request,
        proved: &mut Option<u64>,
    ) -> Option<String> {
        use crate::tls::Principal;
        if matches!(principal, Principal::Plaintext) {
            return None;
        }
        if r.flags & FLAG_FORWARDED != 0 {
            return match principal {
                Principal::Runtime(peer) if self.hosted_before(r.target, *peer) => None,
                _ => Some(format!(
                    "a request passed on as forwarded by {principal}, which never hosted \
                     object {:#x}",
                    r.target
                )),
            };
        }
        if *principal == Principal::Runtime(r.sender) || *proved == Some(r.sender) {
            return None;
        }
        let kind = if crate::ids::is_runtime(r.sender) {
            "runtime"
        } else {
            "object"
        };
        if let Principal::Runtime(peer) = principal
            && kind == "runtime"
        {
            return Some(format!(
                "a request sent as runtime {:#x} on the connection of runtime {peer:#x}",
                r.sender
            ));
        }
        if conn.proven.contains(r.sender) {
            *proved = Some(r.sender);
            return None;
        }
        Some(format!(
            "a request sent as {kind} {:#x}, which {principal} did not prove it hosts",
            r.sender
        ))
    }

    /// Whether `runtime` hosted `object` before this one (and so may pass
    /// on requests sent to it).
    fn hosted_before(&self, object: u64, runtime: u64) -> bool {
        // The runtime itself (control requests) is never passed on.
        if object == 0 {
            return false;
        }
        match self
            .inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&object)
        {
            Some(Hosted::Here { credentials, .. } | Hosted::Moved { credentials, .. }) => {
                credentials.hosted_by(runtime)
            }
            // Not here: the request finds nothing, and is answered so.
            None => true,
        }
    }

    /// The claim `sender` must send on `conn` before its request, if it
    /// was not sent there yet (see `sender`): none for this runtime's own
    /// id when its certificate names it, none on plaintext.
    fn claim_for(&self, conn: &Conn, sender: u64) -> Option<Arc<crate::sender::Claim>> {
        if !self.inner.secured || (sender == self.inner.id && self.inner.key.is_none()) {
            return None;
        }
        if conn.claimed(sender) {
            return None;
        }
        let key = if sender == self.inner.id {
            self.inner.key.clone()?
        } else {
            match self
                .inner
                .objects
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&sender)
            {
                Some(Hosted::Here { credentials, .. }) => credentials.key.clone()?,
                _ => return None,
            }
        };
        Some(key.claim(&self.inner.identity.principal()))
    }

    /// Hands requests to one target's body in one go, or one by one on
    /// to where its object went.
    #[allow(clippy::vec_box)] // the queue's boxed requests, as they are
    fn deliver_all(&self, target: u64, inbound: Vec<Box<Inbound>>) -> Option<Arc<Mailbox>> {
        let mailbox = match self
            .inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target)
        {
            Some(Hosted::Here { mailbox, .. }) => Some(mailbox.clone()),
            _ => None,
        };
        let back = match mailbox {
            Some(mailbox) => match mailbox.push_all(inbound, self.bounds()) {
                Ok(full) => return full.then_some(mailbox),
                Err(back) => back,
            },
            None => inbound,
        };
        let mut full = None;
        for inbound in back {
            full = self.deliver_bounded(inbound).or(full);
        }
        full
    }

    // ----- connections -----

    /// The connection to `address`, opened in the background on first use;
    /// requests queue until it is up.
    pub(crate) fn conn_to(&self, address: &str) -> Arc<Conn> {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = peers.get(address)
            && !conn.is_closed()
        {
            return conn.clone();
        }
        let (conn, batched) = Conn::new(self, address.to_owned(), Some(address.to_owned()));
        peers.insert(address.to_owned(), conn.clone());
        drop(peers);
        let rt = self.clone();
        let driven = conn.clone();
        self.spawn(async move { rt.drive_outgoing(driven, batched).await });
        conn
    }

    pub(crate) fn forget_connection(&self, address: &str, conn: &Arc<Conn>) {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.get(address).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            peers.remove(address);
        }
    }

    async fn drive_outgoing(self, conn: Arc<Conn>, batched: Batched) {
        let config = self.inner.config.clone();
        let address = conn.peer.clone();
        let endpoint = match wire_endpoint(&address, &config) {
            Ok(e) => e,
            Err(e) => return conn.fail(e),
        };
        let connector = self.inner.connector.clone();
        let dial = address.clone();
        let tls = self.inner.identity.client_config(false);
        let checked = conn.clone();
        let service = tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let connecting = connector.connect(&dial);
            let tls = tls.clone();
            let checked = checked.clone();
            async move {
                let io = connecting.await?;
                let (io, principal) = secure(io, tls).await?;
                checked.set_principal(principal);
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(io))
            }
        });
        let channel = match tokio::time::timeout(
            config.connect_timeout,
            endpoint.connect_with_connector(service),
        )
        .await
        {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return conn.fail(format!("cannot connect: {}", error_chain(&e))),
            Err(_) => {
                return conn.fail(format!(
                    "cannot connect within {:?}",
                    config.connect_timeout
                ));
            }
        };
        self.drive_stream(conn, batched, channel).await;
    }

    /// Takes `link`, the connection this runtime enrolled on, as its
    /// connection to the runtime that enrolled it.
    fn adopt_link(&self, link: crate::tls::Link) {
        let (conn, batched) = Conn::new(self, link.address.clone(), Some(link.address.clone()));
        conn.set_principal(link.principal);
        self.inner
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(link.address, conn.clone());
        let rt = self.clone();
        self.spawn(async move { rt.drive_stream(conn, batched, link.channel).await });
    }

    /// Lets an incoming connection, from the runtime that serves at
    /// `address`, carry this runtime's calls to that address too, unless
    /// one is already open there.
    fn offer_connection(&self, address: &str, conn: &Arc<Conn>) {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.get(address).is_none_or(|c| c.is_closed()) {
            peers.insert(address.to_owned(), conn.clone());
        }
    }

    /// Opens the wire's stream on `channel` and runs it until it ends;
    /// with a second stream on which the other end may call this runtime
    /// (see [`Runtime::drive_return_stream`]).
    async fn drive_stream(
        self,
        conn: Arc<Conn>,
        batched: Batched,
        channel: tonic::transport::Channel,
    ) {
        let config = self.inner.config.clone();
        let mut client = self.wire_client(channel.clone());
        let mut request = tonic::Request::new(batched);
        let reachable_at = self.reachable_at();
        if let Some(at) = &reachable_at {
            request.metadata_mut().insert(REACHABLE_AT, at.clone());
        }
        let opened = tokio::select! {
            r = client.open(request) => r,
            () = conn.closed() => return,
        };
        let inbound = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                return conn.fail(format!(
                    "the runtime refused the stream: {}",
                    status.message()
                ));
            }
        };
        self.spawn(
            conn.clone()
                .heartbeat(config.heartbeat_interval, config.heartbeat_timeout),
        );
        if reachable_at.is_some() {
            self.spawn(self.clone().drive_return_stream(conn.clone(), channel));
        }
        read_frames(conn, inbound).await;
    }

    /// Opens, next to `main`'s stream on the same connection (whose first
    /// stream said where this runtime serves), a stream on which the other
    /// end calls this runtime: calling back then takes no connection and
    /// no handshake of its own. It is a stream of its own so that a queue
    /// full here, which stops reading it, never holds back the replies
    /// `main` brings; it ends with `main`.
    async fn drive_return_stream(self, main: Arc<Conn>, channel: tonic::transport::Channel) {
        let config = self.inner.config.clone();
        let (conn, batched) = Conn::new(&self, main.peer.clone(), None);
        conn.set_principal(main.principal());
        let mut request = tonic::Request::new(batched);
        request.metadata_mut().insert(
            RETURN_STREAM,
            tonic::metadata::AsciiMetadataValue::from_static("1"),
        );
        let mut client = self.wire_client(channel);
        let opened = tokio::select! {
            r = client.open(request) => r,
            () = main.closed() => return,
        };
        let inbound = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                // The other end dials this runtime when it calls instead.
                tracing::debug!(peer = %main.peer, "no return stream: {}", status.message());
                return;
            }
        };
        self.spawn(
            conn.clone()
                .heartbeat(config.heartbeat_interval, config.heartbeat_timeout),
        );
        tokio::select! {
            () = read_frames(conn.clone(), inbound) => {}
            () = main.closed() => conn.fail("the connection's other stream ended".into()),
        }
    }

    fn wire_client(
        &self,
        channel: tonic::transport::Channel,
    ) -> wire::wire_client::WireClient<tonic::transport::Channel> {
        let limit = self.inner.config.max_message_size;
        wire::wire_client::WireClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    // ----- control requests -----

    /// Sends a control request to the runtime of `url` (or serves it here).
    pub(crate) fn control<T>(
        &self,
        url: &NodeUrl,
        control: Control,
        method: &'static str,
    ) -> Future<T> {
        self.control_holding(url, control, method, Vec::new())
    }

    /// [`Runtime::control`], announcing futures already encoded inside
    /// `control` (those of a migrating object's state).
    fn control_holding<T>(
        &self,
        url: &NodeUrl,
        control: Control,
        method: &'static str,
        embedded: Vec<Arc<Slot>>,
    ) -> Future<T> {
        // Target 0 is no object, so the deadlock check never fires here.
        let site = CallSite { target: 0, method };
        let slot = self.inner.futures.new_slot(Some(site), false);
        let future = Future::from_slot(slot.clone(), self.inner.config.call_timeout);
        if self.is_own(url) || (self.address().is_none() && url.port() == 0) {
            let (payload, held) = match codec::encode_in(&control) {
                Ok(x) => x,
                Err(e) => {
                    slot.resolve(Outcome::failure(Status::BadRequest, e.to_string()));
                    return future;
                }
            };
            self.serve_control(
                Inbound {
                    target: 0,
                    sender: self.inner.id,
                    seq: 0,
                    flags: 0,
                    header: bytes::Bytes::new(),
                    payload: payload.into(),
                    held,
                    reply: ReplyTo::Slot(slot),
                },
                &Caller::Local,
            );
            return future;
        }
        let address = join_address(url.host(), url.port());
        let conn = self.conn_to(&address);
        let (payload, mut held) = match codec::encode_in(&control) {
            Ok(x) => x,
            Err(e) => {
                slot.resolve(Outcome::failure(Status::BadRequest, e.to_string()));
                return future;
            }
        };
        held.extend(embedded);
        let call_id = match conn.register(Pending::Slot(slot.clone())) {
            Ok(id) => id,
            Err(_) => {
                slot.resolve(dead(&conn));
                return future;
            }
        };
        let head = RequestHead {
            call_id,
            target: 0,
            sender: self.inner.id,
            seq: 0,
            flags: 0,
            header: &[],
            futures: &held,
        };
        if let Err(failed) = self.put_request(&conn, &head, &payload, method) {
            slot.resolve(failed.0);
        }
        future
    }

    /// Answers a request a connection brought and that is refused: says
    /// why to the caller, and logs who tried.
    fn refuse(&self, conn: &Conn, call_id: u64, why: &str) {
        tracing::warn!(
            "refused a request from {} ({}): {why}",
            conn.peer,
            conn.principal()
        );
        if call_id != 0 {
            let _ = conn.write(|buf| {
                wire::put_reply(
                    buf,
                    call_id,
                    Status::Refused,
                    &[],
                    &[],
                    None,
                    format!("refused: {why}").as_bytes(),
                );
            });
        }
    }

    /// The type of local object `id`, if it is here.
    fn type_of(&self, id: u64) -> Option<&'static str> {
        match self
            .inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            Some(Hosted::Here { type_name, .. }) => Some(type_name),
            _ => None,
        }
    }

    /// Whether local object `id` may be called by peers of the overlay's
    /// pool (see [`Runtime::open_to_pool`]).
    fn is_open_to_pool(&self, id: u64) -> bool {
        matches!(
            self.inner
                .objects
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id),
            Some(Hosted::Here { pool: true, .. })
        )
    }

    /// Lets the peers of this runtime's pool call local object `object`
    /// and look up the names it is registered under (the overlay's
    /// endpoints and program sources); `false` if it is not here.
    pub fn open_to_pool(&self, object: &ActiveRef) -> bool {
        match self
            .inner
            .objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&object.id())
        {
            Some(Hosted::Here { pool, .. }) => {
                *pool = true;
                true
            }
            _ => false,
        }
    }

    /// Answers a control request.
    fn answer_control(
        &self,
        outcome: std::result::Result<Box<dyn Encode + Send>, (Status, String)>,
        inbound: Inbound,
    ) {
        let outcome = match outcome {
            Ok(value) => match codec::encode_in(&*value) {
                Ok((payload, held)) => Outcome {
                    status: Status::Ok,
                    payload: payload.into(),
                    held,
                    runtime: Some(self.handle()),
                    header: bytes::Bytes::new(),
                },
                Err(e) => Outcome::failure(Status::Refused, e.to_string()),
            },
            Err((status, message)) => Outcome::failure(status, message),
        };
        inbound.reply.send(self, outcome, None);
    }

    /// `object` serves a request speculatively, held back by `hold`.
    pub(crate) fn hold_back(&self, object: u64, hold: crate::intercept::Hold) {
        self.inner
            .holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(object, (hold, false));
    }

    /// `object`'s held request is served: whether it had to wait for its
    /// hold to send something.
    pub(crate) fn unhold(&self, object: u64) -> bool {
        self.inner
            .holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&object)
            .is_some_and(|(_, sent)| sent)
    }

    /// The hold of the request `object` serves, if it serves one held.
    pub(crate) fn hold_of(&self, object: u64) -> Option<crate::intercept::Hold> {
        self.inner
            .holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&object)
            .map(|(h, _)| h.clone())
    }

    /// Waits until nothing holds back what `object` sends (see
    /// [`Verdict::DeliverHeld`](crate::intercept::Verdict::DeliverHeld)):
    /// sends are synchronous, so this blocks, lending the worker's other
    /// tasks to another thread meanwhile.
    fn released(&self, object: u64) -> std::result::Result<(), String> {
        let hold = {
            let mut holds = self.inner.holds.lock().unwrap_or_else(|p| p.into_inner());
            let Some((hold, sent)) = holds.get_mut(&object) else {
                return Ok(());
            };
            if let Some(done) = hold.peek() {
                return done;
            }
            *sent = true;
            hold.clone()
        };
        let wait = || futures::executor::block_on(hold.wait());
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            // Bodies hold nothing on such a runtime (see `Body::deliver`).
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => {
                Err("a held request cannot be waited for on a current-thread runtime".into())
            }
            Ok(_) => tokio::task::block_in_place(wait),
            Err(_) => wait(),
        }
    }

    /// Answers control request `inbound` with `answer` of the log's replies
    /// once a recovered object served its log.
    fn answer_replayed(
        &self,
        replayed: tokio::sync::oneshot::Receiver<Vec<crate::intercept::Replayed>>,
        inbound: Inbound,
        answer: impl FnOnce(Vec<crate::intercept::Replayed>) -> Box<dyn Encode + Send> + Send + 'static,
    ) {
        let rt = self.clone();
        self.spawn(crate::compute::InBody(Box::pin(async move {
            let result = replayed.await.map(answer).map_err(|_| {
                (
                    Status::NodeDied,
                    "the recovered object ended before its log was served".to_owned(),
                )
            });
            rt.answer_control(result, inbound);
        })));
    }

    fn serve_control(&self, inbound: Inbound, caller: &Caller) {
        let reply = |outcome, inbound| self.answer_control(outcome, inbound);
        let control: Control = match codec::decode_in(self, &inbound.held, &inbound.payload) {
            Ok(c) => c,
            Err(e) => {
                return reply(
                    Err((
                        Status::BadRequest,
                        format!("control request does not decode: {e}"),
                    )),
                    inbound,
                );
            }
        };
        if let Err(why) = caller.may(&control, self) {
            tracing::warn!("refused a control request from {caller}: {why}");
            return reply(Err((Status::Refused, format!("refused: {why}"))), inbound);
        }
        let result: std::result::Result<Box<dyn Encode + Send>, (Status, String)> = match control {
            Control::Create {
                type_name,
                node,
                ctor,
            } => self
                .create_here(&type_name, &node, &ctor, &inbound.held)
                .map(|r| Box::new(r) as Box<dyn Encode + Send>),
            Control::Restore {
                node,
                checkpoint,
                answers,
            } => self
                .restore_here(&node, checkpoint, caller.runtime_id(), Vec::new(), answers)
                .map(|(r, _)| Box::new(r) as Box<dyn Encode + Send>),
            Control::Recover {
                node,
                checkpoint,
                log,
                replies,
                serving,
            } => match self.restore_here(&node, checkpoint, caller.runtime_id(), log, replies) {
                Ok((reference, replayed)) if serving => {
                    self.inner
                        .replays
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(reference.id, replayed);
                    let replies: Vec<crate::intercept::Replayed> = Vec::new();
                    Ok(Box::new((reference, replies)) as Box<dyn Encode + Send>)
                }
                // Answered once the log was served.
                Ok((reference, replayed)) => {
                    return self.answer_replayed(replayed, inbound, move |replies| {
                        Box::new((reference, replies))
                    });
                }
                Err(e) => Err(e),
            },
            Control::Replayed { object } => {
                let replayed = self
                    .inner
                    .replays
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&object);
                let Some(replayed) = replayed else {
                    return self.answer_control(
                        Err((
                            Status::NoSuchObject,
                            format!("no object {object:#x} was recovered here serving its log"),
                        )),
                        inbound,
                    );
                };
                return self.answer_replayed(replayed, inbound, |replies| Box::new(replies));
            }
            Control::Register { name, object } => {
                let mut names = self.inner.names.write().unwrap_or_else(|p| p.into_inner());
                let registrant = caller.runtime_id().unwrap_or(self.inner.id);
                match names.entry(name) {
                    std::collections::hash_map::Entry::Occupied(e) => Err((
                        Status::Refused,
                        format!(
                            "the name `{}` is already registered on {}",
                            e.key(),
                            self.address().unwrap_or("this runtime")
                        ),
                    )),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert((object, registrant));
                        Ok(Box::new(()))
                    }
                }
            }
            Control::Unregister { name } => {
                let mut names = self.inner.names.write().unwrap_or_else(|p| p.into_inner());
                match names.get(&name) {
                    Some((_, by))
                        if matches!(caller, Caller::Remote(_))
                            && caller.runtime_id() != Some(*by) =>
                    {
                        Err((
                            Status::Refused,
                            format!("refused: the name `{name}` was registered by another runtime"),
                        ))
                    }
                    _ => {
                        names.remove(&name);
                        Ok(Box::new(()) as Box<dyn Encode + Send>)
                    }
                }
            }
            Control::Discard { node, object } => {
                Ok(Box::new(self.discard_here(&node, object)) as Box<dyn Encode + Send>)
            }
            Control::Lookup { name } => {
                let found = self
                    .inner
                    .names
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&name)
                    .map(|(r, _)| r.clone())
                    .filter(|r| caller.is_member() || self.is_open_to_pool(r.id));
                Ok(Box::new(found))
            }
        };
        reply(result, inbound);
    }

    /// Refuses a new object when `max_objects` are hosted already.
    fn room_for_one_more(&self) -> std::result::Result<(), (Status, String)> {
        let max = self.inner.config.max_objects;
        if self.object_count() >= max {
            return Err((
                Status::Refused,
                format!(
                    "the runtime at {} hosts {max} active objects already (the max_objects \
                     setting): terminate some, or raise it",
                    self.address().unwrap_or("(not serving)")
                ),
            ));
        }
        Ok(())
    }

    fn unknown_type(&self, type_name: &str) -> (Status, String) {
        (
            Status::Refused,
            format!(
                "the runtime at {} has no active type `{type_name}`: every runtime must run the \
                 same binary as the application",
                self.address().unwrap_or("(not serving)")
            ),
        )
    }

    fn create_here(
        &self,
        type_name: &str,
        node: &str,
        ctor: &[u8],
        held: &[Arc<Slot>],
    ) -> std::result::Result<RefWire, (Status, String)> {
        let entry = active::registered(type_name).ok_or_else(|| self.unknown_type(type_name))?;
        self.room_for_one_more()?;
        // A constructor is user code too, and may compute for long.
        let (constructed, _) = self.inner.inline.run(crate::compute::Mode::Probe, || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (entry.construct)(self, held, ctor)
            }))
        });
        let object = match constructed {
            Ok(Ok(object)) => object,
            Ok(Err(e)) => {
                return Err((
                    Status::Refused,
                    format!("constructing `{type_name}` failed: {e}"),
                ));
            }
            Err(panic) => {
                return Err((
                    Status::Panicked,
                    format!(
                        "in the constructor of `{type_name}`: {}",
                        crate::panics::describe(&*panic)
                    ),
                ));
            }
        };
        let credentials = if self.inner.secured {
            let key = crate::sender::object_key().map_err(|e| {
                (
                    Status::Refused,
                    format!("cannot make a key for the new `{type_name}`: {e}"),
                )
            })?;
            Credentials {
                key: Some(Arc::new(key)),
                hosts: Vec::new(),
            }
        } else {
            Credentials::default()
        };
        let id = credentials
            .key
            .as_ref()
            .map_or_else(crate::ids::nonzero_id, |k| k.id());
        self.host(
            id,
            object,
            node,
            Start {
                order: Order::default(),
                sent: None,
                credentials,
                replay: crate::body::Replay::default(),
            },
        )
    }

    /// Restores `checkpoint` here; `from` is the runtime that sent it (the
    /// object's host when it migrates here).
    /// `log` is served before anything else (see `Node::recover`); the
    /// receiver tells how each of its requests was answered.
    #[allow(clippy::type_complexity)]
    fn restore_here(
        &self,
        node: &str,
        checkpoint: Checkpoint,
        from: Option<u64>,
        log: Vec<crate::intercept::Logged>,
        replies: Vec<crate::intercept::Replayed>,
    ) -> std::result::Result<
        (
            RefWire,
            tokio::sync::oneshot::Receiver<Vec<crate::intercept::Replayed>>,
        ),
        (Status, String),
    > {
        let type_name = checkpoint.type_name.as_str();
        let key = match (&checkpoint.secret, self.inner.secured) {
            (Some(secret), true) => Some(Arc::new(
                crate::sender::SenderKey::of_object(checkpoint.object, secret).map_err(|e| {
                    (
                        Status::Refused,
                        format!("the checkpoint of object {:#x}: {e}", checkpoint.object),
                    )
                })?,
            )),
            // Without its key, the object cannot send to other runtimes:
            // they refuse requests no claim proved.
            _ => None,
        };
        let mut hosts = checkpoint.hosts.clone();
        if let Some(from) = from
            && from != self.inner.id
        {
            hosts = Credentials { key: None, hosts }.hosts_with(from);
        }
        let credentials = Credentials { key, hosts };
        let (done, replayed) = tokio::sync::oneshot::channel();
        let mut replay = crate::body::Replay {
            done: Some(done),
            answers: replies,
            ..Default::default()
        };
        for logged in log {
            let slot = self.inner.futures.new_slot(None, false);
            replay.slots.push((logged.sender, logged.seq, slot.clone()));
            replay.requests.push(Box::new(Inbound {
                target: checkpoint.object,
                sender: logged.sender,
                seq: if logged.immediate { 0 } else { logged.seq },
                flags: FLAG_REPLAYED | if logged.immediate { FLAG_IMMEDIATE } else { 0 },
                header: logged.header.into(),
                payload: logged.payload.into(),
                held: Vec::new(),
                reply: ReplyTo::Slot(slot),
            }));
        }
        let entry = active::registered(type_name).ok_or_else(|| self.unknown_type(type_name))?;
        if let Some(Hosted::Here { .. }) = self
            .inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&checkpoint.object)
        {
            return Err((
                Status::Refused,
                format!("object {:#x} is already hosted here", checkpoint.object),
            ));
        }
        self.room_for_one_more()?;
        let restored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (entry.restore)(self, checkpoint.object, &checkpoint.state)
        }));
        let object = match restored {
            Ok(r) => r.map_err(|e| (Status::NotMigratable, e))?,
            Err(_) => {
                return Err((
                    Status::Panicked,
                    format!("decoding the state of `{type_name}` panicked"),
                ));
            }
        };
        self.host(
            checkpoint.object,
            object,
            node,
            Start {
                order: Order::from_table(&checkpoint.next_seq),
                sent: Some(&checkpoint.sent_seq),
                credentials,
                replay,
            },
        )
        .map(|wire| (wire, replayed))
    }

    /// Hosts `object` under `id` and starts its body. A restored object
    /// (`start.sent` is its table of next sequence numbers) is refused if its id
    /// is hosted here already: the check and the insertion are one step,
    /// so of two restores of one id at once only one succeeds.
    fn host(
        &self,
        id: u64,
        object: Box<dyn active::ErasedActive>,
        node: &str,
        start: Start<'_>,
    ) -> std::result::Result<RefWire, (Status, String)> {
        let Start {
            order,
            sent,
            credentials,
            replay,
        } = start;
        let credentials = Arc::new(credentials);
        let node = self.local_node(node).inner().clone();
        let mailbox = Mailbox::new();
        let (abort, registration) = futures::future::AbortHandle::new_pair();
        let wire = RefWire {
            id,
            address: self.address().unwrap_or_default().to_owned(),
            node: node.name.clone(),
            type_name: object.type_name().to_owned(),
        };
        {
            let mut objects = self
                .inner
                .objects
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if sent.is_some() && matches!(objects.get(&id), Some(Hosted::Here { .. })) {
                return Err((
                    Status::Refused,
                    format!("object {id:#x} is already hosted here"),
                ));
            }
            objects.insert(
                id,
                Hosted::Here {
                    mailbox: mailbox.clone(),
                    node: node.clone(),
                    type_name: object.type_name(),
                    pool: false,
                    credentials: credentials.clone(),
                    abort,
                },
            );
        }
        self.inner
            .gone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&gone| gone != id);
        // Before its body starts: the object's next requests continue the
        // numbering of the checkpoint.
        if let Some(sent) = sent {
            self.resume_sending(id, sent);
        }
        self.inner
            .locations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let body = Body {
            id,
            object,
            mailbox: mailbox.clone(),
            node,
            order,
            runtime: self.clone(),
            learned: Vec::new(),
            send_when_held: Vec::new(),
            credentials,
            replay,
            tally: Default::default(),
            taken: Default::default(),
            due: Default::default(),
            late: Vec::new(),
            owed: None,
        };
        let rt = self.clone();
        // Abortable: a discarded object's body stops where it stands.
        let served = futures::future::Abortable::new(
            AssertUnwindSafe(body.run()).catch_unwind(),
            registration,
        );
        self.spawn(crate::compute::InBody(Box::pin(async move {
            // The body catches the panics of the code it runs (methods,
            // hooks, encoders); one that escapes all the same must not leave
            // an object nobody serves, whose callers would wait forever.
            if let Ok(Err(panic)) = served.await {
                rt.body_failed(id, &mailbox, &*panic);
            }
            if mailbox.is_discarded() {
                // Nothing of the discarded instance runs any more.
                rt.discard_done(mailbox.instance());
            }
        })));
        Ok(wire)
    }

    /// The body of object `id` ended with a panic: the object leaves this
    /// runtime, and what is queued for it is answered with `NoSuchObject`.
    fn body_failed(&self, id: u64, mailbox: &Arc<Mailbox>, panic: &(dyn std::any::Any + Send)) {
        let why = crate::panics::describe(panic);
        tracing::error!(
            object = format_args!("{id:#x}"),
            "the body of an active object failed; the object is removed: {why}"
        );
        // Not another instance hosted under its id since.
        if self.remove_instance(id, mailbox) {
            self.forget_object(id);
        }
        let why = format!(
            "active object {id:#x} on the runtime at {} was removed: serving it failed: {why}",
            self.address().unwrap_or("(not serving)")
        );
        for inbound in mailbox.close() {
            inbound.reply.send(
                self,
                Outcome::failure(Status::NoSuchObject, why.clone()),
                None,
            );
        }
    }

    /// Object `id` was terminated by its last request: it leaves this
    /// runtime's tables (its names, its sequence counters), and whatever
    /// was still queued for it is answered with `NoSuchObject`.
    #[allow(clippy::vec_box)] // the queue's boxed requests, as they are
    pub(crate) fn terminated(&self, id: u64, mailbox: &Mailbox, rest: Vec<Box<Inbound>>) {
        // Not if it was discarded meanwhile (another instance may live
        // under its id by now).
        if self.remove_instance(id, mailbox) {
            self.forget_object(id);
        }
        let why = format!(
            "active object {id:#x} on the runtime at {} was terminated",
            self.address().unwrap_or("(not serving)")
        );
        for inbound in mailbox.close().into_iter().chain(rest) {
            inbound.reply.send(
                self,
                Outcome::failure(Status::NoSuchObject, why.clone()),
                None,
            );
        }
    }

    /// Removes object `object` from this runtime at once (see
    /// [`Node::discard`]): `false` if it does not live here. `node` is the
    /// node the request named; the object goes whichever node hosts it.
    ///
    /// Its body's task is aborted where it stands, and what the body held
    /// is answered as by a dead runtime (see `Drop for Body`); what waits
    /// in its mailbox too, here. A method past the abort's reach (running
    /// on a thread, see `compute`) runs to its end, but nothing of it
    /// leaves: its sends fail, its reply is not given. The object leaves
    /// the runtime's tables as on termination, and the interceptors of its
    /// node are told ([`Interceptor::left`](crate::intercept::Interceptor::left)).
    fn discard_here(&self, node: &str, object: u64) -> bool {
        let (mailbox, home, type_name) = {
            // Under the table's lock: a body that ends meanwhile (it
            // leaves the table first) sees the mark when it has ended.
            let objects = self.inner.objects.read().unwrap_or_else(|p| p.into_inner());
            let Some(Hosted::Here {
                mailbox,
                node: home,
                type_name,
                abort,
                ..
            }) = objects.get(&object)
            else {
                return false;
            };
            {
                let mut discarded = self
                    .inner
                    .discarded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if discarded.contains(&mailbox.instance()) {
                    // Another discard of it is under way.
                    return false;
                }
                discarded.push(mailbox.instance());
            }
            self.inner.discarding.fetch_add(1, Ordering::Release);
            // From now on the instance sends nothing, and its body stops
            // at its next step.
            mailbox.discard();
            abort.abort();
            (mailbox.clone(), home.clone(), *type_name)
        };
        tracing::debug!(
            object = format_args!("{object:#x}"),
            type_name,
            node = home.name,
            asked_on = node,
            "discarding an active object"
        );
        {
            let mut gone = self.inner.gone.lock().unwrap_or_else(|p| p.into_inner());
            if gone.len() >= GONE_KEPT {
                gone.pop_front();
            }
            gone.push_back(object);
        }
        // While it still holds its id, so that none of this touches an
        // instance restored under it.
        self.forget_object(object);
        let _ = self.unhold(object);
        self.remove_instance(object, &mailbox);
        let why = "it was discarded from this runtime before serving it";
        for inbound in mailbox.close() {
            crate::body::not_here(self, object, inbound.reply, why);
        }
        for i in home.interceptors() {
            if std::panic::catch_unwind(AssertUnwindSafe(|| i.left(object))).is_err() {
                tracing::error!(
                    object = format_args!("{object:#x}"),
                    "an interceptor panicked when told the object was discarded"
                );
            }
        }
        true
    }

    /// The task of a discarded instance ended: nothing of it runs any more.
    fn discard_done(&self, instance: u64) {
        let mut discarded = self
            .inner
            .discarded
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(at) = discarded.iter().position(|&i| i == instance) {
            discarded.swap_remove(at);
            self.inner.discarding.fetch_sub(1, Ordering::Release);
        }
    }

    /// Whether `instance` belongs to an object discarded here whose body's
    /// task still runs (a method past the abort's reach).
    fn is_discarded(&self, instance: u64) -> bool {
        self.inner.discarding.load(Ordering::Acquire) != 0
            && self
                .inner
                .discarded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&instance)
    }

    /// Whether object `id` was discarded here and not hosted here since.
    fn was_discarded(&self, id: u64) -> bool {
        self.inner
            .gone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// Removes object `id` from the table of objects if the instance
    /// hosted under it is the one behind `mailbox`. `false` when another
    /// instance lives under its id (one restored after this one was
    /// discarded): what the runtime keeps about the id is that one's.
    fn remove_instance(&self, id: u64, mailbox: &Mailbox) -> bool {
        let mut objects = self
            .inner
            .objects
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match objects.get(&id) {
            Some(Hosted::Here { mailbox: m, .. }) if std::ptr::eq(Arc::as_ptr(m), mailbox) => {
                objects.remove(&id);
                true
            }
            Some(Hosted::Here { .. }) => false,
            _ => true,
        }
    }

    /// Drops what this runtime keeps about object `id` besides its body:
    /// the names it is registered under and its sequence counters.
    fn forget_object(&self, id: u64) {
        self.inner
            .names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (r, _)| r.id != id);
        self.inner
            .seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(sender, _), _| *sender != id);
    }

    /// Terminates every active object of local node `node` at once (what
    /// their requests still queued get is `NoSuchObject`); returns how many.
    pub fn terminate_node(&self, node: &str) -> usize {
        let ended: Vec<(u64, Arc<Mailbox>)> = {
            let mut objects = self
                .inner
                .objects
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let ids: Vec<u64> = objects
                .iter()
                .filter(|(_, h)| matches!(h, Hosted::Here { node: n, .. } if n.name == node))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| match objects.remove(&id) {
                    Some(Hosted::Here { mailbox, .. }) => Some((id, mailbox)),
                    _ => None,
                })
                .collect()
        };
        for (id, mailbox) in &ended {
            self.forget_object(*id);
            let why = format!("active object {id:#x} was terminated with its node `{node}`");
            for inbound in mailbox.close() {
                inbound.reply.send(
                    self,
                    Outcome::failure(Status::NoSuchObject, why.clone()),
                    None,
                );
            }
            mailbox.stop();
        }
        ended.len()
    }

    /// Terminates `target` after the requests queued before this one
    /// (or at once, ahead of them, when `now`).
    pub(crate) fn terminate(&self, target: &ActiveRef, now: bool) -> Future<()> {
        let info = CallInfo {
            method: if now { "terminate_now" } else { "terminate" },
            immediate: now,
        };
        self.call_flags(target, &(), info, false, FLAG_TERMINATE)
    }

    /// Restores a checkpoint on a remote node (the migration's hand-over).
    pub(crate) async fn remote_restore(
        &self,
        url: &NodeUrl,
        checkpoint: Checkpoint,
        embedded: Vec<Arc<Slot>>,
        answers: Vec<crate::intercept::Replayed>,
    ) -> std::result::Result<(), String> {
        let restored: Future<RefWire> = self.control_holding(
            url,
            Control::Restore {
                node: url.name().to_owned(),
                checkpoint,
                answers,
            },
            "restore",
            embedded,
        );
        restored.await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// The objects that move from its nodes from now on, as they move (a
    /// migration asked by the program, a load-balancing service or a
    /// dashboard): what a deployment's timeline shows. A subscriber more
    /// than 1,024 moves behind misses the oldest.
    pub fn moves(&self) -> tokio::sync::broadcast::Receiver<ObjectMoved> {
        self.inner.moves.subscribe()
    }

    /// Tells the subscribers of [`Runtime::moves`] that an object moved.
    pub(crate) fn announce_move(&self, moved: ObjectMoved) {
        let _ = self.inner.moves.send(moved);
    }

    /// Whether its objects count what they serve (the `object_stats`
    /// setting, or [`Runtime::set_object_stats`]).
    pub fn object_stats(&self) -> bool {
        self.inner.object_stats.load(Ordering::Relaxed)
    }

    /// Turns the counting of [`ObjectStats`] on or off for the objects
    /// of this runtime (a deployment with a dashboard turns it on).
    pub fn set_object_stats(&self, on: bool) {
        self.inner.object_stats.store(on, Ordering::Relaxed);
    }

    /// Number of active objects hosted here (not counting forwarders).
    pub fn object_count(&self) -> usize {
        self.inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|h| matches!(h, Hosted::Here { .. }))
            .count()
    }

    /// A reference to object `id`, of registered type `type_name`, on node
    /// `node` of the runtime at `address`: what a deployment's dashboard
    /// makes of the objects its runtimes list, to act on one (migrate
    /// it). Calls through it fail with `NoSuchObject` when no such object
    /// lives there.
    pub fn reference(&self, address: &str, node: &str, id: u64, type_name: &str) -> ActiveRef {
        ActiveRef::from_wire(
            RefWire {
                id,
                address: address.to_owned(),
                node: node.to_owned(),
                type_name: type_name.to_owned(),
            },
            Some(self.clone()),
        )
    }

    /// Every active object living here: its id, node, registered type and
    /// the requests waiting in its queue (what a deployment's dashboard
    /// shows), in id order.
    pub fn objects_here(&self) -> Vec<ObjectHere> {
        let stats_on = self.object_stats();
        let mut out: Vec<ObjectHere> = self
            .inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(id, h)| match h {
                Hosted::Here {
                    mailbox,
                    node,
                    type_name,
                    ..
                } => {
                    let queued = mailbox.len();
                    let published = mailbox.stats.read();
                    // An idle object is woken to measure its state anew.
                    if queued == 0 && published.as_ref().is_none_or(|p| p.stale()) && stats_on {
                        mailbox.notify();
                    }
                    Some(ObjectHere {
                        id: *id,
                        node: node.name.clone(),
                        type_name,
                        queued,
                        stats: published.map(|p| ObjectStats {
                            served: p.served,
                            callers: p.callers,
                            other_callers: p.other_callers,
                            state_bytes: p.state_bytes,
                        }),
                    })
                }
                Hosted::Moved { .. } => None,
            })
            .collect();
        out.sort_by_key(|o| o.id);
        out
    }

    /// The active objects living on local node `node`, with the requests
    /// waiting in their queues (for services that place objects).
    pub fn hosted_on(&self, node: &str) -> Vec<HostedObject> {
        let address = self.address().unwrap_or_default().to_owned();
        self.inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(id, h)| match h {
                Hosted::Here {
                    mailbox,
                    node: n,
                    type_name,
                    ..
                } if n.name == node => Some(HostedObject {
                    reference: ActiveRef::from_wire(
                        RefWire {
                            id: *id,
                            address: address.clone(),
                            node: node.to_owned(),
                            type_name: (*type_name).to_owned(),
                        },
                        Some(self.clone()),
                    ),
                    type_name,
                    queued: mailbox.len(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Requests waiting in the queue of a local object, if it is here.
    pub fn queue_length(&self, object: u64) -> Option<usize> {
        match self
            .inner
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&object)
        {
            Some(Hosted::Here { mailbox, .. }) => Some(mailbox.len()),
            _ => None,
        }
    }

    /// Decodes a value with this runtime's context (binding proxies and
    /// futures inside it).
    pub fn decode<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> std::result::Result<T, codec::DecodeError> {
        codec::decode_in(self, &[], bytes)
    }
}

/// Why a request did not leave.
enum Unsent {
    /// It failed: the caller's outcome.
    Failed(Outcome),
    /// Encoding its arguments panicked: the panic goes on in the caller.
    Panicked(Box<dyn std::any::Any + Send>),
}

fn dead(conn: &Conn) -> Outcome {
    let why = conn.failure().unwrap_or_else(|| "connection closed".into());
    Outcome::failure(
        Status::NodeDied,
        format!("the runtime at {} is unreachable: {why}", conn.peer),
    )
}

/// Reads frames until the stream ends, fails, or the connection is failed
/// from elsewhere (heartbeat timeout, shutdown).
pub(crate) async fn read_frames(conn: Arc<Conn>, mut inbound: tonic::Streaming<wire::Frame>) {
    loop {
        let next = tokio::select! {
            next = inbound.message() => next,
            () = conn.closed() => return,
        };
        match next {
            Ok(Some(frame)) => {
                let full = conn.receive(frame);
                if !full.is_empty() {
                    wait_for_room(&conn, full).await;
                }
            }
            Ok(None) => return conn.fail("the stream was closed by the other end".into()),
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                tracing::warn!(
                    "refused a message from {}: {} (the max_message_size setting)",
                    conn.peer,
                    status.message()
                );
                return conn.fail(format!(
                    "it sent a message over this runtime's max_message_size: {}",
                    status.message()
                ));
            }
            Err(status) => {
                return conn.fail(format!("the stream broke: {}", status.message()));
            }
        }
    }
}

/// Stops reading from `conn` until every queue in `full` drained to half
/// its bounds: the other end's writes then wait on flow control, and its
/// callers on their futures.
async fn wait_for_room(conn: &Arc<Conn>, full: Vec<Arc<Mailbox>>) {
    let Some(rt) = conn.runtime() else {
        return;
    };
    conn.pause(true);
    tracing::debug!(peer = %conn.peer, "paused reading: a queue is full");
    for mailbox in full {
        tokio::select! {
            () = rt.wait_for_space(&mailbox) => {}
            () = conn.closed() => break,
        }
    }
    conn.pause(false);
}

/// The header in which a runtime opening a stream says the address it
/// serves at, so that the other end may call it on the same connection.
const REACHABLE_AT: &str = "actogrid-reachable-at";

/// The header of the second stream a runtime opens on a connection whose
/// first stream said where it serves: the other end's calls to it.
const RETURN_STREAM: &str = "actogrid-return-stream";

/// The address a stream's opener says it serves at, when it can be
/// believed: the opener is an authenticated runtime, and the address is
/// on the IP its connection comes from (no runtime can draw to itself
/// the calls meant for a runtime on another machine), unless `relayed`
/// says the opener comes through a relay this runtime set up.
fn claimed_address<T>(
    request: &tonic::Request<T>,
    info: &crate::accept::ConnInfo,
    principal: &crate::tls::Principal,
    relayed: impl Fn(u64) -> bool,
) -> Option<String> {
    let crate::tls::Principal::Runtime(id) = principal else {
        return None;
    };
    let claimed = request.metadata().get(REACHABLE_AT)?.to_str().ok()?;
    let (host, port) = split_address(claimed);
    let ip: std::net::IpAddr = host.parse().ok()?;
    if port == 0 {
        return None;
    }
    if relayed(*id) {
        return Some(claimed.to_owned());
    }
    let from = info.remote?;
    (ip.to_canonical() == from.to_canonical()).then(|| claimed.to_owned())
}

/// The endpoint of the wire at `address`, with the settings of `config`.
pub(crate) fn wire_endpoint(
    address: &str,
    config: &Config,
) -> std::result::Result<tonic::transport::Endpoint, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("`{address}` is not a runtime address: {e}"))?;
    Ok(endpoint
        .connect_timeout(config.connect_timeout)
        .http2_keep_alive_interval(config.heartbeat_interval)
        .keep_alive_timeout(config.heartbeat_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .tcp_nodelay(true))
}

/// Makes the TLS handshake on `io` when `tls` is given: the stream and who
/// the other end is.
pub(crate) async fn secure(
    io: Box<dyn Io>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> io::Result<(Box<dyn Io>, crate::tls::Principal)> {
    let Some(config) = tls else {
        return Ok((io, crate::tls::Principal::Plaintext));
    };
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(crate::tls::server_name(), io)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
    let principal = crate::tls::principal_of_chain(tls.get_ref().1.peer_certificates());
    Ok((Box::new(tls), principal))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Splits `host:port` (IPv6 in brackets).
pub(crate) fn split_address(address: &str) -> (&str, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[').trim_end_matches(']'),
            port.parse().unwrap_or(0),
        ),
        None => (address, 0),
    }
}

pub(crate) fn join_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Accepts streams from other runtimes.
struct WireService {
    rt: Runtime,
}

#[tonic::async_trait]
impl wire::wire_server::Wire for WireService {
    type OpenStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = std::result::Result<wire::Frame, tonic::Status>> + Send>,
    >;

    async fn open(
        &self,
        request: tonic::Request<tonic::Streaming<wire::Frame>>,
    ) -> std::result::Result<tonic::Response<Self::OpenStream>, tonic::Status> {
        use futures::StreamExt;
        let Some(info) = request
            .extensions()
            .get::<crate::accept::ConnInfo>()
            .cloned()
        else {
            return Err(tonic::Status::internal(
                "a connection without its information",
            ));
        };
        let principal = info.principal();
        if principal == crate::tls::Principal::Anonymous {
            tracing::warn!(
                "refused a stream from {}: it presented no certificate of this runtime's domain",
                info.peer
            );
            return Err(tonic::Status::unauthenticated(
                "a certificate of this deployment is needed (runtimes get one when they enroll)",
            ));
        }
        let config = self.rt.config().clone();
        if request.metadata().contains_key(RETURN_STREAM) {
            // The second stream of a connection whose first one said where
            // its runtime serves: this runtime's calls there take it.
            let Some((conn, batched)) = info.state.take_return() else {
                return Err(tonic::Status::failed_precondition(
                    "no calls back on this connection: they need a runtime's certificate and an address on the IP the connection comes from",
                ));
            };
            self.rt.spawn(read_frames(conn, request.into_inner()));
            return Ok(tonic::Response::new(Box::pin(batched.map(Ok))));
        }
        info.state.establish();
        let reachable_at =
            claimed_address(&request, &info, &principal, |id| self.rt.is_relayed(id));
        let inbound = request.into_inner();
        let (conn, batched) = Conn::new(&self.rt, info.peer.clone(), None);
        conn.set_principal(principal.clone());
        self.rt.spawn(
            conn.clone()
                .heartbeat(config.heartbeat_interval, config.heartbeat_timeout),
        );
        if let Some(at) = reachable_at {
            // Calls to `at` queue on the stream to come from now on, so
            // none made in answer to what this stream brings dials anew.
            let (back, back_batched) = Conn::new(&self.rt, at.clone(), Some(at.clone()));
            back.set_principal(principal);
            self.rt.offer_connection(&at, &back);
            info.state.expect_return(back.clone(), back_batched);
            self.rt.spawn(
                back.clone()
                    .heartbeat(config.heartbeat_interval, config.heartbeat_timeout),
            );
            let main = conn.clone();
            self.rt.spawn(async move {
                tokio::select! {
                    () = main.closed() => back.fail("the connection's other stream ended".into()),
                    () = back.closed() => {}
                }
            });
        }
        self.rt.spawn(read_frames(conn.clone(), inbound));
        Ok(tonic::Response::new(Box::pin(batched.map(Ok))))
    }

    async fn enroll(
        &self,
        request: tonic::Request<wire::EnrollRequest>,
    ) -> std::result::Result<tonic::Response<wire::EnrollReply>, tonic::Status> {
        let info = request
            .extensions()
            .get::<crate::accept::ConnInfo>()
            .cloned();
        let peer = info
            .as_ref()
            .map_or_else(|| "a client".to_owned(), |i| i.peer.clone());
        let refuse = |why: String| {
            tracing::warn!("refused to enroll a runtime from {peer}: {why}");
            tonic::Status::permission_denied(why)
        };
        let enroller = self
            .rt
            .inner
            .enroller
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| refuse("this runtime enrolls no one".into()))?;
        let identity = &self.rt.inner.identity;
        let request = request.into_inner();
        if identity.is_plaintext() {
            // No certificate to issue: the ticket still decides.
            if !crate::ids::is_runtime(request.runtime) {
                return Err(refuse("the request names no runtime id".into()));
            }
            enroller
                .admit(&request.ticket, request.runtime, &peer)
                .map_err(&refuse)?;
            return Ok(tonic::Response::new(wire::EnrollReply::default()));
        }
        let (Some(authority), Some(roots)) = (identity.authority(), identity.roots_pem()) else {
            return Err(refuse("this runtime cannot issue certificates".into()));
        };
        let (id, certificate) = authority
            .sign_request(&request.csr)
            .map_err(|e| refuse(e.0))?;
        enroller
            .admit(&request.ticket, id, &peer)
            .map_err(&refuse)?;
        if let Some(info) = &info {
            info.enrolled_as(crate::tls::Principal::Runtime(id));
        }
        tracing::debug!("enrolled runtime {id:#x} from {peer}");
        Ok(tonic::Response::new(wire::EnrollReply {
            certificate: certificate.into(),
            chain: authority.cert_pem(),
            roots: roots.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests;
