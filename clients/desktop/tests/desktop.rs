//! The desktop app's screens driven by their AccessKit names, against
//! the real worker (SQLCipher profile, client service, tokio links) and a
//! real `postern-relay testnet` on 127.0.0.1, with a `postern` CLI user
//! on the other side. The harness renders no pixels; the real-window
//! test (`window.rs`) does.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable};
use postern_app::ServiceConfig;
use postern_cli::harness::{self, Testnet, User};
use postern_core::crypto::kdf::KdfParams;
use postern_desktop::Config;

mod support;
use support::*;

fn desktop(profile: &Path, net: &Testnet, downloads: &Path) -> Harness<'static, Lazy> {
    desktop_with(profile, net, downloads, "null")
}

/// A desktop whose microphone and speaker are the sound device `audio`
/// (ALSA's `null` needs no sound card).
fn desktop_with(
    profile: &Path,
    net: &Testnet,
    downloads: &Path,
    audio: &str,
) -> Harness<'static, Lazy> {
    let cfg = Config {
        profile: profile.to_path_buf(),
        root: None,
        relay: Some(net.relays[0].clone()),
        authorities: vec![net.authority.clone()],
        hops: 3,
        downloads: Some(downloads.to_path_buf()),
        connector: postern_net::Connector::default(),
        service: ServiceConfig {
            ack_timeout_ms: 1_500,
            cover_per_minute: 6,
            others_poll: Duration::from_secs(2),
        },
        kdf: KdfParams::TEST_ONLY,
        microphone: Some(audio.to_owned()),
        speaker: Some(audio.to_owned()),
    };
    harness_for(cfg)
}

/// A desktop whose profiles live under `root` (switched on the lock
/// screen).
fn desktop_in(root: &Path, net: &Testnet) -> Harness<'static, Lazy> {
    let cfg = Config {
        profile: PathBuf::new(),
        root: Some(root.to_path_buf()),
        relay: Some(net.relays[0].clone()),
        authorities: vec![net.authority.clone()],
        hops: 3,
        downloads: None,
        connector: postern_net::Connector::default(),
        service: ServiceConfig {
            ack_timeout_ms: 1_500,
            cover_per_minute: 6,
            others_poll: Duration::from_secs(2),
        },
        kdf: KdfParams::TEST_ONLY,
        microphone: Some("null".to_owned()),
        speaker: Some("null".to_owned()),
    };
    harness_for(cfg)
}

/// Settings, "Change passphrase…", the current one and a new one typed
/// twice, then the button.
fn change_passphrase(h: &mut Harness<'_, Lazy>, current: &str, new: &str) {
    h.get_by_label("Settings").click();
    // A new dialog takes clicks once it has been drawn in full.
    h.run_steps(5);
    h.get_by_label("Change passphrase…").click();
    h.run_steps(2);
    type_into(h, Role::PasswordInput, "Current passphrase", current);
    type_into(h, Role::PasswordInput, "New passphrase", new);
    type_into(h, Role::PasswordInput, "Repeat the new passphrase", new);
    h.get_by_role_and_label(Role::Button, "Change passphrase")
        .click();
}

