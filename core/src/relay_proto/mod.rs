//! The relay protocol (spec: `docs/relay-protocol.md`), both halves, sans IO.
//!
//! A connection carries fixed-size frames ([`FRAME_BYTES`]). The relay
//! opens with a `Hello` holding a fresh random challenge; every command
//! that touches a queue as its recipient is signed with the queue key over
//! the challenge and the request (which includes a sequence number that
//! must strictly increase on the connection), so a signature cannot be
//! replayed on this connection or any other.
//!
//! The relay's I/O loop calls [`decode_request`] and [`ServerAuth::check`]
//! and answers with [`encode_response`]; clients drive a
//! [`client::ClientSession`] (the `Hello` challenge, sequence numbers,
//! answers matched to requests, notifications set aside). Nothing here
//! touches a socket, a clock or a disk.

pub mod client;

use prost::Message as _;
use rand_core::{CryptoRng, RngCore};

use crate::codec::{self, relay_proto as pb};
use crate::consts::{
    BLOB_BYTES, CHALLENGE_BYTES, FRAME_BYTES, MAX_DIRECTORY_BLOBS, MAX_FETCH, MAX_INVITE_BLOBS,
    MAX_INVITE_TTL_SECS, QUEUE_ID_BYTES, RELAY_PROTOCOL_VERSION, SPHINX_PACKET_BYTES,
};
use crate::crypto::signal::{QueuePublic, QueueSecret};
use crate::error::{Error, Result};

/// A queue's recipient id or sender id.
pub type QueueId = [u8; QUEUE_ID_BYTES];

/// One stored blob (opaque ciphertext of fixed size).
pub type Blob = Box<[u8; BLOB_BYTES]>;

/// One frame on the wire.
pub type Frame = Box<[u8; FRAME_BYTES]>;

const WHAT_FRAME: &str = "relay frame";
const WHAT_REQ: &str = "relay request";
const WHAT_RESP: &str = "relay response";
const AUTH_CONTEXT: &[u8] = b"postern/relay/auth/v1";
const SIGNATURE_BYTES: usize = 64;

/// Typed error codes a relay answers with (stable numbers on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame or request could not be parsed.
    Malformed = 1,
    /// The protocol version is not supported.
    UnsupportedVersion = 2,
    /// The command is unknown to this relay.
    UnknownCommand = 3,
    /// Missing or wrong signature.
    BadSignature = 4,
    /// The sequence number did not increase.
    StaleSequence = 5,
    /// No queue with that id.
    NoSuchQueue = 6,
    /// The queue is over its message or byte quota.
    QueueFull = 7,
    /// This connection sent too many commands too fast.
    RateLimited = 8,
    /// No invitation payload for that id (never put, taken or expired).
    NoSuchInvite = 9,
    /// The relay failed internally (storage).
    Internal = 10,
    /// A frame was not exactly `FRAME_BYTES` long.
    FrameSize = 11,
    /// The relay holds as many queues as it is configured to.
    TooManyQueues = 12,
    /// The relay is shutting down.
    ShuttingDown = 13,
    /// An onion packet this relay has already processed.
    ReplayedPacket = 14,
    /// An onion packet that does not decrypt or authenticate here.
    BadPacket = 15,
    /// An onion packet for a relay this relay does not know.
    UnknownNextHop = 16,
    /// An onion packet for a key epoch this relay no longer (or not yet) holds.
    UnknownEpoch = 17,
    /// This relay has no directory to serve.
    NoDirectory = 18,
    /// The relay cannot write to its disk (full): it serves reads but
    /// takes no new work until space returns.
    StorageFull = 19,
}

