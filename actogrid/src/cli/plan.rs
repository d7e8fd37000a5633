//! `actogrid plan FILE`

use std::path::PathBuf;
use std::process::ExitCode;

use actogrid::check_descriptor;
use actogrid::descriptor::{LoadOptions, plan};

use super::Vars;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The descriptor.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    vars: Vars,
    /// Print a Graphviz graph instead of text (`| dot -Tsvg > plan.svg`).
    #[arg(long)]
    dot: bool,
    /// Warn about each ignored setting on its own, instead of one summary
    /// of the Java-only settings per file and one warning per element.
    #[arg(long, short)]
    verbose: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let options = LoadOptions {
        program_variables: args.vars.to_map(),
        verbose: args.verbose,
        ..LoadOptions::default()
    };
    let loaded = check_descriptor(&args.file, &options);
    // Warnings go to stderr so that the plan itself can be piped.
    super::emit_err(&loaded.diagnostics.render(&loaded.sources));
    if !loaded.is_valid() {
        super::emit_err(&format!("{}: invalid, no plan\n", args.file.display()));
        return ExitCode::FAILURE;
    }
    let descriptor = loaded.descriptor;
    if args.dot {
        super::emit(&plan::render_dot(&descriptor));
    } else {
        super::emit(&plan::render_text(&descriptor));
    }
    ExitCode::SUCCESS
}
