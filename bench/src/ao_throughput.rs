//! `ao-throughput`: calls per second from one caller pipelining empty
//! calls to one remote active object.
//!
//! A worker task keeps a window of W `echo.ping()` calls in flight on an
//! `Echo` object of a `serve-node` child: it awaits the oldest call (the
//! object answers in order) and replaces each answer by a new call. This
//! is measured twice, over mutual TLS (the default) and in plaintext, each
//! against a node of its own. The baseline is the cheapest pipelining plain
//! tonic offers: one bidirectional `Stream` to a `serve-echo` child, a
//! sender task pushing empty messages while fewer than W are unanswered and
//! a receiver counting the replies. Several windows are tried and the best
//! of each side is reported; rounds rotate the three sides, unpinned and
//! then with everything on CPU 0.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actogrid_builtin::EchoProxy;
use actogrid_runtime::Runtime;
use anyhow::{Context as _, bail, ensure};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::baseline::proto::Msg;
use crate::baseline::proto::echo_client::EchoClient;
use crate::baseline::{self};
use crate::child::{Child, Mode};
use crate::report::Report;
use crate::security;

/// The goal in calls per second.
const TARGET_RATE: f64 = 1_000_000.0;
/// The goal as a fraction of the tonic stream's rate.
const TARGET_RATIO: f64 = 0.30;
/// The goal for TLS, as a fraction of the plaintext rate.
const TLS_TARGET_RATIO: f64 = 0.8;
/// Completions between two looks at the clock.
const CLOCK_EVERY: u64 = 256;

/// Options of `ao-throughput`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Calls kept in flight; every window is tried (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1024, 4096])]
    windows: Vec<usize>,
    /// Length of one timed round, in seconds.
    #[arg(long, default_value_t = 0.8)]
    seconds: f64,
    /// Rounds per window and side, rotating the sides.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Untimed run of each side before the rounds, in seconds.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
}

/// The rates of one side at one window, in calls (messages) per second.
#[derive(Debug, Clone)]
struct Rates {
    window: usize,
    rounds: Vec<f64>,
}

