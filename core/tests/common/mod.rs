//! Shared helpers for the core's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use postern_core::{Address, ChangeSet, KvStore, MemStore, UnixTime, e2e};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A fixed "now" for tests: 2027-01-15.
pub const T0: UnixTime = UnixTime(1_800_000_000_000);

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub struct User {
    pub store: MemStore,
    pub addr: Address,
}

impl User {
    pub fn new(rng: &mut ChaCha20Rng) -> User {
        let mut store = MemStore::new();
        let (addr, cs) = e2e::create_identity(&store, T0, rng).unwrap();
        store.commit(cs).unwrap();
        User { store, addr }
    }

    pub fn apply(&mut self, cs: ChangeSet) {
        self.store.commit(cs).unwrap();
    }

    pub fn bundle(&mut self) -> Vec<u8> {
        let (b, cs) = e2e::publish_bundle(&self.store).unwrap();
        self.apply(cs);
        b
    }

    pub fn seal(&mut self, to: &Address, msg: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
        let (ct, cs) = e2e::seal(&self.store, to, msg, T0, rng).unwrap();
        self.apply(cs);
        ct
    }

    pub fn open(
        &mut self,
        ct: &[u8],
        rng: &mut ChaCha20Rng,
    ) -> postern_core::Result<(Address, Vec<u8>)> {
        let (from, pt, cs) = e2e::open(&self.store, ct, T0, rng)?;
        self.apply(cs);
        Ok((from, pt.to_vec()))
    }

    pub fn encrypt(&mut self, to: &Address, msg: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
        let (ct, cs) = e2e::encrypt(&self.store, to, msg, T0, rng).unwrap();
        self.apply(cs);
        ct
    }

    pub fn decrypt(
        &mut self,
        from: &Address,
        ct: &[u8],
        rng: &mut ChaCha20Rng,
    ) -> postern_core::Result<Vec<u8>> {
        let (pt, cs) = e2e::decrypt(&self.store, from, ct, rng)?;
        self.apply(cs);
        Ok(pt.to_vec())
    }
}

/// Alice pins Bob and runs PQXDH with Bob's bundle; Bob pins Alice.
pub fn connect(alice: &mut User, bob: &mut User, rng: &mut ChaCha20Rng) {
    let bob_bundle = bob.bundle();
    let (peer, cs) = e2e::start_session(&alice.store, &bob_bundle, T0, rng).unwrap();
    assert_eq!(peer, bob.addr);
    alice.apply(cs);
    let alice_bundle = alice.bundle();
    let (peer, cs) = e2e::add_contact(&bob.store, &alice_bundle).unwrap();
    assert_eq!(peer, alice.addr);
    bob.apply(cs);
}
