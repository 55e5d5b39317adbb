//! What a client does with the blobs it fetched from one of its queues:
//! hand each to the courier, commit what it changed (one change set per
//! blob, each before the next is read), collect the delivery receipts to
//! send, and say what happened as [`Event`]s for the shell to show. Which
//! items to acknowledge to the relay comes back too.
//!
//! A hostile or broken blob is dropped and reported (`Event::Dropped`
//! with its coarse kind) and still acknowledged, so a relay never hands it
//! out again. A failure of the store itself ends the batch with an error
//! and nothing is acknowledged: the relay hands the items out again and
//! the courier recognises those already processed as duplicates.

use std::collections::BTreeMap;

use postern_core::consts::{BLOB_BYTES, MAX_RECEIPT_IDS};
use postern_core::courier::{self, OwnQueue, Received};
use postern_core::message::{AttachmentRef, Body, Envelope};
use postern_core::relay_proto::Blob;
use postern_core::{Address, Error, ErrorKind, KvStore, UnixTime, attachment};
use rand_core::{CryptoRng, RngCore};

/// Something the user should hear about.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Someone accepted one of our invitations (with any messages that
    /// came before the introduction).
    NewContact {
        /// Their address.
        peer: Address,
        /// The name they gave.
        display_name: String,
        /// Messages that overtook the introduction.
        early: Vec<Envelope>,
    },
    /// A message from a contact.
    Message {
        /// Who sent it.
        from: Address,
        /// The message.
        envelope: Envelope,
    },
    /// A chunk of an attachment arrived; `missing` more are awaited (a
    /// transfer's progress, resumed after a restart from what is stored).
    Chunk {
        /// Who sent it.
        from: Address,
        /// The message it belongs to.
        message_id: [u8; 16],
        /// Chunks still missing.
        missing: usize,
        /// Chunks in all.
        total: usize,
    },
    /// A message came from a contact whose identity key is not the one
    /// pinned: nothing from it is opened (or sent to it) until the user
    /// accepts the new key.
    KeyChanged {
        /// The contact.
        peer: Address,
    },
    /// Every chunk of an attachment is in and checked: it can be saved.
    AttachmentReady {
        /// Who sent it.
        from: Address,
        /// The message it belongs to.
        message_id: [u8; 16],
        /// The attachment.
        attachment: AttachmentRef,
    },
    /// Onion deliveries confirmed by their acknowledgements.
    Confirmed {
        /// Packets confirmed.
        packets: usize,
        /// Messages now stored whole at their recipient's relay.
        stored: Vec<courier::DeliveryChange>,
    },
    /// A blob that could not be used was dropped.
    Dropped {
        /// Why, coarsely.
        kind: ErrorKind,
    },
}

/// Items asked for per fetch: the relay's bound.
pub const FETCH_BATCH: u32 = postern_core::consts::MAX_FETCH;

/// Whether to fetch the same queue again after a batch of `fetched` items
/// of which `acknowledged` were acknowledged, when the relay said `more`
/// wait. Not when nothing came or nothing could be acknowledged (those
/// items would only come back: a lone half of a reply waits for its other
/// half), nor when the queue is drained.
pub fn fetch_again(fetched: usize, acknowledged: usize, more: bool) -> bool {
    fetched > 0 && acknowledged > 0 && more
}

/// Message ids to confirm to each contact with delivery receipts.
pub type Receipts = BTreeMap<Address, Vec<[u8; 16]>>;

/// The outcome of one fetched batch.
#[derive(Debug, Default)]
pub struct Batch {
    /// Item ids to acknowledge to the relay.
    pub ack: Vec<u64>,
    /// What happened, in order.
    pub events: Vec<Event>,
    /// Loop cover packets that came back.
    pub loops_back: usize,
    /// Blobs recognised as already received (a relay handing an item out
    /// again, or a resend of something that did arrive).
    pub duplicates: usize,
}

/// Handles the `items` (relay item id, blob) fetched from `queue`,
/// committing to `store` as it goes; message ids to confirm are added to
/// `receipts`.
pub fn receive<'a, R: RngCore + CryptoRng>(
    store: &mut dyn KvStore,
    queue: &OwnQueue,
    items: impl IntoIterator<Item = (u64, &'a Blob)>,
    now: UnixTime,
    rng: &mut R,
    receipts: &mut Receipts,
) -> Result<Batch, Error> {
    let items: Vec<(u64, &Blob)> = items.into_iter().collect();
    if queue.acks {
        return acknowledgements(store, &items, now);
    }
    let mut batch = Batch::default();
    for (id, blob) in items {
        match courier::receive(&*store, &queue.recipient_id, blob, now, rng) {
            Ok((got, cs)) => {
                store.commit(cs)?;
                if matches!(got, Received::Duplicate) {
                    batch.duplicates = batch.duplicates.saturating_add(1);
                }
                events(&*store, got, receipts, &mut batch.events)?;
            }
            Err(e) if e.kind() == ErrorKind::Storage => return Err(e),
            Err(Error::IdentityKeyChanged { peer }) => {
                batch.events.push(Event::KeyChanged { peer })
            }
            Err(e) => batch.events.push(Event::Dropped { kind: e.kind() }),
        }
        batch.ack.push(id);
    }
    Ok(batch)
}

