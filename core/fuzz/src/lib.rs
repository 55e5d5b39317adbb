//! The bodies of postern-core's fuzz targets. Each takes arbitrary bytes,
//! feeds them to one decoder of the core, and checks that the result is a
//! typed error or a value that round-trips — never a panic, and never a
//! change to stored state. The `fuzz_targets/` binaries call these; the
//! tests below run them over seed inputs so that they keep working.

use std::sync::OnceLock;

use postern_core::codec::{self, padding, proto};
use postern_core::{Address, KvStore, MemStore, UnixTime, e2e};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: UnixTime = UnixTime(1_800_000_000_000);

/// Two users with sessions both ways, created once per process.
pub struct Pair {
    /// Alice's store.
    pub alice: MemStore,
    /// Alice's address.
    pub alice_addr: Address,
    /// Bob's store (the receiver in the targets).
    pub bob: MemStore,
    /// Bob's address.
    pub bob_addr: Address,
    /// A valid sealed message from Alice to Bob, not yet opened.
    pub sealed: Vec<u8>,
    /// A valid session message from Alice to Bob, not yet decrypted.
    pub message: Vec<u8>,
    /// Bob's bundle.
    pub bundle: Vec<u8>,
}

fn build_pair() -> Result<Pair, postern_core::Error> {
    let mut rng = ChaCha20Rng::seed_from_u64(0xF022);
    let (mut alice, mut bob) = (MemStore::new(), MemStore::new());
    let (alice_addr, cs) = e2e::create_identity(&alice, NOW, &mut rng)?;
    alice.commit(cs)?;
    let (bob_addr, cs) = e2e::create_identity(&bob, NOW, &mut rng)?;
    bob.commit(cs)?;
    let (bundle, cs) = e2e::publish_bundle(&bob)?;
    bob.commit(cs)?;
    let (_, cs) = e2e::start_session(&alice, &bundle, NOW, &mut rng)?;
    alice.commit(cs)?;
    let (ab, cs) = e2e::publish_bundle(&alice)?;
    alice.commit(cs)?;
    let (_, cs) = e2e::add_contact(&bob, &ab)?;
    bob.commit(cs)?;
    let (first, cs) = e2e::seal(&alice, &bob_addr, b"first", NOW, &mut rng)?;
    alice.commit(cs)?;
    let (_, _, cs) = e2e::open(&bob, &first, NOW, &mut rng)?;
    bob.commit(cs)?;
    let (sealed, cs) = e2e::seal(&alice, &bob_addr, b"sealed", NOW, &mut rng)?;
    alice.commit(cs)?;
    let (message, cs) = e2e::encrypt(&alice, &bob_addr, b"message", NOW, &mut rng)?;
    alice.commit(cs)?;
    Ok(Pair {
        alice,
        alice_addr,
        bob,
        bob_addr,
        sealed,
        message,
        bundle,
    })
}

/// The shared pair (built on first use).
pub fn pair() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(|| match build_pair() {
        Ok(p) => p,
        Err(e) => unreachable_setup(e),
    })
}

#[allow(clippy::panic)]
fn unreachable_setup(e: postern_core::Error) -> ! {
    panic!("fuzz setup failed: {e}")
}

fn rng(data: &[u8]) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(data.len() as u64)
}

/// Prekey bundles.
pub fn bundle(data: &[u8]) {
    let _ = e2e::inspect_bundle(data);
    let p = pair();
    let _ = e2e::add_contact(&p.alice, data);
    let _ = e2e::start_session(&p.alice, data, NOW, &mut rng(data));
}

/// Session (non-sealed) messages, as received by Bob from Alice.
pub fn session_message(data: &[u8]) {
    let p = pair();
    let _ = e2e::decrypt(&p.bob, &p.alice_addr, data, &mut rng(data));
}

/// Sealed-sender messages, as received by Bob.
pub fn sealed_message(data: &[u8]) {
    let p = pair();
    let _ = e2e::open(&p.bob, data, NOW, &mut rng(data));
}

/// Padding: anything accepted must be the canonical padding of its content.
#[allow(clippy::panic)]
pub fn padding(data: &[u8]) {
    if let Ok(content) = padding::unpad(data) {
        match padding::pad(&content) {
            Ok(again) if again.as_slice() == data => {}
            _ => panic!("unpad accepted a non-canonical padding"),
        }
    }
}

