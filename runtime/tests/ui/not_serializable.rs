// Three types that cannot travel, one error each: 3 errors, 62 lines of
// output. Before these checks the same mistakes, with a method returning
// `anyhow::Result`, gave 8 errors and some 250 lines pointing inside serde.
// The error types sent as text (anyhow, io, boxed `dyn Error`) compile.

use actogrid_runtime::active;

pub struct Point {
    x: f64,
}

pub struct Report {
    lines: Vec<String>,
}

#[derive(Debug)]
pub struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mine")
    }
}

pub struct Shapes;

#[active(crate = actogrid_runtime)]
impl Shapes {
    pub fn new() -> Self {
        Shapes
    }

    pub fn add(&mut self, p: Point) {
        let _ = p.x;
    }

    pub fn report(&self) -> Report {
        Report { lines: Vec::new() }
    }

    pub fn first(&self) -> Result<u64, MyError> {
        Err(MyError)
    }

    pub fn total(&self) -> anyhow::Result<u64> {
        Ok(0)
    }

    pub fn read(&self) -> std::io::Result<String> {
        Ok(String::new())
    }

    pub async fn boxed(&self) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        Ok(1)
    }
}

fn main() {}
