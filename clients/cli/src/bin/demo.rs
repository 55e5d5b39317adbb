//! `postern-demo`: a local relay and two users, Alice and Bob, who invite,
//! accept, verify and exchange a text, an image, a file and a voice clip —
//! every step a real `postern` / `postern-relay` process on 127.0.0.1,
//! printed as a transcript. Everything lives in a temporary directory
//! that is removed at the end.

// A command-line program: printing to the terminal is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::ExitCode;

use postern_cli::harness::{self, HarnessError, Testnet, User};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(who: &str, what: &str) {
    println!("\n[{who}] {what}");
}

fn show(out: &str) {
    for line in out.lines() {
        println!("    {line}");
    }
}

fn step(user: &User, args: &[&str]) -> Result<String, HarnessError> {
    say(&user.name, &format!("$ postern {}", args.join(" ")));
    let out = user.ok(args)?;
    show(&out);
    Ok(out)
}

/// Mean mixing delay at each relay in the demo (milliseconds).
const DEMO_MIX_DELAY_MS: u64 = 20;
/// How long the demo's users wait for a delivery acknowledgement.
const DEMO_ACK_TIMEOUT_MS: &str = "1500";
/// Syncs before the demo gives up waiting for something to arrive.
const MAX_SYNCS: usize = 40;

/// Syncs `user` until `done(everything printed so far, the last output)`;
/// repeated lines are shown once. `peer`, if given, syncs quietly in
/// between (so that it sends again what the network lost).
fn sync_until(
    user: &User,
    args: &[&str],
    peer: Option<&User>,
    done: impl Fn(&str, &str) -> bool,
) -> Result<String, HarnessError> {
    say(&user.name, &format!("$ postern {}", args.join(" ")));
    let mut all = String::new();
    let mut shown = std::collections::BTreeSet::new();
    for _ in 0..MAX_SYNCS {
        let out = user.ok(args)?;
        for line in out.lines().filter(|l| *l != "no new messages") {
            if shown.insert(line.to_owned()) {
                println!("    {line}");
            }
        }
        all.push_str(&out);
        if done(&all, &out) {
            return Ok(all);
        }
        if let Some(p) = peer {
            p.ok(&["sync"])?;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    Err(HarnessError::Timeout("messages did not arrive".into()))
}

fn run() -> Result<(), HarnessError> {
    let me = std::env::current_exe().map_err(|source| HarnessError::Io {
        what: "current exe".into(),
        source,
    })?;
    let postern = harness::sibling_binary(&me, "postern");
    let relay_bin = harness::sibling_binary(&me, "postern-relay");
    let tmp = tempfile::tempdir().map_err(|source| HarnessError::Io {
        what: "temp dir".into(),
        source,
    })?;
    let dir = tmp.path();
    println!("Postern demo: a local onion network of five relays and two users.");
    println!("Every message is end-to-end encrypted (PQXDH, Double Ratchet, sealed sender),");
    println!("cut into fixed-size blobs and carried as Sphinx packets over 3 relays.");
    println!("Working directory: {} (removed at the end)", dir.display());

    let mut net = Testnet::start(&relay_bin, &dir.join("net"), 5, DEMO_MIX_DELAY_MS)?;
    say(
        "network",
        &format!(
            "5 relays on 127.0.0.1, directory signed by authority {}",
            net.authority
        ),
    );
    let relay = |i: usize| -> Result<String, HarnessError> {
        net.relays
            .get(i)
            .cloned()
            .ok_or_else(|| HarnessError::RelayStart("missing relay".into()))
    };
    let (r1, r2, r3) = (relay(0)?, relay(1)?, relay(2)?);
    for (i, r) in net.relays.iter().enumerate() {
        println!("    relay {}: {r}", i + 1);
    }

    let alice = User::new(&postern, "Alice", &dir.join("alice"))
        .with_env("POSTERN_ACK_TIMEOUT_MS", DEMO_ACK_TIMEOUT_MS);
    let bob = User::new(&postern, "Bob", &dir.join("bob"))
        .with_env("POSTERN_ACK_TIMEOUT_MS", DEMO_ACK_TIMEOUT_MS);
    step(&alice, &["init", "--name", "Alice", "--relay", &r1])?;
    step(&bob, &["init", "--name", "Bob", "--relay", &r3])?;
    step(&alice, &["network", "--authority", &net.authority])?;
    step(&bob, &["network", "--authority", &net.authority])?;

    let out = step(&alice, &["invite"])?;
    let link = harness::link_in(&out).ok_or_else(|| HarnessError::RelayStart("no link".into()))?;
    say("Alice", "gives Bob the link (or shows him the QR code)");
    step(&bob, &["accept", &link])?;
    sync_until(&alice, &["sync"], Some(&bob), |o, _| {
        o.contains("accepted your invitation")
    })?;
    say("Carol", "tries the same link: it is one-time");
    let carol = User::new(&postern, "Carol", &dir.join("carol"));
    carol.ok(&["init", "--name", "Carol", "--relay", &r2])?;
    let again = carol.run(&["accept", &link])?;
    show(&String::from_utf8_lossy(&again.stderr));

    let qr = dir.join("alice-safety.png");
    let qr_s = qr.to_string_lossy().into_owned();
    step(&alice, &["verify", "Bob", "--png", &qr_s])?;
    say("Bob", "scans Alice's screen");
    step(&bob, &["verify", "Alice", "--scan", &qr_s])?;
    let qr_b = dir.join("bob-safety.png");
    let qr_b_s = qr_b.to_string_lossy().into_owned();
    bob.ok(&["verify", "Alice", "--png", &qr_b_s])?;
    step(&alice, &["verify", "Bob", "--scan", &qr_b_s])?;

    say("Bob", "goes offline; Alice sends anyway");
    let photo = write(dir, "photo.png", &harness::sample_png())?;
    let notes = write(
        dir,
        "notes.txt",
        b"Meeting moved to Thursday, 18:00. Bring the printed copies.\n",
    )?;
    let voice = write(dir, "hello.ogg", &harness::sample_voice_clip())?;
    step(
        &alice,
        &["send", "Bob", "Hi Bob! Files for tomorrow follow."],
    )?;
    step(&alice, &["send-file", "Bob", &photo])?;
    step(&alice, &["send-file", "Bob", &notes])?;
    step(&alice, &["send-file", "Bob", &voice, "--voice"])?;

    say(
        "network",
        "relay 2 is killed (SIGKILL): packets routed through it are lost",
    );
    net.kill_relay(2)?;
    say(
        "Alice",
        "syncs: unacknowledged packets are sent again over other paths",
    );
    sync_until(&alice, &["sync"], None, |_, last| {
        !last.contains("wait for")
    })?;

    let downloads = dir.join("bob-downloads");
    let dl = downloads.to_string_lossy().into_owned();
    sync_until(&bob, &["sync", "--downloads", &dl], None, |o, _| {
        o.matches("saved").count() >= 3 && o.contains("Hi Bob")
    })?;
    step(
        &bob,
        &["send", "Alice", "Got everything, see you Thursday."],
    )?;
    sync_until(&alice, &["sync"], Some(&bob), |o, _| {
        o.contains("see you Thursday")
    })?;
    step(&bob, &["history", "Alice"])?;
    step(&bob, &["contacts"])?;

    net.stop()?;
    say("network", "stopped (SIGTERM)");
    println!("\nDemo complete.");
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<String, HarnessError> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).map_err(|source| HarnessError::Io {
        what: name.into(),
        source,
    })?;
    Ok(p.to_string_lossy().into_owned())
}
