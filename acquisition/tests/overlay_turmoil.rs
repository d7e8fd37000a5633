//! The overlay core over a simulated network (turmoil, fixed seed): peers
//! exchange encoded envelopes as datagrams, with the loss, partitions and
//! repairs of the simulation. A partition cuts a requester off from half
//! the slots; it gets the half it can reach, and the rest once the
//! partition heals and the two halves find each other again (through
//! their first contacts, which peers keep asking while below 2·NOA).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actogrid_acquisition::overlay::{Config, Event, Output, Peer, RequestId, Time, Token, Wanted};
use tokio::time::Instant;

const PORT: u16 = 7100;

type Shared<T> = Arc<Mutex<T>>;

fn config(slots: u32) -> Config {
    Config {
        // Each half (5 peers) can reach NOA on its own: the halves find
        // each other again only because peers keep asking one first
        // contact a TTU while below 2·NOA.
        noa: 3,
        ttu: Duration::from_millis(500),
        ttl: 6,
        exploring_ttl: 6,
        answer_timeout: Duration::from_secs(1),
        lookup_period: Duration::from_millis(500),
        acquisition_timeout: Duration::from_secs(120),
        booking_expiry: Duration::from_secs(5),
        slots,
        token: Token::from_secret(b"turmoil"),
        ..Config::default()
    }
}

/// Runs peer `me` over simulated UDP until the simulation ends; the
/// scenario reaches its core through `core` (to ask, to inspect).
async fn run_peer(
    me: String,
    slots: u32,
    contacts: Vec<String>,
    core: Shared<Option<Peer<String>>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let socket = turmoil::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
    // A seed of its own per peer (flood ids must differ between peers).
    let seed = me
        .bytes()
        .fold(11u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    *core.lock().unwrap() = Some(Peer::new(me.clone(), config(slots), contacts, now(), seed));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Carry out what the core asked for.
        let outputs: Vec<Output<String>> = {
            let mut guard = core.lock().unwrap();
            let peer = guard.as_mut().expect("started");
            peer.tick(now());
            std::iter::from_fn(|| peer.poll_output()).collect()
        };
        for output in outputs {
            match output {
                Output::Send { to, envelope } => {
                    let datagram = postcard::to_allocvec(&(me.clone(), envelope.encode()))?;
                    // Best effort, as the core expects.
                    let _ = socket.send_to(&datagram, (to.as_str(), PORT)).await;
                }
                Output::Event(Event::Deploy { booking, .. }) => {
                    // The runtime "starts" at once.
                    core.lock()
                        .unwrap()
                        .as_mut()
                        .expect("started")
                        .deployed(booking);
                }
                Output::Event(_) => {}
            }
        }
        let deadline = {
            let guard = core.lock().unwrap();
            guard.as_ref().expect("started").next_deadline()
        };
        let wait = Duration::from_millis(deadline.as_millis().saturating_sub(now().as_millis()))
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        if let Ok(received) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
            let (n, _) = received?;
            let mut guard = core.lock().unwrap();
            let peer = guard.as_mut().expect("started");
            match postcard::from_bytes::<(String, Vec<u8>)>(&buf[..n]) {
                Ok((from, bytes)) => peer.handle_bytes(now(), from, &bytes),
                Err(_) => continue,
            }
        }
    }
}

/// Simulated time since the simulation started: one clock for every
/// host's core.
fn now() -> Time {
    Time::from_millis(turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64)
}

fn acquired(core: &Shared<Option<Peer<String>>>, request: RequestId) -> usize {
    core.lock()
        .unwrap()
        .as_ref()
        .and_then(|p| p.request_status(request))
        .map_or(0, |s| s.acquired)
}

#[test]
fn a_partitioned_requester_gets_the_rest_once_the_partition_heals() {
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .simulation_duration(Duration::from_secs(300))
        .build();
    // Two halves, each a ring closed through the other half.
    let west = ["w0", "w1", "w2", "w3"];
    let east = ["e0", "e1", "e2", "e3"];
    let ring: Vec<&str> = west.iter().chain(east.iter()).copied().collect();
    for (i, name) in ring.iter().enumerate() {
        let next = ring[(i + 1) % ring.len()].to_owned();
        let prev = ring[(i + ring.len() - 1) % ring.len()].to_owned();
        let me = (*name).to_owned();
        sim.host(*name, move || {
            let core = Arc::new(Mutex::new(None));
            run_peer(me.clone(), 1, vec![next.clone(), prev.clone()], core)
        });
    }
    let requester: Shared<Option<Peer<String>>> = Arc::new(Mutex::new(None));
    let driven = requester.clone();
    sim.host("req", move || {
        run_peer(
            "req".to_owned(),
            0,
            vec!["w0".to_owned(), "w2".to_owned()],
            driven.clone(),
        )
    });
    let scenario = requester.clone();
    sim.client("scenario", async move {
        // The overlay forms.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for w in west.iter().chain(["req"].iter()) {
            for e in east {
                turmoil::partition(*w, e);
            }
        }
        // Heartbeats across the cut go unanswered: the halves split.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let request = {
            let mut guard = scenario.lock().unwrap();
            let peer = guard.as_mut().expect("the requester runs");
            peer.acquire(now(), Wanted::Count(6))
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            acquired(&scenario, request),
            west.len(),
            "only the reachable half lends"
        );
        for w in west.iter().chain(["req"].iter()) {
            for e in east {
                turmoil::repair(*w, e);
            }
        }
        let healed = Instant::now();
        while acquired(&scenario, request) < 6 {
            assert!(
                healed.elapsed() < Duration::from_secs(60),
                "{} of 6 nodes a minute after the repair",
                acquired(&scenario, request)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    });
    sim.run().expect("the scenario holds");
}
