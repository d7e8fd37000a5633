//! The state machine of one peer. See the [module docs](super) for the
//! protocol; this file is its implementation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::clock::Time;
use super::config::Config;
use super::memory::FloodMemory;
use super::message::{
    BookingId, Envelope, FloodId, MAX_LIST, Message, PeerId, ReleaseReason, RequestId, Wanted,
};

/// What the core asks of its driver. Drain with [`Peer::poll_output`] after
/// every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<P> {
    /// Deliver `envelope` to peer `to` (best effort: losses are tolerated).
    Send {
        /// Destination.
        to: P,
        /// What to deliver.
        envelope: Envelope<P>,
    },
    /// Something the driver must act on or may report.
    Event(Event<P>),
}

/// Happenings the driver acts on (deploy, stop) or reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<P> {
    /// A peer became an acquaintance.
    AcquaintanceAdded(P),
    /// A peer is no longer an acquaintance.
    AcquaintanceLost {
        /// The former acquaintance.
        peer: P,
        /// Why.
        reason: LinkLoss,
    },
    /// Lender side: one of our slots is booked; start a runtime for the
    /// requester and call [`Peer::deployed`] once it runs (before
    /// [`Config::booking_expiry`], or the booking expires).
    Deploy {
        /// The booking (pass it back to [`Peer::deployed`]).
        booking: BookingId,
        /// The request it serves.
        request: RequestId,
        /// The peer that booked it.
        requester: P,
    },
    /// Lender side: a booked or used slot is free again; stop whatever runs
    /// (or is being started) for `booking`.
    SlotFreed {
        /// The booking that ended.
        booking: BookingId,
        /// The peer that held it.
        requester: P,
        /// Why.
        reason: SlotEnd,
    },
    /// Requester side: a node slot is booked for `request` on `lender`.
    NodeAcquired {
        /// The request.
        request: RequestId,
        /// The peer lending the slot.
        lender: P,
        /// The booking, as named by the lender.
        booking: BookingId,
    },
    /// Requester side: an acquired node is gone.
    NodeLost {
        /// The request.
        request: RequestId,
        /// The peer that lent it.
        lender: P,
        /// The booking.
        booking: BookingId,
        /// Why.
        reason: NodeLoss,
    },
    /// Requester side: a counted request holds all the nodes it asked for.
    /// Emitted again if it falls short and is filled again before its timeout.
    Satisfied {
        /// The request.
        request: RequestId,
    },
    /// Requester side: a counted request reached its timeout short of its
    /// count. It keeps the nodes it holds and asks no more.
    TimedOut {
        /// The request.
        request: RequestId,
        /// Nodes held at the timeout.
        acquired: usize,
    },
    /// Requester side: the request ended ([`Peer::end_request`] or
    /// [`Peer::leave`]); every booking was released.
    Ended {
        /// The request.
        request: RequestId,
    },
    /// A message was refused (wrong token, malformed). Nothing else happened.
    Rejected {
        /// Its sender, as given by the driver.
        from: P,
        /// What was wrong.
        error: InputError,
    },
}

/// Why an acquaintance link ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkLoss {
    /// No answer to a heartbeat within [`Config::answer_timeout`].
    Dead,
    /// The driver said so ([`Peer::peer_down`]).
    Down,
    /// The peer left us ([`Message::Leave`]).
    Left,
    /// The peer does not count us as an acquaintance.
    OneSided,
}

/// Why a lent slot became free (lender side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotEnd {
    /// The requester released it.
    Released,
    /// Nothing was deployed on it within [`Config::booking_expiry`].
    Expired,
    /// The requester stopped answering heartbeats, or the driver said it is
    /// down.
    RequesterLost,
    /// This peer is leaving the overlay.
    Leaving,
}

/// Why an acquired node was lost (requester side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeLoss {
    /// The lender stopped answering heartbeats, or the driver said it is down.
    LenderLost,
    /// The lender gave it back.
    Released(ReleaseReason),
}

/// What was wrong with a message received.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The envelope's token is not this overlay's.
    #[error("message with a wrong overlay token")]
    WrongToken,
    /// The bytes or the content make no sense.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// The states of a lent slot: free → offered → booked → in use → free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotState<P> {
    /// Available.
    Free,
    /// Held for a requester that was sent an [`Message::Offer`], until it
    /// answers or `until`.
    Offered {
        /// Booking id given in the offer.
        booking: BookingId,
        /// The request answered.
        request: RequestId,
        /// The requester.
        requester: P,
        /// The offer lapses then.
        until: Time,
    },
    /// Booked by the requester; a runtime is being deployed; expires at `until`.
    Booked {
        /// The booking.
        booking: BookingId,
        /// The request.
        request: RequestId,
        /// The requester.
        requester: P,
        /// Expiry if nothing is deployed.
        until: Time,
    },
    /// A runtime runs on it for the requester.
    InUse {
        /// The booking.
        booking: BookingId,
        /// The request.
        request: RequestId,
        /// The requester.
        requester: P,
    },
}

impl<P> SlotState<P> {
    /// The booking of a slot that is not free.
    pub fn booking(&self) -> Option<BookingId> {
        match self {
            SlotState::Free => None,
            SlotState::Offered { booking, .. }
            | SlotState::Booked { booking, .. }
            | SlotState::InUse { booking, .. } => Some(*booking),
        }
    }

