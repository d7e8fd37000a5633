//! The failure detector and resource server of a stand-alone FT server
//! (`actogrid ft-server`).
//!
//! A deployment running its own FT server detects failures itself (process
//! exits, job ends, missed lease renewals). A stand-alone server knows
//! nothing of the deployments it serves, so each protected node tells it
//! that it lives: it *beats* four times per heartbeat period, as the server
//! asks ([`FtWatch::beat`](crate::server::FtWatch::beat)), naming its virtual node and the one its
//! recovered objects go to first (the service's `spares`). A runtime
//! silent for 13/8 periods (six beats and a half missed in a row) is declared dead: its objects are recovered on a node of
//! the spares virtual node that beats, else on one of its own virtual
//! node, the server waiting up to its recovery wait for one to beat. A
//! runtime declared dead that beats again (it was only hung) is told so,
//! and stops: its objects live elsewhere now, and the store refuses what
//! it writes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actogrid_runtime::{NodeUrl, Runtime};

use crate::server::FtServer;

/// What a protected node says when it beats.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Beat {
    /// The node (`actogrid://host:port/name`).
    pub node: String,
    /// Its virtual node.
    pub vn: String,
    /// The virtual node its runtime's objects are recovered on first.
    pub spares: Option<String>,
    /// The beating runtime's id (0: not said): a runtime started at the
    /// address of one declared dead (a port handed out again) is not
    /// taken for it.
    #[serde(default)]
    pub runtime: u64,
}

/// What a stand-alone server did about a failure, for the deployments it
/// serves to tell their programs (as `VnEvent`s).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A protected object serves again on `node`.
    Recovered {
        /// The object.
        object: u64,
        /// The node it lives on now.
        node: String,
        /// The virtual node of the runtime that failed.
        vn: String,
        /// Why that runtime was counted dead.
        cause: String,
        /// Requests it served again from its log.
        replayed: u64,
        /// From the failure's detection to the object serving again, ms.
        took_ms: u64,
    },
    /// A protected object could not be recovered.
    Lost {
        /// The object (0 when unknown).
        object: u64,
        /// The virtual node of the runtime that failed.
        vn: String,
        /// Why.
        error: String,
    },
}

/// How many events a server keeps for the deployments to fetch.
const EVENTS_KEPT: usize = 4096;

/// How a server detects failures and finds nodes to recover on.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// How often protected nodes beat.
    pub heartbeat: Duration,
    /// How long the objects of a dead runtime wait for a node to recover
    /// them on before they are given up.
    pub recovery_wait: Duration,
}

/// A runtime's silence after which it is declared dead: thirteen eighths
/// of a heartbeat period, in which it beats six times and a half. With
/// its last beat up to a quarter period before it failed and the sweep
/// an eighth of a period late at most, a failure is found within two
/// periods.
pub fn silence_limit(heartbeat: Duration) -> Duration {
    heartbeat * 13 / 8
}

/// How long a node waits between two beats: a quarter of a heartbeat
/// period.
fn beat_interval(heartbeat: Duration) -> Duration {
    heartbeat / 4
}

/// The runtimes beating to a server.
#[derive(Debug)]
pub(crate) struct Watch {
    config: WatchConfig,
    runtime: Runtime,
    /// By address and runtime id.
    members: Mutex<HashMap<(String, u64), Member>>,
    /// The newest events, and how many went before them.
    events: Mutex<(u64, VecDeque<WatchEvent>)>,
}

/// A runtime beating: its nodes and when it last beat.
#[derive(Debug)]
struct Member {
    nodes: Vec<Beat>,
    last: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `host:port` of a node URL.
fn address_of(url: &NodeUrl) -> String {
    format!("{}:{}", url.host(), url.port())
}

impl Watch {
    pub(crate) fn new(runtime: Runtime, config: WatchConfig) -> Watch {
        Watch {
            config,
            runtime,
            members: Mutex::new(HashMap::new()),
            events: Mutex::new((0, VecDeque::new())),
        }
    }