impl ErrorCode {
    /// Every code, for metrics and tests.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownCommand,
        ErrorCode::BadSignature,
        ErrorCode::StaleSequence,
        ErrorCode::NoSuchQueue,
        ErrorCode::QueueFull,
        ErrorCode::RateLimited,
        ErrorCode::NoSuchInvite,
        ErrorCode::Internal,
        ErrorCode::FrameSize,
        ErrorCode::TooManyQueues,
        ErrorCode::ShuttingDown,
        ErrorCode::ReplayedPacket,
        ErrorCode::BadPacket,
        ErrorCode::UnknownNextHop,
        ErrorCode::UnknownEpoch,
        ErrorCode::NoDirectory,
        ErrorCode::StorageFull,
    ];

    /// The code for a wire number, if known.
    pub fn from_u32(n: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| *c as u32 == n)
    }

    /// A stable snake_case name (metrics labels, messages).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::StaleSequence => "stale_sequence",
            ErrorCode::NoSuchQueue => "no_such_queue",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NoSuchInvite => "no_such_invite",
            ErrorCode::Internal => "internal",
            ErrorCode::FrameSize => "frame_size",
            ErrorCode::TooManyQueues => "too_many_queues",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::ReplayedPacket => "replayed_packet",
            ErrorCode::BadPacket => "bad_packet",
            ErrorCode::UnknownNextHop => "unknown_next_hop",
            ErrorCode::UnknownEpoch => "unknown_epoch",
            ErrorCode::NoDirectory => "no_directory",
            ErrorCode::StorageFull => "storage_full",
        }
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A client command.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Create a queue owned by this key.
    Create {
        /// The queue key's public half.
        queue_key: QueuePublic,
    },
    /// Put a blob into the queue with this sender id.
    Send {
        /// Sender-side id.
        sender_id: QueueId,
        /// The blob.
        blob: Blob,
    },
    /// Fetch up to `max` items, oldest first.
    Fetch {
        /// Recipient-side id.
        recipient_id: QueueId,
        /// 1..=MAX_FETCH.
        max: u32,
    },
    /// Delete these items.
    Ack {
        /// Recipient-side id.
        recipient_id: QueueId,
        /// Item ids from `Item` replies.
        item_ids: Vec<u64>,
    },
    /// Be told (`Notify`) when an item arrives while connected.
    Subscribe {
        /// Recipient-side id.
        recipient_id: QueueId,
    },
    /// Delete the queue and everything in it.
    DeleteQueue {
        /// Recipient-side id.
        recipient_id: QueueId,
    },
    /// Put one blob of a one-time invitation payload.
    PutInvite {
        /// Recipient-side id.
        recipient_id: QueueId,
        /// Position of this blob.
        index: u32,
        /// Number of blobs in the payload.
        total: u32,
        /// How long the relay keeps the payload.
        ttl_secs: u32,
        /// The blob.
        blob: Blob,
    },
    /// Take (read once, then deleted) the invitation payload of a queue.
    TakeInvite {
        /// Sender-side id.
        sender_id: QueueId,
    },
    /// An onion packet for this relay to process (forward or deliver).
    Forward {
        /// The Sphinx key epoch the packet was built for (network-wide).
        epoch: u32,
        /// Exactly [`SPHINX_PACKET_BYTES`].
        packet: Box<[u8; SPHINX_PACKET_BYTES]>,
    },
    /// The network's signed directory document, as `Item`s of one blob
    /// each (4-byte big-endian length, the document, zero padding).
    GetDirectory,
    /// Keeps an idle connection open (answered with `Ok`). A full-size
    /// frame like every other, so keepalives look like traffic on the
    /// wire; WebSocket pings are never sent.
    Ping,
}

impl core::fmt::Debug for Command {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Queue ids stay out of logs.
        f.write_str(self.name())
    }
}

