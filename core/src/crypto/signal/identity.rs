//! Identity keys, the local identity record, and the sealed-sender
//! certificate chain every user signs for itself.

use libsignal_protocol as ls;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::codec::proto;
use crate::error::{Error, Result};
use crate::time::UnixTime;

use super::*;

/// Our long-term identity key pair (secret). `Debug` never shows key bytes.
pub struct IdentitySecret(pub(super) ls::IdentityKeyPair);

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
pub struct IdentityPublic(pub(super) ls::IdentityKey);

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
}
