//! Onion delivery acknowledgements: packets awaiting one, loop packets,
//! resend bookkeeping.

use crate::codec::{self, local_proto as lp};
use crate::consts::BLOB_BYTES;
use crate::error::{Error, Result};
use crate::relay_address::RelayAddress;
use crate::relay_proto::{Blob, QueueId};
use crate::store::{ChangeSet, KvStore, Namespace};
use crate::time::UnixTime;

use super::*;

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

/// Forgets a blob given up on: this attempt and every earlier one (the
/// message it belongs to, if any, has failed).
pub fn forget_pending(store: &dyn KvStore, id: &[u8; 16], now: UnixTime) -> Result<ChangeSet> {
    let mut cs = ChangeSet::new();
    if let Some(r) = load::<lp::PendingAckRecord>(store, Namespace::PendingAck, id)? {
        settle(store, &[&r.blob], false, now, &mut cs)?;
    }
    delete_attempts(store, id, false, &mut cs)?;
    Ok(cs)
}

/// Most attempts one blob's chain can have (resends are capped well below).
pub(super) const MAX_ATTEMPT_CHAIN: usize = 64;

/// Deletes the pending record `start` and the attempts linked from it,
/// following `next` links when `forward`, else `prev` links.
pub(super) fn delete_attempts(
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
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AcksReceived {
    /// Blobs (messages, chunks, receipts) confirmed delivered.
    pub delivered: usize,
    /// Loop cover packets that came back.
    pub loops: usize,
    /// Messages now stored whole at their recipient's relay.
    pub stored: Vec<DeliveryChange>,
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
    now: UnixTime,
) -> Result<(AcksReceived, ChangeSet)> {
    let ns = Namespace::PendingAck;
    let mut cs = ChangeSet::new();
    let mut got = AcksReceived::default();
    let mut settled: Vec<Vec<u8>> = Vec::new();
    for (id, payload, _) in crate::onion::pair_replies(blobs) {
        let Some(r): Option<lp::PendingAckRecord> = load(store, ns, &id)? else {
            continue;
        };
        let rec = crate::crypto::sphinx::SurbRecovery::from_bytes(&r.recovery)
            .map_err(|_| corrupt(ns))?;
        if crate::onion::open_ack(&rec, &payload).is_ok() {
            // This attempt and every other attempt of the same blob.
            cs.delete(ns, &id);
            if !r.is_loop {
                settled.push(r.blob.clone());
            }
            delete_attempts(store, &r.prev, false, &mut cs)?;
            delete_attempts(store, &r.next, true, &mut cs)?;
            if r.is_loop {
                got.loops += 1;
            } else {
                got.delivered += 1;
            }
        }
    }
    let settled: Vec<&[u8]> = settled.iter().map(Vec::as_slice).collect();
    got.stored = settle(store, &settled, true, now, &mut cs)?;
    Ok((got, cs))
}
