//! The root element and the sections that are not big enough for a module
//! of their own: `mainDefinition`, `technicalServices`, `fileTransferDefinitions`.

use super::{Cx, Rule, Val, components, deployment, infrastructure};
use crate::model::{
    Arg, Descriptor, DirEntry, FileEntry, FileTransfer, MainDefinition, RuntimeSetting,
    TechnicalServiceDefinition,
};
use crate::xml::Element;

const ROOT_CHILDREN: &[&str] = &[
    "variables",
    "runtimeSettings",
    "security",
    "mainDefinition",
    "componentDefinition",
    "deployment",
    "fileTransferDefinitions",
    "infrastructure",
    "technicalServices",
    "technicalServiceDefinitions",
];

/// Reads a whole `<ProActiveDescriptor>` (its variables already resolved).
pub(crate) fn document(cx: &mut Cx<'_>, root: &Element) -> Descriptor {
    let mut d = Descriptor::default();
    cx.container(root);
    let mut seen = Vec::new();
    for child in &root.children {
        match child.name.as_str() {
            "variables" => {
                cx.once(&mut seen, "variables", child);
            }
            "runtimeSettings" => {
                if cx.once(&mut seen, "runtimeSettings", child) {
                    runtime_settings(cx, child, &mut d);
                }
            }
            "security" => cx.ignored_element(
                child,
                "ProActive security policies are not read; secure the transport with the deployment's TLS settings",
            ),
            "mainDefinition" => main_definition(cx, child, &mut d),
            "componentDefinition" => {
                if cx.once(&mut seen, "componentDefinition", child) {
                    components::read(cx, child, &mut d);
                }
            }
            "deployment" => {
                if cx.once(&mut seen, "deployment", child) {
                    deployment::read(cx, child, &mut d);
                }
            }
            "fileTransferDefinitions" => {
                if cx.once(&mut seen, "fileTransferDefinitions", child) {
                    file_transfers(cx, child, &mut d);
                }
            }
            "infrastructure" => {
                if cx.once(&mut seen, "infrastructure", child) {
                    infrastructure::read(cx, child, &mut d);
                }
            }
            "technicalServices" | "technicalServiceDefinitions" => technical_services(cx, child, &mut d),
            _ => cx.unknown_child(child, root, ROOT_CHILDREN),
        }
    }
    for required in ["componentDefinition", "deployment"] {
        if !seen.iter().any(|(name, _)| *name == required) {
            cx.error(
                "missing-element",
                root.span,
                format!("the descriptor has no <{required}>"),
                if required == "componentDefinition" {
                    "declare the virtual nodes in <componentDefinition><virtualNodesDefinition>"
                } else {
                    "map the virtual nodes to runtimes in <deployment><mapping>"
                },
            );
        }
    }
    cx.finish();
    d.rejected_ids.append(&mut cx.rejected_ids);
    d.reindex();
    d
}

