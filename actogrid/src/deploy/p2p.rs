//! Acquiring nodes from the peer-to-peer overlay (`P2PService`): the
//! deployment joins the overlay as a peer with no slot, asks for the nodes,
//! and gives every slot it books a launch of its own (a one-time ticket),
//! sent to the lender with the program to run. The runtime the lender
//! starts registers like a created one; its nodes go through the virtual
//! node's technical services as acquired nodes.
//!
//! A node whose lender dies or gives it back leaves the virtual node. When
//! the deployment ends, the request ends: every booking is released and
//! the lenders stop the runtimes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actogrid_acquisition::overlay::{
    BookingId, Config as CoreConfig, Event, NodeLoss, RequestId, Wanted,
};
use actogrid_descriptor::model::{NodesAsked, P2pService};
use actogrid_runtime::CallError;

use super::agent::{DEPLOYER_ENV, NODE_PREFIX_ENV, NODES_ENV};
use super::state::{VnState, lock};
use super::{DeployError, Inner};
use crate::peer::{BinarySourceProxy, Driver, LaunchSpec, Role, endpoint_url};

/// One virtual node's request to the overlay.
pub(crate) struct Acquisition {
    driver: Arc<Driver>,
    role: Arc<Requester>,
    /// Its runtime in the pool.
    rt: actogrid_runtime::Runtime,
}

struct Requester {
    inner: Weak<Inner>,
    vn: Arc<VnState>,
    label: String,
    wanted: Wanted,
    nodes_per_runtime: u64,
    binary: BinarySourceProxy,
    sha256: String,
    size: u64,
    request: Mutex<Option<RequestId>>,
    /// Launch of each booked slot, by (lender, booking).
    launches: Mutex<HashMap<(String, BookingId), u64>>,
    /// Its first contacts, and those that refused its credentials.
    contacts: Vec<String>,
    refused: Mutex<HashMap<String, String>>,
}

impl Acquisition {
    /// Joins the overlay for `vn` and starts asking once a first
    /// acquaintance answers.
    pub(crate) async fn start(
        inner: &Arc<Inner>,
        vn: &Arc<VnState>,
        service_id: &str,
        service: &P2pService,
        nodes_per_runtime: u64,
    ) -> Result<Acquisition, DeployError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let setup = |what: String| DeployError::Setup(format!("service `{service_id}`: {what}"));
        let pool = inner.options.pool.clone().ok_or_else(|| {
            setup(format!(
                "acquiring nodes from the overlay needs its pool's passphrase: set {} (or {}), \
                 or DeployOptions::pool",
                crate::peer::PASSPHRASE_ENV,
                crate::peer::PASSPHRASE_FILE_ENV
            ))
        })?;
        let token = pool.token().map_err(|e| setup(e.to_string()))?;
        let rt = overlay_runtime(&inner.shared.runtime, &pool)
            .await
            .map_err(setup)?;
        let (sha256, size) = actogrid_acquisition::transfer::file_sha256(&inner.program)
            .await
            .map_err(|e| setup(format!("cannot read {}: {e}", inner.program.display())))?;
        let node = rt.local_node("deployer");
        let binary = BinarySourceProxy::new(
            &node,
            inner.program.to_string_lossy().into_owned(),
            sha256.clone(),
            size,
        )
        .await
        .map_err(|e| setup(format!("cannot serve the program: {e}")))?;
        // The lenders fetch it, as peers of the pool.
        rt.open_to_pool(actogrid_runtime::Proxy::active_ref(&binary));
        let address = rt
            .address()
            .ok_or_else(|| setup("the runtime has no address".into()))?;
        let me = format!(
            "{address}/actogrid-overlay-{}-{}-{}",
            std::process::id(),
            inner.shared.id,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut contacts: Vec<String> = service.peers.iter().map(|p| p.value.to_string()).collect();
        if let Some(port) = service.port {
            contacts.push(format!("127.0.0.1:{port}"));
        }
        if contacts.is_empty() {
            return Err(setup(
                "no peer to join the overlay through: give a peerSet (or a port)".into(),
            ));
        }
        for c in &contacts {
            endpoint_url(c).map_err(setup)?;
        }
        let ttu = service.ttu;
        let config = CoreConfig {
            slots: 0,
            token,
            acquisition_timeout: vn.timeout,
            lookup_period: ttu.clamp(Duration::from_millis(200), Duration::from_secs(30)),
            answer_timeout: (ttu * 2).clamp(Duration::from_secs(1), Duration::from_secs(10)),
            ..CoreConfig::from_service(service)
        };
        let wanted = match service.nodes_asked {
            NodesAsked::Count(n) => Wanted::Count(n),
            NodesAsked::Max => Wanted::Max,
        };
        let role = Arc::new(Requester {
            inner: Arc::downgrade(inner),
            vn: vn.clone(),
            label: format!("P2PService `{service_id}`"),
            wanted,
            nodes_per_runtime,
            binary,
            sha256,
            size,
            request: Mutex::new(None),
            launches: Mutex::new(HashMap::new()),
            contacts: contacts.clone(),
            refused: Mutex::new(HashMap::new()),
        });
        let driver = Driver::start(&rt, me, config, contacts, role.clone())
            .await
            .map_err(setup)?;
        driver.step(|core, now| core.tick(now));
        // Ask anyway after a while, in case acquaintances are slow to come.
        let later = Arc::downgrade(&driver);
        let asker = Arc::downgrade(&role);
        let wait = (ttu * 2).clamp(Duration::from_millis(500), Duration::from_secs(5));
        lock(&inner.tasks).push(tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let (Some(d), Some(r)) = (later.upgrade(), asker.upgrade()) {
                r.ask(&d);
            }
        }));
        Ok(Acquisition { driver, role, rt })
    }

    /// Ends the request: every booking is released (the lenders stop the
    /// runtimes), then the peer leaves.
    pub(crate) async fn end(&self) {
        let request = lock(&self.role.request).take();
        self.driver.step(|core, _| {
            if let Some(id) = request {
                core.end_request(id);
            }
            core.leave();
        });
        // Stopped first: what arrives from now on is refused as from a peer
        // leaving (its sender frees what it offered or booked to it), and
        // nothing is queued after the flush (a decline queued then would
        // be lost with the driver, its slot held until the offer lapsed).
        self.driver.stop().await;
        self.driver.flush(Duration::from_secs(2)).await;
        self.rt.shutdown();
    }
}

