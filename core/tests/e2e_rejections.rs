//! Rejection tests for the E2E core: every hostile input is a typed error,
//! nothing panics, and a rejected input changes no state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{T0, User, connect, rng};
use postern_core::codec::{self, proto};
use postern_core::consts::MAX_BUNDLE_BYTES;
use postern_core::{Error, ErrorKind, KvStore, UnixTime, e2e};
use prost::Message;
use rand_core::RngCore;

fn edit_bundle(bytes: &[u8], f: impl FnOnce(&mut proto::PreKeyBundle)) -> Vec<u8> {
    let mut b = proto::PreKeyBundle::decode(bytes).unwrap();
    f(&mut b);
    codec::encode(&b)
}

#[test]
fn rejects_tampered_ciphertext() {
    let mut r = rng(1);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let sealed = alice.seal(&bob.addr, b"first", &mut r);
    // Flip one bit at many positions of the sealed message.
    let flips = (0..8)
        .map(|bit| (0, 1u8 << bit))
        .chain((1..sealed.len()).step_by(7).map(|p| (p, 1)));
    for (pos, mask) in flips {
        let mut t = sealed.clone();
        t[pos] ^= mask;
        let e = e2e::open(&bob.store, &t, T0, &mut r).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PeerMisbehaved, "pos {pos}: {e:?}");
    }
    // The genuine message still opens: the rejected ones changed nothing.
    assert_eq!(bob.open(&sealed, &mut r).unwrap().1, b"first");

    // Same for an unsealed message of an established session.
    let ct = bob.encrypt(&alice.addr, b"reply", &mut r);
    for pos in (1..ct.len()).step_by(3) {
        let mut t = ct.clone();
        t[pos] ^= 0x80;
        let e = e2e::decrypt(&alice.store, &bob.addr, &t, &mut r).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PeerMisbehaved, "pos {pos}: {e:?}");
    }
    assert_eq!(alice.decrypt(&bob.addr, &ct, &mut r).unwrap(), b"reply");
}

#[test]
fn rejects_message_for_another_recipient() {
    let mut r = rng(2);
    let (mut alice, mut bob, mut carol) = (User::new(&mut r), User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    connect(&mut alice, &mut carol, &mut r);
    let to_bob = alice.seal(&bob.addr, b"for bob only", &mut r);
    let to_carol = alice.seal(&carol.addr, b"for carol", &mut r);
    let e = e2e::open(&carol.store, &to_bob, T0, &mut r).unwrap_err();
    assert!(matches!(e, Error::DecryptionFailed { .. }), "{e:?}");
    assert_eq!(carol.open(&to_carol, &mut r).unwrap().1, b"for carol");
    // Unsealed, established sessions: Alice->Bob ciphertext given to Carol.
    assert_eq!(bob.open(&to_bob, &mut r).unwrap().1, b"for bob only");
    let ct = alice.encrypt(&bob.addr, b"bob again", &mut r);
    let e = e2e::decrypt(&carol.store, &alice.addr, &ct, &mut r).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PeerMisbehaved, "{e:?}");
}

#[test]
fn rejects_replayed_prekey_message() {
    let mut r = rng(3);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let first = alice.seal(&bob.addr, b"hello", &mut r);
    bob.open(&first, &mut r).unwrap();
    let e = e2e::open(&bob.store, &first, T0, &mut r).unwrap_err();
    assert!(matches!(e, Error::DuplicateMessage), "{e:?}");

    // Even if the session is gone, the one-time prekeys it used are gone too.
    let mut cs = postern_core::ChangeSet::new();
    cs.delete(
        postern_core::store::Namespace::Session,
        alice.addr.as_bytes(),
    );
    bob.apply(cs);
    let e = e2e::open(&bob.store, &first, T0, &mut r).unwrap_err();
    assert!(matches!(e, Error::UnknownPrekey), "{e:?}");
}

#[test]
fn rejects_replayed_prekey_message_on_last_resort_kyber_key() {
    let mut r = rng(4);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    // Exhaust Bob's one-time pools: the next bundle carries the last-resort
    // Kyber prekey and no one-time EC prekey.
    for _ in 0..130 {
        bob.bundle();
    }
    let bundle = bob.bundle();
    let b = proto::PreKeyBundle::decode(bundle.as_slice()).unwrap();
    assert!(b.one_time_prekey_id.is_none());
    let (_, cs) = e2e::start_session(&alice.store, &bundle, T0, &mut r).unwrap();
    alice.apply(cs);
    let ab = alice.bundle();
    let (_, cs) = e2e::add_contact(&bob.store, &ab).unwrap();
    bob.apply(cs);
    let first = alice.seal(&bob.addr, b"hello", &mut r);
    bob.open(&first, &mut r).unwrap();
    let mut cs = postern_core::ChangeSet::new();
    cs.delete(
        postern_core::store::Namespace::Session,
        alice.addr.as_bytes(),
    );
    bob.apply(cs);
    let e = e2e::open(&bob.store, &first, T0, &mut r).unwrap_err();
    assert!(matches!(e, Error::ReplayedPrekeyMessage), "{e:?}");
}

