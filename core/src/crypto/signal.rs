//! The libsignal facade: the only module in Postern that imports
//! `libsignal-protocol` (an unmodified copy of Signal's libsignal v0.85.3).
//!
//! Everything above this module works with Postern types: [`IdentitySecret`],
//! [`IdentityPublic`], [`VerifiedBundle`], byte strings, and the record store.
//! This module
//! - converts between those and libsignal's types,
//! - backs libsignal's async store traits with the core's synchronous
//!   [`Overlay`] (see [`drive`] for how the futures are run),
//! - maps `SignalProtocolError` to Postern's typed [`Error`] without
//!   carrying message contents along,
//! - takes time and randomness from its caller: it never calls an API of
//!   libsignal that reads the clock or the OS RNG (`KyberPreKeyRecord::generate`
//!   and `sealed_sender_decrypt` do; this module uses `KyberPreKeyRecord::new`
//!   and `sealed_sender_decrypt_to_usmc` plus the session decrypt calls).

use core::cell::RefCell;
use core::future::Future;
use core::task::{Context, Poll, Waker};

use async_trait::async_trait;
use libsignal_protocol as ls;
use ls::GenericSignedPreKey as _;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::codec::{self, proto};
use crate::consts::{
    BUNDLE_VERSION, FINGERPRINT_ITERATIONS, FINGERPRINT_VERSION, MAX_BUNDLE_BYTES,
    MAX_CIPHERTEXT_BYTES, MAX_LAST_RESORT_BASE_KEYS, MAX_SEALED_BYTES,
};
use crate::error::{Error, Result};
use crate::store::{Namespace, Overlay, Record};
use crate::time::UnixTime;

/// The only device id Postern uses: one identity, one device. Evaluated at
/// compile time, so the `panic!` can only ever fail the build.
#[allow(clippy::panic)]
const DEVICE_ID: ls::DeviceId = match ls::DeviceId::new(1) {
    Ok(d) => d,
    Err(_) => panic!("device id 1 is valid"),
};

/// The version byte libsignal writes in front of a sealed-sender v1 message.
const SEALED_SENDER_V1_BYTE: u8 = 0x11;

/// Wire tag of a normal (established-session) message.
pub const CIPHERTEXT_WHISPER: u8 = 2;
/// Wire tag of a PreKey (session-initiating) message.
pub const CIPHERTEXT_PREKEY: u8 = 3;

// ---------------------------------------------------------------------------
// Running libsignal's futures
// ---------------------------------------------------------------------------

/// Runs one of libsignal's store-driven futures to completion.
///
/// libsignal's store traits are `async` and their futures are not `Send`.
/// Postern's stores are synchronous (the [`Overlay`] reads from memory or
/// from a synchronous database handle), so every `.await` inside libsignal
/// resolves on the first poll. We therefore poll exactly once with a no-op
/// waker, on the caller's thread: no executor, no runtime, nothing that
/// needs `Send`, and it works the same on wasm32. A future that is still
/// pending after one poll would mean a store suspended, which ours never
/// do; that is reported as [`Error::Bug`] instead of blocking.
fn drive<T>(fut: impl Future<Output = T>) -> Result<T> {
    let mut fut = core::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(Error::Bug("libsignal store future did not complete")),
    }
}

// ---------------------------------------------------------------------------
// Key types
// ---------------------------------------------------------------------------

/// Our long-term identity key pair (secret). `Debug` never shows key bytes.
pub struct IdentitySecret(ls::IdentityKeyPair);

impl core::fmt::Debug for IdentitySecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("IdentitySecret(<redacted>)")
    }
}

impl IdentitySecret {
    /// Generates a fresh identity key pair.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> IdentitySecret {
        IdentitySecret(ls::IdentityKeyPair::generate(&mut RngAdapter(rng)))
    }

    /// The public half.
    pub fn public(&self) -> IdentityPublic {
        IdentityPublic(*self.0.identity_key())
    }

    /// Serialized form (secret).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize().into_vec())
    }

    /// Restores a serialized key pair.
    pub fn from_bytes(bytes: &[u8]) -> Result<IdentitySecret> {
        ls::IdentityKeyPair::try_from(bytes)
            .map(IdentitySecret)
            .map_err(|_| Error::Malformed {
                what: "identity key pair",
            })
    }
}

/// A public identity key (33 bytes serialized).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdentityPublic(ls::IdentityKey);

impl core::fmt::Debug for IdentityPublic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "IdentityPublic({})", Address::derive(&self.to_bytes()))
    }
}

impl IdentityPublic {
    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.serialize().into_vec()
    }

    /// Parses a serialized public identity key.
    pub fn from_bytes(bytes: &[u8]) -> Result<IdentityPublic> {
        ls::IdentityKey::decode(bytes)
            .map(IdentityPublic)
            .map_err(|_| Error::Malformed {
                what: "identity key",
            })
    }

    /// The address this key derives.
    pub fn address(&self) -> Address {
        Address::derive(&self.to_bytes())
    }
}

/// A Curve25519 private key used as a sealed-sender trust root or server
/// key (secret). `Debug` never shows key bytes.
pub struct SigningSecret(ls::PrivateKey);

impl core::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> SigningSecret {
        SigningSecret(ls::KeyPair::generate(&mut RngAdapter(rng)).private_key)
    }

    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize())
    }

    fn from_bytes(bytes: &[u8], what: &'static str) -> Result<SigningSecret> {
        ls::PrivateKey::deserialize(bytes)
            .map(SigningSecret)
            .map_err(|_| Error::Malformed { what })
    }
}

/// A mailbox queue's key pair (secret): the recipient signs relay
/// commands with it (XEdDSA over Curve25519, libsignal's signatures).
pub struct QueueSecret(ls::PrivateKey);

impl core::fmt::Debug for QueueSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("QueueSecret(<redacted>)")
    }
}