#[test]
fn a_desktop_user_and_a_cli_user_invite_talk_exchange_files_and_the_profile_locks() {
    let relay_bin = binary("postern-relay");
    let postern = binary("postern");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let net = Testnet::start(&relay_bin, &dir.join("net"), 3, 0).unwrap();
    let bob =
        User::new(&postern, "Bob", &dir.join("bob")).with_env("POSTERN_ACK_TIMEOUT_MS", "1500");
    bob.ok(&["init", "--name", "Bob", "--relay", &net.relays[1]])
        .unwrap();
    bob.ok(&["network", "--authority", &net.authority]).unwrap();

    // Onboarding: a passphrase profile on the network's first relay.
    let downloads = dir.join("downloads");
    let mut h = desktop(&dir.join("alice"), &net, &downloads);
    // Home relays come from the network's signed directory; Alice picks
    // the third.
    let label = "Home relay (from the network's signed directory)";
    wait_label(&mut h, label, 30);
    h.get_by_role_and_label(Role::ComboBox, label).click();
    h.run_steps(3);
    let hosts: Vec<String> = net
        .relays
        .iter()
        .map(|r| {
            let a = r.strip_prefix("postern-relay://").unwrap();
            a.split('#').next().unwrap().to_owned()
        })
        .collect();
    for host in &hosts {
        assert!(
            h.query_all_by_label(host).next().is_some(),
            "{host} offered"
        );
    }
    h.get_all_by_label(&hosts[2]).last().unwrap().click();
    h.run_steps(3);
    onboard(&mut h, "Alice", PASSPHRASE);
    wait_label(&mut h, &format!("Home relay: {}", hosts[2]), 30);
    // The profile is private to its owner.
    for f in std::fs::read_dir(dir.join("alice")).unwrap() {
        let f = f.unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&f.metadata().unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "{:?} is {mode:o}", f.path());
    }

    // Alice invites; Bob (CLI) accepts the link she shows.
    invite(&mut h, &bob);
    bob.ok(&["send", "Alice", "hello from the terminal"])
        .unwrap();

    // Alice's window hears of the new contact and the message by itself.
    wait_label(&mut h, "Bob", 60);
    open_contact(&mut h, "Bob");
    wait_label(&mut h, "Bob: hello from the terminal", 60);

    // She answers; Bob collects it, his receipt comes back: delivered.
    type_into(
        &mut h,
        Role::MultilineTextInput,
        "Message",
        "hello from the window",
    );
    h.key_press(egui::Key::Enter);
    wait_label(&mut h, "You: hello from the window", 10);
    wait(&mut h, "Bob collects and confirms", 90, |h| {
        let _ = bob.ok(&["sync"]);
        h.query_all_by_label_contains("hello from the window")
            .filter_map(|n| n.accesskit_node().label())
            .any(|l| l.ends_with(", delivered"))
    });

    // Bob sends a photo, a file and a voice clip; Alice sees each.
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("photo.png"), harness::sample_png()).unwrap();
    let report: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(files.join("report.bin"), &report).unwrap();
    std::fs::write(files.join("clip.ogg"), harness::sample_voice_clip()).unwrap();
    bob.ok(&[
        "send-file",
        "Alice",
        files.join("photo.png").to_str().unwrap(),
    ])
    .unwrap();
    bob.ok(&[
        "send-file",
        "Alice",
        files.join("report.bin").to_str().unwrap(),
    ])
    .unwrap();
    bob.ok(&[
        "send-file",
        "--voice",
        "Alice",
        files.join("clip.ogg").to_str().unwrap(),
    ])
    .unwrap();
    wait_label(&mut h, "Bob: photo", 90);
    wait_label(&mut h, "Bob: file report.bin", 90);
    wait_label(&mut h, "Bob: voice message, 0:02", 90);
    h.get_by_label("Photo");
    // Saved once complete: the file's bytes, checked, in the downloads.
    wait(&mut h, "the file complete", 90, |h| {
        h.query_all_by_label("Save as…").count() >= 3
    });
    let saves = h.get_all_by_label("Save as…").count();
    assert_eq!(saves, 3);
    h.get_all_by_label("Save as…").nth(1).unwrap().click();
    wait(&mut h, "the file saved", 20, |_| {
        downloads.join("report.bin").exists()
    });
    assert_eq!(std::fs::read(downloads.join("report.bin")).unwrap(), report);

    // Bob's voice message plays: a scrubber appears while it is loaded.
    h.get_by_label("Play voice message").click();
    wait_label(&mut h, "Position in the voice message", 30);

    // Alice records one and sends it; Bob receives a valid clip.
    h.get_by_label("Record voice message").click();
    wait_label(&mut h, "Microphone level", 10);
    wait_label(&mut h, "Recording 0:0", 10);
    h.get_by_label("Send voice message").click();
    wait_label(&mut h, "You: voice message", 30);
    let bob_voice = dir.join("bob-voice");
    wait(&mut h, "Bob receives the recorded clip", 90, |_| {
        let _ = bob.ok(&["sync", "--downloads", bob_voice.to_str().unwrap()]);
        std::fs::read_dir(&bob_voice).is_ok_and(|d| {
            d.filter_map(Result::ok).any(|e| {
                e.path().extension().is_some_and(|x| x == "ogg")
                    && postern_media::voice::validate_voice_clip(&std::fs::read(e.path()).unwrap())
                        .is_ok()
            })
        })
    });

    // A file dropped on the window goes to Bob.
    let notes: Vec<u8> = (0..5_000u32).map(|i| (i % 97) as u8).collect();
    std::fs::write(files.join("notes.txt"), &notes).unwrap();
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(files.join("notes.txt"))));
    wait_label(&mut h, "You: file notes.txt", 30);
    let bob_dl = dir.join("bob-downloads");
    wait(&mut h, "Bob receives the dropped file", 90, |_| {
        let _ = bob.ok(&["sync", "--downloads", bob_dl.to_str().unwrap()]);
        bob_dl.join("notes.txt").exists()
    });
    assert_eq!(std::fs::read(bob_dl.join("notes.txt")).unwrap(), notes);

    // The privacy state is on screen.
    h.get_by_label("Onion routing: 3 hops");
    h.get_by_label_contains("Cover traffic: 6/min");

    // Lock: everything decrypted is gone; a wrong passphrase is refused;
    // the right one brings the conversation back.
    h.get_by_label("Lock").click();
    wait_label(&mut h, "Postern is locked", 30);
    assert!(h.query_by_label_contains("hello from the window").is_none());
    type_into(
        &mut h,
        Role::PasswordInput,
        "Passphrase",
        "not the passphrase",
    );
    h.key_press(egui::Key::Enter);
    wait_label(&mut h, "Wrong passphrase", 30);
    type_into(&mut h, Role::PasswordInput, "Passphrase", PASSPHRASE);
    h.key_press(egui::Key::Enter);
    wait_label(&mut h, "New invitation", 30);
    wait_label(&mut h, "Bob", 30);
    open_contact(&mut h, "Bob");
    wait_label(&mut h, "You: hello from the window", 30);

    // A new passphrase, only with the current one.
    change_passphrase(&mut h, "not it", "a brand new passphrase");
    wait_label(
        &mut h,
        "The current passphrase is wrong: nothing changed",
        30,
    );
    change_passphrase(&mut h, PASSPHRASE, "a brand new passphrase");
    wait_label(&mut h, "The passphrase is changed", 30);
    h.get_by_label("Lock").click();
    wait_label(&mut h, "Postern is locked", 30);
    type_into(&mut h, Role::PasswordInput, "Passphrase", PASSPHRASE);
    h.key_press(egui::Key::Enter);
    wait_label(&mut h, "Wrong passphrase", 30);
    type_into(
        &mut h,
        Role::PasswordInput,
        "Passphrase",
        "a brand new passphrase",
    );
    h.key_press(egui::Key::Enter);
    wait_label(&mut h, "New invitation", 30);

    // An encrypted backup, written to the downloads directory.
    h.get_by_label("Settings").click();
    // A new dialog takes clicks once it has been drawn in full.
    h.run_steps(5);
    h.get_by_label("Export an encrypted backup…").click();
    h.run_steps(2);
    type_into(
        &mut h,
        Role::PasswordInput,
        "Backup passphrase",
        "backup passphrase",
    );
    type_into(
        &mut h,
        Role::PasswordInput,
        "Repeat the backup passphrase",
        "backup passphrase",
    );
    h.get_by_label("Export…").click();
    wait_label(&mut h, ".postern-backup", 60);
    let backup = std::fs::read_dir(&downloads)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "postern-backup"))
        .expect("the backup file");
    let bytes = std::fs::read(&backup).unwrap();
    assert!(bytes.starts_with(postern_core::backup::MAGIC));
    assert!(!bytes.windows(21).any(|w| w == b"hello from the window"));
    drop(h);

    // Restored on "another machine": a wrong backup passphrase is refused
    // and leaves no profile; the right one brings back the contact and
    // the conversation.
    let mut h2 = desktop_with(
        &dir.join("alice-restored"),
        &net,
        &dir.join("dl2"),
        "no-such-device",
    );
    wait_label(&mut h2, "Welcome to Postern", 20);
    // The home relays from the directory come in a moment later and move
    // the widgets below them: wait for them before clicking.
    wait_label(
        &mut h2,
        "Home relay (from the network's signed directory)",
        30,
    );
    h2.run_steps(2);
    h2.get_by_label("Restore from a backup instead").click();
    h2.run_steps(2);
    type_into(&mut h2, Role::PasswordInput, "Backup passphrase", "backup");
    type_into(
        &mut h2,
        Role::PasswordInput,
        "Passphrase",
        "another machine's passphrase",
    );
    type_into(
        &mut h2,
        Role::PasswordInput,
        "Repeat the passphrase",
        "another machine's passphrase",
    );
    h2.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(backup.clone())));
    wait_label(&mut h2, "Cannot restore: the passphrase is wrong", 60);
    assert!(
        !dir.join("alice-restored")
            .join(postern_store::HEADER_FILE)
            .exists()
    );
    type_into(
        &mut h2,
        Role::PasswordInput,
        "Backup passphrase",
        " passphrase",
    );
    h2.input_mut().dropped_files.push(Arc::new(Dropped(backup)));
    wait_label(&mut h2, "New invitation", 60);
    wait_label(&mut h2, "Bob", 30);
    open_contact(&mut h2, "Bob");
    wait_label(&mut h2, "You: hello from the window", 30);
    wait_label(&mut h2, "Bob: hello from the terminal", 30);
    // Without a microphone, recording says so and offers a clip instead.
    h2.get_by_label("Record voice message").click();
    wait_label(&mut h2, "No microphone found", 10);
    h2.get_by_label("Attach a voice clip…");

    drop(h2);
    drop(net);
}

