// A misspelt or missing type is reported once, as in any function, though
// the attribute copies it into several generated items.

use actogrid_runtime::active;

pub struct Probe;

#[active(crate = actogrid_runtime)]
impl Probe {
    pub fn new() -> Self {
        Probe
    }

    pub fn record(&mut self, s: Sampel) -> Rc<u8> {
        todo!()
    }
}

fn main() {}
