//! From application messages to relay blobs and back, sans IO.
//!
//! Everything put into a mailbox queue is a blob of exactly
//! [`BLOB_BYTES`], sealed (XChaCha20-Poly1305, random nonce) under the
//! queue's blob key, which only the queue's owner and the contact it was
//! given to know. Inside: a fragment of a larger message (a sealed-sender
//! message, an introduction, an invitation payload) or one attachment
//! chunk. A relay sees uniform ciphertext; so does the onion layer.
//!
//! This module also keeps the client's routing state in the store (our
//! queues, where to send to each contact, fragments of incomplete
//! messages, announced attachments) and runs one-time invitations. Every
//! function takes the store, time and randomness and returns a
//! [`ChangeSet`] plus what to send; the caller does the network I/O
//! (format: `docs/mailbox-format.md`).

use prost::Message as _;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::attachment;
use crate::codec::{self, local_proto as lp};
use crate::consts::{
    BLOB_BYTES, CHUNK_PLAINTEXT_BYTES, MAX_INVITE_BLOBS, MAX_RECORD_BYTES, MAX_RELAY_ADDRESS_BYTES,
    MAX_SEALED_BYTES, MAX_STORED_MESSAGE_BYTES, QUEUE_ID_BYTES,
};
use crate::crypto::aead;
use crate::crypto::signal::QueueSecret;
use crate::e2e;
use crate::error::{Error, Result, StoreError};
use crate::message::{AttachmentRef, Body, ContactCard, Envelope, QueueAddress};
use crate::relay_address::RelayAddress;
use crate::relay_proto::{Blob, QueueId};
use crate::store::{ChangeSet, Direction, KvStore, Namespace, Overlay, Record, StoredMessage};
use crate::time::UnixTime;

/// Plaintext bytes inside a sealed blob.
pub const BLOB_INNER_BYTES: usize = BLOB_BYTES - aead::NONCE_BYTES - aead::TAG_BYTES;
/// Message bytes one fragment carries.
pub const FRAGMENT_DATA_BYTES: usize = BLOB_INNER_BYTES - FRAGMENT_HEADER_BYTES;
/// Most fragments a message may have (a largest sealed message plus its
/// introduction bundle fits).
pub const MAX_FRAGMENTS: usize = (MAX_SEALED_BYTES + 4096).div_ceil(FRAGMENT_DATA_BYTES);
/// Most incomplete messages kept per queue before new ones are refused.
pub const MAX_PENDING_MESSAGES_PER_QUEUE: usize = 64;
/// Longest an incomplete message waits for its other fragments.
pub const PENDING_FRAGMENT_TTL_MS: u64 = 21 * 24 * 3600 * 1000;
/// Completed multi-fragment messages remembered per queue (so late
/// duplicate fragments are recognised).
pub const MAX_COMPLETION_MARKERS: usize = 256;
/// Longest an invitation stays valid.
pub const INVITATION_LIFETIME_MS: u64 = 7 * 24 * 3600 * 1000;

const FRAGMENT_HEADER_BYTES: usize = 1 + 16 + 1 + 1 + 2;
const KIND_FRAGMENT: u8 = 1;
const KIND_CHUNK: u8 = 2;
const MSG_SEALED: u8 = 1;
const MSG_INTRODUCTION: u8 = 2;
const MSG_INVITE_PAYLOAD: u8 = 3;
const BLOB_AAD: &[u8] = b"postern/blob/v1";
const LINK_PREFIX: &str = "postern:";
const LINK_VERSION: u32 = 1;
/// Longest invitation link accepted.
pub const MAX_LINK_CHARS: usize = 600;
const WHAT_BLOB: &str = "blob";

fn malformed(what: &'static str) -> Error {
    Error::Malformed { what }
}

fn corrupt(ns: Namespace) -> Error {
    Error::Store(StoreError::Corrupt {
        namespace: ns.name(),
    })
}

fn load<M: prost::Message + Default>(
    s: &dyn KvStore,
    ns: Namespace,
    key: &[u8],
) -> Result<Option<M>> {
    match s.get(ns, key)? {
        None => Ok(None),
        Some(r) => codec::decode_bounded(r.checked(ns)?, MAX_RECORD_BYTES, ns.name())
            .map(Some)
            .map_err(|_| corrupt(ns)),
    }
}

fn save<M: prost::Message>(cs: &mut ChangeSet, ns: Namespace, key: &[u8], m: &M) {
    cs.put(ns, key, Record::current(ns, m.encode_to_vec()));
}

// ---------------------------------------------------------------------------
// Blobs
// ---------------------------------------------------------------------------

/// Seals `inner` (at most [`BLOB_INNER_BYTES`], zero-padded) into a blob.
fn seal_blob<R: RngCore + CryptoRng>(key: &[u8; 32], inner: &[u8], rng: &mut R) -> Result<Blob> {
    if inner.len() > BLOB_INNER_BYTES {
        return Err(Error::Bug("blob content too large"));
    }
    let mut padded = Zeroizing::new([0u8; BLOB_INNER_BYTES]);
    let (head, _) = padded.split_at_mut(inner.len());
    head.copy_from_slice(inner);
    let mut nonce = [0u8; aead::NONCE_BYTES];
    rng.fill_bytes(&mut nonce);
    let ct = aead::seal(key, &nonce, BLOB_AAD, padded.as_slice())?;
    let mut blob: Blob = Box::new([0u8; BLOB_BYTES]);
    let (n, c) = blob.split_at_mut(aead::NONCE_BYTES);
    n.copy_from_slice(&nonce);
    if c.len() != ct.len() {
        return Err(Error::Bug("blob ciphertext length"));
    }
    c.copy_from_slice(&ct);
    Ok(blob)
}

fn open_blob(key: &[u8; 32], blob: &[u8; BLOB_BYTES]) -> Result<Zeroizing<Vec<u8>>> {
    let (nonce, ct) = blob.split_at(aead::NONCE_BYTES);
    let nonce = codec::fixed::<{ aead::NONCE_BYTES }>(nonce, WHAT_BLOB)?;
    Ok(Zeroizing::new(aead::open(key, &nonce, BLOB_AAD, ct)?))
}

/// Cuts a typed message into sealed fragment blobs.
fn fragment<R: RngCore + CryptoRng>(
    key: &[u8; 32],
    msg_type: u8,
    body: &[u8],
    rng: &mut R,
) -> Result<Vec<Blob>> {
    let mut msg = Zeroizing::new(Vec::with_capacity(body.len() + 1));
    msg.push(msg_type);
    msg.extend_from_slice(body);
    let total = msg.len().div_ceil(FRAGMENT_DATA_BYTES);
    if total > MAX_FRAGMENTS {
        return Err(Error::Bug("message too large for fragments"));
    }
    let total = u8::try_from(total).map_err(|_| Error::Bug("fragment count"))?;
    let mut msg_ref = [0u8; 16];
    rng.fill_bytes(&mut msg_ref);
    let mut out = Vec::with_capacity(usize::from(total));
    for (i, data) in msg.chunks(FRAGMENT_DATA_BYTES).enumerate() {
        let mut inner = Zeroizing::new(Vec::with_capacity(BLOB_INNER_BYTES));
        inner.push(KIND_FRAGMENT);
        inner.extend_from_slice(&msg_ref);
        inner.push(u8::try_from(i).map_err(|_| Error::Bug("fragment index"))?);
        inner.push(total);
        let len = u16::try_from(data.len()).map_err(|_| Error::Bug("fragment length"))?;
        inner.extend_from_slice(&len.to_be_bytes());
        inner.extend_from_slice(data);
        out.push(seal_blob(key, &inner, rng)?);
    }
    Ok(out)
}

/// What a blob holds after opening.
enum Inner<'a> {
    Fragment {
        msg_ref: [u8; 16],
        index: u8,
        total: u8,
        data: &'a [u8],
    },
    Chunk(&'a [u8]),
}

