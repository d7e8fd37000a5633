//! Fault tolerance as a technical service: what a descriptor switches on.
//!
//! ```xml
//! <technicalServiceDefinition id="ft" class="actogrid.FaultTolerance">
//!   <arg name="protocol" value="pml"/>
//!   <arg name="ttc" value="30s"/>
//! </technicalServiceDefinition>
//! ```
//!
//! (ProActive's `<faultTolerance>` service definition referenced with
//! `ftServiceId` becomes the same service.) On every node of the virtual
//! node, [`FaultTolerance::apply`] installs a [`Protection`] reaching the
//! FT server over the wire, so that every active object created there is
//! logged and checkpointed, and gives the node's runtime the server's
//! location service, so that its calls to protected objects survive their
//! runtimes. The runtimes of the deployment's other virtual nodes get the
//! location service ([`CALLER_CLASS`]): objects there call protected
//! ones without any change, and keep the replies they give to protected
//! callers, which a recovered caller's replay asks for again
//! ([`crate::keeper`]).
//!
//! The deployment runs the server (in the deployer's process, its store
//! in the deployer's state directory) and fills in its address; argument
//! `server` points the nodes at another one instead, a stand-alone
//! `actogrid ft-server`: each protected node then beats to it every
//! heartbeat period it asks for, and a runtime that stops beating is
//! recovered by it (see [`crate::watch`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actogrid_runtime::intercept::Locator;
use actogrid_runtime::{NodeUrl, Runtime};
use actogrid_technical_services::{Args, NodeContext, ServiceError, TechnicalService};
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::server::{
    FtEndpointProxy, FtLink, FtLocationProxy, FtWatchProxy, ObjectState, Protection, Remote,
    Reserved, Write,
};
use crate::watch::Beat;

/// The class of the service given to the virtual nodes that only call
/// protected objects: their runtimes ask the FT server where a protected
/// object went when its runtime dies. The deployment adds it; descriptors
/// do not name it.
pub const CALLER_CLASS: &str = "actogrid.FaultToleranceCalls";

/// The checkpoint period when the descriptor gives none.
pub const DEFAULT_TTC: Duration = Duration::from_secs(30);

/// The rollback-recovery protocol a virtual node asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FtProtocol {
    /// Pessimistic message logging: every request is logged before
    /// anything its service produces leaves; only the failed objects roll
    /// back.
    #[default]
    Pml,
    /// Communication-induced checkpointing: the objects checkpoint on
    /// their own, in step through the indices their messages carry; a
    /// failure rolls every object of the group back to the recovery line.
    Cic,
}

/// The `actogrid.FaultTolerance` technical service (see the [module
/// documentation](self)).
#[derive(Debug, Default)]
pub struct FaultTolerance {
    protocol: FtProtocol,
    ttc: Option<Duration>,
    server: Option<NodeUrl>,
    spares: Option<String>,
    store: Option<PathBuf>,
}

/// The arguments [`FaultTolerance`] reads.
pub const ARGUMENTS: &[&str] = &["protocol", "ttc", "server", "spares", "store"];

impl FaultTolerance {
    /// Its protocol.
    pub fn protocol(&self) -> FtProtocol {
        self.protocol
    }

    /// Its checkpoint period.
    pub fn ttc(&self) -> Duration {
        self.ttc.unwrap_or(DEFAULT_TTC)
    }

    /// The FT server's endpoint, when the descriptor (or the deployment)
    /// gives it.
    pub fn server(&self) -> Option<&NodeUrl> {
        self.server.as_ref()
    }

    /// The virtual node whose nodes take the recovered objects first.
    pub fn spares(&self) -> Option<&str> {
        self.spares.as_deref()
    }

    /// Where the deployment's FT server keeps its store, when the
    /// descriptor says.
    pub fn store(&self) -> Option<&std::path::Path> {
        self.store.as_deref()
    }
}

