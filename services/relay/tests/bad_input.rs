//! Hostile and malformed input: each gets its typed error code, the relay
//! keeps serving, and other connections are unaffected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Raw, Relay, blob, marker};
use postern_core::consts::FRAME_BYTES;
use postern_core::crypto::signal::QueueSecret;
use postern_core::relay_proto::{self, Command, Reply};
use postern_net::{ErrorCode, NetError};
use rand::RngCore as _;

/// A fresh connection creates a queue, sends to it and fetches it back.
async fn still_serves(relay: &mut Relay) {
    assert!(relay.alive(), "relay died");
    let mut c = postern_net::connect(&relay.addr).await.unwrap();
    let key = QueueSecret::generate(&mut common::rng());
    let q = c.create_queue(&key).await.unwrap();
    c.send(&q.sender_id, &blob(42)).await.unwrap();
    let (items, more) = c.fetch(&q.recipient_id, &key, 10).await.unwrap();
    assert_eq!((items.len(), more), (1, false));
    assert_eq!(marker(&items[0].blob), 42);
    c.close().await.unwrap();
}

/// version=v, seq=s, then `rest` (hand-encoded protobuf).
fn raw_request(version: u8, seq: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x08, version, 0x10, seq];
    p.extend_from_slice(rest);
    relay_proto::encode_frame(&p).unwrap().to_vec()
}

#[tokio::test]
async fn rejects_bad_frames_and_keeps_serving() {
    let mut relay = Relay::start(&[]);
    let mut raw = Raw::connect(&relay.addr).await;

    // Random bytes of the right size.
    let mut f = vec![0u8; FRAME_BYTES];
    common::rng().fill_bytes(&mut f);
    f[0] = 0xFF; // length beyond the frame
    raw.send_bytes(f).await;
    raw.expect_error(0, ErrorCode::Malformed).await;
    // Truncated and oversized (but under the message limit).
    raw.send_bytes(vec![0; FRAME_BYTES - 1]).await;
    raw.expect_error(0, ErrorCode::FrameSize).await;
    raw.send_bytes(vec![0; FRAME_BYTES + 1]).await;
    raw.expect_error(0, ErrorCode::FrameSize).await;
    raw.send_bytes(vec![]).await;
    raw.expect_error(0, ErrorCode::FrameSize).await;
    // Non-zero padding.
    let (_, good) = raw.request(Command::TakeInvite { sender_id: [1; 16] }, None);
    let mut padded = good.to_vec();
    padded[FRAME_BYTES - 1] = 1;
    raw.send_bytes(padded).await;
    raw.expect_error(0, ErrorCode::Malformed).await;
    // Text message.
    raw.send_text("hello").await;
    raw.expect_error(0, ErrorCode::Malformed).await;
    // Wrong protocol version (a take_invite, field 17).
    let mut take = vec![0x8a, 0x01, 18, 0x0a, 16];
    take.extend_from_slice(&[7; 16]);
    raw.send_bytes(raw_request(2, 100, &take)).await;
    raw.expect_error(100, ErrorCode::UnsupportedVersion).await;
    // Unknown command: oneof field 40 from a future version.
    raw.send_bytes(raw_request(1, 101, &[0xc2, 0x02, 0x00]))
        .await;
    raw.expect_error(101, ErrorCode::UnknownCommand).await;
    // No command at all.
    raw.send_bytes(raw_request(1, 102, &[])).await;
    raw.expect_error(102, ErrorCode::UnknownCommand).await;
    // A well-formed request still works on this connection afterwards
    // (its sequence number must exceed every one the relay accepted).
    let (seq, take) = raw.request(Command::TakeInvite { sender_id: [1; 16] }, None);
    raw.send_frame(&take).await;
    raw.expect_error(seq, ErrorCode::NoSuchInvite).await;

    // A message over the size limit breaks the connection, not the relay.
    let mut big = Raw::connect(&relay.addr).await;
    big.try_send_bytes(vec![0; 1 << 20]).await;
    loop {
        match big.recv().await {
            None => break,
            Some(r) => assert_eq!(r.reply, Reply::Error(ErrorCode::FrameSize)),
        }
    }

    still_serves(&mut relay).await;
}

