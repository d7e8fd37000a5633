//! N-Queens on a virtual node: counts the ways to place N queens on an
//! N×N board with none attacking another, split into independent tasks
//! (the queens of the first rows) that a group of `Solver` active objects
//! solves, one per node of the virtual node `Workers`.
//!
//! ```sh
//! cargo run --release --example nqueens -- [N] [DESCRIPTOR] [name=value…]
//! ```
//!
//! N defaults to 14; the descriptor defaults to `local.xml` beside this
//! file (one local runtime per core); `name=value` arguments set
//! descriptor variables (`cores=8`, `hosts=…`). The count is checked
//! against the known values, and the time is compared with the same
//! tasks on one worker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actogrid::descriptor::LoadOptions;
use actogrid::{DeployOptions, Deployment, Group};
use serde::{Deserialize, Serialize};

/// Solves N-Queens tasks: boards whose first rows are already placed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Solver {
    solved: u64,
}

/// A task: the board size and the columns of the queens of the first rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    n: u32,
    columns: Vec<u32>,
}

#[actogrid::active]
impl Solver {
    /// A solver.
    pub fn new() -> Self {
        Solver::default()
    }

    /// Counts the solutions that extend `task`.
    pub fn solve(&mut self, task: Task) -> u64 {
        self.solved += 1;
        count_from(&task)
    }

    /// Where it runs: host name and process id.
    pub fn whereabouts(&self) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "?".to_owned());
        format!("{host} (pid {})", std::process::id())
    }
}

/// Solutions extending the placed queens, by bitmask backtracking.
fn count_from(task: &Task) -> u64 {
    let full = (1u64 << task.n) - 1;
    let (mut cols, mut d1, mut d2) = (0u64, 0u64, 0u64);
    for &c in &task.columns {
        let bit = 1u64 << c;
        if (cols | d1 | d2) & bit != 0 {
            return 0;
        }
        cols |= bit;
        d1 = ((d1 | bit) << 1) & full;
        d2 = (d2 | bit) >> 1;
    }
    fn go(full: u64, cols: u64, d1: u64, d2: u64) -> u64 {
        if cols == full {
            return 1;
        }
        let mut free = full & !(cols | d1 | d2);
        let mut total = 0;
        while free != 0 {
            let bit = free & free.wrapping_neg();
            free ^= bit;
            total += go(full, cols | bit, ((d1 | bit) << 1) & full, (d2 | bit) >> 1);
        }
        total
    }
    go(full, cols, d1, d2)
}

/// Every non-attacking placement of the first `rows` rows.
fn tasks(n: u32, rows: u32) -> Vec<Task> {
    let mut out = vec![Vec::new()];
    for _ in 0..rows.min(n) {
        let mut next = Vec::new();
        for prefix in &out {
            for c in 0..n {
                let row = prefix.len() as i64;
                let safe = prefix.iter().enumerate().all(|(r, &pc): (usize, &u32)| {
                    let (r, pc) = (r as i64, i64::from(pc));
                    pc != i64::from(c) && (row - r) != (i64::from(c) - pc).abs()
                });
                if safe {
                    let mut p = prefix.clone();
                    p.push(c);
                    next.push(p);
                }
            }
        }
        out = next;
    }
    out.into_iter().map(|columns| Task { n, columns }).collect()
}

/// Solutions for N = 1…18 (OEIS A000170).
const KNOWN: [u64; 19] = [
    1, 1, 0, 0, 2, 10, 4, 40, 92, 352, 724, 2680, 14200, 73712, 365596, 2279184, 14772512,
    95815104, 666090624,
];

async fn run_on(group: &Group<SolverProxy>, work: &[Task]) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let counts = group
        .scatter(work.iter().cloned(), |solver, task| solver.solve(task))
        .values()
        .await
        .map_err(|e| anyhow::anyhow!("task {} failed: {}", e.rank, e.error))?;
    Ok((counts.iter().sum(), started.elapsed()))
}

#[actogrid::main]
async fn main() -> anyhow::Result<()> {
    let mut n: u32 = 14;
    let mut descriptor =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/nqueens/local.xml");
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let mut load = LoadOptions::default().var("cores", cores.to_string());
    let mut positional = 0;
    for arg in std::env::args().skip(1) {
        if let Some((name, value)) = arg.split_once('=') {
            load = load.var(name, value);
            continue;
        }
        match positional {
            0 => {
                n = arg
                    .parse()
                    .ok()
                    .filter(|n| (1..=18).contains(n))
                    .ok_or_else(|| {
                        anyhow::anyhow!("N must be a number from 1 to 18, not `{arg}`")
                    })?;
            }
            1 => descriptor = PathBuf::from(arg),
            _ => anyhow::bail!("usage: nqueens [N] [DESCRIPTOR] [name=value…]"),
        }
        positional += 1;
    }

    let started = Instant::now();
    let deployment = Deployment::load_with(&descriptor, load, DeployOptions::default()).await?;
    deployment.activate().await?;
    let workers = deployment.virtual_node("Workers")?;
    let nodes = workers.nodes().await?;
    let group = Group::create(&nodes, |node, _| SolverProxy::new(node)).await?;
    println!(
        "deployed {} worker(s) from {} in {:.2} s",
        group.len(),
        descriptor.display(),
        started.elapsed().as_secs_f64()
    );
    let places = group.broadcast(|s| s.whereabouts()).values().await;
    if let Ok(places) = places {
        for (rank, place) in places.iter().enumerate() {
            println!("  worker {rank}: {place}");
        }
    }

    let work = tasks(n, if n > 12 { 3 } else { 2 });
    // Warm up every connection with a small board.
    run_on(&group, &tasks(8, 1)).await?;

    let (total, parallel) = run_on(&group, &work).await?;
    let one = Group::new(group.members()[..1].to_vec());
    let (single_total, single) = run_on(&one, &work).await?;

    let known = KNOWN[n as usize];
    let verdict = if total == known && single_total == known {
        "correct"
    } else {
        "WRONG"
    };
    println!("N = {n}: {total} solutions ({verdict}; known value {known})");
    println!(
        "{} tasks: {:.3} s on {} worker(s), {:.3} s on one: speed-up {:.2}x",
        work.len(),
        parallel.as_secs_f64(),
        group.len(),
        single.as_secs_f64(),
        single.as_secs_f64() / parallel.as_secs_f64().max(1e-9)
    );
    deployment.kill().await;
    anyhow::ensure!(verdict == "correct", "the count is wrong");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_cover_every_solution() {
        for n in 1..=10u32 {
            let total: u64 = tasks(n, 2).iter().map(count_from).sum();
            assert_eq!(total, KNOWN[n as usize], "n = {n}");
        }
    }
}