fn parse_inner(inner: &[u8]) -> Result<Inner<'_>> {
    let (&kind, rest) = inner.split_first().ok_or(malformed(WHAT_BLOB))?;
    let (body, padding) = match kind {
        KIND_FRAGMENT => {
            let (msg_ref, rest) = rest.split_first_chunk::<16>().ok_or(malformed(WHAT_BLOB))?;
            let (&[index, total, l0, l1], rest) =
                rest.split_first_chunk::<4>().ok_or(malformed(WHAT_BLOB))?;
            let msg_ref = *msg_ref;
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            if total == 0 || usize::from(total) > MAX_FRAGMENTS || index >= total || len == 0 {
                return Err(malformed(WHAT_BLOB));
            }
            let (data, padding) = rest.split_at_checked(len).ok_or(malformed(WHAT_BLOB))?;
            (
                Inner::Fragment {
                    msg_ref,
                    index,
                    total,
                    data,
                },
                padding,
            )
        }
        KIND_CHUNK => {
            let (len, rest) = rest.split_at_checked(2).ok_or(malformed(WHAT_BLOB))?;
            let len = usize::from(u16::from_be_bytes(
                *len.first_chunk::<2>().ok_or(malformed(WHAT_BLOB))?,
            ));
            let (data, padding) = rest.split_at_checked(len).ok_or(malformed(WHAT_BLOB))?;
            (Inner::Chunk(data), padding)
        }
        _ => return Err(malformed(WHAT_BLOB)),
    };
    if padding.iter().any(|b| *b != 0) {
        return Err(malformed(WHAT_BLOB));
    }
    Ok(body)
}

// ---------------------------------------------------------------------------
// Queues and routes
// ---------------------------------------------------------------------------

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

fn queue_record(q: &CreatedQueue, now: UnixTime) -> lp::QueueRecord {
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

fn save_route(cs: &mut ChangeSet, peer: &Address, q: &QueueAddress, name: &str, ours: &QueueId) {
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

// ---------------------------------------------------------------------------
// Onion delivery acknowledgements
// ---------------------------------------------------------------------------

/// Most packets waiting for an acknowledgement (a 100 MiB attachment is
/// 68,267 blobs); beyond, sending waits for acknowledgements.
pub const MAX_PENDING_ACKS: usize = 80_000;

/// Registers the queue onion acknowledgements come back to.
pub fn register_ack_queue(q: &CreatedQueue, now: UnixTime) -> ChangeSet {
    let mut rec = queue_record(q, now);
    rec.acks = true;
    let mut cs = ChangeSet::new();
    save(&mut cs, Namespace::Queue, &q.recipient_id, &rec);
    cs
}

/// Our acknowledgement queue: (relay, sender id), if we have one.
pub fn ack_queue(store: &dyn KvStore) -> Result<Option<(RelayAddress, QueueId)>> {
    for k in store.keys(Namespace::Queue)? {
        let r: lp::QueueRecord =
            load(store, Namespace::Queue, &k)?.ok_or(corrupt(Namespace::Queue))?;
        if r.acks {
            return Ok(Some((
                RelayAddress::parse(&r.relay).map_err(|_| corrupt(Namespace::Queue))?,
                codec::fixed(&r.sender_id, "queue record")
                    .map_err(|_| corrupt(Namespace::Queue))?,
            )));
        }
    }
    Ok(None)
}

/// A blob waiting for its acknowledgement.
#[derive(Debug)]
pub struct Unacknowledged {
    /// The reply block id it was last sent with.
    pub id: [u8; 16],
    /// Where it goes.
    pub relay: RelayAddress,
    /// The queue's sender id.
    pub sender_id: QueueId,
    /// The sealed blob.
    pub blob: Blob,
    /// When it was last sent.
    pub sent_at: UnixTime,
    /// How many times it was sent.
    pub attempts: u32,
}

/// Records that `blob` was sent with `pending` (replacing `previous`,
/// the id of an earlier attempt, if any).
#[allow(clippy::too_many_arguments)]
pub fn record_pending(
    store: &dyn KvStore,
    pending: &crate::onion::PendingAck,
    relay: &RelayAddress,
    sender_id: &QueueId,
    blob: &Blob,
    now: UnixTime,
    attempts: u32,
    previous: Option<&[u8; 16]>,
) -> Result<ChangeSet> {
    let mut cs = ChangeSet::new();
    let ns = Namespace::PendingAck;
    if let Some(p) = previous {
        // The earlier attempt stays (its acknowledgement may still come)
        // but is no longer resent; the two are linked so that either
        // acknowledgement settles both.
        if let Some(mut old) = load::<lp::PendingAckRecord>(store, ns, p)? {
            old.next = pending.id.to_vec();
            save(&mut cs, ns, p, &old);
        }
    } else if store.keys(ns)?.len() >= MAX_PENDING_ACKS {
        return Err(Error::TooManyUnacknowledged);
    }
    save(
        &mut cs,
        Namespace::PendingAck,
        &pending.id,
        &lp::PendingAckRecord {
            recovery: pending.recovery.to_bytes().to_vec(),
            relay: relay.to_string(),
            sender_id: sender_id.to_vec(),
            blob: blob.to_vec(),
            sent_at_ms: now.millis(),
            attempts,
            is_loop: false,
            prev: previous.map(|p| p.to_vec()).unwrap_or_default(),
            next: Vec::new(),
        },
    );
    Ok(cs)
}

/// Records a loop cover packet, expected back as an acknowledgement.
pub fn record_loop(
    store: &dyn KvStore,
    pending: &crate::onion::PendingAck,
    now: UnixTime,
) -> Result<ChangeSet> {
    if store.keys(Namespace::PendingAck)?.len() >= MAX_PENDING_ACKS {
        return Err(Error::TooManyUnacknowledged);
    }
    let mut cs = ChangeSet::new();
    save(
        &mut cs,
        Namespace::PendingAck,
        &pending.id,
        &lp::PendingAckRecord {
            recovery: pending.recovery.to_bytes().to_vec(),
            sent_at_ms: now.millis(),
            attempts: 1,
            is_loop: true,
            ..Default::default()
        },
    );
    Ok(cs)
}

/// Forgets a blob given up on: this attempt and every earlier one.
pub fn forget_pending(store: &dyn KvStore, id: &[u8; 16]) -> Result<ChangeSet> {
    let mut cs = ChangeSet::new();
    delete_attempts(store, id, false, &mut cs)?;
    Ok(cs)
}

/// Most attempts one blob's chain can have (resends are capped well below).
const MAX_ATTEMPT_CHAIN: usize = 64;

/// Deletes the pending record `start` and the attempts linked from it,
/// following `next` links when `forward`, else `prev` links.
fn delete_attempts(
    store: &dyn KvStore,
    start: &[u8],
    forward: bool,
    cs: &mut ChangeSet,
) -> Result<()> {
    let ns = Namespace::PendingAck;
    let mut link = start.to_vec();
    for _ in 0..MAX_ATTEMPT_CHAIN {
        if link.is_empty() {
            break;
        }
        cs.delete(ns, &link);
        let Some(o): Option<lp::PendingAckRecord> = load(store, ns, &link)? else {
            break;
        };
        link = if forward { o.next } else { o.prev };
    }
    Ok(())
}

/// Forgets loop packets sent at or before `cutoff` that never came back
/// and returns how many there were (many lost loops hint at failing or
/// hostile relays).
pub fn lost_loops(store: &dyn KvStore, cutoff: UnixTime) -> Result<(usize, ChangeSet)> {
    let ns = Namespace::PendingAck;
    let mut cs = ChangeSet::new();
    let mut lost = 0;
    for k in store.keys(ns)? {
        let r: lp::PendingAckRecord = load(store, ns, &k)?.ok_or(corrupt(ns))?;
        if r.is_loop && r.sent_at_ms <= cutoff.millis() {
            cs.delete(ns, &k);
            lost += 1;
        }
    }
    Ok((lost, cs))
}

/// Blobs sent at or before `cutoff` and still unacknowledged.
pub fn overdue(store: &dyn KvStore, cutoff: UnixTime) -> Result<Vec<Unacknowledged>> {
    let ns = Namespace::PendingAck;
    let mut out = Vec::new();
    for k in store.keys(ns)? {
        let r: lp::PendingAckRecord = load(store, ns, &k)?.ok_or(corrupt(ns))?;
        if r.is_loop || !r.next.is_empty() || r.sent_at_ms > cutoff.millis() {
            continue;
        }
        out.push(Unacknowledged {
            id: codec::fixed(&k, "pending ack").map_err(|_| corrupt(ns))?,
            relay: RelayAddress::parse(&r.relay).map_err(|_| corrupt(ns))?,
            sender_id: codec::fixed(&r.sender_id, "pending ack").map_err(|_| corrupt(ns))?,
            blob: Box::new(codec::fixed(&r.blob, "pending ack").map_err(|_| corrupt(ns))?),
            sent_at: UnixTime(r.sent_at_ms),
            attempts: r.attempts,
        });
    }
    Ok(out)
}

/// Counts a resend of the pending blob `id` that could not even leave
/// (no path, no entry reachable): its attempt count grows and its clock
/// restarts, so it is tried again after another timeout and given up
/// after the usual number of attempts instead of being retried forever.
pub fn count_failed_attempt(
    store: &dyn KvStore,
    id: &[u8; 16],
    now: UnixTime,
) -> Result<ChangeSet> {
    let ns = Namespace::PendingAck;
    let mut cs = ChangeSet::new();
    if let Some(mut r) = load::<lp::PendingAckRecord>(store, ns, id)? {
        r.attempts = r.attempts.saturating_add(1);
        r.sent_at_ms = now.millis();
        save(&mut cs, ns, id, &r);
    }
    Ok(cs)
}

/// How many blobs (not loop packets) wait for an acknowledgement.
pub fn unacknowledged(store: &dyn KvStore) -> Result<usize> {
    let ns = Namespace::PendingAck;
    let mut n = 0;
    for k in store.keys(ns)? {
        let r: lp::PendingAckRecord = load(store, ns, &k)?.ok_or(corrupt(ns))?;
        if !r.is_loop && r.next.is_empty() {
            n += 1;
        }
    }
    Ok(n)
}

/// What the acknowledgements fetched in one go confirmed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AcksReceived {
    /// Blobs (messages, chunks, receipts) confirmed delivered.
    pub delivered: usize,
    /// Loop cover packets that came back.
    pub loops: usize,
}

impl AcksReceived {
    /// Everything confirmed, deliveries and loops.
    pub fn total(&self) -> usize {
        self.delivered.saturating_add(self.loops)
    }
}

/// Handles blobs fetched from the acknowledgement queue: pairs them into
/// replies, opens each with its pending record and forgets the record.
/// Returns what was confirmed (the caller acknowledges every fetched blob
/// either way).
pub fn receive_acks(
    store: &dyn KvStore,
    blobs: &[&[u8; BLOB_BYTES]],
) -> Result<(AcksReceived, ChangeSet)> {
    let ns = Namespace::PendingAck;
    let mut cs = ChangeSet::new();
    let mut got = AcksReceived::default();
    for (id, payload, _) in crate::onion::pair_replies(blobs) {
        let Some(r): Option<lp::PendingAckRecord> = load(store, ns, &id)? else {
            continue;
        };
        let rec = crate::crypto::sphinx::SurbRecovery::from_bytes(&r.recovery)
            .map_err(|_| corrupt(ns))?;
        if crate::onion::open_ack(&rec, &payload).is_ok() {
            // This attempt and every other attempt of the same blob.
            cs.delete(ns, &id);
            delete_attempts(store, &r.prev, false, &mut cs)?;
            delete_attempts(store, &r.next, true, &mut cs)?;
            if r.is_loop {
                got.loops += 1;
            } else {
                got.delivered += 1;
            }
        }
    }
    Ok((got, cs))
}

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

const SETTING_HOME_RELAY: &[u8] = b"home_relay";
const SETTING_NAME: &[u8] = b"display_name";

fn setting(store: &dyn KvStore, key: &[u8]) -> Result<Option<String>> {
    match store.get(Namespace::Setting, key)? {
        None => Ok(None),
        Some(r) => String::from_utf8(r.checked(Namespace::Setting)?.to_vec())
            .map(Some)
            .map_err(|_| corrupt(Namespace::Setting)),
    }
}

/// The relay where new queues are created.
pub fn home_relay(store: &dyn KvStore) -> Result<Option<RelayAddress>> {
    setting(store, SETTING_HOME_RELAY)?
        .map(|s| RelayAddress::parse(&s).map_err(|_| corrupt(Namespace::Setting)))
        .transpose()
}

/// Sets the home relay.
pub fn set_home_relay(relay: &RelayAddress) -> ChangeSet {
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Setting,
        SETTING_HOME_RELAY,
        Record::current(Namespace::Setting, relay.to_string().into_bytes()),
    );
    cs
}

