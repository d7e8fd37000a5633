//! Fault tolerance in a deployment: the FT server it runs, and what it does
//! when a runtime hosting protected objects dies.
//!
//! When a virtual node has the `actogrid.FaultTolerance` service (or
//! ProActive's `ftServiceId`), the deployment opens an FT server in this
//! process — its store in the deployer's state directory unless the
//! service's `store` argument says where — and serves it from the
//! deployer's runtime. The protected virtual nodes' services are pointed at
//! it; the other virtual nodes get its location service
//! ([`CALLER_CLASS`]), and so does this process's runtime, so that every
//! caller of a protected object follows it through a recovery.
//!
//! The deployment is the failure detector: a runtime is dead when its
//! process exits (local, ssh), its job ends, or it stops renewing its
//! lease. Its protected objects are then recovered on a node of the
//! service's `spares` virtual node, else on a surviving node of their own
//! virtual node (waiting, up to the virtual node's timeout, for one to
//! join), and each recovery is a [`VnEvent::Recovered`] of the virtual
//! node.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actogrid_fault_tolerance::server::{FtError, FtServer, Recovery};
use actogrid_fault_tolerance::{CALLER_CLASS, CLASSES, FaultTolerance};
use actogrid_runtime::{Node, NodeUrl, Runtime};
use actogrid_technical_services::{Args, ServiceSpec, TechnicalService};

use super::DeployError;
use super::services::VnServices;
use super::state::{VnEvent, VnState, lock};

/// Environment variable naming the directory where deployments keep their
/// state (the FT server's store).
pub const STATE_DIR_ENV: &str = "ACTOGRID_STATE_DIR";

/// The FT server of one deployment, and what it protects.
pub(crate) struct FtDeployment {
    /// The server this process runs; `None` when the descriptor points
    /// the virtual nodes at a stand-alone one (which then detects failures
    /// and recovers on its own).
    pub(crate) server: Option<Arc<FtServer>>,
    /// Where the server is (`actogrid://host:port/name`).
    url: String,
    /// The name its endpoint is registered under on the deployer's node.
    pub(crate) name: String,
    /// Protected virtual nodes, each with the virtual node its recovered
    /// objects go to first.
    pub(crate) protected: HashMap<String, Option<String>>,
    /// Virtual nodes acquired from the peer-to-peer overlay: a node they
    /// lose is replaced by the overlay, and the replacement takes the
    /// lost node's objects.
    pub(crate) from_overlay: HashSet<String>,
    /// Its store, and whether it goes with the deployment (the default
    /// place) or stays (a place the descriptor chose).
    store: PathBuf,
    remove_store: bool,
    /// Set when the deployment ends.
    ended: tokio::sync::watch::Sender<bool>,
}

/// The directory deployments keep their state in: `$ACTOGRID_STATE_DIR`,
/// else `$XDG_STATE_HOME/actogrid`, else `~/.local/state/actogrid`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("actogrid");
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".local/state/actogrid")
}

/// A deployed runtime's heartbeat period, an eighth of its lease; it
/// renews its lease four times per period (see `agent.rs`).
pub(crate) fn heartbeat_period(lease: Duration) -> Duration {
    lease.max(Duration::from_millis(300)) / 8
}

/// How long a runtime hosting protected objects may stay silent before it
/// is counted dead: thirteen eighths of a period (six renewals and a half
/// missed). With its last renewal up to a quarter period before it failed
/// and the sweep (every eighth of a period) late, a failure is found
/// within two periods.
pub(crate) fn missed_heartbeats(lease: Duration) -> Duration {
    heartbeat_period(lease) * 13 / 8
}

/// Whether virtual node `vn` gets nodes from a `P2PService`.
fn acquires_from_overlay(d: &actogrid_descriptor::Descriptor, vn: &str) -> bool {
    use actogrid_descriptor::model::{RuntimeSource, ServiceKind};
    d.mapping(vn).is_some_and(|m| {
        m.jvms.iter().filter_map(|j| d.jvm(j)).any(|j| {
            matches!(&j.source, RuntimeSource::Acquisition(r)
                if matches!(d.service(r).map(|s| &s.kind), Some(ServiceKind::P2p(_))))
        })
    })
}

fn is_ft(spec: &ServiceSpec) -> bool {
    CLASSES.contains(&spec.class.as_str())
}

