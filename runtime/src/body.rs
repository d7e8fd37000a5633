//! The body of an active object: its request queue and the task that
//! serves it, one request at a time.
//!
//! Guarantees (see `docs/semantics.md`):
//! * requests are served one at a time, in arrival order, except
//!   immediate requests, which are served before any queued request;
//! * requests from one sender are served in the order sent, even when a
//!   migration makes some of them travel through a forwarder: each carries
//!   a per-(sender, object) sequence number and the body holds back a
//!   request that overtook an earlier one (for at most the reorder
//!   timeout, so a request lost with a dead connection cannot stall its
//!   sender forever);
//! * a request whose sequence number was already served is a duplicate:
//!   interceptors that keep replies answer it, else it is refused; a copy
//!   of a request still queued waits for it, and a request dropped because
//!   its caller was gone, or turned away as stale by an interceptor (sent
//!   by an execution a rollback discarded), is served when sent again;
//! * a body whose object is discarded stops where it stands: what it
//!   had not answered is answered as by a dead runtime, and nothing a
//!   method still running produces leaves;
//! * a panic in a method reaches the caller as `CallError::Panicked` and
//!   the object goes on serving.

// Requests travel boxed through queues, batches and vectors: moving one
// then copies a pointer instead of the whole request, several times each.
#![allow(clippy::vec_box)]

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::active::{Dispatched, ErasedActive, Served};
use crate::codec;
use crate::connection::ReplyTo;
use crate::future::{Outcome, ServeScoped, Serving, Slot, Status};
use crate::ids::IdMap;
use crate::intercept::{BodyAccess, Checkpoint, Delivery, Reply, ServeOutcome, Verdict};
use crate::node::NodeInner;
use crate::runtime::Runtime;
use crate::wire::{self, FLAG_IMMEDIATE, FLAG_MIGRATE, FLAG_TERMINATE};

/// A request on its way into a body.
pub(crate) struct Inbound {
    pub(crate) target: u64,
    pub(crate) sender: u64,
    pub(crate) seq: u64,
    pub(crate) flags: u32,
    pub(crate) header: bytes::Bytes,
    pub(crate) payload: bytes::Bytes,
    /// Slots of the futures the payload embeds.
    pub(crate) held: Vec<Arc<Slot>>,
    pub(crate) reply: ReplyTo,
}

impl Inbound {
    fn immediate(&self) -> bool {
        self.flags & FLAG_IMMEDIATE != 0
    }
}

/// The queue in front of a body. A plain deque behind a mutex rather than
/// a channel: an idle object must cost little memory.
pub(crate) struct Mailbox {
    inner: Mutex<MailboxInner>,
    notify: Notify,
    /// Whether an immediate request waits (read between two requests of a
    /// run the body took, so it is served next).
    immediate_waiting: AtomicBool,
    /// Requests the body took from the queue and has not admitted yet:
    /// they still count as queued.
    taken: AtomicUsize,
    /// A connection stopped reading until this queue drains (see
    /// [`Mailbox::is_full`]).
    starved: AtomicBool,
    /// The figures its body publishes (see `stats`).
    pub(crate) stats: crate::stats::Board,
    /// Which instance of its object this is: a number no other body of
    /// the process has (an object restored where it was discarded gets a
    /// new one).
    instance: u64,
    /// Its object was discarded ([`Node::discard`](crate::Node::discard)):
    /// nothing its body produces from now on leaves.
    discarded: AtomicBool,
}

/// The next body instance (see [`Mailbox::instance`]).
static INSTANCES: AtomicU64 = AtomicU64::new(1);

/// The bounds of a queue: past either, the connections that bring more
/// stop reading until it drains to half (backpressure to the senders).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) requests: usize,
    pub(crate) bytes: usize,
}

/// What [`Mailbox::take_all`] found.
enum Took {
    Some,
    Nothing,
    Closed,
}

#[derive(Default)]
struct MailboxInner {
    queue: VecDeque<Box<Inbound>>,
    immediate: VecDeque<Box<Inbound>>,
    /// Payload bytes of the requests queued.
    bytes: usize,
    closed: bool,
}

impl MailboxInner {
    fn over(&self, bounds: Bounds, divisor: usize) -> bool {
        !self.closed
            && (self.queue.len() + self.immediate.len() >= bounds.requests / divisor
                || self.bytes >= bounds.bytes / divisor)
    }
}

impl Mailbox {
    pub(crate) fn new() -> Arc<Mailbox> {
        Arc::new(Mailbox {
            inner: Mutex::default(),
            notify: Notify::new(),
            immediate_waiting: AtomicBool::new(false),
            taken: AtomicUsize::new(0),
            starved: AtomicBool::new(false),
            stats: crate::stats::Board::default(),
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            discarded: AtomicBool::new(false),
        })
    }

    /// Which instance of its object the body behind it is.
    pub(crate) fn instance(&self) -> u64 {
        self.instance
    }

    /// Marks its object discarded: the body stops at its next step, and
    /// what it produces meanwhile (a reply, say) does not leave.
    pub(crate) fn discard(&self) {
        self.discarded.store(true, Ordering::Release);
    }

    /// Whether its object was discarded.
    pub(crate) fn is_discarded(&self) -> bool {
        self.discarded.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a request; hands it back if the body is gone (migrated or
    /// stopped), so the caller can route it again. `Ok(true)` when the
    /// queue is over `bounds` now.
    #[allow(clippy::result_large_err)] // handed back, never propagated
    pub(crate) fn push(
        self: &Arc<Self>,
        inbound: Box<Inbound>,
        bounds: Bounds,
    ) -> Result<bool, Box<Inbound>> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(inbound);
        }
        inner.bytes += inbound.payload.len();
        if inbound.immediate() {
            inner.immediate.push_back(inbound);
            self.immediate_waiting.store(true, Ordering::Release);
        } else {
            inner.queue.push_back(inbound);
        }
        let full = inner.over(bounds, 1);
        drop(inner);
        crate::compute::notify(self);
        Ok(full)
    }

