//! `ft-overhead pml|cic`: the same workload on protected objects and on
//! unprotected ones, in the same run. With `pml`, every request is logged
//! durably before anything of its service leaves, and each object is
//! checkpointed every `--ttc-ms`; with `cic`, each object checkpoints
//! every `--ttc-ms` and when a message from ahead reaches it, hands its
//! reception history over in the background, and a reply to the caller
//! (outside the group) leaves once the committed recovery line is past
//! it.
//!
//! * **Tasks**: `--objects` objects each serve `--tasks` tasks of
//!   `--task-ms` of computation, sent one after the other per object and
//!   concurrently across objects; the makespan with PML (`value`) against
//!   without (`baseline_value`). Target: ratio ≤ 1.10 for 1 ms tasks.
//! * **Among objects**: `--objects` tellers each make `--tasks` transfers
//!   between two accounts of their own in one request (two calls each),
//!   the calls staying among protected objects; one reply leaves per
//!   teller.
//! * **Empty calls**: `--empty` calls that do nothing, spread the same way
//!   over `--empty-objects` objects; logged calls per second with group
//!   commit (target ≥ 100,000/s) and their ratio to unprotected calls.
//!
//! The runtimes and the FT server (its store in `--dir`) are in this
//! process, over loopback; calls are made from the runtime's worker tasks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actogrid_builtin::{AccountProxy, RecorderProxy, TellerProxy};
use actogrid_fault_tolerance::cic_node::CicProtection;
use actogrid_fault_tolerance::server::{FtServer, Protection, remote_locator};
use actogrid_runtime::Node;
use anyhow::{Context as _, ensure};

use crate::ft_recovery::{node, runtime};
use crate::report::Report;

/// The goal for the tasks' makespan, protected against unprotected.
const TASK_TARGET_RATIO: f64 = 1.10;
/// The same with CIC.
const CIC_TASK_TARGET_RATIO: f64 = 1.03;
/// The goal for logged empty calls per second.
const EMPTY_TARGET: f64 = 100_000.0;

/// Options of `ft-overhead`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// The protocol: `pml` or `cic`.
    #[arg(default_value = "pml")]
    protocol: String,
    /// Objects the tasks run on.
    #[arg(long, default_value_t = 8)]
    objects: usize,
    /// Tasks per object.
    #[arg(long, default_value_t = 100)]
    tasks: usize,
    /// Computation per task, in milliseconds.
    #[arg(long, default_value_t = 1)]
    task_ms: u64,
    /// Empty calls in all (enough for a round to last about a second on
    /// two vCPUs, and for each object to checkpoint during it).
    #[arg(long, default_value_t = 100_000)]
    empty: usize,
    /// Objects the empty calls go to.
    #[arg(long, default_value_t = 64)]
    empty_objects: usize,
    /// Time to checkpoint, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    ttc_ms: u64,
    /// Timed rounds of each (the figures are their medians).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where the FT store's files are made (and removed): an ordinary disk.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The FT server on a runtime of its own, reached over the wire (as in
    /// a deployment), instead of directly.
    #[arg(long)]
    remote: bool,
}

