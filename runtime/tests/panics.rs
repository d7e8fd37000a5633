//! A panic in an active object reaches its caller as one message: what
//! the panic said, where in the source, on which host and in which
//! process; and the process's own panic hook still runs, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actogrid_runtime::{CallError, Config, ErrorKind, Runtime};

/// The line of the indexing that panics in `Buggy::nth`.
const NTH_LINE: u32 = line!() + 16;

struct Buggy {
    items: Vec<u32>,
}

#[actogrid_runtime::active(crate = actogrid_runtime)]
#[allow(unreachable_pub)]
impl Buggy {
    pub fn new() -> Self {
        Buggy {
            items: vec![1, 2, 3],
        }
    }

    pub fn nth(&self, i: usize) -> u32 {
        self.items[i]
    }

    pub async fn later(&self, why: String) -> u32 {
        panic!("gave up: {why}")
    }

    pub fn failing(fail: bool) -> Self {
        assert!(!fail, "asked to fail");
        Buggy::new()
    }
}

fn panicked(err: CallError) -> (&'static str, String) {
    match err {
        CallError::Panicked { method, message } => (method, message),
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_says_once_what_where_and_on_which_host() -> anyhow::Result<()> {
    // The process's own hook, installed first, as an application would.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));

    let a = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let b = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let node = a.node(&format!("actogrid://{}/n", b.address().unwrap()).parse()?);
    let buggy = BuggyProxy::new(&node).await?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned();
    let where_ = |line: u32| format!(", at {}:{line}:", file!());
    let on = format!(" on {host} (pid {})", std::process::id());

    let err = buggy.nth(5).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    let shown = err.to_string();
    let (method, message) = panicked(err);
    assert_eq!(method, "nth");
    assert!(
        message.starts_with("index out of bounds: the len is 3 but the index is 5")
            && message.contains(&where_(NTH_LINE))
            && message.ends_with(&on),
        "{message}"
    );
    assert_eq!(shown, format!("`nth` panicked: {message}"));
    assert_eq!(shown.matches("panicked").count(), 1, "said once: {shown}");
    assert_eq!(shown.matches("index out of bounds").count(), 1, "{shown}");
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the previous hook ran once");

    // The object goes on serving; an async method's panic says the same.
    assert_eq!(buggy.nth(1).await?, 2);
    let (_, message) = panicked(buggy.later("no reason".into()).await.unwrap_err());
    assert!(message.starts_with("gave up: no reason, at "), "{message}");
    assert!(message.ends_with(&on), "{message}");

    // A constructor's panic too.
    let (method, message) = panicked(BuggyProxy::failing(&node, true).await.unwrap_err());
    assert_eq!(method, "create");
    assert!(
        message.contains("in the constructor of `panics::Buggy`: asked to fail, at "),
        "{message}"
    );
    assert!(message.ends_with(&on), "{message}");
    assert_eq!(seen.load(Ordering::SeqCst), 3, "once per panic");
    a.shutdown();
    b.shutdown();
    Ok(())
}
