//! Argon2id with the parameters the browser client ships (the native
//! ones), timed natively: the benchmark's reference for the browser's
//! unlock time. `cargo run --release -p postern-browser --example kdf`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use postern_core::crypto::kdf::{self, KdfParams};

fn main() {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let _ = kdf::derive_key(
            b"benchmark passphrase",
            &[7; kdf::SALT_BYTES],
            KdfParams::DEFAULT,
        )
        .unwrap();
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!("native Argon2id (64 MiB, 3 passes), best of 5: {best:.0} ms");
}
