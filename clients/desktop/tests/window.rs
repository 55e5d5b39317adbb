//! The desktop app in a real window: an X server of its own (Xvfb), the
//! real eframe window and renderer, driven through real pointer and key
//! events aimed at widgets found by their AccessKit names, against a real
//! `postern-relay testnet` and a `postern` CLI user. A text, a photo, a
//! file and a voice clip go both ways; screenshots of the main screens are
//! written as PNG, checked non-blank and different from one step to the
//! next.
//!
//! The test re-runs itself as a child process with `DISPLAY` pointing at
//! its Xvfb (this binary has no test harness: `main` below), so nothing of
//! the session's own display is used. `POSTERN_SCREENSHOTS=DIR` keeps the
//! screenshots there (the README's come from it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egui::accesskit::Role;
use postern_app::ServiceConfig;
use postern_cli::harness::{self, Testnet, User};
use postern_core::crypto::kdf::KdfParams;
use postern_desktop::{Config, Desktop};

const CHILD: &str = "POSTERN_WINDOW_TEST_CHILD";
const SHOTS: &str = "POSTERN_SCREENSHOTS";

fn main() -> ExitCode {
    if std::env::var_os(CHILD).is_some() {
        child();
        return ExitCode::SUCCESS;
    }
    parent()
}

/// Starts Xvfb on a free display, runs the test as a child on it, then
/// checks the screenshots.
fn parent() -> ExitCode {
    let keep = std::env::var_os(SHOTS).map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let shots = keep.clone().unwrap_or_else(|| tmp.path().join("shots"));
    std::fs::create_dir_all(&shots).unwrap();
    let mut xvfb = match Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("Xvfb is needed (apt-get install xvfb): {e}"),
    };
    let mut line = String::new();
    std::io::BufReader::new(xvfb.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let display = format!(":{}", line.trim());
    let status = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .env(SHOTS, &shots)
        .status()
        .unwrap();
    let _ = xvfb.kill();
    let _ = xvfb.wait();
    assert!(status.success(), "the window test failed ({status})");
    check_screenshots(&shots);
    println!("window test passed: screenshots in {}", shots.display());
    ExitCode::SUCCESS
}

/// Every screenshot shows something (many colours, not one flat fill),
/// and each differs from the one before it.
fn check_screenshots(dir: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "only {} screenshots", files.len());
    let mut previous: Option<Vec<u8>> = None;
    for f in &files {
        let img = image::open(f).unwrap().to_rgba8();
        assert!(
            img.width() >= 900 && img.height() >= 600,
            "{f:?} is {}x{}",
            img.width(),
            img.height()
        );
        let mut colours = std::collections::BTreeSet::new();
        for p in img.pixels().step_by(7) {
            colours.insert(p.0);
            if colours.len() > 64 {
                break;
            }
        }
        assert!(
            colours.len() > 64,
            "{f:?} is (nearly) blank: {} colours",
            colours.len()
        );
        let raw = img.into_raw();
        if let Some(prev) = &previous {
            assert!(
                prev != &raw,
                "{f:?} is the same as the screenshot before it"
            );
        }
        previous = Some(raw);
    }
}

/// What the script asks the window to do.
enum Cmd {
    /// Click the widget with this name (exact, or the first containing it).
    Click(String),
    /// Type text (into the focused widget).
    Type(String),
    /// Press a key.
    Key(egui::Key),
    /// Drop a file on the window.
    Drop(PathBuf),
    /// Wait until a widget with a name containing this shows.
    Wait(String, Duration),
    /// The value or name of the first widget whose text contains this.
    Text(String),
    /// Save a screenshot.
    Shot(PathBuf),
    /// Close the window.
    Close,
}

/// The window's answer.
type Ack = Result<String, String>;

#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// A widget as AccessKit describes it.
#[derive(Clone, Debug)]
struct Widget {
    name: String,
    role: Role,
    rect: egui::Rect,
}

