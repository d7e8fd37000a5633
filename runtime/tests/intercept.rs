//! The interception points (the internal API technical services build
//! on), across runtimes in one process over loopback: logging deliveries,
//! dropping and delaying requests, checkpoints at request boundaries and
//! restoring them elsewhere, headers piggybacked by `before_send`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actogrid_builtin::{Recorder, RecorderProxy, Worker, WorkerProxy};
use actogrid_runtime::intercept::{
    BodyAccess, Checkpoint, CheckpointError, Delivery, Hold, Interceptor, Logged, Outgoing, Reply,
    Returned, ServeOutcome, Verdict,
};
use actogrid_runtime::{Active, CallError, Config, ErrorKind, Proxy, Runtime};
use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc};

mod support;

use support::{node, runtime, within};

/// What an interceptor saw of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    object: u64,
    type_name: &'static str,
    method: &'static str,
    sender: u64,
    seq: u64,
    immediate: bool,
    header: Vec<u8>,
}

impl Seen {
    fn of(d: &Delivery<'_>) -> Seen {
        Seen {
            object: d.object,
            type_name: d.type_name,
            method: d.method,
            sender: d.sender,
            seq: d.seq,
            immediate: d.immediate,
            header: d.header.to_vec(),
        }
    }
}

/// Logs every delivery, and every serve outcome, in order.
#[derive(Default)]
struct Log {
    delivered: Mutex<Vec<Seen>>,
    served: Mutex<Vec<(&'static str, ServeOutcome)>>,
}

impl Log {
    fn delivered(&self) -> Vec<Seen> {
        self.delivered.lock().unwrap().clone()
    }
}

impl Interceptor for Log {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        _body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        self.delivered.lock().unwrap().push(Seen::of(delivery));
        Box::pin(async { Verdict::Deliver })
    }

    fn after_serve(&self, delivery: &Delivery<'_>, outcome: ServeOutcome, _body: &BodyAccess<'_>) {
        self.served.lock().unwrap().push((delivery.method, outcome));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_is_seen_in_order() -> anyhow::Result<()> {
    let callee = runtime().await?;
    let first = runtime().await?;
    let second = runtime().await?;
    let log = Arc::new(Log::default());
    callee.local_node("n").add_interceptor(log.clone())?;

    let rec = within(RecorderProxy::new(&node(&first, &callee, "n")?)).await?;
    let id = rec.active_ref().id();
    let other = second.adopt(&rec);
    let here = callee.adopt(&rec);

    within(rec.push(1)).await?;
    rec.push_one_way(2)?;
    // Only requests from one sender are ordered: the one-way push is
    // surely served once a later call from the same sender was.
    within(rec.push(3)).await?;
    within(other.push(4)).await?;
    assert_eq!(within(rec.count()).await?, 4);
    within(here.push(5)).await?;
    within(other.push(6)).await?;
    assert_eq!(within(rec.seen()).await?, [1, 2, 3, 4, 5, 6]);

    let calls: Vec<(u64, &str, bool)> = vec![
        (first.id(), "push", false),
        (first.id(), "push_one_way", false),
        (first.id(), "push", false),
        (second.id(), "push", false),
        (first.id(), "count", true),
        (callee.id(), "push", false),
        (second.id(), "push", false),
        (first.id(), "seen", false),
    ];
    let delivered = log.delivered();
    assert_eq!(
        delivered
            .iter()
            .map(|s| (s.sender, s.method, s.immediate))
            .collect::<Vec<_>>(),
        calls
    );
    for s in &delivered {
        assert_eq!(s.object, id);
        assert_eq!(s.type_name, Recorder::TYPE_NAME);
        assert!(s.header.is_empty(), "nobody wrote a header: {s:?}");
        if s.immediate {
            assert_eq!(s.seq, 0, "immediate requests are not ordered: {s:?}");
        }
    }
    // Sequence numbers count up by one per sender, from 1.
    for sender in [first.id(), second.id(), callee.id()] {
        let seqs: Vec<u64> = delivered
            .iter()
            .filter(|s| s.sender == sender && !s.immediate)
            .map(|s| s.seq)
            .collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "sender {sender:#x}");
    }
    // Every delivered request was also seen after serving, in order (the
    // last one's hook runs before its reply leaves).
    let served = log.served.lock().unwrap().clone();
    assert_eq!(
        served,
        calls
            .iter()
            .map(|&(_, m, _)| (m, ServeOutcome::Value))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// Drops the deliveries whose position (1-based) is in `positions`, and
/// the next one after `drop_next` is set.
#[derive(Default)]
struct Dropper {
    positions: Vec<usize>,
    count: AtomicUsize,
    drop_next: AtomicBool,
}

impl Interceptor for Dropper {
    fn before_delivery<'a>(
        &'a self,
        _delivery: &'a Delivery<'a>,
        _body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let drop = self.positions.contains(&n) || self.drop_next.swap(false, Ordering::SeqCst);
        Box::pin(async move {
            if drop {
                Verdict::Drop
            } else {
                Verdict::Deliver
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_is_never_served() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let dropper = Arc::new(Dropper {
        positions: vec![3],
        ..Dropper::default()
    });
    callee.local_node("n").add_interceptor(dropper.clone())?;
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;

    // One-way: the third delivery disappears, later ones are not held
    // back waiting for it.
    for v in 1..=4 {
        rec.push_one_way(v)?;
    }
    assert_eq!(within(rec.seen()).await?, [1, 2, 4]);

    // A call: no reply ever comes, so only a timeout ends the wait.
    dropper.drop_next.store(true, Ordering::SeqCst);
    let dropped = within(rec.push(5).timeout(Duration::from_millis(300))).await;
    assert!(
        matches!(dropped, Err(CallError::Timeout { method: "push", .. })),
        "{dropped:?}"
    );
    assert_eq!(within(rec.push(6)).await?, 4);
    assert_eq!(within(rec.seen()).await?, [1, 2, 4, 6]);
    assert_eq!(dropper.count.load(Ordering::SeqCst), 8);
    Ok(())
}

/// Counts what it sees arrive and end, as a load meter does.
#[derive(Default)]
struct Meter {
    arrived: AtomicUsize,
    ended: Mutex<Vec<ServeOutcome>>,
}

impl Interceptor for Meter {
    fn before_delivery<'a>(
        &'a self,
        _delivery: &'a Delivery<'a>,
        _body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Verdict::Deliver })
    }

    fn after_serve(&self, _d: &Delivery<'_>, outcome: ServeOutcome, _body: &BodyAccess<'_>) {
        self.ended.lock().unwrap().push(outcome);
    }
}

/// An interceptor that saw a request arrive sees it end when a later one
/// drops it: a load meter installed first never counts a dropped request
/// as being served for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interceptors_before_the_one_that_drops_see_the_request_end() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let meter = Arc::new(Meter::default());
    let dropper = Arc::new(Dropper {
        positions: vec![2],
        ..Dropper::default()
    });
    let node = callee.local_node("n");
    node.add_interceptor(meter.clone())?;
    node.add_interceptor(dropper)?;
    let rec = within(RecorderProxy::new(&self::node(&caller, &callee, "n")?)).await?;
    for v in 1..=3 {
        rec.push_one_way(v)?;
    }
    assert_eq!(within(rec.seen()).await?, [1, 3]);
    assert_eq!(meter.arrived.load(Ordering::SeqCst), 4);
    assert_eq!(
        *meter.ended.lock().unwrap(),
        [
            ServeOutcome::Value,
            ServeOutcome::Dropped,
            ServeOutcome::Value,
            ServeOutcome::Value
        ]
    );
    Ok(())
}

/// Holds every `push` until the test lets it through; reports each one it
/// holds.
struct Gate {
    permits: Semaphore,
    held: mpsc::UnboundedSender<u64>,
}

impl Interceptor for Gate {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        _body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            if delivery.method == "push" {
                let _ = self.held.send(delivery.seq);
                self.permits
                    .acquire()
                    .await
                    .expect("the gate stays open")
                    .forget();
            }
            Verdict::Deliver
        })
    }
}