/// Reads a PNG as the image a paste (Ctrl+V) hands egui.
fn pasted_png(path: &Path) -> egui::Event {
    let img = image::open(path).unwrap().to_rgba8();
    let size = [img.width() as usize, img.height() as usize];
    egui::Event::PasteImage(Arc::new(egui::ColorImage::from_rgba_unmultiplied(
        size,
        img.as_raw(),
    )))
}

/// The "k of n" of the progress bars shown.
fn progress(h: &Harness<'_, Lazy>) -> Vec<(usize, usize)> {
    h.query_all_by_role(Role::ProgressIndicator)
        .filter_map(|n| {
            let a = n.accesskit_node();
            let text = a.label().or_else(|| a.value())?;
            let (k, n) = text.split_once(" of ")?;
            Some((k.trim().parse().ok()?, n.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn a_scanned_code_verifies_and_a_large_file_shows_progress_and_resumes_after_a_restart() {
    let relay_bin = binary("postern-relay");
    let postern = binary("postern");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let net = Testnet::start(&relay_bin, &dir.join("net"), 3, 0).unwrap();
    let bob =
        User::new(&postern, "Bob", &dir.join("bob")).with_env("POSTERN_ACK_TIMEOUT_MS", "1500");
    bob.ok(&["init", "--name", "Bob", "--relay", &net.relays[1]])
        .unwrap();
    bob.ok(&["network", "--authority", &net.authority]).unwrap();
    // Profiles under a data directory, as the app runs by default.
    let root = dir.join("data");
    let alice_dir = root.join("profile-1");
    let mut h = desktop_in(&root, &net);
    onboard(&mut h, "Alice", PASSPHRASE);
    assert!(postern_store::key_source_of(&alice_dir).is_ok());
    invite(&mut h, &bob);
    bob.ok(&["send", "Alice", "scan my code"]).unwrap();
    wait_label(&mut h, "Bob", 60);
    open_contact(&mut h, "Bob");
    wait_label(&mut h, "Bob: scan my code", 60);

    // Verify by scanning: Bob's safety-number QR code, as a picture
    // pasted into the safety-number dialog.
    h.get_by_label("Safety number").click();
    wait_label(&mut h, "Scan their code from an image…", 30);
    let code = dir.join("bob-code.png");
    bob.ok(&["verify", "Alice", "--png", code.to_str().unwrap()])
        .unwrap();
    h.input_mut().events.push(pasted_png(&code));
    wait_label(&mut h, "Bob is verified", 30);
    h.get_by_label("Close").click();
    h.run_steps(3);
    assert!(h.query_by_label("Not verified").is_none());

    // A file of several chunks: its progress bar moves while it goes out.
    let big: Vec<u8> = (0..420_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("big.bin"), &big).unwrap();
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(files.join("big.bin"))));
    wait_label(&mut h, "You: file big.bin", 30);
    // The bar moves; the app is closed while it does (closing does not
    // wait for the network), the rest still to go.
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    wait(&mut h, "the bar to move", 120, |h| {
        let mut seen = seen.borrow_mut();
        seen.extend(progress(h).into_iter().filter(|(k, n)| (1..*n).contains(k)));
        seen.len() >= 2
    });
    let seen = seen.into_inner();
    let total = seen.first().unwrap().1;
    assert!(
        seen.iter().all(|(_, n)| *n == total) && total >= 5,
        "{seen:?}"
    );
    // The app closes in the middle; opened again, the transfer goes on
    // from where it was and Bob gets the whole file.
    drop(h);
    {
        use postern_core::KvStore as _;
        let p = postern_store::Profile::open(
            &alice_dir,
            postern_store::Unlock::Passphrase(PASSPHRASE.as_bytes()),
        )
        .unwrap();
        let left = p.outbox().unwrap().len();
        assert!(left >= 1, "the transfer was not interrupted");
    }
    let mut h = desktop_in(&root, &net);
    wait_label(&mut h, "Postern is locked", 20);
    type_into(&mut h, Role::PasswordInput, "Passphrase", PASSPHRASE);
    h.key_press(egui::Key::Enter);
    wait_label(&mut h, "Bob", 30);
    open_contact(&mut h, "Bob");
    wait_label(&mut h, "You: file big.bin", 30);
    let bob_dl = dir.join("bob-downloads");
    wait(&mut h, "Bob receives the whole file", 180, |_| {
        let _ = bob.ok(&["sync", "--downloads", bob_dl.to_str().unwrap()]);
        bob_dl.join("big.bin").exists()
    });
    assert_eq!(std::fs::read(bob_dl.join("big.bin")).unwrap(), big);

    // A second profile on the same device, with its own identity and
    // lock: one's passphrase does not open the other.
    h.get_by_label("Lock").click();
    wait_label(&mut h, "Postern is locked", 30);
    h.get_by_label("New profile").click();
    wait_label(&mut h, "A new profile", 20);
    type_into(
        &mut h,
        Role::TextInput,
        "Your name (only your contacts see it)",
        "Carol",
    );
    type_into(
        &mut h,
        Role::PasswordInput,
        "Passphrase",
        "carol's own passphrase",
    );
    type_into(
        &mut h,
        Role::PasswordInput,
        "Repeat the passphrase",
        "carol's own passphrase",
    );
    h.get_by_label("Create profile").click();
    wait_label(&mut h, "New invitation", 30);
    assert!(h.query_by_label_contains("Bob").is_none());
    assert!(postern_store::key_source_of(&root.join("profile-2")).is_ok());
    h.get_by_label("Lock").click();
    wait_label(&mut h, "Postern is locked", 30);
    h.get_by_role_and_label(Role::ComboBox, "Profile").click();
    h.run_steps(3);
    h.get_by_label("Profile 1").click();
    // The switch is done when the lock screen names the profile.
    wait(&mut h, "profile 1's lock screen", 30, |h| {
        h.query_by_role_and_label(Role::ComboBox, "Profile")
            .is_some_and(|n| n.accesskit_node().value().as_deref() == Some("Profile 1"))
    });
    type_into(
        &mut h,
        Role::PasswordInput,
        "Passphrase",
        "carol's own passphrase",
    );
    h.key_press(egui::Key::Enter);
    wait_label(&mut h, "Wrong passphrase", 30);
    type_into(&mut h, Role::PasswordInput, "Passphrase", PASSPHRASE);
    h.key_press(egui::Key::Enter);
    wait_label(&mut h, "Bob", 30);

    // Bob resets his keys and gives Alice a new invitation: opening it
    // shows the blocking key-change warning; nothing is sent until she
    // accepts the new key, then they talk again.
    bob.ok(&["reset-keys", "--yes"]).unwrap();
    let link = harness::link_in(&bob.ok(&["invite", "--quiet"]).unwrap()).unwrap();
    h.get_by_label("Accept invitation").click();
    h.run_steps(5);
    type_into(&mut h, Role::TextInput, "Invitation link", &link);
    h.get_by_label("Accept").click();
    wait_label(&mut h, "Bob's safety number changed", 60);
    // The composer is gone: nothing can be typed or sent to Bob.
    assert!(
        h.query_by_role_and_label(Role::MultilineTextInput, "Message")
            .is_none()
    );
    h.get_by_label("Accept the new key").click();
    wait_label(&mut h, "Bob's new key is accepted", 60);
    type_into(&mut h, Role::MultilineTextInput, "Message", "still you?");
    h.key_press(egui::Key::Enter);
    wait_label(&mut h, "You: still you?", 30);
    wait(&mut h, "Bob reads Alice under his new key", 90, |_| {
        bob.ok(&["sync"]).is_ok_and(|o| o.contains("still you?"))
    });
    bob.ok(&["send", "Alice", "yes, new keys"]).unwrap();
    wait_label(&mut h, "Bob: yes, new keys", 60);
    drop(h);
    drop(net);
}
