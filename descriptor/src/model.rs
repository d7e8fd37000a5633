//! The typed model of a deployment descriptor.
//!
//! Everything here has been read, variable-expanded and checked: numbers are
//! numbers, durations are [`Duration`]s, host ranges are host lists. Names
//! and references keep their position ([`Spanned`]) so later stages (the
//! deployer, technical services) can still point at the line that asked for
//! something when it fails at run time.

use std::time::Duration;

use serde::Serialize;

use crate::source::{Span, Spanned};

/// A whole descriptor.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Descriptor {
    /// Variables after the contract was applied, in declaration order.
    pub variables: Vec<Variable>,
    /// `runtimeSettings/setting`: settings of every runtime the deployment
    /// starts, in file order. The names and values are checked by the
    /// program that deploys (it knows the runtime's settings).
    pub runtime_settings: Vec<RuntimeSetting>,
    /// `mainDefinition` elements.
    pub main_definitions: Vec<MainDefinition>,
    /// `componentDefinition/virtualNodesDefinition/virtualNode`.
    pub virtual_nodes: Vec<VirtualNode>,
    /// `componentDefinition/virtualNodesAcquisition/virtualNode`.
    pub acquired_virtual_nodes: Vec<AcquiredVirtualNode>,
    /// `deployment/register`.
    pub registers: Vec<Register>,
    /// `deployment/mapping/map`.
    pub mappings: Vec<Mapping>,
    /// `deployment/lookup`.
    pub lookups: Vec<Lookup>,
    /// `deployment/jvms/jvm`: the runtimes.
    pub jvms: Vec<Jvm>,
    /// `infrastructure/processes/processDefinition`.
    pub processes: Vec<ProcessDefinition>,
    /// `infrastructure/services/serviceDefinition` and `acquisition/acquisitionDefinition`.
    pub services: Vec<ServiceDefinition>,
    /// `technicalServices/technicalServiceDefinition` (or the slide form).
    pub technical_services: Vec<TechnicalServiceDefinition>,
    /// `fileTransferDefinitions/fileTransfer`.
    pub file_transfers: Vec<FileTransfer>,
    /// Ids of definitions whose content was rejected, and ids and names
    /// written inside unknown elements: references to them are not reported
    /// again as unresolved.
    #[serde(skip)]
    pub(crate) rejected_ids: Vec<String>,
    /// Definitions of process and service kinds actogrid does not run
    /// (rsh, Globus, gLite, ProActive's scheduler…), kept aside: validation
    /// refuses those a mapped virtual node is deployed through and warns
    /// about the others.
    #[serde(skip)]
    pub(crate) unsupported: Vec<Unsupported>,
    /// Definitions by id (see [`Descriptor::reindex`]).
    #[serde(skip)]
    pub(crate) index: Index,
}

/// A process or service definition of a kind actogrid does not run.
#[derive(Debug, Clone)]
pub(crate) struct Unsupported {
    /// The definition's `@id`, when it has a usable one.
    pub(crate) id: Option<Spanned<String>>,
    /// Its element, such as `globusProcess`.
    pub(crate) element: String,
    /// Where the element is.
    pub(crate) at: Span,
    /// What to use instead.
    pub(crate) hint: &'static str,
}

/// Positions of the definitions by id, so that following the references of
/// a large descriptor (a chain of thousands of processes) takes linear
/// time. A hit is checked against the definition it points at, so an index
/// made stale by changes to the model is never wrong about what it finds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    virtual_nodes: Keys,
    jvms: Keys,
    processes: Keys,
    services: Keys,
    technical_services: Keys,
    mappings: Keys,
}

/// The first position of each key, and how many items were indexed.
#[derive(Debug, Clone, Default)]
struct Keys {
    first: std::collections::HashMap<String, usize>,
    len: usize,
}

impl Keys {
    fn of<'a>(keys: impl Iterator<Item = &'a str>) -> Keys {
        let mut first = std::collections::HashMap::new();
        let mut len = 0;
        for (i, key) in keys.enumerate() {
            first.entry(key.to_owned()).or_insert(i);
            len = i + 1;
        }
        Keys { first, len }
    }

    /// The first item whose key is `key`.
    fn find<'a, T>(&self, items: &'a [T], key: &str, key_of: impl Fn(&T) -> &str) -> Option<&'a T> {
        match self.first.get(key).and_then(|&i| items.get(i)) {
            Some(item) if key_of(item) == key => Some(item),
            // Indexed, unchanged in length, and not there.
            None if self.len == items.len() && self.len > 0 => None,
            // Not indexed, or the model changed since: look.
            _ => items.iter().find(|item| key_of(item) == key),
        }
    }
}

