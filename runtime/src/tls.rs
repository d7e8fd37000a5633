//! Transport security: who a runtime talks to, and how it proves who it is.
//!
//! Every connection between runtimes is TLS 1.3 with certificates on both
//! ends, issued by the authority of one *trust domain*:
//!
//! * a **deployment** — the deploying process makes a certificate
//!   authority (one per process, in memory only), and every runtime it
//!   starts gets a certificate from it when it enrolls with its one-time
//!   ticket; the certificate names the runtime by its id
//!   (`actogrid:runtime:<id>`), which binds the sender id of what that
//!   runtime sends;
//! * a **pool** of peers of the overlay — an authority every peer derives
//!   from the pool's passphrase (see [`Authority::for_pool`]), or a site's own;
//!   certificates name peers (`actogrid:peer:<name>`).
//!
//! Certificates are checked against the domain's authority only (runtimes
//! are reached by addresses that no certificate could name reliably:
//! NAT, advertised addresses); the authority *is* the trust.
//!
//! A runtime built without an identity gets a certificate of its
//! process's authority: runtimes of one process trust each other, and no
//! one else. Plaintext is only ever an explicit choice
//! ([`Identity::plaintext`], or `ACTOGRID_INSECURE_PLAINTEXT=1`), announced
//! loudly.

use std::sync::{Arc, OnceLock};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Set (to `1`) to run without TLS: for closed clusters only.
pub const PLAINTEXT_ENV: &str = "ACTOGRID_INSECURE_PLAINTEXT";

/// A PEM file with the certificate of the authority this process issues
/// with (a site's own), instead of one it makes; with [`AUTHORITY_KEY_ENV`].
pub const AUTHORITY_ENV: &str = "ACTOGRID_TLS_AUTHORITY";

/// A PEM file with the private key of [`AUTHORITY_ENV`]'s authority.
pub const AUTHORITY_KEY_ENV: &str = "ACTOGRID_TLS_AUTHORITY_KEY";

/// A PEM file with the certificates of other authorities whose runtimes
/// this process's runtimes trust as their own (another deployment's, to
/// share objects with it; it must trust this one's too).
pub const TRUST_ENV: &str = "ACTOGRID_TLS_TRUST";

/// The authorities [`TRUST_ENV`] names, PEM (empty when it is not set).
fn trusted_elsewhere() -> Result<String, IdentityError> {
    match std::env::var_os(TRUST_ENV) {
        None => Ok(String::new()),
        Some(path) => std::fs::read_to_string(&path).map_err(|e| {
            err(format!(
                "{TRUST_ENV}: cannot read {}: {e}",
                path.to_string_lossy()
            ))
        }),
    }
}

/// What can go wrong with credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct IdentityError(pub(crate) String);

fn err(what: impl std::fmt::Display) -> IdentityError {
    IdentityError(what.to_string())
}

/// Who is at the other end of a connection, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A runtime of this trust domain, by id.
    Runtime(u64),
    /// A peer of this pool, by name.
    Peer(String),
    /// No certificate: may only enroll.
    Anonymous,
    /// A plaintext connection (security switched off): trusted as a
    /// runtime of the domain, since nothing can be checked.
    Plaintext,
}

impl Principal {
    /// A member of the domain: may create, call, look up, migrate,
    /// register.
    pub fn is_member(&self) -> bool {
        matches!(self, Principal::Runtime(_) | Principal::Plaintext)
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Runtime(id) => write!(f, "runtime {id:#x}"),
            Principal::Peer(name) => write!(f, "peer {name}"),
            Principal::Anonymous => f.write_str("an unauthenticated client"),
            Principal::Plaintext => f.write_str("a plaintext client"),
        }
    }
}

const RUNTIME_URI: &str = "actogrid:runtime:";
const PEER_URI: &str = "actogrid:peer:";