    /// The peer a slot that is not free is held for.
    pub fn requester(&self) -> Option<&P> {
        match self {
            SlotState::Free => None,
            SlotState::Offered { requester, .. }
            | SlotState::Booked { requester, .. }
            | SlotState::InUse { requester, .. } => Some(requester),
        }
    }
}

/// Where a request stands (requester side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestStatus {
    /// What was asked.
    pub wanted: Wanted,
    /// Nodes booked and acknowledged.
    pub acquired: usize,
    /// Bookings sent and not yet acknowledged.
    pub pending: usize,
    /// Whether it still floods new rounds when short.
    pub asking: bool,
}

/// Counters of one peer, for reports and simulations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages handed to [`Peer::handle`].
    pub received: u64,
    /// Messages rejected (wrong token, malformed).
    pub rejected: u64,
    /// Floods (request rounds and explorations) handled for the first time.
    pub floods_handled: u64,
    /// Request messages dropped as duplicates (a round seen before).
    pub duplicate_requests: u64,
    /// Exploring messages dropped as duplicates.
    pub duplicate_explores: u64,
    /// Request rounds started by this peer.
    pub rounds: u64,
}

/// One peer of the overlay, as a sans-IO state machine.
///
/// Feed it with [`Peer::handle`] (messages), [`Peer::tick`] (time, at the
/// latest at [`Peer::next_deadline`]) and local commands ([`Peer::acquire`],
/// [`Peer::end_request`], [`Peer::deployed`]…); after each call, drain
/// [`Peer::poll_output`] and carry out what it says.
pub struct Peer<P: PeerId> {
    me: P,
    config: Config,
    rng: fastrand::Rng,
    /// First-contact list, retried whenever below NOA.
    contacts: Vec<P>,
    /// Peers suggested by refusals, tried once each.
    referrals: VecDeque<P>,
    /// Referrals that may still be tried at once (not waiting for the next
    /// upkeep) before the next upkeep: bounds a walk through refusals.
    prompt_tries: usize,
    acquaintances: BTreeSet<P>,
    /// Acquaintance requests sent, awaiting an answer.
    handshakes: BTreeMap<P, Time>,
    /// Heartbeats sent, awaiting any sign of life.
    probes: BTreeMap<P, Time>,
    memory: FloodMemory,
    slots: Vec<SlotState<P>>,
    next_booking: u64,
    requests: BTreeMap<RequestId, Acquisition<P>>,
    next_upkeep: Time,
    outputs: VecDeque<Output<P>>,
    stats: Stats,
}

/// A request seen from its requester.
struct Acquisition<P> {
    wanted: Wanted,
    /// End of asking for a counted request.
    deadline: Option<Time>,
    closed: bool,
    next_round: Time,
    acquired: BTreeSet<(P, BookingId)>,
    /// Book sent, acknowledgement awaited until the time given.
    pending: BTreeMap<(P, BookingId), Time>,
}

impl<P: Ord> Acquisition<P> {
    /// Slots it would still book now.
    fn room(&self) -> usize {
        match self.wanted {
            _ if self.closed => 0,
            Wanted::Max => usize::MAX,
            Wanted::Count(n) => {
                (n as usize).saturating_sub(self.acquired.len() + self.pending.len())
            }
        }
    }

    fn holds(&self, lender: &P, booking: BookingId) -> bool
    where
        P: Clone,
    {
        let key = (lender.clone(), booking);
        self.acquired.contains(&key) || self.pending.contains_key(&key)
    }
}

