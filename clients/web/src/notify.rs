//! Browser notifications for new messages (the Notification API). The
//! screens decide when one is due and what it says (by default "New
//! message", without the sender or the text); the page shows it if the
//! user allowed notifications for this origin. Permission is asked once,
//! at a user's gesture (creating or unlocking the profile), never at load.

use js_sys::{Array, Function, Object, Reflect};
use wasm_bindgen::{JsCast as _, JsValue};

fn constructor() -> Option<Function> {
    Reflect::get(&js_sys::global(), &JsValue::from_str("Notification"))
        .ok()
        .and_then(|n| n.dyn_into::<Function>().ok())
}

fn permission(n: &Function) -> Option<String> {
    Reflect::get(n, &JsValue::from_str("permission"))
        .ok()
        .and_then(|p| p.as_string())
}

/// Asks for permission if the user has not answered yet (call it while
/// handling a user's gesture; the browser ignores it otherwise).
pub fn ask() {
    let Some(n) = constructor() else { return };
    if permission(&n).as_deref() != Some("default") {
        return;
    }
    if let Ok(f) = Reflect::get(&n, &JsValue::from_str("requestPermission"))
        .and_then(|f| f.dyn_into::<Function>())
    {
        // The answer only matters for the next notification.
        let _ = f.call0(&n);
    }
}

/// Shows a notification, if allowed; says nothing otherwise.
pub fn show(title: &str, body: &str) {
    let Some(n) = constructor() else { return };
    if permission(&n).as_deref() != Some("granted") {
        return;
    }
    let options = Object::new();
    let _ = Reflect::set(
        &options,
        &JsValue::from_str("body"),
        &JsValue::from_str(body),
    );
    // One at a time: a newer message replaces the shown one.
    let _ = Reflect::set(
        &options,
        &JsValue::from_str("tag"),
        &JsValue::from_str("postern-message"),
    );
    let _ = Reflect::construct(&n, &Array::of2(&JsValue::from_str(title), &options));
}