fn set_arg(args: &mut Args, name: &str, value: &str) {
    args.0.retain(|(n, _)| n != name);
    args.0.push((name.to_owned(), value.to_owned()));
}

/// Opens the deployment's FT server when a virtual node asks for fault
/// tolerance, and points the services at it: every protected virtual node
/// (and its spares) at its endpoint, every other one at its location
/// service. `address` is the deployer runtime's; `id` the deployment's.
pub(crate) fn prepare(
    services: &mut HashMap<String, VnServices>,
    descriptor: &actogrid_descriptor::Descriptor,
    address: Option<&str>,
    id: u64,
) -> Result<Option<FtDeployment>, DeployError> {
    // What each protected virtual node asked (checked at load: it inits).
    let mut asked: Vec<(String, FaultTolerance, ServiceSpec)> = Vec::new();
    for (vn, s) in services.iter() {
        if let Some(spec) = s.specs.iter().find(|s| is_ft(s)) {
            let mut service = FaultTolerance::default();
            service.init(&spec.args).map_err(|e| {
                DeployError::Setup(format!(
                    "fault tolerance of virtual node `{vn}`: {}",
                    e.message
                ))
            })?;
            asked.push((vn.clone(), service, spec.clone()));
        }
    }
    if asked.is_empty() {
        return Ok(None);
    }
    asked.sort_by(|a, b| a.0.cmp(&b.0));
    // A runtime follows one server's location service: one server per
    // deployment.
    let servers: Vec<(&str, Option<String>)> = asked
        .iter()
        .map(|(vn, s, _)| (vn.as_str(), s.server().map(ToString::to_string)))
        .collect();
    if let Some(((a, sa), (b, sb))) = servers
        .iter()
        .zip(servers.iter().skip(1))
        .find(|((_, sa), (_, sb))| sa != sb)
    {
        let say = |s: &Option<String>| {
            s.as_ref()
                .map_or_else(|| "the deployment's own".to_owned(), |u| format!("`{u}`"))
        };
        return Err(DeployError::Setup(format!(
            "virtual nodes `{a}` and `{b}` are protected by different FT servers ({} and {}): one deployment has one FT server",
            say(sa),
            say(sb)
        )));
    }
    let external = servers[0].1.clone();
    let name = format!("actogrid-ft-{}-{id}", std::process::id());
    let url = match (&external, address) {
        (Some(url), _) => url.clone(),
        (None, Some(address)) => format!("actogrid://{address}/{name}"),
        (None, None) => {
            return Err(DeployError::Setup(format!(
                "virtual node `{}` asks for fault tolerance, and the deploying runtime does not serve: its FT server would be out of the runtimes' reach (give the runtime an address, or the service a `server`)",
                servers[0].0
            )));
        }
    };
    if external.is_some() {
        let protected = point_at(services, &asked, &url);
        tracing::info!(
            "fault tolerance: the FT server {url} protects {}",
            protected.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return Ok(Some(FtDeployment {
            server: None,
            url,
            name,
            protected,
            from_overlay: HashSet::new(),
            store: PathBuf::new(),
            remove_store: false,
            ended: tokio::sync::watch::Sender::new(false),
        }));
    }
    let (store, remove_store) = match asked.iter().find_map(|(_, s, _)| s.store()) {
        Some(path) => (path.to_path_buf(), false),
        None => (state_dir().join(format!("{name}.redb")), true),
    };
    if let Some(parent) = store.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            DeployError::Setup(format!(
                "cannot create the FT server's directory {}: {e}",
                parent.display()
            ))
        })?;
    }
    let ttc = asked
        .iter()
        .map(|(_, s, _)| s.ttc())
        .min()
        .unwrap_or(actogrid_fault_tolerance::service::DEFAULT_TTC);
    let server = FtServer::open(&store, ttc).map_err(|e| {
        DeployError::Setup(format!(
            "cannot open the FT server's store {}: {e}",
            store.display()
        ))
    })?;
    let protected = point_at(services, &asked, &url);
    tracing::info!(
        "fault tolerance: FT server {url}, store {}, protecting {}",
        store.display(),
        asked
            .iter()
            .map(|(vn, _, _)| vn.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let from_overlay = protected
        .keys()
        .filter(|vn| acquires_from_overlay(descriptor, vn))
        .cloned()
        .collect();
    Ok(Some(FtDeployment {
        server: Some(server),
        url,
        name,
        protected,
        from_overlay,
        store,
        remove_store,
        ended: tokio::sync::watch::Sender::new(false),
    }))
}

/// Points the protected virtual nodes of `asked` (and their spares) at
/// the server at `url`, and every other virtual node at its location
/// service; returns the protected virtual nodes, each with its spares.
fn point_at(
    services: &mut HashMap<String, VnServices>,
    asked: &[(String, FaultTolerance, ServiceSpec)],
    url: &str,
) -> HashMap<String, Option<String>> {
    let mut protected = HashMap::new();
    for (vn, service, spec) in asked {
        protected.insert(vn.clone(), service.spares().map(str::to_owned));
        let mut with_server = spec.clone();
        set_arg(&mut with_server.args, "server", url);
        if let Some(s) = services.get_mut(vn) {
            for existing in s.specs.iter_mut().filter(|s| is_ft(s)) {
                *existing = with_server.clone();
            }
        }
        // Recovered objects stay protected on the spares.
        if let Some(spares) = service.spares() {
            let s = services.entry(spares.to_owned()).or_default();
            if !s.specs.iter().any(is_ft) {
                s.specs.push(with_server.clone());
            }
            protected.entry(spares.to_owned()).or_insert(None);
        }
    }
    let caller = ServiceSpec {
        id: "fault-tolerance-calls".to_owned(),
        class: CALLER_CLASS.to_owned(),
        args: Args(vec![("server".to_owned(), url.to_owned())]),
    };
    for s in services.values_mut() {
        if !s.specs.iter().any(is_ft) {
            s.specs.push(caller.clone());
        }
    }
    protected
}

impl FtDeployment {
    /// Serves the server from the deployer's node and has this process's
    /// runtime follow protected objects through recoveries.
    pub(crate) async fn start(
        &self,
        node: &Node,
        runtime: &Runtime,
        vns: &HashMap<String, Arc<VnState>>,
    ) -> Result<(), DeployError> {
        let Some(server) = &self.server else {
            let url: NodeUrl = self.url.parse().map_err(|e| {
                DeployError::Setup(format!("the FT server's URL `{}`: {e}", self.url))
            })?;
            actogrid_fault_tolerance::service::install_locator(runtime, &url);
            let watch = NodeUrl::new(url.host(), url.port(), format!("{}-watch", url.name()));
            let follow = follow_recoveries(runtime.clone(), watch, vns.clone());
            let mut ended = self.ended.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = ended.wait_for(|e| *e) => {}
                    () = follow => {}
                }
            });
            return Ok(());
        };
        server
            .serve(node, &self.name)
            .await
            .map_err(|e| DeployError::Setup(format!("cannot serve the FT server: {e}")))?;
        tokio::spawn(summarise_checkpoints(
            server.clone(),
            self.protected
                .keys()
                .filter_map(|v| vns.get(v).cloned())
                .collect(),
            self.ended.subscribe(),
        ));
        if runtime.set_locator(server.locator()).is_err() {
            tracing::warn!(
                "this process's runtime follows another FT server already: its calls to objects of this deployment are not resent after a failure"
            );
        }
        Ok(())
    }

    /// Stops serving; removes the store unless the descriptor chose it.
    pub(crate) async fn stop(&self, node: &Node) {
        self.ended.send_replace(true);
        let Some(server) = &self.server else {
            return;
        };
        for suffix in ["", "-location", "-watch"] {
            let name = format!("{}{suffix}", self.name);
            let _ = tokio::time::timeout(Duration::from_secs(1), node.unregister(&name)).await;
        }
        server.withdraw(node, &self.name);
        if self.remove_store {
            remove_store(&self.store);
        }
    }

    /// The runtime hosting `failed` (the nodes it had) died: its protected
    /// objects are recovered elsewhere (see the [module
    /// documentation](self)). `vns` are the deployment's virtual nodes.
    pub(crate) fn runtime_died(
        self: &Arc<Self>,
        vn: &Arc<VnState>,
        vns: &HashMap<String, Arc<VnState>>,
        failed: &[Node],
        cause: &str,
    ) {
        let Some(spares) = self.protected.get(&vn.name) else {
            return;
        };
        let Some(server) = self.server.clone() else {
            tracing::info!(vn = %vn.name, "a runtime hosting protected objects failed ({cause}): the FT server {} recovers them once it misses its heartbeats", self.url);
            return;
        };
        let Some(first) = failed.first() else {
            return;
        };
        let address = format!("{}:{}", first.url().host(), first.url().port());
        let mut candidates: Vec<Arc<VnState>> = spares
            .as_ref()
            .and_then(|s| vns.get(s))
            .into_iter()
            .cloned()
            .collect();
        candidates.push(vn.clone());
        // The overlay replaces a lost node: the replacement is awaited a
        // while, the node present now are not it.
        let present: Option<HashSet<String>> = self.from_overlay.contains(&vn.name).then(|| {
            lock(&vn.nodes)
                .iter()
                .map(|n| n.url().to_string())
                .collect()
        });
        let (vn, cause) = (vn.clone(), cause.to_owned());
        tokio::spawn(async move {
            let detected = Instant::now();
            let place = |attempt: usize, address: String| {
                let (vn, server, cause) = (vn.clone(), server.clone(), cause.clone());
                let (candidates, present) = (candidates.clone(), present.clone());
                Box::pin(async move {
                    // The overlay's replacement takes the lost node's objects.
                    if let Some(present) = present.filter(|_| attempt == 0)
                        && let Some(to) = replacement(&vn, &present, &server).await
                    {
                        tracing::info!(vn = %vn.name, "the overlay replaced {address} with {}", to.url());
                        return Ok(to);
                    }
                    spare(&candidates, &server, &address, vn.timeout)
                        .await
                        .ok_or_else(|| {
                            format!(
                                "no node to recover them on within {} s (the runtime at {address} failed: {cause})",
                                vn.timeout.as_secs()
                            )
                        })
                }) as futures::future::BoxFuture<'static, Result<Node, String>>
            };
            let each = |to: &Node, result: Result<Recovery, FtError>| {
                let event = match result {
                    Ok(r) => {
                        tracing::info!(
                            vn = %vn.name,
                            "object {:#x} recovered on {} ({} replayed, {} ms after its runtime's failure was detected)",
                            r.object,
                            to.url(),
                            r.replayed,
                            detected.elapsed().as_millis()
                        );
                        VnEvent::Recovered {
                            object: r.object,
                            node: to.clone(),
                            cause: cause.clone(),
                            replayed: r.replayed,
                            took: detected.elapsed(),
                        }
                    }
                    Err(e) => VnEvent::RecoveryFailed {
                        object: e.object().unwrap_or(0),
                        error: e.to_string(),
                    },
                };
                let _ = vn.events.send(event);
            };
            let lost = server.recover_runtime(address, place, each).await;
            for (object, error) in lost {
                tracing::error!(vn = %vn.name, "protected object {object:#x} lost: {error}");
                let _ = vn.events.send(VnEvent::RecoveryFailed { object, error });
            }
        });
    }
}

