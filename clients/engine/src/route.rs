//! Where onion packets go: paths, entry failover, the down-relay list,
//! cover and loop packets, and what to do with an unacknowledged blob.
//!
//! A [`Router`] is built from a verified directory for one Sphinx key
//! epoch. Every packet takes a fresh random path and a fresh path for its
//! acknowledgement. Each packet comes back as a [`Planned`]: the entry
//! relay to hand it to and the change set to commit *before* it leaves (so
//! a crash can never lose a blob that was sent). The shell reports how the
//! entry took it; a relay that could not be reached joins the router's
//! down list and is avoided in every position, for packets and
//! acknowledgements, until the router is rebuilt
//! ([`Router::is_outdated`]).

use postern_core::consts::SPHINX_PACKET_BYTES;
use postern_core::courier::{self, Outgoing, SealedState, Unacknowledged};
use postern_core::directory::Directory;
use postern_core::onion::{self, Node, ROLE_MAILBOX};
use postern_core::relay_proto::{Blob, QueueId};
use postern_core::store::ChangeSet;
use postern_core::{Error, KvStore, RelayAddress, UnixTime};
use rand_core::{CryptoRng, RngCore};

/// Paths tried per blob, per attempt, before giving up on reaching an entry.
pub const MAX_PATH_ATTEMPTS: usize = 4;
/// Times a blob is sent over the onion network without an
/// acknowledgement before it is reported undelivered.
pub const MAX_SEND_ATTEMPTS: u32 = 8;
/// How long to wait for a delivery acknowledgement before sending again.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 30_000;
/// A long-lived router (a watching client) is rebuilt at least this often,
/// so relays found down are tried again and the directory stays fresh.
pub const ROUTER_MAX_AGE_MS: u64 = 10 * 60 * 1000;

/// One onion packet ready to leave.
#[derive(Debug)]
pub struct Planned {
    /// The entry relay to hand it to.
    pub entry: Node,
    /// The Sphinx key epoch it was built for.
    pub epoch: u32,
    /// The packet.
    pub packet: Box<[u8; SPHINX_PACKET_BYTES]>,
    /// What to commit before it leaves (may be empty).
    pub changes: ChangeSet,
}

/// How an entry relay took a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryOutcome {
    /// It accepted the packet.
    Accepted,
    /// No connection could be made: the relay is marked down.
    Unreachable,
    /// A connection was made but the packet was refused or the link broke:
    /// this blob avoids it; others may still use it.
    Refused,
}

/// Onion routing for one key epoch.
#[derive(Debug, Clone)]
pub struct Router {
    /// Our acknowledgement queue: its relay and sender id.
    acks: (RelayAddress, QueueId),
    /// Relays with keys for `epoch`.
    nodes: Vec<Node>,
    epoch: u32,
    hops: usize,
    /// Relays found unreachable since this router was built.
    down: Vec<[u8; 32]>,
    /// The end of `epoch`, or [`ROUTER_MAX_AGE_MS`] after this router was
    /// built, whichever is first.
    renew_at: UnixTime,
}

impl Router {
    /// A router over a verified directory at `now`, with `hops` relays per
    /// path and acknowledgements to `acks`.
    pub fn new(d: &Directory, now: UnixTime, acks: (RelayAddress, QueueId), hops: usize) -> Router {
        let epoch = d.epoch_at(now);
        let epoch_end = d.epoch_start(epoch.saturating_add(1));
        let renew_at = UnixTime(
            epoch_end
                .millis()
                .min(now.millis().saturating_add(ROUTER_MAX_AGE_MS)),
        );
        Router {
            acks,
            nodes: onion::nodes(d, epoch),
            epoch,
            hops,
            down: Vec::new(),
            renew_at,
        }
    }

    /// Whether this router should be replaced by a fresh one: packets
    /// built for an ended epoch would stand out at the entry and soon be
    /// refused, and relays found down deserve another try.
    pub fn is_outdated(&self, now: UnixTime) -> bool {
        now >= self.renew_at
    }

