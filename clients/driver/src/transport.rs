//! The links blobs leave this device by: straight to the recipient's relay,
//! or — when an onion network is configured — to entry relays, each blob
//! wrapped in a Sphinx packet over the path the engine's router chose
//! ([`postern_engine::route`]). This file sequences the I/O; the engine
//! decides.

use std::collections::HashMap;

use postern_core::crypto::signal::AuthorityPublic;
use postern_core::directory::Directory;
use postern_core::relay_proto::{Blob, QueueId};
use postern_core::{KvStore, RelayAddress, UnixTime, courier, settings};
use postern_link::{Connect, NetError, Runtime, RuntimeRng};

use crate::{ClientError, Conn, Result, commit, is_local_failure};

use postern_engine::directory::{Keep, Lookup};
use postern_engine::outbox;
pub use postern_engine::route::DEFAULT_ACK_TIMEOUT_MS;
use postern_engine::route::{self, EntryOutcome, Planned, Router};

/// Where blobs go.
pub enum Transport<N: Connect> {
    /// To the queue's relay directly.
    Direct {
        /// How connections are made.
        net: N,
        /// Open connections by relay.
        conns: HashMap<RelayAddress, Conn<N>>,
    },
    /// Through the onion network: the engine's router chooses, this
    /// holds the links to entry relays.
    Onion {
        /// How connections are made.
        net: N,
        /// Paths, failover and the down list.
        router: Router,
        /// Open connections to entry relays.
        conns: HashMap<RelayAddress, Conn<N>>,
    },
}

impl<N: Connect> core::fmt::Debug for Transport<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Relay addresses stay out of logs: only how many links are open.
        match self {
            Transport::Direct { conns, .. } => {
                write!(f, "Transport::Direct({} links)", conns.len())
            }
            Transport::Onion { conns, .. } => write!(f, "Transport::Onion({} links)", conns.len()),
        }
    }
}

fn pinned(n: &settings::NetworkSettings) -> Result<Vec<AuthorityPublic>> {
    n.authorities
        .iter()
        .map(|k| AuthorityPublic::from_bytes(k).map_err(ClientError::from))
        .collect()
}

/// A verified directory, by the engine's rule
/// ([`postern_engine::directory`]): the cached one while it is fresh (or
/// was asked for within the recheck interval), else fetched from `from`
/// (and cached). `None` when no onion network is configured.
pub async fn directory<N: Connect>(
    p: &mut dyn KvStore,
    from: &RelayAddress,
    net: &N,
) -> Result<Option<(Directory, usize)>> {
    let Some(n) = settings::network(p)? else {
        return Ok(None);
    };
    let hops = usize::from(n.hops);
    let keys = pinned(&n)?;
    let threshold = usize::try_from(n.threshold).unwrap_or(usize::MAX);
    let t = net.runtime().now();
    let cached = settings::cached_directory(p)?
        .and_then(|bytes| Directory::verify(&bytes, &keys, threshold, t).ok());
    let fetched_at = settings::directory_fetched_at(p)?;
    if let (Lookup::UseCached, Some(d)) = (
        postern_engine::directory::lookup(cached.as_ref(), fetched_at, t),
        &cached,
    ) {
        return Ok(Some((d.clone(), hops)));
    }
    commit(p, settings::set_directory_fetched_at(t))?;
    let fetched = async {
        let mut c = net.connect(from).await?;
        let bytes = c.get_directory().await?;
        c.close().await?;
        let d = Directory::verify(&bytes, &keys, threshold, t)?;
        Ok::<_, ClientError>((bytes, d))
    }
    .await;
    let (fetched, error) = match fetched {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(e)),
    };
    match (
        postern_engine::directory::keep(fetched.as_ref().map(|f| &f.1), cached.as_ref()),
        fetched,
        cached,
        error,
    ) {
        (Keep::Fetched, Some((bytes, d)), _, _) => {
            commit(p, settings::cache_directory(&bytes))?;
            Ok(Some((d, hops)))
        }
        (Keep::Cached, _, Some(c), _) => Ok(Some((c, hops))),
        (_, _, _, Some(e)) => Err(e),
        _ => Err(postern_core::Error::Bug("directory choice").into()),
    }
}

