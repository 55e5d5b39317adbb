#![doc = include_str!("../README.md")]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod header;
mod sql;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use postern_core::crypto::kdf::{self, KdfParams};
use rand::RngCore;
use rusqlite::{Connection, OpenFlags};
use zeroize::Zeroizing;

use header::Header;
pub use header::KeySource;

/// File names inside a profile directory.
pub const DB_FILE: &str = "profile.db";
/// The header beside the database (key source, KDF parameters, key check).
pub const HEADER_FILE: &str = "profile.header";
/// The lock held while a process has the profile open.
pub const LOCK_FILE: &str = "profile.lock";
/// Keychain service name; the account is `profile-<id>`.
pub const KEYCHAIN_SERVICE: &str = "postern";

/// How to unlock a profile.
pub enum Unlock<'a> {
    /// The key is in the OS keychain.
    Keychain,
    /// Derive the key from this passphrase.
    Passphrase(&'a [u8]),
}

impl core::fmt::Debug for Unlock<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Unlock::Keychain => f.write_str("Unlock::Keychain"),
            Unlock::Passphrase(_) => f.write_str("Unlock::Passphrase(<redacted>)"),
        }
    }
}

/// Errors opening or using a profile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Another process has the profile open.
    #[error("profile in use by another process")]
    InUse,
    /// The passphrase or keychain key does not open the database.
    #[error("wrong passphrase or key")]
    WrongKey,
    /// The database is damaged or truncated. It is left untouched.
    #[error("profile database is corrupt or truncated; it was not modified")]
    Corrupt,
    /// There is no profile in the directory.
    #[error("no profile found in that directory")]
    NotFound,
    /// A profile already exists in the directory.
    #[error("a profile already exists in that directory")]
    AlreadyExists,
    /// The header beside the database is unreadable or inconsistent.
    #[error("profile header is invalid: {0}")]
    BadHeader(&'static str),
    /// The profile is protected by a different key source than requested.
    #[error("this profile is unlocked with its {expected}, not with what was given")]
    WrongUnlockMethod {
        /// What the header says.
        expected: &'static str,
    },
    /// The OS keychain is unavailable or does not hold the key.
    #[error("keychain: {0}")]
    Keychain(#[source] keyring_core::Error),
    /// The database was written by a newer Postern.
    #[error("profile schema {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// Version found.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// SQLite/SQLCipher failed.
    #[error("database error")]
    Sqlite(#[source] rusqlite::Error),
    /// A file operation failed.
    #[error("file error")]
    Io(#[source] std::io::Error),
    /// The core refused something.
    #[error(transparent)]
    Core(#[from] postern_core::Error),
}

impl postern_core::error::HasKind for ProfileError {
    fn kind(&self) -> postern_core::ErrorKind {
        use postern_core::ErrorKind;
        match self {
            ProfileError::InUse
            | ProfileError::WrongKey
            | ProfileError::NotFound
            | ProfileError::AlreadyExists
            | ProfileError::WrongUnlockMethod { .. } => ErrorKind::Usage,
            ProfileError::Core(e) => e.kind(),
            _ => ErrorKind::Storage,
        }
    }
}

/// An open, unlocked profile: a SQLCipher database holding every record,
/// message and outbox entry of one identity. Implements the core's
/// [`postern_core::KvStore`].
pub struct Profile {
    dir: PathBuf,
    conn: Connection,
    header: Header,
    // Held for as long as the profile is open; the OS releases it if the
    // process dies.
    _lock: File,
}

impl core::fmt::Debug for Profile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Profile({})", self.dir.display())
    }
}

/// Options that create a file readable and writable by its owner only
/// (0600 on Unix), like the relay's key files.
pub(crate) fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o
}

/// Creates `dir` (and missing parents) and makes it private to its owner
/// (0700 on Unix), even when it existed already.
pub(crate) fn private_dir(dir: &Path) -> Result<(), ProfileError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        b.mode(0o700);
        b.create(dir).map_err(ProfileError::Io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(ProfileError::Io)?;
    }
    #[cfg(not(unix))]
    b.create(dir).map_err(ProfileError::Io)?;
    Ok(())
}

fn lock(dir: &Path) -> Result<File, ProfileError> {
    let f = private_file()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(ProfileError::Io)?;
    // A lock released a moment ago can still be held by a just-forked
    // child of this process until it execs, so retry briefly before
    // reporting that another process has the profile.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(ProfileError::InUse),
            Err(std::fs::TryLockError::Error(e)) => return Err(ProfileError::Io(e)),
        }
    }
}

/// How long opening waits for a profile lock that is held.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

/// Makes the platform's keychain the store that `Unlock::Keychain` uses:
/// the Secret Service (GNOME Keyring, KWallet) on Linux. Shells call this
/// once at startup; without it, keychain operations fail with a typed
/// error and a passphrase must be used.
pub fn use_platform_keychain() -> Result<(), ProfileError> {
    #[cfg(target_os = "linux")]
    {
        let store =
            zbus_secret_service_keyring_store::Store::new().map_err(ProfileError::Keychain)?;
        keyring_core::set_default_store(store);
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(ProfileError::Keychain(
            keyring_core::Error::NotSupportedByStore(
                "no platform keychain support on this OS yet".into(),
            ),
        ))
    }
}

