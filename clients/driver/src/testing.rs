//! Test fixtures: a runtime on a clock the test moves, a connector whose
//! relays cannot be reached.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    missing_debug_implementations
)]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use postern_core::{RelayAddress, UnixTime};
use postern_link::{Connect, Link, NetError, Runtime};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore as _, SeedableRng as _};

/// A runtime whose clocks move only when the test says so, with a seeded
/// generator.
#[derive(Clone)]
pub struct TestRuntime {
    now: Rc<Cell<u64>>,
    rng: Rc<RefCell<ChaCha20Rng>>,
}

impl TestRuntime {
    pub fn at(t: UnixTime) -> TestRuntime {
        TestRuntime {
            now: Rc::new(Cell::new(t.millis())),
            rng: Rc::new(RefCell::new(ChaCha20Rng::seed_from_u64(t.millis()))),
        }
    }
}

impl Runtime for TestRuntime {
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(d)
    }
    fn fill_random(&self, out: &mut [u8]) {
        self.rng.borrow_mut().fill_bytes(out);
    }
    fn now(&self) -> UnixTime {
        UnixTime(self.now.get())
    }
    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.now.get())
    }
}

/// A link that is never opened.
pub struct NoLink;

impl Link for NoLink {
    async fn send(&mut self, _: &[u8]) -> Result<(), NetError> {
        Err(NetError::Closed)
    }
    async fn recv(&mut self) -> Result<Vec<u8>, NetError> {
        Err(NetError::Closed)
    }
    async fn close(&mut self) -> Result<(), NetError> {
        Ok(())
    }
}

/// A connector to relays that cannot be reached; it counts the attempts.
#[derive(Clone)]
pub struct Unreachable {
    rt: TestRuntime,
    attempts: Rc<Cell<usize>>,
}

impl Unreachable {
    pub fn at(t: UnixTime) -> Unreachable {
        Unreachable {
            rt: TestRuntime::at(t),
            attempts: Rc::default(),
        }
    }
    pub fn attempts(&self) -> usize {
        self.attempts.get()
    }
    /// Moves both clocks forward.
    pub fn advance(&self, ms: u64) {
        self.rt.now.set(self.rt.now.get() + ms);
    }
}

impl Connect for Unreachable {
    type Link = NoLink;
    type Runtime = TestRuntime;
    fn runtime(&self) -> &TestRuntime {
        &self.rt
    }
    async fn open(&self, relay: &RelayAddress) -> Result<NoLink, NetError> {
        self.attempts.set(self.attempts.get() + 1);
        Err(NetError::Connect {
            relay: relay.to_string(),
            reason: std::io::ErrorKind::ConnectionRefused,
        })
    }
}
