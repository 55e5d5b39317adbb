//! Regression: a tampered SPQR field made libsignal's SPQR code panic
//! (index out of bounds in spqr's message decoder, reached before the MAC
//! check). Every mutation of that field must now be a typed error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{User, connect, rng};
use postern_core::{ErrorKind, e2e};
use prost::Message;
use rand::Rng;

/// libsignal's `SignalMessage` protobuf (wire.proto), for re-encoding.
#[derive(Clone, PartialEq, prost::Message)]
struct SignalMessageProto {
    #[prost(bytes, optional, tag = "1")]
    ratchet_key: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "2")]
    counter: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    previous_counter: Option<u32>,
    #[prost(bytes, optional, tag = "4")]
    ciphertext: Option<Vec<u8>>,
    #[prost(bytes, optional, tag = "5")]
    pq_ratchet: Option<Vec<u8>>,
}

fn with_spqr(wire: &[u8], spqr: Vec<u8>) -> Vec<u8> {
    // wire = tag(1) || version(1) || protobuf || mac(8)
    let body = &wire[2..wire.len() - 8];
    let mut m = SignalMessageProto::decode(body).unwrap();
    m.pq_ratchet = Some(spqr);
    let mut out = wire[..2].to_vec();
    out.extend_from_slice(&m.encode_to_vec());
    out.extend_from_slice(&wire[wire.len() - 8..]);
    out
}

#[test]
fn rejects_malformed_spqr_field_without_panicking() {
    let mut r = rng(77);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);
    let first = alice.encrypt(&bob.addr, b"a", &mut r);
    bob.decrypt(&alice.addr, &first, &mut r).unwrap();
    let reply = bob.encrypt(&alice.addr, b"b", &mut r);
    alice.decrypt(&bob.addr, &reply, &mut r).unwrap();
    let msg = alice.encrypt(&bob.addr, b"c", &mut r);
    assert_eq!(msg[0], postern_core::crypto::signal::CIPHERTEXT_WHISPER);
    let body = &msg[2..msg.len() - 8];
    let original = SignalMessageProto::decode(body)
        .unwrap()
        .pq_ratchet
        .unwrap_or_default();

    let mut cases: Vec<Vec<u8>> = vec![
        vec![1],
        vec![1, 1],
        vec![1, 1, 0],    // the panic that was found: no type byte
        vec![1, 0, 0, 0], // epoch 0
        vec![
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0,
        ],
        vec![
            1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0,
        ],
        vec![
            1, 1, 1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
    ];
    for cut in 0..original.len() {
        cases.push(original[..cut].to_vec());
    }
    for _ in 0..3000 {
        let mut c = original.clone();
        for _ in 0..r.random_range(1..4) {
            if c.is_empty() {
                break;
            }
            let i = r.random_range(0..c.len());
            c[i] = r.random();
        }
        cases.push(c);
        let len = r.random_range(0..80);
        let mut c: Vec<u8> = (0..len).map(|_| r.random()).collect();
        if let Some(b) = c.first_mut() {
            *b = 1;
        }
        cases.push(c);
    }
    for spqr in cases {
        let t = with_spqr(&msg, spqr.clone());
        if t == msg {
            continue;
        }
        match e2e::decrypt(&bob.store, &alice.addr, &t, &mut r) {
            Err(e) => assert_eq!(e.kind(), ErrorKind::PeerMisbehaved, "{spqr:02x?}: {e:?}"),
            Ok(_) => panic!("tampered SPQR field accepted: {spqr:02x?}"),
        }
    }
    assert_eq!(bob.decrypt(&alice.addr, &msg, &mut r).unwrap(), b"c");
}
