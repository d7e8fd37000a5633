//! CIC on a node: the protocol's [`Member`] of each object there, driven
//! by the runtime's hooks.
//!
//! | hook | what the member does |
//! |---|---|
//! | `before_send` | numbers the call as the runtime did, keeps it, stamps it (request header) |
//! | `before_delivery` | reads the sender's stamp; a checkpoint first if the sender was ahead (forced), then delivers |
//! | `reply_header` | stamps the reply; a reply to a caller outside the group is held (output commit); the boundary after the service: the checkpoint due (TTC, or a reply from ahead consumed) |
//! | `reply_hold` | the held reply leaves once the committed line passes the index it was produced at |
//! | `reply_received` | reads the replier's stamp: a reply from ahead raises the next checkpoint and records a dependency |
//! | `idle` | the TTC checkpoint of an object that serves nothing |
//! | `duplicate` | a request sent again is answered with the reply the member kept |
//!
//! Checkpoints (the body's state with the member's record) and reception
//! histories go to the FT server's group ([`crate::cic_group`]) in
//! batches, off the call path; each batch is answered with the committed
//! line and what the other members' checkpoints of it took from this one,
//! which is what lets a member forget what it kept: the wire carries no
//! acknowledgements of its own. While replies are held, the node asks
//! for the line every [`LINE_POLL`].
//!
//! Requests served ahead of the queue (immediate ones) and the services'
//! own objects are outside the protocol. A recovery of the group is not
//! driven from here yet: `docs/fault-tolerance.md` says what works.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actogrid_runtime::intercept::{
    BodyAccess, Delivery, Hold, Interceptor, Logged, Outgoing, Reply, Returned, ServeOutcome,
    Verdict,
};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::cic::{Ack, Action, Config, Incarnation, Member, ObjectId, RequestId, Stamp, Time};
use crate::cic_group::{CicWrite, Committed};
use crate::server::FtLink;

/// How often a node with held replies asks for the committed line.
pub const LINE_POLL: Duration = Duration::from_millis(10);

/// How often a node with members asks for the line otherwise (to learn
/// the line some other member waits for).
pub const IDLE_POLL: Duration = Duration::from_millis(100);

/// How long a member stays idle before the node looks at it again (for a
/// checkpoint the group waits for), at most.
pub const IDLE_CHECK: Duration = Duration::from_millis(20);

/// The mark after [`crate::keeper::PROTECTED_SENDER`] in the header of a
/// member's requests, before its stamp; and the first byte of the header
/// of its replies.
const CIC: u8 = b'c';

/// Stamps at or past this are refused (a sender cannot be this far ahead;
/// the checkpoint index must not overflow).
const MAX_INDEX: u64 = u64::MAX / 4;

/// The interceptor of CIC nodes (see the [module documentation](self)).
#[derive(Debug)]
pub struct CicProtection {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    link: Arc<dyn FtLink>,
    config: Config,
    started: Instant,
    members: Mutex<HashMap<u64, Slot>>,
    group: Mutex<View>,
    ship: mpsc::UnboundedSender<(u64, CicWrite)>,
    /// Objects without a member here already asked whether a recovery
    /// restores them (see `Interceptor::idle`).
    asked: Mutex<HashSet<u64>>,
}

/// The group as this node last heard of it.
#[derive(Debug, Default)]
struct View {
    version: u64,
    members: HashSet<u64>,
}

