//! The browser profile's sealed format without a browser: what is written
//! reloads into the same profile, a failed commit writes nothing, a value
//! changed, moved, cut or from another profile is refused, and the
//! database holds none of the plaintexts, addresses or keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use postern_browser::sealed::{
    Fill, HEADER_LEN, Header, HeaderError, Keys, SealedError, SealedStore, Write,
};
use postern_core::crypto::kdf::KdfParams;
use postern_core::store::{Direction, Namespace, OutboxEntry, Record, StoredMessage};
use postern_core::{Address, ChangeSet, KvStore, MemStore, StoreError, UnixTime};
use rand::RngCore as _;
use zeroize::Zeroizing;

/// The browser's database, as IndexedDB would hold it.
type Db = BTreeMap<String, Vec<u8>>;

fn apply(db: &mut Db, store: &mut SealedStore) -> usize {
    let batches = store.take_batches();
    for b in &batches {
        for w in b {
            match w {
                Write::Put { slot, value } => {
                    db.insert(slot.clone(), value.clone());
                }
                Write::Delete { slot } => {
                    db.remove(slot);
                }
            }
        }
    }
    batches.len()
}

fn os_rng() -> Fill {
    Box::new(|b: &mut [u8]| rand::rng().fill_bytes(b))
}

fn open(key: &[u8; 32], db: &Db) -> Result<SealedStore, SealedError> {
    SealedStore::load(Keys::new(key), db.clone(), os_rng())
}

fn peer(n: u8) -> Address {
    Address::from_slice(&[n; 16]).unwrap()
}

fn msg(p: u8, id: u8, incoming: bool, text: &str) -> StoredMessage {
    StoredMessage {
        peer: peer(p),
        id: [id; 16],
        direction: if incoming {
            Direction::Incoming
        } else {
            Direction::Outgoing
        },
        timestamp: UnixTime(1_000 + u64::from(id)),
        body: Zeroizing::new(text.as_bytes().to_vec()),
    }
}

fn record(bytes: &[u8]) -> Record {
    Record {
        schema: 1,
        bytes: Zeroizing::new(bytes.to_vec()),
    }
}

/// A profile's life: contacts, sessions, messages both ways, an outbox
/// that fills and empties, an attachment stored then dropped, reads.
fn history() -> Vec<ChangeSet> {
    let mut sets = Vec::new();
    let mut cs = ChangeSet::new();
    cs.put(Namespace::Setting, b"name", record(b"SETTING-SECRET-1"));
    cs.put(Namespace::Setting, b"other", record(b"SETTING-SECRET-2"));
    sets.push(cs);
    let mut cs = ChangeSet::new();
    cs.add_message(msg(1, 1, true, "PLAINTEXT-hello from one"));
    cs.add_message(msg(2, 2, false, "PLAINTEXT-to two"));
    cs.add_outbox(OutboxEntry {
        id: [2; 16],
        peer: peer(2),
        payload: b"OUTBOX-CIPHERTEXT-2".to_vec(),
    });
    cs.put_attachment_chunk([9; 16], 0, b"CHUNK-ZERO".to_vec());
    cs.put_attachment_chunk([9; 16], 1, b"CHUNK-ONE".to_vec());
    sets.push(cs);
    let mut cs = ChangeSet::new();
    cs.add_message(msg(1, 3, true, "PLAINTEXT-second from one"));
    cs.mark_read(peer(1));
    cs.delete(Namespace::Setting, b"other");
    sets.push(cs);
    let mut cs = ChangeSet::new();
    cs.add_message(msg(1, 4, true, "PLAINTEXT-third from one (unread)"));
    cs.remove_outbox([2; 16]);
    cs.add_outbox(OutboxEntry {
        id: [5; 16],
        peer: peer(1),
        payload: b"OUTBOX-CIPHERTEXT-5".to_vec(),
    });
    cs.delete_attachment([9; 16]);
    cs.put_attachment_chunk([9; 16], 3, b"CHUNK-THREE".to_vec());
    sets.push(cs);
    sets
}