impl QueueSecret {
    /// A fresh queue key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> QueueSecret {
        QueueSecret(ls::KeyPair::generate(&mut RngAdapter(rng)).private_key)
    }

    /// Serialized form (secret, 32 bytes).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize())
    }

    /// Restores a serialized queue key.
    pub fn from_bytes(bytes: &[u8]) -> Result<QueueSecret> {
        ls::PrivateKey::deserialize(bytes)
            .map(QueueSecret)
            .map_err(|_| Error::Malformed { what: "queue key" })
    }

    /// The public half, registered with the relay.
    pub fn public(&self) -> Result<QueuePublic> {
        self.0
            .public_key()
            .map(QueuePublic)
            .map_err(|_| Error::Bug("queue public key"))
    }

    /// Signs `message`.
    pub fn sign<R: RngCore + CryptoRng>(&self, message: &[u8], rng: &mut R) -> Result<[u8; 64]> {
        let sig = self
            .0
            .calculate_signature(message, &mut RngAdapter(rng))
            .map_err(|_| Error::Bug("queue signature"))?;
        codec::fixed::<64>(&sig, "queue signature")
    }
}

/// A mailbox queue's public key (33 bytes serialized).
#[derive(Clone, PartialEq, Eq)]
pub struct QueuePublic(ls::PublicKey);

impl core::fmt::Debug for QueuePublic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("QueuePublic(..)")
    }
}

impl QueuePublic {
    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.serialize().into_vec()
    }

    /// Parses a serialized queue public key (exactly 33 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<QueuePublic> {
        if bytes.len() != 33 {
            return Err(Error::Malformed { what: "queue key" });
        }
        ls::PublicKey::deserialize(bytes)
            .map(QueuePublic)
            .map_err(|_| Error::Malformed { what: "queue key" })
    }

    /// Whether `signature` is this key's signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0.verify_signature(message, signature)
    }
}

/// A long-term signing key (secret) of a directory authority, or of a
/// relay for its descriptors (XEdDSA over Curve25519, libsignal's
/// signatures, like [`QueueSecret`]). `Debug` redacts.
pub struct AuthoritySecret(ls::PrivateKey);

/// A relay's descriptor signing key: the same kind of key as an
/// authority's.
pub type DescriptorSecret = AuthoritySecret;

impl core::fmt::Debug for AuthoritySecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AuthoritySecret(<redacted>)")
    }
}

impl AuthoritySecret {
    /// A fresh signing key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> AuthoritySecret {
        AuthoritySecret(ls::KeyPair::generate(&mut RngAdapter(rng)).private_key)
    }

    /// Serialized form (secret, 32 bytes).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize())
    }

    /// Restores a serialized signing key (exactly 32 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<AuthoritySecret> {
        if bytes.len() != 32 {
            return Err(Error::Malformed {
                what: "signing key",
            });
        }
        ls::PrivateKey::deserialize(bytes)
            .map(AuthoritySecret)
            .map_err(|_| Error::Malformed {
                what: "signing key",
            })
    }

    /// The public half.
    pub fn public(&self) -> Result<AuthorityPublic> {
        self.0
            .public_key()
            .map(AuthorityPublic)
            .map_err(|_| Error::Bug("signing public key"))
    }

    /// Signs `message` (randomized XEdDSA; the randomness comes from `rng`).
    pub fn sign<R: RngCore + CryptoRng>(&self, message: &[u8], rng: &mut R) -> Result<[u8; 64]> {
        let sig = self
            .0
            .calculate_signature(message, &mut RngAdapter(rng))
            .map_err(|_| Error::Bug("signature"))?;
        codec::fixed::<64>(&sig, "signature")
    }
}

/// The public half of an [`AuthoritySecret`] (33 bytes serialized:
/// `0x05` ‖ 32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorityPublic(ls::PublicKey);

/// A relay's descriptor verification key.
pub type DescriptorPublic = AuthorityPublic;

impl core::fmt::Debug for AuthorityPublic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AuthorityPublic(..)")
    }
}

impl AuthorityPublic {
    /// Serialized form (33 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.serialize().into_vec()
    }

    /// Parses a serialized public key (exactly 33 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<AuthorityPublic> {
        if bytes.len() != 33 {
            return Err(Error::Malformed {
                what: "signing public key",
            });
        }
        ls::PublicKey::deserialize(bytes)
            .map(AuthorityPublic)
            .map_err(|_| Error::Malformed {
                what: "signing public key",
            })
    }

    /// Whether `signature` is this key's signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0.verify_signature(message, signature)
    }
}

// ---------------------------------------------------------------------------
// RNG bridge
// ---------------------------------------------------------------------------

/// Bridges a caller-supplied `rand_core` RNG to the `rand` traits libsignal
/// takes (both are rand_core 0.9; this only erases the concrete type).
struct RngAdapter<'r, R: RngCore + CryptoRng>(&'r mut R);

impl<R: RngCore + CryptoRng> RngCore for RngAdapter<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}
impl<R: RngCore + CryptoRng> CryptoRng for RngAdapter<'_, R> {}

// ---------------------------------------------------------------------------
// Local identity generation and sealed-sender certificates
// ---------------------------------------------------------------------------

/// Creates the secret material of a new local identity, as a record.
///
/// Postern has no central server to vouch for senders, so every user is
/// its own sealed-sender trust root: the identity key signs a "server"
/// certificate for a second key (the certificate key), which signs the
/// user's short-lived sender certificates. A recipient checks a sender's
/// chain against the identity key it pinned for that contact.
pub fn new_local_identity<R: RngCore + CryptoRng>(
    address: Option<Address>,
    rng: &mut R,
) -> Result<(proto::LocalIdentityRecord, IdentityPublic)> {
    let identity = IdentitySecret::generate(rng);
    let public = identity.public();
    let address = address.unwrap_or_else(|| public.address());
    let registration_id = (rng.next_u32() % 16380) + 1;
    let server_key = SigningSecret::generate(rng);
    let server_key_id = rng.next_u32();
    let server_public = server_key
        .0
        .public_key()
        .map_err(|_| Error::Bug("private key has no public key"))?;
    let server_cert = ls::ServerCertificate::new(
        server_key_id,
        server_public,
        identity.0.private_key(),
        &mut RngAdapter(rng),
    )
    .map_err(|_| Error::Bug("server certificate"))?;
    let record = proto::LocalIdentityRecord {
        identity_key_pair: identity.to_bytes().to_vec(),
        registration_id,
        server_key_private: server_key.to_bytes().to_vec(),
        server_key_id,
        server_certificate: server_cert
            .serialized()
            .map_err(|_| Error::Bug("server certificate"))?
            .to_vec(),
        sender_certificate: Vec::new(),
        sender_certificate_expires_ms: 0,
        address: address.as_bytes().to_vec(),
    };
    Ok((record, public))
}

