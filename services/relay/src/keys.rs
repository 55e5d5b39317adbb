//! The relay's own keys, in its data directory:
//!
//! - `descriptor-key` (mode 0600): the long-term Curve25519 key that signs
//!   the relay's descriptor; its hash is the relay's id (Sphinx node
//!   address). Created by `init`, or by the first `run`.
//! - `sphinx-keys` (mode 0600): X25519 secrets, one per Sphinx key epoch,
//!   for the current and the next epoch (and the previous one for
//!   [`EPOCH_OVERLAP_SECS`] after it ended). Older ones are deleted, so a
//!   relay seized later cannot peel packets recorded earlier.
//! - `descriptor`: the signed descriptor (public), for the network's
//!   authority.
//!
//! Only the process holding the data directory's lock (`relay.lock`)
//! writes these files.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use postern_core::consts::EPOCH_OVERLAP_SECS;
use postern_core::crypto::signal::DescriptorSecret;
use postern_core::crypto::sphinx::NodeSecret;
use postern_core::directory::{self, epoch_at, epoch_start};
use postern_core::{RelayAddress, UnixTime};
use zeroize::Zeroizing;

/// The descriptor key file.
pub const DESCRIPTOR_KEY_FILE: &str = "descriptor-key";
/// The Sphinx epoch keys file.
pub const SPHINX_KEYS_FILE: &str = "sphinx-keys";
/// The signed descriptor file.
pub const DESCRIPTOR_FILE: &str = "descriptor";

const SPHINX_KEYS_HEADER: &str = "postern-sphinx-keys v1";
/// Most epoch keys the file may hold (previous, current, next, with room
/// for a clock that moved back).
const MAX_STORED_SPHINX_KEYS: usize = 8;

/// Key file errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file holds something else than keys.
    #[error("{}: not a valid {what} file", path.display())]
    Corrupt {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// Signing the descriptor failed.
    #[error("descriptor: {0}")]
    Descriptor(postern_core::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename,
/// fsync of the directory), with `mode`.
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The relay's descriptor key from `data_dir`, created (mode 0600) if
/// missing.
pub fn load_or_create_descriptor_key(data_dir: &Path) -> Result<DescriptorSecret, KeyError> {
    let path = data_dir.join(DESCRIPTOR_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            DescriptorSecret::from_bytes(&bytes).map_err(|_| KeyError::Corrupt {
                what: "descriptor key",
                path,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = DescriptorSecret::generate(&mut rand::rng());
            write_file_atomic(&path, &key.to_bytes(), 0o600)?;
            Ok(key)
        }
        Err(e) => Err(io(&path)(e)),
    }
}

/// The Sphinx key epoch rule: `(now - zero) / secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epochs {
    /// Epoch length in seconds.
    pub secs: u64,
    /// Start of epoch 0.
    pub zero: UnixTime,
}

impl Epochs {
    /// The epoch at `now`.
    pub fn at(&self, now: UnixTime) -> u32 {
        epoch_at(self.secs, self.zero, now)
    }

    /// When `epoch` starts.
    pub fn start(&self, epoch: u32) -> UnixTime {
        epoch_start(self.secs, self.zero, epoch)
    }

    /// Whether `epoch`'s key may process packets at `now`: the current
    /// and the next epoch, and the previous one until
    /// [`EPOCH_OVERLAP_SECS`] after it ended.
    pub fn usable(&self, epoch: u32, now: UnixTime) -> bool {
        let current = self.at(now);
        if epoch == current || Some(epoch) == current.checked_add(1) {
            return true;
        }
        Some(epoch) == current.checked_sub(1)
            && now < self.start(current).plus_millis(EPOCH_OVERLAP_SECS * 1000)
    }
}

/// The relay's Sphinx epoch secrets. Cheap to share behind an `Arc`.
pub struct SphinxKeys {
    path: PathBuf,
    epochs: Epochs,
    keys: Mutex<BTreeMap<u32, Zeroizing<[u8; 32]>>>,
}

impl core::fmt::Debug for SphinxKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SphinxKeys(<redacted>)")
    }
}

