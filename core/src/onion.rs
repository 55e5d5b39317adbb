//! Onion routing, sans IO: paths chosen from the directory, blobs wrapped
//! for their mailbox relay, and what a relay does with a packet.
//!
//! A blob bound for a queue on relay M travels entry → mix(es) → M, each
//! hop chosen at random per packet (entry: a relay with the entry role,
//! mixes: relays with the mix role, all distinct and different from M).
//! The entry relay learns the sender's connection and the next hop; a
//! mix learns only its neighbours; M learns the previous hop, the queue
//! and the (sealed) blob. Every packet is [`SPHINX_PACKET_BYTES`](crate::consts::SPHINX_PACKET_BYTES) on
//! every link.
//!
//! Final payload (inside the last Sphinx layer):
//! `version (1) ‖ kind (1: deliver) ‖ sender_id (16) ‖ blob (2,048)`.

use rand_core::{CryptoRng, RngCore};

use crate::consts::{BLOB_BYTES, QUEUE_ID_BYTES};
use crate::crypto::sphinx::{self, Hop, NodeId, NodeSecret, Packet};
use crate::error::{Error, Result};
use crate::relay_address::RelayAddress;
use crate::relay_proto::{Blob, QueueId};

/// Onion payload format version.
pub const ONION_VERSION: u8 = 1;
/// Fewest hops a path may have (entry, mix, mailbox).
pub const MIN_HOPS: usize = 3;
/// Default hops per path.
pub const DEFAULT_HOPS: usize = 3;
/// Largest mean mixing delay a relay may be configured with.
pub const MAX_MEAN_DELAY_MS: u64 = 60_000;
/// Longest delay one hop holds a packet (the exponential tail is cut).
pub const MAX_HOP_DELAY_MS: u64 = 10 * MAX_MEAN_DELAY_MS;

const KIND_DELIVER: u8 = 1;
const KIND_DELIVER_ACK: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_DROP: u8 = 4;
const KIND_LOOP: u8 = 5;
const FINAL_BYTES: usize = 2 + QUEUE_ID_BYTES + BLOB_BYTES;
const FINAL_ACK_BYTES: usize = FINAL_BYTES + sphinx::SURB_BYTES;

/// A reply block for a delivery acknowledgement (from the packet).
pub type AckBlock = Box<[u8; sphinx::SURB_BYTES]>;

/// A relay as path selection needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    /// Sphinx node id.
    pub id: NodeId,
    /// Where it listens.
    pub address: RelayAddress,
    /// Role bits ([`ROLE_ENTRY`], [`ROLE_MIX`], [`ROLE_MAILBOX`]).
    pub roles: u32,
    /// Its Sphinx public key for the epoch in use.
    pub key: [u8; 32],
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Node({})", self.address)
    }
}

pub use crate::directory::{ROLE_ENTRY, ROLE_MAILBOX, ROLE_MIX};

/// The relays of a verified directory that hold a Sphinx key for `epoch`.
pub fn nodes(dir: &crate::directory::Directory, epoch: u32) -> Vec<Node> {
    dir.relays
        .iter()
        .filter_map(|r| {
            let key = r
                .sphinx_keys
                .iter()
                .find(|(e, _)| *e == epoch)
                .map(|(_, k)| *k)?;
            Some(Node {
                id: r.id,
                address: r.address.clone(),
                roles: r.roles,
                key,
            })
        })
        .collect()
}

/// A path: the relays a packet visits, in order (the last holds the queue).
#[derive(Debug, Clone)]
pub struct Path {
    /// The hops.
    pub nodes: Vec<Node>,
}

impl Path {
    /// Where the sender connects.
    pub fn entry(&self) -> Option<&Node> {
        self.nodes.first()
    }
}

fn pick<'a, R: RngCore + CryptoRng>(candidates: &[&'a Node], rng: &mut R) -> Option<&'a Node> {
    if candidates.is_empty() {
        return None;
    }
    // Rejection sampling: uniform without modulo bias.
    let n = u64::try_from(candidates.len()).ok()?;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let v = rng.next_u64();
        if v < zone {
            let i = usize::try_from(v % n).ok()?;
            return candidates.get(i).copied();
        }
    }
}

