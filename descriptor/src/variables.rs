//! The variable contract: who may give a variable its value, who wins, and
//! `${name}` expansion.
//!
//! Three parties can give values: the descriptor (and the files it
//! includes), the program (the API, or `--var name=value`), and the
//! environment of the process reading the descriptor (ProActive's Java
//! properties). Each variable kind says who may set it and in which order
//! the parties win; the table lives in [`contract`] and in
//! `docs/descriptor.md`. A variable nobody gave a value is an error at its
//! declaration; a use of an undefined or empty variable is an error where
//! it is used.
//!
//! Expansion is bounded: a variable defined as several copies of another,
//! itself several copies of a third (a dozen lines), would otherwise grow
//! into gigabytes. No value may expand past [`MAX_EXPANDED_VALUE`] and all
//! the expansions of one descriptor together past [`MAX_EXPANDED_TOTAL`];
//! the check comes before the bytes are copied, so memory stays bounded by
//! the limits whatever the file says.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{Party, Variable, VariableKind};
use crate::source::{SourceMap, Span, Spanned};

/// A declaration read from a `variables` block (or an included file).
#[derive(Debug, Clone)]
pub(crate) struct Declaration {
    pub(crate) name: Spanned<String>,
    pub(crate) kind: VariableKind,
    /// The descriptor's value, with its span; empty strings are `None`.
    pub(crate) value: Option<(String, Span)>,
}

/// Priority order (first wins) and the parties allowed to give a value.
pub(crate) fn contract(kind: VariableKind) -> (&'static [Party], &'static [Party]) {
    use Party::{Descriptor as D, Environment as E, Program as P};
    match kind {
        VariableKind::DescriptorVariable => (&[D, P], &[D]),
        VariableKind::ProgramVariable => (&[P, D], &[P]),
        VariableKind::JavaPropertyVariable => (&[E], &[E]),
        VariableKind::ProgramDefaultVariable => (&[D, P], &[D, P]),
        VariableKind::DescriptorDefaultVariable => (&[P, D], &[D, P]),
        VariableKind::JavaPropertyDescriptorDefault => (&[E, D, P], &[E, D, P]),
        VariableKind::JavaPropertyProgramDefault => (&[E, P, D], &[E, D, P]),
    }
}

pub(crate) fn kind_name(kind: VariableKind) -> &'static str {
    match kind {
        VariableKind::DescriptorVariable => "descriptorVariable",
        VariableKind::ProgramVariable => "programVariable",
        VariableKind::DescriptorDefaultVariable => "descriptorDefaultVariable",
        VariableKind::ProgramDefaultVariable => "programDefaultVariable",
        VariableKind::JavaPropertyVariable => "javaPropertyVariable",
        VariableKind::JavaPropertyDescriptorDefault => "javaPropertyDescriptorDefault",
        VariableKind::JavaPropertyProgramDefault => "javaPropertyProgramDefault",
    }
}

pub(crate) fn kind_from_element(name: &str) -> Option<VariableKind> {
    Some(match name {
        "descriptorVariable" => VariableKind::DescriptorVariable,
        "programVariable" => VariableKind::ProgramVariable,
        "descriptorDefaultVariable" => VariableKind::DescriptorDefaultVariable,
        "programDefaultVariable" => VariableKind::ProgramDefaultVariable,
        "javaPropertyVariable" => VariableKind::JavaPropertyVariable,
        "javaPropertyDescriptorDefault" => VariableKind::JavaPropertyDescriptorDefault,
        "javaPropertyProgramDefault" => VariableKind::JavaPropertyProgramDefault,
        _ => return None,
    })
}

/// Where environment values come from.
#[derive(Debug, Clone, Default)]
pub enum Environment {
    /// The environment of this process.
    #[default]
    Process,
    /// A fixed set of values (tests, or a deployer speaking for another host).
    Fixed(BTreeMap<String, String>),
}

