//! The relay's WebTransport certificates: browsers reach a relay over
//! HTTP/3 WebTransport and accept its self-signed certificate only by
//! hash (`serverCertificateHashes`), which they require to be ECDSA
//! P-256 and valid for at most 14 days. The hashes reach browsers in the
//! relay's signed descriptor, so the relay keeps the certificate it
//! serves (current) and the one it will serve next, and announces both.
//!
//! Rotation, by age (all certificates live [`LIFETIME`]):
//!
//! ```text
//! day  0   A made, served                  descriptor: A
//! day  4   B made (announced, not served)  descriptor: A B
//! day  8   B served, A deleted, C made     descriptor: B C
//! day 12   C served, B deleted, D made     descriptor: C D
//! ```
//!
//! so every certificate is announced [`ANNOUNCE_AHEAD`] before it is
//! served, is served for four days, and expires five days after it is
//! replaced (room for clocks and directories a few days old).
//!
//! Files: `DATA_DIR/webtransport/<not_before_secs>.cert` (DER, 0644) and
//! `.key` (PKCS#8 DER, 0600). A file that does not parse is deleted and
//! replaced, never served.

use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_core::UnixTime;
use postern_core::directory::WebTransportInfo;

use crate::keys::{KeyError, write_file_atomic};

/// Subdirectory of the data directory holding the certificates.
pub const CERT_DIR: &str = "webtransport";
/// Validity of each certificate (browsers accept at most 14 days).
pub const LIFETIME: Duration = Duration::from_secs(13 * 86_400);
/// How long before it is served a certificate is announced.
pub const ANNOUNCE_AHEAD: Duration = Duration::from_secs(4 * 86_400);
/// A certificate is valid from this long before it is made (clocks).
pub const BACKDATE: Duration = Duration::from_secs(3_600);

/// One certificate and its key.
#[derive(Clone)]
pub struct WtCert {
    /// Start of validity (Unix seconds); also its file name.
    pub not_before: u64,
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// Its private key (PKCS#8 DER).
    pub key_der: zeroize::Zeroizing<Vec<u8>>,
    /// SHA-256 of `cert_der`.
    pub sha256: [u8; 32],
}

impl core::fmt::Debug for WtCert {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WtCert")
            .field("not_before", &self.not_before)
            .finish_non_exhaustive()
    }
}

impl WtCert {
    fn made_at(&self) -> u64 {
        self.not_before + BACKDATE.as_secs()
    }
    fn expires(&self) -> u64 {
        self.not_before + LIFETIME.as_secs()
    }
}

/// The certificate served now and, once made, the next one.
#[derive(Debug, Clone)]
pub struct CertSet {
    /// Served.
    pub current: WtCert,
    /// Announced, served from the next rotation.
    pub next: Option<WtCert>,
}

impl CertSet {
    /// The descriptor's WebTransport entry for `port`.
    pub fn info(&self, port: u16) -> WebTransportInfo {
        let mut cert_sha256 = vec![self.current.sha256];
        cert_sha256.extend(self.next.as_ref().map(|n| n.sha256));
        WebTransportInfo { port, cert_sha256 }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(path: PathBuf) -> KeyError {
    KeyError::Corrupt {
        what: "WebTransport certificate",
        path,
    }
}

/// Makes a certificate valid from `not_before` for [`LIFETIME`].
pub fn make(host: &str, not_before: u64) -> Result<WtCert, KeyError> {
    let dir = PathBuf::from(CERT_DIR);
    let start = i64::try_from(not_before).map_err(|_| corrupt(dir.clone()))?;
    let end = i64::try_from(not_before + LIFETIME.as_secs()).map_err(|_| corrupt(dir.clone()))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|_| corrupt(dir.clone()))?;
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(|_| corrupt(dir.clone()))?;
    params.not_before =
        time::OffsetDateTime::from_unix_timestamp(start).map_err(|_| corrupt(dir.clone()))?;
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(end).map_err(|_| corrupt(dir.clone()))?;
    let cert = params.self_signed(&key).map_err(|_| corrupt(dir))?;
    let cert_der = cert.der().to_vec();
    Ok(WtCert {
        not_before,
        sha256: postern_core::crypto::hash::sha256(&[&cert_der]),
        cert_der,
        key_der: zeroize::Zeroizing::new(key.serialize_der()),
    })
}

fn load_one(dir: &Path, not_before: u64) -> Option<WtCert> {
    let cert_der = std::fs::read(dir.join(format!("{not_before}.cert"))).ok()?;
    let key_der =
        zeroize::Zeroizing::new(std::fs::read(dir.join(format!("{not_before}.key"))).ok()?);
    // The key must be a P-256 key (what browsers require) and parse.
    let key = rcgen::KeyPair::try_from(key_der.as_slice()).ok()?;
    if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) || cert_der.is_empty() {
        return None;
    }
    Some(WtCert {
        not_before,
        sha256: postern_core::crypto::hash::sha256(&[&cert_der]),
        cert_der,
        key_der,
    })
}

fn remove(dir: &Path, not_before: u64) {
    let _ = std::fs::remove_file(dir.join(format!("{not_before}.cert")));
    let _ = std::fs::remove_file(dir.join(format!("{not_before}.key")));
}

fn store(dir: &Path, c: &WtCert) -> Result<(), KeyError> {
    write_file_atomic(
        &dir.join(format!("{}.key", c.not_before)),
        &c.key_der,
        0o600,
    )?;
    write_file_atomic(
        &dir.join(format!("{}.cert", c.not_before)),
        &c.cert_der,
        0o644,
    )
}

