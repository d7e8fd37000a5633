//! The calls awaiting a reply on one connection.
//!
//! A slab rather than a hash map: a call id is the entry's index plus a
//! generation, so registering and completing a call index a vector, and
//! memory stays bounded by the calls in flight at once. The generation
//! makes a reply for an old call (a peer's bug, or a replay) miss instead
//! of completing the call that reused the entry.

use std::fmt;

/// A table of `T` keyed by generated call ids (never 0).
pub(crate) struct Calls<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
}

struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Default for Calls<T> {
    fn default() -> Self {
        Calls {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> fmt::Debug for Calls<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calls")
            .field("in_flight", &(self.entries.len() - self.free.len()))
            .finish()
    }
}

impl<T> Calls<T> {
    /// Stores `value`; returns its call id.
    pub(crate) fn insert(&mut self, value: T) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    value: None,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let entry = &mut self.entries[index as usize];
        // Generations start at 1, so no id is 0 (0 means one-way).
        entry.generation = entry.generation.wrapping_add(1).max(1);
        entry.value = Some(value);
        (u64::from(entry.generation) << 32) | u64::from(index)
    }

    /// Takes the value of call `id`, if it is still waiting.
    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let index = (id & 0xffff_ffff) as usize;
        let generation = (id >> 32) as u32;
        let entry = self.entries.get_mut(index)?;
        if entry.generation != generation {
            return None;
        }
        let value = entry.value.take()?;
        self.free.push(index as u32);
        Some(value)
    }

    /// The value of call `id`, if it is still waiting.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        let index = (id & 0xffff_ffff) as usize;
        let generation = (id >> 32) as u32;
        let entry = self.entries.get_mut(index)?;
        if entry.generation != generation {
            return None;
        }
        entry.value.as_mut()
    }

    /// Takes every waiting value.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.free.clear();
        std::mem::take(&mut self.entries)
            .into_iter()
            .filter_map(|e| e.value)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Calls;

    #[test]
    fn ids_find_their_value_once() {
        let mut calls = Calls::default();
        let a = calls.insert("a");
        let b = calls.insert("b");
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(calls.remove(a), Some("a"));
        assert_eq!(calls.remove(a), None, "a reply completes its call once");
        let c = calls.insert("c");
        assert_ne!(c, a, "a reused entry gets a new id");
        assert_eq!(calls.remove(a), None, "a stale id misses the new call");
        assert_eq!(calls.remove(c), Some("c"));
        assert_eq!(calls.remove(12345), None);
        let mut rest = calls.drain();
        rest.sort();
        assert_eq!(rest, vec!["b"]);
    }
}
