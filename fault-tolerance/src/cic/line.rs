//! The FT server's side of CIC: the checkpoints and reception histories
//! made durable, the recovery line they allow, and the plan of a recovery.

use std::collections::BTreeMap;

use super::{At, Entry, EntryKind, Record};
use crate::pml::{Incarnation, ObjectId};

/// How one member restarts in a recovery.
#[derive(Debug, Clone, PartialEq)]
pub struct Restart<P> {
    /// The member.
    pub object: ObjectId,
    /// Its checkpoint covering the line (with the body's state the driver
    /// stored along).
    pub record: Record<P>,
    /// The requests it delivers first, in this order: (sender, seq).
    pub replay: Vec<(ObjectId, u64)>,
}

/// A recovery: every member restarts from the line, in a new epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<P> {
    /// The new epoch.
    pub epoch: Incarnation,
    /// The line restarted from.
    pub line: u64,
    /// One per member.
    pub restarts: Vec<Restart<P>>,
}

/// The checkpoints and histories of a group of members, as durable on the
/// FT server, and the recovery line they allow.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LineKeeper<P> {
    epoch: Incarnation,
    /// The committed line: recoverable, and never gone below.
    line: u64,
    /// By member, its checkpoints in index order.
    checkpoints: BTreeMap<ObjectId, Vec<Record<P>>>,
    /// By member, its history after place `base`.
    histories: BTreeMap<ObjectId, (At, Vec<Entry>)>,
    /// By member, the place the last recovery made it replay up to:
    /// until a checkpoint of its is past that place, every line needs the
    /// replay (other members' checkpoints may hold what it sent).
    owed: BTreeMap<ObjectId, At>,
}

impl<P: Clone> LineKeeper<P> {
    /// The group of `members`, each with its checkpoint 0 durable.
    pub fn new(members: impl IntoIterator<Item = Record<P>>) -> LineKeeper<P> {
        let mut checkpoints = BTreeMap::new();
        let mut histories = BTreeMap::new();
        for r in members {
            histories.insert(r.object, (At::default(), Vec::new()));
            checkpoints.insert(r.object, vec![r]);
        }
        LineKeeper {
            epoch: Incarnation::FIRST,
            line: 0,
            checkpoints,
            histories,
            owed: BTreeMap::new(),
        }
    }

    /// Starts the group in `epoch` (a group that replaces an earlier one of
    /// the same name, whose messages must not count).
    pub(crate) fn set_epoch(&mut self, epoch: Incarnation) {
        self.epoch = epoch;
        for list in self.checkpoints.values_mut() {
            for r in list {
                r.epoch = epoch;
            }
        }
    }

    /// The current epoch.
    pub fn epoch(&self) -> Incarnation {
        self.epoch
    }

    /// The committed recovery line.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Checkpoints and history entries kept (what garbage collection
    /// bounds).
    pub fn kept(&self) -> (usize, usize) {
        (
            self.checkpoints.values().map(Vec::len).sum(),
            self.histories.values().map(|(_, h)| h.len()).sum(),
        )
    }

    /// Whether `record` would only stretch the indices its member's last
    /// checkpoint stands for (nothing was delivered or consumed since): no
    /// new state to keep with it.
    pub fn absorbs(&self, record: &Record<P>) -> bool {
        record.epoch == self.epoch
            && (self.checkpoints.get(&record.object))
                .and_then(|list| list.last())
                .is_some_and(|last| last.hi < record.lo && absorbed(last, record))
    }

