//! Active objects across real processes: every test starts `actogrid node`
//! children (killed when the test ends) and talks to them from this
//! process's runtime over loopback.

mod support;

use std::process::Command;
use std::time::Duration;

use actogrid::{CallError, Config, ErrorKind, Group, NodeProcess, Runtime, wait_all};
use actogrid_builtin::{RecorderProxy, WorkerError, WorkerProxy};
use futures::StreamExt;

/// A generous bound so a regression fails the test instead of hanging it;
/// nothing below relies on it being tight.
const NEVER: Duration = Duration::from_secs(60);

async fn runtime() -> anyhow::Result<Runtime> {
    let config = Config {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    Ok(Runtime::bind("127.0.0.1:0", config).await?)
}

async fn node(rt: &Runtime, name: &str) -> anyhow::Result<NodeProcess> {
    support::node_process(rt, name).await
}

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(NEVER, fut)
        .await
        .expect("did not complete: the runtime hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_one_caller_are_served_in_the_order_sent() -> anyhow::Result<()> {
    let rt = runtime().await?;
    let a = node(&rt, "a").await?;
    let rec = RecorderProxy::new(a.node()).await?;
    let mut futures = Vec::new();
    for i in 0..3000u64 {
        if i % 3 == 0 {
            rec.push_one_way(i)?;
        } else {
            futures.push(rec.push(i));
        }
    }
    for r in within(wait_all(futures)).await {
        r?;
    }
    assert_eq!(rec.seen().await?, (0..3000).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_arrives_as_its_own_kind() -> anyhow::Result<()> {
    let rt = runtime().await?;
    let a = node(&rt, "a").await?;
    let w = WorkerProxy::new(a.node(), "w".into()).await?;

    // The method's own error, typed.
    let err = w.maybe_fail(true).await.unwrap_err();
    assert_eq!(
        err,
        CallError::Method(WorkerError("w was asked to fail".into()))
    );
    assert_eq!(w.maybe_fail(false).await?, 7);

    // A panic, with its message; the object keeps serving.
    let err = w.explode("kaboom".into()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert!(err.to_string().contains("kaboom"), "{err}");
    assert_eq!(w.whoami().await?.0, "w");

    // A timeout: the future gives up, the call is still served.
    let err = w
        .slow(3_000, 1)
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);

    // The direct deadlock: an object awaiting its own call fails at once.
    let err = within(w.call_self(w.clone())).await.unwrap_err();
    match err {
        CallError::Method(WorkerError(message)) => {
            assert!(message.contains("deadlock"), "{message}")
        }
        other => panic!("expected the deadlock error, got {other:?}"),
    }

    // An object whose state cannot be serialized refuses to migrate.
    let b = node(&rt, "b").await?;
    let err = w.migrate_to(b.node().url()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(err.to_string().contains("serde::Serialize"), "{err}");
    assert_eq!(w.whoami().await?.1, a.pid());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_travel_between_three_processes_before_they_resolve() -> anyhow::Result<()> {
    let rt = runtime().await?;
    let a = node(&rt, "a").await?;
    let b = node(&rt, "b").await?;
    let wa = WorkerProxy::new(a.node(), "wa".into()).await?;
    let wb = WorkerProxy::new(b.node(), "wb".into()).await?;

    // A future of a call to A, passed to B while still unresolved: B gets
    // the value when A answers.
    let pending = wa.slow(300, 41);
    assert!(!pending.is_resolved());
    let on_b = wb.add_to(pending.clone(), 1);
    let again_on_b = wb.add_to(pending.clone(), 2);
    let on_a = wa.add_to(pending.clone(), 3);
    assert_eq!(within(on_b).await?, 42);
    assert_eq!(within(again_on_b).await?, 43);
    assert_eq!(within(on_a).await?, 44);
    assert_eq!(pending.await?, 41);

    // A future returned by B, which B got from A: this process receives
    // A's value through B without B waiting for it.
    let delegated = wb.delegate(wa.clone(), 200, 9);
    assert_eq!(within(delegated).await?, 9);

    // Futures already resolved travel inline.
    let done = wa.slow(0, 5);
    assert_eq!(done.clone().await?, 5);
    assert_eq!(wb.add_to(done, 10).await?, 15);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_calls_reach_every_member_and_failures_stay_separate() -> anyhow::Result<()> {
    let rt = runtime().await?;
    let a = node(&rt, "a").await?;
    let b = node(&rt, "b").await?;
    let nodes: Vec<_> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                a.node().clone()
            } else {
                b.node().clone()
            }
        })
        .collect();
    let group = Group::create(&nodes, |n, rank| WorkerProxy::new(n, format!("w{rank}"))).await?;
    assert_eq!(group.len(), 8);

    let names = group.broadcast(|w| w.whoami()).values().await?;
    let pids: std::collections::BTreeSet<u32> = names.iter().map(|(_, pid)| *pid).collect();
    assert_eq!(pids, [a.pid(), b.pid()].into());
    assert_eq!(names[3].0, "w3");

    // Scatter: argument i goes to member i; members 2 and 5 fail alone.
    let results = group
        .scatter((0..8).map(|i| i == 2 || i == 5), |w, fail| {
            w.maybe_fail(fail)
        })
        .wait_all()
        .await;
    for (i, r) in results.iter().enumerate() {
        if i == 2 || i == 5 {
            assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::Method);
        } else {
            assert_eq!(r.as_ref().ok(), Some(&7));
        }
    }

    // One member panicking does not poison the others.
    let results = group
        .scatter(0..8u64, |w, i| {
            if i == 4 {
                w.explode("member 4".into())
            } else {
                w.slow(10 * i, i)
            }
        })
        .wait_all()
        .await;
    assert_eq!(results[4].as_ref().unwrap_err().kind(), ErrorKind::Panicked);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 7);

    // Results in completion order, with their ranks.
    let mut arrived: Vec<usize> = group
        .scatter((0..8u64).rev(), |w, i| w.slow(30 * i, i))
        .in_completion_order()
        .map(|(rank, r)| {
            assert_eq!(r.ok(), Some(7 - rank as u64));
            rank
        })
        .collect()
        .await;
    assert_eq!(arrived.len(), 8);
    arrived.sort();
    assert_eq!(arrived, (0..8).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_under_a_stream_of_calls_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let rt = runtime().await?;
    let a = node(&rt, "a").await?;
    let b = node(&rt, "b").await?;
    let rec = RecorderProxy::new(a.node()).await?;
    const N: u64 = 20_000;

    let stream = {
        let rec = rec.clone();
        tokio::spawn(async move {
            let mut window = Vec::new();
            for i in 0..N {
                if i % 2 == 0 {
                    window.push(rec.push(i));
                } else {
                    rec.push_one_way(i)?;
                }
                if window.len() == 64 {
                    for r in wait_all(std::mem::take(&mut window)).await {
                        r?;
                    }
                }
            }
            for r in wait_all(window).await {
                r?;
            }
            anyhow::Ok(())
        })
    };
    let mut hops = 0;
    while !stream.is_finished() && hops < 6 {
        let to = if hops % 2 == 0 { b.node() } else { a.node() };
        within(rec.migrate_to(to.url())).await?;
        hops += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    within(stream).await??;
    assert!(hops >= 2, "the stream ended before two migrations ({hops})");
    let seen = rec.seen().await?;
    assert_eq!(seen.len() as u64, N, "lost or repeated requests");
    assert_eq!(seen, (0..N).collect::<Vec<_>>());
    let here = rec.pid().await?;
    let expected = if hops % 2 == 1 { b.pid() } else { a.pid() };
    assert_eq!(here, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_fails_the_futures_waiting_on_it() -> anyhow::Result<()> {
    let rt = runtime().await?;
    let mut a = node(&rt, "a").await?;
    let w = WorkerProxy::new(a.node(), "doomed".into()).await?;
    w.whoami().await?;
    let pending = w.slow(600_000, 1);
    a.kill();
    let err = within(pending).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NodeDied, "{err}");
    // New calls fail too, instead of waiting.
    let err = within(w.whoami()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NodeDied, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_noticed_by_its_heartbeat() -> anyhow::Result<()> {
    let rt = runtime().await?;
    let a = node(&rt, "a").await?;
    let w = WorkerProxy::new(a.node(), "frozen".into()).await?;
    w.whoami().await?;
    let pending = w.slow(600_000, 1);
    // SIGSTOP: the process and its sockets stay, but it answers nothing.
    let stopped = Command::new("kill")
        .args(["-STOP", &a.pid().to_string()])
        .status()?;
    assert!(stopped.success());
    let result = within(pending).await;
    let _ = Command::new("kill")
        .args(["-CONT", &a.pid().to_string()])
        .status();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NodeDied, "{err}");
    assert!(err.to_string().contains("heartbeat"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_found_by_url_from_any_process() -> anyhow::Result<()> {
    let rt = runtime().await?;
    let a = node(&rt, "a").await?;
    let b = node(&rt, "b").await?;
    let rec = RecorderProxy::new(a.node()).await?;
    a.node().register("journal", &rec).await?;
    let mut url = a.node().url().to_string();
    url.truncate(url.rfind('/').unwrap_or(url.len()));
    let url = format!("{url}/journal");

    let found: RecorderProxy = rt.lookup(&url.parse()?).await?;
    found.push(1).await?;
    found.push(2).await?;

    // From a third process.
    let w = WorkerProxy::new(b.node(), "looker".into()).await?;
    assert_eq!(w.lookup_len(url.clone()).await?, 2);

    // The wrong type, a missing name, a taken name.
    let err = rt.lookup::<WorkerProxy>(&url.parse()?).await.unwrap_err();
    assert!(err.to_string().contains("not a"), "{err}");
    let missing = url.replace("journal", "nothing");
    let err = rt
        .lookup::<RecorderProxy>(&missing.parse()?)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nothing is registered"), "{err}");
    let err = a.node().register("journal", &rec).await.unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
    Ok(())
}
