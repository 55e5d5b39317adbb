//! Sealing a message or an attachment into blobs for a contact's queue.

use rand_core::{CryptoRng, RngCore};

use crate::address::Address;
use crate::attachment;
use crate::consts::{
    BLOB_BYTES, CHUNK_PLAINTEXT_BYTES, MAX_RELAY_ADDRESS_BYTES, MAX_STORED_MESSAGE_BYTES,
    QUEUE_ID_BYTES,
};
use crate::e2e;
use crate::error::{Error, Result};
use crate::message::{AttachmentRef, Body, Envelope};
use crate::relay_proto::Blob;
use crate::store::{ChangeSet, Direction, KvStore, StoredMessage};
use crate::time::UnixTime;

use super::*;

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
    remember(&mut cs, peer, &env.id, &plain, &blobs, 0);
    if !matches!(env.body, Body::Receipt(_)) {
        record_queued(&mut cs, peer, &env.id, now);
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

/// Seals a failed message again — `envelope`, the encoded envelope kept
/// in its conversation — on the current session, for the peer's current
/// queue: the user's retry. Its delivery state goes back to queued; the
/// recipient keeps one copy should an earlier one arrive too (the
/// envelope id is the same). Errors with `Error::Bug` unless the message
/// `id` to `peer` failed.
pub fn send_again<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    peer: &Address,
    id: &[u8; 16],
    envelope: &[u8],
    now: UnixTime,
    rng: &mut R,
) -> Result<(Outgoing, ChangeSet)> {
    match delivery(store, id)? {
        Some(d) if d.peer == *peer && d.state == DeliveryState::Failed => {}
        _ => return Err(Error::Bug("retry of a message that did not fail")),
    }
    let env = Envelope::decode(envelope)?;
    if env.id != *id {
        return Err(Error::Bug("retry of another message"));
    }
    let r = route(store, peer)?.ok_or(Error::NoRoute { peer: *peer })?;
    let (sealed, mut cs) = e2e::seal(store, peer, envelope, now, rng)?;
    let blobs = fragment(&r.queue.blob_key, MSG_SEALED, &sealed, rng)?;
    remember(&mut cs, peer, id, envelope, &blobs, 0);
    advance(store, &mut cs, id, Some(peer), DeliveryState::Queued, now)?;
    Ok((
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
