//! Control groups for vessels, v1 and v2 alike: what the machine offers
//! (found once, when the daemon starts), one group per vessel with its
//! limits, what it uses, and killing everything in it at once.
//!
//! Each controller is taken from the unified (v2) hierarchy when it is
//! enabled there, else from its own v1 hierarchy. Killing uses
//! `cgroup.kill` of a v2 group (Linux ≥ 5.14; the unified hierarchy of a
//! hybrid system has it even without controllers), else the v1 freezer
//! (freeze, kill every member, thaw): either way no process can fork its
//! way out of the kill. Groups live under `<hierarchy>/<parent>/<name>`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Serialize};

/// The two kinds of hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Version {
    /// One hierarchy per controller (`memory`, `pids`, `cpu`, `freezer`).
    V1,
    /// The unified hierarchy.
    V2,
}

impl Version {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Version::V1 => "cgroup v1",
            Version::V2 => "cgroup v2",
        }
    }
}

/// A hierarchy a controller is taken from: where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub(crate) mount: PathBuf,
    pub(crate) version: Version,
}

/// What the machine offers, found once at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cgroups {
    pub(crate) memory: Option<Hierarchy>,
    pub(crate) pids: Option<Hierarchy>,
    pub(crate) cpu: Option<Hierarchy>,
    /// Where groups are killed at once: v2 (`cgroup.kill`) or v1 freezer.
    pub(crate) killer: Option<Hierarchy>,
    parent: String,
}

/// One mount of a cgroup file system.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    path: PathBuf,
    version: Version,
    /// v1: the controllers it carries.
    controllers: Vec<String>,
}

/// The cgroup mounts listed in `/proc/self/mountinfo` text `text`.
fn mounts(text: &str) -> Vec<Mount> {
    let mut found: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(path) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let options = right.nth(1).unwrap_or_default();
        let version = match fstype {
            "cgroup" => Version::V1,
            "cgroup2" => Version::V2,
            _ => continue,
        };
        let controllers = if version == Version::V1 {
            options
                .split(',')
                .filter(|o| !o.contains('=') && *o != "rw" && *o != "ro")
                .map(str::to_owned)
                .collect()
        } else {
            Vec::new()
        };
        // `\040` and friends: a cgroup mount point with a space is not
        // one we use.
        if path.contains('\\') {
            continue;
        }
        let same = |m: &Mount| m.version == version && m.controllers == controllers;
        if !found.iter().any(same) {
            found.push(Mount {
                path: PathBuf::from(path),
                version,
                controllers,
            });
        }
    }
    found
}

