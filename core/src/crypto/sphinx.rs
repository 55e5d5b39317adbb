//! The Sphinx facade: the only module that imports `sphinx-packet`
//! (Nym's implementation, pinned `=0.8.0`).
//!
//! Every packet is exactly [`SPHINX_PACKET_BYTES`]: a 348-byte header
//! (routing for up to five hops, each layer authenticated by an HMAC) and
//! a [`SPHINX_PAYLOAD_BYTES`] payload under a wide-block cipher (Lioness),
//! peeled one layer per hop. Randomness comes from the caller: the
//! packet's initial secret is drawn from the RNG passed in (the library's
//! own RNG is never used), and per-hop delays are chosen by the caller.

use rand_core::{CryptoRng, RngCore};
use sphinx_packet::SphinxPacket;
use sphinx_packet::crypto::{PrivateKey, PublicKey};
use sphinx_packet::header::delays::Delay;
use sphinx_packet::payload::Payload;
use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
use sphinx_packet::surb::{SURB, SURBMaterial, SurbReplyRecovery};
use sphinx_packet::version::SINGLE_SEED_SURB_VERSION;
use sphinx_packet::{ProcessedPacketData, SphinxPacketBuilder};
use zeroize::Zeroizing;

use crate::consts::{SPHINX_PACKET_BYTES, SPHINX_PAYLOAD_BYTES};
use crate::error::{Error, Result};

/// One onion packet.
pub type Packet = Box<[u8; SPHINX_PACKET_BYTES]>;

/// A hop's id (the Sphinx node address): 32 bytes.
pub type NodeId = [u8; 32];

/// Longest path Sphinx headers of this size can carry.
pub const MAX_HOPS: usize = sphinx_packet::constants::MAX_PATH_LENGTH;

/// Plaintext bytes a packet's payload carries to the last hop.
pub const PAYLOAD_PLAINTEXT_BYTES: usize =
    SPHINX_PAYLOAD_BYTES - sphinx_packet::payload::PAYLOAD_OVERHEAD_SIZE;

/// Size of a single-use reply block: header, first hop, one payload seed.
pub const SURB_BYTES: usize = crate::consts::SPHINX_HEADER_BYTES + 32 + 16;

/// A reply block's identifier (non-zero), delivered to its last hop.
pub type SurbId = [u8; 16];

/// A relay's X25519 key pair for one epoch (secret). `Debug` redacts.
pub struct NodeSecret(PrivateKey);

impl core::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NodeSecret(<redacted>)")
    }
}

impl NodeSecret {
    /// A fresh key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> NodeSecret {
        let mut b = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(b.as_mut());
        NodeSecret(PrivateKey::from(*b))
    }

    /// From its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> NodeSecret {
        NodeSecret(PrivateKey::from(*bytes))
    }

    /// The 32 secret bytes.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key published in the directory.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }
}

/// One hop of a path.
#[derive(Clone, PartialEq, Eq)]
pub struct Hop {
    /// The relay's id.
    pub id: NodeId,
    /// Its X25519 public key for the packet's epoch.
    pub key: [u8; 32],
}

impl core::fmt::Debug for Hop {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Hop(..)")
    }
}

fn bad(reason: &'static str) -> Error {
    Error::BadPacket { reason }
}

