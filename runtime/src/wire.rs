//! The wire: the generated protobuf frame and service of `wire.proto`, and
//! the hand-written encoding of the envelopes a frame batches (described
//! in `wire.proto`). Nothing outside this module and `connection` sees the
//! bytes.
//!
//! Envelopes are written field after field straight into a connection's
//! outgoing batch, and read back from the received batch without copying
//! payloads: no message structs, no encoded-length pass, no allocation for
//! an envelope that embeds no futures.

// The generated code is not ours to lint.
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod generated {
    tonic::include_proto!("actogrid.runtime.v1");
}

pub(crate) use generated::{EnrollReply, EnrollRequest, Frame, wire_client, wire_server};

use std::sync::Arc;

use bytes::Bytes;

use crate::future::{FutureId, Slot, Status};
pub(crate) use crate::sender::Claim;

/// Request flag: serve ahead of queued requests.
pub(crate) const FLAG_IMMEDIATE: u32 = 1;
/// Request flag: the payload names a node to migrate to.
pub(crate) const FLAG_MIGRATE: u32 = 2;
/// Request flag: the object ends once this request is served.
pub(crate) const FLAG_TERMINATE: u32 = 4;
/// Request flag: passed on by a forwarder (the object had moved), so its
/// sender is not the runtime at the other end of the connection.
pub(crate) const FLAG_FORWARDED: u32 = 8;
/// Request flag: served again from a log by a recovery
/// ([`crate::Node::recover`]). Set by the recovering runtime only, and
/// cleared from every request that arrives.
pub(crate) const FLAG_REPLAYED: u32 = 16;

const KIND_REQUEST: u8 = 1;
const KIND_REPLY: u8 = 2;
const KIND_VALUE: u8 = 3;
const KIND_PING: u8 = 4;
const KIND_CLAIM: u8 = 5;

pub(crate) fn status_code(s: Status) -> u64 {
    match s {
        Status::Ok => 0,
        Status::MethodError => 1,
        Status::Panicked => 2,
        Status::NoSuchObject => 3,
        Status::BadRequest => 4,
        Status::NodeDied => 5,
        Status::NotMigratable => 6,
        Status::Refused => 7,
    }
}

/// Decodes a status number; unknown numbers (a newer peer) are refusals.
pub(crate) fn status_of(n: u64) -> Status {
    match n {
        0 => Status::Ok,
        1 => Status::MethodError,
        2 => Status::Panicked,
        3 => Status::NoSuchObject,
        4 => Status::BadRequest,
        5 => Status::NodeDied,
        6 => Status::NotMigratable,
        _ => Status::Refused,
    }
}

// ----- encoding -----

/// Bytes a varint of `v` takes.
#[inline]
fn varint_len(v: u64) -> usize {
    // 1 byte per 7 significant bits (at least one).
    ((((v | 1).leading_zeros() ^ 63) * 9 + 73) / 64) as usize
}

#[inline]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn futures_len(futures: &[Arc<Slot>]) -> usize {
    varint_len(futures.len() as u64)
        + futures
            .iter()
            .map(|s| 8 + varint_len(s.id.number))
            .sum::<usize>()
}

fn put_future_id(buf: &mut Vec<u8>, id: FutureId) {
    buf.extend_from_slice(&id.origin.to_le_bytes());
    put_varint(buf, id.number);
}

fn put_futures(buf: &mut Vec<u8>, futures: &[Arc<Slot>]) {
    put_varint(buf, futures.len() as u64);
    for s in futures {
        put_future_id(buf, s.id);
    }
}

/// Starts an envelope whose kind and body take `len` bytes.
#[inline]
fn put_head(buf: &mut Vec<u8>, kind: u8, len: usize) {
    buf.reserve(len + 10);
    put_varint(buf, len as u64);
    buf.push(kind);
}

/// What a request envelope says besides its payload.
pub(crate) struct RequestHead<'a> {
    pub(crate) call_id: u64,
    pub(crate) target: u64,
    pub(crate) sender: u64,
    pub(crate) seq: u64,
    pub(crate) flags: u32,
    pub(crate) header: &'a [u8],
    pub(crate) futures: &'a [Arc<Slot>],
}