impl Command {
    /// The command's name (logs, metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create { .. } => "create",
            Command::Send { .. } => "send",
            Command::Fetch { .. } => "fetch",
            Command::Ack { .. } => "ack",
            Command::Subscribe { .. } => "subscribe",
            Command::DeleteQueue { .. } => "delete_queue",
            Command::PutInvite { .. } => "put_invite",
            Command::TakeInvite { .. } => "take_invite",
            Command::Forward { .. } => "forward",
            Command::GetDirectory => "get_directory",
            Command::Ping => "ping",
        }
    }

    /// The recipient id a signed command acts on (`None` for unsigned
    /// commands and for `Create`, which is signed by the key it registers).
    pub fn recipient_id(&self) -> Option<&QueueId> {
        match self {
            Command::Fetch { recipient_id, .. }
            | Command::Ack { recipient_id, .. }
            | Command::Subscribe { recipient_id }
            | Command::DeleteQueue { recipient_id }
            | Command::PutInvite { recipient_id, .. } => Some(recipient_id),
            Command::Create { .. }
            | Command::Send { .. }
            | Command::TakeInvite { .. }
            | Command::Forward { .. }
            | Command::GetDirectory
            | Command::Ping => None,
        }
    }

    /// Whether the command must carry a queue-key signature.
    pub fn is_signed(&self) -> bool {
        !matches!(
            self,
            Command::Send { .. }
                | Command::TakeInvite { .. }
                | Command::Forward { .. }
                | Command::GetDirectory
                | Command::Ping
        )
    }

    fn to_proto(&self) -> pb::request::Command {
        use pb::request::Command as C;
        match self {
            Command::Create { queue_key } => C::Create(pb::Create {
                queue_key: queue_key.to_bytes(),
            }),
            Command::Send { sender_id, blob } => C::Send(pb::Send {
                sender_id: sender_id.to_vec(),
                blob: blob.to_vec(),
            }),
            Command::Fetch { recipient_id, max } => C::Fetch(pb::Fetch {
                recipient_id: recipient_id.to_vec(),
                max: *max,
            }),
            Command::Ack {
                recipient_id,
                item_ids,
            } => C::Ack(pb::Ack {
                recipient_id: recipient_id.to_vec(),
                item_ids: item_ids.clone(),
            }),
            Command::Subscribe { recipient_id } => C::Subscribe(pb::Subscribe {
                recipient_id: recipient_id.to_vec(),
            }),
            Command::DeleteQueue { recipient_id } => C::DeleteQueue(pb::DeleteQueue {
                recipient_id: recipient_id.to_vec(),
            }),
            Command::PutInvite {
                recipient_id,
                index,
                total,
                ttl_secs,
                blob,
            } => C::PutInvite(pb::PutInvite {
                recipient_id: recipient_id.to_vec(),
                index: *index,
                total: *total,
                ttl_secs: *ttl_secs,
                blob: blob.to_vec(),
            }),
            Command::TakeInvite { sender_id } => C::TakeInvite(pb::TakeInvite {
                sender_id: sender_id.to_vec(),
            }),
            Command::Forward { epoch, packet } => C::Forward(pb::Forward {
                packet: packet.to_vec(),
                epoch: *epoch,
            }),
            Command::GetDirectory => C::GetDirectory(pb::GetDirectory {}),
            Command::Ping => C::Ping(pb::Ping {}),
        }
    }

    fn from_proto(c: pb::request::Command) -> Result<Command> {
        use pb::request::Command as C;
        let id = |b: &[u8]| codec::fixed::<QUEUE_ID_BYTES>(b, WHAT_REQ);
        Ok(match c {
            C::Create(c) => Command::Create {
                queue_key: QueuePublic::from_bytes(&c.queue_key)?,
            },
            C::Send(s) => Command::Send {
                sender_id: id(&s.sender_id)?,
                blob: blob(&s.blob)?,
            },
            C::Fetch(f) => {
                if f.max == 0 || f.max > MAX_FETCH {
                    return Err(malformed(WHAT_REQ));
                }
                Command::Fetch {
                    recipient_id: id(&f.recipient_id)?,
                    max: f.max,
                }
            }
            C::Ack(a) => {
                if a.item_ids.is_empty() || a.item_ids.len() > MAX_FETCH as usize {
                    return Err(malformed(WHAT_REQ));
                }
                Command::Ack {
                    recipient_id: id(&a.recipient_id)?,
                    item_ids: a.item_ids,
                }
            }
            C::Subscribe(s) => Command::Subscribe {
                recipient_id: id(&s.recipient_id)?,
            },
            C::DeleteQueue(d) => Command::DeleteQueue {
                recipient_id: id(&d.recipient_id)?,
            },
            C::PutInvite(p) => {
                if p.total == 0
                    || p.total > MAX_INVITE_BLOBS
                    || p.index >= p.total
                    || p.ttl_secs == 0
                    || p.ttl_secs > MAX_INVITE_TTL_SECS
                {
                    return Err(malformed(WHAT_REQ));
                }
                Command::PutInvite {
                    recipient_id: id(&p.recipient_id)?,
                    index: p.index,
                    total: p.total,
                    ttl_secs: p.ttl_secs,
                    blob: blob(&p.blob)?,
                }
            }
            C::TakeInvite(t) => Command::TakeInvite {
                sender_id: id(&t.sender_id)?,
            },
            C::Forward(f) => Command::Forward {
                epoch: f.epoch,
                packet: Box::new(codec::fixed::<SPHINX_PACKET_BYTES>(&f.packet, WHAT_REQ)?),
            },
            C::GetDirectory(_) => Command::GetDirectory,
            C::Ping(_) => Command::Ping,
        })
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Sequence number on this connection.
    pub seq: u64,
    /// The command.
    pub command: Command,
    signature: Option<[u8; SIGNATURE_BYTES]>,
}