    /// The Sphinx key epoch packets are built for.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Relays found unreachable since this router was built.
    pub fn down(&self) -> &[[u8; 32]] {
        &self.down
    }

    fn mark_down(&mut self, id: [u8; 32]) {
        if !self.down.contains(&id) {
            self.down.push(id);
        }
    }

    /// Starts sending one blob for the queue `sender_id` on `relay`, as
    /// send number `attempts` (1 for the first), replacing the pending
    /// record `previous` (a resend's last attempt).
    pub fn put<'a>(
        &self,
        relay: &'a RelayAddress,
        sender_id: &'a QueueId,
        blob: &'a Blob,
        attempts: u32,
        previous: Option<[u8; 16]>,
    ) -> Put<'a> {
        Put {
            relay,
            sender_id,
            blob,
            attempts,
            previous,
            avoid: Vec::new(),
            tries: 0,
        }
    }

    /// A path ending at `mailbox` avoiding the down relays and `avoid`.
    fn path<R: RngCore + CryptoRng>(
        &self,
        mailbox: &RelayAddress,
        avoid: &[[u8; 32]],
        rng: &mut R,
    ) -> Result<onion::Path, Error> {
        let mut all = self.down.clone();
        all.extend_from_slice(avoid);
        onion::choose_path(&self.nodes, mailbox, self.hops, &all, rng)
    }

    /// A path for an acknowledgement: around the down relays when
    /// possible, else through any (an acknowledgement that may be lost is
    /// better than none: the blob is sent again).
    fn ack_path<R: RngCore + CryptoRng>(&self, rng: &mut R) -> Result<onion::Path, Error> {
        self.path(&self.acks.0, &[], rng)
            .or_else(|_| onion::choose_path(&self.nodes, &self.acks.0, self.hops, &[], rng))
    }

    /// One cover packet over a random path ending at a random mailbox
    /// relay that is not down: half are drops, half loops that come back
    /// to us through a reply block (recorded in the change set, so a loop
    /// that never returns is noticed). `None` when no mailbox is left.
    pub fn cover<R: RngCore + CryptoRng>(
        &self,
        store: &dyn KvStore,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<Option<Planned>, Error> {
        let mailboxes: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.roles & ROLE_MAILBOX != 0 && !self.down.contains(&n.id))
            .collect();
        let Some(last) = uniform(&mailboxes, rng) else {
            return Ok(None);
        };
        let last = last.address.clone();
        let path = self.path(&last, &[], rng)?;
        let entry = path.entry().ok_or(Error::NoPath {
            reason: "empty path",
        })?;
        let entry = entry.clone();
        let (packet, changes) = if rng.next_u32() & 1 == 0 {
            (onion::cover_packet(&path, rng)?, ChangeSet::new())
        } else {
            let ack_path = self.path(&self.acks.0, &[], rng)?;
            let (packet, pending) = onion::loop_packet(&path, &ack_path, &self.acks.1, rng)?;
            (packet, courier::record_loop(store, &pending, now)?)
        };
        Ok(Some(Planned {
            entry,
            epoch: self.epoch,
            packet,
            changes,
        }))
    }

    /// Reports how the entry of a cover packet took it.
    pub fn cover_outcome(&mut self, entry: &Node, outcome: EntryOutcome) {
        if outcome == EntryOutcome::Unreachable {
            self.mark_down(entry.id);
        }
    }
}

/// A uniformly chosen element (rejection sampling, no modulo bias).
fn uniform<'a, T, R: RngCore>(items: &'a [T], rng: &mut R) -> Option<&'a T> {
    let n = u64::try_from(items.len()).ok().filter(|n| *n > 0)?;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let v = rng.next_u64();
        if v < zone {
            return items.get(usize::try_from(v % n).ok()?);
        }
    }
}

/// One blob on its way to an entry relay: up to [`MAX_PATH_ATTEMPTS`]
/// paths, each avoiding the entries that failed it.
#[derive(Debug)]
pub struct Put<'a> {
    relay: &'a RelayAddress,
    sender_id: &'a QueueId,
    blob: &'a Blob,
    attempts: u32,
    previous: Option<[u8; 16]>,
    avoid: Vec<[u8; 32]>,
    tries: usize,
}

