//! One multiplexed stream between two runtimes, seen from either end.
//!
//! A [`Conn`] is the same object on both sides: it queues envelopes for a
//! writer that batches them into frames, keeps the table of calls awaiting
//! a reply on this stream, and handles whatever arrives (requests, replies,
//! forwarded future values, pings). A connection that breaks, or stays
//! silent longer than the heartbeat timeout, fails every call pending on
//! it with [`CallError::NodeDied`](crate::CallError::NodeDied): a dead node
//! is noticed, never waited on forever.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use futures::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::body::Mailbox;
use crate::calls::Calls;
use crate::future::{FutureId, Outcome, Slot, Status};
use crate::runtime::{Inner, Runtime};
use crate::tls::Principal;
use crate::wire::{self, Envelope};

/// Where an encoded message goes: a connection.
pub(crate) type Route = Arc<Conn>;

/// Who waits for the reply to a call sent on a connection.
pub(crate) enum Pending {
    /// A future of this process.
    Slot(Arc<Slot>),
    /// A future of a call an object of a node with interceptors made:
    /// they read the reply's protocol header before it resolves.
    Call(Box<Call>),
    /// A future of this process whose request is kept to be sent again
    /// where its object lives now if this connection fails (a runtime
    /// with a locator, see [`crate::intercept::Locator`]).
    Retained(Box<Retained>),
    /// A caller elsewhere whose request this runtime forwarded (the object
    /// migrated away): the reply is relayed with the object's new address.
    Relay {
        to: ReplyTo,
        object: u64,
        moved_to: String,
    },
}

/// A call of an object whose node has interceptors (see [`Pending::Call`]).
pub(crate) struct Call {
    pub(crate) slot: Arc<Slot>,
    pub(crate) caller: u64,
    pub(crate) target: u64,
    pub(crate) seq: u64,
}

/// A request kept until its reply arrives, to be sent again as it was.
pub(crate) struct Retained {
    pub(crate) slot: Arc<Slot>,
    pub(crate) method: &'static str,
    pub(crate) target: u64,
    pub(crate) sender: u64,
    pub(crate) seq: u64,
    pub(crate) flags: u32,
    pub(crate) header: Vec<u8>,
    pub(crate) payload: Vec<u8>,
    pub(crate) held: Vec<Arc<Slot>>,
    /// Times it was sent again.
    pub(crate) resent: u32,
}

/// Notes that `moved` says where an object lives now, unless the reply is
/// a failure: it then names the runtime where the call failed.
fn note_moved(rt: &Runtime, moved: Option<(u64, &str)>, status: Status) {
    if let Some((object, to)) = moved
        && status != Status::NodeDied
    {
        rt.moved(object, to);
    }
}

/// Where the reply to a request goes.
pub(crate) enum ReplyTo {
    /// One-way call: nobody.
    Nobody,
    /// A caller in this process.
    Slot(Arc<Slot>),
    /// A caller at the other end of a connection.
    Remote { conn: Arc<Conn>, call_id: u64 },
}

impl ReplyTo {
    /// Delivers an outcome whose payload is already encoded.
    pub(crate) fn send(self, rt: &Runtime, outcome: Outcome, moved: Option<(u64, &str)>) {
        match self {
            ReplyTo::Nobody => {}
            ReplyTo::Slot(slot) => {
                note_moved(rt, moved, outcome.status);
                slot.resolve(outcome);
            }
            ReplyTo::Remote { conn, call_id } => conn.reply(call_id, outcome, moved),
        }
    }

    pub(crate) fn expects_reply(&self) -> bool {
        !matches!(self, ReplyTo::Nobody)
    }
}

