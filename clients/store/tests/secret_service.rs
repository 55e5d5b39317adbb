//! The keychain path against a real Secret Service (gnome-keyring on a
//! private D-Bus session). scripts/test runs it as
//! `dbus-run-session -- sh -c 'echo -n pw | gnome-keyring-daemon --unlock
//! --components=secrets; cargo test -p postern-store --test secret_service'`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use postern_core::crypto::kdf::KdfParams;
use postern_core::store::{ChangeSet, Direction, StoredMessage};
use postern_core::{Address, KvStore, UnixTime};
use postern_store::{KeySource, Profile, ProfileError, Unlock};
use zeroize::Zeroizing;

#[test]
fn profile_key_sealed_by_the_secret_service() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "needs a D-Bus session with a Secret Service (see the file's header)"
    );
    postern_store::use_platform_keychain().unwrap();
    let d = tempfile::tempdir().unwrap();
    let peer = Address::from_bytes([5; 16]);
    {
        let mut p = Profile::create(d.path(), Unlock::Keychain, KdfParams::TEST_ONLY).unwrap();
        assert_eq!(p.key_source(), KeySource::Keychain);
        let mut cs = ChangeSet::new();
        cs.add_message(StoredMessage {
            peer,
            id: [1; 16],
            direction: Direction::Incoming,
            timestamp: UnixTime(1),
            body: Zeroizing::new(b"kept by the keychain".to_vec()),
        });
        p.commit(cs).unwrap();
    }
    // The header holds no key; the Secret Service does.
    let header = std::fs::read_to_string(d.path().join(postern_store::HEADER_FILE)).unwrap();
    assert!(header.contains("\"keychain\"") && !header.contains("salt"));
    let mut p = Profile::open(d.path(), Unlock::Keychain).unwrap();
    assert_eq!(
        &p.history(&peer, 10).unwrap()[0].body[..],
        b"kept by the keychain"
    );
    // Move to a passphrase: the keychain entry is removed.
    p.change_protection(Unlock::Passphrase(b"pw"), KdfParams::TEST_ONLY)
        .unwrap();
    drop(p);
    assert!(matches!(
        Profile::open(d.path(), Unlock::Keychain),
        Err(ProfileError::WrongUnlockMethod { .. })
    ));
    let mut p = Profile::open(d.path(), Unlock::Passphrase(b"pw")).unwrap();
    // And back to the keychain.
    p.change_protection(Unlock::Keychain, KdfParams::TEST_ONLY)
        .unwrap();
    drop(p);
    let p = Profile::open(d.path(), Unlock::Keychain).unwrap();
    assert_eq!(p.history(&peer, 10).unwrap().len(), 1);
}
