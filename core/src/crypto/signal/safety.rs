//! Safety numbers: the 60 digits and the QR code two contacts compare.

use libsignal_protocol as ls;

use crate::address::Address;
use crate::consts::{FINGERPRINT_ITERATIONS, FINGERPRINT_VERSION};
use crate::error::{Error, Result};

use super::*;

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
