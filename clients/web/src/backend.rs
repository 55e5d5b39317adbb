//! The page's backend: the profile's life (onboarding, unlock, lock), the
//! client service while unlocked, and what the screens ask of the
//! platform (files, downloads). It speaks the screens' language —
//! `Command`s in, `Event`s out — like the desktop app's worker.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{Either, select};
use postern_app::setup::{NewProfile, setup};
use postern_app::{Image, Request, Service, ServiceConfig, Update};
use postern_browser::link::{BrowserConnector, Listeners};
use postern_browser::profile::{self, BrowserProfile, OpenError};
use postern_browser::runtime::BrowserRuntime;
use postern_browser::sealed::HeaderError;
use postern_core::crypto::kdf::KdfParams;
use postern_core::directory::ROLE_MAILBOX;
use postern_core::store::MessageId;
use postern_core::{Address, KvStore, RelayAddress, settings};
use postern_link::Runtime as _;
use postern_ui::{Command, Event};
use zeroize::Zeroizing;

use crate::boot::{self, Boot};
use crate::files;
use crate::voice::{Player, Recorder};

enum Next {
    Command(Option<Command>),
    Save(Option<Update>),
    Tick,
}

/// How the backend tells the screens (and wakes them).
pub type Tell = Rc<dyn Fn(Event)>;

/// The browser's one profile database (and its tab lock).
pub const PROFILE: &str = "postern-profile-1";
/// Largest image read to scan a QR code from.
const SCAN_MAX_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
/// Most home relays offered at onboarding.
const MAX_RELAY_CHOICES: usize = 16;

/// Argon2id in the browser: the native parameters (64 MiB, 3 passes).
pub const KDF: KdfParams = KdfParams::DEFAULT;

fn open_error(e: &OpenError) -> String {
    match e {
        OpenError::Header(HeaderError::WrongPassphrase) => "Wrong passphrase".to_owned(),
        other => format!("Cannot open the profile: {other}"),
    }
}

/// Runs the backend until the page goes away.
pub async fn run(tell: Tell, commands: async_channel::Receiver<Command>) {
    let rt = BrowserRuntime;
    let boot = boot::boot(rt.now()).await;
    let mut b = Backend {
        tell,
        commands,
        boot,
        audio: RefCell::new(Audio::default()),
    };
    loop {
        let Some(p) = b.locked().await else { return };
        match b.unlocked(p).await {
            Some(reason) => b.tell_locked(reason),
            None => return,
        }
    }
}

struct Backend {
    tell: Tell,
    commands: async_channel::Receiver<Command>,
    boot: Boot,
    audio: RefCell<Audio>,
}

/// Sound while unlocked: one recording, one clip playing.
#[derive(Default)]
struct Audio {
    recording: Option<(Address, Recorder)>,
    playing: Option<(MessageId, Player)>,
    /// The voice message asked for, to play when its bytes come.
    to_play: Option<MessageId>,
}

/// How often the level meter and the playback position are told.
const AUDIO_TICK: Duration = Duration::from_millis(100);

enum Ended {
    Lock,
    Restart,
    Gone,
    /// Needs the profile to itself (the service stopped, then started again).
    Exclusive(Exclusive),
}

enum Exclusive {
    ChangePassphrase {
        current: Zeroizing<String>,
        new: Zeroizing<String>,
    },
    Export {
        passphrase: Zeroizing<String>,
    },
}

impl Backend {
    fn say(&self, e: Event) {
        (self.tell)(e);
    }

    fn tell_locked(&self, reason: Option<String>) {
        self.say(Event::Locked {
            keychain: false,
            reason,
        });
    }

    /// The mailbox relays a browser can reach, and one suggested.
    fn relay_choices(&self) -> Vec<String> {
        let listeners = self.boot.listeners();
        let Some((_, d)) = &self.boot.directory else {
            return Vec::new();
        };
        d.relays
            .iter()
            .filter(|r| r.has_role(ROLE_MAILBOX))
            .filter(|r| listeners.get(&r.address).is_some())
            .map(|r| r.address.to_string())
            .take(MAX_RELAY_CHOICES)
            .collect()
    }

