//! What a running deployment says about itself over HTTP: its state as
//! JSON (`/api/state`), its runtimes' output (`/api/logs`, `follow=1` to
//! stream it), and Prometheus metrics (`/metrics`). `actogrid status` and
//! `actogrid logs` read them.
//!
//! Served on a loopback address by default ([`DeployOptions::dashboard`]).
//! Every request needs the deployment's token (`?token=…` or
//! `Authorization: Bearer …`): the URL printed at start carries it, and no
//! one who did not see that URL reads a deployment's output.
//!
//! [`DeployOptions::dashboard`]: super::DeployOptions::dashboard

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, UNIX_EPOCH};

use actogrid_runtime::Runtime;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::Inner;
use super::output::{OutputLine, Stream};
use super::state::{VnEvent, lock};
use crate::web::{self, Dashboard, async_stream, html};

/// Environment variable with the address the dashboard listens on (`off`:
/// none), when [`super::DeployOptions::dashboard`] is not set otherwise.
pub const DASHBOARD_ENV: &str = "ACTOGRID_DASHBOARD";

/// Lines one `/api/logs` answer carries at most (the latest).
const MAX_LOG_LINES: usize = 10_000;

/// A deployment, as `/api/state` gives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentStatus {
    /// The descriptor it was loaded from.
    pub descriptor: String,
    /// Since it was loaded.
    pub uptime_ms: u64,
    /// It has been torn down (or is being).
    pub ended: bool,
    /// Its virtual nodes, in name order.
    pub virtual_nodes: Vec<VnStatus>,
    /// Batch jobs submitted and not cancelled.
    pub jobs: Vec<JobStatus>,
    /// What happened to the virtual nodes, oldest first (the latest 1,000).
    pub events: Vec<EventRecord>,
    /// Who calls which object, the busiest first (at most 300 arrows).
    pub calls: Vec<CallEdge>,
    /// Arrows beyond those.
    pub calls_more: u64,
}

impl DeploymentStatus {
    /// Every active object listed, with the runtime it lives in.
    pub fn objects(&self) -> impl Iterator<Item = (&RuntimeStatus, &ObjectStatus)> {
        self.virtual_nodes
            .iter()
            .flat_map(|vn| &vn.runtimes)
            .flat_map(|r| r.objects.iter().map(move |o| (r, o)))
    }

    /// Object `id`, if listed.
    pub fn object(&self, id: u64) -> Option<&ObjectStatus> {
        self.objects().map(|(_, o)| o).find(|o| o.id == id)
    }
}

impl std::fmt::Display for DeploymentStatus {
    /// In words, one block per virtual node (what `actogrid status` prints).
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            out,
            "deployment of {} — up {:.1} s{}",
            self.descriptor,
            self.uptime_ms as f64 / 1000.0,
            if self.ended { ", ended" } else { "" }
        )?;
        for vn in &self.virtual_nodes {
            let expected = vn
                .expected
                .map_or(String::new(), |e| format!(" of {e} expected"));
            writeln!(
                out,
                "\nvirtual node {}: {} node(s){expected}; runtimes: {} registered, {} started, {} pending, {} failed",
                vn.name,
                vn.nodes,
                vn.runtimes_registered,
                vn.runtimes_started,
                vn.runtimes_pending,
                vn.runtimes_failed
            )?;
            if !vn.services.is_empty() {
                writeln!(out, "  technical services: {}", vn.services.join(", "))?;
            }
            for r in &vn.runtimes {
                writeln!(
                    out,
                    "  runtime {} on {} pid {} ({}; {})",
                    r.id, r.host, r.pid, r.provider, r.launch
                )?;
                for n in &r.nodes {
                    writeln!(out, "    {n}")?;
                    let name = n.rsplit('/').next().unwrap_or(n);
                    for o in r.objects.iter().filter(|o| o.node == name) {
                        let mut figures = vec![format!("{} queued", o.queued)];
                        if let Some(served) = o.served {
                            figures.push(format!("{served} served"));
                        }
                        if let Some(rate) = o.calls_per_s {
                            figures.push(format!("{rate:.1} calls/s"));
                        }
                        if let Some(bytes) = o.state_bytes {
                            figures.push(format!("state {}", bytes_text(bytes)));
                        }
                        writeln!(
                            out,
                            "      object {:#x} {} ({})",
                            o.id,
                            o.type_name,
                            figures.join(", ")
                        )?;
                    }
                }
                if r.objects_unknown {
                    writeln!(out, "    (its objects: no answer)")?;
                }
            }
            for f in &vn.failures {
                writeln!(out, "  failed: {f}")?;
            }
        }
        if !self.calls.is_empty() {
            writeln!(out, "\ncalls (busiest first):")?;
            for e in self.calls.iter().take(20) {
                writeln!(
                    out,
                    "  {} {:#x} -> object {:#x}: {} calls, {:.1}/s",
                    e.from_label, e.from, e.to, e.calls, e.per_s
                )?;
            }
            let more = self.calls.len().saturating_sub(20) as u64 + self.calls_more;
            if more > 0 {
                writeln!(out, "  … and {more} more")?;
            }
        }
        let recent = self.events.len().saturating_sub(10);
        if recent < self.events.len() {
            writeln!(out, "\nlatest events:")?;
            for e in &self.events[recent..] {
                let node = e.node.as_deref().unwrap_or("");
                writeln!(out, "  {} {} {node} {}", e.vn, e.kind, e.detail)?;
            }
        }
        if !self.jobs.is_empty() {
            writeln!(out, "\nbatch jobs:")?;
            for j in &self.jobs {
                writeln!(out, "  {} ({})", j.id, j.launch)?;
            }
        }
        Ok(())
    }
}

