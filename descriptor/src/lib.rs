//! Deployment descriptors: the XML files that map the virtual nodes of a
//! program onto runtimes started locally, over ssh, through batch
//! schedulers, or acquired from the peer-to-peer overlay.
//!
//! Reading a descriptor goes through four stages, one module each:
//!
//! * [`xml`](crate) — quick-xml's pull parser builds an element tree in
//!   which every element, attribute and text keeps its position;
//! * `variables` — the `<variables>` block and the files it includes are
//!   read first, the variable contract decides every value, and `${name}`
//!   is expanded everywhere else;
//! * `reader` — the tree becomes the typed [`model`], element by element,
//!   reporting every unknown or malformed element, attribute and value;
//! * `validate` — cross-references, uniqueness, cycles and cardinalities.
//!
//! Nothing stops at the first problem: [`load`] returns every
//! [`Diagnostic`] of the file, in file order, each with `file:line:column`,
//! a stable code and a hint. The [`plan`] module turns a valid descriptor
//! into the deployment plan shown by `actogrid plan`.
//!
//! ```no_run
//! use actogrid_descriptor::{LoadOptions, load};
//!
//! let loaded = load("deploy.xml", &LoadOptions::default().var("workers", "8"));
//! eprint!("{}", loaded.diagnostics.render(&loaded.sources));
//! let descriptor = loaded.into_valid()?;
//! println!("{}", actogrid_descriptor::plan::render_text(&descriptor));
//! # Ok::<(), actogrid_descriptor::Error>(())
//! ```

mod diagnostic;
mod hostrange;
pub mod model;
pub mod plan;
mod reader;
mod scalar;
mod source;
mod validate;
mod variables;
mod xml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Diagnostics, JsonDiagnostic, Severity};
pub use model::Descriptor;
pub use source::{FileId, SourceFile, SourceMap, Span, Spanned};
pub use validate::ValidateOptions;
pub use variables::{Environment, MAX_EXPANDED_TOTAL, MAX_EXPANDED_VALUE};
pub use xml::MAX_DEPTH;

/// Technical-service classes every actogrid binary provides.
pub const BUILTIN_SERVICE_CLASSES: &[&str] = &[
    "actogrid.Environment",
    "actogrid.Logging",
    "actogrid.Require",
    "actogrid.LoadBalancing",
    "actogrid.FaultTolerance",
    "org.objectweb.proactive.loadbalancing.LoadBalancingTS",
    "org.objectweb.proactive.core.body.ft.service.FaultToleranceTechnicalService",
];

/// The technical-service classes that ask for fault tolerance.
pub const FAULT_TOLERANCE_CLASSES: &[&str] = &[
    "actogrid.FaultTolerance",
    "org.objectweb.proactive.core.body.ft.service.FaultToleranceTechnicalService",
];

/// A duration as descriptors write them: `250ms`, `90s`, `5m`, `2h`, or a
/// whole number of seconds (technical services parse their arguments
/// with it).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    scalar::duration(text, scalar::Unit::Seconds)
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The descriptor has errors; `report` is the rendered diagnostics.
    #[error("{path}: the descriptor is invalid ({errors} error(s))\n{report}")]
    Invalid {
        /// The descriptor's path.
        path: PathBuf,
        /// How many errors.
        errors: usize,
        /// Every diagnostic, rendered for a person.
        report: String,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to read a descriptor.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Program variables (`--var name=value`, or the API).
    pub program_variables: BTreeMap<String, String>,
    /// Where environment values come from.
    pub environment: Environment,
    /// Validation options.
    pub validate: ValidateOptions,
    /// One warning for each ignored setting. By default the Java-only
    /// settings ProActive descriptors are full of (classpath, jvmParameters,
    /// policy files…) are summed up in one warning per file, and the
    /// ignored attributes of one element in one warning.
    pub verbose: bool,
}

impl LoadOptions {
    /// Sets a program variable.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.program_variables.insert(name.into(), value.into());
        self
    }
}

/// The outcome of reading a descriptor: the model (as complete as the file
/// allowed), every diagnostic, and the files read (to render diagnostics).
#[derive(Debug)]
pub struct Loaded {
    /// The model. Only meaningful when [`Loaded::is_valid`].
    pub descriptor: Descriptor,
    /// Every problem, in file order.
    pub diagnostics: Diagnostics,
    /// The descriptor and the files it included.
    pub sources: SourceMap,
}

impl Loaded {
    /// `true` when there is no error (warnings and notes allowed).
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.has_errors()
    }

    /// The model, or an [`Error::Invalid`] holding the rendered diagnostics.
    pub fn into_valid(self) -> Result<Descriptor> {
        if self.is_valid() {
            return Ok(self.descriptor);
        }
        let path = self
            .sources
            .files()
            .next()
            .map(|(_, f)| f.path().to_path_buf())
            .unwrap_or_default();
        Err(Error::Invalid {
            path,
            errors: self.diagnostics.count(Severity::Error),
            report: self.diagnostics.render(&self.sources),
        })
    }
}

/// Reads, expands and validates the descriptor at `path`.
pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Loaded {
    let path = path.as_ref();
    match crate::source::read_text(path) {
        Ok(text) => load_str(path, &text, options),
        Err(e) => {
            let mut sources = SourceMap::default();
            sources.add(path.to_path_buf(), "");
            let mut diagnostics = Diagnostics::default();
            diagnostics.push(
                Diagnostic::new(
                    Severity::Error,
                    "unreadable",
                    None,
                    format!("cannot read {}: {e}", path.display()),
                )
                .with_hint("check the path and its permissions"),
            );
            Loaded {
                descriptor: Descriptor::default(),
                diagnostics,
                sources,
            }
        }
    }
}

/// Reads a descriptor from `text`; `path` names it in diagnostics and is the
/// base of relative includes.
pub fn load_str(path: impl AsRef<Path>, text: &str, options: &LoadOptions) -> Loaded {
    let path = path.as_ref();
    let mut sources = SourceMap::default();
    let file = sources.add(path.to_path_buf(), text);
    let mut diagnostics = Diagnostics::default();
    let descriptor = read(&mut sources, file, path, options, &mut diagnostics);
    diagnostics.sort();
    Loaded {
        descriptor,
        diagnostics,
        sources,
    }
}

fn read(
    sources: &mut SourceMap,
    file: FileId,
    path: &Path,
    options: &LoadOptions,
    diags: &mut Diagnostics,
) -> Descriptor {
    let root = match xml::parse(sources, file) {
        Ok(root) => root,
        Err(d) => {
            diags.push(d);
            return Descriptor::default();
        }
    };
    if root.name != "ProActiveDescriptor" {
        diags.push(
            Diagnostic::error(
                "wrong-root",
                root.span,
                format!("the root element is <{}>", root.name),
            )
            .with_hint("a deployment descriptor starts with <ProActiveDescriptor>"),
        );
        return Descriptor::default();
    }
    let declarations = reader::collect_variables(sources, &root, path, diags);
    let (scope, variables) = variables::resolve(
        &declarations,
        &options.program_variables,
        &options.environment,
        sources,
        diags,
    );
    let mut cx = reader::Cx::new(sources, Some(&scope), diags, options.verbose);
    let mut descriptor = reader::document(&mut cx, &root);
    descriptor.variables = variables;
    validate::check(&descriptor, &options.validate, diags);
    descriptor
}
