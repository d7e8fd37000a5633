//! The driver around one overlay peer: the sans-IO core in a lock, a
//! timer task that ticks it at its next deadline, and one delivery task per
//! destination that carries its messages, in order, as calls to that peer's
//! [`OverlayEndpoint`].
//!
//! Both sides use it: the daemon (slots to lend) and a deployment (a peer
//! with no slot that only asks). What differs is their [`Role`]: what they
//! do with the core's events and with launch specifications.
//!
//! Delivery is best effort, as the core expects: a message that cannot be
//! delivered is dropped, and when the destination cannot be reached at all
//! (connection refused, its runtime gone, the object unknown after a
//! restart) the core is told at once with [`Peer::peer_down`] instead of
//! waiting for a heartbeat to go unanswered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use actogrid_acquisition::overlay::{
    BookingId, Config, Event, InputError, Output, Peer, SlotState, Time, Token,
};
use actogrid_runtime::{CallError, NodeUrl, Runtime};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::endpoint::{LaunchSpec, OverlayEndpointProxy};
use super::{LentNode, PeerStatus, SlotStatus, VesselStatus};

/// The name a daemon's endpoint is registered under; a peer named
/// `host:port` is reached at `actogrid://host:port/actogrid-peer`.
pub const ENDPOINT_NAME: &str = "actogrid-peer";

/// The refusal of a peer whose driver stopped: its sender treats it as gone
/// (what it offered, booked or lent to that peer is freed at once, not when
/// an offer or a booking lapses).
pub(crate) const LEAVING: &str = "this peer is leaving the overlay";

/// Largest message accepted from the wire.
const MAX_MESSAGE: usize = 1 << 20;

/// A delivery task with nothing to send for this long ends.
const LINK_IDLE: Duration = Duration::from_secs(30);

/// What a peer does besides the protocol: lend (the daemon) or ask (a
/// deployment).
pub(crate) trait Role: Send + Sync + 'static {
    /// An event of the core (never called with the core locked).
    fn on_event(&self, driver: &Arc<Driver>, event: Event<String>);

    /// A requester sends what to run on the slot it booked.
    fn launch(
        &self,
        driver: &Arc<Driver>,
        from: String,
        booking: BookingId,
        spec: LaunchSpec,
    ) -> Result<(), String>;

    /// The runtimes it runs for others, for the status.
    fn lent(&self) -> Vec<LentNode>;

    /// Peer `peer` refused this peer's credentials (or this peer its).
    fn refused(&self, _driver: &Arc<Driver>, _peer: &str, _why: &str) {}

    /// How what it lends is protected, for the status (none: it lends
    /// nothing).
    fn vessels(&self) -> Option<VesselStatus> {
        None
    }
}

/// The URL of the endpoint of peer `peer`: `host:port` (a daemon) or
/// `host:port/name` (an endpoint registered under another name).
pub fn endpoint_url(peer: &str) -> Result<NodeUrl, String> {
    let text = if peer.contains('/') {
        format!("actogrid://{peer}")
    } else {
        format!("actogrid://{peer}/{ENDPOINT_NAME}")
    };
    text.parse::<NodeUrl>()
        .map_err(|e| format!("`{peer}` is not a peer address (host:port): {e}"))
}

fn table() -> &'static Mutex<HashMap<u64, Weak<Driver>>> {
    static TABLE: OnceLock<Mutex<HashMap<u64, Weak<Driver>>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// The driver `id` of this process, if it still runs.
pub(crate) fn find(id: u64) -> Option<Arc<Driver>> {
    lock(table()).get(&id).and_then(Weak::upgrade)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One peer, driven.
pub(crate) struct Driver {
    id: u64,
    me: String,
    rt: Runtime,
    registered_as: String,
    origin: Instant,
    token: Token,
    core: Mutex<Peer<String>>,
    role: Arc<dyn Role>,
    wake: Notify,
    stopped: AtomicBool,
    links: Mutex<HashMap<String, mpsc::UnboundedSender<Vec<u8>>>>,
    /// Messages handed to delivery and not yet delivered or dropped.
    in_flight: AtomicUsize,
    sent: AtomicU64,
    call_timeout: Duration,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("me", &self.me).finish()
    }
}

