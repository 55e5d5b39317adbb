//! The relay binary end to end: durability across `kill -9`, one-time
//! invitations, notifications, graceful shutdown, the admin endpoints and
//! what ends up in logs and on disk.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Raw, Relay, blob, marker};
use postern_core::crypto::signal::QueueSecret;
use postern_net::{ErrorCode, NetError};

#[tokio::test]
async fn acknowledged_blobs_survive_kill_9() {
    let mut relay = Relay::start(&[]);
    let key = QueueSecret::generate(&mut common::rng());
    let mut c = postern_net::connect(&relay.addr).await.unwrap();
    let q = c.create_queue(&key).await.unwrap();
    let mut acked = BTreeSet::new();
    for i in 0..30 {
        c.send(&q.sender_id, &blob(i)).await.unwrap();
        acked.insert(i);
    }
    // More sends from several connections while the relay is killed.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut senders = Vec::new();
    for s in 0..4u64 {
        let (addr, sid, tx) = (relay.addr.clone(), q.sender_id, tx.clone());
        senders.push(tokio::spawn(async move {
            let mut c = postern_net::connect(&addr).await.unwrap();
            for i in 0.. {
                let m = 1000 * (s + 1) + i;
                if c.send(&sid, &blob(m)).await.is_err() {
                    break;
                }
                tx.send(m).unwrap();
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(150)).await;
    relay.kill9();
    for s in senders {
        s.await.unwrap();
    }
    while let Some(m) = rx.recv().await {
        acked.insert(m);
    }
    assert!(acked.len() > 30, "no concurrent send was acknowledged");

    relay.restart();
    let mut c = postern_net::connect(&relay.addr).await.unwrap();
    let mut seen = BTreeSet::new();
    let mut ids = BTreeSet::new();
    loop {
        let (items, more) = c.fetch(&q.recipient_id, &key, 64).await.unwrap();
        for it in &items {
            assert!(ids.insert(it.id), "item id twice");
            assert!(seen.insert(marker(&it.blob)), "blob twice");
        }
        let all: Vec<u64> = items.iter().map(|i| i.id).collect();
        c.ack(&q.recipient_id, &key, &all).await.unwrap();
        if !more {
            break;
        }
    }
    // Every acknowledged blob is there; anything else was in flight.
    assert!(
        acked.is_subset(&seen),
        "lost {:?}",
        acked.difference(&seen).collect::<Vec<_>>()
    );
    // Acks deleted them.
    let (items, more) = c.fetch(&q.recipient_id, &key, 64).await.unwrap();
    assert!(items.is_empty() && !more);
}

#[tokio::test]
async fn invitations_are_taken_once_and_expire() {
    let relay = Relay::start(&[]);
    let key = QueueSecret::generate(&mut common::rng());
    let mut alice = postern_net::connect(&relay.addr).await.unwrap();
    let q = alice.create_queue(&key).await.unwrap();
    alice
        .put_invite(&q.recipient_id, &key, &[blob(1), blob(2)], 600)
        .await
        .unwrap();
    let mut bob = postern_net::connect(&relay.addr).await.unwrap();
    let got = bob.take_invite(&q.sender_id).await.unwrap();
    assert_eq!(got.iter().map(marker).collect::<Vec<_>>(), [1, 2]);
    assert!(matches!(
        bob.take_invite(&q.sender_id).await,
        Err(NetError::Relay(ErrorCode::NoSuchInvite))
    ));
    // The recipient id is not a way in.
    alice
        .put_invite(&q.recipient_id, &key, &[blob(3)], 600)
        .await
        .unwrap();
    assert!(matches!(
        bob.take_invite(&q.recipient_id).await,
        Err(NetError::Relay(ErrorCode::NoSuchInvite))
    ));
    // Expired.
    alice
        .put_invite(&q.recipient_id, &key, &[blob(4)], 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(matches!(
        bob.take_invite(&q.sender_id).await,
        Err(NetError::Relay(ErrorCode::NoSuchInvite))
    ));
}

#[tokio::test]
async fn subscribers_are_notified() {
    let relay = Relay::start(&[]);
    let key = QueueSecret::generate(&mut common::rng());
    let mut alice = postern_net::connect(&relay.addr).await.unwrap();
    let q = alice.create_queue(&key).await.unwrap();
    alice.subscribe(&q.recipient_id, &key).await.unwrap();
    let mut bob = postern_net::connect(&relay.addr).await.unwrap();
    bob.send(&q.sender_id, &blob(1)).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), alice.next_notification())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, q.recipient_id);
    // A notification that arrives during another call is kept for later.
    bob.send(&q.sender_id, &blob(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (items, _) = alice.fetch(&q.recipient_id, &key, 10).await.unwrap();
    assert_eq!(items.len(), 2);
    let n = tokio::time::timeout(Duration::from_secs(5), alice.next_notification())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, q.recipient_id);
    // Deleted queues are gone for everyone.
    alice.delete_queue(&q.recipient_id, &key).await.unwrap();
    assert!(matches!(
        bob.send(&q.sender_id, &blob(3)).await,
        Err(NetError::Relay(ErrorCode::NoSuchQueue))
    ));
    assert!(matches!(
        alice.fetch(&q.recipient_id, &key, 1).await,
        Err(NetError::Relay(ErrorCode::NoSuchQueue))
    ));
}

#[tokio::test]
async fn sigterm_exits_zero_promptly() {
    let mut relay = Relay::start(&[]);
    let key = QueueSecret::generate(&mut common::rng());
    let mut c = postern_net::connect(&relay.addr).await.unwrap();
    let q = c.create_queue(&key).await.unwrap();
    c.send(&q.sender_id, &blob(7)).await.unwrap();
    let (status, took) = relay.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(matches!(
        c.send(&q.sender_id, &blob(8)).await,
        Err(NetError::Closed)
    ));
    let logs = relay.logs();
    assert!(logs.contains("stopped"), "{logs}");
    // And the data is there after a restart.
    relay.restart();
    let mut c = postern_net::connect(&relay.addr).await.unwrap();
    let (items, _) = c.fetch(&q.recipient_id, &key, 10).await.unwrap();
    assert_eq!(
        items.iter().map(|i| marker(&i.blob)).collect::<Vec<_>>(),
        [7]
    );
}

#[tokio::test]
async fn admin_health_and_metrics() {
    let relay = Relay::start(&[]);
    let h = relay.admin_get("/health");
    assert!(
        h.starts_with("HTTP/1.1 200 OK") && h.ends_with("ok\n"),
        "{h}"
    );
    let key = QueueSecret::generate(&mut common::rng());
    let mut c = postern_net::connect(&relay.addr).await.unwrap();
    let q = c.create_queue(&key).await.unwrap();
    c.send(&q.sender_id, &blob(1)).await.unwrap();
    let m = relay.admin_get("/metrics");
    for line in [
        "postern_relay_connections_open 1",
        "postern_relay_requests_total{command=\"send\"} 1",
        "postern_relay_queues 1",
        "postern_relay_items 1",
        "postern_relay_item_bytes 2048",
        "postern_relay_gc_runs_total 1",
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
    assert!(relay.admin_get("/nope").starts_with("HTTP/1.1 404"));
}

/// Queue ids and client addresses stay out of the logs (at debug level),
/// and client addresses out of the data directory.
#[tokio::test]
async fn logs_and_data_hold_no_queue_ids_or_client_addresses() {
    let mut relay = Relay::start(&[]);
    let key = QueueSecret::generate(&mut common::rng());
    let mut raw = Raw::connect(&relay.addr).await;
    let port = raw.local_port();
    let (_, f) = raw.request(
        postern_core::relay_proto::Command::Create {
            queue_key: key.public().unwrap(),
        },
        Some(&key),
    );
    raw.send_frame(&f).await;
    let r = raw.recv().await.unwrap();
    let postern_core::relay_proto::Reply::Created {
        recipient_id,
        sender_id,
    } = r.reply
    else {
        panic!()
    };
    let mut c = postern_net::connect(&relay.addr).await.unwrap();
    c.subscribe(&recipient_id, &key).await.unwrap();
    c.send(&sender_id, &blob(5)).await.unwrap();
    c.put_invite(&recipient_id, &key, &[blob(6)], 60)
        .await
        .unwrap();
    c.take_invite(&sender_id).await.unwrap();
    let (items, _) = c.fetch(&recipient_id, &key, 10).await.unwrap();
    c.ack(&recipient_id, &key, &[items[0].id]).await.unwrap();
    c.fetch(&[9; 16], &key, 1).await.unwrap_err();
    c.close().await.unwrap();
    drop(raw);
    let (st, _) = relay.terminate();
    assert!(st.success());

    let logs = relay.logs();
    assert!(
        logs.contains("connection open"),
        "debug logs expected:\n{logs}"
    );
    let client = format!("127.0.0.1:{port}");
    let hex = |id: &[u8]| data_encoding::HEXLOWER.encode(id);
    let b64 = |id: &[u8]| data_encoding::BASE64.encode(id);
    for id in [recipient_id, sender_id] {
        for needle in [
            hex(&id),
            hex(&id).to_uppercase(),
            b64(&id),
            format!("{:?}", id),
        ] {
            assert!(!logs.contains(&needle), "queue id in logs");
        }
    }
    assert!(!logs.contains(&client), "client address in logs");
    assert!(!logs.contains(&format!(":{port}")), "client port in logs");
    let log_bytes = logs.as_bytes();
    for id in [recipient_id, sender_id] {
        assert!(
            !log_bytes.windows(16).any(|w| w == id),
            "raw queue id in logs"
        );
    }
    let mut files: Vec<_> = std::fs::read_dir(relay.data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.windows(client.len()).any(|w| w == client.as_bytes()),
            "client address in {}",
            p.display()
        );
    }
}

#[tokio::test]
async fn wrong_pin_and_missing_pin_are_refused() {
    let relay = Relay::start(&[]);
    let a = &relay.addr;
    let wrong = postern_core::RelayAddress::new(a.host(), a.port(), Some([7; 32])).unwrap();
    assert!(matches!(
        postern_net::connect(&wrong).await,
        Err(NetError::Tls(postern_net::TlsFailure::Certificate))
    ));
    // Without a pin the self-signed certificate fails the web PKI.
    let unpinned = postern_core::RelayAddress::new(a.host(), a.port(), None).unwrap();
    assert!(matches!(
        postern_net::connect(&unpinned).await,
        Err(NetError::Tls(postern_net::TlsFailure::Certificate))
    ));
    assert!(postern_net::connect(a).await.is_ok());
}

/// A connection the client says nothing on is closed after
/// `idle_timeout_secs`; one that sends `Ping` frames (full-size, like all
/// traffic) stays open.
#[tokio::test]
async fn idle_connections_are_closed_and_pings_keep_one_open() {
    let relay = Relay::start(&["--idle-timeout-secs", "2"]);
    let mut idle = postern_net::connect(&relay.addr).await.unwrap();
    let mut busy = postern_net::connect(&relay.addr).await.unwrap();
    for _ in 0..17 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        busy.ping().await.unwrap();
    }
    // Over 5 s have passed: the idle connection was closed at a check
    // (every 2 s here).
    assert!(matches!(idle.ping().await, Err(NetError::Closed)));
    busy.ping().await.unwrap();
    let m = relay.admin_get("/metrics");
    assert!(
        m.contains("postern_relay_requests_total{command=\"ping\"} 18"),
        "{m}"
    );
}
