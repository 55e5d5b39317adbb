//! Voice clips: Opus audio in an Ogg container. The core checks the
//! container (every page's CRC, an `OpusHead` and an `OpusTags` header,
//! one logical stream) and the duration limit; recording and playback
//! belong to the clients. The only importer of the `ogg` crate.

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
