//! Recovery driven by the runtime's hooks, with the FT server in the
//! process: objects on a runtime that dies are recovered on another from
//! the durable store, and their callers' calls — answered, in flight or
//! not yet sent — complete as in a run without the failure.

use std::time::Duration;

use actogrid_builtin::{AccountProxy, RecorderProxy, TellerProxy, WorkerProxy};
use actogrid_fault_tolerance::EffectId;
use actogrid_fault_tolerance::server::{
    FtLink, FtServer, ObjectState, Protection, Reserved, Write, remote_locator,
};
use actogrid_runtime::{CallError, Config, Proxy, Runtime};
use futures::future::BoxFuture;

mod support;

use support::{TempDir, node, runtime, within};

/// Two protected objects on `callee` (node `n`, protected): one has calls
/// answered, in flight and not yet delivered when `callee` dies; both are
/// recovered on `spare` (node `r`, protected) from their checkpoints and
/// logs, every future resolves with the value of a failure-free run,
/// every request is served exactly once, and later calls go to the spare.
async fn die_and_recover(
    server: &FtServer,
    caller: &Runtime,
    callee: &Runtime,
    spare: &Runtime,
) -> anyhow::Result<()> {
    let a = within(RecorderProxy::new(&node(caller, callee, "n")?)).await?;
    let b = within(RecorderProxy::new(&node(caller, callee, "n")?)).await?;
    for v in 1..=5 {
        assert_eq!(within(a.push(v)).await?, v);
    }
    // Past the time to checkpoint: the next request checkpoints first, so
    // the recovery starts from a checkpoint and a truncated log.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for v in 6..=8 {
        assert_eq!(within(a.push(v)).await?, v);
    }
    assert_eq!(within(b.push(100)).await?, 1);
    // Twenty calls sent at once; the runtime dies while they are served.
    let pending: Vec<_> = (9..=28).map(|v| a.push(v)).collect();
    let b_pending = b.push(200);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let failed = callee.address().expect("serves").to_owned();
    callee.shutdown();

    let recovered = within(server.runtime_failed(&failed, &spare.local_node("r"))).await;
    assert_eq!(recovered.len(), 2, "{recovered:?}");
    for r in &recovered {
        let r = r.as_ref().expect("recovered");
        assert_eq!(r.incarnation.0, 2);
    }
    let spare_address = spare.address().expect("serves").to_owned();
    assert_eq!(
        server.location(a.active_ref().id()).as_deref(),
        Some(spare_address.as_str())
    );

    for (v, call) in (9..=28).zip(pending) {
        assert_eq!(within(call).await?, v, "push({v})");
    }
    assert_eq!(within(b_pending).await?, 2);
    assert_eq!(within(a.seen()).await?, (1..=28).collect::<Vec<u64>>());
    assert_eq!(within(b.seen()).await?, [100, 200]);
    // The recovered objects are protected on the spare in turn.
    assert_eq!(within(a.push(29)).await?, 29);
    let stats = server.store().stats();
    assert!(stats.checkpoints_written >= 4, "{stats:?}");
    Ok(())
}

/// The server in the process of the runtimes it protects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_a_dead_runtime_recover_and_their_callers_see_nothing() -> anyhow::Result<()> {
    let dir = TempDir::new("recover");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_millis(30))?;
    let caller = runtime().await?;
    let callee = runtime().await?;
    let spare = runtime().await?;
    callee
        .local_node("n")
        .add_interceptor(server.protection())?;
    spare.local_node("r").add_interceptor(server.protection())?;
    caller.set_locator(server.locator())?;
    die_and_recover(&server, &caller, &callee, &spare).await
}