/// `bytes` in words: `512 B`, `1.5 KiB`, `3.2 MiB`.
fn bytes_text(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// A virtual node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VnStatus {
    /// Its name.
    pub name: String,
    /// Nodes the descriptor promises, when it says exactly.
    pub expected: Option<u64>,
    /// Nodes usable now.
    pub nodes: u64,
    /// Runtimes asked for so far.
    pub runtimes_asked: u64,
    /// Runtimes started (processes or running job tasks).
    pub runtimes_started: u64,
    /// Runtimes of batch jobs still queued.
    pub runtimes_pending: u64,
    /// Runtimes that registered.
    pub runtimes_registered: u64,
    /// Launches that failed.
    pub runtimes_failed: u64,
    /// What failed, in words.
    pub failures: Vec<String>,
    /// The technical services applied to its nodes, in order.
    pub services: Vec<String>,
    /// Its runtimes still there.
    pub runtimes: Vec<RuntimeStatus>,
}

/// A runtime.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeStatus {
    /// Its number in the deployment.
    pub id: u64,
    /// Host name it reported.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// What started it (process, host, job).
    pub launch: String,
    /// Where it came from: `local`, `ssh HOST`, `slurm job 123` (any
    /// scheduler, with its job id), `peer HOST:PORT` (lent by the
    /// overlay).
    pub provider: String,
    /// Its nodes' URLs.
    pub nodes: Vec<String>,
    /// The active objects on its nodes (empty when it did not answer in
    /// time: see `objects_unknown`).
    pub objects: Vec<ObjectStatus>,
    /// It did not say which objects it hosts within a second.
    pub objects_unknown: bool,
}

/// An active object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectStatus {
    /// Its id (in JSON a decimal string: ids use all 64 bits, more than a
    /// JavaScript number holds exactly).
    #[serde(with = "decimal")]
    pub id: u64,
    /// Its node's name.
    pub node: String,
    /// Its type.
    pub type_name: String,
    /// Requests waiting in its queue.
    pub queued: u64,
    /// Requests it served since it came to its runtime (`None` until it
    /// served one, or when its runtime does not count: the
    /// `object_stats` setting, on in a deployment with a dashboard).
    pub served: Option<u64>,
    /// Requests it served per second over the last second or two.
    pub calls_per_s: Option<f64>,
    /// Bytes of its state, encoded, when measured (objects that
    /// serialize, measured while idle).
    pub state_bytes: Option<u64>,
    /// Who sent the requests it served: the first 256 senders (objects,
    /// or runtimes for calls made outside any object).
    pub callers: Vec<CallerCount>,
    /// Requests from senders beyond those.
    pub other_callers: u64,
}

/// Requests an object served from one sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerCount {
    /// The sender: an active object's id, or a runtime's.
    #[serde(with = "decimal")]
    pub from: u64,
    /// Requests served from it.
    pub calls: u64,
}

/// Calls from one sender to one object: an arrow of the call graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEdge {
    /// The sender's id.
    #[serde(with = "decimal")]
    pub from: u64,
    /// What the sender is: `object` (of this deployment or not) or
    /// `runtime` (calls made outside any object, in `main` say).
    pub from_kind: String,
    /// The sender in words: an object's type, a runtime's host and pid,
    /// or `deployer`.
    pub from_label: String,
    /// The object called.
    #[serde(with = "decimal")]
    pub to: u64,
    /// Requests it served from the sender (since it came to its runtime).
    pub calls: u64,
    /// Of those, per second over the last second or two.
    pub per_s: f64,
}

/// What a runtime's agent says about the objects it hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostedObjects {
    /// The runtime's id: the sender of calls made there outside any
    /// object.
    pub runtime: u64,
    /// Its objects.
    pub objects: Vec<ObjectStatus>,
}

/// A `u64` as a decimal string.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl From<actogrid_runtime::ObjectHere> for ObjectStatus {
    fn from(o: actogrid_runtime::ObjectHere) -> ObjectStatus {
        let counted = o.stats.is_some();
        let stats = o.stats.unwrap_or(actogrid_runtime::ObjectStats {
            served: 0,
            callers: Vec::new(),
            other_callers: 0,
            state_bytes: None,
        });
        ObjectStatus {
            id: o.id,
            node: o.node,
            type_name: o.type_name.to_owned(),
            queued: o.queued as u64,
            served: counted.then_some(stats.served),
            calls_per_s: None,
            state_bytes: stats.state_bytes,
            callers: stats
                .callers
                .into_iter()
                .map(|(from, calls)| CallerCount { from, calls })
                .collect(),
            other_callers: stats.other_callers,
        }
    }
}

