//! Maps keyed by ids (object ids, call ids, sender ids): the default
//! SipHash protects against crafted keys, which ids chosen by this process
//! or drawn at random are not, and costs a measurable share of a call.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by ids.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Multiplicative hashing of the id's words (Fibonacci hashing), which
/// spreads sequential ids over the whole hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The bit that tells a runtime's id (set) from an object's (clear): a
/// message's sender is one or the other, and a runtime may only send as
/// itself (see `tls`).
pub(crate) const RUNTIME_BIT: u64 = 1 << 63;

/// A random id for an active object: never 0 (which addresses a runtime
/// itself on the wire), never with the runtime bit.
pub(crate) fn nonzero_id() -> u64 {
    loop {
        let id = fastrand::u64(..) & !RUNTIME_BIT;
        if id != 0 {
            return id;
        }
    }
}

/// A random id for a runtime.
pub(crate) fn runtime_id() -> u64 {
    fastrand::u64(..) | RUNTIME_BIT
}

/// Whether `id` names a runtime (rather than an active object).
pub(crate) fn is_runtime(id: u64) -> bool {
    id & RUNTIME_BIT != 0
}
