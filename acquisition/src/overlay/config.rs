//! Settings of one peer, with the overlay's defaults.

use std::time::Duration;

use actogrid_descriptor::model::{P2pService, p2p_defaults};

use super::message::Token;

/// Settings of one peer. [`Config::default`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// NOA: acquaintances a peer keeps at least; it refuses new ones at
    /// 2·NOA and accepts them with falling probability in between.
    pub noa: u32,
    /// TTU: period of heartbeats and of acquaintance upkeep.
    pub ttu: Duration,
    /// TTL of node requests, in hops.
    pub ttl: u32,
    /// TTL of exploring floods, in hops.
    pub exploring_ttl: u32,
    /// Largest TTL accepted from the wire (larger ones are cut down).
    pub max_ttl: u32,
    /// How long a peer waits for any answer: to a heartbeat (then the peer is
    /// dead), to an acquaintance request, to an offer (then the offered slot
    /// is free again), to a booking (then it is counted as not obtained).
    pub answer_timeout: Duration,
    /// Flood ids remembered to drop duplicates (at most this many)…
    pub memory_capacity: usize,
    /// …and for at most this long.
    pub memory_lifetime: Duration,
    /// Period of the rounds of a request not yet satisfied (re-asking).
    pub lookup_period: Duration,
    /// A counted request stops asking this long after it started.
    pub acquisition_timeout: Duration,
    /// A booked slot on which nothing is deployed within this time is free
    /// again.
    pub booking_expiry: Duration,
    /// Node slots this peer lends.
    pub slots: u32,
    /// Peers handed out with a refused acquaintance request.
    pub referrals: usize,
    /// The overlay's token; messages with another one are rejected.
    pub token: Token,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            noa: p2p_defaults::NOA,
            ttu: p2p_defaults::TTU,
            ttl: p2p_defaults::TTL,
            exploring_ttl: p2p_defaults::TTL,
            max_ttl: 16,
            answer_timeout: Duration::from_secs(10),
            memory_capacity: 1000,
            memory_lifetime: Duration::from_secs(600),
            lookup_period: Duration::from_secs(30),
            acquisition_timeout: Duration::from_secs(180),
            booking_expiry: Duration::from_secs(180),
            slots: 1,
            referrals: 5,
            token: Token::OPEN,
        }
    }
}

impl Config {
    /// The defaults, with NOA, TTU and TTL taken from a descriptor's
    /// `P2PService`.
    pub fn from_service(service: &P2pService) -> Config {
        Config {
            noa: service.noa,
            ttu: service.ttu,
            ttl: service.ttl,
            exploring_ttl: service.ttl,
            ..Config::default()
        }
    }

    /// NOA as a count (at least one, so that the overlay can form).
    pub(crate) fn noa(&self) -> usize {
        self.noa.max(1) as usize
    }
}
