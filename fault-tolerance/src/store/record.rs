//! How a value is laid out in the store, and how it is checked when read.
//!
//! ```text
//! "AGFT" | format version: u16 LE | kind: u8 | numbers: u64 LE × n | payload | crc32: u32 LE
//! ```
//!
//! The checksum covers the record's key as well as everything before it in
//! the value, so a record that was altered, torn, or moved under another key
//! (another object, another position) fails to verify instead of being read
//! as someone else's state. The tag and the version come first so that a
//! value written by another program or another format is named as such
//! rather than as a checksum failure.

use std::fmt;

/// The layout of records and tables this build writes and reads.
pub(crate) const FORMAT_VERSION: u16 = 3;

const TAG: [u8; 4] = *b"AGFT";
const HEADER: usize = TAG.len() + 2 + 1;
const CHECKSUM: usize = 4;

/// What a record holds; stored in the record so that a value of one table
/// copied into another is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The store's own description (format version, the build that made it).
    Format = 0,
    /// An object's log bounds and incarnation.
    Head = 1,
    /// A checkpoint: its incarnation, and the object's state.
    Checkpoint = 2,
    /// A run of consecutive request-log entries of one object, keyed by the
    /// position of its first: their count, then each entry's incarnation,
    /// length and bytes (see [`push_entry`]).
    LogSegment = 3,
    /// A logged reply: the log position it belongs to, and its bytes.
    Reply = 4,
    /// The log records one batch staged, keyed by the place of its first:
    /// their count, then each one's `log` key and value (see
    /// [`push_staged`]).
    Staged = 5,
    /// Replies of one object recorded together, keyed by the object and a
    /// number: their count and the newest log position they belong to,
    /// then each one's sender, sequence, log position and bytes (see
    /// [`push_reply`]).
    Replies = 6,
}

/// Why a stored value could not be read as a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordFault {
    /// Shorter than the smallest record of its kind.
    Truncated {
        /// The value's length.
        len: usize,
        /// The least a record of this kind has.
        needed: usize,
    },
    /// Does not start with this store's tag: written by something else.
    Foreign,
    /// Written in another format version.
    Version {
        /// The version in the record.
        found: u16,
    },
    /// A record of another kind (a value copied between tables).
    Kind {
        /// The kind byte in the record.
        found: u8,
    },
    /// A record that must exist is absent: the log has a gap.
    Missing,
    /// The checksum matches but the content does not parse: written by a
    /// faulty build.
    Malformed,
    /// The checksum does not match: altered, torn, or moved under another key.
    Checksum {
        /// The checksum in the record.
        stored: u32,
        /// The checksum of what the record holds.
        computed: u32,
    },
}

impl fmt::Display for RecordFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordFault::Truncated { len, needed } => write!(
                f,
                "the record is truncated: {len} bytes, a record of this kind has at least {needed}"
            ),
            RecordFault::Foreign => f.write_str(
                "the value is not a record of an actogrid FT store (it lacks the AGFT tag)",
            ),
            RecordFault::Version { found } => write!(
                f,
                "the record has format version {found}, this build reads version {FORMAT_VERSION}"
            ),
            RecordFault::Kind { found } => write!(
                f,
                "the record is of another kind ({found}) than its table holds"
            ),
            RecordFault::Malformed => f.write_str(
                "the record's checksum matches but its content does not parse (a faulty writer)",
            ),
            RecordFault::Missing => {
                f.write_str("the record is missing: the log has a gap where it should be")
            }
            RecordFault::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:08x}, computed {computed:08x}): \
                 the record was altered, torn, or moved under another key"
            ),
        }
    }
}

