//! Every kind of message end to end: the attachment is chunked and
//! encrypted, the chunks arrive shuffled and duplicated and are reassembled
//! and verified; the envelope that carries the key travels sealed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{T0, User, connect, rng};
use postern_core::attachment;
use postern_core::consts::CHUNK_PLAINTEXT_BYTES;
use postern_core::crypto::hash::Sha256Stream;
use postern_core::message::{Body, Envelope, FileInfo, Image, Text, Voice};
use postern_core::{KvStore, MemStore};
use rand::Rng;
use rand::seq::SliceRandom;

fn ogg_clip() -> Vec<u8> {
    use ogg::writing::{PacketWriteEndInfo, PacketWriter};
    let mut w = PacketWriter::new(Vec::new());
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 1, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0]);
    w.write_packet(head, 7, PacketWriteEndInfo::EndPage, 0)
        .unwrap();
    w.write_packet(
        b"OpusTags\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(),
        7,
        PacketWriteEndInfo::EndPage,
        0,
    )
    .unwrap();
    for i in 1..=100u64 {
        let info = if i == 100 {
            PacketWriteEndInfo::EndStream
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        w.write_packet(vec![0xfc; 40], 7, info, 312 + i * 960)
            .unwrap();
    }
    w.into_inner()
}

fn queue() -> postern_core::message::QueueAddress {
    postern_core::message::QueueAddress {
        relay: "postern-relay://relay.example:443#AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            .parse()
            .unwrap(),
        sender_id: [9; 16],
        blob_key: zeroize::Zeroizing::new([3; 32]),
    }
}

fn jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(200, 150, |x, y| image::Rgb([x as u8, y as u8, 60]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

/// Sends `content` as an attachment from nobody in particular to `store`,
/// chunks shuffled and partly duplicated, and returns what the receiver reads.
fn transfer(
    content: &[u8],
    store: &mut MemStore,
    r: &mut rand_chacha::ChaCha20Rng,
) -> (postern_core::message::AttachmentRef, Vec<u8>) {
    let mut h = Sha256Stream::new();
    h.update(content);
    let aref = attachment::prepare(content.len() as u64, h.finish(), r).unwrap();
    let mut wire: Vec<Vec<u8>> = content
        .chunks(CHUNK_PLAINTEXT_BYTES)
        .enumerate()
        .map(|(i, c)| attachment::seal_chunk(&aref, i as u32, c).unwrap())
        .collect();
    if wire.is_empty() {
        wire.push(attachment::seal_chunk(&aref, 0, &[]).unwrap());
    }
    let dups: Vec<Vec<u8>> = (0..wire.len() / 2 + 1)
        .map(|_| wire[r.random_range(0..wire.len())].clone())
        .collect();
    wire.extend(dups);
    wire.shuffle(r);
    for w in &wire {
        let cs = attachment::receive_chunk(store, &aref, w).unwrap();
        store.commit(cs).unwrap();
    }
    let v = attachment::verify(store, &aref).unwrap();
    let total = attachment::chunk_count(aref.size).unwrap();
    let read = (0..total)
        .flat_map(|i| attachment::read_chunk(store, &v, i).unwrap().to_vec())
        .collect();
    (aref, read)
}

#[test]
fn every_kind_round_trips_through_chunks_and_sealed_envelopes() {
    let mut r = rng(900);
    let (mut alice, mut bob) = (User::new(&mut r), User::new(&mut r));
    connect(&mut alice, &mut bob, &mut r);

    // Image: re-encoded before sending.
    let img = postern_media::images::sanitize_image(&jpeg()).unwrap();
    // File: arbitrary bytes.
    let file: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    // Voice: checked container.
    let clip = ogg_clip();
    let info = postern_media::voice::validate_voice_clip(&clip).unwrap();

    let mut inbox = MemStore::new();
    let cases: Vec<(Body, Option<Vec<u8>>)> = vec![
        (Body::Text(Text("plain text".into())), None),
        (
            Body::Text(Text("x".repeat(postern_core::consts::MAX_TEXT_BYTES))),
            None,
        ),
        (
            Body::Receipt(vec![[4; 16]; postern_core::consts::MAX_RECEIPT_IDS]),
            None,
        ),
        (
            Body::ContactCard(postern_core::message::ContactCard {
                queue: queue(),
                display_name: "n".repeat(postern_core::consts::MAX_DISPLAY_NAME_BYTES),
            }),
            None,
        ),
        (Body::QueueUpdate(queue()), None),
        {
            let (aref, read) = transfer(&img.bytes, &mut inbox, &mut r);
            assert_eq!(read, img.bytes);
            (
                Body::Image(Image {
                    mime: img.mime.into(),
                    width: img.width,
                    height: img.height,
                    thumbnail: img.thumbnail.clone(),
                    attachment: aref,
                }),
                Some(read),
            )
        },
        {
            let (aref, read) = transfer(&file, &mut inbox, &mut r);
            assert_eq!(read, file);
            (
                Body::File(FileInfo {
                    name: "data.bin".into(),
                    mime: "application/octet-stream".into(),
                    attachment: aref,
                }),
                Some(read),
            )
        },
        {
            let (aref, read) = transfer(&clip, &mut inbox, &mut r);
            assert_eq!(read, clip);
            (
                Body::Voice(Voice {
                    duration_ms: info.duration_ms,
                    waveform: vec![3; 50],
                    attachment: aref,
                }),
                Some(read),
            )
        },
    ];
    for (body, _) in cases {
        let e = Envelope {
            id: [5; 16],
            sent_at: T0,
            reply_to: None,
            body,
        };
        let sealed = alice.seal(&bob.addr, &e.encode().unwrap(), &mut r);
        let (_, pt) = bob.open(&sealed, &mut r).unwrap();
        assert_eq!(Envelope::decode(&pt).unwrap(), e);
    }
    assert_eq!(inbox.attachments().unwrap().len(), 3);
}
