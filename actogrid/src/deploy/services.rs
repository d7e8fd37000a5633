//! The technical services of each virtual node, checked when the
//! deployment loads: every class must exist in this program, accept its
//! arguments, have what it requires listed before it, and not meet a
//! service it conflicts with. Problems become diagnostics at the line of
//! the descriptor they are about.

use std::collections::{HashMap, HashSet};

use actogrid_descriptor::{Diagnostic, Loaded};
use actogrid_technical_services::{self as ts, Args, ServiceSpec};

/// What a virtual node's services need at deployment time.
#[derive(Debug, Default, Clone)]
pub(crate) struct VnServices {
    pub(crate) specs: Vec<ServiceSpec>,
    pub(crate) launch_env: Vec<(String, String)>,
}

/// Checks every virtual node's services, adding diagnostics to `loaded`.
pub(crate) fn check(loaded: &mut Loaded) -> HashMap<String, VnServices> {
    let mut out = HashMap::new();
    let mut reported: HashSet<String> = HashSet::new();
    let mut diagnostics = Vec::new();
    let d = &loaded.descriptor;
    for vn in &d.virtual_nodes {
        let mut entry = VnServices::default();
        let mut built: Vec<(String, String, Box<dyn ts::TechnicalService>, _)> = Vec::new();
        for reference in &vn.technical_services {
            let Some(def) = d.technical_service(&reference.value) else {
                continue; // reported by validation
            };
            let class = def.class.value.clone();
            let args: Args = def
                .args
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect();
            let spec = ServiceSpec {
                id: def.id.value.clone(),
                class: class.clone(),
                args: args.clone(),
            };
            match ts::build(&class, &args) {
                Ok(service) => {
                    entry.launch_env.extend(service.launch_environment());
                    built.push((def.id.value.clone(), class, service, reference.span));
                    entry.specs.push(spec);
                }
                Err(e) => {
                    if !reported.insert(def.id.value.clone()) {
                        continue;
                    }
                    if ts::create(&class).is_none() {
                        diagnostics.push(
                            Diagnostic::error(
                                "unknown-service-class",
                                def.class.span,
                                format!("no technical service class `{class}` in this program"),
                            )
                            .with_hint(format!(
                                "register it with actogrid::technical_service!(\"{class}\", YourType); this program has: {}",
                                ts::classes().join(", ")
                            )),
                        );
                    } else {
                        diagnostics.push(
                            Diagnostic::error(
                                "service-refused-arguments",
                                def.id.span,
                                format!(
                                    "technical service `{}` ({class}) refused its arguments: {e}",
                                    def.id.value
                                ),
                            )
                            .with_hint("fix its <arg> elements"),
                        );
                    }
                }
            }
        }
        let vn_name = &vn.name.value;
        for (i, (id, class, service, span)) in built.iter().enumerate() {
            for required in service.requires() {
                if !built[..i].iter().any(|(_, c, _, _)| *c == required) {
                    diagnostics.push(
                        Diagnostic::error(
                            "service-requirement",
                            *span,
                            format!(
                                "technical service `{id}` ({class}) requires a `{required}` service listed before it on virtual node `{vn_name}`"
                            ),
                        )
                        .with_hint(format!("add a `{required}` service before `{id}` in technicalServiceId")),
                    );
                }
            }
        }
        // Each conflicting pair once, at the later of the two.
        for (j, (id, class, service, span)) in built.iter().enumerate() {
            for (other, other_class, other_service, _) in &built[..j] {
                let conflict = service.conflicts_with().contains(other_class)
                    || other_service.conflicts_with().contains(class);
                if conflict {
                    diagnostics.push(
                        Diagnostic::error(
                            "service-conflict",
                            *span,
                            format!(
                                "technical services `{id}` ({class}) and `{other}` ({other_class}) cannot both apply to virtual node `{vn_name}`"
                            ),
                        )
                        .with_hint("keep one of them"),
                    );
                }
            }
        }
        out.insert(vn_name.clone(), entry);
    }
    for diag in diagnostics {
        loaded.diagnostics.push(diag);
    }
    loaded.diagnostics.sort();
    out
}