/// Creates `<mount>/<parent>` when it can, and checks that groups can be
/// made in it (tried with one); `false` when they cannot (not root, a
/// read-only mount, no delegation).
fn prepare_parent(mount: &Path, parent: &str) -> bool {
    let dir = mount.join(parent);
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let probe = dir.join(format!("probe-{}", std::process::id()));
    let made = std::fs::create_dir(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    made
}

/// Enables `controller` for the children of `<mount>/<parent>` in a v2
/// hierarchy (in every ancestor's `cgroup.subtree_control`, from the
/// root down); whether it is enabled there now.
fn enable_v2(mount: &Path, parent: &str, controller: &str) -> bool {
    let mut dir = mount.to_path_buf();
    let mut levels = vec![dir.clone()];
    for part in Path::new(parent).components() {
        dir.push(part);
        levels.push(dir.clone());
    }
    for level in &levels {
        let control = level.join("cgroup.subtree_control");
        let enabled = read(&control).is_some_and(|t| t.split_whitespace().any(|c| c == controller));
        if !enabled && std::fs::write(&control, format!("+{controller}")).is_err() {
            return false;
        }
    }
    true
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Cgroups {
    /// What this machine offers to a daemon with these rights, for groups
    /// under `parent` (a relative path inside each hierarchy).
    pub(crate) fn discover(parent: &str) -> Cgroups {
        let Some(text) = read(Path::new("/proc/self/mountinfo")) else {
            return Cgroups::default();
        };
        Cgroups::discover_in(&mounts(&text), parent)
    }

    fn discover_in(mounts: &[Mount], parent: &str) -> Cgroups {
        let mut found = Cgroups {
            parent: parent.to_owned(),
            ..Cgroups::default()
        };
        let v2 = mounts
            .iter()
            .find(|m| m.version == Version::V2)
            .filter(|m| prepare_parent(&m.path, parent));
        if let Some(v2) = v2 {
            let offered = read(&v2.path.join("cgroup.controllers")).unwrap_or_default();
            let hierarchy = Hierarchy {
                mount: v2.path.clone(),
                version: Version::V2,
            };
            for (name, slot) in [
                ("memory", &mut found.memory),
                ("pids", &mut found.pids),
                ("cpu", &mut found.cpu),
            ] {
                if offered.split_whitespace().any(|c| c == name)
                    && enable_v2(&v2.path, parent, name)
                {
                    *slot = Some(hierarchy.clone());
                }
            }
            if has_kill(&v2.path, parent) {
                found.killer = Some(hierarchy);
            }
        }
        for (name, slot) in [
            ("memory", &mut found.memory),
            ("pids", &mut found.pids),
            ("cpu", &mut found.cpu),
            ("freezer", &mut found.killer),
        ] {
            if slot.is_some() {
                continue;
            }
            let v1 = mounts
                .iter()
                .find(|m| m.version == Version::V1 && m.controllers.iter().any(|c| c == name));
            if let Some(m) = v1.filter(|m| prepare_parent(&m.path, parent)) {
                *slot = Some(Hierarchy {
                    mount: m.path.clone(),
                    version: Version::V1,
                });
            }
        }
        found
    }

    /// The group of vessel `name` (nothing is created yet).
    pub(crate) fn group(&self, name: &str) -> Group {
        let at = |h: &Option<Hierarchy>| {
            h.as_ref()
                .map(|h| (h.mount.join(&self.parent).join(name), h.version))
        };
        Group {
            memory: at(&self.memory),
            pids: at(&self.pids),
            cpu: at(&self.cpu),
            killer: at(&self.killer),
        }
    }

    /// Whether any controller or the killer is available.
    pub(crate) fn any(&self) -> bool {
        self.memory.is_some() || self.pids.is_some() || self.cpu.is_some() || self.killer.is_some()
    }
}

/// Whether groups under `<mount>/<parent>` of a v2 hierarchy have
/// `cgroup.kill` (Linux ≥ 5.14): tried on a group made for the purpose.
fn has_kill(mount: &Path, parent: &str) -> bool {
    let probe = mount
        .join(parent)
        .join(format!("probe-{}", std::process::id()));
    if std::fs::create_dir(&probe).is_err() {
        return false;
    }
    let has = probe.join("cgroup.kill").exists();
    let _ = std::fs::remove_dir(&probe);
    has
}

/// The limits written into a vessel's group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    pub(crate) memory: Option<u64>,
    pub(crate) processes: Option<u32>,
    /// Cores (a CFS quota).
    pub(crate) cpus: Option<f64>,
    /// Weight against the lender's own processes, as a niceness.
    pub(crate) nice: i32,
}

/// The cpu.shares (v1) of a niceness: the scheduler's weight for it
/// (1024 at 0, ×1.25 a step).
pub(crate) fn shares_of_nice(nice: i32) -> u64 {
    let weight = 1024.0 / 1.25f64.powi(nice.clamp(-20, 19));
    (weight.round() as u64).clamp(2, 262_144)
}

const CFS_PERIOD_US: u64 = 100_000;

/// A vessel's group, in each hierarchy that provides something. Stored
/// in the claim's record so that a later daemon can remove it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Group {
    pub(crate) memory: Option<(PathBuf, Version)>,
    pub(crate) pids: Option<(PathBuf, Version)>,
    pub(crate) cpu: Option<(PathBuf, Version)>,
    pub(crate) killer: Option<(PathBuf, Version)>,
}

