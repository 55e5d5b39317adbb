//! The Argon2id facade: the only module that imports `argon2`. Derives
//! 256-bit keys from passphrases (the local store's key when no OS
//! keychain is available; encrypted exports), and computes key-check
//! values.

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Argon2id cost parameters, stored beside what they protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// Postern's default: 64 MiB, 3 passes, 1 lane (OWASP's second
    /// recommended Argon2id configuration is 19 MiB/2; this is stronger).
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };

    /// Cheap parameters for tests only.
    pub const TEST_ONLY: KdfParams = KdfParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };

    /// Parameters read from disk are hostile: refuse absurd ones (which
    /// would exhaust memory or time) and ones weaker than Argon2's minimum.
    pub fn checked(self) -> Result<KdfParams> {
        let ok = (8..=MAX_MEMORY_KIB).contains(&self.memory_kib)
            && (1..=MAX_ITERATIONS).contains(&self.iterations)
            && (1..=MAX_PARALLELISM).contains(&self.parallelism)
            && self.memory_kib >= 8 * self.parallelism;
        if ok {
            Ok(self)
        } else {
            Err(Error::Malformed {
                what: "key derivation parameters",
            })
        }
    }
}

/// Most memory a stored parameter set may ask for (1 GiB).
pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// Most passes a stored parameter set may ask for.
pub const MAX_ITERATIONS: u32 = 16;
/// Most lanes a stored parameter set may ask for.
pub const MAX_PARALLELISM: u32 = 8;
/// Salt length.
pub const SALT_BYTES: usize = 16;

/// Derives a 256-bit key from `passphrase` with Argon2id.
pub fn derive_key(
    passphrase: &[u8],
    salt: &[u8; SALT_BYTES],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>> {
    let p = params.checked()?;
    let params =
        argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32)).map_err(|_| {
            Error::Malformed {
                what: "key derivation parameters",
            }
        })?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|_| Error::Bug("argon2 refused checked parameters"))?;
    Ok(out)
}

/// A value that tells whether a key is the right one without revealing
/// it: SHA-256("postern/key-check/v1" || key). Stored beside an encrypted
/// database so that a wrong key and a corrupted file can be told apart.
pub fn key_check_value(key: &[u8; 32]) -> [u8; 32] {
    super::hash::sha256(&[b"postern/key-check/v1", key])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_hostile_parameters() {
        for p in [
            KdfParams {
                memory_kib: u32::MAX,
                iterations: 1,
                parallelism: 1,
            },
            KdfParams {
                memory_kib: 64,
                iterations: 0,
                parallelism: 1,
            },
            KdfParams {
                memory_kib: 64,
                iterations: 1000,
                parallelism: 1,
            },
            KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 0,
            },
            KdfParams {
                memory_kib: 4,
                iterations: 1,
                parallelism: 1,
            },
        ] {
            assert!(derive_key(b"pw", &[0; 16], p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn is_deterministic_and_salted() {
        let a = derive_key(b"pw", &[1; 16], KdfParams::TEST_ONLY).unwrap();
        let b = derive_key(b"pw", &[1; 16], KdfParams::TEST_ONLY).unwrap();
        let c = derive_key(b"pw", &[2; 16], KdfParams::TEST_ONLY).unwrap();
        let d = derive_key(b"pW", &[1; 16], KdfParams::TEST_ONLY).unwrap();
        assert_eq!(*a, *b);
        assert_ne!(*a, *c);
        assert_ne!(*a, *d);
    }
}