/// Builds a packet that travels `hops` in order and delivers `plaintext`
/// (at most [`PAYLOAD_PLAINTEXT_BYTES`]) to the last hop, addressed to
/// `destination` there.
pub fn build<R: RngCore + CryptoRng>(
    hops: &[Hop],
    destination: &NodeId,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Packet> {
    if hops.is_empty() || hops.len() > MAX_HOPS {
        return Err(Error::Bug("onion path length"));
    }
    if plaintext.len() > PAYLOAD_PLAINTEXT_BYTES {
        return Err(Error::Bug("onion payload too large"));
    }
    let route: Vec<Node> = hops
        .iter()
        .map(|h| Node::new(NodeAddressBytes::from_bytes(h.id), PublicKey::from(h.key)))
        .collect();
    // Delays are the relays' own choice (drawn per packet at each hop),
    // so the header carries zeros.
    let delays = vec![Delay::new_from_millis(0); hops.len()];
    let dest = Destination::new(DestinationAddressBytes::from_bytes(*destination), [0u8; 16]);
    let initial = NodeSecret::generate(rng);
    let packet = SphinxPacketBuilder::new()
        .with_payload_size(SPHINX_PAYLOAD_BYTES)
        .with_initial_secret(&initial.0)
        .build_packet(plaintext, &route, &dest, &delays)
        .map_err(|_| Error::Bug("sphinx packet construction"))?;
    let bytes = packet.to_bytes();
    let arr: [u8; SPHINX_PACKET_BYTES] = bytes
        .try_into()
        .map_err(|_| Error::Bug("sphinx packet size"))?;
    Ok(Box::new(arr))
}

/// What a hop makes of a packet.
#[derive(Debug)]
pub enum Processed {
    /// Send `packet` on to `next`.
    Forward {
        /// The next hop's id.
        next: NodeId,
        /// The packet for it (same size).
        packet: Packet,
    },
    /// This hop is the last of a reply block's route: the payload stays
    /// sealed for the block's creator.
    Reply {
        /// The destination the creator named.
        destination: NodeId,
        /// The reply block's identifier.
        id: SurbId,
        /// The sealed payload.
        payload: Box<[u8; SPHINX_PAYLOAD_BYTES]>,
    },
    /// This hop is the last: deliver.
    Final {
        /// The destination named by the sender.
        destination: NodeId,
        /// The payload plaintext.
        plaintext: Zeroizing<Vec<u8>>,
    },
}

/// A packet's replay tag: derived (HKDF, inside `sphinx-packet`) from the
/// Diffie-Hellman secret this hop shares with the packet, so every
/// encoding of the packet's group element that yields the same secret
/// (X25519 ignores the top bit, and non-canonical encodings exist) has the
/// same tag. The raw element bytes must not serve as a tag: a copy with the
/// top bit flipped would pass the header MAC as a "new" packet.
pub type ReplayTag = [u8; 32];

/// Peels one layer with this hop's key, returning the packet's replay tag
/// with what to do next. Any tampering with the header fails its MAC here;
/// tampering with the payload is caught at the last hop (its leading zero
/// block no longer decrypts to zeros).
pub fn peel(
    packet: &[u8; SPHINX_PACKET_BYTES],
    key: &NodeSecret,
) -> Result<(ReplayTag, Processed)> {
    let p = SphinxPacket::from_bytes(&packet[..]).map_err(|_| bad("undecodable"))?;
    let secret = p.header.compute_expanded_shared_secret(&key.0);
    let tag: ReplayTag = *secret.replay_tag();
    let done = p
        .process_with_expanded_secret(&secret)
        .map_err(|_| bad("header authentication"))?;
    Ok((tag, processed(done.data)?))
}

/// [`peel`] without the tag (for building and checking packets; a relay
/// needs the tag).
pub fn process(packet: &[u8; SPHINX_PACKET_BYTES], key: &NodeSecret) -> Result<Processed> {
    peel(packet, key).map(|(_, p)| p)
}

fn processed(data: ProcessedPacketData) -> Result<Processed> {
    match data {
        ProcessedPacketData::ForwardHop {
            next_hop_packet,
            next_hop_address,
            ..
        } => {
            let bytes = next_hop_packet.to_bytes();
            let arr: [u8; SPHINX_PACKET_BYTES] = bytes.try_into().map_err(|_| bad("size"))?;
            Ok(Processed::Forward {
                next: next_hop_address.to_bytes(),
                packet: Box::new(arr),
            })
        }
        ProcessedPacketData::FinalHop {
            destination,
            identifier,
            payload,
        } if identifier != [0u8; 16] => {
            let arr: [u8; SPHINX_PAYLOAD_BYTES] =
                payload.as_bytes().try_into().map_err(|_| bad("size"))?;
            Ok(Processed::Reply {
                destination: destination.as_bytes(),
                id: identifier,
                payload: Box::new(arr),
            })
        }
        ProcessedPacketData::FinalHop {
            destination,
            payload,
            ..
        } => {
            let plaintext = payload
                .recover_plaintext()
                .map_err(|_| bad("payload authentication"))?;
            Ok(Processed::Final {
                destination: destination.as_bytes(),
                plaintext: Zeroizing::new(plaintext),
            })
        }
    }
}

/// Recovery material for a reply block (secret; kept by its creator).
pub struct SurbRecovery(SurbReplyRecovery);

impl core::fmt::Debug for SurbRecovery {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SurbRecovery(<redacted>)")
    }
}

