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
    if packets.is_empty() || channels == 0 || channels > 2 || frame_samples == 0 {
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
        for (i, p) in packets.iter().enumerate() {
            let granule =
                (u64::from(pre_skip) + (i as u64 + 1) * u64::from(frame_samples)).min(end);
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
            w.write_packet(p.clone(), serial, info, g).map_err(io)?;
        }
    }
    Ok(out)
}
