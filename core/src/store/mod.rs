//! The record store the core reads and writes through.
//!
//! The core never touches a disk. It sees one narrow, synchronous trait,
//! [`KvStore`], holding opaque versioned [`Record`]s in a few namespaces.
//! Operations that change state do not write directly: they run against an
//! [`Overlay`] and hand back a [`ChangeSet`], which the caller commits in
//! one transaction together with whatever else belongs to the same step
//! (a decrypted message, an outbox entry). A failed operation therefore
//! changes nothing, and a crash leaves either all of a step or none of it.
//!
//! [`MemStore`] is the in-memory implementation used by tests, fuzzers and
//! the browser until it has persistent storage; the SQLCipher backend lives
//! outside the core.

use std::borrow::Cow;
use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::address::Address;
use crate::consts::{
    MAX_ATTACHMENT_CHUNK_BYTES, MAX_OUTBOX_ENTRIES, MAX_RECORD_BYTES, MAX_STORED_MESSAGE_BYTES,
    MEM_STORE_CAPACITY,
};
use crate::error::StoreError;

mod messages;
pub use messages::{
    AttachmentId, ConversationSummary, Direction, MessageId, OutboxEntry, StoredMessage,
};

/// Kinds of records. The discriminant is part of the on-disk key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Namespace {
    /// Our identity (single record, empty key).
    LocalIdentity = 1,
    /// Contacts, keyed by address.
    Contact = 2,
    /// libsignal session records, keyed by address.
    Session = 3,
    /// One-time EC prekeys, keyed by id (u32 BE).
    PreKey = 4,
    /// Signed EC prekeys, keyed by id.
    SignedPreKey = 5,
    /// Kyber prekeys, keyed by id.
    KyberPreKey = 6,
    /// Base keys seen with last-resort Kyber prekeys, keyed by Kyber id.
    KyberUsage = 7,
    /// Prekey pool bookkeeping (single record).
    PrekeyState = 8,
    /// Our mailbox queues, keyed by recipient id.
    Queue = 9,
    /// Where we send to each contact, keyed by address.
    Route = 10,
    /// Fragments of messages not yet complete, keyed by queue, message
    /// reference and index.
    Fragment = 11,
    /// Attachments announced by received messages, keyed by attachment id.
    Attachment = 12,
    /// Client settings (home relay, display name), keyed by name.
    Setting = 13,
    /// Onion packets waiting for a delivery acknowledgement, keyed by
    /// reply block id.
    PendingAck = 14,
    /// Messages we sealed that are not acknowledged yet, keyed by
    /// envelope id (so they can be sealed again).
    Sealed = 15,
    /// Which sealed message a blob carries, keyed by the blob's digest.
    SealedBlob = 16,
    /// How far each message we sent has got (queued, in the network,
    /// stored at the recipient's relay, delivered, failed), keyed by
    /// envelope id.
    Delivery = 17,
}

impl Namespace {
    /// Every namespace.
    pub const ALL: [Namespace; 17] = [
        Namespace::LocalIdentity,
        Namespace::Contact,
        Namespace::Session,
        Namespace::PreKey,
        Namespace::SignedPreKey,
        Namespace::KyberPreKey,
        Namespace::KyberUsage,
        Namespace::PrekeyState,
        Namespace::Queue,
        Namespace::Route,
        Namespace::Fragment,
        Namespace::Attachment,
        Namespace::Setting,
        Namespace::PendingAck,
        Namespace::Sealed,
        Namespace::SealedBlob,
        Namespace::Delivery,
    ];

    /// The namespace with this stable code, if any.
    pub fn from_code(code: u32) -> Option<Namespace> {
        Namespace::ALL.into_iter().find(|ns| *ns as u32 == code)
    }