impl Rates {
    fn median(&self) -> f64 {
        let mut sorted = self.rounds.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        }
    }

    fn slowest(&self) -> f64 {
        self.rounds.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// The best window of each side in one mode, and every window tried.
struct Measured {
    /// actogrid over mutual TLS (the default).
    actogrid: Rates,
    /// actogrid in plaintext.
    plaintext: Rates,
    tonic: Rates,
    /// Per window: TLS, plaintext, tonic.
    all: Vec<[Rates; 3]>,
}

impl Measured {
    /// TLS actogrid / tonic stream.
    fn ratio(&self) -> f64 {
        self.actogrid.median() / self.tonic.median()
    }

    /// Plaintext actogrid / tonic stream.
    fn plaintext_ratio(&self) -> f64 {
        self.plaintext.median() / self.tonic.median()
    }

    /// What TLS keeps: TLS actogrid / plaintext actogrid.
    fn tls_ratio(&self) -> f64 {
        self.actogrid.median() / self.plaintext.median()
    }
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        !args.windows.is_empty() && args.windows.iter().all(|&w| w > 0),
        "--windows must list positive sizes"
    );
    ensure!(args.seconds > 0.0, "--seconds must be positive");
    let (unpinned, pinned) =
        security::in_both_modes(async |runtimes, mode| measure(runtimes, mode, args).await).await?;

    let mut report = Report::new(
        "ao-throughput",
        "calls/s",
        unpinned.actogrid.median(),
        unpinned.actogrid.slowest(),
        "plain tonic bidi-stream echo, messages/s",
        unpinned.tonic.median(),
    );
    for (mode, m) in [(Mode::Unpinned, &unpinned), (Mode::Pinned, &pinned)] {
        report = report.note(format!("{}:", mode.name()));
        for [a, p, t] in &m.all {
            report = report.note(format!(
                "  W={:<5} actogrid tls {:>10.0} calls/s   plaintext {:>10.0} calls/s   \
                 tonic stream {:>10.0} msgs/s",
                a.window,
                a.median(),
                p.median(),
                t.median()
            ));
        }
        report = report
            .note(format!(
                "  best: actogrid tls {:.0} calls/s (W={}), plaintext {:.0} calls/s (W={}), \
                 tonic stream {:.0} msgs/s (W={})",
                m.actogrid.median(),
                m.actogrid.window,
                m.plaintext.median(),
                m.plaintext.window,
                m.tonic.median(),
                m.tonic.window,
            ))
            .note(format!(
                "  ratio actogrid/tonic {:.2} tls, {:.2} plaintext (targets >= \
                 {TARGET_RATE:.0} calls/s: {} tls, {} plaintext; >= {TARGET_RATIO:.2}x: {} tls, \
                 {} plaintext)",
                m.ratio(),
                m.plaintext_ratio(),
                met(m.actogrid.median() >= TARGET_RATE),
                met(m.plaintext.median() >= TARGET_RATE),
                met(m.ratio() >= TARGET_RATIO),
                met(m.plaintext_ratio() >= TARGET_RATIO),
            ))
            .note(format!(
                "  ratio tls/plaintext  {:.2} (target >= {TLS_TARGET_RATIO:.1}x: {})",
                m.tls_ratio(),
                met(m.tls_ratio() >= TLS_TARGET_RATIO)
            ));
    }
    Ok(report
        .note(format!(
            "each figure: median of {} rounds of {:.1} s, sides rotating, after {:.1} s \
             warm-up; the p90 key is the slowest round; value/baseline are TLS actogrid \
             unpinned, plaintext_* keys actogrid without TLS",
            args.rounds, args.seconds, args.warmup
        ))
        .with("window", unpinned.actogrid.window)
        .with("baseline_window", unpinned.tonic.window)
        .with_figure("pinned_value", pinned.actogrid.median())
        .with_figure("pinned_p90", pinned.actogrid.slowest())
        .with_figure("pinned_baseline_value", pinned.tonic.median())
        .with_figure("pinned_ratio", pinned.ratio())
        .with("pinned_window", pinned.actogrid.window)
        .with("pinned_baseline_window", pinned.tonic.window)
        .with_figure("plaintext_value", unpinned.plaintext.median())
        .with_figure("plaintext_p90", unpinned.plaintext.slowest())
        .with_figure("plaintext_ratio", unpinned.plaintext_ratio())
        .with("plaintext_window", unpinned.plaintext.window)
        .with_figure("tls_plaintext_ratio", unpinned.tls_ratio())
        .with_figure("pinned_plaintext_value", pinned.plaintext.median())
        .with_figure("pinned_plaintext_p90", pinned.plaintext.slowest())
        .with_figure("pinned_plaintext_ratio", pinned.plaintext_ratio())
        .with("pinned_plaintext_window", pinned.plaintext.window)
        .with_figure("pinned_tls_plaintext_ratio", pinned.tls_ratio())
        .with(
            "mode",
            "value: TLS, unpinned; plaintext_*: no TLS; pinned_*: bench and servers on CPU 0",
        )
        .with("target", format!(">= {TARGET_RATE:.0} calls/s"))
        .with("target_ratio", format!(">= {TARGET_RATIO:.2}x"))
        .with("target_met", unpinned.actogrid.median() >= TARGET_RATE)
        .with("target_ratio_met", unpinned.ratio() >= TARGET_RATIO)
        .with("pinned_target_met", pinned.actogrid.median() >= TARGET_RATE)
        .with("pinned_target_ratio_met", pinned.ratio() >= TARGET_RATIO)
        .with("tls_target", format!(">= {TLS_TARGET_RATIO:.1}x plaintext"))
        .with("tls_target_met", unpinned.tls_ratio() >= TLS_TARGET_RATIO)
        .with(
            "pinned_tls_target_met",
            pinned.tls_ratio() >= TLS_TARGET_RATIO,
        ))
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// One side of the comparison, measured for a window and a duration.
enum Side<'a> {
    Actogrid(&'a EchoProxy),
    Tonic(&'a EchoClient<Channel>),
}

impl Side<'_> {
    async fn rate(&self, window: usize, duration: Duration) -> anyhow::Result<f64> {
        match self {
            Side::Actogrid(echo) => actogrid_rate(echo, window, duration).await,
            Side::Tonic(client) => tonic_rate(client, window, duration).await,
        }
    }
}

/// Starts the servers in `mode` (a node of each runtime's domain, the
/// tonic echo) and measures every window.
async fn measure(runtimes: [&Runtime; 2], mode: Mode, args: &Args) -> anyhow::Result<Measured> {
    let [tls, plaintext] = runtimes;
    let tls_server = Child::node(mode, tls)?;
    let plaintext_server = Child::node(mode, plaintext)?;
    let echo_server = Child::spawn(&["serve-echo"], mode)?;
    let _placed = mode.place_self()?;

    let tls_echo = tls_server.echo_object(tls).await?;
    let plaintext_echo = plaintext_server.echo_object(plaintext).await?;
    let client = baseline::echo_client(echo_server.address()).await?;
    let sides = [
        Side::Actogrid(&tls_echo),
        Side::Actogrid(&plaintext_echo),
        Side::Tonic(&client),
    ];

    let round = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);
    let first = args.windows[0];
    for side in &sides {
        side.rate(first, warmup).await?;
    }

    let mut all = Vec::new();
    for &window in &args.windows {
        let mut rates: [Rates; 3] = std::array::from_fn(|_| Rates {
            window,
            rounds: Vec::new(),
        });
        for i in 0..args.rounds {
            // Rotate who goes first, so no side always follows the same one.
            for k in 0..sides.len() {
                let s = (i + k) % sides.len();
                rates[s].rounds.push(sides[s].rate(window, round).await?);
            }
        }
        all.push(rates);
    }
    let best = |side: usize| {
        all.iter()
            .map(|rates| &rates[side])
            .max_by(|x, y| x.median().total_cmp(&y.median()))
            .cloned()
            .context("no window")
    };
    Ok(Measured {
        actogrid: best(0)?,
        plaintext: best(1)?,
        tonic: best(2)?,
        all,
    })
}

