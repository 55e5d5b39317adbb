//! The browser's clock, timers and randomness: the driver's `Runtime`.

use std::time::Duration;

use postern_core::UnixTime;
use postern_link::Runtime;
use wasm_bindgen_futures::JsFuture;

use crate::js;

/// `setTimeout`, `Date.now()`, `performance.now()` and
/// `crypto.getRandomValues` (through getrandom's Web Crypto backend).
#[derive(Debug, Clone, Copy, Default)]
pub struct BrowserRuntime;

impl Runtime for BrowserRuntime {
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        let ms = u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let p = js::timeout(ms);
        async move {
            let _ = JsFuture::from(p).await;
        }
    }

    fn fill_random(&self, out: &mut [u8]) {
        // Web Crypto cannot fail for sizes this small; if it ever did,
        // nothing must go on with predictable bytes.
        if getrandom::fill(out).is_err() {
            #[allow(clippy::panic)]
            {
                panic!("the browser's secure random generator failed");
            }
        }
    }

    fn now(&self) -> UnixTime {
        let ms = js_sys::Date::now();
        UnixTime(if ms.is_finite() && ms > 0.0 {
            ms as u64
        } else {
            0
        })
    }

    fn monotonic(&self) -> Duration {
        let ms = js::global("performance")
            .and_then(|p| js::method(&p, "now").map(|f| (p, f)))
            .and_then(|(p, f)| f.call0(&p).ok())
            .and_then(|v| v.as_f64())
            .unwrap_or_else(js_sys::Date::now);
        Duration::from_secs_f64((ms / 1000.0).max(0.0))
    }
}
