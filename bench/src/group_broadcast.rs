//! `group-broadcast`: one group call reaching every member, all results
//! awaited.
//!
//! Four `serve-node` children host sixteen `Echo` objects each; the 64
//! proxies form a [`Group`], and the benchmark times
//! `group.broadcast(|p| p.ping()).wait_all()` from a worker task. The
//! baseline issues 64 plain tonic unary calls at once, sixteen to each of
//! four `serve-echo` children (one channel per server, as actogrid keeps
//! one connection per runtime), and awaits them all. Rounds alternate the
//! two. Measured unpinned only: four servers on one CPU would measure the
//! scheduler rather than the call path.

use std::time::Instant;

use actogrid_builtin::EchoProxy;
use actogrid_runtime::{Group, NodeUrl, Runtime, wait_all};
use anyhow::{Context as _, ensure};
use tonic::transport::Channel;

use crate::baseline::proto::Msg;
use crate::baseline::proto::echo_client::EchoClient;
use crate::baseline::{self};
use crate::child::{Child, Mode};
use crate::report::Report;
use crate::timing::Summary;

/// Options of `group-broadcast`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Server processes (nodes, and echo servers for the baseline).
    #[arg(long, default_value_t = 4)]
    servers: usize,
    /// Objects per node (calls per echo server).
    #[arg(long, default_value_t = 16)]
    per_server: usize,
    /// Timed broadcasts per side, split over the rounds.
    #[arg(long, default_value_t = 3_000)]
    broadcasts: usize,
    /// Untimed broadcasts per side before the rounds.
    #[arg(long, default_value_t = 300)]
    warmup: usize,
    /// Rounds, alternating the two sides.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.broadcasts >= args.rounds,
        "--broadcasts must be at least --rounds"
    );
    ensure!(
        args.servers > 0 && args.per_server > 0,
        "need at least one object"
    );
    let members = args.servers * args.per_server;

    let rt = Runtime::builder().build();
    let mut nodes = Vec::new();
    let mut echoes = Vec::new();
    for _ in 0..args.servers {
        nodes.push(Child::node(Mode::Unpinned, &rt)?);
        echoes.push(Child::spawn(&["serve-echo"], Mode::Unpinned)?);
    }

    let mut proxies = Vec::with_capacity(members);
    for server in &nodes {
        let url: NodeUrl = format!("actogrid://{}/bench", server.address()).parse()?;
        let node = rt.node(&url);
        let per_server = args.per_server;
        let created =
            tokio::spawn(
                async move { wait_all((0..per_server).map(|_| EchoProxy::new(&node))).await },
            )
            .await?;
        for proxy in created {
            proxies.push(proxy.context("cannot create an Echo object")?);
        }
    }
    let group = Group::new(proxies);
    let mut clients = Vec::new();
    for server in &echoes {
        clients.push(baseline::echo_client(server.address()).await?);
    }

    let mut sides = [Side::Actogrid(group), Side::Tonic(clients, args.per_server)];
    let mut samples: [Vec<f64>; 2] = Default::default();
    for side in &mut sides {
        side.series(args.warmup).await?;
    }
    let per_round = args.broadcasts / args.rounds;
    for round in 0..args.rounds {
        for k in 0..sides.len() {
            let i = (round + k) % sides.len();
            samples[i].extend(sides[i].series(per_round).await?);
        }
    }
    rt.shutdown();
    let [actogrid, tonic] = samples.map(|s| Summary::of(&s));

    Ok(Report::new(
        "group-broadcast",
        "µs",
        actogrid.median,
        actogrid.p90,
        format!(
            "{members} concurrent plain tonic unary calls to {} servers",
            args.servers
        ),
        tonic.median,
    )
    .note(format!(
        "{members} objects ({} nodes x {}), {} rounds of {per_round} broadcasts per side \
         after {} warm-up, unpinned only",
        args.servers, args.per_server, args.rounds, args.warmup
    ))
    .note(format!("actogrid broadcast  {}", actogrid.describe("µs")))
    .note(format!("tonic 64 unary      {}", tonic.describe("µs")))
    .with_figure("p99", actogrid.p99)
    .with_figure("baseline_p99", tonic.p99)
    .with("members", members)
    .with("mode", "unpinned"))
}

/// One side of the comparison.
enum Side {
    Actogrid(Group<EchoProxy>),
    /// One client per server, and the calls per server.
    Tonic(Vec<EchoClient<Channel>>, usize),
}

impl Side {
    /// Times `count` broadcasts on a worker task, in microseconds.
    async fn series(&self, count: usize) -> anyhow::Result<Vec<f64>> {
        let task = match self {
            Side::Actogrid(group) => {
                let group = group.clone();
                tokio::spawn(async move {
                    let mut samples = Vec::with_capacity(count);
                    for _ in 0..count {
                        let start = Instant::now();
                        let results = group.broadcast(|p| p.ping()).wait_all().await;
                        samples.push(start.elapsed().as_secs_f64() * 1e6);
                        for r in results {
                            r.context("a member failed")?;
                        }
                    }
                    Ok(samples)
                })
            }
            Side::Tonic(clients, per_server) => {
                let clients = clients.clone();
                let per_server = *per_server;
                tokio::spawn(async move {
                    let mut samples = Vec::with_capacity(count);
                    for _ in 0..count {
                        let start = Instant::now();
                        let calls = clients.iter().flat_map(|c| {
                            (0..per_server).map(move |_| {
                                let mut c = c.clone();
                                async move { c.unary(Msg::default()).await }
                            })
                        });
                        let results = futures::future::join_all(calls).await;
                        samples.push(start.elapsed().as_secs_f64() * 1e6);
                        for r in results {
                            r.context("a unary call failed")?;
                        }
                    }
                    Ok(samples)
                })
            }
        };
        task.await.context("the measuring task panicked")?
    }
}