impl SurbRecovery {
    /// Serialized (identifier and hop seeds; secret).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// Restores serialized recovery material.
    pub fn from_bytes(bytes: &[u8]) -> Result<SurbRecovery> {
        SurbReplyRecovery::from_bytes(bytes)
            .map(SurbRecovery)
            .map_err(|_| Error::Malformed {
                what: "reply recovery",
            })
    }

    /// Opens a reply's sealed payload; wrong material or a tampered
    /// payload is an error.
    pub fn open(&self, payload: &[u8; SPHINX_PAYLOAD_BYTES]) -> Result<Zeroizing<Vec<u8>>> {
        let p = Payload::from_bytes(&payload[..]).map_err(|_| bad("reply payload"))?;
        self.0
            .recover_plaintext(p)
            .map(Zeroizing::new)
            .map_err(|_| bad("reply authentication"))
    }
}

/// Fewest hops a reply block may have. A reply's payload is sealed by
/// whoever uses the block under the last hop's payload key (carried in the
/// block), and every hop then strips a layer; with one hop the two cancel,
/// so the payload reaches that hop in the clear and anyone can make one
/// that "opens" (found by the `surb` fuzz target). From two hops on, only
/// the creator, who holds every hop's key, can open it, and a forged
/// payload fails its zero-prefix check.
pub const MIN_SURB_HOPS: usize = 2;

/// Builds a single-use reply block over `hops` (at least
/// [`MIN_SURB_HOPS`]) to `destination` with identifier `id` (non-zero),
/// and its recovery material.
pub fn build_surb<R: RngCore + CryptoRng>(
    hops: &[Hop],
    destination: &NodeId,
    id: SurbId,
    rng: &mut R,
) -> Result<(Box<[u8; SURB_BYTES]>, SurbRecovery)> {
    if hops.len() < MIN_SURB_HOPS || hops.len() > MAX_HOPS || id == [0u8; 16] {
        return Err(Error::Bug("reply block parameters"));
    }
    let route: Vec<Node> = hops
        .iter()
        .map(|h| Node::new(NodeAddressBytes::from_bytes(h.id), PublicKey::from(h.key)))
        .collect();
    let material = SURBMaterial::new(
        route,
        vec![Delay::new_from_millis(0); hops.len()],
        Destination::new(DestinationAddressBytes::from_bytes(*destination), id),
        SINGLE_SEED_SURB_VERSION,
    );
    let initial = NodeSecret::generate(rng);
    let (surb, recovery) = SURB::new_recoverable(initial.0, material)
        .map_err(|_| Error::Bug("reply block construction"))?;
    let arr: [u8; SURB_BYTES] = surb
        .to_bytes()
        .try_into()
        .map_err(|_| Error::Bug("reply block size"))?;
    Ok((Box::new(arr), SurbRecovery(recovery)))
}