/// Something that happened to a virtual node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The virtual node.
    pub vn: String,
    /// `joined`, `left`, `failed`, `migrated`, `checkpointed`,
    /// `recovered`, `recovery-failed` or
    /// `mpi-ended`.
    pub kind: String,
    /// The node it is about, when there is one.
    pub node: Option<String>,
    /// Why, or what happened, in words.
    pub detail: String,
}

/// Events kept for the dashboard (the latest).
const MAX_EVENTS: usize = 1000;

/// The latest events of a deployment's virtual nodes.
#[derive(Default)]
pub(crate) struct Timeline(std::sync::Mutex<std::collections::VecDeque<EventRecord>>);

impl Timeline {
    fn push(&self, e: EventRecord) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == MAX_EVENTS {
            q.pop_front();
        }
        q.push_back(e);
    }

    fn all(&self) -> Vec<EventRecord> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Records the events of `vn` as they come, until its sender closes.
    pub(crate) fn follow(
        self: &Arc<Self>,
        vn: &super::state::VnState,
    ) -> tokio::task::JoinHandle<()> {
        let mut events = vn.events.subscribe();
        let name = vn.name.clone();
        let timeline = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(timeline) = timeline.upgrade() else {
                    return;
                };
                let (kind, node, detail) = match event {
                    VnEvent::Joined(node) => {
                        ("joined", Some(node.url().to_string()), String::new())
                    }
                    VnEvent::Left { node, reason } => {
                        ("left", Some(node.url().to_string()), reason)
                    }
                    VnEvent::Failed { host, error } => ("failed", None, format!("{host}: {error}")),
                    VnEvent::Recovered {
                        object,
                        node,
                        cause,
                        replayed,
                        took,
                    } => (
                        "recovered",
                        Some(node.url().to_string()),
                        format!(
                            "object {object:#x} serves again after {:.2} s ({replayed} request(s) replayed): {cause}",
                            took.as_secs_f64()
                        ),
                    ),
                    VnEvent::MpiEnded(outcome) => ("mpi-ended", None, outcome.to_string()),
                    VnEvent::Migrated {
                        object,
                        type_name,
                        from,
                        to,
                        state_bytes,
                    } => (
                        "migrated",
                        Some(from),
                        format!(
                            "object {object:#x} ({type_name}, {}) moved to {to}",
                            bytes_text(state_bytes)
                        ),
                    ),
                    VnEvent::Checkpointed {
                        checkpoints,
                        objects,
                        bytes,
                        over,
                    } => (
                        "checkpointed",
                        None,
                        format!(
                            "{checkpoints} checkpoint(s) of {objects} object(s), {}, in the last {:.0} s",
                            bytes_text(bytes),
                            over.as_secs_f64()
                        ),
                    ),
                    VnEvent::RecoveryFailed { object, error } => (
                        "recovery-failed",
                        None,
                        format!("object {object:#x}: {error}"),
                    ),
                };
                timeline.push(EventRecord {
                    unix_ms: std::time::SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    vn: name.clone(),
                    kind: kind.to_owned(),
                    node,
                    detail,
                });
            }
        })
    }
}

/// A batch job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    /// What submitted it.
    pub launch: String,
    /// Its id, as its scheduler names it.
    pub id: String,
}

/// A line of output, as `/api/logs` gives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    /// The runtime's number.
    pub runtime: u64,
    /// Its virtual node.
    pub vn: String,
    /// Its host.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When, in milliseconds since the Unix epoch (the runtime's clock).
    pub unix_ms: u64,
    /// The line.
    pub text: String,
    /// Its level, when it is a tracing line (`ERROR`, `WARN`, `INFO`,
    /// `DEBUG`, `TRACE`).
    #[serde(default)]
    pub level: Option<String>,
}

/// Levels, most severe first.
const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// The level of a line written by a tracing subscriber's default format
/// (`2026-12-07T05:11:46.603522Z  INFO target: message`, the time
/// optional); `None` for any other line.
pub(crate) fn level_of(text: &str) -> Option<&'static str> {
    let mut words = text.split_whitespace();
    let first = words.next()?;
    let word = if first.len() > 10 && first.as_bytes()[4] == b'-' && first.contains('T') {
        words.next()?
    } else {
        first
    };
    LEVELS.into_iter().find(|l| *l == word)
}

/// How severe `level` is: 0 for `ERROR` … 4 for `TRACE`.
fn severity(level: &str) -> Option<usize> {
    LEVELS.iter().position(|l| l.eq_ignore_ascii_case(level))
}

