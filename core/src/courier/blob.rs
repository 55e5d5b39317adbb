//! Sealing and opening blobs, and what a blob holds inside.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::codec::{self};
use crate::consts::BLOB_BYTES;
use crate::crypto::aead;
use crate::error::{Error, Result};
use crate::relay_proto::Blob;

use super::*;

/// Seals `inner` (at most [`BLOB_INNER_BYTES`], zero-padded) into a blob.
pub(super) fn seal_blob<R: RngCore + CryptoRng>(
    key: &[u8; 32],
    inner: &[u8],
    rng: &mut R,
) -> Result<Blob> {
    if inner.len() > BLOB_INNER_BYTES {
        return Err(Error::Bug("blob content too large"));
    }
    let mut padded = Zeroizing::new([0u8; BLOB_INNER_BYTES]);
    let (head, _) = padded.split_at_mut(inner.len());
    head.copy_from_slice(inner);
    let mut nonce = [0u8; aead::NONCE_BYTES];
    rng.fill_bytes(&mut nonce);
    let ct = aead::seal(key, &nonce, BLOB_AAD, padded.as_slice())?;
    let mut blob: Blob = Box::new([0u8; BLOB_BYTES]);
    let (n, c) = blob.split_at_mut(aead::NONCE_BYTES);
    n.copy_from_slice(&nonce);
    if c.len() != ct.len() {
        return Err(Error::Bug("blob ciphertext length"));
    }
    c.copy_from_slice(&ct);
    Ok(blob)
}

pub(super) fn open_blob(key: &[u8; 32], blob: &[u8; BLOB_BYTES]) -> Result<Zeroizing<Vec<u8>>> {
    let (nonce, ct) = blob.split_at(aead::NONCE_BYTES);
    let nonce = codec::fixed::<{ aead::NONCE_BYTES }>(nonce, WHAT_BLOB)?;
    Ok(Zeroizing::new(aead::open(key, &nonce, BLOB_AAD, ct)?))
}

/// What a blob holds after opening.
pub(super) enum Inner<'a> {
    Fragment {
        msg_ref: [u8; 16],
        index: u8,
        total: u8,
        data: &'a [u8],
    },
    Chunk(&'a [u8]),
}

pub(super) fn parse_inner(inner: &[u8]) -> Result<Inner<'_>> {
    let (&kind, rest) = inner.split_first().ok_or(malformed(WHAT_BLOB))?;
    let (body, padding) = match kind {
        KIND_FRAGMENT => {
            let (msg_ref, rest) = rest.split_first_chunk::<16>().ok_or(malformed(WHAT_BLOB))?;
            let (&[index, total, l0, l1], rest) =
                rest.split_first_chunk::<4>().ok_or(malformed(WHAT_BLOB))?;
            let msg_ref = *msg_ref;
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            if total == 0 || usize::from(total) > MAX_FRAGMENTS || index >= total || len == 0 {
                return Err(malformed(WHAT_BLOB));
            }
            let (data, padding) = rest.split_at_checked(len).ok_or(malformed(WHAT_BLOB))?;
            (
                Inner::Fragment {
                    msg_ref,
                    index,
                    total,
                    data,
                },
                padding,
            )
        }
        KIND_CHUNK => {
            let (len, rest) = rest.split_at_checked(2).ok_or(malformed(WHAT_BLOB))?;
            let len = usize::from(u16::from_be_bytes(
                *len.first_chunk::<2>().ok_or(malformed(WHAT_BLOB))?,
            ));
            let (data, padding) = rest.split_at_checked(len).ok_or(malformed(WHAT_BLOB))?;
            (Inner::Chunk(data), padding)
        }
        _ => return Err(malformed(WHAT_BLOB)),
    };
    if padding.iter().any(|b| *b != 0) {
        return Err(malformed(WHAT_BLOB));
    }
    Ok(body)
}

/// Seals arbitrary blob content under a queue's blob key, so fuzzers and
/// tests can reach the parsers behind the AEAD. Not for protocol use.
#[doc(hidden)]
pub fn seal_raw_blob<R: RngCore + CryptoRng>(
    key: &[u8; 32],
    inner: &[u8],
    rng: &mut R,
) -> Result<Blob> {
    seal_blob(key, inner, rng)
}
