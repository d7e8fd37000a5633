//! A small element tree with positions, built with quick-xml's pull parser.
//!
//! serde-derived XML readers lose positions; diagnostics need them for every
//! element, attribute and value. This module reads the document once into a
//! tree whose every node knows its span, and the reader walks that tree.
//! Element and attribute names are kept as local names: a namespace prefix
//! (`pa:jvm`, the 3.3 namespace) does not change the meaning.
//!
//! Nesting is bounded by [`MAX_DEPTH`]: the tree, and every walk over it,
//! is recursive, and a file nested a hundred thousand levels deep must be
//! an error with a position, not a stack overflow.

use quick_xml::Reader;
use quick_xml::errors::{Error, IllFormedError};
use quick_xml::escape::EscapeError;
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};

use crate::diagnostic::Diagnostic;
use crate::source::{FileId, SourceMap, Span};

/// Deepest element nesting a descriptor (or a file it includes) may have;
/// real descriptors stay under ten levels.
pub const MAX_DEPTH: usize = 100;

/// An element with its attributes, children and text.
#[derive(Debug, Clone)]
pub(crate) struct Element {
    /// Local name (prefix removed).
    pub(crate) name: String,
    /// The name in the start tag.
    pub(crate) span: Span,
    pub(crate) attrs: Vec<Attr>,
    pub(crate) children: Vec<Element>,
    /// Text and CDATA content, concatenated and unescaped.
    pub(crate) text: String,
    /// The first non-blank text, if any.
    pub(crate) text_span: Option<Span>,
}

/// One attribute.
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    /// Qualified name as written (`xsi:noNamespaceSchemaLocation`).
    pub(crate) qname: String,
    /// Local name.
    pub(crate) name: String,
    pub(crate) span: Span,
    /// Unescaped value.
    pub(crate) value: String,
    /// The value between the quotes.
    pub(crate) value_span: Span,
}

impl Element {
    pub(crate) fn trimmed_text(&self) -> &str {
        self.text.trim()
    }
}

/// Parses `file` of `sources` into its root element.
pub(crate) fn parse(sources: &SourceMap, file: FileId) -> Result<Element, Diagnostic> {
    let text = sources.file(file).shared_text();
    let text: &str = &text;
    let base = text.as_ptr() as usize;
    let span = |start: usize, end: usize| sources.span(file, start, end);
    // Position of a slice borrowed from `text`, if it is one.
    let offset_of = |bytes: &[u8]| {
        let start = (bytes.as_ptr() as usize).checked_sub(base)?;
        (start + bytes.len() <= text.len()).then_some(start)
    };

    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| {
            let at = (reader.error_position() as usize).min(text.len());
            // The mistake is often at the start tag (`<vmName value="a">`
            // written for `/>`): say where it is.
            let opened = match (&e, stack.last()) {
                (Error::IllFormed(IllFormedError::MismatchedEndTag { .. }), Some(open)) => {
                    format!("; <{}> was opened at line {}", open.name, open.span.line)
                }
                _ => String::new(),
            };
            Diagnostic::error(
                "xml-syntax",
                span(at, at + 1),
                format!("the file is not well-formed XML: {e}{opened}"),
            )
            .with_hint("fix the XML syntax first; nothing else is checked until the file parses")
        })?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() && stack.is_empty() => {
                let at = before + 1;
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                return Err(Diagnostic::error(
                    "xml-syntax",
                    span(at, at + name.len()),
                    format!("a second root element <{name}> follows the document's root"),
                )
                .with_hint("a descriptor has exactly one root element, <ProActiveDescriptor>"));
            }
            Event::Start(start) | Event::Empty(start) if stack.len() >= MAX_DEPTH => {
                let at = before + 1;
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                return Err(Diagnostic::error(
                    "too-deep",
                    span(at, at + name.len()),
                    format!("<{name}> is nested more than {MAX_DEPTH} elements deep"),
                )
                .with_hint(format!(
                    "a descriptor nests at most {MAX_DEPTH} elements; look for elements that are opened but never closed"
                )));
            }
            Event::Start(start) => {
                stack.push(element(&start, before, &span, &offset_of)?);
            }
            Event::Empty(start) => {
                let el = element(&start, before, &span, &offset_of)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                // check_end_names guarantees a matching start.
                let Some(el) = stack.pop() else { continue };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let raw = String::from_utf8_lossy(&t).into_owned();
                let value = t.unescape().map_err(|e| {
                    let (at, what) = escape_problem(&e);
                    Diagnostic::error(
                        "xml-syntax",
                        span(before + at, before + at + 1),
                        format!("bad escape in text: {what}"),
                    )
                    .with_hint("write & as &amp; and < as &lt;")
                })?;
                let Some(parent) = stack.last_mut() else {
                    if !value.trim().is_empty() {
                        let lead = raw.len() - raw.trim_start().len();
                        return Err(Diagnostic::error(
                            "xml-syntax",
                            span(before + lead, before + raw.trim_end().len()),
                            "text outside the root element",
                        )
                        .with_hint("remove it: everything goes inside the root element"));
                    }
                    continue;
                };
                if parent.text_span.is_none() && !raw.trim().is_empty() {
                    let lead = raw.len() - raw.trim_start().len();
                    parent.text_span = Some(span(before + lead, before + raw.trim_end().len()));
                }
                parent.text.push_str(&value);
            }
            Event::CData(c) => {
                if let Some(parent) = stack.last_mut() {
                    let value = String::from_utf8_lossy(&c);
                    if parent.text_span.is_none() && !value.trim().is_empty() {
                        parent.text_span = Some(span(before, reader.buffer_position() as usize));
                    }
                    parent.text.push_str(&value);
                }
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(Diagnostic::error(
            "xml-syntax",
            open.span,
            format!("<{}> is never closed", open.name),
        )
        .with_hint(format!("add </{}> (or end the tag with />)", open.name)));
    }
    root.ok_or_else(|| {
        Diagnostic::error("xml-syntax", span(0, 0), "the file holds no XML element")
            .with_hint("a descriptor starts with <ProActiveDescriptor>")
    })
}