/// The server on a runtime of its own, reached over the wire: protected
/// runtimes log and checkpoint through its endpoint, callers ask its
/// location service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_the_wire_recovers_the_same_way() -> anyhow::Result<()> {
    let dir = TempDir::new("remote");
    let ttc = Duration::from_millis(30);
    let server = FtServer::open(dir.0.join("ft.redb"), ttc)?;
    let home = runtime().await?;
    let served = within(server.serve(&home.local_node("ft"), "ft-server")).await?;
    let caller = runtime().await?;
    let callee = runtime().await?;
    let spare = runtime().await?;
    for (rt, name) in [(&callee, "n"), (&spare, "r")] {
        let endpoint = rt.adopt(&served.endpoint);
        rt.local_node(name)
            .add_interceptor(Protection::remote(endpoint, ttc))?;
    }
    caller.set_locator(remote_locator(caller.adopt(&served.location)))?;
    die_and_recover(&server, &caller, &callee, &spare).await
}

/// An object that cannot be checkpointed (its type has no `Serialize`) on
/// a protected node is never served unprotected: each call is refused,
/// saying why, instead of being served or left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_cannot_be_protected_is_refused_with_the_reason() -> anyhow::Result<()> {
    let dir = TempDir::new("unprotectable");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_millis(30))?;
    let caller = runtime().await?;
    let callee = runtime().await?;
    callee
        .local_node("n")
        .add_interceptor(server.protection())?;
    let worker = within(WorkerProxy::new(&node(&caller, &callee, "n")?, "w".into())).await?;
    match within(worker.maybe_fail(false)).await {
        Err(e @ CallError::Refused { .. }) => {
            let text = e.to_string();
            assert!(text.contains("cannot be protected"), "{text}");
            assert!(text.contains("Serialize"), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    Ok(())
}

/// The server in the process, with the log entries of requests written
/// only once the test lets them through.
#[derive(Debug)]
struct Gated {
    server: std::sync::Arc<FtServer>,
    open: tokio::sync::watch::Receiver<bool>,
}

impl FtLink for Gated {
    fn open_object(
        &self,
        object: u64,
        address: String,
    ) -> BoxFuture<'_, Result<ObjectState, String>> {
        let state = self.server.open_object(object, address);
        Box::pin(async move { Ok(state) })
    }

    fn checkpoint(
        &self,
        object: u64,
        reserved: Reserved,
        state: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let stored = self.server.checkpoint(object, reserved, state).await;
            stored.map_err(|e| e.to_string())
        })
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move {
            if matches!(write, Write::Log { .. }) {
                let mut open = self.open.clone();
                open.wait_for(|open| *open)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            self.server.write(write).await.map_err(|e| e.to_string())
        })
    }

    fn reply(&self, object: u64, sender: u64, seq: u64) -> BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.server.reply(object, sender, seq)))
    }

    fn effect(&self, effect: EffectId) -> BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.server.effect(effect)))
    }
}

/// A protected object serves a request while the request's log entry is
/// written, but nothing of the service leaves before the entry is
/// durable: not its reply, not the requests it makes to other objects
/// (which would otherwise depend on a request a failure could lose).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_request_does_leaves_before_it_is_logged() -> anyhow::Result<()> {
    let dir = TempDir::new("held");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_secs(3600))?;
    let (open, gate) = tokio::sync::watch::channel(false);
    let link = std::sync::Arc::new(Gated {
        server: server.clone(),
        open: gate,
    });
    let caller = runtime().await?;
    let callee = runtime().await?;
    callee
        .local_node("n")
        .add_interceptor(Protection::new(link, Duration::from_secs(3600)))?;
    let protected = node(&caller, &callee, "n")?;
    let plain = node(&caller, &callee, "plain")?;
    let from = within(AccountProxy::new(&plain, 100)).await?;
    let to = within(AccountProxy::new(&plain, 0)).await?;
    let teller = within(TellerProxy::new(&protected)).await?;
    let recorder = within(RecorderProxy::new(&protected)).await?;

    let transfer = teller.transfer(1, from.clone(), to.clone(), 10);
    let pushed = recorder.push(7);
    // Not logged: the accounts were not asked anything, no reply came.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(within(from.ledger()).await?, []);
    assert_eq!(within(to.ledger()).await?, []);
    let (mut transfer, mut pushed) = (Box::pin(transfer), Box::pin(pushed));
    assert!(futures::poll!(transfer.as_mut()).is_pending());
    assert!(futures::poll!(pushed.as_mut()).is_pending());

    // Logged: everything goes on as without the hold.
    open.send(true)?;
    assert_eq!(within(transfer).await?, 1);
    assert_eq!(within(pushed).await?, 1);
    assert_eq!(within(from.ledger()).await?, [(1, -10)]);
    assert_eq!(within(to.ledger()).await?, [(1, 10)]);
    // Seen sending while held, the method now waits for its log entry
    // before it is served; the same end.
    assert_eq!(
        within(teller.transfer(2, from.clone(), to.clone(), 5)).await?,
        2
    );
    assert_eq!(within(from.balance()).await?, 85);
    assert_eq!(within(to.balance()).await?, 15);
    let stats = server.store().stats();
    assert!(stats.entries_written >= 3, "{stats:?}");
    Ok(())
}