/// One member of the node.
#[derive(Debug)]
struct Slot {
    member: Member<Vec<u8>>,
    /// Replies held for the line, and who waits for their release.
    held: HashMap<RequestId, oneshot::Sender<Result<(), String>>>,
    /// The hold of the reply being given, between `reply_header` and
    /// `reply_hold`.
    holding: Option<Hold>,
    /// Checkpoints the member took where no state could be read (a reply
    /// consumed between two services): the state is read at the next
    /// boundary the node sees, before anything else happens to the body.
    deferred: Vec<crate::cic::Record<Vec<u8>>>,
    /// Replies to callers outside the group that a restored member's
    /// checkpoint released: such a caller lost its reply with the instance
    /// a recovery discarded, and sends the request again.
    released: HashMap<RequestId, Vec<u8>>,
    /// The object ended ([`Interceptor::ending`]) in this state: the
    /// member stays, and its checkpoints are of this state from now on,
    /// so that it holds no line back.
    ended: Option<Arc<Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The stamp in a member's request header, if it is one.
fn request_stamp(header: &[u8]) -> Option<Stamp> {
    let rest = header.strip_prefix(crate::keeper::PROTECTED_SENDER)?;
    reply_stamp(rest)
}

/// The stamp in a member's reply header, if it is one.
fn reply_stamp(header: &[u8]) -> Option<Stamp> {
    let rest = header.strip_prefix(&[CIC])?;
    postcard::from_bytes::<Stamp>(rest)
        .ok()
        .filter(|s| s.index < MAX_INDEX)
}

fn put_stamp(header: &mut Vec<u8>, stamp: &Stamp) {
    header.push(CIC);
    if let Ok(bytes) = postcard::to_allocvec(stamp) {
        header.extend_from_slice(&bytes);
    }
}

/// The body's state now, as the group stores it.
fn state_of(body: &BodyAccess<'_>) -> Result<Vec<u8>, String> {
    let checkpoint = body.checkpoint().map_err(|e| e.to_string())?;
    postcard::to_allocvec(&checkpoint).map_err(|e| e.to_string())
}

/// The id of the request `delivery` is.
fn request_id(delivery: &Delivery<'_>) -> RequestId {
    RequestId {
        target: ObjectId(delivery.object),
        sender: ObjectId(delivery.sender),
        seq: delivery.seq,
    }
}

/// Requests outside the protocol. (Requests a recovery serves again are
/// inside: on a CIC node, they are the group's.)
fn is_outside(delivery: &Delivery<'_>) -> bool {
    delivery.seq == 0 || actogrid_technical_services::is_machinery(delivery.type_name)
}

fn stamped(stamp: Option<Stamp>) -> Vec<u8> {
    let mut header = crate::keeper::PROTECTED_SENDER.to_vec();
    if let Some(stamp) = stamp {
        put_stamp(&mut header, &stamp);
    }
    header
}

/// A member's request header with its stamp moved to `epoch`: a recovery
/// delivers the request again in the group's new epoch. Other headers are
/// left as they are.
pub(crate) fn restamp(header: &[u8], epoch: Incarnation) -> Vec<u8> {
    match request_stamp(header) {
        Some(stamp) => stamped(Some(Stamp { epoch, ..stamp })),
        None => header.to_vec(),
    }
}

/// A request a member's checkpoint kept, as a recovery delivers it again
/// in `epoch`.
pub(crate) fn logged_of(q: &crate::cic::Request<Vec<u8>>, epoch: Incarnation) -> Logged {
    Logged {
        sender: q.id.sender.0,
        seq: q.id.seq,
        immediate: false,
        header: stamped(q.from.map(|s| Stamp { epoch, ..s })),
        payload: q.payload.clone(),
    }
}

/// The URL of the node `body`'s object lives on.
fn home_of(body: &BodyAccess<'_>) -> String {
    let rt = body.runtime();
    let node = rt
        .objects_here()
        .into_iter()
        .find(|o| o.id == body.object())
        .map(|o| o.node)
        .unwrap_or_default();
    format!("actogrid://{}/{node}", rt.address().unwrap_or_default())
}

impl CicProtection {
    /// CIC on the nodes it is installed on, reaching the FT server's group
    /// through `link`. Its shipping task runs on the current tokio
    /// runtime.
    pub fn new(link: Arc<dyn FtLink>, config: Config) -> Arc<CicProtection> {
        let (ship, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            link,
            config,
            started: Instant::now(),
            members: Mutex::new(HashMap::new()),
            group: Mutex::new(View::default()),
            ship,
            asked: Mutex::new(HashSet::new()),
        });
        tokio::spawn(ship_batches(Arc::downgrade(&shared), queue));
        Arc::new(CicProtection { shared })
    }

    /// CIC reaching a server over the wire, at the endpoint
    /// [`FtServer::serve`](crate::server::FtServer::serve) registered.
    pub fn remote(server: crate::server::FtEndpointProxy, config: Config) -> Arc<CicProtection> {
        CicProtection::new(Arc::new(crate::server::Remote::new(server)), config)
    }

