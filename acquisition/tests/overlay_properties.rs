//! Properties of the overlay protocol under random schedules: requests and
//! ends at random peers, random latency (reordering), losses, crashes and
//! churn, driven through the simulator.
//!
//! * a peer never holds more bookings than slots, and its booked/used slots
//!   are exactly the bookings it announced (`Deploy`) and did not end;
//! * every booking ends in use, by expiry or by release: once requests end
//!   and messages flow again, every slot of every live peer is free;
//! * no peer handles a request round twice;
//! * a counted request never holds more nodes than it asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actogrid_acquisition::overlay::sim::{Session, Sim, SimConfig};
use actogrid_acquisition::overlay::{
    BookingId, Config, Envelope, Event, FloodId, Message, Peer, ReleaseReason, RequestId,
    SlotState, Time, Token, Wanted,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    /// Let this many milliseconds pass.
    Run(u64),
    /// The n-th live peer asks for nodes (`None`: MAX).
    Acquire(usize, Option<u32>),
    /// The n-th live peer ends its oldest request.
    End(usize),
    /// The n-th live peer crashes.
    Kill(usize),
    /// Messages are lost with this probability from now on.
    Loss(f64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..40_000).prop_map(Step::Run),
        3 => (any::<usize>(), prop::option::weighted(0.8, 0u32..6)).prop_map(|(p, n)| Step::Acquire(p, n)),
        2 => any::<usize>().prop_map(Step::End),
        1 => any::<usize>().prop_map(Step::Kill),
        1 => (0.0f64..0.4).prop_map(Step::Loss),
    ]
}

#[derive(Clone, Debug)]
struct World {
    peers: usize,
    noa: u32,
    ttl: u32,
    slots: u32,
    churn: bool,
    deploy_max_ms: u64,
    seed: u64,
}

fn world() -> impl Strategy<Value = World> {
    (
        3usize..10,
        1u32..4,
        1u32..5,
        prop_oneof![1 => Just(0u32), 5 => 1u32..3],
        any::<bool>(),
        500u64..12_000,
        any::<u64>(),
    )
        .prop_map(
            |(peers, noa, ttl, slots, churn, deploy_max_ms, seed)| World {
                peers,
                noa,
                ttl,
                slots,
                churn,
                deploy_max_ms,
                seed,
            },
        )
}

fn sim(world: &World) -> Sim {
    let peer = Config {
        noa: world.noa,
        ttl: world.ttl,
        ttu: Duration::from_secs(5),
        answer_timeout: Duration::from_secs(1),
        lookup_period: Duration::from_secs(3),
        acquisition_timeout: Duration::from_secs(20),
        booking_expiry: Duration::from_secs(8),
        slots: world.slots,
        ..Config::default()
    };
    let mut sim = Sim::new(SimConfig {
        peers: world.peers,
        peer,
        latency_median: Duration::from_millis(100),
        latency_sigma: 1.2,
        loss: 0.0,
        session: if world.churn {
            Session::LogNormal {
                mean: Duration::from_secs(90),
                sigma: 1.0,
            }
        } else {
            Session::Forever
        },
        lending: 1.0,
        contacts: 2,
        deploy_delay: (
            Duration::from_millis(200),
            Duration::from_millis(world.deploy_max_ms),
        ),
        seed: world.seed,
    });
    sim.record_messages(true);
    sim
}

/// What the events said so far.
#[derive(Default)]
struct Ledger {
    /// Bookings announced by `Deploy` and not ended by `SlotFreed`, per lender.
    open: BTreeMap<u32, BTreeSet<BookingId>>,
    /// Every `Deploy` seen: (lender, booking).
    deployed: BTreeSet<(u32, BookingId)>,
    /// Request rounds each peer has forwarded: (peer, flood) → (time, destinations).
    rounds: BTreeMap<(u32, FloodId), (Time, BTreeSet<u32>)>,
}

