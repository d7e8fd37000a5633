//! The `actogrid` command line: one file per command under `cli/`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Started by a deployer: serve as its runtime (never returns).
    actogrid::serve_if_deployed();
    cli::run()
}
