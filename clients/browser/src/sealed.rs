//! The browser profile's storage format, with no I/O: every record,
//! message, outbox entry and attachment chunk sealed one by one with the
//! core's AEAD under a key derived from the profile key, stored under an
//! opaque slot name (a keyed hash of what it is), so that the browser's
//! database holds no plaintext, no key, no address and no id.
//!
//! ```text
//! slot  = hex(SHA-256("postern/web/slot/v1" ‖ index key ‖ kind ‖ natural key))
//! value = nonce (24) ‖ XChaCha20-Poly1305(seal key, nonce,
//!           aad = "postern/web/value/v1" ‖ slot,
//!           seq u64 BE ‖ kind u8 ‖ body)
//! ```
//!
//! `kind` is `r` (a record: body = the backup format of one record), `m`
//! (a message), `o` (an outbox entry), `c` (an attachment chunk) — bodies
//! written by [`postern_core::backup::encode_set`] and read back by
//! [`postern_core::backup::restore`], so every value is checked like a
//! backup — or `u` (a conversation marked read: body = the address).
//! `seq` grows with every write: loading replays the values in that order,
//! which gives back the order of messages and of the outbox and where
//! each conversation was last read. The slot is bound into the AEAD, so a
//! value moved to another slot does not open.
//!
//! [`SealedStore`] is the engine's [`KvStore`]: the profile in memory (a
//! [`MemStore`], loaded and checked at unlock) and, for every committed
//! change set, one [`Batch`] of slot writes that the platform must write
//! in one database transaction before anything that depends on it leaves
//! the device (see `idb` and `durable`).

use std::borrow::Cow;

use postern_core::StoreError;
use postern_core::address::Address;
use postern_core::backup;
use postern_core::crypto::{aead, hash, kdf};
use postern_core::store::{
    AttachmentId, ChangeSet, ConversationSummary, KvStore, MemStore, MessageId, Namespace,
    OutboxEntry, Record, StoredMessage,
};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// Most values a profile may hold (the core's in-memory bound).
pub const MAX_VALUES: usize = postern_core::consts::MEM_STORE_CAPACITY;
/// Largest sealed value read back (an attachment chunk and overhead).
pub const MAX_VALUE_BYTES: usize = postern_core::consts::MAX_BACKUP_BYTES;

const SLOT_LABEL: &[u8] = b"postern/web/slot/v1";
const VALUE_LABEL: &[u8] = b"postern/web/value/v1";
const HEADER_BYTES: usize = 8 + 1;

