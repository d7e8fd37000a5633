//! `ft-tradeoff`: which protocol for which application. For each shape —
//! `--objects` objects (8, 64, 256 by default) serving tasks of
//! `--task-ms` of computation each (0.1, 1, 10 ms) — the same application
//! runs unprotected, with CIC and with PML, and its total time is
//! measured twice: without a failure, and with one runtime of the four
//! hosting the objects killed halfway through.
//!
//! The application: `main` creates the objects and calls each once (an
//! object is protected from its first request on), then gives every
//! object its share of `--work-ms` of computation (at least one task
//! each), as tasks sent `--window` at a time per object (futures awaited
//! in order, as a bag of tasks is driven), all objects at once.
//!
//! * Unprotected, a failure loses the objects of the dead runtime: the
//!   application is stopped and started again from nothing on fresh
//!   runtimes (its total: up to the failure, then a whole run).
//! * PML: the dead runtime's objects are restored on a spare from their
//!   checkpoints and logs; the others go on.
//! * CIC: the whole group rolls back to its recovery line, the dead
//!   runtime's members on a spare, the others in place.
//!
//! The failure is seen at once (as a killed process's exit is; a hung
//! runtime adds its detection, see `ft-recovery`). From the two totals
//! the table derives the cost `C` of one failure, and the expected total
//! of a longer application of the same shape — `--projected-min` minutes
//! of work unprotected, `T` with the protocol — if runtimes fail once a
//! minute on average: `T / (1 − C/60)` with a protocol (each failure
//! costs `C`), `60·(e^(T/60) − 1)` s without (each failure starts the
//! application again).
//!
//! The runtimes and the FT server (its store in `--dir`) are in this
//! process over loopback; calls are made from the runtime's worker tasks;
//! a runtime "dies" by shutting down, which closes its connections as a
//! killed process's would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actogrid_builtin::RecorderProxy;
use actogrid_fault_tolerance::cic::Config;
use actogrid_fault_tolerance::server::FtServer;
use actogrid_runtime::{Node, Runtime};
use anyhow::{Context as _, ensure};

use crate::ft_recovery::{node, runtime};
use crate::report::Report;

/// Runtimes hosting the objects (one of them dies).
const HOSTS: usize = 4;

/// Options of `ft-tradeoff`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// The numbers of objects of the shapes measured.
    #[arg(long, value_delimiter = ',', default_values_t = [8, 64, 256])]
    objects: Vec<usize>,
    /// The task lengths of the shapes measured, in milliseconds.
    #[arg(long, value_delimiter = ',', default_values_t = [0.1, 1.0, 10.0])]
    task_ms: Vec<f64>,
    /// Computation of one run, in milliseconds, shared out over the
    /// objects (at least one task each).
    #[arg(long, default_value_t = 2000)]
    work_ms: u64,
    /// Tasks in flight per object.
    #[arg(long, default_value_t = 16)]
    window: u64,
    /// Time to checkpoint, in milliseconds (both protocols).
    #[arg(long, default_value_t = 1000)]
    ttc_ms: u64,
    /// The length of the application the expected totals at one failure a
    /// minute are given for: minutes of its work unprotected and without a
    /// failure (the shape's run, repeated).
    #[arg(long, default_value_t = 10.0)]
    projected_min: f64,
    /// Runs of each shape and protocol, with and without a failure (the
    /// table gives their medians).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the FT store's files are made (and removed): an ordinary disk.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// What protects the objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    None,
    Cic,
    Pml,
}

/// One application shape.
#[derive(Debug, Clone, Copy)]
struct Shape {
    objects: usize,
    task_us: u64,
    tasks: u64,
    window: u64,
    ttc_ms: u64,
}

/// Sends `tasks` tasks of `us` to `object`, `window` in flight, checking
/// each answer (the task's place in the object's record).
async fn drive(object: RecorderProxy, us: u64, tasks: u64, window: u64) -> anyhow::Result<()> {
    let mut at = 0;
    while at < tasks {
        let upto = (at + window).min(tasks);
        let calls: Vec<_> = (at..upto).map(|v| object.push_computed_us(us, v)).collect();
        for (v, call) in (at..upto).zip(calls) {
            let n = call.await?;
            ensure!(n == v + 1, "task {v}: answered {n}");
        }
        at = upto;
    }
    Ok(())
}

/// `shape.objects` recorders spread over `on` (round robin), as `caller`
/// reaches them.
async fn objects(
    caller: &Runtime,
    on: &[&Runtime],
    count: usize,
) -> anyhow::Result<Vec<RecorderProxy>> {
    let mut made = Vec::with_capacity(count);
    for i in 0..count {
        made.push(RecorderProxy::new(&node(caller, on[i % on.len()], "n")?).await?);
    }
    Ok(made)
}

/// Drives every one of `objects` in a task of its own.
fn start(
    objects: &[RecorderProxy],
    shape: Shape,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    objects
        .iter()
        .map(|o| tokio::spawn(drive(o.clone(), shape.task_us, shape.tasks, shape.window)))
        .collect()
}

