//! The two ways runtimes talk, measured side by side: mutual TLS 1.3 (the
//! default) and plaintext (`Identity::plaintext()`, what
//! `ACTOGRID_INSECURE_PLAINTEXT=1` gives). The benchmarks that compare them
//! keep one runtime of each kind in the benchmark process; a `serve-node`
//! child started for one of them (see [`crate::child::Child::node`]) belongs
//! to its domain.

use actogrid_runtime::{Identity, Runtime};

/// How the benchmark's runtimes secure their connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// Mutual TLS with certificates of this process's authority.
    Tls,
    /// No TLS.
    Plaintext,
}

impl Security {
    /// Both, TLS first.
    pub(crate) const BOTH: [Security; 2] = [Security::Tls, Security::Plaintext];

    /// Its name, as printed.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Security::Tls => "tls",
            Security::Plaintext => "plaintext",
        }
    }

    /// A runtime of this kind built with `builder`'s other settings.
    pub(crate) fn build(self, builder: actogrid_runtime::Builder) -> Runtime {
        match self {
            Security::Tls => builder.build(),
            Security::Plaintext => builder.identity(Identity::plaintext()).build(),
        }
    }
}

/// `measure` unpinned then pinned, with a runtime of each kind (TLS first),
/// both shut down whatever happens.
pub(crate) async fn in_both_modes<M, F>(measure: F) -> anyhow::Result<(M, M)>
where
    F: AsyncFn([&Runtime; 2], crate::child::Mode) -> anyhow::Result<M>,
{
    let [tls, plaintext] = Security::BOTH.map(|s| s.build(Runtime::builder()));
    let measured = async {
        let unpinned = measure([&tls, &plaintext], crate::child::Mode::Unpinned).await?;
        let pinned = measure([&tls, &plaintext], crate::child::Mode::Pinned).await?;
        anyhow::Ok((unpinned, pinned))
    }
    .await;
    tls.shutdown();
    plaintext.shutdown();
    measured
}
