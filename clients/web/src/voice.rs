//! Voice messages in the browser: recorded with the browser's
//! MediaRecorder (WebM/Opus in Chromium and Firefox), remuxed in Rust into
//! the Ogg container the core checks (`postern_media::voice::from_webm`,
//! no re-encoding), and played back by the browser's own audio element
//! from the checked clip.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Float32Array, Promise, Reflect, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AnalyserNode, AudioContext, Blob, BlobPropertyBag, HtmlAudioElement, MediaRecorder,
    MediaRecorderOptions, MediaStream, MediaStreamConstraints, Url,
};

/// The longest clip recorded (the core's limit for a voice message).
pub const MAX_RECORDING_MS: u32 = 15 * 60 * 1000;
const MIME: &str = "audio/webm;codecs=opus";

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// A recording in progress.
pub struct Recorder {
    recorder: MediaRecorder,
    stream: MediaStream,
    chunks: Rc<RefCell<Vec<Blob>>>,
    started: f64,
    audio: Option<(AudioContext, AnalyserNode)>,
    _on_data: Closure<dyn FnMut(web_sys::BlobEvent)>,
}

impl core::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Recorder")
    }
}

fn say(e: &JsValue) -> String {
    match Reflect::get(e, &JsValue::from_str("name"))
        .ok()
        .and_then(|n| n.as_string())
        .as_deref()
    {
        Some("NotAllowedError") => "the browser did not allow the microphone".to_owned(),
        Some("NotFoundError") => "no microphone found".to_owned(),
        Some(other) => format!("the microphone failed ({other})"),
        None => "the microphone failed".to_owned(),
    }
}

impl Recorder {
    /// Asks for the microphone and starts recording.
    pub async fn start() -> Result<Recorder, String> {
        let devices = web_sys::window()
            .map(|w| w.navigator())
            .and_then(|n| n.media_devices().ok())
            .ok_or("this browser cannot record sound")?;
        if !MediaRecorder::is_type_supported(MIME) {
            return Err("this browser cannot record Opus sound".to_owned());
        }
        let constraints = MediaStreamConstraints::new();
        constraints.set_audio(&JsValue::TRUE);
        let stream: MediaStream = JsFuture::from(
            devices
                .get_user_media_with_constraints(&constraints)
                .map_err(|e| say(&e))?,
        )
        .await
        .map_err(|e| say(&e))?
        .dyn_into()
        .map_err(|_| "the microphone failed".to_owned())?;
        let options = MediaRecorderOptions::new();
        options.set_mime_type(MIME);
        let recorder =
            MediaRecorder::new_with_media_stream_and_media_recorder_options(&stream, &options)
                .map_err(|e| say(&e))?;
        let chunks = Rc::new(RefCell::new(Vec::new()));
        let sink = chunks.clone();
        let on_data =
            Closure::<dyn FnMut(web_sys::BlobEvent)>::new(move |e: web_sys::BlobEvent| {
                if let Some(b) = e.data() {
                    sink.borrow_mut().push(b);
                }
            });
        recorder.set_ondataavailable(Some(on_data.as_ref().unchecked_ref()));
        recorder.start_with_time_slice(250).map_err(|e| say(&e))?;
        // The level meter: an analyser on the same stream.
        let audio = AudioContext::new().ok().and_then(|ctx| {
            let source = ctx.create_media_stream_source(&stream).ok()?;
            let analyser = ctx.create_analyser().ok()?;
            analyser.set_fft_size(1024);
            source.connect_with_audio_node(&analyser).ok()?;
            Some((ctx, analyser))
        });
        Ok(Recorder {
            recorder,
            stream,
            chunks,
            started: now_ms(),
            audio,
            _on_data: on_data,
        })
    }

    /// How long it has recorded.
    pub fn elapsed_ms(&self) -> u32 {
        (now_ms() - self.started).clamp(0.0, f64::from(u32::MAX)) as u32
    }