/// Appends a request envelope.
pub(crate) fn put_request(buf: &mut Vec<u8>, head: &RequestHead<'_>, payload: &[u8]) {
    let len = 1
        + varint_len(head.call_id)
        + 16
        + varint_len(head.seq)
        + varint_len(u64::from(head.flags))
        + varint_len(head.header.len() as u64)
        + head.header.len()
        + futures_len(head.futures)
        + payload.len();
    put_head(buf, KIND_REQUEST, len);
    put_varint(buf, head.call_id);
    buf.extend_from_slice(&head.target.to_le_bytes());
    buf.extend_from_slice(&head.sender.to_le_bytes());
    put_varint(buf, head.seq);
    put_varint(buf, u64::from(head.flags));
    put_bytes(buf, head.header);
    put_futures(buf, head.futures);
    buf.extend_from_slice(payload);
}

/// Appends a reply envelope; `moved` is the object's id and new address
/// when a forwarder relays the reply.
pub(crate) fn put_reply(
    buf: &mut Vec<u8>,
    call_id: u64,
    status: Status,
    header: &[u8],
    futures: &[Arc<Slot>],
    moved: Option<(u64, &str)>,
    payload: &[u8],
) {
    let moved_len = match moved {
        Some((_, to)) if !to.is_empty() => varint_len(to.len() as u64) + to.len() + 8,
        _ => 1,
    };
    let len = 1
        + varint_len(call_id)
        + varint_len(status_code(status))
        + varint_len(header.len() as u64)
        + header.len()
        + futures_len(futures)
        + moved_len
        + payload.len();
    put_head(buf, KIND_REPLY, len);
    put_varint(buf, call_id);
    put_varint(buf, status_code(status));
    put_bytes(buf, header);
    put_futures(buf, futures);
    match moved {
        Some((object, to)) if !to.is_empty() => {
            put_bytes(buf, to.as_bytes());
            buf.extend_from_slice(&object.to_le_bytes());
        }
        _ => put_varint(buf, 0),
    }
    buf.extend_from_slice(payload);
}

/// Appends a future-value envelope.
pub(crate) fn put_value(
    buf: &mut Vec<u8>,
    id: FutureId,
    status: Status,
    futures: &[Arc<Slot>],
    payload: &[u8],
) {
    let len = 1
        + 8
        + varint_len(id.number)
        + varint_len(status_code(status))
        + futures_len(futures)
        + payload.len();
    put_head(buf, KIND_VALUE, len);
    put_future_id(buf, id);
    put_varint(buf, status_code(status));
    put_futures(buf, futures);
    buf.extend_from_slice(payload);
}

/// Appends a claim envelope: the sender's proof that it is on this
/// connection's runtime (see `sender`).
pub(crate) fn put_claim(buf: &mut Vec<u8>, claim: &Claim) {
    put_head(
        buf,
        KIND_CLAIM,
        1 + 8 + crate::sender::PUBLIC_KEY_LEN + crate::sender::SIGNATURE_LEN,
    );
    buf.extend_from_slice(&claim.sender.to_le_bytes());
    buf.extend_from_slice(&claim.public_key);
    buf.extend_from_slice(&claim.signature);
}

/// Appends a ping envelope.
pub(crate) fn put_ping(buf: &mut Vec<u8>) {
    put_head(buf, KIND_PING, 1);
}

// ----- decoding -----

/// A request, as received.
pub(crate) struct Request {
    pub(crate) call_id: u64,
    pub(crate) target: u64,
    pub(crate) sender: u64,
    pub(crate) seq: u64,
    pub(crate) flags: u32,
    pub(crate) header: Bytes,
    pub(crate) futures: Vec<FutureId>,
    pub(crate) payload: Bytes,
}

/// A reply, as received.
pub(crate) struct Reply {
    pub(crate) call_id: u64,
    pub(crate) status: Status,
    /// The protocol header the replier's interceptors piggybacked.
    pub(crate) header: Bytes,
    pub(crate) futures: Vec<FutureId>,
    /// The object's id and new address, when relayed by a forwarder.
    pub(crate) moved: Option<(u64, String)>,
    pub(crate) payload: Bytes,
}

/// A forwarded future value, as received.
pub(crate) struct Value {
    pub(crate) id: FutureId,
    pub(crate) status: Status,
    pub(crate) futures: Vec<FutureId>,
    pub(crate) payload: Bytes,
}

/// One received envelope.
pub(crate) enum Envelope {
    Request(Request),
    Reply(Reply),
    Value(Value),
    /// A sender's proof (see `sender`).
    Claim(Claim),
    /// A ping, or an envelope of a kind this runtime does not know.
    Other,
}

/// The length of the envelope at the start of `bytes` (after its length
/// prefix) and the size of that prefix, when readable.
pub(crate) fn envelope_len(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, i + 1));
        }
    }
    None
}

