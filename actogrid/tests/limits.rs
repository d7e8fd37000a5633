//! A runtime holds up under hostile or careless input: nothing it reads
//! makes it allocate without bound, spin, or keep serving callers that are
//! gone. Every test runs `actogrid node` children under the limits it
//! checks (`ulimit`, `ACTOGRID_*` settings) and talks to them over
//! loopback.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actogrid::{CallError, Config, ErrorKind, Node, NodeUrl, Proxy as _, Runtime, wait_all};
use actogrid_builtin::{EchoProxy, RecorderProxy, WorkerProxy};

/// An `actogrid node` child started by `sh -c` (for its `ulimit`s), with
/// settings in its environment; killed when dropped.
struct Limited {
    child: Child,
    url: NodeUrl,
}

impl Limited {
    fn start(rt: &Runtime, ulimits: &str, env: &[(&str, &str)]) -> anyhow::Result<Limited> {
        let script =
            format!("{ulimits} exec \"$0\" node --listen 127.0.0.1:0 --exit-on-stdin-eof --name n");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_actogrid"))
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if rt.identity().is_plaintext() {
            cmd.env("ACTOGRID_INSECURE_PLAINTEXT", "1");
        } else {
            cmd.env(actogrid::CREDENTIALS_ENV, "stdin");
        }
        let mut child = cmd.spawn()?;
        if !rt.identity().is_plaintext() {
            use std::io::Write as _;
            let input = child.stdin.as_mut().expect("piped");
            input.write_all(actogrid::node_credentials(rt)?.as_bytes())?;
            input.flush()?;
        }
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let Some(line) = lines.next() else {
                anyhow::bail!("the node exited before it served");
            };
            if let Some(url) = line?.strip_prefix("actogrid node listening on ") {
                break url.parse::<NodeUrl>()?;
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Limited { child, url })
    }

    fn node(&self, rt: &Runtime) -> Node {
        rt.node(&self.url)
    }

