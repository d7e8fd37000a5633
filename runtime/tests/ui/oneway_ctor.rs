use actogrid_runtime::active;

pub struct Counter(u64);

#[active(crate = actogrid_runtime)]
impl Counter {
    #[oneway]
    pub fn new() -> Self {
        Counter(0)
    }
}

fn main() {}
