//! One protected object under CIC: its checkpoint index, what it sent and
//! must keep, the order it delivered requests in, and the checkpoints it
//! must take.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Ack, At, Dep, Entry, EntryKind, Received, Record, Reply, Request, Stamp, State};
use crate::pml::{Incarnation, ObjectId, RequestId, Time};

/// How a member behaves.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Time to checkpoint: a checkpoint at the first request boundary once
    /// this long has passed since the last (milliseconds).
    pub ttc: u64,
    /// What was sent and is not acknowledged is sent again this often
    /// (milliseconds).
    pub resend_after: u64,
    /// Requests of one sender held ahead of a missing one, at most; later
    /// ones are dropped (their sender sends them again).
    pub max_ahead: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            ttc: 1_000,
            resend_after: 200,
            max_ahead: 1024,
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<P> {
    /// Capture the body's state now (it is at a request boundary) and
    /// store it with `record` on the FT server, after what was handed to it
    /// before.
    Checkpoint(Record<P>),
    /// Hand these reception-history entries to the FT server, after what
    /// was handed to it before.
    History(Vec<Entry>),
    /// Serve this request (the body is at a boundary).
    Deliver(Request<P>),
    /// Resolve the future of this call of the body's.
    Resolve(Reply<P>),
    /// Send a request (to `id.target`).
    SendRequest(Request<P>),
    /// Send a reply (to the request's sender, `id.sender`).
    SendReply(Reply<P>),
    /// Send an acknowledgement to `to`.
    SendAck {
        /// Who gets it.
        to: ObjectId,
        /// It.
        ack: Ack,
    },
}

/// A message kept until the recovery line passes its reception.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Retained<P> {
    pub(super) sent: Sent<P>,
    /// The receiver's checkpoint index when it delivered (a request) or
    /// consumed (a reply) it, once it said so.
    pub(super) received_at: Option<u64>,
    /// When it was last sent.
    pub(super) last_sent: Time,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) enum Sent<P> {
    Request(Request<P>),
    Reply(Reply<P>),
}

impl<P> Sent<P> {
    fn id(&self) -> RequestId {
        match self {
            Sent::Request(r) => r.id,
            Sent::Reply(r) => r.id,
        }
    }

    fn is_reply(&self) -> bool {
        matches!(self, Sent::Reply(_))
    }
}

/// The CIC core of one protected object (see the module's rules).
#[derive(Debug)]
pub struct Member<P> {
    me: ObjectId,
    config: Config,
    epoch: Incarnation,
    /// The checkpoint index: checkpoints taken so far, counting the
    /// indices a forced checkpoint stands for.
    index: u64,
    /// The index the next checkpoint must reach at least (raised by
    /// replies from ahead, consumed in the middle of a service).
    next_max: u64,
    /// Requests delivered since creation (the position of the latest in
    /// the reception history).
    delivered: u64,
    /// Replies consumed in the current service.
    consumed: u64,
    last_checkpoint: Time,
    /// Something was delivered or consumed since the last checkpoint.
    changed: bool,
    /// Replies from ahead consumed since the last checkpoint.
    deps: Vec<Dep>,
    next_seq: BTreeMap<ObjectId, u64>,
    delivered_seq: BTreeMap<ObjectId, u64>,
    /// Received and not delivered yet, with the order of arrival.
    pending: Vec<(u64, Request<P>)>,
    arrivals: u64,
    /// Deliveries a recovery replays, in their original order.
    replay: VecDeque<(ObjectId, u64)>,
    /// The request being served, and whether it came from outside.
    serving: Option<(RequestId, bool)>,
    /// Calls of the body's not answered yet (futures may outlive the
    /// service that made them: they are part of its checkpoints).
    awaiting: BTreeSet<RequestId>,
    retained: Vec<Retained<P>>,
    /// Replies to callers outside the group, held until the recovery line
    /// passes the index they were produced at.
    held: Vec<(Reply<P>, u64)>,
    /// The committed recovery line, as last heard.
    line: u64,
    history: Vec<Entry>,
    actions: VecDeque<Action<P>>,
}

