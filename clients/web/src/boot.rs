//! What the page learns when it loads: the network (`network.json`, part
//! of the app: the directory authorities' keys) and the latest signed
//! directory the origin serves (`directory`), verified against them. A
//! directory that is unsigned, signed by others, tampered with or expired
//! is refused: the page then offers no relay.

use js_sys::{Promise, Reflect, Uint8Array};
use postern_browser::link::Listeners;
use postern_core::UnixTime;
use postern_core::crypto::signal::AuthorityPublic;
use postern_core::directory::Directory;
use serde::Deserialize;
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Largest `network.json` read.
const MAX_NETWORK_JSON: usize = 16 * 1024;

/// The app's network description (`network.json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkJson {
    /// The directory authorities (base64url public keys).
    authorities: Vec<String>,
    /// Signatures a directory needs.
    threshold: u32,
    /// Onion hops per path.
    hops: u8,
}

/// What the page starts with.
#[derive(Debug, Clone, Default)]
pub struct Boot {
    /// The authorities' keys (checked).
    pub authorities: Vec<Vec<u8>>,
    /// Signatures a directory needs.
    pub threshold: u32,
    /// Onion hops per path.
    pub hops: u8,
    /// The verified directory and its bytes.
    pub directory: Option<(Vec<u8>, Directory)>,
    /// Why there is none (shown at onboarding).
    pub problem: Option<String>,
}

impl Boot {
    /// The relays a browser can reach (their WebTransport listeners).
    pub fn listeners(&self) -> Listeners {
        self.directory
            .as_ref()
            .map(|(_, d)| Listeners::from_directory(d))
            .unwrap_or_default()
    }

    /// Verifies directory bytes against the app's authorities.
    pub fn verify(&self, bytes: &[u8], now: UnixTime) -> Result<Directory, postern_core::Error> {
        let keys = self
            .authorities
            .iter()
            .map(|k| AuthorityPublic::from_bytes(k))
            .collect::<Result<Vec<_>, _>>()?;
        let threshold = usize::try_from(self.threshold).unwrap_or(usize::MAX);
        Directory::verify(bytes, &keys, threshold, now)
    }
}

async fn fetch_bytes(path: &str, max: usize) -> Result<Vec<u8>, String> {
    let global = js_sys::global();
    let fetch = Reflect::get(&global, &JsValue::from_str("fetch"))
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or("this browser cannot fetch")?;
    let p: Promise = fetch
        .call1(&global, &JsValue::from_str(path))
        .map_err(|_| "fetch failed")?
        .dyn_into()
        .map_err(|_| "fetch failed")?;
    let resp: web_sys::Response = JsFuture::from(p)
        .await
        .map_err(|_| format!("cannot load {path}"))?
        .dyn_into()
        .map_err(|_| "fetch failed")?;
    if !resp.ok() {
        return Err(format!("{path}: HTTP {}", resp.status()));
    }
    let buf = JsFuture::from(resp.array_buffer().map_err(|_| "fetch failed")?)
        .await
        .map_err(|_| format!("cannot read {path}"))?;
    let bytes = Uint8Array::new(&buf);
    if bytes.length() as usize > max {
        return Err(format!("{path} is too large"));
    }
    Ok(bytes.to_vec())
}

/// Loads `network.json` and the directory, and verifies the directory.
pub async fn boot(now: UnixTime) -> Boot {
    let mut b = Boot::default();
    let net = match fetch_bytes("network.json", MAX_NETWORK_JSON).await {
        Ok(bytes) => serde_json::from_slice::<NetworkJson>(&bytes)
            .map_err(|_| "network.json is not valid".to_owned()),
        Err(e) => Err(e),
    };
    let net = match net {
        Ok(n) => n,
        Err(e) => {
            b.problem = Some(format!("This page does not say which network to use ({e})"));
            return b;
        }
    };
    match postern_app::setup::authority_keys(&net.authorities) {
        Ok(k) if !k.is_empty() => b.authorities = k,
        _ => {
            b.problem = Some("network.json names no valid directory authority".to_owned());
            return b;
        }
    }
    b.threshold = net.threshold.max(1);
    b.hops = net.hops.clamp(3, 5);
    match fetch_bytes("directory", postern_core::consts::MAX_DIRECTORY_BYTES).await {
        Ok(bytes) => match b.verify(&bytes, now) {
            Ok(d) => b.directory = Some((bytes, d)),
            Err(e) => {
                b.problem = Some(format!(
                    "The network directory this site serves is refused: it is not signed by the network's authorities, was altered, or is out of date ({e})"
                ));
            }
        },
        Err(e) => b.problem = Some(format!("No network directory: {e}")),
    }
    b
}
