//! What a descriptor asks of this program, checked when the deployment
//! loads: every technical-service class must exist here, accept its
//! arguments (each `<arg>` a name the service reads), have what it requires
//! listed before it, and not meet a service it conflicts with; every
//! `<runtimeSettings>` entry must be a runtime setting with a value it
//! takes. Problems become diagnostics at the line of the descriptor they
//! are about.
//!
//! `actogrid validate` runs the same checks for the built-in services and
//! the runtime settings; the services of an application exist only in the
//! application's binary, where [`Deployment::load`](super::Deployment::load)
//! checks them.

use std::collections::HashMap;

use actogrid_descriptor::model::{Arg, TechnicalServiceDefinition};
use actogrid_descriptor::{Diagnostic, Loaded};
use actogrid_runtime::Config;
use actogrid_technical_services::{self as ts, Args, ServiceSpec};
use serde::{Deserialize, Serialize};

/// What a virtual node's services need at deployment time.
#[derive(Debug, Default, Clone)]
pub(crate) struct VnServices {
    pub(crate) specs: Vec<ServiceSpec>,
    pub(crate) launch_env: Vec<(String, String)>,
}

/// Everything the checks produced for the deployment.
#[derive(Debug, Default, Clone)]
pub(crate) struct Checked {
    /// The services of each virtual node, by name.
    pub(crate) vns: HashMap<String, VnServices>,
    /// The descriptor's runtime settings, checked: canonical names
    /// (`heartbeat_timeout`) and values, in an order in which
    /// [`Config::set`] takes them one after the other from the defaults.
    pub(crate) runtime_settings: Vec<(String, String)>,
}

/// The closest of `candidates` to `name`, if it is close enough to be a typo.
fn suggest<'c>(name: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&name.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// What a program knows of one technical-service definition: the service
/// its class makes, initialised with the definition's arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Described {
    /// The argument names the service reads, when it says.
    pub(crate) arguments: Option<Vec<String>>,
    /// Why `init` refused the arguments (and which one), if it did.
    pub(crate) refused: Option<(Option<String>, String)>,
    pub(crate) requires: Vec<String>,
    pub(crate) conflicts_with: Vec<String>,
    pub(crate) launch_environment: Vec<(String, String)>,
}

/// Describes the service of class `class` with `args` as this program
/// builds it; `None` when it has no such class.
pub(crate) fn describe_here(class: &str, args: &Args) -> Option<Described> {
    let mut service = ts::create(class)?;
    let arguments = service
        .arguments()
        .map(|names| names.iter().map(|n| (*n).to_owned()).collect());
    let refused = service.init(args).err().map(|e| (e.argument, e.message));
    Some(Described {
        arguments,
        refused,
        requires: service.requires(),
        conflicts_with: service.conflicts_with(),
        launch_environment: service.launch_environment(),
    })
}

/// Runs every check with this program's services, adding diagnostics to
/// `loaded`.
pub(crate) fn check(loaded: &mut Loaded) -> Checked {
    check_with(loaded, |def| describe_here(&def.class.value, &args_of(def)))
}

