//! A peer's own dashboard: its place in the overlay (its acquaintances
//! and theirs), its slots and what it lends, live; its state as JSON
//! (`/api/state`, which `actogrid status` reads) and Prometheus metrics
//! (`/metrics`). Token-protected like a deployment's.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actogrid_acquisition::overlay::Token;
use actogrid_runtime::Runtime;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::PeerStatus;
use super::driver::{Driver, endpoint_url};
use super::endpoint::OverlayEndpointProxy;
use crate::web::{self, Dashboard, async_stream, html};

/// What a peer's dashboard shows (`/api/state`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerView {
    /// The peer itself.
    pub peer: PeerStatus,
    /// Since it started.
    pub uptime_ms: u64,
    /// Its acquaintances, as each last answered (asked every few seconds
    /// while the page is open).
    pub neighbours: Vec<Neighbour>,
}

/// An acquaintance, as it answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Neighbour {
    /// Its address.
    pub address: String,
    /// Its own acquaintances.
    pub acquaintances: Vec<String>,
    /// Its slots by state.
    pub free: u64,
    /// Offered to a requester, not booked yet.
    pub offered: u64,
    /// Booked by a requester.
    pub booked: u64,
    /// Running a requester's runtime.
    pub in_use: u64,
    /// Why it did not answer, when it did not.
    pub error: Option<String>,
    /// How long ago it was asked, in milliseconds.
    pub asked_ms_ago: u64,
}

impl std::fmt::Display for PeerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.peer)?;
        writeln!(f, "up {:.0} s", self.uptime_ms as f64 / 1000.0)?;
        if !self.neighbours.is_empty() {
            writeln!(f, "neighbours:")?;
        }
        for n in &self.neighbours {
            match &n.error {
                Some(e) => writeln!(f, "  {}: {e}", n.address)?,
                None => writeln!(
                    f,
                    "  {}: {} free, {} offered, {} booked, {} in use; {} acquaintances",
                    n.address,
                    n.free,
                    n.offered,
                    n.booked,
                    n.in_use,
                    n.acquaintances.len()
                )?,
            }
        }
        Ok(())
    }
}

/// How often acquaintances are asked while someone watches.
const ASK_EVERY: Duration = Duration::from_secs(3);
/// How long someone counts as watching after their last request.
const WATCHING: Duration = Duration::from_secs(30);
/// An acquaintance's own acquaintances kept, at most.
const MAX_THEIRS: usize = 64;
/// The longest address believed.
const MAX_ADDRESS: usize = 256;
/// Acquaintances asked, at most (the page draws 40).
const MAX_ASKED: usize = 64;

/// How long an acquaintance has to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

struct Served {
    driver: Weak<Driver>,
    runtime: Runtime,
    overlay: Token,
    started: Instant,
    neighbours: Mutex<Asked>,
}

/// The acquaintances' latest answers (and when each was asked), and when
/// someone last looked.
type Asked = (Vec<(Neighbour, Instant)>, Option<Instant>);

type Shared = Arc<Served>;