/// Stored records, as read back from a (possibly corrupted) store.
pub fn records(data: &[u8]) {
    let max = postern_core::consts::MAX_RECORD_BYTES;
    let _ = codec::decode_bounded::<proto::LocalIdentityRecord>(data, max, "fuzz");
    let _ = codec::decode_bounded::<proto::ContactRecord>(data, max, "fuzz");
    let _ = codec::decode_bounded::<proto::PrekeyStateRecord>(data, max, "fuzz");
    let _ = codec::decode_bounded::<proto::KyberUsageRecord>(data, max, "fuzz");
    let _ = postern_core::IdentityPublic::from_bytes(data);
}

/// Application message envelopes: anything accepted re-encodes to an
/// envelope that decodes to the same value.
#[allow(clippy::panic)]
pub fn envelope(data: &[u8]) {
    if let Ok(e) = postern_core::message::Envelope::decode(data) {
        match e
            .encode()
            .map(|b| postern_core::message::Envelope::decode(&b))
        {
            Ok(Ok(again)) if again == e => {}
            _ => panic!("an accepted envelope does not round-trip"),
        }
    }
}

/// Attachment chunks, as received for a known attachment: a typed error
/// or an authentic chunk, never a panic.
pub fn chunk(data: &[u8]) {
    let aref = postern_core::message::AttachmentRef {
        id: [0x11; 16],
        key: zeroize::Zeroizing::new([0x22; 32]),
        size: 5000,
        digest: [0; 32],
    };
    let store = MemStore::new();
    let _ = postern_core::attachment::receive_chunk(&store, &aref, data);
}

/// Relay addresses: anything accepted prints back to the same string.
#[allow(clippy::panic)]
pub fn relay_address(data: &[u8]) {
    if let Ok(s) = core::str::from_utf8(data)
        && let Ok(a) = postern_core::RelayAddress::parse(s)
        && a.to_string() != s
    {
        panic!("a relay address is not canonical");
    }
}

/// Relay protocol frames, both directions (the data is also tried
/// zero-padded to a whole frame, to get past the size check).
pub fn relay_frame(data: &[u8]) {
    use postern_core::relay_proto::{decode_request, decode_response};
    let _ = decode_request(data);
    let _ = decode_response(data);
    let mut frame = vec![0u8; postern_core::consts::FRAME_BYTES];
    let n = data.len().min(frame.len());
    frame[..n].copy_from_slice(&data[..n]);
    let _ = decode_request(&frame);
    let _ = decode_response(&frame);
}

/// `postern:` invitation links.
#[allow(clippy::panic)]
pub fn invitation_link(data: &[u8]) {
    use postern_core::courier::Invitation;
    if let Ok(s) = core::str::from_utf8(data)
        && let Ok(inv) = Invitation::parse(s, NOW)
        && Invitation::parse(&inv.to_link(), NOW).ok().as_ref() != Some(&inv)
    {
        panic!("an accepted link does not round-trip");
    }
}

/// A receiver with one invitation queue, and the blob key for it.
pub struct Mailbox {
    /// Bob's store with the queue.
    pub store: MemStore,
    /// The queue's recipient id.
    pub queue: [u8; 16],
    /// Its blob key.
    pub blob_key: [u8; 32],
}

fn build_mailbox() -> Result<Mailbox, postern_core::Error> {
    use postern_core::courier::{self, CreatedQueue, QueueKeys};
    let mut rng = ChaCha20Rng::seed_from_u64(0xB10B);
    let mut store = pair().bob.clone();
    let keys = QueueKeys::generate(&mut rng);
    let blob_key = *keys.blob_key;
    let q = CreatedQueue {
        relay: postern_core::RelayAddress::parse("postern-relay://127.0.0.1:4443")?,
        keys,
        recipient_id: [0x51; 16],
        sender_id: [0x52; 16],
    };
    let (_, _, cs) = courier::create_invitation(&store, &q, "Bob", NOW, &mut rng)?;
    store.commit(cs)?;
    Ok(Mailbox {
        store,
        queue: q.recipient_id,
        blob_key,
    })
}

/// The shared mailbox (built on first use).
#[allow(clippy::expect_used)]
pub fn mailbox() -> &'static Mailbox {
    static M: OnceLock<Mailbox> = OnceLock::new();
    M.get_or_init(|| build_mailbox().expect("fuzz fixture"))
}

/// The content of queue blobs (past the AEAD): fragments, chunks,
/// introductions. A typed error or a result, never a panic.
pub fn blob_inner(data: &[u8]) {
    let m = mailbox();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let inner = &data[..data.len().min(postern_core::courier::BLOB_INNER_BYTES)];
    if let Ok(blob) = postern_core::courier::seal_raw_blob(&m.blob_key, inner, &mut rng) {
        let _ = postern_core::courier::receive(&m.store, &m.queue, &blob, NOW, &mut rng);
    }
}