/// Every object's record holds `tasks` values.
async fn check(objects: &[RecorderProxy], tasks: u64) -> anyhow::Result<()> {
    for o in objects {
        let n = o.count().await?;
        ensure!(n == tasks, "an object served {n} tasks of {tasks}");
    }
    Ok(())
}

/// One run of `shape` under `protocol`, its runtime killed after `fail`
/// if given; the total time in seconds.
async fn run_once(
    protocol: Protocol,
    shape: Shape,
    fail: Option<Duration>,
    path: &Path,
) -> anyhow::Result<f64> {
    let server = FtServer::open(path, Duration::from_millis(shape.ttc_ms))
        .with_context(|| format!("opening the FT store {}", path.display()))?;
    let config = Config {
        ttc: shape.ttc_ms,
        ..Config::default()
    };
    let protect = |rt: &Runtime| -> anyhow::Result<()> {
        let node = rt.local_node("n");
        match protocol {
            Protocol::None => return Ok(()),
            Protocol::Cic => node.add_interceptor(server.cic_protection(config))?,
            Protocol::Pml => node.add_interceptor(server.protection())?,
        }
        rt.set_locator(server.locator())?;
        Ok(())
    };
    let caller = runtime().await?;
    if protocol != Protocol::None {
        caller.set_locator(server.locator())?;
    }
    let mut hosts = Vec::new();
    for _ in 0..HOSTS {
        let rt = runtime().await?;
        protect(&rt)?;
        hosts.push(rt);
    }
    let spare = runtime().await?;
    protect(&spare)?;
    let mut recorders = objects(&caller, &hosts.iter().collect::<Vec<_>>(), shape.objects).await?;
    // Protection starts at an object's first request: each is called once
    // before the run, as an application sets its objects up.
    for r in &recorders {
        r.seen().await?;
    }

    let started = Instant::now();
    let work = start(&recorders, shape);
    if let Some(after) = fail {
        let all = futures::future::join_all(work);
        tokio::pin!(all);
        let ended = tokio::select! {
            r = &mut all => Some(r),
            _ = tokio::time::sleep(after) => None,
        };
        if ended.is_some() {
            anyhow::bail!("the run ended before its failure ({after:?})");
        }
        let doomed = hosts.remove(0);
        let failed = doomed.address().context("serves")?.to_owned();
        doomed.shutdown();
        let to: Node = spare.local_node("n");
        match protocol {
            Protocol::None => {
                // The objects of the dead runtime are gone: the
                // application is stopped and started again from nothing,
                // on fresh runtimes (the spare in place of the dead one);
                // the first run's tasks end as their runtimes shut down.
                for rt in hosts.drain(..) {
                    rt.shutdown();
                }
                for _ in 1..HOSTS {
                    hosts.push(runtime().await?);
                }
                let mut left: Vec<&Runtime> = hosts.iter().collect();
                left.push(&spare);
                recorders = objects(&caller, &left, shape.objects).await?;
                for w in start(&recorders, shape) {
                    w.await??;
                }
            }
            Protocol::Cic => {
                let r = server
                    .cic_runtime_failed(&failed, &to)
                    .await
                    .map_err(anyhow::Error::msg)?;
                ensure!(r.members == shape.objects, "{} members restored", r.members);
                for r in all.await {
                    r??;
                }
            }
            Protocol::Pml => {
                for r in server.runtime_failed(&failed, &to).await {
                    ensure!(r.is_ok(), "a recovery failed: {r:?}");
                }
                for r in all.await {
                    r??;
                }
            }
        }
    } else {
        for w in work {
            w.await??;
        }
    }
    let total = started.elapsed().as_secs_f64();
    check(&recorders, shape.tasks).await?;
    for rt in hosts.iter().chain([&caller, &spare]) {
        rt.shutdown();
    }
    // Closing the store joins its writer thread: not on a worker.
    tokio::task::spawn_blocking(move || drop(server)).await?;
    Ok(total)
}

/// [`run_once`] on a worker task, with a store of its own in `dir`.
async fn timed(
    protocol: Protocol,
    shape: Shape,
    fail: Option<Duration>,
    dir: &Path,
) -> anyhow::Result<f64> {
    let name = format!("ft-tradeoff-{protocol:?}");
    crate::ft_recovery_cic::with_store(dir, &name, move |path| async move {
        run_once(protocol, shape, fail, &path).await
    })
    .await
}

/// The expected total of a run lasting `t` seconds without a failure if
/// runtimes fail once a minute on average: each failure costs `cost`
/// seconds (`None`: the run starts again from nothing).
fn per_minute(t: f64, cost: Option<f64>) -> f64 {
    match cost {
        Some(c) if c < 60.0 => t / (1.0 - c / 60.0),
        Some(_) => f64::INFINITY,
        None => 60.0 * ((t / 60.0).exp() - 1.0),
    }
}