fn same(a: &dyn KvStore, b: &dyn KvStore) {
    let conv = |s: &dyn KvStore| {
        s.conversations()
            .unwrap()
            .into_iter()
            .map(|c| (c.peer, c.messages, c.unread, c.last.id))
            .collect::<Vec<_>>()
    };
    assert_eq!(conv(a), conv(b));
    for c in a.conversations().unwrap() {
        let h = |s: &dyn KvStore| {
            s.history(&c.peer, 100)
                .unwrap()
                .into_iter()
                .map(|m| (m.id, m.direction, m.timestamp, m.body.to_vec()))
                .collect::<Vec<_>>()
        };
        assert_eq!(h(a), h(b));
    }
    let ob = |s: &dyn KvStore| {
        s.outbox()
            .unwrap()
            .into_iter()
            .map(|e| (e.id, e.peer, e.payload))
            .collect::<Vec<_>>()
    };
    assert_eq!(ob(a), ob(b));
    for ns in Namespace::ALL {
        assert_eq!(a.keys(ns).unwrap(), b.keys(ns).unwrap());
        for k in a.keys(ns).unwrap() {
            let v = |s: &dyn KvStore| s.get(ns, &k).unwrap().map(|r| r.bytes.to_vec());
            assert_eq!(v(a), v(b));
        }
    }
    assert_eq!(a.attachments().unwrap(), b.attachments().unwrap());
    for id in a.attachments().unwrap() {
        assert_eq!(
            a.attachment_chunks(&id).unwrap(),
            b.attachment_chunks(&id).unwrap()
        );
        for i in a.attachment_chunks(&id).unwrap() {
            assert_eq!(
                a.attachment_chunk(&id, i).unwrap().map(|c| c.to_vec()),
                b.attachment_chunk(&id, i).unwrap().map(|c| c.to_vec())
            );
        }
    }
}

#[test]
fn what_is_written_reloads_into_the_same_profile() {
    let key = [7u8; 32];
    let mut db = Db::new();
    let mut store = open(&key, &db).unwrap();
    let mut reference = MemStore::new();
    for (i, cs) in history().into_iter().enumerate() {
        reference.commit(cs.clone()).unwrap();
        store.commit(cs).unwrap();
        assert_eq!(apply(&mut db, &mut store), 1, "one batch per commit");
        // Reloaded after every step: the same profile as the reference.
        let reloaded = open(&key, &db).unwrap();
        same(&reloaded, &reference);
        same(&store, &reference);
        if i == 3 {
            // Unread counts survive: one message after the last read.
            let c = reloaded.conversations().unwrap();
            let one = c.iter().find(|c| c.peer == peer(1)).unwrap();
            assert_eq!(one.unread, 1);
        }
    }
    // Values left: 1 setting, 4 messages, 1 outbox entry, 1 chunk, 1 read mark.
    assert_eq!(db.len(), 8);
    // Writes after a reload continue the order.
    let mut reloaded = open(&key, &db).unwrap();
    let mut cs = ChangeSet::new();
    cs.add_message(msg(2, 6, true, "PLAINTEXT-after reload"));
    reference.commit(cs.clone()).unwrap();
    reloaded.commit(cs).unwrap();
    apply(&mut db, &mut reloaded);
    same(&open(&key, &db).unwrap(), &reference);
}

#[test]
fn a_refused_commit_writes_nothing() {
    let key = [7u8; 32];
    let mut db = Db::new();
    let mut store = open(&key, &db).unwrap();
    let mut cs = ChangeSet::new();
    cs.add_message(msg(1, 1, true, "PLAINTEXT-once"));
    store.commit(cs.clone()).unwrap();
    apply(&mut db, &mut store);
    let before = db.clone();
    // The same message again, with a record: refused as a whole.
    cs.put(Namespace::Setting, b"x", record(b"SETTING"));
    assert!(matches!(
        store.commit(cs),
        Err(StoreError::DuplicateMessage)
    ));
    assert_eq!(apply(&mut db, &mut store), 0);
    assert_eq!(db, before);
    assert!(store.get(Namespace::Setting, b"x").unwrap().is_none());
}

