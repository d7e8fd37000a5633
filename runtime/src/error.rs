//! Errors: [`CallError`] for what arrives inside a future, [`Error`] for
//! everything else the runtime reports.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The error type of a method that cannot fail: it has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoError {}

impl fmt::Display for NoError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for NoError {}

/// An error that crossed the network as text: what a method returning
/// `anyhow::Result<T>`, `std::io::Result<T>` or `Result<T, Box<dyn Error>>`
/// failed with, as its caller receives it.
///
/// Such error types are not serializable, so `#[active]` sends their text
/// instead: the error's own message and the messages of its causes, in
/// order (what `anyhow` prints for `{:#}`). The proxy method returns
/// `Future<T, RemoteError>`.
///
/// `Display` prints the message followed by its causes, separated by
/// `": "`, so that the whole chain shows wherever the error is printed;
/// for the same reason [`source`](std::error::Error::source) is `None`.
/// [`RemoteError::message`] and [`RemoteError::causes`] give the parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    message: String,
    causes: Vec<String>,
}

impl RemoteError {
    /// An error with this message and no cause.
    pub fn new(message: impl Into<String>) -> Self {
        RemoteError {
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// The text of `error` and of each of its sources, in order.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut causes = Vec::new();
        let mut next = error.source();
        while let Some(cause) = next {
            causes.push(cause.to_string());
            next = cause.source();
        }
        RemoteError {
            message: error.to_string(),
            causes,
        }
    }

    /// The same error, as the cause of a new message (what anyhow's
    /// `context` does).
    pub fn context(self, message: impl Into<String>) -> Self {
        let mut causes = Vec::with_capacity(self.causes.len() + 1);
        causes.push(self.message);
        causes.extend(self.causes);
        RemoteError {
            message: message.into(),
            causes,
        }
    }

    /// The error's own message, without its causes.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The messages of its causes, the closest first.
    pub fn causes(&self) -> impl ExactSizeIterator<Item = &str> {
        self.causes.iter().map(String::as_str)
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}

impl From<std::io::Error> for RemoteError {
    fn from(error: std::io::Error) -> Self {
        RemoteError::from_error(&error)
    }
}

impl From<Box<dyn std::error::Error + Send + Sync>> for RemoteError {
    fn from(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        RemoteError::from_error(&*error)
    }
}

impl From<String> for RemoteError {
    fn from(message: String) -> Self {
        RemoteError::new(message)
    }
}

impl From<&str> for RemoteError {
    fn from(message: &str) -> Self {
        RemoteError::new(message)
    }
}

/// Why a call did not produce its value. Every kind is distinct, so a
/// caller can tell a method's own error from a panic, a dead node or a
/// timeout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E = NoError> {
    /// The method returned `Err(e)`.
    #[error("the method returned an error: {0}")]
    Method(E),
    /// The method panicked; the object keeps serving its next requests.
    #[error("`{method}` panicked: {message}")]
    Panicked {
        /// The method called (`create` for a constructor).
        method: &'static str,
        /// The panic's text, then where it happened: `…, at
        /// src/lib.rs:12:9 on host (pid 4242)`.
        message: String,
    },
    /// The runtime hosting the object died or became unreachable before
    /// the reply arrived.
    #[error("`{method}`: {reason}")]
    NodeDied {
        /// The method called.
        method: &'static str,
        /// What was noticed (address, connection error, silence).
        reason: String,
    },
    /// No reply within the timeout; the call may still be served.
    #[error("`{method}` timed out after {after:?}")]
    Timeout {
        /// The method called.
        method: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// An active object awaited the result of a call to itself while
    /// serving a request: that call can only be served after the current
    /// request returns, so waiting would never end.
    #[error(
        "deadlock: active object {object:#x} awaits its own call to `{method}`, which it can only \
         serve after the current request returns; return the future instead of awaiting it, or \
         mark `{method}` #[oneway]"
    )]
    Deadlock {
        /// The object waiting on itself.
        object: u64,
        /// The method of the call to itself.
        method: &'static str,
    },
    /// The object does not exist (never did, or was dropped).
    #[error("{reason}")]
    NoSuchObject {
        /// Which object, where.
        reason: String,
    },
    /// The request was refused: it did not decode, the type is not
    /// registered there, the state cannot migrate, and so on.
    #[error("`{method}` refused: {reason}")]
    Refused {
        /// The method or operation called.
        method: &'static str,
        /// Why.
        reason: String,
    },
    /// The reply did not decode as the expected type.
    #[error("the reply to `{method}` does not decode: {reason}")]
    Decode {
        /// The method called.
        method: &'static str,
        /// The decoder's message.
        reason: String,
    },
}

/// The kind of a [`CallError`], without its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`CallError::Method`].
    Method,
    /// [`CallError::Panicked`].
    Panicked,
    /// [`CallError::NodeDied`].
    NodeDied,
    /// [`CallError::Timeout`].
    Timeout,
    /// [`CallError::Deadlock`].
    Deadlock,
    /// [`CallError::NoSuchObject`].
    NoSuchObject,
    /// [`CallError::Refused`].
    Refused,
    /// [`CallError::Decode`].
    Decode,
}

impl<E> CallError<E> {
    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CallError::Method(_) => ErrorKind::Method,
            CallError::Panicked { .. } => ErrorKind::Panicked,
            CallError::NodeDied { .. } => ErrorKind::NodeDied,
            CallError::Timeout { .. } => ErrorKind::Timeout,
            CallError::Deadlock { .. } => ErrorKind::Deadlock,
            CallError::NoSuchObject { .. } => ErrorKind::NoSuchObject,
            CallError::Refused { .. } => ErrorKind::Refused,
            CallError::Decode { .. } => ErrorKind::Decode,
        }
    }

    /// The same error with the method's error type mapped.
    pub fn map_method<F>(self, f: impl FnOnce(E) -> F) -> CallError<F> {
        match self {
            CallError::Method(e) => CallError::Method(f(e)),
            CallError::Panicked { method, message } => CallError::Panicked { method, message },
            CallError::NodeDied { method, reason } => CallError::NodeDied { method, reason },
            CallError::Timeout { method, after } => CallError::Timeout { method, after },
            CallError::Deadlock { object, method } => CallError::Deadlock { object, method },
            CallError::NoSuchObject { reason } => CallError::NoSuchObject { reason },
            CallError::Refused { method, reason } => CallError::Refused { method, reason },
            CallError::Decode { method, reason } => CallError::Decode { method, reason },
        }
    }
}

impl CallError<NoError> {
    /// Widens an error of a method that cannot fail to any error type.
    pub fn widen<F>(self) -> CallError<F> {
        self.map_method(|e| match e {})
    }
}

/// Errors of the runtime itself: starting, connecting, naming.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener's address could not be read.
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    /// A URL or address could not be used.
    #[error("{0}")]
    Address(String),
    /// A proxy of one type was looked up as another.
    #[error("`{url}` is a `{found}`, not a `{expected}`")]
    WrongType {
        /// The URL looked up.
        url: String,
        /// The registered type.
        found: String,
        /// The type asked for.
        expected: &'static str,
    },
    /// A call made by the runtime failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