/// Sleeps before every delivery.
struct Sleepy(Duration);

impl Interceptor for Sleepy {
    fn before_delivery<'a>(
        &'a self,
        _delivery: &'a Delivery<'a>,
        _body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            Verdict::Deliver
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_request_still_completes() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let (held, mut holding) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate {
        permits: Semaphore::new(0),
        held,
    });
    callee.local_node("gated").add_interceptor(gate.clone())?;
    callee
        .local_node("sleepy")
        .add_interceptor(Arc::new(Sleepy(Duration::from_millis(20))))?;

    let rec = within(RecorderProxy::new(&node(&caller, &callee, "gated")?)).await?;
    let first = rec.push(1);
    let second = rec.push(2);
    // The first push is held in the hook: neither call can have a reply.
    assert_eq!(within(holding.recv()).await, Some(1));
    assert!(!first.is_resolved() && !second.is_resolved());
    gate.permits.add_permits(1);
    assert_eq!(within(first).await?, 1);
    assert_eq!(within(holding.recv()).await, Some(2));
    assert!(!second.is_resolved());
    gate.permits.add_permits(1);
    assert_eq!(within(second).await?, 2);

    let slow = within(RecorderProxy::new(&node(&caller, &callee, "sleepy")?)).await?;
    let pushes: Vec<_> = (0..10).map(|v| slow.push(v)).collect();
    for (i, r) in within(actogrid_runtime::wait_all(pushes))
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r?, i as u64 + 1);
    }
    assert_eq!(within(slow.seen()).await?, (0..10).collect::<Vec<_>>());
    Ok(())
}

/// Takes a checkpoint before every delivery (or after every request
/// served, when `after`) and keeps the last one (with the method it
/// preceded or followed).
#[derive(Default)]
struct Checkpointer {
    after: bool,
    last: Mutex<Option<(&'static str, Result<Checkpoint, CheckpointError>)>>,
}

impl Checkpointer {
    fn last(&self) -> (&'static str, Result<Checkpoint, CheckpointError>) {
        self.last
            .lock()
            .unwrap()
            .clone()
            .expect("a checkpoint was taken")
    }
}

impl Interceptor for Checkpointer {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        if !self.after {
            *self.last.lock().unwrap() = Some((delivery.method, body.checkpoint()));
        }
        Box::pin(async { Verdict::Deliver })
    }

    fn after_serve(&self, delivery: &Delivery<'_>, _outcome: ServeOutcome, body: &BodyAccess<'_>) {
        if self.after {
            *self.last.lock().unwrap() = Some((delivery.method, body.checkpoint()));
        }
    }
}

