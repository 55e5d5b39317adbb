//! Over the onion network: `postern-relay testnet` with 5 relays on
//! 127.0.0.1 and two `postern` users on different mailbox relays; every
//! message kind crosses 3 hops.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use postern_cli::harness::{self, Testnet, User};

#[test]
fn every_kind_crosses_three_hops_between_users_on_different_relays() {
    let postern = PathBuf::from(env!("CARGO_BIN_EXE_postern"));
    let relay_bin = harness::sibling_binary(&postern, "postern-relay");
    assert!(relay_bin.exists(), "build postern-relay first");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut net = Testnet::start(&relay_bin, &dir.join("net"), 5, 0).unwrap();

    let alice = User::new(&postern, "Alice", &dir.join("alice"));
    let bob = User::new(&postern, "Bob", &dir.join("bob"));
    alice
        .ok(&["init", "--name", "Alice", "--relay", &net.relays[0]])
        .unwrap();
    bob.ok(&["init", "--name", "Bob", "--relay", &net.relays[2]])
        .unwrap();
    // Alice uses 3 hops, Bob 4; fewer than 3 is refused.
    assert!(
        !alice
            .run(&["network", "--authority", &net.authority, "--hops", "2"])
            .unwrap()
            .status
            .success()
    );
    let out = alice
        .ok(&["network", "--authority", &net.authority])
        .unwrap();
    assert!(out.contains("5 relays, 3 hops"), "{out}");
    let out = bob
        .ok(&["network", "--authority", &net.authority, "--hops", "4"])
        .unwrap();
    assert!(out.contains("5 relays, 4 hops"), "{out}");
    // A wrong authority key is refused and nothing is sent with it.
    let carol = User::new(&postern, "Carol", &dir.join("carol"));
    carol
        .ok(&["init", "--name", "Carol", "--relay", &net.relays[1]])
        .unwrap();
    let stranger = postern_core::crypto::signal::AuthoritySecret::generate(&mut rand::rng())
        .public()
        .unwrap()
        .to_bytes();
    let stranger = data_encoding::BASE64URL_NOPAD.encode(&stranger);
    let out = carol.run(&["network", "--authority", &stranger]).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("directory"),
        "{out:?}"
    );

    let link = harness::link_in(&alice.ok(&["invite", "--quiet"]).unwrap()).unwrap();
    bob.ok(&["accept", &link]).unwrap();
    let out = alice.ok(&["sync"]).unwrap();
    assert!(out.contains("Bob accepted your invitation"), "{out}");

    let out = alice.ok(&["send", "Bob", "over three hops"]).unwrap();
    assert!(out.contains("(onion)"), "{out}");
    let photo = dir.join("photo.png");
    std::fs::write(&photo, harness::sample_png()).unwrap();
    let notes = dir.join("notes.txt");
    let body = b"onion notes\n".repeat(500);
    std::fs::write(&notes, &body).unwrap();
    let clip = dir.join("clip.ogg");
    let clip_bytes = harness::sample_voice_clip();
    std::fs::write(&clip, &clip_bytes).unwrap();
    alice
        .ok(&["send-file", "Bob", photo.to_str().unwrap()])
        .unwrap();
    alice
        .ok(&["send-file", "Bob", notes.to_str().unwrap()])
        .unwrap();
    alice
        .ok(&["send-file", "Bob", clip.to_str().unwrap(), "--voice"])
        .unwrap();

    let dl = dir.join("dl");
    // Zero mixing delay, but packets still cross three relays: give them
    // a moment, then sync until everything is there.
    let mut out = String::new();
    for _ in 0..50 {
        out.push_str(
            &bob.ok(&["sync", "--downloads", dl.to_str().unwrap()])
                .unwrap(),
        );
        if out.matches("saved").count() == 3 && out.contains("over three hops") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(out.matches("over three hops").count(), 1, "{out}");
    assert_eq!(out.matches("saved").count(), 3, "{out}");
    assert_eq!(std::fs::read(dl.join("notes.txt")).unwrap(), body);

    // And back, with delivery receipts.
    bob.ok(&["send", "Alice", "reply over the onion"]).unwrap();
    let mut out = String::new();
    for _ in 0..50 {
        out.push_str(&alice.ok(&["sync"]).unwrap());
        if out.contains("reply over the onion") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(out.contains("reply over the onion"), "{out}");

    // Alice learns that her packets arrived: acknowledgements came back
    // through the reply blocks into her acknowledgement queue (the receipt
    // she just sent for Bob's reply is acknowledged a moment later).
    let mut out = String::new();
    for _ in 0..50 {
        out = alice.ok(&["sync"]).unwrap();
        if !out.contains("wait for a delivery acknowledgement") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !out.contains("wait for a delivery acknowledgement"),
        "{out}"
    );

    // What each relay saw, from its own counters: no relay received a
    // direct `send` (every blob arrived inside an onion packet), and the
    // relays that are nobody's home (4 and 5) saw no command naming a
    // queue at all — only onion packets and directory requests.
    let count = |metrics: &str, command: &str| -> u64 {
        let key = format!("postern_relay_requests_total{{command=\"{command}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {command} counter"))
    };
    let mut forwards = 0;
    for i in 1..=5 {
        let m = net.metrics(i).unwrap();
        assert_eq!(count(&m, "send"), 0, "relay {i} got a direct send");
        forwards += count(&m, "forward");
        if i >= 4 {
            for c in [
                "create",
                "fetch",
                "ack",
                "subscribe",
                "put_invite",
                "take_invite",
            ] {
                assert_eq!(count(&m, c), 0, "relay {i} saw a {c}");
            }
        }
    }
    assert!(forwards >= 3 * 20, "{forwards} forwards");

    // A relay dies mid-run (neither user's home): traffic recovers over
    // other paths, and every message arrives exactly once.
    net.kill_relay(2).unwrap();
    let fast = |u: &User, args: &[&str]| -> String {
        let o = u
            .command(args)
            .env("POSTERN_ACK_TIMEOUT_MS", "300")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for i in 0..6 {
        fast(&alice, &["send", "Bob", &format!("after the outage #{i}")]);
    }
    let mut got = String::new();
    for _ in 0..60 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        fast(&alice, &["sync"]);
        got.push_str(&fast(&bob, &["sync", "--downloads", dl.to_str().unwrap()]));
        if (0..6).all(|i| got.contains(&format!("after the outage #{i}"))) {
            break;
        }
    }
    for i in 0..6 {
        assert_eq!(
            got.matches(&format!("after the outage #{i}")).count(),
            1,
            "message {i} not delivered exactly once:\n{got}"
        );
    }

    // Cover traffic: a watching client sends drop and loop packets; the
    // loops come back through the network as acknowledgements. Cover is
    // due every 500 ms on average, on its own schedule; the resend check
    // runs every 750 ms and a loop counts as lost after 3 s (twice the
    // acknowledgement timeout: it crosses the network twice).
    // One watch session of 8 s: the (sent, loops back) of its summary.
    let session = || {
        let mut watcher = alice
            .command(&[
                "watch",
                "--cover-per-minute",
                "120",
                "--ack-timeout-ms",
                "1500",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = watcher.stdout.take().unwrap();
        let rx = harness::lines_of(stdout);
        let mut out = String::new();
        let started = std::time::Instant::now();
        let watching = started + std::time::Duration::from_secs(8);
        while std::time::Instant::now() < watching {
            if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
                out.push_str(&l);
                out.push('\n');
            }
        }
        let _ = std::process::Command::new("kill")
            .args(["-INT", &watcher.id().to_string()])
            .status();
        let done = watcher.wait_with_output().unwrap();
        while let Ok(l) = rx.recv_timeout(std::time::Duration::from_secs(5)) {
            out.push_str(&l);
            out.push('\n');
        }
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        let summary = out
            .lines()
            .find_map(|l| l.strip_prefix("cover traffic: "))
            .unwrap_or_else(|| panic!("no cover summary: {out}"));
        let numbers: Vec<u64> = summary.split(' ').filter_map(|w| w.parse().ok()).collect();
        let [sent, loops] = numbers[..] else {
            panic!("unexpected summary: {summary}")
        };
        (sent, loops, out)
    };
    let (sent, mut loops, out) = session();
    // About 16 expected in 8 s; fewer than 4 would mean cover waits on
    // other events.
    assert!(sent >= 4, "only {sent} cover packets in 8 s: {out}");
    // A loop takes a few mixing delays out and back; on a loaded machine
    // the last ones may still be on their way when the session ends, so
    // a second session may be needed to see one come back.
    let mut sessions = 1;
    while loops == 0 && sessions < 3 {
        loops += session().1;
        sessions += 1;
    }
    assert!(
        loops >= 1,
        "no loop came back in {sessions} sessions: {out}"
    );

    // Every relay took part only through onion packets: no relay log
    // names a client address, a queue id or a plaintext.
    net.stop().unwrap();
    for i in [1, 3, 4, 5] {
        let mut log = std::fs::read_to_string(dir.join("net").join(format!("relay-{i}.log")))
            .unwrap_or_default();
        // Relay keys are random base64 and may spell a needle by chance.
        for relay in &net.relays {
            if let Some((_, key)) = relay.split_once('#') {
                log = log.replace(key, "<relay key>");
            }
        }
        for needle in ["over three hops", "onion notes", "Alice", "Bob"] {
            let hits: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
            assert!(hits.is_empty(), "relay {i} log holds {needle:?}: {hits:#?}");
        }
    }
}
