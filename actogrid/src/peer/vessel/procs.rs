//! The processes of a vessel as `/proc` shows them, when no cgroup holds
//! them: every process of its user (a vessel with a uid of its own), or of
//! its session (a vessel running as the daemon's user). Also what a vessel
//! uses when no cgroup counts it: resident memory and processes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// Which processes belong to a vessel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Every process whose real or effective uid is this one.
    Uid(u32),
    /// Every process of session `sid` whose uid is `uid` (a process that
    /// started a session of its own escapes: the documented limit of
    /// vessels without a uid or a cgroup of their own).
    Session { sid: i32, uid: u32 },
}

/// One live (not zombie) process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proc {
    pub(crate) pid: i32,
    /// Resident memory, bytes.
    pub(crate) rss: u64,
}

/// The live processes of `owner`.
pub(crate) fn of(owner: Owner) -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process that ended meanwhile has no status: skipped.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        if let Some(p) = matching(pid, &status, owner) {
            found.push(p);
        }
    }
    found
}

/// `Some` when the process with this `/proc/<pid>/status` text is live and
/// belongs to `owner`.
fn matching(pid: i32, status: &str, owner: Owner) -> Option<Proc> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    if field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
        return None;
    }
    // Uid: real, effective, saved, filesystem.
    let uids: Vec<u32> = field("Uid:")?
        .split_whitespace()
        .filter_map(|u| u.parse().ok())
        .collect();
    let belongs = match owner {
        Owner::Uid(uid) => uids.iter().take(2).any(|u| *u == uid),
        Owner::Session { sid, uid } => {
            uids.first() == Some(&uid)
                && field("NSsid:")
                    .and_then(|s| s.split_whitespace().next_back())
                    .and_then(|s| s.parse::<i32>().ok())
                    == Some(sid)
        }
    };
    if !belongs {
        return None;
    }
    let rss = field("VmRSS:")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    Some(Proc { pid, rss })
}

/// Kills every process of `owner` (SIGKILL), again and again while new
/// ones appear (a fork bomb racing the sweep), up to `limit`. Returns the
/// number of distinct processes killed, and whether none is left.
/// Blocking: call it off the async threads.
pub(crate) fn kill_all(owner: Owner, limit: Duration) -> (usize, bool) {
    let start = Instant::now();
    let mut killed = HashSet::new();
    loop {
        let left = of(owner);
        if left.is_empty() {
            return (killed.len(), true);
        }
        if start.elapsed() > limit {
            return (killed.len(), false);
        }
        for p in left {
            if let Some(pid) = Pid::from_raw(p.pid) {
                if kill_process(pid, Signal::KILL).is_ok() {
                    killed.insert(p.pid);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsleep\nState:\tS (sleeping)\nUid:\t1900000000\t1900000000\t1900000000\t1900000000\nNSsid:\t4242\nVmRSS:\t  1024 kB\n";

    #[test]
    fn a_process_belongs_to_its_uid_or_its_session() {
        let by_uid = matching(7, STATUS, Owner::Uid(1_900_000_000)).unwrap();
        assert_eq!(by_uid.rss, 1 << 20);
        assert!(matching(7, STATUS, Owner::Uid(0)).is_none());
        let session = Owner::Session {
            sid: 4242,
            uid: 1_900_000_000,
        };
        assert!(matching(7, STATUS, session).is_some());
        let other = Owner::Session {
            sid: 4243,
            uid: 1_900_000_000,
        };
        assert!(matching(7, STATUS, other).is_none());
        let zombie = STATUS.replace("S (sleeping)", "Z (zombie)");
        assert!(matching(7, &zombie, Owner::Uid(1_900_000_000)).is_none());
    }
}
