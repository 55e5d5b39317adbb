//! What the desktop tests and the sending benchmark share: the app in an
//! `egui_kittest` harness, driven by AccessKit names.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable};
use postern_cli::harness::{self, User};
use postern_desktop::{Config, Desktop};

/// The desktop state, made on the first frame (its worker needs the
/// harness's egui context to wake it).
pub struct Lazy {
    pub cfg: Option<Config>,
    pub desktop: Option<Desktop>,
}

impl Lazy {
    pub fn frame(&mut self, ui: &mut egui::Ui) {
        if self.desktop.is_none()
            && let Some(cfg) = self.cfg.take()
        {
            self.desktop = Some(Desktop::new(ui.ctx(), cfg).unwrap());
        }
        if let Some(d) = &mut self.desktop {
            d.frame(ui);
        }
    }
}

pub fn binary(name: &str) -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let bin = harness::sibling_binary(&me, name);
    assert!(bin.exists(), "build {name} first (cargo build --workspace)");
    bin
}

pub fn harness_for(cfg: Config) -> Harness<'static, Lazy> {
    Harness::builder()
        .with_size([1200.0, 800.0])
        .build_ui_state(
            |ui, s: &mut Lazy| s.frame(ui),
            Lazy {
                cfg: Some(cfg),
                desktop: None,
            },
        )
}

/// Steps the window until `cond` holds (the worker wakes it as things
/// happen); fails after `secs`.
pub fn wait(
    h: &mut Harness<'_, Lazy>,
    what: &str,
    secs: u64,
    cond: impl Fn(&Harness<'_, Lazy>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        h.run_steps(1);
        if cond(h) {
            return;
        }
        if Instant::now() >= deadline {
            let shown: Vec<String> = h
                .query_all_by_label_contains("")
                .filter_map(|n| {
                    let a = n.accesskit_node();
                    a.label().or_else(|| a.value())
                })
                .collect();
            panic!("timed out waiting for {what}; the window shows {shown:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn wait_label(h: &mut Harness<'_, Lazy>, label: &str, secs: u64) {
    wait(h, label, secs, |h| {
        h.query_all_by_label_contains(label).next().is_some()
    });
}

/// Clicks the contact row whose name starts with `name`.
pub fn open_contact(h: &mut Harness<'_, Lazy>, name: &str) {
    h.get_all_by_label_contains(name)
        .find(|n| n.accesskit_node().role() == Role::Button)
        .expect("a contact row")
        .click();
    h.run_steps(2);
}

pub fn type_into(h: &mut Harness<'_, Lazy>, role: Role, label: &str, text: &str) {
    wait(h, label, 10, |h| {
        h.query_by_role_and_label(role, label).is_some()
    });
    h.get_by_role_and_label(role, label).focus();
    h.run_steps(2);
    h.get_by_role_and_label(role, label).type_text(text);
    h.run_steps(2);
}

pub const PASSPHRASE: &str = "correct horse battery staple";

/// Creates a passphrase profile called `name` on the onboarding screen.
pub fn onboard(h: &mut Harness<'_, Lazy>, name: &str, passphrase: &str) {
    wait_label(h, "Welcome to Postern", 20);
    // The directory's relays arrive a moment later and move what is below.
    wait_label(h, "Home relay (from the network's signed directory)", 30);
    type_into(
        h,
        Role::TextInput,
        "Your name (only your contacts see it)",
        name,
    );
    type_into(h, Role::PasswordInput, "Passphrase", passphrase);
    type_into(h, Role::PasswordInput, "Repeat the passphrase", passphrase);
    h.get_by_label("Create profile").click();
    wait_label(h, "New invitation", 30);
}

/// Shows a new invitation and has `who` (a CLI user) accept its link.
pub fn invite(h: &mut Harness<'_, Lazy>, who: &User) {
    h.get_by_label("New invitation").click();
    wait_label(h, "Copy link", 30);
    let link = {
        let n = h.get_by_label_contains("postern:");
        let a = n.accesskit_node();
        a.label().or_else(|| a.value()).unwrap()
    };
    h.get_by_label("Done").click();
    h.run_steps(2);
    who.ok(&["accept", &link]).unwrap();
}

/// A file dropped on the window.
#[derive(Debug)]
pub struct Dropped(pub PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}