/// Issues a sender certificate for our own address valid until `expires`.
pub fn issue_sender_certificate<R: RngCore + CryptoRng>(
    local: &proto::LocalIdentityRecord,
    expires: UnixTime,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let identity = IdentitySecret::from_bytes(&local.identity_key_pair)?;
    let address = Address::from_slice(&local.address).ok_or(Error::Malformed {
        what: "local address",
    })?;
    let server_key = SigningSecret::from_bytes(&local.server_key_private, "server key")?;
    let server_cert =
        ls::ServerCertificate::deserialize(&local.server_certificate).map_err(|_| {
            Error::Malformed {
                what: "server certificate",
            }
        })?;
    let cert = ls::SenderCertificate::new(
        address.to_uuid_string(),
        None,
        *identity.0.public_key(),
        device_id(),
        ls::Timestamp::from_epoch_millis(expires.millis()),
        server_cert,
        &server_key.0,
        &mut RngAdapter(rng),
    )
    .map_err(|_| Error::Bug("sender certificate"))?;
    Ok(cert
        .serialized()
        .map_err(|_| Error::Bug("sender certificate"))?
        .to_vec())
}

fn device_id() -> ls::DeviceId {
    DEVICE_ID
}

fn protocol_address(peer: &Address) -> ls::ProtocolAddress {
    ls::ProtocolAddress::new(peer.to_uuid_string(), device_id())
}

fn parse_protocol_address(addr: &ls::ProtocolAddress) -> Result<Address> {
    Address::parse_uuid_string(addr.name()).ok_or(Error::Bug("non-Postern protocol address"))
}

// ---------------------------------------------------------------------------
// Prekeys
// ---------------------------------------------------------------------------

fn local_identity(o: &Overlay<'_>) -> Result<proto::LocalIdentityRecord> {
    let rec = o
        .get(Namespace::LocalIdentity, &[])?
        .ok_or(Error::NoIdentity)?;
    codec::decode_bounded(
        rec.checked(Namespace::LocalIdentity)?,
        crate::consts::MAX_RECORD_BYTES,
        "local identity record",
    )
}

/// Creates a signed EC prekey record (stored by the caller).
pub fn new_signed_prekey<R: RngCore + CryptoRng>(
    local: &proto::LocalIdentityRecord,
    id: u32,
    now: UnixTime,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let identity = IdentitySecret::from_bytes(&local.identity_key_pair)?;
    let mut rng = RngAdapter(rng);
    let kp = ls::KeyPair::generate(&mut rng);
    let sig = identity
        .0
        .private_key()
        .calculate_signature(&kp.public_key.serialize(), &mut rng)
        .map_err(|_| Error::Bug("signing prekey"))?;
    ls::SignedPreKeyRecord::new(
        id.into(),
        ls::Timestamp::from_epoch_millis(now.millis()),
        &kp,
        &sig,
    )
    .serialize()
    .map_err(|_| Error::Bug("serializing prekey"))
}

/// Creates a Kyber1024 prekey record signed by the identity key.
pub fn new_kyber_prekey<R: RngCore + CryptoRng>(
    local: &proto::LocalIdentityRecord,
    id: u32,
    now: UnixTime,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let identity = IdentitySecret::from_bytes(&local.identity_key_pair)?;
    let mut rng = RngAdapter(rng);
    let kp = ls::kem::KeyPair::generate(ls::kem::KeyType::Kyber1024, &mut rng);
    let sig = identity
        .0
        .private_key()
        .calculate_signature(&kp.public_key.serialize(), &mut rng)
        .map_err(|_| Error::Bug("signing kyber prekey"))?;
    // `KyberPreKeyRecord::new`, not `::generate`: the latter reads the system
    // clock and the OS RNG.
    ls::KyberPreKeyRecord::new(
        id.into(),
        ls::Timestamp::from_epoch_millis(now.millis()),
        &kp,
        &sig,
    )
    .serialize()
    .map_err(|_| Error::Bug("serializing kyber prekey"))
}

/// Creates a one-time EC prekey record.
pub fn new_one_time_prekey<R: RngCore + CryptoRng>(id: u32, rng: &mut R) -> Result<Vec<u8>> {
    let kp = ls::KeyPair::generate(&mut RngAdapter(rng));
    ls::PreKeyRecord::new(id.into(), &kp)
        .serialize()
        .map_err(|_| Error::Bug("serializing prekey"))
}

fn id_key(id: u32) -> [u8; 4] {
    id.to_be_bytes()
}

fn get_record<'o>(
    o: &'o Overlay<'_>,
    ns: Namespace,
    key: &[u8],
) -> Result<Option<std::borrow::Cow<'o, Record>>> {
    match o.get(ns, key)? {
        None => Ok(None),
        Some(r) => {
            r.checked(ns)?;
            Ok(Some(r))
        }
    }
}

/// Builds our prekey bundle from the stored records.
pub fn build_bundle(
    o: &Overlay<'_>,
    signed_prekey_id: u32,
    kyber_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
) -> Result<Vec<u8>> {
    let local = local_identity(o)?;
    let identity = IdentitySecret::from_bytes(&local.identity_key_pair)?;
    let spk = get_record(o, Namespace::SignedPreKey, &id_key(signed_prekey_id))?
        .ok_or(Error::Bug("current signed prekey missing"))?;
    let spk =
        ls::SignedPreKeyRecord::deserialize(&spk.bytes).map_err(|_| corrupt("signed_prekey"))?;
    let kpk = get_record(o, Namespace::KyberPreKey, &id_key(kyber_prekey_id))?
        .ok_or(Error::Bug("kyber prekey missing"))?;
    let kpk =
        ls::KyberPreKeyRecord::deserialize(&kpk.bytes).map_err(|_| corrupt("kyber_prekey"))?;
    let (otp_id, otp) = match one_time_prekey_id {
        None => (None, Vec::new()),
        Some(id) => {
            let r = get_record(o, Namespace::PreKey, &id_key(id))?
                .ok_or(Error::Bug("one-time prekey missing"))?;
            let r = ls::PreKeyRecord::deserialize(&r.bytes).map_err(|_| corrupt("prekey"))?;
            let pk = r.public_key().map_err(|_| corrupt("prekey"))?;
            (Some(id), pk.serialize().into_vec())
        }
    };
    let bundle = proto::PreKeyBundle {
        version: BUNDLE_VERSION,
        address: local.address.clone(),
        registration_id: local.registration_id,
        identity_key: identity.public().to_bytes(),
        signed_prekey_id,
        signed_prekey: spk
            .public_key()
            .map_err(|_| corrupt("signed_prekey"))?
            .serialize()
            .into_vec(),
        signed_prekey_signature: spk.signature().map_err(|_| corrupt("signed_prekey"))?,
        kyber_prekey_id,
        kyber_prekey: kpk
            .public_key()
            .map_err(|_| corrupt("kyber_prekey"))?
            .serialize()
            .into_vec(),
        kyber_prekey_signature: kpk.signature().map_err(|_| corrupt("kyber_prekey"))?,
        one_time_prekey_id: otp_id,
        one_time_prekey: otp,
    };
    Ok(codec::encode(&bundle))
}

