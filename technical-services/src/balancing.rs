//! `actogrid.LoadBalancing`: active objects move from overloaded nodes to
//! underloaded ones of the same virtual node.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actogrid_runtime::intercept::{BodyAccess, Delivery, Interceptor, ServeOutcome, Verdict};
use actogrid_runtime::{NodeUrl, Runtime};
use futures::future::BoxFuture;

use crate::directory::VnDirectoryProxy;
use crate::{Args, NodeContext, ServiceError, TechnicalService};

/// Body hooks counting the objects of a node that are serving a request.
#[derive(Debug, Default)]
pub struct LoadMeter {
    serving: Mutex<HashSet<u64>>,
}

impl LoadMeter {
    /// Objects serving now.
    pub fn serving(&self) -> HashSet<u64> {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Interceptor for LoadMeter {
    fn before_delivery<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
        _body: &'a mut BodyAccess<'_>,
    ) -> BoxFuture<'a, Verdict> {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(delivery.object);
        Box::pin(std::future::ready(Verdict::Deliver))
    }

    fn after_serve(&self, delivery: &Delivery<'_>, _outcome: ServeOutcome, _body: &BodyAccess<'_>) {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&delivery.object);
    }
}

/// What one node's balancer knows, shared with its `Balancer` object.
struct NodeBalance {
    runtime: Runtime,
    node: String,
    url: NodeUrl,
    meter: Arc<LoadMeter>,
    capacity: f64,
    overload: f64,
    underload: f64,
}

/// The balances of this process's nodes, by runtime id and node name
/// (several runtimes of one process may have nodes of one name).
fn balances() -> &'static Mutex<HashMap<String, Arc<NodeBalance>>> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<NodeBalance>>>> = OnceLock::new();
    ALL.get_or_init(Default::default)
}

fn balance_of(node: &str) -> Option<Arc<NodeBalance>> {
    balances()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(node)
        .cloned()
}

/// Type names of the objects the service never moves (its own and the
/// deployment's machinery).
fn movable(type_name: &str) -> bool {
    !crate::is_machinery(type_name)
}

impl NodeBalance {
    /// Movable objects of the node with work: (id, waiting requests).
    fn busy_objects(&self) -> Vec<(actogrid_runtime::ActiveRef, usize)> {
        let serving = self.meter.serving();
        self.runtime
            .hosted_on(&self.node)
            .into_iter()
            .filter(|h| movable(h.type_name))
            .filter(|h| h.queued > 0 || serving.contains(&h.reference.id()))
            .map(|h| (h.reference, h.queued))
            .collect()
    }

    fn load(&self) -> f64 {
        (self.busy_objects().len() as f64 / self.capacity).min(1.0)
    }

    /// Moves the object with the most waiting requests to `target`, if this
    /// node is still overloaded and has one to spare.
    async fn give_to(&self, target: &NodeUrl) -> bool {
        if self.load() <= self.overload {
            return false;
        }
        let mut objects = self.busy_objects();
        if objects.len() <= 1 {
            return false;
        }
        objects.sort_by_key(|(_, q)| std::cmp::Reverse(*q));
        for (object, queued) in objects {
            if queued == 0 {
                break;
            }
            match object.migrate_now(target).await {
                Ok(()) => {
                    tracing::debug!(
                        "load balancing: moved object {:#x} ({queued} waiting) from {} to {target}",
                        object.id(),
                        self.url
                    );
                    return true;
                }
                Err(e) => tracing::debug!("load balancing: object {:#x} stays: {e}", object.id()),
            }
        }
        false
    }
}

/// One node's balancer, reachable by the other nodes' balancers at
/// `actogrid://host:port/lb-<node>`.
#[derive(Debug)]
pub struct Balancer {
    /// The node's key in [`balances`].
    node: String,
}

#[actogrid_runtime::active(crate = actogrid_runtime, internal)]
impl Balancer {
    /// The balancer of a local node (`node`: its runtime's id and its
    /// name).
    pub fn new(node: String) -> Self {
        Balancer { node }
    }

    /// The node's load, from 0 (idle) to 1 (saturated).
    #[immediate]
    pub fn load(&self) -> f64 {
        balance_of(&self.node).map_or(0.0, |b| b.load())
    }

    /// Moves one object to `target` (a node URL) if this node is
    /// overloaded; says whether it did.
    pub async fn give_to(&self, target: String) -> bool {
        let Some(b) = balance_of(&self.node) else {
            return false;
        };
        match target.parse::<NodeUrl>() {
            Ok(url) => b.give_to(&url).await,
            Err(_) => false,
        }
    }
}

/// `actogrid.LoadBalancing`: active objects move from overloaded nodes to
/// underloaded ones of the same virtual node.
///
/// ```xml
/// <technicalServiceDefinition id="lb" class="actogrid.LoadBalancing">
///   <arg name="overload" value="0.8"/>    <!-- above: give objects away -->
///   <arg name="underload" value="0.5"/>   <!-- below: take (steal) objects -->
///   <arg name="period" value="1000"/>     <!-- ms between two decisions -->
/// </technicalServiceDefinition>
/// ```
///
/// On every node it applies to, the service installs a [`LoadMeter`] (body
/// hooks that see which objects are serving) and starts a balancer. The
/// node's **load** is the share of its capacity that work asks for: the
/// number of its active objects that are serving or have requests waiting,
/// over its capacity (the node property `capacity` when a service set it,
/// else its cores), at most 1. Every `period`, a balancer whose node is
/// overloaded moves the object with the most waiting requests to the least
/// loaded underloaded node of the virtual node; an underloaded one asks the
/// most loaded overloaded node for an object (work stealing). Objects move
/// with the runtime's migration, between two requests, their queues with
/// them: no request is lost or served twice. Objects that cannot migrate
/// (no serde) stay where they are.
#[derive(Debug)]
pub struct LoadBalancing {
    overload: f64,
    underload: f64,
    period: Duration,
}

