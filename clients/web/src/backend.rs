//! The page's side: it starts the client worker (`worker`), carries the
//! screens' `Command`s to it and turns its answers into the screens'
//! `Event`s — the language of the desktop app's worker — and does what
//! only a page can: files picked and downloaded, the microphone, the
//! speaker. The profile, the client service and every key stay in the
//! worker; the page holds what the screens show.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{Either, select};
use postern_app::{Image, Request, Update};
use postern_browser::runtime::BrowserRuntime;
use postern_core::Address;
use postern_core::store::MessageId;
use postern_link::Runtime as _;
use postern_ui::{Command, Event};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast as _, JsValue};
use web_sys::{Worker, WorkerOptions, WorkerType};
use zeroize::Zeroize as _;

use crate::files;
use crate::voice::{Player, Recorder};
use crate::wire::{self, FromWorker, Secret, ToWorker};

/// How the backend tells the screens (and wakes them).
pub type Tell = Rc<dyn Fn(Event)>;

/// Largest image read to scan a QR code from.
const SCAN_MAX_BYTES: f64 = 8.0 * 1024.0 * 1024.0;

/// How often the level meter and the playback position are told.
const AUDIO_TICK: Duration = Duration::from_millis(100);

/// The client worker, seen from the page.
struct ClientWorker {
    worker: Worker,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

impl ClientWorker {
    /// Starts `worker.js` (this same module in a dedicated worker); what
    /// it says arrives on `heard`.
    fn start(heard: async_channel::Sender<FromWorker>) -> Result<ClientWorker, JsValue> {
        let opts = WorkerOptions::new();
        opts.set_type(WorkerType::Module);
        opts.set_name("postern");
        let worker = Worker::new_with_options("worker.js", &opts)?;
        let tx = heard.clone();
        let on_message =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                let Ok(buf) = e.data().dyn_into::<js_sys::Uint8Array>() else {
                    return;
                };
                // Same module, same origin: a message that does not decode
                // is a bug; it is dropped all the same.
                if let Ok(m) = wire::decode::<FromWorker>(&buf.to_vec()) {
                    let _ = tx.try_send(m);
                }
            });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_e: web_sys::Event| {
            let _ = heard.try_send(FromWorker::Failed(
                "Postern's worker stopped: reload the page".to_owned(),
            ));
        });
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(ClientWorker {
            worker,
            _on_message: on_message,
            _on_error: on_error,
        })
    }

    /// Sends one message (its buffer is transferred; the copy here,
    /// which may hold a passphrase, is wiped).
    fn send(&self, m: &ToWorker) {
        let mut bytes = wire::encode(m);
        let buf = js_sys::Uint8Array::from(bytes.as_slice());
        bytes.zeroize();
        let transfer = js_sys::Array::of1(&buf.buffer());
        let _ = self.worker.post_message_with_transfer(&buf, &transfer);
    }
}

/// Sound on the page: one recording, one clip playing.
#[derive(Default)]
struct Audio {
    recording: Option<(Address, Recorder)>,
    playing: Option<(MessageId, Player)>,
    /// The voice message asked for, to play when its bytes come.
    to_play: Option<MessageId>,
}

enum Next {
    Command(Option<Command>),
    Heard(Option<FromWorker>),
    Tick,
}

struct Backend {
    tell: Tell,
    worker: ClientWorker,
    audio: RefCell<Audio>,
}

