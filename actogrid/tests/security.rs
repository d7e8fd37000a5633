//! The attacks a stranger with network access tried against earlier
//! versions, replayed against real processes: every one must fail, and the
//! runtime attacked must log who tried.
//!
//! Targets: a node runtime (`actogrid node`), a runtime started by a
//! deployment, the deployer itself, and a peer daemon. Attackers: a
//! runtime without TLS, a runtime of another deployment (a certificate of
//! another authority), and, where the point is what even a member cannot
//! do, a runtime of the same deployment.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use actogrid::peer::{BinarySourceProxy, Pool};
use actogrid::{
    Authority, ErrorKind, Identity, Node, NodeProcess, NodeUrl, Proxy as _, Runtime,
    RuntimeAgentProxy, VnDirectoryProxy,
};
use actogrid_builtin::{EchoProxy, RecorderProxy};
use support::{PeerProcess, TempDir, local_descriptor, runtime};

const NEVER: Duration = Duration::from_secs(60);
const PASSPHRASE: &str = "security-test-pool-passphrase";

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(NEVER, fut)
        .await
        .expect("did not complete in time")
}

/// An `actogrid node` with credentials of `rt`'s deployment.
async fn node_of(rt: &Runtime) -> NodeProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_actogrid"));
    cmd.args(["node", "--listen", "127.0.0.1:0", "--exit-on-stdin-eof"]);
    actogrid::spawn_with(rt, cmd).await.unwrap()
}

/// A runtime without TLS, and one of another deployment.
fn strangers() -> Vec<(&'static str, Runtime)> {
    let other = Arc::new(Authority::generate("another deployment").unwrap());
    vec![
        (
            "a plaintext client",
            Runtime::builder().identity(Identity::plaintext()).build(),
        ),
        (
            "another deployment",
            Runtime::builder()
                .identity(Identity::member_of(&other).unwrap())
                .build(),
        ),
    ]
}