/// Why the profile's data could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedError {
    /// A value did not open under the profile's key, or is not what its
    /// slot says: the database was changed by something else.
    #[error("the browser's copy of the profile was altered or damaged")]
    Tampered,
    /// The profile holds more than a browser profile may.
    #[error("the profile is larger than a browser profile may be")]
    TooLarge,
    /// The core refused the loaded data.
    #[error("the profile's data is invalid: {0}")]
    Core(#[from] postern_core::Error),
    /// The in-memory store refused it.
    #[error("the profile's data is invalid: {0}")]
    Store(#[from] StoreError),
}

/// The keys the profile key gives: one seals values, one names slots.
pub struct Keys {
    seal: Zeroizing<[u8; 32]>,
    index: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for Keys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// The keys of a profile key.
    pub fn new(profile_key: &[u8; 32]) -> Keys {
        Keys {
            seal: Zeroizing::new(hash::sha256(&[b"postern/web/seal-key/v1", profile_key])),
            index: Zeroizing::new(hash::sha256(&[b"postern/web/index-key/v1", profile_key])),
        }
    }

    fn slot(&self, kind: u8, natural: &[&[u8]]) -> String {
        let mut parts: Vec<&[u8]> = vec![
            SLOT_LABEL,
            self.index.as_ref(),
            core::slice::from_ref(&kind),
        ];
        parts.extend_from_slice(natural);
        hex(&hash::sha256(&parts))
    }

    fn seal<R: RngCore + CryptoRng>(
        &self,
        slot: &str,
        seq: u64,
        kind: u8,
        body: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, SealedError> {
        let mut plain = Zeroizing::new(Vec::with_capacity(HEADER_BYTES + body.len()));
        plain.extend_from_slice(&seq.to_be_bytes());
        plain.push(kind);
        plain.extend_from_slice(body);
        let mut nonce = [0u8; aead::NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        let ct = aead::seal(&self.seal, &nonce, &aad(slot), &plain)?;
        let mut out = Vec::with_capacity(nonce.len() + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn open(&self, slot: &str, value: &[u8]) -> Result<(u64, u8, Zeroizing<Vec<u8>>), SealedError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(SealedError::TooLarge);
        }
        let (nonce, ct) = value
            .split_first_chunk::<{ aead::NONCE_BYTES }>()
            .ok_or(SealedError::Tampered)?;
        let plain = Zeroizing::new(
            aead::open(&self.seal, nonce, &aad(slot), ct).map_err(|_| SealedError::Tampered)?,
        );
        let (seq, rest) = plain
            .split_first_chunk::<8>()
            .ok_or(SealedError::Tampered)?;
        let (kind, body) = rest.split_first().ok_or(SealedError::Tampered)?;
        Ok((
            u64::from_be_bytes(*seq),
            *kind,
            Zeroizing::new(body.to_vec()),
        ))
    }
}

fn aad(slot: &str) -> Vec<u8> {
    [VALUE_LABEL, slot.as_bytes()].concat()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const RECORD: u8 = b'r';
const MESSAGE: u8 = b'm';
const OUTBOX: u8 = b'o';
const CHUNK: u8 = b'c';
const READ: u8 = b'u';

/// One write to the browser's database.
#[derive(Clone, PartialEq, Eq)]
pub enum Write {
    /// Store `value` under `slot` (replacing what was there).
    Put {
        /// The slot name.
        slot: String,
        /// The sealed value.
        value: Vec<u8>,
    },
    /// Remove `slot`.
    Delete {
        /// The slot name.
        slot: String,
    },
}

impl core::fmt::Debug for Write {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Write::Put { value, .. } => write!(f, "Put({} bytes)", value.len()),
            Write::Delete { .. } => f.write_str("Delete"),
        }
    }
}

/// The platform's secure random generator, as a fill function.
pub type Fill = Box<dyn FnMut(&mut [u8])>;

/// The writes of one committed change set, to be applied in order in one
/// database transaction.
pub type Batch = Vec<Write>;

/// The profile in memory, with the sealed writes of each commit queued
/// for the platform to persist.
pub struct SealedStore {
    mem: MemStore,
    keys: Keys,
    next_seq: u64,
    batches: Vec<Batch>,
    rng: Fill,
}

impl core::fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SealedStore({} batches waiting)", self.batches.len())
    }
}

/// Adapts a fill function to the RNG traits the AEAD nonce needs.
struct FillRng<'a>(&'a mut dyn FnMut(&mut [u8]));

impl RngCore for FillRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        (self.0)(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        (self.0)(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        (self.0)(dst);
    }
}

// The fill function is the platform's secure generator (the browser's
// `crypto.getRandomValues`, the OS in tests).
impl CryptoRng for FillRng<'_> {}

/// Seals any (slot, seq, kind, body): the fuzz target's way past the
/// AEAD to the parsers behind it. Not for anything else.
#[doc(hidden)]
pub fn seal_raw(keys: &Keys, slot: &str, seq: u64, kind: u8, body: &[u8]) -> Option<Vec<u8>> {
    let mut n = 0u8;
    let mut fill = |b: &mut [u8]| {
        for x in b {
            n = n.wrapping_add(1);
            *x = n;
        }
    };
    keys.seal(slot, seq, kind, body, &mut FillRng(&mut fill))
        .ok()
}

/// The slot a value of `kind` has for `natural` (the fuzz target's).
#[doc(hidden)]
pub fn slot_of(keys: &Keys, kind: u8, natural: &[u8]) -> String {
    keys.slot(kind, &[natural])
}