impl Put<'_> {
    /// The next packet to try: a fresh path and acknowledgement path, and
    /// the pending record to commit before it leaves (each try replaces
    /// the one before, so exactly one attempt is awaited). `Ok(None)` when
    /// every try is used up; an error when no path can be chosen (every
    /// entry failed, or the mailbox relay is not in the directory).
    pub fn next<R: RngCore + CryptoRng>(
        &mut self,
        router: &Router,
        store: &dyn KvStore,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<Option<Planned>, Error> {
        if self.tries >= MAX_PATH_ATTEMPTS {
            return Ok(None);
        }
        self.tries += 1;
        let path = router.path(self.relay, &self.avoid, rng)?;
        let ack_path = router.ack_path(rng)?;
        let entry = path
            .entry()
            .ok_or(Error::NoPath {
                reason: "empty path",
            })?
            .clone();
        let (packet, pending) = onion::wrap_with_ack(
            &path,
            self.sender_id,
            self.blob,
            &ack_path,
            &router.acks.1,
            rng,
        )?;
        let changes = courier::record_pending(
            store,
            &pending,
            self.relay,
            self.sender_id,
            self.blob,
            now,
            self.attempts,
            self.previous.as_ref(),
        )?;
        self.previous = Some(pending.id);
        Ok(Some(Planned {
            entry,
            epoch: router.epoch,
            packet,
            changes,
        }))
    }

    /// Reports how the entry of the last packet took it. Returns whether
    /// the blob has left (no more tries needed).
    pub fn outcome(&mut self, router: &mut Router, entry: &Node, outcome: EntryOutcome) -> bool {
        match outcome {
            EntryOutcome::Accepted => return true,
            EntryOutcome::Unreachable => router.mark_down(entry.id),
            EntryOutcome::Refused => {}
        }
        self.avoid.push(entry.id);
        false
    }
}

/// What to do with a blob whose acknowledgement is overdue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Send it again as attempt number `attempt`, over fresh paths.
    Send {
        /// The attempt number (the stored count plus one).
        attempt: u32,
    },
    /// It has been sent [`MAX_SEND_ATTEMPTS`] times: forget it and
    /// report it undelivered.
    GiveUp,
}

/// The decision for one overdue blob.
pub fn resend(u: &Unacknowledged) -> Resend {
    if u.attempts >= MAX_SEND_ATTEMPTS {
        Resend::GiveUp
    } else {
        Resend::Send {
            attempt: u.attempts.saturating_add(1),
        }
    }
}

/// From this attempt on, an overdue blob of a message is not sent again
/// as it was: the whole message is sealed again on the current session
/// ([`courier::reseal`]). A blob sent as it was carries the ratchet state
/// of its first sending, which the recipient stops being able to open
/// once the conversation has turned a few more times; the first resend
/// (usually a lost packet or acknowledgement) still goes as it was.
pub const RESEAL_FROM_ATTEMPT: u32 = 3;

/// A message is sealed again at most this many times; after that its
/// blobs are resent as they are until [`MAX_SEND_ATTEMPTS`]. A message
/// therefore leaves at most `RESEAL_FROM_ATTEMPT - 1` times per sealing
/// plus `MAX_SEND_ATTEMPTS` for the last one.
pub const MAX_RESEALS: u32 = 2;

/// What was done with an overdue blob ([`overdue_step`]).
#[derive(Debug)]
pub enum Overdue {
    /// Send the same blob again as attempt `attempt` (nothing committed).
    Resend {
        /// The attempt number.
        attempt: u32,
    },
    /// Its message was sealed again into `out`, committed to the outbox
    /// as entry `id`: put every blob as a first attempt, then mark the
    /// entry sent ([`crate::outbox::sent`]). Left in the outbox, it goes
    /// with the next flush, as any new message does.
    Resealed {
        /// The outbox entry.
        id: [u8; 16],
        /// What to put where.
        out: Outgoing,
    },
    /// Forgotten and committed: given up after its last attempt
    /// (`gave_up`), or a blob of a message sealed again since.
    Forgotten {
        /// Whether it was given up on (to report undelivered).
        gave_up: bool,
    },
}