/// `protocol`: `pml` or `cic`.
pub fn parse_protocol(value: &str) -> Result<FtProtocol, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "pml" => Ok(FtProtocol::Pml),
        "cic" => Ok(FtProtocol::Cic),
        other => Err(format!("`{other}` is not a protocol: write `pml` or `cic`")),
    }
}

fn server_url(value: &str) -> Result<NodeUrl, String> {
    value.trim().parse::<NodeUrl>().map_err(|e| {
        format!(
            "`{value}` is not the actogrid:// URL of an FT server (actogrid://host:port/name): {e}"
        )
    })
}

impl TechnicalService for FaultTolerance {
    fn init(&mut self, args: &Args) -> Result<(), ServiceError> {
        if let Some(p) = args.get("protocol") {
            self.protocol = parse_protocol(p).map_err(|e| ServiceError::argument("protocol", e))?;
        }
        if let Some(t) = args.get("ttc") {
            self.ttc = Some(
                actogrid_runtime::descriptor::parse_duration(t)
                    .map_err(|e| ServiceError::argument("ttc", e))?,
            );
        }
        if let Some(s) = args.get("server") {
            self.server = Some(server_url(s).map_err(|e| ServiceError::argument("server", e))?);
        }
        if let Some(s) = args.get("spares") {
            let s = s.trim();
            if s.is_empty() {
                return Err(ServiceError::argument(
                    "spares",
                    "is empty: name the virtual node whose nodes take recovered objects",
                ));
            }
            self.spares = Some(s.to_owned());
        }
        if let Some(s) = args.get("store") {
            if s.trim().is_empty() {
                return Err(ServiceError::argument(
                    "store",
                    "is empty: give a file path",
                ));
            }
            self.store = Some(PathBuf::from(s.trim()));
        }
        Ok(())
    }

    fn arguments(&self) -> Option<&[&str]> {
        Some(ARGUMENTS)
    }

    fn apply(&self, cx: &NodeContext) -> Result<(), ServiceError> {
        let server = self.server.clone().ok_or_else(|| {
            ServiceError::new(
                "no FT server to protect this node with: the deployment gives one, or set argument `server`",
            )
        })?;
        let node = cx.node();
        let runtime = node.runtime().clone();
        let link = Arc::new(Lazy::new(runtime.clone(), server.clone()));
        let installed = match self.protocol {
            FtProtocol::Pml => node.add_interceptor(Protection::new(link, self.ttc())),
            FtProtocol::Cic => {
                let config = crate::cic::Config {
                    ttc: u64::try_from(self.ttc().as_millis()).unwrap_or(u64::MAX),
                    ..crate::cic::Config::default()
                };
                node.add_interceptor(crate::cic_node::CicProtection::new(link, config))
            }
        };
        installed.map_err(|e| ServiceError::new(e.to_string()))?;
        install_locator(&runtime, &server);
        let beat = Beat {
            node: node.url().to_string(),
            vn: cx.virtual_node().to_owned(),
            spares: self.spares.clone(),
            runtime: runtime.id(),
        };
        cx.spawn(keep_beating(runtime, watch_url(&server), beat));
        cx.set_property(
            "ft.protocol",
            match self.protocol {
                FtProtocol::Pml => "pml",
                FtProtocol::Cic => "cic",
            },
        );
        cx.set_property("ft.ttc", format!("{}ms", self.ttc().as_millis()));
        cx.set_property("ft.server", server.to_string());
        Ok(())
    }

    fn conflicts_with(&self) -> Vec<String> {
        // One protection per node.
        crate::CLASSES
            .iter()
            .map(|c| (*c).to_owned())
            .chain([CALLER_CLASS.to_owned()])
            .collect()
    }
}

/// The URL of the object named `name` + `suffix` beside the server
/// `server`.
fn beside(server: &NodeUrl, suffix: &str) -> NodeUrl {
    NodeUrl::new(
        server.host(),
        server.port(),
        format!("{}{suffix}", server.name()),
    )
}

fn watch_url(server: &NodeUrl) -> NodeUrl {
    beside(server, "-watch")
}

/// The exit status of a runtime the FT server declared dead.
const DECLARED_DEAD: i32 = 75;

