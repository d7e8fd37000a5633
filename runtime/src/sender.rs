//! Sender ids that prove themselves.
//!
//! Every message carries its sender's id: an active object's, or a
//! runtime's for a call made outside any object. A runtime's id is bound by
//! its certificate. An object's is not (objects move between runtimes), so
//! on a secured runtime an object's id is derived from a key of its own: the
//! id is a hash of an Ed25519 public key, and the secret half travels with
//! the object (migration, checkpoints). Before the first request it sends on
//! a connection, the runtime hosting the object sends a *claim*: the public
//! key and the key's signature of "this object is hosted by runtime H". The
//! other end checks that the key hashes to the id, that the signature holds
//! and that H is who the connection authenticated, and from then on takes
//! that object's requests on that connection; a request sent as an object
//! that no claim proved is refused. A runtime whose certificate does not
//! name its id (a pool's peers) proves its id the same way.
//!
//! Whoever held an object (a former host) held its key: it could pass for
//! the object anyway, since it had all of it. Nobody else can.

use std::sync::{Arc, Mutex};

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::ids::IdMap;
use crate::tls::Principal;

/// Bytes of a public key, and of a signature.
pub(crate) const PUBLIC_KEY_LEN: usize = 32;
pub(crate) const SIGNATURE_LEN: usize = 64;

/// A claim, as it travels: the sender's id, its public key, and its
/// signature of the host it is on.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Claim {
    pub(crate) sender: u64,
    pub(crate) public_key: [u8; PUBLIC_KEY_LEN],
    pub(crate) signature: [u8; SIGNATURE_LEN],
}

/// The secret of an object's id: 32 random bytes, from which its key pair
/// (and so its id) is derived.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SenderSecret([u8; 32]);

impl std::fmt::Debug for SenderSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SenderSecret(..)")
    }
}

/// A sender's key pair, and its claims made so far (one per host it was
/// on while in this process).
pub(crate) struct SenderKey {
    secret: SenderSecret,
    pair: Ed25519KeyPair,
    id: u64,
    claims: Mutex<Vec<(Principal, Arc<Claim>)>>,
}

/// The id of the sender whose public key is `public_key`; `runtime` says
/// which kind of id (see `ids`).
fn id_of(public_key: &[u8], runtime: bool) -> u64 {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        &[b"actogrid sender id v1\0".as_slice(), public_key].concat(),
    );
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest.as_ref()[..8]);
    let id = u64::from_le_bytes(word);
    if runtime {
        id | crate::ids::RUNTIME_BIT
    } else {
        id & !crate::ids::RUNTIME_BIT
    }
}

/// What a claim signs: the sender's id and its host.
fn signed(sender: u64, host: &Principal) -> Vec<u8> {
    let host = match host {
        Principal::Runtime(id) => format!("runtime {id:#x}"),
        Principal::Peer(name) => format!("peer {name}"),
        // Never signed for: claims are only made on secured runtimes.
        Principal::Anonymous | Principal::Plaintext => String::new(),
    };
    let mut message = b"actogrid sender claim v1\0".to_vec();
    message.extend_from_slice(&sender.to_le_bytes());
    message.extend_from_slice(host.as_bytes());
    message
}

impl SenderKey {
    /// A new key, for an object (`runtime` false) or a runtime.
    pub(crate) fn generate(runtime: bool) -> Result<SenderKey, String> {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        loop {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret)
                .map_err(|_| "the system's random number generator failed".to_owned())?;
            let key = SenderKey::from_secret(SenderSecret(secret), runtime)?;
            if key.id != 0 && key.id != crate::ids::RUNTIME_BIT {
                return Ok(key);
            }
        }
    }

    fn from_secret(secret: SenderSecret, runtime: bool) -> Result<SenderKey, String> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&secret.0)
            .map_err(|_| "a sender key does not decode".to_owned())?;
        let id = id_of(pair.public_key().as_ref(), runtime);
        Ok(SenderKey {
            secret,
            pair,
            id,
            claims: Mutex::default(),
        })
    }

    /// The key of object `object`, from its secret: refused if it is not
    /// that object's.
    pub(crate) fn of_object(object: u64, secret: &SenderSecret) -> Result<SenderKey, String> {
        let key = SenderKey::from_secret(secret.clone(), false)?;
        if key.id != object {
            return Err(format!(
                "the key it carries is not object {object:#x}'s (it is {:#x}'s)",
                key.id
            ));
        }
        Ok(key)
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn secret(&self) -> &SenderSecret {
        &self.secret
    }

    /// The claim that this sender is on `host` (signed once per host).
    pub(crate) fn claim(&self, host: &Principal) -> Arc<Claim> {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, claim)) = claims.iter().find(|(h, _)| h == host) {
            return claim.clone();
        }
        let signature = self.pair.sign(&signed(self.id, host));
        let mut public_key = [0u8; PUBLIC_KEY_LEN];
        public_key.copy_from_slice(self.pair.public_key().as_ref());
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(signature.as_ref());
        let claim = Arc::new(Claim {
            sender: self.id,
            public_key,
            signature: sig,
        });
        // A host seen before is rare (an object that came back): keep the
        // list short.
        if claims.len() >= 4 {
            claims.remove(0);
        }
        claims.push((host.clone(), claim.clone()));
        claim
    }
}