/// The crypto provider every configuration uses: *ring*'s. Its key
/// exchange is classical (X25519, then P-256), not post-quantum; a
/// deployment's keys live in memory for as long as it runs
/// (docs/security.md). X25519 comes first: *ring*'s own order starts with
/// P-384, whose generic arithmetic made every handshake several times
/// slower.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            #[allow(deprecated)] // deprecated only for the lack of post-quantum key exchange
            let mut provider = rustls::crypto::ring::default_provider();
            provider.kx_groups = vec![
                rustls::crypto::ring::kx_group::X25519,
                rustls::crypto::ring::kx_group::SECP256R1,
            ];
            // AES-128-GCM with SHA-256 first: its key schedule hashes with
            // SHA-256, which processors compute in hardware, not SHA-384.
            provider.cipher_suites = vec![
                rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
                rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
                rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            ];
            Arc::new(provider)
        })
        .clone()
}

/// A fresh key for an authority: Ed25519, as every key made here (see
/// [`CertKey`]).
fn new_key() -> Result<KeyPair, IdentityError> {
    KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(err)
}

/// A fresh key for a certificate: Ed25519. With this provider a mutual
/// handshake between Ed25519 certificates takes about 0.45 ms of CPU
/// against 0.57 ms with ECDSA P-256 ones, and issuing a certificate 80 µs
/// against 100 µs. Made from a random seed in one step (rcgen's own key
/// type derives the public key twice), which is most of what a runtime
/// enrolling spends on its key.
pub(crate) struct CertKey {
    seed: [u8; 32],
    pair: ring::signature::Ed25519KeyPair,
}

impl CertKey {
    fn generate() -> Result<CertKey, IdentityError> {
        use ring::rand::SecureRandom as _;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| err("the system's random number generator failed"))?;
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| err(format!("a fresh key does not decode: {e}")))?;
        Ok(CertKey { seed, pair })
    }

    /// The private key, PKCS#8 v1.
    fn private_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(ed25519_pkcs8(&self.seed).into())
    }
}

/// An Ed25519 private key in PKCS#8 v1: a fixed prefix, then the seed.
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(seed);
    pkcs8
}

impl rcgen::PublicKeyData for CertKey {
    fn der_bytes(&self) -> &[u8] {
        ring::signature::KeyPair::public_key(&self.pair).as_ref()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for CertKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.pair.sign(msg).as_ref().to_vec())
    }
}

/// An authority: issues the certificates of one trust domain.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    /// What the domain is, for messages.
    name: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("name", &self.name)
            .finish()
    }
}

impl Authority {
    /// A fresh authority, its key in memory only.
    pub fn generate(name: &str) -> Result<Authority, IdentityError> {
        Authority::from_key(name, new_key()?)
    }

