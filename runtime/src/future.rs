//! Futures: the results of asynchronous calls.
//!
//! A [`Future`] is a handle on a shared *slot* that a reply (or a forwarded
//! value) fills once. Awaiting it is wait-by-necessity: the caller only
//! blocks where the value is needed. Slots hold the reply still encoded, so
//! a value can be forwarded to other processes as it came, and every
//! holder decodes its own copy.
//!
//! Futures are first-class: encoding an unresolved future into a message
//! registers the message's destination as a *continuation* of the slot, and
//! the value follows when it arrives. A resolved future travels inline.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::connection::Route;
use crate::error::{CallError, NoError};
use crate::ids::IdMap;
use crate::runtime::{RtRef, Runtime};

/// A global future identity: the runtime that created it and a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FutureId {
    pub(crate) origin: u64,
    pub(crate) number: u64,
}

/// How a reply ended, before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Status {
    Ok,
    MethodError,
    Panicked,
    NoSuchObject,
    BadRequest,
    NodeDied,
    NotMigratable,
    Refused,
}

/// A filled slot: the encoded reply and the futures it embeds. Cheap to
/// clone: the payload is shared, and a reply seldom embeds futures.
#[derive(Clone)]
pub(crate) struct Outcome {
    pub(crate) status: Status,
    pub(crate) payload: bytes::Bytes,
    /// Slots of futures inside `payload`, kept alive until it is decoded.
    pub(crate) held: Vec<Arc<Slot>>,
    /// Where decoded proxies and futures bind.
    pub(crate) runtime: Option<RtRef>,
    /// The protocol header the replier's interceptors piggybacked
    /// ([`crate::intercept::Interceptor::reply_header`]); empty otherwise.
    pub(crate) header: bytes::Bytes,
}

impl Outcome {
    /// The reply of a method returning `()`.
    pub(crate) fn ok_unit() -> Outcome {
        Outcome {
            status: Status::Ok,
            payload: bytes::Bytes::new(),
            held: Vec::new(),
            runtime: None,
            header: bytes::Bytes::new(),
        }
    }

    pub(crate) fn failure(status: Status, message: impl Into<String>) -> Outcome {
        Outcome {
            status,
            payload: message.into().into_bytes().into(),
            held: Vec::new(),
            runtime: None,
            header: bytes::Bytes::new(),
        }
    }
}

enum SlotState {
    Pending {
        /// Tasks waiting: the first inline (one holder is the common
        /// case, and needs no allocation), others after it.
        waker: Option<Waker>,
        wakers: Vec<Waker>,
        continuations: Vec<Route>,
        followers: Vec<Arc<Slot>>,
        /// The future whose value this one takes (a flattened reply),
        /// kept alive until it resolves.
        following: Option<Arc<Slot>>,
    },
    Ready(Outcome),
}

/// What a call slot knows about its call, for error messages and for the
/// direct-deadlock check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallSite {
    pub(crate) target: u64,
    pub(crate) method: &'static str,
}

/// The shared cell behind every copy of a future.
pub(crate) struct Slot {
    pub(crate) id: FutureId,
    pub(crate) call: Option<CallSite>,
    /// The reply is itself a future whose value this slot takes.
    pub(crate) flatten: bool,
    state: Mutex<SlotState>,
    table: Weak<FutureTable>,
    /// Whether the table knows this slot by id (most call slots never are,
    /// and their drop then skips the table's lock).
    published: std::sync::atomic::AtomicBool,
}

