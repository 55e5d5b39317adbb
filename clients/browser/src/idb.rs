//! The profile's database in the browser (IndexedDB): one database per
//! profile with two object stores, `header` (the unencrypted
//! [`crate::sealed::Header`] and nothing else) and `values` (sealed
//! values under their opaque slot names). Each committed change set is
//! written by one read-write transaction, so the browser keeps all of it
//! or none of it; [`Durable`] tells when what was committed is on disk.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    IdbDatabase, IdbFactory, IdbOpenDbRequest, IdbRequest, IdbTransaction, IdbTransactionMode,
};

use crate::js;
use crate::sealed::{Batch, Write};

const VALUES: &str = "values";
const HEADER: &str = "header";
const HEADER_KEY: &str = "header";
/// The database schema version.
const VERSION: u32 = 1;

/// Why the browser's storage failed, in the browser's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdbError {
    /// No IndexedDB here (a private window of some browsers).
    #[error("this browser does not let the page store data")]
    Unavailable,
    /// The browser's storage quota is used up.
    #[error("the browser's storage for this page is full")]
    QuotaExceeded,
    /// Another failure, named by the browser.
    #[error("the browser's storage failed ({0})")]
    Failed(String),
}

pub(crate) fn failed(e: &JsValue) -> IdbError {
    match js::error_name(e).as_str() {
        "QuotaExceededError" => IdbError::QuotaExceeded,
        name => IdbError::Failed(name.to_owned()),
    }
}

pub(crate) fn factory() -> Result<IdbFactory, IdbError> {
    js::global("indexedDB")
        .and_then(|f| f.dyn_into::<IdbFactory>().ok())
        .ok_or(IdbError::Unavailable)
}

/// A promise settled by a request's `success` or `error` event.
pub(crate) fn request_done(req: &IdbRequest) -> Promise {
    let r = req.clone();
    Promise::new(&mut |resolve, reject| {
        let done = r.clone();
        let ok = Closure::once_into_js(move |_e: web_sys::Event| {
            let v = done.result().unwrap_or(JsValue::UNDEFINED);
            let _ = resolve.call1(&JsValue::NULL, &v);
        });
        let err_req = r.clone();
        let err = Closure::once_into_js(move |_e: web_sys::Event| {
            let e = err_req
                .error()
                .ok()
                .flatten()
                .map_or(JsValue::NULL, JsValue::from);
            let _ = reject.call1(&JsValue::NULL, &e);
        });
        r.set_onsuccess(Some(ok.unchecked_ref()));
        r.set_onerror(Some(err.unchecked_ref()));
    })
}