fn corrupt(namespace: &'static str) -> Error {
    Error::Store(crate::error::StoreError::Corrupt { namespace })
}

/// A decoded prekey bundle.
///
/// [`verify_bundle`] returns one whose signatures were checked.
/// [`decode_bundle`] returns one whose signatures were not checked yet: the
/// only thing it can be used for is [`initiate_session`], where libsignal
/// checks both prekey signatures itself before using the bundle (checking
/// them twice would double the cost of session setup).
pub struct Bundle {
    address: Address,
    identity: IdentityPublic,
    inner: ls::PreKeyBundle,
}

impl core::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Bundle({})", self.address)
    }
}

impl Bundle {
    /// The address the bundle claims.
    pub fn address(&self) -> Address {
        self.address
    }
    /// The identity key the bundle is for (and signed by).
    pub fn identity(&self) -> IdentityPublic {
        self.identity
    }
}

/// Decodes a prekey bundle and checks its bounded size, version, that it
/// carries a Kyber1024 prekey (Postern never falls back to X3DH) and that
/// every key parses, but not its signatures.
pub fn decode_bundle(bytes: &[u8]) -> Result<Bundle> {
    let b: proto::PreKeyBundle = codec::decode_bounded(bytes, MAX_BUNDLE_BYTES, "prekey bundle")?;
    if b.version != BUNDLE_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "prekey bundle",
            version: b.version,
        });
    }
    if b.kyber_prekey.is_empty() || b.kyber_prekey_signature.is_empty() {
        return Err(Error::BundleWithoutKyber);
    }
    let what = "prekey bundle";
    let address = Address::from_slice(&b.address).ok_or(Error::Malformed { what })?;
    let identity = IdentityPublic::from_bytes(&b.identity_key)?;
    let spk =
        ls::PublicKey::deserialize(&b.signed_prekey).map_err(|_| Error::Malformed { what })?;
    let kpk =
        ls::kem::PublicKey::deserialize(&b.kyber_prekey).map_err(|_| Error::Malformed { what })?;
    if kpk.key_type() != ls::kem::KeyType::Kyber1024 {
        return Err(Error::Malformed { what });
    }
    let otp = match (b.one_time_prekey_id, b.one_time_prekey.is_empty()) {
        (None, true) => None,
        (Some(id), false) => Some((
            id.into(),
            ls::PublicKey::deserialize(&b.one_time_prekey)
                .map_err(|_| Error::Malformed { what })?,
        )),
        _ => return Err(Error::Malformed { what }),
    };
    let inner = ls::PreKeyBundle::new(
        b.registration_id,
        device_id(),
        otp,
        b.signed_prekey_id.into(),
        spk,
        b.signed_prekey_signature,
        b.kyber_prekey_id.into(),
        kpk,
        b.kyber_prekey_signature,
        identity.0,
    )
    .map_err(|_| Error::Malformed { what })?;
    Ok(Bundle {
        address,
        identity,
        inner,
    })
}

/// Checks the identity key's signatures on the signed and Kyber prekeys.
fn check_bundle_signatures(b: &Bundle) -> Result<()> {
    let ik = b.identity.0.public_key();
    let malformed = |_| Error::Malformed {
        what: "prekey bundle",
    };
    let spk = b.inner.signed_pre_key_public().map_err(malformed)?;
    let spk_sig = b.inner.signed_pre_key_signature().map_err(malformed)?;
    if !ik.verify_signature(&spk.serialize(), spk_sig) {
        return Err(Error::BadBundleSignature {
            which: "signed prekey",
        });
    }
    let kpk = b.inner.kyber_pre_key_public().map_err(malformed)?;
    let kpk_sig = b.inner.kyber_pre_key_signature().map_err(malformed)?;
    if !ik.verify_signature(&kpk.serialize(), kpk_sig) {
        return Err(Error::BadBundleSignature {
            which: "Kyber prekey",
        });
    }
    Ok(())
}

/// [`decode_bundle`] plus the signature checks.
pub fn verify_bundle(bytes: &[u8]) -> Result<Bundle> {
    let b = decode_bundle(bytes)?;
    check_bundle_signatures(&b)?;
    Ok(b)
}

// ---------------------------------------------------------------------------
// libsignal store adapter over the Overlay
// ---------------------------------------------------------------------------

/// Shared state of one facade operation: the overlay the operation writes
/// into, and the first Postern error a store callback raised (libsignal
/// only sees a generic failure; we report the precise one).
struct OpState<'a> {
    overlay: Overlay<'a>,
    error: Option<Error>,
    /// The contact record last decoded in this operation. libsignal asks
    /// for the same contact several times per message (trust check, save,
    /// get); the adapter never writes contacts, so one decode serves all.
    contact: Option<(String, Option<proto::ContactRecord>)>,
}

struct Adapter<'c, 'a>(&'c RefCell<OpState<'a>>);

impl Adapter<'_, '_> {
    fn fail(&self, e: Error) -> ls::SignalProtocolError {
        let mut st = self.0.borrow_mut();
        if st.error.is_none() {
            st.error = Some(e);
        }
        ls::SignalProtocolError::InvalidState("postern store", String::new())
    }