/// Loads the certificates under `data_dir`, applies the rotation rule at
/// `now` (deleting what is no longer needed, making what is missing) and
/// returns the set to serve and announce.
pub fn ensure(data_dir: &Path, host: &str, now: UnixTime) -> Result<CertSet, KeyError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = data_dir.join(CERT_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io(&dir))?;
    let now_s = now.millis() / 1000;
    let mut stamps: Vec<u64> = std::fs::read_dir(&dir)
        .map_err(io(&dir))?
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_suffix(".cert")?.parse().ok()
        })
        .collect();
    stamps.sort_unstable();
    stamps.dedup();
    let mut certs = Vec::new();
    for s in stamps {
        match load_one(&dir, s) {
            // Expired, about to expire, or made in the future (a clock
            // that moved back): never served.
            Some(c) if c.expires() > now_s + 86_400 && c.not_before <= now_s => certs.push(c),
            _ => remove(&dir, s),
        }
    }
    let ahead = ANNOUNCE_AHEAD.as_secs();
    // Served: the newest certificate announced long enough ago; else the
    // oldest there is (a relay's first days).
    let served = certs
        .iter()
        .rposition(|c| c.made_at() + ahead <= now_s)
        .unwrap_or(0);
    let mut certs: Vec<WtCert> = certs.into_iter().skip(served).collect();
    for gone in std::fs::read_dir(&dir).map_err(io(&dir))?.filter_map(|e| {
        let name = e.ok()?.file_name();
        name.to_str()?.strip_suffix(".cert")?.parse::<u64>().ok()
    }) {
        if !certs.iter().any(|c| c.not_before == gone) {
            remove(&dir, gone);
        }
    }
    let not_before = now_s.saturating_sub(BACKDATE.as_secs());
    if certs.is_empty() {
        let c = make(host, not_before)?;
        store(&dir, &c)?;
        certs.push(c);
    }
    // Keep at most one certificate ahead of the served one.
    while certs.len() > 2 {
        if let Some(extra) = certs.pop() {
            remove(&dir, extra.not_before);
        }
    }
    let mut it = certs.into_iter();
    let current = it.next().ok_or_else(|| corrupt(dir.clone()))?;
    let mut next = it.next();
    if next.is_none() && current.made_at() + ahead <= now_s {
        let c = make(host, not_before)?;
        store(&dir, &c)?;
        next = Some(c);
    }
    Ok(CertSet { current, next })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const DAY: u64 = 86_400_000;

    fn at(days: u64) -> UnixTime {
        UnixTime(1_800_000_000_000 + days * DAY)
    }

    #[test]
    fn rotation_announces_ahead_and_keeps_within_fourteen_days() {
        let d = tempfile::tempdir().unwrap();
        let s0 = ensure(d.path(), "127.0.0.1", at(0)).unwrap();
        assert!(s0.next.is_none());
        // Same day, same answer (nothing new made).
        let again = ensure(d.path(), "127.0.0.1", at(0)).unwrap();
        assert_eq!(again.current.sha256, s0.current.sha256);
        assert!(again.next.is_none());
        // Day 4: the next one is announced, the first still served.
        let s4 = ensure(d.path(), "127.0.0.1", at(4)).unwrap();
        assert_eq!(s4.current.sha256, s0.current.sha256);
        let b = s4.next.clone().unwrap();
        assert_eq!(s4.info(443).cert_sha256, vec![s0.current.sha256, b.sha256]);
        // Day 8: the announced one is served, a new one announced, the
        // first deleted.
        let s8 = ensure(d.path(), "127.0.0.1", at(8)).unwrap();
        assert_eq!(s8.current.sha256, b.sha256);
        assert!(s8.next.as_ref().is_some_and(|c| c.sha256 != b.sha256));
        let files = std::fs::read_dir(d.path().join(CERT_DIR)).unwrap().count();
        assert_eq!(files, 4, "two certificates and their keys");
        // Each served certificate is valid when served, for no more than 14 days.
        for (set, now) in [(&s0, at(0)), (&s8, at(8))] {
            let c = &set.current;
            assert!(c.not_before * 1000 <= now.millis() && c.expires() * 1000 > now.millis());
        }
        assert!(LIFETIME <= Duration::from_secs(14 * 86_400));
    }

    #[test]
    fn after_a_long_pause_a_fresh_certificate_is_made() {
        let d = tempfile::tempdir().unwrap();
        let s0 = ensure(d.path(), "127.0.0.1", at(0)).unwrap();
        let s30 = ensure(d.path(), "127.0.0.1", at(30)).unwrap();
        assert_ne!(s30.current.sha256, s0.current.sha256);
        assert!(s30.current.expires() * 1000 > at(30).millis());
    }

    #[test]
    fn a_corrupt_file_is_replaced_not_served() {
        let d = tempfile::tempdir().unwrap();
        let s0 = ensure(d.path(), "127.0.0.1", at(0)).unwrap();
        let key = d
            .path()
            .join(CERT_DIR)
            .join(format!("{}.key", s0.current.not_before));
        std::fs::write(&key, b"not a key").unwrap();
        let s1 = ensure(d.path(), "127.0.0.1", at(0)).unwrap();
        assert_ne!(s1.current.sha256, s0.current.sha256);
    }

    #[test]
    fn certificates_are_p256_with_the_hash_of_their_der() {
        let c = make("relay.example", 1_800_000_000).unwrap();
        let key = rcgen::KeyPair::try_from(c.key_der.as_slice()).unwrap();
        assert!(key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256));
        assert_eq!(c.sha256, postern_core::crypto::hash::sha256(&[&c.cert_der]));
    }
}
