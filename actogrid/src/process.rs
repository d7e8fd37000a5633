//! The process side of an application: serving as a node runtime when the
//! process was launched as one, and starting such processes.
//!
//! Every runtime runs the same binary as the application, so every active
//! type exists everywhere. A process launched as a node has
//! `ACTOGRID_NODE_LISTEN` in its environment: `#[actogrid::main]` sees it
//! and serves as a node instead of running `main`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use actogrid_runtime::{Config, ConfigError, Node, NodeUrl, Runtime};

/// Set on a process launched as a node runtime: the address to listen on.
pub const NODE_LISTEN_ENV: &str = "ACTOGRID_NODE_LISTEN";
/// The name of the node a node runtime hosts.
pub const NODE_NAME_ENV: &str = "ACTOGRID_NODE_NAME";

/// The line a node runtime prints on stdout once it serves.
const ANNOUNCE: &str = "actogrid node listening on ";

/// How a node runtime process behaves.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Address to listen on (`host:port`, port 0 for any).
    pub listen: String,
    /// Address to advertise, if not the bound one (behind NAT, on 0.0.0.0).
    pub advertise: Option<String>,
    /// Name of the node it hosts.
    pub name: String,
    /// Exit when standard input closes: the launching process died or
    /// let go, so no orphan is left behind.
    pub exit_on_stdin_eof: bool,
}

/// The settings of this process's runtimes: the built-in defaults, then
/// those given to `#[actogrid::main(...)]`, then the environment
/// (`ACTOGRID_HEARTBEAT_TIMEOUT=30s`), later ones winning. The runtime
/// that `#[actogrid::main]` starts and the node runtimes this process
/// serves use them; start a runtime or a deployment of your own from them
/// to keep the same settings.
///
/// In a process without `#[actogrid::main]`, and in a runtime started by
/// a deployment (whose settings come from the environment it is given):
/// the defaults, then the environment. Fails when a variable of the
/// environment does not parse (`#[actogrid::main]` stops the process at
/// start-up instead).
pub fn settings() -> Result<Config, ConfigError> {
    match PROCESS_SETTINGS.get() {
        Some(config) => Ok(config.clone()),
        None => Config::from_env(),
    }
}

/// What `#[actogrid::main]` resolved, once.
static PROCESS_SETTINGS: OnceLock<Config> = OnceLock::new();

/// The defaults, then the settings given to `#[actogrid::main]` (name,
/// value, where the value is written), then `env`; checked together. The
/// error says which attribute or variable is wrong.
fn main_settings(
    given: &[(&str, &str, &str)],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, String> {
    let mut config = Config::default();
    for (name, value, at) in given {
        config.set_value(name, value).map_err(|e| {
            format!(
                "#[actogrid::main({name} = {value:?})] at {at}: {}",
                e.message
            )
        })?;
    }
    // Settings that only make sense together are checked once all are in.
    config.apply_vars(env).map_err(|e| {
        if e.name.starts_with(actogrid_runtime::ENV_PREFIX) {
            format!("the environment variable {}: {}", e.name, e.message)
        } else {
            e.message
        }
    })?;
    Ok(config)
}

/// Serves as a node runtime until SIGINT/SIGTERM (or stdin closes, when
/// asked), with this process's [`settings`]. Prints `actogrid node
/// listening on actogrid://host:port/name` on stdout once it accepts
/// connections.
pub async fn serve_node(options: NodeOptions) -> anyhow::Result<()> {
    let config = settings()?;
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.listen))?;
    let bound = listener.local_addr()?;
    let advertise = options
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());
    let identity = crate::credentials::node_identity().await?;
    let rt = Runtime::builder()
        .config(config)
        .identity(identity)
        .address(advertise)
        .build();
    rt.make_global();
    let node = rt.local_node(&options.name);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ANNOUNCE}{}", node.url())?;
        out.flush()?;
    }
    let stdin_closed = stdin_closed(options.exit_on_stdin_eof);
    let stop = async {
        tokio::select! {
            () = stdin_closed => {}
            () = terminated() => {}
        }
    };
    rt.serve(listener, stop).await?;
    rt.shutdown();
    Ok(())
}

/// Completes when standard input reaches its end, if `watch`; never
/// otherwise.
pub(crate) async fn stdin_closed(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            sink.clear();
        }
    })
    .await;
}

/// Completes on SIGINT or SIGTERM.
pub async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A node runtime process of this binary on this machine, stopped when
/// dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    node: Node,
}

