//! The actogrid node runtime.
//!
//! A runtime is one OS process that hosts nodes; nodes host active objects.
//! This crate grows into the body (request queue, service loop, interception
//! points), proxies, futures, groups, migration and the gRPC wire. Today it
//! holds the addressing scheme every other part agrees on: [`NodeUrl`].

mod url;

pub use url::{NodeUrl, ParseNodeUrlError};

/// The descriptor crate, for the layers above that reach it through the runtime.
pub use actogrid_descriptor as descriptor;
