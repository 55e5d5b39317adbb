//! Postern's screens, in egui, with no I/O: the desktop app and the
//! browser client draw the same [`App`].
//!
//! The shell feeds it [`Event`]s — the client service's updates and the
//! shell's own (locked, unlocked, a file saved) — with [`App::apply`],
//! draws it with [`App::ui`] every frame, and carries out the
//! [`Command`]s it returns from [`App::take_commands`]: requests for the
//! service, and what only the platform can do (unlock a profile, open a
//! file dialog, save a file). Nothing here touches a file, a socket, a
//! clock or a random number generator: time comes in with
//! [`App::set_clock`].
//!
//! Every widget has an AccessKit name (tests find them by it, screen
//! readers read it); a message reads as sender, body, time and state.

pub mod format;
mod screens;
mod widgets;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use postern_app::{
    ContactView, Failure, MeView, MessageId, MessageView, Purpose, Request, SafetyView, StatusView,
    Update,
};
use postern_core::{Address, ErrorKind, UnixTime};
use zeroize::Zeroizing;

/// What the shell tells the screens besides the service's updates.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// There is no profile yet: the onboarding screen.
    NoProfile {
        /// Whether the system keychain can hold the profile key.
        keychain: bool,
        /// The home relay offered by default (the network the app knows).
        default_relay: Option<String>,
    },
    /// A profile exists and is locked.
    Locked {
        /// Its key is in the system keychain (no passphrase asked).
        keychain: bool,
        /// Why it locked, if not at start ("locked after 5 minutes idle").
        reason: Option<String>,
    },
    /// The passphrase was wrong, or the profile could not be opened.
    UnlockFailed(String),
    /// The profile could not be created.
    CreateFailed(String),
    /// Unlocked: the service runs and its updates follow.
    Unlocked,
    /// The service's update.
    App(Update),
    /// Something the shell did, to say in a toast ("saved to …").
    Notice(String),
    /// Something the shell could not do.
    ShellFailed(String),
    /// A voice message is being recorded (`None`: it stopped).
    Recording(Option<Recording>),
    /// Recording cannot start here (no microphone): the reason.
    RecordingUnavailable(String),
    /// A voice message plays (`None`: nothing does).
    Playback(Option<Playback>),
    /// The profiles on this device (each with its own key and lock), and
    /// which one the lock or onboarding screen is for (`None`: a new one).
    /// Not sent where the shell keeps a single profile.
    Profiles {
        /// Their names, as the shell labels them ("Profile 1", …).
        names: Vec<String>,
        /// The one shown.
        current: Option<usize>,
    },
    /// The preferences of the profile now shown (after a switch).
    Prefs(Prefs),
    /// The shell can keep this profile's key on this device for the next
    /// start ("remember this browser"), and whether it does now. Not sent
    /// by shells that cannot.
    Remember(bool),
    /// Home relays offered at onboarding: the mailbox relays of the
    /// network's signed directory (`postern-relay://…` addresses), and
    /// the one suggested (picked at random, so that users spread).
    Relays {
        /// The addresses.
        choices: Vec<String>,
        /// The suggested one.
        suggested: usize,
    },
}

/// A recording in progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recording {
    /// To whom it goes.
    pub to: Address,
    /// How long it is so far.
    pub elapsed_ms: u32,
    /// The microphone's level now (0.0–1.0).
    pub level: f32,
}

/// A voice message playing or paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Playback {
    /// The message.
    pub id: MessageId,
    /// Where it is.
    pub position_ms: u32,
    /// Its length.
    pub duration_ms: u32,
    /// Playing (else paused or ended).
    pub playing: bool,
}

