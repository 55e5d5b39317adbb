//! The screens: onboarding, unlock, the messenger (contacts, the
//! conversation, the status area), its dialogs and the toasts.

use egui::{Align, Color32, Key, KeyboardShortcut, Layout, Modifiers, RichText, Sense};
use postern_app::{BodyView, Connection, DeliveryState, MessageView, Purpose, Request};
use zeroize::Zeroizing;

use crate::format::{self, Strength};
use crate::widgets::{self, accent, short_address};
use crate::{App, Command, Dialog, Phase, Toast};

/// The keyboard shortcuts, as the help lists them.
pub(crate) const SHORTCUTS: &[(KeyboardShortcut, &str)] = &[
    (
        KeyboardShortcut::new(Modifiers::COMMAND, Key::K),
        "Search contacts",
    ),
    (
        KeyboardShortcut::new(Modifiers::COMMAND, Key::F),
        "Search in the conversation",
    ),
    (
        KeyboardShortcut::new(Modifiers::ALT, Key::ArrowDown),
        "Next conversation",
    ),
    (
        KeyboardShortcut::new(Modifiers::ALT, Key::ArrowUp),
        "Previous conversation",
    ),
    (
        KeyboardShortcut::new(Modifiers::COMMAND, Key::O),
        "Send a file",
    ),
    (
        KeyboardShortcut::new(Modifiers::COMMAND, Key::N),
        "New invitation",
    ),
    (KeyboardShortcut::new(Modifiers::COMMAND, Key::L), "Lock"),
    (
        KeyboardShortcut::new(Modifiers::NONE, Key::F1),
        "Keyboard shortcuts",
    ),
];

fn shortcut(i: usize) -> KeyboardShortcut {
    SHORTCUTS
        .get(i)
        .map_or(KeyboardShortcut::new(Modifiers::NONE, Key::F1), |s| s.0)
}

const GREEN: Color32 = Color32::from_rgb(0x2e, 0xa0, 0x43);
const AMBER: Color32 = Color32::from_rgb(0xd2, 0x99, 0x22);
const RED: Color32 = Color32::from_rgb(0xe0, 0x3c, 0x31);

/// A spinner with what is being done, or the last error.
fn busy_or_error(ui: &mut egui::Ui, busy: bool, doing: &str, error: Option<&str>) {
    if busy {
        ui.spinner();
        ui.label(doing);
    }
    if let Some(e) = error {
        ui.colored_label(RED, e);
    }
}

/// A new passphrase typed twice, with its strength; whether it is
/// acceptable (not too short, both the same).
fn new_passphrase(ui: &mut egui::Ui, label: &str, pass: &mut String, repeat: &mut String) -> bool {
    field(ui, label, pass, true);
    let s = format::strength(pass);
    let color = match s {
        Strength::TooShort => RED,
        Strength::Weak => AMBER,
        _ => GREEN,
    };
    // No verdict before anything is typed.
    if !pass.is_empty() {
        ui.colored_label(color, format!("Strength: {}", s.hint()));
    }
    field(
        ui,
        &format!("Repeat the {}", label.to_lowercase()),
        repeat,
        true,
    );
    let matches = pass == repeat;
    if !matches && !repeat.is_empty() {
        ui.colored_label(RED, "The two passphrases differ");
    }
    s != Strength::TooShort && matches
}

/// A labelled single-line input.
fn field(ui: &mut egui::Ui, label: &str, text: &mut String, password: bool) -> egui::Response {
    let l = ui.label(label);
    ui.add(
        egui::TextEdit::singleline(text)
            .password(password)
            .desired_width(320.0),
    )
    .labelled_by(l.id)
}

impl App {
    pub(crate) fn onboarding(
        &mut self,
        ui: &mut egui::Ui,
        keychain: bool,
        default_relay: Option<&str>,
        error: Option<String>,
        busy: bool,
    ) {
        if self.forms.restoring {
            return self.restore(ui, keychain, error, busy);
        }
        card(ui, 380.0, |ui| {
            ui.vertical_centered(|ui| {
                if self.profiles.is_empty() {
                    ui.heading(RichText::new("Welcome to Postern").size(26.0));
                    ui.label("Private messages with no phone number, no e-mail and no account.");
                } else {
                    ui.heading(RichText::new("A new profile").size(26.0));
                    ui.label("A separate identity with its own contacts and its own lock: nothing on the network links it to your other profiles.");
                }
                ui.add_space(16.0);
            });
            ui.with_layout(Layout::top_down(Align::Center), |ui| {
                ui.set_max_width(360.0);
                field(
                    ui,
                    "Your name (only your contacts see it)",
                    &mut self.forms.name,
                    false,
                );
                ui.add_space(8.0);
                let from_directory = !self.relay_choices.is_empty() && !self.forms.custom_relay;
                if from_directory {
                    let l = ui.label("Home relay (from the network's signed directory)");
                    let shown = self
                        .relay_choices
                        .get(self.relay_choice)
                        .map(|a| relay_host(a))
                        .unwrap_or_default();
                    let mut pick = None;
                    egui::ComboBox::from_id_salt("home relay")
                        .selected_text(shown)
                        .width(320.0)
                        .show_ui(ui, |ui| {
                            for (i, a) in self.relay_choices.iter().enumerate() {
                                if ui
                                    .selectable_label(i == self.relay_choice, relay_host(a))
                                    .clicked()
                                {
                                    pick = Some(i);
                                }
                            }
                        })
                        .response
                        .labelled_by(l.id);
                    if let Some(i) = pick {
                        self.relay_choice = i;
                    }
                    ui.label(
                        RichText::new("Your contacts' messages wait for you there. Any relay of the network works; it never learns who writes to you.")
                            .small()
                            .weak(),
                    );
                    if ui.button("Use another relay").clicked() {
                        self.forms.custom_relay = true;
                    }
                }
                match default_relay {
                    _ if from_directory => {}
                    Some(d) if !self.forms.custom_relay => {
                        ui.label(format!("Home relay: {}", relay_host(d)));
                        if ui.button("Use another relay").clicked() {
                            self.forms.custom_relay = true;
                        }
                    }
                    _ => {
                        field(
                            ui,
                            "Home relay address (postern-relay://…)",
                            &mut self.forms.relay,
                            false,
                        );
                    }
                }
                ui.add_space(8.0);
                let ready = !busy && self.protection_fields(ui, keychain);
                ui.add_space(12.0);
                if ui
                    .add_enabled(ready, egui::Button::new("Create profile"))
                    .clicked()
                {
                    let relay = if self.forms.custom_relay {
                        Some(self.forms.relay.trim().to_owned())
                    } else if let Some(a) = self.relay_choices.get(self.relay_choice) {
                        Some(a.clone())
                    } else if default_relay.is_none() {
                        Some(self.forms.relay.trim().to_owned())
                    } else {
                        None
                    };
                    let passphrase = (!self.forms.use_keychain)
                        .then(|| Zeroizing::new(self.forms.passphrase.to_string()));
                    self.command(Command::Create {
                        name: self.forms.name.trim().to_owned(),
                        relay,
                        passphrase,
                    });
                    self.set_busy();
                }
                busy_or_error(ui, busy, "Creating your keys…", error.as_deref());
                ui.add_space(8.0);
                if ui
                    .add_enabled(
                        !busy,
                        egui::Button::new("Restore from a backup instead").small(),
                    )
                    .clicked()
                {
                    self.forms.restoring = true;
                }
                if !self.profiles.is_empty()
                    && ui
                        .add_enabled(!busy, egui::Button::new("Back to my profiles").small())
                        .clicked()
                {
                    self.forms = crate::Forms::default();
                    self.command(Command::SwitchProfile(0));
                }
            });
        });
    }

