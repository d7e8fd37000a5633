//! `deploy-local`: a deployment of 64 local runtimes, from `activate()`
//! until every node has answered one call, against starting the same 64
//! processes bare (this binary's `serve-node`, waited for until each
//! serves) in the same run. Rounds alternate the two sides.
//!
//! The runtimes are this benchmark binary in node mode: its `main` starts
//! with `actogrid::serve_if_deployed()`, as every application's does.

use std::time::{Duration, Instant};

use actogrid::{DeployOptions, Runtime};
use anyhow::ensure;

use crate::child::{Child, Mode};
use crate::deployment;
use crate::report::Report;
use crate::timing::Summary;

/// Options of `deploy-local`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Runtimes per deployment.
    #[arg(long, default_value_t = 64)]
    runtimes: usize,
    /// Timed rounds per side.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// A descriptor of `runtimes` local runtimes of one node each.
pub(crate) fn descriptor(runtimes: usize) -> String {
    deployment::descriptor(
        runtimes,
        "p",
        r#"<processDefinition id="p"><jvmProcess/></processDefinition>"#,
    )
}

async fn deploy_once(rt: &Runtime, path: &std::path::Path, runtimes: usize) -> anyhow::Result<f64> {
    deployment::deploy_until_answered(rt, path, DeployOptions::default(), runtimes).await
}

/// The same processes, bare: started in parallel, each waited for until
/// it serves; then stopped (not timed).
fn bare_once(rt: &Runtime, runtimes: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let children: Vec<anyhow::Result<Child>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..runtimes)
            .map(|_| s.spawn(|| Child::node(Mode::Unpinned, rt)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("spawner panicked")))
            })
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    for c in children {
        c?;
    }
    Ok(elapsed)
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(
        args.rounds > 0 && args.runtimes > 0,
        "need rounds and runtimes"
    );
    let dir = std::env::temp_dir().join(format!("actogrid-bench-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("local.xml");
    std::fs::write(&path, descriptor(args.runtimes))?;
    let rt = Runtime::bind("127.0.0.1:0", actogrid::Config::default()).await?;
    let runtimes = args.runtimes;
    let result = async {
        // Warm-up: the page cache and the first connections.
        deploy_once(&rt, &path, runtimes).await?;
        tokio::task::spawn_blocking({
            let rt = rt.clone();
            move || bare_once(&rt, runtimes)
        })
        .await??;
        let mut deploys = Vec::new();
        let mut bares = Vec::new();
        for _ in 0..args.rounds {
            deploys.push(deploy_once(&rt, &path, runtimes).await?);
            bares.push(
                tokio::task::spawn_blocking({
                    let rt = rt.clone();
                    move || bare_once(&rt, runtimes)
                })
                .await??,
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<_, anyhow::Error>((deploys, bares))
    }
    .await;
    rt.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let (deploys, bares) = result?;
    let d = Summary::of(&deploys);
    let b = Summary::of(&bares);
    Ok(Report::new(
        "deploy-local",
        "ms",
        d.median,
        d.p90,
        format!("{runtimes} bare serve-node processes started in parallel"),
        b.median,
    )
    .with("runtimes", runtimes)
    .note(format!("deployment: {}", d.describe("ms")))
    .note(format!("bare processes: {}", b.describe("ms"))))
}
