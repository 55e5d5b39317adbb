//! Every screen driven by its AccessKit names, as a screen reader or a
//! user would: what the shell told it in, what it asks for out. The
//! harness also fails any frame with an input widget that has no name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use postern_app::{
    BodyView, Connection, ContactView, DeliveryState, Failure, MeView, MessageView, Request,
    SafetyView, StatusView, Update,
};
use postern_core::{Address, ErrorKind, UnixTime};
use postern_ui::{App, Command, Event, Prefs};

/// Noon, some day.
const NOW: UnixTime = UnixTime(1_800_014_400_000 - 1_800_014_400_000 % 86_400_000 + 43_200_000);

fn bob() -> Address {
    Address::from_bytes([0xB0; 16])
}

fn harness(app: App) -> Harness<'static, App> {
    let mut h = Harness::builder()
        .with_size([1100.0, 760.0])
        .with_max_steps(24)
        .build_ui_state(
            |ui, app: &mut App| {
                app.set_clock(NOW, 0);
                app.ui(ui);
            },
            app,
        );
    h.run();
    h
}

fn commands(h: &mut Harness<'_, App>) -> Vec<Command> {
    h.state_mut().take_commands()
}

fn apply(h: &mut Harness<'_, App>, e: Event) {
    h.state_mut().apply(e);
    h.run();
}

fn contact(name: &str, unread: u64, verified: bool) -> ContactView {
    ContactView {
        address: bob(),
        name: name.into(),
        verified,
        unread,
        last: Some("see you at noon".into()),
        last_time: Some(NOW),
        key_changed: false,
    }
}

fn text(id: u8, outgoing: bool, t: &str, delivery: Option<DeliveryState>) -> MessageView {
    MessageView {
        peer: bob(),
        id: [id; 16],
        outgoing,
        time: NOW,
        reply_to: None,
        body: BodyView::Text(t.into()),
        delivery,
    }
}

/// The main screen with Bob as a contact and his conversation open.
fn unlocked_with_bob(messages: Vec<MessageView>) -> Harness<'static, App> {
    let mut h = harness(App::new(Prefs {
        auto_lock_minutes: 0,
        ..Prefs::default()
    }));
    apply(&mut h, Event::Unlocked);
    apply(
        &mut h,
        Event::App(Update::Me(MeView {
            address: Address::from_bytes([0xA0; 16]),
            name: "Ada".into(),
            home: Some("postern-relay://127.0.0.1:7000#pin".into()),
        })),
    );
    apply(
        &mut h,
        Event::App(Update::Contacts(vec![contact("Bob", 2, false)])),
    );
    h.get_by_label("Bob, 2 unread").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::App(Request::Open(p))] if *p == bob()
    ));
    apply(
        &mut h,
        Event::App(Update::Conversation {
            peer: bob(),
            messages,
        }),
    );
    h
}

#[test]
fn onboarding_refuses_a_short_or_mismatched_passphrase_and_creates_the_profile() {
    let mut h = harness(App::default());
    h.get_by_label("Starting…");
    apply(
        &mut h,
        Event::NoProfile {
            keychain: false,
            default_relay: Some("postern-relay://127.0.0.1:7000#AAAA".into()),
        },
    );
    h.get_by_label("Home relay: 127.0.0.1:7000");
    h.get_by_label("Your name (only your contacts see it)")
        .focus();
    h.run();
    h.get_by_role_and_label(Role::TextInput, "Your name (only your contacts see it)")
        .type_text("Ada");
    h.get_by_role_and_label(Role::PasswordInput, "Passphrase")
        .focus();
    h.run();
    h.get_by_role_and_label(Role::PasswordInput, "Passphrase")
        .type_text("short");
    h.run();
    h.get_by_label_contains("too short");
    // Disabled: clicking does nothing.
    h.get_by_label("Create profile").click();
    h.run();
    assert!(commands(&mut h).is_empty());
    h.get_by_role_and_label(Role::PasswordInput, "Passphrase")
        .focus();
    h.run();
    h.get_by_role_and_label(Role::PasswordInput, "Passphrase")
        .type_text(" correct horse battery");
    h.get_by_role_and_label(Role::PasswordInput, "Repeat the passphrase")
        .focus();
    h.run();
    h.get_by_role_and_label(Role::PasswordInput, "Repeat the passphrase")
        .type_text("short correct horse batter");
    h.run();
    h.get_by_label("The two passphrases differ");
    h.get_by_role_and_label(Role::PasswordInput, "Repeat the passphrase")
        .type_text("y");
    h.run();
    h.get_by_label("Strength: strong");
    h.get_by_label("Create profile").click();
    h.run_steps(3);
    match commands(&mut h).as_slice() {
        [
            Command::Create {
                name,
                relay: None,
                passphrase: Some(p),
            },
        ] => {
            assert_eq!(name, "Ada");
            assert_eq!(p.as_str(), "short correct horse battery");
        }
        other => panic!("{other:?}"),
    }
    h.get_by_label("Creating your keys…");
    apply(&mut h, Event::CreateFailed("cannot reach the relay".into()));
    h.get_by_label("cannot reach the relay");
}

