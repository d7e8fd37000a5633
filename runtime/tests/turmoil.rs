//! Deterministic simulations (turmoil, fixed seeds) of runtimes on several
//! hosts: a partition and its repair, and a host crash while a call is
//! pending.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actogrid_builtin::{RecorderProxy, WorkerProxy};
use actogrid_runtime::intercept::{BodyAccess, Delivery, Interceptor, Verdict};
use actogrid_runtime::{CallError, Config, Connector, ErrorKind, Io, Node, Runtime};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The port every simulated runtime serves on.
const PORT: u16 = 9000;

/// A bound on the simulated time of a whole scenario: a regression fails
/// the test instead of hanging it.
const SIM_LIMIT: Duration = Duration::from_secs(120);

/// A bound on one call, in simulated time, far above anything the
/// heartbeat, connect and reorder timeouts add up to.
const NEVER: Duration = Duration::from_secs(60);

type SimResult = Result<(), Box<dyn std::error::Error>>;

/// Dials other runtimes over turmoil's simulated TCP.
struct TurmoilConnector;

impl Connector for TurmoilConnector {
    fn connect(&self, address: &str) -> BoxFuture<'static, io::Result<Box<dyn Io>>> {
        let address = address.to_owned();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(address.as_str()).await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}

/// An accepted simulated connection, as tonic's server wants it.
struct Accepted(turmoil::net::TcpStream);

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.0.local_addr().ok(),
            remote_addr: self.0.peer_addr().ok(),
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Builds the runtime of the current host; must run inside the host.
fn runtime(host: &str) -> Runtime {
    Runtime::builder()
        .address(format!("{host}:{PORT}"))
        .connector(TurmoilConnector)
        .config(Config {
            heartbeat_interval: Duration::from_millis(200),
            heartbeat_timeout: Duration::from_secs(1),
            ..Config::default()
        })
        .build()
}

/// Serves `rt` on the simulated network until the host stops.
async fn serve(rt: Runtime) -> SimResult {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| Accepted(s));
        Some((accepted, listener))
    });
    rt.serve_incoming(incoming, std::future::pending()).await?;
    Ok(())
}

/// A host that only serves its runtime.
fn server_host(host: &'static str) -> impl Fn() -> BoxFuture<'static, SimResult> {
    move || {
        Box::pin(async move {
            let rt = runtime(host);
            serve(rt).await
        })
    }
}

/// The runtime of a client host, serving in the background.
fn client_runtime(host: &str) -> Runtime {
    let rt = runtime(host);
    let server = rt.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(server).await {
            panic!("the client's server stopped: {e}");
        }
    });
    rt
}

fn node_on(rt: &Runtime, host: &str, name: &str) -> Result<Node, Box<dyn std::error::Error>> {
    Ok(rt.node(&format!("actogrid://{host}:{PORT}/{name}").parse()?))
}

/// Bounds a call so that a hang fails the test.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(NEVER, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not complete within {NEVER:?} of simulated time"),
    }
}

