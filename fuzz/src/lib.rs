//! What the fuzz targets and the seed-corpus generator agree on: how an
//! input of the `overlay_messages` target reads.
//!
//! An input is a peer's settings, then operations until the input ends:
//!
//! ```text
//! input     = slots noa token seed op*
//! slots     = u8 (modulo 5: slots lent)
//! noa       = u8 (modulo 3, plus 1)
//! token     = u8 (even: the open overlay; odd: a pool's token)
//! seed      = u8 (the peer's randomness)
//! op        = RAW from u16(length) bytes     arbitrary bytes from a peer
//!           | MESSAGE from token message     a valid message, built from
//!                                            the bytes that follow
//!           | WAIT u16                       time passes (× 64 ms), then a tick
//!           | DEADLINE                       time jumps to the next deadline, a tick
//!           | ACQUIRE u8                     a node request
//!           | END u8 | RELEASE_NODE u8 | DEPLOYED u8 | RUNTIME_ENDED u8
//!           | PEER_DOWN u8 | LEAVE           the driver's other commands
//! u16       = 2 bytes, little-endian
//! ```
//!
//! An operation byte is taken modulo [`OPS`]; a truncated input reads as
//! zeroes. Peers are named from [`NAMES`]; the fuzzed peer is the first.

/// The fuzzed peer, then the others; `from` and peer fields pick by index.
pub const NAMES: [&str; 6] = ["p0", "p1", "p2", "p3", "p4", "p5"];

/// The passphrase of the pool an odd `token` byte selects.
pub const POOL_SECRET: &[u8] = b"fuzz pool";

/// Operation: arbitrary bytes through `Peer::handle_bytes`.
pub const RAW: u8 = 0;
/// Operation: a valid message, encoded, through `Peer::handle_bytes`.
pub const MESSAGE: u8 = 1;
/// Operation: some time passes, then `Peer::tick`.
pub const WAIT: u8 = 2;
/// Operation: the clock reaches `Peer::next_deadline`, then `Peer::tick`.
pub const DEADLINE: u8 = 3;
/// Operation: `Peer::acquire`.
pub const ACQUIRE: u8 = 4;
/// Operation: `Peer::end_request`.
pub const END: u8 = 5;
/// Operation: `Peer::release_node`.
pub const RELEASE_NODE: u8 = 6;
/// Operation: `Peer::deployed`.
pub const DEPLOYED: u8 = 7;
/// Operation: `Peer::runtime_ended`.
pub const RUNTIME_ENDED: u8 = 8;
/// Operation: `Peer::peer_down`.
pub const PEER_DOWN: u8 = 9;
/// Operation: `Peer::leave`.
pub const LEAVE: u8 = 10;
/// Number of operations.
pub const OPS: u8 = 11;

/// A cursor over an input; past its end it reads zeroes.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next `len` bytes (fewer at the end).
    pub fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }

    /// The next eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, i| v | u64::from(self.u8()) << (8 * i))
    }
}