/// A runtime of the deployment's process that belongs to the pool: the
/// overlay's messages and the lenders' fetches of the program reach it, as
/// peers; the deployment's own runtimes never do (they are another trust
/// domain). It listens where the deployment's runtime does, on a port of
/// its own.
async fn overlay_runtime(
    deployment: &actogrid_runtime::Runtime,
    pool: &crate::peer::Pool,
) -> Result<actogrid_runtime::Runtime, String> {
    let address = deployment
        .address()
        .ok_or("the deployment's runtime has no address")?;
    let (host, _) = address
        .rsplit_once(':')
        .ok_or("the deployment's runtime has no port")?;
    let loopback = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    let bind = if loopback { "127.0.0.1:0" } else { "0.0.0.0:0" };
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| format!("cannot listen for the overlay: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let advertised = format!("{host}:{port}");
    let rt = actogrid_runtime::Runtime::builder()
        .config(deployment.config().clone())
        .identity(pool.identity(&advertised).map_err(|e| e.to_string())?)
        .address(advertised)
        .build();
    let server = rt.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener, std::future::pending()).await {
            tracing::error!("the overlay's server stopped: {e}");
        }
    });
    Ok(rt)
}

impl Requester {
    /// Starts the request, once.
    fn ask(&self, driver: &Arc<Driver>) {
        let mut request = lock(&self.request);
        if request.is_some() {
            return;
        }
        let wanted = self.wanted;
        *request = Some(driver.step(|core, now| core.acquire(now, wanted)));
        tracing::info!(vn = %self.vn.name, "{}: asking the overlay for {wanted:?} node(s)", self.label);
    }

