//! The protocol core of one protected object. See the [module
//! docs](super) for the model and the rules; this file is their
//! implementation.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::error::{Error, Result};
use super::ids::{Incarnation, LogPosition, ObjectId, RequestId, Time};
use super::message::{Message, Reply, Request};
use super::outbox::{Offer, Outbox, OutboxState};

/// Settings of a protected object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Time to checkpoint: a checkpoint is taken at the first request
    /// boundary once this long has passed since the last one (and only if
    /// something was delivered since). It bounds the log, hence the replay
    /// after a failure.
    pub ttc: Duration,
    /// A request this object sent is resent when its reply has not come
    /// after this long.
    pub resend_after: Duration,
    /// Requests of one sender that arrived ahead of a missing one are held
    /// (not logged) up to this many; more are dropped and come again with
    /// the sender's resend.
    pub max_ahead: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttc: Duration::from_secs(30),
            resend_after: Duration::from_secs(5),
            max_ahead: 256,
        }
    }
}

/// What the core asks of its driver. Drain with [`Protected::poll_action`]
/// after every call, and carry the actions out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<P> {
    /// Append `message` to this object's log at `position`, then call
    /// [`Protected::log_durable`] once it is durable. Appends are made, and
    /// acknowledged, in position order.
    Append {
        /// Where it goes.
        position: LogPosition,
        /// What to log.
        message: Message<P>,
    },
    /// Hand this message to the body; its log entry is durable. A request:
    /// serve it, and call [`Protected::step_done`] when its service ends. A
    /// reply: resolve the future of the call it answers — at once, even in
    /// the middle of a service (a body awaits replies inside its requests);
    /// it is not a step.
    Deliver(Message<P>),
    /// Hand this logged message to the restored body again, as
    /// [`Action::Deliver`]: recovery replays the log in its original order.
    Replay(Message<P>),
    /// Send a request the body made to `request.id.target`.
    Send(Request<P>),
    /// Send a retained request again (unanswered too long, or its target
    /// restarted): to wherever its target lives now.
    Resend(Request<P>),
    /// Send the body's reply to `reply.request.sender`.
    Reply(Reply<P>),
    /// A request arrived again after it was answered: send the original
    /// reply to `reply.request.sender` again. The request is not served
    /// again.
    AnswerDuplicate(Reply<P>),
    /// Take a checkpoint now, at this request boundary: capture the body's
    /// state before handing it anything else, and store it with `protocol`
    /// atomically; then call [`Protected::checkpoint_durable`] with
    /// `protocol.position()`.
    Checkpoint {
        /// The protocol's part of the checkpoint, to store with the body's
        /// state and to give back to [`Protected::recover`].
        protocol: Snapshot<P>,
    },
    /// A checkpoint at `before` is durable: log entries below it are not
    /// needed any more.
    Truncate {
        /// The first position to keep.
        before: LogPosition,
    },
    /// A newer incarnation of this object exists: stop the body and drop
    /// its state, unsaved. The core ignores everything from now on.
    Stop,
}

/// The protocol's part of a checkpoint: what the object knows about its
/// senders and its own calls as of one request boundary. Opaque; stored with
/// the body's state and given back on recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot<P> {
    position: LogPosition,
    inbound: BTreeMap<ObjectId, Served<P>>,
    outbound: OutboxState<P>,
}

impl<P> Snapshot<P> {
    /// The first log position the checkpoint does not cover: recovery
    /// replays the log from here.
    pub fn position(&self) -> LogPosition {
        self.position
    }
}

/// What an object delivered of one sender's requests. Part of checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Served<P> {
    /// The next sequence number to deliver.
    next: u64,
    /// The sender has the replies of its requests up to this number.
    acked: u64,
    /// Replies of delivered requests above `acked`, `None` while the body
    /// has not answered (it may answer in a later step).
    replies: BTreeMap<u64, Option<P>>,
}

impl<P> Default for Served<P> {
    fn default() -> Self {
        Served {
            next: 1,
            acked: 0,
            replies: BTreeMap::new(),
        }
    }
}

/// One sender as seen by a protected object.
#[derive(Clone, Debug)]
struct Inbound<P> {
    /// The next sequence number to log (volatile: rebuilt from the log).
    logged_next: u64,
    /// Requests that arrived before a missing one (volatile).
    ahead: BTreeMap<u64, Request<P>>,
    /// As of the last delivery.
    served: Served<P>,
}