fn keychain_entry(profile_id: &str) -> Result<keyring_core::Entry, ProfileError> {
    keyring_core::Entry::new(KEYCHAIN_SERVICE, &format!("profile-{profile_id}"))
        .map_err(ProfileError::Keychain)
}

/// A new database key and the header that says how it is protected: a
/// random key sealed by the keychain, or a key derived from a passphrase
/// with a fresh salt.
fn new_key(
    unlock: Unlock<'_>,
    profile_id: String,
    params: KdfParams,
) -> Result<(Zeroizing<[u8; 32]>, Header), ProfileError> {
    match unlock {
        Unlock::Keychain => {
            let key = random_key();
            keychain_entry(&profile_id)?
                .set_secret(key.as_ref())
                .map_err(ProfileError::Keychain)?;
            let h = Header::new_keychain(profile_id, &key);
            Ok((key, h))
        }
        Unlock::Passphrase(pw) => {
            let mut salt = [0u8; kdf::SALT_BYTES];
            rand::rng().fill_bytes(&mut salt);
            let key = kdf::derive_key(pw, &salt, params)?;
            let h = Header::new_passphrase(profile_id, params, salt, &key);
            Ok((key, h))
        }
    }
}

fn random_key() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(k.as_mut());
    k
}

/// How the profile in `dir` is unlocked, read from its header without
/// opening it (the lock screen asks for a passphrase or not).
/// What a profile header file's contents say about its key, validated
/// exactly as when the profile is opened (for tools and fuzzing: the
/// header is read from disk, where anything may have changed it).
pub fn inspect_header(bytes: &[u8]) -> Result<KeySource, ProfileError> {
    header::Header::parse(bytes).map(|h| h.source())
}

pub fn key_source_of(dir: &Path) -> Result<KeySource, ProfileError> {
    Ok(header::Header::read(dir)?.source())
}

impl Profile {
    /// Creates a new, empty profile in `dir` (created if missing), keyed
    /// by a fresh random 256-bit key that is sealed by the OS keychain
    /// (`Unlock::Keychain`) or derived from a passphrase with Argon2id.
    pub fn create(
        dir: &Path,
        unlock: Unlock<'_>,
        params: KdfParams,
    ) -> Result<Profile, ProfileError> {
        Self::create_at(dir, unlock, params, sql::SCHEMA_VERSION)
    }

    fn create_at(
        dir: &Path,
        unlock: Unlock<'_>,
        params: KdfParams,
        schema: i64,
    ) -> Result<Profile, ProfileError> {
        private_dir(dir)?;
        let lock = lock(dir)?;
        if dir.join(DB_FILE).exists() || dir.join(HEADER_FILE).exists() {
            return Err(ProfileError::AlreadyExists);
        }
        // Created here, owner-only, before SQLite opens it: SQLite gives
        // its write-ahead log and shared-memory files the same mode.
        private_file()
            .create_new(true)
            .write(true)
            .open(dir.join(DB_FILE))
            .map_err(ProfileError::Io)?;
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let profile_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let (key, header) = new_key(unlock, profile_id, params)?;
        header.write(dir)?;
        let conn = Connection::open_with_flags(
            dir.join(DB_FILE),
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(ProfileError::Sqlite)?;
        sql::apply_key(&conn, &key)?;
        sql::configure_and_migrate(&conn, schema)?;
        Ok(Profile {
            dir: dir.to_path_buf(),
            conn,
            header,
            _lock: lock,
        })
    }

    /// Opens and unlocks the profile in `dir`. A wrong key or passphrase,
    /// or a damaged file, is reported without modifying anything.
    pub fn open(dir: &Path, unlock: Unlock<'_>) -> Result<Profile, ProfileError> {
        if !dir.join(HEADER_FILE).exists() {
            return Err(ProfileError::NotFound);
        }
        let lock = lock(dir)?;
        let header = Header::read(dir)?;
        let key = header.key(unlock)?;
        let db = dir.join(DB_FILE);
        let meta = std::fs::metadata(&db).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ProfileError::Corrupt,
            _ => ProfileError::Io(e),
        })?;
        if meta.len() == 0 {
            return Err(ProfileError::Corrupt);
        }
        let conn = Connection::open_with_flags(
            &db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(ProfileError::Sqlite)?;
        sql::apply_key(&conn, &key)?;
        // Nothing has been written yet; the first read tells a damaged
        // file before any pragma that could write.
        // With a write-ahead log left by an unclean exit, the main file's
        // length does not reflect the page count yet: skip that check.
        let wal = dir.join(format!("{DB_FILE}-wal"));
        let clean = std::fs::metadata(&wal)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        sql::verify_readable(&conn, clean.then_some(meta.len()))?;
        sql::configure_and_migrate(&conn, sql::SCHEMA_VERSION)?;
        Ok(Profile {
            dir: dir.to_path_buf(),
            conn,
            header,
            _lock: lock,
        })
    }

