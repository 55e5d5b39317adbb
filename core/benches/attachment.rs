//! Attachment throughput: chunk + encrypt, and receive + verify + read
//! (reassembly and decryption through a MemStore), for a 10 MiB
//! attachment, against the raw XChaCha20-Poly1305 throughput of the same
//! chunk sizes in the same run.
//!
//! `cargo bench -p postern-core --bench attachment` prints MiB/s and the
//! ratios (target >= 0.7). Under `cargo test` it runs a 100 KiB version.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::time::Instant;

use postern_core::attachment;
use postern_core::consts::CHUNK_PLAINTEXT_BYTES;
use postern_core::crypto::{aead, hash::Sha256Stream};
use postern_core::{KvStore, MemStore};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(v);
    }
    (best, out.unwrap())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let len = if full { 10 * 1024 * 1024 } else { 100 * 1024 };
    let runs = if full { 5 } else { 1 };
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mib = len as f64 / (1024.0 * 1024.0);
    let mut rng = ChaCha20Rng::seed_from_u64(1);

    // Raw AEAD over the same pieces.
    let key = [7u8; 32];
    let (raw_seal, sealed) = best_of(runs, || {
        data.chunks(CHUNK_PLAINTEXT_BYTES)
            .enumerate()
            .map(|(i, c)| {
                let mut n = [0u8; aead::NONCE_BYTES];
                n[..8].copy_from_slice(&(i as u64).to_be_bytes());
                aead::seal(&key, &n, b"", c).unwrap()
            })
            .collect::<Vec<_>>()
    });
    let (raw_open, _) = best_of(runs, || {
        for (i, c) in sealed.iter().enumerate() {
            let mut n = [0u8; aead::NONCE_BYTES];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            std::hint::black_box(aead::open(&key, &n, b"", c).unwrap());
        }
    });

    // Postern: digest + prepare + chunk + encrypt.
    let (send, (aref, chunks)) = best_of(runs, || {
        let mut h = Sha256Stream::new();
        h.update(&data);
        let aref = attachment::prepare(len as u64, h.finish(), &mut rng).unwrap();
        let chunks: Vec<Vec<u8>> = data
            .chunks(CHUNK_PLAINTEXT_BYTES)
            .enumerate()
            .map(|(i, c)| attachment::seal_chunk(&aref, i as u32, c).unwrap())
            .collect();
        (aref, chunks)
    });
    // Postern: receive (check + store) every chunk, verify the digest, read.
    let (recv, _) = best_of(runs, || {
        let mut store = MemStore::new();
        for c in &chunks {
            let cs = attachment::receive_chunk(&store, &aref, c).unwrap();
            store.commit(cs).unwrap();
        }
        let v = attachment::verify(&store, &aref).unwrap();
        let total = attachment::chunk_count(aref.size).unwrap();
        for i in 0..total {
            std::hint::black_box(attachment::read_chunk(&store, &v, i).unwrap());
        }
        store.len()
    });
    println!(
        "attachment of {mib:.2} MiB in {} chunks (best of {runs})",
        chunks.len()
    );
    println!(
        "{:<44}{:>10}{:>12}{:>8}",
        "", "Postern", "raw AEAD", "ratio"
    );
    println!(
        "{:<44}{:>6.0} MiB/s{:>8.0} MiB/s{:>8.2}",
        "chunk + encrypt (incl. SHA-256 digest)",
        mib / send,
        mib / raw_seal,
        raw_seal / send
    );
    println!(
        "{:<44}{:>6.0} MiB/s{:>8.0} MiB/s{:>8.2}",
        "decrypt + reassemble + verify digest + read",
        mib / recv,
        mib / raw_open,
        raw_open / recv
    );
}
