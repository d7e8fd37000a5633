//! The peer-to-peer overlay, on the wire: the daemon that lends node slots
//! (`actogrid peer`), and the pieces a deployment uses to acquire nodes
//! from it (`P2PService` in a descriptor).
//!
//! The protocol itself is the sans-IO core of
//! [`actogrid_acquisition::overlay`]; this module drives it:
//!
//! * **Transport.** A peer is an actogrid runtime hosting an
//!   [`OverlayEndpoint`] registered as [`ENDPOINT_NAME`]; peers are named by
//!   their `host:port`. Sending a message is a call of the destination's
//!   `deliver` with the sender's name and the encoded envelope; the reply
//!   is `Ok(())`, or the reason the message was refused (wrong token,
//!   malformed): the sender logs it, the receiver logged it too. A
//!   destination that cannot be reached is reported to the core at once.
//! * **Time.** A task ticks the core at its next deadline.
//! * **Lending.** When a slot is booked the requester sends a
//!   [`LaunchSpec`]: the program's sha256 and size, where to fetch it (a
//!   [`BinarySource`] on the deployer) and the runtime's environment (its
//!   deployer and one-time ticket). The daemon fetches the program only
//!   when its cache lacks that content, checks the hash, and starts it in
//!   a [vessel](VesselOptions): a user of its own, `<work dir>/slots/<booking>/`
//!   as its only writable place, capped memory, processes, CPU and disk,
//!   listening on its own port only, with its standard input on a pipe
//!   so that it exits when the daemon dies. The runtime registers with
//!   the deployer like a created one. A freed slot stops its runtime and
//!   everything it started; a runtime that ends frees its slot.
//! * **Trust.** Every message, launch and status request carries the
//!   overlay's token; others are refused with an error reply and logged.
//!   Nothing received can make the daemon panic.
//!
//! ```no_run
//! # async fn run() -> Result<(), actogrid::peer::PeerError> {
//! use actogrid::peer::{PeerDaemon, PeerOptions};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7100").await?;
//! let options = PeerOptions {
//!     peers: vec!["10.0.0.5:7100".into()],
//!     slots: 2,
//!     ..PeerOptions::default()
//! };
//! let daemon = PeerDaemon::start(listener, options).await?;
//! println!("peer {}", daemon.address());
//! daemon.shutdown().await; // leaves the overlay, stops lent runtimes
//! # Ok(()) }
//! ```

mod dashboard;
mod driver;
mod endpoint;
mod lender;
mod vessel;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actogrid_acquisition::overlay::Config as CoreConfig;
use actogrid_runtime::{Config, Runtime};
use serde::{Deserialize, Serialize};

pub use actogrid_acquisition::overlay::Token;
pub use dashboard::{Neighbour, PeerView};
pub use driver::{ENDPOINT_NAME, endpoint_url};
pub use endpoint::{
    BinarySource, BinarySourceProxy, Blob, LaunchSpec, OverlayEndpoint, OverlayEndpointProxy,
};
pub use vessel::{
    EndedVessel, Protection, VesselOptions, VesselStatus, VesselUsage, enter_vessel_if_asked,
};

pub(crate) use driver::{Driver, Role};

/// Environment variable holding the pool's passphrase, read by `actogrid
/// peer` and by deployments acquiring nodes when none is given.
pub const PASSPHRASE_ENV: &str = "ACTOGRID_OVERLAY_PASSPHRASE";

/// Environment variable naming a file that holds the pool's passphrase.
pub const PASSPHRASE_FILE_ENV: &str = "ACTOGRID_OVERLAY_PASSPHRASE_FILE";

