//! What the deployment's dashboard and a peer's share: a small HTTP
//! server with bounded connections, a token every request must carry, a
//! page with a strict content policy, and server-sent event streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A dashboard's server, stopped when dropped.
pub(crate) struct Dashboard {
    url: String,
    task: tokio::task::JoinHandle<()>,
    /// Where its URL is left for `actogrid status` (see
    /// [`Dashboard::record`]).
    record: Option<std::path::PathBuf>,
}

/// A dashboard running on this machine, for this user, as it left its
/// URL (see [`running_dashboards`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningDashboard {
    /// `deployment` or `peer`.
    pub kind: String,
    /// The process serving it.
    pub pid: u32,
    /// Its URL, token included.
    pub url: String,
}

/// Where dashboards leave their URLs: `dashboards/` in this user's state
/// directory ([`crate::state_dir`]).
fn records_dir() -> std::path::PathBuf {
    crate::state_dir().join("dashboards")
}

/// The dashboards of live processes of this user on this machine, oldest
/// process first: what `actogrid status` and `actogrid logs` use when
/// given no URL. The records of processes that are gone are removed.
pub fn running_dashboards() -> Vec<RunningDashboard> {
    let Ok(entries) = std::fs::read_dir(records_dir()) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // `KIND-PID-PORT.url`
        let Some(stem) = name.strip_suffix(".url") else {
            continue;
        };
        let mut parts = stem.splitn(3, '-');
        let (Some(kind), Some(pid)) = (parts.next(), parts.next().and_then(|p| p.parse().ok()))
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Ok(url) = std::fs::read_to_string(&path) else {
            continue;
        };
        found.push(RunningDashboard {
            kind: kind.to_owned(),
            pid,
            url: url.trim().to_owned(),
        });
    }
    found.sort_by_key(|d| d.pid);
    found
}

impl Dashboard {
    /// Listens on `addr` and serves `app` to the requests that carry the
    /// dashboard's token (a fresh one, which the URL carries); the others
    /// are refused, naming `whose` token they lack.
    pub(crate) async fn start(
        addr: SocketAddr,
        whose: &'static str,
        app: axum::Router,
    ) -> std::io::Result<Dashboard> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let url = format!("http://{bound}/?token={token}");
        let task = tokio::spawn(serve(listener, guarded(app, token, whose)));
        Ok(Dashboard {
            url,
            task,
            record: None,
        })
    }

    /// Leaves its URL where `actogrid status` and `actogrid logs` find it
    /// when given none: a file only this user reads, in a directory only
    /// they enter, removed when the dashboard stops. Best effort: a
    /// dashboard whose URL cannot be left there still serves.
    pub(crate) fn record(mut self, kind: &str) -> Dashboard {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let dir = records_dir();
        // Those of processes gone (killed) go first.
        let _ = running_dashboards();
        let port = self
            .url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .unwrap_or("0")
            .to_owned();
        let path = dir.join(format!("{kind}-{}-{port}.url", std::process::id()));
        let written = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)
            })
            .and_then(|mut f| f.write_all(self.url.as_bytes()));
        match written {
            Ok(()) => self.record = Some(path),
            Err(e) => tracing::debug!("the dashboard's URL is not left in {}: {e}", dir.display()),
        }
        self
    }

    /// Where it is, token included.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(path) = self.record.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL carries the token: not for logs.
        f.write_str("Dashboard")
    }
}

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections while fewer than [`MAX_CONNECTIONS`] are open, each
/// given [`HEAD_TIMEOUT`] to say what it wants: whoever can reach the port
/// cannot take all of this process's file descriptors or hold them with
/// requests that never end.
async fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = room.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("dashboard: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = connection.await;
        });
    }
}

/// Constant-time comparison: the token cannot be guessed a byte at a time.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[derive(serde::Deserialize)]
struct Auth {
    token: Option<String>,
}

/// `app` behind its token: every request must carry it, as `?token=…` or
/// as `Authorization: Bearer …`.
fn guarded(app: axum::Router, token: String, whose: &'static str) -> axum::Router {
    app.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let query = axum::extract::Query::<Auth>::try_from_uri(request.uri())
                    .ok()
                    .and_then(|q| q.0.token);
                if authorised(&token, query.as_deref(), request.headers()) {
                    next.run(request).await
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        format!(
                            "{whose}'s token is needed: use the dashboard URL printed at start (…?token=…)\n"
                        ),
                    )
                        .into_response()
                }
            }
        },
    ))
}

/// Whether the request carries `token`, as `?token=…` (`query`) or as
/// `Authorization: Bearer …`.
fn authorised(token: &str, query: Option<&str>, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    query
        .into_iter()
        .chain(bearer)
        .any(|given| same(given.trim(), token))
}

/// Escapes text for HTML.
pub(crate) fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A page of the dashboard: never cached, running only its own script
/// and talking only to this server.
pub(crate) fn page(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
            ),
        ],
        text,
    )
        .into_response()
}

/// A server-sent event stream fed by a task.
pub(crate) fn event_stream(
    stream: impl futures::Stream<Item = Result<String, std::convert::Infallible>> + Send + 'static,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// A stream fed by a task: `f` gets the sending end of a small channel.
pub(crate) fn async_stream<F, Fut>(
    f: F,
) -> impl futures::Stream<Item = Result<String, std::convert::Infallible>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(f(tx));
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}
