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
