//! A discrete-event simulator of many [`Peer`]s: the same protocol core as
//! the daemon, driven by simulated time, latency, loss and churn.
//!
//! Peers are named by `u32` (never reused). Every message takes a sampled
//! latency (log-normal) and may be lost; a peer that leaves disappears at
//! once (a crash: nobody is told) and is replaced by a newcomer that knows a
//! few live peers as first contacts, as a rendezvous service would give.
//! Session lengths are heavy-tailed ([`Session`]). A booked slot is
//! "deployed" after a sampled delay. Everything follows from one seed.
//!
//! The simulator records every [`Event`] (drain with [`Sim::take_events`])
//! and counts traffic by message kind ([`Sim::traffic`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use super::{Config, Envelope, Event, Message, Output, Peer, Time};

/// How long a peer stays in the overlay before it leaves (crashes).
#[derive(Clone, Copy, Debug)]
pub enum Session {
    /// Nobody leaves.
    Forever,
    /// Log-normal lengths with this mean and σ of the underlying normal.
    LogNormal {
        /// Mean session length.
        mean: Duration,
        /// σ of ln(length).
        sigma: f64,
    },
    /// Pareto lengths with this mean and shape α (> 1; smaller is heavier).
    Pareto {
        /// Mean session length.
        mean: Duration,
        /// Shape.
        alpha: f64,
    },
}

/// Settings of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Peers alive at any time (a leaving peer is replaced at once).
    pub peers: usize,
    /// Settings of every peer.
    pub peer: Config,
    /// Median one-way latency of a message.
    pub latency_median: Duration,
    /// σ of ln(latency): 0 gives a fixed latency.
    pub latency_sigma: f64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Churn.
    pub session: Session,
    /// Probability that a peer lends its slots at all (desktops in use by
    /// their owners lend none).
    pub lending: f64,
    /// First contacts given to each peer (random live peers).
    pub contacts: usize,
    /// Delay between a booking and its runtime running, drawn uniformly.
    pub deploy_delay: (Duration, Duration),
    /// Seed of everything.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            peers: 100,
            peer: Config::default(),
            latency_median: Duration::from_millis(40),
            latency_sigma: 0.6,
            loss: 0.0,
            session: Session::Forever,
            lending: 1.0,
            contacts: 3,
            deploy_delay: (Duration::from_secs(1), Duration::from_secs(5)),
            seed: 1,
        }
    }
}

/// Messages sent, by kind, since the start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Sent, by [`Message::kind`].
    pub sent: BTreeMap<&'static str, u64>,
    /// Lost on the way.
    pub lost: u64,
    /// Arrived at a peer that had left.
    pub to_departed: u64,
    /// Request messages that arrived as duplicates.
    pub duplicate_requests: u64,
}

impl Traffic {
    /// Messages of node acquisition sent (requests, offers, bookings,
    /// releases), duplicates included.
    pub fn acquisition(&self) -> u64 {
        let kinds = ["request", "offer", "book", "booked", "release", "released"];
        kinds
            .iter()
            .map(|k| self.sent.get(k).copied().unwrap_or(0))
            .sum()
    }

    /// All messages sent.
    pub fn total(&self) -> u64 {
        self.sent.values().sum()
    }
}

/// The shape of the acquaintance graph at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GraphReport {
    /// Live peers.
    pub peers: usize,
    /// Share of live peers whose degree lies in [NOA, 2·NOA].
    pub within_bounds: f64,
    /// Share of live peers with fewer than NOA acquaintances.
    pub below: f64,
    /// Share of live peers in the largest connected component.
    pub largest_component: f64,
    /// Mean degree.
    pub mean_degree: f64,
}

/// What happens at a point of simulated time.
enum Action {
    Deliver {
        from: u32,
        to: u32,
        envelope: Envelope<u32>,
    },
    Wake(u32),
    Deployed {
        peer: u32,
        booking: super::BookingId,
    },
    Leave(u32),
}

struct Scheduled {
    at: Time,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: the heap pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Node {
    peer: Peer<u32>,
    /// The wake-up currently scheduled.
    wake: Option<Time>,
    /// Index in `Sim::live`.
    slot: usize,
}

/// Many peers in simulated time.
pub struct Sim {
    config: SimConfig,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Option<Node>>,
    live: Vec<u32>,
    pinned: Vec<u32>,
    rng: fastrand::Rng,
    events: Vec<(Time, u32, Event<u32>)>,
    /// Every message sent, when recording.
    messages: Option<Vec<Sent>>,
    traffic: Traffic,
}

/// A message as sent (recorded by [`Sim::record_messages`]).
#[derive(Clone, Debug)]
pub struct Sent {
    /// When.
    pub at: Time,
    /// Sender.
    pub from: u32,
    /// Destination.
    pub to: u32,
    /// What.
    pub message: Message<u32>,
}

impl Sim {
    /// `config.peers` peers, each knowing a few others, all starting at zero.
    pub fn new(config: SimConfig) -> Sim {
        let mut sim = Sim {
            rng: fastrand::Rng::with_seed(config.seed),
            config,
            now: Time::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            live: Vec::new(),
            pinned: Vec::new(),
            events: Vec::new(),
            messages: None,
            traffic: Traffic::default(),
        };
        for _ in 0..sim.config.peers {
            sim.join();
        }
        sim
    }

