//! Round trips of the E2E core: sessions, sealed sender, safety numbers,
//! prekey pools, and a seeded long run with loss, reordering and duplicates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashSet;

use common::{T0, User, connect, rng};
use postern_core::{Error, e2e};
use rand::Rng;
use rand::seq::SliceRandom;

#[test]
fn pqxdh_session_both_ways_sealed_and_unsealed() {
    let mut r = rng(100);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let m1 = alice.encrypt(&bob.addr, b"hello bob", &mut r);
    assert_eq!(m1[0], postern_core::crypto::signal::CIPHERTEXT_PREKEY);
    assert_eq!(bob.decrypt(&alice.addr, &m1, &mut r).unwrap(), b"hello bob");
    let m2 = bob.encrypt(&alice.addr, b"hello alice", &mut r);
    assert_eq!(m2[0], postern_core::crypto::signal::CIPHERTEXT_WHISPER);
    assert_eq!(
        alice.decrypt(&bob.addr, &m2, &mut r).unwrap(),
        b"hello alice"
    );
    let s1 = alice.seal(&bob.addr, b"sealed to bob", &mut r);
    assert_eq!(
        bob.open(&s1, &mut r).unwrap(),
        (alice.addr, b"sealed to bob".to_vec())
    );
    let s2 = bob.seal(&alice.addr, b"sealed to alice", &mut r);
    assert_eq!(
        alice.open(&s2, &mut r).unwrap(),
        (bob.addr, b"sealed to alice".to_vec())
    );
}

#[test]
fn first_message_sealed_establishes_session() {
    let mut r = rng(101);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let s = alice.seal(&bob.addr, b"first, sealed", &mut r);
    assert_eq!(bob.open(&s, &mut r).unwrap().1, b"first, sealed");
    let back = bob.seal(&alice.addr, b"reply", &mut r);
    assert_eq!(alice.open(&back, &mut r).unwrap().1, b"reply");
}

#[test]
fn out_of_order_delivery_and_duplicates() {
    let mut r = rng(102);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let msgs: Vec<Vec<u8>> = (0..20)
        .map(|i| alice.seal(&bob.addr, format!("m{i}").as_bytes(), &mut r))
        .collect();
    // The first (PreKey) message must arrive first for Bob to have a session
    // for Whisper messages; the rest in reverse.
    assert_eq!(bob.open(&msgs[0], &mut r).unwrap().1, b"m0");
    for i in (1..20).rev() {
        assert_eq!(
            bob.open(&msgs[i], &mut r).unwrap().1,
            format!("m{i}").as_bytes()
        );
    }
    for m in &msgs {
        assert!(matches!(
            e2e::open(&bob.store, m, T0, &mut r),
            Err(Error::DuplicateMessage)
        ));
    }
}

/// Everything an identity needs lives in the store's records: copying the
/// records into a fresh store (what a restart with a persistent store does)
/// restores the identity, its contacts and its sessions.
#[test]
fn identity_and_sessions_survive_restore_from_records() {
    use postern_core::store::Namespace;
    use postern_core::{ChangeSet, KvStore, MemStore};
    let mut r = rng(106);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let m = alice.seal(&bob.addr, b"before restart", &mut r);
    bob.open(&m, &mut r).unwrap();

    let mut restored = MemStore::new();
    let mut cs = ChangeSet::new();
    for ns in Namespace::ALL {
        for k in bob.store.keys(ns).unwrap() {
            let rec = bob.store.get(ns, &k).unwrap().unwrap().into_owned();
            cs.put(ns, &k, rec);
        }
    }
    restored.commit(cs).unwrap();
    assert_eq!(restored.len(), bob.store.len());
    let mut bob2 = User {
        store: restored,
        addr: bob.addr,
    };
    assert_eq!(e2e::local_address(&bob2.store).unwrap(), bob.addr);
    assert_eq!(
        e2e::local_identity_key(&bob2.store).unwrap(),
        e2e::local_identity_key(&bob.store).unwrap()
    );
    let m = alice.seal(&bob.addr, b"after restart", &mut r);
    assert_eq!(bob2.open(&m, &mut r).unwrap().1, b"after restart");
    let back = bob2.seal(&alice.addr, b"reply after restart", &mut r);
    assert_eq!(alice.open(&back, &mut r).unwrap().1, b"reply after restart");
}