impl Descriptor {
    /// Rebuilds the index of definitions by id. The reader calls it; call
    /// it again after renaming definitions of a model in place (lookups
    /// stay right for definitions added or removed, and are only slower
    /// until then).
    pub fn reindex(&mut self) {
        self.index = Index {
            virtual_nodes: Keys::of(self.virtual_nodes.iter().map(|v| v.name.as_str())),
            jvms: Keys::of(self.jvms.iter().map(|j| j.name.as_str())),
            processes: Keys::of(self.processes.iter().map(|p| p.id.as_str())),
            services: Keys::of(self.services.iter().map(|s| s.id.as_str())),
            technical_services: Keys::of(self.technical_services.iter().map(|s| s.id.as_str())),
            mappings: Keys::of(self.mappings.iter().map(|m| m.virtual_node.as_str())),
        };
    }

    /// The virtual node defined under `name`.
    pub fn virtual_node(&self, name: &str) -> Option<&VirtualNode> {
        self.index
            .virtual_nodes
            .find(&self.virtual_nodes, name, |v| v.name.as_str())
    }

    /// The runtime (`jvm`) named `name`.
    pub fn jvm(&self, name: &str) -> Option<&Jvm> {
        self.index.jvms.find(&self.jvms, name, |j| j.name.as_str())
    }

    /// The process definition with id `id`.
    pub fn process(&self, id: &str) -> Option<&ProcessDefinition> {
        self.index
            .processes
            .find(&self.processes, id, |p| p.id.as_str())
    }

    /// The service definition with id `id`.
    pub fn service(&self, id: &str) -> Option<&ServiceDefinition> {
        self.index
            .services
            .find(&self.services, id, |s| s.id.as_str())
    }

    /// The technical service with id `id`.
    pub fn technical_service(&self, id: &str) -> Option<&TechnicalServiceDefinition> {
        self.index
            .technical_services
            .find(&self.technical_services, id, |s| s.id.as_str())
    }

    /// The mapping of a virtual node.
    pub fn mapping(&self, virtual_node: &str) -> Option<&Mapping> {
        self.index
            .mappings
            .find(&self.mappings, virtual_node, |m| m.virtual_node.as_str())
    }

    /// The value of a variable after the contract was applied.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|v| *v.name == name)
            .map(|v| v.value.as_str())
    }
}

/// `runtimeSettings/setting`: one runtime setting (`heartbeatTimeout`,
/// `30s`).
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeSetting {
    /// `@name`, as written (any spelling of a setting's name).
    pub name: Spanned<String>,
    /// `@value`, variables expanded.
    pub value: Spanned<String>,
}

/// A resolved variable.
#[derive(Debug, Clone, Serialize)]
pub struct Variable {
    /// Its name.
    pub name: Spanned<String>,
    /// The kind it was declared with.
    pub kind: VariableKind,
    /// Its value.
    pub value: String,
    /// Who gave the value that won.
    pub set_by: Party,
}

/// The kinds of the variable contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VariableKind {
    /// `descriptorVariable`: the descriptor sets it.
    DescriptorVariable,
    /// `programVariable`: the program must set it.
    ProgramVariable,
    /// `descriptorDefaultVariable`: the descriptor gives a default the program may override.
    DescriptorDefaultVariable,
    /// `programDefaultVariable`: the program gives a default the descriptor overrides.
    ProgramDefaultVariable,
    /// `javaPropertyVariable`: read from the environment.
    JavaPropertyVariable,
    /// `javaPropertyDescriptorDefault`: environment, else descriptor, else program.
    JavaPropertyDescriptorDefault,
    /// `javaPropertyProgramDefault`: environment, else program, else descriptor.
    JavaPropertyProgramDefault,
}

/// Who may set a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Party {
    /// The descriptor (or a file it includes).
    Descriptor,
    /// The program (API or `--var`).
    Program,
    /// The environment of the process reading the descriptor.
    Environment,
}

