//! Interoperability with Signal's official libsignal build.
//!
//! A peer written against `@signalapp/libsignal-client` 0.86.0 (Signal's
//! Node binding, a prebuilt native libsignal; `tests/interop/`) talks to
//! Postern: PQXDH in both directions, messages both ways, sealed sender
//! both ways, and the same safety number on both sides. The test needs
//! Node.js and `npm ci` in `core/tests/interop` (the setup script does it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::{T0, User, rng};
use postern_core::codec::{self, proto};
use postern_core::{Address, e2e};
use prost::Message;
use serde_json::{Value, json};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

struct NodePeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NodePeer {
    fn start() -> NodePeer {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
        assert!(
            dir.join("node_modules/@signalapp/libsignal-client")
                .exists(),
            "Signal's Node binding is not installed: run `npm ci` in {} (the README's setup does this)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("peer.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node must be installed");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        NodePeer {
            child,
            stdin,
            stdout,
        }
    }

    fn call(&mut self, op: &str, mut args: Value) -> Value {
        args["op"] = json!(op);
        writeln!(self.stdin, "{args}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match v.get("ok") {
            Some(ok) => ok.clone(),
            None => panic!("node peer failed in {op}: {}", v["err"]),
        }
    }
}

impl Drop for NodePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Node peer's bundle, as Postern's wire bundle.
fn node_bundle(node: &mut NodePeer) -> (Address, Vec<u8>) {
    let b = node.call("bundle", json!({}));
    let s = |k: &str| unhex(b[k].as_str().unwrap());
    let n = |k: &str| u32::try_from(b[k].as_u64().unwrap()).unwrap();
    let address = Address::parse_uuid_string(b["address"].as_str().unwrap()).unwrap();
    let bundle = proto::PreKeyBundle {
        version: postern_core::consts::BUNDLE_VERSION,
        address: address.as_bytes().to_vec(),
        registration_id: n("registration_id"),
        identity_key: s("identity_key"),
        signed_prekey_id: n("signed_prekey_id"),
        signed_prekey: s("signed_prekey"),
        signed_prekey_signature: s("signed_prekey_signature"),
        kyber_prekey_id: n("kyber_prekey_id"),
        kyber_prekey: s("kyber_prekey"),
        kyber_prekey_signature: s("kyber_prekey_signature"),
        one_time_prekey_id: Some(n("one_time_prekey_id")),
        one_time_prekey: s("one_time_prekey"),
    };
    (address, codec::encode(&bundle))
}

/// Postern's bundle as the JSON the Node peer takes.
fn bundle_json(bundle: &[u8]) -> Value {
    let b = proto::PreKeyBundle::decode(bundle).unwrap();
    json!({
        "address": Address::from_slice(&b.address).unwrap().to_uuid_string(),
        "registration_id": b.registration_id,
        "identity_key": hex(&b.identity_key),
        "signed_prekey_id": b.signed_prekey_id,
        "signed_prekey": hex(&b.signed_prekey),
        "signed_prekey_signature": hex(&b.signed_prekey_signature),
        "kyber_prekey_id": b.kyber_prekey_id,
        "kyber_prekey": hex(&b.kyber_prekey),
        "kyber_prekey_signature": hex(&b.kyber_prekey_signature),
        "one_time_prekey_id": b.one_time_prekey_id,
        "one_time_prekey": hex(&b.one_time_prekey),
    })
}

fn postern_to_node(
    alice: &mut User,
    node: &mut NodePeer,
    to: &Address,
    text: &str,
    r: &mut rand_chacha::ChaCha20Rng,
) {
    let wire = alice.encrypt(to, text.as_bytes(), r);
    let out = node.call(
        "decrypt",
        json!({"from": alice.addr.to_uuid_string(), "type": wire[0], "ciphertext": hex(&wire[1..])}),
    );
    assert_eq!(unhex(out["plaintext"].as_str().unwrap()), text.as_bytes());
}

fn node_to_postern(
    alice: &mut User,
    node: &mut NodePeer,
    from: &Address,
    text: &str,
    r: &mut rand_chacha::ChaCha20Rng,
) {
    let out = node.call(
        "encrypt",
        json!({"to": alice.addr.to_uuid_string(), "plaintext": hex(text.as_bytes())}),
    );
    let mut wire = vec![u8::try_from(out["type"].as_u64().unwrap()).unwrap()];
    wire.extend(unhex(out["ciphertext"].as_str().unwrap()));
    assert_eq!(alice.decrypt(from, &wire, r).unwrap(), text.as_bytes());
}

