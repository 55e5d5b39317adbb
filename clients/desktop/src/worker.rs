//! The worker thread: everything that touches the disk or the network,
//! so the window never waits on either. It owns the profile while it is
//! unlocked, runs the client service (`postern-app`) on a tokio runtime
//! of its own, and carries out what only the platform can do: create or
//! unlock a profile, read a file to send, save one received.
//!
//! It talks to the window through two channels: commands in
//! ([`ToWorker`]), events out (`postern_ui::Event`, each followed by a
//! repaint request, so the window repaints only when something
//! happened).

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use postern_app::{Image, MessageId, Purpose, Request, Service, ServiceConfig, Update};
use postern_audio::codec::Encoder;
use postern_audio::device::{Player, Recorder};
use postern_core::consts::MAX_ATTACHMENT_BYTES;
use postern_core::crypto::kdf::KdfParams;
use postern_core::{Address, KvStore, RelayAddress, settings};
use postern_net::Connector;
use postern_store::{Profile, ProfileError, Unlock};
use postern_ui::{Command, Event, Prefs};
use zeroize::Zeroizing;

/// What the worker is told.
#[derive(Debug)]
pub enum ToWorker {
    /// A command from the screens.
    Ui(Command),
    /// Files picked in a dialog, to send.
    Picked {
        /// To whom.
        to: Address,
        /// The files.
        paths: Vec<PathBuf>,
    },
    /// An image picked in a dialog, to scan.
    ScanPicked(Purpose, PathBuf),
    /// A place picked to save an attachment (or a backup).
    SaveTo(PathBuf, Vec<u8>),
    /// The dialog to pick a backup file was closed without one.
    RestoreCancelled,
    /// A backup file picked to restore from.
    RestorePicked {
        /// The file.
        from: PathBuf,
        /// Its passphrase.
        backup_passphrase: Zeroizing<String>,
        /// The new profile's passphrase (`None`: the keychain).
        passphrase: Option<Zeroizing<String>>,
    },
    /// The window is closing.
    Quit,
}

/// How the desktop app runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The profile directory (with `root`: the one shown first).
    pub profile: PathBuf,
    /// Where several profiles live, as `profile-1`, `profile-2`, … (the
    /// lock screen switches between them and makes new ones); `None`:
    /// only `profile`.
    pub root: Option<PathBuf>,
    /// The home relay offered at onboarding.
    pub relay: Option<String>,
    /// The network's directory authorities (base64url public keys),
    /// pinned in a new profile.
    pub authorities: Vec<String>,
    /// Relays per onion path.
    pub hops: u8,
    /// Received attachments are saved here without asking (else a dialog
    /// asks where).
    pub downloads: Option<PathBuf>,
    /// How connections are made.
    pub connector: Connector,
    /// How the client service runs.
    pub service: ServiceConfig,
    /// Key derivation for passphrase profiles.
    pub kdf: KdfParams,
    /// The microphone by name (`None`: the system's default).
    pub microphone: Option<String>,
    /// The speaker by name (`None`: the system's default).
    pub speaker: Option<String>,
}

/// The preferences file in the profile directory (nothing secret: theme,
/// scale, cover rate, notifications, auto-lock).
pub const PREFS_FILE: &str = "desktop-prefs";

/// Reads the preferences kept beside the profile (defaults if none).
pub fn load_prefs(dir: &Path) -> Prefs {
    let mut p = Prefs::default();
    let Ok(text) = std::fs::read_to_string(dir.join(PREFS_FILE)) else {
        return p;
    };
    for line in text.lines().take(32) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match (k.trim(), v.trim()) {
            ("theme", "dark") => p.theme = egui::ThemePreference::Dark,
            ("theme", "light") => p.theme = egui::ThemePreference::Light,
            ("theme", _) => p.theme = egui::ThemePreference::System,
            ("scale", v) => p.scale = v.parse::<f32>().unwrap_or(1.0).clamp(0.75, 2.0),
            ("notifications", v) => p.notifications = v == "true",
            ("notification_content", v) => p.notification_content = v == "true",
            ("cover_per_minute", v) => {
                p.cover_per_minute = v.parse::<u32>().unwrap_or(6).min(60);
            }
            ("auto_lock_minutes", v) => {
                p.auto_lock_minutes = v.parse::<u32>().unwrap_or(15).min(240);
            }
            _ => {}
        }
    }
    p
}

fn save_prefs(dir: &Path, p: &Prefs) -> std::io::Result<()> {
    let theme = match p.theme {
        egui::ThemePreference::Dark => "dark",
        egui::ThemePreference::Light => "light",
        egui::ThemePreference::System => "system",
    };
    let text = format!(
        "theme = {theme}\nscale = {}\nnotifications = {}\nnotification_content = {}\ncover_per_minute = {}\nauto_lock_minutes = {}\n",
        p.scale, p.notifications, p.notification_content, p.cover_per_minute, p.auto_lock_minutes
    );
    postern_native::files::write_private(&dir.join(PREFS_FILE), text.as_bytes())
}

