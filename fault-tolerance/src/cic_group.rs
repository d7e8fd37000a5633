//! The FT server's side of CIC on real runtimes: the deployment's group
//! of CIC members, its recovery line durable in the FT store
//! ([`DurableLine`]), and what each member learns from it.
//!
//! A member joins at its first request, with the state it was created
//! in, at the group's current line ([`Member::join`]); it then hands its
//! checkpoints and reception histories over in batches, off the call path
//! ([`crate::cic_node`]), and each batch is answered with the committed
//! line and what the other members' checkpoints of that line took from it
//! ([`Committed`]): the wire carries no acknowledgements of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actogrid_runtime::intercept::Logged;
use serde::{Deserialize, Serialize};

use crate::cic::{
    At, DurableLine, Entry, Incarnation, LineError, Member, ObjectId, Received, Record, RequestId,
};
use crate::store::{LogPosition, ObjectKey, ReplyId, Store};

/// The name of the deployment's group in the store.
pub const GROUP: &str = "cic";

/// What a member hands over, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CicWrite {
    /// A checkpoint: its record, and the body's state (an encoded
    /// [`actogrid_runtime::intercept::Checkpoint`]).
    Checkpoint {
        /// The protocol's part.
        record: Record<Vec<u8>>,
        /// The body's.
        state: Vec<u8>,
    },
    /// A member holds a reply produced below this index: the group wants
    /// a line there (every member checkpoints up to it soon).
    Want(u64),
    /// A request the member delivered at `position` of its history, as
    /// it came: what a recovery serves it again from, if the line needs
    /// that delivery replayed.
    Request {
        /// The delivery's place in the member's history.
        position: u64,
        /// The request.
        logged: Logged,
    },
    /// Reception-history entries, after those before.
    History {
        /// The member's epoch when it recorded them.
        epoch: Incarnation,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// The object ended (it was terminated) at `at` of its history, the
    /// place of the checkpoint it handed over last: a recovery that
    /// restarts it from there ends it again.
    Ended {
        /// The member's epoch.
        epoch: Incarnation,
        /// Where it ended.
        at: At,
    },
}

/// The group as a member's batch leaves it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// The group's epoch.
    pub epoch: u64,
    /// The committed recovery line.
    pub line: u64,
    /// What the line's checkpoints took from the member.
    pub received: Received,
    /// The members, when they changed since the version the node said it
    /// had seen.
    pub members: Option<Vec<u64>>,
    /// The version of the member list.
    pub version: u64,
    /// The line some member waits for (see [`CicWrite::Want`]).
    pub wanted: u64,
    /// For a member a recovery of the group restores: where it restarts
    /// from (given until it stores something in the new epoch).
    #[serde(default)]
    pub restart: Option<Box<RestartFrom>>,
}

/// How a member restored by a recovery of the group restarts (see
/// [`Member::restart`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartFrom {
    /// The group's new epoch.
    pub epoch: u64,
    /// The line it restarts from.
    pub line: u64,
    /// Its checkpoint covering the line.
    pub record: Record<Vec<u8>>,
    /// The requests it serves again first, in this order.
    pub replay: Vec<(ObjectId, u64)>,
}

/// Where a member lives, as the group knows it.
#[derive(Debug, Clone)]
struct Home {
    /// Its node's URL.
    node: String,
    /// A recovery of the group is restoring it.
    recovering: bool,
    /// When a recovery last restored it there.
    restored: Option<Instant>,
}

/// Where a member is, as [`CicGroup::located`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    /// A recovery of the group is restoring it.
    Recovering,
    /// It serves at the runtime at `address` (`host:port`), where a
    /// recovery restored it at `restored`, if one did.
    At {
        /// The runtime.
        address: String,
        /// When a recovery last restored it there.
        restored: Option<Instant>,
    },
}

/// The group on the FT server.
#[derive(Debug)]
pub struct CicGroup {
    store: Store,
    line: tokio::sync::Mutex<Option<DurableLine<Vec<u8>>>>,
    /// Bumped when a member joins.
    version: AtomicU64,
    checkpoints: AtomicU64,
    spanning: AtomicU64,
    entries: AtomicU64,
    wanted: AtomicU64,
    homes: Mutex<HashMap<u64, Home>>,
    /// Members a recovery restores, until they store in the new epoch.
    restarts: Mutex<HashMap<u64, RestartFrom>>,
    /// Members that ended, and where in their histories.
    ended: Mutex<HashMap<u64, At>>,
    /// When the requests kept for replays were last collected.
    collected: Mutex<Option<Instant>>,
    /// Held by the recovery under way.
    recovering: tokio::sync::Mutex<()>,
}

