//! The deployment plan: virtual nodes → runtimes → process chains or
//! acquisition services → technical services, as text for people and as a
//! Graphviz graph (`actogrid plan --dot`).
//!
//! The plan is computed from a validated model only; it never starts
//! anything. Counts are exact when the descriptor fixes them (host lists,
//! SLURM nodes × tasks) and marked unknown when only a scheduler or the
//! overlay will tell.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::time::Duration;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::model::{
    Descriptor, FtProtocol, Jvm, Mapping, NodesAsked, ProcessDefinition, ProcessKind,
    RuntimeSource, ServiceKind,
};

/// A number of runtimes or nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Exactly this many.
    Exact(u64),
    /// Fixed at run time by a scheduler or a dependent process.
    Unknown,
    /// As many as can be had (P2P `MAX`).
    Unbounded,
}

impl Count {
    fn times(self, other: Count) -> Count {
        match (self, other) {
            (Count::Exact(a), Count::Exact(b)) => Count::Exact(a.saturating_mul(b)),
            (Count::Unbounded, _) | (_, Count::Unbounded) => Count::Unbounded,
            _ => Count::Unknown,
        }
    }

    fn plus(self, other: Count) -> Count {
        match (self, other) {
            (Count::Exact(a), Count::Exact(b)) => Count::Exact(a.saturating_add(b)),
            (Count::Unbounded, _) | (_, Count::Unbounded) => Count::Unbounded,
            _ => Count::Unknown,
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Exact(n) => write!(f, "{n}"),
            Count::Unknown => f.write_str("?"),
            Count::Unbounded => f.write_str("MAX"),
        }
    }
}

/// The longest process chain a descriptor may have (validation refuses
/// longer ones; real chains are two or three processes long).
pub const MAX_CHAIN_DEPTH: usize = 64;

/// Counts of the processes already counted: sequences may share members,
/// and counting a shared member again at every level would take time
/// exponential in the depth of the sequences.
type Memo<'d> = HashMap<&'d str, Count>;

fn process_count<'d>(
    d: &'d Descriptor,
    p: &'d ProcessDefinition,
    depth: usize,
    memo: &mut Memo<'d>,
) -> Count {
    if depth > MAX_CHAIN_DEPTH {
        return Count::Unknown;
    }
    if let Some(count) = memo.get(p.id.as_str()) {
        return *count;
    }
    let next = |id: &str, memo: &mut Memo<'d>| {
        d.process(id)
            .map_or(Count::Unknown, |p| process_count(d, p, depth + 1, memo))
    };
    let count = match &p.kind {
        ProcessKind::Jvm(_) => Count::Exact(1),
        ProcessKind::IndependentSequence(s) => s
            .processes
            .iter()
            .fold(Count::Exact(0), |acc, id| acc.plus(next(id, memo))),
        ProcessKind::DependentSequence(s) if mpi_of(d, s).is_some() => Count::Exact(0),
        ProcessKind::DependentSequence(_) => Count::Unknown,
        ProcessKind::Mpi(_) => Count::Exact(0),
        kind => {
            let fan_out = kind.fan_out().map_or(Count::Unknown, Count::Exact);
            let link = kind.link().map_or(Count::Unknown, |l| next(&l.next, memo));
            fan_out.times(link)
        }
    };
    memo.insert(p.id.as_str(), count);
    count
}

/// Runtimes one run of process `p` starts (through its whole chain).
pub fn process_runtime_count(d: &Descriptor, p: &ProcessDefinition) -> Count {
    process_count(d, p, 0, &mut Memo::new())
}