/// `mainDefinition`.
#[derive(Debug, Clone, Serialize)]
pub struct MainDefinition {
    /// `@id`.
    pub id: Spanned<String>,
    /// `@class`.
    pub class: String,
    /// `arg@value`, in order.
    pub args: Vec<String>,
    /// `mapToVirtualNode@value`.
    pub virtual_nodes: Vec<Spanned<String>>,
}

/// Cardinality of a virtual node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VnProperty {
    /// One runtime.
    Unique,
    /// One runtime and one active object.
    UniqueSingleAo,
    /// Any number of runtimes.
    #[default]
    Multiple,
    /// Any number of runtimes, nodes handed out cyclically.
    MultipleCyclic,
}

impl VnProperty {
    /// `true` for `unique` and `unique_singleAO`.
    pub fn is_unique(self) -> bool {
        matches!(self, VnProperty::Unique | VnProperty::UniqueSingleAo)
    }

    /// The name used in descriptors.
    pub fn as_str(self) -> &'static str {
        match self {
            VnProperty::Unique => "unique",
            VnProperty::UniqueSingleAo => "unique_singleAO",
            VnProperty::Multiple => "multiple",
            VnProperty::MultipleCyclic => "multiple_cyclic",
        }
    }
}

/// Default VN timeout, as in ProActive: 70 s.
pub const DEFAULT_VN_TIMEOUT: Duration = Duration::from_millis(70_000);

/// A virtual node defined by this descriptor.
#[derive(Debug, Clone, Serialize)]
pub struct VirtualNode {
    /// `@name`.
    pub name: Spanned<String>,
    /// `@property`.
    pub property: VnProperty,
    /// `@timeout`: how long `nodes()` waits.
    #[serde(serialize_with = "millis")]
    pub timeout: Duration,
    /// `@waitForTimeout`: wait the whole timeout even when every node is there.
    pub wait_for_timeout: bool,
    /// `@minNodeNumber`: enough nodes to go on.
    pub min_node_number: Option<u32>,
    /// `@technicalServiceId` / `@serviceRefid`: technical services, applied in order.
    pub technical_services: Vec<Spanned<String>>,
    /// `@ftServiceId`: a fault-tolerance service definition.
    pub ft_service: Option<Spanned<String>>,
    /// `@fileTransferDeploy`.
    pub file_transfer_deploy: Option<Spanned<String>>,
    /// `@fileTransferRetrieve`.
    pub file_transfer_retrieve: Option<Spanned<String>>,
    /// `information` text.
    pub information: Option<String>,
}

/// A virtual node registered by another application, obtained by lookup.
#[derive(Debug, Clone, Serialize)]
pub struct AcquiredVirtualNode {
    /// `@name`.
    pub name: Spanned<String>,
    /// `@timeout`: how long `nodes()` waits at most (it returns as soon as
    /// every node the looked-up directories list has joined).
    #[serde(serialize_with = "millis")]
    pub timeout: Duration,
    /// `@minNodeNumber`: enough nodes to go on.
    pub min_node_number: Option<u32>,
    /// `information` text.
    pub information: Option<String>,
}

/// `register@virtualNode`: publish a VN so other programs can look it up.
#[derive(Debug, Clone, Serialize)]
pub struct Register {
    /// The VN to publish.
    pub virtual_node: Spanned<String>,
}

/// `mapping/map`: the runtimes of a virtual node.
#[derive(Debug, Clone, Serialize)]
pub struct Mapping {
    /// `@virtualNode`.
    pub virtual_node: Spanned<String>,
    /// `currentJVM`: the application's own process is a node of this VN.
    pub current_jvm: Option<Span>,
    /// `vmName@value`: runtimes by name.
    pub jvms: Vec<Spanned<String>>,
}

/// `lookup`: acquire a VN registered elsewhere.
#[derive(Debug, Clone, Serialize)]
pub struct Lookup {
    /// `@virtualNode`.
    pub virtual_node: Spanned<String>,
    /// `@host`; `None` for `*` (given at run time).
    pub host: Option<String>,
    /// `@port`; `None` for `*` (given at run time).
    pub port: Option<u16>,
}

