//! Each kind of failure ends `postern` with its own exit status (the
//! table is in the CLI's README): 2 usage, 3 needs the user's decision
//! (tested in `e2e.rs`, a scanned safety number that does not match),
//! 4 network, 5 storage, 6 rejected input. No relay is needed: the
//! network case points at a loopback port nobody listens on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use postern_cli::harness::User;
use postern_core::RelayAddress;

fn postern() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_postern"))
}

/// A loopback port that was free a moment ago (nobody listens on it).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn status(u: &User, args: &[&str]) -> Option<i32> {
    let out = u.run(args).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("error"),
        "{args:?}: {err}"
    );
    out.status.code()
}

#[test]
fn each_kind_of_failure_has_its_own_exit_status() {
    let tmp = tempfile::tempdir().unwrap();
    let nowhere = RelayAddress::new("127.0.0.1", closed_port(), Some([7; 32]))
        .unwrap()
        .to_string();
    let alice = User::new(&postern(), "Alice", &tmp.path().join("alice"));
    assert_eq!(
        status(&alice, &["init", "--name", "Alice", "--relay", &nowhere]),
        Some(0)
    );

    // Usage: an unknown contact, a command line clap refuses, a profile
    // that does not exist, a wrong passphrase.
    assert_eq!(status(&alice, &["send", "Nobody", "hello"]), Some(2));
    assert_eq!(status(&alice, &["send"]), Some(2));
    let ghost = User::new(&postern(), "Ghost", &tmp.path().join("nothing here"));
    assert_eq!(status(&ghost, &["contacts"]), Some(2));
    let wrong = User::new(&postern(), "Alice", &tmp.path().join("alice"))
        .with_env("POSTERN_PASSPHRASE", "not the passphrase");
    assert_eq!(status(&wrong, &["contacts"]), Some(2));

    // Network: the home relay cannot be reached.
    assert_eq!(status(&alice, &["invite", "--quiet"]), Some(4));

    // Rejected input: links that are not invitations.
    for bad in ["postern:!!!!", "postern:", "https://example.com/invite"] {
        assert_eq!(status(&alice, &["accept", bad]), Some(6), "{bad}");
    }

    // Storage: the profile's database is damaged (it is reported, not
    // rewritten).
    let db = tmp.path().join("alice").join("profile.db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::write(&db, vec![0x5Au8; usize::try_from(len).unwrap()]).unwrap();
    assert_eq!(status(&alice, &["contacts"]), Some(5));
}