/// One row of the table: a shape, and per protocol the failure-free
/// total, the total with one failure, the expected total of the projected
/// application at one failure a minute (seconds).
struct Row {
    shape: Shape,
    totals: Vec<(Protocol, f64, f64, f64)>,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(
        !args.objects.is_empty() && !args.task_ms.is_empty() && args.window > 0 && args.rounds > 0,
        "need objects, task lengths, a window and rounds"
    );
    ensure!(
        args.objects.iter().all(|&n| n >= HOSTS),
        "every shape needs at least {HOSTS} objects (one runtime of {HOSTS} dies)"
    );
    ensure!(
        args.task_ms.iter().all(|&t| t > 0.0 && t.is_finite()),
        "task lengths are positive milliseconds"
    );
    let mut rows = Vec::new();
    for &objects in &args.objects {
        for &ms in &args.task_ms {
            let task_us = (ms * 1000.0).round() as u64;
            let tasks = (args.work_ms * 1000 / (task_us * objects as u64)).max(1);
            let shape = Shape {
                objects,
                task_us,
                tasks,
                window: args.window,
                ttc_ms: args.ttc_ms,
            };
            let mut totals = Vec::new();
            for protocol in [Protocol::None, Protocol::Cic, Protocol::Pml] {
                let mut cleans = Vec::new();
                let mut fails = Vec::new();
                for _ in 0..args.rounds {
                    let what = |failure: &str| {
                        format!("{objects} objects, tasks of {ms} ms, {protocol:?}, {failure}")
                    };
                    let clean = (timed(protocol, shape, None, &args.dir).await)
                        .with_context(|| what("no failure"))?;
                    let half = Duration::from_secs_f64(clean / 2.0);
                    let failed = (timed(protocol, shape, Some(half), &args.dir).await)
                        .with_context(|| what("one failure"))?;
                    fails.push(failed);
                    cleans.push(clean);
                }
                let (clean, failed) = (median(cleans), median(fails));
                let cost = (protocol != Protocol::None).then(|| (failed - clean).max(0.0));
                totals.push((protocol, clean, failed, cost));
                eprintln!(
                    "{objects} objects × {tasks} tasks of {ms} ms, {protocol:?}: {clean:.3} s, with a failure {failed:.3} s"
                );
            }
            // The projected application: the unprotected run repeated.
            let scale = args.projected_min * 60.0 / totals[0].1;
            let totals = totals
                .into_iter()
                .map(|(p, clean, failed, cost)| (p, clean, failed, per_minute(clean * scale, cost)))
                .collect();
            rows.push(Row { shape, totals });
        }
    }
    let sum = |p: usize, f: fn(&(Protocol, f64, f64, f64)) -> f64| -> f64 {
        rows.iter().map(|r| f(&r.totals[p])).sum()
    };
    let mut report = Report::new(
        "ft-tradeoff",
        "s",
        sum(1, |t| t.1),
        sum(1, |t| t.2),
        "the same shapes unprotected, without a failure, s",
        sum(0, |t| t.1),
    )
    .note(
        format!("per shape and protocol: total s without a failure / with one runtime of 4 killed halfway / {} min of its work at one failure a minute", args.projected_min),
    );
    let mut json = Vec::new();
    for r in &rows {
        let cell = |(_, clean, failed, minute): &(Protocol, f64, f64, f64)| {
            format!("{clean:.2} / {failed:.2} / {}", long(*minute))
        };
        let ms = r.shape.task_us as f64 / 1000.0;
        report = report.note(format!(
            "{} objects × {} tasks of {ms} ms: none {} | CIC {} | PML {}",
            r.shape.objects,
            r.shape.tasks,
            cell(&r.totals[0]),
            cell(&r.totals[1]),
            cell(&r.totals[2])
        ));
        let mut row = serde_json::Map::new();
        row.insert("objects".into(), r.shape.objects.into());
        row.insert("task_ms".into(), ms.into());
        row.insert("tasks_per_object".into(), r.shape.tasks.into());
        for (protocol, clean, failed, minute) in &r.totals {
            let name = format!("{protocol:?}").to_lowercase();
            row.insert(format!("{name}_s"), round3(*clean).into());
            row.insert(format!("{name}_one_failure_s"), round3(*failed).into());
            row.insert(format!("{name}_projected_s"), round3(*minute).into());
        }
        json.push(serde_json::Value::Object(row));
    }
    Ok(report
        .with(
            "value_is",
            "CIC, every shape without a failure, summed; p90: the same with one failure",
        )
        .with_figure("pml_s", sum(2, |t| t.1))
        .with_figure("pml_one_failure_s", sum(2, |t| t.2))
        .with_figure("unprotected_one_failure_s", sum(0, |t| t.2))
        .with("window", args.window)
        .with("rounds", args.rounds)
        .with("work_ms", args.work_ms)
        .with("ttc_ms", args.ttc_ms)
        .with("projected_min", args.projected_min)
        .with("rows", serde_json::Value::Array(json)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `s` seconds, readably.
fn long(s: f64) -> String {
    if !s.is_finite() {
        "never".into()
    } else if s >= 2.0 * 86_400.0 {
        format!("{:.0} days", s / 86_400.0)
    } else if s >= 2.0 * 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

/// `v` to the millisecond (JSON stays readable; infinite: null).
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