    /// Reads and authenticates every page of the database (SQLCipher's
    /// per-page HMAC, then SQLite's structural check). Open only checks the
    /// first page and the file length; run this before a backup or when
    /// the user asks, so that damage anywhere is reported.
    pub fn verify(&self) -> Result<(), ProfileError> {
        sql::verify_all(&self.conn)
    }

    /// Whether `passphrase` is the one protecting this profile (asked
    /// before it is changed). A keychain profile has none: `WrongUnlockMethod`.
    pub fn check_passphrase(&self, passphrase: &[u8]) -> Result<(), ProfileError> {
        self.header.key(Unlock::Passphrase(passphrase)).map(|_| ())
    }

    /// How this profile's key is protected.
    pub fn key_source(&self) -> KeySource {
        self.header.source()
    }

    /// Re-protects the database: a new random key sealed by the keychain,
    /// or a new key derived from a new passphrase. The database is
    /// re-encrypted (`PRAGMA rekey`) before the new header replaces the
    /// old one.
    pub fn change_protection(
        &mut self,
        unlock: Unlock<'_>,
        params: KdfParams,
    ) -> Result<(), ProfileError> {
        let id = self.header.profile_id().to_string();
        let old_source = self.header.source();
        let (key, header) = new_key(unlock, id.clone(), params)?;
        sql::rekey(&self.conn, &key)?;
        header.write(&self.dir)?;
        if old_source == KeySource::Keychain && header.source() == KeySource::Passphrase {
            // The keychain no longer needs to hold a key for this profile.
            let _ = keychain_entry(&id)
                .and_then(|e| e.delete_credential().map_err(ProfileError::Keychain));
        }
        self.header = header;
        Ok(())
    }

    /// The directory the profile lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlock_debug_redacts_passphrase() {
        let s = format!("{:?}", Unlock::Passphrase(b"hunter2"));
        assert!(!s.contains("hunter2"));
    }
}

/// Hooks for Postern's own tests (schema migration and version checks).
/// Not part of the API.
#[doc(hidden)]
pub mod testing {
    use std::path::Path;

    use postern_core::crypto::kdf::KdfParams;

    use crate::{Profile, Unlock};

    /// The schema version this build writes.
    pub const SCHEMA_VERSION: i64 = crate::sql::SCHEMA_VERSION;

    /// Reads `PRAGMA user_version`.
    pub fn user_version(p: &Profile) -> i64 {
        p.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap_or(-1)
    }

    /// Sets `PRAGMA user_version` (to simulate a newer writer).
    pub fn set_user_version(p: &Profile, v: i64) {
        let _ = p.conn.execute_batch(&format!("PRAGMA user_version = {v};"));
    }

    /// Opens (creating if needed) an UNENCRYPTED database with the same
    /// schema, for the benchmark's SQLCipher-vs-SQLite comparison only.
    /// Exists only with the `bench-plaintext` feature, which no shell
    /// enables.
    #[cfg(feature = "bench-plaintext")]
    pub fn open_plaintext_for_benchmark(dir: &Path) -> Result<Profile, crate::ProfileError> {
        crate::private_dir(dir)?;
        let lock = crate::lock(dir)?;
        let conn = rusqlite::Connection::open(dir.join(crate::DB_FILE))
            .map_err(crate::ProfileError::Sqlite)?;
        crate::sql::configure_and_migrate(&conn, crate::sql::SCHEMA_VERSION)?;
        Ok(Profile {
            dir: dir.to_path_buf(),
            conn,
            header: crate::header::Header::new_keychain(String::new(), &[0u8; 32]),
            _lock: lock,
        })
    }

    /// Adds an incoming message the way schemas 1 and 2 stored it (no
    /// unread count), to a profile made by [`create_at_version`].
    pub fn add_message_as_schema_1(
        p: &Profile,
        peer: &[u8; 16],
        id: &[u8; 16],
        ts: i64,
        body: &[u8],
    ) -> Result<(), crate::ProfileError> {
        p.conn
            .execute(
                "INSERT INTO messages (peer, id, incoming, ts, body) VALUES (?1, ?2, 1, ?3, ?4)",
                rusqlite::params![peer.as_slice(), id.as_slice(), ts, body],
            )
            .map_err(crate::ProfileError::Sqlite)?;
        p.conn
            .execute(
                "INSERT INTO conversations (peer, messages, last_seq) VALUES (?1, 1, ?2)",
                rusqlite::params![peer.as_slice(), p.conn.last_insert_rowid()],
            )
            .map_err(crate::ProfileError::Sqlite)?;
        Ok(())
    }

    /// Creates a passphrase profile whose schema stops at `version`.
    pub fn create_at_version(
        dir: &Path,
        pw: &[u8],
        params: KdfParams,
        version: i64,
    ) -> Result<Profile, crate::ProfileError> {
        Profile::create_at(dir, Unlock::Passphrase(pw), params, version)
    }
}
