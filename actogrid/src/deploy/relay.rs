//! The relay a `hierarchicalProcess` starts on a cluster's front-end.
//!
//! The hosts behind a front-end often cannot reach the deployer, and the
//! deployer cannot reach them. The deployer forwards a port of the
//! front-end's loopback to itself over its ssh connection there (a remote
//! forward, which ends with that connection); the relay listens on the
//! front-end's inner network and passes every connection it accepts to
//! that port. Runtimes started behind the front-end are told to reach the
//! deployer at the relay; the deployer calls them back over the
//! connections they open (see `Runtime::trust_relayed`).
//!
//! The relay is the application binary (or the forwarder's `commandPath`)
//! started with [`RELAY_TO_ENV`] set. It writes the address it is reached
//! at into [`RELAY_ADDRESS_FILE_ENV`], and exits when its standard input
//! closes (the deployer's ssh session ended) or on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use actogrid_acquisition::chain::{RELAY_ADDRESS_FILE_ENV, RELAY_LISTEN_ENV, RELAY_TO_ENV};
use tokio::net::{TcpListener, TcpStream};

use super::agent::host_port;

/// Connections relayed at once; more are closed as they come.
const MAX_CONNECTIONS: usize = 4096;

/// How long reaching the forwarded port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether this process was started as a relay.
pub(crate) fn requested() -> bool {
    std::env::var_os(RELAY_TO_ENV).is_some()
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Relays until the standard input closes or the process is told to stop.
pub(crate) async fn serve() -> anyhow::Result<()> {
    let to = var(RELAY_TO_ENV).ok_or_else(|| anyhow::anyhow!("{RELAY_TO_ENV} is empty"))?;
    let listen = var(RELAY_LISTEN_ENV).unwrap_or_else(|| "0.0.0.0:0".to_owned());
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("relay: cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr()?;
    let host = if bound.ip().is_unspecified() {
        actogrid_technical_services::hostname()
    } else {
        bound.ip().to_string()
    };
    let address = host_port(&host, bound.port());
    if let Some(file) = var(RELAY_ADDRESS_FILE_ENV) {
        // Whole or not at all: the deployer reads it as soon as it exists.
        let partial = format!("{file}.partial");
        std::fs::write(&partial, format!("{address}\n"))
            .and_then(|()| std::fs::rename(&partial, &file))
            .map_err(|e| anyhow::anyhow!("relay: cannot write {file}: {e}"))?;
    }
    eprintln!("actogrid relay: {address} → {to}");
    let relaying = relay(listener, to);
    tokio::select! {
        () = relaying => Ok(()),
        () = crate::process::stdin_closed(true) => Ok(()),
        () = crate::process::terminated() => Ok(()),
    }
}

async fn relay(listener: TcpListener, to: String) {
    let to: Arc<str> = to.into();
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, mostly: wait for some to close.
                eprintln!("actogrid relay: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = room.clone().try_acquire_owned() else {
            eprintln!("actogrid relay: {MAX_CONNECTIONS} connections open: closed one from {peer}");
            continue;
        };
        let to = to.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut inbound = inbound;
            let mut outbound =
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*to)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return eprintln!("actogrid relay: {peer}: cannot reach {to}: {e}");
                    }
                    Err(_) => {
                        return eprintln!(
                            "actogrid relay: {peer}: cannot reach {to} within {CONNECT_TIMEOUT:?}"
                        );
                    }
                };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// What reaches the relay reaches its target and comes back, for
    /// several connections at once; a connection whose target is gone is
    /// closed, and the relay goes on.
    #[tokio::test]
    async fn connections_are_passed_to_the_target_both_ways() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = target.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = target.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let relaying = tokio::spawn(relay(listener, to));
        let clients = (0..8u8).map(|i| async move {
            let mut s = TcpStream::connect(at).await.unwrap();
            let sent = vec![i; 100_000];
            s.write_all(&sent).await.unwrap();
            let mut back = vec![0; sent.len()];
            s.read_exact(&mut back).await.unwrap();
            assert_eq!(back, sent);
        });
        futures::future::join_all(clients).await;

        // A relay to a port nobody listens on closes what it accepts.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nowhere = closed.local_addr().unwrap().to_string();
        drop(closed);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let dead_end = tokio::spawn(relay(listener, nowhere));
        for _ in 0..2 {
            let mut s = TcpStream::connect(at).await.unwrap();
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("closed, not left hanging");
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        }
        relaying.abort();
        dead_end.abort();
    }
}
