//! The recovery line of a group, durable in the FT store: the
//! [`LineKeeper`] survives a restart of the FT server, and what it no
//! longer needs leaves the file as soon as the line moves.
//!
//! The keeper is a deterministic state machine, so its durable form is a
//! snapshot of it followed by the inputs it received since, in order:
//!
//! | store object | holds |
//! |---|---|
//! | `cic-line:GROUP` | checkpoints: snapshots of the keeper (the newest kept); log: the inputs since it, each one appended before the keeper sees it |
//! | `cic-body:GROUP:OBJECT` | checkpoints: the body's state at each of the member's checkpoints still kept, by the lowest index it stands for |
//!
//! When the committed line moves (and after a recovery) a new snapshot is
//! written with the journal cut after it, and each member's body states
//! below its lowest kept checkpoint are dropped. A checkpoint that only
//! stretches the previous one (nothing delivered since) costs no body.
//! Reopening reads the snapshot and replays the journal; an entry that
//! does not decode is an error naming the group, the entry and the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Entry, Incarnation, LineKeeper, ObjectId, Plan, Record};
use crate::store::{self, CheckpointIndex, LogPosition, ObjectKey, Store, StoreError, StoreResult};

/// Journal entries read at a time when a group is reopened.
const READ_AT_ONCE: usize = 4096;

/// A body's state, as the driver encoded it.
pub type Bytes = Vec<u8>;

/// What can go wrong with a durable line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The store failed (it names its file and the object).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record of the group is not what was written.
    #[error("the recovery line of group `{group}` in {}: {what} does not decode: {why}", path.display())]
    Corrupt {
        /// The group.
        group: String,
        /// The store's file.
        path: PathBuf,
        /// Which record.
        what: String,
        /// What the decoder said.
        why: String,
    },
    /// A member's body state that a checkpoint of the line stands for is
    /// not in the store.
    #[error("the recovery line of group `{group}` in {}: the state of {object} at checkpoint {index} is missing", path.display())]
    MissingState {
        /// The group.
        group: String,
        /// The store's file.
        path: PathBuf,
        /// The member.
        object: ObjectId,
        /// The checkpoint.
        index: u64,
    },
    /// A checkpoint of another epoch than the group's (its member was
    /// fenced by a recovery).
    #[error(
        "group `{group}`: a checkpoint of {object} from epoch {} is refused: the group is in \
         epoch {} (a recovery restarted its members)",
        epoch.0,
        current.0
    )]
    Stale {
        /// The group.
        group: String,
        /// The member.
        object: ObjectId,
        /// The checkpoint's epoch.
        epoch: Incarnation,
        /// The group's.
        current: Incarnation,
    },
}

/// One input of the keeper, as journaled.
#[derive(Serialize, Deserialize)]
enum Input<P> {
    Checkpoint(Record<P>),
    History {
        object: ObjectId,
        epoch: Incarnation,
        entries: Vec<Entry>,
    },
    Recover,
    Join(Record<P>),
}

/// A recovery: the plan, and the body state each member restarts from.
#[derive(Debug)]
pub struct Recovery<P> {
    /// Who restarts from where, and replays what.
    pub plan: Plan<P>,
    /// By member, the body's state at its checkpoint of the line.
    pub states: BTreeMap<ObjectId, Bytes>,
}

/// A group's [`LineKeeper`], durable in a [`Store`]; `P` is the payload
/// of the messages its checkpoints keep.
#[derive(Debug)]
pub struct DurableLine<P> {
    store: Store,
    group: String,
    journal: ObjectKey,
    keeper: LineKeeper<P>,
    /// The index the next snapshot takes.
    next_snapshot: u64,
}

impl<P: Clone + Serialize + DeserializeOwned> DurableLine<P> {
    /// Starts group `group` in `store` with its `members`, each with its
    /// initial checkpoint and body state; replaces what the store held of
    /// a group of that name. A group started again gets an epoch above the
    /// old one's (so that nothing of the old one counts): its members
    /// start in [`LineKeeper::epoch`] of [`DurableLine::keeper`].
    pub async fn create(
        store: &Store,
        group: &str,
        members: Vec<(Record<P>, Bytes)>,
    ) -> Result<DurableLine<P>, LineError> {
        let journal = journal_key(group);
        // A newer incarnation than anything there: what an earlier group
        // of this name left is replaced, not continued.
        let fresh = match store.latest_checkpoint(&journal)? {
            Some(_) => Incarnation(store.log_bounds(&journal)?.incarnation.0 + 1),
            None => Incarnation::FIRST,
        };
        let mut records = Vec::with_capacity(members.len());
        for (mut record, state) in members {
            record.epoch = fresh;
            put_state(store, group, &record, state).await?;
            records.push(record);
        }
        let mut keeper = LineKeeper::new(records);
        keeper.set_epoch(fresh);
        let mut line = DurableLine {
            store: store.clone(),
            group: group.to_owned(),
            journal,
            keeper,
            next_snapshot: 0,
        };
        line.snapshot().await?;
        Ok(line)
    }

