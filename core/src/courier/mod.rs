//! From application messages to relay blobs and back, sans IO.
//!
//! Everything put into a mailbox queue is a blob of exactly
//! [`BLOB_BYTES`], sealed (XChaCha20-Poly1305, random nonce) under the
//! queue's blob key, which only the queue's owner and the contact it was
//! given to know. Inside: a fragment of a larger message (a sealed-sender
//! message, an introduction, an invitation payload) or one attachment
//! chunk. A relay sees uniform ciphertext; so does the onion layer.
//!
//! This module also keeps the client's routing state in the store (our
//! queues, where to send to each contact, fragments of incomplete
//! messages, announced attachments) and runs one-time invitations. Every
//! function takes the store, time and randomness and returns a
//! [`ChangeSet`] plus what to send; the caller does the network I/O
//! (format: `docs/mailbox-format.md`).

mod ack;
mod blob;
mod delivery;
mod fragment;
mod invitation;
mod park;
mod queue;
mod receive;
mod reseal;
mod send;

pub use ack::*;
pub use blob::*;
pub use delivery::*;
use fragment::*;
pub use invitation::*;
pub use park::*;
pub use queue::*;
pub use receive::*;
pub use reseal::*;
pub use send::*;

use rand_core::{CryptoRng, RngCore};

use crate::codec::{self};
use crate::consts::{BLOB_BYTES, MAX_RECORD_BYTES, MAX_SEALED_BYTES};
use crate::crypto::aead;
use crate::error::{Error, Result, StoreError};
use crate::store::{ChangeSet, KvStore, Namespace, Record};

use crate::settings::check_name;

/// Plaintext bytes inside a sealed blob.
pub const BLOB_INNER_BYTES: usize = BLOB_BYTES - aead::NONCE_BYTES - aead::TAG_BYTES;
/// Message bytes one fragment carries.
pub const FRAGMENT_DATA_BYTES: usize = BLOB_INNER_BYTES - FRAGMENT_HEADER_BYTES;
/// Most fragments a message may have (a largest sealed message plus its
/// introduction bundle fits).
pub const MAX_FRAGMENTS: usize = (MAX_SEALED_BYTES + 4096).div_ceil(FRAGMENT_DATA_BYTES);
/// Most incomplete messages kept per queue before new ones are refused.
pub const MAX_PENDING_MESSAGES_PER_QUEUE: usize = 64;
/// Longest an incomplete message waits for its other fragments.
pub const PENDING_FRAGMENT_TTL_MS: u64 = 21 * 24 * 3600 * 1000;
/// Completed multi-fragment messages remembered per queue (so late
/// duplicate fragments are recognised).
pub const MAX_COMPLETION_MARKERS: usize = 256;
/// Longest an invitation stays valid.
pub const INVITATION_LIFETIME_MS: u64 = 7 * 24 * 3600 * 1000;

pub(super) const FRAGMENT_HEADER_BYTES: usize = 1 + 16 + 1 + 1 + 2;
pub(super) const KIND_FRAGMENT: u8 = 1;
pub(super) const KIND_CHUNK: u8 = 2;
pub(super) const MSG_SEALED: u8 = 1;
pub(super) const MSG_INTRODUCTION: u8 = 2;
pub(super) const MSG_INVITE_PAYLOAD: u8 = 3;
pub(super) const BLOB_AAD: &[u8] = b"postern/blob/v1";
pub(super) const LINK_PREFIX: &str = "postern:";
pub(super) const LINK_VERSION: u32 = 1;
/// Longest invitation link accepted.
pub const MAX_LINK_CHARS: usize = 600;
pub(super) const WHAT_BLOB: &str = "blob";

pub(super) fn malformed(what: &'static str) -> Error {
    Error::Malformed { what }
}

pub(crate) fn corrupt(ns: Namespace) -> Error {
    Error::Store(StoreError::Corrupt {
        namespace: ns.name(),
    })
}

pub(super) fn load<M: prost::Message + Default>(
    s: &dyn KvStore,
    ns: Namespace,
    key: &[u8],
) -> Result<Option<M>> {
    match s.get(ns, key)? {
        None => Ok(None),
        Some(r) => codec::decode_bounded(r.checked(ns)?, MAX_RECORD_BYTES, ns.name())
            .map(Some)
            .map_err(|_| corrupt(ns)),
    }
}