#[test]
fn a_wrong_passphrase_is_refused_and_the_right_one_unlocks() {
    let mut h = harness(App::default());
    apply(
        &mut h,
        Event::Locked {
            keychain: false,
            reason: Some("Locked after 15 minutes idle".into()),
        },
    );
    h.get_by_label("Postern is locked");
    h.get_by_label("Locked after 15 minutes idle");
    h.get_by_role_and_label(Role::PasswordInput, "Passphrase")
        .type_text("wrong one");
    h.key_press(egui::Key::Enter);
    // A spinner turns while the shell unlocks.
    h.run_steps(3);
    match commands(&mut h).as_slice() {
        [Command::Unlock(p)] => assert_eq!(p.as_str(), "wrong one"),
        other => panic!("{other:?}"),
    }
    apply(&mut h, Event::UnlockFailed("Wrong passphrase".into()));
    h.get_by_label("Wrong passphrase");
    // The field was emptied: nothing typed stays on screen.
    assert_eq!(
        h.get_by_role_and_label(Role::PasswordInput, "Passphrase")
            .value()
            .unwrap_or_default(),
        ""
    );
    apply(&mut h, Event::Unlocked);
    h.get_by_label("New invitation");
    assert!(h.state().is_unlocked());
}

#[test]
fn a_message_reads_as_sender_body_time_and_state_and_each_state_shows() {
    let h = unlocked_with_bob(vec![
        text(1, false, "see you at noon", None),
        text(2, true, "queued one", Some(DeliveryState::Queued)),
        text(3, true, "sent one", Some(DeliveryState::Sent)),
        text(4, true, "stored one", Some(DeliveryState::Stored)),
        text(5, true, "delivered one", Some(DeliveryState::Delivered)),
        text(6, true, "failed one", Some(DeliveryState::Failed)),
    ]);
    h.get_by_label("Bob: see you at noon, 12:00");
    h.get_by_label("You: queued one, 12:00, queued");
    h.get_by_label("You: sent one, 12:00, in the network");
    h.get_by_label("You: stored one, 12:00, stored at their relay");
    h.get_by_label("You: delivered one, 12:00, delivered");
    h.get_by_label("You: failed one, 12:00, failed");
    // Only the failed one offers a retry.
    assert_eq!(h.get_all_by_label("Retry").count(), 1);
    h.get_by_label("Not verified");
}

#[test]
fn enter_sends_shift_enter_breaks_the_line_and_a_failed_message_can_be_retried() {
    let mut h = unlocked_with_bob(vec![text(
        6,
        true,
        "failed one",
        Some(DeliveryState::Failed),
    )]);
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .focus();
    h.run();
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .type_text("first line");
    h.key_press_modifiers(egui::Modifiers::SHIFT, egui::Key::Enter);
    h.run();
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .type_text("second");
    h.key_press(egui::Key::Enter);
    h.run();
    match commands(&mut h).as_slice() {
        [
            Command::App(Request::SendText {
                to,
                text,
                reply_to: None,
            }),
        ] => {
            assert_eq!(*to, bob());
            assert_eq!(text, "first line\nsecond");
        }
        other => panic!("{other:?}"),
    }
    // The composer is empty again; Enter on it sends nothing.
    h.key_press(egui::Key::Enter);
    h.run();
    assert!(commands(&mut h).is_empty());
    h.get_by_label("Retry").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::App(Request::Retry { id, .. })] if *id == [6; 16]
    ));
    // A delivery update moves the mark.
    apply(
        &mut h,
        Event::App(Update::Delivery {
            peer: bob(),
            id: [6; 16],
            state: DeliveryState::Delivered,
        }),
    );
    h.get_by_label("You: failed one, 12:00, delivered");
}

