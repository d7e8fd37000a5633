//! One test per protocol rule, on a handful of peers wired in memory.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::*;

const SEC: Duration = Duration::from_secs(1);

/// Decides which messages (from, to, message) are lost.
type Loss = Box<dyn FnMut(u32, u32, &Message<u32>) -> bool>;

/// Peers wired by an in-memory, instantaneous network that can drop.
struct Net {
    peers: BTreeMap<u32, Peer<u32>>,
    wire: VecDeque<(u32, u32, Envelope<u32>)>,
    events: Vec<(u32, Event<u32>)>,
    sent: Vec<(u32, u32, Message<u32>)>,
    /// Messages from→to matching this are lost.
    lose: Loss,
    now: Time,
}

fn config() -> Config {
    Config {
        noa: 2,
        ..Config::default()
    }
}

impl Net {
    fn new(config: Config, ids: &[u32]) -> Net {
        let peers = (ids.iter())
            .map(|&id| {
                (
                    id,
                    Peer::new(id, config.clone(), vec![], Time::ZERO, u64::from(id)),
                )
            })
            .collect();
        Net {
            peers,
            wire: VecDeque::new(),
            events: Vec::new(),
            sent: Vec::new(),
            lose: Box::new(|_, _, _| false),
            now: Time::ZERO,
        }
    }

    /// Makes `a` and `b` acquaintances through the handshake.
    fn link(&mut self, a: u32, b: u32) {
        self.inject(b, a, Message::AcquaintRequest);
        self.run();
        assert!(self.peer(a).acquaintances().any(|p| *p == b));
        assert!(self.peer(b).acquaintances().any(|p| *p == a));
    }

    fn peer(&self, id: u32) -> &Peer<u32> {
        &self.peers[&id]
    }

    fn peer_mut(&mut self, id: u32) -> &mut Peer<u32> {
        self.peers.get_mut(&id).expect("peer exists")
    }

    fn inject(&mut self, from: u32, to: u32, message: Message<u32>) {
        let token = self.peer(to).config().token;
        self.wire.push_back((from, to, Envelope { token, message }));
    }

    fn collect(&mut self) {
        for (&id, peer) in &mut self.peers {
            while let Some(output) = peer.poll_output() {
                match output {
                    Output::Send { to, envelope } => self.wire.push_back((id, to, envelope)),
                    Output::Event(event) => self.events.push((id, event)),
                }
            }
        }
    }

    /// Delivers until nothing is in flight.
    fn run(&mut self) {
        self.collect();
        while let Some((from, to, envelope)) = self.wire.pop_front() {
            self.sent.push((from, to, envelope.message.clone()));
            if (self.lose)(from, to, &envelope.message) {
                continue;
            }
            let now = self.now;
            if let Some(peer) = self.peers.get_mut(&to) {
                peer.handle(now, from, envelope);
            }
            self.collect();
        }
    }

    /// Lets `d` pass in one-second steps, running timers and deliveries.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = self.now + SEC;
            let now = self.now;
            for peer in self.peers.values_mut() {
                if peer.next_deadline() <= now {
                    peer.tick(now);
                }
            }
            self.run();
        }
    }

    fn kill(&mut self, id: u32) {
        self.peers.remove(&id);
    }

    fn events_of(&self, id: u32) -> Vec<&Event<u32>> {
        (self.events.iter())
            .filter(|(p, _)| *p == id)
            .map(|(_, e)| e)
            .collect()
    }

    fn count_sent(&self, kind: &str) -> usize {
        self.sent
            .iter()
            .filter(|(_, _, m)| m.kind() == kind)
            .count()
    }
}

fn slot_kinds(peer: &Peer<u32>) -> Vec<&'static str> {
    (peer.slots().iter())
        .map(|s| match s {
            SlotState::Free => "free",
            SlotState::Offered { .. } => "offered",
            SlotState::Booked { .. } => "booked",
            SlotState::InUse { .. } => "in use",
        })
        .collect()
}

// ---- acquaintances ----------------------------------------------------

