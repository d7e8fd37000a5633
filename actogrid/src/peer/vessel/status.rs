//! What the status shows of vessels: the protections in force, what each
//! vessel uses, the limits it reached, and the vessels that ended.

use serde::{Deserialize, Serialize};

/// How the lent slots of a peer are protected, as its status shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VesselStatus {
    /// Which user vessels run as, and why.
    pub user: String,
    /// Each protection: what it limits, to what, by which mechanism.
    pub protections: Vec<Protection>,
    /// The last vessels that ended, most recent first.
    pub ended: Vec<EndedVessel>,
}

/// One protection of the vessels.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Protection {
    /// `memory`, `processes`, `cpu`, `disk`, `files`, `network`,
    /// `signals`, `cleanup`.
    pub what: String,
    /// The limit.
    pub limit: String,
    /// The mechanism that enforces it here (or that nothing does).
    pub how: String,
}

/// What a vessel uses (now, or at most over its life).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VesselUsage {
    /// Memory, bytes (charged to its cgroup, else resident).
    pub memory: u64,
    /// Processes and threads.
    pub tasks: u32,
    /// Bytes in its directory.
    pub disk: u64,
}

/// A vessel that ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndedVessel {
    /// Its booking.
    pub booking: u64,
    /// Who it ran for.
    pub requester: String,
    /// Its uid, when it had one of its own.
    pub uid: Option<u32>,
    /// How its program ended (`exit status: 0`, `killed: out of memory`,
    /// `stopped: the slot was freed`…).
    pub end: String,
    /// The limits it ran into (`memory: …`, `processes: …`, `disk: …`).
    pub limits_hit: Vec<String>,
    /// Processes still there after its program ended, killed.
    pub leftovers_killed: u32,
    /// The most it used.
    pub peak: VesselUsage,
    /// Seconds it ran.
    pub seconds: u64,
}

impl std::fmt::Display for VesselStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "vessels run as {}", self.user)?;
        for p in &self.protections {
            writeln!(f, "  {:<9} {} — {}", p.what, p.limit, p.how)?;
        }
        if !self.ended.is_empty() {
            writeln!(f, "ended vessels ({}):", self.ended.len())?;
        }
        for e in &self.ended {
            let uid = e.uid.map(|u| format!("uid {u}, ")).unwrap_or_default();
            writeln!(
                f,
                "  booking {} for {} ({uid}{} s): {}",
                e.booking, e.requester, e.seconds, e.end
            )?;
            for hit in &e.limits_hit {
                writeln!(f, "    limit reached: {hit}")?;
            }
            if e.leftovers_killed > 0 {
                writeln!(
                    f,
                    "    {} process(es) left behind, killed",
                    e.leftovers_killed
                )?;
            }
            writeln!(
                f,
                "    at most {} of memory, {} processes and threads, {} of disk",
                bytes(e.peak.memory),
                e.peak.tasks,
                bytes(e.peak.disk)
            )?;
        }
        Ok(())
    }
}

/// `n` bytes for people: `256 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
