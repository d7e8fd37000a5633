//! `p2p-acquire`: 32 overlay peers × 2 slots on loopback (this binary's
//! hidden `serve-peer`, the daemon code of `actogrid peer`); a deployment
//! asks its `P2PService` for 64 nodes, timed from `activate()` until every
//! node has answered one call. Baseline, in the same run: the same 64
//! runtimes created locally by a plain deployment (`deploy-local`'s
//! descriptor), until every node answered one call.
//!
//! A warm-up round (not timed, its time printed) fills the peers' program
//! cache; the timed rounds find the program there, as a second deployment
//! of the same build does. `messages` counts the overlay messages the 32
//! peers received during a timed round (from each other and from the
//! deployment), heartbeats included.

use std::time::{Duration, Instant};

use actogrid::descriptor::LoadOptions;
use actogrid::peer::{Pool, peer_status};
use actogrid::{DeployOptions, Deployment, Runtime};
use actogrid_builtin::EchoProxy;
use anyhow::{Context as _, ensure};

use crate::child::{Child, Mode};
use crate::report::Report;
use crate::timing::Summary;

const SECRET: &str = "p2p-acquire-bench";

/// Options of `p2p-acquire`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Peer processes.
    #[arg(long, default_value_t = 32)]
    peers: usize,
    /// Slots each peer lends.
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// Timed rounds per side.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn descriptor(nodes: usize, contacts: &[&str]) -> String {
    let peers: String = contacts
        .iter()
        .map(|c| format!("<peer>{c}</peer>"))
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="Workers" property="multiple" timeout="120s"/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    <mapping><map virtualNode="Workers"><jvmSet><vmName value="lent"/></jvmSet></map></mapping>
    <jvms>
      <jvm name="lent"><acquisition><serviceReference refid="overlay"/></acquisition></jvm>
    </jvms>
  </deployment>
  <infrastructure>
    <services>
      <serviceDefinition id="overlay">
        <P2PService nodesAsked="{nodes}" NOA="4" TTU="1000" TTL="6"><peerSet>{peers}</peerSet></P2PService>
      </serviceDefinition>
    </services>
  </infrastructure>
</ProActiveDescriptor>
"#
    )
}

/// Messages received so far by every peer.
async fn received(peers: &[Child]) -> anyhow::Result<u64> {
    let mut total = 0;
    for p in peers {
        total += peer_status(&Pool::Passphrase(SECRET.into()), p.address())
            .await?
            .received;
    }
    Ok(total)
}

/// Waits until every slot of every peer is free again.
async fn all_free(peers: &[Child]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut busy = 0;
        for p in peers {
            let s = peer_status(&Pool::Passphrase(SECRET.into()), p.address()).await?;
            busy += s.slots.len() - s.count("free");
        }
        if busy == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{busy} slot(s) still held 30 s after the deployment"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One deployment of `path` until its `nodes` nodes answered a call, in ms;
/// then torn down (not timed).
async fn deploy_once(rt: &Runtime, path: &std::path::Path, nodes: usize) -> anyhow::Result<f64> {
    let options = DeployOptions {
        runtime: Some(rt.clone()),
        progress: false,
        pool: Some(Pool::Passphrase(SECRET.into())),
        ..DeployOptions::default()
    };
    let deployment = Deployment::load_with(path, LoadOptions::default(), options).await?;
    let started = Instant::now();
    deployment.activate().await?;
    let got = deployment.virtual_node("Workers")?.nodes().await?;
    ensure!(got.len() == nodes, "{} of {nodes} nodes", got.len());
    let calls = got.iter().map(|n| {
        let n = n.clone();
        async move {
            let echo = EchoProxy::new(&n).await?;
            echo.ping().await?;
            Ok::<(), anyhow::Error>(())
        }
    });
    for r in futures::future::join_all(calls).await {
        r.context("a node did not answer")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    deployment.kill().await;
    Ok(elapsed)
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(
        args.rounds > 0 && args.peers > 0 && args.slots > 0,
        "need rounds, peers and slots"
    );
    let nodes = args.peers * args.slots as usize;
    let dir = std::env::temp_dir().join(format!("actogrid-bench-p2p-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let work = dir.join("peers");
    let result = async {
        let mut peers: Vec<Child> = Vec::new();
        for _ in 0..args.peers {
            let mut argv = vec![
                "serve-peer".to_owned(),
                "--slots".to_owned(),
                args.slots.to_string(),
                "--work-dir".to_owned(),
                work.to_string_lossy().into_owned(),
            ];
            // The first peer and the previous one: everyone reaches the
            // first peer's component (directly, or through its referrals),
            // so the overlay is one piece.
            let known = [peers.first(), peers.last()];
            for k in known.into_iter().flatten().map(Child::address) {
                if !argv.iter().any(|a| a == k) {
                    argv.push("--peer".to_owned());
                    argv.push(k.to_owned());
                }
            }
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            peers.push(Child::spawn_with(
                &argv,
                Mode::Unpinned,
                &[(actogrid::peer::PASSPHRASE_ENV, SECRET)],
                None,
            )?);
        }
        let p2p = dir.join("p2p.xml");
        let contacts = [
            peers[args.peers - 1].address(),
            peers[args.peers / 2].address(),
        ];
        std::fs::write(&p2p, descriptor(nodes, &contacts))?;
        let local = dir.join("local.xml");
        std::fs::write(&local, crate::deploy_local::descriptor(nodes))?;
        let rt = Runtime::bind("127.0.0.1:0", actogrid::Config::default()).await?;
        // Let the overlay form (a few upkeeps), then warm up: the peers cache
        // the program.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cold = deploy_once(&rt, &p2p, nodes).await?;
        all_free(&peers).await?;
        deploy_once(&rt, &local, nodes).await?;
        let mut acquired = Vec::new();
        let mut created = Vec::new();
        let mut messages = Vec::new();
        for _ in 0..args.rounds {
            let before = received(&peers).await?;
            acquired.push(deploy_once(&rt, &p2p, nodes).await?);
            messages.push(received(&peers).await? - before);
            all_free(&peers).await?;
            created.push(deploy_once(&rt, &local, nodes).await?);
        }
        rt.shutdown();
        drop(peers);
        Ok::<_, anyhow::Error>((cold, acquired, created, messages))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let (cold, acquired, created, messages) = result?;
    let a = Summary::of(&acquired);
    let c = Summary::of(&created);
    let median_messages = {
        let mut m = messages.clone();
        m.sort_unstable();
        m[m.len() / 2]
    };
    Ok(Report::new(
        "p2p-acquire",
        "s",
        a.median,
        a.p90,
        format!("the same {nodes} runtimes created locally (deploy-local)"),
        c.median,
    )
    .with("nodes", nodes)
    .with("messages", median_messages)
    .with("peers", args.peers)
    .with("cold_s", cold)
    .note(format!(
        "{} peers × {} slots; first deployment (program fetched into the cache): {cold:.2} s",
        args.peers, args.slots
    ))
    .note(format!("acquired: {}", a.describe("s")))
    .note(format!("created locally: {}", c.describe("s")))
    .note(format!(
        "overlay messages received by the peers per round: {messages:?}"
    )))
}