/// Decides what to do with the overdue blob `u` and commits what that
/// changes: resend it as it was, seal its message again, or forget it.
pub fn overdue_step<R: RngCore + CryptoRng>(
    store: &mut dyn KvStore,
    u: &Unacknowledged,
    now: UnixTime,
    rng: &mut R,
) -> Result<Overdue, Error> {
    let state = courier::sealed_state(&*store, &u.blob)?;
    if state == SealedState::Retired {
        let cs = courier::forget_retired(&*store, u)?;
        store.commit(cs)?;
        return Ok(Overdue::Forgotten { gave_up: false });
    }
    match resend(u) {
        Resend::GiveUp => {
            let cs = courier::forget_pending(&*store, &u.id, now)?;
            store.commit(cs)?;
            Ok(Overdue::Forgotten { gave_up: true })
        }
        Resend::Send { attempt }
            if attempt >= RESEAL_FROM_ATTEMPT
                && matches!(state, SealedState::Live { reseals, .. } if reseals < MAX_RESEALS) =>
        {
            let (peer, out, cs) = courier::reseal(&*store, u, now, rng)?;
            let id = crate::outbox::commit_with(store, cs, peer, &out, rng)?;
            Ok(Overdue::Resealed { id, out })
        }
        Resend::Send { attempt } => Ok(Overdue::Resend { attempt }),
    }
}

/// Blobs last sent before this instant are overdue.
pub fn overdue_cutoff(now: UnixTime, ack_timeout_ms: u64) -> UnixTime {
    UnixTime(now.millis().saturating_sub(ack_timeout_ms))
}

