//! `infrastructure`: process definitions and services.

use super::{Cx, Rule, Val, processes};
use crate::model::{
    Descriptor, FaultTolerance, FtProtocol, NodesAsked, P2pService, PeerAddress, RegistryLookup,
    ServiceDefinition, ServiceKind, Unsupported, p2p_defaults,
};
use crate::scalar::{self, Unit};
use crate::source::Spanned;
use crate::xml::Element;

pub(crate) fn read(cx: &mut Cx<'_>, el: &Element, d: &mut Descriptor) {
    cx.container(el);
    for child in &el.children {
        let (item, known): (&str, &[&'static str]) = match child.name.as_str() {
            "processes" => ("processDefinition", &["processDefinition"]),
            "services" => ("serviceDefinition", &["serviceDefinition"]),
            "acquisition" => ("acquisitionDefinition", &["acquisitionDefinition"]),
            _ => {
                cx.unknown_child(child, el, &["processes", "services", "acquisition"]);
                continue;
            }
        };
        cx.container(child);
        for definition in &child.children {
            if definition.name != item {
                cx.unknown_child(definition, child, known);
                continue;
            }
            let mut node = cx.open(definition);
            // Process ids name batch jobs and their files.
            let id = cx
                .required(&mut node, "id")
                .and_then(|v| cx.checked(v, "id", Rule::OneLine));
            cx.close(node);
            cx.no_text(definition);
            let Some(inner) = only_child(cx, definition) else {
                d.rejected_ids.extend(id.map(|id| id.text));
                continue;
            };
            let at = inner.span;
            let is_service = inner.name == "ProActiveScheduler";
            let unsupported = processes::unsupported(&inner.name)
                .filter(|_| is_service == (item != "processDefinition"));
            if let Some(hint) = unsupported {
                // Whether it matters depends on who uses it: validation decides.
                d.rejected_ids.extend(id.as_ref().map(|id| id.text.clone()));
                d.unsupported.push(Unsupported {
                    id: id.map(Val::spanned),
                    element: inner.name.clone(),
                    at,
                    hint,
                });
                continue;
            }
            if item == "processDefinition" {
                match (processes::read(cx, inner, definition), id) {
                    (Some(kind), Some(id)) => d.processes.push(crate::model::ProcessDefinition {
                        id: id.spanned(),
                        at,
                        kind,
                    }),
                    (None, Some(id)) => d.rejected_ids.push(id.text),
                    _ => {}
                }
            } else {
                match (service(cx, inner, definition), id) {
                    (Some(kind), Some(id)) => d.services.push(ServiceDefinition {
                        id: id.spanned(),
                        at,
                        kind,
                    }),
                    (None, Some(id)) => d.rejected_ids.push(id.text),
                    _ => {}
                }
            }
        }
    }
}

/// A definition holds exactly one element.
fn only_child<'e>(cx: &mut Cx<'_>, el: &'e Element) -> Option<&'e Element> {
    match el.children.as_slice() {
        [one] => Some(one),
        [] => {
            cx.error(
                "missing-element",
                el.span,
                format!("<{}> is empty", el.name),
                if el.name == "processDefinition" {
                    "put one process in it, such as <jvmProcess/> or <sshProcess hostname=\"…\">"
                } else {
                    "put one service in it, such as <P2PService nodesAsked=\"4\"/>"
                },
            );
            None
        }
        [first, second, ..] => {
            cx.error(
                "duplicate-element",
                second.span,
                format!(
                    "<{}> holds more than one element (<{}> then <{}>)",
                    el.name, first.name, second.name
                ),
                "one definition holds one process or service: give each its own id",
            );
            Some(first)
        }
    }
}

fn service(cx: &mut Cx<'_>, el: &Element, parent: &Element) -> Option<ServiceKind> {
    match el.name.as_str() {
        "P2PService" => p2p(cx, el).map(ServiceKind::P2p),
        "RMIRegistryLookup" => {
            let mut node = cx.open(el);
            let url = cx.required(&mut node, "url");
            cx.close(node);
            cx.no_children(el);
            let url = url?;
            let normalised = runtime_url(cx, &url.text, url.span)?;
            Some(ServiceKind::RegistryLookup(RegistryLookup {
                url: normalised,
            }))
        }
        "faultTolerance" => fault_tolerance(cx, el).map(ServiceKind::FaultTolerance),
        _ => {
            cx.unknown_child(
                el,
                parent,
                &["P2PService", "RMIRegistryLookup", "faultTolerance"],
            );
            None
        }
    }
}

/// `actogrid://host:port/name`, or the RMI forms ProActive descriptors
/// carry (warned, read as the actogrid URL they mean): `rmi://host:port/name`
/// and Java's scheme-less `//host:port/name`, where the port defaults to
/// RMI's registry port, [`RMI_REGISTRY_PORT`].
fn runtime_url(cx: &mut Cx<'_>, text: &str, span: crate::source::Span) -> Option<String> {
    const HINT: &str = "write actogrid://host:port/name";
    let (rest, rmi) = if let Some(rest) = text.strip_prefix("rmi://") {
        (rest, true)
    } else if let Some(rest) = text.strip_prefix("//") {
        (rest, true)
    } else if let Some(rest) = text.strip_prefix("actogrid://") {
        (rest, false)
    } else {
        cx.error(
            "bad-value",
            span,
            format!("`{text}` is not a runtime URL"),
            format!("{HINT} (or RMI's //host:port/name)"),
        );
        return None;
    };
    let (authority, name) = rest.split_once('/').unwrap_or((rest, ""));
    let parsed = if rmi {
        scalar::host_with_default_port(authority, RMI_REGISTRY_PORT)
    } else {
        scalar::host_port(authority)
    };
    let (host, port) = match parsed {
        Ok(address) => address,
        Err(message) => {
            cx.error("bad-value", span, format!("url: {message}"), HINT);
            return None;
        }
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("actogrid://{host}:{port}/{name}");
    if rmi {
        cx.warning(
            "rmi-url",
            span,
            format!("`{text}` is an RMI URL: read as {url}"),
            HINT,
        );
    }
    Some(url)
}

/// The port of a Java RMI registry, assumed by an RMI URL that names none.
pub(crate) const RMI_REGISTRY_PORT: u16 = 1099;

fn p2p(cx: &mut Cx<'_>, el: &Element) -> Option<P2pService> {
    const IGNORED: &str =
        "this ProActive tuning knob has no equivalent: the overlay sizes and transports itself";
    let mut node = cx.open(el);
    let present = el
        .attrs
        .iter()
        .any(|a| a.name == "nodesAsked" || a.name == "NodesAsked");
    let asked = cx.attr_alias(&mut node, &["nodesAsked", "NodesAsked"]);
    let nodes_asked = asked.as_ref().and_then(|v| {
        cx.parse(v, "nodesAsked", |t| {
            if t == "MAX" {
                Ok(NodesAsked::Max)
            } else {
                scalar::positive(t)
                    .map(NodesAsked::Count)
                    .map_err(|e| format!("{e} (or MAX)"))
            }
        })
    });
    let noa = cx
        .attr(&mut node, "NOA")
        .and_then(|v| cx.parse(&v, "NOA", scalar::positive));
    let ttu = cx
        .attr(&mut node, "TTU")
        .and_then(|v| cx.parse(&v, "TTU", |t| scalar::duration(t, Unit::Millis)));
    let ttl = cx
        .attr(&mut node, "TTL")
        .and_then(|v| cx.parse(&v, "TTL", scalar::positive));
    let port = cx
        .attr(&mut node, "port")
        .and_then(|v| cx.parse(&v, "port", scalar::port));
    for name in [
        "acq",
        "multi_proc_nodes",
        "xml_path",
        "node_family_regexp",
        "booking_nodes",
    ] {
        cx.ignored(&mut node, name, IGNORED);
    }
    cx.close(node);
    cx.no_text(el);
    if !present {
        cx.error(
            "missing-attribute",
            el.span,
            "<P2PService> needs the attribute `nodesAsked`",
            "add nodesAsked=\"4\" (a number) or nodesAsked=\"MAX\"",
        );
    }
    let mut peers = Vec::new();
    for child in &el.children {
        if child.name != "peerSet" {
            cx.unknown_child(child, el, &["peerSet"]);
            continue;
        }
        cx.container(child);
        for peer in &child.children {
            if peer.name != "peer" {
                cx.unknown_child(peer, child, &["peer"]);
                continue;
            }
            let Some(text) = cx.text(peer) else { continue };
            if let Some(address) = peer_address(cx, &text.text, text.span) {
                peers.push(Spanned::new(address, text.span));
            }
        }
    }
    Some(P2pService {
        nodes_asked: nodes_asked?,
        noa: noa.unwrap_or(p2p_defaults::NOA),
        ttu: ttu.unwrap_or(p2p_defaults::TTU),
        ttl: ttl.unwrap_or(p2p_defaults::TTL),
        port,
        peers,
    })
}

fn peer_address(cx: &mut Cx<'_>, text: &str, span: crate::source::Span) -> Option<PeerAddress> {
    let (authority, rmi) = if let Some(rest) = text.strip_prefix("rmi://") {
        (rest, true)
    } else if let Some(rest) = text.strip_prefix("//") {
        (rest, true)
    } else if let Some(rest) = text.strip_prefix("actogrid://") {
        (rest, false)
    } else if text.contains("://") {
        cx.error(
            "bad-value",
            span,
            format!("`{text}`: peers are reached with actogrid's protocol only"),
            "write host:port or actogrid://host:port",
        );
        return None;
    } else {
        (text, false)
    };
    // A trailing node name (ProActive's `/P2PNode`) does not matter.
    let authority = authority.split('/').next().unwrap_or(authority);
    // A peer named by its host alone listens where `actogrid peer` does by default.
    match scalar::host_with_default_port(authority, p2p_defaults::PORT) {
        Ok((host, port)) => {
            let address = PeerAddress { host, port };
            if rmi {
                cx.warning(
                    "rmi-url",
                    span,
                    format!("`{text}` is an RMI URL: read as the peer {address}"),
                    "write host:port",
                );
            }
            Some(address)
        }
        Err(message) => {
            cx.error(
                "bad-value",
                span,
                format!("peer: {message}"),
                format!(
                    "write host:port, as in 10.0.0.5:{0}, or the host alone for port {0}",
                    p2p_defaults::PORT
                ),
            );
            None
        }
    }
}

fn fault_tolerance(cx: &mut Cx<'_>, el: &Element) -> Option<FaultTolerance> {
    cx.container(el);
    let mut protocol = None;
    let mut ft = FaultTolerance {
        protocol: FtProtocol::Cic,
        global_server: None,
        checkpoint_server: None,
        location_server: None,
        recovery_process: None,
        resource_server: None,
        ttc: None,
    };
    for child in &el.children {
        let name = child.name.as_str();
        if name == "protocol" || name == "ttc" {
            let mut node = cx.open(child);
            let attr = if name == "protocol" { "type" } else { "value" };
            let value = cx.required(&mut node, attr);
            cx.close(node);
            cx.no_children(child);
            let Some(value) = value else { continue };
            if name == "protocol" {
                protocol = cx.parse(&value, "protocol", |t| match t {
                    "cic" => Ok(FtProtocol::Cic),
                    "pml" => Ok(FtProtocol::Pml),
                    _ => Err(format!("`{t}` is neither cic nor pml")),
                });
            } else {
                ft.ttc = cx.parse(&value, "ttc", |t| scalar::duration(t, Unit::Seconds));
            }
            continue;
        }
        let slot = match name {
            "globalServer" => &mut ft.global_server,
            "checkpointServer" => &mut ft.checkpoint_server,
            "locationServer" => &mut ft.location_server,
            "recoveryProcess" | "recoveryServer" => &mut ft.recovery_process,
            "resourceServer" => &mut ft.resource_server,
            _ => {
                cx.unknown_child(
                    child,
                    el,
                    &[
                        "protocol",
                        "globalServer",
                        "checkpointServer",
                        "locationServer",
                        "recoveryProcess",
                        "resourceServer",
                        "ttc",
                    ],
                );
                continue;
            }
        };
        let mut node = cx.open(child);
        let url = cx.required(&mut node, "url");
        cx.close(node);
        cx.no_children(child);
        if let Some(url) = url {
            *slot = runtime_url(cx, &url.text, url.span);
        }
    }
    if protocol.is_none() && !el.children.iter().any(|c| c.name == "protocol") {
        cx.error(
            "missing-element",
            el.span,
            "<faultTolerance> has no <protocol>",
            "add <protocol type=\"cic\"/> or <protocol type=\"pml\"/>",
        );
    }
    ft.protocol = protocol?;
    Some(ft)
}
