//! The network directory (spec: `docs/directory.md`), sans IO.
//!
//! A directory lists the relays of one network: for each, its address,
//! its roles and its Sphinx public keys for a few key epochs. Every relay
//! entry is a **descriptor** signed by the relay's own long-term
//! descriptor key (whose hash is the relay's id, the Sphinx node address);
//! the whole list is signed by the network's **directory authorities**,
//! whose public keys clients and relays pin. [`Directory::verify`]
//! accepts a directory only with at least `threshold` valid signatures by
//! distinct pinned authorities, within its validity, and with every
//! descriptor valid.
//!
//! Checks are made in this order, so unauthenticated bytes are parsed as
//! little as possible: size bound, outer decode, authority signatures
//! over the exact body bytes, then the body, then each descriptor's
//! signature before its contents.

use std::collections::HashSet;

use rand_core::{CryptoRng, RngCore};

use crate::codec::{self, directory_proto as pb};
use crate::consts::{
    BLOB_BYTES, DIRECTORY_RECHECK_MS, DIRECTORY_REFRESH_BEFORE_EXPIRY_MS, DIRECTORY_VERSION,
    MAX_AUTHORITY_SIGNATURES, MAX_DESCRIPTOR_BYTES, MAX_DESCRIPTOR_SPHINX_KEYS,
    MAX_DIRECTORY_BLOBS, MAX_DIRECTORY_BYTES, MAX_DIRECTORY_CLOCK_SKEW_MS, MAX_DIRECTORY_RELAYS,
    MAX_DIRECTORY_VALIDITY_MS, MAX_EPOCH_SECS, MAX_NETWORK_NAME_BYTES, MIN_EPOCH_SECS,
};
use crate::crypto::hash::sha256;
use crate::crypto::signal::{AuthorityPublic, AuthoritySecret, DescriptorPublic, DescriptorSecret};
use crate::error::{Error, Result};
use crate::relay_address::RelayAddress;
use crate::relay_proto::Blob;
use crate::time::UnixTime;

/// The relay accepts client connections (first hop).
pub const ROLE_ENTRY: u32 = 1;
/// The relay forwards onion packets between relays.
pub const ROLE_MIX: u32 = 2;
/// The relay keeps mailbox queues (last hop).
pub const ROLE_MAILBOX: u32 = 4;
/// Every defined role bit.
pub const ROLES_ALL: u32 = ROLE_ENTRY | ROLE_MIX | ROLE_MAILBOX;

const DESCRIPTOR_CONTEXT: &[u8] = b"postern/descriptor/v1";
const DIRECTORY_CONTEXT: &[u8] = b"postern/directory/v1";
const RELAY_ID_CONTEXT: &[u8] = b"postern/relay-id/v1";
const SIGNATURE_BYTES: usize = 64;
const LENGTH_PREFIX: usize = 4;
const WHAT_DIRECTORY: &str = "directory";
const WHAT_DESCRIPTOR: &str = "relay descriptor";
const WHAT_BLOBS: &str = "directory blobs";

/// One relay as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInfo {
    /// SHA-256("postern/relay-id/v1" ‖ descriptor key): the Sphinx node address.
    pub id: [u8; 32],
    /// Where it listens, with its certificate pin.
    pub address: RelayAddress,
    /// [`ROLE_ENTRY`] | [`ROLE_MIX`] | [`ROLE_MAILBOX`] bits.
    pub roles: u32,
    /// `(epoch, X25519 public key)`, epochs strictly increasing.
    pub sphinx_keys: Vec<(u32, [u8; 32])>,
    /// Its WebTransport listener for browsers, if it has one.
    pub webtransport: Option<WebTransportInfo>,
}

/// A relay's WebTransport (HTTP/3) listener, as its signed descriptor
/// names it: browsers accept its self-signed certificate only by one of
/// these SHA-256 hashes, learnt from a directory the authorities signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebTransportInfo {
    /// UDP port on the relay address's host.
    pub port: u16,
    /// SHA-256 of the current certificate, and of the next one during a
    /// rotation (one or two, distinct).
    pub cert_sha256: Vec<[u8; 32]>,
}