impl SealedStore {
    /// Opens the values read from the database (slot, value), checks each
    /// like a backup and replays them in write order. Any value that does
    /// not open, or is not what its slot says, refuses the whole profile
    /// (nothing is changed).
    pub fn load(
        keys: Keys,
        values: impl IntoIterator<Item = (String, Vec<u8>)>,
        rng: Fill,
    ) -> Result<SealedStore, SealedError> {
        let mut opened = Vec::new();
        for (slot, value) in values {
            if opened.len() >= MAX_VALUES {
                return Err(SealedError::TooLarge);
            }
            let (seq, kind, body) = keys.open(&slot, &value)?;
            opened.push((seq, slot, kind, body));
        }
        opened.sort_by_key(|(seq, ..)| *seq);
        let next_seq = opened.last().map_or(1, |(s, ..)| s.saturating_add(1));
        let mut mem = MemStore::new();
        let mut set = ChangeSet::new();
        for (_, slot, kind, body) in opened {
            if kind == READ {
                let peer = Address::from_slice(&body).ok_or(SealedError::Tampered)?;
                if slot != keys.slot(READ, &[peer.as_bytes()]) {
                    return Err(SealedError::Tampered);
                }
                // Messages up to here, then the conversation read.
                mem.commit(core::mem::take(&mut set))?;
                let mut read = ChangeSet::new();
                read.mark_read(peer);
                mem.commit(read)?;
                continue;
            }
            let one = backup::restore(&body)?;
            let expected = expected_slots(&keys, &one);
            if expected.len() != 1
                || expected.first().map(|(k, s)| (*k, s.as_str())) != Some((kind, slot.as_str()))
            {
                return Err(SealedError::Tampered);
            }
            set.extend(one);
        }
        mem.commit(set)?;
        Ok(SealedStore {
            mem,
            keys,
            next_seq,
            batches: Vec::new(),
            rng,
        })
    }

    /// The batches committed since the last call, oldest first.
    pub fn take_batches(&mut self) -> Vec<Batch> {
        core::mem::take(&mut self.batches)
    }

    fn put(
        &mut self,
        batch: &mut Batch,
        slot: String,
        kind: u8,
        body: &[u8],
    ) -> Result<(), SealedError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut rng = FillRng(&mut *self.rng);
        let value = self.keys.seal(&slot, seq, kind, body, &mut rng)?;
        batch.push(Write::Put { slot, value });
        Ok(())
    }

    fn writes(
        &mut self,
        cs: &ChangeSet,
        dropped_chunks: Vec<(AttachmentId, u32)>,
    ) -> Result<Batch, SealedError> {
        let mut batch = Vec::new();
        // Deletions first: a chunk or outbox entry written again by the
        // same change set must survive, as in the core's stores.
        for id in cs.outbox_removed() {
            batch.push(Write::Delete {
                slot: self.keys.slot(OUTBOX, &[id]),
            });
        }
        for (id, index) in dropped_chunks {
            batch.push(Write::Delete {
                slot: self.keys.slot(CHUNK, &[&id, &index.to_be_bytes()]),
            });
        }
        for (ns, key, r) in cs.records() {
            let code = (ns as u32).to_be_bytes();
            let slot = self.keys.slot(RECORD, &[&code, key]);
            match r {
                None => batch.push(Write::Delete { slot }),
                Some(r) => {
                    let mut one = ChangeSet::new();
                    one.put(ns, key, r.clone());
                    self.put(&mut batch, slot, RECORD, &backup::encode_set(&one))?;
                }
            }
        }
        for m in cs.messages() {
            let slot = self.keys.slot(MESSAGE, &[m.peer.as_bytes(), &m.id]);
            let mut one = ChangeSet::new();
            one.add_message(m.clone());
            self.put(&mut batch, slot, MESSAGE, &backup::encode_set(&one))?;
        }
        for e in cs.outbox_added() {
            let slot = self.keys.slot(OUTBOX, &[&e.id]);
            let mut one = ChangeSet::new();
            one.add_outbox(e.clone());
            self.put(&mut batch, slot, OUTBOX, &backup::encode_set(&one))?;
        }
        for (id, index, data) in cs.attachment_chunks_added() {
            let slot = self.keys.slot(CHUNK, &[id, &index.to_be_bytes()]);
            let mut one = ChangeSet::new();
            one.put_attachment_chunk(*id, index, data.to_vec());
            self.put(&mut batch, slot, CHUNK, &backup::encode_set(&one))?;
        }
        for peer in cs.marked_read() {
            let slot = self.keys.slot(READ, &[peer.as_bytes()]);
            self.put(&mut batch, slot, READ, peer.as_bytes())?;
        }
        Ok(batch)
    }
}

