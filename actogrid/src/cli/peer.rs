//! `actogrid peer`: a daemon that joins the overlay and lends node slots,
//! until SIGINT or SIGTERM; `actogrid peer status ADDR` asks one for its
//! acquaintances, slots, lent nodes and how they are protected.

mod config;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actogrid::descriptor::model::p2p_defaults;
use actogrid::peer::{PeerDaemon, PeerOptions, Pool, VesselOptions, peer_status};

/// The line the daemon prints on stdout once it serves.
const ANNOUNCE: &str = "actogrid peer listening on ";

/// Arguments of `actogrid peer`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    // Boxed: many options, and the other commands are small.
    #[command(flatten)]
    daemon: Box<DaemonArgs>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Show a peer's acquaintances, slots, lent nodes (what each uses, the
    /// limits it reached) and how lent slots are protected.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    /// The peer, `host:port`.
    #[arg(value_name = "ADDR")]
    address: String,
    #[command(flatten)]
    pool: PoolArgs,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

/// How a peer proves it belongs to its pool. The passphrase is never an
/// option: a command line is visible to every user of the machine.
#[derive(clap::Args, Debug, Default)]
struct PoolArgs {
    /// A file holding the pool's passphrase (first line; default:
    /// $ACTOGRID_OVERLAY_PASSPHRASE, or the file named by
    /// $ACTOGRID_OVERLAY_PASSPHRASE_FILE).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// The pool authority's certificate (PEM), for a site's own PKI; with
    /// --pool-cert and --pool-key.
    #[arg(long, value_name = "FILE", requires_all = ["pool_cert", "pool_key"])]
    pool_ca: Option<PathBuf>,
    /// This peer's certificate (PEM), issued by the pool's authority.
    #[arg(long, value_name = "FILE", requires = "pool_ca")]
    pool_cert: Option<PathBuf>,
    /// This peer's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "pool_ca")]
    pool_key: Option<PathBuf>,
    /// No authentication, no encryption: anyone who reaches this peer can
    /// make it run any program. Only for a closed test pool.
    #[arg(long)]
    insecure_open_pool: bool,
}

impl PoolArgs {
    /// The pool these options, then `file`, then the environment name;
    /// `None` when nothing does.
    fn pool(self, file: &config::File) -> Result<Option<Pool>, String> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let ca = self.pool_ca.or(file.pool_ca.clone());
        if let Some(ca) = ca {
            let cert = self
                .pool_cert
                .or(file.pool_cert.clone())
                .ok_or("--pool-ca needs --pool-cert")?;
            let key = self
                .pool_key
                .or(file.pool_key.clone())
                .ok_or("--pool-ca needs --pool-key")?;
            return Ok(Some(Pool::Site {
                authority: read(&ca)?,
                certificate: read(&cert)?,
                key: read(&key)?,
            }));
        }
        if let Some(path) = self.passphrase_file.or(file.passphrase_file.clone()) {
            return Pool::passphrase_file(&path)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        if let Some(pool) = Pool::from_env().map_err(|e| e.to_string())? {
            return Ok(Some(pool));
        }
        if self.insecure_open_pool || file.insecure_open_pool.unwrap_or(false) {
            return Ok(Some(Pool::InsecureOpen));
        }
        Ok(None)
    }
}