/// Beats to the server's watch at `url` for as long as the node lives,
/// at the period the server asks; returns if the server takes no beats
/// (its deployment detects failures). A runtime the server declared dead
/// exits: its objects were recovered elsewhere.
async fn keep_beating(runtime: Runtime, url: NodeUrl, beat: Beat) {
    let retry = Duration::from_secs(1);
    let mut watch: Option<FtWatchProxy> = None;
    let mut complained = false;
    loop {
        let proxy = match &watch {
            Some(p) => p.clone(),
            None => match runtime.lookup::<FtWatchProxy>(&url).await {
                Ok(p) => watch.insert(p).clone(),
                Err(e) => {
                    if !std::mem::replace(&mut complained, true) {
                        tracing::warn!(node = %beat.node, "cannot reach the FT server's watch at {url} (trying again every second): {e}");
                    }
                    tokio::time::sleep(retry).await;
                    continue;
                }
            },
        };
        match proxy.beat(beat.clone()).await {
            Ok(None) => return,
            Ok(Some(ms)) => {
                complained = false;
                tokio::time::sleep(Duration::from_millis(ms.clamp(10, 60_000))).await;
            }
            Err(actogrid_runtime::CallError::Method(dead)) => {
                tracing::error!(node = %beat.node, "{dead}; this runtime exits");
                eprintln!("actogrid runtime: {dead}; exiting");
                std::process::exit(DECLARED_DEAD);
            }
            Err(e) => {
                if !std::mem::replace(&mut complained, true) {
                    tracing::warn!(node = %beat.node, "a heartbeat to the FT server at {url} failed (trying again): {e}");
                }
                tokio::time::sleep(retry.min(Duration::from_millis(250))).await;
            }
        }
    }
}

/// Gives `runtime` the location service of the server at `server` (once:
/// a runtime has one locator).
pub fn install_locator(runtime: &Runtime, server: &NodeUrl) {
    let location = beside(server, "-location");
    let locator = Arc::new(LazyLocator {
        runtime: runtime.clone(),
        url: location,
        proxy: OnceCell::new(),
    });
    // Another node of this runtime installed it already.
    if runtime.set_locator(locator).is_ok()
        && let Ok(tokio) = tokio::runtime::Handle::try_current()
    {
        let shut_down = runtime.shut_down();
        let follow = follow_failures(runtime.clone(), watch_url(server));
        tokio.spawn(async move {
            tokio::select! {
                () = shut_down => {}
                () = follow => {}
            }
        });
    }
}

/// How often a runtime asks the server which runtimes it counted dead.
const FAILURES_POLL: Duration = Duration::from_millis(250);

/// Asks the server's watch at `url`, every [`FAILURES_POLL`], which
/// runtimes it counted dead, and fails `runtime`'s connections to them at
/// once: the calls waiting on a hung runtime (whose connection stays open
/// until its heartbeat timeout) go where their objects are recovered
/// without waiting for it.
async fn follow_failures(runtime: Runtime, url: NodeUrl) {
    let mut watch: Option<FtWatchProxy> = None;
    // Those counted dead before: this runtime has no call waiting on them.
    let mut seen = None;
    loop {
        tokio::time::sleep(FAILURES_POLL).await;
        let proxy = match &watch {
            Some(p) => p.clone(),
            None => match runtime.lookup::<FtWatchProxy>(&url).await {
                Ok(p) => watch.insert(p).clone(),
                Err(_) => continue,
            },
        };
        match proxy.dead_after(seen.unwrap_or(u64::MAX)).await {
            Ok((all, dead)) => {
                if seen.is_some() {
                    for address in dead {
                        runtime.peer_failed(&address, "the FT server counted it dead");
                    }
                }
                seen = Some(all);
            }
            Err(actogrid_runtime::CallError::Method(_)) => return,
            Err(_) => {}
        }
    }
}

