//! The encrypted profile store: rejection cases first, then persistence.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;

use postern_core::crypto::kdf::KdfParams;
use postern_core::store::{ChangeSet, Direction, Namespace, OutboxEntry, Record, StoredMessage};
use postern_core::{Address, KvStore, MemStore, UnixTime, e2e};
use postern_store::{KeySource, Profile, ProfileError, Unlock};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::Zeroizing;

const T0: UnixTime = UnixTime(1_800_000_000_000);
const PW: &[u8] = b"correct horse battery staple";
const P: KdfParams = KdfParams::TEST_ONLY;

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "profile.lock")
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn message(peer: Address, n: u8, body: &[u8], dir: Direction) -> StoredMessage {
    StoredMessage {
        peer,
        id: [n; 16],
        direction: dir,
        timestamp: UnixTime(T0.millis() + u64::from(n)),
        body: Zeroizing::new(body.to_vec()),
    }
}

/// Alice in a new profile at `dir`, Bob in memory, each pinned by the
/// other, Alice holding a PQXDH session with Bob.
fn alice_on_disk_bob_in_memory(
    dir: &Path,
    rng: &mut ChaCha20Rng,
) -> (Profile, Address, MemStore, Address) {
    let mut alice = Profile::create(dir, Unlock::Passphrase(PW), P).unwrap();
    let (alice_addr, cs) = e2e::create_identity(&alice, T0, rng).unwrap();
    alice.commit(cs).unwrap();
    let mut bob = MemStore::new();
    let (bob_addr, cs) = e2e::create_identity(&bob, T0, rng).unwrap();
    bob.commit(cs).unwrap();
    let (bb, cs) = e2e::publish_bundle(&bob).unwrap();
    bob.commit(cs).unwrap();
    let (_, cs) = e2e::start_session(&alice, &bb, T0, rng).unwrap();
    alice.commit(cs).unwrap();
    let (ab, cs) = e2e::publish_bundle(&alice).unwrap();
    alice.commit(cs).unwrap();
    let (_, cs) = e2e::add_contact(&bob, &ab).unwrap();
    bob.commit(cs).unwrap();
    (alice, alice_addr, bob, bob_addr)
}

/// A profile with an identity and some records and messages, then closed.
fn populated(dir: &Path) {
    let mut p = Profile::create(dir, Unlock::Passphrase(PW), P).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (_, cs) = e2e::create_identity(&p, T0, &mut rng).unwrap();
    p.commit(cs).unwrap();
    let mut cs = ChangeSet::new();
    let peer = Address::from_bytes([9; 16]);
    for n in 0..20 {
        cs.add_message(message(
            peer,
            n,
            format!("message number {n}").as_bytes(),
            Direction::Incoming,
        ));
    }
    p.commit(cs).unwrap();
}

#[test]
fn rejects_wrong_passphrase_without_touching_the_files() {
    let d = tempfile::tempdir().unwrap();
    populated(d.path());
    let before = files(d.path());
    let e = Profile::open(d.path(), Unlock::Passphrase(b"wrong")).unwrap_err();
    assert!(matches!(e, ProfileError::WrongKey), "{e:?}");
    assert_eq!(files(d.path()), before);
    let e = Profile::open(d.path(), Unlock::Keychain).unwrap_err();
    assert!(
        matches!(
            e,
            ProfileError::WrongUnlockMethod {
                expected: "passphrase"
            }
        ),
        "{e:?}"
    );
    assert!(Profile::open(d.path(), Unlock::Passphrase(PW)).is_ok());
}

#[test]
fn rejects_corrupted_file_without_overwriting_it() {
    let d = tempfile::tempdir().unwrap();
    populated(d.path());
    let db = d.path().join(postern_store::DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&db, &bytes).unwrap();
    let before = files(d.path());
    // Open checks the first page and the length; the damage in the middle
    // is found by a full verification or by the first read that reaches it.
    match Profile::open(d.path(), Unlock::Passphrase(PW)) {
        Err(e) => assert!(matches!(e, ProfileError::Corrupt), "{e:?}"),
        Ok(p) => {
            assert!(matches!(p.verify(), Err(ProfileError::Corrupt)));
            // Reading everything (a backup does) runs into the damage.
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            let e = postern_core::backup::export(&p, b"pw", P, &mut rng).unwrap_err();
            assert!(
                matches!(
                    e,
                    postern_core::Error::Store(postern_core::StoreError::Corrupt { .. })
                ),
                "{e:?}"
            );
        }
    }
    assert_eq!(files(d.path()), before);
}

