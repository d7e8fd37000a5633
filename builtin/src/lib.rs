//! Active types for tests and benchmarks, hosted by `actogrid node` so
//! that they run without an application binary. They are ordinary
//! `#[active]` types and double as examples.
//!
//! They live in a crate of their own so that no application carries them:
//! only the `actogrid` command, the tests and the benchmarks link it, and
//! a program that does must call [`link`] (a registered type is only in a
//! binary whose code names it).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use actogrid_runtime::{Future, NodeUrl};

/// Answers calls without doing anything: the benchmark target.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Echo {
    calls: u64,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
impl Echo {
    /// A fresh echo object.
    pub fn new() -> Self {
        Echo::default()
    }

    /// Does nothing: the empty round trip.
    pub fn ping(&mut self) {
        self.calls += 1;
    }

    /// Sends its argument back.
    pub fn echo(&mut self, data: Vec<u8>) -> Vec<u8> {
        self.calls += 1;
        data
    }

    /// Counts a one-way message.
    #[oneway]
    pub fn notify(&mut self) {
        self.calls += 1;
    }

    /// Calls served so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }
}

/// Records every value pushed to it, in the order served: ordering,
/// migration and fault-tolerance tests read the record back.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Recorder {
    seen: Vec<u64>,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
impl Recorder {
    /// An empty record.
    pub fn new() -> Self {
        Recorder::default()
    }

    /// Appends `value`; returns how many values were recorded.
    pub fn push(&mut self, value: u64) -> u64 {
        self.seen.push(value);
        self.seen.len() as u64
    }

    /// Appends `value` without a reply.
    #[oneway]
    pub fn push_one_way(&mut self, value: u64) {
        self.seen.push(value);
    }

    /// The values, in the order they were served.
    pub fn seen(&self) -> Vec<u64> {
        self.seen.clone()
    }

    /// How many values were recorded (served ahead of the queue).
    #[immediate]
    pub fn count(&self) -> u64 {
        self.seen.len() as u64
    }

    /// The id of the process serving this object.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Computes for `ms` milliseconds without yielding, then appends
    /// `value`: a task of a checkpointable object, for fault-tolerance
    /// benchmarks.
    pub fn push_computed(&mut self, ms: u64, value: u64) -> u64 {
        spin_for(Duration::from_millis(ms));
        self.seen.push(value);
        self.seen.len() as u64
    }

    /// Computes until its thread has used `us` microseconds of CPU time
    /// (however many other threads share the CPUs), then appends `value`:
    /// a task of a fixed amount of work, for fault-tolerance benchmarks.
    pub fn push_computed_us(&mut self, us: u64, value: u64) -> u64 {
        spin_cpu(Duration::from_micros(us));
        self.seen.push(value);
        self.seen.len() as u64
    }

    /// Appends a random number, drawn once (a journaled effect: a
    /// recovery that serves this request again appends the same one);
    /// returns it.
    pub async fn push_random(&mut self) -> Result<u64, WorkerError> {
        let value = actogrid_fault_tolerance::journaled(|| fastrand::u64(..))
            .await
            .map_err(|e| WorkerError(e.to_string()))?;
        self.seen.push(value);
        Ok(value)
    }

    /// Waits `ms` milliseconds, then draws a random number, as one
    /// journaled effect that awaits (as a request to an outside service
    /// would); appends it and returns it.
    pub async fn push_random_after(&mut self, ms: u64) -> Result<u64, WorkerError> {
        let value = actogrid_fault_tolerance::journaled_async(|| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            fastrand::u64(..)
        })
        .await
        .map_err(|e| WorkerError(e.to_string()))?;
        self.seen.push(value);
        Ok(value)
    }

    /// Works `ms` milliseconds, then appends `value`: a busy object, for
    /// load-balancing tests.
    pub async fn push_after(&mut self, ms: u64, value: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.seen.push(value);
        self.seen.len() as u64
    }
}

/// Computes for `length` without yielding (pure CPU, as a solver step
/// would); how many rounds it made.
fn spin_for(length: Duration) -> u64 {
    let start = std::time::Instant::now();
    let mut rounds = 0u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while start.elapsed() < length {
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        rounds += 1;
    }
    std::hint::black_box(x);
    rounds
}

/// Computes until this thread has used `length` of CPU time.
fn spin_cpu(length: Duration) {
    let used = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    };
    let start = used();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while used().saturating_sub(start) < length {
        for _ in 0..100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    std::hint::black_box(x);
}

/// An error a [`Worker`] method returns on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("worker failed: {0}")]
pub struct WorkerError(pub String);

/// Does slow, failing, panicking and forwarding work, for tests of error
/// kinds, futures and continuations. It does not implement serde, so it
/// also shows that such objects refuse to migrate.
#[derive(Debug)]
pub struct Worker {
    name: String,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
impl Worker {
    /// A worker called `name`.
    pub fn new(name: String) -> Self {
        Worker { name }
    }

    /// The worker's name and the process it runs in.
    pub fn whoami(&self) -> (String, u32) {
        (self.name.clone(), std::process::id())
    }

    /// Sleeps `ms` milliseconds, then returns `value`.
    pub async fn slow(&self, ms: u64, value: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        value
    }

    /// Returns `Err` when `fail` is set.
    pub fn maybe_fail(&self, fail: bool) -> Result<u64, WorkerError> {
        if fail {
            Err(WorkerError(format!("{} was asked to fail", self.name)))
        } else {
            Ok(7)
        }
    }