/// The service of the runtimes that only call protected objects (see
/// [`CALLER_CLASS`]).
#[derive(Debug, Default)]
pub struct FaultToleranceCalls {
    server: Option<NodeUrl>,
}

impl TechnicalService for FaultToleranceCalls {
    fn init(&mut self, args: &Args) -> Result<(), ServiceError> {
        let s = args
            .get("server")
            .ok_or_else(|| ServiceError::argument("server", "is missing"))?;
        self.server = Some(server_url(s).map_err(|e| ServiceError::argument("server", e))?);
        Ok(())
    }

    fn arguments(&self) -> Option<&[&str]> {
        Some(&["server"])
    }

    fn apply(&self, cx: &NodeContext) -> Result<(), ServiceError> {
        if let Some(server) = &self.server {
            install_locator(cx.node().runtime(), server);
        }
        // Its objects answer a recovered protected caller's calls again.
        cx.node()
            .add_interceptor(Arc::new(crate::keeper::ReplyKeeper::default()))
            .map_err(|e| ServiceError::new(e.to_string()))
    }
}

/// A link to a server over the wire, looked up at first use (a service's
/// `apply` cannot wait for it).
#[derive(Debug)]
struct Lazy {
    runtime: Runtime,
    url: NodeUrl,
    remote: OnceCell<Remote>,
}

impl Lazy {
    fn new(runtime: Runtime, url: NodeUrl) -> Lazy {
        Lazy {
            runtime,
            url,
            remote: OnceCell::new(),
        }
    }

    async fn remote(&self) -> Result<&Remote, String> {
        self.remote
            .get_or_try_init(|| async {
                let endpoint = self
                    .runtime
                    .lookup::<FtEndpointProxy>(&self.url)
                    .await
                    .map_err(|e| format!("the FT server at {}: {e}", self.url))?;
                Ok(Remote::new(endpoint))
            })
            .await
    }
}

impl FtLink for Lazy {
    fn open_object(
        &self,
        object: u64,
        address: String,
    ) -> BoxFuture<'_, Result<ObjectState, String>> {
        Box::pin(async move { self.remote().await?.open_object(object, address).await })
    }

    fn checkpoint(
        &self,
        object: u64,
        reserved: Reserved,
        state: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.remote()
                .await?
                .checkpoint(object, reserved, state)
                .await
        })
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move { self.remote().await?.write(write).await })
    }

    fn reply(&self, object: u64, sender: u64, seq: u64) -> BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move { self.remote().await.ok()?.reply(object, sender, seq).await })
    }

    fn effect(&self, effect: crate::journal::EffectId) -> BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move { self.remote().await.ok()?.remote_effect(effect).await })
    }

    fn cic_join(
        &self,
        object: u64,
        state: Vec<u8>,
        node: String,
    ) -> BoxFuture<'_, Result<crate::cic_group::Committed, String>> {
        Box::pin(async move { self.remote().await?.cic_join(object, state, node).await })
    }

    fn cic_store(
        &self,
        object: u64,
        writes: Vec<crate::cic_group::CicWrite>,
        seen: u64,
    ) -> BoxFuture<'_, Result<crate::cic_group::Committed, String>> {
        Box::pin(async move { self.remote().await?.cic_store(object, writes, seen).await })
    }
}

/// A server's location service over the wire, looked up at first use.
#[derive(Debug)]
struct LazyLocator {
    runtime: Runtime,
    url: NodeUrl,
    proxy: OnceCell<FtLocationProxy>,
}

impl Locator for LazyLocator {
    fn locate<'a>(&'a self, object: u64, address: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let proxy = self
                .proxy
                .get_or_try_init(|| self.runtime.lookup::<FtLocationProxy>(&self.url))
                .await;
            let proxy = match proxy {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(
                        "the FT server's location service at {} is out of reach: {e}",
                        self.url
                    );
                    return None;
                }
            };
            crate::server::ask_location(proxy, object, address).await
        })
    }

    fn lost<'a>(&'a self, object: u64) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let proxy = self.proxy.get()?;
            proxy.lost(object).await.ok().flatten()
        })
    }
}
