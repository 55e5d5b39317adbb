//! Postern's application messages: the envelope the E2E layer encrypts
//! (after padding) — text, image, file, voice clip, delivery receipt.
//! Format: `core/proto/message.proto`, specified in `docs/message-format.md`.
//!
//! Decoding is strict where the network could hurt us (bounded sizes,
//! exact id and key lengths, file names that cannot name a path) and
//! lenient where the future needs room: unknown fields are ignored, an
//! unknown body kind is a typed [`Error::UnsupportedMessageKind`].

use prost::Message as _;
use zeroize::Zeroizing;

use crate::codec::{self, message_proto as pb};
use crate::consts::{
    ENVELOPE_VERSION, MAX_ATTACHMENT_BYTES, MAX_DISPLAY_NAME_BYTES, MAX_FILE_NAME_BYTES,
    MAX_MIME_BYTES, MAX_PLAINTEXT_BYTES, MAX_RECEIPT_IDS, MAX_TEXT_BYTES, MAX_THUMBNAIL_BYTES,
    MAX_VOICE_MS, MAX_WAVEFORM_BYTES, QUEUE_ID_BYTES,
};
use crate::error::{Error, Result};
use crate::relay_address::RelayAddress;
use crate::store::{AttachmentId, MessageId};
use crate::time::UnixTime;

/// A decoded application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Random id chosen by the sender.
    pub id: MessageId,
    /// The sender's clock when it was sent.
    pub sent_at: UnixTime,
    /// The message this one replies to.
    pub reply_to: Option<MessageId>,
    /// What it carries.
    pub body: Body,
}

/// The kinds of message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// UTF-8 text.
    Text(Text),
    /// An image (re-encoded, no metadata) with a thumbnail.
    Image(Image),
    /// Any file.
    File(FileInfo),
    /// A voice clip (Opus in Ogg).
    Voice(Voice),
    /// Delivery receipt for these message ids.
    Receipt(Vec<MessageId>),
    /// Control: where to reach the sender (first message after an invitation).
    ContactCard(ContactCard),
    /// Control: the sender moved its queue for us.
    QueueUpdate(QueueAddress),
}

/// A mailbox queue the receiver may send to. The blob key is secret.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueAddress {
    /// The relay holding the queue.
    pub relay: RelayAddress,
    /// The queue's sender-side id.
    pub sender_id: [u8; QUEUE_ID_BYTES],
    /// Seals the blobs put into the queue.
    pub blob_key: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for QueueAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Queue ids stay out of logs.
        write!(f, "QueueAddress(<redacted>)")
    }
}

/// A contact card.
#[derive(Clone, PartialEq, Eq)]
pub struct ContactCard {
    /// Where to send to the card's sender.
    pub queue: QueueAddress,
    /// The name the sender suggests for itself (may be empty).
    pub display_name: String,
}

impl core::fmt::Debug for ContactCard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "ContactCard({:?}, name {} bytes)",
            self.queue,
            self.display_name.len()
        )
    }
}

/// Text content. `Debug` shows only its length (user data stays out of logs).
#[derive(Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl core::fmt::Debug for Text {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Text({} bytes)", self.0.len())
    }
}

/// How to fetch and check an attachment. The key is secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentRef {
    /// Random attachment id.
    pub id: AttachmentId,
    /// The attachment's own encryption key.
    pub key: Zeroizing<[u8; 32]>,
    /// Plaintext size in bytes.
    pub size: u64,
    /// SHA-256 of the plaintext, checked before anything is shown.
    pub digest: [u8; 32],
}

impl core::fmt::Debug for AttachmentRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AttachmentRef({} bytes, key <redacted>)", self.size)
    }
}

/// Image metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// MIME type of the (re-encoded) image.
    pub mime: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// A small thumbnail.
    pub thumbnail: Vec<u8>,
    /// The full image.
    pub attachment: AttachmentRef,
}

/// File metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// File name, without any directory part.
    pub name: String,
    /// MIME type.
    pub mime: String,
    /// The file.
    pub attachment: AttachmentRef,
}

/// Voice clip metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voice {
    /// Duration in milliseconds.
    pub duration_ms: u32,
    /// Waveform preview, one byte per bar.
    pub waveform: Vec<u8>,
    /// The Opus-in-Ogg audio.
    pub attachment: AttachmentRef,
}

const WHAT: &str = "message envelope";

fn malformed() -> Error {
    Error::Malformed { what: WHAT }
}

fn id16(b: &[u8]) -> Result<[u8; 16]> {
    codec::fixed::<16>(b, WHAT)
}

fn bounded_str(s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(malformed());
    }
    Ok(())
}

