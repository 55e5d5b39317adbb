//! Encrypted profile backups: the whole profile (identity, prekeys,
//! sessions, contacts, messages, outbox) in one file protected by a
//! passphrase. The user's backup, and the way to move to a new machine.
//!
//! ```text
//! magic "POSTERN-BACKUP" 0x00 0x01      16 bytes (format version 1)
//! memory_kib, iterations, parallelism   3 x u32 big-endian (Argon2id)
//! salt                                  16 bytes
//! nonce                                 24 bytes
//! ciphertext                            XChaCha20-Poly1305(key, nonce,
//!                                       aad = everything above,
//!                                       ProfileBackup protobuf)
//! ```
//! key = Argon2id(passphrase, salt, parameters). Everything before the
//! ciphertext is authenticated, so the parameters cannot be weakened.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::codec::{self, proto};
use crate::consts::MAX_BACKUP_BYTES;
use crate::crypto::{aead, kdf};
use crate::error::{Error, Result};
use crate::store::{ChangeSet, Direction, KvStore, Namespace, OutboxEntry, Record, StoredMessage};
use crate::time::UnixTime;

/// The first 16 bytes of every backup (format version 1).
pub const MAGIC: &[u8; 16] = b"POSTERN-BACKUP\x00\x01";
const HEADER_BYTES: usize = 16 + 12 + kdf::SALT_BYTES + aead::NONCE_BYTES;

/// The records, messages, outbox entries and attachment chunks a change
/// set writes, in the backup's (unencrypted) record format: what
/// [`restore`] reads back into an equal change set. Deletions, read marks
/// and dropped attachments are not part of it. Used by stores that seal
/// each change themselves (the browser's).
pub fn encode_set(cs: &ChangeSet) -> Zeroizing<Vec<u8>> {
    let mut b = proto::ProfileBackup::default();
    for (ns, key, r) in cs.records() {
        if let Some(r) = r {
            b.records.push(proto::profile_backup::RecordEntry {
                namespace: ns as u32,
                key: key.to_vec(),
                schema: u32::from(r.schema),
                value: r.bytes.to_vec(),
            });
        }
    }
    for m in cs.messages() {
        b.messages.push(message_entry(m));
    }
    for e in cs.outbox_added() {
        b.outbox.push(proto::profile_backup::OutboxEntry {
            id: e.id.to_vec(),
            peer: e.peer.as_bytes().to_vec(),
            payload: e.payload.clone(),
        });
    }
    for (id, index, data) in cs.attachment_chunks_added() {
        b.chunks.push(proto::profile_backup::ChunkEntry {
            attachment: id.to_vec(),
            index,
            data: data.to_vec(),
        });
    }
    let out = Zeroizing::new(codec::encode(&b));
    zeroize_backup(b);
    out
}

fn message_entry(m: &StoredMessage) -> proto::profile_backup::MessageEntry {
    proto::profile_backup::MessageEntry {
        peer: m.peer.as_bytes().to_vec(),
        id: m.id.to_vec(),
        incoming: m.direction == Direction::Incoming,
        timestamp_ms: m.timestamp.millis(),
        body: m.body.to_vec(),
    }
}

/// Wipes the plaintext copies a protobuf value holds.
fn zeroize_backup(mut b: proto::ProfileBackup) {
    use zeroize::Zeroize as _;
    for r in &mut b.records {
        r.value.zeroize();
    }
    for m in &mut b.messages {
        m.body.zeroize();
    }
    for c in &mut b.chunks {
        c.data.zeroize();
    }
}

/// Writes the whole profile into an encrypted backup.
pub fn export<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    passphrase: &[u8],
    params: kdf::KdfParams,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let mut b = proto::ProfileBackup::default();
    for ns in Namespace::ALL {
        for key in store.keys(ns)? {
            if let Some(r) = store.get(ns, &key)? {
                b.records.push(proto::profile_backup::RecordEntry {
                    namespace: ns as u32,
                    key,
                    schema: u32::from(r.schema),
                    value: r.bytes.to_vec(),
                });
            }
        }
    }
    for c in store.conversations()? {
        for m in store.history(&c.peer, usize::MAX)? {
            b.messages.push(message_entry(&m));
        }
    }
    for e in store.outbox()? {
        b.outbox.push(proto::profile_backup::OutboxEntry {
            id: e.id.to_vec(),
            peer: e.peer.as_bytes().to_vec(),
            payload: e.payload,
        });
    }
    for id in store.attachments()? {
        for index in store.attachment_chunks(&id)? {
            if let Some(data) = store.attachment_chunk(&id, index)? {
                b.chunks.push(proto::profile_backup::ChunkEntry {
                    attachment: id.to_vec(),
                    index,
                    data: data.into_owned(),
                });
            }
        }
    }
    let plain = Zeroizing::new(codec::encode(&b));
    zeroize_backup(b);
    let params = params.checked()?;
    let mut salt = [0u8; kdf::SALT_BYTES];
    rng.fill_bytes(&mut salt);
    let mut nonce = [0u8; aead::NONCE_BYTES];
    rng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(HEADER_BYTES + plain.len() + aead::TAG_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&params.memory_kib.to_be_bytes());
    out.extend_from_slice(&params.iterations.to_be_bytes());
    out.extend_from_slice(&params.parallelism.to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let key = kdf::derive_key(passphrase, &salt, params)?;
    let ct = aead::seal(&key, &nonce, &out, &plain)?;
    out.extend_from_slice(&ct);
    if out.len() > MAX_BACKUP_BYTES {
        return Err(Error::TooLarge {
            what: "profile backup",
            len: out.len(),
            max: MAX_BACKUP_BYTES,
        });
    }
    Ok(out)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    let (head, rest) = buf.split_at_checked(n).ok_or(Error::Malformed {
        what: "profile backup",
    })?;
    *buf = rest;
    Ok(head)
}