/// `calls` calls over `objects` objects on `on`, sequential per object and
/// concurrent across them, each computing `ms`; the elapsed seconds.
async fn workload(on: &Node, objects: usize, calls: usize, ms: u64) -> anyhow::Result<f64> {
    let mut targets = Vec::with_capacity(objects);
    for _ in 0..objects {
        targets.push(RecorderProxy::new(on).await?);
    }
    let per_object = calls / objects;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(objects);
    for target in targets {
        tasks.push(tokio::spawn(async move {
            for v in 0..per_object as u64 {
                if ms == 0 {
                    target.push(v).await?;
                } else {
                    target.push_computed(ms, v).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `tellers` tellers on `on`, each making `per_teller` transfers between
/// two accounts of its own (on `on` too) in one request, all at once; the
/// elapsed seconds.
async fn among_objects(on: &Node, tellers: usize, per_teller: usize) -> anyhow::Result<f64> {
    let mut work = Vec::with_capacity(tellers);
    for _ in 0..tellers {
        let teller = TellerProxy::new(on).await?;
        let from = AccountProxy::new(on, 1_000_000).await?;
        let to = AccountProxy::new(on, 0).await?;
        work.push((teller, from, to));
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(tellers);
    for (teller, from, to) in work {
        let n = per_teller as u64;
        tasks.push(tokio::spawn(async move {
            teller.transfers(0, n, from, to, 1).await?;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// What one round measured.
struct Round {
    tasks_ft: f64,
    tasks_plain: f64,
    among_ft: f64,
    among_plain: f64,
    empty_ft: f64,
    empty_plain: f64,
    store_bytes: u64,
    entries_per_second: f64,
    entries_per_commit: f64,
}

async fn round(args: Arc<Args>, n: usize) -> anyhow::Result<Round> {
    let path = args.dir.join(format!(
        "actogrid-bench-ft-overhead-{}-{n}.redb",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    tokio::spawn(async move {
        let result = measure(&args, &path).await;
        let _ = std::fs::remove_file(&path);
        result
    })
    .await?
}

async fn measure(args: &Args, path: &std::path::Path) -> anyhow::Result<Round> {
    let server = FtServer::open(path, Duration::from_millis(args.ttc_ms))
        .with_context(|| format!("opening the FT store in {}", args.dir.display()))?;
    let caller = runtime().await?;
    let callee = runtime().await?;
    let home = runtime().await?;
    let cic = actogrid_fault_tolerance::cic::Config {
        ttc: args.ttc_ms,
        ..Default::default()
    };
    if args.remote {
        let served = server.serve(&home.local_node("ft"), "ft-server").await?;
        let endpoint = callee.adopt(&served.endpoint);
        let ttc = Duration::from_millis(args.ttc_ms);
        let node = callee.local_node("ft");
        if args.protocol == "cic" {
            node.add_interceptor(CicProtection::remote(endpoint, cic))?;
        } else {
            node.add_interceptor(Protection::remote(endpoint, ttc))?;
        }
        caller.set_locator(remote_locator(caller.adopt(&served.location)))?;
    } else {
        let node = callee.local_node("ft");
        if args.protocol == "cic" {
            node.add_interceptor(server.cic_protection(cic))?;
        } else {
            node.add_interceptor(server.protection())?;
        }
        caller.set_locator(server.locator())?;
    }
    let ft = node(&caller, &callee, "ft")?;
    let plain = node(&caller, &callee, "plain")?;
    let tasks = args.objects * args.tasks;
    let tasks_plain = workload(&plain, args.objects, tasks, args.task_ms).await?;
    let tasks_ft = workload(&ft, args.objects, tasks, args.task_ms).await?;
    let among_plain = among_objects(&plain, args.objects, args.tasks).await?;
    let among_ft = among_objects(&ft, args.objects, args.tasks).await?;
    let empty_plain = workload(&plain, args.empty_objects, args.empty, 0).await?;
    let before = server.store().stats();
    let empty_ft = workload(&ft, args.empty_objects, args.empty, 0).await?;
    let stats = server.store().stats();
    for rt in [&caller, &callee, &home] {
        rt.shutdown();
    }
    tokio::task::spawn_blocking(move || drop(server)).await?;
    let calls = (args.empty / args.empty_objects * args.empty_objects) as f64;
    Ok(Round {
        tasks_ft,
        tasks_plain,
        among_ft,
        among_plain,
        empty_ft: calls / empty_ft,
        empty_plain: calls / empty_plain,
        store_bytes: stats.file_bytes,
        entries_per_second: (stats.entries_written - before.entries_written) as f64 / empty_ft,
        entries_per_commit: (stats.entries_written - before.entries_written) as f64
            / (stats.commits - before.commits).max(1) as f64,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(
        args.protocol == "pml" || args.protocol == "cic",
        "`{}` is not a protocol: write `pml` or `cic`",
        args.protocol
    );
    let (protocol, target) = if args.protocol == "cic" {
        ("CIC", CIC_TASK_TARGET_RATIO)
    } else {
        ("PML", TASK_TARGET_RATIO)
    };
    ensure!(
        args.rounds > 0
            && args.objects > 0
            && args.tasks > 0
            && args.empty_objects > 0
            && args.empty >= args.empty_objects,
        "need rounds, objects, tasks, and at least one empty call per object"
    );
    let shared = Arc::new(args.clone());
    let mut rounds = Vec::new();
    for n in 0..args.rounds {
        rounds.push(round(shared.clone(), n).await?);
    }
    let of = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let tasks_ft = of(|r| r.tasks_ft) * 1e3;
    let tasks_plain = of(|r| r.tasks_plain) * 1e3;
    let empty_ft = of(|r| r.empty_ft);
    let empty_plain = of(|r| r.empty_plain);
    let spread = |f: fn(&Round) -> f64| {
        rounds
            .iter()
            .map(f)
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let (empty_ft_min, empty_ft_max) = spread(|r| r.empty_ft);
    let ratio = tasks_ft / tasks_plain;
    let among_ft = of(|r| r.among_ft) * 1e3;
    let among_plain = of(|r| r.among_plain) * 1e3;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let store_bytes = rounds.iter().map(|r| r.store_bytes).max().unwrap_or(0);
    Ok(Report::new(
        "ft-overhead",
        "ms",
        tasks_ft,
        of(|r| r.tasks_ft) * 1e3,
        "the same tasks on unprotected objects, ms",
        tasks_plain,
    )
    .note(format!(
        "{} objects × {} tasks of {} ms: {tasks_ft:.1} ms with {protocol}, {tasks_plain:.1} ms without ({ratio:.2}×; target <= {target}×: {})",
        args.objects,
        args.tasks,
        args.task_ms,
        met(ratio <= target)
    ))
    .note(format!(
        "among objects: {} tellers × {} transfers (two calls each) in one request each: {among_ft:.1} ms with {protocol}, {among_plain:.1} ms without ({:.2}×)",
        args.objects,
        args.tasks,
        among_ft / among_plain
    ))
    .note(format!(
        "empty calls over {} objects: {empty_ft:.0}/s with {protocol} (rounds {empty_ft_min:.0}–{empty_ft_max:.0}), {empty_plain:.0}/s unprotected ({:.2}×; target >= {EMPTY_TARGET:.0}/s: {})",
        args.empty_objects,
        empty_ft / empty_plain,
        met(empty_ft >= EMPTY_TARGET)
    ))
    .note(format!(
        "store: {} KiB at the end of a round, {:.0} entries/s written during the empty calls, {:.1} per commit",
        store_bytes / 1024,
        of(|r| r.entries_per_second),
        of(|r| r.entries_per_commit)
    ))
    .with("protocol", args.protocol.clone())
    .with(
        "server",
        if args.remote {
            "over the wire"
        } else {
            "in the process"
        },
    )
    .with("objects", args.objects)
    .with("tasks", args.tasks)
    .with("task_ms", args.task_ms)
    .with("task_target_ratio", target)
    .with("empty_objects", args.empty_objects)
    .with_figure("among_objects_ms", among_ft)
    .with_figure("among_objects_unprotected_ms", among_plain)
    .with_figure("among_objects_ratio", among_ft / among_plain)
    .with_figure("logged_calls_per_second", empty_ft)
    .with_figure("logged_calls_per_second_min", empty_ft_min)
    .with_figure("logged_calls_per_second_max", empty_ft_max)
    .with_figure("unprotected_calls_per_second", empty_plain)
    .with_figure("logged_calls_ratio", empty_ft / empty_plain)
    .with("logged_calls_target", EMPTY_TARGET)
    .with("store_bytes", store_bytes)
    .with_figure("store_entries_per_second", of(|r| r.entries_per_second))
    .with_figure("store_entries_per_commit", of(|r| r.entries_per_commit)))
}
