//! How remote runtimes reach the deployer.
//!
//! A process's runtime usually listens on loopback. When a descriptor
//! starts runtimes on other hosts, the deployment serves them from a
//! runtime of its own that listens on every interface and advertises the
//! address those hosts can reach: the one given (`advertise`), or the
//! address of this machine on the route to the first remote host.

use std::net::{IpAddr, SocketAddr};

use actogrid_descriptor::Descriptor;
use actogrid_descriptor::model::{ProcessKind, ServiceKind};
use actogrid_runtime::{Config, Runtime};

use super::{DeployError, DeployOptions};

/// The first host a descriptor reaches over ssh, or the first peer of the
/// overlay that is not this machine, if any.
pub(super) fn first_remote_host(d: &Descriptor) -> Option<String> {
    let by_process = d.processes.iter().find_map(|p| match &p.kind {
        ProcessKind::Ssh(s) => Some(s.hostname.clone()),
        ProcessKind::ProcessList(l) | ProcessKind::ProcessListByHost(l) => l.hosts.first().cloned(),
        _ => None,
    });
    by_process.or_else(|| {
        d.services.iter().find_map(|s| match &s.kind {
            ServiceKind::P2p(p) => p
                .peers
                .iter()
                .map(|peer| peer.value.host.clone())
                .find(|host| !is_local_name(host)),
            _ => None,
        })
    })
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

/// A runtime of the deployment's own, reachable from remote hosts.
pub(super) async fn remote_reachable_runtime(
    d: &Descriptor,
    options: &DeployOptions,
) -> Result<Runtime, DeployError> {
    let host = match &options.advertise {
        Some(a) => a.clone(),
        None => {
            let remote = first_remote_host(d).unwrap_or_default();
            let target = resolve_like_ssh(&remote, options).await.ok_or_else(|| {
                DeployError::Setup(format!(
                    "cannot resolve `{remote}` to find the address it reaches this machine at; set ACTOGRID_DEPLOYER_ADVERTISE (or DeployOptions::advertise)"
                ))
            })?;
            let ip = local_address_towards(target).ok_or_else(|| {
                DeployError::Setup(format!(
                    "no route from this machine to `{remote}` ({target}); set ACTOGRID_DEPLOYER_ADVERTISE (or DeployOptions::advertise)"
                ))
            })?;
            ip.to_string()
        }
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