#[test]
fn rejects_bundle_with_bad_signature() {
    let mut r = rng(5);
    let mut bob = User::new(&mut r);
    let alice = User::new(&mut r);
    let bundle = bob.bundle();
    for (which, f) in [
        (
            "signed prekey",
            (|b: &mut proto::PreKeyBundle| b.signed_prekey_signature[10] ^= 1) as fn(&mut _),
        ),
        ("Kyber prekey", |b: &mut proto::PreKeyBundle| {
            b.kyber_prekey_signature[10] ^= 1
        }),
        ("signed prekey", |b: &mut proto::PreKeyBundle| {
            b.signed_prekey[5] ^= 1
        }),
        ("Kyber prekey", |b: &mut proto::PreKeyBundle| {
            b.kyber_prekey[100] ^= 1
        }),
    ] {
        let bad = edit_bundle(&bundle, f);
        match e2e::start_session(&alice.store, &bad, T0, &mut r) {
            Err(Error::BadBundleSignature { which: w }) => assert_eq!(w, which),
            other => panic!("expected bad signature on {which}, got {other:?}"),
        }
    }
}

#[test]
fn rejects_bundle_without_kyber_prekey() {
    let mut r = rng(6);
    let mut bob = User::new(&mut r);
    let alice = User::new(&mut r);
    let bundle = bob.bundle();
    let no_kyber = edit_bundle(&bundle, |b| {
        b.kyber_prekey.clear();
        b.kyber_prekey_signature.clear();
    });
    let e = e2e::start_session(&alice.store, &no_kyber, T0, &mut r).unwrap_err();
    assert!(matches!(e, Error::BundleWithoutKyber), "{e:?}");
    let no_kyber_key = edit_bundle(&bundle, |b| b.kyber_prekey.clear());
    assert!(matches!(
        e2e::start_session(&alice.store, &no_kyber_key, T0, &mut r),
        Err(Error::BundleWithoutKyber)
    ));
}

#[test]
fn rejects_bundle_with_unknown_version_or_oversize() {
    let mut r = rng(7);
    let mut bob = User::new(&mut r);
    let bundle = bob.bundle();
    let v2 = edit_bundle(&bundle, |b| b.version = 2);
    assert!(matches!(
        e2e::inspect_bundle(&v2),
        Err(Error::UnsupportedVersion { version: 2, .. })
    ));
    let huge = edit_bundle(&bundle, |b| b.one_time_prekey = vec![0; MAX_BUNDLE_BYTES]);
    assert!(matches!(
        e2e::inspect_bundle(&huge),
        Err(Error::TooLarge { .. })
    ));
    // A bundle claiming someone else's address on first contact.
    let carol = User::new(&mut r);
    let stolen = edit_bundle(&bundle, |b| b.address = carol.addr.as_bytes().to_vec());
    let alice = User::new(&mut r);
    assert!(matches!(
        e2e::start_session(&alice.store, &stolen, T0, &mut r),
        Err(Error::AddressMismatch)
    ));
}