impl<P: PeerId> Peer<P> {
    /// A peer named `me`, knowing `contacts` (its first-contact list), at
    /// time `now`. All its randomness comes from `seed`.
    pub fn new(me: P, config: Config, contacts: Vec<P>, now: Time, seed: u64) -> Peer<P> {
        let slots = vec![SlotState::Free; config.slots as usize];
        let mut rng = fastrand::Rng::with_seed(seed);
        // Booking ids start at a random point so that a restarted peer with
        // the same name does not reuse the ids of its former life.
        let next_booking = rng.u64(..u64::MAX / 2);
        let contacts = contacts.into_iter().filter(|c| *c != me).collect();
        Peer {
            memory: FloodMemory::new(config.memory_capacity, config.memory_lifetime),
            me,
            config,
            rng,
            contacts,
            referrals: VecDeque::new(),
            prompt_tries: 0,
            acquaintances: BTreeSet::new(),
            handshakes: BTreeMap::new(),
            probes: BTreeMap::new(),
            slots,
            next_booking,
            requests: BTreeMap::new(),
            next_upkeep: now,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    // ---- inspection ----------------------------------------------------

    /// This peer's name.
    pub fn id(&self) -> &P {
        &self.me
    }

    /// Its settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its acquaintances.
    pub fn acquaintances(&self) -> impl Iterator<Item = &P> {
        self.acquaintances.iter()
    }

    /// Number of acquaintances.
    pub fn degree(&self) -> usize {
        self.acquaintances.len()
    }

    /// Its slots and their states.
    pub fn slots(&self) -> &[SlotState<P>] {
        &self.slots
    }

    /// The requests it made that are not ended.
    pub fn requests(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.requests.keys().copied()
    }

    /// Where request `id` stands, if it is not ended.
    pub fn request_status(&self, id: RequestId) -> Option<RequestStatus> {
        self.requests.get(&id).map(|a| RequestStatus {
            wanted: a.wanted,
            acquired: a.acquired.len(),
            pending: a.pending.len(),
            asking: a.room() > 0,
        })
    }

    /// The nodes request `id` holds: (lender, booking).
    pub fn acquired(&self, id: RequestId) -> impl Iterator<Item = &(P, BookingId)> {
        self.requests
            .get(&id)
            .into_iter()
            .flat_map(|a| a.acquired.iter())
    }

    /// Its counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    // ---- driving -------------------------------------------------------

    /// The next output to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// When [`Peer::tick`] must be called next (it may be called earlier).
    pub fn next_deadline(&self) -> Time {
        let answer = self.config.answer_timeout;
        let mut next = self.next_upkeep;
        let mut consider = |t: Time| next = next.min(t);
        self.probes.values().for_each(|&t| consider(t + answer));
        self.handshakes.values().for_each(|&t| consider(t + answer));
        for slot in &self.slots {
            match slot {
                SlotState::Offered { until, .. } | SlotState::Booked { until, .. } => {
                    consider(*until)
                }
                SlotState::Free | SlotState::InUse { .. } => {}
            }
        }
        for acquisition in self.requests.values() {
            acquisition.pending.values().for_each(|&t| consider(t));
            if !acquisition.closed {
                if let Some(deadline) = acquisition.deadline {
                    consider(deadline);
                }
                if acquisition.room() > 0 {
                    consider(acquisition.next_round);
                }
            }
        }
        next
    }

    /// Lets time pass: runs every timer due at `now`.
    pub fn tick(&mut self, now: Time) {
        let answer = self.config.answer_timeout;

        let dead: Vec<P> = (self.probes.iter())
            .filter(|&(_, &sent)| sent + answer <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in dead {
            self.lose_peer(peer, LinkLoss::Dead);
        }
        self.handshakes.retain(|_, sent| *sent + answer > now);

        self.expire_slots(now);
        self.run_requests(now);

        if self.next_upkeep <= now {
            self.upkeep(now);
            self.next_upkeep = now + self.config.ttu;
        }
    }

    /// Handles an encoded envelope from `from` (see [`Envelope::decode`]).
    pub fn handle_bytes(&mut self, now: Time, from: P, bytes: &[u8]) {
        match Envelope::decode(bytes) {
            Ok(envelope) => self.handle(now, from, envelope),
            Err(e) => self.reject(from, InputError::Malformed(e.to_string())),
        }
    }

    /// Handles a message from `from`, whose identity the driver vouches for
    /// (the transport's peer, not a field of the message).
    pub fn handle(&mut self, now: Time, from: P, envelope: Envelope<P>) {
        self.stats.received += 1;
        if !envelope.token.matches(&self.config.token) {
            return self.reject(from, InputError::WrongToken);
        }
        if envelope.message.longest_list() > MAX_LIST {
            return self.reject(from, InputError::Malformed("list too long".into()));
        }
        if from == self.me {
            return self.reject(
                from,
                InputError::Malformed("sent by this peer to itself".into()),
            );
        }
        // Any message is a sign of life.
        self.probes.remove(&from);

        match envelope.message {
            Message::Heartbeat { lent, borrowed } => self.on_heartbeat(from, lent, borrowed),
            Message::HeartbeatAck { acquainted } => {
                if !acquainted && self.acquaintances.remove(&from) {
                    self.emit(Event::AcquaintanceLost {
                        peer: from,
                        reason: LinkLoss::OneSided,
                    });
                }
            }
            Message::AcquaintRequest => self.on_acquaint_request(from),
            Message::AcquaintReply {
                accepted,
                referrals,
            } => self.on_acquaint_reply(now, from, accepted, referrals),
            Message::Leave => {
                self.handshakes.remove(&from);
                if self.acquaintances.remove(&from) {
                    self.emit(Event::AcquaintanceLost {
                        peer: from,
                        reason: LinkLoss::Left,
                    });
                }
            }
            Message::Explore { flood, origin, ttl } => {
                self.on_explore(now, from, flood, origin, ttl)
            }
            Message::Request {
                flood,
                request,
                origin,
                ttl,
                wanted,
            } => self.on_request(now, from, flood, request, origin, ttl, wanted),
            Message::Offer { request, bookings } => self.on_offer(now, from, request, bookings),
            Message::Book {
                request,
                take,
                decline,
            } => self.on_book(now, from, request, take, decline),
            Message::Booked {
                request,
                booked,
                refused,
            } => self.on_booked(from, request, booked, refused),
            Message::Release { bookings } => self.on_release(from, bookings),
            Message::Released { bookings, reason } => self.on_released(from, bookings, reason),
        }
    }

    // ---- local commands ------------------------------------------------

    /// Starts a node request for `wanted` nodes and floods its first round.
    pub fn acquire(&mut self, now: Time, wanted: Wanted) -> RequestId {
        let mut id = RequestId(self.rng.u64(..));
        while self.requests.contains_key(&id) {
            id = RequestId(self.rng.u64(..));
        }
        let deadline = match wanted {
            Wanted::Count(_) => Some(now + self.config.acquisition_timeout),
            Wanted::Max => None,
        };
        self.requests.insert(
            id,
            Acquisition {
                wanted,
                deadline,
                closed: false,
                next_round: now,
                acquired: BTreeSet::new(),
                pending: BTreeMap::new(),
            },
        );
        if wanted == Wanted::Count(0) {
            self.emit(Event::Satisfied { request: id });
        }
        self.run_requests(now);
        id
    }

    /// Ends request `id`: every node it holds or is booking is released, later
    /// offers are declined. Emits [`Event::Ended`].
    pub fn end_request(&mut self, id: RequestId) {
        let Some(acquisition) = self.requests.remove(&id) else {
            return;
        };
        let mut by_lender: BTreeMap<P, Vec<BookingId>> = BTreeMap::new();
        let held = (acquisition.acquired.into_iter()).chain(acquisition.pending.into_keys());
        for (lender, booking) in held {
            by_lender.entry(lender).or_default().push(booking);
        }
        for (lender, bookings) in by_lender {
            self.release(lender, bookings);
        }
        self.emit(Event::Ended { request: id });
    }

    /// Gives back one node of request `id` (the application is done with
    /// it). A counted request asks for one node less, so it is not replaced.
    pub fn release_node(&mut self, id: RequestId, lender: P, booking: BookingId) {
        let Some(acquisition) = self.requests.get_mut(&id) else {
            return;
        };
        if acquisition.acquired.remove(&(lender.clone(), booking)) {
            if let Wanted::Count(n) = &mut acquisition.wanted {
                *n = n.saturating_sub(1);
            }
            self.send(
                lender,
                Message::Release {
                    bookings: vec![booking],
                },
            );
        }
    }

    /// Lender side: the runtime for `booking` is still being set up (its
    /// program fetched, its vessel prepared): the booking's expiry counts
    /// again from now. False if the booking is unknown or ended.
    pub fn staging(&mut self, booking: BookingId, now: Time) -> bool {
        let expiry = self.config.booking_expiry;
        for slot in &mut self.slots {
            if let SlotState::Booked {
                booking: b, until, ..
            } = slot
                && *b == booking
            {
                *until = now + expiry;
                return true;
            }
        }
        false
    }

    /// Lender side: the runtime for `booking` runs. False if the booking is
    /// unknown or ended (stop the runtime then).
    pub fn deployed(&mut self, booking: BookingId) -> bool {
        for slot in &mut self.slots {
            if let SlotState::Booked {
                booking: b,
                request,
                requester,
                ..
            } = slot
            {
                if *b == booking {
                    *slot = SlotState::InUse {
                        booking,
                        request: *request,
                        requester: requester.clone(),
                    };
                    return true;
                }
            }
        }
        matches!(self.slot_of(booking), Some(SlotState::InUse { .. }))
    }

    /// Lender side: the runtime for `booking` ended (or could not be
    /// started). The slot is free; the requester is told.
    pub fn runtime_ended(&mut self, booking: BookingId) {
        let Some(index) = self.slot_index(booking) else {
            return;
        };
        let old = std::mem::replace(&mut self.slots[index], SlotState::Free);
        if let SlotState::Booked { requester, .. } | SlotState::InUse { requester, .. } = old {
            let reason = ReleaseReason::Ended;
            let bookings = vec![booking];
            self.send(requester, Message::Released { bookings, reason });
        }
    }

    /// The driver knows `peer` is gone (connection refused, process ended):
    /// same as a heartbeat left unanswered, without the wait.
    pub fn peer_down(&mut self, peer: P) {
        self.lose_peer(peer, LinkLoss::Down);
    }

    /// Adds first contacts (kept and retried whenever below NOA).
    pub fn add_contacts(&mut self, peers: impl IntoIterator<Item = P>) {
        for peer in peers {
            if peer != self.me && !self.contacts.contains(&peer) {
                self.contacts.push(peer);
            }
        }
    }

    /// Leaves the overlay cleanly: acquaintances are told, lent slots are
    /// given back to their requesters and own requests are ended.
    pub fn leave(&mut self) {
        let ids: Vec<RequestId> = self.requests.keys().copied().collect();
        for id in ids {
            self.end_request(id);
        }
        for index in 0..self.slots.len() {
            let old = std::mem::replace(&mut self.slots[index], SlotState::Free);
            if let SlotState::Booked {
                booking, requester, ..
            }
            | SlotState::InUse {
                booking, requester, ..
            } = old
            {
                let reason = ReleaseReason::Leaving;
                self.send(
                    requester.clone(),
                    Message::Released {
                        bookings: vec![booking],
                        reason,
                    },
                );
                let reason = SlotEnd::Leaving;
                self.emit(Event::SlotFreed {
                    booking,
                    requester,
                    reason,
                });
            }
        }
        for peer in std::mem::take(&mut self.acquaintances) {
            self.send(peer, Message::Leave);
        }
        self.handshakes.clear();
        self.probes.clear();
    }

    // ---- acquaintances -------------------------------------------------

    /// The acceptance rule: always below NOA, never at 2·NOA or more,
    /// with probability 2 − n/NOA in between (n counts acquaintances and
    /// requests in flight).
    fn should_accept(&mut self) -> bool {
        let noa = self.config.noa();
        let n = self.acquaintances.len() + self.handshakes.len();
        if n < noa {
            true
        } else if n >= 2 * noa {
            false
        } else {
            self.rng.f64() < 2.0 - n as f64 / noa as f64
        }
    }

    fn has_room(&self) -> bool {
        self.acquaintances.len() < 2 * self.config.noa()
    }

    fn add_acquaintance(&mut self, peer: P) {
        if self.acquaintances.insert(peer.clone()) {
            self.emit(Event::AcquaintanceAdded(peer));
        }
    }

    fn on_acquaint_request(&mut self, from: P) {
        if self.acquaintances.contains(&from) {
            return self.reply_acquaint(from, true);
        }
        // Crossed requests: we asked them too, so we want them.
        let accept = self.handshakes.remove(&from).is_some() || self.should_accept();
        if accept && self.has_room() {
            self.add_acquaintance(from.clone());
            self.reply_acquaint(from, true);
        } else {
            self.reply_acquaint(from, false);
        }
    }

    fn reply_acquaint(&mut self, to: P, accepted: bool) {
        let referrals = if accepted {
            Vec::new()
        } else {
            let mut known: Vec<P> = (self.acquaintances.iter())
                .filter(|p| **p != to)
                .cloned()
                .collect();
            self.rng.shuffle(&mut known);
            known.truncate(self.config.referrals);
            known
        };
        self.send(
            to,
            Message::AcquaintReply {
                accepted,
                referrals,
            },
        );
    }

    fn on_acquaint_reply(&mut self, now: Time, from: P, accepted: bool, referrals: Vec<P>) {
        self.handshakes.remove(&from);
        if accepted {
            if self.acquaintances.contains(&from) {
                return;
            }
            if self.has_room() {
                self.add_acquaintance(from);
            } else {
                // They count us; tell them we cannot count them.
                self.send(from, Message::Leave);
            }
            return;
        }
        let cap = 4 * self.config.noa();
        for peer in referrals {
            let known = peer == self.me
                || self.acquaintances.contains(&peer)
                || self.handshakes.contains_key(&peer)
                || self.referrals.contains(&peer);
            if !known {
                self.referrals.push_back(peer);
            }
        }
        while self.referrals.len() > cap {
            self.referrals.pop_front();
        }
        // Still short: try a referral now rather than a TTU later, so that a
        // newcomer refused by busy first contacts joins within seconds.
        while self.prompt_tries > 0
            && self.acquaintances.len() + self.handshakes.len() < self.config.noa()
        {
            let Some(peer) = self.referrals.pop_front() else {
                break;
            };
            if self.acquaintances.contains(&peer) || self.handshakes.contains_key(&peer) {
                continue;
            }
            self.prompt_tries -= 1;
            self.handshakes.insert(peer.clone(), now);
            self.send(peer, Message::AcquaintRequest);
        }
    }

    fn on_explore(&mut self, now: Time, from: P, flood: FloodId, origin: P, ttl: u32) {
        if !self.memory.insert(flood, now) {
            self.stats.duplicate_explores += 1;
            return;
        }
        self.stats.floods_handled += 1;
        if origin == self.me {
            return;
        }
        let known = self.acquaintances.contains(&origin) || self.handshakes.contains_key(&origin);
        if !known && self.should_accept() {
            // An answer stops this branch of the flood.
            self.handshakes.insert(origin.clone(), now);
            return self.send(origin, Message::AcquaintRequest);
        }
        let ttl = ttl.min(self.config.max_ttl).saturating_sub(1);
        if ttl > 0 {
            let message = Message::Explore { flood, origin, ttl };
            self.forward(message, &from);
        }
    }

    /// Heartbeats, first contacts, exploration: once every TTU.
    fn upkeep(&mut self, now: Time) {
        // Everyone we depend on or who depends on us: acquaintances and the
        // other side of every booking.
        let mut watched: BTreeMap<P, (Vec<BookingId>, Vec<BookingId>)> = BTreeMap::new();
        for peer in &self.acquaintances {
            watched.entry(peer.clone()).or_default();
        }
        for slot in &self.slots {
            if let SlotState::Booked {
                booking, requester, ..
            }
            | SlotState::InUse {
                booking, requester, ..
            } = slot
            {
                watched
                    .entry(requester.clone())
                    .or_default()
                    .0
                    .push(*booking);
            }
        }
        for acquisition in self.requests.values() {
            let held = acquisition
                .acquired
                .iter()
                .chain(acquisition.pending.keys());
            for (lender, booking) in held {
                watched.entry(lender.clone()).or_default().1.push(*booking);
            }
        }
        for (peer, (lent, borrowed)) in watched {
            if !self.probes.contains_key(&peer) {
                self.probes.insert(peer.clone(), now);
                // Each booking listed is checked on its own: lists longer
                // than a receiver accepts go in several heartbeats.
                let parts = lent.len().max(borrowed.len()).div_ceil(MAX_LIST).max(1);
                for part in 0..parts {
                    let slice = |list: &[BookingId]| -> Vec<BookingId> {
                        list.iter()
                            .skip(part * MAX_LIST)
                            .take(MAX_LIST)
                            .copied()
                            .collect()
                    };
                    let (lent, borrowed) = (slice(&lent), slice(&borrowed));
                    self.send(peer.clone(), Message::Heartbeat { lent, borrowed });
                }
            }
        }

        let noa = self.config.noa();
        self.prompt_tries = 2 * noa;
        if self.acquaintances.len() + self.handshakes.len() < noa {
            let mut candidates = self.contacts.clone();
            self.rng.shuffle(&mut candidates);
            candidates.extend(self.referrals.drain(..));
            for peer in candidates {
                if self.acquaintances.len() + self.handshakes.len() >= noa {
                    break;
                }
                if self.acquaintances.contains(&peer) || self.handshakes.contains_key(&peer) {
                    continue;
                }
                self.handshakes.insert(peer.clone(), now);
                self.send(peer, Message::AcquaintRequest);
            }
        } else if self.acquaintances.len() < 2 * noa {
            // One first contact a TTU, even with NOA acquaintances: two
            // parts of an overlay that each reached NOA (after a partition
            // heals, or peers started knowing only earlier ones) would
            // otherwise never meet again.
            let mut idle: Vec<P> = (self.contacts.iter())
                .filter(|c| !self.acquaintances.contains(*c) && !self.handshakes.contains_key(*c))
                .cloned()
                .collect();
            if !idle.is_empty() {
                let peer = idle.swap_remove(self.rng.usize(..idle.len()));
                self.handshakes.insert(peer.clone(), now);
                self.send(peer, Message::AcquaintRequest);
            }
        }
        if self.acquaintances.len() < noa && !self.acquaintances.is_empty() {
            let flood = FloodId(self.rng.u64(..));
            self.memory.insert(flood, now);
            let origin = self.me.clone();
            let ttl = self.config.exploring_ttl.min(self.config.max_ttl);
            self.forward(Message::Explore { flood, origin, ttl }, &self.me.clone());
        }
    }

    fn on_heartbeat(&mut self, from: P, lent: Vec<BookingId>, borrowed: Vec<BookingId>) {
        let acquainted = self.acquaintances.contains(&from) || self.handshakes.contains_key(&from);
        self.send(from.clone(), Message::HeartbeatAck { acquainted });

        // Slots of theirs we are said to hold but do not: give them back.
        let stray: Vec<BookingId> = (lent.into_iter())
            .filter(|b| !self.requests.values().any(|a| a.holds(&from, *b)))
            .collect();
        if !stray.is_empty() {
            self.release(from.clone(), stray);
        }
        // Slots of ours they believe they hold but we do not lend them.
        let unknown: Vec<BookingId> = (borrowed.into_iter())
            .filter(|b| {
                self.slot_of(*b)
                    .is_none_or(|slot| slot.requester() != Some(&from))
            })
            .collect();
        if !unknown.is_empty() {
            let reason = ReleaseReason::Unknown;
            self.send(
                from,
                Message::Released {
                    bookings: unknown,
                    reason,
                },
            );
        }
    }

    /// Forgets everything that involves `peer`.
    fn lose_peer(&mut self, peer: P, reason: LinkLoss) {
        self.probes.remove(&peer);
        self.handshakes.remove(&peer);
        if self.acquaintances.remove(&peer) {
            self.emit(Event::AcquaintanceLost {
                peer: peer.clone(),
                reason,
            });
        }
        for index in 0..self.slots.len() {
            if self.slots[index].requester() != Some(&peer) {
                continue;
            }
            let old = std::mem::replace(&mut self.slots[index], SlotState::Free);
            if let SlotState::Booked { booking, .. } | SlotState::InUse { booking, .. } = old {
                self.emit(Event::SlotFreed {
                    booking,
                    requester: peer.clone(),
                    reason: SlotEnd::RequesterLost,
                });
            }
        }
        let mut lost = Vec::new();
        for (id, acquisition) in &mut self.requests {
            acquisition.pending.retain(|(lender, _), _| *lender != peer);
            acquisition.acquired.retain(|(lender, booking)| {
                let keep = *lender != peer;
                if !keep {
                    lost.push((*id, *booking));
                }
                keep
            });
        }
        for (request, booking) in lost {
            self.emit(Event::NodeLost {
                request,
                lender: peer.clone(),
                booking,
                reason: NodeLoss::LenderLost,
            });
        }
    }

    // ---- lender side ---------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn on_request(
        &mut self,
        now: Time,
        from: P,
        flood: FloodId,
        request: RequestId,
        origin: P,
        ttl: u32,
        wanted: Wanted,
    ) {
        if !self.memory.insert(flood, now) {
            self.stats.duplicate_requests += 1;
            return;
        }
        self.stats.floods_handled += 1;
        if origin == self.me {
            return;
        }
        let free = self.slots.iter().filter(|s| **s == SlotState::Free).count();
        // One offer lists no more than a receiver accepts; the requester
        // asks again for the rest.
        let offered = match wanted {
            Wanted::Count(n) => free.min(n as usize),
            Wanted::Max => free,
        }
        .min(MAX_LIST);
        let mut bookings = Vec::with_capacity(offered);
        let until = now + self.config.answer_timeout;
        for slot in self.slots.iter_mut().filter(|s| **s == SlotState::Free) {
            if bookings.len() == offered {
                break;
            }
            let booking = BookingId(self.next_booking);
            self.next_booking += 1;
            bookings.push(booking);
            *slot = SlotState::Offered {
                booking,
                request,
                requester: origin.clone(),
                until,
            };
        }
        if !bookings.is_empty() {
            self.send(origin.clone(), Message::Offer { request, bookings });
        }

        let wanted = match wanted {
            Wanted::Count(n) => Wanted::Count(n.saturating_sub(offered as u32)),
            Wanted::Max => Wanted::Max,
        };
        let ttl = ttl.min(self.config.max_ttl).saturating_sub(1);
        if ttl > 0 && wanted != Wanted::Count(0) {
            let skip = from;
            let message = Message::Request {
                flood,
                request,
                origin,
                ttl,
                wanted,
            };
            self.forward(message, &skip);
        }
    }

    fn on_book(
        &mut self,
        now: Time,
        from: P,
        request: RequestId,
        take: Vec<BookingId>,
        decline: Vec<BookingId>,
    ) {
        for booking in decline {
            if let Some(index) = self.offered_to(booking, &from) {
                self.slots[index] = SlotState::Free;
            }
        }
        let mut booked = Vec::new();
        let mut refused = Vec::new();
        let until = now + self.config.booking_expiry;
        for booking in take {
            match self.offered_to(booking, &from) {
                Some(index) => {
                    self.slots[index] = SlotState::Booked {
                        booking,
                        request,
                        requester: from.clone(),
                        until,
                    };
                    booked.push(booking);
                    self.emit(Event::Deploy {
                        booking,
                        request,
                        requester: from.clone(),
                    });
                }
                None => refused.push(booking),
            }
        }
        if !booked.is_empty() || !refused.is_empty() {
            self.send(
                from,
                Message::Booked {
                    request,
                    booked,
                    refused,
                },
            );
        }
    }

    fn on_release(&mut self, from: P, bookings: Vec<BookingId>) {
        for booking in bookings {
            let Some(index) = self.slot_index(booking) else {
                continue;
            };
            if self.slots[index].requester() != Some(&from) {
                continue;
            }
            let old = std::mem::replace(&mut self.slots[index], SlotState::Free);
            if let SlotState::Booked { .. } | SlotState::InUse { .. } = old {
                self.emit(Event::SlotFreed {
                    booking,
                    requester: from.clone(),
                    reason: SlotEnd::Released,
                });
            }
        }
    }

    fn expire_slots(&mut self, now: Time) {
        for index in 0..self.slots.len() {
            match &self.slots[index] {
                SlotState::Offered { until, .. } if *until <= now => {
                    self.slots[index] = SlotState::Free;
                }
                SlotState::Booked {
                    until,
                    booking,
                    requester,
                    ..
                } if *until <= now => {
                    let (booking, requester) = (*booking, requester.clone());
                    self.slots[index] = SlotState::Free;
                    self.send(
                        requester.clone(),
                        Message::Released {
                            bookings: vec![booking],
                            reason: ReleaseReason::Expired,
                        },
                    );
                    self.emit(Event::SlotFreed {
                        booking,
                        requester,
                        reason: SlotEnd::Expired,
                    });
                }
                _ => {}
            }
        }
    }

    fn slot_index(&self, booking: BookingId) -> Option<usize> {
        self.slots.iter().position(|s| s.booking() == Some(booking))
    }

    fn slot_of(&self, booking: BookingId) -> Option<&SlotState<P>> {
        self.slots.iter().find(|s| s.booking() == Some(booking))
    }

    fn offered_to(&self, booking: BookingId, requester: &P) -> Option<usize> {
        self.slots.iter().position(|s| {
            matches!(s, SlotState::Offered { booking: b, requester: r, .. }
                if *b == booking && r == requester)
        })
    }

    // ---- requester side ------------------------------------------------

    fn on_offer(&mut self, now: Time, from: P, request: RequestId, bookings: Vec<BookingId>) {
        let until = now + self.config.answer_timeout;
        let room = self.requests.get(&request).map_or(0, |a| a.room());
        // A booking is one slot: offered again (twice in this offer, or
        // already awaited or held for a request of this peer) it is neither
        // taken a second time nor declined (declining would free the slot
        // the first taker holds). Only a confused or lying lender does it.
        let mut seen = BTreeSet::new();
        let bookings: Vec<BookingId> = bookings
            .into_iter()
            .filter(|&booking| {
                let key = (from.clone(), booking);
                seen.insert(booking)
                    && !self
                        .requests
                        .values()
                        .any(|a| a.pending.contains_key(&key) || a.acquired.contains(&key))
            })
            .collect();
        let cut = room.min(bookings.len());
        let mut take = bookings;
        let decline = take.split_off(cut);
        if let Some(acquisition) = self.requests.get_mut(&request) {
            for booking in &take {
                acquisition.pending.insert((from.clone(), *booking), until);
            }
        }
        self.send(
            from,
            Message::Book {
                request,
                take,
                decline,
            },
        );
    }

    fn on_booked(
        &mut self,
        from: P,
        request: RequestId,
        booked: Vec<BookingId>,
        refused: Vec<BookingId>,
    ) {
        let mut stray = Vec::new();
        let mut acquired = Vec::new();
        let mut satisfied = false;
        match self.requests.get_mut(&request) {
            Some(acquisition) => {
                for booking in booked {
                    let key = (from.clone(), booking);
                    if acquisition.pending.remove(&key).is_some() {
                        acquisition.acquired.insert(key);
                        acquired.push(booking);
                    } else {
                        // We gave up waiting for it: not ours any more.
                        stray.push(booking);
                    }
                }
                for booking in refused {
                    acquisition.pending.remove(&(from.clone(), booking));
                }
                satisfied = !acquired.is_empty()
                    && acquisition.wanted == Wanted::Count(acquisition.acquired.len() as u32);
            }
            None => stray = booked,
        }
        for booking in acquired {
            self.emit(Event::NodeAcquired {
                request,
                lender: from.clone(),
                booking,
            });
        }
        if satisfied {
            self.emit(Event::Satisfied { request });
        }
        if !stray.is_empty() {
            self.release(from, stray);
        }
    }

    fn on_released(&mut self, from: P, bookings: Vec<BookingId>, reason: ReleaseReason) {
        let mut lost = Vec::new();
        for (id, acquisition) in &mut self.requests {
            for booking in &bookings {
                let key = (from.clone(), *booking);
                acquisition.pending.remove(&key);
                if acquisition.acquired.remove(&key) {
                    lost.push((*id, *booking));
                }
            }
        }
        for (request, booking) in lost {
            self.emit(Event::NodeLost {
                request,
                lender: from.clone(),
                booking,
                reason: NodeLoss::Released(reason),
            });
        }
    }

    /// Bookings left unacknowledged, timeouts, new rounds.
    fn run_requests(&mut self, now: Time) {
        let mut releases: Vec<(P, BookingId)> = Vec::new();
        let mut timed_out = Vec::new();
        let mut rounds = Vec::new();
        for (id, acquisition) in &mut self.requests {
            acquisition.pending.retain(|key, until| {
                let keep = *until > now;
                if !keep {
                    // The lender may have booked it and lost the answer.
                    releases.push(key.clone());
                }
                keep
            });
            if !acquisition.closed && acquisition.deadline.is_some_and(|d| d <= now) {
                acquisition.closed = true;
                let held = acquisition.acquired.len();
                if acquisition.wanted != Wanted::Count(held as u32) {
                    timed_out.push((*id, held));
                }
            }
            let room = acquisition.room();
            if room > 0 && acquisition.next_round <= now {
                acquisition.next_round = now + self.config.lookup_period;
                let wanted = match acquisition.wanted {
                    Wanted::Max => Wanted::Max,
                    Wanted::Count(_) => Wanted::Count(room as u32),
                };
                rounds.push((*id, wanted));
            }
        }
        for (lender, booking) in releases {
            self.send(
                lender,
                Message::Release {
                    bookings: vec![booking],
                },
            );
        }
        for (request, acquired) in timed_out {
            self.emit(Event::TimedOut { request, acquired });
        }
        for (request, wanted) in rounds {
            self.stats.rounds += 1;
            let flood = FloodId(self.rng.u64(..));
            self.memory.insert(flood, now);
            let message = Message::Request {
                flood,
                request,
                origin: self.me.clone(),
                ttl: self.config.ttl.min(self.config.max_ttl),
                wanted,
            };
            self.forward(message, &self.me.clone());
        }
    }

    // ---- outputs -------------------------------------------------------

    /// Sends `message` to every acquaintance but `skip` and the message's
    /// origin.
    fn forward(&mut self, message: Message<P>, skip: &P) {
        let origin = match &message {
            Message::Explore { origin, .. } | Message::Request { origin, .. } => Some(origin),
            _ => None,
        };
        let token = self.config.token;
        for peer in &self.acquaintances {
            if peer == skip || Some(peer) == origin {
                continue;
            }
            self.outputs.push_back(Output::Send {
                to: peer.clone(),
                envelope: Envelope {
                    token,
                    message: message.clone(),
                },
            });
        }
    }

    /// Gives `bookings` back to `lender`, in as many messages as a
    /// receiver's list limit needs.
    fn release(&mut self, lender: P, bookings: Vec<BookingId>) {
        for part in bookings.chunks(MAX_LIST) {
            self.send(
                lender.clone(),
                Message::Release {
                    bookings: part.to_vec(),
                },
            );
        }
    }

    fn send(&mut self, to: P, message: Message<P>) {
        let token = self.config.token;
        self.outputs.push_back(Output::Send {
            to,
            envelope: Envelope { token, message },
        });
    }

    fn emit(&mut self, event: Event<P>) {
        self.outputs.push_back(Output::Event(event));
    }

    fn reject(&mut self, from: P, error: InputError) {
        self.stats.rejected += 1;
        self.emit(Event::Rejected { from, error });
    }
}
