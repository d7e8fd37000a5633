//! Vessels: what a lent slot runs in. Borrowed code gets a directory of its
//! own, measured and capped resources, and no way to harm the machine of
//! the person lending it:
//!
//! * **its own user**: one uid per slot (from a configurable base, no
//!   passwd entry needed) when the daemon is root; the daemon's user
//!   otherwise, which is said at start and in the status;
//! * **files**: Landlock rules: read-only access to what a program needs
//!   (system libraries and programs, name resolution files, its own
//!   `/proc` entry, its cached program), read-write access to its slot
//!   directory only, which is `0700` and its user's;
//! * **limits** on memory, processes, CPU and disk: cgroups (v2 or v1,
//!   each controller where the machine has it), else resource limits
//!   (`RLIMIT_AS`, `RLIMIT_NPROC`, `RLIMIT_FSIZE`) and `nice`; the disk is
//!   a size-limited tmpfs on the slot directory when the daemon is root,
//!   else a file size limit and a periodic check that kills the vessel
//!   when its directory grows past the limit;
//! * **network**: it may listen on its own preassigned port only, and
//!   when the lender asks, connect to its deployer's ports only (Landlock
//!   TCP rules, ABI ≥ 4);
//! * **signals**: only to its own processes (its own uid; Landlock signal
//!   scoping, ABI ≥ 6);
//! * **an end**: when its slot is freed or the daemon stops, every process
//!   it started is killed (cgroup kill or freezer, then every process of
//!   its uid or session), its mount and directory removed; its identity's
//!   cgroups, emptied, serve that identity's next vessel and go when the
//!   daemon stops. A daemon that starts first takes down what a crashed
//!   one left (see [`claim`]).
//!
//! The restrictions are applied by the vessel process itself (see
//! [`confine`]): the daemon starts its own executable with the
//! confinement in its environment, which applies it and executes the
//! borrowed program. The executable running a [`PeerDaemon`] must
//! therefore call [`enter_vessel_if_asked`] first thing in `main` (the
//! `actogrid` binary does).
//!
//! Where things are: [`plan`] decides at start what this machine allows
//! and describes it; [`claim`] holds identities machine-wide; [`dir`],
//! [`cgroup`] and [`confine`] set a vessel up (daemon side, then its own
//! side); [`running`] measures it and takes it down, [`procs`] finds its
//! processes without a cgroup; [`status`] is what `actogrid peer status`
//! shows.
//!
//! [`PeerDaemon`]: super::PeerDaemon

mod cgroup;
mod claim;
mod confine;
mod dir;
mod plan;
mod procs;
mod running;
mod status;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actogrid_runtime::NodeUrl;
use tokio::sync::Notify;

use self::cgroup::{Cgroups, Group, Limits};
use self::claim::{Claim, Kind, Record};
use self::confine::{Confinement, Limit, VESSEL_ENV};
use self::dir::{can_mount_tmpfs, make_slot_dir, mount_tmpfs};
use self::plan::{Plan, User, closed_ancestors, default_state_dir, mapped, system_uids};
use self::procs::Owner;
use self::running::Watch;
use crate::deploy::agent::DEPLOYER_ENV;

pub(crate) use self::confine::VESSEL_ENV as ENV;
pub(crate) use self::running::Vessel;
pub(crate) use self::status::bytes;
pub use self::status::{EndedVessel, Protection, VesselStatus, VesselUsage};

/// How often a running vessel's use is measured.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Ended vessels the status remembers.
const ENDED_KEPT: usize = 16;

/// How long killing a vessel's processes may take before it is reported
/// as incomplete.
const KILL_LIMIT: Duration = Duration::from_secs(5);

/// Serves as a vessel when this process was started as one by a peer
/// daemon (its environment holds the confinement): applies it and
/// executes the borrowed program, never returning; returns at once
/// otherwise. The executable running a [`PeerDaemon`](super::PeerDaemon)
/// calls this first thing in `main`, before any thread starts.
pub fn enter_vessel_if_asked() {
    let Some(text) = std::env::var_os(VESSEL_ENV) else {
        return;
    };
    let error = match text.to_str() {
        Some(text) => confine::enter(text),
        None => format!("{VESSEL_ENV} is not UTF-8"),
    };
    eprintln!("actogrid vessel: {error}");
    std::process::exit(VESSEL_FAILED);
}

/// Exit code of a vessel that could not be set up (the program never ran).
const VESSEL_FAILED: i32 = 125;