/// A file name from the network must not be able to name a path.
fn check_file_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > MAX_FILE_NAME_BYTES
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad { Err(malformed()) } else { Ok(()) }
}

fn attachment_from(a: Option<pb::AttachmentRef>) -> Result<AttachmentRef> {
    let a = a.ok_or_else(malformed)?;
    if a.size > MAX_ATTACHMENT_BYTES {
        return Err(Error::TooLarge {
            what: "attachment",
            len: usize::try_from(a.size).unwrap_or(usize::MAX),
            max: usize::try_from(MAX_ATTACHMENT_BYTES).unwrap_or(usize::MAX),
        });
    }
    Ok(AttachmentRef {
        id: id16(&a.id)?,
        key: Zeroizing::new(codec::fixed::<32>(&a.key, WHAT)?),
        size: a.size,
        digest: codec::fixed::<32>(&a.digest, WHAT)?,
    })
}

fn queue_from(q: Option<pb::QueueAddress>) -> Result<QueueAddress> {
    let q = q.ok_or_else(malformed)?;
    Ok(QueueAddress {
        relay: RelayAddress::parse(&q.relay)?,
        sender_id: codec::fixed::<QUEUE_ID_BYTES>(&q.sender_id, WHAT)?,
        blob_key: Zeroizing::new(codec::fixed::<32>(&q.blob_key, WHAT)?),
    })
}

fn queue_to(q: &QueueAddress) -> pb::QueueAddress {
    pb::QueueAddress {
        relay: q.relay.to_string(),
        sender_id: q.sender_id.to_vec(),
        blob_key: q.blob_key.to_vec(),
    }
}

/// A display name from the network: bounded, no control characters.
fn check_display_name(name: &str) -> Result<()> {
    if name.len() > MAX_DISPLAY_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(malformed());
    }
    Ok(())
}

fn attachment_to(a: &AttachmentRef) -> pb::AttachmentRef {
    pb::AttachmentRef {
        id: a.id.to_vec(),
        key: a.key.to_vec(),
        size: a.size,
        digest: a.digest.to_vec(),
    }
}