/// How often the requests the line no longer needs are collected, at most.
const COLLECT_REQUESTS: Duration = Duration::from_secs(1);

/// The store key of the requests member `object` delivered.
fn requests_key(object: u64) -> ObjectKey {
    ObjectKey::new(format!("cic-req:{GROUP}:{object:x}"))
}

fn sender_key(sender: ObjectId) -> ObjectKey {
    ObjectKey::new(sender.0.to_be_bytes().to_vec())
}

/// The `host:port` of the runtime of the node at URL `node`.
fn address_of(node: &str) -> Option<String> {
    let url: actogrid_runtime::NodeUrl = node.parse().ok()?;
    Some(format!("{}:{}", url.host(), url.port()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a recovery of the group did ([`CicGroup::recover`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecovery {
    /// The group's new epoch.
    pub epoch: u64,
    /// The line every member restarted from.
    pub line: u64,
    /// The members restored (all of them).
    pub members: usize,
    /// Of those, the ones restored on the node given for the failed
    /// runtime's.
    pub moved: usize,
    /// Requests served again from the history (replays the line needs).
    pub replayed: usize,
    /// Requests in transit across the line, delivered again from what
    /// their senders' checkpoints kept.
    pub resent: usize,
    /// From the start of the recovery to every member restored.
    pub took: Duration,
    /// Each member, where it was restored.
    pub restored: Vec<Restored>,
}

/// One member restored by a recovery of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The member.
    pub object: u64,
    /// The URL of the node it serves on now.
    pub node: String,
    /// The requests it served first (replayed and resent).
    pub served: usize,
    /// It was restored on the node given for the failed runtime's members
    /// (not in place).
    pub moved: bool,
}

/// How the group stands, and what it took so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CicStats {
    /// Its epoch.
    pub epoch: u64,
    /// The committed line.
    pub line: u64,
    /// Its members.
    pub members: usize,
    /// Checkpoints stored.
    pub checkpoints: u64,
    /// Of those, the ones standing for several indices (forced by a
    /// message from ahead, over a jump).
    pub spanning: u64,
    /// Reception-history entries stored.
    pub entries: u64,
    /// Checkpoints and history entries kept now (what the line's
    /// collection bounds).
    pub kept: (usize, usize),
}

fn failed(e: LineError) -> String {
    e.to_string()
}

impl CicGroup {
    /// The group kept in `store` (opened at its first use).
    pub fn new(store: Store) -> CicGroup {
        CicGroup {
            store,
            line: tokio::sync::Mutex::new(None),
            version: AtomicU64::new(1),
            checkpoints: AtomicU64::new(0),
            spanning: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            homes: Mutex::new(HashMap::new()),
            restarts: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
            collected: Mutex::new(None),
            recovering: tokio::sync::Mutex::new(()),
        }
    }

    /// How the group stands.
    pub async fn stats(&self) -> CicStats {
        let guard = self.line.lock().await;
        let (epoch, line, members, kept) = match guard.as_ref() {
            Some(l) => {
                let k = l.keeper();
                (k.epoch().0, k.line(), k.members().count(), k.kept())
            }
            None => (0, 0, 0, (0, 0)),
        };
        CicStats {
            epoch,
            line,
            members,
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            spanning: self.spanning.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            kept,
        }
    }

    /// `object`, on the node at URL `node`, joins with `state`, the body's
    /// state before its first request; where the group stands. A group
    /// left in the store by an earlier server is taken up when `object` is
    /// one of its members, and started anew otherwise (a new deployment).
    /// A member a recovery restores is told where it restarts from
    /// ([`Committed::restart`]); without `state`, nothing else happens (a
    /// node asking whether a recovery restores `object`).
    pub async fn join(
        &self,
        object: u64,
        state: Vec<u8>,
        node: String,
    ) -> Result<Committed, String> {
        let me = ObjectId(object);
        let mut guard = self.line.lock().await;
        let restart = lock(&self.restarts).get(&object).cloned();
        if let Some(restart) = restart {
            let mut committed = self.committed(guard.as_ref(), me, 0);
            committed.restart = Some(Box::new(restart));
            return Ok(committed);
        }
        if state.is_empty() {
            // A node asking whether a recovery restores it: no.
            return Ok(self.committed(guard.as_ref(), me, 0));
        }
        if guard.is_none() {
            let found = DurableLine::open(&self.store, GROUP)
                .await
                .map_err(failed)?;
            *guard = found.filter(|l| l.keeper().is_member(me));
        }
        match guard.as_mut() {
            Some(line) => {
                let keeper = line.keeper();
                let record = Member::<Vec<u8>>::joining_record(me, keeper.epoch(), keeper.line());
                if !keeper.is_member(me) {
                    line.join(record, state).await.map_err(failed)?;
                    self.version.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                let record = Member::<Vec<u8>>::initial_record(me);
                let line = DurableLine::create(&self.store, GROUP, vec![(record, state)])
                    .await
                    .map_err(failed)?;
                *guard = Some(line);
                self.version.fetch_add(1, Ordering::Relaxed);
            }
        }
        lock(&self.homes).insert(
            object,
            Home {
                node,
                recovering: false,
                restored: None,
            },
        );
        Ok(self.committed(guard.as_ref(), me, 0))
    }

    /// Carries out `writes` of `object`, in order; where the group stands
    /// then. `seen` is the version of the member list the node has.
    pub async fn store(
        &self,
        object: u64,
        writes: Vec<CicWrite>,
        seen: u64,
    ) -> Result<Committed, String> {
        let me = ObjectId(object);
        let mut guard = self.line.lock().await;
        let line = guard
            .as_mut()
            .ok_or_else(|| format!("{me} is not a member of the CIC group: it never joined"))?;
        let epoch = line.keeper().epoch();
        let line_before = line.keeper().line();
        // Requests go to the store together, before what follows them.
        let mut requests = Vec::new();
        for write in writes {
            if let CicWrite::Request { position, logged } = write {
                let id = ReplyId {
                    sender: sender_key(ObjectId(logged.sender)),
                    sequence: logged.seq,
                };
                let bytes = postcard::to_allocvec(&logged).map_err(|e| e.to_string())?;
                requests.push((id, LogPosition(position), bytes));
                continue;
            }
            self.keep_requests(object, &mut requests).await?;
            match write {
                CicWrite::Checkpoint { record, state } => {
                    if record.object != me {
                        return Err(format!("{me} sent a checkpoint of {}", record.object));
                    }
                    if record.epoch != epoch {
                        // An instance a recovery discarded, whose batch was
                        // on its way: what it took counts no more.
                        continue;
                    }
                    lock(&self.restarts).remove(&object);
                    if state.is_empty() && !line.keeper().absorbs(&record) {
                        return Err(format!(
                            "{me} sent checkpoint {}..={} without its state, and it is not the same as its last one",
                            record.lo, record.hi
                        ));
                    }
                    self.checkpoints.fetch_add(1, Ordering::Relaxed);
                    if record.hi > record.lo {
                        self.spanning.fetch_add(1, Ordering::Relaxed);
                    }
                    line.store_checkpoint(record, state).await.map_err(failed)?;
                }
                CicWrite::Want(index) => {
                    self.wanted.fetch_max(index, Ordering::Relaxed);
                }
                CicWrite::Request { .. } => {}
                CicWrite::Ended {
                    epoch: at_epoch,
                    at,
                } => {
                    if at_epoch == epoch {
                        lock(&self.ended).insert(object, at);
                    }
                }
                CicWrite::History { epoch: at, entries } if at != epoch => {
                    let _ = entries;
                }
                CicWrite::History { epoch, entries } => {
                    lock(&self.restarts).remove(&object);
                    self.entries
                        .fetch_add(entries.len() as u64, Ordering::Relaxed);
                    line.store_history(me, epoch, entries)
                        .await
                        .map_err(failed)?;
                }
            }
        }
        self.keep_requests(object, &mut requests).await?;
        if line.keeper().line() != line_before {
            self.collect_requests(line).await;
        }
        Ok(self.committed(guard.as_ref(), me, seen))
    }

    /// Makes the requests `object` delivered durable (they go first: the
    /// history entries that follow name them).
    async fn keep_requests(
        &self,
        object: u64,
        requests: &mut Vec<(ReplyId, LogPosition, Vec<u8>)>,
    ) -> Result<(), String> {
        if requests.is_empty() {
            return Ok(());
        }
        (self.store)
            .record_replies(&requests_key(object), std::mem::take(requests))
            .await
            .map_err(|e| format!("the requests {object:#x} delivered were not kept: {e}"))
    }

    /// Drops the requests kept for replays that no line can need any more:
    /// those each member delivered before its first checkpoint kept (at
    /// most every [`COLLECT_REQUESTS`]: each drop is a durable write).
    async fn collect_requests(&self, line: &DurableLine<Vec<u8>>) {
        {
            let mut last = lock(&self.collected);
            if last.is_some_and(|t| t.elapsed() < COLLECT_REQUESTS) {
                return;
            }
            *last = Some(Instant::now());
        }
        let keeper = line.keeper();
        let firsts: Vec<(ObjectId, BTreeMap<ObjectId, u64>)> = keeper
            .members()
            .filter_map(|m| Some((m, keeper.first_kept(m)?.state.delivered_table())))
            .collect();
        for (member, delivered) in firsts {
            for (sender, seq) in delivered {
                let key = requests_key(member.0);
                if let Err(e) = (self.store)
                    .forget_replies(&key, &sender_key(sender), seq + 1)
                    .await
                {
                    tracing::warn!("CIC: requests of {member} kept for replays not collected: {e}");
                    return;
                }
            }
        }
    }

    /// Where member `object` lives now; `None` if it is not a member.
    pub fn located(&self, object: u64) -> Option<Where> {
        let homes = lock(&self.homes);
        let home = homes.get(&object)?;
        if home.recovering {
            return Some(Where::Recovering);
        }
        Some(Where::At {
            address: address_of(&home.node)?,
            restored: home.restored,
        })
    }

    /// Whether members live on the runtime at `address` (`host:port`).
    pub fn hosts_members(&self, address: &str) -> bool {
        (lock(&self.homes).values()).any(|h| address_of(&h.node).as_deref() == Some(address))
    }

    /// The node URL of every member, as the group knows it.
    pub fn homes(&self) -> Vec<(u64, String)> {
        lock(&self.homes)
            .iter()
            .map(|(o, h)| (*o, h.node.clone()))
            .collect()
    }

    fn committed(&self, line: Option<&DurableLine<Vec<u8>>>, me: ObjectId, seen: u64) -> Committed {
        let Some(line) = line else {
            return Committed::default();
        };
        let keeper = line.keeper();
        let version = self.version.load(Ordering::Relaxed);
        Committed {
            epoch: keeper.epoch().0,
            line: keeper.line(),
            received: keeper.received_from(me),
            members: (seen != version).then(|| keeper.members().map(|o| o.0).collect()),
            version,
            wanted: self.wanted.load(Ordering::Relaxed),
            restart: None,
        }
    }
}

/// What one member restarts with, once the plan is read.
struct Restore {
    object: u64,
    home: Option<String>,
    checkpoint: actogrid_runtime::intercept::Checkpoint,
    log: Vec<Logged>,
    /// Of `log`, the requests in transit across the line.
    resent: usize,
    /// It had ended where the line restarts it: it ends again once
    /// restored.
    ends: bool,
}

impl CicGroup {
    /// The runtime at `failed` (`host:port`) hosted members and died: the
    /// whole group rolls back to its best recovery line, in a new epoch.
    /// Every member's instance is discarded where it lives (the members of
    /// other runtimes roll back in place: their runtimes go on serving
    /// their other objects), then restored from its checkpoint of the
    /// line — those of the failed runtime on `to` — serving first the
    /// requests the line needs replayed (from the requests the members
    /// handed over) and those in transit across the line (from what their
    /// senders' checkpoints kept). `changed` is called when members start
    /// and stop recovering (callers asking where they are wait meanwhile).
    pub async fn recover(
        &self,
        dead: &str,
        to: &actogrid_runtime::Node,
        gone: &(dyn Fn(&str) -> bool + Send + Sync),
        changed: &(dyn Fn() + Send + Sync),
    ) -> Result<GroupRecovery, String> {
        // One at a time: each restores every member, in its own epoch.
        let _one = self.recovering.lock().await;
        let started = Instant::now();
        if !self.hosts_members(dead) {
            // A recovery that ran meanwhile took them elsewhere.
            let stats = self.stats().await;
            return Ok(GroupRecovery {
                epoch: stats.epoch,
                line: stats.line,
                members: 0,
                moved: 0,
                replayed: 0,
                resent: 0,
                took: started.elapsed(),
                restored: Vec::new(),
            });
        }
        let (plan_epoch, plan_line, restores) = {
            let mut guard = self.line.lock().await;
            let line = guard
                .as_mut()
                .ok_or_else(|| "there is no CIC group to recover".to_owned())?;
            let recovery =
                line.recover().await.map_err(failed)?.ok_or_else(|| {
                    "the CIC group's committed line is not recoverable".to_owned()
                })?;
            let restores = self.restores(&recovery)?;
            let plan = &recovery.plan;
            {
                let mut homes = lock(&self.homes);
                for r in &restores {
                    if let Some(h) = homes.get_mut(&r.object) {
                        h.recovering = true;
                    }
                }
            }
            {
                let mut restarts = lock(&self.restarts);
                restarts.clear();
                for r in &plan.restarts {
                    restarts.insert(
                        r.object.0,
                        RestartFrom {
                            epoch: plan.epoch.0,
                            line: plan.line,
                            record: r.record.clone(),
                            replay: r.replay.clone(),
                        },
                    );
                }
            }
            (plan.epoch.0, plan.line, restores)
        };
        changed();
        let runtime = to.runtime();
        // Members of the failed runtime, and of any other known to have
        // failed, go to `to`: nothing to discard there.
        let on_failed = |home: &Option<String>| {
            home.as_deref()
                .and_then(address_of)
                .is_none_or(|a| a == dead || gone(&a))
        };
        // Every old instance goes before any new one serves: a new one's
        // requests must not reach an old one.
        let discards = restores.iter().filter(|r| !on_failed(&r.home)).map(|r| {
            let node = r.home.as_deref().unwrap_or_default();
            let object = r.object;
            async move {
                let node = runtime.node(&node.parse().map_err(|e| format!("{node}: {e}"))?);
                crate::server::discard_within(&node, object).await
            }
        });
        let discarded = futures::future::join_all(discards).await;
        let mut unreachable = std::collections::HashSet::new();
        for (r, result) in restores
            .iter()
            .filter(|r| !on_failed(&r.home))
            .zip(discarded)
        {
            if let Err(e) = result {
                tracing::warn!(
                    object = format_args!("{:#x}", r.object),
                    "CIC recovery: the member's instance could not be discarded at {}; it is restored on {} instead: {e}",
                    r.home.as_deref().unwrap_or("?"),
                    to.url()
                );
                unreachable.insert(r.object);
            }
        }
        {
            // Those restored to serve on will not end where they had.
            let mut ended = lock(&self.ended);
            for r in restores.iter().filter(|r| !r.ends) {
                ended.remove(&r.object);
            }
        }
        let resent = restores.iter().map(|r| r.resent).sum::<usize>();
        let replayed = restores.iter().map(|r| r.log.len()).sum::<usize>() - resent;
        let mut moved = 0;
        let members = restores.len();
        let restored = restores.into_iter().map(|r| {
            let here = on_failed(&r.home) || unreachable.contains(&r.object);
            if here {
                moved += 1;
            }
            async move {
                let node = match (&r.home, here) {
                    (Some(home), false) => {
                        runtime.node(&home.parse().map_err(|e| format!("{home}: {e}"))?)
                    }
                    _ => to.clone(),
                };
                let object = r.object;
                let served = r.log.len();
                let type_name = r.checkpoint.type_name.clone();
                crate::server::restore_on(&node, r.checkpoint, r.log, Vec::new())
                    .await
                    .map_err(|e| {
                        format!("member {object:#x} was not restored on {}: {e}", node.url())
                    })?;
                if r.ends {
                    // Restored for what the group needs of it (its
                    // checkpoints), then ended as it was.
                    let url = node.url();
                    let address = address_of(&url.to_string()).unwrap_or_default();
                    let end = runtime.reference(&address, url.name(), object, &type_name);
                    if let Err(e) = end.terminate().await {
                        tracing::warn!(
                            object = format_args!("{object:#x}"),
                            "CIC recovery: a member that had ended was restored on {url} and could not be ended again: {e}"
                        );
                    }
                }
                // How its log was answered is not needed: asked, so that
                // the runtime forgets it.
                let drain = node.clone();
                tokio::spawn(async move {
                    let _ = drain.replayed(object).await;
                });
                Ok::<_, String>(Restored {
                    object,
                    node: node.url().to_string(),
                    served,
                    moved: here,
                })
            }
        });
        let results = futures::future::join_all(restored).await;
        let mut errors = Vec::new();
        let mut restored = Vec::new();
        {
            let mut homes = lock(&self.homes);
            for result in results {
                match result {
                    Ok(r) => {
                        homes.insert(
                            r.object,
                            Home {
                                node: r.node.clone(),
                                recovering: false,
                                restored: Some(Instant::now()),
                            },
                        );
                        restored.push(r);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        changed();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let recovery = GroupRecovery {
            epoch: plan_epoch,
            line: plan_line,
            members,
            moved,
            replayed,
            resent,
            took: started.elapsed(),
            restored,
        };
        tracing::info!(?recovery, "the CIC group rolled back to its line");
        Ok(recovery)
    }

    /// For each member of `recovery`'s plan, its checkpoint and the
    /// requests it serves first.
    fn restores(&self, recovery: &crate::cic::Recovery<Vec<u8>>) -> Result<Vec<Restore>, String> {
        let plan = &recovery.plan;
        let epoch = plan.epoch;
        // What the checkpoints of the line kept of what their members sent.
        let mut kept: BTreeMap<RequestId, &crate::cic::Request<Vec<u8>>> = BTreeMap::new();
        for r in &plan.restarts {
            for q in r.record.state.kept_requests() {
                kept.insert(q.id, q);
            }
        }
        let homes = lock(&self.homes).clone();
        let ended = lock(&self.ended).clone();
        let mut out = Vec::new();
        for r in &plan.restarts {
            let me = r.object;
            let state = recovery
                .states
                .get(&me)
                .ok_or_else(|| format!("the CIC line has no state of {me}"))?;
            let checkpoint: actogrid_runtime::intercept::Checkpoint = postcard::from_bytes(state)
                .map_err(|e| {
                format!(
                    "the state of {me} at line {} does not decode: {e}",
                    plan.line
                )
            })?;
            let mut log = Vec::new();
            let mut replayed = std::collections::HashSet::new();
            for &(sender, seq) in &r.replay {
                let id = RequestId {
                    target: me,
                    sender,
                    seq,
                };
                replayed.insert(id);
                let stored = (self.store)
                    .reply(
                        &requests_key(me.0),
                        &ReplyId {
                            sender: sender_key(sender),
                            sequence: seq,
                        },
                    )
                    .map_err(|e| e.to_string())?
                    .and_then(|b| postcard::from_bytes::<Logged>(&b).ok());
                let logged = match (stored, kept.get(&id)) {
                    (Some(mut logged), _) => {
                        logged.header = crate::cic_node::restamp(&logged.header, epoch);
                        logged
                    }
                    (None, Some(q)) => crate::cic_node::logged_of(q, epoch),
                    (None, None) => {
                        return Err(format!(
                            "{me} must serve request #{seq} of {sender} again, which neither the FT server nor its sender kept"
                        ));
                    }
                };
                log.push(logged);
            }
            // In transit across the line: sent before the sender's
            // checkpoint, not delivered before the receiver's.
            let state = &r.record.state;
            let mut resent = 0;
            for q in kept.values() {
                if q.id.target == me
                    && q.id.seq > state.delivered_from(q.id.sender)
                    && !replayed.contains(&q.id)
                {
                    log.push(crate::cic_node::logged_of(q, epoch));
                    resent += 1;
                }
            }
            let ends = log.is_empty() && ended.get(&me.0) == Some(&r.record.at());
            out.push(Restore {
                object: me.0,
                home: homes.get(&me.0).map(|h| h.node.clone()),
                checkpoint,
                log,
                resent,
                ends,
            });
        }
        Ok(out)
    }
}
