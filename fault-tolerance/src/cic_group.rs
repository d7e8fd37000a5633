//! The FT server's side of CIC on real runtimes: the deployment's group
//! of CIC members, its recovery line durable in the FT store
//! ([`DurableLine`]), and what each member learns from it.
//!
//! A member joins at its first request, with the state it was created
//! in, at the group's current line ([`Member::join`]); it then hands its
//! checkpoints and reception histories over in batches, off the call path
//! ([`crate::cic_node`]), and each batch is answered with the committed
//! line and what the other members' checkpoints of that line took from it
//! ([`Committed`]): the wire carries no acknowledgements of its own.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::cic::{DurableLine, Entry, Incarnation, LineError, Member, ObjectId, Received, Record};
use crate::store::Store;

/// The name of the deployment's group in the store.
pub const GROUP: &str = "cic";

/// What a member hands over, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CicWrite {
    /// A checkpoint: its record, and the body's state (an encoded
    /// [`actogrid_runtime::intercept::Checkpoint`]).
    Checkpoint {
        /// The protocol's part.
        record: Record<Vec<u8>>,
        /// The body's.
        state: Vec<u8>,
    },
    /// A member holds a reply produced below this index: the group wants
    /// a line there (every member checkpoints up to it soon).
    Want(u64),
    /// Reception-history entries, after those before.
    History {
        /// The member's epoch when it recorded them.
        epoch: Incarnation,
        /// The entries.
        entries: Vec<Entry>,
    },
}

/// The group as a member's batch leaves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The group's epoch.
    pub epoch: u64,
    /// The committed recovery line.
    pub line: u64,
    /// What the line's checkpoints took from the member.
    pub received: Received,
    /// The members, when they changed since the version the node said it
    /// had seen.
    pub members: Option<Vec<u64>>,
    /// The version of the member list.
    pub version: u64,
    /// The line some member waits for (see [`CicWrite::Want`]).
    pub wanted: u64,
}

/// The group on the FT server.
#[derive(Debug)]
pub struct CicGroup {
    store: Store,
    line: tokio::sync::Mutex<Option<DurableLine<Vec<u8>>>>,
    /// Bumped when a member joins.
    version: AtomicU64,
    checkpoints: AtomicU64,
    spanning: AtomicU64,
    entries: AtomicU64,
    wanted: AtomicU64,
}

/// How the group stands, and what it took so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CicStats {
    /// Its epoch.
    pub epoch: u64,
    /// The committed line.
    pub line: u64,
    /// Its members.
    pub members: usize,
    /// Checkpoints stored.
    pub checkpoints: u64,
    /// Of those, the ones standing for several indices (forced by a
    /// message from ahead, over a jump).
    pub spanning: u64,
    /// Reception-history entries stored.
    pub entries: u64,
    /// Checkpoints and history entries kept now (what the line's
    /// collection bounds).
    pub kept: (usize, usize),
}

fn failed(e: LineError) -> String {
    e.to_string()
}

impl CicGroup {
    /// The group kept in `store` (opened at its first use).
    pub fn new(store: Store) -> CicGroup {
        CicGroup {
            store,
            line: tokio::sync::Mutex::new(None),
            version: AtomicU64::new(1),
            checkpoints: AtomicU64::new(0),
            spanning: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
        }
    }

    /// How the group stands.
    pub async fn stats(&self) -> CicStats {
        let guard = self.line.lock().await;
        let (epoch, line, members, kept) = match guard.as_ref() {
            Some(l) => {
                let k = l.keeper();
                (k.epoch().0, k.line(), k.members().count(), k.kept())
            }
            None => (0, 0, 0, (0, 0)),
        };
        CicStats {
            epoch,
            line,
            members,
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            spanning: self.spanning.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            kept,
        }
    }

    /// `object` joins with `state`, the body's state before its first
    /// request; where the group stands. A group left in the store by an
    /// earlier server is taken up when `object` is one of its members,
    /// and started anew otherwise (a new deployment).
    pub async fn join(&self, object: u64, state: Vec<u8>) -> Result<Committed, String> {
        let me = ObjectId(object);
        let mut guard = self.line.lock().await;
        if guard.is_none() {
            let found = DurableLine::open(&self.store, GROUP)
                .await
                .map_err(failed)?;
            *guard = found.filter(|l| l.keeper().is_member(me));
        }
        match guard.as_mut() {
            Some(line) => {
                let keeper = line.keeper();
                let record = Member::<Vec<u8>>::joining_record(me, keeper.epoch(), keeper.line());
                if !keeper.is_member(me) {
                    line.join(record, state).await.map_err(failed)?;
                    self.version.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                let record = Member::<Vec<u8>>::initial_record(me);
                let line = DurableLine::create(&self.store, GROUP, vec![(record, state)])
                    .await
                    .map_err(failed)?;
                *guard = Some(line);
                self.version.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(self.committed(guard.as_ref(), me, 0))
    }

    /// Carries out `writes` of `object`, in order; where the group stands
    /// then. `seen` is the version of the member list the node has.
    pub async fn store(
        &self,
        object: u64,
        writes: Vec<CicWrite>,
        seen: u64,
    ) -> Result<Committed, String> {
        let me = ObjectId(object);
        let mut guard = self.line.lock().await;
        let line = guard
            .as_mut()
            .ok_or_else(|| format!("{me} is not a member of the CIC group: it never joined"))?;
        for write in writes {
            match write {
                CicWrite::Checkpoint { record, state } => {
                    if record.object != me {
                        return Err(format!("{me} sent a checkpoint of {}", record.object));
                    }
                    if state.is_empty() && !line.keeper().absorbs(&record) {
                        return Err(format!(
                            "{me} sent checkpoint {}..={} without its state, and it is not the same as its last one",
                            record.lo, record.hi
                        ));
                    }
                    self.checkpoints.fetch_add(1, Ordering::Relaxed);
                    if record.hi > record.lo {
                        self.spanning.fetch_add(1, Ordering::Relaxed);
                    }
                    line.store_checkpoint(record, state).await.map_err(failed)?;
                }
                CicWrite::Want(index) => {
                    self.wanted.fetch_max(index, Ordering::Relaxed);
                }
                CicWrite::History { epoch, entries } => {
                    self.entries
                        .fetch_add(entries.len() as u64, Ordering::Relaxed);
                    line.store_history(me, epoch, entries)
                        .await
                        .map_err(failed)?;
                }
            }
        }
        Ok(self.committed(guard.as_ref(), me, seen))
    }

    fn committed(&self, line: Option<&DurableLine<Vec<u8>>>, me: ObjectId, seen: u64) -> Committed {
        let Some(line) = line else {
            return Committed::default();
        };
        let keeper = line.keeper();
        let version = self.version.load(Ordering::Relaxed);
        Committed {
            epoch: keeper.epoch().0,
            line: keeper.line(),
            received: keeper.received_from(me),
            members: (seen != version).then(|| keeper.members().map(|o| o.0).collect()),
            version,
            wanted: self.wanted.load(Ordering::Relaxed),
        }
    }
}