/// One end of a stream between two runtimes.
pub(crate) struct Conn {
    runtime: Weak<Inner>,
    /// The other end, for messages: an address, or `client <addr>`.
    pub(crate) peer: String,
    /// The address this connection is kept under in the runtime's table
    /// of connections: set for those this runtime opened, and for the
    /// stream on which a runtime serving there lets this one call it back.
    pub(crate) outgoing: Option<String>,
    /// Envelopes encoded and not yet written, and the writer to wake.
    out: Mutex<Outbox>,
    pending: Mutex<Calls<Pending>>,
    closed: AtomicBool,
    /// Milliseconds since `epoch` when the other end last sent anything.
    last_seen: AtomicU64,
    epoch: Instant,
    /// Why the connection failed, once it has.
    failure: Mutex<Option<String>>,
    /// Cancelled when the connection fails, to stop its reader and writer.
    cancel: CancellationToken,
    /// Futures whose value the other end promised to forward on this
    /// connection: they fail with it.
    awaiting: Mutex<Vec<Weak<Slot>>>,
    /// Largest batch of envelopes in one frame (`max_message_size`, less
    /// the frame's own encoding).
    pub(crate) max_frame: usize,
    /// Set while this end does not read, to let full queues drain: the
    /// other end's silence then says nothing about it.
    paused: AtomicBool,
    /// Control requests from the other end being served.
    pub(crate) controls: AtomicUsize,
    /// Who the other end is, once its certificate was checked.
    principal: std::sync::OnceLock<Principal>,
    /// Senders this end proved to the other with a claim.
    claimed: crate::sender::Senders,
    /// Senders the other end proved to this one.
    pub(crate) proven: crate::sender::Senders,
}

/// Bytes a frame's own encoding adds around its batch: batches stay this
/// much under `max_message_size`, so the frame is within it.
const FRAME_MARGIN: usize = 16;

/// An envelope that cannot be written: it would make a frame larger than
/// `max_message_size`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TooLarge {
    pub(crate) size: usize,
    pub(crate) limit: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes, over the limit of {} bytes (the max_message_size setting)",
            self.size, self.limit
        )
    }
}

impl Conn {
    pub(crate) fn new(
        runtime: &Runtime,
        peer: String,
        outgoing: Option<String>,
    ) -> (Arc<Conn>, Batched) {
        let conn = Arc::new(Conn {
            runtime: Arc::downgrade(runtime.inner()),
            peer,
            outgoing,
            out: Mutex::default(),
            pending: Mutex::default(),
            closed: AtomicBool::new(false),
            last_seen: AtomicU64::new(0),
            epoch: Instant::now(),
            failure: Mutex::default(),
            cancel: CancellationToken::new(),
            awaiting: Mutex::default(),
            max_frame: runtime
                .config()
                .max_message_size
                .saturating_sub(FRAME_MARGIN)
                .max(1),
            paused: AtomicBool::new(false),
            controls: AtomicUsize::new(0),
            principal: std::sync::OnceLock::new(),
            claimed: crate::sender::Senders::default(),
            proven: crate::sender::Senders::default(),
        });
        let batched = Batched {
            conn: conn.clone(),
            cancelled: Box::pin(conn.cancel.clone().cancelled_owned()),
            pending: bytes::Bytes::new(),
        };
        (conn, batched)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Completes when the connection has failed.
    pub(crate) async fn closed(&self) {
        self.cancel.cancelled().await;
    }

    /// Queues one envelope for the writer: `encode` appends it to the batch
    /// being gathered. It runs under the batch's lock, so it only copies
    /// bytes (payloads are encoded before). An envelope that would not fit
    /// in a frame is taken back out, and not sent.
    pub(crate) fn write(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), TooLarge> {
        self.write_as(None, encode)
    }

    /// [`Conn::write`], with `claim` (of its sender) written first when the
    /// sender was not claimed on this connection yet: under the same lock,
    /// so no request of the sender can pass its claim. The claim stays when
    /// the envelope is too large.
    #[inline]
    pub(crate) fn write_as(
        &self,
        claim: Option<&crate::sender::Claim>,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), TooLarge> {
        // A closed connection's writer is gone: the send fails quietly and
        // whoever waited for a reply was already failed by `fail`.
        let writer = {
            let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(claim) = claim
                && self.claimed.insert_new(claim.sender)
            {
                wire::put_claim(&mut out.buf, claim);
            }
            let start = out.buf.len();
            encode(&mut out.buf);
            let size = out.buf.len() - start;
            if size > self.max_frame {
                out.buf.truncate(start);
                return Err(TooLarge {
                    size,
                    limit: self.max_frame,
                });
            }
            out.writer.take()
        };
        if let Some(w) = writer {
            crate::compute::wake(w);
        }
        Ok(())
    }

    /// Whether `sender` was claimed on this connection already.
    pub(crate) fn claimed(&self, sender: u64) -> bool {
        self.claimed.contains(sender)
    }

    /// Sends a reply (the values of futures inside it follow); one too
    /// large for a frame is replaced by an error saying so.
    pub(crate) fn reply(
        self: &Arc<Self>,
        call_id: u64,
        outcome: Outcome,
        moved: Option<(u64, &str)>,
    ) {
        let written = self.write(|buf| {
            wire::put_reply(
                buf,
                call_id,
                outcome.status,
                &outcome.header,
                &outcome.held,
                moved,
                &outcome.payload,
            );
        });
        match written {
            // After the reply: the values follow it.
            Ok(()) => {
                for h in &outcome.held {
                    h.continue_to(self);
                }
            }
            Err(e) => {
                let failure = Outcome::failure(Status::Refused, format!("the reply takes {e}"));
                let _ = self.write(|buf| {
                    wire::put_reply(
                        buf,
                        call_id,
                        failure.status,
                        &[],
                        &[],
                        moved,
                        &failure.payload,
                    );
                });
            }
        }
    }

    /// Forgets a call registered with [`Conn::register`] whose request
    /// could not be sent.
    /// Keeps the protocol header of retained call `call_id`, written once
    /// it was registered.
    pub(crate) fn retained_header(&self, call_id: u64, header: &[u8]) {
        let mut table = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(Pending::Retained(r)) = table.get_mut(call_id) {
            r.header = header.to_vec();
        }
    }

    pub(crate) fn unregister(&self, call_id: u64) -> Option<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(call_id)
    }

