//! Acquiring nodes from the peer-to-peer overlay, with real processes:
//! `actogrid peer` daemons on loopback ports lend slots to a deployment
//! whose descriptor has a `P2PService`; the nodes behave like created ones
//! (they answer calls, the virtual node's technical services apply to
//! them), go back to their peers at the end, and leave the deployment when
//! their peer is killed (and are replaced while the request still asks).

mod support;

use std::time::{Duration, Instant};

use actogrid::peer::{PeerStatus, Pool, peer_status};
use actogrid::{Deployment, Runtime, VnEvent};
use actogrid_builtin::EchoProxy;
use support::{PeerProcess, TempDir, alive, eventually, runtime};

/// Held by the tests that start many peers and runtimes and time them:
/// on two cores, two of them at once starve each other.
static CROWDED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECRET: &str = "p2p-test-overlay";

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
        peers.push(PeerProcess::start(
            &work,
            "127.0.0.1:0",
            slots,
            &known,
            SECRET,
            &[],
        ));
    }
    peers
}

fn descriptor(asked: &str, peers: &[&PeerProcess], timeout: &str) -> String {
    let addresses: Vec<&str> = peers.iter().map(|p| p.address.as_str()).collect();
    support::p2p_descriptor(asked, &addresses, timeout, true)
}

async fn deploy(rt: &Runtime, dir: &TempDir, text: &str, secret: &str) -> Deployment {
    let path = dir.write(&format!("d-{}.xml", fastrand::u32(..)), text);
    let mut options = support::options(rt);
    options.pool = Some(Pool::Passphrase(secret.into()));
    let d = Deployment::load_with(&path, Default::default(), options)
        .await
        .expect("the descriptor loads");
    d.activate().await.expect("activates");
    d
}

async fn status(peer: &PeerProcess) -> PeerStatus {
    peer_status(&Pool::Passphrase(SECRET.into()), &peer.address)
        .await
        .expect("the peer answers its status")
}

/// Waits until every slot of every peer is free and nothing is lent, up
/// to `limit`; else says what each peer still holds.
async fn all_free(peers: &[PeerProcess], limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let mut held = Vec::new();
        for p in peers {
            let s = status(p).await;
            if s.count("free") != s.slots.len() || !s.lent.is_empty() {
                held.push(s.to_string());
            }
        }
        if held.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "after {:?}, still held:\n{}",
                start.elapsed(),
                held.join("\n")
            ));
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
    let _crowded = CROWDED.lock().await;
    let dir = TempDir::new("p2p-twenty");
    let peers = overlay(&dir, 20, 1);
    let rt = runtime().await;

    // Acquire 10: every node answers, the technical service was applied.
    let started = Instant::now();
    // Each of the 10 lenders fetches this test program (a debug build of
    // some 200 MB) before it starts a runtime: on a loaded 2-core machine
    // that alone can take half a minute.
    let text = descriptor("10", &[&peers[19], &peers[10]], "120s");
    let d = deploy(&rt, &dir, &text, SECRET).await;
    let vn = d.virtual_node("Workers").unwrap();
    let nodes = match vn.nodes().await {
        Ok(n) => n,
        Err(e) => {
            for (i, p) in peers.iter().enumerate() {
                eprintln!("=== peer {i} {}\n{}", p.address, p.log());
            }
            panic!("10 nodes from the overlay: {e:?}");
        }
    };
    assert_eq!(nodes.len(), 10);
    eprintln!("10 nodes acquired in {:?}", started.elapsed());
    answer(&nodes).await;
    support::assert_site_applied(&d, &vn);
    let pids: Vec<u32> = d.runtimes().iter().map(|r| r.pid).collect();
    assert_eq!(pids.len(), 10);
    let mut lending = 0;
    for p in &peers {
        let s = status(p).await;
        assert!(
            !s.acquaintances.is_empty(),
            "{} has acquaintances",
            p.address
        );
        lending += s.lent.iter().filter(|l| l.pid.is_some()).count();
    }
    assert_eq!(lending, 10, "the peers report the 10 lent nodes");
    d.kill().await;
    all_free(&peers, Duration::from_secs(10))
        .await
        .expect("every slot is free again after the deployment");
    assert!(
        eventually(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))).await,
        "the lent runtimes are gone"
    );

    // Acquire MAX: every free slot, until the timeout.
    // (nodes() would wait for the whole timeout: MAX has no count to reach.)
    let started = Instant::now();
    let text = descriptor("MAX", &[&peers[0], &peers[5]], "120s");
    let d = deploy(&rt, &dir, &text, SECRET).await;
    let vn = d.virtual_node("Workers").unwrap();
    // The ten peers that lend for the first time check the cached program
    // and start it: as slow as the first acquisition on a loaded machine.
    if !eventually(Duration::from_secs(115), || vn.size() == 20).await {
        for p in &peers {
            eprintln!("=== peer {}\n{}\n{}", p.address, status(p).await, p.log());
        }
        panic!("MAX takes every slot of the overlay ({} of 20)", vn.size());
    }
    eprintln!("20 nodes acquired with MAX in {:?}", started.elapsed());
    let nodes = vn.current_nodes();
    answer(&nodes[..3]).await;
    d.kill().await;
    all_free(&peers, Duration::from_secs(10))
        .await
        .expect("every slot is free again after MAX");
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
        let s = status(p).await;
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
    peers[index] = PeerProcess::start(&work, &address, 2, &known, SECRET, &[]);
    let rejoined = async {
        loop {
            if !status(&peers[index]).await.acquaintances.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), rejoined)
        .await
        .expect("the restarted peer has acquaintances again");
    d.kill().await;
    all_free(&peers, Duration::from_secs(10))
        .await
        .expect("every slot is free again");
    rt.shutdown();
}

