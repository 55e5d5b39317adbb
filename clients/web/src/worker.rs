//! The client worker: a dedicated Web Worker running this same module
//! (`www/worker.js`) that owns the profile (sealed in IndexedDB, the tab
//! lock), runs the client service — core, engine, every Sphinx packet —
//! over the WebTransport links, and derives keys (Argon2id). The page
//! only draws and does what needs the page (files, microphone, speaker);
//! nothing the worker does can stall a frame. It hears [`ToWorker`]s and
//! answers with [`FromWorker`]s (`wire`).

use std::rc::Rc;

use futures_util::future::{Either, select};
use postern_app::setup::{NewProfile, setup};
use postern_app::{Service, ServiceConfig, Update};
use postern_browser::link::{BrowserConnector, Listeners};
use postern_browser::profile::{self, BrowserProfile, OpenError};
use postern_browser::runtime::BrowserRuntime;
use postern_browser::sealed::HeaderError;
use postern_core::crypto::kdf::KdfParams;
use postern_core::directory::ROLE_MAILBOX;
use postern_core::{KvStore, RelayAddress, settings};
use postern_link::Runtime as _;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast as _, JsValue};
use zeroize::Zeroize as _;

use postern_browser::remember;

use crate::boot::{self, Boot};
use crate::wire::{self, FromWorker, Secret, ToWorker};

/// How the worker tells the page.
pub type Tell = Rc<dyn Fn(FromWorker)>;

/// A profile's database (and tab lock) is this and its number.
pub const PROFILE_PREFIX: &str = "postern-profile-";
/// Most profiles in one browser.
const MAX_PROFILES: usize = 8;
/// How often, and how long apart, a remembered key tries the tab lock at
/// load (the tab before a reload may still hold it).
const REMEMBERED_LOCK_TRIES: usize = 10;
const REMEMBERED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(200);
/// Most home relays offered at onboarding.
const MAX_RELAY_CHOICES: usize = 16;

/// Argon2id in the browser: the native parameters (64 MiB, 3 passes).
pub const KDF: KdfParams = KdfParams::DEFAULT;

/// The profiles in this browser: (number, database name), in order.
/// A database whose creation did not finish (no header) is not one.
async fn profiles() -> Vec<(u32, String)> {
    let mut list = Vec::new();
    for name in postern_browser::idb::ProfileDb::names()
        .await
        .unwrap_or_default()
    {
        let Some(n) = name
            .strip_prefix(PROFILE_PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if BrowserProfile::exists(&name).await.unwrap_or(false) {
            list.push((n, name));
        }
    }
    list.sort();
    list
}

/// The profile shown at load: one this browser keeps the key of, else
/// the first (a new one's onboarding when there is none).
async fn first_profile() -> String {
    let list = profiles().await;
    for (_, name) in &list {
        if remember::is_remembered(name).await {
            return name.clone();
        }
    }
    list.first()
        .map_or_else(|| format!("{PROFILE_PREFIX}1"), |(_, n)| n.clone())
}

fn open_error(e: &OpenError) -> String {
    match e {
        OpenError::Header(HeaderError::WrongPassphrase) => "Wrong passphrase".to_owned(),
        other => format!("Cannot open the profile: {other}"),
    }
}

/// The worker's entry point (called by `www/worker.js` once the module is
/// loaded, with the messages that came before).
#[wasm_bindgen]
pub fn worker_main(early: js_sys::Array) -> Result<(), JsValue> {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().dyn_into()?;
    let (tx, rx) = async_channel::unbounded::<ToWorker>();
    let hear = move |data: JsValue| {
        let Ok(buf) = data.dyn_into::<js_sys::Uint8Array>() else {
            return;
        };
        let mut bytes = buf.to_vec();
        buf.fill(0, 0, buf.length());
        // Same module, same origin: a message that does not decode is a
        // bug; it is dropped all the same.
        if let Ok(m) = wire::decode::<ToWorker>(&bytes) {
            let _ = tx.try_send(m);
        }
        bytes.zeroize();
    };
    for m in early.iter() {
        hear(m);
    }
    let on_message = wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
        move |e: web_sys::MessageEvent| hear(e.data()),
    );
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The worker lives as long as the page: so does its handler.
    on_message.forget();
    let out = scope.clone();
    let tell: Tell = Rc::new(move |m: FromWorker| {
        let mut bytes = wire::encode(&m);
        let buf = js_sys::Uint8Array::from(bytes.as_slice());
        bytes.zeroize();
        let transfer = js_sys::Array::of1(&buf.buffer());
        let _ = out.post_message_with_transfer(&buf, &transfer);
    });
    wasm_bindgen_futures::spawn_local(run(tell, rx));
    Ok(())
}

/// Runs until the page goes away.
pub async fn run(tell: Tell, commands: async_channel::Receiver<ToWorker>) {
    let rt = BrowserRuntime;
    let boot = boot::boot(rt.now()).await;
    let mut w = Worker {
        tell,
        commands,
        boot,
        first_load: true,
        profile: first_profile().await,
    };
    loop {
        let Some(p) = w.locked().await else { return };
        match w.unlocked(p).await {
            Some(reason) => w.say(FromWorker::Locked { reason }),
            None => return,
        }
    }
}