#[test]
fn below_noa_a_peer_accepts_every_acquaintance() {
    let mut net = Net::new(config(), &[1, 2, 3]);
    net.link(1, 2);
    net.link(1, 3);
    assert_eq!(net.peer(1).degree(), 2);
}

#[test]
fn at_twice_noa_a_peer_refuses_and_refers_others() {
    let mut net = Net::new(config(), &[1, 2, 3, 4, 5, 6]);
    for other in 2..=5 {
        net.link(1, other);
    }
    net.inject(6, 1, Message::AcquaintRequest);
    net.run();
    assert_eq!(net.peer(1).degree(), 4, "2·NOA is the ceiling");
    let reply = net.sent.iter().rev().find(|(f, t, _)| (*f, *t) == (1, 6));
    match reply {
        Some((
            _,
            _,
            Message::AcquaintReply {
                accepted,
                referrals,
            },
        )) => {
            assert!(!accepted);
            assert!(!referrals.is_empty() && referrals.iter().all(|r| (2..=5).contains(r)));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn between_noa_and_twice_noa_acceptance_is_a_coin_falling_with_degree() {
    // At n = 1.5·NOA the rule accepts with probability 1/2.
    let noa = 4;
    let mut accepted = 0;
    for seed in 0..400 {
        let config = Config {
            noa,
            ..Config::default()
        };
        let mut peer = Peer::new(0u32, config, vec![], Time::ZERO, seed);
        let mut other = 1;
        while peer.degree() < 6 {
            let token = peer.config().token;
            peer.handle(
                Time::ZERO,
                other,
                Envelope {
                    token,
                    message: Message::AcquaintRequest,
                },
            );
            other += 1;
        }
        let token = peer.config().token;
        peer.handle(
            Time::ZERO,
            99,
            Envelope {
                token,
                message: Message::AcquaintRequest,
            },
        );
        accepted += usize::from(peer.acquaintances().any(|p| *p == 99));
    }
    assert!((140..260).contains(&accepted), "accepted {accepted} of 400");
}

#[test]
fn every_ttu_acquaintances_are_heartbeaten_and_the_silent_dropped() {
    let mut net = Net::new(config(), &[1, 2, 3]);
    net.link(1, 2);
    net.link(1, 3);
    net.advance(SEC);
    let before = net.count_sent("heartbeat");
    net.advance(Config::default().ttu);
    assert!(net.count_sent("heartbeat") > before, "heartbeats every TTU");
    assert_eq!(net.peer(1).degree(), 2, "answered heartbeats keep links");

    net.kill(3);
    net.advance(Config::default().ttu + Config::default().answer_timeout + SEC);
    assert_eq!(net.peer(1).degree(), 1);
    assert!(net.events_of(1).iter().any(|e| matches!(
        e,
        Event::AcquaintanceLost {
            peer: 3,
            reason: LinkLoss::Dead
        }
    )));
}

#[test]
fn below_noa_first_contacts_are_retried_until_they_answer() {
    let mut net = Net::new(config(), &[1, 2]);
    net.peer_mut(1).add_contacts([2]);
    // The first contact is unreachable for a while.
    net.lose = Box::new(|_, to, _| to == 2);
    net.advance(3 * Config::default().ttu);
    assert_eq!(net.peer(1).degree(), 0);
    assert!(net.count_sent("acquaint-request") >= 3, "retried every TTU");
    net.lose = Box::new(|_, _, _| false);
    net.advance(Config::default().ttu);
    assert_eq!(net.peer(1).degree(), 1);
}

#[test]
fn below_noa_a_peer_explores_and_a_peer_in_need_answers() {
    // 1 – 2 – 3 – 4 (a chain; NOA 2): 1 is below NOA and explores.
    let mut net = Net::new(config(), &[1, 2, 3, 4]);
    net.link(1, 2);
    net.link(2, 3);
    net.link(3, 4);
    net.advance(SEC);
    assert!(net.count_sent("explore") > 0);
    // 3 is at NOA… 4 is below: it answers with an acquaintance request.
    assert!(
        net.peer(1).degree() >= 2,
        "exploring found a new acquaintance"
    );
}

#[test]
fn an_exploring_flood_stops_at_its_ttl() {
    let config = Config {
        noa: 1,
        exploring_ttl: 2,
        ..Config::default()
    };
    let mut net = Net::new(config, &[1, 2, 3, 4, 5]);
    net.link(2, 3);
    net.link(2, 5);
    net.link(3, 4);
    // 2 and 3 have 2·NOA acquaintances: they forward rather than answer.
    let explore = Message::Explore {
        flood: FloodId(5),
        origin: 1,
        ttl: 2,
    };
    net.inject(1, 2, explore);
    net.run();
    let mut reached: Vec<u32> = (net.sent.iter())
        .filter(|(_, _, m)| m.kind() == "explore")
        .map(|(_, to, _)| *to)
        .collect();
    reached.sort();
    assert_eq!(
        reached,
        vec![2, 3, 5],
        "ttl 2: one forward, then it dies (4 is not reached)"
    );
}

#[test]
fn a_one_sided_link_is_dropped_at_the_next_heartbeat() {
    let mut net = Net::new(config(), &[1, 2]);
    net.link(1, 2);
    // 2 forgets 1 without telling it (e.g. its Leave was lost).
    let now = net.now;
    net.peer_mut(2).handle(
        now,
        1,
        Envelope {
            token: Token::OPEN,
            message: Message::Leave,
        },
    );
    net.run();
    net.advance(Config::default().ttu + SEC);
    assert!(net.events_of(1).iter().any(|e| matches!(
        e,
        Event::AcquaintanceLost {
            peer: 2,
            reason: LinkLoss::OneSided
        }
    )));
}

// ---- requests -----------------------------------------------------------

/// 1 asks; 2, 3, 4 lend one slot each; 1 – 2 – 3 – 4, fixed (NOA 1: nobody
/// explores).
fn chain() -> Net {
    let config = Config {
        noa: 1,
        ..Config::default()
    };
    let mut net = Net::new(config, &[1, 2, 3, 4]);
    net.link(1, 2);
    net.link(2, 3);
    net.link(3, 4);
    net.advance(SEC);
    net
}

#[test]
fn a_free_slot_is_offered_booked_acknowledged_and_deployed() {
    let mut net = chain();
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Count(1));
    net.run();
    let deploy = net.events_of(2).into_iter().find_map(|e| match e {
        Event::Deploy {
            booking,
            request: r,
            requester: 1,
        } if *r == request => Some(*booking),
        _ => None,
    });
    let booking = deploy.expect("the nearest lender was asked to deploy");
    assert!(net.events_of(1).contains(&&Event::NodeAcquired {
        request,
        lender: 2,
        booking
    }));
    assert!(net.events_of(1).contains(&&Event::Satisfied { request }));
    assert_eq!(slot_kinds(net.peer(2)), ["booked"]);
    assert!(net.peer_mut(2).deployed(booking));
    assert_eq!(slot_kinds(net.peer(2)), ["in use"]);
    assert_eq!(
        slot_kinds(net.peer(3)),
        ["free"],
        "2 offered the only node wanted; 3 never saw it"
    );
}

#[test]
fn a_booking_offered_twice_is_held_by_one_request_only() {
    let mut net = chain();
    let now = net.now;
    let first = net.peer_mut(1).acquire(now, Wanted::Count(3));
    let second = net.peer_mut(1).acquire(now, Wanted::Count(3));
    // A lender offers one booking twice in one offer, then again to the
    // other request, and claims both booked.
    let booking = BookingId(77);
    net.inject(
        5,
        1,
        Message::Offer {
            request: first,
            bookings: vec![booking, booking],
        },
    );
    net.inject(
        5,
        1,
        Message::Offer {
            request: second,
            bookings: vec![booking],
        },
    );
    net.run();
    for request in [first, second] {
        net.inject(
            5,
            1,
            Message::Booked {
                request,
                booked: vec![booking],
                refused: Vec::new(),
            },
        );
    }
    net.run();
    let holders: Vec<RequestId> = [first, second]
        .into_iter()
        .filter(|&r| {
            net.peer(1)
                .acquired(r)
                .any(|(l, b)| *l == 5 && *b == booking)
        })
        .collect();
    assert_eq!(holders, [first], "one slot counts for one request");
}

#[test]
fn offers_beyond_the_count_are_declined_and_the_slot_is_free_again() {
    let mut net = chain();
    // 3 and 4 both offer to a request for one node: 3 through a forwarded
    // copy, 4 through a copy injected at the same time.
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Count(1));
    net.collect();
    net.inject(
        1,
        4,
        Message::Request {
            flood: FloodId(77),
            request,
            origin: 1,
            ttl: 1,
            wanted: Wanted::Count(1),
        },
    );
    net.run();
    let status = net.peer(1).request_status(request).expect("open");
    assert_eq!(status.acquired, 1);
    assert!(net.count_sent("book") >= 2);
    let lent: usize = [2, 3, 4]
        .iter()
        .map(|&p| {
            slot_kinds(net.peer(p))
                .iter()
                .filter(|k| **k != "free")
                .count()
        })
        .sum();
    assert_eq!(lent, 1, "exactly one slot held over the overlay");
}

#[test]
fn a_duplicate_flood_is_dropped() {
    let mut net = chain();
    let round = Message::Request {
        flood: FloodId(9),
        request: RequestId(9),
        origin: 1,
        ttl: 1,
        wanted: Wanted::Count(5),
    };
    net.inject(1, 2, round.clone());
    net.inject(3, 2, round);
    net.run();
    assert_eq!(net.peer(2).stats().duplicate_requests, 1);
    assert_eq!(net.count_sent("offer"), 1, "one offer, not two");
}

#[test]
fn a_request_is_forwarded_while_ttl_is_left() {
    let config = Config {
        ttl: 2,
        noa: 1,
        ..Config::default()
    };
    let mut net = Net::new(config, &[1, 2, 3, 4]);
    net.link(1, 2);
    net.link(2, 3);
    net.link(3, 4);
    net.advance(SEC);
    let now = net.now;
    net.peer_mut(1).acquire(now, Wanted::Count(10));
    net.run();
    let offers: Vec<u32> = (net.sent.iter())
        .filter(|(_, _, m)| m.kind() == "offer")
        .map(|(from, _, _)| *from)
        .collect();
    assert_eq!(offers, vec![2, 3], "ttl 2 reaches two hops, not three");
}

#[test]
fn an_unsatisfied_request_asks_again_until_its_timeout() {
    let config = Config {
        slots: 0,
        ..config()
    };
    let mut net = Net::new(config.clone(), &[1, 2]);
    net.link(1, 2);
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Count(1));
    net.run();
    net.advance(config.acquisition_timeout + SEC);
    let rounds = net.peer(1).stats().rounds;
    let expected = config.acquisition_timeout.as_secs() / config.lookup_period.as_secs();
    assert!(rounds >= expected, "{rounds} rounds");
    assert!(net.events_of(1).contains(&&Event::TimedOut {
        request,
        acquired: 0
    }));
    net.advance(config.lookup_period * 3);
    assert_eq!(
        net.peer(1).stats().rounds,
        rounds,
        "no rounds after the timeout"
    );
}

