//! Crypto facades. Each wraps exactly one external library; nothing else in
//! Postern imports those libraries.
//!
//! - [`signal`]: Signal's libsignal (PQXDH, Double Ratchet with SPQR,
//!   sealed sender, safety numbers).
//! - [`kdf`]: Argon2id (RustCrypto `argon2`), for keys derived from
//!   passphrases.
//! - [`hash`]: SHA-256 (RustCrypto `sha2`).
//! - [`aead`]: XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`), for
//!   Postern's own encrypted containers (profile backups).
//! - [`sphinx`]: Nym's `sphinx-packet` (onion packets).

pub mod aead;
pub mod hash;
pub mod kdf;
pub mod signal;
pub mod sphinx;