    fn from_key(name: &str, key: KeyPair) -> Result<Authority, IdentityError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "actogrid");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert: cert.der().clone(),
            name: name.to_owned(),
        })
    }

    /// An authority of a site's own PKI: its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, IdentityError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| err(format!("the authority's key does not read: {e}")))?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| err(format!("the authority's certificate does not read: {e}")))?;
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| err(format!("the authority's certificate does not read: {e}")))?;
        Ok(Authority {
            issuer,
            cert,
            name: "site authority".to_owned(),
        })
    }

    /// The authority of a pool, derived from its passphrase: every peer
    /// that knows the passphrase derives the same key (Argon2id, a salt
    /// of its own), so holding the passphrase is what membership means.
    pub fn for_pool(passphrase: &[u8]) -> Result<Authority, IdentityError> {
        let seed = pool_seed(passphrase)?;
        let key = KeyPair::try_from(ed25519_pkcs8(&seed).as_slice()).map_err(err)?;
        Authority::from_key("actogrid pool", key)
    }

    /// Its public key: what names the domain (two authorities with the
    /// same key issue for the same domain).
    pub fn public_key(&self) -> Vec<u8> {
        self.issuer.key().public_key_raw().to_vec()
    }

    /// Its private key, PEM: what a site stores (`0600`) to give several
    /// programs the same authority (see [`AUTHORITY_ENV`]).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Its certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert)
    }

    fn sign(
        &self,
        san: String,
        key: &impl rcgen::PublicKeyData,
    ) -> Result<CertificateDer<'static>, IdentityError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, san.clone());
        params.subject_alt_names = vec![SanType::URI(san.try_into().map_err(err)?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(key, &self.issuer).map_err(err)?;
        Ok(cert.der().clone())
    }

    /// A certificate for runtime `id` with key `key`.
    fn issue_runtime(
        &self,
        id: u64,
        key: &impl rcgen::PublicKeyData,
    ) -> Result<CertificateDer<'static>, IdentityError> {
        self.sign(format!("{RUNTIME_URI}{id:016x}"), key)
    }

    /// Signs a certificate request of a runtime enrolling: the request
    /// names the runtime id it asks for (nothing else of it is used).
    pub(crate) fn sign_request(&self, csr_der: &[u8]) -> Result<(u64, Vec<u8>), IdentityError> {
        let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| err(format!("the certificate request does not read: {e}")))?;
        let id = csr
            .params
            .subject_alt_names
            .iter()
            .find_map(|san| match san {
                SanType::URI(uri) => runtime_id_of(uri.as_str()),
                _ => None,
            })
            .ok_or_else(|| err("the certificate request names no runtime id"))?;
        if !crate::ids::is_runtime(id) {
            return Err(err("the certificate request names no runtime id"));
        }
        let cert = self.sign(format!("{RUNTIME_URI}{id:016x}"), &csr.public_key)?;
        Ok((id, cert.to_vec()))
    }
}

fn runtime_id_of(uri: &str) -> Option<u64> {
    let hex = uri.strip_prefix(RUNTIME_URI)?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The key a pool's authority is derived from.
fn pool_seed(passphrase: &[u8]) -> Result<[u8; 32], IdentityError> {
    use argon2::{Algorithm, Argon2, Params, Version};
    if passphrase.len() < 8 {
        return Err(err(
            "the pool's passphrase is too short: give at least 8 characters (a long random one is best)",
        ));
    }
    let params = Params::new(19 * 1024, 2, 1, Some(32)).map_err(err)?;
    let mut seed = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, b"actogrid overlay pool v1", &mut seed)
        .map_err(err)?;
    Ok(seed)
}

fn pem(label: &str, der: &[u8]) -> String {
    use std::fmt::Write as _;
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

/// The credentials of a runtime: how it proves who it is, and whom it
/// trusts. Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

enum Inner {
    Plaintext,
    /// Plaintext, for a runtime id its deployer admitted.
    PlaintextAs(u64),
    Secured(Box<Secured>),
}

struct Secured {
    principal: Principal,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    /// For enrolling runtimes: no certificate of its own yet.
    anonymous: Arc<rustls::ClientConfig>,
    /// The trusted authorities, PEM (handed to runtimes it starts).
    roots_pem: String,
    /// Set when it can issue certificates (a deployer).
    authority: Option<Arc<Authority>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.inner {
            Inner::Plaintext | Inner::PlaintextAs(_) => f.write_str("Identity(plaintext)"),
            Inner::Secured(s) => write!(f, "Identity({})", s.principal),
        }
    }
}

impl Identity {
    /// No TLS at all: anyone who reaches the port is trusted. For closed
    /// clusters only; say so loudly where it is chosen.
    pub fn plaintext() -> Identity {
        Identity {
            inner: Arc::new(Inner::Plaintext),
        }
    }

    /// The plaintext identity of runtime `id` (its deployer admitted it
    /// under that id).
    fn plaintext_as(id: u64) -> Identity {
        Identity {
            inner: Arc::new(Inner::PlaintextAs(id)),
        }
    }

