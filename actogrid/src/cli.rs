//! Argument parsing and dispatch. Each command lives in its own module and
//! returns the process exit code: 0 success, 1 the input is invalid,
//! 2 the command line is wrong (clap's convention).

mod deploy;
mod ft_server;
mod http;
mod logs;
mod node;
mod peer;
mod plan;
mod status;
mod validate;

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "actogrid",
    version,
    about = "Deploy and run actogrid applications"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check descriptors: every problem with file:line:column and a hint.
    Validate(validate::Args),
    /// Show the deployment plan of a descriptor (text, or Graphviz with --dot).
    Plan(plan::Args),
    /// Start every virtual node of a descriptor, print node URLs as they
    /// register, keep them up until Ctrl-C, then tear everything down.
    Deploy(deploy::Args),
    /// Run a stand-alone node runtime hosting the built-in active types.
    Node(node::Args),
    /// Run a stand-alone FT server (store, failure detector, recovery) for
    /// deployments whose fault-tolerance service names it (`server`).
    FtServer(ft_server::Args),
    /// Show a running deployment: virtual nodes, runtimes, nodes, jobs
    /// (URL: its dashboard's, printed when it starts).
    Status(status::Args),
    /// Show what the runtimes of a running deployment printed.
    Logs(logs::Args),
    /// Join the peer-to-peer overlay and lend node slots (until Ctrl-C);
    /// `peer status ADDR` shows a peer's acquaintances, slots and lent nodes.
    Peer(peer::Args),
}

/// `--var name=value`, repeatable.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Vars {
    /// Set a program variable of the descriptor (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    vars: Vec<(String, String)>,
}

impl Vars {
    pub(crate) fn to_map(&self) -> BTreeMap<String, String> {
        self.vars.iter().cloned().collect()
    }
}

/// The binary of `--program`, checked: an executable file, as an absolute
/// path (runtimes may start elsewhere than this directory).
pub(crate) fn program_binary(path: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let full = std::fs::canonicalize(path)
        .map_err(|e| anyhow::anyhow!("--program {}: {e}", path.display()))?;
    let meta = std::fs::metadata(&full)
        .map_err(|e| anyhow::anyhow!("--program {}: {e}", path.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        anyhow::bail!(
            "--program {}: not an executable file (give the application's binary, e.g. target/release/my-app)",
            path.display()
        );
    }
    Ok(full)
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(format!(
            "`{name}` is not a variable name (letters, digits, `.`, `_`, `-`)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

pub(crate) fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Node(args) => node::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Peer(args) => peer::run(args),
        Command::FtServer(args) => ft_server::run(args),
        Command::Status(args) => status::run(args),
        Command::Logs(args) => logs::run(args),
    }
}

/// Logs to stderr at `RUST_LOG`'s level, `info` by default.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Writes to stdout. When the reader has gone (`actogrid plan … | head`),
/// the program ends quietly with the status a shell gives to SIGPIPE,
/// instead of panicking in `print!`.
pub(crate) fn emit(text: &str) {
    write_or_exit(&mut std::io::stdout().lock(), text);
}

/// Writes to stderr, like [`emit`].
pub(crate) fn emit_err(text: &str) {
    write_or_exit(&mut std::io::stderr().lock(), text);
}

fn write_or_exit(out: &mut impl std::io::Write, text: &str) {
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(141);
    }
}
