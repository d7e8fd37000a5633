//! Sender-side retention: every request is kept until its reply is safe,
//! and resent — to wherever its target now lives — until then. A caller
//! whose target fails sees a late reply, never an error.
//!
//! [`Outbox`] is the bookkeeping shared by protected objects (for the calls
//! their body makes) and by [`Caller`], the core for code outside the
//! protected world (`main`, unprotected objects).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::ids::{Incarnation, ObjectId, RequestId, Time};
use super::message::{Reply, Request};

/// The calls one sender made to one target that are not settled.
#[derive(Clone, Debug)]
struct Target<P> {
    /// The last sequence number drawn for this target.
    last_seq: u64,
    /// Retained calls whose reply the sender has not observed, by sequence
    /// number, with when they were last sent (volatile).
    calls: BTreeMap<u64, (P, Time)>,
    /// Calls whose reply is in the sender's log but not yet observed
    /// (protected senders only; rebuilt from the log on recovery). A
    /// recovering object may log a reply before its replay makes the call
    /// again, so this can name calls not in `calls` yet.
    logged: BTreeSet<u64>,
}

impl<P> Default for Target<P> {
    fn default() -> Self {
        Target {
            last_seq: 0,
            calls: BTreeMap::new(),
            logged: BTreeSet::new(),
        }
    }
}

impl<P> Target<P> {
    /// Every call up to this number has its reply safe for good: observed.
    /// A reply only appended to the log does not count: the append may be
    /// lost with the node, and then the reply is needed again.
    fn acked(&self) -> u64 {
        self.calls
            .keys()
            .next()
            .map_or(self.last_seq, |seq| seq - 1)
    }
}

/// What an outbox keeps across a checkpoint: per target, the last sequence
/// number and the retained calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OutboxState<P> {
    pub(crate) targets: BTreeMap<ObjectId, (u64, BTreeMap<u64, P>)>,
}

/// What became of a reply offered to an outbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// First copy of the reply of a retained call: take it.
    Fresh,
    /// Already taken (or a call never made): drop it.
    Seen,
}

/// Calls one sender made and has not settled.
#[derive(Clone, Debug)]
pub(crate) struct Outbox<P> {
    targets: BTreeMap<ObjectId, Target<P>>,
}

impl<P: Clone> Outbox<P> {
    pub(crate) fn new() -> Self {
        Outbox {
            targets: BTreeMap::new(),
        }
    }

    pub(crate) fn from_state(state: OutboxState<P>, now: Time) -> Self {
        let targets = state
            .targets
            .into_iter()
            .map(|(object, (last_seq, calls))| {
                let calls = calls.into_iter().map(|(s, p)| (s, (p, now))).collect();
                let target = Target {
                    last_seq,
                    calls,
                    logged: BTreeSet::new(),
                };
                (object, target)
            })
            .collect();
        Outbox { targets }
    }

    pub(crate) fn state(&self) -> OutboxState<P> {
        let targets = self
            .targets
            .iter()
            .map(|(object, t)| {
                let calls = t.calls.iter().map(|(s, (p, _))| (*s, p.clone())).collect();
                (*object, (t.last_seq, calls))
            })
            .collect();
        OutboxState { targets }
    }

    /// Draws the next sequence number for `target`, retains the call and
    /// returns the request to send.
    pub(crate) fn call(
        &mut self,
        now: Time,
        sender: ObjectId,
        incarnation: Incarnation,
        target: ObjectId,
        payload: P,
    ) -> Request<P> {
        let t = self.targets.entry(target).or_default();
        t.last_seq += 1;
        let seq = t.last_seq;
        t.calls.insert(seq, (payload.clone(), now));
        Request {
            id: RequestId {
                target,
                sender,
                seq,
            },
            incarnation,
            acked: t.acked(),
            payload,
        }
    }

    /// Whether the reply of this call is in the log already.
    pub(crate) fn is_logged(&self, id: RequestId) -> bool {
        self.targets
            .get(&id.target)
            .is_some_and(|t| t.logged.contains(&id.seq))
    }

    /// A reply arrived. `ahead` accepts replies of calls not made yet: a
    /// recovering object's replay will make them again.
    pub(crate) fn offer(&mut self, id: RequestId, ahead: bool) -> Offer {
        let Some(t) = self.targets.get_mut(&id.target) else {
            if ahead && id.seq > 0 {
                self.targets.insert(id.target, Target::default());
                return Offer::Fresh;
            }
            return Offer::Seen;
        };
        if t.logged.contains(&id.seq) {
            Offer::Seen
        } else if t.calls.contains_key(&id.seq) || (ahead && id.seq > t.last_seq) {
            Offer::Fresh
        } else {
            Offer::Seen
        }
    }

    /// The reply of `id` is in the log: it needs no resend any more.
    pub(crate) fn mark_logged(&mut self, id: RequestId) {
        self.targets
            .entry(id.target)
            .or_default()
            .logged
            .insert(id.seq);
    }

