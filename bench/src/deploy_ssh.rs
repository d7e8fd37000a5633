//! `deploy-ssh`: a deployment of 3 hosts × 4 runtimes over ssh, from
//! `activate()` until every node has answered one call, against a plain
//! `ssh host true` fan-out to the same 3 hosts (one per runtime, all at
//! once, each a fresh connection) in the same run.
//!
//! It needs ssh hosts: by default the three of `scripts/testbed/ssh-hosts`
//! (`scripts/testbed/ssh-hosts up 3` first). The binary is shipped to each
//! host by the first (untimed) deployment, as a repeated deployment finds
//! it in the hosts' cache.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actogrid::{DeployOptions, Runtime};
use anyhow::ensure;

use crate::deployment;
use crate::report::Report;
use crate::timing::Summary;

/// Options of `deploy-ssh`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Hosts, as the ssh configuration names them.
    #[arg(long, num_args = 1.., default_values_t = ["agh1".to_owned(), "agh2".to_owned(), "agh3".to_owned()])]
    hosts: Vec<String>,
    /// Runtimes per host.
    #[arg(long, default_value_t = 4)]
    per_host: u32,
    /// ssh client configuration.
    #[arg(long, default_value = "/run/actogrid-testbed/ssh/ssh_config")]
    ssh_config: PathBuf,
    /// Timed rounds per side.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn descriptor(hosts: &[String], per_host: u32) -> String {
    deployment::descriptor(
        per_host as usize,
        "ssh",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
      <processDefinition id="ssh">
        <processListbyHost hostlist="{}"><processReference refid="runtime"/></processListbyHost>
      </processDefinition>"#,
            hosts.join(" ")
        ),
    )
}

async fn deploy_once(rt: &Runtime, path: &std::path::Path, args: &Args) -> anyhow::Result<f64> {
    let options = DeployOptions {
        ssh_config: Some(args.ssh_config.clone()),
        ..DeployOptions::default()
    };
    let expected = args.hosts.len() * args.per_host as usize;
    deployment::deploy_until_answered(rt, path, options, expected).await
}

async fn fan_out_once(args: &Args) -> anyhow::Result<f64> {
    let started = Instant::now();
    let runs = args.hosts.iter().flat_map(|h| {
        (0..args.per_host).map(move |_| {
            tokio::process::Command::new("ssh")
                .arg("-F")
                .arg(&args.ssh_config)
                .args([h.as_str(), "true"])
                .status()
        })
    });
    for status in futures::future::join_all(runs).await {
        ensure!(status?.success(), "ssh host true failed");
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Report> {
    ensure!(
        args.rounds > 0 && args.per_host > 0 && !args.hosts.is_empty(),
        "nothing to deploy"
    );
    ensure!(
        args.ssh_config.exists(),
        "no ssh configuration at {} (scripts/testbed/ssh-hosts up 3 makes the test hosts)",
        args.ssh_config.display()
    );
    let dir = std::env::temp_dir().join(format!("actogrid-bench-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("ssh.xml");
    std::fs::write(&path, descriptor(&args.hosts, args.per_host))?;
    let rt = Runtime::bind("127.0.0.1:0", actogrid::Config::default()).await?;
    let result = async {
        let first = deploy_once(&rt, &path, args).await?;
        fan_out_once(args).await?;
        let mut deploys = Vec::new();
        let mut fans = Vec::new();
        for _ in 0..args.rounds {
            deploys.push(deploy_once(&rt, &path, args).await?);
            fans.push(fan_out_once(args).await?);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<_, anyhow::Error>((first, deploys, fans))
    }
    .await;
    rt.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let (first, deploys, fans) = result?;
    let d = Summary::of(&deploys);
    let f = Summary::of(&fans);
    let runtimes = args.hosts.len() * args.per_host as usize;
    Ok(Report::new(
        "deploy-ssh",
        "ms",
        d.median,
        d.p90,
        format!("{runtimes} plain `ssh host true` at once"),
        f.median,
    )
    .with("hosts", args.hosts.len())
    .with("runtimes", runtimes)
    .with_figure("first_ms", first)
    .note(format!("first deployment (binary shipped): {first:.1} ms"))
    .note(format!("deployment (binary cached): {}", d.describe("ms")))
    .note(format!("ssh fan-out: {}", f.describe("ms"))))
}
