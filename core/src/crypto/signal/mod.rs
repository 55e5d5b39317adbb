//! The libsignal facade: the only module in Postern that imports
//! `libsignal-protocol` (an unmodified copy of Signal's libsignal v0.85.3).
//!
//! Everything above this module works with Postern types: [`IdentitySecret`],
//! [`IdentityPublic`], [`Bundle`], byte strings, and the record store.
//! This module
//! - converts between those and libsignal's types,
//! - backs libsignal's async store traits with the core's synchronous
//!   [`Overlay`](crate::store::Overlay) (see `drive` for how the futures are run),
//! - maps `SignalProtocolError` to Postern's typed [`Error`] without
//!   carrying message contents along,
//! - takes time and randomness from its caller: it never calls an API of
//!   libsignal that reads the clock or the OS RNG (`KyberPreKeyRecord::generate`
//!   and `sealed_sender_decrypt` do; this module uses `KyberPreKeyRecord::new`
//!   and `sealed_sender_decrypt_to_usmc` plus the session decrypt calls).
//!
//! One file per concern:
//!
//! | file | holds |
//! |---|---|
//! | `identity.rs` | identity keys, the local identity record, the sealed-sender certificate chain |
//! | `prekeys.rs` | our signed EC, Kyber and one-time prekeys |
//! | `bundle.rs` | building our prekey bundle; decoding and verifying a contact's |
//! | `store.rs` | libsignal's store traits over the `Overlay`; error mapping |
//! | `session.rs` | PQXDH setup, Double Ratchet encrypt and decrypt |
//! | `spqr.rs` | the pre-MAC check of the SPQR field |
//! | `sealed.rs` | sealed sender |
//! | `safety.rs` | safety numbers |
//! | `xeddsa.rs` | XEdDSA keys that are not Signal sessions: queue keys, authority and descriptor keys |

mod bundle;
mod identity;
mod prekeys;
mod safety;
mod sealed;
mod session;
mod spqr;
mod store;
mod xeddsa;

use bundle::{check_bundle_signatures, corrupt};
use prekeys::{get_record, id_key, local_identity};
use session::{decrypt_inner, parse_inner};
use spqr::check_spqr_field;
use store::{Adapter, with_stores};

pub use bundle::{Bundle, build_bundle, decode_bundle, verify_bundle};
pub use identity::{
    IdentityPublic, IdentitySecret, SigningSecret, issue_sender_certificate, new_local_identity,
};
pub use prekeys::{new_kyber_prekey, new_one_time_prekey, new_signed_prekey};
pub use safety::{SafetyNumber, compare_scanned, safety_number};
pub use sealed::{open, seal};
pub use session::{decrypt, encrypt, initiate_session};
pub use xeddsa::{
    AuthorityPublic, AuthoritySecret, DescriptorPublic, DescriptorSecret, QueuePublic, QueueSecret,
};

use core::future::Future;
use core::task::{Context, Poll, Waker};

use libsignal_protocol as ls;
use rand_core::{CryptoRng, RngCore};

use crate::address::Address;
use crate::error::{Error, Result};

/// The only device id Postern uses: one identity, one device. Evaluated at
/// compile time, so the `panic!` can only ever fail the build.
#[allow(clippy::panic)]
const DEVICE_ID: ls::DeviceId = match ls::DeviceId::new(1) {
    Ok(d) => d,
    Err(_) => panic!("device id 1 is valid"),
};

/// The version byte libsignal writes in front of a sealed-sender v1 message.
const SEALED_SENDER_V1_BYTE: u8 = 0x11;

/// Wire tag of a normal (established-session) message.
pub const CIPHERTEXT_WHISPER: u8 = 2;
/// Wire tag of a PreKey (session-initiating) message.
pub const CIPHERTEXT_PREKEY: u8 = 3;

/// Runs one of libsignal's store-driven futures to completion.
///
/// libsignal's store traits are `async` and their futures are not `Send`.
/// Postern's stores are synchronous (the [`Overlay`] reads from memory or
/// from a synchronous database handle), so every `.await` inside libsignal
/// resolves on the first poll. We therefore poll exactly once with a no-op
/// waker, on the caller's thread: no executor, no runtime, nothing that
/// needs `Send`, and it works the same on wasm32. A future that is still
/// pending after one poll would mean a store suspended, which ours never
/// do; that is reported as [`Error::Bug`] instead of blocking.
fn drive<T>(fut: impl Future<Output = T>) -> Result<T> {
    let mut fut = core::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(Error::Bug("libsignal store future did not complete")),
    }
}

/// Bridges a caller-supplied `rand_core` RNG to the `rand` traits libsignal
/// takes (both are rand_core 0.9; this only erases the concrete type).
struct RngAdapter<'r, R: RngCore + CryptoRng>(&'r mut R);

impl<R: RngCore + CryptoRng> RngCore for RngAdapter<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}
impl<R: RngCore + CryptoRng> CryptoRng for RngAdapter<'_, R> {}

fn device_id() -> ls::DeviceId {
    DEVICE_ID
}

fn protocol_address(peer: &Address) -> ls::ProtocolAddress {
    ls::ProtocolAddress::new(peer.to_uuid_string(), device_id())
}

fn parse_protocol_address(addr: &ls::ProtocolAddress) -> Result<Address> {
    Address::parse_uuid_string(addr.name()).ok_or(Error::Bug("non-Postern protocol address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_reports_pending_as_bug() {
        let r = drive(core::future::pending::<()>());
        assert!(matches!(r, Err(Error::Bug(_))));
    }
}