/// The profiles under `root` (`profile-<n>` directories holding a
/// profile), by number.
pub fn profiles_in(root: &Path) -> Vec<(u32, PathBuf)> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name();
                    let n = name
                        .to_str()?
                        .strip_prefix("profile-")?
                        .parse::<u32>()
                        .ok()?;
                    let path = e.path();
                    profile_exists(&path).then_some((n, path))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.truncate(MAX_PROFILES);
    v
}

/// Most profiles listed.
const MAX_PROFILES: usize = 32;
/// The file under the root naming the profile used last (a number).
const LAST_PROFILE_FILE: &str = "last-profile";

/// The profile shown first under `root`: the one used last, else the
/// first, else a new `profile-1`.
pub fn initial_profile(root: &Path) -> PathBuf {
    let list = profiles_in(root);
    let last = std::fs::read_to_string(root.join(LAST_PROFILE_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    last.and_then(|n| list.iter().find(|(m, _)| *m == n))
        .or(list.first())
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| root.join("profile-1"))
}

/// How the worker reaches the window.
#[derive(Clone)]
struct Window {
    tx: mpsc::Sender<Event>,
    ctx: egui::Context,
}

impl Window {
    fn send(&self, e: Event) {
        let _ = self.tx.send(e);
        self.ctx.request_repaint();
    }
}

/// The worker thread's stack (reserved, not committed, until used).
const WORKER_STACK_BYTES: usize = 32 * 1024 * 1024;

/// Starts the worker thread.
pub fn spawn(
    cfg: Config,
    ctx: egui::Context,
    to_ui: mpsc::Sender<Event>,
) -> std::io::Result<(async_channel::Sender<ToWorker>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = async_channel::unbounded();
    let me = tx.clone();
    let window = Window { tx: to_ui, ctx };
    let handle = std::thread::Builder::new()
        .name("postern-worker".into())
        // The client's futures nest deeply (service, watch loop, flows,
        // links); unoptimised builds need more than the default 2 MiB.
        .stack_size(WORKER_STACK_BYTES)
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    window.send(Event::ShellFailed(format!("cannot start: {e}")));
                    return;
                }
            };
            let w = window.clone();
            let notifier = crate::notify::Notifier::start(move |why| {
                w.send(Event::ShellFailed(format!(
                    "Desktop notifications are unavailable ({why})"
                )));
            })
            .ok();
            rt.block_on(
                Worker {
                    cfg,
                    rx,
                    me,
                    window,
                    notifier,
                    audio: Default::default(),
                    relay_offer: None,
                }
                .run(),
            );
        })?;
    Ok((tx, handle))
}

struct Worker {
    cfg: Config,
    rx: async_channel::Receiver<ToWorker>,
    me: async_channel::Sender<ToWorker>,
    window: Window,
    notifier: Option<crate::notify::Notifier>,
    audio: std::cell::RefCell<Audio>,
    /// The home relays offered at onboarding (from the signed directory),
    /// once fetched, and the one suggested.
    relay_offer: Option<(Vec<String>, usize)>,
}

/// Voice messages being recorded or played (cpal's streams live on this
/// thread; their audio threads only fill and drain buffers).
#[derive(Default)]
struct Audio {
    recording: Option<Recording>,
    /// The message whose bytes were asked for, to play when they come.
    to_play: Option<MessageId>,
    playing: Option<(MessageId, Player)>,
}

struct Recording {
    to: Address,
    recorder: Recorder,
    encoder: Encoder,
}

/// How often a recording's level and length, or a playback's position,
/// are shown.
const AUDIO_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether the system keychain can be used here.
fn keychain_available() -> bool {
    std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        && postern_store::use_platform_keychain().is_ok()
}

fn profile_exists(dir: &Path) -> bool {
    dir.join(postern_store::HEADER_FILE).exists()
}

/// The words for a profile error on the lock screen.
fn unlock_error(e: &ProfileError) -> String {
    match e {
        ProfileError::WrongKey => "Wrong passphrase".to_owned(),
        ProfileError::InUse => "This profile is open in another Postern window".to_owned(),
        ProfileError::Corrupt => {
            "The profile is damaged; it was not modified. Restore it from a backup.".to_owned()
        }
        e => format!("Cannot open the profile: {e}"),
    }
}

