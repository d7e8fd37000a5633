//! `<variables>` and the files it includes, read before anything else
//! because every other value may use them.

use std::path::{Path, PathBuf};

use super::{Cx, base_dir};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::VariableKind;
use crate::source::{FileId, SourceMap, Spanned};
use crate::variables::{Declaration, kind_from_element, parse_properties};
use crate::xml::{self, Element};

const MAX_INCLUDE_DEPTH: usize = 16;

const CHILDREN: &[&str] = &[
    "descriptorVariable",
    "programVariable",
    "descriptorDefaultVariable",
    "programDefaultVariable",
    "javaPropertyVariable",
    "javaPropertyDescriptorDefault",
    "javaPropertyProgramDefault",
    "includeXMLFile",
    "includePropertyFile",
];

/// Reads the `variables` block of `root` (a descriptor) and its includes.
pub(crate) fn collect(
    sources: &mut SourceMap,
    root: &Element,
    path: &Path,
    diags: &mut Diagnostics,
) -> Vec<Declaration> {
    let mut out = Vec::new();
    let mut stack = vec![canonical(path)];
    if let Some(block) = root.children.iter().find(|c| c.name == "variables") {
        block_declarations(sources, block, path, diags, &mut stack, &mut out);
    }
    out
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

fn block_declarations(
    sources: &mut SourceMap,
    block: &Element,
    path: &Path,
    diags: &mut Diagnostics,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<Declaration>,
) {
    {
        let mut cx = Cx::new(sources, None, diags, false);
        cx.container(block);
    }
    for child in &block.children {
        if let Some(kind) = kind_from_element(&child.name) {
            let mut cx = Cx::new(sources, None, diags, false);
            let mut node = cx.open(child);
            let name = cx.required(&mut node, "name");
            let value = cx.attr(&mut node, "value");
            cx.close(node);
            cx.no_children(child);
            let Some(name) = name else { continue };
            if !name
                .text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                cx.error(
                    "bad-value",
                    name.span,
                    format!("`{}` is not a variable name", name.text),
                    "variable names use letters, digits, `.`, `_` and `-`",
                );
                continue;
            }
            out.push(Declaration {
                name: name.spanned(),
                kind,
                value: value
                    .filter(|v| !v.text.is_empty())
                    .map(|v| (v.text, v.span)),
            });
            continue;
        }
        match child.name.as_str() {
            "includeXMLFile" | "includePropertyFile" => {
                let location = {
                    let mut cx = Cx::new(sources, None, diags, false);
                    let mut node = cx.open(child);
                    let location = cx.required(&mut node, "location");
                    cx.close(node);
                    cx.no_children(child);
                    location
                };
                let Some(location) = location else { continue };
                let target = base_dir(path).join(&location.text);
                if stack.len() > MAX_INCLUDE_DEPTH || stack.contains(&canonical(&target)) {
                    diags.push(
                        Diagnostic::error(
                            "include-cycle",
                            location.span,
                            format!(
                                "`{}` is already being included: the includes form a cycle",
                                location.text
                            ),
                        )
                        .with_hint("remove one of the includes"),
                    );
                    continue;
                }
                let text = match crate::source::read_text(&target) {
                    Ok(text) => text,
                    Err(e) => {
                        diags.push(
                            Diagnostic::error(
                                "include-unreadable",
                                location.span,
                                format!("cannot read `{}`: {e}", target.display()),
                            )
                            .with_hint("the location is relative to the file that includes it"),
                        );
                        continue;
                    }
                };
                let file = sources.add(target.clone(), text);
                stack.push(canonical(&target));
                if child.name == "includeXMLFile" {
                    include_xml(sources, file, &target, diags, stack, out);
                } else {
                    include_properties(sources, file, out);
                }
                stack.pop();
            }
            _ => {
                let mut cx = Cx::new(sources, None, diags, false);
                cx.unknown_child(child, block, CHILDREN);
            }
        }
    }
}

fn include_xml(
    sources: &mut SourceMap,
    file: FileId,
    path: &Path,
    diags: &mut Diagnostics,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<Declaration>,
) {
    let root = match xml::parse(sources, file) {
        Ok(root) => root,
        Err(d) => return diags.push(d),
    };
    let block = match root.name.as_str() {
        "variables" => Some(&root),
        "ProActiveDescriptor" => root.children.iter().find(|c| c.name == "variables"),
        _ => None,
    };
    match block {
        Some(block) => block_declarations(sources, block, path, diags, stack, out),
        None => diags.push(
            Diagnostic::error(
                "bad-include",
                root.span,
                format!(
                    "an included XML file must hold <variables>, not <{}>",
                    root.name
                ),
            )
            .with_hint("make <variables> the root of the included file"),
        ),
    }
}

fn include_properties(sources: &SourceMap, file: FileId, out: &mut Vec<Declaration>) {
    for (key, value, at) in parse_properties(sources.file(file).text()) {
        let name_span = sources.span(file, at, at + key.len());
        let value_span = match sources.file(file).text()[at..].find(value.as_str()) {
            Some(i) if !value.is_empty() => sources.span(file, at + i, at + i + value.len()),
            _ => name_span,
        };
        out.push(Declaration {
            name: Spanned::new(key, name_span),
            kind: VariableKind::DescriptorVariable,
            value: (!value.is_empty()).then_some((value, value_span)),
        });
    }
}
