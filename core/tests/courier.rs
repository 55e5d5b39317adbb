//! Invitations, queues and blobs end to end over an in-memory "relay"
//! (a Vec per queue): rejections first, then the round trips.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{T0, User, rng};
use postern_core::courier::{self, CreatedQueue, Invitation, QueueKeys, Received};
use postern_core::message::{Body, Text};
use postern_core::relay_proto::Blob;
use postern_core::{Error, KvStore, RelayAddress, UnixTime};
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha20Rng;

fn relay() -> RelayAddress {
    RelayAddress::parse("postern-relay://127.0.0.1:4443").unwrap()
}

fn new_queue(r: &mut ChaCha20Rng, n: u8) -> CreatedQueue {
    CreatedQueue {
        relay: relay(),
        keys: QueueKeys::generate(r),
        recipient_id: [n; 16],
        sender_id: [n + 100; 16],
    }
}

/// Alice invites, Bob accepts; returns the introduction blobs (not yet
/// delivered) and the payload (for second-acceptance tests).
fn invite(
    alice: &mut User,
    bob: &mut User,
    r: &mut ChaCha20Rng,
) -> (Invitation, Vec<Blob>, courier::Outgoing, [u8; 16]) {
    let aq = new_queue(r, 1);
    let (inv, payload, cs) = courier::create_invitation(&alice.store, &aq, "Alice", T0, r).unwrap();
    alice.apply(cs);
    let link = inv.to_link();
    assert!(link.len() <= 600, "link is {} chars", link.len());
    let parsed = Invitation::parse(&link, T0).unwrap();
    let bq = new_queue(r, 2);
    let (peer, out, cs) =
        courier::accept_invitation(&bob.store, &parsed, &payload, &bq, "Bob", T0, r).unwrap();
    assert_eq!(peer, alice.addr);
    bob.apply(cs);
    (parsed, payload, out, aq.recipient_id)
}

fn deliver(u: &mut User, queue: &[u8; 16], blobs: &[Blob], r: &mut ChaCha20Rng) -> Vec<Received> {
    let mut got = Vec::new();
    for b in blobs {
        let (rec, cs) = courier::receive(&u.store, queue, b, T0, r).unwrap();
        u.apply(cs);
        got.push(rec);
    }
    got
}

#[test]
fn rejects_hostile_blobs_without_changing_anything() {
    let mut r = rng(1);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    let (_, _, intro, aq) = invite(&mut alice, &mut bob, &mut r);
    let before = alice.store.clone();
    // Random bytes, a blob for an unknown queue, a flipped byte.
    let mut junk = [0u8; postern_core::consts::BLOB_BYTES];
    rand::RngCore::fill_bytes(&mut r, &mut junk);
    assert!(matches!(
        courier::receive(&alice.store, &aq, &junk, T0, &mut r),
        Err(Error::DecryptionFailed { .. })
    ));
    assert!(matches!(
        courier::receive(&alice.store, &[0xEE; 16], &intro.blobs[0], T0, &mut r),
        Err(Error::UnknownQueue)
    ));
    let mut flipped = intro.blobs[0].clone();
    flipped[100] ^= 1;
    assert!(courier::receive(&alice.store, &aq, &flipped, T0, &mut r).is_err());
    // An introduction after the invitation expired.
    let late = UnixTime(T0.millis() + courier::INVITATION_LIFETIME_MS);
    let mut o = alice.store.clone();
    let mut err = None;
    for b in &intro.blobs {
        match courier::receive(&o, &aq, b, late, &mut r) {
            Ok((_, cs)) => o.commit(cs).unwrap(),
            Err(e) => err = Some(e),
        }
    }
    assert!(matches!(err, Some(Error::InvitationExpired)));
    assert_eq!(format!("{:?}", alice.store), format!("{before:?}"));
}