impl Worker {
    async fn run(mut self) {
        let keychain = keychain_available();
        self.locked(keychain, None);
        loop {
            if self.relay_offer.is_none() && !profile_exists(&self.cfg.profile) {
                self.offer_relays().await;
            }
            let Ok(m) = self.rx.recv().await else { return };
            let opened = match m {
                ToWorker::Ui(Command::Create {
                    name,
                    relay,
                    passphrase,
                }) => match self.create(&name, relay.as_deref(), passphrase.as_ref()) {
                    Ok(p) => Some(p),
                    Err(why) => {
                        self.window.send(Event::CreateFailed(why));
                        None
                    }
                },
                ToWorker::Ui(Command::Unlock(pw)) => {
                    let unlock = if pw.is_empty() {
                        Unlock::Keychain
                    } else {
                        Unlock::Passphrase(pw.as_bytes())
                    };
                    match Profile::open(&self.cfg.profile, unlock) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            self.window.send(Event::UnlockFailed(unlock_error(&e)));
                            None
                        }
                    }
                }
                ToWorker::Ui(Command::Restore {
                    from: None,
                    backup_passphrase,
                    passphrase,
                }) => {
                    let me = self.me.clone();
                    dialog(move || {
                        match rfd::FileDialog::new()
                            .set_title("Restore from a backup")
                            .add_filter("Postern backups", &[BACKUP_EXTENSION])
                            .pick_file()
                        {
                            Some(from) => {
                                let _ = me.try_send(ToWorker::RestorePicked {
                                    from,
                                    backup_passphrase,
                                    passphrase,
                                });
                            }
                            None => {
                                let _ = me.try_send(ToWorker::RestoreCancelled);
                            }
                        }
                    });
                    None
                }
                ToWorker::Ui(Command::Restore {
                    from: Some(from),
                    backup_passphrase,
                    passphrase,
                })
                | ToWorker::RestorePicked {
                    from,
                    backup_passphrase,
                    passphrase,
                } => match self.restore(&from, &backup_passphrase, passphrase.as_ref()) {
                    Ok(p) => Some(p),
                    Err(why) => {
                        self.window.send(Event::CreateFailed(why));
                        None
                    }
                },
                // A dialog was cancelled: the onboarding screen again.
                ToWorker::RestoreCancelled => {
                    self.window
                        .send(Event::CreateFailed("Nothing was restored".to_owned()));
                    None
                }
                ToWorker::Ui(Command::Notify { .. }) => None,
                ToWorker::Ui(Command::SwitchProfile(i)) => {
                    self.switch_profile(Some(i), keychain);
                    None
                }
                ToWorker::Ui(Command::NewProfile) => {
                    self.switch_profile(None, keychain);
                    None
                }
                ToWorker::Quit => return,
                _ => None,
            };
            if let Some(p) = opened {
                self.remember_profile();
                match self.unlocked(p).await {
                    Ended::Quit => return,
                    Ended::Locked(reason) => self.locked(keychain, reason),
                }
            }
        }
    }

    /// The profiles' names and which is shown (with a root only).
    fn tell_profiles(&self) {
        let Some(root) = &self.cfg.root else { return };
        let list = profiles_in(root);
        self.window.send(Event::Profiles {
            names: list.iter().map(|(n, _)| format!("Profile {n}")).collect(),
            current: list.iter().position(|(_, p)| *p == self.cfg.profile),
        });
    }

    /// Shows profile `i`'s lock screen, or a new profile's onboarding.
    fn switch_profile(&mut self, to: Option<usize>, keychain: bool) {
        let Some(root) = self.cfg.root.clone() else {
            return;
        };
        let list = profiles_in(&root);
        let dir = match to {
            Some(i) => match list.get(i) {
                Some((_, p)) => p.clone(),
                None => return,
            },
            None => {
                let next = list.last().map_or(1, |(n, _)| n.saturating_add(1));
                if list.len() >= MAX_PROFILES {
                    self.window.send(Event::ShellFailed(format!(
                        "At most {MAX_PROFILES} profiles on one device"
                    )));
                    return;
                }
                root.join(format!("profile-{next}"))
            }
        };
        self.cfg.profile = dir;
        self.window
            .send(Event::Prefs(load_prefs(&self.cfg.profile)));
        self.locked(keychain, None);
    }

    /// Remembers the profile just unlocked as the one to show first.
    fn remember_profile(&self) {
        let Some(root) = &self.cfg.root else { return };
        if let Some((n, _)) = profiles_in(root)
            .into_iter()
            .find(|(_, p)| *p == self.cfg.profile)
        {
            let _ = postern_native::files::write_private(
                &root.join(LAST_PROFILE_FILE),
                n.to_string().as_bytes(),
            );
        }
    }

    fn locked(&self, keychain: bool, reason: Option<String>) {
        self.tell_profiles();
        let dir = &self.cfg.profile;
        if profile_exists(dir) {
            let uses_keychain = postern_store::key_source_of(dir)
                .is_ok_and(|k| k == postern_store::KeySource::Keychain);
            self.window.send(Event::Locked {
                keychain: uses_keychain,
                reason,
            });
        } else {
            self.window.send(Event::NoProfile {
                keychain,
                default_relay: self.cfg.relay.clone(),
            });
            if let Some((choices, suggested)) = &self.relay_offer {
                self.window.send(Event::Relays {
                    choices: choices.clone(),
                    suggested: *suggested,
                });
            }
        }
    }

    /// Fetches the network's signed directory from the configured relay
    /// (verified against the pinned authorities) and offers its mailbox
    /// relays as home relays, one suggested at random. Without an answer
    /// in time, the configured relay stays the offer.
    async fn offer_relays(&mut self) {
        self.relay_offer = Some((Vec::new(), 0));
        let Some(boot) = self
            .cfg
            .relay
            .as_deref()
            .and_then(|r| RelayAddress::parse(r.trim()).ok())
        else {
            return;
        };
        let keys: Vec<Vec<u8>> = self
            .cfg
            .authorities
            .iter()
            .filter_map(|a| {
                data_encoding::BASE64URL_NOPAD
                    .decode(a.trim().as_bytes())
                    .ok()
            })
            .collect();
        if keys.is_empty() {
            return;
        }
        let mut mem = postern_core::MemStore::new();
        let Ok(cs) = settings::set_network(&settings::NetworkSettings {
            authorities: keys,
            threshold: 1,
            hops: self.cfg.hops,
        }) else {
            return;
        };
        if mem.commit(cs).is_err() {
            return;
        }
        let net = postern_native::native(self.cfg.connector);
        let fetched = tokio::time::timeout(
            DIRECTORY_WAIT,
            postern_native::transport::directory(&mut mem, &boot, &net),
        )
        .await;
        let Ok(Ok(Some((d, _)))) = fetched else {
            return;
        };
        let choices: Vec<String> = d
            .relays
            .iter()
            .filter(|r| r.has_role(postern_core::directory::ROLE_MAILBOX))
            .map(|r| r.address.to_string())
            .take(MAX_RELAY_CHOICES)
            .collect();
        if choices.is_empty() {
            return;
        }
        let rt = postern_net::TokioRuntime::default();
        let suggested = {
            use rand_core::RngCore as _;
            postern_driver_rng(&rt).next_u32() as usize % choices.len()
        };
        self.window.send(Event::Relays {
            choices: choices.clone(),
            suggested,
        });
        self.relay_offer = Some((choices, suggested));
    }

    /// A new profile: keys, the suggested name, the home relay and the
    /// network's pinned authorities.
    fn create(
        &self,
        name: &str,
        relay: Option<&str>,
        passphrase: Option<&Zeroizing<String>>,
    ) -> Result<Profile, String> {
        let relay = match relay.or(self.cfg.relay.as_deref()) {
            Some(r) => RelayAddress::parse(r.trim()).map_err(|_| {
                "That is not a relay address (postern-relay://host:port#pin)".to_owned()
            })?,
            None => return Err("A home relay is needed".to_owned()),
        };
        let keys =
            postern_app::setup::authority_keys(&self.cfg.authorities).map_err(|e| e.to_string())?;
        let unlock = match passphrase {
            Some(p) => Unlock::Passphrase(p.as_bytes()),
            None => Unlock::Keychain,
        };
        let mut p = Profile::create(&self.cfg.profile, unlock, self.cfg.kdf)
            .map_err(|e| format!("Cannot create the profile: {e}"))?;
        let fill = |p: &mut Profile| {
            let rt = postern_net::TokioRuntime::default();
            use postern_net::Runtime as _;
            let new = postern_app::setup::NewProfile {
                name,
                relay: &relay,
                authorities: &keys,
                hops: self.cfg.hops,
            };
            postern_app::setup::setup(p, &new, rt.now(), &mut postern_driver_rng(&rt))
        };
        fill(&mut p).map_err(|e| format!("Cannot set up the profile: {e}"))?;
        Ok(p)
    }

    /// A profile from a backup: the backup is opened (its passphrase
    /// checked, every record decoded) before anything is written, then a
    /// new profile receives it in one commit.
    fn restore(
        &self,
        from: &Path,
        backup_passphrase: &Zeroizing<String>,
        passphrase: Option<&Zeroizing<String>>,
    ) -> Result<Profile, String> {
        let bytes = read_bounded(from, postern_core::consts::MAX_BACKUP_BYTES as u64)?;
        let cs = postern_core::backup::import(
            &postern_core::MemStore::new(),
            &bytes,
            backup_passphrase.as_bytes(),
        )
        .map_err(|_| {
            "Cannot restore: the passphrase is wrong, or the file is not a Postern backup or is damaged".to_owned()
        })?;
        let unlock = match passphrase {
            Some(p) => Unlock::Passphrase(p.as_bytes()),
            None => Unlock::Keychain,
        };
        let dir = &self.cfg.profile;
        let mut p = Profile::create(dir, unlock, self.cfg.kdf)
            .map_err(|e| format!("Cannot create the profile: {e}"))?;
        if let Err(e) = p.commit(cs) {
            drop(p);
            remove_profile_files(dir);
            return Err(format!("Cannot restore: {e}"));
        }
        Ok(p)
    }

    /// Runs the service over the unlocked profile until the user locks
    /// or the window closes; the profile is closed (and everything
    /// decrypted dropped) when this returns.
    async fn unlocked(&mut self, mut p: Profile) -> Ended {
        let mut prefs = load_prefs(&self.cfg.profile);
        self.window.send(Event::Unlocked);
        loop {
            let (req_tx, req_rx) = async_channel::unbounded();
            let (saves_tx, saves_rx) = async_channel::unbounded();
            let window = self.window.clone();
            let mut service: Service<postern_native::Native> =
                Service::new(req_rx, move |u| match u {
                    Update::AttachmentBytes { .. } => {
                        let _ = saves_tx.try_send(u);
                    }
                    u => window.send(Event::App(u)),
                });
            let mut cfg = self.cfg.service;
            cfg.cover_per_minute = prefs.cover_per_minute;
            let net = postern_native::native(self.cfg.connector);
            let mut exclusive = None;
            let (ended, restart) = {
                let svc = core::pin::pin!(service.run(&mut p, net, cfg));
                let fwd = core::pin::pin!(self.forward(&req_tx, &saves_rx, &mut prefs));
                match futures_util::future::select(svc, fwd).await {
                    futures_util::future::Either::Left((r, _)) => {
                        let why = match r {
                            Ok(()) => "Locked".to_owned(),
                            Err(e) => format!("Locked after an error: {e}"),
                        };
                        (Some(Ended::Locked(Some(why))), false)
                    }
                    futures_util::future::Either::Right((what, svc)) => {
                        // Closing or locking never waits on the network:
                        // the service is dropped where it is (with this
                        // block, unpolled). Everything it
                        // committed stays; what it was sending is still in
                        // the outbox (entries leave it only once sent) and
                        // goes out when the profile is next unlocked.
                        req_tx.close();
                        let _unpolled = svc;
                        match what {
                            Forwarded::Lock => (Some(Ended::Locked(None)), false),
                            Forwarded::Quit => (Some(Ended::Quit), false),
                            Forwarded::Restart => (None, true),
                            Forwarded::Exclusive(op) => {
                                exclusive = Some(op);
                                (None, true)
                            }
                        }
                    }
                }
            };
            if let Some(op) = exclusive {
                self.exclusive(&mut p, op);
            }
            if restart {
                continue;
            }
            // Nothing recorded or playing outlives the unlocked profile.
            let audio = core::mem::take(&mut *self.audio.borrow_mut());
            if let Some(r) = audio.recording {
                r.recorder.stop();
            }
            if let Some((_, player)) = audio.playing {
                player.stop();
            }
            drop(p);
            return ended.unwrap_or(Ended::Locked(None));
        }
    }

    /// What needs the profile to itself (the service stopped): a new
    /// passphrase, a backup.
    fn exclusive(&self, p: &mut Profile, op: Exclusive) {
        match op {
            Exclusive::ChangePassphrase { current, new } => {
                if p.key_source() == postern_store::KeySource::Passphrase
                    && p.check_passphrase(current.as_bytes()).is_err()
                {
                    self.window.send(Event::ShellFailed(
                        "The current passphrase is wrong: nothing changed".to_owned(),
                    ));
                    return;
                }
                match p.change_protection(Unlock::Passphrase(new.as_bytes()), self.cfg.kdf) {
                    Ok(()) => self
                        .window
                        .send(Event::Notice("The passphrase is changed".to_owned())),
                    Err(e) => self.window.send(Event::ShellFailed(format!(
                        "Could not change the passphrase: {e}"
                    ))),
                }
            }
            Exclusive::Export { passphrase } => {
                let rt = postern_net::TokioRuntime::default();
                let made = p.verify().map_err(|e| e.to_string()).and_then(|()| {
                    postern_core::backup::export(
                        p,
                        passphrase.as_bytes(),
                        self.cfg.kdf,
                        &mut postern_driver_rng(&rt),
                    )
                    .map_err(|e| e.to_string())
                });
                let bytes = match made {
                    Ok(b) => b,
                    Err(e) => {
                        self.window.send(Event::ShellFailed(format!(
                            "Could not make the backup: {e}"
                        )));
                        return;
                    }
                };
                let name = format!(
                    "postern-{}.{BACKUP_EXTENSION}",
                    chrono::Local::now().format("%Y-%m-%d")
                );
                self.save(&name, bytes);
            }
        }
    }

    /// Passes the screens' commands on while the service runs; returns
    /// what ended it.
    async fn forward(
        &self,
        req: &async_channel::Sender<Request>,
        saves: &async_channel::Receiver<Update>,
        prefs: &mut Prefs,
    ) -> Forwarded {
        loop {
            let active = {
                let a = self.audio.borrow();
                a.recording.is_some() || a.playing.is_some()
            };
            let next = tokio::select! {
                m = self.rx.recv() => Next::Worker(m.ok()),
                u = saves.recv() => Next::Save(u.ok()),
                () = tokio::time::sleep(AUDIO_TICK), if active => Next::Tick,
            };
            match next {
                Next::Worker(None) | Next::Worker(Some(ToWorker::Quit)) => return Forwarded::Quit,
                Next::Worker(Some(m)) => {
                    if let Some(f) = self.handle(m, req, prefs) {
                        return f;
                    }
                }
                Next::Save(Some(Update::AttachmentBytes {
                    id, name, bytes, ..
                })) => {
                    let play = self.audio.borrow_mut().to_play.take_if(|x| *x == id);
                    if play.is_some() {
                        self.play(id, &bytes);
                    } else {
                        self.save(&name, bytes);
                    }
                }
                Next::Tick => {
                    if let Some(f) = self.audio_tick(req) {
                        return f;
                    }
                }
                Next::Save(_) => {}
            }
        }
    }

    fn handle(
        &self,
        m: ToWorker,
        req: &async_channel::Sender<Request>,
        prefs: &mut Prefs,
    ) -> Option<Forwarded> {
        let send = |r: Request| {
            let _ = req.try_send(r);
        };
        match m {
            ToWorker::Ui(Command::App(r)) => send(r),
            ToWorker::Ui(Command::Lock) => return Some(Forwarded::Lock),
            ToWorker::Ui(Command::ChangePassphrase { current, new }) => {
                return Some(Forwarded::Exclusive(Exclusive::ChangePassphrase {
                    current,
                    new,
                }));
            }
            ToWorker::Ui(Command::ExportBackup { passphrase }) => {
                return Some(Forwarded::Exclusive(Exclusive::Export { passphrase }));
            }
            ToWorker::Ui(Command::Notify { title, body }) => {
                if let Some(n) = &self.notifier {
                    n.notify(&title, &body);
                }
            }
            ToWorker::Ui(Command::Record { to }) => self.record(to),
            ToWorker::Ui(Command::StopRecording { send: yes }) => {
                self.stop_recording(yes.then_some(req));
            }
            ToWorker::Ui(Command::Play { peer, id }) => {
                let mut a = self.audio.borrow_mut();
                match &a.playing {
                    Some((playing, p)) if *playing == id => {
                        p.set_playing(true);
                        drop(a);
                        self.show_playback();
                    }
                    _ => {
                        if let Some((_, p)) = a.playing.take() {
                            p.stop();
                        }
                        a.to_play = Some(id);
                        drop(a);
                        self.window.send(Event::Playback(None));
                        send(Request::Attachment { peer, id });
                    }
                }
            }
            ToWorker::Ui(Command::Pause) => {
                if let Some((_, p)) = &self.audio.borrow().playing {
                    p.set_playing(false);
                }
                self.show_playback();
            }
            ToWorker::Ui(Command::Seek { ms }) => {
                if let Some((_, p)) = &self.audio.borrow().playing {
                    p.seek_ms(ms);
                }
                self.show_playback();
            }
            ToWorker::Ui(Command::Attach { to }) => {
                let me = self.me.clone();
                dialog(move || {
                    if let Some(paths) = rfd::FileDialog::new().set_title("Send files").pick_files()
                    {
                        let _ = me.try_send(ToWorker::Picked { to, paths });
                    }
                });
            }
            ToWorker::Ui(Command::AttachDropped { to, files }) => {
                let paths = files.iter().map(|f| f.path().to_path_buf()).collect();
                let _ = self.me.try_send(ToWorker::Picked { to, paths });
            }
            ToWorker::Picked { to, paths } => {
                for path in paths {
                    match read_attachment(&path) {
                        Ok((name, bytes, voice)) => send(Request::SendFile {
                            to,
                            name,
                            bytes,
                            voice,
                        }),
                        Err(why) => self.window.send(Event::ShellFailed(why)),
                    }
                }
            }
            ToWorker::Ui(Command::Save { peer, id }) => send(Request::Attachment { peer, id }),
            ToWorker::Ui(Command::OpenImageToScan(purpose)) => {
                let me = self.me.clone();
                dialog(move || {
                    if let Some(path) = rfd::FileDialog::new()
                        .set_title("Open an image with a QR code")
                        .add_filter("Images", &["png", "jpg", "jpeg"])
                        .pick_file()
                    {
                        let _ = me.try_send(ToWorker::ScanPicked(purpose, path));
                    }
                });
            }
            ToWorker::ScanPicked(purpose, path) => match read_bounded(&path, SCAN_MAX_BYTES) {
                Ok(bytes) => send(Request::Scan {
                    image: Image::File(bytes),
                    purpose,
                }),
                Err(why) => self.window.send(Event::ShellFailed(why)),
            },
            ToWorker::SaveTo(path, bytes) => {
                match postern_native::files::write_new(&path, &bytes) {
                    Ok(()) => self
                        .window
                        .send(Event::Notice(format!("Saved {}", path.display()))),
                    Err(e) => self
                        .window
                        .send(Event::ShellFailed(format!("Could not save: {e}"))),
                }
            }
            ToWorker::Ui(Command::Prefs(p)) => {
                let restart = p.cover_per_minute != prefs.cover_per_minute;
                if let Err(e) = save_prefs(&self.cfg.profile, &p) {
                    self.window.send(Event::ShellFailed(format!(
                        "Could not keep the settings: {e}"
                    )));
                }
                *prefs = p;
                if restart {
                    return Some(Forwarded::Restart);
                }
            }
            ToWorker::Quit => return Some(Forwarded::Quit),
            // Create/Unlock/Restore while unlocked: nothing to do.
            ToWorker::Ui(_) | ToWorker::RestorePicked { .. } | ToWorker::RestoreCancelled => {}
        }
        None
    }

    /// Starts recording a voice message; without a microphone, says so
    /// (the screens then offer attaching a clip).
    fn record(&self, to: Address) {
        self.stop_recording(None);
        let started = Encoder::new().and_then(|encoder| {
            Recorder::start(self.cfg.microphone.as_deref()).map(|recorder| Recording {
                to,
                recorder,
                encoder,
            })
        });
        match started {
            Ok(r) => {
                self.audio.borrow_mut().recording = Some(r);
                self.window
                    .send(Event::Recording(Some(postern_ui::Recording {
                        to,
                        elapsed_ms: 0,
                        level: 0.0,
                    })));
            }
            Err(e) => self.window.send(Event::RecordingUnavailable(match e {
                postern_audio::AudioError::NoDevice(_) => "No microphone found".to_owned(),
                e => format!("The microphone cannot be used ({e})"),
            })),
        }
    }

    /// Ends the recording: the clip goes to its contact when `send` is
    /// given, else it is thrown away.
    fn stop_recording(&self, send: Option<&async_channel::Sender<Request>>) {
        let Some(mut r) = self.audio.borrow_mut().recording.take() else {
            return;
        };
        let rest = r.recorder.take();
        r.recorder.stop();
        self.window.send(Event::Recording(None));
        let Some(req) = send else { return };
        let clip = rest
            .and_then(|pcm| r.encoder.push(&pcm))
            .and_then(|()| r.encoder.finish());
        match clip {
            Ok(bytes) => {
                let name = format!(
                    "voice-{}.ogg",
                    chrono::Local::now().format("%Y-%m-%d-%H%M%S")
                );
                let _ = req.try_send(Request::SendFile {
                    to: r.to,
                    name,
                    bytes,
                    voice: true,
                });
            }
            Err(e) => self
                .window
                .send(Event::ShellFailed(format!("Could not record: {e}"))),
        }
    }

    /// Every tick while sound is recorded or played: the recording's
    /// sound into the encoder, the level and positions to the screens.
    fn audio_tick(&self, req: &async_channel::Sender<Request>) -> Option<Forwarded> {
        let mut a = self.audio.borrow_mut();
        if let Some(r) = &mut a.recording {
            let step = r.recorder.take().and_then(|pcm| r.encoder.push(&pcm));
            let view = postern_ui::Recording {
                to: r.to,
                elapsed_ms: r.encoder.duration_ms(),
                level: r.recorder.level(),
            };
            match step {
                Ok(()) => self.window.send(Event::Recording(Some(view))),
                // At the longest clip allowed: it is sent as it is.
                Err(postern_audio::AudioError::TooLong) => {
                    drop(a);
                    self.stop_recording(Some(req));
                    return None;
                }
                Err(e) => {
                    a.recording = None;
                    self.window.send(Event::Recording(None));
                    self.window
                        .send(Event::ShellFailed(format!("Recording stopped: {e}")));
                }
            }
        }
        drop(a);
        self.show_playback();
        None
    }

    /// Decodes a voice message and plays it.
    fn play(&self, id: MessageId, bytes: &[u8]) {
        let started = postern_audio::codec::decode(bytes)
            .and_then(|pcm| Player::start(self.cfg.speaker.as_deref(), pcm));
        match started {
            Ok(p) => {
                self.audio.borrow_mut().playing = Some((id, p));
                self.show_playback();
            }
            Err(postern_audio::AudioError::NoDevice(_)) => self.window.send(Event::ShellFailed(
                "No speaker or headphones found: save the clip to play it elsewhere".to_owned(),
            )),
            Err(e) => self.window.send(Event::ShellFailed(format!(
                "Cannot play the voice message: {e}"
            ))),
        }
    }

    /// Tells the screens where playback is; forgets a player that ended
    /// with an error.
    fn show_playback(&self) {
        let mut a = self.audio.borrow_mut();
        let Some((id, p)) = &a.playing else {
            return;
        };
        if let Some(e) = p.error() {
            a.playing = None;
            self.window.send(Event::Playback(None));
            self.window
                .send(Event::ShellFailed(format!("Playback stopped: {e}")));
            return;
        }
        self.window.send(Event::Playback(Some(postern_ui::Playback {
            id: *id,
            position_ms: p.position_ms(),
            duration_ms: p.duration_ms(),
            playing: p.is_playing(),
        })));
    }

    /// Saves a received attachment: into the downloads directory when one
    /// is set (never overwriting), else where the user picks.
    fn save(&self, name: &str, bytes: Vec<u8>) {
        if let Some(dir) = &self.cfg.downloads {
            match postern_native::files::save_bytes(dir, name, &bytes) {
                Ok(path) => self
                    .window
                    .send(Event::Notice(format!("Saved {}", path.display()))),
                Err(e) => self
                    .window
                    .send(Event::ShellFailed(format!("Could not save: {e}"))),
            }
            return;
        }
        let me = self.me.clone();
        let name = name.to_owned();
        dialog(move || {
            if let Some(path) = rfd::FileDialog::new()
                .set_title("Save attachment")
                .set_file_name(name)
                .save_file()
            {
                let _ = me.try_send(ToWorker::SaveTo(path, bytes));
            }
        });
    }
}

