//! End to end: a real `postern-relay` process on 127.0.0.1 and `postern`
//! profiles in temporary directories.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use postern_cli::harness::{self, Relay, User};

fn bins() -> (PathBuf, PathBuf) {
    let postern = PathBuf::from(env!("CARGO_BIN_EXE_postern"));
    let relay = harness::sibling_binary(&postern, "postern-relay");
    assert!(
        relay.exists(),
        "{} is missing: build it first (`cargo build -p postern-relay`; scripts/test does)",
        relay.display()
    );
    (postern, relay)
}

fn pair(dir: &Path, postern: &Path, relay: &Relay) -> (User, User) {
    let alice = User::new(postern, "Alice", &dir.join("alice"));
    let bob = User::new(postern, "Bob", &dir.join("bob"));
    alice
        .ok(&["init", "--name", "Alice", "--relay", &relay.address])
        .unwrap();
    bob.ok(&["init", "--name", "Bob", "--relay", &relay.address])
        .unwrap();
    let link = harness::link_in(&alice.ok(&["invite", "--quiet"]).unwrap()).unwrap();
    assert!(link.len() <= 600);
    let out = bob.ok(&["accept", &link]).unwrap();
    assert!(out.contains("added contact Alice"), "{out}");
    let out = alice.ok(&["sync"]).unwrap();
    assert!(out.contains("Bob accepted your invitation"), "{out}");
    (alice, bob)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn rejects_bad_links_unknown_contacts_and_wrong_passphrases() {
    let (postern, relay_bin) = bins();
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(&relay_bin, &tmp.path().join("relay")).unwrap();
    let (alice, bob) = pair(tmp.path(), &postern, &relay);
    for bad in [
        "postern:",
        "postern:!!!!",
        "https://example.com/invite",
        &format!("postern:{}", "A".repeat(700)),
    ] {
        let out = bob.run(&["accept", bad]).unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
    }
    // A second acceptance of a used link, by someone else.
    let link = harness::link_in(&alice.ok(&["invite", "--quiet"]).unwrap()).unwrap();
    bob.ok(&["sync"]).unwrap();
    let carol = User::new(&postern, "Carol", &tmp.path().join("carol"));
    carol
        .ok(&["init", "--name", "Carol", "--relay", &relay.address])
        .unwrap();
    carol.ok(&["accept", &link]).unwrap();
    let dave = User::new(&postern, "Dave", &tmp.path().join("dave"));
    dave.ok(&["init", "--name", "Dave", "--relay", &relay.address])
        .unwrap();
    let out = dave.run(&["accept", &link]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already used"));
    // Unknown contact, wrong passphrase: clear errors, nothing changed.
    let out = alice.run(&["send", "Mallory", "hi"]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no contact called"));
    let out = alice
        .command(&["contacts"])
        .env("POSTERN_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    assert!(alice.ok(&["contacts"]).unwrap().contains("Bob"));
}

#[test]
fn every_kind_offline_across_a_relay_kill_then_scan_the_relay() {
    let (postern, relay_bin) = bins();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut relay = Relay::start(&relay_bin, &dir.join("relay")).unwrap();
    let (alice, bob) = pair(dir, &postern, &relay);

    // Verification by scanning each other's QR code.
    let qa = dir.join("a.png");
    alice
        .ok(&["verify", "Bob", "--png", qa.to_str().unwrap()])
        .unwrap();
    let out = bob
        .ok(&["verify", "Alice", "--scan", qa.to_str().unwrap()])
        .unwrap();
    assert!(out.contains("match"));
    // Scanning a code that is not ours fails with the "needs your
    // decision" exit status.
    let out = alice
        .run(&["verify", "Bob", "--scan", qa.to_str().unwrap()])
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(bob.ok(&["contacts"]).unwrap().contains("(verified)"));

    // Bob is offline (no process); Alice sends every kind.
    let secret_text = "the eagle lands at dawn 7f3a";
    let file_body = b"ledger 9c1d: 1200 to the printer, 300 to transport\n".repeat(100);
    let photo = dir.join("photo.png");
    std::fs::write(&photo, harness::sample_png()).unwrap();
    let notes = dir.join("ledger.txt");
    std::fs::write(&notes, &file_body).unwrap();
    let clip = dir.join("clip.ogg");
    let clip_bytes = harness::sample_voice_clip();
    std::fs::write(&clip, &clip_bytes).unwrap();
    alice.ok(&["send", "Bob", secret_text]).unwrap();
    alice
        .ok(&["send-file", "Bob", photo.to_str().unwrap()])
        .unwrap();
    alice
        .ok(&["send-file", "Bob", notes.to_str().unwrap()])
        .unwrap();
    alice
        .ok(&["send-file", "Bob", clip.to_str().unwrap(), "--voice"])
        .unwrap();

    // kill -9 with everything waiting; restart on the same port and data.
    relay.kill9_and_restart().unwrap();

    let dl = dir.join("downloads");
    let out = bob
        .ok(&["sync", "--downloads", dl.to_str().unwrap()])
        .unwrap();
    assert_eq!(out.matches(secret_text).count(), 1, "{out}");
    assert_eq!(out.matches("saved").count(), 3, "{out}");
    assert_eq!(std::fs::read(dl.join("ledger.txt")).unwrap(), file_body);
    let saved: Vec<PathBuf> = files_under(&dl);
    assert_eq!(saved.len(), 3);
    let voice = saved
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "ogg"))
        .unwrap();
    assert_eq!(std::fs::read(voice).unwrap(), clip_bytes);
    let img = saved
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "jpg"))
        .unwrap();
    let decoded = image::open(img).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (320, 240));
    // Nothing twice.
    let out = bob
        .ok(&["sync", "--downloads", dl.to_str().unwrap()])
        .unwrap();
    assert!(out.contains("no new messages"), "{out}");
    assert_eq!(files_under(&dl).len(), 3);
    let hist = bob.ok(&["history", "Alice"]).unwrap();
    assert_eq!(hist.lines().count(), 4, "{hist}");

    // A reply, received by a `watch`ing Alice.
    let mut watcher = alice
        .command(&["watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let rx = harness::lines_of(stdout);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut watching = false;
    while !watching && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            watching = l.starts_with("watching");
        }
    }
    assert!(watching, "watch did not start");
    bob.ok(&["send", "Alice", "reply 4b2e"]).unwrap();
    let mut got = false;
    while !got && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            got = l.contains("reply 4b2e");
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-INT", &watcher.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = watcher.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = watcher.kill();
            let _ = watcher.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(got, "watch did not show the reply");
    assert!(
        status.is_some_and(|s| s.success()),
        "watch did not stop on SIGINT: {status:?}"
    );

    relay.stop().unwrap();

    // The relay's data and logs hold none of the plaintexts, names,
    // addresses, or client ports.
    let addresses: Vec<String> = [&alice, &bob]
        .iter()
        .map(|u| {
            let out = u.ok(&["contacts"]).unwrap();
            out.split_whitespace().nth(1).unwrap().to_owned()
        })
        .collect();
    let mut needles: Vec<Vec<u8>> = vec![
        secret_text.as_bytes().to_vec(),
        b"ledger 9c1d".to_vec(),
        b"reply 4b2e".to_vec(),
        b"OpusHead".to_vec(),
        b"Alice".to_vec(),
        b"ledger.txt".to_vec(),
    ];
    for a in &addresses {
        needles.push(a.as_bytes().to_vec());
        let hex: String = a.chars().filter(|c| *c != '-').collect();
        let raw: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        needles.push(raw);
    }
    // Both identity keys, read from the profiles themselves.
    for u in [&alice, &bob] {
        let p = postern_store::Profile::open(
            &u.profile,
            postern_store::Unlock::Passphrase(u.passphrase().as_bytes()),
        )
        .unwrap();
        let ik = postern_core::e2e::local_identity_key(&p)
            .unwrap()
            .to_bytes();
        assert_eq!(ik.len(), 33);
        needles.push(ik[1..].to_vec());
    }
    let mut scanned = files_under(&relay.data_dir);
    scanned.push(relay.log.clone());
    assert!(scanned.len() > 1);
    for f in &scanned {
        let bytes = std::fs::read(f).unwrap();
        for n in &needles {
            assert!(
                !contains(&bytes, n),
                "{} holds {:?}",
                f.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
    let own = format!("127.0.0.1:{}", relay.port);
    for f in files_under(&relay.data_dir) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).replace(&own, "");
        assert!(
            !text.contains("127.0.0.1:"),
            "{} holds a client address",
            f.display()
        );
    }
    let log = std::fs::read_to_string(&relay.log).unwrap();
    for line in log.lines() {
        // The relay's own listening address is fine; any other
        // 127.0.0.1:port would be a client's.
        let own = format!("127.0.0.1:{}", relay.port);
        let rest = line.replace(&own, "");
        assert!(
            !rest.contains("127.0.0.1:") || rest.contains("admin"),
            "client address in log: {line}"
        );
    }
}