/// Runs the page's side until the page goes away.
pub async fn run(tell: Tell, commands: async_channel::Receiver<Command>) {
    let (heard_tx, heard) = async_channel::unbounded();
    let worker = match ClientWorker::start(heard_tx) {
        Ok(w) => w,
        Err(_) => {
            tell(Event::ShellFailed(
                "This browser cannot start Postern's worker (module workers are needed)".to_owned(),
            ));
            return;
        }
    };
    let b = Backend {
        tell,
        worker,
        audio: RefCell::new(Audio::default()),
    };
    loop {
        let active = {
            let a = b.audio.borrow();
            a.recording.is_some() || a.playing.is_some()
        };
        let next = {
            let c = core::pin::pin!(commands.recv());
            let h = core::pin::pin!(heard.recv());
            let tick = core::pin::pin!(async {
                if active {
                    BrowserRuntime.sleep(AUDIO_TICK).await;
                } else {
                    core::future::pending::<()>().await;
                }
            });
            match select(select(c, h), tick).await {
                Either::Left((Either::Left((c, _)), _)) => Next::Command(c.ok()),
                Either::Left((Either::Right((h, _)), _)) => Next::Heard(h.ok()),
                Either::Right(_) => Next::Tick,
            }
        };
        match next {
            Next::Command(Some(c)) => b.command(c).await,
            Next::Heard(Some(m)) => b.heard(m),
            Next::Tick => b.audio_tick().await,
            Next::Command(None) | Next::Heard(None) => return,
        }
    }
}

impl Backend {
    fn say(&self, e: Event) {
        (self.tell)(e);
    }

    fn to_worker(&self, m: ToWorker) {
        self.worker.send(&m);
    }

    fn app(&self, r: Request) {
        self.to_worker(ToWorker::App(r));
    }

    /// What the worker says, for the screens.
    fn heard(&self, m: FromWorker) {
        match m {
            FromWorker::NoProfile { default_relay } => self.say(Event::NoProfile {
                keychain: false,
                default_relay,
            }),
            FromWorker::Relays { choices, suggested } => {
                self.say(Event::Relays { choices, suggested });
            }
            FromWorker::Locked { reason } => {
                self.stop_audio();
                self.say(Event::Locked {
                    keychain: false,
                    reason,
                });
            }
            FromWorker::UnlockFailed(why) => self.say(Event::UnlockFailed(why)),
            FromWorker::CreateFailed(why) => self.say(Event::CreateFailed(why)),
            FromWorker::Unlocked => self.say(Event::Unlocked),
            FromWorker::Remembered(on) => self.say(Event::Remember(on)),
            FromWorker::Profiles { names, current } => {
                self.say(Event::Profiles { names, current });
            }
            FromWorker::App(Update::AttachmentBytes {
                id, name, bytes, ..
            }) => self.received(id, &name, &bytes),
            FromWorker::App(u) => self.say(Event::App(u)),
            FromWorker::Notice(n) => self.say(Event::Notice(n)),
            FromWorker::Failed(why) => self.say(Event::ShellFailed(why)),
            FromWorker::Backup { name, bytes } => self.say(match files::download(&name, &bytes) {
                Ok(()) => Event::Notice(format!("The encrypted backup is downloaded ({name})")),
                Err(_) => Event::ShellFailed("Could not export a backup".to_owned()),
            }),
            FromWorker::Timing { name, ms } => crate::accesskit::timing(&name, ms),
        }
    }