/// What the screens ask the shell for.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// A request for the client service.
    App(Request),
    /// Create a profile.
    Create {
        /// The name suggested to contacts.
        name: String,
        /// The home relay (`postern-relay://…`); the default when `None`.
        relay: Option<String>,
        /// The passphrase; `None` keeps the key in the system keychain.
        passphrase: Option<Zeroizing<String>>,
    },
    /// Unlock with this passphrase (empty: the keychain's key).
    Unlock(Zeroizing<String>),
    /// Unlock with this passphrase and keep the key on this device, so
    /// that the next start opens without it (offered after
    /// [`Event::Remember`]).
    UnlockRemembering(Zeroizing<String>),
    /// Forget the key kept on this device: the passphrase is asked at
    /// every start again.
    Forget,
    /// Lock: close the profile and forget everything decrypted.
    Lock,
    /// Pick files to send to `to` (a file dialog).
    Attach {
        /// The contact.
        to: Address,
    },
    /// Send these files (dropped on the window) to `to`: natively each
    /// has its path; in a browser, its name and bytes the shell reads.
    AttachDropped {
        /// The contact.
        to: Address,
        /// The files.
        files: Vec<egui::DroppedFileHandle>,
    },
    /// Save an attachment (a file dialog, then its checked bytes).
    Save {
        /// Its contact.
        peer: Address,
        /// The message.
        id: MessageId,
    },
    /// Pick an image file holding a QR code (an invitation or a safety
    /// number) and scan it.
    OpenImageToScan(Purpose),
    /// The preferences changed (the shell keeps them and applies what is
    /// its to apply: cover rate, notifications, auto-lock).
    Prefs(Prefs),
    /// Re-protect the open profile: a new passphrase, checked against the
    /// current one first (empty when the key is in the keychain).
    ChangePassphrase {
        /// The passphrase in force (empty: the keychain holds the key).
        current: Zeroizing<String>,
        /// The new passphrase.
        new: Zeroizing<String>,
    },
    /// Write an encrypted backup of the open profile (the shell asks
    /// where, or uses its downloads directory).
    ExportBackup {
        /// The backup's own passphrase.
        passphrase: Zeroizing<String>,
    },
    /// Make the profile from a backup file.
    Restore {
        /// The backup file (dropped on the window); `None`: the shell asks.
        from: Option<PathBuf>,
        /// The backup's passphrase.
        backup_passphrase: Zeroizing<String>,
        /// The new profile's passphrase; `None` keeps its key in the
        /// system keychain.
        passphrase: Option<Zeroizing<String>>,
    },
    /// Start recording a voice message to `to`.
    Record {
        /// The contact.
        to: Address,
    },
    /// Stop recording: send the clip, or throw it away.
    StopRecording {
        /// Send it (else it is discarded).
        send: bool,
    },
    /// Play a voice message (or resume it).
    Play {
        /// Its contact.
        peer: Address,
        /// The message.
        id: MessageId,
    },
    /// Pause what plays.
    Pause,
    /// Move playback to this point.
    Seek {
        /// Milliseconds from the start.
        ms: u32,
    },
    /// Show this profile's lock screen (index in [`Event::Profiles`]).
    SwitchProfile(usize),
    /// Make another profile (the onboarding screen for it).
    NewProfile,
    /// Tell the user of a new message outside the window (the text is
    /// already what the preferences allow: "New message" unless content
    /// is shown).
    Notify {
        /// The notification's title.
        title: String,
        /// Its text.
        body: String,
    },
}

/// The user's preferences.
#[derive(Debug, Clone, PartialEq)]
pub struct Prefs {
    /// Theme: follow the system, dark or light.
    pub theme: egui::ThemePreference,
    /// UI scale (1.0 = as the system says).
    pub scale: f32,
    /// Desktop notifications for new messages.
    pub notifications: bool,
    /// Show the sender and text in notifications (off: "New message").
    pub notification_content: bool,
    /// Cover packets per minute (mean).
    pub cover_per_minute: u32,
    /// Lock after this many minutes without input (0: never).
    pub auto_lock_minutes: u32,
}

impl Default for Prefs {
    fn default() -> Prefs {
        Prefs {
            theme: egui::ThemePreference::System,
            scale: 1.0,
            notifications: true,
            notification_content: false,
            cover_per_minute: 6,
            auto_lock_minutes: 15,
        }
    }
}