/// Chooses a fresh random path of `hops` relays ending at `mailbox`.
/// `avoid` lists relays not to use (e.g. one that just failed).
pub fn choose_path<R: RngCore + CryptoRng>(
    nodes: &[Node],
    mailbox: &RelayAddress,
    hops: usize,
    avoid: &[NodeId],
    rng: &mut R,
) -> Result<Path> {
    if !(MIN_HOPS..=sphinx::MAX_HOPS).contains(&hops) {
        return Err(Error::NoPath {
            reason: "hop count out of range",
        });
    }
    let last = nodes
        .iter()
        .find(|n| n.address == *mailbox && n.roles & ROLE_MAILBOX != 0)
        .ok_or(Error::NoPath {
            reason: "the mailbox relay is not in the directory",
        })?;
    let mut chosen: Vec<&Node> = Vec::with_capacity(hops);
    for position in 0..hops - 1 {
        let role = if position == 0 { ROLE_ENTRY } else { ROLE_MIX };
        let candidates: Vec<&Node> = nodes
            .iter()
            .filter(|n| {
                n.roles & role != 0
                    && n.id != last.id
                    && !avoid.contains(&n.id)
                    && !chosen.iter().any(|c| c.id == n.id)
            })
            .collect();
        let n = pick(&candidates, rng).ok_or(Error::NoPath {
            reason: "not enough relays for a path",
        })?;
        chosen.push(n);
    }
    chosen.push(last);
    Ok(Path {
        nodes: chosen.into_iter().cloned().collect(),
    })
}

/// Wraps `blob` for the queue `sender_id` on the path's last relay.
/// Returns the packet to hand to the path's entry relay.
pub fn wrap<R: RngCore + CryptoRng>(
    path: &Path,
    sender_id: &QueueId,
    blob: &Blob,
    rng: &mut R,
) -> Result<Packet> {
    let mut payload = Vec::with_capacity(FINAL_BYTES);
    payload.push(ONION_VERSION);
    payload.push(KIND_DELIVER);
    payload.extend_from_slice(sender_id);
    payload.extend_from_slice(&blob[..]);
    build_on(path, &payload, rng)
}

/// The Sphinx hops of a path.
fn hops_of(path: &Path) -> Vec<Hop> {
    path.nodes
        .iter()
        .map(|n| Hop {
            id: n.id,
            key: n.key,
        })
        .collect()
}

/// A packet over `path` delivering `payload` to its last relay.
fn build_on<R: RngCore + CryptoRng>(path: &Path, payload: &[u8], rng: &mut R) -> Result<Packet> {
    let last = path.nodes.last().ok_or(Error::Bug("empty path"))?;
    sphinx::build(&hops_of(path), &last.id, payload, rng)
}

/// A reply block over `ack_path` into the acknowledgement queue
/// `ack_queue` on the path's last relay, with a fresh non-zero id.
fn ack_block<R: RngCore + CryptoRng>(
    ack_path: &Path,
    ack_queue: &QueueId,
    rng: &mut R,
) -> Result<(Box<[u8; sphinx::SURB_BYTES]>, PendingAck)> {
    let home = ack_path.nodes.last().ok_or(Error::Bug("empty path"))?;
    let mut id = [0u8; 16];
    while id == [0u8; 16] {
        rng.fill_bytes(&mut id);
    }
    let (surb, recovery) = sphinx::build_surb(
        &hops_of(ack_path),
        &reply_destination(ack_queue, &home.id),
        id,
        rng,
    )?;
    Ok((surb, PendingAck { id, recovery }))
}

/// What a relay does with a packet it accepted.
#[derive(Debug)]
pub enum HopAction {
    /// Hold it for `delay_ms`, then send it to `next`.
    Forward {
        /// Next relay's id (look it up in the directory).
        next: NodeId,
        /// Mixing delay drawn here.
        delay_ms: u64,
        /// The packet for the next hop.
        packet: Packet,
    },
    /// Put `blob` into the queue with `sender_id` (this relay is the
    /// mailbox), then, if there is an acknowledgement block, send
    /// [`ack_packet`] back through it.
    Deliver {
        /// The queue's sender id.
        sender_id: QueueId,
        /// The blob.
        blob: Blob,
        /// Where to send the delivery acknowledgement.
        ack: Option<AckBlock>,
    },
    /// Cover traffic: discard.
    Drop,
    /// A loop cover packet: discard, and acknowledge through its block
    /// (the sender expects its loops back).
    Loop {
        /// Where to send the acknowledgement.
        ack: AckBlock,
    },
    /// A delivery acknowledgement reached its creator's home relay: store
    /// [`reply_blobs`] in the queue with `queue` (the creator's
    /// acknowledgement queue).
    Reply {
        /// The acknowledgement queue's sender id.
        queue: QueueId,
        /// The reply block's identifier.
        id: sphinx::SurbId,
        /// The sealed payload (only the creator can open it).
        payload: Box<[u8; crate::consts::SPHINX_PAYLOAD_BYTES]>,
    },
}