const SETTING_AUTHORITIES: &[u8] = b"directory_authorities";
const SETTING_DIRECTORY: &[u8] = b"directory";

/// The onion network this profile sends through: the directory
/// authorities' public keys (33 bytes each) and how many must sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Pinned authority keys.
    pub authorities: Vec<Vec<u8>>,
    /// Signatures required.
    pub threshold: u32,
    /// Relays per path (3 to 5).
    pub hops: u8,
}

/// The onion network settings, if one is configured (otherwise blobs go
/// straight to the recipient's relay).
pub fn network(store: &dyn KvStore) -> Result<Option<NetworkSettings>> {
    let Some(r) = store.get(Namespace::Setting, SETTING_AUTHORITIES)? else {
        return Ok(None);
    };
    let b = r.checked(Namespace::Setting)?;
    let (t, rest) = b
        .split_first_chunk::<4>()
        .ok_or(corrupt(Namespace::Setting))?;
    let (&hops, keys) = rest.split_first().ok_or(corrupt(Namespace::Setting))?;
    if keys.is_empty() || keys.len() % 33 != 0 {
        return Err(corrupt(Namespace::Setting));
    }
    Ok(Some(NetworkSettings {
        threshold: u32::from_be_bytes(*t),
        hops,
        authorities: keys.chunks_exact(33).map(<[u8]>::to_vec).collect(),
    }))
}

/// Configures the onion network (clears any cached directory).
pub fn set_network(n: &NetworkSettings) -> Result<ChangeSet> {
    if n.authorities.is_empty()
        || n.threshold == 0
        || usize::try_from(n.threshold).map_or(true, |t| t > n.authorities.len())
        || n.authorities.iter().any(|k| k.len() != 33)
        || !(crate::onion::MIN_HOPS..=crate::crypto::sphinx::MAX_HOPS)
            .contains(&usize::from(n.hops))
    {
        return Err(Error::Malformed {
            what: "network settings",
        });
    }
    let mut v = n.threshold.to_be_bytes().to_vec();
    v.push(n.hops);
    for k in &n.authorities {
        v.extend_from_slice(k);
    }
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Setting,
        SETTING_AUTHORITIES,
        Record::current(Namespace::Setting, v),
    );
    cs.delete(Namespace::Setting, SETTING_DIRECTORY);
    Ok(cs)
}

/// The last directory document fetched (verified again on every use).
pub fn cached_directory(store: &dyn KvStore) -> Result<Option<Vec<u8>>> {
    Ok(store
        .get(Namespace::Setting, SETTING_DIRECTORY)?
        .map(|r| r.checked(Namespace::Setting).map(<[u8]>::to_vec))
        .transpose()?)
}

