//! The pre-MAC check of the SPQR field that keeps hostile bytes away from
//! code in libsignal's SPQR dependency that would panic on them.

use crate::error::{Error, Result};

/// Rejects SPQR fields that would make libsignal's SPQR code (spqr 0.85.3)
/// panic. libsignal feeds this field to SPQR *before* it checks the
/// message MAC, and SPQR's message decoder indexes past the end of a short
/// message, overflows a shift on an over-long varint, and underflows on
/// epoch 0. Anyone who can hand us bytes could otherwise crash the client.
/// This mirrors the header of SPQR's v1 message format
/// (`version | varint epoch | varint index | type | [varint chunk index ...]`)
/// and only lets through what SPQR decodes without panicking; the rest of
/// the message is authenticated by libsignal as usual.
pub(super) fn check_spqr_field(p: &[u8]) -> Result<()> {
    const SPQR_V1: u8 = 1;
    const MAX_VARINT_BYTES: usize = 10;
    let bad = || Error::Malformed {
        what: "Signal message (SPQR field)",
    };
    // Empty (no SPQR message) and other versions are handled by SPQR's
    // version negotiation without decoding the message.
    let Some((&version, rest)) = p.split_first() else {
        return Ok(());
    };
    if version != SPQR_V1 {
        return Ok(());
    }
    let varint = |buf: &[u8]| -> Option<(u64, usize)> {
        let mut v = 0u64;
        for (i, b) in buf.iter().enumerate().take(MAX_VARINT_BYTES) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some((v, i + 1));
            }
        }
        None
    };
    let (epoch, n) = varint(rest).ok_or_else(bad)?;
    let rest = rest.get(n..).ok_or_else(bad)?;
    let (index, n) = varint(rest).ok_or_else(bad)?;
    let rest = rest.get(n..).ok_or_else(bad)?;
    if epoch == 0 || u32::try_from(index).is_err() {
        return Err(bad());
    }
    // The message type byte must be present.
    let (_msg_type, rest) = rest.split_first().ok_or_else(bad)?;
    // A chunk, if any, starts with a varint that must also be bounded.
    if !rest.is_empty() {
        let (chunk_index, n) = varint(rest).ok_or_else(bad)?;
        if chunk_index > u64::from(u16::MAX) || rest.len() < n + 32 {
            return Err(bad());
        }
    }
    Ok(())
}
