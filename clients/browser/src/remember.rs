//! "Remember this browser": the profile key kept for the next load of the
//! page, sealed (AES-256-GCM) under a WebCrypto key the page's scripts
//! cannot read (generated non-extractable; IndexedDB keeps it as an
//! opaque `CryptoKey`). It lives in a database of its own beside the
//! profile's (`<profile>-remembered`), so forgetting is deleting it.
//!
//! What it protects against, and what not (THREAT_MODEL.md): a script
//! that can read the origin's storage gets the sealed key and a handle it
//! cannot export; the browser itself keeps the wrapping key's bytes in its
//! profile directory, so a thief with the device's disk (and the browser's
//! own storage protection, if any) can open the profile without the
//! passphrase. That is the trade the user chooses with the checkbox.

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use postern_link::Runtime as _;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbOpenDbRequest, IdbTransactionMode};
use zeroize::Zeroizing;

use crate::idb::{IdbError, factory, failed, request_done, transaction_done};
use crate::js;
use crate::runtime::BrowserRuntime;

const STORE: &str = "key";
const ENTRY: &str = "key";
const IV_BYTES: usize = 12;

/// Why the key could not be remembered or recalled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RememberError {
    /// The browser's storage failed.
    #[error("{0}")]
    Storage(#[from] IdbError),
    /// No WebCrypto here, or it refused (named by the browser).
    #[error("the browser's cryptography failed ({0})")]
    Crypto(String),
}

fn crypto_failed(e: &JsValue) -> RememberError {
    RememberError::Crypto(js::error_name(e))
}

fn database(profile: &str) -> String {
    format!("{profile}-remembered")
}

async fn open(profile: &str) -> Result<IdbDatabase, RememberError> {
    let req: IdbOpenDbRequest = factory()?
        .open_with_u32(&database(profile), 1)
        .map_err(|e| failed(&e))?;
    let upgrading = req.clone();
    let upgrade = Closure::once_into_js(move |_e: web_sys::Event| {
        if let Some(db) = upgrading
            .result()
            .ok()
            .and_then(|d| d.dyn_into::<IdbDatabase>().ok())
            && !db.object_store_names().contains(STORE)
        {
            let _ = db.create_object_store(STORE);
        }
    });
    req.set_onupgradeneeded(Some(upgrade.unchecked_ref()));
    Ok(JsFuture::from(request_done(&req))
        .await
        .map_err(|e| failed(&e))?
        .dyn_into::<IdbDatabase>()
        .map_err(|_| IdbError::Failed("open".into()))?)
}

/// `crypto.subtle[name](...args)`, awaited.
async fn subtle(name: &str, args: &Array) -> Result<JsValue, RememberError> {
    let crypto = js::global("crypto").ok_or(RememberError::Crypto("no crypto".into()))?;
    let subtle = Reflect::get(&crypto, &JsValue::from_str("subtle"))
        .ok()
        .filter(|s| !s.is_undefined())
        .ok_or(RememberError::Crypto("no crypto.subtle".into()))?;
    let f = js::method(&subtle, name).ok_or(RememberError::Crypto(name.to_owned()))?;
    let p: Promise = f
        .apply(&subtle, args)
        .map_err(|e| crypto_failed(&e))?
        .dyn_into()
        .map_err(|_| RememberError::Crypto(name.to_owned()))?;
    JsFuture::from(p).await.map_err(|e| crypto_failed(&e))
}

fn object(pairs: &[(&str, &JsValue)]) -> Object {
    let o = Object::new();
    for (k, v) in pairs {
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o
}

/// AES-GCM parameters: this IV, the profile's name as associated data.
fn gcm(iv: &Uint8Array, profile: &str) -> Object {
    object(&[
        ("name", &JsValue::from_str("AES-GCM")),
        ("iv", iv),
        ("additionalData", &Uint8Array::from(profile.as_bytes())),
    ])
}

/// Keeps `key` for the next load of the page, replacing what was kept.
pub async fn remember(profile: &str, key: &[u8; 32]) -> Result<(), RememberError> {
    let algorithm = object(&[
        ("name", &JsValue::from_str("AES-GCM")),
        ("length", &JsValue::from(256)),
    ]);
    let usages = Array::of2(&"encrypt".into(), &"decrypt".into());
    let wrapping = subtle(
        "generateKey",
        &Array::of3(&algorithm, &JsValue::FALSE, &usages),
    )
    .await?;
    let mut iv = [0u8; IV_BYTES];
    BrowserRuntime.fill_random(&mut iv);
    let iv = Uint8Array::from(&iv[..]);
    let plain = Uint8Array::from(&key[..]);
    let sealed = subtle(
        "encrypt",
        &Array::of3(&gcm(&iv, profile), &wrapping, &plain),
    )
    .await;
    plain.fill(0, 0, plain.length());
    let sealed = Uint8Array::new(&sealed?);
    let entry = object(&[("key", &wrapping), ("iv", &iv), ("sealed", &sealed)]);
    let db = open(profile).await?;
    let tx = db
        .transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite)
        .map_err(|e| failed(&e))?;
    let done = transaction_done(&tx);
    tx.object_store(STORE)
        .and_then(|s| s.put_with_key(&entry, &JsValue::from_str(ENTRY)))
        .map_err(|e| failed(&e))?;
    let r = JsFuture::from(done).await.map_err(|e| failed(&e));
    db.close();
    Ok(r.map(|_| ())?)
}

/// The key kept for this profile, if any (and if it still opens).
pub async fn recall(profile: &str) -> Result<Option<Zeroizing<[u8; 32]>>, RememberError> {
    // Looking does not make the database.
    if !crate::idb::ProfileDb::names()
        .await?
        .contains(&database(profile))
    {
        return Ok(None);
    }
    let db = open(profile).await?;
    let entry = {
        let tx = db.transaction_with_str(STORE).map_err(|e| failed(&e))?;
        let req = tx
            .object_store(STORE)
            .and_then(|s| s.get(&JsValue::from_str(ENTRY)))
            .map_err(|e| failed(&e))?;
        JsFuture::from(request_done(&req))
            .await
            .map_err(|e| failed(&e))
    };
    db.close();
    let entry = entry?;
    if entry.is_undefined() || entry.is_null() {
        return Ok(None);
    }
    let field = |k: &str| Reflect::get(&entry, &JsValue::from_str(k)).ok();
    let (Some(wrapping), Some(iv), Some(sealed)) = (field("key"), field("iv"), field("sealed"))
    else {
        return Ok(None);
    };
    let Ok(iv) = iv.dyn_into::<Uint8Array>() else {
        return Ok(None);
    };
    let opened = subtle(
        "decrypt",
        &Array::of3(&gcm(&iv, profile), &wrapping, &sealed),
    )
    .await?;
    let bytes = Uint8Array::new(&opened);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.length() as usize != key.len() {
        return Ok(None);
    }
    bytes.copy_to(&mut key[..]);
    bytes.fill(0, 0, bytes.length());
    Ok(Some(key))
}

/// Whether a key is kept for this profile.
pub async fn is_remembered(profile: &str) -> bool {
    matches!(recall(profile).await, Ok(Some(_)))
}

/// Forgets the kept key (deletes its database).
pub async fn forget(profile: &str) -> Result<(), RememberError> {
    let req = factory()?
        .delete_database(&database(profile))
        .map_err(|e| failed(&e))?;
    JsFuture::from(request_done(&req))
        .await
        .map(|_| ())
        .map_err(|e| RememberError::Storage(failed(&e)))
}