/// Runtimes one `jvm` element stands for.
pub fn jvm_runtime_count(d: &Descriptor, jvm: &Jvm) -> Count {
    match &jvm.source {
        RuntimeSource::Creation(id) => d
            .process(id)
            .map_or(Count::Unknown, |p| process_runtime_count(d, p))
            .times(Count::Exact(u64::from(jvm.runtimes))),
        RuntimeSource::Acquisition(id) => match d.service(id).map(|s| &s.kind) {
            Some(ServiceKind::P2p(p)) => match p.nodes_asked {
                NodesAsked::Count(n) => Count::Exact(u64::from(n)),
                NodesAsked::Max => Count::Unbounded,
            },
            Some(ServiceKind::RegistryLookup(_)) => Count::Exact(1),
            _ => Count::Unknown,
        },
    }
}

/// Nodes one `jvm` element stands for.
pub fn jvm_node_count(d: &Descriptor, jvm: &Jvm) -> Count {
    let runtimes = jvm_runtime_count(d, jvm);
    match &jvm.source {
        // The overlay counts nodes, not runtimes.
        RuntimeSource::Acquisition(_) => runtimes,
        RuntimeSource::Creation(_) => runtimes.times(Count::Exact(u64::from(jvm.asked_nodes))),
    }
}

fn mapping_sum(d: &Descriptor, m: &Mapping, per_jvm: fn(&Descriptor, &Jvm) -> Count) -> Count {
    let current = Count::Exact(u64::from(m.current_jvm.is_some()));
    m.jvms
        .iter()
        .map(|name| d.jvm(name).map_or(Count::Unknown, |j| per_jvm(d, j)))
        .fold(current, Count::plus)
}

/// Runtimes of a mapping: `Some(n)` when exact, `None` when unbounded,
/// and unknown counts taken as one (the least they can be).
pub fn mapping_runtime_count(d: &Descriptor, m: &Mapping) -> Option<u64> {
    let current = u64::from(m.current_jvm.is_some());
    let mut total = current;
    for j in m.jvms.iter().filter_map(|name| d.jvm(name)) {
        match jvm_runtime_count(d, j) {
            Count::Exact(n) => total += n,
            Count::Unknown => total += 1,
            Count::Unbounded => return None,
        }
    }
    Some(total)
}

/// Nodes of a mapping when every count is exact.
pub fn mapping_node_count(d: &Descriptor, m: &Mapping) -> Option<u64> {
    match mapping_sum(d, m, jvm_node_count) {
        Count::Exact(n) => Some(n),
        _ => None,
    }
}

fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// One step of a process chain, in words.
fn describe_process(p: &ProcessDefinition) -> String {
    fn login(user: &Option<String>, port: Option<u16>) -> String {
        let user = user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{user}{{}}{port}")
    }
    match &p.kind {
        ProcessKind::Jvm(j) => match &j.command_path {
            Some(path) => format!("runtime `{}` ({path})", p.id.value),
            None => format!("runtime `{}`", p.id.value),
        },
        ProcessKind::Ssh(s) => {
            format!(
                "ssh `{}` to {}",
                p.id.value,
                login(&s.login.username, s.login.port).replace("{}", &s.hostname)
            )
        }
        ProcessKind::Hierarchical(h) => {
            let front = login(&h.login.username, h.login.port).replace("{}", &h.hostname);
            match &h.internal_ip {
                Some(ip) => format!(
                    "ssh `{}` to front-end {front} (relay on {ip}), then from there",
                    p.id.value
                ),
                None => format!(
                    "ssh `{}` to front-end {front} (relay), then from there",
                    p.id.value
                ),
            }
        }
        ProcessKind::ProcessList(l) | ProcessKind::ProcessListByHost(l) => {
            let hosts = match l.hosts.as_slice() {
                [one] => one.clone(),
                [first, .., last] => format!("{} hosts, {first} … {last}", l.hosts.len()),
                [] => "no host".into(),
            };
            format!(
                "ssh `{}` to {}",
                p.id.value,
                login(&l.login.username, l.login.port).replace("{}", &hosts)
            )
        }
        ProcessKind::Slurm(s) => {
            let mut out = format!(
                "slurm `{}`: {} node(s) × {} task(s)",
                p.id.value, s.nodes, s.tasks_per_node
            );
            if let Some(part) = &s.partition {
                let _ = write!(out, ", partition {part}");
            }
            if let Some(account) = &s.account {
                let _ = write!(out, ", account {account}");
            }
            if let Some(w) = s.walltime {
                let _ = write!(out, ", walltime {}", human_duration(w));
            }
            out
        }
        ProcessKind::Pbs(s) => format!(
            "pbs `{}`: {} host(s) × {} processor(s){}",
            p.id.value,
            s.hosts_number.map_or("?".into(), |n| n.to_string()),
            s.processor_per_node.unwrap_or(1),
            s.queue
                .as_ref()
                .map(|q| format!(", queue {q}"))
                .unwrap_or_default()
        ),
        ProcessKind::Lsf(s) => format!(
            "lsf `{}`: {} processor(s){}",
            p.id.value,
            s.processor.map_or("?".into(), |n| n.to_string()),
            s.queue
                .as_ref()
                .map(|q| format!(", queue {q}"))
                .unwrap_or_default()
        ),
        ProcessKind::Oar(s) => format!(
            "oar `{}`: {}",
            p.id.value,
            s.resources.as_deref().unwrap_or("default resources")
        ),
        ProcessKind::GridEngine(s) => format!(
            "grid engine `{}`: {} host(s){}",
            p.id.value,
            s.hosts_number.map_or("?".into(), |n| n.to_string()),
            s.queue
                .as_ref()
                .map(|q| format!(", queue {q}"))
                .unwrap_or_default()
        ),
        ProcessKind::DependentSequence(_) => format!("dependent sequence `{}`", p.id.value),
        ProcessKind::IndependentSequence(_) => format!("independent sequence `{}`", p.id.value),
        ProcessKind::Mpi(m) => describe_mpi(&p.id.value, m),
    }
}

