//! Sending a file: what it becomes, and how it is queued.
//!
//! [`Attachment::from_file`] reads a file as what it is — a voice clip
//! (validated Ogg Opus), an image (JPEG or PNG, re-encoded so none of the
//! original's metadata leaves) or any other file — and
//! [`queue_attachment`] seals the message announcing it and every chunk,
//! and puts them all into the outbox in **one** commit before anything
//! leaves: an interrupted transfer is finished from the outbox, and there
//! is never a message whose chunks were not queued.

use postern_core::consts::MAX_ATTACHMENT_BYTES;
use postern_core::courier::{self, Outgoing};
use postern_core::crypto::hash::Sha256Stream;
use postern_core::message::{AttachmentRef, Body, Envelope, FileInfo, Image, Voice};
use postern_core::store::OutboxEntry;
use postern_core::{Address, Error, KvStore, UnixTime, attachment};
use postern_media::{images, voice};
use rand_core::{CryptoRng, RngCore};

/// Bars in a voice clip's waveform preview.
const WAVEFORM_BARS: usize = 48;

/// What a file is sent as.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Voice {
        duration_ms: u32,
        waveform: Vec<u8>,
    },
    Image {
        mime: String,
        width: u32,
        height: u32,
        thumbnail: Vec<u8>,
    },
    File {
        name: String,
        mime: String,
    },
}

/// A file ready to be queued: the bytes that will be sent and what
/// announces them.
#[derive(Debug)]
pub struct Attachment {
    bytes: Vec<u8>,
    kind: Kind,
}

/// A MIME type from a file name's extension (only to label a file for the
/// recipient; nothing is decided by it).
pub fn mime_for(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt") => "text/plain",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        Some("json") => "application/json",
        Some("ogg" | "opus") => "audio/ogg",
        _ => "application/octet-stream",
    }
}

impl Attachment {
    /// `raw`, the contents of a file called `name`: a voice clip when
    /// `voice` (refused unless it is a valid clip), else an image when it
    /// looks like one (refused if it does not decode), else a file.
    pub fn from_file(raw: Vec<u8>, name: &str, voice: bool) -> Result<Attachment, Error> {
        if raw.len() as u64 > MAX_ATTACHMENT_BYTES {
            return Err(Error::TooLarge {
                what: "attachment",
                len: raw.len(),
                max: usize::try_from(MAX_ATTACHMENT_BYTES).unwrap_or(usize::MAX),
            });
        }
        if voice {
            let info = voice::validate_voice_clip(&raw)?;
            let waveform = voice::waveform(&raw, WAVEFORM_BARS)?;
            return Ok(Attachment {
                bytes: raw,
                kind: Kind::Voice {
                    duration_ms: info.duration_ms,
                    waveform,
                },
            });
        }
        if images::is_image(&raw) {
            let img = images::sanitize_image(&raw)?;
            return Ok(Attachment {
                bytes: img.bytes,
                kind: Kind::Image {
                    mime: img.mime.to_owned(),
                    width: img.width,
                    height: img.height,
                    thumbnail: img.thumbnail,
                },
            });
        }
        let name = if name.is_empty() { "file" } else { name };
        Ok(Attachment {
            kind: Kind::File {
                name: name.to_owned(),
                mime: mime_for(name).to_owned(),
            },
            bytes: raw,
        })
    }

    /// What it is, for the user: "image", "voice clip" or "file".
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Image { .. } => "image",
            Kind::Voice { .. } => "voice clip",
            Kind::File { .. } => "file",
        }
    }

    /// The bytes that will be sent (an image after re-encoding).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn body(&self, attachment: AttachmentRef) -> Body {
        match &self.kind {
            Kind::Voice {
                duration_ms,
                waveform,
            } => Body::Voice(Voice {
                duration_ms: *duration_ms,
                waveform: waveform.clone(),
                attachment,
            }),
            Kind::Image {
                mime,
                width,
                height,
                thumbnail,
            } => Body::Image(Image {
                mime: mime.clone(),
                width: *width,
                height: *height,
                thumbnail: thumbnail.clone(),
                attachment,
            }),
            Kind::File { name, mime } => Body::File(FileInfo {
                name: name.clone(),
                mime: mime.clone(),
                attachment,
            }),
        }
    }
}

/// The file name a received attachment is saved under, from the message
/// that announced it (`None` when that message is not in the history).
pub fn download_name(body: Option<&Body>, message_id: &[u8; 16]) -> String {
    let short: String = message_id
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    match body {
        // The name was checked on decode: no path separators, no "..".
        Some(Body::File(f)) => f.name.clone(),
        Some(Body::Image(i)) if i.mime == "image/png" => format!("image-{short}.png"),
        Some(Body::Image(_)) => format!("image-{short}.jpg"),
        Some(Body::Voice(_)) => format!("voice-{short}.ogg"),
        _ => format!("attachment-{short}.bin"),
    }
}