/// `runtimeSettings`: `<setting name="heartbeatTimeout" value="30s"/>`.
/// Names compare as the runtime compares them (without case, `_` or `-`),
/// so `heartbeatTimeout` and `heartbeat_timeout` are one setting given twice.
fn runtime_settings(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    cx.container(el);
    let key = |name: &str| -> String {
        name.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    for child in &el.children {
        if child.name != "setting" {
            cx.unknown_child(child, el, &["setting"]);
            continue;
        }
        let mut node = cx.open(child);
        let name = cx
            .required(&mut node, "name")
            .and_then(|v| cx.checked(v, "setting name", Rule::OneLine));
        let value = cx
            .required(&mut node, "value")
            .and_then(|v| cx.checked(v, "setting value", Rule::OneLine));
        cx.close(node);
        cx.no_children(child);
        let (Some(name), Some(value)) = (name, value) else {
            continue;
        };
        if let Some(first) = d
            .runtime_settings
            .iter()
            .find(|s| key(&s.name) == key(&name.text))
        {
            let line = first.name.span.line;
            cx.error(
                "duplicate-id",
                name.span,
                format!(
                    "runtime setting `{}` is given twice (first as `{}` at line {line})",
                    name.text, first.name.value
                ),
                "give each setting once",
            );
            continue;
        }
        d.runtime_settings.push(RuntimeSetting {
            name: name.spanned(),
            value: value.spanned(),
        });
    }
}

fn main_definition(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    let mut node = cx.open(el);
    let id = cx.required(&mut node, "id");
    let class = cx.required(&mut node, "class");
    cx.close(node);
    cx.no_text(el);
    let mut args = Vec::new();
    let mut virtual_nodes = Vec::new();
    for child in &el.children {
        match child.name.as_str() {
            "arg" => args.extend(cx.value_of(child).map(|v| v.text)),
            "mapToVirtualNode" => virtual_nodes.extend(cx.value_of(child).map(Val::spanned)),
            "classpath" => cx.java_only(child),
            _ => cx.unknown_child(child, el, &["arg", "mapToVirtualNode", "classpath"]),
        }
    }
    if let (Some(id), Some(class)) = (id, class) {
        d.main_definitions.push(MainDefinition {
            id: id.spanned(),
            class: class.text,
            args,
            virtual_nodes,
        });
    }
}

fn technical_services(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    cx.container(el);
    // ProActive 3.2 writes <technicalServiceDefinition>; the slides write <service>.
    let expected = if el.name == "technicalServices" {
        "technicalServiceDefinition"
    } else {
        "service"
    };
    for child in &el.children {
        if child.name != expected {
            cx.unknown_child(child, el, &[expected]);
            continue;
        }
        let mut node = cx.open(child);
        let id = cx.required(&mut node, "id");
        let class = cx.required(&mut node, "class");
        cx.close(node);
        cx.no_text(child);
        let mut args: Vec<Arg> = Vec::new();
        for arg in &child.children {
            if arg.name != "arg" {
                cx.unknown_child(arg, child, &["arg"]);
                continue;
            }
            let mut node = cx.open(arg);
            let name = cx
                .required(&mut node, "name")
                .and_then(|n| cx.checked(n, "argument name", Rule::OneLine));
            let value = cx.attr(&mut node, "value");
            cx.close(node);
            cx.no_children(arg);
            let Some(name) = name else { continue };
            if args.iter().any(|a| a.name == name.text) {
                cx.error(
                    "duplicate-id",
                    name.span,
                    format!("argument `{}` is given twice", name.text),
                    "keep one value per argument",
                );
                continue;
            }
            args.push(Arg {
                name: name.text,
                value: value.map(|v| v.text).unwrap_or_default(),
                at: arg.span,
            });
        }
        if let (Some(id), Some(class)) = (id, class) {
            d.technical_services.push(TechnicalServiceDefinition {
                id: id.spanned(),
                class: class.spanned(),
                args,
            });
        }
    }
}

fn file_transfers(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    cx.container(el);
    for child in &el.children {
        if child.name != "fileTransfer" {
            cx.unknown_child(child, el, &["fileTransfer"]);
            continue;
        }
        let mut node = cx.open(child);
        let id = cx.required(&mut node, "id");
        cx.close(node);
        cx.no_text(child);
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        for entry in &child.children {
            let mut node = cx.open(entry);
            match entry.name.as_str() {
                "file" => {
                    let src = cx
                        .required(&mut node, "src")
                        .and_then(|v| cx.checked(v, "src", Rule::OneLine));
                    let dest = cx
                        .attr(&mut node, "dest")
                        .and_then(|v| cx.checked(v, "dest", Rule::OneLine));
                    cx.close(node);
                    cx.no_children(entry);
                    if let Some(src) = src {
                        let dest = dest
                            .filter(|d| !d.text.is_empty())
                            .map_or_else(|| src.text.clone(), |d| d.text);
                        files.push(FileEntry {
                            src: src.text,
                            dest,
                        });
                    }
                }
                "dir" => {
                    let src = cx
                        .required(&mut node, "src")
                        .and_then(|v| cx.checked(v, "src", Rule::OneLine));
                    let dest = cx
                        .attr(&mut node, "dest")
                        .and_then(|v| cx.checked(v, "dest", Rule::OneLine));
                    let includes = cx.attr(&mut node, "includes");
                    let excludes = cx.attr(&mut node, "excludes");
                    cx.close(node);
                    cx.no_children(entry);
                    let patterns = |v: Option<Val>| -> Vec<String> {
                        v.map(|v| {
                            v.text
                                .split([',', ' '])
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default()
                    };
                    if let Some(src) = src {
                        let dest = dest
                            .filter(|d| !d.text.is_empty())
                            .map_or_else(|| src.text.clone(), |d| d.text);
                        dirs.push(DirEntry {
                            src: src.text,
                            dest,
                            includes: patterns(includes),
                            excludes: patterns(excludes),
                        });
                    }
                }
                _ => {
                    drop(node);
                    cx.unknown_child(entry, child, &["file", "dir"]);
                }
            }
        }
        if let Some(id) = id {
            d.file_transfers.push(FileTransfer {
                id: id.spanned(),
                files,
                dirs,
            });
        }
    }
}