    /// Queues requests in one go (see [`Mailbox::push`]).
    #[allow(clippy::result_large_err)] // handed back, never propagated
    pub(crate) fn push_all(
        self: &Arc<Self>,
        batch: Vec<Box<Inbound>>,
        bounds: Bounds,
    ) -> Result<bool, Vec<Box<Inbound>>> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(batch);
        }
        for inbound in batch {
            inner.bytes += inbound.payload.len();
            if inbound.immediate() {
                inner.immediate.push_back(inbound);
                self.immediate_waiting.store(true, Ordering::Release);
            } else {
                inner.queue.push_back(inbound);
            }
        }
        let full = inner.over(bounds, 1);
        drop(inner);
        crate::compute::notify(self);
        Ok(full)
    }

    /// Whether the queue is still above half its bounds: a connection
    /// paused for it waits until it is not (or until it closes).
    pub(crate) fn is_full(&self, bounds: Bounds) -> bool {
        let full = self.lock().over(bounds, 2);
        if full {
            self.starved.store(true, Ordering::Release);
        }
        full
    }

    /// Moves every queued request to `into` (empty), immediate ones first.
    fn take_all(&self, into: &mut VecDeque<Box<Inbound>>) -> Took {
        let mut inner = self.lock();
        if inner.queue.is_empty() && inner.immediate.is_empty() {
            return if inner.closed {
                Took::Closed
            } else {
                Took::Nothing
            };
        }
        // The queue's buffer becomes the body's, and the body's (empty)
        // the queue's: no copy, and both keep their capacity.
        std::mem::swap(into, &mut inner.queue);
        inner.bytes = 0;
        if !inner.immediate.is_empty() {
            self.immediate_waiting.store(false, Ordering::Relaxed);
            for inbound in inner.immediate.drain(..).rev() {
                into.push_front(inbound);
            }
        }
        self.taken.store(into.len(), Ordering::Relaxed);
        Took::Some
    }

    /// The oldest immediate request, if one arrived since the body took
    /// the queue.
    fn pop_immediate(&self) -> Option<Box<Inbound>> {
        if !self.immediate_waiting.load(Ordering::Acquire) {
            return None;
        }
        let mut inner = self.lock();
        let next = inner.immediate.pop_front();
        if let Some(n) = &next {
            inner.bytes = inner.bytes.saturating_sub(n.payload.len());
        }
        if inner.immediate.is_empty() {
            self.immediate_waiting.store(false, Ordering::Relaxed);
        }
        next
    }

    /// Closes the mailbox and returns what was queued, in order.
    pub(crate) fn close(&self) -> Vec<Box<Inbound>> {
        let mut inner = self.lock();
        inner.closed = true;
        inner.bytes = 0;
        let mut all: Vec<Box<Inbound>> = inner.immediate.drain(..).collect();
        all.extend(inner.queue.drain(..));
        all
    }

    pub(crate) fn stop(&self) {
        self.lock().closed = true;
        self.notify();
    }

    /// Wakes the body (requests arrived, or the mailbox closed).
    pub(crate) fn notify(&self) {
        self.notify.notify_one();
    }

    pub(crate) fn len(&self) -> usize {
        let inner = self.lock();
        inner.queue.len() + inner.immediate.len() + self.taken.load(Ordering::Relaxed)
    }
}

/// How far ahead of the next expected request of its sender a request
/// may be held back: beyond, it cannot be a reordering of what is in
/// flight, and holding it would let one message stall the sender's later
/// ones for the reorder timeout.
const MAX_AHEAD: u64 = 1 << 20;

/// How many copies of queued requests a body keeps per sender (see
/// [`SenderOrder::parked`]); the oldest go first.
const MAX_RESENT: usize = 1024;

/// Per-sender ordering: the next sequence number expected from each
/// sender, and requests that arrived ahead of it.
#[derive(Default)]
pub(crate) struct Order {
    senders: IdMap<u64, SenderOrder>,
    /// Copies parked, over all senders (none, nearly always).
    parked: usize,
}

struct SenderOrder {
    /// Next sequence number to admit.
    expected: u64,
    /// Next sequence number to serve: admitted requests wait in the body's
    /// batch until served, and a checkpoint must not count them.
    served: u64,
    ahead: BTreeMap<u64, Box<Inbound>>,
    since: Option<Instant>,
    /// Copies of admitted requests not yet served, sent again by their
    /// sender (a recovered object makes its calls again): each waits for
    /// its original, and gets its reply, or is served in its place if the
    /// original's caller is gone.
    parked: BTreeMap<u64, Box<Inbound>>,
}

impl SenderOrder {
    fn new(expected: u64) -> SenderOrder {
        SenderOrder {
            expected,
            served: expected,
            ahead: BTreeMap::new(),
            since: None,
            parked: BTreeMap::new(),
        }
    }
}

impl Order {
    pub(crate) fn from_table(table: &[(u64, u64)]) -> Order {
        Order {
            senders: table
                .iter()
                .map(|&(sender, expected)| (sender, SenderOrder::new(expected)))
                .collect(),
            parked: 0,
        }
    }

    /// For every known sender, the next sequence number not yet served.
    pub(crate) fn table(&self) -> Vec<(u64, u64)> {
        self.senders.iter().map(|(s, o)| (*s, o.served)).collect()
    }

    /// Records that a request was served (or dropped by an interceptor).
    /// Requests dropped before it (see [`Order::dropped`]) are then given
    /// up: a copy of one would come after a later request was served.
    fn served(&mut self, sender: u64, seq: u64) {
        if seq != 0
            && let Some(s) = self.senders.get_mut(&sender)
        {
            s.served = s.served.max(seq + 1);
            s.expected = s.expected.max(s.served);
        }
    }

    /// Records that a request was dropped unserved, its caller's
    /// connection gone: its sequence number is expected again, so a copy
    /// sent again (a recovered caller's, say) is served, in its sender's
    /// order — the requests after it wait for it — unless a later request
    /// of its sender is served first.
    fn dropped(&mut self, sender: u64, seq: u64) {
        if seq != 0
            && let Some(s) = self.senders.get_mut(&sender)
        {
            if seq >= s.served {
                s.expected = s.expected.min(seq);
            } else {
                s.served = s.served.max(seq + 1);
            }
        }
    }

    /// The copy of a request sent again while it waited to be served.
    fn take_parked(&mut self, sender: u64, seq: u64) -> Option<Box<Inbound>> {
        if seq == 0 || self.parked == 0 {
            return None;
        }
        let copy = self.senders.get_mut(&sender)?.parked.remove(&seq)?;
        self.parked -= 1;
        Some(copy)
    }

    /// Admits a request: pushes onto `out` those now due, in order, and
    /// onto `late` one that comes after its successors were served (a
    /// duplicate, or the tail of a gap given up on).
    fn admit(
        &mut self,
        inbound: Box<Inbound>,
        out: &mut VecDeque<Box<Inbound>>,
        late: &mut Vec<Box<Inbound>>,
    ) {
        if inbound.seq == 0 {
            out.push_back(inbound);
            return;
        }
        // Every sender numbers its requests to an object from 1, and a
        // table moved with the object (migration, checkpoint) knows the
        // senders it served: a sender met for the first time starts at 1,
        // even when a later request of its overtook the first.
        let s = self
            .senders
            .entry(inbound.sender)
            .or_insert_with(|| SenderOrder::new(1));
        if inbound.seq < s.expected {
            if inbound.seq >= s.served && !s.parked.contains_key(&inbound.seq) {
                // Its original waits to be served: this copy waits for it.
                s.parked.insert(inbound.seq, inbound);
                self.parked += 1;
                if s.parked.len() > MAX_RESENT
                    && let Some((_, oldest)) = s.parked.pop_first()
                {
                    self.parked -= 1;
                    late.push(oldest);
                }
                return;
            }
            tracing::debug!(
                sender = inbound.sender,
                seq = inbound.seq,
                "late or duplicate request not served"
            );
            late.push(inbound);
            return;
        }
        if inbound.seq > s.expected {
            if inbound.seq - s.expected > MAX_AHEAD || s.ahead.len() >= MAX_AHEAD as usize {
                tracing::warn!(
                    sender = inbound.sender,
                    seq = inbound.seq,
                    expected = s.expected,
                    "refused a request too far ahead of its sender's order"
                );
                late.push(inbound);
                return;
            }
            s.since.get_or_insert_with(Instant::now);
            s.ahead.insert(inbound.seq, inbound);
            return;
        }
        s.expected += 1;
        out.push_back(inbound);
        Self::release(s, out);
    }

