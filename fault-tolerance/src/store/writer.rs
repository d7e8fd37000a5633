//! Group commit: the one thread that writes to the store.
//!
//! Writers enqueue operations on a bounded channel and wait on a oneshot
//! for its outcome. The thread takes whatever is queued (up to a batch
//! limit), applies it in order in one redb write transaction, commits it
//! with `Durability::Immediate` (redb syncs the file before `commit`
//! returns), and only then answers every operation of the batch. So an
//! acknowledgement always means "durable", while one sync is shared by as
//! many operations as arrived during the previous one.
//!
//! An operation the store refuses (stale incarnation, out-of-order
//! checkpoint…) is checked before it writes anything, so it fails alone; a
//! failure of redb itself aborts the transaction and fails the whole batch,
//! of which nothing is then durable.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata as _, Table};
use tokio::sync::{mpsc, oneshot};

use super::error::{StoreError, StoreResult};
use super::keys::{self, CheckpointIndex, Incarnation, LogPosition, ObjectKey, ReplyId};
use super::record::{self, Kind};
use super::{CHECKPOINTS, Checkpoint, HEADS, LOG, REPLIES, STAGED};

/// One write, as the writer thread receives it.
pub(crate) struct Op {
    pub(crate) object: ObjectKey,
    pub(crate) action: Action,
    pub(crate) ack: oneshot::Sender<StoreResult<Done>>,
}

/// What an [`Op`] asks for.
pub(crate) enum Action {
    Append {
        incarnation: Incarnation,
        entry: Vec<u8>,
    },
    Checkpoint {
        checkpoint: Checkpoint,
        truncate_log_before: Option<LogPosition>,
        /// Keep every older checkpoint (their owner drops them), not just
        /// the newest `checkpoints_kept`.
        keep_older: bool,
    },
    Truncate {
        keep_from: LogPosition,
    },
    /// Drops the checkpoints below `before`, and above `after` if given.
    DropCheckpoints {
        before: CheckpointIndex,
        after: Option<CheckpointIndex>,
    },
    Replies(Vec<(ReplyId, LogPosition, Vec<u8>)>),
    Fence {
        incarnation: Incarnation,
    },
    ForgetReplies {
        sender: ObjectKey,
        below: u64,
    },
}

impl Action {
    /// Roughly what the operation adds to the transaction, to bound a batch
    /// and the queue.
    pub(crate) fn size(&self) -> usize {
        match self {
            Action::Append { entry, .. } => entry.len(),
            Action::Checkpoint { checkpoint, .. } => checkpoint.state.len(),
            Action::Truncate { .. }
            | Action::DropCheckpoints { .. }
            | Action::Fence { .. }
            | Action::ForgetReplies { .. } => 0,
            Action::Replies(replies) => replies.iter().map(|(_, _, r)| r.len()).sum(),
        }
    }

    /// Whether the operation makes the file grow (truncations do not, so
    /// they are still accepted by a full store).
    fn grows(&self) -> bool {
        !matches!(
            self,
            Action::Truncate { .. }
                | Action::DropCheckpoints { .. }
                | Action::Fence { .. }
                | Action::ForgetReplies { .. }
        )
    }
}

/// What an [`Op`] did, once durable.
pub(crate) enum Done {
    Appended(LogPosition),
    Stored,
    Removed(u64),
}

/// An object's log bounds and newest incarnation, as held in the heads table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Head {
    /// The first position still in the log (everything before was truncated).
    pub(crate) first: u64,
    /// The position the next appended entry gets.
    pub(crate) next: u64,
    /// The newest incarnation that wrote for the object.
    pub(crate) incarnation: u64,
}

impl Head {
    pub(crate) fn decode(
        path: &std::path::Path,
        object: &ObjectKey,
        key: &[u8],
        value: &[u8],
    ) -> StoreResult<Head> {
        let ([first, next, incarnation], _) =
            record::decode::<3>(Kind::Head, key, value).map_err(|fault| StoreError::Corrupt {
                path: path.to_owned(),
                object: object.clone(),
                record: "log head".into(),
                fault,
            })?;
        Ok(Head {
            first,
            next,
            incarnation,
        })
    }
}

