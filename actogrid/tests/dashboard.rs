//! A running deployment's dashboard: `actogrid status` (text and JSON),
//! `actogrid logs` (filtered, and `--follow` until the deployment ends),
//! `/metrics` in Prometheus' format, the page, and the token every request
//! needs; and a peer's own dashboard (its overlay, slots and lent
//! runtimes).

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use actogrid::{DeployOptions, Deployment, DeploymentStatus};
use support::{TempDir, eventually, runtime};

const ACTOGRID: &str = env!("CARGO_BIN_EXE_actogrid");

/// Two runtimes of one node each, logging at `info` (a line each when
/// they register).
fn descriptor() -> String {
    support::descriptor(
        "",
        "runtimes=\"2\"",
        "rt",
        r#"<processDefinition id="rt"><jvmProcess>
             <environment><variable name="RUST_LOG" value="info"/></environment>
           </jvmProcess></processDefinition>"#,
        false,
    )
}

fn actogrid(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ACTOGRID)
        .args(args)
        .output()
        .expect("actogrid");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A plain request with no body; the status code and the body.
fn request(method: &str, address: &str, target: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

fn get(address: &str, target: &str) -> (u16, String) {
    request("GET", address, target)
}

fn post(address: &str, target: &str) -> (u16, String) {
    request("POST", address, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_logs_and_metrics_of_a_running_deployment() {
    let dir = TempDir::new("dashboard");
    let path = dir.write("d.xml", &descriptor());
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), support::options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    let nodes = d.virtual_node("Workers").unwrap().nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    let url = d.dashboard_url().expect("a dashboard by default");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (address, token) = {
        let rest = url.strip_prefix("http://").unwrap();
        let (address, query) = rest.split_once("/?token=").unwrap();
        (address.to_owned(), query.to_owned())
    };
    let mut pids: Vec<u32> = d.runtimes().iter().map(|r| r.pid).collect();
    pids.sort_unstable();
    // An object on the first node, two on the second.
    let mut echoes = Vec::new();
    for node in [&nodes[0], &nodes[1], &nodes[1]] {
        echoes.push(actogrid_builtin::EchoProxy::new(node).await.unwrap());
    }

    // The state, as JSON and as text, from another process.
    let (ok, json, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || actogrid(&["status", &url, "--format", "json"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let state: DeploymentStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(state.virtual_nodes.len(), 1);
    let vn = &state.virtual_nodes[0];
    assert_eq!(vn.name, "Workers");
    assert_eq!(vn.nodes, 2);
    assert_eq!(vn.runtimes_registered, 2);
    assert!(vn.runtimes.iter().all(|r| r.provider == "local"), "{vn:?}");
    let mut seen: Vec<u32> = vn.runtimes.iter().map(|r| r.pid).collect();
    seen.sort_unstable();
    assert_eq!(seen, pids);
    // Each runtime says which objects its nodes host: the echoes, on
    // their nodes, and nothing of its own.
    let mut on_nodes: Vec<(String, String)> = vn
        .runtimes
        .iter()
        .flat_map(|r| {
            assert!(!r.objects_unknown, "{r:?}");
            r.objects
                .iter()
                .map(|o| (o.node.clone(), o.type_name.clone()))
        })
        .collect();
    on_nodes.sort();
    let mut expected: Vec<(String, String)> = [&nodes[0], &nodes[1], &nodes[1]]
        .iter()
        .map(|n| (n.url().name().to_owned(), "Echo".to_owned()))
        .collect();
    expected.sort();
    let names: Vec<(String, String)> = on_nodes
        .iter()
        .map(|(n, t)| (n.clone(), t.rsplit("::").next().unwrap_or(t).to_owned()))
        .collect();
    assert_eq!(names, expected, "{on_nodes:?}");
    // Five calls from here to the second echo: it counts them, its state
    // is measured, and the call graph has an arrow from the deployer.
    for i in 0..5u8 {
        echoes[1].echo(vec![i; 100]).await.unwrap();
    }
    let called = actogrid::Proxy::active_ref(&echoes[1]).id();
    let mut figures = None;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let now = d.status().await;
        let object = now.object(called).cloned();
        let edge = now.calls.iter().find(|e| e.to == called).cloned();
        if let (Some(o), Some(e)) = (object, edge)
            && o.state_bytes.is_some()
        {
            figures = Some((o, e, now));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (object, edge, counted) = figures.expect("figures and an arrow for the called echo");
    assert_eq!(object.served, Some(5), "{object:?}");
    // Its state: the count of calls, one byte encoded.
    assert_eq!(object.state_bytes, Some(1), "{object:?}");
    assert_eq!(object.callers.len(), 1, "{object:?}");
    assert_eq!(object.callers[0].calls, 5);
    assert_eq!(
        (edge.from_kind.as_str(), edge.from_label.as_str()),
        ("runtime", "deployer")
    );
    assert_eq!(edge.from, rt.id());
    assert_eq!(edge.calls, 5);
    // The objects nobody called have served nothing, and no arrow.
    let others: Vec<_> = counted
        .objects()
        .map(|(_, o)| o)
        .filter(|o| o.id != called)
        .collect();
    assert_eq!(others.len(), 2);
    assert!(
        others.iter().all(|o| o.served.unwrap_or(0) == 0),
        "{others:?}"
    );
    assert_eq!(counted.calls.len(), 1, "{:?}", counted.calls);
    // An object moved from the dashboard: it lives on the other node, and
    // its proxy still reaches it.
    let moved = actogrid::Proxy::active_ref(&echoes[0]).id();
    let from = nodes[0].url().to_string();
    let to = nodes[1].url().to_string();
    let (code, body) = post(
        &address,
        &format!("/api/objects/{moved}/migrate?to={to}&token={token}"),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(
        &address,
        &format!("/api/objects/{moved}/migrate?to=actogrid://10.9.9.9:1/x&token={token}"),
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = post(
        &address,
        &format!("/api/objects/12345/migrate?to={from}&token={token}"),
    );
    assert_eq!(code, 404, "{body}");
    let (code, _) = post(&address, &format!("/api/objects/{moved}/migrate?to={from}"));
    assert_eq!(code, 401);
    let state_now = d.status().await;
    let on = state_now.object(moved).map(|o| o.node.clone());
    assert_eq!(on.as_deref(), Some(nodes[1].url().name()));
    assert_eq!(echoes[0].echo(vec![7; 10]).await.unwrap(), vec![7; 10]);
    // The move is in the timeline, as the runtime it left reported it.
    let mut moved_event = None;
    let start = std::time::Instant::now();
    while moved_event.is_none() && start.elapsed() < Duration::from_secs(10) {
        moved_event = d
            .status()
            .await
            .events
            .into_iter()
            .find(|e| e.kind == "migrated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved_event = moved_event.expect("a migrated event");
    assert_eq!(moved_event.node.as_deref(), Some(from.as_str()));
    assert!(
        moved_event.detail.contains(&format!("object {moved:#x}"))
            && moved_event.detail.contains(&format!("moved to {to}")),
        "{moved_event:?}"
    );
    // Both nodes joined, in the timeline.
    let joined = state.events.iter().filter(|e| e.kind == "joined").count();
    assert_eq!(joined, 2, "{:?}", state.events);
    let (ok, text, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || actogrid(&["status", &url])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(text.contains("virtual node Workers: 2 node(s)"), "{text}");
    assert!(text.contains("5 served"), "{text}");
    assert!(
        text.contains(&format!(
            "deployer {:#x} -> object {called:#x}: 5 calls",
            rt.id()
        )),
        "{text}"
    );
    for pid in &pids {
        assert!(text.contains(&format!("pid {pid}")), "{text}");
    }

    // What the runtimes printed: each said it registered.
    let logged = eventually(Duration::from_secs(10), || {
        d.logs()
            .iter()
            .filter(|l| l.text.contains("registered with"))
            .count()
            == 2
    })
    .await;
    assert!(logged, "{:?}", d.logs());
    let (ok, text, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || actogrid(&["logs", &url, "--vn", "Workers", "--stream", "stderr"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(text.matches("registered with").count(), 2, "{text}");
    let (ok, text, _) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || actogrid(&["logs", &url, "--vn", "Other"])
    })
    .await
    .unwrap();
    assert!(ok && text.is_empty(), "{text}");
    // By node (the runtime hosting it) and by level: the registration
    // lines are tracing lines at INFO.
    let node = nodes[0].url().to_string();
    let (ok, text, err) = tokio::task::spawn_blocking({
        let (url, node) = (url.clone(), node.clone());
        move || actogrid(&["logs", &url, "--node", &node, "--level", "info"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(text.matches("registered with").count(), 1, "{text}");
    let (ok, text, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || actogrid(&["logs", &url, "--level", "warn", "--json"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(!text.contains("registered with"), "{text}");
    let lines: Vec<actogrid::LogLine> = d
        .logs()
        .iter()
        .map(actogrid::LogLine::from)
        .filter(|l| l.text.contains("registered with"))
        .collect();
    assert!(
        lines.iter().all(|l| l.level.as_deref() == Some("INFO")),
        "{lines:?}"
    );
    let (code, body) = get(&address, &format!("/api/logs?level=loud&token={token}"));
    assert_eq!(code, 400, "{body}");
    let (ok, _, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || actogrid(&["logs", &url, "--node", "actogrid://10.9.9.9:1/nowhere"])
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("no node"), "{err}");

    // Metrics, in Prometheus' text format.
    let (code, metrics) = get(&address, &format!("/metrics?token={token}"));
    assert_eq!(code, 200, "{metrics}");
    for line in [
        "actogrid_runtimes{vn=\"Workers\",state=\"running\"} 2",
        "actogrid_nodes{vn=\"Workers\"} 2",
        "actogrid_objects{vn=\"Workers\"} 3",
        "actogrid_requests_served{vn=\"Workers\"} 6",
        "# TYPE actogrid_nodes gauge",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
    let (code, page) = get(&address, &format!("/?token={token}"));
    assert_eq!(code, 200);
    assert!(page.contains("virtual node Workers"), "{page}");

    // No token, a wrong one: refused, and nothing of the deployment said.
    for target in [
        "/api/state".to_owned(),
        "/metrics".to_owned(),
        "/api/logs".to_owned(),
        "/".to_owned(),
        format!("/api/state?token={}", "0".repeat(token.len())),
    ] {
        let (code, body) = get(&address, &target);
        assert_eq!(code, 401, "{target}: {body}");
        assert!(!body.contains("Workers"), "{body}");
    }
    let (ok, _, err) = tokio::task::spawn_blocking({
        let bare = format!("http://{address}/");
        move || actogrid(&["status", &bare])
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("token"), "{err}");

    // Following the logs ends with the deployment.
    let mut follow = Command::new(ACTOGRID)
        .args(["logs", &url, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.kill().await;
    let ended = eventually(Duration::from_secs(15), || {
        follow.try_wait().ok().flatten().is_some()
    })
    .await;
    if !ended {
        let _ = follow.kill();
    }
    let status = follow.wait().unwrap();
    assert!(
        ended,
        "`actogrid logs --follow` still running after the deployment ended"
    );
    assert!(status.success(), "{status}");
    let mut printed = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    assert_eq!(printed.matches("registered with").count(), 2, "{printed}");
    rt.shutdown();
}

/// `actogrid deploy` with a dashboard: a runtime killed from it is gone
/// and its node leaves (an event says so); ending the deployment from it
/// ends the command, runtimes included. Without the token, neither.
#[test]
fn runtimes_are_killed_and_the_deployment_ended_from_the_dashboard() {
    use std::io::BufRead;
    let dir = TempDir::new("dashboard-actions");
    let path = dir.write("d.xml", &descriptor());
    // Its own state directory: where it leaves its dashboard's URL.
    let state_dir = dir.0.join("state");
    let mut deploy = Command::new(ACTOGRID)
        .args(["deploy", "--no-progress", "--lease-ms", "2000"])
        .arg(&path)
        .env(actogrid::STATE_DIR_ENV, &state_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(deploy.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut deploy = support::Killed(deploy);
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the dashboard URL");
        if let Some(url) = line.strip_prefix("dashboard: ") {
            break url.to_owned();
        }
    };
    let rest = url.strip_prefix("http://").unwrap();
    let (address, token) = rest.split_once("/?token=").unwrap();
    let state = || -> DeploymentStatus {
        let (code, body) = get(address, &format!("/api/state?token={token}"));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let mut runtimes = Vec::new();
    for _ in 0..300 {
        runtimes = state().virtual_nodes[0].runtimes.clone();
        if runtimes.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(runtimes.len(), 2);
    let victim = &runtimes[0];
    // `actogrid status` with no URL finds the one dashboard running for
    // this user (here: in this state directory); with none, it says so.
    let bare_status = |state: &std::path::Path| {
        Command::new(ACTOGRID)
            .arg("status")
            .env(actogrid::STATE_DIR_ENV, state)
            .output()
            .unwrap()
    };
    let out = bare_status(&state_dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("virtual node Workers"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bare_status(&dir.0.join("no-state"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no dashboard is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, _) = post(address, &format!("/api/runtimes/{}/kill", victim.id));
    assert_eq!(code, 401, "no token, no kill");
    let (code, body) = post(address, &format!("/api/runtimes/999/kill?token={token}"));
    assert_eq!(code, 404, "{body}");
    let (code, body) = post(
        address,
        &format!("/api/runtimes/{}/kill?token={token}", victim.id),
    );
    assert_eq!(code, 200, "{body}");
    let mut left = false;
    for _ in 0..100 {
        let s = state();
        left = !support::alive(victim.pid)
            && s.events.iter().any(|e| e.kind == "left")
            && s.virtual_nodes[0].runtimes.len() == 1;
        if left {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(left, "{:?}", state());

    let (code, _) = post(address, "/api/end");
    assert_eq!(code, 401);
    let (code, body) = post(address, &format!("/api/end?token={token}"));
    assert_eq!(code, 202, "{body}");
    let survivor = runtimes[1].pid;
    let mut ended = false;
    for _ in 0..150 {
        if deploy.0.try_wait().unwrap().is_some() {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ended, "actogrid deploy still running after /api/end");
    assert!(deploy.0.wait().unwrap().success());
    // Its URL left with it.
    let left: Vec<_> = std::fs::read_dir(state_dir.join("dashboards"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    support::assert_all_exit("runtimes", || {
        if support::alive(survivor) {
            vec![survivor]
        } else {
            Vec::new()
        }
    });
}

/// Connections that never say what they want do not keep the dashboard
/// from its owner: they are closed after the head timeout, and more than
/// it serves at once wait their turn instead of taking descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_the_dashboard_out() {
    let dir = TempDir::new("dashboard-idle");
    let path = dir.write("d.xml", &descriptor());
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), support::options(&rt))
        .await
        .unwrap();
    let url = d.dashboard_url().unwrap();
    let rest = url.strip_prefix("http://").unwrap();
    let (address, token) = rest.split_once("/?token=").unwrap();
    let (address, token) = (address.to_owned(), token.to_owned());
    let answered = tokio::task::spawn_blocking(move || {
        let idle: Vec<std::net::TcpStream> = (0..100)
            .map(|_| std::net::TcpStream::connect(&address).unwrap())
            .collect();
        let started = std::time::Instant::now();
        let (code, body) = get(&address, &format!("/api/state?token={token}"));
        drop(idle);
        (code, body, started.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(answered.0, 200, "{}", answered.1);
    assert!(answered.2 < Duration::from_secs(30), "{:?}", answered.2);
    d.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_asked_for_no_dashboard_serves_none() {
    let dir = TempDir::new("dashboard-off");
    let path = dir.write("d.xml", &descriptor());
    let rt = runtime().await;
    let d = Deployment::load_with(
        &path,
        Default::default(),
        DeployOptions {
            dashboard: None,
            ..support::options(&rt)
        },
    )
    .await
    .unwrap();
    assert!(d.dashboard_url().is_none());
    assert_eq!(d.status().await.virtual_nodes[0].name, "Workers");
    d.kill().await;
    rt.shutdown();
}

/// A peer's dashboard: its acquaintance answered, its slot lent to a
/// deployment, as JSON, as `actogrid status` text, and as metrics; the
/// token needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_dashboard_shows_its_overlay_slots_and_lent_runtimes() {
    const SECRET: &str = "peer-dashboard-test";
    let dir = TempDir::new("peer-dashboard");
    let work = dir.0.join("peers");
    let first = support::PeerProcess::start(&work, "127.0.0.1:0", 1, &[], SECRET, &[]);
    let second = support::PeerProcess::start(
        &work,
        "127.0.0.1:0",
        1,
        std::slice::from_ref(&first.address),
        SECRET,
        &[],
    );
    let url = first.dashboard_url().await;
    let (address, token) = {
        let rest = url.strip_prefix("http://").unwrap();
        let (address, query) = rest.split_once("/?token=").unwrap();
        (address.to_owned(), query.to_owned())
    };
    assert!(address.starts_with("127.0.0.1:"), "{url}");

    // A deployment takes both slots.
    let rt = runtime().await;
    let text = support::p2p_descriptor("2", &[first.address.as_str()], "30s", true);
    let path = dir.write("d.xml", &text);
    let mut options = support::options(&rt);
    options.pool = Some(actogrid::peer::Pool::Passphrase(SECRET.into()));
    let d = Deployment::load_with(&path, Default::default(), options)
        .await
        .unwrap();
    d.activate().await.unwrap();
    let nodes = d.virtual_node("Workers").unwrap().nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    // The deployment's own dashboard says who lent its runtimes.
    let mut providers: Vec<String> = d.status().await.virtual_nodes[0]
        .runtimes
        .iter()
        .map(|r| r.provider.clone())
        .collect();
    providers.sort();
    let mut lenders = vec![
        format!("peer {}", first.address),
        format!("peer {}", second.address),
    ];
    lenders.sort();
    assert_eq!(providers, lenders);

    // The first peer's view: its slot in use for the deployment, its
    // acquaintance asked and answering with its own slot in use.
    let mut view = None;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let (code, body) = get(&address, &format!("/api/state?token={token}"));
        assert_eq!(code, 200, "{body}");
        let v: actogrid::peer::PeerView = serde_json::from_str(&body).unwrap();
        let answered = v
            .neighbours
            .iter()
            .any(|n| n.address == second.address && n.error.is_none() && n.in_use == 1);
        if answered && v.peer.lent.iter().any(|l| l.pid.is_some()) {
            view = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let view = view.expect("the neighbour answered and the slot is lent");
    assert_eq!(view.peer.address, first.address);
    // The other peer, and the deployment's own place in the overlay.
    assert!(
        view.peer.acquaintances.contains(&second.address),
        "{view:?}"
    );
    assert_eq!(view.peer.count("in use"), 1, "{view:?}");
    assert_eq!(view.peer.lent.len(), 1);
    let neighbour = view
        .neighbours
        .iter()
        .find(|n| n.address == second.address)
        .unwrap();
    assert!(
        neighbour.acquaintances.contains(&first.address),
        "{neighbour:?}"
    );
    assert_eq!((neighbour.free, neighbour.in_use), (0, 1));

    // As text, from another process.
    let (ok, text, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || actogrid(&["status", &url])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(text.contains(&format!("peer {}", first.address)), "{text}");
    assert!(text.contains("1 in use (of 1)"), "{text}");
    assert!(
        text.contains(&format!(
            "{}: 0 free, 0 offered, 0 booked, 1 in use",
            second.address
        )),
        "{text}"
    );

    // Metrics; the page; no token, nothing.
    let (code, metrics) = get(&address, &format!("/metrics?token={token}"));
    assert_eq!(code, 200, "{metrics}");
    for line in [
        "actogrid_peer_slots{state=\"in_use\"} 1",
        "actogrid_peer_slots{state=\"free\"} 0",
        "actogrid_peer_lent_runtimes 1",
        "# TYPE actogrid_peer_messages_received counter",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    let (code, page) = get(&address, &format!("/?token={token}"));
    assert_eq!(code, 200);
    assert!(page.contains(&first.address), "{page}");
    for target in ["/api/state", "/metrics", "/", "/api/stream"] {
        let (code, body) = get(&address, target);
        assert_eq!(code, 401, "{target}: {body}");
        assert!(!body.contains(&second.address), "{body}");
    }
    d.kill().await;
    rt.shutdown();
}
