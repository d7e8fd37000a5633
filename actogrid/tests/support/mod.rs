//! Helpers shared by the deployment tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actogrid::descriptor::LoadOptions;
use actogrid::{Config, DeployOptions, Deployment, Runtime};

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "actogrid-test-{tag}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// Writes `text` to `name` inside, returning its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A directory with a short path (ssh control sockets below it must fit
/// in 107 bytes), removed when dropped.
pub fn short_temp_dir() -> TempDir {
    let dir = PathBuf::from(format!("/tmp/ag{}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

/// A child process killed (and waited for) when dropped, whatever
/// happens to the test.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn runtime() -> Runtime {
    let config = Config {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    Runtime::bind("127.0.0.1:0", config).await.expect("bind")
}

pub fn options(rt: &Runtime) -> DeployOptions {
    DeployOptions {
        runtime: Some(rt.clone()),
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_actogrid"))),
        lease: Duration::from_secs(3),
        progress: false,
        ..DeployOptions::default()
    }
}

pub async fn load(rt: &Runtime, path: &Path, vars: &[(&str, &str)]) -> Deployment {
    let mut load = LoadOptions::default();
    for (k, v) in vars {
        load = load.var(*k, *v);
    }
    Deployment::load_with(path, load, options(rt))
        .await
        .expect("the descriptor loads")
}

/// Whether process `pid` exists on this machine (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until `check` holds, up to `limit`; returns whether it did.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// A descriptor with one virtual node `Workers` of `runtimes` local
/// runtimes of `nodes` nodes each, extra attributes on the virtual node and
/// an optional commandPath.
pub fn local_descriptor(
    runtimes: u32,
    nodes: u32,
    vn_attrs: &str,
    command: Option<&str>,
) -> String {
    let command = command
        .map(|c| format!("<commandPath value=\"{c}\"/>"))
        .unwrap_or_default();
    descriptor(
        vn_attrs,
        &format!("runtimes=\"{runtimes}\" askedNodes=\"{nodes}\""),
        "localRuntime",
        &format!(
            "<processDefinition id=\"localRuntime\"><jvmProcess>{command}</jvmProcess></processDefinition>"
        ),
        false,
    )
}

/// Inserts technical services into a descriptor made by the helpers:
/// `defs` go into `<technicalServices>`, and virtual node `Workers` lists
/// `ids`.
pub fn with_services(descriptor: &str, ids: &str, defs: &str) -> String {
    descriptor
        .replacen(
            "<virtualNode name=\"Workers\"",
            &format!("<virtualNode name=\"Workers\" technicalServiceId=\"{ids}\""),
            1,
        )
        .replacen(
            "</ProActiveDescriptor>",
            &format!("<technicalServices>{defs}</technicalServices>\n</ProActiveDescriptor>"),
            1,
        )
}

/// The `actogrid.Environment` service the cross-provider tests apply.
pub const SITE_SERVICE: &str = r#"<technicalServiceDefinition id="site" class="actogrid.Environment">
  <arg name="site" value="lab-b"/>
  <arg name="env.ACTOGRID_SITE" value="lab-b"/>
</technicalServiceDefinition>"#;

/// Whether process `pid` has `NAME=value` in its environment.
pub fn has_env(pid: u32, pair: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == pair.as_bytes()))
}

/// Checks that [`SITE_SERVICE`] took effect on every node of `vn` and in
/// every runtime of `deployment`.
pub fn assert_site_applied(deployment: &Deployment, vn: &actogrid::VirtualNode) {
    let nodes = vn.current_nodes();
    assert!(!nodes.is_empty());
    for node in &nodes {
        let props = vn.properties(node);
        assert_eq!(
            props.get("site").map(String::as_str),
            Some("lab-b"),
            "{}: {props:?}",
            node.url()
        );
        assert_eq!(
            props.get("env.ACTOGRID_SITE").map(String::as_str),
            Some("lab-b")
        );
    }
    for r in deployment.runtimes() {
        assert!(
            has_env(r.pid, "ACTOGRID_SITE=lab-b"),
            "runtime {} on {}",
            r.pid,
            r.host
        );
    }
}

/// A descriptor with one virtual node `Workers` (extra attributes
/// `vn_attrs`) mapped to one `jvm` (extra attributes `jvm_attrs`) created
/// by process `root`, with `processes` (the `processDefinition`s) and an
/// optional `<register virtualNode="Workers"/>`.
pub fn descriptor(
    vn_attrs: &str,
    jvm_attrs: &str,
    root: &str,
    processes: &str,
    register: bool,
) -> String {
    let register = if register {
        r#"<register virtualNode="Workers"/>"#
    } else {
        ""
    };
    format!(
        r#"<?xml version="1.0"?>
<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="Workers" property="multiple" {vn_attrs}/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    {register}
    <mapping><map virtualNode="Workers"><jvmSet><vmName value="set"/></jvmSet></map></mapping>
    <jvms>
      <jvm name="set" {jvm_attrs}><creation><processReference refid="{root}"/></creation></jvm>
    </jvms>
  </deployment>
  <infrastructure>
    <processes>
{processes}
    </processes>
  </infrastructure>
</ProActiveDescriptor>
"#
    )
}

/// The error `nodes()` of virtual node `Workers` ends with, and its text.
pub async fn nodes_error(deployment: &Deployment) -> (actogrid::DeployError, String) {
    let err = deployment
        .virtual_node("Workers")
        .expect("Workers")
        .nodes()
        .await
        .expect_err("nodes() should fail");
    let text = err.to_string();
    (err, text)
}

/// Creates an `Echo` on every node and pings it.
pub async fn ping_all(nodes: &[actogrid::Node]) {
    let group = actogrid::Group::create(nodes, |n, _| actogrid::builtin::EchoProxy::new(n))
        .await
        .expect("an Echo on every node");
    group
        .broadcast(|e| e.ping())
        .values()
        .await
        .expect("every node answers");
}

/// After a deployer was killed: waits (up to 15 s) until `left()` is
/// empty; kills what is still there, fails if anything was, and says how
/// long it took.
pub fn assert_all_exit(what: &str, left: impl Fn() -> Vec<u32>) {
    let start = Instant::now();
    while !left().is_empty() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let remaining = left();
    for p in &remaining {
        let _ = std::process::Command::new("kill")
            .args(["-9", &p.to_string()])
            .status();
    }
    assert!(
        remaining.is_empty(),
        "{what} outlived their deployer: {remaining:?}"
    );
    eprintln!(
        "{what} gone {:.1} s after SIGKILL",
        start.elapsed().as_secs_f64()
    );
}