/// Loops sent before this instant that have not come back are lost
/// (twice the acknowledgement timeout: they cross the network twice).
pub fn lost_loop_cutoff(now: UnixTime, ack_timeout_ms: u64) -> UnixTime {
    UnixTime(
        now.millis()
            .saturating_sub(ack_timeout_ms.saturating_mul(2)),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::testing::{relay, signed_directory};
    use postern_core::store::MemStore;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const T: UnixTime = UnixTime(1_800_000_000_000);
    const DAY: u64 = 86_400_000;

    fn router(n: u16) -> Router {
        let d = signed_directory(T, DAY, 3_600, n).1;
        Router::new(&d, T, (relay(0), [9; 16]), 3)
    }

    /// Sends `blob` to relay `to`, with entries in `dead` unreachable;
    /// returns the entries tried, in order, and whether it left.
    fn send(
        r: &mut Router,
        store: &mut MemStore,
        to: &RelayAddress,
        dead: &[RelayAddress],
        rng: &mut ChaCha20Rng,
    ) -> (Vec<RelayAddress>, bool) {
        let blob: Blob = Box::new([5; postern_core::consts::BLOB_BYTES]);
        let sender = [3; 16];
        let mut put = r.put(to, &sender, &blob, 1, None);
        let mut tried = Vec::new();
        loop {
            let planned = match put.next(r, store, T, rng) {
                Ok(Some(p)) => p,
                Ok(None) | Err(_) => return (tried, false),
            };
            // Committed before it leaves.
            store.commit(planned.changes).unwrap();
            tried.push(planned.entry.address.clone());
            let outcome = if dead.contains(&planned.entry.address) {
                EntryOutcome::Unreachable
            } else {
                EntryOutcome::Accepted
            };
            if put.outcome(r, &planned.entry, outcome) {
                return (tried, true);
            }
        }
    }

    #[test]
    fn every_path_has_its_hops_and_never_enters_at_the_mailbox() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut r = router(5);
        let mut store = MemStore::new();
        for _ in 0..50 {
            let (tried, left) = send(&mut r, &mut store, &relay(4), &[], &mut rng);
            assert!(left);
            assert_eq!(tried.len(), 1);
            assert_ne!(tried[0], relay(4));
        }
    }

    #[test]
    fn after_an_entry_dies_the_next_try_and_later_blobs_go_around_it() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut r = router(6);
        let mut store = MemStore::new();
        let dead = vec![relay(1), relay(2)];
        let mut first_dead = None;
        for _ in 0..40 {
            let (tried, left) = send(&mut r, &mut store, &relay(5), &dead, &mut rng);
            assert!(left, "tried {tried:?}");
            // Each entry is tried at most once per blob.
            let mut unique = tried.clone();
            unique.dedup();
            assert_eq!(unique.len(), tried.len());
            if first_dead.is_none() && tried.len() > 1 {
                first_dead = Some(tried[0].clone());
            }
        }
        // Once both dead relays are known, no path uses them.
        assert_eq!(r.down().len(), 2);
        for _ in 0..40 {
            let (tried, left) = send(&mut r, &mut store, &relay(5), &dead, &mut rng);
            assert!(left);
            assert_eq!(tried.len(), 1);
            assert!(!dead.contains(&tried[0]));
        }
        assert!(first_dead.is_some(), "no blob met a dead entry first");
        // Every send left exactly one awaited record (each try replaced
        // the one before).
        assert_eq!(courier::unacknowledged(&store).unwrap(), 80);
    }

    #[test]
    fn when_every_entry_is_dead_the_blob_waits_for_a_resend() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut r = router(4);
        let mut store = MemStore::new();
        let dead: Vec<RelayAddress> = (0..3).map(relay).collect();
        let (tried, left) = send(&mut r, &mut store, &relay(3), &dead, &mut rng);
        assert!(!left);
        assert!(tried.len() <= MAX_PATH_ATTEMPTS);
        // Its record is kept: the resend timer finds it.
        assert_eq!(courier::unacknowledged(&store).unwrap(), 1);
        let overdue =
            courier::overdue(&store, overdue_cutoff(T.plus_millis(30_000), 30_000)).unwrap();
        assert_eq!(overdue.len(), 1);
        assert_eq!(resend(&overdue[0]), Resend::Send { attempt: 2 });
    }

    #[test]
    fn a_blob_committed_but_not_sent_before_a_restart_is_sent_again() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let r = router(5);
        let mut store = MemStore::new();
        let blob: Blob = Box::new([8; postern_core::consts::BLOB_BYTES]);
        let to = relay(4);
        let sender = [3; 16];
        let mut put = r.put(&to, &sender, &blob, 1, None);
        let planned = put.next(&r, &store, T, &mut rng).unwrap().unwrap();
        store.commit(planned.changes).unwrap();
        // The process dies here, before the packet leaves. A new router
        // after the restart: nothing is overdue before the timeout...
        let r = router(5);
        assert!(
            courier::overdue(&store, overdue_cutoff(T.plus_millis(29_999), 30_000))
                .unwrap()
                .is_empty()
        );
        // ...then the blob is sent again, the same bytes, as attempt 2.
        let late = T.plus_millis(30_000);
        let overdue = courier::overdue(&store, overdue_cutoff(late, 30_000)).unwrap();
        assert_eq!(overdue.len(), 1);
        let u = &overdue[0];
        assert_eq!((u.relay.clone(), u.sender_id, *u.blob), (to, sender, *blob));
        let Resend::Send { attempt } = resend(u) else {
            panic!("given up")
        };
        let mut again = r.put(&u.relay, &u.sender_id, &u.blob, attempt, Some(u.id));
        let planned = again.next(&r, &store, late, &mut rng).unwrap().unwrap();
        store.commit(planned.changes).unwrap();
        // One record awaited, the new attempt's.
        assert_eq!(courier::unacknowledged(&store).unwrap(), 1);
        let left =
            courier::overdue(&store, overdue_cutoff(late.plus_millis(30_000), 30_000)).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].attempts, 2);
    }

    #[test]
    fn a_blob_is_given_up_after_its_last_attempt() {
        let blob: Blob = Box::new([1; postern_core::consts::BLOB_BYTES]);
        let mut u = Unacknowledged {
            id: [0; 16],
            relay: relay(1),
            sender_id: [0; 16],
            blob,
            sent_at: T,
            attempts: 1,
        };
        assert_eq!(resend(&u), Resend::Send { attempt: 2 });
        u.attempts = MAX_SEND_ATTEMPTS - 1;
        assert_eq!(
            resend(&u),
            Resend::Send {
                attempt: MAX_SEND_ATTEMPTS
            }
        );
        u.attempts = MAX_SEND_ATTEMPTS;
        assert_eq!(resend(&u), Resend::GiveUp);
        assert_eq!(lost_loop_cutoff(T, 30_000), UnixTime(T.0 - 60_000));
    }

    /// Records `blob` as sent (attempt `attempt`, replacing `previous`)
    /// through the router at `at`.
    #[allow(clippy::too_many_arguments)]
    fn sent_as(
        r: &Router,
        store: &mut MemStore,
        out: &Outgoing,
        blob: &Blob,
        attempt: u32,
        previous: Option<[u8; 16]>,
        at: UnixTime,
        rng: &mut ChaCha20Rng,
    ) {
        let mut put = r.put(&out.relay, &out.sender_id, blob, attempt, previous);
        let planned = put.next(r, store, at, rng).unwrap().unwrap();
        store.commit(planned.changes).unwrap();
    }

    #[test]
    fn an_overdue_message_is_resent_then_sealed_again_then_given_up() {
        use postern_core::message::{Body, Text};
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let r = router(5);
        let p = crate::testing::pair(&mut rng, T);
        let mut bob = p.bob;
        let big = Body::Text(Text("é".repeat(postern_core::consts::MAX_TEXT_BYTES / 2)));
        let (_, out, cs) = courier::send(&bob, &p.alice_addr, big, None, T, &mut rng).unwrap();
        bob.commit(cs).unwrap();
        assert!(out.blobs.len() > 1);
        for b in &out.blobs {
            sent_as(&r, &mut bob, &out, b, 1, None, T, &mut rng);
        }
        let mut now = T;
        let due = |store: &MemStore, now: &mut UnixTime| {
            *now = now.plus_millis(30_000);
            courier::overdue(store, overdue_cutoff(*now, 30_000)).unwrap()
        };
        // Attempt 2 goes as it was, every blob.
        for u in due(&bob, &mut now) {
            let step = overdue_step(&mut bob, &u, now, &mut rng).unwrap();
            assert!(matches!(step, Overdue::Resend { attempt: 2 }), "{step:?}");
            sent_as(&r, &mut bob, &out, &u.blob, 2, Some(u.id), now, &mut rng);
        }
        // At attempt 3 the first blob's message is sealed again, into the
        // outbox; the message's other blobs are then forgotten.
        let mut current = out;
        for reseal in 1..=MAX_RESEALS {
            let overdue = due(&bob, &mut now);
            assert_eq!(overdue.len(), current.blobs.len());
            let step = overdue_step(&mut bob, &overdue[0], now, &mut rng).unwrap();
            let Overdue::Resealed { id, out: again } = step else {
                panic!("reseal {reseal}: {step:?}")
            };
            assert!(again.blobs.iter().all(|b| !current.blobs.contains(b)));
            assert_eq!(bob.outbox().unwrap().len(), 1);
            for u in &overdue[1..] {
                let step = overdue_step(&mut bob, u, now, &mut rng).unwrap();
                assert!(matches!(step, Overdue::Forgotten { gave_up: false }));
            }
            assert!(
                courier::overdue(&bob, overdue_cutoff(now, 30_000))
                    .unwrap()
                    .is_empty()
            );
            for b in &again.blobs {
                sent_as(&r, &mut bob, &again, b, 1, None, now, &mut rng);
            }
            crate::outbox::sent(&mut bob, id, false, T).unwrap();
            assert!(bob.outbox().unwrap().is_empty());
            for u in due(&bob, &mut now) {
                let step = overdue_step(&mut bob, &u, now, &mut rng).unwrap();
                assert!(matches!(step, Overdue::Resend { attempt: 2 }), "{step:?}");
                sent_as(&r, &mut bob, &again, &u.blob, 2, Some(u.id), now, &mut rng);
            }
            current = again;
        }
        // Sealed as often as it may be: resent as it is, then given up.
        for attempt in RESEAL_FROM_ATTEMPT..=MAX_SEND_ATTEMPTS {
            for u in due(&bob, &mut now) {
                let step = overdue_step(&mut bob, &u, now, &mut rng).unwrap();
                assert!(
                    matches!(step, Overdue::Resend { attempt: a } if a == attempt),
                    "{step:?}"
                );
                sent_as(
                    &r,
                    &mut bob,
                    &current,
                    &u.blob,
                    attempt,
                    Some(u.id),
                    now,
                    &mut rng,
                );
            }
        }
        for u in due(&bob, &mut now) {
            let step = overdue_step(&mut bob, &u, now, &mut rng).unwrap();
            assert!(
                matches!(step, Overdue::Forgotten { gave_up: true }),
                "{step:?}"
            );
        }
        assert_eq!(courier::unacknowledged(&bob).unwrap(), 0);
        assert!(
            bob.keys(postern_core::store::Namespace::Sealed)
                .unwrap()
                .is_empty()
        );
        assert!(
            bob.keys(postern_core::store::Namespace::SealedBlob)
                .unwrap()
                .is_empty()
        );
        // The user sees it failed, and may send it again: sealed afresh,
        // queued, once in the conversation.
        let id = bob.history(&p.alice_addr, 10).unwrap()[0].id;
        let state = |s: &MemStore| courier::delivery(s, &id).unwrap().unwrap().state;
        assert_eq!(state(&bob), courier::DeliveryState::Failed);
        let again = crate::outbox::retry(&mut bob, &p.alice_addr, id, now, &mut rng).unwrap();
        assert!(!again.blobs.is_empty());
        assert_eq!(state(&bob), courier::DeliveryState::Queued);
        assert_eq!(bob.outbox().unwrap().len(), 1);
        assert_eq!(bob.history(&p.alice_addr, 10).unwrap().len(), 1);
    }

    #[test]
    fn cover_goes_to_live_mailboxes_and_loops_are_recorded() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut r = router(5);
        let mut store = MemStore::new();
        let mut loops = 0;
        for _ in 0..60 {
            let p = r.cover(&store, T, &mut rng).unwrap().unwrap();
            assert_eq!(p.epoch, r.epoch());
            if !p.changes.is_empty() {
                loops += 1;
            }
            store.commit(p.changes).unwrap();
        }
        // About half are loops, each one awaited.
        assert!((15..=45).contains(&loops), "{loops} loops in 60");
        assert_eq!(courier::unacknowledged(&store).unwrap(), 0);
        // An unreachable entry is marked down and never used again.
        let p = r.cover(&store, T, &mut rng).unwrap().unwrap();
        r.cover_outcome(&p.entry, EntryOutcome::Unreachable);
        assert_eq!(r.down(), &[p.entry.id]);
        for _ in 0..40 {
            let q = r.cover(&store, T, &mut rng).unwrap().unwrap();
            assert_ne!(q.entry.id, p.entry.id);
        }
    }

    #[test]
    fn a_router_is_renewed_at_the_end_of_its_epoch_or_when_old() {
        // 50 minutes into an hourly epoch.
        let t = T.plus_millis(50 * 60_000);
        let d = signed_directory(T, DAY, 3_600, 3).1;
        let r = Router::new(&d, t, (relay(0), [0; 16]), 3);
        assert!(!r.is_outdated(t.plus_millis(ROUTER_MAX_AGE_MS - 1)));
        assert!(r.is_outdated(t.plus_millis(ROUTER_MAX_AGE_MS)));
        // Built 5 minutes before the epoch ends: renewed at its end.
        let late = t.plus_millis(5 * 60_000);
        let r = Router::new(&d, late, (relay(0), [0; 16]), 3);
        assert!(!r.is_outdated(late.plus_millis(5 * 60_000 - 1)));
        assert!(r.is_outdated(late.plus_millis(5 * 60_000)));
    }
}
