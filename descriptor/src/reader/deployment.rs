//! `deployment`: register, mapping, lookup, jvms.

use super::{Cx, Rule, Val};
use crate::model::{Descriptor, Jvm, Lookup, Mapping, Register, RuntimeSource};
use crate::scalar;
use crate::xml::Element;

const PROTOCOL_IGNORED: &str = "actogrid always speaks its own gRPC protocol";

pub(crate) fn read(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    cx.container(el);
    for child in &el.children {
        match child.name.as_str() {
            "register" => {
                let mut node = cx.open(child);
                let vn = cx.required(&mut node, "virtualNode");
                cx.ignored(&mut node, "protocol", PROTOCOL_IGNORED);
                cx.close(node);
                cx.no_children(child);
                d.registers.extend(vn.map(|v| Register {
                    virtual_node: v.spanned(),
                }));
            }
            "mapping" => mapping(cx, child, d),
            "lookup" => {
                let mut node = cx.open(child);
                let vn = cx.required(&mut node, "virtualNode");
                let host = cx.attr(&mut node, "host");
                // `*` leaves the value to the program, for the port as for the host.
                let port = cx
                    .attr(&mut node, "port")
                    .filter(|p| !p.text.is_empty() && p.text != "*")
                    .and_then(|v| cx.parse(&v, "port", scalar::port));
                cx.ignored(&mut node, "protocol", PROTOCOL_IGNORED);
                cx.close(node);
                cx.no_children(child);
                let host = host
                    .filter(|h| !h.text.is_empty() && h.text != "*")
                    .and_then(|h| cx.checked(h, "host", Rule::Host));
                if let Some(vn) = vn {
                    let host = host.map(|h| h.text);
                    d.lookups.push(Lookup {
                        virtual_node: vn.spanned(),
                        host,
                        port,
                    });
                }
            }
            "jvms" => {
                cx.container(child);
                for jvm_el in &child.children {
                    if jvm_el.name == "jvm" {
                        jvm(cx, jvm_el, d);
                    } else {
                        cx.unknown_child(jvm_el, child, &["jvm"]);
                    }
                }
            }
            _ => cx.unknown_child(child, el, &["register", "mapping", "lookup", "jvms"]),
        }
    }
}

fn mapping(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    cx.container(el);
    for map in &el.children {
        if map.name != "map" {
            cx.unknown_child(map, el, &["map"]);
            continue;
        }
        let mut node = cx.open(map);
        let vn = cx.required(&mut node, "virtualNode");
        cx.close(node);
        cx.no_text(map);
        let mut mapping = Mapping {
            virtual_node: vn
                .clone()
                .map(Val::spanned)
                .unwrap_or_else(|| crate::source::Spanned::new(String::new(), map.span)),
            current_jvm: None,
            jvms: Vec::new(),
        };
        let mut seen_set = false;
        for set in &map.children {
            if set.name != "jvmSet" {
                cx.unknown_child(set, map, &["jvmSet"]);
                continue;
            }
            if seen_set {
                cx.error(
                    "duplicate-element",
                    set.span,
                    "<map> has a second <jvmSet>",
                    "put every vmName in one jvmSet",
                );
            }
            seen_set = true;
            cx.container(set);
            for entry in &set.children {
                match entry.name.as_str() {
                    "currentJVM" => {
                        let mut node = cx.open(entry);
                        cx.ignored(&mut node, "protocol", PROTOCOL_IGNORED);
                        cx.close(node);
                        cx.no_children(entry);
                        if let Some(first) = mapping.current_jvm {
                            cx.error(
                                "duplicate-element",
                                entry.span,
                                format!("<currentJVM> appears twice in this jvmSet (first at line {})", first.line),
                                "the application's own process is one runtime: keep one <currentJVM>",
                            );
                        }
                        mapping.current_jvm = Some(entry.span);
                    }
                    "vmName" | "vnName" => {
                        if entry.name == "vnName" {
                            cx.warning(
                                "misspelled-element",
                                entry.span,
                                "<vnName> is read as <vmName>",
                                "write <vmName value=\"…\"/>",
                            );
                        }
                        if let Some(v) = cx.value_of(entry) {
                            if let Some(first) = mapping.jvms.iter().find(|j| j.value == v.text) {
                                let line = first.span.line;
                                cx.error(
                                    "duplicate-id",
                                    v.span,
                                    format!("runtime `{}` is listed twice in this jvmSet (first at line {line})", v.text),
                                    "list each runtime once; use askedNodes for more nodes per runtime",
                                );
                            } else {
                                mapping.jvms.push(v.spanned());
                            }
                        }
                    }
                    _ => cx.unknown_child(entry, set, &["currentJVM", "vmName"]),
                }
            }
        }
        if !seen_set {
            cx.error(
                "missing-element",
                map.span,
                "<map> has no <jvmSet>",
                "add <jvmSet><vmName value=\"…\"/></jvmSet>",
            );
        }
        if vn.is_some() {
            d.mappings.push(mapping);
        }
    }
}