#[test]
fn identity_key_change_fails_closed_in_both_directions() {
    let mut r = rng(8);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let hello = alice.seal(&bob.addr, b"hi", &mut r);
    bob.open(&hello, &mut r).unwrap();

    // Bob re-keys (or someone claims Bob's address with another key).
    let mut bob2 = User {
        store: postern_core::MemStore::new(),
        addr: bob.addr,
    };
    let (addr, cs) = e2e::create_identity_for_address(&bob2.store, bob.addr, T0, &mut r).unwrap();
    assert_eq!(addr, bob.addr);
    bob2.apply(cs);
    let new_bundle = bob2.bundle();

    // Sending direction: no session to the new key.
    let e = e2e::start_session(&alice.store, &new_bundle, T0, &mut r).unwrap_err();
    assert!(
        matches!(e, Error::IdentityKeyChanged { peer } if peer == bob.addr),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::NeedsUserDecision);
    let e = e2e::add_contact(&alice.store, &new_bundle).unwrap_err();
    assert!(matches!(e, Error::IdentityKeyChanged { .. }));

    // Receiving direction: the new key's messages are refused.
    let ab = alice.bundle();
    let (_, cs) = e2e::start_session(&bob2.store, &ab, T0, &mut r).unwrap();
    bob2.apply(cs);
    let forged = bob2.seal(&alice.addr, b"it's me, new key", &mut r);
    let e = e2e::open(&alice.store, &forged, T0, &mut r).unwrap_err();
    assert!(
        matches!(e, Error::IdentityKeyChanged { peer } if peer == bob.addr),
        "{e:?}"
    );
    let forged_plain = bob2.encrypt(&alice.addr, b"unsealed", &mut r);
    let e = e2e::decrypt(&alice.store, &bob.addr, &forged_plain, &mut r).unwrap_err();
    assert!(matches!(e, Error::IdentityKeyChanged { .. }), "{e:?}");

    // Verified state before, and after the user accepts the new key.
    let (_, cs) = e2e::set_verified(&alice.store, &bob.addr, e2e::Verification::Verified)
        .map(|cs| ((), cs))
        .unwrap();
    alice.apply(cs);
    let (_, cs) = e2e::accept_identity_change(&alice.store, &new_bundle).unwrap();
    alice.apply(cs);
    let c = e2e::contact(&alice.store, &bob.addr).unwrap().unwrap();
    assert_eq!(c.verification, e2e::Verification::Unverified);
    assert_eq!(c.identity, e2e::local_identity_key(&bob2.store).unwrap());
    assert_eq!(alice.open(&forged, &mut r).unwrap().1, b"it's me, new key");
}

/// libsignal derives at most 25,000 skipped message keys in one go. It
/// reports a message past that (like any message no session state can
/// decrypt) as a generic decryption failure, on purpose; Postern surfaces
/// it as `DecryptionFailed` and the session stays usable.
#[test]
fn rejects_chain_jump_beyond_limit() {
    let mut r = rng(9);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let first = alice.encrypt(&bob.addr, b"0", &mut r);
    bob.decrypt(&alice.addr, &first, &mut r).unwrap();
    let reply = bob.encrypt(&alice.addr, b"ok", &mut r);
    alice.decrypt(&bob.addr, &reply, &mut r).unwrap();
    // Just inside the limit: decrypts.
    let mut last = Vec::new();
    for _ in 0..24_990 {
        last = alice.encrypt(&bob.addr, b"inside", &mut r);
    }
    assert_eq!(bob.decrypt(&alice.addr, &last, &mut r).unwrap(), b"inside");
    // Just past it: a typed rejection, nothing stored.
    for _ in 0..25_002 {
        last = alice.encrypt(&bob.addr, b"beyond", &mut r);
    }
    let e = e2e::decrypt(&bob.store, &alice.addr, &last, &mut r).unwrap_err();
    assert!(matches!(e, Error::DecryptionFailed { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::PeerMisbehaved);
    // The session still works for the next message in range.
    let reply = bob.encrypt(&alice.addr, b"still here", &mut r);
    assert_eq!(
        alice.decrypt(&bob.addr, &reply, &mut r).unwrap(),
        b"still here"
    );
}

#[test]
fn sealed_sender_rejects_unknown_trust_root() {
    let mut r = rng(10);
    let (mut bob, mut carol) = (User::new(&mut r), User::new(&mut r));
    // Carol runs PQXDH with Bob's bundle, but Bob never pinned Carol.
    let bb = bob.bundle();
    let (_, cs) = e2e::start_session(&carol.store, &bb, T0, &mut r).unwrap();
    carol.apply(cs);
    let ct = carol.seal(&bob.addr, b"who am i", &mut r);
    let e = e2e::open(&bob.store, &ct, T0, &mut r).unwrap_err();
    assert!(matches!(e, Error::UnknownTrustRoot), "{e:?}");
}

#[test]
fn sealed_sender_rejects_certificate_from_another_trust_root() {
    let mut r = rng(11);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    // Replace Alice's certificate chain with one issued by another identity
    // key: Bob checks the chain against the identity key he pinned.
    let rec = alice
        .store
        .get(postern_core::store::Namespace::LocalIdentity, &[])
        .unwrap()
        .unwrap();
    let mut local = proto::LocalIdentityRecord::decode(rec.bytes.as_slice()).unwrap();
    let (other, _) = postern_core::crypto::signal::new_local_identity(None, &mut r).unwrap();
    local.server_key_private = other.server_key_private;
    local.server_key_id = other.server_key_id;
    local.server_certificate = other.server_certificate;
    local.sender_certificate_expires_ms = 0; // force re-issue under the new chain
    let mut cs = postern_core::ChangeSet::new();
    cs.put(
        postern_core::store::Namespace::LocalIdentity,
        &[],
        postern_core::store::Record::current(
            postern_core::store::Namespace::LocalIdentity,
            codec::encode(&local),
        ),
    );
    alice.apply(cs);
    let ct = alice.seal(&bob.addr, b"x", &mut r);
    let e = e2e::open(&bob.store, &ct, T0, &mut r).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SenderCertificateRejected {
                reason: "untrusted chain"
            }
        ),
        "{e:?}"
    );
}

