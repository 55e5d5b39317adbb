//! Codecs: the only place bytes from outside are turned into structures.
//!
//! Every decoder checks an explicit size bound *before* parsing, and every
//! structure carries a version that is checked right after.

pub mod padding;

/// prost types generated from `core/proto/e2e.proto`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/postern.e2e.v1.rs"));
}

/// prost types generated from `core/proto/message.proto`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod message_proto {
    include!(concat!(env!("OUT_DIR"), "/postern.message.v1.rs"));
}

/// prost types generated from `core/proto/relay.proto`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod relay_proto {
    include!(concat!(env!("OUT_DIR"), "/postern.relay.v1.rs"));
}

/// prost types generated from `core/proto/local.proto`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod local_proto {
    include!(concat!(env!("OUT_DIR"), "/postern.local.v1.rs"));
}

/// prost types generated from `core/proto/directory.proto`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod directory_proto {
    include!(concat!(env!("OUT_DIR"), "/postern.directory.v1.rs"));
}

use crate::error::{Error, Result};

/// Decodes a prost message after checking the input against `max` bytes.
///
/// prost consumes the whole buffer (a trailing fragment is an error), so a
/// successful decode has read exactly the input.
pub fn decode_bounded<M: prost::Message + Default>(
    bytes: &[u8],
    max: usize,
    what: &'static str,
) -> Result<M> {
    if bytes.len() > max {
        return Err(Error::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    M::decode(bytes).map_err(|_| Error::Malformed { what })
}

/// Encodes a prost message.
pub fn encode<M: prost::Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

/// Checks that `bytes` has exactly `len` bytes and returns it as an array.
pub fn fixed<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N]> {
    <[u8; N]>::try_from(bytes).map_err(|_| Error::Malformed { what })
}