#[test]
fn a_late_slot_is_found_by_a_later_round() {
    let mut net = chain();
    // 2, 3 and 4 are busy at first.
    for lender in [2, 3, 4] {
        let now = net.now;
        net.peer_mut(lender).acquire(now, Wanted::Max);
    }
    net.run();
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Count(3));
    net.run();
    assert_eq!(
        net.peer(1).request_status(request).map(|s| s.acquired),
        Some(0)
    );
    // They end their requests: slots become free, the next round takes them.
    for lender in [2, 3, 4] {
        let ids: Vec<RequestId> = net.peer(lender).requests().collect();
        ids.into_iter()
            .for_each(|id| net.peer_mut(lender).end_request(id));
    }
    net.advance(Config::default().lookup_period + SEC);
    assert_eq!(
        net.peer(1).request_status(request).map(|s| s.acquired),
        Some(3)
    );
}

#[test]
fn a_booking_with_nothing_deployed_expires_and_the_requester_learns_it() {
    let mut net = chain();
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Count(1));
    net.run();
    net.advance(Config::default().booking_expiry + SEC);
    assert_eq!(slot_kinds(net.peer(2))[0], "free");
    assert!(net.events_of(2).iter().any(|e| matches!(
        e,
        Event::SlotFreed {
            reason: SlotEnd::Expired,
            ..
        }
    )));
    assert!(net.events_of(1).iter().any(|e| matches!(
        e,
        Event::NodeLost { request: r, reason: NodeLoss::Released(ReleaseReason::Expired), .. } if *r == request
    )));
}