    /// Until a profile is created or unlocked (`None`: the page closed).
    async fn locked(&mut self) -> Option<BrowserProfile> {
        let exists = BrowserProfile::exists(PROFILE).await;
        match exists {
            Ok(true) => self.tell_locked(None),
            Ok(false) => {
                let choices = self.relay_choices();
                let suggested = if choices.is_empty() {
                    0
                } else {
                    use rand_core_compat::next_index;
                    next_index(choices.len())
                };
                self.say(Event::NoProfile {
                    keychain: false,
                    default_relay: choices.get(suggested).cloned(),
                });
                if let Some(problem) = &self.boot.problem {
                    self.say(Event::ShellFailed(problem.clone()));
                }
                if !choices.is_empty() {
                    self.say(Event::Relays { choices, suggested });
                }
            }
            Err(e) => self.say(Event::ShellFailed(e.to_string())),
        }
        loop {
            match self.commands.recv().await.ok()? {
                Command::Create {
                    name,
                    relay,
                    passphrase,
                } => match self
                    .create(&name, relay.as_deref(), passphrase.as_ref())
                    .await
                {
                    Ok(p) => return Some(p),
                    Err(why) => self.say(Event::CreateFailed(why)),
                },
                Command::Restore {
                    backup_passphrase,
                    passphrase,
                    ..
                } => match self.restore(&backup_passphrase, passphrase.as_ref()).await {
                    Ok(p) => return Some(p),
                    Err(why) => self.say(Event::CreateFailed(why)),
                },
                Command::Unlock(pass) => {
                    let opened = BrowserProfile::unlock_with(PROFILE, async |h| {
                        crate::kdf::open(h, pass.as_bytes()).await
                    })
                    .await;
                    match opened {
                        Ok(p) => return Some(p),
                        Err(e) => self.say(Event::UnlockFailed(open_error(&e))),
                    }
                }
                _ => {}
            }
        }
    }

