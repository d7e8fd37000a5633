//! Names the protocol speaks in: objects, incarnations, requests, log
//! positions, and the driver's time.

use std::fmt;
use std::time::Duration;

/// An active object, protected or not, as the runtime names it (its object
/// id; the runtime id for code that is not an object, such as `main`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectId(pub u64);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "object {:#x}", self.0)
    }
}

/// How many times a protected object has been restarted. Every message a
/// protected object sends carries its incarnation; the recovery process
/// draws a higher one for every restart and fences the ones below it.
/// Senders outside the protected world use [`Incarnation::FIRST`].
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// The incarnation of an object that never failed.
    pub const FIRST: Incarnation = Incarnation(0);

    /// The next one.
    pub fn next(self) -> Incarnation {
        Incarnation(self.0.saturating_add(1))
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "incarnation {}", self.0)
    }
}

/// The identity of a request, and of its reply: the object it is for, the
/// object that sent it, and the sender's sequence number for that target
/// (1, 2, 3… per (sender, target) pair). It is the same on every resend and
/// across every restart of either side.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct RequestId {
    /// The object the request is for.
    pub target: ObjectId,
    /// The object that sent it.
    pub sender: ObjectId,
    /// The sender's sequence number for `target`, from 1.
    pub seq: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request {} of {:#x} to {:#x}",
            self.seq, self.sender.0, self.target.0
        )
    }
}

/// A place in one protected object's message log. Positions start at 0 when
/// the object is created and only grow; truncation removes a prefix and
/// never renumbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition(pub u64);

impl LogPosition {
    /// The position after this one.
    pub fn next(self) -> LogPosition {
        LogPosition(self.0.saturating_add(1))
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "log position {}", self.0)
    }
}

/// A point in time, in milliseconds since an origin the driver chose. The
/// core never reads a clock: the runtime passes the time elapsed since the
/// node started, the simulator its simulated time.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);

    /// `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    /// Time elapsed since `earlier` (zero if `earlier` is later).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// `d` later, saturating.
    pub fn after(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}