/// Which screen is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for the shell to say whether a profile exists.
    Starting,
    /// Creating a profile.
    Onboarding {
        keychain: bool,
        default_relay: Option<String>,
        error: Option<String>,
        busy: bool,
    },
    /// Unlocking.
    Locked {
        keychain: bool,
        error: Option<String>,
        reason: Option<String>,
        busy: bool,
    },
    /// The messenger.
    Main,
}

/// A dialog over the main screen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Dialog {
    #[default]
    None,
    /// Waiting for the invitation link.
    Inviting,
    /// Showing an invitation.
    Invitation(String),
    /// Accepting an invitation: the pasted link.
    Accept(String),
    /// A safety number.
    Safety(Box<SafetyView>),
    /// Settings.
    Settings,
    /// The keyboard shortcuts.
    Shortcuts,
    /// Changing the passphrase.
    Passphrase,
    /// Exporting a backup.
    Backup,
}

/// A message to the user at the bottom of the window.
#[derive(Debug, Clone, PartialEq)]
struct Toast {
    text: String,
    error: bool,
    /// `ui.input().time` when it goes.
    until: f64,
}

/// Input fields of the onboarding and unlock screens.
#[derive(Default)]
struct Forms {
    name: String,
    relay: String,
    custom_relay: bool,
    use_keychain: bool,
    passphrase: Zeroizing<String>,
    repeat: Zeroizing<String>,
    /// The passphrase in force (changing it) or the backup's (restoring).
    current: Zeroizing<String>,
    /// Restoring from a backup rather than creating a profile.
    restoring: bool,
    /// Keep the key on this device at unlock.
    remember: bool,
}

impl core::fmt::Debug for Forms {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Forms(..)")
    }
}

/// The screens' state: what the service told, what the user typed.
pub struct App {
    phase: Phase,
    prefs: Prefs,
    now: UnixTime,
    offset_minutes: i32,
    commands: Vec<Command>,
    forms: Forms,
    me: Option<MeView>,
    contacts: Vec<ContactView>,
    selected: Option<Address>,
    messages: Vec<MessageView>,
    progress: HashMap<MessageId, (usize, usize)>,
    status: StatusView,
    key_changed: BTreeSet<Address>,
    dialog: Dialog,
    toasts: Vec<Toast>,
    draft: String,
    reply_to: Option<MessageId>,
    contact_search: String,
    message_search: String,
    searching: bool,
    list: egui_virtual_list::VirtualList,
    textures: widgets::Textures,
    last_input: f64,
    focus_search: bool,
    focus_search_messages: bool,
    focus_composer: bool,
    /// The preferences last applied to the context (theme, scale).
    applied: Option<Prefs>,
    /// The open profile's key is in the system keychain.
    keychain_profile: bool,
    /// The window had the focus at the last frame.
    focused: bool,
    /// Messages already notified (bounded, most recent last).
    notified: std::collections::VecDeque<MessageId>,
    /// The voice message being recorded.
    recording: Option<Recording>,
    /// Why recording is not possible here, once tried.
    no_microphone: Option<String>,
    /// The voice message playing.
    playback: Option<Playback>,
    /// Home relays from the directory, and the one chosen.
    relay_choices: Vec<String>,
    relay_choice: usize,
    /// The profiles on this device, and the one shown.
    profiles: Vec<String>,
    current_profile: Option<usize>,
    /// The shell can remember the key on this device (`Some`), and does.
    remember: Option<bool>,
    /// Bumped when the user sends: the conversation's scroll state starts
    /// again, at the end (the virtual list cannot be scrolled to an end
    /// it has not measured yet).
    scroll_epoch: u32,
}

/// How many notified message ids are remembered (a message told again,
/// as its attachment completes, is not notified twice).
const NOTIFIED_REMEMBERED: usize = 256;

impl core::fmt::Debug for App {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("App")
            .field("phase", &self.phase)
            .field("contacts", &self.contacts.len())
            .field("messages", &self.messages.len())
            .finish_non_exhaustive()
    }
}

impl Default for App {
    fn default() -> App {
        App::new(Prefs::default())
    }
}

