//! Attachments: encrypted with a fresh random key each, cut into
//! fixed-size chunks that each fit one onion packet, reassembled from
//! chunks arriving in any order, verified against their digest before
//! anything is shown.
//!
//! Chunk wire format (version 1):
//!
//! ```text
//! version (1) = 0x01 | attachment id (16) | index (u32 BE) | total (u32 BE)
//! | ciphertext = XChaCha20-Poly1305(key, nonce, aad = the 25 bytes before,
//!                                   chunk plaintext)
//! nonce = index (u32 BE) || final (1 byte: 1 on the last chunk, else 0) || 19 zero bytes
//! ```
//!
//! Every chunk but the last carries exactly [`CHUNK_PLAINTEXT_BYTES`]; the
//! last carries the rest (possibly nothing, for an empty attachment). The
//! key is unique per attachment, so nonces derived from the index are
//! never reused; binding the index, the total and a final-chunk flag into
//! nonce and associated data stops reordering, splicing and truncation.
//! A received chunk is authenticated and decrypted once and its plaintext
//! kept in the store's attachment-chunk table (the store is itself
//! encrypted at rest), so a transfer resumes after a restart and memory
//! holds one chunk at a time. Nothing can be read before [`verify`] has
//! checked the whole attachment against its digest: reading takes the
//! [`Verified`] proof that only `verify` makes.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::consts::{CHUNK_PLAINTEXT_BYTES, MAX_ATTACHMENT_BYTES};
use crate::crypto::{aead, hash};
use crate::error::{Error, Result};
use crate::message::AttachmentRef;
use crate::store::{ChangeSet, KvStore};

const CHUNK_VERSION: u8 = 1;
const HEADER_BYTES: usize = 1 + 16 + 4 + 4;
/// Size of a chunk on the wire when full.
pub const CHUNK_WIRE_BYTES: usize = HEADER_BYTES + CHUNK_PLAINTEXT_BYTES + aead::TAG_BYTES;

/// How many chunks an attachment of `size` bytes has (at least one).
pub fn chunk_count(size: u64) -> Result<u32> {
    if size > MAX_ATTACHMENT_BYTES {
        return Err(Error::TooLarge {
            what: "attachment",
            len: usize::try_from(size).unwrap_or(usize::MAX),
            max: usize::try_from(MAX_ATTACHMENT_BYTES).unwrap_or(usize::MAX),
        });
    }
    let per = CHUNK_PLAINTEXT_BYTES as u64;
    let n = size.div_ceil(per).max(1);
    u32::try_from(n).map_err(|_| Error::Bug("chunk count"))
}

fn expected_len(size: u64, index: u32, total: u32) -> usize {
    if index + 1 < total {
        CHUNK_PLAINTEXT_BYTES
    } else {
        let full = u64::from(total - 1) * CHUNK_PLAINTEXT_BYTES as u64;
        usize::try_from(size - full).unwrap_or(usize::MAX)
    }
}

fn nonce(index: u32, last: bool) -> [u8; aead::NONCE_BYTES] {
    let mut n = [0u8; aead::NONCE_BYTES];
    n[..4].copy_from_slice(&index.to_be_bytes());
    n[4] = u8::from(last);
    n
}

fn header(aref: &AttachmentRef, index: u32, total: u32) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0] = CHUNK_VERSION;
    h[1..17].copy_from_slice(&aref.id);
    h[17..21].copy_from_slice(&index.to_be_bytes());
    h[21..25].copy_from_slice(&total.to_be_bytes());
    h
}

/// Starts sending an attachment whose plaintext is `size` bytes with
/// SHA-256 `digest` (see [`hash::Sha256Stream`]): a fresh id and key. An
/// attachment over the size limit is refused here, before anything is sent.
pub fn prepare<R: RngCore + CryptoRng>(
    size: u64,
    digest: [u8; 32],
    rng: &mut R,
) -> Result<AttachmentRef> {
    chunk_count(size)?;
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut());
    Ok(AttachmentRef {
        id,
        key,
        size,
        digest,
    })
}

