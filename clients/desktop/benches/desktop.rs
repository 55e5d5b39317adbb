//! The desktop app's figures (not a test): the real worker, profile and
//! client service on a local testnet, the screens drawn headless (egui's
//! layout and tessellation, the CPU side of every frame; no GPU).
//!
//! `cargo build --release -p postern-relay && cargo bench -p postern-desktop --bench desktop`
//! prints:
//! - the time from the unlock key press to the first frame of the main
//!   screen with its contact list (Argon2id with the shipping parameters
//!   included), and the key derivation alone;
//! - frame time (p50, p99, max) while scrolling a conversation of 10,000
//!   messages;
//! - resident memory with 200 conversations and 100,000 messages, that
//!   conversation open;
//! - CPU used in 10 s with the window open and nothing happening (frames
//!   drawn only when the app asks for one, as eframe does).
//!
//! The profile is written by a child process (this binary with
//! `--generate DIR`), so the memory figure is the app's alone. Under
//! `cargo test` (no `--bench` argument) it runs a tiny version.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use postern_app::ServiceConfig;
use postern_cli::harness::{self, Testnet};
use postern_core::crypto::kdf::KdfParams;
use postern_core::message::{Body, Envelope, Text};
use postern_core::store::{ChangeSet, Direction, StoredMessage};
use postern_core::{KvStore, MemStore, RelayAddress, UnixTime, e2e, settings};
use postern_desktop::{Config, Desktop};
use postern_store::{Profile, Unlock};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const PW: &str = "benchmark passphrase";
const T0: u64 = 1_800_000_000_000;

struct Sizes {
    conversations: u32,
    messages: u32,
    /// Messages in the conversation that is scrolled.
    big: u32,
    kdf: KdfParams,
    scroll_frames: usize,
    idle: Duration,
}

fn sizes(full: bool) -> Sizes {
    if full {
        Sizes {
            conversations: 200,
            messages: 100_000,
            big: 10_000,
            kdf: KdfParams::DEFAULT,
            scroll_frames: 600,
            idle: Duration::from_secs(10),
        }
    } else {
        Sizes {
            conversations: 3,
            messages: 300,
            big: 100,
            kdf: KdfParams::TEST_ONLY,
            scroll_frames: 20,
            idle: Duration::from_millis(300),
        }
    }
}

/// Writes the profile: an identity, `conversations` contacts (real
/// bundles), `messages` text messages, `big` of them with the first
/// contact (the most recent conversation).
fn generate(dir: &Path, s: &Sizes, relay: &str, authority: &str) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut p = Profile::create(dir, Unlock::Passphrase(PW.as_bytes()), s.kdf).unwrap();
    let now = UnixTime(T0);
    let (_, cs) = e2e::create_identity(&p, now, &mut rng).unwrap();
    p.commit(cs).unwrap();
    p.commit(settings::set_display_name("Bench").unwrap())
        .unwrap();
    p.commit(settings::set_home_relay(
        &RelayAddress::parse(relay).unwrap(),
    ))
    .unwrap();
    let key = data_encoding::BASE64URL_NOPAD
        .decode(authority.as_bytes())
        .unwrap();
    p.commit(
        settings::set_network(&settings::NetworkSettings {
            authorities: vec![key],
            threshold: 1,
            hops: 3,
        })
        .unwrap(),
    )
    .unwrap();
    let mut peers = Vec::new();
    for _ in 0..s.conversations {
        let mut other = MemStore::new();
        let (addr, cs) = e2e::create_identity(&other, now, &mut rng).unwrap();
        other.commit(cs).unwrap();
        let (bundle, _) = e2e::publish_bundle(&other).unwrap();
        let (_, cs) = e2e::add_contact(&p, &bundle).unwrap();
        p.commit(cs).unwrap();
        peers.push(addr);
    }
    let mut cs = ChangeSet::new();
    for n in 0..s.messages {
        // The big conversation's messages are the newest.
        let (peer, t) = if n >= s.messages - s.big {
            (peers[0], T0 + 10_000_000 + u64::from(n) * 1000)
        } else {
            (
                peers[1 + (n as usize) % (peers.len() - 1)],
                T0 + u64::from(n) * 60,
            )
        };
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        let text = match n % 4 {
            0 => format!("Message {n}: see you at the station at six."),
            1 => format!(
                "Message {n}: a longer one, the kind that wraps over two or three lines in a bubble, with a few more words to make it so."
            ),
            2 => format!("{n} 👍"),
            _ => format!("Message {n}: ok"),
        };
        let body = Envelope {
            id,
            sent_at: UnixTime(t),
            reply_to: None,
            body: Body::Text(Text(text)),
        }
        .encode()
        .unwrap();
        cs.add_message(StoredMessage {
            peer,
            id,
            direction: if n % 3 == 0 {
                Direction::Outgoing
            } else {
                Direction::Incoming
            },
            timestamp: UnixTime(t),
            body: body.clone(),
        });
        if n % 5_000 == 4_999 {
            p.commit(core::mem::take(&mut cs)).unwrap();
        }
    }
    p.commit(cs).unwrap();
    // Notifications off: the figures are not about a notification daemon.
    std::fs::write(
        dir.join(postern_desktop::worker::PREFS_FILE),
        "notifications = false\n",
    )
    .unwrap();
}