    /// Each member, with the lowest indices of its first and last
    /// checkpoints kept (the states of the others are not needed).
    pub fn kept_states(&self) -> impl Iterator<Item = (ObjectId, u64, u64)> + '_ {
        (self.checkpoints.iter())
            .filter_map(|(object, list)| Some((*object, list.first()?.lo, list.last()?.lo)))
    }

    /// A member joining the group now ([`super::Member::join`]), with its
    /// first checkpoint; one known already is left as it is.
    pub fn join(&mut self, record: Record<P>) {
        if record.epoch != self.epoch || self.checkpoints.contains_key(&record.object) {
            return;
        }
        self.histories
            .insert(record.object, (record.at(), Vec::new()));
        self.checkpoints.insert(record.object, vec![record]);
    }

    /// The oldest checkpoint kept of `member`: no recovery restarts it
    /// from before.
    pub fn first_kept(&self, member: ObjectId) -> Option<&Record<P>> {
        self.checkpoints.get(&member)?.first()
    }

    /// The members.
    pub fn members(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.checkpoints.keys().copied()
    }

    /// Whether `object` is a member.
    pub fn is_member(&self, object: ObjectId) -> bool {
        self.checkpoints.contains_key(&object)
    }

    /// What the other members' checkpoints of the committed line had
    /// received from `member`.
    pub fn received_from(&self, member: ObjectId) -> super::Received {
        let mut received = super::Received::default();
        for &other in self.checkpoints.keys().filter(|o| **o != member) {
            let Some(r) = self.covering(other, self.line) else {
                continue;
            };
            let s = &r.state;
            let delivered = s.delivered_from(member);
            if delivered > 0 {
                received.requests.insert(other, delivered);
            }
            if let Some(&last) = s.next_seq.get(&member) {
                let awaited = (s.awaiting.iter())
                    .filter(|id| id.target == member)
                    .map(|id| id.seq)
                    .collect();
                received.replies.insert(other, (last, awaited));
            }
        }
        received
    }

    /// A checkpoint was made durable; the new committed line if it moved.
    /// Those of another epoch (a member fenced by a recovery) are dropped.
    pub fn store_checkpoint(&mut self, record: Record<P>) -> Option<u64> {
        if record.epoch != self.epoch {
            return None;
        }
        let list = self.checkpoints.get_mut(&record.object)?;
        let last = list.last_mut()?;
        if last.hi >= record.lo {
            return None;
        }
        if absorbed(last, &record) {
            // Nothing delivered since: the same state stands for these
            // indices too (what it kept then is a superset of now).
            last.hi = record.hi;
        } else {
            list.push(record);
        }
        self.advance()
    }

    /// History entries of `object` were made durable (in order, after the
    /// earlier ones); the new committed line if it moved.
    pub fn store_history(
        &mut self,
        object: ObjectId,
        epoch: Incarnation,
        entries: Vec<Entry>,
    ) -> Option<u64> {
        if epoch != self.epoch {
            return None;
        }
        let (base, history) = self.histories.get_mut(&object)?;
        for e in entries {
            let last = last_at(*base, history);
            // A request entry opens the next position; the replies
            // consumed in its service follow it. Entries a replay makes
            // again are there already.
            let fits = match e.kind {
                EntryKind::Request(_) => e.at.position == last.position + 1 && e.at.sub == 0,
                EntryKind::Reply(_) => {
                    e.at.position == last.position && Some(e.at.sub) == last.sub.checked_add(1)
                }
            };
            if fits {
                history.push(e);
            }
        }
        self.advance()
    }

    /// The record of `object` standing for index `line`.
    fn covering(&self, object: ObjectId, line: u64) -> Option<&Record<P>> {
        self.checkpoints
            .get(&object)?
            .iter()
            .find(|r| r.lo <= line && line <= r.hi)
    }

    /// Where each member's history must be replayed from (its checkpoint's
    /// position) and up to, for line `line` to be a consistent state; or
    /// `None` when some checkpoint or history entry it needs is not
    /// durable.
    fn required(&self, line: u64) -> Option<BTreeMap<ObjectId, (At, At)>> {
        let mut need: BTreeMap<ObjectId, (At, At)> = BTreeMap::new();
        for &object in self.checkpoints.keys() {
            let r = self.covering(object, line)?;
            let mut upto = r.at();
            if let Some(owed) = self.owed.get(&object) {
                upto = upto.max(*owed);
            }
            need.insert(object, (r.at(), upto));
        }
        let raise = |need: &mut BTreeMap<ObjectId, (At, At)>, on: ObjectId, to: At| {
            if let Some(n) = need.get_mut(&on) {
                n.1 = n.1.max(to);
            }
        };
        // Roots: replies consumed before a checkpoint of the line, sent
        // after the replier's.
        for &object in self.checkpoints.keys() {
            let r = self.covering(object, line)?;
            for d in r.deps.iter().filter(|d| d.index >= line) {
                raise(&mut need, d.on, d.at);
            }
        }
        // What a member replays was delivered or consumed from members
        // that must replay up to where they sent it, in turn.
        let mut scanned: BTreeMap<ObjectId, At> =
            need.iter().map(|(o, (base, _))| (*o, *base)).collect();
        loop {
            let mut moved = false;
            let objects: Vec<ObjectId> = need.keys().copied().collect();
            for object in objects {
                let (from_base, upto) = need[&object];
                let from = scanned[&object];
                if upto <= from {
                    continue;
                }
                let (base, history) = self.histories.get(&object)?;
                if last_at(*base, history) < upto || *base > from_base {
                    return None;
                }
                let mut raised = Vec::new();
                for e in history.iter().filter(|e| e.at > from && e.at <= upto) {
                    if let Some((index, at)) = e.stamp
                        && index >= line
                    {
                        raised.push((e.sender, at));
                    }
                }
                for (on, to) in raised {
                    raise(&mut need, on, to);
                }
                scanned.insert(object, upto);
                moved = true;
            }
            if !moved {
                return Some(need);
            }
        }
    }

    /// The highest line, from the committed one up, that a recovery could
    /// restart from now.
    fn best_line(&self) -> u64 {
        let top = self
            .checkpoints
            .values()
            .map(|list| list.last().map_or(0, |r| r.hi))
            .min()
            .unwrap_or(0);
        (self.line + 1..=top)
            .rev()
            .find(|l| self.required(*l).is_some())
            .unwrap_or(self.line)
    }

    /// Commits the best line if higher, and forgets what is below it.
    fn advance(&mut self) -> Option<u64> {
        let best = self.best_line();
        if best <= self.line {
            return None;
        }
        self.line = best;
        self.collect();
        Some(best)
    }

    /// Drops the checkpoints below the line and the history before the
    /// line's checkpoints.
    fn collect(&mut self) {
        let line = self.line;
        for (object, list) in &mut self.checkpoints {
            list.retain(|r| r.hi >= line);
            let keep_from = list.first().map_or(At::default(), Record::at);
            if let Some((base, history)) = self.histories.get_mut(object) {
                let drop = history.iter().take_while(|e| e.at <= keep_from).count();
                // What the first checkpoint kept holds already goes.
                history.drain(..drop);
                *base = (*base).max(keep_from);
            }
        }
    }

    /// A member failed: every member restarts from the best line, in a new
    /// epoch. What lies beyond the line is forgotten, except the history
    /// the restart replays. `None` would mean the committed line is no
    /// longer recoverable, which the rules exclude (nothing changes then).
    pub fn recover(&mut self) -> Option<Plan<P>> {
        // The committed line is recoverable by construction (what it needs
        // is durable and kept), and so is any better one found.
        let line = self.best_line();
        let need = self.required(line)?;
        self.epoch = self.epoch.next();
        self.line = line;
        let mut restarts = Vec::new();
        for (object, list) in &mut self.checkpoints {
            list.retain(|r| r.lo <= line);
            let Some(last) = list.last_mut() else {
                continue;
            };
            last.hi = line;
            let (from, upto) = need.get(object).copied().unwrap_or((last.at(), last.at()));
            self.owed.insert(*object, upto);
            let mut replay = Vec::new();
            if let Some((_, history)) = self.histories.get_mut(object) {
                history.retain(|e| e.at <= upto);
                replay = history
                    .iter()
                    .filter(|e| e.at.position > from.position)
                    .filter_map(|e| match e.kind {
                        EntryKind::Request(seq) => Some((e.sender, seq)),
                        EntryKind::Reply(_) => None,
                    })
                    .collect();
            }
            restarts.push(Restart {
                object: *object,
                record: last.clone(),
                replay,
            });
        }
        self.collect();
        Some(Plan {
            epoch: self.epoch,
            line,
            restarts,
        })
    }
}

/// Whether `record` stands for the same state as `last`, its member's
/// previous checkpoint.
fn absorbed<P>(last: &Record<P>, record: &Record<P>) -> bool {
    record.unchanged && record.deps.is_empty() && last.at() == record.at()
}

/// The place of the last entry of a history kept after `base`.
fn last_at(base: At, history: &[Entry]) -> At {
    history.last().map_or(base, |e| e.at)
}