#[test]
fn a_deployed_booking_does_not_expire() {
    let mut net = chain();
    let now = net.now;
    net.peer_mut(1).acquire(now, Wanted::Count(1));
    net.run();
    let booking = net.peer(2).slots()[0].booking().expect("booked");
    net.peer_mut(2).deployed(booking);
    net.advance(Config::default().booking_expiry * 2);
    assert_eq!(slot_kinds(net.peer(2)), ["in use"]);
}

#[test]
fn a_booking_whose_runtime_is_being_set_up_expires_only_once_that_stops() {
    let mut net = chain();
    let now = net.now;
    net.peer_mut(1).acquire(now, Wanted::Count(1));
    net.run();
    let booking = net.peer(2).slots()[0].booking().expect("booked");
    let expiry = Config::default().booking_expiry;
    // Said every half expiry, three expiries long: still booked.
    for _ in 0..6 {
        net.advance(expiry / 2);
        let now = net.now;
        assert!(net.peer_mut(2).staging(booking, now));
    }
    assert_eq!(slot_kinds(net.peer(2)), ["booked"]);
    // No longer said: it expires.
    net.advance(expiry + SEC);
    assert_eq!(slot_kinds(net.peer(2)), ["free"]);
    let now = net.now;
    assert!(!net.peer_mut(2).staging(booking, now), "an ended booking");
}

