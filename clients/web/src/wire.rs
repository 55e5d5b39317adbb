//! What the page and the client worker say to each other over
//! `postMessage`: the page sends what the user asks for ([`ToWorker`]),
//! the worker — which owns the profile, the client service and every
//! link — answers with what the screens show ([`FromWorker`]). Each
//! message is one postcard-encoded byte buffer, transferred (not copied).
//!
//! Both ends are the same module from the same origin, so this is not a
//! trust boundary; it is still decoded with a size bound and a typed
//! error, and a message that does not decode is dropped. Passphrases cross
//! it in memory only and are wiped on both sides after use.

use postern_app::{Request, Update};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Largest message either side decodes: the largest backup (the biggest
/// thing that crosses) and room for its envelope.
pub const MAX_MESSAGE_BYTES: usize = postern_core::consts::MAX_BACKUP_BYTES + 64 * 1024;

/// Why a profile is not made without a passphrase in the browser.
pub const PASSPHRASE_NEEDED: &str =
    "In the browser a passphrase protects the profile: please choose one";

/// A passphrase on its way: wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Zeroizing<String>);

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        // Borrowed from the (wiped) input buffer, copied once into
        // memory that is wiped in turn.
        let s: &str = Deserialize::deserialize(d)?;
        Ok(Secret(Zeroizing::new(s.to_owned())))
    }
}

impl From<Zeroizing<String>> for Secret {
    fn from(s: Zeroizing<String>) -> Secret {
        Secret(s)
    }
}

/// From the page to the client worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Create the profile.
    Create {
        /// The name suggested to contacts.
        name: String,
        /// The home relay; the suggested one when `None`.
        relay: Option<String>,
        /// The passphrase (required in the browser).
        passphrase: Option<Secret>,
    },
    /// Make the profile from a backup file's bytes.
    Restore {
        /// The backup file.
        backup: Vec<u8>,
        /// The backup's passphrase.
        backup_passphrase: Secret,
        /// The new profile's passphrase.
        passphrase: Option<Secret>,
    },
    /// Unlock with this passphrase.
    Unlock {
        /// The passphrase.
        passphrase: Secret,
        /// Keep the key in this browser for the next load.
        remember: bool,
    },
    /// Forget the key kept in this browser.
    Forget,
    /// Show profile `i`'s lock screen (`None`: a new profile's onboarding).
    Switch(Option<usize>),
    /// Lock: close the profile, forget everything decrypted.
    Lock,
    /// A request for the client service (while unlocked).
    App(Request),
    /// Cover packets per minute changed (the service restarts with it).
    Cover(u32),
    /// A new passphrase, the current one checked first.
    ChangePassphrase {
        /// The passphrase in force.
        current: Secret,
        /// The new one.
        new: Secret,
    },
    /// An encrypted backup of the open profile, sent back to be saved.
    ExportBackup {
        /// The backup's own passphrase.
        passphrase: Secret,
    },
}

/// From the client worker to the page.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// No profile yet: onboarding, with the relay suggested.
    NoProfile {
        /// The suggested home relay.
        default_relay: Option<String>,
    },
    /// The home relays a browser can reach, and the one suggested.
    Relays {
        /// Relay addresses.
        choices: Vec<String>,
        /// Index of the suggested one.
        suggested: usize,
    },
    /// The profile is locked (and why, after an error).
    Locked {
        /// Why, when it was not the user's doing.
        reason: Option<String>,
    },
    /// The passphrase did not open the profile (or why else not).
    UnlockFailed(String),
    /// The profile could not be made.
    CreateFailed(String),
    /// Unlocked: the service runs.
    Unlocked,
    /// Whether this browser keeps the key for the next load.
    Remembered(bool),
    /// The profiles in this browser, and the one shown (`None`: a new one).
    Profiles {
        /// Their names ("Profile 1", …).
        names: Vec<String>,
        /// The one shown.
        current: Option<usize>,
    },
    /// What the client service says.
    App(Update),
    /// Something the user asked for is done.
    Notice(String),
    /// Something failed outside the service.
    Failed(String),
    /// An encrypted backup to save as `name`.
    Backup {
        /// The file name offered.
        name: String,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// A measured time, for the test-only timing export.
    Timing {
        /// What was measured.
        name: String,
        /// Milliseconds.
        ms: f64,
    },
}

/// Why a message between the page and the worker was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message too large: {0} bytes")]
    TooLarge(usize),
    /// Not a message of this build.
    #[error("malformed message")]
    Malformed,
}

/// Encodes a message (the buffer holds passphrases while it lives: the
/// caller wipes it once sent).
pub fn encode<T: Serialize>(m: &T) -> Zeroizing<Vec<u8>> {
    // Encoding plain values into memory cannot fail.
    Zeroizing::new(postcard::to_allocvec(m).unwrap_or_default())
}

/// Decodes a message: bounded, whole, typed.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    match postcard::take_from_bytes(bytes) {
        Ok((m, [])) => Ok(m),
        _ => Err(WireError::Malformed),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use postern_app::{BodyView, Failure, MessageView};
    use postern_core::courier::DeliveryState;
    use postern_core::{Address, ErrorKind, UnixTime};

    #[test]
    fn junk_truncated_trailing_and_oversized_messages_are_refused() {
        assert_eq!(
            decode::<ToWorker>(&[0xff, 0xff, 0xff]).unwrap_err(),
            WireError::Malformed
        );
        let whole = encode(&ToWorker::Unlock {
            passphrase: Secret(Zeroizing::new("pass".into())),
            remember: false,
        });
        let cut = &whole[..whole.len() - 1];
        assert_eq!(decode::<ToWorker>(cut).unwrap_err(), WireError::Malformed);
        let mut longer = whole.to_vec();
        longer.push(0);
        assert_eq!(
            decode::<ToWorker>(&longer).unwrap_err(),
            WireError::Malformed
        );
        let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            decode::<FromWorker>(&huge).unwrap_err(),
            WireError::TooLarge(MAX_MESSAGE_BYTES + 1)
        );
        // A huge length prefix is refused, not allocated.
        let mut lying = vec![2u8]; // FromWorker::Relays
        lying.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            decode::<FromWorker>(&lying).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn requests_and_views_cross_whole() {
        let peer = Address::from_slice(&[7; 16]).unwrap();
        let m = ToWorker::App(Request::SendFile {
            to: peer,
            name: "report.pdf".into(),
            bytes: vec![1, 2, 3],
            voice: false,
        });
        let back: ToWorker = decode(&encode(&m)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{m:?}"));

        let view = MessageView {
            peer,
            id: [9; 16],
            outgoing: true,
            time: UnixTime(1_800_000_000_000),
            reply_to: None,
            body: BodyView::Text("hello".into()),
            delivery: Some(DeliveryState::Stored),
        };
        for m in [
            FromWorker::App(Update::Message(view.clone())),
            FromWorker::App(Update::Failed(Failure {
                action: "send".into(),
                reason: "no path".into(),
                kind: ErrorKind::Network,
            })),
            FromWorker::Backup {
                name: "postern.postern-backup".into(),
                bytes: vec![0; 1000],
            },
        ] {
            let back: FromWorker = decode(&encode(&m)).unwrap();
            assert_eq!(format!("{back:?}"), format!("{m:?}"));
        }
    }

    #[test]
    fn a_passphrase_is_not_printed() {
        let m = ToWorker::Unlock {
            passphrase: Secret(Zeroizing::new("hunter2".into())),
            remember: true,
        };
        assert!(!format!("{m:?}").contains("hunter2"));
    }
}
