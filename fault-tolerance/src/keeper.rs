//! Replies kept for protected callers by the nodes that are not protected.
//!
//! A protected object recovered from a checkpoint makes the calls of the
//! requests it serves again with their original sequence numbers. A
//! protected object it called answers such a call with the reply it logged;
//! an unprotected one logs nothing, and would refuse a request it already
//! served. So every request a protected object sends carries a mark
//! ([`PROTECTED_SENDER`], written by [`crate::server::Protection`]), and
//! each node of the deployment's unprotected virtual nodes keeps, in
//! memory, the replies it gave to marked requests, to answer them again.
//!
//! Memory is bounded: the newest [`KEEP_REPLIES`] replies and
//! [`KEEP_BYTES`] bytes are kept, the oldest go first, and a reply larger
//! than a sixteenth of that is not kept. A replay reaching further back
//! than what is kept (many calls from one recovered object since its
//! checkpoint) is refused as before, and the recovery says it diverged.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use actogrid_runtime::intercept::{Delivery, Interceptor, Reply, ServeOutcome};
use futures::future::BoxFuture;

/// The header of the requests protected objects send.
pub const PROTECTED_SENDER: &[u8] = b"ft";

/// The most replies a node keeps.
pub const KEEP_REPLIES: usize = 65_536;

/// The most bytes of replies a node keeps.
pub const KEEP_BYTES: usize = 64 << 20;

/// A request: its object, its sender and its sequence number.
type Id = (u64, u64, u64);

/// The interceptor of unprotected nodes keeping the replies they give to
/// protected objects (see the [module documentation](self)).
#[derive(Debug, Default)]
pub struct ReplyKeeper {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    replies: HashMap<Id, Reply>,
    /// Oldest first, with their sizes.
    order: VecDeque<(Id, usize)>,
    bytes: usize,
}

impl ReplyKeeper {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many replies it keeps now.
    pub fn len(&self) -> usize {
        self.kept().replies.len()
    }

    /// Whether it keeps none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Interceptor for ReplyKeeper {
    fn replied(&self, delivery: &Delivery<'_>, outcome: ServeOutcome, payload: &[u8]) {
        if delivery.header != PROTECTED_SENDER
            || delivery.seq == 0
            || payload.len() > KEEP_BYTES / 16
        {
            return;
        }
        let id = (delivery.object, delivery.sender, delivery.seq);
        let reply = Reply {
            outcome,
            payload: payload.to_vec(),
        };
        let size = payload.len() + 64;
        let mut kept = self.kept();
        if kept.replies.contains_key(&id) {
            return;
        }
        kept.replies.insert(id, reply);
        kept.order.push_back((id, size));
        kept.bytes += size;
        while kept.replies.len() > KEEP_REPLIES || kept.bytes > KEEP_BYTES {
            let Some((old, size)) = kept.order.pop_front() else {
                break;
            };
            if kept.replies.remove(&old).is_some() {
                kept.bytes = kept.bytes.saturating_sub(size);
            }
        }
    }

    fn duplicate<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Option<Reply>> {
        let id = (delivery.object, delivery.sender, delivery.seq);
        let found = self.kept().replies.get(&id).cloned();
        Box::pin(async move { found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(seq: u64, header: &'static [u8]) -> Delivery<'static> {
        Delivery {
            object: 7,
            type_name: "T",
            sender: 9,
            seq,
            method: "m",
            immediate: false,
            header,
            payload: &[],
            replayed: false,
        }
    }

    fn answered(keeper: &ReplyKeeper, seq: u64) -> Option<Vec<u8>> {
        let d = delivery(seq, &[]);
        futures::executor::block_on(keeper.duplicate(&d)).map(|r| r.payload)
    }

    #[test]
    fn keeps_the_replies_to_protected_senders_only_and_within_bounds() {
        let keeper = ReplyKeeper::default();
        keeper.replied(&delivery(1, PROTECTED_SENDER), ServeOutcome::Value, b"one");
        keeper.replied(&delivery(2, b""), ServeOutcome::Value, b"two");
        assert_eq!(answered(&keeper, 1).as_deref(), Some(&b"one"[..]));
        assert_eq!(answered(&keeper, 2), None, "an unprotected sender's reply");
        // The first reply stays the one given.
        keeper.replied(
            &delivery(1, PROTECTED_SENDER),
            ServeOutcome::Value,
            b"again",
        );
        assert_eq!(answered(&keeper, 1).as_deref(), Some(&b"one"[..]));
        for seq in 2..KEEP_REPLIES as u64 + 11 {
            keeper.replied(&delivery(seq, PROTECTED_SENDER), ServeOutcome::Value, b"x");
        }
        assert_eq!(keeper.len(), KEEP_REPLIES);
        assert_eq!(answered(&keeper, 1), None, "the oldest went first");
        assert!(answered(&keeper, KEEP_REPLIES as u64 + 10).is_some());
        // Too large to keep.
        let big = vec![0u8; KEEP_BYTES / 16 + 1];
        keeper.replied(
            &delivery(u64::MAX, PROTECTED_SENDER),
            ServeOutcome::Value,
            &big,
        );
        assert_eq!(answered(&keeper, u64::MAX), None);
    }
}