    fn address(&self) -> String {
        format!("{}:{}", self.url.host(), self.url.port())
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory.
    fn rss(&self) -> u64 {
        rss_of(self.child.id())
    }

    /// CPU time used so far (user + system), from /proc.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }
}

/// Resident memory of process `pid`, from /proc (0 once it is gone).
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn runtime(config: Config) -> Runtime {
    Runtime::bind("127.0.0.1:0", config).await.expect("bind")
}

fn fast_heartbeats() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

async fn within<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .expect("did not complete in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_declaring_4_gib_is_refused_before_anything_is_reserved() -> anyhow::Result<()> {
    // 3 GB of address space: reserving what the message declares would
    // abort the process. Without TLS, so that the message reaches the
    // decoder (with TLS, only a runtime of the deployment gets that far).
    let rt = Runtime::builder()
        .config(fast_heartbeats())
        .identity(actogrid::Identity::plaintext())
        .build();
    let mut node = Limited::start(&rt, "ulimit -v 3000000;", &[])?;
    let tcp = tokio::net::TcpStream::connect(node.address()).await?;
    let (client, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(connection);
    let mut client = client.ready().await?;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/actogrid.runtime.v1.Wire/Open",
            node.address()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (response, mut stream) = client.send_request(request, false)?;
    // A gRPC message header: not compressed, 0xFFFF_FFFF bytes follow.
    stream.send_data(
        bytes::Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
        false,
    )?;
    let answered = within(Duration::from_secs(20), response).await;
    if let Ok(response) = answered {
        // The stream ends with an error status, or is reset.
        let mut body = response.into_body();
        let _ = within(Duration::from_secs(20), body.data()).await;
        let _ = within(Duration::from_secs(20), body.trailers()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(node.alive(), "the runtime died on a 5-byte header");

    let rec = RecorderProxy::new(&node.node(&rt)).await?;
    assert_eq!(rec.push(7).await?, 1, "the runtime still serves");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_object_does_not_queue_a_fast_senders_requests_without_bound() -> anyhow::Result<()>
{
    let rt = runtime(Config {
        max_message_size: 1 << 20,
        ..fast_heartbeats()
    })
    .await;
    let node = Limited::start(
        &rt,
        "",
        &[
            ("ACTOGRID_MAX_QUEUED_BYTES", "2MiB"),
            ("ACTOGRID_MAX_MESSAGE_SIZE", "1MiB"),
        ],
    )?;
    let slow = WorkerProxy::new(&node.node(&rt), "slow".into()).await?;
    let idle = node.rss();

    // 128 MiB sent at once to an object that takes 100 µs per request.
    let calls = 16_384;
    let payload = vec![7u8; 8 << 10];
    let futures: Vec<_> = (0..calls)
        .map(|_| slow.digest(payload.clone(), 100))
        .collect();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampler = {
        let peak = peak.clone();
        let pid = node.child.id();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_of(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let results = within(Duration::from_secs(240), wait_all(futures)).await;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    for r in &results {
        assert_eq!(
            *r.as_ref().map_err(ToString::to_string).expect("served"),
            8 << 10
        );
    }
    // Far below the 128 MiB sent: the queue's bound, a frame and the
    // HTTP/2 window, over the idle runtime.
    let grown = peak.saturating_sub(idle);
    eprintln!("idle {idle} B, after {peak} B");
    assert!(grown < 40 << 20, "the runtime grew by {grown} bytes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_descriptor_limit_neither_spin_nor_lock_runtimes_out()
-> anyhow::Result<()> {
    // This process opens 2,000 connections: make sure it may.
    let (soft, hard) = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .zip(rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum)
        .unwrap_or((u64::MAX, u64::MAX));
    if soft < 4096 {
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(hard.min(8192)),
                maximum: Some(hard),
            },
        )?;
    }
    let rt = runtime(fast_heartbeats()).await;
    let node = Limited::start(
        &rt,
        "ulimit -n 1024;",
        &[("ACTOGRID_HANDSHAKE_TIMEOUT", "3s")],
    )?;
    let address = node.address();
    let connects = (0..2_000).map(|_| {
        let address = address.clone();
        tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(3),
                tokio::net::TcpStream::connect(address),
            )
            .await
            .ok()
            .and_then(Result::ok)
        })
    });
    let idle: Vec<tokio::net::TcpStream> = futures::future::join_all(connects)
        .await
        .into_iter()
        .filter_map(|r| r.ok().flatten())
        .collect();
    assert!(idle.len() > 1_024, "only {} connections opened", idle.len());

    // Out of descriptors, the runtime waits instead of spinning.
    let before = node.cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = node.cpu() - before;
    assert!(
        spent < Duration::from_millis(600),
        "it spent {spent:?} of CPU in 2 s"
    );

    // A runtime still gets through, and the idle ones are closed.
    let started = Instant::now();
    let answer = within(Duration::from_secs(60), async {
        loop {
            match RecorderProxy::new(&node.node(&rt)).await {
                Ok(rec) => match rec.push(1).await {
                    Ok(n) => return n,
                    Err(e) => eprintln!("not yet: {e}"),
                },
                Err(e) => eprintln!("not yet: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(answer, 1);
    eprintln!("served after {:?}", started.elapsed());
    // The idle connections it accepted are closed after the handshake
    // timeout, while their other ends still hold them open: the runtime is
    // back to a handful of descriptors.
    let fds =
        |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(usize::MAX, Iterator::count);
    let settled = within(Duration::from_secs(60), async {
        loop {
            let open = fds(node.child.id());
            if open < 64 {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    eprintln!("{settled} descriptors open in the runtime at the end");
    drop(idle);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requests_of_a_caller_that_is_gone_are_dropped() -> anyhow::Result<()> {
    let rt = runtime(fast_heartbeats()).await;
    let node = Limited::start(&rt, "", &[])?;
    let busy = WorkerProxy::new(&node.node(&rt), "busy".into()).await?;

    // Another runtime queues 20 s of work, then goes away.
    let other = runtime(fast_heartbeats()).await;
    let theirs = other.adopt(&busy);
    let queued: Vec<_> = (0..100).map(|_| theirs.spin(200)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.shutdown();
    drop(queued);

    let started = Instant::now();
    let (name, _) = within(Duration::from_secs(60), busy.whoami()).await?;
    assert_eq!(name, "busy");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "served after {:?}: the gone caller's requests were served first",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_objects_leave_their_runtime() -> anyhow::Result<()> {
    let rt = runtime(fast_heartbeats()).await;
    let node = Limited::start(&rt, "", &[("ACTOGRID_MAX_OBJECTS", "3")])?;
    let n = node.node(&rt);
    let rec = RecorderProxy::new(&n).await?;
    n.register("rec", &rec).await?;
    let pushes: Vec<_> = (0..5).map(|i| rec.push(i)).collect();
    rec.active_ref().terminate().await?;
    for (i, r) in wait_all(pushes).await.into_iter().enumerate() {
        assert_eq!(r?, i as u64 + 1, "requests before the end are served");
    }
    let err = rec.push(9).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSuchObject, "{err}");
    let url = NodeUrl::new(n.url().host(), n.url().port(), "rec");
    assert!(
        rt.lookup::<RecorderProxy>(&url).await.is_err(),
        "its name is gone"
    );

    // At most 3 objects: the fourth is refused until one ends.
    let a = EchoProxy::new(&n).await?;
    let _b = EchoProxy::new(&n).await?;
    let _c = EchoProxy::new(&n).await?;
    let err = EchoProxy::new(&n).await.unwrap_err();
    assert!(err.to_string().contains("max_objects"), "{err}");
    let busy = WorkerProxy::new(&n, "w".into()).await;
    assert!(busy.is_err());
    a.active_ref().terminate_now().await?;
    let d = EchoProxy::new(&n).await?;
    d.ping().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_size_limit_are_refused_with_the_limit() -> anyhow::Result<()> {
    // The caller's own limit: refused before anything is sent.
    let small = runtime(Config {
        max_message_size: 1 << 20,
        ..fast_heartbeats()
    })
    .await;
    let node = Limited::start(&small, "", &[("ACTOGRID_MAX_MESSAGE_SIZE", "1MiB")])?;
    let echo = EchoProxy::new(&node.node(&small)).await?;
    let err = echo.echo(vec![0; 2 << 20]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("max_message_size"), "{err}");
    assert_eq!(echo.echo(vec![1; 1000]).await?.len(), 1000);

    // The receiver's limit, smaller than the sender's: the connection is
    // refused with the limit named, and the next call connects again.
    let big = runtime(fast_heartbeats()).await;
    let theirs = big.adopt(&echo);
    let err = theirs.echo(vec![0; 2 << 20]).await.unwrap_err();
    assert!(matches!(err, CallError::NodeDied { .. }), "{err}");
    assert_eq!(theirs.echo(vec![2; 10]).await?, vec![2; 10]);
    Ok(())
}