/// The `mpiProcess` that runs second in dependent sequence `s`, if it is one.
pub fn mpi_of<'d>(
    d: &'d Descriptor,
    s: &crate::model::Sequence,
) -> Option<&'d crate::model::MpiProcess> {
    if s.service.is_some() {
        return None;
    }
    match s
        .processes
        .get(1)
        .and_then(|id| d.process(id))
        .map(|p| &p.kind)
    {
        Some(ProcessKind::Mpi(m)) => Some(m),
        _ => None,
    }
}

/// An `mpiProcess`, as the command it runs.
fn describe_mpi(id: &str, m: &crate::model::MpiProcess) -> String {
    let mut out = format!("mpi `{id}`: {}", m.command_path);
    for o in &m.command_options {
        let _ = write!(out, " {o}");
    }
    if let Some(n) = m.process_number {
        let _ = write!(out, " -np {n}");
    }
    let _ = write!(out, " {}", m.program());
    if m.process_number.is_none() {
        out += " (one process per booked slot)";
    }
    out
}

/// Writes the chain starting at `id`, one arrow per link; sequences branch.
/// A sequence already written (`seen`) is named, not written again: shared
/// members would otherwise make the text exponential in the nesting.
fn write_chain<'d>(
    d: &'d Descriptor,
    id: &'d str,
    indent: usize,
    out: &mut String,
    depth: usize,
    seen: &mut HashSet<&'d str>,
) {
    let Some(p) = d.process(id) else {
        let _ = writeln!(out, "{:indent$}(unknown process `{id}`)", "");
        return;
    };
    if depth > MAX_CHAIN_DEPTH {
        return;
    }
    let is_sequence = matches!(
        p.kind,
        ProcessKind::DependentSequence(_) | ProcessKind::IndependentSequence(_)
    );
    if is_sequence && !seen.insert(p.id.as_str()) {
        let _ = writeln!(out, "{:indent$}sequence `{id}` (as above)", "");
        return;
    }
    match &p.kind {
        ProcessKind::DependentSequence(s) if mpi_of(d, s).is_some() => {
            // The first process only books hosts: what it would start
            // below it is not started.
            let _ = writeln!(
                out,
                "{:indent$}{}: an MPI run over the hosts its first process books",
                "",
                describe_process(p)
            );
            let booking = s.processes[0].as_str();
            let first = d
                .process(booking)
                .map_or_else(|| format!("(unknown `{booking}`)"), describe_process);
            let _ = writeln!(out, "{:indent$}  1. books: {first}", "");
            let _ = writeln!(
                out,
                "{:indent$}  2. runs: {}",
                "",
                d.process(&s.processes[1])
                    .map_or_else(String::new, describe_process)
            );
        }
        ProcessKind::DependentSequence(s) | ProcessKind::IndependentSequence(s) => {
            let _ = writeln!(out, "{:indent$}{}", "", describe_process(p));
            if let Some(service) = &s.service {
                let _ = writeln!(out, "{:indent$}  1. service `{}`", "", service.value);
            }
            for (i, member) in s.processes.iter().enumerate() {
                let n = i + 1 + usize::from(s.service.is_some());
                let _ = writeln!(out, "{:indent$}  {n}.", "");
                write_chain(d, member, indent + 5, out, depth + 1, seen);
            }
        }
        kind => {
            let mut line = describe_process(p);
            let mut next = kind.link().map(|l| l.next.as_str());
            let mut hops = 0;
            while let Some(id) = next.take() {
                hops += 1;
                match d.process(id) {
                    Some(n) if hops < MAX_CHAIN_DEPTH => {
                        if matches!(
                            n.kind,
                            ProcessKind::DependentSequence(_) | ProcessKind::IndependentSequence(_)
                        ) {
                            let _ = writeln!(out, "{:indent$}{line} →", "");
                            write_chain(d, id, indent + 2, out, depth + 1, seen);
                            return;
                        }
                        line += &format!(" → {}", describe_process(n));
                        next = n.kind.link().map(|l| l.next.as_str());
                    }
                    _ => line += &format!(" → (unknown `{id}`)"),
                }
            }
            let _ = writeln!(out, "{:indent$}{line}", "");
        }
    }
}