/// The desktop app, with a hand on its input: it finds widgets in the
/// AccessKit tree egui builds each frame and sends the window the same
/// pointer and key events a user's hand would.
struct Auto {
    desktop: Desktop,
    cmds: mpsc::Receiver<Cmd>,
    acks: mpsc::Sender<Ack>,
    current: Option<(Cmd, Instant)>,
    inject: Vec<egui::Event>,
    drop: Vec<PathBuf>,
    widgets: Vec<Widget>,
    shot: Arc<Mutex<Option<Arc<egui::ColorImage>>>>,
    shot_to: Option<PathBuf>,
    frames_since_input: u32,
}

impl Auto {
    /// The widget named `name` (else the first whose name contains it);
    /// of a label and the input it names, the input.
    fn find(&self, name: &str) -> Option<Widget> {
        let pick = |exact: bool| {
            let mut hits: Vec<&Widget> = self
                .widgets
                .iter()
                .filter(|w| {
                    if exact {
                        w.name == name
                    } else {
                        w.name.contains(name)
                    }
                })
                .collect();
            hits.sort_by_key(|w| match w.role {
                Role::Button
                | Role::TextInput
                | Role::PasswordInput
                | Role::MultilineTextInput
                | Role::CheckBox
                | Role::Slider => 0,
                Role::Label | Role::TextRun | Role::Unknown => 2,
                _ => 1,
            });
            hits.first().map(|w| (*w).clone())
        };
        pick(true).or_else(|| pick(false))
    }

    fn read_tree(&mut self, ctx: &egui::Context) {
        // AccessKit bounds are egui points, as pointer events are. An
        // input named by a label (`labelled_by`) takes the label's text.
        self.widgets = ctx.viewport(|vp| {
            let Some(s) = vp.this_pass.accesskit_state.as_ref() else {
                return Vec::new();
            };
            let by_id: std::collections::HashMap<egui::accesskit::NodeId, String> = s
                .nodes
                .iter()
                .filter_map(|(id, n)| {
                    Some((id.accesskit_id(), n.label().or(n.value())?.to_owned()))
                })
                .collect();
            s.nodes
                .values()
                .filter_map(|n| {
                    let name = n
                        .label()
                        .map(str::to_owned)
                        .or_else(|| n.labelled_by().iter().find_map(|l| by_id.get(l).cloned()))
                        .or_else(|| n.value().map(str::to_owned))?;
                    let b = n.bounds()?;
                    let rect = egui::Rect::from_min_max(
                        egui::pos2(b.x0 as f32, b.y0 as f32),
                        egui::pos2(b.x1 as f32, b.y1 as f32),
                    );
                    Some(Widget {
                        name,
                        role: n.role(),
                        rect,
                    })
                })
                .collect()
        });
    }