#[test]
fn replying_quotes_the_message_and_sends_its_id() {
    let mut h = unlocked_with_bob(vec![text(1, false, "lunch?", None)]);
    h.get_by_label("Reply").click();
    h.run();
    h.get_by_label("Replying to: lunch?");
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .type_text("yes");
    h.get_by_label("Send").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::App(Request::SendText { reply_to: Some(r), .. })] if *r == [1; 16]
    ));
}

#[test]
fn a_changed_identity_key_blocks_the_conversation() {
    let mut h = unlocked_with_bob(vec![text(1, false, "hello", None)]);
    h.get_by_role_and_label(Role::MultilineTextInput, "Message");
    apply(&mut h, Event::App(Update::KeyChanged(bob())));
    h.get_by_label("Bob's safety number changed");
    // Nothing is shown from Bob, and nothing can be written to him.
    assert!(h.query_by_label("Bob: hello, 12:00").is_none());
    assert!(
        h.query_by_role_and_label(Role::MultilineTextInput, "Message")
            .is_none()
    );
    assert!(h.query_by_label("Send").is_none());
    // Accepting the new key is the user's decision, asked of the service.
    commands(&mut h);
    h.get_by_label("Accept the new key").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::App(Request::AcceptNewKey(p))] if *p == bob()
    ));
    apply(&mut h, Event::App(Update::KeyAccepted(bob())));
    h.get_by_label_contains("Bob's new key is accepted");
    h.get_by_role_and_label(Role::MultilineTextInput, "Message");
}

#[test]
fn an_invitation_is_shown_as_a_link_and_a_qr_code() {
    let mut h = unlocked_with_bob(Vec::new());
    h.get_by_label("New invitation").click();
    h.run_steps(2);
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::App(Request::CreateInvite)]
    ));
    h.get_by_label("Making a one-time invitation on your relay…");
    h.state_mut().apply(Event::App(Update::Invitation {
        link: "postern:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA".into(),
    }));
    h.run_steps(2);
    h.get_by_label("Invitation QR code");
    h.get_by_label("postern:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA");
    h.get_by_label("Copy link").click();
    h.run_steps(2);
    h.get_by_label("Done").click();
    h.run_steps(2);
    assert!(h.query_by_label("Invitation QR code").is_none());
}

#[test]
fn accepting_takes_a_pasted_link_and_a_pasted_image_is_scanned() {
    let mut h = unlocked_with_bob(Vec::new());
    h.get_by_label("Accept invitation").click();
    h.run_steps(2);
    h.get_by_role_and_label(Role::TextInput, "Invitation link")
        .focus();
    h.run_steps(2);
    h.get_by_role_and_label(Role::TextInput, "Invitation link")
        .type_text("  postern:ABCDEF  ");
    h.run_steps(2);
    h.get_by_label("Accept").click();
    h.run_steps(2);
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::App(Request::AcceptInvite(l))] if l == "postern:ABCDEF"
    ));
    h.event(egui::Event::PasteImage(std::sync::Arc::new(
        egui::ColorImage::filled([4, 3], egui::Color32::WHITE),
    )));
    h.run_steps(2);
    match commands(&mut h).as_slice() {
        [
            Command::App(Request::Scan {
                image:
                    postern_app::Image::Luma {
                        width: 4,
                        height: 3,
                        pixels,
                    },
                purpose: postern_app::Purpose::Invitation,
            }),
        ] => assert!(pixels.iter().all(|p| *p == 255)),
        other => panic!("{other:?}"),
    }
    h.get_by_label("Open QR image…").click();
    h.run_steps(2);
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::OpenImageToScan(postern_app::Purpose::Invitation)]
    ));
}