    /// Group `group` as the store holds it (snapshot, then the journal
    /// replayed), or `None` if the store has none.
    pub async fn open(store: &Store, group: &str) -> Result<Option<DurableLine<P>>, LineError> {
        let journal = journal_key(group);
        let Some(snapshot) = store.latest_checkpoint(&journal)? else {
            return Ok(None);
        };
        let corrupt = |what: String, why: String| LineError::Corrupt {
            group: group.to_owned(),
            path: store.path().to_owned(),
            what,
            why,
        };
        let mut keeper: LineKeeper<P> = postcard::from_bytes(&snapshot.state)
            .map_err(|e| corrupt(format!("snapshot {}", snapshot.index.0), e.to_string()))?;
        let bounds = store.log_bounds(&journal)?;
        let mut at = bounds.first;
        loop {
            let entries = store.read_log(&journal, at, READ_AT_ONCE)?;
            let Some(last) = entries.last() else { break };
            at = LogPosition(last.position.0 + 1);
            for entry in entries {
                let input: Input<P> = postcard::from_bytes(&entry.bytes).map_err(|e| {
                    corrupt(format!("journal entry {}", entry.position.0), e.to_string())
                })?;
                apply(&mut keeper, input);
            }
        }
        Ok(Some(DurableLine {
            store: store.clone(),
            group: group.to_owned(),
            journal,
            keeper,
            next_snapshot: snapshot.index.0 + 1,
        }))
    }

    /// The keeper, as durable.
    pub fn keeper(&self) -> &LineKeeper<P> {
        &self.keeper
    }

    /// Stores a member's checkpoint with its body's `state`, once both are
    /// durable; the new committed line if it moved.
    pub async fn store_checkpoint(
        &mut self,
        record: Record<P>,
        state: Bytes,
    ) -> Result<Option<u64>, LineError> {
        self.current(&record)?;
        if !self.keeper.absorbs(&record) {
            put_state(&self.store, &self.group, &record, state).await?;
        }
        self.input(Input::Checkpoint(record)).await
    }

    /// A member joins the group ([`LineKeeper::join`]) with its first
    /// checkpoint and the body's `state` then; one known already is left
    /// as it is.
    pub async fn join(&mut self, record: Record<P>, state: Bytes) -> Result<(), LineError> {
        if self.keeper.is_member(record.object) {
            return Ok(());
        }
        self.current(&record)?;
        put_state(&self.store, &self.group, &record, state).await?;
        self.input(Input::Join(record)).await?;
        Ok(())
    }

    /// Stores history entries of `object` (in order, after those before);
    /// the new committed line if it moved.
    pub async fn store_history(
        &mut self,
        object: ObjectId,
        epoch: Incarnation,
        entries: Vec<Entry>,
    ) -> Result<Option<u64>, LineError> {
        self.input(Input::History {
            object,
            epoch,
            entries,
        })
        .await
    }

    /// A member failed: the plan restarting every member from the best
    /// line, in a new epoch, with the body states to restart from; durable
    /// before it is returned (a restart of the FT server in the middle of
    /// a recovery finds the new epoch). `None` if the committed line is
    /// not recoverable (which the protocol excludes; nothing changes).
    pub async fn recover(&mut self) -> Result<Option<Recovery<P>>, LineError> {
        // Journaled first: replayed, it changes what it changed here (and
        // nothing when the line is not recoverable).
        let entry = postcard::to_allocvec(&Input::<P>::Recover).map_err(|e| self.encoding(e))?;
        self.store
            .append(&self.journal, self.incarnation(), entry)
            .await?;
        let Some(plan) = self.keeper.recover() else {
            return Ok(None);
        };
        self.collect().await?;
        let mut states = BTreeMap::new();
        for restart in &plan.restarts {
            let index = restart.record.lo;
            let state = self
                .store
                .checkpoint(
                    &body_key(&self.group, restart.object),
                    CheckpointIndex(index),
                )?
                .ok_or_else(|| LineError::MissingState {
                    group: self.group.clone(),
                    path: self.store.path().to_owned(),
                    object: restart.object,
                    index,
                })?;
            states.insert(restart.object, state.state);
        }
        Ok(Some(Recovery { plan, states }))
    }