#[test]
fn sealed_sender_rejects_expired_certificate() {
    let mut r = rng(12);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let ct = alice.seal(&bob.addr, b"old", &mut r);
    let later = UnixTime(T0.millis() + postern_core::consts::SENDER_CERT_LIFETIME_MS + 1);
    let e = e2e::open(&bob.store, &ct, later, &mut r).unwrap_err();
    assert!(
        matches!(e, Error::SenderCertificateRejected { reason: "expired" }),
        "{e:?}"
    );
    // Still valid at the time it was sent.
    assert!(bob.open(&ct, &mut r).is_ok());
}

#[test]
fn truncated_and_random_bytes_are_rejected_at_every_decoder() {
    let mut r = rng(13);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let bundle = bob.bundle();
    let sealed = alice.seal(&bob.addr, b"a sealed message", &mut r);
    let plain = alice.encrypt(&bob.addr, b"a normal message", &mut r);
    let sn = e2e::safety_number(&alice.store, &bob.addr).unwrap();
    let before = bob.store.clone();

    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for src in [&bundle, &sealed, &plain, &sn.scannable] {
        for cut in 0..src.len() {
            if cut < 64 || cut % 97 == 0 {
                inputs.push(src[..cut].to_vec());
            }
        }
    }
    for len in [0usize, 1, 2, 3, 16, 33, 100, 1000, 5000, 20_000, 200_000] {
        for _ in 0..20 {
            let mut v = vec![0u8; len];
            r.fill_bytes(&mut v);
            inputs.push(v);
        }
    }
    for input in &inputs {
        assert!(e2e::inspect_bundle(input).is_err());
        assert!(e2e::open(&bob.store, input, T0, &mut r).is_err());
        assert!(e2e::decrypt(&bob.store, &alice.addr, input, &mut r).is_err());
        assert!(postern_core::codec::padding::unpad(input).is_err() || input.len() == 256);
        assert!(postern_core::IdentityPublic::from_bytes(input).is_err() || input.len() == 33);
        if let Ok(same) = e2e::verify_scanned(&bob.store, &alice.addr, input).map(|(s, _)| s) {
            assert!(!same);
        }
        let _ = codec::decode_bounded::<proto::LocalIdentityRecord>(input, 1 << 20, "x");
        let _ = codec::decode_bounded::<proto::ContactRecord>(input, 1 << 20, "x");
    }
    // Nothing was written by any of it; the genuine messages still work.
    assert_eq!(bob.store.len(), before.len());
    assert_eq!(bob.open(&sealed, &mut r).unwrap().1, b"a sealed message");
    assert_eq!(
        bob.decrypt(&alice.addr, &plain, &mut r).unwrap(),
        b"a normal message"
    );
}

#[test]
fn rejects_mismatched_safety_number_code() {
    let mut r = rng(14);
    let (mut alice, mut bob, mut carol) = (User::new(&mut r), User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    connect(&mut carol, &mut bob, &mut r);
    // Bob shows Carol's code to Alice: not a match, Alice stays unverified.
    let wrong = e2e::safety_number(&bob.store, &carol.addr).unwrap();
    let (ok, cs) = e2e::verify_scanned(&alice.store, &bob.addr, &wrong.scannable).unwrap();
    assert!(!ok && cs.is_empty());
    assert_eq!(
        e2e::contact(&alice.store, &bob.addr)
            .unwrap()
            .unwrap()
            .verification,
        e2e::Verification::Unverified
    );
    assert!(matches!(
        e2e::verify_scanned(&alice.store, &bob.addr, b"\x00garbage"),
        Err(Error::BadSafetyNumberCode)
    ));
}

#[test]
fn unknown_contact_is_a_usage_error() {
    let mut r = rng(15);
    let alice = User::new(&mut r);
    let bob = User::new(&mut r);
    let e = e2e::seal(&alice.store, &bob.addr, b"x", T0, &mut r).unwrap_err();
    assert!(matches!(e, Error::UnknownContact { .. }));
    assert_eq!(e.kind(), ErrorKind::Usage);
    let big = vec![0u8; postern_core::consts::MAX_PLAINTEXT_BYTES + 1];
    let mut r2 = rng(16);
    let (mut a, mut b) = (User::new(&mut r2), User::new(&mut r2));
    connect(&mut a, &mut b, &mut r2);
    assert!(matches!(
        e2e::seal(&a.store, &b.addr, &big, T0, &mut r2),
        Err(Error::PlaintextTooLarge { .. })
    ));
}
