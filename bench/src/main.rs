//! actogrid benchmarks.
fn main() {}
