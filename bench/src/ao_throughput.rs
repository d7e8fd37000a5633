//! `ao-throughput`: calls per second from one caller pipelining empty
//! calls to one remote active object.
//!
//! A worker task keeps a window of W `echo.ping()` calls in flight on an
//! `Echo` object of a `serve-node` child: it awaits the oldest call (the
//! object answers in order) and replaces each answer by a new call. The baseline is the cheapest pipelining plain tonic offers: one
//! bidirectional `Stream` to a `serve-echo` child, a sender task pushing
//! empty messages while fewer than W are unanswered and a receiver
//! counting the replies. Several windows are tried and the best of each
//! side is reported; rounds alternate between the two sides, unpinned and
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

/// The goal in calls per second.
const TARGET_RATE: f64 = 1_000_000.0;
/// The goal as a fraction of the tonic stream's rate.
const TARGET_RATIO: f64 = 0.30;
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
    /// Rounds per window and side, alternating the sides.
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
    actogrid: Rates,
    tonic: Rates,
    all: Vec<(Rates, Rates)>,
}

impl Measured {
    fn ratio(&self) -> f64 {
        self.actogrid.median() / self.tonic.median()
    }
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        !args.windows.is_empty() && args.windows.iter().all(|&w| w > 0),
        "--windows must list positive sizes"
    );
    ensure!(args.seconds > 0.0, "--seconds must be positive");
    let rt = Runtime::builder().build();
    let unpinned = measure(&rt, Mode::Unpinned, args).await?;
    let pinned = measure(&rt, Mode::Pinned, args).await?;
    rt.shutdown();

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
        for (a, t) in &m.all {
            report = report.note(format!(
                "  W={:<5} actogrid {:>10.0} calls/s   tonic stream {:>10.0} msgs/s",
                a.window,
                a.median(),
                t.median()
            ));
        }
        report = report.note(format!(
            "  best: actogrid {:.0} calls/s (W={}), tonic stream {:.0} msgs/s (W={}), \
             ratio {:.2} (targets >= {TARGET_RATE:.0} calls/s: {}, >= {TARGET_RATIO:.2}x: {})",
            m.actogrid.median(),
            m.actogrid.window,
            m.tonic.median(),
            m.tonic.window,
            m.ratio(),
            met(m.actogrid.median() >= TARGET_RATE),
            met(m.ratio() >= TARGET_RATIO),
        ));
    }
    Ok(report
        .note(format!(
            "each figure: median of {} rounds of {:.1} s, sides alternating, after {:.1} s \
             warm-up; the p90 key is the slowest round; value/baseline are unpinned",
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
        .with(
            "mode",
            "value: unpinned; pinned_*: bench and servers on CPU 0",
        )
        .with("target", format!(">= {TARGET_RATE:.0} calls/s"))
        .with("target_ratio", format!(">= {TARGET_RATIO:.2}x"))
        .with("target_met", unpinned.actogrid.median() >= TARGET_RATE)
        .with("target_ratio_met", unpinned.ratio() >= TARGET_RATIO)
        .with("pinned_target_met", pinned.actogrid.median() >= TARGET_RATE)
        .with("pinned_target_ratio_met", pinned.ratio() >= TARGET_RATIO))
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// Starts the servers in `mode` and measures every window.
async fn measure(rt: &Runtime, mode: Mode, args: &Args) -> anyhow::Result<Measured> {
    let node_server = Child::node(mode, rt)?;
    let echo_server = Child::spawn(&["serve-echo"], mode)?;
    let _placed = mode.place_self()?;

    let echo = node_server.echo_object(rt).await?;
    let client = baseline::echo_client(echo_server.address()).await?;

    let round = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);
    let first = args.windows[0];
    actogrid_rate(&echo, first, warmup).await?;
    tonic_rate(&client, first, warmup).await?;

    let mut all = Vec::new();
    for &window in &args.windows {
        let mut a = Rates {
            window,
            rounds: Vec::new(),
        };
        let mut t = a.clone();
        for i in 0..args.rounds {
            if i % 2 == 0 {
                a.rounds.push(actogrid_rate(&echo, window, round).await?);
                t.rounds.push(tonic_rate(&client, window, round).await?);
            } else {
                t.rounds.push(tonic_rate(&client, window, round).await?);
                a.rounds.push(actogrid_rate(&echo, window, round).await?);
            }
        }
        all.push((a, t));
    }
    let best = |side: fn(&(Rates, Rates)) -> &Rates| {
        all.iter()
            .map(side)
            .max_by(|x, y| x.median().total_cmp(&y.median()))
            .cloned()
            .context("no window")
    };
    Ok(Measured {
        actogrid: best(|p| &p.0)?,
        tonic: best(|p| &p.1)?,
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