/// Object keys made ahead of need, off the path of creations: making one
/// takes tens of microseconds, as much as the rest of a remote creation.
/// Each key taken is replaced by one made on tokio's blocking threads, so
/// the work is spread evenly and done where a CPU is free.
static SPARE: Mutex<Spare> = Mutex::new(Spare {
    keys: Vec::new(),
    making: 0,
    given: 0,
});

struct Spare {
    keys: Vec<SenderKey>,
    /// Keys being made.
    making: usize,
    /// Keys given out so far.
    given: usize,
}

/// Keys kept spare.
const SPARE_KEYS: usize = 16;
/// Objects a process makes before keys are made ahead for the next ones.
const SPARE_AFTER: usize = 8;

/// Makes `count` object keys ahead, on tokio's blocking threads (a
/// runtime must be current): for a process that will create objects over
/// TLS and has something to wait for first (a deployed runtime enrolling
/// with its deployer). Without a current runtime, nothing.
pub fn prepare_object_keys(count: usize) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    SPARE.lock().unwrap_or_else(|p| p.into_inner()).making += count;
    // One blocking thread for all: starting threads costs more than a key.
    handle.spawn_blocking(move || {
        for _ in 0..count {
            make_one();
        }
    });
}

/// Makes one spare key (counted in `making` already).
fn make_one() {
    let made = SenderKey::generate(false);
    let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
    spare.making -= 1;
    if let Ok(key) = made {
        spare.keys.push(key);
    }
}

/// A key for a new object: a spare one when there is one, else one made
/// now.
pub(crate) fn object_key() -> Result<SenderKey, String> {
    let (key, more) = {
        let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
        let key = spare.keys.pop();
        spare.given += 1;
        let more = SPARE_KEYS.saturating_sub(spare.keys.len() + spare.making);
        // One at a time: the cost of making keys follows that of creations;
        // none for a process that made few objects so far (a deployed
        // runtime's own machinery, a worker or two), which may make no
        // more.
        let more = if spare.given < SPARE_AFTER {
            0
        } else {
            more.min(1 + usize::from(key.is_none()))
        };
        spare.making += more;
        (key, more)
    };
    if more > 0 {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                for _ in 0..more {
                    handle.spawn_blocking(make_one);
                }
            }
            Err(_) => SPARE.lock().unwrap_or_else(|p| p.into_inner()).making -= more,
        }
    }
    match key {
        Some(key) => Ok(key),
        None => SenderKey::generate(false),
    }
}

impl Claim {
    /// Checks that this claim proves its sender is on `host`.
    pub(crate) fn verify(&self, host: &Principal) -> Result<(), &'static str> {
        if !matches!(host, Principal::Runtime(_) | Principal::Peer(_)) {
            return Err("a claim on a connection with no certificate proves nothing");
        }
        if id_of(&self.public_key, crate::ids::is_runtime(self.sender)) != self.sender {
            return Err("the key does not hash to the sender id it claims");
        }
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(&signed(self.sender, host), &self.signature)
            .map_err(|_| "the signature does not hold for this connection's runtime")
    }
}

/// What makes an object's sender id its own: its key (on a secured
/// runtime), and the runtimes that hosted it before this one, which may
/// pass on (forward) requests sent to it while it moved.
#[derive(Default)]
pub(crate) struct Credentials {
    pub(crate) key: Option<Arc<SenderKey>>,
    pub(crate) hosts: Vec<u64>,
}