impl<N: Connect + Clone> Transport<N> {
    /// The transport for this profile: onion routing when a network is
    /// configured (its directory fetched from `home`), else direct.
    pub async fn for_profile(
        p: &mut dyn KvStore,
        home: Option<&RelayAddress>,
        net: &N,
    ) -> Result<Transport<N>> {
        let dir = match home {
            Some(h) => directory(p, h, net).await?,
            None => None,
        };
        Ok(match (dir, home) {
            (Some((d, hops)), Some(h)) => {
                let acks = ensure_ack_queue(p, h, net).await?;
                Transport::Onion {
                    net: net.clone(),
                    router: Router::new(&d, net.runtime().now(), acks, hops),
                    conns: HashMap::new(),
                }
            }
            _ => Transport::Direct {
                net: net.clone(),
                conns: HashMap::new(),
            },
        })
    }
}

impl<N: Connect> Transport<N> {
    /// Whether a long-lived transport should be replaced by a fresh one
    /// ([`Router::is_outdated`]).
    pub fn is_outdated(&self, t: UnixTime) -> bool {
        match self {
            Transport::Direct { .. } => false,
            Transport::Onion { router, .. } => router.is_outdated(t),
        }
    }

    /// Whether blobs go through the onion network.
    pub fn is_onion(&self) -> bool {
        matches!(self, Transport::Onion { .. })
    }

    /// The runtime its links are timed by.
    pub fn runtime(&self) -> &N::Runtime {
        match self {
            Transport::Direct { net, .. } | Transport::Onion { net, .. } => net.runtime(),
        }
    }

    /// How many links are open.
    pub fn open_links(&self) -> usize {
        match self {
            Transport::Direct { conns, .. } | Transport::Onion { conns, .. } => conns.len(),
        }
    }

    /// Puts one blob into the queue `sender_id` on `relay`.
    pub async fn put(
        &mut self,
        p: &mut dyn KvStore,
        relay: &RelayAddress,
        sender_id: &QueueId,
        blob: &Blob,
    ) -> Result<()> {
        self.put_attempt(p, relay, sender_id, blob, 1, None).await
    }

    async fn put_attempt(
        &mut self,
        p: &mut dyn KvStore,
        relay: &RelayAddress,
        sender_id: &QueueId,
        blob: &Blob,
        attempts: u32,
        previous: Option<[u8; 16]>,
    ) -> Result<()> {
        match self {
            Transport::Direct { net, conns } => {
                if !conns.contains_key(relay) {
                    conns.insert(relay.clone(), net.connect(relay).await?);
                }
                let c = conns
                    .get_mut(relay)
                    .ok_or(postern_core::Error::Bug("connection"))?;
                match c.send(sender_id, blob).await {
                    Err(e @ NetError::Relay(_)) => Err(e.into()),
                    Err(_) => {
                        // One reconnect for a broken link.
                        let mut fresh = net.connect(relay).await?;
                        fresh.send(sender_id, blob).await?;
                        conns.insert(relay.clone(), fresh);
                        Ok(())
                    }
                    Ok(()) => Ok(()),
                }
            }
            Transport::Onion { net, router, conns } => {
                let rt = net.runtime();
                let mut put = router.put(relay, sender_id, blob, attempts, previous);
                let mut last: Option<ClientError> = None;
                loop {
                    let planned = match put.next(router, p, rt.now(), &mut RuntimeRng(rt)) {
                        Ok(Some(planned)) => planned,
                        Ok(None) => break,
                        // No path left: report why the last entry failed.
                        Err(e) => return Err(last.unwrap_or_else(|| e.into())),
                    };
                    // Recorded before it leaves: a crash cannot lose it.
                    let Planned {
                        entry,
                        epoch,
                        packet,
                        changes,
                    } = planned;
                    commit(p, changes)?;
                    let (outcome, err) = forward(net, conns, &entry.address, epoch, &packet).await;
                    if put.outcome(router, &entry, outcome) {
                        return Ok(());
                    }
                    last = err;
                }
                Err(last.unwrap_or_else(|| {
                    postern_core::Error::NoPath {
                        reason: "no onion path worked",
                    }
                    .into()
                }))
            }
        }
    }