/// Uses a reply block (from the network: it may be hostile) to send
/// `plaintext` back; returns the first hop and the packet.
pub fn use_surb(surb: &[u8; SURB_BYTES], plaintext: &[u8]) -> Result<(NodeId, Packet)> {
    if plaintext.len() > PAYLOAD_PLAINTEXT_BYTES {
        return Err(Error::Bug("reply too large"));
    }
    let s = SURB::from_bytes(&surb[..]).map_err(|_| bad("reply block"))?;
    let (packet, first) = s
        .use_surb(plaintext, SPHINX_PAYLOAD_BYTES)
        .map_err(|_| bad("reply block"))?;
    let arr: [u8; SPHINX_PACKET_BYTES] = packet
        .to_bytes()
        .try_into()
        .map_err(|_| bad("reply size"))?;
    Ok((first.to_bytes(), Box::new(arr)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(3)
    }

    fn path(r: &mut rand_chacha::ChaCha20Rng, n: usize) -> (Vec<NodeSecret>, Vec<Hop>) {
        let secrets: Vec<NodeSecret> = (0..n).map(|_| NodeSecret::generate(r)).collect();
        let hops = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| Hop {
                id: [i as u8 + 1; 32],
                key: s.public(),
            })
            .collect();
        (secrets, hops)
    }

    /// X25519 ignores the top bit of the packet's group element, so a copy
    /// with that bit flipped passes the header MAC and peels exactly like
    /// the original. Its replay tag must be the original's, or a relay
    /// would take the copy for a new packet and forward it again.
    #[test]
    fn a_copy_with_the_unused_top_bit_flipped_has_the_same_replay_tag() {
        let mut r = rng();
        let (secrets, hops) = path(&mut r, 3);
        let p = build(&hops, &[9; 32], b"once", &mut r).unwrap();
        let mut copy = p.clone();
        copy[31] ^= 0x80;
        assert_ne!(p[..], copy[..]);
        let (tag, a) = peel(&p, &secrets[0]).unwrap();
        let (copy_tag, b) = peel(&copy, &secrets[0]).unwrap();
        let (Processed::Forward { packet: pa, .. }, Processed::Forward { packet: pb, .. }) = (a, b)
        else {
            panic!("the first hop forwards");
        };
        assert_eq!(pa, pb, "the copy peels like the original");
        assert_eq!(tag, copy_tag);
        assert_ne!(tag[..], p[..32], "the tag is not the raw element");
    }

    #[test]
    fn rejects_tampering_wrong_keys_and_bad_sizes() {
        let mut r = rng();
        let (secrets, hops) = path(&mut r, 3);
        let p = build(&hops, &[9; 32], b"hello", &mut r).unwrap();
        // Wrong key at the first hop.
        assert!(matches!(
            process(&p, &secrets[1]),
            Err(Error::BadPacket { .. })
        ));
        // A flipped header byte anywhere fails the MAC.
        for i in [0usize, 40, 100, 347] {
            let mut t = p.clone();
            t[i] ^= 1;
            assert!(process(&t, &secrets[0]).is_err(), "header byte {i}");
        }
        // A flipped payload byte passes the mixes but not the last hop.
        let mut t = p.clone();
        t[1000] ^= 1;
        let mut cur = t;
        let mut out = None;
        for s in &secrets {
            match process(&cur, s) {
                Ok(Processed::Forward { packet, .. }) => cur = packet,
                other => {
                    out = Some(other);
                    break;
                }
            }
        }
        assert!(matches!(out, Some(Err(Error::BadPacket { .. }))));
        // Too much plaintext, too many hops.
        assert!(
            build(
                &hops,
                &[9; 32],
                &vec![0; PAYLOAD_PLAINTEXT_BYTES + 1],
                &mut r
            )
            .is_err()
        );
        let (_, six) = path(&mut r, MAX_HOPS + 1);
        assert!(build(&six, &[9; 32], b"x", &mut r).is_err());
        // Random bytes.
        let mut junk = [0u8; SPHINX_PACKET_BYTES];
        r.fill_bytes(&mut junk);
        assert!(process(&junk, &secrets[0]).is_err());
    }

    #[test]
    fn three_hops_deliver_and_every_link_has_the_same_size() {
        let mut r = rng();
        let (secrets, hops) = path(&mut r, 3);
        let msg = vec![0xA5; PAYLOAD_PLAINTEXT_BYTES];
        let mut cur = build(&hops, &[9; 32], &msg, &mut r).unwrap();
        let mut seen_tags = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            let (tag, done) = peel(&cur, s).unwrap();
            seen_tags.push(tag);
            match done {
                Processed::Reply { .. } => panic!("not a reply"),
                Processed::Forward { next, packet } => {
                    assert_eq!(next, hops[i + 1].id);
                    assert_eq!(packet.len(), SPHINX_PACKET_BYTES);
                    cur = packet;
                }
                Processed::Final {
                    destination,
                    plaintext,
                } => {
                    assert_eq!(i, 2);
                    assert_eq!(destination, [9; 32]);
                    assert_eq!(plaintext.as_slice(), msg.as_slice());
                }
            }
        }
        // Tags differ per hop (the element is re-blinded at each hop, and
        // each hop's secret differs).
        seen_tags.sort();
        seen_tags.dedup();
        assert_eq!(seen_tags.len(), 3);
    }

    #[test]
    fn a_reply_block_carries_an_answer_back_to_its_creator_only() {
        let mut r = rng();
        let (secrets, hops) = path(&mut r, 3);
        let (surb, rec) = build_surb(&hops, &[7; 32], [5; 16], &mut r).unwrap();
        let (first, mut cur) = use_surb(&surb, b"ack").unwrap();
        assert_eq!(first, hops[0].id);
        for (i, s) in secrets.iter().enumerate() {
            match process(&cur, s).unwrap() {
                Processed::Forward { packet, .. } => cur = packet,
                Processed::Reply {
                    destination,
                    id,
                    payload,
                } => {
                    assert_eq!(i, 2);
                    assert_eq!((destination, id), ([7; 32], [5; 16]));
                    assert_eq!(rec.open(&payload).unwrap().as_slice(), b"ack");
                    // Other recovery material does not open it; a flipped
                    // byte is caught.
                    let (_, other) = build_surb(&hops, &[7; 32], [5; 16], &mut r).unwrap();
                    assert!(other.open(&payload).is_err());
                    let mut t = payload.clone();
                    t[100] ^= 1;
                    assert!(rec.open(&t).is_err());
                    let back = SurbRecovery::from_bytes(&rec.to_bytes()).unwrap();
                    assert!(back.open(&payload).is_ok());
                }
                Processed::Final { .. } => panic!("a reply is not a delivery"),
            }
        }
        // A hostile reply block is an error, not a panic.
        let mut junk = [0u8; SURB_BYTES];
        r.fill_bytes(&mut junk);
        let _ = use_surb(&junk, b"x");
        assert!(build_surb(&hops, &[7; 32], [0; 16], &mut r).is_err());
        // One hop is refused: its reply would travel in the clear.
        assert!(build_surb(&hops[..1], &[7; 32], [5; 16], &mut r).is_err());
    }

    /// Why one-hop reply blocks are refused: sphinx-packet's recovery is
    /// the identity for them, so a payload anyone writes in the plain
    /// format opens; with two hops or more the same payload does not.
    #[test]
    fn a_forged_reply_opens_only_with_a_one_hop_block() {
        let mut r = rng();
        let plain = {
            let mut p = [0u8; SPHINX_PAYLOAD_BYTES];
            p[16..19].copy_from_slice(&[1, 3, 1]);
            p
        };
        let (_, hops) = path(&mut r, 3);
        let material = |n: usize| {
            let route: Vec<Node> = hops[..n]
                .iter()
                .map(|h| Node::new(NodeAddressBytes::from_bytes(h.id), PublicKey::from(h.key)))
                .collect();
            SURBMaterial::new(
                route,
                vec![Delay::new_from_millis(0); n],
                Destination::new(DestinationAddressBytes::from_bytes([7; 32]), [5; 16]),
                SINGLE_SEED_SURB_VERSION,
            )
        };
        let one = SURB::new_recoverable(NodeSecret::generate(&mut r).0, material(1))
            .map(|(_, rec)| SurbRecovery(rec))
            .unwrap();
        assert_eq!(one.open(&plain).unwrap().as_slice(), &[1, 3]);
        for n in MIN_SURB_HOPS..=3 {
            let (_, rec) = build_surb(&hops[..n], &[7; 32], [5; 16], &mut r).unwrap();
            assert!(rec.open(&plain).is_err(), "{n} hops");
        }
    }

    #[test]
    fn secret_debug_redacts() {
        let s = NodeSecret::from_bytes(&[0x42; 32]);
        assert!(!format!("{s:?}").contains("66"));
    }
}
