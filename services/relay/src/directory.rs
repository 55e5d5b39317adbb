//! The relay's view of the network: its descriptor key and Sphinx keys
//! (`keys`), and the network's signed directory, read from
//! `DATA_DIR/directory`, verified with the pinned authority keys of the
//! config, served to `GetDirectory` and used by the mix to find next
//! hops.
//!
//! A maintenance task ([`DirectoryState::maintain`]) reloads the
//! directory file when it changes (checked every [`RELOAD_INTERVAL`]),
//! forgets it when it expires, rotates the Sphinx keys and rewrites the
//! relay's descriptor when they change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use postern_core::crypto::signal::{AuthorityPublic, DescriptorSecret};
use postern_core::directory::{self, Directory};
use postern_core::relay_proto::{Blob, ErrorCode, Reply};
use postern_core::{RelayAddress, UnixTime};
use tokio::sync::watch;

use crate::config::Settings;
use crate::keys::{self, Epochs, KeyError, SphinxKeys};

/// The signed directory file in the data directory.
pub const DIRECTORY_FILE: &str = "directory";
/// How often the directory file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Longest interval between two Sphinx key rotations.
pub const MAX_ROTATE_INTERVAL: Duration = Duration::from_secs(600);

/// A verified directory and what `GetDirectory` answers with.
#[derive(Debug)]
struct Loaded {
    directory: Arc<Directory>,
    blobs: Arc<Vec<Blob>>,
}

/// The relay's keys and its current directory. Shared by all connections.
pub struct DirectoryState {
    data_dir: PathBuf,
    authority_keys: Vec<AuthorityPublic>,
    threshold: usize,
    roles: u32,
    descriptor_key: DescriptorSecret,
    own_id: [u8; 32],
    sphinx_keys: Arc<SphinxKeys>,
    current: RwLock<Option<Loaded>>,
    /// Modification time and length of the directory file last examined.
    seen: Mutex<Option<(SystemTime, u64)>>,
    /// The WebTransport listener announced in the descriptor, if any.
    webtransport: Mutex<Option<directory::WebTransportInfo>>,
}

