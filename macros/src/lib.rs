//! Procedural macros of actogrid.
//!
//! This crate will hold `#[actogrid::active]` (typed proxy, request enum and
//! dispatch generated from an `impl` block) and `#[actogrid::main]` (the same
//! binary serving as a node runtime when launched as one). Users never depend
//! on it directly: the facade crate `actogrid` re-exports its macros.
//!
//! It is a proc-macro crate, so it sits at the bottom of the dependency graph
//! next to `actogrid-descriptor`; nothing here may depend on the runtime.