    /// Whether this is the plaintext identity.
    pub fn is_plaintext(&self) -> bool {
        matches!(&*self.inner, Inner::Plaintext | Inner::PlaintextAs(_))
    }

    /// The process's own authority (made on first use), for runtimes
    /// built without an identity, and for deployments.
    ///
    /// A site with its own PKI gives the authority instead, as PEM files
    /// named by `ACTOGRID_TLS_AUTHORITY` (its certificate) and
    /// `ACTOGRID_TLS_AUTHORITY_KEY`: programs started with the same
    /// authority are one trust domain, and reach each other's objects (a
    /// name registered by one is looked up by the other).
    pub fn process_authority() -> Result<Arc<Authority>, IdentityError> {
        static AUTHORITY: OnceLock<Result<Arc<Authority>, IdentityError>> = OnceLock::new();
        AUTHORITY
            .get_or_init(|| {
                match (
                    std::env::var_os(AUTHORITY_ENV),
                    std::env::var_os(AUTHORITY_KEY_ENV),
                ) {
                    (Some(cert), Some(key)) => {
                        let read = |path: &std::ffi::OsStr| {
                            std::fs::read_to_string(path).map_err(|e| {
                                err(format!("cannot read {}: {e}", path.to_string_lossy()))
                            })
                        };
                        Authority::from_pem(&read(&cert)?, &read(&key)?).map(Arc::new)
                    }
                    (None, None) => {
                        let name = format!("actogrid deployment {}", std::process::id());
                        Authority::generate(&name).map(Arc::new)
                    }
                    _ => Err(err(format!(
                        "{AUTHORITY_ENV} and {AUTHORITY_KEY_ENV} go together: give both or neither"
                    ))),
                }
            })
            .clone()
    }

    /// The default identity of a runtime of this process: plaintext when
    /// `ACTOGRID_INSECURE_PLAINTEXT=1`, else a certificate of the process's
    /// authority for runtime `id`.
    pub(crate) fn default_for(id: u64) -> Result<Identity, IdentityError> {
        if plaintext_asked() {
            announce_plaintext();
            return Ok(Identity::plaintext());
        }
        Identity::issued(&Identity::process_authority()?, id)
    }

    /// A certificate of `authority` for runtime `id`, a key made here, and
    /// trust in `authority` alone; this identity can issue too.
    pub fn issued(authority: &Arc<Authority>, id: u64) -> Result<Identity, IdentityError> {
        let key = CertKey::generate()?;
        let cert = authority.issue_runtime(id, &key)?;
        let mut roots = authority.cert_pem();
        roots.push_str(&trusted_elsewhere()?);
        let mut identity = Identity::secured(
            Principal::Runtime(id),
            vec![cert, authority.cert.clone()],
            key.private_der(),
            &roots,
        )?;
        if let Inner::Secured(s) = Arc::get_mut(&mut identity.inner).expect("not shared yet") {
            s.authority = Some(authority.clone());
        }
        Ok(identity)
    }

    /// A certificate of `authority` for a new runtime (with a fresh id): a
    /// runtime of that authority's domain.
    pub fn member_of(authority: &Arc<Authority>) -> Result<Identity, IdentityError> {
        Identity::issued(authority, crate::ids::runtime_id())
    }

    /// A peer of the pool of `authority`, named `name`.
    pub fn peer(authority: &Arc<Authority>, name: &str) -> Result<Identity, IdentityError> {
        let key = CertKey::generate()?;
        let cert = authority.sign(format!("{PEER_URI}{name}"), &key)?;
        Identity::secured(
            Principal::Peer(name.to_owned()),
            vec![cert, authority.cert.clone()],
            key.private_der(),
            &authority.cert_pem(),
        )
    }

