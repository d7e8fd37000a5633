//! Process definitions: how a runtime is started, one link of a chain each.

use super::{Cx, Rule, Val};
use crate::hostrange;
use crate::model::MpiProcess;
use crate::model::{
    EnvVar, GridEngineProcess, HierarchicalProcess, HostListProcess, JvmProcess, Link, LsfProcess,
    OarProcess, PbsProcess, ProcessFileTransfer, ProcessFileTransfers, ProcessKind, Sequence,
    SlurmProcess, SshLogin, SshProcess,
};
use crate::scalar;
use crate::source::Spanned;
use crate::xml::Element;

const KINDS: &[&str] = &[
    "jvmProcess",
    "sshProcess",
    "rshProcess",
    "rloginProcess",
    "maprshProcess",
    "hierarchicalProcess",
    "processList",
    "processListbyHost",
    "slurmProcess",
    "pbsProcess",
    "bsubProcess",
    "lsfProcess",
    "oarProcess",
    "gridEngineProcess",
    "dependentProcessSequence",
    "independentProcessSequence",
    "mpiProcess",
];

const JAVA_ONLY: &[&str] = &[
    "classpath",
    "bootclasspath",
    "javaPath",
    "policyFile",
    "log4jpropertiesFile",
    "ProActiveUserPropertiesFile",
    "jvmParameters",
    "extendedJvm",
];

const CLOSE_STREAM: &str = "actogrid always collects the output of the processes it starts";

/// Why actogrid does not run the process kind `name`, and what to use
/// instead; `None` for the kinds it runs (or does not know at all).
/// Such a process is kept aside by the reader: it is an error only if a
/// mapped virtual node is deployed through it (see validation).
pub(crate) fn unsupported(name: &str) -> Option<&'static str> {
    Some(match name {
        "globusProcess" | "gLiteProcess" | "unicoreProcess" | "ngProcess" | "prunProcess"
        | "oarGridProcess" | "loadLevelerProcess" | "clusterForkProcess" => {
            "use <sshProcess>, <processList>, or a batch scheduler: <slurmProcess>, <pbsProcess>, <bsubProcess>, <oarProcess>, <gridEngineProcess>"
        }
        "ProActiveScheduler" => {
            "submit through a batch scheduler with <slurmProcess>, <pbsProcess> or <bsubProcess>"
        }
        _ => return None,
    })
}

pub(crate) fn read(cx: &mut Cx<'_>, el: &Element, parent: &Element) -> Option<ProcessKind> {
    match el.name.as_str() {
        "jvmProcess" => Some(ProcessKind::Jvm(jvm(cx, el))),
        "sshProcess" => ssh(cx, el).map(ProcessKind::Ssh),
        "rshProcess" | "rloginProcess" => {
            cx.over_ssh(format!("<{}>", el.name), el.span);
            ssh(cx, el).map(ProcessKind::Ssh)
        }
        "maprshProcess" => {
            cx.over_ssh(format!("<{}>", el.name), el.span);
            maprsh(cx, el).map(ProcessKind::ProcessListByHost)
        }
        "hierarchicalProcess" => hierarchical(cx, el).map(ProcessKind::Hierarchical),
        "processList" => host_list(cx, el, true).map(ProcessKind::ProcessList),
        "processListbyHost" => host_list(cx, el, false).map(ProcessKind::ProcessListByHost),
        "slurmProcess" => slurm(cx, el).map(ProcessKind::Slurm),
        "pbsProcess" => pbs(cx, el).map(ProcessKind::Pbs),
        "bsubProcess" | "lsfProcess" => lsf(cx, el).map(ProcessKind::Lsf),
        "oarProcess" => oar(cx, el).map(ProcessKind::Oar),
        "gridEngineProcess" => grid_engine(cx, el).map(ProcessKind::GridEngine),
        "dependentProcessSequence" => sequence(cx, el, true).map(ProcessKind::DependentSequence),
        "independentProcessSequence" => {
            sequence(cx, el, false).map(ProcessKind::IndependentSequence)
        }
        "mpiProcess" => mpi(cx, el).map(ProcessKind::Mpi),
        _ => {
            cx.unknown_child(el, parent, KINDS);
            None
        }
    }
}

