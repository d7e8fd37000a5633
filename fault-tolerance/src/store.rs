//! The FT server's durable store: checkpoints, request logs and logged
//! replies of the protected objects, in one redb file.
//!
//! What it guarantees:
//!
//! * **Durable on acknowledgement.** A write's future completes only once
//!   the redb transaction that holds it is committed with
//!   `Durability::Immediate` (the file is synced). Writes are group-committed
//!   by one writer thread (`store/writer.rs`): concurrent writers share a
//!   sync, and the entries one batch appends to one object are one record.
//! * **Ordered.** Each object's log gets consecutive positions in the order
//!   its appends were submitted; after a crash the log holds a prefix of
//!   what was submitted, and at least everything acknowledged.
//! * **Fenced by incarnation.** A write from an incarnation older than the
//!   newest one stored for the object is refused.
//! * **Checked.** Every value carries the store's tag, its format version
//!   and a checksum over key and value (`store/record.rs`). A record that
//!   fails, or a gap in a log, is an error naming the object and the file,
//!   never a wrong value; so is a file that is not a store, a store of
//!   another format version, or a file redb cannot open (truncated,
//!   overwritten).
//! * **Bounded.** Batches, entries, checkpoints, the queue of pending writes
//!   and redb's cache have limits ([`StoreConfig`]), and so may the file;
//!   [`Store::stats`] shows its size and write rates.
//!
//! # File layout
//!
//! Format version 3 has six tables, all `&[u8] → &[u8]` except the first:
//!
//! | table | key | value |
//! |---|---|---|
//! | `format` (`&str` keys) | `"format"` | the build that created the file |
//! | `heads` | object | first and next log position, newest incarnation |
//! | `checkpoints` | object, index | incarnation, state |
//! | `log` | object, position of its first entry | a run of consecutive entries (appended in one batch): their count, then each one's incarnation, length and bytes |
//! | `staged` | a big-endian `u64`: the place of the batch's first record among the staged ones | the `log` records one batch staged: their count, then each one's `log` key and value, as they will be there |
//! | `replies` | object, sender, sequence | log position, reply |
//! | `replies` | object, `ff fe`, a big-endian `u64` numbering them | replies recorded together: their count, the newest log position they belong to, then each one's sender, sequence, log position and bytes |
//!
//! An object (or sender) in a key is its length as a big-endian `u16`
//! followed by its bytes; indices, positions and sequences are big-endian
//! `u64`.
//!
//! A batch's log records are first *staged*: written together as one
//! record of `staged`, in the order they were made, so that a commit
//! touching many objects inserts one record instead of one per object.
//! Once [`StoreConfig::staged_records`] log records are staged, and when
//! the store closes, they move to `log` together, in key order (those a
//! truncation made useless are dropped). An object's log is its records in
//! `log`, followed by its records in `staged`.

mod error;
mod keys;
mod record;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{
    Database, DatabaseError, MultimapTableHandle as _, ReadableTable, StorageError,
    TableDefinition, TableError, TableHandle as _,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

pub use error::{StoreError, StoreResult};
pub use keys::{CheckpointIndex, Incarnation, LogPosition, MAX_OBJECT_KEY_LEN, ObjectKey, ReplyId};
pub use record::RecordFault;

use record::{FORMAT_VERSION, Kind};
use writer::{Action, Counters, Done, Head, Op, WINDOW, Writer};

const FORMAT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("format");
const HEADS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("heads");
const CHECKPOINTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("checkpoints");
const LOG: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("log");
const STAGED: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("staged");
const REPLIES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("replies");

/// The key of the format record in the `format` table.
const FORMAT_KEY: &str = "format";

/// Limits and retention of a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How many checkpoints of each object are kept: a new durable
    /// checkpoint drops the oldest beyond this number. At least 1.
    pub checkpoints_kept: usize,
    /// The most operations one transaction commits.
    pub max_batch: usize,
    /// Once a batch holds this many bytes of payload it is committed
    /// without waiting for more.
    pub max_batch_bytes: usize,
    /// How many writes may wait for the writer; more wait to be queued.
    pub queue: usize,
    /// How many bytes of entries, checkpoints and replies may wait for the
    /// writer or be in its batch; more wait to be queued. (A write larger
    /// than this waits until it is alone.)
    pub max_queued_bytes: usize,
    /// The largest log entry or reply, in bytes.
    pub max_entry_bytes: usize,
    /// The largest checkpoint state, in bytes.
    pub max_checkpoint_bytes: usize,
    /// Once the file has this many bytes, writes that add data are refused
    /// with [`StoreError::Full`] (truncations are still accepted). `None`:
    /// no limit but the disk.
    pub max_file_bytes: Option<u64>,
    /// The memory redb may use to cache pages, in bytes.
    pub cache_bytes: usize,
    /// How many log records (one per object per batch) are staged before
    /// they move to the log together (see the file layout). More makes
    /// appends to many objects cheaper and reading a log slower (a read
    /// looks through every staged record). At least 1.
    pub staged_records: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            checkpoints_kept: 1,
            max_batch: 8192,
            max_batch_bytes: 16 << 20,
            queue: 65536,
            max_queued_bytes: 256 << 20,
            max_entry_bytes: 16 << 20,
            max_checkpoint_bytes: 1 << 30,
            max_file_bytes: None,
            cache_bytes: 64 << 20,
            staged_records: 4096,
        }
    }
}