#[test]
fn values_changed_moved_cut_or_foreign_are_refused() {
    let key = [7u8; 32];
    let mut db = Db::new();
    let mut store = open(&key, &db).unwrap();
    for cs in history() {
        store.commit(cs).unwrap();
    }
    apply(&mut db, &mut store);
    let slots: Vec<String> = db.keys().cloned().collect();
    // One bit flipped anywhere in a value.
    for pos in [0, 30, db[&slots[0]].len() - 1] {
        let mut bad = db.clone();
        bad.get_mut(&slots[0]).unwrap()[pos] ^= 1;
        assert!(matches!(open(&key, &bad), Err(SealedError::Tampered)));
    }
    // Two values swapped between their slots.
    let mut bad = db.clone();
    let (a, b) = (db[&slots[0]].clone(), db[&slots[1]].clone());
    bad.insert(slots[0].clone(), b);
    bad.insert(slots[1].clone(), a);
    assert!(matches!(open(&key, &bad), Err(SealedError::Tampered)));
    // A value cut short, or empty.
    for len in [0, 10, 24, 40] {
        let mut bad = db.clone();
        bad.get_mut(&slots[2]).unwrap().truncate(len);
        assert!(matches!(open(&key, &bad), Err(SealedError::Tampered)));
    }
    // Another profile's key opens nothing.
    assert!(matches!(open(&[8u8; 32], &db), Err(SealedError::Tampered)));
    // A value under a slot name of its own invention.
    let mut bad = db.clone();
    let v = bad.remove(&slots[3]).unwrap();
    bad.insert("00".repeat(32), v);
    assert!(matches!(open(&key, &bad), Err(SealedError::Tampered)));
    // The untouched database still opens.
    assert!(open(&key, &db).is_ok());
}

#[test]
fn the_database_holds_no_plaintext_address_or_key() {
    let key = [0x5Au8; 32];
    let mut db = Db::new();
    let mut store = open(&key, &db).unwrap();
    for cs in history() {
        store.commit(cs).unwrap();
    }
    apply(&mut db, &mut store);
    let mut all = Vec::new();
    for (slot, value) in &db {
        all.extend_from_slice(slot.as_bytes());
        all.extend_from_slice(value);
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut needles: Vec<Vec<u8>> = vec![
        b"PLAINTEXT".to_vec(),
        b"SETTING-SECRET".to_vec(),
        b"OUTBOX-CIPHERTEXT".to_vec(),
        b"CHUNK-".to_vec(),
        key.to_vec(),
    ];
    for p in [1, 2] {
        needles.push(peer(p).as_bytes().to_vec());
        needles.push(hex(peer(p).as_bytes()).into_bytes());
        needles.push(peer(p).to_string().into_bytes());
    }
    needles.push(vec![9u8; 16]); // the attachment id
    needles.push(vec![2u8; 16]); // a message id
    for n in needles {
        assert!(
            !all.windows(n.len()).any(|w| w == n.as_slice()),
            "found {:?} in the database",
            String::from_utf8_lossy(&n)
        );
    }
}

#[test]
fn the_header_opens_only_with_the_passphrase() {
    let mut rng = rand::rng();
    let (h, key) = Header::create(b"correct horse", KdfParams::TEST_ONLY, &mut rng).unwrap();
    let bytes = h.to_bytes();
    assert_eq!(bytes.len(), HEADER_LEN);
    let parsed = Header::parse(&bytes).unwrap();
    assert_eq!(*parsed.open(b"correct horse").unwrap(), *key);
    assert_eq!(
        parsed.open(b"wrong horse").unwrap_err(),
        HeaderError::WrongPassphrase
    );
    // A new passphrase protects the same key (nothing else re-sealed).
    let h2 = Header::protect(&key, b"battery staple", KdfParams::TEST_ONLY, &mut rng).unwrap();
    assert_eq!(*h2.open(b"battery staple").unwrap(), *key);
    assert!(h2.open(b"correct horse").is_err());
    // Weakened parameters break the wrapping; absurd ones are refused
    // before any work; anything else is malformed.
    let mut weak = bytes.clone();
    weak[16..20].copy_from_slice(&8u32.to_be_bytes());
    assert_eq!(
        Header::parse(&weak)
            .unwrap()
            .open(b"correct horse")
            .unwrap_err(),
        HeaderError::WrongPassphrase
    );
    let mut huge = bytes.clone();
    huge[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(Header::parse(&huge).unwrap_err(), HeaderError::Malformed);
    for bad in [&bytes[..HEADER_LEN - 1], &[0u8; HEADER_LEN][..], &[][..]] {
        assert_eq!(Header::parse(bad).unwrap_err(), HeaderError::Malformed);
    }
}
