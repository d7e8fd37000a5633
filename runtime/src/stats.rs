//! What an active object's body counts about itself while the runtime's
//! `object_stats` setting is on (a deployment with a dashboard turns it
//! on): requests served, who sent them, and the size of its state.
//!
//! The body task counts in plain fields it alone owns (no atomic, no lock
//! per request) and publishes a copy to its mailbox, where
//! [`Runtime::objects_here`](crate::Runtime::objects_here) reads it:
//! every [`PUBLISH_EVERY`] requests, when someone asked for fresh figures
//! (one relaxed load per request tells), and whenever it runs out of
//! requests. The size of its state is measured only when someone asked,
//! the object is idle and has served requests since it was last measured,
//! and not more often than its last measurement's cost allows.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::ids::IdMap;

/// Requests counted between two publications, at most.
const PUBLISH_EVERY: u32 = 256;

/// Distinct senders an object counts apart; the others are counted
/// together.
pub(crate) const MAX_CALLERS: usize = 256;

/// The least time between two measurements of an object's state.
const MEASURE_EVERY: Duration = Duration::from_secs(2);

/// A measurement may take at most this share of the object's idle time:
/// one that took 10 ms waits at least 1 s × (1 / share) before the next.
const MEASURE_SHARE: u32 = 100;

/// The figures as published, read by `objects_here`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Published {
    pub(crate) served: u64,
    /// (sender, requests served from it), at most [`MAX_CALLERS`].
    pub(crate) callers: Vec<(u64, u64)>,
    /// Requests from senders beyond the first [`MAX_CALLERS`].
    pub(crate) other_callers: u64,
    /// Bytes of its state (encoded) when last measured.
    pub(crate) state_bytes: Option<u64>,
    /// `served` when the state was last measured.
    measured_at: u64,
}

impl Published {
    /// Whether a measurement of the state would tell something new.
    pub(crate) fn stale(&self) -> bool {
        self.state_bytes.is_none() || self.measured_at != self.served
    }
}

/// The mailbox's side: the latest publication, and the request for one.
#[derive(Default)]
pub(crate) struct Board {
    published: Mutex<Option<Box<Published>>>,
    wanted: AtomicBool,
}

impl Board {
    /// The latest figures, if the object published any; asks for fresh
    /// ones (the body publishes after its current request).
    pub(crate) fn read(&self) -> Option<Published> {
        self.wanted.store(true, Ordering::Relaxed);
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .cloned()
    }

    fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }
}

/// The body's side: counted since the object came to this runtime.
#[derive(Default)]
pub(crate) struct Tally {
    served: u64,
    unpublished: u32,
    /// The sender of the latest requests, and how many in a row: most
    /// runs of requests come from one sender, so the map is touched once
    /// per run.
    run_sender: u64,
    run: u64,
    callers: IdMap<u64, u64>,
    other_callers: u64,
    state_bytes: Option<u64>,
    measured_at: u64,
    /// When the state was last measured and how long that took.
    last_measure: Option<(Instant, Duration)>,
}

impl Tally {
    /// Counts one request served from `sender`; publishes when due.
    #[inline]
    pub(crate) fn count(&mut self, sender: u64, board: &Board) {
        self.served += 1;
        self.unpublished += 1;
        if sender == self.run_sender {
            self.run += 1;
        } else {
            self.end_run();
            self.run_sender = sender;
            self.run = 1;
        }
        if self.unpublished >= PUBLISH_EVERY || board.wanted() {
            self.publish(board);
        }
    }

    fn end_run(&mut self) {
        if self.run == 0 {
            return;
        }
        let run = std::mem::take(&mut self.run);
        if let Some(n) = self.callers.get_mut(&self.run_sender) {
            *n += run;
        } else if self.callers.len() < MAX_CALLERS {
            self.callers.insert(self.run_sender, run);
        } else {
            self.other_callers += run;
        }
    }

    /// The object ran out of requests: publishes what is unpublished,
    /// and measures its state with `measure` when someone asked and it is
    /// time.
    pub(crate) fn idle(&mut self, board: &Board, measure: impl FnOnce() -> Option<u64>) {
        let wanted = board.wanted();
        if wanted && self.measure_due() {
            let start = Instant::now();
            self.state_bytes = measure();
            self.measured_at = self.served;
            self.last_measure = Some((Instant::now(), start.elapsed()));
        }
        if self.unpublished > 0 || wanted {
            self.publish(board);
        }
    }

    fn measure_due(&mut self) -> bool {
        if self.state_bytes.is_some() && self.measured_at == self.served {
            return false;
        }
        match self.last_measure {
            None => true,
            Some((at, cost)) => at.elapsed() >= MEASURE_EVERY.max(cost * MEASURE_SHARE),
        }
    }

    fn publish(&mut self, board: &Board) {
        self.end_run();
        self.unpublished = 0;
        board.wanted.store(false, Ordering::Relaxed);
        let mut slot = board.published.lock().unwrap_or_else(|p| p.into_inner());
        let p = slot.get_or_insert_with(Box::default);
        p.served = self.served;
        p.callers.clear();
        p.callers.extend(self.callers.iter().map(|(s, n)| (*s, *n)));
        p.other_callers = self.other_callers;
        p.state_bytes = self.state_bytes;
        p.measured_at = self.measured_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_senders_are_counted_apart_and_published_when_asked() {
        let board = Board::default();
        let mut t = Tally::default();
        for _ in 0..3 {
            t.count(7, &board);
        }
        t.count(9, &board);
        t.count(7, &board);
        // Nothing published yet: fewer than PUBLISH_EVERY, nobody asked.
        assert!(board.read().is_none());
        // Asked: the next request publishes.
        t.count(9, &board);
        let p = board.read().expect("published");
        assert_eq!(p.served, 6);
        let mut callers = p.callers.clone();
        callers.sort();
        assert_eq!(callers, vec![(7, 4), (9, 2)]);
        assert!(p.stale());
    }

    #[test]
    fn senders_beyond_the_bound_are_counted_together() {
        let board = Board::default();
        let mut t = Tally::default();
        for s in 0..(MAX_CALLERS as u64 + 10) {
            t.count(s + 1, &board);
        }
        t.idle(&board, || None);
        let p = board.read().expect("published when idle");
        assert_eq!(p.callers.len(), MAX_CALLERS);
        assert_eq!(p.other_callers, 10);
        assert_eq!(p.served, MAX_CALLERS as u64 + 10);
    }

    #[test]
    fn the_state_is_measured_when_asked_and_changed_only() {
        let board = Board::default();
        let mut t = Tally::default();
        t.count(1, &board);
        let mut measured = 0;
        // Nobody asked: not measured.
        t.idle(&board, || {
            measured += 1;
            Some(10)
        });
        assert_eq!(measured, 0);
        let _ = board.read();
        t.idle(&board, || {
            measured += 1;
            Some(10)
        });
        assert_eq!(measured, 1);
        let p = board.read().expect("published");
        assert_eq!(p.state_bytes, Some(10));
        assert!(!p.stale());
        // Asked again, nothing served since: not measured again.
        t.idle(&board, || {
            measured += 1;
            Some(11)
        });
        assert_eq!(measured, 1);
    }
}