#[test]
fn rejects_truncated_file_without_overwriting_it() {
    let d = tempfile::tempdir().unwrap();
    populated(d.path());
    let db = d.path().join(postern_store::DB_FILE);
    let bytes = std::fs::read(&db).unwrap();
    for cut in [0, 100, 4096, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&db, &bytes[..cut]).unwrap();
        let before = files(d.path());
        let e = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap_err();
        assert!(matches!(e, ProfileError::Corrupt), "cut {cut}: {e:?}");
        assert_eq!(files(d.path()), before, "cut {cut}");
    }
}

#[test]
fn rejects_hostile_header() {
    let d = tempfile::tempdir().unwrap();
    populated(d.path());
    let h = d.path().join(postern_store::HEADER_FILE);
    let good = std::fs::read_to_string(&h).unwrap();
    for bad in [
        String::new(),
        "not json".into(),
        good.replace("\"format\": 1", "\"format\": 2"),
        good.replace("\"iterations\": 1", "\"iterations\": 4000000000"),
        good.replace("\"memory_kib\": 256", "\"memory_kib\": 4294967295"),
        good.replace("argon2id-v19", "scrypt"),
        good.replace(
            "\"key_source\": \"passphrase\"",
            "\"key_source\": \"keychain\"",
        ),
        good.replace('{', "{\"extra\": 1,"),
        "x".repeat(10_000),
    ] {
        std::fs::write(&h, &bad).unwrap();
        let e = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap_err();
        assert!(matches!(e, ProfileError::BadHeader(_)), "{bad:.60}: {e:?}");
    }
    std::fs::write(&h, &good).unwrap();
    assert!(Profile::open(d.path(), Unlock::Passphrase(PW)).is_ok());
}

#[test]
fn second_opener_gets_profile_in_use() {
    let d = tempfile::tempdir().unwrap();
    populated(d.path());
    let p = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
    let e = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap_err();
    assert!(matches!(e, ProfileError::InUse), "{e:?}");
    // Another process sees the lock too (util-linux `flock -n` fails).
    let status = std::process::Command::new("flock")
        .arg("-n")
        .arg(d.path().join(postern_store::LOCK_FILE))
        .arg("true")
        .status()
        .expect("flock(1) from util-linux");
    assert!(!status.success());
    drop(p);
    assert!(Profile::open(d.path(), Unlock::Passphrase(PW)).is_ok());
}

#[test]
fn refuses_schema_from_a_newer_build_and_migrates_older_ones() {
    let d = tempfile::tempdir().unwrap();
    populated(d.path());
    {
        // Simulate a newer Postern having written the file.
        let p = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
        postern_store::testing::set_user_version(&p, 99);
    }
    let e = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap_err();
    assert!(
        matches!(e, ProfileError::SchemaTooNew { found: 99, .. }),
        "{e:?}"
    );

    // Every earlier schema version migrates to the current one with its
    // data intact: version 0 is an empty keyed database; from version 1 on
    // the profile holds an identity and messages written at that version.
    for v in 0..postern_store::testing::SCHEMA_VERSION {
        let d = tempfile::tempdir().unwrap();
        let old = postern_store::testing::create_at_version(d.path(), PW, P, v).unwrap();
        let peer = Address::from_bytes([4; 16]);
        let mut addr = None;
        if v >= 1 {
            let mut old = old;
            let mut rng = ChaCha20Rng::seed_from_u64(u64::try_from(v).unwrap());
            let (a, cs) = e2e::create_identity(&old, T0, &mut rng).unwrap();
            old.commit(cs).unwrap();
            postern_store::testing::add_message_as_schema_1(
                &old,
                peer.as_bytes(),
                &[1; 16],
                1,
                b"written by an older schema",
            )
            .unwrap();
            addr = Some(a);
        } else {
            drop(old);
        }
        let p = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
        assert_eq!(
            postern_store::testing::user_version(&p),
            postern_store::testing::SCHEMA_VERSION
        );
        if let Some(a) = addr {
            assert_eq!(e2e::local_address(&p).unwrap(), a, "from v{v}");
            assert_eq!(
                &p.history(&peer, 10).unwrap()[0].body[..],
                b"written by an older schema"
            );
            // Messages from before unread counts are not counted unread.
            assert_eq!(p.conversations().unwrap()[0].unread, 0, "from v{v}");
        } else {
            assert!(p.conversations().unwrap().is_empty());
        }
    }
}