/// Creates a recorder on `node`, retrying while the host is not yet
/// listening (hosts start in the same step as the client).
async fn recorder_on(node: &Node) -> Result<RecorderProxy, Box<dyn std::error::Error>> {
    let mut attempts = 0;
    loop {
        match within("create", RecorderProxy::new(node)).await {
            Ok(rec) => return Ok(rec),
            Err(e) if attempts < 20 => {
                attempts += 1;
                eprintln!("create failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn assert_node_died<T: std::fmt::Debug>(what: &str, r: Result<T, CallError>) {
    match r {
        Err(e) if e.kind() == ErrorKind::NodeDied => {
            eprintln!("{:?}: {what}: {e}", turmoil::elapsed());
        }
        other => panic!("{what}: expected NodeDied, got {other:?}"),
    }
}

fn sim(seed: u64) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(SIM_LIMIT)
        .build()
}

/// Values pushed before a partition and after its repair are all there,
/// once each, in order; calls made during it fail with `NodeDied`, while
/// `b`, on the other side of no partition, keeps answering.
fn partition_and_repair(seed: u64) -> SimResult {
    let mut sim = sim(seed);
    sim.host("a", server_host("a"));
    sim.host("b", server_host("b"));
    sim.client("client", async move {
        let rt = client_runtime("client");
        let rec = recorder_on(&node_on(&rt, "a", "n")?).await?;
        let other = recorder_on(&node_on(&rt, "b", "n")?).await?;
        within("push to b", other.push(1)).await?;

        let before: Vec<u64> = (1..=5).collect();
        for &v in &before {
            within("push before the partition", rec.push(v)).await?;
        }

        turmoil::partition("client", "a");
        // The connection is silent from now on: the heartbeat timeout
        // fails the call in flight.
        let during_first = 100;
        assert_node_died(
            "a call on the partitioned connection",
            within("push during the partition", rec.push(during_first)).await,
        );
        // A new connection cannot be opened either: the connect timeout
        // fails the next call.
        let during_second = 101;
        assert_node_died(
            "a call that has to reconnect across the partition",
            within("push during the partition", rec.push(during_second)).await,
        );
        // The partition is between the client and `a` only.
        within("push to b during the partition", other.push(2)).await?;
        turmoil::repair("client", "a");

        // The next call reconnects. Its sequence number follows the lost
        // ones, so the body may hold it back for the reorder timeout
        // before serving it: it must complete, not necessarily at once.
        let after: Vec<u64> = (6..=8).collect();
        for &v in &after {
            within("push after the repair", rec.push(v)).await?;
        }

        assert_eq!(within("seen on b", other.seen()).await?, [1, 2]);
        let seen = within("seen", rec.seen()).await?;
        eprintln!("seed {seed}: seen {seen:?}");
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "duplicates in {seen:?}");
        assert!(
            seen.starts_with(&before),
            "{seen:?} lost a value sent before"
        );
        assert!(seen.ends_with(&after), "{seen:?} lost a value sent after");
        let middle = &seen[before.len()..seen.len() - after.len()];
        let lost = [during_first, during_second];
        assert!(
            middle.iter().all(|v| lost.contains(v)) && middle.is_sorted(),
            "{seen:?}: unexpected values between the partition's ends"
        );
        Ok(())
    });
    sim.run()
}

#[test]
fn partition_fails_calls_and_repair_reconnects() -> SimResult {
    partition_and_repair(7)
}

#[test]
fn partition_and_repair_other_seeds() -> SimResult {
    for seed in [1, 42, 0xdead_beef] {
        partition_and_repair(seed)?;
    }
    Ok(())
}

/// Raises a flag when a `slow` request reaches its object.
struct SlowStarted(Arc<AtomicBool>);

impl Interceptor for SlowStarted {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        _body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        if delivery.method == "slow" {
            self.0.store(true, Ordering::SeqCst);
        }
        Box::pin(async { Verdict::Deliver })
    }
}

/// A host crashing while it serves a call: the caller's future fails with
/// `NodeDied` (the heartbeat notices the silence).
fn crash_while_pending(seed: u64) -> SimResult {
    let started = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let mut sim = sim(seed);
    let flag = started.clone();
    sim.host("a", move || {
        let flag = flag.clone();
        async move {
            let rt = runtime("a");
            rt.local_node("n")
                .add_interceptor(Arc::new(SlowStarted(flag)))?;
            serve(rt).await
        }
    });
    let finished = done.clone();
    sim.client("client", async move {
        let rt = client_runtime("client");
        let node = node_on(&rt, "a", "n")?;
        // Make sure the host is up before the call that will be pending.
        recorder_on(&node).await?;
        let worker = within("create", WorkerProxy::new(&node, "w".into())).await?;
        let pending = worker.slow(3_600_000, 1);
        assert_node_died(
            "a call pending on a crashed host",
            within("the pending call", pending).await,
        );
        // A later call fails too (the host does not come back).
        assert_node_died(
            "a call to a crashed host",
            within("a call after the crash", worker.whoami()).await,
        );
        finished.store(true, Ordering::SeqCst);
        Ok(())
    });

    while !started.load(Ordering::SeqCst) {
        assert!(!sim.step()?, "the client finished before its call started");
    }
    sim.crash("a");
    sim.run()?;
    assert!(done.load(Ordering::SeqCst));
    Ok(())
}

#[test]
fn crash_fails_pending_call() -> SimResult {
    crash_while_pending(7)
}

#[test]
fn crash_fails_pending_call_other_seeds() -> SimResult {
    for seed in [1, 42, 0xdead_beef] {
        crash_while_pending(seed)?;
    }
    Ok(())
}
