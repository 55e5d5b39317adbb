//! Voice clips on native platforms: what the codec refuses, then sound
//! through the encoder and back, then the devices (ALSA's `null` device,
//! which needs no sound card).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use postern_audio::AudioError;
use postern_audio::codec::{self, Encoder, RATE, Resampler};
use postern_audio::device::{Player, Recorder};
use postern_media::voice;

fn sine(hz: f32, secs: f32, amp: f32) -> Vec<f32> {
    let n = (secs * RATE as f32) as usize;
    (0..n)
        .map(|i| amp * (2.0 * std::f32::consts::PI * hz * i as f32 / RATE as f32).sin())
        .collect()
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

fn crossings(x: &[f32]) -> usize {
    x.windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count()
}

#[test]
fn the_codec_refuses_what_is_not_a_clip_and_an_empty_recording() {
    assert!(matches!(
        codec::decode(b"not a clip"),
        Err(AudioError::Clip(_))
    ));
    assert!(matches!(codec::decode(&[]), Err(AudioError::Clip(_))));
    let mut e = Encoder::new().unwrap();
    e.push(&[]).unwrap();
    assert!(e.finish().is_err());
    // A clip whose last page is damaged is refused whole.
    let mut e = Encoder::new().unwrap();
    e.push(&sine(300.0, 0.5, 0.3)).unwrap();
    let mut clip = e.finish().unwrap();
    let last = clip.len() - 1;
    clip[last] ^= 0x55;
    assert!(codec::decode(&clip).is_err());
}

#[test]
fn speech_goes_through_opus_and_comes_back_the_same_length_and_pitch() {
    let mut e = Encoder::new().unwrap();
    let tone = sine(440.0, 2.0, 0.5);
    // Fed in uneven pieces, as a device delivers it.
    for piece in tone.chunks(1234) {
        e.push(piece).unwrap();
    }
    e.push(&vec![0.0; RATE as usize]).unwrap();
    assert_eq!(e.duration_ms(), 3000);
    let clip = e.finish().unwrap();
    let info = voice::validate_voice_clip(&clip).unwrap();
    assert_eq!(info.duration_ms, 3000);
    assert_eq!(info.channels, 1);
    // 24 kbit/s for the tone, almost nothing for the silence.
    assert!(clip.len() < 9_000, "{} bytes", clip.len());

    let pcm = codec::decode(&clip).unwrap();
    assert_eq!(pcm.len(), 3 * RATE as usize);
    let (loud, quiet) = pcm.split_at(2 * RATE as usize);
    let r = rms(&loud[RATE as usize / 10..]);
    assert!((r - 0.3535).abs() < 0.07, "tone RMS {r}");
    assert!(rms(&quiet[RATE as usize / 10..]) < 0.01);
    // 440 Hz: 880 zero crossings a second.
    let c = crossings(&loud[RATE as usize / 2..3 * RATE as usize / 2]);
    assert!((860..=900).contains(&c), "{c} crossings");

    // The waveform drawn from packet sizes shows the tone, then silence.
    let w = voice::waveform(&clip, 3).unwrap();
    assert!(w[0] > 200 && w[1] > 200 && w[2] < 40, "{w:?}");
}

#[test]
fn the_resampler_and_the_level_meter() {
    // One second of 44.1 kHz stereo becomes one second of 48 kHz mono.
    let stereo: Vec<f32> = sine(440.0, 1.0, 0.5)
        .iter()
        .step_by(1)
        .take(44_100)
        .flat_map(|s| [*s, *s])
        .collect();
    let mut r = Resampler::new(44_100, 2);
    let mut out = Vec::new();
    for piece in stereo.chunks(882) {
        r.push(piece, &mut out);
    }
    assert!((out.len() as i64 - 48_000).abs() <= 2, "{}", out.len());
    let mut same = Vec::new();
    Resampler::new(RATE, 1).push(&[0.25, -0.25], &mut same);
    assert_eq!(same, vec![0.25, -0.25]);

    assert_eq!(codec::level(&[]), 0.0);
    assert_eq!(codec::level(&vec![0.0; 960]), 0.0);
    assert!(codec::level(&vec![1.0; 960]) > 0.99);
    let quiet = codec::level(&sine(300.0, 0.02, 0.01));
    let loud = codec::level(&sine(300.0, 0.02, 0.5));
    assert!(0.0 < quiet && quiet < loud && loud < 1.0, "{quiet} {loud}");
}

#[test]
fn devices_by_name_record_and_play_and_a_missing_one_is_said() {
    assert!(matches!(
        Recorder::start(Some("no-such-microphone")),
        Err(AudioError::NoDevice("microphone"))
    ));
    assert!(matches!(
        Player::start(Some("no-such-speaker"), vec![0.0; 10]),
        Err(AudioError::NoDevice("speaker"))
    ));

    // ALSA's null device: silence in, nothing out (as fast as asked).
    let rec = Recorder::start(Some("null")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < RATE as usize / 4 {
        assert!(
            Instant::now() < deadline,
            "the null microphone gave nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
        got.extend(rec.take().unwrap());
    }
    assert!(got.iter().all(|s| *s == 0.0));
    assert_eq!(rec.level(), 0.0);
    rec.stop();

    let p = Player::start(Some("null"), sine(440.0, 0.4, 0.5)).unwrap();
    assert_eq!(p.duration_ms(), 400);
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.is_playing() {
        assert!(Instant::now() < deadline, "playback never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.position_ms(), 400);
    assert!(p.error().is_none());
    // Seeking and playing again from the middle.
    p.seek_ms(200);
    assert_eq!(p.position_ms(), 200);
    p.set_playing(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.is_playing() {
        assert!(Instant::now() < deadline, "playback never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.position_ms(), 400);
    p.stop();
}

#[test]
fn a_browser_recording_remuxed_from_webm_decodes_to_its_sound() {
    let webm = include_bytes!("../../../media/tests/data/chromium-mediarecorder.webm");
    let clip = voice::from_webm(webm).unwrap();
    let info = voice::validate_voice_clip(&clip).unwrap();
    let pcm = codec::decode(&clip).unwrap();
    let expected = info.duration_ms as usize * RATE as usize / 1000;
    assert!(
        pcm.len().abs_diff(expected) <= RATE as usize / 100,
        "{} vs {expected}",
        pcm.len()
    );
    // Chromium's fake microphone beeps: not silence.
    assert!(codec::level(&pcm) > 0.1, "level {}", codec::level(&pcm));
}
