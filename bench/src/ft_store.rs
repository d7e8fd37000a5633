//! `ft-store`: small request-log entries made durable per second by the FT
//! store, with group commit, against one commit (one sync) per entry.
//!
//! Both series run the same store code on a fresh file in `--dir`, with the
//! same concurrent appenders (`--objects` × `--writers`, each awaiting its
//! acknowledgement before appending again); the baseline only sets the
//! batch size to one entry. Rounds of the two alternate.

use std::path::{Path, PathBuf};
use std::time::Instant;

use actogrid_fault_tolerance::{Incarnation, ObjectKey, Store, StoreConfig};
use anyhow::{Context as _, ensure};

use crate::report::Report;

/// The goal for group commit, in entries per second.
const TARGET: f64 = 100_000.0;

/// Options of `ft-store`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Protected objects whose logs are appended to.
    #[arg(long, default_value_t = 64)]
    objects: usize,
    /// Concurrent appenders per object.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Bytes of each log entry.
    #[arg(long, default_value_t = 64)]
    entry_bytes: usize,
    /// Entries appended in a group-commit round.
    #[arg(long, default_value_t = 400_000)]
    entries: usize,
    /// Entries appended in a one-commit-per-entry round.
    #[arg(long, default_value_t = 4_096)]
    baseline_entries: usize,
    /// Timed rounds of each.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the store files are made (and removed); an ordinary disk, not
    /// tmpfs, for the figure to mean anything.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// What one round measured.
struct Round {
    per_second: f64,
    entries: u64,
    commits: u64,
    file_bytes: u64,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.runs > 0, "--runs must be at least 1");
    let appenders = args.objects * args.writers;
    ensure!(appenders > 0, "--objects and --writers must be at least 1");
    ensure!(
        args.entries >= appenders && args.baseline_entries >= appenders,
        "--entries and --baseline-entries must be at least --objects × --writers ({appenders})"
    );
    let grouped = StoreConfig::default();
    let single = StoreConfig {
        max_batch: 1,
        ..StoreConfig::default()
    };
    let mut group_rounds = Vec::new();
    let mut single_rounds = Vec::new();
    for run in 0..args.runs {
        group_rounds.push(round(args, &grouped, args.entries, run).await?);
        single_rounds.push(round(args, &single, args.baseline_entries, run).await?);
    }
    let median = |rounds: &[Round]| {
        let mut rates: Vec<f64> = rounds.iter().map(|r| r.per_second).collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let slowest = |rounds: &[Round]| {
        rounds
            .iter()
            .map(|r| r.per_second)
            .fold(f64::INFINITY, f64::min)
    };
    let value = median(&group_rounds);
    let met = if value >= TARGET { "met" } else { "NOT met" };
    let mut report = Report::new(
        "ft-store",
        "entries/s",
        value,
        slowest(&group_rounds),
        "one commit per entry, entries/s",
        median(&single_rounds),
    )
    .note(format!(
        "{} objects × {} appenders, {}-byte entries, files in {}",
        args.objects,
        args.writers,
        args.entry_bytes,
        args.dir.display()
    ));
    for (name, rounds) in [
        ("group commit", &group_rounds),
        ("one per entry", &single_rounds),
    ] {
        for r in rounds.iter() {
            report = report.note(format!(
                "{name:<13} {:>10.0} entries/s  {:>8} entries in {:>6} commits \
                 ({:.1} per commit), file {} KiB",
                r.per_second,
                r.entries,
                r.commits,
                r.entries as f64 / r.commits.max(1) as f64,
                r.file_bytes / 1024
            ));
        }
    }
    Ok(report
        .note(format!(
            "target: group commit at least {TARGET:.0} entries/s: {met}"
        ))
        .with("appenders", appenders)
        .with("entry_bytes", args.entry_bytes)
        .with("target_per_second", TARGET as u64))
}

/// Appends `entries` entries from the appenders to a fresh store.
async fn round(
    args: &Args,
    config: &StoreConfig,
    entries: usize,
    run: usize,
) -> anyhow::Result<Round> {
    let path = args.dir.join(format!(
        "actogrid-bench-ft-store-{}-{run}-{}.redb",
        std::process::id(),
        config.max_batch
    ));
    let _ = std::fs::remove_file(&path);
    let result = appends(args, config, entries, &path).await;
    let _ = std::fs::remove_file(&path);
    result
}

async fn appends(
    args: &Args,
    config: &StoreConfig,
    entries: usize,
    path: &Path,
) -> anyhow::Result<Round> {
    let store = Store::open(path, config.clone())
        .with_context(|| format!("opening a store in {}", args.dir.display()))?;
    let per_appender = entries / (args.objects * args.writers);
    let entry = vec![0x5a_u8; args.entry_bytes];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for object in 0..args.objects {
        let key = ObjectKey::from(format!("object-{object}"));
        for _ in 0..args.writers {
            let (store, key, entry) = (store.clone(), key.clone(), entry.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_appender {
                    store.append(&key, Incarnation(0), entry.clone()).await?;
                }
                anyhow::Ok(())
            }));
        }
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed();
    let stats = store.stats();
    // Closing joins the writer thread: not on a worker of this runtime.
    tokio::task::spawn_blocking(move || drop(store)).await?;
    Ok(Round {
        per_second: stats.entries_written as f64 / elapsed.as_secs_f64(),
        entries: stats.entries_written,
        commits: stats.commits,
        file_bytes: stats.file_bytes,
    })
}