#[test]
fn attachment_chunks_are_stored_in_any_order_and_resume() {
    let d = tempfile::tempdir().unwrap();
    let mut p = Profile::create(d.path(), Unlock::Passphrase(PW), P).unwrap();
    let (a, b) = ([1u8; 16], [2u8; 16]);
    let mut cs = ChangeSet::new();
    for i in [5u32, 0, 3] {
        cs.put_attachment_chunk(a, i, vec![i as u8; 100]);
    }
    cs.put_attachment_chunk(b, 0, vec![9; 10]);
    p.commit(cs).unwrap();
    drop(p);
    // After a restart, the transfer knows what it has and what is missing.
    let mut p = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
    assert_eq!(p.attachment_chunks(&a).unwrap(), vec![0, 3, 5]);
    assert_eq!(
        p.attachment_chunk(&a, 3).unwrap().unwrap().into_owned(),
        vec![3; 100]
    );
    assert!(p.attachment_chunk(&a, 4).unwrap().is_none());
    assert_eq!(p.attachments().unwrap(), vec![a, b]);
    // A duplicate chunk replaces; a delete removes all of one attachment.
    let mut cs = ChangeSet::new();
    cs.put_attachment_chunk(a, 3, vec![7; 100]);
    p.commit(cs).unwrap();
    assert_eq!(
        p.attachment_chunk(&a, 3).unwrap().unwrap().into_owned(),
        vec![7; 100]
    );
    let mut cs = ChangeSet::new();
    cs.delete_attachment(a);
    p.commit(cs).unwrap();
    assert!(p.attachment_chunks(&a).unwrap().is_empty());
    assert_eq!(p.attachments().unwrap(), vec![b]);
    // Oversized chunks are refused, and nothing of the set is written.
    let mut cs = ChangeSet::new();
    cs.put_attachment_chunk(a, 0, vec![0; 10]);
    cs.put_attachment_chunk(
        a,
        1,
        vec![0; postern_core::consts::MAX_ATTACHMENT_CHUNK_BYTES + 1],
    );
    assert!(matches!(
        p.commit(cs),
        Err(postern_core::StoreError::TooLarge { .. })
    ));
    assert!(p.attachment_chunks(&a).unwrap().is_empty());
}

#[test]
fn commit_is_all_or_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut p = Profile::create(d.path(), Unlock::Passphrase(PW), P).unwrap();
    let peer = Address::from_bytes([3; 16]);
    let mut cs = ChangeSet::new();
    cs.add_message(message(peer, 1, b"one", Direction::Incoming));
    p.commit(cs).unwrap();
    // A record write together with a duplicate message: neither lands.
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Session,
        peer.as_bytes(),
        Record::current(Namespace::Session, vec![1, 2, 3]),
    );
    cs.add_message(message(peer, 1, b"one again", Direction::Incoming));
    let e = p.commit(cs).unwrap_err();
    assert_eq!(e, postern_core::StoreError::DuplicateMessage);
    assert!(
        p.get(Namespace::Session, peer.as_bytes())
            .unwrap()
            .is_none()
    );
    assert_eq!(p.history(&peer, 10).unwrap().len(), 1);
    // Oversized bodies are refused before anything is written.
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Session,
        peer.as_bytes(),
        Record::current(Namespace::Session, vec![1]),
    );
    cs.add_message(message(
        peer,
        2,
        &vec![0; postern_core::consts::MAX_STORED_MESSAGE_BYTES + 1],
        Direction::Incoming,
    ));
    assert!(matches!(
        p.commit(cs),
        Err(postern_core::StoreError::TooLarge { .. })
    ));
    assert!(
        p.get(Namespace::Session, peer.as_bytes())
            .unwrap()
            .is_none()
    );
}