    fn release(s: &mut SenderOrder, out: &mut VecDeque<Box<Inbound>>) {
        while let Some(entry) = s.ahead.first_entry() {
            if *entry.key() != s.expected {
                break;
            }
            out.push_back(entry.remove());
            s.expected += 1;
        }
        s.since = if s.ahead.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
    }

    /// When the oldest held-back request stops waiting for its gap.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.senders
            .values()
            .filter_map(|s| s.since)
            .min()
            .map(|t| t + timeout)
    }

    /// Gives up on gaps older than `timeout`.
    fn expire(&mut self, timeout: Duration, out: &mut VecDeque<Box<Inbound>>) {
        let now = Instant::now();
        for (sender, s) in &mut self.senders {
            if s.since.is_some_and(|t| now >= t + timeout)
                && let Some(first) = s.ahead.keys().next().copied()
            {
                tracing::warn!(
                    sender,
                    missing = first - s.expected,
                    "requests never arrived; serving the later ones"
                );
                s.expected = first;
                Self::release(s, out);
            }
        }
    }

    fn drain(&mut self) -> Vec<Box<Inbound>> {
        self.parked = 0;
        self.senders
            .values_mut()
            .flat_map(|s| {
                let parked = std::mem::take(&mut s.parked).into_values();
                std::mem::take(&mut s.ahead).into_values().chain(parked)
            })
            .collect()
    }
}

/// Logged requests a restored body serves before anything else (see
/// `Node::recover`), and who waits for their replies.
#[derive(Default)]
pub(crate) struct Replay {
    pub(crate) requests: Vec<Box<Inbound>>,
    /// Each request's sender, sequence number and reply slot, in order.
    pub(crate) slots: Vec<(u64, u64, Arc<Slot>)>,
    /// Told how each was answered, once all were.
    pub(crate) done: Option<tokio::sync::oneshot::Sender<Vec<crate::intercept::Replayed>>>,
    /// Replies to requests served before the checkpoint, for their late
    /// copies.
    pub(crate) answers: Vec<crate::intercept::Replayed>,
}

impl Replay {
    /// The replies, once every request of the replay was answered.
    fn replies(&self) -> Option<Vec<crate::intercept::Replayed>> {
        self.slots.iter().map(answered).collect()
    }

    /// What answers late copies of the requests served since a recovery:
    /// the replies it brought, and those of the log served.
    fn carried(&self) -> Vec<crate::intercept::Replayed> {
        let served = self.slots.iter().filter_map(answered);
        self.answers.iter().cloned().chain(served).collect()
    }
}

/// How a request of a replay was answered, once it was.
fn answered((sender, seq, slot): &(u64, u64, Arc<Slot>)) -> Option<crate::intercept::Replayed> {
    let o = slot.outcome()?;
    Some(crate::intercept::Replayed {
        sender: *sender,
        seq: *seq,
        reply: Reply {
            outcome: serve_outcome(o.status),
            payload: o.payload.to_vec(),
        },
    })
}

/// How serving ended, as interceptors are told.
fn serve_outcome(status: Status) -> ServeOutcome {
    match status {
        Status::Ok => ServeOutcome::Value,
        Status::MethodError => ServeOutcome::MethodError,
        Status::Panicked => ServeOutcome::Panicked,
        _ => ServeOutcome::Refused,
    }
}

/// Answers a request that object `id` could not take, or whose reply must
/// not leave, as a dead runtime would: a caller that keeps its requests
/// asks where the object lives now and sends it there.
pub(crate) fn not_here(runtime: &Runtime, id: u64, reply: ReplyTo, why: &str) {
    let o = Outcome::failure(
        Status::NodeDied,
        format!("object {id:#x} could not take the request here: {why}"),
    );
    let here = runtime.address().unwrap_or_default();
    reply.send(runtime, o, Some((id, here)));
}

/// A reply an interceptor gave (a logged one), as the runtime sends it.
fn outcome_of(reply: Reply, runtime: &Runtime) -> Outcome {
    let status = match reply.outcome {
        ServeOutcome::Value => Status::Ok,
        ServeOutcome::MethodError => Status::MethodError,
        ServeOutcome::Panicked => Status::Panicked,
        ServeOutcome::Refused | ServeOutcome::Dropped => Status::Refused,
    };
    Outcome {
        status,
        payload: reply.payload.into(),
        held: Vec::new(),
        runtime: Some(runtime.handle()),
        header: bytes::Bytes::new(),
    }
}

/// Everything a body task owns.
pub(crate) struct Body {
    pub(crate) id: u64,
    pub(crate) object: Box<dyn ErasedActive>,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) node: Arc<NodeInner>,
    pub(crate) order: Order,
    pub(crate) runtime: Runtime,
    /// What it learned of how long its methods run (see `compute`).
    pub(crate) learned: Vec<(&'static str, Learned)>,
    /// Its methods seen sending before their request's hold was done:
    /// they are served once it is (see `deliver`).
    pub(crate) send_when_held: Vec<&'static str>,
    /// Its key and former hosts (see `sender`).
    pub(crate) credentials: Arc<crate::sender::Credentials>,
    /// The log it serves first, after a recovery.
    pub(crate) replay: Replay,
    /// What it counted about itself (see `stats`).
    pub(crate) tally: crate::stats::Tally,
    /// Requests taken from the mailbox in one go, not yet admitted.
    pub(crate) taken: VecDeque<Box<Inbound>>,
    /// Admitted requests, in the order they are to be served.
    pub(crate) due: VecDeque<Box<Inbound>>,
    /// Requests that came after their successors were served, to refuse
    /// (or answer from a log), last first.
    pub(crate) late: Vec<Box<Inbound>>,
    /// Where the reply to the request it is on goes, while it awaits
    /// something (a hook, an `async` method, a hold).
    pub(crate) owed: Option<ReplyTo>,
}

impl Drop for Body {
    /// A body whose object was discarded ([`Node::discard`](crate::Node::discard))
    /// is dropped where it stood, in the middle of a request maybe: the
    /// requests it held (taken from its mailbox, admitted, held back for
    /// a gap, the one it was on) are answered as by a dead runtime, so
    /// that callers that follow recoveries ask where the object lives now
    /// and send them there, and the others do not wait forever.
    fn drop(&mut self) {
        if !self.mailbox.is_discarded() {
            return;
        }
        let why = "it was discarded from this runtime before serving it";
        if let Some(reply) = self.owed.take() {
            not_here(&self.runtime, self.id, reply, why);
        }
        self.mailbox.taken.store(0, Ordering::Relaxed);
        let held = std::mem::take(&mut self.taken)
            .into_iter()
            .chain(std::mem::take(&mut self.due))
            .chain(self.late.drain(..).rev())
            .chain(self.order.drain())
            .chain(self.replay.requests.drain(..));
        for inbound in held.collect::<Vec<_>>() {
            not_here(&self.runtime, self.id, inbound.reply, why);
        }
    }
}