/// Delivery acknowledgements: confirms pending sends and loops. A lone
/// half of a reply waits for its other half (it is acknowledged once it is
/// paired, or expires on the relay).
fn acknowledgements(
    store: &mut dyn KvStore,
    items: &[(u64, &Blob)],
    now: UnixTime,
) -> Result<Batch, Error> {
    let blobs: Vec<&[u8; BLOB_BYTES]> = items.iter().map(|(_, b)| &***b).collect();
    let pairs = postern_core::onion::pair_replies(&blobs);
    let (got, cs) = courier::receive_acks(&*store, &blobs, now)?;
    store.commit(cs)?;
    let mut batch = Batch {
        loops_back: got.loops,
        ..Batch::default()
    };
    if got.delivered > 0 {
        batch.events.push(Event::Confirmed {
            packets: got.delivered,
            stored: got.stored,
        });
    }
    for (_, _, [a, b]) in pairs {
        for i in [a, b] {
            if let Some((id, _)) = items.get(i) {
                batch.ack.push(*id);
            }
        }
    }
    Ok(batch)
}

fn events(
    store: &dyn KvStore,
    got: Received,
    receipts: &mut Receipts,
    out: &mut Vec<Event>,
) -> Result<(), Error> {
    match got {
        Received::NewContact {
            peer,
            display_name,
            early,
        } => out.push(Event::NewContact {
            peer,
            display_name,
            early,
        }),
        Received::Message { from, envelope } => {
            let aref = match &envelope.body {
                Body::Image(i) => Some(i.attachment.clone()),
                Body::File(f) => Some(f.attachment.clone()),
                Body::Voice(v) => Some(v.attachment.clone()),
                _ => None,
            };
            if matches!(envelope.body, Body::Text(_)) || aref.is_some() {
                receipts.entry(from).or_default().push(envelope.id);
            }
            let message_id = envelope.id;
            out.push(Event::Message { from, envelope });
            // Chunks that came before their message may already make it
            // complete.
            if let Some(a) = aref
                && attachment::missing_chunks(store, &a)?.is_empty()
            {
                out.push(Event::AttachmentReady {
                    from,
                    message_id,
                    attachment: a,
                });
            }
        }
        Received::Chunk {
            from,
            message_id,
            attachment,
            missing,
        } => {
            let total = attachment::chunk_count(attachment.size).map_or(0, |n| n as usize);
            out.push(Event::Chunk {
                from,
                message_id,
                missing,
                total,
            });
            if missing == 0 {
                out.push(Event::AttachmentReady {
                    from,
                    message_id,
                    attachment,
                });
            }
        }
        _ => {}
    }
    Ok(())
}

