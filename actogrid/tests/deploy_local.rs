//! Deployments of local runtimes, with real processes: nodes arrive and
//! answer calls, failures say what and where, and nothing outlives the
//! deployment — not even when the deployer is killed with SIGKILL.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use actogrid::DeployError;
use futures::StreamExt;
use support::{TempDir, alive, eventually, load, local_descriptor, runtime};

const NEVER: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_runtimes_register_answer_and_go_away_with_the_deployment() {
    let dir = TempDir::new("local");
    let path = dir.write(
        "local.xml",
        &local_descriptor(3, 2, "timeout=\"30s\"", None),
    );
    let rt = runtime().await;
    let deployment = load(&rt, &path, &[]).await;
    let workers = deployment.virtual_node("Workers").unwrap();
    assert_eq!(workers.expected(), Some(6));
    let mut arrivals = workers.arrivals();
    deployment.activate().await.unwrap();
    let nodes = tokio::time::timeout(NEVER, workers.nodes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(nodes.len(), 6);
    assert_eq!(workers.size(), 6);
    // The stream saw the same nodes.
    let mut streamed = Vec::new();
    for _ in 0..6 {
        streamed.push(arrivals.next().await.unwrap().url().to_string());
    }
    streamed.sort();
    let mut urls: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
    urls.sort();
    assert_eq!(streamed, urls);

    // Every node answers, and round-robin visits them all.
    support::ping_all(&nodes).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(workers.node().await.unwrap().url().to_string());
    }
    assert_eq!(seen.len(), 6);

    let runtimes = deployment.runtimes();
    assert_eq!(runtimes.len(), 3);
    let pids: Vec<u32> = runtimes.iter().map(|r| r.pid).collect();
    assert!(pids.iter().all(|p| alive(*p)));

    deployment.kill().await;
    assert!(
        eventually(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p))).await,
        "runtimes left behind: {pids:?}"
    );
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_deployment_tears_it_down() {
    let dir = TempDir::new("drop");
    let path = dir.write("d.xml", &local_descriptor(2, 1, "", None));
    let rt = runtime().await;
    let deployment = load(&rt, &path, &[]).await;
    deployment.activate().await.unwrap();
    let vn = deployment.virtual_node("Workers").unwrap();
    vn.nodes().await.unwrap();
    let pids: Vec<u32> = deployment.runtimes().iter().map(|r| r.pid).collect();
    drop(deployment);
    assert!(eventually(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p))).await);
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_cannot_start_is_reported_with_its_own_words() {
    let dir = TempDir::new("bad-command");
    let path = dir.write(
        "d.xml",
        &local_descriptor(1, 1, "timeout=\"20s\"", Some("/nonexistent/actogrid-node")),
    );
    let rt = runtime().await;
    let deployment = load(&rt, &path, &[]).await;
    deployment.activate().await.unwrap();
    let vn = deployment.virtual_node("Workers").unwrap();
    let started = std::time::Instant::now();
    let err = vn.nodes().await.unwrap_err();
    // Known at once, not at the timeout.
    assert!(started.elapsed() < Duration::from_secs(15), "{err}");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            DeployError::NotEnoughNodes {
                impossible: true,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("exited with code 127"), "{text}");
    assert!(text.contains("/nonexistent/actogrid-node"), "{text}");
    // Plain words: what is needed, what failed.
    assert!(
        text.starts_with("virtual node `Workers` needs 1 node, but its only node failed"),
        "{text}"
    );
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_does_not_resolve_fails_alone_with_a_hint() {
    // One runtime on a host no resolver knows, one on this machine:
    // the host fails on its own, the deployment goes on (minNodeNumber).
    let dir = TempDir::new("unresolved");
    let text = local_descriptor(1, 1, "timeout=\"30s\" minNodeNumber=\"1\"", None)
        .replace(
            "<vmName value=\"set\"/>",
            "<vmName value=\"remote\"/><vmName value=\"set\"/>",
        )
        .replace(
            "</jvms>",
            "<jvm name=\"remote\"><creation><processReference refid=\"toNowhere\"/></creation></jvm></jvms>",
        )
        .replace(
            "</processes>",
            "<processDefinition id=\"toNowhere\"><sshProcess hostname=\"no-such-host.invalid\"><processReference refid=\"localRuntime\"/></sshProcess></processDefinition></processes>",
        );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let options = actogrid::DeployOptions {
        ssh_config: None,
        ..support::options(&rt)
    };
    let deployment = actogrid::Deployment::load_with(&path, Default::default(), options)
        .await
        .expect("a host that does not resolve does not stop the deployment");
    deployment.activate().await.unwrap();
    let vn = deployment.virtual_node("Workers").unwrap();
    let nodes = tokio::time::timeout(NEVER, vn.nodes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(nodes.len(), 1);
    support::ping_all(&nodes).await;
    // The local runtime may be up before the resolver has answered.
    let deadline = std::time::Instant::now() + NEVER;
    while vn.failures().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let failures = vn.failures().join("\n");
    assert!(
        failures.contains("`no-such-host.invalid` does not resolve"),
        "{failures}"
    );
    assert!(failures.contains("ACTOGRID_SSH_CONFIG"), "{failures}");
    deployment.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_node_number_lets_a_partial_deployment_through() {
    // Two runtimes of which one cannot start: minNodeNumber 1 is met.
    let dir = TempDir::new("min");
    let text = local_descriptor(1, 1, "timeout=\"20s\" minNodeNumber=\"1\"", None).replace(
        "<vmName value=\"set\"/>",
        "<vmName value=\"set\"/><vmName value=\"broken\"/>",
    )
    .replace(
        "</jvms>",
        "<jvm name=\"broken\"><creation><processReference refid=\"brokenRuntime\"/></creation></jvm></jvms>",
    )
    .replace(
        "</processes>",
        "<processDefinition id=\"brokenRuntime\"><jvmProcess><commandPath value=\"/bin/false\"/></jvmProcess></processDefinition></processes>",
    );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let deployment = load(&rt, &path, &[]).await;
    deployment.activate().await.unwrap();
    let vn = deployment.virtual_node("Workers").unwrap();
    let nodes = tokio::time::timeout(NEVER, vn.nodes())
        .await
        .unwrap()
        .unwrap();
    assert!(!nodes.is_empty());
    deployment.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_with_a_wrong_ticket_is_refused() {
    let dir = TempDir::new("token");
    let path = dir.write("d.xml", &local_descriptor(1, 1, "", None));
    let rt = runtime().await;
    let deployment = load(&rt, &path, &[]).await;
    let urls = deployment.registrar_urls().join(",");
    let roots = rt.identity().roots_pem().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_actogrid"))
            .env(actogrid::DEPLOYER_ENV, urls)
            .env(actogrid::CREDENTIALS_ENV, "stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let ticket = serde_json::json!({ "ticket": "not-a-ticket", "roots": roots });
        let mut input = child.stdin.take().unwrap();
        writeln!(input, "{ticket}\n{}", actogrid::CREDENTIALS_END).unwrap();
        let out = child.wait_with_output().unwrap();
        drop(input);
        out
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused this runtime"), "{stderr}");
    assert!(stderr.contains("unknown, used up"), "{stderr}");
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_jvm_makes_this_process_a_node() {
    let dir = TempDir::new("current");
    let text = local_descriptor(1, 1, "", None).replace(
        "<vmName value=\"set\"/>",
        "<currentJVM/><vmName value=\"set\"/>",
    );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let deployment = load(&rt, &path, &[]).await;
    deployment.activate().await.unwrap();
    let nodes = deployment
        .virtual_node("Workers")
        .unwrap()
        .nodes()
        .await
        .unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes.iter().filter(|n| n.is_local()).count(), 1);
    // Objects created on this process's node end with the deployment.
    let local = nodes.iter().find(|n| n.is_local()).unwrap();
    let rec = actogrid_builtin::RecorderProxy::new(local).await.unwrap();
    assert_eq!(rec.push(1).await.unwrap(), 1);
    deployment.kill().await;
    let err = rec.push(2).await.unwrap_err();
    assert_eq!(err.kind(), actogrid::ErrorKind::NoSuchObject, "{err}");
    rt.shutdown();
}

/// Child processes of `pid` (by their parent id).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

#[test]
fn a_deployer_killed_with_sigkill_leaves_no_runtime_behind() {
    let dir = TempDir::new("sigkill");
    let path = dir.write("d.xml", &local_descriptor(4, 1, "", None));
    let mut deployer = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["deploy", "--no-progress", "--lease-ms", "3000"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(deployer.stdout.take().unwrap()).lines();
    for _ in 0..4 {
        let line = lines.next().expect("a node URL").unwrap();
        assert!(line.starts_with("Workers\tactogrid://"), "{line}");
    }
    let runtimes = children_of(deployer.id());
    assert_eq!(runtimes.len(), 4, "{runtimes:?}");
    deployer.kill().unwrap(); // SIGKILL: no chance to clean up
    deployer.wait().unwrap();
    support::assert_all_exit("runtimes", || {
        runtimes.iter().copied().filter(|p| alive(*p)).collect()
    });
}

#[test]
fn actogrid_deploy_tears_down_on_ctrl_c() {
    let dir = TempDir::new("sigint");
    let path = dir.write("d.xml", &local_descriptor(2, 1, "", None));
    let mut deployer = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["deploy", "--no-progress"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(deployer.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        lines.next().expect("a node URL").unwrap();
    }
    let runtimes = children_of(deployer.id());
    assert_eq!(runtimes.len(), 2);
    Command::new("kill")
        .args(["-INT", &deployer.id().to_string()])
        .status()
        .unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut deployer.stderr.take().unwrap(), &mut logs).unwrap();
    let status = deployer.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(runtimes.iter().all(|p| !alive(*p)), "left: {runtimes:?}");
    // Logs written to a pipe (or a file) carry no terminal colour codes.
    assert!(logs.contains("INFO"), "{logs}");
    assert!(!logs.contains('\x1b'), "colour codes in {logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_timeout_waits_the_whole_timeout() {
    let dir = TempDir::new("wait-for-timeout");
    let path = dir.write(
        "d.xml",
        &local_descriptor(2, 1, "timeout=\"2s\" waitForTimeout=\"true\"", None),
    );
    let rt = runtime().await;
    let deployment = load(&rt, &path, &[]).await;
    let started = std::time::Instant::now();
    deployment.activate().await.unwrap();
    let nodes = deployment
        .virtual_node("Workers")
        .unwrap()
        .nodes()
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "returned before the timeout"
    );
    assert_eq!(nodes.len(), 2);
    deployment.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_settings_reach_every_runtime_a_deployment_starts() {
    let dir = TempDir::new("settings");
    let descriptor = local_descriptor(2, 1, "timeout=\"30s\"", None).replacen(
        "</ProActiveDescriptor>",
        "<runtimeSettings>\n\
           <setting name=\"heartbeatTimeout\" value=\"17s\"/>\n\
           <setting name=\"callTimeout\" value=\"2m\"/>\n\
         </runtimeSettings>\n</ProActiveDescriptor>",
        1,
    );
    let path = dir.write("settings.xml", &descriptor);
    let rt = runtime().await;
    let options = actogrid::DeployOptions {
        settings: vec![("max_objects".into(), "12345".into())],
        ..support::options(&rt)
    };
    let deployment = actogrid::Deployment::load_with(&path, Default::default(), options)
        .await
        .expect("loads");
    assert_eq!(
        deployment.settings().heartbeat_timeout,
        Duration::from_secs(17)
    );
    deployment.activate().await.unwrap();
    let nodes = tokio::time::timeout(NEVER, deployment.virtual_node("Workers").unwrap().nodes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(nodes.len(), 2);
    for node in &nodes {
        let w = actogrid_builtin::WorkerProxy::new(node, "w".into())
            .await
            .unwrap();
        let settings = w.settings().await.unwrap();
        assert!(settings.contains("heartbeat_timeout=17000ms"), "{settings}");
        assert!(settings.contains("call_timeout=120000ms"), "{settings}");
        assert!(settings.contains("max_objects=12345"), "{settings}");
    }
    deployment.kill().await;
}
