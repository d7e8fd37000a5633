//! A method that computes for a long time without yielding is not a dead
//! node: heartbeats, the runtime's other objects and its control requests
//! keep going while it runs, and its caller gets the value.

mod support;

use std::time::{Duration, Instant};

use actogrid::{Config, NodeProcess, Runtime};
use actogrid_builtin::{RecorderProxy, WorkerProxy};

async fn node(rt: &Runtime, name: &str) -> anyhow::Result<NodeProcess> {
    support::node_process(rt, name).await
}

/// How long the computation runs: ten heartbeat timeouts of the caller,
/// and of the node (its default, 3 s).
const COMPUTE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_computation_does_not_stop_the_rest_of_its_runtime() -> anyhow::Result<()> {
    let config = Config {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let rt = Runtime::bind("127.0.0.1:0", config).await?;
    let a = node(&rt, "a").await?;
    let busy = WorkerProxy::new(a.node(), "busy".into()).await?;
    let other = RecorderProxy::new(a.node()).await?;

    let started = Instant::now();
    // A short call just before, in the same frame: its reply must not wait
    // for the computation either.
    let short = busy.whoami();
    let computing = busy.spin(COMPUTE.as_millis() as u64);
    let second = WorkerProxy::new(a.node(), "second".into()).await?;
    let also = second.spin(COMPUTE.as_millis() as u64);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), short)
            .await??
            .0,
        "busy"
    );
    // While it computes: the other object of the same runtime answers,
    // objects are created there, and the connection stays alive.
    let mut answered = 0u64;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < COMPUTE - Duration::from_secs(2) {
        let asked = Instant::now();
        answered = other.push(answered).await?;
        slowest = slowest.max(asked.elapsed());
        if answered % 10 == 0 {
            let fresh = RecorderProxy::new(a.node()).await?;
            assert_eq!(fresh.push(1).await?, 1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!computing.is_resolved(), "the computation ended early");
    let rounds = computing.await?;
    assert!(also.await? > 0);
    assert!(rounds > 0);
    assert!(started.elapsed() >= COMPUTE);
    assert!(answered > 50, "only {answered} answers while it computed");
    eprintln!("{answered} answers while computing, slowest {slowest:?}");
    Ok(())
}
