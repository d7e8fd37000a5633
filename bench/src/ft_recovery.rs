//! `ft-recovery cic`: see [`crate::ft_recovery_cic`].
//!
//! `ft-recovery pml`: a protected object with a `--log`-entry log (1,000
//! by default) on a runtime that dies; the FT server restores it on a spare
//! from its checkpoint and replays its log (`restore_s`), against restoring
//! the same checkpoint without a log (the baseline, in the same run).
//!
//! Also measured along the way, in the same run: a protected call's round
//! trip (logged durably before it is served) against an unprotected one's
//! on another node of the same runtime.
//!
//! The runtimes are in this process over loopback, the FT server too (its
//! store in `--dir`); the runtime "dies" by shutting down, which closes its
//! connections as a killed process's would.
//!
//! Then the same, deployed: a descriptor with `actogrid.FaultTolerance` on
//! two local runtimes (real processes, the FT server in this process);
//! the object's runtime is killed with SIGKILL, and the deployment detects
//! it (`exit_detection_s`: from the kill to the deployment counting the
//! runtime gone), recovers the object on the other node (`deployed_restore_s`:
//! restore + replay, from detection) and the object's caller gets its
//! next answer (`deployed_total_s`: from the kill). And once more with
//! the runtime stopped (SIGSTOP) instead: its process stays, silent, as a
//! hung host's would; `detection_s` is how long the deployment takes to
//! count it dead from its missing heartbeats (target: two heartbeat
//! periods, `heartbeat_period_s`). And once more stopped, the FT server
//! a stand-alone one (as `actogrid ft-server` runs it) that detects the
//! silence itself from the protected node's heartbeats
//! (`standalone_detection_s`, `standalone_total_s`: from the stop to the
//! object answering again).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actogrid_builtin::RecorderProxy;
use actogrid_fault_tolerance::server::FtServer;
use actogrid_runtime::{Config, Node, Proxy as _, Runtime};
use anyhow::{Context as _, ensure};

use crate::report::Report;
use crate::timing::Summary;

/// The goal for restoring and replaying a 1,000-entry log.
const RESTORE_TARGET_S: f64 = 1.0;

/// Options of `ft-recovery`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The protocol: `pml`, or `cic` (see `ft_recovery_cic`).
    #[arg(default_value = "pml")]
    protocol: String,
    /// With `cic`: the protected objects, over four runtimes.
    #[arg(long, default_value_t = 64)]
    objects: usize,
    /// Requests in the object's log when its runtime dies.
    #[arg(long, default_value_t = 1000)]
    log: usize,
    /// Timed recoveries.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where the FT store's files are made (and removed): an ordinary disk.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// A runtime of this process serving on loopback.
pub(crate) async fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::bind("127.0.0.1:0", Config::default()).await?)
}

/// Node `name` of `on`, as `from` reaches it.
pub(crate) fn node(from: &Runtime, on: &Runtime, name: &str) -> anyhow::Result<Node> {
    let address = on.address().context("a bound runtime serves")?;
    Ok(from.node(&format!("actogrid://{address}/{name}").parse()?))
}

/// What one deployed round measured, in seconds.
struct Deployed {
    detection: f64,
    restore: f64,
    total: f64,
}

/// The descriptor of a deployed round: two local runtimes of `Workers`,
/// protected, no checkpoint but the first (the log holds every request).
fn protected_descriptor(protocol: &str, store: &std::path::Path) -> String {
    crate::deployment::descriptor(
        2,
        "p",
        r#"<processDefinition id="p"><jvmProcess/></processDefinition>"#,
    )
    .replacen(
        r#"<virtualNode name="Workers""#,
        r#"<virtualNode name="Workers" technicalServiceId="ft""#,
        1,
    )
    .replacen(
        "</ProActiveDescriptor>",
        &format!(
            r#"<technicalServices>
  <technicalServiceDefinition id="ft" class="actogrid.FaultTolerance">
    <arg name="protocol" value="{protocol}"/><arg name="ttc" value="1h"/><arg name="store" value="{}"/>
  </technicalServiceDefinition>
</technicalServices>
</ProActiveDescriptor>"#,
            store.display()
        ),
        1,
    )
}

/// The deployments' lease: their runtimes' heartbeat is an eighth of it.
const LEASE: Duration = Duration::from_secs(2);

/// How a deployed round makes the runtime fail.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// SIGKILL: its process exits, the deployment sees it at once.
    Killed,
    /// SIGSTOP: it stays, silent (a hung host): the deployment sees its
    /// heartbeats stop. Killed afterwards.
    Stopped,
}

