//! Voice clips: Opus audio in an Ogg container. The core checks the
//! container (every page's CRC, an `OpusHead` and an `OpusTags` header,
//! one logical stream) and the duration limit, writes the container around
//! Opus packets an encoder made ([`mux`]), hands a decoder a clip's
//! packets ([`packets`]) and draws its waveform preview ([`waveform`]);
//! capturing, encoding and playing sound belong to the platforms. The only
//! importer of the `ogg` crate.

use std::io::Cursor;

use postern_core::consts::MAX_VOICE_MS;
use postern_core::{Error, Result};

/// Largest voice clip file accepted.
pub const MAX_VOICE_BYTES: usize = 20 * 1024 * 1024;
/// Opus always counts granule positions at 48 kHz.
const OPUS_RATE: u64 = 48_000;
/// Most packets read from one clip.
const MAX_PACKETS: usize = 200_000;

/// What the container check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceInfo {
    /// Duration in milliseconds.
    pub duration_ms: u32,
    /// Channel count from `OpusHead`.
    pub channels: u8,
}

fn bad() -> Error {
    Error::Malformed { what: "voice clip" }
}

/// Validates an Opus-in-Ogg clip and returns its duration.
pub fn validate_voice_clip(bytes: &[u8]) -> Result<VoiceInfo> {
    if bytes.len() > MAX_VOICE_BYTES {
        return Err(Error::TooLarge {
            what: "voice clip",
            len: bytes.len(),
            max: MAX_VOICE_BYTES,
        });
    }
    let mut r = ogg::PacketReader::new(Cursor::new(bytes));
    let head = r.read_packet().map_err(|_| bad())?.ok_or_else(bad)?;
    let serial = head.stream_serial();
    // OpusHead: magic, version 1, channels, pre-skip (u16 LE), ...
    let h = &head.data;
    if h.len() < 19 || h.get(..8) != Some(b"OpusHead".as_slice()) || h.get(8) != Some(&1) {
        return Err(bad());
    }
    let channels = *h.get(9).ok_or_else(bad)?;
    if channels == 0 {
        return Err(bad());
    }
    let pre_skip = u64::from(u16::from_le_bytes([
        *h.get(10).ok_or_else(bad)?,
        *h.get(11).ok_or_else(bad)?,
    ]));
    let tags = r.read_packet().map_err(|_| bad())?.ok_or_else(bad)?;
    if tags.stream_serial() != serial || tags.data.get(..8) != Some(b"OpusTags".as_slice()) {
        return Err(bad());
    }
    let mut last_granule = 0u64;
    let mut audio_packets = 0usize;
    let mut ended = false;
    while let Some(p) = r.read_packet().map_err(|_| bad())? {
        if p.stream_serial() != serial || ended {
            return Err(bad());
        }
        audio_packets += 1;
        if audio_packets > MAX_PACKETS {
            return Err(bad());
        }
        if p.last_in_page() {
            last_granule = p.absgp_page();
        }
        ended = p.last_in_stream();
    }
    if audio_packets == 0 || !ended {
        return Err(bad());
    }
    let samples = last_granule.checked_sub(pre_skip).ok_or_else(bad)?;
    let ms = samples.saturating_mul(1000) / OPUS_RATE;
    if ms > u64::from(MAX_VOICE_MS) {
        return Err(Error::TooLarge {
            what: "voice clip duration (ms)",
            len: usize::try_from(ms).unwrap_or(usize::MAX),
            max: MAX_VOICE_MS as usize,
        });
    }
    Ok(VoiceInfo {
        duration_ms: u32::try_from(ms).map_err(|_| bad())?,
        channels,
    })
}

/// The Opus packets of a clip, in order, after the container check (the
/// two header packets left out), and the pre-skip in samples at 48 kHz.
pub fn packets(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, u16)> {
    validate_voice_clip(bytes)?;
    let mut r = ogg::PacketReader::new(Cursor::new(bytes));
    let head = r.read_packet().map_err(|_| bad())?.ok_or_else(bad)?;
    let pre_skip = u16::from_le_bytes([
        *head.data.get(10).ok_or_else(bad)?,
        *head.data.get(11).ok_or_else(bad)?,
    ]);
    r.read_packet().map_err(|_| bad())?.ok_or_else(bad)?;
    let mut out = Vec::new();
    while let Some(p) = r.read_packet().map_err(|_| bad())? {
        out.push(p.data);
    }
    Ok((out, pre_skip))
}

