//! The links blobs leave this device by: straight to the recipient's relay,
//! or — when an onion network is configured — to entry relays, each blob
//! wrapped in a Sphinx packet over the path the engine's router chose
//! ([`postern_engine::route`]). This file does the I/O; the engine decides.

use std::collections::HashMap;

use postern_core::crypto::signal::AuthorityPublic;
use postern_core::directory::Directory;
use postern_core::relay_proto::{Blob, QueueId};
use postern_core::{KvStore, RelayAddress, UnixTime, courier, settings};
use postern_net::{Connection, Connector, NetError};
use postern_store::Profile;

use crate::{NativeError, Result, commit, is_local_failure, now};

use postern_engine::directory::{Keep, Lookup};
use postern_engine::outbox;
pub use postern_engine::route::DEFAULT_ACK_TIMEOUT_MS;
use postern_engine::route::{self, EntryOutcome, Planned, Router};

/// Where blobs go.
pub enum Transport {
    /// To the queue's relay directly.
    Direct {
        /// How connections are made.
        net: Connector,
        /// Open connections by relay.
        conns: HashMap<RelayAddress, Connection>,
    },
    /// Through the onion network: the engine's router chooses, this
    /// holds the links to entry relays.
    Onion {
        /// How connections are made.
        net: Connector,
        /// Paths, failover and the down list.
        router: Router,
        /// Open connections to entry relays.
        conns: HashMap<RelayAddress, Connection>,
    },
}

impl core::fmt::Debug for Transport {
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
        .map(|k| AuthorityPublic::from_bytes(k).map_err(NativeError::from))
        .collect()
}