#[test]
fn rejects_second_acceptance_and_expired_links() {
    let mut r = rng(2);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    let mut carol = User::new(&mut r);
    let (inv, payload, intro, aq) = invite(&mut alice, &mut bob, &mut r);
    let got = deliver(&mut alice, &aq, &intro.blobs, &mut r);
    assert!(matches!(got.last(), Some(Received::NewContact { peer, .. }) if *peer == bob.addr));
    // Carol got the payload too (say the link leaked): Alice refuses her.
    let cq = new_queue(&mut r, 3);
    let (_, out, cs) =
        courier::accept_invitation(&carol.store, &inv, &payload, &cq, "Carol", T0, &mut r).unwrap();
    carol.apply(cs);
    let mut last = None;
    for b in &out.blobs {
        match courier::receive(&alice.store, &aq, b, T0, &mut r) {
            Ok((_, cs)) => alice.apply(cs),
            Err(e) => last = Some(e),
        }
    }
    assert!(matches!(last, Some(Error::InvitationUsed)));
    assert!(
        postern_core::e2e::contact(&alice.store, &carol.addr)
            .unwrap()
            .is_none()
    );
    // Bob accepting twice is refused before anything is sent.
    let bq = new_queue(&mut r, 4);
    assert!(matches!(
        courier::accept_invitation(&bob.store, &inv, &payload, &bq, "Bob", T0, &mut r),
        Err(Error::AlreadyContact)
    ));
    // Expired links are refused on parse and on accept.
    let late = UnixTime(T0.millis() + courier::INVITATION_LIFETIME_MS);
    assert!(matches!(
        Invitation::parse(&inv.to_link(), late),
        Err(Error::InvitationExpired)
    ));
    let dave = User::new(&mut r);
    assert!(matches!(
        courier::accept_invitation(&dave.store, &inv, &payload, &bq, "Dave", late, &mut r),
        Err(Error::InvitationExpired)
    ));
    // A payload opened with the wrong key.
    let mut wrong = inv.clone();
    wrong.key = zeroize::Zeroizing::new([0; 32]);
    assert!(
        courier::accept_invitation(&dave.store, &wrong, &payload, &bq, "Dave", T0, &mut r).is_err()
    );
}