/// Most bytes of an image read to scan for a QR code.
const SCAN_MAX_BYTES: u64 = postern_media::images::MAX_IMAGE_INPUT_BYTES as u64;

/// Runs a blocking file dialog on a thread of its own.
fn dialog(f: impl FnOnce() + Send + 'static) {
    let _ = std::thread::Builder::new()
        .name("postern-dialog".into())
        .spawn(f);
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > max {
        return Err(format!(
            "{} is too large ({} bytes; at most {max})",
            path.display(),
            len
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A file to send: its name, bytes, and whether it is a voice clip (an
/// `.ogg`/`.opus` file that passes the voice check).
fn read_attachment(path: &Path) -> Result<(String, Vec<u8>, bool), String> {
    let bytes = read_bounded(path, MAX_ATTACHMENT_BYTES)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let lower = name.to_lowercase();
    let voice = (lower.ends_with(".ogg") || lower.ends_with(".opus"))
        && postern_media::voice::validate_voice_clip(&bytes).is_ok();
    Ok((name, bytes, voice))
}

fn postern_driver_rng(
    rt: &postern_net::TokioRuntime,
) -> postern_net::RuntimeRng<'_, postern_net::TokioRuntime> {
    postern_net::RuntimeRng(rt)
}

enum Next {
    Worker(Option<ToWorker>),
    Save(Option<Update>),
    Tick,
}

enum Forwarded {
    Lock,
    Quit,
    /// The service's configuration changed: run it again.
    Restart,
    /// Stop the service, do this, run it again.
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

/// How long onboarding waits for the directory before offering only the
/// configured relay.
const DIRECTORY_WAIT: std::time::Duration = std::time::Duration::from_secs(8);
/// Most home relays offered.
const MAX_RELAY_CHOICES: usize = 64;

/// The file name extension of backups.
pub const BACKUP_EXTENSION: &str = "postern-backup";

/// Removes a profile that could not be filled (a restore that failed
/// after the profile was created).
fn remove_profile_files(dir: &Path) {
    let db = postern_store::DB_FILE;
    for f in [
        db.to_owned(),
        format!("{db}-wal"),
        format!("{db}-shm"),
        postern_store::HEADER_FILE.to_owned(),
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

enum Ended {
    Locked(Option<String>),
    Quit,
}

impl core::fmt::Debug for Worker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Worker")
    }
}
