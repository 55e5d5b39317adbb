//! How blobs leave this device: straight to the recipient's relay, or —
//! when an onion network is configured — each blob wrapped in a Sphinx
//! packet over a fresh random path (entry → mix → the recipient's
//! mailbox relay), handed to the entry relay. A path whose entry fails
//! is retried over another entry.

use std::collections::HashMap;

use postern_core::crypto::signal::AuthorityPublic;
use postern_core::directory::Directory;
use postern_core::onion::{self, Node};
use postern_core::relay_proto::{Blob, QueueId};
use postern_core::{KvStore, RelayAddress, UnixTime, courier};
use postern_net::{Connection, Connector, NetError};
use postern_store::Profile;

use crate::{CliError, Result, commit, now};

/// Paths tried per blob, per attempt, before giving up on reaching an entry.
pub const MAX_PATH_ATTEMPTS: usize = 4;
/// Times a blob is sent over the onion network without an
/// acknowledgement before it is reported undelivered.
pub const MAX_SEND_ATTEMPTS: u32 = 8;
/// How long to wait for a delivery acknowledgement before sending again.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 30_000;

/// Where blobs go.
pub enum Transport {
    /// To the queue's relay directly.
    Direct {
        /// How connections are made.
        net: Connector,
        /// Open connections by relay.
        conns: HashMap<RelayAddress, Connection>,
    },
    /// Through the onion network.
    Onion {
        /// How connections are made.
        net: Connector,
        /// Our acknowledgement queue: its relay and sender id.
        acks: (RelayAddress, QueueId),
        /// Relays with keys for `epoch`.
        nodes: Vec<Node>,
        /// The Sphinx key epoch packets are built for.
        epoch: u32,
        /// Hops per path.
        hops: usize,
        /// Open connections to entry relays.
        conns: HashMap<RelayAddress, Connection>,
        /// Relays that could not be reached in this run.
        down: Vec<[u8; 32]>,
        /// When to build a fresh transport: the end of `epoch`, or
        /// [`ONION_TRANSPORT_MAX_AGE_MS`] after this one was built.
        renew_at: UnixTime,
    },
}

/// A long-lived onion transport (`watch`) is rebuilt at least this often,
/// so relays found down are tried again and the directory stays fresh.
pub const ONION_TRANSPORT_MAX_AGE_MS: u64 = 10 * 60 * 1000;

fn pinned(n: &courier::NetworkSettings) -> Result<Vec<AuthorityPublic>> {
    n.authorities
        .iter()
        .map(|k| AuthorityPublic::from_bytes(k).map_err(CliError::from))
        .collect()
}