#[test]
fn invitation_then_messages_both_ways_with_shuffled_duplicated_fragments() {
    let mut r = rng(3);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    let (_, _, intro, aq) = invite(&mut alice, &mut bob, &mut r);
    let got = deliver(&mut alice, &aq, &intro.blobs, &mut r);
    assert!(
        matches!(got.last(), Some(Received::NewContact { display_name, .. }) if display_name == "Bob")
    );
    assert_eq!(
        courier::route(&alice.store, &bob.addr)
            .unwrap()
            .unwrap()
            .display_name,
        "Bob"
    );
    assert_eq!(
        courier::route(&bob.store, &alice.addr)
            .unwrap()
            .unwrap()
            .display_name,
        "Alice"
    );
    let bq = [2u8; 16];

    // Alice -> Bob: a large text (several fragments), shuffled and duplicated.
    let big = "é".repeat(postern_core::consts::MAX_TEXT_BYTES / 2);
    let (env, out, cs) = courier::send(
        &alice.store,
        &bob.addr,
        Body::Text(Text(big.clone())),
        None,
        T0,
        &mut r,
    )
    .unwrap();
    alice.apply(cs);
    assert!(out.blobs.len() > 1);
    let mut blobs = out.blobs.clone();
    blobs.extend(out.blobs.iter().cloned());
    blobs.shuffle(&mut r);
    let got = deliver(&mut bob, &bq, &blobs, &mut r);
    let msgs: Vec<_> = got
        .iter()
        .filter_map(|g| match g {
            Received::Message { from, envelope } => Some((*from, envelope.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(msgs.len(), 1, "exactly one delivery");
    assert_eq!(msgs[0].0, alice.addr);
    assert_eq!(msgs[0].1, env);
    assert_eq!(bob.store.history(&alice.addr, 10).unwrap().len(), 1);
    // Only the completion marker is left (no stale fragments).
    let left = bob
        .store
        .keys(postern_core::store::Namespace::Fragment)
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].last(), Some(&0xFF));

    // Bob -> Alice, then a redelivery is a duplicate.
    let (env, out, cs) = courier::send(
        &bob.store,
        &alice.addr,
        Body::Text(Text("hi".into())),
        None,
        T0,
        &mut r,
    )
    .unwrap();
    bob.apply(cs);
    let got = deliver(&mut alice, &aq, &out.blobs, &mut r);
    assert!(matches!(&got[0], Received::Message { envelope, .. } if *envelope == env));
    let got = deliver(&mut alice, &aq, &out.blobs, &mut r);
    assert!(matches!(&got[0], Received::Duplicate));
    assert_eq!(alice.store.history(&bob.addr, 10).unwrap().len(), 2);

    // A blob Bob sends into Alice's queue cannot land in Bob's own queue.
    assert!(courier::receive(&bob.store, &bq, &out.blobs[0], T0, &mut r).is_err());
}

#[test]
fn attachment_chunks_travel_as_blobs() {
    let mut r = rng(4);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    let (_, _, intro, aq) = invite(&mut alice, &mut bob, &mut r);
    deliver(&mut alice, &aq, &intro.blobs, &mut r);
    let bq = [2u8; 16];
    // 40 chunks: more than one outbox entry's worth.
    let data: Vec<u8> = (0..60_000u32).map(|i| (i * 7) as u8).collect();
    let mut h = postern_core::crypto::hash::Sha256Stream::new();
    h.update(&data);
    let aref = postern_core::attachment::prepare(data.len() as u64, h.finish(), &mut r).unwrap();
    let body = Body::File(postern_core::message::FileInfo {
        name: "notes.bin".into(),
        mime: "application/octet-stream".into(),
        attachment: aref.clone(),
    });
    // Onion paths reorder: chunks that arrive before their message are
    // parked (a duplicate once), then taken in when the message comes.
    let early: Vec<Blob> = data
        .chunks(postern_core::consts::CHUNK_PLAINTEXT_BYTES)
        .take(2)
        .enumerate()
        .map(|(i, c)| {
            courier::chunk_blob(&alice.store, &bob.addr, &aref, i as u32, c, &mut r).unwrap()
        })
        .collect();
    let got = deliver(&mut bob, &bq, &early, &mut r);
    assert!(got.iter().all(|g| matches!(g, Received::Partial)));
    let got = deliver(&mut bob, &bq, &early[..1], &mut r);
    assert!(matches!(got[0], Received::Duplicate));
    assert!(bob.store.attachment_chunks(&aref.id).unwrap().is_empty());
    let (_, out, cs) = courier::send(&alice.store, &bob.addr, body, None, T0, &mut r).unwrap();
    alice.apply(cs);
    deliver(&mut bob, &bq, &out.blobs, &mut r);
    assert_eq!(bob.store.attachment_chunks(&aref.id).unwrap(), vec![0, 1]);
    // Every chunk sealed at once, in batches that each fit an outbox entry.
    assert!(matches!(
        courier::attachment_outgoing(&alice.store, &bob.addr, &aref, &data[1..], &mut r),
        Err(Error::Bug(_))
    ));
    let batches =
        courier::attachment_outgoing(&alice.store, &bob.addr, &aref, &data, &mut r).unwrap();
    let total = postern_core::attachment::chunk_count(aref.size).unwrap() as usize;
    assert_eq!(
        batches.len(),
        total.div_ceil(courier::MAX_BLOBS_PER_OUTBOX_ENTRY)
    );
    assert_eq!(batches.iter().map(|b| b.blobs.len()).sum::<usize>(), total);
    for b in &batches {
        let bytes = b.to_bytes();
        assert!(bytes.len() <= postern_core::consts::MAX_STORED_MESSAGE_BYTES);
        assert_eq!(
            courier::Outgoing::from_bytes(&bytes).unwrap().blobs,
            b.blobs
        );
    }
    let mut chunks: Vec<Blob> = batches.into_iter().flat_map(|b| b.blobs).collect();
    chunks.push(chunks[0].clone());
    chunks.shuffle(&mut r);
    let got = deliver(&mut bob, &bq, &chunks, &mut r);
    assert!(
        got.iter()
            .any(|g| matches!(g, Received::Chunk { missing: 0, .. }))
    );
    let v = postern_core::attachment::verify(&bob.store, &aref).unwrap();
    let mut back = Vec::new();
    for i in 0..postern_core::attachment::chunk_count(aref.size).unwrap() {
        back.extend_from_slice(&postern_core::attachment::read_chunk(&bob.store, &v, i).unwrap());
    }
    assert_eq!(back, data);
}

/// A resend that cannot leave (no path, no entry) still counts: the blob's
/// attempts grow and its clock restarts, so it is not retried on every
/// round, and it reaches the give-up limit like any other.
#[test]
fn a_resend_that_cannot_leave_still_counts_as_an_attempt() {
    use postern_core::crypto::sphinx::NodeSecret;
    use postern_core::onion::{self, Node, Path};
    let mut r = rng(9);
    let user = User::new(&mut r);
    let nodes: Vec<Node> = (0..3u8)
        .map(|i| Node {
            id: [i + 1; 32],
            address: RelayAddress::new("127.0.0.1", 7000 + u16::from(i), None).unwrap(),
            roles: onion::ROLE_ENTRY | onion::ROLE_MIX | onion::ROLE_MAILBOX,
            key: NodeSecret::generate(&mut r).public(),
        })
        .collect();
    let path = Path {
        nodes: nodes.clone(),
    };
    let blob: Blob = Box::new([3; postern_core::consts::BLOB_BYTES]);
    let (_, pending) =
        onion::wrap_with_ack(&path, &[1; 16], &blob, &path, &[2; 16], &mut r).unwrap();
    let mut store = user.store;
    let cs = courier::record_pending(
        &store,
        &pending,
        &nodes[2].address,
        &[1; 16],
        &blob,
        T0,
        1,
        None,
    )
    .unwrap();
    store.commit(cs).unwrap();
    let later = T0.plus_millis(60_000);
    let due = courier::overdue(&store, later).unwrap();
    assert_eq!((due.len(), due[0].attempts), (1, 1));
    let cs = courier::count_failed_attempt(&store, &pending.id, later).unwrap();
    store.commit(cs).unwrap();
    // Not due again until another timeout has passed, one attempt more.
    assert!(
        courier::overdue(&store, T0.plus_millis(59_999))
            .unwrap()
            .is_empty()
    );
    let due = courier::overdue(&store, later).unwrap();
    assert_eq!((due.len(), due[0].attempts), (1, 2));
    assert_eq!(courier::unacknowledged(&store).unwrap(), 1);
}

/// Three relays with every role, and the path through them.
fn three_nodes(r: &mut ChaCha20Rng) -> postern_core::onion::Path {
    use postern_core::crypto::sphinx::NodeSecret;
    use postern_core::onion::{self, Node, Path};
    let nodes: Vec<Node> = (0..3u8)
        .map(|i| Node {
            id: [i + 1; 32],
            address: RelayAddress::new("127.0.0.1", 7000 + u16::from(i), None).unwrap(),
            roles: onion::ROLE_ENTRY | onion::ROLE_MIX | onion::ROLE_MAILBOX,
            key: NodeSecret::generate(r).public(),
        })
        .collect();
    Path { nodes }
}

/// Records `blob` as sent (attempt `attempts`) at `at`; returns its id.
fn record_sent(
    u: &mut User,
    path: &postern_core::onion::Path,
    blob: &Blob,
    at: UnixTime,
    attempts: u32,
    r: &mut ChaCha20Rng,
) -> [u8; 16] {
    let (_, pending) =
        postern_core::onion::wrap_with_ack(path, &[2; 16], blob, path, &[9; 16], r).unwrap();
    let cs = courier::record_pending(
        &u.store,
        &pending,
        &relay(),
        &[2; 16],
        blob,
        at,
        attempts,
        None,
    )
    .unwrap();
    u.apply(cs);
    pending.id
}

fn text(s: &str) -> Body {
    Body::Text(Text(s.into()))
}

/// One short text from `from` to `to`, delivered into `queue`.
fn turn(from: &mut User, to: &mut User, queue: &[u8; 16], r: &mut ChaCha20Rng) {
    let (_, out, cs) = courier::send(&from.store, &to.addr, text("turn"), None, T0, r).unwrap();
    from.apply(cs);
    let got = deliver(to, queue, &out.blobs, r);
    assert!(matches!(got.last(), Some(Received::Message { .. })));
}

#[test]
fn only_a_live_message_blob_can_be_sealed_again() {
    use postern_core::courier::SealedState;
    use postern_core::store::Namespace;
    let mut r = rng(21);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    let (_, _, intro, aq) = invite(&mut alice, &mut bob, &mut r);
    deliver(&mut alice, &aq, &intro.blobs, &mut r);
    let path = three_nodes(&mut r);
    let later = T0.plus_millis(60_000);

    // A blob that is not a sealed message (an introduction, a chunk, or
    // anything else): resent as it is, never sealed again.
    let stray: Blob = Box::new([7; postern_core::consts::BLOB_BYTES]);
    record_sent(&mut alice, &path, &stray, T0, 1, &mut r);
    assert_eq!(
        courier::sealed_state(&alice.store, &stray).unwrap(),
        SealedState::Other
    );
    let u = courier::overdue(&alice.store, later).unwrap().remove(0);
    let before = alice.store.keys(Namespace::PendingAck).unwrap();
    assert!(matches!(
        courier::reseal(&alice.store, &u, T0, &mut r),
        Err(Error::Bug(_))
    ));
    assert_eq!(alice.store.keys(Namespace::PendingAck).unwrap(), before);
    let cs = courier::forget_pending(&alice.store, &u.id, T0).unwrap();
    alice.apply(cs);

    // A message whose record was settled (all its blobs acknowledged or
    // given up) is no longer live either.
    let (_, out, cs) = courier::send(&alice.store, &bob.addr, text("x"), None, T0, &mut r).unwrap();
    alice.apply(cs);
    let id = record_sent(&mut alice, &path, &out.blobs[0], T0, 1, &mut r);
    assert!(matches!(
        courier::sealed_state(&alice.store, &out.blobs[0]).unwrap(),
        SealedState::Live { reseals: 0, .. }
    ));
    let cs = courier::forget_pending(&alice.store, &id, T0).unwrap();
    alice.apply(cs);
    assert_eq!(
        courier::sealed_state(&alice.store, &out.blobs[0]).unwrap(),
        SealedState::Other
    );
    assert!(alice.store.keys(Namespace::Sealed).unwrap().is_empty());
    assert!(alice.store.keys(Namespace::SealedBlob).unwrap().is_empty());
}

/// The loss a reseal prevents: a message whose blobs come together only
/// after the conversation has turned more than the five receiving chains
/// libsignal keeps cannot be opened any more, while the same message
/// sealed again on the current session arrives, once.
#[test]
fn an_overdue_message_sealed_again_arrives_once_after_the_session_moved_on() {
    use postern_core::courier::SealedState;
    use postern_core::store::Namespace;
    let mut r = rng(22);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    let (_, _, intro, aq) = invite(&mut alice, &mut bob, &mut r);
    deliver(&mut alice, &aq, &intro.blobs, &mut r);
    let bq = [2u8; 16];
    let path = three_nodes(&mut r);

    let big = "é".repeat(postern_core::consts::MAX_TEXT_BYTES / 2);
    let (env, first, cs) =
        courier::send(&alice.store, &bob.addr, text(&big), None, T0, &mut r).unwrap();
    alice.apply(cs);
    assert!(first.blobs.len() > 2);
    for b in &first.blobs {
        record_sent(&mut alice, &path, b, T0, 2, &mut r);
    }
    // The conversation turns on while the message's blobs are lost.
    for _ in 0..6 {
        turn(&mut bob, &mut alice, &aq, &mut r);
        turn(&mut alice, &mut bob, &bq, &mut r);
    }
    let history = bob.store.history(&alice.addr, 100).unwrap().len();
    // The turns went without acknowledgements: a sweep forgets them and
    // keeps the message whose blobs are awaited.
    assert_eq!(alice.store.keys(Namespace::Sealed).unwrap().len(), 7);
    let cs = courier::forget_unawaited_sealed(&alice.store).unwrap();
    alice.apply(cs);
    assert_eq!(
        alice.store.keys(Namespace::Sealed).unwrap(),
        vec![env.id.to_vec()]
    );
    assert_eq!(
        alice.store.keys(Namespace::SealedBlob).unwrap().len(),
        first.blobs.len()
    );

    let later = T0.plus_millis(60_000);
    let overdue = courier::overdue(&alice.store, later).unwrap();
    assert_eq!(overdue.len(), first.blobs.len());
    let u = &overdue[0];
    let (peer, again, cs) = courier::reseal(&alice.store, u, later, &mut r).unwrap();
    alice.apply(cs);
    assert_eq!(peer, bob.addr);
    assert_eq!(again.blobs.len(), first.blobs.len());
    assert!(again.blobs.iter().all(|b| !first.blobs.contains(b)));
    // The resealed blob's attempts are gone; the others are retired.
    let left = courier::overdue(&alice.store, later).unwrap();
    assert_eq!(left.len(), first.blobs.len() - 1);
    assert!(left.iter().all(|x| x.id != u.id));
    for x in &left {
        assert_eq!(
            courier::sealed_state(&alice.store, &x.blob).unwrap(),
            SealedState::Retired
        );
        let cs = courier::forget_retired(&alice.store, x).unwrap();
        alice.apply(cs);
    }
    assert!(courier::overdue(&alice.store, later).unwrap().is_empty());
    assert!(matches!(
        courier::sealed_state(&alice.store, &again.blobs[0]).unwrap(),
        SealedState::Live { reseals: 1, .. }
    ));

    // The first sealing, come together late, cannot be opened: a typed
    // error, nothing stored.
    let mut err = None;
    for b in &first.blobs {
        match courier::receive(&bob.store, &bq, b, T0, &mut r) {
            Ok((_, cs)) => bob.apply(cs),
            Err(e) => err = Some(e),
        }
    }
    assert!(
        matches!(err, Some(Error::DecryptionFailed { .. })),
        "{err:?}"
    );
    assert_eq!(bob.store.history(&alice.addr, 100).unwrap().len(), history);
    // The second one arrives, once.
    let got = deliver(&mut bob, &bq, &again.blobs, &mut r);
    assert!(matches!(got.last(), Some(Received::Message { envelope, .. }) if *envelope == env));
    let got = deliver(&mut bob, &bq, &again.blobs, &mut r);
    assert!(matches!(got.last(), Some(Received::Duplicate)));
    assert_eq!(
        bob.store.history(&alice.addr, 100).unwrap().len(),
        history + 1
    );

    // Once its new blobs are settled nothing of the message is kept.
    let ids: Vec<_> = again
        .blobs
        .iter()
        .map(|b| record_sent(&mut alice, &path, b, later, 1, &mut r))
        .collect();
    for id in ids {
        let cs = courier::forget_pending(&alice.store, &id, T0).unwrap();
        alice.apply(cs);
    }
    assert!(alice.store.keys(Namespace::Sealed).unwrap().is_empty());
    assert!(alice.store.keys(Namespace::SealedBlob).unwrap().is_empty());
}

/// A message sealed again before the session moved on is still one
/// message: whichever sealing comes together second is a duplicate.
#[test]
fn both_sealings_of_a_message_arriving_make_one_message() {
    let mut r = rng(23);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    let (_, _, intro, aq) = invite(&mut alice, &mut bob, &mut r);
    deliver(&mut alice, &aq, &intro.blobs, &mut r);
    let bq = [2u8; 16];
    let path = three_nodes(&mut r);
    let (env, first, cs) =
        courier::send(&alice.store, &bob.addr, text("once"), None, T0, &mut r).unwrap();
    alice.apply(cs);
    record_sent(&mut alice, &path, &first.blobs[0], T0, 2, &mut r);
    let u = courier::overdue(&alice.store, T0.plus_millis(60_000))
        .unwrap()
        .remove(0);
    let (_, again, cs) = courier::reseal(&alice.store, &u, T0, &mut r).unwrap();
    alice.apply(cs);
    let got = deliver(&mut bob, &bq, &again.blobs, &mut r);
    assert!(matches!(got.last(), Some(Received::Message { envelope, .. }) if *envelope == env));
    let got = deliver(&mut bob, &bq, &first.blobs, &mut r);
    assert!(matches!(got.last(), Some(Received::Duplicate)));
    assert_eq!(bob.store.history(&alice.addr, 10).unwrap().len(), 1);
}

/// A message's delivery state as its sender sees it: queued when sealed,
/// delivered when the recipient's receipt names it; a receipt for an id
/// it never sent to that contact changes nothing.
#[test]
fn a_receipt_marks_the_message_delivered_and_nothing_else() {
    use postern_core::courier::DeliveryState;
    let mut r = rng(31);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    let (_, _, intro, aq) = invite(&mut alice, &mut bob, &mut r);
    deliver(&mut alice, &aq, &intro.blobs, &mut r);
    let bq = [2u8; 16];
    let (env, out, cs) =
        courier::send(&alice.store, &bob.addr, text("hello"), None, T0, &mut r).unwrap();
    alice.apply(cs);
    let state = |u: &User| courier::delivery(&u.store, &env.id).unwrap().unwrap().state;
    assert_eq!(state(&alice), DeliveryState::Queued);
    deliver(&mut bob, &bq, &out.blobs, &mut r);
    // Bob's receipt names the message and an id that is not Alice's.
    let receipt = Body::Receipt(vec![env.id, [0xAB; 16]]);
    let (_, out, cs) = courier::send(&bob.store, &alice.addr, receipt, None, T0, &mut r).unwrap();
    bob.apply(cs);
    // A receipt is not a message of the conversation and has no state.
    assert!(
        courier::delivery(&bob.store, &[0xAB; 16])
            .unwrap()
            .is_none()
    );
    assert_eq!(bob.store.history(&alice.addr, 10).unwrap().len(), 1);
    deliver(&mut alice, &aq, &out.blobs, &mut r);
    assert_eq!(state(&alice), DeliveryState::Delivered);
    assert!(
        courier::delivery(&alice.store, &[0xAB; 16])
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_contact_who_reset_their_keys_is_refused_until_accepted_then_talks_again() {
    let mut r = rng(21);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    let (_, _, intro, aq) = invite(&mut alice, &mut bob, &mut r);
    deliver(&mut alice, &aq, &intro.blobs, &mut r);
    let bq = [2u8; 16];
    turn(&mut alice, &mut bob, &bq, &mut r);
    turn(&mut bob, &mut alice, &aq, &mut r);

    // Bob resets his keys: same address, no session left.
    let old_key = postern_core::e2e::contact(&alice.store, &bob.addr)
        .unwrap()
        .unwrap()
        .identity;
    let cs = postern_core::e2e::reset_identity(&bob.store, T0, &mut r).unwrap();
    bob.apply(cs);
    assert_eq!(
        postern_core::e2e::local_address(&bob.store).unwrap(),
        bob.addr
    );
    assert!(!postern_core::e2e::has_session(&bob.store, &alice.addr).unwrap());
    assert!(
        courier::send(&bob.store, &alice.addr, text("lost"), None, T0, &mut r).is_err(),
        "no session to seal with"
    );

    // He gives Alice a new invitation. By default it is refused as a key
    // change, with nothing written.
    let nq = new_queue(&mut r, 7);
    let (inv, payload, cs) =
        courier::create_invitation(&bob.store, &nq, "Bob", T0, &mut r).unwrap();
    bob.apply(cs);
    let aq2 = new_queue(&mut r, 8);
    let before = alice.store.clone();
    let e = courier::accept_invitation(&alice.store, &inv, &payload, &aq2, "Alice", T0, &mut r)
        .unwrap_err();
    assert!(
        matches!(e, Error::IdentityKeyChanged { peer } if peer == bob.addr),
        "{e:?}"
    );
    assert_eq!(format!("{:?}", alice.store), format!("{before:?}"));

    // Alice accepts the new key: pinned (unverified), a new session, and
    // her introduction reaches Bob, who re-learns her.
    let (peer, out, cs) = courier::accept_invitation_with(
        &alice.store,
        &inv,
        &payload,
        &aq2,
        "Alice",
        courier::KeyChange::Accept,
        T0,
        &mut r,
    )
    .unwrap();
    assert_eq!(peer, bob.addr);
    alice.apply(cs);
    let new_key = postern_core::e2e::contact(&alice.store, &bob.addr)
        .unwrap()
        .unwrap();
    assert_ne!(new_key.identity.to_bytes(), old_key.to_bytes());
    assert_eq!(
        new_key.verification,
        postern_core::e2e::Verification::Unverified
    );
    let got = deliver(&mut bob, &nq.recipient_id, &out.blobs, &mut r);
    assert!(
        matches!(got.last(), Some(Received::NewContact { peer, .. }) if *peer == alice.addr),
        "{got:?}"
    );
    // Both ways again, over the new queues.
    turn(&mut bob, &mut alice, &aq2.recipient_id, &mut r);
    turn(&mut alice, &mut bob, &nq.recipient_id, &mut r);

    // The same invitation again, or one from a contact whose key did not
    // change, is refused as before.
    let nq2 = new_queue(&mut r, 9);
    let (inv2, payload2, cs) =
        courier::create_invitation(&bob.store, &nq2, "Bob", T0, &mut r).unwrap();
    bob.apply(cs);
    let aq3 = new_queue(&mut r, 10);
    assert!(matches!(
        courier::accept_invitation_with(
            &alice.store,
            &inv2,
            &payload2,
            &aq3,
            "Alice",
            courier::KeyChange::Accept,
            T0,
            &mut r
        ),
        Err(Error::AlreadyContact)
    ));
}

#[test]
fn an_introduction_claiming_a_known_contact_with_another_key_is_a_key_change() {
    let mut r = rng(22);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    let (_, _, intro, aq) = invite(&mut alice, &mut bob, &mut r);
    deliver(&mut alice, &aq, &intro.blobs, &mut r);
    // Someone else, claiming Bob's address with a key of their own,
    // answers a new invitation of Alice's.
    let mut mallory = User::new(&mut r);
    let mut store = postern_core::MemStore::new();
    let (addr, cs) =
        postern_core::e2e::create_identity_for_address(&store, bob.addr, T0, &mut r).unwrap();
    store.commit(cs).unwrap();
    mallory.store = store;
    mallory.addr = addr;
    let nq = new_queue(&mut r, 11);
    let (inv, payload, cs) =
        courier::create_invitation(&alice.store, &nq, "Alice", T0, &mut r).unwrap();
    alice.apply(cs);
    let mq = new_queue(&mut r, 12);
    let (_, out, cs) =
        courier::accept_invitation(&mallory.store, &inv, &payload, &mq, "Bob", T0, &mut r).unwrap();
    mallory.apply(cs);
    let before = alice.store.clone();
    let mut o = alice.store.clone();
    let mut err = None;
    for b in &out.blobs {
        match courier::receive(&o, &nq.recipient_id, b, T0, &mut r) {
            Ok((_, cs)) => o.commit(cs).unwrap(),
            Err(e) => err = Some(e),
        }
    }
    let e = err.expect("refused");
    assert!(
        matches!(e, Error::IdentityKeyChanged { peer } if peer == bob.addr),
        "{e:?}"
    );
    // Bob's pinned key is untouched.
    assert_eq!(
        postern_core::e2e::contact(&o, &bob.addr)
            .unwrap()
            .unwrap()
            .identity
            .to_bytes(),
        postern_core::e2e::contact(&before, &bob.addr)
            .unwrap()
            .unwrap()
            .identity
            .to_bytes()
    );
}