/// A checkpoint of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its index.
    pub index: CheckpointIndex,
    /// The incarnation of the object that took it.
    pub incarnation: Incarnation,
    /// The object's state, as the protocol serialized it.
    pub state: Vec<u8>,
}

/// One entry of an object's request log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its position.
    pub position: LogPosition,
    /// The incarnation of the object that logged it.
    pub incarnation: Incarnation,
    /// What was logged.
    pub bytes: Vec<u8>,
}

/// Where an object's log starts and ends, and its newest incarnation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogBounds {
    /// The first position still stored (earlier ones were truncated).
    pub first: LogPosition,
    /// The position the next appended entry will get; `first == next` when
    /// the log is empty.
    pub next: LogPosition,
    /// The newest incarnation that wrote for the object (0 if none did).
    pub incarnation: Incarnation,
}

/// The size of a store and what it wrote.
#[derive(Clone, Debug)]
pub struct StoreStats {
    /// The store's file.
    pub path: PathBuf,
    /// The file's size, in bytes.
    pub file_bytes: u64,
    /// Log entries made durable since the store was opened.
    pub entries_written: u64,
    /// Bytes of records (entries, checkpoints, replies) made durable since
    /// the store was opened.
    pub bytes_written: u64,
    /// Checkpoints made durable since the store was opened.
    pub checkpoints_written: u64,
    /// Transactions committed since the store was opened: the number of
    /// syncs the group commit paid for.
    pub commits: u64,
    /// Log entries made durable per second, over about the last second.
    pub entries_per_second: f64,
    /// Record bytes made durable per second, over about the last second.
    pub bytes_per_second: f64,
    /// How long the store has been open.
    pub uptime: Duration,
}

