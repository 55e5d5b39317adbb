//! The microphone and the speaker, through cpal. Each opens the system's
//! default device, or one by name (`null` is ALSA's silent device, which
//! exists without a sound card). Streams run on cpal's own audio thread;
//! what they share with the caller is behind a mutex or an atomic, and
//! bounded.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cpal::traits::{DeviceTrait as _, HostTrait as _, StreamTrait as _};

use crate::codec::{self, RATE, Resampler};
use crate::{AudioError, Result};

/// Most captured sound held between two [`Recorder::take`] calls (10 s);
/// more is dropped, not buffered without end.
const MAX_CAPTURED: usize = 10 * RATE as usize;

fn device_error(what: &'static str) -> impl Fn(cpal::Error) -> AudioError {
    move |e| AudioError::Device {
        what,
        why: e.to_string(),
    }
}

/// The device called `name` (its name or its id), or the default one.
fn find(name: Option<&str>, input: bool) -> Result<cpal::Device> {
    let host = cpal::default_host();
    let what = if input { "microphone" } else { "speaker" };
    match name {
        None => if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        }
        .ok_or(AudioError::NoDevice(what)),
        Some(n) => host
            .devices()
            .map_err(device_error(what))?
            .find(|d| {
                d.id().is_ok_and(|i| i.id() == n) || d.description().is_ok_and(|x| x.name() == n)
            })
            .ok_or(AudioError::NoDevice(what)),
    }
}

