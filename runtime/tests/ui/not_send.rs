// A result the object's task cannot send to the caller's: the usual error
// about `Send`, once, at the type.

use actogrid_runtime::active;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Local {
    #[serde(skip)]
    here: std::marker::PhantomData<*const u8>,
}

pub struct Holder;

#[active(crate = actogrid_runtime)]
impl Holder {
    pub fn new() -> Self {
        Holder
    }

    pub fn local(&self) -> Local {
        Local { here: std::marker::PhantomData }
    }
}

fn main() {}