/// Most certificate hashes a descriptor names (the current and the next).
pub const MAX_WEBTRANSPORT_HASHES: usize = 2;

impl RelayInfo {
    /// Whether the relay has every bit of `role`.
    pub fn has_role(&self, role: u32) -> bool {
        role != 0 && self.roles & role == role
    }
}

/// A verified directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// The network's name.
    pub network: String,
    /// When the authorities signed it.
    pub issued_at: UnixTime,
    /// It is refused from this instant on.
    pub valid_until: UnixTime,
    /// Length of a Sphinx key epoch.
    pub epoch_secs: u64,
    /// Start of epoch 0.
    pub epoch_zero: UnixTime,
    /// The relays, ordered by id.
    pub relays: Vec<RelayInfo>,
}

/// The Sphinx key epoch at `now`: `(now - epoch_zero) / epoch_secs`
/// (0 before `epoch_zero`, `u32::MAX` far in the future). `epoch_secs`
/// of 0 is treated as 1.
pub fn epoch_at(epoch_secs: u64, epoch_zero: UnixTime, now: UnixTime) -> u32 {
    let len_ms = epoch_secs.max(1).saturating_mul(1000);
    let n = now.millis().saturating_sub(epoch_zero.millis()) / len_ms;
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// When `epoch` starts.
pub fn epoch_start(epoch_secs: u64, epoch_zero: UnixTime, epoch: u32) -> UnixTime {
    let len_ms = epoch_secs.max(1).saturating_mul(1000);
    epoch_zero.plus_millis(u64::from(epoch).saturating_mul(len_ms))
}

impl Directory {
    /// Verifies a signed directory (`SignedDirectory` bytes) against the
    /// pinned authority keys: bounded decode, at least `threshold` (at
    /// least 1) valid signatures by distinct keys of `pinned` (unknown
    /// and repeated signers are ignored), not expired (`now <
    /// valid_until`), not issued more than the allowed clock skew after
    /// `now`, and every descriptor valid (signature, relay id, address,
    /// roles, keys), with no relay id or host:port listed twice.
    pub fn verify(
        bytes: &[u8],
        pinned: &[AuthorityPublic],
        threshold: usize,
        now: UnixTime,
    ) -> Result<Directory> {
        let signed: pb::SignedDirectory =
            codec::decode_bounded(bytes, MAX_DIRECTORY_BYTES, WHAT_DIRECTORY)?;
        if signed.signatures.is_empty() {
            return Err(reject("no authority signature"));
        }
        if signed.signatures.len() > MAX_AUTHORITY_SIGNATURES {
            return Err(reject("too many authority signatures"));
        }
        let message = signed_message(DIRECTORY_CONTEXT, &signed.body);
        let mut counted: Vec<&AuthorityPublic> = Vec::new();
        for s in &signed.signatures {
            let Ok(key) = AuthorityPublic::from_bytes(&s.authority_key) else {
                continue;
            };
            let Some(pinned_key) = pinned.iter().find(|p| **p == key) else {
                continue;
            };
            if counted.contains(&pinned_key) {
                continue;
            }
            let Ok(sig) = codec::fixed::<SIGNATURE_BYTES>(&s.signature, WHAT_DIRECTORY) else {
                continue;
            };
            if pinned_key.verify(&message, &sig) {
                counted.push(pinned_key);
            }
        }
        if counted.is_empty() || counted.len() < threshold {
            return Err(reject("not enough valid authority signatures"));
        }
        let dir = check_body(&signed.body)?;
        if now >= dir.valid_until {
            return Err(Error::DirectoryExpired);
        }
        if dir.issued_at > now.plus_millis(MAX_DIRECTORY_CLOCK_SKEW_MS) {
            return Err(reject("issued in the future"));
        }
        Ok(dir)
    }

    /// Whether a client holding this (verified) directory should fetch a
    /// newer one before building packets at `now`: it expires within
    /// [`DIRECTORY_REFRESH_BEFORE_EXPIRY_MS`], or it was signed a quarter
    /// epoch ago or more (relays rotate their Sphinx keys every epoch and
    /// authorities republish at least once per epoch, so an older copy
    /// soon lacks the keys of the coming epoch), or no relay in it holds a
    /// key for the epoch at `now`. A client that cannot fetch a newer
    /// copy may go on using this one while it is valid.
    pub fn is_stale(&self, now: UnixTime) -> bool {
        let quarter_epoch_ms = self.epoch_secs.saturating_mul(1000) / 4;
        let epoch = self.epoch_at(now);
        self.valid_until.millis().saturating_sub(now.millis()) <= DIRECTORY_REFRESH_BEFORE_EXPIRY_MS
            || now.millis().saturating_sub(self.issued_at.millis()) >= quarter_epoch_ms
            || !self
                .relays
                .iter()
                .any(|r| r.sphinx_keys.iter().any(|(e, _)| *e == epoch))
    }

    /// Whether to fetch a newer copy now: this one [`is_stale`], and the
    /// last fetch (`last_fetch`, successful or not) was at least
    /// [`DIRECTORY_RECHECK_MS`] ago, or lies in the future (the clock was
    /// set back).
    ///
    /// [`is_stale`]: Directory::is_stale
    pub fn should_refetch(&self, last_fetch: Option<UnixTime>, now: UnixTime) -> bool {
        let recent = last_fetch.is_some_and(|at| {
            at.millis() <= now.millis() && now.millis() - at.millis() < DIRECTORY_RECHECK_MS
        });
        self.is_stale(now) && !recent
    }

    /// The Sphinx key epoch at `now` under this directory's epoch rule.
    pub fn epoch_at(&self, now: UnixTime) -> u32 {
        epoch_at(self.epoch_secs, self.epoch_zero, now)
    }

    /// When `epoch` starts under this directory's epoch rule.
    pub fn epoch_start(&self, epoch: u32) -> UnixTime {
        epoch_start(self.epoch_secs, self.epoch_zero, epoch)
    }

    /// The relay with this id.
    pub fn relay(&self, id: &[u8; 32]) -> Option<&RelayInfo> {
        self.relays.iter().find(|r| r.id == *id)
    }

    /// The relay with this address (host, port and pin all equal).
    pub fn by_address(&self, a: &RelayAddress) -> Option<&RelayInfo> {
        self.relays.iter().find(|r| r.address == *a)
    }

    /// The X25519 public key of relay `id` for `epoch`.
    pub fn sphinx_key(&self, id: &[u8; 32], epoch: u32) -> Option<[u8; 32]> {
        self.relay(id)?
            .sphinx_keys
            .iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, k)| *k)
    }

    /// The relays that have every bit of `role`.
    pub fn with_role(&self, role: u32) -> impl Iterator<Item = &RelayInfo> {
        self.relays.iter().filter(move |r| r.has_role(role))
    }
}

