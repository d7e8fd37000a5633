use actogrid_runtime::active;

pub struct Greeter;

#[active(crate = actogrid_runtime)]
impl Greeter {
    pub fn new() -> Self {
        Greeter
    }

    pub fn greet(&self, name: &str) -> String {
        format!("hello {name}")
    }
}

fn main() {}