/// Former hosts an object remembers (the most recent ones).
const MAX_HOSTS: usize = 32;

impl Credentials {
    /// The object's former hosts with `host` (this runtime) added, for a
    /// checkpoint or a migration.
    pub(crate) fn hosts_with(&self, host: u64) -> Vec<u64> {
        let mut hosts: Vec<u64> = self.hosts.iter().copied().filter(|&h| h != host).collect();
        hosts.push(host);
        let excess = hosts.len().saturating_sub(MAX_HOSTS);
        hosts.drain(..excess);
        hosts
    }

    pub(crate) fn secret(&self) -> Option<SenderSecret> {
        self.key.as_ref().map(|k| k.secret().clone())
    }

    /// Whether `runtime` hosted the object before.
    pub(crate) fn hosted_by(&self, runtime: u64) -> bool {
        self.hosts.contains(&runtime)
    }
}

/// A set of senders on one connection: those it proved (received claims),
/// or those this end claimed (sent claims). Bounded: past [`MAX_PROVEN`]
/// distinct senders, no more are taken.
#[derive(Default)]
pub(crate) struct Senders {
    senders: Mutex<IdMap<u64, ()>>,
}

/// Distinct senders one connection may prove.
pub(crate) const MAX_PROVEN: usize = 1 << 16;

impl Senders {
    pub(crate) fn contains(&self, sender: u64) -> bool {
        self.senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&sender)
    }

    /// Records `sender`; `false` when the bound is reached.
    pub(crate) fn insert(&self, sender: u64) -> bool {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if senders.len() >= MAX_PROVEN && !senders.contains_key(&sender) {
            return false;
        }
        senders.insert(sender, ());
        true
    }

    /// Records `sender`; `true` if it was not recorded before and is now.
    pub(crate) fn insert_new(&self, sender: u64) -> bool {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if senders.len() >= MAX_PROVEN || senders.contains_key(&sender) {
            return false;
        }
        senders.insert(sender, ());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_proves_its_sender_on_its_host_only() {
        let key = SenderKey::generate(false).unwrap();
        assert!(!crate::ids::is_runtime(key.id()));
        let host = Principal::Runtime(0x8000_0000_0000_0001);
        let claim = key.claim(&host);
        assert_eq!(claim.verify(&host), Ok(()));
        // Replayed by another runtime: refused.
        assert!(
            claim
                .verify(&Principal::Runtime(0x8000_0000_0000_0002))
                .is_err()
        );
        assert!(claim.verify(&Principal::Peer("p".into())).is_err());
        assert!(claim.verify(&Principal::Plaintext).is_err());
        // Another sender's id with this key: refused.
        let mut forged = (*claim).clone();
        forged.sender ^= 1;
        assert!(forged.verify(&host).is_err());
        // Someone else's key, signed correctly, for this id: refused.
        let other = SenderKey::generate(false).unwrap();
        let mut stolen = (*other.claim(&host)).clone();
        stolen.sender = key.id();
        assert!(stolen.verify(&host).is_err());
        // A corrupted signature: refused.
        let mut bad = (*claim).clone();
        bad.signature[0] ^= 1;
        assert!(bad.verify(&host).is_err());
    }

    #[test]
    fn a_secret_gives_back_its_object_and_no_other() {
        let key = SenderKey::generate(false).unwrap();
        let again = SenderKey::of_object(key.id(), key.secret()).unwrap();
        assert_eq!(again.id(), key.id());
        assert!(SenderKey::of_object(key.id() ^ 4, key.secret()).is_err());
        let runtime = SenderKey::generate(true).unwrap();
        assert!(crate::ids::is_runtime(runtime.id()));
        assert_eq!(format!("{:?}", key.secret()), "SenderSecret(..)");
    }

    #[test]
    fn a_connection_proves_a_bounded_number_of_senders() {
        let proven = Senders::default();
        for s in 0..MAX_PROVEN as u64 {
            assert!(proven.insert(s));
        }
        assert!(proven.insert(5), "one already proved stays proved");
        assert!(!proven.insert(u64::MAX >> 1));
        assert!(proven.contains(5));
    }
}