#[test]
fn the_safety_number_shows_twelve_groups_and_verifies() {
    let mut h = unlocked_with_bob(Vec::new());
    h.get_by_label("Safety number").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::App(Request::Safety(p))] if *p == bob()
    ));
    let digits: String = (0..60)
        .map(|i| char::from(b'0' + (i * 7 % 10) as u8))
        .collect();
    h.state_mut().apply(Event::App(Update::Safety(SafetyView {
        peer: bob(),
        name: "Bob".into(),
        digits: digits.clone(),
        scannable: vec![8; 40],
        verified: false,
    })));
    h.run_steps(2);
    h.get_by_label("Safety number with Bob");
    for g in postern_app::group_digits(&digits) {
        assert!(h.get_all_by_label(&g).count() >= 1);
    }
    h.get_by_label("Safety number QR code");
    h.get_by_label("Mark as verified").click();
    h.run_steps(2);
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::App(Request::ConfirmVerified(p))] if *p == bob()
    ));
    h.state_mut().apply(Event::App(Update::Verified(bob())));
    h.run_steps(2);
    assert!(h.get_all_by_label("Verified").count() >= 1);
    assert!(h.query_by_label("Mark as verified").is_none());
}

#[test]
fn the_status_area_shows_the_privacy_state() {
    let mut h = unlocked_with_bob(Vec::new());
    h.get_by_label("Not connected (no contacts yet)");
    apply(
        &mut h,
        Event::App(Update::Status(StatusView {
            home: Some("postern-relay://relay.example:443#pin".into()),
            connection: Connection::Connected,
            onion: true,
            hops: 3,
            directory_fetched: Some(UnixTime(NOW.millis() - 300_000)),
            cover_per_minute: 6,
            cover_sent: 42,
            awaiting_ack: 3,
            outbox: 1,
        })),
    );
    h.get_by_label("Connected");
    h.get_by_label("Home relay: relay.example:443");
    h.get_by_label("Onion routing: 3 hops");
    h.get_by_label("Relay directory: 5 min ago");
    h.get_by_label("Cover traffic: 6/min (42 sent)");
    h.get_by_label("Awaiting acknowledgement: 3 · Outbox: 1");
}

#[test]
fn failures_are_said_in_a_toast_and_attachments_show_progress_then_save() {
    let mut h = unlocked_with_bob(vec![MessageView {
        peer: bob(),
        id: [9; 16],
        outgoing: false,
        time: NOW,
        reply_to: None,
        body: BodyView::File {
            name: "report.pdf".into(),
            size: 15_000,
            chunks: (3, 10),
        },
        delivery: None,
    }]);
    h.get_by_label("Bob: file report.pdf, 15.0 KB, 12:00");
    h.get_by_label("3 of 10");
    assert!(h.query_by_label("Save as…").is_none());
    apply(
        &mut h,
        Event::App(Update::Progress {
            peer: bob(),
            id: [9; 16],
            done: 10,
            total: 10,
        }),
    );
    h.get_by_label("Save as…").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::Save { id, .. }] if *id == [9; 16]
    ));
    apply(
        &mut h,
        Event::App(Update::Failed(Failure {
            action: "send".to_owned(),
            reason: "relay: timed out".into(),
            kind: ErrorKind::Network,
        })),
    );
    h.get_by_label_contains("Could not send: relay: timed out");
}

#[test]
fn shortcuts_switch_conversations_open_search_and_lock() {
    let mut h = unlocked_with_bob(Vec::new());
    h.key_press(egui::Key::F1);
    h.run();
    h.get_by_label("Send the message");
    h.get_by_label("Close").click();
    h.run();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::L);
    h.run();
    assert!(matches!(commands(&mut h).as_slice(), [Command::Lock]));
    apply(
        &mut h,
        Event::Locked {
            keychain: true,
            reason: None,
        },
    );
    // Locking forgot the conversation.
    assert!(h.state().messages().is_empty() && h.state().contacts().is_empty());
    h.get_by_label("Unlock");
}