    /// Stable name for errors and schema tables.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::LocalIdentity => "local_identity",
            Namespace::Contact => "contact",
            Namespace::Session => "session",
            Namespace::PreKey => "prekey",
            Namespace::SignedPreKey => "signed_prekey",
            Namespace::KyberPreKey => "kyber_prekey",
            Namespace::KyberUsage => "kyber_usage",
            Namespace::PrekeyState => "prekey_state",
            Namespace::Queue => "queue",
            Namespace::Route => "route",
            Namespace::Fragment => "fragment",
            Namespace::Attachment => "attachment",
            Namespace::Setting => "setting",
            Namespace::PendingAck => "pending_ack",
            Namespace::Sealed => "sealed",
            Namespace::SealedBlob => "sealed_blob",
            Namespace::Delivery => "delivery",
        }
    }

    /// The schema version this build writes for the namespace.
    pub fn current_schema(self) -> u16 {
        1
    }
}

/// A stored value: a schema version and opaque bytes (zeroized on drop,
/// since many records hold secret keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// Schema version of `bytes`.
    pub schema: u16,
    /// The encoded record.
    pub bytes: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for Record {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Record(schema {}, {} bytes)",
            self.schema,
            self.bytes.len()
        )
    }
}

impl Record {
    /// A record at the current schema of `ns`.
    pub fn current(ns: Namespace, bytes: Vec<u8>) -> Record {
        Record {
            schema: ns.current_schema(),
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Checks the schema and size bound and returns the bytes.
    pub fn checked(&self, ns: Namespace) -> Result<&[u8], StoreError> {
        if self.schema > ns.current_schema() {
            return Err(StoreError::SchemaTooNew {
                namespace: ns.name(),
                found: self.schema,
                supported: ns.current_schema(),
            });
        }
        if self.bytes.len() > MAX_RECORD_BYTES {
            return Err(StoreError::Corrupt {
                namespace: ns.name(),
            });
        }
        Ok(&self.bytes)
    }
}

/// The narrow storage interface of the core.
pub trait KvStore {
    /// Reads one record (borrowed where the store holds it in memory, so
    /// that secret records are not copied needlessly).
    fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Cow<'_, Record>>, StoreError>;
    /// Lists the keys of a namespace, in ascending order.
    fn keys(&self, ns: Namespace) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Applies a change set atomically: all of it or none of it.
    fn commit(&mut self, changes: ChangeSet) -> Result<(), StoreError>;
    /// Every conversation with its message count and last message, most
    /// recent first.
    fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError>;
    /// The last `limit` messages with `peer`, oldest first.
    fn history(&self, peer: &Address, limit: usize) -> Result<Vec<StoredMessage>, StoreError>;
    /// Whether a message with this id from/to `peer` is stored.
    fn has_message(&self, peer: &Address, id: &MessageId) -> Result<bool, StoreError>;
    /// Messages waiting to be sent or acknowledged, oldest first.
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError>;
    /// One stored chunk of an attachment.
    fn attachment_chunk(
        &self,
        id: &AttachmentId,
        index: u32,
    ) -> Result<Option<Cow<'_, [u8]>>, StoreError>;
    /// The indices of the chunks stored for an attachment, ascending (so a
    /// transfer resumes after a restart and asks only for what is missing).
    fn attachment_chunks(&self, id: &AttachmentId) -> Result<Vec<u32>, StoreError>;
    /// Every attachment that has at least one chunk stored.
    fn attachments(&self) -> Result<Vec<AttachmentId>, StoreError>;
}

/// Writes produced by one operation, to be committed together.
#[derive(Debug, Default, Clone)]
pub struct ChangeSet {
    ops: BTreeMap<Namespace, BTreeMap<Vec<u8>, Option<Record>>>,
    messages: Vec<StoredMessage>,
    outbox_add: Vec<OutboxEntry>,
    outbox_remove: Vec<MessageId>,
    chunks: Vec<(AttachmentId, u32, Zeroizing<Vec<u8>>)>,
    drop_attachments: Vec<AttachmentId>,
    read: Vec<Address>,
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> ChangeSet {
        ChangeSet::default()
    }

    /// Records a write.
    pub fn put(&mut self, ns: Namespace, key: &[u8], record: Record) {
        self.ops
            .entry(ns)
            .or_default()
            .insert(key.to_vec(), Some(record));
    }

    /// Records a deletion.
    pub fn delete(&mut self, ns: Namespace, key: &[u8]) {
        self.ops.entry(ns).or_default().insert(key.to_vec(), None);
    }

    /// Adds another change set's writes after this one's.
    pub fn extend(&mut self, other: ChangeSet) {
        for (ns, ops) in other.ops {
            self.ops.entry(ns).or_default().extend(ops);
        }
        self.messages.extend(other.messages);
        self.outbox_add.extend(other.outbox_add);
        self.outbox_remove.extend(other.outbox_remove);
        self.chunks.extend(other.chunks);
        self.drop_attachments.extend(other.drop_attachments);
        self.read.extend(other.read);
    }

    /// Stores one chunk of an attachment (replacing one with the same index).
    pub fn put_attachment_chunk(&mut self, id: AttachmentId, index: u32, bytes: Vec<u8>) {
        self.chunks.push((id, index, Zeroizing::new(bytes)));
    }

    /// Deletes every chunk of an attachment (applied before this set's puts).
    pub fn delete_attachment(&mut self, id: AttachmentId) {
        self.drop_attachments.push(id);
    }

    /// The attachment chunks this change set stores.
    pub fn attachment_chunks_added(&self) -> impl Iterator<Item = (&AttachmentId, u32, &[u8])> {
        self.chunks.iter().map(|(id, i, b)| (id, *i, b.as_slice()))
    }

    /// The attachments this change set deletes.
    pub fn attachments_deleted(&self) -> &[AttachmentId] {
        &self.drop_attachments
    }

    /// Stores a message in the same commit (e.g. the plaintext a ratchet
    /// step decrypted, so that both are kept or neither is).
    pub fn add_message(&mut self, m: StoredMessage) {
        self.messages.push(m);
    }

    /// Queues an outgoing ciphertext in the same commit as the ratchet step
    /// that produced it.
    pub fn add_outbox(&mut self, e: OutboxEntry) {
        self.outbox_add.push(e);
    }

    /// Removes an acknowledged outbox entry.
    pub fn remove_outbox(&mut self, id: MessageId) {
        self.outbox_remove.push(id);
    }

    /// Marks every incoming message of the conversation with `peer` read
    /// (its unread count goes to zero; applied after this set's messages).
    pub fn mark_read(&mut self, peer: Address) {
        self.read.push(peer);
    }

    /// The conversations this change set marks read.
    pub fn marked_read(&self) -> &[Address] {
        &self.read
    }

    /// The messages this change set stores.
    pub fn messages(&self) -> &[StoredMessage] {
        &self.messages
    }

    /// The outbox entries this change set adds.
    pub fn outbox_added(&self) -> &[OutboxEntry] {
        &self.outbox_add
    }

    /// The outbox entries this change set removes.
    pub fn outbox_removed(&self) -> &[MessageId] {
        &self.outbox_remove
    }

    /// Checks the bounds of the messages and outbox entries.
    pub fn check_bounds(&self) -> Result<(), StoreError> {
        if self
            .chunks
            .iter()
            .any(|(_, _, b)| b.len() > MAX_ATTACHMENT_CHUNK_BYTES)
        {
            return Err(StoreError::TooLarge {
                limit: MAX_ATTACHMENT_CHUNK_BYTES,
            });
        }
        let too_big = self
            .messages
            .iter()
            .any(|m| m.body.len() > MAX_STORED_MESSAGE_BYTES)
            || self
                .outbox_add
                .iter()
                .any(|e| e.payload.len() > MAX_STORED_MESSAGE_BYTES);
        if too_big {
            return Err(StoreError::TooLarge {
                limit: MAX_STORED_MESSAGE_BYTES,
            });
        }
        Ok(())
    }

    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.ops.values().all(BTreeMap::is_empty)
            && self.messages.is_empty()
            && self.outbox_add.is_empty()
            && self.outbox_remove.is_empty()
            && self.chunks.is_empty()
            && self.drop_attachments.is_empty()
            && self.read.is_empty()
    }

    /// Number of record writes and deletions.
    pub fn len(&self) -> usize {
        self.ops.values().map(BTreeMap::len).sum()
    }

    /// The record writes, by namespace (`None` deletes).
    pub fn records(&self) -> impl Iterator<Item = (Namespace, &[u8], Option<&Record>)> {
        self.iter()
    }

    /// The writes (`None` deletes).
    pub fn iter(&self) -> impl Iterator<Item = (Namespace, &[u8], Option<&Record>)> {
        self.ops.iter().flat_map(|(ns, ops)| {
            ops.iter()
                .map(move |(k, v)| (*ns, k.as_slice(), v.as_ref()))
        })
    }

    /// What this change set says about a key: `None` if untouched,
    /// `Some(None)` if deleted.
    pub fn lookup(&self, ns: Namespace, key: &[u8]) -> Option<Option<&Record>> {
        self.ops.get(&ns)?.get(key).map(|v| v.as_ref())
    }
}

/// A view of a store with uncommitted changes on top.
pub struct Overlay<'a> {
    base: &'a dyn KvStore,
    changes: ChangeSet,
}

