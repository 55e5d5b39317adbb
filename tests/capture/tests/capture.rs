//! What a network observer sees, from a packet capture of the loopback
//! interface: `tcpdump` records every TCP segment between two users and a
//! 5-relay onion network while they exchange messages and a file; the test
//! reassembles each TCP stream, splits it into TLS records and checks
//!
//! - every record that carries traffic, on every link (user to relay and
//!   relay to relay, both directions), has one size: one relay-protocol
//!   frame; only the TLS/WebSocket handshake before and the close after
//!   differ;
//! - the sender never opens a connection to the recipient's mailbox relay:
//!   the packets that relay stores reach it over relay links only.
//!
//! - every TLS handshake, on every link, is post-quantum: the ClientHello
//!   sends a key share for X25519MLKEM768 (0x11ec) only, and the
//!   ServerHello selects it, without a retry.
//!
//! Cover traffic (drop and loop packets from `postern watch`) is part of
//! the capture and held to the same rule. While watching, a client sends
//! receipts, resends and cover through one set of links: the capture shows
//! at most one connection per entry relay, however many packets of each
//! kind left.
//!
//! The users leave from their own loopback addresses (Alice 127.0.0.2,
//! Bob 127.0.0.3, relays 127.0.0.1) so each connection's owner is visible.
//! Needs `tcpdump` and the right to capture (root or CAP_NET_RAW), and the
//! `postern` and `postern-relay` binaries built (`cargo build -p
//! postern-cli -p postern-relay`), so it is ignored by a plain `cargo
//! test`; `scripts/test` runs it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    // The figures and any capture loss go to the test output.
    clippy::print_stderr
)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use postern_capture::tcpdump::Tcpdump;
use postern_capture::{tcp, tls};
use postern_cli::harness::{self, Testnet, User};
use postern_core::RelayAddress;
use postern_core::consts::FRAME_BYTES;

const ALICE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BOB_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const RELAY_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// TLS 1.3 record overhead on application data: the inner content type
/// byte and the 16-byte AEAD tag.
const TLS_OVERHEAD: usize = 1 + 16;
/// A frame as a WebSocket message: 2 header bytes and a 2-byte extended
/// length; a client also sends a 4-byte mask.
const RECORD_TO_CLIENT: usize = FRAME_BYTES + 4 + TLS_OVERHEAD;
const RECORD_TO_RELAY: usize = FRAME_BYTES + 4 + 4 + TLS_OVERHEAD;
/// Records a connection may carry before its first frame (TLS handshake
/// flight, WebSocket upgrade) and after its last (WebSocket close, TLS
/// close_notify).
const MAX_SETUP_RECORDS: usize = 6;
const MAX_TEARDOWN_RECORDS: usize = 2;

