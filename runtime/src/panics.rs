//! What a panic in the program's code becomes for the caller: one message
//! saying what the panic said, where in the source it happened, and on
//! which host and in which process.
//!
//! `catch_unwind` hands over the panic's payload only; its location is
//! known to the panic hook alone. The runtime therefore installs a hook,
//! once per process, that records the location and message of the last
//! panic of each thread before calling the hook that was there before (so
//! the panic is still printed as usual, once). The code that caught the
//! panic reads the record back, on the same thread, and trusts it only when
//! its message is the payload's: a panic resumed from elsewhere
//! (`resume_unwind` does not run the hook) is reported without a location
//! rather than with another panic's.

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Once, OnceLock};

/// The last panic seen by the hook on this thread.
struct Recorded {
    /// Its message, when the payload is text.
    message: Option<String>,
    /// `file:line:column`.
    location: String,
}

thread_local! {
    static LAST: RefCell<Option<Recorded>> = const { RefCell::new(None) };
}

/// Installs the recording hook, once per process. Called before the
/// program's code first runs in an active object (construction or
/// restoration), so it costs nothing per request.
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            record(info);
            previous(info);
        }));
    });
}

fn record(info: &std::panic::PanicHookInfo<'_>) {
    let Some(location) = info.location() else {
        return;
    };
    let recorded = Recorded {
        message: payload_text(info.payload()).map(str::to_owned),
        location: format!(
            "{}:{}:{}",
            location.file(),
            location.line(),
            location.column()
        ),
    };
    // A panic while the thread's locals are being destroyed, or inside a
    // hook that is already recording, has nowhere to go: it is reported
    // without its location.
    let _ = LAST.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = Some(recorded);
        }
    });
}

/// The payload of a panic, when it is text (`panic!` with a literal or a
/// format string).
fn payload_text(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// The message a panic carried.
pub(crate) fn text(panic: &(dyn Any + Send)) -> String {
    payload_text(panic)
        .unwrap_or("a panic with a non-string payload")
        .to_owned()
}

/// What a caught panic says for the caller: its message, then where it
/// happened (`boom, at src/lib.rs:12:9 on node-3 (pid 4242)`). Call it on
/// the thread that caught the panic, right after catching it.
pub(crate) fn describe(panic: &(dyn Any + Send)) -> String {
    let text = text(panic);
    let recorded = LAST
        .try_with(|last| last.borrow_mut().take())
        .ok()
        .flatten();
    let location = recorded
        .filter(|r| r.message.as_deref() == payload_text(panic))
        .map(|r| r.location);
    let (host, pid) = (host(), std::process::id());
    match location {
        Some(location) => format!("{text}, at {location} on {host} (pid {pid})"),
        None => format!("{text}, on {host} (pid {pid})"),
    }
}

/// This machine's name, read once.
fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_says_where_it_happened_once() {
        install();
        let line = line!() + 1;
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        let said = describe(&*caught);
        let host = host();
        let expected_at = format!("boom 7, at {}:{line}:", file!());
        assert!(said.starts_with(&expected_at), "{said}");
        assert!(
            said.ends_with(&format!(" on {host} (pid {})", std::process::id())),
            "{said}"
        );
        // The record was taken: a panic resumed from elsewhere, which the
        // hook never saw, gets no location rather than this one's.
        let resumed =
            std::panic::catch_unwind(|| std::panic::resume_unwind(Box::new("boom 7"))).unwrap_err();
        assert_eq!(
            describe(&*resumed),
            format!("boom 7, on {host} (pid {})", std::process::id())
        );
    }
}