/// The FT server's durable store, open on one file.
///
/// Cheap to clone: clones share the file and its writer thread, which ends
/// (and the file is closed) when the last clone is dropped. Writes are
/// `async` and complete once durable; reads are synchronous, do not wait
/// for the writer, and see every acknowledged write (read large
/// checkpoints from `spawn_blocking` in async code).
///
/// A write whose caller stops waiting after submitting it is still made
/// durable. Dropping the last clone waits until the writer committed what
/// was already queued.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Arc<Database>,
    queue: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    config: StoreConfig,
    /// Permits for [`StoreConfig::max_queued_bytes`], one per byte.
    queued_bytes: Semaphore,
    queued_bytes_limit: u32,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it committed what was
        // queued; the file is closed when its last handle goes.
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `path`, creating it if the file does not exist or
    /// is empty, and starts its writer thread.
    ///
    /// Fails if the file is not an FT store, is one of another format
    /// version, or is open elsewhere. After a crash, redb first repairs the
    /// file, which takes time proportional to its size.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> StoreResult<Store> {
        let path = path.as_ref().to_owned();
        check_magic(&path)?;
        let db = guarded(&path, "opening the file", || {
            Database::builder()
                .set_cache_size(config.cache_bytes)
                .create(&path)
                .map_err(|source| opening(&path, source))
        })?;
        guarded(&path, "checking the format", || check_format(&db, &path))?;

        let db = Arc::new(db);
        let counters = Arc::new(Counters::new());
        let (queue, pending) = mpsc::channel(config.queue.max(1));
        let writer = Writer {
            db: db.clone(),
            path: path.clone(),
            counters: counters.clone(),
            checkpoints_kept: config.checkpoints_kept.max(1),
            max_batch: config.max_batch.max(1),
            max_batch_bytes: config.max_batch_bytes,
            max_file_bytes: config.max_file_bytes,
            staged_records: config.staged_records.max(1) as u64,
            // Given from a task of the runtime the store is opened in: the
            // writer wakes it once per batch, and it wakes the writes'
            // tasks from inside the runtime.
            answers: tokio::runtime::Handle::try_current().ok().map(|runtime| {
                let (answers, batches) = mpsc::unbounded_channel();
                let mut batches = writer::Answering(batches);
                runtime.spawn(async move {
                    while let Some(batch) = batches.0.recv().await {
                        writer::answer(batch);
                    }
                });
                answers
            }),
        };
        let writer = std::thread::Builder::new()
            .name("ft-store-writer".into())
            .spawn(move || writer.run(pending))
            .map_err(|error| StoreError::Storage {
                path: path.clone(),
                operation: "starting the writer thread",
                source: Arc::new(redb::Error::Io(error)),
            })?;
        let queued_bytes_limit = config.max_queued_bytes.clamp(1, u32::MAX as usize) as u32;
        Ok(Store {
            inner: Arc::new(Inner {
                queued_bytes: Semaphore::new(queued_bytes_limit as usize),
                queued_bytes_limit,
                path,
                db,
                queue: Some(queue),
                writer: Some(writer),
                counters,
                config,
            }),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends `entry` to the request log of `object`, written by its
    /// incarnation `incarnation`; returns its position once it is durable.
    pub async fn append(
        &self,
        object: &ObjectKey,
        incarnation: Incarnation,
        entry: impl Into<Vec<u8>>,
    ) -> StoreResult<LogPosition> {
        let entry = entry.into();
        self.check_size(
            object,
            "a log entry",
            entry.len(),
            self.inner.config.max_entry_bytes,
        )?;
        match self
            .submit(object, Action::Append { incarnation, entry })
            .await?
        {
            Done::Appended(position) => Ok(position),
            Done::Stored | Done::Removed(_) => Err(self.closed()),
        }
    }

    /// Stores `checkpoint` of `object`; once it is durable, the object's
    /// checkpoints beyond the newest [`StoreConfig::checkpoints_kept`] are
    /// gone, and so, if `truncate_log_before` is given, are the log entries
    /// before that position and their replies (what the checkpoint covers).
    ///
    /// The index must be above the latest checkpoint's of the same
    /// incarnation. A checkpoint of a newer incarnation may restart from a
    /// lower index: it replaces the checkpoints from its index on.
    pub async fn put_checkpoint(
        &self,
        object: &ObjectKey,
        checkpoint: Checkpoint,
        truncate_log_before: Option<LogPosition>,
    ) -> StoreResult<()> {
        self.store_checkpoint(object, checkpoint, truncate_log_before, false)
            .await
    }

    /// [`Store::put_checkpoint`] without dropping any older checkpoint of
    /// `object`: its owner removes them with
    /// [`Store::drop_checkpoints_before`] (a recovery line that needs
    /// several of them).
    pub async fn put_checkpoint_keeping_older(
        &self,
        object: &ObjectKey,
        checkpoint: Checkpoint,
    ) -> StoreResult<()> {
        self.store_checkpoint(object, checkpoint, None, true).await
    }

    async fn store_checkpoint(
        &self,
        object: &ObjectKey,
        checkpoint: Checkpoint,
        truncate_log_before: Option<LogPosition>,
        keep_older: bool,
    ) -> StoreResult<()> {
        let len = checkpoint.state.len();
        self.check_size(
            object,
            "a checkpoint",
            len,
            self.inner.config.max_checkpoint_bytes,
        )?;
        let action = Action::Checkpoint {
            checkpoint,
            truncate_log_before,
            keep_older,
        };
        self.submit(object, action).await.map(|_| ())
    }

    /// Makes `incarnation` the newest of `object`, once durable: from then
    /// on every write of an older incarnation is refused (what a recovery
    /// does before it reads the log, so that a runtime wrongly declared
    /// dead can add nothing to it). An older incarnation than the newest
    /// is refused.
    pub async fn fence(&self, object: &ObjectKey, incarnation: Incarnation) -> StoreResult<()> {
        check_key(object)?;
        self.submit(object, Action::Fence { incarnation })
            .await
            .map(|_| ())
    }

    /// Removes the entries of `object`'s log before `keep_from`, and the
    /// replies recorded for them; returns how many entries went, once
    /// durable. Cutting past the end of the log is refused.
    pub async fn truncate_log(
        &self,
        object: &ObjectKey,
        keep_from: LogPosition,
    ) -> StoreResult<u64> {
        check_key(object)?;
        self.removing(object, Action::Truncate { keep_from }).await
    }

    /// Removes the checkpoints of `object` with an index below `before`
    /// (those older than a recovery line); returns how many went, once
    /// durable.
    pub async fn drop_checkpoints_before(
        &self,
        object: &ObjectKey,
        before: CheckpointIndex,
    ) -> StoreResult<u64> {
        check_key(object)?;
        let action = Action::DropCheckpoints {
            before,
            after: None,
        };
        self.removing(object, action).await
    }

    /// Removes the checkpoints of `object` outside `from..=to` (a recovery
    /// line's own, when what lay past it no longer happened); returns how
    /// many went, once durable.
    pub async fn keep_checkpoints(
        &self,
        object: &ObjectKey,
        from: CheckpointIndex,
        to: CheckpointIndex,
    ) -> StoreResult<u64> {
        check_key(object)?;
        let action = Action::DropCheckpoints {
            before: from,
            after: Some(to),
        };
        self.removing(object, action).await
    }

    /// Submits `action`, which removes records: how many went.
    async fn removing(&self, object: &ObjectKey, action: Action) -> StoreResult<u64> {
        match self.submit(object, action).await? {
            Done::Removed(removed) => Ok(removed),
            Done::Stored | Done::Appended(_) => Err(self.closed()),
        }
    }

    /// Removes the replies `object` recorded for requests of `sender`
    /// numbered below `below` (its sender's checkpoint counts them as
    /// answered: it will not send them again); how many went, once
    /// durable.
    pub async fn forget_replies(
        &self,
        object: &ObjectKey,
        sender: &ObjectKey,
        below: u64,
    ) -> StoreResult<u64> {
        check_key(object)?;
        if let Err(len) = keys::check_len(sender) {
            return Err(too_large(object, "a sender key", len, MAX_OBJECT_KEY_LEN));
        }
        let action = Action::ForgetReplies {
            sender: sender.clone(),
            below,
        };
        self.removing(object, action).await
    }

    /// Records the reply `object` gave to the request `id`, whose log entry
    /// is at `at`: a duplicate of that request is answered with it. It is
    /// removed when the log is truncated past `at`.
    pub async fn record_reply(
        &self,
        object: &ObjectKey,
        id: &ReplyId,
        at: LogPosition,
        reply: impl Into<Vec<u8>>,
    ) -> StoreResult<()> {
        self.record_replies(object, vec![(id.clone(), at, reply.into())])
            .await
    }

    /// [`Store::record_reply`] for many replies of `object` at once: one
    /// write, durable together.
    pub async fn record_replies(
        &self,
        object: &ObjectKey,
        replies: Vec<(ReplyId, LogPosition, Vec<u8>)>,
    ) -> StoreResult<()> {
        for (id, _, reply) in &replies {
            self.check_size(
                object,
                "a reply",
                reply.len(),
                self.inner.config.max_entry_bytes,
            )?;
            if let Err(len) = keys::check_len(&id.sender) {
                return Err(too_large(object, "a sender key", len, MAX_OBJECT_KEY_LEN));
            }
        }
        if replies.is_empty() {
            return Ok(());
        }
        self.submit(object, Action::Replies(replies))
            .await
            .map(|_| ())
    }

    /// The newest checkpoint of `object`, if it has one.
    pub fn latest_checkpoint(&self, object: &ObjectKey) -> StoreResult<Option<Checkpoint>> {
        guarded(&self.inner.path, "reading checkpoints", || {
            let (first, last) = (keys::numbered(object, 0), keys::numbered(object, u64::MAX));
            let txn = self.read()?;
            let table = self.checkpoints(&txn)?;
            let mut range = table
                .range::<&[u8]>(first.as_slice()..=last.as_slice())
                .map_err(|e| self.storage("reading checkpoints", e))?;
            match range.next_back() {
                None => Ok(None),
                Some(entry) => {
                    let (key, value) = entry.map_err(|e| self.storage("reading checkpoints", e))?;
                    let index = CheckpointIndex(keys::number_of(key.value()));
                    self.decode_checkpoint(object, index, key.value(), value.value())
                        .map(Some)
                }
            }
        })
    }

    /// The checkpoint of `object` with index `index`, if it is still kept.
    pub fn checkpoint(
        &self,
        object: &ObjectKey,
        index: CheckpointIndex,
    ) -> StoreResult<Option<Checkpoint>> {
        guarded(&self.inner.path, "reading checkpoints", || {
            let key = keys::numbered(object, index.0);
            let txn = self.read()?;
            let table = self.checkpoints(&txn)?;
            let value = table
                .get(key.as_slice())
                .map_err(|e| self.storage("reading checkpoints", e))?;
            value
                .map(|value| self.decode_checkpoint(object, index, &key, value.value()))
                .transpose()
        })
    }

    /// The indices of the checkpoints kept for `object`, oldest first.
    pub fn checkpoint_indices(&self, object: &ObjectKey) -> StoreResult<Vec<CheckpointIndex>> {
        guarded(&self.inner.path, "reading checkpoints", || {
            let (first, last) = (keys::numbered(object, 0), keys::numbered(object, u64::MAX));
            let txn = self.read()?;
            let table = self.checkpoints(&txn)?;
            let range = table
                .range::<&[u8]>(first.as_slice()..=last.as_slice())
                .map_err(|e| self.storage("reading checkpoints", e))?;
            range
                .map(|entry| {
                    let (key, _) = entry.map_err(|e| self.storage("reading checkpoints", e))?;
                    Ok(CheckpointIndex(keys::number_of(key.value())))
                })
                .collect()
        })
    }

    /// Where the log of `object` starts and ends.
    pub fn log_bounds(&self, object: &ObjectKey) -> StoreResult<LogBounds> {
        guarded(&self.inner.path, "reading the log", || {
            let txn = self.read()?;
            let head = self.head(&txn, object)?;
            Ok(LogBounds {
                first: LogPosition(head.first),
                next: LogPosition(head.next),
                incarnation: Incarnation(head.incarnation),
            })
        })
    }

    /// At most `max_entries` entries of `object`'s log, in order, from
    /// position `from` on (fewer at the end of the log).
    ///
    /// Asking for entries that were truncated is an error, and so is a gap
    /// in the log: a replay never silently skips a request.
    pub fn read_log(
        &self,
        object: &ObjectKey,
        from: LogPosition,
        max_entries: usize,
    ) -> StoreResult<Vec<LogEntry>> {
        guarded(&self.inner.path, "reading the log", || {
            let txn = self.read()?;
            let head = self.head(&txn, object)?;
            if from.0 < head.first {
                return Err(StoreError::Truncated {
                    path: self.inner.path.clone(),
                    object: object.clone(),
                    from,
                    first: LogPosition(head.first),
                });
            }
            let wanted = (head.next.saturating_sub(from.0)).min(max_entries as u64);
            if wanted == 0 {
                return Ok(Vec::new());
            }
            let last = from.0 + wanted;
            let table = txn
                .open_table(LOG)
                .map_err(|e| self.storage("reading the log", e))?;
            // The segment holding `from` is the last one starting at or
            // before it.
            let lowest = keys::numbered(object, 0);
            let at_from = keys::numbered(object, from.0);
            let start = match table
                .range::<&[u8]>(lowest.as_slice()..=at_from.as_slice())
                .map_err(|e| self.storage("reading the log", e))?
                .next_back()
            {
                Some(segment) => {
                    let (key, _) = segment.map_err(|e| self.storage("reading the log", e))?;
                    keys::number_of(key.value())
                }
                None => from.0,
            };
            let start_key = keys::numbered(object, start);
            let end_key = keys::numbered(object, last);
            let range = table
                .range::<&[u8]>(start_key.as_slice()..end_key.as_slice())
                .map_err(|e| self.storage("reading the log", e))?;
            let mut entries = Vec::with_capacity(wanted.min(4096) as usize);
            // Where the next segment must start for the log to have no gap.
            let mut expected = start;
            for segment in range {
                let (key, value) = segment.map_err(|e| self.storage("reading the log", e))?;
                let first = keys::number_of(key.value());
                if first != expected {
                    return Err(self.missing(object, expected.max(from.0)));
                }
                let record = || format!("log entries from position {first}");
                let ([count], payload) =
                    record::decode::<1>(Kind::LogSegment, key.value(), value.value())
                        .map_err(|fault| self.corrupt(object, record(), fault))?;
                let stored = record::entries(payload, count)
                    .map_err(|fault| self.corrupt(object, record(), fault))?;
                for (position, (incarnation, bytes)) in (first..).zip(stored) {
                    if (from.0..last).contains(&position) {
                        entries.push(LogEntry {
                            position: LogPosition(position),
                            incarnation: Incarnation(incarnation),
                            bytes: bytes.to_vec(),
                        });
                    }
                }
                expected = first.saturating_add(count);
                if expected >= last {
                    break;
                }
            }
            if expected < last {
                expected =
                    self.read_staged(&txn, object, (from.0, last), expected, &mut entries)?;
            }
            if expected < last {
                return Err(self.missing(object, expected.max(from.0)));
            }
            Ok(entries)
        })
    }

    /// The entries of `object`'s staged records in `wanted`, added to
    /// `entries` after those read up to `expected`; where the log read
    /// stops.
    fn read_staged(
        &self,
        txn: &redb::ReadTransaction,
        object: &ObjectKey,
        (from, last): (u64, u64),
        mut expected: u64,
        entries: &mut Vec<LogEntry>,
    ) -> StoreResult<u64> {
        let table = txn
            .open_table(STAGED)
            .map_err(|e| self.storage("reading the log", e))?;
        let prefix = keys::object(object);
        // Staged in the order they were made: an object's in position order.
        for staged in table
            .iter()
            .map_err(|e| self.storage("reading the log", e))?
        {
            let (key, value) = staged.map_err(|e| self.storage("reading the log", e))?;
            let (key, value) = (key.value(), value.value());
            let place = key.first_chunk::<8>().map_or(0, |p| u64::from_be_bytes(*p));
            let records = record::decode::<1>(Kind::Staged, key, value)
                .and_then(|([count], payload)| record::staged(payload, count))
                .map_err(|fault| {
                    self.corrupt(
                        object,
                        format!("staged log records at place {place}"),
                        fault,
                    )
                })?;
            for (log_key, value) in records {
                if log_key.len() != prefix.len() + 8 || !log_key.starts_with(&prefix) {
                    continue;
                }
                let first = keys::number_of(log_key);
                let record = || format!("log entries from position {first}");
                let ([count], payload) = record::decode::<1>(Kind::LogSegment, log_key, value)
                    .map_err(|fault| self.corrupt(object, record(), fault))?;
                let end = first.saturating_add(count);
                if end <= expected {
                    // Before what is still to read (truncated, or read already).
                    continue;
                }
                if first > expected {
                    return Ok(expected);
                }
                let stored = record::entries(payload, count)
                    .map_err(|fault| self.corrupt(object, record(), fault))?;
                for (position, (incarnation, bytes)) in (first..).zip(stored) {
                    if (from.max(expected)..last).contains(&position) {
                        entries.push(LogEntry {
                            position: LogPosition(position),
                            incarnation: Incarnation(incarnation),
                            bytes: bytes.to_vec(),
                        });
                    }
                }
                expected = end;
                if expected >= last {
                    return Ok(expected);
                }
            }
        }
        Ok(expected)
    }

    /// The reply `object` gave to the request `id`, if it was recorded and
    /// not truncated since.
    pub fn reply(&self, object: &ObjectKey, id: &ReplyId) -> StoreResult<Option<Vec<u8>>> {
        guarded(&self.inner.path, "reading replies", || {
            let key = keys::reply(object, id);
            let txn = self.read()?;
            let table = txn
                .open_table(REPLIES)
                .map_err(|e| self.storage("reading replies", e))?;
            if let Some(value) = table
                .get(key.as_slice())
                .map_err(|e| self.storage("reading replies", e))?
            {
                let (_, reply) = record::decode::<1>(Kind::Reply, &key, value.value())
                    .map_err(|fault| self.corrupt(object, format!("reply to {id}"), fault))?;
                return Ok(Some(reply.to_vec()));
            }
            let mut found = None;
            self.replies_together(&table, object, |sender, sequence, reply| {
                if found.is_none() && sender == id.sender.as_bytes() && sequence == id.sequence {
                    found = Some(reply.to_vec());
                }
            })?;
            Ok(found)
        })
    }

    /// Every reply recorded for `object`, with the request it answers.
    pub fn replies(&self, object: &ObjectKey) -> StoreResult<Vec<(ReplyId, Vec<u8>)>> {
        guarded(&self.inner.path, "reading replies", || {
            let (start, end) = keys::reply_range(object);
            let txn = self.read()?;
            let table = txn
                .open_table(REPLIES)
                .map_err(|e| self.storage("reading replies", e))?;
            let mut out = Vec::new();
            for entry in table
                .range::<&[u8]>(start.as_slice()..end.as_slice())
                .map_err(|e| self.storage("reading replies", e))?
            {
                let (key, value) = entry.map_err(|e| self.storage("reading replies", e))?;
                let Some(id) = keys::reply_id_of(object, key.value()) else {
                    continue;
                };
                let (_, reply) = record::decode::<1>(Kind::Reply, key.value(), value.value())
                    .map_err(|fault| self.corrupt(object, format!("reply to {id}"), fault))?;
                out.push((id, reply.to_vec()));
            }
            self.replies_together(&table, object, |sender, sequence, reply| {
                let id = ReplyId {
                    sender: ObjectKey::new(sender.to_vec()),
                    sequence,
                };
                out.push((id, reply.to_vec()));
            })?;
            Ok(out)
        })
    }

    /// Calls `each` with (sender, sequence, reply) of every reply of
    /// `object` recorded together with others.
    fn replies_together(
        &self,
        table: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
        object: &ObjectKey,
        mut each: impl FnMut(&[u8], u64, &[u8]),
    ) -> StoreResult<()> {
        let (first, last) = (
            keys::reply_batch(object, 0),
            keys::reply_batch(object, u64::MAX),
        );
        for entry in table
            .range::<&[u8]>(first.as_slice()..=last.as_slice())
            .map_err(|e| self.storage("reading replies", e))?
        {
            let (key, value) = entry.map_err(|e| self.storage("reading replies", e))?;
            let n = keys::number_of(key.value());
            let corrupt =
                |fault| self.corrupt(object, format!("replies recorded together (#{n})"), fault);
            let ([count, _], payload) =
                record::decode::<2>(Kind::Replies, key.value(), value.value()).map_err(corrupt)?;
            for r in record::replies(payload, count).map_err(corrupt)? {
                each(r.sender, r.sequence, r.reply);
            }
        }
        Ok(())
    }

    /// The file's size and what was written since the store was opened.
    pub fn stats(&self) -> StoreStats {
        let counters = &self.inner.counters;
        let entries = counters.entries.load(Ordering::Relaxed);
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let (entries_per_second, bytes_per_second) = match counters.window.lock() {
            Ok(window) => {
                let elapsed = window.start.elapsed();
                if elapsed >= 2 * WINDOW {
                    // Nothing committed for a while: the last window's rates
                    // are stale, what happened since is the current rate.
                    let seconds = elapsed.as_secs_f64();
                    (
                        (entries - window.entries_at_start) as f64 / seconds,
                        (bytes - window.bytes_at_start) as f64 / seconds,
                    )
                } else {
                    (window.entries_per_second, window.bytes_per_second)
                }
            }
            Err(_) => (0.0, 0.0),
        };
        StoreStats {
            path: self.inner.path.clone(),
            file_bytes: std::fs::metadata(&self.inner.path).map_or(0, |m| m.len()),
            entries_written: entries,
            bytes_written: bytes,
            checkpoints_written: counters.checkpoints.load(Ordering::Relaxed),
            commits: counters.commits.load(Ordering::Relaxed),
            entries_per_second,
            bytes_per_second,
            uptime: counters.opened.elapsed(),
        }
    }

    async fn submit(&self, object: &ObjectKey, action: Action) -> StoreResult<Done> {
        // Held until the write is answered: bounds the bytes queued and
        // batched, whatever the number of writers.
        let wanted = action
            .size()
            .clamp(1, self.inner.queued_bytes_limit as usize) as u32;
        let _room = self
            .inner
            .queued_bytes
            .acquire_many(wanted)
            .await
            .map_err(|_| self.closed())?;
        let (ack, done) = oneshot::channel();
        let queue = self.inner.queue.as_ref().ok_or_else(|| self.closed())?;
        let op = Op {
            object: object.clone(),
            action,
            ack,
        };
        queue.send(op).await.map_err(|_| self.closed())?;
        done.await.map_err(|_| self.closed())?
    }

    fn check_size(
        &self,
        object: &ObjectKey,
        what: &'static str,
        len: usize,
        limit: usize,
    ) -> StoreResult<()> {
        check_key(object)?;
        if len > limit {
            return Err(too_large(object, what, len, limit));
        }
        Ok(())
    }

    fn read(&self) -> StoreResult<redb::ReadTransaction> {
        self.inner
            .db
            .begin_read()
            .map_err(|e| self.storage("starting a read", e))
    }

    fn checkpoints(
        &self,
        txn: &redb::ReadTransaction,
    ) -> StoreResult<redb::ReadOnlyTable<&'static [u8], &'static [u8]>> {
        txn.open_table(CHECKPOINTS)
            .map_err(|e| self.storage("reading checkpoints", e))
    }

    fn head(&self, txn: &redb::ReadTransaction, object: &ObjectKey) -> StoreResult<Head> {
        let key = keys::object(object);
        let table = txn
            .open_table(HEADS)
            .map_err(|e| self.storage("reading log heads", e))?;
        match table
            .get(key.as_slice())
            .map_err(|e| self.storage("reading log heads", e))?
        {
            Some(value) => Head::decode(&self.inner.path, object, &key, value.value()),
            None => Ok(Head::default()),
        }
    }

    fn decode_checkpoint(
        &self,
        object: &ObjectKey,
        index: CheckpointIndex,
        key: &[u8],
        value: &[u8],
    ) -> StoreResult<Checkpoint> {
        let ([incarnation], state) = record::decode::<1>(Kind::Checkpoint, key, value)
            .map_err(|fault| self.corrupt(object, format!("checkpoint {index}"), fault))?;
        Ok(Checkpoint {
            index,
            incarnation: Incarnation(incarnation),
            state: state.to_vec(),
        })
    }

    fn storage(&self, operation: &'static str, error: impl Into<redb::Error>) -> StoreError {
        StoreError::Storage {
            path: self.inner.path.clone(),
            operation,
            source: Arc::new(error.into()),
        }
    }

    fn corrupt(&self, object: &ObjectKey, record: String, fault: RecordFault) -> StoreError {
        StoreError::Corrupt {
            path: self.inner.path.clone(),
            object: object.clone(),
            record,
            fault,
        }
    }

    fn missing(&self, object: &ObjectKey, position: u64) -> StoreError {
        self.corrupt(
            object,
            format!("log entry at position {position}"),
            RecordFault::Missing,
        )
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            path: self.inner.path.clone(),
        }
    }
}