/// What is wrong with a malformed batch.
#[derive(Debug)]
pub(crate) struct Malformed(&'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Reads the envelopes of a received batch, in order.
pub(crate) struct Envelopes {
    batch: Bytes,
    pos: usize,
}

impl Envelopes {
    pub(crate) fn new(batch: Bytes) -> Envelopes {
        Envelopes { batch, pos: 0 }
    }
}

impl Iterator for Envelopes {
    type Item = Result<Envelope, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.batch.get(self.pos..).filter(|r| !r.is_empty())?;
        let mut r = Reader {
            batch: &self.batch,
            base: self.pos,
            body: rest,
            pos: 0,
            error: TRUNCATED,
        };
        let parsed = r.envelope();
        Some(match parsed {
            Some(envelope) => {
                self.pos += r.body.len();
                Ok(envelope)
            }
            None => {
                // After an error the rest of the batch cannot be trusted.
                self.pos = self.batch.len();
                Err(Malformed(r.error))
            }
        })
    }
}

const TRUNCATED: &str = "an envelope is truncated";

/// A cursor over one envelope of a batch. Its readers return `None` when
/// the envelope is malformed, and say why in `error`.
struct Reader<'a> {
    batch: &'a Bytes,
    /// Where `body` starts in `batch`.
    base: usize,
    /// The rest of the batch, then the envelope once its length is read.
    body: &'a [u8],
    pos: usize,
    error: &'static str,
}