    fn acquired(&self, driver: &Arc<Driver>, lender: String, booking: BookingId) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let vn = &self.vn;
        vn.counters.asked.fetch_add(1, Ordering::Relaxed);
        let label = format!("{} on peer {lender}", self.label);
        let launch =
            inner
                .shared
                .open_launch(vn, label, lender.clone(), Some(1), self.nodes_per_runtime);
        lock(&inner.shared.state).launches[launch as usize].acquired = true;
        let credentials = inner.shared.enrollment(launch);
        lock(&self.launches).insert((lender.clone(), booking), launch);
        let deployers = lock(&inner.registrar_urls).join(",");
        let env = vec![
            (DEPLOYER_ENV.to_owned(), deployers),
            (NODES_ENV.to_owned(), self.nodes_per_runtime.to_string()),
            (NODE_PREFIX_ENV.to_owned(), vn.name.clone()),
        ]
        .into_iter()
        .chain(inner.settings.to_env())
        .chain(vn.launch_env.iter().cloned())
        .collect();
        let spec = LaunchSpec {
            binary: self.binary.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
            env,
            credentials,
        };
        let driver = driver.clone();
        let shared = inner.shared.clone();
        let vn = vn.clone();
        let task = tokio::spawn(async move {
            let sent = async {
                let url = endpoint_url(&lender)?;
                let endpoint: crate::peer::OverlayEndpointProxy = driver
                    .runtime()
                    .lookup(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                let call = endpoint.launch(driver.token(), driver.me().to_owned(), booking.0, spec);
                match tokio::time::timeout(Duration::from_secs(30), call).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(CallError::Method(refusal))) => Err(refusal),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 30 s".to_owned()),
                }
            };
            match sent.await {
                Ok(()) => {
                    vn.counters.started.fetch_add(1, Ordering::Relaxed);
                    vn.bump();
                }
                Err(e) => shared.launch_failed(
                    launch,
                    format!("peer {lender} did not start a runtime: {e}"),
                ),
            }
        });
        lock(&inner.tasks).push(task);
    }

    fn lost(&self, lender: &str, booking: BookingId, reason: NodeLoss) {
        let Some(launch) = lock(&self.launches).remove(&(lender.to_owned(), booking)) else {
            return;
        };
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let why = match reason {
            NodeLoss::LenderLost => "was lost with its peer".to_owned(),
            NodeLoss::Released(r) => format!("was given back by its peer ({r:?})"),
        };
        inner.shared.launch_ended(launch, &why);
    }
}

impl Role for Requester {
    fn on_event(&self, driver: &Arc<Driver>, event: Event<String>) {
        match event {
            Event::AcquaintanceAdded(_) => self.ask(driver),
            Event::NodeAcquired {
                lender, booking, ..
            } => self.acquired(driver, lender, booking),
            Event::NodeLost {
                lender,
                booking,
                reason,
                ..
            } => self.lost(&lender, booking, reason),
            Event::Satisfied { .. } => {
                tracing::info!(vn = %self.vn.name, "{}: every node asked for is booked", self.label);
            }
            Event::TimedOut { acquired, .. } => {
                if let Wanted::Count(n) = self.wanted {
                    let missing = u64::from(n).saturating_sub(acquired as u64);
                    self.vn.lost.fetch_add(missing, Ordering::Relaxed);
                    self.vn.fail(
                        "overlay",
                        format!(
                            "{}: the overlay lent {acquired} of {n} node(s) before the timeout",
                            self.label
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    fn launch(
        &self,
        _driver: &Arc<Driver>,
        _from: String,
        _booking: BookingId,
        _spec: LaunchSpec,
    ) -> Result<(), String> {
        Err("this peer is a deployment: it lends no slot".into())
    }

    fn refused(&self, _driver: &Arc<Driver>, peer: &str, why: &str) {
        let mut refused = lock(&self.refused);
        refused.insert(peer.to_owned(), why.to_owned());
        if lock(&self.vn.fatal).is_some() || !self.contacts.iter().all(|c| refused.contains_key(c))
        {
            return;
        }
        // Every first contact refused: nothing will ever come; say why at
        // once instead of at the timeout.
        let why = refused.values().next().cloned().unwrap_or_default();
        let message = format!(
            "{}: every peer of the overlay ({}) refused this deployment's pool credentials \
             ({why}): check the pool's passphrase ({})",
            self.label,
            self.contacts.join(", "),
            crate::peer::PASSPHRASE_ENV
        );
        *lock(&self.vn.fatal) = Some(message.clone());
        self.vn.lost_unknown.store(true, Ordering::Relaxed);
        self.vn.fail("overlay", message);
    }

    fn lent(&self) -> Vec<crate::peer::LentNode> {
        Vec::new()
    }
}