fn check_key(object: &ObjectKey) -> StoreResult<()> {
    keys::check_len(object)
        .map_err(|len| too_large(object, "an object key", len, MAX_OBJECT_KEY_LEN))
}

fn too_large(object: &ObjectKey, what: &'static str, len: usize, limit: usize) -> StoreError {
    StoreError::TooLarge {
        object: object.clone(),
        what,
        len,
        limit,
    }
}

/// Runs `f`, turning a panic of redb into [`StoreError::Damaged`].
///
/// redb reports most damage as errors, but asserts on some (a file shorter
/// than its header says, for one): the FT server must survive a bad file.
fn guarded<T>(
    path: &Path,
    operation: &'static str,
    f: impl FnOnce() -> StoreResult<T>,
) -> StoreResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(StoreError::Damaged {
            path: path.to_owned(),
            operation,
            reason,
        })
    })
}

/// The first bytes of every redb database file (its on-disk format).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Refuses a non-empty file that does not start like a redb database,
/// before redb sees it (it would report only "invalid data").
fn check_magic(path: &Path) -> StoreResult<()> {
    use std::io::Read as _;

    let mut start = Vec::with_capacity(REDB_MAGIC.len());
    match std::fs::File::open(path) {
        Ok(file) => {
            file.take(REDB_MAGIC.len() as u64)
                .read_to_end(&mut start)
                .map_err(|error| StoreError::Open {
                    path: path.to_owned(),
                    source: DatabaseError::Storage(StorageError::Io(error)),
                })?;
        }
        // Not there yet: redb creates it (and reports what prevents that).
        Err(_) => return Ok(()),
    }
    if !start.is_empty() && start != REDB_MAGIC {
        return Err(StoreError::NotAStore {
            path: path.to_owned(),
            reason: "it does not start like a redb database file".into(),
        });
    }
    Ok(())
}

