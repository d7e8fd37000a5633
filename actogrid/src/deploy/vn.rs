//! The program's handle on a virtual node.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actogrid_runtime::Node;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use super::DeployError;
use super::state::{VnEvent, VnState, lock};

/// A virtual node: the name a program uses for "where to run", filled
/// with nodes by the deployment.
#[derive(Clone)]
pub struct VirtualNode {
    pub(crate) state: Arc<VnState>,
}

impl std::fmt::Debug for VirtualNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualNode")
            .field("name", &self.state.name)
            .field("size", &self.size())
            .finish()
    }
}

impl VirtualNode {
    /// Its name in the descriptor.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// How many nodes it has now.
    pub fn size(&self) -> usize {
        self.state.node_count()
    }

    /// The nodes the descriptor promises, when it says exactly.
    pub fn expected(&self) -> Option<u64> {
        self.state.expected
    }

    /// Its nodes now, without waiting.
    pub fn current_nodes(&self) -> Vec<Node> {
        lock(&self.state.nodes).clone()
    }

    /// The properties technical services set on `node` (empty when none
    /// did, or when the node is not one of this virtual node's).
    pub fn properties(&self, node: &Node) -> std::collections::BTreeMap<String, String> {
        lock(&self.state.properties)
            .get(&node.url().to_string())
            .cloned()
            .unwrap_or_default()
    }

    /// The URL of the directory listing this virtual node's nodes, once
    /// activated (what services read).
    pub fn directory(&self) -> Option<String> {
        lock(&self.state.directory).as_ref().map(|(_, u)| u.clone())
    }

    /// Everything that failed so far, one line per host or job.
    pub fn failures(&self) -> Vec<String> {
        lock(&self.state.failures).clone()
    }

    /// Events from now on: nodes joining and leaving, failures.
    pub fn events(&self) -> broadcast::Receiver<VnEvent> {
        self.state.events.subscribe()
    }

    /// Waits for the nodes, as the descriptor says: until every expected
    /// node is there (or `minNodeNumber` of them), or for the whole
    /// `timeout` with `waitForTimeout`. Fails at the timeout with what is
    /// missing and why, or as soon as failures make the count impossible.
    /// A looked-up virtual node expects the nodes its directories list: it
    /// returns once they have joined.
    pub async fn nodes(&self) -> Result<Vec<Node>, DeployError> {
        let st = &self.state;
        let activated =
            (*lock(&st.activated)).ok_or_else(|| DeployError::NotActivated(st.name.clone()))?;
        let deadline = activated + st.timeout;
        let needed = st.min_nodes.or(st.expected);
        let mut changes = st.changed.subscribe();
        loop {
            changes.mark_unchanged();
            if let Some(fatal) = lock(&st.fatal).clone() {
                return Err(DeployError::ServiceFailed {
                    vn: st.name.clone(),
                    error: fatal,
                });
            }
            let have = st.node_count() as u64;
            let now = Instant::now();
            if !st.wait_for_timeout && needed.is_some_and(|n| have >= n) {
                return Ok(self.current_nodes());
            }
            // Only a lookup knows how many nodes a looked-up virtual node
            // has: every one listed has joined, there is no more to wait for.
            if !st.wait_for_timeout && needed.is_none() && st.looked_up().is_some_and(|n| have >= n)
            {
                return Ok(self.current_nodes());
            }
            if let (Some(needed), Some(expected)) = (needed, st.expected) {
                let possible = expected.saturating_sub(st.lost.load(Ordering::Relaxed));
                if !st.lost_unknown.load(Ordering::Relaxed) && possible < needed {
                    return Err(self.shortfall(have, needed, activated.elapsed(), true));
                }
            }
            if now >= deadline {
                return match needed {
                    Some(n) if have < n => Err(self.shortfall(have, n, activated.elapsed(), false)),
                    _ => {
                        if have == 0 {
                            tracing::warn!(vn = %st.name, "no node arrived within the timeout");
                        }
                        Ok(self.current_nodes())
                    }
                };
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    fn shortfall(&self, have: u64, needed: u64, waited: Duration, early: bool) -> DeployError {
        let mut waiting_on: Vec<String> = lock(&self.state.waiting_on).values().cloned().collect();
        waiting_on.sort();
        DeployError::NotEnoughNodes {
            vn: self.state.name.clone(),
            have,
            needed,
            expected: self.state.expected,
            failed: self.state.lost.load(Ordering::Relaxed),
            waited,
            impossible: early,
            failures: self.failures().into(),
            waiting_on: waiting_on.into(),
        }
    }

    /// One node, round-robin over the nodes present; waits (up to the
    /// virtual node's timeout) for the first one.
    pub async fn node(&self) -> Result<Node, DeployError> {
        let st = &self.state;
        let activated =
            (*lock(&st.activated)).ok_or_else(|| DeployError::NotActivated(st.name.clone()))?;
        let deadline = activated + st.timeout;
        let mut changes = st.changed.subscribe();
        loop {
            changes.mark_unchanged();
            {
                let nodes = lock(&st.nodes);
                if !nodes.is_empty() {
                    let i = st.cursor.fetch_add(1, Ordering::Relaxed) as usize % nodes.len();
                    return Ok(nodes[i].clone());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.shortfall(0, 1, activated.elapsed(), false));
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Every node: those present now, then each one as it arrives.
    pub fn arrivals(&self) -> BoxStream<'static, Node> {
        let events = self.state.events.subscribe();
        let present = self.current_nodes();
        let seen: HashSet<String> = HashSet::new();
        futures::stream::unfold(
            (present.into_iter(), events, seen),
            |(mut present, mut events, mut seen)| async move {
                for node in present.by_ref() {
                    if seen.insert(node.url().to_string()) {
                        return Some((node, (present, events, seen)));
                    }
                }
                loop {
                    match events.recv().await {
                        Ok(VnEvent::Joined(node)) => {
                            if seen.insert(node.url().to_string()) {
                                return Some((node, (present, events, seen)));
                            }
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        )
        .boxed()
    }
}