pub(super) fn save<M: prost::Message>(cs: &mut ChangeSet, ns: Namespace, key: &[u8], m: &M) {
    cs.put(ns, key, Record::current(ns, m.encode_to_vec()));
}

pub(super) fn random_id<R: RngCore + CryptoRng>(rng: &mut R) -> [u8; 16] {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    id
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay_address::RelayAddress;
    use crate::time::UnixTime;
    use rand::SeedableRng as _;
    use zeroize::Zeroizing;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(11)
    }

    #[test]
    fn rejects_bad_blob_contents() {
        let mut r = rng();
        let key = [9u8; 32];
        // Wrong key.
        let b = fragment(&key, MSG_SEALED, b"hello", &mut r).unwrap();
        assert!(open_blob(&[8u8; 32], &b[0]).is_err());
        // Unknown kind, non-zero padding, index past total, zero total.
        for inner in [
            vec![9u8, 1, 2],
            {
                let mut v = vec![KIND_CHUNK, 0, 1, 7];
                v.push(1);
                v
            },
            {
                let mut v = vec![KIND_FRAGMENT];
                v.extend_from_slice(&[0; 16]);
                v.extend_from_slice(&[2, 2, 0, 1, 0xAA]);
                v
            },
            {
                let mut v = vec![KIND_FRAGMENT];
                v.extend_from_slice(&[0; 16]);
                v.extend_from_slice(&[0, 0, 0, 1, 0xAA]);
                v
            },
            {
                let mut v = vec![KIND_FRAGMENT];
                v.extend_from_slice(&[0; 16]);
                v.extend_from_slice(&[0, 1, 0x7F, 0xFF]);
                v
            },
        ] {
            let blob = seal_blob(&key, &inner, &mut r).unwrap();
            let opened = open_blob(&key, &blob).unwrap();
            assert!(parse_inner(&opened).is_err(), "{inner:?}");
        }
    }

    #[test]
    fn sizes_match_the_spec() {
        // docs/mailbox-format.md states these numbers.
        assert_eq!(BLOB_INNER_BYTES, 2008);
        assert_eq!(FRAGMENT_DATA_BYTES, 1987);
        assert_eq!(MAX_FRAGMENTS, 14);
        const { assert!(crate::consts::CHUNK_PLAINTEXT_BYTES + 41 + 3 <= BLOB_INNER_BYTES) };
    }

    #[test]
    fn fragments_round_trip_at_every_size_boundary() {
        let mut r = rng();
        let key = [3u8; 32];
        for len in [
            1,
            FRAGMENT_DATA_BYTES - 1,
            FRAGMENT_DATA_BYTES,
            3 * FRAGMENT_DATA_BYTES + 5,
        ] {
            let body = vec![0x5Au8; len];
            let blobs = fragment(&key, MSG_SEALED, &body, &mut r).unwrap();
            let (t, got) = reassemble_standalone(&key, &blobs).unwrap();
            assert_eq!((t, got.as_slice()), (MSG_SEALED, body.as_slice()));
        }
    }

    #[test]
    fn rejects_bad_links() {
        let now = UnixTime(1_000);
        let inv = Invitation {
            relay: RelayAddress::parse("postern-relay://127.0.0.1:4443").unwrap(),
            sender_id: [1; 16],
            key: Zeroizing::new([2; 32]),
            expires_at: UnixTime(2_000),
        };
        let link = inv.to_link();
        assert_eq!(Invitation::parse(&link, now).unwrap(), inv);
        assert!(matches!(
            Invitation::parse(&link, UnixTime(2_000)),
            Err(Error::InvitationExpired)
        ));
        for bad in [
            String::new(),
            "postern:".into(),
            "https://example.com".into(),
            link.replace("postern:", "postern:!"),
            link[..link.len() - 3].to_owned(),
            format!("{link}{}", "A".repeat(600)),
        ] {
            assert!(Invitation::parse(&bad, now).is_err(), "{bad}");
        }
        assert!(!format!("{inv:?}").contains("2, 2"));
    }
}
