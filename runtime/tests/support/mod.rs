//! What the runtime's tests across runtimes share: runtimes on loopback,
//! their nodes, and a bound that turns a hang into a failure.

#![allow(dead_code)]

use std::time::Duration;

use actogrid_runtime::{Config, Node, Runtime};

/// A generous bound so that a regression fails the test instead of
/// hanging it; nothing relies on it being tight.
pub(crate) const NEVER: Duration = Duration::from_secs(30);

pub(crate) async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(NEVER, fut)
        .await
        .expect("did not complete: the runtime hung")
}

pub(crate) async fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::bind("127.0.0.1:0", Config::default()).await?)
}

/// `name` on `on`'s runtime, as seen from `from` (remote unless they are
/// the same runtime).
pub(crate) fn node(from: &Runtime, on: &Runtime, name: &str) -> anyhow::Result<Node> {
    let address = on.address().expect("bound runtimes serve");
    Ok(from.node(&format!("actogrid://{address}/{name}").parse()?))
}