    /// Who the other end is (`Anonymous` until its certificate is known).
    pub(crate) fn principal(&self) -> Principal {
        self.principal
            .get()
            .cloned()
            .unwrap_or(Principal::Anonymous)
    }

    /// Records who the other end is, once checked.
    pub(crate) fn set_principal(&self, principal: Principal) {
        let _ = self.principal.set(principal);
    }

    /// Marks this end as not reading (or reading again).
    pub(crate) fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        if !paused {
            self.touch();
        }
    }

    /// Registers a pending call; `None` if the connection already failed.
    pub(crate) fn register(&self, pending: Pending) -> Result<u64, Pending> {
        let mut table = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock `fail` drains, so no call slips in after.
        if self.is_closed() {
            return Err(pending);
        }
        Ok(table.insert(pending))
    }

    /// Sends a future's value to the other end.
    pub(crate) fn forward_value(self: &Arc<Self>, id: FutureId, outcome: &Outcome) {
        let written = self.write(|buf| {
            wire::put_value(buf, id, outcome.status, &outcome.held, &outcome.payload);
        });
        match written {
            Ok(()) => {
                for h in &outcome.held {
                    h.continue_to(self);
                }
            }
            Err(e) => {
                let failure = Outcome::failure(Status::Refused, format!("the value takes {e}"));
                let _ = self.write(|buf| {
                    wire::put_value(buf, id, failure.status, &[], &failure.payload);
                });
            }
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_seen.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_seen.load(Ordering::Relaxed)))
    }

    /// Marks the connection dead and fails everything pending on it.
    pub(crate) fn fail(self: &Arc<Self>, reason: String) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(peer = %self.peer, %reason, "connection failed");
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
        self.cancel.cancel();
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain();
        let rt = self.runtime.upgrade().map(Runtime::from_inner);
        if let (Some(rt), Some(addr)) = (&rt, &self.outgoing) {
            rt.forget_connection(addr, self);
        }
        let message = format!("the runtime at {} is unreachable: {reason}", self.peer);
        let awaiting =
            std::mem::take(&mut *self.awaiting.lock().unwrap_or_else(|p| p.into_inner()));
        for slot in awaiting.iter().filter_map(Weak::upgrade) {
            slot.resolve(Outcome::failure(Status::NodeDied, message.clone()));
        }
        for p in pending {
            let outcome = Outcome::failure(Status::NodeDied, message.clone());
            match p {
                Pending::Slot(slot) => slot.resolve(outcome),
                Pending::Call(c) => c.slot.resolve(outcome),
                Pending::Retained(r) => match &rt {
                    Some(rt) => rt.relocate(
                        r,
                        self.outgoing.as_deref().unwrap_or(&self.peer),
                        message.clone(),
                    ),
                    None => r.slot.resolve(outcome),
                },
                Pending::Relay {
                    to,
                    object,
                    moved_to,
                } => {
                    // Where it failed goes back with the failure: a caller
                    // that follows recoveries asks where the object is now.
                    if let Some(rt) = &rt {
                        to.send(rt, outcome, Some((object, &moved_to)));
                    }
                }
            }
        }
    }

    /// Slots for futures a message on this connection announced: their
    /// values come the same way, so they fail if the connection does.
    pub(crate) fn hold(&self, rt: &Runtime, ids: &[FutureId]) -> Vec<Arc<Slot>> {
        if ids.is_empty() {
            return Vec::new();
        }
        let held = rt.hold(ids);
        let mut awaiting = self.awaiting.lock().unwrap_or_else(|p| p.into_inner());
        awaiting.retain(|w| w.upgrade().is_some_and(|s| !s.is_ready()));
        awaiting.extend(held.iter().filter(|s| !s.is_ready()).map(Arc::downgrade));
        drop(awaiting);
        if self.is_closed() {
            let why = self.failure().unwrap_or_default();
            for s in &held {
                s.resolve(Outcome::failure(
                    Status::NodeDied,
                    format!("the runtime at {} is unreachable: {why}", self.peer),
                ));
            }
        }
        held
    }

    /// Why the connection failed, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Handles one received frame. Replies in a row complete their calls
    /// after one look at the table of pending calls, requests in a row to
    /// one object enter its queue together.
    pub(crate) fn receive(self: &Arc<Self>, frame: wire::Frame) -> Vec<Arc<Mailbox>> {
        self.touch();
        let mut full = Vec::new();
        let Some(rt) = self.runtime() else {
            return full;
        };
        let mut replies = Vec::new();
        let mut requests = Vec::new();
        for env in wire::Envelopes::new(frame.batch) {
            let env = match env {
                Ok(env) => env,
                Err(e) => {
                    self.complete(&rt, &mut replies);
                    rt.receive_requests(self, &mut requests, &mut full);
                    self.fail(format!("it sent a malformed frame: {e}"));
                    return full;
                }
            };
            match env {
                // Envelopes are handled in the order they came: only runs
                // of replies, or of requests to one object, are gathered.
                Envelope::Reply(r) => {
                    rt.receive_requests(self, &mut requests, &mut full);
                    replies.push(r);
                }
                Envelope::Request(r) => {
                    self.complete(&rt, &mut replies);
                    if requests
                        .last()
                        .is_some_and(|last: &wire::Request| last.target != r.target)
                    {
                        rt.receive_requests(self, &mut requests, &mut full);
                    }
                    requests.push(r);
                }
                Envelope::Value(v) => {
                    self.complete(&rt, &mut replies);
                    rt.receive_requests(self, &mut requests, &mut full);
                    self.receive_value(&rt, v);
                }
                Envelope::Claim(c) => {
                    // Before the requests that follow it.
                    self.complete(&rt, &mut replies);
                    rt.receive_requests(self, &mut requests, &mut full);
                    self.receive_claim(&c);
                }
                Envelope::Other => {}
            }
        }
        self.complete(&rt, &mut replies);
        rt.receive_requests(self, &mut requests, &mut full);
        full
    }

    /// Checks a sender's claim: from then on, the sender's requests on
    /// this connection are taken. A claim that does not hold is logged, and
    /// the sender's requests stay refused.
    fn receive_claim(&self, claim: &crate::sender::Claim) {
        let principal = self.principal();
        if principal == Principal::Plaintext {
            return;
        }
        match claim.verify(&principal) {
            Ok(()) => {
                if !self.proven.insert(claim.sender) {
                    tracing::warn!(
                        peer = %self.peer,
                        "{principal} proved more than {} senders on one connection; \
                         the requests of the others are refused",
                        crate::sender::MAX_PROVEN
                    );
                }
            }
            Err(why) => tracing::warn!(
                peer = %self.peer,
                sender = format_args!("{:#x}", claim.sender),
                "refused a sender's claim from {principal}: {why}"
            ),
        }
    }

    /// The runtime this connection belongs to, while it lives.
    pub(crate) fn runtime(&self) -> Option<Runtime> {
        self.runtime.upgrade().map(Runtime::from_inner)
    }

    /// Completes the calls `replies` answer, and empties it.
    fn complete(self: &Arc<Self>, rt: &Runtime, replies: &mut Vec<wire::Reply>) {
        if replies.is_empty() {
            return;
        }
        let pending: Vec<Option<Pending>> = {
            let mut table = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            replies.iter().map(|r| table.remove(r.call_id)).collect()
        };
        for (r, pending) in replies.drain(..).zip(pending) {
            let Some(pending) = pending else {
                tracing::debug!(peer = %self.peer, call = r.call_id, "reply to an unknown call dropped");
                continue;
            };
            let outcome = Outcome {
                status: r.status,
                payload: r.payload,
                held: self.hold(rt, &r.futures),
                runtime: Some(rt.handle()),
                header: r.header,
            };
            let moved = r.moved.as_ref().map(|(o, a)| (*o, a.as_str()));
            match pending {
                Pending::Slot(slot) => {
                    note_moved(rt, moved, outcome.status);
                    slot.resolve(outcome);
                }
                Pending::Call(c) => {
                    note_moved(rt, moved, outcome.status);
                    rt.reply_arrived(c.caller, c.target, c.seq, &outcome.header);
                    c.slot.resolve(outcome);
                }
                Pending::Retained(r) => match moved {
                    // A runtime that passed the call on lost the one it
                    // passed it to: asked where the object is now.
                    Some((_, dead)) if outcome.status == Status::NodeDied => {
                        let reason = String::from_utf8_lossy(&outcome.payload).into_owned();
                        rt.relocate(r, dead, reason);
                    }
                    _ => {
                        note_moved(rt, moved, outcome.status);
                        rt.reply_arrived(r.sender, r.target, r.seq, &outcome.header);
                        r.slot.resolve(outcome);
                    }
                },
                Pending::Relay {
                    to,
                    object,
                    moved_to,
                } => {
                    // The newest hop knows best where the object is.
                    let moved = moved.unwrap_or((object, moved_to.as_str()));
                    to.send(rt, outcome, Some(moved));
                }
            }
        }
    }

    /// Sends a ping every `interval`, and fails the connection when the
    /// other end has been silent for `timeout`.
    pub(crate) async fn heartbeat(self: Arc<Self>, interval: Duration, timeout: Duration) {
        self.touch();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.is_closed() {
                return;
            }
            if self.paused.load(Ordering::Acquire) {
                // Not reading on purpose: the other end's silence is ours.
                self.touch();
            }
            let silent = self.silent_for();
            if silent >= timeout {
                self.fail(format!(
                    "nothing received for {silent:?} (heartbeat timeout {timeout:?})"
                ));
                return;
            }
            let _ = self.write(wire::put_ping);
        }
    }
}