fn be32(b: &[u8]) -> Result<u32> {
    Ok(u32::from_be_bytes(codec::fixed::<4>(b, "profile backup")?))
}

/// Reads an encrypted backup into a change set that restores it into
/// `target`, which must hold no identity yet.
pub fn import(target: &dyn KvStore, backup: &[u8], passphrase: &[u8]) -> Result<ChangeSet> {
    let what = "profile backup";
    if backup.len() > MAX_BACKUP_BYTES {
        return Err(Error::TooLarge {
            what,
            len: backup.len(),
            max: MAX_BACKUP_BYTES,
        });
    }
    if target.get(Namespace::LocalIdentity, &[])?.is_some() {
        return Err(Error::ProfileNotEmpty);
    }
    let mut rest = backup;
    let magic = take(&mut rest, MAGIC.len())?;
    if magic.get(..14) != MAGIC.get(..14) {
        return Err(Error::Malformed { what });
    }
    if magic != MAGIC {
        let v = codec::fixed::<2>(magic.get(14..16).unwrap_or_default(), what)?;
        return Err(Error::UnsupportedVersion {
            what,
            version: u32::from(u16::from_be_bytes(v)),
        });
    }
    let h = header(backup)?;
    let key = kdf::derive_key(passphrase, &h.salt, h.params)?;
    let (aad, ciphertext) = backup
        .split_at_checked(HEADER_BYTES)
        .ok_or(Error::Malformed { what })?;
    // A wrong passphrase and a tampered file are indistinguishable here.
    let plain = Zeroizing::new(aead::open(&key, &h.nonce, aad, ciphertext)?);
    restore(&plain)
}

/// The key derivation and nonce a backup's header names (parameters
/// checked against the KDF's bounds before any derivation).
#[doc(hidden)]
#[derive(Debug)]
pub struct Header {
    /// Argon2id parameters.
    pub params: kdf::KdfParams,
    /// Its salt.
    pub salt: [u8; kdf::SALT_BYTES],
    /// The AEAD nonce.
    pub nonce: [u8; aead::NONCE_BYTES],
}

/// Reads the header after the magic (hostile input). Exposed for the
/// fuzz targets.
#[doc(hidden)]
pub fn header(backup: &[u8]) -> Result<Header> {
    let what = "profile backup";
    let mut rest = backup.get(MAGIC.len()..).ok_or(Error::Malformed { what })?;
    let params = kdf::KdfParams {
        memory_kib: be32(take(&mut rest, 4)?)?,
        iterations: be32(take(&mut rest, 4)?)?,
        parallelism: be32(take(&mut rest, 4)?)?,
    }
    .checked()?;
    let salt = codec::fixed::<{ kdf::SALT_BYTES }>(take(&mut rest, kdf::SALT_BYTES)?, what)?;
    let nonce = codec::fixed::<{ aead::NONCE_BYTES }>(take(&mut rest, aead::NONCE_BYTES)?, what)?;
    Ok(Header {
        params,
        salt,
        nonce,
    })
}

/// Turns a decrypted backup (the `ProfileBackup` protobuf) into the change
/// set that restores it: every namespace, key, record, address and id
/// checked, the whole set within the store's bounds. Hostile input as far
/// as this function knows (exposed for the fuzz targets).
#[doc(hidden)]
pub fn restore(plain: &[u8]) -> Result<ChangeSet> {
    let what = "profile backup";
    let b: proto::ProfileBackup = codec::decode_bounded(plain, MAX_BACKUP_BYTES, what)?;
    let mut cs = ChangeSet::new();
    for r in b.records {
        let ns = Namespace::from_code(r.namespace).ok_or(Error::Malformed { what })?;
        let schema = u16::try_from(r.schema).map_err(|_| Error::Malformed { what })?;
        let rec = Record {
            schema,
            bytes: Zeroizing::new(r.value),
        };
        rec.checked(ns)?;
        cs.put(ns, &r.key, rec);
    }
    for m in b.messages {
        cs.add_message(StoredMessage {
            peer: Address::from_slice(&m.peer).ok_or(Error::Malformed { what })?,
            id: codec::fixed::<16>(&m.id, what)?,
            direction: if m.incoming {
                Direction::Incoming
            } else {
                Direction::Outgoing
            },
            timestamp: UnixTime(m.timestamp_ms),
            body: Zeroizing::new(m.body),
        });
    }
    for e in b.outbox {
        cs.add_outbox(OutboxEntry {
            id: codec::fixed::<16>(&e.id, what)?,
            peer: Address::from_slice(&e.peer).ok_or(Error::Malformed { what })?,
            payload: e.payload,
        });
    }
    for c in b.chunks {
        cs.put_attachment_chunk(codec::fixed::<16>(&c.attachment, what)?, c.index, c.data);
    }
    cs.check_bounds()?;
    Ok(cs)
}
