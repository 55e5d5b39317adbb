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

#[test]
fn mux_refuses_nothing_to_wrap_and_packets_refuse_a_broken_clip() {
    use postern_media::voice::{FRAME_SAMPLES_20MS, mux, packets, waveform};
    assert!(mux(&[], 1, 312, 48_000, FRAME_SAMPLES_20MS, 0, 1).is_err());
    assert!(mux(&[vec![1]], 0, 312, 48_000, FRAME_SAMPLES_20MS, 960, 1).is_err());
    assert!(mux(&[vec![1]], 3, 312, 48_000, FRAME_SAMPLES_20MS, 960, 1).is_err());
    let ok = mux(&[vec![1, 2, 3]], 1, 312, 48_000, FRAME_SAMPLES_20MS, 960, 1).unwrap();
    let mut broken = ok.clone();
    let last = broken.len() - 1;
    broken[last] ^= 0xff; // the page CRC no longer matches
    assert!(packets(&broken).is_err());
    assert!(waveform(&broken, 40).is_err());
    assert!(packets(&ok[..ok.len() - 2]).is_err());
}

#[test]
fn muxed_packets_make_a_valid_clip_of_the_right_length_and_come_back_out() {
    use postern_media::voice::{FRAME_SAMPLES_20MS, mux, packets};
    // 3.01 s: 151 frames of 20 ms, the last one padded.
    let frames: Vec<Vec<u8>> = (0..151u32)
        .map(|i| vec![(i % 251) as u8; 10 + (i % 7) as usize])
        .collect();
    let bytes = mux(&frames, 1, 312, 44_100, FRAME_SAMPLES_20MS, 144_480, 0x5057).unwrap();
    let info = validate_voice_clip(&bytes).unwrap();
    assert_eq!(info.duration_ms, 3010);
    assert_eq!(info.channels, 1);
    let (back, pre_skip) = packets(&bytes).unwrap();
    assert_eq!(pre_skip, 312);
    assert_eq!(back, frames);
}

#[test]
fn the_waveform_follows_the_packet_sizes() {
    use postern_media::voice::{FRAME_SAMPLES_20MS, mux, waveform};
    // One second of silence (3-byte packets), one loud (120 bytes), one
    // half as loud.
    let mut frames = vec![vec![0u8; 3]; 50];
    frames.extend(vec![vec![7u8; 120]; 50]);
    frames.extend(vec![vec![7u8; 61]; 50]);
    let bytes = mux(&frames, 1, 312, 48_000, FRAME_SAMPLES_20MS, 150 * 960, 9).unwrap();
    let w = waveform(&bytes, 3).unwrap();
    assert_eq!(w, vec![0, 255, 126]); // (61 - 3) / (120 - 3) of the loudest
    // Bars are bounded by the core's limit, and at least one.
    assert_eq!(
        waveform(&bytes, 10_000).unwrap().len(),
        postern_core::consts::MAX_WAVEFORM_BYTES
    );
    assert_eq!(waveform(&bytes, 0).unwrap().len(), 1);
}

/// 1.5 s from Chromium's MediaRecorder (`audio/webm;codecs=opus`, the fake
/// microphone's beeps), recorded in headless Chromium.
const CHROMIUM_WEBM: &[u8] = include_bytes!("data/chromium-mediarecorder.webm");

#[test]
fn a_browser_recording_that_is_not_webm_opus_is_refused() {
    use postern_media::voice::from_webm;
    for bad in [
        Vec::new(),
        b"not webm at all".to_vec(),
        CHROMIUM_WEBM[..40].to_vec(),
        CHROMIUM_WEBM[..CHROMIUM_WEBM.len() / 2 + 3].to_vec(),
        vec![0xff; 64],
    ] {
        assert!(from_webm(&bad).is_err(), "{} bytes", bad.len());
    }
    // Another codec than Opus.
    let mut vorbis = CHROMIUM_WEBM.to_vec();
    let i = vorbis.windows(6).position(|w| w == b"A_OPUS").unwrap();
    vorbis[i..i + 6].copy_from_slice(b"A_VORB");
    assert!(from_webm(&vorbis).is_err());
    // An element claiming more bytes than there are (no allocation for
    // it, no panic): the first block's size byte made huge.
    let mut huge = CHROMIUM_WEBM.to_vec();
    let j = huge.windows(2).position(|w| w == [0xA3, 0x8C]).unwrap();
    huge[j + 1] = 0x01; // an 8-byte size follows: 0x01 + 7 bytes of data
    assert!(from_webm(&huge).is_err());
}

#[test]
fn a_browser_recording_is_remuxed_into_a_valid_clip_without_reencoding() {
    use postern_media::voice::{from_webm, packet_samples, packets};
    let ogg = from_webm(CHROMIUM_WEBM).unwrap();
    let info = validate_voice_clip(&ogg).unwrap();
    assert!(
        (1_000..=1_800).contains(&info.duration_ms),
        "{} ms",
        info.duration_ms
    );
    assert_eq!(info.channels, 1);
    let (out, _) = packets(&ogg).unwrap();
    // The same Opus packets, in order: each one is found in the WebM.
    assert!(out.len() >= 20, "{} packets", out.len());
    let mut from = 0;
    for p in &out {
        let at = CHROMIUM_WEBM[from..]
            .windows(p.len())
            .position(|w| w == p.as_slice())
            .expect("a packet the recording holds");
        from += at + p.len();
        assert!(packet_samples(p).is_some());
    }
    // Opus TOC bytes: 20 ms CELT (config 31), 60 ms SILK (config 3),
    // code 3 with 2 frames of 2.5 ms.
    assert_eq!(packet_samples(&[0xF8]), Some(960));
    assert_eq!(packet_samples(&[0x18]), Some(2880));
    assert_eq!(packet_samples(&[0x83, 0x02]), Some(240));
    assert_eq!(packet_samples(&[]), None);
    assert_eq!(
        packet_samples(&[0x1B, 0x03]),
        None,
        "3 x 60 ms is over 120 ms"
    );
}