/// The parts every decorating process shares, gathered while its children
/// are read.
#[derive(Default)]
struct Common {
    next: Option<Spanned<String>>,
    next_seen: bool,
    environment: Vec<EnvVar>,
    command_path: Option<String>,
    file_transfers: ProcessFileTransfers,
}

impl Common {
    /// Reads `child` if it is one of the shared children; `false` otherwise.
    fn child(&mut self, cx: &mut Cx<'_>, child: &Element, transfers: bool) -> bool {
        match child.name.as_str() {
            "processReference" => {
                if self.next_seen {
                    cx.error(
                        "duplicate-element",
                        child.span,
                        "a second <processReference>: a process starts exactly one next process",
                        "to start several, use an <independentProcessSequence>",
                    );
                } else {
                    self.next = cx.refid(child);
                }
                self.next_seen = true;
            }
            "environment" => self.environment.extend(environment(cx, child)),
            "commandPath" => self.command_path = command_path(cx, child),
            "fileTransferDeploy" | "fileTransferRetrieve" if transfers => {
                let transfer = process_transfer(cx, child);
                if child.name == "fileTransferDeploy" {
                    self.file_transfers.deploy = transfer;
                } else {
                    self.file_transfers.retrieve = transfer;
                }
            }
            _ => return false,
        }
        true
    }

    fn finish(self, cx: &mut Cx<'_>, el: &Element) -> Option<(Link, ProcessFileTransfers)> {
        if !self.next_seen {
            cx.error(
                "missing-element",
                el.span,
                format!("<{}> has no <processReference>: it must say which process it starts", el.name),
                "add <processReference refid=\"…\"/> naming the next process of the chain, usually a jvmProcess",
            );
        }
        let link = Link {
            next: self.next?,
            environment: self.environment,
            command_path: self.command_path,
        };
        Some((link, self.file_transfers))
    }
}

fn environment(cx: &mut Cx<'_>, el: &Element) -> Vec<EnvVar> {
    cx.container(el);
    let mut out = Vec::new();
    for var in &el.children {
        if var.name != "variable" {
            cx.unknown_child(var, el, &["variable"]);
            continue;
        }
        let mut node = cx.open(var);
        let name = cx.required(&mut node, "name");
        let value = cx.attr(&mut node, "value");
        cx.close(node);
        cx.no_children(var);
        let name = name.and_then(|n| cx.checked(n, "environment variable name", Rule::EnvName));
        let value = match value {
            Some(v) => match cx.checked(v, "environment value", Rule::EnvValue) {
                Some(v) => v.text,
                None => continue,
            },
            None => String::new(),
        };
        if let Some(name) = name {
            out.push(EnvVar {
                name: name.text,
                value,
            });
        }
    }
    out
}