    /// The screens' commands.
    async fn command(&self, c: Command) {
        match c {
            Command::App(r) => self.app(r),
            Command::Create {
                name,
                relay,
                passphrase,
            } => {
                crate::notify::ask();
                self.to_worker(ToWorker::Create {
                    name,
                    relay,
                    passphrase: passphrase.map(Secret),
                });
            }
            Command::Unlock(pass) => {
                crate::notify::ask();
                self.to_worker(ToWorker::Unlock {
                    passphrase: Secret(pass),
                    remember: false,
                });
            }
            Command::UnlockRemembering(pass) => {
                crate::notify::ask();
                self.to_worker(ToWorker::Unlock {
                    passphrase: Secret(pass),
                    remember: true,
                });
            }
            Command::Notify { title, body } => crate::notify::show(&title, &body),
            Command::Forget => self.to_worker(ToWorker::Forget),
            Command::SwitchProfile(i) => self.to_worker(ToWorker::Switch(Some(i))),
            Command::NewProfile => self.to_worker(ToWorker::Switch(None)),
            Command::Restore {
                backup_passphrase,
                passphrase,
                ..
            } => {
                if passphrase.as_ref().is_none_or(|p| p.is_empty()) {
                    self.say(Event::CreateFailed(wire::PASSPHRASE_NEEDED.to_owned()));
                    return;
                }
                let max = postern_core::consts::MAX_BACKUP_BYTES as f64;
                let (picked, too_large) = files::pick(None, false, max).await;
                if !too_large.is_empty() {
                    self.say(Event::CreateFailed(
                        "That file is larger than a Postern backup can be".to_owned(),
                    ));
                    return;
                }
                let Some((_, backup)) = picked.into_iter().next() else {
                    self.say(Event::CreateFailed("Nothing was restored".to_owned()));
                    return;
                };
                self.to_worker(ToWorker::Restore {
                    backup,
                    backup_passphrase: Secret(backup_passphrase),
                    passphrase: passphrase.map(Secret),
                });
            }
            Command::Lock => {
                self.stop_audio();
                self.to_worker(ToWorker::Lock);
            }
            Command::Attach { to } => {
                let (picked, too_large) = files::pick(None, true, files::MAX_PICK_BYTES).await;
                for name in too_large {
                    self.say(Event::ShellFailed(format!(
                        "{name} is larger than an attachment may be"
                    )));
                }
                for (name, bytes) in picked {
                    self.app(Request::SendFile {
                        to,
                        name,
                        bytes,
                        voice: false,
                    });
                }
            }
            Command::AttachDropped { to, files } => {
                for f in files {
                    let name = f
                        .path()
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let bytes = f.bytes_async().await;
                    match bytes {
                        Ok(b) if b.len() as f64 <= files::MAX_PICK_BYTES => {
                            self.app(Request::SendFile {
                                to,
                                name,
                                bytes: b,
                                voice: false,
                            });
                        }
                        Ok(_) => self.say(Event::ShellFailed(format!(
                            "{name} is larger than an attachment may be"
                        ))),
                        Err(_) => self.say(Event::ShellFailed(format!("Could not read {name}"))),
                    }
                }
            }
            Command::Save { peer, id } => self.app(Request::Attachment { peer, id }),
            Command::OpenImageToScan(purpose) => {
                let (picked, _) =
                    files::pick(Some("image/png,image/jpeg"), false, SCAN_MAX_BYTES).await;
                if let Some((_, bytes)) = picked.into_iter().next() {
                    self.app(Request::Scan {
                        image: Image::File(bytes),
                        purpose,
                    });
                }
            }
            Command::Prefs(prefs) => self.to_worker(ToWorker::Cover(prefs.cover_per_minute)),
            Command::Record { to } => self.record(to).await,
            Command::StopRecording { send } => self.stop_recording(send).await,
            Command::Play { peer, id } => {
                let mut a = self.audio.borrow_mut();
                match &a.playing {
                    Some((playing, p)) if *playing == id => p.set_playing(true),
                    _ => {
                        a.playing = None;
                        a.to_play = Some(id);
                        drop(a);
                        self.say(Event::Playback(None));
                        self.app(Request::Attachment { peer, id });
                    }
                }
            }
            Command::Pause => {
                if let Some((_, p)) = &self.audio.borrow().playing {
                    p.set_playing(false);
                }
            }
            Command::Seek { ms } => {
                if let Some((_, p)) = &self.audio.borrow().playing {
                    p.seek_ms(ms);
                }
            }
            Command::ChangePassphrase { current, new } => {
                self.to_worker(ToWorker::ChangePassphrase {
                    current: Secret(current),
                    new: Secret(new),
                });
            }
            Command::ExportBackup { passphrase } => {
                self.to_worker(ToWorker::ExportBackup {
                    passphrase: Secret(passphrase),
                });
            }
            _ => {}
        }
    }

