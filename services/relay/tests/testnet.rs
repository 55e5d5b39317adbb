//! `postern-relay testnet` end to end: three relays start, each serves the
//! signed directory, which verifies with the printed authority key and
//! lists every relay with a Sphinx key for the current epoch; a relay
//! without a directory answers `NoDirectory`; SIGTERM stops the testnet
//! and all its relays, with exit status 0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use postern_core::directory::{Directory, ROLES_ALL};
use postern_core::{RelayAddress, UnixTime};
use postern_net::{ErrorCode, NetError};
use postern_relay::config::parse_authority_key;

const BIN: &str = env!("CARGO_BIN_EXE_postern-relay");

fn now() -> UnixTime {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    UnixTime(d.as_millis() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testnet_serves_a_verified_directory_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["testnet", "--relays", "3", "--dir"])
        .arg(dir.path())
        .env_remove("POSTERN_RELAY_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut relays, mut authority, mut directory) = (Vec::new(), None, None);
    loop {
        let line = lines.next().expect("testnet exited early").unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["relay", n, a] => {
                assert_eq!(n.parse::<usize>().unwrap(), relays.len() + 1);
                relays.push(RelayAddress::parse(a).unwrap());
            }
            ["directory", p] => directory = Some(std::path::PathBuf::from(p)),
            ["authority", k] => authority = Some(parse_authority_key(k).unwrap()),
            ["admin", _, url] => assert!(url.starts_with("http://127.0.0.1:")),
            ["ready"] => break,
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert_eq!(relays.len(), 3);
    let authority = authority.unwrap();
    let file = std::fs::read(directory.unwrap()).unwrap();

    // Every relay serves the same directory, which verifies.
    let t = now();
    for addr in &relays {
        let mut c = postern_net::connect(addr).await.unwrap();
        let bytes = c.get_directory().await.unwrap();
        assert_eq!(bytes, file);
        let d = Directory::verify(&bytes, std::slice::from_ref(&authority), 1, t).unwrap();
        assert_eq!(d.relays.len(), 3);
        let epoch = d.epoch_at(t);
        for r in &relays {
            let info = d.by_address(r).expect("relay listed");
            assert_eq!(info.roles, ROLES_ALL);
            assert!(d.sphinx_key(&info.id, epoch).is_some());
            assert!(d.sphinx_key(&info.id, epoch + 1).is_some());
            // Browsers reach it over WebTransport by the hash of the
            // certificate it serves (its UDP port has the TCP port's number).
            let wt = info.webtransport.as_ref().expect("WebTransport listed");
            assert_eq!(wt.port, r.port());
            assert_eq!(wt.cert_sha256.len(), 1);
        }
        c.close().await.unwrap();
    }
    // The relays' descriptor keys and Sphinx keys are private files.
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["descriptor-key", "sphinx-keys"] {
        let m = std::fs::metadata(dir.path().join("relay-1").join(f)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}");
    }
    let wt_dir = dir.path().join("relay-1").join("webtransport");
    for e in std::fs::read_dir(&wt_dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "key") {
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
    }

    // SIGTERM: the testnet stops its relays and exits 0.
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "testnet did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // No relay holds its data directory any more.
    for i in 1..=3 {
        let lock = std::fs::File::open(dir.path().join(format!("relay-{i}/relay.lock"))).unwrap();
        assert!(lock.try_lock().is_ok(), "relay {i} still running");
    }
    for addr in &relays {
        assert!(postern_net::connect(addr).await.is_err());
    }
}

#[tokio::test]
async fn relay_without_directory_answers_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Command::new(BIN)
        .args(["init", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(&data)
        .env_remove("POSTERN_RELAY_CONFIG")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let mut child = Command::new(BIN)
        .args(["run", "--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("POSTERN_RELAY_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("relay exited early").unwrap();
        if let Some(a) = line.strip_prefix("listening ") {
            break RelayAddress::parse(a).unwrap();
        }
    };
    let mut c = postern_net::connect(&addr).await.unwrap();
    match c.get_directory().await {
        Err(NetError::Relay(ErrorCode::NoDirectory)) => {}
        other => panic!("{other:?}"),
    }
    // The connection is still usable afterwards.
    assert!(matches!(
        c.get_directory().await,
        Err(NetError::Relay(ErrorCode::NoDirectory))
    ));
    let _ = child.kill();
    let _ = child.wait();
}
