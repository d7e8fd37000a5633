//! Pessimistic message logging (PML), receiver-based: placeholder.

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