/// Serves the dashboard of the peer `driver` (its runtime `runtime`,
/// overlay token `overlay`) on `addr`.
pub(crate) async fn start(
    addr: SocketAddr,
    driver: &Arc<Driver>,
    runtime: Runtime,
    overlay: Token,
) -> std::io::Result<Dashboard> {
    let driver = Arc::downgrade(driver);
    let served: Shared = Arc::new(Served {
        driver,
        runtime,
        overlay,
        started: Instant::now(),
        neighbours: Mutex::new((Vec::new(), None)),
    });
    tokio::spawn(ask_neighbours(Arc::downgrade(&served)));
    let app = axum::Router::new()
        .route("/", axum::routing::get(index))
        .route("/api/state", axum::routing::get(api_state))
        .route("/api/stream", axum::routing::get(api_stream))
        .route("/metrics", axum::routing::get(api_metrics))
        .with_state(served);
    Dashboard::start(addr, "this peer", app).await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Asks every acquaintance for its status every [`ASK_EVERY`] while
/// someone watches; stops with the dashboard.
async fn ask_neighbours(served: Weak<Served>) {
    let mut tick = tokio::time::interval(ASK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = served.upgrade() else { return };
        let watched = lock(&s.neighbours)
            .1
            .is_some_and(|at| at.elapsed() < WATCHING);
        let Some(driver) = s.driver.upgrade() else {
            return;
        };
        if !watched {
            continue;
        }
        let acquaintances = driver.status().acquaintances;
        drop(driver);
        let asked = acquaintances
            .iter()
            .take(MAX_ASKED)
            .map(|a| ask(&s.runtime, s.overlay, a));
        let answers = futures::future::join_all(asked).await;
        let now = Instant::now();
        lock(&s.neighbours).0 = answers.into_iter().map(|n| (n, now)).collect();
    }
}

/// Asks acquaintance `address` for its status.
async fn ask(runtime: &Runtime, overlay: Token, address: &str) -> Neighbour {
    let mut n = Neighbour {
        address: address.to_owned(),
        acquaintances: Vec::new(),
        free: 0,
        offered: 0,
        booked: 0,
        in_use: 0,
        error: None,
        asked_ms_ago: 0,
    };
    let answer = tokio::time::timeout(ANSWER_WITHIN, async {
        let url = endpoint_url(address)?;
        let endpoint: OverlayEndpointProxy =
            runtime.lookup(&url).await.map_err(|e| e.to_string())?;
        endpoint.status(overlay).await.map_err(|e| e.to_string())
    })
    .await;
    match answer {
        Ok(Ok(status)) => {
            n.free = status.count("free") as u64;
            n.offered = status.count("offered") as u64;
            n.booked = status.count("booked") as u64;
            n.in_use = status.count("in use") as u64;
            // What another peer says is bounded here: the page shows a
            // few of its acquaintances, each a `host:port` at most so long.
            n.acquaintances = status
                .acquaintances
                .into_iter()
                .filter(|a| a.len() <= MAX_ADDRESS)
                .take(MAX_THEIRS)
                .collect();
        }
        Ok(Err(e)) => n.error = Some(e),
        Err(_) => n.error = Some(format!("no answer within {ANSWER_WITHIN:?}")),
    }
    n
}

/// The peer's view now; `None` once it left the overlay.
fn view(served: &Served) -> Option<PeerView> {
    let peer = served.driver.upgrade()?.status();
    let mut neighbours = lock(&served.neighbours);
    neighbours.1 = Some(Instant::now());
    let neighbours = neighbours
        .0
        .iter()
        // Only those still acquaintances.
        .filter(|(n, _)| peer.acquaintances.contains(&n.address))
        .map(|(n, at)| Neighbour {
            asked_ms_ago: at.elapsed().as_millis() as u64,
            ..n.clone()
        })
        .collect();
    Some(PeerView {
        peer,
        uptime_ms: served.started.elapsed().as_millis() as u64,
        neighbours,
    })
}

fn gone() -> Response {
    (
        axum::http::StatusCode::GONE,
        "the peer has left the overlay\n",
    )
        .into_response()
}

/// The page (embedded in the binary).
const PAGE: &str = include_str!("dashboard.html");

async fn index(State(served): State<Shared>) -> Response {
    let Some(view) = view(&served) else {
        return gone();
    };
    web::page(
        PAGE.replace("{{TITLE}}", &html(&view.peer.address))
            .replace("{{TEXT}}", &html(&view.to_string())),
    )
}

async fn api_state(State(served): State<Shared>) -> Response {
    match view(&served) {
        Some(view) => axum::Json(view).into_response(),
        None => gone(),
    }
}

/// `GET /api/stream`: a `state` event (the JSON of `/api/state`) when it
/// changes, checked every second; a comment every 15 s otherwise. Ends
/// when the peer leaves.
async fn api_stream(State(served): State<Shared>) -> Response {
    let weak = Arc::downgrade(&served);
    drop(served);
    web::event_stream(async_stream(move |tx| async move {
        let mut last = String::new();
        let mut quiet = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(view) = weak.upgrade().and_then(|s| view(&s)) else {
                break;
            };
            // The ages change every time: not a change worth sending.
            let mut same = view.clone();
            same.uptime_ms = 0;
            for n in &mut same.neighbours {
                n.asked_ms_ago = 0;
            }
            let key = serde_json::to_string(&same).unwrap_or_default();
            let chunk = if key != last {
                last = key;
                format!(
                    "event: state\ndata: {}\n\n",
                    serde_json::to_string(&view).unwrap_or_default()
                )
            } else if quiet.elapsed() > Duration::from_secs(15) {
                ": still here\n\n".to_owned()
            } else {
                continue;
            };
            quiet = Instant::now();
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    }))
}

async fn api_metrics(State(served): State<Shared>) -> Response {
    let Some(view) = view(&served) else {
        return gone();
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics(&view),
    )
        .into_response()
}

/// The metrics of a peer, in Prometheus' text format.
fn metrics(view: &PeerView) -> String {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct SlotState {
        state: String,
    }

    let p = &view.peer;
    let mut registry = Registry::with_prefix("actogrid_peer");
    let slots = Family::<SlotState, Gauge>::default();
    for state in ["free", "offered", "booked", "in use"] {
        slots
            .get_or_create(&SlotState {
                state: state.replace(' ', "_"),
            })
            .set(p.count(state) as i64);
    }
    registry.register("slots", "This peer's slots, by state", slots);
    let gauge = |n: usize| {
        let g = Gauge::<i64>::default();
        g.set(n as i64);
        g
    };
    registry.register(
        "acquaintances",
        "Peers this one knows",
        gauge(p.acquaintances.len()),
    );
    registry.register(
        "lent_runtimes",
        "Runtimes this peer runs for requesters",
        gauge(p.lent.len()),
    );
    let memory = Gauge::<i64>::default();
    memory.set(
        p.lent
            .iter()
            .filter_map(|l| l.usage.as_ref())
            .map(|u| u.memory as i64)
            .sum(),
    );
    registry.register(
        "lent_memory_bytes",
        "Memory the lent runtimes' vessels use now",
        memory,
    );
    let counter = |n: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(n);
        c
    };
    registry.register(
        "messages_received",
        "Overlay messages received",
        counter(p.received),
    );
    registry.register(
        "messages_refused",
        "Overlay messages refused (wrong token, malformed)",
        counter(p.rejected),
    );
    registry.register("messages_sent", "Overlay messages sent", counter(p.sent));
    let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    uptime.set(view.uptime_ms as f64 / 1000.0);
    registry.register("uptime_seconds", "Since the peer started", uptime);
    let mut out = String::new();
    // Writing into a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}