/// What a body learned of one of its methods (see `compute`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Learned {
    /// Ran inline and short this many times in a row, never long.
    Short(u8),
    /// Ran for a watchdog tick or more; short calls in a row since.
    Long(u8),
}

/// Short calls in a row after which a method is trusted to be short (it
/// then runs inline without a permit), or after which a method marked
/// long runs inline again.
const STREAK: u8 = 8;

/// The body's way of running synchronous user code (see `compute`).
struct Runner<'a> {
    inline: &'a crate::compute::Inline,
    learned: &'a mut Vec<(&'static str, Learned)>,
}

impl crate::active::RunSync for Runner<'_> {
    fn run(&mut self, method: &'static str, call: &mut dyn FnMut()) {
        use crate::compute::Mode;
        // Method names are the literals of one match: compare addresses.
        let known = self
            .learned
            .iter()
            .position(|(m, _)| std::ptr::eq(m.as_ptr(), method.as_ptr()));
        let mode = match known.map(|i| self.learned[i].1) {
            Some(Learned::Short(n)) if n >= STREAK => Mode::Trusted,
            Some(Learned::Long(_)) => Mode::Long,
            _ => Mode::Probe,
        };
        let ((), long) = self.inline.run(mode, call);
        let next = match (known.map(|i| self.learned[i].1), long) {
            (_, true) => Learned::Long(0),
            (None, false) => Learned::Short(1),
            (Some(Learned::Short(n)), false) => Learned::Short(n.saturating_add(1)),
            (Some(Learned::Long(n)), false) if n + 1 >= STREAK => Learned::Short(0),
            (Some(Learned::Long(n)), false) => Learned::Long(n + 1),
        };
        match known {
            Some(i) => self.learned[i].1 = next,
            None => self.learned.push((method, next)),
        }
    }
}

/// What serving a request gave, before its reply is encoded.
enum Handled {
    /// The method returned (`Ok`) or returned its own error
    /// (`MethodError`): the value to encode.
    Value(Status, Box<dyn crate::codec::Encode + Send>),
    /// Anything else, already an outcome.
    Failed(Outcome),
}

impl Body {
    /// Serves requests until the mailbox closes.
    pub(crate) async fn run(mut self) {
        let reorder = self.runtime.config().reorder_timeout;
        // A recovered body serves its log first, as if taken from its
        // queue: what arrives meanwhile (immediate requests too) waits.
        let mut replaying = self.replay.requests.len();
        self.taken.extend(self.replay.requests.drain(..));
        loop {
            if self.replay.done.is_some()
                && let Some(replies) = self.replay.replies()
                && let Some(done) = self.replay.done.take()
            {
                let _ = done.send(replies);
            }
            // Next: an immediate request that arrived meanwhile, else the
            // next admitted request, else the next one taken. Not ahead of
            // the log: its last request may be taken and not yet served.
            let replay_due = self
                .due
                .front()
                .is_some_and(|r| r.flags & crate::wire::FLAG_REPLAYED != 0);
            let immediate = if replaying == 0 && !replay_due {
                self.mailbox.pop_immediate()
            } else {
                None
            };
            let next = match immediate {
                Some(inbound) => Some(inbound),
                None => self.due.pop_front(),
            };
            let inbound = match next {
                Some(inbound) => inbound,
                None => match self.taken.pop_front() {
                    Some(inbound) => {
                        replaying = replaying.saturating_sub(1);
                        self.mailbox
                            .taken
                            .store(self.taken.len(), Ordering::Relaxed);
                        if inbound.immediate() {
                            inbound
                        } else {
                            self.order.admit(inbound, &mut self.due, &mut self.late);
                            // Refused in arrival order; those not refused
                            // yet stay the body's.
                            self.late.reverse();
                            while let Some(inbound) = self.late.pop() {
                                self.refuse_late(*inbound).await;
                            }
                            continue;
                        }
                    }
                    None => {
                        match self.mailbox.take_all(&mut self.taken) {
                            Took::Some => {
                                if self.mailbox.starved.swap(false, Ordering::AcqRel) {
                                    self.runtime.space_freed();
                                }
                            }
                            Took::Closed => return,
                            Took::Nothing => {
                                if self.runtime.object_stats() {
                                    self.went_idle();
                                }
                                self.wait(reorder).await
                            }
                        }
                        continue;
                    }
                },
            };
            let (sender, seq) = (inbound.sender, inbound.seq);
            let inbound = match &inbound.reply {
                ReplyTo::Remote { conn, .. } if conn.is_closed() => {
                    match self.order.take_parked(sender, seq) {
                        // Sent again meanwhile: the copy is served.
                        Some(copy) => copy,
                        None => {
                            // Its caller is gone: nobody would get the reply.
                            tracing::debug!(
                                object = self.id,
                                "dropped a request of {}, whose connection is gone",
                                conn.peer
                            );
                            self.order.dropped(sender, seq);
                            continue;
                        }
                    }
                }
                _ => inbound,
            };
            if inbound.flags & FLAG_TERMINATE != 0 {
                self.order.served(sender, seq);
                self.ending();
                inbound.reply.send(&self.runtime, Outcome::ok_unit(), None);
                let rest: Vec<Box<Inbound>> = self
                    .due
                    .drain(..)
                    .chain(self.taken.drain(..))
                    .chain(self.order.drain())
                    .collect();
                self.runtime.terminated(self.id, &self.mailbox, rest);
                return;
            }
            if inbound.flags & FLAG_MIGRATE != 0 {
                self.order.served(sender, seq);
                match self.migrate(inbound).await {
                    Ok(()) => {
                        for i in self.node.interceptors() {
                            let id = self.id;
                            if std::panic::catch_unwind(AssertUnwindSafe(|| i.left(id))).is_err() {
                                tracing::error!(
                                    object = format_args!("{id:#x}"),
                                    "an interceptor panicked when told the object moved"
                                );
                            }
                        }
                        return;
                    }
                    Err(()) => continue,
                }
            }
            let mut inbound = inbound;
            loop {
                if self.deliver(inbound).await {
                    self.order.served(sender, seq);
                    if self.runtime.object_stats() {
                        self.tally.count(sender, &self.mailbox.stats);
                    }
                    if let Some(copy) = self.order.take_parked(sender, seq) {
                        // Answered as any duplicate, now that its original was.
                        self.refuse_late(*copy).await;
                    }
                    break;
                }
                // Stale (see `Verdict::Stale`): its number is expected
                // again. A copy sent again meanwhile, by its sender's next
                // execution, is served in its place.
                match self.order.take_parked(sender, seq) {
                    Some(copy) => inbound = copy,
                    None => {
                        self.order.dropped(sender, seq);
                        break;
                    }
                }
            }
        }
    }