/// What a relay answers.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// First frame of a connection.
    Hello {
        /// Fresh random challenge.
        challenge: [u8; CHALLENGE_BYTES],
    },
    /// Done.
    Ok,
    /// Refused.
    Error(ErrorCode),
    /// A new queue.
    Created {
        /// Recipient-side id (for fetch, ack, …).
        recipient_id: QueueId,
        /// Sender-side id (given to contacts).
        sender_id: QueueId,
    },
    /// One item of a fetch or of an invitation payload.
    Item {
        /// Id to acknowledge (for invitations: the blob's index).
        item_id: u64,
        /// The blob.
        blob: Blob,
    },
    /// End of a fetch or take.
    Done {
        /// Items sent.
        count: u32,
        /// Whether more items are waiting.
        more: bool,
    },
    /// An item arrived in a subscribed queue.
    Notify {
        /// Which queue.
        recipient_id: QueueId,
    },
}

impl core::fmt::Debug for Reply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Reply::Hello { .. } => f.write_str("Hello"),
            Reply::Ok => f.write_str("Ok"),
            Reply::Error(c) => write!(f, "Error({c})"),
            Reply::Created { .. } => f.write_str("Created"),
            Reply::Item { item_id, .. } => write!(f, "Item({item_id})"),
            Reply::Done { count, more } => write!(f, "Done({count}, more: {more})"),
            Reply::Notify { .. } => f.write_str("Notify"),
        }
    }
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request answered (0 for `Hello` and `Notify`).
    pub seq: u64,
    /// The answer.
    pub reply: Reply,
}

fn malformed(what: &'static str) -> Error {
    Error::Malformed { what }
}

fn blob(b: &[u8]) -> Result<Blob> {
    let arr = codec::fixed::<BLOB_BYTES>(b, "blob")?;
    Ok(Box::new(arr))
}

/// Frames `payload`: length, bytes, zeros up to [`FRAME_BYTES`].
pub fn encode_frame(payload: &[u8]) -> Result<Frame> {
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|l| usize::from(*l) <= FRAME_BYTES - 2)
        .ok_or(Error::TooLarge {
            what: WHAT_FRAME,
            len: payload.len(),
            max: FRAME_BYTES - 2,
        })?;
    let mut f: Frame = Box::new([0u8; FRAME_BYTES]);
    let (head, rest) = f.split_at_mut(2);
    head.copy_from_slice(&len.to_be_bytes());
    let (body, _) = rest.split_at_mut(payload.len());
    body.copy_from_slice(payload);
    Ok(f)
}

/// The payload of a frame: exact size, length in range, zero padding.
pub fn decode_frame(frame: &[u8]) -> Result<&[u8]> {
    if frame.len() != FRAME_BYTES {
        return Err(Error::Malformed { what: WHAT_FRAME });
    }
    let (head, rest) = frame
        .split_first_chunk::<2>()
        .ok_or(malformed(WHAT_FRAME))?;
    let len = usize::from(u16::from_be_bytes(*head));
    if len > rest.len() {
        return Err(malformed(WHAT_FRAME));
    }
    let (payload, padding) = rest.split_at(len);
    if padding.iter().any(|b| *b != 0) {
        return Err(malformed(WHAT_FRAME));
    }
    Ok(payload)
}

/// What the queue key signs: context, challenge, and the request encoded
/// with an empty signature.
fn signed_message(challenge: &[u8; CHALLENGE_BYTES], unsigned: &pb::Request) -> Vec<u8> {
    let body = unsigned.encode_to_vec();
    let mut m = Vec::with_capacity(AUTH_CONTEXT.len() + CHALLENGE_BYTES + body.len());
    m.extend_from_slice(AUTH_CONTEXT);
    m.extend_from_slice(challenge);
    m.extend_from_slice(&body);
    m
}