/// A record of `kind` stored under `key`, holding `numbers` and `payload`.
pub(crate) fn encode<const N: usize>(
    kind: Kind,
    key: &[u8],
    numbers: [u64; N],
    payload: &[u8],
) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER + 8 * N + payload.len() + CHECKSUM);
    value.extend_from_slice(&TAG);
    value.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    value.push(kind as u8);
    for n in numbers {
        value.extend_from_slice(&n.to_le_bytes());
    }
    value.extend_from_slice(payload);
    let crc = checksum(key, &value);
    value.extend_from_slice(&crc.to_le_bytes());
    value
}

/// The numbers and payload of a record of `kind` stored under `key`, once
/// its tag, version, kind and checksum are verified.
pub(crate) fn decode<'v, const N: usize>(
    kind: Kind,
    key: &[u8],
    value: &'v [u8],
) -> Result<([u64; N], &'v [u8]), RecordFault> {
    let needed = HEADER + 8 * N + CHECKSUM;
    if value.len() < TAG.len() || value[..TAG.len()] != TAG {
        return Err(if value.len() < TAG.len() && TAG.starts_with(value) {
            RecordFault::Truncated {
                len: value.len(),
                needed,
            }
        } else {
            RecordFault::Foreign
        });
    }
    if value.len() < HEADER {
        return Err(RecordFault::Truncated {
            len: value.len(),
            needed,
        });
    }
    let version = u16::from_le_bytes([value[4], value[5]]);
    if version != FORMAT_VERSION {
        return Err(RecordFault::Version { found: version });
    }
    if value[6] != kind as u8 {
        return Err(RecordFault::Kind { found: value[6] });
    }
    if value.len() < needed {
        return Err(RecordFault::Truncated {
            len: value.len(),
            needed,
        });
    }
    let (body, stored) = value.split_at(value.len() - CHECKSUM);
    let stored = u32::from_le_bytes(stored.try_into().unwrap_or_default());
    let computed = checksum(key, body);
    if stored != computed {
        return Err(RecordFault::Checksum { stored, computed });
    }
    let mut numbers = [0u64; N];
    for (i, n) in numbers.iter_mut().enumerate() {
        let at = HEADER + 8 * i;
        *n = u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or_default());
    }
    Ok((numbers, &body[HEADER + 8 * N..]))
}

/// Adds an entry, written by `incarnation`, to a log segment's payload:
/// `incarnation: u64 LE | length: u32 LE | bytes`.
pub(crate) fn push_entry(payload: &mut Vec<u8>, incarnation: u64, bytes: &[u8]) {
    payload.extend_from_slice(&incarnation.to_le_bytes());
    // Entries are limited far below 4 GiB (StoreConfig::max_entry_bytes).
    payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    payload.extend_from_slice(bytes);
}

/// The `count` entries of a log segment's payload, as (incarnation, bytes).
pub(crate) fn entries(payload: &[u8], count: u64) -> Result<Vec<(u64, &[u8])>, RecordFault> {
    let mut entries = Vec::with_capacity(count.min(4096) as usize);
    let mut rest = payload;
    for _ in 0..count {
        if rest.len() < 12 {
            return Err(RecordFault::Malformed);
        }
        let incarnation = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(rest[8..12].try_into().unwrap_or_default()) as usize;
        rest = &rest[12..];
        if rest.len() < len {
            return Err(RecordFault::Malformed);
        }
        entries.push((incarnation, &rest[..len]));
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err(RecordFault::Malformed);
    }
    Ok(entries)
}

/// Adds a log record, as it will be in the `log` table, to a staged
/// record's payload: `key length: u16 LE | key | value length: u32 LE | value`.
pub(crate) fn push_staged(payload: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // Keys are limited far below 64 KiB (MAX_OBJECT_KEY_LEN), values below
    // 4 GiB (segments and entries are bounded).
    payload.extend_from_slice(&(key.len() as u16).to_le_bytes());
    payload.extend_from_slice(key);
    payload.extend_from_slice(&(value.len() as u32).to_le_bytes());
    payload.extend_from_slice(value);
}

