//! What is decided when the daemon starts, from what this machine allows:
//! which user vessels run as, which mechanism enforces each limit; how it
//! is described in the status and the log; and, for each vessel, its
//! resource limits and Landlock rules.

use std::path::{Path, PathBuf};

use super::SAMPLE_EVERY;
use super::cgroup::{self, Cgroups, Limits, Version};
use super::claim::Claim;
use super::confine::{self, Limit, Rules};
use super::status::{Protection, bytes};

/// Which user vessels run as.
#[derive(Debug, Clone)]
pub(super) enum User {
    /// One uid per slot, from this base.
    Own(u32),
    /// The daemon's, for this reason.
    Daemon(String),
}

/// Everything decided when the daemon starts.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) user: User,
    pub(super) cgroups: Cgroups,
    pub(super) tmpfs: bool,
    pub(super) landlock: Option<u8>,
    pub(super) launcher: PathBuf,
    pub(super) work_dir: PathBuf,
    pub(super) limits: Limits,
    pub(super) disk: u64,
    pub(super) confine_network: bool,
    pub(super) read_only: Vec<PathBuf>,
    pub(super) port_base: u16,
    /// The state directory's inode: names the cgroups of slot identities.
    pub(super) state_id: u64,
    pub(super) daemon_uid: u32,
}

impl Plan {
    pub(super) fn rlimits(&self) -> Vec<(Limit, u64)> {
        let mut limits = vec![(Limit::CoreSize, 0)];
        if self.cgroups.memory.is_none() {
            if let Some(m) = self.limits.memory {
                limits.push((Limit::AddressSpace, m));
            }
        }
        if self.cgroups.pids.is_none() {
            if let Some(n) = self.limits.processes {
                limits.push((Limit::Processes, u64::from(n)));
            }
        }
        if !self.tmpfs {
            limits.push((Limit::FileSize, self.disk));
        }
        limits
    }

    /// The Landlock rules of a vessel running `program` in `dir`, allowed
    /// to listen on `port` and (when the network is confined) to connect
    /// to `connect`; `None` without Landlock.
    pub(super) fn rules(
        &self,
        program: &Path,
        dir: &Path,
        port: Option<u16>,
        connect: &[u16],
    ) -> Option<Rules> {
        let abi = self.landlock?;
        let paths = |list: &[&str]| list.iter().map(PathBuf::from).collect::<Vec<_>>();
        let mut read_exec = paths(confine::SYSTEM_READ_EXEC);
        // Its directory in the cache, not the file: a daemon sharing the
        // work directory may put the same content there again (another
        // inode) between the rule and the execution.
        read_exec.push(
            program
                .parent()
                .map_or_else(|| program.to_path_buf(), Path::to_path_buf),
        );
        let mut read = paths(confine::SYSTEM_READ);
        read.extend(self.read_only.iter().cloned());
        let network = abi >= 4;
        Some(Rules {
            read_exec,
            read,
            devices: paths(confine::SYSTEM_DEVICES),
            read_write: vec![dir.to_path_buf()],
            // The probe has no port: it may bind none.
            bind: network.then(|| port.into_iter().collect()),
            connect: (network && self.confine_network).then(|| connect.to_vec()),
        })
    }

    pub(super) fn describe_user(&self, claims: &[Claim]) -> String {
        match &self.user {
            User::Own(_) => {
                let uids: Vec<String> = claims
                    .iter()
                    .filter_map(|c| c.uid)
                    .map(|u| u.to_string())
                    .collect();
                format!("a user of its own per slot (uids {})", uids.join(", "))
            }
            User::Daemon(why) => format!("the daemon's user (uid {}): {why}", self.daemon_uid),
        }
    }