impl Request {
    fn unsigned_proto(&self) -> pb::Request {
        pb::Request {
            version: RELAY_PROTOCOL_VERSION,
            seq: self.seq,
            signature: Vec::new(),
            command: Some(self.command.to_proto()),
        }
    }
}

/// Why a request was refused before it reached the relay's logic, with
/// the sequence number to answer under (0 if it could not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Sequence number of the refused request, if readable.
    pub seq: u64,
    /// The code to answer with.
    pub code: ErrorCode,
}

/// Server side: decodes one request frame.
pub fn decode_request(frame: &[u8]) -> core::result::Result<Request, Refusal> {
    if frame.len() != FRAME_BYTES {
        return Err(Refusal {
            seq: 0,
            code: ErrorCode::FrameSize,
        });
    }
    let refuse = |seq, code| Refusal { seq, code };
    let payload = decode_frame(frame).map_err(|_| refuse(0, ErrorCode::Malformed))?;
    let r: pb::Request = codec::decode_bounded(payload, FRAME_BYTES, WHAT_REQ)
        .map_err(|_| refuse(0, ErrorCode::Malformed))?;
    if r.version != RELAY_PROTOCOL_VERSION {
        return Err(refuse(r.seq, ErrorCode::UnsupportedVersion));
    }
    let Some(cmd) = r.command else {
        // Absent, or a command from a newer protocol (prost drops unknown
        // oneof members, which leaves the field empty).
        return Err(refuse(r.seq, ErrorCode::UnknownCommand));
    };
    let command = Command::from_proto(cmd).map_err(|_| refuse(r.seq, ErrorCode::Malformed))?;
    let signature = if r.signature.is_empty() {
        None
    } else {
        Some(
            codec::fixed::<SIGNATURE_BYTES>(&r.signature, WHAT_REQ)
                .map_err(|_| refuse(r.seq, ErrorCode::BadSignature))?,
        )
    };
    Ok(Request {
        seq: r.seq,
        command,
        signature,
    })
}

/// Server side: one connection's challenge and sequence state.
#[derive(Debug)]
pub struct ServerAuth {
    challenge: [u8; CHALLENGE_BYTES],
    last_seq: u64,
}

impl ServerAuth {
    /// A fresh challenge for a new connection.
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R) -> ServerAuth {
        let mut challenge = [0u8; CHALLENGE_BYTES];
        rng.fill_bytes(&mut challenge);
        ServerAuth {
            challenge,
            last_seq: 0,
        }
    }

    /// The `Hello` frame that opens the connection.
    pub fn hello(&self) -> Result<Frame> {
        encode_response(
            0,
            &Reply::Hello {
                challenge: self.challenge,
            },
        )
    }

    /// Checks a request's sequence number and, for signed commands, its
    /// signature by `key` (the queue's registered key; for `Create`, the
    /// key being registered). Call for every request, in order; pass
    /// `None` for unsigned commands.
    pub fn check(
        &mut self,
        req: &Request,
        key: Option<&QueuePublic>,
    ) -> core::result::Result<(), ErrorCode> {
        if req.seq <= self.last_seq {
            return Err(ErrorCode::StaleSequence);
        }
        if req.command.is_signed() {
            let (Some(key), Some(sig)) = (key, req.signature.as_ref()) else {
                return Err(ErrorCode::BadSignature);
            };
            if !key.verify(&signed_message(&self.challenge, &req.unsigned_proto()), sig) {
                return Err(ErrorCode::BadSignature);
            }
        }
        self.last_seq = req.seq;
        Ok(())
    }
}

