//! Acquiring nodes from the peer-to-peer overlay, with real processes:
//! `actogrid peer` daemons on loopback ports lend slots to a deployment
//! whose descriptor has a `P2PService`; the nodes behave like created ones
//! (they answer calls, the virtual node's technical services apply to
//! them), go back to their peers at the end, and leave the deployment when
//! their peer is killed (and are replaced while the request still asks).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actogrid::builtin::EchoProxy;
use actogrid::peer::{PeerStatus, peer_status, token_of};
use actogrid::{DeployError, Deployment, Runtime, VnEvent};
use support::{SITE_SERVICE, TempDir, alive, eventually, runtime};

const SECRET: &str = "p2p-test-overlay";

/// One `actogrid peer` process, killed (SIGKILL) when dropped.
struct PeerProcess {
    child: Child,
    address: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl PeerProcess {
    /// Starts a daemon lending `slots` slots, knowing `peers`, listening on
    /// `listen`.
    fn start(
        work: &Path,
        listen: &str,
        slots: u32,
        peers: &[String],
        extra: &[&str],
    ) -> PeerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_actogrid"));
        cmd.arg("peer")
            .args(["--listen", listen])
            .args(["--slots", &slots.to_string()])
            .args(["--noa", "3", "--ttl", "6", "--ttu", "300ms"])
            .args(["--answer-timeout", "1s", "--booking-expiry", "30s"])
            .args(["--token", SECRET])
            .arg("--work-dir")
            .arg(work)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove(actogrid::peer::TOKEN_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let mut child = cmd.spawn().expect("actogrid peer starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("actogrid peer listening on ") {
                        break a.to_owned();
                    }
                }
                _ => panic!("the peer exited before serving: {}", log.lock().unwrap()),
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        PeerProcess {
            child,
            address,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` peers, each knowing the first and the previous one (so that the
/// overlay forms in one piece: a peer refused by the first is referred to
/// its acquaintances). They share
/// one work directory (as peers on one machine may), so the program is
/// written to disk once, not `n` times.
fn overlay(dir: &TempDir, n: usize, slots: u32) -> Vec<PeerProcess> {
    let mut peers: Vec<PeerProcess> = Vec::new();
    for i in 0..n {
        let mut known: Vec<String> = Vec::new();
        for p in [peers.first(), peers.last()].into_iter().flatten() {
            if !known.contains(&p.address) {
                known.push(p.address.clone());
            }
        }
        let _ = i;
        let work = dir.0.join("peers");
        peers.push(PeerProcess::start(&work, "127.0.0.1:0", slots, &known, &[]));
    }
    peers
}

fn descriptor(asked: &str, peers: &[&PeerProcess], timeout: &str) -> String {
    let peer_set: String = peers
        .iter()
        .map(|p| format!("<peer>{}</peer>", p.address))
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="Workers" property="multiple" timeout="{timeout}" technicalServiceId="site"/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    <mapping>
      <map virtualNode="Workers"><jvmSet><vmName value="lent"/></jvmSet></map>
    </mapping>
    <jvms>
      <jvm name="lent"><acquisition><serviceReference refid="overlay"/></acquisition></jvm>
    </jvms>
  </deployment>
  <infrastructure>
    <services>
      <serviceDefinition id="overlay">
        <P2PService nodesAsked="{asked}" NOA="3" TTU="300" TTL="6">
          <peerSet>{peer_set}</peerSet>
        </P2PService>
      </serviceDefinition>
    </services>
  </infrastructure>
  <technicalServices>{SITE_SERVICE}</technicalServices>
</ProActiveDescriptor>
"#
    )
}

async fn deploy(rt: &Runtime, dir: &TempDir, text: &str, secret: &str) -> Deployment {
    let path = dir.write(&format!("d-{}.xml", fastrand::u32(..)), text);
    let mut options = support::options(rt);
    options.overlay_token = token_of(Some(secret));
    let d = Deployment::load_with(&path, Default::default(), options)
        .await
        .expect("the descriptor loads");
    d.activate().await.expect("activates");
    d
}

async fn status(rt: &Runtime, peer: &PeerProcess) -> PeerStatus {
    peer_status(rt, &peer.address, token_of(Some(SECRET)))
        .await
        .expect("the peer answers its status")
}

/// Waits until every slot of every peer is free and nothing is lent.
async fn all_free(rt: &Runtime, peers: &[PeerProcess], limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let mut free = true;
        for p in peers {
            let s = status(rt, p).await;
            free &= s.count("free") == s.slots.len() && s.lent.is_empty();
        }
        if free || start.elapsed() > limit {
            return free;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every node answers a call on an object created there.
async fn answer(nodes: &[actogrid::Node]) {
    for node in nodes {
        let echo = EchoProxy::new(node).await.expect("an object on the node");
        echo.ping().await.expect("it answers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_peers_lend_nodes_and_get_their_slots_back() {
    let dir = TempDir::new("p2p-twenty");
    let peers = overlay(&dir, 20, 1);
    let rt = runtime().await;

    // Acquire 10: every node answers, the technical service was applied.
    let started = Instant::now();
    let text = descriptor("10", &[&peers[19], &peers[10]], "30s");
    let d = deploy(&rt, &dir, &text, SECRET).await;
    let vn = d.virtual_node("Workers").unwrap();
    let nodes = vn.nodes().await.expect("10 nodes from the overlay");
    assert_eq!(nodes.len(), 10);
    eprintln!("10 nodes acquired in {:?}", started.elapsed());
    answer(&nodes).await;
    support::assert_site_applied(&d, &vn);
    let pids: Vec<u32> = d.runtimes().iter().map(|r| r.pid).collect();
    assert_eq!(pids.len(), 10);
    let mut lending = 0;
    for p in &peers {
        let s = status(&rt, p).await;
        assert!(
            !s.acquaintances.is_empty(),
            "{} has acquaintances",
            p.address
        );
        lending += s.lent.iter().filter(|l| l.pid.is_some()).count();
    }
    assert_eq!(lending, 10, "the peers report the 10 lent nodes");
    d.kill().await;
    assert!(
        all_free(&rt, &peers, Duration::from_secs(10)).await,
        "every slot is free again after the deployment"
    );
    assert!(
        eventually(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))).await,
        "the lent runtimes are gone"
    );

    // Acquire MAX: every free slot, until the timeout.
    // (nodes() would wait for the whole timeout: MAX has no count to reach.)
    let started = Instant::now();
    let text = descriptor("MAX", &[&peers[0], &peers[5]], "60s");
    let d = deploy(&rt, &dir, &text, SECRET).await;
    let vn = d.virtual_node("Workers").unwrap();
    assert!(
        eventually(Duration::from_secs(30), || vn.size() == 20).await,
        "MAX takes every slot of the overlay ({} of 20)",
        vn.size()
    );
    eprintln!("20 nodes acquired with MAX in {:?}", started.elapsed());
    let nodes = vn.current_nodes();
    answer(&nodes[..3]).await;
    d.kill().await;
    assert!(
        all_free(&rt, &peers, Duration::from_secs(10)).await,
        "every slot is free again after MAX"
    );
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_peer_takes_its_nodes_which_are_replaced_and_it_rejoins_when_restarted() {
    let dir = TempDir::new("p2p-kill");
    let mut peers = overlay(&dir, 5, 2);
    let rt = runtime().await;
    let text = descriptor("6", &[&peers[4], &peers[2]], "30s");
    let d = deploy(&rt, &dir, &text, SECRET).await;
    let vn = d.virtual_node("Workers").unwrap();
    let mut events = vn.events();
    let nodes = vn.nodes().await.expect("6 nodes");
    assert_eq!(nodes.len(), 6);

    // The victim: a peer that lends something.
    let mut victim = None;
    for (i, p) in peers.iter().enumerate() {
        let s = status(&rt, p).await;
        if s.lent.iter().any(|l| l.pid.is_some()) {
            victim = Some((i, s));
            break;
        }
    }
    let (index, before) = victim.expect("some peer lends");
    let lost_pids: Vec<u32> = before.lent.iter().filter_map(|l| l.pid).collect();
    let address = peers[index].address.clone();
    peers[index].kill();

    let mut left = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while left < lost_pids.len() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(VnEvent::Left { .. })) => left += 1,
            Ok(Ok(_)) => {}
            other => panic!("{left} of {} nodes left: {other:?}", lost_pids.len()),
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || lost_pids
            .iter()
            .all(|p| !alive(*p)))
        .await,
        "its runtimes died with it"
    );
    // The request still asks: other peers replace the lost nodes.
    assert!(
        eventually(Duration::from_secs(15), || vn.size() == 6).await,
        "{} of 6 nodes after the loss",
        vn.size()
    );
    assert!(
        vn.current_nodes().iter().all(|n| d
            .runtimes()
            .iter()
            .any(|r| r.nodes.contains(n.url()) && !lost_pids.contains(&r.pid))),
        "no node of the dead peer is left"
    );
    answer(&vn.current_nodes()).await;

    // Restarted on the same address, it rejoins the overlay.
    let work = dir.0.join("peer-restarted");
    let known = vec![peers[(index + 1) % peers.len()].address.clone()];
    peers[index] = PeerProcess::start(&work, &address, 2, &known, &[]);
    let rejoined = async {
        loop {
            if !status(&rt, &peers[index]).await.acquaintances.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), rejoined)
        .await
        .expect("the restarted peer has acquaintances again");
    d.kill().await;
    assert!(all_free(&rt, &peers, Duration::from_secs(10)).await);
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_token_is_refused_and_logged() {
    let dir = TempDir::new("p2p-token");
    let peers = overlay(&dir, 3, 1);
    let rt = runtime().await;
    let text = descriptor("2", &[&peers[0], &peers[1]], "3s");
    let d = deploy(&rt, &dir, &text, "not-the-secret").await;
    let vn = d.virtual_node("Workers").unwrap();
    let err = vn.nodes().await.expect_err("no node for a stranger");
    assert!(
        matches!(err, DeployError::NotEnoughNodes { have: 0, .. }),
        "{err}"
    );
    d.kill().await;
    assert!(
        peers[0].log().contains("wrong overlay token"),
        "the peer logs the refusal: {}",
        peers[0].log()
    );

    // Garbage and wrong tokens get an error reply, and the daemon lives on.
    let url = actogrid::peer::endpoint_url(&peers[0].address).unwrap();
    let endpoint: actogrid::peer::OverlayEndpointProxy = rt.lookup(&url).await.unwrap();
    let reply = endpoint
        .deliver("127.0.0.1:1".into(), vec![0xff, 0x00, 0x13, 0x37])
        .await;
    assert!(reply.is_err(), "malformed bytes are refused");
    let reply = endpoint.deliver("not an address".into(), Vec::new()).await;
    assert!(reply.is_err(), "a malformed sender is refused");
    let stranger = peer_status(&rt, &peers[0].address, token_of(Some("nope"))).await;
    assert!(stranger.is_err(), "no status for a stranger");
    let s = status(&rt, &peers[0]).await;
    assert!(s.rejected >= 1, "{s}");
    assert_eq!(s.count("free"), 1);
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lent_runtimes_run_under_the_owners_limits_in_their_own_directory() {
    let dir = TempDir::new("p2p-limits");
    let work = dir.0.join("peer");
    let peer = PeerProcess::start(
        &work,
        "127.0.0.1:0",
        1,
        &[],
        &[
            "--memory-limit",
            "16G",
            "--max-processes",
            "20000",
            "--nice",
            "7",
        ],
    );
    let rt = runtime().await;
    let text = descriptor("1", &[&peer], "30s");
    let d = deploy(&rt, &dir, &text, SECRET).await;
    let vn = d.virtual_node("Workers").unwrap();
    let nodes = match vn.nodes().await {
        Ok(n) => n,
        Err(e) => panic!("{e}\npeer log:\n{}", peer.log()),
    };
    answer(&nodes).await;
    let pid = d.runtimes()[0].pid;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        line("Max address space").contains(&(16u64 << 30).to_string()),
        "{limits}"
    );
    assert!(line("Max processes").contains("20000"), "{limits}");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let nice: i32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(nice, 7);
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert!(cwd.starts_with(work.join("slots")), "{}", cwd.display());
    let cached: Vec<_> = std::fs::read_dir(work.join("bin")).unwrap().collect();
    assert_eq!(cached.len(), 1, "the program is cached once, by content");
    d.kill().await;
    assert!(eventually(Duration::from_secs(5), || !alive(pid)).await);
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_dir(
            work.join("slots")
        )
        .is_ok_and(|mut d| d.next().is_none()))
        .await,
        "the slot's directory is removed"
    );
    rt.shutdown();
}
