//! The profile header: a small JSON file beside the database saying how
//! its key is protected. It holds no secret: the keychain account name or
//! the Argon2id salt and parameters, and a key-check value that tells a
//! wrong key from a damaged database.

use std::io::Write;
use std::path::Path;

use postern_core::crypto::kdf::{self, KdfParams};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{HEADER_FILE, ProfileError, Unlock, keychain_entry};

/// Format version of the header.
const HEADER_FORMAT: u32 = 1;
/// Largest header file accepted.
const MAX_HEADER_BYTES: u64 = 4096;

/// Where the database key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// A random key sealed by the OS keychain.
    Keychain,
    /// A key derived from the user's passphrase with Argon2id.
    Passphrase,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    format: u32,
    profile_id: String,
    key_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfHeader>,
    key_check: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfHeader {
    algorithm: String,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Header {
    pub(crate) fn new_keychain(profile_id: String, key: &[u8; 32]) -> Header {
        Header {
            format: HEADER_FORMAT,
            profile_id,
            key_source: "keychain".into(),
            kdf: None,
            key_check: hex(&kdf::key_check_value(key)),
        }
    }

    pub(crate) fn new_passphrase(
        profile_id: String,
        p: KdfParams,
        salt: [u8; kdf::SALT_BYTES],
        key: &[u8; 32],
    ) -> Header {
        Header {
            format: HEADER_FORMAT,
            profile_id,
            key_source: "passphrase".into(),
            kdf: Some(KdfHeader {
                algorithm: "argon2id-v19".into(),
                memory_kib: p.memory_kib,
                iterations: p.iterations,
                parallelism: p.parallelism,
                salt: hex(&salt),
            }),
            key_check: hex(&kdf::key_check_value(key)),
        }
    }

    pub(crate) fn profile_id(&self) -> &str {
        &self.profile_id
    }

    pub(crate) fn source(&self) -> KeySource {
        if self.key_source == "keychain" {
            KeySource::Keychain
        } else {
            KeySource::Passphrase
        }
    }

    /// Reads and validates the header (hostile input: bounded, strict).
    pub(crate) fn read(dir: &Path) -> Result<Header, ProfileError> {
        let path = dir.join(HEADER_FILE);
        let len = std::fs::metadata(&path).map_err(ProfileError::Io)?.len();
        if len > MAX_HEADER_BYTES {
            return Err(ProfileError::BadHeader("too large"));
        }
        let bytes = std::fs::read(&path).map_err(ProfileError::Io)?;
        Header::parse(&bytes)
    }

    /// Validates a header file's contents (hostile input: bounded, strict).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Header, ProfileError> {
        if bytes.len() as u64 > MAX_HEADER_BYTES {
            return Err(ProfileError::BadHeader("too large"));
        }
        let h: Header = serde_json::from_slice(bytes)
            .map_err(|_| ProfileError::BadHeader("not a profile header"))?;
        if h.format != HEADER_FORMAT {
            return Err(ProfileError::BadHeader("unsupported format version"));
        }
        if unhex::<16>(&h.profile_id).is_none() || unhex::<32>(&h.key_check).is_none() {
            return Err(ProfileError::BadHeader("malformed field"));
        }
        match (h.key_source.as_str(), &h.kdf) {
            ("keychain", None) => {}
            ("passphrase", Some(k)) => {
                if k.algorithm != "argon2id-v19" || unhex::<{ kdf::SALT_BYTES }>(&k.salt).is_none()
                {
                    return Err(ProfileError::BadHeader("unsupported key derivation"));
                }
                KdfParams {
                    memory_kib: k.memory_kib,
                    iterations: k.iterations,
                    parallelism: k.parallelism,
                }
                .checked()
                .map_err(|_| ProfileError::BadHeader("key derivation parameters out of range"))?;
            }
            _ => return Err(ProfileError::BadHeader("inconsistent key source")),
        }
        Ok(h)
    }

    /// Writes the header atomically: a temporary file, fsync, rename,
    /// fsync of the directory.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), ProfileError> {
        let json =
            serde_json::to_vec_pretty(self).map_err(|_| ProfileError::BadHeader("encoding"))?;
        let tmp = dir.join(format!("{HEADER_FILE}.tmp"));
        // A leftover from an interrupted write may have another mode.
        let _ = std::fs::remove_file(&tmp);
        let mut f = crate::private_file()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(ProfileError::Io)?;
        f.write_all(&json).map_err(ProfileError::Io)?;
        f.sync_all().map_err(ProfileError::Io)?;
        drop(f);
        std::fs::rename(&tmp, dir.join(HEADER_FILE)).map_err(ProfileError::Io)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Obtains the database key and checks it against the key-check value.
    pub(crate) fn key(&self, unlock: Unlock<'_>) -> Result<Zeroizing<[u8; 32]>, ProfileError> {
        let key = match (self.source(), unlock) {
            (KeySource::Keychain, Unlock::Keychain) => {
                let secret = Zeroizing::new(
                    keychain_entry(&self.profile_id)?
                        .get_secret()
                        .map_err(ProfileError::Keychain)?,
                );
                let arr: [u8; 32] = secret
                    .as_slice()
                    .try_into()
                    .map_err(|_| ProfileError::WrongKey)?;
                Zeroizing::new(arr)
            }
            (KeySource::Passphrase, Unlock::Passphrase(pw)) => {
                let k = self
                    .kdf
                    .as_ref()
                    .ok_or(ProfileError::BadHeader("missing kdf"))?;
                let salt =
                    unhex::<{ kdf::SALT_BYTES }>(&k.salt).ok_or(ProfileError::BadHeader("salt"))?;
                let params = KdfParams {
                    memory_kib: k.memory_kib,
                    iterations: k.iterations,
                    parallelism: k.parallelism,
                };
                kdf::derive_key(pw, &salt, params)?
            }
            (KeySource::Keychain, Unlock::Passphrase(_)) => {
                return Err(ProfileError::WrongUnlockMethod {
                    expected: "keychain",
                });
            }
            (KeySource::Passphrase, Unlock::Keychain) => {
                return Err(ProfileError::WrongUnlockMethod {
                    expected: "passphrase",
                });
            }
        };
        let expected = unhex::<32>(&self.key_check).ok_or(ProfileError::BadHeader("key check"))?;
        if kdf::key_check_value(&key) != expected {
            return Err(ProfileError::WrongKey);
        }
        Ok(key)
    }
}