/// What the sender keeps to recognise a packet's acknowledgement.
#[derive(Debug)]
pub struct PendingAck {
    /// The reply block's identifier (how the acknowledgement is found).
    pub id: sphinx::SurbId,
    /// Opens the acknowledgement.
    pub recovery: sphinx::SurbRecovery,
}

/// The destination a reply block names: the acknowledgement queue's
/// sender id, then the first half of the home relay's id.
fn reply_destination(queue: &QueueId, home: &NodeId) -> NodeId {
    let mut d = [0u8; 32];
    let (q, h) = d.split_at_mut(QUEUE_ID_BYTES);
    q.copy_from_slice(queue);
    if let (Some(h), Some(src)) = (h.get_mut(..), home.get(..QUEUE_ID_BYTES)) {
        h.copy_from_slice(src);
    }
    d
}

/// Like [`wrap`], and asks the last hop to acknowledge delivery through a
/// reply block over `ack_path` (ending at the sender's home relay) into
/// the sender's acknowledgement queue `ack_queue`.
pub fn wrap_with_ack<R: RngCore + CryptoRng>(
    path: &Path,
    sender_id: &QueueId,
    blob: &Blob,
    ack_path: &Path,
    ack_queue: &QueueId,
    rng: &mut R,
) -> Result<(Packet, PendingAck)> {
    let (surb, pending) = ack_block(ack_path, ack_queue, rng)?;
    let mut payload = Vec::with_capacity(FINAL_ACK_BYTES);
    payload.push(ONION_VERSION);
    payload.push(KIND_DELIVER_ACK);
    payload.extend_from_slice(sender_id);
    payload.extend_from_slice(&blob[..]);
    payload.extend_from_slice(&surb[..]);
    Ok((build_on(path, &payload, rng)?, pending))
}

/// A cover packet (Loopix "drop" traffic): indistinguishable on the wire
/// from a real one, discarded by its last hop. `path` is random like any
/// other; the payload is random bytes.
pub fn cover_packet<R: RngCore + CryptoRng>(path: &Path, rng: &mut R) -> Result<Packet> {
    let mut payload = vec![0u8; FINAL_ACK_BYTES];
    rng.fill_bytes(&mut payload);
    if let Some(h) = payload.get_mut(..2) {
        h.copy_from_slice(&[ONION_VERSION, KIND_DROP]);
    }
    build_on(path, &payload, rng)
}

/// A loop cover packet (Loopix "loop" traffic): over `path` to a random
/// relay, which drops it and acknowledges through a reply block over
/// `ack_path` into the sender's acknowledgement queue, so the sender can
/// tell when its loops stop coming back.
pub fn loop_packet<R: RngCore + CryptoRng>(
    path: &Path,
    ack_path: &Path,
    ack_queue: &QueueId,
    rng: &mut R,
) -> Result<(Packet, PendingAck)> {
    let (surb, pending) = ack_block(ack_path, ack_queue, rng)?;
    let mut payload = vec![0u8; FINAL_BYTES];
    rng.fill_bytes(&mut payload);
    if let Some(h) = payload.get_mut(..2) {
        h.copy_from_slice(&[ONION_VERSION, KIND_LOOP]);
    }
    payload.extend_from_slice(&surb[..]);
    Ok((build_on(path, &payload, rng)?, pending))
}

/// Draws the wait before the next cover packet: exponential with a mean
/// of `60_000 / per_minute` ms (a Poisson process); `None` when off.
pub fn next_cover_delay_ms<R: RngCore + CryptoRng>(per_minute: u32, rng: &mut R) -> Option<u64> {
    if per_minute == 0 {
        return None;
    }
    Some(draw_delay_ms(60_000 / u64::from(per_minute).max(1), rng).max(1))
}

