//! Which vessel identities a daemon holds, machine-wide: one lock file per
//! identity (`uid-<uid>.lock` for a vessel with a uid of its own,
//! `slot-<n>.lock` for one running as the daemon's user), locked (`flock`)
//! for as long as the daemon lives. The file records what the vessel
//! running under it has set up (its slot directory, mount, cgroups,
//! session), written before anything is set up, so that a daemon starting
//! after a crash finds every lock file nobody holds, takes down what it
//! records and kills every process of its uid.
//!
//! Several daemons on one machine each claim identities nobody holds;
//! the lock dies with its holder, so a crashed daemon's identities are free
//! for the next one, after the clean-up.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

use super::cgroup::Group;

/// What a vessel set up, as recorded in its claim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Its slot directory.
    pub(crate) dir: Option<PathBuf>,
    /// Whether a tmpfs is mounted on it.
    pub(crate) mounted: bool,
    /// Its cgroups.
    pub(crate) group: Option<Group>,
    /// Its uid, when it has one of its own.
    pub(crate) uid: Option<u32>,
    /// Its session (the vessel's pid), when it runs as the daemon's user.
    pub(crate) session: Option<i32>,
}

/// An identity held by this daemon.
#[derive(Debug)]
pub(crate) struct Claim {
    /// `uid-<uid>` or `slot-<n>`: names its cgroups and lock file.
    pub(crate) name: String,
    /// The uid its vessels run as, when it has one of its own.
    pub(crate) uid: Option<u32>,
    /// Its rank from the base (uid − base, or n): picks its port.
    pub(crate) index: u32,
    file: File,
    path: PathBuf,
    /// What its file says now.
    recorded: Record,
}

impl Claim {
    /// Records what the vessel sets up (before setting it up).
    pub(crate) fn record(&mut self, record: &Record) -> std::io::Result<()> {
        let text = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        self.file.set_len(0)?;
        self.file.rewind()?;
        // Not synced: the record must outlive the daemon (the page cache
        // does), not the machine (which takes vessels down with it).
        self.file.write_all(&text)?;
        self.recorded = record.clone();
        Ok(())
    }

    /// Its vessel is taken down: only its cgroups (empty, kept for the
    /// next vessel of this identity) remain recorded.
    pub(crate) fn idle(&mut self) {
        let idle = Record {
            group: self.recorded.group.clone(),
            uid: self.uid,
            ..Record::default()
        };
        if self.record(&idle).is_err() {
            let _ = self.file.set_len(0);
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // A vessel still recorded (its take-down failed) is left, with
        // its record, for the next daemon.
        if self.recorded.dir.is_some() {
            return;
        }
        // Its cgroups go with it; if they cannot (a process is still in
        // one), the record stays for the next daemon to take down.
        if let Some(group) = &self.recorded.group {
            if group.remove().is_err() {
                return;
            }
        }
        // Unlinked while still locked: no one can lock a file that is
        // being removed and believe it stale.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a claim holds: a uid of its own, or a slot of the daemon's user.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// Uids from this base up.
    Uids(u32),
    /// Slots of the daemon's user.
    Slots,
}

/// Identities considered, from the base: the most vessels one machine
/// runs at once.
pub(crate) const RANGE: u32 = 4096;

/// Locks the file at `path` (created when missing) without waiting;
/// `None` when another daemon holds it. A lock taken on a file that was
/// unlinked meanwhile (its holder released it) is retried.
fn lock(path: &Path) -> std::io::Result<Option<File>> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let same = match std::fs::metadata(path) {
            Ok(on_disk) => {
                let held = file.metadata()?;
                on_disk.ino() == held.ino() && on_disk.dev() == held.dev()
            }
            Err(_) => false,
        };
        if same {
            return Ok(Some(file));
        }
    }
}

fn read_record(file: &mut File) -> Option<Record> {
    let mut text = Vec::new();
    file.rewind().ok()?;
    file.read_to_end(&mut text).ok()?;
    if text.is_empty() {
        return Some(Record::default());
    }
    serde_json::from_slice(&text).ok()
}