/// `jvms/jvm`: a runtime (or a set of runtimes, for lists and schedulers).
#[derive(Debug, Clone, Serialize)]
pub struct Jvm {
    /// `@name`.
    pub name: Spanned<String>,
    /// `@askedNodes`: nodes per runtime.
    pub asked_nodes: u32,
    /// `@runtimes` (an actogrid extension): how many times its process
    /// chain is started (default 1), e.g. one local runtime per core.
    pub runtimes: u32,
    /// How the runtime comes to exist.
    pub source: RuntimeSource,
}

/// How a runtime comes to exist.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeSource {
    /// `creation/processReference@refid`: started by a process chain.
    Creation(Spanned<String>),
    /// `acquisition/serviceReference@refid`: acquired from a service.
    Acquisition(Spanned<String>),
}

/// `processDefinition`.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessDefinition {
    /// `@id`.
    pub id: Spanned<String>,
    /// Where the process element is.
    pub at: Span,
    /// What it starts and how.
    pub kind: ProcessKind,
}

/// The process kinds actogrid can start.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    /// `jvmProcess`: the actogrid runtime itself, started on the machine the chain reached.
    Jvm(JvmProcess),
    /// `sshProcess`.
    Ssh(SshProcess),
    /// `hierarchicalProcess`: ssh to a front-end that relays for the
    /// hosts behind it.
    Hierarchical(HierarchicalProcess),
    /// `processList`: ssh to hosts named by a range.
    ProcessList(HostListProcess),
    /// `processListbyHost`: ssh to a list of hosts.
    ProcessListByHost(HostListProcess),
    /// `slurmProcess`.
    Slurm(SlurmProcess),
    /// `pbsProcess`.
    Pbs(PbsProcess),
    /// `bsubProcess` / `lsfProcess`.
    Lsf(LsfProcess),
    /// `oarProcess`.
    Oar(OarProcess),
    /// `gridEngineProcess`.
    GridEngine(GridEngineProcess),
    /// `dependentProcessSequence`.
    DependentSequence(Sequence),
    /// `independentProcessSequence`.
    IndependentSequence(Sequence),
    /// `mpiProcess`: `mpirun` over the hosts the first process of its
    /// `dependentProcessSequence` booked.
    Mpi(MpiProcess),
}

impl ProcessKind {
    /// The element name used in descriptors.
    pub fn element_name(&self) -> &'static str {
        match self {
            ProcessKind::Jvm(_) => "jvmProcess",
            ProcessKind::Ssh(_) => "sshProcess",
            ProcessKind::Hierarchical(_) => "hierarchicalProcess",
            ProcessKind::ProcessList(_) => "processList",
            ProcessKind::ProcessListByHost(_) => "processListbyHost",
            ProcessKind::Slurm(_) => "slurmProcess",
            ProcessKind::Pbs(_) => "pbsProcess",
            ProcessKind::Lsf(_) => "bsubProcess",
            ProcessKind::Oar(_) => "oarProcess",
            ProcessKind::GridEngine(_) => "gridEngineProcess",
            ProcessKind::DependentSequence(_) => "dependentProcessSequence",
            ProcessKind::IndependentSequence(_) => "independentProcessSequence",
            ProcessKind::Mpi(_) => "mpiProcess",
        }
    }

    /// The link to the next process of the chain, for decorating processes.
    pub fn link(&self) -> Option<&Link> {
        match self {
            ProcessKind::Ssh(p) => Some(&p.link),
            ProcessKind::Hierarchical(p) => Some(&p.link),
            ProcessKind::ProcessList(p) | ProcessKind::ProcessListByHost(p) => Some(&p.link),
            ProcessKind::Slurm(p) => Some(&p.link),
            ProcessKind::Pbs(p) => Some(&p.link),
            ProcessKind::Lsf(p) => Some(&p.link),
            ProcessKind::Oar(p) => Some(&p.link),
            ProcessKind::GridEngine(p) => Some(&p.link),
            ProcessKind::Jvm(_)
            | ProcessKind::DependentSequence(_)
            | ProcessKind::IndependentSequence(_) => None,
            ProcessKind::Mpi(_) => None,
        }
    }

    /// Every process id this one refers to, in order.
    pub fn process_references(&self) -> Vec<&Spanned<String>> {
        match self {
            ProcessKind::DependentSequence(s) | ProcessKind::IndependentSequence(s) => {
                s.processes.iter().collect()
            }
            ProcessKind::Hierarchical(h) => vec![&h.link.next, &h.forwarder],
            other => other.link().map(|l| &l.next).into_iter().collect(),
        }
    }

    /// How many runtimes one run of this process starts, per runtime of the
    /// process it wraps (`None` when only the scheduler knows).
    pub fn fan_out(&self) -> Option<u64> {
        match self {
            ProcessKind::Jvm(_) | ProcessKind::Ssh(_) | ProcessKind::Hierarchical(_) => Some(1),
            ProcessKind::ProcessList(p) | ProcessKind::ProcessListByHost(p) => {
                Some(p.hosts.len() as u64)
            }
            ProcessKind::Slurm(p) => Some(u64::from(p.nodes) * u64::from(p.tasks_per_node)),
            ProcessKind::Pbs(p) => match (p.hosts_number, p.processor_per_node) {
                (Some(h), ppn) => Some(u64::from(h) * u64::from(ppn.unwrap_or(1))),
                (None, _) if !p.hostlist.is_empty() => Some(p.hostlist.len() as u64),
                _ => None,
            },
            ProcessKind::Lsf(p) => p.processor.map(u64::from),
            ProcessKind::GridEngine(p) => p.hosts_number.map(u64::from),
            ProcessKind::Oar(_) => None,
            ProcessKind::DependentSequence(_) | ProcessKind::IndependentSequence(_) => None,
            ProcessKind::Mpi(_) => Some(0),
        }
    }
}