/// A recorder on `callee`'s node "n" (watched by a [`Checkpointer`]) that
/// `caller` pushed 1..=`n` to; the checkpoint taken before the last push.
async fn pushed_and_checkpointed(
    caller: &Runtime,
    callee: &Runtime,
    n: u64,
) -> anyhow::Result<(RecorderProxy, Checkpoint)> {
    let checkpoints = Arc::new(Checkpointer::default());
    callee
        .local_node("n")
        .add_interceptor(checkpoints.clone())?;
    let rec = within(RecorderProxy::new(&node(caller, callee, "n")?)).await?;
    for v in 1..=n {
        within(rec.push(v)).await?;
    }
    let (method, checkpoint) = checkpoints.last();
    assert_eq!(method, "push");
    Ok((rec, checkpoint?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_restores_elsewhere() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let third = runtime().await?;
    let (rec, checkpoint) = pushed_and_checkpointed(&caller, &callee, 5).await?;
    assert_eq!(checkpoint.type_name, Recorder::TYPE_NAME);
    assert_eq!(checkpoint.object, rec.active_ref().id());

    // Not where the object still lives...
    let refused = within(callee.local_node("other").restore(checkpoint.clone())).await;
    assert_eq!(
        refused.map(|r| r.id()).map_err(|e| e.kind()),
        Err(ErrorKind::Refused)
    );
    // ...but on another runtime, under the same id, with the state of the
    // boundary: before the last push.
    let restored = within(caller.local_node("r").restore(checkpoint.clone())).await?;
    assert_eq!(restored.id(), checkpoint.object);
    assert_eq!(
        restored.node_url(),
        Some(node(&caller, &caller, "r")?.url().clone())
    );
    // Called from a third runtime: a sender the restored object has not
    // seen, so nothing waits on the sequence numbers `caller` used.
    let copy = third.adopt(&RecorderProxy::from_ref(restored));
    assert_eq!(within(copy.seen()).await?, [1, 2, 3, 4]);
    within(copy.push(6)).await?;
    assert_eq!(within(copy.seen()).await?, [1, 2, 3, 4, 6]);
    // The original goes on where it was.
    let original = callee.adopt(&rec);
    assert_eq!(within(original.seen()).await?, [1, 2, 3, 4, 5]);
    Ok(())
}

/// A checkpoint taken before a delivery must not count that request as
/// served: its state lacks it, so after a restore the request (replayed
/// from a log, say) has to be served, not dropped as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_before_delivery_does_not_count_that_request() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let (_, checkpoint) = pushed_and_checkpointed(&caller, &callee, 5).await?;
    // Four pushes are in the state; the fifth (seq 5) is not.
    assert_eq!(checkpoint.next_seq, [(caller.id(), 5)]);
    Ok(())
}

/// A checkpoint taken after a request was served has that request in its
/// state, so it counts it: restored, the object does not serve it again
/// when it is replayed (from a log, say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_after_serving_counts_that_request() -> anyhow::Result<()> {
    // A request the restored object waited for would wait longer than the
    // test does.
    let patient = Config {
        reorder_timeout: Duration::from_secs(3600),
        ..Config::default()
    };
    let caller = Runtime::bind("127.0.0.1:0", patient).await?;
    let callee = runtime().await?;
    let checkpoints = Arc::new(Checkpointer {
        after: true,
        ..Checkpointer::default()
    });
    callee
        .local_node("n")
        .add_interceptor(checkpoints.clone())?;
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;
    for v in 1..=5 {
        within(rec.push(v)).await?;
    }
    let (method, checkpoint) = checkpoints.last();
    assert_eq!(method, "push");
    let checkpoint = checkpoint?;
    assert_eq!(checkpoint.next_seq, [(caller.id(), 6)]);

    // Restored where `caller` lives, `caller`'s next request to it, its
    // sixth, is served at once, after the five the state holds.
    let restored = within(caller.local_node("r").restore(checkpoint)).await?;
    let copy = RecorderProxy::from_ref(restored);
    assert_eq!(within(copy.push(6)).await?, 6);
    assert_eq!(within(copy.seen()).await?, [1, 2, 3, 4, 5, 6]);
    Ok(())
}

/// Writes `sender seq` into the header of every request the node's
/// objects send.
struct Stamp;

