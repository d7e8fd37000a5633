//! Runtimes of one process calling each other over loopback: creation,
//! ordering, futures passed on, private types, refusals, migration.

use actogrid_builtin::{EchoProxy, RecorderProxy};
use actogrid_runtime::{Config, Runtime, wait_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_talk() -> anyhow::Result<()> {
    let a = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let b = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let node_b = a.node(&format!("actogrid://{}/n1", b.address().unwrap()).parse()?);
    let echo = EchoProxy::new(&node_b).await?;
    echo.ping().await?;
    assert_eq!(echo.echo(vec![1, 2, 3]).await?, vec![1, 2, 3]);
    let rec = RecorderProxy::new(&node_b).await?;
    let futs: Vec<_> = (0..1000).map(|i| rec.push(i)).collect();
    for r in wait_all(futs).await {
        r?;
    }
    assert_eq!(rec.seen().await?, (0..1000).collect::<Vec<_>>());
    let local = RecorderProxy::new(&a.local_node("here")).await?;
    local.push(5).await?;
    assert_eq!(local.seen().await?, vec![5]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_passed_to_third_runtime() -> anyhow::Result<()> {
    use actogrid_builtin::WorkerProxy;
    use std::time::Duration;
    let m = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let a = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let b = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let na = m.node(&format!("actogrid://{}/a", a.address().unwrap()).parse()?);
    let nb = m.node(&format!("actogrid://{}/b", b.address().unwrap()).parse()?);
    let wa = WorkerProxy::new(&na, "wa".into()).await?;
    let wb = WorkerProxy::new(&nb, "wb".into()).await?;
    let pending = wa.slow(300, 41);
    let on_b = wb.add_to(pending.clone(), 1);
    let again_on_b = wb.add_to(pending.clone(), 2);
    let on_a = wa.add_to(pending.clone(), 3);
    let never = Duration::from_secs(30);
    assert_eq!(tokio::time::timeout(never, on_b).await??, 42);
    assert_eq!(tokio::time::timeout(never, again_on_b).await??, 43);
    assert_eq!(tokio::time::timeout(never, on_a).await??, 44);
    Ok(())
}

/// A private active type, used through its proxy.
struct Tally {
    n: u32,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Tally {
    pub fn new() -> Self {
        Tally { n: 0 }
    }

    pub fn bump(&mut self) -> u32 {
        self.n += 1;
        self.n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_types_are_active_too() -> anyhow::Result<()> {
    let rt = Runtime::builder().build();
    let t = TallyProxy::new(&rt.local_node("n")).await?;
    t.bump().await?;
    assert_eq!(t.bump().await?, 2);
    Ok(())
}

/// A constructor that panics when asked to.
struct Fragile;

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Fragile {
    pub fn new(explode: bool) -> Self {
        assert!(!explode, "refusing to be built");
        Fragile
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_constructor_fails_the_creation() -> anyhow::Result<()> {
    let a = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let b = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let node = a.node(&format!("actogrid://{}/n", b.address().unwrap()).parse()?);
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        FragileProxy::new(&node, true),
    )
    .await?
    .unwrap_err();
    assert_eq!(err.kind(), actogrid_runtime::ErrorKind::Panicked);
    assert!(err.to_string().contains("refusing to be built"), "{err}");
    FragileProxy::new(&node, false).await?;
    Ok(())
}

/// Calls a recorder on behalf of its callers; serializable, so it migrates.
#[derive(serde::Serialize, serde::Deserialize)]
struct Relay {
    target: RecorderProxy,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Relay {
    pub fn new(target: RecorderProxy) -> Self {
        Relay { target }
    }

    pub async fn push(&self, value: u64) -> u64 {
        self.target.push(value).await.unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_object_keeps_calling_the_objects_it_called() -> anyhow::Result<()> {
    let main = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let a = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let b = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let url = |rt: &Runtime| -> anyhow::Result<actogrid_runtime::NodeUrl> {
        Ok(format!("actogrid://{}/n", rt.address().unwrap()).parse()?)
    };
    let rec = RecorderProxy::new(&main.local_node("n")).await?;
    let relay = RelayProxy::new(&main.node(&url(&a)?), rec.clone()).await?;
    assert_eq!(relay.push(1).await?, 1);
    assert_eq!(relay.push(2).await?, 2);
    relay.migrate_to(&url(&b)?).await?;
    // The relay's next request to the recorder continues its numbering, so
    // it is not taken for a duplicate of one served before the move.
    let third = tokio::time::timeout(std::time::Duration::from_secs(30), relay.push(3)).await??;
    assert_eq!(third, 3);
    assert_eq!(rec.seen().await?, vec![1, 2, 3]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_decode_is_refused() -> anyhow::Result<()> {
    use actogrid_builtin::RecorderRequest;
    use actogrid_runtime::{CallInfo, ErrorKind, NoError, Proxy};
    let a = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let b = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let node = a.node(&format!("actogrid://{}/n", b.address().unwrap()).parse()?);
    let echo = EchoProxy::new(&node).await?;
    // A request of another type sent to an echo object.
    let info = CallInfo {
        method: "pid",
        immediate: false,
    };
    let wrong = echo
        .active_ref()
        .call::<u32, NoError, _>(RecorderRequest::Pid {}, info);
    let err = wrong.await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(err.to_string().contains("does not decode"), "{err}");
    // The object is unharmed.
    echo.ping().await?;
    Ok(())
}
