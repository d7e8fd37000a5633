//! `ao-create`: creating an active object on a remote node, one creation
//! in flight.
//!
//! Over mutual TLS a new object gets a key of its own (its id is the hash
//! of the key's public half, so that only the runtime hosting it can send
//! as it; see `docs/security.md`); in plaintext it gets a random id. The
//! benchmark times `EchoProxy::new(&node)` on a `serve-node` child from a
//! tokio worker task, TLS and plaintext alternating over several rounds,
//! unpinned and with everything on CPU 0. The baseline is the same
//! creation in plaintext, in the same run.

use std::time::Instant;

use actogrid_builtin::EchoProxy;
use actogrid_runtime::{Node, Runtime};
use anyhow::{Context as _, ensure};

use crate::child::{Child, Mode};
use crate::report::Report;
use crate::security;
use crate::timing::Summary;

/// Options of `ao-create`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Timed creations per mode of security and pinning, split over the
    /// rounds.
    #[arg(long, default_value_t = 2_000)]
    creations: usize,
    /// Untimed creations per mode, before the rounds.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Rounds, each timing TLS then plaintext (or the other way round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// Creates `count` objects on `node` one after the other, on a worker
/// task; returns each creation's time in microseconds.
async fn series(node: &Node, count: usize) -> anyhow::Result<Vec<f64>> {
    let node = node.clone();
    tokio::spawn(async move {
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let start = Instant::now();
            EchoProxy::new(&node)
                .await
                .context("cannot create the Echo object")?;
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
        anyhow::Ok(samples)
    })
    .await
    .context("a measuring task panicked")?
}

/// TLS and plaintext creations in one mode.
struct Measured {
    tls: Summary,
    plaintext: Summary,
}

impl Measured {
    fn ratio(&self) -> f64 {
        self.tls.median / self.plaintext.median
    }
}

async fn measure(runtimes: [&Runtime; 2], mode: Mode, args: &Args) -> anyhow::Result<Measured> {
    let [tls, plaintext] = runtimes;
    let servers = [Child::node(mode, tls)?, Child::node(mode, plaintext)?];
    let _placed = mode.place_self()?;
    let nodes = [tls, plaintext]
        .iter()
        .zip(&servers)
        .map(|(rt, server)| -> anyhow::Result<Node> {
            Ok(rt.node(&format!("actogrid://{}/bench", server.address()).parse()?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for node in &nodes {
        series(node, args.warmup).await?;
    }
    let per_round = args.creations / args.rounds;
    let mut samples: [Vec<f64>; 2] = Default::default();
    for round in 0..args.rounds {
        for k in 0..2 {
            let i = (round + k) % 2;
            samples[i].extend(series(&nodes[i], per_round).await?);
        }
    }
    let [tls, plaintext] = samples.map(|s| Summary::of(&s));
    Ok(Measured { tls, plaintext })
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.creations >= args.rounds,
        "--creations must be at least --rounds"
    );
    let (unpinned, pinned) =
        security::in_both_modes(async |runtimes, mode| measure(runtimes, mode, args).await).await?;
    let mut report = Report::new(
        "ao-create",
        "µs",
        unpinned.tls.median,
        unpinned.tls.p90,
        "the same creation in plaintext (random ids, no keys)",
        unpinned.plaintext.median,
    );
    for (mode, m) in [(Mode::Unpinned, &unpinned), (Mode::Pinned, &pinned)] {
        report = report
            .note(format!("{}:", mode.name()))
            .note(format!("  tls (keyed ids)  {}", m.tls.describe("µs")))
            .note(format!("  plaintext        {}", m.plaintext.describe("µs")))
            .note(format!("  ratio tls/plaintext {:.2}", m.ratio()));
    }
    let per_round = args.creations / args.rounds;
    Ok(report
        .note(format!(
            "{} rounds of {per_round} sequential creations of an Echo on a serve-node child \
             per mode after {} warm-up, from a worker task; pinned_* keys have everything on CPU 0",
            args.rounds, args.warmup
        ))
        .with_figure("p99", unpinned.tls.p99)
        .with_figure("baseline_p99", unpinned.plaintext.p99)
        .with_figure("pinned_value", pinned.tls.median)
        .with_figure("pinned_p99", pinned.tls.p99)
        .with_figure("pinned_baseline_value", pinned.plaintext.median)
        .with_figure("pinned_ratio", pinned.ratio())
        .with("creations", per_round * args.rounds))
}
