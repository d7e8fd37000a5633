//! Interception points on the body: what fault tolerance, load balancing
//! and other technical services build on, and nothing else.
//!
//! An [`Interceptor`] installed on a node sees every request delivered to
//! every active object of that node:
//! * *before delivery*, at a request boundary: it may log the request,
//!   delay it (the hook is async), take a [`Checkpoint`] of the object,
//!   drop the request (a duplicate after a recovery, say), refuse it, or
//!   turn it away as stale ([`Verdict::Stale`]: sent by an execution a
//!   rollback discarded, whose sender will send that number again);
//! * *after serve*, also at a request boundary;
//! * *before send*, for every request an object of the node sends: it may
//!   piggyback a protocol header, which the receiver's interceptors read
//!   back in [`Delivery::header`].
//!
//! The application never sees any of it.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::active::ErasedActive;
use crate::body::Order;
use crate::codec;

/// A request about to be served.
#[derive(Debug)]
pub struct Delivery<'a> {
    /// The object the request is for.
    pub object: u64,
    /// Its registered type name.
    pub type_name: &'static str,
    /// The sending object (or the sending runtime's client id).
    pub sender: u64,
    /// The sender's sequence number for this object; 0 for immediate
    /// requests, which are not ordered.
    pub seq: u64,
    /// The method called.
    pub method: &'static str,
    /// Whether the request is served ahead of the queue.
    pub immediate: bool,
    /// The protocol header the sender's interceptors piggybacked.
    pub header: &'a [u8],
    /// The encoded request.
    pub payload: &'a [u8],
    /// Whether it is served again from a log by a recovery
    /// ([`Node::recover`](crate::Node::recover)): it was logged already.
    pub replayed: bool,
}

/// What to do with a request after `before_delivery`.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Serve it.
    Deliver,
    /// Serve it now, while `Hold` is still on its way (a log write, say),
    /// and let nothing of the service leave before the hold is done: its
    /// reply, the requests the object sends meanwhile (a send waits for
    /// the hold), its journaled effects. A method seen sending during a
    /// hold waits for the hold before it is served, the next times. A
    /// hold that fails drops the request as [`Verdict::Drop`] does, after
    /// the fact: no reply, nothing sent; its caller keeps the request.
    DeliverHeld(Hold),
    /// Drop it without serving or replying (a duplicate).
    Drop,
    /// Do not serve it, and answer its caller `CallError::Refused` with
    /// this reason (the request cannot be served here, ever).
    Refuse(String),
    /// Do not serve it: it belongs to an execution a rollback discarded
    /// (its sender's stamp is from an older epoch, say), and this reason
    /// says so. Unlike [`Verdict::Drop`] and [`Verdict::Refuse`], its
    /// sequence number is not used up: it is expected again, so the
    /// request its sender sends under that number after its own rollback
    /// is served, in its sender's order (the sender's later requests wait
    /// for it). Its caller is answered `CallError::Refused` with the
    /// reason (a discarded instance, or one about to be rolled back: it
    /// must not wait for a reply that will not come). The interceptors
    /// before the one that says so see it end as
    /// [`ServeOutcome::Dropped`], as for [`Verdict::Drop`].
    Stale(String),
}