/// Where an escape error is in the escaped text, and what it is in words:
/// quick-xml's own message gives byte ranges.
fn escape_problem(e: &Error) -> (usize, String) {
    match e {
        Error::Escape(EscapeError::UnterminatedEntity(range)) => (
            range.start,
            "`&` starts an entity reference that no `;` ends".to_owned(),
        ),
        Error::Escape(EscapeError::UnrecognizedEntity(range, name)) => (
            range.start.saturating_sub(1),
            format!("`&{name};` is not an XML entity"),
        ),
        other => (0, other.to_string()),
    }
}

fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, local)) => local.to_owned(),
        None => name.into_owned(),
    }
}

fn element(
    start: &BytesStart<'_>,
    before: usize,
    span: &impl Fn(usize, usize) -> Span,
    offset_of: &impl Fn(&[u8]) -> Option<usize>,
) -> Result<Element, Diagnostic> {
    let qname = start.name();
    let name_start = before + 1;
    let tag_span = span(name_start, name_start + qname.as_ref().len());
    let mut attrs = Vec::new();
    for attr in start.attributes().with_checks(true) {
        let attr = attr.map_err(|e| {
            // quick-xml counts positions from the tag name; a person needs
            // the line and column of the attribute, and its name.
            let tag = local(qname.as_ref());
            let at = |pos: usize| span(name_start + pos, name_start + pos + 1);
            let name_at = |pos: usize| {
                let rest = start.get(pos..).unwrap_or_default();
                let len = rest
                    .iter()
                    .position(|b| *b == b'=' || b.is_ascii_whitespace())
                    .unwrap_or(rest.len());
                String::from_utf8_lossy(&rest[..len]).into_owned()
            };
            let (span, message) = match e {
                AttrError::Duplicated(pos, first) => (
                    at(pos),
                    format!(
                        "attribute `{}` is written twice in <{tag}> (first at line {}, column {})",
                        name_at(pos),
                        at(first).line,
                        at(first).col
                    ),
                ),
                AttrError::ExpectedEq(pos)
                | AttrError::ExpectedValue(pos)
                | AttrError::UnquotedValue(pos)
                | AttrError::ExpectedQuote(pos, _) => {
                    let what = e.to_string();
                    let what = what.split_once(": ").map_or(what.as_str(), |(_, w)| w);
                    (at(pos), format!("bad attribute in <{tag}>: {what}"))
                }
            };
            Diagnostic::error("xml-syntax", span, message)
                .with_hint("attributes are written name=\"value\", each name once")
        })?;
        let key = attr.key.as_ref();
        let key_at = offset_of(key).unwrap_or(name_start);
        let value_at = offset_of(&attr.value).unwrap_or(key_at);
        let value_span = span(value_at, value_at + attr.value.len());
        let value = attr.unescape_value().map_err(|e| {
            let (at, what) = escape_problem(&e);
            Diagnostic::error(
                "xml-syntax",
                span(value_at + at, value_at + at + 1),
                format!("bad escape in attribute value: {what}"),
            )
            .with_hint("write & as &amp;, < as &lt; and \" as &quot;")
        })?;
        attrs.push(Attr {
            qname: String::from_utf8_lossy(key).into_owned(),
            name: local(key),
            span: span(key_at, value_at + attr.value.len() + 1),
            value: value.into_owned(),
            value_span,
        });
    }
    Ok(Element {
        name: local(qname.as_ref()),
        span: tag_span,
        attrs,
        children: Vec::new(),
        text: String::new(),
        text_span: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Result<Element, Diagnostic> {
        let mut sources = SourceMap::default();
        let id = sources.add("t.xml".into(), text);
        parse(&sources, id)
    }

    #[test]
    fn keeps_positions_of_elements_attributes_and_text() {
        let root = tree("<a>\n  <b x=\"1&amp;2\" pa:y='z'/>\n  <c> hi </c>\n</a>").expect("parses");
        let b = &root.children[0];
        assert_eq!((b.span.line, b.span.col), (2, 4));
        assert_eq!(b.attrs[0].value, "1&2");
        assert_eq!(
            (b.attrs[0].value_span.line, b.attrs[0].value_span.col),
            (2, 9)
        );
        assert_eq!(b.attrs[1].name, "y");
        let c = &root.children[1];
        assert_eq!(c.trimmed_text(), "hi");
        let at = c.text_span.expect("text span");
        assert_eq!((at.line, at.col), (3, 7));
    }

    #[test]
    fn reports_syntax_errors_with_a_position() {
        let err = tree("<a>\n  <b>\n</a>").expect_err("mismatched");
        assert_eq!(err.code, "xml-syntax");
        assert_eq!(err.span.map(|s| s.line), Some(3));
        assert!(tree("").is_err());
        assert!(tree("<a/><b/>").is_err());
        assert!(tree("<a x='1' x='2'/>").is_err());
        assert!(tree("<a>").is_err());
    }
}