/// Totals and recent rates of what the writer made durable.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) entries: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) window: Mutex<Window>,
    pub(crate) opened: Instant,
}

/// Rates over the last window of at least [`WINDOW`], and where the current
/// window started.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) start: Instant,
    pub(crate) entries_at_start: u64,
    pub(crate) bytes_at_start: u64,
    pub(crate) entries_per_second: f64,
    pub(crate) bytes_per_second: f64,
}

/// How long rates are averaged over.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);

impl Counters {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Counters {
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            window: Mutex::new(Window {
                start: now,
                entries_at_start: 0,
                bytes_at_start: 0,
                entries_per_second: 0.0,
                bytes_per_second: 0.0,
            }),
            opened: now,
        }
    }

    fn committed(&self, written: &Written) {
        let entries = self.entries.fetch_add(written.entries, Ordering::Relaxed) + written.entries;
        let bytes = self.bytes.fetch_add(written.bytes, Ordering::Relaxed) + written.bytes;
        self.checkpoints
            .fetch_add(written.checkpoints, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
        let Ok(mut window) = self.window.lock() else {
            return;
        };
        let elapsed = window.start.elapsed();
        if elapsed >= WINDOW {
            let seconds = elapsed.as_secs_f64();
            window.entries_per_second = (entries - window.entries_at_start) as f64 / seconds;
            window.bytes_per_second = (bytes - window.bytes_at_start) as f64 / seconds;
            window.start = Instant::now();
            window.entries_at_start = entries;
            window.bytes_at_start = bytes;
        }
    }
}

/// The answers handed over, given by a task; those still queued when the
/// task ends (its runtime shutting down) are given as it ends, and the
/// writer gives the next ones itself.
pub(crate) struct Answering(pub(crate) mpsc::UnboundedReceiver<Answered>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.close();
        while let Ok(batch) = self.0.try_recv() {
            answer(batch);
        }
    }
}

/// Gives each operation of a batch its outcome. A caller that stopped
/// waiting still had its write made durable.
pub(crate) fn answer(answered: Answered) {
    for (ack, outcome) in answered {
        let _ = ack.send(outcome);
    }
}

/// What one batch wrote.
#[derive(Default)]
struct Written {
    entries: u64,
    bytes: u64,
    checkpoints: u64,
}

/// The writer thread's configuration and handles.
pub(crate) struct Writer {
    pub(crate) db: Arc<Database>,
    pub(crate) path: PathBuf,
    pub(crate) counters: Arc<Counters>,
    pub(crate) checkpoints_kept: usize,
    pub(crate) max_batch: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_file_bytes: Option<u64>,
    /// Log records staged at most before they are moved to the log.
    pub(crate) staged_records: u64,
    /// Where a batch's answers go to be given from the runtime the store
    /// was opened in (one wake-up per batch); given from here otherwise.
    pub(crate) answers: Option<Answers>,
}

/// A batch's answers, as the writer hands them over.
pub(crate) type Answered = Vec<(oneshot::Sender<StoreResult<Done>>, StoreResult<Done>)>;

/// Where the writer hands a batch's answers over.
pub(crate) type Answers = mpsc::UnboundedSender<Answered>;

/// The tables a batch writes to.
struct Tables<'txn> {
    heads: Table<'txn, &'static [u8], &'static [u8]>,
    log: Table<'txn, &'static [u8], &'static [u8]>,
    staged: Table<'txn, &'static [u8], &'static [u8]>,
    /// The log records the batch stages, inserted together at its end.
    staging: Staging,
    checkpoints: Table<'txn, &'static [u8], &'static [u8]>,
    replies: Table<'txn, &'static [u8], &'static [u8]>,
    /// The log segments the batch is filling, one per object, not staged
    /// yet.
    segments: HashMap<ObjectKey, Segment>,
}

/// The log records one batch stages: one record of the `staged` table
/// holds them all, so that a batch appending to many objects inserts one
/// record, whatever the number of objects (see [`stage`]).
#[derive(Default)]
struct Staging {
    count: u64,
    payload: Vec<u8>,
}

