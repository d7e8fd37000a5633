//! actogrid benchmarks.
//!
//! Each subcommand measures one thing together with a raw baseline measured
//! in the same run, prints a few readable lines, and ends with one JSON line
//! (see [`report::Report`]).
//!
//! ```console
//! $ cargo run --release -p actogrid-bench -- descriptor-parse
//! $ cargo run --release -p actogrid-bench -- ao-rtt
//! $ cargo run --release -p actogrid-bench -- ft-store --dir /var/tmp
//! ```
//!
//! The network benchmarks start their servers as child processes of this
//! same binary (hidden `serve-*` subcommands, see `child.rs`), and make
//! their calls from tasks of a two-worker tokio runtime.

mod ao_create;
mod ao_rtt;
mod ao_throughput;
mod baseline;
mod child;
mod dashboard;
mod deploy_local;
mod deploy_ssh;
mod deployment;
mod descriptor_parse;
mod ft_overhead;
mod ft_recovery;
mod ft_recovery_cic;
mod ft_store;
mod ft_tradeoff;
mod group_broadcast;
mod load_balance;
mod node_memory;
mod p2p_acquire;
mod report;
mod security;
mod serve;
mod timing;

use clap::{Parser, Subcommand};

/// actogrid benchmarks; the last line of the output is the result as JSON.
#[derive(Debug, Parser)]
#[command(name = "actogrid-bench")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Parse, expand and validate a descriptor of a large ssh cluster,
    /// against a plain quick-xml scan of the same text.
    DescriptorParse(descriptor_parse::Args),
    /// Round trip of an empty method call on a remote active object, one
    /// call in flight, against a plain tonic unary call (and TCP
    /// ping-pong); unpinned and pinned to one CPU.
    AoRtt(ao_rtt::Args),
    /// Calls per second from one caller pipelining calls to one remote
    /// active object, against a plain tonic bidirectional echo stream;
    /// unpinned and pinned to one CPU.
    AoThroughput(ao_throughput::Args),
    /// Creating an active object on a remote node, one creation in flight,
    /// over TLS (the object gets a key) against plaintext; unpinned and
    /// pinned to one CPU.
    AoCreate(ao_create::Args),
    /// One group call reaching 64 objects on 4 nodes, all results awaited,
    /// against 64 concurrent plain tonic unary calls to 4 servers.
    GroupBroadcast(group_broadcast::Args),
    /// Resident memory of an idle node and per hosted object, against an
    /// idle plain tonic server.
    NodeMemory(node_memory::Args),
    /// 64 local runtimes from `activate()` until every node answered one
    /// call, against starting the same 64 processes bare.
    DeployLocal(deploy_local::Args),
    /// 3 ssh hosts × 4 runtimes from `activate()` until every node answered
    /// one call, against a plain `ssh host true` fan-out.
    DeploySsh(deploy_ssh::Args),
    /// Makespan of a stream of tasks on objects that all start on 2 of 8
    /// nodes, with the load-balancing service against without it.
    LoadBalance(load_balance::Args),
    /// 32 overlay peers × 2 slots on loopback: a `P2PService` asks for 64
    /// nodes, until each answered one call, against creating the same 64
    /// runtimes locally.
    P2pAcquire(p2p_acquire::Args),
    /// Small request-log entries made durable per second by the FT store
    /// with group commit, against one commit per entry.
    FtStore(ft_store::Args),
    /// `pml`: a protected object with a 1,000-request log recovered on a
    /// spare after its runtime died, against restoring its checkpoint
    /// alone.
    FtRecovery(ft_recovery::Args),
    /// `pml`: tasks of 1 ms and empty calls on protected objects, against
    /// the same on unprotected ones.
    FtOverhead(ft_overhead::Args),
    /// Total time of a few application shapes (objects × task length)
    /// unprotected, with CIC and with PML, without a failure and with one:
    /// which protocol for which application.
    FtTradeoff(ft_tradeoff::Args),
    /// Calls per second to a deployed runtime with a dashboard nobody
    /// watches and with its page open, against the same deployment
    /// without a dashboard.
    Dashboard(dashboard::Args),
    /// Serves an overlay peer lending slots (started by the benchmarks).
    #[command(hide = true)]
    ServePeer(serve::PeerArgs),
    /// Serves an actogrid runtime (started by the benchmarks).
    #[command(hide = true)]
    ServeNode(serve::Args),
    /// Serves the plain tonic echo service (started by the benchmarks).
    #[command(hide = true)]
    ServeEcho(serve::Args),
    /// Serves plain TCP ping-pong (started by the benchmarks).
    #[command(hide = true)]
    ServeTcp(serve::Args),
}

fn main() -> anyhow::Result<()> {
    // The `Echo` and friends its servers host.
    let _ = actogrid_builtin::link();
    // `serve-peer` lends slots: their vessels are this binary too.
    actogrid::peer::enter_vessel_if_asked();
    // The deployment benchmarks start this binary as their runtimes.
    actogrid::serve_if_deployed();
    let cli = Cli::parse();
    // Logs only when asked (RUST_LOG): the benchmark's output stays clean.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
    let report = match cli.bench {
        Bench::DescriptorParse(args) => descriptor_parse::run(&args)?,
        Bench::AoRtt(args) => bench_runtime()?.block_on(ao_rtt::run(&args))?,
        Bench::AoThroughput(args) => bench_runtime()?.block_on(ao_throughput::run(&args))?,
        Bench::AoCreate(args) => bench_runtime()?.block_on(ao_create::run(&args))?,
        Bench::GroupBroadcast(args) => bench_runtime()?.block_on(group_broadcast::run(&args))?,
        Bench::NodeMemory(args) => bench_runtime()?.block_on(node_memory::run(&args))?,
        Bench::DeployLocal(args) => bench_runtime()?.block_on(deploy_local::run(&args))?,
        Bench::DeploySsh(args) => bench_runtime()?.block_on(deploy_ssh::run(&args))?,
        Bench::LoadBalance(args) => bench_runtime()?.block_on(load_balance::run(&args))?,
        Bench::P2pAcquire(args) => bench_runtime()?.block_on(p2p_acquire::run(&args))?,
        Bench::FtStore(args) => bench_runtime()?.block_on(ft_store::run(&args))?,
        Bench::FtRecovery(args) => bench_runtime()?.block_on(ft_recovery::run(&args))?,
        Bench::FtOverhead(args) => bench_runtime()?.block_on(ft_overhead::run(&args))?,
        Bench::FtTradeoff(args) => bench_runtime()?.block_on(ft_tradeoff::run(&args))?,
        Bench::Dashboard(args) => bench_runtime()?.block_on(dashboard::run(&args))?,
        Bench::ServePeer(args) => return server_runtime()?.block_on(serve::peer(&args)),
        Bench::ServeNode(args) => return server_runtime()?.block_on(serve::node(&args)),
        Bench::ServeEcho(args) => return server_runtime()?.block_on(serve::echo(&args)),
        Bench::ServeTcp(args) => return server_runtime()?.block_on(serve::tcp(&args)),
    };
    report.print();
    Ok(())
}

/// The benchmark's own runtime: two workers, whatever the machine.
fn bench_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// A server's runtime: one worker per CPU it may run on (one when started
/// pinned).
fn server_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
