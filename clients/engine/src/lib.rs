//! Postern's client engine: the delivery policy of a client, with no I/O.
//!
//! The core ([`postern_core`]) knows how to seal, wrap and open; this crate
//! decides *when* and *where*: which path and entry relay a packet takes,
//! which entry to try after one fails, when a directory is fetched again,
//! when an unacknowledged blob is sent again or given up, and when a
//! watching client sends cover, pings its relay, reconnects or polls other
//! relays. Like the core it never reads a clock, draws its own randomness or
//! touches a socket or a file: time, randomness and the store are handed in,
//! and what should happen comes back as values (a packet for an entry relay
//! with the change set to commit first, a timer that is due). A shell — the
//! CLI today, the desktop and browser clients next — does the I/O.
//!
//! It builds for `wasm32-unknown-unknown`.
//!
//! - [`flow`]: the shape every flow shares (`poll_action` / `handle`).
//! - [`fetch`]: fetching a relay's queues: fetch, receive, acknowledge,
//!   again while more wait.
//! - [`watch`]: which relay a watching client stays connected to and
//!   which it polls.
//! - [`contact`]: making and taking a one-time invitation, step by step.
//! - [`route`]: onion paths, entry failover, the down-relay list, cover
//!   and loop packets, resend decisions.
//! - [`schedule`]: the watch loop's timers (cover on its Poisson schedule,
//!   resends, keepalives, reconnect backoff, other relays).
//! - [`directory`]: when a cached directory is used and when it is fetched.
//! - [`outbox`]: commit, then send.
//! - [`attach`]: what a file is sent as, and queuing it with its chunks
//!   in one commit.
//! - [`inbox`]: what fetched blobs become (events, receipts, which items
//!   to acknowledge).

pub mod attach;
pub mod contact;
pub mod directory;
pub mod fetch;
pub mod flow;
pub mod inbox;
pub mod outbox;
pub mod route;
pub mod schedule;
pub mod watch;

pub use route::{Planned, Put, Router};
pub use schedule::{Due, Millis, Schedule, WatchConfig};

#[cfg(any(test, feature = "testing"))]
pub mod testing;