/// Voice clips (Opus in Ogg).
pub fn voice(data: &[u8]) {
    let _ = postern_media::voice::validate_voice_clip(data);
}

/// Encrypted backups: the header before any key derivation, and the
/// decrypted contents restored into an empty store.
pub fn backup(data: &[u8]) {
    let _ = postern_core::backup::header(data);
    if let Ok(cs) = postern_core::backup::restore(data) {
        let mut s = MemStore::new();
        let _ = s.commit(cs);
    }
}

/// Browser recordings (WebM/Opus) to remux into Ogg.
pub fn webm(data: &[u8]) {
    if let Ok(ogg) = postern_media::voice::from_webm(data) {
        // What comes out always passes the voice check.
        let _ = postern_media::voice::validate_voice_clip(&ogg).map(|_| ());
    }
}

/// The browser profile's stored data: its header, and a sealed value
/// whose contents are the input (sealed with a known key so that the
/// checks behind the AEAD are reached), loaded like a profile.
pub fn browser_profile(data: &[u8]) {
    use postern_browser::sealed::{Header, Keys, SealedStore, seal_raw, slot_of};
    if let Ok(h) = Header::parse(data) {
        let _ = h.params();
    }
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let (natural, body) = rest.split_at(rest.len().min(16));
    let keys = Keys::new(&[3; 32]);
    let slot = slot_of(&keys, kind, natural);
    let Some(value) = seal_raw(&keys, &slot, 1, kind, body) else {
        return;
    };
    let _ = SealedStore::load(
        Keys::new(&[3; 32]),
        [(slot, value), ("slot".to_owned(), data.to_vec())],
        Box::new(|b: &mut [u8]| b.fill(7)),
    );
}

/// Images to re-encode.
pub fn image(data: &[u8]) {
    let _ = postern_media::images::sanitize_image(data);
}

/// Scanned safety-number codes.
#[allow(clippy::panic)]
pub fn safety_number(data: &[u8]) {
    let p = pair();
    if let Ok((true, _)) = e2e::verify_scanned(&p.alice, &p.bob_addr, data) {
        // Only Bob's real code may match.
        match e2e::safety_number(&p.bob, &p.alice_addr) {
            Ok(theirs) if theirs.scannable == data => {}
            _ => panic!("a foreign code verified"),
        }
    }
}

/// A small signed directory and its authority key, built once.
pub struct DirectorySeed {
    /// The pinned authority key.
    pub pinned: postern_core::crypto::signal::AuthorityPublic,
    /// A valid signed directory.
    pub directory: Vec<u8>,
}

fn build_directory_seed() -> Result<DirectorySeed, postern_core::Error> {
    use postern_core::crypto::signal::AuthoritySecret;
    use postern_core::directory;
    let mut rng = ChaCha20Rng::seed_from_u64(0xD1);
    let authority = AuthoritySecret::generate(&mut rng);
    let mut descriptors = Vec::new();
    for port in [7001u16, 7002] {
        let key = AuthoritySecret::generate(&mut rng);
        let addr = postern_core::RelayAddress::new("127.0.0.1", port, Some([7; 32]))?;
        let keys = [(1, [1u8; 32]), (2, [2u8; 32])];
        descriptors.push(directory::sign_descriptor(
            &key,
            &addr,
            directory::ROLES_ALL,
            &keys,
            NOW,
            &mut rng,
        )?);
    }
    let directory = directory::sign_directory(
        "fuzz",
        &descriptors,
        NOW,
        NOW.plus_millis(86_400_000),
        86_400,
        UnixTime(0),
        &authority,
        &mut rng,
    )?;
    Ok(DirectorySeed {
        pinned: authority.public()?,
        directory,
    })
}

/// The shared directory seed (built on first use).
pub fn directory_seed() -> &'static DirectorySeed {
    static SEED: OnceLock<DirectorySeed> = OnceLock::new();
    SEED.get_or_init(|| match build_directory_seed() {
        Ok(s) => s,
        Err(e) => unreachable_setup(e),
    })
}

