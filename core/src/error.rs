//! Postern's typed errors.
//!
//! Every fallible function in the core returns [`Error`]. Each variant says
//! what went wrong with enough context to act on, and [`Error::kind`] sorts
//! it into a coarse [`ErrorKind`] so that callers can decide what to do
//! (drop and count a hostile input, surface a storage fault, fix a caller
//! bug) without matching every variant.

use crate::address::Address;

/// Coarse classification of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer (or whoever produced the input) sent something invalid,
    /// tampered, replayed or otherwise unacceptable. Drop it and count it.
    PeerMisbehaved,
    /// A trust decision is needed from the user before anything more can
    /// happen with this contact (e.g. its identity key changed).
    NeedsUserDecision,
    /// The local store failed or holds something it should not.
    Storage,
    /// The caller used the API wrongly (unknown contact, limit exceeded).
    Usage,
    /// A relay or the network could not be reached, timed out or refused
    /// for now: worth trying again later. (The core does no I/O and never
    /// reports this itself; the network and client crates do.)
    Network,
    /// An internal invariant was broken: a bug in Postern. Never retried
    /// as if it were a network failure.
    Bug,
}

/// Every error type in Postern reports a coarse [`ErrorKind`], so that a
/// caller several crates away (a shell choosing an exit code, a loop
/// deciding whether to retry) never has to match another crate's variants.
pub trait HasKind {
    /// The coarse class of this error.
    fn kind(&self) -> ErrorKind;
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        Error::kind(self)
    }
}

impl HasKind for StoreError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Storage
    }
}

/// Errors raised by the local record store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store reached its configured capacity.
    #[error("store is full ({limit} records)")]
    Full {
        /// The capacity that was reached.
        limit: usize,
    },
    /// A record was written by a newer Postern than this one.
    #[error("{namespace} record has schema {found}, this build reads up to {supported}")]
    SchemaTooNew {
        /// Which kind of record.
        namespace: &'static str,
        /// Schema version found.
        found: u16,
        /// Highest schema version this build understands.
        supported: u16,
    },
    /// A record could not be decoded.
    #[error("{namespace} record is corrupt")]
    Corrupt {
        /// Which kind of record.
        namespace: &'static str,
    },
    /// The storage backend failed.
    #[error("storage backend failed: {0}")]
    Backend(&'static str),
    /// A message or outbox payload exceeded its bound.
    #[error("stored message larger than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// A message with the same id from the same peer is already stored.
    #[error("message already stored")]
    DuplicateMessage,
}