/// A promise settled when a transaction completes (resolved) or aborts
/// or fails (rejected).
pub(crate) fn transaction_done(tx: &IdbTransaction) -> Promise {
    let t = tx.clone();
    Promise::new(&mut |resolve, reject| {
        let ok = Closure::once_into_js(move |_e: web_sys::Event| {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let err_tx = t.clone();
        let reject2 = reject.clone();
        let err = Closure::once_into_js(move |_e: web_sys::Event| {
            let e = err_tx.error().map_or(JsValue::NULL, JsValue::from);
            let _ = reject.call1(&JsValue::NULL, &e);
        });
        let abort_tx = t.clone();
        let abort = Closure::once_into_js(move |_e: web_sys::Event| {
            let e = abort_tx.error().map_or(JsValue::NULL, JsValue::from);
            let _ = reject2.call1(&JsValue::NULL, &e);
        });
        t.set_oncomplete(Some(ok.unchecked_ref()));
        t.set_onerror(Some(err.unchecked_ref()));
        t.set_onabort(Some(abort.unchecked_ref()));
    })
}

/// One profile's database.
#[derive(Debug, Clone)]
pub struct ProfileDb {
    db: IdbDatabase,
}

impl ProfileDb {
    /// Opens (creating if needed) the database `name`.
    pub async fn open(name: &str) -> Result<ProfileDb, IdbError> {
        let req: IdbOpenDbRequest = factory()?
            .open_with_u32(name, VERSION)
            .map_err(|e| failed(&e))?;
        let upgrading = req.clone();
        let upgrade = Closure::once_into_js(move |_e: web_sys::Event| {
            if let Some(db) = upgrading
                .result()
                .ok()
                .and_then(|d| d.dyn_into::<IdbDatabase>().ok())
            {
                let names = db.object_store_names();
                for store in [VALUES, HEADER] {
                    if !names.contains(store) {
                        let _ = db.create_object_store(store);
                    }
                }
            }
        });
        req.set_onupgradeneeded(Some(upgrade.unchecked_ref()));
        let db = JsFuture::from(request_done(&req))
            .await
            .map_err(|e| failed(&e))?
            .dyn_into::<IdbDatabase>()
            .map_err(|_| IdbError::Failed("open".into()))?;
        Ok(ProfileDb { db })
    }

    /// The names of this origin's databases (`indexedDB.databases()`).
    pub async fn names() -> Result<Vec<String>, IdbError> {
        let f = factory()?;
        let list = js::method(&f, "databases").ok_or(IdbError::Unavailable)?;
        let p: Promise = list
            .call0(&f)
            .map_err(|e| failed(&e))?
            .dyn_into()
            .map_err(|_| IdbError::Failed("databases".into()))?;
        let all: Array = JsFuture::from(p)
            .await
            .map_err(|e| failed(&e))?
            .dyn_into()
            .map_err(|_| IdbError::Failed("databases".into()))?;
        Ok(all
            .iter()
            .filter_map(|d| js_sys::Reflect::get(&d, &JsValue::from_str("name")).ok())
            .filter_map(|n| n.as_string())
            .collect())
    }

    /// Deletes the database `name` (a profile the user removes, or one
    /// whose creation did not finish).
    pub async fn delete(name: &str) -> Result<(), IdbError> {
        let req = factory()?.delete_database(name).map_err(|e| failed(&e))?;
        JsFuture::from(request_done(&req))
            .await
            .map(|_| ())
            .map_err(|e| failed(&e))
    }

    /// Closes it (another tab, or a deletion, may then go on).
    pub fn close(&self) {
        self.db.close();
    }

    fn transaction(
        &self,
        stores: &[&str],
        mode: IdbTransactionMode,
    ) -> Result<IdbTransaction, IdbError> {
        let names = Array::new();
        for s in stores {
            names.push(&JsValue::from_str(s));
        }
        self.db
            .transaction_with_str_sequence_and_mode(&names, mode)
            .map_err(|e| failed(&e))
    }

    /// The header, if the profile has one.
    pub async fn header(&self) -> Result<Option<Vec<u8>>, IdbError> {
        let tx = self.transaction(&[HEADER], IdbTransactionMode::Readonly)?;
        let store = tx.object_store(HEADER).map_err(|e| failed(&e))?;
        let req = store
            .get(&JsValue::from_str(HEADER_KEY))
            .map_err(|e| failed(&e))?;
        let v = JsFuture::from(request_done(&req))
            .await
            .map_err(|e| failed(&e))?;
        Ok(v.dyn_into::<Uint8Array>().ok().map(|a| a.to_vec()))
    }

    /// Every stored (slot, value), read in one transaction.
    pub async fn values(&self) -> Result<Vec<(String, Vec<u8>)>, IdbError> {
        let tx = self.transaction(&[VALUES], IdbTransactionMode::Readonly)?;
        let store = tx.object_store(VALUES).map_err(|e| failed(&e))?;
        let keys = store.get_all_keys().map_err(|e| failed(&e))?;
        let values = store.get_all().map_err(|e| failed(&e))?;
        let keys: Array = JsFuture::from(request_done(&keys))
            .await
            .map_err(|e| failed(&e))?
            .dyn_into()
            .map_err(|_| IdbError::Failed("keys".into()))?;
        let values: Array = JsFuture::from(request_done(&values))
            .await
            .map_err(|e| failed(&e))?
            .dyn_into()
            .map_err(|_| IdbError::Failed("values".into()))?;
        let mut out = Vec::with_capacity(keys.length() as usize);
        for (k, v) in keys.iter().zip(values.iter()) {
            // Anything that is not a slot name and bytes is not ours: it
            // is handed on as such, and refused by the sealed format.
            let slot = k.as_string().unwrap_or_default();
            let bytes = v
                .dyn_into::<Uint8Array>()
                .map(|a| a.to_vec())
                .unwrap_or_default();
            out.push((slot, bytes));
        }
        Ok(out)
    }

    /// Starts one read-write transaction applying `batch` (and replacing
    /// the header when `header` is given); its promise settles when the
    /// browser has committed it or given up. Transactions complete in the
    /// order they were started.
    pub fn write(&self, batch: &Batch, header: Option<&[u8]>) -> Result<Promise, IdbError> {
        let tx = self.transaction(&[VALUES, HEADER], IdbTransactionMode::Readwrite)?;
        let done = transaction_done(&tx);
        let values = tx.object_store(VALUES).map_err(|e| failed(&e))?;
        for w in batch {
            let r = match w {
                Write::Put { slot, value } => values.put_with_key(
                    &Uint8Array::from(value.as_slice()),
                    &JsValue::from_str(slot),
                ),
                Write::Delete { slot } => values.delete(&JsValue::from_str(slot)),
            };
            if let Err(e) = r {
                let _ = tx.abort();
                return Err(failed(&e));
            }
        }
        if let Some(h) = header {
            let store = tx.object_store(HEADER).map_err(|e| failed(&e))?;
            if let Err(e) = store.put_with_key(&Uint8Array::from(h), &JsValue::from_str(HEADER_KEY))
            {
                let _ = tx.abort();
                return Err(failed(&e));
            }
        }
        Ok(done)
    }
}

impl ProfileDb {
    /// Issues `batch`'s writes in a transaction, then aborts it: what a
    /// crash or a failure in the middle of a commit leaves (tests).
    #[doc(hidden)]
    pub fn write_aborted(&self, batch: &Batch) -> Result<Promise, IdbError> {
        let tx = self.transaction(&[VALUES, HEADER], IdbTransactionMode::Readwrite)?;
        let done = transaction_done(&tx);
        let values = tx.object_store(VALUES).map_err(|e| failed(&e))?;
        for w in batch {
            if let Write::Put { slot, value } = w {
                values
                    .put_with_key(
                        &Uint8Array::from(value.as_slice()),
                        &JsValue::from_str(slot),
                    )
                    .map_err(|e| failed(&e))?;
            }
        }
        tx.abort().map_err(|e| failed(&e))?;
        Ok(done)
    }
}

/// What has been committed in memory and is not yet known to be on disk.
/// The platform's links wait on it before sending anything, so no frame
/// that depends on a change (a message sent, a fetched item acknowledged)
/// leaves before the change is stored.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    inner: Rc<RefCell<DurableState>>,
}

#[derive(Debug, Default)]
struct DurableState {
    pending: Vec<Promise>,
    failed: Option<IdbError>,
}

impl Durable {
    /// Follows one more transaction.
    pub fn push(&self, p: Promise) {
        self.inner.borrow_mut().pending.push(p);
    }

    /// Records a failure to start one (the profile can no longer be
    /// stored: nothing more may leave).
    pub fn fail(&self, e: IdbError) {
        self.inner.borrow_mut().failed.get_or_insert(e);
    }

    /// Waits until everything committed so far is stored; after a failed
    /// transaction, always that failure.
    pub async fn wait(&self) -> Result<(), IdbError> {
        loop {
            let next = {
                let mut s = self.inner.borrow_mut();
                if let Some(e) = &s.failed {
                    return Err(e.clone());
                }
                if s.pending.is_empty() {
                    return Ok(());
                }
                s.pending.remove(0)
            };
            if let Err(e) = JsFuture::from(next).await {
                let e = failed(&e);
                self.fail(e.clone());
                return Err(e);
            }
        }
    }
}