#[test]
fn ending_a_request_releases_every_booking() {
    let mut net = chain();
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Count(3));
    net.run();
    assert_eq!(
        net.peer(1).request_status(request).map(|s| s.acquired),
        Some(3)
    );
    net.peer_mut(1).end_request(request);
    net.run();
    for lender in [2, 3, 4] {
        assert_eq!(slot_kinds(net.peer(lender)), ["free"]);
        assert!(net.events_of(lender).iter().any(|e| matches!(
            e,
            Event::SlotFreed {
                reason: SlotEnd::Released,
                ..
            }
        )));
    }
    assert!(net.events_of(1).contains(&&Event::Ended { request }));
}

#[test]
fn max_takes_slots_freed_later_and_stops_cleanly_when_ended() {
    let mut net = chain();
    // 4 is busy with its own request at first.
    let now = net.now;
    let own = net.peer_mut(3).acquire(now, Wanted::Count(1));
    net.run();
    let request = net.peer_mut(1).acquire(now, Wanted::Max);
    net.run();
    let held = |net: &Net| net.peer(1).request_status(request).map(|s| s.acquired);
    let first = held(&net).expect("open");
    net.peer_mut(3).end_request(own);
    net.run();
    net.advance(Config::default().lookup_period + SEC);
    assert_eq!(
        held(&net),
        Some(first + 1),
        "the slot freed later was taken"
    );

    net.peer_mut(1).end_request(request);
    net.run();
    for lender in [2, 3, 4] {
        assert!(slot_kinds(net.peer(lender)).iter().all(|k| *k == "free"));
    }
    // A late offer for the ended request is declined.
    net.inject(
        2,
        1,
        Message::Offer {
            request,
            bookings: vec![BookingId(1)],
        },
    );
    net.run();
    assert!(matches!(
        net.sent.last(),
        Some((1, 2, Message::Book { take, decline, .. })) if take.is_empty() && decline == &[BookingId(1)]
    ));
    let sent = net.sent.len();
    net.advance(Config::default().lookup_period * 3);
    let rounds = net.sent[sent..]
        .iter()
        .filter(|(f, _, m)| *f == 1 && m.kind() == "request")
        .count();
    assert_eq!(rounds, 0, "an ended MAX request asks no more");
}