impl Group {
    /// Its directories, each once.
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (dir, _) in [&self.memory, &self.pids, &self.cpu, &self.killer]
            .into_iter()
            .flatten()
        {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        dirs
    }

    /// The `cgroup.procs` files the vessel writes its pid into.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Creates the directories (or reuses them: a group serves the vessels
    /// of one identity one after the other) and writes `limits`.
    pub(crate) fn create(&self, limits: &Limits) -> Result<(), String> {
        let write = |dir: &Path, file: &str, value: String| {
            std::fs::write(dir.join(file), &value).map_err(|e| {
                format!(
                    "cannot write {value} into {}: {e}",
                    dir.join(file).display()
                )
            })
        };
        for dir in self.dirs() {
            // Its parent too, should someone have removed it.
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        }
        if let (Some((dir, version)), Some(bytes)) = (&self.memory, limits.memory) {
            match version {
                Version::V1 => {
                    write(dir, "memory.limit_in_bytes", bytes.to_string())?;
                    // No swap beyond the limit (when swap accounting is on).
                    let _ =
                        std::fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
                }
                Version::V2 => {
                    write(dir, "memory.max", bytes.to_string())?;
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                    // Out of memory, the whole vessel goes, not one process.
                    let _ = std::fs::write(dir.join("memory.oom.group"), "1");
                }
            }
        }
        if let (Some((dir, _)), Some(n)) = (&self.pids, limits.processes) {
            write(dir, "pids.max", n.to_string())?;
        }
        if let Some((dir, version)) = &self.cpu {
            let quota = limits
                .cpus
                .map(|c| ((c * CFS_PERIOD_US as f64).round() as u64).max(1000));
            match version {
                Version::V1 => {
                    write(dir, "cpu.shares", shares_of_nice(limits.nice).to_string())?;
                    if let Some(q) = quota {
                        write(dir, "cpu.cfs_period_us", CFS_PERIOD_US.to_string())?;
                        write(dir, "cpu.cfs_quota_us", q.to_string())?;
                    }
                }
                Version::V2 => {
                    write(
                        dir,
                        "cpu.weight.nice",
                        limits.nice.clamp(-20, 19).to_string(),
                    )?;
                    if let Some(q) = quota {
                        write(dir, "cpu.max", format!("{q} {CFS_PERIOD_US}"))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Memory charged to the group now, bytes.
    pub(crate) fn memory_used(&self) -> Option<u64> {
        let (dir, version) = self.memory.as_ref()?;
        let file = match version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        };
        read(&dir.join(file))?.trim().parse().ok()
    }

    /// Processes and threads in the group now (what `pids.max` counts).
    pub(crate) fn tasks(&self) -> Option<u32> {
        let (dir, _) = self.pids.as_ref()?;
        read(&dir.join("pids.current"))?.trim().parse().ok()
    }

    /// Processes the kernel killed for want of memory in the group.
    pub(crate) fn oom_kills(&self) -> u64 {
        let Some((dir, version)) = &self.memory else {
            return 0;
        };
        let file = match version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        counter(&dir.join(file), "oom_kill")
    }

    /// Forks refused because the group was at its process limit.
    pub(crate) fn forks_refused(&self) -> u64 {
        match &self.pids {
            Some((dir, _)) => counter(&dir.join("pids.events"), "max"),
            None => 0,
        }
    }

    /// The processes in the group (from its killer's hierarchy, else any).
    pub(crate) fn members(&self) -> Vec<i32> {
        let dir = self
            .killer
            .as_ref()
            .map(|(d, _)| d.clone())
            .or_else(|| self.dirs().into_iter().next());
        let Some(dir) = dir else {
            return Vec::new();
        };
        read(&dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process in the group, at once when a killer is
    /// available, and waits (up to `limit`) until none is left. Returns
    /// how many there were and whether the group is empty. Blocking.
    pub(crate) fn kill(&self, limit: Duration) -> (usize, bool) {
        let start = Instant::now();
        let before = self.members().len();
        match &self.killer {
            Some((dir, Version::V2)) => {
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            }
            Some((dir, Version::V1)) => freeze_and_kill(dir, limit),
            None => kill_members(&self.members()),
        }
        loop {
            let left = self.members();
            if left.is_empty() {
                return (before, true);
            }
            if start.elapsed() > limit {
                return (before, false);
            }
            // Whatever was not in the group yet when it was killed.
            kill_members(&left);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes the group's directories (once it is empty). The kernel
    /// may hold a v1 memory group busy for a moment after its last
    /// process died: retried for up to two seconds.
    pub(crate) fn remove(&self) -> Result<(), String> {
        let mut failed = Vec::new();
        for dir in self.dirs() {
            let start = Instant::now();
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if start.elapsed() > Duration::from_secs(2) => {
                        failed.push(format!("{}: {e}", dir.display()));
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("cannot remove the cgroup {}", failed.join(", ")))
        }
    }
}

/// Freezes a v1 freezer group, kills every member, thaws it: frozen
/// processes cannot fork while the kill goes round.
fn freeze_and_kill(dir: &Path, limit: Duration) {
    let state = dir.join("freezer.state");
    let start = Instant::now();
    if std::fs::write(&state, "FROZEN").is_ok() {
        while read(&state).is_some_and(|s| s.trim() != "FROZEN") && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let members: Vec<i32> = read(&dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    kill_members(&members);
    let _ = std::fs::write(&state, "THAWED");
}

fn kill_members(pids: &[i32]) {
    for pid in pids.iter().filter_map(|p| Pid::from_raw(*p)) {
        let _ = kill_process(pid, Signal::KILL);
    }
}

/// The value of `key` in a flat keyed file (`key value` lines).
fn counter(path: &Path, key: &str) -> u64 {
    read(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer
37 30 0:33 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
38 30 0:34 / /run/other/memory rw,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn mounts_are_read_from_mountinfo_once_per_hierarchy() {
        let found = mounts(HYBRID);
        let names: Vec<_> = found
            .iter()
            .map(|m| (m.path.to_str().unwrap(), m.version, m.controllers.join(",")))
            .collect();
        assert_eq!(
            names,
            [
                ("/sys/fs/cgroup/unified", Version::V2, String::new()),
                (
                    "/sys/fs/cgroup/cpu,cpuacct",
                    Version::V1,
                    "cpu,cpuacct".into()
                ),
                ("/sys/fs/cgroup/memory", Version::V1, "memory".into()),
                ("/sys/fs/cgroup/pids", Version::V1, "pids".into()),
                ("/sys/fs/cgroup/freezer", Version::V1, "freezer".into()),
                ("/sys/fs/cgroup/systemd", Version::V1, "xattr".into()),
            ]
        );
    }

    #[test]
    fn a_group_has_one_directory_per_hierarchy() {
        let v2 = Hierarchy {
            mount: "/cg".into(),
            version: Version::V2,
        };
        let cgroups = Cgroups {
            memory: Some(v2.clone()),
            pids: Some(v2.clone()),
            cpu: None,
            killer: Some(v2),
            parent: "actogrid-vessels".into(),
        };
        let group = cgroups.group("uid-7");
        assert_eq!(group.dirs(), [PathBuf::from("/cg/actogrid-vessels/uid-7")]);
        assert_eq!(
            group.procs_files(),
            [PathBuf::from("/cg/actogrid-vessels/uid-7/cgroup.procs")]
        );
    }

    #[test]
    fn cpu_shares_follow_the_schedulers_weights() {
        assert_eq!(shares_of_nice(0), 1024);
        assert_eq!(shares_of_nice(10), 110);
        assert_eq!(shares_of_nice(19), 15);
        assert_eq!(shares_of_nice(-5), 3125);
    }
}
