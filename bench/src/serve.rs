//! The hidden `serve-*` subcommands: the server processes the benchmarks
//! start (see `child.rs`). Each binds, prints `LISTENING <host:port>` as
//! its first line on stdout, and serves until its stdin reaches end of
//! file, which happens when the benchmark that started it exits.

use std::io::{Read as _, Write as _};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::baseline;

/// Options shared by the servers.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

/// An actogrid runtime serving its wire.
pub(crate) async fn node(args: &Args) -> anyhow::Result<()> {
    // Its credentials come first on stdin (or it runs without TLS).
    let identity = actogrid::node_identity().await?;
    let listener = bind(&args.listen).await?;
    let address = listener.local_addr()?.to_string();
    let rt = actogrid_runtime::Runtime::builder()
        .identity(identity)
        .address(address.clone())
        .build();
    let server = rt.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener, std::future::pending()).await {
            eprintln!("serve-node: {e}");
        }
    });
    let eof = stdin_closed();
    announce(&address)?;
    eof.await;
    rt.shutdown();
    Ok(())
}

/// The plain tonic echo server.
pub(crate) async fn echo(args: &Args) -> anyhow::Result<()> {
    let listener = bind(&args.listen).await?;
    let address = listener.local_addr()?.to_string();
    let eof = stdin_closed();
    announce(&address)?;
    baseline::serve_echo(listener, eof).await
}

/// The plain TCP ping-pong server.
pub(crate) async fn tcp(args: &Args) -> anyhow::Result<()> {
    let listener = bind(&args.listen).await?;
    let address = listener.local_addr()?.to_string();
    let eof = stdin_closed();
    announce(&address)?;
    tokio::select! {
        r = baseline::serve_tcp(listener) => r,
        () = eof => Ok(()),
    }
}

async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot bind {address}"))
}

fn announce(address: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "LISTENING {address}")?;
    out.flush()?;
    Ok(())
}

/// Completes when stdin reaches end of file (or fails).
fn stdin_closed() -> impl std::future::Future<Output = ()> + Send {
    let (tx, rx) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

/// Options of `serve-peer`.
#[derive(Debug, clap::Args)]
pub(crate) struct PeerArgs {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// First contacts (repeatable).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Slots to lend.
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// Where the program cache and the slots are.
    #[arg(long)]
    work_dir: std::path::PathBuf,
}

/// An overlay peer daemon lending slots (what `actogrid peer` runs).
pub(crate) async fn peer(args: &PeerArgs) -> anyhow::Result<()> {
    let listener = bind(&args.listen).await?;
    let options = actogrid::peer::PeerOptions {
        peers: args.peers.clone(),
        slots: args.slots,
        noa: 4,
        ttl: 6,
        ttu: std::time::Duration::from_secs(1),
        // The pool's passphrase comes in the environment.
        pool: actogrid::peer::Pool::from_env()?,
        work_dir: args.work_dir.clone(),
        ..actogrid::peer::PeerOptions::default()
    };
    let daemon = actogrid::peer::PeerDaemon::start(listener, options).await?;
    let eof = stdin_closed();
    announce(daemon.address())?;
    eof.await;
    daemon.shutdown().await;
    Ok(())
}