    /// From PEM: a certificate chain, its key and the trusted authorities
    /// (one or several certificates). What a site with its own PKI gives.
    pub fn from_pem(chain: &str, key: &str, roots: &str) -> Result<Identity, IdentityError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("the certificate chain does not read: {e}")))?;
        let first = certs
            .first()
            .ok_or_else(|| err("the certificate chain holds no certificate"))?;
        let principal = principal_of(first).ok_or_else(|| {
            err(
                "the certificate names neither an actogrid runtime nor a peer (its subject \
                 alternative names must hold `actogrid:runtime:<16 hex digits>` or \
                 `actogrid:peer:<name>`)",
            )
        })?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| err(format!("the private key does not read: {e}")))?;
        Identity::secured(principal, certs, key, roots)
    }

    fn secured(
        principal: Principal,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots_pem: &str,
    ) -> Result<Identity, IdentityError> {
        let roots = Arc::new(root_store(roots_pem)?);
        // Loaded once for both ends of a connection.
        let key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| err(format!("the key does not load: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain, key);
        certified
            .keys_match()
            .map_err(|e| err(format!("the certificate and key do not match: {e}")))?;
        let own = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
        let server = server_config(&roots, own.clone())?;
        let client = client_config(&roots, Some(own))?;
        let anonymous = client_config(&roots, None)?;
        Ok(Identity {
            inner: Arc::new(Inner::Secured(Box::new(Secured {
                principal,
                server,
                client,
                anonymous,
                roots_pem: roots_pem.to_owned(),
                authority: None,
            }))),
        })
    }

    /// Who this identity says it is.
    pub fn principal(&self) -> Principal {
        match &*self.inner {
            Inner::Plaintext | Inner::PlaintextAs(_) => Principal::Plaintext,
            Inner::Secured(s) => s.principal.clone(),
        }
    }

    /// The runtime id its certificate names, if it names one.
    pub fn runtime_id(&self) -> Option<u64> {
        match (&*self.inner, self.principal()) {
            (Inner::PlaintextAs(id), _) => Some(*id),
            (_, Principal::Runtime(id)) => Some(id),
            _ => None,
        }
    }

    /// The authority it issues with, when it can.
    pub fn authority(&self) -> Option<&Arc<Authority>> {
        match &*self.inner {
            Inner::Secured(s) => s.authority.as_ref(),
            Inner::Plaintext | Inner::PlaintextAs(_) => None,
        }
    }

    /// The authorities it trusts, PEM (what a runtime it starts must trust).
    pub fn roots_pem(&self) -> Option<&str> {
        match &*self.inner {
            Inner::Secured(s) => Some(&s.roots_pem),
            Inner::Plaintext | Inner::PlaintextAs(_) => None,
        }
    }

    /// Credentials for another runtime of this domain (a child process
    /// started directly, not enrolling): a fresh key and certificate for
    /// a new runtime id, with the trusted authorities, as one PEM bundle
    /// to hand over a pipe (never a file or a command line).
    pub fn bundle(&self) -> Result<String, IdentityError> {
        self.bundle_for(crate::ids::runtime_id())
    }

    fn bundle_for(&self, id: u64) -> Result<String, IdentityError> {
        let (authority, roots) = match &*self.inner {
            Inner::Plaintext | Inner::PlaintextAs(_) => return Ok(PLAINTEXT_BUNDLE.to_owned()),
            Inner::Secured(s) => (
                s.authority
                    .as_ref()
                    .ok_or_else(|| err("this runtime cannot issue certificates"))?,
                &s.roots_pem,
            ),
        };
        let key = new_key()?;
        let cert = authority.issue_runtime(id, &key)?;
        let mut out = String::new();
        out.push_str(&pem("CERTIFICATE", &cert));
        out.push_str(&authority.cert_pem());
        out.push_str(&key.serialize_pem());
        out.push_str(&roots.replace("CERTIFICATE-----", "TRUSTED CERTIFICATE-----"));
        Ok(out)
    }

    /// Reads a bundle made by [`Identity::bundle`].
    pub fn from_bundle(text: &str) -> Result<Identity, IdentityError> {
        if text.trim() == PLAINTEXT_BUNDLE.trim() {
            announce_plaintext();
            return Ok(Identity::plaintext());
        }
        let (own, roots) = text
            .split_once("-----BEGIN TRUSTED CERTIFICATE-----")
            .ok_or_else(|| err("the credentials bundle holds no trusted authority"))?;
        let roots = format!("-----BEGIN TRUSTED CERTIFICATE-----{roots}")
            .replace("TRUSTED CERTIFICATE-----", "CERTIFICATE-----");
        let key_start = own
            .find("-----BEGIN PRIVATE KEY-----")
            .ok_or_else(|| err("the credentials bundle holds no private key"))?;
        Identity::from_pem(&own[..key_start], &own[key_start..], &roots)
    }

    pub(crate) fn server_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        match &*self.inner {
            Inner::Secured(s) => Some(s.server.clone()),
            Inner::Plaintext | Inner::PlaintextAs(_) => None,
        }
    }

    pub(crate) fn client_config(&self, anonymous: bool) -> Option<Arc<rustls::ClientConfig>> {
        match &*self.inner {
            Inner::Secured(s) if anonymous => Some(s.anonymous.clone()),
            Inner::Secured(s) => Some(s.client.clone()),
            Inner::Plaintext | Inner::PlaintextAs(_) => None,
        }
    }
}