impl Interceptor for Stamp {
    fn before_send(&self, outgoing: &mut Outgoing<'_>) {
        *outgoing.header = format!("{} {}", outgoing.sender, outgoing.seq).into_bytes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_written_before_send_reaches_the_callee() -> anyhow::Result<()> {
    let client = runtime().await?;
    let a = runtime().await?;
    let b = runtime().await?;
    a.local_node("n").add_interceptor(Arc::new(Stamp))?;
    let log = Arc::new(Log::default());
    b.local_node("n").add_interceptor(log.clone())?;

    let sender = within(WorkerProxy::new(&node(&client, &a, "n")?, "a".into())).await?;
    let callee = within(WorkerProxy::new(&node(&client, &b, "n")?, "b".into())).await?;
    let sender_id = sender.active_ref().id();
    assert_eq!(within(sender.delegate(callee.clone(), 0, 41)).await?, 41);
    assert_eq!(within(sender.delegate(callee.clone(), 0, 42)).await?, 42);
    // The client's own calls are not stamped: the client is no object of
    // the stamping node.
    assert_eq!(within(callee.slow(0, 43)).await?, 43);

    let slow: Vec<(u64, u64, Vec<u8>)> = log
        .delivered()
        .into_iter()
        .filter(|s| s.method == "slow")
        .map(|s| (s.sender, s.seq, s.header))
        .collect();
    assert_eq!(
        slow,
        [
            (sender_id, 1, format!("{sender_id} 1").into_bytes()),
            (sender_id, 2, format!("{sender_id} 2").into_bytes()),
            (client.id(), 1, Vec::new()),
        ]
    );
    Ok(())
}

/// Writes `replied <object> <seq>` into the header of every reply the
/// node's objects give.
struct ReplyStamp;

impl Interceptor for ReplyStamp {
    fn reply_header(
        &self,
        delivery: &Delivery<'_>,
        outcome: ServeOutcome,
        _payload: &[u8],
        _body: &BodyAccess<'_>,
        header: &mut Vec<u8>,
    ) {
        assert_eq!(outcome, ServeOutcome::Value);
        *header = format!("replied {} {}", delivery.object, delivery.seq).into_bytes();
    }
}

/// A reply header as heard: (caller, target, seq, header).
type HeardReply = (u64, u64, u64, Vec<u8>);

/// Records the reply headers the node's objects receive.
#[derive(Default)]
struct Heard(Mutex<Vec<HeardReply>>);

impl Interceptor for Heard {
    fn reply_received(&self, reply: &Returned<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((reply.caller, reply.target, reply.seq, reply.header.to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_written_on_a_reply_reaches_the_callers_interceptors() -> anyhow::Result<()> {
    let client = runtime().await?;
    let a = runtime().await?;
    let b = runtime().await?;
    let heard = Arc::new(Heard::default());
    a.local_node("n").add_interceptor(heard.clone())?;
    b.local_node("n").add_interceptor(Arc::new(ReplyStamp))?;
    a.local_node("m").add_interceptor(Arc::new(ReplyStamp))?;

    let caller = within(WorkerProxy::new(&node(&client, &a, "n")?, "a".into())).await?;
    let remote = within(WorkerProxy::new(&node(&client, &b, "n")?, "b".into())).await?;
    // On another node of the caller's runtime: the reply does not cross
    // the wire, and its header is read all the same.
    let near = within(WorkerProxy::new(&node(&client, &a, "m")?, "m".into())).await?;
    let (me, far_id, near_id) = (
        caller.active_ref().id(),
        remote.active_ref().id(),
        near.active_ref().id(),
    );
    assert_eq!(within(caller.delegate(remote.clone(), 0, 41)).await?, 41);
    assert_eq!(within(caller.delegate(near.clone(), 0, 42)).await?, 42);
    assert_eq!(within(caller.delegate(remote.clone(), 0, 43)).await?, 43);
    // The client's replies carry the header too; nothing reads it there,
    // and the value is the same.
    assert_eq!(within(remote.slow(0, 44)).await?, 44);

    let stamp = |object: u64, seq: u64| format!("replied {object} {seq}").into_bytes();
    assert_eq!(
        *heard.0.lock().unwrap(),
        [
            (me, far_id, 1, stamp(far_id, 1)),
            (me, near_id, 1, stamp(near_id, 1)),
            (me, far_id, 2, stamp(far_id, 2)),
        ]
    );
    Ok(())
}

/// Holds the replies of the `push` requests served, in turn, with the
/// holds it was given.
#[derive(Default)]
struct ReplyGate(Mutex<std::collections::VecDeque<Hold>>);

impl Interceptor for ReplyGate {
    fn reply_hold(&self, delivery: &Delivery<'_>, _outcome: ServeOutcome) -> Option<Hold> {
        if delivery.method != "push" {
            return None;
        }
        self.0.lock().unwrap().pop_front()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_reply_leaves_when_its_hold_is_done_and_the_object_serves_meanwhile()
-> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let gate = Arc::new(ReplyGate::default());
    callee.local_node("n").add_interceptor(gate.clone())?;
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    let (fail, failed) = tokio::sync::oneshot::channel::<()>();
    gate.0.lock().unwrap().extend([
        Hold::new(async move { opened.await.map_err(|e| e.to_string()) }),
        Hold::new(async { Ok(()) }),
        Hold::new(async move {
            let _ = failed.await;
            Err("rolled back".to_owned())
        }),
    ]);
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;
    let mut pushes = vec![
        tokio::spawn(rec.push(1).into_future()),
        tokio::spawn(rec.push(2).into_future()),
    ];
    // The second push served is answered while the first one's reply
    // waits.
    let (done, _, mut rest) = within(futures::future::select_all(&mut pushes)).await;
    assert_eq!(done??, 2);
    let held = rest.pop().unwrap();
    assert!(!held.is_finished());
    open.send(()).unwrap();
    assert_eq!(within(held).await??, 1);

    let dropped = tokio::spawn(rec.push(3).into_future());
    assert_eq!(within(rec.seen()).await?.len(), 3);
    fail.send(()).unwrap();
    let e = within(dropped).await?.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NodeDied, "{e}");
    assert!(e.to_string().contains("rolled back"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_without_serde_cannot_be_checkpointed() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let checkpoints = Arc::new(Checkpointer::default());
    callee
        .local_node("n")
        .add_interceptor(checkpoints.clone())?;

    let worker = within(WorkerProxy::new(&node(&caller, &callee, "n")?, "w".into())).await?;
    assert_eq!(within(worker.maybe_fail(false)).await?, 7);
    let (method, checkpoint) = checkpoints.last();
    assert_eq!(method, "maybe_fail");
    assert_eq!(
        checkpoint,
        Err(CheckpointError::NotSerializable(Worker::TYPE_NAME))
    );

    // A serde type on the same node checkpoints fine.
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;
    within(rec.push(1)).await?;
    assert!(checkpoints.last().1.is_ok());
    Ok(())
}

/// Panics in the hooks it is told to, once each.
#[derive(Default)]
struct Bomb {
    before: AtomicBool,
    after: AtomicBool,
}

impl Interceptor for Bomb {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        _body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        if delivery.method == "push" && self.before.swap(false, Ordering::SeqCst) {
            panic!("before_delivery went off");
        }
        Box::pin(async { Verdict::Deliver })
    }

    fn after_serve(
        &self,
        _delivery: &Delivery<'_>,
        _outcome: ServeOutcome,
        _body: &BodyAccess<'_>,
    ) {
        if self.after.swap(false, Ordering::SeqCst) {
            panic!("after_serve went off");
        }
    }
}

/// A hook that panics costs the request it was looking at, not the
/// object: that request is answered (not served), the requests queued
/// behind it are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_interceptor_leaves_the_object_serving() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let bomb = Arc::new(Bomb::default());
    callee.local_node("n").add_interceptor(bomb.clone())?;
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;

    bomb.before.store(true, Ordering::SeqCst);
    let first = rec.push(1);
    let second = rec.push(2);
    match within(first).await {
        Err(CallError::Refused { method, reason }) => {
            assert_eq!(method, "push");
            assert!(
                reason.contains("interceptor") && reason.contains("before_delivery went off"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(within(second).await?, 1);

    // After serving, the reply still leaves.
    bomb.after.store(true, Ordering::SeqCst);
    assert_eq!(within(rec.push(3)).await?, 2);
    assert!(!bomb.after.load(Ordering::SeqCst), "the hook ran");
    assert_eq!(within(rec.seen()).await?, [2, 3]);
    Ok(())
}

/// Panics in `before_send` once, when armed.
struct SendBomb(AtomicBool);

impl Interceptor for SendBomb {
    fn before_send(&self, _outgoing: &mut Outgoing<'_>) {
        if self.0.swap(false, Ordering::SeqCst) {
            panic!("before_send went off");
        }
    }
}

/// A `before_send` hook that panics stops the request it was looking at,
/// which fails with `Refused`, and not the object that sent it; that
/// request's number is not lost, so the next one is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_before_send_fails_that_request_only() -> anyhow::Result<()> {
    let client = runtime().await?;
    let a = runtime().await?;
    let b = Runtime::bind(
        "127.0.0.1:0",
        Config {
            reorder_timeout: Duration::from_secs(3600),
            ..Config::default()
        },
    )
    .await?;
    a.local_node("n")
        .add_interceptor(Arc::new(SendBomb(AtomicBool::new(true))))?;
    let sender = within(WorkerProxy::new(&node(&client, &a, "n")?, "a".into())).await?;
    let callee = within(WorkerProxy::new(&node(&client, &b, "n")?, "b".into())).await?;
    match within(sender.delegate(callee.clone(), 0, 41)).await {
        Err(CallError::Refused { reason, .. }) if reason.contains("before_send went off") => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(within(sender.delegate(callee.clone(), 0, 42)).await?, 42);
    Ok(())
}

/// A counter whose `Serialize` panics once it is told to break.
#[derive(Debug, Default, serde::Deserialize)]
struct Fragile {
    count: u64,
    broken: bool,
}

impl serde::Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(!self.broken, "the state is broken");
        (self.count, self.broken).serialize(s)
    }
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Fragile {
    pub fn new() -> Self {
        Fragile::default()
    }

    pub fn bump(&mut self) -> u64 {
        self.count += 1;
        self.count
    }

    pub fn break_state(&mut self) {
        self.broken = true;
    }
}

/// A state whose `Serialize` panics can neither be checkpointed nor
/// migrated, and both say so; the object goes on serving where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_panics_when_encoded_keeps_serving() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let elsewhere = runtime().await?;
    let checkpoints = Arc::new(Checkpointer::default());
    callee
        .local_node("n")
        .add_interceptor(checkpoints.clone())?;
    let fragile = within(FragileProxy::new(&node(&caller, &callee, "n")?)).await?;

    assert_eq!(within(fragile.bump()).await?, 1);
    assert!(checkpoints.last().1.is_ok());
    within(fragile.break_state()).await?;
    // The checkpoint before this request failed, the request was served.
    assert_eq!(within(fragile.bump()).await?, 2);
    match checkpoints.last() {
        ("bump", Err(CheckpointError::Encode { reason, .. })) => {
            assert!(reason.contains("the state is broken"), "{reason}");
        }
        other => panic!("expected an encoding failure, got {other:?}"),
    }

    let moved = within(fragile.migrate_to(node(&caller, &elsewhere, "n")?.url())).await;
    match moved {
        Err(e @ CallError::Refused { .. }) => {
            assert!(e.to_string().contains("the state is broken"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(within(fragile.bump()).await?, 3);
    assert_eq!(elsewhere.object_count(), 0);
    Ok(())
}

/// An argument whose encoding fails, panics or works, as asked.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
enum Awkward {
    Fine,
    Fails,
    Panics,
}

impl serde::Serialize for Awkward {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Awkward::Fine => s.serialize_unit_variant("Awkward", 0, "Fine"),
            Awkward::Fails => Err(serde::ser::Error::custom("refuses to encode")),
            Awkward::Panics => panic!("panics when encoded"),
        }
    }
}

/// Counts the arguments it takes.
#[derive(Debug, Default)]
struct Taker {
    taken: u64,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Taker {
    pub fn new() -> Self {
        Taker::default()
    }

    pub fn take(&mut self, _arg: Awkward) -> u64 {
        self.taken += 1;
        self.taken
    }
}

/// A request whose arguments do not encode never leaves, and does not
/// use up a sequence number: the sender's next request to the object is
/// served at once, not held back for the missing one until the reorder
/// timeout (here far longer than the test waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_left_holds_nothing_back() -> anyhow::Result<()> {
    let patient = Config {
        reorder_timeout: Duration::from_secs(3600),
        ..Config::default()
    };
    let caller = Runtime::bind("127.0.0.1:0", patient.clone()).await?;
    let callee = Runtime::bind("127.0.0.1:0", patient).await?;
    let remote = within(TakerProxy::new(&node(&caller, &callee, "n")?)).await?;
    // The same object from its own runtime: requests go straight to the body.
    let local = callee.adopt(&remote);

    let mut taken = 0;
    for taker in [&remote, &local] {
        let refused = within(taker.take(Awkward::Fails)).await;
        assert!(
            matches!(&refused, Err(CallError::Refused { method: "take", reason }) if reason.contains("do not encode")),
            "{refused:?}"
        );
        let panicked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| taker.take(Awkward::Panics)));
        assert!(panicked.is_err(), "encoding panics in the caller");
        taken += 1;
        assert_eq!(within(taker.take(Awkward::Fine)).await?, taken);
    }
    Ok(())
}

/// Two decodings of a [`Twin`] state wait for each other (for a while),
/// so that two restores of one checkpoint are surely under way at once.
static MEETING: (Mutex<usize>, std::sync::Condvar) = (Mutex::new(0), std::sync::Condvar::new());

/// A value whose state decodes only when a second one decodes too.
#[derive(Debug, serde::Serialize)]
struct Twin {
    value: u64,
}

impl<'de> serde::Deserialize<'de> for Twin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = <u64 as serde::Deserialize>::deserialize(d)?;
        let (arrived, met) = &MEETING;
        let mut arrived = arrived.lock().unwrap();
        *arrived += 1;
        met.notify_all();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while *arrived < 2 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            arrived = met.wait_timeout(arrived, left).unwrap().0;
        }
        Ok(Twin { value })
    }
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Twin {
    pub fn new(value: u64) -> Self {
        Twin { value }
    }

    pub fn value(&self) -> u64 {
        self.value
    }
}

/// Two restores of one object at once (a recovery that retries, say):
/// exactly one succeeds, and one object serves the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_restores_of_one_object_at_once_one_succeeds() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let checkpoint = Checkpoint {
        type_name: Twin::TYPE_NAME.to_owned(),
        object: 0x7e57_0b1e,
        state: postcard::to_allocvec(&41u64)?,
        next_seq: Vec::new(),
        sent_seq: Vec::new(),
        secret: None,
        hosts: Vec::new(),
    };
    let target = node(&caller, &callee, "n")?;
    let (first, second) = within(async {
        tokio::join!(
            target.restore(checkpoint.clone()),
            target.restore(checkpoint.clone())
        )
    })
    .await;
    let kinds = [&first, &second].map(|r| r.as_ref().map(|_| ()).map_err(|e| e.kind()));
    assert!(
        kinds.contains(&Ok(())) && kinds.contains(&Err(ErrorKind::Refused)),
        "{first:?} {second:?}"
    );
    assert_eq!(callee.object_count(), 1);
    let restored = first.or(second)?;
    let twin = TwinProxy::from_ref(restored);
    assert_eq!(within(twin.value()).await?, 41);
    Ok(())
}

/// Holds a future in its state.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Keeper {
    kept: Option<actogrid_runtime::Future<u64>>,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Keeper {
    pub fn new() -> Self {
        Keeper::default()
    }

    pub fn keep(&mut self, future: actogrid_runtime::Future<u64>) {
        self.kept = Some(future);
    }

    /// The kept future's value, or how it failed.
    pub async fn wait(&self) -> Result<u64, String> {
        let kept = self.kept.clone().ok_or("nothing kept")?;
        kept.await.map_err(|e| format!("{:?}: {e}", e.kind()))
    }
}

/// A future still pending in a checkpoint's state has nobody to bring its
/// value where the checkpoint is restored: it fails there at once, saying
/// so, rather than leaving the restored object waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_future_in_a_restored_checkpoint_fails() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let elsewhere = runtime().await?;
    let checkpoints = Arc::new(Checkpointer::default());
    callee
        .local_node("n")
        .add_interceptor(checkpoints.clone())?;
    let keeper = within(KeeperProxy::new(&node(&caller, &callee, "n")?)).await?;
    // A call that stays unanswered for longer than the test lasts.
    let rec = within(RecorderProxy::new(&node(&caller, &caller, "n")?)).await?;
    within(keeper.keep(rec.push_after(3_600_000, 1))).await?;
    // The checkpoint before this request holds the pending future.
    assert!(
        within(keeper.wait().timeout(Duration::from_millis(100)))
            .await
            .is_err()
    );
    let (method, checkpoint) = checkpoints.last();
    assert_eq!(method, "wait");

    let restored = within(elsewhere.local_node("r").restore(checkpoint?)).await?;
    let copy = KeeperProxy::from_ref(restored);
    match within(copy.wait()).await {
        Err(CallError::Method(why)) => {
            assert!(
                why.starts_with("NodeDied") && why.contains("checkpoint"),
                "{why}"
            );
        }
        other => panic!("expected the kept future to fail, got {other:?}"),
    }
    Ok(())
}

/// Migration, unlike a checkpoint restored later, forwards the values of
/// the pending futures its state holds: one kept by a migrated object
/// resolves at its new place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_future_follows_a_migration() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let elsewhere = runtime().await?;
    let (held, mut holding) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate {
        permits: Semaphore::new(0),
        held,
    });
    caller.local_node("gated").add_interceptor(gate.clone())?;
    let rec = within(RecorderProxy::new(&node(&caller, &caller, "gated")?)).await?;
    let keeper = within(KeeperProxy::new(&node(&caller, &callee, "n")?)).await?;
    within(keeper.keep(rec.push(7))).await?;
    // The push is held: the kept future is pending while the keeper moves.
    assert_eq!(within(holding.recv()).await, Some(1));
    within(keeper.migrate_to(node(&caller, &elsewhere, "n")?.url())).await?;
    assert_eq!(elsewhere.object_count(), 1);
    gate.permits.add_permits(1);
    assert_eq!(within(keeper.wait()).await?, 1);
    Ok(())
}

/// Takes a checkpoint before the `at`-th delivery, and logs that delivery
/// and every later one: what a message-logging protocol keeps.
struct Journal {
    at: usize,
    delivered: AtomicUsize,
    checkpoint: Mutex<Option<Checkpoint>>,
    log: Mutex<Vec<Logged>>,
}

impl Journal {
    fn new(at: usize) -> Journal {
        Journal {
            at,
            delivered: AtomicUsize::new(0),
            checkpoint: Mutex::default(),
            log: Mutex::default(),
        }
    }
}

impl Interceptor for Journal {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        let n = self.delivered.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.at {
            *self.checkpoint.lock().unwrap() = Some(body.checkpoint().expect("checkpointed"));
        }
        if n >= self.at {
            self.log.lock().unwrap().push(Logged::of(delivery));
        }
        Box::pin(async { Verdict::Deliver })
    }
}