impl Slot {
    pub(crate) fn new(
        id: FutureId,
        call: Option<CallSite>,
        flatten: bool,
        table: Weak<FutureTable>,
    ) -> Arc<Slot> {
        Arc::new(Slot {
            id,
            call,
            flatten,
            state: Mutex::new(SlotState::Pending {
                waker: None,
                wakers: Vec::new(),
                continuations: Vec::new(),
                followers: Vec::new(),
                following: None,
            }),
            table,
            published: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn ready(outcome: Outcome) -> Arc<Slot> {
        Arc::new(Slot {
            id: FutureId {
                origin: 0,
                number: 0,
            },
            call: None,
            flatten: false,
            state: Mutex::new(SlotState::Ready(outcome)),
            table: Weak::new(),
            published: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn outcome(&self) -> Option<Outcome> {
        match &*self.lock() {
            SlotState::Ready(o) => Some(o.clone()),
            SlotState::Pending { .. } => None,
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        matches!(&*self.lock(), SlotState::Ready(_))
    }

    /// Fills the slot (first fill wins) and passes the value on to every
    /// continuation and follower.
    pub(crate) fn resolve(self: &Arc<Self>, outcome: Outcome) {
        if self.flatten && outcome.status == Status::Ok {
            // The reply carries a future: take that future's value instead.
            match inner_of(&outcome) {
                Ok(inner) => {
                    match inner.follow(self.clone()) {
                        Some(ready) => self.fill(ready),
                        None => {
                            if let SlotState::Pending { following, .. } = &mut *self.lock() {
                                *following = Some(inner);
                            }
                        }
                    }
                    return;
                }
                Err(e) => {
                    self.fill(Outcome::failure(Status::BadRequest, e));
                    return;
                }
            }
        }
        self.fill(outcome);
    }

    fn fill(self: &Arc<Self>, outcome: Outcome) {
        let mut state = self.lock();
        if matches!(&*state, SlotState::Ready(_)) {
            // Already filled: keep the first value.
            return;
        }
        // Continuations and followers need the value after it is stored;
        // a plain call has neither, and its value is not copied.
        let shared = match &*state {
            SlotState::Pending {
                continuations,
                followers,
                ..
            } if !continuations.is_empty() || !followers.is_empty() => Some(outcome.clone()),
            _ => None,
        };
        let previous = std::mem::replace(&mut *state, SlotState::Ready(outcome));
        drop(state);
        let SlotState::Pending {
            waker,
            wakers,
            continuations,
            followers,
            following: _,
        } = previous
        else {
            return;
        };
        for w in waker.into_iter().chain(wakers) {
            crate::compute::wake(w);
        }
        let Some(outcome) = shared else {
            return;
        };
        if !continuations.is_empty() {
            for route in &continuations {
                route.forward_value(self.id, &outcome);
            }
            if let Some(table) = self.table.upgrade() {
                table.unpin(self.id);
            }
        }
        for f in followers {
            f.fill(outcome.clone());
        }
    }

    /// Makes `follower` take this slot's value; returns it if already there.
    fn follow(&self, follower: Arc<Slot>) -> Option<Outcome> {
        match &mut *self.lock() {
            SlotState::Ready(o) => Some(o.clone()),
            SlotState::Pending { followers, .. } => {
                followers.push(follower);
                None
            }
        }
    }

    /// Sends the value to `route` when it arrives (or now, if it is here).
    pub(crate) fn continue_to(self: &Arc<Self>, route: &Route) {
        let ready = match &mut *self.lock() {
            SlotState::Ready(o) => Some(o.clone()),
            SlotState::Pending { continuations, .. } => {
                if !continuations.iter().any(|r| Arc::ptr_eq(r, route)) {
                    continuations.push(route.clone());
                }
                None
            }
        };
        match ready {
            Some(o) => route.forward_value(self.id, &o),
            None => {
                if let Some(table) = self.table.upgrade() {
                    table.pin(self.clone());
                }
            }
        }
    }

    /// Waits until the slot is filled: its outcome.
    pub(crate) async fn settled(&self) -> Outcome {
        std::future::poll_fn(|cx| self.poll_outcome(cx)).await
    }

    fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        match &mut *self.lock() {
            SlotState::Ready(o) => Poll::Ready(o.clone()),
            SlotState::Pending { waker, wakers, .. } => {
                let known = waker
                    .iter()
                    .chain(wakers.iter())
                    .any(|w| w.will_wake(cx.waker()));
                if !known {
                    if waker.is_none() {
                        *waker = Some(cx.waker().clone());
                    } else {
                        wakers.push(cx.waker().clone());
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if *self.published.get_mut()
            && let Some(table) = self.table.upgrade()
        {
            table.forget(self.id);
        }
    }
}

fn inner_of(outcome: &Outcome) -> Result<Arc<Slot>, String> {
    let wire: FutureWire = match outcome.runtime {
        Some(rt) => codec::decode_with(rt, &outcome.held, &outcome.payload),
        None => codec::decode(&outcome.payload),
    }
    .map_err(|e| e.to_string())?;
    let runtime = outcome.runtime.and_then(RtRef::get);
    Ok(wire.into_slot(runtime.as_ref(), &outcome.held))
}

/// The futures a runtime knows by id: weakly, so a slot lives exactly as
/// long as some holder (a future, a pending call, a message being decoded)
/// needs it; strongly (*pinned*) while a continuation waits on it.
pub(crate) struct FutureTable {
    origin: u64,
    next: std::sync::atomic::AtomicU64,
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    known: IdMap<FutureId, Weak<Slot>>,
    pinned: IdMap<FutureId, Arc<Slot>>,
    /// Futures of requests a recovery serves again, waiting for their
    /// caller's copy of the request (see [`FutureTable::await_copy`]).
    uncopied: IdMap<FutureId, ()>,
}

/// How long a future argument of a request served again after a recovery
/// waits for its caller to send the request again (which brings its value)
/// before it fails.
pub(crate) const RECOVERED_VALUE_WAIT: Duration = Duration::from_secs(30);

impl FutureTable {
    pub(crate) fn new(origin: u64) -> Arc<FutureTable> {
        Arc::new(FutureTable {
            origin,
            next: std::sync::atomic::AtomicU64::new(1),
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh slot for a call. It enters the table only when encoded.
    pub(crate) fn new_slot(self: &Arc<Self>, call: Option<CallSite>, flatten: bool) -> Arc<Slot> {
        let number = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Slot::new(
            FutureId {
                origin: self.origin,
                number,
            },
            call,
            flatten,
            Arc::downgrade(self),
        )
    }

    /// Makes `slot` findable by id (done when it is first encoded).
    pub(crate) fn publish(&self, slot: &Arc<Slot>) {
        slot.published
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.lock()
            .known
            .entry(slot.id)
            .or_insert_with(|| Arc::downgrade(slot));
    }

    /// The slot for `id`, created pending if nobody holds it.
    pub(crate) fn get_or_create(self: &Arc<Self>, id: FutureId) -> Arc<Slot> {
        let mut inner = self.lock();
        if !inner.uncopied.is_empty() {
            // A request bringing it came: its value follows.
            inner.uncopied.remove(&id);
        }
        self.known_or_new(&mut inner, id).0
    }

    /// The slot `inner` knows for `id`, or a new pending one it knows
    /// from now on (then `true`).
    fn known_or_new(self: &Arc<Self>, inner: &mut TableInner, id: FutureId) -> (Arc<Slot>, bool) {
        if let Some(slot) = inner.known.get(&id).and_then(Weak::upgrade) {
            return (slot, false);
        }
        let slot = Slot::new(id, None, false, Arc::downgrade(self));
        slot.published
            .store(true, std::sync::atomic::Ordering::Relaxed);
        inner.known.insert(id, Arc::downgrade(&slot));
        (slot, true)
    }

    /// The slot for future `id`, an argument of a request of `object` that
    /// a recovery serves again. Its value went to the runtime that died,
    /// unless the request's copy already came here: a caller following the
    /// object's recovery sends the request again, and the value with it.
    /// Until such a copy comes, the slot waits for at most
    /// [`RECOVERED_VALUE_WAIT`], then fails saying why.
    pub(crate) fn await_copy(self: &Arc<Self>, id: FutureId, object: u64) -> Arc<Slot> {
        let slot = {
            let mut inner = self.lock();
            let (slot, new) = self.known_or_new(&mut inner, id);
            if !new {
                return slot;
            }
            inner.uncopied.insert(id, ());
            slot
        };
        let (table, waiting) = (Arc::downgrade(self), Arc::downgrade(&slot));
        let expire = async move {
            tokio::time::sleep(RECOVERED_VALUE_WAIT).await;
            let Some(table) = table.upgrade() else {
                return;
            };
            if table.lock().uncopied.remove(&id).is_none() {
                return;
            }
            if let Some(slot) = waiting.upgrade() {
                slot.resolve(Outcome::failure(
                    Status::NodeDied,
                    format!(
                        "this future, an argument of a request active object {object:#x} served \
                         again after its recovery, was pending when the object's runtime died, \
                         and its caller did not send the request again within {} s to bring \
                         its value (a one-way call, or a caller that does not follow \
                         recoveries)",
                        RECOVERED_VALUE_WAIT.as_secs()
                    ),
                ));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(expire)),
            Err(_) => slot.resolve(Outcome::failure(
                Status::NodeDied,
                "a future argument of a recovered request was decoded outside of a tokio runtime",
            )),
        }
        slot
    }

    /// The slot for `id`, if somebody still holds it.
    pub(crate) fn get(&self, id: FutureId) -> Option<Arc<Slot>> {
        self.lock().known.get(&id).and_then(Weak::upgrade)
    }

    fn pin(&self, slot: Arc<Slot>) {
        slot.published
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut inner = self.lock();
        inner
            .known
            .entry(slot.id)
            .or_insert_with(|| Arc::downgrade(&slot));
        inner.pinned.insert(slot.id, slot);
    }

    fn unpin(&self, id: FutureId) {
        let slot = self.lock().pinned.remove(&id);
        drop(slot);
    }

    fn forget(&self, id: FutureId) {
        let mut inner = self.lock();
        if let Some(w) = inner.known.get(&id)
            && w.strong_count() == 0
        {
            inner.known.remove(&id);
        }
    }

    /// Number of futures known by id (for tests of slot lifetimes).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().known.len()
    }
}

/// How a future travels inside a payload.
#[derive(Serialize, Deserialize)]
pub(crate) enum FutureWire {
    Pending(FutureId),
    Ready { status: Status, payload: Vec<u8> },
}

impl FutureWire {
    fn into_slot(self, runtime: Option<&Runtime>, held: &[Arc<Slot>]) -> Arc<Slot> {
        match self {
            FutureWire::Ready { status, payload } => Slot::ready(Outcome {
                status,
                payload: payload.into(),
                held: held.to_vec(),
                runtime: runtime.map(Runtime::handle),
                header: bytes::Bytes::new(),
            }),
            FutureWire::Pending(id) => match runtime {
                Some(rt) => match codec::restoring() {
                    // A checkpoint's state, or the arguments of a request
                    // a recovery serves again: the runtime that was to
                    // bring the value never heard of this one. A request's
                    // caller sends it again, and its values with it; a
                    // checkpoint's future would wait forever.
                    Some(object) if codec::replaying() => rt.futures().await_copy(id, object),
                    Some(object) => rt.futures().get(id).unwrap_or_else(|| {
                        Slot::ready(Outcome::failure(
                            Status::NodeDied,
                            format!(
                                "this future was pending when the checkpoint of active object \
                                 {object:#x} was taken, and a value is not forwarded to a \
                                 restored checkpoint; the call may or may not have been served"
                            ),
                        ))
                    }),
                    None => rt.futures().get_or_create(id),
                },
                None => Slot::ready(Outcome::failure(
                    Status::Refused,
                    "a future was decoded outside of any actogrid runtime",
                )),
            },
        }
    }
}

/// Encodes `slot` into the current message: inline when resolved,
/// otherwise by id with the message's destination as a continuation.
fn encode_slot(slot: &Arc<Slot>) -> FutureWire {
    if let Some(outcome) = slot.outcome() {
        for h in &outcome.held {
            note_embedded(h);
        }
        return FutureWire::Ready {
            status: outcome.status,
            payload: outcome.payload.to_vec(),
        };
    }
    note_embedded(slot);
    FutureWire::Pending(slot.id)
}

fn note_embedded(slot: &Arc<Slot>) {
    if codec::measuring() {
        return;
    }
    if let Some(table) = slot.table.upgrade() {
        table.publish(slot);
    }
    codec::with_encode_cx(|cx| {
        if let Some(cx) = cx {
            cx.futures.push(slot.clone());
        }
    });
}

/// The result of an asynchronous call.
///
/// `Future<T, E>` resolves to `Result<T, CallError<E>>`: `E` is the
/// method's own error type (methods returning `Result<T, E>`), and the
/// other [`CallError`] kinds say what went wrong around the call. Awaiting
/// is wait-by-necessity; a future can also be passed to another call, or
/// returned from one, before it is resolved.
pub struct Future<T, E = NoError> {
    slot: Arc<Slot>,
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    _value: PhantomData<fn() -> (T, E)>,
}

impl<T, E> Clone for Future<T, E> {
    fn clone(&self) -> Self {
        Future {
            slot: self.slot.clone(),
            timeout: self.timeout,
            sleep: None,
            _value: PhantomData,
        }
    }
}

impl<T, E> fmt::Debug for Future<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Future")
            .field("id", &self.slot.id)
            .field("resolved", &self.slot.is_ready())
            .finish()
    }
}

impl<T, E> Future<T, E> {
    pub(crate) fn from_slot(slot: Arc<Slot>, timeout: Option<Duration>) -> Self {
        Future {
            slot,
            timeout,
            sleep: None,
            _value: PhantomData,
        }
    }

    /// A future that failed before it was sent.
    pub(crate) fn failed(status: Status, message: impl Into<String>) -> Self {
        Self::from_slot(Slot::ready(Outcome::failure(status, message)), None)
    }

    /// Whether the value (or an error) has arrived.
    pub fn is_resolved(&self) -> bool {
        self.slot.is_ready()
    }

    /// Fails with [`CallError::Timeout`] if nothing arrived `after` the
    /// first poll. The call itself is not cancelled.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self.sleep = None;
        self
    }

    fn method(&self) -> &'static str {
        self.slot.call.map(|c| c.method).unwrap_or("?")
    }
}

impl<T: DeserializeOwned, E: DeserializeOwned> Future<T, E> {
    fn decode(&self, outcome: &Outcome) -> Result<T, CallError<E>> {
        fn decode<V: DeserializeOwned>(
            outcome: &Outcome,
            bytes: &[u8],
        ) -> Result<V, codec::DecodeError> {
            match outcome.runtime {
                Some(rt) => codec::decode_with(rt, &outcome.held, bytes),
                None => codec::decode(bytes),
            }
        }
        let text = || String::from_utf8_lossy(&outcome.payload).into_owned();
        let method = self.method();
        match outcome.status {
            Status::Ok => decode(outcome, &outcome.payload).map_err(|e| CallError::Decode {
                method,
                reason: e.to_string(),
            }),
            Status::MethodError => match decode(outcome, &outcome.payload) {
                Ok(e) => Err(CallError::Method(e)),
                Err(e) => Err(CallError::Decode {
                    method,
                    reason: e.to_string(),
                }),
            },
            Status::Panicked => Err(CallError::Panicked {
                method,
                message: text(),
            }),
            Status::NodeDied => Err(CallError::NodeDied {
                method,
                reason: text(),
            }),
            Status::NoSuchObject => Err(CallError::NoSuchObject { reason: text() }),
            Status::BadRequest | Status::NotMigratable | Status::Refused => {
                Err(CallError::Refused {
                    method,
                    reason: text(),
                })
            }
        }
    }
}

/// The active object whose request a task is serving, and its runtime.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Serving {
    pub(crate) object: u64,
    /// Which instance of the object (see `Mailbox::instance`): one
    /// discarded while it serves sends nothing more.
    pub(crate) instance: u64,
    pub(crate) runtime: crate::runtime::RtRef,
    /// Who sent the request: an object's id, or a runtime's.
    pub(crate) sender: u64,
    /// The request's sequence number from its sender.
    pub(crate) seq: u64,
    /// The request is served again by a recovery, from its log.
    pub(crate) replayed: bool,
    /// It is served before its interceptors' hold is done (see
    /// [`Verdict::DeliverHeld`](crate::intercept::Verdict::DeliverHeld)).
    pub(crate) held: bool,
}

thread_local! {
    /// Set while a body serves a request: around a synchronous method's
    /// call, and around every poll of an `async` method's future (what a
    /// tokio task-local does, for a `Copy` value: no borrow flag, no swap).
    static SERVING: std::cell::Cell<Option<Serving>> = const { std::cell::Cell::new(None) };
}

thread_local! {
    /// Set while an interceptor's `before_delivery` hook of an object is
    /// polled: a call it awaits to that object would wait for itself.
    static HOOK_OF: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// A hook's future polled for object `object` (see [`HOOK_OF`]).
pub(crate) struct HookScoped<F> {
    pub(crate) object: u64,
    pub(crate) fut: F,
}

impl<F: std::future::Future + Unpin> std::future::Future for HookScoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        /// Puts the previous value back, even when the hook panics.
        struct Restore(Option<u64>);
        impl Drop for Restore {
            fn drop(&mut self) {
                HOOK_OF.with(|h| h.set(self.0));
            }
        }
        let this = self.get_mut();
        let _restore = Restore(HOOK_OF.with(|h| h.replace(Some(this.object))));
        Pin::new(&mut this.fut).poll(cx)
    }
}

/// The request being served on this thread, if any.
pub(crate) fn serving() -> Option<Serving> {
    SERVING.with(std::cell::Cell::get)
}

/// Who sent the request the calling method serves: the id of the active
/// object that made the call, or the id of the runtime it came from when
/// it was made outside any object. Both are bound to the connection the
/// call came on: a runtime's id to its certificate, an object's to its key
/// (which moves with it), so no runtime can pass for another runtime or for
/// an object it does not host. `None` outside a method.
pub fn caller() -> Option<u64> {
    serving().map(|s| s.sender)
}

/// The request the calling method serves, as technical services know
/// requests (see [`crate::intercept::serving_request`]).
pub(crate) fn serving_request() -> Option<crate::intercept::ServingRequest> {
    serving().map(|s| crate::intercept::ServingRequest {
        object: s.object,
        sender: s.sender,
        seq: s.seq,
        replayed: s.replayed,
    })
}

/// Runs `f` as part of serving a request of `serving.object`.
pub(crate) fn serve_scope<R>(serving: Serving, f: impl FnOnce() -> R) -> R {
    /// Puts the previous value back, even when `f` panics.
    struct Restore(Option<Serving>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERVING.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERVING.with(|s| s.replace(Some(serving))));
    f()
}

/// A future polled as part of serving a request (see [`serve_scope`]).
pub(crate) struct ServeScoped<F> {
    pub(crate) serving: Serving,
    pub(crate) fut: F,
}

impl<F: std::future::Future + Unpin> std::future::Future for ServeScoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        serve_scope(this.serving, || Pin::new(&mut this.fut).poll(cx))
    }
}

impl<T: DeserializeOwned, E: DeserializeOwned> std::future::Future for Future<T, E> {
    type Output = Result<T, CallError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(outcome) = this.slot.poll_outcome(cx) {
            return Poll::Ready(this.decode(&outcome));
        }
        if let Some(site) = this.slot.call
            && (serving().is_some_and(|s| s.object == site.target)
                || HOOK_OF.with(std::cell::Cell::get) == Some(site.target))
        {
            return Poll::Ready(Err(CallError::Deadlock {
                object: site.target,
                method: site.method,
            }));
        }
        if let Some(after) = this.timeout {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(CallError::Timeout {
                    method: this.method(),
                    after,
                }));
            }
        }
        Poll::Pending
    }
}

impl<T, E> Serialize for Future<T, E> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        encode_slot(&self.slot).serialize(s)
    }
}

