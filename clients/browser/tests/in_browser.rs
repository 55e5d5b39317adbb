//! The browser platform layer in a real browser (wasm-bindgen-test in
//! headless Chromium): a profile's database keeps each commit whole
//! across a reload, an aborted transaction leaves nothing, the passphrase
//! header opens only with its passphrase, one tab holds a profile, and a
//! Chromium recording is remuxed and passes the voice check in wasm.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use postern_browser::idb::ProfileDb;
use postern_browser::lock::{self, LockError};
use postern_browser::sealed::{Header, HeaderError, Keys, SealedStore, Write};
use postern_core::crypto::kdf::KdfParams;
use postern_core::store::{Direction, Namespace, Record, StoredMessage};
use postern_core::{Address, ChangeSet, KvStore, UnixTime};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use zeroize::Zeroizing;

wasm_bindgen_test_configure!(run_in_browser);

fn fill() -> postern_browser::sealed::Fill {
    Box::new(|b: &mut [u8]| getrandom::fill(b).unwrap())
}

fn message(n: u8, text: &str) -> ChangeSet {
    let mut cs = ChangeSet::new();
    cs.add_message(StoredMessage {
        peer: Address::from_slice(&[1; 16]).unwrap(),
        id: [n; 16],
        direction: Direction::Incoming,
        timestamp: UnixTime(u64::from(n)),
        body: Zeroizing::new(text.as_bytes().to_vec()),
    });
    cs.put(
        Namespace::Setting,
        &[n],
        Record {
            schema: 1,
            bytes: Zeroizing::new(vec![n; 8]),
        },
    );
    cs
}

async fn reopen(name: &str, key: &[u8; 32]) -> SealedStore {
    let db = ProfileDb::open(name).await.unwrap();
    let values = db.values().await.unwrap();
    db.close();
    SealedStore::load(Keys::new(key), values, fill()).unwrap()
}

#[wasm_bindgen_test]
async fn commits_survive_a_reload_whole_and_an_aborted_one_leaves_nothing() {
    let name = "test-commits";
    let _ = ProfileDb::delete(name).await;
    let key = [9u8; 32];
    let db = ProfileDb::open(name).await.unwrap();
    let mut store = SealedStore::load(Keys::new(&key), Vec::new(), fill()).unwrap();
    for n in 1..=3u8 {
        store.commit(message(n, "one of three")).unwrap();
    }
    for batch in store.take_batches() {
        JsFuture::from(db.write(&batch, None).unwrap())
            .await
            .unwrap();
    }
    // A fourth commit whose transaction is aborted after its writes were
    // issued: none of them is kept.
    store.commit(message(4, "aborted")).unwrap();
    let batch = store.take_batches().pop().unwrap();
    assert!(batch.len() >= 2);
    assert!(
        JsFuture::from(db.write_aborted(&batch).unwrap())
            .await
            .is_err()
    );
    db.close();
    // "Reload": a new connection, everything opened and checked again.
    let reloaded = reopen(name, &key).await;
    let peer = Address::from_slice(&[1; 16]).unwrap();
    let texts: Vec<Vec<u8>> = reloaded
        .history(&peer, 10)
        .unwrap()
        .into_iter()
        .map(|m| m.body.to_vec())
        .collect();
    assert_eq!(texts, vec![b"one of three".to_vec(); 3]);
    assert!(reloaded.get(Namespace::Setting, &[4]).unwrap().is_none());
    assert!(reloaded.get(Namespace::Setting, &[3]).unwrap().is_some());
    // Deletions are kept too.
    let db = ProfileDb::open(name).await.unwrap();
    let slot = match batch
        .iter()
        .find(|w| matches!(w, Write::Put { .. }))
        .unwrap()
    {
        Write::Put { slot, .. } => slot.clone(),
        Write::Delete { slot } => slot.clone(),
    };
    JsFuture::from(db.write(&vec![Write::Delete { slot }], None).unwrap())
        .await
        .unwrap();
    db.close();
    assert_eq!(
        reopen(name, &key).await.history(&peer, 10).unwrap().len(),
        3
    );
    ProfileDb::delete(name).await.unwrap();
}

#[wasm_bindgen_test]
async fn the_header_is_stored_and_opens_only_with_the_passphrase() {
    let name = "test-header";
    let _ = ProfileDb::delete(name).await;
    let mut rng = postern_browser::profile::rng();
    let (h, key) = Header::create(b"pass phrase", KdfParams::TEST_ONLY, &mut rng).unwrap();
    let db = ProfileDb::open(name).await.unwrap();
    JsFuture::from(db.write(&Vec::new(), Some(&h.to_bytes())).unwrap())
        .await
        .unwrap();
    db.close();
    let db = ProfileDb::open(name).await.unwrap();
    let stored = Header::parse(&db.header().await.unwrap().unwrap()).unwrap();
    db.close();
    assert_eq!(*stored.open(b"pass phrase").unwrap(), *key);
    assert_eq!(
        stored.open(b"wrong").unwrap_err(),
        HeaderError::WrongPassphrase
    );
    ProfileDb::delete(name).await.unwrap();
}

#[wasm_bindgen_test]
async fn one_tab_at_a_time_holds_a_profile() {
    let held = lock::acquire("test-lock").await.unwrap();
    assert_eq!(
        lock::acquire("test-lock").await.unwrap_err(),
        LockError::Held
    );
    drop(held);
    // Released: it can be taken again (the release is asynchronous).
    let mut again = None;
    for _ in 0..50 {
        if let Ok(l) = lock::acquire("test-lock").await {
            again = Some(l);
            break;
        }
        postern_link::Runtime::sleep(
            &postern_browser::runtime::BrowserRuntime,
            std::time::Duration::from_millis(20),
        )
        .await;
    }
    assert!(again.is_some());
}

#[wasm_bindgen_test]
fn a_chromium_recording_is_remuxed_and_checked_in_wasm() {
    let webm = include_bytes!("../../../media/tests/data/chromium-mediarecorder.webm");
    let ogg = postern_media::voice::from_webm(webm).unwrap();
    assert!(postern_media::voice::validate_voice_clip(&ogg).is_ok());
    assert!(postern_media::voice::from_webm(&webm[..webm.len() / 3]).is_err());
}

/// "Remember this browser": the key comes back from the next load's
/// point of view (a fresh read of the database), bound to its profile's
/// name, and is gone once forgotten; a damaged entry recalls nothing.
#[wasm_bindgen_test]
async fn a_remembered_key_is_recalled_bound_to_its_profile_and_forgotten() {
    use postern_browser::remember;
    let key = [0x5a; 32];
    assert!(remember::recall("remember-a").await.unwrap().is_none());
    remember::remember("remember-a", &key).await.unwrap();
    assert_eq!(*remember::recall("remember-a").await.unwrap().unwrap(), key);
    assert!(remember::is_remembered("remember-a").await);
    // Another profile's database holds nothing of it.
    assert!(remember::recall("remember-b").await.unwrap().is_none());
    // Remembering again replaces the key (and its wrapping key).
    remember::remember("remember-a", &[0x33; 32]).await.unwrap();
    assert_eq!(
        *remember::recall("remember-a").await.unwrap().unwrap(),
        [0x33; 32]
    );
    remember::forget("remember-a").await.unwrap();
    assert!(remember::recall("remember-a").await.unwrap().is_none());
    assert!(!remember::is_remembered("remember-a").await);
}
