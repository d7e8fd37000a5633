//! Accepting connections from other runtimes, within limits.
//!
//! Whoever can reach a runtime's port can open connections to it, so
//! accepting is bounded on every side:
//!
//! * at most `max_connections` at once (and never more than the process's
//!   file-descriptor limit allows); when full, the oldest connection that
//!   has not yet opened its stream makes room, and established ones are
//!   never dropped for a newcomer;
//! * a connection must open its stream within `handshake_timeout`, or it
//!   is closed: an idle or half-open connection holds nothing for long;
//! * when the process runs out of file descriptors, accepting pauses
//!   instead of spinning on the error.
//!
//! What is accepted reaches the HTTP/2 server as a [`Guarded`] stream,
//! which the connection's tracker can close from outside.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use crate::connection::{Batched, Conn};
use crate::runtime::Io;
use crate::tls::Principal;

/// File descriptors kept for what is not an accepted connection (outgoing
/// connections, files, the listener itself).
const FD_RESERVE: usize = 64;

/// How long accepting pauses when the process has no file descriptor left.
const FD_BACKOFF: Duration = Duration::from_millis(100);

/// What the server knows of an accepted connection; its handlers read it
/// from their request's extensions.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    /// The other end, as named in messages (`client 10.0.0.5:41234`).
    pub(crate) peer: String,
    /// Who it is, as its certificate says.
    pub(crate) principal: Principal,
    /// The other end's IP address, when it came over TCP.
    pub(crate) remote: Option<std::net::IpAddr>,
    pub(crate) state: Arc<ConnState>,
}

impl ConnInfo {
    /// Who the other end is now: what its certificate says, or, for a
    /// connection that came without one, the runtime it enrolled as on it.
    pub(crate) fn principal(&self) -> Principal {
        match (&self.principal, self.state.enrolled.get()) {
            (Principal::Anonymous, Some(enrolled)) => enrolled.clone(),
            (principal, _) => principal.clone(),
        }
    }

    /// Records that the other end, which came without a certificate,
    /// enrolled as `principal` on this connection with a valid ticket: its
    /// streams are then those of that runtime (an enrolling runtime keeps
    /// the connection rather than making another).
    pub(crate) fn enrolled_as(&self, principal: Principal) {
        if self.principal == Principal::Anonymous {
            let _ = self.state.enrolled.set(principal);
        }
    }
}

/// The shared state of one accepted connection.
pub(crate) struct ConnState {
    id: u64,
    /// Set once the other end opened its stream.
    established: AtomicBool,
    killed: AtomicBool,
    /// The reader to wake when the connection is killed.
    reader: AtomicWaker,
    /// The runtime the other end enrolled as on this connection.
    enrolled: std::sync::OnceLock<Principal>,
    /// The calls to the other end, waiting for the stream that takes them.
    back: std::sync::Mutex<Option<(Arc<Conn>, Batched)>>,
}

impl ConnState {
    /// The connection opened its stream: it is no longer subject to the
    /// handshake timeout nor shed for newcomers.
    pub(crate) fn establish(&self) {
        self.established.store(true, Ordering::Release);
    }

    /// `back` carries this runtime's calls to the other end once it opens
    /// its second stream.
    pub(crate) fn expect_return(&self, back: Arc<Conn>, batched: Batched) {
        *self.back.lock().unwrap_or_else(|p| p.into_inner()) = Some((back, batched));
    }