#[test]
fn raw_files_hold_no_plaintext_keys_or_addresses() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (mut alice, alice_addr, mut bob, bob_addr) =
        alice_on_disk_bob_in_memory(d.path(), &mut rng);
    let secret_text = b"MEET AT THE OLD LIGHTHOUSE AT NOON";
    let (ct, mut cs) = e2e::seal(&alice, &bob_addr, secret_text, T0, &mut rng).unwrap();
    cs.add_message(message(bob_addr, 1, secret_text, Direction::Outgoing));
    cs.add_outbox(OutboxEntry {
        id: [1; 16],
        peer: bob_addr,
        payload: ct.clone(),
    });
    alice.commit(cs).unwrap();
    let (_, _, cs) = e2e::open(&bob, &ct, T0, &mut rng).unwrap();
    bob.commit(cs).unwrap();
    let reply_text = b"UNDERSTOOD, BRINGING THE DOCUMENTS";
    let (reply, cs) = e2e::seal(&bob, &alice_addr, reply_text, T0, &mut rng).unwrap();
    bob.commit(cs).unwrap();
    let (_, pt, mut cs) = e2e::open(&alice, &reply, T0, &mut rng).unwrap();
    cs.add_message(message(bob_addr, 2, &pt, Direction::Incoming));
    alice.commit(cs).unwrap();

    let alice_key = e2e::local_identity_key(&alice).unwrap().to_bytes();
    let bob_key = e2e::local_identity_key(&bob).unwrap().to_bytes();
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("sent plaintext", secret_text.to_vec()),
        ("received plaintext", reply_text.to_vec()),
        ("own identity key", alice_key[1..].to_vec()),
        ("contact identity key", bob_key[1..].to_vec()),
        ("own address", alice_addr.as_bytes().to_vec()),
        ("contact address", bob_addr.as_bytes().to_vec()),
        (
            "contact address text",
            bob_addr.to_uuid_string().into_bytes(),
        ),
        ("passphrase", PW.to_vec()),
    ];
    // While open (WAL present) and after closing.
    for phase in ["open", "closed"] {
        if phase == "closed" {
            drop(alice);
            alice = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
            assert_eq!(alice.history(&bob_addr, 10).unwrap().len(), 2);
            drop(alice);
            alice = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
        }
        for (name, bytes) in files(d.path()) {
            for (what, needle) in &needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "{what} found in {name} ({phase})"
                );
            }
        }
    }
}

#[test]
fn reopen_after_restart_keeps_sessions_working() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut bob = MemStore::new();
    let (bob_addr, cs) = e2e::create_identity(&bob, T0, &mut rng).unwrap();
    bob.commit(cs).unwrap();
    let alice_addr;
    {
        let mut alice = Profile::create(d.path(), Unlock::Passphrase(PW), P).unwrap();
        let (a, cs) = e2e::create_identity(&alice, T0, &mut rng).unwrap();
        alice_addr = a;
        alice.commit(cs).unwrap();
        let (bb, cs) = e2e::publish_bundle(&bob).unwrap();
        bob.commit(cs).unwrap();
        let (_, cs) = e2e::start_session(&alice, &bb, T0, &mut rng).unwrap();
        alice.commit(cs).unwrap();
        let (ab, cs) = e2e::publish_bundle(&alice).unwrap();
        alice.commit(cs).unwrap();
        let (_, cs) = e2e::add_contact(&bob, &ab).unwrap();
        bob.commit(cs).unwrap();
        let (ct, cs) = e2e::seal(&alice, &bob_addr, b"before restart", T0, &mut rng).unwrap();
        alice.commit(cs).unwrap();
        e2e::open(&bob, &ct, T0, &mut rng)
            .map(|(_, _, cs)| bob.commit(cs).unwrap())
            .unwrap();
    }
    for round in 0..3 {
        let mut alice = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
        assert_eq!(e2e::local_address(&alice).unwrap(), alice_addr);
        let text = format!("after restart {round}");
        let (ct, cs) = e2e::seal(&alice, &bob_addr, text.as_bytes(), T0, &mut rng).unwrap();
        alice.commit(cs).unwrap();
        let (_, pt, cs) = e2e::open(&bob, &ct, T0, &mut rng).unwrap();
        bob.commit(cs).unwrap();
        assert_eq!(&pt[..], text.as_bytes());
        let (reply, cs) = e2e::seal(&bob, &alice_addr, b"reply", T0, &mut rng).unwrap();
        bob.commit(cs).unwrap();
        let (_, pt, mut cs) = e2e::open(&alice, &reply, T0, &mut rng).unwrap();
        cs.add_message(message(bob_addr, round, &pt, Direction::Incoming));
        alice.commit(cs).unwrap();
    }
    let alice = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
    let convs = alice.conversations().unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0].messages, 3);
    assert_eq!(convs[0].peer, bob_addr);
}

