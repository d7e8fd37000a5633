//! A deterministic simulation of communication-induced checkpointing:
//! accounts and brokers, all members of one CIC group, called by clients
//! outside it, over a network that loses, duplicates and reorders
//! messages, on nodes that crash — one at a time, two at once, during a
//! recovery, while checkpoints and histories are on their way to the FT
//! server — or are wrongly suspected and run on in their old epoch.
//! Everything follows from one seed.
//!
//! Brokers serve transfers by calling two accounts in turn and awaiting
//! each reply inside the service, so replies from beyond the broker's
//! checkpoint index are consumed where no checkpoint can be taken; a
//! payroll keeps the futures of its credits in the broker's state, across
//! later requests and checkpoints, until a `Collect` gets them; clients
//! also deposit directly. Each member checkpoints on its own TTC, which
//! differs per member, so indices drift apart and checkpoints are forced.
//!
//! Each seed's run goes to quiescence and is checked: every operation took
//! effect exactly once, money was neither made nor lost, every client got
//! one reply and it is the one the final state holds, and the final state
//! is the one any failure-free run of the same workload reaches.
//!
//! A failing seed is printed; run it alone, with a trace, by
//! `ACTOGRID_SIM_SEED=<seed> ACTOGRID_SIM_TRACE=1 cargo test -p
//! actogrid-fault-tolerance --test cic_sim -- --nocapture`.
//! `ACTOGRID_SIM_SEEDS=<n>` runs more (or fewer) seeds than the default.

mod sim;

use sim::Rng;

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;

use actogrid_fault_tolerance::cic::{
    Ack, Action, Config, DurableLine, Entry, Incarnation, LineKeeper, Member, ObjectId, Plan,
    Record, Reply, Request, RequestId, Time,
};
use actogrid_fault_tolerance::store::{Store, StoreConfig};
use serde::{Deserialize, Serialize};

const DEFAULT_SEEDS: u64 = 1000;
/// Seeds run with the line in a store file (each store write is synced).
const DURABLE_SEEDS: u64 = 40;
const ACCOUNTS: u64 = 4;
const BROKERS: u64 = 2;
const CLIENTS: u64 = 2;
const OPENING_BALANCE: i64 = 1_000_000;
const TICK: u64 = 20;
/// From a crash to the FT server's recovery.
const DETECTION: u64 = 150;
/// Simulated time after which a run that has not settled is a failure.
const DEADLINE: u64 = 120_000;

fn account(i: u64) -> ObjectId {
    ObjectId(1 + i)
}
fn broker(i: u64) -> ObjectId {
    ObjectId(11 + i)
}
fn client(i: u64) -> ObjectId {
    ObjectId(101 + i)
}
fn members() -> Vec<ObjectId> {
    (0..ACCOUNTS)
        .map(account)
        .chain((0..BROKERS).map(broker))
        .collect()
}

// ---------------------------------------------------------------------------
// The application.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Msg {
    /// Client to broker.
    Transfer {
        op: u64,
        from: ObjectId,
        to: ObjectId,
        amount: i64,
    },
    /// Client to account.
    Deposit { op: u64, amount: i64 },
    /// Client to broker: credit `amount` to each of `to`, keeping the
    /// futures in the broker's state until a `Collect`.
    Payroll {
        op: u64,
        to: Vec<ObjectId>,
        amount: i64,
    },
    /// Client to broker: the balances of a payroll, once all are in.
    Collect { op: u64 },
    /// Broker to account.
    Withdraw { op: u64, amount: i64 },
    /// Broker to account.
    Credit { op: u64, amount: i64 },
    /// An account's reply: its balance after.
    Balance(i64),
    /// A broker's reply: the two balances after.
    Moved(i64, i64),
    /// A broker's reply to a payroll: started.
    Started,
    /// A broker's reply to a collect: the balances after each credit.
    Paid(Vec<i64>),
}