/// What a served request waits for before anything of it leaves (see
/// [`Verdict::DeliverHeld`]): `Err` says why it must not.
#[derive(Clone)]
pub struct Hold(futures::future::Shared<BoxFuture<'static, Result<(), String>>>);

impl Hold {
    /// A hold done when `fut` is. `fut` is driven only while someone waits
    /// for the hold (the body, after serving): work that must go on while
    /// the request is served is started before (queued, or spawned).
    pub fn new(
        fut: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
    ) -> Hold {
        use futures::FutureExt as _;
        Hold(fut.boxed().shared())
    }

    /// Whether it is done, and how.
    pub(crate) fn peek(&self) -> Option<Result<(), String>> {
        self.0.peek().cloned()
    }

    /// Waits for it.
    pub(crate) async fn wait(&self) -> Result<(), String> {
        self.0.clone().await
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peek() {
            None => f.write_str("Hold(pending)"),
            Some(r) => write!(f, "Hold({r:?})"),
        }
    }
}

/// Waits until nothing holds back what the request the calling method
/// serves produces (see [`Verdict::DeliverHeld`]): at once outside a
/// method, or when the request is not held. `Err` says why it must not
/// leave: the request was dropped after the fact.
pub async fn released() -> Result<(), String> {
    match crate::future::serving().filter(|s| s.held) {
        Some(s) => match s.runtime.get().and_then(|rt| rt.hold_of(s.object)) {
            Some(hold) => hold.wait().await,
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// How serving ended, for `after_serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ServeOutcome {
    /// The method returned a value.
    Value,
    /// The method returned its error type.
    MethodError,
    /// The method panicked.
    Panicked,
    /// The request was refused (it did not decode).
    Refused,
    /// A later interceptor dropped, refused or turned it away as stale
    /// ([`Verdict::Drop`], [`Verdict::Refuse`], [`Verdict::Stale`]), or
    /// its hold failed: not served.
    Dropped,
}

/// A request about to be sent by an object of the node.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The sending object.
    pub sender: u64,
    /// The receiving object.
    pub target: u64,
    /// The sequence number the request carries.
    pub seq: u64,
    /// A one-way request: no reply will come.
    pub one_way: bool,
    /// The header to piggyback; empty unless an interceptor writes it.
    pub header: &'a mut Vec<u8>,
    /// The encoded request (as [`Delivery::payload`] will be).
    pub payload: &'a [u8],
}

/// A reply arrived for a call an object of the node made (see
/// [`Interceptor::reply_received`]).
#[derive(Debug)]
pub struct Returned<'a> {
    /// The calling object.
    pub caller: u64,
    /// The object that replied.
    pub target: u64,
    /// The request's sequence number.
    pub seq: u64,
    /// The header the replier's interceptors wrote
    /// ([`Interceptor::reply_header`]); empty if none did.
    pub header: &'a [u8],
}

/// The state of an object at a request boundary, enough to restore it
/// elsewhere with [`Node::restore`](crate::Node::restore).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Registered type name.
    pub type_name: String,
    /// Object id (kept across restores, so proxies keep working).
    pub object: u64,
    /// The encoded state.
    pub state: Vec<u8>,
    /// For each sender, the next sequence number the object expects:
    /// earlier ones were served and are duplicates after a restore.
    pub next_seq: Vec<(u64, u64)>,
    /// For each object this one sends to, the next sequence number it
    /// uses, so its requests are not taken for duplicates after a restore.
    /// Required in every encoding: without it the restored object's sends
    /// would start over at 1 and be refused as duplicates.
    pub sent_seq: Vec<(u64, u64)>,
    /// The secret the object's id is derived from: with it, the object
    /// restored elsewhere proves its id to other runtimes (see
    /// `docs/security.md`). Absent on a runtime without TLS. Keep
    /// checkpoints as private as the object's state.
    #[serde(default)]
    pub secret: Option<SenderSecret>,
    /// The runtimes that hosted the object, most recent last: they may
    /// still pass on requests sent to it while it moved.
    #[serde(default)]
    pub hosts: Vec<u64>,
}

pub use crate::sender::SenderSecret;

/// A request as a fault-tolerance service logs it (from a [`Delivery`]),
/// to be served again after a restore: see [`Node::recover`](crate::Node::recover).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Logged {
    /// Its sender (an object or a runtime).
    pub sender: u64,
    /// The sender's sequence number; 0 for an immediate request.
    pub seq: u64,
    /// Whether it was served ahead of the queue.
    pub immediate: bool,
    /// The protocol header it carried.
    pub header: Vec<u8>,
    /// The encoded request.
    pub payload: Vec<u8>,
}

impl Logged {
    /// The request `delivery` describes.
    pub fn of(delivery: &Delivery<'_>) -> Logged {
        Logged {
            sender: delivery.sender,
            seq: delivery.seq,
            immediate: delivery.immediate,
            header: delivery.header.to_vec(),
            payload: delivery.payload.to_vec(),
        }
    }
}

/// A reply as it leaves a body: how serving ended, and the encoded value,
/// error or message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// How serving ended.
    pub outcome: ServeOutcome,
    /// The encoded value (or method error); for the other outcomes, what
    /// went wrong, as text. Empty for a one-way request. Futures inside a
    /// value are not kept: one answered again from a log decodes failed.
    pub payload: Vec<u8>,
}

/// How a logged request was answered when it was served again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Replayed {
    /// The request's sender.
    pub sender: u64,
    /// Its sequence number.
    pub seq: u64,
    /// Its reply: [`ServeOutcome::Refused`] also for a request the
    /// checkpoint had served already (it is not served again).
    pub reply: Reply,
}

/// A checkpoint restored with its log replayed ([`Node::recover`](crate::Node::recover)).
#[derive(Debug, serde::Deserialize)]
pub struct Recovered {
    /// The restored object (same id as before).
    pub reference: crate::proxy::ActiveRef,
    /// How each logged request was answered, in the log's order.
    pub replies: Vec<Replayed>,
}

