//! Checks that need the whole descriptor: references, uniqueness, cycles,
//! cardinalities. The reader has already checked each element on its own.

use std::collections::HashMap;

use petgraph::algo::kosaraju_scc;
use petgraph::graphmap::DiGraphMap;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{Descriptor, FtProtocol, NodesAsked, ProcessKind, RuntimeSource, ServiceKind};
use crate::plan;
use crate::reader::suggest;
use crate::source::{Span, Spanned};

/// Options of validation that depend on who validates.
#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// Technical-service classes this binary can build. `None` when the
    /// validating program cannot know (a stand-alone tool checks the
    /// descriptor of another application): unknown classes are then notes.
    pub known_service_classes: Option<Vec<String>>,
}

pub(crate) fn check(d: &Descriptor, options: &ValidateOptions, diags: &mut Diagnostics) {
    let rejected = d.rejected_ids.iter().map(String::as_str).collect();
    let mut v = Validator { d, diags, rejected };
    v.unique_ids();
    v.mappings();
    v.runtimes();
    v.process_chains();
    v.mpi_sequences();
    v.virtual_node_services(options);
    v.one_ft_protocol();
    v.registrations();
    v.unsupported();
}

struct Validator<'a> {
    d: &'a Descriptor,
    diags: &'a mut Diagnostics,
    /// [`Descriptor::rejected_ids`], to look up in constant time.
    rejected: std::collections::HashSet<&'a str>,
}

/// Past this many candidates, an unresolved reference gets no "did you
/// mean" (each costs a comparison with every candidate) and the hint does
/// not list them all.
const MAX_SUGGESTED_FROM: usize = 1000;
const MAX_LISTED: usize = 20;

fn unresolved(what: &str, reference: &Spanned<String>, known: &[&str], fix: &str) -> Diagnostic {
    let close = if known.len() <= MAX_SUGGESTED_FROM {
        suggest(reference, known)
    } else {
        None
    };
    let hint = match close {
        Some(s) => format!("did you mean `{s}`?"),
        None if known.is_empty() => fix.to_owned(),
        None if known.len() > MAX_LISTED => format!(
            "{fix} (defined: {}, … {} in all)",
            known[..MAX_LISTED].join(", "),
            known.len()
        ),
        None => format!("{fix} (defined: {})", known.join(", ")),
    };
    Diagnostic::error(
        "unresolved-reference",
        reference.span,
        format!("no {what} is named `{}`", reference.value),
    )
    .with_hint(hint)
}

