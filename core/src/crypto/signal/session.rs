//! Double Ratchet sessions: PQXDH setup, encrypt, decrypt.

use libsignal_protocol as ls;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::consts::MAX_CIPHERTEXT_BYTES;
use crate::error::{Error, Result};
use crate::store::Overlay;
use crate::time::UnixTime;

use super::*;

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

pub(super) enum Inner {
    Whisper(ls::SignalMessage),
    PreKey(ls::PreKeySignalMessage),
}

pub(super) fn decrypt_inner<'a, R: RngCore + CryptoRng>(
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

pub(super) fn parse_inner(tag: u8, body: &[u8]) -> Result<Inner> {
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