    /// Onboarding from a backup file: its passphrase, and how the
    /// restored profile is protected here.
    fn restore(&mut self, ui: &mut egui::Ui, keychain: bool, error: Option<String>, busy: bool) {
        let dropped: Option<std::path::PathBuf> = ui.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .find(|p| !p.as_os_str().is_empty())
        });
        card(ui, 380.0, |ui| {
            ui.vertical_centered(|ui| {
                ui.heading(RichText::new("Restore from a backup").size(24.0));
                ui.label("Your identity, contacts and messages come back from the backup file. Stop using the copy it was made from: only one device can carry on the conversations.");
                ui.add_space(12.0);
            });
            ui.with_layout(Layout::top_down(Align::Center), |ui| {
                ui.set_max_width(360.0);
                field(ui, "Backup passphrase", &mut self.forms.current, true);
                ui.add_space(8.0);
                let ready =
                    !busy && !self.forms.current.is_empty() && self.protection_fields(ui, keychain);
                ui.add_space(12.0);
                let pick = ui
                    .add_enabled(
                        ready,
                        egui::Button::new("Choose the backup file and restore…"),
                    )
                    .clicked();
                ui.label(
                    RichText::new("or drop the backup file on this window")
                        .small()
                        .weak(),
                );
                let from = match (pick, dropped) {
                    (true, _) => Some(None),
                    (false, Some(path)) if ready => Some(Some(path)),
                    _ => None,
                };
                if let Some(from) = from {
                    let passphrase = (!self.forms.use_keychain)
                        .then(|| Zeroizing::new(self.forms.passphrase.to_string()));
                    self.command(Command::Restore {
                        from,
                        backup_passphrase: Zeroizing::new(self.forms.current.to_string()),
                        passphrase,
                    });
                    self.set_busy();
                }
                busy_or_error(ui, busy, "Restoring…", error.as_deref());
                ui.add_space(8.0);
                if ui
                    .add_enabled(
                        !busy,
                        egui::Button::new("Create a new profile instead").small(),
                    )
                    .clicked()
                {
                    self.forms.restoring = false;
                }
            });
        });
    }

    /// Where the device holds several profiles: which one this screen is
    /// for, another one, or a new one. Each keeps its own key: unlocking
    /// one opens nothing of the others.
    fn profile_switcher(&mut self, ui: &mut egui::Ui, busy: bool) {
        if self.profiles.is_empty() {
            return;
        }
        let mut pick = None;
        if self.profiles.len() > 1 {
            let shown = self
                .current_profile
                .and_then(|i| self.profiles.get(i))
                .cloned()
                .unwrap_or_else(|| "New profile".to_owned());
            ui.horizontal(|ui| {
                let l = ui.label("Profile");
                ui.add_enabled_ui(!busy, |ui| {
                    egui::ComboBox::from_id_salt("profile")
                        .selected_text(shown)
                        .show_ui(ui, |ui| {
                            for (i, name) in self.profiles.iter().enumerate() {
                                if ui
                                    .selectable_label(self.current_profile == Some(i), name)
                                    .clicked()
                                {
                                    pick = Some(i);
                                }
                            }
                        })
                        .response
                        .labelled_by(l.id);
                });
            });
        } else if let Some(name) = self.current_profile.and_then(|i| self.profiles.get(i)) {
            ui.label(RichText::new(name).weak());
        }
        if let Some(i) = pick.filter(|i| Some(*i) != self.current_profile) {
            self.forms = crate::Forms::default();
            self.command(Command::SwitchProfile(i));
        }
        if self.current_profile.is_some()
            && ui
                .add_enabled(!busy, egui::Button::new("New profile").small())
                .clicked()
        {
            self.forms = crate::Forms::default();
            self.command(Command::NewProfile);
        }
        ui.add_space(8.0);
    }

    fn set_busy(&mut self) {
        if let Phase::Onboarding { busy, error, .. } = &mut self.phase {
            *busy = true;
            *error = None;
        }
    }

    /// The keychain choice and a new passphrase typed twice with its
    /// strength; whether what was chosen is acceptable.
    fn protection_fields(&mut self, ui: &mut egui::Ui, keychain: bool) -> bool {
        if keychain {
            ui.checkbox(
                &mut self.forms.use_keychain,
                "Keep the key in the system keychain (no passphrase)",
            );
        }
        if self.forms.use_keychain && keychain {
            return true;
        }
        new_passphrase(
            ui,
            "Passphrase",
            &mut self.forms.passphrase,
            &mut self.forms.repeat,
        )
    }

    pub(crate) fn unlock(
        &mut self,
        ui: &mut egui::Ui,
        keychain: bool,
        error: Option<String>,
        reason: Option<String>,
        busy: bool,
    ) {
        card(ui, 340.0, |ui| {
            ui.vertical_centered(|ui| {
                ui.heading(RichText::new("Postern is locked").size(24.0));
                if let Some(r) = reason {
                    ui.label(r);
                }
                ui.add_space(16.0);
                ui.set_max_width(360.0);
                self.profile_switcher(ui, busy);
                let mut go = false;
                if !keychain {
                    let r = field(ui, "Passphrase", &mut self.forms.passphrase, true);
                    if !busy && r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter)) {
                        go = true;
                    }
                    if !busy && !r.has_focus() && self.forms.passphrase.is_empty() {
                        r.request_focus();
                    }
                }
                if !keychain && self.remember.is_some() {
                    ui.checkbox(
                        &mut self.forms.remember,
                        "Remember this browser (no passphrase here next time)",
                    );
                }
                if ui.add_enabled(!busy, egui::Button::new("Unlock")).clicked() {
                    go = true;
                }
                if go {
                    let p = Zeroizing::new(core::mem::take(&mut *self.forms.passphrase));
                    self.command(if self.forms.remember && self.remember.is_some() {
                        Command::UnlockRemembering(p)
                    } else {
                        Command::Unlock(p)
                    });
                    if let Phase::Locked { busy, error, .. } = &mut self.phase {
                        *busy = true;
                        *error = None;
                    }
                }
                if busy {
                    ui.spinner();
                }
                if let Some(e) = error {
                    ui.colored_label(RED, e);
                }
            });
        });
    }

    pub(crate) fn main(&mut self, ui: &mut egui::Ui) {
        self.shortcuts(ui);
        egui::Panel::top("bar").show(ui, |ui| self.top_bar(ui));
        egui::Panel::left("contacts")
            .resizable(true)
            .default_size(300.0)
            .min_size(220.0)
            .show(ui, |ui| {
                egui::Panel::bottom("status")
                    .resizable(false)
                    .show(ui, |ui| self.status_area(ui));
                egui::CentralPanel::default().show(ui, |ui| self.contact_list(ui));
            });
        egui::CentralPanel::default().show(ui, |ui| self.conversation(ui));
        self.dialogs(ui);
        self.dropped_and_pasted(ui);
    }

    fn shortcuts(&mut self, ui: &mut egui::Ui) {
        let pressed =
            |ui: &mut egui::Ui, i: usize| ui.input_mut(|inp| inp.consume_shortcut(&shortcut(i)));
        if pressed(ui, 0) {
            self.focus_search = true;
        }
        if pressed(ui, 1) && self.selected.is_some() {
            self.searching = true;
            self.focus_search_messages = true;
        }
        let step = if pressed(ui, 2) {
            1
        } else if pressed(ui, 3) {
            -1
        } else {
            0
        };
        if step != 0 && !self.contacts.is_empty() {
            let n = self.contacts.len() as isize;
            let at = self
                .selected
                .and_then(|s| self.contacts.iter().position(|c| c.address == s))
                .map_or(if step > 0 { -1 } else { 0 }, |i| i as isize);
            let next = (at + step).rem_euclid(n) as usize;
            if let Some(c) = self.contacts.get(next) {
                let a = c.address;
                self.open(a);
            }
        }
        if pressed(ui, 4)
            && let Some(to) = self.selected
        {
            self.command(Command::Attach { to });
        }
        if pressed(ui, 5) {
            self.invite();
        }
        if pressed(ui, 6) {
            self.command(Command::Lock);
        }
        if pressed(ui, 7) {
            self.dialog = Dialog::Shortcuts;
        }
    }

    fn invite(&mut self) {
        self.dialog = Dialog::Inviting;
        self.request(Request::CreateInvite);
    }

    pub(crate) fn open(&mut self, peer: postern_core::Address) {
        if self.selected != Some(peer) {
            self.selected = Some(peer);
            self.messages.clear();
            self.reply_to = None;
            self.draft.clear();
            self.message_search.clear();
            self.searching = false;
            self.list = crate::message_list();
            self.request(Request::Open(peer));
        }
        self.focus_composer = true;
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("Postern");
            if let Some(me) = &self.me {
                let name = if me.name.is_empty() {
                    short_address(&me.address)
                } else {
                    me.name.clone()
                };
                ui.label(RichText::new(name).strong());
            }
            ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                if ui.button("Lock").clicked() {
                    self.command(Command::Lock);
                }
                if ui.button("Settings").clicked() {
                    self.dialog = Dialog::Settings;
                }
                if ui.button("Keyboard shortcuts").clicked() {
                    self.dialog = Dialog::Shortcuts;
                }
            });
        });
    }

    /// The privacy state, always visible: where messages go and how.
    fn status_area(&mut self, ui: &mut egui::Ui) {
        let s = &self.status;
        let (color, state) = match s.connection {
            Connection::Connected => (GREEN, "Connected"),
            Connection::Connecting => (AMBER, "Connecting…"),
            Connection::Reconnecting => (RED, "Reconnecting…"),
            Connection::Idle => (Color32::GRAY, "Not connected (no contacts yet)"),
        };
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            widgets::dot(ui, color);
            ui.label(RichText::new(state).strong());
        });
        let relay = s.home.as_deref().map_or("none".to_owned(), relay_host);
        ui.label(format!("Home relay: {relay}"));
        if s.onion {
            ui.label(format!("Onion routing: {} hops", s.hops));
            let dir = s
                .directory_fetched
                .map_or("not fetched yet".to_owned(), |t| format::ago(t, self.now));
            ui.label(format!("Relay directory: {dir}"));
            ui.label(format!(
                "Cover traffic: {}/min ({} sent)",
                s.cover_per_minute, s.cover_sent
            ));
        } else {
            ui.colored_label(AMBER, "Direct to relays (no onion network)");
        }
        ui.label(format!(
            "Awaiting acknowledgement: {} · Outbox: {}",
            s.awaiting_ack, s.outbox
        ));
        if self.remember == Some(true) {
            ui.colored_label(
                AMBER,
                "Key kept by this browser (opens without the passphrase)",
            )
            .on_hover_text(
                "Settings → Forget this browser asks for the passphrase at every load again.",
            );
        }
        ui.add_space(4.0);
    }

    fn contact_list(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if ui.button("New invitation").clicked() {
                self.invite();
            }
            if ui.button("Accept invitation").clicked() {
                self.dialog = Dialog::Accept(String::new());
            }
        });
        let search = ui.add(
            egui::TextEdit::singleline(&mut self.contact_search)
                .hint_text("Search contacts")
                .desired_width(f32::INFINITY),
        );
        crate::name_input(ui, &search, "Search contacts");
        if core::mem::take(&mut self.focus_search) {
            search.request_focus();
        }
        ui.separator();
        if self.contacts.is_empty() {
            ui.label("No contacts yet. Make an invitation and give it to someone in person, or accept theirs.");
            return;
        }
        let q = self.contact_search.to_lowercase();
        let mut open = None;
        egui::ScrollArea::vertical()
            .id_salt("contact list")
            .auto_shrink([false; 2])
            .show(ui, |ui| {
                for c in &self.contacts {
                    let name = if c.name.is_empty() {
                        short_address(&c.address)
                    } else {
                        c.name.clone()
                    };
                    if !q.is_empty()
                        && !name.to_lowercase().contains(&q)
                        && !c.address.to_string().starts_with(&q)
                    {
                        continue;
                    }
                    let selected = self.selected == Some(c.address);
                    let r = ui
                        .push_id(c.address.as_bytes(), |ui| {
                            contact_row(ui, c, &name, selected, self.now, self.offset_minutes)
                        })
                        .inner;
                    if r.clicked() {
                        open = Some(c.address);
                    }
                }
            });
        if let Some(a) = open {
            self.open(a);
        }
    }

    fn conversation(&mut self, ui: &mut egui::Ui) {
        let Some(peer) = self.selected else {
            ui.centered_and_justified(|ui| {
                ui.label("Choose a conversation, or make an invitation to add someone.");
            });
            return;
        };
        let contact = self.contacts.iter().find(|c| c.address == peer).cloned();
        let name = contact
            .as_ref()
            .map(|c| c.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| short_address(&peer));
        let verified = contact.as_ref().is_some_and(|c| c.verified);
        ui.horizontal(|ui| {
            ui.heading(&name);
            if verified {
                ui.colored_label(GREEN, "Verified");
            } else {
                ui.colored_label(AMBER, "Not verified");
            }
            ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                if ui.button("Safety number").clicked() {
                    self.request(Request::Safety(peer));
                }
                if ui.button("Search in conversation").clicked() {
                    self.searching = !self.searching;
                    self.focus_search_messages = self.searching;
                }
            });
        });
        if self.searching {
            let r = ui.add(
                egui::TextEdit::singleline(&mut self.message_search)
                    .hint_text("Search in this conversation")
                    .desired_width(f32::INFINITY),
            );
            crate::name_input(ui, &r, "Search in this conversation");
            if core::mem::take(&mut self.focus_search_messages) {
                r.request_focus();
            }
        }
        ui.separator();
        if self.key_changed.contains(&peer) {
            if key_change_banner(ui, &name) {
                self.request(Request::AcceptNewKey(peer));
            }
            return;
        }
        egui::Panel::bottom("composer")
            .resizable(false)
            .show(ui, |ui| self.composer(ui, peer));
        egui::CentralPanel::default().show(ui, |ui| self.message_list(ui, &name));
    }

    fn message_list(&mut self, ui: &mut egui::Ui, name: &str) {
        let q = self.message_search.to_lowercase();
        let shown: Vec<usize> = if self.searching && !q.is_empty() {
            self.messages
                .iter()
                .enumerate()
                .filter(
                    |(_, m)| matches!(&m.body, BodyView::Text(t) if t.to_lowercase().contains(&q)),
                )
                .map(|(i, _)| i)
                .collect()
        } else {
            (0..self.messages.len()).collect()
        };
        if self.searching && !q.is_empty() {
            ui.label(format!("{} matching messages", shown.len()));
        }
        if shown.is_empty() && !self.searching {
            ui.label("No messages yet. Say hello.");
        }
        let mut actions = Vec::new();
        let ctx = ui.ctx().clone();
        // A new scroll state (new id) starts at the end, as a conversation
        // just opened does: see `App::scroll_epoch`.
        egui::ScrollArea::vertical()
            .id_salt(("messages", self.scroll_epoch))
            .auto_shrink([false; 2])
            .stick_to_bottom(true)
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                let list = &mut self.list;
                let messages = &self.messages;
                let textures = &mut self.textures;
                let progress = &self.progress;
                let playback = self.playback;
                let (now, offset) = (self.now, self.offset_minutes);
                list.ui_custom_layout(ui, shown.len(), |ui, row| {
                    let Some(m) = shown.get(row).and_then(|i| messages.get(*i)) else {
                        return 1;
                    };
                    let quoted = m.reply_to.and_then(|r| messages.iter().find(|x| x.id == r));
                    let p = progress.get(&m.id).copied();
                    let playing = playback.filter(|x| x.id == m.id);
                    if let Some(a) =
                        bubble(ui, &ctx, m, name, quoted, p, playing, textures, now, offset)
                    {
                        actions.push((a, m.id));
                    }
                    1
                });
            });
        for (a, id) in actions {
            let Some(peer) = self.selected else { break };
            match a {
                Action::Reply => {
                    self.reply_to = Some(id);
                    self.focus_composer = true;
                }
                Action::Retry => self.request(Request::Retry { to: peer, id }),
                Action::Save => self.command(Command::Save { peer, id }),
                Action::Play => self.command(Command::Play { peer, id }),
                Action::Pause => self.command(Command::Pause),
                Action::Seek(ms) => self.command(Command::Seek { ms }),
            }
        }
    }

    fn composer(&mut self, ui: &mut egui::Ui, peer: postern_core::Address) {
        ui.add_space(4.0);
        if let Some(r) = self.reply_to {
            let quoted = self.messages.iter().find(|m| m.id == r).map(excerpt);
            ui.horizontal(|ui| {
                ui.label(format!("Replying to: {}", quoted.unwrap_or_default()));
                if ui.small_button("Cancel reply").clicked() {
                    self.reply_to = None;
                }
            });
        }
        if let Some(r) = self.recording {
            let to = if r.to == peer {
                String::new()
            } else {
                format!(" to {}", self.name_of(&r.to))
            };
            let mut stop = None;
            ui.horizontal(|ui| {
                widgets::dot(ui, RED);
                ui.label(format!(
                    "Recording{to} {}",
                    format::duration(u64::from(r.elapsed_ms))
                ));
                let bar = ui.add(egui::ProgressBar::new(r.level).desired_width(160.0));
                crate::name_input(ui, &bar, "Microphone level");
                if ui.button("Cancel recording").clicked() {
                    stop = Some(false);
                }
                if ui.button("Send voice message").clicked() {
                    stop = Some(true);
                }
            });
            if let Some(send) = stop {
                self.command(Command::StopRecording { send });
            }
            return;
        }
        if let Some(why) = self.no_microphone.clone() {
            ui.horizontal(|ui| {
                ui.label(
                    RichText::new(format!(
                        "{why}. You can attach a voice clip (.ogg) instead."
                    ))
                    .small(),
                );
                if ui.small_button("Attach a voice clip…").clicked() {
                    self.command(Command::Attach { to: peer });
                }
            });
        }
        let mut send = false;
        ui.horizontal(|ui| {
            if ui.button("Attach file").clicked() {
                self.command(Command::Attach { to: peer });
            }
            if ui.button("Record voice message").clicked() {
                self.command(Command::Record { to: peer });
            }
            let width = (ui.available_width() - 70.0).max(120.0);
            let out = egui::TextEdit::multiline(&mut self.draft)
                .id_salt("composer")
                .hint_text("Message")
                .desired_rows(2)
                .desired_width(width)
                .return_key(KeyboardShortcut::new(Modifiers::SHIFT, Key::Enter))
                .show(ui);
            crate::name_input(ui, &out.response, "Message");
            if core::mem::take(&mut self.focus_composer) {
                out.response.request_focus();
            }
            if out.response.has_focus()
                && ui.input(|i| i.key_pressed(Key::Enter) && !i.modifiers.shift)
            {
                send = true;
            }
            if ui.button("Send").clicked() {
                send = true;
            }
        });
        ui.label(
            RichText::new(
                "Enter sends, Shift+Enter starts a new line. Photos are re-encoded: location and camera data never leave this device.",
            )
            .small()
            .weak(),
        );
        if send {
            let text = self.draft.trim_end_matches('\n').to_owned();
            if !text.trim().is_empty() {
                let reply_to = self.reply_to.take();
                self.request(Request::SendText {
                    to: peer,
                    text,
                    reply_to,
                });
                self.draft.clear();
            }
        }
    }

    fn dropped_and_pasted(&mut self, ui: &mut egui::Ui) {
        let (files, hovering, pasted) = ui.input(|i| {
            let files: Vec<egui::DroppedFileHandle> = i
                .raw
                .dropped_files
                .iter()
                .filter(|f| !f.path().as_os_str().is_empty())
                .cloned()
                .collect();
            let pasted: Vec<std::sync::Arc<egui::ColorImage>> = i
                .events
                .iter()
                .filter_map(|e| match e {
                    egui::Event::PasteImage(img) => Some(img.clone()),
                    _ => None,
                })
                .collect();
            (files, !i.raw.hovered_files.is_empty(), pasted)
        });
        if hovering && self.selected.is_some() {
            let rect = ui.ctx().content_rect();
            let p = ui.ctx().layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("drop"),
            ));
            p.rect_filled(rect, 0.0, Color32::from_black_alpha(140));
            p.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Drop to send",
                egui::FontId::proportional(28.0),
                Color32::WHITE,
            );
        }
        if !files.is_empty()
            && let Some(to) = self.selected
        {
            self.command(Command::AttachDropped { to, files });
        }
        for img in pasted {
            let purpose = match &self.dialog {
                Dialog::Accept(_) => Some(Purpose::Invitation),
                Dialog::Safety(s) => Some(Purpose::Verify(s.peer)),
                _ => None,
            };
            match purpose {
                Some(purpose) => {
                    let [w, h] = img.size;
                    let pixels = img
                        .pixels
                        .iter()
                        .map(|c| {
                            let l =
                                (u16::from(c.r()) * 3 + u16::from(c.g()) * 6 + u16::from(c.b()))
                                    / 10;
                            u8::try_from(l).unwrap_or(u8::MAX)
                        })
                        .collect();
                    self.request(Request::Scan {
                        image: postern_app::Image::Luma {
                            width: u32::try_from(w).unwrap_or(0),
                            height: u32::try_from(h).unwrap_or(0),
                            pixels,
                        },
                        purpose,
                    });
                }
                None => self.toast(
                    "Paste an image with a QR code into “Accept invitation” or a safety number",
                    false,
                ),
            }
        }
    }

    fn dialogs(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        let close = match self.dialog.clone() {
            Dialog::None => false,
            Dialog::Inviting => modal(&ctx, "inviting", |ui| {
                ui.heading("New invitation");
                ui.spinner();
                ui.label("Making a one-time invitation on your relay…");
                ui.button("Close").clicked()
            }),
            Dialog::Invitation(link) => {
                let tex = self.textures.qr(&ctx, link.as_bytes());
                modal(&ctx, "invitation", |ui| {
                    ui.heading("Your one-time invitation");
                    ui.label("Show the code to a phone, or give the link by a channel you trust. It works once, for 7 days.");
                    if let Some(t) = tex {
                        ui.add(
                            egui::Image::new(&t)
                                .fit_to_exact_size(egui::Vec2::splat(320.0))
                                .alt_text("Invitation QR code"),
                        );
                    }
                    ui.add(egui::Label::new(RichText::new(&link).monospace().small()).wrap());
                    let mut done = false;
                    ui.horizontal(|ui| {
                        if ui.button("Copy link").clicked() {
                            ui.ctx().copy_text(link.clone());
                        }
                        done = ui.button("Done").clicked();
                    });
                    done
                })
            }
            Dialog::Accept(mut link) => {
                let mut accept = false;
                let mut scan = false;
                let close = modal(&ctx, "accept", |ui| {
                    ui.heading("Accept an invitation");
                    ui.label("Paste the link you were given, open an image of its QR code, or paste such an image (Ctrl+V).");
                    let r = ui.add(
                        egui::TextEdit::singleline(&mut link)
                            .hint_text("postern:…")
                            .desired_width(420.0),
                    );
                    crate::name_input(ui, &r, "Invitation link");
                    let mut close = false;
                    ui.horizontal(|ui| {
                        accept = ui
                            .add_enabled(!link.trim().is_empty(), egui::Button::new("Accept"))
                            .clicked();
                        scan = ui.button("Open QR image…").clicked();
                        close = ui.button("Cancel").clicked();
                    });
                    close
                });
                if accept {
                    self.request(Request::AcceptInvite(link.trim().to_owned()));
                }
                if scan {
                    self.command(Command::OpenImageToScan(Purpose::Invitation));
                }
                if let Dialog::Accept(l) = &mut self.dialog {
                    *l = link;
                }
                close
            }
            Dialog::Safety(s) => {
                let tex = self.textures.qr(&ctx, &s.scannable);
                let mut confirm = false;
                let mut scan = false;
                let who = if s.name.is_empty() {
                    short_address(&s.peer)
                } else {
                    s.name.clone()
                };
                let close = modal(&ctx, "safety", |ui| {
                    ui.heading(format!("Safety number with {who}"));
                    if s.verified {
                        ui.colored_label(GREEN, "Verified");
                    }
                    ui.label("Compare these 60 digits with the ones on their screen, or scan each other's code. If they match, nobody is in the middle.");
                    let groups = postern_app::group_digits(&s.digits);
                    egui::Grid::new("digits")
                        .spacing([18.0, 6.0])
                        .show(ui, |ui| {
                            for (i, g) in groups.iter().enumerate() {
                                ui.label(RichText::new(g).monospace().size(18.0));
                                if i % 4 == 3 {
                                    ui.end_row();
                                }
                            }
                        });
                    if let Some(t) = tex {
                        ui.add(
                            egui::Image::new(&t)
                                .fit_to_exact_size(egui::Vec2::splat(240.0))
                                .alt_text("Safety number QR code"),
                        );
                    }
                    let mut close = false;
                    ui.horizontal(|ui| {
                        if !s.verified {
                            confirm = ui.button("Mark as verified").clicked();
                        }
                        scan = ui.button("Scan their code from an image…").clicked();
                        close = ui.button("Close").clicked();
                    });
                    close
                });
                if confirm {
                    self.request(Request::ConfirmVerified(s.peer));
                }
                if scan {
                    self.command(Command::OpenImageToScan(Purpose::Verify(s.peer)));
                }
                close
            }
            Dialog::Settings => self.settings(&ctx),
            Dialog::Passphrase => self.passphrase_dialog(&ctx),
            Dialog::Backup => self.backup_dialog(&ctx),
            Dialog::Shortcuts => modal(&ctx, "shortcuts", |ui| {
                ui.heading("Keyboard shortcuts");
                egui::Grid::new("keys").spacing([24.0, 6.0]).show(ui, |ui| {
                    ui.label(RichText::new("Enter").monospace());
                    ui.label("Send the message");
                    ui.end_row();
                    ui.label(RichText::new("Shift+Enter").monospace());
                    ui.label("New line");
                    ui.end_row();
                    for (k, what) in SHORTCUTS {
                        ui.label(RichText::new(ctx.format_shortcut(k)).monospace());
                        ui.label(*what);
                        ui.end_row();
                    }
                });
                ui.button("Close").clicked()
            }),
        };
        if close {
            self.dialog = Dialog::None;
        }
    }

    fn settings(&mut self, ctx: &egui::Context) -> bool {
        let mut p = self.prefs.clone();
        let mut next = None;
        let keychain = self.keychain_profile;
        let mut forget = false;
        let close = modal(ctx, "settings", |ui| {
            ui.heading("Settings");
            ui.label("Theme");
            ui.horizontal(|ui| {
                ui.selectable_value(
                    &mut p.theme,
                    egui::ThemePreference::System,
                    "Follow the system",
                );
                ui.selectable_value(&mut p.theme, egui::ThemePreference::Dark, "Dark");
                ui.selectable_value(&mut p.theme, egui::ThemePreference::Light, "Light");
            });
            ui.add(egui::Slider::new(&mut p.scale, 0.75..=2.0).text("Interface scale"));
            ui.separator();
            ui.checkbox(&mut p.notifications, "Notify me of new messages");
            ui.add_enabled(
                p.notifications,
                egui::Checkbox::new(
                    &mut p.notification_content,
                    "Show the sender and text in notifications",
                ),
            );
            ui.separator();
            ui.add(
                egui::Slider::new(&mut p.cover_per_minute, 0..=60).text("Cover packets per minute"),
            );
            ui.label(
                RichText::new("Cover packets look like messages on the wire: more hide better, and cost bandwidth.")
                    .small()
                    .weak(),
            );
            ui.add(
                egui::Slider::new(&mut p.auto_lock_minutes, 0..=240)
                    .text("Lock after idle minutes (0: never)"),
            );
            ui.separator();
            ui.horizontal(|ui| {
                let change = if keychain {
                    "Protect with a passphrase…"
                } else {
                    "Change passphrase…"
                };
                if ui.button(change).clicked() {
                    next = Some(Dialog::Passphrase);
                }
                if ui.button("Export an encrypted backup…").clicked() {
                    next = Some(Dialog::Backup);
                }
            });
            if self.remember == Some(true) {
                ui.separator();
                ui.label("This browser remembers the key: Postern opens here without the passphrase (locking still asks for it).");
                if ui.button("Forget this browser").clicked() {
                    forget = true;
                }
            }
            ui.button("Close").clicked()
        });
        if p != self.prefs {
            self.prefs = p.clone();
            self.command(Command::Prefs(p));
        }
        if forget {
            self.command(Command::Forget);
        }
        if let Some(d) = next {
            self.forms = crate::Forms::default();
            self.dialog = d;
            return false;
        }
        close
    }

    /// Changing the passphrase (or protecting a keychain profile with one).
    fn passphrase_dialog(&mut self, ctx: &egui::Context) -> bool {
        let keychain = self.keychain_profile;
        let mut go = false;
        let forms = &mut self.forms;
        let close = form_modal(ctx, "passphrase", |ui| {
            ui.heading(if keychain {
                "Protect with a passphrase"
            } else {
                "Change passphrase"
            });
            if keychain {
                ui.label("The key leaves the system keychain: the passphrase will be asked each time Postern unlocks.");
            } else {
                field(ui, "Current passphrase", &mut forms.current, true);
            }
            let ok = new_passphrase(
                ui,
                "New passphrase",
                &mut forms.passphrase,
                &mut forms.repeat,
            ) && (keychain || !forms.current.is_empty());
            let mut close = false;
            ui.horizontal(|ui| {
                go = ui
                    .add_enabled(ok, egui::Button::new("Change passphrase"))
                    .clicked();
                close = ui.button("Cancel").clicked();
            });
            close
        });
        if go {
            let current = Zeroizing::new(core::mem::take(&mut *self.forms.current));
            let new = Zeroizing::new(core::mem::take(&mut *self.forms.passphrase));
            self.forms = crate::Forms::default();
            self.command(Command::ChangePassphrase { current, new });
            return true;
        }
        if close {
            self.forms = crate::Forms::default();
        }
        close
    }

    /// Exporting an encrypted backup under a passphrase of its own.
    fn backup_dialog(&mut self, ctx: &egui::Context) -> bool {
        let mut go = false;
        let forms = &mut self.forms;
        let close = form_modal(ctx, "backup", |ui| {
            ui.heading("Export an encrypted backup");
            ui.label("One file with your identity, contacts and messages, encrypted with a passphrase of its own. Keep it somewhere safe: whoever has the file and the passphrase can become you.");
            let ok = new_passphrase(
                ui,
                "Backup passphrase",
                &mut forms.passphrase,
                &mut forms.repeat,
            );
            let mut close = false;
            ui.horizontal(|ui| {
                go = ui.add_enabled(ok, egui::Button::new("Export…")).clicked();
                close = ui.button("Cancel").clicked();
            });
            close
        });
        if go {
            let passphrase = Zeroizing::new(core::mem::take(&mut *self.forms.passphrase));
            self.forms = crate::Forms::default();
            self.command(Command::ExportBackup { passphrase });
            return true;
        }
        if close {
            self.forms = crate::Forms::default();
        }
        close
    }

    pub(crate) fn toasts(&mut self, ui: &mut egui::Ui) {
        let t = ui.input(|i| i.time);
        for toast in &mut self.toasts {
            if toast.until.is_nan() {
                toast.until = t + if toast.error { 8.0 } else { 4.0 };
            }
        }
        self.toasts.retain(|x| x.until > t);
        if self.toasts.len() > 4 {
            let drop = self.toasts.len() - 4;
            self.toasts.drain(..drop);
        }
        if let Some(next) = self.toasts.iter().map(|x| x.until).reduce(f64::min) {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs_f64((next - t).max(0.05)));
        }
        let mut dismiss = None;
        egui::Area::new(egui::Id::unique("toasts"))
            .anchor(egui::Align2::CENTER_TOP, [0.0, 44.0])
            .order(egui::Order::Foreground)
            .show(ui.ctx(), |ui| {
                for (i, Toast { text, error, .. }) in self.toasts.iter().enumerate() {
                    let fill = if *error {
                        RED
                    } else {
                        accent(ui.visuals().dark_mode)
                    };
                    egui::Frame::new()
                        .fill(fill)
                        .corner_radius(8.0)
                        .inner_margin(10.0)
                        .show(ui, |ui| {
                            ui.set_max_width(520.0);
                            ui.horizontal(|ui| {
                                ui.add(
                                    egui::Label::new(RichText::new(text).color(Color32::WHITE))
                                        .wrap(),
                                );
                                if ui.small_button("Dismiss").clicked() {
                                    dismiss = Some(i);
                                }
                            });
                        });
                }
            });
        if let Some(i) = dismiss {
            self.toasts.remove(i);
        }
    }
}

