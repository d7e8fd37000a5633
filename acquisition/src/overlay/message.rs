//! What peers say to each other: the wire vocabulary of the overlay.
//!
//! Every message travels inside an [`Envelope`] that carries the overlay
//! [`Token`]. The types are `serde`-serialisable so a driver can put them on
//! any transport; [`Envelope::encode`] and [`Envelope::decode`] give a compact
//! binary form (postcard) for drivers that have no preference.

use std::fmt::Debug;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How the driver names a peer: an address, a key, an index in a simulator.
///
/// Anything cheap to clone, ordered and serialisable will do; the core never
/// looks inside. It must be something the driver can send a message to, since
/// offers go straight back to the requester named in a request.
pub trait PeerId: Clone + Eq + Ord + Hash + Debug + Serialize + DeserializeOwned {}

impl<T: Clone + Eq + Ord + Hash + Debug + Serialize + DeserializeOwned> PeerId for T {}

/// Shared secret of an overlay, carried by every message.
///
/// Peers drop (and report) messages whose token differs from their own. It
/// keeps strangers and other overlays out; it is not encryption, which is the
/// transport's job.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Token([u8; 16]);

impl Token {
    /// The token of an overlay that admits anyone (all zeroes).
    pub const OPEN: Token = Token([0; 16]);

    /// Derives the token from a passphrase shared by the overlay's members.
    pub fn from_secret(secret: &[u8]) -> Token {
        let digest = Sha256::digest(secret);
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&digest[..16]);
        Token(bytes)
    }

    /// Compares in time independent of where the tokens differ.
    pub fn matches(&self, other: &Token) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret-derived bytes in logs.
        f.write_str("Token(..)")
    }
}

/// Identifies one node request for its whole life (all its rounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Identifies one flood (one exploring message or one round of a request);
/// peers remember recent ones to drop duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FloodId(pub u64);

/// Identifies one lent slot on its lender, from offer to release.
///
/// Unique per lender only: the requester names a booking by (lender, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BookingId(pub u64);

/// How many nodes a request still wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wanted {
    /// This many more.
    Count(u32),
    /// Every free slot, for as long as the request lives.
    Max,
}

impl From<actogrid_descriptor::model::NodesAsked> for Wanted {
    fn from(asked: actogrid_descriptor::model::NodesAsked) -> Wanted {
        match asked {
            actogrid_descriptor::model::NodesAsked::Count(n) => Wanted::Count(n),
            actogrid_descriptor::model::NodesAsked::Max => Wanted::Max,
        }
    }
}

/// Why a lender gave a slot back, as told to the requester.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReason {
    /// Nothing was deployed on the booked slot in time.
    Expired,
    /// The runtime deployed on the slot ended.
    Ended,
    /// The lender does not know this booking (any more).
    Unknown,
    /// The lender is leaving the overlay.
    Leaving,
}

/// A message with the overlay token it claims membership with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<P> {
    /// Token of the sender's overlay.
    pub token: Token,
    /// What is said.
    pub message: Message<P>,
}

/// A message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable overlay message: {0}")]
pub struct DecodeError(String);

impl<P: PeerId> Envelope<P> {
    /// Compact binary form (postcard).
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Reads the binary form of [`Envelope::encode`]; never panics on bad input.
    pub fn decode(bytes: &[u8]) -> Result<Envelope<P>, DecodeError> {
        postcard::from_bytes(bytes).map_err(|e| DecodeError(e.to_string()))
    }
}

/// Longest list a message may carry; longer ones are rejected as malformed.
pub const MAX_LIST: usize = 1024;

