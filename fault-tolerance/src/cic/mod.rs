//! Communication-induced checkpointing (CIC): protected objects checkpoint
//! on their own, each message carries its sender's checkpoint index, and a
//! receiver behind the index it receives checkpoints before it delivers —
//! so the checkpoints of one index form a state the whole group can roll
//! back to together (the recovery line). Nothing is logged on the call
//! path but the order requests are delivered in, handed to the FT server
//! asynchronously; a failure rolls every member back.
//!
//! This module is the protocol as sans-IO state machines, driven by a
//! seeded simulator in the tests (`tests/cic_sim.rs`, with the line in
//! memory or durable in a store file); production does not drive them yet
//! (`docs/fault-tolerance.md` says what works today).
//!
//! | core | one per | role |
//! |---|---|---|
//! | [`Member`] | protected object | stamps, forced checkpoints, retention, reception history, output commit |
//! | [`LineKeeper`] | FT server | durable checkpoints and histories, the recovery line, the plan of a recovery, garbage collection |
//! | [`DurableLine`] | FT server | the keeper in the FT store: survives a restart of the FT server, collects what the line leaves behind |
//!
//! # Model
//!
//! As for PML (see [`crate::pml`]): piecewise deterministic objects, which
//! serve one request at a time and may await the replies to their calls
//! inside a service; nodes that fail by stopping; a network that loses,
//! duplicates and reorders; a store that survives, reached by each member
//! over one ordered stream whose tail a failure may lose. Callers outside
//! the group (`main`, unprotected objects) do not roll back: they keep
//! their requests until answered and send them again.
//!
//! # Rules
//!
//! 1. **Stamps.** Every request and reply a member sends carries its
//!    [`Stamp`]: the group's epoch, its checkpoint index, and how many
//!    requests it had delivered (its place in its own history). A message
//!    of another epoch is dropped: its sender sends it again once both
//!    are in the same one.
//! 2. **Forced checkpoints, at boundaries only.** Checkpoints are taken
//!    between two services, never inside one: every TTC, and before
//!    delivering a request whose index is above the member's own (the
//!    checkpoint then stands for every index it jumps over). So a request
//!    sent after its sender's checkpoint `i` is never delivered before the
//!    receiver's checkpoint `i`.
//! 3. **Replies from ahead.** A reply is consumed inside a service, where
//!    no checkpoint can be taken: when its index is above the member's,
//!    the member's next checkpoint reaches that index and records a
//!    dependency ([`Dep`]) on the replier's history up to the service that
//!    sent it. Such a checkpoint holds the reply's consumption but not its
//!    sending; the recovery makes the replier serve the same requests in
//!    the same order again, so that it sends the same reply, which the
//!    caller then drops as a duplicate.
//! 4. **Reception histories.** Each member records which request it
//!    delivered at each position, and the stamps of the replies it
//!    consumed; it hands them to the FT server in batches, off the call
//!    path. A recovery replays a member's history up to where the line
//!    needs it, waiting for each request in turn (placeholders).
//! 5. **Senders keep what they sent** (requests and replies), with their
//!    original stamps, until the receiver said at which index it took
//!    them and the committed line has passed that index. A checkpoint
//!    holds what its member keeps: the messages in transit across the
//!    line, sent again by the restart.
//! 6. **The recovery line** ([`LineKeeper`]) is the highest index `L` at
//!    which every member has a durable checkpoint and, closing the
//!    dependencies of rule 3 over the histories (what a replayed member
//!    delivered or consumed from a member past its own checkpoint `L`
//!    makes that one replay too), every history entry a replay needs is
//!    durable. It is committed as soon as it moves (and what is below it
//!    collected); a recovery restarts every member from the best line, in
//!    a new epoch, with its replay list.
//! 7. **Output commit.** A reply to a caller outside the group leaves only
//!    once the committed line is above the index it was produced at: no
//!    rollback can then undo the service that gave it.
//!
//! # Guarantees
//!
//! Under the model, a request's effect happens exactly once in the state
//! the group ends in, every outside caller gets one reply — the one the
//! final state holds — and a member that fails at any time, during a
//! recovery too, only costs a rollback of everyone to the line.

mod durable;
mod line;
mod member;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use self::durable::{Bytes, DurableLine, LineError, Recovery};
pub use self::line::{LineKeeper, Plan, Restart};
pub use self::member::{Action, Config, Member};
pub use crate::pml::{Incarnation, ObjectId, RequestId, Time};

/// What every message of a member carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    /// The group's epoch: one more with every recovery.
    pub epoch: Incarnation,
    /// The sender's checkpoint index when it sent.
    pub index: u64,
    /// Requests the sender had delivered when it sent.
    pub delivered: u64,
    /// Replies it had consumed in the service it sent from, when it sent.
    pub consumed: u64,
}

impl Stamp {
    /// Where in its history the sender was when it sent.
    pub fn at(&self) -> At {
        At {
            position: self.delivered,
            sub: self.consumed,
        }
    }
}

/// What the checkpoints of a committed line had received from one member,
/// as the FT server reads it off the line ([`LineKeeper::received_from`]):
/// what a driver without acknowledgements on the wire gives
/// [`Member::line_committed`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Received {
    /// By receiver: the last of the member's requests to it delivered
    /// before its checkpoint of the line.
    pub requests: BTreeMap<ObjectId, u64>,
    /// By caller: the last of its calls to the member made before its
    /// checkpoint of the line, and those of them it still awaited there.
    pub replies: BTreeMap<ObjectId, (u64, std::collections::BTreeSet<u64>)>,
}

impl Received {
    /// The last request to `receiver` it had delivered.
    pub fn delivered(&self, receiver: ObjectId) -> u64 {
        self.requests.get(&receiver).copied().unwrap_or(0)
    }