/// Applies the interface scale.
pub(crate) fn ui_scale(ctx: &egui::Context, p: &crate::Prefs) {
    if (ctx.zoom_factor() - p.scale).abs() > f32::EPSILON {
        ctx.set_zoom_factor(p.scale);
    }
}

/// A card in the middle of the window (the onboarding and lock screens).
fn card(ui: &mut egui::Ui, width: f32, content: impl FnOnce(&mut egui::Ui)) {
    egui::CentralPanel::default().show(ui, |ui| {
        let h = ui.available_height();
        // A short window scrolls the card rather than cutting it off.
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                ui.add_space((h * 0.1).clamp(12.0, 96.0));
                ui.vertical_centered(|ui| {
                    egui::Frame::group(ui.style())
                        .fill(ui.visuals().faint_bg_color)
                        .corner_radius(12.0)
                        .inner_margin(24.0)
                        .show(ui, |ui| {
                            ui.set_width(width);
                            content(ui);
                        });
                });
            });
    });
}

/// A modal dialog; returns whether it should close (its own button, or
/// Escape / a click outside).
fn modal(ctx: &egui::Context, id: &str, content: impl FnOnce(&mut egui::Ui) -> bool) -> bool {
    let r = egui::Modal::new(egui::Id::unique(("modal", id))).show(ctx, |ui| {
        ui.set_max_width(520.0);
        content(ui)
    });
    r.inner || r.should_close()
}

