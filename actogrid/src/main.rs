//! The `actogrid` command line: one file per command under `cli/`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Started by a peer daemon as the vessel of a lent slot: confine this
    // process and become the borrowed program (never returns). First, while
    // the process has a single thread.
    actogrid::peer::enter_vessel_if_asked();
    // The test and benchmark types `actogrid node` hosts, and deployments
    // of this command's own binary too.
    let _ = actogrid_builtin::link();
    // Started by a deployer: serve as its runtime (never returns).
    actogrid::serve_if_deployed();
    cli::run()
}