/// What [`queue_attachment`] put into the outbox.
#[derive(Debug)]
pub struct Queued {
    /// The message announcing the attachment.
    pub envelope: Envelope,
    /// The attachment as the message describes it.
    pub attachment: AttachmentRef,
    /// The outbox entries, in the order to send them: the message first,
    /// then the chunks.
    pub entries: Vec<([u8; 16], Outgoing)>,
}

/// Seals the message announcing `a` and every chunk of it for `peer`,
/// and commits them all into the outbox in one change set.
pub fn queue_attachment<R: RngCore + CryptoRng>(
    store: &mut dyn KvStore,
    peer: &Address,
    a: Attachment,
    now: UnixTime,
    rng: &mut R,
) -> Result<Queued, Error> {
    let mut h = Sha256Stream::new();
    h.update(&a.bytes);
    let aref = attachment::prepare(a.bytes.len() as u64, h.finish(), rng)?;
    let (env, out, mut cs) = courier::send(&*store, peer, a.body(aref.clone()), None, now, rng)?;
    cs.add_outbox(OutboxEntry {
        id: env.id,
        peer: *peer,
        payload: out.to_bytes(),
    });
    let mut entries = vec![(env.id, out)];
    for (n, batch) in (1u32..).zip(courier::attachment_outgoing(
        &*store, peer, &aref, &a.bytes, rng,
    )?) {
        let id = part_id(&env.id, n);
        cs.add_outbox(OutboxEntry {
            id,
            peer: *peer,
            payload: batch.to_bytes(),
        });
        entries.push((id, batch));
    }
    drop(a);
    store.commit(cs)?;
    Ok(Queued {
        envelope: env,
        attachment: aref,
        entries,
    })
}

/// The outbox id of part `n` (from 1) of a message's chunks: derived from
/// the message id, so that the parts still waiting in the outbox are
/// known after a restart (outbox ids never leave the device).
pub fn part_id(message: &[u8; 16], n: u32) -> [u8; 16] {
    let mut h = Sha256Stream::new();
    h.update(b"postern/outbox-part/v1");
    h.update(message);
    h.update(&n.to_be_bytes());
    let d = h.finish();
    let mut id = [0u8; 16];
    id.copy_from_slice(d.get(..16).unwrap_or(&[0; 16]));
    id
}

/// How many outbox entries carry the chunks of an attachment of `size`
/// bytes.
pub fn part_count(size: u64) -> Result<usize, Error> {
    let chunks = attachment::chunk_count(size)? as usize;
    Ok(chunks.div_ceil(courier::MAX_BLOBS_PER_OUTBOX_ENTRY))
}