/// What a decorating process (ssh, scheduler) runs next.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    /// `processReference@refid`: the next process of the chain.
    pub next: Spanned<String>,
    /// `environment/variable`: set for the next process.
    pub environment: Vec<EnvVar>,
    /// `commandPath@value`: the client binary to use (ssh, sbatch, qsub…).
    pub command_path: Option<String>,
}

/// `environment/variable`.
#[derive(Debug, Clone, Serialize)]
pub struct EnvVar {
    /// `@name`.
    pub name: String,
    /// `@value`.
    pub value: String,
}

/// `jvmProcess`: the actogrid node runtime.
#[derive(Debug, Clone, Serialize, Default)]
pub struct JvmProcess {
    /// `commandPath@value`: the binary to start (default: the application's own).
    pub command_path: Option<String>,
    /// `environment/variable`.
    pub environment: Vec<EnvVar>,
}

/// How to log in over ssh.
#[derive(Debug, Clone, Serialize)]
pub struct SshLogin {
    /// `@username`; `None` uses the ssh configuration.
    pub username: Option<String>,
    /// `@port`; `None` uses the ssh configuration (22 by default).
    pub port: Option<u16>,
    /// `@identityFile`: private key to use.
    pub identity_file: Option<String>,
}

/// `sshProcess`.
#[derive(Debug, Clone, Serialize)]
pub struct SshProcess {
    /// `@hostname`.
    pub hostname: String,
    /// Login options.
    pub login: SshLogin,
    /// The next process.
    pub link: Link,
    /// Files pushed before the runtime starts / pulled back on request.
    pub file_transfers: ProcessFileTransfers,
}

/// `hierarchicalProcess`: the classic cluster behind a gateway. The
/// deployer logs in to the front-end (`hostname`) over ssh, starts a relay
/// there (the program named by the forwarder's jvmProcess), and runs the
/// inner process (`hierarchicalReference`) from the front-end; runtimes
/// started behind it reach the deployer through the relay.
#[derive(Debug, Clone, Serialize)]
pub struct HierarchicalProcess {
    /// `@hostname`: the front-end.
    pub hostname: String,
    /// Login options.
    pub login: SshLogin,
    /// `@internal_ip`: the front-end's address on the inner network (where
    /// the relay listens); its host name when absent.
    pub internal_ip: Option<String>,
    /// `processReference@refid`: the forwarder, a jvmProcess (the program
    /// on the front-end).
    pub forwarder: Spanned<String>,
    /// `hierarchicalReference@refid` as the next process (the runtimes
    /// come from it), with the element's environment and commandPath.
    pub link: Link,
    /// Files pushed to the front-end / pulled back from it.
    pub file_transfers: ProcessFileTransfers,
}