impl core::fmt::Debug for Overlay<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Overlay({} pending changes)", self.changes.len())
    }
}

impl<'a> Overlay<'a> {
    /// A view of `base` with no changes yet.
    pub fn new(base: &'a dyn KvStore) -> Self {
        Overlay {
            base,
            changes: ChangeSet::new(),
        }
    }

    /// Reads through the pending changes to the base store.
    pub fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Cow<'_, Record>>, StoreError> {
        match self.changes.lookup(ns, key) {
            Some(v) => Ok(v.map(Cow::Borrowed)),
            None => self.base.get(ns, key),
        }
    }

    /// Lists keys including pending changes.
    pub fn keys(&self, ns: Namespace) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> =
            self.base.keys(ns)?.into_iter().collect();
        for (n, k, v) in self.changes.iter() {
            if n == ns {
                if v.is_some() {
                    keys.insert(k.to_vec());
                } else {
                    keys.remove(k);
                }
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Stages a write.
    pub fn put(&mut self, ns: Namespace, key: &[u8], record: Record) {
        self.changes.put(ns, key, record);
    }

    /// Stages a deletion.
    pub fn delete(&mut self, ns: Namespace, key: &[u8]) {
        self.changes.delete(ns, key);
    }

    /// The staged changes.
    pub fn into_changes(self) -> ChangeSet {
        self.changes
    }

    /// Stages the writes of a change set produced against this overlay.
    pub fn apply(&mut self, changes: ChangeSet) {
        self.changes.extend(changes);
    }
}

/// An overlay reads its staged records; messages, outbox and attachment
/// chunks are read from the base store only (staged ones are not visible
/// until committed).
impl KvStore for Overlay<'_> {
    fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Cow<'_, Record>>, StoreError> {
        Overlay::get(self, ns, key)
    }
    fn keys(&self, ns: Namespace) -> Result<Vec<Vec<u8>>, StoreError> {
        Overlay::keys(self, ns)
    }
    fn commit(&mut self, changes: ChangeSet) -> Result<(), StoreError> {
        self.apply(changes);
        Ok(())
    }
    fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        self.base.conversations()
    }
    fn history(&self, peer: &Address, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.base.history(peer, limit)
    }
    fn has_message(&self, peer: &Address, id: &MessageId) -> Result<bool, StoreError> {
        self.base.has_message(peer, id)
    }
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.base.outbox()
    }
    fn attachment_chunk(
        &self,
        id: &AttachmentId,
        index: u32,
    ) -> Result<Option<Cow<'_, [u8]>>, StoreError> {
        self.base.attachment_chunk(id, index)
    }
    fn attachment_chunks(&self, id: &AttachmentId) -> Result<Vec<u32>, StoreError> {
        self.base.attachment_chunks(id)
    }
    fn attachments(&self) -> Result<Vec<AttachmentId>, StoreError> {
        self.base.attachments()
    }
}