/// What a plaintext parent hands its children.
const PLAINTEXT_BUNDLE: &str = "actogrid insecure plaintext\n";

/// Whether `id` names a runtime rather than an active object (a runtime's
/// id is what its certificate names; see [`crate::caller`]).
pub fn is_runtime_id(id: u64) -> bool {
    crate::ids::is_runtime(id)
}

/// Whether the environment asks for plaintext.
pub fn plaintext_asked() -> bool {
    std::env::var(PLAINTEXT_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Says, once per process and on stderr as well as in the logs, that
/// connections are not secured.
pub(crate) fn announce_plaintext() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let text = "INSECURE: actogrid runs without TLS (ACTOGRID_INSECURE_PLAINTEXT): \
                    anyone who reaches its ports can create, call, migrate and stop objects \
                    and runtimes. Use this only on a closed cluster.";
        eprintln!("actogrid: {text}");
        tracing::warn!("{text}");
    });
}

fn root_store(roots_pem: &str) -> Result<RootCertStore, IdentityError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        let cert = cert.map_err(|e| err(format!("a trusted authority does not read: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| err(format!("a trusted authority cannot be used: {e}")))?;
    }
    if roots.is_empty() {
        return Err(err("no trusted authority given"));
    }
    Ok(roots)
}

fn server_config(
    roots: &Arc<RootCertStore>,
    own: Arc<rustls::sign::SingleCertAndKey>,
) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
    // A client without a certificate gets through the handshake but may
    // only enroll: every other use checks the certificate's principal.
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(err)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(own);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn client_config(
    roots: &Arc<RootCertStore>,
    own: Option<Arc<rustls::sign::SingleCertAndKey>>,
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DomainVerifier {
            roots: roots.clone(),
        }));
    let mut config = match own {
        Some(own) => builder.with_client_cert_resolver(own),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The name a client announces; certificates are checked against the
/// domain's authority, not against it.
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from("runtime.actogrid.invalid").expect("a valid DNS name")
}

/// Checks a server's certificate against the domain's authorities alone
/// (see the module's documentation for why not against its name).
#[derive(Debug)]
struct DomainVerifier {
    roots: Arc<RootCertStore>,
}

