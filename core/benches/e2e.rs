//! Cost of Postern's libsignal facade against libsignal called directly.
//!
//! Three operations, each measured both ways in the same run:
//! - `session_setup`: PQXDH initiation from a prekey bundle,
//! - `encrypt_decrypt_1k`: one 1,000-byte message encrypted by Alice and
//!   decrypted by Bob on an established session,
//! - `sealed_seal_open`: the same through sealed sender.
//!
//! `facade` calls the facade module (`postern_core::crypto::signal`) over
//! `MemStore`: bundle decoding, record (de)serialisation through the store
//! adapter, the fail-closed identity checks, and committing the change
//! sets. `e2e` is the client API one layer up, which adds padding and the
//! contact checks of the `e2e` module. The direct side uses libsignal's own
//! in-memory stores, which keep parsed records and never serialise them
//! (a received message is parsed from its bytes on both sides, as any
//! receiver must);
//! `libsignal_bytes_store` is libsignal with a session store that keeps
//! records as bytes, as every persistent client must. This bench is the one place outside the facade module
//! that imports libsignal, because it is what the facade is compared with.
//!
//! Run: `cargo bench -p postern-core --bench e2e`, then
//! `scripts/bench-report` prints the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use libsignal_protocol as ls;
use ls::GenericSignedPreKey as _;
use postern_core::crypto::signal;
use postern_core::store::Overlay;
use postern_core::{Address, KvStore, MemStore, UnixTime, e2e};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: UnixTime = UnixTime(1_800_000_000_000);
const MSG: [u8; 1000] = [0x42; 1000];

fn run<T>(f: impl Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("in-memory stores never suspend"),
    }
}

// ---------------------------------------------------------------- facade

struct P {
    store: MemStore,
    addr: Address,
}

fn p_user(rng: &mut ChaCha20Rng) -> P {
    let mut store = MemStore::new();
    let (addr, cs) = e2e::create_identity(&store, NOW, rng).unwrap();
    store.commit(cs).unwrap();
    P { store, addr }
}

fn p_bundle(u: &mut P) -> Vec<u8> {
    let (b, cs) = e2e::publish_bundle(&u.store).unwrap();
    u.store.commit(cs).unwrap();
    b
}

fn p_pair(rng: &mut ChaCha20Rng) -> (P, P) {
    let (mut a, mut b) = (p_user(rng), p_user(rng));
    let bb = p_bundle(&mut b);
    let (_, cs) = e2e::start_session(&a.store, &bb, NOW, rng).unwrap();
    a.store.commit(cs).unwrap();
    let ab = p_bundle(&mut a);
    let (_, cs) = e2e::add_contact(&b.store, &ab).unwrap();
    b.store.commit(cs).unwrap();
    // Establish both ratchet directions.
    let (ct, cs) = e2e::seal(&a.store, &b.addr, b"hi", NOW, rng).unwrap();
    a.store.commit(cs).unwrap();
    let (_, _, cs) = e2e::open(&b.store, &ct, NOW, rng).unwrap();
    b.store.commit(cs).unwrap();
    let (ct, cs) = e2e::seal(&b.store, &a.addr, b"hi", NOW, rng).unwrap();
    b.store.commit(cs).unwrap();
    let (_, _, cs) = e2e::open(&a.store, &ct, NOW, rng).unwrap();
    a.store.commit(cs).unwrap();
    (a, b)
}

// ---------------------------------------------------------------- direct

struct D {
    store: ls::InMemSignalProtocolStore,
    addr: ls::ProtocolAddress,
    trust_root: ls::KeyPair,
    cert: ls::SenderCertificate,
}

fn d_user(name: &str, rng: &mut ChaCha20Rng) -> D {
    let id = ls::IdentityKeyPair::generate(rng);
    let store = ls::InMemSignalProtocolStore::new(id, 1234).unwrap();
    let trust_root = ls::KeyPair::generate(rng);
    let server = ls::KeyPair::generate(rng);
    let server_cert =
        ls::ServerCertificate::new(1, server.public_key, &trust_root.private_key, rng).unwrap();
    let cert = ls::SenderCertificate::new(
        name.to_string(),
        None,
        *id.public_key(),
        ls::DeviceId::new(1).unwrap(),
        ls::Timestamp::from_epoch_millis(NOW.0 + 3_600_000),
        server_cert,
        &server.private_key,
        rng,
    )
    .unwrap();
    D {
        store,
        addr: ls::ProtocolAddress::new(name.to_string(), ls::DeviceId::new(1).unwrap()),
        trust_root,
        cert,
    }
}