/// The receipt messages to send: one per contact per [`MAX_RECEIPT_IDS`]
/// ids.
pub fn receipt_bodies(receipts: Receipts) -> Vec<(Address, Body)> {
    let mut out = Vec::new();
    for (peer, ids) in receipts {
        for chunk in ids.chunks(MAX_RECEIPT_IDS) {
            out.push((peer, Body::Receipt(chunk.to_vec())));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::outbox;
    use crate::testing::{Pair, pair};
    use postern_core::StoreError;
    use postern_core::message::Text;
    use postern_core::store::{
        AttachmentId, ChangeSet, ConversationSummary, MemStore, MessageId, Namespace, OutboxEntry,
        Record, StoredMessage,
    };
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::borrow::Cow;

    const T: UnixTime = UnixTime(1_800_000_000_000);

    fn alice_queue(p: &Pair) -> OwnQueue {
        courier::own_queues(&p.alice)
            .unwrap()
            .into_iter()
            .find(|q| q.recipient_id == p.alice_queue.recipient_id)
            .unwrap()
    }

    #[test]
    fn a_queue_is_fetched_again_only_while_it_yields_and_says_more() {
        assert!(fetch_again(10, 10, true));
        assert!(fetch_again(10, 2, true));
        assert!(!fetch_again(10, 10, false));
        assert!(!fetch_again(10, 0, true), "unacknowledged items would loop");
        assert!(!fetch_again(0, 0, true));
    }

    #[test]
    fn a_hostile_blob_is_dropped_and_acknowledged_and_the_rest_goes_on() {
        let mut r = ChaCha20Rng::seed_from_u64(1);
        let mut p = pair(&mut r, T);
        let q = alice_queue(&p);
        let junk: Blob = Box::new([0x5a; BLOB_BYTES]);
        let mut items: Vec<(u64, &Blob)> = vec![(1, &junk)];
        items.extend(p.intro.iter().enumerate().map(|(i, b)| (10 + i as u64, b)));
        let mut receipts = Receipts::new();
        let batch = receive(&mut p.alice, &q, items.clone(), T, &mut r, &mut receipts).unwrap();
        // Every item is acknowledged, the junk included.
        assert_eq!(batch.ack, items.iter().map(|(i, _)| *i).collect::<Vec<_>>());
        assert!(matches!(
            batch.events[0],
            Event::Dropped {
                kind: ErrorKind::PeerMisbehaved
            }
        ));
        assert!(batch.events.iter().any(
            |e| matches!(e, Event::NewContact { peer, display_name, .. } if *peer == p.bob_addr && display_name == "Bob")
        ));
        // An introduction asks for no receipt.
        assert!(receipts.is_empty());
    }

    /// A store whose commits fail (a full disk, a broken database).
    struct Broken(MemStore);

    impl KvStore for Broken {
        fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Cow<'_, Record>>, StoreError> {
            self.0.get(ns, key)
        }
        fn keys(&self, ns: Namespace) -> Result<Vec<Vec<u8>>, StoreError> {
            self.0.keys(ns)
        }
        fn commit(&mut self, _: ChangeSet) -> Result<(), StoreError> {
            Err(StoreError::Full { limit: 0 })
        }
        fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
            self.0.conversations()
        }
        fn history(&self, peer: &Address, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
            self.0.history(peer, limit)
        }
        fn has_message(&self, peer: &Address, id: &MessageId) -> Result<bool, StoreError> {
            self.0.has_message(peer, id)
        }
        fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
            self.0.outbox()
        }
        fn attachment_chunk(
            &self,
            id: &AttachmentId,
            index: u32,
        ) -> Result<Option<Cow<'_, [u8]>>, StoreError> {
            self.0.attachment_chunk(id, index)
        }
        fn attachment_chunks(&self, id: &AttachmentId) -> Result<Vec<u32>, StoreError> {
            self.0.attachment_chunks(id)
        }
        fn attachments(&self) -> Result<Vec<AttachmentId>, StoreError> {
            self.0.attachments()
        }
    }

    #[test]
    fn a_store_that_cannot_commit_ends_the_batch_with_nothing_acknowledged() {
        let mut r = ChaCha20Rng::seed_from_u64(2);
        let p = pair(&mut r, T);
        let q = alice_queue(&p);
        let items: Vec<(u64, &Blob)> = p
            .intro
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64, b))
            .collect();
        let mut broken = Broken(p.alice.clone());
        let mut receipts = Receipts::new();
        let e = receive(&mut broken, &q, items.clone(), T, &mut r, &mut receipts).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Storage);
        // Handed out again later, to a store that works: nothing was lost.
        let mut alice = p.alice.clone();
        let batch = receive(&mut alice, &q, items, T, &mut r, &mut receipts).unwrap();
        assert!(
            batch
                .events
                .iter()
                .any(|e| matches!(e, Event::NewContact { .. }))
        );
    }

    #[test]
    fn a_text_is_shown_and_confirmed_with_one_receipt_per_hundred_ids() {
        let mut r = ChaCha20Rng::seed_from_u64(3);
        let mut p = pair(&mut r, T);
        let q = alice_queue(&p);
        let intro = p.intro.clone();
        let items: Vec<(u64, &Blob)> = intro
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64, b))
            .collect();
        let mut receipts = Receipts::new();
        receive(&mut p.alice, &q, items, T, &mut r, &mut receipts).unwrap();
        let body = Body::Text(Text("hello Alice".into()));
        let (env, out) = outbox::queue(&mut p.bob, &p.alice_addr, body, None, T, &mut r).unwrap();
        let items: Vec<(u64, &Blob)> = out
            .blobs
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64, b))
            .collect();
        let batch = receive(&mut p.alice, &q, items, T, &mut r, &mut receipts).unwrap();
        let Some(Event::Message { from, envelope }) = batch.events.first() else {
            panic!("{:?}", batch.events)
        };
        assert_eq!((*from, envelope.id), (p.bob_addr, env.id));
        assert_eq!(receipts[&p.bob_addr], vec![env.id]);
        // Many ids are confirmed in several receipts, none over the limit.
        let mut many = Receipts::new();
        many.insert(
            p.bob_addr,
            (0..=MAX_RECEIPT_IDS as u8).map(|i| [i; 16]).collect(),
        );
        let bodies = receipt_bodies(many);
        assert_eq!(bodies.len(), 2);
        for (to, b) in &bodies {
            assert_eq!(*to, p.bob_addr);
            let Body::Receipt(ids) = b else { panic!() };
            assert!(ids.len() <= MAX_RECEIPT_IDS);
        }
    }
}
