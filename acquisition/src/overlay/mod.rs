//! The peer-to-peer overlay: desktops that lend node slots to deployments.
//!
//! This module is the protocol, as a sans-IO state machine of one peer
//! ([`Peer`]): it takes inputs (messages, the time, local commands) and
//! returns outputs (messages to send, [`Event`]s for its driver). It does no
//! I/O, reads no clock and draws randomness only from the seed it is given,
//! so the same code runs in a daemon (a transport and a timer around it) and
//! in the [simulator](sim) of thousands of peers.
//!
//! # Driving a peer
//!
//! ```
//! use actogrid_acquisition::overlay::{Config, Output, Peer, Time, Wanted};
//!
//! let mut peer = Peer::new(1u32, Config::default(), vec![2], Time::ZERO, 7);
//! peer.tick(Time::ZERO); // first upkeep: asks peer 2 to be an acquaintance
//! let request = peer.acquire(Time::ZERO, Wanted::Count(4));
//! while let Some(output) = peer.poll_output() {
//!     match output {
//!         Output::Send { to, envelope } => { /* send envelope.encode() to `to` */ }
//!         Output::Event(event) => { /* deploy, stop, report */ }
//!     }
//! }
//! // later: peer.handle(now, from, envelope) on every message received,
//! // peer.tick(now) when now ≥ peer.next_deadline(), and drain again.
//! # let _ = request;
//! ```
//!
//! | driver sees                              | call                                   |
//! |------------------------------------------|----------------------------------------|
//! | a message from peer `p`                  | [`Peer::handle`] / [`Peer::handle_bytes`] |
//! | the clock reached [`Peer::next_deadline`]| [`Peer::tick`]                         |
//! | a deployment wants nodes                 | [`Peer::acquire`]                      |
//! | the deployment ends                      | [`Peer::end_request`]                  |
//! | the application drops one node           | [`Peer::release_node`]                 |
//! | a runtime for a booking is being set up  | [`Peer::staging`] (now and then)       |
//! | a runtime started for a booking runs     | [`Peer::deployed`]                     |
//! | that runtime ended or failed to start    | [`Peer::runtime_ended`]                |
//! | a connection to `p` failed for good      | [`Peer::peer_down`]                    |
//! | shutdown                                 | [`Peer::leave`]                        |
//!
//! | output                      | driver does                                           |
//! |-----------------------------|-------------------------------------------------------|
//! | [`Output::Send`]            | deliver it, best effort (a loss is a timeout later)   |
//! | [`Event::Deploy`]           | start a runtime for the requester, then `deployed`    |
//! | [`Event::SlotFreed`]        | stop what runs (or is starting) for that booking      |
//! | [`Event::NodeAcquired`]     | wait for the node's runtime to register; hand it out  |
//! | [`Event::NodeLost`]         | the node leaves the deployment                        |
//! | [`Event::Satisfied`], [`Event::TimedOut`], [`Event::Ended`] | report |
//! | acquaintance events, [`Event::Rejected`] | log                                     |
//!
//! # Messages
//!
//! Every message is an [`Envelope`]: the overlay [`Token`] and a [`Message`].
//! A wrong token or a malformed message yields [`Event::Rejected`] and
//! nothing else; no input makes the core panic.
//!
//! * Upkeep: `Heartbeat`/`HeartbeatAck`, `AcquaintRequest`/`AcquaintReply`,
//!   `Leave`, `Explore`.
//! * Acquisition: `Request` (flooded) → `Offer` (lender to requester) →
//!   `Book` (take some, decline the rest) → `Booked` (acknowledged or
//!   refused); later `Release` (requester gives back) or `Released` (lender
//!   takes back: expiry, runtime ended, unknown booking, leaving).
//!
//! # Acquaintances
//!
//! Every TTU a peer heartbeats each acquaintance and the other side of each
//! booking; one that does not answer within [`Config::answer_timeout`] is
//! dead and everything involving it is dropped. Below NOA it asks its
//! first contacts (and peers suggested by earlier refusals) and floods an
//! `Explore` with [`Config::exploring_ttl`]; a peer reached by the flood that
//! wants a new acquaintance answers the origin with an `AcquaintRequest`,
//! which ends that branch of the flood. A peer accepts a new acquaintance
//! always below NOA, never at 2·NOA, with probability `2 − n/NOA` in between;
//! a refusal carries a few referrals.
//!
//! # Slots
//!
//! A lender's slot goes free → offered → booked → in use → free:
//!
//! * **offered** on a request (at most the count still wanted); free again if
//!   the requester declines or does not answer within the answer timeout;
//! * **booked** when the requester books it ([`Event::Deploy`]); free again
//!   if nothing is deployed within [`Config::booking_expiry`] (the requester
//!   is told), counted from the last time the driver said it was still
//!   setting the runtime up ([`Peer::staging`]);
//! * **in use** once the driver reports the runtime runs;
//! * **free** on release by the requester, end of the runtime, loss of the
//!   requester, or leaving.
//!
//! A requester never books more than it still wants (acquired + bookings
//! awaiting acknowledgement ≤ count); offers beyond that, and offers for an
//! ended request, are declined.
//!
//! # Requests
//!
//! A request has a [`RequestId`] and floods one round (a fresh [`FloodId`],
//! TTL hops, duplicates dropped by a bounded memory) every
//! [`Config::lookup_period`] while it wants more nodes: a counted request
//! until it is satisfied or [`Config::acquisition_timeout`] passes, a `MAX`
//! request until it is ended. Each peer on the way offers what it has and
//! forwards the count still wanted, while TTL > 0 and the count is not zero.
//! Ending a request releases every booking.
//!
//! # Timers
//!
//! TTU upkeep; heartbeat answers, acquaintance answers, offers and booking
//! acknowledgements (answer timeout); booking expiry; request rounds and the
//! acquisition timeout. [`Peer::next_deadline`] gives the earliest.

mod clock;
mod config;
mod core;
mod memory;
mod message;
pub mod sim;

#[cfg(test)]
mod tests;

pub use self::clock::Time;
pub use self::config::Config;
pub use self::core::{
    Event, InputError, LinkLoss, NodeLoss, Output, Peer, RequestStatus, SlotEnd, SlotState, Stats,
};
pub use self::message::{
    BookingId, DecodeError, Envelope, FloodId, MAX_LIST, Message, PeerId, ReleaseReason, RequestId,
    Token, Wanted,
};