impl Environment {
    /// The value of a Java-property-style name: the name as it is, then
    /// upper-cased with `.` as `_`, then the usual aliases of `user.home`,
    /// `user.name` and `user.dir`.
    pub fn lookup(&self, name: &str) -> Option<String> {
        let get = |key: &str| match self {
            Environment::Process => std::env::var(key).ok(),
            Environment::Fixed(map) => map.get(key).cloned(),
        };
        let upper = name.to_ascii_uppercase().replace(['.', '-'], "_");
        get(name).or_else(|| get(&upper)).or_else(|| match name {
            "user.home" => get("HOME"),
            "user.name" => get("USER").or_else(|| get("LOGNAME")),
            "user.dir" => match self {
                Environment::Process => std::env::current_dir()
                    .ok()
                    .map(|d| d.display().to_string()),
                Environment::Fixed(map) => map.get("PWD").cloned(),
            },
            "java.io.tmpdir" => get("TMPDIR").or_else(|| Some("/tmp".into())),
            _ => None,
        })
    }
}

/// Longest value one expansion may produce (a variable's value, an
/// attribute, a text): 1 MiB.
pub const MAX_EXPANDED_VALUE: usize = 1 << 20;

/// Most bytes the expansions of one descriptor may produce together
/// (variables and every value using them): 16 MiB.
pub const MAX_EXPANDED_TOTAL: usize = 16 << 20;

/// The values variables expand to.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    values: HashMap<String, String>,
    /// Declared but without a usable value: already reported once.
    broken: HashSet<String>,
    /// Bytes produced by expansions so far, against [`MAX_EXPANDED_TOTAL`].
    expanded: Cell<usize>,
    /// The total limit was reported: later expansions fail silently
    /// rather than repeating it at every value.
    over_total: Cell<bool>,
}

