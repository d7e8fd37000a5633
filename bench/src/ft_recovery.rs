//! `ft-recovery pml`: a protected object with a `--log`-entry log (1,000
//! by default) on a runtime that dies; the FT server restores it on a spare
//! from its checkpoint and replays its log (`restore_s`), against restoring
//! the same checkpoint without a log (the baseline, in the same run).
//!
//! Also measured along the way, in the same run: a protected call's round
//! trip (logged durably before it is served) against an unprotected one's
//! on another node of the same runtime.
//!
//! The runtimes are in this process over loopback, the FT server too (its
//! store in `--dir`); the runtime "dies" by shutting down, which closes its
//! connections as a killed process's would. Failure detection is not
//! measured here: nothing detects failures yet, the benchmark tells the
//! server (`detection_s` is absent).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actogrid_builtin::RecorderProxy;
use actogrid_fault_tolerance::server::FtServer;
use actogrid_runtime::{Config, Node, Proxy as _, Runtime};
use anyhow::{Context as _, ensure};

use crate::report::Report;
use crate::timing::Summary;

/// The goal for restoring and replaying a 1,000-entry log.
const RESTORE_TARGET_S: f64 = 1.0;

/// Options of `ft-recovery`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The protocol (only `pml` exists).
    #[arg(default_value = "pml")]
    protocol: String,
    /// Requests in the object's log when its runtime dies.
    #[arg(long, default_value_t = 1000)]
    log: usize,
    /// Timed recoveries.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where the FT store's files are made (and removed): an ordinary disk.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// A runtime of this process serving on loopback.
pub(crate) async fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::bind("127.0.0.1:0", Config::default()).await?)
}

/// Node `name` of `on`, as `from` reaches it.
pub(crate) fn node(from: &Runtime, on: &Runtime, name: &str) -> anyhow::Result<Node> {
    let address = on.address().context("a bound runtime serves")?;
    Ok(from.node(&format!("actogrid://{address}/{name}").parse()?))
}

/// What one round measured, in seconds.
struct Round {
    restore: f64,
    baseline: f64,
    protected_call: f64,
    unprotected_call: f64,
}

/// One recovery, on the runtime's worker tasks (not the main thread).
async fn round(log: usize, dir: PathBuf, n: usize) -> anyhow::Result<Round> {
    let path = dir.join(format!(
        "actogrid-bench-ft-recovery-{}-{n}.redb",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    tokio::spawn(async move {
        let result = measure(log, &dir, &path).await;
        let _ = std::fs::remove_file(&path);
        result
    })
    .await?
}

async fn measure(
    log: usize,
    dir: &std::path::Path,
    path: &std::path::Path,
) -> anyhow::Result<Round> {
    // No checkpoint but the first: the log holds every request.
    let server = FtServer::open(path, Duration::from_secs(3600))
        .with_context(|| format!("opening the FT store in {}", dir.display()))?;
    let caller = runtime().await?;
    let callee = runtime().await?;
    let spare = runtime().await?;
    let other = runtime().await?;
    callee
        .local_node("n")
        .add_interceptor(server.protection())?;
    spare.local_node("r").add_interceptor(server.protection())?;
    caller.set_locator(server.locator())?;

    let protected = RecorderProxy::new(&node(&caller, &callee, "n")?).await?;
    let plain = RecorderProxy::new(&node(&caller, &callee, "plain")?).await?;
    let started = Instant::now();
    for v in 0..log as u64 {
        protected.push(v).await?;
    }
    let protected_call = started.elapsed().as_secs_f64() / log as f64;
    let started = Instant::now();
    for v in 0..log as u64 {
        plain.push(v).await?;
    }
    let unprotected_call = started.elapsed().as_secs_f64() / log as f64;

    let failed = callee.address().context("serves")?.to_owned();
    callee.shutdown();
    let started = Instant::now();
    let recovered = server.runtime_failed(&failed, &spare.local_node("r")).await;
    let restore = started.elapsed().as_secs_f64();
    ensure!(
        recovered.len() == 1,
        "one object to recover, got {recovered:?}"
    );
    let recovery = recovered.into_iter().next().expect("one")?;
    ensure!(
        recovery.replayed == log,
        "{} requests replayed, {log} logged",
        recovery.replayed
    );
    ensure!(
        protected.count().await? == log as u64,
        "the recovered object lost requests"
    );

    // The same checkpoint restored alone, elsewhere.
    let stored = server
        .store()
        .latest_checkpoint(&actogrid_fault_tolerance::ObjectKey::new(
            protected.active_ref().id().to_be_bytes().to_vec(),
        ))?
        .context("a checkpoint")?;
    let state = stored.state.get(8..).context("a checkpoint's header")?;
    let checkpoint: actogrid_runtime::intercept::Checkpoint = postcard::from_bytes(state)?;
    let started = Instant::now();
    other.local_node("b").restore(checkpoint).await?;
    let baseline = started.elapsed().as_secs_f64();

    for rt in [&caller, &spare, &other] {
        rt.shutdown();
    }
    // Closing the store joins its writer thread: not on a worker.
    tokio::task::spawn_blocking(move || drop(server)).await?;
    Ok(Round {
        restore,
        baseline,
        protected_call,
        unprotected_call,
    })
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(
        args.protocol == "pml",
        "`{}`: only `pml` recovers objects in this version",
        args.protocol
    );
    ensure!(args.rounds > 0 && args.log > 0, "need rounds and a log");
    let mut rounds = Vec::new();
    for n in 0..args.rounds {
        rounds.push(round(args.log, args.dir.clone(), n).await?);
    }
    let summary = |f: fn(&Round) -> f64| Summary::of(&rounds.iter().map(f).collect::<Vec<_>>());
    let restore = summary(|r| r.restore);
    let baseline = summary(|r| r.baseline);
    let protected = summary(|r| r.protected_call);
    let unprotected = summary(|r| r.unprotected_call);
    let met = if restore.median <= RESTORE_TARGET_S {
        "met"
    } else {
        "NOT met"
    };
    Ok(Report::new(
        "ft-recovery",
        "ms",
        restore.median * 1e3,
        restore.p90 * 1e3,
        "restoring the same checkpoint without a log, ms",
        baseline.median * 1e3,
    )
    .note(format!(
        "restore + replay of {} logged requests: median {:.4} s (target <= {RESTORE_TARGET_S} s: {met})",
        args.log, restore.median
    ))
    .note(format!(
        "a protected call (logged durably first): {:.1} µs; unprotected, same runtimes: {:.1} µs",
        protected.median * 1e6,
        unprotected.median * 1e6
    ))
    .note("detection_s: not measured (no failure detector yet; the benchmark tells the server)")
    .with("protocol", args.protocol.clone())
    .with("log", args.log)
    .with_figure("restore_s", restore.median)
    .with_figure("protected_call_us", protected.median * 1e6)
    .with_figure("unprotected_call_us", unprotected.median * 1e6)
    .with("restore_target_s", RESTORE_TARGET_S)
    .with("restore_target_met", restore.median <= RESTORE_TARGET_S))
}