fn reject(reason: &'static str) -> Error {
    Error::DirectoryRejected { reason }
}

fn signed_message(context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + body.len());
    m.extend_from_slice(context);
    m.extend_from_slice(body);
    m
}

/// A relay's id: SHA-256("postern/relay-id/v1" ‖ its 33-byte descriptor key).
pub fn relay_id(descriptor_key: &DescriptorPublic) -> [u8; 32] {
    sha256(&[RELAY_ID_CONTEXT, &descriptor_key.to_bytes()])
}

/// Builds and signs a relay's descriptor (`SignedDescriptor` bytes), and
/// checks it as a verifier would.
pub fn sign_descriptor<R: RngCore + CryptoRng>(
    key: &DescriptorSecret,
    address: &RelayAddress,
    roles: u32,
    sphinx_keys: &[(u32, [u8; 32])],
    published_at: UnixTime,
    rng: &mut R,
) -> Result<Vec<u8>> {
    sign_descriptor_with(key, address, roles, sphinx_keys, None, published_at, rng)
}

/// [`sign_descriptor`] for a relay that also listens for browsers over
/// WebTransport.
#[allow(clippy::too_many_arguments)]
pub fn sign_descriptor_with<R: RngCore + CryptoRng>(
    key: &DescriptorSecret,
    address: &RelayAddress,
    roles: u32,
    sphinx_keys: &[(u32, [u8; 32])],
    webtransport: Option<&WebTransportInfo>,
    published_at: UnixTime,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let public = key.public()?;
    let descriptor = pb::RelayDescriptor {
        version: DIRECTORY_VERSION,
        relay_id: relay_id(&public).to_vec(),
        address: address.to_string(),
        descriptor_key: public.to_bytes(),
        sphinx_keys: sphinx_keys
            .iter()
            .map(|(epoch, k)| pb::SphinxKey {
                epoch: *epoch,
                public_key: k.to_vec(),
            })
            .collect(),
        roles,
        published_at_ms: published_at.millis(),
        webtransport: webtransport.map(|w| pb::WebTransport {
            port: u32::from(w.port),
            cert_sha256: w.cert_sha256.iter().map(|h| h.to_vec()).collect(),
        }),
    };
    let descriptor = codec::encode(&descriptor);
    let signature = key.sign(&signed_message(DESCRIPTOR_CONTEXT, &descriptor), rng)?;
    let signed = codec::encode(&pb::SignedDescriptor {
        descriptor,
        signature: signature.to_vec(),
    });
    verify_descriptor(&signed)?;
    Ok(signed)
}

