//! What the deployment benchmarks share: the descriptor they deploy and
//! one timed deployment.

use std::path::Path;
use std::time::Instant;

use actogrid::descriptor::LoadOptions;
use actogrid::{DeployOptions, Deployment, Runtime};
use actogrid_builtin::EchoProxy;
use anyhow::{Context as _, ensure};

/// A descriptor of virtual node `Workers`: `runtimes` copies of process
/// `root`, out of the process definitions `processes`.
pub(crate) fn descriptor(runtimes: usize, root: &str, processes: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="Workers" property="multiple" timeout="120s"/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    <mapping><map virtualNode="Workers"><jvmSet><vmName value="set"/></jvmSet></map></mapping>
    <jvms>
      <jvm name="set" runtimes="{runtimes}"><creation><processReference refid="{root}"/></creation></jvm>
    </jvms>
  </deployment>
  <infrastructure>
    <processes>{processes}</processes>
  </infrastructure>
</ProActiveDescriptor>
"#
    )
}

/// One deployment from `activate()` until each of its `expected` nodes
/// answered one call (ms); then torn down, untimed.
pub(crate) async fn deploy_until_answered(
    rt: &Runtime,
    path: &Path,
    options: DeployOptions,
    expected: usize,
) -> anyhow::Result<f64> {
    let options = DeployOptions {
        runtime: Some(rt.clone()),
        progress: false,
        ..options
    };
    let deployment = Deployment::load_with(path, LoadOptions::default(), options).await?;
    let started = Instant::now();
    deployment.activate().await?;
    let nodes = deployment.virtual_node("Workers")?.nodes().await?;
    ensure!(
        nodes.len() == expected,
        "{} of {expected} nodes",
        nodes.len()
    );
    let calls = nodes.iter().map(|n| {
        let n = n.clone();
        async move {
            EchoProxy::new(&n).await?.ping().await?;
            Ok::<(), anyhow::Error>(())
        }
    });
    for r in futures::future::join_all(calls).await {
        r.context("a node did not answer")?;
    }
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    deployment.kill().await;
    Ok(elapsed)
}