    /// Simulated time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Live peers.
    pub fn live(&self) -> &[u32] {
        &self.live
    }

    /// A live peer picked at random.
    pub fn random_live(&mut self) -> Option<u32> {
        (!self.live.is_empty()).then(|| self.live[self.rng.usize(..self.live.len())])
    }

    /// Peer `id`, if it is live.
    pub fn peer(&self, id: u32) -> Option<&Peer<u32>> {
        self.node(id).map(|n| &n.peer)
    }

    /// Runs `f` on live peer `id` at the current time (a local command) and
    /// carries out what it outputs.
    pub fn command<R>(&mut self, id: u32, f: impl FnOnce(&mut Peer<u32>, Time) -> R) -> Option<R> {
        let now = self.now;
        let node = self.nodes.get_mut(id as usize)?.as_mut()?;
        let result = f(&mut node.peer, now);
        self.after(id);
        Some(result)
    }

    /// Keeps `id` from leaving (a requester under study).
    pub fn pin(&mut self, id: u32) {
        self.pinned.push(id);
    }

    /// Lets `id` leave again when its session ends.
    pub fn unpin(&mut self, id: u32) {
        self.pinned.retain(|p| *p != id);
    }

    /// Crashes `id` now; it is replaced by a newcomer if churn is on.
    pub fn kill(&mut self, id: u32) {
        self.remove(id);
    }

    /// Changes the loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// Every event output since the last call: (time, peer, event).
    pub fn take_events(&mut self) -> Vec<(Time, u32, Event<u32>)> {
        std::mem::take(&mut self.events)
    }

    /// Starts (or stops) keeping every message sent, for
    /// [`Sim::take_messages`].
    pub fn record_messages(&mut self, on: bool) {
        self.messages = on.then(Vec::new);
    }