/// A verified directory: the cached one while it is fresh (or was
/// refetched within [`postern_core::consts::DIRECTORY_RECHECK_MS`]), else
/// fetched from `from` (and cached).
pub async fn directory(
    p: &mut Profile,
    from: &RelayAddress,
    net: &Connector,
) -> Result<Option<(Directory, usize)>> {
    let Some(n) = courier::network(p)? else {
        return Ok(None);
    };
    let hops = usize::from(n.hops);
    let keys = pinned(&n)?;
    let threshold = usize::try_from(n.threshold).unwrap_or(usize::MAX);
    let t = now();
    let cached = courier::cached_directory(p)?
        .and_then(|bytes| Directory::verify(&bytes, &keys, threshold, t).ok());
    if let Some(d) = &cached
        && !d.should_refetch(courier::directory_fetched_at(p)?, t)
    {
        return Ok(Some((d.clone(), hops)));
    }
    commit(p, courier::set_directory_fetched_at(t))?;
    let fetched = async {
        let mut c = net.connect(from).await?;
        let bytes = c.get_directory().await?;
        c.close().await?;
        let d = Directory::verify(&bytes, &keys, threshold, t)?;
        Ok::<_, CliError>((bytes, d))
    }
    .await;
    match (fetched, cached) {
        // Keep the newer of the two: a relay may serve an older copy.
        (Ok((bytes, d)), cached) => {
            if let Some(c) = cached
                && c.issued_at > d.issued_at
            {
                return Ok(Some((c, hops)));
            }
            commit(p, courier::cache_directory(&bytes))?;
            Ok(Some((d, hops)))
        }
        // The home relay is unreachable or serves nothing valid: a stale
        // but valid copy is still better than none.
        (Err(_), Some(c)) => Ok(Some((c, hops))),
        (Err(e), None) => Err(e),
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
                Transport::onion(&d, now(), acks, hops, *net)
            }
            _ => Transport::Direct {
                net: *net,
                conns: HashMap::new(),
            },
        })
    }

    /// Onion transport over a verified directory.
    pub fn onion(
        d: &Directory,
        t: UnixTime,
        acks: (RelayAddress, QueueId),
        hops: usize,
        net: Connector,
    ) -> Transport {
        let epoch = d.epoch_at(t);
        let epoch_end = d.epoch_start(epoch.saturating_add(1));
        let renew_at = UnixTime(
            epoch_end
                .millis()
                .min(t.millis().saturating_add(ONION_TRANSPORT_MAX_AGE_MS)),
        );
        Transport::Onion {
            net,
            acks,
            nodes: onion::nodes(d, epoch),
            epoch,
            hops,
            conns: HashMap::new(),
            down: Vec::new(),
            renew_at,
        }
    }

    /// Whether a long-lived transport should be replaced by a fresh one
    /// (its key epoch has ended, or it is old): packets built for an old
    /// epoch would stand out at the entry and soon be refused.
    pub fn is_outdated(&self, t: UnixTime) -> bool {
        match self {
            Transport::Direct { .. } => false,
            Transport::Onion { renew_at, .. } => t >= *renew_at,
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
                    .ok_or_else(|| CliError::Usage("connection".into()))?;
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
            Transport::Onion {
                net,
                acks,
                nodes,
                epoch,
                hops,
                conns,
                down,
                ..
            } => {
                // Relays found unreachable earlier in this run are avoided in
                // every position, for packets and for acknowledgements.
                let mut avoid = down.clone();
                let mut last: Option<CliError> = None;
                let mut previous = previous;
                for _ in 0..MAX_PATH_ATTEMPTS {
                    let path =
                        match onion::choose_path(nodes, relay, *hops, &avoid, &mut rand::rng()) {
                            Ok(p) => p,
                            // Every entry failed: report why.
                            Err(e) => return Err(last.unwrap_or_else(|| e.into())),
                        };
                    let ack_path =
                        onion::choose_path(nodes, &acks.0, *hops, down, &mut rand::rng()).or_else(
                            |_| onion::choose_path(nodes, &acks.0, *hops, &[], &mut rand::rng()),
                        )?;
                    let entry = path
                        .entry()
                        .ok_or_else(|| CliError::Usage("empty path".into()))?
                        .clone();
                    let (packet, pending) = onion::wrap_with_ack(
                        &path,
                        sender_id,
                        blob,
                        &ack_path,
                        &acks.1,
                        &mut rand::rng(),
                    )?;
                    // Recorded before it leaves: a crash cannot lose it.
                    let cs = courier::record_pending(
                        p,
                        &pending,
                        relay,
                        sender_id,
                        blob,
                        now(),
                        attempts,
                        previous.as_ref(),
                    )?;
                    commit(p, cs)?;
                    previous = Some(pending.id);
                    if !conns.contains_key(&entry.address) {
                        match net.connect(&entry.address).await {
                            Ok(c) => {
                                conns.insert(entry.address.clone(), c);
                            }
                            Err(e) => {
                                avoid.push(entry.id);
                                down.push(entry.id);
                                last = Some(e.into());
                                continue;
                            }
                        }
                    }
                    let Some(c) = conns.get_mut(&entry.address) else {
                        continue;
                    };
                    match c.forward(*epoch, &packet).await {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            conns.remove(&entry.address);
                            avoid.push(entry.id);
                            last = Some(e.into());
                        }
                    }
                }
                Err(last.unwrap_or_else(|| CliError::Usage("no onion path worked".into())))
            }
        }
    }

    /// Sends one cover packet over a random path ending at a random
    /// mailbox relay: a drop, or a loop that comes back to us through a
    /// reply block. Returns false when not on an onion network.
    pub async fn send_cover(&mut self, p: &mut Profile) -> Result<bool> {
        let Transport::Onion {
            net,
            acks,
            nodes,
            epoch,
            hops,
            conns,
            down,
            ..
        } = self
        else {
            return Ok(false);
        };
        let mailboxes: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.roles & onion::ROLE_MAILBOX != 0 && !down.contains(&n.id))
            .collect();
        let Some(last) = mailboxes
            .get(usize::try_from(rand::random::<u32>()).unwrap_or(0) % mailboxes.len().max(1))
            .map(|n| n.address.clone())
        else {
            return Ok(false);
        };
        let path = onion::choose_path(nodes, &last, *hops, down, &mut rand::rng())?;
        let entry = path
            .entry()
            .ok_or_else(|| CliError::Usage("empty path".into()))?
            .clone();
        // Half drops, half loops (which come back as acknowledgements).
        let packet = if rand::random::<bool>() {
            onion::cover_packet(&path, &mut rand::rng())?
        } else {
            let ack_path = onion::choose_path(nodes, &acks.0, *hops, down, &mut rand::rng())?;
            let (packet, pending) =
                onion::loop_packet(&path, &ack_path, &acks.1, &mut rand::rng())?;
            commit(p, courier::record_loop(p, &pending, now())?)?;
            packet
        };
        if !conns.contains_key(&entry.address) {
            match net.connect(&entry.address).await {
                Ok(c) => {
                    conns.insert(entry.address.clone(), c);
                }
                Err(_) => {
                    down.push(entry.id);
                    return Ok(true);
                }
            }
        }
        if let Some(c) = conns.get_mut(&entry.address)
            && c.forward(*epoch, &packet).await.is_err()
        {
            conns.remove(&entry.address);
        }
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