impl<'de, T, E> Deserialize<'de> for Future<T, E> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = FutureWire::deserialize(d)?;
        let (runtime, held) = codec::decoding_cx();
        Ok(Future::from_slot(
            wire.into_slot(runtime.as_ref(), &held),
            None,
        ))
    }
}

/// Waits for every future; results come in the order given.
pub async fn wait_all<T, E, I>(futures: I) -> Vec<Result<T, CallError<E>>>
where
    T: DeserializeOwned,
    E: DeserializeOwned,
    I: IntoIterator<Item = Future<T, E>>,
{
    futures::future::join_all(futures).await
}

/// Waits for the first future to resolve; returns its index, its result
/// and the futures still pending (in their original order, minus it).
///
/// # Panics
/// If `futures` is empty.
pub async fn wait_any<T, E, I>(futures: I) -> (usize, Result<T, CallError<E>>, Vec<Future<T, E>>)
where
    T: DeserializeOwned,
    E: DeserializeOwned,
    I: IntoIterator<Item = Future<T, E>>,
{
    let (result, index, rest) = futures::future::select_all(futures).await;
    (index, result, rest)
}

/// The results as they arrive, each with the index of its future.
pub fn in_completion_order<T, E, I>(
    futures: I,
) -> impl Stream<Item = (usize, Result<T, CallError<E>>)> + Unpin
where
    T: DeserializeOwned + Send + 'static,
    E: DeserializeOwned + Send + 'static,
    I: IntoIterator<Item = Future<T, E>>,
{
    futures
        .into_iter()
        .enumerate()
        .map(|(i, f)| async move { (i, f.await) })
        .collect::<FuturesUnordered<_>>()
        .boxed()
}

#[cfg(test)]
mod tests;
