//! Postern's native platform layer: what a desktop or server operating
//! system gives the client driver (`postern-driver`), for the CLI today
//! and the desktop client next.
//!
//! - the links to relays: [`Native`], `postern-net`'s
//!   [`NativeConnector`] — TCP, TLS 1.3 with pinned certificates,
//!   WebSocket, 3,072-byte frames — on a [`TokioRuntime`] (tokio's
//!   timers, the system clock, the OS random number generator);
//! - the persistence backend: the SQLCipher profile (`postern-store`),
//!   whose `commit` applies a change set in one transaction;
//! - [`files`]: received attachments, verified and saved without
//!   overwriting anything.
//!
//! Nothing here decides policy or sequences a step: paths, failover,
//! resends and the order of a flow's steps are the engine's
//! ([`postern_engine`]), carrying them out is the driver's
//! ([`postern_driver`]), the same code the browser client runs on its own
//! platform layer.

pub mod files;

use postern_core::UnixTime;
use postern_net::{Connector, Runtime as _};

pub use postern_driver::{ClientError, Result, client, commit, flow, is_local_failure, transport};
pub use postern_net::{NativeConnector, TokioRuntime};

/// The native platform: links made by `postern-net` from `via`, timed by
/// tokio.
pub type Native = NativeConnector;

/// The native platform for a process that connects from `via`.
pub fn native(via: Connector) -> Native {
    NativeConnector::new(via)
}

/// The system clock as the core counts time.
pub fn now() -> UnixTime {
    TokioRuntime::default().now()
}
