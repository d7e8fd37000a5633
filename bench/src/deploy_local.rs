//! `deploy-local`: a deployment of 64 local runtimes, from `activate()`
//! until every node has answered one call, in the two ways a deployment
//! secures its runtimes: with certificates issued (the default: every
//! runtime enrolls with a one-time ticket over TLS and gets a certificate)
//! and in plaintext (the deployer's runtime is plaintext, so its runtimes
//! get a ticket without authorities and enroll without TLS). Both are
//! compared with starting the same 64 processes bare (this binary's
//! `serve-node`, given credentials on stdin by the TLS deployer's runtime,
//! waited for until each serves). Rounds rotate the three sides.
//!
//! The runtimes are this benchmark binary in node mode: its `main` starts
//! with `actogrid::serve_if_deployed()`, as every application's does.

use std::time::{Duration, Instant};

use actogrid::{DeployOptions, OutputOptions, Runtime};
use anyhow::ensure;

use crate::child::{Child, Mode};
use crate::deployment;
use crate::report::Report;
use crate::security::Security;
use crate::timing::Summary;

/// The goal for TLS: a deployment with certificates issued takes at most
/// this many plaintext ones. Each runtime makes one mutual handshake: it
/// enrolls, registers and is called by the deployer on one connection.
const TLS_TARGET_RATIO: f64 = 1.2;

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

/// One deployment from `rt`. What its runtimes print is kept, not printed:
/// every plaintext runtime says it runs without TLS, and the benchmark's
/// output stays readable (both sides are measured with the same options).
async fn deploy_once(rt: &Runtime, path: &std::path::Path, runtimes: usize) -> anyhow::Result<f64> {
    let options = DeployOptions {
        output: OutputOptions {
            print: false,
            ..OutputOptions::default()
        },
        ..DeployOptions::default()
    };
    deployment::deploy_until_answered(rt, path, options, runtimes).await
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

/// One of the three things timed.
#[derive(Debug, Clone, Copy)]
enum Side {
    Deploy(Security),
    Bare,
}

impl Side {
    const ALL: [Side; 3] = [
        Side::Deploy(Security::Tls),
        Side::Deploy(Security::Plaintext),
        Side::Bare,
    ];

    /// One timed run, in ms. `runtimes`: the TLS deployer's, the plaintext
    /// deployer's.
    async fn once(
        self,
        runtimes: &[Runtime; 2],
        path: &std::path::Path,
        count: usize,
    ) -> anyhow::Result<f64> {
        match self {
            Side::Deploy(Security::Tls) => deploy_once(&runtimes[0], path, count).await,
            Side::Deploy(Security::Plaintext) => deploy_once(&runtimes[1], path, count).await,
            Side::Bare => {
                let rt = runtimes[0].clone();
                tokio::task::spawn_blocking(move || bare_once(&rt, count)).await?
            }
        }
    }
}

/// A deploying runtime of kind `security` serving on a loopback port (what
/// `Runtime::bind` does, with the identity chosen).
async fn deployer(security: Security) -> anyhow::Result<Runtime> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let rt = security.build(Runtime::builder().address(address));
    let server = rt.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener, std::future::pending()).await {
            eprintln!(
                "deploy-local: the {} deployer stopped: {e}",
                security.name()
            );
        }
    });
    Ok(rt)
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
    let runtimes = [
        deployer(Security::Tls).await?,
        deployer(Security::Plaintext).await?,
    ];
    let count = args.runtimes;
    let result = async {
        // Warm-up: the page cache and the first connections.
        for side in Side::ALL {
            side.once(&runtimes, &path, count).await?;
        }
        let mut timed: [Vec<f64>; 3] = Default::default();
        for round in 0..args.rounds {
            // Rotate who goes first, so no side always follows the same one.
            for k in 0..Side::ALL.len() {
                let i = (round + k) % Side::ALL.len();
                timed[i].push(Side::ALL[i].once(&runtimes, &path, count).await?);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok::<_, anyhow::Error>(timed)
    }
    .await;
    for rt in &runtimes {
        rt.shutdown();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let [tls, plaintext, bare] = result?.map(|t| Summary::of(&t));
    let tls_ratio = tls.median / plaintext.median;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    Ok(Report::new(
        "deploy-local",
        "ms",
        tls.median,
        tls.p90,
        format!("{count} bare serve-node processes started in parallel"),
        bare.median,
    )
    .with("runtimes", count)
    .with_figure("plaintext_value", plaintext.median)
    .with_figure("plaintext_p90", plaintext.p90)
    .with_figure("plaintext_ratio", plaintext.median / bare.median)
    .with_figure("tls_plaintext_ratio", tls_ratio)
    .with("tls_target", format!("<= {TLS_TARGET_RATIO:.1}x plaintext"))
    .with("tls_target_met", tls_ratio <= TLS_TARGET_RATIO)
    .note(format!("deployment, tls:       {}", tls.describe("ms")))
    .note(format!(
        "deployment, plaintext: {}",
        plaintext.describe("ms")
    ))
    .note(format!("bare processes:        {}", bare.describe("ms")))
    .note(format!(
        "ratio tls/plaintext {tls_ratio:.2} (target <= {TLS_TARGET_RATIO:.1}x: {}); \
         value/baseline/ratio below are the TLS deployment against the bare processes",
        met(tls_ratio <= TLS_TARGET_RATIO)
    )))
}