/// Caches a directory document.
pub fn cache_directory(bytes: &[u8]) -> ChangeSet {
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Setting,
        SETTING_DIRECTORY,
        Record::current(Namespace::Setting, bytes.to_vec()),
    );
    cs
}

const SETTING_DIRECTORY_FETCHED: &[u8] = b"directory_fetched_at";

/// When a directory was last fetched (or a fetch was tried).
pub fn directory_fetched_at(store: &dyn KvStore) -> Result<Option<UnixTime>> {
    setting(store, SETTING_DIRECTORY_FETCHED)?
        .map(|s| {
            s.parse::<u64>()
                .map(UnixTime)
                .map_err(|_| corrupt(Namespace::Setting))
        })
        .transpose()
}

/// Records a directory fetch (or a try) at `at`.
pub fn set_directory_fetched_at(at: UnixTime) -> ChangeSet {
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Setting,
        SETTING_DIRECTORY_FETCHED,
        Record::current(Namespace::Setting, at.millis().to_string().into_bytes()),
    );
    cs
}

/// The name we suggest to contacts (empty if unset).
pub fn display_name(store: &dyn KvStore) -> Result<String> {
    Ok(setting(store, SETTING_NAME)?.unwrap_or_default())
}

/// Sets the name we suggest to contacts.
pub fn set_display_name(name: &str) -> Result<ChangeSet> {
    check_name(name)?;
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Setting,
        SETTING_NAME,
        Record::current(Namespace::Setting, name.as_bytes().to_vec()),
    );
    Ok(cs)
}

// ---------------------------------------------------------------------------
// Invitations
// ---------------------------------------------------------------------------

/// A parsed `postern:` invitation link.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The inviter's relay.
    pub relay: RelayAddress,
    /// The invitation queue's sender id.
    pub sender_id: QueueId,
    /// Opens the payload.
    pub key: Zeroizing<[u8; 32]>,
    /// After this the invitation is refused.
    pub expires_at: UnixTime,
}

impl core::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Invitation({}, <redacted>)", self.relay)
    }
}

impl Invitation {
    /// The `postern:` link.
    pub fn to_link(&self) -> String {
        let p = lp::InvitationLink {
            version: LINK_VERSION,
            relay: self.relay.to_string(),
            sender_id: self.sender_id.to_vec(),
            key: self.key.to_vec(),
            expires_at_ms: self.expires_at.millis(),
        };
        format!(
            "{LINK_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(&p.encode_to_vec())
        )
    }

    /// Parses a link, refusing an expired one.
    pub fn parse(link: &str, now: UnixTime) -> Result<Invitation> {
        const WHAT: &str = "invitation link";
        if link.len() > MAX_LINK_CHARS {
            return Err(Error::TooLarge {
                what: WHAT,
                len: link.len(),
                max: MAX_LINK_CHARS,
            });
        }
        let b64 = link
            .trim()
            .strip_prefix(LINK_PREFIX)
            .ok_or(malformed(WHAT))?;
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(b64.as_bytes())
            .map_err(|_| malformed(WHAT))?;
        let p: lp::InvitationLink = codec::decode_bounded(&bytes, MAX_LINK_CHARS, WHAT)?;
        if p.version != LINK_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version: p.version,
            });
        }
        let inv = Invitation {
            relay: RelayAddress::parse(&p.relay)?,
            sender_id: codec::fixed(&p.sender_id, WHAT)?,
            key: Zeroizing::new(codec::fixed(&p.key, WHAT)?),
            expires_at: UnixTime(p.expires_at_ms),
        };
        if now.millis() >= inv.expires_at.millis() {
            return Err(Error::InvitationExpired);
        }
        Ok(inv)
    }
}

/// Makes a one-time invitation for the freshly created queue `q`: the
/// link to show, the payload blobs to put on the relay (`PutInvite`), and
/// the change set (the queue, marked as an invitation, and the bundle's
/// prekeys).
pub fn create_invitation<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    q: &CreatedQueue,
    display_name: &str,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Invitation, Vec<Blob>, ChangeSet)> {
    check_name(display_name)?;
    let (bundle, mut cs) = e2e::publish_bundle(store)?;
    let mut link_key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(link_key.as_mut());
    let inv = Invitation {
        relay: q.relay.clone(),
        sender_id: q.sender_id,
        key: link_key,
        expires_at: UnixTime(now.millis().saturating_add(INVITATION_LIFETIME_MS)),
    };
    let payload = Zeroizing::new(
        lp::InvitePayload {
            version: LINK_VERSION,
            bundle,
            blob_key: q.keys.blob_key.to_vec(),
            display_name: display_name.to_owned(),
        }
        .encode_to_vec(),
    );
    let blobs = fragment(&inv.key, MSG_INVITE_PAYLOAD, &payload, rng)?;
    if blobs.len() > MAX_INVITE_BLOBS as usize {
        return Err(Error::Bug("invitation payload too large"));
    }
    let mut rec = queue_record(q, now);
    rec.invitation = true;
    rec.invite_expires_at_ms = inv.expires_at.millis();
    save(&mut cs, Namespace::Queue, &q.recipient_id, &rec);
    Ok((inv, blobs, cs))
}

fn check_name(name: &str) -> Result<()> {
    if name.len() > crate::consts::MAX_DISPLAY_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(Error::Malformed {
            what: "display name",
        });
    }
    Ok(())
}

fn reassemble_standalone(key: &[u8; 32], blobs: &[Blob]) -> Result<(u8, Zeroizing<Vec<u8>>)> {
    const WHAT: &str = "invitation payload";
    let mut parts: Vec<Option<Zeroizing<Vec<u8>>>> = Vec::new();
    let mut the_ref = None;
    for b in blobs {
        let inner = open_blob(key, b)?;
        let Inner::Fragment {
            msg_ref,
            index,
            total,
            data,
        } = parse_inner(&inner)?
        else {
            return Err(malformed(WHAT));
        };
        if *the_ref.get_or_insert((msg_ref, total)) != (msg_ref, total) {
            return Err(malformed(WHAT));
        }
        parts.resize_with(usize::from(total), || None);
        let slot = parts.get_mut(usize::from(index)).ok_or(malformed(WHAT))?;
        *slot = Some(Zeroizing::new(data.to_vec()));
    }
    let mut msg = Zeroizing::new(Vec::new());
    for p in &parts {
        msg.extend_from_slice(p.as_ref().ok_or(malformed(WHAT))?);
    }
    let (&t, body) = msg.split_first().ok_or(malformed(WHAT))?;
    Ok((t, Zeroizing::new(body.to_vec())))
}

