//! The shape every engine flow shares, so one driver in a shell runs any
//! of them: the flow says what to do next ([`Flow::poll_action`]), the
//! shell does it — a request to a relay, or putting committed blobs
//! through the onion network — and hands the result back
//! ([`Flow::handle`]). The flow commits its own change sets.

use postern_core::courier::Outgoing;
use postern_core::crypto::signal::QueueSecret;
use postern_core::error::HasKind;
use postern_core::relay_proto::client::Answer;
use postern_core::relay_proto::{Command, ErrorCode};
use postern_core::{Error, ErrorKind, KvStore, RelayAddress, UnixTime};
use rand_core::{CryptoRng, RngCore};

/// What a flow asks the shell to do next.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action<'a> {
    /// Send `command` to `relay`, signed with `key` when one is given,
    /// and hand its answer back as [`Input::Answer`].
    Request {
        /// The relay to ask.
        relay: &'a RelayAddress,
        /// The request.
        command: Command,
        /// The queue key that signs it.
        key: Option<&'a QueueSecret>,
    },
    /// Put these blobs (already committed to the outbox as entry `id`)
    /// through the onion network, then hand back [`Input::Delivered`].
    Deliver {
        /// The outbox entry.
        id: [u8; 16],
        /// What to put where.
        out: &'a Outgoing,
    },
}

/// What the shell hands back after an [`Action`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Input {
    /// The relay's complete answer to the last `Request`.
    Answer(Answer),
    /// Every blob of the last `Deliver` was handed on.
    Delivered,
}

/// Why a flow stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The core refused (a malformed link or payload, a storage failure).
    #[error(transparent)]
    Core(#[from] Error),
    /// The invitation was already used or has expired.
    #[error("this invitation was already used or has expired")]
    InvitationGone,
    /// A relay refused a step with this code.
    #[error("relay refused: {0}")]
    Refused(ErrorCode),
    /// A relay answered with something the step does not expect.
    #[error("unexpected relay answer")]
    UnexpectedAnswer,
    /// The shell handed an input the flow did not ask for (a bug in the
    /// shell), or drove a flow that had already stopped.
    #[error("flow driven out of order")]
    OutOfOrder,
}

impl From<postern_core::StoreError> for FlowError {
    fn from(e: postern_core::StoreError) -> FlowError {
        FlowError::Core(e.into())
    }
}

impl HasKind for FlowError {
    fn kind(&self) -> ErrorKind {
        match self {
            FlowError::Core(e) => e.kind(),
            FlowError::InvitationGone => ErrorKind::Usage,
            // A relay that refuses for now (full, rate limited, shutting
            // down) is worth trying again later.
            FlowError::Refused(_) => ErrorKind::Network,
            FlowError::UnexpectedAnswer => ErrorKind::PeerMisbehaved,
            FlowError::OutOfOrder => ErrorKind::Bug,
        }
    }
}

/// The shape every flow shares, so one driver in a shell runs any of them.
pub trait Flow {
    /// The next step, or `None` once the flow has finished or failed.
    fn poll_action(&self) -> Option<Action<'_>>;
    /// Takes the result of the last action. An error ends the flow.
    fn handle<R: RngCore + CryptoRng>(
        &mut self,
        now: UnixTime,
        input: Input,
        store: &mut dyn KvStore,
        rng: &mut R,
    ) -> Result<(), FlowError>;
}
