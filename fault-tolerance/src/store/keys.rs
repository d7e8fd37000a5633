//! The identities the store is keyed by, and how they are laid out in the
//! keys of its redb tables.
//!
//! Every key starts with the object's key, length-prefixed, so that all the
//! records of one object are contiguous and ordered: a log is read or cut
//! with one range, the latest checkpoint is the last key of a range.
//! Numbers are big-endian in keys so that byte order is numeric order.

use std::fmt;

/// The most bytes an [`ObjectKey`] (or a reply's sender) may have.
pub const MAX_OBJECT_KEY_LEN: usize = 1024;

/// The identity of a protected object, as its callers choose to spell it.
///
/// The store does not interpret it: the protocol that protects the object
/// decides what it holds (an object id, a name, an id and a creator…). Two
/// keys are the same object exactly when their bytes are equal.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(Box<[u8]>);

impl ObjectKey {
    /// The key made of these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        ObjectKey(bytes.into().into_boxed_slice())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for ObjectKey {
    fn from(key: &str) -> Self {
        ObjectKey::new(key)
    }
}

impl From<String> for ObjectKey {
    fn from(key: String) -> Self {
        ObjectKey::new(key)
    }
}

impl From<&[u8]> for ObjectKey {
    fn from(key: &[u8]) -> Self {
        ObjectKey::new(key)
    }
}

impl From<Vec<u8>> for ObjectKey {
    fn from(key: Vec<u8>) -> Self {
        ObjectKey::new(key)
    }
}

/// Printable text as itself, in quotes; anything else in hexadecimal, so
/// that an error names the object whatever its key is made of.
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) if !text.chars().any(char::is_control) => write!(f, "{text:?}"),
            _ => {
                f.write_str("0x")?;
                for byte in self.0.iter() {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({self})")
    }
}

/// How many times an object has been restarted. A write from an older
/// incarnation than the store has seen for the object is refused: it comes
/// from an instance that recovery has replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Incarnation(pub u64);

/// The index of a checkpoint of one object, increasing from one checkpoint
/// to the next of the same incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CheckpointIndex(pub u64);

/// Where an entry sits in its object's request log: 0 for the first entry
/// ever appended, one more for each next entry. Positions are never reused,
/// truncation included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LogPosition(pub u64);

/// Which request a logged reply answers: the sender of the request and the
/// sender's sequence number for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplyId {
    /// Who sent the request.
    pub sender: ObjectKey,
    /// The sender's sequence number of the request.
    pub sequence: u64,
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for CheckpointIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ReplyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sequence {} from {}", self.sequence, self.sender)
    }
}

/// `len ‖ bytes` with a two-byte big-endian length.
fn push_prefixed(key: &mut Vec<u8>, bytes: &[u8]) {
    // Callers checked the length against MAX_OBJECT_KEY_LEN.
    key.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    key.extend_from_slice(bytes);
}

/// The key of the object's own record (its log head).
pub(crate) fn object(object: &ObjectKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + object.0.len());
    push_prefixed(&mut key, &object.0);
    key
}

/// The key of the object's record numbered `n` (a log position, a
/// checkpoint index).
pub(crate) fn numbered(object: &ObjectKey, n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + object.0.len() + 8);
    push_prefixed(&mut key, &object.0);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// The number at the end of a key made by [`numbered`].
pub(crate) fn number_of(key: &[u8]) -> u64 {
    let tail: [u8; 8] = key
        .len()
        .checked_sub(8)
        .and_then(|start| key[start..].try_into().ok())
        .unwrap_or_default();
    u64::from_be_bytes(tail)
}

/// The key of the reply `id` of `object`.
pub(crate) fn reply(object: &ObjectKey, id: &ReplyId) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + object.0.len() + id.sender.0.len() + 8);
    push_prefixed(&mut key, &object.0);
    push_prefixed(&mut key, &id.sender.0);
    key.extend_from_slice(&id.sequence.to_be_bytes());
    key
}

/// Where the keys of an object's replies recorded together start, after
/// the object: a sender's length prefix no sender has, so that they sort
/// after every single reply of the object.
const REPLY_BATCH: [u8; 2] = [0xff, 0xfe];

/// The key of the `n`th record of replies of `object` recorded together.
pub(crate) fn reply_batch(object: &ObjectKey, n: u64) -> Vec<u8> {
    let mut key = self::object(object);
    key.extend_from_slice(&REPLY_BATCH);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// The first and last possible reply keys of `object`: every reply key of
/// the object sorts between them, and no key of another object does.
pub(crate) fn reply_range(object: &ObjectKey) -> (Vec<u8>, Vec<u8>) {
    let start = self::object(object);
    let mut end = start.clone();
    // No sender key is longer than MAX_OBJECT_KEY_LEN, so a length prefix
    // of 0xffff sorts after all of them.
    end.extend_from_slice(&[0xff; 2]);
    (start, end)
}

/// The sender and sequence number in a reply key of `object` (made by
/// [`reply`]); `None` if the key is not one.
pub(crate) fn reply_id_of(object: &ObjectKey, key: &[u8]) -> Option<ReplyId> {
    let rest = key.strip_prefix(self::object(object).as_slice())?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() != len + 8 {
        return None;
    }
    let (sender, sequence) = rest.split_at(len);
    Some(ReplyId {
        sender: ObjectKey::new(sender.to_vec()),
        sequence: u64::from_be_bytes(sequence.try_into().ok()?),
    })
}

/// Checks a key's length before it goes into a record.
pub(crate) fn check_len(key: &ObjectKey) -> Result<(), usize> {
    if key.0.len() > MAX_OBJECT_KEY_LEN {
        Err(key.0.len())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_keys_of_one_object_sort_by_number_and_apart_from_other_objects() {
        let a = ObjectKey::from("a");
        let ab = ObjectKey::from("ab");
        let mut keys = vec![
            numbered(&ab, 0),
            numbered(&a, 256),
            numbered(&a, 1),
            numbered(&a, u64::MAX),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                numbered(&a, 1),
                numbered(&a, 256),
                numbered(&a, u64::MAX),
                numbered(&ab, 0)
            ]
        );
        assert_eq!(number_of(&numbered(&a, 256)), 256);
    }

    #[test]
    fn reply_keys_stay_inside_their_object_range() {
        let a = ObjectKey::from("a");
        let (start, end) = reply_range(&a);
        let long = ObjectKey::new(vec![0xff; MAX_OBJECT_KEY_LEN]);
        for sender in [ObjectKey::from(""), ObjectKey::from("s"), long] {
            let key = reply(
                &a,
                &ReplyId {
                    sender,
                    sequence: u64::MAX,
                },
            );
            assert!(start < key && key < end);
        }
        assert!(
            reply(
                &ObjectKey::from("b"),
                &ReplyId {
                    sender: "s".into(),
                    sequence: 0
                }
            ) > end
        );
    }

    #[test]
    fn keys_that_are_not_text_print_in_hexadecimal() {
        assert_eq!(ObjectKey::from("ao-7").to_string(), "\"ao-7\"");
        assert_eq!(ObjectKey::new(vec![0, 0xab]).to_string(), "0x00ab");
    }
}