/// A checkpoint and the requests logged after it recover the object
/// elsewhere with exactly the state it had: the log is served in its
/// order before anything else, a request the checkpoint already counts is
/// not served again, and one logged twice (a caller's resend) is served
/// once and answered twice with the same reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_and_its_log_recover_the_object_exactly() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let spare = runtime().await?;
    let journal = Arc::new(Journal::new(4));
    callee.local_node("n").add_interceptor(journal.clone())?;
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;
    for v in 1..=8 {
        assert_eq!(within(rec.push(v * 10)).await?, v);
    }
    let checkpoint = journal.checkpoint.lock().unwrap().clone().expect("taken");
    let mut log = journal.log.lock().unwrap().clone();
    assert_eq!(log.len(), 5, "pushes 4 to 8");
    assert!(log.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    // The object's runtime is gone (as far as the log is concerned):
    // recovered on a spare, with the log as it was, a resend of the
    // sixth push logged again at its end, and a request the checkpoint
    // counts already.
    callee.shutdown();
    let first = log[0].seq;
    let sixth = log[2].clone();
    let mut before = log[0].clone();
    before.seq -= 1;
    log.push(sixth.clone());
    log.push(before);
    let recovered = within(spare.local_node("r").recover(checkpoint.clone(), log)).await?;
    assert_eq!(recovered.reference.id(), checkpoint.object);
    let answers: Vec<(u64, ServeOutcome, Option<u64>)> = recovered
        .replies
        .iter()
        .map(|r| {
            let value = (r.reply.outcome == ServeOutcome::Value)
                .then(|| postcard::from_bytes(&r.reply.payload).expect("a u64"));
            (r.seq, r.reply.outcome, value)
        })
        .collect();
    assert_eq!(
        answers,
        [
            (first, ServeOutcome::Value, Some(4)),
            (first + 1, ServeOutcome::Value, Some(5)),
            (first + 2, ServeOutcome::Value, Some(6)),
            (first + 3, ServeOutcome::Value, Some(7)),
            (first + 4, ServeOutcome::Value, Some(8)),
            // The resend: the reply the sixth push got, not a second push.
            (first + 2, ServeOutcome::Value, Some(6)),
            (first - 1, ServeOutcome::Refused, None),
        ]
    );
    let refusal = String::from_utf8_lossy(&recovered.replies[6].reply.payload).into_owned();
    assert!(
        refusal.contains("after later ones were served"),
        "{refusal}"
    );
    let copy = caller.adopt(&RecorderProxy::from_ref(recovered.reference));
    assert_eq!(within(copy.seen()).await?, [10, 20, 30, 40, 50, 60, 70, 80]);
    Ok(())
}

