//! Test fixtures: signed directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use postern_core::crypto::signal::AuthoritySecret;
use postern_core::directory::{self, Directory, ROLES_ALL};
use postern_core::{RelayAddress, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The address of test relay `i`.
pub fn relay(i: u16) -> RelayAddress {
    RelayAddress::new("127.0.0.1", 7000 + i, Some([i as u8; 32])).unwrap()
}

/// A directory of `n` relays (every role) holding keys for the epoch at
/// `t`, issued at `t`, valid for `valid_ms`; its bytes and the verified
/// directory.
pub fn signed_directory(
    t: UnixTime,
    valid_ms: u64,
    epoch_secs: u64,
    n: u16,
) -> (Vec<u8>, Directory) {
    let mut r = ChaCha20Rng::seed_from_u64(t.millis() ^ u64::from(n));
    let authority = AuthoritySecret::generate(&mut r);
    let epoch = directory::epoch_at(epoch_secs, UnixTime(0), t);
    let descriptors: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let key = AuthoritySecret::generate(&mut r);
            let mut sphinx = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut r, &mut sphinx);
            // A valid X25519 public key: any 32 bytes clamp to one.
            directory::sign_descriptor(&key, &relay(i), ROLES_ALL, &[(epoch, sphinx)], t, &mut r)
                .unwrap()
        })
        .collect();
    let signed = directory::sign_directory(
        "t",
        &descriptors,
        t,
        t.plus_millis(valid_ms),
        epoch_secs,
        UnixTime(0),
        &authority,
        &mut r,
    )
    .unwrap();
    let d = Directory::verify(&signed, &[authority.public().unwrap()], 1, t).unwrap();
    (signed, d)
}