/// Chunks done and in all: what we sent is complete on this device, so
/// its progress is what the sending told (chunks out); what we receive is
/// whichever is further, the store's count or the last progress told.
fn transfer_state(
    chunks: (usize, usize),
    progress: Option<(usize, usize)>,
    outgoing: bool,
) -> (usize, usize) {
    match progress {
        Some(p) if outgoing || p.0 > chunks.0 => p,
        _ => chunks,
    }
}

/// A voice message's player: play/pause, the waveform with what was
/// played, the time, and (while loaded) a scrubber the arrow keys move.
fn voice_player(
    ui: &mut egui::Ui,
    duration_ms: u32,
    waveform: &[u8],
    playback: Option<crate::Playback>,
    complete: bool,
    ink: Color32,
) -> Option<Action> {
    let mut action = None;
    let playing = playback.is_some_and(|p| p.playing);
    ui.horizontal(|ui| {
        let b = widgets::play_button(ui, playing, complete, ink);
        if b.clicked() {
            action = Some(if playing { Action::Pause } else { Action::Play });
        }
        let at = playback.map_or(0, |p| p.position_ms);
        let total = playback.map_or(duration_ms, |p| p.duration_ms).max(1);
        widgets::waveform(ui, waveform, ink, at as f32 / total as f32);
        let shown = if playback.is_some() { at } else { duration_ms };
        ui.label(RichText::new(format::duration(u64::from(shown))).color(ink));
    });
    if let Some(p) = playback {
        let mut at = p.position_ms;
        let r = ui.add(
            egui::Slider::new(&mut at, 0..=p.duration_ms.max(1))
                .show_value(false)
                .step_by(500.0),
        );
        crate::name_input(ui, &r, "Position in the voice message");
        if r.changed() {
            action = Some(Action::Seek(at));
        }
    }
    action
}

