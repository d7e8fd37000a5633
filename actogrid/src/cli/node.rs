//! `actogrid node`: a stand-alone node runtime hosting the built-in types
//! (the test and benchmark targets), until SIGINT or SIGTERM.

use std::process::ExitCode;

/// Arguments of `actogrid node`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to listen on, `host:port` (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: String,
    /// Address other runtimes should use, when not the listening one.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Name of the node this runtime hosts.
    #[arg(long, default_value = "node")]
    name: String,
    /// Exit when standard input closes (the launching process went away).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    if let Err(e) = args.listen.parse::<std::net::SocketAddr>() {
        let looks_like_host_port = args
            .listen
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        if !looks_like_host_port {
            super::emit_err(&format!(
                "error: --listen `{}` is not host:port ({e})\n",
                args.listen
            ));
            return ExitCode::from(2);
        }
    }
    let tokio = actogrid::__async_runtime_or_exit();
    let options = actogrid::NodeOptions {
        listen: args.listen,
        advertise: args.advertise,
        name: args.name,
        exit_on_stdin_eof: args.exit_on_stdin_eof,
    };
    match tokio.block_on(actogrid::serve_node(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::emit_err(&format!("error: {e:#}\n"));
            ExitCode::from(1)
        }
    }
}
