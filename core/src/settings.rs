//! The client's settings: home relay, network authorities and cached
//! directory, display name. Stored as `Setting` records.

use crate::error::{Error, Result};
use crate::relay_address::RelayAddress;
use crate::store::{ChangeSet, KvStore, Namespace, Record};
use crate::time::UnixTime;

use crate::courier::corrupt;

const SETTING_HOME_RELAY: &[u8] = b"home_relay";
const SETTING_NAME: &[u8] = b"display_name";

fn setting(store: &dyn KvStore, key: &[u8]) -> Result<Option<String>> {
    match store.get(Namespace::Setting, key)? {
        None => Ok(None),
        Some(r) => String::from_utf8(r.checked(Namespace::Setting)?.to_vec())
            .map(Some)
            .map_err(|_| corrupt(Namespace::Setting)),
    }
}

/// The relay where new queues are created.
pub fn home_relay(store: &dyn KvStore) -> Result<Option<RelayAddress>> {
    setting(store, SETTING_HOME_RELAY)?
        .map(|s| RelayAddress::parse(&s).map_err(|_| corrupt(Namespace::Setting)))
        .transpose()
}

/// Sets the home relay.
pub fn set_home_relay(relay: &RelayAddress) -> ChangeSet {
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Setting,
        SETTING_HOME_RELAY,
        Record::current(Namespace::Setting, relay.to_string().into_bytes()),
    );
    cs
}

const SETTING_AUTHORITIES: &[u8] = b"directory_authorities";
const SETTING_DIRECTORY: &[u8] = b"directory";

/// The onion network this profile sends through: the directory
/// authorities' public keys (33 bytes each) and how many must sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Pinned authority keys.
    pub authorities: Vec<Vec<u8>>,
    /// Signatures required.
    pub threshold: u32,
    /// Relays per path (3 to 5).
    pub hops: u8,
}

/// The onion network settings, if one is configured (otherwise blobs go
/// straight to the recipient's relay).
pub fn network(store: &dyn KvStore) -> Result<Option<NetworkSettings>> {
    let Some(r) = store.get(Namespace::Setting, SETTING_AUTHORITIES)? else {
        return Ok(None);
    };
    let b = r.checked(Namespace::Setting)?;
    let (t, rest) = b
        .split_first_chunk::<4>()
        .ok_or(corrupt(Namespace::Setting))?;
    let (&hops, keys) = rest.split_first().ok_or(corrupt(Namespace::Setting))?;
    if keys.is_empty() || keys.len() % 33 != 0 {
        return Err(corrupt(Namespace::Setting));
    }
    Ok(Some(NetworkSettings {
        threshold: u32::from_be_bytes(*t),
        hops,
        authorities: keys.chunks_exact(33).map(<[u8]>::to_vec).collect(),
    }))
}

/// Configures the onion network (clears any cached directory).
pub fn set_network(n: &NetworkSettings) -> Result<ChangeSet> {
    if n.authorities.is_empty()
        || n.threshold == 0
        || usize::try_from(n.threshold).map_or(true, |t| t > n.authorities.len())
        || n.authorities.iter().any(|k| k.len() != 33)
        || !(crate::onion::MIN_HOPS..=crate::crypto::sphinx::MAX_HOPS)
            .contains(&usize::from(n.hops))
    {
        return Err(Error::Malformed {
            what: "network settings",
        });
    }
    let mut v = n.threshold.to_be_bytes().to_vec();
    v.push(n.hops);
    for k in &n.authorities {
        v.extend_from_slice(k);
    }
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Setting,
        SETTING_AUTHORITIES,
        Record::current(Namespace::Setting, v),
    );
    cs.delete(Namespace::Setting, SETTING_DIRECTORY);
    Ok(cs)
}

/// The last directory document fetched (verified again on every use).
pub fn cached_directory(store: &dyn KvStore) -> Result<Option<Vec<u8>>> {
    Ok(store
        .get(Namespace::Setting, SETTING_DIRECTORY)?
        .map(|r| r.checked(Namespace::Setting).map(<[u8]>::to_vec))
        .transpose()?)
}

/// Caches a directory document.
pub fn cache_directory(bytes: &[u8]) -> ChangeSet {
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Setting,
        SETTING_DIRECTORY,
        Record::current(Namespace::Setting, bytes.to_vec()),
    );
    cs
}

const SETTING_DIRECTORY_FETCHED: &[u8] = b"directory_fetched_at";

/// When a directory was last fetched (or a fetch was tried).
pub fn directory_fetched_at(store: &dyn KvStore) -> Result<Option<UnixTime>> {
    setting(store, SETTING_DIRECTORY_FETCHED)?
        .map(|s| {
            s.parse::<u64>()
                .map(UnixTime)
                .map_err(|_| corrupt(Namespace::Setting))
        })
        .transpose()
}

/// Records a directory fetch (or a try) at `at`.
pub fn set_directory_fetched_at(at: UnixTime) -> ChangeSet {
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Setting,
        SETTING_DIRECTORY_FETCHED,
        Record::current(Namespace::Setting, at.millis().to_string().into_bytes()),
    );
    cs
}

/// The name we suggest to contacts (empty if unset).
pub fn display_name(store: &dyn KvStore) -> Result<String> {
    Ok(setting(store, SETTING_NAME)?.unwrap_or_default())
}

/// Sets the name we suggest to contacts.
pub fn set_display_name(name: &str) -> Result<ChangeSet> {
    check_name(name)?;
    let mut cs = ChangeSet::new();
    cs.put(
        Namespace::Setting,
        SETTING_NAME,
        Record::current(Namespace::Setting, name.as_bytes().to_vec()),
    );
    Ok(cs)
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.len() > crate::consts::MAX_DISPLAY_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(Error::Malformed {
            what: "display name",
        });
    }
    Ok(())
}
