//! One overlay peer (`acquisition/src/overlay`) fed a sequence of inputs:
//! arbitrary bytes and valid messages through `Peer::handle_bytes`, from
//! several peers, with and without the right token, interleaved with time
//! passing and the driver's commands (input format: `fuzz/src/lib.rs`).
//!
//! After every step:
//! * nothing panicked, and every message decodes back to what was encoded;
//! * the peer sends nothing to itself, only with its overlay's token, and
//!   no list longer than a receiver accepts;
//! * its slots are never over-booked: distinct bookings, never held for
//!   itself; the bookings it asked the driver to deploy on (`Deploy` not
//!   yet followed by `SlotFreed`) are exactly its booked and used slots;
//! * a counted request never holds or awaits more nodes than it wants; the
//!   nodes announced (`NodeAcquired` not yet followed by `NodeLost`) are
//!   exactly those its requests hold, each announced once, and no lent slot
//!   counts for two requests;
//! * it keeps at most 2·NOA acquaintances;
//! * after a tick, no timer is still due (a driver would spin).

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actogrid_acquisition::overlay::{
    BookingId, Config, Envelope, Event, FloodId, MAX_LIST, Message, Output, Peer, ReleaseReason,
    RequestId, SlotState, Time, Token, Wanted,
};
use actogrid_fuzz::{self as format, Input, NAMES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut harness = Harness::new(&mut input);
    while !input.is_empty() {
        harness.step(&mut input);
        harness.drain();
        harness.check();
    }
});

/// Bookings and requests remembered to be named again (a fuzzer does not
/// guess random 64-bit ids).
const POOL: usize = 32;

struct Harness {
    peer: Peer<String>,
    me: String,
    now: Time,
    token: Token,
    slots: usize,
    noa: usize,
    bookings: Vec<BookingId>,
    requests: Vec<RequestId>,
    /// `Deploy` events not yet followed by `SlotFreed` (or the driver's
    /// `runtime_ended`): booking → requester.
    lent: BTreeMap<BookingId, String>,
    /// `NodeAcquired` events not yet followed by `NodeLost`, `Ended` or the
    /// driver's `release_node`.
    nodes: BTreeSet<(RequestId, String, BookingId)>,
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Harness {
        let slots = usize::from(input.u8() % 5);
        let noa = u32::from(input.u8() % 3) + 1;
        let token = if input.u8() % 2 == 0 {
            Token::OPEN
        } else {
            Token::from_secret(format::POOL_SECRET)
        };
        let seed = u64::from(input.u8());
        let config = Config {
            slots: slots as u32,
            noa,
            token,
            ..Config::default()
        };
        let me = NAMES[0].to_owned();
        let contacts = vec![NAMES[1].to_owned(), NAMES[2].to_owned()];
        Harness {
            peer: Peer::new(me.clone(), config, contacts, Time::ZERO, seed),
            me,
            now: Time::ZERO,
            token,
            slots,
            noa: noa as usize,
            bookings: Vec::new(),
            requests: Vec::new(),
            lent: BTreeMap::new(),
            nodes: BTreeSet::new(),
        }
    }

    fn step(&mut self, input: &mut Input<'_>) {
        match input.u8() % format::OPS {
            format::RAW => {
                let from = name(input.u8());
                let len = usize::from(input.u16());
                self.peer.handle_bytes(self.now, from, input.bytes(len));
            }
            format::MESSAGE => {
                let from = name(input.u8());
                let token = if input.u8() < 240 {
                    self.token
                } else {
                    Token::from_secret(b"another pool")
                };
                let message = self.message(input);
                self.remember_message(&message);
                let envelope = Envelope { token, message };
                let bytes = envelope.encode();
                assert_eq!(Envelope::decode(&bytes).as_ref(), Ok(&envelope));
                self.peer.handle_bytes(self.now, from, &bytes);
            }
            format::WAIT => {
                let wait = Duration::from_millis(u64::from(input.u16()) * 64);
                self.tick(self.now + wait);
            }
            format::DEADLINE => self.tick(self.now.max(self.peer.next_deadline())),
            format::ACQUIRE => {
                let wanted = wanted(input.u8());
                let id = self.peer.acquire(self.now, wanted);
                remember(&mut self.requests, id);
            }
            format::END => {
                let id = self.request(input);
                self.peer.end_request(id);
            }
            format::RELEASE_NODE => {
                let held: Vec<_> = self.nodes.iter().cloned().collect();
                let pick = usize::from(input.u8());
                if let Some((request, lender, booking)) = held.get(pick % held.len().max(1)) {
                    self.nodes
                        .remove(&(*request, lender.clone(), *booking));
                    self.peer.release_node(*request, lender.clone(), *booking);
                }
            }
            format::DEPLOYED => {
                let booking = self.booking(input);
                let running = self.peer.deployed(booking);
                let in_use = self
                    .peer
                    .slots()
                    .iter()
                    .any(|s| matches!(s, SlotState::InUse { booking: b, .. } if *b == booking));
                assert_eq!(running, in_use, "deployed({booking:?}) said {running}");
            }
            format::RUNTIME_ENDED => {
                let booking = self.booking(input);
                // The driver knows its runtime ended: no `SlotFreed` follows.
                self.lent.remove(&booking);
                self.peer.runtime_ended(booking);
            }
            format::PEER_DOWN => self.peer.peer_down(name(input.u8())),
            format::LEAVE => self.peer.leave(),
            _ => unreachable!("operations are taken modulo OPS"),
        }
    }