/// The (kind, slot) of each thing a change set writes.
fn expected_slots(keys: &Keys, cs: &ChangeSet) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    for (ns, key, r) in cs.records() {
        if r.is_some() {
            let code = (ns as u32).to_be_bytes();
            out.push((RECORD, keys.slot(RECORD, &[&code, key])));
        }
    }
    for m in cs.messages() {
        out.push((MESSAGE, keys.slot(MESSAGE, &[m.peer.as_bytes(), &m.id])));
    }
    for e in cs.outbox_added() {
        out.push((OUTBOX, keys.slot(OUTBOX, &[&e.id])));
    }
    for (id, index, _) in cs.attachment_chunks_added() {
        out.push((CHUNK, keys.slot(CHUNK, &[id, &index.to_be_bytes()])));
    }
    out
}

impl KvStore for SealedStore {
    fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Cow<'_, Record>>, StoreError> {
        self.mem.get(ns, key)
    }

    fn keys(&self, ns: Namespace) -> Result<Vec<Vec<u8>>, StoreError> {
        self.mem.keys(ns)
    }

    /// Applies the change set in memory (all or nothing, with the core's
    /// checks) and queues its sealed writes as one batch.
    fn commit(&mut self, changes: ChangeSet) -> Result<(), StoreError> {
        let mut dropped = Vec::new();
        for id in changes.attachments_deleted() {
            for index in self.mem.attachment_chunks(id)? {
                dropped.push((*id, index));
            }
        }
        // Sealed before the memory changes, so a failure changes nothing.
        let seq = self.next_seq;
        let batch = self
            .writes(&changes, dropped)
            .map_err(|_| StoreError::Backend("sealing a change"))?;
        if let Err(e) = self.mem.commit(changes) {
            self.next_seq = seq;
            return Err(e);
        }
        if !batch.is_empty() {
            self.batches.push(batch);
        }
        Ok(())
    }

    fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        self.mem.conversations()
    }

    fn history(&self, peer: &Address, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.mem.history(peer, limit)
    }

    fn has_message(&self, peer: &Address, id: &MessageId) -> Result<bool, StoreError> {
        self.mem.has_message(peer, id)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.mem.outbox()
    }

    fn attachment_chunk(
        &self,
        id: &AttachmentId,
        index: u32,
    ) -> Result<Option<Cow<'_, [u8]>>, StoreError> {
        self.mem.attachment_chunk(id, index)
    }

    fn attachment_chunks(&self, id: &AttachmentId) -> Result<Vec<u32>, StoreError> {
        self.mem.attachment_chunks(id)
    }

    fn attachments(&self) -> Result<Vec<AttachmentId>, StoreError> {
        self.mem.attachments()
    }
}

/// The profile's unencrypted header: how the passphrase opens the
/// profile key. Holds no secret.
///
/// ```text
/// magic "POSTERN-WEB-PROF" 16 bytes (version 1)
/// memory_kib, iterations, parallelism   3 × u32 BE (Argon2id)
/// salt                                  16
/// nonce                                 24
/// XChaCha20-Poly1305(Argon2id(passphrase, salt), nonce,
///     aad = everything above, profile key)   48
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    params: kdf::KdfParams,
    salt: [u8; kdf::SALT_BYTES],
    nonce: [u8; aead::NONCE_BYTES],
    wrapped: Vec<u8>,
}