/// Accepts an invitation whose payload blobs were taken from the relay.
/// `ours` is the queue just created for this contact. Runs PQXDH with
/// the inviter's bundle and returns the new contact, the introduction to
/// put into the invitation queue, and the change set.
pub fn accept_invitation<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    inv: &Invitation,
    payload: &[Blob],
    ours: &CreatedQueue,
    my_name: &str,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Address, Outgoing, ChangeSet)> {
    const WHAT: &str = "invitation payload";
    check_name(my_name)?;
    if now.millis() >= inv.expires_at.millis() {
        return Err(Error::InvitationExpired);
    }
    let (t, body) = reassemble_standalone(&inv.key, payload)?;
    if t != MSG_INVITE_PAYLOAD {
        return Err(malformed(WHAT));
    }
    let p: lp::InvitePayload = codec::decode_bounded(&body, MAX_RECORD_BYTES, WHAT)?;
    if p.version != LINK_VERSION {
        return Err(Error::UnsupportedVersion {
            what: WHAT,
            version: p.version,
        });
    }
    check_name(&p.display_name)?;
    let their_blob_key = Zeroizing::new(codec::fixed::<32>(&p.blob_key, WHAT)?);
    if e2e::contact(store, &e2e::inspect_bundle(&p.bundle)?.address())?.is_some() {
        return Err(Error::AlreadyContact);
    }
    let mut o = Overlay::new(store);
    let (peer, cs) = e2e::start_session(&o, &p.bundle, now, rng)?;
    o.apply(cs);
    let (my_bundle, cs) = e2e::publish_bundle(&o)?;
    o.apply(cs);
    let card = Envelope {
        id: random_id(rng),
        sent_at: now,
        reply_to: None,
        body: Body::ContactCard(ContactCard {
            queue: QueueAddress {
                relay: ours.relay.clone(),
                sender_id: ours.sender_id,
                blob_key: ours.keys.blob_key.clone(),
            },
            display_name: my_name.to_owned(),
        }),
    };
    let (sealed, cs) = e2e::seal(&o, &peer, &card.encode()?, now, rng)?;
    o.apply(cs);
    let intro = lp::Introduction {
        bundle: my_bundle,
        sealed,
    }
    .encode_to_vec();
    let blobs = fragment(&their_blob_key, MSG_INTRODUCTION, &intro, rng)?;
    let mut cs = o.into_changes();
    let mut rec = queue_record(ours, now);
    rec.contact = peer.as_bytes().to_vec();
    save(&mut cs, Namespace::Queue, &ours.recipient_id, &rec);
    let theirs = QueueAddress {
        relay: inv.relay.clone(),
        sender_id: inv.sender_id,
        blob_key: their_blob_key,
    };
    save_route(&mut cs, &peer, &theirs, &p.display_name, &ours.recipient_id);
    Ok((
        peer,
        Outgoing {
            relay: inv.relay.clone(),
            sender_id: inv.sender_id,
            blobs,
        },
        cs,
    ))
}

fn random_id<R: RngCore + CryptoRng>(rng: &mut R) -> [u8; 16] {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    id
}

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

/// Seals `body` for `peer` and cuts it into blobs for the peer's queue.
/// The change set advances the ratchet and stores the message as
/// outgoing; commit it before sending the blobs.
pub fn send<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    peer: &Address,
    body: Body,
    reply_to: Option<[u8; 16]>,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Envelope, Outgoing, ChangeSet)> {
    let r = route(store, peer)?.ok_or(Error::NoRoute { peer: *peer })?;
    let env = Envelope {
        id: random_id(rng),
        sent_at: now,
        reply_to,
        body,
    };
    let plain = env.encode()?;
    let (sealed, mut cs) = e2e::seal(store, peer, &plain, now, rng)?;
    let blobs = fragment(&r.queue.blob_key, MSG_SEALED, &sealed, rng)?;
    if !matches!(env.body, Body::Receipt(_)) {
        cs.add_message(StoredMessage {
            peer: *peer,
            id: env.id,
            direction: Direction::Outgoing,
            timestamp: now,
            body: plain,
        });
    }
    Ok((
        env,
        Outgoing {
            relay: r.queue.relay,
            sender_id: r.queue.sender_id,
            blobs,
        },
        cs,
    ))
}

/// Seals attachment chunk `index` (its plaintext slice) for `peer`'s queue.
pub fn chunk_blob<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    peer: &Address,
    aref: &AttachmentRef,
    index: u32,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Blob> {
    let r = route(store, peer)?.ok_or(Error::NoRoute { peer: *peer })?;
    let wire = attachment::seal_chunk(aref, index, plaintext)?;
    let len = u16::try_from(wire.len()).map_err(|_| Error::Bug("chunk length"))?;
    let mut inner = Vec::with_capacity(3 + wire.len());
    inner.push(KIND_CHUNK);
    inner.extend_from_slice(&len.to_be_bytes());
    inner.extend_from_slice(&wire);
    seal_blob(&r.queue.blob_key, &inner, rng)
}

/// Most blobs in one outbox entry: an entry's payload (relay address,
/// sender id, blobs) stays within [`MAX_STORED_MESSAGE_BYTES`].
pub const MAX_BLOBS_PER_OUTBOX_ENTRY: usize =
    (MAX_STORED_MESSAGE_BYTES - 2 - MAX_RELAY_ADDRESS_BYTES - QUEUE_ID_BYTES) / BLOB_BYTES;
const _: () = assert!(
    MAX_BLOBS_PER_OUTBOX_ENTRY >= 1
        && 2 + MAX_RELAY_ADDRESS_BYTES + QUEUE_ID_BYTES + MAX_BLOBS_PER_OUTBOX_ENTRY * BLOB_BYTES
            <= MAX_STORED_MESSAGE_BYTES
);

/// Seals every chunk of an attachment (`data`, laid out as `aref`
/// describes) for `peer`'s queue, in index order, grouped into batches
/// that each fit one outbox entry. Queue them in the same commit as the
/// message that announces the attachment: then an interrupted transfer
/// resumes from the outbox and never leaves a message whose chunks were
/// never queued.
pub fn attachment_outgoing<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    peer: &Address,
    aref: &AttachmentRef,
    data: &[u8],
    rng: &mut R,
) -> Result<Vec<Outgoing>> {
    if data.len() as u64 != aref.size {
        return Err(Error::Bug("attachment data does not match its reference"));
    }
    let r = route(store, peer)?.ok_or(Error::NoRoute { peer: *peer })?;
    let total = attachment::chunk_count(aref.size)?;
    let mut batches: Vec<Outgoing> = Vec::new();
    let mut blobs: Vec<Blob> = Vec::with_capacity(MAX_BLOBS_PER_OUTBOX_ENTRY);
    for (index, chunk) in (0..total).zip(data.chunks(CHUNK_PLAINTEXT_BYTES)) {
        blobs.push(chunk_blob(store, peer, aref, index, chunk, rng)?);
        if blobs.len() == MAX_BLOBS_PER_OUTBOX_ENTRY {
            batches.push(Outgoing {
                relay: r.queue.relay.clone(),
                sender_id: r.queue.sender_id,
                blobs: core::mem::take(&mut blobs),
            });
        }
    }
    if !blobs.is_empty() {
        batches.push(Outgoing {
            relay: r.queue.relay,
            sender_id: r.queue.sender_id,
            blobs,
        });
    }
    Ok(batches)
}

// ---------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------

/// What a received blob amounted to.
#[derive(Debug)]
#[non_exhaustive]
pub enum Received {
    /// A fragment was stored; the message is not complete yet.
    Partial,
    /// A message from a contact (already stored in its conversation,
    /// except receipts, and control messages which were applied).
    Message {
        /// Who sent it.
        from: Address,
        /// The message.
        envelope: Envelope,
    },
    /// Someone accepted our invitation: a new contact.
    NewContact {
        /// The contact.
        peer: Address,
        /// The name it suggested.
        display_name: String,
        /// Messages from it that arrived before the introduction (already
        /// stored).
        early: Vec<Envelope>,
    },
    /// An attachment chunk was stored.
    Chunk {
        /// Whose attachment.
        from: Address,
        /// Which message announced it.
        message_id: [u8; 16],
        /// The attachment.
        attachment: AttachmentRef,
        /// Chunks still missing.
        missing: usize,
    },
    /// Something already received (redelivery after a restart).
    Duplicate,
}

