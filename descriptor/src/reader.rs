//! Walks the element tree and builds the typed model.
//!
//! The reader never stops at the first problem: a bad value is reported and
//! left out, and reading goes on, so one run shows everything wrong with a
//! file. Each element is opened with [`Cx::open`], its attributes taken one
//! by one, and closed with [`Cx::close`], which reports the attributes
//! nobody asked for. Unknown children are reported where they are met.

use std::path::Path;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::source::{SourceMap, Span, Spanned};
use crate::variables::Scope;
use crate::xml::{Attr, Element};

/// A value read from an attribute or a text element, expanded.
#[derive(Debug, Clone)]
pub(crate) struct Val {
    pub(crate) text: String,
    pub(crate) span: Span,
}

impl Val {
    pub(crate) fn spanned(self) -> Spanned<String> {
        Spanned::new(self.text, self.span)
    }
}

/// What a value may hold, for the fields that end up in a job script, a
/// command line or an ssh login. Every such string is quoted where it is
/// used; these rules refuse, at the line that wrote it, what no quoting can
/// make right (a newline ends a scheduler's directive line) or what can
/// never be meant (a host name starting with `-` is an ssh option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// One line of text: no control character (newline, tab, escape…).
    OneLine,
    /// A host name or address: letters, digits, `.`, `-`, `_`, and `:`,
    /// `%`, `[`, `]` of IPv6 addresses; not starting with `-`.
    Host,
    /// A login name: letters, digits, `.`, `-`, `_`, `@`; not starting with `-`.
    User,
    /// An environment variable's name: one line, no `=`.
    EnvName,
    /// An environment variable's value: may span lines (it is quoted
    /// wherever it goes), but no other control character.
    EnvValue,
}

/// The first character of `text` that `rule` refuses, and why.
pub(crate) fn refused_char(text: &str, rule: Rule) -> Option<(usize, String)> {
    let describe = |c: char| match c {
        '\n' => "a newline".to_owned(),
        '\r' => "a carriage return".to_owned(),
        '\t' => "a tab".to_owned(),
        '\0' => "a NUL character".to_owned(),
        c if c.is_control() => format!("the control character U+{:04X}", u32::from(c)),
        ' ' => "a space".to_owned(),
        c => format!("`{c}`"),
    };
    if matches!(rule, Rule::Host | Rule::User) && text.starts_with('-') {
        return Some((0, "a leading `-`".to_owned()));
    }
    text.char_indices()
        .find(|&(_, c)| match rule {
            Rule::OneLine => c.is_control(),
            Rule::EnvName => c.is_control() || c == '=',
            Rule::EnvValue => c.is_control() && c != '\n' && c != '\t',
            Rule::Host => !(c.is_ascii_alphanumeric() || ".-_:%[]".contains(c)),
            Rule::User => !(c.is_ascii_alphanumeric() || ".-_@".contains(c)),
        })
        .map(|(i, c)| (i, describe(c)))
}

/// An element being read: which attributes were asked for.
pub(crate) struct Node<'e> {
    pub(crate) el: &'e Element,
    asked: Vec<&'static str>,
    used: Vec<bool>,
    /// Attributes accepted without effect: name, position, why. Warned
    /// about together when the element is closed.
    ignored: Vec<(&'static str, Span, String)>,
}

/// Reading context: sources, variables and the diagnostics gathered so far.
pub(crate) struct Cx<'a> {
    pub(crate) sources: &'a SourceMap,
    /// `None` while the variables themselves are read (no expansion yet).
    pub(crate) scope: Option<&'a Scope>,
    pub(crate) diags: &'a mut Diagnostics,
    /// Ids and names written inside unknown elements (a misspelled
    /// `<virtualNodesDefinition>`, a `<jvm>` outside `<jvms>`): references
    /// to them are not reported again as unresolved.
    pub(crate) rejected_ids: Vec<String>,
    /// Warn about each ignored setting on its own (see [`crate::LoadOptions::verbose`]).
    pub(crate) verbose: bool,
    /// Java-only settings met so far (element name, position), summed up
    /// by [`Cx::finish`] unless `verbose`.
    java_only: Vec<(String, Span)>,
    /// rsh and rlogin processes met so far (what, position), run over ssh
    /// and said once per file by [`Cx::finish`].
    over_ssh: Vec<(String, Span)>,
}

