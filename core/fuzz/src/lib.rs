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

/// Voice clips (Opus in Ogg): the container check, and the packet
/// extraction the player runs before handing packets to libopus.
pub fn voice(data: &[u8]) {
    let _ = postern_media::voice::validate_voice_clip(data);
    let _ = postern_media::voice::packets(data);
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

/// Both sides' safety numbers for the pair (Alice's view of Bob, Bob's
/// view of Alice), computed once: each takes 5,200 SHA-512 iterations
/// per side, which would otherwise be the whole cost of every input.
pub fn safety_numbers() -> &'static (
    postern_core::crypto::signal::SafetyNumber,
    postern_core::crypto::signal::SafetyNumber,
) {
    static SN: OnceLock<(
        postern_core::crypto::signal::SafetyNumber,
        postern_core::crypto::signal::SafetyNumber,
    )> = OnceLock::new();
    SN.get_or_init(|| {
        let p = pair();
        match (
            e2e::safety_number(&p.alice, &p.bob_addr),
            e2e::safety_number(&p.bob, &p.alice_addr),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => unreachable_setup(e),
        }
    })
}

/// The scannable safety-number code as libsignal encodes it (protobuf
/// `CombinedFingerprints`), declared here only to check what a code that
/// verified carries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CombinedFingerprints {
    /// Format version.
    #[prost(uint32, optional, tag = "1")]
    pub version: Option<u32>,
    /// The scanning side's fingerprint as the code's owner sees it.
    #[prost(message, optional, tag = "2")]
    pub local: Option<LogicalFingerprint>,
    /// The other side's.
    #[prost(message, optional, tag = "3")]
    pub remote: Option<LogicalFingerprint>,
}

/// One side's fingerprint in a scannable code.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogicalFingerprint {
    /// The fingerprint bytes.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub content: Option<Vec<u8>>,
}