impl App {
    /// The screens, before the shell said anything.
    pub fn new(prefs: Prefs) -> App {
        App {
            phase: Phase::Starting,
            prefs,
            now: UnixTime(0),
            offset_minutes: 0,
            commands: Vec::new(),
            forms: Forms {
                use_keychain: false,
                ..Forms::default()
            },
            me: None,
            contacts: Vec::new(),
            selected: None,
            messages: Vec::new(),
            progress: HashMap::new(),
            status: StatusView::default(),
            key_changed: BTreeSet::new(),
            dialog: Dialog::None,
            toasts: Vec::new(),
            draft: String::new(),
            reply_to: None,
            contact_search: String::new(),
            message_search: String::new(),
            searching: false,
            list: message_list(),
            textures: widgets::Textures::default(),
            last_input: 0.0,
            focus_search: false,
            focus_search_messages: false,
            focus_composer: false,
            applied: None,
            keychain_profile: false,
            focused: true,
            notified: std::collections::VecDeque::new(),
            recording: None,
            no_microphone: None,
            playback: None,
            relay_choices: Vec::new(),
            relay_choice: 0,
            profiles: Vec::new(),
            current_profile: None,
            remember: None,
            scroll_epoch: 0,
        }
    }

    /// The wall clock, and the local time's offset from UTC in minutes
    /// (for message times); call before every frame.
    pub fn set_clock(&mut self, now: UnixTime, offset_minutes: i32) {
        self.now = now;
        self.offset_minutes = offset_minutes;
    }

    /// Replaces the preferences (the shell's own settings store changed).
    pub fn set_prefs(&mut self, prefs: Prefs) {
        self.prefs = prefs;
    }

    /// The preferences in force.
    pub fn prefs(&self) -> &Prefs {
        &self.prefs
    }

    /// Whether the messenger (not onboarding or the lock screen) shows.
    pub fn is_unlocked(&self) -> bool {
        self.phase == Phase::Main
    }

    /// Whether the lock screen shows.
    pub fn is_locked(&self) -> bool {
        matches!(self.phase, Phase::Locked { .. })
    }

    /// The conversation shown, if any.
    pub fn selected(&self) -> Option<Address> {
        self.selected
    }

    /// The contact list as last told.
    pub fn contacts(&self) -> &[ContactView] {
        &self.contacts
    }

    /// The open conversation's messages as last told.
    pub fn messages(&self) -> &[MessageView] {
        &self.messages
    }

    /// The status as last told.
    pub fn status(&self) -> &StatusView {
        &self.status
    }

    /// The commands the screens gave since the last call.
    pub fn take_commands(&mut self) -> Vec<Command> {
        core::mem::take(&mut self.commands)
    }

    fn command(&mut self, c: Command) {
        self.commands.push(c);
    }

    fn request(&mut self, r: Request) {
        self.commands.push(Command::App(r));
    }

    fn toast(&mut self, text: impl Into<String>, error: bool) {
        self.toasts.push(Toast {
            text: text.into(),
            error,
            until: f64::NAN,
        });
    }

    /// Takes an event from the shell.
    pub fn apply(&mut self, e: Event) {
        match e {
            Event::NoProfile {
                keychain,
                default_relay,
            } => {
                self.forms.use_keychain = keychain;
                self.phase = Phase::Onboarding {
                    keychain,
                    default_relay,
                    error: None,
                    busy: false,
                };
            }
            Event::Locked { keychain, reason } => {
                self.forget();
                self.keychain_profile = keychain;
                self.phase = Phase::Locked {
                    keychain,
                    error: None,
                    reason,
                    busy: false,
                };
            }
            Event::UnlockFailed(why) => {
                if let Phase::Locked { error, busy, .. } = &mut self.phase {
                    *error = Some(why);
                    *busy = false;
                }
            }
            Event::CreateFailed(why) => {
                if let Phase::Onboarding { error, busy, .. } = &mut self.phase {
                    *error = Some(why);
                    *busy = false;
                }
            }
            Event::Unlocked => {
                if let Phase::Onboarding { .. } = self.phase {
                    self.keychain_profile = self.forms.use_keychain;
                }
                self.forms = Forms::default();
                self.phase = Phase::Main;
                self.last_input = f64::NAN;
            }
            Event::App(u) => self.update(u),
            Event::Notice(text) => self.toast(text, false),
            Event::ShellFailed(text) => self.toast(text, true),
            Event::Recording(r) => self.recording = r,
            Event::RecordingUnavailable(why) => {
                self.recording = None;
                self.no_microphone = Some(why);
            }
            Event::Playback(p) => self.playback = p,
            Event::Profiles { names, current } => {
                self.profiles = names;
                self.current_profile = current;
            }
            Event::Prefs(p) => self.prefs = p,
            Event::Remember(on) => self.remember = Some(on),
            Event::Relays { choices, suggested } => {
                self.relay_choice = suggested.min(choices.len().saturating_sub(1));
                self.relay_choices = choices;
            }
        }
    }

