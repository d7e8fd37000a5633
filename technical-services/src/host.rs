//! Applying services to a node inside the node's runtime.

use std::collections::BTreeMap;

use actogrid_runtime::Node;
use serde::{Deserialize, Serialize};

use crate::{Args, NodeContext, OnFailure, Origin, build};

/// One service of a virtual node, as the descriptor defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// `technicalServiceDefinition@id`.
    pub id: String,
    /// Its class.
    pub class: String,
    /// Its arguments.
    pub args: Args,
}

/// A service that could not be applied to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("technical service `{id}` ({class}) refused node {node}: {message}")]
pub struct ApplyFailure {
    /// The service's id.
    pub id: String,
    /// Its class.
    pub class: String,
    /// The node's URL.
    pub node: String,
    /// What the service said.
    pub message: String,
    /// The service asked for the deployment to fail rather than the node
    /// to be dropped.
    pub fatal: bool,
}

/// Builds every service of `specs` here and applies them to local node
/// `node` in order; returns the node's properties afterwards.
pub fn apply_all(
    node: &Node,
    vn: &str,
    origin: &Origin,
    directory: Option<&str>,
    specs: &[ServiceSpec],
) -> Result<BTreeMap<String, String>, ApplyFailure> {
    let cx = NodeContext::new(
        node.clone(),
        vn,
        origin.clone(),
        directory.map(str::to_owned),
    );
    for spec in specs {
        let fail = |message: String, fatal: bool| ApplyFailure {
            id: spec.id.clone(),
            class: spec.class.clone(),
            node: node.url().to_string(),
            message,
            fatal,
        };
        let service = build(&spec.class, &spec.args).map_err(|e| fail(e.message, true))?;
        let fatal = service.on_failure() == OnFailure::FailDeployment;
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| service.apply(&cx)));
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(fail(e.message, fatal)),
            Err(panic) => {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "it panicked".to_owned());
                return Err(fail(format!("apply panicked: {text}"), fatal));
            }
        }
    }
    Ok(cx.properties())
}

/// Applies services to a node of the runtime it lives in: the deployment
/// creates one on each node whose virtual node has services.
#[derive(Debug, Default)]
pub struct ServiceHost;

#[actogrid_runtime::active(crate = actogrid_runtime)]
impl ServiceHost {
    /// A service host.
    pub fn new() -> Self {
        ServiceHost
    }

    /// Applies `specs` in order to this runtime's node `node` of virtual
    /// node `vn`; returns the node's properties.
    pub fn apply(
        &self,
        node: String,
        vn: String,
        origin: Origin,
        directory: Option<String>,
        specs: Vec<ServiceSpec>,
    ) -> Result<BTreeMap<String, String>, ApplyFailure> {
        let Some(rt) = actogrid_runtime::current() else {
            return Err(ApplyFailure {
                id: String::new(),
                class: String::new(),
                node,
                message: "this process has no global runtime to apply services in".into(),
                fatal: true,
            });
        };
        let local = rt.local_node(&node);
        apply_all(&local, &vn, &origin, directory.as_deref(), &specs)
    }
}
