//! A stand-alone FT server (`actogrid ft-server`): the store, the location
//! service, its own failure detector and the recovery of failed runtimes'
//! objects, in a process of its own, for deployments whose fault-tolerance
//! service names it (argument `server`).
//!
//! It belongs to the deployments' trust domain: it is given credentials
//! (`ACTOGRID_CREDENTIALS`), or the site's authority that the deployments
//! use too (`ACTOGRID_TLS_AUTHORITY` and `ACTOGRID_TLS_AUTHORITY_KEY`), or
//! runs without TLS on a closed network when told so
//! (`ACTOGRID_INSECURE_PLAINTEXT=1`). A server with an authority of its
//! own would be refused by every runtime, so it does not start.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use actogrid_fault_tolerance::server::FtServer;
use actogrid_fault_tolerance::service::DEFAULT_TTC;
use actogrid_fault_tolerance::watch::{WatchConfig, silence_limit};
use actogrid_runtime::{Identity, Runtime};

/// The line the server prints on stdout once it serves.
pub const FT_SERVER_ANNOUNCE: &str = "actogrid FT server listening on ";

/// How a stand-alone FT server runs.
#[derive(Debug, Clone)]
pub struct FtServerOptions {
    /// Address to listen on (`host:port`).
    pub listen: String,
    /// Address to advertise, if not the bound one.
    pub advertise: Option<String>,
    /// The name the server is reached under (`actogrid://host:port/name`).
    pub name: String,
    /// Its store; `None`: a fresh one in the state directory, removed
    /// when the server stops.
    pub store: Option<PathBuf>,
    /// How often protected nodes beat.
    pub heartbeat: Duration,
    /// How long a dead runtime's objects wait for a node to recover on.
    pub recovery_wait: Duration,
    /// Exit when standard input closes.
    pub exit_on_stdin_eof: bool,
}

/// The identity of a stand-alone server (see the module documentation).
async fn identity() -> anyhow::Result<Option<Identity>> {
    use actogrid_runtime::tls;
    if std::env::var_os(crate::CREDENTIALS_ENV).is_some() || tls::plaintext_asked() {
        return crate::node_identity().await.map(Some);
    }
    if std::env::var_os(tls::AUTHORITY_ENV).is_some() {
        // The runtime issues itself a certificate of the site's authority.
        return Ok(None);
    }
    anyhow::bail!(
        "an FT server must belong to the deployments' trust domain: give it the site's \
         authority ({} and {}, as the deployments have), or credentials ({}=stdin or \
         file:<path>); on a closed network only, {}=1 runs it without TLS",
        tls::AUTHORITY_ENV,
        tls::AUTHORITY_KEY_ENV,
        crate::CREDENTIALS_ENV,
        tls::PLAINTEXT_ENV
    )
}

/// Serves an FT server until SIGINT/SIGTERM (or stdin closes, when
/// asked). Prints `actogrid FT server listening on
/// actogrid://host:port/name` on stdout once it accepts connections.
pub async fn serve_ft_server(options: FtServerOptions) -> anyhow::Result<()> {
    if options.heartbeat < Duration::from_millis(10) {
        anyhow::bail!(
            "--heartbeat {} ms: at least 10 ms",
            options.heartbeat.as_millis()
        );
    }
    let identity = identity().await?;
    let config = crate::settings()?;
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.listen))?;
    let bound = listener.local_addr()?;
    let advertise = match options.advertise.as_deref() {
        Some(a)
            if a.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
        {
            a.to_owned()
        }
        Some(host) => format!("{host}:{}", bound.port()),
        None if bound.ip().is_unspecified() => anyhow::bail!(
            "--listen {}: listening on every interface, the server cannot tell runtimes where to reach it; give --advertise HOST[:PORT]",
            options.listen
        ),
        None => bound.to_string(),
    };
    let (store, remove) = match &options.store {
        Some(path) => (path.clone(), false),
        None => (
            crate::state_dir().join(format!("actogrid-ft-server-{}.redb", std::process::id())),
            true,
        ),
    };
    if let Some(parent) = store.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    let server = FtServer::open(&store, DEFAULT_TTC)
        .map_err(|e| anyhow::anyhow!("cannot open the store {}: {e}", store.display()))?;
    let mut builder = Runtime::builder().config(config).address(advertise);
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    let rt = builder.build();
    let node = rt.local_node("ft-server");
    let stop = async {
        tokio::select! {
            () = crate::process::stdin_closed(options.exit_on_stdin_eof) => {}
            () = crate::process::terminated() => {}
        }
    };
    let serving = rt.serve(listener, stop);
    tokio::pin!(serving);
    // Registering goes through the runtime's own service loop.
    let served = tokio::select! {
        r = server.serve(&node, &options.name) => r,
        r = &mut serving => {
            r?;
            anyhow::bail!("the FT server stopped before it served");
        }
    };
    if let Err(e) = served {
        anyhow::bail!("cannot serve the FT server: {e}");
    }
    server.watch(
        &rt,
        WatchConfig {
            heartbeat: options.heartbeat,
            recovery_wait: options.recovery_wait,
        },
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{FT_SERVER_ANNOUNCE}{}", node.url_of(&options.name))?;
        out.flush()?;
    }
    tracing::info!(
        "FT server {}: store {}, heartbeat {} ms (a runtime silent for {} ms is dead), recovery wait {} s",
        node.url_of(&options.name),
        store.display(),
        options.heartbeat.as_millis(),
        silence_limit(options.heartbeat).as_millis(),
        options.recovery_wait.as_secs()
    );
    let result = serving.await;
    rt.shutdown();
    server.withdraw(&node, &options.name);
    drop(server);
    if remove {
        if let Err(e) = std::fs::remove_file(&store) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove the FT store {}: {e}", store.display());
            }
        }
    }
    Ok(result?)
}
