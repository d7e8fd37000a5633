//! `ft-recovery cic`: `--objects` protected objects (64 by default) spread
//! over four runtimes, each pushed `--log` values; one runtime dies, and
//! the FT server rolls the whole group back to its recovery line — the
//! members of the three live runtimes discarded and restored in place,
//! those of the dead one restored on a spare. `restore_s`: from the
//! failure to every member restored; `serving_s`: to every object
//! answering a call again (the whole application serving at the line).
//! The baseline, in the same run: the same shape protected by PML, whose
//! recovery restores the dead runtime's objects only.
//!
//! `detection_s`: deployed, a real runtime of a CIC virtual node stopped
//! with SIGSTOP (a hung host); how long the deployment takes to count it
//! dead from its missing heartbeats (the detector is the same for both
//! protocols).
//!
//! The runtimes of the first part are in this process over loopback, the
//! FT server too (its store in `--dir`); a runtime "dies" by shutting down,
//! which closes its connections as a killed process's would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actogrid_builtin::RecorderProxy;
use actogrid_fault_tolerance::cic::Config;
use actogrid_fault_tolerance::server::FtServer;
use actogrid_runtime::Runtime;
use anyhow::{Context as _, ensure};

use crate::ft_recovery::{node, runtime};
use crate::report::Report;
use crate::timing::Summary;

/// The goal for the whole group serving again at its line.
const RESTORE_TARGET_S: f64 = 2.0;

/// Runtimes hosting the objects (one of them dies).
const HOSTS: usize = 4;

/// Pushes in flight to one object (CIC replies to `main` wait for the
/// line: one at a time would measure the line's period).
const WINDOW: u64 = 16;

/// What one round measured, in seconds.
struct Round {
    restore: f64,
    serving: f64,
    moved: usize,
}

/// Which protocol a round protects the objects with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Cic,
    Pml,
}

/// Pushes `count` values to each of `objects`, `WINDOW` in flight each,
/// checking each answer (the value's place in the record).
async fn push_all(objects: &[RecorderProxy], count: u64) -> anyhow::Result<()> {
    let pushes = objects.iter().map(|o| async move {
        let mut at = 0;
        while at < count {
            let upto = (at + WINDOW).min(count);
            let calls: Vec<_> = (at..upto).map(|v| o.push(v)).collect();
            for (v, call) in (at..upto).zip(calls) {
                let n = call.await?;
                ensure!(n == v + 1, "push {v}: answered {n}");
            }
            at = upto;
        }
        Ok(())
    });
    for r in futures::future::join_all(pushes).await {
        r?;
    }
    Ok(())
}

/// One recovery of `objects` objects over [`HOSTS`] runtimes, on the
/// runtime's worker tasks.
async fn round(
    protocol: Protocol,
    objects: usize,
    log: u64,
    dir: PathBuf,
    n: usize,
) -> anyhow::Result<Round> {
    let name = format!("ft-recovery-cic-{n}");
    with_store(&dir, &name, move |path| async move {
        measure(protocol, objects, log, &path).await
    })
    .await
}