#[test]
fn passphrase_change_and_move_between_keychain_and_passphrase() {
    keyring_core::set_default_store(keyring_core::mock::Store::new().unwrap());
    let d = tempfile::tempdir().unwrap();
    populated(d.path());
    let mut p = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
    assert!(matches!(
        p.check_passphrase(b"not it"),
        Err(ProfileError::WrongKey)
    ));
    p.check_passphrase(PW).unwrap();
    p.change_protection(Unlock::Passphrase(b"new passphrase"), P)
        .unwrap();
    p.check_passphrase(b"new passphrase").unwrap();
    drop(p);
    assert!(matches!(
        Profile::open(d.path(), Unlock::Passphrase(PW)),
        Err(ProfileError::WrongKey)
    ));
    let mut p = Profile::open(d.path(), Unlock::Passphrase(b"new passphrase")).unwrap();
    assert_eq!(
        p.history(&Address::from_bytes([9; 16]), 100).unwrap().len(),
        20
    );
    // To the keychain (mock store here) and back.
    p.change_protection(Unlock::Keychain, P).unwrap();
    assert_eq!(p.key_source(), KeySource::Keychain);
    assert!(matches!(
        p.check_passphrase(b"new passphrase"),
        Err(ProfileError::WrongUnlockMethod { .. })
    ));
    drop(p);
    assert!(matches!(
        Profile::open(d.path(), Unlock::Passphrase(b"new passphrase")),
        Err(ProfileError::WrongUnlockMethod {
            expected: "keychain"
        })
    ));
    let mut p = Profile::open(d.path(), Unlock::Keychain).unwrap();
    assert_eq!(
        p.history(&Address::from_bytes([9; 16]), 100).unwrap().len(),
        20
    );
    p.change_protection(Unlock::Passphrase(b"third"), P)
        .unwrap();
    drop(p);
    let p = Profile::open(d.path(), Unlock::Passphrase(b"third")).unwrap();
    assert_eq!(p.key_source(), KeySource::Passphrase);
}

#[test]
fn encrypted_backup_moves_a_profile_and_rejects_bad_input() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let d = tempfile::tempdir().unwrap();
    let (mut alice, alice_addr, mut bob, bob_addr) =
        alice_on_disk_bob_in_memory(d.path(), &mut rng);
    let (ct, mut cs) = e2e::seal(&alice, &bob_addr, b"hello", T0, &mut rng).unwrap();
    cs.add_message(message(bob_addr, 1, b"hello", Direction::Outgoing));
    cs.add_outbox(OutboxEntry {
        id: [1; 16],
        peer: bob_addr,
        payload: ct.clone(),
    });
    alice.commit(cs).unwrap();
    let (_, _, cs) = e2e::open(&bob, &ct, T0, &mut rng).unwrap();
    bob.commit(cs).unwrap();

    let mut cs = ChangeSet::new();
    cs.put_attachment_chunk([6; 16], 2, b"encrypted chunk".to_vec());
    alice.commit(cs).unwrap();
    let backup = postern_core::backup::export(&alice, b"backup pw", P, &mut rng).unwrap();
    drop(alice);
    // The backup holds no plaintext.
    assert!(!backup.windows(5).any(|w| w == b"hello"));

    // Restore on a "new machine".
    let d2 = tempfile::tempdir().unwrap();
    let mut moved = Profile::create(d2.path(), Unlock::Passphrase(b"new machine"), P).unwrap();
    for (what, bad) in [
        (
            "wrong passphrase",
            postern_core::backup::import(&moved, &backup, b"wrong"),
        ),
        (
            "truncated",
            postern_core::backup::import(&moved, &backup[..backup.len() - 1], b"backup pw"),
        ),
        (
            "header only",
            postern_core::backup::import(&moved, &backup[..60], b"backup pw"),
        ),
        (
            "empty",
            postern_core::backup::import(&moved, &[], b"backup pw"),
        ),
        (
            "random",
            postern_core::backup::import(&moved, &[0x42; 500], b"backup pw"),
        ),
    ] {
        let e = bad.unwrap_err();
        assert_eq!(
            e.kind(),
            postern_core::ErrorKind::PeerMisbehaved,
            "{what}: {e:?}"
        );
    }
    let mut weakened = backup.clone();
    weakened[19] = 8; // memory_kib lowered: authenticated, so refused
    assert!(postern_core::backup::import(&moved, &weakened, b"backup pw").is_err());
    let mut flipped = backup.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(postern_core::backup::import(&moved, &flipped, b"backup pw").is_err());

    let cs = postern_core::backup::import(&moved, &backup, b"backup pw").unwrap();
    moved.commit(cs).unwrap();
    assert_eq!(e2e::local_address(&moved).unwrap(), alice_addr);
    assert_eq!(moved.history(&bob_addr, 10).unwrap().len(), 1);
    assert_eq!(moved.outbox().unwrap().len(), 1);
    assert_eq!(
        moved.attachment_chunk(&[6; 16], 2).unwrap().unwrap(),
        b"encrypted chunk".to_vec()
    );
    // The session goes on from the new machine.
    let (reply, cs) = e2e::seal(&bob, &alice_addr, b"welcome back", T0, &mut rng).unwrap();
    bob.commit(cs).unwrap();
    let (_, pt, cs) = e2e::open(&moved, &reply, T0, &mut rng).unwrap();
    moved.commit(cs).unwrap();
    assert_eq!(&pt[..], b"welcome back");
    // Restoring twice is refused.
    assert!(matches!(
        postern_core::backup::import(&moved, &backup, b"backup pw"),
        Err(postern_core::Error::ProfileNotEmpty)
    ));
}