/// The headless window: a context, its input, and the app.
struct Window {
    ctx: egui::Context,
    desktop: Desktop,
    events: Vec<egui::Event>,
    size: egui::Vec2,
}

impl Window {
    /// One frame: input in, the app's layout, tessellation. Returns its
    /// duration.
    fn frame(&mut self) -> Duration {
        let raw = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, self.size)),
            focused: true,
            events: core::mem::take(&mut self.events),
            ..Default::default()
        };
        let t = Instant::now();
        let mut out = self.ctx.run_ui(raw, |ui| self.desktop.frame(ui));
        let prims = self.ctx.tessellate(out.shapes, out.pixels_per_point);
        let took = t.elapsed();
        // No GPU takes the texture uploads.
        out.textures_delta.clear();
        core::hint::black_box(prims);
        took
    }

    /// Frames until `done` holds; fails after `secs`.
    fn until(&mut self, what: &str, secs: u64, done: impl Fn(&Desktop) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.frame();
            if done(&self.desktop) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// CPU time used by this process so far (all threads).
fn cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which ends with ')').
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let s = sizes(full);
    if let Some(i) = args.iter().position(|a| a == "--generate") {
        generate(Path::new(&args[i + 1]), &s, &args[i + 2], &args[i + 3]);
        return;
    }
    let me = std::env::current_exe().unwrap();
    let relay_bin = harness::sibling_binary(&me, "postern-relay");
    assert!(
        relay_bin.exists(),
        "build the relay first: cargo build --release -p postern-relay"
    );
    let tmp = tempfile::tempdir().unwrap();
    let net = Testnet::start(&relay_bin, &tmp.path().join("net"), 3, 0).unwrap();
    let profile: PathBuf = tmp.path().join("profile");
    let t = Instant::now();
    let mut gen_args = vec!["--generate".to_owned(), profile.display().to_string()];
    gen_args.push(net.relays[0].clone());
    gen_args.push(net.authority.clone());
    if full {
        gen_args.push("--bench".into());
    }
    let st = std::process::Command::new(&me)
        .args(&gen_args)
        .status()
        .unwrap();
    assert!(st.success());
    let generated = t.elapsed();

    // Key derivation alone, as the unlock does it.
    let t = Instant::now();
    drop(Profile::open(&profile, Unlock::Passphrase(PW.as_bytes())).unwrap());
    let kdf_and_open = t.elapsed();

    let rss_before = rss_kib();
    let ctx = egui::Context::default();
    let cfg = Config {
        profile: profile.clone(),
        root: None,
        relay: Some(net.relays[0].clone()),
        authorities: vec![net.authority.clone()],
        hops: 3,
        downloads: Some(tmp.path().join("downloads")),
        connector: postern_net::Connector::default(),
        service: ServiceConfig::default(),
        kdf: s.kdf,
        microphone: None,
        speaker: None,
    };
    let t = Instant::now();
    let mut w = Window {
        desktop: Desktop::new(&ctx, cfg).unwrap(),
        ctx,
        events: Vec::new(),
        size: egui::vec2(1100.0, 720.0),
    };
    w.until("the lock screen", 30, |d| d.app().is_locked());
    let to_lock_screen = t.elapsed();

    // Unlock: the passphrase field has the focus; type, press Enter.
    w.frame();
    w.events.push(egui::Event::Text(PW.to_owned()));
    w.frame();
    w.events.push(egui::Event::Key {
        key: egui::Key::Enter,
        physical_key: None,
        pressed: true,
        repeat: false,
        modifiers: egui::Modifiers::NONE,
    });
    let t = Instant::now();
    w.until("the main screen", 60, |d| {
        d.app().is_unlocked() && d.app().contacts().len() == s.conversations as usize
    });
    let unlock_to_main = t.elapsed();

    // Open the big conversation (the newest: first in the list).
    w.events.push(egui::Event::Key {
        key: egui::Key::ArrowDown,
        physical_key: None,
        pressed: true,
        repeat: false,
        modifiers: egui::Modifiers::ALT,
    });
    let t = Instant::now();
    w.until("the conversation", 60, |d| {
        d.app().messages().len() == s.big as usize
    });
    let open_conversation = t.elapsed();
    for _ in 0..5 {
        w.frame();
    }

    // Scroll up through it, a wheel step a frame.
    let mut times = Vec::with_capacity(s.scroll_frames);
    w.events
        .push(egui::Event::PointerMoved(egui::pos2(700.0, 380.0)));
    w.frame();
    for _ in 0..s.scroll_frames {
        w.events.push(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Point,
            delta: egui::vec2(0.0, 90.0),
            modifiers: egui::Modifiers::NONE,
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Wheel,
        });
        times.push(w.frame());
    }
    times.sort();
    let rss = rss_kib();

    // Idle: a frame only when the app asked for one (a repaint request or
    // its delay running out), as eframe's event loop does.
    let asked = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let a = asked.clone();
    w.ctx.set_request_repaint_callback(move |r| {
        let at = Instant::now() + r.delay;
        let mut x = a.lock().unwrap();
        *x = Some(x.map_or(at, |old| old.min(at)));
    });
    for _ in 0..10 {
        w.frame();
    }
    *asked.lock().unwrap() = None;
    let (c0, t0) = (cpu(), Instant::now());
    let mut idle_frames = 0u32;
    while t0.elapsed() < s.idle {
        let due = asked.lock().unwrap().is_some_and(|at| at <= Instant::now());
        if due {
            *asked.lock().unwrap() = None;
            w.frame();
            idle_frames += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let idle_cpu = cpu().saturating_sub(c0);
    let idle_secs = t0.elapsed().as_secs_f64();

    println!(
        "desktop: profile of {} conversations, {} messages written in {:.1} s",
        s.conversations,
        s.messages,
        generated.as_secs_f64()
    );
    println!(
        "  start to the lock screen's first frame: {:.0} ms",
        ms(to_lock_screen)
    );
    println!(
        "  unlock (Enter) to the first frame of the main screen with its contacts: {:.0} ms \
         (of which key derivation and opening the database: {:.0} ms)",
        ms(unlock_to_main),
        ms(kdf_and_open)
    );
    println!(
        "  opening the {}-message conversation: {:.0} ms",
        s.big,
        ms(open_conversation)
    );
    println!(
        "  frame while scrolling it (layout + tessellation, {} frames): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap())
    );
    println!(
        "  resident memory: {:.1} MiB ({:.1} MiB before the app started)",
        rss as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    println!(
        "  idle for {:.0} s: {} frames drawn, CPU {:.2} % of one core (worker and network included)",
        idle_secs,
        idle_frames,
        idle_cpu.as_secs_f64() / idle_secs * 100.0
    );
    drop(w);
    drop(net);
}