/// A transfer cut short (here the relay is gone before the first chunk
/// leaves) stays in the outbox, committed with its message: `send-file`
/// fails and says so, and a later `postern sync` finishes it. The file
/// arrives whole, and once.
#[test]
fn an_interrupted_send_file_is_finished_by_sync() {
    let (postern, relay_bin) = bins();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut relay = Relay::start(&relay_bin, &dir.join("relay")).unwrap();
    let (alice, bob) = pair(dir, &postern, &relay);
    // 68 chunks: three outbox entries after the message's own.
    let body = b"interrupted transfer 4e1b\n".repeat(4_000);
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, &body).unwrap();

    relay.stop().unwrap();
    let out = alice
        .run(&["send-file", "Bob", notes.to_str().unwrap()])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("outbox") && err.contains("postern sync"),
        "{err}"
    );

    relay.start_again().unwrap();
    alice.ok(&["sync"]).unwrap();
    let dl = dir.join("downloads");
    let out = bob
        .ok(&["sync", "--downloads", dl.to_str().unwrap()])
        .unwrap();
    assert_eq!(out.matches("saved").count(), 1, "{out}");
    assert_eq!(std::fs::read(dl.join("notes.txt")).unwrap(), body);
    // The outbox is empty now: nothing is sent twice.
    alice.ok(&["sync"]).unwrap();
    let out = bob
        .ok(&["sync", "--downloads", dl.to_str().unwrap()])
        .unwrap();
    assert!(!out.contains("saved"), "{out}");
    assert_eq!(files_under(&dl).len(), 1);
}