/// The closest of `candidates` to `name`, if it is close enough to be a typo.
pub(crate) fn suggest<'c>(name: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&name.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn is_namespace_attr(attr: &Attr) -> bool {
    attr.qname == "xmlns"
        || attr.qname.starts_with("xmlns:")
        || attr.qname.starts_with("xsi:")
        || attr.qname.starts_with("xml:")
}

/// How many line numbers a summary lists before it stops with `…`.
const MAX_LINES_LISTED: usize = 12;

/// `line 4` or `lines 4, 9, 12, …` for a summary, from the lines (in
/// order) of what it sums up.
fn lines_listed(mut lines: Vec<u32>) -> String {
    lines.dedup();
    let mut listed: Vec<String> = lines
        .iter()
        .take(MAX_LINES_LISTED)
        .map(u32::to_string)
        .collect();
    if lines.len() > MAX_LINES_LISTED {
        listed.push("…".to_owned());
    }
    let word = if lines.len() == 1 { "line" } else { "lines" };
    format!("{word} {}", listed.join(", "))
}

impl<'a> Cx<'a> {
    pub(crate) fn new(
        sources: &'a SourceMap,
        scope: Option<&'a Scope>,
        diags: &'a mut Diagnostics,
        verbose: bool,
    ) -> Self {
        Self {
            sources,
            scope,
            diags,
            rejected_ids: Vec::new(),
            verbose,
            java_only: Vec::new(),
            over_ssh: Vec::new(),
        }
    }