impl<P> Inbound<P> {
    fn new(served: Served<P>) -> Self {
        Inbound {
            logged_next: served.next,
            ahead: BTreeMap::new(),
            served,
        }
    }

    /// The sender has the replies up to `acked`: forget them.
    fn acked(&mut self, acked: u64) {
        if acked > self.served.acked {
            self.served.acked = acked;
            let kept = acked.saturating_add(1);
            self.served.replies = self.served.replies.split_off(&kept);
            self.ahead = self.ahead.split_off(&kept);
        }
    }
}

/// What happened to the messages an object received, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages logged (requests and replies).
    pub logged: u64,
    /// Messages delivered for the first time.
    pub delivered: u64,
    /// Messages replayed after a recovery.
    pub replayed: u64,
    /// Requests answered again with their original reply.
    pub duplicates_answered: u64,
    /// Duplicates dropped: already settled at the sender, or logged and not
    /// answered yet (the reply comes when the body gives it).
    pub duplicates_dropped: u64,
    /// Messages dropped because their sender's incarnation was fenced.
    pub stale_dropped: u64,
    /// Requests dropped because too many were held ahead of a missing one.
    pub ahead_dropped: u64,
    /// Requests resent.
    pub resent: u64,
    /// Checkpoints asked for.
    pub checkpoints: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Created; the forced first checkpoint is not durable yet: messages
    /// are logged, nothing is delivered.
    Starting,
    Running,
    /// Fenced: a newer incarnation runs.
    Stopped,
}

/// The pessimistic-message-logging core of one protected object, in one
/// incarnation. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct Protected<P> {
    id: ObjectId,
    incarnation: Incarnation,
    config: Config,
    phase: Phase,
    /// The next position to append at.
    next_position: LogPosition,
    /// Positions below this are durable.
    durable: LogPosition,
    /// Requests appended and not delivered yet, in log order.
    requests: VecDeque<(LogPosition, Request<P>)>,
    /// Replies appended and not delivered yet. One is delivered once
    /// durable and once the body made its call (a replay makes it again).
    replies: BTreeMap<LogPosition, Reply<P>>,
    /// Positions below this were loaded from the store: replays.
    replay_end: LogPosition,
    /// The request the body is serving.
    serving: Option<LogPosition>,
    inbound: BTreeMap<ObjectId, Inbound<P>>,
    outbox: Outbox<P>,
    /// The newest incarnation seen of each peer; older ones are fenced.
    peers: BTreeMap<ObjectId, Incarnation>,
    last_checkpoint: Time,
    /// Position of the last durable checkpoint.
    checkpointed: LogPosition,
    /// Position of the checkpoint being written.
    writing: Option<LogPosition>,
    actions: VecDeque<Action<P>>,
    stats: Stats,
}

impl<P: Clone> Protected<P> {
    /// A newly created protected object. Its first action is the forced
    /// checkpoint of its initial state: nothing is delivered before that
    /// checkpoint is durable, so a recovery always has a base.
    pub fn new(id: ObjectId, config: Config, now: Time) -> Self {
        let mut core = Protected::blank(id, Incarnation::FIRST, config, now, Outbox::new());
        core.phase = Phase::Starting;
        core.checkpoint(now);
        core
    }

    /// The object restarted as `incarnation` from its last durable
    /// checkpoint (`protocol` is what that checkpoint's
    /// [`Action::Checkpoint`] carried; the driver restored the body from the
    /// rest) and the log entries from `protocol.position()` on, in order.
    /// The core replays them ([`Action::Replay`]) before anything new, and
    /// resends the calls the checkpoint retained.
    pub fn recover(
        id: ObjectId,
        incarnation: Incarnation,
        config: Config,
        now: Time,
        protocol: Snapshot<P>,
        log: impl IntoIterator<Item = (LogPosition, Message<P>)>,
    ) -> Result<Self> {
        let Snapshot {
            position,
            inbound,
            outbound,
        } = protocol;
        let mut core = Protected::blank(
            id,
            incarnation,
            config,
            now,
            Outbox::from_state(outbound, now),
        );
        core.inbound = inbound
            .into_iter()
            .map(|(sender, served)| (sender, Inbound::new(served)))
            .collect();
        let mut expected = position;
        for (at, message) in log {
            if at != expected {
                return Err(Error::LogGap {
                    object: id,
                    expected,
                    found: at,
                });
            }
            match message {
                Message::Request(request) => {
                    let sender = core
                        .inbound
                        .entry(request.id.sender)
                        .or_insert_with(|| Inbound::new(Served::default()));
                    if request.id.seq != sender.logged_next || request.id.target != id {
                        return Err(Error::LogOutOfOrder {
                            object: id,
                            position: at,
                            request: request.id,
                            expected: sender.logged_next,
                        });
                    }
                    sender.logged_next = sender.logged_next.saturating_add(1);
                    core.requests.push_back((at, request));
                }
                // Replies can be delivered ahead of requests logged before
                // them: one the checkpoint shows observed is not again.
                Message::Reply(reply) if core.outbox.is_settled(reply.request) => {}
                Message::Reply(reply) => {
                    core.outbox.mark_logged(reply.request);
                    core.replies.insert(at, reply);
                }
            }
            expected = at.next();
        }
        core.next_position = expected;
        core.durable = expected;
        core.replay_end = expected;
        core.checkpointed = position;
        let again = core
            .outbox
            .resends(now, id, incarnation, Duration::ZERO, None);
        core.resend(again);
        core.pump(now);
        Ok(core)
    }