/// Fault tolerance on lent nodes: when a lending peer dies, the overlay
/// lends a replacement, and the objects of the lost nodes are recovered
/// there, their records intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_on_a_lost_peer_recover_on_the_node_the_overlay_lends_instead() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = TempDir::new("p2p-ft");
    let mut peers = overlay(&dir, 4, 2);
    let rt = runtime().await;
    let addresses: Vec<&str> = [&peers[3], &peers[1]]
        .iter()
        .map(|p| p.address.as_str())
        .collect();
    let text = support::with_services(
        &support::p2p_descriptor("4", &addresses, "30s", false),
        "ft",
        &support::ft_service(&dir.0.join("ft.redb"), "500ms"),
    );
    let d = deploy(&rt, &dir, &text, SECRET).await;
    let vn = d.virtual_node("Workers").unwrap();
    let mut events = vn.events();
    let nodes = vn.nodes().await.expect("4 nodes");
    assert_eq!(nodes.len(), 4);
    let mut recorders = Vec::new();
    for node in &nodes {
        recorders.push(actogrid_builtin::RecorderProxy::new(node).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let work = support::push_to_each(&recorders, 50, 4, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A peer that lends something goes away, and its nodes with it (its
    // owner stops it: it takes down what it lends).
    let mut victim = None;
    for (i, p) in peers.iter().enumerate() {
        if status(p).await.lent.iter().any(|l| l.pid.is_some()) {
            victim = Some(i);
            break;
        }
    }
    let victim = victim.expect("some peer lends");
    let lost: Vec<u32> = status(&peers[victim])
        .await
        .lent
        .iter()
        .filter_map(|l| l.pid)
        .collect();
    peers[victim].stop();
    peers.remove(victim);
    let original: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
    let mut recovered_on = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while recovered_on.len() < lost.len() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(VnEvent::Recovered { node, .. })) => recovered_on.push(node.url().to_string()),
            Ok(Ok(VnEvent::RecoveryFailed { object, error })) => {
                panic!("object {object:#x} was not recovered: {error}")
            }
            Ok(Ok(_)) => {}
            other => panic!(
                "{} of {} objects recovered: {other:?}",
                recovered_on.len(),
                lost.len()
            ),
        }
    }
    assert!(
        recovered_on.iter().all(|n| !original.contains(n)),
        "recovered on {recovered_on:?}, not on the overlay's replacements (the nodes were {original:?})"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    for (r, w) in recorders.iter().zip(work) {
        let want = w.await.expect("a pushing task");
        assert_eq!(
            r.seen().await.unwrap(),
            want,
            "a record differs from a failure-free run"
        );
    }
    d.kill().await;
    all_free(&peers, Duration::from_secs(10))
        .await
        .expect("every slot is free again");
    rt.shutdown();
}

/// The chaos of the fault-tolerance tests on lent nodes: runtimes killed
/// one at a time, one hung, two killed at once, one killed while the
/// objects of another recover. The overlay lends replacements, objects are
/// recovered there too, and every record ends as in a failure-free run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protected_objects_on_lent_nodes_survive_chaos() {
    objects_on_lent_nodes_survive_chaos("pml").await;
}