/// Server side: encodes a response frame.
pub fn encode_response(seq: u64, reply: &Reply) -> Result<Frame> {
    use pb::response::Reply as R;
    let r = match reply {
        Reply::Hello { challenge } => R::Hello(pb::Hello {
            challenge: challenge.to_vec(),
        }),
        Reply::Ok => R::Okay(pb::Okay {}),
        Reply::Error(code) => R::Failure(pb::Failure { code: *code as u32 }),
        Reply::Created {
            recipient_id,
            sender_id,
        } => R::Created(pb::Created {
            recipient_id: recipient_id.to_vec(),
            sender_id: sender_id.to_vec(),
        }),
        Reply::Item { item_id, blob } => R::Item(pb::Item {
            item_id: *item_id,
            blob: blob.to_vec(),
        }),
        Reply::Done { count, more } => R::Done(pb::Done {
            count: *count,
            more: *more,
        }),
        Reply::Notify { recipient_id } => R::Notify(pb::Notify {
            recipient_id: recipient_id.to_vec(),
        }),
    };
    encode_frame(
        &pb::Response {
            version: RELAY_PROTOCOL_VERSION,
            seq,
            reply: Some(r),
        }
        .encode_to_vec(),
    )
}

/// Client side: decodes a response frame.
pub fn decode_response(frame: &[u8]) -> Result<Response> {
    use pb::response::Reply as R;
    let payload = decode_frame(frame)?;
    let r: pb::Response = codec::decode_bounded(payload, FRAME_BYTES, WHAT_RESP)?;
    if r.version != RELAY_PROTOCOL_VERSION {
        return Err(Error::UnsupportedVersion {
            what: WHAT_RESP,
            version: r.version,
        });
    }
    let id = |b: &[u8]| codec::fixed::<QUEUE_ID_BYTES>(b, WHAT_RESP);
    let reply = match r.reply.ok_or(malformed(WHAT_RESP))? {
        R::Hello(h) => Reply::Hello {
            challenge: codec::fixed::<CHALLENGE_BYTES>(&h.challenge, WHAT_RESP)?,
        },
        R::Okay(_) => Reply::Ok,
        R::Failure(e) => Reply::Error(ErrorCode::from_u32(e.code).ok_or(malformed(WHAT_RESP))?),
        R::Created(c) => Reply::Created {
            recipient_id: id(&c.recipient_id)?,
            sender_id: id(&c.sender_id)?,
        },
        R::Item(i) => Reply::Item {
            item_id: i.item_id,
            blob: blob(&i.blob)?,
        },
        R::Done(d) => {
            if d.count > MAX_FETCH.max(MAX_INVITE_BLOBS).max(MAX_DIRECTORY_BLOBS) {
                return Err(malformed(WHAT_RESP));
            }
            Reply::Done {
                count: d.count,
                more: d.more,
            }
        }
        R::Notify(n) => Reply::Notify {
            recipient_id: id(&n.recipient_id)?,
        },
    };
    Ok(Response { seq: r.seq, reply })
}

/// Client side: the connection's challenge and next sequence number.
#[derive(Debug)]
pub struct ClientAuth {
    challenge: [u8; CHALLENGE_BYTES],
    next_seq: u64,
}

impl ClientAuth {
    /// State from the relay's `Hello`.
    pub fn new(challenge: [u8; CHALLENGE_BYTES]) -> ClientAuth {
        ClientAuth {
            challenge,
            next_seq: 1,
        }
    }