/// The heartbeat of the stand-alone FT server's rounds: the deployed
/// runtimes' own (an eighth of [`LEASE`]).
const STANDALONE_HEARTBEAT: Duration = Duration::from_millis(250);

/// One deployed recovery (see the module documentation); with
/// `standalone`, the FT server is not the deployment's but one the
/// descriptor names, detecting failures itself (what `actogrid ft-server`
/// runs), and the restore is not observed apart (0).
async fn deployed(
    protocol: &str,
    log: usize,
    dir: &std::path::Path,
    n: usize,
    failure: Failure,
    standalone: bool,
) -> anyhow::Result<Deployed> {
    use actogrid::{DeployOptions, Deployment, OutputOptions, VnEvent};
    use actogrid_fault_tolerance::watch::WatchConfig;
    let tag = format!("actogrid-bench-ft-deployed-{}-{n}", std::process::id());
    let store = dir.join(format!("{tag}.redb"));
    let path = dir.join(format!("{tag}.xml"));
    let result = async {
        let rt = runtime().await?;
        // A stand-alone server has a runtime of its own (as a process of
        // its own would): the caller learns of the failure from it.
        let home = if standalone {
            Some(runtime().await?)
        } else {
            None
        };
        let server = if let Some(home) = &home {
            let server = FtServer::open(&store, Duration::from_secs(3600))?;
            let node = home.local_node("ft");
            server.serve(&node, "ft").await?;
            server.watch(
                home,
                WatchConfig {
                    heartbeat: STANDALONE_HEARTBEAT,
                    recovery_wait: Duration::from_secs(30),
                },
            );
            let text = protected_descriptor(protocol, &store).replacen(
                &format!(r#"<arg name="store" value="{}"/>"#, store.display()),
                &format!(r#"<arg name="server" value="{}"/>"#, node.url_of("ft")),
                1,
            );
            std::fs::write(&path, text)?;
            Some(server)
        } else {
            std::fs::write(&path, protected_descriptor(protocol, &store))?;
            None
        };
        let options = DeployOptions {
            runtime: Some(rt.clone()),
            progress: false,
            lease: LEASE,
            output: OutputOptions {
                print: false,
                ..OutputOptions::default()
            },
            ..DeployOptions::default()
        };
        let d = Deployment::load_with(&path, Default::default(), options).await?;
        d.activate().await?;
        let vn = d.virtual_node("Workers")?;
        let nodes = vn.nodes().await?;
        ensure!(nodes.len() == 2, "{} of 2 nodes", nodes.len());
        let object = RecorderProxy::new(&nodes[0]).await?;
        let pid = object.pid().await?;
        for v in 0..log as u64 {
            object.push(v).await?;
        }
        let mut events = vn.events();
        let killed = Instant::now();
        let target = rustix::process::Pid::from_raw(pid as i32).context("a pid")?;
        let signal = match failure {
            Failure::Killed => rustix::process::Signal::KILL,
            Failure::Stopped => rustix::process::Signal::STOP,
        };
        rustix::process::kill_process(target, signal)?;
        let answer = tokio::spawn({
            let object = object.clone();
            async move {
                let n = object.count().await;
                (n, killed.elapsed().as_secs_f64())
            }
        });
        let mut detection = None;
        let restore = if let Some(server) = &server {
            let address = format!("{}:{}", nodes[0].url().host(), nodes[0].url().port());
            while !server.is_dead(&address) {
                ensure!(
                    killed.elapsed() < Duration::from_secs(60),
                    "never declared dead"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            detection = Some(killed.elapsed().as_secs_f64());
            0.0
        } else {
            loop {
                match tokio::time::timeout(Duration::from_secs(60), events.recv()).await?? {
                    VnEvent::Left { .. } if detection.is_none() => {
                        detection = Some(killed.elapsed().as_secs_f64());
                    }
                    VnEvent::Recovered { replayed, took, .. } => {
                        // The call made right after the signal may reach
                        // the runtime before the signal takes effect (a
                        // vCPU can wait for it), and be logged too. (CIC
                        // replays only what its line needs.)
                        ensure!(
                            protocol == "cic" || replayed == log + 1 || replayed == log + 2,
                            "{replayed} requests replayed, {} logged before the failure",
                            log + 1
                        );
                        break took.as_secs_f64();
                    }
                    VnEvent::RecoveryFailed { error, .. } => {
                        anyhow::bail!("recovery failed: {error}")
                    }
                    _ => {}
                }
            }
        };
        let (count, total) = answer.await?;
        let _ = rustix::process::kill_process(target, rustix::process::Signal::KILL);
        ensure!(count? == log as u64, "the recovered object lost requests");
        d.kill().await;
        if let (Some(server), Some(home)) = (server, home) {
            server.withdraw(&home.local_node("ft"), "ft");
            home.shutdown();
        }
        rt.shutdown();
        Ok(Deployed {
            detection: detection.context("the runtime's departure was not seen")?,
            restore,
            total,
        })
    }
    .await;
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&store);
    result
}

/// What one round measured, in seconds.
struct Round {
    restore: f64,
    baseline: f64,
    protected_call: f64,
    unprotected_call: f64,
}

/// One recovery, on the runtime's worker tasks (not the main thread).
async fn round(log: usize, dir: PathBuf, n: usize) -> anyhow::Result<Round> {
    let path = dir.join(format!(
        "actogrid-bench-ft-recovery-{}-{n}.redb",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    tokio::spawn(async move {
        let result = measure(log, &dir, &path).await;
        let _ = std::fs::remove_file(&path);
        result
    })
    .await?
}

async fn measure(
    log: usize,
    dir: &std::path::Path,
    path: &std::path::Path,
) -> anyhow::Result<Round> {
    // No checkpoint but the first: the log holds every request.
    let server = FtServer::open(path, Duration::from_secs(3600))
        .with_context(|| format!("opening the FT store in {}", dir.display()))?;
    let caller = runtime().await?;
    let callee = runtime().await?;
    let spare = runtime().await?;
    let other = runtime().await?;
    callee
        .local_node("n")
        .add_interceptor(server.protection())?;
    spare.local_node("r").add_interceptor(server.protection())?;
    caller.set_locator(server.locator())?;

    let protected = RecorderProxy::new(&node(&caller, &callee, "n")?).await?;
    let plain = RecorderProxy::new(&node(&caller, &callee, "plain")?).await?;
    let started = Instant::now();
    for v in 0..log as u64 {
        protected.push(v).await?;
    }
    let protected_call = started.elapsed().as_secs_f64() / log as f64;
    let started = Instant::now();
    for v in 0..log as u64 {
        plain.push(v).await?;
    }
    let unprotected_call = started.elapsed().as_secs_f64() / log as f64;

    let failed = callee.address().context("serves")?.to_owned();
    callee.shutdown();
    let started = Instant::now();
    let recovered = server.runtime_failed(&failed, &spare.local_node("r")).await;
    let restore = started.elapsed().as_secs_f64();
    ensure!(
        recovered.len() == 1,
        "one object to recover, got {recovered:?}"
    );
    let recovery = recovered.into_iter().next().expect("one")?;
    ensure!(
        recovery.replayed == log,
        "{} requests replayed, {log} logged",
        recovery.replayed
    );
    ensure!(
        protected.count().await? == log as u64,
        "the recovered object lost requests"
    );

    // The same checkpoint restored alone, elsewhere.
    let stored = server
        .store()
        .latest_checkpoint(&actogrid_fault_tolerance::ObjectKey::new(
            protected.active_ref().id().to_be_bytes().to_vec(),
        ))?
        .context("a checkpoint")?;
    let state = stored.state.get(8..).context("a checkpoint's header")?;
    let checkpoint: actogrid_runtime::intercept::Checkpoint = postcard::from_bytes(state)?;
    let started = Instant::now();
    other.local_node("b").restore(checkpoint).await?;
    let baseline = started.elapsed().as_secs_f64();

    for rt in [&caller, &spare, &other] {
        rt.shutdown();
    }
    // Closing the store joins its writer thread: not on a worker.
    tokio::task::spawn_blocking(move || drop(server)).await?;
    Ok(Round {
        restore,
        baseline,
        protected_call,
        unprotected_call,
    })
}

/// The deployed runtimes' heartbeat period.
pub(crate) fn heartbeat_period() -> Duration {
    LEASE / 8
}

/// `rounds` deployed runtimes of a CIC virtual node stopped (SIGSTOP):
/// how long the deployment took to count each dead, in seconds.
pub(crate) async fn cic_detection(
    dir: &std::path::Path,
    rounds: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut detected = Vec::new();
    for n in 0..rounds {
        let d = dir.to_owned();
        // A few pushes: each reply waits for the line.
        let round =
            tokio::spawn(async move { deployed("cic", 20, &d, n, Failure::Stopped, false).await })
                .await??;
        detected.push(round.detection);
    }
    Ok(detected)
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(args.rounds > 0 && args.log > 0, "need rounds and a log");
    match args.protocol.as_str() {
        "pml" => {}
        "cic" => {
            return crate::ft_recovery_cic::run(
                args.objects,
                args.log as u64,
                args.rounds,
                &args.dir,
            )
            .await;
        }
        other => anyhow::bail!("`{other}` is not a protocol: write `pml` or `cic`"),
    }
    let mut rounds = Vec::new();
    let mut deploys = Vec::new();
    let mut stops = Vec::new();
    let mut alone = Vec::new();
    for n in 0..args.rounds {
        rounds.push(round(args.log, args.dir.clone(), n).await?);
        let dir = args.dir.clone();
        let log = args.log;
        let d = dir.clone();
        deploys.push(
            tokio::spawn(async move { deployed("pml", log, &d, n, Failure::Killed, false).await })
                .await??,
        );
        let d = dir.clone();
        stops.push(
            tokio::spawn(async move { deployed("pml", log, &d, n, Failure::Stopped, false).await })
                .await??,
        );
        alone.push(
            tokio::spawn(
                async move { deployed("pml", log, &dir, n, Failure::Stopped, true).await },
            )
            .await??,
        );
    }
    let alone_detection = Summary::of(&alone.iter().map(|d| d.detection).collect::<Vec<_>>());
    let alone_total = Summary::of(&alone.iter().map(|d| d.total).collect::<Vec<_>>());
    let alone_met = alone_detection.median <= 2.0 * STANDALONE_HEARTBEAT.as_secs_f64();
    let stopped = Summary::of(&stops.iter().map(|d| d.detection).collect::<Vec<_>>());
    let period = LEASE / 8;
    let detection_met = stopped.median <= 2.0 * period.as_secs_f64();
    let of = |f: fn(&Deployed) -> f64| Summary::of(&deploys.iter().map(f).collect::<Vec<_>>());
    let detection = of(|d| d.detection);
    let deployed_restore = of(|d| d.restore);
    let deployed_total = of(|d| d.total);
    let summary = |f: fn(&Round) -> f64| Summary::of(&rounds.iter().map(f).collect::<Vec<_>>());
    let restore = summary(|r| r.restore);
    let baseline = summary(|r| r.baseline);
    let protected = summary(|r| r.protected_call);
    let unprotected = summary(|r| r.unprotected_call);
    let met = if restore.median <= RESTORE_TARGET_S {
        "met"
    } else {
        "NOT met"
    };
    Ok(Report::new(
        "ft-recovery",
        "ms",
        restore.median * 1e3,
        restore.p90 * 1e3,
        "restoring the same checkpoint without a log, ms",
        baseline.median * 1e3,
    )
    .note(format!(
        "restore + replay of {} logged requests: median {:.4} s (target <= {RESTORE_TARGET_S} s: {met})",
        args.log, restore.median
    ))
    .note(format!(
        "a protected call (logged durably first): {:.1} µs; unprotected, same runtimes: {:.1} µs",
        protected.median * 1e6,
        unprotected.median * 1e6
    ))
    .note(format!(
        "deployed, SIGKILL of a real runtime: detected in {:.1} ms (its process exit), restored + {} replayed in {:.1} ms, answering again {:.1} ms after the kill",
        detection.median * 1e3,
        args.log + 1,
        deployed_restore.median * 1e3,
        deployed_total.median * 1e3
    ))
    .note(format!(
        "deployed, SIGSTOP (a hung runtime, heartbeat every {} ms): detected in {:.1} ms (target <= 2 heartbeats: {})",
        period.as_millis(),
        stopped.median * 1e3,
        if detection_met { "met" } else { "NOT met" }
    ))
    .note(format!(
        "stand-alone FT server (its own detector, heartbeat every {} ms), SIGSTOP: detected in {:.1} ms (target <= 2 heartbeats: {}), answering again {:.1} ms after the stop",
        STANDALONE_HEARTBEAT.as_millis(),
        alone_detection.median * 1e3,
        if alone_met { "met" } else { "NOT met" },
        alone_total.median * 1e3
    ))
    .with_figure("standalone_detection_s", alone_detection.median)
    .with("standalone_detection_target_met", alone_met)
    .with_figure("standalone_total_s", alone_total.median)
    .with_figure("detection_s", stopped.median)
    .with_figure("heartbeat_period_s", period.as_secs_f64())
    .with("detection_target_met", detection_met)
    .with_figure("exit_detection_s", detection.median)
    .with_figure("deployed_restore_s", deployed_restore.median)
    .with_figure("deployed_total_s", deployed_total.median)
    .with("protocol", args.protocol.clone())
    .with("log", args.log)
    .with_figure("restore_s", restore.median)
    .with_figure("protected_call_us", protected.median * 1e6)
    .with_figure("unprotected_call_us", unprotected.median * 1e6)
    .with("restore_target_s", RESTORE_TARGET_S)
    .with("restore_target_met", restore.median <= RESTORE_TARGET_S))
}