impl From<&OutputLine> for LogLine {
    fn from(l: &OutputLine) -> LogLine {
        LogLine {
            runtime: l.runtime,
            vn: l.vn.clone(),
            host: l.host.clone(),
            pid: l.pid,
            stream: match l.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            }
            .to_owned(),
            unix_ms: l
                .time
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            level: level_of(&l.text).map(str::to_owned),
            text: l.text.clone(),
        }
    }
}

/// Where the runtimes of `launch` come from, in a word or two.
fn provider(launch: &super::state::LaunchRecord) -> String {
    if let Some(job) = &launch.job {
        return format!("{} job {}", job.job.kind.name(), job.job.id);
    }
    if launch.acquired {
        return format!("peer {}", launch.host);
    }
    let local = launch.host == "localhost"
        || launch.host.starts_with("127.")
        || launch.host == "::1"
        || launch.host == actogrid_technical_services::hostname();
    if local {
        "local".to_owned()
    } else {
        format!("ssh {}", launch.host)
    }
}

/// How long a runtime may take to say which objects it hosts.
const OBJECTS_TIMEOUT: Duration = Duration::from_secs(1);

/// The state of the deployment behind `inner`.
pub(crate) async fn status(inner: &Inner) -> DeploymentStatus {
    let shared = &inner.shared;
    let (runtimes, jobs, agents) = {
        let st = lock(&shared.state);
        let mut agents = Vec::new();
        let runtimes: Vec<(String, RuntimeStatus)> = st
            .runtimes
            .iter()
            .filter(|(_, r)| !r.gone)
            .map(|(id, r)| {
                let launch = &st.launches[r.launch as usize];
                agents.push(r.agent.clone());
                (
                    launch.vn.name.clone(),
                    RuntimeStatus {
                        id: *id,
                        host: r.host.clone(),
                        pid: r.pid,
                        launch: launch.label.clone(),
                        provider: provider(launch),
                        nodes: r.nodes.iter().map(|n| n.url().to_string()).collect(),
                        objects: Vec::new(),
                        objects_unknown: true,
                    },
                )
            })
            .collect();
        let jobs = st
            .launches
            .iter()
            .filter_map(|l| {
                l.job.as_ref().map(|j| JobStatus {
                    launch: l.label.clone(),
                    id: j.job.id.clone(),
                })
            })
            .collect();
        (runtimes, jobs, agents)
    };
    // Every runtime at once, each for a second at most.
    let asked = agents.iter().map(|agent| async move {
        tokio::time::timeout(OBJECTS_TIMEOUT, agent.objects())
            .await
            .ok()
            .and_then(Result::ok)
    });
    let answers = futures::future::join_all(asked).await;
    let mut runtimes = runtimes;
    // Who the senders that are runtimes are.
    let mut senders: HashMap<u64, (String, String)> = HashMap::new();
    let deployer = [
        Some(shared.runtime.id()),
        inner.options.runtime.as_ref().map(Runtime::id),
        crate::current().map(|rt| rt.id()),
    ];
    for id in deployer.into_iter().flatten() {
        senders.insert(id, ("runtime".to_owned(), "deployer".to_owned()));
    }
    for ((_, r), answer) in runtimes.iter_mut().zip(answers) {
        if let Some(hosted) = answer {
            senders.insert(
                hosted.runtime,
                (
                    "runtime".to_owned(),
                    format!("runtime #{} on {} pid {}", r.id, r.host, r.pid),
                ),
            );
            // Only the objects of its virtual node's nodes, not its own.
            let names: Vec<&str> = r
                .nodes
                .iter()
                .filter_map(|u| u.rsplit('/').next())
                .collect();
            r.objects = hosted
                .objects
                .into_iter()
                .filter(|o| names.contains(&o.node.as_str()))
                .collect();
            r.objects_unknown = false;
        }
    }
    let (calls, calls_more) = call_graph(&inner.rates, &mut runtimes, senders);
    let mut virtual_nodes: Vec<VnStatus> = shared
        .vns
        .values()
        .map(|vn| {
            let c = &vn.counters;
            let mut mine: Vec<RuntimeStatus> = runtimes
                .iter()
                .filter(|(name, _)| *name == vn.name)
                .map(|(_, r)| r.clone())
                .collect();
            mine.sort_by(|a, b| (&a.host, a.pid).cmp(&(&b.host, b.pid)));
            VnStatus {
                name: vn.name.clone(),
                expected: vn.expected,
                nodes: lock(&vn.nodes).len() as u64,
                runtimes_asked: c.asked.load(Ordering::Relaxed),
                runtimes_started: c.started.load(Ordering::Relaxed),
                runtimes_pending: c.pending.load(Ordering::Relaxed),
                runtimes_registered: c.registered.load(Ordering::Relaxed),
                runtimes_failed: c.failed.load(Ordering::Relaxed),
                failures: lock(&vn.failures).clone(),
                services: vn
                    .services
                    .iter()
                    .map(|s| format!("{} ({})", s.id, s.class))
                    .collect(),
                runtimes: mine,
            }
        })
        .collect();
    virtual_nodes.sort_by(|a, b| a.name.cmp(&b.name));
    DeploymentStatus {
        descriptor: inner.path.display().to_string(),
        uptime_ms: inner.loaded.elapsed().as_millis() as u64,
        ended: shared.ended.load(Ordering::Acquire),
        virtual_nodes,
        jobs,
        events: inner.timeline.all(),
        calls,
        calls_more,
    }
}