/// Calls per second with `window` pings in flight for `duration`, on a
/// worker task. The calls wait in the order they were made and the oldest
/// is awaited: an object serves its requests in order, so its answer is
/// the next to come, and each answer is replaced by a new call.
async fn actogrid_rate(echo: &EchoProxy, window: usize, duration: Duration) -> anyhow::Result<f64> {
    let echo = echo.clone();
    tokio::spawn(async move {
        let mut in_flight: VecDeque<_> = (0..window).map(|_| echo.ping()).collect();
        let start = Instant::now();
        let mut done = 0u64;
        let elapsed = loop {
            let Some(oldest) = in_flight.pop_front() else {
                bail!("no call in flight");
            };
            oldest.await.context("ping failed")?;
            done += 1;
            if done % CLOCK_EVERY == 0 {
                let elapsed = start.elapsed();
                if elapsed >= duration {
                    break elapsed;
                }
            }
            in_flight.push_back(echo.ping());
        };
        for call in in_flight {
            call.await.context("ping failed")?;
        }
        Ok(done as f64 / elapsed.as_secs_f64())
    })
    .await
    .context("the measuring task panicked")?
}

/// Messages per second echoed on one tonic stream with at most `window`
/// unanswered, for `duration`; sender and receiver are worker tasks.
async fn tonic_rate(
    client: &EchoClient<Channel>,
    window: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let mut client = client.clone();
    tokio::spawn(async move {
        let (tx, rx) = mpsc::channel::<Msg>(window);
        let credits = Arc::new(Semaphore::new(window));
        let stop = Arc::new(AtomicBool::new(false));
        let sender = tokio::spawn({
            let credits = credits.clone();
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(permit) = credits.acquire().await else {
                        break;
                    };
                    permit.forget();
                    if tx.send(Msg::default()).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut replies = client
            .stream(ReceiverStream::new(rx))
            .await
            .context("cannot open the echo stream")?
            .into_inner();
        let start = Instant::now();
        let mut done = 0u64;
        let elapsed = loop {
            if replies.message().await?.is_none() {
                bail!("the echo stream ended early");
            }
            credits.add_permits(1);
            done += 1;
            if done % CLOCK_EVERY == 0 {
                let elapsed = start.elapsed();
                if elapsed >= duration {
                    break elapsed;
                }
            }
        };
        stop.store(true, Ordering::Relaxed);
        credits.close();
        while replies.message().await?.is_some() {}
        sender.await.context("the sending task panicked")?;
        Ok(done as f64 / elapsed.as_secs_f64())
    })
    .await
    .context("the measuring task panicked")?
}