/// A new runtime that listens at the address of one declared dead (a lent
/// slot gives each of its runtimes the same port) is not taken for the dead
/// one: objects recovered onto it are not "stranded on a dead runtime" and
/// recovered again from under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_at_a_dead_ones_address_keeps_what_is_recovered_onto_it() -> anyhow::Result<()>
{
    let dir = TempDir::new("reused-address");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_millis(30))?;
    let caller = runtime().await?;
    let first = runtime().await?;
    let spare = runtime().await?;
    for (rt, name) in [(&first, "n"), (&spare, "r")] {
        rt.local_node(name).add_interceptor(server.protection())?;
    }
    caller.set_locator(server.locator())?;
    let recorder = within(RecorderProxy::new(&node(&caller, &first, "n")?)).await?;
    for v in 1..=3 {
        assert_eq!(within(recorder.push(v)).await?, v);
    }
    let reused = first.address().expect("serves").to_owned();
    first.shutdown();
    let recovered = within(server.runtime_failed(&reused, &spare.local_node("r"))).await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(within(recorder.push(4)).await?, 4);

    // Another runtime comes to listen where the first one did.
    let again = async {
        loop {
            match Runtime::bind(&reused, Config::default()).await {
                Ok(rt) => return rt,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    let second = within(again).await;
    second
        .local_node("n")
        .add_interceptor(server.protection())?;
    // The spare dies; its objects go to the new runtime at the old address.
    let failed = spare.address().expect("serves").to_owned();
    spare.shutdown();
    let recovered = within(server.runtime_failed(&failed, &second.local_node("n"))).await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(
        server.stranded().is_empty(),
        "recovered onto a live runtime, yet stranded: {:?}",
        server.stranded()
    );
    assert_eq!(
        server.location(recorder.active_ref().id()).as_deref(),
        Some(reused.as_str())
    );
    assert_eq!(within(recorder.push(5)).await?, 5);
    assert_eq!(within(recorder.seen()).await?, [1, 2, 3, 4, 5]);
    Ok(())
}

/// A runtime wrongly counted dead (still running, its callers' connections
/// to it open): its objects are recovered elsewhere and its instances
/// fenced. A call that still reaches a fenced instance is not left waiting:
/// the instance answers as a dead runtime would, and the caller sends the
/// call where the object lives now, where it is served once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_reaching_a_fenced_instance_goes_where_the_object_lives_now() -> anyhow::Result<()> {
    let dir = TempDir::new("fenced");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_millis(30))?;
    let caller = runtime().await?;
    let suspected = runtime().await?;
    let spare = runtime().await?;
    for (rt, name) in [(&suspected, "n"), (&spare, "r")] {
        rt.local_node(name).add_interceptor(server.protection())?;
    }
    caller.set_locator(server.locator())?;
    let recorder = within(RecorderProxy::new(&node(&caller, &suspected, "n")?)).await?;
    for v in 1..=3 {
        assert_eq!(within(recorder.push(v)).await?, v);
    }
    // Counted dead while it runs: recovered on the spare, the old instance
    // fenced, and the caller still connected to it.
    let address = suspected.address().expect("serves").to_owned();
    let recovered = within(server.runtime_failed(&address, &spare.local_node("r"))).await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    // The caller's proxy still points at the old instance.
    assert_eq!(within(recorder.push(4)).await?, 4);
    assert_eq!(within(recorder.push(5)).await?, 5);
    assert_eq!(within(recorder.seen()).await?, [1, 2, 3, 4, 5]);
    let spare_address = spare.address().expect("serves").to_owned();
    assert_eq!(
        server.location(recorder.active_ref().id()).as_deref(),
        Some(spare_address.as_str())
    );
    suspected.shutdown();
    Ok(())
}

