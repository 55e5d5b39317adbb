//! Opus encoding and decoding of mono 48 kHz sound (libopus).

use postern_core::consts::MAX_VOICE_MS;
use postern_media::voice;

use crate::{AudioError, Result};

/// The rate everything here works at (Opus's own).
pub const RATE: u32 = 48_000;
/// Samples in one 20 ms frame.
const FRAME: usize = voice::FRAME_SAMPLES_20MS as usize;
/// Largest Opus packet written (libopus's recommended buffer).
const MAX_PACKET: usize = 4000;
/// Bit rate of recorded speech: clear voice, small clips (a minute is
/// about 180 KB).
const BITRATE: i32 = 24_000;
/// Most samples decoded from one clip (its duration limit).
const MAX_SAMPLES: usize = (MAX_VOICE_MS as usize / 1000 + 1) * RATE as usize;

fn codec(e: opus::Error) -> AudioError {
    AudioError::Codec(e.to_string())
}

/// Encodes mono 48 kHz sound, 20 ms at a time, into a voice clip.
pub struct Encoder {
    enc: opus::Encoder,
    pending: Vec<f32>,
    packets: Vec<Vec<u8>>,
    /// Samples pushed (the clip's length).
    samples: u64,
    pre_skip: u16,
}

impl core::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Encoder")
            .field("samples", &self.samples)
            .field("packets", &self.packets.len())
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// A speech encoder (variable bit rate: silence costs almost nothing).
    pub fn new() -> Result<Encoder> {
        let mut enc = opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Voip)
            .map_err(codec)?;
        enc.set_bitrate(opus::Bitrate::Bits(BITRATE))
            .map_err(codec)?;
        enc.set_vbr(true).map_err(codec)?;
        let pre_skip = u16::try_from(enc.get_lookahead().map_err(codec)?).unwrap_or(312);
        Ok(Encoder {
            enc,
            pending: Vec::with_capacity(FRAME * 2),
            packets: Vec::new(),
            samples: 0,
            pre_skip,
        })
    }

    /// Adds sound (mono, 48 kHz, −1.0 to 1.0). Refused past the longest
    /// clip allowed.
    pub fn push(&mut self, pcm: &[f32]) -> Result<()> {
        if self.samples + pcm.len() as u64 > u64::from(MAX_VOICE_MS) * u64::from(RATE) / 1000 {
            return Err(AudioError::TooLong);
        }
        self.samples += pcm.len() as u64;
        self.pending.extend_from_slice(pcm);
        let whole = self.pending.len() / FRAME * FRAME;
        let mut out = [0u8; MAX_PACKET];
        for frame in self.pending.get(..whole).unwrap_or(&[]).chunks_exact(FRAME) {
            let n = self.enc.encode_float(frame, &mut out).map_err(codec)?;
            self.packets.push(out.get(..n).unwrap_or(&[]).to_vec());
        }
        self.pending.drain(..whole);
        Ok(())
    }

    /// How long the clip is so far.
    pub fn duration_ms(&self) -> u32 {
        u32::try_from(self.samples * 1000 / u64::from(RATE)).unwrap_or(u32::MAX)
    }

    /// Ends the clip: the last frame padded with silence (and the
    /// encoder's look-ahead flushed), then the container. Refused when
    /// nothing was recorded.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        if self.samples == 0 {
            return Err(AudioError::Codec("nothing was recorded".into()));
        }
        // Silence after the end pushes the encoder's look-ahead out, then
        // completes the last frame.
        self.pending
            .extend(core::iter::repeat_n(0.0, usize::from(self.pre_skip)));
        let rem = self.pending.len() % FRAME;
        if rem != 0 {
            self.pending.extend(core::iter::repeat_n(0.0, FRAME - rem));
        }
        let mut out = [0u8; MAX_PACKET];
        for frame in self.pending.chunks_exact(FRAME) {
            let n = self.enc.encode_float(frame, &mut out).map_err(codec)?;
            self.packets.push(out.get(..n).unwrap_or(&[]).to_vec());
        }
        let serial = (self.samples as u32) ^ 0x5053_544e;
        Ok(voice::mux(
            &self.packets,
            1,
            self.pre_skip,
            RATE,
            voice::FRAME_SAMPLES_20MS,
            self.samples,
            serial,
        )?)
    }
}

/// Decodes a voice clip to mono 48 kHz sound: the container is checked
/// first, the encoder's pre-skip dropped and the padding after the last
/// sample trimmed. A packet libopus refuses becomes 20 ms of silence (a
/// damaged clip still plays, with a gap).
pub fn decode(bytes: &[u8]) -> Result<Vec<f32>> {
    let info = voice::validate_voice_clip(bytes)?;
    let (packets, pre_skip) = voice::packets(bytes)?;
    let mut dec = opus::Decoder::new(RATE, opus::Channels::Mono).map_err(codec)?;
    let mut pcm: Vec<f32> = Vec::new();
    // Opus packets hold at most 120 ms.
    let mut buf = vec![0f32; RATE as usize * 120 / 1000];
    for p in &packets {
        if pcm.len() > MAX_SAMPLES {
            break;
        }
        match dec.decode_float(p, &mut buf, false) {
            Ok(n) => pcm.extend_from_slice(buf.get(..n).unwrap_or(&[])),
            Err(_) => pcm.extend(core::iter::repeat_n(0.0, FRAME)),
        }
    }
    let skip = usize::from(pre_skip).min(pcm.len());
    pcm.drain(..skip);
    let keep = (u64::from(info.duration_ms) * u64::from(RATE) / 1000) as usize;
    pcm.truncate(keep.max(1));
    Ok(pcm)
}

/// The loudness of some sound for a level meter: 0.0 (silence, −60 dBFS
/// or less) to 1.0 (full scale), from its RMS.
pub fn level(pcm: &[f32]) -> f32 {
    if pcm.is_empty() {
        return 0.0;
    }
    let rms = (pcm.iter().map(|s| s * s).sum::<f32>() / pcm.len() as f32).sqrt();
    if rms <= 0.001 {
        return 0.0;
    }
    ((20.0 * rms.log10() + 60.0) / 60.0).clamp(0.0, 1.0)
}

/// Converts interleaved sound of `channels` channels at `rate` to mono
/// 48 kHz (channels averaged, linear interpolation between samples). It
/// keeps its place between calls, so a stream can be fed in pieces.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    channels: usize,
    /// Where the next output sample falls, in input samples after `last`.
    at: f64,
    last: f32,
}

impl Resampler {
    /// From `rate` Hz with `channels` channels.
    pub fn new(rate: u32, channels: u16) -> Resampler {
        Resampler {
            from: rate.max(1),
            channels: usize::from(channels.max(1)),
            at: 0.0,
            last: 0.0,
        }
    }

    /// Converts the next piece.
    pub fn push(&mut self, interleaved: &[f32], out: &mut Vec<f32>) {
        let mono = interleaved
            .chunks(self.channels)
            .map(|f| f.iter().sum::<f32>() / f.len() as f32);
        if self.from == RATE {
            out.extend(mono);
            return;
        }
        let step = f64::from(self.from) / f64::from(RATE);
        for s in mono {
            // Output samples between `last` (position 0) and `s` (1).
            while self.at < 1.0 {
                let t = self.at as f32;
                out.push(self.last + (s - self.last) * t);
                self.at += step;
            }
            self.at -= 1.0;
            self.last = s;
        }
    }
}