/// Applies the contract to the declarations, in order.
pub(crate) fn resolve(
    declarations: &[Declaration],
    program: &BTreeMap<String, String>,
    environment: &Environment,
    sources: &SourceMap,
    diags: &mut Diagnostics,
) -> (Scope, Vec<Variable>) {
    let mut scope = Scope::default();
    let mut kinds: HashMap<&str, (VariableKind, Span)> = HashMap::new();
    let mut resolved: Vec<Variable> = Vec::new();
    for decl in declarations {
        let name = decl.name.value.as_str();
        if let Some(&(kind, first)) = kinds.get(name) {
            if kind != decl.kind {
                diags.push(
                    Diagnostic::error(
                        "variable-redefined",
                        decl.name.span,
                        format!(
                            "variable `{name}` is declared again as {} but was a {} (line {})",
                            kind_name(decl.kind),
                            kind_name(kind),
                            first.line
                        ),
                    )
                    .with_hint("a variable keeps one kind: rename one of them"),
                );
                continue;
            }
        }
        kinds.insert(name, (decl.kind, decl.name.span));
        let (priority, may_set) = contract(decl.kind);
        let mut ok = true;
        // The descriptor's value may itself use earlier variables.
        let descriptor_value = match &decl.value {
            Some((raw, span)) => match scope.expand(raw, *span, sources, diags) {
                Some(v) if !v.is_empty() => Some(v),
                Some(_) => None,
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let program_value = program.get(name).filter(|v| !v.is_empty()).cloned();
        // The value breaks the contract, not the name: the caret goes under it.
        let value_span = decl.value.as_ref().map_or(decl.name.span, |(_, s)| *s);
        if descriptor_value.is_some() && !may_set.contains(&Party::Descriptor) {
            ok = false;
            diags.push(
                Diagnostic::error(
                    "variable-contract",
                    value_span,
                    format!(
                        "{} `{name}` cannot be given a value in the descriptor",
                        kind_name(decl.kind)
                    ),
                )
                .with_hint(match decl.kind {
                    VariableKind::ProgramVariable => {
                        "leave its value empty so the program sets it, or declare it programDefaultVariable or descriptorDefaultVariable to give a default"
                    }
                    _ => "leave its value empty: it is read from the environment",
                }),
            );
        }
        if program_value.is_some() && !may_set.contains(&Party::Program) {
            ok = false;
            diags.push(
                Diagnostic::error(
                    "variable-contract",
                    value_span,
                    format!(
                        "the program sets `{name}` (--var {name}=…), but a {} can only be set {}",
                        kind_name(decl.kind),
                        if decl.kind == VariableKind::JavaPropertyVariable {
                            "from the environment"
                        } else {
                            "in the descriptor"
                        }
                    ),
                )
                .with_hint("declare it descriptorDefaultVariable to let programs override the descriptor's value"),
            );
        }
        if !ok {
            scope.broken.insert(name.to_owned());
            continue;
        }
        let environment_value = if may_set.contains(&Party::Environment) {
            environment.lookup(name).filter(|v| !v.is_empty())
        } else {
            None
        };
        let winner = priority.iter().find_map(|party| {
            let value = match party {
                Party::Descriptor => descriptor_value.clone(),
                Party::Program => program_value.clone(),
                Party::Environment => environment_value.clone(),
            };
            value.map(|v| (*party, v))
        });
        match winner {
            Some((party, value)) => {
                scope.values.insert(name.to_owned(), value.clone());
                scope.broken.remove(name);
                resolved.retain(|v| *v.name != name);
                resolved.push(Variable {
                    name: decl.name.clone(),
                    kind: decl.kind,
                    value,
                    set_by: party,
                });
            }
            None => {
                scope.broken.insert(name.to_owned());
                scope.values.remove(name);
                let hint = match decl.kind {
                    VariableKind::JavaPropertyVariable => format!(
                        "set the environment variable {name} (or {}) before reading the descriptor",
                        name.to_ascii_uppercase().replace(['.', '-'], "_")
                    ),
                    VariableKind::DescriptorVariable => {
                        "give it a value in the descriptor".to_owned()
                    }
                    _ => format!("pass --var {name}=VALUE, or give it a value in the descriptor"),
                };
                diags.push(
                    Diagnostic::error(
                        "empty-variable",
                        decl.name.span,
                        format!("{} `{name}` has no value", kind_name(decl.kind)),
                    )
                    .with_hint(hint),
                );
            }
        }
    }
    // Program variables the descriptor does not declare are usable as they are.
    for (name, value) in program {
        if !kinds.contains_key(name.as_str()) {
            scope.values.insert(name.clone(), value.clone());
        }
    }
    (scope, resolved)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl Scope {
    /// Expands every `${name}` of `raw`, written at `span`. Problems are
    /// reported at the exact `${…}` when it can be found in the source.
    pub(crate) fn expand(
        &self,
        raw: &str,
        span: Span,
        sources: &SourceMap,
        diags: &mut Diagnostics,
    ) -> Option<String> {
        if !raw.contains("${") {
            return Some(raw.to_owned());
        }
        let source = sources
            .file(span.file)
            .text()
            .get(span.start..span.end)
            .unwrap_or("");
        let at = |needle: &str| match source.find(needle) {
            Some(i) => sources.span(span.file, span.start + i, span.start + i + needle.len()),
            None => span,
        };
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        let mut ok = true;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                diags.push(
                    Diagnostic::error(
                        "bad-variable-reference",
                        at(&rest[i..]),
                        "`${` is never closed by `}`",
                    )
                    .with_hint("write ${name}"),
                );
                return None;
            };
            let name = &after[..end];
            let reference = &rest[i..i + 3 + end];
            if name.is_empty() || !name.chars().all(is_name_char) {
                diags.push(
                    Diagnostic::error(
                        "bad-variable-reference",
                        at(reference),
                        format!("`{reference}` is not a variable reference"),
                    )
                    .with_hint("variable names use letters, digits, `.`, `_` and `-`"),
                );
                ok = false;
            } else if let Some(value) = self.values.get(name) {
                let len = out.len() + value.len();
                if len > MAX_EXPANDED_VALUE {
                    diags.push(
                        Diagnostic::error(
                            "expansion-too-large",
                            at(reference),
                            format!(
                                "expanding `{reference}` makes this value longer than {} (the limit of one value)",
                                human_size(MAX_EXPANDED_VALUE)
                            ),
                        )
                        .with_hint("a variable that repeats another several times grows fast: define the value you need directly"),
                    );
                    return None;
                }
                if self.expanded.get() + len > MAX_EXPANDED_TOTAL {
                    if !self.over_total.replace(true) {
                        diags.push(
                            Diagnostic::error(
                                "expansion-too-large",
                                at(reference),
                                format!(
                                    "expanding `{reference}` takes the variable expansions of this descriptor past {} (the limit of one descriptor)",
                                    human_size(MAX_EXPANDED_TOTAL)
                                ),
                            )
                            .with_hint("large values used in many places multiply: keep variables short, or pass big lists in a file the program reads"),
                        );
                    }
                    return None;
                }
                if value.is_empty() {
                    // Only the program gives empty values (`--var name=`):
                    // declared variables without a value are never in scope.
                    diags.push(
                        Diagnostic::error(
                            "empty-variable",
                            at(reference),
                            format!("variable `{name}` is empty"),
                        )
                        .with_hint(format!("give it a value: --var {name}=VALUE")),
                    );
                    ok = false;
                }
                out.push_str(value);
            } else if !self.broken.contains(name) {
                let mut known: Vec<&str> = self.values.keys().map(String::as_str).collect();
                known.sort_unstable();
                let hint = match crate::reader::suggest(name, &known) {
                    Some(s) => format!(
                        "did you mean `${{{s}}}`? Otherwise declare it in <variables> or pass --var {name}=VALUE"
                    ),
                    None => format!("declare it in <variables> or pass --var {name}=VALUE"),
                };
                diags.push(
                    Diagnostic::error(
                        "undefined-variable",
                        at(reference),
                        format!("variable `{name}` is not defined"),
                    )
                    .with_hint(hint),
                );
                ok = false;
            } else {
                ok = false;
            }
            rest = &after[end + 1..];
        }
        if out.len() + rest.len() > MAX_EXPANDED_VALUE {
            diags.push(
                Diagnostic::error(
                    "expansion-too-large",
                    span,
                    format!(
                        "this value expands to more than {} (the limit of one value)",
                        human_size(MAX_EXPANDED_VALUE)
                    ),
                )
                .with_hint("a variable that repeats another several times grows fast: define the value you need directly"),
            );
            return None;
        }
        out.push_str(rest);
        if ok {
            self.expanded.set(self.expanded.get() + out.len());
        }
        ok.then_some(out)
    }
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// Parses a Java properties file: `key=value`, `key: value` or `key value`,
/// `#` and `!` comments, `\` line continuations. Returns `(key, value,
/// byte offset of the key)`.
pub(crate) fn parse_properties(text: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        let line_offset = offset;
        offset += line.len();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let key_at = line_offset + (line.len() - trimmed.len());
        let mut logical = trimmed.trim_end_matches(['\r', '\n']).to_owned();
        while logical.ends_with('\\') {
            logical.pop();
            match lines.next() {
                Some(next) => {
                    offset += next.len();
                    logical.push_str(next.trim_start().trim_end_matches(['\r', '\n']));
                }
                None => break,
            }
        }
        let split = logical.find(['=', ':', ' ', '\t']).unwrap_or(logical.len());
        let key = logical[..split].trim().to_owned();
        let mut value = logical[split..].trim_start();
        if let Some(v) = value.strip_prefix(['=', ':']) {
            value = v.trim_start();
        }
        out.push((key, value.to_owned(), key_at));
    }
    out
}

#[cfg(test)]
mod tests;