    /// Reads a record and parses it while the overlay is borrowed.
    fn read<T>(
        &self,
        ns: Namespace,
        key: &[u8],
        parse: impl FnOnce(&[u8]) -> ls::error::Result<T>,
    ) -> ls::error::Result<Option<T>> {
        let parsed = {
            let st = self.0.borrow();
            match get_record(&st.overlay, ns, key) {
                Ok(None) => Ok(None),
                Ok(Some(r)) => Ok(Some(parse(&r.bytes))),
                Err(e) => Err(e),
            }
        };
        match parsed {
            Ok(None) => Ok(None),
            Ok(Some(Ok(v))) => Ok(Some(v)),
            Ok(Some(Err(_))) => Err(self.fail(corrupt(ns.name()))),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn put(&self, ns: Namespace, key: &[u8], bytes: Vec<u8>) {
        self.0
            .borrow_mut()
            .overlay
            .put(ns, key, Record::current(ns, bytes));
    }

    fn contact(
        &self,
        addr: &ls::ProtocolAddress,
    ) -> ls::error::Result<Option<proto::ContactRecord>> {
        if let Some((name, c)) = &self.0.borrow().contact
            && name == addr.name()
        {
            return Ok(c.clone());
        }
        let peer = parse_protocol_address(addr).map_err(|e| self.fail(e))?;
        let c = self.read(Namespace::Contact, peer.as_bytes(), |b| {
            codec::decode_bounded(b, crate::consts::MAX_RECORD_BYTES, "contact record")
                .map_err(|_| ls::SignalProtocolError::InvalidProtobufEncoding)
        })?;
        self.0.borrow_mut().contact = Some((addr.name().to_string(), c.clone()));
        Ok(c)
    }
}

#[async_trait(?Send)]
impl ls::IdentityKeyStore for Adapter<'_, '_> {
    async fn get_identity_key_pair(&self) -> ls::error::Result<ls::IdentityKeyPair> {
        let local = local_identity(&self.0.borrow().overlay);
        let local = local.map_err(|e| self.fail(e))?;
        ls::IdentityKeyPair::try_from(local.identity_key_pair.as_slice())
            .map_err(|_| self.fail(corrupt("local_identity")))
    }

    async fn get_local_registration_id(&self) -> ls::error::Result<u32> {
        let local = local_identity(&self.0.borrow().overlay);
        Ok(local.map_err(|e| self.fail(e))?.registration_id)
    }

    /// Contacts are created by the e2e layer before libsignal runs, so this
    /// only ever confirms the key already pinned; a different key is refused.
    async fn save_identity(
        &mut self,
        address: &ls::ProtocolAddress,
        identity: &ls::IdentityKey,
    ) -> ls::error::Result<ls::IdentityChange> {
        match self.contact(address)? {
            Some(c) if c.identity_key == identity.serialize().as_ref() => {
                Ok(ls::IdentityChange::NewOrUnchanged)
            }
            _ => Err(ls::SignalProtocolError::UntrustedIdentity(address.clone())),
        }
    }

    /// Fail closed: only the key pinned for the contact is trusted, in both
    /// directions; an unknown peer is never trusted here.
    async fn is_trusted_identity(
        &self,
        address: &ls::ProtocolAddress,
        identity: &ls::IdentityKey,
        _direction: ls::Direction,
    ) -> ls::error::Result<bool> {
        Ok(match self.contact(address)? {
            Some(c) => c.identity_key == identity.serialize().as_ref(),
            None => false,
        })
    }

    async fn get_identity(
        &self,
        address: &ls::ProtocolAddress,
    ) -> ls::error::Result<Option<ls::IdentityKey>> {
        match self.contact(address)? {
            None => Ok(None),
            Some(c) => ls::IdentityKey::decode(&c.identity_key)
                .map(Some)
                .map_err(|_| self.fail(corrupt("contact"))),
        }
    }
}

#[async_trait(?Send)]
impl ls::SessionStore for Adapter<'_, '_> {
    async fn load_session(
        &self,
        address: &ls::ProtocolAddress,
    ) -> ls::error::Result<Option<ls::SessionRecord>> {
        let peer = parse_protocol_address(address).map_err(|e| self.fail(e))?;
        self.read(
            Namespace::Session,
            peer.as_bytes(),
            ls::SessionRecord::deserialize,
        )
    }

    async fn store_session(
        &mut self,
        address: &ls::ProtocolAddress,
        record: &ls::SessionRecord,
    ) -> ls::error::Result<()> {
        let peer = parse_protocol_address(address).map_err(|e| self.fail(e))?;
        self.put(Namespace::Session, peer.as_bytes(), record.serialize()?);
        Ok(())
    }
}

#[async_trait(?Send)]
impl ls::PreKeyStore for Adapter<'_, '_> {
    async fn get_pre_key(&self, id: ls::PreKeyId) -> ls::error::Result<ls::PreKeyRecord> {
        self.read(
            Namespace::PreKey,
            &id_key(id.into()),
            ls::PreKeyRecord::deserialize,
        )?
        .ok_or(ls::SignalProtocolError::InvalidPreKeyId)
    }

    async fn save_pre_key(
        &mut self,
        id: ls::PreKeyId,
        record: &ls::PreKeyRecord,
    ) -> ls::error::Result<()> {
        self.put(Namespace::PreKey, &id_key(id.into()), record.serialize()?);
        Ok(())
    }

    async fn remove_pre_key(&mut self, id: ls::PreKeyId) -> ls::error::Result<()> {
        self.0
            .borrow_mut()
            .overlay
            .delete(Namespace::PreKey, &id_key(id.into()));
        Ok(())
    }
}

#[async_trait(?Send)]
impl ls::SignedPreKeyStore for Adapter<'_, '_> {
    async fn get_signed_pre_key(
        &self,
        id: ls::SignedPreKeyId,
    ) -> ls::error::Result<ls::SignedPreKeyRecord> {
        self.read(
            Namespace::SignedPreKey,
            &id_key(id.into()),
            ls::SignedPreKeyRecord::deserialize,
        )?
        .ok_or(ls::SignalProtocolError::InvalidSignedPreKeyId)
    }

    async fn save_signed_pre_key(
        &mut self,
        id: ls::SignedPreKeyId,
        record: &ls::SignedPreKeyRecord,
    ) -> ls::error::Result<()> {
        self.put(
            Namespace::SignedPreKey,
            &id_key(id.into()),
            record.serialize()?,
        );
        Ok(())
    }
}

#[async_trait(?Send)]
impl ls::KyberPreKeyStore for Adapter<'_, '_> {
    async fn get_kyber_pre_key(
        &self,
        id: ls::KyberPreKeyId,
    ) -> ls::error::Result<ls::KyberPreKeyRecord> {
        self.read(
            Namespace::KyberPreKey,
            &id_key(id.into()),
            ls::KyberPreKeyRecord::deserialize,
        )?
        .ok_or(ls::SignalProtocolError::InvalidKyberPreKeyId)
    }

    async fn save_kyber_pre_key(
        &mut self,
        id: ls::KyberPreKeyId,
        record: &ls::KyberPreKeyRecord,
    ) -> ls::error::Result<()> {
        self.put(
            Namespace::KyberPreKey,
            &id_key(id.into()),
            record.serialize()?,
        );
        Ok(())
    }

    /// One-time Kyber prekeys are deleted on use. The last-resort one stays,
    /// and every base key used with it is remembered so that a replayed
    /// PreKey message is refused (bounded: see [`MAX_LAST_RESORT_BASE_KEYS`]).
    async fn mark_kyber_pre_key_used(
        &mut self,
        id: ls::KyberPreKeyId,
        _ec_prekey_id: ls::SignedPreKeyId,
        base_key: &ls::PublicKey,
    ) -> ls::error::Result<()> {
        let id: u32 = id.into();
        let state: Option<proto::PrekeyStateRecord> =
            self.read(Namespace::PrekeyState, &[], |b| {
                codec::decode_bounded(b, crate::consts::MAX_RECORD_BYTES, "prekey state")
                    .map_err(|_| ls::SignalProtocolError::InvalidProtobufEncoding)
            })?;
        let last_resort = match state {
            Some(s) => s.last_resort_kyber_prekey_id,
            None => return Err(self.fail(corrupt("prekey_state"))),
        };
        if id != last_resort {
            self.0
                .borrow_mut()
                .overlay
                .delete(Namespace::KyberPreKey, &id_key(id));
            return Ok(());
        }
        let mut usage: proto::KyberUsageRecord = self
            .read(Namespace::KyberUsage, &id_key(id), |b| {
                codec::decode_bounded(b, crate::consts::MAX_RECORD_BYTES, "kyber usage")
                    .map_err(|_| ls::SignalProtocolError::InvalidProtobufEncoding)
            })?
            .unwrap_or_default();
        let bk = base_key.serialize().into_vec();
        if usage.base_keys.contains(&bk) {
            return Err(self.fail(Error::ReplayedPrekeyMessage));
        }
        if usage.base_keys.len() >= MAX_LAST_RESORT_BASE_KEYS {
            return Err(self.fail(Error::Bug("last-resort Kyber prekey must be rotated")));
        }
        usage.base_keys.push(bk);
        self.put(Namespace::KyberUsage, &id_key(id), codec::encode(&usage));
        Ok(())
    }
}

/// Runs `f` with libsignal stores backed by `overlay`; on success returns
/// the overlay with the operation's writes, on failure the precise error.
fn with_stores<'a, T>(
    overlay: Overlay<'a>,
    f: impl for<'c> FnOnce(&mut Adapter<'c, 'a>, &mut Adapter<'c, 'a>) -> Result<ls::error::Result<T>>,
) -> Result<(T, Overlay<'a>)> {
    let cell = RefCell::new(OpState {
        overlay,
        error: None,
        contact: None,
    });
    let outcome = {
        let mut a = Adapter(&cell);
        let mut b = Adapter(&cell);
        f(&mut a, &mut b)
    };
    let st = cell.into_inner();
    match outcome? {
        Ok(v) => Ok((v, st.overlay)),
        Err(e) => Err(st.error.unwrap_or_else(|| map_error(e))),
    }
}

/// Translates libsignal's errors into Postern's, dropping any free text.
fn map_error(e: ls::SignalProtocolError) -> Error {
    use ls::SignalProtocolError as E;
    match e {
        E::UntrustedIdentity(addr) => match parse_protocol_address(&addr) {
            Ok(peer) => Error::IdentityKeyChanged { peer },
            Err(e) => e,
        },
        E::DuplicatedMessage(..) => Error::DuplicateMessage,
        E::InvalidMessage(_, "reused base key") => Error::ReplayedPrekeyMessage,
        E::InvalidMessage(_, reason) => Error::DecryptionFailed { reason },
        E::InvalidPreKeyId | E::InvalidSignedPreKeyId | E::InvalidKyberPreKeyId => {
            Error::UnknownPrekey
        }
        E::SessionNotFound(addr) => match parse_protocol_address(&addr) {
            Ok(peer) => Error::NoSession { peer },
            Err(e) => e,
        },
        E::SignatureValidationFailed => Error::BadBundleSignature { which: "prekey" },
        E::InvalidProtobufEncoding
        | E::CiphertextMessageTooShort(_)
        | E::LegacyCiphertextVersion(_)
        | E::UnrecognizedCiphertextVersion(_)
        | E::UnrecognizedMessageVersion(_)
        | E::NoKeyTypeIdentifier
        | E::BadKeyType(_)
        | E::BadKeyLength(..)
        | E::BadKEMKeyType(_)
        | E::WrongKEMKeyType(..)
        | E::BadKEMKeyLength(..)
        | E::BadKEMCiphertextLength(..) => Error::Malformed {
            what: "Signal message",
        },
        E::InvalidSealedSenderMessage(_) | E::UnknownSealedSenderVersion(_) => {
            Error::DecryptionFailed {
                reason: "sealed sender envelope",
            }
        }
        E::SealedSenderSelfSend => Error::DecryptionFailed {
            reason: "message from ourselves",
        },
        E::InvalidSessionStructure(_) | E::InvalidState(..) => Error::DecryptionFailed {
            reason: "session state rejected the message",
        },
        _ => Error::DecryptionFailed {
            reason: "protocol error",
        },
    }
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

/// Runs PQXDH with a verified bundle and stores the new session. The
/// bundle's owner must already be a contact with that identity key.
///
/// libsignal verifies the bundle's signatures; when it refuses one, the
/// error names which signature failed.
pub fn initiate_session<'a, R: RngCore + CryptoRng>(
    overlay: Overlay<'a>,
    bundle: &Bundle,
    now: UnixTime,
    rng: &mut R,
) -> Result<Overlay<'a>> {
    let addr = protocol_address(&bundle.address);
    let outcome = with_stores(overlay, |sessions, identities| {
        drive(ls::process_prekey_bundle(
            &addr,
            sessions,
            identities,
            &bundle.inner,
            now.to_system_time(),
            &mut RngAdapter(rng),
        ))
    });
    match outcome {
        Ok(((), o)) => Ok(o),
        Err(Error::BadBundleSignature { .. }) => {
            check_bundle_signatures(bundle)?;
            Err(Error::Bug("libsignal refused signatures that verify"))
        }
        Err(e) => Err(e),
    }
}

