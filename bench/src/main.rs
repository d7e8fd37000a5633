//! actogrid benchmarks.
//!
//! Each subcommand measures one thing together with a raw baseline measured
//! in the same run, prints a few readable lines, and ends with one JSON line
//! (see [`report::Report`]).
//!
//! ```console
//! $ cargo run --release -p actogrid-bench -- descriptor-parse
//! ```

mod descriptor_parse;
mod report;
mod timing;

use clap::{Parser, Subcommand};

/// actogrid benchmarks; the last line of the output is the result as JSON.
#[derive(Debug, Parser)]
#[command(name = "actogrid-bench")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Parse, expand and validate a descriptor of a large ssh cluster,
    /// against a plain quick-xml scan of the same text.
    DescriptorParse(descriptor_parse::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.bench {
        Bench::DescriptorParse(args) => descriptor_parse::run(&args)?,
    };
    report.print();
    Ok(())
}
