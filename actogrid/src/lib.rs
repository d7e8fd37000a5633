//! actogrid runs one program across your own machines, ssh hosts, batch
//! clusters (SLURM, PBS, LSF, OAR, Grid Engine) and a peer-to-peer pool of
//! lent desktops. Where the program runs is written in an XML deployment
//! descriptor, not in the code; so are fault tolerance and load balancing.
//!
//! This facade crate is the only one applications depend on. Its
//! [`prelude`] gathers the whole API; the crates behind it are:
//!
//! * [`descriptor`] — reading, validating and planning descriptors;
//! * `actogrid-runtime` — nodes, active objects, futures ([`NodeUrl`]);
//! * `actogrid-acquisition` — starting and acquiring runtimes;
//! * `actogrid-technical-services`, `actogrid-fault-tolerance` — the
//!   services applied to every node of a virtual node.

mod credentials;
mod deploy;
mod ft_server;
pub mod peer;
mod process;
mod web;

pub use web::{RunningDashboard, running_dashboards};

pub use actogrid_descriptor as descriptor;
pub use actogrid_runtime::{
    ActiveRef, Authority, CallError, Config, ConfigError, ErrorKind, Future, FutureGroup, Group,
    GroupError, Identity, NoError, Node, NodeUrl, Principal, Proxy, RemoteError, Runtime, caller,
    current, in_completion_order, intercept, tls, wait_all, wait_any,
};

/// Runs blocking or long CPU-bound code on a thread set aside for it, and
/// returns a handle to await its result (tokio's `spawn_blocking`: the
/// runtime's executor is tokio's). An `async` method of an active object
/// that calls a blocking library should go through it, so the executor's
/// threads keep serving other objects meanwhile.
///
/// ```ignore
/// let digest = actogrid::spawn_blocking(move || sha256(&data)).await?;
/// ```
pub use tokio::task::spawn_blocking;

/// Time in `async` code, without depending on tokio: the runtime's
/// executor is tokio's, and these are its timers.
///
/// ```ignore
/// use actogrid::time::{Duration, sleep, timeout};
///
/// sleep(Duration::from_millis(200)).await;
/// let reply = timeout(Duration::from_secs(5), worker.compute(job)).await??;
/// ```
///
/// (A call's future has its own [`Future::timeout`], which fails it with
/// [`CallError::Timeout`].)
pub mod time {
    pub use std::time::Duration;
    pub use tokio::time::error::Elapsed;
    pub use tokio::time::{Instant, Interval, interval, sleep, sleep_until, timeout};
}
pub use actogrid_fault_tolerance::{JournalError, journaled, journaled_async};
pub use credentials::{
    CREDENTIALS_ENV, END as CREDENTIALS_END, for_node as node_credentials, node_identity,
};
pub use deploy::MpiOutcome;
pub use deploy::agent::EXIT_ON_STDIN_EOF_ENV;
pub use deploy::dashboard::{
    CallEdge, CallerCount, DASHBOARD_ENV, DeploymentStatus, EventRecord, HostedObjects, JobStatus,
    LogLine, ObjectStatus, RuntimeStatus, VnStatus,
};
pub use deploy::{
    ADVERTISE_ENV, Admission, DEFAULT_LEASE, DEPLOYER_ENV, DeployError, DeployOptions, Deployment,
    LEASE_ENV, LISTEN_ENV, LogSink, LogSinkProxy, MAX_LINE, NODE_PREFIX_ENV, NODES_ENV, OutputLine,
    OutputOptions, PrintedLine, Refusal, Registrar, RegistrarProxy, Registration, RuntimeAgent,
    RuntimeAgentProxy, RuntimeInfo, RuntimeSummary, STATE_DIR_ENV, Stream, VirtualNode,
    VnDirectory, VnDirectoryProxy, VnEvent, check_descriptor, check_descriptor_for, lookup_vn,
    state_dir,
};
pub use ft_server::{FT_SERVER_ANNOUNCE, FtServerOptions, serve_ft_server};
pub use process::{
    NODE_LISTEN_ENV, NODE_NAME_ENV, NodeOptions, NodeProcess, serve_if_deployed, serve_node,
    settings, spawn_node, spawn_with,
};

/// Turns an inherent `impl` block into an active type: a typed proxy
/// (`<Type>Proxy`), a request enum and the dispatch, registered by name.
pub use actogrid_macros::active;

/// Wraps `async fn main`: the process runs the application on a runtime
/// of its own, or serves as a node runtime when it was launched as one.
pub use actogrid_macros::main;

/// Technical services: the trait, the context `apply` gets, the built-ins.
pub use actogrid_technical_services as services;
pub use actogrid_technical_services::{
    Args, NodeContext, OnFailure, Origin, ServiceError, TechnicalService, technical_service,
};

#[doc(hidden)]
pub use actogrid_runtime::__private;

#[doc(hidden)]
pub use process::run_main as __run_main;

#[doc(hidden)]
pub use process::terminated as __terminated;

#[doc(hidden)]
pub use process::async_runtime_or_exit as __async_runtime_or_exit;

/// Everything an application needs, in one import.
pub mod prelude {
    pub use crate::descriptor::{Descriptor, Diagnostic, LoadOptions, Severity, load};
    pub use crate::{
        Args, DeployError, DeployOptions, Deployment, NodeContext, OutputLine, OutputOptions,
        ServiceError, Stream, TechnicalService, VirtualNode, VnEvent,
    };
    pub use actogrid_runtime::{
        CallError, Future, FutureGroup, Group, GroupError, Node, NodeUrl, Proxy, RemoteError,
        Runtime, wait_all, wait_any,
    };
}