/// Arrows of the call graph a state carries at most (the busiest).
const MAX_EDGES: usize = 300;

/// Fills in the objects' rates, and gives the call graph's busiest
/// arrows (and how many more there are). `senders` names the runtimes
/// that may be senders.
fn call_graph(
    rates: &Rates,
    runtimes: &mut [(String, RuntimeStatus)],
    senders: HashMap<u64, (String, String)>,
) -> (Vec<CallEdge>, u64) {
    let now = Instant::now();
    let mut rates = lock(&rates.0);
    let mut names = senders;
    let mut edges = Vec::new();
    for (_, r) in runtimes.iter_mut() {
        for o in &mut r.objects {
            names.insert(o.id, ("object".to_owned(), o.type_name.clone()));
            if let Some(served) = o.served {
                o.calls_per_s = Some(rate(&mut rates, (0, o.id), served, now));
            }
            for c in &o.callers {
                edges.push(CallEdge {
                    from: c.from,
                    from_kind: String::new(),
                    from_label: String::new(),
                    to: o.id,
                    calls: c.calls,
                    per_s: rate(&mut rates, (c.from, o.id), c.calls, now),
                });
            }
        }
    }
    // Samples not met for a while belong to objects gone.
    rates.retain(|_, s| now.duration_since(s.seen) < Duration::from_secs(60));
    drop(rates);
    for e in &mut edges {
        let (kind, label) = names.get(&e.from).cloned().unwrap_or_else(|| {
            if e.from & (1 << 63) != 0 {
                ("runtime".to_owned(), format!("runtime {:#x}", e.from))
            } else {
                ("object".to_owned(), format!("object {:#x}", e.from))
            }
        });
        e.from_kind = kind;
        e.from_label = label;
    }
    edges.sort_by(|a, b| {
        b.per_s
            .total_cmp(&a.per_s)
            .then(b.calls.cmp(&a.calls))
            .then((a.from, a.to).cmp(&(b.from, b.to)))
    });
    let more = edges.len().saturating_sub(MAX_EDGES) as u64;
    edges.truncate(MAX_EDGES);
    (edges, more)
}

/// Counts whose rates a deployment follows, at most (objects, and pairs
/// of sender and object).
const MAX_SAMPLES: usize = 200_000;

/// Two samples of a count (`old` at least a second old once there are
/// two), for a rate over the last second or two.
struct Sample {
    old: (u64, Instant),
    new: (u64, Instant),
    seen: Instant,
}

/// The samples behind the rates a deployment's states show, by (sender,
/// object) — sender 0 for an object's requests served.
#[derive(Default)]
pub(crate) struct Rates(std::sync::Mutex<HashMap<(u64, u64), Sample>>);

/// The rate of `count` for `key`, per second, as of `now`.
fn rate(
    samples: &mut HashMap<(u64, u64), Sample>,
    key: (u64, u64),
    count: u64,
    now: Instant,
) -> f64 {
    if samples.len() >= MAX_SAMPLES && !samples.contains_key(&key) {
        // Past the bound, new pairs show their counts without a rate.
        return 0.0;
    }
    let s = samples.entry(key).or_insert(Sample {
        old: (count, now),
        new: (count, now),
        seen: now,
    });
    s.seen = now;
    if count < s.new.0 {
        // Counted anew (the object moved, or was restored): start over.
        s.old = (count, now);
        s.new = (count, now);
    }
    if now.duration_since(s.new.1) >= Duration::from_secs(1) {
        s.old = s.new;
        s.new = (count, now);
    }
    let dt = now.duration_since(s.old.1).as_secs_f64();
    if dt < 0.25 {
        return 0.0;
    }
    (count - s.old.0) as f64 / dt
}