impl SphinxKeys {
    /// Loads the keys in `data_dir` (none if the file does not exist
    /// yet; call [`SphinxKeys::rotate`] next).
    pub fn open(data_dir: &Path, epochs: Epochs) -> Result<SphinxKeys, KeyError> {
        let path = data_dir.join(SPHINX_KEYS_FILE);
        let keys = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                parse_keys(&text).ok_or_else(|| KeyError::Corrupt {
                    what: "sphinx keys",
                    path: path.clone(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(SphinxKeys {
            path,
            epochs,
            keys: Mutex::new(keys),
        })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Zeroizing<[u8; 32]>>> {
        // A panic while holding the lock cannot leave the map invalid.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The epoch rule these keys follow.
    pub fn epochs(&self) -> Epochs {
        self.epochs
    }

    /// Makes sure keys for the current and the next epoch exist and
    /// deletes keys that are no longer usable (see [`Epochs::usable`]);
    /// writes the file when anything changed. Returns whether it did.
    pub fn rotate(&self, now: UnixTime) -> Result<bool, KeyError> {
        let current = self.epochs.at(now);
        let mut keys = self.keys();
        let mut next = keys.clone();
        next.retain(|e, _| *e >= current.saturating_sub(1) && self.epochs.usable(*e, now));
        // Keys for epochs far ahead (a clock that moved back) stay only
        // while the file has room.
        for e in [Some(current), current.checked_add(1)]
            .into_iter()
            .flatten()
        {
            next.entry(e)
                .or_insert_with(|| NodeSecret::generate(&mut rand::rng()).to_bytes());
        }
        while next.len() > MAX_STORED_SPHINX_KEYS {
            next.pop_last();
        }
        let changed = next.len() != keys.len() || next.keys().ne(keys.keys());
        if changed {
            write_file_atomic(&self.path, render_keys(&next).as_bytes(), 0o600)?;
            *keys = next;
        }
        Ok(changed)
    }

    /// The secret for `epoch`, if this relay holds it and it is usable at
    /// `now` (previous within the overlap, current, next).
    pub fn secret(&self, epoch: u32, now: UnixTime) -> Option<Zeroizing<[u8; 32]>> {
        if !self.epochs.usable(epoch, now) {
            return None;
        }
        self.keys().get(&epoch).cloned()
    }

    /// `(epoch, X25519 public key)` for every usable key at `now`, oldest
    /// first (at most previous, current, next): what the descriptor
    /// announces.
    pub fn public_keys(&self, now: UnixTime) -> Vec<(u32, [u8; 32])> {
        self.keys()
            .iter()
            .filter(|(e, _)| self.epochs.usable(**e, now))
            .map(|(e, s)| (*e, NodeSecret::from_bytes(s).public()))
            .collect()
    }
}

fn render_keys(keys: &BTreeMap<u32, Zeroizing<[u8; 32]>>) -> Zeroizing<String> {
    let mut s = Zeroizing::new(format!("{SPHINX_KEYS_HEADER}\n"));
    for (e, k) in keys {
        let encoded = Zeroizing::new(data_encoding::BASE64URL_NOPAD.encode(&k[..]));
        s.push_str(&e.to_string());
        s.push(' ');
        s.push_str(&encoded);
        s.push('\n');
    }
    s
}

fn parse_keys(text: &str) -> Option<BTreeMap<u32, Zeroizing<[u8; 32]>>> {
    let mut lines = text.lines();
    if lines.next()? != SPHINX_KEYS_HEADER {
        return None;
    }
    let mut keys = BTreeMap::new();
    for line in lines {
        let (e, k) = line.split_once(' ')?;
        let epoch: u32 = e.parse().ok()?;
        let bytes = Zeroizing::new(data_encoding::BASE64URL_NOPAD.decode(k.as_bytes()).ok()?);
        let key: [u8; 32] = bytes.as_slice().try_into().ok()?;
        if keys.insert(epoch, Zeroizing::new(key)).is_some() || keys.len() > MAX_STORED_SPHINX_KEYS
        {
            return None;
        }
    }
    Some(keys)
}

/// Signs this relay's descriptor for `now` (its Sphinx keys rotated
/// first) and writes it to `DATA_DIR/descriptor`. Returns its bytes.
pub fn write_descriptor(
    data_dir: &Path,
    key: &DescriptorSecret,
    keys: &SphinxKeys,
    address: &RelayAddress,
    roles: u32,
    webtransport: Option<&directory::WebTransportInfo>,
    now: UnixTime,
) -> Result<Vec<u8>, KeyError> {
    keys.rotate(now)?;
    let d = directory::sign_descriptor_with(
        key,
        address,
        roles,
        &keys.public_keys(now),
        webtransport,
        now,
        &mut rand::rng(),
    )
    .map_err(KeyError::Descriptor)?;
    write_file_atomic(&data_dir.join(DESCRIPTOR_FILE), &d, 0o644)?;
    Ok(d)
}

/// Writes the descriptor of the relay these settings describe, at
/// `address`, as of now: its descriptor key and Sphinx keys (made if
/// missing) and, when browsers are served, its WebTransport certificates
/// (made or rotated as needed). For `descriptor` and `testnet`, with the
/// relay not running.
pub fn write_descriptor_now(
    s: &crate::config::Settings,
    address: &RelayAddress,
) -> Result<Vec<u8>, KeyError> {
    let key = load_or_create_descriptor_key(&s.data_dir)?;
    let epochs = Epochs {
        secs: s.epoch_secs,
        zero: s.epoch_zero,
    };
    let sphinx = SphinxKeys::open(&s.data_dir, epochs)?;
    let now = now();
    let wt = crate::webtransport::descriptor_info(s, now)?;
    write_descriptor(
        &s.data_dir,
        &key,
        &sphinx,
        address,
        s.roles,
        wt.as_ref(),
        now,
    )
}

/// The current time (the relay's clock; the core never reads one).
pub fn now() -> UnixTime {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    UnixTime(ms)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const DAY: Epochs = Epochs {
        secs: 86_400,
        zero: UnixTime(0),
    };

    fn at(epoch: u32, secs_in: u64) -> UnixTime {
        DAY.start(epoch).plus_millis(secs_in * 1000)
    }

    #[test]
    fn keys_rotate_persist_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let k = SphinxKeys::open(dir.path(), DAY).unwrap();
        assert!(k.secret(10, at(10, 5)).is_none());
        assert!(k.rotate(at(10, 5)).unwrap());
        assert!(!k.rotate(at(10, 6)).unwrap());
        let s10 = k.secret(10, at(10, 5)).unwrap();
        let s11 = k.secret(11, at(10, 5)).unwrap();
        assert_ne!(*s10, *s11);
        assert!(k.secret(12, at(10, 5)).is_none(), "two epochs ahead");
        assert_eq!(
            k.public_keys(at(10, 5))
                .iter()
                .map(|(e, _)| *e)
                .collect::<Vec<_>>(),
            vec![10, 11]
        );
        // File mode and reload.
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(dir.path().join(SPHINX_KEYS_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let again = SphinxKeys::open(dir.path(), DAY).unwrap();
        assert_eq!(*again.secret(10, at(10, 5)).unwrap(), *s10);
        // Next epoch: 10 stays usable during the overlap only.
        assert!(k.rotate(at(11, 1)).unwrap());
        assert_eq!(*k.secret(10, at(11, 1)).unwrap(), *s10);
        assert_eq!(*k.secret(11, at(11, 1)).unwrap(), *s11);
        assert!(k.secret(12, at(11, 1)).is_some());
        let after = at(11, EPOCH_OVERLAP_SECS);
        assert!(k.secret(10, after).is_none());
        assert!(k.rotate(after).unwrap());
        let again = SphinxKeys::open(dir.path(), DAY).unwrap();
        assert!(again.keys().get(&10).is_none(), "pruned from disk");
        assert_eq!(again.keys().len(), 2);
        // Debug shows no key material.
        let dbg = format!("{k:?}");
        assert_eq!(dbg, "SphinxKeys(<redacted>)");
    }

    #[test]
    fn corrupt_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SPHINX_KEYS_FILE);
        for bad in [
            "",
            "postern-sphinx-keys v2\n",
            "postern-sphinx-keys v1\n1 AAAA\n",
            "postern-sphinx-keys v1\nx AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(matches!(
                SphinxKeys::open(dir.path(), DAY),
                Err(KeyError::Corrupt { .. })
            ));
        }
        std::fs::write(dir.path().join(DESCRIPTOR_KEY_FILE), b"short").unwrap();
        assert!(load_or_create_descriptor_key(dir.path()).is_err());
    }

    #[test]
    fn descriptor_key_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_descriptor_key(dir.path()).unwrap();
        let b = load_or_create_descriptor_key(dir.path()).unwrap();
        assert_eq!(a.public().unwrap(), b.public().unwrap());
        let meta = std::fs::metadata(dir.path().join(DESCRIPTOR_KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