    /// Forgets everything decrypted (on lock).
    fn forget(&mut self) {
        let prefs = self.prefs.clone();
        let (now, offset, focused) = (self.now, self.offset_minutes, self.focused);
        let profiles = core::mem::take(&mut self.profiles);
        let current = self.current_profile;
        let remember = self.remember;
        *self = App::new(prefs);
        self.remember = remember;
        self.now = now;
        self.offset_minutes = offset;
        self.focused = focused;
        self.profiles = profiles;
        self.current_profile = current;
    }

    /// A notification for a new incoming message, when the preferences
    /// want one and the user is not looking at its conversation.
    fn notify(&mut self, m: &MessageView) {
        if m.outgoing || !self.prefs.notifications || self.notified.contains(&m.id) {
            return;
        }
        if self.notified.len() >= NOTIFIED_REMEMBERED {
            self.notified.pop_front();
        }
        self.notified.push_back(m.id);
        if self.focused && self.selected == Some(m.peer) {
            return;
        }
        let (title, body) = if self.prefs.notification_content {
            (self.name_of(&m.peer), screens::excerpt(m))
        } else {
            ("Postern".to_owned(), "New message".to_owned())
        };
        self.command(Command::Notify { title, body });
    }

    fn name_of(&self, peer: &Address) -> String {
        self.contacts
            .iter()
            .find(|c| c.address == *peer)
            .map(|c| c.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| widgets::short_address(peer))
    }

    fn update(&mut self, u: Update) {
        if let Update::Message(m) = &u {
            self.notify(m);
        }
        match u {
            Update::Me(m) => self.me = Some(m),
            Update::Contacts(c) => self.contacts = c,
            Update::Conversation { peer, messages } if self.selected == Some(peer) => {
                self.messages = messages;
                self.list = message_list();
            }
            Update::Stale(peer) if self.selected == Some(peer) => {
                self.request(Request::Open(peer));
            }
            Update::Message(m) if self.selected == Some(m.peer) => {
                let incoming = !m.outgoing;
                let peer = m.peer;
                match self.messages.iter_mut().find(|x| x.id == m.id) {
                    Some(x) => *x = m,
                    None => {
                        // What the user just sent is shown, however far up
                        // the list was: the list starts again at its end.
                        if m.outgoing {
                            self.scroll_epoch = self.scroll_epoch.wrapping_add(1);
                            self.list = message_list();
                        }
                        self.messages.push(m);
                    }
                }
                if incoming {
                    self.request(Request::Read(peer));
                }
            }
            Update::Delivery { peer, id, state } => {
                if self.selected == Some(peer)
                    && let Some(m) = self.messages.iter_mut().find(|m| m.id == id)
                {
                    m.delivery = Some(state);
                }
            }
            Update::Progress {
                id, done, total, ..
            } => {
                self.progress.insert(id, (done, total));
            }
            Update::Invitation { link } => {
                if matches!(self.dialog, Dialog::Inviting | Dialog::None) {
                    self.dialog = Dialog::Invitation(link);
                }
            }
            Update::ContactAdded { peer, name } => {
                let who = if name.is_empty() {
                    widgets::short_address(&peer)
                } else {
                    name
                };
                if matches!(self.dialog, Dialog::Accept(_)) {
                    self.dialog = Dialog::None;
                }
                self.toast(format!("{who} is now a contact"), false);
            }
            Update::Safety(s) => self.dialog = Dialog::Safety(Box::new(s)),
            Update::Verified(peer) => {
                if let Dialog::Safety(s) = &mut self.dialog
                    && s.peer == peer
                {
                    s.verified = true;
                }
                let who = self.name_of(&peer);
                self.toast(format!("{who} is verified"), false);
            }
            Update::Mismatch(peer) => {
                let who = self.name_of(&peer);
                self.toast(
                    format!(
                        "The scanned code does not match {who}'s safety number: do not trust this contact until you find out why"
                    ),
                    true,
                );
            }
            Update::KeyChanged(peer) => {
                self.key_changed.insert(peer);
                // Opening their invitation revealed it: show the warning.
                if matches!(self.dialog, Dialog::Accept(_)) {
                    self.dialog = Dialog::None;
                    self.open(peer);
                }
            }
            Update::KeyAccepted(peer) => {
                self.key_changed.remove(&peer);
                let who = self.name_of(&peer);
                self.toast(
                    format!("{who}'s new key is accepted. Compare safety numbers to verify it."),
                    false,
                );
            }
            Update::Status(s) => self.status = s,
            Update::Failed(f) => {
                if matches!(self.dialog, Dialog::Inviting) {
                    self.dialog = Dialog::None;
                }
                self.toast(failure_text(&f), true);
            }
            // The shell handles what only it can use (attachment bytes).
            _ => {}
        }
    }

