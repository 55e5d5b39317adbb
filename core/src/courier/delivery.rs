//! How far each message we sent has got, as its sender sees it: queued
//! (committed, not yet handed on), in the network (every blob handed to an
//! entry relay), stored at the recipient's relay (every blob of its current
//! sealing acknowledged through its reply block, or accepted by the
//! queue's relay itself when sent directly), delivered (the recipient's
//! receipt named it), or failed (a blob was given up).
//!
//! The state only moves forward — queued, in the network, stored,
//! delivered — with two exceptions: a message still queued or in the
//! network fails when one of its blobs is given up, and a failed message
//! goes back to queued when the user retries it. A late acknowledgement or
//! receipt still lifts a failed message to stored or delivered: it says
//! what happened. Only the contact a message was sent to can mark it
//! delivered; a receipt naming someone else's message changes nothing.

use crate::address::Address;
use crate::codec::local_proto as lp;
use crate::error::Result;
use crate::store::{ChangeSet, KvStore, Namespace};
use crate::time::UnixTime;

use super::*;

/// How far a message we sent has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DeliveryState {
    /// Committed to the outbox; not all of it has left yet.
    Queued = 1,
    /// Every blob was handed to an entry relay of the onion network.
    Sent = 2,
    /// Every blob is stored in the recipient's mailbox queue: its relay
    /// acknowledged it through the packet's reply block (or accepted it
    /// itself, when sent without an onion network).
    Stored = 3,
    /// The recipient's client confirmed it with a receipt.
    Delivered = 4,
    /// A blob of it was given up after its last attempt.
    Failed = 5,
}

impl DeliveryState {
    fn from_code(code: u32) -> Option<DeliveryState> {
        [
            DeliveryState::Queued,
            DeliveryState::Sent,
            DeliveryState::Stored,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|s| *s as u32 == code)
    }

    /// Progress along queued → in the network → stored → delivered.
    fn rank(self) -> u8 {
        match self {
            DeliveryState::Queued | DeliveryState::Failed => 0,
            DeliveryState::Sent => 1,
            DeliveryState::Stored => 2,
            DeliveryState::Delivered => 3,
        }
    }

    /// Whether a message in this state may move to `to`.
    pub fn may_become(self, to: DeliveryState) -> bool {
        match (self, to) {
            (DeliveryState::Failed, DeliveryState::Queued) => true,
            (_, DeliveryState::Failed) => {
                matches!(self, DeliveryState::Queued | DeliveryState::Sent)
            }
            (DeliveryState::Failed, DeliveryState::Sent) => false,
            _ => to.rank() > self.rank(),
        }
    }
}

/// A message's delivery record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Who it was sent to.
    pub peer: Address,
    /// How far it got.
    pub state: DeliveryState,
    /// When that last changed.
    pub updated: UnixTime,
}

/// The delivery record of the message we sent with envelope id `id`, if
/// there is one (messages sent before delivery was recorded have none).
pub fn delivery(store: &dyn KvStore, id: &[u8; 16]) -> Result<Option<Delivery>> {
    let ns = Namespace::Delivery;
    let Some(r): Option<lp::DeliveryRecord> = load(store, ns, id)? else {
        return Ok(None);
    };
    Ok(Some(Delivery {
        peer: Address::from_slice(&r.peer).ok_or(corrupt(ns))?,
        state: DeliveryState::from_code(r.state).ok_or(corrupt(ns))?,
        updated: UnixTime(r.updated_ms),
    }))
}

/// Records a message just sealed for `peer` as queued (part of
/// [`send`]'s change set).
pub(super) fn record_queued(cs: &mut ChangeSet, peer: &Address, id: &[u8; 16], now: UnixTime) {
    save_state(cs, peer, id, DeliveryState::Queued, now);
}

fn save_state(
    cs: &mut ChangeSet,
    peer: &Address,
    id: &[u8; 16],
    state: DeliveryState,
    now: UnixTime,
) {
    save(
        cs,
        Namespace::Delivery,
        id,
        &lp::DeliveryRecord {
            peer: peer.as_bytes().to_vec(),
            state: state as u32,
            updated_ms: now.millis(),
        },
    );
}