    fn record(&self, event: WatchEvent) {
        let mut events = lock(&self.events);
        events.1.push_back(event);
        if events.1.len() > EVENTS_KEPT {
            events.1.pop_front();
            events.0 += 1;
        }
    }

    /// The events after the first `seen`, and how many there were in all.
    pub(crate) fn events_after(&self, seen: u64) -> (u64, Vec<WatchEvent>) {
        let events = lock(&self.events);
        let all = events.0 + events.1.len() as u64;
        let skip = usize::try_from(seen.saturating_sub(events.0)).unwrap_or(usize::MAX);
        (all, events.1.iter().skip(skip).cloned().collect())
    }

    /// Node `beat.node` lives; the period to beat at. Fails for a runtime
    /// declared dead.
    pub(crate) fn beat(&self, server: &FtServer, beat: Beat) -> Result<Duration, String> {
        let url: NodeUrl = beat
            .node
            .parse()
            .map_err(|e| format!("`{}` is not a node URL: {e}", beat.node))?;
        let address = address_of(&url);
        if server.dead_for(&address, beat.runtime) {
            return Err(format!(
                "the FT server declared the runtime at {address} dead (it was silent for more than {} ms) and recovered its protected objects elsewhere",
                silence_limit(self.config.heartbeat).as_millis()
            ));
        }
        let mut members = lock(&self.members);
        let member = members
            .entry((address, beat.runtime))
            .or_insert_with(|| Member {
                nodes: Vec::new(),
                last: Instant::now(),
            });
        member.last = Instant::now();
        if !member.nodes.iter().any(|n| n.node == beat.node) {
            tracing::info!(node = %beat.node, vn = %beat.vn, "a protected node beats");
            member.nodes.push(beat);
        }
        Ok(beat_interval(self.config.heartbeat))
    }

    /// The runtimes silent for too long (address and id), taken out of
    /// the members.
    fn silent(&self) -> Vec<((String, u64), Vec<Beat>, Duration)> {
        let limit = silence_limit(self.config.heartbeat);
        let mut members = lock(&self.members);
        let gone: Vec<(String, u64)> = members
            .iter()
            .filter(|(_, m)| m.last.elapsed() > limit)
            .map(|(a, _)| a.clone())
            .collect();
        gone.into_iter()
            .filter_map(|a| {
                let m = members.remove(&a)?;
                Some((a, m.nodes, m.last.elapsed()))
            })
            .collect()
    }

    /// A node of virtual node `spares`, else `vn`, on a runtime beating
    /// and not `failed`; spread over them.
    fn candidate(
        &self,
        vn: &str,
        spares: Option<&str>,
        failed: &str,
        turn: usize,
    ) -> Option<NodeUrl> {
        let members = lock(&self.members);
        for wanted in spares.into_iter().chain([vn]) {
            let mut found: Vec<NodeUrl> = members
                .iter()
                .filter(|((address, _), _)| address.as_str() != failed)
                .flat_map(|(_, m)| m.nodes.iter())
                .filter(|b| b.vn == wanted)
                .filter_map(|b| b.node.parse().ok())
                .collect();
            if !found.is_empty() {
                found.sort_by_key(ToString::to_string);
                return Some(found.swap_remove(turn % found.len()));
            }
        }
        None
    }

    /// Waits up to the recovery wait for a node to recover the objects of
    /// `failed` on.
    async fn wait_for_node(
        &self,
        vn: &str,
        spares: Option<&str>,
        failed: &str,
        turn: usize,
    ) -> Option<NodeUrl> {
        let deadline = Instant::now() + self.config.recovery_wait;
        loop {
            if let Some(url) = self.candidate(vn, spares, failed, turn) {
                return Some(url);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(self.config.heartbeat.min(Duration::from_millis(100))).await;
        }
    }
}

impl FtServer {
    /// Makes this server detect failures itself, from the beats of the
    /// protected nodes (see the [module documentation](self)); `runtime`
    /// is the one it serves from, and reaches nodes to recover on with.
    /// Once per server; the detector stops when the server is dropped.
    pub fn watch(self: &Arc<Self>, runtime: &Runtime, config: WatchConfig) {
        let watch = Arc::new(Watch::new(runtime.clone(), config));
        if self.set_watch(watch.clone()).is_err() {
            return;
        }
        let server = Arc::downgrade(self);
        tokio::spawn(detect(server, watch));
    }