    /// Messages sent since the last call, if recording.
    pub fn take_messages(&mut self) -> Vec<Sent> {
        self.messages
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Traffic since the start.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Runs every action due up to `end`; the clock then reads `end`.
    pub fn run_until(&mut self, end: Time) {
        while self.queue.peek().is_some_and(|s| s.at <= end) {
            let Some(Scheduled { at, action, .. }) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.act(action);
        }
        self.now = self.now.max(end);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    /// Runs until `done` holds for the events seen so far (checked after
    /// every action that emitted events) or until `end`. The events stay
    /// available to [`Sim::take_events`].
    pub fn run_until_event(
        &mut self,
        end: Time,
        mut done: impl FnMut(&(Time, u32, Event<u32>)) -> bool,
    ) -> bool {
        let mut seen = self.events.len();
        while self.queue.peek().is_some_and(|s| s.at <= end) {
            let Some(Scheduled { at, action, .. }) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.act(action);
            if self.events[seen..].iter().any(&mut done) {
                return true;
            }
            seen = self.events.len();
        }
        self.now = self.now.max(end);
        false
    }

    /// The acquaintance graph now.
    pub fn graph(&self) -> GraphReport {
        let noa = self.config.peer.noa.max(1) as usize;
        let n = self.live.len();
        if n == 0 {
            return GraphReport {
                peers: 0,
                within_bounds: 0.0,
                below: 0.0,
                largest_component: 0.0,
                mean_degree: 0.0,
            };
        }
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        let (mut within, mut below, mut degrees) = (0, 0, 0);
        for (i, &id) in self.live.iter().enumerate() {
            let Some(node) = self.node(id) else { continue };
            let degree = node.peer.degree();
            degrees += degree;
            within += usize::from((noa..=2 * noa).contains(&degree));
            below += usize::from(degree < noa);
            for other in node.peer.acquaintances() {
                if let Some(j) = self.node(*other).map(|n| n.slot) {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        let mut sizes = vec![0usize; n];
        for i in 0..n {
            let root = find(&mut parent, i);
            sizes[root] += 1;
        }
        let largest = sizes.into_iter().max().unwrap_or(0);
        GraphReport {
            peers: n,
            within_bounds: within as f64 / n as f64,
            below: below as f64 / n as f64,
            largest_component: largest as f64 / n as f64,
            mean_degree: degrees as f64 / n as f64,
        }
    }

    // ---- internals ------------------------------------------------------

    fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.get(id as usize)?.as_ref()
    }

    fn schedule(&mut self, at: Time, action: Action) {
        self.seq += 1;
        let seq = self.seq;
        self.queue.push(Scheduled { at, seq, action });
    }

    fn join(&mut self) {
        let id = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        let mut contacts = Vec::with_capacity(self.config.contacts);
        for _ in 0..self.config.contacts {
            if let Some(c) = self.random_live() {
                contacts.push(c);
            }
        }
        let seed = self.rng.u64(..);
        let mut config = self.config.peer.clone();
        if self.rng.f64() >= self.config.lending {
            config.slots = 0;
        }
        let peer = Peer::new(id, config, contacts, self.now, seed);
        let slot = self.live.len();
        self.live.push(id);
        self.nodes.push(Some(Node {
            peer,
            wake: None,
            slot,
        }));
        if let Some(length) = self.session_length() {
            let at = self.now + length;
            self.schedule(at, Action::Leave(id));
        }
        self.after(id);
    }

    fn remove(&mut self, id: u32) {
        let Some(node) = self.nodes.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.live.swap_remove(node.slot);
        if let Some(&moved) = self.live.get(node.slot) {
            if let Some(Some(m)) = self.nodes.get_mut(moved as usize) {
                m.slot = node.slot;
            }
        }
        if !matches!(self.config.session, Session::Forever) {
            self.join();
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Deliver { from, to, envelope } => {
                let now = self.now;
                let Some(Some(node)) = self.nodes.get_mut(to as usize) else {
                    self.traffic.to_departed += 1;
                    return;
                };
                let is_request = matches!(envelope.message, Message::Request { .. });
                let before = node.peer.stats().duplicate_requests;
                node.peer.handle(now, from, envelope);
                if is_request && node.peer.stats().duplicate_requests > before {
                    self.traffic.duplicate_requests += 1;
                }
                self.after(to);
            }
            Action::Wake(id) => {
                let now = self.now;
                let Some(Some(node)) = self.nodes.get_mut(id as usize) else {
                    return;
                };
                if node.wake != Some(now) {
                    return; // superseded
                }
                node.wake = None;
                node.peer.tick(now);
                self.after(id);
            }
            Action::Deployed { peer, booking } => {
                self.command(peer, |p, _| p.deployed(booking));
            }
            Action::Leave(id) => {
                if self.pinned.contains(&id) {
                    let at = self.now + Duration::from_secs(60);
                    self.schedule(at, Action::Leave(id));
                } else {
                    self.remove(id);
                }
            }
        }
    }

    /// Carries out the outputs of peer `id` and schedules its next wake-up.
    fn after(&mut self, id: u32) {
        let now = self.now;
        let Some(Some(node)) = self.nodes.get_mut(id as usize) else {
            return;
        };
        let mut outputs = Vec::new();
        while let Some(output) = node.peer.poll_output() {
            outputs.push(output);
        }
        let deadline = node
            .peer
            .next_deadline()
            .max(now + Duration::from_millis(1));
        if node.wake.is_none_or(|w| deadline < w) {
            node.wake = Some(deadline);
            self.schedule(deadline, Action::Wake(id));
        }
        for output in outputs {
            match output {
                Output::Send { to, envelope } => {
                    *self
                        .traffic
                        .sent
                        .entry(envelope.message.kind())
                        .or_default() += 1;
                    if self.config.loss > 0.0 && self.rng.f64() < self.config.loss {
                        self.traffic.lost += 1;
                        continue;
                    }
                    let at = now + self.latency();
                    self.schedule(
                        at,
                        Action::Deliver {
                            from: id,
                            to,
                            envelope,
                        },
                    );
                }
                Output::Event(event) => {
                    if let Event::Deploy { booking, .. } = event {
                        let (lo, hi) = self.config.deploy_delay;
                        let span = hi.saturating_sub(lo).as_millis() as u64;
                        let delay = lo + Duration::from_millis(self.rng.u64(0..=span));
                        self.schedule(now + delay, Action::Deployed { peer: id, booking });
                    }
                    self.events.push((now, id, event));
                }
            }
        }
    }

    fn normal(&mut self) -> f64 {
        // Box–Muller.
        let u1 = self.rng.f64().max(f64::MIN_POSITIVE);
        let u2 = self.rng.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn latency(&mut self) -> Duration {
        let median = self.config.latency_median.as_secs_f64();
        let sigma = self.config.latency_sigma;
        let sample = median * (sigma * self.normal()).exp();
        Duration::from_secs_f64(sample.clamp(0.001, 60.0))
    }

    fn session_length(&mut self) -> Option<Duration> {
        let seconds = match self.config.session {
            Session::Forever => return None,
            Session::LogNormal { mean, sigma } => {
                let mu = mean.as_secs_f64().ln() - sigma * sigma / 2.0;
                (mu + sigma * self.normal()).exp()
            }
            Session::Pareto { mean, alpha } => {
                let alpha = alpha.max(1.01);
                let scale = mean.as_secs_f64() * (alpha - 1.0) / alpha;
                let u = self.rng.f64().max(f64::MIN_POSITIVE);
                scale / u.powf(1.0 / alpha)
            }
        };
        Some(Duration::from_secs_f64(seconds.clamp(1.0, 1e9)))
    }
}
