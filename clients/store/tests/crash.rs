//! Crash test with a real process: a child process holds Alice's profile,
//! receives a seeded stream of sealed messages from Bob, and for each one
//! commits the ratchet step and the decrypted message in one transaction
//! before acknowledging it. The parent kills the child with SIGKILL at
//! random points many times, restarts it, and redelivers everything not
//! acknowledged (as a relay would). In the end no acknowledged message is
//! missing, none is stored twice, and the ratchet is still in sync with
//! Bob in both directions.
//!
//! The child role is this same test binary, re-executed with
//! `POSTERN_CRASH_CHILD` set (see `crash_child_entry_point`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use postern_core::crypto::kdf::KdfParams;
use postern_core::store::{Direction, StoredMessage};
use postern_core::{Error, KvStore, MemStore, UnixTime, e2e};
use postern_store::{Profile, Unlock};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::Zeroizing;

const T0: UnixTime = UnixTime(1_800_000_000_000);
const PW: &[u8] = b"crash test passphrase";
const MESSAGES: u32 = 300;
const KILLS: u32 = 80;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn id_of(n: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id
}

/// The child: open the profile, then for every `MSG <n> <hex>` line open
/// the sealed message, store the ratchet step and the message in one
/// commit, and print `ACK <n>` only after the commit returned.
fn child(dir: &Path) {
    let mut alice = Profile::open(dir, Unlock::Passphrase(PW)).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(std::process::id().into());
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let mut parts = line.split(' ');
        let (Some("MSG"), Some(n), Some(ct)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        match e2e::open(&alice, &unhex(ct), T0, &mut rng) {
            Ok((from, pt, mut cs)) => {
                let id: [u8; 16] = pt[..16].try_into().unwrap();
                cs.add_message(StoredMessage {
                    peer: from,
                    id,
                    direction: Direction::Incoming,
                    timestamp: T0,
                    body: Zeroizing::new(pt[16..].to_vec()),
                });
                alice.commit(cs).unwrap();
            }
            // Already committed before an earlier crash: acknowledge again.
            Err(Error::DuplicateMessage) => {}
            Err(e) => panic!("message {n}: {e:?}"),
        }
        writeln!(out, "ACK {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn crash_child_entry_point() {
    // Only does something when re-executed by the crash test below.
    if let Ok(dir) = std::env::var("POSTERN_CRASH_CHILD") {
        child(Path::new(&dir));
    }
}

#[test]
fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(0xC4A5);
    // Set up Alice (on disk) and Bob (in this process).
    let alice_addr;
    {
        let mut alice =
            Profile::create(d.path(), Unlock::Passphrase(PW), KdfParams::TEST_ONLY).unwrap();
        let (a, cs) = e2e::create_identity(&alice, T0, &mut rng).unwrap();
        alice.commit(cs).unwrap();
        alice_addr = a;
    }
    let mut bob = MemStore::new();
    let (bob_addr, cs) = e2e::create_identity(&bob, T0, &mut rng).unwrap();
    bob.commit(cs).unwrap();
    {
        let mut alice = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
        let (ab, cs) = e2e::publish_bundle(&alice).unwrap();
        alice.commit(cs).unwrap();
        let (_, cs) = e2e::start_session(&bob, &ab, T0, &mut rng).unwrap();
        bob.commit(cs).unwrap();
        let (bb, cs) = e2e::publish_bundle(&bob).unwrap();
        bob.commit(cs).unwrap();
        let (_, cs) = e2e::add_contact(&alice, &bb).unwrap();
        alice.commit(cs).unwrap();
    }
    // Bob's whole stream, sealed in order (the first is a PreKey message).
    let stream: Vec<String> = (0..MESSAGES)
        .map(|n| {
            let mut pt = id_of(n).to_vec();
            pt.extend_from_slice(format!("message {n} from bob").as_bytes());
            let (ct, cs) = e2e::seal(&bob, &alice_addr, &pt, T0, &mut rng).unwrap();
            bob.commit(cs).unwrap();
            hex(&ct)
        })
        .collect();

    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeSet<u32> = BTreeSet::new();
    let mut kills = 0;
    let mut runs = 0;
    while acked.len() < MESSAGES as usize {
        runs += 1;
        assert!(runs < 500, "no progress");
        let mut c = Command::new(&exe)
            .args([
                "crash_child_entry_point",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("POSTERN_CRASH_CHILD", d.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let mut stdout = BufReader::new(c.stdout.take().unwrap());
        // Redeliver everything not acknowledged yet, in order, plus (as a
        // relay might) a few acknowledged ones again.
        let pending: Vec<u32> = (0..MESSAGES).filter(|n| !acked.contains(n)).collect();
        let mut batch: Vec<u32> = Vec::new();
        if let Some(&last) = acked.iter().next_back() {
            batch.push(last);
        }
        batch.extend(&pending);
        for n in &batch {
            writeln!(stdin, "MSG {n} {}", stream[*n as usize]).unwrap();
        }
        stdin.flush().unwrap();
        let kill_after = if kills < KILLS {
            rng.random_range(0..4usize)
        } else {
            usize::MAX
        };
        let mut seen = 0;
        let mut line = String::new();
        loop {
            if seen >= kill_after {
                // Land the kill at a random point inside the processing of
                // the next message (decrypt, transaction, fsync).
                std::thread::sleep(std::time::Duration::from_micros(rng.random_range(0..4000)));
                c.kill().unwrap(); // SIGKILL
                kills += 1;
                break;
            }
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if let Some(n) = line.trim().strip_prefix("ACK ") {
                acked.insert(n.parse().unwrap());
                seen += 1;
                if acked.len() == MESSAGES as usize {
                    break;
                }
            }
        }
        drop(stdin);
        let _ = c.wait();
    }
    assert!(kills >= KILLS, "only {kills} kills");

    // Nothing missing, nothing twice, in Bob's order.
    let mut alice = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
    let history = alice.history(&bob_addr, 10_000).unwrap();
    let got: Vec<u32> = history
        .iter()
        .map(|m| u32::from_be_bytes(m.id[..4].try_into().unwrap()))
        .collect();
    let missing: Vec<u32> = (0..MESSAGES).filter(|n| !got.contains(n)).collect();
    let stored_twice: Vec<u32> = (0..MESSAGES)
        .filter(|n| got.iter().filter(|g| *g == n).count() > 1)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but missing: {missing:?} (after {kills} kills)"
    );
    assert!(stored_twice.is_empty(), "stored twice: {stored_twice:?}");
    assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>(), "out of order");
    let convs = alice.conversations().unwrap();
    assert_eq!(convs[0].messages, u64::from(MESSAGES));

    // The ratchet is in sync both ways.
    let (reply, cs) = e2e::seal(&alice, &bob_addr, b"all received", T0, &mut rng).unwrap();
    alice.commit(cs).unwrap();
    let (from, pt, cs) = e2e::open(&bob, &reply, T0, &mut rng).unwrap();
    bob.commit(cs).unwrap();
    assert_eq!((from, &pt[..]), (alice_addr, &b"all received"[..]));
    let (more, cs) = e2e::seal(&bob, &alice_addr, b"good", T0, &mut rng).unwrap();
    bob.commit(cs).unwrap();
    let (_, pt, mut cs) = e2e::open(&alice, &more, T0, &mut rng).unwrap();
    cs.add_message(StoredMessage {
        peer: bob_addr,
        id: id_of(MESSAGES),
        direction: Direction::Incoming,
        timestamp: T0,
        body: pt,
    });
    alice.commit(cs).unwrap();
}