impl Reader<'_> {
    fn envelope(&mut self) -> Option<Envelope> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.body.len())?;
        self.body = &self.body[..end];
        let kind = self.byte()?;
        Some(match kind {
            KIND_REQUEST => {
                let call_id = self.varint()?;
                let target = self.u64()?;
                let sender = self.u64()?;
                let seq = self.varint()?;
                let Ok(flags) = u32::try_from(self.varint()?) else {
                    return self.fail("request flags out of range");
                };
                let flags = flags & !FLAG_REPLAYED;
                let header = self.bytes()?;
                let futures = self.futures()?;
                Envelope::Request(Request {
                    call_id,
                    target,
                    sender,
                    seq,
                    flags,
                    header,
                    futures,
                    payload: self.rest(),
                })
            }
            KIND_REPLY => {
                let call_id = self.varint()?;
                let status = status_of(self.varint()?);
                let header = self.bytes()?;
                let futures = self.futures()?;
                let moved_to = self.bytes()?;
                let moved = if moved_to.is_empty() {
                    None
                } else {
                    let object = self.u64()?;
                    let Ok(to) = String::from_utf8(moved_to.to_vec()) else {
                        return self.fail("a moved-to address is not UTF-8");
                    };
                    Some((object, to))
                };
                Envelope::Reply(Reply {
                    call_id,
                    status,
                    header,
                    futures,
                    moved,
                    payload: self.rest(),
                })
            }
            KIND_VALUE => {
                let id = self.future_id()?;
                let status = status_of(self.varint()?);
                let futures = self.futures()?;
                Envelope::Value(Value {
                    id,
                    status,
                    futures,
                    payload: self.rest(),
                })
            }
            KIND_CLAIM => {
                let sender = self.u64()?;
                let public_key = self.array()?;
                let signature = self.array()?;
                Envelope::Claim(Claim {
                    sender,
                    public_key,
                    signature,
                })
            }
            _ => Envelope::Other,
        })
    }

    #[cold]
    fn fail<T>(&mut self, why: &'static str) -> Option<T> {
        self.error = why;
        None
    }

    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let b = *self.body.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    #[inline]
    fn varint(&mut self) -> Option<u64> {
        // Most varints on the wire (lengths, sequence numbers, flags) take
        // one byte.
        let first = self.byte()?;
        if first < 0x80 {
            return Some(u64::from(first));
        }
        let mut value = u64::from(first & 0x7f);
        for shift in (7..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(value);
            }
        }
        self.fail("a varint is longer than 10 bytes")
    }

    #[inline]
    fn u64(&mut self) -> Option<u64> {
        let bytes: [u8; 8] = self.body.get(self.pos..self.pos + 8)?.try_into().ok()?;
        self.pos += 8;
        Some(u64::from_le_bytes(bytes))
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes: [u8; N] = self.body.get(self.pos..self.pos + N)?.try_into().ok()?;
        self.pos += N;
        Some(bytes)
    }

    /// `len` bytes at the cursor, sharing the batch's buffer.
    fn slice(&mut self, len: usize) -> Option<Bytes> {
        if len == 0 {
            return Some(Bytes::new());
        }
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.body.len())?;
        let bytes = self.batch.slice(self.base + self.pos..self.base + end);
        self.pos = end;
        Some(bytes)
    }

    fn bytes(&mut self) -> Option<Bytes> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.slice(len)
    }

    fn future_id(&mut self) -> Option<FutureId> {
        let origin = self.u64()?;
        let number = self.varint()?;
        Some(FutureId { origin, number })
    }

    fn futures(&mut self) -> Option<Vec<FutureId>> {
        let count = self.varint()?;
        if count == 0 {
            return Some(Vec::new());
        }
        // Each id takes at least 9 bytes: a count beyond that is a lie.
        if count > ((self.body.len() - self.pos) / 9) as u64 {
            return None;
        }
        (0..count).map(|_| self.future_id()).collect()
    }

    /// The rest of the envelope: its payload.
    fn rest(&mut self) -> Bytes {
        let len = self.body.len() - self.pos;
        // Cannot fail: the rest is within the envelope.
        self.slice(len).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(origin: u64, number: u64) -> Arc<Slot> {
        Slot::new(
            FutureId { origin, number },
            None,
            false,
            std::sync::Weak::new(),
        )
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [(0, 1), (127, 1), (128, 2), (16383, 2), (16384, 3)] {
            assert_eq!(varint_len(v), n, "{v}");
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), n, "{v}");
        }
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn envelopes_read_back_as_written() {
        let futures = [slot(u64::MAX, 300), slot(5, 1)];
        let mut buf = Vec::new();
        put_request(
            &mut buf,
            &RequestHead {
                call_id: 1 << 33 | 7,
                target: 0xdead_beef_0000_0001,
                sender: 42,
                seq: 1000,
                flags: FLAG_IMMEDIATE,
                header: b"hdr",
                futures: &futures,
            },
            b"args",
        );
        put_ping(&mut buf);
        put_reply(&mut buf, 9, Status::MethodError, &[], &[], None, b"");
        put_reply(
            &mut buf,
            10,
            Status::Ok,
            b"stamp",
            &futures[1..],
            Some((77, "h:1")),
            b"v",
        );
        put_value(
            &mut buf,
            FutureId {
                origin: 3,
                number: 4,
            },
            Status::NodeDied,
            &[],
            b"why",
        );
        let all: Vec<Envelope> = Envelopes::new(buf.into())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all.len(), 5);
        let Envelope::Request(r) = &all[0] else {
            panic!("not a request")
        };
        assert_eq!(
            (r.call_id, r.target, r.sender, r.seq, r.flags),
            (1 << 33 | 7, 0xdead_beef_0000_0001, 42, 1000, FLAG_IMMEDIATE)
        );
        assert_eq!(&r.header[..], b"hdr");
        assert_eq!(&r.payload[..], b"args");
        assert_eq!(
            r.futures,
            vec![
                FutureId {
                    origin: u64::MAX,
                    number: 300
                },
                FutureId {
                    origin: 5,
                    number: 1
                }
            ]
        );
        assert!(matches!(all[1], Envelope::Other));
        let Envelope::Reply(r) = &all[2] else {
            panic!("not a reply")
        };
        assert_eq!((r.call_id, r.status), (9, Status::MethodError));
        assert!(r.payload.is_empty() && r.futures.is_empty() && r.moved.is_none());
        assert!(r.header.is_empty());
        let Envelope::Reply(r) = &all[3] else {
            panic!("not a reply")
        };
        assert_eq!(r.moved, Some((77, "h:1".to_owned())));
        assert_eq!(&r.header[..], b"stamp");
        assert_eq!(r.futures.len(), 1);
        assert_eq!(&r.payload[..], b"v");
        let Envelope::Value(v) = &all[4] else {
            panic!("not a value")
        };
        assert_eq!((v.id.origin, v.id.number), (3, 4));
        assert_eq!(v.status, Status::NodeDied);
        assert_eq!(&v.payload[..], b"why");
    }

    #[test]
    fn truncated_batches_are_malformed() {
        let mut buf = Vec::new();
        put_reply(&mut buf, 9, Status::Ok, b"h", &[], None, b"value");
        for cut in 1..buf.len() {
            let mut envelopes = Envelopes::new(Bytes::copy_from_slice(&buf[..cut]));
            assert!(matches!(envelopes.next(), Some(Err(_))), "cut at {cut}");
            assert!(envelopes.next().is_none());
        }
        // A lying futures count inside a well-delimited envelope.
        let bad = [4u8, KIND_VALUE, 0, 0, 0];
        assert!(matches!(
            Envelopes::new(Bytes::copy_from_slice(&bad)).next(),
            Some(Err(_))
        ));
    }
}