impl NodeProcess {
    /// The node it hosts.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts this binary as a node runtime on this machine, hosting the node
/// `name`, and waits until it serves. The process exits when dropped, and
/// on its own if this process dies (its stdin closes).
pub async fn spawn_node(runtime: &Runtime, name: &str) -> anyhow::Result<NodeProcess> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.env(NODE_LISTEN_ENV, "127.0.0.1:0")
        .env(NODE_NAME_ENV, name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    spawn_with(runtime, cmd).await
}

/// Starts a node runtime with `cmd` (which must print the announcement
/// line) and waits for its URL. The node gets credentials of `runtime`'s
/// domain on its standard input (`ACTOGRID_CREDENTIALS=stdin`), which stays
/// open: it exits when this process lets go, if it watches it.
pub async fn spawn_with(runtime: &Runtime, mut cmd: Command) -> anyhow::Result<NodeProcess> {
    let mut child = cmd
        .env(crate::credentials::CREDENTIALS_ENV, "stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    if let Err(e) = crate::credentials::hand_over(runtime, &mut child) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("the node process has no stdout"))?;
    let announced = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line?;
            if let Some(url) = line.strip_prefix(ANNOUNCE) {
                // Keep draining so the child never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return Ok(url.to_owned());
            }
        }
        Err(anyhow::anyhow!("the node process exited before it served"))
    });
    let url = match tokio::time::timeout(Duration::from_secs(30), announced).await {
        Ok(joined) => joined??,
        Err(_) => {
            let _ = child.kill();
            anyhow::bail!("the node process did not announce itself within 30 s");
        }
    };
    let url: NodeUrl = url.parse()?;
    Ok(NodeProcess {
        node: runtime.node(&url),
        child,
    })
}

/// What `#[actogrid::main(settings)]` runs: serve as a deployment's
/// runtime if launched as one; otherwise resolve the process's
/// [`settings`] (a value that does not parse stops the process, exit code
/// 2, naming the attribute), then serve as a node if launched as one, or
/// run the application's `main` on a runtime of its own.
#[doc(hidden)]
pub fn run_main<F, Fut, R>(given: &[(&str, &str, &str)], main: F) -> R
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = R>,
{
    // Asked by a deployer what its technical services and settings are
    // (`actogrid deploy --program`): answers and exits.
    crate::deploy::program::answer_if_asked(|| match main_settings(given, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("actogrid: runtime settings: {e}");
            std::process::exit(2);
        }
    });
    let tokio = async_runtime_or_exit();
    // A deployed runtime takes its settings from the environment its
    // deployment gives it, whatever this binary's attribute says.
    if crate::deploy::agent::launched_by_deployer() {
        std::process::exit(serve_deployed_on(&tokio));
    }
    let config = match main_settings(given, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("actogrid: runtime settings: {e}");
            std::process::exit(2);
        }
    };
    let _ = PROCESS_SETTINGS.set(config.clone());
    if let Ok(listen) = std::env::var(NODE_LISTEN_ENV) {
        let options = NodeOptions {
            listen,
            advertise: None,
            name: std::env::var(NODE_NAME_ENV).unwrap_or_else(|_| "node".to_owned()),
            exit_on_stdin_eof: true,
        };
        let code = match tokio.block_on(serve_node(options)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("actogrid node: {e:#}");
                1
            }
        };
        std::process::exit(code);
    }
    tokio.block_on(async {
        let rt = match Runtime::bind("127.0.0.1:0", config).await {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("actogrid: cannot start this process's runtime: {e}");
                std::process::exit(70);
            }
        };
        rt.make_global();
        // Listening before `main` starts: no signal is missed.
        let mut signals = Signals::new();
        let main = main();
        tokio::pin!(main);
        let result = tokio::select! {
            result = &mut main => result,
            signal = signals.next() => {
                std::process::exit(tear_down_on(signal, &mut signals).await)
            }
        };
        rt.shutdown();
        result
    })
}

/// SIGINT and SIGTERM, caught from `main`'s start on (when the system
/// refuses a handler, that signal keeps its default action).
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

/// A signal that ends the application, and its exit status.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Interrupt,
    Terminate,
}

impl Ending {
    /// The shell's convention: 128 + the signal number.
    fn status(self) -> i32 {
        match self {
            Ending::Interrupt => 130,
            Ending::Terminate => 143,
        }
    }
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn next(&mut self) -> Ending {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            let Some(s) = s else {
                return std::future::pending().await;
            };
            if s.recv().await.is_none() {
                std::future::pending().await
            }
        }
        tokio::select! {
            () = recv(&mut self.interrupt) => Ending::Interrupt,
            () = recv(&mut self.terminate) => Ending::Terminate,
        }
    }
}

