//! The started runtime's side of a deployment: find the deployer, serve,
//! register with the one-time ticket, keep the lease, and exit when the
//! deployer says so or can no longer be reached.
//!
//! A runtime started by a deployer has `ACTOGRID_DEPLOYER` in its
//! environment; `#[actogrid::main]` and the `actogrid` binary both check it
//! before anything else.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actogrid_runtime::{Config, NodeUrl, Runtime};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use actogrid_technical_services::hostname;

use super::registrar::{RegistrarProxy, Registration};

/// Where the deployer can be reached: comma-separated registrar URLs, tried
/// in parallel (the first that answers wins).
pub const DEPLOYER_ENV: &str = "ACTOGRID_DEPLOYER";
/// How many nodes the runtime hosts (`askedNodes`).
pub const NODES_ENV: &str = "ACTOGRID_NODES";
/// Prefix of the names of its nodes (`<prefix>-0`, `<prefix>-1`, …).
pub const NODE_PREFIX_ENV: &str = "ACTOGRID_NODE_PREFIX";
/// Address to listen on (default: loopback when the deployer is local,
/// every interface otherwise; port 0 picks one).
pub const LISTEN_ENV: &str = "ACTOGRID_LISTEN";
/// Host (or `host:port`) to advertise, when others reach this machine by
/// another address than the one it uses to reach the deployer.
pub const ADVERTISE_ENV: &str = "ACTOGRID_ADVERTISE";

/// Addresses this runtime reaches by another way than their own:
/// comma-separated `address=through` pairs (`host:port=host:port`). Set for
/// runtimes behind a front-end's relay: the deployer's address leads to
/// the relay.
pub(crate) const ROUTES_ENV: &str = "ACTOGRID_ROUTES";

/// `host:port`, with an IPv6 host in brackets.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Dials some addresses through others ([`ROUTES_ENV`]), the rest as is.
struct Routes(std::collections::HashMap<String, String>);

impl Routes {
    fn parse(text: &str) -> anyhow::Result<Routes> {
        let mut map = std::collections::HashMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (from, to) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("{ROUTES_ENV}: `{pair}` is not `address=through`")
            })?;
            map.insert(from.trim().to_owned(), to.trim().to_owned());
        }
        Ok(Routes(map))
    }
}

impl actogrid_runtime::Connector for Routes {
    fn connect(
        &self,
        address: &str,
    ) -> futures::future::BoxFuture<'static, std::io::Result<Box<dyn actogrid_runtime::Io>>> {
        let through = self.0.get(address).map_or(address, String::as_str);
        actogrid_runtime::TcpConnector.connect(through)
    }
}

/// Set (to `1`) when the runtime must exit as soon as its standard input
/// closes: a lending peer starts runtimes with a pipe on stdin, so that
/// they end with the peer even when it is killed.
pub const EXIT_ON_STDIN_EOF_ENV: &str = "ACTOGRID_EXIT_ON_STDIN_EOF";

/// `true` when this process was started by a deployer.
pub(crate) fn launched_by_deployer() -> bool {
    std::env::var_os(DEPLOYER_ENV).is_some() || super::relay::requested()
}

fn stop_signal() -> &'static Notify {
    static STOP: OnceLock<Notify> = OnceLock::new();
    STOP.get_or_init(Notify::new)
}

/// What a runtime says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// Host name.
    pub hostname: String,
    /// Process id.
    pub pid: u32,
}

/// One per started runtime: the deployer's handle on the process.
#[derive(Debug, Default)]
pub struct RuntimeAgent;

#[crate::active(crate = crate, internal)]
impl RuntimeAgent {
    /// The agent of this process.
    pub fn new() -> Self {
        RuntimeAgent
    }

    /// Host name and pid.
    pub fn info(&self) -> RuntimeInfo {
        RuntimeInfo {
            hostname: hostname(),
            pid: std::process::id(),
        }
    }

