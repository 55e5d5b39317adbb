//! Our own prekeys: signed EC, Kyber (last resort) and one-time prekeys.

use libsignal_protocol as ls;
use ls::GenericSignedPreKey as _;
use rand_core::{CryptoRng, RngCore};

use crate::codec::{self, proto};
use crate::error::{Error, Result};
use crate::store::{Namespace, Overlay, Record};
use crate::time::UnixTime;

use super::*;

pub(super) fn local_identity(o: &Overlay<'_>) -> Result<proto::LocalIdentityRecord> {
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

pub(super) fn id_key(id: u32) -> [u8; 4] {
    id.to_be_bytes()
}

pub(super) fn get_record<'o>(
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