    /// The microphone's level now (RMS, 0.0–1.0).
    pub fn level(&self) -> f32 {
        let Some((_, a)) = &self.audio else {
            return 0.0;
        };
        let n = a.fft_size() as usize;
        let buf = Float32Array::new_with_length(n as u32);
        a.get_float_time_domain_data_with_f32_array(&buf);
        let v = buf.to_vec();
        let sum: f32 = v.iter().map(|x| x * x).sum();
        (sum / (n.max(1) as f32)).sqrt().clamp(0.0, 1.0)
    }

    fn release(&self) {
        for t in self.stream.get_tracks().iter() {
            if let Ok(t) = t.dyn_into::<web_sys::MediaStreamTrack>() {
                t.stop();
            }
        }
        if let Some((ctx, _)) = &self.audio {
            let _ = ctx.close();
        }
    }

    /// Stops and returns what was recorded (WebM/Opus bytes).
    pub async fn finish(self) -> Result<Vec<u8>, String> {
        let stopped = {
            let r = self.recorder.clone();
            Promise::new(&mut |resolve, _| {
                let done = Closure::once_into_js(move |_e: web_sys::Event| {
                    let _ = resolve.call0(&JsValue::NULL);
                });
                r.set_onstop(Some(done.unchecked_ref()));
            })
        };
        let _ = self.recorder.stop();
        let _ = JsFuture::from(stopped).await;
        self.release();
        let parts = Array::new();
        for b in self.chunks.borrow().iter() {
            parts.push(b);
        }
        let opts = BlobPropertyBag::new();
        opts.set_type(MIME);
        let blob = Blob::new_with_blob_sequence_and_options(&parts, &opts)
            .map_err(|_| "the recording failed".to_owned())?;
        let buf = JsFuture::from(blob.array_buffer())
            .await
            .map_err(|_| "the recording failed".to_owned())?;
        Ok(Uint8Array::new(&buf).to_vec())
    }

    /// Stops and throws the recording away.
    pub fn cancel(self) {
        let _ = self.recorder.stop();
        self.release();
    }
}

/// A voice message playing in the page's audio element.
pub struct Player {
    element: HtmlAudioElement,
    url: String,
    duration_ms: u32,
}

impl core::fmt::Debug for Player {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Player")
    }
}

impl Player {
    /// Plays a clip that passed the core's voice check (Ogg/Opus).
    pub fn start(clip: &[u8], duration_ms: u32) -> Result<Player, String> {
        let parts = Array::new();
        parts.push(&Uint8Array::from(clip));
        let opts = BlobPropertyBag::new();
        opts.set_type("audio/ogg; codecs=opus");
        let blob = Blob::new_with_u8_array_sequence_and_options(&parts, &opts)
            .map_err(|_| "cannot play the voice message".to_owned())?;
        let url = Url::create_object_url_with_blob(&blob)
            .map_err(|_| "cannot play the voice message".to_owned())?;
        let element = HtmlAudioElement::new_with_src(&url)
            .map_err(|_| "cannot play the voice message".to_owned())?;
        let _ = element.play();
        Ok(Player {
            element,
            url,
            duration_ms,
        })
    }

    /// Where it is.
    pub fn position_ms(&self) -> u32 {
        (self.element.current_time() * 1000.0).clamp(0.0, f64::from(u32::MAX)) as u32
    }

    /// Its length.
    pub fn duration_ms(&self) -> u32 {
        self.duration_ms
    }

    /// Whether it plays.
    pub fn is_playing(&self) -> bool {
        !self.element.paused() && !self.element.ended()
    }

    /// Plays or pauses.
    pub fn set_playing(&self, on: bool) {
        if on {
            let _ = self.element.play();
        } else {
            let _ = self.element.pause();
        }
    }

    /// Moves to `ms`.
    pub fn seek_ms(&self, ms: u32) {
        self.element.set_current_time(f64::from(ms) / 1000.0);
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        let _ = self.element.pause();
        let _ = Url::revoke_object_url(&self.url);
    }
}