    /// Carries out the current command as far as this frame allows.
    fn step(&mut self, ctx: &egui::Context) {
        if self.current.is_none()
            && let Ok(c) = self.cmds.try_recv()
        {
            self.current = Some((c, Instant::now()));
            self.frames_since_input = 0;
        }
        let Some((cmd, started)) = self.current.take() else {
            return;
        };
        let done: Option<Ack> = match &cmd {
            Cmd::Click(name) => match self.find(name) {
                // Let the screen settle a few frames after the last input.
                Some(w) if self.frames_since_input >= 2 => {
                    let at = w.rect.center();
                    self.inject.push(egui::Event::PointerMoved(at));
                    for pressed in [true, false] {
                        self.inject.push(egui::Event::PointerButton {
                            pos: at,
                            button: egui::PointerButton::Primary,
                            pressed,
                            modifiers: egui::Modifiers::NONE,
                        });
                    }
                    Some(Ok(w.name))
                }
                _ if started.elapsed() > Duration::from_secs(10) => {
                    Some(Err(format!("no widget named {name:?}")))
                }
                _ => None,
            },
            Cmd::Type(t) => {
                self.inject.push(egui::Event::Text(t.clone()));
                Some(Ok(String::new()))
            }
            Cmd::Key(k) => {
                for pressed in [true, false] {
                    self.inject.push(egui::Event::Key {
                        key: *k,
                        physical_key: None,
                        pressed,
                        repeat: false,
                        modifiers: egui::Modifiers::NONE,
                    });
                }
                Some(Ok(String::new()))
            }
            Cmd::Drop(p) => {
                self.drop.push(p.clone());
                Some(Ok(String::new()))
            }
            Cmd::Wait(name, limit) => match self.find(name) {
                Some(w) => Some(Ok(w.name)),
                None if started.elapsed() > *limit => {
                    Some(Err(format!("{name:?} did not show in {limit:?}")))
                }
                None => None,
            },
            // The longest name holding it (text may also come in runs).
            Cmd::Text(part) => self
                .widgets
                .iter()
                .filter(|w| w.name.contains(part.as_str()))
                .max_by_key(|w| w.name.len())
                .map(|w| Ok(w.name.clone())),
            Cmd::Shot(path) => {
                if self.shot_to.is_none() {
                    // After the screen settled: a few frames past the last
                    // input.
                    if self.frames_since_input >= 3 {
                        self.shot_to = Some(path.clone());
                        let slot = self.shot.clone();
                        let c = ctx.clone();
                        ctx.request_screenshot(move |img| {
                            *slot.lock().unwrap() = Some(img);
                            c.request_repaint();
                        });
                    }
                    None
                } else if let Some(img) = self.shot.lock().unwrap().take() {
                    let to = self.shot_to.take().unwrap();
                    let [w, h] = img.size;
                    let rgba: Vec<u8> = img.pixels.iter().flat_map(|c| c.to_array()).collect();
                    let r = image::RgbaImage::from_raw(w as u32, h as u32, rgba)
                        .ok_or("bad screenshot".to_owned())
                        .and_then(|i| i.save(&to).map_err(|e| e.to_string()))
                        .map(|()| to.display().to_string());
                    Some(r)
                } else {
                    None
                }
            }
            Cmd::Close => {
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                Some(Ok(String::new()))
            }
        };
        match done {
            Some(a) => {
                let _ = self.acks.send(a);
            }
            None => self.current = Some((cmd, started)),
        }
    }
}

impl eframe::App for Auto {
    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw: &mut egui::RawInput) {
        if !self.inject.is_empty() {
            self.frames_since_input = 0;
        } else {
            self.frames_since_input = self.frames_since_input.saturating_add(1);
        }
        // Xvfb runs no window manager to give the window the focus a
        // user's click would: it is focused, as it would be.
        raw.focused = true;
        raw.events.append(&mut self.inject);
        for p in self.drop.drain(..) {
            raw.dropped_files.push(Arc::new(Dropped(p)));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        ctx.enable_accesskit();
        self.desktop.frame(ui);
        self.read_tree(&ctx);
        self.step(&ctx);
        // The script polls: the app itself repaints only when told.
        ctx.request_repaint_after(Duration::from_millis(30));
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.desktop.shut_down();
    }
}

/// The script's side.
struct Hand {
    cmds: mpsc::Sender<Cmd>,
    acks: mpsc::Receiver<Ack>,
    shots: PathBuf,
    n: usize,
}

impl Hand {
    fn run(&self, c: Cmd) -> String {
        self.cmds.send(c).unwrap();
        match self.acks.recv_timeout(Duration::from_secs(180)) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => panic!("{e}"),
            Err(e) => panic!("the window stopped answering: {e}"),
        }
    }
    fn click(&self, name: &str) {
        self.run(Cmd::Click(name.into()));
    }
    fn type_in(&self, field: &str, text: &str) {
        self.click(field);
        self.run(Cmd::Type(text.into()));
    }
    fn key(&self, k: egui::Key) {
        self.run(Cmd::Key(k));
    }
    fn wait(&self, name: &str, secs: u64) -> String {
        self.run(Cmd::Wait(name.into(), Duration::from_secs(secs)))
    }
    fn text(&self, part: &str) -> String {
        self.run(Cmd::Text(part.into()))
    }
    fn shot(&mut self, name: &str) {
        self.n += 1;
        let p = self.shots.join(format!("{:02}-{name}.png", self.n));
        self.run(Cmd::Shot(p));
    }
}