impl ServerCertVerifier for DomainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        if principal_of(end_entity).is_none() {
            return Err(rustls::Error::General(
                "the certificate names no actogrid runtime or peer".into(),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The principal a certificate names, from its subject alternative names.
pub(crate) fn principal_of(cert: &CertificateDer<'_>) -> Option<Principal> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => runtime_id_of(uri).map(Principal::Runtime).or_else(|| {
            uri.strip_prefix(PEER_URI)
                .filter(|n| !n.is_empty())
                .map(|n| Principal::Peer(n.to_owned()))
        }),
        _ => None,
    })
}

/// The principal of the end of a TLS connection whose certificates are
/// `certs` (already verified by the handshake).
pub(crate) fn principal_of_chain(certs: Option<&[CertificateDer<'_>]>) -> Principal {
    certs
        .and_then(|c| c.first())
        .and_then(principal_of)
        .unwrap_or(Principal::Anonymous)
}

/// A certificate request for a runtime enrolling: a fresh key and the
/// request naming runtime `id`.
pub(crate) fn request_for(id: u64) -> Result<(CertKey, Vec<u8>), IdentityError> {
    let key = CertKey::generate()?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        format!("{RUNTIME_URI}{id:016x}").try_into().map_err(err)?,
    )];
    let csr = params.serialize_request(&key).map_err(err)?;
    Ok((key, csr.der().to_vec()))
}

/// The identity of an enrolled runtime: its key, the certificate the
/// authority signed, and the authorities it trusts.
pub(crate) fn enrolled(
    key: &CertKey,
    cert_der: Vec<u8>,
    chain_pem: &str,
    roots_pem: &str,
) -> Result<Identity, IdentityError> {
    let mut chain = vec![CertificateDer::from(cert_der)];
    for c in CertificateDer::pem_slice_iter(chain_pem.as_bytes()) {
        chain.push(c.map_err(err)?);
    }
    let principal = chain
        .first()
        .and_then(principal_of)
        .ok_or_else(|| err("the certificate issued names no runtime"))?;
    Identity::secured(principal, chain, key.private_der(), roots_pem)
}

/// The connection a runtime enrolled on. It stays the runtime's
/// connection to the runtime that enrolled it (see
/// [`Builder::link`](crate::Builder::link)): enrolling and then working
/// take one connection and one handshake, not two.
pub struct Link {
    pub(crate) address: String,
    pub(crate) channel: tonic::transport::Channel,
    /// Who the enrolling runtime is, as its certificate says.
    pub(crate) principal: Principal,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("address", &self.address)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Enrolls with the deployer at `address` (`host:port`): a fresh key
    /// and a certificate request for a new runtime id, the one-time
    /// `ticket`, over TLS checked against the authorities `roots_pem`.
    /// Returns the identity the deployer's authority signed.
    pub async fn enroll(
        address: &str,
        roots_pem: Option<&str>,
        ticket: &str,
        connect_timeout: std::time::Duration,
    ) -> Result<Identity, IdentityError> {
        let config = crate::Config {
            connect_timeout,
            ..crate::Config::default()
        };
        Ok(Self::enroll_linked(address, roots_pem, ticket, &config)
            .await?
            .0)
    }

