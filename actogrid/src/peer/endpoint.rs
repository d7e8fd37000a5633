//! The active objects peers talk through: every peer's
//! [`OverlayEndpoint`], and the [`BinarySource`] a deployment serves its
//! program from.
//!
//! Both are thin: the endpoint hands what arrives to its [`Driver`](super::driver::Driver)
//! (found through a process-wide table, like the registrar finds its
//! deployment) and answers `Ok(())` or the reason for a refusal; nothing
//! that arrives can make it panic.

use std::path::PathBuf;

use actogrid_acquisition::overlay::{BookingId, Token};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::PeerStatus;
use super::driver::{LEAVING, find};

/// Largest piece of a binary one call carries.
pub(crate) const MAX_CHUNK: u32 = 4 << 20;

/// What a requester sends the lender of a booked slot: the program to run
/// (by content) and its environment (where to register, with which ticket).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Where the lender fetches the program when its cache lacks it.
    pub binary: BinarySourceProxy,
    /// sha256 of the program, hexadecimal: its name in the lender's cache,
    /// checked after every fetch.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Environment of the runtime (deployer, node names, and what the
    /// virtual node's technical services ask for).
    pub env: Vec<(String, String)>,
    /// What the runtime enrolls with (its one-time ticket, the authorities
    /// to trust): written on its standard input, never in its environment.
    pub credentials: String,
}

/// The overlay's endpoint on one peer: messages in, launch specifications
/// in, status out.
#[derive(Debug)]
pub struct OverlayEndpoint {
    driver: u64,
}

#[crate::active(crate = crate, internal)]
impl OverlayEndpoint {
    /// The endpoint of driver `driver` of this process.
    pub fn new(driver: u64) -> Self {
        OverlayEndpoint { driver }
    }

    /// An encoded envelope from peer `from` (its `host:port`). `Err` says
    /// why it was refused (wrong token, malformed).
    pub fn deliver(&self, from: String, bytes: Vec<u8>) -> Result<(), String> {
        let driver = find(self.driver).ok_or(LEAVING)?;
        driver.receive(from, bytes)
    }

    /// Requester `from` asks to run `spec` on the slot it booked as
    /// `booking`. `Ok` once the start is under way.
    pub fn launch(
        &self,
        token: Token,
        from: String,
        booking: u64,
        spec: LaunchSpec,
    ) -> Result<(), String> {
        let driver = find(self.driver).ok_or(LEAVING)?;
        driver.launch(token, from, BookingId(booking), spec)
    }

    /// Acquaintances, slots and lent nodes, for a holder of the token.
    pub fn status(&self, token: Token) -> Result<PeerStatus, String> {
        let driver = find(self.driver).ok_or(LEAVING)?;
        if !driver.admits(&token) {
            tracing::warn!(peer = %driver.me(), "refused a status request: wrong overlay token");
            return Err("refused: wrong overlay token".into());
        }
        Ok(driver.status())
    }
}

/// Serves one program file, by pieces, to the peers that lend slots to a
/// deployment.
#[derive(Debug)]
pub struct BinarySource {
    path: PathBuf,
    sha256: String,
    size: u64,
}

#[crate::active(crate = crate, internal)]
impl BinarySource {
    /// Serves `path`, whose content has hash `sha256` and `size` bytes.
    pub fn new(path: String, sha256: String, size: u64) -> Self {
        BinarySource {
            path: PathBuf::from(path),
            sha256,
            size,
        }
    }

    /// Up to `len` bytes from `offset` of the program with hash `sha256`.
    pub async fn chunk(&self, sha256: String, offset: u64, len: u32) -> Result<Blob, String> {
        if sha256 != self.sha256 {
            return Err(format!("no program with sha256 {sha256} here"));
        }
        if offset >= self.size {
            return Err(format!(
                "offset {offset} is past the end ({} bytes)",
                self.size
            ));
        }
        let len = u64::from(len.min(MAX_CHUNK)).min(self.size - offset);
        let read = async {
            let mut file = tokio::fs::File::open(&self.path).await?;
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            let mut buf = vec![0u8; len as usize];
            file.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        read.await
            .map(Blob)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))
    }
}

/// Bytes that travel as one byte string (a plain `Vec<u8>` is encoded
/// element by element, which is slow for megabytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Blob, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut out =
                    Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_CHUNK as usize));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Blob(out))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}
