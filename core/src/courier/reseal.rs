//! Sealing an overdue message again, on the current session.
//!
//! A blob that is resent as it was carries a Signal message encrypted on
//! the session as it stood when the message was sent. libsignal keeps the
//! receiving chains of only the last few ratchet steps, so a blob that
//! reaches the recipient only after the conversation has turned further
//! (its first copies lost while replies kept going both ways) can no
//! longer be opened: the message would be lost although it arrives. So
//! every message sealed by [`send`] is remembered (its envelope and the
//! digests of its blobs) until all its blobs are acknowledged, and an
//! overdue blob of it can be replaced by the whole message sealed afresh
//! ([`reseal`]). The recipient recognises the envelope id and keeps one
//! copy; the blobs of the earlier sealing are *retired*: when they come up
//! for a resend they are forgotten instead ([`forget_retired`]).

use rand_core::{CryptoRng, RngCore};

use crate::address::Address;
use crate::codec::{self, local_proto as lp};
use crate::e2e;
use crate::error::{Error, Result};
use crate::relay_proto::Blob;
use crate::store::{ChangeSet, KvStore, Namespace};
use crate::time::UnixTime;

use super::*;

/// What an overdue blob is, as far as resealing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedState {
    /// Not a sealed message (an attachment chunk, an introduction, or a
    /// message whose record is gone): resend it as it is.
    Other,
    /// A blob of message `message`, which can be sealed again.
    Live {
        /// The envelope id.
        message: [u8; 16],
        /// How many times the message was sealed again already.
        reseals: u32,
    },
    /// A blob of a message that was sealed again since: never resend it.
    Retired,
}

/// The key of a blob's [`Namespace::SealedBlob`] record.
pub(super) fn blob_digest(blob: &[u8]) -> [u8; 16] {
    let d = crate::crypto::hash::sha256(&[b"postern sealed blob", blob]);
    let mut k = [0u8; 16];
    k.copy_from_slice(d.get(..16).unwrap_or(&[0u8; 16]));
    k
}

/// Remembers a message just sealed into `blobs` (part of [`send`]'s
/// change set).
pub(super) fn remember(
    cs: &mut ChangeSet,
    peer: &Address,
    message: &[u8; 16],
    envelope: &[u8],
    blobs: &[Blob],
    reseals: u32,
) {
    let digests: Vec<Vec<u8>> = blobs.iter().map(|b| blob_digest(&b[..]).to_vec()).collect();
    for d in &digests {
        save(
            cs,
            Namespace::SealedBlob,
            d,
            &lp::SealedBlobRecord {
                message: message.to_vec(),
                retired: false,
            },
        );
    }
    save(
        cs,
        Namespace::Sealed,
        message,
        &lp::SealedRecord {
            peer: peer.as_bytes().to_vec(),
            envelope: envelope.to_vec(),
            blobs: digests,
            reseals,
        },
    );
}

/// What `blob` (an overdue one) is.
pub fn sealed_state(store: &dyn KvStore, blob: &Blob) -> Result<SealedState> {
    let ns = Namespace::SealedBlob;
    let Some(r): Option<lp::SealedBlobRecord> = load(store, ns, &blob_digest(&blob[..]))? else {
        return Ok(SealedState::Other);
    };
    if r.retired {
        return Ok(SealedState::Retired);
    }
    let message: [u8; 16] = codec::fixed(&r.message, "sealed blob").map_err(|_| corrupt(ns))?;
    let Some(rec) = load::<lp::SealedRecord>(store, Namespace::Sealed, &message)? else {
        return Ok(SealedState::Other);
    };
    Ok(SealedState::Live {
        message,
        reseals: rec.reseals,
    })
}

/// Seals the message that overdue blob `u` belongs to again, on the
/// current session, into fresh blobs for the peer's current queue. The
/// change set forgets `u` (every attempt of it), retires the message's
/// other unacknowledged blobs and remembers the new ones; commit it
/// before sending them. Returns the peer too. Errors with `Error::Bug`
/// when `u` is not [`SealedState::Live`].
pub fn reseal<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    u: &Unacknowledged,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Address, Outgoing, ChangeSet)> {
    let SealedState::Live { message, .. } = sealed_state(store, &u.blob)? else {
        return Err(Error::Bug("reseal of a blob that is not a live message"));
    };
    let ns = Namespace::Sealed;
    let rec: lp::SealedRecord = load(store, ns, &message)?.ok_or(corrupt(ns))?;
    let peer = Address::from_slice(&rec.peer).ok_or(corrupt(ns))?;
    let r = route(store, &peer)?.ok_or(Error::NoRoute { peer })?;
    let (sealed, mut cs) = e2e::seal(store, &peer, &rec.envelope, now, rng)?;
    let blobs = fragment(&r.queue.blob_key, MSG_SEALED, &sealed, rng)?;
    let own = blob_digest(&u.blob[..]);
    for d in &rec.blobs {
        if d[..] == own[..] {
            cs.delete(Namespace::SealedBlob, d);
        } else {
            save(
                &mut cs,
                Namespace::SealedBlob,
                d,
                &lp::SealedBlobRecord {
                    message: message.to_vec(),
                    retired: true,
                },
            );
        }
    }
    delete_attempts(store, &u.id, false, &mut cs)?;
    let reseals = rec.reseals.saturating_add(1);
    remember(&mut cs, &peer, &message, &rec.envelope, &blobs, reseals);
    Ok((
        peer,
        Outgoing {
            relay: r.queue.relay,
            sender_id: r.queue.sender_id,
            blobs,
        },
        cs,
    ))
}

