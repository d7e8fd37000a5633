//! actogrid runs one program across your own machines, ssh hosts, batch
//! clusters (SLURM, PBS, LSF, OAR, Grid Engine) and a peer-to-peer pool of
//! lent desktops. Where the program runs is written in an XML deployment
//! descriptor, not in the code; so are fault tolerance and load balancing.
//!
//! This facade crate is the only one applications depend on. Its
//! [`prelude`] gathers the whole API; the crates behind it are:
//!
//! * [`descriptor`] — reading, validating and planning descriptors;
//! * `actogrid-runtime` — nodes, active objects, futures ([`NodeUrl`]);
//! * `actogrid-acquisition` — starting and acquiring runtimes;
//! * `actogrid-technical-services`, `actogrid-fault-tolerance` — the
//!   services applied to every node of a virtual node.

pub use actogrid_descriptor as descriptor;
pub use actogrid_runtime::NodeUrl;

/// Everything an application needs, in one import.
pub mod prelude {
    pub use crate::descriptor::{Descriptor, Diagnostic, LoadOptions, Severity, load};
    pub use actogrid_runtime::NodeUrl;
}
