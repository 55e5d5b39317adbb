//! What a shell's user interface and the [`Service`](crate::Service) say to
//! each other: requests in, updates out. Plain values: a view draws them
//! without touching the store or the network.

use postern_core::courier::DeliveryState;
use postern_core::{Address, ErrorKind, UnixTime};

/// A message's envelope id.
pub type MessageId = [u8; 16];

/// What the user asks for.
#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Request {
    /// Everything again: who we are, contacts, status.
    Refresh,
    /// Show the conversation with a contact ([`Update::Conversation`]); its
    /// incoming messages count as read.
    Open(Address),
    /// No conversation is shown any more.
    Close,
    /// The messages shown in the open conversation were read.
    Read(Address),
    /// Send a text.
    SendText {
        /// To whom.
        to: Address,
        /// What.
        text: String,
        /// The message it answers.
        reply_to: Option<MessageId>,
    },
    /// Send a file: an image (re-encoded, metadata dropped), a voice clip
    /// (`voice`: Opus in Ogg, checked) or any other file.
    SendFile {
        /// To whom.
        to: Address,
        /// Its name (a file is labelled by it; nothing is decided by it).
        name: String,
        /// Its contents.
        bytes: Vec<u8>,
        /// Send as a voice clip.
        voice: bool,
    },
    /// Send a failed message again.
    Retry {
        /// Its contact.
        to: Address,
        /// The message.
        id: MessageId,
    },
    /// Make a one-time invitation ([`Update::Invitation`]).
    CreateInvite,
    /// Accept an invitation link (pasted or scanned).
    AcceptInvite(String),
    /// Accept the new identity key of a contact whose invitation carried
    /// one ([`Update::KeyChanged`] after [`Request::AcceptInvite`]): the
    /// user compared safety numbers by a channel they trust.
    AcceptNewKey(Address),
    /// Read a QR code out of an image (a file, a paste) and act on it.
    Scan {
        /// The image.
        image: Image,
        /// What the code should be.
        purpose: Purpose,
    },
    /// Show the safety number with a contact ([`Update::Safety`]).
    Safety(Address),
    /// The user compared the 60 digits by other means and confirms them.
    ConfirmVerified(Address),
    /// Fetch a received (or sent) attachment's bytes, checked against its
    /// digest ([`Update::AttachmentBytes`]), to save or to show.
    Attachment {
        /// Its contact.
        peer: Address,
        /// The message that carries it.
        id: MessageId,
    },
}

/// An image to scan.
#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Image {
    /// A JPEG or PNG file's bytes.
    File(Vec<u8>),
    /// Greyscale pixels (a pasted image), `width * height` bytes.
    Luma {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// One byte per pixel, row-major.
        pixels: Vec<u8>,
    },
}

/// What a scanned code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Purpose {
    /// An invitation link.
    Invitation,
    /// A contact's safety-number code, to verify them.
    Verify(Address),
}

/// What the user interface is told.
#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Update {
    /// Who we are.
    Me(MeView),
    /// Every contact, most recent conversation first.
    Contacts(Vec<ContactView>),
    /// The conversation asked for with [`Request::Open`], oldest first.
    Conversation {
        /// The contact.
        peer: Address,
        /// Its messages.
        messages: Vec<MessageView>,
    },
    /// A message to add to (or replace by id in) its conversation.
    Message(MessageView),
    /// Messages of this conversation changed in ways not told one by one
    /// (some failed): ask for it again ([`Request::Open`]) if it is shown.
    Stale(Address),
    /// A message we sent got further (or failed).
    Delivery {
        /// Its contact.
        peer: Address,
        /// The message.
        id: MessageId,
        /// How far it got.
        state: DeliveryState,
    },
    /// An attachment transfer moved on.
    Progress {
        /// Its contact.
        peer: Address,
        /// The message that carries it.
        id: MessageId,
        /// Chunks done (sent, or received and stored).
        done: usize,
        /// Chunks in all.
        total: usize,
    },
    /// A one-time invitation to show as a link and a QR code.
    Invitation {
        /// The `postern:` link.
        link: String,
    },
    /// Someone accepted our invitation, or we accepted theirs.
    ContactAdded {
        /// The contact.
        peer: Address,
        /// The name they suggested.
        name: String,
    },
    /// A safety number to show.
    Safety(SafetyView),
    /// A contact is now verified.
    Verified(Address),
    /// A scanned safety-number code did not match: do not trust this
    /// contact until the user finds out why.
    Mismatch(Address),
    /// A contact's identity key changed: nothing from or to them until
    /// the user accepts a new key (from a new invitation of theirs).
    KeyChanged(Address),
    /// The contact's new key was accepted: talking again (unverified).
    KeyAccepted(Address),
    /// An attachment's bytes, checked against its digest.
    AttachmentBytes {
        /// Its contact.
        peer: Address,
        /// The message that carries it.
        id: MessageId,
        /// The name to save it under.
        name: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The connection and privacy state.
    Status(StatusView),
    /// A request failed.
    Failed(Failure),
}

