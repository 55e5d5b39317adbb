//! Postern's media handling, beside the core: the parsers of the largest
//! hostile inputs a user meets — image files and voice clips — and QR
//! codes, kept out of `postern-core` so that the trusted core links no
//! image decoder and no container parser.
//!
//! Everything here is a pure function of its input with a bound on it
//! (`MAX_IMAGE_INPUT_BYTES`, pixels per side, `MAX_VOICE_BYTES`, the
//! packet count); errors are the core's typed [`postern_core::Error`].
//! It does no I/O and builds for `wasm32-unknown-unknown`.
//!
//! - [`images`]: JPEG/PNG decoded within limits and re-encoded, so none of
//!   the original's metadata (EXIF, GPS, comments) leaves the device; a
//!   thumbnail. The only importer of the `image` crate.
//! - [`voice`]: the Opus-in-Ogg container check and the duration limit.
//!   The only importer of the `ogg` crate.
//! - [`qr`]: QR codes for safety numbers and invitations.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod images;
pub mod qr;
pub mod voice;