/// Scanned safety-number codes: parsed and compared with ours (what
/// `e2e::verify_scanned` does after computing ours). A code that verifies
/// carries exactly the version and fingerprints of Bob's real code (its
/// bytes may differ: protobuf allows other encodings of the same fields,
/// e.g. a repeated field, and libsignal compares the decoded fields), and
/// then the whole `verify_scanned` path verifies it too.
#[allow(clippy::panic)]
pub fn safety_number(data: &[u8]) {
    use prost::Message as _;
    let (ours, theirs) = safety_numbers();
    if let Ok(true) = postern_core::crypto::signal::compare_scanned(ours, data) {
        let fields = |b: &[u8]| CombinedFingerprints::decode(b).ok();
        if fields(data).is_none() || fields(data) != fields(&theirs.scannable) {
            panic!("a foreign code verified");
        }
        let p = pair();
        if !matches!(
            e2e::verify_scanned(&p.alice, &p.bob_addr, data),
            Ok((true, _))
        ) {
            panic!("the real code did not verify");
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

/// A relay's Sphinx key and id, and a valid packet for it (built once).
pub struct Hop {
    /// The relay's key.
    pub key: postern_core::crypto::sphinx::NodeSecret,
    /// Its node id.
    pub id: postern_core::crypto::sphinx::NodeId,
    /// A valid packet for it, delivering a blob to a queue.
    pub packet: postern_core::crypto::sphinx::Packet,
}

fn build_hop() -> Result<Hop, postern_core::Error> {
    use postern_core::crypto::sphinx::{self, NodeSecret};
    let mut rng = ChaCha20Rng::seed_from_u64(0x5F);
    let key = NodeSecret::generate(&mut rng);
    let id = [0x33; 32];
    let blob = Box::new([0x44; postern_core::consts::BLOB_BYTES]);
    let path = postern_core::onion::Path {
        nodes: vec![postern_core::onion::Node {
            id,
            address: postern_core::RelayAddress::parse("postern-relay://127.0.0.1:4443")?,
            roles: postern_core::onion::ROLE_MAILBOX,
            key: key.public(),
        }],
    };
    let packet = postern_core::onion::wrap(&path, &[0x55; 16], &blob, &mut rng)?;
    // The packet opens at this hop (else the fixture is wrong).
    sphinx::process(&packet, &key)?;
    Ok(Hop { key, id, packet })
}

/// The shared hop (built on first use).
#[allow(clippy::expect_used)]
pub fn hop() -> &'static Hop {
    static H: OnceLock<Hop> = OnceLock::new();
    H.get_or_init(|| build_hop().expect("fuzz fixture"))
}

/// Sphinx packets as a relay receives them (`onion::peel`, what
/// `postern-relay` runs on every packet). The first byte chooses how the
/// rest is used: 0, as the whole packet (zero-padded); 1, XORed into a
/// valid packet (header and payload mutations that keep its size); else,
/// as the plaintext of a valid one-hop packet, so that the relay's parsing
/// of what a final hop finds (kind, queue, blob, reply block) is reached.
pub fn sphinx_packet(data: &[u8]) {
    use postern_core::consts::SPHINX_PACKET_BYTES;
    use postern_core::crypto::sphinx;
    let h = hop();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let packet: sphinx::Packet = match mode {
        0 => {
            let mut p = Box::new([0u8; SPHINX_PACKET_BYTES]);
            for (d, s) in p.iter_mut().zip(rest) {
                *d = *s;
            }
            p
        }
        1 => {
            let mut p = h.packet.clone();
            // Two bytes of offset, then the bytes to XOR in there.
            let Some((&[a, b], xor)) = rest.split_first_chunk::<2>() else {
                return;
            };
            let at = usize::from(u16::from_be_bytes([a, b])) % SPHINX_PACKET_BYTES;
            for (d, s) in p.iter_mut().skip(at).zip(xor) {
                *d ^= *s;
            }
            p
        }
        _ => {
            let hops = [sphinx::Hop {
                id: h.id,
                key: h.key.public(),
            }];
            let plain = &rest[..rest.len().min(sphinx::PAYLOAD_PLAINTEXT_BYTES)];
            match sphinx::build(&hops, &h.id, plain, &mut rng) {
                Ok(p) => p,
                Err(_) => return,
            }
        }
    };
    let _ = postern_core::onion::peel(&packet, &h.key, &h.id, 0, &mut rng);
}

/// A reply block and its recovery material (built once).
pub struct ReplyBlock {
    /// The block.
    pub block: Box<[u8; postern_core::crypto::sphinx::SURB_BYTES]>,
    /// Its creator's recovery material.
    pub recovery: postern_core::crypto::sphinx::SurbRecovery,
    /// The two relays before [`hop`] on its route (keys and ids).
    pub before: Vec<(
        postern_core::crypto::sphinx::NodeSecret,
        postern_core::crypto::sphinx::NodeId,
    )>,
}

fn build_reply_block() -> Result<ReplyBlock, postern_core::Error> {
    use postern_core::crypto::sphinx;
    let mut rng = ChaCha20Rng::seed_from_u64(0x5B);
    let h = hop();
    // Three hops, as acknowledgement paths have (one-hop blocks are
    // refused: their replies travel in the clear), ending at `hop`.
    let before: Vec<(sphinx::NodeSecret, sphinx::NodeId)> = (1..=2u8)
        .map(|i| (sphinx::NodeSecret::generate(&mut rng), [i; 32]))
        .collect();
    let mut hops: Vec<sphinx::Hop> = before
        .iter()
        .map(|(k, id)| sphinx::Hop {
            id: *id,
            key: k.public(),
        })
        .collect();
    hops.push(sphinx::Hop {
        id: h.id,
        key: h.key.public(),
    });
    // The destination is an acknowledgement queue (16 bytes) and the
    // relay that holds it (the first 16 bytes of its id).
    let mut destination = [0x66; 32];
    destination[16..].copy_from_slice(&h.id[..16]);
    let (block, recovery) = sphinx::build_surb(&hops, &destination, [9; 16], &mut rng)?;
    Ok(ReplyBlock {
        block,
        recovery,
        before,
    })
}

/// The shared reply block (built on first use).
#[allow(clippy::expect_used)]
pub fn reply_block() -> &'static ReplyBlock {
    static S: OnceLock<ReplyBlock> = OnceLock::new();
    S.get_or_init(|| build_reply_block().expect("fuzz fixture"))
}

/// Reply blocks (SURBs: carried inside packets, used by a mailbox relay
/// to acknowledge), reply recovery material, acknowledgement payloads and
/// the pairing of acknowledgement-queue blobs. Nothing but the block's
/// own acknowledgement opens with its recovery material.
#[allow(clippy::panic)]
pub fn surb(data: &[u8]) {
    use postern_core::consts::{BLOB_BYTES, SPHINX_PAYLOAD_BYTES};
    use postern_core::crypto::sphinx::{self, SurbRecovery};
    let s = reply_block();
    let mut block = Box::new([0u8; sphinx::SURB_BYTES]);
    for (d, x) in block.iter_mut().zip(data) {
        *d = *x;
    }
    let _ = postern_core::onion::ack_packet(&block);
    // The real block XORed with the input: its header and keys mutated.
    let mut mutated = s.block.clone();
    for (d, x) in mutated.iter_mut().zip(data) {
        *d ^= *x;
    }
    let _ = postern_core::onion::ack_packet(&mutated);
    let _ = SurbRecovery::from_bytes(data);
    let mut payload = Box::new([0u8; SPHINX_PAYLOAD_BYTES]);
    for (d, x) in payload.iter_mut().zip(data) {
        *d = *x;
    }
    if postern_core::onion::open_ack(&s.recovery, &payload).is_ok() {
        panic!("a forged acknowledgement opened");
    }
    let blobs: Vec<[u8; BLOB_BYTES]> = data
        .chunks(BLOB_BYTES)
        .take(4)
        .map(|c| {
            let mut b = [0u8; BLOB_BYTES];
            for (d, x) in b.iter_mut().zip(c) {
                *d = *x;
            }
            b
        })
        .collect();
    let refs: Vec<&[u8; BLOB_BYTES]> = blobs.iter().collect();
    for (_, p, _) in postern_core::onion::pair_replies(&refs) {
        if postern_core::onion::open_ack(&s.recovery, &p).is_ok() {
            panic!("a forged acknowledgement opened");
        }
    }
}

/// QR codes read from an image a user pastes or photographs, and what the
/// client does with a scanned code (an invitation link, or a safety-number
/// code to verify). The first byte chooses: 0, an image file (PNG/JPEG);
/// else a greyscale frame whose width is the next byte.
pub fn qr(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let codes = if mode == 0 {
        postern_media::qr::scan_image(rest)
    } else {
        let Some((&w, luma)) = rest.split_first() else {
            return;
        };
        let w = u32::from(w.max(1));
        let h = u32::try_from(luma.len() / w as usize).unwrap_or(0);
        let used = (w * h) as usize;
        postern_media::qr::scan_luma(w, h, &luma[..used.min(luma.len())])
    };
    for code in codes.into_iter().flatten() {
        if let Ok(s) = core::str::from_utf8(&code) {
            let _ = postern_core::courier::Invitation::parse(s, NOW);
        }
        let _ = postern_core::crypto::signal::compare_scanned(&safety_numbers().0, &code);
    }
}

/// Fragment reassembly across several blobs of one queue: the input is
/// cut into up to eight fragments (each a length byte, an index/total
/// byte, and data), sealed under the queue's key and received in order,
/// each change set committed as the client would. A typed error or a
/// result each time, never a panic; the fixture store is never changed.
pub fn fragments(data: &[u8]) {
    use postern_core::courier::{BLOB_INNER_BYTES, FRAGMENT_DATA_BYTES, receive, seal_raw_blob};
    let m = mailbox();
    let mut store = m.store.clone();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut rest = data;
    for _ in 0..8 {
        let Some((&[len, it, r], tail)) = rest.split_first_chunk::<3>() else {
            return;
        };
        // A length byte scaled to the whole fragment size.
        let n = (usize::from(len) * FRAGMENT_DATA_BYTES / 255).min(tail.len());
        let (body, tail) = tail.split_at(n);
        rest = tail;
        let mut inner = Vec::with_capacity(BLOB_INNER_BYTES);
        inner.push(1); // a fragment
        inner.extend_from_slice(&[r & 3; 16]); // one of four messages
        inner.push(it >> 4); // index
        inner.push(it & 0x0f); // total
        inner.extend_from_slice(&u16::try_from(n.max(1)).unwrap_or(1).to_be_bytes());
        inner.extend_from_slice(body);
        inner.truncate(BLOB_INNER_BYTES);
        let Ok(blob) = seal_raw_blob(&m.blob_key, &inner, &mut rng) else {
            return;
        };
        if let Ok((_, cs)) = receive(&store, &m.queue, &blob, NOW, &mut rng) {
            let _ = store.commit(cs);
        }
    }
}

/// The native profile's header file (beside the SQLCipher database):
/// JSON, strict and bounded; a typed error or a validated header.
pub fn profile_header(data: &[u8]) {
    let _ = postern_store::inspect_header(data);
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

    /// `data` as a QR frame for the `qr` target: 2 pixels per module and
    /// a 4-module quiet zone.
    fn qr_frame(data: &[u8]) -> Vec<u8> {
        let m = postern_media::qr::encode(data).unwrap();
        let side = (m.width + 8) * 2;
        let mut out = vec![1, u8::try_from(side).unwrap()];
        for y in 0..side {
            for x in 0..side {
                let (mx, my) = ((x / 2).wrapping_sub(4), (y / 2).wrapping_sub(4));
                let dark = mx < m.width && my < m.width && m.dark[my * m.width + mx];
                out.push(if dark { 0 } else { 255 });
            }
        }
        out
    }

    /// A valid native profile header (what `postern-store` writes).
    const HEADER: &[u8] = br#"{"format":1,"profile_id":"00112233445566778899aabbccddeeff","key_source":"passphrase","kdf":{"algorithm":"argon2id-v19","memory_kib":65536,"iterations":3,"parallelism":1,"salt":"00112233445566778899aabbccddeeff"},"key_check":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}"#;

    /// One seed per new target, reaching past its first checks.
    fn new_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let p = pair();
        let h = hop();
        let mut out = Vec::new();
        let mut raw = vec![0];
        raw.extend_from_slice(&h.packet[..]);
        out.push(("sphinx_packet", raw));
        out.push(("sphinx_packet", vec![1, 0, 40, 0x80]));
        let mut deliver = vec![2, postern_core::onion::ONION_VERSION, 1];
        deliver.extend_from_slice(&[0x55; 16]);
        deliver.extend_from_slice(&[0x44; 64]);
        out.push(("sphinx_packet", deliver));
        out.push(("surb", reply_block().block.to_vec()));
        out.push(("surb", reply_block().recovery.to_bytes().to_vec()));
        let sn = e2e::safety_number(&p.bob, &p.alice_addr).unwrap();
        out.push(("qr", qr_frame(&sn.scannable)));
        out.push(("qr", qr_frame(b"postern:invite")));
        let mut frags = Vec::new();
        for (i, t) in [(0u8, 2u8), (1, 2)] {
            frags.extend_from_slice(&[16, (i << 4) | t, 1]);
            frags.extend_from_slice(&[7; 128]);
        }
        out.push(("fragments", frags));
        out.push(("profile_header", HEADER.to_vec()));
        out
    }

    /// Found by the `safety_number` target: Bob's code with its version
    /// field repeated (protobuf: the last one counts) verifies, because
    /// libsignal compares decoded fields, not bytes. Not a weakness — the
    /// fingerprints are Bob's — so the target's property is about fields.
    #[test]
    fn a_repeated_field_encoding_of_the_real_code_verifies_and_is_no_foreign_code() {
        let input = include_bytes!("../regressions/safety_number-duplicate-version.bin");
        let (ours, theirs) = safety_numbers();
        assert_ne!(&input[..], &theirs.scannable[..]);
        // The declaration above matches libsignal's encoding.
        let real = <CombinedFingerprints as prost::Message>::decode(&theirs.scannable[..]).unwrap();
        assert_eq!(real.version, Some(2));
        assert_eq!(real.local.unwrap().content.unwrap().len(), 32);
        assert_eq!(real.remote.unwrap().content.unwrap().len(), 32);
        assert!(postern_core::crypto::signal::compare_scanned(ours, input).unwrap());
        safety_number(input);
        // A real change to a fingerprint is still refused.
        let mut changed = input.to_vec();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert!(!matches!(
            postern_core::crypto::signal::compare_scanned(ours, &changed),
            Ok(true)
        ));
        safety_number(&changed);
    }

    #[test]
    fn new_targets_survive_seed_mutations() {
        for (target, seed) in new_seeds() {
            let run: fn(&[u8]) = match target {
                "sphinx_packet" => sphinx_packet,
                "surb" => surb,
                "qr" => qr,
                "fragments" => fragments,
                _ => profile_header,
            };
            for m in mutations(&seed) {
                run(&m);
            }
        }
        // The stores behind the targets were never modified.
        let p = pair();
        assert!(e2e::open(&p.bob, &p.sealed, NOW, &mut rng(b"x")).is_ok());
    }

    /// The fixtures are real: each seed reaches the code its target is
    /// for (else the fuzzer would only ever see the first rejection).
    #[test]
    #[allow(clippy::panic)]
    fn seeds_reach_past_the_first_check() {
        use postern_core::onion::HopAction;
        let h = hop();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let action = postern_core::onion::process(&h.packet, &h.key, &h.id, 0, &mut rng).unwrap();
        assert!(matches!(action, HopAction::Deliver { .. }));
        // The reply block's own acknowledgement, carried over its three
        // hops, opens with its recovery material; the same payload as it
        // leaves the block's user does not.
        let r = reply_block();
        let (_, mut packet) = postern_core::onion::ack_packet(&r.block).unwrap();
        for (key, id) in &r.before {
            let HopAction::Forward { packet: next, .. } =
                postern_core::onion::process(&packet, key, id, 0, &mut rng).unwrap()
            else {
                panic!("not forwarded");
            };
            packet = next;
        }
        let HopAction::Reply { payload, .. } =
            postern_core::onion::process(&packet, &h.key, &h.id, 0, &mut rng).unwrap()
        else {
            panic!("not a reply");
        };
        postern_core::onion::open_ack(&r.recovery, &payload).unwrap();
        let mut plain = [0u8; postern_core::consts::SPHINX_PAYLOAD_BYTES];
        plain[16..19].copy_from_slice(&[postern_core::onion::ONION_VERSION, 3, 1]);
        assert!(postern_core::onion::open_ack(&r.recovery, &plain).is_err());
        // The `surb` target's finding: this payload opened a one-hop
        // block's recovery; the target now runs clean over it.
        let found = include_bytes!("../regressions/surb-one-hop-plain-reply.bin");
        assert_eq!(&found[..], &plain[..19]);
        surb(found);
        // The QR frame scans back to the safety-number code, which verifies.
        let p = pair();
        let sn = e2e::safety_number(&p.bob, &p.alice_addr).unwrap();
        let frame = qr_frame(&sn.scannable);
        let w = u32::from(frame[1]);
        let codes = postern_media::qr::scan_luma(w, w, &frame[2..]).unwrap();
        assert_eq!(codes, vec![sn.scannable.clone()]);
        assert!(
            e2e::verify_scanned(&p.alice, &p.bob_addr, &codes[0])
                .unwrap()
                .0
        );
        // The header seed is a valid header, and any change to it is not.
        assert_eq!(
            postern_store::inspect_header(HEADER).unwrap(),
            postern_store::KeySource::Passphrase
        );
        assert!(postern_store::inspect_header(&HEADER[1..]).is_err());
        // Two fragments of one message are stored as partial, then complete.
        let m = mailbox();
        let mut store = m.store.clone();
        let mut inner = vec![1];
        inner.extend_from_slice(&[5; 16]);
        inner.extend_from_slice(&[0, 2, 0, 3, 9, 9, 9]);
        let blob = postern_core::courier::seal_raw_blob(&m.blob_key, &inner, &mut rng).unwrap();
        let (got, cs) =
            postern_core::courier::receive(&store, &m.queue, &blob, NOW, &mut rng).unwrap();
        assert!(matches!(got, postern_core::courier::Received::Partial));
        store.commit(cs).unwrap();
    }

    /// Writes every target's seeds into `corpus/<target>/` (run once when a
    /// target is added: `cargo test -p postern-core-fuzz --lib -- --ignored`).
    #[test]
    #[ignore = "writes the seed corpus"]
    fn write_seed_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (i, (target, seed)) in new_seeds().into_iter().enumerate() {
            let d = dir.join(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("seed-{i}")), seed).unwrap();
        }
        for (target, seed) in old_seeds() {
            let d = dir.join(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("seed"), seed).unwrap();
        }
    }

    /// One seed for each of the earlier targets.
    fn old_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let p = pair();
        let sn = e2e::safety_number(&p.bob, &p.alice_addr).unwrap();
        let env = postern_core::message::Envelope {
            id: [1; 16],
            sent_at: NOW,
            reply_to: None,
            body: postern_core::message::Body::Text(postern_core::message::Text("seed".into())),
        };
        let aref = postern_core::message::AttachmentRef {
            id: [0x11; 16],
            key: zeroize::Zeroizing::new([0x22; 32]),
            size: 5000,
            digest: [0; 32],
        };
        vec![
            ("bundle", p.bundle.clone()),
            ("records", p.bundle.clone()),
            ("session_message", p.message.clone()),
            ("sealed_message", p.sealed.clone()),
            ("safety_number", sn.scannable.clone()),
            ("padding", padding::pad(b"seed").unwrap().to_vec()),
            ("envelope", env.encode().unwrap().to_vec()),
            (
                "relay_address",
                b"postern-relay://[::1]:4443#AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_vec(),
            ),
            (
                "chunk",
                postern_core::attachment::seal_chunk(&aref, 0, &[7; 1536]).unwrap(),
            ),
            ("directory", directory_seed().directory.clone()),
            (
                "webm",
                include_bytes!("../../../media/tests/data/chromium-mediarecorder.webm").to_vec(),
            ),
            (
                "voice",
                b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00OpusHead".to_vec(),
            ),
            (
                "image",
                b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01".to_vec(),
            ),
        ]
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