fn binary(name: &str) -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let bin = harness::sibling_binary(&me, name);
    assert!(bin.exists(), "build {name} first (cargo build --workspace)");
    bin
}

fn child() {
    let shots = PathBuf::from(std::env::var_os(SHOTS).unwrap());
    let relay_bin = binary("postern-relay");
    let postern = binary("postern");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let net = Testnet::start(&relay_bin, &dir.join("net"), 3, 0).unwrap();
    let bob =
        User::new(&postern, "Bob", &dir.join("bob")).with_env("POSTERN_ACK_TIMEOUT_MS", "1500");
    bob.ok(&["init", "--name", "Bob", "--relay", &net.relays[1]])
        .unwrap();
    bob.ok(&["network", "--authority", &net.authority]).unwrap();
    // This X server has no session bus, hence no notification service:
    // notifications off, so that the screenshots show no warning of it.
    std::fs::create_dir_all(dir.join("alice")).unwrap();
    std::fs::write(
        dir.join("alice").join(postern_desktop::worker::PREFS_FILE),
        "notifications = false\n",
    )
    .unwrap();
    let cfg = Config {
        profile: dir.join("alice"),
        root: None,
        relay: Some(net.relays[0].clone()),
        authorities: vec![net.authority.clone()],
        hops: 3,
        downloads: Some(dir.join("downloads")),
        connector: postern_net::Connector::default(),
        service: ServiceConfig {
            ack_timeout_ms: 1_500,
            cover_per_minute: 6,
            others_poll: Duration::from_secs(2),
        },
        kdf: KdfParams::TEST_ONLY,
        microphone: Some("null".into()),
        speaker: Some("null".into()),
    };
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (ack_tx, ack_rx) = mpsc::channel();
    let script_dir = dir.clone();
    let script = std::thread::spawn(move || {
        let mut h = Hand {
            cmds: cmd_tx,
            acks: ack_rx,
            shots,
            n: 0,
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            script(&mut h, &bob, &script_dir);
        }));
        // Closed either way, so a failing step ends the test.
        let _ = h.cmds.send(Cmd::Close);
        r.is_ok()
    });
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Postern")
            .with_inner_size([1100.0, 720.0])
            .with_position([0.0, 0.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Postern",
        options,
        Box::new(move |cc| {
            Ok(Box::new(Auto {
                desktop: Desktop::new(&cc.egui_ctx, cfg)?,
                cmds: cmd_rx,
                acks: ack_tx,
                current: None,
                inject: Vec::new(),
                drop: Vec::new(),
                widgets: Vec::new(),
                shot: Arc::default(),
                shot_to: None,
                frames_since_input: 0,
            }))
        }),
    )
    .unwrap();
    let passed = script.join().unwrap_or(false);
    drop(net);
    if !passed {
        std::process::exit(1);
    }
}