/// A preview of a clip's loudness in `bars` bars (0–255 each) drawn from
/// its packets' sizes: a variable-bitrate Opus encoder spends more bytes
/// on louder, busier sound and almost none on silence, so the preview
/// needs no decoder (the browser and the core can draw it too).
pub fn waveform(bytes: &[u8], bars: usize) -> Result<Vec<u8>> {
    let (packets, _) = packets(bytes)?;
    let bars = bars.clamp(1, postern_core::consts::MAX_WAVEFORM_BYTES);
    if packets.is_empty() {
        return Ok(vec![0; bars]);
    }
    let sizes: Vec<usize> = packets.iter().map(Vec::len).collect();
    // Silence costs a few bytes a packet; the floor is the smallest seen.
    let floor = sizes.iter().copied().min().unwrap_or(0);
    let per_bar: Vec<f32> = (0..bars)
        .map(|b| {
            let from = b * sizes.len() / bars;
            let to = ((b + 1) * sizes.len() / bars)
                .max(from + 1)
                .min(sizes.len());
            let slice = sizes.get(from..to).unwrap_or(&[]);
            let sum: usize = slice.iter().map(|s| s.saturating_sub(floor)).sum();
            sum as f32 / slice.len().max(1) as f32
        })
        .collect();
    let top = per_bar.iter().copied().fold(0.0f32, f32::max);
    Ok(per_bar
        .iter()
        .map(|v| {
            if top <= 0.0 {
                0
            } else {
                (v / top * 255.0).round().clamp(0.0, 255.0) as u8
            }
        })
        .collect())
}

/// Samples per channel at 48 kHz in one Opus frame of 20 ms, the frame
/// [`mux`] expects unless told otherwise.
pub const FRAME_SAMPLES_20MS: u32 = 960;

/// Wraps Opus packets in an Ogg container: `OpusHead` (with `pre_skip`
/// and the input rate), `OpusTags`, then one packet per frame of
/// `frame_samples` samples, granule positions counted at 48 kHz and the
/// last packet ending the stream. `valid_samples` (per channel, after the
/// pre-skip) trims the padding of the last frame. The result passes
/// [`validate_voice_clip`].
pub fn mux(
    packets: &[Vec<u8>],
    channels: u8,
    pre_skip: u16,
    input_rate: u32,
    frame_samples: u32,
    valid_samples: u64,
    serial: u32,
) -> Result<Vec<u8>> {
    if frame_samples == 0 {
        return Err(Error::Malformed { what: "voice clip" });
    }
    let sized: Vec<(&[u8], u32)> = packets
        .iter()
        .map(|p| (p.as_slice(), frame_samples))
        .collect();
    mux_sized(
        &sized,
        channels,
        pre_skip,
        input_rate,
        valid_samples,
        serial,
    )
}

/// [`mux`] for packets of differing lengths: each with its samples per
/// channel at 48 kHz.
fn mux_sized(
    packets: &[(&[u8], u32)],
    channels: u8,
    pre_skip: u16,
    input_rate: u32,
    valid_samples: u64,
    serial: u32,
) -> Result<Vec<u8>> {
    if packets.is_empty() || packets.len() > MAX_PACKETS || channels == 0 || channels > 2 {
        return Err(Error::Malformed { what: "voice clip" });
    }
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1);
    head.push(channels);
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&input_rate.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // mapping family 0: mono or stereo
    let vendor = b"Postern";
    let mut tags = Vec::new();
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes());
    let mut out = Vec::new();
    {
        let mut w = ogg::PacketWriter::new(&mut out);
        let io = |_| Error::Malformed { what: "voice clip" };
        w.write_packet(head, serial, ogg::PacketWriteEndInfo::EndPage, 0)
            .map_err(io)?;
        w.write_packet(tags, serial, ogg::PacketWriteEndInfo::EndPage, 0)
            .map_err(io)?;
        let end = u64::from(pre_skip) + valid_samples;
        let n = packets.len();
        let mut granule = u64::from(pre_skip);
        for (i, (p, samples)) in packets.iter().enumerate() {
            granule = (granule + u64::from(*samples)).min(end);
            let last = i + 1 == n;
            // A page every 50 packets (about a second), like common
            // encoders: a damaged page loses little.
            let info = if last {
                ogg::PacketWriteEndInfo::EndStream
            } else if (i + 1) % 50 == 0 {
                ogg::PacketWriteEndInfo::EndPage
            } else {
                ogg::PacketWriteEndInfo::NormalPacket
            };
            let g = if last { end } else { granule };
            w.write_packet(p.to_vec(), serial, info, g).map_err(io)?;
        }
    }
    Ok(out)
}

