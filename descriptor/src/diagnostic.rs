//! Diagnostics: what is wrong, where, and what to do about it.
//!
//! A descriptor is read to the end even when it is broken, so that one run
//! reports every problem of the file. Each [`Diagnostic`] carries a stable
//! `code` (for tools and tests), a one-line message, the position of the
//! offending element, attribute or value, and, most of the time, a hint.

use std::fmt;

use serde::Serialize;

use crate::source::{SourceMap, Span};

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Information that needs no action (for example a technical-service
    /// class this binary does not know, which the application may define).
    Note,
    /// Accepted, but probably not what was meant, or ignored by actogrid.
    Warning,
    /// The descriptor cannot be used.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One problem found in a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// How bad it is.
    pub severity: Severity,
    /// Stable identifier, such as `unknown-element` or `undefined-variable`.
    pub code: &'static str,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where; `None` only for problems of a whole file that could not be read.
    pub span: Option<Span>,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, Some(span), message)
    }

    /// A warning at `span`.
    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, Some(span), message)
    }

    /// A note at `span`.
    pub fn note(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Note, code, Some(span), message)
    }

    pub(crate) fn new(
        severity: Severity,
        code: &'static str,
        span: Option<Span>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            code,
            message: message.into(),
            span,
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `true` for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Every diagnostic of one descriptor, in the order of the file.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Adds a diagnostic (checks made outside this crate, such as the
    /// application's technical services, report through the same list).
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    /// Puts the diagnostics in file order.
    pub fn sort(&mut self) {
        self.items.sort_by_key(|d| {
            d.span
                .map_or((0, 0, 0, 0), |s| (s.file.0, s.line, s.col, s.start))
        });
        self.items.dedup();
    }

    /// All diagnostics.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    /// Number of diagnostics.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// `true` when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `true` when at least one diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// How many diagnostics have this severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.items.iter().filter(|d| d.severity == severity).count()
    }

    /// The diagnostics as a JSON-ready list, with file paths resolved.
    pub fn to_json(&self, sources: &SourceMap) -> Vec<JsonDiagnostic> {
        self.items
            .iter()
            .map(|d| JsonDiagnostic {
                severity: d.severity,
                code: d.code,
                message: d.message.clone(),
                file: d
                    .span
                    .map(|s| sources.file(s.file).path().display().to_string()),
                line: d.span.map(|s| s.line),
                column: d.span.map(|s| s.col),
                hint: d.hint.clone(),
            })
            .collect()
    }

    /// Renders every diagnostic for a person: severity, code, message,
    /// `file:line:column`, the offending line with a marker, and the hint.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        for d in &self.items {
            render_one(&mut out, d, sources);
        }
        out
    }

    /// Renders each diagnostic as one line, `file:line:col: severity[code]: message`,
    /// the form editors and `grep` understand.
    pub fn render_short(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        for d in &self.items {
            if let Some(span) = d.span {
                let path = sources.file(span.file).path().display();
                out += &format!("{path}:{}:{}: ", span.line, span.col);
            }
            out += &format!("{}[{}]: {}\n", d.severity, d.code, d.message);
        }
        out
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// A diagnostic as written by `actogrid validate --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonDiagnostic {
    /// `error`, `warning` or `note`.
    pub severity: Severity,
    /// Stable identifier.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// Path of the file, as given.
    pub file: Option<String>,
    /// 1-based line.
    pub line: Option<u32>,
    /// 1-based column.
    pub column: Option<u32>,
    /// What to do about it.
    pub hint: Option<String>,
}

/// How much of a long source line a rendered diagnostic shows: this many
/// characters, starting at most [`SHOWN_BEFORE`] before the column.
const SHOWN_WIDTH: usize = 160;
const SHOWN_BEFORE: usize = 60;

fn render_one(out: &mut String, d: &Diagnostic, sources: &SourceMap) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "{}[{}]: {}", d.severity, d.code, d.message);
    if let Some(span) = d.span {
        let file = sources.file(span.file);
        let line = file.line_text(span.line);
        let gutter = span.line.to_string().len();
        let _ = writeln!(
            out,
            "{:gutter$}--> {}:{}:{}",
            "",
            file.path().display(),
            span.line,
            span.col
        );
        let _ = writeln!(out, "{:gutter$} |", "");
        // A long line (a minified file, a runaway nesting) is shown as a
        // window around the column, so that one diagnostic stays readable.
        let chars: Vec<char> = line
            .chars()
            .map(|c| if c == '\t' { ' ' } else { c })
            .collect();
        let col = (span.col as usize).saturating_sub(1).min(chars.len());
        let from = col.saturating_sub(SHOWN_BEFORE);
        let to = (from + SHOWN_WIDTH).min(chars.len());
        let (lead, tail) = (
            if from > 0 { "…" } else { "" },
            if to < chars.len() { "…" } else { "" },
        );
        let shown: String = chars[from..to].iter().collect();
        let _ = writeln!(out, "{} | {lead}{shown}{tail}", span.line);
        // Underline the span, clipped to the end of what is shown.
        let room = to.saturating_sub(col).max(1);
        let len = file
            .text()
            .get(span.start..span.end)
            .map_or(1, |s| s.lines().next().map_or(1, |l| l.chars().count()))
            .clamp(1, room);
        let _ = writeln!(
            out,
            "{:gutter$} | {:pad$}{}",
            "",
            "",
            "^".repeat(len),
            pad = col - from + lead.chars().count()
        );
    }
    if let Some(hint) = &d.hint {
        let _ = writeln!(out, "  = hint: {hint}");
    }
    out.push('\n');
}