/// Consecutive entries of one object appended in one batch: stored as one
/// record, so that a batch inserts one log record per object instead of
/// one per entry (what makes group commit pay off).
struct Segment {
    first: u64,
    count: u64,
    payload: Vec<u8>,
}

/// A segment's payload is closed at this size; the next entry starts a
/// new segment (a larger entry has a segment of its own).
const SEGMENT_BYTES: usize = 1 << 20;

impl Segment {
    /// An empty segment whose first entry will have position `first`.
    fn at(first: u64) -> Self {
        Segment {
            first,
            count: 0,
            payload: Vec::new(),
        }
    }
}

impl Tables<'_> {
    /// Stages the segments being filled (see [`Staging`]).
    fn insert_segments(&mut self) {
        for (object, segment) in self.segments.drain() {
            self.staging.push(&object, segment);
        }
    }
}

impl Staging {
    /// Adds a segment, as the log record it will be.
    fn push(&mut self, object: &ObjectKey, segment: Segment) {
        let key = keys::numbered(object, segment.first);
        let value = record::encode(Kind::LogSegment, &key, [segment.count], &segment.payload);
        record::push_staged(&mut self.payload, &key, &value);
        self.count += 1;
    }
}

/// Inserts the log records of `staging` as one staged record, keyed by
/// the place of its first record among the staged ones (so that staged
/// records keep the order they were made in); returns how many places
/// the staged table now spans.
fn stage(
    staged: &mut Table<'_, &'static [u8], &'static [u8]>,
    staging: Staging,
) -> Result<u64, Failed> {
    let first = match staged.first()? {
        Some((key, _)) => place_of(key.value()),
        None => 0,
    };
    let place = match staged.last()? {
        Some((key, value)) => {
            let place = place_of(key.value());
            // A damaged record counts for one place.
            let count = record::decode::<1>(Kind::Staged, key.value(), value.value())
                .map_or(1, |([count], _)| count);
            place.saturating_add(count)
        }
        None => 0,
    };
    let key = place.to_be_bytes();
    let value = record::encode(Kind::Staged, &key, [staging.count], &staging.payload);
    staged.insert(key.as_slice(), value.as_slice())?;
    Ok(place.saturating_add(staging.count).saturating_sub(first))
}

/// The place in a staged record's key.
fn place_of(key: &[u8]) -> u64 {
    key.first_chunk::<8>()
        .map_or(0, |place| u64::from_be_bytes(*place))
}

/// Moves the staged log records to the log, dropping those a truncation
/// made useless, and empties the staging table (dropped whole: removing
/// its records one by one would cost more than the staging saved). The
/// consecutive records of one object become one log record (up to
/// [`SEGMENT_BYTES`]), so each object costs one insertion. A staged
/// record that fails its checks stays, under its key, so that reading
/// a log through it reports the fault.
fn unstage(txn: &redb::WriteTransaction) -> Result<(), Failed> {
    let mut records = Vec::new();
    let mut damaged = Vec::new();
    {
        let staged = txn.open_table(STAGED)?;
        for record in staged.iter()? {
            let (key, value) = record?;
            let (key, value) = (key.value(), value.value());
            match record::decode::<1>(Kind::Staged, key, value)
                .and_then(|([count], payload)| record::staged(payload, count))
            {
                Ok(staged) => {
                    records.extend(staged.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())))
                }
                Err(_) => damaged.push((key.to_vec(), value.to_vec())),
            }
        }
    }
    txn.delete_table(STAGED)?;
    let mut staged = txn.open_table(STAGED)?;
    for (key, value) in damaged {
        staged.insert(key.as_slice(), value.as_slice())?;
    }
    // By object, then position.
    records.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    let heads = txn.open_table(HEADS)?;
    let mut log = txn.open_table(LOG)?;
    let mut run: Option<Run> = None;
    // The first position still in the log of the object last looked up.
    let mut kept_from: Option<(Vec<u8>, u64)> = None;
    for (key, value) in records {
        let split = key.len().saturating_sub(8);
        let (object, first) = (&key[..split], keys::number_of(&key));
        let Ok(([count], payload)) = record::decode::<1>(Kind::LogSegment, &key, &value) else {
            // Moved as it is, so that reading it reports the fault.
            if let Some(done) = run.take() {
                done.insert(&mut log)?;
            }
            log.insert(key.as_slice(), value.as_slice())?;
            continue;
        };
        let head_first = match &kept_from {
            Some((known, first)) if known == object => *first,
            _ => {
                let first = match heads.get(object)? {
                    Some(stored) => record::decode::<3>(Kind::Head, object, stored.value())
                        .map_or(0, |([first, ..], _)| first),
                    None => 0,
                };
                kept_from = Some((object.to_vec(), first));
                first
            }
        };
        if first.saturating_add(count) <= head_first {
            continue;
        }
        if let Some(open) = run.as_mut().filter(|r| {
            r.object == object
                && r.first.saturating_add(r.count) == first
                && r.payload.len() + payload.len() <= SEGMENT_BYTES
        }) {
            open.count += count;
            open.payload.extend_from_slice(payload);
            continue;
        }
        if let Some(done) = run.replace(Run {
            object: object.to_vec(),
            first,
            count,
            payload: payload.to_vec(),
        }) {
            done.insert(&mut log)?;
        }
    }
    if let Some(done) = run {
        done.insert(&mut log)?;
    }
    Ok(())
}

