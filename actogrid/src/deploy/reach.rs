//! How remote runtimes reach the deployer.
//!
//! A process's runtime usually listens on loopback. When a descriptor
//! starts runtimes on other hosts, the deployment serves them from a
//! runtime of its own that listens on every interface and advertises the
//! address those hosts can reach: the one given (`advertise`), or the
//! address of this machine on the route to the first remote host that
//! resolves. A host that does not resolve fails on its own, like a host
//! that refuses the connection: it never stops the deployment.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use actogrid_descriptor::Descriptor;
use actogrid_descriptor::model::{ProcessKind, ServiceKind};
use actogrid_runtime::{Config, Runtime};

use super::{DeployError, DeployOptions};

/// Every host a descriptor reaches over ssh, then the peers of the
/// overlay that are not this machine, in the order written, once each.
pub(super) fn remote_hosts(d: &Descriptor) -> Vec<String> {
    let by_process = d.processes.iter().flat_map(|p| match &p.kind {
        ProcessKind::Ssh(s) => vec![s.hostname.clone()],
        ProcessKind::Hierarchical(h) => vec![h.hostname.clone()],
        ProcessKind::ProcessList(l) | ProcessKind::ProcessListByHost(l) => l.hosts.clone(),
        _ => Vec::new(),
    });
    let peers = d.services.iter().flat_map(|s| match &s.kind {
        ServiceKind::P2p(p) => p
            .peers
            .iter()
            .map(|peer| peer.value.host.clone())
            .filter(|host| !is_local_name(host))
            .collect(),
        _ => Vec::new(),
    });
    let mut seen = std::collections::HashSet::new();
    by_process
        .chain(peers)
        .filter(|h| seen.insert(h.clone()))
        .collect()
}

/// Whether `host` names this machine's loopback.
fn is_local_name(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `runtime` can only be reached from this machine.
pub(super) fn is_loopback(runtime: &Runtime) -> bool {
    runtime
        .address()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .is_none_or(|a| a.ip().is_loopback())
}

/// The address `host` resolves to, as ssh would resolve it (aliases of
/// the ssh configuration included).
async fn resolve_like_ssh(host: &str, options: &DeployOptions) -> Option<IpAddr> {
    let mut cmd = tokio::process::Command::new("ssh");
    if let Some(cfg) = &options.ssh_config {
        cmd.arg("-F").arg(cfg);
    }
    cmd.arg("-G").arg(host);
    let name = match cmd.output().await {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("hostname ").map(|h| h.trim().to_owned()))
            .unwrap_or_else(|| host.to_owned()),
        _ => host.to_owned(),
    };
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(ip);
    }
    tokio::net::lookup_host((name.as_str(), 22))
        .await
        .ok()?
        .next()
        .map(|a| a.ip())
}

/// This machine's address on the route to `target` (no packet is sent).
fn local_address_towards(target: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(SocketAddr::new(target, 9)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// How many remote hosts are tried to find the address they reach this
/// machine at (all at once), and for how long.
const PROBED_HOSTS: usize = 8;
const PROBE_TIME: Duration = Duration::from_secs(5);

/// This machine's address on the route to the first of `hosts` that
/// resolves. A host that does not resolve is left to fail on its own
/// when it is reached (one per-host error among others); when none does,
/// the address of the default route, else the host name.
async fn address_towards(hosts: &[String], options: &DeployOptions) -> String {
    let probes = hosts.iter().take(PROBED_HOSTS).map(|host| async move {
        let target = resolve_like_ssh(host, options).await?;
        local_address_towards(target).map(|ip| (host, target, ip))
    });
    let found = tokio::time::timeout(PROBE_TIME, futures::future::join_all(probes))
        .await
        .unwrap_or_default();
    if let Some((host, target, ip)) = found.into_iter().flatten().next() {
        tracing::debug!("`{host}` resolves to {target}; this machine is {ip} on that route");
        return ip.to_string();
    }
    // No packet is sent: this only asks the routing table which address
    // the default route leaves from (a documentation address, routed by
    // the default route only).
    let fallback = "198.51.100.1"
        .parse::<IpAddr>()
        .ok()
        .and_then(local_address_towards)
        .map_or_else(actogrid_technical_services::hostname, |ip| ip.to_string());
    tracing::warn!(
        "none of the remote hosts ({}) resolves; remote runtimes would reach this deployment at {fallback} (set ACTOGRID_DEPLOYER_ADVERTISE or DeployOptions::advertise to choose)",
        hosts.join(", ")
    );
    fallback
}

/// A runtime of the deployment's own, reachable from remote hosts.
pub(super) async fn remote_reachable_runtime(
    d: &Descriptor,
    options: &DeployOptions,
) -> Result<Runtime, DeployError> {
    let host = match &options.advertise {
        Some(a) => a.clone(),
        None => address_towards(&remote_hosts(d), options).await,
    };
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .map_err(|e| DeployError::Setup(format!("cannot listen for remote runtimes: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| DeployError::Setup(e.to_string()))?
        .port();
    let address = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    tracing::info!("remote runtimes reach this deployment at {address}");
    let rt = Runtime::builder()
        .config(Config::default())
        .address(address)
        .build();
    let server = rt.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener, std::future::pending()).await {
            tracing::error!("the deployment's server stopped: {e}");
        }
    });
    Ok(rt)
}
