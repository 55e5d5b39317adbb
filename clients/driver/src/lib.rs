#![doc = include_str!("../README.md")]

pub mod client;
pub mod flow;
pub mod transport;

use postern_core::error::HasKind;
use postern_core::store::ChangeSet;
use postern_core::{ErrorKind, KvStore};
use postern_engine::flow::FlowError;
use postern_link::NetError;

pub use postern_link::{Connect, Runtime, RuntimeRng};

/// A connection opened by the connector `N`.
pub type Conn<N> = postern_link::Connection<<N as Connect>::Link, <N as Connect>::Runtime>;

/// What can make a client operation fail. Carries no text from the
/// network: the relay's typed `ErrorCode` at most.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The core refused, or the store failed.
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

impl From<postern_core::StoreError> for ClientError {
    fn from(e: postern_core::StoreError) -> ClientError {
        ClientError::Core(e.into())
    }
}

impl HasKind for ClientError {
    fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Core(e) => e.kind(),
            ClientError::Net(e) => e.kind(),
            ClientError::Flow(e) => e.kind(),
            ClientError::Io { .. } => ErrorKind::Storage,
        }
    }
}

/// Results of this crate.
pub type Result<T> = core::result::Result<T, ClientError>;

/// Commits a change set to the store (atomically: all or nothing).
pub fn commit(p: &mut dyn KvStore, cs: ChangeSet) -> Result<()> {
    p.commit(cs)?;
    Ok(())
}

/// Whether an error is about this device (the store cannot be read or
/// written) or a bug, not about the network: such an error ends a
/// long-running task instead of being retried like a network failure.
pub fn is_local_failure(e: &impl HasKind) -> bool {
    matches!(e.kind(), ErrorKind::Storage | ErrorKind::Bug)
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