    /// Whether the call `id` was made and not settled.
    pub(crate) fn has_call(&self, id: RequestId) -> bool {
        self.targets
            .get(&id.target)
            .is_some_and(|t| t.calls.contains_key(&id.seq))
    }

    /// Whether the reply of the call `id` was observed already.
    pub(crate) fn is_settled(&self, id: RequestId) -> bool {
        self.targets
            .get(&id.target)
            .is_some_and(|t| id.seq <= t.last_seq && !t.calls.contains_key(&id.seq))
    }

    /// The sender observed the reply of `id`: the call is settled.
    pub(crate) fn settle(&mut self, id: RequestId) -> Option<P> {
        let t = self.targets.get_mut(&id.target)?;
        t.logged.remove(&id.seq);
        t.calls.remove(&id.seq).map(|(p, _)| p)
    }

    fn request(
        sender: ObjectId,
        incarnation: Incarnation,
        target: ObjectId,
        t: &Target<P>,
        seq: u64,
        payload: P,
    ) -> Request<P> {
        Request {
            id: RequestId {
                target,
                sender,
                seq,
            },
            incarnation,
            acked: t.acked(),
            payload,
        }
    }

    /// Retained calls unanswered for `after` (or, with `only`, every
    /// unanswered call to that target), marked as sent now.
    pub(crate) fn resends(
        &mut self,
        now: Time,
        sender: ObjectId,
        incarnation: Incarnation,
        after: Duration,
        only: Option<ObjectId>,
    ) -> Vec<Request<P>> {
        let mut out = Vec::new();
        for (target, t) in &mut self.targets {
            if only.is_some_and(|o| o != *target) {
                continue;
            }
            let due: Vec<u64> = t
                .calls
                .iter()
                .filter(|(seq, (_, sent))| {
                    !t.logged.contains(seq) && (only.is_some() || now.since(*sent) >= after)
                })
                .map(|(seq, _)| *seq)
                .collect();
            for seq in due {
                let Some((payload, sent)) = t.calls.get_mut(&seq) else {
                    continue;
                };
                *sent = now;
                let payload = payload.clone();
                out.push(Self::request(sender, incarnation, *target, t, seq, payload));
            }
        }
        out
    }

    /// Number of calls not settled.
    pub(crate) fn pending(&self) -> usize {
        self.targets.values().map(|t| t.calls.len()).sum()
    }
}

/// What a [`Caller`] asks of its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallerAction<P> {
    /// Send this request to `request.id.target` (first time).
    Send(Request<P>),
    /// Send it again: unanswered for too long, or its target restarted.
    Resend(Request<P>),
}

/// The sender-side core for code outside the protected world (`main`, an
/// unprotected object) that calls protected objects: it retains every
/// request until its reply arrives and resends it until then, so the
/// caller's future survives the loss of messages and the failure of its
/// target. Replies resolve futures at once (nothing here is logged: if this
/// code fails, it is not recovered).
#[derive(Clone, Debug)]
pub struct Caller<P> {
    id: ObjectId,
    resend_after: Duration,
    outbox: Outbox<P>,
    actions: VecDeque<CallerAction<P>>,
}

impl<P: Clone> Caller<P> {
    /// A caller named `id` that resends a request unanswered for
    /// `resend_after`.
    pub fn new(id: ObjectId, resend_after: Duration) -> Self {
        Caller {
            id,
            resend_after,
            outbox: Outbox::new(),
            actions: VecDeque::new(),
        }
    }

    /// Calls `target`; the returned identity names the reply.
    pub fn call(&mut self, now: Time, target: ObjectId, payload: P) -> RequestId {
        let request = self
            .outbox
            .call(now, self.id, Incarnation::FIRST, target, payload);
        let id = request.id;
        self.actions.push_back(CallerAction::Send(request));
        id
    }

    /// A reply arrived: `Some` the first time (resolve the future of
    /// `request`), `None` for a duplicate or a reply to nothing.
    pub fn on_reply(&mut self, reply: Reply<P>) -> Option<(RequestId, P)> {
        let id = reply.request;
        if id.sender != self.id {
            return None;
        }
        self.outbox.settle(id).map(|_| (id, reply.value))
    }

    /// Time passed: resend what has waited too long.
    pub fn tick(&mut self, now: Time) {
        let again = self
            .outbox
            .resends(now, self.id, Incarnation::FIRST, self.resend_after, None);
        self.actions
            .extend(again.into_iter().map(CallerAction::Resend));
    }

    /// The location service says `object` restarted: resend everything it
    /// has not answered, to its new location.
    pub fn peer_restarted(&mut self, now: Time, object: ObjectId) {
        let again = self.outbox.resends(
            now,
            self.id,
            Incarnation::FIRST,
            self.resend_after,
            Some(object),
        );
        self.actions
            .extend(again.into_iter().map(CallerAction::Resend));
    }

    /// Calls whose reply has not arrived.
    pub fn pending(&self) -> usize {
        self.outbox.pending()
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<CallerAction<P>> {
        self.actions.pop_front()
    }
}
