//! `postern-demo`: a local relay and two users, Alice and Bob, who invite,
//! accept, verify and exchange a text, an image, a file and a voice clip —
//! every step a real `postern` / `postern-relay` process on 127.0.0.1,
//! printed as a transcript. Everything lives in a temporary directory
//! that is removed at the end.

// A command-line program: printing to the terminal is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::ExitCode;

use postern_cli::harness::{self, HarnessError, Relay, User};

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
    println!("Postern demo: one local relay, two users, every message end-to-end encrypted.");
    println!("Working directory: {} (removed at the end)", dir.display());

    let mut relay = Relay::start(&relay_bin, &dir.join("relay"))?;
    say("relay", &format!("listening at {}", relay.address));

    let alice = User::new(&postern, "Alice", &dir.join("alice"));
    let bob = User::new(&postern, "Bob", &dir.join("bob"));
    step(
        &alice,
        &["init", "--name", "Alice", "--relay", &relay.address],
    )?;
    step(&bob, &["init", "--name", "Bob", "--relay", &relay.address])?;

    let out = step(&alice, &["invite"])?;
    let link = harness::link_in(&out).ok_or_else(|| HarnessError::RelayStart("no link".into()))?;
    say("Alice", "gives Bob the link (or shows him the QR code)");
    step(&bob, &["accept", &link])?;
    step(&alice, &["sync"])?;
    say("Carol", "tries the same link: it is one-time");
    let carol = User::new(&postern, "Carol", &dir.join("carol"));
    carol.ok(&["init", "--name", "Carol", "--relay", &relay.address])?;
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
        "relay",
        "killed with SIGKILL and restarted: queued messages survive",
    );
    relay.kill9_and_restart()?;

    let downloads = dir.join("bob-downloads");
    let dl = downloads.to_string_lossy().into_owned();
    step(&bob, &["sync", "--downloads", &dl])?;
    step(
        &bob,
        &["send", "Alice", "Got everything, see you Thursday."],
    )?;
    step(&alice, &["sync"])?;
    step(&bob, &["history", "Alice"])?;
    step(&bob, &["contacts"])?;

    relay.stop()?;
    say("relay", "stopped (SIGTERM)");
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
