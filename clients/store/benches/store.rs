//! Profile store benchmark: SQLCipher against plain SQLite (the same
//! SQLCipher build without a key), same schema, same run.
//!
//! `cargo bench -p postern-store --bench store` prints:
//! - the time to open a profile holding 100,000 messages across 200
//!   conversations and list the conversations with their last message,
//! - the rate of received-message commits, each one transaction holding
//!   the ratchet's session-record update (4.3 KB, as in a real session)
//!   and the message, with WAL and `synchronous = FULL`.
//!
//! Under `cargo test` (no `--bench` argument) it runs a tiny version so
//! that it keeps working.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::{Duration, Instant};

use postern_core::crypto::kdf::KdfParams;
use postern_core::store::{ChangeSet, Direction, Namespace, Record, StoredMessage};
use postern_core::{Address, KvStore, UnixTime};
use postern_store::{Profile, Unlock};
use zeroize::Zeroizing;

const PW: &[u8] = b"benchmark passphrase";

struct Sizes {
    conversations: u32,
    messages: u32,
    commits: u32,
}

fn peer(i: u32) -> Address {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&i.to_be_bytes());
    Address::from_bytes(b)
}

fn msg(n: u32, conversations: u32) -> StoredMessage {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    StoredMessage {
        peer: peer(n % conversations),
        id,
        direction: if n.is_multiple_of(2) {
            Direction::Incoming
        } else {
            Direction::Outgoing
        },
        timestamp: UnixTime(1_800_000_000_000 + u64::from(n)),
        body: Zeroizing::new(
            format!("message {n}: the quick brown fox jumps over the lazy dog").into_bytes(),
        ),
    }
}

fn open(dir: &Path, encrypted: bool) -> Profile {
    if encrypted {
        if dir.join(postern_store::HEADER_FILE).exists() {
            Profile::open(dir, Unlock::Passphrase(PW)).unwrap()
        } else {
            Profile::create(dir, Unlock::Passphrase(PW), KdfParams::TEST_ONLY).unwrap()
        }
    } else {
        postern_store::testing::open_plaintext_for_benchmark(dir).unwrap()
    }
}

struct Figures {
    open_and_list: Duration,
    commits_per_s: f64,
}

fn run(encrypted: bool, s: &Sizes) -> Figures {
    let d = tempfile::tempdir().unwrap();
    {
        let mut p = open(d.path(), encrypted);
        for chunk in (0..s.messages).collect::<Vec<_>>().chunks(5_000) {
            let mut cs = ChangeSet::new();
            for &n in chunk {
                cs.add_message(msg(n, s.conversations));
            }
            p.commit(cs).unwrap();
        }
    }
    // Open + list (best of 3 fresh opens).
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let p = open(d.path(), encrypted);
        let list = p.conversations().unwrap();
        best = best.min(t.elapsed());
        assert_eq!(list.len(), s.conversations as usize);
    }
    // Received messages with their ratchet updates, one transaction each.
    let mut p = open(d.path(), encrypted);
    let session = vec![0x5a; 4300];
    let t = Instant::now();
    for i in 0..s.commits {
        let n = s.messages + i;
        let mut cs = ChangeSet::new();
        let m = msg(n, s.conversations);
        cs.put(
            Namespace::Session,
            m.peer.as_bytes(),
            Record::current(Namespace::Session, session.clone()),
        );
        cs.add_message(m);
        p.commit(cs).unwrap();
    }
    let rate = f64::from(s.commits) / t.elapsed().as_secs_f64();
    Figures {
        open_and_list: best,
        commits_per_s: rate,
    }
}

/// Time of `Profile::verify` on a profile of the benchmark's size.
fn open_full_verify(s: &Sizes) -> Duration {
    let d = tempfile::tempdir().unwrap();
    let mut p = open(d.path(), true);
    for chunk in (0..s.messages).collect::<Vec<_>>().chunks(5_000) {
        let mut cs = ChangeSet::new();
        for &n in chunk {
            cs.add_message(msg(n, s.conversations));
        }
        p.commit(cs).unwrap();
    }
    drop(p);
    let p = open(d.path(), true);
    let t = Instant::now();
    p.verify().unwrap();
    t.elapsed()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let s = if full {
        Sizes {
            conversations: 200,
            messages: 100_000,
            commits: 2_000,
        }
    } else {
        Sizes {
            conversations: 20,
            messages: 500,
            commits: 20,
        }
    };
    let enc = run(true, &s);
    let plain = run(false, &s);
    println!(
        "profile store: {} messages in {} conversations; {} single-message commits",
        s.messages, s.conversations, s.commits
    );
    println!(
        "{:<36}{:>14}{:>14}{:>10}",
        "", "SQLCipher", "SQLite", "ratio"
    );
    println!(
        "{:<36}{:>11.1} ms{:>11.1} ms{:>10.2}",
        "open + list conversations",
        enc.open_and_list.as_secs_f64() * 1e3,
        plain.open_and_list.as_secs_f64() * 1e3,
        enc.open_and_list.as_secs_f64() / plain.open_and_list.as_secs_f64()
    );
    let t = Instant::now();
    let _ = postern_core::crypto::kdf::derive_key(PW, &[7; 16], KdfParams::DEFAULT).unwrap();
    let kdf = t.elapsed();
    let p = open_full_verify(&s);
    println!(
        "{:<36}{:>14}",
        "full verify (every page's HMAC)",
        format!("{:.1} ms", p.as_secs_f64() * 1e3)
    );
    println!(
        "{:<36}{:>14}",
        "Argon2id derivation, default params",
        format!("{:.0} ms", kdf.as_secs_f64() * 1e3)
    );
    println!(
        "{:<36}{:>10.0} /s{:>10.0} /s{:>10.2}",
        "received message + ratchet commits",
        enc.commits_per_s,
        plain.commits_per_s,
        plain.commits_per_s / enc.commits_per_s
    );
}