    /// The checkpoint index of member `object`, if it is one here.
    pub fn index(&self, object: u64) -> Option<u64> {
        lock(&self.shared.members)
            .get(&object)
            .map(|s| s.member.index())
    }

    /// The committed line member `object` last heard of, and its epoch.
    pub fn line(&self, object: u64) -> Option<(Incarnation, u64)> {
        lock(&self.shared.members)
            .get(&object)
            .map(|s| (s.member.epoch(), s.member.line()))
    }

    /// Whether member `object` serves a request now.
    pub fn serving(&self, object: u64) -> Option<bool> {
        lock(&self.shared.members)
            .get(&object)
            .map(|s| s.member.is_serving())
    }

    /// Messages member `object` keeps for a rollback.
    pub fn retained(&self, object: u64) -> Option<usize> {
        lock(&self.shared.members)
            .get(&object)
            .map(|s| s.member.retained())
    }
}

impl Shared {
    fn now(&self) -> Time {
        Time(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn ship(&self, object: u64, write: CicWrite) {
        // The task ends with the node's last handle: nothing to ship to.
        let _ = self.ship.send((object, write));
    }

    /// Carries out the member's actions; `state` reads the body's state
    /// when the node is at a boundary (`None`: it is not).
    fn act(
        &self,
        object: u64,
        slot: &mut Slot,
        state: Option<&dyn Fn() -> Result<Vec<u8>, String>>,
        delivering: Option<RequestId>,
    ) -> bool {
        let mut delivered = false;
        // An object that ended has no boundaries any more: every state a
        // checkpoint needs is its last one.
        let last = slot.ended.clone();
        let last_state = move || Ok(last.as_deref().cloned().unwrap_or_default());
        let state = match state {
            None if slot.ended.is_some() => Some(&last_state as &dyn Fn() -> _),
            state => state,
        };
        if let Some(state) = state {
            for record in std::mem::take(&mut slot.deferred) {
                self.store_checkpoint(object, record, state);
            }
        }
        let epoch = slot.member.epoch();
        while let Some(action) = slot.member.poll_action() {
            match action {
                Action::Deliver(q) if Some(q.id) == delivering => delivered = true,
                Action::Deliver(q) => tracing::error!(
                    object = format_args!("{object:#x}"),
                    "the CIC member chose request #{} of {:#x} while the runtime delivers another; it is left pending",
                    q.id.seq,
                    q.id.sender.0
                ),
                // In the member's order: behind one waiting for its state,
                // every later one waits too.
                Action::Checkpoint(record) if !slot.deferred.is_empty() => {
                    slot.deferred.push(record);
                }
                // The same state as its last checkpoint: the group
                // stretches that one, no state needed.
                Action::Checkpoint(record) if record.unchanged => {
                    self.ship(
                        object,
                        CicWrite::Checkpoint {
                            record,
                            state: Vec::new(),
                        },
                    );
                }
                Action::Checkpoint(record) => match state {
                    Some(state) => self.store_checkpoint(object, record, state),
                    None => slot.deferred.push(record),
                },
                Action::History(entries) => self.ship(object, CicWrite::History { epoch, entries }),
                Action::SendReply(p) => {
                    if let Some(waiting) = slot.held.remove(&p.id) {
                        let _ = waiting.send(Ok(()));
                        // Its caller, outside the group, does not roll
                        // back: nothing needs the reply again.
                        let now = self.now();
                        slot.member.on_ack(
                            now,
                            Ack {
                                id: p.id,
                                reply: true,
                                epoch: None,
                                index: 0,
                            },
                        );
                    }
                }
                // The runtime sends requests and replies itself, and keeps
                // what a failed connection must send again; nothing is
                // acknowledged on the wire (the line says what was taken).
                Action::SendRequest(_) | Action::SendAck { .. } | Action::Resolve(_) => {}
            }
        }
        delivered
    }

    fn store_checkpoint(
        &self,
        object: u64,
        record: crate::cic::Record<Vec<u8>>,
        state: &dyn Fn() -> Result<Vec<u8>, String>,
    ) {
        match state() {
            Ok(state) => self.ship(object, CicWrite::Checkpoint { record, state }),
            Err(e) => tracing::error!(
                object = format_args!("{object:#x}"),
                "a CIC checkpoint could not be taken; the line stays behind it: {e}"
            ),
        }
    }

    /// Delivers `delivery` to its member (which must be one here), after
    /// the checkpoints the member takes first.
    fn deliver(
        &self,
        delivery: &Delivery<'_>,
        state: &dyn Fn() -> Result<Vec<u8>, String>,
    ) -> Verdict {
        let object = delivery.object;
        let id = request_id(delivery);
        let now = self.now();
        let mut members = lock(&self.members);
        let Some(slot) = members.get_mut(&object) else {
            return Verdict::Refuse("it is not a member of the CIC group".into());
        };
        let from = request_stamp(delivery.header);
        if let Some(stamp) = from
            && stamp.epoch != slot.member.epoch()
        {
            // Sent before a recovery of the group (by an instance it
            // discarded), or after one this instance is not part of: it
            // must not take the number the sender's next execution uses.
            return Verdict::Stale(format!(
                "request #{} of {:#x} was sent in epoch {} of the CIC group, which is now at {}",
                delivery.seq,
                delivery.sender,
                stamp.epoch.0,
                slot.member.epoch().0
            ));
        }
        // The runtime delivers each sender's requests in order, and
        // numbers some it never delivers (its creation, say).
        if slot.member.replaying() == 0 {
            slot.member
                .delivered_up_to(id.sender, delivery.seq.saturating_sub(1));
        }
        slot.member.on_request(
            now,
            crate::cic::Request {
                id,
                from,
                // What the member needs of a delivered request is its id.
                payload: Vec::new(),
            },
        );
        if self.act(object, slot, Some(state), Some(id)) {
            // Kept by the FT server in case a recovery must serve it again.
            self.ship(
                object,
                CicWrite::Request {
                    position: slot.member.stamp().delivered,
                    logged: Logged::of(delivery),
                },
            );
            Verdict::Deliver
        } else {
            Verdict::Refuse(format!(
                "the CIC member did not take request #{} of {:#x} (another epoch, or one it holds back)",
                delivery.seq, delivery.sender
            ))
        }
    }

    /// Member `object` joined: where the group stands.
    /// A restored member restarts where the recovery says.
    fn joined(&self, object: u64, committed: &Committed) {
        self.heard(committed);
        let now = self.now();
        let me = ObjectId(object);
        let mut member = match &committed.restart {
            Some(r) => Member::restart(
                me,
                self.config,
                now,
                &r.record,
                Incarnation(r.epoch),
                r.line,
                r.replay.clone(),
            ),
            None => Member::join(
                me,
                self.config,
                now,
                Incarnation(committed.epoch),
                committed.line,
            ),
        };
        let group = lock(&self.group).members.clone();
        let mut members = lock(&self.members);
        // A member that ended here stays until a recovery restores it.
        if members.get(&object).is_some_and(|s| s.ended.is_none()) {
            return;
        }
        // What it kept is sent again by the recovery itself (requests in
        // transit) or answered from here when asked again (replies to
        // members); replies its checkpoint released to outside callers
        // wait here for those callers, which do not roll back.
        let mut released = HashMap::new();
        while let Some(action) = member.poll_action() {
            if let Action::SendReply(p) = action
                && !group.contains(&p.id.sender.0)
            {
                released.insert(p.id, p.payload);
            }
        }
        for id in released.keys() {
            member.on_ack(
                now,
                Ack {
                    id: *id,
                    reply: true,
                    epoch: None,
                    index: 0,
                },
            );
        }
        members.insert(
            object,
            Slot {
                member,
                held: HashMap::new(),
                holding: None,
                deferred: Vec::new(),
                released,
                ended: None,
            },
        );
    }

    /// Whether a recovery restores `object` (asked of the group): if so,
    /// it takes its place here as the recovery says.
    async fn restarted(&self, object: u64) -> Result<bool, String> {
        let committed = (self.link)
            .cic_join(object, Vec::new(), String::new())
            .await?;
        if committed.restart.is_none() {
            return Ok(false);
        }
        self.joined(object, &committed);
        Ok(true)
    }

    /// Member `object` ended in `state`: it stays, with a checkpoint of
    /// that state now (the later ones stretch it), and the group learns
    /// where it ended.
    fn end(&self, object: u64, state: Vec<u8>) {
        let mut members = lock(&self.members);
        let Some(slot) = members.get_mut(&object) else {
            return;
        };
        slot.ended = Some(Arc::new(state));
        tracing::debug!(
            object = format_args!("{object:#x}"),
            "a CIC member ended: it stays in the group with its last state"
        );
        let now = self.now();
        slot.member.want(now, slot.member.index() + 1);
        slot.member.tick(now);
        self.act(object, slot, None, None);
        let stamp = slot.member.stamp();
        self.ship(
            object,
            CicWrite::Ended {
                epoch: stamp.epoch,
                at: stamp.at(),
            },
        );
    }

    /// Whether `object` is a member here that has not ended (an object
    /// restored where it had ended joins again).
    fn is_member_here(&self, object: u64) -> bool {
        lock(&self.members)
            .get(&object)
            .is_some_and(|s| s.ended.is_none())
    }

    fn heard(&self, committed: &Committed) {
        let mut view = lock(&self.group);
        if let Some(members) = &committed.members
            && committed.version > view.version
        {
            view.members = members.iter().copied().collect();
            view.version = committed.version;
        }
    }

    /// A batch of `object` was stored: the line as it stands. Every member
    /// here checkpoints up to the line the group wants.
    fn committed(&self, object: u64, committed: &Committed) {
        self.heard(committed);
        let view = lock(&self.group);
        let now = self.now();
        let mut members = lock(&self.members);
        if let Some(slot) = members.get_mut(&object) {
            slot.member.line_committed(
                now,
                Incarnation(committed.epoch),
                committed.line,
                &committed.received,
                |o| view.members.contains(&o.0),
            );
        }
        for (object, slot) in members.iter_mut() {
            if slot.member.epoch().0 == committed.epoch {
                slot.member.want(now, committed.wanted);
                if slot.ended.is_some() {
                    // Always between two services.
                    slot.member.tick(now);
                }
            }
            self.act(*object, slot, None, None);
        }
        // A recovery restored the members that had ended from their
        // checkpoints, wherever it put them: what stayed here of them is
        // stale (the callers of the replies they held ask again).
        members.retain(|_, s| s.ended.is_none() || s.member.epoch().0 >= committed.epoch);
    }

    /// The members whose replies wait for the line.
    fn holding(&self) -> Vec<u64> {
        lock(&self.members)
            .iter()
            .filter(|(_, s)| !s.held.is_empty())
            .map(|(o, _)| *o)
            .collect()
    }

    fn seen(&self) -> u64 {
        lock(&self.group).version
    }
}

/// Sends what the members hand over, in batches: whatever queued while a
/// batch was on its way goes in the next one, each member's in order.
async fn ship_batches(shared: Weak<Shared>, mut queue: mpsc::UnboundedReceiver<(u64, CicWrite)>) {
    loop {
        let poll = match shared.upgrade() {
            Some(s) if !s.holding().is_empty() => Some(LINE_POLL),
            Some(s) if !lock(&s.members).is_empty() => Some(IDLE_POLL),
            Some(_) => None,
            None => return,
        };
        let first = match poll {
            Some(poll) => match tokio::time::timeout(poll, queue.recv()).await {
                Ok(first) => first.map(Some),
                Err(_) => Some(None),
            },
            None => queue.recv().await.map(Some),
        };
        let Some(first) = first else { return };
        let mut batches: BTreeMap<u64, Vec<CicWrite>> = BTreeMap::new();
        for (object, write) in first
            .into_iter()
            .chain(std::iter::from_fn(|| queue.try_recv().ok()))
        {
            batches.entry(object).or_default().push(write);
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Nothing new: the members holding replies ask for the line (any
        // member, when none does).
        let holding = shared.holding();
        if holding.is_empty() && batches.is_empty() {
            if let Some(any) = lock(&shared.members).keys().next() {
                batches.insert(*any, Vec::new());
            }
        }
        for object in holding {
            batches.entry(object).or_default();
        }
        for (object, writes) in batches {
            match shared.link.cic_store(object, writes, shared.seen()).await {
                Ok(committed) => shared.committed(object, &committed),
                Err(e) => tracing::warn!(
                    object = format_args!("{object:#x}"),
                    "CIC: the FT server did not take a checkpoint or history: {e}"
                ),
            }
        }
    }
}

impl Interceptor for CicProtection {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        if is_outside(delivery) {
            return Box::pin(async { Verdict::Deliver });
        }
        let shared = &self.shared;
        let object = delivery.object;
        let joined = shared.is_member_here(object);
        if joined {
            let verdict = shared.deliver(delivery, &|| state_of(body));
            return Box::pin(std::future::ready(verdict));
        }
        // Its first request: it joins with the state it was created in
        // (read here: the body is not shared with the hook's future), the
        // same until it is delivered.
        let state = state_of(body);
        let home = home_of(body);
        Box::pin(async move {
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    tracing::error!(
                        object = format_args!("{object:#x}"),
                        "an object on a CIC node cannot be protected: {e}"
                    );
                    return Verdict::Refuse(format!(
                        "it is on a fault-tolerant node but cannot be protected: {e}"
                    ));
                }
            };
            match shared.link.cic_join(object, state.clone(), home).await {
                Ok(committed) => shared.joined(object, &committed),
                Err(e) => {
                    return Verdict::Refuse(format!("it could not join the CIC group: {e}"));
                }
            }
            shared.deliver(delivery, &|| Ok(state.clone()))
        })
    }

    fn reply_header(
        &self,
        delivery: &Delivery<'_>,
        outcome: ServeOutcome,
        payload: &[u8],
        body: &BodyAccess<'_>,
        header: &mut Vec<u8>,
    ) {
        if is_outside(delivery) {
            return;
        }
        let shared = &self.shared;
        let object = delivery.object;
        let now = shared.now();
        let mut members = lock(&shared.members);
        let Some(slot) = members.get_mut(&object) else {
            return;
        };
        let id = request_id(delivery);
        let reply = postcard::to_allocvec(&Reply {
            outcome,
            payload: payload.to_vec(),
        })
        .unwrap_or_default();
        let stamp = slot.member.stamp();
        slot.member.reply(now, reply);
        put_stamp(header, &stamp);
        if slot.member.holds(id) {
            // Sooner than every member's own time to checkpoint.
            self.shared.ship(object, CicWrite::Want(stamp.index + 1));
            let (tx, rx) = oneshot::channel();
            slot.held.insert(id, tx);
            slot.holding = Some(Hold::new(async move {
                rx.await
                    .unwrap_or_else(|_| Err("the CIC member was dropped".into()))
            }));
        }
        // The boundary after the service.
        slot.member.service_done(now);
        shared.act(object, slot, Some(&|| state_of(body)), None);
    }

    fn reply_hold(&self, delivery: &Delivery<'_>, _outcome: ServeOutcome) -> Option<Hold> {
        if is_outside(delivery) {
            return None;
        }
        lock(&self.shared.members)
            .get_mut(&delivery.object)?
            .holding
            .take()
    }

    fn before_send(&self, outgoing: &mut Outgoing<'_>) {
        if outgoing.header.is_empty() {
            outgoing
                .header
                .extend_from_slice(crate::keeper::PROTECTED_SENDER);
        }
        if outgoing.seq == 0 {
            return;
        }
        let shared = &self.shared;
        let now = shared.now();
        let mut members = lock(&shared.members);
        let Some(slot) = members.get_mut(&outgoing.sender) else {
            return;
        };
        let stamp = slot.member.stamp();
        slot.member.send_numbered(
            now,
            ObjectId(outgoing.target),
            outgoing.seq,
            outgoing.payload.to_vec(),
            !outgoing.one_way,
        );
        put_stamp(outgoing.header, &stamp);
        shared.act(outgoing.sender, slot, None, None);
    }

    fn reply_received(&self, reply: &Returned<'_>) {
        let shared = &self.shared;
        let now = shared.now();
        let mut members = lock(&shared.members);
        let Some(slot) = members.get_mut(&reply.caller) else {
            return;
        };
        slot.member.on_reply(
            now,
            crate::cic::Reply {
                id: RequestId {
                    target: ObjectId(reply.target),
                    sender: ObjectId(reply.caller),
                    seq: reply.seq,
                },
                from: reply_stamp(reply.header),
                payload: Vec::new(),
            },
        );
        shared.act(reply.caller, slot, None, None);
    }

    fn duplicate<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Option<Reply>> {
        let shared = &self.shared;
        let id = request_id(delivery);
        let object = delivery.object;
        let kept = move |members: &mut HashMap<u64, Slot>| {
            let slot = members.get_mut(&object)?;
            let bytes = match slot.released.remove(&id) {
                Some(bytes) => bytes,
                None => slot.member.kept_reply(id)?.payload.clone(),
            };
            postcard::from_bytes::<Reply>(&bytes).ok()
        };
        let joined = shared.is_member_here(object);
        if joined || is_outside(delivery) {
            let reply = kept(&mut lock(&shared.members));
            return Box::pin(std::future::ready(reply));
        }
        // A member a recovery restored, asked again for a reply before
        // anything was delivered to it: it restarts first.
        Box::pin(async move {
            if !shared.restarted(object).await.unwrap_or(false) {
                return None;
            }
            kept(&mut lock(&shared.members))
        })
    }

    fn idle_after(&self) -> Option<Duration> {
        // Its period, or sooner: an idle member that served since its last
        // checkpoint reaches a line the group waits for at its next
        // boundary, which for it is this hook.
        Some(Duration::from_millis(self.shared.config.ttc).min(IDLE_CHECK))
    }

    fn idle(&self, body: &BodyAccess<'_>) {
        let shared = &self.shared;
        let object = body.object();
        let now = shared.now();
        let mut members = lock(&shared.members);
        if let Some(slot) = members.get_mut(&object)
            && slot.ended.is_none()
        {
            slot.member.tick(now);
            shared.act(object, slot, Some(&|| state_of(body)), None);
            return;
        }
        drop(members);
        // An object restored here by a recovery of the group takes its
        // place in the group at once, requests or not: the line waits
        // for its checkpoints. (Asked once per object, and again after it
        // leaves.)
        if !lock(&shared.asked).insert(object) {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(e) = shared.restarted(object).await {
                tracing::debug!(
                    object = format_args!("{object:#x}"),
                    "CIC: whether a recovery restores the object is asked again: {e}"
                );
                lock(&shared.asked).remove(&object);
            }
        });
    }