/// Everything a stranger may try on `node` (where `existing` lives and is
/// registered as `name`): each must fail.
async fn nothing_works(
    who: &str,
    stranger: &Runtime,
    node: &NodeUrl,
    existing: &RecorderProxy,
    name: &str,
) {
    let at = stranger.node(node);
    let created = within(EchoProxy::new(&at)).await;
    assert!(created.is_err(), "{who} created an object on {node}");
    let url = NodeUrl::new(node.host(), node.port(), name);
    let found = within(stranger.lookup::<RecorderProxy>(&url)).await;
    assert!(found.is_err(), "{who} looked {url} up");
    let theirs = stranger.adopt(existing);
    assert!(
        within(theirs.push(1)).await.is_err(),
        "{who} called {existing:?}"
    );
    assert!(
        within(theirs.active_ref().migrate_to(stranger.node(node).url()))
            .await
            .is_err(),
        "{who} migrated {existing:?}"
    );
    assert!(
        within(theirs.active_ref().terminate()).await.is_err(),
        "{who} terminated {existing:?}"
    );
    assert!(
        within(at.register("taken", &theirs)).await.is_err(),
        "{who} registered a name"
    );
    assert!(
        within(at.unregister(name)).await.is_err(),
        "{who} removed a name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_reach_nothing_of_a_node_a_deployed_runtime_or_the_deployer() {
    let rt = runtime().await;

    // A node runtime, started with credentials of this process.
    let node = node_of(&rt).await;

    // A deployment of one local runtime.
    let dir = TempDir::new("security");
    let path = dir.write("d.xml", &local_descriptor(1, 1, "", None));
    let deployment = support::load(&rt, &path, &[]).await;
    deployment.activate().await.unwrap();
    let deployed = within(deployment.virtual_node("Workers").unwrap().nodes())
        .await
        .unwrap()
        .remove(0);

    // The deployer itself.
    let own = rt.local_node("own");

    let targets: [(&str, Node); 3] = [
        ("a node runtime", node.node().clone()),
        ("a deployed runtime", deployed),
        ("the deployer", own),
    ];
    for (what, target) in &targets {
        let rec = RecorderProxy::new(target).await.unwrap();
        rec.push(7).await.unwrap();
        target.register("rec", &rec).await.unwrap();
        for (who, stranger) in strangers() {
            eprintln!("{who} against {what}");
            nothing_works(who, &stranger, target.url(), &rec, "rec").await;
            stranger.shutdown();
        }
        // Untouched by all of it.
        assert_eq!(rec.seen().await.unwrap(), vec![7], "{what}");
        let url = NodeUrl::new(target.url().host(), target.url().port(), "rec");
        assert_eq!(
            rt.lookup::<RecorderProxy>(&url)
                .await
                .unwrap()
                .count()
                .await
                .unwrap(),
            1
        );
    }
    deployment.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_machinery_is_never_created_on_request_not_even_by_a_member() {
    let rt = runtime().await;
    let node = node_of(&rt).await;
    let target = node.node();
    // The program source, asked to serve /etc/shadow.
    let source = BinarySourceProxy::new(target, "/etc/shadow".into(), "0".repeat(64), 1).await;
    let err = source.expect_err("a program source is made by its own runtime only");
    assert!(
        err.to_string().contains("created by its own runtime only"),
        "{err}"
    );
    // A runtime agent, to shut the node down.
    let err = RuntimeAgentProxy::new(target).await.unwrap_err();
    assert!(
        err.to_string().contains("created by its own runtime only"),
        "{err}"
    );
    // A virtual node's directory.
    let err = VnDirectoryProxy::new(target, "Workers".into())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("created by its own runtime only"),
        "{err}"
    );
    // The node still serves.
    EchoProxy::new(target).await.unwrap().ping().await.unwrap();
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_neither_replaced_nor_removed_by_another_runtime() {
    let rt = runtime().await;
    let node = node_of(&rt).await;
    let target = node.node();
    let rec = RecorderProxy::new(target).await.unwrap();
    target.register("mine", &rec).await.unwrap();

    // Another runtime of the same deployment.
    let other = Runtime::builder()
        .identity(Identity::member_of(&Identity::process_authority().unwrap()).unwrap())
        .build();
    let at = other.node(target.url());
    let theirs = EchoProxy::new(&at).await.unwrap();
    let replaced = at.register("mine", &theirs).await.unwrap_err();
    assert!(
        replaced.to_string().contains("already registered"),
        "{replaced}"
    );
    let removed = at.unregister("mine").await.unwrap_err();
    assert!(
        removed
            .to_string()
            .contains("registered by another runtime"),
        "{removed}"
    );
    let url = NodeUrl::new(target.url().host(), target.url().port(), "mine");
    assert_eq!(
        rt.lookup::<RecorderProxy>(&url)
            .await
            .unwrap()
            .active_ref()
            .id(),
        rec.active_ref().id()
    );
    // Its registrant may.
    target.unregister("mine").await.unwrap();
    assert!(rt.lookup::<RecorderProxy>(&url).await.is_err());
    other.shutdown();
    rt.shutdown();
}

/// A program that keeps a copy of what its standard input brings (the
/// ticket), then becomes the real runtime.
fn thief(dir: &TempDir) -> std::path::PathBuf {
    let stolen = dir.0.join("stolen");
    let script = format!(
        "#!/bin/sh\ntee {} | exec {}\n",
        stolen.display(),
        env!("CARGO_BIN_EXE_actogrid")
    );
    let path = dir.write("thief.sh", &script);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// Every `/proc/<pid>/{cmdline,environ}` this process may read.
fn process_texts() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        for what in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(what)) {
                out.push((pid, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_shows_nowhere_and_is_refused_once_used() {
    let dir = TempDir::new("ticket");
    let program = thief(&dir);
    let path = dir.write(
        "d.xml",
        &local_descriptor(1, 1, "", Some(program.to_str().unwrap())),
    );
    let rt = runtime().await;
    let deployment = support::load(&rt, &path, &[]).await;
    deployment.activate().await.unwrap();
    within(deployment.virtual_node("Workers").unwrap().nodes())
        .await
        .unwrap();
    let stolen = std::fs::read_to_string(dir.0.join("stolen")).unwrap();
    let ticket: serde_json::Value = serde_json::from_str(stolen.lines().next().unwrap()).unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    assert_eq!(ticket.len(), 32, "128 random bits");

    // In no command line and no environment of any process.
    for (pid, text) in process_texts() {
        assert!(!text.contains(&ticket), "process {pid} shows the ticket");
    }

    // Used by a process started by hand: refused, it was spent.
    let urls = deployment.registrar_urls().join(",");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_actogrid"))
            .env(actogrid::DEPLOYER_ENV, urls)
            .env(actogrid::CREDENTIALS_ENV, "stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stolen.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        drop(input);
        out
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused this runtime"), "{stderr}");
    assert_eq!(deployment.runtimes().len(), 1, "no rogue runtime joined");
    deployment.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_takes_no_one_without_the_pools_credentials() {
    // Without credentials the daemon refuses to start, and the passphrase
    // has no command-line option.
    let out = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["peer", "--listen", "127.0.0.1:0"])
        .env_remove(actogrid::peer::PASSPHRASE_ENV)
        .env_remove(actogrid::peer::PASSPHRASE_FILE_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs its pool's credentials"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["peer", "--token", "secret"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no --token option");

    let dir = TempDir::new("peer-strangers");
    let peer = PeerProcess::start(&dir.0.join("peer"), "127.0.0.1:0", 1, &[], PASSPHRASE, &[]);
    let url = actogrid::peer::endpoint_url(&peer.address).unwrap();
    let node = NodeUrl::new(url.host(), url.port(), "overlay");
    let wrong_pool = Runtime::builder()
        .identity(
            Pool::Passphrase("another pool's passphrase".into())
                .identity("x")
                .unwrap(),
        )
        .build();
    let mut all = strangers();
    all.push(("another pool", wrong_pool));
    all.push(("a runtime of a deployment", runtime().await));
    for (who, stranger) in all {
        let found = within(stranger.lookup::<actogrid::peer::OverlayEndpointProxy>(&url)).await;
        assert!(found.is_err(), "{who} found the peer's endpoint");
        let created = within(EchoProxy::new(&stranger.node(&node))).await;
        assert!(created.is_err(), "{who} created an object on the peer");
        stranger.shutdown();
    }
    // A member of the pool may talk to the overlay, and nothing more.
    let member = Runtime::builder()
        .identity(
            Pool::Passphrase(PASSPHRASE.into())
                .identity("member")
                .unwrap(),
        )
        .build();
    within(member.lookup::<actogrid::peer::OverlayEndpointProxy>(&url))
        .await
        .expect("a member finds the endpoint");
    let created = within(EchoProxy::new(&member.node(&node)))
        .await
        .unwrap_err();
    assert_eq!(created.kind(), ErrorKind::Refused, "{created}");
    member.shutdown();
    // Logged as it happened; the peer's output is read as it comes.
    for text in ["TLS handshake failed", "refused a control request"] {
        assert!(
            peer.logged(text, Duration::from_secs(10)).await,
            "who tried is logged ({text}): {}",
            peer.log()
        );
    }
}