/// A log record in a staged record: its key and value.
pub(crate) type StagedRecord<'v> = (&'v [u8], &'v [u8]);

/// The `count` log records of a staged record's payload.
pub(crate) fn staged(payload: &[u8], count: u64) -> Result<Vec<StagedRecord<'_>>, RecordFault> {
    let mut records = Vec::with_capacity(count.min(4096) as usize);
    let mut rest = payload;
    for _ in 0..count {
        let (key, after) = sized::<2>(rest)?;
        let (value, after) = sized::<4>(after)?;
        records.push((key, value));
        rest = after;
    }
    if !rest.is_empty() {
        return Err(RecordFault::Malformed);
    }
    Ok(records)
}

/// Adds a reply to the payload of replies recorded together:
/// `sender length: u16 LE | sender | sequence: u64 LE | log position: u64 LE |
/// reply length: u32 LE | reply`.
pub(crate) fn push_reply(
    payload: &mut Vec<u8>,
    sender: &[u8],
    sequence: u64,
    at: u64,
    reply: &[u8],
) {
    // Senders are limited far below 64 KiB (MAX_OBJECT_KEY_LEN), replies
    // below 4 GiB (StoreConfig::max_entry_bytes).
    payload.extend_from_slice(&(sender.len() as u16).to_le_bytes());
    payload.extend_from_slice(sender);
    payload.extend_from_slice(&sequence.to_le_bytes());
    payload.extend_from_slice(&at.to_le_bytes());
    payload.extend_from_slice(&(reply.len() as u32).to_le_bytes());
    payload.extend_from_slice(reply);
}

/// One of the replies recorded together.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StoredReply<'v> {
    pub(crate) sender: &'v [u8],
    pub(crate) sequence: u64,
    pub(crate) at: u64,
    pub(crate) reply: &'v [u8],
}

/// The `count` replies of the payload of replies recorded together.
pub(crate) fn replies(payload: &[u8], count: u64) -> Result<Vec<StoredReply<'_>>, RecordFault> {
    let mut replies = Vec::with_capacity(count.min(4096) as usize);
    let mut rest = payload;
    for _ in 0..count {
        let (sender, after) = sized::<2>(rest)?;
        let (numbers, after) = after
            .split_first_chunk::<16>()
            .ok_or(RecordFault::Malformed)?;
        let (reply, after) = sized::<4>(after)?;
        let (sequence, at) = numbers.split_at(8);
        replies.push(StoredReply {
            sender,
            sequence: u64::from_le_bytes(sequence.try_into().unwrap_or_default()),
            at: u64::from_le_bytes(at.try_into().unwrap_or_default()),
            reply,
        });
        rest = after;
    }
    if !rest.is_empty() {
        return Err(RecordFault::Malformed);
    }
    Ok(replies)
}

/// The bytes after a little-endian length of `N` bytes at the start of
/// `bytes`, and what follows them.
fn sized<const N: usize>(bytes: &[u8]) -> Result<(&[u8], &[u8]), RecordFault> {
    let (len, rest) = bytes
        .split_first_chunk::<N>()
        .ok_or(RecordFault::Malformed)?;
    let mut wide = [0u8; 8];
    wide[..N].copy_from_slice(len);
    let len = usize::try_from(u64::from_le_bytes(wide)).map_err(|_| RecordFault::Malformed)?;
    if rest.len() < len {
        return Err(RecordFault::Malformed);
    }
    Ok(rest.split_at(len))
}

/// The version in a value that starts with this store's tag, whatever its
/// layout after that: lets the format record of another version be named.
pub(crate) fn version_of(value: &[u8]) -> Option<u16> {
    (value.len() >= HEADER && value[..TAG.len()] == TAG)
        .then(|| u16::from_le_bytes([value[4], value[5]]))
}