    /// Node `beat.node` lives: `Ok(Some(period))` to beat again after
    /// `period`, `Ok(None)` when this server does not take beats (the
    /// deployment running it detects failures), an error when its runtime
    /// was declared dead.
    pub fn beat(&self, beat: Beat) -> Result<Option<Duration>, String> {
        match self.watching() {
            None => Ok(None),
            Some(watch) => watch.beat(self, beat).map(Some),
        }
    }

    /// What this server's own detector did after its first `seen`
    /// events, and how many there were in all (none when it does not
    /// watch).
    pub fn events_after(&self, seen: u64) -> (u64, Vec<WatchEvent>) {
        match self.watching() {
            None => (0, Vec::new()),
            Some(watch) => watch.events_after(seen),
        }
    }
}

/// Sweeps the members every eighth of a heartbeat period; a silent
/// runtime's objects are recovered.
async fn detect(server: Weak<FtServer>, watch: Arc<Watch>) {
    let every = (watch.config.heartbeat / 8).max(Duration::from_millis(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(server) = server.upgrade() else {
            return;
        };
        for ((address, runtime), nodes, silent) in watch.silent() {
            let cause = format!("no heartbeat for {} ms", silent.as_millis());
            tracing::warn!("the runtime at {address} is declared dead: {cause}");
            server.declare_dead_runtime(&address, runtime);
            tokio::spawn(recover(
                server.clone(),
                watch.clone(),
                address,
                nodes,
                cause,
            ));
        }
    }
}

/// Recovers the objects of the runtime at `address`, which hosted `nodes`.
async fn recover(
    server: Arc<FtServer>,
    watch: Arc<Watch>,
    address: String,
    nodes: Vec<Beat>,
    cause: String,
) {
    let detected = Instant::now();
    let Some(first) = nodes.first() else {
        return;
    };
    let (vn, spares) = (first.vn.clone(), first.spares.clone());
    let place = |attempt: usize, address: String| {
        let (watch, vn, spares, cause) = (watch.clone(), vn.clone(), spares.clone(), cause.clone());
        Box::pin(async move {
            match watch
                .wait_for_node(&vn, spares.as_deref(), &address, attempt)
                .await
            {
                Some(url) => Ok(watch.runtime.node(&url)),
                None => Err(format!(
                    "no node of {} beat within {} s ({cause})",
                    spares
                        .as_deref()
                        .map_or_else(|| vn.clone(), |s| format!("{s} or {vn}")),
                    watch.config.recovery_wait.as_secs()
                )),
            }
        }) as futures::future::BoxFuture<'static, Result<actogrid_runtime::Node, String>>
    };
    let each = |to: &actogrid_runtime::Node,
                result: Result<crate::server::Recovery, crate::server::FtError>| {
        let took = detected.elapsed();
        let event = match result {
            Ok(r) => {
                tracing::info!(
                    vn = %vn,
                    "object {:#x} recovered on {} ({} replayed, {} ms after its runtime's failure was detected: {cause})",
                    r.object,
                    to.url(),
                    r.replayed,
                    took.as_millis()
                );
                WatchEvent::Recovered {
                    object: r.object,
                    node: to.url().to_string(),
                    vn: vn.clone(),
                    cause: cause.clone(),
                    replayed: r.replayed as u64,
                    took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                }
            }
            Err(e) => {
                tracing::error!(vn = %vn, "{e}");
                WatchEvent::Lost {
                    object: e.object().unwrap_or(0),
                    vn: vn.clone(),
                    error: e.to_string(),
                }
            }
        };
        watch.record(event);
    };
    let lost = server.recover_runtime(address, place, each).await;
    for (object, error) in lost {
        tracing::error!(vn = %vn, "protected object {object:#x} lost: {error}");
        watch.record(WatchEvent::Lost {
            object,
            vn: vn.clone(),
            error,
        });
    }
}