    fn may_move(
        &self,
        _body: &BodyAccess<'_>,
        _to: &actogrid_runtime::NodeUrl,
    ) -> Result<(), String> {
        // What the member is to the group (its checkpoint index, its
        // reception history, the messages and held replies it keeps) lives
        // on this node and does not travel with the body.
        Err("it is a member of a CIC group, whose members stay on their nodes".into())
    }

    fn ending(&self, body: &BodyAccess<'_>) {
        let object = body.object();
        let state = match state_of(body) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(
                    object = format_args!("{object:#x}"),
                    "a CIC member ends and its last state cannot be read; the line stays behind it: {e}"
                );
                return;
            }
        };
        if self.shared.is_member_here(object) {
            self.shared.end(object, state);
            return;
        }
        // Restored by a recovery and ended before it took its place in
        // the group (a member that had ended, ended again): it takes it
        // first. An object that never was a member has nothing to do.
        let shared = self.shared.clone();
        tokio::spawn(async move {
            match shared.restarted(object).await {
                Ok(true) => shared.end(object, state),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    object = format_args!("{object:#x}"),
                    "CIC: an object restored by a recovery ended before it could take its place in the group: {e}"
                ),
            }
        });
    }

    fn left(&self, object: u64) {
        lock(&self.shared.asked).remove(&object);
        if let Some(slot) = lock(&self.shared.members).remove(&object) {
            tracing::debug!(
                object = format_args!("{object:#x}"),
                "a CIC member left this node (discarded by a recovery of the group, or moved: then protected where it went as a new member); what it kept here is dropped ({} messages)",
                slot.member.retained()
            );
        }
    }
}
