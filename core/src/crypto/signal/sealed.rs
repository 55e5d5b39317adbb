//! Sealed sender: hiding the sender's identity inside the ciphertext.

use libsignal_protocol as ls;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::consts::MAX_SEALED_BYTES;
use crate::error::{Error, Result};
use crate::store::Overlay;
use crate::time::UnixTime;

use super::*;

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