/// `processList` and `processListbyHost`: one ssh runtime per host.
#[derive(Debug, Clone, Serialize)]
pub struct HostListProcess {
    /// Host names, fully expanded (`fixedName` + padded number + `.domain`).
    pub hosts: Vec<String>,
    /// Login options.
    pub login: SshLogin,
    /// The next process.
    pub link: Link,
    /// File transfers.
    pub file_transfers: ProcessFileTransfers,
}

/// `fileTransferDeploy` / `fileTransferRetrieve` inside a process.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ProcessFileTransfers {
    /// Pushed before the runtime starts.
    pub deploy: Option<ProcessFileTransfer>,
    /// Pulled back on request.
    pub retrieve: Option<ProcessFileTransfer>,
}

/// One file-transfer reference of a process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFileTransfer {
    /// `@refid`: a fileTransfer id, or `implicit` for the VN's.
    pub refid: Spanned<String>,
    /// `copyProtocol`, in order of preference.
    pub copy_protocols: Vec<String>,
    /// `sourceInfo@prefix`.
    pub source_prefix: Option<String>,
    /// `destinationInfo@prefix`.
    pub destination_prefix: Option<String>,
    /// `destinationInfo@hostname`.
    pub destination_hostname: Option<String>,
    /// `destinationInfo@username`.
    pub destination_username: Option<String>,
}

/// `slurmProcess`: an `sbatch` job whose steps start the runtimes.
#[derive(Debug, Clone, Serialize)]
pub struct SlurmProcess {
    /// `@jobname`.
    pub job_name: Option<String>,
    /// `@partition`.
    pub partition: Option<String>,
    /// `@account`.
    pub account: Option<String>,
    /// `nodes` (default 1).
    pub nodes: u32,
    /// `tasksPerNode` (default 1): runtimes per node.
    pub tasks_per_node: u32,
    /// `cpusPerTask`.
    pub cpus_per_task: Option<u32>,
    /// `walltime`.
    #[serde(serialize_with = "opt_millis")]
    pub walltime: Option<Duration>,
    /// `memory` (SLURM syntax, `4G`).
    pub memory: Option<String>,
    /// `extraOptions`: more `sbatch` options.
    pub extra_options: Vec<String>,
    /// `outputFile`.
    pub output_file: Option<String>,
    /// `errorFile`.
    pub error_file: Option<String>,
    /// `scriptPath`.
    pub script_path: Option<String>,
    /// The next process.
    pub link: Link,
}

/// `pbsProcess` (qsub).
#[derive(Debug, Clone, Serialize)]
pub struct PbsProcess {
    /// `@interactive`.
    pub interactive: bool,
    /// `@queue`.
    pub queue: Option<String>,
    /// `@jobname`.
    pub job_name: Option<String>,
    /// `hostlist`.
    pub hostlist: Vec<String>,
    /// `hostsNumber`.
    pub hosts_number: Option<u32>,
    /// `processorPerNode`.
    pub processor_per_node: Option<u32>,
    /// `bookingDuration`.
    #[serde(serialize_with = "opt_millis")]
    pub booking_duration: Option<Duration>,
    /// `outputFile`.
    pub output_file: Option<String>,
    /// `scriptPath`.
    pub script_path: Option<String>,
    /// The next process.
    pub link: Link,
}

/// `bsubProcess` (LSF).
#[derive(Debug, Clone, Serialize)]
pub struct LsfProcess {
    /// `@interactive`.
    pub interactive: bool,
    /// `@jobname`.
    pub job_name: Option<String>,
    /// `@queue`.
    pub queue: Option<String>,
    /// `hostlist`.
    pub hostlist: Vec<String>,
    /// `processor`.
    pub processor: Option<u32>,
    /// `resourceRequirement@value`.
    pub resource_requirement: Option<String>,
    /// `scriptPath`.
    pub script_path: Option<String>,
    /// The next process.
    pub link: Link,
}

/// `oarProcess` (oarsub).
#[derive(Debug, Clone, Serialize)]
pub struct OarProcess {
    /// `@bookedNodesAccess`: `oarsh`, `ssh` or `rsh`. `ssh` and `oarsh`
    /// (and no value) both reach the booked nodes with `oarsh`, OAR's
    /// ssh that confines the runtime to the job.
    pub booked_nodes_access: Option<String>,
    /// `@interactive`.
    pub interactive: bool,
    /// `@queue`.
    pub queue: Option<String>,
    /// `resources` (`nodes=2,walltime=1:00:00`).
    pub resources: Option<String>,
    /// `scriptPath`.
    pub script_path: Option<String>,
    /// The next process.
    pub link: Link,
}

