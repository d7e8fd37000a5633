//! The vessel's own side: the daemon starts its own executable with
//! [`VESSEL_ENV`] holding a [`Confinement`]; that process enters its
//! cgroups, sets its limits, leaves the daemon's session, applies the
//! Landlock rules, becomes the vessel's user and only then executes the
//! borrowed program, which inherits all of it. Any step failing ends the
//! vessel before the program runs: a vessel never runs unconfined by
//! accident.
//!
//! This runs before anything else in the process (no thread, no async
//! runtime): changing the user only changes the calling thread, which is
//! the whole process here, and this is checked.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use rustix::process::{Gid, Resource, Rlimit, Uid, setpriority_process, setrlimit, setsid};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
use serde::{Deserialize, Serialize};

/// Set on the daemon's executable started as a vessel: the
/// [`Confinement`], as JSON.
pub(crate) const VESSEL_ENV: &str = "ACTOGRID_VESSEL";

/// The Landlock ABI the rules are written for (and tested on). Older
/// kernels get what they support of it; newer ones nothing more.
pub(crate) const TARGET_ABI: ABI = ABI::V7;

/// What the vessel process applies to itself before it executes the
/// program.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Confinement {
    /// The program to execute (in the daemon's cache).
    pub(crate) program: PathBuf,
    /// Its slot directory: its working directory, the only writable place.
    pub(crate) dir: PathBuf,
    /// `(uid, gid)` to become, when the vessel has a user of its own.
    pub(crate) user: Option<(u32, u32)>,
    /// `cgroup.procs` files to enter.
    pub(crate) cgroups: Vec<PathBuf>,
    /// Resource limits (soft = hard).
    pub(crate) rlimits: Vec<(Limit, u64)>,
    /// Niceness.
    pub(crate) nice: i32,
    /// Landlock rules, when Landlock is to be used.
    pub(crate) landlock: Option<Rules>,
    /// Apply everything, then report and exit instead of executing the
    /// program (the daemon's check when it starts).
    pub(crate) probe: bool,
}

/// The resource limits a vessel may set on itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Limit {
    /// `RLIMIT_AS`: address space.
    AddressSpace,
    /// `RLIMIT_NPROC`: processes (and threads) of its user.
    Processes,
    /// `RLIMIT_FSIZE`: size of any one file it writes.
    FileSize,
    /// `RLIMIT_CORE`: core dumps.
    CoreSize,
}

/// What the vessel may touch, as Landlock rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Rules {
    /// Read and execute (system programs and libraries, the program).
    pub(crate) read_exec: Vec<PathBuf>,
    /// Read only.
    pub(crate) read: Vec<PathBuf>,
    /// Read and write files, no directory change (`/dev/null`…).
    pub(crate) devices: Vec<PathBuf>,
    /// Everything (the slot directory).
    pub(crate) read_write: Vec<PathBuf>,
    /// When set, the only TCP ports it may listen on.
    pub(crate) bind: Option<Vec<u16>>,
    /// When set, the only TCP ports it may connect to.
    pub(crate) connect: Option<Vec<u16>>,
}

/// System paths every program may read (and execute): libraries,
/// programs. Those that do not exist are skipped.
pub(crate) const SYSTEM_READ_EXEC: &[&str] = &[
    "/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin",
];

/// What a program reads to run and to resolve names, and what the
/// runtime reads about the machine and itself. Not the rest of `/etc`,
/// not `/home`, not other processes' `/proc` entries (their command
/// lines may hold secrets).
pub(crate) const SYSTEM_READ: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/proc/self",
    "/proc/sys",
    "/proc/meminfo",
    "/proc/cpuinfo",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/uptime",
    "/proc/version",
    "/sys/devices/system/cpu",
    "/sys/devices/system/node",
    "/sys/fs/cgroup",
];

/// Devices a program may open for reading and writing.
pub(crate) const SYSTEM_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// The line a probe prints on success, followed by the Landlock status.
pub(crate) const PROBE_OK: &str = "actogrid vessel ready: landlock ";

/// Applies `text` (a [`Confinement`] as JSON) to this process and executes
/// its program; returns only on failure, saying what failed.
pub(crate) fn enter(text: &str) -> String {
    let confinement: Confinement = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(e) => return format!("{VESSEL_ENV} is malformed: {e}"),
    };
    match apply(&confinement) {
        Ok(landlock) if confinement.probe => {
            println!("{PROBE_OK}{landlock}");
            std::process::exit(0);
        }
        Ok(_) => {
            let e = std::process::Command::new(&confinement.program)
                .env_remove(VESSEL_ENV)
                .exec();
            format!("cannot execute {}: {e}", confinement.program.display())
        }
        Err(e) => e,
    }
}

