//! `ao-rtt`: the round trip of an empty method call on a remote active
//! object, one call in flight.
//!
//! The benchmark creates a built-in `Echo` object on a `serve-node` child
//! and times `echo.ping().await` in a loop, from a tokio worker task; it
//! does so twice, over mutual TLS (the default) and in plaintext, each
//! against a node of its own. The baseline is a plain tonic unary call with
//! an empty message to a `serve-echo` child, timed the same way; a plain TCP
//! ping-pong to a `serve-tcp` child is printed as a second reference (the
//! floor of any round trip). The four loops alternate over several rounds
//! so that drift on a shared machine hits them alike, and everything is
//! measured twice: unpinned, and with the benchmark and its servers on
//! CPU 0.

use std::time::Instant;

use actogrid_builtin::EchoProxy;
use actogrid_runtime::Runtime;
use anyhow::{Context as _, ensure};
use tonic::transport::Channel;

use crate::baseline::proto::echo_client::EchoClient;
use crate::baseline::{self, PingPong};
use crate::child::{Child, Mode};
use crate::report::Report;
use crate::security;
use crate::timing::Summary;

/// The goal: the actogrid round trip costs no more than a tonic unary call.
const TARGET_RATIO: f64 = 1.0;
/// The goal for TLS: a round trip over TLS costs at most this many
/// plaintext ones.
const TLS_TARGET_RATIO: f64 = 1.3;

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

/// What is timed: one of the round trips.
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

/// The four summaries of one mode.
struct Measured {
    /// actogrid over mutual TLS (the default).
    actogrid: Summary,
    /// actogrid in plaintext.
    plaintext: Summary,
    tonic: Summary,
    tcp: Summary,
}

impl Measured {
    /// TLS actogrid / tonic unary.
    fn ratio(&self) -> f64 {
        self.actogrid.median / self.tonic.median
    }

    /// Plaintext actogrid / tonic unary.
    fn plaintext_ratio(&self) -> f64 {
        self.plaintext.median / self.tonic.median
    }

    /// What TLS costs: TLS actogrid / plaintext actogrid.
    fn tls_ratio(&self) -> f64 {
        self.actogrid.median / self.plaintext.median
    }
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.calls >= args.rounds,
        "--calls must be at least --rounds"
    );
    let (unpinned, pinned) =
        security::in_both_modes(async |runtimes, mode| measure(runtimes, mode, args).await).await?;

    let met = |ok: bool| if ok { "met" } else { "NOT met" };
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
            .note(format!("  actogrid tls     {}", m.actogrid.describe("µs")))
            .note(format!("  actogrid plain   {}", m.plaintext.describe("µs")))
            .note(format!("  tonic unary      {}", m.tonic.describe("µs")))
            .note(format!("  tcp ping-pong    {}", m.tcp.describe("µs")))
            .note(format!(
                "  ratio actogrid/tonic {:.2} tls, {:.2} plaintext (target <= {TARGET_RATIO:.1}x: \
                 {} tls, {} plaintext)",
                m.ratio(),
                m.plaintext_ratio(),
                met(m.ratio() <= TARGET_RATIO),
                met(m.plaintext_ratio() <= TARGET_RATIO),
            ))
            .note(format!(
                "  ratio tls/plaintext  {:.2} (target <= {TLS_TARGET_RATIO:.1}x: {})",
                m.tls_ratio(),
                met(m.tls_ratio() <= TLS_TARGET_RATIO)
            ));
    }
    let per_round = args.calls / args.rounds;
    Ok(report
        .note(format!(
            "{} rounds of {per_round} sequential calls per target after {} warm-up, \
             from a worker task; value/baseline/ratio below are TLS actogrid unpinned, \
             plaintext_* keys actogrid without TLS, pinned_* keys have everything on CPU 0",
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
        .with_figure("plaintext_value", unpinned.plaintext.median)
        .with_figure("plaintext_p90", unpinned.plaintext.p90)
        .with_figure("plaintext_p99", unpinned.plaintext.p99)
        .with_figure("plaintext_ratio", unpinned.plaintext_ratio())
        .with_figure("tls_plaintext_ratio", unpinned.tls_ratio())
        .with_figure("pinned_plaintext_value", pinned.plaintext.median)
        .with_figure("pinned_plaintext_p90", pinned.plaintext.p90)
        .with_figure("pinned_plaintext_p99", pinned.plaintext.p99)
        .with_figure("pinned_plaintext_ratio", pinned.plaintext_ratio())
        .with_figure("pinned_tls_plaintext_ratio", pinned.tls_ratio())
        .with(
            "mode",
            "value: TLS, unpinned; plaintext_*: no TLS; pinned_*: bench and servers on CPU 0",
        )
        .with("calls", per_round * args.rounds)
        .with("tcp_bytes", args.tcp_bytes)
        .with("target", format!("<= {TARGET_RATIO:.1}x tonic unary"))
        .with("target_met", unpinned.ratio() <= TARGET_RATIO)
        .with("pinned_target_met", pinned.ratio() <= TARGET_RATIO)
        .with("tls_target", format!("<= {TLS_TARGET_RATIO:.1}x plaintext"))
        .with("tls_target_met", unpinned.tls_ratio() <= TLS_TARGET_RATIO)
        .with(
            "pinned_tls_target_met",
            pinned.tls_ratio() <= TLS_TARGET_RATIO,
        ))
}

/// Starts the four servers in `mode` (a node of each runtime's domain, the
/// tonic echo, the TCP ping-pong) and times the four round trips.
async fn measure(runtimes: [&Runtime; 2], mode: Mode, args: &Args) -> anyhow::Result<Measured> {
    let [tls, plaintext] = runtimes;
    let tls_server = Child::node(mode, tls)?;
    let plaintext_server = Child::node(mode, plaintext)?;
    let echo_server = Child::spawn(&["serve-echo"], mode)?;
    let tcp_server = Child::spawn(&["serve-tcp"], mode)?;
    let _placed = mode.place_self()?;

    let tls_echo = tls_server.echo_object(tls).await?;
    let plaintext_echo = plaintext_server.echo_object(plaintext).await?;
    let client = baseline::echo_client(echo_server.address()).await?;
    let tcp = PingPong::connect(tcp_server.address(), args.tcp_bytes).await?;
    let mut targets = [
        Some(Target::Actogrid(tls_echo)),
        Some(Target::Actogrid(plaintext_echo)),
        Some(Target::Tonic(client)),
        Some(Target::Tcp(tcp)),
    ];

    let mut samples: [Vec<f64>; 4] = Default::default();
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
    let [actogrid, plaintext, tonic, tcp] = samples.map(|s| Summary::of(&s));
    Ok(Measured {
        actogrid,
        plaintext,
        tonic,
        tcp,
    })
}
