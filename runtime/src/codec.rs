//! Payload encoding (serde + postcard) and the per-thread context that
//! encoding and decoding run in.
//!
//! Proxies and futures are serializable, and both need more than their
//! bytes: a decoded proxy must be bound to the local runtime, and an
//! unresolved future that is encoded into a message must be wired so its
//! value follows the message to its destination (automatic continuation).
//! The runtime encodes and decodes synchronously, inside [`encode_into`]
//! (or [`encode_in`]) and [`decode_in`], which install that context for the
//! duration of the call; encoding collects the futures met, and the sender
//! wires them once the message is queued.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use std::sync::Arc;

use crate::future::Slot;
use crate::runtime::{RtRef, Runtime};

/// A payload that does not decode as the type the receiver expects.
#[derive(Debug, Clone, thiserror::Error)]
#[error("payload does not decode: {0}")]
pub struct DecodeError(String);

/// A value the runtime can encode: any `Serialize` value, type-erased.
pub trait Encode {
    /// Encodes the value with postcard.
    fn encode(&self) -> Result<Vec<u8>, postcard::Error>;

    /// Encodes the value with postcard at the end of `out`. On error,
    /// `out` may hold part of the value after its original length.
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
        out.extend_from_slice(&self.encode()?);
        Ok(())
    }

    /// The length of the value encoded with postcard, without keeping
    /// the bytes.
    fn encoded_len(&self) -> Result<usize, postcard::Error> {
        Ok(self.encode()?.len())
    }
}

impl<T: Serialize + ?Sized> Encode for T {
    fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
        postcard::serialize_with_flavor(self, Append(out))
    }

    fn encoded_len(&self) -> Result<usize, postcard::Error> {
        postcard::serialize_with_flavor(self, Count(0))
    }
}

/// A postcard flavor counting bytes.
struct Count(usize);

impl postcard::ser_flavors::Flavor for Count {
    type Output = usize;

    #[inline]
    fn try_push(&mut self, _: u8) -> postcard::Result<()> {
        self.0 += 1;
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0 += data.len();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.0)
    }
}

thread_local! {
    /// A value is being measured (see [`encoded_len`]), not sent: the
    /// futures it holds are not published.
    static MEASURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The encoded length of `value`, measured for figures only: nothing it
/// holds is published or made a continuation, and a panic in its
/// `Serialize` is caught (`None`).
pub(crate) fn encoded_len(value: &(impl Encode + ?Sized)) -> Option<usize> {
    let previous = MEASURING.with(|m| m.replace(true));
    let len = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| value.encoded_len()));
    MEASURING.with(|m| m.set(previous));
    len.ok()?.ok()
}

/// Whether the value being encoded is only measured.
pub(crate) fn measuring() -> bool {
    MEASURING.with(std::cell::Cell::get)
}

/// A postcard flavor appending to a vector the caller keeps.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

pub(crate) struct EncodeCx {
    /// Futures met while encoding. Whoever sends the encoded bytes to
    /// another runtime makes that runtime a continuation of each, once the
    /// message is on its way: a value forwarded earlier could reach the
    /// other end before the message that makes it wait for the value.
    pub(crate) futures: Vec<Arc<Slot>>,
}

struct DecodeCx {
    runtime: RtRef,
    /// Slots of the futures the payload embeds, held by the message.
    held: Vec<Arc<Slot>>,
    /// The object whose state is decoded, when it is restored (or whose
    /// logged request is, when a recovery serves it again: `replay`).
    restoring: Option<u64>,
    replay: bool,
}

thread_local! {
    static ENCODE: RefCell<Option<EncodeCx>> = const { RefCell::new(None) };
    static DECODE: RefCell<Option<DecodeCx>> = const { RefCell::new(None) };
}

/// Encodes `value`; returns the bytes and the futures it holds.
pub(crate) fn encode_in(
    value: &(impl Encode + ?Sized),
) -> Result<(Vec<u8>, Vec<Arc<Slot>>), postcard::Error> {
    let mut bytes = Vec::new();
    match encode_into(value, &mut bytes) {
        Ok(futures) => Ok((bytes, futures)),
        Err(EncodeFailure::Error(e)) => Err(e),
        Err(EncodeFailure::Panic(panic)) => std::panic::resume_unwind(panic),
    }
}

/// Why a value did not encode.
pub(crate) enum EncodeFailure {
    /// Postcard refused it.
    Error(postcard::Error),
    /// Its `Serialize` implementation panicked.
    Panic(Box<dyn std::any::Any + Send>),
}

