//! `actogrid ft-server`: a stand-alone FT server, until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `actogrid ft-server`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to listen on, `host:port` (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: String,
    /// Address the runtimes should use, when not the listening one
    /// (required with `--listen 0.0.0.0:PORT`; `HOST` alone takes the
    /// listening port).
    #[arg(long, value_name = "HOST[:PORT]")]
    advertise: Option<String>,
    /// The name the server is reached under: descriptors give
    /// `actogrid://HOST:PORT/NAME` as the service's `server` argument.
    #[arg(long, default_value = "ft")]
    name: String,
    /// The store's file (default: a fresh one in the state directory,
    /// removed when the server stops).
    #[arg(long, value_name = "FILE")]
    store: Option<PathBuf>,
    /// The heartbeat period: protected nodes beat four times per period,
    /// and a runtime silent for 13/8 periods is declared dead and its
    /// objects recovered (a failure is found within two periods).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
    heartbeat: Duration,
    /// How long the objects of a dead runtime wait for a node to recover
    /// them on (of the spares virtual node, else their own).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    recovery_wait: Duration,
    /// Exit when standard input closes (the launching process went away).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    actogrid::descriptor::parse_duration(text)
}

pub(crate) fn run(args: Args) -> ExitCode {
    if !valid_name(&args.name) {
        super::emit_err(&format!(
            "error: --name `{}` is not a name (letters, digits, `.`, `_`, `-`)\n",
            args.name
        ));
        return ExitCode::from(2);
    }
    super::init_logging();
    let tokio = actogrid::__async_runtime_or_exit();
    let options = actogrid::FtServerOptions {
        listen: args.listen,
        advertise: args.advertise,
        name: args.name,
        store: args.store,
        heartbeat: args.heartbeat,
        recovery_wait: args.recovery_wait,
        exit_on_stdin_eof: args.exit_on_stdin_eof,
    };
    match tokio.block_on(actogrid::serve_ft_server(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::emit_err(&format!("error: {e:#}\n"));
            ExitCode::from(1)
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