#[test]
#[ignore = "needs tcpdump and the right to capture on lo; scripts/test runs it"]
fn every_record_on_every_link_has_one_size_and_the_sender_never_meets_the_mailbox() {
    // target/debug/deps/capture-… -> target/debug/
    let exe = std::env::current_exe().unwrap();
    let bin_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let postern = bin_dir.join("postern");
    let relay_bin = bin_dir.join("postern-relay");
    assert!(
        postern.exists() && relay_bin.exists(),
        "build them first: cargo build -p postern-cli -p postern-relay"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A 40 ms mean mixing delay per hop: acknowledgements come back
    // slower than the watch loop's resend tick (100 ms at least), so the
    // resends checked below happen (with no delay an idle relay forwards
    // within a millisecond or two and every packet is acknowledged first).
    let mut net = Testnet::start(&relay_bin, &dir.join("net"), 5, 40).unwrap();
    let ports: Vec<u16> = net
        .relays
        .iter()
        .map(|a| RelayAddress::parse(a).unwrap().port())
        .collect();
    let relay_of = |port: u16| ports.iter().position(|p| *p == port).map(|i| i + 1);

    let pcap = dir.join("lo.pcap");
    let filter = ports
        .iter()
        .map(|p| format!("tcp port {p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let mut tcpdump = Tcpdump::start(&pcap, &filter).unwrap();

    let alice = User::new(&postern, "Alice", &dir.join("alice"))
        .with_env("POSTERN_SOURCE_ADDR", &ALICE_IP.to_string());
    let bob = User::new(&postern, "Bob", &dir.join("bob"))
        .with_env("POSTERN_SOURCE_ADDR", &BOB_IP.to_string());
    alice
        .ok(&["init", "--name", "Alice", "--relay", &net.relays[0]])
        .unwrap();
    bob.ok(&["init", "--name", "Bob", "--relay", &net.relays[2]])
        .unwrap();
    alice
        .ok(&["network", "--authority", &net.authority])
        .unwrap();
    bob.ok(&["network", "--authority", &net.authority]).unwrap();
    // The invitation is taken from Alice's relay by Bob himself; from
    // here on neither user touches the other's relay.
    let link = harness::link_in(&alice.ok(&["invite", "--quiet"]).unwrap()).unwrap();
    bob.ok(&["accept", &link]).unwrap();
    let introduced = SystemTime::now();
    let mut out = String::new();
    for _ in 0..50 {
        out.push_str(&alice.ok(&["sync"]).unwrap());
        if out.contains("Bob accepted your invitation") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(out.contains("Bob accepted your invitation"), "{out}");

    alice.ok(&["send", "Bob", "seen from the wire"]).unwrap();
    let notes = dir.join("notes.txt");
    let body = b"captured notes\n".repeat(700);
    std::fs::write(&notes, &body).unwrap();
    alice
        .ok(&["send-file", "Bob", notes.to_str().unwrap()])
        .unwrap();
    let dl = dir.join("dl");
    let mut out = String::new();
    for _ in 0..50 {
        out.push_str(
            &bob.ok(&["sync", "--downloads", dl.to_str().unwrap()])
                .unwrap(),
        );
        if out.contains("saved") && out.contains("seen from the wire") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(out.contains("seen from the wire"), "{out}");
    assert_eq!(std::fs::read(dl.join("notes.txt")).unwrap(), body);
    bob.ok(&["send", "Alice", "answer over the onion"]).unwrap();
    let mut out = String::new();
    for _ in 0..50 {
        out.push_str(&alice.ok(&["sync"]).unwrap());
        if out.contains("answer over the onion") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(out.contains("answer over the onion"), "{out}");

    // Cover traffic is on the wire too: Alice watches with drop and loop
    // packets at a high rate until a loop has come back. Its packets may
    // enter at any relay, Bob's included, so the mailbox check below
    // covers what came before.
    let covered = SystemTime::now();
    let mut watcher = alice
        .command(&["watch", "--cover-per-minute", "1200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = harness::lines_of(watcher.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = String::new();
    while Instant::now() < deadline && !out.contains("confirmed delivered") {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    let _ = Command::new("kill")
        .args(["-INT", &watcher.id().to_string()])
        .status();
    assert!(watcher.wait().unwrap().success());
    assert!(
        out.contains("confirmed delivered"),
        "no loop came back: {out}"
    );

    // One set of links: Alice watches again while Bob writes to her. Her
    // watch sends receipts for his texts, resends (an acknowledgement
    // timeout of 1 ms makes every packet overdue at once) and cover, all
    // through the same connections: none is opened for a kind of packet,
    // so an entry relay cannot tell the kinds apart by connection.
    let linked = SystemTime::now();
    let mut watcher = alice
        .command(&["watch", "--cover-per-minute", "600"])
        .env("POSTERN_ACK_TIMEOUT_MS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = harness::lines_of(watcher.stdout.take().unwrap());
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !out.contains("watching") {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    let texts: Vec<String> = (0..3).map(|i| format!("linked note {i}")).collect();
    for t in &texts {
        bob.ok(&["send", "Alice", t]).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = |out: &str| texts.iter().all(|t| out.contains(t.as_str())) && out.contains("resent");
    while Instant::now() < deadline && !done(&out) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    // A little more cover and resending on the same links.
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-INT", &watcher.id().to_string()])
        .status();
    assert!(watcher.wait().unwrap().success());
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        out.push_str(&l);
        out.push('\n');
    }
    assert!(done(&out), "texts not received or nothing resent: {out}");
    assert!(out.contains("cover traffic: "), "{out}");

    // Relays shut down cleanly, so every connection ends inside the capture.
    net.stop().unwrap();
    let capture = tcpdump.stop().unwrap();

    // Post-quantum key exchange on every link, both ways.
    let handshakes = postern_capture::handshakes(&capture).unwrap();
    for h in &handshakes {
        let who = format!("{:?} -> {:?}", h.client, h.server);
        assert_eq!(h.offered(), [0x11ec], "{who}: key shares offered");
        assert_eq!(h.selected(), Some(0x11ec), "{who}: group selected");
        assert!(!h.retried(), "{who}: a HelloRetryRequest");
    }
    let conns = tcp::connections(&capture.tcp).unwrap();
    assert_eq!(handshakes.len(), conns.len());
    assert!(
        conns.len() >= 10,
        "only {} connections captured",
        conns.len()
    );
    let mut frames = [0usize; 2];
    let mut relay_links_into_bobs = 0;
    // Alice's connections while she watched the second time, by relay,
    // and the frames she sent over them.
    let mut linked_conns: BTreeMap<usize, usize> = BTreeMap::new();
    let mut linked_frames = 0usize;
    for c in &conns {
        let relay = relay_of(c.server.1).unwrap();
        let who = match c.client.0 {
            ip if ip == ALICE_IP => "Alice",
            ip if ip == BOB_IP => "Bob",
            ip if ip == RELAY_IP => "a relay",
            ip => panic!("a connection from {ip}"),
        };
        let what = format!("{who} -> relay {relay} ({}:{})", c.client.0, c.client.1);
        let mut here = [0usize; 2];
        for (dir, (bytes, size)) in [
            (&c.to_server, RECORD_TO_RELAY),
            (&c.to_client, RECORD_TO_CLIENT),
        ]
        .into_iter()
        .enumerate()
        {
            let records = tls::records(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
            here[dir] = check_uniform(&records, size).unwrap_or_else(|e| panic!("{what}: {e}"));
            frames[dir] += here[dir];
        }
        // Every command is answered with frames of the same size.
        assert!(
            here[0] == 0 || here[1] >= 1,
            "{what}: {} frames sent, none came back",
            here[0]
        );
        if c.client.0 == ALICE_IP && c.opened >= linked {
            *linked_conns.entry(relay).or_default() += 1;
            linked_frames += here[0];
        }
        // The mailbox relay never sees the sender's connection.
        if c.client.0 == ALICE_IP {
            assert!(
                relay != 3 || c.opened >= covered,
                "Alice connected to Bob's mailbox relay"
            );
        }
        if c.client.0 == BOB_IP && relay == 1 {
            assert!(
                c.opened < introduced,
                "Bob connected to Alice's mailbox relay after the introduction"
            );
        }
        if relay == 3 && c.client.0 == RELAY_IP && !c.to_server.is_empty() {
            relay_links_into_bobs += 1;
        }
    }
    // Alice's message and file reached relay 3 over relay links, and there
    // was real traffic to look at.
    assert!(relay_links_into_bobs >= 1);
    assert!(
        frames[0] >= 50 && frames[1] >= 50,
        "{frames:?} frame records"
    );
    // At most one link per entry relay; on her own relay also the fetch
    // and the notification connection (and a directory fetch). Every
    // receipt, resend and cover packet went over these.
    eprintln!(
        "while watching, Alice opened {linked_conns:?} (relay: connections) and sent {linked_frames} frames"
    );
    for (relay, n) in &linked_conns {
        let most = if *relay == 1 { 4 } else { 1 };
        assert!(
            *n <= most,
            "Alice opened {n} connections to relay {relay} while watching: {linked_conns:?}"
        );
    }
    assert!(
        linked_frames >= 20,
        "only {linked_frames} frames while watching"
    );
    eprintln!(
        "{} connections, every handshake X25519MLKEM768; {} frame records to relays ({RECORD_TO_RELAY} bytes each), {} to clients ({RECORD_TO_CLIENT} bytes each)",
        conns.len(),
        frames[0],
        frames[1]
    );
}

/// Every record between a connection's first and last frame-sized record
/// is frame-sized; at most a few setup records come before and teardown
/// records after. Returns the number of frame records.
fn check_uniform(records: &[(u8, usize)], size: usize) -> Result<usize, String> {
    const APPLICATION_DATA: u8 = 23;
    let is_frame = |r: &(u8, usize)| *r == (APPLICATION_DATA, size);
    let Some(first) = records.iter().position(is_frame) else {
        // A connection that carried no frame in this direction (none is
        // expected here, but a half-open one carries nothing at all).
        return if records.len() <= MAX_SETUP_RECORDS + MAX_TEARDOWN_RECORDS {
            Ok(0)
        } else {
            Err(format!(
                "{} records and none of frame size: {records:?}",
                records.len()
            ))
        };
    };
    let last = records.iter().rposition(is_frame).unwrap_or(first);
    // Setup and teardown records are all smaller than a frame: none of
    // them could carry a packet of another size.
    if let Some(big) = records[..first]
        .iter()
        .chain(&records[last + 1..])
        .find(|r| r.1 >= size)
    {
        return Err(format!(
            "a setup or teardown record as large as a frame: {big:?}"
        ));
    }
    if first > MAX_SETUP_RECORDS {
        return Err(format!(
            "{first} records before the first frame: {records:?}"
        ));
    }
    if records.len() - 1 - last > MAX_TEARDOWN_RECORDS {
        return Err(format!(
            "records after the last frame: {:?}",
            &records[last + 1..]
        ));
    }
    if let Some(odd) = records[first..=last].iter().find(|r| !is_frame(r)) {
        return Err(format!(
            "a record of another size among the frames: {odd:?}"
        ));
    }
    Ok(last - first + 1)
}
