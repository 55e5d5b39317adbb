//! Crypto facades. Each wraps exactly one external library; nothing else in
//! Postern imports those libraries.
//!
//! - [`signal`]: Signal's libsignal (PQXDH, Double Ratchet with SPQR,
//!   sealed sender, safety numbers).
//! - [`kdf`]: Argon2id (RustCrypto `argon2`), for keys derived from
//!   passphrases.

pub mod kdf;
pub mod signal;