/// The acknowledgement a mailbox relay sends through a reply block.
pub fn ack_packet(block: &AckBlock) -> Result<(NodeId, Packet)> {
    sphinx::use_surb(block, &[ONION_VERSION, KIND_ACK])
}

/// Opens an acknowledgement with its pending record.
pub fn open_ack(
    pending: &sphinx::SurbRecovery,
    payload: &[u8; crate::consts::SPHINX_PAYLOAD_BYTES],
) -> Result<()> {
    let p = pending.open(payload)?;
    if p.as_slice() == [ONION_VERSION, KIND_ACK] {
        Ok(())
    } else {
        Err(Error::BadPacket {
            reason: "not an acknowledgement",
        })
    }
}

/// A reply payload as two queue blobs: the first 2,048 bytes; then the
/// remaining 512, the SHA-256 of the first blob (to pair them) and the
/// reply block's identifier, zero-padded.
pub fn reply_blobs(
    id: &sphinx::SurbId,
    payload: &[u8; crate::consts::SPHINX_PAYLOAD_BYTES],
) -> [Blob; 2] {
    let (head, tail) = payload.split_at(BLOB_BYTES);
    let mut a: Blob = Box::new([0u8; BLOB_BYTES]);
    a.copy_from_slice(head);
    let digest = crate::crypto::hash::sha256(&[&a[..]]);
    let mut b: Blob = Box::new([0u8; BLOB_BYTES]);
    let mut v = Vec::with_capacity(tail.len() + 48);
    v.extend_from_slice(tail);
    v.extend_from_slice(&digest);
    v.extend_from_slice(id);
    if let Some(dst) = b.get_mut(..v.len()) {
        dst.copy_from_slice(&v);
    }
    [a, b]
}

const REPLY_TAIL: usize = crate::consts::SPHINX_PAYLOAD_BYTES - BLOB_BYTES;

/// Pairs the blobs of an acknowledgement queue back into replies (any
/// order; blobs that pair with nothing are skipped). Returns, per reply,
/// its identifier, payload and the indices of its two blobs.
pub fn pair_replies(
    blobs: &[&[u8; BLOB_BYTES]],
) -> Vec<(
    sphinx::SurbId,
    Box<[u8; crate::consts::SPHINX_PAYLOAD_BYTES]>,
    [usize; 2],
)> {
    let heads: Vec<[u8; 32]> = blobs
        .iter()
        .map(|b| crate::crypto::hash::sha256(&[&b[..]]))
        .collect();
    let mut out = Vec::new();
    for (j, b) in blobs.iter().enumerate() {
        let (tail, rest) = b.split_at(REPLY_TAIL);
        let (digest, rest) = rest.split_at(32);
        let (id, zeros) = rest.split_at(16);
        if zeros.iter().any(|z| *z != 0) {
            continue;
        }
        let Some(i) = heads.iter().position(|h| h[..] == *digest) else {
            continue;
        };
        let (Some(head), Ok(id)) = (blobs.get(i), <[u8; 16]>::try_from(id)) else {
            continue;
        };
        let mut p = Box::new([0u8; crate::consts::SPHINX_PAYLOAD_BYTES]);
        let (ph, pt) = p.split_at_mut(BLOB_BYTES);
        ph.copy_from_slice(&head[..]);
        pt.copy_from_slice(tail);
        out.push((id, p, [i, j]));
    }
    out
}

/// Draws an exponentially distributed delay with the given mean (ms),
/// cut at [`MAX_HOP_DELAY_MS`]; a mean of 0 means no delay.
pub fn draw_delay_ms<R: RngCore + CryptoRng>(mean_ms: u64, rng: &mut R) -> u64 {
    if mean_ms == 0 {
        return 0;
    }
    // u in (0, 1], from 53 random bits.
    let bits = rng.next_u64() >> 11;
    #[allow(clippy::cast_precision_loss)]
    let u = (bits as f64 + 1.0) / ((1u64 << 53) as f64);
    #[allow(clippy::cast_precision_loss)]
    let d = -(mean_ms as f64) * u.ln();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let d = d.round() as u64;
    d.min(MAX_HOP_DELAY_MS)
}

/// [`peel`] without the replay tag (tests and tools; a relay needs it).
pub fn process<R: RngCore + CryptoRng>(
    packet: &[u8; crate::consts::SPHINX_PACKET_BYTES],
    key: &NodeSecret,
    own_id: &NodeId,
    mean_delay_ms: u64,
    rng: &mut R,
) -> Result<HopAction> {
    peel(packet, key, own_id, mean_delay_ms, rng).map(|(_, a)| a)
}