#[derive(clap::Args, Debug, Default)]
struct DaemonArgs {
    /// A configuration file: `key = value` lines (TOML), the keys being
    /// these options' long names (`memory-limit = "2G"`, `peers = […]`).
    /// Options given here override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, `host:port` (port 0 picks a free one)
    /// [default: 127.0.0.1:7100].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Where the peer's dashboard listens (its overlay, slots and lent
    /// runtimes, live; `/metrics`), or `off` [default: a port of
    /// loopback; its URL is printed at start].
    #[arg(long, value_name = "ADDR|off", value_parser = super::deploy::parse_dashboard)]
    dashboard: Option<super::deploy::Dashboard>,
    /// Address other peers should use, when not the listening one.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// A first contact in the overlay (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Node slots to lend [default: the number of cores].
    #[arg(long)]
    slots: Option<u32>,
    /// Acquaintances to keep (NOA) [default: 10].
    #[arg(long)]
    noa: Option<u32>,
    /// Heartbeat and upkeep period (TTU): `500ms`, `60s`, or milliseconds
    /// [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    ttu: Option<Duration>,
    /// Hops a request travels (TTL) [default: 5].
    #[arg(long)]
    ttl: Option<u32>,
    /// How long to wait for an answer before giving up on it [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    answer_timeout: Option<Duration>,
    /// A booked slot with nothing started on it is free again after this
    /// [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    booking_expiry: Option<Duration>,
    #[command(flatten)]
    pool: PoolArgs,
    /// Where programs are cached and lent runtimes run [default:
    /// /var/cache/actogrid/peer for root, else ~/.cache/actogrid/peer].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Memory of each lent runtime and all it starts: `2G`, `512M`, or
    /// bytes [default: half this machine's memory shared among the slots].
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// Processes and threads of each lent runtime [default: 512].
    #[arg(long)]
    max_processes: Option<u32>,
    /// Cores each lent runtime may use at most: `1`, `0.5` [default: 1].
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<f64>,
    /// Niceness of lent runtimes, also their CPU weight [default: 10].
    #[arg(long, allow_negative_numbers = true)]
    nice: Option<i32>,
    /// Disk each lent runtime may fill in its directory [default: 1G].
    #[arg(long, value_parser = parse_size)]
    disk_limit: Option<u64>,
    /// Let lent runtimes connect (TCP) only to their deployer.
    #[arg(long)]
    confine_network: bool,
    /// First uid of the lent runtimes' users, one per slot (when root)
    /// [default: 1900000000].
    #[arg(long)]
    uid_base: Option<u32>,
    /// Run lent runtimes as this daemon's user, even as root.
    #[arg(long)]
    same_user: bool,
    /// Do not use cgroups (resource limits only).
    #[arg(long)]
    no_cgroups: bool,
    /// Where lent runtimes' cgroups go in each hierarchy [default:
    /// actogrid-vessels].
    #[arg(long, value_name = "PATH")]
    cgroup_parent: Option<String>,
    /// A further path lent runtimes may read (repeatable).
    #[arg(long = "read-only", value_name = "PATH")]
    read_only: Vec<PathBuf>,
    /// First of the ports lent runtimes listen on, one per vessel
    /// identity [default: the 4096 ports below the kernel's ephemeral
    /// range].
    #[arg(long, value_name = "PORT")]
    port_base: Option<u16>,
    /// Where the daemon records the vessel identities it holds [default:
    /// /run/actogrid/vessels for root].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1)
    };
    number
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| Duration::from_millis(n.saturating_mul(scale)))
        .ok_or_else(|| format!("`{text}` is not a duration (500ms, 60s, 2m)"))
}

fn parse_cpus(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|c| c.is_finite() && *c > 0.0)
        .ok_or_else(|| format!("`{text}` is not a number of cores (1, 0.5, 4)"))
}

pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&text[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n.saturating_mul(scale))
        .ok_or_else(|| format!("`{text}` is not a size (512M, 2G, bytes)"))
}

pub(crate) fn run(args: Args) -> ExitCode {
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(t) => t,
        Err(e) => {
            super::emit_err(&format!("error: cannot start the async runtime: {e}\n"));
            return ExitCode::from(1);
        }
    };
    match args.command {
        Some(Command::Status(status)) => tokio.block_on(show_status(status)),
        None => {
            super::init_logging();
            tokio.block_on(serve(*args.daemon))
        }
    }
}