impl Driver {
    /// Starts a peer named `me` on `rt`: its endpoint registered as `name`
    /// (the part after `/` in `me`, or [`ENDPOINT_NAME`]), its timer running.
    pub(crate) async fn start(
        rt: &Runtime,
        me: String,
        config: Config,
        contacts: Vec<String>,
        role: Arc<dyn Role>,
    ) -> Result<Arc<Driver>, String> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let url = endpoint_url(&me)?;
        let call_timeout = config.answer_timeout.max(Duration::from_secs(2));
        let token = config.token;
        let seed = fastrand::u64(..);
        let driver = Arc::new(Driver {
            id,
            registered_as: url.name().to_owned(),
            me: me.clone(),
            rt: rt.clone(),
            origin: Instant::now(),
            token,
            core: Mutex::new(Peer::new(me, config, contacts, Time::ZERO, seed)),
            role,
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            links: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            call_timeout,
        });
        lock(table()).insert(id, Arc::downgrade(&driver));
        let node = rt.local_node("overlay");
        let endpoint = OverlayEndpointProxy::new(&node, id)
            .await
            .map_err(|e| format!("cannot start the overlay endpoint: {e}"))?;
        // Peers of the pool call it, and find it by its name.
        rt.open_to_pool(actogrid_runtime::Proxy::active_ref(&endpoint));
        node.register(url.name(), &endpoint)
            .await
            .map_err(|e| format!("cannot register the overlay endpoint: {e}"))?;
        tokio::spawn(tick(Arc::downgrade(&driver)));
        Ok(driver)
    }

    /// This peer's name.
    pub(crate) fn me(&self) -> &str {
        &self.me
    }

    /// The overlay token.
    pub(crate) fn token(&self) -> Token {
        self.token
    }

    /// The runtime it serves on.
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Messages sent so far.
    pub(crate) fn messages_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Runs `f` on the core, then carries out what it asked for.
    pub(crate) fn step<R>(self: &Arc<Self>, f: impl FnOnce(&mut Peer<String>, Time) -> R) -> R {
        let (result, outputs) = {
            let mut core = lock(&self.core);
            let result = f(&mut core, self.now());
            let outputs: Vec<_> = std::iter::from_fn(|| core.poll_output()).collect();
            (result, outputs)
        };
        self.wake.notify_one();
        self.carry_out(outputs);
        result
    }

    /// Reads the core without changing it.
    pub(crate) fn inspect<R>(&self, f: impl FnOnce(&Peer<String>) -> R) -> R {
        f(&lock(&self.core))
    }

    fn carry_out(self: &Arc<Self>, outputs: Vec<Output<String>>) {
        for output in outputs {
            match output {
                Output::Send { to, envelope } => self.send(to, envelope.encode()),
                Output::Event(event) => {
                    match &event {
                        Event::Rejected { from, error } => {
                            tracing::warn!(peer = %self.me, "refused a message from {from}: {error}");
                        }
                        Event::AcquaintanceAdded(p) => {
                            tracing::debug!(peer = %self.me, "{p} is an acquaintance");
                        }
                        Event::AcquaintanceLost { peer, reason } => {
                            tracing::debug!(peer = %self.me, "{peer} is no longer an acquaintance ({reason:?})");
                        }
                        _ => {}
                    }
                    self.role.on_event(self, event);
                }
            }
        }
    }

    /// A message arrived from `from`: the endpoint's `deliver`.
    pub(crate) fn receive(self: &Arc<Self>, from: String, bytes: Vec<u8>) -> Result<(), String> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(LEAVING.into());
        }
        if let Err(e) = endpoint_url(&from) {
            tracing::warn!(peer = %self.me, "refused a message: {e}");
            return Err(format!("malformed message: {e}"));
        }
        if bytes.len() > MAX_MESSAGE {
            tracing::warn!(peer = %self.me, "refused a message of {} bytes from {from}", bytes.len());
            return Err(format!(
                "malformed message: larger than {MAX_MESSAGE} bytes"
            ));
        }
        let (refused, outputs) = {
            let mut core = lock(&self.core);
            let now = self.now();
            core.handle_bytes(now, from, &bytes);
            let outputs: Vec<_> = std::iter::from_fn(|| core.poll_output()).collect();
            let refused = outputs.iter().find_map(|o| match o {
                Output::Event(Event::Rejected { error, .. }) => Some(error.clone()),
                _ => None,
            });
            (refused, outputs)
        };
        self.wake.notify_one();
        self.carry_out(outputs);
        match refused {
            None => Ok(()),
            Some(InputError::WrongToken) => Err("refused: wrong overlay token".into()),
            Some(e) => Err(e.to_string()),
        }
    }

    /// Queues `bytes` for `to`, behind what is already queued for it (also
    /// after [`Driver::stop`]: the last releases and leaves go out).
    fn send(self: &Arc<Self>, to: String, bytes: Vec<u8>) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut links = lock(&self.links);
        let bytes = match links.get(&to) {
            Some(tx) => match tx.send(bytes) {
                Ok(()) => return,
                Err(mpsc::error::SendError(bytes)) => bytes,
            },
            None => bytes,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(bytes);
        links.insert(to.clone(), tx);
        tokio::spawn(deliver(Arc::downgrade(self), to, rx));
    }

    /// The destination could not be reached: the core forgets it.
    fn unreachable(self: &Arc<Self>, peer: &str, why: &str) {
        tracing::debug!(peer = %self.me, "{peer} is unreachable: {why}");
        if why.contains("certificate") || why.contains("TLS handshake") {
            // Reached, but it does not take this peer's credentials (or
            // this peer not its): another pool, or a wrong passphrase.
            tracing::warn!(peer = %self.me, "{peer} refused this peer's pool credentials: {why}");
            self.role.refused(self, peer, why);
        }
        if !self.stopped.load(Ordering::Acquire) {
            self.step(|core, _| core.peer_down(peer.to_owned()));
        }
    }

    /// Waits until every queued message was delivered or dropped, up to
    /// `limit`.
    pub(crate) async fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the timer and unregisters the endpoint; messages already
    /// queued are still delivered.
    pub(crate) async fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.wake.notify_one();
        let node = self.rt.local_node("overlay");
        let _ = tokio::time::timeout(Duration::from_secs(1), node.unregister(&self.registered_as))
            .await;
        lock(table()).remove(&self.id);
    }

    /// Whether `token` is this overlay's.
    pub(crate) fn admits(&self, token: &Token) -> bool {
        token.matches(&self.token)
    }

    /// A launch specification arrived (the endpoint's `launch`).
    pub(crate) fn launch(
        self: &Arc<Self>,
        token: Token,
        from: String,
        booking: BookingId,
        spec: LaunchSpec,
    ) -> Result<(), String> {
        if !self.admits(&token) {
            tracing::warn!(peer = %self.me, "refused a launch from {from}: wrong overlay token");
            return Err("refused: wrong overlay token".into());
        }
        self.role.launch(self, from, booking, spec)
    }

    /// What the status command shows.
    pub(crate) fn status(&self) -> PeerStatus {
        let (acquaintances, slots, stats) = self.inspect(|core| {
            let acquaintances: Vec<String> = core.acquaintances().cloned().collect();
            let slots = core
                .slots()
                .iter()
                .map(|s| {
                    let state = match s {
                        SlotState::Free => "free",
                        SlotState::Offered { .. } => "offered",
                        SlotState::Booked { .. } => "booked",
                        SlotState::InUse { .. } => "in use",
                    };
                    SlotStatus {
                        state: state.to_owned(),
                        requester: s.requester().cloned(),
                        booking: s.booking().map(|b| b.0),
                    }
                })
                .collect();
            (acquaintances, slots, core.stats())
        });
        PeerStatus {
            address: self.me.clone(),
            acquaintances,
            slots,
            lent: self.role.lent(),
            vessels: self.role.vessels(),
            received: stats.received,
            rejected: stats.rejected,
            sent: self.messages_sent(),
        }
    }
}