/// Who belongs to a pool of peers, and how they prove it: every peer, and
/// every deployment that acquires nodes from the pool, connects with TLS
/// certificates of the pool's authority (see `actogrid_runtime::tls`).
#[derive(Clone)]
pub enum Pool {
    /// Peers that know this passphrase: the pool's authority is derived
    /// from it (Argon2id), so no key is ever exchanged.
    Passphrase(String),
    /// A site's own PKI: the pool's authority and this peer's certificate
    /// and key, all PEM.
    Site {
        /// The authority's certificate (or several).
        authority: String,
        /// This peer's certificate chain; it names the peer
        /// (`actogrid:peer:<name>`).
        certificate: String,
        /// Its private key.
        key: String,
    },
    /// No authentication, no encryption: anyone who reaches a peer's port
    /// can make it run any program. For a closed test pool only.
    InsecureOpen,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pool::Passphrase(_) => "Pool::Passphrase(…)",
            Pool::Site { .. } => "Pool::Site",
            Pool::InsecureOpen => "Pool::InsecureOpen",
        })
    }
}

impl Pool {
    /// The pool named by the environment: the passphrase in
    /// `ACTOGRID_OVERLAY_PASSPHRASE`, or in the file named by
    /// `ACTOGRID_OVERLAY_PASSPHRASE_FILE`; `None` when neither is set.
    pub fn from_env() -> Result<Option<Pool>, PeerError> {
        if let Ok(path) = std::env::var(PASSPHRASE_FILE_ENV) {
            return Pool::passphrase_file(std::path::Path::new(&path)).map(Some);
        }
        Ok(std::env::var(PASSPHRASE_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .map(Pool::Passphrase))
    }

    /// The passphrase held in `path` (its first line).
    pub fn passphrase_file(path: &std::path::Path) -> Result<Pool, PeerError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PeerError::Setup(format!(
                "cannot read the passphrase file {}: {e}",
                path.display()
            ))
        })?;
        let line = text.lines().next().unwrap_or_default().trim().to_owned();
        if line.is_empty() {
            return Err(PeerError::Setup(format!(
                "the passphrase file {} is empty",
                path.display()
            )));
        }
        Ok(Pool::Passphrase(line))
    }

    /// The identity of peer `name` in this pool (what a runtime that talks
    /// to the pool's peers is built with).
    pub fn identity(&self, name: &str) -> Result<actogrid_runtime::Identity, PeerError> {
        use actogrid_runtime::Identity;
        let setup =
            |e: actogrid_runtime::IdentityError| PeerError::Setup(format!("pool credentials: {e}"));
        match self {
            Pool::Passphrase(p) => {
                Identity::peer(&pool_authority(p).map_err(setup)?, name).map_err(setup)
            }
            Pool::Site {
                authority,
                certificate,
                key,
            } => Identity::from_pem(certificate, key, authority).map_err(setup),
            Pool::InsecureOpen => {
                announce_open_pool();
                Ok(Identity::plaintext())
            }
        }
    }

    /// What names the pool in its messages (not a secret: messages travel
    /// inside TLS, and membership is proven by the certificates).
    pub(crate) fn token(&self) -> Result<Token, PeerError> {
        let setup =
            |e: actogrid_runtime::IdentityError| PeerError::Setup(format!("pool credentials: {e}"));
        Ok(match self {
            Pool::Passphrase(p) => {
                Token::from_secret(&pool_authority(p).map_err(setup)?.public_key())
            }
            Pool::Site { authority, .. } => Token::from_secret(authority.as_bytes()),
            Pool::InsecureOpen => Token::OPEN,
        })
    }
}

/// The authority of the pool of passphrase `passphrase`, derived once per
/// process (the derivation is slow on purpose).
fn pool_authority(
    passphrase: &str,
) -> Result<Arc<actogrid_runtime::Authority>, actogrid_runtime::IdentityError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Derived = HashMap<[u8; 32], Arc<actogrid_runtime::Authority>>;
    static DERIVED: OnceLock<Mutex<Derived>> = OnceLock::new();
    let key: [u8; 32] = {
        use sha2::Digest as _;
        sha2::Sha256::digest(passphrase.as_bytes()).into()
    };
    let mut derived = DERIVED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(a) = derived.get(&key) {
        return Ok(a.clone());
    }
    let authority = Arc::new(actogrid_runtime::Authority::for_pool(
        passphrase.as_bytes(),
    )?);
    derived.insert(key, authority.clone());
    Ok(authority)
}

