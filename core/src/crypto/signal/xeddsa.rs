//! XEdDSA signing keys that are not part of any Signal session: the
//! mailbox queue keys relays check commands against, and the network
//! authority (and relay descriptor) keys that sign the directory.

use libsignal_protocol as ls;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::codec::{self};
use crate::error::{Error, Result};

use super::*;

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
