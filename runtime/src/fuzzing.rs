//! Entry points for the fuzz targets of `fuzz/` into the wire's private
//! encoding: decode a received batch with every field copied out, encode
//! envelopes as a sender does, cut a batch into frames as the writer does.
//!
//! Compiled only for cargo-fuzz (which sets `cfg(fuzzing)`) and for this
//! crate's unit tests, which keep it from rotting. It is not an API: the
//! envelopes are plain data here so that a target outside the crate can
//! compare them, not types the runtime uses.

use std::sync::{Arc, Weak};

use bytes::Bytes;

use crate::future::{FutureId, Slot};
use crate::wire::{self, RequestHead};

/// An envelope as received, every field copied out. Future ids are
/// `(origin, number)`; statuses are their numbers on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope {
    /// A call.
    Request {
        /// Correlates the reply.
        call_id: u64,
        /// The object called.
        target: u64,
        /// Who calls.
        sender: u64,
        /// Per-(sender, target) sequence number.
        seq: u64,
        /// `FLAG_*` bits.
        flags: u32,
        /// A technical service's header.
        header: Vec<u8>,
        /// Futures embedded in the payload.
        futures: Vec<(u64, u64)>,
        /// The encoded arguments.
        payload: Vec<u8>,
    },
    /// The answer to a call.
    Reply {
        /// The call answered.
        call_id: u64,
        /// How it ended.
        status: u64,
        /// The protocol header the replier's interceptors piggybacked.
        header: Vec<u8>,
        /// Futures embedded in the payload.
        futures: Vec<(u64, u64)>,
        /// The object's id and new address, when relayed by a forwarder.
        moved: Option<(u64, String)>,
        /// The encoded value, error or message.
        payload: Vec<u8>,
    },
    /// A future's value, forwarded.
    Value {
        /// The future.
        future: (u64, u64),
        /// How it ended.
        status: u64,
        /// Futures embedded in the payload.
        futures: Vec<(u64, u64)>,
        /// The encoded value.
        payload: Vec<u8>,
    },
    /// A sender's proof that it is on the connection's runtime.
    Claim {
        /// The sender's id.
        sender: u64,
        /// Its public key.
        public_key: [u8; 32],
        /// Its signature of the host it is on.
        signature: Vec<u8>,
    },
    /// A ping, or an envelope of a kind this runtime does not know.
    Other,
}

/// Decodes a received batch as a connection does: its envelopes in order,
/// up to and including the first malformed one (the decoder stops there).
pub fn decode(batch: &[u8]) -> Vec<Result<Envelope, String>> {
    let ids = |ids: Vec<FutureId>| ids.into_iter().map(|id| (id.origin, id.number)).collect();
    wire::Envelopes::new(Bytes::copy_from_slice(batch))
        .map(|envelope| {
            Ok(match envelope.map_err(|e| e.to_string())? {
                wire::Envelope::Request(r) => Envelope::Request {
                    call_id: r.call_id,
                    target: r.target,
                    sender: r.sender,
                    seq: r.seq,
                    flags: r.flags,
                    header: r.header.to_vec(),
                    futures: ids(r.futures),
                    payload: r.payload.to_vec(),
                },
                wire::Envelope::Reply(r) => Envelope::Reply {
                    call_id: r.call_id,
                    status: wire::status_code(r.status),
                    header: r.header.to_vec(),
                    futures: ids(r.futures),
                    moved: r.moved,
                    payload: r.payload.to_vec(),
                },
                wire::Envelope::Value(v) => Envelope::Value {
                    future: (v.id.origin, v.id.number),
                    status: wire::status_code(v.status),
                    futures: ids(v.futures),
                    payload: v.payload.to_vec(),
                },
                wire::Envelope::Claim(c) => Envelope::Claim {
                    sender: c.sender,
                    public_key: c.public_key,
                    signature: c.signature.to_vec(),
                },
                wire::Envelope::Other => Envelope::Other,
            })
        })
        .collect()
}