/// Why a request failed, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Failure {
    /// What was being done ("send", "accept the invitation", …).
    pub action: String,
    /// Why, in Postern's words (never text from the network).
    pub reason: String,
    /// The kind: a network failure may be retried, a usage error is the
    /// user's to fix, a decision is the user's to make.
    pub kind: ErrorKind,
}

/// Who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MeView {
    /// Our address.
    pub address: Address,
    /// The name we suggest to contacts (kept on this device).
    pub name: String,
    /// The home relay's address, if set.
    pub home: Option<String>,
}

/// A contact in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ContactView {
    /// Its address.
    pub address: Address,
    /// The name it suggested (may be empty).
    pub name: String,
    /// Whether the user verified its safety number.
    pub verified: bool,
    /// Incoming messages not read yet.
    pub unread: u64,
    /// The last message, as one line.
    pub last: Option<String>,
    /// When the last message was sent or received.
    pub last_time: Option<UnixTime>,
    /// Its identity key changed and was not accepted yet.
    pub key_changed: bool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MessageView {
    /// Its contact.
    pub peer: Address,
    /// Its envelope id.
    pub id: MessageId,
    /// Sent by us.
    pub outgoing: bool,
    /// When it was sent (by us) or received.
    pub time: UnixTime,
    /// The message it answers.
    pub reply_to: Option<MessageId>,
    /// What it holds.
    pub body: BodyView,
    /// How far it got (ours only; `None` for messages from before
    /// delivery states were kept).
    pub delivery: Option<DeliveryState>,
}

/// What a message holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum BodyView {
    /// A text.
    Text(String),
    /// An image.
    Image {
        /// Its size in pixels.
        width: u32,
        /// Its size in pixels.
        height: u32,
        /// The thumbnail the message carries, decoded.
        thumbnail: Option<Pixels>,
        /// Bytes of the full image.
        size: u64,
        /// Chunks received so far, and in all (equal when complete).
        chunks: (usize, usize),
    },
    /// A file.
    File {
        /// Its name.
        name: String,
        /// Bytes.
        size: u64,
        /// Chunks received so far, and in all.
        chunks: (usize, usize),
    },
    /// A voice clip.
    Voice {
        /// Duration in milliseconds.
        duration_ms: u32,
        /// Waveform bars (may be empty).
        waveform: Vec<u8>,
        /// Bytes.
        size: u64,
        /// Chunks received so far, and in all.
        chunks: (usize, usize),
    },
    /// A kind this build cannot show.
    Unsupported,
}

/// Decoded pixels (RGBA).
pub type Pixels = postern_media::images::Pixels;

/// A safety number to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SafetyView {
    /// The contact.
    pub peer: Address,
    /// Its name.
    pub name: String,
    /// 60 digits.
    pub digits: String,
    /// What our QR code holds (for the other side to scan).
    pub scannable: Vec<u8>,
    /// Whether the contact is verified.
    pub verified: bool,
}

/// The lasting connection to the home relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Connection {
    /// No queue yet, or the loop has not started.
    #[default]
    Idle,
    /// Connecting.
    Connecting,
    /// Connected and subscribed: messages arrive as they come.
    Connected,
    /// Lost; trying again.
    Reconnecting,
}

/// The connection and privacy state, for the status area.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StatusView {
    /// The home relay.
    pub home: Option<String>,
    /// The lasting connection.
    pub connection: Connection,
    /// Whether messages go through the onion network.
    pub onion: bool,
    /// Relays per onion path.
    pub hops: u8,
    /// When the relay directory was last fetched.
    pub directory_fetched: Option<UnixTime>,
    /// Cover packets per minute (mean).
    pub cover_per_minute: u32,
    /// Cover packets sent since the service started.
    pub cover_sent: u64,
    /// Packets waiting for their delivery acknowledgement.
    pub awaiting_ack: usize,
    /// Messages waiting in the outbox.
    pub outbox: usize,
}
