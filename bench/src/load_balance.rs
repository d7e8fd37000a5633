//! `load-balance`: a stream of independent tasks on active objects that
//! all start on 2 of 8 nodes, with the `actogrid.LoadBalancing` service
//! (value) and without it (baseline), in the same run.
//!
//! Each node is one local runtime (this binary) that models **one core**:
//! a task holds the runtime's single core permit for its duration, so a
//! node runs one task at a time whatever the machine has (on a 2-vCPU
//! machine, 8 real cores cannot be had). Both deployments are the same
//! descriptor, the baseline without the balancing service. The makespan
//! runs from the first task sent to the last result received; every
//! task's result must come back exactly once, and the objects' own
//! records must hold every task exactly once.

use std::collections::HashSet;
use std::time::Instant;

use actogrid::descriptor::LoadOptions;
use actogrid::{DeployOptions, Deployment, Group, Runtime};
use anyhow::{Context as _, ensure};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::report::Report;
use crate::timing::Summary;

/// The runtime's one modelled core.
static CORE: Semaphore = Semaphore::const_new(1);

/// Runs tasks on the modelled core and records which it ran.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Cruncher {
    done: Vec<u64>,
}

#[actogrid::active]
impl Cruncher {
    /// An idle cruncher.
    pub(crate) fn new() -> Self {
        Cruncher::default()
    }

    /// Task `id`: holds the core for `ms` milliseconds; returns `id`.
    pub(crate) async fn task(&mut self, id: u64, ms: u64) -> u64 {
        let _core = CORE.acquire().await;
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        self.done.push(id);
        id
    }

    /// The tasks it ran, in order.
    pub(crate) fn done(&self) -> Vec<u64> {
        self.done.clone()
    }
}

/// Options of `load-balance`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Nodes (runtimes).
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Nodes the objects are placed on at first.
    #[arg(long, default_value_t = 2)]
    loaded: usize,
    /// Active objects.
    #[arg(long, default_value_t = 16)]
    objects: usize,
    /// Tasks in the stream.
    #[arg(long, default_value_t = 640)]
    tasks: u64,
    /// Milliseconds each task holds its node's core.
    #[arg(long, default_value_t = 10)]
    task_ms: u64,
    /// Balancing period, milliseconds.
    #[arg(long, default_value_t = 100)]
    period: u64,
    /// Rounds (each: one balanced run and one baseline run).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

fn descriptor(nodes: usize, balanced: bool, period: u64) -> String {
    let (ids, lb) = if balanced {
        (
            "core lb",
            format!(
                r#"<technicalServiceDefinition id="lb" class="actogrid.LoadBalancing">
      <arg name="period" value="{period}"/>
    </technicalServiceDefinition>"#
            ),
        )
    } else {
        ("core", String::new())
    };
    format!(
        r#"<?xml version="1.0"?>
<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="Workers" property="multiple" timeout="120s" technicalServiceId="{ids}"/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    <mapping><map virtualNode="Workers"><jvmSet><vmName value="local"/></jvmSet></map></mapping>
    <jvms>
      <jvm name="local" runtimes="{nodes}"><creation><processReference refid="p"/></creation></jvm>
    </jvms>
  </deployment>
  <infrastructure>
    <processes><processDefinition id="p"><jvmProcess/></processDefinition></processes>
  </infrastructure>
  <technicalServices>
    <technicalServiceDefinition id="core" class="actogrid.Environment">
      <arg name="capacity" value="1"/>
    </technicalServiceDefinition>
    {lb}
  </technicalServices>
</ProActiveDescriptor>
"#
    )
}

/// One run: deploy, place every object on the first `loaded` nodes, send
/// every task, wait for every result; returns the makespan (ms).
async fn run_once(rt: &Runtime, path: &std::path::Path, args: &Args) -> anyhow::Result<f64> {
    let options = DeployOptions {
        runtime: Some(rt.clone()),
        progress: false,
        ..DeployOptions::default()
    };
    let deployment = Deployment::load_with(path, LoadOptions::default(), options).await?;
    deployment.activate().await?;
    let nodes = deployment.virtual_node("Workers")?.nodes().await?;
    ensure!(
        nodes.len() == args.nodes,
        "{} of {} nodes",
        nodes.len(),
        args.nodes
    );
    let placed: Vec<_> = (0..args.objects)
        .map(|i| nodes[i % args.loaded.max(1)].clone())
        .collect();
    let group = Group::create(&placed, |n, _| CruncherProxy::new(n)).await?;
    let started = Instant::now();
    let results = group
        .scatter(0..args.tasks, |c, id| c.task(id, args.task_ms))
        .values()
        .await
        .map_err(|e| anyhow::anyhow!("task {} failed: {}", e.rank, e.error))?;
    let makespan = started.elapsed().as_secs_f64() * 1e3;
    let mut seen = HashSet::new();
    for id in &results {
        ensure!(seen.insert(*id), "task {id} answered twice");
    }
    ensure!(
        seen.len() as u64 == args.tasks,
        "{} of {} results",
        seen.len(),
        args.tasks
    );
    let records = group
        .broadcast(|c| c.done())
        .values()
        .await
        .map_err(|e| anyhow::anyhow!("object {} cannot list its tasks: {}", e.rank, e.error))?;
    let mut served: Vec<u64> = records.into_iter().flatten().collect();
    served.sort_unstable();
    ensure!(
        served == (0..args.tasks).collect::<Vec<_>>(),
        "the objects served {} tasks, not each of the {} exactly once",
        served.len(),
        args.tasks
    );
    deployment.kill().await;
    Ok(makespan)
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(
        args.nodes > args.loaded && args.loaded > 0,
        "need more nodes than loaded nodes"
    );
    let dir = std::env::temp_dir().join(format!("actogrid-bench-lb-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let with = dir.join("balanced.xml");
    let without = dir.join("plain.xml");
    std::fs::write(&with, descriptor(args.nodes, true, args.period))?;
    std::fs::write(&without, descriptor(args.nodes, false, args.period))?;
    let rt = Runtime::bind("127.0.0.1:0", actogrid::Config::default()).await?;
    let result = async {
        let mut balanced = Vec::new();
        let mut plain = Vec::new();
        for _ in 0..args.rounds {
            balanced.push(
                run_once(&rt, &with, args)
                    .await
                    .context("with load balancing")?,
            );
            plain.push(
                run_once(&rt, &without, args)
                    .await
                    .context("without load balancing")?,
            );
        }
        Ok::<_, anyhow::Error>((balanced, plain))
    }
    .await;
    rt.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let (balanced, plain) = result?;
    let b = Summary::of(&balanced);
    let p = Summary::of(&plain);
    Ok(Report::new(
        "load-balance",
        "ms",
        b.median,
        b.p90,
        "the same deployment and tasks without the balancing service",
        p.median,
    )
    .with("nodes", args.nodes)
    .with("objects", args.objects)
    .with("tasks", args.tasks)
    .with("task_ms", args.task_ms)
    .with("target_ratio", 0.5)
    .note(format!(
        "{} objects on {} of {} nodes (one modelled core each), {} tasks of {} ms",
        args.objects, args.loaded, args.nodes, args.tasks, args.task_ms
    ))
    .note(format!("with balancing: {}", b.describe("ms")))
    .note(format!("without: {}", p.describe("ms"))))
}
