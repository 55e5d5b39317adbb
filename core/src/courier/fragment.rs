//! Cutting a message into fragments and collecting them again.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::consts::QUEUE_ID_BYTES;
use crate::error::{Error, Result};
use crate::relay_proto::{Blob, QueueId};
use crate::store::{ChangeSet, KvStore, Namespace, Record};
use crate::time::UnixTime;

use super::*;

/// Cuts a typed message into sealed fragment blobs.
pub(super) fn fragment<R: RngCore + CryptoRng>(
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

pub(super) fn fragment_key(queue: &QueueId, msg_ref: &[u8; 16], index: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(QUEUE_ID_BYTES + 17);
    k.extend_from_slice(queue);
    k.extend_from_slice(msg_ref);
    k.push(index);
    k
}

/// What [`collect`] made of a fragment.
pub(super) enum Collected {
    /// Stored; the message is not complete.
    Partial,
    /// Part of a message already completed.
    Duplicate,
    /// The whole message.
    Complete(Zeroizing<Vec<u8>>),
}

/// Fragment record: `total`, receive time (ms, BE), data. Completion
/// marker (index [`DONE_INDEX`]): `0`, completion time.
pub(super) const DONE_INDEX: u8 = 0xFF;

pub(super) fn record_time(bytes: &[u8]) -> u64 {
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
pub(super) fn collect(
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