/// Samples per channel at 48 kHz in an Opus packet, from its TOC byte
/// (RFC 6716, 3.1): the frame length of its configuration times its
/// frame count. `None` for an empty or malformed packet.
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame lengths in samples: SILK 10/20/40/60 ms, hybrid 10/20 ms,
    // CELT 2.5/5/10/20 ms.
    let frame: u32 = match (config, config % 4) {
        (0..=11, 0) | (12..=15, 0 | 2) | (16.., 2) => 480,
        (0..=11, 1) | (12..=15, 1 | 3) | (16.., 3) => 960,
        (0..=11, 2) => 1920,
        (0..=11, _) => 2880,
        (_, 0) => 120,
        _ => 240,
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3F),
    };
    let samples = frame * frames;
    // At most 120 ms in a packet.
    (frames > 0 && samples <= 5760).then_some(samples)
}

/// A browser's recording (WebM holding an Opus track, as MediaRecorder
/// writes it in Chromium and Firefox) remuxed into the Ogg container the
/// core checks: the same Opus packets, not decoded or re-encoded. The
/// WebM is read with a small bounded EBML reader (no element larger than
/// what is left of the input is believed, live recordings' unknown sizes
/// are followed); the result passes [`validate_voice_clip`].
pub fn from_webm(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.len() > MAX_VOICE_BYTES {
        return Err(Error::TooLarge {
            what: "voice recording",
            len: bytes.len(),
            max: MAX_VOICE_BYTES,
        });
    }
    let w = webm::opus_track(bytes)?;
    let mut sized = Vec::with_capacity(w.packets.len());
    let mut total = 0u64;
    for p in &w.packets {
        let n = packet_samples(p).ok_or_else(bad)?;
        total += u64::from(n);
        sized.push((*p, n));
    }
    let valid = total.checked_sub(u64::from(w.pre_skip)).ok_or_else(bad)?;
    let out = mux_sized(
        &sized,
        w.channels,
        w.pre_skip,
        w.input_rate,
        valid,
        0x5745_424d,
    )?;
    validate_voice_clip(&out)?;
    Ok(out)
}

/// Just enough of EBML/Matroska to find an Opus track's packets.
mod webm {
    use super::{MAX_PACKETS, bad};
    use postern_core::Result;

    const EBML: u32 = 0x1A45_DFA3;
    const SEGMENT: u32 = 0x1853_8067;
    const TRACKS: u32 = 0x1654_AE6B;
    const TRACK_ENTRY: u32 = 0xAE;
    const TRACK_NUMBER: u32 = 0xD7;
    const CODEC_ID: u32 = 0x86;
    const CODEC_PRIVATE: u32 = 0x63A2;
    const CLUSTER: u32 = 0x1F43_B675;
    const BLOCK_GROUP: u32 = 0xA0;
    const BLOCK: u32 = 0xA1;
    const SIMPLE_BLOCK: u32 = 0xA3;
    /// Elements whose content is read as more elements (entered, not
    /// skipped); only these may have an unknown size.
    const MASTERS: [u32; 5] = [SEGMENT, TRACKS, TRACK_ENTRY, CLUSTER, BLOCK_GROUP];

