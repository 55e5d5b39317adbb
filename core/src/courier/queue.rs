//! Our mailbox queues, and the routes to each contact's queue.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::codec::{self, local_proto as lp};
use crate::consts::{BLOB_BYTES, QUEUE_ID_BYTES};
use crate::crypto::signal::QueueSecret;
use crate::error::Result;
use crate::message::QueueAddress;
use crate::relay_address::RelayAddress;
use crate::relay_proto::{Blob, QueueId};
use crate::store::{ChangeSet, KvStore, Namespace};
use crate::time::UnixTime;

use super::*;

/// Secret material for a queue we are about to create on a relay.
#[derive(Debug)]
pub struct QueueKeys {
    /// Signs our commands for the queue.
    pub queue_key: QueueSecret,
    /// Seals what is put into it.
    pub blob_key: Zeroizing<[u8; 32]>,
}

impl QueueKeys {
    /// Fresh keys.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> QueueKeys {
        let mut blob_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(blob_key.as_mut());
        QueueKeys {
            queue_key: QueueSecret::generate(rng),
            blob_key,
        }
    }
}

/// A queue the relay created for us.
#[derive(Debug)]
pub struct CreatedQueue {
    /// The relay.
    pub relay: RelayAddress,
    /// Its keys.
    pub keys: QueueKeys,
    /// Recipient-side id.
    pub recipient_id: QueueId,
    /// Sender-side id.
    pub sender_id: QueueId,
}

/// One of our queues, as the network code needs it.
#[derive(Debug)]
pub struct OwnQueue {
    /// The relay.
    pub relay: RelayAddress,
    /// Recipient-side id.
    pub recipient_id: QueueId,
    /// Signs fetch/ack/subscribe.
    pub queue_key: QueueSecret,
    /// The contact it belongs to (none for an unused invitation queue).
    pub contact: Option<Address>,
    /// Whether it holds onion delivery acknowledgements (read them with
    /// [`receive_acks`], not [`receive`]).
    pub acks: bool,
}

pub(super) fn queue_record(q: &CreatedQueue, now: UnixTime) -> lp::QueueRecord {
    lp::QueueRecord {
        relay: q.relay.to_string(),
        recipient_id: q.recipient_id.to_vec(),
        sender_id: q.sender_id.to_vec(),
        queue_key: q.keys.queue_key.to_bytes().to_vec(),
        blob_key: q.keys.blob_key.to_vec(),
        contact: Vec::new(),
        invitation: false,
        invite_expires_at_ms: 0,
        invite_used: false,
        created_at_ms: now.millis(),
        acks: false,
    }
}

/// Every queue we read from.
pub fn own_queues(store: &dyn KvStore) -> Result<Vec<OwnQueue>> {
    let mut out = Vec::new();
    for k in store.keys(Namespace::Queue)? {
        let r: lp::QueueRecord =
            load(store, Namespace::Queue, &k)?.ok_or(corrupt(Namespace::Queue))?;
        out.push(OwnQueue {
            relay: RelayAddress::parse(&r.relay).map_err(|_| corrupt(Namespace::Queue))?,
            recipient_id: codec::fixed(&r.recipient_id, "queue record")
                .map_err(|_| corrupt(Namespace::Queue))?,
            queue_key: QueueSecret::from_bytes(&r.queue_key)
                .map_err(|_| corrupt(Namespace::Queue))?,
            contact: if r.contact.is_empty() {
                None
            } else {
                Some(Address::from_slice(&r.contact).ok_or(corrupt(Namespace::Queue))?)
            },
            acks: r.acks,
        });
    }
    Ok(out)
}

/// Where we send to a contact.
#[derive(Debug, Clone)]
pub struct Route {
    /// Their queue.
    pub queue: QueueAddress,
    /// The name they suggested for themselves.
    pub display_name: String,
}

/// The route to `peer`, if we have one.
pub fn route(store: &dyn KvStore, peer: &Address) -> Result<Option<Route>> {
    let Some(r): Option<lp::RouteRecord> = load(store, Namespace::Route, peer.as_bytes())? else {
        return Ok(None);
    };
    let bad = |_| corrupt(Namespace::Route);
    Ok(Some(Route {
        queue: QueueAddress {
            relay: RelayAddress::parse(&r.relay).map_err(bad)?,
            sender_id: codec::fixed(&r.sender_id, "route").map_err(bad)?,
            blob_key: Zeroizing::new(codec::fixed(&r.blob_key, "route").map_err(bad)?),
        },
        display_name: r.display_name,
    }))
}

pub(super) fn save_route(
    cs: &mut ChangeSet,
    peer: &Address,
    q: &QueueAddress,
    name: &str,
    ours: &QueueId,
) {
    save(
        cs,
        Namespace::Route,
        peer.as_bytes(),
        &lp::RouteRecord {
            relay: q.relay.to_string(),
            sender_id: q.sender_id.to_vec(),
            blob_key: q.blob_key.to_vec(),
            display_name: name.to_owned(),
            our_queue: ours.to_vec(),
        },
    );
}

/// Blobs to put into a contact's queue.
#[derive(Debug)]
pub struct Outgoing {
    /// The relay holding the queue.
    pub relay: RelayAddress,
    /// The queue's sender id.
    pub sender_id: QueueId,
    /// The blobs, in order.
    pub blobs: Vec<Blob>,
}

impl Outgoing {
    /// Serialized for the outbox: relay address length (u16 BE), relay
    /// address, sender id, then the blobs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let relay = self.relay.to_string();
        let mut v = Vec::with_capacity(2 + relay.len() + 16 + self.blobs.len() * BLOB_BYTES);
        // Relay addresses are at most MAX_RELAY_ADDRESS_BYTES (< u16::MAX).
        v.extend_from_slice(&u16::try_from(relay.len()).unwrap_or(u16::MAX).to_be_bytes());
        v.extend_from_slice(relay.as_bytes());
        v.extend_from_slice(&self.sender_id);
        for b in &self.blobs {
            v.extend_from_slice(&b[..]);
        }
        v
    }

    /// Parses [`Outgoing::to_bytes`] (from our own outbox).
    pub fn from_bytes(bytes: &[u8]) -> Result<Outgoing> {
        const WHAT: &str = "outbox entry";
        let (len, rest) = bytes.split_at_checked(2).ok_or(malformed(WHAT))?;
        let len = usize::from(u16::from_be_bytes(
            *len.first_chunk::<2>().ok_or(malformed(WHAT))?,
        ));
        let (relay, rest) = rest.split_at_checked(len).ok_or(malformed(WHAT))?;
        let relay = core::str::from_utf8(relay).map_err(|_| malformed(WHAT))?;
        let (sender_id, rest) = rest
            .split_at_checked(QUEUE_ID_BYTES)
            .ok_or(malformed(WHAT))?;
        if rest.is_empty() || rest.len() % BLOB_BYTES != 0 {
            return Err(malformed(WHAT));
        }
        Ok(Outgoing {
            relay: RelayAddress::parse(relay)?,
            sender_id: codec::fixed(sender_id, WHAT)?,
            blobs: rest
                .chunks_exact(BLOB_BYTES)
                .map(|c| codec::fixed::<BLOB_BYTES>(c, WHAT).map(Box::new))
                .collect::<Result<_>>()?,
        })
    }
}