    /// Locked: nothing is recorded or played any more.
    fn stop_audio(&self) {
        let mut a = self.audio.borrow_mut();
        if let Some((_, r)) = a.recording.take() {
            r.cancel();
        }
        a.playing = None;
        a.to_play = None;
    }

    /// A received attachment: the voice message asked for is checked and
    /// played; anything else is downloaded.
    fn received(&self, id: MessageId, name: &str, bytes: &[u8]) {
        let play = self.audio.borrow_mut().to_play.take_if(|x| *x == id);
        if play.is_some() {
            let started = postern_media::voice::validate_voice_clip(bytes)
                .map_err(|e| e.to_string())
                .and_then(|info| Player::start(bytes, info.duration_ms));
            match started {
                Ok(p) => self.audio.borrow_mut().playing = Some((id, p)),
                Err(why) => self.say(Event::ShellFailed(format!(
                    "Cannot play the voice message: {why}"
                ))),
            }
            return;
        }
        match files::download(name, bytes) {
            Ok(()) => self.say(Event::Notice(format!("Downloaded {name}"))),
            Err(_) => self.say(Event::ShellFailed(format!("Could not save {name}"))),
        }
    }

    /// Starts recording to `to`; without a microphone, says why (the
    /// screens then offer attaching a clip).
    async fn record(&self, to: Address) {
        let old = self.audio.borrow_mut().recording.take();
        if let Some((_, r)) = old {
            r.cancel();
        }
        match Recorder::start().await {
            Ok(r) => {
                self.audio.borrow_mut().recording = Some((to, r));
                self.say(Event::Recording(Some(postern_ui::Recording {
                    to,
                    elapsed_ms: 0,
                    level: 0.0,
                })));
            }
            Err(why) => self.say(Event::RecordingUnavailable(format!("Cannot record: {why}"))),
        }
    }

    /// Stops recording; with `send`, the clip is remuxed into Ogg (no
    /// re-encoding), checked and sent as a voice message.
    async fn stop_recording(&self, send: bool) {
        let taken = self.audio.borrow_mut().recording.take();
        let Some((to, r)) = taken else {
            return;
        };
        self.say(Event::Recording(None));
        if !send {
            r.cancel();
            return;
        }
        let clip = r
            .finish()
            .await
            .and_then(|webm| postern_media::voice::from_webm(&webm).map_err(|e| e.to_string()));
        match clip {
            Ok(bytes) => self.app(Request::SendFile {
                to,
                name: "voice.ogg".to_owned(),
                bytes,
                voice: true,
            }),
            Err(why) => self.say(Event::ShellFailed(format!("Could not record: {why}"))),
        }
    }

    /// Every tick while sound is recorded or played: the level and the
    /// positions to the screens; a recording at the longest length is sent.
    async fn audio_tick(&self) {
        let view = self
            .audio
            .borrow()
            .recording
            .as_ref()
            .map(|(to, r)| postern_ui::Recording {
                to: *to,
                elapsed_ms: r.elapsed_ms(),
                level: r.level(),
            });
        if let Some(v) = view {
            if v.elapsed_ms >= crate::voice::MAX_RECORDING_MS {
                self.stop_recording(true).await;
            } else {
                self.say(Event::Recording(Some(v)));
            }
        }
        let playback = self
            .audio
            .borrow()
            .playing
            .as_ref()
            .map(|(id, p)| postern_ui::Playback {
                id: *id,
                position_ms: p.position_ms(),
                duration_ms: p.duration_ms(),
                playing: p.is_playing(),
            });
        if let Some(p) = playback {
            self.say(Event::Playback(Some(p)));
            // Ended: told once more, then no more ticks until played again.
            if !p.playing && p.position_ms >= p.duration_ms.saturating_sub(50) {
                self.audio.borrow_mut().playing = None;
            }
        }
    }
}
