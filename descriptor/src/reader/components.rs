//! `componentDefinition`: the virtual nodes.

use super::{Cx, Val};
use crate::model::{AcquiredVirtualNode, DEFAULT_VN_TIMEOUT, Descriptor, VirtualNode, VnProperty};
use crate::scalar::{self, Unit};
use crate::source::Spanned;
use crate::xml::Element;

pub(crate) fn read(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    cx.container(el);
    for child in &el.children {
        match child.name.as_str() {
            "virtualNodesDefinition" => each_vn(cx, child, |cx, vn| virtual_node(cx, vn, d)),
            "virtualNodesAcquisition" => each_vn(cx, child, |cx, vn| acquired(cx, vn, d)),
            _ => cx.unknown_child(
                child,
                el,
                &["virtualNodesDefinition", "virtualNodesAcquisition"],
            ),
        }
    }
}

fn each_vn(cx: &mut Cx<'_>, el: &Element, mut f: impl FnMut(&mut Cx<'_>, &Element)) {
    cx.container(el);
    for child in &el.children {
        if child.name == "virtualNode" {
            f(cx, child);
        } else {
            cx.unknown_child(child, el, &["virtualNode"]);
        }
    }
}

/// Splits a whitespace-separated list of ids, each with its own span when it
/// can be found in the source.
pub(super) fn id_list(cx: &Cx<'_>, val: &Val) -> Vec<Spanned<String>> {
    let source = cx
        .sources
        .file(val.span.file)
        .text()
        .get(val.span.start..val.span.end)
        .unwrap_or("");
    let mut from = 0;
    val.text
        .split_whitespace()
        .map(|id| {
            let span = match source[from..].find(id) {
                Some(i) => {
                    let start = val.span.start + from + i;
                    from += i + id.len();
                    cx.sources.span(val.span.file, start, start + id.len())
                }
                None => val.span,
            };
            Spanned::new(id.to_owned(), span)
        })
        .collect()
}

fn information(cx: &mut Cx<'_>, el: &Element) -> Option<String> {
    let mut info = None;
    for child in &el.children {
        if child.name == "information" {
            let node = cx.open(child);
            cx.close(node);
            info = Some(child.trimmed_text().to_owned());
        } else {
            cx.unknown_child(child, el, &["information"]);
        }
    }
    cx.no_text(el);
    info
}

fn virtual_node(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    let mut node = cx.open(el);
    let name = cx.required(&mut node, "name");
    let property = cx.attr(&mut node, "property").and_then(|v| {
        cx.parse(&v, "property", |t| match t {
            "unique" => Ok(VnProperty::Unique),
            "unique_singleAO" => Ok(VnProperty::UniqueSingleAo),
            "multiple" => Ok(VnProperty::Multiple),
            "multiple_cyclic" => Ok(VnProperty::MultipleCyclic),
            _ => Err(format!(
                "`{t}` is not one of unique, unique_singleAO, multiple, multiple_cyclic"
            )),
        })
    });
    let timeout = timeout(cx, &mut node);
    let wait_for_timeout = cx
        .attr(&mut node, "waitForTimeout")
        .and_then(|v| cx.parse(&v, "waitForTimeout", scalar::boolean));
    let min_node_number = min_node_number(cx, &mut node);
    let technical_services = cx
        .attr_alias(&mut node, &["technicalServiceId", "serviceRefid"])
        .map(|v| id_list(cx, &v))
        .unwrap_or_default();
    let ft_service = cx
        .attr(&mut node, "ftServiceId")
        .filter(|v| !v.text.is_empty())
        .map(Val::spanned);
    let file_transfer_deploy = cx
        .attr(&mut node, "fileTransferDeploy")
        .filter(|v| !v.text.is_empty())
        .map(Val::spanned);
    let file_transfer_retrieve = cx
        .attr(&mut node, "fileTransferRetrieve")
        .filter(|v| !v.text.is_empty())
        .map(Val::spanned);
    cx.close(node);
    let information = information(cx, el);
    let Some(name) = name else { return };
    d.virtual_nodes.push(VirtualNode {
        name: name.spanned(),
        property: property.unwrap_or_default(),
        timeout: timeout.unwrap_or(DEFAULT_VN_TIMEOUT),
        wait_for_timeout: wait_for_timeout.unwrap_or(false),
        min_node_number,
        technical_services,
        ft_service,
        file_transfer_deploy,
        file_transfer_retrieve,
        information,
    });
}

fn acquired(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    let mut node = cx.open(el);
    let name = cx.required(&mut node, "name");
    let timeout = timeout(cx, &mut node);
    let min_node_number = min_node_number(cx, &mut node);
    cx.close(node);
    let information = information(cx, el);
    if let Some(name) = name {
        d.acquired_virtual_nodes.push(AcquiredVirtualNode {
            name: name.spanned(),
            timeout: timeout.unwrap_or(DEFAULT_VN_TIMEOUT),
            min_node_number,
            information,
        });
    }
}

/// `@timeout` of a virtual node (defined or acquired).
fn timeout(cx: &mut Cx<'_>, node: &mut super::Node<'_>) -> Option<std::time::Duration> {
    cx.attr(node, "timeout")
        .and_then(|v| cx.parse(&v, "timeout", |t| scalar::duration(t, Unit::Millis)))
}

/// `@minNodeNumber` of a virtual node (defined or acquired).
fn min_node_number(cx: &mut Cx<'_>, node: &mut super::Node<'_>) -> Option<u32> {
    cx.attr(node, "minNodeNumber")
        .and_then(|v| cx.parse(&v, "minNodeNumber", scalar::positive))
}