    /// Computes for `ms` milliseconds without yielding (pure CPU, as a
    /// solver step would), then returns how many rounds it made.
    pub fn spin(&self, ms: u64) -> u64 {
        spin_for(Duration::from_millis(ms))
    }

    /// Computes for `micros` microseconds over `data`, then returns its
    /// length: a slow consumer of large requests.
    pub fn digest(&self, data: Vec<u8>, micros: u64) -> u64 {
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_micros(micros) {
            x = x.wrapping_add(data.iter().take(64).map(|b| u64::from(*b)).sum::<u64>());
        }
        std::hint::black_box(x);
        data.len() as u64
    }

    /// The settings of the runtime serving this object, as text.
    pub fn settings(&self) -> String {
        actogrid_runtime::current().map_or_else(String::new, |rt| rt.config().to_string())
    }

    /// Panics with `message`.
    pub fn explode(&self, message: String) -> u64 {
        panic!("{message}")
    }

    /// Awaits `value` (a future, possibly unresolved when sent) and adds
    /// `add` to it.
    pub async fn add_to(&self, value: Future<u64>, add: u64) -> Result<u64, WorkerError> {
        value
            .await
            .map(|v| v + add)
            .map_err(|e| WorkerError(e.to_string()))
    }

    /// Asks `other` for `slow(ms, value)` and returns that future without
    /// awaiting it: the caller gets the value straight from `other`.
    pub fn delegate(&self, other: WorkerProxy, ms: u64, value: u64) -> Future<u64> {
        other.slow(ms, value)
    }

    /// Calls itself and awaits the answer: the direct deadlock.
    pub async fn call_self(&self, me: WorkerProxy) -> Result<u64, WorkerError> {
        me.slow(0, 1).await.map_err(|e| WorkerError(e.to_string()))
    }

    /// Looks up the object registered at `url` and reads its length.
    pub async fn lookup_len(&self, url: String) -> Result<u64, WorkerError> {
        let url: NodeUrl = url.parse().map_err(|e| WorkerError(format!("{e}")))?;
        let rt = actogrid_runtime::current().ok_or_else(|| WorkerError("no runtime".into()))?;
        let recorder: RecorderProxy = rt
            .lookup(&url)
            .await
            .map_err(|e| WorkerError(e.to_string()))?;
        recorder
            .count()
            .await
            .map_err(|e| WorkerError(e.to_string()))
    }
}

/// A bank account keeping a ledger of the transfers it took part in:
/// fault-tolerance tests check that every transfer is in it exactly once
/// and that the money adds up.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account {
    balance: i64,
    ledger: Vec<(u64, i64)>,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
impl Account {
    /// An account holding `balance`.
    pub fn new(balance: i64) -> Self {
        Account {
            balance,
            ledger: Vec::new(),
        }
    }

    /// Adds `amount` (negative: takes it) for transfer `id`; the balance
    /// after.
    pub fn apply(&mut self, id: u64, amount: i64) -> i64 {
        self.balance += amount;
        self.ledger.push((id, amount));
        self.balance
    }

    /// Awaits `amount` (a future, possibly unresolved when sent), then
    /// adds it for transfer `id`; the balance after.
    pub async fn apply_when(&mut self, id: u64, amount: Future<u64>) -> Result<i64, WorkerError> {
        let amount = amount.await.map_err(|e| WorkerError(e.to_string()))?;
        Ok(self.apply(id, amount as i64))
    }

    /// The balance.
    pub fn balance(&self) -> i64 {
        self.balance
    }

    /// Every transfer applied, in the order served.
    pub fn ledger(&self) -> Vec<(u64, i64)> {
        self.ledger.clone()
    }
}

/// Moves money between [`Account`]s, counting the transfers it made: an
/// object whose requests make requests to other objects.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Teller {
    done: u64,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
impl Teller {
    /// A teller that made no transfer yet.
    pub fn new() -> Self {
        Teller::default()
    }

    /// Takes `amount` from `from` and gives it to `to` as transfer `id`,
    /// one after the other; how many transfers this teller made.
    pub async fn transfer(
        &mut self,
        id: u64,
        from: AccountProxy,
        to: AccountProxy,
        amount: i64,
    ) -> Result<u64, WorkerError> {
        from.apply(id, -amount)
            .await
            .map_err(|e| WorkerError(e.to_string()))?;
        to.apply(id, amount)
            .await
            .map_err(|e| WorkerError(e.to_string()))?;
        self.done += 1;
        Ok(self.done)
    }

    /// Makes `count` transfers of `amount` from `from` to `to`, numbered
    /// from `first`, one after the other, in one request (the calls stay
    /// among the objects); how many transfers this teller made.
    pub async fn transfers(
        &mut self,
        first: u64,
        count: u64,
        from: AccountProxy,
        to: AccountProxy,
        amount: i64,
    ) -> Result<u64, WorkerError> {
        for id in first..first + count {
            self.transfer(id, from.clone(), to.clone(), amount).await?;
        }
        Ok(self.done)
    }
}

/// Keeps this crate's registrations in the binary that calls it (the
/// `actogrid` command, test and benchmark programs); returns the names of
/// the types.
pub fn link() -> [&'static str; 5] {
    use actogrid_runtime::Active;
    [
        Echo::TYPE_NAME,
        Recorder::TYPE_NAME,
        Worker::TYPE_NAME,
        Account::TYPE_NAME,
        Teller::TYPE_NAME,
    ]
}
