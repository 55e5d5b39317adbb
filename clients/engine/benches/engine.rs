//! The engine's own cost per text sent, without I/O: sealing a text for a
//! contact (`courier::send`) and planning its onion packet, once through
//! the engine's router (`Router::put(..).next(..)`: path, acknowledgement
//! path, Sphinx wrap, pending record) and once with the core's functions
//! called directly in the same order (the floor: what any client must do).
//! Change sets are committed to a `MemStore` in both.
//!
//! `cargo bench -p postern-engine --bench engine` prints µs per text and
//! the ratio engine / core. Under `cargo test` it runs a few texts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::time::Instant;

use postern_core::courier::{self, CreatedQueue, QueueKeys};
use postern_core::crypto::signal::AuthoritySecret;
use postern_core::directory::{self, Directory, ROLES_ALL};
use postern_core::message::{Body, Text};
use postern_core::{Address, KvStore, MemStore, RelayAddress, UnixTime, e2e, onion};
use postern_engine::Router;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const T: UnixTime = UnixTime(1_800_000_000_000);

fn relay(i: u16) -> RelayAddress {
    RelayAddress::new("127.0.0.1", 7000 + i, Some([i as u8; 32])).unwrap()
}

fn mesh(rng: &mut ChaCha20Rng) -> Directory {
    let epoch = directory::epoch_at(3_600, UnixTime(0), T);
    let authority = AuthoritySecret::generate(rng);
    let descriptors: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            let key = AuthoritySecret::generate(rng);
            let sphinx = postern_core::crypto::sphinx::NodeSecret::generate(rng).public();
            directory::sign_descriptor(&key, &relay(i), ROLES_ALL, &[(epoch, sphinx)], T, rng)
                .unwrap()
        })
        .collect();
    let signed = directory::sign_directory(
        "bench",
        &descriptors,
        T,
        T.plus_millis(86_400_000),
        3_600,
        UnixTime(0),
        &authority,
        rng,
    )
    .unwrap();
    Directory::verify(&signed, &[authority.public().unwrap()], 1, T).unwrap()
}

fn queue(r: &mut ChaCha20Rng, at: u16) -> CreatedQueue {
    let (mut recipient_id, mut sender_id) = ([0u8; 16], [0u8; 16]);
    r.fill_bytes(&mut recipient_id);
    r.fill_bytes(&mut sender_id);
    CreatedQueue {
        relay: relay(at),
        keys: QueueKeys::generate(r),
        recipient_id,
        sender_id,
    }
}

/// Bob, a contact of Alice's (through a real invitation), ready to send.
fn contact(r: &mut ChaCha20Rng) -> (MemStore, Address) {
    let mut alice = MemStore::new();
    let (alice_addr, cs) = e2e::create_identity(&alice, T, r).unwrap();
    alice.commit(cs).unwrap();
    let mut bob = MemStore::new();
    let (_, cs) = e2e::create_identity(&bob, T, r).unwrap();
    bob.commit(cs).unwrap();
    let aq = queue(r, 0);
    let (inv, payload, cs) = courier::create_invitation(&alice, &aq, "Alice", T, r).unwrap();
    alice.commit(cs).unwrap();
    let bq = queue(r, 4);
    let (_, _intro, cs) =
        courier::accept_invitation(&bob, &inv, &payload, &bq, "Bob", T, r).unwrap();
    bob.commit(cs).unwrap();
    let acks = queue(r, 4);
    bob.commit(courier::register_ack_queue(&acks, T)).unwrap();
    (bob, alice_addr)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let texts = if full { 2_000 } else { 5 };
    let mut r = ChaCha20Rng::seed_from_u64(1);
    let d = mesh(&mut r);
    // Core and engine passes alternate, three rounds each; the best of
    // each is kept (a shared machine only ever adds time).
    let mut figures = [f64::MAX, f64::MAX];
    let rounds = if full { 3 } else { 1 };
    for engine in (0..rounds).flat_map(|_| [false, true]) {
        let (mut bob, alice) = contact(&mut r);
        let acks = courier::ack_queue(&bob).unwrap().unwrap();
        let router = Router::new(&d, T, acks.clone(), 3);
        let nodes = onion::nodes(&d, d.epoch_at(T));
        let start = Instant::now();
        for n in 0..texts {
            let body = Body::Text(Text(format!("text number {n}, a short one")));
            let (_, out, cs) = courier::send(&bob, &alice, body, None, T, &mut r).unwrap();
            bob.commit(cs).unwrap();
            for blob in &out.blobs {
                let cs = if engine {
                    let mut put = router.put(&out.relay, &out.sender_id, blob, 1, None);
                    put.next(&router, &bob, T, &mut r).unwrap().unwrap().changes
                } else {
                    let path = onion::choose_path(&nodes, &out.relay, 3, &[], &mut r).unwrap();
                    let ack_path = onion::choose_path(&nodes, &acks.0, 3, &[], &mut r).unwrap();
                    let (_, pending) = onion::wrap_with_ack(
                        &path,
                        &out.sender_id,
                        blob,
                        &ack_path,
                        &acks.1,
                        &mut r,
                    )
                    .unwrap();
                    courier::record_pending(
                        &bob,
                        &pending,
                        &out.relay,
                        &out.sender_id,
                        blob,
                        T,
                        1,
                        None,
                    )
                    .unwrap()
                };
                bob.commit(cs).unwrap();
            }
            // The acknowledgement arrives: the store stays small.
            for k in bob
                .keys(postern_core::store::Namespace::PendingAck)
                .unwrap()
            {
                let id: [u8; 16] = k.as_slice().try_into().unwrap();
                bob.commit(courier::forget_pending(&bob, &id, UnixTime(0)).unwrap())
                    .unwrap();
            }
        }
        let per_text = start.elapsed().as_secs_f64() * 1e6 / texts as f64;
        let best = &mut figures[usize::from(engine)];
        *best = best.min(per_text);
    }
    println!(
        "per text: core alone {:.1} us, through the engine {:.1} us, engine / core {:.3}",
        figures[0],
        figures[1],
        figures[1] / figures[0]
    );
}