/// Encrypts chunk `index` (its plaintext must be exactly the slice of the
/// attachment that index covers).
pub fn seal_chunk(aref: &AttachmentRef, index: u32, plaintext: &[u8]) -> Result<Vec<u8>> {
    let total = chunk_count(aref.size)?;
    if index >= total || plaintext.len() != expected_len(aref.size, index, total) {
        return Err(Error::Bug("chunk does not match the attachment's layout"));
    }
    let h = header(aref, index, total);
    let ct = aead::seal(&aref.key, &nonce(index, index + 1 == total), &h, plaintext)?;
    let mut out = Vec::with_capacity(HEADER_BYTES + ct.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Checks and decrypts a received chunk of `aref`.
pub fn open_chunk(aref: &AttachmentRef, wire: &[u8]) -> Result<(u32, Zeroizing<Vec<u8>>)> {
    let what = "attachment chunk";
    if wire.len() > CHUNK_WIRE_BYTES {
        return Err(Error::TooLarge {
            what,
            len: wire.len(),
            max: CHUNK_WIRE_BYTES,
        });
    }
    let (h, ct) = wire
        .split_at_checked(HEADER_BYTES)
        .ok_or(Error::Malformed { what })?;
    if h.first() != Some(&CHUNK_VERSION) {
        return Err(Error::UnsupportedVersion {
            what,
            version: h.first().copied().map_or(0, u32::from),
        });
    }
    if h.get(1..17) != Some(aref.id.as_slice()) {
        return Err(Error::ChunkFromOtherAttachment);
    }
    let field = |r: core::ops::Range<usize>| -> Result<u32> {
        Ok(u32::from_be_bytes(crate::codec::fixed::<4>(
            h.get(r).unwrap_or_default(),
            what,
        )?))
    };
    let (index, total) = (field(17..21)?, field(21..25)?);
    let expected_total = chunk_count(aref.size)?;
    if total != expected_total {
        return Err(Error::Malformed { what });
    }
    if index >= total {
        return Err(Error::ChunkIndexOutOfRange { index, total });
    }
    let pt = aead::open(&aref.key, &nonce(index, index + 1 == total), h, ct)?;
    if pt.len() != expected_len(aref.size, index, total) {
        return Err(Error::Malformed { what });
    }
    Ok((index, Zeroizing::new(pt)))
}

/// Accepts a received chunk: authenticates and decrypts it, and returns
/// the change set that stores its plaintext (empty if that index is
/// already stored: duplicates are ignored).
pub fn receive_chunk(store: &dyn KvStore, aref: &AttachmentRef, wire: &[u8]) -> Result<ChangeSet> {
    let (index, mut pt) = open_chunk(aref, wire)?;
    let mut cs = ChangeSet::new();
    if store.attachment_chunk(&aref.id, index)?.is_none() {
        // Move the plaintext into the change set (it stays zeroize-on-drop
        // there) instead of copying it.
        cs.put_attachment_chunk(aref.id, index, core::mem::take(&mut *pt));
    }
    Ok(cs)
}

/// Proof that an attachment was checked against its digest.
#[derive(Debug)]
pub struct Verified<'a>(&'a AttachmentRef);

/// The chunk indices still missing, to ask the sender for again.
pub fn missing_chunks(store: &dyn KvStore, aref: &AttachmentRef) -> Result<Vec<u32>> {
    let have = store.attachment_chunks(&aref.id)?;
    let total = chunk_count(aref.size)?;
    Ok((0..total)
        .filter(|i| have.binary_search(i).is_err())
        .collect())
}

/// Checks a complete attachment against its digest, one chunk at a time.
/// Nothing may be shown before this returns the [`Verified`] proof.
pub fn verify<'a>(store: &dyn KvStore, aref: &'a AttachmentRef) -> Result<Verified<'a>> {
    let missing = missing_chunks(store, aref)?;
    if !missing.is_empty() {
        return Err(Error::AttachmentIncomplete {
            missing: missing.len(),
        });
    }
    let total = chunk_count(aref.size)?;
    let mut h = hash::Sha256Stream::new();
    for index in 0..total {
        let pt = store
            .attachment_chunk(&aref.id, index)?
            .ok_or(Error::AttachmentIncomplete { missing: 1 })?;
        if pt.len() != expected_len(aref.size, index, total) {
            return Err(Error::Malformed {
                what: "attachment chunk",
            });
        }
        h.update(&pt);
    }
    if h.finish() != aref.digest {
        return Err(Error::DigestMismatch);
    }
    Ok(Verified(aref))
}

/// Reads chunk `index` of a verified attachment.
pub fn read_chunk(store: &dyn KvStore, v: &Verified<'_>, index: u32) -> Result<Zeroizing<Vec<u8>>> {
    Ok(Zeroizing::new(
        store
            .attachment_chunk(&v.0.id, index)?
            .ok_or(Error::AttachmentIncomplete { missing: 1 })?
            .into_owned(),
    ))
}