/// Encrypts with the session for `peer`; returns `[type || libsignal bytes]`.
pub fn encrypt<'a, R: RngCore + CryptoRng>(
    overlay: Overlay<'a>,
    peer: &Address,
    plaintext: &[u8],
    now: UnixTime,
    rng: &mut R,
) -> Result<(Vec<u8>, Overlay<'a>)> {
    let addr = protocol_address(peer);
    let (msg, o) = with_stores(overlay, |sessions, identities| {
        drive(ls::message_encrypt(
            plaintext,
            &addr,
            sessions,
            identities,
            now.to_system_time(),
            &mut RngAdapter(rng),
        ))
    })?;
    let tag = match msg.message_type() {
        ls::CiphertextMessageType::Whisper => CIPHERTEXT_WHISPER,
        ls::CiphertextMessageType::PreKey => CIPHERTEXT_PREKEY,
        _ => return Err(Error::Bug("unexpected ciphertext type")),
    };
    let mut out = Vec::with_capacity(1 + msg.serialize().len());
    out.push(tag);
    out.extend_from_slice(msg.serialize());
    Ok((out, o))
}

enum Inner {
    Whisper(ls::SignalMessage),
    PreKey(ls::PreKeySignalMessage),
}

fn decrypt_inner<'a, R: RngCore + CryptoRng>(
    overlay: Overlay<'a>,
    peer: &Address,
    msg: &Inner,
    rng: &mut R,
) -> Result<(Zeroizing<Vec<u8>>, Overlay<'a>)> {
    let addr = protocol_address(peer);
    let (pt, o) = with_stores(overlay, |a, b| {
        let mut rng = RngAdapter(rng);
        match msg {
            Inner::Whisper(m) => drive(ls::message_decrypt_signal(m, &addr, a, b, &mut rng)),
            Inner::PreKey(m) => {
                // libsignal wants five store handles; all share one overlay.
                let cell = a.0;
                let mut pk = Adapter(cell);
                let spk = Adapter(cell);
                let mut kpk = Adapter(cell);
                drive(ls::message_decrypt_prekey(
                    m, &addr, a, b, &mut pk, &spk, &mut kpk, &mut rng,
                ))
            }
        }
    })?;
    Ok((Zeroizing::new(pt), o))
}