/// A copy of a logged request that arrives while the reply of its original
/// — served again by the recovery — is still held by an interceptor gets
/// that reply once it leaves: not refused, not served again, and the
/// object serves on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_replayed_request_gets_its_held_reply_once_out() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let spare = runtime().await?;
    let journal = Arc::new(Journal::new(4));
    callee.local_node("n").add_interceptor(journal.clone())?;
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;
    for v in 1..=6 {
        assert_eq!(within(rec.push(v * 10)).await?, v);
    }
    let checkpoint = journal.checkpoint.lock().unwrap().clone().expect("taken");
    let mut log = journal.log.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "pushes 4 to 6");
    callee.shutdown();
    // The first push served again waits for its hold; a copy of it comes
    // after the others.
    let gate = Arc::new(ReplyGate::default());
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    gate.0.lock().unwrap().push_back(Hold::new(
        async move { opened.await.map_err(|e| e.to_string()) },
    ));
    spare.local_node("r").add_interceptor(gate)?;
    let first = log[0].clone();
    log.push(first.clone());
    let recovering = tokio::spawn(spare.local_node("r").recover(checkpoint, log).into_future());
    // Served on: the whole log, while the first reply waits.
    let start = std::time::Instant::now();
    while !recovering.is_finished() && start.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !recovering.is_finished(),
        "the held reply left before its hold"
    );
    open.send(()).unwrap();
    let recovered = within(recovering).await??;
    let answers: Vec<(u64, ServeOutcome)> = recovered
        .replies
        .iter()
        .map(|r| (r.seq, r.reply.outcome))
        .collect();
    assert_eq!(
        answers,
        [
            (first.seq, ServeOutcome::Value),
            (first.seq + 1, ServeOutcome::Value),
            (first.seq + 2, ServeOutcome::Value),
            // The copy: the first push's reply, once it left.
            (first.seq, ServeOutcome::Value),
        ]
    );
    assert_eq!(
        recovered.replies[3].reply.payload,
        recovered.replies[0].reply.payload
    );
    let moved = caller.adopt(&RecorderProxy::from_ref(recovered.reference));
    assert_eq!(within(moved.seen()).await?, [10, 20, 30, 40, 50, 60]);
    Ok(())
}