/// The profile directory is 0700 and every file in it 0600 (database,
/// its write-ahead log and shared memory, header, lock), even when the
/// directory existed with a looser mode and after the header is
/// rewritten by a change of passphrase.
#[cfg(unix)]
#[test]
fn profile_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("profile");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let check = |dir: &Path| {
        assert_eq!(mode(dir), 0o700, "directory");
        let mut seen = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            seen += 1;
        }
        seen
    };
    {
        let mut p = Profile::create(&dir, Unlock::Passphrase(PW), P).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (_, cs) = e2e::create_identity(&p, T0, &mut rng).unwrap();
        p.commit(cs).unwrap();
        // Open: database, log, shared memory, header and lock all exist.
        assert!(check(&dir) >= 4);
        p.change_protection(Unlock::Passphrase(b"another passphrase"), P)
            .unwrap();
        check(&dir);
    }
    populated(&tmp.path().join("second"));
    check(&tmp.path().join("second"));
}

/// Incoming messages raise a conversation's unread count in the same
/// transaction that stores them; outgoing ones do not; marking the
/// conversation read sets it to zero; the count survives a reopen.
#[test]
fn unread_counts_rise_with_incoming_messages_and_reset_when_read() {
    let d = tempfile::tempdir().unwrap();
    let (bob, carol) = (Address::from_bytes([2; 16]), Address::from_bytes([3; 16]));
    {
        let mut p = Profile::create(d.path(), Unlock::Passphrase(PW), P).unwrap();
        let mut cs = ChangeSet::new();
        cs.add_message(message(bob, 1, b"one", Direction::Incoming));
        cs.add_message(message(bob, 2, b"two", Direction::Incoming));
        cs.add_message(message(bob, 3, b"mine", Direction::Outgoing));
        cs.add_message(message(carol, 4, b"hi", Direction::Incoming));
        p.commit(cs).unwrap();
        let unread = |p: &Profile, who: Address| {
            p.conversations()
                .unwrap()
                .into_iter()
                .find(|c| c.peer == who)
                .unwrap()
                .unread
        };
        assert_eq!((unread(&p, bob), unread(&p, carol)), (2, 1));
        let mut cs = ChangeSet::new();
        cs.mark_read(bob);
        p.commit(cs).unwrap();
        assert_eq!((unread(&p, bob), unread(&p, carol)), (0, 1));
        // A message and a read mark in one change set: the mark wins.
        let mut cs = ChangeSet::new();
        cs.add_message(message(carol, 5, b"again", Direction::Incoming));
        cs.mark_read(carol);
        p.commit(cs).unwrap();
        assert_eq!(unread(&p, carol), 0);
        let mut cs = ChangeSet::new();
        cs.add_message(message(bob, 6, b"three", Direction::Incoming));
        p.commit(cs).unwrap();
    }
    let p = Profile::open(d.path(), Unlock::Passphrase(PW)).unwrap();
    let c = p.conversations().unwrap();
    assert_eq!(c[0].peer, bob);
    assert_eq!((c[0].unread, c[0].messages), (1, 4));
}