/// In-memory [`KvStore`], bounded by [`MEM_STORE_CAPACITY`] records.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    map: BTreeMap<Namespace, BTreeMap<Vec<u8>, Record>>,
    len: usize,
    messages: Vec<StoredMessage>,
    /// `(peer, id)` of every message, so that a commit's duplicate check
    /// does not scan them all.
    ids: std::collections::BTreeSet<(Address, MessageId)>,
    outbox: Vec<OutboxEntry>,
    chunks: BTreeMap<(AttachmentId, u32), Zeroizing<Vec<u8>>>,
    unread: BTreeMap<Address, u64>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl KvStore for MemStore {
    fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Cow<'_, Record>>, StoreError> {
        Ok(self
            .map
            .get(&ns)
            .and_then(|m| m.get(key))
            .map(Cow::Borrowed))
    }

    fn keys(&self, ns: Namespace) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .map
            .get(&ns)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn commit(&mut self, changes: ChangeSet) -> Result<(), StoreError> {
        changes.check_bounds()?;
        let contains =
            |ns: Namespace, k: &[u8]| self.map.get(&ns).is_some_and(|m| m.contains_key(k));
        let added = changes
            .iter()
            .filter(|(ns, k, v)| v.is_some() && !contains(*ns, k))
            .count()
            + changes.messages.len();
        if self.len.saturating_add(added) > MEM_STORE_CAPACITY {
            return Err(StoreError::Full {
                limit: MEM_STORE_CAPACITY,
            });
        }
        if self.outbox.len().saturating_add(changes.outbox_add.len()) > MAX_OUTBOX_ENTRIES {
            return Err(StoreError::Full {
                limit: MAX_OUTBOX_ENTRIES,
            });
        }
        let mut in_set = std::collections::BTreeSet::new();
        for m in &changes.messages {
            if !in_set.insert((m.peer, m.id)) || self.ids.contains(&(m.peer, m.id)) {
                return Err(StoreError::DuplicateMessage);
            }
        }
        for (ns, ops) in changes.ops {
            let m = self.map.entry(ns).or_default();
            for (k, v) in ops {
                match v {
                    Some(r) => {
                        if m.insert(k, r).is_none() {
                            self.len += 1;
                        }
                    }
                    None => {
                        if m.remove(&k).is_some() {
                            self.len -= 1;
                        }
                    }
                }
            }
        }
        self.len += changes.messages.len();
        for m in &changes.messages {
            if m.direction == Direction::Incoming {
                *self.unread.entry(m.peer).or_default() += 1;
            }
        }
        for peer in &changes.read {
            self.unread.remove(peer);
        }
        self.ids.append(&mut in_set);
        self.messages.extend(changes.messages);
        self.outbox
            .retain(|e| !changes.outbox_remove.contains(&e.id));
        self.outbox.extend(changes.outbox_add);
        for id in &changes.drop_attachments {
            self.chunks.retain(|(a, _), _| a != id);
        }
        for (id, i, b) in changes.chunks {
            self.chunks.insert((id, i), b);
        }
        Ok(())
    }

    fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        let mut by_peer: BTreeMap<Address, (u64, &StoredMessage)> = BTreeMap::new();
        for m in &self.messages {
            let e = by_peer.entry(m.peer).or_insert((0, m));
            e.0 += 1;
            e.1 = m;
        }
        let mut out: Vec<ConversationSummary> = by_peer
            .into_iter()
            .map(|(peer, (messages, last))| ConversationSummary {
                peer,
                messages,
                unread: self.unread.get(&peer).copied().unwrap_or(0),
                last: last.clone(),
            })
            .collect();
        out.sort_by_key(|c| core::cmp::Reverse(c.last.timestamp));
        Ok(out)
    }

    fn history(&self, peer: &Address, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let all: Vec<&StoredMessage> = self.messages.iter().filter(|m| m.peer == *peer).collect();
        let skip = all.len().saturating_sub(limit);
        Ok(all.into_iter().skip(skip).cloned().collect())
    }

    fn has_message(&self, peer: &Address, id: &MessageId) -> Result<bool, StoreError> {
        Ok(self.ids.contains(&(*peer, *id)))
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self.outbox.clone())
    }

    fn attachment_chunk(
        &self,
        id: &AttachmentId,
        index: u32,
    ) -> Result<Option<Cow<'_, [u8]>>, StoreError> {
        Ok(self
            .chunks
            .get(&(*id, index))
            .map(|b| Cow::Borrowed(b.as_slice())))
    }

    fn attachment_chunks(&self, id: &AttachmentId) -> Result<Vec<u32>, StoreError> {
        Ok(self
            .chunks
            .range((*id, 0)..=(*id, u32::MAX))
            .map(|((_, i), _)| *i)
            .collect())
    }

    fn attachments(&self) -> Result<Vec<AttachmentId>, StoreError> {
        let mut ids: Vec<AttachmentId> = self.chunks.keys().map(|(id, _)| *id).collect();
        ids.dedup();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_newer_schema() {
        let r = Record {
            schema: 99,
            bytes: Zeroizing::new(vec![1]),
        };
        assert!(matches!(
            r.checked(Namespace::Session),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn overlay_reads_its_own_writes_and_deletes() {
        let mut s = MemStore::new();
        let mut c = ChangeSet::new();
        c.put(
            Namespace::PreKey,
            b"a",
            Record::current(Namespace::PreKey, vec![1]),
        );
        c.put(
            Namespace::PreKey,
            b"b",
            Record::current(Namespace::PreKey, vec![2]),
        );
        s.commit(c).unwrap();
        let mut o = Overlay::new(&s);
        o.delete(Namespace::PreKey, b"a");
        o.put(
            Namespace::PreKey,
            b"c",
            Record::current(Namespace::PreKey, vec![3]),
        );
        assert!(o.get(Namespace::PreKey, b"a").unwrap().is_none());
        assert_eq!(
            o.keys(Namespace::PreKey).unwrap(),
            vec![b"b".to_vec(), b"c".to_vec()]
        );
        // Nothing reached the base store.
        assert!(s.get(Namespace::PreKey, b"a").unwrap().is_some());
        let changes = o.into_changes();
        s.commit(changes).unwrap();
        assert_eq!(
            s.keys(Namespace::PreKey).unwrap(),
            vec![b"b".to_vec(), b"c".to_vec()]
        );
    }

    #[test]
    fn unread_counts_follow_incoming_messages_and_read_marks() {
        let (bob, carol) = (Address::from_bytes([2; 16]), Address::from_bytes([3; 16]));
        let msg = |peer, n: u8, direction| StoredMessage {
            peer,
            id: [n; 16],
            direction,
            timestamp: crate::time::UnixTime(u64::from(n)),
            body: Zeroizing::new(vec![n]),
        };
        let mut s = MemStore::new();
        let mut c = ChangeSet::new();
        c.add_message(msg(bob, 1, Direction::Incoming));
        c.add_message(msg(bob, 2, Direction::Outgoing));
        c.add_message(msg(carol, 3, Direction::Incoming));
        s.commit(c).unwrap();
        let unread = |s: &MemStore, p| {
            s.conversations()
                .unwrap()
                .into_iter()
                .find(|c| c.peer == p)
                .unwrap()
                .unread
        };
        assert_eq!((unread(&s, bob), unread(&s, carol)), (1, 1));
        let mut c = ChangeSet::new();
        c.add_message(msg(carol, 4, Direction::Incoming));
        c.mark_read(carol);
        s.commit(c).unwrap();
        assert_eq!((unread(&s, bob), unread(&s, carol)), (1, 0));
    }

    #[test]
    fn record_debug_does_not_show_bytes() {
        let r = Record::current(Namespace::LocalIdentity, vec![0xAB; 8]);
        let s = format!("{r:?}");
        assert!(!s.contains("171") && !s.to_lowercase().contains("ab, "));
    }
}