/// Handles one blob fetched from our queue `recipient_id`. A hostile blob
/// is a typed error and changes nothing; the caller acknowledges it
/// either way once the change set is committed (or on error), so a bad
/// blob cannot wedge the queue.
pub fn receive<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    recipient_id: &QueueId,
    blob: &[u8; BLOB_BYTES],
    now: UnixTime,
    rng: &mut R,
) -> Result<(Received, ChangeSet)> {
    let q: lp::QueueRecord =
        load(store, Namespace::Queue, recipient_id)?.ok_or(Error::UnknownQueue)?;
    let blob_key =
        codec::fixed::<32>(&q.blob_key, "queue record").map_err(|_| corrupt(Namespace::Queue))?;
    let inner = open_blob(&blob_key, blob)?;
    match parse_inner(&inner)? {
        Inner::Chunk(wire) => receive_chunk(store, &q, wire, now),
        Inner::Fragment {
            msg_ref,
            index,
            total,
            data,
        } => {
            let mut cs = ChangeSet::new();
            // One-fragment messages get a completion marker too, so that a
            // late redelivery is recognised before decryption (libsignal
            // keeps only a few old chains).
            let msg = match collect(
                store,
                recipient_id,
                msg_ref,
                index,
                total,
                data,
                now,
                &mut cs,
            )? {
                Collected::Partial => return Ok((Received::Partial, cs)),
                Collected::Duplicate => return Ok((Received::Duplicate, cs)),
                Collected::Complete(m) => m,
            };
            let (&t, body) = msg.split_first().ok_or(malformed(WHAT_BLOB))?;
            let (got, more) = match t {
                MSG_SEALED => receive_sealed(store, &q, body, now, rng)?,
                MSG_INTRODUCTION => receive_introduction(store, &q, body, now, rng)?,
                _ => return Err(malformed(WHAT_BLOB)),
            };
            // The fragment deletions must not undo the receive's writes.
            cs.extend(more);
            Ok((got, cs))
        }
    }
}

fn fragment_key(queue: &QueueId, msg_ref: &[u8; 16], index: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(QUEUE_ID_BYTES + 17);
    k.extend_from_slice(queue);
    k.extend_from_slice(msg_ref);
    k.push(index);
    k
}

/// What [`collect`] made of a fragment.
enum Collected {
    /// Stored; the message is not complete.
    Partial,
    /// Part of a message already completed.
    Duplicate,
    /// The whole message.
    Complete(Zeroizing<Vec<u8>>),
}

/// Fragment record: `total`, receive time (ms, BE), data. Completion
/// marker (index [`DONE_INDEX`]): `0`, completion time.
const DONE_INDEX: u8 = 0xFF;

fn record_time(bytes: &[u8]) -> u64 {
    bytes
        .get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Stores a fragment; when all are there, returns the message, deletes
/// the fragments and leaves a completion marker (so a late duplicate is
/// recognised) in `cs`. Incomplete messages older than
/// [`PENDING_FRAGMENT_TTL_MS`] are dropped; at most
/// [`MAX_COMPLETION_MARKERS`] markers are kept per queue.
#[allow(clippy::too_many_arguments)]
fn collect(
    store: &dyn KvStore,
    queue: &QueueId,
    msg_ref: [u8; 16],
    index: u8,
    total: u8,
    data: &[u8],
    now: UnixTime,
    cs: &mut ChangeSet,
) -> Result<Collected> {
    let ns = Namespace::Fragment;
    let prefix_len = QUEUE_ID_BYTES + 16;
    let this = fragment_key(queue, &msg_ref, 0);
    let this = this.get(..prefix_len).ok_or(Error::Bug("fragment key"))?;
    let keys: Vec<Vec<u8>> = store
        .keys(ns)?
        .into_iter()
        .filter(|k| k.starts_with(queue) && k.len() == prefix_len + 1)
        .collect();
    if keys
        .iter()
        .any(|k| k.starts_with(this) && k.last() == Some(&DONE_INDEX))
    {
        return Ok(Collected::Duplicate);
    }
    let (markers, fragments): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) =
        keys.iter().partition(|k| k.last() == Some(&DONE_INDEX));

    // Drop incomplete messages that have waited too long (judged by their
    // first stored fragment).
    let mut pending: std::collections::BTreeMap<&[u8], Vec<&Vec<u8>>> = Default::default();
    for k in &fragments {
        if let Some(r) = k.get(..prefix_len) {
            pending.entry(r).or_default().push(k);
        }
    }
    let cutoff = now.millis().saturating_sub(PENDING_FRAGMENT_TTL_MS);
    let mut live = 0usize;
    for (r, ks) in &pending {
        if *r == this {
            continue;
        }
        let Some(k0) = ks.first() else { continue };
        let first = store.get(ns, k0)?.ok_or(corrupt(ns))?;
        if record_time(first.checked(ns)?) < cutoff {
            for k in ks {
                cs.delete(ns, k);
            }
        } else {
            live += 1;
        }
    }
    if !pending.contains_key(this) && live >= MAX_PENDING_MESSAGES_PER_QUEUE {
        return Err(Error::TooManyPendingMessages);
    }

    let mut parts: Vec<Option<Zeroizing<Vec<u8>>>> = vec![None; usize::from(total)];
    for k in pending.get(this).map(Vec::as_slice).unwrap_or_default() {
        let i = usize::from(*k.last().ok_or(corrupt(ns))?);
        let rec = store.get(ns, k)?.ok_or(corrupt(ns))?;
        let bytes = rec.checked(ns)?;
        if bytes.first() != Some(&total) || bytes.len() < 9 {
            // Same reference, different shape: a forged or corrupt fragment.
            return Err(malformed(WHAT_BLOB));
        }
        if let Some(slot) = parts.get_mut(i) {
            *slot = Some(Zeroizing::new(bytes.get(9..).unwrap_or_default().to_vec()));
        }
    }
    let slot = parts
        .get_mut(usize::from(index))
        .ok_or(malformed(WHAT_BLOB))?;
    if slot.is_some() {
        return Ok(Collected::Duplicate);
    }
    *slot = Some(Zeroizing::new(data.to_vec()));
    let stamp = |first: u8| {
        let mut v = Vec::with_capacity(9 + data.len());
        v.push(first);
        v.extend_from_slice(&now.millis().to_be_bytes());
        v
    };
    if parts.iter().any(Option::is_none) {
        let mut v = stamp(total);
        v.extend_from_slice(data);
        cs.put(
            ns,
            &fragment_key(queue, &msg_ref, index),
            Record::current(ns, v),
        );
        return Ok(Collected::Partial);
    }
    let mut msg = Zeroizing::new(Vec::new());
    for (i, p) in parts.iter().enumerate() {
        msg.extend_from_slice(p.as_deref().map(Vec::as_slice).unwrap_or_default());
        let i = u8::try_from(i).map_err(|_| Error::Bug("fragment index"))?;
        cs.delete(ns, &fragment_key(queue, &msg_ref, i));
    }
    // Remember completion; evict the oldest markers beyond the bound.
    cs.put(
        ns,
        &fragment_key(queue, &msg_ref, DONE_INDEX),
        Record::current(ns, stamp(0)),
    );
    if markers.len() >= MAX_COMPLETION_MARKERS {
        let mut aged = Vec::with_capacity(markers.len());
        for k in &markers {
            let rec = store.get(ns, k)?.ok_or(corrupt(ns))?;
            aged.push((record_time(rec.checked(ns)?), *k));
        }
        aged.sort();
        for (_, k) in aged.iter().take(markers.len() + 1 - MAX_COMPLETION_MARKERS) {
            cs.delete(ns, k);
        }
    }
    Ok(Collected::Complete(msg))
}