    fn blank(
        id: ObjectId,
        incarnation: Incarnation,
        config: Config,
        now: Time,
        outbox: Outbox<P>,
    ) -> Self {
        Protected {
            id,
            incarnation,
            config,
            phase: Phase::Running,
            next_position: LogPosition(0),
            durable: LogPosition(0),
            requests: VecDeque::new(),
            replies: BTreeMap::new(),
            replay_end: LogPosition(0),
            serving: None,
            inbound: BTreeMap::new(),
            outbox,
            peers: BTreeMap::new(),
            last_checkpoint: now,
            checkpointed: LogPosition(0),
            writing: None,
            actions: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// This object.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// This incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Counters of what happened to messages.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether recovery is still replaying logged messages.
    pub fn is_replaying(&self) -> bool {
        self.requests
            .front()
            .is_some_and(|(at, _)| *at < self.replay_end)
            || self.serving.is_some_and(|at| at < self.replay_end)
    }

    /// Whether nothing is left to do but wait for new messages: no message
    /// logged and not handled, no call of the body unanswered, no
    /// checkpoint being written.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Running
            && self.requests.is_empty()
            && self.replies.is_empty()
            && self.serving.is_none()
            && self.writing.is_none()
            && self.outbox.pending() == 0
    }

    /// Whether this incarnation was fenced.
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// A request for this object arrived. It is logged (in its sender's
    /// order) and delivered once durable; a duplicate is answered with the
    /// original reply; a request from a fenced incarnation is dropped.
    pub fn on_request(&mut self, now: Time, request: Request<P>) {
        if self.phase == Phase::Stopped || request.id.target != self.id || request.id.seq == 0 {
            return;
        }
        if !self.meet(request.id.sender, request.incarnation) {
            self.stats.stale_dropped += 1;
            return;
        }
        let incarnation = self.incarnation;
        let max_ahead = self.config.max_ahead;
        let sender = self
            .inbound
            .entry(request.id.sender)
            .or_insert_with(|| Inbound::new(Served::default()));
        sender.acked(request.acked);
        let seq = request.id.seq;
        if seq <= sender.served.acked {
            self.stats.duplicates_dropped += 1;
            return;
        }
        if seq < sender.logged_next {
            match sender.served.replies.get(&seq) {
                Some(Some(value)) => {
                    let reply = Reply {
                        request: request.id,
                        incarnation,
                        value: value.clone(),
                    };
                    self.stats.duplicates_answered += 1;
                    self.actions.push_back(Action::AnswerDuplicate(reply));
                }
                _ => self.stats.duplicates_dropped += 1,
            }
            return;
        }
        if seq > sender.logged_next {
            if sender.ahead.len() < max_ahead || sender.ahead.contains_key(&seq) {
                sender.ahead.insert(seq, request);
            } else {
                self.stats.ahead_dropped += 1;
            }
            return;
        }
        let mut in_order = vec![request];
        sender.logged_next = sender.logged_next.saturating_add(1);
        while let Some(next) = sender.ahead.remove(&sender.logged_next) {
            in_order.push(next);
            sender.logged_next = sender.logged_next.saturating_add(1);
        }
        for request in in_order {
            self.append(Message::Request(request));
        }
        self.pump(now);
    }

    /// A reply to a call this object made arrived. It is logged and
    /// delivered once durable, like a request: the body observes nothing
    /// that is not in its log.
    pub fn on_reply(&mut self, now: Time, reply: Reply<P>) {
        if self.phase == Phase::Stopped || reply.request.sender != self.id {
            return;
        }
        if !self.meet(reply.request.target, reply.incarnation) {
            self.stats.stale_dropped += 1;
            return;
        }
        let replaying = self.is_replaying();
        match self.outbox.offer(reply.request, replaying) {
            Offer::Fresh => {
                self.outbox.mark_logged(reply.request);
                self.append(Message::Reply(reply));
                self.pump(now);
            }
            Offer::Seen => self.stats.duplicates_dropped += 1,
        }
    }

    /// The store made every log entry up to `position` durable.
    pub fn log_durable(&mut self, now: Time, position: LogPosition) -> Result<()> {
        if position >= self.next_position {
            return Err(Error::NotAppended {
                object: self.id,
                position,
                next: self.next_position,
            });
        }
        self.durable = self.durable.max(position.next());
        self.pump(now);
        Ok(())
    }

    /// The body, serving a request, calls `target`. The request is resent
    /// until its reply is logged, and retained until the body was handed
    /// the reply.
    pub fn call(&mut self, now: Time, target: ObjectId, payload: P) -> Result<RequestId> {
        self.acting()?;
        let request = self
            .outbox
            .call(now, self.id, self.incarnation, target, payload);
        let id = request.id;
        // A replay makes again the calls it made before the failure; one
        // whose reply is already logged needs no send.
        if self.outbox.is_logged(id) {
            self.pump(now);
        } else {
            self.actions.push_back(Action::Send(request));
        }
        Ok(id)
    }

    /// The body answers `request`: at the end of its service, or later (a
    /// method that returned a future answers when that future's reply is
    /// delivered). The reply is sent at once: everything the body observed
    /// to compute it is in the log already, so it can always be produced
    /// again.
    pub fn reply(&mut self, request: RequestId, value: P) -> Result<()> {
        self.live()?;
        let unknown = Error::UnknownRequest {
            object: self.id,
            request,
        };
        let sender = self
            .inbound
            .get_mut(&request.sender)
            .filter(|_| request.target == self.id)
            .ok_or(unknown.clone())?;
        if request.seq <= sender.served.acked {
            // A replay answering again what its sender already holds.
            self.stats.duplicates_dropped += 1;
            return Ok(());
        }
        let slot = sender.served.replies.get_mut(&request.seq).ok_or(unknown)?;
        if slot.is_some() {
            return Err(Error::AlreadyAnswered {
                object: self.id,
                request,
            });
        }
        *slot = Some(value.clone());
        self.actions.push_back(Action::Reply(Reply {
            request,
            incarnation: self.incarnation,
            value,
        }));
        Ok(())
    }

    /// The body finished serving the delivered request: this is a request
    /// boundary.
    pub fn step_done(&mut self, now: Time) -> Result<()> {
        self.acting()?;
        self.serving = None;
        self.pump(now);
        Ok(())
    }

    /// The checkpoint at `position` is durable.
    pub fn checkpoint_durable(&mut self, now: Time, position: LogPosition) -> Result<()> {
        if self.phase == Phase::Stopped {
            return Ok(());
        }
        if self.writing != Some(position) {
            return Err(Error::UnknownCheckpoint {
                object: self.id,
                position,
            });
        }
        self.writing = None;
        self.checkpointed = position;
        if position > LogPosition(0) {
            self.actions
                .push_back(Action::Truncate { before: position });
        }
        if self.phase == Phase::Starting {
            self.phase = Phase::Running;
        }
        self.pump(now);
        Ok(())
    }

    /// Time passed (the driver calls this at least every few
    /// [`Config::resend_after`] and [`Config::ttc`]): checkpoint an idle
    /// object whose TTC elapsed, resend calls unanswered too long.
    pub fn tick(&mut self, now: Time) {
        if self.phase == Phase::Stopped {
            return;
        }
        let again = self.outbox.resends(
            now,
            self.id,
            self.incarnation,
            self.config.resend_after,
            None,
        );
        self.resend(again);
        self.pump(now);
    }

    /// The location service says `object` now runs as `incarnation`: its
    /// older incarnations are fenced, and calls it has not answered are
    /// resent to it. If `object` is this object, this incarnation is over.
    pub fn peer_restarted(&mut self, now: Time, object: ObjectId, incarnation: Incarnation) {
        if self.phase == Phase::Stopped {
            return;
        }
        if object == self.id {
            if incarnation > self.incarnation {
                self.stop();
            }
            return;
        }
        if !self.meet(object, incarnation) {
            return;
        }
        let again = self.outbox.resends(
            now,
            self.id,
            self.incarnation,
            self.config.resend_after,
            Some(object),
        );
        self.resend(again);
    }

    /// The store refused this incarnation's writes: a newer one exists.
    pub fn fenced(&mut self) {
        if self.phase != Phase::Stopped {
            self.stop();
        }
    }

    fn stop(&mut self) {
        self.phase = Phase::Stopped;
        self.actions.clear();
        self.requests.clear();
        self.replies.clear();
        self.serving = None;
        self.actions.push_back(Action::Stop);
    }

    fn live(&self) -> Result<()> {
        if self.phase == Phase::Stopped {
            return Err(Error::Fenced {
                object: self.id,
                incarnation: self.incarnation,
            });
        }
        Ok(())
    }

    fn acting(&self) -> Result<()> {
        self.live()?;
        if self.serving.is_none() {
            return Err(Error::NotServing { object: self.id });
        }
        Ok(())
    }

    /// Notes `peer`'s incarnation; false if it is older than one seen.
    fn meet(&mut self, peer: ObjectId, incarnation: Incarnation) -> bool {
        let newest = self.peers.entry(peer).or_insert(incarnation);
        if incarnation < *newest {
            return false;
        }
        *newest = incarnation;
        true
    }

    fn resend(&mut self, requests: Vec<Request<P>>) {
        self.stats.resent += requests.len() as u64;
        self.actions
            .extend(requests.into_iter().map(Action::Resend));
    }

    fn append(&mut self, message: Message<P>) {
        let position = self.next_position;
        self.next_position = position.next();
        self.stats.logged += 1;
        self.actions.push_back(Action::Append {
            position,
            message: message.clone(),
        });
        match message {
            Message::Request(request) => self.requests.push_back((position, request)),
            Message::Reply(reply) => {
                self.replies.insert(position, reply);
            }
        }
    }

    /// Where a checkpoint taken now starts the log: the first entry not
    /// delivered (later ones may be, replies overtaking requests).
    fn boundary(&self) -> LogPosition {
        let request = self.requests.front().map(|(at, _)| *at);
        let reply = self.replies.keys().next().copied();
        match (request, reply) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.next_position,
        }
    }