#[test]
fn ten_thousand_messages_draw_only_what_is_visible() {
    let many: Vec<MessageView> = (0..10_000u32)
        .map(|i| {
            let mut m = text(0, i % 2 == 0, &format!("message number {i}"), None);
            m.id[..4].copy_from_slice(&i.to_be_bytes());
            m
        })
        .collect();
    let h = unlocked_with_bob(many);
    // The newest is on screen (the list sticks to the bottom); the
    // oldest was never laid out.
    h.get_by_label_contains("message number 9999,");
    assert!(h.query_by_label_contains("message number 0,").is_none());
    let laid_out = h.query_all_by_role(Role::ListItem).count();
    assert!(laid_out < 200, "{laid_out} messages laid out");
}

#[test]
fn a_toast_goes_by_itself_and_an_error_stays_longer() {
    let mut h = unlocked_with_bob(Vec::new());
    apply(
        &mut h,
        Event::App(Update::ContactAdded {
            peer: bob(),
            name: "Bob".into(),
        }),
    );
    h.get_by_label("Bob is now a contact");
    // 0.25 s a step: gone after its 4 seconds.
    h.run_steps(20);
    assert!(h.query_by_label("Bob is now a contact").is_none());
    h.state_mut().apply(Event::ShellFailed("disk full".into()));
    h.run_steps(20);
    h.get_by_label("disk full");
    h.run_steps(16);
    assert!(h.query_by_label("disk full").is_none());
}

/// A file dropped on the window.
#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        Err("not read in this test".into())
    }
}

/// Types into a field found by its role and name (focus first, as a
/// click would).
fn type_into(h: &mut Harness<'_, App>, role: Role, name: &str, text: &str) {
    h.get_by_role_and_label(role, name).focus();
    h.run();
    h.get_by_role_and_label(role, name).type_text(text);
    h.run();
}