impl Envelope {
    /// Encodes the envelope, refusing what a receiver would refuse.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        use pb::envelope::Body as B;
        let body = match &self.body {
            Body::Text(t) => {
                if t.0.len() > MAX_TEXT_BYTES {
                    return Err(Error::TextTooLong {
                        len: t.0.len(),
                        max: MAX_TEXT_BYTES,
                    });
                }
                B::Text(pb::Text { text: t.0.clone() })
            }
            Body::Image(i) => B::Image(pb::Image {
                mime: i.mime.clone(),
                width: i.width,
                height: i.height,
                thumbnail: i.thumbnail.clone(),
                attachment: Some(attachment_to(&i.attachment)),
            }),
            Body::File(f) => B::File(pb::File {
                name: f.name.clone(),
                mime: f.mime.clone(),
                attachment: Some(attachment_to(&f.attachment)),
            }),
            Body::Voice(v) => B::Voice(pb::Voice {
                duration_ms: v.duration_ms,
                waveform: v.waveform.clone(),
                attachment: Some(attachment_to(&v.attachment)),
            }),
            Body::Receipt(ids) => B::Receipt(pb::Receipt {
                delivered: ids.iter().map(|i| i.to_vec()).collect(),
            }),
            Body::ContactCard(c) => B::ContactCard(pb::ContactCard {
                queue: Some(queue_to(&c.queue)),
                display_name: c.display_name.clone(),
            }),
            Body::QueueUpdate(q) => B::QueueUpdate(pb::QueueUpdate {
                queue: Some(queue_to(q)),
            }),
        };
        let e = pb::Envelope {
            version: ENVELOPE_VERSION,
            message_id: self.id.to_vec(),
            sent_at_ms: self.sent_at.millis(),
            reply_to: self.reply_to.map(|r| r.to_vec()).unwrap_or_default(),
            body: Some(body),
        };
        let bytes = Zeroizing::new(e.encode_to_vec());
        // Round-trip through the receiver's checks.
        Envelope::decode(&bytes)?;
        Ok(bytes)
    }

    /// Decodes and checks an envelope.
    pub fn decode(bytes: &[u8]) -> Result<Envelope> {
        use pb::envelope::Body as B;
        let e: pb::Envelope = codec::decode_bounded(bytes, MAX_PLAINTEXT_BYTES, WHAT)?;
        if e.version != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version: e.version,
            });
        }
        let id = id16(&e.message_id)?;
        let reply_to = if e.reply_to.is_empty() {
            None
        } else {
            Some(id16(&e.reply_to)?)
        };
        let body = match e.body {
            None => return Err(Error::UnsupportedMessageKind),
            Some(B::Text(t)) => {
                if t.text.len() > MAX_TEXT_BYTES {
                    return Err(malformed());
                }
                Body::Text(Text(t.text))
            }
            Some(B::Image(i)) => {
                bounded_str(&i.mime, MAX_MIME_BYTES)?;
                if i.thumbnail.len() > MAX_THUMBNAIL_BYTES {
                    return Err(malformed());
                }
                Body::Image(Image {
                    mime: i.mime,
                    width: i.width,
                    height: i.height,
                    thumbnail: i.thumbnail,
                    attachment: attachment_from(i.attachment)?,
                })
            }
            Some(B::File(f)) => {
                check_file_name(&f.name)?;
                bounded_str(&f.mime, MAX_MIME_BYTES)?;
                Body::File(FileInfo {
                    name: f.name,
                    mime: f.mime,
                    attachment: attachment_from(f.attachment)?,
                })
            }
            Some(B::Voice(v)) => {
                if v.duration_ms > MAX_VOICE_MS || v.waveform.len() > MAX_WAVEFORM_BYTES {
                    return Err(malformed());
                }
                Body::Voice(Voice {
                    duration_ms: v.duration_ms,
                    waveform: v.waveform,
                    attachment: attachment_from(v.attachment)?,
                })
            }
            Some(B::Receipt(r)) => {
                if r.delivered.is_empty() || r.delivered.len() > MAX_RECEIPT_IDS {
                    return Err(malformed());
                }
                Body::Receipt(r.delivered.iter().map(|i| id16(i)).collect::<Result<_>>()?)
            }
            Some(B::ContactCard(c)) => {
                check_display_name(&c.display_name)?;
                Body::ContactCard(ContactCard {
                    queue: queue_from(c.queue)?,
                    display_name: c.display_name,
                })
            }
            Some(B::QueueUpdate(u)) => Body::QueueUpdate(queue_from(u.queue)?),
        };
        Ok(Envelope {
            id,
            sent_at: UnixTime(e.sent_at_ms),
            reply_to,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att() -> AttachmentRef {
        AttachmentRef {
            id: [1; 16],
            key: Zeroizing::new([0xAB; 32]),
            size: 12345,
            digest: [2; 32],
        }
    }

    fn queue() -> QueueAddress {
        QueueAddress {
            relay: RelayAddress::parse("postern-relay://127.0.0.1:4443").unwrap(),
            sender_id: [5; 16],
            blob_key: Zeroizing::new([0xCD; 32]),
        }
    }

    #[test]
    fn rejects_bad_contact_cards_and_queue_updates() {
        let card = |relay: &str, sender_id: Vec<u8>, blob_key: Vec<u8>, name: &str| {
            pb::Envelope {
                version: 1,
                message_id: vec![7; 16],
                sent_at_ms: 1,
                reply_to: vec![],
                body: Some(pb::envelope::Body::ContactCard(pb::ContactCard {
                    queue: Some(pb::QueueAddress {
                        relay: relay.into(),
                        sender_id,
                        blob_key,
                    }),
                    display_name: name.into(),
                })),
            }
            .encode_to_vec()
        };
        let ok = "postern-relay://127.0.0.1:4443";
        assert!(Envelope::decode(&card(ok, vec![5; 16], vec![1; 32], "Ada")).is_ok());
        for bad in [
            card("https://evil.example", vec![5; 16], vec![1; 32], "Ada"),
            card(ok, vec![5; 15], vec![1; 32], "Ada"),
            card(ok, vec![5; 16], vec![1; 31], "Ada"),
            card(ok, vec![5; 16], vec![1; 32], "bell\u{7}"),
            card(
                ok,
                vec![5; 16],
                vec![1; 32],
                &"n".repeat(MAX_DISPLAY_NAME_BYTES + 1),
            ),
        ] {
            assert!(matches!(
                Envelope::decode(&bad),
                Err(Error::Malformed { .. } | Error::TooLarge { .. })
            ));
        }
        let missing = pb::Envelope {
            version: 1,
            message_id: vec![7; 16],
            sent_at_ms: 1,
            reply_to: vec![],
            body: Some(pb::envelope::Body::QueueUpdate(pb::QueueUpdate {
                queue: None,
            })),
        }
        .encode_to_vec();
        assert!(matches!(
            Envelope::decode(&missing),
            Err(Error::Malformed { .. })
        ));
        // Queue ids and keys stay out of Debug output.
        let s = format!("{:?}", env(Body::QueueUpdate(queue())));
        assert!(!s.contains("205") && !s.contains("5, 5"));
    }

    fn env(body: Body) -> Envelope {
        Envelope {
            id: [7; 16],
            sent_at: UnixTime(1_800_000_000_000),
            reply_to: Some([8; 16]),
            body,
        }
    }

    #[test]
    fn rejects_malformed_and_truncated() {
        let good = env(Body::Text(Text("hello".into()))).encode().unwrap();
        for cut in 0..good.len() {
            assert!(Envelope::decode(&good[..cut]).is_err(), "cut {cut}");
        }
        assert!(Envelope::decode(&[0xff; 40]).is_err());
    }

    #[test]
    fn rejects_unknown_body_kind_with_a_typed_error() {
        // Field 99 (a future body kind), length-delimited, empty.
        let mut b = pb::Envelope {
            version: 1,
            message_id: vec![7; 16],
            sent_at_ms: 1,
            reply_to: vec![],
            body: None,
        }
        .encode_to_vec();
        b.extend_from_slice(&[0x9a, 0x06, 0x00]);
        assert!(matches!(
            Envelope::decode(&b),
            Err(Error::UnsupportedMessageKind)
        ));
    }

    #[test]
    fn ignores_unknown_fields() {
        let mut b = env(Body::Text(Text("hi".into())))
            .encode()
            .unwrap()
            .to_vec();
        b.extend_from_slice(&[0xa8, 0x03, 0x2a]); // field 53, varint 42
        assert_eq!(
            Envelope::decode(&b).unwrap(),
            env(Body::Text(Text("hi".into())))
        );
    }

    #[test]
    fn rejects_bad_ids_versions_names_and_sizes() {
        let mut e = pb::Envelope {
            version: 2,
            message_id: vec![7; 16],
            sent_at_ms: 1,
            reply_to: vec![],
            body: Some(pb::envelope::Body::Text(pb::Text { text: "x".into() })),
        };
        assert!(matches!(
            Envelope::decode(&e.encode_to_vec()),
            Err(Error::UnsupportedVersion { version: 2, .. })
        ));
        e.version = 1;
        e.message_id = vec![7; 15];
        assert!(Envelope::decode(&e.encode_to_vec()).is_err());
        e.message_id = vec![7; 16];
        e.reply_to = vec![1; 3];
        assert!(Envelope::decode(&e.encode_to_vec()).is_err());
        for name in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "a\u{0}b",
            "new\nline",
        ] {
            let f = env(Body::File(FileInfo {
                name: name.into(),
                mime: "text/plain".into(),
                attachment: att(),
            }));
            assert!(f.encode().is_err(), "{name:?}");
        }
        let big = env(Body::Text(Text("x".repeat(MAX_TEXT_BYTES + 1))));
        assert!(matches!(big.encode(), Err(Error::TextTooLong { .. })));
        let mut a = att();
        a.size = MAX_ATTACHMENT_BYTES + 1;
        let f = env(Body::File(FileInfo {
            name: "a.bin".into(),
            mime: "application/octet-stream".into(),
            attachment: a,
        }));
        assert!(matches!(f.encode(), Err(Error::TooLarge { .. })));
        let v = env(Body::Voice(Voice {
            duration_ms: MAX_VOICE_MS + 1,
            waveform: vec![],
            attachment: att(),
        }));
        assert!(v.encode().is_err());
    }

    #[test]
    fn every_kind_round_trips() {
        for body in [
            Body::Text(Text("héllo, 世界".into())),
            Body::Image(Image {
                mime: "image/jpeg".into(),
                width: 640,
                height: 480,
                thumbnail: vec![1, 2, 3],
                attachment: att(),
            }),
            Body::File(FileInfo {
                name: "report.pdf".into(),
                mime: "application/pdf".into(),
                attachment: att(),
            }),
            Body::Voice(Voice {
                duration_ms: 4200,
                waveform: vec![0, 10, 200],
                attachment: att(),
            }),
            Body::Receipt(vec![[3; 16], [4; 16]]),
            Body::ContactCard(ContactCard {
                queue: queue(),
                display_name: "Ada".into(),
            }),
            Body::QueueUpdate(queue()),
        ] {
            let e = env(body);
            assert_eq!(Envelope::decode(&e.encode().unwrap()).unwrap(), e);
        }
    }

    #[test]
    fn text_envelope_test_vector() {
        // A change to the envelope format shows up here.
        let e = Envelope {
            id: [0x11; 16],
            sent_at: UnixTime(1000),
            reply_to: None,
            body: Body::Text(Text("hi".into())),
        };
        let hex: String = e
            .encode()
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "080112101111111111111111111111111111111118e80752040a026869"
        );
    }

    #[test]
    fn debug_hides_keys_and_text() {
        let s = format!("{:?}", env(Body::Text(Text("secret words".into()))));
        assert!(!s.contains("secret words"));
        let s = format!("{:?}", att());
        assert!(!s.contains("171") && !s.to_lowercase().contains("ab, ab"));
    }
}
