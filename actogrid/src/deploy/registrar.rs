//! The deployer's side of registration: the `Registrar` active object that
//! started runtimes call back with their one-time ticket, and renew their
//! lease with.
//!
//! The object itself is stateless; it reaches its deployment's state
//! through a process-wide table keyed by deployment id, since the state
//! (channels, process handles) is not something a constructor argument can
//! carry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::{Deserialize, Serialize};

use super::state::Shared;

/// What a started runtime tells the deployer about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// The runtime's URLs of its nodes (`actogrid://host:port/name`).
    pub nodes: Vec<String>,
    /// Its agent, through which the deployer stops it.
    pub agent: super::agent::RuntimeAgentProxy,
    /// Host name, as the runtime's machine names itself.
    pub hostname: String,
    /// Process id there.
    pub pid: u32,
}

/// What the deployer answers a registration with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Admission {
    /// Runtime number within the deployment (for renewals).
    pub runtime: u64,
    /// Exit when no renewal succeeded for this long (milliseconds).
    pub lease_ms: u64,
    /// Where to send what the runtime prints (none: keep it local).
    pub logs: Option<super::output::LogSinkProxy>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The token is unknown or has been used up.
    #[error("this runtime did not enroll with a ticket of this deployment (unknown or used up)")]
    BadToken,
    /// The deployment is over.
    #[error("the deployment has ended")]
    Ended,
}

fn table() -> &'static Mutex<HashMap<u64, Weak<Shared>>> {
    static TABLE: OnceLock<Mutex<HashMap<u64, Weak<Shared>>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Makes a deployment's state reachable by its registrar.
pub(crate) fn publish(shared: &Arc<Shared>) {
    table()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(shared.id, Arc::downgrade(shared));
}

/// Admits the runtimes that enroll with a ticket of one of this
/// process's deployments.
pub(crate) struct Enrollments;

impl actogrid_runtime::Enroller for Enrollments {
    fn admit(&self, ticket: &str, id: u64, peer: &str) -> Result<(), String> {
        let live: Vec<Arc<Shared>> = table()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        if live.iter().any(|shared| shared.enroll(ticket, id)) {
            return Ok(());
        }
        tracing::warn!("refused to enroll a runtime from {peer}: unknown or used-up ticket");
        Err("this ticket is unknown, used up, or of a deployment that has ended".into())
    }
}

/// Forgets a deployment's state.
pub(crate) fn withdraw(id: u64) {
    table()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
}

pub(crate) fn find(id: u64) -> Option<Arc<Shared>> {
    table()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .and_then(Weak::upgrade)
}

/// The registration endpoint of one deployment.
#[derive(Debug)]
pub struct Registrar {
    deployment: u64,
}

#[crate::active(crate = crate, internal)]
impl Registrar {
    /// The registrar of deployment `deployment` of this process.
    pub fn new(deployment: u64) -> Self {
        Registrar { deployment }
    }

    /// A started runtime, enrolled with its ticket, presents its nodes.
    pub fn register(&self, who: Registration) -> Result<Admission, Refusal> {
        let shared = find(self.deployment).ok_or(Refusal::Ended)?;
        let caller = actogrid_runtime::caller().ok_or(Refusal::BadToken)?;
        shared.admit(caller, who)
    }

    /// Renews the lease of runtime `runtime`: `false` means "exit now"
    /// (the deployment ended, or it no longer knows the runtime). Only
    /// that runtime itself renews it.
    pub fn renew(&self, runtime: u64) -> bool {
        let caller =
            actogrid_runtime::caller().filter(|c| actogrid_runtime::tls::is_runtime_id(*c));
        find(self.deployment).is_some_and(|s| s.renew(caller, runtime))
    }

    /// Objects moved from the nodes of runtime `runtime` (only that
    /// runtime itself says so; at most 256 at once): events of its
    /// virtual node.
    #[oneway]
    pub fn moved(&self, runtime: u64, moves: Vec<super::state::Moved>) {
        let caller =
            actogrid_runtime::caller().filter(|c| actogrid_runtime::tls::is_runtime_id(*c));
        if let Some(s) = find(self.deployment) {
            s.moved_from(caller, runtime, moves);
        }
    }
}