#[test]
fn the_passphrase_is_changed_only_with_the_current_one_and_a_backup_gets_its_own() {
    let mut h = unlocked_with_bob(vec![]);
    commands(&mut h);
    h.get_by_label("Settings").click();
    h.run();
    h.get_by_label("Change passphrase…").click();
    h.run();
    // Nothing typed: the button does nothing.
    h.get_by_role_and_label(Role::Button, "Change passphrase")
        .click();
    h.run();
    assert!(commands(&mut h).is_empty());
    type_into(
        &mut h,
        Role::PasswordInput,
        "New passphrase",
        "a new long passphrase",
    );
    type_into(
        &mut h,
        Role::PasswordInput,
        "Repeat the new passphrase",
        "a new long passphrase",
    );
    // Still refused without the current passphrase.
    h.get_by_role_and_label(Role::Button, "Change passphrase")
        .click();
    h.run();
    assert!(commands(&mut h).is_empty());
    type_into(
        &mut h,
        Role::PasswordInput,
        "Current passphrase",
        "the old one",
    );
    h.get_by_role_and_label(Role::Button, "Change passphrase")
        .click();
    h.run();
    match commands(&mut h).as_slice() {
        [Command::ChangePassphrase { current, new }] => {
            assert_eq!(current.as_str(), "the old one");
            assert_eq!(new.as_str(), "a new long passphrase");
        }
        other => panic!("{other:?}"),
    }
    // The dialog closed and took what was typed with it.
    assert!(h.query_by_label("Current passphrase").is_none());

    h.get_by_label("Settings").click();
    h.run();
    h.get_by_label("Export an encrypted backup…").click();
    h.run();
    type_into(
        &mut h,
        Role::PasswordInput,
        "Backup passphrase",
        "backup passphrase 1",
    );
    type_into(
        &mut h,
        Role::PasswordInput,
        "Repeat the backup passphrase",
        "backup passphrase 2",
    );
    h.get_by_label("The two passphrases differ");
    h.get_by_label("Export…").click();
    h.run();
    assert!(commands(&mut h).is_empty());
    h.get_by_role_and_label(Role::PasswordInput, "Repeat the backup passphrase")
        .focus();
    h.run();
    h.key_press(egui::Key::Backspace);
    h.run();
    h.get_by_role_and_label(Role::PasswordInput, "Repeat the backup passphrase")
        .type_text("1");
    h.run();
    h.get_by_label("Export…").click();
    h.run();
    match commands(&mut h).as_slice() {
        [Command::ExportBackup { passphrase }] => {
            assert_eq!(passphrase.as_str(), "backup passphrase 1");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn onboarding_can_restore_from_a_backup_picked_or_dropped() {
    let mut h = harness(App::default());
    apply(
        &mut h,
        Event::NoProfile {
            keychain: false,
            default_relay: None,
        },
    );
    h.get_by_label("Restore from a backup instead").click();
    h.run();
    h.get_by_label("Restore from a backup");
    type_into(
        &mut h,
        Role::PasswordInput,
        "Backup passphrase",
        "the backup's",
    );
    type_into(
        &mut h,
        Role::PasswordInput,
        "Passphrase",
        "this machine's passphrase",
    );
    type_into(
        &mut h,
        Role::PasswordInput,
        "Repeat the passphrase",
        "this machine's passphrase",
    );
    h.get_by_label("Choose the backup file and restore…")
        .click();
    h.run_steps(3);
    match commands(&mut h).as_slice() {
        [
            Command::Restore {
                from: None,
                backup_passphrase,
                passphrase: Some(p),
            },
        ] => {
            assert_eq!(backup_passphrase.as_str(), "the backup's");
            assert_eq!(p.as_str(), "this machine's passphrase");
        }
        other => panic!("{other:?}"),
    }
    h.get_by_label("Restoring…");
    apply(&mut h, Event::CreateFailed("Nothing was restored".into()));
    h.get_by_label("Nothing was restored");
    // A dropped backup file restores too.
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped("/tmp/x.postern-backup".into())));
    h.run_steps(3);
    match commands(&mut h).as_slice() {
        [Command::Restore { from: Some(p), .. }] => {
            assert_eq!(p, std::path::Path::new("/tmp/x.postern-backup"));
        }
        other => panic!("{other:?}"),
    }
    // Back to a new profile.
    apply(&mut h, Event::CreateFailed("wrong passphrase".into()));
    h.get_by_label("Create a new profile instead").click();
    h.run();
    h.get_by_label("Welcome to Postern");
}

#[test]
fn a_new_message_is_notified_once_without_its_content_unless_asked() {
    let mut h = unlocked_with_bob(vec![]);
    commands(&mut h);
    let carol = Address::from_bytes([0xC0; 16]);
    let mut from_carol = text(7, false, "the plan is on", None);
    from_carol.peer = carol;
    apply(&mut h, Event::App(Update::Message(from_carol.clone())));
    match commands(&mut h).as_slice() {
        [Command::Notify { title, body }] => {
            assert_eq!(title, "Postern");
            assert_eq!(body, "New message");
        }
        other => panic!("{other:?}"),
    }
    // Told again (an attachment completing): not notified twice.
    apply(&mut h, Event::App(Update::Message(from_carol)));
    assert!(commands(&mut h).is_empty());
    // Our own messages are not notified; nor is one in the conversation
    // being read in a focused window.
    apply(
        &mut h,
        Event::App(Update::Message(text(8, true, "ok", None))),
    );
    apply(
        &mut h,
        Event::App(Update::Message(text(9, false, "read now", None))),
    );
    assert!(
        !commands(&mut h)
            .iter()
            .any(|c| matches!(c, Command::Notify { .. }))
    );
    // With content: the sender's name and the text.
    h.state_mut().apply(Event::App(Update::Contacts(vec![
        contact("Bob", 0, false),
        ContactView {
            address: carol,
            ..contact("Carol", 1, false)
        },
    ])));
    let mut p = h.state().prefs().clone();
    p.notification_content = true;
    h.state_mut().set_prefs(p);
    let mut again = text(10, false, "meet at six", None);
    again.peer = carol;
    apply(&mut h, Event::App(Update::Message(again)));
    match commands(&mut h).as_slice() {
        [Command::Notify { title, body }] => {
            assert_eq!(title, "Carol");
            assert_eq!(body, "meet at six");
        }
        other => panic!("{other:?}"),
    }
    // Notifications off: none.
    let mut p = h.state().prefs().clone();
    p.notifications = false;
    h.state_mut().set_prefs(p);
    let mut quiet = text(11, false, "hello?", None);
    quiet.peer = carol;
    apply(&mut h, Event::App(Update::Message(quiet)));
    assert!(commands(&mut h).is_empty());
}

fn voice(id: u8, outgoing: bool) -> MessageView {
    MessageView {
        body: BodyView::Voice {
            duration_ms: 4_000,
            waveform: vec![10, 200, 90, 255, 0, 30],
            size: 12_000,
            chunks: (1, 1),
        },
        ..text(id, outgoing, "", None)
    }
}

#[test]
fn a_voice_message_is_recorded_with_a_level_meter_and_cancel_or_said_impossible() {
    let mut h = unlocked_with_bob(vec![]);
    commands(&mut h);
    h.get_by_label("Record voice message").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::Record { to }] if *to == bob()
    ));
    apply(
        &mut h,
        Event::Recording(Some(postern_ui::Recording {
            to: bob(),
            elapsed_ms: 3_200,
            level: 0.6,
        })),
    );
    h.get_by_label("Recording 0:03");
    h.get_by_label("Microphone level");
    // The text field gives way to the recording while it lasts.
    assert!(h.query_by_label("Message").is_none());
    h.get_by_label("Cancel recording").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::StopRecording { send: false }]
    ));
    apply(
        &mut h,
        Event::Recording(Some(postern_ui::Recording {
            to: bob(),
            elapsed_ms: 900,
            level: 0.1,
        })),
    );
    h.get_by_label("Send voice message").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::StopRecording { send: true }]
    ));
    apply(&mut h, Event::Recording(None));
    h.get_by_label("Message");

    // No microphone: said, and a clip file offered instead.
    apply(
        &mut h,
        Event::RecordingUnavailable("No microphone found".into()),
    );
    h.get_by_label_contains("No microphone found");
    h.get_by_label("Attach a voice clip…").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::Attach { to }] if *to == bob()
    ));
}