    pub(super) struct OpusTrack<'a> {
        pub packets: Vec<&'a [u8]>,
        pub channels: u8,
        pub pre_skip: u16,
        pub input_rate: u32,
    }

    /// A variable-length integer: its value and length. For an ID the
    /// length marker stays in the value; for a size it is removed, and
    /// all ones means "unknown".
    fn vint(b: &[u8], keep_marker: bool) -> Result<(u64, usize, bool)> {
        let first = *b.first().ok_or_else(bad)?;
        let len = first.leading_zeros() as usize + 1;
        if len > 8 {
            return Err(bad());
        }
        let bytes = b.get(..len).ok_or_else(bad)?;
        let mut v: u64 = 0;
        for x in bytes {
            v = (v << 8) | u64::from(*x);
        }
        let marker = 1u64 << (7 * len);
        let value = if keep_marker { v } else { v & (marker - 1) };
        let unknown = !keep_marker && value == marker - 1;
        Ok((value, len, unknown))
    }

    struct Entry<'a> {
        number: Option<u64>,
        codec: Option<&'a [u8]>,
        private: Option<&'a [u8]>,
    }

    pub(super) fn opus_track(b: &[u8]) -> Result<OpusTrack<'_>> {
        let mut at = 0usize;
        let mut first = true;
        let mut entries: Vec<Entry<'_>> = Vec::new();
        let mut blocks: Vec<(u64, &[u8])> = Vec::new();
        while at < b.len() {
            let rest = b.get(at..).ok_or_else(bad)?;
            let (id, id_len, _) = vint(rest, true)?;
            if id_len > 4 {
                return Err(bad());
            }
            let (size, size_len, unknown) = vint(rest.get(id_len..).ok_or_else(bad)?, false)?;
            let id = u32::try_from(id).map_err(|_| bad())?;
            if first && id != EBML {
                return Err(bad());
            }
            first = false;
            let body_at = at + id_len + size_len;
            if MASTERS.contains(&id) {
                if id == TRACK_ENTRY {
                    if entries.len() >= 16 {
                        return Err(bad());
                    }
                    entries.push(Entry {
                        number: None,
                        codec: None,
                        private: None,
                    });
                }
                // Enter it: its children follow.
                at = body_at;
                continue;
            }
            if unknown {
                return Err(bad());
            }
            let size = usize::try_from(size).map_err(|_| bad())?;
            let end = body_at.checked_add(size).ok_or_else(bad)?;
            let body = b.get(body_at..end).ok_or_else(bad)?;
            match (id, entries.last_mut()) {
                (TRACK_NUMBER, Some(e)) => {
                    if body.is_empty() || body.len() > 8 {
                        return Err(bad());
                    }
                    e.number = Some(body.iter().fold(0u64, |v, x| (v << 8) | u64::from(*x)));
                }
                (CODEC_ID, Some(e)) => e.codec = Some(body),
                (CODEC_PRIVATE, Some(e)) => e.private = Some(body),
                (SIMPLE_BLOCK | BLOCK, _) => {
                    let (track, n, _) = vint(body, false)?;
                    // Timecode (2 bytes) and flags (1 byte) follow.
                    let flags = *body.get(n + 2).ok_or_else(bad)?;
                    if (flags >> 1) & 3 != 0 {
                        // Laced blocks: not written for Opus by browsers.
                        return Err(bad());
                    }
                    let frame = body.get(n + 3..).ok_or_else(bad)?;
                    if blocks.len() >= MAX_PACKETS {
                        return Err(bad());
                    }
                    blocks.push((track, frame));
                }
                _ => {}
            }
            at = end;
        }
        let track = entries
            .iter()
            .find(|e| e.codec == Some(b"A_OPUS".as_slice()))
            .ok_or_else(bad)?;
        let number = track.number.ok_or_else(bad)?;
        let head = track.private.ok_or_else(bad)?;
        if head.len() < 19 || head.get(..8) != Some(b"OpusHead".as_slice()) {
            return Err(bad());
        }
        let channels = *head.get(9).ok_or_else(bad)?;
        let pre_skip = u16::from_le_bytes([
            *head.get(10).ok_or_else(bad)?,
            *head.get(11).ok_or_else(bad)?,
        ]);
        let input_rate = u32::from_le_bytes(
            head.get(12..16)
                .and_then(|r| r.try_into().ok())
                .ok_or_else(bad)?,
        );
        let packets: Vec<&[u8]> = blocks
            .into_iter()
            .filter(|(t, _)| *t == number)
            .map(|(_, f)| f)
            .collect();
        if packets.is_empty() {
            return Err(bad());
        }
        Ok(OpusTrack {
            packets,
            channels,
            pre_skip,
            input_rate,
        })
    }
}