#[test]
fn safety_numbers_match_and_verify() {
    let mut r = rng(103);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let a = e2e::safety_number(&alice.store, &bob.addr).unwrap();
    let b = e2e::safety_number(&bob.store, &alice.addr).unwrap();
    assert_eq!(a.digits.len(), 60);
    assert!(a.digits.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(a.digits, b.digits);
    // The QR code carries the scannable form; Alice scans Bob's screen.
    let qr = postern_media::qr::encode(&b.scannable).unwrap();
    assert!(qr.width >= 21);
    let (ok, cs) = e2e::verify_scanned(&alice.store, &bob.addr, &b.scannable).unwrap();
    assert!(ok);
    alice.apply(cs);
    assert_eq!(
        e2e::contact(&alice.store, &bob.addr)
            .unwrap()
            .unwrap()
            .verification,
        e2e::Verification::Verified
    );
}

#[test]
fn prekey_pool_is_consumed_and_refilled() {
    let mut r = rng(104);
    let mut bob = User::new(&mut r);
    let start = e2e::one_time_prekeys_left(&bob.store).unwrap();
    assert_eq!(start, postern_core::consts::ONE_TIME_PREKEY_POOL as usize);
    let mut senders = Vec::new();
    for _ in 0..90 {
        let mut a = User::new(&mut r);
        connect(&mut a, &mut bob, &mut r);
        let m = a.seal(&bob.addr, b"hi", &mut r);
        bob.open(&m, &mut r).unwrap();
        senders.push(a);
    }
    let left = e2e::one_time_prekeys_left(&bob.store).unwrap();
    assert_eq!(left, start - 90);
    let cs = e2e::refill_prekeys(&bob.store, T0, &mut r).unwrap();
    bob.apply(cs);
    assert_eq!(
        e2e::one_time_prekeys_left(&bob.store).unwrap(),
        postern_core::consts::ONE_TIME_PREKEY_POOL as usize
    );
    // New bundles hand out fresh ids, and a new sender still gets through.
    let mut late = User::new(&mut r);
    connect(&mut late, &mut bob, &mut r);
    let m = late.seal(&bob.addr, b"late", &mut r);
    assert_eq!(bob.open(&m, &mut r).unwrap().1, b"late");
}

#[test]
fn sealed_messages_reveal_only_their_padding_bucket() {
    let mut r = rng(105);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let first = alice.seal(&bob.addr, b"x", &mut r);
    bob.open(&first, &mut r).unwrap();
    let reply = bob.seal(&alice.addr, b"y", &mut r);
    alice.open(&reply, &mut r).unwrap();
    let lens: HashSet<usize> = [0usize, 1, 50, 200, 252]
        .iter()
        .map(|n| alice.seal(&bob.addr, &vec![b'a'; *n], &mut r).len())
        .collect();
    assert_eq!(lens.len(), 1, "sizes within one bucket differ: {lens:?}");
}

/// 1,000 messages each way, seeded: 10% lost, delivered in shuffled
/// batches, 5% delivered twice. Every delivered message decrypts exactly
/// once; every redelivery is reported as a duplicate.
#[test]
fn seeded_long_run_with_loss_reordering_and_duplicates() {
    let mut r = rng(2026);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    // Session bootstrap: Bob must see one PreKey message first.
    let hello = alice.seal(&bob.addr, b"hello", &mut r);
    bob.open(&hello, &mut r).unwrap();

    let mut in_flight_to_bob: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut in_flight_to_alice: Vec<(u32, Vec<u8>)> = Vec::new();
    let (mut got_bob, mut got_alice) = (HashSet::new(), HashSet::new());
    let (mut sent_bob, mut sent_alice) = (0u32, 0u32);
    let (mut lost, mut dups) = (0, 0);
    let mut delivered = 0;
    let mut step = 0;
    while sent_bob < 1000
        || sent_alice < 1000
        || !in_flight_to_bob.is_empty()
        || !in_flight_to_alice.is_empty()
    {
        step += 1;
        for _ in 0..r.random_range(0..8) {
            if sent_bob < 1000 {
                let ct = alice.seal(&bob.addr, format!("a->b {sent_bob}").as_bytes(), &mut r);
                in_flight_to_bob.push((sent_bob, ct));
                sent_bob += 1;
            }
            if sent_alice < 1000 {
                let ct = bob.seal(&alice.addr, format!("b->a {sent_alice}").as_bytes(), &mut r);
                in_flight_to_alice.push((sent_alice, ct));
                sent_alice += 1;
            }
        }
        for (queue, receiver, got, prefix) in [
            (&mut in_flight_to_bob, &mut bob, &mut got_bob, "a->b"),
            (&mut in_flight_to_alice, &mut alice, &mut got_alice, "b->a"),
        ] {
            queue.shuffle(&mut r);
            let take = r.random_range(0..=queue.len());
            let batch: Vec<_> = queue.drain(..take).collect();
            for (n, ct) in batch {
                let roll = r.random_range(0..100);
                if roll < 10 {
                    lost += 1;
                    continue;
                }
                let (_, pt) = receiver
                    .open(&ct, &mut r)
                    .unwrap_or_else(|e| panic!("{prefix} {n}: {e:?}"));
                assert_eq!(pt, format!("{prefix} {n}").as_bytes());
                assert!(got.insert(n), "{prefix} {n} decrypted twice");
                delivered += 1;
                if roll >= 95 {
                    dups += 1;
                    let e = e2e::open(&receiver.store, &ct, T0, &mut r).unwrap_err();
                    assert!(matches!(e, Error::DuplicateMessage), "{e:?}");
                }
            }
        }
        assert!(step < 100_000);
    }
    assert_eq!(delivered, got_bob.len() + got_alice.len());
    assert!(
        lost > 100 && dups > 50 && delivered > 1700,
        "lost {lost} dups {dups} delivered {delivered}"
    );
}
