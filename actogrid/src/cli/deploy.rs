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
pub(super) enum Dashboard {
    Off,
    At(std::net::SocketAddr),
}

pub(super) fn parse_dashboard(text: &str) -> Result<Dashboard, String> {
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
        let mpi_only = only_mpi_runs(deployment.descriptor());
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
                    // A failed run is reported as a failure too; with MPI
                    // runs only, they are reported once they all ended.
                    Ok(VnEvent::MpiEnded(outcome)) if !mpi_only => {
                        print_mpi_run(&name, &outcome);
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    deployment.activate().await?;
    if only_mpi_runs(deployment.descriptor()) {
        // Nothing stays up: report the runs, tear down, and say whether
        // they all succeeded.
        let runs = tokio::select! {
            runs = deployment.wait_mpi_runs() => Some(runs),
            () = actogrid::__terminated() => None,
        };
        deployment.kill().await;
        rt.shutdown();
        let Some(runs) = runs else {
            anyhow::bail!("interrupted before the MPI runs ended");
        };
        for outcome in &runs {
            print_mpi_run(&vn_of(deployment.descriptor(), outcome), outcome);
        }
        let failed = runs.iter().filter(|r| !r.success()).count();
        if failed > 0 {
            anyhow::bail!("{failed} of {} MPI run(s) failed", runs.len());
        }
        if runs.is_empty() {
            anyhow::bail!("no MPI run ended (see the errors above)");
        }
        return Ok(());
    }
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

/// `true` when every mapped virtual node is an MPI run (no node, no
/// lookup): `deploy` then ends once the runs have.
fn only_mpi_runs(d: &actogrid::descriptor::Descriptor) -> bool {
    use actogrid::descriptor::model::{ProcessKind, RuntimeSource};
    let is_mpi = |jvm: &str| {
        d.jvm(jvm).is_some_and(|j| match &j.source {
            RuntimeSource::Creation(p) => d.process(p).is_some_and(|p| match &p.kind {
                ProcessKind::DependentSequence(s) => {
                    actogrid::descriptor::plan::mpi_of(d, s).is_some()
                }
                _ => false,
            }),
            RuntimeSource::Acquisition(_) => false,
        })
    };
    !d.mappings.is_empty()
        && d.lookups.is_empty()
        && d.mappings.iter().all(|m| {
            m.current_jvm.is_none() && !m.jvms.is_empty() && m.jvms.iter().all(|j| is_mpi(j))
        })
}

/// The virtual node an MPI run was for (by its sequence), for messages.
fn vn_of(d: &actogrid::descriptor::Descriptor, outcome: &actogrid::MpiOutcome) -> String {
    use actogrid::descriptor::model::RuntimeSource;
    d.mappings
        .iter()
        .find(|m| {
            m.jvms.iter().any(|j| {
                d.jvm(j).is_some_and(|j| {
                    matches!(&j.source, RuntimeSource::Creation(p) if p.value == outcome.sequence)
                })
            })
        })
        .map_or_else(|| "?".to_owned(), |m| m.virtual_node.value.clone())
}

/// An MPI run: what mpirun printed on standard output goes to standard
/// output as it is; how it ended, and its error output, to standard error.
fn print_mpi_run(vn: &str, outcome: &actogrid::MpiOutcome) {
    super::emit(&outcome.stdout);
    if !outcome.stdout.is_empty() && !outcome.stdout.ends_with('\n') {
        super::emit("\n");
    }
    if !outcome.stderr.trim().is_empty() {
        super::emit_err(&outcome.stderr);
        if !outcome.stderr.ends_with('\n') {
            super::emit_err("\n");
        }
    }
    if outcome.truncated() {
        super::emit_err(&format!(
            "{vn}: (only the last {} bytes of each output are kept: {} bytes on stdout, {} on stderr)\n",
            actogrid_acquisition::mpi::OUTPUT_TAIL,
            outcome.stdout_bytes,
            outcome.stderr_bytes
        ));
    }
    super::emit_err(&format!("{vn}: {outcome}\n"));
}
