//! A running vessel: its command, what it uses (measured every
//! [`SAMPLE_EVERY`](super::SAMPLE_EVERY)), the limits it reaches, and its
//! take-down.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::cgroup::Group;
use super::claim::{Claim, Record};
use super::confine::VESSEL_ENV;
use super::dir::directory_size;
use super::procs::{self, Owner};
use super::status::{EndedVessel, VesselUsage, bytes};
use super::{ENDED_KEPT, Vessels, kill_processes, lock, remove};
use crate::deploy::agent::{EXIT_ON_STDIN_EOF_ENV, LISTEN_ENV};

/// What is watched while a vessel runs.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// The group's counters before this vessel (a group serves the
    /// identity's vessels one after the other).
    pub(super) oom_base: u64,
    pub(super) forks_base: u64,
    pub(super) now: VesselUsage,
    pub(super) peak: VesselUsage,
    pub(super) oom_kills: u64,
    pub(super) forks_refused: u64,
    pub(super) disk_full: bool,
    pub(super) disk_over: bool,
}

impl Watch {
    fn hits(&self, vessel: &Vessel) -> Vec<String> {
        let plan = &vessel.vessels.plan;
        let mut hits = Vec::new();
        if self.oom_kills > 0 {
            hits.push(format!(
                "memory: {} process(es) killed for want of memory (limit {})",
                self.oom_kills,
                bytes(plan.limits.memory.unwrap_or(0))
            ));
        }
        if self.forks_refused > 0 {
            hits.push(format!(
                "processes: {} fork(s) refused at the limit of {}",
                self.forks_refused,
                plan.limits.processes.unwrap_or(0)
            ));
        }
        if self.disk_full {
            hits.push(format!(
                "disk: its directory is full ({})",
                bytes(plan.disk)
            ));
        }
        if self.disk_over {
            hits.push(format!(
                "disk: its directory grew past {}: killed",
                bytes(plan.disk)
            ));
        }
        hits
    }
}

/// One vessel, from set-up to take-down.
#[derive(Debug)]
pub(crate) struct Vessel {
    pub(super) vessels: Arc<Vessels>,
    pub(super) claim: Mutex<Option<Claim>>,
    pub(super) booking: u64,
    pub(super) requester: String,
    pub(super) record: Mutex<Record>,
    pub(super) confinement: String,
    pub(super) listen: String,
    pub(super) dir: PathBuf,
    pub(super) since: Instant,
    pub(super) state: Mutex<Watch>,
}