/// Decrypts `[type || libsignal bytes]` from `peer`.
pub fn decrypt<'a, R: RngCore + CryptoRng>(
    overlay: Overlay<'a>,
    peer: &Address,
    wire: &[u8],
    rng: &mut R,
) -> Result<(Zeroizing<Vec<u8>>, Overlay<'a>)> {
    if wire.len() > MAX_CIPHERTEXT_BYTES {
        return Err(Error::TooLarge {
            what: "Signal message",
            len: wire.len(),
            max: MAX_CIPHERTEXT_BYTES,
        });
    }
    let (tag, body) = wire.split_first().ok_or(Error::Malformed {
        what: "Signal message",
    })?;
    let inner = parse_inner(*tag, body)?;
    decrypt_inner(overlay, peer, &inner, rng)
}

fn parse_inner(tag: u8, body: &[u8]) -> Result<Inner> {
    let what = "Signal message";
    let inner = match tag {
        CIPHERTEXT_WHISPER => ls::SignalMessage::try_from(body)
            .map(Inner::Whisper)
            .map_err(|_| Error::Malformed { what })?,
        CIPHERTEXT_PREKEY => ls::PreKeySignalMessage::try_from(body)
            .map(Inner::PreKey)
            .map_err(|_| Error::Malformed { what })?,
        _ => return Err(Error::Malformed { what }),
    };
    let spqr = match &inner {
        Inner::Whisper(m) => m.pq_ratchet(),
        Inner::PreKey(m) => m.message().pq_ratchet(),
    };
    check_spqr_field(spqr)?;
    Ok(inner)
}