/// What lent slots run in, and under which limits.
#[derive(Debug, Clone, PartialEq)]
pub struct VesselOptions {
    /// Memory of each vessel, bytes (`None`: half of this machine's
    /// memory shared among the slots, at least 256 MiB).
    pub memory_limit: Option<u64>,
    /// Processes and threads of each vessel.
    pub max_processes: u32,
    /// Cores each vessel may use at most (`None`: no quota, only its
    /// weight).
    pub cpus: Option<f64>,
    /// Niceness of vessels (and their CPU weight against the lender's
    /// processes).
    pub nice: i32,
    /// Disk each vessel may fill in its directory, bytes.
    pub disk_limit: u64,
    /// Let vessels connect only to their deployer (TCP).
    pub confine_network: bool,
    /// First uid of the vessels' users (when the daemon is root).
    pub uid_base: u32,
    /// Run vessels as the daemon's user even when it could switch users.
    pub same_user: bool,
    /// Use cgroups when the machine offers them.
    pub cgroups: bool,
    /// Where vessels' cgroups go, inside each hierarchy.
    pub cgroup_parent: String,
    /// Further paths vessels may read (a data set, a tool).
    pub read_only: Vec<PathBuf>,
    /// First of the ports vessels listen on, one per identity (`None`:
    /// the 4096 ports below the kernel's ephemeral range, which
    /// `bind(0)` and outgoing connections never take).
    pub port_base: Option<u16>,
    /// Where the daemon records the identities it holds (default:
    /// `/run/actogrid/vessels` for root, else under
    /// `$XDG_RUNTIME_DIR` or the temporary directory).
    pub state_dir: Option<PathBuf>,
}

impl Default for VesselOptions {
    fn default() -> VesselOptions {
        VesselOptions {
            memory_limit: None,
            max_processes: 512,
            cpus: Some(1.0),
            nice: 10,
            disk_limit: 1 << 30,
            confine_network: false,
            uid_base: 1_900_000_000,
            same_user: false,
            cgroups: true,
            cgroup_parent: "actogrid-vessels".into(),
            read_only: Vec::new(),
            port_base: None,
            state_dir: None,
        }
    }
}

impl VesselOptions {
    /// The memory limit that applies with `slots` slots.
    pub fn memory_for(&self, slots: u32) -> u64 {
        self.memory_limit.unwrap_or_else(|| {
            let total = plan::machine_memory().unwrap_or(4 << 30);
            (total / 2 / u64::from(slots.max(1))).max(256 << 20)
        })
    }
}

/// The vessels of one daemon: the identities it holds, the mechanisms in
/// force, the vessels that ended.
#[derive(Debug)]
pub(crate) struct Vessels {
    plan: Plan,
    status: VesselStatus,
    free: Mutex<Vec<Claim>>,
    /// Signalled when a claim is freed.
    freed: std::sync::Condvar,
    /// Claims whose vessel could not be taken down: held, never reused.
    broken: Mutex<Vec<Claim>>,
    ended: Mutex<VecDeque<EndedVessel>>,
    live: AtomicUsize,
    idle: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What taking a vessel down did.
#[derive(Debug, Default)]
struct Teardown {
    killed: usize,
    problems: Vec<String>,
}

/// Kills every process of what `record` describes (its cgroup, its uid
/// `uid`, or its session), unmounts and removes its directory, removes
/// its cgroups. Blocking.
fn teardown(record: &Record, uid: Option<u32>, daemon_uid: u32) -> Teardown {
    let mut done = kill_processes(record, uid, daemon_uid);
    done.problems.extend(remove(record));
    if let Some(group) = &record.group {
        if let Err(e) = group.remove() {
            done.problems.push(e);
        }
    }
    done
}

/// Kills every process of what `record` describes: its cgroup at once,
/// then what is left of its uid (or session). Blocking.
fn kill_processes(record: &Record, uid: Option<u32>, daemon_uid: u32) -> Teardown {
    let mut done = Teardown::default();
    let mut clean = true;
    if let Some(group) = &record.group {
        let (n, empty) = group.kill(KILL_LIMIT);
        done.killed += n;
        clean &= empty;
    }
    let owner = match (uid.or(record.uid), record.session) {
        (Some(uid), _) => Some(Owner::Uid(uid)),
        (None, Some(sid)) => Some(Owner::Session {
            sid,
            uid: daemon_uid,
        }),
        (None, None) => None,
    };
    if let Some(owner) = owner {
        let (n, empty) = procs::kill_all(owner, KILL_LIMIT);
        done.killed += n;
        clean &= empty;
    }
    if !clean {
        done.problems
            .push("some of its processes could not be killed".into());
    }
    done
}

/// Unmounts and removes the directory of what `record` describes (once
/// its processes are gone); what could not be. Blocking.
fn remove(record: &Record) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(dir) = &record.dir {
        if record.mounted {
            if let Err(e) = rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH) {
                if e != rustix::io::Errno::INVAL && e != rustix::io::Errno::NOENT {
                    problems.push(format!("cannot unmount {}: {e}", dir.display()));
                }
            }
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("cannot remove {}: {e}", dir.display())),
        }
    }
    problems
}

