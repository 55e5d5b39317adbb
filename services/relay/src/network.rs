//! A directory authority's files (`postern-relay network ...`): the
//! authority key, the network's parameters, the relays' descriptors, and
//! the signed directories made from them.
//!
//! ```text
//! NET/authority-key     32-byte secret key (mode 0600)
//! NET/network.toml      name, epoch_secs, epoch_zero_ms
//! NET/descriptors/HEX   one signed descriptor per relay id
//! ```

use std::path::{Path, PathBuf};

use postern_core::UnixTime;
use postern_core::crypto::signal::{AuthorityPublic, AuthoritySecret};
use postern_core::directory::{self, RelayInfo};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::keys::write_file_atomic;

/// The authority key file.
pub const AUTHORITY_KEY_FILE: &str = "authority-key";
/// The network parameters file.
pub const NETWORK_FILE: &str = "network.toml";
/// The descriptors directory.
pub const DESCRIPTORS_DIR: &str = "descriptors";
/// Default directory validity.
pub const DEFAULT_VALID_DAYS: u64 = 7;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{}: {what}", path.display())]
    Invalid {
        /// Which problem.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The network directory already has an authority key.
    #[error("{}: already initialised", .0.display())]
    Exists(PathBuf),
    /// A descriptor or directory was refused.
    #[error("{0}")]
    Directory(postern_core::Error),
    /// Writing a key file failed.
    #[error("{0}")]
    Key(#[from] crate::keys::KeyError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The network's parameters (`network.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkParams {
    /// The network's name.
    pub name: String,
    /// Sphinx key epoch length (seconds).
    pub epoch_secs: u64,
    /// Start of epoch 0 (milliseconds since the Unix epoch).
    pub epoch_zero_ms: u64,
}

fn create_dir(dir: &Path) -> Result<(), NetworkError> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Creates a network directory: an authority key and the parameters.
/// Returns the authority's public key.
pub fn init(dir: &Path, params: &NetworkParams) -> Result<AuthorityPublic, NetworkError> {
    let key_path = dir.join(AUTHORITY_KEY_FILE);
    if key_path.exists() {
        return Err(NetworkError::Exists(dir.to_owned()));
    }
    let name_ok = (1..=postern_core::consts::MAX_NETWORK_NAME_BYTES).contains(&params.name.len())
        && params
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        return Err(NetworkError::Invalid {
            what: "network name: 1..=64 of a-z A-Z 0-9 - _ .",
            path: dir.join(NETWORK_FILE),
        });
    }
    use postern_core::consts::{MAX_EPOCH_SECS, MIN_EPOCH_SECS};
    if !(MIN_EPOCH_SECS..=MAX_EPOCH_SECS).contains(&params.epoch_secs) {
        return Err(NetworkError::Invalid {
            what: "epoch_secs must be 60..=2592000",
            path: dir.join(NETWORK_FILE),
        });
    }
    create_dir(dir)?;
    create_dir(&dir.join(DESCRIPTORS_DIR))?;
    let toml = format!(
        "name = \"{}\"\nepoch_secs = {}\nepoch_zero_ms = {}\n",
        params.name, params.epoch_secs, params.epoch_zero_ms
    );
    write_file_atomic(&dir.join(NETWORK_FILE), toml.as_bytes(), 0o644)?;
    let key = AuthoritySecret::generate(&mut rand::rng());
    write_file_atomic(&key_path, &key.to_bytes(), 0o600)?;
    key.public().map_err(NetworkError::Directory)
}

/// Reads the network's parameters.
pub fn params(dir: &Path) -> Result<NetworkParams, NetworkError> {
    let path = dir.join(NETWORK_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    toml::from_str(&text).map_err(|_| NetworkError::Invalid {
        what: "not a network parameters file",
        path,
    })
}

/// Reads an authority key file.
pub fn authority_key(path: &Path) -> Result<AuthoritySecret, NetworkError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
    AuthoritySecret::from_bytes(&bytes).map_err(|_| NetworkError::Invalid {
        what: "not an authority key",
        path: path.to_owned(),
    })
}

/// An authority public key as configured (`authority_keys`): unpadded
/// base64url of its 33 bytes.
pub fn encode_public(key: &AuthorityPublic) -> String {
    data_encoding::BASE64URL_NOPAD.encode(&key.to_bytes())
}