fn describe_service(kind: &ServiceKind) -> String {
    match kind {
        ServiceKind::P2p(p) => {
            let asked = match p.nodes_asked {
                NodesAsked::Count(n) => format!("{n} node(s)"),
                NodesAsked::Max => "as many nodes as peers lend (MAX)".into(),
            };
            let peers: Vec<String> = p.peers.iter().map(|p| p.value.to_string()).collect();
            format!(
                "peer-to-peer: {asked} via {} (NOA {}, TTU {}, TTL {})",
                if peers.is_empty() {
                    "a local peer".to_owned()
                } else {
                    peers.join(", ")
                },
                p.noa,
                human_duration(p.ttu),
                p.ttl
            )
        }
        ServiceKind::RegistryLookup(l) => format!("lookup of {}", l.url),
        ServiceKind::FaultTolerance(ft) => format!(
            "fault tolerance {}{}",
            match ft.protocol {
                FtProtocol::Cic => "cic",
                FtProtocol::Pml => "pml",
            },
            ft.ttc
                .map(|t| format!(", checkpoint every {}", human_duration(t)))
                .unwrap_or_default()
        ),
    }
}

/// The plan as text.
pub fn render_text(d: &Descriptor) -> String {
    let mut out = String::new();
    if !d.runtime_settings.is_empty() {
        let _ = writeln!(out, "runtime settings of every runtime started:");
        for s in &d.runtime_settings {
            let _ = writeln!(out, "  {} = {}", s.name.value, s.value.value);
        }
        out.push('\n');
    }
    for vn in &d.virtual_nodes {
        let mut head = format!(
            "virtual node `{}` ({}, timeout {}",
            vn.name.value,
            vn.property.as_str(),
            human_duration(vn.timeout)
        );
        if let Some(min) = vn.min_node_number {
            let _ = write!(head, ", at least {min} node(s)");
        }
        if vn.wait_for_timeout {
            head += ", waits the whole timeout";
        }
        let _ = writeln!(out, "{head})");
        let Some(m) = d.mapping(&vn.name) else {
            let _ = writeln!(out, "  not mapped: no node\n");
            continue;
        };
        if m.current_jvm.is_some() {
            let _ = writeln!(out, "  the application's own process: 1 runtime, 1 node");
        }
        for name in &m.jvms {
            let Some(jvm) = d.jvm(name) else { continue };
            let runtimes = jvm_runtime_count(d, jvm);
            match &jvm.source {
                RuntimeSource::Creation(id) => {
                    let _ = writeln!(
                        out,
                        "  runtime set `{}`: {runtimes} runtime(s) × {} node(s), created by",
                        jvm.name.value, jvm.asked_nodes
                    );
                    write_chain(d, id, 4, &mut out, 0, &mut HashSet::new());
                }
                RuntimeSource::Acquisition(id) => {
                    let what = d
                        .service(id)
                        .map_or_else(|| "?".to_owned(), |s| describe_service(&s.kind));
                    let _ = writeln!(
                        out,
                        "  runtime set `{}`: acquired from `{}`, {what}",
                        jvm.name.value, id.value
                    );
                }
            }
        }
        for id in &vn.technical_services {
            let def = d.technical_service(id);
            let class = def.map_or("?", |t| t.class.as_str());
            // Fault tolerance says what it protects with.
            let ft = def
                .filter(|t| crate::FAULT_TOLERANCE_CLASSES.contains(&t.class.as_str()))
                .map(|t| {
                    let arg = |name: &str| {
                        t.args
                            .iter()
                            .rev()
                            .find(|a| a.name == name)
                            .map(|a| a.value.trim().to_owned())
                    };
                    format!(
                        ": fault tolerance {}, checkpoint every {}",
                        arg("protocol").unwrap_or_else(|| "pml".to_owned()),
                        arg("ttc").unwrap_or_else(|| "30s".to_owned())
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(out, "  technical service `{}` ({class}{ft})", id.value);
        }
        if let Some(ft) = &vn.ft_service {
            let what = d
                .service(ft)
                .map_or_else(|| "?".to_owned(), |s| describe_service(&s.kind));
            let _ = writeln!(out, "  {what} (service `{}`)", ft.value);
        }
        let _ = writeln!(
            out,
            "  total: {} runtime(s), {} node(s)\n",
            mapping_sum(d, m, jvm_runtime_count),
            mapping_sum(d, m, jvm_node_count)
        );
    }
    for l in &d.lookups {
        let on = match (&l.host, l.port) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => format!("{host}, on a port given at run time"),
            (None, Some(port)) => format!("a host given at run time, port {port}"),
            (None, None) => "a host and port given at run time".to_owned(),
        };
        let _ = writeln!(
            out,
            "acquired virtual node `{}`: lookup on {on}",
            l.virtual_node.value,
        );
    }
    for r in &d.registers {
        let _ = writeln!(out, "registered for lookup: `{}`", r.virtual_node.value);
    }
    out
}

/// What a node of the plan graph stands for.
#[derive(Debug, Clone)]
enum Vertex {
    VirtualNode(String),
    CurrentProcess,
    Runtime(String, Count, u32),
    Process(String),
    Service(String),
    TechnicalService(String),
}

/// The plan as a petgraph graph, shared by `--dot`.
fn graph(d: &Descriptor) -> DiGraph<Vertex, &'static str> {
    let mut g = DiGraph::new();
    let mut index: HashMap<String, NodeIndex> = HashMap::new();
    let mut vertex = |g: &mut DiGraph<Vertex, &'static str>, key: String, v: Vertex| {
        *index.entry(key).or_insert_with(|| g.add_node(v))
    };
    for vn in &d.virtual_nodes {
        let v = vertex(
            &mut g,
            format!("vn:{}", vn.name.value),
            Vertex::VirtualNode(vn.name.value.clone()),
        );
        if let Some(m) = d.mapping(&vn.name) {
            if m.current_jvm.is_some() {
                let c = vertex(&mut g, "current".into(), Vertex::CurrentProcess);
                g.add_edge(v, c, "maps");
            }
            for name in &m.jvms {
                let Some(jvm) = d.jvm(name) else { continue };
                let r = vertex(
                    &mut g,
                    format!("jvm:{}", jvm.name.value),
                    Vertex::Runtime(
                        jvm.name.value.clone(),
                        jvm_runtime_count(d, jvm),
                        jvm.asked_nodes,
                    ),
                );
                g.add_edge(v, r, "maps");
                match &jvm.source {
                    RuntimeSource::Creation(id) => {
                        let p = vertex(
                            &mut g,
                            format!("p:{}", id.value),
                            Vertex::Process(id.value.clone()),
                        );
                        g.add_edge(r, p, "created by");
                    }
                    RuntimeSource::Acquisition(id) => {
                        let s = vertex(
                            &mut g,
                            format!("s:{}", id.value),
                            Vertex::Service(id.value.clone()),
                        );
                        g.add_edge(r, s, "acquired from");
                    }
                }
            }
        }
        for id in &vn.technical_services {
            let t = vertex(
                &mut g,
                format!("ts:{}", id.value),
                Vertex::TechnicalService(id.value.clone()),
            );
            g.add_edge(v, t, "applies");
        }
        if let Some(ft) = &vn.ft_service {
            let s = vertex(
                &mut g,
                format!("s:{}", ft.value),
                Vertex::Service(ft.value.clone()),
            );
            g.add_edge(v, s, "applies");
        }
    }
    for p in &d.processes {
        let from = vertex(
            &mut g,
            format!("p:{}", p.id.value),
            Vertex::Process(p.id.value.clone()),
        );
        if let ProcessKind::DependentSequence(s) = &p.kind {
            if let Some(service) = &s.service {
                let to = vertex(
                    &mut g,
                    format!("s:{}", service.value),
                    Vertex::Service(service.value.clone()),
                );
                g.add_edge(from, to, "first");
            }
        }
        for next in p.kind.process_references() {
            let to = vertex(
                &mut g,
                format!("p:{}", next.value),
                Vertex::Process(next.value.clone()),
            );
            let relay =
                matches!(&p.kind, ProcessKind::Hierarchical(h) if h.forwarder.value == next.value);
            g.add_edge(from, to, if relay { "relays with" } else { "then" });
        }
    }
    g
}

fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The plan as a Graphviz digraph.
pub fn render_dot(d: &Descriptor) -> String {
    let g = graph(d);
    let mut out =
        String::from("digraph deployment {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
    for i in g.node_indices() {
        let (label, shape) = match &g[i] {
            Vertex::VirtualNode(name) => (format!("VN {name}"), "doubleoctagon"),
            Vertex::CurrentProcess => ("application process".into(), "box"),
            Vertex::Runtime(name, count, nodes) => (
                format!("{name}\\n{count} runtime(s) × {nodes} node(s)"),
                "box3d",
            ),
            Vertex::Process(id) => (
                d.process(id).map_or_else(|| id.clone(), describe_process),
                "component",
            ),
            Vertex::Service(id) => (
                format!(
                    "{id}\\n{}",
                    d.service(id)
                        .map_or_else(String::new, |s| describe_service(&s.kind))
                ),
                "cylinder",
            ),
            Vertex::TechnicalService(id) => (
                format!(
                    "{id}\\n{}",
                    d.technical_service(id).map_or("", |t| t.class.as_str())
                ),
                "note",
            ),
        };
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\", shape={shape}];",
            i.index(),
            dot_escape(&label).replace("\\\\n", "\\n")
        );
    }
    for e in g.edge_indices() {
        if let Some((a, b)) = g.edge_endpoints(e) {
            let _ = writeln!(
                out,
                "  n{} -> n{} [label=\"{}\"];",
                a.index(),
                b.index(),
                g[e]
            );
        }
    }
    out.push_str("}\n");
    out
}