    pub(super) fn protections(&self) -> Vec<Protection> {
        let own_user = matches!(self.user, User::Own(_));
        let root = self.daemon_uid == 0;
        let p = |what: &str, limit: String, how: String| Protection {
            what: what.into(),
            limit,
            how,
        };
        let mut list = Vec::new();
        let memory = self.limits.memory.unwrap_or(0);
        list.push(p(
            "memory",
            bytes(memory),
            match &self.cgroups.memory {
                Some(h) if h.version == Version::V1 => {
                    "cgroup v1 memory (memory.limit_in_bytes, and memsw when swap is accounted); the kernel kills within the vessel when it is reached".into()
                }
                Some(_) => "cgroup v2 memory.max, no swap, memory.oom.group: the whole vessel is killed when it is reached".into(),
                None => "RLIMIT_AS: address space, which is larger than the memory used (no memory cgroup)".into(),
            },
        ));
        let processes = self.limits.processes.unwrap_or(0);
        list.push(p(
            "processes",
            format!("{processes} (threads count)"),
            match &self.cgroups.pids {
                Some(h) => format!("{} pids.max", h.version.name()),
                None if own_user => "RLIMIT_NPROC of the slot's uid".into(),
                None if root => {
                    "not enforced: root is exempt from RLIMIT_NPROC and there is no pids cgroup"
                        .into()
                }
                None => "RLIMIT_NPROC, which counts every process of the daemon's user".into(),
            },
        ));
        let cpus = self
            .limits
            .cpus
            .map_or("no quota".to_owned(), |c| format!("{c} core(s)"));
        list.push(p(
            "cpu",
            format!("{cpus}, nice {}", self.limits.nice),
            match &self.cgroups.cpu {
                Some(h) if h.version == Version::V1 => format!(
                    "cgroup v1 cpu (CFS quota, cpu.shares {}) and nice",
                    cgroup::shares_of_nice(self.limits.nice)
                ),
                Some(_) => "cgroup v2 cpu.max and cpu.weight.nice, and nice".into(),
                None => "nice only: no cpu cgroup, so not the quota".into(),
            },
        ));
        list.push(p(
            "disk",
            bytes(self.disk),
            if self.tmpfs {
                "a tmpfs of that size mounted on the slot directory (held in memory, charged to the vessel's memory)".into()
            } else {
                format!(
                    "RLIMIT_FSIZE per file, and the slot directory measured every {} ms: the vessel is killed when it is larger",
                    SAMPLE_EVERY.as_millis()
                )
            },
        ));
        list.push(p(
            "files",
            "read-write: its slot directory; read-only: system libraries and programs, its program, name resolution files, its own /proc entry".into(),
            match self.landlock {
                Some(abi) => format!(
                    "Landlock ABI {abi}{}",
                    if own_user { ", and a 0700 slot directory of its own uid" } else { "" }
                ),
                None if own_user => "not Landlock (unavailable here): only file permissions, as any other user".into(),
                None => "none: no Landlock here, and the vessel runs as the daemon's user".into(),
            },
        ));
        let network_rules = self.landlock.is_some_and(|abi| abi >= 4);
        list.push(p(
            "network",
            if self.confine_network {
                format!(
                    "listen: its own port only (from {}); connect (TCP): its deployer's ports only",
                    self.port_base
                )
            } else {
                format!(
                    "listen: its own port only (from {}); connect: anywhere",
                    self.port_base
                )
            },
            if network_rules {
                format!(
                    "Landlock ABI {} TCP port rules (ports, not addresses; UDP is not covered)",
                    self.landlock.unwrap_or(0)
                )
            } else {
                "not enforced: Landlock ABI < 4 has no network rules".into()
            },
        ));
        let scoped = self.landlock.is_some_and(|abi| abi >= 6);
        list.push(p(
            "signals",
            "its own processes only".into(),
            match (own_user, scoped) {
                (true, true) => "a uid of its own, and Landlock signal scoping".into(),
                (true, false) => "a uid of its own".into(),
                (false, true) => "Landlock signal scoping".into(),
                (false, false) => {
                    "none: it runs as the daemon's user without Landlock scoping".into()
                }
            },
        ));
        let killer = match &self.cgroups.killer {
            Some(h) if h.version == Version::V2 => "cgroup v2 cgroup.kill".to_owned(),
            Some(_) => "cgroup v1 freezer, then kill".to_owned(),
            None => String::new(),
        };
        let sweep = if own_user {
            "every process of its uid"
        } else if killer.is_empty() {
            "every process of its session (a process that starts a session of its own escapes)"
        } else {
            "every process of its session"
        };
        list.push(p(
            "cleanup",
            "every process it started is killed when its slot is freed or the daemon stops".into(),
            if killer.is_empty() {
                sweep.to_owned()
            } else {
                format!("{killer}, then {sweep}")
            },
        ));
        list
    }
}

/// `MemTotal` of `/proc/meminfo`, bytes.
pub(super) fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The uids the system knows (`/etc/passwd`): never used for vessels.
pub(super) fn system_uids() -> Vec<u32> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect()
}

/// Whether `[first, first + n)` are all mapped in this user namespace
/// (`/proc/self/uid_map` text `map`).
pub(super) fn mapped(map: &str, first: u32, n: u32) -> bool {
    let last = u64::from(first) + u64::from(n.max(1)) - 1;
    map.lines().any(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        matches!(f[..], [inside, _, count] if inside <= u64::from(first) && last < inside + count)
    })
}

/// The directories from `/` to `dir` that other users cannot traverse.
pub(super) fn closed_ancestors(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    dir.ancestors()
        .filter(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        .map(Path::to_path_buf)
        .collect()
}

pub(super) fn default_state_dir(root: bool) -> PathBuf {
    if root {
        return PathBuf::from("/run/actogrid/vessels");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(run) => PathBuf::from(run).join("actogrid").join("vessels"),
        None => std::env::temp_dir().join(format!(
            "actogrid-{}-vessels",
            rustix::process::geteuid().as_raw()
        )),
    }
}