fn announce_open_pool() {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let text = "INSECURE: this peer joins an open pool: no TLS, and anyone who reaches its \
                    port can make it run any program. Use this only for a closed test pool.";
        eprintln!("actogrid: {text}");
        tracing::warn!("{text}");
    });
}

/// What can go wrong running or asking a peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The daemon could not be set up (address, runtime, work directory).
    #[error("{0}")]
    Setup(String),
    /// The peer could not be asked, or refused.
    #[error("peer {peer}: {error}")]
    Peer {
        /// The peer asked.
        peer: String,
        /// What went wrong.
        error: String,
    },
}

impl From<std::io::Error> for PeerError {
    fn from(e: std::io::Error) -> PeerError {
        PeerError::Setup(e.to_string())
    }
}

/// How a peer daemon behaves: its place in the overlay and what it lends.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Address others reach it at (default: the bound one).
    pub advertise: Option<String>,
    /// First contacts (`host:port`), retried whenever it is short of
    /// acquaintances.
    pub peers: Vec<String>,
    /// Node slots it lends (default: the number of cores).
    pub slots: u32,
    /// NOA: acquaintances to keep.
    pub noa: u32,
    /// TTU: heartbeat and upkeep period.
    pub ttu: Duration,
    /// TTL of requests, in hops.
    pub ttl: u32,
    /// How long to wait for any answer before giving up on it.
    pub answer_timeout: Duration,
    /// A booked slot with no runtime started on it within this time is
    /// free again.
    pub booking_expiry: Duration,
    /// The pool it belongs to: a daemon refuses to start without one.
    pub pool: Option<Pool>,
    /// Where programs are cached and lent runtimes run.
    pub work_dir: PathBuf,
    /// What lent runtimes run in, under which limits.
    pub vessel: VesselOptions,
    /// Where its dashboard listens (default: a free port on loopback;
    /// `None`: no dashboard). Its URL, token included, is
    /// [`PeerDaemon::dashboard_url`].
    pub dashboard: Option<std::net::SocketAddr>,
}

impl Default for PeerOptions {
    fn default() -> PeerOptions {
        let core = CoreConfig::default();
        PeerOptions {
            advertise: None,
            peers: Vec::new(),
            slots: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            noa: core.noa,
            ttu: core.ttu,
            ttl: core.ttl,
            answer_timeout: core.answer_timeout,
            booking_expiry: Duration::from_secs(60),
            pool: None,
            work_dir: default_work_dir(),
            vessel: VesselOptions::default(),
            dashboard: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        }
    }
}

/// `/var/cache/actogrid/peer` for root (the vessels' users must reach
/// it), else `$XDG_CACHE_HOME/actogrid/peer` or `~/.cache/actogrid/peer`.
fn default_work_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/cache/actogrid/peer");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("actogrid").join("peer")
}

/// One slot of a peer, as [`PeerStatus`] shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlotStatus {
    /// `free`, `offered`, `booked` or `in use`.
    pub state: String,
    /// Who holds it, when not free.
    pub requester: Option<String>,
    /// Its booking, when not free.
    pub booking: Option<u64>,
}

/// A runtime a peer runs (or is starting) for a requester.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LentNode {
    /// The requesting peer (a deployment).
    pub requester: String,
    /// The booking.
    pub booking: u64,
    /// The runtime's process id, once it runs.
    pub pid: Option<u32>,
    /// Seconds since the slot was booked.
    pub seconds: u64,
    /// The uid its vessel runs as, when it has one of its own.
    pub uid: Option<u32>,
    /// What its vessel uses now, once it runs.
    pub usage: Option<VesselUsage>,
    /// The limits its vessel ran into so far.
    pub limits_hit: Vec<String>,
}