/// Moves message `id` to `to` in `cs` when its record exists, `peer`
/// (if given) is the contact it was sent to, and the move is allowed.
/// Returns whether it moved.
pub(super) fn advance(
    store: &dyn KvStore,
    cs: &mut ChangeSet,
    id: &[u8; 16],
    peer: Option<&Address>,
    to: DeliveryState,
    now: UnixTime,
) -> Result<bool> {
    let Some(d) = delivery(store, id)? else {
        return Ok(false);
    };
    if peer.is_some_and(|p| *p != d.peer) || !d.state.may_become(to) {
        return Ok(false);
    }
    save_state(cs, &d.peer, id, to, now);
    Ok(true)
}

/// Outbox entry `id` has left whole: a message becomes in the network,
/// or stored when it went straight to its queue's relay (which answers
/// only once the blob is stored durably). Entries that are not messages
/// (attachment chunks, introductions) have no record and are left alone.
pub fn mark_sent(
    store: &dyn KvStore,
    id: &[u8; 16],
    directly: bool,
    now: UnixTime,
) -> Result<ChangeSet> {
    let mut cs = ChangeSet::new();
    let to = if directly {
        DeliveryState::Stored
    } else {
        DeliveryState::Sent
    };
    advance(store, &mut cs, id, None, to, now)?;
    Ok(cs)
}

/// The ids a receipt from `from` confirms, marked delivered in `cs`.
pub(super) fn mark_delivered(
    store: &dyn KvStore,
    cs: &mut ChangeSet,
    from: &Address,
    ids: &[[u8; 16]],
    now: UnixTime,
) -> Result<Vec<[u8; 16]>> {
    let mut moved = Vec::new();
    for id in ids {
        if advance(store, cs, id, Some(from), DeliveryState::Delivered, now)? {
            moved.push(*id);
        }
    }
    Ok(moved)
}

/// A message whose delivery state changed, for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryChange {
    /// Who it was sent to.
    pub peer: Address,
    /// Its envelope id.
    pub id: [u8; 16],
    /// Its new state.
    pub state: DeliveryState,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use DeliveryState::*;

    const T: UnixTime = UnixTime(1_800_000_000_000);

    #[test]
    fn the_state_only_moves_forward_but_for_failure_and_a_retry() {
        let all = [Queued, Sent, Stored, Delivered, Failed];
        let allowed: Vec<(DeliveryState, DeliveryState)> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.may_become(*b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Queued, Sent),
                (Queued, Stored),
                (Queued, Delivered),
                (Queued, Failed),
                (Sent, Stored),
                (Sent, Delivered),
                (Sent, Failed),
                (Stored, Delivered),
                (Failed, Queued),
                (Failed, Stored),
                (Failed, Delivered),
            ]
        );
    }

    #[test]
    fn only_the_contact_a_message_went_to_can_mark_it_delivered() {
        let (bob, carol) = (Address::from_bytes([1; 16]), Address::from_bytes([2; 16]));
        let mut s = MemStore::new();
        let mut cs = ChangeSet::new();
        record_queued(&mut cs, &bob, &[7; 16], T);
        s.commit(cs).unwrap();
        let mut cs = ChangeSet::new();
        let moved = mark_delivered(&s, &mut cs, &carol, &[[7; 16], [8; 16]], T).unwrap();
        assert!(moved.is_empty() && cs.is_empty());
        let moved = mark_delivered(&s, &mut cs, &bob, &[[7; 16], [8; 16]], T).unwrap();
        assert_eq!(moved, [[7; 16]]);
        s.commit(cs).unwrap();
        let d = delivery(&s, &[7; 16]).unwrap().unwrap();
        assert_eq!((d.peer, d.state), (bob, Delivered));
        // Nothing moves it back.
        s.commit(mark_sent(&s, &[7; 16], false, T).unwrap())
            .unwrap();
        assert_eq!(delivery(&s, &[7; 16]).unwrap().unwrap().state, Delivered);
    }

    #[test]
    fn rejects_a_corrupt_record() {
        let mut s = MemStore::new();
        let mut cs = ChangeSet::new();
        save(
            &mut cs,
            Namespace::Delivery,
            &[7; 16],
            &lp::DeliveryRecord {
                peer: vec![1; 16],
                state: 9,
                updated_ms: 0,
            },
        );
        s.commit(cs).unwrap();
        assert!(delivery(&s, &[7; 16]).is_err());
        // A record that cannot be read blocks nothing else.
        assert!(delivery(&s, &[8; 16]).unwrap().is_none());
    }
}