/// Why a checkpoint could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The type does not implement `Serialize`.
    #[error("`{0}` does not implement serde::Serialize, so it cannot be checkpointed")]
    NotSerializable(&'static str),
    /// The state did not encode.
    #[error("the state of `{type_name}` does not encode: {reason}")]
    Encode {
        /// Type name.
        type_name: &'static str,
        /// Encoder message.
        reason: String,
    },
}

/// What an interceptor may do to the object at a request boundary.
pub struct BodyAccess<'a> {
    pub(crate) runtime: &'a crate::Runtime,
    pub(crate) body: &'a dyn ErasedActive,
    pub(crate) id: u64,
    pub(crate) order: &'a Order,
    pub(crate) credentials: &'a crate::sender::Credentials,
}

impl BodyAccess<'_> {
    /// The object's id.
    pub fn object(&self) -> u64 {
        self.id
    }

    /// The runtime hosting it.
    pub fn runtime(&self) -> &crate::Runtime {
        self.runtime
    }

    /// Takes a checkpoint of the object's state, as it is between two
    /// requests.
    pub fn checkpoint(&self) -> Result<Checkpoint, CheckpointError> {
        let type_name = self.body.type_name();
        let state = self
            .body
            .state()
            .ok_or(CheckpointError::NotSerializable(type_name))?;
        // A panic in the program's `Serialize` is an encoding failure like
        // any other: the object goes on serving.
        let mut bytes = Vec::new();
        if let Err(e) = codec::encode_into(state, &mut bytes) {
            let reason = match e {
                codec::EncodeFailure::Error(e) => e.to_string(),
                codec::EncodeFailure::Panic(panic) => {
                    let why = crate::panics::describe(&*panic);
                    tracing::error!(
                        object = format_args!("{:#x}", self.id),
                        type_name,
                        "encoding a checkpoint panicked; the object goes on serving: {why}"
                    );
                    format!("its Serialize implementation panicked: {why}")
                }
            };
            return Err(CheckpointError::Encode { type_name, reason });
        }
        let state = bytes;
        Ok(Checkpoint {
            type_name: type_name.to_owned(),
            object: self.id,
            state,
            next_seq: self.order.table(),
            sent_seq: self.runtime.sent_by(self.id),
            secret: self.credentials.secret(),
            hosts: self.credentials.hosts_with(self.runtime.id()),
        })
    }
}

/// Where objects live now when the runtime they were reached at failed:
/// a fault-tolerance service's location service, installed on a runtime
/// with [`Runtime::set_locator`](crate::Runtime::set_locator). With one,
/// a call whose connection fails before its reply is not failed but sent
/// again, as it was (sender, sequence number, header, arguments), to
/// where [`Locator::locate`] says its object is now.
pub trait Locator: Send + Sync + 'static {
    /// Where `object`, last reached at the runtime at `address`, lives
    /// now (`host:port`), once it can be called there (its recovery may
    /// take a while: the future resolves when it is done). `None`: the
    /// object is not one this locator follows, or it cannot be recovered;
    /// its callers get `NodeDied`.
    fn locate<'a>(&'a self, object: u64, address: &'a str) -> BoxFuture<'a, Option<String>>;

    /// Why `object`, which [`Locator::locate`] did not find, cannot be
    /// called any more, when the locator knows (it followed the object and
    /// could not recover it): its callers' `NodeDied` says so. `None` by
    /// default.
    fn lost<'a>(&'a self, object: u64) -> BoxFuture<'a, Option<String>> {
        let _ = object;
        Box::pin(async { None })
    }
}

/// The request a method is serving, as [`serving_request`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingRequest {
    /// The object serving it.
    pub object: u64,
    /// Its sender.
    pub sender: u64,
    /// Its sequence number from that sender.
    pub seq: u64,
    /// Served again by a recovery, from its log ([`Delivery::replayed`]).
    pub replayed: bool,
}

/// The request the calling code serves, when it runs inside an active
/// object's method (including across the `.await`s of an `async` one):
/// for services that journal what a method does, such as a fault
/// tolerance service's record of non-deterministic results.
pub fn serving_request() -> Option<ServingRequest> {
    crate::future::serving_request()
}

