//! Relays over WebTransport, as browsers reach them: the session to the
//! relay's WebTransport listener is opened with `serverCertificateHashes`
//! set to the hashes in the relay's signed descriptor — never from
//! anything else — and carries one bidirectional stream of whole
//! 3,072-byte frames (docs/relay-protocol.md §1.1).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use js_sys::{Reflect, Uint8Array};
use postern_core::RelayAddress;
use postern_core::consts::FRAME_BYTES;
use postern_core::directory::{Directory, WebTransportInfo};
use postern_link::{Connect, Link, NetError, RELAY_PATH};
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    ReadableStreamDefaultReader, WebTransport, WebTransportBidirectionalStream, WebTransportHash,
    WebTransportOptions, WritableStreamDefaultWriter,
};

use crate::idb::Durable;
use crate::runtime::BrowserRuntime;

/// Where each relay of the verified directory listens for browsers.
#[derive(Debug, Clone, Default)]
pub struct Listeners(BTreeMap<String, (String, WebTransportInfo)>);

impl Listeners {
    /// The listeners of a verified directory's relays.
    pub fn from_directory(d: &Directory) -> Listeners {
        let mut m = BTreeMap::new();
        for r in &d.relays {
            if let Some(wt) = &r.webtransport {
                m.insert(
                    r.address.to_string(),
                    (r.address.host().to_owned(), wt.clone()),
                );
            }
        }
        Listeners(m)
    }

    /// The URL and certificate hashes for `relay`.
    pub fn get(&self, relay: &RelayAddress) -> Option<(String, Vec<[u8; 32]>)> {
        let (host, wt) = self.0.get(&relay.to_string())?;
        let host = if host.contains(':') {
            format!("[{}]", host.trim_matches(|c| c == '[' || c == ']'))
        } else {
            host.clone()
        };
        Some((
            format!("https://{host}:{}{RELAY_PATH}", wt.port),
            wt.cert_sha256.clone(),
        ))
    }

    /// How many relays a browser can reach.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none can be reached.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Opens WebTransport links to the relays of the current directory.
#[derive(Debug, Clone, Default)]
pub struct BrowserConnector {
    listeners: Rc<RefCell<Listeners>>,
    durable: Durable,
    rt: BrowserRuntime,
}

impl BrowserConnector {
    /// A connector for these listeners whose links send nothing before
    /// what `durable` follows is stored.
    pub fn new(listeners: Listeners, durable: Durable) -> BrowserConnector {
        BrowserConnector {
            listeners: Rc::new(RefCell::new(listeners)),
            durable,
            rt: BrowserRuntime,
        }
    }

    /// Follows a newer verified directory (its relays and their hashes).
    pub fn update(&self, listeners: Listeners) {
        *self.listeners.borrow_mut() = listeners;
    }
}

impl Connect for BrowserConnector {
    type Link = WtLink;
    type Runtime = BrowserRuntime;

    fn runtime(&self) -> &BrowserRuntime {
        &self.rt
    }

    async fn open(&self, relay: &RelayAddress) -> Result<WtLink, NetError> {
        let name = relay.to_string();
        let (url, hashes) = self
            .listeners
            .borrow()
            .get(relay)
            .ok_or_else(|| NetError::NoWebTransport(name.clone()))?;
        let mut link = WtLink::open(&url, &hashes)
            .await
            .map_err(|_| NetError::WebTransportRefused(name))?;
        link.durable = self.durable.clone();
        Ok(link)
    }
}

/// One WebTransport session and its stream of frames.
pub struct WtLink {
    transport: WebTransport,
    reader: ReadableStreamDefaultReader,
    writer: WritableStreamDefaultWriter,
    /// Bytes of the next frame received so far.
    buf: Vec<u8>,
    /// A read the browser has not answered yet: kept across a dropped
    /// `recv`, so that no bytes are lost (cancel safety).
    pending: Option<JsFuture>,
    /// Sending waits until every commit so far is stored.
    durable: Durable,
}

impl core::fmt::Debug for WtLink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "WtLink({} bytes buffered)", self.buf.len())
    }
}

impl WtLink {
    /// Opens a session accepting only a certificate with one of `hashes`.
    pub async fn open(url: &str, hashes: &[[u8; 32]]) -> Result<WtLink, JsValue> {
        let hashes: Vec<WebTransportHash> = hashes
            .iter()
            .map(|h| {
                let w = WebTransportHash::new();
                w.set_algorithm("sha-256");
                w.set_value_u8_array(&Uint8Array::from(&h[..]));
                w
            })
            .collect();
        let options = WebTransportOptions::new();
        options.set_server_certificate_hashes(&hashes);
        options.set_require_unreliable(false);
        let transport = WebTransport::new_with_options(url, &options)?;
        if let Err(e) = JsFuture::from(transport.ready()).await {
            transport.close();
            return Err(e);
        }
        let stream: WebTransportBidirectionalStream =
            JsFuture::from(transport.create_bidirectional_stream())
                .await?
                .dyn_into()?;
        let reader: ReadableStreamDefaultReader = stream.readable().get_reader().dyn_into()?;
        let writer = stream.writable().get_writer()?;
        Ok(WtLink {
            transport,
            reader,
            writer,
            buf: Vec::with_capacity(FRAME_BYTES),
            pending: None,
            durable: Durable::default(),
        })
    }
}

impl Link for WtLink {
    async fn send(&mut self, frame: &[u8]) -> Result<(), NetError> {
        if frame.len() != FRAME_BYTES {
            return Err(NetError::Usage("a frame is 3,072 bytes"));
        }
        // Nothing leaves before what it depends on is stored (a message
        // sent, an item acknowledged); storage that failed stops it all.
        self.durable.wait().await.map_err(|_| NetError::Closed)?;
        let chunk = Uint8Array::from(frame);
        JsFuture::from(self.writer.write_with_chunk(&chunk))
            .await
            .map(|_| ())
            .map_err(|_| NetError::Closed)
    }

    async fn recv(&mut self) -> Result<Vec<u8>, NetError> {
        while self.buf.len() < FRAME_BYTES {
            let read = self
                .pending
                .get_or_insert_with(|| JsFuture::from(self.reader.read()));
            let result = read.await;
            self.pending = None;
            let result = result.map_err(|_| NetError::Closed)?;
            let done = Reflect::get(&result, &JsValue::from_str("done"))
                .ok()
                .and_then(|d| d.as_bool())
                .unwrap_or(true);
            if done {
                return Err(NetError::Closed);
            }
            let value: Uint8Array = Reflect::get(&result, &JsValue::from_str("value"))
                .ok()
                .and_then(|v| v.dyn_into().ok())
                .ok_or(NetError::Closed)?;
            // The chunk's size is bounded by QUIC flow control; what is
            // beyond this frame stays for the next call.
            let start = self.buf.len();
            self.buf.resize(start + value.length() as usize, 0);
            if let Some(dst) = self.buf.get_mut(start..) {
                value.copy_to(dst);
            }
        }
        let rest = self.buf.split_off(FRAME_BYTES);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    async fn close(&mut self) -> Result<(), NetError> {
        let _ = JsFuture::from(self.writer.close()).await;
        self.transport.close();
        Ok(())
    }
}

impl Drop for WtLink {
    fn drop(&mut self) {
        self.transport.close();
    }
}