impl<P: Clone> Member<P> {
    /// A new member, whose checkpoint 0 (its initial state) is durable.
    pub fn new(me: ObjectId, config: Config, now: Time) -> Member<P> {
        Member {
            me,
            config,
            epoch: Incarnation::FIRST,
            index: 0,
            next_max: 0,
            delivered: 0,
            consumed: 0,
            last_checkpoint: now,
            changed: false,
            deps: Vec::new(),
            next_seq: BTreeMap::new(),
            delivered_seq: BTreeMap::new(),
            pending: Vec::new(),
            arrivals: 0,
            replay: VecDeque::new(),
            serving: None,
            awaiting: BTreeSet::new(),
            retained: Vec::new(),
            held: Vec::new(),
            line: 0,
            history: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    /// The checkpoint 0 of a new member (nothing delivered, nothing sent).
    pub fn initial_record(me: ObjectId) -> Record<P> {
        Record {
            object: me,
            epoch: Incarnation::FIRST,
            lo: 0,
            hi: 0,
            delivered: 0,
            consumed: 0,
            deps: Vec::new(),
            unchanged: false,
            state: State::default(),
        }
    }

    /// A member joining a running group whose committed line is `line`, in
    /// `epoch`: its initial state (nothing delivered, nothing sent) stands
    /// for every index up to the line ([`Member::joining_record`]), so it
    /// holds no line back.
    pub fn join(
        me: ObjectId,
        config: Config,
        now: Time,
        epoch: Incarnation,
        line: u64,
    ) -> Member<P> {
        let mut m = Member::new(me, config, now);
        m.epoch = epoch;
        m.index = line;
        m.next_max = line;
        m.line = line;
        m
    }

    /// The checkpoint a member joining at `line` in `epoch` starts with.
    pub fn joining_record(me: ObjectId, epoch: Incarnation, line: u64) -> Record<P> {
        Record {
            epoch,
            hi: line,
            ..Member::initial_record(me)
        }
    }

    /// The member restarted by a recovery to line `line`, in `epoch`, from
    /// `record` (its checkpoint covering `line`), replaying `replay`
    /// first. Everything it kept is sent again.
    pub fn restart(
        me: ObjectId,
        config: Config,
        now: Time,
        record: &Record<P>,
        epoch: Incarnation,
        line: u64,
        replay: Vec<(ObjectId, u64)>,
    ) -> Member<P> {
        let mut m = Member::new(me, config, now);
        let s = &record.state;
        m.epoch = epoch;
        m.index = line;
        m.next_max = line;
        m.line = line;
        m.delivered = record.delivered;
        m.consumed = record.consumed;
        m.next_seq = s.next_seq.clone();
        m.delivered_seq = s.delivered_seq.clone();
        m.awaiting = s.awaiting.clone();
        m.replay = replay.into();
        // Who received what is forgotten with the rollback: all again.
        m.retained = s
            .retained
            .iter()
            .map(|r| Retained {
                sent: restamp(&r.sent, epoch),
                received_at: None,
                last_sent: now,
            })
            .collect();
        for r in &m.retained {
            m.actions.push_back(match &r.sent {
                Sent::Request(q) => Action::SendRequest(q.clone()),
                Sent::Reply(p) => Action::SendReply(p.clone()),
            });
        }
        m.held = s.held.clone();
        m.release(now);
        m.pump(now);
        m
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// Its current epoch.
    pub fn epoch(&self) -> Incarnation {
        self.epoch
    }

    /// Its checkpoint index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Whether it serves a request now.
    pub fn is_serving(&self) -> bool {
        self.serving.is_some()
    }

    /// Deliveries of a recovery still to replay.
    pub fn replaying(&self) -> usize {
        self.replay.len()
    }

    /// Messages kept for a possible rollback.
    pub fn retained(&self) -> usize {
        self.retained.len()
    }

    /// The committed line, as last heard.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// What its messages carry now.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            epoch: self.epoch,
            index: self.index,
            delivered: self.delivered,
            consumed: self.consumed,
        }
    }

    /// Whether a message stamped `stamp` belongs to this epoch (messages
    /// of outside callers have none and always do).
    fn current(&self, stamp: Option<Stamp>) -> bool {
        stamp.is_none_or(|s| s.epoch == self.epoch)
    }

    /// For a transport that delivers each sender's requests in order
    /// itself and may skip numbers (requests it dropped, or served before
    /// the member joined): the requests of `sender` up to `seq` are taken
    /// as delivered, so that its request `seq + 1` is the next.
    pub fn delivered_up_to(&mut self, sender: ObjectId, seq: u64) {
        let d = self.delivered_seq.entry(sender).or_insert(0);
        *d = (*d).max(seq);
    }

    /// A request arrived.
    pub fn on_request(&mut self, now: Time, request: Request<P>) {
        if !self.current(request.from) {
            // A stale sender, or one ahead of this member's restart: the
            // sender sends it again once both are in the same epoch.
            return;
        }
        let id = request.id;
        if id.seq <= self.delivered_seq.get(&id.sender).copied().unwrap_or(0) {
            // Delivered already: its sender may forget it once the line
            // passes, the reply (if lost) comes again from here.
            if request.from.is_some() {
                self.ack(id.sender, id, false);
            }
            return;
        }
        if self.pending.iter().any(|(_, r)| r.id == id) {
            return;
        }
        let ahead = self
            .pending
            .iter()
            .filter(|(_, r)| r.id.sender == id.sender)
            .count();
        if ahead >= self.config.max_ahead {
            return;
        }
        self.arrivals += 1;
        self.pending.push((self.arrivals, request));
        self.pump(now);
    }

    /// A reply to a call of the body's arrived.
    pub fn on_reply(&mut self, now: Time, reply: Reply<P>) {
        if !self.current(reply.from) {
            return;
        }
        let id = reply.id;
        if reply.from.is_none() {
            // From an object outside the group, which does not roll back:
            // a replay makes the same call again and that object answers
            // it again from what it kept.
            self.retained
                .retain(|r| r.sent.id() != id || r.sent.is_reply());
        }
        if !self.awaiting.remove(&id) {
            // Consumed already (or from before a rollback): acknowledged
            // so that its sender stops sending it.
            if reply.from.is_some() {
                self.ack(id.target, id, true);
            }
            return;
        }
        if let Some(s) = reply.from {
            if s.index > self.index {
                // From beyond this member's checkpoint: its next checkpoint
                // reaches that index, and depends on the replier's history
                // up to the service that sent it.
                self.deps.push(Dep {
                    on: id.target,
                    index: s.index,
                    at: s.at(),
                });
                self.next_max = self.next_max.max(s.index);
            }
            self.ack(id.target, id, true);
        }
        self.consumed += 1;
        self.history.push(Entry {
            at: At {
                position: self.delivered,
                sub: self.consumed,
            },
            kind: EntryKind::Reply(id.seq),
            sender: id.target,
            stamp: reply.from.map(|s| (s.index, s.at())),
        });
        self.changed = true;
        self.actions.push_back(Action::Resolve(reply));
        // Between two services (a future kept across them): a boundary.
        if self.serving.is_none() {
            self.pump(now);
        }
    }

    /// An acknowledgement of something this member sent.
    pub fn on_ack(&mut self, now: Time, ack: Ack) {
        if ack.epoch.is_some_and(|e| e != self.epoch) {
            return;
        }
        let outside = ack.epoch.is_none();
        if let Some(i) = self
            .retained
            .iter()
            .position(|r| r.sent.id() == ack.id && r.sent.is_reply() == ack.reply)
        {
            if outside {
                // A caller outside the group does not roll back: once it
                // has the reply, nothing needs it again.
                self.retained.remove(i);
            } else {
                let r = &mut self.retained[i];
                r.received_at = Some(r.received_at.map_or(ack.index, |a| a.max(ack.index)));
                self.collect();
            }
        }
        let _ = now;
    }

    /// The FT server committed recovery line `line` of `epoch`.
    pub fn line_advanced(&mut self, now: Time, epoch: Incarnation, line: u64) {
        if epoch != self.epoch || line <= self.line {
            return;
        }
        self.line = line;
        self.collect();
        self.release(now);
    }

    /// The body, serving a request, calls `target`: the request's id.
    pub fn call(&mut self, now: Time, target: ObjectId, payload: P) -> RequestId {
        let seq = self.next_seq.get(&target).copied().unwrap_or(0) + 1;
        self.call_numbered(now, target, seq, payload)
    }

    /// As [`Member::call`], for a transport that numbers the requests to
    /// each target itself: `seq` is the number it gave this one (the same
    /// as `call` would, unless it took a number back after a send that
    /// failed, which this one replaces).
    pub fn call_numbered(
        &mut self,
        now: Time,
        target: ObjectId,
        seq: u64,
        payload: P,
    ) -> RequestId {
        self.send_numbered(now, target, seq, payload, true)
    }

    /// As [`Member::call_numbered`]; a one-way request (`awaited`
    /// false) gets no reply, so none is awaited (it is kept until the line
    /// says its target took it).
    pub fn send_numbered(
        &mut self,
        now: Time,
        target: ObjectId,
        seq: u64,
        payload: P,
        awaited: bool,
    ) -> RequestId {
        let reused = self
            .next_seq
            .insert(target, seq)
            .is_some_and(|last| seq <= last);
        let id = RequestId {
            target,
            sender: self.me,
            seq,
        };
        if reused {
            // A number the transport took back from a send that failed.
            self.retained
                .retain(|r| r.sent.id() != id || r.sent.is_reply());
            self.awaiting.remove(&id);
        }
        let request = Request {
            id,
            from: Some(self.stamp()),
            payload,
        };
        self.retained.push(Retained {
            sent: Sent::Request(request.clone()),
            received_at: None,
            last_sent: now,
        });
        if awaited {
            self.awaiting.insert(id);
        }
        self.actions.push_back(Action::SendRequest(request));
        id
    }

    /// The reply this member keeps for request `id`, to answer it again
    /// (its caller sent it again).
    pub fn kept_reply(&self, id: RequestId) -> Option<&Reply<P>> {
        self.retained.iter().find_map(|r| match &r.sent {
            Sent::Reply(p) if p.id == id => Some(p),
            _ => None,
        })
    }

    /// Whether it waits for the committed line to pass before replying
    /// to request `id` (a caller outside the group: output commit).
    pub fn holds(&self, id: RequestId) -> bool {
        self.held.iter().any(|(r, _)| r.id == id)
    }

    /// The committed line `line` of `epoch`, with what the other members'
    /// checkpoints of that line had received from this one (see
    /// [`Received`]): what they took before the line is forgotten, as
    /// acknowledged below it; and what was sent to an object that is not
    /// a member (`is_member` says), which does not roll back, goes too.
    pub fn line_committed(
        &mut self,
        now: Time,
        epoch: Incarnation,
        line: u64,
        received: &Received,
        is_member: impl Fn(ObjectId) -> bool,
    ) {
        if epoch != self.epoch {
            return;
        }
        if line > 0 {
            for r in &mut self.retained {
                let taken = match &r.sent {
                    Sent::Request(q) => {
                        !is_member(q.id.target) || received.delivered(q.id.target) >= q.id.seq
                    }
                    Sent::Reply(p) => !is_member(p.id.sender) || received.consumed(p.id),
                };
                if taken {
                    r.received_at = Some(r.received_at.map_or(line - 1, |a| a.min(line - 1)));
                }
            }
        }
        self.line_advanced(now, epoch, line);
        self.collect();
    }

    /// The body answers the request it serves.
    pub fn reply(&mut self, now: Time, payload: P) {
        let Some((id, outside)) = self.serving else {
            return;
        };
        let reply = Reply {
            id,
            from: Some(self.stamp()),
            payload,
        };
        if outside {
            // Output commit: it leaves once no rollback can undo the
            // service that produced it.
            self.held.push((reply, self.index));
            self.release(now);
        } else {
            self.retained.push(Retained {
                sent: Sent::Reply(reply.clone()),
                received_at: None,
                last_sent: now,
            });
            self.actions.push_back(Action::SendReply(reply));
        }
    }

    /// The group wants a line at `index` (a member holds a reply produced
    /// below it): the next checkpoint reaches it — at once when the member
    /// is between services and nothing changed since its last checkpoint
    /// (the same state stands for it), else at its next boundary.
    pub fn want(&mut self, now: Time, index: u64) {
        if index <= self.index {
            return;
        }
        self.next_max = self.next_max.max(index);
        if self.serving.is_none() && !self.changed {
            self.checkpoint(now, self.next_max);
        }
    }

    /// The body finished serving its request: a request boundary.
    pub fn service_done(&mut self, now: Time) {
        self.serving = None;
        self.pump(now);
    }

    /// Time passed: sends again what is not acknowledged, hands the
    /// history over, checkpoints an idle member every TTC.
    pub fn tick(&mut self, now: Time) {
        let every = self.config.resend_after;
        for r in &mut self.retained {
            if r.received_at.is_none() && now.0 >= r.last_sent.0 + every {
                r.last_sent = now;
                self.actions.push_back(match &r.sent {
                    Sent::Request(q) => Action::SendRequest(q.clone()),
                    Sent::Reply(p) => Action::SendReply(p.clone()),
                });
            }
        }
        self.flush_history();
        self.pump(now);
    }

    fn ack(&mut self, to: ObjectId, id: RequestId, reply: bool) {
        self.actions.push_back(Action::SendAck {
            to,
            ack: Ack {
                id,
                reply,
                epoch: Some(self.epoch),
                index: self.index,
            },
        });
    }

    fn flush_history(&mut self) {
        if !self.history.is_empty() {
            self.actions
                .push_back(Action::History(std::mem::take(&mut self.history)));
        }
    }

    /// Forgets what the line has passed.
    fn collect(&mut self) {
        let line = self.line;
        self.retained
            .retain(|r| r.received_at.is_none_or(|at| at + 1 > line));
    }

    /// Sends the held replies the line has passed.
    fn release(&mut self, now: Time) {
        let line = self.line;
        let (go, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(_, index)| *index < line);
        self.held = stay;
        for (reply, _) in go {
            self.retained.push(Retained {
                sent: Sent::Reply(reply.clone()),
                received_at: None,
                last_sent: now,
            });
            self.actions.push_back(Action::SendReply(reply));
        }
    }

    /// At a request boundary: the checkpoints due, then the next request.
    fn pump(&mut self, now: Time) {
        if self.serving.is_some() {
            return;
        }
        if self.next_max > self.index {
            self.checkpoint(now, self.next_max);
        } else if now.0 >= self.last_checkpoint.0 + self.config.ttc {
            self.checkpoint(now, self.index + 1);
        }
        let next = match self.replay.front() {
            Some(&(sender, seq)) => self
                .pending
                .iter()
                .position(|(_, r)| r.id.sender == sender && r.id.seq == seq),
            None => self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, (_, r))| {
                    r.id.seq == self.delivered_seq.get(&r.id.sender).copied().unwrap_or(0) + 1
                })
                .min_by_key(|(_, (arrival, _))| *arrival)
                .map(|(i, _)| i),
        };
        let Some(i) = next else { return };
        let (_, request) = self.pending.remove(i);
        if self.replay.pop_front().is_some() {
            // Replayed in its original order; the sender's order holds by
            // construction.
        }
        if let Some(s) = request.from
            && s.index > self.index
        {
            // Sent after the sender's checkpoint `s.index`: delivered only
            // after this member's own, so no checkpoint of the same index
            // can hold its delivery but not its sending.
            self.checkpoint(now, s.index);
        }
        let id = request.id;
        self.delivered += 1;
        self.consumed = 0;
        self.delivered_seq.insert(id.sender, id.seq);
        self.changed = true;
        self.history.push(Entry {
            at: At {
                position: self.delivered,
                sub: 0,
            },
            kind: EntryKind::Request(id.seq),
            sender: id.sender,
            stamp: request.from.map(|s| (s.index, s.at())),
        });
        if request.from.is_some() {
            self.ack(id.sender, id, false);
        }
        self.serving = Some((id, request.from.is_none()));
        self.actions.push_back(Action::Deliver(request));
    }

    /// Takes a checkpoint reaching index `to` (one record for every index
    /// it jumps over: the same state).
    fn checkpoint(&mut self, now: Time, to: u64) {
        let lo = self.index + 1;
        let hi = to.max(lo);
        self.index = hi;
        self.next_max = self.next_max.max(hi);
        self.last_checkpoint = now;
        self.flush_history();
        let record = Record {
            object: self.me,
            epoch: self.epoch,
            lo,
            hi,
            delivered: self.delivered,
            consumed: self.consumed,
            deps: std::mem::take(&mut self.deps),
            unchanged: !self.changed,
            state: State {
                next_seq: self.next_seq.clone(),
                delivered_seq: self.delivered_seq.clone(),
                awaiting: self.awaiting.clone(),
                retained: self.retained.clone(),
                held: self.held.clone(),
            },
        };
        self.changed = false;
        self.actions.push_back(Action::Checkpoint(record));
    }
}

/// `sent` as sent again in `epoch`: the same message, stamped with the
/// new epoch (its index and delivery number are those it was sent with).
fn restamp<P: Clone>(sent: &Sent<P>, epoch: Incarnation) -> Sent<P> {
    let stamp = |s: Option<Stamp>| s.map(|s| Stamp { epoch, ..s });
    match sent {
        Sent::Request(r) => Sent::Request(Request {
            from: stamp(r.from),
            ..r.clone()
        }),
        Sent::Reply(r) => Sent::Reply(Reply {
            from: stamp(r.from),
            ..r.clone()
        }),
    }
}
