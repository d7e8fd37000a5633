//! `actogrid validate FILE…`

use std::path::PathBuf;
use std::process::ExitCode;

use actogrid::descriptor::{LoadOptions, Severity};
use actogrid::{check_descriptor, check_descriptor_for};
use serde::Serialize;

use super::Vars;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Descriptors to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    vars: Vars,
    /// Check the technical services against this application binary (it
    /// is asked which it has) instead of the built-in ones only.
    #[arg(long, value_name = "BINARY")]
    program: Option<PathBuf>,
    /// Output: `human` (with the offending lines), `short` (one line each), or `json`.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Warn about each ignored setting on its own, instead of one summary
    /// of the Java-only settings per file and one warning per element.
    #[arg(long, short)]
    verbose: bool,
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
        verbose: args.verbose,
        ..LoadOptions::default()
    };
    let program = match args
        .program
        .as_deref()
        .map(super::program_binary)
        .transpose()
    {
        Ok(p) => p,
        Err(e) => {
            super::emit_err(&format!("error: {e:#}\n"));
            return ExitCode::from(2);
        }
    };
    let mut reports = Vec::new();
    let mut all_valid = true;
    for file in &args.files {
        let loaded = match &program {
            None => check_descriptor(file, &options),
            Some(program) => match check_descriptor_for(file, &options, program) {
                Ok(loaded) => loaded,
                Err(e) => {
                    super::emit_err(&format!("error: {}: {e}\n", file.display()));
                    return ExitCode::from(2);
                }
            },
        };
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