/// Keeps the reply of every request served, and answers a duplicate with
/// it: the reply log of a message-logging protocol.
#[derive(Default)]
struct ReplyLog {
    replies: Mutex<std::collections::HashMap<(u64, u64), Reply>>,
}

impl Interceptor for ReplyLog {
    fn replied(&self, delivery: &Delivery<'_>, outcome: ServeOutcome, payload: &[u8]) {
        let reply = Reply {
            outcome,
            payload: payload.to_vec(),
        };
        self.replies
            .lock()
            .unwrap()
            .insert((delivery.sender, delivery.seq), reply);
    }

    fn duplicate<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Option<Reply>> {
        let reply = self
            .replies
            .lock()
            .unwrap()
            .get(&(delivery.sender, delivery.seq))
            .cloned();
        Box::pin(std::future::ready(reply))
    }
}

/// A request served before the checkpoint and sent again after the
/// recovery is answered with the reply it got, which an interceptor
/// logged, not refused and not served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_answered_with_its_logged_reply() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let spare = runtime().await?;
    let journal = Arc::new(Journal::new(3));
    let replies = Arc::new(ReplyLog::default());
    callee.local_node("n").add_interceptor(journal.clone())?;
    callee.local_node("n").add_interceptor(replies.clone())?;
    spare.local_node("r").add_interceptor(replies.clone())?;
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;
    for v in 1..=4 {
        within(rec.push(v)).await?;
    }
    let checkpoint = journal.checkpoint.lock().unwrap().clone().expect("taken");
    let mut log = journal.log.lock().unwrap().clone();
    callee.shutdown();
    // The second push, served before the checkpoint, sent again.
    let mut second = log[0].clone();
    second.seq -= 1;
    log.push(second);
    let recovered = within(spare.local_node("r").recover(checkpoint, log)).await?;
    let last = recovered.replies.last().expect("answered");
    assert_eq!(last.reply.outcome, ServeOutcome::Value);
    assert_eq!(postcard::from_bytes::<u64>(&last.reply.payload)?, 2);
    let copy = caller.adopt(&RecorderProxy::from_ref(recovered.reference));
    assert_eq!(within(copy.seen()).await?, [1, 2, 3, 4]);
    Ok(())
}

/// Checkpoints an object each time it was idle for a while.
#[derive(Default)]
struct IdleCheckpointer {
    taken: Mutex<Vec<Result<Checkpoint, CheckpointError>>>,
}

impl Interceptor for IdleCheckpointer {
    fn idle_after(&self) -> Option<Duration> {
        Some(Duration::from_millis(20))
    }

    fn idle(&self, body: &BodyAccess<'_>) {
        self.taken.lock().unwrap().push(body.checkpoint());
    }
}