/// Consecutive staged records of one object, becoming one log record.
struct Run {
    /// The object, as in keys.
    object: Vec<u8>,
    first: u64,
    count: u64,
    payload: Vec<u8>,
}

impl Run {
    fn insert(self, log: &mut Table<'_, &'static [u8], &'static [u8]>) -> Result<(), Failed> {
        let mut key = self.object;
        key.extend_from_slice(&self.first.to_be_bytes());
        let value = record::encode(Kind::LogSegment, &key, [self.count], &self.payload);
        log.insert(key.as_slice(), value.as_slice())?;
        Ok(())
    }
}

/// Records `replies` of `object` together, as one record numbered after
/// its last such record; the bytes written.
fn record_together(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    object: &ObjectKey,
    replies: &[&(ReplyId, LogPosition, Vec<u8>)],
) -> Result<u64, Failed> {
    let (first, last) = (
        keys::reply_batch(object, 0),
        keys::reply_batch(object, u64::MAX),
    );
    let n = match table
        .range::<&[u8]>(first.as_slice()..=last.as_slice())?
        .next_back()
    {
        Some(newest) => keys::number_of(newest?.0.value()).saturating_add(1),
        None => 0,
    };
    let mut payload = Vec::new();
    let mut newest = 0;
    for (id, at, reply) in replies {
        record::push_reply(&mut payload, id.sender.as_bytes(), id.sequence, at.0, reply);
        newest = newest.max(at.0);
    }
    let key = keys::reply_batch(object, n);
    let value = record::encode(
        Kind::Replies,
        &key,
        [replies.len() as u64, newest],
        &payload,
    );
    table.insert(key.as_slice(), value.as_slice())?;
    Ok(value.len() as u64)
}

/// Removes, from the replies of `object` recorded together, those to
/// requests of `sender` numbered below `below`; how many went. A record
/// that fails its checks is kept as it is (reading it reports the fault).
fn forget_together(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    object: &ObjectKey,
    sender: &ObjectKey,
    below: u64,
) -> Result<u64, Failed> {
    let (first, last) = (
        keys::reply_batch(object, 0),
        keys::reply_batch(object, u64::MAX),
    );
    let mut changed = Vec::new();
    let mut removed = 0;
    for record in table.range::<&[u8]>(first.as_slice()..=last.as_slice())? {
        let (key, value) = record?;
        let Ok(([count, _], payload)) =
            record::decode::<2>(Kind::Replies, key.value(), value.value())
        else {
            continue;
        };
        let Ok(stored) = record::replies(payload, count) else {
            continue;
        };
        let forgotten =
            |r: &record::StoredReply<'_>| r.sender == sender.as_bytes() && r.sequence < below;
        let gone = stored.iter().filter(|r| forgotten(r)).count();
        if gone == 0 {
            continue;
        }
        removed += gone as u64;
        let mut payload = Vec::new();
        let mut newest = 0;
        for r in stored.iter().filter(|r| !forgotten(r)) {
            record::push_reply(&mut payload, r.sender, r.sequence, r.at, r.reply);
            newest = newest.max(r.at);
        }
        let left = count - gone as u64;
        let value = (left > 0)
            .then(|| record::encode(Kind::Replies, key.value(), [left, newest], &payload));
        changed.push((key.value().to_vec(), value));
    }
    for (key, value) in changed {
        match value {
            Some(value) => table.insert(key.as_slice(), value.as_slice())?,
            None => table.remove(key.as_slice())?,
        };
    }
    Ok(removed)
}