fn checksum(key: &[u8], value: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&(key.len() as u32).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_under_its_own_key_only() {
        let value = encode(Kind::LogSegment, b"k1", [7], b"payload");
        assert_eq!(
            decode::<1>(Kind::LogSegment, b"k1", &value),
            Ok(([7], &b"payload"[..]))
        );
        assert!(matches!(
            decode::<1>(Kind::LogSegment, b"k2", &value),
            Err(RecordFault::Checksum { .. })
        ));
        assert_eq!(
            decode::<1>(Kind::Reply, b"k1", &value),
            Err(RecordFault::Kind {
                found: Kind::LogSegment as u8
            })
        );
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_detected() {
        let value = encode(Kind::Checkpoint, b"key", [1], b"state of the object");
        for i in 0..value.len() * 8 {
            let mut bad = value.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                decode::<1>(Kind::Checkpoint, b"key", &bad).is_err(),
                "bit {i}"
            );
        }
        for len in 0..value.len() {
            assert!(
                decode::<1>(Kind::Checkpoint, b"key", &value[..len]).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn a_segment_gives_back_its_entries_and_refuses_a_wrong_count() {
        let mut payload = Vec::new();
        push_entry(&mut payload, 1, b"first");
        push_entry(&mut payload, 2, b"");
        push_entry(&mut payload, 2, b"third");
        assert_eq!(
            entries(&payload, 3),
            Ok(vec![(1, &b"first"[..]), (2, &b""[..]), (2, &b"third"[..])])
        );
        assert_eq!(entries(&payload, 2), Err(RecordFault::Malformed));
        assert_eq!(entries(&payload, 4), Err(RecordFault::Malformed));
        assert_eq!(entries(&payload[..20], 1), Err(RecordFault::Malformed));
    }

    #[test]
    fn a_staged_record_gives_back_its_records_and_refuses_a_wrong_count() {
        let mut payload = Vec::new();
        push_staged(&mut payload, b"key one", b"value one");
        push_staged(&mut payload, b"", b"");
        push_staged(&mut payload, b"k3", b"v3");
        assert_eq!(
            staged(&payload, 3),
            Ok(vec![
                (&b"key one"[..], &b"value one"[..]),
                (&b""[..], &b""[..]),
                (&b"k3"[..], &b"v3"[..])
            ])
        );
        assert_eq!(staged(&payload, 2), Err(RecordFault::Malformed));
        assert_eq!(staged(&payload, 4), Err(RecordFault::Malformed));
        for len in 0..payload.len() {
            assert!(staged(&payload[..len], 3).is_err(), "{len}");
        }
    }

    #[test]
    fn replies_recorded_together_read_back_and_refuse_a_wrong_count() {
        let mut payload = Vec::new();
        push_reply(&mut payload, b"sender", 3, 17, b"reply three");
        push_reply(&mut payload, b"", u64::MAX, u64::MAX, b"");
        let expected = vec![
            StoredReply {
                sender: b"sender",
                sequence: 3,
                at: 17,
                reply: b"reply three",
            },
            StoredReply {
                sender: b"",
                sequence: u64::MAX,
                at: u64::MAX,
                reply: b"",
            },
        ];
        assert_eq!(replies(&payload, 2), Ok(expected));
        assert_eq!(replies(&payload, 1), Err(RecordFault::Malformed));
        assert_eq!(replies(&payload, 3), Err(RecordFault::Malformed));
        for len in 0..payload.len() {
            assert!(replies(&payload[..len], 2).is_err(), "{len}");
        }
    }

    #[test]
    fn foreign_bytes_and_other_versions_are_named() {
        assert_eq!(
            decode::<0>(Kind::Format, b"", b"{\"json\": true}"),
            Err(RecordFault::Foreign)
        );
        let mut value = encode(Kind::Format, b"", [], b"");
        value[4] = 9;
        assert_eq!(
            decode::<0>(Kind::Format, b"", &value),
            Err(RecordFault::Version { found: 9 })
        );
        assert_eq!(version_of(&value), Some(9));
    }
}
