//! `ao-rtt`: the round trip of an empty method call on a remote active
//! object, one call in flight.
//!
//! The benchmark creates a built-in `Echo` object on a `serve-node` child
//! and times `echo.ping().await` in a loop, from a tokio worker task. The
//! baseline is a plain tonic unary call with an empty message to a
//! `serve-echo` child, timed the same way; a plain TCP ping-pong to a
//! `serve-tcp` child is printed as a second reference (the floor of any
//! round trip). The three loops alternate over several rounds so that
//! drift on a shared machine hits them alike, and everything is measured
//! twice: unpinned, and with the benchmark and its servers on CPU 0.

use std::time::Instant;

use actogrid_builtin::EchoProxy;
use actogrid_runtime::Runtime;
use anyhow::{Context as _, ensure};
use tonic::transport::Channel;

use crate::baseline::proto::echo_client::EchoClient;
use crate::baseline::{self, PingPong};
use crate::child::{Child, Mode};
use crate::report::Report;
use crate::timing::Summary;

/// The goal: the actogrid round trip costs no more than a tonic unary call.
const TARGET_RATIO: f64 = 1.0;

/// Options of `ao-rtt`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Timed calls per target and mode, split over the rounds.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Untimed calls per target and mode, before the rounds.
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
    /// Rounds, each timing every target in turn.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Size of the TCP ping-pong messages, in bytes (1 to 64).
    #[arg(long, default_value_t = 1)]
    tcp_bytes: usize,
}

/// What is timed: one of the three round trips.
enum Target {
    Actogrid(EchoProxy),
    Tonic(EchoClient<Channel>),
    Tcp(PingPong),
}

impl Target {
    async fn call(&mut self) -> anyhow::Result<()> {
        match self {
            Target::Actogrid(echo) => echo.ping().await.context("ping failed"),
            Target::Tonic(client) => baseline::unary(client).await,
            Target::Tcp(tcp) => tcp.round_trip().await,
        }
    }

    /// Makes `calls` calls on a worker task; returns the target and the
    /// round trips in microseconds.
    async fn series(self, calls: usize) -> anyhow::Result<(Target, Vec<f64>)> {
        tokio::spawn(async move {
            let mut target = self;
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                target.call().await?;
                samples.push(start.elapsed().as_secs_f64() * 1e6);
            }
            Ok((target, samples))
        })
        .await
        .context("a measuring task panicked")?
    }
}

/// The three summaries of one mode.
struct Measured {
    actogrid: Summary,
    tonic: Summary,
    tcp: Summary,
}

impl Measured {
    fn ratio(&self) -> f64 {
        self.actogrid.median / self.tonic.median
    }
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.calls >= args.rounds,
        "--calls must be at least --rounds"
    );
    let rt = Runtime::builder().build();
    let unpinned = measure(&rt, Mode::Unpinned, args).await?;
    let pinned = measure(&rt, Mode::Pinned, args).await?;
    rt.shutdown();

    let met = |m: &Measured| {
        if m.ratio() <= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        }
    };
    let mut report = Report::new(
        "ao-rtt",
        "µs",
        unpinned.actogrid.median,
        unpinned.actogrid.p90,
        "plain tonic unary echo (empty message)",
        unpinned.tonic.median,
    );
    for (mode, m) in [(Mode::Unpinned, &unpinned), (Mode::Pinned, &pinned)] {
        report = report
            .note(format!("{}:", mode.name()))
            .note(format!("  actogrid ping    {}", m.actogrid.describe("µs")))
            .note(format!("  tonic unary      {}", m.tonic.describe("µs")))
            .note(format!("  tcp ping-pong    {}", m.tcp.describe("µs")))
            .note(format!(
                "  ratio actogrid/tonic {:.2} (target <= {TARGET_RATIO:.1}x: {})",
                m.ratio(),
                met(m)
            ));
    }
    let per_round = args.calls / args.rounds;
    Ok(report
        .note(format!(
            "{} rounds of {per_round} sequential calls per target after {} warm-up, \
             from a worker task; value/baseline/ratio below are unpinned, pinned_* keys \
             have everything on CPU 0",
            args.rounds, args.warmup
        ))
        .with_figure("p99", unpinned.actogrid.p99)
        .with_figure("baseline_p99", unpinned.tonic.p99)
        .with_figure("tcp_value", unpinned.tcp.median)
        .with_figure("tcp_p99", unpinned.tcp.p99)
        .with_figure("pinned_value", pinned.actogrid.median)
        .with_figure("pinned_p90", pinned.actogrid.p90)
        .with_figure("pinned_p99", pinned.actogrid.p99)
        .with_figure("pinned_baseline_value", pinned.tonic.median)
        .with_figure("pinned_baseline_p99", pinned.tonic.p99)
        .with_figure("pinned_ratio", pinned.ratio())
        .with_figure("pinned_tcp_value", pinned.tcp.median)
        .with_figure("pinned_tcp_p99", pinned.tcp.p99)
        .with(
            "mode",
            "value: unpinned; pinned_*: bench and servers on CPU 0",
        )
        .with("calls", per_round * args.rounds)
        .with("tcp_bytes", args.tcp_bytes)
        .with("target", format!("<= {TARGET_RATIO:.1}x tonic unary"))
        .with("target_met", unpinned.ratio() <= TARGET_RATIO)
        .with("pinned_target_met", pinned.ratio() <= TARGET_RATIO))
}

/// Starts the three servers in `mode` and times the three round trips.
async fn measure(rt: &Runtime, mode: Mode, args: &Args) -> anyhow::Result<Measured> {
    let node_server = Child::node(mode, rt)?;
    let echo_server = Child::spawn(&["serve-echo"], mode)?;
    let tcp_server = Child::spawn(&["serve-tcp"], mode)?;
    let _placed = mode.place_self()?;

    let echo = node_server.echo_object(rt).await?;
    let client = baseline::echo_client(echo_server.address()).await?;
    let tcp = PingPong::connect(tcp_server.address(), args.tcp_bytes).await?;
    let mut targets = [
        Some(Target::Actogrid(echo)),
        Some(Target::Tonic(client)),
        Some(Target::Tcp(tcp)),
    ];

    let mut samples: [Vec<f64>; 3] = Default::default();
    for slot in &mut targets {
        let (back, _) = slot
            .take()
            .context("no target")?
            .series(args.warmup)
            .await?;
        *slot = Some(back);
    }
    let per_round = args.calls / args.rounds;
    for round in 0..args.rounds {
        // Rotate who goes first, so no target always follows the same one.
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            let target = targets[i].take().context("no target")?;
            let (back, timed) = target.series(per_round).await?;
            targets[i] = Some(back);
            samples[i].extend(timed);
        }
    }
    let [actogrid, tonic, tcp] = samples.map(|s| Summary::of(&s));
    Ok(Measured {
        actogrid,
        tonic,
        tcp,
    })
}
