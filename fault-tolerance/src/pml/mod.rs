//! Pessimistic message logging (PML), receiver-based: every message a
//! protected object observes is durable before the object observes it, so
//! when its node fails only that object restarts — from its last checkpoint,
//! replaying its log — and nobody else notices more than a delay.
//!
//! This module is the protocol as sans-IO state machines: they take events
//! (a message arrived, the store made something durable, the body finished
//! serving a request, time passed) and return actions (append, deliver, send, checkpoint);
//! they do no I/O and read no clock. A seeded simulator drives them in the
//! tests (`tests/pml_sim.rs`). Production ([`crate::server`]) follows the
//! same rules with the runtime's hooks, but does not drive these cores
//! yet; where it differs (replies to an object's own calls are kept by the
//! object called instead of logged by the caller; a request is served
//! while its entry is written, what the service produces held back until
//! the entry is durable, where these cores deliver only durable messages)
//! is written in `docs/fault-tolerance.md`.
//!
//! | core | one per | role |
//! |---|---|---|
//! | [`Protected`] | protected object and incarnation | logs, delivers, answers duplicates, checkpoints, replays |
//! | [`Caller`] | unprotected caller (`main`, an unprotected object) | retains its requests to protected objects and resends them until answered |
//! | [`RecoveryProcess`] | FT server | which incarnation is live; fence, restart, announce |
//!
//! # Model
//!
//! * **Objects** are piecewise deterministic: given the same state, the
//!   same request and the same replies to its calls, the body does the same
//!   thing — same calls, in the same order, with the same arguments, and the
//!   same replies. What is not (time, randomness, outside I/O, waiting for
//!   whichever of several futures comes first, a timeout) must go through a
//!   journaled call.
//! * **Nodes** fail by stopping. A node may also be suspected while it
//!   still runs; the old incarnation then lives on as a zombie until it
//!   learns it is fenced, and nothing it does can matter (see Fencing).
//! * **The network** between objects loses, duplicates and reorders
//!   messages. Sender identity is authenticated by the connection.
//! * **The store** (on the FT server) survives every failure. Each node
//!   reaches it over one ordered stream: appends are made and acknowledged
//!   in order. A failing node may lose what it had not yet handed over.
//! * **Checkpoints** hold the body's state at a request boundary, with the
//!   values of the futures it was handed (a resolved future is kept as its
//!   value), and the protocol's [`Snapshot`], stored together.
//! * **Identity.** A request is named by (target, sender, seq), seq counting
//!   1, 2, 3… per (sender, target) pair; its reply carries the same name.
//!   Every message carries its sender's [`Incarnation`].
//!
//! # Rules
//!
//! 1. **Log, then deliver.** A request is appended to the target's log on
//!    arrival, in its sender's order (requests that overtook a missing one
//!    wait, up to [`Config::max_ahead`]); so is the reply to a call the
//!    object made. Nothing is handed to the body before the store has made
//!    it durable. Requests are handed over one at a time, in log order, each
//!    at a request boundary; a reply as soon as it is durable and its call
//!    has been made, even in the middle of a service, since a body awaits
//!    replies inside its requests. The order of requests is what the log
//!    fixes; a reply is found by its call's identity, which a deterministic
//!    replay reproduces.
//! 2. **Duplicates are answered, never served.** A request that arrives
//!    again after its reply was given is answered with that original reply
//!    ([`Action::AnswerDuplicate`]); one that is logged but not answered
//!    yet is dropped, since its reply will come; one whose reply the sender
//!    already holds (its piggybacked `acked`) is dropped. None is refused.
//!    Late copies of a reply are dropped.
//! 3. **Checkpoints at request boundaries.** The first one is forced at
//!    creation and must be durable before anything is delivered, so a
//!    recovery always has a base. After that, one is taken at the first
//!    boundary once [`Config::ttc`] has passed and something was delivered
//!    since the last — between two services, never during one, also when
//!    the object is idle. The protocol's part ([`Snapshot`]) goes with the
//!    body's state; the log is truncated up to the checkpoint only once it
//!    is durable.
//! 4. **Senders retain.** A request is kept by its sender until the reply
//!    has been observed, and resent every [`Config::resend_after`] and at
//!    once when the target restarts — to wherever the location service
//!    says it lives. A caller's future never fails because its target
//!    failed. The `acked` watermark a sender piggybacks, which lets the
//!    target forget replies, counts only replies the sender has observed:
//!    a reply merely appended to a log can still be lost with the node.
//! 5. **Fencing.** The recovery process fences the store before a restart
//!    reads the log: from then on the old incarnation can append nothing,
//!    hence deliver nothing new, so everything it ever did follows from the
//!    log the new incarnation replays. Receivers drop messages from an
//!    incarnation older than one they have seen; an incarnation that learns
//!    of a newer one of itself, or whose write the store refuses, stops.
//! 6. **Local recovery.** Only the failed object restarts:
//!    [`Protected::recover`] takes the last durable checkpoint and the log
//!    after it, replays the log in its original order ([`Action::Replay`])
//!    before anything new, and resends the calls the checkpoint retained.
//!    The replay makes the same calls again under the same sequence
//!    numbers (their targets answer them as duplicates, or their replies are
//!    in the log already) and gives the same replies again (their callers
//!    drop the copies). A failure during a recovery is one more recovery.
//!
//! # Guarantees
//!
//! Under the model, for every request sent to a protected object:
//!
//! * it is delivered at most once per incarnation, and its effect on the
//!   object's state happens exactly once across any number of failures and
//!   recoveries (replay rebuilds the state it had, it does not add to it);
//! * its caller receives one reply, the one the single execution produced,
//!   however often the request or the reply was lost, duplicated or resent;
//! * nothing outside the failed object rolls back.
//!
//! **Output commit is free.** A reply, even to code outside the protected
//! world, is sent as soon as the body gives it and is never held: the body
//! only ever observed durable messages, so any reply it gives can be given
//! again, identically, by a replay. That is the point of logging
//! pessimistically; an optimistic variant would have to hold replies.
//!
//! # Driving a protected object
//!
//! | driver sees | call |
//! |---|---|
//! | the object is created | [`Protected::new`] |
//! | a request for it arrives | [`Protected::on_request`] |
//! | a reply to one of its calls arrives | [`Protected::on_reply`] |
//! | the store acknowledges an append | [`Protected::log_durable`] |
//! | the store acknowledges a checkpoint | [`Protected::checkpoint_durable`] |
//! | the store refuses a write (fenced) | [`Protected::fenced`] |
//! | the body, serving a request, calls another object | [`Protected::call`] |
//! | the body answers a request | [`Protected::reply`] |
//! | the body finished serving a request | [`Protected::step_done`] |
//! | time passed (every few tens of ms) | [`Protected::tick`] |
//! | the location service announces a restart | [`Protected::peer_restarted`] |
//! | the FT server restarts the object | [`Protected::recover`] |
//!
//! ```
//! use actogrid_fault_tolerance::pml::{
//!     Action, Config, Incarnation, Message, ObjectId, Protected, Request, RequestId, Time,
//! };
//!
//! let me = ObjectId(7);
//! let mut core = Protected::new(me, Config::default(), Time::ZERO);
//! // The forced first checkpoint: store it with the body's initial state.
//! let Some(Action::Checkpoint { protocol }) = core.poll_action() else { unreachable!() };
//! core.checkpoint_durable(Time::ZERO, protocol.position())?;
//!
//! let id = RequestId { target: me, sender: ObjectId(1), seq: 1 };
//! let request = Request { id, incarnation: Incarnation::FIRST, acked: 0, payload: "deposit 5" };
//! core.on_request(Time(1), request);
//! // Logged first…
//! let Some(Action::Append { position, .. }) = core.poll_action() else { unreachable!() };
//! // …delivered once the store says it is durable.
//! core.log_durable(Time(2), position)?;
//! assert!(matches!(core.poll_action(), Some(Action::Deliver(Message::Request(_)))));
//! core.reply(id, "balance 5")?;
//! core.step_done(Time(3))?;
//! assert!(matches!(core.poll_action(), Some(Action::Reply(_))));
//! # Ok::<(), actogrid_fault_tolerance::pml::Error>(())
//! ```
//!
//! Drain [`Protected::poll_action`] after each call and carry the actions
//! out in order: [`Action::Append`] (to the store), [`Action::Deliver`] and
//! [`Action::Replay`] (to the body: a request to serve, or a reply that
//! resolves a future — the latter is not a service and has no
//! `step_done`), [`Action::Send`], [`Action::Resend`],
//! [`Action::Reply`], [`Action::AnswerDuplicate`] (to the network),
//! [`Action::Checkpoint`] (capture the body's state *now*, before the next
//! delivery, and store both), [`Action::Truncate`] (to the store),
//! [`Action::Stop`] (drop the body). Misuse by the driver is an [`Error`];
//! nothing that comes from the network is.
//!
//! # Limits
//!
//! Per-sender tables are kept for the object's life (as the runtime's
//! sequence tables are). A sender's cached replies are those it has not
//! acknowledged; requests held ahead of a missing one are bounded by
//! [`Config::max_ahead`]; the appended-but-undelivered log is bounded by
//! what the runtime lets queue. The creation of an object is not logged:
//! its first checkpoint must be durable before it is announced. Immediate
//! requests, which bypass the sender's order, cannot be protected.

mod error;
mod ids;
mod message;
mod object;
mod outbox;
mod recovery;

#[cfg(test)]
mod tests;

pub use self::error::{Error, Result};
pub use self::ids::{Incarnation, LogPosition, ObjectId, RequestId, Time};
pub use self::message::{Message, Reply, Request};
pub use self::object::{Action, Config, Protected, Snapshot, Stats};
pub use self::outbox::{Caller, CallerAction};
pub use self::recovery::{RecoveryAction, RecoveryProcess, Status};