impl Vessels {
    /// Decides how vessels run here, takes down what crashed daemons left,
    /// claims one identity per slot and checks, with a probe vessel, that
    /// the whole set-up works. Blocking.
    pub(crate) fn start(
        work_dir: &Path,
        slots: u32,
        options: &VesselOptions,
    ) -> Result<Vessels, String> {
        let daemon_uid = rustix::process::geteuid().as_raw();
        let root = daemon_uid == 0;
        let state_dir = options
            .state_dir
            .clone()
            .unwrap_or_else(|| default_state_dir(root));
        {
            use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&state_dir)
                .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
            // What it records is taken down by the next daemon: nobody
            // else may write there.
            let meta = std::fs::metadata(&state_dir)
                .map_err(|e| format!("cannot read {}: {e}", state_dir.display()))?;
            if meta.uid() != daemon_uid || meta.mode() & 0o022 != 0 {
                return Err(format!(
                    "{} must belong to this daemon's user (uid {daemon_uid}) and be writable by it alone",
                    state_dir.display()
                ));
            }
        }
        let user = if options.same_user {
            User::Daemon("asked for (same-user)".into())
        } else if !root {
            User::Daemon(format!(
                "the daemon runs as uid {daemon_uid}, not root, and cannot switch users"
            ))
        } else {
            let uids = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
            let gids = std::fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
            let setgroups = std::fs::read_to_string("/proc/self/setgroups").unwrap_or_default();
            let range = options.uid_base.saturating_add(slots + 4096);
            if !mapped(&uids, options.uid_base, range - options.uid_base)
                || !mapped(&gids, options.uid_base, range - options.uid_base)
            {
                User::Daemon(format!(
                    "uids from {} are not mapped in this user namespace",
                    options.uid_base
                ))
            } else if setgroups.trim() == "deny" {
                User::Daemon("this user namespace denies setgroups".into())
            } else {
                User::Own(options.uid_base)
            }
        };