/// A modal dialog holding a form: a click outside does not close it (and
/// lose what was typed); its own buttons or Escape do.
fn form_modal(ctx: &egui::Context, id: &str, content: impl FnOnce(&mut egui::Ui) -> bool) -> bool {
    let r = egui::Modal::new(egui::Id::unique(("modal", id))).show(ctx, |ui| {
        ui.set_max_width(520.0);
        content(ui)
    });
    let escape = r.is_top_modal
        && !r.any_popup_open
        && ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::Escape));
    r.inner || escape
}

/// The host and port of a relay address (the pin is not for people).
fn relay_host(addr: &str) -> String {
    let a = addr.strip_prefix("postern-relay://").unwrap_or(addr);
    a.split('#').next().unwrap_or(a).to_owned()
}

fn contact_row(
    ui: &mut egui::Ui,
    c: &postern_app::ContactView,
    name: &str,
    selected: bool,
    now: postern_core::UnixTime,
    offset: i32,
) -> egui::Response {
    let fill = if selected {
        ui.visuals().selection.bg_fill
    } else {
        Color32::TRANSPARENT
    };
    let inner = egui::Frame::new()
        .fill(fill)
        .corner_radius(6.0)
        .inner_margin(6.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.horizontal(|ui| {
                ui.label(RichText::new(name).strong());
                if c.verified {
                    ui.colored_label(GREEN, "verified");
                }
                if c.key_changed {
                    ui.colored_label(RED, "key changed");
                }
                ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                    if c.unread > 0 {
                        egui::Frame::new()
                            .fill(accent(ui.visuals().dark_mode))
                            .corner_radius(9.0)
                            .inner_margin(egui::Margin::symmetric(6, 1))
                            .show(ui, |ui| {
                                ui.label(
                                    RichText::new(c.unread.to_string())
                                        .color(Color32::WHITE)
                                        .small(),
                                );
                            });
                    }
                    if let Some(t) = c.last_time {
                        ui.label(RichText::new(format::time(t, now, offset)).small().weak());
                    }
                });
            });
            if let Some(l) = &c.last {
                ui.add(egui::Label::new(RichText::new(l).weak()).truncate());
            }
        });
    let r = ui.interact(
        inner.response.rect,
        ui.scope_id().with("row"),
        Sense::click(),
    );
    let mut label = name.to_owned();
    if c.unread > 0 {
        label.push_str(&format!(", {} unread", c.unread));
    }
    if c.verified {
        label.push_str(", verified");
    }
    r.widget_info(|| egui::WidgetInfo::selected(egui::Role::Button, true, selected, &label));
    r
}

