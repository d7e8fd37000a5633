//! Simulates the overlay under churn and prints, for several TTL × NOA
//! settings, how often k nodes are acquired within a deadline, what it costs
//! in messages, and the shape of the acquaintance graph.
//!
//! ```text
//! cargo run --release -p actogrid-acquisition --example overlay-sim            # 10,000 peers
//! cargo run --release -p actogrid-acquisition --example overlay-sim -- --quick # 1,000 peers
//! ```

use std::time::{Duration, Instant};

use actogrid_acquisition::overlay::sim::{GraphReport, Session, Sim, SimConfig};
use actogrid_acquisition::overlay::{Config, Event, Wanted};
use clap::Parser;

/// Overlay simulator: acquisition success, cost and graph health under churn.
#[derive(Parser, Debug, Clone)]
struct Options {
    /// Peers alive at any time.
    #[arg(long, default_value_t = 10_000)]
    peers: usize,
    /// Acquisitions measured per setting (one after the other).
    #[arg(long, default_value_t = 30)]
    trials: usize,
    /// Nodes asked by each acquisition (k).
    #[arg(long, default_value_t = 100)]
    nodes: u32,
    /// Deadline of an acquisition, in seconds (also its acquisition timeout).
    #[arg(long, default_value_t = 120)]
    deadline: u64,
    /// Simulated time before the first trial, in seconds.
    #[arg(long, default_value_t = 900)]
    warmup: u64,
    /// TTL values (requests and exploration), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "3,5,7")]
    ttl: Vec<u32>,
    /// NOA values, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "3,10")]
    noa: Vec<u32>,
    /// TTU (heartbeat period), in seconds.
    #[arg(long, default_value_t = 60)]
    ttu: u64,
    /// Mean session length, in seconds.
    #[arg(long, default_value_t = 1800)]
    session_mean: u64,
    /// Session length distribution: lognormal (σ = 1.5) or pareto (α = 1.5).
    #[arg(long, default_value = "lognormal")]
    session: String,
    /// Median one-way latency, in milliseconds (log-normal, σ = 0.6).
    #[arg(long, default_value_t = 40)]
    latency_ms: u64,
    /// Message loss probability.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Share of peers that lend their slots (the others lend none).
    #[arg(long, default_value_t = 0.3)]
    lending: f64,
    /// Slots lent by each lending peer.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Settings simulated in parallel.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A quick run: 1,000 peers, 10 trials, 600 s of warm-up.
    #[arg(long)]
    quick: bool,
}

struct Outcome {
    ttl: u32,
    noa: u32,
    successes: usize,
    trials: usize,
    times: Vec<f64>,
    messages: Vec<u64>,
    duplicates: Vec<u64>,
    after_warmup: GraphReport,
    at_end: GraphReport,
    wall: Duration,
}

fn main() {
    let mut options = Options::parse();
    if options.quick {
        options.peers = 1_000;
        options.trials = 10;
        options.warmup = 600;
    }
    let settings: Vec<(u32, u32)> = (options.ttl.iter())
        .flat_map(|&ttl| options.noa.iter().map(move |&noa| (ttl, noa)))
        .collect();
    let session = match options.session.as_str() {
        "pareto" => Session::Pareto {
            mean: Duration::from_secs(options.session_mean),
            alpha: 1.5,
        },
        _ => Session::LogNormal {
            mean: Duration::from_secs(options.session_mean),
            sigma: 1.5,
        },
    };
    eprintln!(
        "{} peers ({:.0} % lending {} slot(s)), {} trials of k = {} within {} s, {} s warm-up, TTU {} s, sessions {:?}, latency median {} ms, loss {}",
        options.peers,
        100.0 * options.lending,
        options.slots,
        options.trials,
        options.nodes,
        options.deadline,
        options.warmup,
        options.ttu,
        session,
        options.latency_ms,
        options.loss
    );

    let started = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let threads = options.threads.max(1);
    for chunk in settings.chunks(threads) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (chunk.iter())
                .map(|&(ttl, noa)| {
                    let options = options.clone();
                    scope.spawn(move || run(&options, session, ttl, noa))
                })
                .collect();
            for handle in handles {
                match handle.join() {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(_) => eprintln!("a setting's simulation panicked"),
                }
            }
        });
    }

    println!();
    println!(
        "| TTL | NOA | P(k={} within {} s) | median time to k | msgs / acquisition | of which duplicate requests | degree in [NOA, 2·NOA] | below NOA | largest component | wall |",
        options.nodes, options.deadline
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {} | {:.2} ({}/{}) | {} | {} | {} | {:.1} % → {:.1} % | {:.1} % → {:.1} % | {:.1} % → {:.1} % | {:.0} s |",
            o.ttl,
            o.noa,
            o.successes as f64 / o.trials.max(1) as f64,
            o.successes,
            o.trials,
            median_f(&o.times).map_or("—".into(), |t| format!("{t:.1} s")),
            mean(&o.messages),
            mean(&o.duplicates),
            100.0 * o.after_warmup.within_bounds,
            100.0 * o.at_end.within_bounds,
            100.0 * o.after_warmup.below,
            100.0 * o.at_end.below,
            100.0 * o.after_warmup.largest_component,
            100.0 * o.at_end.largest_component,
            o.wall.as_secs_f64(),
        );
    }
    println!();
    println!(
        "graph columns: after warm-up → after the last trial. Total wall time {:.0} s.",
        started.elapsed().as_secs_f64()
    );
}