/// Ctrl-C or SIGTERM while `main` runs: tears down every live deployment
/// as `actogrid deploy` does (batch jobs cancelled, runtimes stopped, job
/// files and ssh control directories removed); a second signal ends the
/// process at once. Returns the exit status (130 or 143).
async fn tear_down_on(first: Ending, signals: &mut Signals) -> i32 {
    let live = crate::deploy::live::count();
    if live == 0 {
        return first.status();
    }
    let what = match first {
        Ending::Interrupt => "interrupted",
        Ending::Terminate => "terminated",
    };
    eprintln!(
        "actogrid: {what}: tearing down {live} deployment{} (again to exit at once)",
        if live == 1 { "" } else { "s" }
    );
    tokio::select! {
        () = crate::deploy::live::end_all() => first.status(),
        again = signals.next() => again.status(),
    }
}

/// If this process was started by a deployer (`ACTOGRID_DEPLOYER` is set),
/// serves as that deployment's runtime and exits the process when the
/// deployment lets go; if it was started to describe its technical
/// services (`actogrid deploy --program`), answers and exits; otherwise
/// returns at once. `#[actogrid::main]` does the same; a `main` written
/// by hand should call it first.
pub fn serve_if_deployed() {
    crate::deploy::program::answer_if_asked(|| match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("actogrid: runtime settings: {e}");
            std::process::exit(2);
        }
    });
    if !crate::deploy::agent::launched_by_deployer() {
        return;
    }
    let tokio = async_runtime_or_exit();
    std::process::exit(serve_deployed_on(&tokio));
}

fn serve_deployed_on(tokio: &tokio::runtime::Runtime) -> i32 {
    if crate::deploy::relay::requested() {
        return match tokio.block_on(crate::deploy::relay::serve()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("actogrid relay: {e:#}");
                1
            }
        };
    }
    // What this runtime prints goes to its deployer too (first: the log
    // format below sees a pipe, not a terminal).
    crate::deploy::capture::start();
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, reload};
    // The filter can be changed later by the `actogrid.Logging` service.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let (filter, handle) = reload::Layer::new(filter);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .try_init()
        .is_ok();
    if installed {
        actogrid_technical_services::set_log_reloader(move |text| {
            let new = EnvFilter::try_new(text).map_err(|e| format!("`{text}`: {e}"))?;
            handle.reload(new).map_err(|e| e.to_string())
        });
    }
    let served = tokio.block_on(crate::deploy::agent::serve_deployed());
    // Its last lines go on to the original streams before it exits.
    crate::deploy::capture::finish();
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("actogrid runtime: {e:#}");
            1
        }
    }
}

/// A multi-threaded tokio runtime with every driver; when the system
/// refuses one, says so and exits (code 70, `EX_SOFTWARE`).
#[doc(hidden)]
pub fn async_runtime_or_exit() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("actogrid: cannot start the async runtime: {e}");
            std::process::exit(70);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_environment_overrides_the_attribute_which_overrides_the_defaults() {
        let given = [
            ("heartbeat_interval", "5s", "src/main.rs:1:30"),
            ("heartbeat_timeout", "30s", "src/main.rs:1:60"),
            ("call_timeout", "2m", "src/main.rs:1:90"),
        ];
        let config = main_settings(
            &given,
            env(&[("ACTOGRID_CALL_TIMEOUT", "none"), ("PATH", "/bin")]),
        )
        .unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(config.call_timeout, None, "the environment wins");
        assert_eq!(config.reorder_timeout, Config::default().reorder_timeout);
    }

    #[test]
    fn a_value_that_does_not_parse_names_the_attribute_or_the_variable() {
        let e = main_settings(
            &[("heartbeat_timeout", "soon", "src/main.rs:3:37")],
            env(&[]),
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "#[actogrid::main(heartbeat_timeout = \"soon\")] at src/main.rs:3:37: `soon` is \
                 not a duration"
            ),
            "{e}"
        );
        let e = main_settings(&[], env(&[("ACTOGRID_MAX_OBJECTS", "lots")])).unwrap_err();
        assert_eq!(
            e,
            "the environment variable ACTOGRID_MAX_OBJECTS: `lots` is not a whole number"
        );
        let e = main_settings(
            &[("heartbeat_interval", "5s", "src/main.rs:3:37")],
            env(&[]),
        )
        .unwrap_err();
        assert!(
            e.contains("must be longer than the heartbeat interval"),
            "{e}"
        );
    }
}
