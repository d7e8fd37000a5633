//! `actogrid peer`: a daemon that joins the overlay and lends node slots,
//! until SIGINT or SIGTERM; `actogrid peer status ADDR` asks one for its
//! acquaintances, slots and lent nodes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actogrid::peer::{PeerDaemon, PeerOptions, TOKEN_ENV, peer_status, token_of};

/// The line the daemon prints on stdout once it serves.
const ANNOUNCE: &str = "actogrid peer listening on ";

/// Arguments of `actogrid peer`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Show a peer's acquaintances, slots and lent nodes.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    /// The peer, `host:port`.
    #[arg(value_name = "ADDR")]
    address: String,
    /// The overlay's passphrase (default: $ACTOGRID_OVERLAY_TOKEN).
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct DaemonArgs {
    /// Address to listen on, `host:port` (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7100")]
    listen: String,
    /// Address other peers should use, when not the listening one.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// A first contact in the overlay (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Node slots to lend (default: the number of cores).
    #[arg(long)]
    slots: Option<u32>,
    /// Acquaintances to keep (NOA).
    #[arg(long, default_value_t = 10)]
    noa: u32,
    /// Heartbeat and upkeep period (TTU): `500ms`, `60s`, or milliseconds.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    ttu: Duration,
    /// Hops a request travels (TTL).
    #[arg(long, default_value_t = 5)]
    ttl: u32,
    /// How long to wait for an answer before giving up on it.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    answer_timeout: Duration,
    /// A booked slot with nothing started on it is free again after this.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    booking_expiry: Duration,
    /// The overlay's passphrase (default: $ACTOGRID_OVERLAY_TOKEN; none:
    /// an open overlay).
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
    /// Where programs are cached and lent runtimes run (default:
    /// ~/.cache/actogrid/peer).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Address-space limit of each lent runtime: `2G`, `512M`, or bytes.
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// Process limit while a lent runtime runs (`ulimit -u`; it counts all
    /// the processes of this user).
    #[arg(long)]
    max_processes: Option<u32>,
    /// Niceness of lent runtimes.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    nice: i32,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
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

fn parse_size(text: &str) -> Result<u64, String> {
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
            init_logging();
            tokio.block_on(serve(args.daemon))
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn serve(args: DaemonArgs) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            super::emit_err(&format!("error: cannot listen on {}: {e}\n", args.listen));
            return ExitCode::from(1);
        }
    };
    let defaults = PeerOptions::default();
    let options = PeerOptions {
        advertise: args.advertise,
        peers: args.peers,
        slots: args.slots.unwrap_or(defaults.slots),
        noa: args.noa,
        ttu: args.ttu,
        ttl: args.ttl,
        answer_timeout: args.answer_timeout,
        booking_expiry: args.booking_expiry,
        token: token_of(args.token.as_deref()),
        work_dir: args.work_dir.unwrap_or(defaults.work_dir),
        memory_limit: args.memory_limit,
        max_processes: args.max_processes,
        nice: args.nice,
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
    tracing::info!("peer {} lends {slots} slot(s)", daemon.address());
    actogrid::__terminated().await;
    tracing::info!("leaving the overlay");
    daemon.shutdown().await;
    ExitCode::SUCCESS
}

async fn show_status(args: StatusArgs) -> ExitCode {
    let rt = match actogrid::Runtime::bind("127.0.0.1:0", actogrid::Config::default()).await {
        Ok(rt) => rt,
        Err(e) => {
            super::emit_err(&format!("error: cannot start a runtime: {e}\n"));
            return ExitCode::from(1);
        }
    };
    let result = peer_status(&rt, &args.address, token_of(args.token.as_deref())).await;
    rt.shutdown();
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
