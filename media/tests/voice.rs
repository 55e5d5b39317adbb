//! Voice clips: the Opus-in-Ogg container and the duration limit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use postern_core::Error;
use postern_core::consts::MAX_VOICE_MS;
use postern_media::voice::validate_voice_clip;

/// An Opus-in-Ogg file of `seconds` seconds (20 ms packets; the audio
/// payloads are placeholders: the core checks the container, not the codec).
fn clip(seconds: u64, head_magic: &[u8], end_stream: bool) -> Vec<u8> {
    let mut w = PacketWriter::new(Vec::new());
    let serial = 0x1234;
    let mut head = head_magic.to_vec();
    head.extend_from_slice(&[1, 1, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0]); // v1, mono, pre-skip 312, 48 kHz
    w.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)
        .unwrap();
    w.write_packet(
        b"OpusTags\x07\x00\x00\x00postern\x00\x00\x00\x00".to_vec(),
        serial,
        PacketWriteEndInfo::EndPage,
        0,
    )
    .unwrap();
    let packets = seconds * 50;
    for i in 1..=packets {
        let last = i == packets;
        let info = if last && end_stream {
            PacketWriteEndInfo::EndStream
        } else if i % 50 == 0 || last {
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        w.write_packet(vec![0xfc, 0xff, 0xfe], serial, info, 312 + i * 960)
            .unwrap();
    }
    w.into_inner()
}

#[test]
fn rejects_bad_containers() {
    assert!(validate_voice_clip(b"").is_err());
    assert!(validate_voice_clip(b"not ogg at all").is_err());
    let good = clip(3, b"OpusHead", true);
    for cut in [10, 40, good.len() / 2, good.len() - 1] {
        assert!(validate_voice_clip(&good[..cut]).is_err(), "cut {cut}");
    }
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40; // CRC no longer matches
    assert!(validate_voice_clip(&flipped).is_err());
    assert!(validate_voice_clip(&clip(3, b"VorbisXX", true)).is_err());
    assert!(
        validate_voice_clip(&clip(3, b"OpusHead", false)).is_err(),
        "stream never ends"
    );
    assert!(matches!(
        validate_voice_clip(&vec![0; postern_media::voice::MAX_VOICE_BYTES + 1]),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn rejects_clips_over_the_duration_limit() {
    let secs = u64::from(MAX_VOICE_MS) / 1000 + 1;
    assert!(matches!(
        validate_voice_clip(&clip(secs, b"OpusHead", true)),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn accepts_opus_in_ogg_and_measures_duration() {
    let info = validate_voice_clip(&clip(12, b"OpusHead", true)).unwrap();
    assert_eq!(info.duration_ms, 12_000);
    assert_eq!(info.channels, 1);
}