/// Processes a packet at the relay `own_id`, with its key for the packet's
/// epoch; returns the packet's replay tag (see [`sphinx::ReplayTag`]) with
/// what to do. The caller records the tag in its cache and acts only if it
/// was not there yet.
pub fn peel<R: RngCore + CryptoRng>(
    packet: &[u8; crate::consts::SPHINX_PACKET_BYTES],
    key: &NodeSecret,
    own_id: &NodeId,
    mean_delay_ms: u64,
    rng: &mut R,
) -> Result<(sphinx::ReplayTag, HopAction)> {
    let (tag, processed) = sphinx::peel(packet, key)?;
    Ok((tag, action(processed, own_id, mean_delay_ms, rng)?))
}

fn action<R: RngCore + CryptoRng>(
    processed: sphinx::Processed,
    own_id: &NodeId,
    mean_delay_ms: u64,
    rng: &mut R,
) -> Result<HopAction> {
    match processed {
        sphinx::Processed::Forward { next, packet } => {
            if next == *own_id {
                return Err(Error::BadPacket {
                    reason: "next hop is this relay",
                });
            }
            Ok(HopAction::Forward {
                next,
                delay_ms: draw_delay_ms(mean_delay_ms, rng),
                packet,
            })
        }
        sphinx::Processed::Reply {
            destination,
            id,
            payload,
        } => {
            let (queue, home) = destination.split_at(QUEUE_ID_BYTES);
            if own_id.get(..QUEUE_ID_BYTES) != Some(home) {
                return Err(Error::BadPacket {
                    reason: "reply for another relay",
                });
            }
            Ok(HopAction::Reply {
                queue: crate::codec::fixed(queue, "reply destination")?,
                id,
                payload,
            })
        }
        sphinx::Processed::Final {
            destination,
            plaintext,
        } => {
            if destination != *own_id {
                return Err(Error::BadPacket {
                    reason: "final hop is another relay",
                });
            }
            let p = plaintext.as_slice();
            let (head, rest) = p.split_first_chunk::<2>().ok_or(Error::BadPacket {
                reason: "final payload size",
            })?;
            if *head == [ONION_VERSION, KIND_DROP] && p.len() == FINAL_ACK_BYTES {
                return Ok(HopAction::Drop);
            }
            if *head == [ONION_VERSION, KIND_LOOP] && p.len() == FINAL_ACK_BYTES {
                let surb = p.get(FINAL_BYTES..).ok_or(Error::BadPacket {
                    reason: "final payload size",
                })?;
                let surb: [u8; sphinx::SURB_BYTES] =
                    surb.try_into().map_err(|_| Error::BadPacket {
                        reason: "final payload size",
                    })?;
                return Ok(HopAction::Loop {
                    ack: Box::new(surb),
                });
            }
            let (rest, ack) = match (*head, p.len()) {
                ([ONION_VERSION, KIND_DELIVER], FINAL_BYTES) => (rest, None),
                ([ONION_VERSION, KIND_DELIVER_ACK], FINAL_ACK_BYTES) => {
                    let (r, surb) = rest.split_at(rest.len() - sphinx::SURB_BYTES);
                    let surb: [u8; sphinx::SURB_BYTES] =
                        surb.try_into().map_err(|_| Error::BadPacket {
                            reason: "final payload size",
                        })?;
                    (r, Some(Box::new(surb)))
                }
                _ => {
                    return Err(Error::BadPacket {
                        reason: "final payload version or size",
                    });
                }
            };
            let (sid, blob) =
                rest.split_first_chunk::<QUEUE_ID_BYTES>()
                    .ok_or(Error::BadPacket {
                        reason: "final payload size",
                    })?;
            let blob: [u8; BLOB_BYTES] = blob.try_into().map_err(|_| Error::BadPacket {
                reason: "final payload size",
            })?;
            Ok(HopAction::Deliver {
                sender_id: *sid,
                blob: Box::new(blob),
                ack,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(5)
    }

    fn network(r: &mut rand_chacha::ChaCha20Rng, n: u8) -> (Vec<NodeSecret>, Vec<Node>) {
        let secrets: Vec<NodeSecret> = (0..n).map(|_| NodeSecret::generate(r)).collect();
        let nodes = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| Node {
                id: [i as u8 + 1; 32],
                address: RelayAddress::new("127.0.0.1", 7000 + i as u16, None).unwrap(),
                roles: ROLE_ENTRY | ROLE_MIX | ROLE_MAILBOX,
                key: s.public(),
            })
            .collect();
        (secrets, nodes)
    }

    #[test]
    fn rejects_impossible_paths() {
        let mut r = rng();
        let (_, nodes) = network(&mut r, 2);
        let m = nodes[0].address.clone();
        assert!(matches!(
            choose_path(&nodes, &m, 3, &[], &mut r),
            Err(Error::NoPath { .. })
        ));
        let (_, nodes) = network(&mut r, 5);
        let elsewhere = RelayAddress::new("127.0.0.1", 1, None).unwrap();
        assert!(choose_path(&nodes, &elsewhere, 3, &[], &mut r).is_err());
        assert!(choose_path(&nodes, &m, 2, &[], &mut r).is_err());
        assert!(choose_path(&nodes, &m, 6, &[], &mut r).is_err());
    }

    #[test]
    fn paths_are_distinct_random_and_end_at_the_mailbox() {
        let mut r = rng();
        let (_, nodes) = network(&mut r, 5);
        let m = nodes[2].address.clone();
        let mut entries = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let p = choose_path(&nodes, &m, 3, &[nodes[4].id], &mut r).unwrap();
            assert_eq!(p.nodes.len(), 3);
            assert_eq!(p.nodes[2].address, m);
            assert_ne!(p.nodes[0].id, p.nodes[1].id);
            assert!(
                p.nodes
                    .iter()
                    .take(2)
                    .all(|n| n.id != nodes[2].id && n.id != nodes[4].id)
            );
            entries.insert(p.nodes[0].id);
        }
        assert_eq!(entries.len(), 3, "every allowed entry gets used");
    }

    #[test]
    fn a_blob_crosses_three_hops_and_only_the_last_sees_it() {
        let mut r = rng();
        let (secrets, nodes) = network(&mut r, 5);
        let m = nodes[3].address.clone();
        let path = choose_path(&nodes, &m, 3, &[], &mut r).unwrap();
        let blob: Blob = Box::new([0xC3; BLOB_BYTES]);
        let mut packet = wrap(&path, &[7; 16], &blob, &mut r).unwrap();
        for (i, hop) in path.nodes.iter().enumerate() {
            let idx = nodes.iter().position(|n| n.id == hop.id).unwrap();
            // No hop before the last can find the queue id or blob in
            // what it holds.
            if i < 2 {
                assert!(!packet.windows(16).any(|w| w == [7u8; 16]));
                assert!(!packet.windows(64).any(|w| w.iter().all(|b| *b == 0xC3)));
            }
            match process(&packet, &secrets[idx], &hop.id, 0, &mut r).unwrap() {
                HopAction::Forward {
                    next,
                    delay_ms,
                    packet: p,
                } => {
                    assert_eq!(next, path.nodes[i + 1].id);
                    assert_eq!(delay_ms, 0);
                    packet = p;
                }
                HopAction::Reply { .. } | HopAction::Drop | HopAction::Loop { .. } => {
                    panic!("not a delivery")
                }
                HopAction::Deliver {
                    sender_id, blob: b, ..
                } => {
                    assert_eq!(i, 2);
                    assert_eq!(sender_id, [7; 16]);
                    assert_eq!(b, blob);
                }
            }
        }
    }

    /// Runs `packet` from `first` through the network until it ends.
    fn run(
        secrets: &[NodeSecret],
        nodes: &[Node],
        first: NodeId,
        mut packet: Packet,
        r: &mut rand_chacha::ChaCha20Rng,
    ) -> (NodeId, HopAction) {
        let mut at = first;
        loop {
            let i = nodes.iter().position(|n| n.id == at).unwrap();
            match process(&packet, &secrets[i], &at, 0, r).unwrap() {
                HopAction::Forward {
                    next, packet: p, ..
                } => {
                    at = next;
                    packet = p;
                }
                done => return (at, done),
            }
        }
    }

    #[test]
    fn a_delivery_is_acknowledged_through_a_reply_block_into_the_senders_queue() {
        let mut r = rng();
        let (secrets, nodes) = network(&mut r, 5);
        let (mailbox, home) = (nodes[3].address.clone(), nodes[0].address.clone());
        let path = choose_path(&nodes, &mailbox, 3, &[], &mut r).unwrap();
        let ack_path = choose_path(&nodes, &home, 3, &[], &mut r).unwrap();
        let blob: Blob = Box::new([0x11; BLOB_BYTES]);
        let (packet, pending) =
            wrap_with_ack(&path, &[7; 16], &blob, &ack_path, &[9; 16], &mut r).unwrap();
        let (at, done) = run(&secrets, &nodes, path.nodes[0].id, packet, &mut r);
        assert_eq!(at, nodes[3].id);
        let HopAction::Deliver {
            sender_id,
            blob: b,
            ack: Some(block),
        } = done
        else {
            panic!("expected a delivery with an acknowledgement block")
        };
        assert_eq!((sender_id, &b), ([7; 16], &blob));
        let (first, reply) = ack_packet(&block).unwrap();
        assert_eq!(first, ack_path.nodes[0].id);
        let (at, done) = run(&secrets, &nodes, first, reply, &mut r);
        assert_eq!(at, nodes[0].id);
        let HopAction::Reply { queue, id, payload } = done else {
            panic!("expected a reply")
        };
        assert_eq!((queue, id), ([9; 16], pending.id));
        // Stored as two blobs, possibly reordered among others, paired back.
        let [a, b2] = reply_blobs(&id, &payload);
        let junk: Blob = Box::new([3; BLOB_BYTES]);
        let got = pair_replies(&[&b2, &junk, &a]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, pending.id);
        assert_eq!(got[0].2, [2, 0]);
        open_ack(&pending.recovery, &got[0].1).unwrap();
        // Another packet's recovery does not open it.
        let (_, other) =
            wrap_with_ack(&path, &[7; 16], &blob, &ack_path, &[9; 16], &mut r).unwrap();
        assert!(open_ack(&other.recovery, &got[0].1).is_err());
    }

    #[test]
    fn cover_packets_look_like_real_ones_and_are_dropped_at_the_end() {
        let mut r = rng();
        let (secrets, nodes) = network(&mut r, 5);
        let path = choose_path(&nodes, &nodes[1].address, 3, &[], &mut r).unwrap();
        let p = cover_packet(&path, &mut r).unwrap();
        assert_eq!(p.len(), crate::consts::SPHINX_PACKET_BYTES);
        let (at, done) = run(&secrets, &nodes, path.nodes[0].id, p, &mut r);
        assert_eq!(at, nodes[1].id);
        assert!(matches!(done, HopAction::Drop));
        assert_eq!(next_cover_delay_ms(0, &mut r), None);
        // A loop comes back to its sender as an acknowledgement.
        let ack_path = choose_path(&nodes, &nodes[0].address, 3, &[], &mut r).unwrap();
        let (p, pending) = loop_packet(&path, &ack_path, &[4; 16], &mut r).unwrap();
        let (_, done) = run(&secrets, &nodes, path.nodes[0].id, p, &mut r);
        let HopAction::Loop { ack } = done else {
            panic!("expected a loop")
        };
        let (first, reply) = ack_packet(&ack).unwrap();
        let (_, done) = run(&secrets, &nodes, first, reply, &mut r);
        let HopAction::Reply { payload, .. } = done else {
            panic!("expected a reply")
        };
        open_ack(&pending.recovery, &payload).unwrap();
        assert!(next_cover_delay_ms(6, &mut r).is_some());
    }

    #[test]
    fn rejects_a_final_packet_for_another_relay() {
        let mut r = rng();
        let (secrets, nodes) = network(&mut r, 3);
        let path = Path {
            nodes: vec![nodes[0].clone()],
        };
        let p = wrap(&path, &[1; 16], &Box::new([0; BLOB_BYTES]), &mut r).unwrap();
        assert!(matches!(
            process(&p, &secrets[0], &nodes[1].id, 0, &mut r),
            Err(Error::BadPacket { .. })
        ));
    }

    #[test]
    fn delays_are_exponential_with_the_configured_mean() {
        let mut r = rng();
        assert_eq!(draw_delay_ms(0, &mut r), 0);
        let n = 20_000u64;
        let sum: u64 = (0..n).map(|_| draw_delay_ms(100, &mut r)).sum();
        let mean = sum / n;
        assert!((90..=110).contains(&mean), "mean {mean}");
    }
}
