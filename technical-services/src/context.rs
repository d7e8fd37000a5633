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

/// What the registries of this process know a node by: its runtime and
/// its name (several runtimes of one process may have nodes of one name).
type NodeKey = (u64, String);

fn node_key(node: &Node) -> NodeKey {
    (node.runtime().id(), node.url().name().to_owned())
}

fn store() -> &'static Mutex<HashMap<NodeKey, Properties>> {
    static STORE: OnceLock<Mutex<HashMap<NodeKey, Properties>>> = OnceLock::new();
    STORE.get_or_init(Default::default)
}

/// The properties of local node `node`, as services set them (empty when
/// none did).
pub fn properties_of(node: &Node) -> BTreeMap<String, String> {
    store()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&node_key(node))
        .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default()
}

fn properties_for(key: &NodeKey) -> Properties {
    store()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
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

fn node_stops() -> &'static Mutex<HashMap<NodeKey, CancellationToken>> {
    static STOPS: OnceLock<Mutex<HashMap<NodeKey, CancellationToken>>> = OnceLock::new();
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
        let key = node_key(&node);
        let (stop, first) = {
            let mut stops = node_stops().lock().unwrap_or_else(|p| p.into_inner());
            let first = !stops.contains_key(&key);
            (stops.entry(key.clone()).or_default().clone(), first)
        };
        // The node's entries go with its runtime.
        if first && let Ok(handle) = tokio::runtime::Handle::try_current() {
            let shut_down = node.runtime().shut_down();
            let node = node.clone();
            handle.spawn(async move {
                shut_down.await;
                stop_node_tasks(&node);
            });
        }
        NodeContext {
            properties: properties_for(&key),
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

    /// Runs `task` for as long as the node lives: it is cancelled when
    /// the node's runtime shuts down, or by [`stop_node_tasks`].
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        let shut_down = self.node.runtime().shut_down();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = shut_down => {}
                () = task => {}
            }
        });
    }
}

/// Stops the tasks services started for local node `node`, and forgets
/// its properties.
pub fn stop_node_tasks(node: &Node) {
    let key = node_key(node);
    store()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    if let Some(t) = node_stops()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key)
    {
        t.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Two runtimes of one process with nodes of one name: each node has
    /// its own properties and tasks, and shutting one runtime down stops
    /// only its node's tasks and forgets only its properties.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_of_one_name_in_two_runtimes_are_apart() {
        let a = actogrid_runtime::Runtime::builder().build();
        let b = actogrid_runtime::Runtime::builder().build();
        let (na, nb) = (a.local_node("n"), b.local_node("n"));
        let origin = Origin::Created {
            provider: "currentJVM".into(),
        };
        let ca = NodeContext::new(na.clone(), "vn", origin.clone(), None);
        let cb = NodeContext::new(nb.clone(), "vn", origin, None);
        ca.set_property("who", "a");
        assert_eq!(cb.property("who"), None);
        cb.set_property("who", "b");
        assert_eq!(properties_of(&na).get("who").map(String::as_str), Some("a"));
        assert_eq!(properties_of(&nb).get("who").map(String::as_str), Some("b"));

        let (ta, mut ra) = tokio::sync::mpsc::channel::<()>(1);
        let (tb, mut rb) = tokio::sync::mpsc::channel::<()>(1);
        // Each task holds its sender until it is cancelled.
        ca.spawn(async move {
            let _held = ta;
            std::future::pending::<()>().await;
        });
        cb.spawn(async move {
            let _held = tb;
            std::future::pending::<()>().await;
        });
        a.shutdown();
        let ended = tokio::time::timeout(Duration::from_secs(10), ra.recv()).await;
        assert_eq!(ended, Ok(None), "a's task was not cancelled");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), rb.recv())
                .await
                .is_err(),
            "b's task was cancelled with a's runtime"
        );
        // a's properties go once its runtime's entries are forgotten.
        let forgotten = async {
            while !properties_of(&na).is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), forgotten)
            .await
            .expect("a's properties are kept after its runtime shut down");
        assert_eq!(properties_of(&nb).get("who").map(String::as_str), Some("b"));
        b.shutdown();
    }
}