impl Vessel {
    /// The command that starts it: the daemon's executable, which applies
    /// the confinement and executes the program with `env` (and the
    /// preassigned listening address).
    pub(crate) fn command(&self, env: &[(String, String)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.vessels.plan.launcher);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )
            .env("HOME", &self.dir)
            .env("TMPDIR", &self.dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(LISTEN_ENV, &self.listen)
            .env(EXIT_ON_STDIN_EOF_ENV, "1")
            .env(crate::credentials::CREDENTIALS_ENV, "stdin")
            .env(VESSEL_ENV, &self.confinement)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Ok(filter) = std::env::var("RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        cmd
    }

    /// Its uid, when it has one of its own.
    pub(crate) fn uid(&self) -> Option<u32> {
        lock(&self.record).uid
    }

    /// Its process started as `pid` (its session).
    pub(crate) fn started(&self, pid: u32) {
        let mut record = lock(&self.record);
        record.session = i32::try_from(pid).ok();
        if let Some(claim) = lock(&self.claim).as_mut() {
            let _ = claim.record(&record);
        }
    }

    fn owner(&self) -> Option<Owner> {
        let record = lock(&self.record);
        match (record.uid, record.session) {
            (Some(uid), _) => Some(Owner::Uid(uid)),
            (None, Some(sid)) => Some(Owner::Session {
                sid,
                uid: self.vessels.plan.daemon_uid,
            }),
            _ => None,
        }
    }

    /// What it uses now, and the limits it ran into.
    pub(crate) fn usage(&self) -> (VesselUsage, Vec<String>) {
        let state = lock(&self.state);
        (state.now, state.hits(self))
    }

    /// Measures it once: use, peaks, limits reached. Returns `true` when
    /// it must be killed (its directory grew past the disk limit).
    /// Blocking.
    pub(crate) fn sample(&self) -> bool {
        let plan = &self.vessels.plan;
        let group = lock(&self.record).group.clone();
        // /proc is read only for what no cgroup counts.
        let counted = group
            .as_ref()
            .is_some_and(|g| g.memory.is_some() && g.pids.is_some());
        let owned = if counted {
            None
        } else {
            self.owner().map(procs::of)
        };
        let memory = group
            .as_ref()
            .and_then(Group::memory_used)
            .or_else(|| owned.as_ref().map(|p| p.iter().map(|p| p.rss).sum()))
            .unwrap_or(0);
        let tasks = group
            .as_ref()
            .and_then(Group::tasks)
            .or_else(|| owned.as_ref().map(|p| p.len() as u32))
            .unwrap_or(0);
        let (disk, free) = if plan.tmpfs {
            match rustix::fs::statvfs(&self.dir) {
                Ok(s) => (
                    (s.f_blocks - s.f_bfree) * s.f_frsize,
                    Some(s.f_bavail * s.f_frsize),
                ),
                Err(_) => (0, None),
            }
        } else {
            (directory_size(&self.dir), None)
        };
        let mut state = lock(&self.state);
        let oom_kills = group
            .as_ref()
            .map_or(0, Group::oom_kills)
            .saturating_sub(state.oom_base);
        let forks_refused = group
            .as_ref()
            .map_or(0, Group::forks_refused)
            .saturating_sub(state.forks_base);
        let now = VesselUsage {
            memory,
            tasks,
            disk,
        };
        state.now = now;
        state.peak.memory = state.peak.memory.max(memory);
        state.peak.tasks = state.peak.tasks.max(tasks);
        state.peak.disk = state.peak.disk.max(disk);
        let who = format!("slot {} ({})", self.booking, self.requester);
        if oom_kills > state.oom_kills {
            tracing::warn!(
                "{who}: the kernel killed {} process(es) of the vessel for want of memory (limit {})",
                oom_kills - state.oom_kills,
                bytes(plan.limits.memory.unwrap_or(0))
            );
            state.oom_kills = oom_kills;
        }
        if forks_refused > 0 && state.forks_refused == 0 {
            tracing::warn!(
                "{who}: the vessel reached its process limit ({}): forks refused",
                plan.limits.processes.unwrap_or(0)
            );
        }
        state.forks_refused = forks_refused;
        // A tmpfs counts whole pages: "full" is less than one page free.
        if free.is_some_and(|f| f < 64 << 10) && !state.disk_full {
            tracing::warn!(
                "{who}: the vessel filled its directory ({})",
                bytes(plan.disk)
            );
            state.disk_full = true;
        }
        if !plan.tmpfs && disk > plan.disk && !state.disk_over {
            tracing::warn!(
                "{who}: the vessel's directory holds {}, more than its {}: killing it",
                bytes(disk),
                bytes(plan.disk)
            );
            state.disk_over = true;
            return true;
        }
        false
    }

    /// Whether the kernel killed something for want of memory, or the
    /// daemon for disk: what an ending by SIGKILL means.
    fn cause_of_kill(&self) -> Option<String> {
        let state = lock(&self.state);
        if state.oom_kills > 0 {
            Some(format!(
                "killed: out of memory (limit {})",
                bytes(self.vessels.plan.limits.memory.unwrap_or(0))
            ))
        } else if state.disk_over {
            Some(format!(
                "killed: its directory grew past {}",
                bytes(self.vessels.plan.disk)
            ))
        } else {
            None
        }
    }

    /// Takes it down once its program ended (`end`: how; `stopped`: the
    /// daemon stopped it): kills what is left, removes its mount,
    /// directory and cgroups, reports, frees its identity. Blocking.
    pub(crate) fn finish(&self, end: String, stopped: bool) -> EndedVessel {
        let began = Instant::now();
        let record = lock(&self.record).clone();
        let plan = &self.vessels.plan;
        let killed = kill_processes(&record, record.uid, plan.daemon_uid);
        let leftovers = killed.killed;
        // One last look: an out-of-memory kill is counted by then.
        self.sample();
        let end = if stopped {
            "stopped: its slot was freed".to_owned()
        } else if end.contains("signal: 9") {
            self.cause_of_kill().unwrap_or(end)
        } else {
            end
        };
        let mut problems = killed.problems;
        problems.extend(remove(&record));
        let who = format!("slot {} ({})", self.booking, self.requester);
        if leftovers > 0 {
            tracing::warn!(
                "{who}: killed {leftovers} process(es) the vessel left running after its program ended"
            );
        }
        tracing::debug!(
            "{who}: vessel taken down in {} ms",
            began.elapsed().as_millis()
        );
        let mut claim = lock(&self.claim).take();
        if problems.is_empty() {
            if let Some(c) = claim.take() {
                self.vessels.give_back(c);
            }
        } else {
            tracing::warn!(
                "{who}: the vessel was not fully taken down: {}",
                problems.join("; ")
            );
        }
        // A claim not taken down stays locked (its file open) and recorded
        // for as long as this daemon lives, and is never used again: the
        // next daemon takes it down.
        if let Some(c) = claim {
            lock(&self.vessels.broken).push(c);
        }
        let state = lock(&self.state);
        let ended = EndedVessel {
            booking: self.booking,
            requester: self.requester.clone(),
            uid: record.uid,
            end,
            limits_hit: state.hits(self),
            leftovers_killed: leftovers as u32,
            peak: state.peak,
            seconds: self.since.elapsed().as_secs(),
        };
        drop(state);
        {
            let mut list = lock(&self.vessels.ended);
            list.push_front(ended.clone());
            list.truncate(ENDED_KEPT);
        }
        self.vessels.done();
        ended
    }
}
