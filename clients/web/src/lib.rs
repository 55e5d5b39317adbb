//! `postern-web`: Postern's screens (`postern-ui`) in a browser tab, on
//! eframe's web runner. The page's [`backend`] owns the unlocked profile
//! (sealed in IndexedDB, `postern-browser`), runs the client service
//! (`postern-app`) over WebTransport links to the relays, and talks to the
//! screens with the same `Command`s and `Event`s as the desktop app's
//! worker.
//!
//! What the page trusts: the app itself (this module, its JavaScript
//! loader and `network.json`, which names the network's directory
//! authorities). The signed directory the same origin serves is checked
//! against those authorities; relays and their WebTransport certificate
//! hashes come only from it.

#[cfg(target_arch = "wasm32")]
mod accesskit;
#[cfg(target_arch = "wasm32")]
pub mod backend;
#[cfg(target_arch = "wasm32")]
pub mod boot;
#[cfg(target_arch = "wasm32")]
mod files;
#[cfg(target_arch = "wasm32")]
mod notify;
#[cfg(target_arch = "wasm32")]
mod page;
#[cfg(target_arch = "wasm32")]
mod voice;
pub mod wire;
#[cfg(target_arch = "wasm32")]
pub mod worker;

#[cfg(target_arch = "wasm32")]
pub use page::start;
#[cfg(target_arch = "wasm32")]
pub use worker::worker_main;