fn d_bundle(u: &mut D, id: u32, rng: &mut ChaCha20Rng) -> ls::PreKeyBundle {
    let ik = run(ls::IdentityKeyStore::get_identity_key_pair(&u.store)).unwrap();
    let spk = ls::KeyPair::generate(rng);
    let spk_sig = ik
        .private_key()
        .calculate_signature(&spk.public_key.serialize(), rng)
        .unwrap();
    let kp = ls::kem::KeyPair::generate(ls::kem::KeyType::Kyber1024, rng);
    let k_sig = ik
        .private_key()
        .calculate_signature(&kp.public_key.serialize(), rng)
        .unwrap();
    let otp = ls::KeyPair::generate(rng);
    let ts = ls::Timestamp::from_epoch_millis(NOW.0);
    run(ls::SignedPreKeyStore::save_signed_pre_key(
        &mut u.store,
        id.into(),
        &ls::SignedPreKeyRecord::new(id.into(), ts, &spk, &spk_sig),
    ))
    .unwrap();
    run(ls::KyberPreKeyStore::save_kyber_pre_key(
        &mut u.store,
        id.into(),
        &ls::KyberPreKeyRecord::new(id.into(), ts, &kp, &k_sig),
    ))
    .unwrap();
    run(ls::PreKeyStore::save_pre_key(
        &mut u.store,
        id.into(),
        &ls::PreKeyRecord::new(id.into(), &otp),
    ))
    .unwrap();
    ls::PreKeyBundle::new(
        1234,
        ls::DeviceId::new(1).unwrap(),
        Some((id.into(), otp.public_key)),
        id.into(),
        spk.public_key,
        spk_sig.to_vec(),
        id.into(),
        kp.public_key,
        k_sig.to_vec(),
        *ik.identity_key(),
    )
    .unwrap()
}

fn now_st() -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_millis(NOW.0)
}

fn d_pair(rng: &mut ChaCha20Rng) -> (D, D) {
    let (mut a, mut b) = (d_user("alice", rng), d_user("bob", rng));
    let bundle = d_bundle(&mut b, 1, rng);
    run(ls::process_prekey_bundle(
        &b.addr,
        &mut a.store.session_store,
        &mut a.store.identity_store,
        &bundle,
        now_st(),
        rng,
    ))
    .unwrap();
    let ct = run(ls::message_encrypt(
        b"hi",
        &b.addr,
        &mut a.store.session_store,
        &mut a.store.identity_store,
        now_st(),
        rng,
    ))
    .unwrap();
    d_decrypt(&mut b, &a.addr, &ct, rng);
    let ct = run(ls::message_encrypt(
        b"hi",
        &a.addr,
        &mut b.store.session_store,
        &mut b.store.identity_store,
        now_st(),
        rng,
    ))
    .unwrap();
    d_decrypt(&mut a, &b.addr, &ct, rng);
    (a, b)
}

/// Parses a received message from its bytes, as any receiver must.
fn d_parse(ct: &ls::CiphertextMessage) -> ls::CiphertextMessage {
    let bytes = ct.serialize();
    match ct.message_type() {
        ls::CiphertextMessageType::PreKey => ls::CiphertextMessage::PreKeySignalMessage(
            ls::PreKeySignalMessage::try_from(bytes).unwrap(),
        ),
        _ => ls::CiphertextMessage::SignalMessage(ls::SignalMessage::try_from(bytes).unwrap()),
    }
}

