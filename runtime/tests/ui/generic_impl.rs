use actogrid_runtime::active;

pub struct Stack<T>(Vec<T>);

#[active(crate = actogrid_runtime)]
impl<T: Send + 'static> Stack<T> {
    pub fn new() -> Self {
        Stack(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

fn main() {}
