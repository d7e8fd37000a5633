//! Where user code runs, and how a method that computes for minutes
//! leaves the rest of its runtime alone.
//!
//! A synchronous method is served inline, on the executor thread that runs
//! its object's body: no thread hop, which is what makes a call cost
//! microseconds. Three things keep a long one from stopping everything
//! else on that executor (heartbeats, connection I/O, the other objects,
//! control requests):
//!
//! * **Inline permits.** At most `workers - 1` methods run inline at once,
//!   so one executor thread is always free of user code. A method that
//!   finds no permit free runs in [`tokio::task::block_in_place`], which
//!   hands its executor thread's work to a new thread first.
//! * **Learning.** A method that ran inline for a whole watchdog tick or
//!   more is marked long for its object; its next calls go straight to
//!   `block_in_place`. After a run of short calls it is served inline again.
//!   A method that has only ever been short, several times in a row, is
//!   trusted: it runs inline without taking a permit, so objects serving
//!   short calls at once never hand off.
//! * **Deferred wakes.** Inside a body's poll, the tasks it wakes (the
//!   connection writer after a reply, a caller awaiting a local call, a
//!   local object's body) are not woken at once: a task woken from an
//!   executor thread goes to that thread's "next task" slot, which no other
//!   thread can take, and would wait there for as long as the method
//!   computes. The wakes are made when the poll ends, or by the watchdog
//!   thread once the poll has lasted a tick (from outside the executor, so
//!   a free thread runs them).
//!
//! Nothing here reads a clock on the call path: the watchdog advances a
//! tick counter, and a method spanning two readings of it is long.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Waker;
use std::time::Duration;

use crate::body::Mailbox;

/// How often the watchdog looks at the executor threads.
const TICK: Duration = Duration::from_millis(10);

/// Ticks since the watchdog started.
static TICKS: AtomicU64 = AtomicU64::new(0);

/// A wake put off until the body's poll ends.
pub(crate) enum Deferred {
    Waker(Waker),
    Mailbox(Arc<Mailbox>),
}

impl Deferred {
    fn run(self) {
        match self {
            Deferred::Waker(w) => w.wake(),
            Deferred::Mailbox(m) => m.notify(),
        }
    }
}

/// What the watchdog knows about one thread that polls bodies.
struct ThreadSlot {
    /// Odd while the thread is inside a body's poll; bumped on entry and
    /// exit, so an odd value seen twice is one poll lasting a tick.
    generation: AtomicU64,
    deferred: Mutex<Vec<Deferred>>,
    /// Set when something was deferred (skips the lock when not).
    pending: AtomicBool,
}

fn registry() -> &'static Mutex<Vec<Weak<ThreadSlot>>> {
    static REGISTRY: OnceLock<Mutex<Vec<Weak<ThreadSlot>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

thread_local! {
    /// Whether this thread is inside a body's poll.
    static IN_BODY: Cell<bool> = const { Cell::new(false) };
    static SLOT: Arc<ThreadSlot> = {
        let slot = Arc::new(ThreadSlot {
            generation: AtomicU64::new(0),
            deferred: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
        });
        lock(registry()).push(Arc::downgrade(&slot));
        start_watchdog();
        slot
    };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wakes `waker` now, or when the current body's poll ends.
pub(crate) fn wake(waker: Waker) {
    defer_or_run(Deferred::Waker(waker));
}

/// Tells `mailbox`'s body that requests arrived, now or when the current
/// body's poll ends.
pub(crate) fn notify(mailbox: &Arc<Mailbox>) {
    if IN_BODY.get() {
        defer_or_run(Deferred::Mailbox(mailbox.clone()));
    } else {
        mailbox.notify();
    }
}

fn defer_or_run(d: Deferred) {
    if !IN_BODY.get() {
        return d.run();
    }
    SLOT.with(|slot| {
        lock(&slot.deferred).push(d);
        slot.pending.store(true, Ordering::Release);
    });
}

/// Runs `poll` as part of a body's poll (see the module's documentation),
/// then makes the wakes it deferred.
pub(crate) fn in_body<R>(poll: impl FnOnce() -> R) -> R {
    if IN_BODY.get() {
        return poll();
    }
    /// Leaves the body's poll even when `poll` unwinds.
    struct Leave<'a>(&'a ThreadSlot);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            IN_BODY.set(false);
            self.0.generation.fetch_add(1, Ordering::Release);
            if self.0.pending.swap(false, Ordering::Acquire) {
                let deferred = std::mem::take(&mut *lock(&self.0.deferred));
                for d in deferred {
                    d.run();
                }
            }
        }
    }
    SLOT.with(|slot| {
        slot.generation.fetch_add(1, Ordering::Release);
        IN_BODY.set(true);
        let _leave = Leave(slot);
        poll()
    })
}