#[tokio::test]
async fn rejects_wrong_and_replayed_signatures() {
    let mut relay = Relay::start(&[]);
    let key = QueueSecret::generate(&mut common::rng());
    let other = QueueSecret::generate(&mut common::rng());
    let mut raw = Raw::connect(&relay.addr).await;

    // Create signed by another key than the one registered.
    let (seq, f) = raw.request(
        Command::Create {
            queue_key: key.public().unwrap(),
        },
        Some(&other),
    );
    raw.send_frame(&f).await;
    raw.expect_error(seq, ErrorCode::BadSignature).await;

    let (seq, f) = raw.request(
        Command::Create {
            queue_key: key.public().unwrap(),
        },
        Some(&key),
    );
    raw.send_frame(&f).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(r.seq, seq);
    let Reply::Created {
        recipient_id,
        sender_id,
    } = r.reply
    else {
        panic!("not created: {r:?}")
    };
    assert_ne!(recipient_id, sender_id);
    let fetch = Command::Fetch {
        recipient_id,
        max: 10,
    };

    // Wrong key.
    let (seq, f) = raw.request(fetch.clone(), Some(&other));
    raw.send_frame(&f).await;
    raw.expect_error(seq, ErrorCode::BadSignature).await;
    let (seq, f) = raw.request(fetch.clone(), Some(&key));
    raw.send_frame(&f).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(
        (r.seq, r.reply),
        (
            seq,
            Reply::Done {
                count: 0,
                more: false
            }
        )
    );
    // The same frame again on this connection: stale.
    raw.send_frame(&f).await;
    raw.expect_error(seq, ErrorCode::StaleSequence).await;
    // ... and on another connection (another challenge): bad signature.
    let mut raw2 = Raw::connect(&relay.addr).await;
    raw2.send_frame(&f).await;
    raw2.expect_error(seq, ErrorCode::BadSignature).await;
    // A signed command on an unknown queue.
    let (seq, f) = raw2.request(
        Command::Fetch {
            recipient_id: [0xAB; 16],
            max: 1,
        },
        Some(&key),
    );
    raw2.send_frame(&f).await;
    raw2.expect_error(seq, ErrorCode::NoSuchQueue).await;
    // Send to an unknown sender id; take of an unknown invitation.
    let (seq, f) = raw2.request(
        Command::Send {
            sender_id: recipient_id, // recipient and sender ids are distinct
            blob: blob(1),
        },
        None,
    );
    raw2.send_frame(&f).await;
    raw2.expect_error(seq, ErrorCode::NoSuchQueue).await;

    still_serves(&mut relay).await;
}

#[tokio::test]
async fn too_many_errors_close_the_connection() {
    let mut relay = Relay::start(&[]);
    let mut raw = Raw::connect(&relay.addr).await;
    let mut answered = 0;
    // Exactly the limit: the relay answers each, then closes. (Bytes sent
    // after it closed would be answered with a TCP reset, which can
    // discard answers not yet read.)
    let limit = postern_relay::server::MAX_ERRORS_PER_CONNECTION;
    for _ in 0..limit {
        raw.send_bytes(vec![1; 10]).await;
    }
    while let Some(r) = raw.recv().await {
        assert_eq!(r.reply, Reply::Error(ErrorCode::FrameSize));
        answered += 1;
    }
    assert_eq!(answered, limit);
    still_serves(&mut relay).await;
}

#[tokio::test]
async fn queue_over_quota_is_full() {
    let mut relay = Relay::start(&["--queue-max-messages", "3"]);
    let mut c = postern_net::connect(&relay.addr).await.unwrap();
    let key = QueueSecret::generate(&mut common::rng());
    let q = c.create_queue(&key).await.unwrap();
    for i in 0..3 {
        c.send(&q.sender_id, &blob(i)).await.unwrap();
    }
    assert!(matches!(
        c.send(&q.sender_id, &blob(3)).await,
        Err(NetError::Relay(ErrorCode::QueueFull))
    ));
    // Acking makes room again.
    let (items, _) = c.fetch(&q.recipient_id, &key, 10).await.unwrap();
    c.ack(&q.recipient_id, &key, &[items[0].id]).await.unwrap();
    c.send(&q.sender_id, &blob(3)).await.unwrap();
    // Another queue is unaffected.
    let mut d = postern_net::connect(&relay.addr).await.unwrap();
    let key2 = QueueSecret::generate(&mut common::rng());
    let q2 = d.create_queue(&key2).await.unwrap();
    d.send(&q2.sender_id, &blob(9)).await.unwrap();
    still_serves(&mut relay).await;
}

#[tokio::test]
async fn rate_limit_and_queue_limit() {
    let mut relay = Relay::start(&[
        "--rate-per-sec",
        "1",
        "--rate-burst",
        "3",
        "--max-queues",
        "2",
    ]);
    let mut c = postern_net::connect(&relay.addr).await.unwrap();
    let key = QueueSecret::generate(&mut common::rng());
    c.create_queue(&key).await.unwrap();
    c.create_queue(&key).await.unwrap();
    assert!(matches!(
        c.create_queue(&key).await,
        Err(NetError::Relay(ErrorCode::TooManyQueues))
    ));
    assert!(matches!(
        c.take_invite(&[1; 16]).await,
        Err(NetError::Relay(ErrorCode::RateLimited))
    ));
    // Another connection has its own bucket.
    let mut d = postern_net::connect(&relay.addr).await.unwrap();
    assert!(matches!(
        d.take_invite(&[1; 16]).await,
        Err(NetError::Relay(ErrorCode::NoSuchInvite))
    ));
    assert!(relay.alive());
    let m = relay.admin_get("/metrics");
    assert!(
        m.contains("postern_relay_errors_total{code=\"rate_limited\"} 1"),
        "{m}"
    );
    assert!(m.contains("postern_relay_queues 2"), "{m}");
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let mut relay = Relay::start(&["--max-connections", "2"]);
    let a = Raw::connect(&relay.addr).await;
    let _b = Raw::connect(&relay.addr).await;
    assert!(postern_net::connect(&relay.addr).await.is_err());
    drop(a);
    // The slot comes back once the relay has seen the close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Ok(c) = postern_net::connect(&relay.addr).await {
            c.close().await.unwrap();
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot not released");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(relay.alive());
    let m = relay.admin_get("/metrics");
    assert!(
        m.contains("postern_relay_connections_rejected_total "),
        "{m}"
    );
    assert!(
        !m.contains("postern_relay_connections_rejected_total 0"),
        "{m}"
    );
}