/// Checks one `SignedDescriptor`: bounded decode, version, the signature
/// by its descriptor key (before anything else in it is looked at), the
/// relay id, a canonical address, roles, and 1..=3 Sphinx keys with
/// strictly increasing epochs.
pub fn verify_descriptor(bytes: &[u8]) -> Result<RelayInfo> {
    let signed: pb::SignedDescriptor =
        codec::decode_bounded(bytes, MAX_DESCRIPTOR_BYTES, WHAT_DESCRIPTOR)?;
    let d: pb::RelayDescriptor =
        codec::decode_bounded(&signed.descriptor, MAX_DESCRIPTOR_BYTES, WHAT_DESCRIPTOR)?;
    if d.version != DIRECTORY_VERSION {
        return Err(Error::UnsupportedVersion {
            what: WHAT_DESCRIPTOR,
            version: d.version,
        });
    }
    let key = DescriptorPublic::from_bytes(&d.descriptor_key)
        .map_err(|_| reject("descriptor key does not parse"))?;
    let sig = codec::fixed::<SIGNATURE_BYTES>(&signed.signature, WHAT_DESCRIPTOR)
        .map_err(|_| reject("descriptor signature length"))?;
    if !key.verify(
        &signed_message(DESCRIPTOR_CONTEXT, &signed.descriptor),
        &sig,
    ) {
        return Err(reject("bad descriptor signature"));
    }
    let id = relay_id(&key);
    if d.relay_id != id {
        return Err(reject("relay id does not match the descriptor key"));
    }
    let address = RelayAddress::parse(&d.address).map_err(|_| reject("bad relay address"))?;
    if address.to_string() != d.address {
        return Err(reject("relay address not canonical"));
    }
    if d.roles == 0 || d.roles & !ROLES_ALL != 0 {
        return Err(reject("bad roles"));
    }
    if d.sphinx_keys.is_empty() || d.sphinx_keys.len() > MAX_DESCRIPTOR_SPHINX_KEYS {
        return Err(reject("wrong number of sphinx keys"));
    }
    let mut sphinx_keys: Vec<(u32, [u8; 32])> = Vec::with_capacity(d.sphinx_keys.len());
    for k in &d.sphinx_keys {
        let public = codec::fixed::<32>(&k.public_key, WHAT_DESCRIPTOR)
            .map_err(|_| reject("sphinx key length"))?;
        if public == [0u8; 32] {
            return Err(reject("zero sphinx key"));
        }
        if sphinx_keys.last().is_some_and(|(e, _)| *e >= k.epoch) {
            return Err(reject("sphinx key epochs not increasing"));
        }
        sphinx_keys.push((k.epoch, public));
    }
    let webtransport = match &d.webtransport {
        None => None,
        Some(w) => {
            let port = u16::try_from(w.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or(reject("bad webtransport port"))?;
            if w.cert_sha256.is_empty() || w.cert_sha256.len() > MAX_WEBTRANSPORT_HASHES {
                return Err(reject("wrong number of webtransport certificate hashes"));
            }
            let mut cert_sha256: Vec<[u8; 32]> = Vec::with_capacity(w.cert_sha256.len());
            for h in &w.cert_sha256 {
                let h = codec::fixed::<32>(h, WHAT_DESCRIPTOR)
                    .map_err(|_| reject("webtransport certificate hash length"))?;
                if cert_sha256.contains(&h) {
                    return Err(reject("repeated webtransport certificate hash"));
                }
                cert_sha256.push(h);
            }
            Some(WebTransportInfo { port, cert_sha256 })
        }
    };
    Ok(RelayInfo {
        id,
        address,
        roles: d.roles,
        sphinx_keys,
        webtransport,
    })
}

/// Checks a `DirectoryBody` (everything but the authority signatures and
/// the time of day).
fn check_body(body: &[u8]) -> Result<Directory> {
    let b: pb::DirectoryBody = codec::decode_bounded(body, MAX_DIRECTORY_BYTES, WHAT_DIRECTORY)?;
    if b.version != DIRECTORY_VERSION {
        return Err(Error::UnsupportedVersion {
            what: WHAT_DIRECTORY,
            version: b.version,
        });
    }
    if b.network.is_empty() || b.network.len() > MAX_NETWORK_NAME_BYTES {
        return Err(reject("bad network name"));
    }
    if b.valid_until_ms <= b.issued_at_ms
        || b.valid_until_ms - b.issued_at_ms > MAX_DIRECTORY_VALIDITY_MS
    {
        return Err(reject("bad validity period"));
    }
    if !(MIN_EPOCH_SECS..=MAX_EPOCH_SECS).contains(&b.epoch_secs) {
        return Err(reject("bad epoch length"));
    }
    if b.relays.is_empty() || b.relays.len() > MAX_DIRECTORY_RELAYS {
        return Err(reject("wrong number of relays"));
    }
    let mut relays = Vec::with_capacity(b.relays.len());
    let mut ids = HashSet::new();
    let mut endpoints = HashSet::new();
    for r in &b.relays {
        // Re-encoding a decoded SignedDescriptor yields the same two byte
        // strings, so the descriptor's signature is checked over exactly
        // what its relay signed.
        let info = verify_descriptor(&codec::encode(r))?;
        if !ids.insert(info.id) {
            return Err(reject("relay listed twice"));
        }
        if !endpoints.insert((info.address.host().to_owned(), info.address.port())) {
            return Err(reject("relay address listed twice"));
        }
        relays.push(info);
    }
    if relays
        .windows(2)
        .any(|w| matches!(w, [a, b] if a.id >= b.id))
    {
        return Err(reject("relays not ordered by id"));
    }
    Ok(Directory {
        network: b.network,
        issued_at: UnixTime(b.issued_at_ms),
        valid_until: UnixTime(b.valid_until_ms),
        epoch_secs: b.epoch_secs,
        epoch_zero: UnixTime(b.epoch_zero_ms),
        relays,
    })
}

/// Builds a directory over `descriptors` (each a `SignedDescriptor`,
/// verified here; listed in the order of their relay ids) and signs it
/// with one authority key. More authorities sign with [`add_signature`].
#[allow(clippy::too_many_arguments)]
pub fn sign_directory<R: RngCore + CryptoRng>(
    network: &str,
    descriptors: &[Vec<u8>],
    issued_at: UnixTime,
    valid_until: UnixTime,
    epoch_secs: u64,
    epoch_zero: UnixTime,
    authority: &AuthoritySecret,
    rng: &mut R,
) -> Result<Vec<u8>> {
    if descriptors.len() > MAX_DIRECTORY_RELAYS {
        return Err(Error::TooLarge {
            what: WHAT_DIRECTORY,
            len: descriptors.len(),
            max: MAX_DIRECTORY_RELAYS,
        });
    }
    let mut relays = Vec::with_capacity(descriptors.len());
    for d in descriptors {
        let info = verify_descriptor(d)?;
        let signed: pb::SignedDescriptor =
            codec::decode_bounded(d, MAX_DESCRIPTOR_BYTES, WHAT_DESCRIPTOR)?;
        relays.push((info.id, signed));
    }
    relays.sort_by_key(|r| r.0);
    let body = codec::encode(&pb::DirectoryBody {
        version: DIRECTORY_VERSION,
        network: network.to_owned(),
        issued_at_ms: issued_at.millis(),
        valid_until_ms: valid_until.millis(),
        epoch_secs,
        epoch_zero_ms: epoch_zero.millis(),
        relays: relays.into_iter().map(|(_, s)| s).collect(),
    });
    check_body(&body)?;
    let signature = authority.sign(&signed_message(DIRECTORY_CONTEXT, &body), rng)?;
    let signed = codec::encode(&pb::SignedDirectory {
        body,
        signatures: vec![pb::AuthoritySignature {
            authority_key: authority.public()?.to_bytes(),
            signature: signature.to_vec(),
        }],
    });
    bounded_size(signed)
}

/// Adds `authority`'s signature to a signed directory (whose body is
/// checked first; one signature per authority).
pub fn add_signature<R: RngCore + CryptoRng>(
    directory: &[u8],
    authority: &AuthoritySecret,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let mut signed: pb::SignedDirectory =
        codec::decode_bounded(directory, MAX_DIRECTORY_BYTES, WHAT_DIRECTORY)?;
    check_body(&signed.body)?;
    let key = authority.public()?.to_bytes();
    if signed.signatures.iter().any(|s| s.authority_key == key) {
        return Err(reject("already signed by this authority"));
    }
    if signed.signatures.len() >= MAX_AUTHORITY_SIGNATURES {
        return Err(reject("too many authority signatures"));
    }
    let signature = authority.sign(&signed_message(DIRECTORY_CONTEXT, &signed.body), rng)?;
    signed.signatures.push(pb::AuthoritySignature {
        authority_key: key,
        signature: signature.to_vec(),
    });
    bounded_size(codec::encode(&signed))
}

fn bounded_size(bytes: Vec<u8>) -> Result<Vec<u8>> {
    if bytes.len() > MAX_DIRECTORY_BYTES {
        return Err(Error::TooLarge {
            what: WHAT_DIRECTORY,
            len: bytes.len(),
            max: MAX_DIRECTORY_BYTES,
        });
    }
    Ok(bytes)
}

/// Splits a signed directory into `GetDirectory` blobs: a 4-byte
/// big-endian length, the document, zeros up to a whole number of blobs.
pub fn to_blobs(directory: &[u8]) -> Result<Vec<Blob>> {
    if directory.is_empty() {
        return Err(Error::Malformed { what: WHAT_BLOBS });
    }
    let len = u32::try_from(bounded_size(directory.to_vec())?.len())
        .map_err(|_| Error::Bug("directory length"))?;
    let mut bytes = Vec::with_capacity(LENGTH_PREFIX + directory.len());
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(directory);
    Ok(bytes
        .chunks(BLOB_BYTES)
        .map(|chunk| {
            let mut b: Blob = Box::new([0u8; BLOB_BYTES]);
            let (head, _) = b.split_at_mut(chunk.len());
            head.copy_from_slice(chunk);
            b
        })
        .collect())
}

/// Joins `GetDirectory` blobs back into the signed directory, strictly:
/// 1..=[`MAX_DIRECTORY_BLOBS`] blobs, a non-zero length within
/// [`MAX_DIRECTORY_BYTES`], exactly as many blobs as that length needs,
/// and zero padding.
pub fn from_blobs(blobs: &[Blob]) -> Result<Vec<u8>> {
    let malformed = || Error::Malformed { what: WHAT_BLOBS };
    if blobs.is_empty() || blobs.len() > MAX_DIRECTORY_BLOBS as usize {
        return Err(malformed());
    }
    let first = blobs.first().ok_or_else(malformed)?;
    let (head, _) = first
        .split_first_chunk::<LENGTH_PREFIX>()
        .ok_or_else(malformed)?;
    let len = usize::try_from(u32::from_be_bytes(*head)).map_err(|_| malformed())?;
    if len == 0 || len > MAX_DIRECTORY_BYTES {
        return Err(malformed());
    }
    if (LENGTH_PREFIX + len).div_ceil(BLOB_BYTES) != blobs.len() {
        return Err(malformed());
    }
    let mut all = Vec::with_capacity(blobs.len() * BLOB_BYTES);
    for b in blobs {
        all.extend_from_slice(&b[..]);
    }
    let rest = all.get(LENGTH_PREFIX..).ok_or_else(malformed)?;
    let (doc, padding) = rest.split_at_checked(len).ok_or_else(malformed)?;
    if padding.iter().any(|b| *b != 0) {
        return Err(malformed());
    }
    Ok(doc.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_count_from_epoch_zero() {
        assert_eq!(epoch_at(60, UnixTime(1000), UnixTime(0)), 0);
        assert_eq!(epoch_at(60, UnixTime(1000), UnixTime(60_999)), 0);
        assert_eq!(epoch_at(60, UnixTime(1000), UnixTime(61_000)), 1);
        assert_eq!(epoch_start(60, UnixTime(1000), 2), UnixTime(121_000));
        assert_eq!(epoch_at(60, UnixTime(0), UnixTime(u64::MAX)), u32::MAX);
    }

    #[test]
    fn blobs_reject_bad_lengths_and_padding() {
        let doc = vec![7u8; BLOB_BYTES];
        let blobs = to_blobs(&doc).unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(from_blobs(&blobs).unwrap(), doc);
        // One blob too many, one too few.
        let mut more = blobs.clone();
        more.push(Box::new([0u8; BLOB_BYTES]));
        assert!(from_blobs(&more).is_err());
        assert!(from_blobs(&blobs[..1]).is_err());
        // Non-zero padding.
        let mut bad = blobs.clone();
        bad[1][BLOB_BYTES - 1] = 1;
        assert!(from_blobs(&bad).is_err());
        // Zero and oversized lengths.
        let mut zero = blobs.clone();
        zero[0][..4].copy_from_slice(&0u32.to_be_bytes());
        assert!(from_blobs(&zero).is_err());
        let mut huge = blobs;
        huge[0][..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(from_blobs(&huge).is_err());
        assert!(from_blobs(&[]).is_err());
        assert!(to_blobs(&[]).is_err());
        assert!(to_blobs(&vec![1u8; MAX_DIRECTORY_BYTES + 1]).is_err());
        assert_eq!(
            to_blobs(&vec![1u8; MAX_DIRECTORY_BYTES]).unwrap().len(),
            MAX_DIRECTORY_BLOBS as usize
        );
    }
}