    /// Delivers what can be: durable replies whose call was made, at any
    /// time; at a request boundary, a checkpoint if due, then the next
    /// durable request.
    fn pump(&mut self, now: Time) {
        if self.phase != Phase::Running {
            return;
        }
        if self.serving.is_none()
            && self.writing.is_none()
            && self.boundary() > self.checkpointed
            && now.since(self.last_checkpoint) >= self.config.ttc
        {
            self.checkpoint(now);
        }
        let ready: Vec<LogPosition> = self
            .replies
            .range(..self.durable)
            .filter(|(_, reply)| self.outbox.has_call(reply.request))
            .map(|(at, _)| *at)
            .collect();
        for position in ready {
            if let Some(reply) = self.replies.remove(&position) {
                self.outbox.settle(reply.request);
                self.hand_over(position, Message::Reply(reply));
            }
        }
        let durable = self.durable;
        if self.serving.is_some() || self.requests.front().is_none_or(|(at, _)| *at >= durable) {
            return;
        }
        let Some((position, request)) = self.requests.pop_front() else {
            return;
        };
        self.serving = Some(position);
        let sender = self
            .inbound
            .entry(request.id.sender)
            .or_insert_with(|| Inbound::new(Served::default()));
        sender.served.next = request.id.seq.saturating_add(1);
        // A replayed request its sender holds the reply of is served again
        // (to rebuild the state) but not answered.
        if request.id.seq > sender.served.acked {
            sender.served.replies.insert(request.id.seq, None);
        }
        self.hand_over(position, Message::Request(request));
    }

    fn hand_over(&mut self, position: LogPosition, message: Message<P>) {
        if position < self.replay_end {
            self.stats.replayed += 1;
            self.actions.push_back(Action::Replay(message));
        } else {
            self.stats.delivered += 1;
            self.actions.push_back(Action::Deliver(message));
        }
    }

    fn checkpoint(&mut self, now: Time) {
        let position = self.boundary();
        let protocol = Snapshot {
            position,
            inbound: self
                .inbound
                .iter()
                .map(|(sender, s)| (*sender, s.served.clone()))
                .collect(),
            outbound: self.outbox.state(),
        };
        self.writing = Some(position);
        self.last_checkpoint = now;
        self.stats.checkpoints += 1;
        self.actions.push_back(Action::Checkpoint { protocol });
    }
}