impl Validator<'_> {
    /// The fault-tolerance protocol each protected virtual node asks for,
    /// with where it says so: `ftServiceId` naming a `<faultTolerance>`
    /// service, or a fault-tolerance technical service (its `protocol`
    /// argument, PML without one).
    fn ft_protocols(&self) -> Vec<(&str, FtProtocol, Span)> {
        let d = self.d;
        let mut out = Vec::new();
        for vn in &d.virtual_nodes {
            if let Some(ft) = &vn.ft_service
                && let Some(s) = d.service(ft)
                && let ServiceKind::FaultTolerance(f) = &s.kind
            {
                out.push((vn.name.value.as_str(), f.protocol, ft.span));
            }
            for id in &vn.technical_services {
                let Some(t) = d.technical_service(id) else {
                    continue;
                };
                if !crate::FAULT_TOLERANCE_CLASSES.contains(&t.class.as_str()) {
                    continue;
                }
                let asked = t.args.iter().rev().find(|a| a.name == "protocol");
                let protocol = match asked.map(|a| a.value.trim().to_ascii_lowercase()) {
                    Some(p) if p == "cic" => FtProtocol::Cic,
                    _ => FtProtocol::Pml,
                };
                out.push((
                    vn.name.value.as_str(),
                    protocol,
                    asked.map_or(id.span, |a| a.at),
                ));
            }
        }
        out
    }

    /// One deployment, one rollback-recovery protocol: a CIC group and
    /// PML objects calling each other do not recover together (see the
    /// hint).
    fn one_ft_protocol(&mut self) {
        let asked = self.ft_protocols();
        let Some(&(first_vn, first, _)) = asked.first() else {
            return;
        };
        let Some(&(vn, other, span)) = asked.iter().find(|(_, p, _)| *p != first) else {
            return;
        };
        let name = |p: FtProtocol| match p {
            FtProtocol::Cic => "cic",
            FtProtocol::Pml => "pml",
        };
        self.diags.push(
            Diagnostic::error(
                "fault-tolerance-mixed",
                span,
                format!(
                    "virtual node `{vn}` asks for fault tolerance by {}, while `{first_vn}` asks for {}: one deployment protects its virtual nodes with one protocol",
                    name(other),
                    name(first)
                ),
            )
            .with_hint(
                "a PML object recovered from its log calls the CIC objects again, and they no longer keep the replies given to callers outside their group; a CIC rollback does not reach PML objects either. Use the same protocol for every protected virtual node",
            ),
        );
    }

    /// Reports an unresolved reference unless it names a definition that was
    /// already rejected (one mistake, one diagnostic).
    fn unresolved(&mut self, what: &str, reference: &Spanned<String>, known: &[&str], fix: &str) {
        if !self.rejected.contains(reference.value.as_str()) {
            self.diags.push(unresolved(what, reference, known, fix));
        }
    }

    fn unique_ids(&mut self) {
        let d = self.d;
        let vn_names: Vec<&Spanned<String>> = d
            .virtual_nodes
            .iter()
            .map(|v| &v.name)
            .chain(d.acquired_virtual_nodes.iter().map(|v| &v.name))
            .collect();
        self.unique("virtual node", vn_names);
        self.unique("runtime (jvm)", d.jvms.iter().map(|j| &j.name).collect());
        self.unique(
            "process definition",
            d.processes.iter().map(|p| &p.id).collect(),
        );
        self.unique(
            "service definition",
            d.services.iter().map(|s| &s.id).collect(),
        );
        self.unique(
            "technical service",
            d.technical_services.iter().map(|s| &s.id).collect(),
        );
        self.unique(
            "file transfer",
            d.file_transfers.iter().map(|f| &f.id).collect(),
        );
        self.unique(
            "main definition",
            d.main_definitions.iter().map(|m| &m.id).collect(),
        );
    }

    fn unique(&mut self, what: &str, ids: Vec<&Spanned<String>>) {
        let mut first: HashMap<&str, Span> = HashMap::new();
        for id in ids {
            if let Some(at) = first.get(id.value.as_str()) {
                self.diags.push(
                    Diagnostic::error(
                        "duplicate-id",
                        id.span,
                        format!(
                            "{what} `{}` is defined twice (first at line {})",
                            id.value, at.line
                        ),
                    )
                    .with_hint("ids must be unique: rename one of them"),
                );
            } else {
                first.insert(&id.value, id.span);
            }
        }
    }

    fn mappings(&mut self) {
        let d = self.d;
        let vn_names: Vec<&str> = d.virtual_nodes.iter().map(|v| v.name.as_str()).collect();
        let jvm_names: Vec<&str> = d.jvms.iter().map(|j| j.name.as_str()).collect();
        let mut mapped: HashMap<&str, Span> = HashMap::new();
        for m in &d.mappings {
            let vn = m.virtual_node.as_str();
            if let Some(first) = mapped.insert(vn, m.virtual_node.span) {
                self.diags.push(
                    Diagnostic::error(
                        "duplicate-id",
                        m.virtual_node.span,
                        format!(
                            "virtual node `{vn}` is mapped twice (first at line {})",
                            first.line
                        ),
                    )
                    .with_hint("put all its runtimes in one <map>"),
                );
            }
            match d.virtual_node(vn) {
                None if d.acquired_virtual_nodes.iter().any(|a| *a.name == vn) => self.diags.push(
                    Diagnostic::error(
                        "mapped-acquired-node",
                        m.virtual_node.span,
                        format!("`{vn}` is an acquired virtual node: it comes from a <lookup>, it cannot be mapped"),
                    )
                    .with_hint("define it in <virtualNodesDefinition> to map it here"),
                ),
                None => self.unresolved(
                    "virtual node",
                    &m.virtual_node,
                    &vn_names,
                    "declare it in <componentDefinition><virtualNodesDefinition>",
                ),
                Some(def) => {
                    let runtimes = plan::mapping_runtime_count(d, m);
                    if def.property.is_unique() && runtimes.is_none_or(|n| n > 1) {
                        let count = runtimes.map_or_else(|| "an unbounded number of".to_owned(), |n| n.to_string());
                        self.diags.push(
                            Diagnostic::error(
                                "unique-with-many-runtimes",
                                m.virtual_node.span,
                                format!(
                                    "virtual node `{vn}` is {} but is mapped to {count} runtimes",
                                    def.property.as_str()
                                ),
                            )
                            .with_hint(format!(
                                "map it to exactly one runtime, or declare it property=\"multiple\" (defined at line {})",
                                def.name.span.line
                            )),
                        );
                    }
                    if let (Some(min), Some(total)) = (def.min_node_number, plan::mapping_node_count(d, m)) {
                        if u64::from(min) > total {
                            self.diags.push(
                                Diagnostic::error(
                                    "min-nodes-unreachable",
                                    def.name.span,
                                    format!("virtual node `{vn}` needs at least {min} nodes but its mapping provides {total}"),
                                )
                                .with_hint("lower minNodeNumber or map more runtimes or nodes (askedNodes)"),
                            );
                        }
                    }
                }
            }
            for j in &m.jvms {
                if d.jvm(j).is_none() {
                    self.unresolved(
                        "runtime (jvm)",
                        j,
                        &jvm_names,
                        "define it in <deployment><jvms>",
                    );
                }
            }
        }
        for vn in &d.virtual_nodes {
            if !mapped.contains_key(vn.name.as_str()) {
                self.diags.push(
                    Diagnostic::warning(
                        "unmapped-virtual-node",
                        vn.name.span,
                        format!(
                            "virtual node `{}` is never mapped: activating it yields no node",
                            vn.name.value
                        ),
                    )
                    .with_hint("add <map virtualNode=\"…\"> in <deployment><mapping>"),
                );
            }
        }
    }

    fn runtimes(&mut self) {
        let d = self.d;
        let used: std::collections::HashSet<&str> = d
            .mappings
            .iter()
            .flat_map(|m| m.jvms.iter().map(|j| j.as_str()))
            .collect();
        let process_ids: Vec<&str> = d.processes.iter().map(|p| p.id.as_str()).collect();
        let service_ids: Vec<&str> = d.services.iter().map(|s| s.id.as_str()).collect();
        for jvm in &d.jvms {
            match &jvm.source {
                RuntimeSource::Creation(r) => {
                    if d.process(r).is_none() {
                        let hint = if d.service(r).is_some() {
                            "that is a service: use <acquisition><serviceReference>".to_owned()
                        } else {
                            "define it in <infrastructure><processes>".to_owned()
                        };
                        self.unresolved("process definition", r, &process_ids, &hint);
                    }
                }
                RuntimeSource::Acquisition(r) => match d.service(r) {
                    None => self.unresolved("service definition", r,
                        &service_ids,
                        "define it in <infrastructure><services>",
                    ),
                    Some(s) if !s.kind.acquires_runtimes() => self.diags.push(
                        Diagnostic::error(
                            "wrong-service-kind",
                            r.span,
                            format!("service `{}` is a {}: it cannot provide runtimes", r.value, s.kind.element_name()),
                        )
                        .with_hint("acquire runtimes from a P2PService or an RMIRegistryLookup; attach fault tolerance with ftServiceId"),
                    ),
                    Some(_) => {}
                },
            }
            if !used.contains(jvm.name.as_str()) {
                self.diags.push(
                    Diagnostic::warning(
                        "unused-runtime",
                        jvm.name.span,
                        format!(
                            "runtime `{}` is not in any mapping: it is never started",
                            jvm.name.value
                        ),
                    )
                    .with_hint("add <vmName value=\"…\"/> to a <jvmSet>, or remove it"),
                );
            }
        }
    }

    fn process_chains(&mut self) {
        let d = self.d;
        let ids: Vec<&str> = d.processes.iter().map(|p| p.id.as_str()).collect();
        let mut graph: DiGraphMap<&str, (), std::hash::RandomState> = DiGraphMap::new();
        for p in &d.processes {
            graph.add_node(p.id.as_str());
            for next in p.kind.process_references() {
                if d.process(next).is_some() {
                    graph.add_edge(p.id.as_str(), next.as_str(), ());
                } else {
                    self.unresolved(
                        "process definition",
                        next,
                        &ids,
                        "define it in <infrastructure><processes>",
                    );
                }
            }
            if let ProcessKind::Hierarchical(h) = &p.kind {
                match d.process(&h.forwarder).map(|f| &f.kind) {
                    Some(ProcessKind::Jvm(_)) | None => {}
                    Some(other) => self.diags.push(
                        Diagnostic::error(
                            "bad-forwarder",
                            h.forwarder.span,
                            format!(
                                "the forwarder of <hierarchicalProcess> `{}` must be a jvmProcess (it says where the program is on the front-end), not {} `{}`",
                                p.id.value,
                                other.element_name(),
                                h.forwarder.value
                            ),
                        )
                        .with_hint("point <processReference> at a <jvmProcess>, and the process to run from the front-end at <hierarchicalReference>"),
                    ),
                }
            }
            if let ProcessKind::DependentSequence(s) = &p.kind {
                if let Some(service) = &s.service {
                    if d.service(service).is_none() {
                        let service_ids: Vec<&str> =
                            d.services.iter().map(|s| s.id.as_str()).collect();
                        self.unresolved(
                            "service definition",
                            service,
                            &service_ids,
                            "define it in <infrastructure><services>",
                        );
                    }
                }
            }
            let transfers = match &p.kind {
                ProcessKind::Ssh(s) => Some(&s.file_transfers),
                ProcessKind::ProcessList(l) | ProcessKind::ProcessListByHost(l) => {
                    Some(&l.file_transfers)
                }
                _ => None,
            };
            for t in transfers
                .into_iter()
                .flat_map(|t| t.deploy.iter().chain(&t.retrieve))
            {
                if t.refid.value != "implicit" {
                    self.file_transfer_ref(&t.refid);
                }
            }
        }
        let mut in_loops: std::collections::HashSet<&str> = std::collections::HashSet::new();
        // Kosaraju's walk keeps its own stack: a chain of a hundred thousand
        // processes must not overflow the thread's.
        for component in kosaraju_scc(&graph) {
            let cyclic = component.len() > 1 || graph.contains_edge(component[0], component[0]);
            if !cyclic {
                continue;
            }
            in_loops.extend(component.iter().copied());
            // Report once, at the first member in file order, showing the loop.
            let mut members: Vec<&crate::model::ProcessDefinition> =
                component.iter().filter_map(|id| d.process(id)).collect();
            members.sort_by_key(|p| p.id.span.start);
            let Some(first) = members.first() else {
                continue;
            };
            let members: std::collections::HashSet<&str> = component.iter().copied().collect();
            let mut path = vec![first.id.as_str()];
            let mut at = first.id.as_str();
            while let Some(next) = graph.neighbors(at).find(|n| members.contains(n)) {
                path.push(next);
                if next == first.id.as_str() || path.len() > component.len() {
                    break;
                }
                at = next;
            }
            // A loop of thousands of processes is named by its ends.
            let shown = if path.len() > 12 {
                format!(
                    "{} → … ({} more) → {}",
                    path[..5].join(" → "),
                    path.len() - 8,
                    path[path.len() - 3..].join(" → ")
                )
            } else {
                path.join(" → ")
            };
            let span = first
                .kind
                .process_references()
                .into_iter()
                .map(|r| r.span)
                .next()
                .unwrap_or(first.id.span);
            self.diags.push(
                Diagnostic::error(
                    "process-cycle",
                    span,
                    format!("the process chain loops: {shown}"),
                )
                .with_hint("a chain must end with a <jvmProcess>"),
            );
        }
        self.chain_lengths(&graph, &in_loops);
    }

    /// Refuses a chain longer than [`plan::MAX_CHAIN_DEPTH`]: starting it
    /// would nest that many steps (and the plan could not count it). The
    /// lengths are found with an explicit stack, whatever the length;
    /// loops are left to the cycle check.
    fn chain_lengths(
        &mut self,
        graph: &DiGraphMap<&str, (), std::hash::RandomState>,
        in_loops: &std::collections::HashSet<&str>,
    ) {
        let mut length: HashMap<&str, usize> = HashMap::new();
        let mut open: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for p in &self.d.processes {
            let mut stack = vec![(p.id.as_str(), false)];
            while let Some((id, done)) = stack.pop() {
                if done {
                    let below = graph
                        .neighbors(id)
                        .filter_map(|n| length.get(n))
                        .max()
                        .copied()
                        .unwrap_or(0);
                    length.insert(id, below + 1);
                    open.remove(id);
                    continue;
                }
                if length.contains_key(id) || !open.insert(id) {
                    continue;
                }
                stack.push((id, true));
                stack.extend(
                    graph
                        .neighbors(id)
                        .filter(|n| !length.contains_key(n) && !open.contains(n))
                        .map(|n| (n, false)),
                );
            }
        }
        // Once, at the first process (in file order) that starts too long a chain.
        let too_long = self.d.processes.iter().find_map(|p| {
            if in_loops.contains(p.id.as_str()) {
                return None; // reported as a loop
            }
            let n = length.get(p.id.as_str()).copied().unwrap_or(0);
            (n > plan::MAX_CHAIN_DEPTH).then_some((p, n))
        });
        if let Some((p, n)) = too_long {
            self.diags.push(
                Diagnostic::error(
                    "chain-too-long",
                    p.id.span,
                    format!(
                        "the process chain starting at `{}` is {n} processes long; a chain has at most {}",
                        p.id.value,
                        plan::MAX_CHAIN_DEPTH
                    ),
                )
                .with_hint("a chain reaches a place and starts runtimes there (ssh, then a scheduler, then the runtime): shorten it"),
            );
        }
    }

    fn file_transfer_ref(&mut self, r: &Spanned<String>) {
        if !self.d.file_transfers.iter().any(|f| f.id.value == r.value) {
            let ids: Vec<&str> = self
                .d
                .file_transfers
                .iter()
                .map(|f| f.id.as_str())
                .collect();
            self.unresolved(
                "file transfer",
                r,
                &ids,
                "define it in <fileTransferDefinitions>",
            );
        }
    }

    fn virtual_node_services(&mut self, options: &ValidateOptions) {
        let d = self.d;
        let ts_ids: Vec<&str> = d.technical_services.iter().map(|s| s.id.as_str()).collect();
        let service_ids: Vec<&str> = d.services.iter().map(|s| s.id.as_str()).collect();
        for vn in &d.virtual_nodes {
            for (i, id) in vn.technical_services.iter().enumerate() {
                if vn.technical_services[..i]
                    .iter()
                    .any(|p| p.value == id.value)
                {
                    self.diags.push(
                        Diagnostic::error(
                            "duplicate-id",
                            id.span,
                            format!("technical service `{}` is listed twice", id.value),
                        )
                        .with_hint("a service applies once per node: list it once"),
                    );
                } else if d.technical_service(id).is_none() {
                    let fix = if d
                        .service(id)
                        .is_some_and(|s| matches!(s.kind, ServiceKind::FaultTolerance(_)))
                    {
                        "that is a faultTolerance service: reference it with ftServiceId"
                    } else {
                        "define it in <technicalServices>"
                    };
                    self.unresolved("technical service", id, &ts_ids, fix);
                }
            }
            if let Some(ft) = &vn.ft_service {
                match d.service(ft) {
                    None => self.unresolved(
                        "service definition",
                        ft,
                        &service_ids,
                        "define a <faultTolerance> service",
                    ),
                    Some(s) if !matches!(s.kind, ServiceKind::FaultTolerance(_)) => {
                        self.diags.push(
                            Diagnostic::error(
                                "wrong-service-kind",
                                ft.span,
                                format!(
                                    "ftServiceId names `{}`, a {}, not a faultTolerance service",
                                    ft.value,
                                    s.kind.element_name()
                                ),
                            )
                            .with_hint(
                                "point ftServiceId at a serviceDefinition holding <faultTolerance>",
                            ),
                        )
                    }
                    Some(_) => {}
                }
            }
            for r in vn
                .file_transfer_deploy
                .iter()
                .chain(&vn.file_transfer_retrieve)
            {
                self.file_transfer_ref(r);
            }
            // A unique VN acquiring from the overlay cannot bound itself to one runtime.
            if vn.property.is_unique() {
                if let Some(m) = d.mapping(&vn.name) {
                    for j in m.jvms.iter().filter_map(|j| d.jvm(j)) {
                        if let RuntimeSource::Acquisition(r) = &j.source {
                            if let Some(ServiceKind::P2p(p)) = d.service(r).map(|s| &s.kind) {
                                if p.nodes_asked == NodesAsked::Max {
                                    self.diags.push(
                                        Diagnostic::error(
                                            "unique-with-many-runtimes",
                                            r.span,
                                            format!("virtual node `{}` is unique but acquires nodesAsked=MAX", vn.name.value),
                                        )
                                        .with_hint("ask for one node, or make the virtual node multiple"),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        for ts in &d.technical_services {
            // `actogrid.` names the built-in services: any other name under
            // it is a typo of one, whichever program reads the file.
            if ts.class.starts_with("actogrid.") && !is_builtin_class(&ts.class) {
                let builtins: Vec<&str> = crate::BUILTIN_SERVICE_CLASSES
                    .iter()
                    .copied()
                    .filter(|c| c.starts_with("actogrid."))
                    .collect();
                let hint = match suggest(&ts.class, &builtins) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "the built-in services are {}; an application's own services are named outside `actogrid.`",
                        builtins.join(", ")
                    ),
                };
                self.diags.push(
                    Diagnostic::error(
                        "unknown-service-class",
                        ts.class.span,
                        format!("`{}` is not a built-in technical service", ts.class.value),
                    )
                    .with_hint(hint),
                );
                continue;
            }
            let known = options.known_service_classes.as_ref();
            if known.is_none_or(|k| !k.iter().any(|c| *c == *ts.class)) {
                let (severity, hint) = match known {
                    Some(k) => (
                        crate::diagnostic::Severity::Error,
                        match suggest(&ts.class, &k.iter().map(String::as_str).collect::<Vec<_>>()) {
                            Some(s) => format!("did you mean `{s}`? Otherwise register the class in the application before loading the descriptor"),
                            None => format!(
                                "register the class in the application before loading the descriptor (this program has: {})",
                                k.join(", ")
                            ),
                        },
                    ),
                    None => (
                        crate::diagnostic::Severity::Note,
                        "application services live in the application's binary; Deployment::load checks them there".to_owned(),
                    ),
                };
                if severity == crate::diagnostic::Severity::Note && is_builtin_class(&ts.class) {
                    continue;
                }
                let message = if known.is_some() {
                    format!(
                        "no technical service class `{}` in this program",
                        ts.class.value
                    )
                } else {
                    format!(
                        "technical service class `{}` is not known to this program",
                        ts.class.value
                    )
                };
                self.diags.push(
                    Diagnostic::new(
                        severity,
                        "unknown-service-class",
                        Some(ts.class.span),
                        message,
                    )
                    .with_hint(hint),
                );
            }
        }
    }

    fn registrations(&mut self) {
        let d = self.d;
        let vn_names: Vec<&str> = d.virtual_nodes.iter().map(|v| v.name.as_str()).collect();
        let acquired: Vec<&str> = d
            .acquired_virtual_nodes
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        for r in &d.registers {
            if d.virtual_node(&r.virtual_node).is_none() {
                self.unresolved(
                    "virtual node",
                    &r.virtual_node,
                    &vn_names,
                    "only virtual nodes defined here can be registered",
                );
            }
        }
        for l in &d.lookups {
            if !acquired.contains(&l.virtual_node.as_str()) {
                self.unresolved(
                    "acquired virtual node",
                    &l.virtual_node,
                    &acquired,
                    "declare it in <componentDefinition><virtualNodesAcquisition>",
                );
            }
        }
        for a in &d.acquired_virtual_nodes {
            if !d
                .lookups
                .iter()
                .any(|l| l.virtual_node.value == a.name.value)
            {
                self.diags.push(
                    Diagnostic::warning(
                        "unused-acquired-node",
                        a.name.span,
                        format!("acquired virtual node `{}` has no <lookup>", a.name.value),
                    )
                    .with_hint("add <lookup virtualNode=\"…\" host=\"…\"/> in <deployment>"),
                );
            }
        }
        for m in &d.main_definitions {
            for vn in &m.virtual_nodes {
                if !vn_names.contains(&vn.as_str()) && !acquired.contains(&vn.as_str()) {
                    self.unresolved(
                        "virtual node",
                        vn,
                        &vn_names,
                        "declare it in <componentDefinition>",
                    );
                }
            }
        }
    }
}

/// Classes every actogrid binary has, whatever the application.
impl Validator<'_> {
    /// A definition of a kind actogrid does not run is refused only when a
    /// mapped virtual node is deployed through it; otherwise it is left
    /// over from a ProActive descriptor and only warned about.
    fn unsupported(&mut self) {
        let d = self.d;
        if d.unsupported.is_empty() {
            return;
        }
        // Every process and service a mapped virtual node reaches, with the
        // first virtual node that reaches it. An explicit stack: chains may
        // be long.
        let mut reached: HashMap<&str, &str> = HashMap::new();
        let mut stack: Vec<(&str, &str)> = Vec::new();
        for m in &d.mappings {
            for jvm in m.jvms.iter().filter_map(|name| d.jvm(name)) {
                let id = match &jvm.source {
                    RuntimeSource::Creation(r) | RuntimeSource::Acquisition(r) => r.as_str(),
                };
                stack.push((id, m.virtual_node.as_str()));
            }
        }
        while let Some((id, vn)) = stack.pop() {
            if reached.contains_key(id) {
                continue;
            }
            reached.insert(id, vn);
            let Some(p) = d.process(id) else { continue };
            for next in p.kind.process_references() {
                stack.push((next.as_str(), vn));
            }
            if let ProcessKind::DependentSequence(s) = &p.kind {
                stack.extend(s.service.iter().map(|s| (s.as_str(), vn)));
            }
        }
        for u in &d.unsupported {
            let needed_by = u.id.as_ref().and_then(|id| reached.get(id.as_str()));
            let diagnostic = match needed_by {
                Some(vn) => Diagnostic::error(
                    "unsupported-element",
                    u.at,
                    format!(
                        "<{}> is not supported by actogrid, and virtual node `{vn}` is deployed through it",
                        u.element
                    ),
                )
                .with_hint(u.hint),
                None => Diagnostic::warning(
                    "unsupported-unused",
                    u.at,
                    format!(
                        "<{}>{} is not supported by actogrid: ignored, as no mapped virtual node is deployed through it",
                        u.element,
                        u.id.as_ref().map(|id| format!(" `{}`", id.value)).unwrap_or_default()
                    ),
                )
                .with_hint(format!(
                    "nothing to do if it is left over from elsewhere; to start such runtimes with actogrid: {}",
                    u.hint
                )),
            };
            self.diags.push(diagnostic);
        }
    }
}

impl Validator<'_> {
    /// A `dependentProcessSequence` is a booking, then an MPI run: its
    /// first process books hosts (a host list, an ssh host, a SLURM
    /// allocation), its second, and last, is an `mpiProcess`. An
    /// `mpiProcess` runs nowhere else.
    fn mpi_sequences(&mut self) {
        let d = self.d;
        const SHAPE: &str = "a dependentProcessSequence books hosts with its first process (<processListbyHost>, <processList>, <sshProcess> or <slurmProcess>), then runs an <mpiProcess> on them";
        for p in &d.processes {
            let ProcessKind::DependentSequence(s) = &p.kind else {
                continue;
            };
            if let Some(service) = &s.service {
                self.diags.push(
                    Diagnostic::error(
                        "unsupported-sequence",
                        service.span,
                        format!(
                            "dependent sequence `{}` starts with service `{}`: actogrid cannot book hosts for an MPI run from a service",
                            p.id.value, service.value
                        ),
                    )
                    .with_hint(SHAPE),
                );
                continue;
            }
            if let Some(extra) = s.processes.get(2) {
                self.diags.push(
                    Diagnostic::error(
                        "unsupported-sequence",
                        extra.span,
                        format!(
                            "dependent sequence `{}` has a third process `{}`: after the booking, one <mpiProcess> runs",
                            p.id.value, extra.value
                        ),
                    )
                    .with_hint(SHAPE),
                );
            }
            if let Some(first) = s.processes.first()
                && let Some(booking) = d.process(first)
            {
                let refused = match &booking.kind {
                    ProcessKind::ProcessList(_)
                    | ProcessKind::ProcessListByHost(_)
                    | ProcessKind::Ssh(_)
                    | ProcessKind::Slurm(_) => None,
                    ProcessKind::Pbs(_)
                    | ProcessKind::Lsf(_)
                    | ProcessKind::Oar(_)
                    | ProcessKind::GridEngine(_) => Some(format!(
                        "an MPI run inside a {} allocation is not supported yet",
                        booking.kind.element_name()
                    )),
                    other => Some(format!("a {} books no host", other.element_name())),
                };
                if let Some(why) = refused {
                    self.diags.push(
                        Diagnostic::error(
                            "unsupported-sequence",
                            first.span,
                            format!(
                                "dependent sequence `{}` books hosts with `{}`: {why}",
                                p.id.value, first.value
                            ),
                        )
                        .with_hint(SHAPE),
                    );
                }
            }
            if let Some(second) = s.processes.get(1) {
                match d.process(second).map(|p| &p.kind) {
                    Some(ProcessKind::Mpi(_)) | None => {}
                    Some(other) => self.diags.push(
                        Diagnostic::error(
                            "unsupported-sequence",
                            second.span,
                            format!(
                                "dependent sequence `{}` runs {} `{}` on the booked hosts: only an <mpiProcess> can run there",
                                p.id.value,
                                other.element_name(),
                                second.value
                            ),
                        )
                        .with_hint(SHAPE),
                    ),
                }
            }
        }
        // An mpiProcess reached any other way has no hosts to run on.
        let is_mpi = |id: &str| matches!(d.process(id).map(|p| &p.kind), Some(ProcessKind::Mpi(_)));
        let misplaced = |r: &Spanned<String>, how: String| {
            Diagnostic::error(
                "misplaced-mpi",
                r.span,
                format!("<mpiProcess> `{}` is {how}: it runs only on hosts booked for it", r.value),
            )
            .with_hint("reference it second in a <dependentProcessSequence>, after the process that books its hosts")
        };
        let mut found = Vec::new();
        for p in &d.processes {
            let references = match &p.kind {
                // Its first process is checked as the booking above.
                ProcessKind::DependentSequence(_) => Vec::new(),
                other => other.process_references(),
            };
            for r in references.into_iter().filter(|r| is_mpi(r)) {
                found.push(misplaced(
                    r,
                    format!("started by {} `{}`", p.kind.element_name(), p.id.value),
                ));
            }
        }
        for jvm in &d.jvms {
            if let RuntimeSource::Creation(r) = &jvm.source
                && is_mpi(r)
            {
                found.push(misplaced(
                    r,
                    format!("the creation of runtime `{}`", jvm.name.value),
                ));
            }
        }
        for diagnostic in found {
            self.diags.push(diagnostic);
        }
    }
}

pub(crate) fn is_builtin_class(class: &str) -> bool {
    crate::BUILTIN_SERVICE_CLASSES.contains(&class)
}