/// The daemon's options: the command line over the configuration file
/// over the defaults.
fn options(args: DaemonArgs) -> Result<(String, PeerOptions), String> {
    let file = match &args.config {
        Some(path) => config::read(path)?,
        None => config::File::default(),
    };
    let pool = args.pool.pool(&file)?;
    let defaults = PeerOptions::default();
    let vessel_defaults = defaults.vessel.clone();
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| format!("127.0.0.1:{}", p2p_defaults::PORT));
    // Repeatable options given on the command line replace the file's.
    fn or_file<T>(given: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
        if given.is_empty() {
            file.unwrap_or_default()
        } else {
            given
        }
    }
    let dashboard = match (args.dashboard, file.dashboard) {
        (Some(d), _) => d,
        (None, Some(text)) => super::deploy::parse_dashboard(&text)
            .map_err(|e| format!("the configuration file's `dashboard`: {e}"))?,
        (None, None) => {
            super::deploy::Dashboard::At(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        }
    };
    let dashboard = match dashboard {
        super::deploy::Dashboard::Off => None,
        super::deploy::Dashboard::At(addr) => Some(addr),
    };
    let peers = or_file(args.peers, file.peers);
    let read_only = or_file(args.read_only, file.read_only);
    let options = PeerOptions {
        dashboard,
        advertise: args.advertise.or(file.advertise),
        peers,
        slots: args.slots.or(file.slots).unwrap_or(defaults.slots),
        noa: args.noa.or(file.noa).unwrap_or(10),
        ttu: args
            .ttu
            .or(file.ttu.map(|d| d.0))
            .unwrap_or(Duration::from_secs(60)),
        ttl: args.ttl.or(file.ttl).unwrap_or(5),
        answer_timeout: args
            .answer_timeout
            .or(file.answer_timeout.map(|d| d.0))
            .unwrap_or(Duration::from_secs(10)),
        booking_expiry: args
            .booking_expiry
            .or(file.booking_expiry.map(|d| d.0))
            .unwrap_or(Duration::from_secs(60)),
        pool,
        work_dir: args.work_dir.or(file.work_dir).unwrap_or(defaults.work_dir),
        vessel: VesselOptions {
            memory_limit: args.memory_limit.or(file.memory_limit.map(|s| s.0)),
            max_processes: args
                .max_processes
                .or(file.max_processes)
                .unwrap_or(vessel_defaults.max_processes),
            cpus: args.cpus.or(file.cpus).or(vessel_defaults.cpus),
            nice: args.nice.or(file.nice).unwrap_or(vessel_defaults.nice),
            disk_limit: args
                .disk_limit
                .or(file.disk_limit.map(|s| s.0))
                .unwrap_or(vessel_defaults.disk_limit),
            confine_network: args.confine_network || file.confine_network.unwrap_or(false),
            uid_base: args
                .uid_base
                .or(file.uid_base)
                .unwrap_or(vessel_defaults.uid_base),
            same_user: args.same_user || file.same_user.unwrap_or(false),
            cgroups: !args.no_cgroups && file.cgroups.unwrap_or(true),
            cgroup_parent: args
                .cgroup_parent
                .or(file.cgroup_parent)
                .unwrap_or(vessel_defaults.cgroup_parent),
            read_only,
            port_base: args.port_base.or(file.port_base),
            state_dir: args.state_dir.or(file.state_dir),
        },
    };
    Ok((listen, options))
}

async fn serve(args: DaemonArgs) -> ExitCode {
    let (listen, options) = match options(args) {
        Ok(o) => o,
        Err(e) => {
            super::emit_err(&format!("error: {e}\n"));
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            super::emit_err(&format!("error: cannot listen on {listen}: {e}\n"));
            return ExitCode::from(1);
        }
    };
    let slots = options.slots;
    let daemon = match PeerDaemon::start(listener, options).await {
        Ok(d) => d,
        Err(e) => {
            super::emit_err(&format!("error: {e}\n"));
            return ExitCode::from(1);
        }
    };
    super::emit(&format!("{ANNOUNCE}{}\n", daemon.address()));
    if let Some(url) = daemon.dashboard_url() {
        super::emit_err(&format!("dashboard: {url}\n"));
    }
    tracing::info!("peer {} lends {slots} slot(s)", daemon.address());
    actogrid::__terminated().await;
    tracing::info!("leaving the overlay");
    daemon.shutdown().await;
    ExitCode::SUCCESS
}

async fn show_status(args: StatusArgs) -> ExitCode {
    let pool = match args.pool.pool(&config::File::default()) {
        Ok(Some(pool)) => pool,
        Ok(None) => {
            super::emit_err(
                "error: asking a peer needs its pool's passphrase: $ACTOGRID_OVERLAY_PASSPHRASE, \
                 --passphrase-file, or --pool-ca/--pool-cert/--pool-key\n",
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            super::emit_err(&format!("error: {e}\n"));
            return ExitCode::from(1);
        }
    };
    let result = peer_status(&pool, &args.address).await;
    match result {
        Ok(status) if args.json => match serde_json::to_string_pretty(&status) {
            Ok(text) => {
                super::emit(&format!("{text}\n"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                super::emit_err(&format!("error: {e}\n"));
                ExitCode::from(1)
            }
        },
        Ok(status) => {
            super::emit(&format!("{status}\n"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            super::emit_err(&format!("error: {e}\n"));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_as_documented() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }
}