fn process_transfer(cx: &mut Cx<'_>, el: &Element) -> Option<ProcessFileTransfer> {
    let mut node = cx.open(el);
    let refid = cx.required(&mut node, "refid");
    cx.close(node);
    cx.no_text(el);
    let mut transfer = ProcessFileTransfer {
        refid: Spanned::new(String::new(), el.span),
        copy_protocols: Vec::new(),
        source_prefix: None,
        destination_prefix: None,
        destination_hostname: None,
        destination_username: None,
    };
    for child in &el.children {
        match child.name.as_str() {
            "copyProtocol" => {
                if let Some(v) = cx.text(child) {
                    transfer.copy_protocols = v
                        .text
                        .split([',', ' ', '\t', '\n'])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
            }
            "sourceInfo" => {
                let mut node = cx.open(child);
                transfer.source_prefix = checked_attr(cx, &mut node, "prefix", Rule::OneLine);
                cx.ignored(
                    &mut node,
                    "hostname",
                    "files are sent from the deployer's host",
                );
                cx.ignored(
                    &mut node,
                    "username",
                    "files are sent from the deployer's host",
                );
                cx.close(node);
                cx.no_children(child);
            }
            "destinationInfo" => {
                let mut node = cx.open(child);
                transfer.destination_prefix = checked_attr(cx, &mut node, "prefix", Rule::OneLine);
                transfer.destination_hostname = checked_attr(cx, &mut node, "hostname", Rule::Host);
                transfer.destination_username = checked_attr(cx, &mut node, "username", Rule::User);
                cx.ignored(
                    &mut node,
                    "password",
                    "passwords are never read from descriptors: use an ssh key (identityFile)",
                );
                cx.close(node);
                cx.no_children(child);
            }
            _ => cx.unknown_child(
                child,
                el,
                &["copyProtocol", "sourceInfo", "destinationInfo"],
            ),
        }
    }
    transfer.refid = refid?.spanned();
    Some(transfer)
}

fn jvm(cx: &mut Cx<'_>, el: &Element) -> JvmProcess {
    let mut node = cx.open(el);
    cx.accepted(&mut node, "class");
    cx.ignored(&mut node, "closeStream", CLOSE_STREAM);
    cx.close(node);
    cx.no_text(el);
    let mut process = JvmProcess::default();
    for child in &el.children {
        match child.name.as_str() {
            "commandPath" => process.command_path = command_path(cx, child),
            "environment" => process.environment.extend(environment(cx, child)),
            name if JAVA_ONLY.contains(&name) => cx.java_only(child),
            _ => cx.unknown_child(child, el, &["commandPath", "environment"]),
        }
    }
    process
}

fn login(cx: &mut Cx<'_>, node: &mut super::Node<'_>) -> SshLogin {
    let username = cx
        .attr(node, "username")
        .filter(|u| !u.text.is_empty())
        .and_then(|v| cx.checked(v, "username", Rule::User))
        .map(|v| v.text);
    let port = cx
        .attr(node, "port")
        .and_then(|v| cx.parse(&v, "port", scalar::port));
    let identity_file = cx
        .attr(node, "identityFile")
        .filter(|f| !f.text.is_empty())
        .and_then(|v| cx.checked(v, "identityFile", Rule::OneLine))
        .map(|v| v.text);
    SshLogin {
        username,
        port,
        identity_file,
    }
}

/// Reads the children of a decorating process: the shared ones, and the
/// kind's own through `extra` (which returns `false` for what it does not know).
fn children(
    cx: &mut Cx<'_>,
    el: &Element,
    transfers: bool,
    extra_names: &[&'static str],
    mut extra: impl FnMut(&mut Cx<'_>, &Element) -> bool,
) -> Option<(Link, ProcessFileTransfers)> {
    let mut common = Common::default();
    for child in &el.children {
        if common.child(cx, child, transfers) || extra(cx, child) {
            continue;
        }
        let mut known = vec!["processReference", "environment", "commandPath"];
        if transfers {
            known.extend(["fileTransferDeploy", "fileTransferRetrieve"]);
        }
        known.extend(extra_names);
        cx.unknown_child(child, el, &known);
    }
    common.finish(cx, el)
}

/// An option block (`slurmOption`, `pbsOption`…): text children read by `f`.
fn options(
    cx: &mut Cx<'_>,
    el: &Element,
    known: &[&'static str],
    mut f: impl FnMut(&mut Cx<'_>, &Element),
) {
    cx.container(el);
    for child in &el.children {
        if known.contains(&child.name.as_str()) {
            f(cx, child);
        } else {
            cx.unknown_child(child, el, known);
        }
    }
}

/// A one-line text element (`<memory>4G</memory>`).
fn text(cx: &mut Cx<'_>, el: &Element) -> Option<String> {
    let v = cx.text(el)?;
    cx.checked(v, &format!("<{}>", el.name), Rule::OneLine)
        .map(|v| v.text)
}

/// `commandPath@value`: a program path, on one line.
fn command_path(cx: &mut Cx<'_>, el: &Element) -> Option<String> {
    let v = cx.value_of(el)?;
    cx.checked(v, "<commandPath>", Rule::OneLine)
        .map(|v| v.text)
}

/// An attribute that must follow `rule`; absent or empty is `None`.
fn checked_attr(
    cx: &mut Cx<'_>,
    node: &mut super::Node<'_>,
    name: &'static str,
    rule: Rule,
) -> Option<String> {
    let v = cx.attr(node, name).filter(|v| !v.text.is_empty())?;
    cx.checked(v, name, rule).map(|v| v.text)
}

fn positive(cx: &mut Cx<'_>, el: &Element) -> Option<u32> {
    let v = cx.text(el)?;
    cx.parse(&v, &format!("<{}>", el.name), scalar::positive)
}

fn walltime(cx: &mut Cx<'_>, el: &Element) -> Option<std::time::Duration> {
    let v = cx.text(el)?;
    cx.parse(&v, &format!("<{}>", el.name), scalar::walltime)
}

/// A whitespace-separated list (`hostlist`, `extraOptions`): line breaks
/// separate words like blanks; each word must follow `rule`.
fn words(cx: &mut Cx<'_>, el: &Element, rule: Rule) -> Vec<String> {
    let Some(v) = cx.text(el) else {
        return Vec::new();
    };
    let what = format!("<{}>", el.name);
    v.text
        .split_whitespace()
        .filter_map(|w| {
            let word = Val {
                text: w.to_owned(),
                span: v.span,
            };
            cx.checked(word, &what, rule).map(|w| w.text)
        })
        .collect()
}

fn flag(cx: &mut Cx<'_>, node: &mut super::Node<'_>, name: &'static str) -> bool {
    cx.attr(node, name)
        .and_then(|v| cx.parse(&v, name, scalar::boolean))
        .unwrap_or(false)
}

/// An optional one-line attribute (`partition`, `queue`, `jobname`…): it
/// becomes a scheduler directive, where a line break would end the line.
fn opt(cx: &mut Cx<'_>, node: &mut super::Node<'_>, name: &'static str) -> Option<String> {
    checked_attr(cx, node, name, Rule::OneLine)
}

/// Opens a process element and takes the attributes all of them share.
fn open<'e>(cx: &mut Cx<'_>, el: &'e Element) -> super::Node<'e> {
    let mut node = cx.open(el);
    cx.accepted(&mut node, "class");
    cx.ignored(&mut node, "closeStream", CLOSE_STREAM);
    cx.no_text(el);
    node
}

fn ssh(cx: &mut Cx<'_>, el: &Element) -> Option<SshProcess> {
    let mut node = open(cx, el);
    let hostname = cx
        .required(&mut node, "hostname")
        .and_then(|v| cx.checked(v, "hostname", Rule::Host));
    let login = login(cx, &mut node);
    cx.close(node);
    let (link, file_transfers) = children(cx, el, true, &[], |_, _| false)?;
    Some(SshProcess {
        hostname: hostname?.text,
        login,
        link,
        file_transfers,
    })
}

/// The host names of a space-separated list attribute (`what`), each
/// checked; a bad one is reported at the attribute and left out.
fn host_words(cx: &mut Cx<'_>, el: &Element, list: Option<&Val>, what: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    for h in list.iter().flat_map(|l| l.text.split_whitespace()) {
        let word = Val {
            text: h.to_owned(),
            span: list.map_or(el.span, |l| l.span),
        };
        if let Some(h) = cx.checked(word, what, Rule::Host) {
            hosts.push(h.text);
        }
    }
    hosts
}

/// `maprshProcess`: rsh mapped over the hosts of `hostname` (a list) by a
/// script; run as a host list over ssh, every host at once.
fn maprsh(cx: &mut Cx<'_>, el: &Element) -> Option<HostListProcess> {
    let mut node = open(cx, el);
    let list = cx.required(&mut node, "hostname");
    cx.ignored(
        &mut node,
        "parallelize",
        "every host is reached at once, over ssh",
    );
    let hosts = host_words(cx, el, list.as_ref(), "hostname");
    let login = login(cx, &mut node);
    cx.close(node);
    let (link, file_transfers) = children(cx, el, false, &["scriptPath"], |cx, child| {
        if child.name != "scriptPath" {
            return false;
        }
        cx.ignored_element(
            child,
            "actogrid reaches every host over ssh itself: the maprsh script is not used",
        );
        true
    })?;
    if hosts.is_empty() {
        return None;
    }
    Some(HostListProcess {
        hosts,
        login,
        link,
        file_transfers,
    })
}

/// `hierarchicalProcess`: ssh to a front-end (`hostname`), where the
/// forwarder (`processReference`, a jvmProcess: the program there) relays
/// for the process started from it (`hierarchicalReference`).
fn hierarchical(cx: &mut Cx<'_>, el: &Element) -> Option<HierarchicalProcess> {
    if let Some(class) = el.attrs.iter().find(|a| a.name == "class") {
        if class.value.to_ascii_lowercase().contains(".rsh.") {
            cx.over_ssh(format!("<{}> of class {}", el.name, class.value), el.span);
        }
    }
    let mut node = open(cx, el);
    let hostname = cx
        .required(&mut node, "hostname")
        .and_then(|v| cx.checked(v, "hostname", Rule::Host));
    let login = login(cx, &mut node);
    let internal_ip = checked_attr(cx, &mut node, "internal_ip", Rule::Host);
    cx.close(node);
    let mut inner: Option<Spanned<String>> = None;
    let mut inner_seen = false;
    let (forwarder, file_transfers) =
        children(cx, el, true, &["hierarchicalReference"], |cx, child| {
            if child.name != "hierarchicalReference" {
                return false;
            }
            if inner_seen {
                cx.error(
                    "duplicate-element",
                    child.span,
                    "a second <hierarchicalReference>: the front-end starts exactly one process",
                    "to start several, point it at an <independentProcessSequence>",
                );
            } else {
                inner = cx.refid(child);
            }
            inner_seen = true;
            true
        })?;
    if !inner_seen {
        cx.error(
            "missing-element",
            el.span,
            "<hierarchicalProcess> has no <hierarchicalReference>: it must say which process the front-end starts",
            "add <hierarchicalReference refid=\"…\"/> naming the process run from the front-end (ssh to the inner hosts, or a scheduler)",
        );
    }
    // The runtimes come from the inner process; the forwarder's own
    // process says where the program is on the front-end.
    let link = Link {
        next: inner?,
        environment: forwarder.environment,
        command_path: forwarder.command_path,
    };
    Some(HierarchicalProcess {
        hostname: hostname?.text,
        login,
        internal_ip,
        forwarder: forwarder.next,
        link,
        file_transfers,
    })
}

fn host_list(cx: &mut Cx<'_>, el: &Element, ranged: bool) -> Option<HostListProcess> {
    // ProActive's lists name their protocol by class: rsh and rlogin lists
    // are run over ssh too.
    if let Some(class) = el.attrs.iter().find(|a| a.name == "class") {
        let lower = class.value.to_ascii_lowercase();
        if lower.contains(".rsh.") || lower.contains("rlogin") {
            cx.over_ssh(format!("<{}> of class {}", el.name, class.value), el.span);
        }
    }
    let mut node = open(cx, el);
    let hosts = if ranged {
        let fixed = cx
            .required(&mut node, "fixedName")
            .and_then(|v| cx.checked(v, "fixedName", Rule::Host));
        let list = cx.required(&mut node, "list");
        let padding = cx.attr(&mut node, "padding").and_then(|v| {
            cx.parse(&v, "padding", |t| match t.parse::<usize>() {
                Ok(n) if n <= 20 => Ok(n),
                _ => Err(format!("`{t}` is not a digit count from 0 to 20")),
            })
        });
        cx.ignored(
            &mut node,
            "repeat",
            "one runtime is started per host; ask for more nodes with askedNodes",
        );
        let domain = checked_attr(cx, &mut node, "domain", Rule::Host);
        let numbers = list
            .as_ref()
            .and_then(|list| match hostrange::parse(&list.text) {
                Ok(numbers) => Some(numbers),
                Err(e) => {
                    let at = (list.span.start + e.offset).min(list.span.end);
                    let span = cx.sources.span(
                        list.span.file,
                        at,
                        (at + 1).min(list.span.end.max(at + 1)),
                    );
                    cx.error(
                    "bad-host-range",
                    span,
                    format!("host range `{}`: {}", list.text, e.message),
                    "write ranges as [1-10], [0-100;2] (step 2), [1-4,9] and exclusions as ^[5,7]",
                );
                    None
                }
            });
        match (fixed, numbers) {
            (Some(fixed), Some(numbers)) => numbers
                .into_iter()
                .map(|n| {
                    hostrange::host_name(&fixed.text, n, padding.unwrap_or(1), domain.as_deref())
                })
                .collect(),
            _ => Vec::new(),
        }
    } else {
        let list = cx.required(&mut node, "hostlist");
        let domain = checked_attr(cx, &mut node, "domain", Rule::Host);
        host_words(cx, el, list.as_ref(), "hostlist")
            .into_iter()
            .map(|h| match &domain {
                Some(d) => format!("{h}.{d}"),
                None => h,
            })
            .collect()
    };
    let login = login(cx, &mut node);
    cx.close(node);
    let (link, file_transfers) = children(cx, el, true, &[], |_, _| false)?;
    if hosts.is_empty() {
        return None;
    }
    Some(HostListProcess {
        hosts,
        login,
        link,
        file_transfers,
    })
}

fn slurm(cx: &mut Cx<'_>, el: &Element) -> Option<SlurmProcess> {
    let mut node = open(cx, el);
    let job_name = opt(cx, &mut node, "jobname");
    let partition = opt(cx, &mut node, "partition");
    let account = opt(cx, &mut node, "account");
    cx.close(node);
    let mut p = SlurmProcess {
        job_name,
        partition,
        account,
        nodes: 1,
        tasks_per_node: 1,
        cpus_per_task: None,
        walltime: None,
        memory: None,
        extra_options: Vec::new(),
        output_file: None,
        error_file: None,
        script_path: None,
        link: placeholder_link(el),
    };
    const OPTIONS: &[&str] = &[
        "nodes",
        "tasksPerNode",
        "cpusPerTask",
        "walltime",
        "memory",
        "extraOptions",
        "outputFile",
        "errorFile",
        "scriptPath",
    ];
    let (link, _) = children(cx, el, false, &["slurmOption"], |cx, child| {
        if child.name != "slurmOption" {
            return false;
        }
        options(cx, child, OPTIONS, |cx, o| match o.name.as_str() {
            "nodes" => p.nodes = positive(cx, o).unwrap_or(p.nodes),
            "tasksPerNode" => p.tasks_per_node = positive(cx, o).unwrap_or(p.tasks_per_node),
            "cpusPerTask" => p.cpus_per_task = positive(cx, o),
            "walltime" => p.walltime = walltime(cx, o),
            "memory" => p.memory = text(cx, o),
            "extraOptions" => p.extra_options = words(cx, o, Rule::OneLine),
            "outputFile" => p.output_file = cx.path(o),
            "errorFile" => p.error_file = cx.path(o),
            _ => p.script_path = cx.path(o),
        });
        true
    })?;
    p.link = link;
    Some(p)
}

/// Filled in once the children are read; never seen outside this module.
fn placeholder_link(el: &Element) -> Link {
    Link {
        next: Spanned::new(String::new(), el.span),
        environment: Vec::new(),
        command_path: None,
    }
}

fn pbs(cx: &mut Cx<'_>, el: &Element) -> Option<PbsProcess> {
    let mut node = open(cx, el);
    let interactive = flag(cx, &mut node, "interactive");
    let queue = opt(cx, &mut node, "queue");
    let job_name = opt(cx, &mut node, "jobname");
    cx.close(node);
    let mut p = PbsProcess {
        interactive,
        queue,
        job_name,
        hostlist: Vec::new(),
        hosts_number: None,
        processor_per_node: None,
        booking_duration: None,
        output_file: None,
        script_path: None,
        link: placeholder_link(el),
    };
    const OPTIONS: &[&str] = &[
        "hostlist",
        "hostsNumber",
        "processorPerNode",
        "bookingDuration",
        "outputFile",
        "scriptPath",
    ];
    let (link, _) = children(cx, el, false, &["pbsOption"], |cx, child| {
        if child.name != "pbsOption" {
            return false;
        }
        options(cx, child, OPTIONS, |cx, o| match o.name.as_str() {
            "hostlist" => p.hostlist = words(cx, o, Rule::Host),
            "hostsNumber" => p.hosts_number = positive(cx, o),
            "processorPerNode" => p.processor_per_node = positive(cx, o),
            "bookingDuration" => p.booking_duration = walltime(cx, o),
            "outputFile" => p.output_file = cx.path(o),
            _ => p.script_path = cx.path(o),
        });
        true
    })?;
    p.link = link;
    Some(p)
}

fn lsf(cx: &mut Cx<'_>, el: &Element) -> Option<LsfProcess> {
    let mut node = open(cx, el);
    let interactive = flag(cx, &mut node, "interactive");
    let job_name = opt(cx, &mut node, "jobname");
    let queue = opt(cx, &mut node, "queue");
    cx.close(node);
    let mut p = LsfProcess {
        interactive,
        job_name,
        queue,
        hostlist: Vec::new(),
        processor: None,
        resource_requirement: None,
        script_path: None,
        link: placeholder_link(el),
    };
    const OPTIONS: &[&str] = &["hostlist", "processor", "resourceRequirement", "scriptPath"];
    let (link, _) = children(cx, el, false, &["bsubOption"], |cx, child| {
        if child.name != "bsubOption" {
            return false;
        }
        options(cx, child, OPTIONS, |cx, o| match o.name.as_str() {
            "hostlist" => p.hostlist = words(cx, o, Rule::Host),
            "processor" => p.processor = positive(cx, o),
            "resourceRequirement" => {
                p.resource_requirement = cx
                    .value_of(o)
                    .and_then(|v| cx.checked(v, "resourceRequirement", Rule::OneLine))
                    .map(|v| v.text);
            }
            _ => p.script_path = cx.path(o),
        });
        true
    })?;
    p.link = link;
    Some(p)
}

fn oar(cx: &mut Cx<'_>, el: &Element) -> Option<OarProcess> {
    let mut node = open(cx, el);
    let booked_nodes_access = cx.attr(&mut node, "bookedNodesAccess").and_then(|v| {
        cx.parse(&v, "bookedNodesAccess", |t| match t {
            "rsh" | "ssh" | "oarsh" => Ok(t.to_owned()),
            _ => Err(format!("`{t}` is not one of oarsh, ssh, rsh")),
        })
    });
    let interactive = flag(cx, &mut node, "interactive");
    let queue = opt(cx, &mut node, "queue");
    cx.close(node);
    let mut p = OarProcess {
        booked_nodes_access,
        interactive,
        queue,
        resources: None,
        script_path: None,
        link: placeholder_link(el),
    };
    let (link, _) = children(cx, el, false, &["oarOption"], |cx, child| {
        if child.name != "oarOption" {
            return false;
        }
        options(cx, child, &["resources", "scriptPath"], |cx, o| {
            match o.name.as_str() {
                "resources" => p.resources = text(cx, o),
                _ => p.script_path = cx.path(o),
            }
        });
        true
    })?;
    p.link = link;
    Some(p)
}

fn grid_engine(cx: &mut Cx<'_>, el: &Element) -> Option<GridEngineProcess> {
    let mut node = open(cx, el);
    let interactive = flag(cx, &mut node, "interactive");
    let queue = opt(cx, &mut node, "queue");
    cx.close(node);
    let mut p = GridEngineProcess {
        interactive,
        queue,
        hosts_number: None,
        booking_duration: None,
        parallel_environment: None,
        hostlist: Vec::new(),
        script_path: None,
        link: placeholder_link(el),
    };
    const OPTIONS: &[&str] = &[
        "hostsNumber",
        "bookingDuration",
        "parallelEnvironment",
        "hostlist",
        "scriptPath",
    ];
    let (link, _) = children(cx, el, false, &["gridEngineOption"], |cx, child| {
        if child.name != "gridEngineOption" {
            return false;
        }
        options(cx, child, OPTIONS, |cx, o| match o.name.as_str() {
            "hostsNumber" => p.hosts_number = positive(cx, o),
            "bookingDuration" => p.booking_duration = walltime(cx, o),
            "parallelEnvironment" => p.parallel_environment = text(cx, o),
            "hostlist" => p.hostlist = words(cx, o, Rule::Host),
            _ => p.script_path = cx.path(o),
        });
        true
    })?;
    p.link = link;
    Some(p)
}

fn sequence(cx: &mut Cx<'_>, el: &Element, dependent: bool) -> Option<Sequence> {
    let mut node = cx.open(el);
    cx.accepted(&mut node, "class");
    cx.close(node);
    cx.no_text(el);
    let mut out = Sequence {
        service: None,
        processes: Vec::new(),
    };
    for (i, child) in el.children.iter().enumerate() {
        match child.name.as_str() {
            "processReference" => out.processes.extend(cx.refid(child)),
            "serviceReference" if dependent && i == 0 => out.service = cx.refid(child),
            "serviceReference" if dependent => cx.error(
                "misplaced-element",
                child.span,
                "<serviceReference> must come first in a dependentProcessSequence",
                "move it before the processReferences",
            ),
            _ => cx.unknown_child(
                child,
                el,
                if dependent {
                    &["serviceReference", "processReference"]
                } else {
                    &["processReference"]
                },
            ),
        }
    }
    let needed = if dependent && out.service.is_none() {
        2
    } else {
        1
    };
    if out.processes.len() < needed
        && el.children.len() == out.processes.len() + usize::from(out.service.is_some())
    {
        cx.error(
            "missing-element",
            el.span,
            format!("<{}> needs at least {needed} <processReference>", el.name),
            if dependent {
                "a dependent sequence runs a first process (or service), then processes that use what it produced"
            } else {
                "list the processes to start side by side"
            },
        );
        return None;
    }
    Some(out)
}

/// `mpiProcess`: `@mpiFileName` (required), `@hostsFileName`,
/// `@mpiCommandOptions`; `commandPath` (required: the `mpirun`) and
/// `mpiOptions{processNumber, localRelativePath, remoteAbsolutePath}`.
fn mpi(cx: &mut Cx<'_>, el: &Element) -> Option<MpiProcess> {
    let mut node = open(cx, el);
    let file_name = cx
        .required(&mut node, "mpiFileName")
        .and_then(|v| cx.checked(v, "mpiFileName", Rule::OneLine));
    let hosts_file_name = checked_attr(cx, &mut node, "hostsFileName", Rule::OneLine);
    let command_options = cx
        .attr(&mut node, "mpiCommandOptions")
        .and_then(|v| cx.checked(v, "mpiCommandOptions", Rule::OneLine))
        .and_then(|v| cx.parse(&v, "mpiCommandOptions", shell_words));
    cx.close(node);
    let mut command_path = None;
    let mut command_path_seen = false;
    let mut process_number = None;
    let mut local_relative_path = None;
    let mut remote_absolute_path = None;
    for child in &el.children {
        match child.name.as_str() {
            "commandPath" => {
                command_path_seen = true;
                command_path = command_path_of(cx, child);
            }
            "mpiOptions" => {
                const OPTIONS: &[&str] =
                    &["processNumber", "localRelativePath", "remoteAbsolutePath"];
                options(cx, child, OPTIONS, |cx, o| match o.name.as_str() {
                    "processNumber" => process_number = positive(cx, o),
                    "localRelativePath" => local_relative_path = cx.path(o),
                    _ => remote_absolute_path = cx.path(o),
                });
            }
            _ => cx.unknown_child(child, el, &["commandPath", "mpiOptions"]),
        }
    }
    if !command_path_seen {
        cx.error(
            "missing-element",
            el.span,
            "<mpiProcess> has no <commandPath>: it must say which mpirun to run",
            "add <commandPath value=\"mpirun\"/> (or the full path of your MPI's mpirun)",
        );
    }
    if let Some(path) = &remote_absolute_path {
        if !path.starts_with('/') {
            cx.error(
                "bad-value",
                el.span,
                format!("<remoteAbsolutePath> `{path}` is not an absolute path"),
                "write the directory of the MPI program on the booked hosts from `/`",
            );
            return None;
        }
    }
    Some(MpiProcess {
        file_name: file_name?.text,
        hosts_file_name,
        command_options: command_options.unwrap_or_default(),
        command_path: command_path?,
        process_number,
        local_relative_path,
        remote_absolute_path,
    })
}

/// `commandPath@value` of an mpiProcess: not empty.
fn command_path_of(cx: &mut Cx<'_>, el: &Element) -> Option<String> {
    let path = command_path(cx, el)?;
    if path.trim().is_empty() {
        cx.error(
            "empty-value",
            el.span,
            "`value` of <commandPath> is empty",
            "name the mpirun to run, such as mpirun or /usr/bin/mpirun",
        );
        return None;
    }
    Some(path)
}

/// Splits `text` into words as a POSIX shell would, without expanding
/// anything: blanks separate words, single quotes keep everything, double
/// quotes keep everything but `\"` and `\\`, a backslash outside quotes
/// keeps the next character.
pub(crate) fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err(format!(
                                "`{text}` opens a single quote that is never closed: close it with '"
                            ));
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => break,
                        },
                        Some(c) => word.push(c),
                        None => {
                            return Err(format!(
                                "`{text}` opens a double quote that is never closed: close it with \""
                            ));
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod mpi_tests {
    use super::shell_words;

    #[test]
    fn mpirun_options_split_like_a_shell() {
        assert_eq!(
            shell_words("--mca plm_rsh_agent 'ssh -F /x y' -x \"A=b c\" a\\ b").unwrap(),
            [
                "--mca",
                "plm_rsh_agent",
                "ssh -F /x y",
                "-x",
                "A=b c",
                "a b"
            ]
        );
        assert_eq!(shell_words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(shell_words("''").unwrap(), [""]);
        assert!(shell_words("--x 'open").is_err());
        assert!(shell_words("\"open").is_err());
    }
}