/// Verifies a relay's signed descriptor and stores it (replacing an
/// earlier one of the same relay).
pub fn add(dir: &Path, descriptor: &[u8]) -> Result<RelayInfo, NetworkError> {
    let info = directory::verify_descriptor(descriptor).map_err(NetworkError::Directory)?;
    let descriptors = dir.join(DESCRIPTORS_DIR);
    create_dir(&descriptors)?;
    let path = descriptors.join(data_encoding::HEXLOWER.encode(&info.id));
    write_file_atomic(&path, descriptor, 0o644)?;
    Ok(info)
}

/// Every stored descriptor.
pub fn descriptors(dir: &Path) -> Result<Vec<Vec<u8>>, NetworkError> {
    let d = dir.join(DESCRIPTORS_DIR);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&d)
        .map_err(io(&d))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_none())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read(p).map_err(io(p)))
        .collect()
}

/// Signs a directory over every stored descriptor, valid from `now` for
/// `valid_days`, and writes it to `out`. Returns its bytes.
pub fn publish(
    dir: &Path,
    valid_days: u64,
    out: &Path,
    now: UnixTime,
) -> Result<Vec<u8>, NetworkError> {
    let p = params(dir)?;
    let key = authority_key(&dir.join(AUTHORITY_KEY_FILE))?;
    let signed = directory::sign_directory(
        &p.name,
        &descriptors(dir)?,
        now,
        now.plus_millis(valid_days.saturating_mul(86_400_000)),
        p.epoch_secs,
        UnixTime(p.epoch_zero_ms),
        &key,
        &mut rand::rng(),
    )
    .map_err(NetworkError::Directory)?;
    write_file_atomic(out, &signed, 0o644)?;
    Ok(signed)
}

/// Adds the signature of the authority whose key is at `key_path` to the
/// directory at `input`, writing the result to `out`.
pub fn sign(key_path: &Path, input: &Path, out: &Path) -> Result<Vec<u8>, NetworkError> {
    let key = authority_key(key_path)?;
    let bytes = std::fs::read(input).map_err(io(input))?;
    let signed = directory::add_signature(&bytes, &key, &mut rand::rng())
        .map_err(NetworkError::Directory)?;
    write_file_atomic(out, &signed, 0o644)?;
    Ok(signed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use postern_core::RelayAddress;
    use postern_core::directory::{Directory, ROLES_ALL};

    #[test]
    fn init_add_publish_sign() {
        let t = tempfile::tempdir().unwrap();
        let net = t.path().join("net");
        let params = NetworkParams {
            name: "test".into(),
            epoch_secs: 3600,
            epoch_zero_ms: 0,
        };
        let public = init(&net, &params).unwrap();
        assert!(matches!(init(&net, &params), Err(NetworkError::Exists(_))));
        let now = crate::keys::now();
        let mut rng = rand::rng();
        for port in [1000u16, 1001] {
            let k = AuthoritySecret::generate(&mut rng);
            let a = RelayAddress::new("127.0.0.1", port, None).unwrap();
            let d = directory::sign_descriptor(&k, &a, ROLES_ALL, &[(1, [9; 32])], now, &mut rng)
                .unwrap();
            add(&net, &d).unwrap();
            add(&net, &d).unwrap();
        }
        assert!(add(&net, b"junk").is_err());
        let out = t.path().join("directory");
        let d = publish(&net, 1, &out, now).unwrap();
        let dir = Directory::verify(&d, std::slice::from_ref(&public), 1, now).unwrap();
        assert_eq!((dir.relays.len(), dir.epoch_secs), (2, 3600));
        // A second authority.
        let other = t.path().join("other");
        let second = init(&other, &params).unwrap();
        let both = sign(&other.join(AUTHORITY_KEY_FILE), &out, &out).unwrap();
        assert!(Directory::verify(&both, &[public, second], 2, now).is_ok());
        assert_eq!(encode_public(&dir_key(&net)).len(), 44);
    }

    fn dir_key(net: &Path) -> AuthorityPublic {
        authority_key(&net.join(AUTHORITY_KEY_FILE))
            .unwrap()
            .public()
            .unwrap()
    }
}