fn receive_sealed<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    q: &lp::QueueRecord,
    sealed: &[u8],
    now: UnixTime,
    rng: &mut R,
) -> Result<(Received, ChangeSet)> {
    let Some(expected) = Address::from_slice(&q.contact) else {
        // An invitation queue takes an introduction first; a message of
        // the new contact that overtook it on the onion network waits
        // (bounded) and is opened right after it.
        if q.invitation && !q.invite_used {
            return park_early(store, q, sealed, now);
        }
        return Err(Error::UnexpectedMessage);
    };
    let (from, plain, mut cs) = match e2e::open(store, sealed, now, rng) {
        Err(Error::DuplicateMessage) => return Ok((Received::Duplicate, ChangeSet::new())),
        r => r?,
    };
    if from != expected {
        // A contact writing into another contact's queue.
        return Err(Error::UnexpectedMessage);
    }
    let env = Envelope::decode(&plain)?;
    if store.has_message(&from, &env.id)? {
        return Ok((Received::Duplicate, ChangeSet::new()));
    }
    apply_body(store, &from, &env, q, &mut cs)?;
    if !matches!(
        env.body,
        Body::Receipt(_) | Body::ContactCard(_) | Body::QueueUpdate(_)
    ) {
        cs.add_message(StoredMessage {
            peer: from,
            id: env.id,
            direction: Direction::Incoming,
            timestamp: now,
            body: plain,
        });
    }
    Ok((
        Received::Message {
            from,
            envelope: env,
        },
        cs,
    ))
}

/// Most messages kept per invitation queue while its introduction is on
/// its way.
pub const MAX_EARLY_MESSAGES: usize = 16;
const EARLY_TAG: &[u8] = b"early";

fn early_prefix(queue: &[u8]) -> Vec<u8> {
    let mut k = queue.to_vec();
    k.extend_from_slice(EARLY_TAG);
    k
}

fn park_early(
    store: &dyn KvStore,
    q: &lp::QueueRecord,
    sealed: &[u8],
    now: UnixTime,
) -> Result<(Received, ChangeSet)> {
    let ns = Namespace::Fragment;
    let prefix = early_prefix(&q.recipient_id);
    let parked = store
        .keys(ns)?
        .into_iter()
        .filter(|k| k.starts_with(&prefix))
        .count();
    if parked >= MAX_EARLY_MESSAGES || now.millis() >= q.invite_expires_at_ms {
        return Err(Error::UnexpectedMessage);
    }
    let mut key = prefix;
    key.extend_from_slice(
        crate::crypto::hash::sha256(&[sealed])
            .get(..16)
            .unwrap_or_default(),
    );
    let mut cs = ChangeSet::new();
    cs.put(ns, &key, Record::current(ns, sealed.to_vec()));
    Ok((Received::Partial, cs))
}

/// Side effects of a body: announced attachments are remembered, control
/// messages update the route.
fn apply_body(
    store: &dyn KvStore,
    from: &Address,
    env: &Envelope,
    q: &lp::QueueRecord,
    cs: &mut ChangeSet,
) -> Result<()> {
    let aref = match &env.body {
        Body::Image(i) => Some(&i.attachment),
        Body::File(f) => Some(&f.attachment),
        Body::Voice(v) => Some(&v.attachment),
        Body::QueueUpdate(queue) => {
            let name = route(store, from)?
                .map(|r| r.display_name)
                .unwrap_or_default();
            let ours = codec::fixed::<QUEUE_ID_BYTES>(&q.recipient_id, "queue record")
                .map_err(|_| corrupt(Namespace::Queue))?;
            save_route(cs, from, queue, &name, &ours);
            None
        }
        // A second contact card from an established contact changes nothing.
        _ => None,
    };
    if let Some(a) = aref {
        if load::<lp::AttachmentRecord>(store, Namespace::Attachment, &a.id)?.is_some() {
            // Attachment ids are random; a repeat is a forgery attempt.
            return Err(Error::UnexpectedMessage);
        }
        save(
            cs,
            Namespace::Attachment,
            &a.id,
            &lp::AttachmentRecord {
                peer: from.as_bytes().to_vec(),
                message_id: env.id.to_vec(),
                id: a.id.to_vec(),
                key: a.key.to_vec(),
                size: a.size,
                digest: a.digest.to_vec(),
            },
        );
        unpark_chunks(store, &q.recipient_id, a, cs)?;
    }
    Ok(())
}

fn receive_introduction<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    q: &lp::QueueRecord,
    body: &[u8],
    now: UnixTime,
    rng: &mut R,
) -> Result<(Received, ChangeSet)> {
    const WHAT: &str = "introduction";
    if !q.invitation {
        return Err(Error::UnexpectedMessage);
    }
    if q.invite_used {
        return Err(Error::InvitationUsed);
    }
    if now.millis() >= q.invite_expires_at_ms {
        return Err(Error::InvitationExpired);
    }
    let intro: lp::Introduction = codec::decode_bounded(body, MAX_RECORD_BYTES, WHAT)?;
    let claimed = e2e::inspect_bundle(&intro.bundle)?.address();
    if e2e::contact(store, &claimed)?.is_some() {
        return Err(Error::AlreadyContact);
    }
    let mut o = Overlay::new(store);
    let (peer, cs) = e2e::add_contact(&o, &intro.bundle)?;
    o.apply(cs);
    let (from, plain, cs) = e2e::open(&o, &intro.sealed, now, rng)?;
    if from != peer {
        return Err(Error::UnexpectedMessage);
    }
    o.apply(cs);
    let env = Envelope::decode(&plain)?;
    let Body::ContactCard(card) = env.body else {
        return Err(Error::UnexpectedMessage);
    };
    let mut cs = o.into_changes();
    let ours = codec::fixed::<QUEUE_ID_BYTES>(&q.recipient_id, "queue record")
        .map_err(|_| corrupt(Namespace::Queue))?;
    save_route(&mut cs, &peer, &card.queue, &card.display_name, &ours);
    let mut rec = q.clone();
    rec.invite_used = true;
    rec.contact = peer.as_bytes().to_vec();
    save(&mut cs, Namespace::Queue, &ours, &rec);
    // Messages that overtook the introduction: open them now.
    let mut early = Vec::new();
    let ns = Namespace::Fragment;
    let prefix = early_prefix(&ours);
    let mut o = Overlay::new(store);
    o.apply(cs);
    for k in store
        .keys(ns)?
        .into_iter()
        .filter(|k| k.starts_with(&prefix))
    {
        let sealed = store
            .get(ns, &k)?
            .map(|r| r.checked(ns).map(<[u8]>::to_vec))
            .transpose()?;
        o.delete(ns, &k);
        if let Some(sealed) = sealed
            && let Ok((Received::Message { envelope, .. }, more)) =
                receive_sealed(&o, &rec, &sealed, now, rng)
        {
            o.apply(more);
            early.push(envelope);
        }
    }
    Ok((
        Received::NewContact {
            peer,
            display_name: card.display_name,
            early,
        },
        o.into_changes(),
    ))
}

fn receive_chunk(
    store: &dyn KvStore,
    q: &lp::QueueRecord,
    wire: &[u8],
    now: UnixTime,
) -> Result<(Received, ChangeSet)> {
    const WHAT: &str = "attachment chunk";
    let id = wire.get(1..17).ok_or(malformed(WHAT))?;
    let Some(rec): Option<lp::AttachmentRecord> = load(store, Namespace::Attachment, id)? else {
        // Onion paths reorder: the message announcing the attachment may
        // still be on its way. Park the chunk (bounded) until it comes.
        return park_chunk(store, q, wire, now);
    };
    let bad = |_| corrupt(Namespace::Attachment);
    let from = Address::from_slice(&rec.peer).ok_or(corrupt(Namespace::Attachment))?;
    if q.contact != rec.peer {
        // A chunk for another contact's attachment.
        return Err(Error::UnexpectedMessage);
    }
    let aref = AttachmentRef {
        id: codec::fixed(&rec.id, WHAT).map_err(bad)?,
        key: Zeroizing::new(codec::fixed(&rec.key, WHAT).map_err(bad)?),
        size: rec.size,
        digest: codec::fixed(&rec.digest, WHAT).map_err(bad)?,
    };
    let cs = attachment::receive_chunk(store, &aref, wire)?;
    if cs.is_empty() {
        return Ok((Received::Duplicate, cs));
    }
    // This chunk is in `cs`, not yet in the store.
    let missing = attachment::missing_chunks(store, &aref)?
        .len()
        .saturating_sub(1);
    Ok((
        Received::Chunk {
            from,
            message_id: codec::fixed(&rec.message_id, WHAT).map_err(bad)?,
            attachment: aref,
            missing,
        },
        cs,
    ))
}