/// A verified directory, by the engine's rule
/// ([`postern_engine::directory`]): the cached one while it is fresh (or
/// was asked for within the recheck interval), else fetched from `from`
/// (and cached).
pub async fn directory(
    p: &mut Profile,
    from: &RelayAddress,
    net: &Connector,
) -> Result<Option<(Directory, usize)>> {
    let Some(n) = settings::network(p)? else {
        return Ok(None);
    };
    let hops = usize::from(n.hops);
    let keys = pinned(&n)?;
    let threshold = usize::try_from(n.threshold).unwrap_or(usize::MAX);
    let t = now();
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
        Ok::<_, NativeError>((bytes, d))
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

impl Transport {
    /// The transport for this profile: onion routing when a network is
    /// configured (its directory fetched from `home`), else direct.
    pub async fn for_profile(
        p: &mut Profile,
        home: Option<&RelayAddress>,
        net: &Connector,
    ) -> Result<Transport> {
        let dir = match home {
            Some(h) => directory(p, h, net).await?,
            None => None,
        };
        Ok(match (dir, home) {
            (Some((d, hops)), Some(h)) => {
                let acks = ensure_ack_queue(p, h, net).await?;
                Transport::Onion {
                    net: *net,
                    router: Router::new(&d, now(), acks, hops),
                    conns: HashMap::new(),
                }
            }
            _ => Transport::Direct {
                net: *net,
                conns: HashMap::new(),
            },
        })
    }

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

    /// Puts one blob into the queue `sender_id` on `relay`.
    pub async fn put(
        &mut self,
        p: &mut Profile,
        relay: &RelayAddress,
        sender_id: &QueueId,
        blob: &Blob,
    ) -> Result<()> {
        self.put_attempt(p, relay, sender_id, blob, 1, None).await
    }

    async fn put_attempt(
        &mut self,
        p: &mut Profile,
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
                let mut put = router.put(relay, sender_id, blob, attempts, previous);
                let mut last: Option<NativeError> = None;
                loop {
                    let planned = match put.next(router, p, now(), &mut rand::rng()) {
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
    pub async fn send_cover(&mut self, p: &mut Profile) -> Result<bool> {
        let Transport::Onion { net, router, conns } = self else {
            return Ok(false);
        };
        let Some(planned) = router.cover(p, now(), &mut rand::rng())? else {
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
async fn forward(
    net: &Connector,
    conns: &mut HashMap<RelayAddress, Connection>,
    entry: &RelayAddress,
    epoch: u32,
    packet: &[u8; postern_core::consts::SPHINX_PACKET_BYTES],
) -> (EntryOutcome, Option<NativeError>) {
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

/// The one set of links a command sends everything through: messages,
/// receipts, resends and cover packets leave by the same connections, so
/// an entry relay cannot tell them apart by connection pattern. Built when
/// first needed; rebuilt when its router is outdated.
pub struct Links {
    net: Connector,
    t: Option<Transport>,
}

impl core::fmt::Debug for Links {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Links").field("transport", &self.t).finish()
    }
}

impl Links {
    /// No links yet; they are made with `net` when first needed.
    pub fn new(net: Connector) -> Links {
        Links { net, t: None }
    }

    /// The transport, built (or rebuilt, when outdated) first if needed.
    pub async fn get(&mut self, p: &mut Profile) -> Result<&mut Transport> {
        let stale = self.t.as_ref().is_none_or(|t| t.is_outdated(now()));
        if stale {
            // An outdated transport stays until its successor is built.
            let h = home(p)?;
            let fresh = Transport::for_profile(p, h.as_ref(), &self.net).await?;
            if let Some(old) = self.t.replace(fresh) {
                old.close().await;
            }
        }
        self.t
            .as_mut()
            .ok_or_else(|| postern_core::Error::Bug("links").into())
    }

    /// Closes every connection.
    pub async fn close(self) {
        if let Some(t) = self.t {
            t.close().await;
        }
    }
}

/// Our acknowledgement queue, created on the home relay the first time.
async fn ensure_ack_queue(
    p: &mut Profile,
    home: &RelayAddress,
    net: &Connector,
) -> Result<(RelayAddress, QueueId)> {
    if let Some(q) = courier::ack_queue(p)? {
        return Ok(q);
    }
    let mut c = net.connect(home).await?;
    let keys = courier::QueueKeys::generate(&mut rand::rng());
    let ids = c.create_queue(&keys.queue_key).await?;
    c.close().await?;
    let q = courier::CreatedQueue {
        relay: home.clone(),
        keys,
        recipient_id: ids.recipient_id,
        sender_id: ids.sender_id,
    };
    commit(p, courier::register_ack_queue(&q, now()))?;
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
/// profile itself is an error.
pub async fn resend_overdue(p: &mut Profile, t: &mut Transport, timeout_ms: u64) -> Result<Resent> {
    let mut r = Resent::default();
    // Messages nothing awaits an acknowledgement for cannot be resealed.
    commit(p, courier::forget_unawaited_sealed(p)?)?;
    if !t.is_onion() {
        return Ok(r);
    }
    for u in courier::overdue(p, route::overdue_cutoff(now(), timeout_ms))? {
        match route::overdue_step(p, &u, now(), &mut rand::rng())? {
            route::Overdue::Forgotten { gave_up } => r.gave_up += usize::from(gave_up),
            route::Overdue::Resend { attempt } => {
                match t
                    .put_attempt(p, &u.relay, &u.sender_id, &u.blob, attempt, Some(u.id))
                    .await
                {
                    Ok(()) => r.resent += 1,
                    Err(e) if is_local_failure(&e) => return Err(e),
                    Err(_) => {
                        commit(p, courier::count_failed_attempt(p, &u.id, now())?)?;
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
                    outbox::sent(p, id)?;
                    r.resealed += 1;
                }
            }
        }
    }
    Ok(r)
}

/// Puts every blob of an outgoing message through the transport.
pub async fn put_all(p: &mut Profile, t: &mut Transport, out: &courier::Outgoing) -> Result<()> {
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
    use postern_core::crypto::signal::AuthoritySecret;
    use postern_core::directory::{self, ROLES_ALL};

    /// A directory of three relays holding keys for the epoch at `t`,
    /// signed at `t` and valid for `valid_ms`, and its authority.
    fn signed_directory(t: UnixTime, valid_ms: u64, epoch_secs: u64) -> (Vec<u8>, AuthoritySecret) {
        let mut r = rand::rng();
        let authority = AuthoritySecret::generate(&mut r);
        let epoch = directory::epoch_at(epoch_secs, UnixTime(0), t);
        let descriptors: Vec<Vec<u8>> = (0..3u16)
            .map(|i| {
                let key = AuthoritySecret::generate(&mut r);
                let addr = RelayAddress::new("127.0.0.1", 7000 + i, None).unwrap();
                directory::sign_descriptor(
                    &key,
                    &addr,
                    ROLES_ALL,
                    &[(epoch, [i as u8 + 1; 32])],
                    t,
                    &mut r,
                )
                .unwrap()
            })
            .collect();
        let signed = directory::sign_directory(
            "t",
            &descriptors,
            t,
            t.plus_millis(valid_ms),
            epoch_secs,
            UnixTime(0),
            &authority,
            &mut r,
        )
        .unwrap();
        (signed, authority)
    }

    /// A stale cached directory whose relay serves nothing better is asked
    /// for once, not before every send: the next calls within
    /// `DIRECTORY_RECHECK_MS` use the cached copy without connecting.
    #[tokio::test]
    async fn a_stale_directory_is_asked_for_at_most_once_per_recheck_interval() {
        use std::sync::{Arc, Mutex};
        // Valid for 30 more minutes: within the hour before expiry, stale.
        let (signed, authority) = signed_directory(now(), 30 * 60_000, 3_600);
        let tmp = tempfile::tempdir().unwrap();
        let mut p = Profile::create(
            tmp.path(),
            postern_store::Unlock::Passphrase(b"pw"),
            postern_core::crypto::kdf::KdfParams::TEST_ONLY,
        )
        .unwrap();
        let settings = settings::NetworkSettings {
            authorities: vec![authority.public().unwrap().to_bytes().to_vec()],
            threshold: 1,
            hops: 3,
        };
        commit(&mut p, settings::set_network(&settings).unwrap()).unwrap();
        commit(&mut p, settings::cache_directory(&signed)).unwrap();

        // The "relay" takes each connection and closes it: every fetch
        // fails at once. It records who connected, in order.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<u16>>> = Arc::default();
        let log = seen.clone();
        let server = tokio::spawn(async move {
            while let Ok((conn, peer)) = listener.accept().await {
                log.lock().unwrap().push(peer.port());
                drop(conn);
            }
        });
        let from = RelayAddress::new("127.0.0.1", port, Some([7; 32])).unwrap();
        for _ in 0..3 {
            // The cached copy, stale but valid, each time.
            let (d, hops) = directory(&mut p, &from, &Connector::default())
                .await
                .unwrap()
                .unwrap();
            assert_eq!((d.relays.len(), hops), (3, 3));
        }
        // A last connection of our own: once it is seen, every earlier
        // one has been (they are accepted in order).
        let marker = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mine = marker.local_addr().unwrap().port();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while !seen.lock().unwrap().contains(&mine) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "marker never accepted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        server.abort();
        let fetches = seen.lock().unwrap().len() - 1;
        assert_eq!(fetches, 1, "{fetches} directory fetches for 3 sends");
    }
}