/// `gridEngineProcess` (qsub of SGE).
#[derive(Debug, Clone, Serialize)]
pub struct GridEngineProcess {
    /// `@interactive`.
    pub interactive: bool,
    /// `@queue`.
    pub queue: Option<String>,
    /// `hostsNumber`.
    pub hosts_number: Option<u32>,
    /// `bookingDuration`.
    #[serde(serialize_with = "opt_millis")]
    pub booking_duration: Option<Duration>,
    /// `parallelEnvironment`.
    pub parallel_environment: Option<String>,
    /// `hostlist`.
    pub hostlist: Vec<String>,
    /// `scriptPath`.
    pub script_path: Option<String>,
    /// The next process.
    pub link: Link,
}

/// `dependentProcessSequence` / `independentProcessSequence`.
#[derive(Debug, Clone, Serialize)]
pub struct Sequence {
    /// A leading `serviceReference` (dependent sequences only).
    pub service: Option<Spanned<String>>,
    /// `processReference`s, in order.
    pub processes: Vec<Spanned<String>>,
}

/// `mpiProcess`: an MPI program started with `mpirun` over the hosts the
/// first process of its `dependentProcessSequence` booked. It starts no
/// runtime: its result is the program's exit status and output.
#[derive(Debug, Clone, Serialize)]
pub struct MpiProcess {
    /// `@mpiFileName`: the MPI program (a file name, or a path).
    pub file_name: String,
    /// `@hostsFileName`: where the host file of the booked hosts is
    /// written, where `mpirun` runs; `None`: a file of the run's own,
    /// removed afterwards.
    pub hosts_file_name: Option<String>,
    /// `@mpiCommandOptions`: more `mpirun` options, split into words as a
    /// POSIX shell would (quotes group, nothing is expanded).
    pub command_options: Vec<String>,
    /// `commandPath@value`: the `mpirun` to run.
    pub command_path: String,
    /// `mpiOptions/processNumber`: `mpirun -np`; `None`: one process per
    /// booked slot.
    pub process_number: Option<u32>,
    /// `mpiOptions/localRelativePath`: the program's directory, relative to
    /// the home directory where `mpirun` runs (`~/` from `user.home`).
    pub local_relative_path: Option<String>,
    /// `mpiOptions/remoteAbsolutePath`: the program's directory on the
    /// booked hosts (wins over `local_relative_path`).
    pub remote_absolute_path: Option<String>,
}

impl MpiProcess {
    /// The program `mpirun` starts: `mpiFileName` in `remoteAbsolutePath`,
    /// else in `localRelativePath`, else as written. An absolute
    /// `mpiFileName` is used as it is.
    pub fn program(&self) -> String {
        if self.file_name.starts_with('/') {
            return self.file_name.clone();
        }
        let dir = self
            .remote_absolute_path
            .as_deref()
            .or(self.local_relative_path.as_deref())
            .map(|d| d.trim_end_matches('/'))
            .filter(|d| !d.is_empty());
        match dir {
            Some(d) => format!("{d}/{}", self.file_name),
            None => self.file_name.clone(),
        }
    }
}

/// `serviceDefinition` / `acquisitionDefinition`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceDefinition {
    /// `@id`.
    pub id: Spanned<String>,
    /// Where the service element is.
    pub at: Span,
    /// Which service.
    pub kind: ServiceKind,
}

/// The services a descriptor can define.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// `P2PService`: nodes acquired from the overlay.
    P2p(P2pService),
    /// `RMIRegistryLookup`: an existing runtime, by URL.
    RegistryLookup(RegistryLookup),
    /// `faultTolerance`: the FT configuration of a VN.
    FaultTolerance(FaultTolerance),
}

impl ServiceKind {
    /// The element name used in descriptors.
    pub fn element_name(&self) -> &'static str {
        match self {
            ServiceKind::P2p(_) => "P2PService",
            ServiceKind::RegistryLookup(_) => "RMIRegistryLookup",
            ServiceKind::FaultTolerance(_) => "faultTolerance",
        }
    }

    /// `true` for services that deliver runtimes (P2P, lookup).
    pub fn acquires_runtimes(&self) -> bool {
        !matches!(self, ServiceKind::FaultTolerance(_))
    }
}