    /// Refuses a checkpoint of another epoch than the group's.
    fn current(&self, record: &Record<P>) -> Result<(), LineError> {
        if record.epoch == self.keeper.epoch() {
            return Ok(());
        }
        Err(LineError::Stale {
            group: self.group.clone(),
            object: record.object,
            epoch: record.epoch,
            current: self.keeper.epoch(),
        })
    }

    /// Journals `input`, then gives it to the keeper; collects when the
    /// line moves.
    async fn input(&mut self, input: Input<P>) -> Result<Option<u64>, LineError> {
        let entry = postcard::to_allocvec(&input).map_err(|e| self.encoding(e))?;
        self.store
            .append(&self.journal, self.incarnation(), entry)
            .await?;
        let moved = apply(&mut self.keeper, input);
        if moved.is_some() {
            self.collect().await?;
        }
        Ok(moved)
    }

    /// A snapshot with the journal cut after it, then the body states no
    /// kept checkpoint stands for.
    async fn collect(&mut self) -> Result<(), LineError> {
        self.snapshot().await?;
        for (object, first, last) in self.keeper.kept_states().collect::<Vec<_>>() {
            let key = body_key(&self.group, object);
            (self.store)
                .keep_checkpoints(&key, CheckpointIndex(first), CheckpointIndex(last))
                .await?;
        }
        Ok(())
    }

    async fn snapshot(&mut self) -> Result<(), LineError> {
        let state = postcard::to_allocvec(&self.keeper).map_err(|e| self.encoding(e))?;
        let end = self.store.log_bounds(&self.journal)?.next;
        let checkpoint = store::Checkpoint {
            index: CheckpointIndex(self.next_snapshot),
            incarnation: self.incarnation(),
            state,
        };
        self.store
            .put_checkpoint(&self.journal, checkpoint, Some(end))
            .await?;
        self.next_snapshot += 1;
        Ok(())
    }

    /// The store's incarnation for the group's records: its epoch, so that
    /// a keeper fenced by a newer recovery writes nothing more.
    fn incarnation(&self) -> store::Incarnation {
        store::Incarnation(self.keeper.epoch().0)
    }

    fn encoding(&self, e: postcard::Error) -> LineError {
        LineError::Corrupt {
            group: self.group.clone(),
            path: self.store.path().to_owned(),
            what: "a record being written".into(),
            why: e.to_string(),
        }
    }
}

fn apply<P: Clone>(keeper: &mut LineKeeper<P>, input: Input<P>) -> Option<u64> {
    match input {
        Input::Checkpoint(record) => keeper.store_checkpoint(record),
        Input::History {
            object,
            epoch,
            entries,
        } => keeper.store_history(object, epoch, entries),
        Input::Recover => keeper.recover().map(|plan| plan.line),
        Input::Join(record) => {
            keeper.join(record);
            None
        }
    }
}

/// Stores the body state `record` stands for (kept until collected); a
/// state already there for that index and epoch (the same checkpoint sent
/// again) is kept.
async fn put_state<P>(
    store: &Store,
    group: &str,
    record: &Record<P>,
    state: Bytes,
) -> StoreResult<()> {
    let key = body_key(group, record.object);
    let index = CheckpointIndex(record.lo);
    if store
        .checkpoint(&key, index)?
        .is_some_and(|c| c.incarnation.0 == record.epoch.0)
    {
        return Ok(());
    }
    let checkpoint = store::Checkpoint {
        index,
        incarnation: store::Incarnation(record.epoch.0),
        state,
    };
    store.put_checkpoint_keeping_older(&key, checkpoint).await
}

fn journal_key(group: &str) -> ObjectKey {
    ObjectKey::new(format!("cic-line:{group}"))
}

fn body_key(group: &str, object: ObjectId) -> ObjectKey {
    ObjectKey::new(format!("cic-body:{group}:{:x}", object.0))
}