/// Appends `envelope` to `batch` as a sender does (`Other` as a ping; an
/// unknown status number as the status it decodes to).
pub fn encode(batch: &mut Vec<u8>, envelope: &Envelope) {
    // The encoders take the slots of embedded futures; only their ids are
    // written.
    let slots = |ids: &[(u64, u64)]| -> Vec<Arc<Slot>> {
        ids.iter()
            .map(|&(origin, number)| {
                Slot::new(FutureId { origin, number }, None, false, Weak::new())
            })
            .collect()
    };
    match envelope {
        Envelope::Request {
            call_id,
            target,
            sender,
            seq,
            flags,
            header,
            futures,
            payload,
        } => wire::put_request(
            batch,
            &RequestHead {
                call_id: *call_id,
                target: *target,
                sender: *sender,
                seq: *seq,
                flags: *flags,
                header,
                futures: &slots(futures),
            },
            payload,
        ),
        Envelope::Reply {
            call_id,
            status,
            header,
            futures,
            moved,
            payload,
        } => wire::put_reply(
            batch,
            *call_id,
            wire::status_of(*status),
            header,
            &slots(futures),
            moved.as_ref().map(|(object, to)| (*object, to.as_str())),
            payload,
        ),
        Envelope::Value {
            future: (origin, number),
            status,
            futures,
            payload,
        } => wire::put_value(
            batch,
            FutureId {
                origin: *origin,
                number: *number,
            },
            wire::status_of(*status),
            &slots(futures),
            payload,
        ),
        Envelope::Claim {
            sender,
            public_key,
            signature,
        } => {
            let mut sig = [0u8; crate::sender::SIGNATURE_LEN];
            let n = signature.len().min(sig.len());
            sig[..n].copy_from_slice(&signature[..n]);
            wire::put_claim(
                batch,
                &wire::Claim {
                    sender: *sender,
                    public_key: *public_key,
                    signature: sig,
                },
            );
        }
        Envelope::Other => wire::put_ping(batch),
    }
}

/// Where the writer ends the first frame of `batch` when frames are at
/// most `max` bytes.
pub fn frame_end(batch: &[u8], max: usize) -> usize {
    crate::connection::frame_end(batch, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_encoded_decodes_back() {
        let sent = vec![
            Envelope::Request {
                call_id: 3,
                target: u64::MAX,
                sender: 1,
                seq: 300,
                flags: wire::FLAG_FORWARDED,
                header: b"h".to_vec(),
                futures: vec![(7, 1 << 40)],
                payload: b"args".to_vec(),
            },
            Envelope::Reply {
                call_id: 3,
                status: 1,
                header: b"s".to_vec(),
                futures: Vec::new(),
                moved: Some((9, "node:2".to_owned())),
                payload: Vec::new(),
            },
            Envelope::Other,
            Envelope::Claim {
                sender: 0x1234,
                public_key: [7; 32],
                signature: vec![9; 64],
            },
            Envelope::Value {
                future: (7, 1),
                status: 5,
                futures: vec![(1, 2), (3, 4)],
                payload: b"v".to_vec(),
            },
        ];
        let mut batch = Vec::new();
        for envelope in &sent {
            encode(&mut batch, envelope);
        }
        let received: Vec<Envelope> = decode(&batch).into_iter().map(Result::unwrap).collect();
        assert_eq!(received, sent);
        assert_eq!(frame_end(&batch, batch.len()), batch.len());
    }

    #[test]
    fn a_length_near_the_largest_number_is_cut_within_the_bytes() {
        // A length of 2^64 - 1 after a small envelope: the cutter stays
        // within the bytes instead of overflowing.
        let mut bytes = vec![0x01, 0x00];
        bytes.extend([0xff; 9]);
        bytes.push(0x01);
        bytes.extend([0u8; 20]);
        for max in [1, 2, 5, bytes.len() - 1] {
            let end = frame_end(&bytes, max);
            assert!(end > 0 && end <= bytes.len(), "max {max}: {end}");
        }
    }
}
