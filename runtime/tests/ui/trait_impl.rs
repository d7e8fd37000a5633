use actogrid_runtime::active;

pub struct Counter(u64);

#[active(crate = actogrid_runtime)]
impl Default for Counter {
    fn default() -> Self {
        Counter(0)
    }
}

fn main() {}