/// A hook on every body of a node. All methods have do-nothing defaults.
pub trait Interceptor: Send + Sync + 'static {
    /// Before a request is served. Returning [`Verdict::Drop`] skips it
    /// (see [`Verdict`] for the others).
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        let _ = (delivery, body);
        Box::pin(async { Verdict::Deliver })
    }

    /// After a request was served, before its reply leaves.
    fn after_serve(&self, delivery: &Delivery<'_>, outcome: ServeOutcome, body: &BodyAccess<'_>) {
        let _ = (delivery, outcome, body);
    }

    /// Before an object of the node sends a request.
    fn before_send(&self, outgoing: &mut Outgoing<'_>) {
        let _ = outgoing;
    }

    /// After `after_serve`, with the reply about to leave: how serving
    /// ended and the encoded reply (as in [`Reply`]). A fault-tolerance
    /// service logs it here, to answer the request again if its caller
    /// sends it again (see [`Interceptor::duplicate`]).
    fn replied(&self, delivery: &Delivery<'_>, outcome: ServeOutcome, payload: &[u8]) {
        let _ = (delivery, outcome, payload);
    }

    /// After `replied`, with the object still at the request boundary
    /// (`body`): the header to piggyback on the reply (`payload`, as in
    /// `replied`), which the caller's interceptors read in
    /// [`Interceptor::reply_received`]; empty unless an interceptor writes
    /// it. (Replies a service gives from a log,
    /// [`Interceptor::duplicate`], carry none.)
    fn reply_header(
        &self,
        delivery: &Delivery<'_>,
        outcome: ServeOutcome,
        payload: &[u8],
        body: &BodyAccess<'_>,
        header: &mut Vec<u8>,
    ) {
        let _ = (delivery, outcome, payload, body, header);
    }

    /// After `reply_header`: what the reply must wait for before it leaves,
    /// if anything — output commit: a reply to a caller that cannot roll
    /// back leaves once nothing can undo the service that produced it.
    /// Only the reply waits; the object goes on serving. A hold that fails
    /// does not send the reply: the caller is answered as by a dead
    /// runtime (`NodeDied`, naming the object's runtime), so a caller that
    /// follows recoveries asks where the object lives now and sends the
    /// request again. `None` by default.
    fn reply_hold(&self, delivery: &Delivery<'_>, outcome: ServeOutcome) -> Option<Hold> {
        let _ = (delivery, outcome);
        None
    }

    /// A reply arrived for a call an object of the node made, before the
    /// call's future resolves: the reply is taken (nothing of the
    /// caller's has seen it yet), with the header the replier's
    /// interceptors wrote. For calls within the runtime and across
    /// runtimes alike; not for one-way or immediate requests.
    fn reply_received(&self, reply: &Returned<'_>) {
        let _ = reply;
    }

    /// A request that arrives after later ones of its sender were served:
    /// a duplicate (a caller that sent it again, not knowing it was
    /// served), or one later than the reorder timeout. It is not served
    /// again. The first interceptor that returns a reply answers it with
    /// that (the reply it got, which the service logged); if none does, it
    /// is refused.
    /// (The object serves nothing else meanwhile: a service that must ask
    /// elsewhere keeps it short.)
    fn duplicate<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Option<Reply>> {
        let _ = delivery;
        Box::pin(std::future::ready(None))
    }

    /// How long an object of the node may stay without a request before
    /// [`Interceptor::idle`] is called (and again after as long, while it
    /// stays idle); `None` (the default): never.
    fn idle_after(&self) -> Option<Duration> {
        None
    }

    /// An object was idle for [`Interceptor::idle_after`]: it is between two
    /// requests, so a checkpoint can be taken (a time-to-checkpoint that
    /// ran out while no request came).
    fn idle(&self, body: &BodyAccess<'_>) {
        let _ = body;
    }

    /// The object is asked to move to node `to` (a migration, by the
    /// program or by load balancing), at a request boundary: `Err(why)`
    /// refuses (the caller gets [`CallError`](crate::CallError) `Refused`
    /// with `why`, and the object stays and serves on). Every interceptor
    /// of the node must agree.
    fn may_move(&self, body: &BodyAccess<'_>, to: &crate::NodeUrl) -> Result<(), String> {
        let _ = (body, to);
        Ok(())
    }

    /// The object ends ([`ActiveRef::terminate`](crate::ActiveRef::terminate)):
    /// `body` is its last state, between two requests, and nothing of it
    /// runs any more. Called once, before it leaves the runtime's tables
    /// (and the requests queued behind the end are refused).
    fn ending(&self, body: &BodyAccess<'_>) {
        let _ = body;
    }

    /// Object `object` left this node: it moved to another node (the
    /// interceptors there see its next requests), or it was discarded
    /// ([`Node::discard`](crate::Node::discard)). What the service kept
    /// about it here is stale from now on (an instance restored here later
    /// is a new one).
    fn left(&self, object: u64) {
        let _ = object;
    }
}