/// Most chunks parked per queue while their announcing message is on its
/// way.
pub const MAX_PARKED_CHUNKS: usize = 4096;
const PARKED_KEY_BYTES: usize = QUEUE_ID_BYTES + 16 + 4;

fn parked_key(queue: &[u8], attachment: &[u8], index: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(PARKED_KEY_BYTES);
    k.extend_from_slice(queue);
    k.extend_from_slice(attachment);
    k.extend_from_slice(index);
    k
}

/// Keeps a chunk whose attachment is not announced yet (keyed by queue,
/// attachment id and index, next to the fragments). Checked only when
/// its message arrives.
fn park_chunk(
    store: &dyn KvStore,
    q: &lp::QueueRecord,
    wire: &[u8],
    now: UnixTime,
) -> Result<(Received, ChangeSet)> {
    const WHAT: &str = "attachment chunk";
    if wire.len() > crate::consts::MAX_ATTACHMENT_CHUNK_BYTES {
        return Err(malformed(WHAT));
    }
    let (Some(id), Some(index)) = (wire.get(1..17), wire.get(17..21)) else {
        return Err(malformed(WHAT));
    };
    let key = parked_key(&q.recipient_id, id, index);
    let ns = Namespace::Fragment;
    if store.get(ns, &key)?.is_some() {
        return Ok((Received::Duplicate, ChangeSet::new()));
    }
    let parked = store
        .keys(ns)?
        .iter()
        .filter(|k| k.len() == PARKED_KEY_BYTES && k.starts_with(&q.recipient_id))
        .count();
    if parked >= MAX_PARKED_CHUNKS {
        return Err(Error::TooManyPendingMessages);
    }
    let mut v = Vec::with_capacity(8 + wire.len());
    v.extend_from_slice(&now.millis().to_be_bytes());
    v.extend_from_slice(wire);
    let mut cs = ChangeSet::new();
    cs.put(ns, &key, Record::current(ns, v));
    Ok((Received::Partial, cs))
}

/// Takes in the chunks parked for an attachment that was just announced.
fn unpark_chunks(
    store: &dyn KvStore,
    queue: &[u8],
    aref: &AttachmentRef,
    cs: &mut ChangeSet,
) -> Result<()> {
    let ns = Namespace::Fragment;
    let prefix = parked_key(queue, &aref.id, &[]);
    for k in store.keys(ns)? {
        if k.len() != PARKED_KEY_BYTES || !k.starts_with(&prefix) {
            continue;
        }
        if let Some(r) = store.get(ns, &k)? {
            let wire = r.checked(ns)?.get(8..).unwrap_or_default();
            // A forged or damaged parked chunk is simply dropped.
            if let Ok(c) = attachment::receive_chunk(store, aref, wire) {
                cs.extend(c);
            }
        }
        cs.delete(ns, &k);
    }
    Ok(())
}

/// The attachment announced with id `id`, if any.
pub fn attachment(store: &dyn KvStore, id: &[u8; 16]) -> Result<Option<(Address, AttachmentRef)>> {
    let Some(rec): Option<lp::AttachmentRecord> = load(store, Namespace::Attachment, id)? else {
        return Ok(None);
    };
    let bad = |_| corrupt(Namespace::Attachment);
    Ok(Some((
        Address::from_slice(&rec.peer).ok_or(corrupt(Namespace::Attachment))?,
        AttachmentRef {
            id: *id,
            key: Zeroizing::new(codec::fixed(&rec.key, "attachment").map_err(bad)?),
            size: rec.size,
            digest: codec::fixed(&rec.digest, "attachment").map_err(bad)?,
        },
    )))
}

/// Seals arbitrary blob content under a queue's blob key, so fuzzers and
/// tests can reach the parsers behind the AEAD. Not for protocol use.
#[doc(hidden)]
pub fn seal_raw_blob<R: RngCore + CryptoRng>(
    key: &[u8; 32],
    inner: &[u8],
    rng: &mut R,
) -> Result<Blob> {
    seal_blob(key, inner, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(11)
    }

    #[test]
    fn rejects_bad_blob_contents() {
        let mut r = rng();
        let key = [9u8; 32];
        // Wrong key.
        let b = fragment(&key, MSG_SEALED, b"hello", &mut r).unwrap();
        assert!(open_blob(&[8u8; 32], &b[0]).is_err());
        // Unknown kind, non-zero padding, index past total, zero total.
        for inner in [
            vec![9u8, 1, 2],
            {
                let mut v = vec![KIND_CHUNK, 0, 1, 7];
                v.push(1);
                v
            },
            {
                let mut v = vec![KIND_FRAGMENT];
                v.extend_from_slice(&[0; 16]);
                v.extend_from_slice(&[2, 2, 0, 1, 0xAA]);
                v
            },
            {
                let mut v = vec![KIND_FRAGMENT];
                v.extend_from_slice(&[0; 16]);
                v.extend_from_slice(&[0, 0, 0, 1, 0xAA]);
                v
            },
            {
                let mut v = vec![KIND_FRAGMENT];
                v.extend_from_slice(&[0; 16]);
                v.extend_from_slice(&[0, 1, 0x7F, 0xFF]);
                v
            },
        ] {
            let blob = seal_blob(&key, &inner, &mut r).unwrap();
            let opened = open_blob(&key, &blob).unwrap();
            assert!(parse_inner(&opened).is_err(), "{inner:?}");
        }
    }

    #[test]
    fn sizes_match_the_spec() {
        // docs/mailbox-format.md states these numbers.
        assert_eq!(BLOB_INNER_BYTES, 2008);
        assert_eq!(FRAGMENT_DATA_BYTES, 1987);
        assert_eq!(MAX_FRAGMENTS, 14);
        const { assert!(crate::consts::CHUNK_PLAINTEXT_BYTES + 41 + 3 <= BLOB_INNER_BYTES) };
    }

    #[test]
    fn fragments_round_trip_at_every_size_boundary() {
        let mut r = rng();
        let key = [3u8; 32];
        for len in [
            1,
            FRAGMENT_DATA_BYTES - 1,
            FRAGMENT_DATA_BYTES,
            3 * FRAGMENT_DATA_BYTES + 5,
        ] {
            let body = vec![0x5Au8; len];
            let blobs = fragment(&key, MSG_SEALED, &body, &mut r).unwrap();
            let (t, got) = reassemble_standalone(&key, &blobs).unwrap();
            assert_eq!((t, got.as_slice()), (MSG_SEALED, body.as_slice()));
        }
    }

    #[test]
    fn rejects_bad_links() {
        let now = UnixTime(1_000);
        let inv = Invitation {
            relay: RelayAddress::parse("postern-relay://127.0.0.1:4443").unwrap(),
            sender_id: [1; 16],
            key: Zeroizing::new([2; 32]),
            expires_at: UnixTime(2_000),
        };
        let link = inv.to_link();
        assert_eq!(Invitation::parse(&link, now).unwrap(), inv);
        assert!(matches!(
            Invitation::parse(&link, UnixTime(2_000)),
            Err(Error::InvitationExpired)
        ));
        for bad in [
            String::new(),
            "postern:".into(),
            "https://example.com".into(),
            link.replace("postern:", "postern:!"),
            link[..link.len() - 3].to_owned(),
            format!("{link}{}", "A".repeat(600)),
        ] {
            assert!(Invitation::parse(&bad, now).is_err(), "{bad}");
        }
        assert!(!format!("{inv:?}").contains("2, 2"));
    }
}
