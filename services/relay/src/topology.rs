//! Glue between the relay's directory and keys ([`DirectoryState`]) and
//! its onion hop ([`Mix`]).

use std::path::Path;
use std::sync::Arc;

use postern_core::RelayAddress;
use postern_core::time::UnixTime;
use zeroize::Zeroizing;

use crate::directory::DirectoryState;
use crate::metrics::Metrics;
use crate::mix::{Mix, Topology};
use crate::replay::ReplayCache;

/// Directory, own id and Sphinx keys, as the mix sees them.
#[derive(Debug)]
pub struct NetTopology(pub Arc<DirectoryState>);

impl Topology for NetTopology {
    fn own_id(&self) -> Option<[u8; 32]> {
        // Only a relay listed in a directory takes part in routing.
        let d = self.0.current_directory()?;
        let id = self.0.own_id();
        d.relay(&id).map(|_| id)
    }

    fn address_of(&self, id: &[u8; 32]) -> Option<RelayAddress> {
        self.0
            .current_directory()?
            .relay(id)
            .map(|r| r.address.clone())
    }

    fn secret(&self, epoch: u32, now: UnixTime) -> Option<Zeroizing<[u8; 32]>> {
        self.0.sphinx_keys().secret(epoch, now)
    }

    fn keep_epoch(&self, epoch: u32, now: UnixTime) -> bool {
        self.0.sphinx_keys().epochs().usable(epoch, now)
    }
}

/// The relay's onion hop over `state`, with its replay cache in
/// `data_dir`.
pub fn mix(
    state: Arc<DirectoryState>,
    data_dir: &Path,
    mean_delay_ms: u64,
    metrics: Arc<Metrics>,
) -> std::io::Result<Arc<Mix>> {
    let replay = ReplayCache::open(data_dir)?;
    Ok(Arc::new(Mix::new(
        Arc::new(NetTopology(state)),
        mean_delay_ms,
        replay,
        metrics,
    )))
}
