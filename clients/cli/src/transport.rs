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
use postern_net::{Connection, NetError};
use postern_store::Profile;

use crate::{CliError, Result, commit, now};

/// Paths tried per blob before giving up.
pub const MAX_PATH_ATTEMPTS: usize = 4;
/// A cached directory is refreshed when it has less than this left.
pub const DIRECTORY_REFRESH_MS: u64 = 3600 * 1000;

/// Where blobs go.
pub enum Transport {
    /// To the queue's relay directly.
    Direct {
        /// Open connections by relay.
        conns: HashMap<RelayAddress, Connection>,
    },
    /// Through the onion network.
    Onion {
        /// Relays with keys for `epoch`.
        nodes: Vec<Node>,
        /// The Sphinx key epoch packets are built for.
        epoch: u32,
        /// Hops per path.
        hops: usize,
        /// Open connections to entry relays.
        conns: HashMap<RelayAddress, Connection>,
    },
}

fn pinned(n: &courier::NetworkSettings) -> Result<Vec<AuthorityPublic>> {
    n.authorities
        .iter()
        .map(|k| AuthorityPublic::from_bytes(k).map_err(CliError::from))
        .collect()
}

/// A verified directory: the cached one while it is fresh, else fetched
/// from `from` (and cached).
pub async fn directory(p: &mut Profile, from: &RelayAddress) -> Result<Option<Directory>> {
    let Some(n) = courier::network(p)? else {
        return Ok(None);
    };
    let keys = pinned(&n)?;
    let threshold = usize::try_from(n.threshold).unwrap_or(usize::MAX);
    let t = now();
    if let Some(bytes) = courier::cached_directory(p)?
        && let Ok(d) = Directory::verify(&bytes, &keys, threshold, t)
        && d.valid_until.millis().saturating_sub(t.millis()) > DIRECTORY_REFRESH_MS
    {
        return Ok(Some(d));
    }
    let mut c = Connection::connect(from).await?;
    let bytes = c.get_directory().await?;
    c.close().await?;
    let d = Directory::verify(&bytes, &keys, threshold, t)?;
    commit(p, courier::cache_directory(&bytes))?;
    Ok(Some(d))
}

impl Transport {
    /// The transport for this profile: onion routing when a network is
    /// configured (its directory fetched from `home`), else direct.
    pub async fn for_profile(p: &mut Profile, home: Option<&RelayAddress>) -> Result<Transport> {
        let dir = match home {
            Some(h) => directory(p, h).await?,
            None => None,
        };
        Ok(match dir {
            None => Transport::Direct {
                conns: HashMap::new(),
            },
            Some(d) => Transport::onion(&d, now()),
        })
    }

    /// Onion transport over a verified directory.
    pub fn onion(d: &Directory, t: UnixTime) -> Transport {
        let epoch = d.epoch_at(t);
        Transport::Onion {
            nodes: onion::nodes(d, epoch),
            epoch,
            hops: onion::DEFAULT_HOPS,
            conns: HashMap::new(),
        }
    }

    /// Whether blobs go through the onion network.
    pub fn is_onion(&self) -> bool {
        matches!(self, Transport::Onion { .. })
    }

    /// Puts one blob into the queue `sender_id` on `relay`.
    pub async fn put(
        &mut self,
        relay: &RelayAddress,
        sender_id: &QueueId,
        blob: &Blob,
    ) -> Result<()> {
        match self {
            Transport::Direct { conns } => {
                if !conns.contains_key(relay) {
                    conns.insert(relay.clone(), Connection::connect(relay).await?);
                }
                let c = conns
                    .get_mut(relay)
                    .ok_or_else(|| CliError::Usage("connection".into()))?;
                match c.send(sender_id, blob).await {
                    Err(e @ NetError::Relay(_)) => Err(e.into()),
                    Err(_) => {
                        // One reconnect for a broken link.
                        let mut fresh = Connection::connect(relay).await?;
                        fresh.send(sender_id, blob).await?;
                        conns.insert(relay.clone(), fresh);
                        Ok(())
                    }
                    Ok(()) => Ok(()),
                }
            }
            Transport::Onion {
                nodes,
                epoch,
                hops,
                conns,
            } => {
                let mut avoid = Vec::new();
                let mut last: Option<CliError> = None;
                for _ in 0..MAX_PATH_ATTEMPTS {
                    let path = onion::choose_path(nodes, relay, *hops, &avoid, &mut rand::rng())?;
                    let entry = path
                        .entry()
                        .ok_or_else(|| CliError::Usage("empty path".into()))?
                        .clone();
                    let packet = onion::wrap(&path, sender_id, blob, &mut rand::rng())?;
                    if !conns.contains_key(&entry.address) {
                        match Connection::connect(&entry.address).await {
                            Ok(c) => {
                                conns.insert(entry.address.clone(), c);
                            }
                            Err(e) => {
                                avoid.push(entry.id);
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

    /// Closes every connection.
    pub async fn close(self) {
        let conns = match self {
            Transport::Direct { conns } | Transport::Onion { conns, .. } => conns,
        };
        for (_, c) in conns {
            let _ = c.close().await;
        }
    }
}

/// Reads the home relay (for fetching the directory).
pub fn home(p: &dyn KvStore) -> Result<Option<RelayAddress>> {
    Ok(courier::home_relay(p)?)
}
