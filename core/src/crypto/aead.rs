//! The XChaCha20-Poly1305 facade: the only module that imports
//! `chacha20poly1305`. 24-byte nonces, so random nonces are safe.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};

/// Nonce length.
pub const NONCE_BYTES: usize = 24;
/// Tag length.
pub const TAG_BYTES: usize = 16;

/// Encrypts `plaintext`, authenticating `aad` too.
pub fn seal(
    key: &[u8; 32],
    nonce: &[u8; NONCE_BYTES],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Bug("aead encryption"))
}

/// Decrypts and authenticates; any change to key, nonce, `aad` or
/// ciphertext is [`Error::DecryptionFailed`].
pub fn open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_BYTES],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>> {
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| Error::DecryptionFailed {
            reason: "authentication failed",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_any_change() {
        let (k, n) = ([7u8; 32], [9u8; NONCE_BYTES]);
        let ct = seal(&k, &n, b"aad", b"secret").unwrap();
        assert!(open(&[8u8; 32], &n, b"aad", &ct).is_err());
        assert!(open(&k, &[0u8; NONCE_BYTES], b"aad", &ct).is_err());
        assert!(open(&k, &n, b"aaD", &ct).is_err());
        let mut t = ct.clone();
        t[0] ^= 1;
        assert!(open(&k, &n, b"aad", &t).is_err());
        assert!(open(&k, &n, b"aad", &ct[..ct.len() - 1]).is_err());
        assert_eq!(open(&k, &n, b"aad", &ct).unwrap(), b"secret");
    }
}
