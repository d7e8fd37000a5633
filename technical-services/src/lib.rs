//! Technical services: configuration applied uniformly to every node of a
//! virtual node, whether the node was created or acquired.
//!
//! A virtual node lists services in its descriptor
//! (`technicalServiceId="a b"`); each names a class and arguments:
//!
//! ```xml
//! <technicalServiceDefinition id="tagged" class="myapp.Tagger">
//!   <arg name="tag" value="gpu"/>
//! </technicalServiceDefinition>
//! ```
//!
//! The class is a type implementing [`TechnicalService`], registered under
//! that name with one line:
//!
//! ```ignore
//! actogrid::technical_service!("myapp.Tagger", Tagger);
//! ```
//!
//! Its life: when the deployment loads, the service is built from its class
//! name and [`TechnicalService::init`] checks its arguments (a refusal stops
//! the deployment, pointing at the service's line). Then, for every node of
//! the virtual node — created, acquired, or joining later — the service is
//! rebuilt **inside the node's runtime** (every runtime runs the
//! application's binary, so the class exists there), initialised with the
//! same arguments, and [`TechnicalService::apply`]d to the node, in the
//! order the virtual node lists its services, before the program can see
//! the node. A failing `apply` drops that node with its error, or fails the
//! deployment when the service says so ([`TechnicalService::on_failure`]).

mod balancing;
mod context;
mod directory;
mod environment;
mod host;
mod logging;
mod require;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use balancing::{Balancer, BalancerProxy, LoadBalancing, LoadMeter};
pub use context::{NodeContext, Origin, hostname, properties_of, stop_node_tasks};
pub use directory::{VnDirectory, VnDirectoryProxy};
pub use environment::Environment;
pub use host::{ApplyFailure, ServiceHost, ServiceHostProxy, ServiceSpec, apply_all};
pub use logging::{Logging, set_log_reloader};
pub use require::Require;

/// Class names of the services every actogrid binary knows, with the
/// ProActive names that map onto them. The descriptor crate owns the list
/// so that validation, which sits below this crate, can use it too.
pub use actogrid_runtime::descriptor::BUILTIN_SERVICE_CLASSES as BUILTIN_CLASSES;

/// Whether `class` names a built-in technical service.
pub fn is_builtin(class: &str) -> bool {
    BUILTIN_CLASSES.contains(&class)
}

/// Whether active type `type_name` is actogrid's own machinery — the
/// objects of technical services, of deployments and of fault tolerance —
/// rather than the application's: services that act on the application's
/// objects (load balancing moves them, fault tolerance protects them)
/// leave these alone.
pub fn is_machinery(type_name: &str) -> bool {
    [
        "actogrid_technical_services::",
        "actogrid::",
        "actogrid_fault_tolerance::",
    ]
    .iter()
    .any(|prefix| type_name.starts_with(prefix))
}

/// A service's arguments (`<arg name=… value=…/>`), in descriptor order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Args(pub Vec<(String, String)>);

impl Args {
    /// The value of argument `name` (the last one when repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every argument, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Argument `name` parsed, `default` when absent; an error naming the
    /// argument when it does not parse.
    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ServiceError>
    where
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e| ServiceError::argument(name, format!("`{v}`: {e}"))),
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Args {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Args(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Why a service refused its arguments or a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    /// What is wrong, in one sentence.
    pub message: String,
    /// The argument the refusal is about, when it is about one: the
    /// deployment then points at that `<arg>` of the descriptor rather than
    /// at the whole service.
    pub argument: Option<String>,
}

impl ServiceError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        ServiceError {
            message: message.into(),
            argument: None,
        }
    }

    /// A refusal of argument `name`; the message says what is wrong with
    /// it (it is shown as ``argument `name`: message``).
    pub fn argument(name: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let name = name.into();
        ServiceError {
            message: format!("argument `{name}`: {message}"),
            argument: Some(name),
        }
    }
}

/// What a failing [`TechnicalService::apply`] does to the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OnFailure {
    /// The node is left out (with its error); the others go on.
    #[default]
    DropNode,
    /// The virtual node fails: `nodes()` returns the error.
    FailDeployment,
}

/// Non-functional behaviour applied to every node of a virtual node.
pub trait TechnicalService: Send + Sync + 'static {
    /// Checks and keeps the arguments. Runs once when the deployment
    /// loads (a refusal stops it) and again in each node's runtime before
    /// [`apply`](TechnicalService::apply).
    fn init(&mut self, args: &Args) -> Result<(), ServiceError>;

    /// Configures one node, inside the node's runtime: set properties,
    /// install interceptors on its active objects, start tasks tied to its
    /// life. Runs before the program can see the node.
    fn apply(&self, node: &NodeContext) -> Result<(), ServiceError>;

    /// Classes that must be listed before this one on the same virtual node.
    fn requires(&self) -> Vec<String> {
        Vec::new()
    }

    /// Classes that cannot apply to the same virtual node as this one.
    fn conflicts_with(&self) -> Vec<String> {
        Vec::new()
    }

    /// What a failing `apply` does.
    fn on_failure(&self) -> OnFailure {
        OnFailure::DropNode
    }

    /// The argument names [`init`](TechnicalService::init) reads; `None`
    /// (the default) when it takes any name. The deployment warns about an
    /// `<arg>` whose name is not listed, with the closest listed name: a
    /// misspelt argument would otherwise be ignored without a word.
    fn arguments(&self) -> Option<&[&str]> {
        None
    }

    /// Environment variables the runtimes of the virtual node are started
    /// with (nodes created by the deployment; a node acquired elsewhere is
    /// already running).
    fn launch_environment(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A registered service class (see [`technical_service!`]).
#[derive(Debug)]
pub struct ServiceEntry {
    /// The class name descriptors use.
    pub class: &'static str,
    /// Builds an uninitialised instance.
    pub make: fn() -> Box<dyn TechnicalService>,
}

inventory::collect!(ServiceEntry);

/// Registers `$ty` (which implements [`TechnicalService`] and [`Default`])
/// under class name `$class`:
/// `actogrid::technical_service!("myapp.Tagger", Tagger);`
#[macro_export]
macro_rules! technical_service {
    ($class:expr, $ty:ty) => {
        $crate::__private::inventory::submit! {
            $crate::ServiceEntry {
                class: $class,
                make: || ::std::boxed::Box::new(<$ty as ::std::default::Default>::default()),
            }
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}

/// A fresh instance of class `class`, if it is registered in this binary.
pub fn create(class: &str) -> Option<Box<dyn TechnicalService>> {
    inventory::iter::<ServiceEntry>
        .into_iter()
        .find(|e| e.class == class)
        .map(|e| (e.make)())
}

/// Every class registered in this binary, sorted.
pub fn classes() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = inventory::iter::<ServiceEntry>
        .into_iter()
        .map(|e| e.class)
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Builds and initialises class `class` with `args`.
pub fn build(class: &str, args: &Args) -> Result<Box<dyn TechnicalService>, ServiceError> {
    let mut service = create(class).ok_or_else(|| {
        ServiceError::new(format!(
            "no technical service class `{class}` in this program (it has: {})",
            classes().join(", ")
        ))
    })?;
    service.init(args)?;
    Ok(service)
}

technical_service!("actogrid.Environment", Environment);
technical_service!("actogrid.Logging", Logging);
technical_service!("actogrid.Require", Require);
technical_service!("actogrid.LoadBalancing", LoadBalancing);
technical_service!(
    "org.objectweb.proactive.loadbalancing.LoadBalancingTS",
    LoadBalancing
);