/// The same with CIC: every failure rolls the whole group back to its
/// recovery line (the members of live runtimes in place, those of the
/// failed runtime on the node the overlay lends instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cic_group_on_lent_nodes_survives_chaos() {
    objects_on_lent_nodes_survive_chaos("cic").await;
}

async fn objects_on_lent_nodes_survive_chaos(protocol: &str) {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let _crowded = CROWDED.lock().await;
    let dir = TempDir::new(&format!("p2p-chaos-{protocol}"));
    let peers = overlay(&dir, 7, 2);
    let rt = runtime().await;
    let addresses: Vec<&str> = [&peers[0], &peers[3]]
        .iter()
        .map(|p| p.address.as_str())
        .collect();
    let text = support::with_services(
        &support::p2p_descriptor("8", &addresses, "60s", false),
        "ft",
        &support::ft_service_by(protocol, &dir.0.join("ft.redb"), "500ms"),
    );
    let d = deploy(&rt, &dir, &text, SECRET).await;
    let vn = d.virtual_node("Workers").unwrap();
    let mut events = vn.events();
    support::trace(&vn);
    let nodes = vn.nodes().await.expect("8 nodes");
    assert_eq!(nodes.len(), 8);
    assert_eq!(
        vn.properties(&nodes[0])
            .get("ft.protocol")
            .map(String::as_str),
        Some(protocol)
    );
    let original: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
    // A slot lends its next runtime at the same port: a node the overlay
    // lends instead may have the URL of the one it replaces, not its pid.
    let first_pids: Vec<u32> = d.runtimes().iter().map(|r| r.pid).collect();
    // Six objects on six of them (as on local runtimes): the chaos always
    // finds runtimes left to kill, replaced or not yet.
    let mut recorders = Vec::new();
    for node in &nodes[..6] {
        recorders.push(actogrid_builtin::RecorderProxy::new(node).await.unwrap());
    }
    let done = Arc::new(AtomicBool::new(false));
    let work = support::push_to_each(&recorders, 100, 4, &done);

    let killed = support::chaos(&d).await;
    // Every call answered in the end: a caller left waiting fails here,
    // not at the suite's limit.
    let pushed = tokio::time::timeout(
        Duration::from_secs(90),
        support::check_pushed(&recorders, work, &done),
    )
    .await
    .expect("every call answered within 90 s of the last failure");
    let seen = support::drain(&mut events);
    let recovered = support::recoveries_in(&seen);
    let landed: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            VnEvent::Recovered { node, .. } => Some(node.url().to_string()),
            _ => None,
        })
        .collect();
    eprintln!(
        "{} failure(s), {} recovery(ies), {pushed} pushes; recovered on {landed:?}",
        killed.len(),
        recovered.len()
    );
    assert!(!recovered.is_empty(), "no recovery was observed");
    let mut pids_now = Vec::new();
    for r in &recorders {
        pids_now.push(r.pid().await.expect("every object answers"));
    }
    assert!(
        landed.iter().any(|n| !original.contains(n))
            || pids_now.iter().any(|p| !first_pids.contains(p)),
        "nothing recovered on a node the overlay lent instead (the nodes were {original:?}, their runtimes {first_pids:?}; the objects are now served by {pids_now:?})"
    );
    assert!(killed.iter().all(|p| !alive(*p)));
    d.kill().await;
    all_free(&peers, Duration::from_secs(10))
        .await
        .expect("every slot is free again");
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_passphrase_is_refused_at_once_and_logged() {
    let dir = TempDir::new("p2p-passphrase");
    let peers = overlay(&dir, 3, 1);
    let rt = runtime().await;
    let text = descriptor("2", &[&peers[0], &peers[1]], "120s");
    let asked = Instant::now();
    let d = deploy(&rt, &dir, &text, "not-the-passphrase").await;
    let vn = d.virtual_node("Workers").unwrap();
    let err = vn.nodes().await.expect_err("no node for a stranger");
    // Said within seconds, not at the 120 s timeout, and why.
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        err.to_string()
            .contains("refused this deployment's pool credentials"),
        "{err}"
    );
    d.kill().await;
    // The peer writes its log line once its side of the handshake ends,
    // which may be after the deployment heard of the refusal.
    assert!(
        eventually(Duration::from_secs(10), || peers[0]
            .log()
            .contains("TLS handshake failed"))
        .await,
        "the peer logs the refusal: {}",
        peers[0].log()
    );

    // A member of the pool sending garbage gets an error reply, and the
    // daemon lives on.
    let member = Pool::Passphrase(SECRET.into());
    let prt = Runtime::builder()
        .identity(member.identity("test").unwrap())
        .build();
    let url = actogrid::peer::endpoint_url(&peers[0].address).unwrap();
    let endpoint: actogrid::peer::OverlayEndpointProxy = prt.lookup(&url).await.unwrap();
    let reply = endpoint
        .deliver("127.0.0.1:1".into(), vec![0xff, 0x00, 0x13, 0x37])
        .await;
    assert!(reply.is_err(), "malformed bytes are refused");
    let reply = endpoint.deliver("not an address".into(), Vec::new()).await;
    assert!(reply.is_err(), "a malformed sender is refused");
    // The deployment's own runtime is no member of the pool.
    assert!(
        rt.lookup::<actogrid::peer::OverlayEndpointProxy>(&url)
            .await
            .is_err()
    );
    let stranger = peer_status(&Pool::Passphrase("nope".into()), &peers[0].address).await;
    assert!(stranger.is_err(), "no status for a stranger");
    let s = status(&peers[0]).await;
    assert!(s.rejected >= 1, "{s}");
    assert_eq!(s.count("free"), 1);
    prt.shutdown();
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lent_runtimes_run_in_vessels_under_the_limits_of_the_file_and_the_options() {
    let dir = TempDir::new("p2p-limits");
    let work = dir.0.join("peer");
    // The file sets the limits; an option overrides one of them.
    let config = dir.write(
        "peer.toml",
        "memory-limit = \"384M\"\nmax-processes = 100\ndisk-limit = \"64M\"\ncpus = 0.5\nnice = 3\n",
    );
    let config = config.to_string_lossy().into_owned();
    let peer = PeerProcess::start(
        &work,
        "127.0.0.1:0",
        1,
        &[],
        SECRET,
        &["--config", &config, "--max-processes", "200", "--nice", "7"],
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

    let s = status(&peer).await;
    let vessels = s.vessels.clone().expect("a lender reports its vessels");
    let limit = |what: &str| {
        vessels
            .protections
            .iter()
            .find(|p| p.what == what)
            .map(|p| p.limit.clone())
            .unwrap_or_default()
    };
    assert_eq!(limit("memory"), "384 MiB", "{s}");
    assert_eq!(limit("processes"), "200 (threads count)", "{s}");
    assert_eq!(limit("disk"), "64 MiB", "{s}");
    assert_eq!(limit("cpu"), "0.5 core(s), nice 7", "{s}");

    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or_default()
            .to_owned()
    };
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
    assert_eq!(field("NoNewPrivs:"), "1", "{proc_status}");
    let uid: u32 = field("Uid:").parse().unwrap();
    assert_eq!(s.lent[0].uid, Some(uid), "{s}");
    if support::root() {
        assert!(uid >= 1_900_000_000, "a user of its own: {uid}");
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cgroups.contains(&format!("/actogrid-vessels/uid-{uid}")),
            "{cgroups}"
        );
    }
    d.kill().await;
    assert!(eventually(Duration::from_secs(5), || !alive(pid)).await);
    all_free(&[peer], Duration::from_secs(10))
        .await
        .expect("the slot is free again");
    let left = support::vessel_leftovers(uid, &cwd);
    assert!(left.is_empty(), "{left:?}");
    rt.shutdown();
}
