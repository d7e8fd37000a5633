//! Bounded memory of the floods a peer has already handled.
//!
//! A flood id is forgotten when more than `capacity` newer ones arrived or
//! when it is older than `lifetime`, whichever comes first, so the memory
//! never grows with the overlay's traffic.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use super::clock::Time;
use super::message::FloodId;

pub(crate) struct FloodMemory {
    order: VecDeque<(FloodId, Time)>,
    known: HashSet<FloodId>,
    capacity: usize,
    lifetime: Duration,
}

impl FloodMemory {
    pub(crate) fn new(capacity: usize, lifetime: Duration) -> FloodMemory {
        FloodMemory {
            order: VecDeque::new(),
            known: HashSet::new(),
            capacity: capacity.max(1),
            lifetime,
        }
    }

    /// Records `id`; false if it was already remembered (a duplicate).
    pub(crate) fn insert(&mut self, id: FloodId, now: Time) -> bool {
        self.forget_old(now);
        if !self.known.insert(id) {
            return false;
        }
        self.order.push_back((id, now));
        while self.order.len() > self.capacity {
            if let Some((old, _)) = self.order.pop_front() {
                self.known.remove(&old);
            }
        }
        true
    }

    fn forget_old(&mut self, now: Time) {
        while let Some(&(old, at)) = self.order.front() {
            if now.since(at) < self.lifetime {
                break;
            }
            self.order.pop_front();
            self.known.remove(&old);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_a_duplicate_until_pushed_out() {
        let mut memory = FloodMemory::new(2, Duration::from_secs(10));
        assert!(memory.insert(FloodId(1), Time::ZERO));
        assert!(!memory.insert(FloodId(1), Time::from_millis(5)));
        assert!(memory.insert(FloodId(2), Time::ZERO));
        assert!(memory.insert(FloodId(3), Time::ZERO));
        assert_eq!(memory.len(), 2, "capacity bounds the memory");
        assert!(
            memory.insert(FloodId(1), Time::ZERO),
            "the oldest was forgotten"
        );
    }

    #[test]
    fn a_flood_is_forgotten_after_its_lifetime() {
        let mut memory = FloodMemory::new(100, Duration::from_secs(10));
        assert!(memory.insert(FloodId(7), Time::ZERO));
        assert!(!memory.insert(FloodId(7), Time::from_millis(9_999)));
        assert!(memory.insert(FloodId(7), Time::from_millis(10_000)));
    }
}