/// A user whose home relay changed still has a queue on the old one:
/// `watch` follows the home relay's queues as they notify, and fetches the
/// old relay's every `--poll-secs`.
#[test]
fn watch_follows_the_home_relay_and_polls_an_old_one() {
    let (postern, relay_bin) = bins();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let old = Relay::start(&relay_bin, &dir.join("old")).unwrap();
    let mut new = Relay::start(&relay_bin, &dir.join("new")).unwrap();
    let (alice, bob) = pair(dir, &postern, &old);
    alice.ok(&["relay", &new.address]).unwrap();
    let carol = User::new(&postern, "Carol", &dir.join("carol"));
    carol
        .ok(&["init", "--name", "Carol", "--relay", &new.address])
        .unwrap();
    let link = harness::link_in(&alice.ok(&["invite", "--quiet"]).unwrap()).unwrap();
    carol.ok(&["accept", &link]).unwrap();
    assert!(alice.ok(&["sync"]).unwrap().contains("Carol accepted"));

    let mut watcher = alice
        .command(&["watch", "--poll-secs", "1", "--cover-per-minute", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = harness::lines_of(watcher.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = String::new();
    while !out.contains("watching") && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            out.push_str(&l);
        }
    }
    assert!(
        out.contains("watching 1 queue(s), and 1 on other relays every 1 s"),
        "{out}"
    );
    bob.ok(&["send", "Alice", "via the old relay 51c0"])
        .unwrap();
    carol
        .ok(&["send", "Alice", "via the home relay 9d2e"])
        .unwrap();
    while !(out.contains("51c0") && out.contains("9d2e")) && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            out.push_str(&l);
        }
    }
    assert!(out.contains("via the home relay 9d2e"), "{out}");
    assert!(out.contains("via the old relay 51c0"), "{out}");

    // The home relay restarts: watch reconnects, resubscribes and gets
    // what was sent while it was away or after.
    new.stop().unwrap();
    new.start_again().unwrap();
    carol
        .ok(&["send", "Alice", "after the restart 7b3a"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(out.contains("7b3a") && out.contains("reconnected")) && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            out.push_str(&l);
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(out.contains("reconnected to your relay"), "{out}");
    assert!(out.contains("after the restart 7b3a"), "{out}");
}

#[test]
fn a_contact_who_reset_their_keys_is_accepted_only_when_asked() {
    let (postern, relay_bin) = bins();
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(&relay_bin, &tmp.path().join("relay")).unwrap();
    let (alice, bob) = pair(tmp.path(), &postern, &relay);
    // Without --yes nothing is reset.
    assert!(alice.ok(&["reset-keys"]).is_err());
    alice.ok(&["reset-keys", "--yes"]).unwrap();

    // Bob opens Alice's new invitation: refused as a key change, and
    // nothing changes for him.
    let link = harness::link_in(&alice.ok(&["invite", "--quiet"]).unwrap()).unwrap();
    let out = bob.run(&["accept", &link]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("identity key changed"), "{err}");
    let before = bob.ok(&["verify", "Alice"]).unwrap();

    // A new invitation, accepted with --accept-new-key: talking again.
    let link = harness::link_in(&alice.ok(&["invite", "--quiet"]).unwrap()).unwrap();
    let out = bob.ok(&["accept", "--accept-new-key", &link]).unwrap();
    assert!(out.contains("accepted Alice's new identity key"), "{out}");
    let after = bob.ok(&["verify", "Alice"]).unwrap();
    assert_ne!(before, after, "the safety number changed");
    alice.ok(&["sync"]).unwrap();
    bob.ok(&["send", "Alice", "welcome back"]).unwrap();
    let out = alice.ok(&["sync"]).unwrap();
    assert!(out.contains("welcome back"), "{out}");
    alice.ok(&["send", "Bob", "thanks"]).unwrap();
    let out = bob.ok(&["sync"]).unwrap();
    assert!(out.contains("thanks"), "{out}");
}
