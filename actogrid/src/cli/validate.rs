//! `actogrid validate FILE…`

use std::path::PathBuf;
use std::process::ExitCode;

use actogrid::check_descriptor;
use actogrid::descriptor::{LoadOptions, Severity};
use serde::Serialize;

use super::Vars;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Descriptors to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    vars: Vars,
    /// Output: `human` (with the offending lines), `short` (one line each), or `json`.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Human,
    Short,
    Json,
}

#[derive(Serialize)]
struct FileReport {
    file: String,
    valid: bool,
    errors: usize,
    warnings: usize,
    diagnostics: Vec<actogrid::descriptor::JsonDiagnostic>,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let options = LoadOptions {
        program_variables: args.vars.to_map(),
        ..LoadOptions::default()
    };
    let mut reports = Vec::new();
    let mut all_valid = true;
    for file in &args.files {
        let loaded = check_descriptor(file, &options);
        let d = &loaded.diagnostics;
        let (errors, warnings) = (d.count(Severity::Error), d.count(Severity::Warning));
        all_valid &= loaded.is_valid();
        match args.format {
            Format::Human => {
                super::emit(&d.render(&loaded.sources));
                let verdict = if loaded.is_valid() {
                    "valid"
                } else {
                    "invalid"
                };
                super::emit(&format!(
                    "{}: {verdict} ({errors} error(s), {warnings} warning(s))\n",
                    file.display()
                ));
            }
            Format::Short => super::emit(&d.render_short(&loaded.sources)),
            Format::Json => reports.push(FileReport {
                file: file.display().to_string(),
                valid: loaded.is_valid(),
                errors,
                warnings,
                diagnostics: d.to_json(&loaded.sources),
            }),
        }
    }
    if let Format::Json = args.format {
        match serde_json::to_string_pretty(&reports) {
            Ok(json) => super::emit(&format!("{json}\n")),
            Err(e) => {
                super::emit_err(&format!("error: cannot write JSON: {e}\n"));
                return ExitCode::FAILURE;
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