/// A stand-alone server's failure detector tells runtimes apart by their
/// ids, not only their addresses: a runtime started at the address of one
/// it declared dead (a port handed out again, as a lent slot does) beats
/// on, and one that falls silent while another beats from its address is
/// declared dead all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_at_a_dead_ones_address_is_not_taken_for_it() -> anyhow::Result<()> {
    use actogrid_fault_tolerance::watch::{Beat, WatchConfig};
    let dir = TempDir::new("reused-address");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_secs(3600))?;
    let home = runtime().await?;
    server.watch(
        &home,
        WatchConfig {
            heartbeat: Duration::from_millis(40),
            recovery_wait: Duration::from_millis(50),
        },
    );
    let beat = |runtime: u64| Beat {
        node: "actogrid://127.0.0.1:5999/n".into(),
        vn: "workers".into(),
        spares: None,
        runtime,
    };
    let address = "127.0.0.1:5999";
    // Runtime 1 beats, then falls silent while runtime 2 beats from the
    // same address.
    let live = |r: Result<Option<Duration>, String>| r.map_err(anyhow::Error::msg);
    assert!(live(server.beat(beat(1)))?.is_some());
    let declared = async {
        while !server.dead_after(0).1.iter().any(|a| a == address) {
            live(server.beat(beat(2)))?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::Ok(())
    };
    within(declared).await?;
    // Runtime 1 is dead; runtime 2 is not, and its address is live again.
    let e = server.beat(beat(1)).unwrap_err();
    assert!(
        e.contains("declared the runtime at 127.0.0.1:5999 dead"),
        "{e}"
    );
    assert!(live(server.beat(beat(2)))?.is_some());
    assert!(!server.is_dead(address));
    Ok(())
}

/// A recovery that finds an instance of its object already on the node
/// it takes (an earlier attempt's, whose answer was lost) discards it and
/// restores the object there again: one instance serves, the one the FT
/// server knows, and a caller whose call that instance dropped is sent
/// back to the same runtime, where it is served once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_meeting_an_instance_on_its_node_replaces_it() -> anyhow::Result<()> {
    let dir = TempDir::new("replaced");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_millis(30))?;
    let caller = runtime().await?;
    let callee = runtime().await?;
    let spare = runtime().await?;
    for (rt, name) in [(&callee, "n"), (&spare, "r")] {
        rt.local_node(name).add_interceptor(server.protection())?;
    }
    caller.set_locator(server.locator())?;
    let recorder = within(RecorderProxy::new(&node(&caller, &callee, "n")?)).await?;
    for v in 1..=3 {
        assert_eq!(within(recorder.push(v)).await?, v);
    }
    let failed = callee.address().expect("serves").to_owned();
    callee.shutdown();
    let to = spare.local_node("r");
    let recovered = within(server.runtime_failed(&failed, &to)).await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(within(recorder.push(4)).await?, 4);
    // The spare counted dead by mistake and taken for its own object's
    // recovery: the object is there already.
    let spare_address = spare.address().expect("serves").to_owned();
    let again = within(server.runtime_failed(&spare_address, &to)).await;
    assert_eq!(again.len(), 1, "{again:?}");
    let r = again[0].as_ref().expect("recovered over the old instance");
    assert_eq!(r.incarnation.0, 3);
    assert_eq!(within(recorder.push(5)).await?, 5);
    assert_eq!(within(recorder.seen()).await?, [1, 2, 3, 4, 5]);
    assert_eq!(
        server.location(recorder.active_ref().id()).as_deref(),
        Some(spare_address.as_str())
    );
    Ok(())
}