    pub(crate) fn error(
        &mut self,
        code: &'static str,
        span: Span,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::error(code, span, message).with_hint(hint));
    }

    pub(crate) fn warning(
        &mut self,
        code: &'static str,
        span: Span,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::warning(code, span, message).with_hint(hint));
    }

    /// Reads a pure container: an element with no attributes and no text,
    /// whose children the caller walks.
    pub(crate) fn container(&mut self, el: &Element) {
        let node = self.open(el);
        self.close(node);
        self.no_text(el);
    }

    pub(crate) fn open<'e>(&self, el: &'e Element) -> Node<'e> {
        Node {
            el,
            asked: Vec::new(),
            used: vec![false; el.attrs.len()],
            ignored: Vec::new(),
        }
    }

    fn expand(&mut self, raw: &str, span: Span) -> Option<String> {
        match self.scope {
            Some(scope) => scope.expand(raw, span, self.sources, self.diags),
            None => Some(raw.to_owned()),
        }
    }

    /// Takes attribute `name`, expanded. `None` when absent or when its
    /// expansion failed (already reported).
    pub(crate) fn attr(&mut self, node: &mut Node<'_>, name: &'static str) -> Option<Val> {
        node.asked.push(name);
        let index = node
            .el
            .attrs
            .iter()
            .position(|a| a.name == name && !is_namespace_attr(a))?;
        node.used[index] = true;
        let attr = &node.el.attrs[index];
        let text = self.expand(&attr.value, attr.value_span)?;
        Some(Val {
            text: text.trim().to_owned(),
            span: attr.value_span,
        })
    }

    /// Takes the first present of several spellings of one attribute.
    pub(crate) fn attr_alias(
        &mut self,
        node: &mut Node<'_>,
        names: &[&'static str],
    ) -> Option<Val> {
        let present: Vec<&'static str> = names
            .iter()
            .copied()
            .filter(|n| node.el.attrs.iter().any(|a| a.name == *n))
            .collect();
        if present.len() > 1 {
            let span = node
                .el
                .attrs
                .iter()
                .find(|a| a.name == present[1])
                .map_or(node.el.span, |a| a.span);
            self.error(
                "duplicate-attribute",
                span,
                format!(
                    "<{}> has both `{}` and `{}`, two spellings of one attribute",
                    node.el.name, present[0], present[1]
                ),
                "keep one of them",
            );
        }
        let mut found = None;
        for name in names {
            let v = self.attr(node, name);
            if found.is_none() {
                found = v;
            }
        }
        found
    }

    /// Takes a required attribute; reports it when missing or empty.
    pub(crate) fn required(&mut self, node: &mut Node<'_>, name: &'static str) -> Option<Val> {
        let present = node.el.attrs.iter().any(|a| a.name == name);
        let value = self.attr(node, name);
        match &value {
            None if !present => self.error(
                "missing-attribute",
                node.el.span,
                format!("<{}> needs the attribute `{name}`", node.el.name),
                format!("add {name}=\"…\""),
            ),
            Some(v) if v.text.is_empty() => {
                self.error(
                    "empty-value",
                    v.span,
                    format!("`{name}` of <{}> is empty", node.el.name),
                    format!("give {name} a value"),
                );
                return None;
            }
            _ => {}
        }
        value.filter(|v| !v.text.is_empty())
    }

    /// An attribute ProActive knew and actogrid accepts without using.
    pub(crate) fn ignored(&mut self, node: &mut Node<'_>, name: &'static str, why: &str) {
        node.asked.push(name);
        if let Some(index) = node.el.attrs.iter().position(|a| a.name == name) {
            node.used[index] = true;
            let span = node.el.attrs[index].span;
            node.ignored.push((name, span, why.to_owned()));
        }
    }

    /// Warns about the ignored attributes of `node`: one warning for those
    /// ignored for one reason, at the first of them (each on its own when
    /// verbose).
    fn warn_ignored(&mut self, node: &mut Node<'_>) {
        let element = &node.el.name;
        let mut ignored = std::mem::take(&mut node.ignored);
        while !ignored.is_empty() {
            let why = ignored[0].2.clone();
            let (group, rest): (Vec<_>, Vec<_>) = if self.verbose {
                let rest = ignored.split_off(1);
                (ignored, rest)
            } else {
                ignored.into_iter().partition(|(_, _, w)| *w == why)
            };
            ignored = rest;
            let names: Vec<String> = group.iter().map(|(n, _, _)| format!("`{n}`")).collect();
            let message = match names.as_slice() {
                [one] => format!("{one} of <{element}> is ignored"),
                [init @ .., last] => {
                    format!("{} and {last} of <{element}> are ignored", init.join(", "))
                }
                [] => continue,
            };
            self.warning("ignored-attribute", group[0].1, message, why);
        }
    }

    /// A setting only a Java virtual machine would read (classpath,
    /// jvmParameters, policy files…): accepted and ignored. ProActive's
    /// descriptors repeat them in every process, so unless verbose they are
    /// counted, and [`Cx::finish`] sums them up in one warning per file.
    pub(crate) fn java_only(&mut self, child: &Element) {
        if self.verbose {
            self.ignored_element(child, JAVA_ONLY_WHY);
        } else {
            self.java_only.push((child.name.clone(), child.span));
        }
    }

    /// An rsh or rlogin process (`what`, at `span`): nobody runs rsh any
    /// more, so it is started over ssh, with the same host and user; said
    /// once per file by [`Cx::finish`].
    pub(crate) fn over_ssh(&mut self, what: String, span: Span) {
        self.over_ssh.push((what, span));
    }

    /// Reports what was gathered while reading: the Java-only settings, one
    /// warning per file (the setting's own warning when a file has one),
    /// and the rsh and rlogin processes run over ssh, one warning per file.
    pub(crate) fn finish(&mut self) {
        let mut over_ssh = std::mem::take(&mut self.over_ssh);
        over_ssh.sort_by_key(|(_, span)| (span.file.0, span.start));
        for file in over_ssh.chunk_by(|a, b| a.1.file == b.1.file) {
            let mut kinds: Vec<&str> = file.iter().map(|(n, _)| n.as_str()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            let lines: Vec<u32> = file.iter().map(|(_, s)| s.line).collect();
            self.warning(
                "rsh-over-ssh",
                file[0].1,
                format!(
                    "{} rsh/rlogin process{} run over ssh ({}; {})",
                    file.len(),
                    if file.len() == 1 { "" } else { "es" },
                    kinds.join(", "),
                    lines_listed(lines)
                ),
                "rsh and rlogin send everything in clear and are gone from today's hosts: \
                 actogrid starts these runtimes with ssh, same host and user (the hosts must accept ssh)",
            );
        }
        let mut gathered = std::mem::take(&mut self.java_only);
        gathered.sort_by_key(|(_, span)| (span.file.0, span.start));
        for file in gathered.chunk_by(|a, b| a.1.file == b.1.file) {
            let (name, first) = &file[0];
            if file.len() == 1 {
                self.warning(
                    "ignored-element",
                    *first,
                    format!("<{name}> is ignored"),
                    JAVA_ONLY_WHY,
                );
                continue;
            }
            let lines: Vec<u32> = file.iter().map(|(_, s)| s.line).collect();
            let mut kinds: Vec<&str> = file.iter().map(|(n, _)| n.as_str()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            self.warning(
                "java-only-settings",
                *first,
                format!(
                    "{} Java-only settings ignored ({}; {})",
                    file.len(),
                    kinds
                        .iter()
                        .map(|k| format!("<{k}>"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    lines_listed(lines)
                ),
                format!("{JAVA_ONLY_WHY}; --verbose lists each one"),
            );
        }
    }

    /// Attributes accepted silently (ProActive's Java class names).
    pub(crate) fn accepted(&mut self, node: &mut Node<'_>, name: &'static str) {
        node.asked.push(name);
        if let Some(index) = node.el.attrs.iter().position(|a| a.name == name) {
            node.used[index] = true;
        }
    }

    /// Reports every attribute of `node` that was not taken, and those
    /// taken but ignored.
    pub(crate) fn close(&mut self, mut node: Node<'_>) {
        self.warn_ignored(&mut node);
        for (attr, used) in node.el.attrs.iter().zip(&node.used) {
            if *used || is_namespace_attr(attr) {
                continue;
            }
            let hint = match suggest(&attr.name, &node.asked) {
                Some(s) => format!("did you mean `{s}`?"),
                None if node.asked.is_empty() => format!("<{}> takes no attribute", node.el.name),
                None => format!("<{}> takes: {}", node.el.name, node.asked.join(", ")),
            };
            self.error(
                "unknown-attribute",
                attr.span,
                format!("unknown attribute `{}` on <{}>", attr.qname, node.el.name),
                hint,
            );
        }
    }

    pub(crate) fn unknown_child(
        &mut self,
        child: &Element,
        parent: &Element,
        known: &[&'static str],
    ) {
        let hint = match suggest(&child.name, known) {
            Some(s) => format!("did you mean <{s}>?"),
            None if known.is_empty() => format!("<{}> has no child elements", parent.name),
            None => format!(
                "<{}> may contain: {}",
                parent.name,
                known
                    .iter()
                    .map(|k| format!("<{k}>"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.error(
            "unknown-element",
            child.span,
            format!("unknown element <{}> in <{}>", child.name, parent.name),
            hint,
        );
        defined_names(child, &mut self.rejected_ids);
    }

    /// A Java-only or otherwise inapplicable element: accepted, ignored, warned.
    pub(crate) fn ignored_element(&mut self, child: &Element, why: &str) {
        self.warning(
            "ignored-element",
            child.span,
            format!("<{}> is ignored", child.name),
            why,
        );
    }

    /// Reports non-blank text in an element that holds only elements.
    pub(crate) fn no_text(&mut self, el: &Element) {
        if let Some(span) = el.text_span {
            self.error(
                "unexpected-text",
                span,
                format!("<{}> holds elements, not text", el.name),
                "remove the text or put it in an element",
            );
        }
    }

    /// The text of a text-only element (`<nodes>2</nodes>`), expanded.
    pub(crate) fn text(&mut self, el: &Element) -> Option<Val> {
        let node = self.open(el);
        self.close(node);
        for child in &el.children {
            self.unknown_child(child, el, &[]);
        }
        let span = el.text_span.unwrap_or(el.span);
        let text = self.expand(el.trimmed_text(), span)?;
        if text.is_empty() {
            self.error(
                "empty-value",
                el.span,
                format!("<{}> is empty", el.name),
                format!("write a value between <{0}> and </{0}>", el.name),
            );
            return None;
        }
        Some(Val { text, span })
    }

    /// `val` when it follows `rule`; otherwise an error at the value (the
    /// value is left out). `what` names the field in the message.
    pub(crate) fn checked(&mut self, val: Val, what: &str, rule: Rule) -> Option<Val> {
        let Some((_, found)) = refused_char(&val.text, rule) else {
            return Some(val);
        };
        let mut shown: String = val.text.chars().take(80).collect();
        if shown.len() < val.text.len() {
            shown.push('…');
        }
        let shown = shown.escape_debug().to_string();
        let hint = match rule {
            Rule::OneLine => {
                "write the value on one line: it goes into a job script or a command line, where a line break or a control character would change what runs"
            }
            Rule::Host => {
                "a host name has letters, digits, `.`, `-` and `_` (and `:` in IPv6 addresses), and does not start with `-`; give the login name in `username`"
            }
            Rule::User => {
                "a login name has letters, digits, `.`, `-`, `_` and `@`, and does not start with `-`"
            }
            Rule::EnvName => "an environment variable's name is one word without `=`",
            Rule::EnvValue => {
                "an environment value may hold line breaks and tabs, but no other control character"
            }
        };
        self.error(
            "bad-character",
            val.span,
            format!("{what} \"{shown}\" holds {found}"),
            hint,
        );
        None
    }

    /// Parses `val` with `parse`; reports the error at the value.
    pub(crate) fn parse<T>(
        &mut self,
        val: &Val,
        what: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(&val.text) {
            Ok(v) => Some(v),
            Err(message) => {
                // Scalar parsers say "`x` is not a T: write …": the second
                // half is the hint. The value itself may hold ": " (`02 : 00`),
                // so the split is looked for after it.
                let quoted = format!("`{}`", val.text);
                let after = if message.starts_with(&quoted) {
                    quoted.len()
                } else {
                    0
                };
                let (message, hint) = match message[after..].find(": ") {
                    Some(i) => (
                        message[..after + i].to_owned(),
                        message[after + i + 2..].to_owned(),
                    ),
                    None => (message, format!("fix the value of {what}")),
                };
                self.error("bad-value", val.span, format!("{what}: {message}"), hint);
                None
            }
        }
    }

    /// The `value` attribute of an element such as `<vmName value="…"/>`.
    pub(crate) fn value_of(&mut self, el: &Element) -> Option<Val> {
        let mut node = self.open(el);
        let has_value = el.attrs.iter().any(|a| a.name == "value");
        if !has_value && el.text_span.is_some() {
            // `<commandPath>/usr/bin/ssh</commandPath>` is one mistake: one
            // diagnostic showing the right form, not "no value" then "no text".
            self.accepted(&mut node, "value");
            self.close(node);
            for child in &el.children {
                self.unknown_child(child, el, &[]);
            }
            self.error(
                "missing-attribute",
                el.span,
                format!(
                    "<{}> takes its value in the attribute `value`, not as text",
                    el.name
                ),
                format!("write <{} value=\"{}\"/>", el.name, el.trimmed_text()),
            );
            return None;
        }
        let value = self.required(&mut node, "value");
        self.close(node);
        self.no_children(el);
        value
    }

    /// The `refid` attribute of a reference element.
    pub(crate) fn refid(&mut self, el: &Element) -> Option<Spanned<String>> {
        let mut node = self.open(el);
        let value = self.required(&mut node, "refid");
        self.close(node);
        self.no_children(el);
        value.map(Val::spanned)
    }

    pub(crate) fn no_children(&mut self, el: &Element) {
        for child in &el.children {
            self.unknown_child(child, el, &[]);
        }
        // Not `no_text`: this element holds no elements either.
        if let Some(span) = el.text_span {
            self.error(
                "unexpected-text",
                span,
                format!("<{}> takes no text", el.name),
                "remove the text: this element only has attributes",
            );
        }
    }

    /// Tracks elements that may appear once in their parent.
    pub(crate) fn once(
        &mut self,
        seen: &mut Vec<(&'static str, Span)>,
        name: &'static str,
        el: &Element,
    ) -> bool {
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            let first = *first;
            self.error(
                "duplicate-element",
                el.span,
                format!(
                    "<{name}> appears a second time (first at line {})",
                    first.line
                ),
                "merge both into one",
            );
            return false;
        }
        seen.push((name, el.span));
        true
    }

    /// A path: text, or ProActive's `<absolutePath value>` / `<relativePath origin value>`.
    pub(crate) fn path(&mut self, el: &Element) -> Option<String> {
        let what = format!("<{}>", el.name);
        if el.children.is_empty() {
            let v = self.text(el)?;
            return self.checked(v, &what, Rule::OneLine).map(|v| v.text);
        }
        let node = self.open(el);
        self.close(node);
        self.no_text(el);
        let mut out = None;
        for child in &el.children {
            match child.name.as_str() {
                "absolutePath" => {
                    out = self
                        .value_of(child)
                        .and_then(|v| self.checked(v, &what, Rule::OneLine))
                        .map(|v| v.text);
                }
                "relativePath" => {
                    let mut node = self.open(child);
                    let origin = self.attr(&mut node, "origin");
                    let value = self.required(&mut node, "value");
                    self.close(node);
                    let value = value.and_then(|v| self.checked(v, &what, Rule::OneLine));
                    let (Some(value), origin) = (value, origin) else {
                        continue;
                    };
                    out = match origin.as_ref().map(|o| o.text.as_str()) {
                        Some("user.home") => Some(format!("~/{}", value.text)),
                        Some("user.dir") | None => Some(value.text),
                        Some(other) => {
                            let span = origin.as_ref().map_or(child.span, |o| o.span);
                            self.error(
                                "bad-value",
                                span,
                                format!("relativePath origin `{other}` is not supported"),
                                "use user.home or user.dir",
                            );
                            None
                        }
                    };
                }
                _ => self.unknown_child(child, el, &["absolutePath", "relativePath"]),
            }
        }
        out
    }
}

const JAVA_ONLY_WHY: &str = "actogrid runtimes are native processes: Java settings have no effect";

/// Every `id` and `name` written in `el` and below.
fn defined_names(el: &Element, out: &mut Vec<String>) {
    out.extend(
        el.attrs
            .iter()
            .filter(|a| a.name == "id" || a.name == "name")
            .map(|a| a.value.clone()),
    );
    for child in &el.children {
        defined_names(child, out);
    }
}

/// Directory that relative include paths are resolved against.
pub(crate) fn base_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn suggestions_catch_typos_only() {
        let known = ["jvmProcess", "sshProcess", "processList"];
        assert_eq!(suggest("jvmProces", &known), Some("jvmProcess"));
        assert_eq!(suggest("SSHProcess", &known), Some("sshProcess"));
        assert_eq!(suggest("banana", &known), None);
    }
}

mod components;
mod deployment;
mod document;
mod infrastructure;
mod processes;
mod variables;

pub(crate) use document::document;
pub(crate) use variables::collect as collect_variables;