    /// The active objects living in this runtime (for the deployment's
    /// dashboard).
    pub fn objects(&self) -> super::dashboard::HostedObjects {
        let rt = actogrid_runtime::current();
        super::dashboard::HostedObjects {
            runtime: rt.as_ref().map_or(0, Runtime::id),
            objects: rt
                .map(|rt| {
                    rt.objects_here()
                        .into_iter()
                        .map(super::dashboard::ObjectStatus::from)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Stops the runtime once this reply has left.
    pub fn shutdown(&self) {
        stop_signal().notify_one();
    }

    /// Ends the process at once, shortly after this reply has left, as a
    /// crash would (fault injection from the dashboard): nothing is
    /// cleaned up, the deployment finds out by the lease.
    pub fn crash(&self) {
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::process::exit(137);
        });
    }
}

struct Launch {
    deployers: Vec<NodeUrl>,
    nodes: u32,
    prefix: String,
    listen: Option<String>,
    advertise: Option<String>,
    exit_on_stdin_eof: bool,
    routes: Option<Routes>,
}

fn read_env() -> anyhow::Result<Launch> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let deployers = var(DEPLOYER_ENV).unwrap_or_default();
    let deployers = deployers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<NodeUrl>()
                .map_err(|e| anyhow::anyhow!("{DEPLOYER_ENV}: `{s}` is not a registrar URL: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!deployers.is_empty(), "{DEPLOYER_ENV} names no deployer");
    let nodes = match var(NODES_ENV) {
        None => 1,
        Some(n) => n
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("{NODES_ENV}: `{n}` is not a positive number"))?,
    };
    Ok(Launch {
        deployers,
        nodes,
        prefix: var(NODE_PREFIX_ENV).unwrap_or_else(|| "node".to_owned()),
        listen: var(LISTEN_ENV),
        advertise: var(ADVERTISE_ENV),
        exit_on_stdin_eof: var(EXIT_ON_STDIN_EOF_ENV).is_some_and(|v| v != "0"),
        routes: var(ROUTES_ENV).map(|r| Routes::parse(&r)).transpose()?,
    })
}

/// Connects to every candidate at once; the first that accepts wins.
async fn reach_deployer(candidates: &[NodeUrl]) -> anyhow::Result<(NodeUrl, SocketAddr)> {
    let attempts = candidates.iter().map(|url| {
        let url = url.clone();
        Box::pin(async move {
            let target = format!("{}:{}", url.host(), url.port());
            let stream = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(&target),
            )
            .await
            .map_err(|_| format!("{target}: timed out"))?
            .map_err(|e| format!("{target}: {e}"))?;
            let local = stream.local_addr().map_err(|e| format!("{target}: {e}"))?;
            Ok::<_, String>((url, local))
        })
    });
    match futures::future::select_ok(attempts).await {
        Ok((found, _)) => Ok(found),
        Err(last) => anyhow::bail!(
            "cannot reach the deployer at any of {} (last error: {last}); set {ADVERTISE_ENV} on the deployer's side or check the network",
            candidates
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Serves as a runtime of a deployment until the deployer lets go.
pub(crate) async fn serve_deployed() -> anyhow::Result<()> {
    let mut launch = read_env()?;
    let (registrar_url, local) = reach_deployer(&launch.deployers).await?;
    let loopback = local.ip().is_loopback();
    let listen = launch.listen.clone().unwrap_or_else(|| {
        if loopback {
            "127.0.0.1:0".to_owned()
        } else {
            "0.0.0.0:0".to_owned()
        }
    });
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr()?;
    let advertise = advertised(launch.advertise.as_deref(), bound, local.ip());
    let config = Config::from_env()?;
    let (identity, link) = enroll(&registrar_url, &config).await?;
    let mut builder = Runtime::builder()
        .config(config)
        .identity(identity)
        .link(link)
        .address(advertise);
    if let Some(routes) = launch.routes.take() {
        builder = builder.connector(routes);
    }
    let rt = builder.build();
    rt.make_global();
    let server = rt.clone();
    let serving = tokio::spawn(async move { server.serve(listener, std::future::pending()).await });

    let outcome = async {
        let nodes: Vec<String> = (0..launch.nodes)
            .map(|i| {
                rt.local_node(&format!("{}-{i}", launch.prefix))
                    .url()
                    .to_string()
            })
            .collect();
        let agent = RuntimeAgentProxy::new(&rt.local_node("agent"))
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the runtime agent: {e}"))?;
        let registrar: RegistrarProxy = rt
            .lookup(&registrar_url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot find the deployer at {registrar_url}: {e}"))?;
        let who = Registration {
            nodes,
            agent,
            hostname: hostname(),
            pid: std::process::id(),
        };
        let asked = Instant::now();
        let admission = registrar.register(who).await.map_err(|e| {
            anyhow::anyhow!("the deployer at {registrar_url} refused this runtime: {e}")
        })?;
        super::capture::forward(admission.logs.clone(), admission.runtime);
        tokio::spawn(report_moves(
            rt.moves(),
            registrar.clone(),
            admission.runtime,
        ));
        tracing::info!(
            runtime = admission.runtime,
            "registered with {registrar_url}"
        );
        keep_lease(
            &registrar,
            admission.runtime,
            Duration::from_millis(admission.lease_ms),
            asked,
        )
        .await;
        Ok::<(), anyhow::Error>(())
    };
    let exit_on_eof = launch.exit_on_stdin_eof;
    let result = tokio::select! {
        r = outcome => r,
        () = crate::process::terminated() => Ok(()),
        () = crate::process::stdin_closed(exit_on_eof) => {
            eprintln!("actogrid runtime: standard input closed (the peer that started it is gone); exiting");
            Ok(())
        }
        r = serving => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("the runtime's server stopped: {e}")),
            Err(e) => Err(anyhow::anyhow!("the runtime's server failed: {e}")),
        },
    };
    super::capture::flush(Duration::from_millis(500)).await;
    rt.shutdown();
    result
}

/// Enrolls with the deployer of `registrar` with the ticket this runtime
/// was given (on its standard input, or in a private file): its identity
/// in the deployment, and the connection to the deployer it enrolled on.
async fn enroll(
    registrar: &NodeUrl,
    config: &Config,
) -> anyhow::Result<(actogrid_runtime::Identity, actogrid_runtime::Link)> {
    let text = crate::credentials::read().await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no ticket: a runtime of a deployment gets one from its deployer ({} names where)",
            crate::credentials::CREDENTIALS_ENV
        )
    })?;
    let enrollment: crate::credentials::Enrollment = serde_json::from_str(text.trim())
        .map_err(|e| anyhow::anyhow!("the ticket given does not read: {e}"))?;
    // Over TLS the keys of the runtime agent and of the first object the
    // program creates here are made while the deployer answers.
    if enrollment.roots.is_some() {
        actogrid_runtime::prepare_object_keys(2);
    }
    // Written as the runtime writes the addresses it calls, so that the
    // connection enrolled on is the one its calls to the deployer take.
    let address = if registrar.host().contains(':') {
        format!("[{}]:{}", registrar.host(), registrar.port())
    } else {
        format!("{}:{}", registrar.host(), registrar.port())
    };
    actogrid_runtime::Identity::enroll_linked(
        &address,
        enrollment.roots.as_deref(),
        &enrollment.ticket,
        config,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The address others reach this runtime at: the configured one, the bound
/// one when it is specific, else the address this machine reached the
/// deployer from.
fn advertised(configured: Option<&str>, bound: SocketAddr, towards_deployer: IpAddr) -> String {
    match configured {
        Some(a) if a.contains(':') && !a.starts_with('[') && a.matches(':').count() == 1 => {
            a.to_owned()
        }
        Some(host) => format!("{host}:{}", bound.port()),
        None if !bound.ip().is_unspecified() => bound.to_string(),
        None => SocketAddr::new(towards_deployer, bound.port()).to_string(),
    }
}

/// Tells the deployer of the objects that move from this runtime's nodes,
/// a few at a time, for its timeline.
async fn report_moves(
    mut moves: tokio::sync::broadcast::Receiver<actogrid_runtime::ObjectMoved>,
    registrar: RegistrarProxy,
    runtime: u64,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let first = match moves.recv().await {
            Ok(m) => m,
            Err(RecvError::Lagged(n)) => {
                tracing::debug!("{n} object moves not reported to the deployer");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        // What else moved meanwhile goes with it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut batch = vec![super::state::Moved::from(first)];
        while batch.len() < super::state::MAX_MOVES {
            match moves.try_recv() {
                Ok(m) => batch.push(m.into()),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        if registrar.moved(runtime, batch).is_err() {
            return;
        }
    }
}

/// Renews the lease (first granted by the registration asked at
/// `registered`) until the deployer says stop, the agent is told to shut
/// down, or the lease is about to run out. The deployer counts a
/// lease from when a renewal reaches it, so counted from when the last
/// accepted renewal was sent, this runtime is gone before the deployer may
/// say it is: no runtime lives on while its objects are recovered
/// elsewhere.
async fn keep_lease(
    registrar: &RegistrarProxy,
    runtime: u64,
    lease: Duration,
    registered: Instant,
) {
    let lease = lease.max(Duration::from_millis(300));
    // Four per heartbeat period (see `ft::heartbeat_period`): a runtime
    // hosting protected objects is counted dead after six and a half
    // missed, and several renewals can time out before it gives up.
    let every = lease / 32;
    // The lease starts when the registration reached the deployer.
    let mut last_ok = registered;
    loop {
        let deadline = tokio::time::Instant::from_std(last_ok + outlives(lease));
        let sent = Instant::now();
        let renewal = tokio::time::timeout(lease / 4, registrar.renew(runtime));
        tokio::select! {
            () = stop_signal().notified() => {
                // Let the agent's reply leave first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            () = tokio::time::sleep_until(deadline) => return lost(lease),
            r = renewal => match r {
                Ok(Ok(true)) => last_ok = sent,
                Ok(Ok(false)) => {
                    tracing::info!("the deployer ended the deployment");
                    return;
                }
                Ok(Err(e)) => tracing::warn!("lease renewal failed: {e}"),
                Err(_) => tracing::warn!("lease renewal timed out"),
            },
        }
        let deadline = tokio::time::Instant::from_std(last_ok + outlives(lease));
        tokio::select! {
            () = stop_signal().notified() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            () = tokio::time::sleep_until(deadline) => return lost(lease),
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// How long after sending its last accepted renewal a runtime may live:
/// less than the lease, so that it is gone before its deployer (which
/// counts from the renewal's arrival) says so.
fn outlives(lease: Duration) -> Duration {
    lease * 4 / 5
}

fn lost(lease: Duration) {
    eprintln!(
        "actogrid runtime: lost the deployer (no lease renewal accepted for {} ms of a {} ms lease); exiting before it counts this runtime gone",
        outlives(lease).as_millis(),
        lease.as_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_address_prefers_configuration_then_binding_then_route() {
        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        let route: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(advertised(None, any, route), "10.1.2.3:4000");
        assert_eq!(
            advertised(Some("gw.example"), any, route),
            "gw.example:4000"
        );
        assert_eq!(advertised(Some("gw.example:9"), any, route), "gw.example:9");
        let lo: SocketAddr = "127.0.0.1:5".parse().unwrap();
        assert_eq!(advertised(None, lo, route), "127.0.0.1:5");
    }
}