/// An object that receives no request is still checkpointed when an
/// interceptor asks to act on idle objects, again and again while it stays
/// idle, with the state its last request left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_object_is_checkpointed_when_asked() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let idle = Arc::new(IdleCheckpointer::default());
    callee.local_node("n").add_interceptor(idle.clone())?;
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;
    within(rec.push(7)).await?;
    within(async {
        while idle.taken.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let last = idle.taken.lock().unwrap().last().cloned().expect("taken")?;
    let spare = runtime().await?;
    let restored = within(spare.local_node("r").restore(last)).await?;
    let copy = caller.adopt(&RecorderProxy::from_ref(restored));
    assert_eq!(within(copy.seen()).await?, [7]);
    Ok(())
}

/// How many times a [`Tally`] was decoded, in this process.
static TALLIES_DECODED: AtomicUsize = AtomicUsize::new(0);

/// An argument that counts its decodings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Tally(u64);

impl<'de> serde::Deserialize<'de> for Tally {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TALLIES_DECODED.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(d).map(Tally)
    }
}

/// Methods around one that is compiled out.
#[derive(Debug, Default)]
struct Adder {
    sum: u64,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Adder {
    pub fn new() -> Self {
        Adder::default()
    }

    pub fn add(&mut self, t: Tally) -> u64 {
        self.sum += t.0;
        self.sum
    }

    #[cfg(any())]
    pub fn never(&mut self) {}

    pub fn add_twice(&mut self, t: Tally) -> u64 {
        self.sum += 2 * t.0;
        self.sum
    }
}

/// Interceptors learn a request's method from the request's first byte:
/// the arguments are decoded once, to serve them (a `Deserialize` with
/// side effects runs once), and methods after one compiled out are named
/// right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercepted_request_is_decoded_once() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let log = Arc::new(Log::default());
    callee.local_node("n").add_interceptor(log.clone())?;
    let adder = within(AdderProxy::new(&node(&caller, &callee, "n")?)).await?;

    let before = TALLIES_DECODED.load(Ordering::SeqCst);
    assert_eq!(within(adder.add(Tally(1))).await?, 1);
    assert_eq!(within(adder.add_twice(Tally(2))).await?, 5);
    assert_eq!(within(adder.add(Tally(3))).await?, 8);
    assert_eq!(TALLIES_DECODED.load(Ordering::SeqCst) - before, 3);
    assert_eq!(
        log.delivered().iter().map(|s| s.method).collect::<Vec<_>>(),
        ["add", "add_twice", "add"]
    );
    Ok(())
}

/// Knows where one object went once told, as a fault-tolerance service's
/// location service would once the object is recovered.
struct OneObject {
    object: u64,
    to: tokio::sync::watch::Receiver<Option<String>>,
    asked: AtomicUsize,
}

impl actogrid_runtime::intercept::Locator for OneObject {
    fn locate<'a>(&'a self, object: u64, _address: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            if object != self.object {
                return None;
            }
            self.asked.fetch_add(1, Ordering::SeqCst);
            let mut to = self.to.clone();
            to.wait_for(Option::is_some).await.ok()?.clone()
        })
    }
}

/// A caller with a locator keeps its calls until they are answered: when
/// the object's runtime dies with one request served in part (logged,
/// held before serving) and one not yet delivered, both are sent again to
/// where the object was recovered, and each future resolves with the
/// value of a failure-free run — the logged one with the reply its replay
/// gave, not served twice, the other served once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_runtime_died_is_answered_where_its_object_recovered() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let spare = runtime().await?;
    let journal = Arc::new(Journal::new(1));
    let (held, mut holding) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate {
        permits: Semaphore::new(2),
        held,
    });
    callee.local_node("n").add_interceptor(journal.clone())?;
    callee.local_node("n").add_interceptor(gate.clone())?;
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;
    let (tell, to) = tokio::sync::watch::channel(None);
    let locator = Arc::new(OneObject {
        object: rec.active_ref().id(),
        to,
        asked: AtomicUsize::new(0),
    });
    caller.set_locator(locator.clone())?;

    assert_eq!(within(rec.push(1)).await?, 1);
    assert_eq!(within(rec.push(2)).await?, 2);
    let third = rec.push(3);
    let fourth = rec.push(4);
    // The third is logged and held before it is served; the fourth waits
    // behind it.
    for _ in 0..3 {
        within(holding.recv()).await;
    }
    callee.shutdown();
    within(async {
        while locator.asked.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    let checkpoint = journal.checkpoint.lock().unwrap().clone().expect("taken");
    let log = journal.log.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "pushes 1 to 3");
    let recovered = within(spare.local_node("r").recover(checkpoint, log)).await?;
    tell.send(Some(spare.address().expect("serves").to_owned()))?;

    assert_eq!(within(third).await?, 3);
    assert_eq!(within(fourth).await?, 4);
    let copy = caller.adopt(&RecorderProxy::from_ref(recovered.reference));
    assert_eq!(within(copy.seen()).await?, [1, 2, 3, 4]);
    // Later calls through the first reference go to the spare.
    assert_eq!(within(rec.push(5)).await?, 5);
    Ok(())
}

/// Before each `push`, awaits a call to the object the push is for.
#[derive(Default)]
struct SelfCaller {
    own: Mutex<Option<RecorderProxy>>,
    got: Mutex<Vec<String>>,
}

impl Interceptor for SelfCaller {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        _body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let own = self.own.lock().unwrap().clone();
            if let (Some(own), "push") = (own, delivery.method) {
                let got = match own.count().await {
                    Ok(n) => format!("{n}"),
                    Err(e) => e.to_string(),
                };
                self.got.lock().unwrap().push(got);
            }
            Verdict::Deliver
        })
    }
}

/// A hook that awaits a call to its own object would wait forever (the
/// object serves nothing while the hook runs): the call fails at once as
/// a deadlock, the hook goes on, and the request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_calls_its_own_object_is_told_it_would_deadlock() -> anyhow::Result<()> {
    let caller = runtime().await?;
    let callee = runtime().await?;
    let hook = Arc::new(SelfCaller::default());
    callee.local_node("n").add_interceptor(hook.clone())?;
    let rec = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;
    *hook.own.lock().unwrap() = Some(callee.adopt(&rec));
    assert_eq!(within(rec.push(1)).await?, 1);
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("deadlock"), "{got:?}");
    Ok(())
}