#[test]
fn an_unanswered_booking_is_not_counted_and_is_released() {
    let mut net = chain();
    net.lose = Box::new(|_, _, m| matches!(m, Message::Booked { .. }));
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Count(1));
    net.run();
    assert_eq!(
        net.peer(1)
            .request_status(request)
            .map(|s| (s.acquired, s.pending)),
        Some((0, 1))
    );
    net.lose = Box::new(|_, _, _| false);
    net.advance(Config::default().answer_timeout + SEC);
    assert_eq!(
        net.peer(1).request_status(request).map(|s| s.pending),
        Some(0)
    );
    assert!(
        net.count_sent("release") >= 1,
        "the lender is told, in case it booked"
    );
}

#[test]
fn a_lost_release_is_repaired_by_heartbeats() {
    let mut net = chain();
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Count(1));
    net.run();
    let booking = net.peer(2).slots()[0].booking().expect("booked");
    net.peer_mut(2).deployed(booking);
    net.lose = Box::new(|_, _, m| matches!(m, Message::Release { .. }));
    net.peer_mut(1).end_request(request);
    net.run();
    assert_eq!(slot_kinds(net.peer(2)), ["in use"], "the release was lost");
    net.lose = Box::new(|_, _, _| false);
    net.advance(Config::default().ttu + SEC);
    assert_eq!(
        slot_kinds(net.peer(2)),
        ["free"],
        "the heartbeat told the lender"
    );
}

#[test]
fn a_dead_lender_is_reported_lost_and_a_dead_requester_frees_the_slot() {
    let mut net = chain();
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Count(2));
    net.run();
    assert_eq!(
        net.peer(1).request_status(request).map(|s| s.acquired),
        Some(2)
    );
    net.kill(3);
    net.advance(Config::default().ttu + Config::default().answer_timeout + SEC);
    assert!(net.events_of(1).iter().any(|e| matches!(
        e,
        Event::NodeLost {
            lender: 3,
            reason: NodeLoss::LenderLost,
            ..
        }
    )));

    net.kill(1);
    net.advance(Config::default().ttu + Config::default().answer_timeout + SEC);
    assert!(net.events_of(2).iter().any(|e| matches!(
        e,
        Event::SlotFreed {
            requester: 1,
            reason: SlotEnd::RequesterLost,
            ..
        }
    )));
    assert_eq!(slot_kinds(net.peer(2)), ["free"]);
}

#[test]
fn the_driver_can_report_a_peer_down_at_once() {
    let mut net = chain();
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Count(1));
    net.run();
    net.peer_mut(1).peer_down(2);
    net.run();
    assert!(net.events_of(1).iter().any(|e| matches!(
        e,
        Event::NodeLost { request: r, lender: 2, reason: NodeLoss::LenderLost, .. } if *r == request
    )));
    assert!(!net.peer(1).acquaintances().any(|p| *p == 2));
}

// ---- authentication and malformed input --------------------------------

#[test]
fn a_wrong_token_is_rejected_and_nothing_else_happens() {
    let config = Config {
        token: Token::from_secret(b"overlay"),
        ..config()
    };
    let mut peer = Peer::new(1u32, config, vec![], Time::ZERO, 1);
    let envelope = Envelope {
        token: Token::from_secret(b"other"),
        message: Message::AcquaintRequest,
    };
    peer.handle(Time::ZERO, 2, envelope);
    assert_eq!(
        peer.poll_output(),
        Some(Output::Event(Event::Rejected {
            from: 2,
            error: InputError::WrongToken
        }))
    );
    assert_eq!(peer.poll_output(), None);
    assert_eq!(peer.degree(), 0);
}