/// Of a message's `parts`, how many still wait in an outbox holding the
/// entries `waiting`.
pub fn parts_waiting(
    waiting: &std::collections::BTreeSet<[u8; 16]>,
    message: &[u8; 16],
    parts: usize,
) -> usize {
    (1..=u32::try_from(parts).unwrap_or(u32::MAX))
        .filter(|n| waiting.contains(&part_id(message, *n)))
        .count()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::inbox::{self, Event, Receipts};
    use crate::outbox;
    use crate::testing::pair;
    use postern_core::courier::OwnQueue;
    use postern_core::relay_proto::Blob;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const T: UnixTime = UnixTime(1_800_000_000_000);

    #[test]
    fn names_come_from_the_message_and_never_from_nothing() {
        let id = [0xab; 16];
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let aref = attachment::prepare(1, [0; 32], &mut rng).unwrap();
        let file = Body::File(FileInfo {
            name: "report.pdf".into(),
            mime: "application/pdf".into(),
            attachment: aref,
        });
        assert_eq!(download_name(Some(&file), &id), "report.pdf");
        assert_eq!(download_name(None, &id), "attachment-abababab.bin");
    }

    #[test]
    fn what_is_not_what_it_claims_is_refused_before_anything_is_queued() {
        // Too large, by one byte.
        let big = vec![0u8; MAX_ATTACHMENT_BYTES as usize + 1];
        assert!(matches!(
            Attachment::from_file(big, "big.bin", false),
            Err(Error::TooLarge { .. })
        ));
        // Not a voice clip.
        assert!(Attachment::from_file(b"not ogg".to_vec(), "v.ogg", true).is_err());
        // A PNG signature over junk is an image that does not decode: it
        // is refused, not sent as a file with its metadata intact.
        let mut fake_png = b"\x89PNG\r\n\x1a\n".to_vec();
        fake_png.extend([0x41u8; 64]);
        assert!(Attachment::from_file(fake_png, "x.png", false).is_err());
        // Anything else is a file, labelled by its name.
        let a = Attachment::from_file(b"%PDF-1.7".to_vec(), "Report.PDF", false).unwrap();
        assert_eq!(a.kind(), "file");
        assert_eq!(
            a.kind,
            Kind::File {
                name: "Report.PDF".into(),
                mime: "application/pdf".into()
            }
        );
        let a = Attachment::from_file(vec![1, 2, 3], "", false).unwrap();
        assert!(matches!(a.kind, Kind::File { ref name, .. } if name == "file"));
    }

    #[test]
    fn an_image_is_reencoded_before_it_is_queued() {
        let img = image_png();
        let a = Attachment::from_file(img.clone(), "photo.png", false).unwrap();
        assert_eq!(a.kind(), "image");
        let Kind::Image { width, height, .. } = a.kind else {
            panic!()
        };
        assert_eq!((width, height), (4, 3));
        assert_ne!(a.bytes, img, "the sent bytes are a fresh encoding");
        let leaked = a.bytes.windows(15).any(|w| w == b"secret location");
        assert!(!leaked, "the comment was not stripped");
    }

    /// A 4×3 RGB PNG carrying a text comment ("secret location").
    fn image_png() -> Vec<u8> {
        vec![
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
            0x44, 0x52, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x03, 0x08, 0x02, 0x00, 0x00,
            0x00, 0x3b, 0x96, 0x39, 0x91, 0x00, 0x00, 0x00, 0x17, 0x74, 0x45, 0x58, 0x74, 0x43,
            0x6f, 0x6d, 0x6d, 0x65, 0x6e, 0x74, 0x00, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x20,
            0x6c, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x33, 0xee, 0x7c, 0x68, 0x00, 0x00,
            0x00, 0x18, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x60, 0x60, 0xb0, 0xb1,
            0xb1, 0xa9, 0xa8, 0xa8, 0xd8, 0xb2, 0x65, 0x0b, 0x03, 0x4e, 0x0e, 0x00, 0xd7, 0x4f,
            0x0c, 0xa9, 0xef, 0xe5, 0x02, 0x14, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
            0xae, 0x42, 0x60, 0x82,
        ]
    }

    #[test]
    fn a_file_and_all_its_chunks_are_queued_in_one_commit_and_arrive_whole() {
        let mut r = ChaCha20Rng::seed_from_u64(1);
        let mut p = pair(&mut r, T);
        let q: OwnQueue = postern_core::courier::own_queues(&p.alice)
            .unwrap()
            .into_iter()
            .find(|q| q.recipient_id == p.alice_queue.recipient_id)
            .unwrap();
        let mut receipts = Receipts::new();
        let intro: Vec<(u64, &Blob)> = p
            .intro
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64, b))
            .collect();
        inbox::receive(&mut p.alice, &q, intro, T, &mut r, &mut receipts).unwrap();

        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let a = Attachment::from_file(data.clone(), "notes.txt", false).unwrap();
        let queued = queue_attachment(&mut p.bob, &p.alice_addr, a, T, &mut r).unwrap();
        assert!(queued.entries.len() >= 2, "the message and its chunks");
        assert_eq!(queued.entries[0].0, queued.envelope.id, "the message first");
        // Everything is in the outbox before anything has left.
        let waiting = outbox::waiting(&p.bob).unwrap();
        assert_eq!(waiting.len(), queued.entries.len());
        for ((id, out), (wid, wout)) in queued.entries.iter().zip(&waiting) {
            assert_eq!(id, wid);
            assert_eq!(out.blobs, wout.blobs);
        }
        // Its parts are found in the outbox by the message id alone.
        let parts = part_count(data.len() as u64).unwrap();
        assert_eq!(parts, queued.entries.len() - 1);
        for (n, (id, _)) in (1u32..).zip(&queued.entries[1..]) {
            assert_eq!(*id, part_id(&queued.envelope.id, n));
        }
        let mut ids: std::collections::BTreeSet<[u8; 16]> =
            waiting.iter().map(|(id, _)| *id).collect();
        assert_eq!(parts_waiting(&ids, &queued.envelope.id, parts), parts);
        ids.remove(&part_id(&queued.envelope.id, 1));
        assert_eq!(parts_waiting(&ids, &queued.envelope.id, parts), parts - 1);
        assert_eq!(parts_waiting(&ids, &[0xEE; 16], parts), 0);
        // Alice gets the message, then the whole attachment.
        let blobs: Vec<Blob> = queued
            .entries
            .iter()
            .flat_map(|(_, o)| o.blobs.iter().cloned())
            .collect();
        let items: Vec<(u64, &Blob)> = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64, b))
            .collect();
        let batch = inbox::receive(&mut p.alice, &q, items, T, &mut r, &mut receipts).unwrap();
        assert!(batch.events.iter().any(|e| matches!(
            e,
            Event::Message { envelope, .. } if envelope.id == queued.envelope.id
        )));
        let ready = batch.events.iter().find_map(|e| match e {
            Event::AttachmentReady { attachment, .. } => Some(attachment.clone()),
            _ => None,
        });
        assert_eq!(
            ready.as_ref(),
            Some(&queued.attachment),
            "{:?}",
            batch.events
        );
        assert_eq!(queued.attachment.size, data.len() as u64);
    }

    #[test]
    fn nothing_is_queued_for_a_stranger() {
        let mut r = ChaCha20Rng::seed_from_u64(2);
        let mut p = pair(&mut r, T);
        let a = Attachment::from_file(vec![7; 10], "a.bin", false).unwrap();
        let stranger = p.bob_addr;
        assert!(queue_attachment(&mut p.alice, &stranger, a, T, &mut r).is_err());
        assert!(outbox::waiting(&p.alice).unwrap().is_empty());
    }
}
