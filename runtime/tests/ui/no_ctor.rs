use actogrid_runtime::active;

pub struct Counter(u64);

#[active(crate = actogrid_runtime)]
impl Counter {
    fn new() -> Self {
        Counter(0)
    }

    pub fn get(&self) -> u64 {
        self.0
    }
}

fn main() {
    let _ = Counter::new();
}