impl Ledger {
    fn absorb(&mut self, sim: &mut Sim) -> Result<(), TestCaseError> {
        for (_, peer, event) in sim.take_events() {
            match event {
                Event::Deploy { booking, .. } => {
                    prop_assert!(
                        self.deployed.insert((peer, booking)),
                        "booking announced twice"
                    );
                    self.open.entry(peer).or_default().insert(booking);
                }
                Event::SlotFreed { booking, .. } => {
                    let was_open = self.open.entry(peer).or_default().remove(&booking);
                    prop_assert!(was_open, "freed a booking never announced or already ended");
                }
                _ => {}
            }
        }
        for sent in sim.take_messages() {
            if let Message::Request { flood, .. } = sent.message {
                let entry = (self.rounds.entry((sent.from, flood)))
                    .or_insert_with(|| (sent.at, BTreeSet::new()));
                prop_assert_eq!(
                    entry.0,
                    sent.at,
                    "peer {} handled round {:?} twice",
                    sent.from,
                    flood
                );
                prop_assert!(entry.1.insert(sent.to), "round sent twice to the same peer");
            }
        }
        Ok(())
    }

    fn check(&self, sim: &Sim) -> Result<(), TestCaseError> {
        for &id in sim.live() {
            let Some(peer) = sim.peer(id) else { continue };
            // Never more bookings than slots; each booking on one slot only.
            let bookings: Vec<BookingId> =
                peer.slots().iter().filter_map(SlotState::booking).collect();
            let distinct: BTreeSet<BookingId> = bookings.iter().copied().collect();
            prop_assert!(bookings.len() <= peer.config().slots as usize);
            prop_assert_eq!(bookings.len(), distinct.len());
            // Booked and used slots are exactly the open announced bookings.
            let held: BTreeSet<BookingId> = (peer.slots().iter())
                .filter(|s| matches!(s, SlotState::Booked { .. } | SlotState::InUse { .. }))
                .filter_map(SlotState::booking)
                .collect();
            let open = self.open.get(&id).cloned().unwrap_or_default();
            prop_assert_eq!(&held, &open, "peer {} slots vs. its events", id);
            // A counted request never holds more than asked.
            for request in peer.requests() {
                let status = peer.request_status(request).expect("listed");
                if let Wanted::Count(n) = status.wanted {
                    prop_assert!(status.acquired + status.pending <= n as usize);
                }
            }
        }
        Ok(())
    }
}

