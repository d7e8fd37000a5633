//! How a driver can misuse a protocol core. Nothing that arrives from the
//! network is an error: late, duplicated, stale or misrouted messages are
//! dropped (and counted in [`Stats`](super::Stats)); these are mistakes of the
//! code around the core, or a damaged store.

use super::ids::{Incarnation, LogPosition, ObjectId, RequestId};

/// A call the core refused; its state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The body made a call or ended a service while it served no request:
    /// a protected object may only call out while it serves a logged
    /// request, or its replay would differ.
    #[error("{object} called out or ended a service while it served no request")]
    NotServing {
        /// The object.
        object: ObjectId,
    },
    /// The body answered a request that was never delivered to it.
    #[error("{object} answered {request}, which was never delivered to it")]
    UnknownRequest {
        /// The object.
        object: ObjectId,
        /// The request it answered.
        request: RequestId,
    },
    /// The body answered a request twice.
    #[error("{object} answered {request} twice")]
    AlreadyAnswered {
        /// The object.
        object: ObjectId,
        /// The request.
        request: RequestId,
    },
    /// The store acknowledged a log position the core never asked it to
    /// append.
    #[error(
        "the store acknowledged {position} of {object}, but only positions below {next} were appended"
    )]
    NotAppended {
        /// The object.
        object: ObjectId,
        /// The acknowledged position.
        position: LogPosition,
        /// The next position the core would append.
        next: LogPosition,
    },
    /// The store acknowledged a checkpoint the core is not waiting for.
    #[error(
        "the store acknowledged a checkpoint of {object} at {position}, which is not the one being written"
    )]
    UnknownCheckpoint {
        /// The object.
        object: ObjectId,
        /// The acknowledged checkpoint's position.
        position: LogPosition,
    },
    /// The log loaded for recovery does not follow its checkpoint without a
    /// hole.
    #[error("the log of {object} loaded for recovery has {found} where {expected} was expected")]
    LogGap {
        /// The object.
        object: ObjectId,
        /// The position that should come next.
        expected: LogPosition,
        /// The position found.
        found: LogPosition,
    },
    /// The log loaded for recovery holds a request out of its sender's
    /// order: the store is damaged.
    #[error(
        "the log of {object} holds {request} at {position}, but request {expected} of that sender was expected"
    )]
    LogOutOfOrder {
        /// The object.
        object: ObjectId,
        /// The entry's position.
        position: LogPosition,
        /// The request found there.
        request: RequestId,
        /// The sequence number expected from its sender.
        expected: u64,
    },
    /// This incarnation was fenced: a newer one runs, and this body must
    /// stop.
    #[error("{object} in {incarnation} was fenced by a newer incarnation")]
    Fenced {
        /// The object.
        object: ObjectId,
        /// Its fenced incarnation.
        incarnation: Incarnation,
    },
}

/// The result of a core call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
