//! The FT server's recovery process for PML: which incarnation of each
//! protected object is the live one, and what to do when one fails.
//!
//! Recovery is local: only the failed object restarts. The order matters.
//! The store is fenced first, so the failed incarnation — which may still
//! run, if the failure was only suspected — can append nothing more; only
//! then is the log read for the restart. Everything the old incarnation
//! delivered was durable before it was delivered, so the new incarnation's
//! replay reproduces all of it, and nothing it did afterwards can exist.

use std::collections::{BTreeMap, VecDeque};

use super::ids::{Incarnation, ObjectId};

/// What the recovery process asks of the FT server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryAction {
    /// Make the store refuse every write of `object` from an incarnation
    /// below `below` (appends, checkpoints), before anything else.
    Fence {
        /// The object.
        object: ObjectId,
        /// The first incarnation still allowed.
        below: Incarnation,
    },
    /// Restart `object` as `incarnation` on a spare node: load its last
    /// durable checkpoint and its log from the checkpoint's position, build
    /// the body and [`Protected::recover`](super::Protected::recover); then
    /// report [`RecoveryProcess::restarted`].
    Restart {
        /// The object.
        object: ObjectId,
        /// Its new incarnation.
        incarnation: Incarnation,
    },
    /// Tell every runtime that `object` now runs as `incarnation` (the
    /// location service re-points proxies; cores get
    /// [`Protected::peer_restarted`](super::Protected::peer_restarted) or
    /// [`Caller::peer_restarted`](super::Caller::peer_restarted)).
    Announce {
        /// The object.
        object: ObjectId,
        /// Its live incarnation.
        incarnation: Incarnation,
    },
}

/// Where an object stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Live in this incarnation.
    Running(Incarnation),
    /// Being restarted as this incarnation.
    Restarting(Incarnation),
}

/// The recovery process of one FT server.
#[derive(Clone, Debug, Default)]
pub struct RecoveryProcess {
    objects: BTreeMap<ObjectId, Status>,
    actions: VecDeque<RecoveryAction>,
}

impl RecoveryProcess {
    /// An empty one.
    pub fn new() -> Self {
        RecoveryProcess::default()
    }

    /// A protected object was created (incarnation [`Incarnation::FIRST`]).
    pub fn register(&mut self, object: ObjectId) {
        self.objects
            .entry(object)
            .or_insert(Status::Running(Incarnation::FIRST));
    }

    /// The object ended normally.
    pub fn unregister(&mut self, object: ObjectId) {
        self.objects.remove(&object);
    }

    /// Where `object` stands, if it is registered.
    pub fn status(&self, object: ObjectId) -> Option<Status> {
        self.objects.get(&object).copied()
    }

    /// The failure detector suspects `object` in `incarnation` (its node
    /// died, or stopped answering). A report about an incarnation already
    /// replaced is ignored; a failure during a restart restarts again under
    /// a newer incarnation.
    pub fn failure_detected(&mut self, object: ObjectId, incarnation: Incarnation) {
        let Some(status) = self.objects.get_mut(&object) else {
            return;
        };
        let current = match *status {
            Status::Running(i) | Status::Restarting(i) => i,
        };
        if incarnation != current {
            return;
        }
        let next = current.next();
        *status = Status::Restarting(next);
        self.actions.push_back(RecoveryAction::Fence {
            object,
            below: next,
        });
        self.actions.push_back(RecoveryAction::Restart {
            object,
            incarnation: next,
        });
    }

    /// `object` runs again as `incarnation` (its core is built; its replay
    /// may still be going on).
    pub fn restarted(&mut self, object: ObjectId, incarnation: Incarnation) {
        let Some(status) = self.objects.get_mut(&object) else {
            return;
        };
        if *status == Status::Restarting(incarnation) {
            *status = Status::Running(incarnation);
            self.actions.push_back(RecoveryAction::Announce {
                object,
                incarnation,
            });
        }
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<RecoveryAction> {
        self.actions.pop_front()
    }
}