/// Encodes `value` at the end of `out` (which it leaves as it found it on
/// failure); returns the futures the value holds. A panic while encoding
/// is caught, so the context is restored.
pub(crate) fn encode_into(
    value: &(impl Encode + ?Sized),
    out: &mut Vec<u8>,
) -> Result<Vec<Arc<Slot>>, EncodeFailure> {
    let previous = ENCODE.with(|c| {
        c.borrow_mut().replace(EncodeCx {
            futures: Vec::new(),
        })
    });
    let start = out.len();
    let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        value.encode_into(&mut *out)
    }));
    let cx = ENCODE.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous));
    let futures = cx.map(|cx| cx.futures).unwrap_or_default();
    let failure = match encoded {
        Ok(Ok(())) => return Ok(futures),
        Ok(Err(e)) => EncodeFailure::Error(e),
        Err(panic) => EncodeFailure::Panic(panic),
    };
    out.truncate(start);
    Err(failure)
}

/// Runs `with` on a vector of this thread's, empty, and kept for the next
/// use (its capacity is reused). Nested uses each get their own.
pub(crate) fn with_scratch<R>(with: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buf = SCRATCH.with(std::cell::Cell::take);
    buf.clear();
    let out = with(&mut buf);
    // A huge one-off is not kept.
    if buf.capacity() <= 64 << 10 {
        SCRATCH.with(|s| s.set(buf));
    }
    out
}

/// Runs `f` with the encoding context, if encoding is under way.
pub(crate) fn with_encode_cx<R>(f: impl FnOnce(Option<&mut EncodeCx>) -> R) -> R {
    ENCODE.with(|c| {
        // A future's Serialize impl may not re-enter encoding, so the
        // borrow cannot be held twice.
        match c.try_borrow_mut() {
            Ok(mut guard) => f(guard.as_mut()),
            Err(_) => f(None),
        }
    })
}

/// Decodes `bytes` with proxies and futures bound to `runtime`.
pub(crate) fn decode_in<T: DeserializeOwned>(
    runtime: &Runtime,
    held: &[Arc<Slot>],
    bytes: &[u8],
) -> Result<T, DecodeError> {
    decode_with(runtime.handle(), held, bytes)
}

/// [`decode_in`], naming the runtime by its handle.
pub(crate) fn decode_with<T: DeserializeOwned>(
    runtime: RtRef,
    held: &[Arc<Slot>],
    bytes: &[u8],
) -> Result<T, DecodeError> {
    decode_within(
        DecodeCx {
            runtime,
            held: held.to_vec(),
            restoring: None,
            replay: false,
        },
        bytes,
    )
}

/// Decodes `bytes` in context `cx`.
fn decode_within<T: DeserializeOwned>(cx: DecodeCx, bytes: &[u8]) -> Result<T, DecodeError> {
    let previous = DECODE.with(|c| c.borrow_mut().replace(cx));
    let out = decode(bytes);
    DECODE.with(|c| *c.borrow_mut() = previous);
    out
}

/// Runs `f`, which decodes the state of `object` to restore it, with
/// proxies and futures bound to `runtime`. A future the state holds that
/// is still pending and that `runtime` does not know (announced by a
/// migration, or alive here) has nobody to bring its value: it decodes
/// failed (see [`restoring`]).
pub(crate) fn restoring_in<R>(runtime: &Runtime, object: u64, f: impl FnOnce() -> R) -> R {
    let cx = DecodeCx {
        runtime: runtime.handle(),
        held: Vec::new(),
        restoring: Some(object),
        replay: false,
    };
    let previous = DECODE.with(|c| c.borrow_mut().replace(cx));
    let out = f();
    DECODE.with(|c| *c.borrow_mut() = previous);
    out
}

/// Decodes the arguments of a request `object` serves again from its log
/// (a recovery): like [`decode_in`], except that a future they hold which
/// is still pending and unknown here decodes failed, as in a restored
/// checkpoint (see [`restoring`]).
pub(crate) fn decode_replayed<T: DeserializeOwned>(
    runtime: &Runtime,
    held: &[Arc<Slot>],
    bytes: &[u8],
    object: u64,
) -> Result<T, DecodeError> {
    decode_within(
        DecodeCx {
            runtime: runtime.handle(),
            held: held.to_vec(),
            restoring: Some(object),
            replay: true,
        },
        bytes,
    )
}

/// Whether what is decoded is a request served again (see
/// [`decode_replayed`]).
pub(crate) fn replaying() -> bool {
    DECODE.with(|c| c.borrow().as_ref().is_some_and(|cx| cx.replay))
}

/// Decodes in whatever context is installed.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|e| DecodeError(e.to_string()))
}

/// The runtime that decoded values bind to, if decoding is under way.
pub(crate) fn decoding_runtime() -> Option<Runtime> {
    DECODE.with(|c| c.borrow().as_ref().and_then(|cx| cx.runtime.get()))
}

/// The decoding runtime and the slots the message holds.
pub(crate) fn decoding_cx() -> (Option<Runtime>, Vec<Arc<Slot>>) {
    DECODE.with(|c| match c.borrow().as_ref() {
        Some(cx) => (cx.runtime.get(), cx.held.clone()),
        None => (None, Vec::new()),
    })
}

/// The object whose state is being decoded to restore it, if any.
pub(crate) fn restoring() -> Option<u64> {
    DECODE.with(|c| c.borrow().as_ref().and_then(|cx| cx.restoring))
}
