//! What a service sees of the node it is applied to.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use actogrid_runtime::Node;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How a node came to the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Started by the deployment, through `provider` (`jvmProcess`,
    /// `sshProcess`, `slurmProcess`…; `currentJVM` for the deploying
    /// process itself).
    Created {
        /// The process kind that started it.
        provider: String,
    },
    /// Acquired from a service (`P2PService`, `RMIRegistryLookup`, a lookup).
    Acquired {
        /// The service it came from.
        service: String,
    },
}

/// This machine's name (`localhost` when it has none).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

type Properties = Arc<Mutex<BTreeMap<String, String>>>;

fn store() -> &'static Mutex<HashMap<String, Properties>> {
    static STORE: OnceLock<Mutex<HashMap<String, Properties>>> = OnceLock::new();
    STORE.get_or_init(Default::default)
}

/// The properties of node `name` of this process's runtime, as services
/// set them (empty when none did).
pub fn properties_of(name: &str) -> BTreeMap<String, String> {
    store()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default()
}

fn properties_for(name: &str) -> Properties {
    store()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name.to_owned())
        .or_default()
        .clone()
}

/// The node a service is applied to, in its own runtime.
pub struct NodeContext {
    node: Node,
    vn: String,
    origin: Origin,
    directory: Option<String>,
    properties: Properties,
    stop: CancellationToken,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("node", &self.node.url().to_string())
            .field("vn", &self.vn)
            .field("origin", &self.origin)
            .finish()
    }
}

fn node_stops() -> &'static Mutex<HashMap<String, CancellationToken>> {
    static STOPS: OnceLock<Mutex<HashMap<String, CancellationToken>>> = OnceLock::new();
    STOPS.get_or_init(Default::default)
}

impl NodeContext {
    /// The context of local node `node` of virtual node `vn`.
    pub fn new(
        node: Node,
        vn: impl Into<String>,
        origin: Origin,
        directory: Option<String>,
    ) -> Self {
        let name = node.url().name().to_owned();
        let stop = node_stops()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_default()
            .clone();
        NodeContext {
            properties: properties_for(&name),
            node,
            vn: vn.into(),
            origin,
            directory,
            stop,
        }
    }

    /// The node (local to the runtime the service runs in): create objects
    /// on it, install interceptors with [`Node::add_interceptor`].
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The virtual node it belongs to.
    pub fn virtual_node(&self) -> &str {
        &self.vn
    }

    /// How it came to the deployment.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The host it runs on (its machine's name).
    pub fn host(&self) -> String {
        hostname()
    }

    /// The cores its process may use.
    pub fn cores(&self) -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Memory the machine has available now, in bytes (`MemAvailable`).
    pub fn available_memory(&self) -> Option<u64> {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    }

    /// URL of the directory listing the virtual node's nodes
    /// (`actogrid://host:port/name`, a `VnDirectory` with `nodes()`), when
    /// the deployment gives one.
    pub fn directory(&self) -> Option<&str> {
        self.directory.as_deref()
    }

    /// A property of the node.
    pub fn property(&self, key: &str) -> Option<String> {
        self.properties
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Sets a property of the node; the program reads it back with
    /// `VirtualNode::properties`.
    pub fn set_property(&self, key: impl Into<String>, value: impl Into<String>) {
        self.properties
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.into(), value.into());
    }

    /// Every property of the node.
    pub fn properties(&self) -> BTreeMap<String, String> {
        self.properties
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs `task` for as long as the node lives (it is cancelled when the
    /// node's runtime stops).
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        });
    }
}

/// Stops the tasks services started for node `name`.
pub fn stop_node_tasks(name: &str) {
    if let Some(t) = node_stops()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(name)
    {
        t.cancel();
    }
}
