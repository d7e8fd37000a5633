// A type with only half of serde: the error says which half is missing.

use actogrid_runtime::active;

#[derive(serde::Serialize)]
pub struct Sample(u64);

pub struct Probe;

#[active(crate = actogrid_runtime)]
impl Probe {
    pub fn new() -> Self {
        Probe
    }

    pub fn record(&mut self, s: Sample) {
        let _ = s.0;
    }
}

fn main() {}
