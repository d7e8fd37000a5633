//! Rolling objects back in place, as a fault-tolerance service rolls back
//! a group: discarding an object at once where it lives (even in the
//! middle of a request) so that one of its checkpoints can be restored
//! under its id, and requests turned away as stale, whose sequence
//! numbers their senders' next executions use again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actogrid_builtin::{AccountProxy, RecorderProxy, TellerProxy};
use actogrid_runtime::intercept::{
    BodyAccess, Checkpoint, Delivery, Interceptor, ServeOutcome, Verdict,
};
use actogrid_runtime::{Config, ErrorKind, Proxy, Runtime};
use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc};

mod support;

use support::{NEVER, node, runtime, within};

/// How long a discard may take: it does not wait for the object.
const AT_ONCE: Duration = Duration::from_secs(5);

/// Takes a checkpoint before the first delivery of `method`, says when
/// each delivery starts (the method called), holds the first delivery of
/// `gated` until the test lets it through, and remembers the objects
/// that left the node.
struct Watch {
    method: &'static str,
    checkpoint: Mutex<Option<Checkpoint>>,
    started: mpsc::UnboundedSender<&'static str>,
    gated: Option<&'static str>,
    gate: Semaphore,
    passed: AtomicBool,
    left: Mutex<Vec<u64>>,
}

impl Watch {
    fn new(method: &'static str) -> (Arc<Watch>, mpsc::UnboundedReceiver<&'static str>) {
        Watch::gating(method, None)
    }

    fn gating(
        method: &'static str,
        gated: Option<&'static str>,
    ) -> (Arc<Watch>, mpsc::UnboundedReceiver<&'static str>) {
        let (started, starts) = mpsc::unbounded_channel();
        let watch = Watch {
            method,
            checkpoint: Mutex::default(),
            started,
            gated,
            gate: Semaphore::new(0),
            passed: AtomicBool::new(false),
            left: Mutex::default(),
        };
        (Arc::new(watch), starts)
    }

    fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
            .lock()
            .unwrap()
            .clone()
            .expect("a checkpoint was taken")
    }
}

impl Interceptor for Watch {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        if delivery.method == self.method {
            let mut kept = self.checkpoint.lock().unwrap();
            if kept.is_none() {
                *kept = Some(body.checkpoint().expect("the state encodes"));
            }
        }
        let _ = self.started.send(delivery.method);
        let held = Some(delivery.method) == self.gated && !self.passed.swap(true, Ordering::SeqCst);
        Box::pin(async move {
            if held {
                self.gate
                    .acquire()
                    .await
                    .expect("the gate stays open")
                    .forget();
            }
            Verdict::Deliver
        })
    }

    fn left(&self, object: u64) {
        self.left.lock().unwrap().push(object);
    }
}

/// Waits for the delivery of `method` to start (those of other methods
/// go by).
async fn started(starts: &mut mpsc::UnboundedReceiver<&'static str>, method: &str) {
    within(async { while starts.recv().await.expect("the node is watched") != method {} }).await;
}