    fn tick(&mut self, now: Time) {
        self.now = now;
        self.peer.tick(now);
        let next = self.peer.next_deadline();
        assert!(
            next > now,
            "a timer is still due after a tick at {now:?}: {next:?}"
        );
    }

    /// Carries out the outputs, checking each and keeping the model of
    /// what the events announced.
    fn drain(&mut self) {
        while let Some(output) = self.peer.poll_output() {
            match output {
                Output::Send { to, envelope } => {
                    assert_ne!(to, self.me, "sent to itself: {envelope:?}");
                    assert!(envelope.token == self.token, "sent with another token");
                    assert!(
                        envelope.message.longest_list() <= MAX_LIST,
                        "sent a {} with a list of {} (receivers reject more than {MAX_LIST})",
                        envelope.message.kind(),
                        envelope.message.longest_list()
                    );
                    let bytes = envelope.encode();
                    assert_eq!(Envelope::decode(&bytes).as_ref(), Ok(&envelope));
                    self.remember_message(&envelope.message);
                }
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    fn on_event(&mut self, event: Event<String>) {
        match event {
            Event::Deploy {
                booking,
                request,
                requester,
            } => {
                remember(&mut self.bookings, booking);
                remember(&mut self.requests, request);
                let before = self.lent.insert(booking, requester);
                assert!(before.is_none(), "{booking:?} deployed twice");
            }
            Event::SlotFreed {
                booking, requester, ..
            } => {
                let held = self.lent.remove(&booking);
                assert_eq!(
                    held.as_ref(),
                    Some(&requester),
                    "{booking:?} freed for {requester} but was not deployed for it"
                );
            }
            Event::NodeAcquired {
                request,
                lender,
                booking,
            } => {
                let new = self.nodes.insert((request, lender.clone(), booking));
                assert!(
                    new,
                    "node {booking:?} of {lender} announced twice for {request:?}"
                );
            }
            Event::NodeLost {
                request,
                lender,
                booking,
                ..
            } => {
                let held = self.nodes.remove(&(request, lender.clone(), booking));
                assert!(held, "node {booking:?} of {lender} lost but never acquired");
            }
            Event::Ended { request } => self.nodes.retain(|(r, _, _)| *r != request),
            Event::AcquaintanceAdded(_)
            | Event::AcquaintanceLost { .. }
            | Event::Satisfied { .. }
            | Event::TimedOut { .. }
            | Event::Rejected { .. } => {}
        }
    }

    fn check(&self) {
        // Lender side.
        let slots = self.peer.slots();
        assert_eq!(slots.len(), self.slots);
        let mut seen = BTreeSet::new();
        let mut deployed = BTreeMap::new();
        for slot in slots {
            if let Some(booking) = slot.booking() {
                assert!(seen.insert(booking), "{booking:?} on two slots");
            }
            assert_ne!(slot.requester(), Some(&self.me), "a slot held for itself");
            if let SlotState::Booked {
                booking, requester, ..
            }
            | SlotState::InUse {
                booking, requester, ..
            } = slot
            {
                deployed.insert(*booking, requester.clone());
            }
        }
        assert_eq!(
            deployed, self.lent,
            "booked and used slots differ from the Deploy events not freed"
        );

        // Requester side.
        let mut held = BTreeSet::new();
        let mut lenders = BTreeSet::new();
        for id in self.peer.requests() {
            let status = self.peer.request_status(id).expect("a listed request");
            if let Wanted::Count(n) = status.wanted {
                assert!(
                    status.acquired + status.pending <= n as usize,
                    "{id:?} wants {n} and holds {} + awaits {}",
                    status.acquired,
                    status.pending
                );
            }
            assert_eq!(self.peer.acquired(id).count(), status.acquired);
            for (lender, booking) in self.peer.acquired(id) {
                held.insert((id, lender.clone(), *booking));
                assert!(
                    lenders.insert((lender.clone(), *booking)),
                    "node {booking:?} of {lender} held by two requests"
                );
            }
        }
        assert_eq!(
            held, self.nodes,
            "nodes held differ from the NodeAcquired events not lost"
        );

        assert!(self.peer.degree() <= 2 * self.noa, "over 2·NOA acquaintances");
    }

    /// A valid message built from the input.
    fn message(&mut self, input: &mut Input<'_>) -> Message<String> {
        match input.u8() % 12 {
            0 => Message::Heartbeat {
                lent: self.booking_list(input),
                borrowed: self.booking_list(input),
            },
            1 => Message::HeartbeatAck {
                acquainted: input.u8() % 2 == 0,
            },
            2 => Message::AcquaintRequest,
            3 => Message::AcquaintReply {
                accepted: input.u8() % 2 == 0,
                referrals: (0..input.u8() % 8).map(|_| peer_field(input.u8())).collect(),
            },
            4 => Message::Leave,
            5 => Message::Explore {
                flood: FloodId(u64::from(input.u8())),
                origin: peer_field(input.u8()),
                ttl: ttl(input.u8()),
            },
            6 => Message::Request {
                flood: FloodId(u64::from(input.u8())),
                request: self.request(input),
                origin: peer_field(input.u8()),
                ttl: ttl(input.u8()),
                wanted: wanted(input.u8()),
            },
            7 => Message::Offer {
                request: self.request(input),
                bookings: self.booking_list(input),
            },
            8 => Message::Book {
                request: self.request(input),
                take: self.booking_list(input),
                decline: self.booking_list(input),
            },
            9 => Message::Booked {
                request: self.request(input),
                booked: self.booking_list(input),
                refused: self.booking_list(input),
            },
            10 => Message::Release {
                bookings: self.booking_list(input),
            },
            _ => Message::Released {
                bookings: self.booking_list(input),
                reason: match input.u8() % 4 {
                    0 => ReleaseReason::Expired,
                    1 => ReleaseReason::Ended,
                    2 => ReleaseReason::Unknown,
                    _ => ReleaseReason::Leaving,
                },
            },
        }
    }

    /// A booking: mostly one the peer or the messages named, else a small
    /// or an arbitrary number.
    fn booking(&self, input: &mut Input<'_>) -> BookingId {
        let known: Vec<BookingId> = (self.peer.slots().iter())
            .filter_map(SlotState::booking)
            .chain(self.bookings.iter().copied())
            .collect();
        match input.u8() {
            255 => BookingId(input.u64()),
            pick if pick < 192 && !known.is_empty() => known[usize::from(pick) % known.len()],
            pick => BookingId(u64::from(pick)),
        }
    }

    /// Empty, a few bookings, or a run of consecutive ones as long as a
    /// message may carry (and a little longer).
    fn booking_list(&self, input: &mut Input<'_>) -> Vec<BookingId> {
        match input.u8() % 4 {
            0 => Vec::new(),
            1 => vec![self.booking(input)],
            2 => (0..input.u8() % 6).map(|_| self.booking(input)).collect(),
            _ => {
                let BookingId(start) = self.booking(input);
                let len = u64::from(input.u16()) % (MAX_LIST as u64 + 64);
                (0..len).map(|i| BookingId(start.wrapping_add(i))).collect()
            }
        }
    }

    fn request(&self, input: &mut Input<'_>) -> RequestId {
        let known: Vec<RequestId> = (self.peer.requests())
            .chain(self.requests.iter().copied())
            .collect();
        match input.u8() {
            255 => RequestId(input.u64()),
            pick if pick < 192 && !known.is_empty() => known[usize::from(pick) % known.len()],
            pick => RequestId(u64::from(pick)),
        }
    }

    fn remember_message(&mut self, message: &Message<String>) {
        let (request, bookings): (Option<RequestId>, &[BookingId]) = match message {
            Message::Request { request, .. } => (Some(*request), &[]),
            Message::Offer { request, bookings } => (Some(*request), bookings),
            Message::Book { request, take, .. } => (Some(*request), take),
            Message::Booked {
                request, booked, ..
            } => (Some(*request), booked),
            Message::Heartbeat { lent, .. } => (None, lent),
            Message::Release { bookings } | Message::Released { bookings, .. } => {
                (None, bookings)
            }
            _ => (None, &[]),
        };
        if let Some(request) = request {
            remember(&mut self.requests, request);
        }
        // A few are enough: long runs would push everything else out.
        for booking in bookings.iter().take(4) {
            remember(&mut self.bookings, *booking);
        }
    }
}

fn remember<T: PartialEq>(pool: &mut Vec<T>, item: T) {
    if !pool.contains(&item) {
        if pool.len() == POOL {
            pool.remove(0);
        }
        pool.push(item);
    }
}

/// A sender, as the driver names it.
fn name(pick: u8) -> String {
    NAMES[usize::from(pick) % NAMES.len()].to_owned()
}

/// A peer named inside a message: mostly a known one, sometimes a stranger.
fn peer_field(pick: u8) -> String {
    if pick < 240 {
        name(pick)
    } else {
        format!("stranger-{pick}")
    }
}

fn ttl(pick: u8) -> u32 {
    if pick == 255 { u32::MAX } else { u32::from(pick % 20) }
}

fn wanted(pick: u8) -> Wanted {
    match pick {
        255 => Wanted::Max,
        254 => Wanted::Count(u32::MAX),
        n => Wanted::Count(u32::from(n % 7)),
    }
}