/// Whether an error is about this device (the profile cannot be read or
/// written) or a bug, not about the network: such an error ends a
/// long-running command instead of being retried like a network failure.
pub fn is_local_failure(e: &CliError) -> bool {
    use postern_core::error::HasKind as _;
    matches!(
        e.kind(),
        postern_core::ErrorKind::Storage | postern_core::ErrorKind::Bug
    )
}

/// What [`resend_overdue`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resent {
    /// Blobs sent again.
    pub resent: usize,
    /// Blobs given up after [`MAX_SEND_ATTEMPTS`].
    pub gave_up: usize,
    /// Blobs that could not leave this time (no path, no entry reachable);
    /// each such try counts as an attempt.
    pub failed: usize,
}

/// Sends again, over fresh paths, every blob whose acknowledgement has
/// not come within `timeout_ms`. A blob that cannot leave now does not
/// stop the others; only a failure of the profile itself is an error.
pub async fn resend_overdue(p: &mut Profile, t: &mut Transport, timeout_ms: u64) -> Result<Resent> {
    let mut r = Resent::default();
    if !t.is_onion() {
        return Ok(r);
    }
    let cutoff = UnixTime(now().millis().saturating_sub(timeout_ms));
    for u in courier::overdue(p, cutoff)? {
        if u.attempts >= MAX_SEND_ATTEMPTS {
            commit(p, courier::forget_pending(p, &u.id)?)?;
            r.gave_up += 1;
            continue;
        }
        match t
            .put_attempt(
                p,
                &u.relay,
                &u.sender_id,
                &u.blob,
                u.attempts + 1,
                Some(u.id),
            )
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
    Ok(r)
}

/// Reads the home relay (for fetching the directory).
pub fn home(p: &dyn KvStore) -> Result<Option<RelayAddress>> {
    Ok(courier::home_relay(p)?)
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

    /// An onion transport built during an epoch is outdated when that
    /// epoch ends, or after ONION_TRANSPORT_MAX_AGE_MS, whichever is first.
    #[test]
    fn an_onion_transport_is_renewed_at_the_end_of_its_epoch() {
        let epoch_secs = 3_600u64;
        // 50 minutes into an hourly epoch (1.8e12 ms is a whole hour).
        let t = UnixTime(1_800_000_000_000 + 50 * 60_000);
        let (signed, authority) = signed_directory(t, 86_400_000, epoch_secs);
        let d = Directory::verify(&signed, &[authority.public().unwrap()], 1, t).unwrap();
        let acks = (RelayAddress::new("127.0.0.1", 7000, None).unwrap(), [0; 16]);
        let tr = Transport::onion(&d, t, acks.clone(), 3, Connector::default());
        assert!(!tr.is_outdated(t.plus_millis(10 * 60_000 - 1)));
        assert!(tr.is_outdated(t.plus_millis(10 * 60_000)));
        // Built 5 minutes before the epoch ends: renewed at its end.
        let late = t.plus_millis(5 * 60_000);
        let tr = Transport::onion(&d, late, acks, 3, Connector::default());
        assert!(!tr.is_outdated(late.plus_millis(5 * 60_000 - 1)));
        assert!(tr.is_outdated(late.plus_millis(5 * 60_000)));
        assert!(
            !Transport::Direct {
                net: Connector::default(),
                conns: HashMap::new()
            }
            .is_outdated(late)
        );
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
        let settings = courier::NetworkSettings {
            authorities: vec![authority.public().unwrap().to_bytes().to_vec()],
            threshold: 1,
            hops: 3,
        };
        commit(&mut p, courier::set_network(&settings).unwrap()).unwrap();
        commit(&mut p, courier::cache_directory(&signed)).unwrap();

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