#[test]
fn a_voice_message_plays_pauses_and_seeks_from_the_keyboard() {
    let mut h = unlocked_with_bob(vec![voice(1, false)]);
    commands(&mut h);
    h.get_by_label("Bob: voice message, 0:04, 12:00");
    h.get_by_label("Play voice message").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::Play { peer, id }] if *peer == bob() && *id == [1; 16]
    ));
    apply(
        &mut h,
        Event::Playback(Some(postern_ui::Playback {
            id: [1; 16],
            position_ms: 1_000,
            duration_ms: 4_000,
            playing: true,
        })),
    );
    h.get_by_label("Pause voice message").click();
    h.run();
    assert!(matches!(commands(&mut h).as_slice(), [Command::Pause]));
    // The scrubber moves with the arrow keys, half a second a press.
    h.get_by_label("Position in the voice message").focus();
    h.run();
    h.key_press(egui::Key::ArrowRight);
    h.run();
    match commands(&mut h).as_slice() {
        [Command::Seek { ms }] => assert_eq!(*ms, 1_500),
        other => panic!("{other:?}"),
    }
    apply(&mut h, Event::Playback(None));
    assert!(h.query_by_label("Position in the voice message").is_none());
    h.get_by_label("Play voice message");
}

#[test]
fn the_lock_screen_switches_between_profiles_and_makes_new_ones() {
    let mut h = harness(App::default());
    apply(
        &mut h,
        Event::Profiles {
            names: vec!["Profile 1".into(), "Profile 2".into()],
            current: Some(1),
        },
    );
    apply(
        &mut h,
        Event::Locked {
            keychain: false,
            reason: None,
        },
    );
    h.get_by_role_and_label(Role::ComboBox, "Profile").click();
    h.run();
    h.get_by_label("Profile 1").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::SwitchProfile(0)]
    ));
    h.get_by_label("New profile").click();
    h.run();
    assert!(matches!(commands(&mut h).as_slice(), [Command::NewProfile]));
    // A new profile's onboarding can go back to the others.
    apply(
        &mut h,
        Event::Profiles {
            names: vec!["Profile 1".into(), "Profile 2".into()],
            current: None,
        },
    );
    apply(
        &mut h,
        Event::NoProfile {
            keychain: false,
            default_relay: None,
        },
    );
    h.get_by_label("A new profile");
    h.get_by_label("Back to my profiles").click();
    h.run();
    assert!(matches!(
        commands(&mut h).as_slice(),
        [Command::SwitchProfile(0)]
    ));
}