/// A future whose every poll runs [`in_body`].
pub(crate) struct InBody<F>(pub(crate) F);

impl<F: std::future::Future + Unpin> std::future::Future for InBody<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.get_mut();
        in_body(|| std::pin::Pin::new(&mut this.0).poll(cx))
    }
}

fn start_watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("actogrid-watchdog".into())
            .spawn(watchdog);
        if let Err(e) = spawned {
            tracing::warn!(
                "cannot start the watchdog thread ({e}): a long method may delay its object's replies"
            );
        }
    });
}

/// Every tick: bodies stuck in one poll since the last tick get their
/// deferred wakes made from here.
fn watchdog() {
    let mut seen: Vec<(Weak<ThreadSlot>, u64)> = Vec::new();
    loop {
        std::thread::sleep(TICK);
        TICKS.fetch_add(1, Ordering::Release);
        let slots: Vec<Arc<ThreadSlot>> = {
            let mut all = lock(registry());
            all.retain(|w| w.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        let mut next = Vec::with_capacity(slots.len());
        for slot in slots {
            let generation = slot.generation.load(Ordering::Acquire);
            let stuck = generation % 2 == 1
                && seen
                    .iter()
                    .any(|(w, g)| *g == generation && w.as_ptr() == Arc::as_ptr(&slot));
            if stuck && slot.pending.swap(false, Ordering::Acquire) {
                let deferred = std::mem::take(&mut *lock(&slot.deferred));
                for d in deferred {
                    d.run();
                }
            }
            next.push((Arc::downgrade(&slot), generation));
        }
        seen = next;
    }
}

/// The watchdog's tick count: a call spanning two more ticks ran for a
/// whole tick at least.
pub(crate) fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// How a runtime runs synchronous user code (methods, constructors).
pub(crate) struct Inline {
    /// Inline runs still allowed at once.
    permits: AtomicIsize,
    /// `block_in_place` is possible (a multi-threaded executor).
    can_hand_off: bool,
}

impl Inline {
    /// For the executor behind `handle`: one permit less than its threads,
    /// so one thread always stays free of user code.
    pub(crate) fn for_executor(handle: &tokio::runtime::Handle) -> Inline {
        let multi = handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
        let workers = handle.metrics().num_workers();
        Inline {
            permits: AtomicIsize::new(if multi {
                workers.saturating_sub(1).max(1) as isize
            } else {
                isize::MAX
            }),
            can_hand_off: multi && workers > 1,
        }
    }

    /// Runs `f`, user code that may compute for long, as `mode` says.
    /// Returns what `f` gave and whether it ran for a whole tick or more.
    pub(crate) fn run<R>(&self, mode: Mode, f: impl FnOnce() -> R) -> (R, bool) {
        let before = ticks();
        let long = |out: R| (out, ticks() >= before + 2);
        match mode {
            Mode::Trusted => return long(f()),
            Mode::Long if self.can_hand_off => return long(hand_off(f)),
            Mode::Long | Mode::Probe => {}
        }
        if self.permits.fetch_sub(1, Ordering::Acquire) <= 0 {
            self.permits.fetch_add(1, Ordering::Release);
            return long(if self.can_hand_off { hand_off(f) } else { f() });
        }
        /// Gives the permit back even when `f` unwinds.
        struct Release<'a>(&'a AtomicIsize);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Release);
            }
        }
        let release = Release(&self.permits);
        let out = f();
        drop(release);
        long(out)
    }
}

/// How to run user code, from what is known of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Always short so far: inline, no permit needed.
    Trusted,
    /// Not known yet: inline if a permit is free, else handed off.
    Probe,
    /// Known to compute for long: handed off.
    Long,
}

/// Runs `f` after handing this executor thread's work to another thread,
/// when this thread belongs to a multi-threaded executor (elsewhere it
/// simply runs `f`).
fn hand_off<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| outside_body(f))
        }
        _ => f(),
    }
}

/// Runs `f` on a thread that no longer runs the executor's tasks: what it
/// wakes can be woken at once (they go to the executor's shared queue),
/// and what the body deferred so far is woken now.
fn outside_body<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the body's poll back, even when `f` unwinds.
    struct Back(bool);
    impl Drop for Back {
        fn drop(&mut self) {
            IN_BODY.set(self.0);
        }
    }
    let _back = Back(IN_BODY.replace(false));
    if _back.0 {
        SLOT.with(|slot| {
            if slot.pending.swap(false, Ordering::Acquire) {
                let deferred = std::mem::take(&mut *lock(&slot.deferred));
                for d in deferred {
                    d.run();
                }
            }
        });
    }
    f()
}
