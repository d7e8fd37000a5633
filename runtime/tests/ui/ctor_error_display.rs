// A constructor's error reaches the creator as text: it needs `Display`.

use actogrid_runtime::active;

#[derive(Debug)]
pub struct Invalid;

pub struct Account;

#[active(crate = actogrid_runtime)]
impl Account {
    pub fn open(limit: u64) -> Result<Self, Invalid> {
        if limit == 0 { Err(Invalid) } else { Ok(Account) }
    }
}

fn main() {}