    /// Encodes `command` as the next request, signed with `key` where the
    /// command needs it. Returns the sequence number and the frame.
    pub fn request<R: RngCore + CryptoRng>(
        &mut self,
        command: Command,
        key: Option<&QueueSecret>,
        rng: &mut R,
    ) -> Result<(u64, Frame)> {
        let seq = self.next_seq;
        let mut req = Request {
            seq,
            command,
            signature: None,
        };
        let mut p = req.unsigned_proto();
        if req.command.is_signed() {
            let key = key.ok_or(Error::Bug("signed relay command without a key"))?;
            let sig = key.sign(&signed_message(&self.challenge, &p), rng)?;
            p.signature = sig.to_vec();
            req.signature = Some(sig);
        }
        let frame = encode_frame(&p.encode_to_vec())?;
        self.next_seq = self.next_seq.saturating_add(1);
        Ok((seq, frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(7)
    }

    fn pair() -> (ServerAuth, ClientAuth) {
        let server = ServerAuth::new(&mut rng());
        let hello = decode_response(&server.hello().unwrap()[..]).unwrap();
        let Reply::Hello { challenge } = hello.reply else {
            panic!("no hello")
        };
        (server, ClientAuth::new(challenge))
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(decode_request(&[]).unwrap_err().code, ErrorCode::FrameSize);
        assert_eq!(
            decode_request(&[0; FRAME_BYTES + 1]).unwrap_err().code,
            ErrorCode::FrameSize
        );
        let mut f = [0u8; FRAME_BYTES];
        f[0] = 0xFF;
        assert_eq!(decode_request(&f).unwrap_err().code, ErrorCode::Malformed);
        // Non-zero padding.
        let (_, mut c) = pair();
        let (_, mut good) = c
            .request(Command::TakeInvite { sender_id: [1; 16] }, None, &mut rng())
            .unwrap();
        assert!(decode_request(&good[..]).is_ok());
        good[FRAME_BYTES - 1] = 1;
        assert_eq!(
            decode_request(&good[..]).unwrap_err().code,
            ErrorCode::Malformed
        );
        // Random bytes.
        let mut r = rng();
        for _ in 0..200 {
            let mut f = [0u8; FRAME_BYTES];
            r.fill_bytes(&mut f);
            assert!(decode_request(&f).is_err());
        }
    }

    #[test]
    fn rejects_wrong_version_and_unknown_commands() {
        let p = pb::Request {
            version: 2,
            seq: 5,
            signature: vec![],
            command: Some(pb::request::Command::TakeInvite(pb::TakeInvite {
                sender_id: vec![1; 16],
            })),
        };
        let f = encode_frame(&p.encode_to_vec()).unwrap();
        assert_eq!(
            decode_request(&f[..]).unwrap_err(),
            Refusal {
                seq: 5,
                code: ErrorCode::UnsupportedVersion
            }
        );
        // Field 40: a command from a future version.
        let mut b = pb::Request {
            version: 1,
            seq: 6,
            signature: vec![],
            command: None,
        }
        .encode_to_vec();
        b.extend_from_slice(&[0xc2, 0x02, 0x00]);
        let f = encode_frame(&b).unwrap();
        assert_eq!(
            decode_request(&f[..]).unwrap_err(),
            Refusal {
                seq: 6,
                code: ErrorCode::UnknownCommand
            }
        );
        // Bounds: fetch of 0 or too many, short blob, bad id.
        for cmd in [
            pb::request::Command::Fetch(pb::Fetch {
                recipient_id: vec![1; 16],
                max: 0,
            }),
            pb::request::Command::Fetch(pb::Fetch {
                recipient_id: vec![1; 16],
                max: MAX_FETCH + 1,
            }),
            pb::request::Command::Send(pb::Send {
                sender_id: vec![1; 16],
                blob: vec![0; BLOB_BYTES - 1],
            }),
            pb::request::Command::Send(pb::Send {
                sender_id: vec![1; 15],
                blob: vec![0; BLOB_BYTES],
            }),
            pb::request::Command::Ack(pb::Ack {
                recipient_id: vec![1; 16],
                item_ids: vec![],
            }),
            pb::request::Command::PutInvite(pb::PutInvite {
                recipient_id: vec![1; 16],
                index: 1,
                total: 1,
                ttl_secs: 60,
                blob: vec![0; BLOB_BYTES],
            }),
            pb::request::Command::Forward(pb::Forward {
                packet: vec![0; SPHINX_PACKET_BYTES - 1],
                epoch: 1,
            }),
        ] {
            let p = pb::Request {
                version: 1,
                seq: 9,
                signature: vec![],
                command: Some(cmd),
            };
            let f = encode_frame(&p.encode_to_vec()).unwrap();
            assert_eq!(
                decode_request(&f[..]).unwrap_err().code,
                ErrorCode::Malformed
            );
        }
    }

    #[test]
    fn rejects_wrong_missing_and_replayed_signatures() {
        let mut r = rng();
        let key = QueueSecret::generate(&mut r);
        let other = QueueSecret::generate(&mut r);
        let fetch = || Command::Fetch {
            recipient_id: [3; 16],
            max: 10,
        };
        let (mut server, mut client) = pair();
        // Signed with another key.
        let (_, f) = client.request(fetch(), Some(&other), &mut r).unwrap();
        let req = decode_request(&f[..]).unwrap();
        assert_eq!(
            server.check(&req, Some(&key.public().unwrap())),
            Err(ErrorCode::BadSignature)
        );
        // Signature stripped.
        let mut stripped = req.clone();
        stripped.signature = None;
        assert_eq!(
            server.check(&stripped, Some(&key.public().unwrap())),
            Err(ErrorCode::BadSignature)
        );
        // A good one passes once; replayed on the same connection it is stale.
        let (_, f) = client.request(fetch(), Some(&key), &mut r).unwrap();
        let req = decode_request(&f[..]).unwrap();
        assert_eq!(server.check(&req, Some(&key.public().unwrap())), Ok(()));
        assert_eq!(
            server.check(&req, Some(&key.public().unwrap())),
            Err(ErrorCode::StaleSequence)
        );
        // ... and on another connection (another challenge) it is refused.
        let mut r2 = rand_chacha::ChaCha20Rng::seed_from_u64(99);
        let mut server2 = ServerAuth::new(&mut r2);
        assert_eq!(
            server2.check(&req, Some(&key.public().unwrap())),
            Err(ErrorCode::BadSignature)
        );
        // The signature covers the command: a changed max is refused.
        let (_, f) = client.request(fetch(), Some(&key), &mut r).unwrap();
        let mut req = decode_request(&f[..]).unwrap();
        req.command = Command::Fetch {
            recipient_id: [3; 16],
            max: 11,
        };
        assert_eq!(
            server.check(&req, Some(&key.public().unwrap())),
            Err(ErrorCode::BadSignature)
        );
    }

    #[test]
    fn every_command_and_reply_round_trips() {
        let mut r = rng();
        let key = QueueSecret::generate(&mut r);
        let (mut server, mut client) = pair();
        let commands = vec![
            Command::Create {
                queue_key: key.public().unwrap(),
            },
            Command::Send {
                sender_id: [1; 16],
                blob: Box::new([0xAA; BLOB_BYTES]),
            },
            Command::Fetch {
                recipient_id: [2; 16],
                max: MAX_FETCH,
            },
            Command::Ack {
                recipient_id: [2; 16],
                item_ids: vec![u64::MAX; MAX_FETCH as usize],
            },
            Command::Subscribe {
                recipient_id: [2; 16],
            },
            Command::DeleteQueue {
                recipient_id: [2; 16],
            },
            Command::PutInvite {
                recipient_id: [2; 16],
                index: MAX_INVITE_BLOBS - 1,
                total: MAX_INVITE_BLOBS,
                ttl_secs: MAX_INVITE_TTL_SECS,
                blob: Box::new([0xBB; BLOB_BYTES]),
            },
            Command::TakeInvite { sender_id: [1; 16] },
            Command::Forward {
                epoch: 7,
                packet: Box::new([0x5A; SPHINX_PACKET_BYTES]),
            },
            Command::GetDirectory,
            Command::Ping,
        ];
        for (i, cmd) in commands.into_iter().enumerate() {
            let (seq, f) = client.request(cmd.clone(), Some(&key), &mut r).unwrap();
            assert_eq!(seq, i as u64 + 1);
            let req = decode_request(&f[..]).unwrap();
            assert_eq!(req.command, cmd);
            let k = key.public().unwrap();
            server.check(&req, cmd.is_signed().then_some(&k)).unwrap();
        }
        for reply in [
            Reply::Ok,
            Reply::Error(ErrorCode::QueueFull),
            Reply::Created {
                recipient_id: [1; 16],
                sender_id: [2; 16],
            },
            Reply::Item {
                item_id: u64::MAX,
                blob: Box::new([7; BLOB_BYTES]),
            },
            Reply::Done {
                count: MAX_FETCH,
                more: true,
            },
            Reply::Notify {
                recipient_id: [3; 16],
            },
        ] {
            let f = encode_response(42, &reply).unwrap();
            let got = decode_response(&f[..]).unwrap();
            assert_eq!((got.seq, got.reply), (42, reply));
        }
    }

    #[test]
    fn debug_output_hides_queue_ids() {
        let s = format!(
            "{:?}",
            Command::Fetch {
                recipient_id: [0xEE; 16],
                max: 1
            }
        );
        assert!(!s.contains("238"));
        let s = format!(
            "{:?}",
            Reply::Notify {
                recipient_id: [0xEE; 16]
            }
        );
        assert!(!s.contains("238"));
    }
}