fn run(options: &Options, session: Session, ttl: u32, noa: u32) -> Outcome {
    let started = Instant::now();
    let deadline = Duration::from_secs(options.deadline);
    let peer = Config {
        noa,
        ttl,
        ttu: Duration::from_secs(options.ttu),
        slots: options.slots,
        acquisition_timeout: deadline,
        ..Config::default()
    };
    let mut sim = Sim::new(SimConfig {
        peers: options.peers,
        peer,
        latency_median: Duration::from_millis(options.latency_ms),
        latency_sigma: 0.6,
        loss: options.loss,
        session,
        lending: options.lending,
        contacts: 3,
        deploy_delay: (Duration::from_secs(1), Duration::from_secs(5)),
        seed: options.seed ^ (u64::from(ttl) << 32) ^ u64::from(noa),
    });
    sim.run_for(Duration::from_secs(options.warmup));
    sim.take_events();
    let after_warmup = sim.graph();

    let mut outcome = Outcome {
        ttl,
        noa,
        successes: 0,
        trials: options.trials,
        times: Vec::new(),
        messages: Vec::new(),
        duplicates: Vec::new(),
        after_warmup,
        at_end: after_warmup,
        wall: Duration::ZERO,
    };
    for _ in 0..options.trials {
        let Some(requester) = sim.random_live() else {
            break;
        };
        sim.pin(requester);
        let before = sim.traffic().clone();
        let start = sim.now();
        let Some(request) = sim.command(requester, |p, now| {
            p.acquire(now, Wanted::Count(options.nodes))
        }) else {
            break;
        };
        let satisfied = sim.run_until_event(start + deadline, |(_, peer, event)| {
            *peer == requester && *event == Event::Satisfied { request }
        });
        if satisfied {
            outcome.successes += 1;
            outcome.times.push(sim.now().since(start).as_secs_f64());
        }
        sim.command(requester, |p, _| p.end_request(request));
        // Let the releases land before the next trial.
        sim.run_for(Duration::from_secs(10));
        sim.unpin(requester);
        sim.take_events();
        let after = sim.traffic();
        outcome
            .messages
            .push(after.acquisition() - before.acquisition());
        outcome
            .duplicates
            .push(after.duplicate_requests - before.duplicate_requests);
    }
    outcome.at_end = sim.graph();
    outcome.wall = started.elapsed();
    eprintln!(
        "TTL {ttl} NOA {noa}: {}/{} in {:.0} s",
        outcome.successes,
        outcome.trials,
        outcome.wall.as_secs_f64()
    );
    outcome
}

fn mean(values: &[u64]) -> String {
    if values.is_empty() {
        return "—".into();
    }
    let m = values.iter().sum::<u64>() as f64 / values.len() as f64;
    format!("{m:.0}")
}

fn median_f(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}