/// How long a node lost by a virtual node acquired from the overlay waits
/// for its replacement before its objects go to a surviving node.
const REPLACEMENT_WAIT: Duration = Duration::from_secs(10);

/// How often a deployment asks a stand-alone FT server what it recovered.
const EVENTS_POLL: Duration = Duration::from_millis(250);

/// Turns what the stand-alone FT server whose watch is at `watch` did
/// into the events of the deployment's virtual nodes `vns` (those of
/// other deployments it serves are left out: the node must be one of
/// ours).
/// How often the checkpoints stored are summed up in the timeline: every
/// ten checkpoint periods, between 1 s and 10 s.
fn checkpoint_summary(ttc: Duration) -> Duration {
    (ttc * 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Every [`checkpoint_summary`], a [`VnEvent::Checkpointed`] for each
/// protected virtual node whose objects' checkpoints were stored
/// meanwhile; until the deployment ends.
async fn summarise_checkpoints(
    server: Arc<FtServer>,
    vns: Vec<Arc<VnState>>,
    mut ended: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(checkpoint_summary(server.ttc()));
    tick.tick().await;
    let mut since = Instant::now();
    loop {
        tokio::select! {
            _ = ended.wait_for(|e| *e) => return,
            _ = tick.tick() => {}
        }
        let stored = server.take_checkpoints();
        let over = since.elapsed();
        since = Instant::now();
        for vn in &vns {
            let at: HashSet<String> = lock(&vn.nodes)
                .iter()
                .map(|n| super::agent::host_port(n.url().host(), n.url().port()))
                .collect();
            let mine = stored.values().filter(|s| at.contains(&s.address));
            let (objects, checkpoints, bytes) = mine.fold((0, 0, 0), |(o, c, b), s| {
                (o + 1, c + s.checkpoints, b + s.bytes)
            });
            if checkpoints > 0 {
                let _ = vn.events.send(VnEvent::Checkpointed {
                    checkpoints,
                    objects,
                    bytes,
                    over,
                });
            }
        }
    }
}

async fn follow_recoveries(runtime: Runtime, watch: NodeUrl, vns: HashMap<String, Arc<VnState>>) {
    use actogrid_fault_tolerance::server::FtWatchProxy;
    use actogrid_fault_tolerance::watch::WatchEvent;
    let mut proxy: Option<FtWatchProxy> = None;
    // Events before this deployment are another's.
    let mut seen: Option<u64> = None;
    loop {
        tokio::time::sleep(EVENTS_POLL).await;
        let p = match &proxy {
            Some(p) => p.clone(),
            None => match runtime.lookup::<FtWatchProxy>(&watch).await {
                Ok(p) => proxy.insert(p).clone(),
                Err(_) => continue,
            },
        };
        let Ok((all, events)) = p.events_after(seen.unwrap_or(u64::MAX)).await else {
            continue;
        };
        if seen.is_some() {
            for event in events {
                match event {
                    WatchEvent::Recovered {
                        object,
                        node,
                        vn,
                        cause,
                        replayed,
                        took_ms,
                    } => {
                        let Some(state) = vns.get(&vn) else { continue };
                        let Some(node) = lock(&state.nodes)
                            .iter()
                            .find(|n| n.url().to_string() == node)
                            .cloned()
                            .or_else(|| {
                                // Recovered on a spare of another virtual node.
                                vns.values().find_map(|v| {
                                    lock(&v.nodes)
                                        .iter()
                                        .find(|n| n.url().to_string() == node)
                                        .cloned()
                                })
                            })
                        else {
                            continue;
                        };
                        let _ = state.events.send(VnEvent::Recovered {
                            object,
                            node,
                            cause,
                            replayed: usize::try_from(replayed).unwrap_or(usize::MAX),
                            took: Duration::from_millis(took_ms),
                        });
                    }
                    WatchEvent::Lost { object, vn, error } => {
                        if let Some(state) = vns.get(&vn) {
                            let _ = state.events.send(VnEvent::RecoveryFailed { object, error });
                        }
                    }
                    _ => {}
                }
            }
        }
        seen = Some(all);
    }
}

/// A node of `vn` not among `present` (the overlay's replacement of a lost
/// one), on a runtime not known dead; waits up to [`REPLACEMENT_WAIT`].
async fn replacement(vn: &VnState, present: &HashSet<String>, server: &FtServer) -> Option<Node> {
    let deadline = tokio::time::Instant::now() + REPLACEMENT_WAIT;
    let mut changes = vn.changed.subscribe();
    loop {
        let fresh = lock(&vn.nodes)
            .iter()
            .find(|n| {
                !present.contains(&n.url().to_string())
                    && !server.is_dead(&format!("{}:{}", n.url().host(), n.url().port()))
            })
            .cloned();
        if fresh.is_some() {
            return fresh;
        }
        tokio::select! {
            r = changes.changed() => r.ok()?,
            () = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// A node of `candidates` (in order of preference) on a runtime neither
/// `failed` nor known dead to `server`; waits up to `timeout` for one to
/// join.
async fn spare(
    candidates: &[Arc<VnState>],
    server: &FtServer,
    failed: &str,
    timeout: Duration,
) -> Option<Node> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes: Vec<_> = candidates.iter().map(|v| v.changed.subscribe()).collect();
    loop {
        for vn in candidates {
            let nodes = lock(&vn.nodes);
            let alive: Vec<&Node> = nodes
                .iter()
                .filter(|n| {
                    let at = format!("{}:{}", n.url().host(), n.url().port());
                    at != failed && !server.is_dead(&at)
                })
                .collect();
            if !alive.is_empty() {
                let i = vn.cursor.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as usize;
                return Some(alive[i % alive.len()].clone());
            }
        }
        let any_change =
            futures::future::select_all(changes.iter_mut().map(|c| Box::pin(c.changed())));
        tokio::select! {
            _ = any_change => {}
            () = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// Removes a store file.
fn remove_store(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove the FT store {}: {e}", path.display());
        }
    }
}
