//! Journaled effects: what a protected object does that is not
//! deterministic — reading the clock, drawing a random number, reading a
//! file, calling a service outside the deployment — done once, its result
//! made durable, and given back as it was when a recovery serves the
//! request again.
//!
//! ```ignore
//! pub async fn draw(&mut self) -> Result<u64, actogrid::JournalError> {
//!     let n = actogrid::journaled(|| fastrand::u64(..)).await?;
//!     self.drawn.push(n);
//!     Ok(n)
//! }
//! ```
//!
//! The result is durable in the FT server's store before the method goes
//! on, so nothing the object does afterwards — its reply included — can
//! depend on a value a recovery would not find again (output commit). The
//! `n`-th journaled effect of a request is recorded as that request's
//! `n`-th: a method must call them in the same order each time (as it
//! does, being otherwise deterministic). Outside a protected object,
//! `journaled` just runs the closure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::server::{Shared, Write};
use crate::store::{ObjectKey, ReplyId};

/// One journaled effect: the `index`-th of request `seq` of `sender` to
/// `object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EffectId {
    /// The object.
    pub object: u64,
    /// The request's sender.
    pub sender: u64,
    /// Its sequence number.
    pub seq: u64,
    /// The effect's place among the request's effects, from 0.
    pub index: u32,
}

/// Why a journaled effect's result is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// Its result could not be made durable: the object must not go on
    /// with it (a recovery would not find it again).
    #[error(
        "the result of a journaled effect of object {object:#x} could not be made durable: {reason}"
    )]
    NotDurable {
        /// The object.
        object: u64,
        /// Why.
        reason: String,
    },
    /// The result recorded for it does not decode as the type asked: the
    /// method does not ask for the same effects in the same order again.
    #[error(
        "the result journaled for effect {index} of request #{seq} of {sender:#x} to object {object:#x} does not decode as this type ({reason}): the method must ask for its journaled effects in the same order each time"
    )]
    Mismatch {
        /// The object.
        object: u64,
        /// The request's sender.
        sender: u64,
        /// Its sequence number.
        seq: u64,
        /// The effect's place.
        index: u32,
        /// Why it does not decode.
        reason: String,
    },
    /// Its result does not encode.
    #[error("the result of a journaled effect does not encode: {0}")]
    Encode(String),
}

/// Marks a reply record as a journaled result: its "sender" key is the
/// request's sender followed by the effect's index (12 bytes, where a
/// reply's is 8).
const EFFECT_KEY_LEN: usize = 12;

/// Where `effect` is kept in the store, among its object's replies.
pub(crate) fn effect_reply_id(effect: &EffectId) -> ReplyId {
    let mut sender = effect.sender.to_be_bytes().to_vec();
    sender.extend_from_slice(&effect.index.to_be_bytes());
    ReplyId {
        sender: ObjectKey::new(sender),
        sequence: effect.seq,
    }
}

/// Whether a reply record's sender key is a journaled effect's.
pub(crate) fn is_effect_key(sender: &ObjectKey) -> bool {
    sender.as_bytes().len() == EFFECT_KEY_LEN
}

/// The protection of each protected object of this process, and the next
/// effect index of each request being served.
#[derive(Default)]
struct Registry {
    protected: HashMap<u64, Weak<Shared>>,
    next: HashMap<(u64, u64, u64), u32>,
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// `object` is protected here by `shared`.
pub(crate) fn protect(object: u64, shared: &Arc<Shared>) {
    registry().protected.insert(object, Arc::downgrade(shared));
}

/// `object` left `shared`'s node.
pub(crate) fn unprotect(object: u64, shared: &Arc<Shared>) {
    let mut r = registry();
    if r.protected
        .get(&object)
        .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(shared)))
    {
        r.protected.remove(&object);
    }
}

/// Requests of this process with journaled effects counted (so that the
/// requests without, nearly all of them, take no lock when served).
static COUNTING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Request `seq` of `sender` to `object` was served: its effects are
/// counted afresh if it is served again.
pub(crate) fn served(object: u64, sender: u64, seq: u64) {
    if COUNTING.load(std::sync::atomic::Ordering::Acquire) == 0 {
        return;
    }
    let mut r = registry();
    if r.next.remove(&(object, sender, seq)).is_some() {
        COUNTING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Runs `effect` once, and gives its result back, as it was, whenever a
/// recovery serves the calling request again (see the [module
/// documentation](self)). Call it from a method of an active object; it
/// just runs `effect` outside a protected one.
pub async fn journaled<T, F>(effect: F) -> Result<T, JournalError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    journaled_async(|| std::future::ready(effect())).await
}

/// [`journaled`] for an effect that awaits: a request to a service
/// outside the deployment (HTTP, a database), a file read with tokio. Its
/// future runs once; its output is recorded and given back on a replay.
///
/// ```ignore
/// pub async fn quote(&mut self, symbol: String) -> Result<f64, Error> {
///     let price = actogrid::journaled_async(|| async move {
///         prices::fetch(&symbol).await
///     })
///     .await??;
///     self.quotes.push(price);
///     Ok(price)
/// }
/// ```
///
/// Not for calls to active objects: those are messages the protocol
/// logs and numbers itself (a replay makes them again, and the object
/// called answers with the reply it gave); skipped on a replay, the calls
/// after it would be numbered otherwise.
pub async fn journaled_async<T, F, Fut>(effect: F) -> Result<T, JournalError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let Some(request) = actogrid_runtime::intercept::serving_request() else {
        return Ok(effect().await);
    };
    let protected = registry()
        .protected
        .get(&request.object)
        .and_then(Weak::upgrade);
    let Some(shared) = protected else {
        return Ok(effect().await);
    };
    let index = {
        let mut r = registry();
        let next = r
            .next
            .entry((request.object, request.sender, request.seq))
            .or_insert_with(|| {
                COUNTING.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                0
            });
        let index = *next;
        *next += 1;
        index
    };
    let id = EffectId {
        object: request.object,
        sender: request.sender,
        seq: request.seq,
        index,
    };
    if request.replayed
        && let Some(bytes) = shared.link.effect(id).await
    {
        return postcard::from_bytes(&bytes).map_err(|e| JournalError::Mismatch {
            object: id.object,
            sender: id.sender,
            seq: id.seq,
            index,
            reason: e.to_string(),
        });
    }
    // First done (or never made durable before the runtime died): done
    // now, once the request it serves is logged (the request is served
    // while its log entry is written).
    actogrid_runtime::intercept::released()
        .await
        .map_err(|reason| JournalError::NotDurable {
            object: request.object,
            reason,
        })?;
    let value = effect().await;
    let bytes = postcard::to_allocvec(&value).map_err(|e| JournalError::Encode(e.to_string()))?;
    let at = if request.replayed {
        0
    } else {
        shared
            .objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&request.object)
            .and_then(|e| e.serving)
            .filter(|(sender, seq, _)| *sender == request.sender && *seq == request.seq)
            .map_or(0, |(_, _, at)| at)
    };
    shared
        .link
        .write(Write::Effect {
            effect: id,
            at,
            value: bytes,
        })
        .await
        .map_err(|reason| JournalError::NotDurable {
            object: id.object,
            reason,
        })?;
    Ok(value)
}
