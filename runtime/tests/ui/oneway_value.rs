use actogrid_runtime::active;

pub struct Counter(u64);

#[active(crate = actogrid_runtime)]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    #[oneway]
    pub fn incr(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

fn main() {}