fn d_decrypt(
    u: &mut D,
    from: &ls::ProtocolAddress,
    ct: &ls::CiphertextMessage,
    rng: &mut ChaCha20Rng,
) -> Vec<u8> {
    run(ls::message_decrypt(
        &d_parse(ct),
        from,
        &mut u.store.session_store,
        &mut u.store.identity_store,
        &mut u.store.pre_key_store,
        &u.store.signed_pre_key_store,
        &mut u.store.kyber_pre_key_store,
        rng,
    ))
    .unwrap()
}

/// libsignal's session store, but holding records as bytes the way any
/// persistent store does (serialise on store, parse on load).
#[derive(Default)]
struct BytesSessions(std::collections::HashMap<ls::ProtocolAddress, Vec<u8>>);

#[async_trait::async_trait(?Send)]
impl ls::SessionStore for BytesSessions {
    async fn load_session(
        &self,
        a: &ls::ProtocolAddress,
    ) -> ls::error::Result<Option<ls::SessionRecord>> {
        self.0
            .get(a)
            .map(|b| ls::SessionRecord::deserialize(b))
            .transpose()
    }
    async fn store_session(
        &mut self,
        a: &ls::ProtocolAddress,
        r: &ls::SessionRecord,
    ) -> ls::error::Result<()> {
        self.0.insert(a.clone(), r.serialize()?);
        Ok(())
    }
}

/// Moves a pair's sessions into byte-holding stores.
fn to_bytes_sessions(u: &D, peer: &ls::ProtocolAddress) -> BytesSessions {
    let rec = run(ls::SessionStore::load_session(&u.store, peer))
        .unwrap()
        .unwrap();
    let mut s = BytesSessions::default();
    s.0.insert(peer.clone(), rec.serialize().unwrap());
    s
}

// ---------------------------------------------------------------- benches

fn session_setup(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_setup");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let alice = p_user(&mut rng);
    let mut bob = p_user(&mut rng);
    let bundle = p_bundle(&mut bob);
    // The facade's session setup needs the contact pinned first.
    let mut alice = alice;
    let (_, cs) = e2e::add_contact(&alice.store, &bundle).unwrap();
    alice.store.commit(cs).unwrap();
    g.bench_function("facade", |b| {
        b.iter(|| {
            let bd = signal::decode_bundle(&bundle).unwrap();
            let o =
                signal::initiate_session(Overlay::new(&alice.store), &bd, NOW, &mut rng).unwrap();
            black_box(o.into_changes())
        })
    });
    g.bench_function("e2e", |b| {
        b.iter(|| {
            let (_, cs) = e2e::start_session(&alice.store, &bundle, NOW, &mut rng).unwrap();
            black_box(cs)
        })
    });
    let mut da = d_user("alice", &mut rng);
    let mut db = d_user("bob", &mut rng);
    let dbundle = d_bundle(&mut db, 1, &mut rng);
    g.bench_function("libsignal", |b| {
        b.iter(|| {
            run(ls::process_prekey_bundle(
                &db.addr,
                &mut da.store.session_store,
                &mut da.store.identity_store,
                &dbundle,
                now_st(),
                &mut rng,
            ))
            .unwrap();
        })
    });
    g.finish();
}

