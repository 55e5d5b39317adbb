//! Commit, then send: a message is sealed and put into the outbox in one
//! change set before any of it leaves, and leaves the outbox only once
//! every blob has been handed on. A crash or a failed send at any point
//! leaves it in the outbox, and the next run sends it (the courier's
//! duplicate detection makes a second copy harmless).

use postern_core::courier::{self, Outgoing};
use postern_core::message::{Body, Envelope};
use postern_core::store::{ChangeSet, OutboxEntry};
use postern_core::{Address, Error, KvStore, UnixTime};
use rand_core::{CryptoRng, RngCore};

/// Seals `body` for `peer` and puts it into the outbox, in one commit.
pub fn queue<R: RngCore + CryptoRng>(
    store: &mut dyn KvStore,
    peer: &Address,
    body: Body,
    reply_to: Option<[u8; 16]>,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Envelope, Outgoing), Error> {
    let (env, out, mut cs) = courier::send(&*store, peer, body, reply_to, now, rng)?;
    cs.add_outbox(OutboxEntry {
        id: env.id,
        peer: *peer,
        payload: out.to_bytes(),
    });
    store.commit(cs)?;
    Ok((env, out))
}

/// Commits `cs` together with `out` for `peer` as a new outbox entry (a
/// fresh random id, returned): what is sent is stored in the same commit
/// as what it belongs to.
pub fn commit_with<R: RngCore + CryptoRng>(
    store: &mut dyn KvStore,
    mut cs: ChangeSet,
    peer: Address,
    out: &Outgoing,
    rng: &mut R,
) -> Result<[u8; 16], Error> {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    cs.add_outbox(OutboxEntry {
        id,
        peer,
        payload: out.to_bytes(),
    });
    store.commit(cs)?;
    Ok(id)
}

/// Every blob of outbox entry `id` has left: it is removed, and a
/// message's delivery state moves on — in the network, or stored when it
/// went `directly` to its queue's relay (which answers once it stored it).
pub fn sent(
    store: &mut dyn KvStore,
    id: [u8; 16],
    directly: bool,
    now: UnixTime,
) -> Result<(), Error> {
    let mut cs = courier::mark_sent(&*store, &id, directly, now)?;
    cs.remove_outbox(id);
    store.commit(cs)?;
    Ok(())
}

/// Seals a failed message to `peer` again and puts it into the outbox,
/// in one commit (the user's retry; see `courier::send_again`). The
/// message is looked up in the conversation's most recent
/// `MAX_RETRY_LOOKUP` messages.
pub fn retry<R: RngCore + CryptoRng>(
    store: &mut dyn KvStore,
    peer: &Address,
    id: [u8; 16],
    now: UnixTime,
    rng: &mut R,
) -> Result<Outgoing, Error> {
    let m = store
        .history(peer, MAX_RETRY_LOOKUP)?
        .into_iter()
        .rev()
        .find(|m| m.id == id)
        .ok_or(Error::Bug("retry of a message not in the conversation"))?;
    let (out, mut cs) = courier::send_again(&*store, peer, &id, &m.body, now, rng)?;
    cs.add_outbox(OutboxEntry {
        id,
        peer: *peer,
        payload: out.to_bytes(),
    });
    store.commit(cs)?;
    Ok(out)
}

/// How far back in a conversation a message to retry is looked for.
pub const MAX_RETRY_LOOKUP: usize = 20_000;

/// What waits in the outbox, oldest first, decoded.
pub fn waiting(store: &dyn KvStore) -> Result<Vec<([u8; 16], Outgoing)>, Error> {
    store
        .outbox()?
        .into_iter()
        .map(|e| Ok((e.id, Outgoing::from_bytes(&e.payload)?)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::testing::pair;
    use postern_core::message::Text;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const T: UnixTime = UnixTime(1_800_000_000_000);

    #[test]
    fn a_message_is_in_the_outbox_before_it_leaves_and_only_until_it_has() {
        let mut r = ChaCha20Rng::seed_from_u64(1);
        let mut p = pair(&mut r, T);
        assert!(waiting(&p.bob).unwrap().is_empty());
        let body = Body::Text(Text("kept until sent".into()));
        let (env, out) = queue(&mut p.bob, &p.alice_addr, body, None, T, &mut r).unwrap();
        // A restart here (nothing sent yet) finds it, blob for blob.
        let w = waiting(&p.bob).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, env.id);
        assert_eq!(w[0].1.blobs, out.blobs);
        // The message is in the history at once.
        assert_eq!(p.bob.history(&p.alice_addr, 10).unwrap().len(), 1);
        let state = |s: &dyn KvStore| courier::delivery(s, &env.id).unwrap().unwrap().state;
        assert_eq!(state(&p.bob), courier::DeliveryState::Queued);
        sent(&mut p.bob, env.id, false, T).unwrap();
        assert!(waiting(&p.bob).unwrap().is_empty());
        assert_eq!(state(&p.bob), courier::DeliveryState::Sent);
    }

    #[test]
    fn a_message_sent_straight_to_its_relay_is_stored_once_it_has_left() {
        let mut r = ChaCha20Rng::seed_from_u64(3);
        let mut p = pair(&mut r, T);
        let body = Body::Text(Text("direct".into()));
        let (env, _) = queue(&mut p.bob, &p.alice_addr, body, None, T, &mut r).unwrap();
        sent(&mut p.bob, env.id, true, T).unwrap();
        let d = courier::delivery(&p.bob, &env.id).unwrap().unwrap();
        assert_eq!(
            (d.state, d.peer),
            (courier::DeliveryState::Stored, p.alice_addr)
        );
    }

    #[test]
    fn a_message_that_did_not_fail_is_not_the_users_to_send_again() {
        let mut r = ChaCha20Rng::seed_from_u64(4);
        let mut p = pair(&mut r, T);
        let body = Body::Text(Text("on its way".into()));
        let (env, _) = queue(&mut p.bob, &p.alice_addr, body, None, T, &mut r).unwrap();
        for _ in 0..2 {
            assert!(matches!(
                retry(&mut p.bob, &p.alice_addr, env.id, T, &mut r),
                Err(Error::Bug(_))
            ));
            sent(&mut p.bob, env.id, false, T).unwrap();
        }
        assert!(waiting(&p.bob).unwrap().is_empty());
        // Nor one that is not in the conversation at all.
        assert!(retry(&mut p.bob, &p.alice_addr, [9; 16], T, &mut r).is_err());
    }

    #[test]
    fn nothing_is_queued_for_a_stranger() {
        let mut r = ChaCha20Rng::seed_from_u64(2);
        let mut p = pair(&mut r, T);
        let stranger = p.bob_addr;
        let body = Body::Text(Text("to myself".into()));
        assert!(queue(&mut p.alice, &stranger, body, None, T, &mut r).is_err());
        assert!(waiting(&p.alice).unwrap().is_empty());
    }
}
