//! Postern's native platform layer: what the engine decides, carried out
//! with real I/O on a desktop or server operating system — tokio links to
//! relays (through `postern-net`: TCP, TLS 1.3 with pinned certificates,
//! WebSocket, 3,072-byte frames), the SQLCipher profile (through
//! `postern-store`), the system clock and the OS random number generator.
//!
//! The CLI uses it today and the desktop client next; the browser client
//! gets its own layer over the same engine. Nothing here decides policy:
//! paths, failover, resends and the order of a flow's steps are the
//! engine's ([`postern_engine`]).
//!
//! - [`transport`]: the links blobs leave by (direct, or onion-routed
//!   through entry relays), the one set of links a command sends
//!   everything through, the directory by the engine's rule, resends.
//! - [`flow`]: runs an engine flow (invite, accept, fetch) to its end.
//! - [`files`]: received attachments, verified and saved without
//!   overwriting anything.
//! - [`client`]: a client's running work for any shell — sending from the
//!   outbox, receipts, resend rounds, collecting, the watch loop — shown
//!   through a [`client::Ui`].

pub mod client;
pub mod files;
pub mod flow;
pub mod transport;

use postern_core::error::HasKind;
use postern_core::store::ChangeSet;
use postern_core::{ErrorKind, KvStore, UnixTime};
use postern_engine::flow::FlowError;
use postern_net::NetError;
use postern_store::Profile;

/// What can make a platform operation fail. Carries no text from the
/// network: the relay's typed `ErrorCode` at most.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NativeError {
    /// The core refused, or the profile failed.
    #[error("{0}")]
    Core(#[from] postern_core::Error),
    /// A relay could not be reached, broke the link or refused.
    #[error("relay: {0}")]
    Net(#[from] NetError),
    /// An engine flow stopped.
    #[error("{0}")]
    Flow(#[from] FlowError),
    /// A file of this device could not be written (a download).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl From<postern_core::StoreError> for NativeError {
    fn from(e: postern_core::StoreError) -> NativeError {
        NativeError::Core(e.into())
    }
}

impl HasKind for NativeError {
    fn kind(&self) -> ErrorKind {
        match self {
            NativeError::Core(e) => e.kind(),
            NativeError::Net(e) => e.kind(),
            NativeError::Flow(e) => e.kind(),
            NativeError::Io { .. } => ErrorKind::Storage,
        }
    }
}

/// Results of this crate.
pub type Result<T> = core::result::Result<T, NativeError>;

/// The system clock as the core counts time.
pub fn now() -> UnixTime {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    UnixTime(ms)
}

/// Commits a change set to the profile (atomically: all or nothing).
pub fn commit(p: &mut Profile, cs: ChangeSet) -> Result<()> {
    p.commit(cs)?;
    Ok(())
}

/// Whether an error is about this device (the profile cannot be read or
/// written) or a bug, not about the network: such an error ends a
/// long-running command instead of being retried like a network failure.
pub fn is_local_failure(e: &impl HasKind) -> bool {
    matches!(e.kind(), ErrorKind::Storage | ErrorKind::Bug)
}