/// Everything that can go wrong in the Postern core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- decoding (PeerMisbehaved) ----
    /// An input exceeded its size bound before it was parsed.
    #[error("{what}: {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An input could not be parsed.
    #[error("{what}: malformed")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
    },
    /// An input declares a format version this build does not speak.
    #[error("{what}: unsupported version {version}")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version it declared.
        version: u32,
    },
    /// Padding of a padded plaintext was not canonical.
    #[error("invalid padding")]
    BadPadding,

    // ---- bundles (PeerMisbehaved) ----
    /// A prekey bundle carried no Kyber prekey: Postern never falls back to X3DH.
    #[error("prekey bundle has no Kyber prekey")]
    BundleWithoutKyber,
    /// A signature in a prekey bundle did not verify.
    #[error("prekey bundle: bad signature on the {which}")]
    BadBundleSignature {
        /// Which signed element failed.
        which: &'static str,
    },
    /// A first-contact bundle claims an address that its identity key does not derive.
    #[error("address does not belong to the presented identity key")]
    AddressMismatch,

    // ---- messages (PeerMisbehaved) ----
    /// A message failed authentication or decryption (tampered, or not for us).
    #[error("message could not be decrypted: {reason}")]
    DecryptionFailed {
        /// What libsignal reported, without any message content.
        reason: &'static str,
    },
    /// A message was already decrypted once.
    #[error("duplicate message")]
    DuplicateMessage,
    /// A PreKey message refers to a prekey we do not have (used or never issued).
    #[error("message refers to an unknown or already used prekey")]
    UnknownPrekey,
    /// A one-time use of a last-resort Kyber prekey was replayed.
    #[error("replayed PreKey message")]
    ReplayedPrekeyMessage,
    /// A sealed-sender message came from a sender we have no pinned trust root for.
    #[error("sealed sender: no trust root pinned for the sender")]
    UnknownTrustRoot,
    /// The sender certificate did not chain to the pinned trust root, or has expired.
    #[error("sealed sender: certificate rejected ({reason})")]
    SenderCertificateRejected {
        /// Why: "expired", "untrusted chain", "identity mismatch".
        reason: &'static str,
    },

    // ---- trust (NeedsUserDecision) ----
    /// A known contact presented a different identity key. Nothing is sent to
    /// or accepted from it until the user accepts the new key.
    #[error("identity key of {peer} changed; the new key must be accepted first")]
    IdentityKeyChanged {
        /// The contact whose key changed.
        peer: Address,
    },

    // ---- usage ----
    /// No session exists with that peer.
    #[error("no session with {peer}")]
    NoSession {
        /// The peer.
        peer: Address,
    },
    /// The peer is not a contact.
    #[error("{peer} is not a contact")]
    UnknownContact {
        /// The peer.
        peer: Address,
    },
    /// The profile has no identity yet.
    #[error("no local identity")]
    NoIdentity,
    /// A plaintext is larger than the largest padding bucket.
    #[error("plaintext of {len} bytes exceeds the limit of {max}")]
    PlaintextTooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A scanned safety-number code was not a safety-number code.
    #[error("scanned code is not a Postern safety number")]
    BadSafetyNumberCode,
    /// A backup can only be restored into an empty profile.
    #[error("the profile is not empty")]
    ProfileNotEmpty,
    /// A text message is longer than the limit.
    #[error("text of {len} bytes is longer than the limit of {max}")]
    TextTooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A chunk belongs to another attachment.
    #[error("chunk belongs to another attachment")]
    ChunkFromOtherAttachment,
    /// A chunk's index is not below the attachment's chunk count.
    #[error("chunk index {index} is past the total of {total}")]
    ChunkIndexOutOfRange {
        /// The index.
        index: u32,
        /// The chunk count.
        total: u32,
    },
    /// A reassembled attachment does not match its digest.
    #[error("attachment does not match its digest")]
    DigestMismatch,
    /// Chunks are still missing.
    #[error("{missing} attachment chunk(s) missing")]
    AttachmentIncomplete {
        /// How many.
        missing: usize,
    },
    /// A message's body kind is unknown to this build (sent by a newer
    /// Postern, or garbage).
    #[error("unsupported message kind")]
    UnsupportedMessageKind,
    /// A prekey id space was exhausted.
    #[error("prekey id space exhausted")]
    PrekeyIdsExhausted,

    // ---- mailboxes and invitations ----
    /// The invitation has expired.
    #[error("the invitation has expired")]
    InvitationExpired,
    /// The invitation was already accepted (it is one-time).
    #[error("the invitation was already used")]
    InvitationUsed,
    /// The invitation comes from someone who is already a contact.
    #[error("already a contact")]
    AlreadyContact,
    /// No queue is known for sending to this contact.
    #[error("no route to {peer}")]
    NoRoute {
        /// The contact.
        peer: Address,
    },
    /// A blob for a queue we do not have.
    #[error("unknown queue")]
    UnknownQueue,
    /// An attachment chunk for an attachment no message announced.
    #[error("chunk of an unknown attachment")]
    UnknownAttachment,
    /// A message that does not belong where it arrived (another contact's
    /// queue, a non-introduction on an invitation queue, ...).
    #[error("unexpected message for this queue")]
    UnexpectedMessage,
    /// Too many packets wait for delivery acknowledgements.
    #[error("too many packets wait for a delivery acknowledgement")]
    TooManyUnacknowledged,
    /// No onion path can be built from the directory.
    #[error("no onion path: {reason}")]
    NoPath {
        /// Why.
        reason: &'static str,
    },
    /// An onion packet failed to decode or authenticate at this hop.
    #[error("onion packet rejected: {reason}")]
    BadPacket {
        /// Which check failed.
        reason: &'static str,
    },
    /// Too many incomplete messages wait in one queue.
    #[error("too many incomplete messages in one queue")]
    TooManyPendingMessages,

    // ---- directory (PeerMisbehaved) ----
    /// A directory or relay descriptor failed a check (signatures, ids,
    /// addresses, bounds); `reason` names the check.
    #[error("directory rejected: {reason}")]
    DirectoryRejected {
        /// Which check failed.
        reason: &'static str,
    },
    /// A directory whose validity has ended.
    #[error("directory expired")]
    DirectoryExpired,

    // ---- storage ----
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),

    // ---- bug ----
    /// An internal invariant did not hold. Please report it.
    #[error("internal error: {0}")]
    Bug(&'static str),
}

impl Error {
    /// The coarse class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::TooLarge { .. }
            | Error::Malformed { .. }
            | Error::UnsupportedVersion { .. }
            | Error::BadPadding
            | Error::BundleWithoutKyber
            | Error::BadBundleSignature { .. }
            | Error::AddressMismatch
            | Error::DecryptionFailed { .. }
            | Error::DuplicateMessage
            | Error::UnknownPrekey
            | Error::ReplayedPrekeyMessage
            | Error::UnknownTrustRoot
            | Error::SenderCertificateRejected { .. }
            | Error::UnsupportedMessageKind
            | Error::ChunkFromOtherAttachment
            | Error::ChunkIndexOutOfRange { .. }
            | Error::DigestMismatch
            | Error::InvitationUsed
            | Error::UnknownAttachment
            | Error::UnexpectedMessage
            | Error::TooManyPendingMessages
            | Error::BadPacket { .. }
            | Error::DirectoryRejected { .. }
            | Error::DirectoryExpired => ErrorKind::PeerMisbehaved,
            Error::IdentityKeyChanged { .. } => ErrorKind::NeedsUserDecision,
            Error::NoSession { .. }
            | Error::UnknownContact { .. }
            | Error::NoIdentity
            | Error::PlaintextTooLarge { .. }
            | Error::BadSafetyNumberCode
            | Error::ProfileNotEmpty
            | Error::TextTooLong { .. }
            | Error::AttachmentIncomplete { .. }
            | Error::PrekeyIdsExhausted
            | Error::InvitationExpired
            | Error::AlreadyContact
            | Error::NoRoute { .. }
            | Error::UnknownQueue
            | Error::NoPath { .. }
            | Error::TooManyUnacknowledged => ErrorKind::Usage,
            Error::Store(_) => ErrorKind::Storage,
            Error::Bug(_) => ErrorKind::Bug,
        }
    }
}

/// Result alias for the core.
pub type Result<T, E = Error> = core::result::Result<T, E>;