#[test]
fn onboarding_offers_home_relays_from_the_directory() {
    let mut h = harness(App::default());
    apply(
        &mut h,
        Event::NoProfile {
            keychain: false,
            default_relay: Some("postern-relay://127.0.0.1:7000#AAAA".into()),
        },
    );
    apply(
        &mut h,
        Event::Relays {
            choices: vec![
                "postern-relay://10.0.0.1:443#AAAA".into(),
                "postern-relay://10.0.0.2:443#BBBB".into(),
            ],
            suggested: 0,
        },
    );
    let label = "Home relay (from the network's signed directory)";
    h.get_by_role_and_label(Role::ComboBox, label).click();
    h.run();
    h.get_by_label("10.0.0.2:443").click();
    h.run();
    type_into(
        &mut h,
        Role::PasswordInput,
        "Passphrase",
        "a long enough passphrase",
    );
    type_into(
        &mut h,
        Role::PasswordInput,
        "Repeat the passphrase",
        "a long enough passphrase",
    );
    h.get_by_label("Create profile").click();
    h.run_steps(3);
    match commands(&mut h).as_slice() {
        [Command::Create { relay: Some(r), .. }] => {
            assert_eq!(r, "postern-relay://10.0.0.2:443#BBBB");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn remembering_the_key_is_offered_only_by_a_shell_that_can_and_shown_while_kept() {
    let locked = || Event::Locked {
        keychain: false,
        reason: None,
    };
    // A shell that never said it can (the desktop): no such box.
    let mut h = harness(App::default());
    apply(&mut h, locked());
    assert!(h.query_by_label_contains("Remember this browser").is_none());

    // The browser: the box is offered; ticked, the unlock asks to keep it.
    let mut h = harness(App::default());
    apply(&mut h, Event::Remember(false));
    apply(&mut h, locked());
    h.get_by_role_and_label(Role::PasswordInput, "Passphrase")
        .type_text("the passphrase");
    h.run();
    h.get_by_role_and_label(
        Role::CheckBox,
        "Remember this browser (no passphrase here next time)",
    )
    .click();
    h.run();
    h.get_by_role_and_label(Role::Button, "Unlock").click();
    h.run_steps(3);
    match commands(&mut h).as_slice() {
        [Command::UnlockRemembering(p)] => assert_eq!(p.as_str(), "the passphrase"),
        other => panic!("{other:?}"),
    }
    // (The spinner turns until the shell answers.)
    h.state_mut().apply(Event::Remember(true));
    apply(&mut h, Event::Unlocked);
    // Kept: the status area says so, and Settings can forget it.
    h.get_by_label_contains("Key kept by this browser");
    h.get_by_label("Settings").click();
    h.run();
    h.get_by_label("Forget this browser").click();
    h.run();
    assert!(
        commands(&mut h)
            .iter()
            .any(|c| matches!(c, Command::Forget))
    );
    apply(&mut h, Event::Remember(false));
    assert!(
        h.query_by_label_contains("Key kept by this browser")
            .is_none()
    );
}

#[test]
fn what_the_user_sends_is_shown_even_after_many_in_a_row_or_scrolled_up() {
    let many: Vec<MessageView> = (0..40u32)
        .map(|i| {
            let mut m = text(0, false, &format!("older {i}"), None);
            m.id[..4].copy_from_slice(&i.to_be_bytes());
            m
        })
        .collect();
    let mut h = unlocked_with_bob(many);
    // Scrolled far up: the newest is off screen.
    let row = h.get_by_label_contains("older 39,").rect().center();
    h.event(egui::Event::PointerMoved(row));
    for _ in 0..10 {
        h.event(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Point,
            delta: egui::vec2(0.0, 400.0),
            modifiers: egui::Modifiers::NONE,
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Wheel,
        });
        h.step();
    }
    // (The wheel scrolls smoothly: let it finish.)
    h.run_steps(80);
    assert!(h.query_by_label_contains("older 39,").is_none());
    // Twenty sent in a row, a frame apart: the last one is on screen.
    for i in 0..20u32 {
        let mut m = text(0, true, &format!("sent {i}"), Some(DeliveryState::Queued));
        m.id[..4].copy_from_slice(&(1000 + i).to_be_bytes());
        h.state_mut().apply(Event::App(Update::Message(m)));
        h.step();
    }
    h.run_steps(80);
    h.get_by_label_contains("sent 19,");
}