impl core::fmt::Debug for DirectoryState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DirectoryState(..)")
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl DirectoryState {
    /// Loads (or creates) the relay's descriptor key and Sphinx keys,
    /// rotates the Sphinx keys, and loads the directory file if there is
    /// one. Call with the data directory locked.
    pub fn open(settings: &Settings) -> Result<Arc<DirectoryState>, KeyError> {
        let data_dir = settings.data_dir.clone();
        let descriptor_key = keys::load_or_create_descriptor_key(&data_dir)?;
        let own_id = directory::relay_id(&descriptor_key.public().map_err(KeyError::Descriptor)?);
        let sphinx_keys = Arc::new(SphinxKeys::open(
            &data_dir,
            Epochs {
                secs: settings.epoch_secs,
                zero: settings.epoch_zero,
            },
        )?);
        sphinx_keys.rotate(keys::now())?;
        let state = Arc::new(DirectoryState {
            data_dir,
            authority_keys: settings.authority_keys.clone(),
            threshold: settings.authority_threshold,
            roles: settings.roles,
            descriptor_key,
            own_id,
            sphinx_keys,
            current: RwLock::new(None),
            seen: Mutex::new(None),
            webtransport: Mutex::new(None),
        });
        state.reload(keys::now());
        Ok(state)
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, Option<Loaded>> {
        // A panic while holding the lock cannot leave the value invalid.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, loaded: Option<Loaded>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
    }

    /// The verified, unexpired directory, if the relay has one.
    pub fn current_directory(&self) -> Option<Arc<Directory>> {
        self.current().as_ref().map(|l| l.directory.clone())
    }

    /// This relay's id (its Sphinx node address).
    pub fn own_id(&self) -> [u8; 32] {
        self.own_id
    }

    /// This relay's Sphinx epoch keys.
    pub fn sphinx_keys(&self) -> &Arc<SphinxKeys> {
        &self.sphinx_keys
    }

    /// The answer to `GetDirectory`: one `Item` per blob (`item_id` =
    /// index), then `Done`; `NoDirectory` without a directory.
    pub fn get_directory(&self) -> Result<Vec<Reply>, ErrorCode> {
        let blobs = self
            .current()
            .as_ref()
            .map(|l| l.blobs.clone())
            .ok_or(ErrorCode::NoDirectory)?;
        let count = u32::try_from(blobs.len()).map_err(|_| ErrorCode::Internal)?;
        let mut replies: Vec<Reply> = (0u64..)
            .zip(blobs.iter())
            .map(|(item_id, blob)| Reply::Item {
                item_id,
                blob: blob.clone(),
            })
            .collect();
        replies.push(Reply::Done { count, more: false });
        Ok(replies)
    }

    /// Forgets a directory that expired, and re-reads the directory file
    /// if it changed since it was last examined. A file that does not
    /// verify is logged and ignored (the previous directory, if any, stays
    /// until it expires).
    pub fn reload(&self, now: UnixTime) {
        let expired = self
            .current()
            .as_ref()
            .is_some_and(|l| now >= l.directory.valid_until);
        if expired {
            tracing::warn!("directory expired; serving none until a new one is installed");
            self.set(None);
        }
        let path = self.data_dir.join(DIRECTORY_FILE);
        let stamp = file_stamp(&path);
        {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *seen == stamp {
                return;
            }
            *seen = stamp;
        }
        if stamp.is_none() {
            return;
        }
        if self.authority_keys.is_empty() {
            tracing::warn!("a directory file is present but no authority_keys are configured");
            return;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the directory file");
                return;
            }
        };
        let verified = Directory::verify(&bytes, &self.authority_keys, self.threshold, now)
            .and_then(|d| Ok((d, directory::to_blobs(&bytes)?)));
        match verified {
            Ok((d, blobs)) => {
                let listed = d.relay(&self.own_id).is_some();
                tracing::info!(
                    relays = d.relays.len(),
                    listed,
                    network = %d.network,
                    "directory loaded"
                );
                self.set(Some(Loaded {
                    directory: Arc::new(d),
                    blobs: Arc::new(blobs),
                }));
            }
            Err(e) => tracing::warn!(error = %e, "directory file refused"),
        }
    }

    /// Rotates the Sphinx keys and, when they changed (or `force`),
    /// rewrites `DATA_DIR/descriptor` for `address`.
    pub fn refresh_descriptor(
        &self,
        address: &RelayAddress,
        now: UnixTime,
        force: bool,
    ) -> Result<(), KeyError> {
        let changed = self.sphinx_keys.rotate(now)?;
        if changed || force {
            let wt = self
                .webtransport
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            keys::write_descriptor(
                &self.data_dir,
                &self.descriptor_key,
                &self.sphinx_keys,
                address,
                self.roles,
                wt.as_ref(),
                now,
            )?;
            tracing::info!("descriptor written");
        }
        Ok(())
    }

    /// Sets the WebTransport listener the descriptor announces (its
    /// port and certificate hashes); the caller then refreshes the
    /// descriptor.
    pub fn set_webtransport(&self, info: Option<directory::WebTransportInfo>) {
        *self
            .webtransport
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = info;
    }

    /// Runs until `stop`: reloads the directory every
    /// [`RELOAD_INTERVAL`], rotates the Sphinx keys every quarter epoch
    /// (at most every [`MAX_ROTATE_INTERVAL`]) and keeps the descriptor
    /// for `address` current.
    pub async fn maintain(self: Arc<Self>, address: RelayAddress, mut stop: watch::Receiver<bool>) {
        let quarter = Duration::from_secs((self.sphinx_keys.epochs().secs / 4).max(1));
        let rotate_every = quarter.min(MAX_ROTATE_INTERVAL);
        if let Err(e) = self.refresh_descriptor(&address, keys::now(), true) {
            tracing::warn!(error = %e, "cannot write the descriptor");
        }
        let mut reload = tokio::time::interval(RELOAD_INTERVAL);
        let mut rotate = tokio::time::interval(rotate_every);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = reload.tick() => self.reload(keys::now()),
                _ = rotate.tick() => {
                    if let Err(e) = self.refresh_descriptor(&address, keys::now(), false) {
                        tracing::warn!(error = %e, "key rotation failed");
                    }
                }
            }
        }
    }
}
