//! Sending from the native app (not a test): the desktop app's real
//! worker, SQLCipher profile and client service on a local testnet of
//! three relays (mixing delay 0), its screens driven by AccessKit names.
//! The same workload as the browser's `tests/browser/bench.mjs`, so that
//! `bash scripts/bench-web` prints both in one run:
//!
//! - texts entered and sent one after the other, until every one is
//!   stored at the recipient's mailbox relay (its acknowledgement back
//!   through the onion network) and nothing waits in the outbox;
//! - a 1 MiB file, from the moment it is given to the app until every
//!   part is stored.
//!
//! `cargo build --release -p postern-relay -p postern-cli && cargo bench -p postern-desktop --bench send`.
//! Under `cargo test` (no `--bench` argument) it runs a tiny version.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Instant;

use egui::accesskit::Role;
use egui_kittest::kittest::{NodeT as _, Queryable};
use postern_app::ServiceConfig;
use postern_cli::harness::{Testnet, User};
use postern_core::crypto::kdf::KdfParams;
use postern_desktop::Config;

#[path = "../tests/support/mod.rs"]
mod support;
use support::*;

/// A message row's label once the mailbox relay has it.
fn acked(label: &str) -> bool {
    label.ends_with(", stored at their relay") || label.ends_with(", delivered")
}

/// Nothing left to send or to hear back about.
fn idle(h: &egui_kittest::Harness<'_, Lazy>) -> bool {
    h.query_all_by_label_contains("Awaiting acknowledgement: 0 · Outbox: 0")
        .next()
        .is_some()
}

fn labels(h: &egui_kittest::Harness<'_, Lazy>, part: &str) -> Vec<String> {
    h.query_all_by_label_contains(part)
        .filter_map(|n| {
            let a = n.accesskit_node();
            a.label().or_else(|| a.value())
        })
        .collect()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (texts, file_len) = if full { (20, 1 << 20) } else { (2, 16 << 10) };
    let relay_bin = binary("postern-relay");
    let postern = binary("postern");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let net = Testnet::start(&relay_bin, &dir.join("net"), 3, 0).unwrap();
    let bob = User::new(&postern, "Bob", &dir.join("bob"));
    bob.ok(&["init", "--name", "Bob", "--relay", &net.relays[1]])
        .unwrap();
    bob.ok(&["network", "--authority", &net.authority]).unwrap();

    // The app as it ships: the default service settings; only the key
    // derivation is cheap (it is not what is measured here).
    // No auto-lock: the harness's clock runs a quarter second a step.
    std::fs::create_dir_all(dir.join("ada")).unwrap();
    std::fs::write(
        dir.join("ada").join(postern_desktop::worker::PREFS_FILE),
        "auto_lock_minutes = 0\nnotifications = false\n",
    )
    .unwrap();
    let mut h = harness_for(Config {
        profile: dir.join("ada"),
        root: None,
        relay: Some(net.relays[0].clone()),
        authorities: vec![net.authority.clone()],
        hops: 3,
        downloads: Some(dir.join("downloads")),
        connector: postern_net::Connector::default(),
        service: ServiceConfig::default(),
        kdf: KdfParams::TEST_ONLY,
        microphone: Some("null".to_owned()),
        speaker: Some("null".to_owned()),
    });
    onboard(&mut h, "Ada", PASSPHRASE);
    invite(&mut h, &bob);
    bob.ok(&["send", "Ada", "hi"]).unwrap();
    wait_label(&mut h, "Bob", 120);
    open_contact(&mut h, "Bob");
    wait_label(&mut h, "Bob: hi", 120);

    // Texts: each put in the field at once and sent with Enter.
    let t = Instant::now();
    for i in 0..texts {
        type_into(
            &mut h,
            Role::MultilineTextInput,
            "Message",
            &format!("bench text {i}"),
        );
        h.key_press(egui::Key::Enter);
        h.run_steps(1);
    }
    let entered = t.elapsed();
    let last = format!("bench text {}", texts - 1);
    wait(&mut h, "every text stored", 300, |h| {
        idle(h)
            && labels(h, &last).iter().any(|l| acked(l))
            && labels(h, "You: bench text").iter().all(|l| acked(l))
    });
    let secs = t.elapsed().as_secs_f64();

    // A file, given to the app as a file dropped on the window.
    let file = dir.join("one-mib.bin");
    let bytes: Vec<u8> = (0..file_len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let t = Instant::now();
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(file.clone())));
    h.run_steps(1);
    wait(&mut h, "the file stored", 600, |h| {
        idle(h) && labels(h, "one-mib.bin").iter().any(|l| acked(l))
    });
    let file_secs = t.elapsed().as_secs_f64();

    println!("native (desktop app, release, over 3 relays):");
    println!(
        "  texts: {texts} sent until all stored: {secs:.1} s, {:.2} texts/s (entering them took {:.1} s)",
        f64::from(texts) / secs,
        entered.as_secs_f64()
    );
    println!(
        "  {} KiB file sent until stored: {file_secs:.1} s",
        file_len >> 10
    );
    drop(h);
    drop(net);
}