/// The messages of the protocol.
///
/// `→` reads "sent by … to …". Every message received counts as a sign of
/// life of its sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<P> {
    /// Liveness probe, every TTU, to acquaintances and to the other side of
    /// every booking. `lent`: bookings of the sender's slots the receiver
    /// holds; `borrowed`: bookings of the receiver's slots the sender holds.
    /// Each side answers a booking it does not know with a release, so both
    /// views converge even when a release was lost.
    Heartbeat {
        /// Bookings on the sender's slots, held by the receiver.
        lent: Vec<BookingId>,
        /// Bookings on the receiver's slots, held by the sender.
        borrowed: Vec<BookingId>,
    },
    /// Answer to a heartbeat. `acquainted` is false when the receiver does
    /// not count the sender among its acquaintances (the link is one-sided and
    /// the sender drops it).
    HeartbeatAck {
        /// Whether the answering peer counts the prober as an acquaintance.
        acquainted: bool,
    },
    /// "Be my acquaintance": a first contact, a referral or an answer to an
    /// exploring flood.
    AcquaintRequest,
    /// Answer to [`Message::AcquaintRequest`]. A refusal carries a few of the
    /// refuser's acquaintances to try instead.
    AcquaintReply {
        /// Accepted: both sides now count each other.
        accepted: bool,
        /// Peers to try instead (on refusal).
        referrals: Vec<P>,
    },
    /// The sender no longer counts the receiver as an acquaintance.
    Leave,
    /// A peer below NOA looks for acquaintances; flooded while `ttl > 0`.
    Explore {
        /// Duplicate suppression.
        flood: FloodId,
        /// The peer looking for acquaintances.
        origin: P,
        /// Hops left.
        ttl: u32,
    },
    /// One round of a node request; flooded while `ttl > 0` and nodes are
    /// still wanted.
    Request {
        /// Duplicate suppression (new for every round).
        flood: FloodId,
        /// The request, stable across rounds.
        request: RequestId,
        /// The requester, to whom offers go.
        origin: P,
        /// Hops left.
        ttl: u32,
        /// Nodes still wanted beyond what earlier peers on this path offered.
        wanted: Wanted,
    },
    /// Lender → requester: these slots are held for you for a short while.
    Offer {
        /// The request answered.
        request: RequestId,
        /// One booking id per offered slot.
        bookings: Vec<BookingId>,
    },
    /// Requester → lender: the answer to an offer.
    Book {
        /// The request.
        request: RequestId,
        /// Offered slots the requester books.
        take: Vec<BookingId>,
        /// Offered slots the requester does not want.
        decline: Vec<BookingId>,
    },
    /// Lender → requester: acknowledgement of a [`Message::Book`].
    Booked {
        /// The request.
        request: RequestId,
        /// Now booked for the requester.
        booked: Vec<BookingId>,
        /// No longer offered (the offer timed out): not booked.
        refused: Vec<BookingId>,
    },
    /// Requester → lender: give these slots back.
    Release {
        /// The bookings released.
        bookings: Vec<BookingId>,
    },
    /// Lender → requester: these slots are no longer yours.
    Released {
        /// The bookings that ended.
        bookings: Vec<BookingId>,
        /// Why.
        reason: ReleaseReason,
    },
}

impl<P> Message<P> {
    /// Short name, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Heartbeat { .. } => "heartbeat",
            Message::HeartbeatAck { .. } => "heartbeat-ack",
            Message::AcquaintRequest => "acquaint-request",
            Message::AcquaintReply { .. } => "acquaint-reply",
            Message::Leave => "leave",
            Message::Explore { .. } => "explore",
            Message::Request { .. } => "request",
            Message::Offer { .. } => "offer",
            Message::Book { .. } => "book",
            Message::Booked { .. } => "booked",
            Message::Release { .. } => "release",
            Message::Released { .. } => "released",
        }
    }

    /// True for the messages of node acquisition (as opposed to upkeep).
    pub fn is_acquisition(&self) -> bool {
        matches!(
            self,
            Message::Request { .. }
                | Message::Offer { .. }
                | Message::Book { .. }
                | Message::Booked { .. }
                | Message::Release { .. }
                | Message::Released { .. }
        )
    }

    /// Length of the longest list carried: a receiver refuses a message
    /// whose longest list is over [`MAX_LIST`].
    pub fn longest_list(&self) -> usize {
        match self {
            Message::Heartbeat { lent, borrowed } => lent.len().max(borrowed.len()),
            Message::AcquaintReply { referrals, .. } => referrals.len(),
            Message::Offer { bookings, .. }
            | Message::Release { bookings }
            | Message::Released { bookings, .. } => bookings.len(),
            Message::Book { take, decline, .. } => take.len().max(decline.len()),
            Message::Booked {
                booked, refused, ..
            } => booked.len().max(refused.len()),
            Message::HeartbeatAck { .. }
            | Message::AcquaintRequest
            | Message::Leave
            | Message::Explore { .. }
            | Message::Request { .. } => 0,
        }
    }
}