/// Forgets overdue blob `u` of a message sealed again since
/// ([`SealedState::Retired`]): every attempt of it.
pub fn forget_retired(store: &dyn KvStore, u: &Unacknowledged) -> Result<ChangeSet> {
    let mut cs = ChangeSet::new();
    delete_attempts(store, &u.id, false, &mut cs)?;
    cs.delete(Namespace::SealedBlob, &blob_digest(&u.blob[..]));
    Ok(cs)
}

/// Sealed-message bookkeeping for blobs that are settled, several at
/// once — `acked`: acknowledged by the mailbox relay, else given up. Each
/// blob's record goes, a message none of whose current blobs is left is
/// forgotten, and its delivery state moves: stored once every blob of its
/// current sealing is acknowledged, failed as soon as one is given up.
/// Returns the messages whose state moved.
pub(super) fn settle(
    store: &dyn KvStore,
    blobs: &[&[u8]],
    acked: bool,
    now: UnixTime,
    cs: &mut ChangeSet,
) -> Result<Vec<DeliveryChange>> {
    let mut touched: std::collections::BTreeMap<Vec<u8>, lp::SealedRecord> =
        std::collections::BTreeMap::new();
    for blob in blobs {
        let d = blob_digest(blob);
        let Some(b): Option<lp::SealedBlobRecord> = load(store, Namespace::SealedBlob, &d)? else {
            continue;
        };
        cs.delete(Namespace::SealedBlob, &d);
        if b.retired {
            continue;
        }
        let rec = match touched.get_mut(&b.message) {
            Some(r) => r,
            None => {
                let Some(r) = load(store, Namespace::Sealed, &b.message)? else {
                    continue;
                };
                touched.entry(b.message.clone()).or_insert(r)
            }
        };
        rec.blobs.retain(|x| x[..] != d[..]);
    }
    let mut changed = Vec::new();
    for (message, rec) in touched {
        let complete = rec.blobs.is_empty();
        if complete {
            cs.delete(Namespace::Sealed, &message);
        } else {
            save(cs, Namespace::Sealed, &message, &rec);
        }
        let to = match (acked, complete) {
            (true, true) => DeliveryState::Stored,
            (true, false) => continue,
            (false, _) => DeliveryState::Failed,
        };
        let id: [u8; 16] =
            codec::fixed(&message, "sealed record").map_err(|_| corrupt(Namespace::Sealed))?;
        let peer = Address::from_slice(&rec.peer).ok_or(corrupt(Namespace::Sealed))?;
        if advance(store, cs, &id, Some(&peer), to, now)? {
            changed.push(DeliveryChange {
                peer,
                id,
                state: to,
            });
        }
    }
    Ok(changed)
}

/// Forgets the sealed-message records no unacknowledged blob refers to
/// any more: messages sent where no acknowledgement comes (straight to
/// the queue's relay), and anything a crash or a bug left behind. Cheap
/// enough to run with every resend round; it bounds what this module
/// keeps by what awaits an acknowledgement. A message still waiting in
/// the outbox loses only its ability to be sealed again (its blobs are
/// then resent as they are).
pub fn forget_unawaited_sealed(store: &dyn KvStore) -> Result<ChangeSet> {
    let ns = Namespace::PendingAck;
    let mut awaited = std::collections::BTreeSet::new();
    for k in store.keys(ns)? {
        let r: lp::PendingAckRecord = load(store, ns, &k)?.ok_or(corrupt(ns))?;
        if !r.is_loop {
            awaited.insert(blob_digest(&r.blob).to_vec());
        }
    }
    let mut cs = ChangeSet::new();
    for d in store.keys(Namespace::SealedBlob)? {
        if !awaited.contains(&d) {
            cs.delete(Namespace::SealedBlob, &d);
        }
    }
    for m in store.keys(Namespace::Sealed)? {
        let rec: lp::SealedRecord =
            load(store, Namespace::Sealed, &m)?.ok_or(corrupt(Namespace::Sealed))?;
        if !rec.blobs.iter().any(|d| awaited.contains(d)) {
            cs.delete(Namespace::Sealed, &m);
        }
    }
    Ok(cs)
}
