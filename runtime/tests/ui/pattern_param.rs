use actogrid_runtime::active;

pub struct Plane(u32, u32);

#[active(crate = actogrid_runtime)]
impl Plane {
    pub fn new() -> Self {
        Plane(0, 0)
    }

    pub fn move_to(&mut self, (x, y): (u32, u32)) {
        self.0 = x;
        self.1 = y;
    }
}

fn main() {}