/// `measure(path)` on a worker task, `path` a store file of its own in
/// `dir` (named after `name` and this process), removed before and after.
pub(crate) async fn with_store<T, F, M>(dir: &Path, name: &str, measure: M) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    M: FnOnce(PathBuf) -> F,
{
    let path = dir.join(format!("actogrid-bench-{name}-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let running = measure(path.clone());
    let result = tokio::spawn(running).await?;
    let _ = std::fs::remove_file(&path);
    result
}

async fn measure(
    protocol: Protocol,
    objects: usize,
    log: u64,
    path: &Path,
) -> anyhow::Result<Round> {
    let server = FtServer::open(path, Duration::from_secs(3600))
        .with_context(|| format!("opening the FT store {}", path.display()))?;
    let config = Config {
        ttc: 100,
        ..Config::default()
    };
    let protect = |rt: &Runtime| -> anyhow::Result<()> {
        let node = rt.local_node("n");
        match protocol {
            Protocol::Cic => node.add_interceptor(server.cic_protection(config))?,
            Protocol::Pml => node.add_interceptor(server.protection())?,
        }
        rt.set_locator(server.locator())?;
        Ok(())
    };
    let caller = runtime().await?;
    caller.set_locator(server.locator())?;
    let mut hosts = Vec::new();
    for _ in 0..HOSTS {
        let rt = runtime().await?;
        protect(&rt)?;
        hosts.push(rt);
    }
    let spare = runtime().await?;
    protect(&spare)?;
    let mut recorders = Vec::new();
    for i in 0..objects {
        recorders.push(RecorderProxy::new(&node(&caller, &hosts[i % HOSTS], "n")?).await?);
    }
    push_all(&recorders, log).await?;

    let doomed = hosts.remove(0);
    let failed = doomed.address().context("serves")?.to_owned();
    doomed.shutdown();
    let started = Instant::now();
    let to = spare.local_node("n");
    let moved = match protocol {
        Protocol::Cic => {
            let r = server
                .cic_runtime_failed(&failed, &to)
                .await
                .map_err(anyhow::Error::msg)?;
            ensure!(
                r.members == objects,
                "{} of {objects} members restored",
                r.members
            );
            r.moved
        }
        Protocol::Pml => {
            let recovered = server.runtime_failed(&failed, &to).await;
            for r in &recovered {
                ensure!(r.is_ok(), "a recovery failed: {r:?}");
            }
            recovered.len()
        }
    };
    let restore = started.elapsed().as_secs_f64();
    let counts = futures::future::join_all(recorders.iter().map(|r| r.count())).await;
    let serving = started.elapsed().as_secs_f64();
    for c in counts {
        ensure!(c? == log, "an object did not come back with its record");
    }
    ensure!(
        moved == objects.div_ceil(HOSTS),
        "{moved} objects moved off the dead runtime"
    );
    for rt in hosts.iter().chain([&caller, &spare]) {
        rt.shutdown();
    }
    // Closing the store joins its writer thread: not on a worker.
    tokio::task::spawn_blocking(move || drop(server)).await?;
    Ok(Round {
        restore,
        serving,
        moved,
    })
}

/// `ft-recovery cic`.
pub(crate) async fn run(
    objects: usize,
    log: u64,
    rounds: usize,
    dir: &Path,
) -> anyhow::Result<Report> {
    ensure!(objects >= HOSTS, "need at least {HOSTS} objects");
    let mut cic = Vec::new();
    let mut pml = Vec::new();
    for n in 0..rounds {
        cic.push(round(Protocol::Cic, objects, log, dir.to_owned(), n).await?);
        pml.push(round(Protocol::Pml, objects, log, dir.to_owned(), n).await?);
    }
    let detection = crate::ft_recovery::cic_detection(dir, rounds).await?;
    let of =
        |rs: &[Round], f: fn(&Round) -> f64| Summary::of(&rs.iter().map(f).collect::<Vec<_>>());
    let restore = of(&cic, |r| r.restore);
    let serving = of(&cic, |r| r.serving);
    let pml_restore = of(&pml, |r| r.restore);
    let pml_serving = of(&pml, |r| r.serving);
    let detected = Summary::of(&detection);
    let met = serving.median <= RESTORE_TARGET_S;
    Ok(Report::new(
        "ft-recovery",
        "ms",
        serving.median * 1e3,
        serving.p90 * 1e3,
        "PML, the same objects, the dead runtime's recovered, ms",
        pml_serving.median * 1e3,
    )
    .note(format!(
        "{objects} objects on {HOSTS} runtimes, {log} pushes each; one runtime dies: every member restored (the {} of the dead runtime on a spare, the others in place) in {:.1} ms, all {objects} answering again {:.1} ms after the failure (target <= {RESTORE_TARGET_S} s: {})",
        cic[0].moved,
        restore.median * 1e3,
        serving.median * 1e3,
        if met { "met" } else { "NOT met" }
    ))
    .note(format!(
        "PML, the same shape: the dead runtime's {} objects recovered in {:.1} ms, all answering {:.1} ms after the failure",
        pml[0].moved,
        pml_restore.median * 1e3,
        pml_serving.median * 1e3
    ))
    .note(format!(
        "deployed, a CIC runtime stopped (SIGSTOP, heartbeat every {} ms): counted dead in {:.1} ms",
        crate::ft_recovery::heartbeat_period().as_millis(),
        detected.median * 1e3
    ))
    .with("protocol", "cic")
    .with("objects", objects)
    .with("log", log)
    .with_figure("detection_s", detected.median)
    .with_figure("restore_s", restore.median)
    .with_figure("serving_s", serving.median)
    .with_figure("pml_restore_s", pml_restore.median)
    .with_figure("pml_serving_s", pml_serving.median)
    .with("restore_target_s", RESTORE_TARGET_S)
    .with("restore_target_met", met))
}