/// Runs every check, the services being described by `describe` (this
/// program's, or another's when it deploys an application's binary).
pub(crate) fn check_with(
    loaded: &mut Loaded,
    mut describe: impl FnMut(&TechnicalServiceDefinition) -> Option<Described>,
) -> Checked {
    let mut diagnostics = Vec::new();
    let d = &loaded.descriptor;
    // Each definition is described and checked once, whichever virtual
    // nodes use it.
    let mut built: HashMap<&str, Described> = HashMap::new();
    for def in &d.technical_services {
        if let Some(service) = describe(def).and_then(|s| accepted(def, s, &mut diagnostics)) {
            built.insert(def.id.as_str(), service);
        }
    }
    let mut vns = HashMap::new();
    for vn in &d.virtual_nodes {
        let mut entry = VnServices::default();
        let mut listed: Vec<(&TechnicalServiceDefinition, &Described, _)> = Vec::new();
        for reference in &vn.technical_services {
            let Some(def) = d.technical_service(&reference.value) else {
                continue; // reported by validation
            };
            let Some(service) = built.get(def.id.as_str()) else {
                continue; // reported above, or not this program's to check
            };
            entry
                .launch_env
                .extend(service.launch_environment.iter().cloned());
            entry.specs.push(ServiceSpec {
                id: def.id.value.clone(),
                class: def.class.value.clone(),
                args: args_of(def),
            });
            listed.push((def, service, reference.span));
        }
        if let Some(spec) = vn.ft_service.as_ref().and_then(|id| ft_spec(d, id)) {
            entry.specs.push(spec);
        }
        let vn_name = &vn.name.value;
        for (i, (def, service, span)) in listed.iter().enumerate() {
            let (id, class) = (&def.id.value, &def.class.value);
            for required in &service.requires {
                if !listed[..i]
                    .iter()
                    .any(|(d, _, _)| d.class.value == *required)
                {
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
            // Each conflicting pair once, at the later of the two.
            for (other, other_service, _) in &listed[..i] {
                let conflict = service.conflicts_with.contains(&other.class.value)
                    || other_service.conflicts_with.contains(class);
                if conflict {
                    diagnostics.push(
                        Diagnostic::error(
                            "service-conflict",
                            *span,
                            format!(
                                "technical services `{id}` ({class}) and `{}` ({}) cannot both apply to virtual node `{vn_name}`",
                                other.id.value, other.class.value
                            ),
                        )
                        .with_hint("keep one of them"),
                    );
                }
            }
        }
        vns.insert(vn_name.clone(), entry);
    }
    let runtime_settings = runtime_settings(loaded, &mut diagnostics);
    for diag in diagnostics {
        loaded.diagnostics.push(diag);
    }
    loaded.diagnostics.sort();
    Checked {
        vns,
        runtime_settings,
    }
}

/// ProActive's spelling, `ftServiceId` naming a `<faultTolerance>` service
/// definition, as the `actogrid.FaultTolerance` service it stands for. Its
/// server URLs are ProActive's (one per role); the deployment's own FT
/// server plays every role, unless a `globalServer` names an actogrid one.
fn ft_spec(d: &actogrid_descriptor::Descriptor, id: &str) -> Option<ServiceSpec> {
    use actogrid_descriptor::model::{FtProtocol, ServiceKind};
    let ServiceKind::FaultTolerance(ft) = &d.service(id)?.kind else {
        return None;
    };
    let protocol = match ft.protocol {
        FtProtocol::Pml => "pml",
        FtProtocol::Cic => "cic",
    };
    let mut args = vec![("protocol".to_owned(), protocol.to_owned())];
    if let Some(ttc) = ft.ttc {
        args.push(("ttc".to_owned(), format!("{}ms", ttc.as_millis())));
    }
    if let Some(url) = ft
        .global_server
        .as_ref()
        .filter(|u| u.starts_with("actogrid://"))
    {
        args.push(("server".to_owned(), url.clone()));
    }
    Some(ServiceSpec {
        id: id.to_owned(),
        class: actogrid_fault_tolerance::CLASSES[0].to_owned(),
        args: Args(args),
    })
}

fn args_of(def: &TechnicalServiceDefinition) -> Args {
    def.args
        .iter()
        .map(|a| (a.name.clone(), a.value.clone()))
        .collect()
}

/// The service of `def` when it took its arguments; `None` (with a
/// diagnostic) when it refused them. Unknown argument names are warned
/// about either way.
fn accepted(
    def: &TechnicalServiceDefinition,
    service: Described,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Described> {
    let class = def.class.as_str();
    unknown_arguments(def, &service, diagnostics);
    let Some((argument, message)) = &service.refused else {
        return Some(service);
    };
    // A refusal about one argument is shown at that <arg> (the last one
    // of that name: the one init read).
    let arg: Option<&Arg> = argument
        .as_deref()
        .and_then(|name| def.args.iter().rev().find(|a| a.name == name));
    let span = arg.map_or(def.id.span, |a| a.at);
    let hint = match arg {
        Some(a) => format!("fix the value of argument `{}`", a.name),
        None => "fix its <arg> elements".to_owned(),
    };
    diagnostics.push(
        Diagnostic::error(
            "service-refused-arguments",
            span,
            format!(
                "technical service `{}` ({class}) refused its arguments: {message}",
                def.id.value
            ),
        )
        .with_hint(hint),
    );
    None
}

/// Warns about each `<arg>` whose name the service does not read.
fn unknown_arguments(
    def: &TechnicalServiceDefinition,
    service: &Described,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let Some(known) = &service.arguments else {
        return;
    };
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    for arg in def
        .args
        .iter()
        .filter(|a| !known.contains(&a.name.as_str()))
    {
        let takes = if known.is_empty() {
            "it takes no argument".to_owned()
        } else {
            format!("it takes: {}", known.join(", "))
        };
        let hint = match suggest(&arg.name, &known) {
            Some(s) => format!("did you mean `{s}`? ({takes})"),
            None => format!("remove it ({takes})"),
        };
        diagnostics.push(
            Diagnostic::warning(
                "unknown-service-argument",
                arg.at,
                format!(
                    "technical service `{}` ({}) has no argument `{}`: it is ignored",
                    def.id.value, def.class.value, arg.name
                ),
            )
            .with_hint(hint),
        );
    }
}

/// Checks the `<runtimeSettings>` with the runtime's own rules. Settings
/// that only make sense together (a heartbeat timeout longer than its
/// interval) are tried again once the others are in, so the order of the
/// file does not matter; the order that worked is the one returned.
fn runtime_settings(loaded: &Loaded, diagnostics: &mut Vec<Diagnostic>) -> Vec<(String, String)> {
    let mut config = Config::default();
    let mut applied = Vec::new();
    let mut pending: Vec<_> = Vec::new();
    for s in &loaded.descriptor.runtime_settings {
        match Config::setting(&s.name) {
            Some(setting) => pending.push((s, setting.name)),
            None => {
                let known: Vec<&str> = Config::settings().iter().map(|s| s.name).collect();
                let hint = match suggest(&s.name, &known) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("the settings are: {}", known.join(", ")),
                };
                diagnostics.push(
                    Diagnostic::error(
                        "unknown-runtime-setting",
                        s.name.span,
                        format!("`{}` is not a runtime setting", s.name.value),
                    )
                    .with_hint(hint),
                );
            }
        }
    }
    loop {
        let before = pending.len();
        let mut failures = Vec::new();
        for (s, name) in std::mem::take(&mut pending) {
            let mut trial = config.clone();
            match trial.set(name, &s.value) {
                Ok(()) => {
                    config = trial;
                    applied.push((name.to_owned(), s.value.value.trim().to_owned()));
                }
                Err(e) => failures.push((s, name, e)),
            }
        }
        if failures.is_empty() || failures.len() == before {
            for (s, name, e) in failures {
                let about = Config::setting(name).map_or("", |s| s.about);
                diagnostics.push(
                    Diagnostic::error(
                        "bad-runtime-setting",
                        s.value.span,
                        format!("runtime setting `{}`: {}", s.name.value, e.message),
                    )
                    .with_hint(format!("`{name}`: {about}")),
                );
            }
            return applied;
        }
        pending = failures.into_iter().map(|(s, name, _)| (s, name)).collect();
    }
}
