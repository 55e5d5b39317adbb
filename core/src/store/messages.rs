//! Messages and the outbox, as the store keeps them.

use zeroize::Zeroizing;

use crate::address::Address;
use crate::time::UnixTime;

/// A random 128-bit message id, chosen by the sender.
pub type MessageId = [u8; 16];

/// A random 128-bit attachment id.
pub type AttachmentId = [u8; 16];

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the peer.
    Incoming,
    /// Sent by us.
    Outgoing,
}

/// A message in a conversation. The body is the plaintext (secret).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The other party.
    pub peer: Address,
    /// Sender-chosen id; `(peer, id)` is unique.
    pub id: MessageId,
    /// Incoming or outgoing.
    pub direction: Direction,
    /// When it was sent or received (caller's clock).
    pub timestamp: UnixTime,
    /// The plaintext.
    pub body: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "StoredMessage({:?} {} at {}, {} bytes)",
            self.direction,
            self.peer,
            self.timestamp.millis(),
            self.body.len()
        )
    }
}

/// A ciphertext waiting to be sent and acknowledged.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The message id.
    pub id: MessageId,
    /// Recipient.
    pub peer: Address,
    /// The sealed ciphertext, ready for the transport.
    pub payload: Vec<u8>,
}

impl core::fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "OutboxEntry(to {}, {} bytes)",
            self.peer,
            self.payload.len()
        )
    }
}

/// One line of the conversation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The other party.
    pub peer: Address,
    /// How many messages are stored.
    pub messages: u64,
    /// Incoming messages since the conversation was last marked read
    /// (`ChangeSet::mark_read`).
    pub unread: u64,
    /// The most recent one.
    pub last: StoredMessage,
}