/// A failure of redb itself, which aborts the batch (boxed: `redb::Error`
/// is large, and it travels up every step of a batch).
struct Failed(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for Failed {
    fn from(error: E) -> Self {
        Failed(Box::new(error.into()))
    }
}

/// An operation's own outcome inside a batch that redb itself did not fail.
type Applied = Result<StoreResult<Done>, Failed>;

impl Writer {
    /// Commits batches until every sender is gone.
    pub(crate) fn run(self, mut queue: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(op) = queue.blocking_recv() {
            let mut bytes = op.action.size();
            batch.push(op);
            while batch.len() < self.max_batch && bytes < self.max_batch_bytes {
                match queue.try_recv() {
                    Ok(op) => {
                        bytes += op.action.size();
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
        }
        // Closed: the log whole in its table, for the next opening.
        if let Err(Failed(error)) = self.unstage_all() {
            tracing::warn!(
                "{}: the staged log records stay staged (they are read from there): {error}",
                self.path.display()
            );
        }
    }

    /// Writes and commits `batch`, then answers each of its operations.
    fn commit(&self, batch: &mut Vec<Op>) {
        let full = self.full();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut written = Written::default();
        match self.write(batch, full, &mut outcomes, &mut written) {
            Ok(()) => {
                self.counters.committed(&written);
                let answered: Answered = batch
                    .drain(..)
                    .zip(outcomes)
                    .map(|(op, outcome)| (op.ack, outcome))
                    .collect();
                let answered = match &self.answers {
                    Some(answers) => match answers.send(answered) {
                        Ok(()) => return,
                        Err(mpsc::error::SendError(back)) => back,
                    },
                    None => answered,
                };
                answer(answered);
            }
            Err(Failed(error)) => {
                let error = Arc::new(*error);
                for op in batch.drain(..) {
                    let _ = op.ack.send(Err(StoreError::Storage {
                        path: self.path.clone(),
                        operation: "committing a batch of writes",
                        source: error.clone(),
                    }));
                }
            }
        }
    }

    /// The file's size and limit, when it reached its limit.
    fn full(&self) -> Option<(u64, u64)> {
        let limit = self.max_file_bytes?;
        let size = std::fs::metadata(&self.path).map(|m| m.len()).ok()?;
        (size >= limit).then_some((size, limit))
    }

    fn write(
        &self,
        batch: &[Op],
        full: Option<(u64, u64)>,
        outcomes: &mut Vec<StoreResult<Done>>,
        written: &mut Written,
    ) -> Result<(), Failed> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let full_stage;
        {
            let mut tables = Tables {
                heads: txn.open_table(HEADS)?,
                log: txn.open_table(LOG)?,
                staged: txn.open_table(STAGED)?,
                staging: Staging::default(),
                checkpoints: txn.open_table(CHECKPOINTS)?,
                replies: txn.open_table(REPLIES)?,
                segments: HashMap::new(),
            };
            let mut heads: HashMap<ObjectKey, Head> = HashMap::new();
            for op in batch {
                let outcome = match full {
                    Some((size, limit)) if op.action.grows() => Err(StoreError::Full {
                        path: self.path.clone(),
                        size,
                        limit,
                    }),
                    _ => self.apply(&mut tables, &mut heads, op, written)?,
                };
                outcomes.push(outcome);
            }
            tables.insert_segments();
            let mut heads: Vec<_> = heads
                .into_iter()
                .map(|(object, head)| (keys::object(&object), head))
                .collect();
            heads.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
            for (key, head) in heads {
                let value = record::encode(
                    Kind::Head,
                    &key,
                    [head.first, head.next, head.incarnation],
                    &[],
                );
                tables.heads.insert(key.as_slice(), value.as_slice())?;
            }
            let staging = std::mem::take(&mut tables.staging);
            full_stage =
                staging.count > 0 && stage(&mut tables.staged, staging)? >= self.staged_records;
        }
        if full_stage {
            unstage(&txn)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Moves every staged log record to the log (when the store closes).
    fn unstage_all(&self) -> Result<(), Failed> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        if txn.open_table(STAGED)?.is_empty()? {
            return Ok(());
        }
        unstage(&txn)?;
        txn.commit()?;
        Ok(())
    }

    /// Applies one operation, after checking it against the object's head.
    fn apply(
        &self,
        tables: &mut Tables<'_>,
        heads: &mut HashMap<ObjectKey, Head>,
        op: &Op,
        written: &mut Written,
    ) -> Applied {
        let object = &op.object;
        let head = match heads.entry(object.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let key = keys::object(object);
                let head = match tables.heads.get(key.as_slice())? {
                    Some(value) => match Head::decode(&self.path, object, &key, value.value()) {
                        Ok(head) => head,
                        Err(error) => return Ok(Err(error)),
                    },
                    None => Head::default(),
                };
                entry.insert(head)
            }
        };
        if !matches!(op.action, Action::Append { .. }) {
            // What follows may read or cut the log.
            tables.insert_segments();
        }
        match &op.action {
            Action::Append { incarnation, entry } => {
                if let Err(error) = self.current(object, head, *incarnation) {
                    return Ok(Err(error));
                }
                let segment = match tables.segments.entry(object.clone()) {
                    Entry::Occupied(mut open)
                        if open.get().payload.len() + entry.len() > SEGMENT_BYTES =>
                    {
                        let full = std::mem::replace(open.get_mut(), Segment::at(head.next));
                        tables.staging.push(object, full);
                        open.into_mut()
                    }
                    Entry::Occupied(open) => open.into_mut(),
                    Entry::Vacant(none) => none.insert(Segment::at(head.next)),
                };
                let before = segment.payload.len();
                record::push_entry(&mut segment.payload, incarnation.0, entry);
                segment.count += 1;
                written.entries += 1;
                written.bytes += (segment.payload.len() - before) as u64;
                let position = LogPosition(head.next);
                head.next += 1;
                head.incarnation = incarnation.0;
                Ok(Ok(Done::Appended(position)))
            }
            Action::Checkpoint {
                checkpoint,
                truncate_log_before,
                keep_older,
            } => self.checkpoint(
                tables,
                head,
                object,
                checkpoint,
                (*truncate_log_before, *keep_older),
                written,
            ),
            Action::Truncate { keep_from } => {
                if let Err(error) = self.check_cut(object, head, *keep_from) {
                    return Ok(Err(error));
                }
                let removed = self.cut(tables, head, object, *keep_from)?;
                Ok(Ok(Done::Removed(removed)))
            }
            Action::DropCheckpoints { before, after } => {
                let first = keys::numbered(object, 0);
                let end = keys::numbered(object, before.0);
                let mut removed = 0;
                let mut count = |_: &[u8], _: &[u8]| {
                    removed += 1;
                    false
                };
                tables
                    .checkpoints
                    .retain_in::<&[u8], _>(first.as_slice()..end.as_slice(), &mut count)?;
                if let Some(after) = after.and_then(|a| a.0.checked_add(1)) {
                    let from = keys::numbered(object, after);
                    let last = keys::numbered(object, u64::MAX);
                    tables
                        .checkpoints
                        .retain_in::<&[u8], _>(from.as_slice()..=last.as_slice(), &mut count)?;
                }
                Ok(Ok(Done::Removed(removed)))
            }
            Action::Fence { incarnation } => {
                if let Err(error) = self.current(object, head, *incarnation) {
                    return Ok(Err(error));
                }
                head.incarnation = incarnation.0;
                Ok(Ok(Done::Stored))
            }
            Action::ForgetReplies { sender, below } => {
                let start = keys::reply(
                    object,
                    &ReplyId {
                        sender: sender.clone(),
                        sequence: 0,
                    },
                );
                let end = keys::reply(
                    object,
                    &ReplyId {
                        sender: sender.clone(),
                        sequence: *below,
                    },
                );
                let mut removed = 0;
                tables.replies.retain_in::<&[u8], _>(
                    start.as_slice()..end.as_slice(),
                    |_, _| {
                        removed += 1;
                        false
                    },
                )?;
                removed += forget_together(&mut tables.replies, object, sender, *below)?;
                Ok(Ok(Done::Removed(removed)))
            }
            Action::Replies(replies) => {
                // Those a protected sender may ask for again (kept until
                // it forgets them) one by one, the others together.
                let (together, single): (Vec<_>, Vec<_>) =
                    replies.iter().partition(|(_, at, _)| at.0 != u64::MAX);
                let (together, single) = if together.len() < 2 {
                    (Vec::new(), replies.iter().collect())
                } else {
                    (together, single)
                };
                for (id, at, reply) in single {
                    let key = keys::reply(object, id);
                    let value = record::encode(Kind::Reply, &key, [at.0], reply);
                    tables.replies.insert(key.as_slice(), value.as_slice())?;
                    written.bytes += value.len() as u64;
                }
                if !together.is_empty() {
                    written.bytes += record_together(&mut tables.replies, object, &together)?;
                }
                Ok(Ok(Done::Stored))
            }
        }
    }

    /// Refuses a write from an incarnation older than the object's newest.
    fn current(
        &self,
        object: &ObjectKey,
        head: &Head,
        incarnation: Incarnation,
    ) -> StoreResult<()> {
        if incarnation.0 < head.incarnation {
            return Err(StoreError::StaleIncarnation {
                path: self.path.clone(),
                object: object.clone(),
                given: incarnation,
                current: Incarnation(head.incarnation),
            });
        }
        Ok(())
    }

    /// Stores a checkpoint, drops the checkpoints it makes useless, and
    /// truncates the log it covers, all in the batch's transaction.
    fn checkpoint(
        &self,
        tables: &mut Tables<'_>,
        head: &mut Head,
        object: &ObjectKey,
        checkpoint: &Checkpoint,
        (truncate_log_before, keep_older): (Option<LogPosition>, bool),
        written: &mut Written,
    ) -> Applied {
        if let Err(error) = self.current(object, head, checkpoint.incarnation) {
            return Ok(Err(error));
        }
        if let Some(keep_from) = truncate_log_before {
            if let Err(error) = self.check_cut(object, head, keep_from) {
                return Ok(Err(error));
            }
        }
        let first = keys::numbered(object, 0);
        let last = keys::numbered(object, u64::MAX);
        let latest = match tables
            .checkpoints
            .range::<&[u8]>(first.as_slice()..=last.as_slice())?
            .next_back()
        {
            Some(entry) => {
                let (key, value) = entry?;
                let index = keys::number_of(key.value());
                match record::decode::<1>(Kind::Checkpoint, key.value(), value.value()) {
                    Ok(([incarnation], _)) => {
                        Some((CheckpointIndex(index), Incarnation(incarnation)))
                    }
                    Err(fault) => {
                        return Ok(Err(StoreError::Corrupt {
                            path: self.path.clone(),
                            object: object.clone(),
                            record: format!("checkpoint {index}"),
                            fault,
                        }));
                    }
                }
            }
            None => None,
        };
        if let Some((latest, incarnation)) = latest {
            if incarnation == checkpoint.incarnation && latest >= checkpoint.index {
                return Ok(Err(StoreError::CheckpointOutOfOrder {
                    path: self.path.clone(),
                    object: object.clone(),
                    index: checkpoint.index,
                    latest,
                    incarnation,
                }));
            }
            if incarnation < checkpoint.incarnation && latest >= checkpoint.index {
                // A new incarnation restarted from an older checkpoint: the
                // checkpoints its predecessor took after that one describe
                // a history that no longer happened.
                let from = keys::numbered(object, checkpoint.index.0);
                tables
                    .checkpoints
                    .retain_in::<&[u8], _>(from.as_slice()..=last.as_slice(), |_, _| false)?;
            }
        }
        let key = keys::numbered(object, checkpoint.index.0);
        let value = record::encode(
            Kind::Checkpoint,
            &key,
            [checkpoint.incarnation.0],
            &checkpoint.state,
        );
        tables
            .checkpoints
            .insert(key.as_slice(), value.as_slice())?;
        written.bytes += value.len() as u64;
        written.checkpoints += 1;
        head.incarnation = checkpoint.incarnation.0;

        // Keep the newest `checkpoints_kept`; this one is durable with the
        // same commit that drops the older ones.
        let mut stored = Vec::new();
        for entry in tables
            .checkpoints
            .range::<&[u8]>(first.as_slice()..=last.as_slice())?
        {
            let (key, _) = entry?;
            stored.push(key.value().to_vec());
        }
        let kept = if keep_older {
            usize::MAX
        } else {
            self.checkpoints_kept
        };
        let surplus = stored.len().saturating_sub(kept);
        for key in &stored[..surplus] {
            tables.checkpoints.remove(key.as_slice())?;
        }

        if let Some(keep_from) = truncate_log_before {
            self.cut(tables, head, object, keep_from)?;
        }
        Ok(Ok(Done::Stored))
    }

    /// Refuses to cut the log past its end.
    fn check_cut(
        &self,
        object: &ObjectKey,
        head: &Head,
        keep_from: LogPosition,
    ) -> StoreResult<()> {
        if keep_from.0 > head.next {
            return Err(StoreError::TruncateBeyondEnd {
                path: self.path.clone(),
                object: object.clone(),
                keep_from,
                end: LogPosition(head.next),
            });
        }
        Ok(())
    }

    /// Removes the log entries before `keep_from`, and the replies that
    /// belong to them; returns how many entries went.
    fn cut(
        &self,
        tables: &mut Tables<'_>,
        head: &mut Head,
        object: &ObjectKey,
        keep_from: LogPosition,
    ) -> Result<u64, Failed> {
        if keep_from.0 <= head.first {
            return Ok(0);
        }
        // Segments that end before `keep_from` go; the one that straddles
        // it stays whole, the head hides its first entries.
        let start = keys::numbered(object, 0);
        let end = keys::numbered(object, keep_from.0);
        tables
            .log
            .retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |key, value| {
                match record::decode::<1>(Kind::LogSegment, key, value) {
                    Ok(([count], _)) => keys::number_of(key).saturating_add(count) > keep_from.0,
                    // Kept, so that reading it reports the fault.
                    Err(_) => true,
                }
            })?;
        let (start, end) = keys::reply_range(object);
        tables
            .replies
            .retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |key, value| {
                // A reply that fails its checks is kept, so that reading it
                // reports the fault instead of the reply silently vanishing.
                // Replies recorded together go with the last of them.
                match record::decode::<1>(Kind::Reply, key, value) {
                    Ok(([at], _)) => at >= keep_from.0,
                    Err(_) => match record::decode::<2>(Kind::Replies, key, value) {
                        Ok(([_, newest], _)) => newest >= keep_from.0,
                        Err(_) => true,
                    },
                }
            })?;
        let removed = keep_from.0 - head.first;
        head.first = keep_from.0;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_still_queued_when_their_task_ends_are_given() {
        let (answers, batches) = mpsc::unbounded_channel();
        let answering = Answering(batches);
        let (ack, done) = oneshot::channel();
        answers.send(vec![(ack, Ok(Done::Stored))]).ok().unwrap();
        drop(answering);
        assert!(matches!(done.blocking_recv(), Ok(Ok(Done::Stored))));
        // The writer then gives them itself.
        assert!(answers.send(Vec::new()).is_err());
    }
}
