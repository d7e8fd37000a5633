//! Errors a method returns reach the caller in full: its own serializable
//! error type as itself, and the error types that are not serializable
//! (`anyhow`, `std::io`, boxed `dyn Error`) as a `RemoteError` with their
//! whole chain of causes.

use std::io;

use actogrid_runtime::{CallError, Config, RemoteError, Runtime};
use anyhow::Context as _;

/// An object whose methods fail in every way a program's code does.
struct Files;

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Files {
    pub fn new() -> Self {
        Files
    }

    /// A constructor failing with an anyhow chain.
    pub fn open(path: String) -> anyhow::Result<Self> {
        std::fs::read(&path)
            .with_context(|| format!("cannot open the catalogue {path}"))
            .map(|_| Files)
    }

    pub fn size(&self, path: String) -> anyhow::Result<u64> {
        let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {path}"))?;
        Ok(meta.len())
    }

    pub async fn size_later(&self, path: String) -> Result<u64, anyhow::Error> {
        self.size(path).context("the later size")
    }

    pub fn read(&self, path: String) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    pub fn parse(&self, text: String) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        Ok(text.trim().parse::<u64>()?)
    }

    pub fn checked(&self, text: String) -> Result<u64, RemoteError> {
        text.parse()
            .map_err(|e: std::num::ParseIntError| RemoteError::from_error(&e).context("checked"))
    }

    pub fn typed(&self, fail: bool) -> Result<u8, String> {
        if fail {
            Err("typed failure".into())
        } else {
            Ok(1)
        }
    }
}

async fn pair() -> anyhow::Result<(Runtime, Runtime)> {
    let a = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let b = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    Ok((a, b))
}

fn method_error<T: std::fmt::Debug, E: std::fmt::Debug>(r: Result<T, CallError<E>>) -> E {
    match r {
        Err(CallError::Method(e)) => e,
        other => panic!("expected the method's own error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_that_are_not_serializable_arrive_with_their_causes() -> anyhow::Result<()> {
    let (a, b) = pair().await?;
    let node = a.node(&format!("actogrid://{}/n", b.address().unwrap()).parse()?);
    let files = FilesProxy::new(&node).await?;
    let missing = "/nonexistent/actogrid-test".to_owned();

    // anyhow: the context, then the io error under it, as `{:#}` shows.
    let e: RemoteError = method_error(files.size(missing.clone()).await);
    assert_eq!(e.message(), format!("cannot read {missing}"));
    let causes: Vec<&str> = e.causes().collect();
    assert_eq!(causes.len(), 1, "{e:?}");
    assert!(causes[0].contains("No such file"), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("cannot read {missing}: {}", causes[0])
    );
    let as_anyhow = anyhow::anyhow!(e.clone());
    assert_eq!(
        format!("{as_anyhow:#}"),
        e.to_string(),
        "no cause shown twice"
    );

    // The same from an async method, one more level deep.
    let e = method_error(files.size_later(missing.clone()).await);
    assert_eq!(e.message(), "the later size");
    assert_eq!(e.causes().count(), 2, "{e:?}");

    // std::io, and a boxed error.
    let e = method_error(files.read(missing.clone()).await);
    assert!(e.message().contains("No such file"), "{e:?}");
    let e = method_error(files.parse("twelve".into()).await);
    assert_eq!(e.message(), "invalid digit found in string");
    assert_eq!(files.parse(" 12 ".into()).await?, 12);

    // RemoteError written by hand, and an ordinary typed error.
    let e = method_error(files.checked("x".into()).await);
    assert_eq!(e.to_string(), "checked: invalid digit found in string");
    assert_eq!(method_error(files.typed(true).await), "typed failure");

    // A constructor's anyhow error reaches the creator with its causes.
    let err = FilesProxy::open(&node, missing.clone()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("cannot open the catalogue {missing}: "))
            && text.contains("No such file"),
        "{text}"
    );
    a.shutdown();
    b.shutdown();
    Ok(())
}