/// Everything but the execution; returns how Landlock applies.
fn apply(c: &Confinement) -> Result<&'static str, String> {
    single_threaded()?;
    // Out of the daemon's session and process group: what is sent to
    // those does not reach the vessel, and the vessel is a session the
    // daemon can find.
    setsid().map_err(|e| format!("setsid: {e}"))?;
    let me = std::process::id().to_string();
    for procs in &c.cgroups {
        std::fs::write(procs, &me)
            .map_err(|e| format!("cannot enter the cgroup {}: {e}", procs.display()))?;
    }
    for (limit, value) in &c.rlimits {
        let resource = match limit {
            Limit::AddressSpace => Resource::As,
            Limit::Processes => Resource::Nproc,
            Limit::FileSize => Resource::Fsize,
            Limit::CoreSize => Resource::Core,
        };
        let both = Rlimit {
            current: Some(*value),
            maximum: Some(*value),
        };
        setrlimit(resource, both).map_err(|e| format!("cannot set {limit:?} to {value}: {e}"))?;
    }
    setpriority_process(None, c.nice)
        .map_err(|e| format!("cannot set niceness {}: {e}", c.nice))?;
    std::env::set_current_dir(&c.dir)
        .map_err(|e| format!("cannot enter {}: {e}", c.dir.display()))?;
    // The rules are made while the paths can still be opened (the slot
    // directory is its user's alone), enforced once that user.
    let ruleset = c.landlock.as_ref().map(ruleset).transpose()?;
    if let Some((uid, gid)) = c.user {
        become_user(uid, gid)?;
    }
    drop_capabilities()?;
    match ruleset {
        Some(ruleset) => {
            let status = ruleset
                .restrict_self()
                .map_err(|e| format!("cannot apply the Landlock rules: {e}"))?;
            if !status.no_new_privs {
                return Err("no_new_privs could not be set".into());
            }
            Ok(match status.ruleset {
                RulesetStatus::FullyEnforced => "fully enforced",
                RulesetStatus::PartiallyEnforced => "partially enforced",
                RulesetStatus::NotEnforced => "not enforced",
            })
        }
        None => {
            rustix::thread::set_no_new_privs(true)
                .map_err(|e| format!("cannot set no_new_privs: {e}"))?;
            Ok("not used")
        }
    }
}

fn single_threaded() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    match threads {
        Some(1) => Ok(()),
        other => Err(format!(
            "the vessel must be entered before any thread starts ({other:?} threads)"
        )),
    }
}

fn become_user(uid: u32, gid: u32) -> Result<(), String> {
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    set_thread_groups(&[]).map_err(|e| format!("cannot drop the supplementary groups: {e}"))?;
    set_thread_res_gid(g, g, g).map_err(|e| format!("cannot become group {gid}: {e}"))?;
    set_thread_res_uid(u, u, u).map_err(|e| format!("cannot become user {uid}: {e}"))?;
    // And no way back.
    if set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).is_ok() && uid != 0 {
        return Err(format!("user {uid} could become root again"));
    }
    Ok(())
}

/// No capability left, none to get back: a vessel of a root daemon that
/// keeps uid 0 (`--same-user`) is root without root's powers, and with
/// `no_new_privs` its program gets none on `execve` either.
fn drop_capabilities() -> Result<(), String> {
    use rustix::thread::{CapabilitySet, CapabilitySets, set_capabilities};
    rustix::thread::clear_ambient_capability_set()
        .map_err(|e| format!("cannot clear the ambient capabilities: {e}"))?;
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    set_capabilities(None, none).map_err(|e| format!("cannot drop the capabilities: {e}"))
}

fn ruleset(rules: &Rules) -> Result<landlock::RulesetCreated, String> {
    let fail = |e: landlock::RulesetError| format!("cannot make the Landlock rules: {e}");
    let abi = TARGET_ABI;
    let mut net = BitFlags::<AccessNet>::EMPTY;
    if rules.bind.is_some() {
        net |= AccessNet::BindTcp;
    }
    if rules.connect.is_some() {
        net |= AccessNet::ConnectTcp;
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(fail)?
        .scope(Scope::from_all(abi))
        .map_err(fail)?;
    if !net.is_empty() {
        ruleset = ruleset.handle_access(net).map_err(fail)?;
    }
    // Denials of the borrowed program go to the kernel's audit log (ABI ≥ 7,
    // when auditing is on): the lender can see what a vessel tried.
    let mut created = ruleset
        .create()
        .and_then(|r| r.log_new_exec(true))
        .map_err(fail)?;
    let read_file = AccessFs::ReadFile | AccessFs::ReadDir;
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate;
    for (paths, access) in [
        (&rules.read_exec, AccessFs::from_read(abi)),
        (&rules.read, read_file),
        (&rules.devices, device),
        (&rules.read_write, AccessFs::from_all(abi)),
    ] {
        for path in paths {
            if let Some(rule) = path_rule(path, access)? {
                created = created.add_rule(rule).map_err(fail)?;
            }
        }
    }
    for port in rules.bind.iter().flatten() {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::BindTcp))
            .map_err(fail)?;
    }
    for port in rules.connect.iter().flatten() {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(fail)?;
    }
    Ok(created)
}

/// A rule for `path`, with the rights that apply to what it is (a file
/// gets no directory rights); `None` when it does not exist.
fn path_rule(
    path: &Path,
    access: BitFlags<AccessFs>,
) -> Result<Option<PathBeneath<PathFd>>, String> {
    let fd = match PathFd::new(path) {
        Ok(fd) => fd,
        Err(_) if !path.exists() => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let access = if path.is_dir() {
        access
    } else {
        access & AccessFs::from_file(TARGET_ABI)
    };
    Ok(Some(PathBeneath::new(fd, access)))
}

/// The highest Landlock ABI the kernel supports, up to the one the rules
/// are written for; `None` without Landlock.
pub(crate) fn landlock_abi() -> Option<u8> {
    let candidates = [
        (ABI::V7, 7),
        (ABI::V6, 6),
        (ABI::V5, 5),
        (ABI::V4, 4),
        (ABI::V3, 3),
        (ABI::V2, 2),
        (ABI::V1, 1),
    ];
    candidates.into_iter().find_map(|(abi, n)| {
        let made = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .and_then(|r| {
                if AccessNet::from_all(abi).is_empty() {
                    Ok(r)
                } else {
                    r.handle_access(AccessNet::from_all(abi))
                }
            })
            .and_then(|r| {
                if Scope::from_all(abi).is_empty() {
                    Ok(r)
                } else {
                    r.scope(Scope::from_all(abi))
                }
            })
            .and_then(|r| r.create());
        made.is_ok().then_some(n)
    })
}