/// The blocking warning of a changed identity key; whether the user
/// accepts the new key.
fn key_change_banner(ui: &mut egui::Ui, name: &str) -> bool {
    let mut accept = false;
    egui::Frame::new()
        .fill(Color32::from_rgb(0x5c, 0x1a, 0x16))
        .corner_radius(8.0)
        .inner_margin(16.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.label(
                RichText::new(format!("{name}'s safety number changed"))
                    .heading()
                    .color(Color32::WHITE),
            );
            ui.label(
                RichText::new(format!(
                    "{name} now has an identity key that is not the one you know. \
                     They may have reset their keys, or someone may be in the middle. Nothing is \
                     sent to or shown from {name} until you accept the new key. Ask {name}, by a \
                     channel you trust, whether they reset their keys; the new key comes with a new \
                     invitation of theirs. Then accept it and compare safety numbers."
                ))
                .color(Color32::WHITE),
            );
            ui.add_space(8.0);
            accept = ui.button("Accept the new key").clicked();
        });
    accept
}

/// What a message bubble asks for.
enum Action {
    Reply,
    Retry,
    Save,
    Play,
    Pause,
    Seek(u32),
}

pub(crate) fn excerpt(m: &MessageView) -> String {
    match &m.body {
        BodyView::Text(t) => t.chars().take(60).collect(),
        BodyView::Image { .. } => "Photo".to_owned(),
        BodyView::File { name, .. } => format!("File {name}"),
        BodyView::Voice { .. } => "Voice message".to_owned(),
        _ => "Message".to_owned(),
    }
}

