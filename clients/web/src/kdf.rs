//! Argon2id off the page's thread: the profile's passphrase is checked
//! (or a new profile's key wrapped) in a dedicated worker running this
//! same module (`www/kdf-worker.js`), so the page keeps drawing — and
//! says "Unlocking…" — for the second or so it takes. The passphrase and
//! the key cross between the page and the worker by `postMessage` (in
//! memory only, never stored).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use js_sys::{Object, Promise, Reflect, Uint8Array};
use postern_browser::sealed::{HEADER_LEN, Header, HeaderError};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Worker, WorkerOptions, WorkerType};
use zeroize::Zeroizing;

/// In the worker: the profile key the passphrase opens from the header
/// (32 bytes), or an error named "wrong" or "malformed".
#[wasm_bindgen]
pub fn kdf_open(header: &[u8], passphrase: &[u8]) -> Result<Vec<u8>, JsValue> {
    let h = Header::parse(header).map_err(|_| JsValue::from_str("malformed"))?;
    match h.open(passphrase) {
        Ok(key) => Ok(key.to_vec()),
        Err(HeaderError::WrongPassphrase) => Err(JsValue::from_str("wrong")),
        Err(_) => Err(JsValue::from_str("malformed")),
    }
}

/// In the worker: a new random profile key wrapped by `passphrase` (the
/// shipping parameters): the header's bytes followed by the key.
#[wasm_bindgen]
pub fn kdf_create(passphrase: &[u8]) -> Result<Vec<u8>, JsValue> {
    let (h, key) = Header::create(
        passphrase,
        crate::backend::KDF,
        &mut postern_browser::profile::rng(),
    )
    .map_err(|_| JsValue::from_str("malformed"))?;
    let mut out = h.to_bytes();
    out.extend_from_slice(key.as_ref());
    Ok(out)
}

type Pending = Rc<RefCell<BTreeMap<u32, (js_sys::Function, js_sys::Function)>>>;

/// The page's handle on the worker (started on first use).
struct KdfWorker {
    worker: Worker,
    pending: Pending,
    next: u32,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
}

thread_local! {
    static WORKER: RefCell<Option<KdfWorker>> = const { RefCell::new(None) };
}

fn start() -> Result<KdfWorker, JsValue> {
    let opts = WorkerOptions::new();
    opts.set_type(WorkerType::Module);
    let worker = Worker::new_with_options("kdf-worker.js", &opts)?;
    let pending: Pending = Rc::default();
    let answers = pending.clone();
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            let data = e.data();
            let Some(id) = Reflect::get(&data, &JsValue::from_str("id"))
                .ok()
                .and_then(|v| v.as_f64())
            else {
                return;
            };
            let Some((resolve, reject)) = answers.borrow_mut().remove(&(id as u32)) else {
                return;
            };
            match Reflect::get(&data, &JsValue::from_str("ok")) {
                Ok(v) if !v.is_undefined() => {
                    let _ = resolve.call1(&JsValue::NULL, &v);
                }
                _ => {
                    let err =
                        Reflect::get(&data, &JsValue::from_str("err")).unwrap_or(JsValue::NULL);
                    let _ = reject.call1(&JsValue::NULL, &err);
                }
            }
        });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    Ok(KdfWorker {
        worker,
        pending,
        next: 1,
        _on_message: on_message,
    })
}

/// Posts one job; resolves with the worker's bytes.
async fn call(op: &str, header: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let promise = WORKER
        .with(|w| -> Result<Promise, JsValue> {
            let mut w = w.borrow_mut();
            if w.is_none() {
                *w = Some(start()?);
            }
            let Some(kw) = w.as_mut() else {
                return Err(JsValue::from_str("no worker"));
            };
            let id = kw.next;
            kw.next = kw.next.wrapping_add(1);
            let pending = kw.pending.clone();
            let p = Promise::new(&mut |resolve, reject| {
                pending.borrow_mut().insert(id, (resolve, reject));
            });
            let msg = Object::new();
            Reflect::set(&msg, &JsValue::from_str("id"), &JsValue::from(id))?;
            Reflect::set(&msg, &JsValue::from_str("op"), &JsValue::from_str(op))?;
            Reflect::set(
                &msg,
                &JsValue::from_str("header"),
                &Uint8Array::from(header),
            )?;
            Reflect::set(
                &msg,
                &JsValue::from_str("pass"),
                &Uint8Array::from(passphrase),
            )?;
            kw.worker.post_message(&msg)?;
            Ok(p)
        })
        .map_err(|_| "the key derivation worker did not start".to_owned())?;
    match JsFuture::from(promise).await {
        Ok(v) => Ok(Zeroizing::new(Uint8Array::new(&v).to_vec())),
        Err(e) => Err(e.as_string().unwrap_or_else(|| "failed".to_owned())),
    }
}

/// The profile key from `header` with `passphrase`, derived in the worker.
pub async fn open(header: Header, passphrase: &[u8]) -> Result<Zeroizing<[u8; 32]>, HeaderError> {
    match call("open", &header.to_bytes(), passphrase).await {
        Ok(bytes) => {
            let key: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| HeaderError::Malformed)?;
            Ok(Zeroizing::new(key))
        }
        Err(e) if e == "wrong" => Err(HeaderError::WrongPassphrase),
        Err(_) => Err(HeaderError::Malformed),
    }
}

/// A new profile's header and key, made in the worker.
pub async fn create(passphrase: &[u8]) -> Result<(Header, Zeroizing<[u8; 32]>), String> {
    let bytes = call("create", &[], passphrase).await?;
    let (h, k) = bytes.split_at_checked(HEADER_LEN).ok_or("bad answer")?;
    let header = Header::parse(h).map_err(|e| e.to_string())?;
    let key: [u8; 32] = k.try_into().map_err(|_| "bad answer".to_owned())?;
    Ok((header, Zeroizing::new(key)))
}