/// How many nodes a P2P request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodesAsked {
    /// This many.
    Count(u32),
    /// As many as can be had, for the deployment's lifetime.
    Max,
}

/// `P2PService`.
#[derive(Debug, Clone, Serialize)]
pub struct P2pService {
    /// `@nodesAsked`.
    pub nodes_asked: NodesAsked,
    /// `@NOA`: acquaintances to keep.
    pub noa: u32,
    /// `@TTU`: heartbeat period.
    #[serde(serialize_with = "millis")]
    pub ttu: Duration,
    /// `@TTL`: hops a request travels.
    pub ttl: u32,
    /// `@port`: port of a local peer started for the request, if any.
    pub port: Option<u16>,
    /// `peerSet/peer`: first contacts.
    pub peers: Vec<Spanned<PeerAddress>>,
}

/// Defaults of the P2P service (ProActive's documented ones).
pub mod p2p_defaults {
    use std::time::Duration;
    /// Number of acquaintances.
    pub const NOA: u32 = 10;
    /// Time to update.
    pub const TTU: Duration = Duration::from_secs(60);
    /// Time to live, in hops.
    pub const TTL: u32 = 5;
    /// The port an `actogrid peer` daemon listens on when not told
    /// otherwise, and so the port of a `<peer>` that names a host only.
    pub const PORT: u16 = 7100;
}

/// A peer address: `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PeerAddress {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `RMIRegistryLookup`.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryLookup {
    /// `@url`, normalised to `actogrid://host:port/name`.
    pub url: String,
}

/// Fault-tolerance protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FtProtocol {
    /// Communication-induced checkpointing.
    Cic,
    /// Pessimistic message logging.
    Pml,
}

/// `faultTolerance`.
#[derive(Debug, Clone, Serialize)]
pub struct FaultTolerance {
    /// `protocol@type`.
    pub protocol: FtProtocol,
    /// `globalServer@url`: one server for everything.
    pub global_server: Option<String>,
    /// `checkpointServer@url`.
    pub checkpoint_server: Option<String>,
    /// `locationServer@url`.
    pub location_server: Option<String>,
    /// `recoveryProcess@url` (or `recoveryServer`).
    pub recovery_process: Option<String>,
    /// `resourceServer@url`.
    pub resource_server: Option<String>,
    /// `ttc@value`: time between checkpoints.
    #[serde(serialize_with = "opt_millis")]
    pub ttc: Option<Duration>,
}

/// `technicalServiceDefinition` (or the slide's `service`).
#[derive(Debug, Clone, Serialize)]
pub struct TechnicalServiceDefinition {
    /// `@id`.
    pub id: Spanned<String>,
    /// `@class`: the service's registered name.
    pub class: Spanned<String>,
    /// `arg@name@value`, in order.
    pub args: Vec<Arg>,
}

/// A technical-service argument.
#[derive(Debug, Clone, Serialize)]
pub struct Arg {
    /// `@name`.
    pub name: String,
    /// `@value`.
    pub value: String,
    /// Where the `<arg>` element is: a service that refuses this argument
    /// is reported there.
    pub at: Span,
}

/// `fileTransfer`.
#[derive(Debug, Clone, Serialize)]
pub struct FileTransfer {
    /// `@id`.
    pub id: Spanned<String>,
    /// `file` entries.
    pub files: Vec<FileEntry>,
    /// `dir` entries.
    pub dirs: Vec<DirEntry>,
}

/// `fileTransfer/file`.
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// `@src`.
    pub src: String,
    /// `@dest` (defaults to `src`).
    pub dest: String,
}

/// `fileTransfer/dir`.
#[derive(Debug, Clone, Serialize)]
pub struct DirEntry {
    /// `@src`.
    pub src: String,
    /// `@dest` (defaults to `src`).
    pub dest: String,
    /// `@includes`: glob patterns.
    pub includes: Vec<String>,
    /// `@excludes`: glob patterns.
    pub excludes: Vec<String>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

fn opt_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_millis()),
        None => s.serialize_none(),
    }
}