/// The words a screen reader says for a message: sender, body, time,
/// state.
fn spoken(m: &MessageView, name: &str, time: &str) -> String {
    let who = if m.outgoing { "You" } else { name };
    let body = match &m.body {
        BodyView::Text(t) => t.clone(),
        BodyView::Image { size, .. } => format!("photo, {}", format::size(*size)),
        BodyView::File { name, size, .. } => format!("file {name}, {}", format::size(*size)),
        BodyView::Voice { duration_ms, .. } => {
            format!(
                "voice message, {}",
                format::duration(u64::from(*duration_ms))
            )
        }
        _ => "a message this version cannot show".to_owned(),
    };
    let state = if m.outgoing {
        format!(", {}", m.delivery.map_or("sent", format::delivery))
    } else {
        String::new()
    };
    format!("{who}: {body}, {time}{state}")
}

#[allow(clippy::too_many_arguments)]
fn bubble(
    ui: &mut egui::Ui,
    ctx: &egui::Context,
    m: &MessageView,
    name: &str,
    quoted: Option<&MessageView>,
    progress: Option<(usize, usize)>,
    playback: Option<crate::Playback>,
    textures: &mut widgets::Textures,
    now: postern_core::UnixTime,
    offset: i32,
) -> Option<Action> {
    let dark = ui.visuals().dark_mode;
    let (fill, ink) = if m.outgoing {
        (accent(dark), Color32::WHITE)
    } else if dark {
        (Color32::from_gray(0x33), Color32::from_gray(0xee))
    } else {
        (Color32::from_gray(0xe8), Color32::from_gray(0x11))
    };
    let time = format::time(m.time, now, offset);
    let mut action = None;
    let layout = if m.outgoing {
        Layout::right_to_left(Align::TOP)
    } else {
        Layout::left_to_right(Align::TOP)
    };
    ui.push_id(m.id, |ui| {
        ui.with_layout(layout, |ui| {
            let max = (ui.available_width() * 0.75).max(200.0);
            // A bubble on the right is as wide as its content was last
            // frame (the content lays out from the left, so the region it
            // gets must be no wider than it, or it would not sit flush).
            let width_id = ui.scope_id().with("width");
            let width = if m.outgoing {
                ui.data(|d| d.get_temp::<f32>(width_id))
                    .unwrap_or(max)
                    .min(max)
            } else {
                max
            };
            let inner = ui
                .allocate_ui_with_layout(
                    egui::vec2(width, 0.0),
                    Layout::top_down(Align::LEFT),
                    |ui| {
                        egui::Frame::new()
                            .fill(fill)
                            .corner_radius(12.0)
                            .inner_margin(egui::Margin::symmetric(10, 6))
                            .show(ui, |ui| {
                                ui.set_max_width(max);
                                ui.with_layout(Layout::top_down(Align::LEFT), |ui| {
                                    if let Some(q) = quoted {
                                        ui.label(
                                            RichText::new(format!("› {}", excerpt(q)))
                                                .color(ink)
                                                .italics()
                                                .small(),
                                        );
                                    }
                                    match &m.body {
                                        BodyView::Text(t) => {
                                            ui.add(
                                                egui::Label::new(RichText::new(t).color(ink))
                                                    .wrap()
                                                    .selectable(true),
                                            );
                                        }
                                        BodyView::Image {
                                            width,
                                            height,
                                            thumbnail,
                                            size,
                                            chunks,
                                        } => {
                                            if let Some(px) = thumbnail {
                                                let t = textures.thumb(ctx, &m.id, px);
                                                let w = (*width as f32).clamp(60.0, 280.0);
                                                let h =
                                                    w * (*height as f32 / (*width).max(1) as f32);
                                                ui.add(
                                                    egui::Image::new(&t)
                                                        .fit_to_exact_size(egui::vec2(
                                                            w,
                                                            h.min(360.0),
                                                        ))
                                                        .corner_radius(8.0)
                                                        .alt_text("Photo"),
                                                );
                                            }
                                            transfer(
                                                ui,
                                                *size,
                                                *chunks,
                                                progress,
                                                m.outgoing,
                                                ink,
                                                &mut action,
                                            );
                                        }
                                        BodyView::File { name, size, chunks } => {
                                            ui.label(
                                                RichText::new(format!("File: {name}"))
                                                    .color(ink)
                                                    .strong(),
                                            );
                                            transfer(
                                                ui,
                                                *size,
                                                *chunks,
                                                progress,
                                                m.outgoing,
                                                ink,
                                                &mut action,
                                            );
                                        }
                                        BodyView::Voice {
                                            duration_ms,
                                            waveform,
                                            size,
                                            chunks,
                                        } => {
                                            let (done, total) =
                                                transfer_state(*chunks, progress, m.outgoing);
                                            let complete = m.outgoing || done >= total;
                                            if let Some(a) = voice_player(
                                                ui,
                                                *duration_ms,
                                                waveform,
                                                playback,
                                                complete,
                                                ink,
                                            ) {
                                                action = Some(a);
                                            }
                                            transfer(
                                                ui,
                                                *size,
                                                *chunks,
                                                progress,
                                                m.outgoing,
                                                ink,
                                                &mut action,
                                            );
                                        }
                                        _ => {
                                            ui.label(
                                                RichText::new("A message this version cannot show")
                                                    .color(ink)
                                                    .italics(),
                                            );
                                        }
                                    }
                                    ui.horizontal(|ui| {
                                        ui.label(RichText::new(&time).color(ink).small());
                                        if m.outgoing {
                                            widgets::delivery_mark(ui, m.delivery, ink);
                                            let words = m.delivery.map_or("sent", format::delivery);
                                            ui.label(RichText::new(words).color(ink).small());
                                            if m.delivery == Some(DeliveryState::Failed)
                                                && ui.small_button("Retry").clicked()
                                            {
                                                action = Some(Action::Retry);
                                            }
                                        }
                                        if ui.small_button("Reply").clicked() {
                                            action = Some(Action::Reply);
                                        }
                                    });
                                });
                            })
                    },
                )
                .inner;
            if m.outgoing {
                let used = inner.response.rect.width();
                if (used - width).abs() > 0.5 {
                    ui.data_mut(|d| d.insert_temp(width_id, used));
                    ui.ctx().request_repaint();
                }
            }
            let label = spoken(m, name, &time);
            let r = ui.interact(
                inner.response.rect,
                ui.scope_id().with("message"),
                Sense::hover(),
            );
            r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::ListItem, true, &label));
        });
    });
    ui.add_space(4.0);
    action
}

/// An attachment's transfer state: progress while incomplete, a save
/// button once complete.
fn transfer(
    ui: &mut egui::Ui,
    size: u64,
    chunks: (usize, usize),
    progress: Option<(usize, usize)>,
    outgoing: bool,
    ink: Color32,
    action: &mut Option<Action>,
) {
    let (done, total) = transfer_state(chunks, progress, outgoing);
    if total > 0 && done < total {
        let f = done as f32 / total as f32;
        ui.add(
            egui::ProgressBar::new(f)
                .desired_width(200.0)
                .text(format!("{} of {}", done, total)),
        );
    } else {
        ui.horizontal(|ui| {
            ui.label(RichText::new(format::size(size)).color(ink).small());
            if ui.small_button("Save as…").clicked() {
                *action = Some(Action::Save);
            }
        });
    }
}