/// Waits until `object` of `runtime` has `n` requests queued.
async fn queued(runtime: &Runtime, object: u64, n: usize) {
    within(async {
        while runtime.queue_length(object) != Some(n) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// An object in the middle of a long request, with calls queued behind
/// it (some taken from its queue with it, one still there), is discarded
/// at once: every call it had not answered fails as on a dead runtime,
/// none with a value; then one of its checkpoints is restored under its
/// id where it lived, and its callers' proxies reach the restored object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_is_discarded_mid_request_and_restored_in_place() -> anyhow::Result<()> {
    let caller = runtime().await?;
    // The calls the discarded instance lost leave a gap in the caller's
    // numbering, which the restored object waits out briefly.
    let brief = Config {
        reorder_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let host = Runtime::bind("127.0.0.1:0", brief).await?;
    let (watch, mut starts) = Watch::gating("push_after", Some("seen"));
    host.local_node("n").add_interceptor(watch.clone())?;
    let there = node(&caller, &host, "n")?;

    let rec = within(RecorderProxy::new(&there)).await?;
    let id = rec.active_ref().id();
    assert_eq!(within(rec.push(1)).await?, 1);
    assert_eq!(within(rec.push(2)).await?, 2);
    // While the object is held on a request, a call of thirty seconds
    // (an `async` sleep) and two more queue up: the object takes them
    // from its queue together.
    let busy = tokio::spawn(rec.seen().into_future());
    started(&mut starts, "seen").await;
    let long = tokio::spawn(rec.push_after(30_000, 3).into_future());
    let mut behind = vec![
        tokio::spawn(rec.push(4).into_future()),
        tokio::spawn(rec.push(5).into_future()),
    ];
    queued(&host, id, 3).await;
    watch.gate.add_permits(1);
    assert_eq!(within(busy).await??, [1, 2]);
    started(&mut starts, "push_after").await;
    // And one more, still in the queue.
    behind.push(tokio::spawn(rec.push(6).into_future()));
    queued(&host, id, 3).await;

    let asked = Instant::now();
    let discarded = tokio::time::timeout(AT_ONCE, there.discard(id))
        .await
        .expect("a discard does not wait for the object")?;
    assert!(discarded);
    assert!(asked.elapsed() < AT_ONCE);
    assert_eq!(host.object_count(), 0);
    assert_eq!(*watch.left.lock().unwrap(), [id]);
    for call in behind {
        let e = within(call).await?.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NodeDied, "{e}");
    }
    let e = within(long)
        .await?
        .expect_err("the discarded request gives no value");
    assert_eq!(e.kind(), ErrorKind::NodeDied, "{e}");
    assert!(e.to_string().contains("discarded"), "{e}");
    // A call that comes now meets a dead runtime too, not an unknown
    // object.
    let e = within(rec.push(7)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NodeDied, "{e}");
    // Gone: nothing more to discard.
    assert!(!within(there.discard(id)).await?);

    // The checkpoint taken before the long request, restored in place:
    // the old proxy reaches it, with the checkpoint's state.
    let checkpoint = watch.checkpoint();
    let restored = within(there.restore(checkpoint)).await?;
    assert_eq!(restored.id(), id);
    assert_eq!(within(rec.count()).await?, 2);
    assert_eq!(within(rec.seen()).await?, [1, 2]);
    assert_eq!(within(rec.push(8)).await?, 3);
    assert_eq!(within(rec.seen()).await?, [1, 2, 8]);
    assert_eq!(host.object_count(), 1);

    // Once more, recovered in place this time (with nothing to replay).
    assert!(within(there.discard(id)).await?);
    let recovered =
        within(there.recover_serving(watch.checkpoint(), Vec::new(), Vec::new())).await?;
    assert_eq!(recovered.reference.id(), id);
    assert_eq!(within(rec.count()).await?, 2);
    assert_eq!(*watch.left.lock().unwrap(), [id, id]);
    Ok(())
}

/// What the sends of a [`Cruncher`] made while it was discarded gave.
static SENDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Lets a [`Cruncher`] stop computing.
static RELEASED: AtomicBool = AtomicBool::new(false);

/// Computes without yielding, then tells a recorder: a method a discard
/// cannot stop.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Cruncher {
    runs: u64,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Cruncher {
    pub fn new() -> Self {
        Cruncher::default()
    }

    /// Computes until it is released (for [`NEVER`] at most), then
    /// sends `value` to `to`, one way and as a call; how many runs it
    /// made.
    pub fn crunch_then_tell(&mut self, to: RecorderProxy, value: u64) -> u64 {
        let until = Instant::now() + NEVER;
        while !RELEASED.load(Ordering::SeqCst) && Instant::now() < until {
            std::hint::spin_loop();
        }
        self.runs += 1;
        let one_way = to.push_one_way(value).map_err(|e| e.to_string());
        let call = to.push(value);
        let mut sends = SENDS.lock().unwrap();
        sends.push(format!("{one_way:?}"));
        if call.is_resolved() {
            sends.push("the call failed at once".to_owned());
        }
        self.runs
    }

    pub fn runs(&self) -> u64 {
        self.runs
    }
}

/// A method that computes when its object is discarded runs to its end,
/// but nothing of it leaves: its sends are not sent, its reply is not
/// given (its caller gets `NodeDied`); the instance restored meanwhile
/// under the same id serves, sends, and stays when the old method ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaves_a_discarded_method_that_runs_on() -> anyhow::Result<()> {
    let caller = runtime().await?;
    // The call the discarded instance lost leaves a gap in the caller's
    // numbering, which the restored object waits out briefly.
    let brief = Config {
        reorder_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let host = Runtime::bind("127.0.0.1:0", brief).await?;
    let (watch, mut starts) = Watch::new("crunch_then_tell");
    host.local_node("n").add_interceptor(watch.clone())?;
    let there = node(&caller, &host, "n")?;
    let cruncher = within(CruncherProxy::new(&there)).await?;
    let id = cruncher.active_ref().id();
    let rec = within(RecorderProxy::new(&node(&caller, &caller, "r")?)).await?;

    let crunch = tokio::spawn(cruncher.crunch_then_tell(rec.clone(), 1).into_future());
    // Its hooks and the method run in one go: it computes from now on.
    started(&mut starts, "crunch_then_tell").await;
    let asked = Instant::now();
    assert!(
        tokio::time::timeout(AT_ONCE, there.discard(id))
            .await
            .expect("a discard does not wait for the object")?
    );
    assert!(asked.elapsed() < AT_ONCE);
    // Restored while the old method still computes.
    let restored = within(there.restore(watch.checkpoint())).await?;
    assert_eq!(restored.id(), id);
    assert_eq!(within(cruncher.runs()).await?, 0);
    assert!(!crunch.is_finished(), "the old method still computes");
    RELEASED.store(true, Ordering::SeqCst);

    let e = within(crunch)
        .await?
        .expect_err("the discarded method's reply is not given");
    assert_eq!(e.kind(), ErrorKind::NodeDied, "{e}");
    let sends = SENDS.lock().unwrap().clone();
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert!(sends[0].contains("discarded"), "{sends:?}");
    // Neither reached the recorder.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(within(rec.seen()).await?, Vec::<u64>::new());

    // The new instance stayed, and its sends leave.
    assert_eq!(host.object_count(), 1);
    assert_eq!(within(cruncher.crunch_then_tell(rec.clone(), 2)).await?, 1);
    within(async {
        while within(rec.seen()).await? != [2, 2] {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::Ok(())
    })
    .await?;
    Ok(())
}

/// Turns away as stale the first request `sender` sends `target` under
/// number `seq`, and delivers everything else; records what `sender`
/// sent `target`.
#[derive(Default)]
struct Staler {
    sender: AtomicU64,
    target: AtomicU64,
    seq: u64,
    fired: AtomicBool,
    seen: Mutex<Vec<(u64, &'static str)>>,
}

impl Interceptor for Staler {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        _body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        let ours = delivery.sender == self.sender.load(Ordering::SeqCst)
            && delivery.object == self.target.load(Ordering::SeqCst);
        if ours {
            self.seen
                .lock()
                .unwrap()
                .push((delivery.seq, delivery.method));
        }
        let stale = ours && delivery.seq == self.seq && !self.fired.swap(true, Ordering::SeqCst);
        Box::pin(async move {
            if stale {
                Verdict::Stale("sent in epoch 1, which a rollback ended".into())
            } else {
                Verdict::Deliver
            }
        })
    }
}

/// Records how each request ended, as seen by an interceptor that comes
/// before the one that judges it.
#[derive(Default)]
struct Ends(Mutex<Vec<(&'static str, ServeOutcome)>>);

impl Interceptor for Ends {
    fn after_serve(&self, delivery: &Delivery<'_>, outcome: ServeOutcome, _body: &BodyAccess<'_>) {
        self.0.lock().unwrap().push((delivery.method, outcome));
    }
}

/// A request turned away as stale is refused to its caller and does not
/// use up its number: the request its sender sends under that number
/// after its own rollback (its checkpoint restored, taken before it sent)
/// is served, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_request_leaves_its_number_to_the_next_execution() -> anyhow::Result<()> {
    let client = runtime().await?;
    let tellers = runtime().await?;
    let banks = runtime().await?;
    let (watch, _) = Watch::new("transfer");
    tellers.local_node("t").add_interceptor(watch.clone())?;
    let ends = Arc::new(Ends::default());
    let staler = Arc::new(Staler {
        seq: 1,
        ..Staler::default()
    });
    let bank = banks.local_node("b");
    bank.add_interceptor(ends.clone())?;
    bank.add_interceptor(staler.clone())?;

    let at_tellers = node(&client, &tellers, "t")?;
    let teller = within(TellerProxy::new(&at_tellers)).await?;
    let from = within(AccountProxy::new(&node(&client, &banks, "b")?, 100)).await?;
    let to = within(AccountProxy::new(&node(&client, &banks, "b")?, 0)).await?;
    let teller_id = teller.active_ref().id();
    staler.sender.store(teller_id, Ordering::SeqCst);
    staler
        .target
        .store(from.active_ref().id(), Ordering::SeqCst);

    // The teller's first request to `from`, #1, is stale: refused.
    let e = within(teller.transfer(1, from.clone(), to.clone(), 10))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Method, "{e}");
    let text = e.to_string();
    assert!(text.contains("stale") && text.contains("epoch 1"), "{e}");
    assert!(text.contains("refused"), "the caller was refused: {e}");
    assert_eq!(within(from.ledger()).await?, Vec::<(u64, i64)>::new());
    assert_eq!(within(to.ledger()).await?, Vec::<(u64, i64)>::new());
    // The interceptor before the one that turned it away saw it end.
    assert!(
        ends.0
            .lock()
            .unwrap()
            .contains(&("apply", ServeOutcome::Dropped)),
        "{:?}",
        ends.0.lock().unwrap()
    );

    // The teller rolls back: discarded, and restored in place from its
    // checkpoint before the transfer, when it had sent nothing yet. Its
    // next request to `from` is #1 again, and is served.
    assert!(within(at_tellers.discard(teller_id)).await?);
    within(at_tellers.restore(watch.checkpoint())).await?;
    // Asked from another runtime: `client` numbered its own first
    // transfer, which the checkpoint does not count.
    let elsewhere = runtime().await?;
    let again = elsewhere.adopt(&teller);
    assert_eq!(
        within(again.transfer(1, from.clone(), to.clone(), 10)).await?,
        1
    );
    assert_eq!(within(from.ledger()).await?, [(1, -10)]);
    assert_eq!(within(to.ledger()).await?, [(1, 10)]);
    assert_eq!(within(from.balance()).await?, 90);
    assert_eq!(
        *staler.seen.lock().unwrap(),
        [(1, "apply"), (1, "apply")],
        "#1 twice: turned away, then served"
    );
    Ok(())
}
