//! The network directory: rejections first (unsigned, unpinned signer,
//! below threshold, expired, tampered, bad ids, duplicates, oversize,
//! truncated and random bytes), then round trips and fixed-bytes vectors.
#![allow(
    clippy::type_complexity,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use postern_core::codec::{self, directory_proto as pb};
use postern_core::consts::{
    MAX_DIRECTORY_BYTES, MAX_DIRECTORY_CLOCK_SKEW_MS, MAX_DIRECTORY_RELAYS,
};
use postern_core::crypto::signal::{AuthorityPublic, AuthoritySecret};
use postern_core::directory::{
    self, Directory, ROLE_ENTRY, ROLE_MAILBOX, ROLE_MIX, ROLES_ALL, RelayInfo,
};
use postern_core::{Error, ErrorKind, RelayAddress, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const NOW: UnixTime = UnixTime(1_800_000_000_000);
const DAY_MS: u64 = 86_400_000;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn addr(port: u16) -> RelayAddress {
    RelayAddress::new("127.0.0.1", port, Some([port as u8; 32])).unwrap()
}

fn sphinx_keys(seed: u8) -> Vec<(u32, [u8; 32])> {
    vec![(10, [seed; 32]), (11, [seed.wrapping_add(1) | 1; 32])]
}

struct Net {
    authority: AuthoritySecret,
    pinned: Vec<AuthorityPublic>,
    relays: Vec<AuthoritySecret>,
    descriptors: Vec<Vec<u8>>,
}

fn net(seed: u64, n: u16) -> Net {
    let mut r = rng(seed);
    let authority = AuthoritySecret::generate(&mut r);
    let pinned = vec![authority.public().unwrap()];
    let mut relays = Vec::new();
    let mut descriptors = Vec::new();
    for i in 0..n {
        let key = AuthoritySecret::generate(&mut r);
        let d = directory::sign_descriptor(
            &key,
            &addr(7000 + i),
            ROLES_ALL,
            &sphinx_keys(i as u8 + 1),
            NOW,
            &mut r,
        )
        .unwrap();
        relays.push(key);
        descriptors.push(d);
    }
    Net {
        authority,
        pinned,
        relays,
        descriptors,
    }
}

fn publish(n: &Net, seed: u64) -> Vec<u8> {
    directory::sign_directory(
        "testnet",
        &n.descriptors,
        NOW,
        NOW.plus_millis(7 * DAY_MS),
        86_400,
        UnixTime(0),
        &n.authority,
        &mut rng(seed),
    )
    .unwrap()
}

fn body(n: &Net) -> pb::DirectoryBody {
    let signed: pb::SignedDirectory = codec::decode_bounded(&publish(n, 1), 1 << 20, "t").unwrap();
    codec::decode_bounded(&signed.body, 1 << 20, "t").unwrap()
}

/// Signs an arbitrary body the way an authority does.
fn sign_body(body: &[u8], signers: &[&AuthoritySecret]) -> Vec<u8> {
    let mut r = rng(99);
    let mut msg = b"postern/directory/v1".to_vec();
    msg.extend_from_slice(body);
    codec::encode(&pb::SignedDirectory {
        body: body.to_vec(),
        signatures: signers
            .iter()
            .map(|a| pb::AuthoritySignature {
                authority_key: a.public().unwrap().to_bytes(),
                signature: a.sign(&msg, &mut r).unwrap().to_vec(),
            })
            .collect(),
    })
}

/// Signs an arbitrary descriptor the way a relay does.
fn sign_descriptor_raw(d: &pb::RelayDescriptor, key: &AuthoritySecret) -> pb::SignedDescriptor {
    let descriptor = codec::encode(d);
    let mut msg = b"postern/descriptor/v1".to_vec();
    msg.extend_from_slice(&descriptor);
    pb::SignedDescriptor {
        signature: key.sign(&msg, &mut rng(5)).unwrap().to_vec(),
        descriptor,
    }
}

fn inner(sd: &pb::SignedDescriptor) -> pb::RelayDescriptor {
    codec::decode_bounded(&sd.descriptor, 4096, "t").unwrap()
}

fn rejected<T: core::fmt::Debug>(r: Result<T, Error>) -> &'static str {
    match r {
        Err(Error::DirectoryRejected { reason }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn verify(bytes: &[u8], n: &Net) -> Result<Directory, Error> {
    Directory::verify(bytes, &n.pinned, 1, NOW)
}

// ---- rejections ----

#[test]
fn rejects_unsigned_directory() {
    let n = net(1, 3);
    let b = codec::encode(&body(&n));
    let unsigned = sign_body(&b, &[]);
    assert_eq!(rejected(verify(&unsigned, &n)), "no authority signature");
}

#[test]
fn rejects_directory_signed_by_unpinned_key() {
    let n = net(2, 3);
    let stranger = AuthoritySecret::generate(&mut rng(77));
    let d = sign_body(&codec::encode(&body(&n)), &[&stranger]);
    let e = verify(&d, &n).unwrap_err();
    assert!(matches!(e, Error::DirectoryRejected { .. }));
    assert_eq!(e.kind(), ErrorKind::PeerMisbehaved);
    // A pinned key's name on a stranger's signature does not help either.
    let mut s: pb::SignedDirectory = codec::decode_bounded(&d, 1 << 20, "t").unwrap();
    s.signatures[0].authority_key = n.pinned[0].to_bytes();
    assert!(verify(&codec::encode(&s), &n).is_err());
    // Nor does a signature of the wrong length.
    let mut s: pb::SignedDirectory = codec::decode_bounded(&publish(&n, 1), 1 << 20, "t").unwrap();
    s.signatures[0].signature.pop();
    assert!(verify(&codec::encode(&s), &n).is_err());
}

#[test]
fn rejects_below_threshold_counting_a_repeated_signer_once() {
    let n = net(3, 3);
    let second = AuthoritySecret::generate(&mut rng(78));
    let pinned = vec![n.pinned[0].clone(), second.public().unwrap()];
    let b = codec::encode(&body(&n));
    // The same authority twice is one signature.
    let twice = sign_body(&b, &[&n.authority, &n.authority]);
    assert_eq!(
        rejected(Directory::verify(&twice, &pinned, 2, NOW)),
        "not enough valid authority signatures"
    );
    // A pinned list naming one key twice does not count it twice.
    let doubled = vec![n.pinned[0].clone(), n.pinned[0].clone()];
    assert!(Directory::verify(&twice, &doubled, 2, NOW).is_err());
    // The second authority's signature reaches the threshold.
    let both = directory::add_signature(&publish(&n, 1), &second, &mut rng(4)).unwrap();
    assert!(Directory::verify(&both, &pinned, 2, NOW).is_ok());
    assert!(Directory::verify(&both, &pinned, 3, NOW).is_err());
    // An authority cannot sign twice through the API.
    assert!(directory::add_signature(&both, &second, &mut rng(4)).is_err());
}

#[test]
fn rejects_expired_and_future_directories() {
    let n = net(4, 2);
    let d = publish(&n, 1);
    let valid_until = NOW.plus_millis(7 * DAY_MS);
    assert!(Directory::verify(&d, &n.pinned, 1, UnixTime(valid_until.0 - 1)).is_ok());
    for now in [valid_until, valid_until.plus_millis(1)] {
        let e = Directory::verify(&d, &n.pinned, 1, now).unwrap_err();
        assert!(matches!(e, Error::DirectoryExpired), "{e:?}");
    }
    // Issued beyond the allowed clock skew.
    let early = UnixTime(NOW.0 - MAX_DIRECTORY_CLOCK_SKEW_MS - 1);
    assert_eq!(
        rejected(Directory::verify(&d, &n.pinned, 1, early)),
        "issued in the future"
    );
    let skewed = UnixTime(NOW.0 - MAX_DIRECTORY_CLOCK_SKEW_MS);
    assert!(Directory::verify(&d, &n.pinned, 1, skewed).is_ok());
}

#[test]
fn rejects_tampered_body() {
    let n = net(5, 3);
    let d = publish(&n, 1);
    let s: pb::SignedDirectory = codec::decode_bounded(&d, 1 << 20, "t").unwrap();
    for i in (0..s.body.len()).step_by(7) {
        let mut t = s.clone();
        t.body[i] ^= 0x01;
        let r = verify(&codec::encode(&t), &n);
        assert_eq!(
            rejected(r),
            "not enough valid authority signatures",
            "byte {i}"
        );
    }
}

#[test]
fn rejects_tampered_descriptor_even_when_the_authority_signs_it() {
    let n = net(6, 3);
    let mut b = body(&n);
    let mut d = inner(&b.relays[1]);
    d.address = addr(9999).to_string();
    b.relays[1].descriptor = codec::encode(&d);
    let signed = sign_body(&codec::encode(&b), &[&n.authority]);
    assert_eq!(rejected(verify(&signed, &n)), "bad descriptor signature");
    // The signature alone flipped.
    let mut b = body(&n);
    b.relays[0].signature[3] ^= 0x80;
    let signed = sign_body(&codec::encode(&b), &[&n.authority]);
    assert_eq!(rejected(verify(&signed, &n)), "bad descriptor signature");
}

#[test]
fn rejects_bad_relay_id() {
    let n = net(7, 3);
    let mut b = body(&n);
    // Find which relay key signed relays[0].
    let key = n
        .relays
        .iter()
        .find(|k| k.public().unwrap().to_bytes() == inner(&b.relays[0]).descriptor_key)
        .unwrap();
    let mut d = inner(&b.relays[0]);
    d.relay_id[0] ^= 1;
    b.relays[0] = sign_descriptor_raw(&d, key);
    let signed = sign_body(&codec::encode(&b), &[&n.authority]);
    assert_eq!(
        rejected(verify(&signed, &n)),
        "relay id does not match the descriptor key"
    );
}

#[test]
fn rejects_bad_descriptor_fields() {
    let n = net(8, 1);
    let key = &n.relays[0];
    let good = inner(&codec::decode_bounded(&n.descriptors[0], 4096, "t").unwrap());
    let cases: Vec<(&str, Box<dyn Fn(&mut pb::RelayDescriptor)>)> = vec![
        ("bad roles", Box::new(|d| d.roles = 0)),
        ("bad roles", Box::new(|d| d.roles = 8 | ROLE_MIX)),
        (
            "bad relay address",
            Box::new(|d| d.address = "relay:1".into()),
        ),
        (
            // RelayAddress::parse accepts only the canonical form.
            "bad relay address",
            Box::new(|d| d.address = "postern-relay://127.0.0.1:07000".into()),
        ),
        (
            "wrong number of sphinx keys",
            Box::new(|d| d.sphinx_keys.clear()),
        ),
        (
            "wrong number of sphinx keys",
            Box::new(|d| {
                d.sphinx_keys = (1..=4)
                    .map(|e| pb::SphinxKey {
                        epoch: e,
                        public_key: vec![1; 32],
                    })
                    .collect()
            }),
        ),
        (
            "sphinx key epochs not increasing",
            Box::new(|d| d.sphinx_keys[1].epoch = d.sphinx_keys[0].epoch),
        ),
        (
            "sphinx key length",
            Box::new(|d| d.sphinx_keys[0].public_key.pop().map(drop).unwrap_or(())),
        ),
        (
            "zero sphinx key",
            Box::new(|d| d.sphinx_keys[0].public_key = vec![0; 32]),
        ),
    ];
    for (reason, mutate) in cases {
        let mut d = good.clone();
        mutate(&mut d);
        let bytes = codec::encode(&sign_descriptor_raw(&d, key));
        match directory::verify_descriptor(&bytes) {
            Err(Error::DirectoryRejected { reason: r }) if r == reason => {}
            other => panic!("{reason}: got {other:?}"),
        }
    }
    let mut d = good.clone();
    d.version = 2;
    let bytes = codec::encode(&sign_descriptor_raw(&d, key));
    assert!(matches!(
        directory::verify_descriptor(&bytes),
        Err(Error::UnsupportedVersion { version: 2, .. })
    ));
    // The signing API refuses to produce such descriptors.
    let mut r = rng(1);
    assert!(directory::sign_descriptor(key, &addr(1), 0, &sphinx_keys(1), NOW, &mut r).is_err());
    assert!(directory::sign_descriptor(key, &addr(1), ROLE_MIX, &[], NOW, &mut r).is_err());
}

#[test]
fn rejects_duplicate_relays() {
    let n = net(9, 2);
    // The same descriptor twice.
    let mut b = body(&n);
    b.relays.push(b.relays[0].clone());
    let signed = sign_body(&codec::encode(&b), &[&n.authority]);
    assert_eq!(rejected(verify(&signed, &n)), "relay listed twice");
    let twice = vec![n.descriptors[0].clone(), n.descriptors[0].clone()];
    let r = directory::sign_directory(
        "t",
        &twice,
        NOW,
        NOW.plus_millis(DAY_MS),
        86_400,
        UnixTime(0),
        &n.authority,
        &mut rng(1),
    );
    assert!(r.is_err());
    // Two keys claiming the same host and port (with another pin).
    let mut r = rng(10);
    let other = AuthoritySecret::generate(&mut r);
    let same_place = RelayAddress::new("127.0.0.1", 7000, Some([0xAB; 32])).unwrap();
    let d = directory::sign_descriptor(&other, &same_place, ROLE_MIX, &sphinx_keys(9), NOW, &mut r)
        .unwrap();
    let mut list = n.descriptors.clone();
    list.push(d);
    let e = directory::sign_directory(
        "t",
        &list,
        NOW,
        NOW.plus_millis(DAY_MS),
        86_400,
        UnixTime(0),
        &n.authority,
        &mut r,
    )
    .unwrap_err();
    assert!(matches!(
        e,
        Error::DirectoryRejected {
            reason: "relay address listed twice"
        }
    ));
    // Relays out of id order.
    let mut b = body(&n);
    b.relays.swap(0, 1);
    let signed = sign_body(&codec::encode(&b), &[&n.authority]);
    assert_eq!(rejected(verify(&signed, &n)), "relays not ordered by id");
}

#[test]
fn rejects_bad_body_fields() {
    let n = net(11, 2);
    let cases: Vec<(&str, Box<dyn Fn(&mut pb::DirectoryBody)>)> = vec![
        ("bad network name", Box::new(|b| b.network.clear())),
        ("bad network name", Box::new(|b| b.network = "n".repeat(65))),
        (
            "bad validity period",
            Box::new(|b| b.valid_until_ms = b.issued_at_ms),
        ),
        (
            "bad validity period",
            Box::new(|b| b.valid_until_ms = b.issued_at_ms + 32 * DAY_MS),
        ),
        ("bad epoch length", Box::new(|b| b.epoch_secs = 59)),
        ("bad epoch length", Box::new(|b| b.epoch_secs = 31 * 86_400)),
        ("wrong number of relays", Box::new(|b| b.relays.clear())),
    ];
    for (reason, mutate) in cases {
        let mut b = body(&n);
        mutate(&mut b);
        let signed = sign_body(&codec::encode(&b), &[&n.authority]);
        assert_eq!(rejected(verify(&signed, &n)), reason);
    }
    let mut b = body(&n);
    b.version = 2;
    let signed = sign_body(&codec::encode(&b), &[&n.authority]);
    assert!(matches!(
        verify(&signed, &n),
        Err(Error::UnsupportedVersion { version: 2, .. })
    ));
}

#[test]
fn rejects_oversize_directories() {
    let n = net(12, 1);
    let big = vec![0u8; MAX_DIRECTORY_BYTES + 1];
    assert!(matches!(verify(&big, &n), Err(Error::TooLarge { .. })));
    // More relays than allowed, each valid.
    let mut b = body(&n);
    let key = &n.relays[0];
    let template = inner(&b.relays[0]);
    let mut r = rng(13);
    b.relays.clear();
    for i in 0..=MAX_DIRECTORY_RELAYS {
        let k = AuthoritySecret::generate(&mut r);
        let mut d = template.clone();
        d.descriptor_key = k.public().unwrap().to_bytes();
        d.relay_id = directory::relay_id(&k.public().unwrap()).to_vec();
        d.address = format!("postern-relay://10.0.{}.{}:1", i / 256, i % 256);
        b.relays.push(sign_descriptor_raw(&d, &k));
    }
    let _ = key;
    b.relays
        .sort_by(|x, y| inner(x).relay_id.cmp(&inner(y).relay_id));
    let signed = sign_body(&codec::encode(&b), &[&n.authority]);
    assert!(signed.len() <= MAX_DIRECTORY_BYTES, "{}", signed.len());
    assert_eq!(rejected(verify(&signed, &n)), "wrong number of relays");
    // Too many signatures.
    let b = codec::encode(&body(&n));
    let many: Vec<&AuthoritySecret> = std::iter::repeat_n(&n.authority, 17).collect();
    assert_eq!(
        rejected(verify(&sign_body(&b, &many), &n)),
        "too many authority signatures"
    );
}

#[test]
fn rejects_truncated_and_random_bytes() {
    let n = net(14, 3);
    let d = publish(&n, 1);
    for len in 0..d.len() {
        assert!(verify(&d[..len], &n).is_err(), "truncated to {len}");
    }
    let mut extended = d.clone();
    extended.push(0);
    assert!(verify(&extended, &n).is_err());
    let mut r = rng(15);
    for len in [1usize, 10, 100, 1000, 5000] {
        for _ in 0..20 {
            let mut junk = vec![0u8; len];
            r.fill_bytes(&mut junk);
            assert!(verify(&junk, &n).is_err());
            assert!(directory::verify_descriptor(&junk).is_err());
        }
    }
}

// ---- round trips ----

#[test]
fn round_trip_and_lookups() {
    let n = net(16, 5);
    let d = publish(&n, 1);
    let dir = verify(&d, &n).unwrap();
    assert_eq!(dir.network, "testnet");
    assert_eq!(dir.relays.len(), 5);
    assert!(dir.relays.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(dir.epoch_secs, 86_400);
    assert_eq!(dir.epoch_at(NOW), (NOW.0 / DAY_MS) as u32);
    for key in &n.relays {
        let id = directory::relay_id(&key.public().unwrap());
        let info: &RelayInfo = dir.relay(&id).unwrap();
        assert_eq!(dir.by_address(&info.address).unwrap().id, id);
        assert!(info.has_role(ROLE_ENTRY | ROLE_MIX | ROLE_MAILBOX));
        assert_eq!(dir.sphinx_key(&id, 10), Some(info.sphinx_keys[0].1));
        assert_eq!(dir.sphinx_key(&id, 12), None);
    }
    assert!(dir.relay(&[0; 32]).is_none());
    assert!(dir.by_address(&addr(1)).is_none());
    assert_eq!(dir.with_role(ROLE_MAILBOX).count(), 5);
    // Through GetDirectory blobs and back.
    let blobs = directory::to_blobs(&d).unwrap();
    assert_eq!(directory::from_blobs(&blobs).unwrap(), d);
    // A descriptor verifies on its own too.
    let info = directory::verify_descriptor(&n.descriptors[0]).unwrap();
    assert_eq!(dir.relay(&info.id), Some(&info));
}

#[test]
fn largest_directory_fits_the_blobs() {
    // MAX_DIRECTORY_RELAYS descriptors with three keys and a typical
    // address fit in MAX_DIRECTORY_BYTES.
    let mut r = rng(17);
    let authority = AuthoritySecret::generate(&mut r);
    let mut descriptors = Vec::new();
    for i in 0..MAX_DIRECTORY_RELAYS {
        let k = AuthoritySecret::generate(&mut r);
        let a = RelayAddress::new(
            &format!("relay-{i:03}.postern.example"),
            7443,
            Some([i as u8; 32]),
        )
        .unwrap();
        let keys = [(1, [1u8; 32]), (2, [2u8; 32]), (3, [3u8; 32])];
        descriptors
            .push(directory::sign_descriptor(&k, &a, ROLES_ALL, &keys, NOW, &mut r).unwrap());
    }
    let d = directory::sign_directory(
        "postern",
        &descriptors,
        NOW,
        NOW.plus_millis(DAY_MS),
        86_400,
        UnixTime(0),
        &authority,
        &mut r,
    )
    .unwrap();
    assert!(d.len() <= MAX_DIRECTORY_BYTES);
    let dir = Directory::verify(&d, &[authority.public().unwrap()], 1, NOW).unwrap();
    assert_eq!(dir.relays.len(), MAX_DIRECTORY_RELAYS);
}

// ---- fixed bytes ----

/// A directory produced by this implementation (seeded), kept as bytes:
/// a change to the format or to the signature rules makes this fail.
const VECTOR_AUTHORITY: &str = include_str!("vectors/directory-v1.authority.hex");
const VECTOR_DIRECTORY: &str = include_str!("vectors/directory-v1.hex");

fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn vector_directory() -> (AuthorityPublic, Vec<u8>) {
    let n = net(2024, 2);
    (n.pinned[0].clone(), publish(&n, 2025))
}

#[test]
fn fixed_bytes_test_vector() {
    let (key, bytes) = vector_directory();
    if std::env::var_os("POSTERN_WRITE_VECTORS").is_some() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/directory-v1.hex"), hex(&bytes) + "\n").unwrap();
        std::fs::write(
            format!("{dir}/directory-v1.authority.hex"),
            hex(&key.to_bytes()) + "\n",
        )
        .unwrap();
        return;
    }
    // The same seed produces the same bytes.
    assert_eq!(hex(&bytes), VECTOR_DIRECTORY.trim());
    // And the stored bytes verify on their own.
    let pinned = AuthorityPublic::from_bytes(&unhex(VECTOR_AUTHORITY)).unwrap();
    assert_eq!(pinned, key);
    let dir = Directory::verify(&unhex(VECTOR_DIRECTORY), &[pinned], 1, NOW).unwrap();
    assert_eq!(dir.relays.len(), 2);
    assert_eq!(dir.network, "testnet");
    assert_eq!(dir.valid_until, NOW.plus_millis(7 * DAY_MS));
    for r in &dir.relays {
        assert_eq!(r.roles, ROLES_ALL);
        assert_eq!(r.address.host(), "127.0.0.1");
    }
}

/// A client refetches its cached directory before it runs out of keys:
/// a quarter epoch after it was signed, within an hour of expiry, or when
/// no relay in it holds a key for the epoch at hand.
#[test]
fn a_cached_directory_goes_stale_before_its_keys_run_out() {
    const HOUR_MS: u64 = 3_600_000;
    let n = net(40, 3);
    let epoch = directory::epoch_at(86_400, UnixTime(0), NOW);
    let mut r = rng(41);
    let descriptors: Vec<Vec<u8>> = n
        .relays
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let k = [i as u8 + 1; 32];
            directory::sign_descriptor(
                key,
                &addr(7100 + i as u16),
                ROLES_ALL,
                &[(epoch, k), (epoch + 1, k)],
                NOW,
                &mut r,
            )
            .unwrap()
        })
        .collect();
    let signed = directory::sign_directory(
        "testnet",
        &descriptors,
        NOW,
        NOW.plus_millis(7 * DAY_MS),
        86_400,
        UnixTime(0),
        &n.authority,
        &mut r,
    )
    .unwrap();
    let d = Directory::verify(&signed, &n.pinned, 1, NOW).unwrap();
    assert!(!d.is_stale(NOW));
    assert!(!d.is_stale(NOW.plus_millis(6 * HOUR_MS - 1)));
    // Daily epochs: a quarter epoch is 6 hours.
    assert!(d.is_stale(NOW.plus_millis(6 * HOUR_MS)));

    // Hourly epochs, valid for 2 hours: stale 15 minutes after signing,
    // and within an hour of expiry whatever the epoch.
    let hourly = directory::sign_directory(
        "testnet",
        &n.descriptors,
        NOW,
        NOW.plus_millis(2 * HOUR_MS),
        3_600,
        UnixTime(0),
        &n.authority,
        &mut r,
    )
    .unwrap();
    let h = Directory::verify(&hourly, &n.pinned, 1, NOW).unwrap();
    // Its relays hold keys for epochs 10 and 11 only: long past.
    assert!(h.is_stale(NOW));
    let e = h.epoch_at(NOW);
    let fresh_keys: Vec<Vec<u8>> = n
        .relays
        .iter()
        .enumerate()
        .map(|(i, key)| {
            directory::sign_descriptor(
                key,
                &addr(7200 + i as u16),
                ROLES_ALL,
                &[(e, [i as u8 + 9; 32])],
                NOW,
                &mut r,
            )
            .unwrap()
        })
        .collect();
    let hourly = directory::sign_directory(
        "testnet",
        &fresh_keys,
        NOW,
        NOW.plus_millis(2 * HOUR_MS),
        3_600,
        UnixTime(0),
        &n.authority,
        &mut r,
    )
    .unwrap();
    let h = Directory::verify(&hourly, &n.pinned, 1, NOW).unwrap();
    assert!(!h.is_stale(NOW.plus_millis(HOUR_MS / 4 - 1)));
    assert!(h.is_stale(NOW.plus_millis(HOUR_MS / 4)));
    // Stale, but a relay that serves this same copy is not asked again
    // before every send: at most once per recheck interval.
    let later = NOW.plus_millis(HOUR_MS / 4);
    assert!(h.should_refetch(None, later));
    assert!(!h.should_refetch(Some(later), later));
    let recheck = postern_core::consts::DIRECTORY_RECHECK_MS;
    assert!(!h.should_refetch(Some(later), later.plus_millis(recheck - 1)));
    assert!(h.should_refetch(Some(later), later.plus_millis(recheck)));
    // A fetch time in the future (the clock was set back) does not hold
    // the next fetch off.
    assert!(h.should_refetch(Some(later.plus_millis(HOUR_MS)), later));
    // Fresh: no fetch whatever the last one.
    assert!(!h.should_refetch(None, NOW));
    // Daily epochs, valid for 3 hours: the quarter epoch is far, the keys
    // are there; an hour before expiry it is stale.
    let short = directory::sign_directory(
        "testnet",
        &descriptors,
        NOW,
        NOW.plus_millis(3 * HOUR_MS),
        86_400,
        UnixTime(0),
        &n.authority,
        &mut r,
    )
    .unwrap();
    let d = Directory::verify(&short, &n.pinned, 1, NOW).unwrap();
    assert!(!d.is_stale(NOW.plus_millis(2 * HOUR_MS - 1)));
    assert!(d.is_stale(NOW.plus_millis(2 * HOUR_MS)));
}

#[test]
fn a_descriptor_names_its_webtransport_certificates_and_bad_ones_are_refused() {
    use postern_core::directory::WebTransportInfo;
    let mut r = rng(31);
    let key = AuthoritySecret::generate(&mut r);
    let sign = |w: &WebTransportInfo, r: &mut ChaCha20Rng| {
        directory::sign_descriptor_with(
            &key,
            &addr(7001),
            ROLE_MIX,
            &sphinx_keys(3),
            Some(w),
            NOW,
            r,
        )
    };
    // Refused by the signing API (it checks what it signs like a verifier).
    for bad in [
        WebTransportInfo {
            port: 0,
            cert_sha256: vec![[1; 32]],
        },
        WebTransportInfo {
            port: 4433,
            cert_sha256: vec![],
        },
        WebTransportInfo {
            port: 4433,
            cert_sha256: vec![[1; 32], [2; 32], [3; 32]],
        },
        WebTransportInfo {
            port: 4433,
            cert_sha256: vec![[1; 32], [1; 32]],
        },
    ] {
        assert!(sign(&bad, &mut r).is_err(), "{bad:?}");
    }
    // A current and a next certificate: verified as signed.
    let good = WebTransportInfo {
        port: 4433,
        cert_sha256: vec![[0xC1; 32], [0xC2; 32]],
    };
    let d = sign(&good, &mut r).unwrap();
    let info = directory::verify_descriptor(&d).unwrap();
    assert_eq!(info.webtransport.as_ref(), Some(&good));
    // Without one, none.
    let plain =
        directory::sign_descriptor(&key, &addr(7001), ROLE_MIX, &sphinx_keys(3), NOW, &mut r)
            .unwrap();
    assert_eq!(
        directory::verify_descriptor(&plain).unwrap().webtransport,
        None
    );
    // A hash changed after signing: the signature no longer holds.
    let mut tampered = d.clone();
    let at = tampered.windows(32).position(|w| w == [0xC2; 32]).unwrap();
    tampered[at] ^= 1;
    assert_eq!(
        rejected(directory::verify_descriptor(&tampered)),
        "bad descriptor signature"
    );
    // A short hash, signed by the relay itself, is refused on reading.
    let mut s: pb::SignedDescriptor = codec::decode_bounded(&d, 4096, "t").unwrap();
    let mut body: pb::RelayDescriptor = codec::decode_bounded(&s.descriptor, 4096, "t").unwrap();
    body.webtransport.as_mut().unwrap().cert_sha256[0].pop();
    s = sign_descriptor_raw(&body, &key);
    assert_eq!(
        rejected(directory::verify_descriptor(&codec::encode(&s))),
        "webtransport certificate hash length"
    );
}