    /// Draws every screen and dialog; call once per frame.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        if self.applied.as_ref() != Some(&self.prefs) {
            ui.ctx().set_theme(self.prefs.theme);
            screens::ui_scale(ui.ctx(), &self.prefs);
            self.applied = Some(self.prefs.clone());
        }
        self.idle_lock(ui);
        self.focused = ui.input(|i| i.focused);
        match self.phase.clone() {
            Phase::Starting => {
                egui::CentralPanel::default().show(ui, |ui| {
                    ui.centered_and_justified(|ui| ui.label("Starting…"));
                });
            }
            Phase::Onboarding {
                keychain,
                default_relay,
                error,
                busy,
            } => self.onboarding(ui, keychain, default_relay.as_deref(), error, busy),
            Phase::Locked {
                keychain,
                error,
                reason,
                busy,
            } => self.unlock(ui, keychain, error, reason, busy),
            Phase::Main => self.main(ui),
        }
        self.toasts(ui);
    }

    /// Locks after the configured idle time; schedules the repaint that
    /// checks it (no busy repaint).
    fn idle_lock(&mut self, ui: &egui::Ui) {
        if self.phase != Phase::Main || self.prefs.auto_lock_minutes == 0 {
            return;
        }
        let (t, active) = ui.input(|i| (i.time, !i.events.is_empty() || i.pointer.is_moving()));
        if active || self.last_input.is_nan() {
            self.last_input = t;
        }
        let limit = f64::from(self.prefs.auto_lock_minutes) * 60.0;
        let idle = t - self.last_input;
        if idle >= limit {
            self.command(Command::Lock);
            self.last_input = f64::NAN;
        } else {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs_f64(limit - idle));
        }
    }
}

/// The virtual list of a conversation's messages. It never hides itself
/// while resizing (that would repaint continuously for a moment).
fn message_list() -> egui_virtual_list::VirtualList {
    let mut l = egui_virtual_list::VirtualList::new();
    l.hide_on_resize(None);
    l
}

/// Gives a text input its accessible name (a placeholder is not one).
pub(crate) fn name_input(ui: &egui::Ui, r: &egui::Response, name: &str) {
    let name = name.to_owned();
    ui.ctx()
        .accesskit_node_builder(r.id, |n| n.set_label(name.clone()));
}

/// A failure in words.
fn failure_text(f: &Failure) -> String {
    let hint = match f.kind {
        ErrorKind::Network => " (the network; it is tried again)",
        ErrorKind::NeedsUserDecision => " (your decision is needed)",
        _ => "",
    };
    format!("Could not {}: {}{hint}", f.action, f.reason)
}
