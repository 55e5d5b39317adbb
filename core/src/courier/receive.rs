//! Receiving a blob: sealed messages, introductions, attachment chunks.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::attachment;
use crate::codec::{self, local_proto as lp};
use crate::consts::{BLOB_BYTES, MAX_RECORD_BYTES, QUEUE_ID_BYTES};
use crate::e2e;
use crate::error::{Error, Result};
use crate::message::{AttachmentRef, Body, Envelope};
use crate::relay_proto::QueueId;
use crate::store::{ChangeSet, Direction, KvStore, Namespace, Overlay, StoredMessage};
use crate::time::UnixTime;

use super::*;

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

pub(super) fn receive_sealed<R: RngCore + CryptoRng>(
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
    apply_body(store, &from, &env, q, now, &mut cs)?;
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

/// Side effects of a body: announced attachments are remembered, control
/// messages update the route, a receipt marks our messages to its sender
/// delivered.
pub(super) fn apply_body(
    store: &dyn KvStore,
    from: &Address,
    env: &Envelope,
    q: &lp::QueueRecord,
    now: UnixTime,
    cs: &mut ChangeSet,
) -> Result<()> {
    let aref = match &env.body {
        Body::Receipt(ids) => {
            mark_delivered(store, cs, from, ids, now)?;
            None
        }
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

pub(super) fn receive_introduction<R: RngCore + CryptoRng>(
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
    let bundle = e2e::inspect_bundle(&intro.bundle)?;
    let claimed = bundle.address();
    if let Some(known) = e2e::contact(store, &claimed)? {
        if known.identity.to_bytes() != bundle.identity().to_bytes() {
            return Err(Error::IdentityKeyChanged { peer: claimed });
        }
        // A known contact may introduce themselves again only when we can
        // no longer talk to them (we reset our keys): the new session and
        // their new queue replace the lost ones.
        if e2e::has_session(store, &claimed)? {
            return Err(Error::AlreadyContact);
        }
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

pub(super) fn receive_chunk(
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
