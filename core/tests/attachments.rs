//! Attachments: rejection first, then round trips with chunks shuffled and
//! duplicated, and resumption.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use postern_core::attachment::{self, CHUNK_WIRE_BYTES};
use postern_core::consts::{CHUNK_PLAINTEXT_BYTES, MAX_ATTACHMENT_BYTES};
use postern_core::crypto::hash::Sha256Stream;
use postern_core::message::AttachmentRef;
use postern_core::{Error, ErrorKind, KvStore, MemStore};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn send(data: &[u8], rng: &mut ChaCha20Rng) -> (AttachmentRef, Vec<Vec<u8>>) {
    let mut h = Sha256Stream::new();
    h.update(data);
    let aref = attachment::prepare(data.len() as u64, h.finish(), rng).unwrap();
    let total = attachment::chunk_count(aref.size).unwrap();
    let chunks = (0..total)
        .map(|i| {
            let start = i as usize * CHUNK_PLAINTEXT_BYTES;
            let end = (start + CHUNK_PLAINTEXT_BYTES).min(data.len());
            attachment::seal_chunk(&aref, i, &data[start..end]).unwrap()
        })
        .collect();
    (aref, chunks)
}

fn read_all(store: &MemStore, aref: &AttachmentRef) -> Vec<u8> {
    let v = attachment::verify(store, aref).unwrap();
    let total = attachment::chunk_count(aref.size).unwrap();
    (0..total)
        .flat_map(|i| attachment::read_chunk(store, &v, i).unwrap().to_vec())
        .collect()
}

#[test]
fn rejects_bad_tag_other_attachment_index_and_truncation() {
    let mut r = ChaCha20Rng::seed_from_u64(1);
    let (a, chunks) = send(&content(3 * CHUNK_PLAINTEXT_BYTES + 100, 1), &mut r);
    let (b, other) = send(&content(3 * CHUNK_PLAINTEXT_BYTES + 100, 2), &mut r);
    let store = MemStore::new();
    // Bad tag (any flipped bit in header or ciphertext).
    for pos in [0usize, 5, 18, 22, 30, chunks[1].len() - 1] {
        let mut t = chunks[1].clone();
        t[pos] ^= 1;
        let e = attachment::receive_chunk(&store, &a, &t).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PeerMisbehaved, "pos {pos}: {e:?}");
    }
    // A chunk of another attachment.
    assert!(matches!(
        attachment::receive_chunk(&store, &a, &other[0]),
        Err(Error::ChunkFromOtherAttachment)
    ));
    // Same id, other key (a forged chunk): authentication fails.
    let forged = AttachmentRef {
        id: a.id,
        ..b.clone()
    };
    let e = attachment::receive_chunk(&store, &forged, &chunks[0]).unwrap_err();
    assert!(matches!(e, Error::DecryptionFailed { .. }), "{e:?}");
    // Index past the total (header rewritten; also fails authentication if
    // it were in range, but the range check comes first).
    let mut past = chunks[0].clone();
    past[17..21].copy_from_slice(&9u32.to_be_bytes());
    assert!(matches!(
        attachment::receive_chunk(&store, &a, &past),
        Err(Error::ChunkIndexOutOfRange { index: 9, total: 4 })
    ));
    // Truncated final chunk, and a final chunk passed off as a middle one.
    let last = chunks.last().unwrap();
    assert!(attachment::receive_chunk(&store, &a, &last[..last.len() - 1]).is_err());
    let mut moved = last.clone();
    moved[17..21].copy_from_slice(&1u32.to_be_bytes());
    assert!(attachment::receive_chunk(&store, &a, &moved).is_err());
    // Oversized and empty input.
    assert!(matches!(
        attachment::receive_chunk(&store, &a, &vec![1; CHUNK_WIRE_BYTES + 1]),
        Err(Error::TooLarge { .. })
    ));
    assert!(attachment::receive_chunk(&store, &a, &[]).is_err());
    // Nothing was stored by any of it.
    assert!(store.attachments().unwrap().is_empty());
}

#[test]
fn rejects_digest_mismatch_before_anything_is_shown() {
    let mut r = ChaCha20Rng::seed_from_u64(2);
    let data = content(5000, 3);
    let (mut aref, chunks) = send(&data, &mut r);
    aref.digest[0] ^= 1; // the envelope promised other content
    let mut store = MemStore::new();
    for c in &chunks {
        let cs = attachment::receive_chunk(&store, &aref, c).unwrap();
        store.commit(cs).unwrap();
    }
    assert!(matches!(
        attachment::verify(&store, &aref),
        Err(Error::DigestMismatch)
    ));
}

#[test]
fn rejects_oversized_attachment_before_sending() {
    let mut r = ChaCha20Rng::seed_from_u64(3);
    assert!(matches!(
        attachment::prepare(MAX_ATTACHMENT_BYTES + 1, [0; 32], &mut r),
        Err(Error::TooLarge { .. })
    ));
    assert!(attachment::prepare(MAX_ATTACHMENT_BYTES, [0; 32], &mut r).is_ok());
}

#[test]
fn round_trips_in_any_order_with_duplicates_and_resumes() {
    let mut r = ChaCha20Rng::seed_from_u64(4);
    for len in [
        0,
        1,
        CHUNK_PLAINTEXT_BYTES - 1,
        CHUNK_PLAINTEXT_BYTES,
        CHUNK_PLAINTEXT_BYTES + 1,
        10 * CHUNK_PLAINTEXT_BYTES + 7,
        200_000,
    ] {
        let data = content(len, 9);
        let (aref, chunks) = send(&data, &mut r);
        for c in &chunks {
            assert!(c.len() <= CHUNK_WIRE_BYTES);
        }
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        order.shuffle(&mut r);
        // Duplicates along the way.
        for _ in 0..order.len() / 3 {
            let d = order[r.random_range(0..order.len())];
            order.push(d);
        }
        order.shuffle(&mut r);
        let mut store = MemStore::new();
        let half = order.len() / 2;
        for &i in &order[..half] {
            let cs = attachment::receive_chunk(&store, &aref, &chunks[i]).unwrap();
            store.commit(cs).unwrap();
        }
        if attachment::missing_chunks(&store, &aref)
            .unwrap()
            .is_empty()
        {
            assert!(attachment::verify(&store, &aref).is_ok());
        } else {
            assert!(matches!(
                attachment::verify(&store, &aref),
                Err(Error::AttachmentIncomplete { .. })
            ));
        }
        // "Restart": the store is all that survives; ask only for what is missing.
        let restarted = store.clone();
        let missing = attachment::missing_chunks(&restarted, &aref).unwrap();
        let mut store = restarted;
        for i in missing {
            let cs = attachment::receive_chunk(&store, &aref, &chunks[i as usize]).unwrap();
            store.commit(cs).unwrap();
        }
        attachment::verify(&store, &aref).unwrap();
        assert_eq!(read_all(&store, &aref), data, "len {len}");
    }
}

#[test]
fn chunk_wire_format_vector() {
    // A change to the chunk format shows up here.
    let aref = AttachmentRef {
        id: [0x11; 16],
        key: zeroize::Zeroizing::new([0x22; 32]),
        size: 2,
        digest: [0; 32],
    };
    let c = attachment::seal_chunk(&aref, 0, b"hi").unwrap();
    assert_eq!(
        &c[..25],
        &[[1u8].as_slice(), &[0x11; 16], &[0, 0, 0, 0], &[0, 0, 0, 1]].concat()[..]
    );
    assert_eq!(c.len(), 25 + 2 + 16);
}