    /// Waits for a request, or for the oldest gap in some sender's
    /// requests to time out (the requests behind it are then due).
    /// Interceptors that act on idle objects (see `Interceptor::idle_after`)
    /// are called when none arrives for as long as they asked.
    async fn wait(&mut self, reorder: Duration) {
        let notified = self.mailbox.notify.notified();
        let gap = self.order.deadline(reorder);
        let interceptors = self.node.interceptors();
        let idle = interceptors.iter().filter_map(|i| i.idle_after()).min();
        if gap.is_none() && idle.is_none() {
            return notified.await;
        }
        // Far enough never to fire, for the deadline that is not set.
        let never = Instant::now() + Duration::from_secs(86_400 * 365);
        let idle_at = idle.map(|d| Instant::now() + d);
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(gap.unwrap_or(never)) => {
                self.order.expire(reorder, &mut self.due)
            }
            () = tokio::time::sleep_until(idle_at.unwrap_or(never)) => self.idle(&interceptors),
        }
    }

    /// Publishes its figures as it runs out of requests, and measures its
    /// state when asked (see `stats`).
    fn went_idle(&mut self) {
        let object = &self.object;
        self.tally.idle(&self.mailbox.stats, || {
            let state = object.state()?;
            codec::encoded_len(state).map(|n| n as u64)
        });
    }

    /// Calls the `idle` hook of the interceptors that asked for it.
    fn idle(&self, interceptors: &[Arc<dyn crate::intercept::Interceptor>]) {
        for i in interceptors.iter().filter(|i| i.idle_after().is_some()) {
            let access = self.access();
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| i.idle(&access)));
            if let Err(panic) = ran {
                tracing::error!(
                    object = format_args!("{:#x}", self.id),
                    "an interceptor panicked on an idle object: {}",
                    crate::panics::describe(&*panic)
                );
            }
        }
    }

    /// Whether the node's interceptors let the object move to `to`: the
    /// first refusal, with its reason.
    fn may_move(&self, to: &crate::NodeUrl) -> Result<(), String> {
        let access = self.access();
        for i in self.node.interceptors() {
            match std::panic::catch_unwind(AssertUnwindSafe(|| i.may_move(&access, to))) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => return Err(why),
                Err(panic) => {
                    return Err(format!(
                        "an interceptor of its node panicked when asked: {}",
                        crate::panics::describe(&*panic)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Calls the `ending` hook of the node's interceptors.
    fn ending(&self) {
        let access = self.access();
        for i in self.node.interceptors() {
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| i.ending(&access)));
            if let Err(panic) = ran {
                tracing::error!(
                    object = format_args!("{:#x}", self.id),
                    "an interceptor panicked on an object that ends: {}",
                    crate::panics::describe(&*panic)
                );
            }
        }
    }

    /// What interceptors may do to the object between two requests.
    fn access(&self) -> BodyAccess<'_> {
        BodyAccess {
            runtime: &self.runtime,
            body: &*self.object,
            id: self.id,
            order: &self.order,
            credentials: &self.credentials,
        }
    }

    /// `inbound` as interceptors see it. The method is decoded once more
    /// here, off the fast path; the arguments' `Deserialize` is the
    /// program's code and may panic (serving them says so).
    fn delivery<'a>(&self, inbound: &'a Inbound) -> Delivery<'a> {
        let method =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.object.method_of(&inbound.payload)))
                .unwrap_or("?");
        Delivery {
            object: self.id,
            type_name: self.object.type_name(),
            sender: inbound.sender,
            seq: inbound.seq,
            method,
            immediate: inbound.immediate(),
            header: &inbound.header,
            payload: &inbound.payload,
            replayed: inbound.flags & crate::wire::FLAG_REPLAYED != 0,
        }
    }

    /// The reply an interceptor has for a late request, if one has.
    async fn logged_reply(&self, inbound: &Inbound) -> Option<Reply> {
        let interceptors = self.node.interceptors();
        if interceptors.is_empty() {
            return None;
        }
        let delivery = self.delivery(inbound);
        let method = delivery.method;
        for i in &interceptors {
            let asked = AssertUnwindSafe(async { i.duplicate(&delivery).await })
                .catch_unwind()
                .await;
            match asked {
                Ok(Some(reply)) => return Some(reply),
                Ok(None) => {}
                Err(panic) => tracing::error!(
                    object = format_args!("{:#x}", self.id),
                    method,
                    "an interceptor panicked when asked for a duplicate's reply: {}",
                    crate::panics::describe(&*panic)
                ),
            }
        }
        None
    }

    async fn refuse_late(&mut self, mut inbound: Inbound) {
        // A request served by a replay, sent again by its caller: the
        // reply it got then.
        let own = |slot: &Arc<crate::future::Slot>| matches!(&inbound.reply, ReplyTo::Slot(s) if Arc::ptr_eq(s, slot));
        if let Some((_, _, slot)) = (self.replay.slots.iter()).find(|(sender, seq, slot)| {
            *sender == inbound.sender && *seq == inbound.seq && !own(slot)
        }) {
            if let Some(outcome) = slot.outcome() {
                return inbound.reply.send(&self.runtime, outcome, None);
            }
            // Served, its reply not out yet (an interceptor holds it): it
            // gets that reply once out, and the body goes on meanwhile.
            let (slot, runtime) = (slot.clone(), self.runtime.clone());
            let mailbox = self.mailbox.clone();
            self.runtime.spawn(async move {
                let outcome = slot.settled().await;
                inbound.reply.send(&runtime, outcome, None);
                mailbox.notify();
            });
            return;
        }
        // One served before the checkpoint, whose reply the recovery
        // brought.
        if let Some(answer) = self
            .replay
            .answers
            .iter()
            .find(|a| a.sender == inbound.sender && a.seq == inbound.seq)
        {
            let outcome = outcome_of(answer.reply.clone(), &self.runtime);
            return inbound.reply.send(&self.runtime, outcome, None);
        }
        // One an interceptor logged the reply of (asking it takes a while).
        self.owe(&mut inbound);
        let logged = self.logged_reply(&inbound).await;
        let reply = self.owed();
        if let Some(logged) = logged {
            return reply.send(&self.runtime, outcome_of(logged, &self.runtime), None);
        }
        let o = Outcome::failure(
            Status::Refused,
            format!(
                "request #{} of sender {:#x} arrived after later ones were served \
                 (a duplicate, or later than the reorder timeout); it was not served",
                inbound.seq, inbound.sender
            ),
        );
        reply.send(&self.runtime, o, None);
    }

    /// Keeps the reply of `inbound` in the body while the body awaits
    /// something about it (see [`Body::owed`]).
    fn owe(&mut self, inbound: &mut Inbound) {
        self.owed = Some(std::mem::replace(&mut inbound.reply, ReplyTo::Nobody));
    }

    /// The reply [`Body::owe`] kept.
    fn owed(&mut self) -> ReplyTo {
        self.owed.take().unwrap_or(ReplyTo::Nobody)
    }

    /// Serves a request, unless an interceptor says otherwise, and answers
    /// it. `false` when an interceptor found it stale
    /// ([`Verdict::Stale`]): its sequence number is not used up.
    async fn deliver(&mut self, mut inbound: Box<Inbound>) -> bool {
        let interceptors = self.node.interceptors();
        self.owe(&mut inbound);
        if interceptors.is_empty() {
            let (method, result) = self.serve(&inbound, false).await;
            let reply = self.owed();
            self.reply(reply, (inbound.sender, inbound.seq), method, result);
            return true;
        }
        // Interceptors see the method before the request is served.
        let delivery = self.delivery(&inbound);
        let method = delivery.method;
        let mut holds = Vec::new();
        for (k, i) in interceptors.iter().enumerate() {
            let mut access = self.access();
            // A hook is code of a technical service, and a panic in it must
            // not end the body: the request is answered, and not served.
            // A call the hook awaits to this object fails as a deadlock.
            let verdict = AssertUnwindSafe(async {
                crate::future::HookScoped {
                    object: self.id,
                    fut: i.before_delivery(&delivery, &mut access),
                }
                .await
            })
            .catch_unwind()
            .await;
            match verdict {
                Ok(Verdict::Deliver) => {}
                Ok(Verdict::DeliverHeld(hold)) => holds.push(hold),
                Ok(Verdict::Drop) => {
                    // The interceptors that saw it arrive see it end, so
                    // none keeps it as being served.
                    self.after_serve(&interceptors[..k], &delivery, ServeOutcome::Dropped);
                    // Not answered: its caller is not told.
                    drop(self.owed());
                    return true;
                }
                Ok(Verdict::Refuse(why)) => {
                    self.after_serve(&interceptors[..k], &delivery, ServeOutcome::Dropped);
                    let o = Outcome::failure(
                        Status::Refused,
                        format!(
                            "`{method}` was not served: an interceptor of node `{}` refused it \
                             for {} {:#x}: {why}",
                            self.node.name, delivery.type_name, self.id
                        ),
                    );
                    self.owed().send(&self.runtime, o, None);
                    return true;
                }
                Ok(Verdict::Stale(why)) => {
                    self.after_serve(&interceptors[..k], &delivery, ServeOutcome::Dropped);
                    let o = Outcome::failure(
                        Status::Refused,
                        format!(
                            "`{method}` was not served: an interceptor of node `{}` found request \
                             #{} of {:#x} to {} {:#x} stale (sent by an execution a rollback \
                             discarded): {why}",
                            self.node.name,
                            delivery.seq,
                            delivery.sender,
                            delivery.type_name,
                            self.id
                        ),
                    );
                    self.owed().send(&self.runtime, o, None);
                    return false;
                }
                Err(panic) => {
                    let why = crate::panics::describe(&*panic);
                    tracing::error!(
                        object = format_args!("{:#x}", self.id),
                        type_name = delivery.type_name,
                        method,
                        "an interceptor panicked before delivery; the request was not served: {why}"
                    );
                    let o = Outcome::failure(
                        Status::Refused,
                        format!(
                            "`{method}` was not served: an interceptor of node `{}` panicked \
                             before delivering it to {} {:#x}: {why}",
                            self.node.name, delivery.type_name, self.id
                        ),
                    );
                    self.owed().send(&self.runtime, o, None);
                    return true;
                }
            }
        }
        // Held requests are served at once, unless their method was seen
        // sending before its hold was done (a send waits for it, blocking)
        // or sends could not wait here.
        let speculate = !holds.is_empty()
            && !self.send_when_held.contains(&method)
            && tokio::runtime::Handle::current().runtime_flavor()
                != tokio::runtime::RuntimeFlavor::CurrentThread;
        let hold = match holds.len() {
            0 => None,
            1 => holds.pop(),
            _ => Some(crate::intercept::Hold::new(async move {
                for hold in holds {
                    hold.wait().await?;
                }
                Ok(())
            })),
        };
        let result = if speculate {
            let hold = hold.clone().expect("held");
            self.runtime.hold_back(self.id, hold);
            let (_, result) = self.serve(&inbound, true).await;
            if self.runtime.unhold(self.id) {
                self.send_when_held.push(method);
            }
            result
        } else {
            if let Some(hold) = &hold {
                // Awaited here, so a failure drops the request unserved.
                if let Err(why) = hold.wait().await {
                    self.drop_held(&interceptors, &delivery, &why);
                    let reply = self.owed();
                    self.not_here(reply, &why);
                    return true;
                }
            }
            self.serve(&inbound, false).await.1
        };
        if let Some(hold) = &hold {
            // Nothing of it leaves before its hold is done: dropped if the
            // hold failed, its caller keeping the request.
            if let Err(why) = hold.wait().await {
                self.drop_held(&interceptors, &delivery, &why);
                let reply = self.owed();
                self.not_here(reply, &why);
                return true;
            }
        }
        // Served now: a checkpoint taken after serving has its effect in the
        // state, so its table must not expect the request again.
        self.order.served(inbound.sender, inbound.seq);
        let reply = self.owed();
        let mut outcome = self.outcome(&reply, result, method);
        let served = serve_outcome(outcome.status);
        self.after_serve(&interceptors, &delivery, served);
        let mut header = Vec::new();
        let mut later = Vec::new();
        for i in &interceptors {
            let access = self.access();
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
                i.replied(&delivery, served, &outcome.payload);
                i.reply_header(&delivery, served, &outcome.payload, &access, &mut header);
                later.extend(i.reply_hold(&delivery, served));
            }));
            if let Err(panic) = ran {
                tracing::error!(
                    object = format_args!("{:#x}", self.id),
                    method,
                    "an interceptor panicked when told of a reply: {}",
                    crate::panics::describe(&*panic)
                );
            }
        }
        outcome.header = header.into();
        let (id, call) = (self.id, (inbound.sender, inbound.seq));
        let send = move |runtime: &Runtime, reply: ReplyTo, outcome: Outcome| {
            if matches!(reply, ReplyTo::Slot(_)) {
                // A caller of this runtime: its interceptors read the
                // header here, as they would from the wire.
                runtime.reply_arrived(call.0, id, call.1, &outcome.header);
            }
            reply.send(runtime, outcome, None);
        };
        if later.is_empty() {
            send(&self.runtime, reply, outcome);
            return true;
        }
        // Only the reply waits: the object goes on serving.
        let (runtime, mailbox) = (self.runtime.clone(), self.mailbox.clone());
        self.runtime.spawn(async move {
            for hold in later {
                if let Err(why) = hold.wait().await {
                    not_here(&runtime, id, reply, &why);
                    // A replayed request's reply: the body sees its log
                    // answered.
                    return mailbox.notify();
                }
            }
            // Its holds are done: nothing can undo the service any more,
            // even if the instance was discarded since (a rollback goes
            // back no further than what released the reply).
            send(&runtime, reply, outcome);
            mailbox.notify();
        });
        true
    }

    /// A request whose hold failed: dropped, as if an interceptor had
    /// dropped it, and said.
    fn drop_held(
        &self,
        interceptors: &[Arc<dyn crate::intercept::Interceptor>],
        delivery: &Delivery<'_>,
        why: &str,
    ) {
        tracing::error!(
            object = format_args!("{:#x}", self.id),
            method = delivery.method,
            "a held request was dropped, its caller told to look for the object elsewhere: {why}"
        );
        self.after_serve(interceptors, delivery, ServeOutcome::Dropped);
    }

    /// Tells the caller of a request whose hold failed that this instance
    /// cannot answer it: as a runtime that died would (`NodeDied`, naming
    /// this runtime), so that a caller that keeps its requests asks where
    /// the object lives now (a recovery replaced this instance, most
    /// likely) and sends it there, instead of waiting for a reply that
    /// will not come from here.
    fn not_here(&self, reply: crate::connection::ReplyTo, why: &str) {
        not_here(&self.runtime, self.id, reply, why);
    }

    /// Runs the `after_serve` hooks of `interceptors`, in order.
    fn after_serve(
        &self,
        interceptors: &[Arc<dyn crate::intercept::Interceptor>],
        delivery: &Delivery<'_>,
        served: ServeOutcome,
    ) {
        for i in interceptors {
            let access = self.access();
            // The request ended: its reply leaves whatever the hook does,
            // and the next interceptors still see it.
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
                i.after_serve(delivery, served, &access);
            }));
            if let Err(panic) = ran {
                tracing::error!(
                    object = format_args!("{:#x}", self.id),
                    type_name = delivery.type_name,
                    method = delivery.method,
                    "an interceptor panicked after serving: {}",
                    crate::panics::describe(&*panic)
                );
            }
        }
    }

    /// Serves a request: the method it called, and what that gave.
    ///
    /// Never returns once the object is discarded: a method runs to its
    /// end even then when it is past reach (a synchronous one, or a
    /// stretch of an `async` one between two awaits: the body's task is
    /// aborted where it next waits, and a method that computes does not),
    /// but nothing of it leaves: its sends fail (see
    /// `Runtime::dispatch`), and its reply is not given, the body's task
    /// ending here.
    async fn serve(&mut self, inbound: &Inbound, held: bool) -> (&'static str, Handled) {
        let served = self.call(inbound, held).await;
        if self.mailbox.is_discarded() {
            // Aborted, the task ends at this wait; the reply it owes is
            // answered as by a dead runtime (see `Drop for Body`).
            std::future::pending::<()>().await;
        }
        served
    }

    /// Calls the method a request names: the method, and what it gave.
    async fn call(&mut self, inbound: &Inbound, held: bool) -> (&'static str, Handled) {
        // The runtime by handle: cloning the runtime itself would touch a
        // reference count every thread shares, once per request.
        let serving = Serving {
            object: self.id,
            instance: self.mailbox.instance(),
            runtime: self.runtime.handle(),
            sender: inbound.sender,
            seq: inbound.seq,
            replayed: inbound.flags & crate::wire::FLAG_REPLAYED != 0,
            held,
        };
        let (id, type_name) = (self.id, self.object.type_name());
        let mut runner = Runner {
            inline: self.runtime.inline(),
            learned: &mut self.learned,
        };
        let (object, runtime, runner) = (&mut self.object, &self.runtime, &mut runner);
        // The method's own panics are caught where it runs; this catches
        // those of the arguments' `Deserialize`, which would end the body.
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(move || {
            // Moved in, so the borrow of the object outlives the closure.
            let object = object;
            object.serve_bytes(runtime, &inbound.held, &inbound.payload, serving, runner)
        }));
        let (method, dispatched) = match decoded {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let outcome = Outcome::failure(
                    Status::BadRequest,
                    format!("request to {type_name} {id:#x} does not decode: {e}"),
                );
                return ("?", Handled::Failed(outcome));
            }
            Err(panic) => {
                let outcome = Outcome::failure(
                    Status::BadRequest,
                    format!(
                        "request to {type_name} {id:#x} does not decode: decoding it panicked: {}",
                        crate::panics::describe(&*panic)
                    ),
                );
                return ("?", Handled::Failed(outcome));
            }
        };
        let served = match dispatched {
            Dispatched::Done(served) => served,
            Dispatched::Later(fut) => {
                AssertUnwindSafe(ServeScoped { serving, fut })
                    .catch_unwind()
                    .await
            }
        };
        let handled = match served {
            Ok(Served::Value(v)) => Handled::Value(Status::Ok, v),
            Ok(Served::Error(e)) => Handled::Value(Status::MethodError, e),
            Err(panic) => Handled::Failed(Outcome::failure(
                Status::Panicked,
                panic_message(&*panic, method),
            )),
        };
        (method, handled)
    }

    /// The encoded outcome of a request, for `reply`.
    fn outcome(&self, reply: &ReplyTo, result: Handled, method: &str) -> Outcome {
        let (status, value) = match result {
            Handled::Value(status, value) => (status, value),
            Handled::Failed(outcome) => return outcome,
        };
        if !reply.expects_reply() {
            return Outcome::failure(Status::Ok, "");
        }
        codec::with_scratch(|payload| match codec::encode_into(&*value, payload) {
            Ok(held) => Outcome {
                status,
                payload: bytes::Bytes::copy_from_slice(payload),
                held,
                runtime: Some(self.runtime.handle()),
                header: bytes::Bytes::new(),
            },
            Err(e) => encode_failure(e, method),
        })
    }

    /// Answers a request served without interceptors: a value for a remote
    /// caller is encoded into this thread's scratch vector and copied into
    /// the connection's batch with the reply's envelope.
    fn reply(&self, reply: ReplyTo, (sender, seq): (u64, u64), method: &str, result: Handled) {
        let (conn, call_id, status, value) = match (reply, result) {
            (ReplyTo::Remote { conn, call_id }, Handled::Value(status, value)) => {
                (conn, call_id, status, value)
            }
            (reply, result) => {
                let outcome = self.outcome(&reply, result, method);
                if matches!(reply, ReplyTo::Slot(_)) {
                    self.runtime.reply_arrived(sender, self.id, seq, &[]);
                }
                return reply.send(&self.runtime, outcome, None);
            }
        };
        codec::with_scratch(|payload| {
            match codec::encode_into(&*value, payload) {
                Ok(held) => {
                    match conn.write(|buf| {
                        wire::put_reply(buf, call_id, status, &[], &held, None, payload)
                    }) {
                        // After the reply: the values follow it.
                        Ok(()) => {
                            for h in &held {
                                h.continue_to(&conn);
                            }
                        }
                        Err(e) => {
                            let outcome = Outcome::failure(
                                Status::Refused,
                                format!("the value returned by `{method}` takes {e}"),
                            );
                            ReplyTo::Remote { conn, call_id }.send(&self.runtime, outcome, None);
                        }
                    }
                }
                Err(e) => {
                    let outcome = encode_failure(e, method);
                    ReplyTo::Remote { conn, call_id }.send(&self.runtime, outcome, None);
                }
            }
        });
    }

    /// Moves the object to the runtime named in the request. On failure
    /// the object stays and keeps serving; the caller learns why.
    async fn migrate(&mut self, mut inbound: Box<Inbound>) -> Result<(), ()> {
        let target: crate::NodeUrl = match codec::decode::<String>(&inbound.payload)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(url) => url,
            None => {
                let o = Outcome::failure(Status::BadRequest, "migration target is not a node URL");
                inbound.reply.send(&self.runtime, o, None);
                return Err(());
            }
        };
        if let Err(why) = self.may_move(&target) {
            let o = Outcome::failure(Status::NotMigratable, why);
            inbound.reply.send(&self.runtime, o, None);
            return Err(());
        }
        let Some(state) = self.object.state() else {
            let o = Outcome::failure(
                Status::NotMigratable,
                format!(
                    "`{}` does not implement serde::Serialize, so its state cannot move; derive \
                     Serialize and Deserialize on it to make it migratable",
                    self.object.type_name()
                ),
            );
            inbound.reply.send(&self.runtime, o, None);
            return Err(());
        };
        let address = crate::runtime::join_address(target.host(), target.port());
        let same_runtime = Some(address.as_str()) == self.runtime.address();
        // Futures inside the state follow it to its new runtime: the
        // restore request announces them.
        let mut state_bytes = Vec::new();
        let held = match codec::encode_into(state, &mut state_bytes) {
            Ok(held) => held,
            Err(e) => {
                let why = match e {
                    codec::EncodeFailure::Error(e) => e.to_string(),
                    // The program's `Serialize` panicked: the object did
                    // not move, and goes on serving here.
                    codec::EncodeFailure::Panic(panic) => {
                        let why = crate::panics::describe(&*panic);
                        tracing::error!(
                            object = format_args!("{:#x}", self.id),
                            type_name = self.object.type_name(),
                            "encoding the state to migrate panicked; the object stays: {why}"
                        );
                        format!("its Serialize implementation panicked: {why}")
                    }
                };
                let o = Outcome::failure(
                    Status::NotMigratable,
                    format!("state does not encode: {why}"),
                );
                inbound.reply.send(&self.runtime, o, None);
                return Err(());
            }
        };
        let state = state_bytes;
        let checkpoint = Checkpoint {
            type_name: self.object.type_name().to_owned(),
            object: self.id,
            state,
            next_seq: self.order.table(),
            sent_seq: self.runtime.sent_by(self.id),
            secret: self.credentials.secret(),
            hosts: self.credentials.hosts_with(self.runtime.id()),
        };
        let moved = crate::ObjectMoved {
            object: self.id,
            type_name: self.object.type_name(),
            from: format!(
                "actogrid://{}/{}",
                self.runtime.address().unwrap_or("local"),
                self.node.name
            ),
            to: target.to_string(),
            state_bytes: checkpoint.state.len(),
        };
        if same_runtime {
            // Already there: moving to another node of the same runtime
            // only changes which node hosts it.
            self.node = self.runtime.local_node(target.name()).inner().clone();
            self.runtime.rehome(self.id, &self.node);
            inbound.reply.send(&self.runtime, Outcome::ok_unit(), None);
            self.runtime.announce_move(moved);
            return Err(());
        }
        self.owe(&mut inbound);
        let restored = self
            .runtime
            .remote_restore(&target, checkpoint, held, self.replay.carried())
            .await;
        let reply = self.owed();
        if let Err(e) = restored {
            let o = Outcome::failure(
                Status::NotMigratable,
                format!("migration to {target} failed: {e}"),
            );
            reply.send(&self.runtime, o, None);
            return Err(());
        }
        // From here on every request goes on to the new location, queued
        // ones first, in order.
        // Admitted requests behind this one come first, then those held
        // back for a gap; the new body orders them by sequence number.
        let mut rest: Vec<Box<Inbound>> = self.due.drain(..).chain(self.taken.drain(..)).collect();
        self.mailbox.taken.store(0, Ordering::Relaxed);
        rest.extend(self.order.drain());
        self.runtime
            .forward_all(self.id, &address, &self.mailbox, rest);
        reply.send(&self.runtime, Outcome::ok_unit(), Some((self.id, &address)));
        self.runtime.announce_move(moved);
        Ok(())
    }
}