/// What `actogrid peer status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's name (`host:port`).
    pub address: String,
    /// Its acquaintances.
    pub acquaintances: Vec<String>,
    /// Its slots.
    pub slots: Vec<SlotStatus>,
    /// What it lends now.
    pub lent: Vec<LentNode>,
    /// How lent slots are protected, and the vessels that ended (a peer
    /// that lends).
    pub vessels: Option<VesselStatus>,
    /// Messages received.
    pub received: u64,
    /// Messages refused (wrong token, malformed).
    pub rejected: u64,
    /// Messages sent.
    pub sent: u64,
}

impl PeerStatus {
    /// Slots in state `state` (`free`, `booked`, `in use`…).
    pub fn count(&self, state: &str) -> usize {
        self.slots.iter().filter(|s| s.state == state).count()
    }
}

impl std::fmt::Display for PeerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "peer {}", self.address)?;
        writeln!(f, "acquaintances ({}):", self.acquaintances.len())?;
        for a in &self.acquaintances {
            writeln!(f, "  {a}")?;
        }
        writeln!(
            f,
            "slots: {} free, {} offered, {} booked, {} in use (of {})",
            self.count("free"),
            self.count("offered"),
            self.count("booked"),
            self.count("in use"),
            self.slots.len()
        )?;
        writeln!(f, "lent nodes ({}):", self.lent.len())?;
        for l in &self.lent {
            let pid = l
                .pid
                .map_or_else(|| "starting".to_owned(), |p| format!("pid {p}"));
            let uid = l.uid.map(|u| format!(", uid {u}")).unwrap_or_default();
            writeln!(
                f,
                "  booking {} for {} ({pid}{uid}, {} s)",
                l.booking, l.requester, l.seconds
            )?;
            if let Some(u) = &l.usage {
                writeln!(
                    f,
                    "    uses {} of memory, {} processes and threads, {} of disk",
                    vessel::bytes(u.memory),
                    u.tasks,
                    vessel::bytes(u.disk)
                )?;
            }
            for hit in &l.limits_hit {
                writeln!(f, "    limit reached: {hit}")?;
            }
        }
        if let Some(v) = &self.vessels {
            write!(f, "{v}")?;
        }
        write!(
            f,
            "messages: {} received ({} refused), {} sent",
            self.received, self.rejected, self.sent
        )
    }
}

/// A running peer daemon.
#[derive(Debug)]
pub struct PeerDaemon {
    rt: Runtime,
    driver: Arc<Driver>,
    lender: Arc<lender::Lender>,
    dashboard: Option<crate::web::Dashboard>,
}