fn nth(sim: &Sim, n: usize) -> Option<u32> {
    let live = sim.live();
    (!live.is_empty()).then(|| live[n % live.len()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn bookings_stay_within_slots_and_all_end(world in world(), steps in prop::collection::vec(step(), 1..30)) {
        let mut sim = sim(&world);
        let mut ledger = Ledger::default();
        sim.run_for(Duration::from_secs(10));
        ledger.absorb(&mut sim)?;
        for step in steps {
            match step {
                Step::Run(ms) => sim.run_for(Duration::from_millis(ms)),
                Step::Acquire(n, count) => {
                    if let Some(id) = nth(&sim, n) {
                        let wanted = count.map_or(Wanted::Max, Wanted::Count);
                        sim.command(id, |p, now| p.acquire(now, wanted));
                    }
                }
                Step::End(n) => {
                    if let Some(id) = nth(&sim, n) {
                        sim.command(id, |p, _| {
                            let first = p.requests().next();
                            if let Some(r) = first { p.end_request(r) }
                        });
                    }
                }
                Step::Kill(n) => {
                    if let Some(id) = nth(&sim, n) {
                        sim.kill(id);
                    }
                }
                Step::Loss(p) => sim.set_loss(p),
            }
            ledger.absorb(&mut sim)?;
            ledger.check(&sim)?;
        }

        // Quiescence: no more losses, every request ended. Heartbeats and
        // expiry must bring every slot back.
        sim.set_loss(0.0);
        for id in sim.live().to_vec() {
            sim.command(id, |p, _| {
                let ids: Vec<RequestId> = p.requests().collect();
                ids.into_iter().for_each(|r| p.end_request(r));
            });
        }
        sim.run_for(Duration::from_secs(30));
        ledger.absorb(&mut sim)?;
        ledger.check(&sim)?;
        for &id in sim.live() {
            let peer = sim.peer(id).expect("live");
            prop_assert!(
                peer.slots().iter().all(|s| *s == SlotState::Free),
                "peer {} keeps {:?} after every request ended", id, peer.slots()
            );
        }
    }
}

// ---- hostile input ------------------------------------------------------

fn message() -> impl Strategy<Value = Message<u32>> {
    let ids = || prop::collection::vec(any::<u64>().prop_map(BookingId), 0..5);
    let wanted = prop_oneof![any::<u32>().prop_map(Wanted::Count), Just(Wanted::Max)];
    let reason = prop_oneof![
        Just(ReleaseReason::Expired),
        Just(ReleaseReason::Ended),
        Just(ReleaseReason::Unknown),
        Just(ReleaseReason::Leaving)
    ];
    prop_oneof![
        (ids(), ids()).prop_map(|(lent, borrowed)| Message::Heartbeat { lent, borrowed }),
        any::<bool>().prop_map(|acquainted| Message::HeartbeatAck { acquainted }),
        Just(Message::AcquaintRequest),
        (any::<bool>(), prop::collection::vec(0u32..8, 0..5)).prop_map(|(accepted, referrals)| {
            Message::AcquaintReply {
                accepted,
                referrals,
            }
        }),
        Just(Message::Leave),
        (any::<u64>(), 0u32..8, any::<u32>()).prop_map(|(f, origin, ttl)| Message::Explore {
            flood: FloodId(f),
            origin,
            ttl
        }),
        (any::<u64>(), any::<u64>(), 0u32..8, any::<u32>(), wanted).prop_map(
            |(f, r, origin, ttl, wanted)| {
                Message::Request {
                    flood: FloodId(f),
                    request: RequestId(r),
                    origin,
                    ttl,
                    wanted,
                }
            }
        ),
        (any::<u64>(), ids()).prop_map(|(r, bookings)| Message::Offer {
            request: RequestId(r),
            bookings
        }),
        (any::<u64>(), ids(), ids()).prop_map(|(r, take, decline)| Message::Book {
            request: RequestId(r),
            take,
            decline
        }),
        (any::<u64>(), ids(), ids()).prop_map(|(r, booked, refused)| Message::Booked {
            request: RequestId(r),
            booked,
            refused
        }),
        ids().prop_map(|bookings| Message::Release { bookings }),
        (ids(), reason).prop_map(|(bookings, reason)| Message::Released { bookings, reason }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random messages from random senders, random bytes, at random times:
    /// no panic, and the slot and request bounds hold.
    #[test]
    fn hostile_input_never_breaks_a_peer(
        inputs in prop::collection::vec((0u32..8, message(), 0u64..30_000, any::<bool>()), 1..60),
        garbage in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..10),
        slots in 0u32..3,
    ) {
        let config = Config { slots, noa: 2, ..Config::default() };
        let mut peer = Peer::new(0u32, config, vec![1, 2], Time::ZERO, 3);
        let mut now = Time::ZERO;
        let request = peer.acquire(now, Wanted::Count(2));
        for (from, message, wait, acquire) in inputs {
            now = now + Duration::from_millis(wait);
            if acquire {
                peer.acquire(now, Wanted::Max);
            }
            peer.tick(now);
            let token = if from == 7 { Token::from_secret(b"intruder") } else { Token::OPEN };
            peer.handle(now, from, Envelope { token, message });
            while peer.poll_output().is_some() {}
            let bookings = peer.slots().iter().filter(|s| **s != SlotState::Free).count();
            prop_assert!(bookings <= slots as usize);
            if let Some(status) = peer.request_status(request) {
                prop_assert!(status.acquired + status.pending <= 2);
            }
        }
        for bytes in garbage {
            peer.handle_bytes(now, 1, &bytes);
        }
    }
}