fn sealed_both_ways(
    alice: &mut User,
    node: &mut NodePeer,
    node_addr: &Address,
    r: &mut rand_chacha::ChaCha20Rng,
) {
    // Postern users are their own sealed-sender trust root: the identity key.
    let trust_root = e2e::local_identity_key(&alice.store).unwrap().to_bytes();
    let sealed = alice.seal(node_addr, b"sealed from postern", r);
    let out = node.call(
        "unseal",
        json!({"sealed": hex(&sealed), "trust_root": hex(&trust_root), "now": T0.millis()}),
    );
    assert_eq!(out["sender"].as_str().unwrap(), alice.addr.to_uuid_string());
    assert_eq!(
        unhex(out["plaintext"].as_str().unwrap()),
        b"sealed from postern"
    );

    let out = node.call(
        "seal",
        json!({"to": alice.addr.to_uuid_string(), "plaintext": hex(b"sealed from signal"), "expires": T0.millis() + 3_600_000}),
    );
    let (from, pt) = alice
        .open(&unhex(out["sealed"].as_str().unwrap()), r)
        .unwrap();
    assert_eq!(from, *node_addr);
    assert_eq!(pt, b"sealed from signal");
}

fn same_safety_number(alice: &User, node: &mut NodePeer, node_addr: &Address) {
    let mine = e2e::safety_number(&alice.store, node_addr).unwrap();
    let key = e2e::local_identity_key(&alice.store).unwrap();
    let theirs = node.call(
        "safety_number",
        json!({"remote": alice.addr.to_uuid_string(), "remote_key": hex(&key.to_bytes())}),
    );
    assert_eq!(theirs["digits"].as_str().unwrap(), mine.digits);
    let scanned = unhex(theirs["scannable"].as_str().unwrap());
    let (ok, _) = e2e::verify_scanned(&alice.store, node_addr, &scanned).unwrap();
    assert!(
        ok,
        "Postern must accept the official build's scannable safety number"
    );
}

#[test]
fn postern_initiates_pqxdh_with_official_signal_build() {
    let mut r = rng(500);
    let mut node = NodePeer::start();
    let mut alice = User::new(&mut r);
    let (node_addr, bundle) = node_bundle(&mut node);
    // Postern verifies the official build's bundle (signatures, Kyber,
    // address) and runs PQXDH with it.
    let (peer, cs) = e2e::start_session(&alice.store, &bundle, T0, &mut r).unwrap();
    assert_eq!(peer, node_addr);
    alice.apply(cs);
    postern_to_node(
        &mut alice,
        &mut node,
        &node_addr,
        "hello from postern (PreKey message)",
        &mut r,
    );
    node_to_postern(
        &mut alice,
        &mut node,
        &node_addr,
        "hello from signal",
        &mut r,
    );
    for i in 0..5 {
        postern_to_node(&mut alice, &mut node, &node_addr, &format!("p{i}"), &mut r);
        postern_to_node(&mut alice, &mut node, &node_addr, &format!("p{i}'"), &mut r);
        node_to_postern(&mut alice, &mut node, &node_addr, &format!("s{i}"), &mut r);
    }
    sealed_both_ways(&mut alice, &mut node, &node_addr, &mut r);
    same_safety_number(&alice, &mut node, &node_addr);
}

#[test]
fn official_signal_build_initiates_pqxdh_with_postern() {
    let mut r = rng(501);
    let mut node = NodePeer::start();
    let mut alice = User::new(&mut r);
    let (node_addr, node_b) = node_bundle(&mut node);
    let (_, cs) = e2e::add_contact(&alice.store, &node_b).unwrap();
    alice.apply(cs);
    let mine = alice.bundle();
    node.call("process_bundle", bundle_json(&mine));
    node_to_postern(
        &mut alice,
        &mut node,
        &node_addr,
        "hello postern, PreKey from signal",
        &mut r,
    );
    postern_to_node(&mut alice, &mut node, &node_addr, "hello signal", &mut r);
    for i in 0..5 {
        node_to_postern(&mut alice, &mut node, &node_addr, &format!("s{i}"), &mut r);
        postern_to_node(&mut alice, &mut node, &node_addr, &format!("p{i}"), &mut r);
    }
    sealed_both_ways(&mut alice, &mut node, &node_addr, &mut r);
    same_safety_number(&alice, &mut node, &node_addr);
}

#[test]
fn official_build_first_message_sealed_to_postern() {
    // The Node peer's very first message is a sealed PreKey message.
    let mut r = rng(502);
    let mut node = NodePeer::start();
    let mut alice = User::new(&mut r);
    let (node_addr, node_b) = node_bundle(&mut node);
    let (_, cs) = e2e::add_contact(&alice.store, &node_b).unwrap();
    alice.apply(cs);
    let mine = alice.bundle();
    node.call("process_bundle", bundle_json(&mine));
    let out = node.call(
        "seal",
        json!({"to": alice.addr.to_uuid_string(), "plaintext": hex(b"first, sealed"), "expires": T0.millis() + 60_000}),
    );
    let (from, pt) = alice
        .open(&unhex(out["sealed"].as_str().unwrap()), &mut r)
        .unwrap();
    assert_eq!((from, pt.as_slice()), (node_addr, &b"first, sealed"[..]));
}
