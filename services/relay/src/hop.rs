//! What an onion hop does with one packet, decided without I/O: check
//! that the relay holds a key for the packet's epoch, peel one Sphinx
//! layer, judge the replay tag, and map what the layer says to a
//! [`Decision`]: send it on to a next relay after a delay, drop it (cover
//! that ends here), or last-hop [`Work`] (store a blob and acknowledge it,
//! store an acknowledgement, send a loop back).
//!
//! [`crate::mix::Mix`] runs these functions with tokio around them (timers,
//! links to next hops, the on-disk replay cache); the mesh simulation runs
//! the same functions in virtual time. Keeping the decision here means the
//! simulation tests the relay's real rules, not a copy.

use postern_core::RelayAddress;
use postern_core::consts::SPHINX_PACKET_BYTES;
use postern_core::crypto::sphinx::{NodeSecret, Packet};
use postern_core::onion::{self, HopAction};
use postern_core::relay_proto::{Blob, ErrorCode, QueueId};
use postern_core::time::UnixTime;
use rand::{CryptoRng, RngCore};

use crate::replay::Seen;

/// What the mix needs to know about the network and its own keys.
pub trait Topology: Send + Sync {
    /// This relay's Sphinx node id (None until it is in a directory).
    fn own_id(&self) -> Option<[u8; 32]>;
    /// Where the relay with this id listens, from the current directory.
    fn address_of(&self, id: &[u8; 32]) -> Option<RelayAddress>;
    /// This relay's Sphinx secret for `epoch`, if it holds one now.
    fn secret(&self, epoch: u32, now: UnixTime) -> Option<zeroize::Zeroizing<[u8; 32]>>;
    /// Whether tags of `epoch` may still be needed (its key is held).
    fn keep_epoch(&self, epoch: u32, now: UnixTime) -> bool;
}

/// What a last hop does with a packet, once its replay tag is on disk.
#[derive(Debug)]
pub enum Work {
    /// Put this blob into the queue, then send the acknowledgement.
    Deliver {
        /// The queue's sender id.
        sender_id: QueueId,
        /// The blob.
        blob: Blob,
        /// The sender's reply block for the acknowledgement.
        ack: Option<onion::AckBlock>,
    },
    /// Store these two blobs (an acknowledgement for one of this relay's
    /// users) in the queue.
    Reply {
        /// The acknowledgement queue's sender id.
        queue: QueueId,
        /// The two blobs.
        blobs: [Blob; 2],
    },
    /// A loop packet: send it back through its reply block.
    Loop {
        /// The reply block.
        ack: onion::AckBlock,
    },
}

/// The hop's decision for one packet.
#[derive(Debug)]
pub enum Decision {
    /// Hold it `delay_ms`, then hand it to `next`.
    Forward {
        /// The next relay.
        next: RelayAddress,
        /// The mixing delay drawn for it.
        delay_ms: u64,
        /// The peeled packet.
        packet: Packet,
    },
    /// Cover traffic that ends here: nothing to do.
    Drop,
    /// Last-hop work, to run once the tag is durable.
    Later(Work),
}

/// A packet with one layer peeled: its replay tag and what the layer says.
/// Judge the tag (against the replay cache) before calling [`decide`].
pub struct Opened {
    /// The replay tag.
    pub tag: [u8; 32],
    action: HopAction,
}

impl core::fmt::Debug for Opened {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Opened")
    }
}

/// Peels one layer of a packet for `epoch` at `now`. Refused: no directory
/// yet (`NoDirectory`), no key for the epoch (`UnknownEpoch`), a packet
/// that does not authenticate or decode (`BadPacket`).
pub fn open<R: RngCore + CryptoRng>(
    topology: &dyn Topology,
    mean_delay_ms: u64,
    epoch: u32,
    packet: &[u8; SPHINX_PACKET_BYTES],
    now: UnixTime,
    rng: &mut R,
) -> Result<Opened, ErrorCode> {
    let own = topology.own_id().ok_or(ErrorCode::NoDirectory)?;
    let secret = topology.secret(epoch, now).ok_or(ErrorCode::UnknownEpoch)?;
    let key = NodeSecret::from_bytes(&secret);
    let (tag, action) =
        onion::peel(packet, &key, &own, mean_delay_ms, rng).map_err(|_| ErrorCode::BadPacket)?;
    Ok(Opened { tag, action })
}

/// The decision for an opened packet whose tag the replay cache judged
/// `seen`. Refused: a replay (`ReplayedPacket`), a full cache
/// (`RateLimited`), a next hop not in the directory (`UnknownNextHop`).
pub fn decide(topology: &dyn Topology, opened: Opened, seen: Seen) -> Result<Decision, ErrorCode> {
    match seen {
        Seen::Fresh => {}
        Seen::Replay => return Err(ErrorCode::ReplayedPacket),
        Seen::Full => return Err(ErrorCode::RateLimited),
    }
    Ok(match opened.action {
        HopAction::Deliver {
            sender_id,
            blob,
            ack,
        } => Decision::Later(Work::Deliver {
            sender_id,
            blob,
            ack,
        }),
        HopAction::Drop => Decision::Drop,
        HopAction::Loop { ack } => Decision::Later(Work::Loop { ack }),
        HopAction::Reply { queue, id, payload } => Decision::Later(Work::Reply {
            queue,
            blobs: onion::reply_blobs(&id, &payload),
        }),
        HopAction::Forward {
            next,
            delay_ms,
            packet,
        } => Decision::Forward {
            next: topology
                .address_of(&next)
                .ok_or(ErrorCode::UnknownNextHop)?,
            delay_ms,
            packet,
        },
    })
}

/// The packet that carries an acknowledgement (or a loop) back through a
/// reply block, and the relay it goes to first. A bad block, or a first
/// hop not in the directory, is refused.
pub fn acknowledgement(
    topology: &dyn Topology,
    block: &onion::AckBlock,
) -> Result<(RelayAddress, Packet), ErrorCode> {
    let (first, packet) = onion::ack_packet(block).map_err(|_| ErrorCode::BadPacket)?;
    let next = topology
        .address_of(&first)
        .ok_or(ErrorCode::UnknownNextHop)?;
    Ok((next, packet))
}