/// The names of the devices that can record (for a settings list).
pub fn microphones() -> Vec<String> {
    cpal::default_host()
        .input_devices()
        .map(|ds| {
            ds.filter_map(|d| d.id().ok().map(|i| i.id().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

struct Captured {
    pcm: Vec<f32>,
    resampler: Resampler,
    level: f32,
    error: Option<String>,
}

/// Sound coming in from a microphone, as mono 48 kHz.
pub struct Recorder {
    stream: cpal::Stream,
    shared: Arc<Mutex<Captured>>,
}

impl core::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Recorder")
    }
}

impl Recorder {
    /// Opens the microphone (`None`: the default) and starts capturing.
    pub fn start(device: Option<&str>) -> Result<Recorder> {
        let d = find(device, true)?;
        let cfg = d
            .default_input_config()
            .map_err(device_error("microphone"))?;
        let shared = Arc::new(Mutex::new(Captured {
            pcm: Vec::new(),
            resampler: Resampler::new(cfg.sample_rate(), cfg.channels()),
            level: 0.0,
            error: None,
        }));
        let stream = match cfg.sample_format() {
            cpal::SampleFormat::F32 => input::<f32>(&d, &cfg.config(), &shared),
            cpal::SampleFormat::I16 => input::<i16>(&d, &cfg.config(), &shared),
            cpal::SampleFormat::I32 => input::<i32>(&d, &cfg.config(), &shared),
            cpal::SampleFormat::U16 => input::<u16>(&d, &cfg.config(), &shared),
            cpal::SampleFormat::U8 => input::<u8>(&d, &cfg.config(), &shared),
            f => Err(AudioError::Device {
                what: "microphone",
                why: format!("unsupported sample format {f}"),
            }),
        }?;
        stream.play().map_err(device_error("microphone"))?;
        Ok(Recorder { stream, shared })
    }

    /// The sound captured since the last call (mono, 48 kHz), or the
    /// error that stopped the device.
    pub fn take(&self) -> Result<Vec<f32>> {
        let mut c = self
            .shared
            .lock()
            .map_err(|_| AudioError::Codec("capture state poisoned".into()))?;
        if let Some(why) = c.error.take() {
            return Err(AudioError::Device {
                what: "microphone",
                why,
            });
        }
        Ok(core::mem::take(&mut c.pcm))
    }

    /// The loudness of the last piece captured (0.0–1.0, for a meter).
    pub fn level(&self) -> f32 {
        self.shared.lock().map(|c| c.level).unwrap_or(0.0)
    }

    /// Stops capturing.
    pub fn stop(self) {
        let _ = self.stream.pause();
    }
}

fn input<T>(
    d: &cpal::Device,
    cfg: &cpal::StreamConfig,
    shared: &Arc<Mutex<Captured>>,
) -> Result<cpal::Stream>
where
    T: cpal::SizedSample,
    f32: cpal::FromSample<T>,
{
    let data = shared.clone();
    let err = shared.clone();
    let mut floats: Vec<f32> = Vec::new();
    let mut mono: Vec<f32> = Vec::new();
    d.build_input_stream::<T, _, _>(
        *cfg,
        move |samples: &[T], _| {
            floats.clear();
            floats.extend(
                samples
                    .iter()
                    .map(|s| <f32 as cpal::FromSample<T>>::from_sample_(*s)),
            );
            if let Ok(mut c) = data.lock() {
                mono.clear();
                c.resampler.push(&floats, &mut mono);
                c.level = codec::level(&mono);
                let room = MAX_CAPTURED.saturating_sub(c.pcm.len());
                let n = mono.len().min(room);
                c.pcm.extend_from_slice(mono.get(..n).unwrap_or(&[]));
            }
        },
        move |e| {
            if let Ok(mut c) = err.lock() {
                c.error = Some(e.to_string());
            }
        },
        None,
    )
    .map_err(device_error("microphone"))
}

struct PlayState {
    pcm: Vec<f32>,
    /// Where playback is, in samples at 48 kHz.
    pos: AtomicUsize,
    playing: AtomicBool,
    /// Bumped by a seek: the audio thread then starts from `pos`.
    seeks: AtomicU64,
    error: Mutex<Option<String>>,
}

/// Sound going out to a speaker.
pub struct Player {
    stream: cpal::Stream,
    state: Arc<PlayState>,
}

impl core::fmt::Debug for Player {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Player")
            .field("position_ms", &self.position_ms())
            .field("duration_ms", &self.duration_ms())
            .finish()
    }
}

impl Player {
    /// Opens the speaker (`None`: the default) and plays `pcm` (mono,
    /// 48 kHz) from the start.
    pub fn start(device: Option<&str>, pcm: Vec<f32>) -> Result<Player> {
        let d = find(device, false)?;
        let cfg = d.default_output_config().map_err(device_error("speaker"))?;
        let state = Arc::new(PlayState {
            pcm,
            pos: AtomicUsize::new(0),
            playing: AtomicBool::new(true),
            seeks: AtomicU64::new(0),
            error: Mutex::new(None),
        });
        let stream = match cfg.sample_format() {
            cpal::SampleFormat::F32 => output::<f32>(&d, &cfg.config(), &state),
            cpal::SampleFormat::I16 => output::<i16>(&d, &cfg.config(), &state),
            cpal::SampleFormat::I32 => output::<i32>(&d, &cfg.config(), &state),
            cpal::SampleFormat::U16 => output::<u16>(&d, &cfg.config(), &state),
            cpal::SampleFormat::U8 => output::<u8>(&d, &cfg.config(), &state),
            f => Err(AudioError::Device {
                what: "speaker",
                why: format!("unsupported sample format {f}"),
            }),
        }?;
        stream.play().map_err(device_error("speaker"))?;
        Ok(Player { stream, state })
    }

    /// Where playback is.
    pub fn position_ms(&self) -> u32 {
        ms(self.state.pos.load(Ordering::Relaxed))
    }

    /// How long the clip is.
    pub fn duration_ms(&self) -> u32 {
        ms(self.state.pcm.len())
    }

    /// Whether it is playing (not paused, not at the end).
    pub fn is_playing(&self) -> bool {
        self.state.playing.load(Ordering::Relaxed)
    }

    /// Pauses or resumes; resuming at the end starts again.
    pub fn set_playing(&self, on: bool) {
        if on && self.state.pos.load(Ordering::Relaxed) >= self.state.pcm.len() {
            self.seek_ms(0);
        }
        self.state.playing.store(on, Ordering::Relaxed);
    }

    /// Moves to `at` milliseconds (clamped to the clip).
    pub fn seek_ms(&self, at: u32) {
        let s = (u64::from(at) * u64::from(RATE) / 1000) as usize;
        self.state
            .pos
            .store(s.min(self.state.pcm.len()), Ordering::Relaxed);
        self.state.seeks.fetch_add(1, Ordering::Relaxed);
    }

    /// The error that stopped the device, if one did.
    pub fn error(&self) -> Option<String> {
        self.state.error.lock().ok().and_then(|e| e.clone())
    }

    /// Stops playing and closes the device.
    pub fn stop(self) {
        let _ = self.stream.pause();
    }
}

fn ms(samples: usize) -> u32 {
    u32::try_from(samples as u64 * 1000 / u64::from(RATE)).unwrap_or(u32::MAX)
}

fn output<T>(
    d: &cpal::Device,
    cfg: &cpal::StreamConfig,
    state: &Arc<PlayState>,
) -> Result<cpal::Stream>
where
    T: cpal::SizedSample + cpal::FromSample<f32>,
{
    let s = state.clone();
    let err = state.clone();
    let channels = usize::from(cfg.channels.max(1));
    // Source samples (48 kHz) per output frame.
    let step = f64::from(RATE) / f64::from(cfg.sample_rate.max(1));
    let mut cursor = 0f64;
    let mut seen_seeks = 0u64;
    d.build_output_stream::<T, _, _>(
        *cfg,
        move |out: &mut [T], _| {
            let seeks = s.seeks.load(Ordering::Relaxed);
            if seeks != seen_seeks {
                seen_seeks = seeks;
                cursor = s.pos.load(Ordering::Relaxed) as f64;
            }
            let playing = s.playing.load(Ordering::Relaxed);
            let len = s.pcm.len();
            for frame in out.chunks_mut(channels) {
                let v = if playing && (cursor as usize) < len {
                    let i = cursor as usize;
                    let a = s.pcm.get(i).copied().unwrap_or(0.0);
                    let b = s.pcm.get(i + 1).copied().unwrap_or(a);
                    let t = (cursor - i as f64) as f32;
                    cursor += step;
                    a + (b - a) * t
                } else {
                    0.0
                };
                for x in frame {
                    *x = T::from_sample_(v);
                }
            }
            if playing {
                let at = (cursor as usize).min(len);
                // A seek that came during this buffer wins.
                if s.seeks.load(Ordering::Relaxed) == seen_seeks {
                    s.pos.store(at, Ordering::Relaxed);
                }
                if at >= len {
                    s.playing.store(false, Ordering::Relaxed);
                }
            }
        },
        move |e| {
            if let Ok(mut x) = err.error.lock() {
                *x = Some(e.to_string());
            }
        },
        None,
    )
    .map_err(device_error("speaker"))
}