        // What crashed daemons left, under any identity nobody holds (and,
        // when claiming, under one whose daemon died since).
        let take_down = |name: &str, uid: Option<u32>, record: &Record| {
            let done = teardown(record, uid, daemon_uid);
            // An identity whose vessel was taken down has only its empty
            // cgroups left: removed without a word.
            if record.dir.is_some() || done.killed > 0 || !done.problems.is_empty() {
                tracing::warn!(
                    "took down vessel {name} left by a daemon that did not stop cleanly: {} process(es) killed{}{}",
                    done.killed,
                    record
                        .dir
                        .as_ref()
                        .map(|d| format!(", {} removed", d.display()))
                        .unwrap_or_default(),
                    if done.problems.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", done.problems.join("; "))
                    }
                );
            }
            done.problems.is_empty()
        };
        for stale in claim::stale(&state_dir) {
            if take_down(&stale.name, stale.uid, &stale.record) {
                stale.forget();
            }
        }

        let kind = match user {
            User::Own(base) => Kind::Uids(base),
            User::Daemon(_) => Kind::Slots,
        };
        // Twice as many identities as slots: a slot booked again at once
        // gets its vessel without waiting for the last one's take-down.
        let claims = claim::claim(&state_dir, slots * 2, kind, &system_uids(), &take_down)?;

        let slots_dir = work_dir.join("slots");
        if matches!(user, User::Own(_)) {
            let closed = closed_ancestors(&slots_dir);
            if !closed.is_empty() {
                return Err(format!(
                    "the vessels' users cannot reach {}: {} cannot be traversed by other users; \
                     choose a work directory they can reach (--work-dir /var/cache/actogrid/peer) \
                     or make it so (chmod o+x)",
                    slots_dir.display(),
                    closed
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let cgroups = if options.cgroups {
            Cgroups::discover(&options.cgroup_parent)
        } else {
            Cgroups::default()
        };
        let tmpfs = root && can_mount_tmpfs(&slots_dir);
        let landlock = confine::landlock_abi();
        let launcher = std::env::current_exe()
            .map_err(|e| format!("cannot find this program's executable: {e}"))?;
        let plan = Plan {
            user,
            cgroups,
            tmpfs,
            landlock,
            launcher,
            work_dir: work_dir.to_path_buf(),
            limits: Limits {
                memory: Some(options.memory_for(slots)),
                processes: Some(options.max_processes),
                cpus: options.cpus,
                nice: options.nice,
            },
            disk: options.disk_limit,
            confine_network: options.confine_network,
            read_only: options.read_only.clone(),
            state_id: {
                use std::os::unix::fs::MetadataExt as _;
                std::fs::metadata(&state_dir).map_or(0, |m| m.ino())
            },
            port_base: match options.port_base {
                // Port 0 would mean any ephemeral port to Landlock.
                Some(0) => return Err("the vessels' port base must be a port above 0".into()),
                Some(p) => p,
                None => default_port_base(),
            },
            daemon_uid,
        };
        let status = VesselStatus {
            user: plan.describe_user(&claims),
            protections: plan.protections(),
            ended: Vec::new(),
        };
        let vessels = Vessels {
            plan,
            status,
            free: Mutex::new(claims),
            freed: std::sync::Condvar::new(),
            broken: Mutex::new(Vec::new()),
            ended: Mutex::new(VecDeque::new()),
            live: AtomicUsize::new(0),
            idle: Notify::new(),
        };
        let took = vessels.probe()?;
        vessels.log_start(took);
        Ok(vessels)
    }

    fn log_start(&self, probe: Duration) {
        let plan = &self.plan;
        match plan.user {
            User::Own(_) => tracing::info!("lent slots run as {}", self.status.user),
            User::Daemon(_) => tracing::warn!(
                "lent slots run as the daemon's user: {}; what still protects this machine is listed below",
                self.status.user
            ),
        }
        for p in &self.status.protections {
            let weak = p.how.starts_with("not ") || p.how.starts_with("none");
            if weak {
                tracing::warn!("vessels: {}: {} — {}", p.what, p.limit, p.how);
            } else {
                tracing::info!("vessels: {}: {} — {}", p.what, p.limit, p.how);
            }
        }
        tracing::info!("a probe vessel was set up in {} ms", probe.as_millis());
    }

    /// Starts a vessel that applies everything but cgroups and the mount,
    /// and reports instead of executing a program; fails when it does not
    /// (the executable does not serve as a vessel, a user cannot be
    /// switched to, Landlock refuses the rules).
    fn probe(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let claim_uid = lock(&self.free).first().and_then(|c| c.uid);
        let dir = self
            .plan
            .work_dir
            .join("slots")
            .join(format!(".probe-{}", std::process::id()));
        let user = claim_uid.map(|u| (u, u));
        make_slot_dir(&dir, user)?;
        let confinement = Confinement {
            program: self.plan.launcher.clone(),
            dir: dir.clone(),
            user,
            cgroups: Vec::new(),
            rlimits: vec![(Limit::CoreSize, 0)],
            nice: self.plan.limits.nice,
            landlock: self.plan.rules(&self.plan.launcher, &dir, None, &[]),
            probe: true,
        };
        let json = serde_json::to_string(&confinement).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(&self.plan.launcher)
            .env(VESSEL_ENV, json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let result = match child {
            Ok(child) => wait_probe(child),
            Err(e) => Err(format!(
                "cannot start {}: {e}",
                self.plan.launcher.display()
            )),
        };
        let _ = std::fs::remove_dir_all(&dir);
        let said = result?;
        if let Some(landlock) = said.strip_prefix(confine::PROBE_OK) {
            if self.plan.landlock.is_some() && landlock.trim() == "not enforced" {
                return Err(
                    "the kernel has Landlock, but the probe vessel could not use it".into(),
                );
            }
            Ok(started.elapsed())
        } else {
            Err(format!(
                "{} did not set up a vessel (a program that runs a peer daemon must call \
                 actogrid::peer::enter_vessel_if_asked() first in main): {said}",
                self.plan.launcher.display()
            ))
        }
    }

    /// How vessels are protected here, and the last ones that ended.
    pub(crate) fn status(&self) -> VesselStatus {
        VesselStatus {
            ended: lock(&self.ended).iter().cloned().collect(),
            ..self.status.clone()
        }
    }

    /// Vessels running or being taken down.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Waits until no vessel is left, up to `limit`.
    pub(crate) async fn wait_idle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.live() > 0 {
            let notified = self.idle.notified();
            if self.live() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }

    /// Sets up a vessel for `booking` running `program` with `env`: its
    /// directory (and mount), its cgroups, its port, its confinement.
    /// Blocking.
    pub(crate) fn prepare(
        self: &Arc<Self>,
        booking: u64,
        requester: &str,
        program: &Path,
        env: &[(String, String)],
    ) -> Result<Arc<Vessel>, String> {
        let mut claim = self.free_claim()?;
        self.live.fetch_add(1, Ordering::AcqRel);
        let plan = &self.plan;
        let dir = plan.work_dir.join("slots").join(booking.to_string());
        let user = claim.uid.map(|u| (u, u));
        // A uid is machine-wide; a slot of the daemon's user is so only
        // within its state directory, which the name then carries.
        let group_name = match claim.uid {
            Some(_) => claim.name.clone(),
            None => format!("{}-{}", claim.name, plan.state_id),
        };
        let group = plan.cgroups.any().then(|| plan.cgroups.group(&group_name));
        let record = Record {
            dir: Some(dir.clone()),
            mounted: plan.tmpfs,
            group: group.clone(),
            uid: claim.uid,
            session: None,
        };
        let set_up = (|| {
            claim
                .record(&record)
                .map_err(|e| format!("cannot record the vessel: {e}"))?;
            make_slot_dir(&dir, user)?;
            if plan.tmpfs {
                mount_tmpfs(
                    &dir,
                    plan.disk,
                    user.unwrap_or((plan.daemon_uid, plan.daemon_uid)),
                )?;
            }
            // Made on the identity's first vessel, kept for the next: making
            // and removing groups costs milliseconds each, serialised
            // machine-wide.
            let mut counters = (0, 0);
            if let Some(group) = &group {
                group.create(&plan.limits)?;
                counters = (group.oom_kills(), group.forks_refused());
            }
            let deployers = deployer_addresses(env);
            let (listen, port) = pick_port(&deployers, plan.port_base, claim.index)?;
            let connect: Vec<u16> = deployers.iter().map(|(_, p)| *p).collect();
            let confinement = Confinement {
                program: program.to_path_buf(),
                dir: dir.clone(),
                user,
                cgroups: group.as_ref().map(Group::procs_files).unwrap_or_default(),
                rlimits: plan.rlimits(),
                nice: plan.limits.nice,
                landlock: plan.rules(program, &dir, Some(port), &connect),
                probe: false,
            };
            let json = serde_json::to_string(&confinement).map_err(|e| e.to_string())?;
            Ok::<_, String>((json, listen, counters))
        })();
        match set_up {
            Ok((confinement, listen, (oom_base, forks_base))) => Ok(Arc::new(Vessel {
                vessels: self.clone(),
                claim: Mutex::new(Some(claim)),
                booking,
                requester: requester.to_owned(),
                record: Mutex::new(record),
                confinement,
                listen,
                dir,
                since: Instant::now(),
                state: Mutex::new(Watch {
                    oom_base,
                    forks_base,
                    ..Watch::default()
                }),
            })),
            Err(e) => {
                let done = teardown(&record, claim.uid, plan.daemon_uid);
                if done.problems.is_empty() {
                    self.give_back(claim);
                } else {
                    tracing::warn!(
                        "vessel {} is not reused: {}",
                        claim.name,
                        done.problems.join("; ")
                    );
                }
                self.done();
                Err(e)
            }
        }
    }

    /// A free identity. A slot freed a moment ago may still have its
    /// vessel being taken down: its identity is waited for (up to
    /// [`KILL_LIMIT`] and then some).
    fn free_claim(&self) -> Result<Claim, String> {
        let deadline = Instant::now() + KILL_LIMIT * 2;
        let mut free = lock(&self.free);
        loop {
            if let Some(claim) = free.pop() {
                return Ok(claim);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(
                    "no vessel identity is free: the vessels of earlier slots are not taken down"
                        .into(),
                );
            }
            free = self
                .freed
                .wait_timeout(free, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Gives `claim` back for the next vessel.
    fn give_back(&self, mut claim: Claim) {
        claim.idle();
        lock(&self.free).push(claim);
        self.freed.notify_one();
    }

    /// The daemon stops: the identities it holds are released, with their
    /// (empty) cgroups. Call once no vessel is left.
    pub(crate) fn close(&self) {
        lock(&self.free).clear();
    }

    fn done(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// Waits (up to 10 s) for the probe vessel; its first line of output.
fn wait_probe(mut child: std::process::Child) -> Result<String, String> {
    use std::io::Read as _;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > Duration::from_secs(10) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the probe vessel did not answer within 10 s".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("the probe vessel: {e}")),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() && out.starts_with(confine::PROBE_OK) {
        Ok(out.lines().next().unwrap_or_default().to_owned())
    } else {
        let said = format!("{} {}", out.trim(), err.trim());
        let said: String = said.trim().chars().take(600).collect();
        Err(format!(
            "the probe vessel failed ({status}): {}",
            if said.is_empty() { "no output" } else { &said }
        ))
    }
}

/// The deployer's addresses in a launch environment (`ACTOGRID_DEPLOYER`:
/// comma-separated registrar URLs): `(host, port)`.
fn deployer_addresses(env: &[(String, String)]) -> Vec<(String, u16)> {
    env.iter()
        .filter(|(k, _)| k == DEPLOYER_ENV)
        .flat_map(|(_, v)| v.split(','))
        .filter_map(|u| u.trim().parse::<NodeUrl>().ok())
        .map(|u| (u.host().to_owned(), u.port()))
        .collect()
}

/// The address the vessel's runtime listens on: loopback when its
/// deployer is on this machine, every interface otherwise; on the port of
/// its identity (`base + index`), or the next one free when another
/// program holds it. The vessel may bind that port only.
fn pick_port(deployers: &[(String, u16)], base: u16, index: u32) -> Result<(String, u16), String> {
    let local = !deployers.is_empty()
        && deployers.iter().all(|(h, _)| {
            h == "localhost"
                || h.trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    let ip = if local { "127.0.0.1" } else { "0.0.0.0" };
    let range = u32::from(u16::MAX - base).clamp(1, claim::RANGE);
    for step in 0..64 {
        let port = base + ((index + step) % range) as u16;
        // Free now: the runtime binds it in a moment (no ephemeral port
        // is taken from this range meanwhile).
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return Ok((format!("{ip}:{port}"), port));
        }
    }
    Err(format!(
        "no free port for the vessel from {} (the vessels' ports, --port-base, are taken by other programs)",
        u32::from(base) + index % range
    ))
}

/// The default first port of the vessels: the 4096 below the kernel's
/// ephemeral range.
fn default_port_base() -> u16 {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    u16::try_from(start.saturating_sub(claim::RANGE).max(1024)).unwrap_or(28672)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_ranges_must_be_mapped() {
        let full = "         0          0 4294967295\n";
        assert!(mapped(full, 1_900_000_000, 8));
        let container = "0 100000 65536\n";
        assert!(!mapped(container, 1_900_000_000, 8));
        assert!(mapped(container, 1000, 8));
        assert!(!mapped(container, 65530, 8));
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(bytes(256 << 20), "256 MiB");
        assert_eq!(bytes(1536 << 20), "1.5 GiB");
        assert_eq!(bytes(100), "100 bytes");
    }

    #[test]
    fn the_deployers_ports_come_from_the_launch_environment() {
        let env = vec![
            ("ACTOGRID_TOKEN".to_owned(), "t".to_owned()),
            (
                DEPLOYER_ENV.to_owned(),
                "actogrid://127.0.0.1:4000/registrar, actogrid://10.0.0.2:4001/registrar"
                    .to_owned(),
            ),
        ];
        assert_eq!(
            deployer_addresses(&env),
            [
                ("127.0.0.1".to_owned(), 4000),
                ("10.0.0.2".to_owned(), 4001)
            ]
        );
        let base = default_port_base();
        let (listen, _) = pick_port(&deployer_addresses(&env), base, 4000).unwrap();
        assert!(listen.starts_with("0.0.0.0:"), "{listen}");
        let (listen, port) = pick_port(&deployer_addresses(&env)[..1], base, 4001).unwrap();
        assert_eq!(listen, format!("127.0.0.1:{port}"));
        assert!(port >= base, "{port} from {base}");
    }
}