struct Worker {
    tell: Tell,
    commands: async_channel::Receiver<ToWorker>,
    boot: Boot,
    /// Nothing was unlocked since the page loaded.
    first_load: bool,
    /// The profile shown (its database's name).
    profile: String,
}

enum Ended {
    Lock,
    Restart,
    Gone,
    /// Needs the profile to itself (the service stopped, then started again).
    Exclusive(Exclusive),
}

enum Exclusive {
    ChangePassphrase { current: Secret, new: Secret },
    Export { passphrase: Secret },
}

impl Worker {
    /// A new profile (made or restored): a key remembered for an old
    /// one goes.
    async fn forget_old_key(&self) {
        let _ = remember::forget(&self.profile).await;
        self.say(FromWorker::Remembered(false));
    }

    fn say(&self, m: FromWorker) {
        (self.tell)(m);
    }

    /// Keeps the profile key in this browser for the next load.
    async fn keep(&self, key: &[u8; 32]) {
        match remember::remember(&self.profile, key).await {
            Ok(()) => self.say(FromWorker::Remembered(true)),
            Err(e) => self.say(FromWorker::Failed(format!(
                "This browser cannot keep the key: {e}"
            ))),
        }
    }

    /// Forgets the key this browser keeps.
    async fn forget(&self) {
        match remember::forget(&self.profile).await {
            Ok(()) => {
                self.say(FromWorker::Remembered(false));
                self.say(FromWorker::Notice(
                    "This browser no longer keeps the key: the passphrase is asked at every load"
                        .to_owned(),
                ));
            }
            Err(e) => self.say(FromWorker::Failed(format!("Could not forget the key: {e}"))),
        }
    }