    /// Sends one cover packet over a random path ending at a random
    /// mailbox relay (the engine's [`Router::cover`]): a drop, or a loop
    /// that comes back to us. Returns false when not on an onion network.
    pub async fn send_cover(&mut self, p: &mut dyn KvStore) -> Result<bool> {
        let Transport::Onion { net, router, conns } = self else {
            return Ok(false);
        };
        let rt = net.runtime();
        let Some(planned) = router.cover(p, rt.now(), &mut RuntimeRng(rt))? else {
            return Ok(false);
        };
        commit(p, planned.changes)?;
        let (outcome, _) = forward(
            net,
            conns,
            &planned.entry.address,
            planned.epoch,
            &planned.packet,
        )
        .await;
        router.cover_outcome(&planned.entry, outcome);
        Ok(true)
    }

    /// Closes every connection.
    pub async fn close(self) {
        let conns = match self {
            Transport::Direct { conns, .. } | Transport::Onion { conns, .. } => conns,
        };
        for (_, c) in conns {
            let _ = c.close().await;
        }
    }
}

/// Hands a packet to an entry relay over the open link to it (opened if
/// there is none). A link that fails is dropped.
async fn forward<N: Connect>(
    net: &N,
    conns: &mut HashMap<RelayAddress, Conn<N>>,
    entry: &RelayAddress,
    epoch: u32,
    packet: &[u8; postern_core::consts::SPHINX_PACKET_BYTES],
) -> (EntryOutcome, Option<ClientError>) {
    if !conns.contains_key(entry) {
        match net.connect(entry).await {
            Ok(c) => {
                conns.insert(entry.clone(), c);
            }
            Err(e) => return (EntryOutcome::Unreachable, Some(e.into())),
        }
    }
    let Some(c) = conns.get_mut(entry) else {
        return (EntryOutcome::Refused, None);
    };
    match c.forward(epoch, packet).await {
        Ok(()) => (EntryOutcome::Accepted, None),
        Err(e) => {
            conns.remove(entry);
            (EntryOutcome::Refused, Some(e.into()))
        }
    }
}

/// The one set of links a client sends everything through: messages,
/// receipts, resends and cover packets leave by the same connections, so
/// an entry relay cannot tell them apart by connection pattern. Built when
/// first needed; rebuilt when its router is outdated.
pub struct Links<N: Connect> {
    net: N,
    t: Option<Transport<N>>,
    /// Building the transport made the acknowledgement queue, a new
    /// queue of ours that a watch must subscribe to.
    made_queue: bool,
}

impl<N: Connect> core::fmt::Debug for Links<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Links").field("transport", &self.t).finish()
    }
}

impl<N: Connect + Clone> Links<N> {
    /// No links yet; they are made with `net` when first needed.
    pub fn new(net: N) -> Links<N> {
        Links {
            net,
            t: None,
            made_queue: false,
        }
    }

    /// The connector the links are made with.
    pub fn connector(&self) -> &N {
        &self.net
    }

    /// The transport, built (or rebuilt, when outdated) first if needed.
    pub async fn get(&mut self, p: &mut dyn KvStore) -> Result<&mut Transport<N>> {
        let now = self.net.runtime().now();
        let stale = self.t.as_ref().is_none_or(|t| t.is_outdated(now));
        if stale {
            // An outdated transport stays until its successor is built.
            let h = home(p)?;
            let had_acks = courier::ack_queue(p)?.is_some();
            let fresh = Transport::for_profile(p, h.as_ref(), &self.net).await?;
            if !had_acks && courier::ack_queue(p)?.is_some() {
                self.made_queue = true;
            }
            if let Some(old) = self.t.replace(fresh) {
                old.close().await;
            }
        }
        self.t
            .as_mut()
            .ok_or_else(|| postern_core::Error::Bug("links").into())
    }

