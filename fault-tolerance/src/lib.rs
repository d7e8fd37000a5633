//! Fault tolerance by rollback-recovery, chosen at deployment time.
//!
//! Two protocols: communication-induced checkpointing (CIC: low failure-free
//! cost, global rollback to a recovery line) and pessimistic message logging
//! (PML: every message logged before anything it caused is seen, only the
//! failed object restarts). Both are built on the interception points of the runtime's
//! bodies and run as a technical service; the FT server keeps checkpoints and
//! logs in a durable store.
//!
//! * [`cic`]: the CIC protocol cores (one per protected object, and the FT
//!   server's recovery line), sans-IO state machines that a seeded
//!   simulator drives in the tests; not driven by the runtime yet.
//! * [`pml`]: the PML protocol cores, sans-IO state machines that a
//!   seeded simulator drives in the tests: the protocol's specification.
//!   Production follows the same rules in [`server`], with the runtime's
//!   hooks (the differences are listed in `docs/fault-tolerance.md`).
//! * [`server`]: the FT server's recovery side driven by the runtime's
//!   hooks — logging into the store while a request is served, holding back
//!   what the service produces until its entry is durable, checkpoints, the
//!   location service, recovery of a failed runtime's objects.
//! * [`journal`]: journaled effects, what a protected object does that
//!   is not deterministic, done once and given back on recovery.
//! * [`keeper`]: the replies unprotected nodes keep for protected
//!   callers, so that a recovered caller's calls are answered again.
//! * [`service`]: the technical service a descriptor switches it on
//!   with (`actogrid.FaultTolerance`).
//! * [`store`]: the FT server's durable store (redb, group commit):
//!   checkpoints, request logs and logged replies per protected object.
//! * [`watch`]: the failure detector of a stand-alone FT server
//!   (`actogrid ft-server`), fed by the protected nodes' heartbeats.

pub mod cic;
pub mod cic_group;
pub mod cic_node;
pub mod journal;
pub mod keeper;
pub mod pml;
pub mod server;
pub mod service;
pub mod store;
pub mod watch;

pub use journal::{EffectId, JournalError, journaled, journaled_async};
pub use service::{CALLER_CLASS, FaultTolerance, FaultToleranceCalls};

/// The class names of [`FaultTolerance`]: actogrid's and ProActive's.
pub const CLASSES: &[&str] = actogrid_runtime::descriptor::FAULT_TOLERANCE_CLASSES;

actogrid_technical_services::technical_service!("actogrid.FaultTolerance", FaultTolerance);
actogrid_technical_services::technical_service!(
    "org.objectweb.proactive.core.body.ft.service.FaultToleranceTechnicalService",
    FaultTolerance
);
actogrid_technical_services::technical_service!(
    "actogrid.FaultToleranceCalls",
    FaultToleranceCalls
);

pub use store::{
    Checkpoint, CheckpointIndex, Incarnation, LogBounds, LogEntry, LogPosition, ObjectKey,
    RecordFault, ReplyId, Store, StoreConfig, StoreError, StoreResult, StoreStats,
};