    async fn create(
        &self,
        name: &str,
        relay: Option<&str>,
        passphrase: Option<&Zeroizing<String>>,
    ) -> Result<BrowserProfile, String> {
        let pass = passphrase
            .filter(|p| !p.is_empty())
            .ok_or("In the browser a passphrase protects the profile: please choose one")?;
        let relay = relay
            .map(str::to_owned)
            .or_else(|| self.relay_choices().into_iter().next())
            .ok_or("No home relay: this page's network directory names none a browser can reach")?;
        let relay = RelayAddress::parse(relay.trim()).map_err(|_| {
            "That is not a relay address (postern-relay://host:port#pin)".to_owned()
        })?;
        if self.boot.listeners().get(&relay).is_none() {
            return Err(
                "That relay cannot be reached from a browser (it has no WebTransport listener in the signed directory)"
                    .to_owned(),
            );
        }
        let rt = BrowserRuntime;
        let authorities = self.boot.authorities.clone();
        let hops = self.boot.hops;
        let directory = self.boot.directory.as_ref().map(|(b, _)| b.clone());
        let made = crate::kdf::create(pass.as_bytes()).await?;
        BrowserProfile::create_with(PROFILE, made, |store| {
            let new = NewProfile {
                name,
                relay: &relay,
                authorities: &authorities,
                hops,
            };
            setup(store, &new, rt.now(), &mut profile::rng()).map_err(|e| match e {
                postern_app::setup::SetupError::Core(c) => c,
                other => postern_core::Error::Bug(
                    if matches!(other, postern_app::setup::SetupError::BadAuthority) {
                        "bad authority key"
                    } else {
                        "profile setup"
                    },
                ),
            })?;
            if let Some(bytes) = &directory {
                let mut cs = settings::cache_directory(bytes);
                cs.extend(settings::set_directory_fetched_at(rt.now()));
                store.commit(cs)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| open_error(&e))
    }

    /// A profile from a backup file the user picks: the backup is opened
    /// in memory (its passphrase and every record checked) before
    /// anything is stored, then written with the new profile's header in
    /// one transaction.
    async fn restore(
        &self,
        backup_passphrase: &Zeroizing<String>,
        passphrase: Option<&Zeroizing<String>>,
    ) -> Result<BrowserProfile, String> {
        let pass = passphrase
            .filter(|p| !p.is_empty())
            .ok_or("In the browser a passphrase protects the profile: please choose one")?;
        let max = postern_core::consts::MAX_BACKUP_BYTES as f64;
        let (picked, too_large) = files::pick(None, false, max).await;
        if !too_large.is_empty() {
            return Err("That file is larger than a Postern backup can be".to_owned());
        }
        let (_, bytes) = picked.into_iter().next().ok_or("Nothing was restored")?;
        let cs = postern_core::backup::import(
            &postern_core::MemStore::new(),
            &bytes,
            backup_passphrase.as_bytes(),
        )
        .map_err(|_| {
            "Cannot restore: the passphrase is wrong, or the file is not a Postern backup or is damaged"
                .to_owned()
        })?;
        BrowserProfile::create(PROFILE, pass.as_bytes(), KDF, |store| {
            store.commit(cs).map_err(postern_core::Error::from)
        })
        .await
        .map_err(|e| open_error(&e))
    }

    /// The relays' WebTransport listeners from the newest verified
    /// directory: the one the client cached, else the page's.
    fn listeners(&self, p: &BrowserProfile) -> Listeners {
        settings::cached_directory(p)
            .ok()
            .flatten()
            .and_then(|b| self.boot.verify(&b, BrowserRuntime.now()).ok())
            .map(|d| Listeners::from_directory(&d))
            .unwrap_or_else(|| self.boot.listeners())
    }

    /// Keeps the cached directory at least as new as the one the page
    /// came with.
    fn refresh_directory(&self, p: &mut BrowserProfile) {
        let Some((bytes, fresh)) = &self.boot.directory else {
            return;
        };
        let now = BrowserRuntime.now();
        let cached = settings::cached_directory(p)
            .ok()
            .flatten()
            .and_then(|b| self.boot.verify(&b, now).ok());
        if cached.is_none_or(|c| c.issued_at < fresh.issued_at) {
            let mut cs = settings::cache_directory(bytes);
            cs.extend(settings::set_directory_fetched_at(now));
            let _ = p.commit(cs);
        }
    }

    /// Runs the service over the unlocked profile until the user locks
    /// (`Some(reason)`) or the page closes (`None`).
    async fn unlocked(&mut self, mut p: BrowserProfile) -> Option<Option<String>> {
        crate::accesskit::timing("kdf_ms", p.kdf_time().as_secs_f64() * 1000.0);
        self.refresh_directory(&mut p);
        self.say(Event::Unlocked);
        let mut cover = ServiceConfig::default().cover_per_minute;
        loop {
            let (req_tx, req_rx) = async_channel::unbounded();
            let (saves_tx, saves_rx) = async_channel::unbounded();
            let tell = self.tell.clone();
            let mut service: Service<BrowserConnector> = Service::new(req_rx, move |u| match u {
                Update::AttachmentBytes { .. } => {
                    let _ = saves_tx.try_send(u);
                }
                u => tell(Event::App(u)),
            });
            let net = BrowserConnector::new(self.listeners(&p), p.durable());
            // A newer directory the client fetches from the relays brings
            // the relays' new certificate hashes: the links follow it.
            let follow = net.clone();
            let boot = self.boot.clone();
            p.on_directory(move |bytes| {
                if let Ok(d) = boot.verify(bytes, BrowserRuntime.now()) {
                    follow.update(Listeners::from_directory(&d));
                }
            });
            let cfg = ServiceConfig {
                cover_per_minute: cover,
                ..ServiceConfig::default()
            };
            let ended = {
                let svc = core::pin::pin!(service.run(&mut p, net, cfg));
                let fwd = core::pin::pin!(self.forward(&req_tx, &saves_rx, &mut cover));
                match select(svc, fwd).await {
                    Either::Left((r, _)) => match r {
                        Ok(()) => Ok(Ended::Lock),
                        Err(e) => Err(format!("Locked after an error: {e}")),
                    },
                    Either::Right((what, _unpolled)) => {
                        req_tx.close();
                        Ok(what)
                    }
                }
            };
            match ended {
                Ok(Ended::Restart) => continue,
                Ok(Ended::Exclusive(op)) => {
                    self.exclusive(&mut p, op).await;
                    continue;
                }
                Ok(Ended::Lock) => {
                    p.close().await;
                    return Some(None);
                }
                Ok(Ended::Gone) => {
                    p.close().await;
                    return None;
                }
                Err(why) => {
                    p.close().await;
                    return Some(Some(why));
                }
            }
        }
    }

    /// What needs the profile to itself: a new passphrase (the current
    /// one checked first), an encrypted backup (downloaded).
    async fn exclusive(&self, p: &mut BrowserProfile, op: Exclusive) {
        match op {
            Exclusive::ChangePassphrase { current, new } => {
                let r = p
                    .change_passphrase(current.as_bytes(), new.as_bytes(), KDF)
                    .await;
                self.say(match r {
                    Ok(()) => Event::Notice("The passphrase is changed".to_owned()),
                    Err(OpenError::Header(HeaderError::WrongPassphrase)) => Event::ShellFailed(
                        "The current passphrase is wrong: nothing changed".to_owned(),
                    ),
                    Err(e) => Event::ShellFailed(format!("Could not change the passphrase: {e}")),
                });
            }
            Exclusive::Export { passphrase } => {
                let name = "postern.postern-backup";
                let backup = postern_core::backup::export(
                    p,
                    passphrase.as_bytes(),
                    KDF,
                    &mut profile::rng(),
                );
                self.say(match backup.map(|b| files::download(name, &b)) {
                    Ok(Ok(())) => {
                        Event::Notice(format!("The encrypted backup is downloaded ({name})"))
                    }
                    _ => Event::ShellFailed("Could not export a backup".to_owned()),
                });
            }
        }
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
    async fn stop_recording(&self, send: Option<&async_channel::Sender<Request>>) {
        let taken = self.audio.borrow_mut().recording.take();
        let Some((to, r)) = taken else {
            return;
        };
        self.say(Event::Recording(None));
        let Some(req) = send else {
            r.cancel();
            return;
        };
        let clip = r
            .finish()
            .await
            .and_then(|webm| postern_media::voice::from_webm(&webm).map_err(|e| e.to_string()));
        match clip {
            Ok(bytes) => {
                let _ = req.try_send(Request::SendFile {
                    to,
                    name: "voice.ogg".to_owned(),
                    bytes,
                    voice: true,
                });
            }
            Err(why) => self.say(Event::ShellFailed(format!("Could not record: {why}"))),
        }
    }

    /// Every tick while sound is recorded or played: the level and the
    /// positions to the screens; a recording at the longest length is sent.
    async fn audio_tick(&self, req: &async_channel::Sender<Request>) {
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
                self.stop_recording(Some(req)).await;
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

    /// The screens' commands while unlocked.
    async fn forward(
        &self,
        req: &async_channel::Sender<Request>,
        saves: &async_channel::Receiver<Update>,
        cover: &mut u32,
    ) -> Ended {
        let send = |r: Request| {
            let _ = req.try_send(r);
        };
        loop {
            let active = {
                let a = self.audio.borrow();
                a.recording.is_some() || a.playing.is_some()
            };
            let next = {
                let c = core::pin::pin!(self.commands.recv());
                let s = core::pin::pin!(saves.recv());
                let tick = core::pin::pin!(async {
                    if active {
                        BrowserRuntime.sleep(AUDIO_TICK).await;
                    } else {
                        core::future::pending::<()>().await;
                    }
                });
                match select(select(c, s), tick).await {
                    Either::Left((Either::Left((c, _)), _)) => Next::Command(c.ok()),
                    Either::Left((Either::Right((s, _)), _)) => Next::Save(s.ok()),
                    Either::Right(_) => Next::Tick,
                }
            };
            let cmd = match next {
                Next::Command(Some(c)) => c,
                Next::Command(None) => return Ended::Gone,
                Next::Save(Some(Update::AttachmentBytes {
                    id, name, bytes, ..
                })) => {
                    self.received(id, &name, &bytes);
                    continue;
                }
                Next::Save(_) => continue,
                Next::Tick => {
                    self.audio_tick(req).await;
                    continue;
                }
            };
            match cmd {
                Command::App(r) => send(r),
                Command::Lock => return Ended::Lock,
                Command::Attach { to } => {
                    let (picked, too_large) = files::pick(None, true, files::MAX_PICK_BYTES).await;
                    for name in too_large {
                        self.say(Event::ShellFailed(format!(
                            "{name} is larger than an attachment may be"
                        )));
                    }
                    for (name, bytes) in picked {
                        send(Request::SendFile {
                            to,
                            name,
                            bytes,
                            voice: false,
                        });
                    }
                }
                Command::Save { peer, id } => send(Request::Attachment { peer, id }),
                Command::OpenImageToScan(purpose) => {
                    let (picked, _) =
                        files::pick(Some("image/png,image/jpeg"), false, SCAN_MAX_BYTES).await;
                    if let Some((_, bytes)) = picked.into_iter().next() {
                        send(Request::Scan {
                            image: Image::File(bytes),
                            purpose,
                        });
                    }
                }
                Command::Prefs(prefs) if prefs.cover_per_minute != *cover => {
                    *cover = prefs.cover_per_minute;
                    return Ended::Restart;
                }
                Command::Record { to } => self.record(to).await,
                Command::StopRecording { send: yes } => {
                    self.stop_recording(yes.then_some(req)).await;
                }
                Command::Play { peer, id } => {
                    let mut a = self.audio.borrow_mut();
                    match &a.playing {
                        Some((playing, p)) if *playing == id => p.set_playing(true),
                        _ => {
                            a.playing = None;
                            a.to_play = Some(id);
                            drop(a);
                            self.say(Event::Playback(None));
                            send(Request::Attachment { peer, id });
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
                    return Ended::Exclusive(Exclusive::ChangePassphrase { current, new });
                }
                Command::ExportBackup { passphrase } => {
                    return Ended::Exclusive(Exclusive::Export { passphrase });
                }
                _ => {}
            }
        }
    }
}

mod rand_core_compat {
    /// A uniform index below `n` from the browser's generator.
    pub fn next_index(n: usize) -> usize {
        use postern_link::Runtime as _;
        let mut b = [0u8; 8];
        postern_browser::runtime::BrowserRuntime.fill_random(&mut b);
        (u64::from_le_bytes(b) % (n as u64)) as usize
    }
}
