//! What arrives before it can be read waits here: messages on an
//! invitation queue before its introduction, chunks before their
//! announcing message.

use crate::attachment;
use crate::codec::local_proto as lp;
use crate::consts::QUEUE_ID_BYTES;
use crate::error::{Error, Result};
use crate::message::AttachmentRef;
use crate::store::{ChangeSet, KvStore, Namespace, Record};
use crate::time::UnixTime;

use super::*;

/// Most messages kept per invitation queue while its introduction is on
/// its way.
pub const MAX_EARLY_MESSAGES: usize = 16;
pub(super) const EARLY_TAG: &[u8] = b"early";

pub(super) fn early_prefix(queue: &[u8]) -> Vec<u8> {
    let mut k = queue.to_vec();
    k.extend_from_slice(EARLY_TAG);
    k
}

pub(super) fn park_early(
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

/// Most chunks parked per queue while their announcing message is on its
/// way.
pub const MAX_PARKED_CHUNKS: usize = 4096;
pub(super) const PARKED_KEY_BYTES: usize = QUEUE_ID_BYTES + 16 + 4;

pub(super) fn parked_key(queue: &[u8], attachment: &[u8], index: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(PARKED_KEY_BYTES);
    k.extend_from_slice(queue);
    k.extend_from_slice(attachment);
    k.extend_from_slice(index);
    k
}

/// Keeps a chunk whose attachment is not announced yet (keyed by queue,
/// attachment id and index, next to the fragments). Checked only when
/// its message arrives.
pub(super) fn park_chunk(
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
pub(super) fn unpark_chunks(
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