impl core::fmt::Debug for Header {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Header")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// The header's first bytes.
pub const HEADER_MAGIC: &[u8; 16] = b"POSTERN-WEB-PROF";
/// The header's length.
pub const HEADER_LEN: usize = 16 + 12 + kdf::SALT_BYTES + aead::NONCE_BYTES + 32 + aead::TAG_BYTES;

/// Why a passphrase did not open a profile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// The passphrase is not the profile's.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The header is not one (damaged, or another format).
    #[error("the profile's header is damaged")]
    Malformed,
}

impl Header {
    /// A new random profile key protected by `passphrase`.
    pub fn create<R: RngCore + CryptoRng>(
        passphrase: &[u8],
        params: kdf::KdfParams,
        rng: &mut R,
    ) -> Result<(Header, Zeroizing<[u8; 32]>), postern_core::Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        let h = Header::protect(&key, passphrase, params, rng)?;
        Ok((h, key))
    }

    /// The header protecting `key` with `passphrase` (a new salt).
    pub fn protect<R: RngCore + CryptoRng>(
        key: &[u8; 32],
        passphrase: &[u8],
        params: kdf::KdfParams,
        rng: &mut R,
    ) -> Result<Header, postern_core::Error> {
        let params = params.checked()?;
        let mut salt = [0u8; kdf::SALT_BYTES];
        rng.fill_bytes(&mut salt);
        let mut nonce = [0u8; aead::NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        let mut h = Header {
            params,
            salt,
            nonce,
            wrapped: Vec::new(),
        };
        let kek = kdf::derive_key(passphrase, &salt, params)?;
        h.wrapped = aead::seal(&kek, &nonce, &h.prefix(), key)?;
        Ok(h)
    }

    /// Its Argon2id parameters.
    pub fn params(&self) -> kdf::KdfParams {
        self.params
    }

    fn prefix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(HEADER_MAGIC);
        out.extend_from_slice(&self.params.memory_kib.to_be_bytes());
        out.extend_from_slice(&self.params.iterations.to_be_bytes());
        out.extend_from_slice(&self.params.parallelism.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.prefix();
        out.extend_from_slice(&self.wrapped);
        out
    }

    /// Reads a header (hostile input: its length, magic and parameters
    /// are checked before any work is done).
    pub fn parse(b: &[u8]) -> Result<Header, HeaderError> {
        if b.len() != HEADER_LEN {
            return Err(HeaderError::Malformed);
        }
        let (magic, rest) = b.split_at(16);
        if magic != HEADER_MAGIC {
            return Err(HeaderError::Malformed);
        }
        let u = |i: usize| -> Result<u32, HeaderError> {
            let s = rest.get(i * 4..i * 4 + 4).ok_or(HeaderError::Malformed)?;
            Ok(u32::from_be_bytes(
                s.try_into().map_err(|_| HeaderError::Malformed)?,
            ))
        };
        let params = kdf::KdfParams {
            memory_kib: u(0)?,
            iterations: u(1)?,
            parallelism: u(2)?,
        }
        .checked()
        .map_err(|_| HeaderError::Malformed)?;
        let rest = rest.get(12..).ok_or(HeaderError::Malformed)?;
        let (salt, rest) = rest
            .split_first_chunk::<{ kdf::SALT_BYTES }>()
            .ok_or(HeaderError::Malformed)?;
        let (nonce, wrapped) = rest
            .split_first_chunk::<{ aead::NONCE_BYTES }>()
            .ok_or(HeaderError::Malformed)?;
        Ok(Header {
            params,
            salt: *salt,
            nonce: *nonce,
            wrapped: wrapped.to_vec(),
        })
    }

    /// The profile key, if `passphrase` is the profile's (Argon2id: the
    /// slow step of unlocking).
    pub fn open(&self, passphrase: &[u8]) -> Result<Zeroizing<[u8; 32]>, HeaderError> {
        let kek = kdf::derive_key(passphrase, &self.salt, self.params)
            .map_err(|_| HeaderError::Malformed)?;
        let plain = Zeroizing::new(
            aead::open(&kek, &self.nonce, &self.prefix(), &self.wrapped)
                .map_err(|_| HeaderError::WrongPassphrase)?,
        );
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| HeaderError::Malformed)?;
        Ok(Zeroizing::new(key))
    }
}
