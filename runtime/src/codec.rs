//! Payload encoding (serde + postcard) and the per-thread context that
//! encoding and decoding run in.
//!
//! Proxies and futures are serializable, and both need more than their
//! bytes: a decoded proxy must be bound to the local runtime, and an
//! unresolved future that is encoded into a message must be wired so its
//! value follows the message to its destination (automatic continuation).
//! The runtime encodes and decodes synchronously, inside [`encode_in`] and
//! [`decode_in`], which install that context for the duration of the call.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use std::sync::Arc;

use crate::connection::Route;
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
}

impl<T: Serialize + ?Sized> Encode for T {
    fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }
}

pub(crate) struct EncodeCx {
    /// Where the encoded bytes go; `None` for a local delivery.
    pub(crate) route: Option<Route>,
    /// Futures met while encoding.
    pub(crate) futures: Vec<Arc<Slot>>,
}

struct DecodeCx {
    runtime: RtRef,
    /// Slots of the futures the payload embeds, held by the message.
    held: Vec<Arc<Slot>>,
}

thread_local! {
    static ENCODE: RefCell<Option<EncodeCx>> = const { RefCell::new(None) };
    static DECODE: RefCell<Option<DecodeCx>> = const { RefCell::new(None) };
}

/// Encodes `value` for `route`; returns the bytes and the futures it holds.
pub(crate) fn encode_in(
    route: Option<Route>,
    value: &(impl Encode + ?Sized),
) -> Result<(Vec<u8>, Vec<Arc<Slot>>), postcard::Error> {
    let previous = ENCODE.with(|c| {
        c.borrow_mut().replace(EncodeCx {
            route,
            futures: Vec::new(),
        })
    });
    let bytes = value.encode();
    let cx = ENCODE.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous));
    let futures = cx.map(|cx| cx.futures).unwrap_or_default();
    Ok((bytes?, futures))
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
    let cx = DecodeCx {
        runtime,
        held: held.to_vec(),
    };
    let previous = DECODE.with(|c| c.borrow_mut().replace(cx));
    let out = decode(bytes);
    DECODE.with(|c| *c.borrow_mut() = previous);
    out
}

/// Runs `f` (which decodes) with proxies and futures bound to `runtime`.
pub(crate) fn within<R>(runtime: &Runtime, f: impl FnOnce() -> R) -> R {
    let cx = DecodeCx {
        runtime: runtime.handle(),
        held: Vec::new(),
    };
    let previous = DECODE.with(|c| c.borrow_mut().replace(cx));
    let out = f();
    DECODE.with(|c| *c.borrow_mut() = previous);
    out
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