    /// Tells the page the profiles and the one shown.
    fn tell_profiles(&self, list: &[(u32, String)]) {
        self.say(FromWorker::Profiles {
            names: list.iter().map(|(n, _)| format!("Profile {n}")).collect(),
            current: list.iter().position(|(_, name)| *name == self.profile),
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
        // At the page's load (not after the user locked), a key this
        // browser keeps opens the profile without the passphrase; one that
        // no longer opens it is forgotten.
        if core::mem::take(&mut self.first_load)
            && let Ok(Some(key)) = remember::recall(&self.profile).await
        {
            // The tab before a reload may still hold the lock a moment.
            for _ in 0..REMEMBERED_LOCK_TRIES {
                let k = key.clone();
                match BrowserProfile::unlock_with(&self.profile, async |_| Ok(k)).await {
                    Ok(p) => {
                        self.say(FromWorker::Remembered(true));
                        return Some(p);
                    }
                    Err(OpenError::Lock(_)) => BrowserRuntime.sleep(REMEMBERED_LOCK_WAIT).await,
                    // The key no longer opens this profile: forgotten.
                    Err(OpenError::Sealed(_) | OpenError::Header(_) | OpenError::NotFound) => {
                        let _ = remember::forget(&self.profile).await;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        'shown: loop {
            let list = profiles().await;
            self.tell_profiles(&list);
            self.say(FromWorker::Remembered(
                remember::is_remembered(&self.profile).await,
            ));
            let exists = BrowserProfile::exists(&self.profile).await;
            match exists {
                Ok(true) => self.say(FromWorker::Locked { reason: None }),
                Ok(false) => {
                    let choices = self.relay_choices();
                    let suggested = if choices.is_empty() {
                        0
                    } else {
                        use rand_core_compat::next_index;
                        next_index(choices.len())
                    };
                    self.say(FromWorker::NoProfile {
                        default_relay: choices.get(suggested).cloned(),
                    });
                    if let Some(problem) = &self.boot.problem {
                        self.say(FromWorker::Failed(problem.clone()));
                    }
                    if !choices.is_empty() {
                        self.say(FromWorker::Relays { choices, suggested });
                    }
                }
                Err(e) => self.say(FromWorker::Failed(e.to_string())),
            }
            loop {
                match self.commands.recv().await.ok()? {
                    ToWorker::Switch(to) => {
                        let next = match to {
                            Some(i) => list.get(i).map(|(_, name)| name.clone()),
                            None if list.len() >= MAX_PROFILES => {
                                self.say(FromWorker::Failed(format!(
                                    "At most {MAX_PROFILES} profiles in one browser"
                                )));
                                None
                            }
                            None => {
                                let n = list.last().map_or(1, |(n, _)| n.saturating_add(1));
                                Some(format!("{PROFILE_PREFIX}{n}"))
                            }
                        };
                        if let Some(name) = next {
                            self.profile = name;
                            continue 'shown;
                        }
                    }
                    ToWorker::Create {
                        name,
                        relay,
                        passphrase,
                    } => match self
                        .create(&name, relay.as_deref(), passphrase.as_ref())
                        .await
                    {
                        Ok(p) => {
                            self.forget_old_key().await;
                            return Some(p);
                        }
                        Err(why) => self.say(FromWorker::CreateFailed(why)),
                    },
                    ToWorker::Restore {
                        backup,
                        backup_passphrase,
                        passphrase,
                    } => match self
                        .restore(&backup, &backup_passphrase, passphrase.as_ref())
                        .await
                    {
                        Ok(p) => {
                            self.forget_old_key().await;
                            return Some(p);
                        }
                        Err(why) => self.say(FromWorker::CreateFailed(why)),
                    },
                    ToWorker::Unlock {
                        passphrase,
                        remember,
                    } => {
                        // Argon2id here, off the page's thread.
                        let mut opened_key = None;
                        let opened = BrowserProfile::unlock_with(&self.profile, async |h| {
                            let key = h.open(passphrase.0.as_bytes())?;
                            if remember {
                                opened_key = Some(key.clone());
                            }
                            Ok(key)
                        })
                        .await;
                        match opened {
                            Ok(p) => {
                                if let Some(key) = opened_key {
                                    self.keep(&key).await;
                                }
                                return Some(p);
                            }
                            Err(e) => self.say(FromWorker::UnlockFailed(open_error(&e))),
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    async fn create(
        &self,
        name: &str,
        relay: Option<&str>,
        passphrase: Option<&Secret>,
    ) -> Result<BrowserProfile, String> {
        let pass = passphrase
            .filter(|p| !p.0.is_empty())
            .ok_or(wire::PASSPHRASE_NEEDED)?;
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
        BrowserProfile::create(&self.profile, pass.0.as_bytes(), KDF, |store| {
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

    /// A profile from a backup file (picked on the page): the backup is
    /// opened in memory (its passphrase and every record checked) before
    /// anything is stored, then written with the new profile's header in
    /// one transaction.
    async fn restore(
        &self,
        bytes: &[u8],
        backup_passphrase: &Secret,
        passphrase: Option<&Secret>,
    ) -> Result<BrowserProfile, String> {
        let pass = passphrase
            .filter(|p| !p.0.is_empty())
            .ok_or(wire::PASSPHRASE_NEEDED)?;
        let cs = postern_core::backup::import(
            &postern_core::MemStore::new(),
            bytes,
            backup_passphrase.0.as_bytes(),
        )
        .map_err(|_| {
            "Cannot restore: the passphrase is wrong, or the file is not a Postern backup or is damaged"
                .to_owned()
        })?;
        BrowserProfile::create(&self.profile, pass.0.as_bytes(), KDF, |store| {
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
        self.say(FromWorker::Timing {
            name: "kdf_ms".to_owned(),
            ms: p.kdf_time().as_secs_f64() * 1000.0,
        });
        self.refresh_directory(&mut p);
        self.say(FromWorker::Unlocked);
        let mut cover = ServiceConfig::default().cover_per_minute;
        loop {
            let (req_tx, req_rx) = async_channel::unbounded();
            let tell = self.tell.clone();
            let mut service: Service<BrowserConnector> =
                Service::new(req_rx, move |u: Update| tell(FromWorker::App(u)));
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
                let fwd = core::pin::pin!(self.forward(&req_tx, &mut cover));
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
                    .change_passphrase(current.0.as_bytes(), new.0.as_bytes(), KDF)
                    .await;
                self.say(match r {
                    Ok(()) => FromWorker::Notice("The passphrase is changed".to_owned()),
                    Err(OpenError::Header(HeaderError::WrongPassphrase)) => FromWorker::Failed(
                        "The current passphrase is wrong: nothing changed".to_owned(),
                    ),
                    Err(e) => FromWorker::Failed(format!("Could not change the passphrase: {e}")),
                });
            }
            Exclusive::Export { passphrase } => {
                let backup = postern_core::backup::export(
                    p,
                    passphrase.0.as_bytes(),
                    KDF,
                    &mut profile::rng(),
                );
                self.say(match backup {
                    Ok(bytes) => FromWorker::Backup {
                        name: "postern.postern-backup".to_owned(),
                        bytes,
                    },
                    Err(_) => FromWorker::Failed("Could not export a backup".to_owned()),
                });
            }
        }
    }

    /// The page's messages while unlocked.
    async fn forward(
        &self,
        req: &async_channel::Sender<postern_app::Request>,
        cover: &mut u32,
    ) -> Ended {
        loop {
            let Ok(m) = self.commands.recv().await else {
                return Ended::Gone;
            };
            match m {
                ToWorker::App(r) => {
                    let _ = req.try_send(r);
                }
                ToWorker::Lock => return Ended::Lock,
                ToWorker::Forget => self.forget().await,
                ToWorker::Cover(n) if n != *cover => {
                    *cover = n;
                    return Ended::Restart;
                }
                ToWorker::ChangePassphrase { current, new } => {
                    return Ended::Exclusive(Exclusive::ChangePassphrase { current, new });
                }
                ToWorker::ExportBackup { passphrase } => {
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