/// Rejects SPQR fields that would make libsignal's SPQR code (spqr 0.85.3)
/// panic. libsignal feeds this field to SPQR *before* it checks the
/// message MAC, and SPQR's message decoder indexes past the end of a short
/// message, overflows a shift on an over-long varint, and underflows on
/// epoch 0. Anyone who can hand us bytes could otherwise crash the client.
/// This mirrors the header of SPQR's v1 message format
/// (`version | varint epoch | varint index | type | [varint chunk index ...]`)
/// and only lets through what SPQR decodes without panicking; the rest of
/// the message is authenticated by libsignal as usual.
fn check_spqr_field(p: &[u8]) -> Result<()> {
    const SPQR_V1: u8 = 1;
    const MAX_VARINT_BYTES: usize = 10;
    let bad = || Error::Malformed {
        what: "Signal message (SPQR field)",
    };
    // Empty (no SPQR message) and other versions are handled by SPQR's
    // version negotiation without decoding the message.
    let Some((&version, rest)) = p.split_first() else {
        return Ok(());
    };
    if version != SPQR_V1 {
        return Ok(());
    }
    let varint = |buf: &[u8]| -> Option<(u64, usize)> {
        let mut v = 0u64;
        for (i, b) in buf.iter().enumerate().take(MAX_VARINT_BYTES) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some((v, i + 1));
            }
        }
        None
    };
    let (epoch, n) = varint(rest).ok_or_else(bad)?;
    let rest = rest.get(n..).ok_or_else(bad)?;
    let (index, n) = varint(rest).ok_or_else(bad)?;
    let rest = rest.get(n..).ok_or_else(bad)?;
    if epoch == 0 || u32::try_from(index).is_err() {
        return Err(bad());
    }
    // The message type byte must be present.
    let (_msg_type, rest) = rest.split_first().ok_or_else(bad)?;
    // A chunk, if any, starts with a varint that must also be bounded.
    if !rest.is_empty() {
        let (chunk_index, n) = varint(rest).ok_or_else(bad)?;
        if chunk_index > u64::from(u16::MAX) || rest.len() < n + 32 {
            return Err(bad());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Sealed sender
// ---------------------------------------------------------------------------

/// Encrypts to `peer` and seals the result with our sender certificate, so
/// that only `peer` learns who sent it.
pub fn seal<'a, R: RngCore + CryptoRng>(
    overlay: Overlay<'a>,
    peer: &Address,
    sender_certificate: &[u8],
    plaintext: &[u8],
    now: UnixTime,
    rng: &mut R,
) -> Result<(Vec<u8>, Overlay<'a>)> {
    let cert = ls::SenderCertificate::deserialize(sender_certificate)
        .map_err(|_| corrupt("local_identity"))?;
    let addr = protocol_address(peer);
    with_stores(overlay, |sessions, identities| {
        drive(ls::sealed_sender_encrypt(
            &addr,
            &cert,
            plaintext,
            sessions,
            identities,
            now.to_system_time(),
            &mut RngAdapter(rng),
        ))
    })
}

/// Opens a sealed-sender message: removes the envelope, looks up the
/// identity key pinned for the sender through `pinned`, checks that the
/// certificate names that key, that its chain leads to that key (each user
/// is its own trust root) and that it has not expired at `now`, then
/// decrypts the inner message.
pub fn open<'a, R: RngCore + CryptoRng>(
    overlay: Overlay<'a>,
    sealed: &[u8],
    now: UnixTime,
    pinned: impl FnOnce(&Overlay<'a>, &Address) -> Result<Option<IdentityPublic>>,
    rng: &mut R,
) -> Result<(Address, Zeroizing<Vec<u8>>, Overlay<'a>)> {
    if sealed.len() > MAX_SEALED_BYTES {
        return Err(Error::TooLarge {
            what: "sealed message",
            len: sealed.len(),
            max: MAX_SEALED_BYTES,
        });
    }
    // libsignal ignores the low nibble of the version byte; Postern accepts
    // only the byte libsignal writes, so that a sealed message has exactly
    // one encoding (no malleable bits).
    if sealed.first() != Some(&SEALED_SENDER_V1_BYTE) {
        return Err(Error::Malformed {
            what: "sealed message",
        });
    }
    let (usmc, overlay) = with_stores(overlay, |_, identities| {
        drive(ls::sealed_sender_decrypt_to_usmc(sealed, identities))
    })?;
    let bad = |reason| Error::SenderCertificateRejected { reason };
    let sender = usmc.sender().map_err(|_| bad("malformed"))?;
    let peer = Address::parse_uuid_string(sender.sender_uuid().map_err(|_| bad("malformed"))?)
        .ok_or(bad("sender is not a Postern address"))?;
    if sender.sender_device_id().map_err(|_| bad("malformed"))? != device_id() {
        return Err(bad("unknown device"));
    }
    let pin = pinned(&overlay, &peer)?.ok_or(Error::UnknownTrustRoot)?;
    let root = *pin.0.public_key();
    let cert_key = sender.key().map_err(|_| bad("malformed"))?;
    if cert_key != root {
        return Err(Error::IdentityKeyChanged { peer });
    }
    let valid_chain = sender
        .validate(&root, ls::Timestamp::from_epoch_millis(0))
        .map_err(|_| bad("malformed"))?;
    if !valid_chain {
        return Err(bad("untrusted chain"));
    }
    let expiry = sender.expiration().map_err(|_| bad("malformed"))?;
    if now.millis() > expiry.epoch_millis() {
        return Err(bad("expired"));
    }
    let contents = usmc.contents().map_err(|_| bad("malformed"))?;
    let inner = match usmc.msg_type().map_err(|_| bad("malformed"))? {
        ls::CiphertextMessageType::Whisper => parse_inner(CIPHERTEXT_WHISPER, contents)?,
        ls::CiphertextMessageType::PreKey => parse_inner(CIPHERTEXT_PREKEY, contents)?,
        _ => {
            return Err(Error::Malformed {
                what: "sealed message",
            });
        }
    };
    let (pt, o) = decrypt_inner(overlay, &peer, &inner, rng)?;
    Ok((peer, pt, o))
}

// ---------------------------------------------------------------------------
// Safety numbers
// ---------------------------------------------------------------------------

/// A safety number for a pair of identities.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    /// The 60-digit display form.
    pub digits: String,
    /// The scannable (QR) form: libsignal's `ScannableFingerprint` encoding.
    pub scannable: Vec<u8>,
}

impl core::fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SafetyNumber({})", self.digits)
    }
}

/// Computes the safety number between us and a peer (Signal's algorithm:
/// version 2, 5200 iterations; the addresses are the stable identifiers).
pub fn safety_number(
    local: &Address,
    local_key: &IdentityPublic,
    remote: &Address,
    remote_key: &IdentityPublic,
) -> Result<SafetyNumber> {
    let fp = ls::Fingerprint::new(
        FINGERPRINT_VERSION,
        FINGERPRINT_ITERATIONS,
        local.as_bytes(),
        &local_key.0,
        remote.as_bytes(),
        &remote_key.0,
    )
    .map_err(|_| Error::Bug("fingerprint"))?;
    Ok(SafetyNumber {
        digits: fp.display_string().map_err(|_| Error::Bug("fingerprint"))?,
        scannable: fp
            .scannable
            .serialize()
            .map_err(|_| Error::Bug("fingerprint"))?,
    })
}

/// Compares a scanned code with our own scannable safety number. Returns
/// `Ok(true)` only if the other side computed the same number for the same
/// pair of keys.
pub fn compare_scanned(ours: &SafetyNumber, scanned: &[u8]) -> Result<bool> {
    if scanned.len() > 1024 {
        return Err(Error::BadSafetyNumberCode);
    }
    let mine = ls::ScannableFingerprint::deserialize(&ours.scannable)
        .map_err(|_| Error::Bug("fingerprint"))?;
    match mine.compare(scanned) {
        Ok(same) => Ok(same),
        Err(_) => Err(Error::BadSafetyNumberCode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn secret_debug_redacts_key_bytes() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let id = IdentitySecret::generate(&mut rng);
        let s = format!("{id:?}");
        let bytes = id.to_bytes();
        assert!(s.contains("redacted"));
        for window in bytes.windows(4) {
            let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!s.contains(&hex));
        }
        let sk = SigningSecret::generate(&mut rng);
        assert_eq!(format!("{sk:?}"), "SigningSecret(<redacted>)");
        let ak = AuthoritySecret::generate(&mut rng);
        assert_eq!(format!("{ak:?}"), "AuthoritySecret(<redacted>)");
    }

    #[test]
    fn drive_reports_pending_as_bug() {
        let r = drive(core::future::pending::<()>());
        assert!(matches!(r, Err(Error::Bug(_))));
    }
}
