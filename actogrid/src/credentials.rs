//! How a process hands credentials to a runtime it starts: over the
//! runtime's standard input, never in a file others can read, an
//! environment variable or a command line (`ps` shows those).
//!
//! A node runtime started with [`spawn_with`](crate::spawn_with) gets a
//! certificate of its parent's authority directly (a PEM bundle). A runtime
//! started by a deployment gets a one-time ticket and the authorities to
//! trust (one JSON line), and enrolls with the deployer to get its
//! certificate. Either is followed by [`END`] on a line of its own; the
//! rest of standard input stays the parent's (closing it ends runtimes
//! that watch it).

use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use actogrid_runtime::Identity;

pub use actogrid_acquisition::exec::CREDENTIALS_ENV;

/// The line that ends the credentials on standard input.
pub const END: &str = "-- end of actogrid credentials --";

/// How long a runtime waits for its credentials.
const WAIT: Duration = Duration::from_secs(30);

/// What a deployment gives a runtime it starts: a one-time ticket, and
/// the authorities to trust when enrolling with the deployer (`None`: the
/// deployment runs without TLS).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Enrollment {
    pub(crate) ticket: String,
    pub(crate) roots: Option<String>,
}

/// What to write on the standard input of a node runtime started by
/// hand (with `ACTOGRID_CREDENTIALS=stdin` in its environment) so that it
/// belongs to `runtime`'s domain: a fresh certificate, its key and the
/// authorities to trust, then the end line. [`spawn_with`](crate::spawn_with)
/// does this itself.
pub fn for_node(runtime: &actogrid_runtime::Runtime) -> anyhow::Result<String> {
    let bundle = runtime
        .identity()
        .bundle()
        .map_err(|e| anyhow::anyhow!("cannot make credentials for a node: {e}"))?;
    Ok(framed(&bundle))
}

/// The credentials text itself, with the end line: what a file holds.
pub(crate) fn framed(text: &str) -> String {
    let mut out = text.to_owned();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// Reads the credentials this process was given (see the module's
/// documentation); `None` when it was given none.
pub(crate) async fn read() -> anyhow::Result<Option<String>> {
    let Ok(source) = std::env::var(CREDENTIALS_ENV) else {
        return Ok(None);
    };
    let reading = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut text = String::new();
        let mut lines: Box<dyn Iterator<Item = std::io::Result<String>>> = match source
            .strip_prefix("file:")
        {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| anyhow::anyhow!("{CREDENTIALS_ENV}: cannot read {path}: {e}"))?;
                Box::new(std::io::BufReader::new(file).lines())
            }
            None if source == "stdin" => Box::new(std::io::stdin().lock().lines()),
            None => {
                anyhow::bail!("{CREDENTIALS_ENV}=`{source}`: expected `stdin` or `file:<path>`")
            }
        };
        for line in lines.by_ref() {
            let line = line?;
            if line == END {
                return Ok(text);
            }
            if text.len() > 1 << 20 {
                anyhow::bail!("the credentials given are larger than 1 MiB");
            }
            text.push_str(&line);
            text.push('\n');
        }
        anyhow::bail!("the credentials given end before their end line")
    });
    match tokio::time::timeout(WAIT, reading).await {
        Ok(Ok(Ok(text))) => Ok(Some(text)),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(anyhow::anyhow!("reading the credentials failed: {e}")),
        Err(_) => anyhow::bail!(
            "no credentials arrived within {} s ({CREDENTIALS_ENV} says they would)",
            WAIT.as_secs()
        ),
    }
}

/// The identity of a node runtime started by hand or by
/// [`spawn_with`](crate::spawn_with): the credentials it was given
/// (`ACTOGRID_CREDENTIALS`), plaintext when asked for
/// (`ACTOGRID_INSECURE_PLAINTEXT=1`), else an error that says how to give
/// some.
pub async fn node_identity() -> anyhow::Result<Identity> {
    if let Some(bundle) = read().await? {
        return Identity::from_bundle(&bundle).map_err(|e| anyhow::anyhow!("{e}"));
    }
    if actogrid_runtime::tls::plaintext_asked() {
        return Ok(Identity::plaintext());
    }
    anyhow::bail!(
        "a node runtime needs credentials: started by actogrid::spawn_node or spawn_with they \
         come on its standard input ({CREDENTIALS_ENV}=stdin); on a closed network only, \
         ACTOGRID_INSECURE_PLAINTEXT=1 runs it without TLS"
    )
}

/// Gives `child` credentials for a new runtime of `parent`'s domain, on
/// its standard input (which stays open).
pub(crate) fn hand_over(
    parent: &actogrid_runtime::Runtime,
    child: &mut std::process::Child,
) -> anyhow::Result<()> {
    let text = for_node(parent)?;
    let input = child.stdin.as_mut().ok_or_else(|| {
        anyhow::anyhow!("the node process has no standard input to give credentials on")
    })?;
    input.write_all(text.as_bytes())?;
    input.flush()?;
    Ok(())
}
