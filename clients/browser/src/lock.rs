//! One tab at a time per profile (Web Locks): a second tab is told the
//! profile is open elsewhere instead of writing beside the first.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::js;

/// A held lock, released when dropped (or when the tab closes).
#[derive(Debug)]
pub struct TabLock {
    release: Function,
}

impl Drop for TabLock {
    fn drop(&mut self) {
        let _ = self.release.call0(&JsValue::NULL);
    }
}

/// Why the lock was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another tab holds it.
    #[error("this profile is open in another tab or window")]
    Held,
    /// This browser has no Web Locks (then nothing stops two tabs).
    #[error("this browser cannot keep a profile to one tab")]
    Unavailable,
}

/// Takes the lock `name` if no other tab holds it.
pub async fn acquire(name: &str) -> Result<TabLock, LockError> {
    let locks = js::global("navigator")
        .and_then(|n| Reflect::get(&n, &JsValue::from_str("locks")).ok())
        .filter(|l| !l.is_undefined())
        .ok_or(LockError::Unavailable)?;
    let request = js::method(&locks, "request").ok_or(LockError::Unavailable)?;
    let options = Object::new();
    let _ = Reflect::set(&options, &JsValue::from_str("ifAvailable"), &JsValue::TRUE);
    // The callback learns whether the lock was granted, and returns a
    // promise that holds it until `release` is called.
    let (granted_tx, granted) = futures_channel();
    let mut release_slot: Option<Function> = None;
    let held = Promise::new(&mut |resolve, _| release_slot = Some(resolve));
    let release = release_slot.ok_or(LockError::Unavailable)?;
    let held_js = JsValue::from(held);
    let callback = Closure::once_into_js(move |lock: JsValue| -> JsValue {
        let got = !lock.is_null() && !lock.is_undefined();
        let _ = granted_tx.call1(&JsValue::NULL, &JsValue::from_bool(got));
        if got { held_js } else { JsValue::UNDEFINED }
    });
    let callback: Function = callback.unchecked_into();
    request
        .call3(&locks, &JsValue::from_str(name), &options, &callback)
        .map_err(|_| LockError::Unavailable)?;
    match JsFuture::from(granted).await.ok().and_then(|v| v.as_bool()) {
        Some(true) => Ok(TabLock { release }),
        Some(false) => Err(LockError::Held),
        None => Err(LockError::Unavailable),
    }
}

/// A promise and the function that resolves it.
fn futures_channel() -> (Function, Promise) {
    let mut slot: Option<Function> = None;
    let p = Promise::new(&mut |resolve, _| slot = Some(resolve));
    (slot.unwrap_or_else(|| Function::new_no_args("")), p)
}