/// Ticks the core whenever its next deadline passes, until the driver
/// stops.
async fn tick(driver: Weak<Driver>) {
    let Some(d) = driver.upgrade() else { return };
    let mut last = None;
    loop {
        if d.stopped.load(Ordering::Acquire) {
            return;
        }
        let next = d.inspect(|core| core.next_deadline());
        // A deadline that the last tick did not move is not run twice in a
        // row without a pause (a guard against a busy loop).
        let at = if last == Some(next) {
            Instant::now() + Duration::from_millis(5)
        } else {
            d.origin + Duration::from_millis(next.as_millis())
        };
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = d.wake.notified() => {}
        }
        if d.now() >= next && !d.stopped.load(Ordering::Acquire) {
            d.step(|core, now| core.tick(now));
            last = Some(next);
        }
    }
}

/// Carries the messages queued for `to`, one call at a time, in order.
async fn deliver(driver: Weak<Driver>, to: String, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut endpoint: Option<OverlayEndpointProxy> = None;
    loop {
        let bytes = match tokio::time::timeout(LINK_IDLE, rx.recv()).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(_) => {
                // Idle: leave, unless something was queued meanwhile.
                let Some(d) = driver.upgrade() else { return };
                let mut links = lock(&d.links);
                match rx.try_recv() {
                    Ok(bytes) => bytes,
                    Err(_) => {
                        links.remove(&to);
                        return;
                    }
                }
            }
        };
        let Some(d) = driver.upgrade() else { return };
        let outcome = deliver_one(&d, &to, &mut endpoint, bytes).await;
        d.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Err(why) = outcome {
            endpoint = None;
            d.unreachable(&to, &why);
        }
    }
}

/// One message; `Err` when `to` cannot be reached.
async fn deliver_one(
    d: &Arc<Driver>,
    to: &str,
    endpoint: &mut Option<OverlayEndpointProxy>,
    bytes: Vec<u8>,
) -> Result<(), String> {
    let proxy = match endpoint {
        Some(p) => p.clone(),
        None => {
            let url = endpoint_url(to)?;
            let found = tokio::time::timeout(d.call_timeout, d.rt.lookup(&url)).await;
            let proxy: OverlayEndpointProxy = match found {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("no answer to the lookup".into()),
            };
            *endpoint = Some(proxy.clone());
            proxy
        }
    };
    let call = proxy.deliver(d.me.clone(), bytes);
    match tokio::time::timeout(d.call_timeout, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(CallError::Method(refusal))) if refusal == LEAVING => Err(refusal),
        Ok(Err(CallError::Method(refusal))) => {
            tracing::warn!(peer = %d.me, "{to} refused our message: {refusal}");
            Ok(())
        }
        Ok(Err(CallError::Timeout { .. })) | Err(_) => {
            // Maybe slow, maybe gone: the heartbeats will tell.
            tracing::debug!(peer = %d.me, "no answer from {to} in time");
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
    }
}