fn encrypt_decrypt(c: &mut Criterion) {
    let mut g = c.benchmark_group("encrypt_decrypt_1k");
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (mut a, mut b) = p_pair(&mut rng);
    g.bench_function("facade", |bn| {
        bn.iter(|| {
            let (ct, o) =
                signal::encrypt(Overlay::new(&a.store), &b.addr, &MSG, NOW, &mut rng).unwrap();
            let cs = o.into_changes();
            a.store.commit(cs).unwrap();
            let (pt, o) = signal::decrypt(Overlay::new(&b.store), &a.addr, &ct, &mut rng).unwrap();
            let cs = o.into_changes();
            b.store.commit(cs).unwrap();
            black_box(pt)
        })
    });
    g.bench_function("e2e", |bn| {
        bn.iter(|| {
            let (ct, cs) = e2e::encrypt(&a.store, &b.addr, &MSG, NOW, &mut rng).unwrap();
            a.store.commit(cs).unwrap();
            let (pt, cs) = e2e::decrypt(&b.store, &a.addr, &ct, &mut rng).unwrap();
            b.store.commit(cs).unwrap();
            black_box(pt)
        })
    });
    let (mut da, mut db) = d_pair(&mut rng);
    g.bench_function("libsignal", |bn| {
        bn.iter(|| {
            let ct = run(ls::message_encrypt(
                &MSG,
                &db.addr,
                &mut da.store.session_store,
                &mut da.store.identity_store,
                now_st(),
                &mut rng,
            ))
            .unwrap();
            let from = da.addr.clone();
            black_box(d_decrypt(&mut db, &from, &ct, &mut rng))
        })
    });
    let (mut da, mut db) = d_pair(&mut rng);
    let mut sa = to_bytes_sessions(&da, &db.addr);
    let mut sb = to_bytes_sessions(&db, &da.addr);
    g.bench_function("libsignal_bytes_store", |bn| {
        bn.iter(|| {
            let ct = run(ls::message_encrypt(
                &MSG,
                &db.addr,
                &mut sa,
                &mut da.store.identity_store,
                now_st(),
                &mut rng,
            ))
            .unwrap();
            let pt = run(ls::message_decrypt(
                &d_parse(&ct),
                &da.addr,
                &mut sb,
                &mut db.store.identity_store,
                &mut db.store.pre_key_store,
                &db.store.signed_pre_key_store,
                &mut db.store.kyber_pre_key_store,
                &mut rng,
            ))
            .unwrap();
            black_box(pt)
        })
    });
    g.finish();
}

fn sealed(c: &mut Criterion) {
    let mut g = c.benchmark_group("sealed_seal_open");
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (mut a, mut b) = p_pair(&mut rng);
    let cert = {
        // The sender certificate e2e::seal issued while pairing.
        let rec = a
            .store
            .get(postern_core::store::Namespace::LocalIdentity, &[])
            .unwrap()
            .unwrap();
        let local: postern_core::codec::proto::LocalIdentityRecord =
            postern_core::codec::decode_bounded(&rec.bytes, 1 << 20, "bench").unwrap();
        local.sender_certificate
    };
    g.bench_function("facade", |bn| {
        bn.iter(|| {
            let (ct, o) =
                signal::seal(Overlay::new(&a.store), &b.addr, &cert, &MSG, NOW, &mut rng).unwrap();
            let cs = o.into_changes();
            a.store.commit(cs).unwrap();
            let a_key = e2e::contact(&b.store, &a.addr).unwrap().unwrap().identity;
            let (_, pt, o) = signal::open(
                Overlay::new(&b.store),
                &ct,
                NOW,
                |_, _| Ok(Some(a_key)),
                &mut rng,
            )
            .unwrap();
            let cs = o.into_changes();
            b.store.commit(cs).unwrap();
            black_box(pt)
        })
    });
    g.bench_function("e2e", |bn| {
        bn.iter(|| {
            let (ct, cs) = e2e::seal(&a.store, &b.addr, &MSG, NOW, &mut rng).unwrap();
            a.store.commit(cs).unwrap();
            let (_, pt, cs) = e2e::open(&b.store, &ct, NOW, &mut rng).unwrap();
            b.store.commit(cs).unwrap();
            black_box(pt)
        })
    });
    let (mut da, mut db) = d_pair(&mut rng);
    g.bench_function("libsignal", |bn| {
        bn.iter_batched(
            || (),
            |()| {
                let ct = run(ls::sealed_sender_encrypt(
                    &db.addr,
                    &da.cert,
                    &MSG,
                    &mut da.store.session_store,
                    &mut da.store.identity_store,
                    now_st(),
                    &mut rng,
                ))
                .unwrap();
                let out = run(ls::sealed_sender_decrypt(
                    &ct,
                    &da.trust_root.public_key,
                    ls::Timestamp::from_epoch_millis(NOW.0),
                    None,
                    "bob".to_string(),
                    ls::DeviceId::new(1).unwrap(),
                    &mut db.store.identity_store,
                    &mut db.store.session_store,
                    &mut db.store.pre_key_store,
                    &db.store.signed_pre_key_store,
                    &mut db.store.kyber_pre_key_store,
                ))
                .unwrap();
                black_box(out)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = session_setup, encrypt_decrypt, sealed
}
criterion_main!(benches);
