//! What the fault-tolerance tests share: runtimes on loopback, bounds
//! that turn a hang into a failure, temporary store directories.

#![allow(dead_code)]

use std::time::Duration;

use actogrid_runtime::{Config, Node, Runtime};

/// A generous bound so that a regression fails the test instead of
/// hanging it.
pub(crate) const NEVER: Duration = Duration::from_secs(30);

pub(crate) async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(NEVER, fut)
        .await
        .expect("did not complete: the runtime hung")
}

pub(crate) async fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::bind("127.0.0.1:0", Config::default()).await?)
}

pub(crate) fn node(from: &Runtime, on: &Runtime, name: &str) -> anyhow::Result<Node> {
    let address = on.address().expect("bound runtimes serve");
    Ok(from.node(&format!("actogrid://{address}/{name}").parse()?))
}

/// A fresh directory for one test's store, removed when dropped.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "actogrid-ft-{name}-{}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
