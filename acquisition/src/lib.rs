//! Node providers: how runtimes are created or acquired.
//!
//! Providers turn the process chains and acquisition services of a validated
//! descriptor into running runtimes: local processes, ssh hosts, batch
//! schedulers (SLURM, PBS, LSF, OAR, Grid Engine), file transfer, and the
//! peer-to-peer overlay. They read the typed model of `actogrid-descriptor`
//! and hand the runtimes they start to `actogrid-runtime`.

pub mod batch;
pub mod chain;
pub mod exec;
pub mod mpi;
pub mod overlay;
pub mod ssh;
pub mod transfer;
