//! What can go wrong with the store. Every error names the store's file,
//! and the object when one is concerned.

use std::path::PathBuf;
use std::sync::Arc;

use super::keys::{CheckpointIndex, Incarnation, LogPosition, ObjectKey};
use super::record::RecordFault;

/// An error of the FT store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be opened as a redb database.
    #[error("cannot open the FT store {}: {source}", path.display())]
    Open {
        /// The store's file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::DatabaseError,
    },

    /// The file is open in another `Store`, in this process or another one.
    #[error(
        "the FT store {} is already open (by another FT server, or another store in this \
         process): a store has one writer",
        path.display()
    )]
    InUse {
        /// The store's file.
        path: PathBuf,
    },

    /// The file exists but is not an FT store: not a redb database, or a redb
    /// database written by something else.
    #[error("{} is not an actogrid FT store: {reason}", path.display())]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },

    /// redb failed on the file below the records: the file was truncated or
    /// overwritten in a way redb does not report as an error.
    #[error(
        "the FT store {} is damaged: redb failed while {operation} ({reason}); restore the \
         file from a copy, or move it aside to start an empty store",
        path.display()
    )]
    Damaged {
        /// The store's file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// What redb said.
        reason: String,
    },

    /// The file is an FT store of another format version.
    #[error(
        "the FT store {} has format version {found}, this build reads version {expected}: \
         open it with the actogrid build that wrote it, or move it aside to start an empty store",
        path.display()
    )]
    IncompatibleFormat {
        /// The store's file.
        path: PathBuf,
        /// The version the file was written in.
        found: u16,
        /// The version this build reads and writes.
        expected: u16,
    },

    /// A stored record failed its checks.
    #[error("corrupt {record} of object {object} in the FT store {}: {fault}", path.display())]
    Corrupt {
        /// The store's file.
        path: PathBuf,
        /// The object the record belongs to.
        object: ObjectKey,
        /// Which record ("log entry at position 12", "checkpoint 3"…).
        record: String,
        /// What is wrong with it.
        fault: RecordFault,
    },

    /// redb failed to read or write (I/O error, full disk, corruption below
    /// the records). The operations of the batch it happened in are not
    /// durable.
    #[error("the FT store {}: {operation} failed: {source}", path.display())]
    Storage {
        /// The store's file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// What redb reported (shared by every operation of a failed batch).
        #[source]
        source: Arc<redb::Error>,
    },

    /// A write from an incarnation older than one the store has seen for the
    /// object: a replaced instance is still running.
    #[error(
        "object {object} in the FT store {}: incarnation {given} is older than incarnation \
         {current} already stored; the write comes from an instance that recovery replaced",
        path.display()
    )]
    StaleIncarnation {
        /// The store's file.
        path: PathBuf,
        /// The object.
        object: ObjectKey,
        /// The incarnation of the write.
        given: Incarnation,
        /// The newest incarnation stored for the object.
        current: Incarnation,
    },

    /// A checkpoint whose index is not above the object's latest checkpoint
    /// of the same incarnation.
    #[error(
        "object {object} in the FT store {}: checkpoint {index} is not newer than checkpoint \
         {latest} already stored for incarnation {incarnation}",
        path.display()
    )]
    CheckpointOutOfOrder {
        /// The store's file.
        path: PathBuf,
        /// The object.
        object: ObjectKey,
        /// The index of the refused checkpoint.
        index: CheckpointIndex,
        /// The index of the latest stored one.
        latest: CheckpointIndex,
        /// Their incarnation.
        incarnation: Incarnation,
    },

    /// A truncation past the end of the log.
    #[error(
        "object {object} in the FT store {}: cannot cut the log before position {keep_from}, \
         it ends before {end}",
        path.display()
    )]
    TruncateBeyondEnd {
        /// The store's file.
        path: PathBuf,
        /// The object.
        object: ObjectKey,
        /// The first position the truncation would keep.
        keep_from: LogPosition,
        /// The position the next entry will get.
        end: LogPosition,
    },

    /// A read of log entries that a checkpoint already truncated.
    #[error(
        "object {object} in the FT store {}: the log from position {from} was asked for, \
         but it was truncated up to position {first} by a checkpoint",
        path.display()
    )]
    Truncated {
        /// The store's file.
        path: PathBuf,
        /// The object.
        object: ObjectKey,
        /// The position asked for.
        from: LogPosition,
        /// The first position still stored.
        first: LogPosition,
    },

    /// A value or key larger than the store accepts.
    #[error(
        "{what} of {len} bytes for object {object} exceeds the FT store's limit of {limit} bytes"
    )]
    TooLarge {
        /// The object.
        object: ObjectKey,
        /// What was too large ("a log entry", "an object key"…).
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },

    /// The store's file reached the size it was given.
    #[error(
        "the FT store {} is full: its file has {size} bytes, the limit is {limit}; \
         checkpoints and truncations free space for reuse",
        path.display()
    )]
    Full {
        /// The store's file.
        path: PathBuf,
        /// The file's size.
        size: u64,
        /// The configured limit.
        limit: u64,
    },

    /// The store's writer thread is gone (it panicked): nothing more can be
    /// made durable through this handle.
    #[error("the FT store {}: its writer thread stopped", path.display())]
    Closed {
        /// The store's file.
        path: PathBuf,
    },
}

/// A result of the FT store.
pub type StoreResult<T, E = StoreError> = std::result::Result<T, E>;