impl PeerDaemon {
    /// Joins the overlay through `options.peers` and lends
    /// `options.slots` slots, serving on `listener`.
    pub async fn start(
        listener: tokio::net::TcpListener,
        options: PeerOptions,
    ) -> Result<PeerDaemon, PeerError> {
        let bound = listener.local_addr()?;
        let address = options
            .advertise
            .clone()
            .unwrap_or_else(|| bound.to_string());
        endpoint_url(&address).map_err(PeerError::Setup)?;
        for p in &options.peers {
            endpoint_url(p).map_err(PeerError::Setup)?;
        }
        std::fs::create_dir_all(options.work_dir.join("bin"))
            .and_then(|()| std::fs::create_dir_all(options.work_dir.join("slots")))
            .map_err(|e| {
                PeerError::Setup(format!(
                    "cannot create the work directory {}: {e}",
                    options.work_dir.display()
                ))
            })?;
        let (work, slots, vessel) = (
            options.work_dir.clone(),
            options.slots,
            options.vessel.clone(),
        );
        let vessels =
            tokio::task::spawn_blocking(move || vessel::Vessels::start(&work, slots, &vessel))
                .await
                .map_err(|e| PeerError::Setup(e.to_string()))?
                .map_err(|e| PeerError::Setup(format!("cannot lend slots safely: {e}")))?;
        let pool = options.pool.clone().ok_or_else(|| {
            PeerError::Setup(format!(
                "a peer needs its pool's credentials: a passphrase ({PASSPHRASE_ENV}, or a file: \
                 {PASSPHRASE_FILE_ENV} or --passphrase-file), a site's certificates, or, for a \
                 closed test pool only, --insecure-open-pool"
            ))
        })?;
        let token = pool.token()?;
        let rt = Runtime::builder()
            .config(Config::default())
            .identity(pool.identity(&address)?)
            .address(address.clone())
            .build();
        rt.make_global();
        let server = rt.clone();
        tokio::spawn(async move {
            if let Err(e) = server.serve(listener, std::future::pending()).await {
                tracing::error!("the peer's server stopped: {e}");
            }
        });
        let config = CoreConfig {
            noa: options.noa,
            ttu: options.ttu,
            ttl: options.ttl,
            exploring_ttl: options.ttl,
            answer_timeout: options.answer_timeout,
            booking_expiry: options.booking_expiry,
            slots: options.slots,
            token,
            ..CoreConfig::default()
        };
        let peers = options.peers.clone();
        let dashboard_at = options.dashboard;
        let lender = Arc::new(lender::Lender::new(Arc::new(options), Arc::new(vessels)));
        let role = Arc::new(lender::LenderRole(lender.clone()));
        let driver = Driver::start(&rt, address, config, peers, role)
            .await
            .map_err(PeerError::Setup)?;
        // The first upkeep at once: ask the first contacts.
        driver.step(|core, now| core.tick(now));
        let dashboard = match dashboard_at {
            None => None,
            Some(addr) => match dashboard::start(addr, &driver, rt.clone(), token).await {
                Ok(d) => Some(d.record("peer")),
                Err(e) => {
                    tracing::warn!("no dashboard: cannot listen on {addr}: {e}");
                    None
                }
            },
        };
        Ok(PeerDaemon {
            rt,
            driver,
            lender,
            dashboard,
        })
    }

    /// Where its dashboard is (`http://host:port/?token=…`), when it has
    /// one.
    pub fn dashboard_url(&self) -> Option<&str> {
        self.dashboard.as_ref().map(crate::web::Dashboard::url)
    }

    /// Its name in the overlay (`host:port`).
    pub fn address(&self) -> &str {
        self.driver.me()
    }

    /// Its acquaintances, slots and lent nodes.
    pub fn status(&self) -> PeerStatus {
        self.driver.status()
    }

    /// Leaves the overlay: acquaintances and requesters are told, lent
    /// runtimes are stopped with everything they started, the server
    /// stops.
    pub async fn shutdown(mut self) {
        self.dashboard.take();
        self.driver.step(|core, _| core.leave());
        self.driver.flush(Duration::from_secs(2)).await;
        self.lender.stop_all();
        // Every vessel killed and taken down (its mount, directory and
        // cgroups removed) before the daemon goes.
        self.lender
            .vessels()
            .wait_idle(Duration::from_secs(15))
            .await;
        self.lender.vessels().close();
        self.driver.stop().await;
        self.rt.shutdown();
    }
}

/// Asks the peer at `address` (`host:port`) of `pool` for its status.
pub async fn peer_status(pool: &Pool, address: &str) -> Result<PeerStatus, PeerError> {
    let fail = |error: String| PeerError::Peer {
        peer: address.to_owned(),
        error,
    };
    let runtime = Runtime::builder()
        .identity(pool.identity("status")?)
        .build();
    let token = pool.token()?;
    let asked = async {
        let url = endpoint_url(address).map_err(fail)?;
        let endpoint: OverlayEndpointProxy =
            tokio::time::timeout(Duration::from_secs(10), runtime.lookup(&url))
                .await
                .map_err(|_| fail("no answer within 10 s".into()))?
                .map_err(|e| fail(e.to_string()))?;
        tokio::time::timeout(Duration::from_secs(10), endpoint.status(token))
            .await
            .map_err(|_| fail("no answer within 10 s".into()))?
            .map_err(|e| match e {
                actogrid_runtime::CallError::Method(m) => fail(m),
                other => fail(other.to_string()),
            })
    };
    let result = asked.await;
    runtime.shutdown();
    result
}
