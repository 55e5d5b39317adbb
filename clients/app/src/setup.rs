//! A new profile's first records, the same for every shell: identity
//! keys, the name suggested to contacts, the home relay and the pinned
//! directory authorities of the network.

use postern_core::crypto::signal::AuthorityPublic;
use postern_core::{KvStore, RelayAddress, UnixTime, e2e, settings};
use rand_core::{CryptoRng, RngCore};

/// What a new profile is made with.
#[derive(Debug, Clone)]
pub struct NewProfile<'a> {
    /// The name suggested to contacts.
    pub name: &'a str,
    /// The home relay.
    pub relay: &'a RelayAddress,
    /// The network's directory authorities (public keys; none: no onion
    /// network, messages go straight to the relays).
    pub authorities: &'a [Vec<u8>],
    /// Onion hops per path.
    pub hops: u8,
}

/// Why a profile could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// An authority key of the configuration is not one.
    #[error("bad authority key in the configuration")]
    BadAuthority,
    /// The core or the store refused.
    #[error("{0}")]
    Core(#[from] postern_core::Error),
    /// The store refused.
    #[error("{0}")]
    Store(#[from] postern_core::StoreError),
}

/// The authority keys of a configuration (base64url, as `postern-relay
/// testnet` prints them), each checked.
pub fn authority_keys(encoded: &[String]) -> Result<Vec<Vec<u8>>, SetupError> {
    encoded
        .iter()
        .map(|a| {
            let k = decode_b64url(a.trim()).ok_or(SetupError::BadAuthority)?;
            AuthorityPublic::from_bytes(&k).map_err(|_| SetupError::BadAuthority)?;
            Ok(k)
        })
        .collect()
}

fn decode_b64url(s: &str) -> Option<Vec<u8>> {
    data_encoding::BASE64URL_NOPAD.decode(s.as_bytes()).ok()
}

/// Writes a new profile's first records into `p` (an empty store).
pub fn setup<R: RngCore + CryptoRng>(
    p: &mut dyn KvStore,
    new: &NewProfile<'_>,
    now: UnixTime,
    rng: &mut R,
) -> Result<(), SetupError> {
    let (_, cs) = e2e::create_identity(p, now, rng)?;
    p.commit(cs)?;
    p.commit(settings::set_display_name(new.name)?)?;
    p.commit(settings::set_home_relay(new.relay))?;
    if !new.authorities.is_empty() {
        p.commit(settings::set_network(&settings::NetworkSettings {
            authorities: new.authorities.to_vec(),
            threshold: 1,
            hops: new.hops,
        })?)?;
    }
    Ok(())
}
