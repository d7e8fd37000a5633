//! `node-memory`: resident memory of a node, idle and per hosted object.
//!
//! A `serve-node` child is started; its RSS (`VmRSS`) is read fresh, then
//! once idle after serving the creation of one `Echo` object (the idle
//! figure: a node that has a connection and a mailbox), then after 10,000
//! more objects were created on it in batches and the node settled. The
//! baseline is a `serve-echo` child, a plain tonic server, idle after
//! serving one unary call. Measured unpinned.

use std::time::Duration;

use actogrid_builtin::EchoProxy;
use actogrid_runtime::{NodeUrl, Runtime, wait_all};
use anyhow::{Context as _, ensure};

use crate::baseline;
use crate::child::{Child, Mode, rss_kib};
use crate::report::Report;

/// The goal for an idle node, in MiB.
const TARGET_IDLE_MIB: f64 = 15.0;
/// The goal per object, in KiB.
const TARGET_KIB_PER_OBJECT: f64 = 2.0;

/// Options of `node-memory`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Objects created after the idle reading.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Creations awaited together.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Pause before each reading, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    settle_ms: u64,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(
        args.objects > 0 && args.batch > 0,
        "--objects and --batch must be positive"
    );
    let settle = Duration::from_millis(args.settle_ms);
    let rt = Runtime::builder().build();
    let node_server = Child::node(Mode::Unpinned, &rt)?;
    let echo_server = Child::spawn(&["serve-echo"], Mode::Unpinned)?;
    tokio::time::sleep(settle).await;
    let fresh_node = rss_kib(node_server.pid())?;
    let fresh_echo = rss_kib(echo_server.pid())?;

    let url: NodeUrl = format!("actogrid://{}/bench", node_server.address()).parse()?;
    let node = rt.node(&url);
    let first = {
        let node = node.clone();
        tokio::spawn(async move { EchoProxy::new(&node).await })
            .await?
            .context("cannot create the first Echo object")?
    };
    let mut client = baseline::echo_client(echo_server.address()).await?;
    tokio::spawn(async move { baseline::unary(&mut client).await.map(|()| client) }).await??;
    tokio::time::sleep(settle).await;
    let idle_node = rss_kib(node_server.pid())?;
    let idle_echo = rss_kib(echo_server.pid())?;

    let (objects, batch) = (args.objects, args.batch);
    let proxies = tokio::spawn(async move {
        let mut proxies = Vec::with_capacity(objects);
        while proxies.len() < objects {
            let n = batch.min(objects - proxies.len());
            for created in wait_all((0..n).map(|_| EchoProxy::new(&node))).await {
                proxies.push(created.context("cannot create an Echo object")?);
            }
        }
        anyhow::Ok(proxies)
    })
    .await??;
    tokio::time::sleep(settle).await;
    let loaded_node = rss_kib(node_server.pid())?;
    // The objects are alive and serving.
    let last = proxies.last().context("no object")?.clone();
    tokio::spawn(async move { last.ping().await }).await??;
    tokio::spawn(async move { first.ping().await }).await??;
    drop(proxies);
    rt.shutdown();

    let mib = |kib: u64| kib as f64 / 1024.0;
    let per_object = (loaded_node as f64 - idle_node as f64) / objects as f64;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    Ok(Report::new(
        "node-memory",
        "MiB",
        mib(idle_node),
        mib(idle_node),
        "idle plain tonic server RSS",
        mib(idle_echo),
    )
    .note(format!(
        "node RSS: fresh {:.2} MiB, idle after one object {:.2} MiB, with {} more objects \
         {:.2} MiB",
        mib(fresh_node),
        mib(idle_node),
        objects,
        mib(loaded_node)
    ))
    .note(format!(
        "tonic echo server RSS: fresh {:.2} MiB, idle after one call {:.2} MiB",
        mib(fresh_echo),
        mib(idle_echo)
    ))
    .note(format!(
        "per object: {per_object:.3} KiB (created in batches of {batch}, readings after \
         {} ms pauses); value is the idle RSS, p90 is the same single reading",
        args.settle_ms
    ))
    .note(format!(
        "targets: idle <= {TARGET_IDLE_MIB} MiB: {}, <= {TARGET_KIB_PER_OBJECT} KiB per object: {}",
        met(mib(idle_node) <= TARGET_IDLE_MIB),
        met(per_object <= TARGET_KIB_PER_OBJECT)
    ))
    .with_figure("kib_per_object", per_object)
    .with_figure("fresh_mib", mib(fresh_node))
    .with_figure("loaded_mib", mib(loaded_node))
    .with_figure("baseline_fresh_mib", mib(fresh_echo))
    .with("objects", objects)
    .with("mode", "unpinned")
    .with("target", format!("idle <= {TARGET_IDLE_MIB} MiB"))
    .with(
        "target_per_object",
        format!("<= {TARGET_KIB_PER_OBJECT} KiB per object"),
    )
    .with("target_met", mib(idle_node) <= TARGET_IDLE_MIB)
    .with("target_per_object_met", per_object <= TARGET_KIB_PER_OBJECT))
}
