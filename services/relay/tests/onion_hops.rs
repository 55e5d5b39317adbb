//! Onion packets at a real relay (a 3-relay `testnet`): rejections first
//! — tampered header, tampered payload, replayed packet (also with its
//! group element re-encoded), a key epoch the
//! relay does not hold, an unknown next hop, a packet of the wrong size —
//! each a typed error, counted, never forwarded; then a packet that
//! crosses three relays into a queue, fetched by its owner.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use postern_core::consts::{BLOB_BYTES, SPHINX_PACKET_BYTES};
use postern_core::crypto::signal::QueueSecret;
use postern_core::directory::Directory;
use postern_core::onion::{self, Node, Path};
use postern_core::{RelayAddress, UnixTime};
use postern_net::{ErrorCode, NetError};
use postern_relay::config::parse_authority_key;

const BIN: &str = env!("CARGO_BIN_EXE_postern-relay");

fn now() -> UnixTime {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    UnixTime(d.as_millis() as u64)
}

struct Net {
    child: std::process::Child,
    relays: Vec<RelayAddress>,
    dir: Directory,
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

async fn testnet(path: &std::path::Path) -> Net {
    let mut child = Command::new(BIN)
        .args(["testnet", "--relays", "3", "--mix-delay-ms", "0", "--dir"])
        .arg(path)
        .env_remove("POSTERN_RELAY_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut relays, mut authority) = (Vec::new(), None);
    loop {
        let line = lines.next().expect("testnet exited early").unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["relay", _, a] => relays.push(RelayAddress::parse(a).unwrap()),
            ["authority", k] => authority = Some(parse_authority_key(k).unwrap()),
            ["ready"] => break,
            _ => {}
        }
    }
    let mut c = postern_net::connect(&relays[0]).await.unwrap();
    let bytes = c.get_directory().await.unwrap();
    let dir = Directory::verify(&bytes, &[authority.unwrap()], 1, now()).unwrap();
    Net { child, relays, dir }
}

fn node(nodes: &[Node], a: &RelayAddress) -> Node {
    nodes.iter().find(|n| n.address == *a).unwrap().clone()
}

fn refused(r: Result<(), NetError>) -> ErrorCode {
    match r {
        Err(NetError::Relay(code)) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hops_reject_bad_packets_and_deliver_good_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let net = testnet(tmp.path()).await;
    let epoch = net.dir.epoch_at(now());
    let nodes = onion::nodes(&net.dir, epoch);
    let (a, b, c) = (
        node(&nodes, &net.relays[0]),
        node(&nodes, &net.relays[1]),
        node(&nodes, &net.relays[2]),
    );
    let mut rng = rand::rng();

    // A queue on relay C.
    let key = QueueSecret::generate(&mut rng);
    let mut conn_c = postern_net::connect(&c.address).await.unwrap();
    let ids = conn_c.create_queue(&key).await.unwrap();
    let blob = Box::new([0x42u8; BLOB_BYTES]);
    let path = Path {
        nodes: vec![a.clone(), b.clone(), c.clone()],
    };
    let mut conn_a = postern_net::connect(&a.address).await.unwrap();

    // Tampered header: refused at the first hop.
    let mut p = onion::wrap(&path, &ids.sender_id, &blob, &mut rng).unwrap();
    p[50] ^= 1;
    // Many of them: refused packets do not get the connection closed (it
    // may be a relay's link carrying someone else's bad packets); the
    // same connection carries the good packets below.
    for _ in 0..postern_relay::server::MAX_ERRORS_PER_CONNECTION + 8 {
        assert_eq!(
            refused(conn_a.forward(epoch, &p).await),
            ErrorCode::BadPacket
        );
    }
    // Tampered payload: only the last hop can tell; send a one-hop packet
    // straight to C.
    let direct = Path {
        nodes: vec![c.clone()],
    };
    let mut p = onion::wrap(&direct, &ids.sender_id, &blob, &mut rng).unwrap();
    p[SPHINX_PACKET_BYTES - 10] ^= 1;
    assert_eq!(
        refused(conn_c.forward(epoch, &p).await),
        ErrorCode::BadPacket
    );
    // A key epoch the relay does not hold.
    let p = onion::wrap(&path, &ids.sender_id, &blob, &mut rng).unwrap();
    assert_eq!(
        refused(conn_a.forward(epoch + 5, &p).await),
        ErrorCode::UnknownEpoch
    );
    // An unknown next hop (a relay the directory does not list).
    let ghost = Node {
        id: [0xEE; 32],
        ..b.clone()
    };
    let bad_path = Path {
        nodes: vec![a.clone(), ghost, c.clone()],
    };
    let p = onion::wrap(&bad_path, &ids.sender_id, &blob, &mut rng).unwrap();
    assert_eq!(
        refused(conn_a.forward(epoch, &p).await),
        ErrorCode::UnknownNextHop
    );
    // Wrong size: the frame does not decode as a Forward.
    let mut ws = postern_net::connect_websocket(&a.address).await.unwrap();
    {
        use futures_util::{SinkExt as _, StreamExt as _};
        let _hello = ws.next().await.unwrap().unwrap();
        let cmd = postern_core::codec::relay_proto::Request {
            version: 1,
            seq: 1,
            signature: vec![],
            command: Some(postern_core::codec::relay_proto::request::Command::Forward(
                postern_core::codec::relay_proto::Forward {
                    packet: vec![0; SPHINX_PACKET_BYTES - 1],
                    epoch,
                },
            )),
        };
        use prost::Message as _;
        let frame = postern_core::relay_proto::encode_frame(&cmd.encode_to_vec()).unwrap();
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(
            frame.to_vec().into(),
        ))
        .await
        .unwrap();
        let reply = ws.next().await.unwrap().unwrap().into_data();
        let r = postern_core::relay_proto::decode_response(&reply).unwrap();
        assert_eq!(
            r.reply,
            postern_core::relay_proto::Reply::Error(ErrorCode::Malformed)
        );
    }

    // At the last hop the answer does not depend on the packet: one for a
    // queue C does not hold is answered `Ok` like a delivery (the previous
    // hop learns neither whether it was cover nor whether a queue exists),
    // then counted and dropped.
    let p = onion::wrap(&direct, &[0x77; 16], &blob, &mut rng).unwrap();
    conn_c.forward(epoch, &p).await.unwrap();

    // A cover packet crosses A -> B -> C and is dropped there: accepted,
    // nothing stored.
    let cover = onion::cover_packet(&path, &mut rng).unwrap();
    conn_a.forward(epoch, &cover).await.unwrap();

    // A good packet crosses A -> B -> C into the queue; its replay is
    // refused at A, and so is a copy whose group element has its unused
    // top bit flipped (same Diffie-Hellman secret, other bytes).
    let p = onion::wrap(&path, &ids.sender_id, &blob, &mut rng).unwrap();
    conn_a.forward(epoch, &p).await.unwrap();
    assert_eq!(
        refused(conn_a.forward(epoch, &p).await),
        ErrorCode::ReplayedPacket
    );
    let mut copy = p.clone();
    copy[31] ^= 0x80;
    assert_eq!(
        refused(conn_a.forward(epoch, &copy).await),
        ErrorCode::ReplayedPacket
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let items = loop {
        let (items, _) = conn_c.fetch(&ids.recipient_id, &key, 10).await.unwrap();
        if !items.is_empty() || Instant::now() > deadline {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(items.len(), 1, "delivered exactly once");
    assert_eq!(items[0].blob, blob);
    // Nothing else arrives (the refused packets were never forwarded).
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn_c
        .ack(&ids.recipient_id, &key, &[items[0].id])
        .await
        .unwrap();
    let (rest, _) = conn_c.fetch(&ids.recipient_id, &key, 10).await.unwrap();
    assert!(rest.is_empty());
}