/// What an account holds: its balance and every change, with the balance
/// after it.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
struct Ledger {
    balance: i64,
    entries: Vec<(u64, String, i64, i64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Body {
    Account(Ledger),
    /// A broker's record of transfers (op, balances), and the transfer it
    /// is in the middle of: the request, and the withdrawal's balance.
    Broker {
        done: Vec<(u64, i64, i64)>,
        serving: Option<(Msg, Option<i64>)>,
        /// Payrolls: the balances of their credits as they come in.
        payrolls: BTreeMap<u64, Vec<Option<i64>>>,
        /// The calls of payrolls not answered yet: (op, which credit).
        pending: BTreeMap<RequestId, (u64, usize)>,
        /// The payroll a `Collect` being served waits for.
        collecting: Option<u64>,
    },
}

impl Body {
    fn fresh(id: ObjectId) -> Body {
        if id.0 <= ACCOUNTS {
            Body::Account(Ledger {
                balance: OPENING_BALANCE,
                entries: Vec::new(),
            })
        } else {
            Body::Broker {
                done: Vec::new(),
                serving: None,
                payrolls: BTreeMap::new(),
                pending: BTreeMap::new(),
                collecting: None,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The FT server's keeper of the line.

/// The group's name in a durable store.
const GROUP: &str = "sim";

/// The recovery line as the FT server keeps it: in memory, or durable in a
/// real store file that it reopens (a restart of the FT server) at random
/// moments, each time checking that it reads back the keeper it had.
enum Keeper {
    Memory {
        keeper: LineKeeper<Msg>,
        /// The bodies stored with the checkpoints, by (member, lo).
        bodies: BTreeMap<(ObjectId, u64), Body>,
    },
    Durable(Box<Durable>),
}

struct Durable {
    rt: tokio::runtime::Runtime,
    path: std::path::PathBuf,
    store: Option<Store>,
    line: Option<DurableLine<Msg>>,
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.line = None;
        self.store = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Durable {
    fn line(&self) -> &DurableLine<Msg> {
        self.line.as_ref().expect("open")
    }

    fn run<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut DurableLine<Msg>) -> Result<T, String>,
    ) -> Result<T, String> {
        let line = self.line.as_mut().expect("open");
        self.rt.block_on(f(line))
    }
}

impl Keeper {
    fn memory() -> Keeper {
        Keeper::Memory {
            keeper: LineKeeper::new(members().into_iter().map(Member::initial_record)),
            bodies: members()
                .into_iter()
                .map(|m| ((m, 0), Body::fresh(m)))
                .collect(),
        }
    }

    fn durable(path: std::path::PathBuf) -> Result<Keeper, String> {
        let _ = std::fs::remove_file(&path);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?;
        let initial: Vec<(Record<Msg>, Vec<u8>)> = members()
            .into_iter()
            .map(|m| (Member::initial_record(m), encode(&Body::fresh(m))))
            .collect();
        let (store, line) = rt.block_on(async {
            let store = Store::open(&path, StoreConfig::default()).map_err(|e| e.to_string())?;
            let line = DurableLine::create(&store, GROUP, initial)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((store, line))
        })?;
        if line.keeper().epoch() != Incarnation::FIRST {
            return Err("a fresh group starts in the first epoch".into());
        }
        Ok(Keeper::Durable(Box::new(Durable {
            rt,
            path,
            store: Some(store),
            line: Some(line),
        })))
    }

    fn is_durable(&self) -> bool {
        matches!(self, Keeper::Durable(_))
    }

    fn keeper(&self) -> &LineKeeper<Msg> {
        match self {
            Keeper::Memory { keeper, .. } => keeper,
            Keeper::Durable(d) => d.line().keeper(),
        }
    }

    fn store_checkpoint(&mut self, record: Record<Msg>, body: Body) -> Result<Option<u64>, String> {
        match self {
            Keeper::Memory { keeper, bodies } => {
                if record.epoch == keeper.epoch() {
                    bodies.insert((record.object, record.lo), body);
                }
                Ok(keeper.store_checkpoint(record))
            }
            // One of an older epoch is refused there: not given.
            Keeper::Durable(d) if record.epoch != d.line().keeper().epoch() => Ok(None),
            Keeper::Durable(d) => d.run(async |line| {
                (line.store_checkpoint(record, encode(&body)).await).map_err(|e| e.to_string())
            }),
        }
    }

    fn store_history(
        &mut self,
        object: ObjectId,
        epoch: Incarnation,
        entries: Vec<Entry>,
    ) -> Result<Option<u64>, String> {
        match self {
            Keeper::Memory { keeper, .. } => Ok(keeper.store_history(object, epoch, entries)),
            Keeper::Durable(d) => d.run(async |line| {
                (line.store_history(object, epoch, entries).await).map_err(|e| e.to_string())
            }),
        }
    }

    /// The plan of a recovery, and each member's body to restart from.
    fn recover(&mut self) -> Result<(Plan<Msg>, BTreeMap<ObjectId, Body>), String> {
        const LOST: &str = "the committed line is not recoverable";
        match self {
            Keeper::Memory { keeper, bodies } => {
                let plan = keeper.recover().ok_or(LOST)?;
                let mut restored = BTreeMap::new();
                for r in &plan.restarts {
                    if let Some(body) = bodies.get(&(r.object, r.record.lo)) {
                        restored.insert(r.object, body.clone());
                    }
                }
                Ok((plan, restored))
            }
            Keeper::Durable(d) => {
                let recovery = d
                    .run(async |line| line.recover().await.map_err(|e| e.to_string()))?
                    .ok_or(LOST)?;
                let mut restored = BTreeMap::new();
                for (object, state) in recovery.states {
                    let body = postcard::from_bytes(&state)
                        .map_err(|e| format!("the state of {object:?} does not decode: {e}"))?;
                    restored.insert(object, body);
                }
                Ok((recovery.plan, restored))
            }
        }
    }

    /// The FT server restarts: the store closed and opened again, the line
    /// read back from it, which must be the keeper it had.
    fn restart(&mut self) -> Result<(), String> {
        let Keeper::Durable(d) = self else {
            return Ok(());
        };
        let before = encode(d.line().keeper());
        d.line = None;
        d.store = None;
        let path = d.path.clone();
        let (store, line) = d.rt.block_on(async {
            let store = Store::open(&path, StoreConfig::default()).map_err(|e| e.to_string())?;
            let line = DurableLine::<Msg>::open(&store, GROUP)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the store has no line of the group")?;
            Ok::<_, String>((store, line))
        })?;
        if encode(line.keeper()) != before {
            return Err("the line read back from the store differs from the one kept".into());
        }
        d.store = Some(store);
        d.line = Some(line);
        Ok(())
    }
}

fn encode(value: &impl Serialize) -> Vec<u8> {
    postcard::to_allocvec(value).expect("encodes")
}

// ---------------------------------------------------------------------------
// The world.

#[derive(Clone, Debug)]
enum Net {
    Request(Request<Msg>),
    Reply(Reply<Msg>),
    Ack(Ack),
    Line(Incarnation, u64),
}

#[derive(Clone, Debug)]
enum ToServer {
    Checkpoint(Box<(Record<Msg>, Body)>),
    History(ObjectId, Incarnation, Vec<Entry>),
}

#[derive(Debug)]
enum Event {
    Net(ObjectId, Net),
    Server(ObjectId),
    Tick,
    Crash(Vec<ObjectId>),
    Detect,
    Issue(u64, usize),
}

struct Node {
    member: Member<Msg>,
    body: Body,
}

#[derive(Clone, Debug)]
struct Op {
    id: u64,
    at: u64,
    target: ObjectId,
    msg: Msg,
    /// Issued `at` ms after this operation's reply came, not at `at`.
    after: Option<u64>,
}

struct Client {
    ops: Vec<Op>,
    next_seq: BTreeMap<ObjectId, u64>,
    pending: BTreeMap<RequestId, (usize, u64)>,
    results: BTreeMap<u64, Msg>,
}

#[derive(Debug, Default, Clone)]
struct Tally {
    crashes: u64,
    double_crashes: u64,
    crashes_in_recovery: u64,
    zombies: u64,
    zombie_messages: u64,
    recoveries: u64,
    replayed: u64,
    resent_in_transit: u64,
    /// Requests sent before their sender's checkpoint of the line and not
    /// delivered before their target's: in transit across it.
    crossing_requests: u64,
    /// Replies sent before their replier's checkpoint of the line to a
    /// caller whose checkpoint still awaits them: in transit across it.
    crossing_replies: u64,
    forced_jumps: u64,
    reply_deps: u64,
    /// Payrolls collected after a checkpoint of their broker.
    collected_across_checkpoints: u64,
    lines: u64,
    dropped_messages: u64,
    server_restarts: u64,
}

impl sim::Tally for Tally {
    fn add(&mut self, o: &Tally) {
        self.crashes += o.crashes;
        self.double_crashes += o.double_crashes;
        self.crashes_in_recovery += o.crashes_in_recovery;
        self.zombies += o.zombies;
        self.zombie_messages += o.zombie_messages;
        self.recoveries += o.recoveries;
        self.replayed += o.replayed;
        self.resent_in_transit += o.resent_in_transit;
        self.crossing_requests += o.crossing_requests;
        self.crossing_replies += o.crossing_replies;
        self.forced_jumps += o.forced_jumps;
        self.reply_deps += o.reply_deps;
        self.collected_across_checkpoints += o.collected_across_checkpoints;
        self.lines += o.lines;
        self.dropped_messages += o.dropped_messages;
        self.server_restarts += o.server_restarts;
    }
}

struct Sim {
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<std::cmp::Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    nodes: BTreeMap<ObjectId, Option<Node>>,
    /// Instances a recovery replaced while they still ran (a wrong
    /// suspicion): they go on, in their old epoch, as long as the run.
    zombies: Vec<(ObjectId, Node)>,
    configs: BTreeMap<ObjectId, Config>,
    /// Each member's stream to the FT server.
    streams: BTreeMap<ObjectId, std::collections::VecDeque<ToServer>>,
    keeper: Keeper,
    clients: BTreeMap<ObjectId, Client>,
    faults: bool,
    crashed_since_recovery: bool,
    last_recovery: u64,
    tally: Tally,
    trace: Option<String>,
}

impl Sim {
    /// `durable`: the FT server keeps the line in a store of that file,
    /// and restarts now and then.
    fn new(
        seed: u64,
        faults: bool,
        ops: &[Vec<Op>],
        trace: bool,
        durable: Option<std::path::PathBuf>,
    ) -> Result<Sim, String> {
        let mut rng = Rng(seed ^ 0x5eed_c1c0);
        let mut nodes = BTreeMap::new();
        let mut configs = BTreeMap::new();
        let mut streams = BTreeMap::new();
        for m in members() {
            let config = Config {
                ttc: rng.range(60, 400),
                resend_after: 120,
                max_ahead: 64,
            };
            configs.insert(m, config);
            nodes.insert(
                m,
                Some(Node {
                    member: Member::new(m, config, Time::ZERO),
                    body: Body::fresh(m),
                }),
            );
            streams.insert(m, std::collections::VecDeque::new());
        }
        let keeper = match durable {
            Some(path) => Keeper::durable(path)?,
            None => Keeper::memory(),
        };
        let clients = (0..CLIENTS)
            .map(|c| {
                (
                    client(c),
                    Client {
                        ops: ops[c as usize].clone(),
                        next_seq: BTreeMap::new(),
                        pending: BTreeMap::new(),
                        results: BTreeMap::new(),
                    },
                )
            })
            .collect();
        let mut sim = Sim {
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            zombies: Vec::new(),
            configs,
            streams,
            keeper,
            clients,
            faults,
            crashed_since_recovery: false,
            last_recovery: 0,
            tally: Tally::default(),
            trace: trace.then(String::new),
        };
        for c in 0..CLIENTS {
            for (i, op) in ops[c as usize].iter().enumerate() {
                if op.after.is_none() {
                    sim.at(op.at, Event::Issue(c, i));
                }
            }
        }
        sim.at(TICK, Event::Tick);
        if faults {
            let crashes = sim.rng.range(1, 6);
            for _ in 0..crashes {
                let at = sim.rng.range(50, 3_000);
                let all = members();
                let first = all[sim.rng.range(0, all.len() as u64 - 1) as usize];
                let mut victims = vec![first];
                if sim.rng.chance(25) {
                    let second = all[sim.rng.range(0, all.len() as u64 - 1) as usize];
                    if second != first {
                        victims.push(second);
                    }
                }
                sim.at(at, Event::Crash(victims));
            }
        }
        Ok(sim)
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let _ = writeln!(t, "{:>6} {}", self.now, line());
        }
    }

    fn at(&mut self, time: u64, event: Event) {
        self.seq += 1;
        self.queue.push(std::cmp::Reverse((time, self.seq)));
        self.events.insert(self.seq, event);
    }

    /// A message on the network: lost, delayed, maybe duplicated.
    fn send(&mut self, to: ObjectId, msg: Net) {
        let reliable = matches!(msg, Net::Line(..));
        if self.faults && !reliable && self.rng.chance(3) {
            self.tally.dropped_messages += 1;
            return;
        }
        let copies = if self.faults && !reliable && self.rng.chance(2) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.range(1, 40);
            self.at(self.now + delay, Event::Net(to, msg.clone()));
        }
    }

    fn hand_over(&mut self, from: ObjectId, msg: ToServer) {
        let delay = self.rng.range(2, 30);
        self.streams.get_mut(&from).unwrap().push_back(msg);
        self.at(self.now + delay, Event::Server(from));
    }

    fn run(mut self) -> (Result<Sim, String>, Option<String>) {
        while let Some(std::cmp::Reverse((time, seq))) = self.queue.pop() {
            self.now = time;
            if time > DEADLINE {
                let trace = self.trace.take();
                return (
                    Err(format!("not settled after {DEADLINE} ms: {}", self.stuck())),
                    trace,
                );
            }
            let event = self.events.remove(&seq).unwrap();
            if let Err(e) = self.handle(event) {
                let trace = self.trace.take();
                return (Err(e), trace);
            }
            if self.settled() {
                let trace = self.trace.take();
                return (Ok(self), trace);
            }
        }
        let trace = self.trace.take();
        (Err("ran out of events".into()), trace)
    }

    fn stuck(&self) -> String {
        let pending: usize = self
            .clients
            .values()
            .map(|c| c.ops.len() - c.results.len())
            .sum();
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(id, n)| match n {
                None => format!("{}: down", id.0),
                Some(n) => format!(
                    "{}: index {} replaying {} serving {} retained {}",
                    id.0,
                    n.member.index(),
                    n.member.replaying(),
                    n.member.is_serving(),
                    n.member.retained()
                ),
            })
            .collect();
        format!(
            "{pending} operations unanswered, line {}; {}",
            self.keeper.keeper().line(),
            nodes.join("; ")
        )
    }

    fn settled(&self) -> bool {
        self.clients
            .values()
            .all(|c| c.results.len() == c.ops.len())
            && self.nodes.values().all(|n| {
                n.as_ref()
                    .is_some_and(|n| n.member.replaying() == 0 && !n.member.is_serving())
            })
            && !self.crashed_since_recovery
            && !self
                .events
                .values()
                .any(|e| matches!(e, Event::Crash(_) | Event::Detect))
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Tick => {
                for id in members() {
                    if let Some(Some(n)) = self.nodes.get_mut(&id) {
                        n.member.tick(Time(self.now));
                        self.drain(id)?;
                    }
                }
                for i in 0..self.zombies.len() {
                    self.zombies[i].1.member.tick(Time(self.now));
                    self.drain_zombie(i)?;
                }
                for c in 0..CLIENTS {
                    self.client_tick(client(c));
                }
                self.at(self.now + TICK, Event::Tick);
            }
            Event::Issue(c, i) => {
                let op = self.clients[&client(c)].ops[i].clone();
                let cl = self.clients.get_mut(&client(c)).unwrap();
                let seq = cl.next_seq.entry(op.target).or_insert(0);
                *seq += 1;
                let id = RequestId {
                    target: op.target,
                    sender: client(c),
                    seq: *seq,
                };
                cl.pending.insert(id, (i, self.now));
                self.send(
                    op.target,
                    Net::Request(Request {
                        id,
                        from: None,
                        payload: op.msg.clone(),
                    }),
                );
            }
            Event::Net(to, msg) => {
                if to.0 > 100 {
                    self.client_receive(to, msg);
                    return Ok(());
                }
                let now = Time(self.now);
                // The network may still reach an instance a recovery
                // replaced.
                if let Some(i) = self.zombies.iter().position(|(id, _)| *id == to)
                    && self.rng.chance(50)
                {
                    let z = &mut self.zombies[i].1.member;
                    match msg.clone() {
                        Net::Request(r) => z.on_request(now, r),
                        Net::Reply(r) => z.on_reply(now, r),
                        Net::Ack(a) => z.on_ack(now, a),
                        Net::Line(epoch, line) => z.line_advanced(now, epoch, line),
                    }
                    self.drain_zombie(i)?;
                }
                let Some(Some(n)) = self.nodes.get_mut(&to) else {
                    return Ok(());
                };
                match msg {
                    Net::Request(r) => n.member.on_request(now, r),
                    Net::Reply(r) => n.member.on_reply(now, r),
                    Net::Ack(a) => n.member.on_ack(now, a),
                    Net::Line(epoch, line) => n.member.line_advanced(now, epoch, line),
                }
                self.drain(to)?;
            }
            Event::Server(from) => {
                let Some(msg) = self.streams.get_mut(&from).unwrap().pop_front() else {
                    return Ok(());
                };
                let moved = match msg {
                    ToServer::Checkpoint(stored) => {
                        let (record, body) = *stored;
                        if record.epoch == self.keeper.keeper().epoch() {
                            if record.hi > record.lo {
                                self.tally.forced_jumps += 1;
                            }
                            if !record.deps.is_empty() {
                                self.tally.reply_deps += 1;
                            }
                            if record.state.awaiting() > 0 {
                                self.tally.collected_across_checkpoints += 1;
                            }
                        }
                        self.keeper.store_checkpoint(record, body)?
                    }
                    ToServer::History(object, epoch, entries) => {
                        self.keeper.store_history(object, epoch, entries)?
                    }
                };
                // The FT server restarts now and then, from its store.
                if self.keeper.is_durable() && self.rng.chance(3) {
                    self.tally.server_restarts += 1;
                    self.log(|| "FT SERVER RESTART".into());
                    self.keeper.restart()?;
                }
                if let Some(line) = moved {
                    self.tally.lines += 1;
                    let epoch = self.keeper.keeper().epoch();
                    self.log(|| format!("LINE {line}"));
                    for m in members() {
                        self.send(m, Net::Line(epoch, line));
                    }
                }
            }
            Event::Crash(victims) => {
                if victims.len() > 1 {
                    self.tally.double_crashes += 1;
                }
                if self.now < self.last_recovery + 60 && self.last_recovery > 0 {
                    self.tally.crashes_in_recovery += 1;
                }
                for v in victims {
                    if self.nodes[&v].is_none() {
                        continue;
                    }
                    self.tally.crashes += 1;
                    self.log(|| format!("CRASH {}", v.0));
                    self.nodes.insert(v, None);
                    // What it had not handed over to the FT server is lost,
                    // maybe.
                    let stream = self.streams.get_mut(&v).unwrap();
                    let keep = self.rng.range(0, stream.len() as u64) as usize;
                    stream.truncate(keep);
                }
                if !self.crashed_since_recovery {
                    self.crashed_since_recovery = true;
                    self.at(self.now + DETECTION, Event::Detect);
                }
            }
            Event::Detect => self.recover()?,
        }
        Ok(())
    }

    fn recover(&mut self) -> Result<(), String> {
        self.crashed_since_recovery = false;
        self.last_recovery = self.now;
        self.tally.recoveries += 1;
        let (plan, mut bodies) = self.keeper.recover()?;
        for r in &plan.restarts {
            for id in r.record.state.retained_requests() {
                let target = plan.restarts.iter().find(|t| t.object == id.target);
                if target.is_some_and(|t| t.record.state.delivered_from(id.sender) < id.seq) {
                    self.tally.crossing_requests += 1;
                }
            }
            for id in r.record.state.retained_replies() {
                let caller = plan.restarts.iter().find(|t| t.object == id.sender);
                if caller.is_some_and(|t| t.record.state.awaits(id)) {
                    self.tally.crossing_replies += 1;
                }
            }
        }
        self.log(|| format!("RESTORE line {} {:?}", plan.line, plan.epoch));
        for r in &plan.restarts {
            let body = bodies
                .remove(&r.object)
                .ok_or_else(|| format!("no body stored for {:?} at {}", r.object, r.record.lo))?;
            self.tally.replayed += r.replay.len() as u64;
            let (obj, rec_lo, rec_hi, dl, rp) = (
                r.object.0,
                r.record.lo,
                r.record.hi,
                r.record.delivered,
                r.replay.clone(),
            );
            self.log(|| format!("  restart {obj} from {rec_lo}..={rec_hi} at {dl} replay {rp:?}"));
            self.tally.resent_in_transit += r.record.state.retained() as u64;
            let config = self.configs[&r.object];
            // Sometimes the instance replaced was only suspected: it runs
            // on, in the old epoch.
            if self.faults
                && !self.zombies.iter().any(|(id, _)| *id == r.object)
                && self.rng.chance(10)
                && let Some(Some(old)) = self.nodes.remove(&r.object)
            {
                self.tally.zombies += 1;
                self.zombies.push((r.object, old));
            }
            let member = Member::restart(
                r.object,
                config,
                Time(self.now),
                &r.record,
                plan.epoch,
                plan.line,
                r.replay.clone(),
            );
            self.nodes.insert(r.object, Some(Node { member, body }));
            // What the old incarnation had queued for the server is of an
            // older epoch: dropped there.
        }
        // Sometimes a member fails again while the others restart.
        if self.faults && self.rng.chance(15) {
            let all = members();
            let v = all[self.rng.range(0, all.len() as u64 - 1) as usize];
            let at = self.now + self.rng.range(1, 40);
            self.at(at, Event::Crash(vec![v]));
        }
        for m in members() {
            self.drain(m)?;
        }
        Ok(())
    }

    /// Carries out what member `id` asks for, feeding its body.
    fn drain(&mut self, id: ObjectId) -> Result<(), String> {
        loop {
            let now = Time(self.now);
            let Some(Some(n)) = self.nodes.get_mut(&id) else {
                return Ok(());
            };
            let Some(action) = n.member.poll_action() else {
                return Ok(());
            };
            if let Some(t) = &mut self.trace {
                let what = match &action {
                    Action::Checkpoint(r) => format!(
                        "ckpt {}..={} at {} deps {:?} unchanged {}",
                        r.lo, r.hi, r.delivered, r.deps, r.unchanged
                    ),
                    Action::History(e) => format!("history {} entries", e.len()),
                    Action::Deliver(r) => format!(
                        "deliver {:?} from {} {:?} {:?}",
                        r.id.seq, r.id.sender.0, r.from, r.payload
                    ),
                    Action::Resolve(r) => format!(
                        "resolve {:?} from {} {:?} {:?}",
                        r.id.seq, r.id.target.0, r.from, r.payload
                    ),
                    Action::SendRequest(r) => {
                        format!("send req {} to {} {:?}", r.id.seq, r.id.target.0, r.payload)
                    }
                    Action::SendReply(r) => format!(
                        "send reply {} to {} {:?} {:?}",
                        r.id.seq, r.id.sender.0, r.from, r.payload
                    ),
                    Action::SendAck { .. } => String::new(),
                };
                if !what.is_empty() {
                    let _ = writeln!(t, "{:>6}   [{}] {what}", self.now, id.0);
                }
            }
            let n = self.nodes.get_mut(&id).unwrap().as_mut().unwrap();
            match action {
                Action::Checkpoint(record) => {
                    let body = n.body.clone();
                    if let Body::Broker {
                        serving: Some(_), ..
                    }
                    | Body::Broker {
                        collecting: Some(_),
                        ..
                    } = &body
                    {
                        return Err(format!("{id:?} checkpointed inside a service"));
                    }
                    self.hand_over(id, ToServer::Checkpoint(Box::new((record, body))));
                }
                Action::History(entries) => {
                    let epoch = n.member.epoch();
                    self.hand_over(id, ToServer::History(id, epoch, entries));
                }
                Action::SendRequest(r) => self.send(r.id.target, Net::Request(r)),
                Action::SendReply(r) => self.send(r.id.sender, Net::Reply(r)),
                Action::SendAck { to, ack } => self.send(to, Net::Ack(ack)),
                Action::Deliver(request) => {
                    let n = self.nodes.get_mut(&id).unwrap().as_mut().unwrap();
                    serve(n, now, request.payload)?;
                }
                Action::Resolve(reply) => {
                    let n = self.nodes.get_mut(&id).unwrap().as_mut().unwrap();
                    resume(n, now, reply.id, reply.payload)?;
                }
            }
        }
    }

    /// Carries out what zombie `i` asks for: everything it sends is of an
    /// old epoch, and must change nothing.
    fn drain_zombie(&mut self, i: usize) -> Result<(), String> {
        loop {
            let now = Time(self.now);
            let (id, z) = &mut self.zombies[i];
            let id = *id;
            let Some(action) = z.member.poll_action() else {
                return Ok(());
            };
            self.tally.zombie_messages += 1;
            match action {
                Action::Checkpoint(record) => {
                    let body = z.body.clone();
                    self.hand_over(id, ToServer::Checkpoint(Box::new((record, body))));
                }
                Action::History(entries) => {
                    let epoch = z.member.epoch();
                    self.hand_over(id, ToServer::History(id, epoch, entries));
                }
                Action::SendRequest(r) => self.send(r.id.target, Net::Request(r)),
                Action::SendReply(r) => self.send(r.id.sender, Net::Reply(r)),
                Action::SendAck { to, ack } => self.send(to, Net::Ack(ack)),
                Action::Deliver(request) => {
                    let z = &mut self.zombies[i].1;
                    serve(z, now, request.payload)?;
                }
                Action::Resolve(reply) => {
                    let z = &mut self.zombies[i].1;
                    resume(z, now, reply.id, reply.payload)?;
                }
            }
        }
    }

    fn client_tick(&mut self, c: ObjectId) {
        let now = self.now;
        let mut resend = Vec::new();
        let cl = self.clients.get_mut(&c).unwrap();
        for (id, (i, last)) in cl.pending.iter_mut() {
            if now >= *last + 150 {
                *last = now;
                resend.push(Request {
                    id: *id,
                    from: None,
                    payload: cl.ops[*i].msg.clone(),
                });
            }
        }
        for r in resend {
            self.send(r.id.target, Net::Request(r));
        }
    }

    fn client_receive(&mut self, c: ObjectId, msg: Net) {
        let Net::Reply(reply) = msg else { return };
        let cl = self.clients.get_mut(&c).unwrap();
        if let Some((i, _)) = cl.pending.remove(&reply.id) {
            let op = cl.ops[i].id;
            cl.results.insert(op, reply.payload.clone());
            let next: Vec<(usize, u64)> = cl
                .ops
                .iter()
                .enumerate()
                .filter(|(_, o)| o.after == Some(op))
                .map(|(j, o)| (j, o.at))
                .collect();
            let n = c.0 - 101;
            for (j, delay) in next {
                self.at(self.now + delay, Event::Issue(n, j));
            }
        }
        self.send(
            reply.id.target,
            Net::Ack(Ack {
                id: reply.id,
                reply: true,
                epoch: None,
                index: 0,
            }),
        );
    }
}

/// The body serves a request.
fn serve(n: &mut Node, now: Time, msg: Msg) -> Result<(), String> {
    match (&mut n.body, msg) {
        (Body::Account(ledger), Msg::Withdraw { op, amount }) => {
            ledger.balance -= amount;
            ledger
                .entries
                .push((op, "withdraw".into(), -amount, ledger.balance));
            let b = ledger.balance;
            n.member.reply(now, Msg::Balance(b));
            n.member.service_done(now);
        }
        (Body::Account(ledger), Msg::Credit { op, amount } | Msg::Deposit { op, amount }) => {
            ledger.balance += amount;
            ledger
                .entries
                .push((op, "credit".into(), amount, ledger.balance));
            let b = ledger.balance;
            n.member.reply(now, Msg::Balance(b));
            n.member.service_done(now);
        }
        (
            Body::Broker {
                payrolls, pending, ..
            },
            Msg::Payroll { op, to, amount },
        ) => {
            payrolls.insert(op, vec![None; to.len()]);
            for (i, account) in to.into_iter().enumerate() {
                let call = n.member.call(now, account, Msg::Credit { op, amount });
                pending.insert(call, (op, i));
            }
            n.member.reply(now, Msg::Started);
            n.member.service_done(now);
        }
        (
            Body::Broker {
                payrolls,
                collecting,
                ..
            },
            Msg::Collect { op },
        ) => {
            let Some(balances) = payrolls.get(&op) else {
                return Err(format!("collect of unknown payroll {op}"));
            };
            if balances.iter().all(Option::is_some) {
                let paid = balances.iter().map(|b| b.unwrap()).collect();
                n.member.reply(now, Msg::Paid(paid));
                n.member.service_done(now);
            } else {
                // Awaits the rest inside this service.
                *collecting = Some(op);
            }
        }
        (Body::Broker { serving, .. }, msg @ Msg::Transfer { .. }) => {
            let Msg::Transfer {
                op, from, amount, ..
            } = msg
            else {
                unreachable!()
            };
            *serving = Some((msg, None));
            n.member.call(now, from, Msg::Withdraw { op, amount });
        }
        (body, msg) => return Err(format!("{body:?} cannot serve {msg:?}")),
    }
    Ok(())
}

/// The body, inside its service, gets the reply it awaits.
fn resume(n: &mut Node, now: Time, id: RequestId, msg: Msg) -> Result<(), String> {
    let Body::Broker {
        done,
        serving,
        payrolls,
        pending,
        collecting,
    } = &mut n.body
    else {
        return Err("an account got a reply".into());
    };
    let Msg::Balance(balance) = msg else {
        return Err(format!("a broker got {msg:?}"));
    };
    if let Some((op, i)) = pending.remove(&id) {
        let balances = payrolls.get_mut(&op).ok_or("a payroll went missing")?;
        balances[i] = Some(balance);
        if *collecting == Some(op) && balances.iter().all(Option::is_some) {
            *collecting = None;
            let paid = balances.iter().map(|b| b.unwrap()).collect();
            n.member.reply(now, Msg::Paid(paid));
            n.member.service_done(now);
        }
        return Ok(());
    }
    match serving.take() {
        Some((
            Msg::Transfer {
                op,
                from,
                to,
                amount,
            },
            None,
        )) => {
            *serving = Some((
                Msg::Transfer {
                    op,
                    from,
                    to,
                    amount,
                },
                Some(balance),
            ));
            n.member.call(now, to, Msg::Credit { op, amount });
        }
        Some((Msg::Transfer { op, .. }, Some(withdrawn))) => {
            done.push((op, withdrawn, balance));
            n.member.reply(now, Msg::Moved(withdrawn, balance));
            n.member.service_done(now);
        }
        other => return Err(format!("a broker resumed in {other:?}")),
    }
    Ok(())
}

/// The workload of a seed: each client's operations.
fn workload(seed: u64) -> Vec<Vec<Op>> {
    let mut rng = Rng(seed);
    let mut next = 0;
    (0..CLIENTS)
        .map(|_| {
            let n = rng.range(6, 14);
            let mut ops = Vec::new();
            for _ in 0..n {
                next += 1;
                let at = rng.range(1, 1_500);
                let amount = rng.range(1, 100) as i64;
                let dice = rng.range(0, 99);
                if dice < 60 {
                    let from = account(rng.range(0, ACCOUNTS - 1));
                    let mut to = account(rng.range(0, ACCOUNTS - 1));
                    if to == from {
                        to = account(from.0 % ACCOUNTS);
                    }
                    ops.push(Op {
                        id: next,
                        at,
                        target: broker(rng.range(0, BROKERS - 1)),
                        msg: Msg::Transfer {
                            op: next,
                            from,
                            to,
                            amount,
                        },
                        after: None,
                    });
                } else if dice < 80 {
                    // A payroll to two or more accounts, collected later:
                    // its futures live in the broker across requests and
                    // checkpoints.
                    let first = rng.range(0, ACCOUNTS - 1);
                    let count = rng.range(2, ACCOUNTS);
                    let to = (0..count)
                        .map(|k| account((first + k) % ACCOUNTS))
                        .collect();
                    let target = broker(rng.range(0, BROKERS - 1));
                    let payroll = next;
                    ops.push(Op {
                        id: payroll,
                        at,
                        target,
                        msg: Msg::Payroll {
                            op: payroll,
                            to,
                            amount,
                        },
                        after: None,
                    });
                    next += 1;
                    ops.push(Op {
                        id: next,
                        at: rng.range(0, 300),
                        target,
                        msg: Msg::Collect { op: payroll },
                        after: Some(payroll),
                    });
                } else {
                    ops.push(Op {
                        id: next,
                        at,
                        target: account(rng.range(0, ACCOUNTS - 1)),
                        msg: Msg::Deposit { op: next, amount },
                        after: None,
                    });
                }
            }
            ops
        })
        .collect()
}

/// Checks a settled run against the workload.
fn check(ops: &[Vec<Op>], sim: &Sim) -> Result<(), String> {
    let mut expected: BTreeMap<ObjectId, i64> = (0..ACCOUNTS)
        .map(|a| (account(a), OPENING_BALANCE))
        .collect();
    let mut effects: BTreeSet<(ObjectId, u64, &str)> = BTreeSet::new();
    let mut transfers: BTreeMap<ObjectId, BTreeSet<u64>> = BTreeMap::new();
    for op in ops.iter().flatten() {
        match &op.msg {
            Msg::Transfer {
                op,
                from,
                to,
                amount,
            } => {
                *expected.get_mut(from).unwrap() -= amount;
                *expected.get_mut(to).unwrap() += amount;
                effects.insert((*from, *op, "withdraw"));
                effects.insert((*to, *op, "credit"));
                transfers
                    .entry(op_target(ops, *op))
                    .or_default()
                    .insert(*op);
            }
            Msg::Deposit { op: id, amount } => {
                *expected.get_mut(&op.target).unwrap() += amount;
                effects.insert((op.target, *id, "credit"));
            }
            Msg::Payroll { op: id, to, amount } => {
                for account in to {
                    *expected.get_mut(account).unwrap() += amount;
                    effects.insert((*account, *id, "credit"));
                }
            }
            _ => {}
        }
    }
    let body = |id: ObjectId| -> Result<&Body, String> {
        sim.nodes[&id]
            .as_ref()
            .map(|n| &n.body)
            .ok_or_else(|| format!("{id:?} is down at the end"))
    };
    let mut seen: BTreeMap<(ObjectId, u64, &str), i64> = BTreeMap::new();
    for a in 0..ACCOUNTS {
        let id = account(a);
        let Body::Account(ledger) = body(id)? else {
            unreachable!()
        };
        if ledger.balance != expected[&id] {
            return Err(format!(
                "account {} ends at {}, a failure-free run at {}",
                id.0, ledger.balance, expected[&id]
            ));
        }
        let mut running = OPENING_BALANCE;
        for (op, kind, delta, after) in &ledger.entries {
            let (op, kind, after) = (*op, kind.as_str(), *after);
            running += delta;
            if running != after {
                return Err(format!(
                    "account {} ledger does not add up at op {op}",
                    id.0
                ));
            }
            if seen.insert((id, op, kind), after).is_some() {
                return Err(format!("op {op} {kind} applied twice on account {}", id.0));
            }
        }
    }
    let applied: BTreeSet<(ObjectId, u64, &str)> = seen.keys().copied().collect();
    if applied != effects {
        return Err(format!(
            "effects differ: missing {:?}, extra {:?}",
            effects.difference(&applied).collect::<Vec<_>>(),
            applied.difference(&effects).collect::<Vec<_>>()
        ));
    }
    for b in 0..BROKERS {
        let id = broker(b);
        let Body::Broker { done, .. } = body(id)? else {
            unreachable!()
        };
        let ops: Vec<u64> = done.iter().map(|(op, ..)| *op).collect();
        let set: BTreeSet<u64> = ops.iter().copied().collect();
        if set.len() != ops.len() {
            return Err(format!("broker {} did a transfer twice: {ops:?}", id.0));
        }
        if set != transfers.get(&id).cloned().unwrap_or_default() {
            return Err(format!("broker {} did {set:?}", id.0));
        }
    }
    // Every client got one reply, the one the final state holds.
    for (c, list) in ops.iter().enumerate() {
        let results = &sim.clients[&client(c as u64)].results;
        for op in list {
            let got = results
                .get(&op.id)
                .ok_or_else(|| format!("op {} unanswered", op.id))?;
            let want = match &op.msg {
                Msg::Transfer { from, to, .. } => Msg::Moved(
                    seen[&(*from, op.id, "withdraw")],
                    seen[&(*to, op.id, "credit")],
                ),
                Msg::Deposit { .. } => Msg::Balance(seen[&(op.target, op.id, "credit")]),
                Msg::Payroll { .. } => Msg::Started,
                Msg::Collect { op: payroll } => {
                    let Some(Msg::Payroll { to, .. }) =
                        list.iter().find(|o| o.id == *payroll).map(|o| &o.msg)
                    else {
                        unreachable!()
                    };
                    Msg::Paid(to.iter().map(|a| seen[&(*a, *payroll, "credit")]).collect())
                }
                _ => unreachable!(),
            };
            if *got != want {
                return Err(format!(
                    "op {}: the client got {got:?}, the final state holds {want:?}",
                    op.id
                ));
            }
        }
    }
    Ok(())
}

fn op_target(ops: &[Vec<Op>], id: u64) -> ObjectId {
    ops.iter().flatten().find(|o| o.id == id).unwrap().target
}

fn run_seed(seed: u64, trace: bool) -> (Result<Tally, String>, Option<String>) {
    let ops = workload(seed);
    let (run, log) = match Sim::new(seed, true, &ops, trace, None) {
        Ok(sim) => sim.run(),
        Err(e) => (Err(e), None),
    };
    let verdict = run.and_then(|sim| check(&ops, &sim).map(|()| sim.tally.clone()));
    (verdict, log)
}

/// The same, with the line durable in a store file, and the FT server
/// restarting from it.
fn run_durable_seed(seed: u64, trace: bool) -> (Result<Tally, String>, Option<String>) {
    let ops = workload(seed);
    let path = std::env::temp_dir().join(format!(
        "actogrid-cic-sim-{}-{seed}.redb",
        std::process::id()
    ));
    let (run, log) = match Sim::new(seed, true, &ops, trace, Some(path)) {
        Ok(sim) => sim.run(),
        Err(e) => (Err(e), None),
    };
    let verdict = run.and_then(|sim| check(&ops, &sim).map(|()| sim.tally.clone()));
    (verdict, log)
}

#[test]
fn every_operation_takes_effect_exactly_once_across_rollbacks() {
    let (total, full) = sim::sweep("cic_sim", DEFAULT_SEEDS, run_seed);
    if full {
        assert!(total.double_crashes > 0, "no two simultaneous crashes");
        assert!(total.crashes_in_recovery > 0, "no crash during a recovery");
        assert!(
            total.zombies > 0 && total.zombie_messages > 0,
            "no instance outlived its replacement"
        );
        assert!(total.forced_jumps > 0, "no forced checkpoint over a jump");
        assert!(total.reply_deps > 0, "no reply consumed from beyond");
        assert!(
            total.collected_across_checkpoints > 0,
            "no future kept across a checkpoint"
        );
        assert!(total.replayed > 0, "no history replayed");
        assert!(total.resent_in_transit > 0, "nothing in transit resent");
        assert!(
            total.crossing_requests > 0,
            "no request in transit across a line"
        );
        assert!(
            total.crossing_replies > 0,
            "no reply in transit across a line"
        );
    }
}

/// Without failures nothing rolls back and the line keeps moving.
#[test]
fn a_failure_free_run_commits_lines_and_collects_behind_them() {
    for seed in 0..20 {
        let ops = workload(seed);
        let sim = Sim::new(seed, false, &ops, false, None).expect("a simulation");
        let (run, _) = sim.run();
        let sim = run.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        check(&ops, &sim).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(sim.tally.lines > 0, "seed {seed}: no line committed");
        let (checkpoints, entries) = sim.keeper.keeper().kept();
        // Behind the line, nothing is kept: a few checkpoints per member.
        assert!(
            checkpoints <= members().len() * 8,
            "seed {seed}: {checkpoints} checkpoints kept"
        );
        assert!(
            entries <= 200,
            "seed {seed}: {entries} history entries kept"
        );
    }
}

/// A seed is a replay: the same seed gives the same run, event for event.
#[test]
fn a_seed_replays_event_for_event() {
    for seed in [3, 11] {
        let (first, trace) = run_seed(seed, true);
        let (second, again) = run_seed(seed, true);
        assert!(
            trace.as_ref().is_some_and(|t| t.contains("RESTORE")),
            "seed {seed} recovers nothing"
        );
        assert_eq!(trace, again, "seed {seed} ran differently twice");
        assert_eq!(format!("{first:?}"), format!("{second:?}"));
    }
}

/// The line durable in a real store: the same guarantees, while the FT
/// server restarts from its file (and reads back exactly the line it had).
#[test]
fn a_durable_line_survives_restarts_of_the_ft_server() {
    let (total, full) = sim::sweep("cic_sim_durable", DURABLE_SEEDS, run_durable_seed);
    if full {
        assert!(total.server_restarts > 0, "the FT server never restarted");
        assert!(total.recoveries > 0, "nothing recovered");
        assert!(total.lines > 0, "no line committed");
    }
}
