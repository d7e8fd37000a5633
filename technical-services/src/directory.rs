//! The directory of a virtual node: the URLs of its nodes, kept current by
//! the deployment, so that services on one node find the others and other
//! programs find the virtual node by name.

use serde::{Deserialize, Serialize};

/// The nodes of one virtual node, by URL.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VnDirectory {
    vn: String,
    nodes: Vec<String>,
}

#[actogrid_runtime::active(crate = actogrid_runtime, internal)]
impl VnDirectory {
    /// An empty directory of virtual node `vn`.
    pub fn new(vn: String) -> Self {
        VnDirectory {
            vn,
            nodes: Vec::new(),
        }
    }

    /// The virtual node's name.
    #[immediate]
    pub fn name(&self) -> String {
        self.vn.clone()
    }

    /// The URLs of its nodes now.
    #[immediate]
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.clone()
    }

    /// A node joined.
    pub fn add(&mut self, url: String) {
        if !self.nodes.contains(&url) {
            self.nodes.push(url);
        }
    }

    /// A node left.
    pub fn remove(&mut self, url: String) {
        self.nodes.retain(|n| *n != url);
    }
}