/// Signed directories, relay descriptors and `GetDirectory` blobs: never
/// a panic; a directory that verifies is the seed itself (nothing else
/// carries the pinned authority's signature); blobs round-trip.
#[allow(clippy::panic)]
pub fn directory(data: &[u8]) {
    use postern_core::directory::{self as dir, Directory};
    let seed = directory_seed();
    let pinned = core::slice::from_ref(&seed.pinned);
    if let Ok(d) = Directory::verify(data, pinned, 1, NOW) {
        // Only the seed's body carries the pinned authority's signature.
        if Directory::verify(&seed.directory, pinned, 1, NOW).ok() != Some(d) {
            panic!("a foreign directory verified");
        }
    }
    let _ = dir::verify_descriptor(data);
    if let Ok(blobs) = dir::to_blobs(data)
        && dir::from_blobs(&blobs).ok().as_deref() != Some(data)
    {
        panic!("directory blobs do not round-trip");
    }
    let blobs: Vec<postern_core::relay_proto::Blob> = data
        .chunks(postern_core::consts::BLOB_BYTES)
        .map(|c| {
            let mut b = Box::new([0u8; postern_core::consts::BLOB_BYTES]);
            for (d, s) in b.iter_mut().zip(c) {
                *d = *s;
            }
            b
        })
        .collect();
    let _ = dir::from_blobs(&blobs);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mutations(seed: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![seed.to_vec(), Vec::new()];
        for cut in (0..seed.len()).step_by(seed.len().max(40) / 40) {
            out.push(seed[..cut].to_vec());
            let mut flipped = seed.to_vec();
            flipped[cut] ^= 0x5a;
            out.push(flipped);
        }
        out
    }

    #[test]
    fn directory_target_survives_seed_mutations() {
        let seed = directory_seed();
        for m in mutations(&seed.directory) {
            directory(&m);
        }
        let blobs = postern_core::directory::to_blobs(&seed.directory).unwrap();
        for m in mutations(&blobs[0][..]) {
            directory(&m);
        }
    }

    #[test]
    fn targets_survive_seed_mutations() {
        let p = pair();
        let sn = e2e::safety_number(&p.bob, &p.alice_addr).unwrap();
        for m in mutations(&p.bundle) {
            bundle(&m);
            records(&m);
        }
        for m in mutations(&p.message) {
            session_message(&m);
        }
        let mut one = postern_core::ChangeSet::new();
        one.add_message(postern_core::store::StoredMessage {
            peer: p.alice_addr,
            id: [1; 16],
            direction: postern_core::store::Direction::Incoming,
            timestamp: postern_core::UnixTime(5),
            body: zeroize::Zeroizing::new(b"hello".to_vec()),
        });
        let mut profile = vec![b'm'];
        profile.extend_from_slice(&[1; 16]);
        profile.extend_from_slice(&postern_core::backup::encode_set(&one));
        for m in mutations(&profile) {
            browser_profile(&m);
        }
        for m in mutations(&p.sealed) {
            sealed_message(&m);
        }
        for m in mutations(&sn.scannable) {
            safety_number(&m);
        }
        for m in mutations(&padding::pad(b"seed").unwrap()) {
            padding(&m);
        }
        let env = postern_core::message::Envelope {
            id: [1; 16],
            sent_at: NOW,
            reply_to: None,
            body: postern_core::message::Body::Text(postern_core::message::Text("seed".into())),
        };
        for m in mutations(&env.encode().unwrap()) {
            envelope(&m);
        }
        for m in
            mutations(b"postern-relay://[::1]:4443#AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        {
            relay_address(&m);
        }
        let aref = postern_core::message::AttachmentRef {
            id: [0x11; 16],
            key: zeroize::Zeroizing::new([0x22; 32]),
            size: 5000,
            digest: [0; 32],
        };
        let c = postern_core::attachment::seal_chunk(&aref, 0, &[7; 1536]).unwrap();
        for m in mutations(&c) {
            chunk(&m);
        }
        let exported = postern_core::backup::export(
            &p.alice,
            b"pw",
            postern_core::crypto::kdf::KdfParams::TEST_ONLY,
            &mut <ChaCha20Rng as SeedableRng>::seed_from_u64(3),
        )
        .unwrap();
        for m in mutations(&exported[..200]) {
            backup(&m);
        }
        let plain = prost::Message::encode_to_vec(&proto::ProfileBackup {
            records: vec![proto::profile_backup::RecordEntry {
                namespace: 1,
                key: vec![],
                schema: 1,
                value: vec![1, 2, 3],
            }],
            ..Default::default()
        });
        for m in mutations(&plain) {
            backup(&m);
        }
        for m in mutations(include_bytes!(
            "../../../media/tests/data/chromium-mediarecorder.webm"
        )) {
            webm(&m);
        }
        for m in mutations(b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00OpusHead") {
            voice(&m);
        }
        for m in mutations(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01") {
            image(&m);
        }
        // The pair's stores were never modified by any of it.
        assert!(e2e::open(&p.bob, &p.sealed, NOW, &mut rng(b"x")).is_ok());
    }
}