/// What a person would do, step by step.
fn script(h: &mut Hand, bob: &User, dir: &Path) {
    const PASS: &str = "correct horse battery staple";
    h.wait("Welcome to Postern", 30);
    // The home relays from the signed directory arrive a moment later.
    h.wait("Home relay (from the network's signed directory)", 30);
    h.type_in("Your name (only your contacts see it)", "Alice");
    h.type_in("Passphrase", PASS);
    h.type_in("Repeat the passphrase", PASS);
    h.shot("onboarding");
    h.click("Create profile");
    h.wait("New invitation", 30);

    h.click("New invitation");
    h.wait("Copy link", 30);
    let link = h.text("postern:");
    h.shot("invitation");
    h.click("Done");
    bob.ok(&["accept", &link]).unwrap();
    bob.ok(&["send", "Alice", "Hi Alice! This is Bob, from the terminal."])
        .unwrap();
    h.wait("Bob", 60);
    h.click("Bob");
    h.wait("Bob: Hi Alice!", 60);

    h.type_in("Message", "Hello Bob, this is Alice in the desktop app.");
    h.key(egui::Key::Enter);
    h.wait("You: Hello Bob", 20);
    // Bob collects it and confirms: the mark turns to delivered.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        bob.ok(&["sync"]).unwrap();
        let l = h.text("You: Hello Bob");
        if l.ends_with(", delivered") {
            break;
        }
        assert!(Instant::now() < deadline, "never delivered: {l}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // Bob sends a photo, a file and a voice clip.
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("photo.png"), harness::sample_png()).unwrap();
    std::fs::write(
        files.join("minutes.txt"),
        b"Minutes of the meeting\n".repeat(400),
    )
    .unwrap();
    std::fs::write(files.join("clip.ogg"), harness::sample_voice_clip()).unwrap();
    for (f, voice) in [
        ("photo.png", false),
        ("minutes.txt", false),
        ("clip.ogg", true),
    ] {
        let path = files.join(f);
        let mut args = vec!["send-file"];
        if voice {
            args.push("--voice");
        }
        args.extend(["Alice", path.to_str().unwrap()]);
        bob.ok(&args).unwrap();
    }
    h.wait("Bob: photo", 60);
    h.wait("Bob: file minutes.txt", 60);
    h.wait("Bob: voice message", 60);
    h.shot("conversation");

    // Alice sends a photo, a file and a voice clip by dropping them on
    // the window.
    std::fs::write(files.join("garden.png"), harness::sample_png()).unwrap();
    std::fs::write(files.join("agenda.txt"), b"1. Postern\n".repeat(300)).unwrap();
    std::fs::write(files.join("answer.ogg"), harness::sample_voice_clip()).unwrap();
    for f in ["garden.png", "agenda.txt", "answer.ogg"] {
        h.run(Cmd::Drop(files.join(f)));
    }
    h.wait("You: photo", 30);
    h.wait("You: file agenda.txt", 30);
    h.wait("You: voice message", 30);
    let got = dir.join("bob-downloads");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = bob
            .ok(&["sync", "--downloads", got.to_str().unwrap()])
            .unwrap();
        let names: Vec<String> = std::fs::read_dir(&got)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let have = |p: &str| names.iter().any(|n| n.starts_with(p) || n.ends_with(p));
        if have("agenda.txt") && (have(".jpg") || have(".png")) && have(".ogg") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Bob did not get everything: {names:?} / {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        std::fs::read(got.join("agenda.txt")).unwrap(),
        b"1. Postern\n".repeat(300)
    );
    h.shot("sent");

    h.click("Safety number");
    h.wait("Safety number with Bob", 20);
    h.shot("safety-number");
    h.click("Close");

    h.click("Settings");
    h.wait("Cover packets per minute", 10);
    h.shot("settings");
    h.click("Change passphrase…");
    h.wait("Current passphrase", 10);
    h.shot("change-passphrase");
    h.click("Cancel");

    // Recording a voice message (ALSA's null microphone), then cancelled.
    h.click("Record voice message");
    h.wait("Microphone level", 10);
    h.shot("recording");
    h.click("Cancel recording");
    h.wait("Message", 10);

    // Bob resets his keys and invites Alice again: the blocking warning.
    bob.ok(&["reset-keys", "--yes"]).unwrap();
    let link = harness::link_in(&bob.ok(&["invite", "--quiet"]).unwrap()).unwrap();
    h.click("Accept invitation");
    h.type_in("Invitation link", &link);
    h.click("Accept");
    h.wait("Bob's safety number changed", 60);
    h.shot("key-changed");
    h.click("Accept the new key");
    h.wait("Message", 60);

    h.click("Lock");
    h.wait("Postern is locked", 20);
    h.shot("locked");
}