    /// The calls to the other end, for the stream it opened to take them.
    pub(crate) fn take_return(&self) -> Option<(Arc<Conn>, Batched)> {
        self.back.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// The connections a runtime has accepted.
pub(crate) struct Tracker {
    limit: usize,
    open: AtomicUsize,
    next: AtomicU64,
    /// Connections that have not opened their stream yet, oldest first.
    pending: Mutex<VecDeque<Weak<ConnState>>>,
    /// Every connection admitted (some may have closed since).
    all: Mutex<Vec<Weak<ConnState>>>,
}

impl Tracker {
    pub(crate) fn new(max_connections: usize) -> Tracker {
        let limit = match fd_limit() {
            Some(fds) => max_connections.min(fds.saturating_sub(FD_RESERVE).max(1)),
            None => max_connections,
        };
        Tracker {
            limit: limit.max(1),
            open: AtomicUsize::new(0),
            next: AtomicU64::new(1),
            pending: Mutex::new(VecDeque::new()),
            all: Mutex::new(Vec::new()),
        }
    }

    /// Closes every connection admitted: the runtime shuts down.
    pub(crate) fn kill_all(&self) {
        let all = std::mem::take(&mut *self.all.lock().unwrap_or_else(|p| p.into_inner()));
        for state in all.iter().filter_map(Weak::upgrade) {
            state.kill();
        }
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<ConnState>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the oldest connection that has not opened its stream yet;
    /// `false` if there is none.
    fn shed_one(&self) -> bool {
        let mut pending = self.lock();
        while let Some(w) = pending.pop_front() {
            if let Some(state) = w.upgrade()
                && !state.established.load(Ordering::Acquire)
                && !state.killed.load(Ordering::Acquire)
            {
                state.kill();
                return true;
            }
        }
        false
    }

    /// Admits a connection if there is room (making room among the
    /// pending ones if needed); `None` when every slot holds an
    /// established connection.
    fn admit(self: &Arc<Self>, io: Box<dyn Io>) -> Option<Guarded> {
        if self.open.load(Ordering::Acquire) >= self.limit && !self.shed_one() {
            return None;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        let state = Arc::new(ConnState {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            established: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            enrolled: std::sync::OnceLock::new(),
            back: std::sync::Mutex::new(None),
        });
        let mut pending = self.lock();
        pending.retain(|w| {
            w.upgrade()
                .is_some_and(|s| !s.established.load(Ordering::Relaxed))
        });
        pending.push_back(Arc::downgrade(&state));
        drop(pending);
        {
            let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
            // Pruned as it doubles, so that it stays within twice the open
            // connections.
            if all.len() >= 64 && all.len().is_power_of_two() {
                all.retain(|w| w.strong_count() > 0);
            }
            all.push(Arc::downgrade(&state));
        }
        Some(Guarded {
            io,
            state,
            tracker: self.clone(),
        })
    }
}

/// The soft limit on open file descriptors of this process.
fn fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// An accepted connection's byte stream: closed from outside when its
/// tracker kills it, counted until dropped.
pub(crate) struct Guarded {
    io: Box<dyn Io>,
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.tracker.open.fetch_sub(1, Ordering::AcqRel);
    }
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed by the runtime (handshake timeout, or room made for another connection)",
    )
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.state.established.load(Ordering::Relaxed) {
            // Only a connection that can still be killed needs waking.
            self.state.reader.register(cx.waker());
            if self.state.killed.load(Ordering::Acquire) {
                return Poll::Ready(Err(killed()));
            }
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.state.killed.load(Ordering::Relaxed) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.state.killed.load(Ordering::Relaxed) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A connection handed to the HTTP/2 server, with what is known of it.
pub(crate) struct Accepted {
    /// The connection's bytes: `Guarded`, or TLS over it.
    io: Box<dyn Io>,
    info: ConnInfo,
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// Where admitted connections go: the server's incoming stream.
pub(crate) type Sink = mpsc::Sender<Accepted>;

/// Admits `io` from `peer`: counted, its TLS handshake made (when `tls`),
/// closed if it has not opened its stream within `handshake`, and handed
/// to the server through `sink`.
pub(crate) fn admit(
    tracker: &Arc<Tracker>,
    sink: &Sink,
    io: Box<dyn Io>,
    peer: String,
    remote: Option<std::net::IpAddr>,
    handshake: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let Some(guarded) = tracker.admit(io) else {
        warn_full(tracker);
        return;
    };
    let state = guarded.state.clone();
    let watched = Arc::downgrade(&state);
    let sink = sink.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + handshake;
        let (io, principal): (Box<dyn Io>, Principal) = match tls {
            None => (Box::new(guarded), Principal::Plaintext),
            Some(config) => {
                let accepting = tokio_rustls::TlsAcceptor::from(config).accept(guarded);
                match tokio::time::timeout_at(deadline, accepting).await {
                    Ok(Ok(tls)) => {
                        let principal =
                            crate::tls::principal_of_chain(tls.get_ref().1.peer_certificates());
                        (Box::new(tls), principal)
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        // Closed before saying anything: a port probe.
                        tracing::debug!("{peer} closed its connection before a TLS handshake");
                        return;
                    }
                    Ok(Err(e)) => {
                        refused_handshake(&peer, &e.to_string());
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(
                            "closed the connection from {peer}: no TLS handshake within {handshake:?}"
                        );
                        return;
                    }
                }
            }
        };
        let info = ConnInfo {
            peer: peer.clone(),
            principal,
            remote,
            state,
        };
        if sink.send(Accepted { io, info }).await.is_err() {
            return; // the server stopped
        }
        tokio::time::sleep_until(deadline).await;
        if let Some(state) = watched.upgrade()
            && !state.established.load(Ordering::Acquire)
        {
            tracing::debug!(
                connection = state.id,
                "closed the connection from {peer}: no stream opened within {handshake:?}"
            );
            state.kill();
        }
    });
}

/// Logs a failed handshake: who tried, and why (at most one line a
/// second, so a flood of strangers cannot flood the log).
fn refused_handshake(peer: &str, why: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static DROPPED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let before = LAST.load(Ordering::Relaxed);
    if now > before
        && LAST
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        let more = if dropped > 0 {
            format!(" ({dropped} more refused since the last such line)")
        } else {
            String::new()
        };
        tracing::warn!("refused a connection from {peer}: the TLS handshake failed: {why}{more}");
    } else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

fn warn_full(tracker: &Tracker) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if should_log(&LAST) {
        tracing::warn!(
            "refused a connection: {} connections are open and established (max_connections, \
             capped by the file-descriptor limit)",
            tracker.limit
        );
    }
}

/// At most one such warning every ten seconds.
fn should_log(last: &AtomicU64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let before = last.load(Ordering::Relaxed);
    now >= before + 10
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Accepts TCP connections until `shutdown`, admitting each.
pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    tracker: Arc<Tracker>,
    sink: Sink,
    handshake: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, addr)) => {
                let _ = tcp.set_nodelay(true);
                admit(
                    &tracker,
                    &sink,
                    Box::new(tcp),
                    describe(addr),
                    Some(addr.ip()),
                    handshake,
                    tls.clone(),
                );
            }
            Err(e) if out_of_descriptors(&e) => {
                static LAST: AtomicU64 = AtomicU64::new(0);
                if should_log(&LAST) {
                    tracing::warn!(
                        "cannot accept connections: {e} ({} open); pausing",
                        tracker.open()
                    );
                }
                // Make room if strangers hold descriptors, and do not spin.
                tracker.shed_one();
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(FD_BACKOFF) => {}
                }
            }
            Err(e) if transient(&e) => {}
            Err(e) => {
                tracing::warn!("accepting a connection failed: {e}");
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(FD_BACKOFF) => {}
                }
            }
        }
    }
}

pub(crate) fn describe(addr: SocketAddr) -> String {
    format!("client {addr}")
}

fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}