/// The outcome of a value that does not encode.
fn encode_failure(e: codec::EncodeFailure, method: &str) -> Outcome {
    match e {
        codec::EncodeFailure::Error(e) => Outcome::failure(
            Status::Refused,
            format!("the value returned by `{method}` does not encode: {e}"),
        ),
        codec::EncodeFailure::Panic(panic) => {
            Outcome::failure(Status::Panicked, panic_message(&*panic, method))
        }
    }
}

/// The message of a panic in `method`, read on the thread that caught it.
/// The caller's `CallError::Panicked` names the method already: the
/// message says what panicked, where, on which host and process.
fn panic_message(panic: &(dyn std::any::Any + Send), _method: &str) -> String {
    crate::panics::describe(panic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(sender: u64, seq: u64) -> Box<Inbound> {
        Box::new(Inbound {
            target: 1,
            sender,
            seq,
            flags: 0,
            header: bytes::Bytes::new(),
            payload: bytes::Bytes::new(),
            held: Vec::new(),
            reply: ReplyTo::Nobody,
        })
    }

    /// Admits `seq` of sender 7: the sequence numbers made due, and those
    /// refused as late.
    fn admit(order: &mut Order, seq: u64) -> (Vec<u64>, Vec<u64>) {
        let (mut due, mut late) = (VecDeque::new(), Vec::new());
        order.admit(request(7, seq), &mut due, &mut late);
        (
            due.iter().map(|r| r.seq).collect(),
            late.iter().map(|r| r.seq).collect(),
        )
    }

    #[test]
    fn a_copy_of_a_queued_request_waits_for_it() {
        let mut order = Order::default();
        assert_eq!(admit(&mut order, 1), (vec![1], vec![]));
        assert_eq!(admit(&mut order, 2), (vec![2], vec![]));
        // #1 still queued: its copy waits for it.
        assert_eq!(admit(&mut order, 1), (vec![], vec![]));
        assert_eq!(order.take_parked(7, 1).map(|r| r.seq), Some(1));
        assert!(order.take_parked(7, 1).is_none());
        order.served(7, 1);
        // Served: a copy now is a duplicate, for the interceptors to answer.
        assert_eq!(admit(&mut order, 1), (vec![], vec![1]));
        // Bounded: the oldest copies are refused.
        let n = MAX_RESENT as u64 + 10;
        for seq in 3..=n {
            admit(&mut order, seq);
        }
        let mut refused = Vec::new();
        for seq in 2..=n {
            refused.extend(admit(&mut order, seq).1);
        }
        assert_eq!(refused, (2..11).collect::<Vec<_>>(), "the oldest copies");
    }

    #[test]
    fn dropped_requests_sent_again_are_served_once_in_order() {
        let mut order = Order::default();
        for seq in 1..=4 {
            assert_eq!(admit(&mut order, seq), (vec![seq], vec![]));
        }
        order.served(7, 1);
        // #2, #3 and #4 dropped, their caller gone.
        for seq in 2..=4 {
            order.dropped(7, seq);
        }
        assert_eq!(order.table(), vec![(7, 2)], "not served");
        // Sent again out of order: served in order, once.
        assert_eq!(admit(&mut order, 4), (vec![], vec![]));
        assert_eq!(admit(&mut order, 3), (vec![], vec![]));
        assert_eq!(admit(&mut order, 2), (vec![2, 3, 4], vec![]));
        for seq in 2..=4 {
            order.served(7, seq);
        }
        assert_eq!(admit(&mut order, 3), (vec![], vec![3]), "a duplicate");
        assert_eq!(admit(&mut order, 5), (vec![5], vec![]));
        // #6 dropped, then #7 served (another route): #6 is given up, its
        // copy refused rather than served after #7.
        assert_eq!(admit(&mut order, 6), (vec![6], vec![]));
        assert_eq!(admit(&mut order, 7), (vec![7], vec![]));
        order.served(7, 5);
        order.dropped(7, 6);
        order.served(7, 7);
        assert_eq!(admit(&mut order, 6), (vec![], vec![6]));
        assert_eq!(admit(&mut order, 8), (vec![8], vec![]));
    }
}
