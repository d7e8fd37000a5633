//! `dashboard`: what a deployment's dashboard costs the application.
//!
//! Two deployments of the same local runtimes, one without a dashboard
//! (`DeployOptions::dashboard: None`), one with; a worker task pipelines
//! empty calls to an `Echo` on a node of each. Measured, rounds rotating:
//! without dashboard (the baseline), with one nobody watches, and with one
//! a page is open on (a client reading `/api/stream`, as the page does:
//! the state, which asks every runtime for its objects, each second). Also
//! reported: how long one state takes to gather, per runtime.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actogrid::descriptor::LoadOptions;
use actogrid::{DeployOptions, Deployment, OutputOptions, Runtime};
use actogrid_builtin::EchoProxy;
use anyhow::{Context as _, ensure};

use crate::deployment;
use crate::report::Report;
use crate::timing::Summary;

/// Goal: calls/s with a dashboard nobody watches, as a fraction of none.
const IDLE_TARGET: f64 = 0.97;
/// Goal: calls/s with the page open, as a fraction of none.
const WATCHED_TARGET: f64 = 0.90;

/// Options of `dashboard`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Runtimes per deployment (each asked for its objects every second
    /// while the page is open).
    #[arg(long, default_value_t = 8)]
    runtimes: usize,
    /// Calls kept in flight.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Length of one timed round, in seconds.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Rounds per side, rotating the sides.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

async fn deploy(
    rt: &Runtime,
    path: &std::path::Path,
    runtimes: usize,
    dashboard: bool,
) -> anyhow::Result<(Deployment, EchoProxy)> {
    let options = DeployOptions {
        runtime: Some(rt.clone()),
        progress: false,
        output: OutputOptions {
            print: false,
            ..OutputOptions::default()
        },
        dashboard: dashboard.then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ..DeployOptions::default()
    };
    let d = Deployment::load_with(path, LoadOptions::default(), options).await?;
    d.activate().await?;
    let nodes = d.virtual_node("Workers")?.nodes().await?;
    ensure!(
        nodes.len() == runtimes,
        "{} of {runtimes} nodes",
        nodes.len()
    );
    let echo = EchoProxy::new(&nodes[0]).await?;
    Ok((d, echo))
}

/// Calls per second of `window` pipelined pings for `seconds`, from a
/// worker task.
async fn pipelined(echo: &EchoProxy, window: usize, seconds: f64) -> anyhow::Result<f64> {
    let echo = echo.clone();
    tokio::spawn(async move {
        let mut flight = std::collections::VecDeque::with_capacity(window);
        for _ in 0..window {
            flight.push_back(echo.ping());
        }
        let started = Instant::now();
        let limit = Duration::from_secs_f64(seconds);
        let mut done = 0u64;
        while started.elapsed() < limit {
            for _ in 0..256 {
                let oldest = flight.pop_front().context("a call in flight")?;
                oldest.await?;
                done += 1;
                flight.push_back(echo.ping());
            }
        }
        let rate = done as f64 / started.elapsed().as_secs_f64();
        for f in flight {
            f.await?;
        }
        Ok::<f64, anyhow::Error>(rate)
    })
    .await?
}

/// A client reading the page's stream until `stop`, on a thread.
fn watch(url: &str, stop: Arc<AtomicBool>) -> anyhow::Result<std::thread::JoinHandle<u64>> {
    let rest = url.strip_prefix("http://").context("a dashboard URL")?;
    let (address, token) = rest.split_once("/?token=").context("a token")?;
    let mut s = std::net::TcpStream::connect(address)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    write!(
        s,
        "GET /api/stream?token={token} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    Ok(std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => read += n as u64,
                Err(_) => {}
            }
        }
        read
    }))
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.rounds > 0 && args.runtimes > 0 && args.window > 0);
    let dir = std::env::temp_dir().join(format!("actogrid-bench-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("d.xml");
    std::fs::write(
        &path,
        deployment::descriptor(
            args.runtimes,
            "p",
            r#"<processDefinition id="p"><jvmProcess/></processDefinition>"#,
        ),
    )?;
    let rt = Runtime::bind("127.0.0.1:0", actogrid::Config::default()).await?;
    let result = async {
        let (off, off_echo) = deploy(&rt, &path, args.runtimes, false).await?;
        let (on, on_echo) = deploy(&rt, &path, args.runtimes, true).await?;
        let url = on.dashboard_url().context("the dashboard's URL")?;
        // Warm both up.
        pipelined(&off_echo, args.window, 0.5).await?;
        pipelined(&on_echo, args.window, 0.5).await?;
        let (mut none, mut idle, mut watched) = (Vec::new(), Vec::new(), Vec::new());
        let mut streamed = 0u64;
        for round in 0..args.rounds {
            for side in 0..3 {
                match (round + side) % 3 {
                    0 => none.push(pipelined(&off_echo, args.window, args.seconds).await?),
                    1 => idle.push(pipelined(&on_echo, args.window, args.seconds).await?),
                    _ => {
                        let stop = Arc::new(AtomicBool::new(false));
                        let reader = watch(&url, stop.clone())?;
                        // The page's first state comes at once.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        watched.push(pipelined(&on_echo, args.window, args.seconds).await?);
                        stop.store(true, Ordering::Relaxed);
                        streamed += reader.join().unwrap_or(0);
                    }
                }
            }
        }
        // Gathering one state: every runtime asked for its objects.
        let mut gather = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let s = on.status().await;
            gather.push(t.elapsed().as_secs_f64() * 1e3);
            ensure!(
                s.virtual_nodes[0]
                    .runtimes
                    .iter()
                    .all(|r| !r.objects_unknown),
                "a runtime did not say which objects it hosts"
            );
        }
        off.kill().await;
        on.kill().await;
        Ok::<_, anyhow::Error>((none, idle, watched, gather, streamed))
    }
    .await;
    rt.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let (none, idle, watched, gather, streamed) = result?;
    let none_s = Summary::of(&none);
    let idle_s = Summary::of(&idle);
    let watched_s = Summary::of(&watched);
    let gather_s = Summary::of(&gather);
    let idle_ratio = idle_s.median / none_s.median;
    let watched_ratio = watched_s.median / none_s.median;
    let per_runtime = gather_s.median / args.runtimes as f64;
    Ok(Report::new(
        "dashboard",
        "calls/s",
        idle_s.median,
        idle.iter().copied().fold(f64::INFINITY, f64::min),
        "the same deployment without a dashboard, calls/s",
        none_s.median,
    )
    .with_figure("watched_calls_per_second", watched_s.median)
    .with_figure("idle_ratio", idle_ratio)
    .with_figure("watched_ratio", watched_ratio)
    .with_figure("state_gather_ms", gather_s.median)
    .with_figure("state_gather_ms_per_runtime", per_runtime)
    .with("runtimes", args.runtimes)
    .note(format!(
        "{} runtimes, window {}, {} rounds of {} s: no dashboard {:.0} calls/s, \
         nobody watching {:.0} ({idle_ratio:.3}×, target ≥ {IDLE_TARGET}), \
         page open {:.0} ({watched_ratio:.3}×, target ≥ {WATCHED_TARGET}; {} bytes streamed)",
        args.runtimes,
        args.window,
        args.rounds,
        args.seconds,
        none_s.median,
        idle_s.median,
        watched_s.median,
        streamed
    ))
    .note(format!(
        "one state, every runtime asked for its objects: {:.2} ms median ({per_runtime:.3} ms per runtime)",
        gather_s.median
    )))
}
