//! Small helpers over the browser's JavaScript objects, for a page or a
//! worker alike (everything is looked up on the global object).

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast as _, JsValue};

/// A property of the global object (`window` or the worker's `self`).
pub(crate) fn global(name: &str) -> Option<JsValue> {
    Reflect::get(&js_sys::global(), &JsValue::from_str(name))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// `obj[name]`, if it is a function.
pub(crate) fn method(obj: &JsValue, name: &str) -> Option<Function> {
    Reflect::get(obj, &JsValue::from_str(name))
        .ok()?
        .dyn_into::<Function>()
        .ok()
}

/// A promise resolved after `ms` milliseconds (`setTimeout`); resolved
/// at once where there is no timer.
pub(crate) fn timeout(ms: u32) -> Promise {
    Promise::new(&mut |resolve, _reject| {
        let set = global("setTimeout").and_then(|_| method(&js_sys::global(), "setTimeout"));
        let queued = set.is_some_and(|f| {
            f.call2(&js_sys::global(), &resolve, &JsValue::from(ms))
                .is_ok()
        });
        if !queued {
            let _ = resolve.call0(&JsValue::NULL);
        }
    })
}

/// The error's `name` ("NotAllowedError", "QuotaExceededError", …) — the
/// browser's own words, never text from the network.
pub(crate) fn error_name(e: &JsValue) -> String {
    Reflect::get(e, &JsValue::from_str("name"))
        .ok()
        .and_then(|n| n.as_string())
        .unwrap_or_else(|| "Error".to_owned())
}