    /// [`Identity::enroll`], keeping the connection enrolled on for the
    /// runtime to come (its settings are `config`'s): give the [`Link`] to
    /// [`Builder::link`](crate::Builder::link).
    pub async fn enroll_linked(
        address: &str,
        roots_pem: Option<&str>,
        ticket: &str,
        config: &crate::Config,
    ) -> Result<(Identity, Link), IdentityError> {
        let tls = match roots_pem {
            Some(pem) => Some(client_config(&Arc::new(root_store(pem)?), None)?),
            None => None,
        };
        let id = crate::ids::runtime_id();
        let (key, csr) = match &tls {
            Some(_) => {
                let (key, csr) = request_for(id)?;
                (Some(key), csr)
            }
            None => (None, Vec::new()),
        };
        let timeout = config.connect_timeout;
        let endpoint = crate::runtime::wire_endpoint(address, config)
            .map_err(|e| err(format!("cannot reach the deployer: {e}")))?;
        let dial = address.to_owned();
        let server = Arc::new(OnceLock::new());
        let seen = server.clone();
        let service = tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let tls = tls.clone();
            let dial = dial.clone();
            let seen = seen.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&dial).await?;
                tcp.set_nodelay(true)?;
                let (io, principal) = crate::runtime::secure(Box::new(tcp), tls).await?;
                let _ = seen.set(principal);
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
            }
        });
        let channel = tokio::time::timeout(timeout, endpoint.connect_with_connector(service))
            .await
            .map_err(|_| {
                err(format!(
                    "cannot reach the deployer at {address} within {timeout:?}"
                ))
            })?
            .map_err(|e| err(format!("cannot reach the deployer at {address}: {e}")))?;
        let mut client = crate::wire::wire_client::WireClient::new(channel.clone());
        let enrolling = client.enroll(crate::wire::EnrollRequest {
            ticket: ticket.to_owned(),
            csr: csr.into(),
            runtime: id,
        });
        let reply = tokio::time::timeout(timeout * 2, enrolling)
            .await
            .map_err(|_| {
                err(format!(
                    "the deployer at {address} did not answer the enrollment within {:?}",
                    timeout * 2
                ))
            })?
            .map_err(|s| {
                err(format!(
                    "the deployer at {address} refused this runtime: {}",
                    s.message()
                ))
            })?
            .into_inner();
        let identity = match key {
            Some(key) => enrolled(&key, reply.certificate.to_vec(), &reply.chain, &reply.roots)?,
            None => {
                announce_plaintext();
                Identity::plaintext_as(id)
            }
        };
        let link = Link {
            address: address.to_owned(),
            channel,
            principal: server.get().cloned().unwrap_or(Principal::Anonymous),
        };
        Ok((identity, link))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_name_their_runtime_and_requests_cannot_ask_for_more() {
        let authority = Arc::new(Authority::generate("test").unwrap());
        let id = crate::ids::runtime_id();
        let identity = Identity::issued(&authority, id).unwrap();
        assert_eq!(identity.runtime_id(), Some(id));

        let bundle = identity.bundle_for(crate::ids::runtime_id()).unwrap();
        let child = Identity::from_bundle(&bundle).unwrap();
        assert!(child.runtime_id().is_some());
        assert_ne!(child.runtime_id(), Some(id));

        let wanted = crate::ids::runtime_id();
        let (_, csr) = request_for(wanted).unwrap();
        let (granted, cert) = authority.sign_request(&csr).unwrap();
        assert_eq!(granted, wanted);
        assert_eq!(
            principal_of(&CertificateDer::from(cert)),
            Some(Principal::Runtime(wanted))
        );
        // An object id (top bit clear) is not a runtime id.
        let (_, csr) = request_for(42).unwrap();
        assert!(authority.sign_request(&csr).is_err());
        assert!(authority.sign_request(b"garbage").is_err());
    }

    #[test]
    fn a_pool_passphrase_gives_the_same_authority_everywhere() {
        let a = Authority::for_pool(b"correct horse battery").unwrap();
        let b = Authority::for_pool(b"correct horse battery").unwrap();
        let c = Authority::for_pool(b"another passphrase").unwrap();
        let a = Arc::new(a);
        let peer = Identity::peer(&a, "10.0.0.1:7400").unwrap();
        // b's roots accept a's peer certificates: same key, same name.
        let b_roots = root_store(&b.cert_pem()).unwrap();
        let c_roots = root_store(&c.cert_pem()).unwrap();
        let cert = match &*peer.inner {
            Inner::Secured(s) => s.server.clone(),
            Inner::Plaintext | Inner::PlaintextAs(_) => unreachable!(),
        };
        drop(cert);
        assert_eq!(b_roots.len(), 1);
        assert_eq!(c_roots.len(), 1);
        assert!(Authority::for_pool(b"short").is_err());
    }
}