impl Conn {
    fn receive_value(&self, rt: &Runtime, v: wire::Value) {
        let held = self.hold(rt, &v.futures);
        if let Some(slot) = rt.futures().get(v.id) {
            slot.resolve(Outcome {
                status: v.status,
                payload: v.payload,
                held,
                runtime: Some(rt.handle()),
                header: bytes::Bytes::new(),
            });
        }
    }
}

/// What the writer has not written yet.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Length-delimited envelopes, in the order sent.
    buf: Vec<u8>,
    /// The writer, when it waits for envelopes.
    writer: Option<std::task::Waker>,
}

/// The writer side: every wake-up takes whatever was encoded since the
/// last one as one frame. Senders encode on their own threads, so a
/// pipelining caller pays one buffer append per call and the writer one
/// HTTP/2 write per batch.
pub(crate) struct Batched {
    conn: Arc<Conn>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Envelopes taken from the outbox that did not fit in the last frame.
    pending: bytes::Bytes,
}

impl Stream for Batched {
    type Item = wire::Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<wire::Frame>> {
        if self.cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        if self.pending.is_empty() {
            let mut out = self.conn.out.lock().unwrap_or_else(|p| p.into_inner());
            if out.buf.is_empty() {
                out.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let len = out.buf.len();
            // The next batch is likely as large: allocate once, not by doubling.
            let batch = std::mem::replace(&mut out.buf, Vec::with_capacity(len.min(1 << 20)));
            drop(out);
            self.pending = bytes::Bytes::from(batch);
        }
        let cut = frame_end(&self.pending, self.conn.max_frame);
        let batch = self.pending.split_to(cut);
        Poll::Ready(Some(wire::Frame { batch }))
    }
}

/// Where the first frame of `batch` ends: all of it when it fits in `max`
/// bytes, else after the last whole envelope that fits (at least one).
pub(crate) fn frame_end(batch: &[u8], max: usize) -> usize {
    if batch.len() <= max {
        return batch.len();
    }
    let mut end = 0;
    while end < batch.len() {
        let Some((len, head)) = wire::envelope_len(&batch[end..]) else {
            return batch.len();
        };
        // A length read from bytes that are not a batch can be anything.
        let next = end.saturating_add(head).saturating_add(len);
        if next > max && end > 0 {
            break;
        }
        end = next.min(batch.len());
    }
    end
}
