//! [`ActiveRef`]: the untyped reference to an active object that every
//! generated proxy wraps. Cheap to clone; serializable, so proxies can be
//! passed to other active objects and bind to the runtime that decodes
//! them.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::NodeUrl;
use crate::codec;
use crate::connection::Conn;
use crate::error::CallError;
use crate::future::{Future, Status};
use crate::runtime::Runtime;

/// What a proxy method passes to the runtime about the call.
#[derive(Debug, Clone, Copy)]
pub struct CallInfo {
    /// The method's name.
    pub method: &'static str,
    /// Served ahead of queued requests.
    pub immediate: bool,
}

/// The untyped reference behind every proxy.
#[derive(Clone)]
pub struct ActiveRef {
    pub(crate) inner: Arc<RefInner>,
}

pub(crate) struct RefInner {
    pub(crate) id: u64,
    /// `host:port` of the runtime that created the object; empty when that
    /// runtime does not serve (the object is reachable from it only).
    pub(crate) address: String,
    pub(crate) node: String,
    pub(crate) type_name: String,
    pub(crate) runtime: Option<Runtime>,
    /// What the last call through this reference looked up, so a stream
    /// of calls skips the runtime's tables.
    pub(crate) cache: Mutex<RouteCache>,
}

/// See [`RefInner::cache`].
#[derive(Default)]
pub(crate) struct RouteCache {
    /// The sequence counter of the last sender.
    pub(crate) seq: Option<(u64, Arc<AtomicU64>)>,
    /// The connection to the last address called.
    pub(crate) conn: Option<(String, Arc<Conn>)>,
}

/// How a reference travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefWire {
    pub(crate) id: u64,
    pub(crate) address: String,
    pub(crate) node: String,
    pub(crate) type_name: String,
}

impl fmt::Debug for ActiveRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:#x} at actogrid://{}/{}",
            self.inner.type_name, self.inner.id, self.inner.address, self.inner.node
        )
    }
}

impl ActiveRef {
    pub(crate) fn from_wire(wire: RefWire, runtime: Option<Runtime>) -> ActiveRef {
        ActiveRef {
            inner: Arc::new(RefInner {
                id: wire.id,
                address: wire.address,
                node: wire.node,
                type_name: wire.type_name,
                runtime,
                cache: Mutex::default(),
            }),
        }
    }

    pub(crate) fn to_wire(&self) -> RefWire {
        RefWire {
            id: self.inner.id,
            address: self.inner.address.clone(),
            node: self.inner.node.clone(),
            type_name: self.inner.type_name.clone(),
        }
    }

    /// The object's id, unique across the application.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The registered type name.
    pub fn type_name(&self) -> &str {
        &self.inner.type_name
    }

    /// The node the object was created on (it may have migrated since).
    pub fn node_url(&self) -> Option<NodeUrl> {
        let (host, port) = self.inner.address.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some(NodeUrl::new(
            host,
            port.parse().ok()?,
            self.inner.node.clone(),
        ))
    }

    /// The runtime this reference sends through.
    pub fn runtime(&self) -> Option<&Runtime> {
        self.inner.runtime.as_ref()
    }

    fn unbound<T, E>(&self, method: &'static str) -> Future<T, E> {
        Future::failed(
            Status::Refused,
            format!(
                "`{method}` on {self:?}: this proxy was decoded outside of any actogrid runtime; \
                 pass it through a call or bind it with Runtime::bind"
            ),
        )
    }

    /// Calls a method; the reply is decoded as `Result<U, E>` when the
    /// future is awaited.
    pub fn call<U, E, R: Serialize>(&self, request: R, info: CallInfo) -> Future<U, E> {
        match &self.inner.runtime {
            Some(rt) => rt.call(self, &request, info, false),
            None => self.unbound(info.method),
        }
    }

    /// Calls a method that returns a future: the caller's future takes
    /// that future's value (automatic continuation).
    pub fn call_forwarded<U, E, R: Serialize>(&self, request: R, info: CallInfo) -> Future<U, E> {
        match &self.inner.runtime {
            Some(rt) => rt.call(self, &request, info, true),
            None => self.unbound(info.method),
        }
    }

    /// Sends a one-way request: no reply, no future. Fails only when the
    /// request cannot even be sent.
    pub fn send<R: Serialize>(&self, request: R, info: CallInfo) -> Result<(), CallError> {
        match &self.inner.runtime {
            Some(rt) => rt.send(self, &request, info),
            None => Err(CallError::Refused {
                method: info.method,
                reason: "this proxy was decoded outside of any actogrid runtime".into(),
            }),
        }
    }

    /// Moves the object to `node` between two requests: requests queued
    /// before this one are served where the object is now, later ones
    /// where it goes. Callers keep their proxies. Fails with
    /// [`CallError::Refused`] if the state cannot be serialized or the
    /// target refuses it.
    pub fn migrate_to(&self, node: &NodeUrl) -> Future<()> {
        match &self.inner.runtime {
            Some(rt) => rt.migrate(self, node, false),
            None => self.unbound("migrate_to"),
        }
    }

    /// Moves the object to `node` at its next request boundary, ahead of
    /// the requests waiting in its queue, which move with it and are
    /// served there in the same order (what a load balancer wants: the
    /// waiting work leaves with the object). Otherwise like
    /// [`ActiveRef::migrate_to`].
    pub fn migrate_now(&self, node: &NodeUrl) -> Future<()> {
        match &self.inner.runtime {
            Some(rt) => rt.migrate(self, node, true),
            None => self.unbound("migrate_now"),
        }
    }
}

impl ActiveRef {
    /// Ends the object once the requests queued before this one are
    /// served: it leaves its runtime (names included), and later calls
    /// fail with [`CallError::NoSuchObject`]. The future completes when it
    /// has ended.
    pub fn terminate(&self) -> Future<()> {
        match &self.inner.runtime {
            Some(rt) => rt.terminate(self, false),
            None => self.unbound("terminate"),
        }
    }

    /// Like [`ActiveRef::terminate`], but ahead of the requests waiting in
    /// its queue, which fail with [`CallError::NoSuchObject`].
    pub fn terminate_now(&self) -> Future<()> {
        match &self.inner.runtime {
            Some(rt) => rt.terminate(self, true),
            None => self.unbound("terminate_now"),
        }
    }
}

impl Serialize for ActiveRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_wire().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ActiveRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = RefWire::deserialize(d)?;
        Ok(ActiveRef::from_wire(wire, codec::decoding_runtime()))
    }
}