/// Names what went wrong opening the file as a redb database.
fn opening(path: &Path, source: DatabaseError) -> StoreError {
    match source {
        DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_owned(),
        },
        DatabaseError::UpgradeRequired(version) => StoreError::NotAStore {
            path: path.to_owned(),
            reason: format!(
                "it is a redb database in file format {version}, which this build's redb \
                 does not read"
            ),
        },
        DatabaseError::Storage(StorageError::Corrupted(reason)) => StoreError::Damaged {
            path: path.to_owned(),
            operation: "opening the file",
            reason,
        },
        DatabaseError::Storage(StorageError::Io(error))
            if matches!(
                error.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Damaged {
                path: path.to_owned(),
                operation: "opening the file",
                reason: error.to_string(),
            }
        }
        source => StoreError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

/// Checks that the file is an FT store of this format version, or makes
/// an empty file one.
fn check_format(db: &Database, path: &Path) -> StoreResult<()> {
    let storage = |operation, error: redb::Error| StoreError::Storage {
        path: path.to_owned(),
        operation,
        source: Arc::new(error),
    };
    let not_a_store = |reason: String| StoreError::NotAStore {
        path: path.to_owned(),
        reason,
    };
    let txn = db
        .begin_write()
        .map_err(|e| storage("checking the format", e.into()))?;
    let mut tables: Vec<String> = txn
        .list_tables()
        .map_err(|e| storage("checking the format", e.into()))?
        .map(|table| table.name().to_owned())
        .collect();
    tables.extend(
        txn.list_multimap_tables()
            .map_err(|e| storage("checking the format", e.into()))?
            .map(|table| table.name().to_owned()),
    );
    let open_error = |error: TableError| match error {
        TableError::TableTypeMismatch { .. }
        | TableError::TableIsMultimap(_)
        | TableError::TableIsNotMultimap(_) => not_a_store(format!(
            "it is a redb database whose tables are not the FT store's ({error})"
        )),
        error => storage("checking the format", error.into()),
    };
    {
        let mut format = txn.open_table(FORMAT).map_err(open_error)?;
        let stored = format
            .get(FORMAT_KEY)
            .map_err(|e| storage("checking the format", e.into()))?
            .map(|value| value.value().to_vec());
        match stored {
            None if tables.is_empty() => {
                let build = format!("actogrid-fault-tolerance {}", env!("CARGO_PKG_VERSION"));
                let value =
                    record::encode(Kind::Format, FORMAT_KEY.as_bytes(), [], build.as_bytes());
                format
                    .insert(FORMAT_KEY, value.as_slice())
                    .map_err(|e| storage("creating the store", e.into()))?;
            }
            None => {
                return Err(not_a_store(format!(
                    "it is a redb database with tables {tables:?} and no FT store format record"
                )));
            }
            Some(value) => match record::version_of(&value) {
                Some(FORMAT_VERSION) => {
                    record::decode::<0>(Kind::Format, FORMAT_KEY.as_bytes(), &value).map_err(
                        |fault| not_a_store(format!("its format record is damaged: {fault}")),
                    )?;
                }
                Some(found) => {
                    return Err(StoreError::IncompatibleFormat {
                        path: path.to_owned(),
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
                None => {
                    return Err(not_a_store(
                        "its format record is not one of an FT store".into(),
                    ));
                }
            },
        }
    }
    for table in [HEADS, CHECKPOINTS, LOG, STAGED, REPLIES] {
        txn.open_table(table).map_err(open_error)?;
    }
    txn.commit()
        .map_err(|e| storage("creating the store", e.into()))?;
    Ok(())
}
