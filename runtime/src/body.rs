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
//! * a request whose sequence number was already served is a duplicate
//!   and is dropped;
//! * a panic in a method reaches the caller as `CallError::Panicked` and
//!   the object goes on serving.

// Requests travel boxed through queues, batches and vectors: moving one
// then copies a pointer instead of the whole request, several times each.
#![allow(clippy::vec_box)]

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::active::{ErasedActive, Served};
use crate::codec;
use crate::connection::ReplyTo;
use crate::future::{Outcome, SERVING, Serving, Slot, Status};
use crate::ids::IdMap;
use crate::intercept::{BodyAccess, Checkpoint, Delivery, ServeOutcome, Verdict};
use crate::node::NodeInner;
use crate::runtime::Runtime;
use crate::wire::{FLAG_IMMEDIATE, FLAG_MIGRATE};

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
}

#[derive(Default)]
struct MailboxInner {
    queue: VecDeque<Box<Inbound>>,
    immediate: VecDeque<Box<Inbound>>,
    closed: bool,
}

impl Mailbox {
    pub(crate) fn new() -> Arc<Mailbox> {
        Arc::new(Mailbox {
            inner: Mutex::default(),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a request; hands it back if the body is gone (migrated or
    /// stopped), so the caller can route it again.
    #[allow(clippy::result_large_err)] // handed back, never propagated
    pub(crate) fn push(&self, inbound: Box<Inbound>) -> Result<(), Box<Inbound>> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(inbound);
        }
        if inbound.immediate() {
            inner.immediate.push_back(inbound);
        } else {
            inner.queue.push_back(inbound);
        }
        drop(inner);
        self.notify.notify_one();
        Ok(())
    }

    fn pop(&self) -> Option<Box<Inbound>> {
        let mut inner = self.lock();
        inner
            .immediate
            .pop_front()
            .or_else(|| inner.queue.pop_front())
    }

    /// Closes the mailbox and returns what was queued, in order.
    pub(crate) fn close(&self) -> Vec<Box<Inbound>> {
        let mut inner = self.lock();
        inner.closed = true;
        let mut all: Vec<Box<Inbound>> = inner.immediate.drain(..).collect();
        all.extend(inner.queue.drain(..));
        all
    }

    pub(crate) fn stop(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn len(&self) -> usize {
        let inner = self.lock();
        inner.queue.len() + inner.immediate.len()
    }
}

/// Per-sender ordering: the next sequence number expected from each
/// sender, and requests that arrived ahead of it.
#[derive(Default)]
pub(crate) struct Order {
    senders: IdMap<u64, SenderOrder>,
}

struct SenderOrder {
    /// Next sequence number to admit.
    expected: u64,
    /// Next sequence number to serve: admitted requests wait in the body's
    /// batch until served, and a checkpoint must not count them.
    served: u64,
    ahead: BTreeMap<u64, Box<Inbound>>,
    since: Option<Instant>,
}

impl Order {
    pub(crate) fn from_table(table: &[(u64, u64)]) -> Order {
        Order {
            senders: table
                .iter()
                .map(|&(sender, expected)| {
                    (
                        sender,
                        SenderOrder {
                            expected,
                            served: expected,
                            ahead: BTreeMap::new(),
                            since: None,
                        },
                    )
                })
                .collect(),
        }
    }

    /// For every known sender, the next sequence number not yet served.
    pub(crate) fn table(&self) -> Vec<(u64, u64)> {
        self.senders.iter().map(|(s, o)| (*s, o.served)).collect()
    }

    /// Records that a request was served (or dropped by an interceptor).
    fn served(&mut self, sender: u64, seq: u64) {
        if seq != 0
            && let Some(s) = self.senders.get_mut(&sender)
        {
            s.served = s.served.max(seq + 1);
        }
    }

    /// Admits a request: pushes onto `out` those now due, in order, and
    /// onto `late` one that comes after its successors were served (a
    /// duplicate, or the tail of a gap given up on).
    fn admit(
        &mut self,
        inbound: Box<Inbound>,
        out: &mut Vec<Box<Inbound>>,
        late: &mut Vec<Box<Inbound>>,
    ) {
        if inbound.seq == 0 {
            out.push(inbound);
            return;
        }
        // Every sender numbers its requests to an object from 1, and a
        // table moved with the object (migration, checkpoint) knows the
        // senders it served: a sender met for the first time starts at 1,
        // even when a later request of its overtook the first.
        let s = self.senders.entry(inbound.sender).or_insert(SenderOrder {
            expected: 1,
            served: 1,
            ahead: BTreeMap::new(),
            since: None,
        });
        if inbound.seq < s.expected {
            tracing::debug!(
                sender = inbound.sender,
                seq = inbound.seq,
                "late or duplicate request not served"
            );
            late.push(inbound);
            return;
        }
        if inbound.seq > s.expected {
            s.since.get_or_insert_with(Instant::now);
            s.ahead.insert(inbound.seq, inbound);
            return;
        }
        s.expected += 1;
        out.push(inbound);
        Self::release(s, out);
    }

    fn release(s: &mut SenderOrder, out: &mut Vec<Box<Inbound>>) {
        while let Some(entry) = s.ahead.first_entry() {
            if *entry.key() != s.expected {
                break;
            }
            out.push(entry.remove());
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
    fn expire(&mut self, timeout: Duration, out: &mut Vec<Box<Inbound>>) {
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
        self.senders
            .values_mut()
            .flat_map(|s| std::mem::take(&mut s.ahead).into_values())
            .collect()
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
}

impl Body {
    /// Serves requests until the mailbox closes.
    pub(crate) async fn run(mut self) {
        let reorder = self.runtime.config().reorder_timeout;
        let mut due = Vec::new();
        let mut late = Vec::new();
        loop {
            let next = match self.mailbox.pop() {
                Some(next) => Some(next),
                None if self.mailbox.is_closed() => return,
                None => {
                    let notified = self.mailbox.notify.notified();
                    match self.order.deadline(reorder) {
                        Some(at) => {
                            tokio::select! {
                                () = notified => None,
                                () = tokio::time::sleep_until(at) => {
                                    self.order.expire(reorder, &mut due);
                                    None
                                }
                            }
                        }
                        None => {
                            notified.await;
                            None
                        }
                    }
                }
            };
            if let Some(inbound) = next {
                if inbound.immediate() {
                    due.push(inbound);
                } else {
                    self.order.admit(inbound, &mut due, &mut late);
                }
            }
            for inbound in late.drain(..) {
                let o = Outcome::failure(
                    Status::Refused,
                    format!(
                        "request #{} of sender {:#x} arrived after later ones were served \
                         (a duplicate, or later than the reorder timeout); it was not served",
                        inbound.seq, inbound.sender
                    ),
                );
                inbound.reply.send(&self.runtime, o, None);
            }
            let mut batch = std::mem::take(&mut due).into_iter();
            while let Some(inbound) = batch.next() {
                let (sender, seq) = (inbound.sender, inbound.seq);
                if inbound.flags & FLAG_MIGRATE != 0 {
                    if !inbound.immediate() {
                        self.order.served(sender, seq);
                    }
                    match self.migrate(inbound, &mut batch).await {
                        Ok(()) => return,
                        Err(()) => continue,
                    }
                }
                self.deliver(inbound).await;
                self.order.served(sender, seq);
            }
        }
    }

    async fn deliver(&mut self, inbound: Box<Inbound>) {
        let interceptors = self.node.interceptors();
        if interceptors.is_empty() {
            let outcome = self.serve(&inbound).await;
            inbound.reply.send(&self.runtime, outcome, None);
            return;
        }
        // Interceptors see the method before the request is served, so it
        // is decoded once more here, off the fast path.
        let method = self.object.method_of(&inbound.payload);
        let delivery = Delivery {
            object: self.id,
            type_name: self.object.type_name(),
            sender: inbound.sender,
            seq: inbound.seq,
            method,
            immediate: inbound.immediate(),
            header: &inbound.header,
            payload: &inbound.payload,
        };
        for i in &interceptors {
            let mut access = BodyAccess {
                runtime: &self.runtime,
                body: &*self.object,
                id: self.id,
                order: &self.order,
            };
            if i.before_delivery(&delivery, &mut access).await == Verdict::Drop {
                return;
            }
        }
        let outcome = self.serve(&inbound).await;
        let served = match outcome.status {
            Status::Ok => ServeOutcome::Value,
            Status::MethodError => ServeOutcome::MethodError,
            Status::Panicked => ServeOutcome::Panicked,
            _ => ServeOutcome::Refused,
        };
        for i in &interceptors {
            let access = BodyAccess {
                runtime: &self.runtime,
                body: &*self.object,
                id: self.id,
                order: &self.order,
            };
            i.after_serve(&delivery, served, &access);
        }
        inbound.reply.send(&self.runtime, outcome, None);
    }

    async fn serve(&mut self, inbound: &Inbound) -> Outcome {
        // The runtime by handle: cloning the runtime itself would touch a
        // reference count every thread shares, once per request.
        let handle = self.runtime.handle();
        let (id, type_name) = (self.id, self.object.type_name());
        let (method, fut) =
            match self
                .object
                .serve_bytes(&self.runtime, &inbound.held, &inbound.payload)
            {
                Ok(x) => x,
                Err(e) => {
                    return Outcome::failure(
                        Status::BadRequest,
                        format!("request to {type_name} {id:#x} does not decode: {e}"),
                    );
                }
            };
        let serving = Serving {
            object: id,
            runtime: handle,
        };
        let served = AssertUnwindSafe(SERVING.scope(serving, fut))
            .catch_unwind()
            .await;
        let route = match &inbound.reply {
            ReplyTo::Remote { conn, .. } => Some(conn.clone()),
            _ => None,
        };
        let (status, value) = match served {
            Ok(Served::Value(v)) => (Status::Ok, v),
            Ok(Served::Error(e)) => (Status::MethodError, e),
            Err(panic) => {
                return Outcome::failure(Status::Panicked, panic_message(&*panic, method));
            }
        };
        if !inbound.reply.expects_reply() {
            return Outcome::failure(Status::Ok, "");
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| codec::encode_in(route, &*value))) {
            Ok(Ok((payload, held))) => Outcome {
                status,
                payload: payload.into(),
                held,
                runtime: Some(handle),
            },
            Ok(Err(e)) => Outcome::failure(
                Status::Refused,
                format!("the value returned by `{method}` does not encode: {e}"),
            ),
            Err(panic) => Outcome::failure(Status::Panicked, panic_message(&*panic, method)),
        }
    }

    /// Moves the object to the runtime named in the request. On failure
    /// the object stays and keeps serving; the caller learns why.
    async fn migrate(
        &mut self,
        inbound: Box<Inbound>,
        batch: &mut impl Iterator<Item = Box<Inbound>>,
    ) -> Result<(), ()> {
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
        // Futures inside the state follow it to its new runtime.
        let route = (!same_runtime).then(|| self.runtime.conn_to(&address));
        let (state, held) = match codec::encode_in(route, state) {
            Ok(x) => x,
            Err(e) => {
                let o =
                    Outcome::failure(Status::NotMigratable, format!("state does not encode: {e}"));
                inbound.reply.send(&self.runtime, o, None);
                return Err(());
            }
        };
        let checkpoint = Checkpoint {
            type_name: self.object.type_name().to_owned(),
            object: self.id,
            state,
            next_seq: self.order.table(),
            sent_seq: self.runtime.sent_by(self.id),
        };
        if same_runtime {
            // Already there: moving to another node of the same runtime
            // only changes which node hosts it.
            self.node = self.runtime.local_node(target.name()).inner().clone();
            self.runtime.rehome(self.id, &self.node);
            inbound.reply.send(&self.runtime, Outcome::ok_unit(), None);
            return Err(());
        }
        let restored = self.runtime.remote_restore(&target, checkpoint, held).await;
        if let Err(e) = restored {
            let o = Outcome::failure(
                Status::NotMigratable,
                format!("migration to {target} failed: {e}"),
            );
            inbound.reply.send(&self.runtime, o, None);
            return Err(());
        }
        // From here on every request goes on to the new location, queued
        // ones first, in order.
        // Admitted requests behind this one come first, then those held
        // back for a gap; the new body orders them by sequence number.
        let mut rest: Vec<Box<Inbound>> = batch.collect();
        rest.extend(self.order.drain());
        self.runtime
            .forward_all(self.id, &address, &self.mailbox, rest);
        inbound
            .reply
            .send(&self.runtime, Outcome::ok_unit(), Some((self.id, &address)));
        Ok(())
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send), method: &str) -> String {
    format!("panic in `{method}`: {}", panic_text(panic))
}

/// The message a panic carried.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_owned())
}
