//! Prekey bundles: building ours from the store, decoding and verifying
//! a contact's.

use libsignal_protocol as ls;
use ls::GenericSignedPreKey as _;

use crate::address::Address;
use crate::codec::{self, proto};
use crate::consts::{BUNDLE_VERSION, MAX_BUNDLE_BYTES};
use crate::error::{Error, Result};
use crate::store::{Namespace, Overlay};

use super::*;

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

pub(super) fn corrupt(namespace: &'static str) -> Error {
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
    pub(super) address: Address,
    pub(super) identity: IdentityPublic,
    pub(super) inner: ls::PreKeyBundle,
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
pub(super) fn check_bundle_signatures(b: &Bundle) -> Result<()> {
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