/// What a crashed daemon left under one identity.
#[derive(Debug)]
pub(crate) struct Stale {
    pub(crate) name: String,
    pub(crate) uid: Option<u32>,
    /// What its record says (empty when unreadable).
    pub(crate) record: Record,
    file: File,
    path: PathBuf,
}

impl Stale {
    /// Taken down: the identity is free again.
    pub(crate) fn forget(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// The identities in `dir` that no live daemon holds, locked (until
/// [`Stale::forget`]) so that nobody else takes them meanwhile.
pub(crate) fn stale(dir: &Path) -> Vec<Stale> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
            continue;
        };
        let uid = name
            .strip_prefix("uid-")
            .and_then(|u| u.parse::<u32>().ok());
        if uid.is_none() && !name.starts_with("slot-") {
            continue;
        }
        let path = entry.path();
        if let Ok(Some(mut file)) = lock(&path) {
            let record = read_record(&mut file).unwrap_or_default();
            found.push(Stale {
                name: name.to_owned(),
                uid,
                record,
                file,
                path,
            });
        }
    }
    found
}

/// Claims `n` identities of `kind` in `dir`, skipping those another daemon
/// holds and the uids in `taken` (users the system knows). An identity
/// whose file records something (its daemon died since the sweep) is
/// first given to `take_down` (name, uid, record), and skipped when that
/// fails.
pub(crate) fn claim(
    dir: &Path,
    n: u32,
    kind: Kind,
    taken: &[u32],
    take_down: &dyn Fn(&str, Option<u32>, &Record) -> bool,
) -> Result<Vec<Claim>, String> {
    let mut claims = Vec::new();
    for i in 0..RANGE {
        if claims.len() as u32 == n {
            break;
        }
        let (name, uid) = match kind {
            Kind::Uids(base) => {
                let Some(uid) = base.checked_add(i) else {
                    break;
                };
                if taken.contains(&uid) {
                    continue;
                }
                (format!("uid-{uid}"), Some(uid))
            }
            Kind::Slots => (format!("slot-{i}"), None),
        };
        let path = dir.join(format!("{name}.lock"));
        let file = lock(&path).map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        if let Some(mut file) = file {
            let left = read_record(&mut file).unwrap_or_default();
            if left != Record::default() && !take_down(&name, uid, &left) {
                continue;
            }
            let mut claim = Claim {
                name,
                uid,
                index: i,
                file,
                path,
                recorded: Record::default(),
            };
            claim.idle();
            claims.push(claim);
        }
    }
    if claims.len() as u32 == n {
        Ok(claims)
    } else {
        Err(format!(
            "only {} of {n} vessel identities are free in {} (other daemons hold the rest)",
            claims.len(),
            dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "actogrid-claims-{tag}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn two_daemons_never_hold_one_identity_and_a_dead_ones_are_stale() {
        let d = dir("two");
        let nothing = |_: &str, _: Option<u32>, _: &Record| true;
        let first = claim(&d, 2, Kind::Uids(5000), &[5001], &nothing).unwrap();
        let uids: Vec<_> = first.iter().map(|c| c.uid.unwrap()).collect();
        assert_eq!(uids, [5000, 5002], "a uid the system knows is skipped");
        let second = claim(&d, 1, Kind::Uids(5000), &[5001], &nothing).unwrap();
        assert_eq!(second[0].uid, Some(5003));
        assert!(stale(&d).is_empty(), "held identities are not stale");

        // A crash: the lock goes with the process, the file and its record
        // stay (simulated by leaking the file and closing the lock).
        let mut crashed = second.into_iter().next().unwrap();
        let record = Record {
            dir: Some("/somewhere".into()),
            uid: Some(5003),
            ..Record::default()
        };
        crashed.record(&record).unwrap();
        let path = crashed.path.clone();
        let file = std::mem::replace(&mut crashed.file, File::open("/dev/null").unwrap());
        std::mem::forget(crashed);
        drop(file);
        let found = stale(&d);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].record, record);
        assert_eq!(found[0].uid, Some(5003));
        for s in found {
            s.forget();
        }
        assert!(!path.exists());
        drop(first);
        let _ = std::fs::remove_dir_all(&d);
    }
}
