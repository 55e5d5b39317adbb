//! Files through the browser: picking them (a file input, so nothing but
//! what the user chose is read) and saving them (a download).

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, BlobPropertyBag, HtmlAnchorElement, HtmlInputElement, Url};

/// Largest file read from a pick.
pub const MAX_PICK_BYTES: f64 = postern_core::consts::MAX_ATTACHMENT_BYTES as f64;

/// Lets the user pick files (`accept`: e.g. "image/png,image/jpeg");
/// returns their names and bytes. Files larger than `max` are named in
/// the second list, unread.
pub async fn pick(
    accept: Option<&str>,
    multiple: bool,
    max: f64,
) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else {
        return (Vec::new(), Vec::new());
    };
    let Ok(input) = doc
        .create_element("input")
        .map_err(|_| ())
        .and_then(|e| e.dyn_into::<HtmlInputElement>().map_err(|_| ()))
    else {
        return (Vec::new(), Vec::new());
    };
    input.set_type("file");
    input.set_multiple(multiple);
    if let Some(a) = accept {
        input.set_accept(a);
    }
    let changed = {
        let input = input.clone();
        Promise::new(&mut |resolve, _| {
            let done = Closure::once_into_js(move |_e: web_sys::Event| {
                let _ = resolve.call0(&JsValue::NULL);
            });
            input.set_onchange(Some(done.unchecked_ref()));
            // A cancelled dialog fires `cancel` (nothing picked).
            let _ = input.add_event_listener_with_callback("cancel", done.unchecked_ref());
        })
    };
    input.click();
    let _ = JsFuture::from(changed).await;
    let mut files = Vec::new();
    let mut too_large = Vec::new();
    if let Some(list) = input.files() {
        for i in 0..list.length() {
            let Some(f) = list.get(i) else { continue };
            if f.size() > max {
                too_large.push(f.name());
                continue;
            }
            if let Ok(buf) = JsFuture::from(f.array_buffer()).await {
                files.push((f.name(), Uint8Array::new(&buf).to_vec()));
            }
        }
    }
    (files, too_large)
}

/// Offers `bytes` as a download named `name`.
pub fn download(name: &str, bytes: &[u8]) -> Result<(), JsValue> {
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| JsValue::from_str("no document"))?;
    let parts = Array::new();
    parts.push(&Uint8Array::from(bytes));
    let opts = BlobPropertyBag::new();
    opts.set_type("application/octet-stream");
    let blob = Blob::new_with_u8_array_sequence_and_options(&parts, &opts)?;
    let url = Url::create_object_url_with_blob(&blob)?;
    let a: HtmlAnchorElement = doc.create_element("a")?.dyn_into()?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    Url::revoke_object_url(&url)?;
    Ok(())
}