/// The metrics of `status`, in Prometheus' text format.
pub(crate) fn metrics(status: &DeploymentStatus, log_lines: usize) -> String {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct VnLabel {
        vn: String,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct VnState {
        vn: String,
        state: String,
    }

    let mut registry = Registry::with_prefix("actogrid");
    let runtimes = Family::<VnState, Gauge>::default();
    let nodes = Family::<VnLabel, Gauge>::default();
    let expected = Family::<VnLabel, Gauge>::default();
    let failures = Family::<VnLabel, Gauge>::default();
    for vn in &status.virtual_nodes {
        for (state, n) in [
            ("asked", vn.runtimes_asked),
            ("started", vn.runtimes_started),
            ("pending", vn.runtimes_pending),
            ("registered", vn.runtimes_registered),
            ("failed", vn.runtimes_failed),
            ("running", vn.runtimes.len() as u64),
        ] {
            runtimes
                .get_or_create(&VnState {
                    vn: vn.name.clone(),
                    state: state.to_owned(),
                })
                .set(n as i64);
        }
        let label = VnLabel {
            vn: vn.name.clone(),
        };
        nodes.get_or_create(&label).set(vn.nodes as i64);
        if let Some(e) = vn.expected {
            expected.get_or_create(&label).set(e as i64);
        }
        failures.get_or_create(&label).set(vn.failures.len() as i64);
    }
    registry.register(
        "runtimes",
        "Runtimes of each virtual node, by state",
        runtimes,
    );
    registry.register("nodes", "Usable nodes of each virtual node", nodes);
    registry.register(
        "nodes_expected",
        "Nodes the descriptor promises each virtual node",
        expected,
    );
    registry.register("failures", "Failed launches of each virtual node", failures);
    let objects = Family::<VnLabel, Gauge>::default();
    let queued = Family::<VnLabel, Gauge>::default();
    let served = Family::<VnLabel, Gauge>::default();
    let rate = Family::<VnLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for vn in &status.virtual_nodes {
        let label = VnLabel {
            vn: vn.name.clone(),
        };
        let here = vn.runtimes.iter().flat_map(|r| &r.objects);
        objects
            .get_or_create(&label)
            .set(here.clone().count() as i64);
        queued
            .get_or_create(&label)
            .set(here.clone().map(|o| o.queued as i64).sum());
        served
            .get_or_create(&label)
            .set(here.clone().filter_map(|o| o.served).sum::<u64>() as i64);
        rate.get_or_create(&label)
            .set(here.filter_map(|o| o.calls_per_s).sum());
    }
    registry.register(
        "objects",
        "Active objects on the nodes of each virtual node",
        objects,
    );
    registry.register(
        "requests_served",
        "Requests served by the active objects on the nodes of each virtual node, each since it came to its runtime",
        served,
    );
    registry.register(
        "requests_per_second",
        "Requests served per second by the active objects on the nodes of each virtual node, over the last second or two",
        rate,
    );
    registry.register(
        "queued_requests",
        "Requests waiting in the queues of the active objects of each virtual node",
        queued,
    );
    let jobs = Gauge::<i64>::default();
    jobs.set(status.jobs.len() as i64);
    registry.register("batch_jobs", "Batch jobs submitted and not cancelled", jobs);
    let lines = Gauge::<i64>::default();
    lines.set(log_lines as i64);
    registry.register("log_lines", "Output lines of the runtimes kept", lines);
    let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    uptime.set(status.uptime_ms as f64 / 1000.0);
    registry.register(
        "deployment_uptime_seconds",
        "Since the deployment was loaded",
        uptime,
    );
    let mut out = String::new();
    // Writing into a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

struct Served {
    inner: Weak<Inner>,
}

type Shared = Arc<Served>;

/// Serves the dashboard of `inner` on `addr`.
pub(crate) async fn start(addr: SocketAddr, inner: &Arc<Inner>) -> std::io::Result<Dashboard> {
    let inner = Arc::downgrade(inner);
    let served: Shared = Arc::new(Served { inner });
    let app = axum::Router::new()
        .route("/", axum::routing::get(index))
        .route("/api/state", axum::routing::get(api_state))
        .route("/api/stream", axum::routing::get(api_stream))
        .route("/api/logs", axum::routing::get(api_logs))
        .route("/metrics", axum::routing::get(api_metrics))
        .route(
            "/api/runtimes/{id}/{action}",
            axum::routing::post(api_runtime_action),
        )
        .route("/api/end", axum::routing::post(api_end))
        .route(
            "/api/objects/{id}/migrate",
            axum::routing::post(api_migrate),
        )
        .with_state(served);
    Dashboard::start(addr, "this deployment", app).await
}

fn gone() -> Response {
    (StatusCode::GONE, "the deployment has ended\n").into_response()
}

/// The page (embedded in the binary), with the state in words for
/// browsers without scripts.
const PAGE: &str = include_str!("dashboard.html");

/// The dashboard's page: the deployment drawn live from `/api/stream`.
async fn index(State(served): State<Shared>) -> Response {
    let Some(inner) = served.inner.upgrade() else {
        return gone();
    };
    let state = status(&inner).await;
    web::page(
        PAGE.replace("{{TITLE}}", &html(&state.descriptor))
            .replace("{{TEXT}}", &html(&state.to_string())),
    )
}

/// `GET /api/stream`: server-sent events for the page — `state` (the
/// JSON of `/api/state`) when it changes, checked every second, and `log`
/// (a line of output, as `/api/logs` gives it) as lines come; a comment
/// every 15 s keeps proxies from closing a quiet stream. Ends with the
/// deployment.
async fn api_stream(State(served): State<Shared>) -> Response {
    let Some(inner) = served.inner.upgrade() else {
        return gone();
    };
    let mut logs = inner.shared.outputs.follow();
    let weak = served.inner.clone();
    drop(inner);
    let stream = async_stream(move |tx| async move {
        let mut last = String::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut quiet = tokio::time::Instant::now();
        loop {
            let chunk = tokio::select! {
                _ = tick.tick() => {
                    let Some(inner) = weak.upgrade() else { break };
                    if inner.shared.ended.load(Ordering::Acquire) {
                        break;
                    }
                    let mut state = status(&inner).await;
                    // The page draws the call graph from `calls`: each
                    // object's own list of senders is not sent each second.
                    for r in state.virtual_nodes.iter_mut().flat_map(|v| &mut v.runtimes) {
                        for o in &mut r.objects {
                            o.callers.clear();
                        }
                    }
                    let state = serde_json::to_string(&state).unwrap_or_default();
                    drop(inner);
                    if state != last {
                        last = state.clone();
                        format!("event: state\ndata: {state}\n\n")
                    } else if quiet.elapsed() > Duration::from_secs(15) {
                        ": still here\n\n".to_owned()
                    } else {
                        continue;
                    }
                }
                line = logs.recv() => match line {
                    Ok(line) => format!(
                        "event: log\ndata: {}\n\n",
                        serde_json::to_string(&LogLine::from(&line)).unwrap_or_default()
                    ),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        format!("event: missed\ndata: {n}\n\n")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            };
            quiet = tokio::time::Instant::now();
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    web::event_stream(stream)
}

/// `POST /api/runtimes/{id}/stop` asks runtime `id` to stop (it leaves
/// its virtual node); `…/kill` makes its process exit at once, as a crash
/// would (fault injection: the deployment finds out by the lease, and
/// fault tolerance recovers what it protected).
async fn api_runtime_action(
    State(served): State<Shared>,
    axum::extract::Path((id, action)): axum::extract::Path<(u64, String)>,
) -> Response {
    let Some(inner) = served.inner.upgrade() else {
        return gone();
    };
    let agent = lock(&inner.shared.state)
        .runtimes
        .get(&id)
        .filter(|r| !r.gone)
        .map(|r| (r.agent.clone(), r.host.clone(), r.pid));
    let Some((agent, host, pid)) = agent else {
        return (
            StatusCode::NOT_FOUND,
            format!("no runtime {id} in this deployment\n"),
        )
            .into_response();
    };
    let asked = match action.as_str() {
        "stop" => agent.shutdown().await,
        "kill" => agent.crash().await,
        other => {
            return (
                StatusCode::NOT_FOUND,
                format!("`{other}` is not an action on a runtime: stop or kill\n"),
            )
                .into_response();
        }
    };
    match asked {
        Ok(()) => {
            tracing::warn!("dashboard: runtime {id} on {host} (pid {pid}) told to {action}");
            (
                StatusCode::OK,
                format!("runtime {id} on {host} (pid {pid}): {action}\n"),
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("runtime {id} on {host} (pid {pid}) did not answer: {e}\n"),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct MigrateQuery {
    /// The node to move the object to (its URL).
    to: String,
}

/// `POST /api/objects/{id}/migrate?to=NODE_URL` moves object `id` to a
/// node of this deployment, at its next request boundary (requests
/// queued before are served where it is).
async fn api_migrate(
    State(served): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    Query(q): Query<MigrateQuery>,
) -> Response {
    let Some(inner) = served.inner.upgrade() else {
        return gone();
    };
    let state = status(&inner).await;
    let runtimes = || state.virtual_nodes.iter().flat_map(|v| &v.runtimes);
    if !runtimes().any(|r| r.nodes.contains(&q.to)) {
        return (
            StatusCode::BAD_REQUEST,
            format!("`{}` is not a node of this deployment\n", q.to),
        )
            .into_response();
    }
    let Ok(to) = q.to.parse::<actogrid_runtime::NodeUrl>() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("`{}` is not a node URL\n", q.to),
        )
            .into_response();
    };
    let found = state
        .objects()
        .find(|(_, o)| o.id == id)
        .and_then(|(r, o)| {
            let node = r
                .nodes
                .iter()
                .find(|n| n.rsplit('/').next() == Some(&o.node))?;
            let url = node.parse::<actogrid_runtime::NodeUrl>().ok()?;
            Some((url, o.clone()))
        });
    let Some((at, object)) = found else {
        return (
            StatusCode::NOT_FOUND,
            format!("no object {id:#x} on the nodes of this deployment\n"),
        )
            .into_response();
    };
    let address = super::agent::host_port(at.host(), at.port());
    let reference = inner
        .shared
        .runtime
        .reference(&address, at.name(), id, &object.type_name);
    match reference.migrate_to(&to).await {
        Ok(()) => {
            tracing::info!("dashboard: object {id:#x} moved from {at} to {to}");
            (StatusCode::OK, format!("object {id:#x} moved to {to}\n")).into_response()
        }
        Err(e) => (
            StatusCode::CONFLICT,
            format!("object {id:#x} could not move to {to}: {e}\n"),
        )
            .into_response(),
    }
}

/// `POST /api/end` tears the deployment down, as `Deployment::kill` does.
async fn api_end(State(served): State<Shared>) -> Response {
    let Some(inner) = served.inner.upgrade() else {
        return gone();
    };
    tracing::warn!("dashboard: the deployment is ended");
    // Not awaited here: the teardown stops this server too.
    tokio::spawn(async move { super::kill(&inner).await });
    (StatusCode::ACCEPTED, "the deployment ends\n").into_response()
}

async fn api_state(State(served): State<Shared>) -> Response {
    let Some(inner) = served.inner.upgrade() else {
        return gone();
    };
    axum::Json(status(&inner).await).into_response()
}

async fn api_metrics(State(served): State<Shared>) -> Response {
    let Some(inner) = served.inner.upgrade() else {
        return gone();
    };
    let lines = inner.shared.outputs.all().len();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics(&status(&inner).await, lines),
    )
        .into_response()
}

/// Which lines `/api/logs` gives.
#[derive(Deserialize, Default)]
struct LogQuery {
    /// Only this virtual node's.
    vn: Option<String>,
    /// Only this runtime's (its number), or the runtimes on this host.
    runtime: Option<u64>,
    host: Option<String>,
    /// Only the runtime of this node (its URL, or its name: every runtime
    /// with a node of that name).
    node: Option<String>,
    /// Only tracing lines of this level or more severe.
    level: Option<String>,
    /// Only `stdout` or `stderr`.
    stream: Option<String>,
    /// Keep the answer open and stream new lines (one JSON object per line).
    follow: Option<u8>,
}

/// A [`LogQuery`] made ready: the runtimes its node names, its level.
struct LogFilter {
    q: LogQuery,
    runtimes: Option<std::collections::HashSet<u64>>,
    severity: Option<usize>,
}

impl LogFilter {
    /// `q` against the deployment's runtimes; an error for a level or a
    /// node that means nothing.
    fn new(q: LogQuery, inner: &Inner) -> Result<LogFilter, String> {
        let severity = match &q.level {
            None => None,
            Some(l) => Some(severity(l).ok_or_else(|| {
                format!("`{l}` is not a level: give error, warn, info, debug or trace")
            })?),
        };
        let runtimes = match &q.node {
            None => None,
            Some(node) => {
                let st = lock(&inner.shared.state);
                let found: std::collections::HashSet<u64> = st
                    .runtimes
                    .iter()
                    .filter(|(_, r)| {
                        r.nodes
                            .iter()
                            .any(|n| n.url().to_string() == *node || n.url().name() == node)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                if found.is_empty() {
                    return Err(format!("no node `{node}` in this deployment"));
                }
                Some(found)
            }
        };
        Ok(LogFilter {
            q,
            runtimes,
            severity,
        })
    }

    fn wants(&self, l: &OutputLine) -> bool {
        let q = &self.q;
        q.vn.as_ref().is_none_or(|v| *v == l.vn)
            && q.runtime.is_none_or(|r| r == l.runtime)
            && q.host.as_ref().is_none_or(|h| *h == l.host)
            && self
                .runtimes
                .as_ref()
                .is_none_or(|r| r.contains(&l.runtime))
            && self.severity.is_none_or(|most| {
                level_of(&l.text)
                    .and_then(severity)
                    .is_some_and(|s| s <= most)
            })
            && q.stream.as_deref().is_none_or(|s| match l.stream {
                Stream::Stdout => s == "stdout",
                Stream::Stderr => s == "stderr",
            })
    }
}

async fn api_logs(State(served): State<Shared>, Query(q): Query<LogQuery>) -> Response {
    let Some(inner) = served.inner.upgrade() else {
        return gone();
    };
    let follow = q.follow.unwrap_or(0) != 0;
    let q = match LogFilter::new(q, &inner) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, e + "\n").into_response(),
    };
    if !follow {
        let all: Vec<LogLine> = inner
            .shared
            .outputs
            .all()
            .iter()
            .filter(|l| q.wants(l))
            .map(LogLine::from)
            .collect();
        let skip = all.len().saturating_sub(MAX_LOG_LINES);
        return axum::Json(&all[skip..]).into_response();
    }
    // New lines as they come, one JSON object per line; a heartbeat line
    // (`{}`) every few seconds tells a reader the deployment is still
    // there. The answer ends with the deployment.
    let mut follow = inner.shared.outputs.follow();
    let weak = served.inner.clone();
    drop(inner);
    let stream = async_stream(move |tx| async move {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), follow.recv()).await;
            let chunk = match next {
                Ok(Ok(line)) if q.wants(&line) => {
                    serde_json::to_string(&LogLine::from(&line)).unwrap_or_default() + "\n"
                }
                Ok(Ok(_)) => continue,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                    format!("{{\"missed\":{n}}}\n")
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
                Err(_) => {
                    if weak
                        .upgrade()
                        .is_none_or(|i| i.shared.ended.load(Ordering::Acquire))
                    {
                        break;
                    }
                    "{}\n".to_owned()
                }
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}