impl Default for LoadBalancing {
    fn default() -> Self {
        LoadBalancing {
            overload: 0.8,
            underload: 0.5,
            period: Duration::from_secs(1),
        }
    }
}

fn balancer_url(node: &NodeUrl) -> NodeUrl {
    NodeUrl::new(node.host(), node.port(), format!("lb-{}", node.name()))
}

impl TechnicalService for LoadBalancing {
    fn init(&mut self, args: &Args) -> Result<(), ServiceError> {
        self.overload = args.parse_or("overload", 0.8)?;
        self.underload = args.parse_or("underload", 0.5)?;
        let period: u64 = args.parse_or("period", 1000)?;
        for (name, load) in [("overload", self.overload), ("underload", self.underload)] {
            if !(0.0..=1.0).contains(&load) {
                return Err(ServiceError::argument(
                    name,
                    format!("{load} is not a load between 0 and 1"),
                ));
            }
        }
        if self.underload >= self.overload {
            return Err(ServiceError::argument(
                "underload",
                format!(
                    "{} must be below `overload` ({})",
                    self.underload, self.overload
                ),
            ));
        }
        if period == 0 {
            return Err(ServiceError::argument("period", "must be at least 1 ms"));
        }
        self.period = Duration::from_millis(period);
        Ok(())
    }

    fn arguments(&self) -> Option<&[&str]> {
        Some(&["overload", "underload", "period"])
    }

    fn apply(&self, cx: &NodeContext) -> Result<(), ServiceError> {
        let node = cx.node().clone();
        let meter = Arc::new(LoadMeter::default());
        node.add_interceptor(meter.clone())
            .map_err(|e| ServiceError::new(e.to_string()))?;
        let capacity = cx
            .property("capacity")
            .and_then(|c| c.parse::<f64>().ok())
            .filter(|c| *c > 0.0)
            .unwrap_or(cx.cores() as f64);
        let name = node.url().name().to_owned();
        let key = format!("{:016x}/{name}", node.runtime().id());
        let balance = Arc::new(NodeBalance {
            runtime: node.runtime().clone(),
            node: name.clone(),
            url: node.url().clone(),
            meter,
            capacity,
            overload: self.overload,
            underload: self.underload,
        });
        balances()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), balance.clone());
        // Forgotten with its runtime.
        let shut_down = node.runtime().shut_down();
        let forget = key.clone();
        tokio::spawn(async move {
            shut_down.await;
            balances()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&forget);
        });
        cx.set_property("lb.capacity", capacity.to_string());
        let directory = cx.directory().map(str::to_owned);
        let period = self.period;
        cx.spawn(async move {
            let me = match BalancerProxy::new(&node, key.clone()).await {
                Ok(b) => b,
                Err(e) => return tracing::warn!("load balancing on {}: {e}", node.url()),
            };
            if let Err(e) = node.register(&format!("lb-{name}"), &me).await {
                return tracing::warn!("load balancing on {}: {e}", node.url());
            }
            let Some(directory) = directory else {
                return tracing::warn!(
                    "load balancing on {}: the deployment gives no directory of the virtual node",
                    node.url()
                );
            };
            balance_loop(balance, directory, period).await;
        });
        Ok(())
    }
}

/// The decisions of one node, every `period`.
async fn balance_loop(me: Arc<NodeBalance>, directory: String, period: Duration) {
    let rt = me.runtime.clone();
    let Ok(dir_url) = directory.parse::<NodeUrl>() else {
        return tracing::warn!("load balancing: bad directory URL {directory}");
    };
    let mut peers: HashMap<String, BalancerProxy> = HashMap::new();
    let mut dir: Option<VnDirectoryProxy> = None;
    loop {
        tokio::time::sleep(period).await;
        if dir.is_none() {
            dir = rt.lookup::<VnDirectoryProxy>(&dir_url).await.ok();
        }
        let Some(d) = &dir else { continue };
        let Ok(Ok(urls)) = tokio::time::timeout(period, d.nodes()).await else {
            dir = None;
            continue;
        };
        let my_url = me.url.to_string();
        let mut loads = Vec::new();
        let mut asks = Vec::new();
        for url in urls.iter().filter(|u| **u != my_url) {
            let Ok(node) = url.parse::<NodeUrl>() else {
                continue;
            };
            if !peers.contains_key(url) {
                match rt.lookup::<BalancerProxy>(&balancer_url(&node)).await {
                    Ok(p) => {
                        peers.insert(url.clone(), p);
                    }
                    Err(_) => continue,
                }
            }
            if let Some(p) = peers.get(url) {
                asks.push((node, p.clone(), p.load()));
            }
        }
        for (node, proxy, load) in asks {
            match tokio::time::timeout(period, load).await {
                Ok(Ok(l)) => loads.push((node, proxy, l)),
                _ => {
                    peers.remove(&node.to_string());
                }
            }
        }
        let mine = me.load();
        if mine > me.overload {
            let target = loads
                .iter()
                .filter(|(_, _, l)| *l < me.underload)
                .min_by(|a, b| a.2.total_cmp(&b.2));
            if let Some((node, _, _)) = target {
                me.give_to(node).await;
            }
        } else if mine < me.underload {
            let source = loads
                .iter()
                .filter(|(_, _, l)| *l > me.overload)
                .max_by(|a, b| a.2.total_cmp(&b.2));
            if let Some((_, proxy, _)) = source {
                let _ = tokio::time::timeout(period * 4, proxy.give_to(my_url)).await;
            }
        }
    }
}