    /// Whether the caller of request `id` had consumed its reply.
    pub fn consumed(&self, id: RequestId) -> bool {
        self.replies
            .get(&id.sender)
            .is_some_and(|(last, awaited)| id.seq <= *last && !awaited.contains(&id.seq))
    }
}

/// A place in a member's history: the service at `position`, after its
/// request (`sub` 0) or after its `sub`-th reply consumed.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct At {
    /// The delivery number of the service.
    pub position: u64,
    /// Replies consumed in it so far.
    pub sub: u64,
}

/// A request: `from` is the sender's stamp, `None` for a caller outside
/// the group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Request<P> {
    /// (target, sender, seq).
    pub id: RequestId,
    /// The sender's stamp.
    pub from: Option<Stamp>,
    /// The call.
    pub payload: P,
}

/// The reply to request `id`, from its target.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reply<P> {
    /// The request's id.
    pub id: RequestId,
    /// The replier's stamp.
    pub from: Option<Stamp>,
    /// The value.
    pub payload: P,
}

/// "I took it": from a request's target to its sender (`reply: false`),
/// or from a caller to the target that replied (`reply: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The request's id.
    pub id: RequestId,
    /// It acknowledges the reply, not the request.
    pub reply: bool,
    /// The acknowledging member's epoch; `None` from outside the group.
    pub epoch: Option<Incarnation>,
    /// Its checkpoint index when it took the message.
    pub index: u64,
}

/// A reply consumed from beyond the consumer's checkpoint index: the
/// replier must replay its history up to `at` for a line at or below
/// `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dep {
    /// The replier.
    pub on: ObjectId,
    /// Its index when it replied.
    pub index: u64,
    /// Its place in its history when it replied.
    pub at: At,
}

/// What a member delivered (a request, opening a position of its history)
/// or consumed (a reply, inside the service at that position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Where: the service, and for a reply which one it consumed.
    pub at: At,
    /// A request or a reply, with its sequence number.
    pub kind: EntryKind,
    /// Who sent it.
    pub sender: ObjectId,
    /// The sender's index and place when it sent; `None` from outside.
    pub stamp: Option<(u64, At)>,
}

/// What a history entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EntryKind {
    /// A request delivered: its sequence number.
    Request(u64),
    /// A reply consumed: the sequence number of the call.
    Reply(u64),
}

/// The protocol's part of a checkpoint (the body's state goes with it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record<P> {
    /// The member.
    pub object: ObjectId,
    /// Its epoch.
    pub epoch: Incarnation,
    /// The indices it stands for, `lo..=hi` (several when forced over a
    /// jump).
    pub lo: u64,
    /// See `lo`.
    pub hi: u64,
    /// Requests delivered before it.
    pub delivered: u64,
    /// Replies consumed since the last of those (in its service, or
    /// after it: futures resolved between services).
    pub consumed: u64,
    /// Replies from ahead consumed since the previous checkpoint.
    pub deps: Vec<Dep>,
    /// Nothing was delivered or consumed since the previous checkpoint:
    /// the body's state is the same (a store may keep it once).
    pub unchanged: bool,
    /// What the member restarts from.
    pub state: State<P>,
}

/// A member's protocol state at a checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State<P> {
    pub(crate) next_seq: BTreeMap<ObjectId, u64>,
    delivered_seq: BTreeMap<ObjectId, u64>,
    pub(crate) awaiting: std::collections::BTreeSet<RequestId>,
    retained: Vec<member::Retained<P>>,
    held: Vec<(Reply<P>, u64)>,
}

impl<P> Record<P> {
    /// Where in its member's history it was taken.
    pub fn at(&self) -> At {
        At {
            position: self.delivered,
            sub: self.consumed,
        }
    }
}

impl<P> Default for State<P> {
    fn default() -> State<P> {
        State {
            next_seq: BTreeMap::new(),
            delivered_seq: BTreeMap::new(),
            awaiting: std::collections::BTreeSet::new(),
            retained: Vec::new(),
            held: Vec::new(),
        }
    }
}

impl<P> State<P> {
    /// Messages kept in it (sent, in transit across its line maybe).
    pub fn retained(&self) -> usize {
        self.retained.len()
    }

    /// Calls of the body's not answered when it was taken (futures kept
    /// across requests).
    pub fn awaiting(&self) -> usize {
        self.awaiting.len()
    }

    /// Whether the body awaited the reply to `call` when it was taken.
    pub fn awaits(&self, call: RequestId) -> bool {
        self.awaiting.contains(&call)
    }

    /// The replies kept in it.
    pub fn retained_replies(&self) -> Vec<RequestId> {
        self.retained
            .iter()
            .filter_map(|r| match &r.sent {
                member::Sent::Reply(p) => Some(p.id),
                member::Sent::Request(_) => None,
            })
            .collect()
    }

    /// The requests kept in it.
    pub fn retained_requests(&self) -> Vec<RequestId> {
        self.kept_requests().map(|q| q.id).collect()
    }

    /// The requests kept in it, whole (a recovery delivers those in
    /// transit across the line again).
    pub fn kept_requests(&self) -> impl Iterator<Item = &Request<P>> {
        self.retained.iter().filter_map(|r| match &r.sent {
            member::Sent::Request(q) => Some(q),
            member::Sent::Reply(_) => None,
        })
    }

    /// By sender, the last sequence number delivered before it.
    pub fn delivered_table(&self) -> BTreeMap<ObjectId, u64> {
        self.delivered_seq.clone()
    }

    /// The last sequence number of `sender` delivered before it.
    pub fn delivered_from(&self, sender: ObjectId) -> u64 {
        self.delivered_seq.get(&sender).copied().unwrap_or(0)
    }
}