#[test]
fn malformed_bytes_are_rejected() {
    let mut peer = Peer::new(1u32, config(), vec![], Time::ZERO, 1);
    peer.handle_bytes(Time::ZERO, 2, &[0xff, 0x00, 0x13]);
    assert!(matches!(
        peer.poll_output(),
        Some(Output::Event(Event::Rejected {
            error: InputError::Malformed(_),
            ..
        }))
    ));
}

#[test]
fn an_envelope_survives_its_encoding() {
    let envelope = Envelope {
        token: Token::from_secret(b"s"),
        message: Message::Request {
            flood: FloodId(1),
            request: RequestId(2),
            origin: 3u32,
            ttl: 4,
            wanted: Wanted::Max,
        },
    };
    assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
}

#[test]
fn ending_a_request_holding_more_than_a_list_releases_in_parts() {
    let mut net = chain();
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Max);
    // A lender offers more bookings, in two offers, than one message may
    // list; the request awaits them all when it ends.
    for first in [0, 1000] {
        net.inject(
            5,
            1,
            Message::Offer {
                request,
                bookings: (first..first + 1000).map(BookingId).collect(),
            },
        );
    }
    net.run();
    let sent = net.sent.len();
    net.peer_mut(1).end_request(request);
    net.run();
    let mut released = Vec::new();
    for (from, to, message) in &net.sent[sent..] {
        if let (1, 5, Message::Release { bookings }) = (from, to, message) {
            assert!(
                bookings.len() <= MAX_LIST,
                "a release of {}",
                bookings.len()
            );
            released.extend(bookings.iter().map(|b| b.0));
        }
    }
    released.sort_unstable();
    assert_eq!(released, (0..2000).collect::<Vec<u64>>());
}

#[test]
fn heartbeats_holding_more_than_a_list_go_in_parts() {
    let mut net = chain();
    let now = net.now;
    let request = net.peer_mut(1).acquire(now, Wanted::Max);
    // A lender lends more nodes than one message may list.
    for first in [0, 1000] {
        let bookings: Vec<BookingId> = (first..first + 1000).map(BookingId).collect();
        net.inject(
            5,
            1,
            Message::Offer {
                request,
                bookings: bookings.clone(),
            },
        );
        net.inject(
            5,
            1,
            Message::Booked {
                request,
                booked: bookings,
                refused: Vec::new(),
            },
        );
    }
    net.run();
    assert_eq!(
        net.peer(1)
            .acquired(request)
            .filter(|(l, _)| *l == 5)
            .count(),
        2000
    );
    let sent = net.sent.len();
    net.advance(Config::default().ttu + SEC);
    let mut borrowed = Vec::new();
    for (from, to, message) in &net.sent[sent..] {
        if let (1, 5, Message::Heartbeat { borrowed: b, lent }) = (from, to, message) {
            assert!(b.len() <= MAX_LIST && lent.len() <= MAX_LIST, "{}", b.len());
            borrowed.extend(b.iter().map(|b| b.0));
        }
    }
    borrowed.sort_unstable();
    borrowed.dedup();
    assert_eq!(borrowed.len(), 2000, "every node held is listed once");
}

#[test]
fn oversized_lists_are_rejected() {
    let mut peer = Peer::new(1u32, config(), vec![], Time::ZERO, 1);
    let bookings = vec![BookingId(0); MAX_LIST + 1];
    let message = Message::Release { bookings };
    peer.handle(
        Time::ZERO,
        2,
        Envelope {
            token: Token::OPEN,
            message,
        },
    );
    assert!(matches!(
        peer.poll_output(),
        Some(Output::Event(Event::Rejected {
            error: InputError::Malformed(_),
            ..
        }))
    ));
}