    /// Whether a queue of ours was made (the acknowledgement queue, when
    /// the first onion transport was built) since the last call: a
    /// watching client subscribes to it, or acknowledgements would wait
    /// there unheard.
    pub fn take_made_queue(&mut self) -> bool {
        core::mem::take(&mut self.made_queue)
    }

    /// The transport if it is built (without building it).
    pub fn current(&self) -> Option<&Transport<N>> {
        self.t.as_ref()
    }

    /// Closes every connection.
    pub async fn close(self) {
        if let Some(t) = self.t {
            t.close().await;
        }
    }
}

/// Our acknowledgement queue, created on the home relay the first time.
async fn ensure_ack_queue<N: Connect>(
    p: &mut dyn KvStore,
    home: &RelayAddress,
    net: &N,
) -> Result<(RelayAddress, QueueId)> {
    if let Some(q) = courier::ack_queue(p)? {
        return Ok(q);
    }
    let rt = net.runtime();
    let mut c = net.connect(home).await?;
    let keys = courier::QueueKeys::generate(&mut RuntimeRng(rt));
    let ids = c.create_queue(&keys.queue_key).await?;
    c.close().await?;
    let q = courier::CreatedQueue {
        relay: home.clone(),
        keys,
        recipient_id: ids.recipient_id,
        sender_id: ids.sender_id,
    };
    commit(p, courier::register_ack_queue(&q, rt.now()))?;
    Ok((home.clone(), ids.sender_id))
}

/// What [`resend_overdue`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resent {
    /// Blobs sent again.
    pub resent: usize,
    /// Messages sealed again on the current session and sent whole
    /// ([`route::RESEAL_FROM_ATTEMPT`]).
    pub resealed: usize,
    /// Blobs given up after [`route::MAX_SEND_ATTEMPTS`].
    pub gave_up: usize,
    /// Blobs that could not leave this time (no path, no entry reachable);
    /// each such try counts as an attempt.
    pub failed: usize,
}

/// Sends again, over fresh paths, every blob whose acknowledgement has
/// not come within `timeout_ms`, as the engine's [`route::overdue_step`]
/// decides (the same blob, or its message sealed again). A blob that
/// cannot leave now does not stop the others; only a failure of the
/// store itself is an error.
pub async fn resend_overdue<N: Connect>(
    p: &mut dyn KvStore,
    t: &mut Transport<N>,
    timeout_ms: u64,
) -> Result<Resent> {
    let mut r = Resent::default();
    // Messages nothing awaits an acknowledgement for cannot be resealed.
    let cs = courier::forget_unawaited_sealed(p)?;
    commit(p, cs)?;
    let rt = match t {
        Transport::Direct { .. } => return Ok(r),
        Transport::Onion { net, .. } => net.runtime().clone(),
    };
    for u in courier::overdue(p, route::overdue_cutoff(rt.now(), timeout_ms))? {
        match route::overdue_step(p, &u, rt.now(), &mut RuntimeRng(&rt))? {
            route::Overdue::Forgotten { gave_up } => r.gave_up += usize::from(gave_up),
            route::Overdue::Resend { attempt } => {
                match t
                    .put_attempt(p, &u.relay, &u.sender_id, &u.blob, attempt, Some(u.id))
                    .await
                {
                    Ok(()) => r.resent += 1,
                    Err(e) if is_local_failure(&e) => return Err(e),
                    Err(_) => {
                        let cs = courier::count_failed_attempt(p, &u.id, rt.now())?;
                        commit(p, cs)?;
                        r.failed += 1;
                    }
                }
            }
            route::Overdue::Resealed { id, out } => {
                let mut left = true;
                for b in &out.blobs {
                    match t
                        .put_attempt(p, &out.relay, &out.sender_id, b, 1, None)
                        .await
                    {
                        Ok(()) => {}
                        Err(e) if is_local_failure(&e) => return Err(e),
                        // It stays in the outbox for the next flush.
                        Err(_) => {
                            left = false;
                            r.failed += 1;
                            break;
                        }
                    }
                }
                if left {
                    outbox::sent(p, id, false, rt.now())?;
                    r.resealed += 1;
                }
            }
        }
    }
    Ok(r)
}