fn jvm(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    let mut node = cx.open(el);
    let name = cx.required(&mut node, "name");
    let asked = cx
        .attr(&mut node, "askedNodes")
        .and_then(|v| cx.parse(&v, "askedNodes", scalar::positive));
    let runtimes = cx
        .attr(&mut node, "runtimes")
        .and_then(|v| cx.parse(&v, "runtimes", scalar::positive));
    cx.close(node);
    cx.no_text(el);
    let mut source: Option<RuntimeSource> = None;
    let mut first: Option<&Element> = None;
    let mut unknown = false;
    for child in &el.children {
        let found = match child.name.as_str() {
            "creation" => {
                one_reference(cx, child, &["processReference"]).map(RuntimeSource::Creation)
            }
            "acquisition" => one_reference(
                cx,
                child,
                &[
                    "serviceReference",
                    "acquisitionReference",
                    "aquisitionReference",
                ],
            )
            .map(RuntimeSource::Acquisition),
            _ => {
                cx.unknown_child(child, el, &["creation", "acquisition"]);
                unknown = true;
                continue;
            }
        };
        if let Some(previous) = first {
            cx.error(
                "conflicting-elements",
                child.span,
                format!("<jvm> has both <{}> and <{}>", previous.name, child.name),
                "a runtime is either created by a process or acquired from a service, not both",
            );
            continue;
        }
        first = Some(child);
        source = found;
    }
    let Some(name) = name else { return };
    match source {
        Some(source) => d.jvms.push(Jvm {
            name: name.spanned(),
            asked_nodes: asked.unwrap_or(1),
            runtimes: runtimes.unwrap_or(1),
            source,
        }),
        None => {
            // A misspelled <creation> has been reported: saying that the
            // runtime has no source would report the same mistake twice.
            if first.is_none() && !unknown {
                cx.error(
                    "missing-element",
                    el.span,
                    format!("runtime `{}` says neither how to create nor how to acquire it", name.text),
                    "add <creation><processReference refid=\"…\"/></creation> or <acquisition><serviceReference refid=\"…\"/></acquisition>",
                );
            }
            // Already reported: its vmNames are not unresolved on top of it.
            d.rejected_ids.push(name.text);
        }
    }
}

/// `<creation>` / `<acquisition>`: exactly one reference element.
fn one_reference(
    cx: &mut Cx<'_>,
    el: &Element,
    names: &[&'static str],
) -> Option<crate::source::Spanned<String>> {
    cx.container(el);
    let mut out = None;
    for child in &el.children {
        if !names.contains(&child.name.as_str()) {
            cx.unknown_child(child, el, &names[..1]);
            continue;
        }
        if child.name == "aquisitionReference" {
            cx.warning(
                "misspelled-element",
                child.span,
                "<aquisitionReference> is read as <acquisitionReference>",
                "write <serviceReference refid=\"…\"/>",
            );
        }
        if out.is_some() {
            cx.error(
                "duplicate-element",
                child.span,
                format!("<{}> holds more than one reference", el.name),
                "keep exactly one",
            );
            continue;
        }
        out = cx.refid(child);
    }
    if out.is_none() && !el.children.iter().any(|c| names.contains(&c.name.as_str())) {
        cx.error(
            "missing-element",
            el.span,
            format!("<{}> holds no <{}>", el.name, names[0]),
            format!("add <{} refid=\"…\"/>", names[0]),
        );
    }
    out
}
