//! The deployments of this process that are not torn down yet, so that
//! Ctrl-C or SIGTERM of an application tears them all down (see
//! `run_main` in `process.rs`) the way `actogrid deploy` does.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::Inner;
use super::state::lock;

fn table() -> &'static Mutex<Vec<Weak<Inner>>> {
    static LIVE: OnceLock<Mutex<Vec<Weak<Inner>>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// A deployment was loaded.
pub(super) fn add(inner: &Arc<Inner>) {
    let mut live = lock(table());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(inner));
}

/// A deployment was torn down.
pub(super) fn remove(inner: &Arc<Inner>) {
    lock(table()).retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(inner)));
}

/// How many deployments are live.
pub(crate) fn count() -> usize {
    lock(table())
        .iter()
        .filter(|w| w.strong_count() > 0)
        .count()
}

/// Tears down every live deployment, all at once, and returns when they
/// are down.
pub(crate) async fn end_all() {
    let live: Vec<Arc<Inner>> = lock(table()).iter().filter_map(Weak::upgrade).collect();
    futures::future::join_all(live.iter().map(super::kill)).await;
}
