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

/// A descriptor with one virtual node `vn` of `runtimes` local runtimes of
/// `nodes` nodes each, plus extra attributes on the virtual node and an
/// optional commandPath.
pub fn local_descriptor(
    runtimes: u32,
    nodes: u32,
    vn_attrs: &str,
    command: Option<&str>,
) -> String {
    let command = command
        .map(|c| format!("<commandPath value=\"{c}\"/>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0"?>
<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="Workers" property="multiple" {vn_attrs}/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    <mapping>
      <map virtualNode="Workers"><jvmSet><vmName value="local"/></jvmSet></map>
    </mapping>
    <jvms>
      <jvm name="local" runtimes="{runtimes}" askedNodes="{nodes}">
        <creation><processReference refid="localRuntime"/></creation>
      </jvm>
    </jvms>
  </deployment>
  <infrastructure>
    <processes>
      <processDefinition id="localRuntime"><jvmProcess>{command}</jvmProcess></processDefinition>
    </processes>
  </infrastructure>
</ProActiveDescriptor>
"#
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
