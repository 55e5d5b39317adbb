//! Test fixtures: signed directories, relays, queues, a contact pair
//! (also for the tests of the crates above the engine, with the `testing`
//! feature).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    missing_debug_implementations
)]

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
    let (signed, authority) = signed_directory_by(t, valid_ms, epoch_secs, n);
    let d = Directory::verify(&signed, &[authority.public().unwrap()], 1, t).unwrap();
    (signed, d)
}

/// [`signed_directory`]'s bytes and the authority that signed them.
pub fn signed_directory_by(
    t: UnixTime,
    valid_ms: u64,
    epoch_secs: u64,
    n: u16,
) -> (Vec<u8>, AuthoritySecret) {
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
    (signed, authority)
}

/// A queue on test relay `at`.
pub fn queue(r: &mut ChaCha20Rng, at: u16) -> postern_core::courier::CreatedQueue {
    use rand_core::RngCore as _;
    let (mut recipient_id, mut sender_id) = ([0u8; 16], [0u8; 16]);
    r.fill_bytes(&mut recipient_id);
    r.fill_bytes(&mut sender_id);
    postern_core::courier::CreatedQueue {
        relay: relay(at),
        keys: postern_core::courier::QueueKeys::generate(r),
        recipient_id,
        sender_id,
    }
}

/// Alice and Bob through a real invitation: Alice's store, her
/// invitation queue, Bob's store, and the introduction blobs Bob sent
/// (not yet received).
pub struct Pair {
    pub alice: postern_core::MemStore,
    pub alice_addr: postern_core::Address,
    pub alice_queue: postern_core::courier::CreatedQueue,
    pub bob: postern_core::MemStore,
    pub bob_addr: postern_core::Address,
    pub intro: Vec<postern_core::relay_proto::Blob>,
}

pub fn pair(r: &mut ChaCha20Rng, t: UnixTime) -> Pair {
    use postern_core::{KvStore as _, MemStore, courier, e2e};
    let mut alice = MemStore::new();
    let (alice_addr, cs) = e2e::create_identity(&alice, t, r).unwrap();
    alice.commit(cs).unwrap();
    let mut bob = MemStore::new();
    let (bob_addr, cs) = e2e::create_identity(&bob, t, r).unwrap();
    bob.commit(cs).unwrap();
    let alice_queue = queue(r, 0);
    let (inv, payload, cs) =
        courier::create_invitation(&alice, &alice_queue, "Alice", t, r).unwrap();
    alice.commit(cs).unwrap();
    let bq = queue(r, 1);
    let (_, intro, cs) =
        courier::accept_invitation(&bob, &inv, &payload, &bq, "Bob", t, r).unwrap();
    bob.commit(cs).unwrap();
    Pair {
        alice,
        alice_addr,
        alice_queue,
        bob,
        bob_addr,
        intro: intro.blobs,
    }
}