/// Puts every blob of an outgoing message through the transport.
pub async fn put_all<N: Connect>(
    p: &mut dyn KvStore,
    t: &mut Transport<N>,
    out: &courier::Outgoing,
) -> Result<()> {
    for b in &out.blobs {
        t.put(p, &out.relay, &out.sender_id, b).await?;
    }
    Ok(())
}

/// Reads the home relay (for fetching the directory).
pub fn home(p: &dyn KvStore) -> Result<Option<RelayAddress>> {
    Ok(settings::home_relay(p)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::Unreachable;
    use postern_core::store::MemStore;
    use postern_engine::testing::signed_directory_by;

    /// A stale cached directory whose relay cannot be reached is asked for
    /// once, not before every send: the next calls within
    /// `DIRECTORY_RECHECK_MS` use the cached copy without connecting.
    #[tokio::test]
    async fn a_stale_directory_is_asked_for_at_most_once_per_recheck_interval() {
        let net = Unreachable::at(UnixTime(1_800_000_000_000));
        let t = net.runtime().now();
        // Valid for 30 more minutes: within the hour before expiry, stale.
        let (signed, authority) = signed_directory_by(t, 30 * 60_000, 3_600, 3);
        let mut p = MemStore::new();
        let settings = settings::NetworkSettings {
            authorities: vec![authority.public().unwrap().to_bytes().to_vec()],
            threshold: 1,
            hops: 3,
        };
        commit(&mut p, settings::set_network(&settings).unwrap()).unwrap();
        commit(&mut p, settings::cache_directory(&signed)).unwrap();
        let from = RelayAddress::new("127.0.0.1", 7000, Some([7; 32])).unwrap();
        for _ in 0..3 {
            // The cached copy, stale but valid, each time.
            let (d, hops) = directory(&mut p, &from, &net).await.unwrap().unwrap();
            assert_eq!((d.relays.len(), hops), (3, 3));
            net.advance(30_000);
        }
        assert_eq!(net.attempts(), 1, "directory fetches for 3 sends");
        // After the recheck interval, it is asked for again.
        net.advance(postern_core::consts::DIRECTORY_RECHECK_MS);
        directory(&mut p, &from, &net).await.unwrap().unwrap();
        assert_eq!(net.attempts(), 2);
    }

    /// Without an onion network, blobs go straight to the queue's relay,
    /// and a relay that cannot be reached is a network error that changes
    /// nothing in the store.
    #[tokio::test]
    async fn a_direct_put_to_an_unreachable_relay_fails_as_network_and_commits_nothing() {
        let net = Unreachable::at(UnixTime(1_800_000_000_000));
        let mut p = MemStore::new();
        let mut t = Transport::for_profile(&mut p, None, &net).await.unwrap();
        assert!(!t.is_onion());
        let relay = RelayAddress::new("127.0.0.1", 7001, Some([7; 32])).unwrap();
        let blob: Blob = Box::new([0u8; postern_core::consts::BLOB_BYTES]);
        let e = t.put(&mut p, &relay, &[1; 16], &blob).await.unwrap_err();
        assert_eq!(
            postern_core::error::HasKind::kind(&e),
            postern_core::ErrorKind::Network
        );
        assert!(!is_local_failure(&e));
        assert_eq!(net.attempts(), 1);
        assert!(
            p.keys(postern_core::store::Namespace::PendingAck)
                .unwrap()
                .is_empty()
        );
    }
}
