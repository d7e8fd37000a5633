//! `actogrid deploy`: activates every virtual node of a descriptor, prints
//! each node's URL as it registers, keeps everything up until Ctrl-C (or
//! SIGTERM), then tears it all down.

use std::path::PathBuf;
use std::process::ExitCode;

use actogrid::descriptor::LoadOptions;
use actogrid::{DeployOptions, Deployment, VnEvent};

/// Arguments of `actogrid deploy`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The deployment descriptor.
    file: PathBuf,
    #[command(flatten)]
    vars: super::Vars,
    /// Address this process listens on for its runtimes and for lookups.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: String,
    /// Address remote runtimes reach this process at.
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// Runtimes exit this long after losing this process (milliseconds).
    #[arg(long, value_name = "MS")]
    lease_ms: Option<u64>,
    /// No progress bars, only log lines.
    #[arg(long)]
    no_progress: bool,
    /// The application binary the runtimes run (default: this command),
    /// so that the descriptor may name its technical services and active
    /// types. It is asked about its services and settings first.
    #[arg(long, value_name = "BINARY")]
    program: Option<PathBuf>,
    /// Where the deployment's dashboard listens (`actogrid status`,
    /// `actogrid logs`, `/metrics`), or `off` (default: a port of
    /// loopback; its URL is printed at start).
    #[arg(long, value_name = "ADDR|off", value_parser = parse_dashboard)]
    dashboard: Option<Dashboard>,
}

#[derive(Clone, Debug)]
enum Dashboard {
    Off,
    At(std::net::SocketAddr),
}

fn parse_dashboard(text: &str) -> Result<Dashboard, String> {
    match text {
        "off" | "none" => Ok(Dashboard::Off),
        _ => text
            .parse()
            .map(Dashboard::At)
            .map_err(|_| format!("`{text}` is not an address (127.0.0.1:8080) nor `off`")),
    }
}

pub(crate) fn run(args: Args) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    let tokio = actogrid::__async_runtime_or_exit();
    match tokio.block_on(deploy(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::emit_err(&format!("error: {e:#}\n"));
            ExitCode::from(1)
        }
    }
}

async fn deploy(args: Args) -> anyhow::Result<()> {
    let program = args
        .program
        .as_deref()
        .map(super::program_binary)
        .transpose()?;
    let rt = actogrid::Runtime::bind(&args.listen, actogrid::Config::default())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    rt.make_global();
    let load = LoadOptions {
        program_variables: args.vars.to_map(),
        ..LoadOptions::default()
    };
    let mut options = DeployOptions {
        runtime: Some(rt.clone()),
        program,
        progress: !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..DeployOptions::default()
    };
    if let Some(ms) = args.lease_ms {
        options.lease = std::time::Duration::from_millis(ms.max(300));
    }
    if args.advertise.is_some() {
        options.advertise = args.advertise.clone();
    }
    match args.dashboard {
        Some(Dashboard::Off) => options.dashboard = None,
        Some(Dashboard::At(addr)) => options.dashboard = Some(addr),
        None => {}
    }
    let deployment = Deployment::load_with(&args.file, load, options).await?;
    if let Some(url) = deployment.dashboard_url() {
        super::emit_err(&format!("dashboard: {url}\n"));
    }
    for (name, vn) in deployment.virtual_nodes() {
        let mut events = vn.events();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(VnEvent::Joined(node)) => super::emit(&format!("{name}\t{}\n", node.url())),
                    Ok(VnEvent::Left { node, reason }) => {
                        super::emit_err(&format!("{name}: node {} left: {reason}\n", node.url()));
                    }
                    Ok(VnEvent::Failed { error, .. }) => {
                        super::emit_err(&format!("{name}: {error}\n"));
                    }
                    Ok(VnEvent::Recovered {
                        object,
                        node,
                        cause,
                        replayed,
                        took,
                    }) => super::emit_err(&format!(
                        "{name}: object {object:#x} recovered on {} in {} ms ({replayed} request(s) replayed) after its runtime failed: {cause}\n",
                        node.url(),
                        took.as_millis()
                    )),
                    Ok(VnEvent::RecoveryFailed { object, error }) => super::emit_err(&format!(
                        "{name}: object {object:#x} could not be recovered: {error}\n"
                    )),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    deployment.activate().await?;
    tracing::info!(
        "deployed from {}; Ctrl-C tears everything down",
        args.file.display()
    );
    tokio::select! {
        () = actogrid::__terminated() => tracing::info!("tearing down"),
        () = deployment.ended() => tracing::info!("the deployment was ended from its dashboard"),
    }
    deployment.kill().await;
    rt.shutdown();
    Ok(())
}
